"""mmp-stats at a glance: --tokenizer counts, readable charts at any scale, one colour per language,
folded empty sections, example segments and failures, a crawl's rate and ETA; and the page in Chromium."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from pipeline.stats import stage as mstats
from pipeline.subtitles.align import track_stats
from shards.rows import aligned_schema
from pipeline.stats.report_blocks import LANG_COLORS, hist_grid, hours, lang_boxes, lang_color, size
from pipeline.stats.report_subtitles import ratio_bars
from shards.layout import ALIGNED, UnitFiles
from shards.writer import UnitWriter
from tests.pipeline.stats.test_stats import CHROMIUM, _chromium, make_synthetic, rendered_page
from tests.textmodel import WORDS

LANGS = ["en", "de", "zh"]


def subs_doc(vid: str, i: int, langs=LANGS, cues: int = 4) -> dict:
    tracks, segments = {}, []
    for k in range(cues):
        segments.append({"start": 3.0 * k, "end": 3.0 * k + 2.5, "text": {}})
    for lang in langs:
        words = WORDS[lang]
        cue_list = []
        for k in range(cues + i % 3):  # videos of different lengths, so that a sample's ratio varies
            text = (" " if lang != "zh" else "").join(words[(i + k + j) % len(words)] for j in range(3 + k % 4))
            text += " ok," * ((i * k) % 3)  # one rule token, two or more of the tokenizer's: the ratio varies
            cue_list.append([3.0 * k, 3.0 * k + 2.5, text])
            if k < cues:
                segments[k]["text"][lang] = text
        tracks[lang] = {"kind": "asr" if lang == "en" else "translated", "source_lang": "en", "cues": cue_list}
    return {"video_id": vid, "duration": 30.0, "timeline": "en", "tracks": tracks, "segments": segments}


def row_for(doc: dict) -> dict:
    row = {"video_id": doc["video_id"], "status": "ok", "duration": doc["duration"], "n_langs": len(doc["tracks"]),
           "timeline_kind": "asr"}
    for lang, track in doc["tracks"].items():
        st = track_stats(track["cues"], lang)
        row.update({f"{lang}_kind": track["kind"], f"{lang}_status": "ok", f"{lang}_cues": st["cues"],
                    f"{lang}_tokens": st["tokens"], f"{lang}_chars": st["chars"], f"{lang}_seconds": st["seconds"],
                    f"{lang}_coverage": 1.0})
    return row


def write_aligned(directory: Path, units: int, per_unit: int, cues: int = 4) -> list:
    docs = []
    for u in range(units):
        with UnitWriter(UnitFiles(directory, "aligned", u), aligned_schema(LANGS), ALIGNED) as w:
            for i in range(per_unit):
                doc = subs_doc(f"txt{u:03d}{i:05d}", u * per_unit + i, cues=cues)
                w.write_sample(doc["video_id"], {"subs.json": doc})
                w.add_row(row_for(doc))
                docs.append(doc)
            w.add_row({"video_id": f"bad{u:03d}{0:05d}", "status": "no_subtitles",
                       "error": "YouTube offers no subtitles"})
    (directory / "config.json").write_text(json.dumps({"stage": "aligned", "config": {"langs": LANGS}}))
    return docs


def run(data, tmp_path, *extra):
    out = tmp_path / "reports"
    assert mstats.main(["--data", str(data), "--out", str(out), "--no-progress", *extra]) == 0
    return out, json.loads((out / "stats.json").read_text())


def true_counts(text_dir, docs) -> dict:
    from pipeline.runtime.hub import load_tokenizer

    tok = load_tokenizer(str(text_dir))
    out = {}
    for doc in docs:
        for lang, track in doc["tracks"].items():
            ids = tok([c[2] for c in track["cues"]], add_special_tokens=False)["input_ids"]
            out[lang] = out.get(lang, 0) + sum(map(len, ids))
    return out


# ---------------------------------------------------------------- --tokenizer

def test_tokenizer_counts_every_video_of_a_small_dataset(tmp_path, text_dir):
    docs = write_aligned(tmp_path / "data" / "aligned", units=2, per_unit=3)
    out, doc = run(tmp_path / "data", tmp_path, "--tokenizer", str(text_dir))
    tc = doc["aligned"][0]["tokenizer_counts"]
    assert tc["exact"] and tc["sample_videos"] == 6
    want = true_counts(text_dir, docs)
    assert {l: d["tokens"] for l, d in tc["per_lang"].items()} == want
    assert all(d["rel_error"] == 0 for d in tc["per_lang"].values())
    md = (out / "report.md").read_text()
    assert f"tokens ({text_dir}) ours" in md  # Table 8's token column is the tokenizer's
    assert "every one of the 6 videos with text was tokenized" in md


def test_tokenizer_samples_a_big_dataset_and_states_the_error(tmp_path, text_dir):
    docs = write_aligned(tmp_path / "data" / "aligned", units=4, per_unit=5)
    out, doc = run(tmp_path / "data", tmp_path, "--tokenizer", str(text_dir), "--tokenizer-sample", "8")
    tc = doc["aligned"][0]["tokenizer_counts"]
    assert not tc["exact"] and tc["sample_videos"] == 8
    want = true_counts(text_dir, docs)
    for lang, d in tc["per_lang"].items():
        assert d["sample_tracks"] == 8 and d["rel_error"] > 0
        assert abs(d["tokens"] - want[lang]) < 4 * d["se"] + 1  # the estimate is within its error of the truth
    md = (out / "report.md").read_text()
    assert "a sample of 8 videos (at most 16 evenly spread cues of each track) was tokenized" in md
    assert "95% interval" in md
    assert re.search(r"\| ±\d+\.\d% \|", md)


def test_a_sample_tokenizes_a_bounded_number_of_cues_per_track(tmp_path, text_dir):
    from pipeline.stats.read import Issues, find_stage_dirs, read_stats_files
    from pipeline.stats.text import SAMPLE_CUES, count_sample, load_counting_tokenizer

    write_aligned(tmp_path / "aligned", units=2, per_unit=2, cues=3 * SAMPLE_CUES)
    (sd,) = find_stage_dirs(tmp_path / "aligned")
    read_stats_files(sd, Issues())
    tok, _ = load_counting_tokenizer(str(text_dir))
    per, videos, exact = count_sample(tok, sd, Issues(), size=4)  # every video: every cue
    assert exact and videos == 4 and all(k >= 3 * SAMPLE_CUES for l in per for _, _, k in per[l])
    per, videos, exact = count_sample(tok, sd, Issues(), size=2)
    assert not exact and videos == 2 and all(k <= SAMPLE_CUES for l in per for _, _, k in per[l])


def test_tokenizer_that_cannot_be_loaded_is_one_line(tmp_path, capsys):
    write_aligned(tmp_path / "data" / "aligned", units=1, per_unit=1)
    assert mstats.main(["--data", str(tmp_path / "data"), "--tokenizer", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmp-stats: error: --tokenizer ") and "Traceback" not in err and "--text-model" not in err
    assert mstats.main(["--data", str(tmp_path / "data"), "--tokenizer-sample", "0"]) == 2


# ---------------------------------------------------------------- charts

def _figure():
    from matplotlib.figure import Figure

    return Figure(figsize=(8, 3.4))


def test_ratio_chart_is_readable_when_counts_are_a_tiny_share_of_the_paper():
    paper = {l: {"videos": 1_000_000, "subtitles": 60_000_000, "tokens": 1e9} for l in LANGS}
    ours = {l: {"videos": 9, "subtitles": 400, "tokens": 5_000} for l in LANGS}
    fig = _figure()
    ratio_bars(fig, ours, paper)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    bottom = ax.get_ylim()[0]
    bars = [p for p in ax.patches if p.get_height() > 0]
    assert len(bars) == 9 and all(p.get_y() + p.get_height() > bottom * 1.5 for p in bars)  # none vanishes
    assert {t.get_text() for t in ax.texts} >= {"0.00090%", "0.00067%", "0.00050%"}
    fig = _figure()
    ratio_bars(fig, {l: {"videos": 900_000, "subtitles": 5e7, "tokens": 9e8} for l in LANGS}, paper)
    assert fig.axes[0].get_yscale() == "linear"


def test_one_box_and_one_panel_per_language_in_its_colour():
    from matplotlib.colors import to_hex

    s = {"n": 5, "mean": 3.0, "median": 3.0, "p10": 1.0, "p25": 2.0, "p75": 4.0, "p90": 5.0}
    fig = _figure()
    lang_boxes(fig, [("t", "x", {"zh": s, "en": s}, False), ("u", "y", {"zh": s, "en": s}, True)])
    boxes = [p for p in fig.axes[0].patches]
    assert [to_hex(b.get_facecolor()) for b in boxes] == [LANG_COLORS["zh"], LANG_COLORS["en"]]
    hist = {"edges": [0, 1, 2, 3], "counts": [1, 2, 0], "overflow": 0, "underflow": 0}
    fig = _figure()
    hist_grid(fig, {"de": hist, "zh": hist, "en": {**hist, "counts": [0, 0, 0]}}, "x", "title")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2 and [ax.get_title(loc="left").split()[0] for ax in visible] == ["de", "zh"]
    assert lang_color("xx") == lang_color("xx") and lang_color("de") == LANG_COLORS["de"]


def test_units_for_small_data():
    assert [hours(v) for v in (0, 1 / 3600 * 40, 0.2, 3.25, None)] == ["0 h", "40 s", "12 min", "3.2 h", "–"]
    assert [size(v) for v in (512, 1536, 5 * 2**20, 3 * 2**30)] == ["512 B", "1.5 KiB", "5.0 MiB", "3.0 GiB"]


# ---------------------------------------------------------------- the page

@pytest.fixture(scope="module")
def glance(tmp_path_factory):
    """The synthetic crawl/aligned/mmp dataset plus an aligned directory with text, a crawl in progress."""
    root = tmp_path_factory.mktemp("glance")
    data = make_synthetic(root / "data")
    write_aligned(data / "imported" / "aligned", units=1, per_unit=4)
    (data / "crawl" / "config.json").write_text(json.dumps({"stage": "crawl", "config": {"langs": LANGS},
                                                            "units": 6}))
    return run(data, root)


def test_text_of_small_data_reads_well(glance):
    out, _ = glance
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "now –" not in md and "0 rows carry no category" not in md and "GiB" not in md
    assert not re.search(r"\b0\.0 h\b", md)
    assert "Retries: 1 video needed more than one attempt" in md
    folded = re.findall(r'<details class="more">.*?</details>', html)
    assert sum(f.count("<img") for f in folded) >= 4  # full distributions and shard histograms, folded


def test_failed_videos_per_status_with_their_reasons(glance):
    out, doc = glance
    (c,) = doc["crawl"]
    assert c["failed_examples"]["rate_limited"] == [["vidBBBBBBB2", "why rate_limited"]]
    assert c["failed_examples"]["unavailable"] == [["vidAAAAAAA4", "why unavailable"]]
    assert "ok" not in c["failed_examples"]
    md = (out / "report.md").read_text()
    assert "| rate_limited | vidBBBBBBB2 | why rate_limited |" in md
    assert "| no_subtitles | bad00000000 | YouTube offers no subtitles |" in md


def test_crawl_in_progress_has_a_rate_and_an_eta(glance):
    out, doc = glance
    p = doc["crawl"][0]["progress"]
    assert p["units_planned"] == 6 and p["units_complete"] == 2 and p["in_progress"]
    # the latest run is unit 1 alone: 2 videos in 60 s; 4 units of 3 videos (the mean) remain
    assert p["rate_per_hour"] == pytest.approx(2 / 60 * 3600)
    assert p["remaining_videos"] == pytest.approx(12) and p["eta_seconds"] == pytest.approx(12 / 120 * 3600)
    assert sum(p["rate_bins"]["videos"]) == 6
    md = (out / "report.md").read_text()
    assert "In progress: 2 of 6 units done; at the current rate of 120 videos/hour" in md


def test_example_segments_in_every_language(glance):
    out, doc = glance
    ex = {a["path"]: a.get("examples") for a in doc["aligned"]}["imported/aligned"]
    assert ex["langs"] == LANGS and len(ex["segments"]) == 3
    first = ex["segments"][0]
    assert set(first["text"]) == set(LANGS) and all(first["text"].values())
    md = (out / "report.md").read_text()
    assert f"| language | {first['start'] // 60:.0f}:{first['start'] % 60:04.1f}–" in md
    assert first["text"]["zh"] in md


def test_no_examples_leaves_the_shards_closed(tmp_path):
    write_aligned(tmp_path / "data" / "aligned", units=1, per_unit=2)
    out, doc = run(tmp_path / "data", tmp_path, "--no-examples")
    assert "examples" not in doc["aligned"][0]
    html = (out / "report.html").read_text()
    assert '<section id="examples-aligned" data-has-data="false"><details>' in html


def test_empty_sections_fold_and_the_contents_group_by_directory(glance):
    out, _ = glance
    html = (out / "report.html").read_text()
    sections = re.findall(r'<section id="([^"]+)" data-has-data="(true|false)"><details( open)?>', html)
    assert sections and all((has == "true") == bool(opened) for _, has, opened in sections)
    # the synthetic aligned rows have no segments: their examples section is folded
    assert ("examples-aligned", "false", "") in sections
    nav = re.search(r"<nav>(.*?)</nav>", html).group(1)
    groups = re.findall(r"<div><b>([^<]+)</b>", nav)
    assert groups == ["dataset", "aligned", "imported/aligned", "crawl", "mmp"]


def _pngs(html: str) -> list:
    return [(alt, base64.b64decode(b64)) for alt, b64 in
            re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def _pixels(png: bytes):
    """The PNG's pixels as an (N, 3) int array (Pillow comes with matplotlib)."""
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int).reshape(-1, 3)


def _has_colour(pixels, hex_colour: str, tol: int = 40, at_least: int = 30) -> bool:
    import numpy as np

    want = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels - want).max(axis=1) <= tol).sum()) >= at_least


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (Debian package 'chromium'; "
                    "`make system-deps` installs it)")
def test_glance_in_headless_chromium(glance, tmp_path):
    out, _ = glance
    url = (out / "report.html").resolve().as_uri()
    page = rendered_page(out, tmp_path)
    total = int(re.search(r'data-images-total="(\d+)"', page).group(1))
    height = int(re.search(r'data-page-height="(\d+)"', page).group(1))
    assert height < 9000, height  # a small dataset is a page or so per directory, not 14,000 px
    # one colour per language, in every table of every directory
    chips = re.findall(r'<span class="lang" data-lang="([a-z]+)" style="background:(#[0-9a-f]{6})"', page)
    assert {l for l, _ in chips} == set(LANGS)
    assert all(colour == LANG_COLORS[lang] for lang, colour in chips)
    # the examples are there: a segment in all its languages, failed ids with their reasons
    assert "Example aligned segments" in page and WORDS["de"][0] in page
    assert "vidBBBBBBB2" in page and "why rate_limited" in page and "In progress: 2 of 6 units done" in page
    # no empty chart: every plot holds coloured marks, and the language plots hold each language's colour
    html = (out / "report.html").read_text()
    pngs = _pngs(html)
    assert len(pngs) == total
    for alt, png in pngs:
        pixels = _pixels(png)
        marks = int(((pixels.max(axis=1) - pixels.min(axis=1)) > 60).sum())
        assert marks > 100, f"an empty chart: {alt}"
        if alt.startswith(("One box per language", "Alignment coverage per language")):
            for lang in LANGS:
                assert _has_colour(pixels, LANG_COLORS[lang]), (alt, lang)
    shot = tmp_path / "shot.png"
    run_ = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2400", url)
    assert run_.returncode == 0 and shot.exists(), run_.stderr[-2000:]
    import shutil

    shutil.copy(shot, out / "screenshot-glance.png")
