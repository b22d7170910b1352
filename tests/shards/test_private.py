"""Private directories in the shared temp folder: made 0700, refused when planted by another user."""
from __future__ import annotations

import os
import stat
import tempfile

import pytest

from shards.private import UnsafeDirectory, open_private, private_dir


@pytest.fixture
def shared_tmp(tmp_path, monkeypatch):
    """A temp folder like /tmp, where the defaults live."""
    shared = tmp_path / "tmp"
    shared.mkdir(mode=0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    for name in ("MMP_BUDGET_DIR", "MMP_STAGING_DIR", "MMP_LOG_DIR"):
        monkeypatch.delenv(name, raising=False)
    return shared


def _defaults():
    from pipeline.crawl.politeness import default_budget_dir
    from pipeline.runtime.logs import _remote_log_base

    return [default_budget_dir(), tempfile.gettempdir() + f"/mmp-staging-{os.getuid()}", _remote_log_base()]


def test_made_private_and_closed_when_loose(shared_tmp):
    made = private_dir(shared_tmp / "mine")
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    loose = shared_tmp / "loose"
    loose.mkdir(mode=0o777)
    os.chmod(loose, 0o777)
    assert stat.S_IMODE(private_dir(loose).stat().st_mode) == 0o700


def test_a_planted_link_is_refused_and_its_target_untouched(shared_tmp, tmp_path):
    """Another user creates the name first as a link into a place of theirs: nothing is written there."""
    from pipeline.crawl.politeness import RequestBudget
    from shards.storage import staging_dir

    victim = tmp_path / "victim"
    victim.mkdir()
    for name in _defaults():
        os.symlink(victim, name)
    with pytest.raises(UnsafeDirectory, match="is a symbolic link"):
        RequestBudget(_defaults()[0] / "youtube.budget", 1.0).acquire()
    with pytest.raises(UnsafeDirectory, match="is a symbolic link"):
        staging_dir()
    from pipeline.runtime.logs import setup_logging

    with pytest.raises(UnsafeDirectory, match="is a symbolic link"):
        setup_logging("s3://bucket/out", "test", "main")
    assert list(victim.iterdir()) == []


@pytest.mark.skipif(os.getuid() != 0, reason="making a directory of another user needs root")
def test_a_directory_of_another_user_is_refused(shared_tmp):
    from pipeline.crawl.politeness import RequestBudget

    theirs = _defaults()[0]
    theirs.mkdir(mode=0o777)
    os.chown(theirs, 12345, 12345)
    with pytest.raises(UnsafeDirectory, match="belongs to another user"):
        RequestBudget(theirs / "youtube.budget", 1.0)


def test_files_inside_are_never_opened_through_a_link(shared_tmp, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("theirs")
    home = private_dir(shared_tmp / "mine")
    os.symlink(victim, home / "youtube.budget")
    with pytest.raises(OSError):
        open_private(home / "youtube.budget", os.O_RDWR | os.O_CREAT)
    assert victim.read_text() == "theirs"


def test_the_crawl_says_so_in_one_sentence(sample, tmp_path, capsys):
    from pipeline.crawl import stage as crawl

    planted = tmp_path / "planted"
    os.symlink(tmp_path, planted)
    args = sample.crawl_args(tmp_path / "data")
    args[args.index("--budget-dir") + 1] = str(planted)
    assert crawl.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a symbolic link" in err[0] and "Traceback" not in err[0]
