"""mmp-extract-features with several worker processes: device slots claimed once each, SIGKILL and re-run losing nothing."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("av")
pytest.importorskip("decord")

from features.extract import main  # noqa: E402
from tests.conftest import assert_final_files_whole, read_all_rows  # noqa: E402
from tests.features.test_decode import cfr, make_video  # noqa: E402
from tests.features.test_extract import ROOT, TIMING, features_of, few_threads, write_aligned  # noqa: E402,F401


def _units_of_short_videos(tmp_path, n_units):
    src = tmp_path / "videos"
    src.mkdir()
    units = []
    for u in range(n_units):
        vid = f"vidUnit{u:04d}"
        make_video(src / f"{vid}.mkv", cfr(0.5 + 0.1 * u))
        units.append([(vid, 0.5), (f"vidGone{u:04d}", 1.0)])
    aligned = tmp_path / "aligned"
    write_aligned(aligned, units)
    return aligned, src


def _cmd(aligned, src, out, workers):
    return [sys.executable, "-m", "features.extract", "--aligned", str(aligned), "--video-dir", str(src),
            "--out", str(out), "--gpus", "0", "--backbones", "r21d", "--random-weights", "--workers", str(workers),
            "--no-progress"]


def test_two_cpu_workers_claim_slots_and_match_one(tmp_path):
    aligned, src = _units_of_short_videos(tmp_path, 2)
    one, two = tmp_path / "one", tmp_path / "two"
    for out, workers in ((one, 1), (two, 2)):
        assert main(_cmd(aligned, src, out, workers)[3:]) == 0
    strip = lambda rows: sorted(({k: v for k, v in r.items() if k not in TIMING} for r in rows),  # noqa: E731
                                key=lambda r: r["video_id"])
    assert strip(read_all_rows(one)) == strip(read_all_rows(two))
    a, b = features_of(one), features_of(two)
    assert sorted(a) == sorted(b) == ["vidUnit0000", "vidUnit0001"]
    for key in a:
        assert np.allclose(a[key]["r21d.npy"].astype(np.float32), b[key]["r21d.npy"].astype(np.float32), atol=1e-2)
    assert not list(two.glob(".gpu-slot-*"))  # CPU workers hold no device slot


def test_sigkill_then_rerun_loses_nothing(tmp_path):
    n_units = 5
    aligned, src = _units_of_short_videos(tmp_path, n_units)
    out = tmp_path / "mmp"
    proc = subprocess.Popen(_cmd(aligned, src, out, 1), cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("mmp-*.stats.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {p.name: p.read_bytes() for p in out.glob("mmp-*.stats.json")}
    assert 1 <= len(first) < n_units, "the kill should land mid-run"
    assert_final_files_whole(out)  # no partial file under a final name
    result = subprocess.run(_cmd(aligned, src, out, 1), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = read_all_rows(out)
    assert sorted(r["video_id"] for r in rows) == sorted([f"vidUnit{u:04d}" for u in range(n_units)]
                                                         + [f"vidGone{u:04d}" for u in range(n_units)])
    assert sorted(features_of(out)) == [f"vidUnit{u:04d}" for u in range(n_units)]
    for name, content in first.items():
        assert (out / name).read_bytes() == content  # finished units were not redone
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


# ---------------------------------------------------------------- real videos
