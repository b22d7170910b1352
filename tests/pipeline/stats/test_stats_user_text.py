"""Titles, categories and errors are user text: shown as they are, never read as mathtext or HTML."""
from __future__ import annotations

import html
import json

import pytest

pytest.importorskip("matplotlib")

from pipeline.stats import stage as mstats
from shards.layout import ALIGNED, CRAWL
from shards.rows import aligned_schema, crawl_schema
from tests.pipeline.stats.test_stats import LANGS, aligned_row, crawl_row, write_unit
from tests.watchdog import call_main

MATH = r"$\frac{$"
SCRIPT = "<script>alert(1)</script>"
DOLLARS = "Save $5 on a $10 fix"


def hostile_data(data):
    t0 = 1_700_000_000.0
    write_unit(data / "crawl", "crawl", 0, crawl_schema(LANGS), CRAWL, [
        crawl_row("vidAAAAAAA1", "ok", t0, cat=MATH), crawl_row("vidAAAAAAA2", "ok", t0, cat=SCRIPT),
        crawl_row("vidAAAAAAA3", "ok", t0, cat=DOLLARS),
        {**crawl_row("vidAAAAAAA4", "unavailable", t0, cat=MATH), "error": f"title {SCRIPT} {MATH}"}])
    write_unit(data / "aligned", "aligned", 0, aligned_schema(LANGS), ALIGNED, [
        aligned_row("vidAAAAAAA1", LANGS), aligned_row("vidAAAAAAA2", LANGS),
        {"video_id": "vidAAAAAAA3", "status": "parse_error", "error": f"<img src=x onerror=alert(1)> {MATH}"}])
    (data / "aligned" / "config.json").write_text(json.dumps({"stage": "aligned", "config": {"langs": LANGS}}))
    return data


def test_categories_and_errors_with_dollars_and_html_make_a_report(tmp_path):
    data = hostile_data(tmp_path / "data")
    out = tmp_path / "reports"
    code, stdout, stderr = call_main(mstats.main, ["--data", str(data), "--out", str(out), "--no-progress"],
                                     seconds=120, memory_mb=1500)
    assert code == 0, stderr
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for text in (MATH, DOLLARS):
        assert html.escape(text, quote=False) in md and html.escape(text) in page
    for raw in (SCRIPT, "<img src=x"):
        assert raw not in md and raw not in page.replace("<script>(function", "")
    assert html.escape(SCRIPT, quote=False) in md


def test_category_ticks_are_drawn_as_written():
    from pipeline.stats.report_blocks import barh
    from pipeline.stats.report_render import Figure as FigureSpec, figure_png

    counts = {MATH: 3, DOLLARS: 2, r"$x^2$": 1}
    drawn = []

    def draw(fig):
        barh(fig, counts, "videos", "per category")
        drawn.append(fig)

    assert figure_png(FigureSpec(draw, "videos per category"))
    ticks = drawn[0].axes[0].get_yticklabels()
    assert {t.get_text() for t in ticks} == set(counts)
    assert not any(t._parse_math for t in ticks)  # "$x^2$" is shown with its dollars, not as x squared
