"""mmp-stats: figures checked against the rows, every bad input named in the issue, and the HTML in Chromium."""
from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from pipeline.stats import stage as mstats
from shards.rows import aligned_schema, crawl_schema
from pipeline.release.s3d_features import SCHEMA as MMP_SCHEMA
from pipeline.stats.report import render_html, render_markdown
from demo.sample import build_sample, write_release_sample
from demo.server import SampleServer
from shards.layout import ALIGNED, CRAWL, MMP, UnitFiles
from shards.samples import LANGS as LANGS_9
from shards.writer import UnitWriter
from tests.conftest import read_all_rows

CHROMIUM = Path("/usr/bin/chromium")
LANGS = ["en", "de", "zh"]


# ---------------------------------------------------------------- datasets

@pytest.fixture(scope="module")
def pipeline_data(tmp_path_factory):
    """crawl/, aligned/ and imported/aligned/ made by the real stages from the shipped sample."""
    from pipeline.subtitles import stage as align_stage
    from pipeline.crawl import stage as crawl
    from pipeline.release import importer

    root = tmp_path_factory.mktemp("pipeline")
    sample = root / "sample"
    with SampleServer(sample / "files") as server:
        (sample / "files").mkdir(parents=True, exist_ok=True)
        built = build_sample(sample, server.base_url, videos=False)
        assert crawl.main(["--videos", built["list"], "--out", str(root / "data" / "crawl"), "--info-json", built["info_json"],
                           "--unit-size", "4", "--workers", "1", "--no-progress", "--budget-dir", str(root / "budget"),
                           "--retries", "1", "--backoff-base", "0.05", "--max-requests-per-second", "200",
                           "--translation-requests-per-second", "200", "--videos-per-hour", "600",
                           "--allow-host", f"127.0.0.1:{server.port}",
                           "--sleep-subtitles", "0"]) == 0
    data = root / "data"
    assert align_stage.main(["--crawl", str(data / "crawl"), "--out", str(data / "aligned"), "--workers", "1",
                             "--no-progress"]) == 0
    release = write_release_sample(sample / "release")
    assert importer.main(["multi-ht100m", "--captions", str(release), "--out", str(data / "imported" / "aligned"),
                          "--partitions", "2", "--workers", "1", "--no-progress"]) == 0
    return data




def test_ytdlp_warnings_are_counted_in_the_report(synthetic, tmp_path):
    """The crawl's counts of yt-dlp warnings by kind (unit stats) reach the report."""
    data = synthetic
    stats_path = sorted((data / "crawl").glob("*.stats.json"))[0]
    st = json.loads(stats_path.read_text())
    st["counts"].update({"ytdlp_warnings/po_token": 7, "ytdlp_warnings/js_runtime": 3, "track_status/po_token_required": 5})
    stats_path.write_text(json.dumps(st))
    out, doc = run_stats(data, tmp_path)
    (crawl,) = doc["crawl"]
    assert crawl["ytdlp_warnings"] == {"po_token": 7, "js_runtime": 3}
    assert crawl["transient_tracks"] >= 5
    md = (out / "report.md").read_text()
    assert "| po_token | 7 |" in md and "| js_runtime | 3 |" in md


def crawl_row(vid, status, t, cat="Food and Entertaining", attempts=1, kinds=("asr", "translated", "translated")):
    row = {"video_id": vid, "status": status, "error": None if status == "ok" else f"why {status}",
           "attempts": attempts, "crawled_at": t, "duration": 120.0 if status in ("ok", "partial") else None,
           "category_1": cat}
    if status in ("ok", "partial"):
        row.update({f"{l}_kind": k for l, k in zip(LANGS, kinds)})
    return row


def aligned_row(vid, langs, kinds=("asr", "translated", "translated")):
    row = {"video_id": vid, "status": "ok" if len(langs) == len(LANGS) else ("partial" if langs else "no_subtitles"),
           "duration": 120.0, "n_langs": len(langs), "timeline_kind": kinds[0] if "en" in langs else None}
    for lang, kind in zip(LANGS, kinds):
        row[f"{lang}_kind"] = kind
        if lang in langs:
            row.update({f"{lang}_status": "ok", f"{lang}_cues": 10, f"{lang}_tokens": 80 if lang != "zh" else 150,
                        f"{lang}_chars": 400, f"{lang}_seconds": 30.0, f"{lang}_coverage": 0.9})
        else:
            row[f"{lang}_status"] = "missing"
    return row


def write_unit(directory, prefix, index, schema, layout, rows, stats_times=None):
    with UnitWriter(UnitFiles(directory, prefix, index), schema, layout) as w:
        for row in rows:
            if row["status"] in ("ok", "partial"):
                members = {"crawl": {"info.json": {"id": row["video_id"]}},
                           "aligned": {"subs.json": {"video_id": row["video_id"]}},
                           "mmp": {"meta.json": {"video_id": row["video_id"]}}}[prefix]
                w.write_sample(row["video_id"], members)
            w.add_row(row)
    if stats_times is not None:  # pretend the unit ran at another time (a resumed run)
        files = UnitFiles(directory, prefix, index)
        doc = json.loads(files.stats.read_text())
        doc["started"], doc["finished"] = stats_times
        files.stats.write_text(json.dumps(doc))


def make_synthetic(data: Path) -> Path:
    """A dataset with known figures, in the stages' real schemas, written by the project's UnitWriter."""
    t0 = 1_700_000_000.0
    write_unit(data / "crawl", "crawl", 0, crawl_schema(LANGS), CRAWL, [
        crawl_row("vidAAAAAAA1", "ok", t0), crawl_row("vidAAAAAAA2", "ok", t0, cat="Health"),
        crawl_row("vidAAAAAAA3", "partial", t0, kinds=("manual", "translated", "none")),
        crawl_row("vidAAAAAAA4", "unavailable", t0)], stats_times=(t0, t0 + 60))
    write_unit(data / "crawl", "crawl", 1, crawl_schema(LANGS), CRAWL, [
        crawl_row("vidBBBBBBB1", "ok", t0 + 7200, attempts=2), crawl_row("vidBBBBBBB2", "rate_limited", t0 + 7200),
    ], stats_times=(t0 + 7200, t0 + 7260))
    write_unit(data / "aligned", "aligned", 0, aligned_schema(LANGS), ALIGNED, [
        aligned_row("vidAAAAAAA1", LANGS), aligned_row("vidAAAAAAA2", LANGS),
        aligned_row("vidAAAAAAA3", ["en", "de"], kinds=("manual", "translated", "none")),
        {"video_id": "vidAAAAAAA4", "status": "upstream_failed", "error": "crawl unavailable"}])
    write_unit(data / "aligned", "aligned", 1, aligned_schema(LANGS), ALIGNED, [
        aligned_row("vidBBBBBBB1", LANGS),
        {"video_id": "vidBBBBBBB2", "status": "upstream_failed", "error": "crawl rate_limited: 429"}])
    write_unit(data / "mmp", "mmp", 0, MMP_SCHEMA, MMP, [
        {"video_id": "vidAAAAAAA1", "status": "ok", "duration": 120.0, "feature_rows": 120, "feature_dim": 1024,
         "length_mismatch": 0.0},
        {"video_id": "vidAAAAAAA2", "status": "length_mismatch", "error": "kept", "duration": 120.0,
         "feature_rows": 60, "feature_dim": 1024, "length_mismatch": -60.0},
        {"video_id": "vidAAAAAAA3", "status": "no_features", "error": "no file", "duration": 120.0}])
    (data / "aligned" / "config.json").write_text(json.dumps({"stage": "aligned", "config": {"langs": LANGS}}))
    return data


@pytest.fixture
def synthetic(tmp_path):
    """A fresh copy for tests that damage it."""
    return make_synthetic(tmp_path / "data")


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    """(reports dir, stats.json) of the intact synthetic dataset, built once for the tests that only read it."""
    root = tmp_path_factory.mktemp("synthetic")
    return run_stats(make_synthetic(root / "data"), root)


def run_stats(data, tmp_path, *extra):
    out = tmp_path / "reports"
    rc = mstats.main(["--data", str(data), "--out", str(out), "--no-progress", *extra])
    assert rc == 0
    doc = json.loads((out / "stats.json").read_text())
    return out, doc


def issue_text(doc, level=None):
    return " | ".join(f"{i['where']}: {i['message']}" for i in doc["issues"] if level is None or i["level"] == level)


# ---------------------------------------------------------------- figures

def test_figures_match_the_rows_of_the_real_stages(pipeline_data, tmp_path, capsys):
    out, doc = run_stats(pipeline_data, tmp_path)
    assert doc["issues"] == [], doc["issues"]
    crawl_rows = read_all_rows(pipeline_data / "crawl")
    (crawl,) = doc["crawl"]
    assert crawl["videos"] == len(crawl_rows)
    for status in {r["status"] for r in crawl_rows}:
        assert crawl["statuses"][status] == sum(r["status"] == status for r in crawl_rows)
    cats = [r["category_1"] for r in crawl_rows if r["category_1"]]
    assert crawl["categories"]["all"] and sum(crawl["categories"]["all"].values()) == len(cats)
    per_track = [r[f"{l}_status"] for r in crawl_rows for l in LANGS_9 if r.get(f"{l}_status")]
    assert crawl["track_statuses"] == {s: per_track.count(s) for s in set(per_track)}

    by_path = {a["path"]: a for a in doc["aligned"]}
    assert set(by_path) == {"aligned", "imported/aligned"}
    assert by_path["imported/aligned"]["source"] == "multi-ht100m"
    for path, a in by_path.items():
        rows = read_all_rows(pipeline_data / path)
        assert a["videos"] == len(rows)
        for lang, d in a["per_lang"].items():
            ok = [r for r in rows if r.get(f"{lang}_status") == "ok"]
            assert d["videos"] == len(ok)
            assert d["subtitles"] == sum(r[f"{lang}_cues"] for r in ok)
            assert d["tokens"] == sum(r[f"{lang}_tokens"] for r in ok)
            assert sum(k["videos"] for k in d["by_kind"].values()) == len(ok)
        assert sum(a["langs_per_video"].values()) + a["langs_per_video_unknown"] == len(rows)
    assert set(by_path["imported/aligned"]["per_lang"]["en"]["by_kind"]) == {"released"}

    md = (out / "report.md").read_text()
    assert "| track outcome |" in md and f"| none | {crawl['track_statuses']['none']} |" in md
    assert "Table 8" in md and "| en (English) |" in md and "1,238,911" in md
    assert "whitespace-separated words" in md  # the report names the token rule
    # the input (7 distinct valid ids) projected at the session's budgets the crawl ran with
    assert crawl["projection"].startswith("7 videos take 0.0 days in one session at 600 videos/hour")
    assert "At its session's budgets" in md and "bound by --videos-per-hour" in md
    assert "report.html" in capsys.readouterr().out


def test_known_figures_of_a_synthetic_dataset(synthetic_report):
    _, doc = synthetic_report
    assert doc["issues"] == [], doc["issues"]
    (a,) = doc["aligned"]
    assert a["langs"] == LANGS
    en, zh = a["per_lang"]["en"], a["per_lang"]["zh"]
    assert (en["videos"], en["subtitles"], en["tokens"]) == (4, 40, 320)
    assert (zh["videos"], zh["subtitles"], zh["tokens"]) == (3, 30, 450)
    assert en["by_kind"] == {"asr": {"videos": 3, "subtitles": 30, "tokens": 240},
                             "manual": {"videos": 1, "subtitles": 10, "tokens": 80}}
    assert en["paper"]["videos"] == 1_238_911
    assert en["tokens_per_subtitle_overall"] == 8.0 and zh["tokens_per_video"]["median"] == 150
    assert en["coverage"]["mean"] == pytest.approx(0.9)
    assert a["langs_per_video"] == {"0": 0, "1": 0, "2": 1, "3": 3} and a["langs_per_video_unknown"] == 2
    assert a["statuses"] == {"ok": 3, "upstream_failed": 2, "partial": 1}

    (c,) = doc["crawl"]
    assert c["statuses"] == {"ok": 3, "partial": 1, "rate_limited": 1, "unavailable": 1}
    assert c["transient"] == 1 and c["retried_videos"] == 1 and c["attempts"] == {"1": 5, "2": 1}
    assert c["categories"]["with_subtitles"] == {"Food and Entertaining": 3, "Health": 1}
    assert [r["units"] for r in c["runs"]] == [1, 1]  # two hours apart: the second run is a resume
    assert c["reasons"]["rate_limited"] == {"why rate_limited": 1}

    (m,) = doc["mmp"]
    assert m["videos_with_features"] == 2 and m["feature_hours"] == pytest.approx(180 / 3600)
    assert m["mismatch_over_tolerance"] == 1 and m["features_shorter"] == 1
    shards = {s["stage"]: s for s in doc["shards"]}
    assert shards["crawl"]["units_complete"] == 2 and shards["crawl"]["samples"] == 4
    assert shards["mmp"]["bytes"] > 0


def test_rows_of_the_feature_extraction_stage(tmp_path):
    """mmp-extract-features' schema: no feature_dim; its listed duration, decoder, device and timings are used."""
    extract = pytest.importorskip("features.extract")
    data = tmp_path / "mmp"
    write_unit(data, "mmp", 0, extract.SCHEMA, MMP, [
        {"video_id": "vidAAAAAAA1", "status": "ok", "duration": 59.5, "aligned_duration": 60.0, "feature_rows": 60,
         "length_mismatch": 0.5, "decoder": "decord", "device": "cuda:0", "seconds_decode": 1800.0,
         "seconds_model": 1800.0},
        {"video_id": "vidAAAAAAA2", "status": "ok", "duration": 30.0, "aligned_duration": 90.0, "feature_rows": 30,
         "length_mismatch": 0.0, "decoder": "pyav", "device": "cuda:0", "seconds_decode": 0.0, "seconds_model": 0.0},
        {"video_id": "vidAAAAAAA3", "status": "decode_error", "error": "moov atom not found", "duration": None},
        # rows of 32/30 s (a recipe whose rows are not seconds): the hours follow feature_seconds, not rows
        {"video_id": "vidAAAAAAA4", "status": "ok", "duration": 32.0, "feature_rows": 30, "feature_seconds": 32.0,
         "length_mismatch": 0.0, "decoder": "decord", "device": "cuda:0", "seconds_decode": 0.0, "seconds_model": 0.0}])
    out, doc = run_stats(data, tmp_path)
    assert doc["issues"] == [], doc["issues"]
    (m,) = doc["mmp"]
    assert m["videos_with_features"] == 3 and m["feature_hours"] == pytest.approx((90 + 32) / 3600)
    assert m["listed_mismatch_over_tolerance"] == 1 and m["mismatch_over_tolerance"] == 0
    assert m["decoders"] == {"decord": 2, "pyav": 1} and m["devices"] == {"cuda:0": 3}
    assert m["decode_hours"] + m["model_hours"] == pytest.approx(1.0)
    assert m["reasons"]["decode_error"] == {"moov atom not found": 1}
    assert "rows vs listed duration" in (out / "report.md").read_text()


def test_one_stage_directory_and_the_tokenizer_note(synthetic, tmp_path, text_dir):
    out, doc = run_stats(synthetic / "aligned", tmp_path, "--tokenizer", str(text_dir))
    assert [a["path"] for a in doc["aligned"]] == ["aligned"] and not doc["crawl"] and not doc["mmp"]
    assert doc["tokenizer"]["requested"] == str(text_dir)
    assert doc["aligned"][0]["tokenizer_counts"]["name"] == str(text_dir)
    md = (out / "report.md").read_text()
    # these shards' subs.json hold no tracks: the page says so and keeps the rule's token column
    assert "found no subtitle text in these shards" in md and "tokens (whitespace rule) ours" in md


def test_downstream_sets_are_not_counted_as_the_dataset(synthetic, tmp_path):
    """mmp-prepare's shards (MSR-VTT etc.) share the mmp prefix but are not Multi-HowTo100M."""
    downstream = synthetic / "msrvtt"
    shutil.copytree(synthetic / "mmp", downstream)
    (downstream / "config.json").write_text(json.dumps({"stage": "mmp", "config": {"dataset": "msrvtt"}}))
    _, doc = run_stats(synthetic, tmp_path)
    assert [m["path"] for m in doc["mmp"]] == ["mmp"]


# ---------------------------------------------------------------- bad input

def test_saved_stats_render_again(synthetic_report):
    out, doc = synthetic_report
    assert render_markdown(doc) == (out / "report.md").read_text()
    html = render_html(doc)
    assert html.count("<img") == (out / "report.html").read_text().count("<img") > 5


# ---------------------------------------------------------------- the HTML itself

def test_html_is_self_contained(synthetic_report):
    out, _ = synthetic_report
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html, re.I)
    assert "@import" not in html and "url(http" not in html
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 8
    import base64

    for b64 in images:
        assert base64.b64decode(b64).startswith(b"\x89PNG\r\n\x1a\n")


def _chromium(tmp_path, *args):
    profile = tmp_path / "chromium-profile"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def rendered_page(report: Path, tmp_path) -> str:
    """The report's DOM after headless Chromium ran its scripts, checked: no console message,
    every plot decoded as an image (at least 8)."""
    dom = _chromium(tmp_path, "--dump-dom", (report / "report.html").resolve().as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [l for l in dom.stderr.splitlines() if ":CONSOLE" in l]
    assert console == [], console
    body = re.search(r'<body data-images-total="(\d+)" data-images-decoded="(\d+)"', dom.stdout)
    assert body, dom.stdout[:500]
    total, decoded = map(int, body.groups())
    assert total >= 8 and decoded == total
    return dom.stdout


def _png_pixels(path: Path):
    """(width, height, rows of RGB(A) bytes) of an 8-bit non-interlaced PNG, with the stdlib only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if ctype == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6)
            bpp = 3 if color == 2 else 4
        elif ctype == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa_, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa_ <= pb and pa_ <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (Debian package 'chromium'; "
                    "`make system-deps` installs it)")
def test_report_opens_in_headless_chromium(synthetic_report, tmp_path):
    out, _ = synthetic_report
    url = (out / "report.html").resolve().as_uri()
    page = rendered_page(out, tmp_path)  # every plot decoded as an image
    assert page.count("<table") >= 10 and "Table 8" in page

    shot = tmp_path / "shot.png"
    run = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2400", url)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    assert [l for l in run.stderr.splitlines() if ":CONSOLE" in l] == []
    width, height, bpp, rows = _png_pixels(shot)
    assert (width, height) == (1200, 2400)
    # Not blank: many distinct colours, and dark (text) pixels as well as the white page.
    sample = {rows[y][x * bpp:x * bpp + 3] for y in range(0, height, 7) for x in range(0, width, 7)}
    assert len(sample) > 50
    dark = sum(1 for y in range(0, height, 5) for x in range(0, width, 5) if max(rows[y][x * bpp:x * bpp + 3]) < 90)
    assert dark > 500
    shutil.copy(shot, out / "screenshot.png")  # kept beside the report for a look when debugging
