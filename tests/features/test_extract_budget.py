"""mmp-extract-features' per-video budget: a video whose decoding runs out of it is one over_budget row."""
import json

import pytest

pytest.importorskip("av")
pytest.importorskip("torch")

import features.batching  # noqa: E402
from features.decode import DecodedVideo  # noqa: E402
from features.extract import main  # noqa: E402

from tests.conftest import read_all_rows, read_all_samples  # noqa: E402
from tests.features.test_decode import cfr, make_video  # noqa: E402
from tests.features.test_extract import write_aligned  # noqa: E402
from tests.watchdog import call_main  # noqa: E402


class StuckOnSlow(DecodedVideo):
    """A decoder that never ends on one video (as a decoder stuck in a loop would)."""

    def chunks(self):
        if "vidSlow" in str(self.path):
            while True:
                pass
        yield from super().chunks()


def _main_stuck_on_slow(argv):
    """mmp-extract-features whose decoder never ends on one video (run in a spawned child)."""
    features.batching.DecodedVideo = StuckOnSlow
    return main(argv)


def test_a_video_past_its_budget_is_one_row_and_the_rest_is_extracted(tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    ids = ["vidGood0001", "vidSlow0001", "vidGood0002"]
    for vid in ids:
        make_video(src / f"{vid}.mkv", cfr(0.9))
    write_aligned(tmp_path / "aligned", [[(vid, 0.9) for vid in ids]])
    out = tmp_path / "mmp"
    argv = ["--aligned", str(tmp_path / "aligned"), "--video-dir", str(src), "--out", str(out), "--gpus", "0",
            "--workers", "1", "--executor", "inline", "--no-progress", "--random-weights", "--backbones", "r21d",
            "--budget-seconds", "2"]
    # A clean interpreter: torch's threads do not survive a fork of this process once it ran them.
    code, _, err = call_main(_main_stuck_on_slow, argv, seconds=120, memory_mb=1500, start="spawn")
    assert code == 0, err
    rows = {r["video_id"]: r for r in read_all_rows(out)}
    assert rows["vidSlow0001"]["status"] == "over_budget" and rows["vidSlow0001"]["error"] == "wall time (2 s)"
    assert rows["vidGood0001"]["status"] == rows["vidGood0002"]["status"] == "ok"
    assert sorted(read_all_samples(out)) == ["vidGood0001", "vidGood0002"]
    assert json.loads((out / "config.json").read_text())["budget"] == {"seconds": 2.0, "memory_mb": 8192.0}


def test_member_copies_of_a_killed_worker_are_removed_by_the_next_extraction(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"{features.batching.COPY_PREFIX}{gone.pid}-abc.mp4"
    live = tmp_path / f"{features.batching.COPY_PREFIX}{os.getpid()}-def.mp4"
    for path in (dead, live):
        path.write_bytes(b"a video copied out of a crawl tar")
    features.batching._remove_dead_copies()
    assert not dead.exists() and live.exists()
