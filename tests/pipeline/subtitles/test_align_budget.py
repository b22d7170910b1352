"""mmp-align's per-video budget: a video whose cleaning runs out of it is one over_budget row."""
from __future__ import annotations

import json

import pytest

from pipeline.subtitles.stage import main
from shards.layout import UnitFiles
from shards.reader import read_rows
from tests.pipeline.subtitles.test_align_stage import info, write_crawl_unit
from tests.pipeline.subtitles.test_subtitles import manual_vtt
from tests.watchdog import call_main

SMALL, BIG = "smallVideo1", "bigVideo000"


@pytest.fixture
def crawl(tmp_path):
    big = manual_vtt([(i * 0.5, i * 0.5 + 0.4, f"cue number {i} of a very long track") for i in range(60000)])
    small = manual_vtt([(0.0, 2.0, "hello"), (2.0, 4.0, "world")])
    write_crawl_unit(tmp_path / "crawl", 0, [
        (SMALL, "ok", {"info.json": info(SMALL, {"en": ("manual", "en")}), "en.vtt": small.encode()}),
        (BIG, "ok", {"info.json": info(BIG, {"en": ("manual", "en")}), "en.vtt": big.encode()}),
        (SMALL[:-1] + "2", "ok", {"info.json": info(SMALL[:-1] + "2", {"en": ("manual", "en")}),
                                  "en.vtt": small.encode()})])
    return tmp_path / "crawl"


@pytest.mark.parametrize("flags, what", [(["--budget-seconds", "0.05"], "wall time (0.05 s)"),
                                         (["--budget-memory-mb", "4"], "memory (4 MiB")])
def test_a_video_over_its_budget_is_one_row(crawl, tmp_path, flags, what):
    out = tmp_path / "aligned"
    code, _, err = call_main(main, ["--crawl", str(crawl), "--out", str(out), "--langs", "en", "--workers", "1",
                                    "--no-progress", *flags], seconds=120, memory_mb=1500)
    assert code == 0, err
    rows = {r["video_id"]: r for r in read_rows(UnitFiles(out, "aligned", 0).parquet)}
    assert rows[BIG]["status"] == "over_budget" and rows[BIG]["error"].startswith(what)
    assert rows[SMALL]["status"] == rows[SMALL[:-1] + "2"]["status"] == "ok"
    budget = json.loads((out / "config.json").read_text())["budget"]
    assert budget == {"seconds": 300.0, "memory_mb": 4096.0, **{
        "seconds" if "seconds" in flags[0] else "memory_mb": float(flags[1])}}
