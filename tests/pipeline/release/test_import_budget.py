"""mmp-import's per-video budget: a video past it is one over_budget row, the rest of its unit lands."""
import json

import numpy as np

from pipeline.release import importer

from tests.conftest import read_all_rows
from tests.pipeline.release.test_import import IDS, args, write_release
from tests.watchdog import call_main

BIG = "bigRelVid01"


def test_a_published_video_over_its_budget_is_one_row(tmp_path):
    def tweak(lang, doc):  # one video with many long cues: cleaning it grows memory by far more than 1 MiB
        n = 20000
        doc[BIG] = {"text": [f"sentence number {i} " * 8 for i in range(n)], "start": [float(i) for i in range(n)],
                    "end": [i + 0.9 for i in range(n)]}

    caps = write_release(tmp_path / "release", langs=["en", "de"], tweak=tweak)
    out = tmp_path / "aligned"
    code, _, err = call_main(importer.main, ["multi-ht100m", "--captions", str(caps), "--out", str(out),
                                             "--langs", "en,de", "--budget-memory-mb", "1", *args()],
                             seconds=120, memory_mb=1000)
    assert code == 0, err
    rows = {r["video_id"]: r for r in read_all_rows(out)}
    assert rows[BIG]["status"] == "over_budget" and rows[BIG]["error"].startswith("memory (1 MiB")
    assert all(rows[v]["status"] == "ok" for v in IDS)
    assert json.loads((out / "config.json").read_text())["budget"] == {"seconds": 120.0, "memory_mb": 1.0}


def test_a_feature_file_over_its_budget_is_one_row(tmp_path):
    caps = write_release(tmp_path / "release", langs=["en"])
    aligned, mmp, feats = tmp_path / "aligned", tmp_path / "mmp", tmp_path / "feats"
    assert importer.main(["multi-ht100m", "--captions", str(caps), "--out", str(aligned), "--langs", "en",
                          *args()]) == 0
    feats.mkdir()
    for vid in IDS:
        rows = 40000 if vid == IDS[0] else 21  # 80 MB of float16 for the first: more than 8 MiB to load
        np.save(feats / f"{vid}.npy", np.zeros((rows, 1024), dtype=np.float16))
    code, _, err = call_main(importer.main, ["s3d-features", "--features", str(feats), "--aligned", str(aligned),
                                             "--out", str(mmp), "--workers", "1", "--no-progress",
                                             "--budget-memory-mb", "8"], seconds=120, memory_mb=1000)
    assert code == 0, err
    rows = {r["video_id"]: r for r in read_all_rows(mmp)}
    assert rows[IDS[0]]["status"] == "over_budget" and rows[IDS[0]]["error"].startswith("memory (8 MiB")
    assert {rows[v]["status"] for v in IDS[1:]} <= {"ok", "length_mismatch"}
