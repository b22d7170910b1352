"""mmp-stats on an --out it cannot write: one sentence, exit 2, before the dataset is read."""
from __future__ import annotations

import errno
import os
import pathlib

import pytest

pytest.importorskip("matplotlib")

from pipeline.stats import stage as mstats
from tests.pipeline.stats.test_stats import make_synthetic


@pytest.fixture
def no_work(monkeypatch):
    def refuse(*a, **kw):
        raise AssertionError("the dataset was read before --out was checked")

    monkeypatch.setattr(mstats, "build_stats", refuse)


def one_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("mmp-stats: error: ")
    return lines[0]


def test_an_out_under_a_file_is_one_sentence(tmp_path, no_work, capsys):
    data = make_synthetic(tmp_path / "data")
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "reports"
    assert mstats.main(["--data", str(data), "--out", str(out), "--no-progress"]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(out) in line and "not a directory" in line


def test_a_read_only_out_is_one_sentence(tmp_path, no_work, monkeypatch, capsys):
    data = make_synthetic(tmp_path / "data")
    out = tmp_path / "ro" / "reports"
    real_mkdir = pathlib.Path.mkdir

    def read_only(self, *a, **kw):
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    assert mstats.main(["--data", str(data), "--out", str(out), "--no-progress"]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(out) in line and "read-only" in line


def test_an_existing_out_that_refuses_writes_is_one_sentence(tmp_path, no_work, monkeypatch, capsys):
    data = make_synthetic(tmp_path / "data")
    out = tmp_path / "reports"
    out.mkdir()
    real_open = os.open

    def refuse(path, flags, *a, **kw):
        if str(path).startswith(str(out)) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(os, "open", refuse)
    assert mstats.main(["--data", str(data), "--out", str(out), "--no-progress"]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(out) in line and "permission denied" in line


def test_a_full_out_is_one_sentence(tmp_path, no_work, monkeypatch, capsys):
    data = make_synthetic(tmp_path / "data")
    out = tmp_path / "reports"
    real = os.statvfs

    def full(path):
        st = real(path)
        return os.statvfs_result((st.f_bsize, st.f_frsize, st.f_blocks, 0, 0, st.f_files, st.f_ffree,
                                  st.f_favail, st.f_flag, st.f_namemax))

    monkeypatch.setattr(os, "statvfs", full)
    assert mstats.main(["--data", str(data), "--out", str(out), "--no-progress"]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(out) in line and "disk is full" in line
