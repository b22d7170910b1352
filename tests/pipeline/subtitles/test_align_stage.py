"""mmp-align end to end over tiny crawl shards written with the project's own writer."""
from __future__ import annotations

import json
import os
import random

import pytest

from pipeline.subtitles.stage import main
from shards.rows import crawl_schema
from shards.layout import ALIGNED, CRAWL, UnitFiles
from shards.codec import load_json
from shards.reader import iter_samples, read_rows
from shards.writer import UnitWriter
from tests.pipeline.subtitles.test_subtitles import manual_vtt, rolling_vtt, word_lines

LANGS = ["en", "de", "zh", "ru", "fr"]
IDS = {name: (name * 11)[:11] for name in "ABCDEFG"}


def info(vid, tracks, language="en"):
    return {"id": vid, "title": "t", "duration": 60.0, "language": language, "tracks": {
        lang: {"lang": lang, "kind": kind, "source_lang": src, "ext": "vtt"} for lang, (kind, src) in tracks.items()}}


def write_crawl_unit(crawl, index, videos):
    """videos: [(video_id, status, members or None)]."""
    with UnitWriter(UnitFiles(crawl, "crawl", index), crawl_schema(LANGS), CRAWL) as w:
        for vid, status, members in videos:
            if members is not None:
                w.write_sample(vid, members)
            w.add_row({"video_id": vid, "status": status, "error": None if status == "ok" else "why"})


@pytest.fixture
def crawl(tmp_path):
    root = tmp_path / "crawl"
    en = rolling_vtt(word_lines(8)).encode()
    de = manual_vtt([(0.0, 4.0, "Hallo und willkommen"), (4.0, 9.0, "heute kochen wir")]).encode()
    zh = manual_vtt([(0.5, 5.0, "大家好欢迎"), (5.0, 10.0, "今天我们做饭")]).encode()
    ru_english = manual_vtt([(0.0, 5.0, "Please do not translate this text, it is only a test of the tool")]).encode()
    a = info(IDS["A"], {"en": ("asr", "en"), "de": ("manual", "de"), "zh": ("translated", "en"),
                        "ru": ("translated", "en"), "fr": ("none", None)})
    a["tracks"]["fr"]["error"] = "HTTP 404"
    b = info(IDS["B"], {"en": ("manual", "en"), "fr": ("translated", "en")})
    write_crawl_unit(root, 0, [
        (IDS["A"], "partial", {"info.json": a, "en.vtt": en, "de.vtt": de, "zh.vtt": zh, "ru.vtt": ru_english}),
        (IDS["B"], "partial", {"info.json": b, "en.vtt": manual_vtt([(1, 2, "only english")]).encode(),
                               "fr.vtt": random.Random(1).randbytes(3000)}),
        (IDS["C"], "no_subtitles", {"info.json": info(IDS["C"], {})}),
        (IDS["D"], "unavailable", None),
        (IDS["E"], "ok", None),
        (IDS["F"], "partial", {"info.json": info(IDS["F"], {"en": ("asr", "en")}),
                               "en.vtt": manual_vtt([(0, 5, "[Music]")]).encode()}),
        (IDS["G"], "partial", {"info.json": b"{not json", "en.vtt": en}),
    ])
    write_crawl_unit(root, 1, [(IDS["A"][:10] + "Z", "ok", {"info.json": a, "en.vtt": en}),
                               (IDS["B"][:10] + "Z", "unavailable", None)])
    UnitFiles(root, "crawl", 1).tar.write_bytes(b"this is not a tar file" * 10)  # damaged after the crawl
    return root


def run(crawl, out, *extra):
    return main(["--crawl", str(crawl), "--out", str(out), "--langs", "en", "de", "zh,ru,fr",
                 "--workers", "1", "--no-progress", *extra])


def test_align_stage_end_to_end(crawl, tmp_path):
    out = tmp_path / "aligned"
    assert run(crawl, out) == 0
    rows = {r["video_id"]: r for r in read_rows(UnitFiles(out, "aligned", 0).parquet)}
    assert {v: rows[v]["status"] for v in IDS.values()} == {
        IDS["A"]: "partial", IDS["B"]: "partial", IDS["C"]: "no_subtitles", IDS["D"]: "upstream_failed",
        IDS["E"]: "missing_sample", IDS["F"]: "no_text", IDS["G"]: "bad_sample"}
    a = rows[IDS["A"]]
    assert (a["en_status"], a["de_status"], a["zh_status"], a["ru_status"], a["fr_status"]) == \
        ("ok", "ok", "ok", "wrong_script", "crawl_error")
    assert a["en_rolling"] and a["en_cues"] == 8 and a["en_tokens"] == 56 and a["en_coverage"] == 1.0
    assert a["zh_tokens"] == 11 and 0 < a["de_coverage"] <= 1 and a["timeline"] == "en" and a["n_langs"] == 3
    assert "fr (crawl_error)" in a["error"] and "ru (wrong_script)" in a["error"]
    assert json.loads(a["en_repairs"])["rolling_repeat_dropped"] == 8
    assert rows[IDS["B"]]["fr_status"] == "not_text" and rows[IDS["D"]]["crawl_status"] == "unavailable"

    samples = {s["__key__"]: s for s in iter_samples(UnitFiles(out, "aligned", 0).tar)}
    assert set(samples) == {IDS["A"], IDS["B"]}
    assert not ALIGNED.check(samples[IDS["A"]])
    subs = load_json(samples[IDS["A"]]["subs.json"])
    assert set(subs["tracks"]) == {"en", "de", "zh"} and set(subs["flagged_tracks"]) == {"ru"}
    assert subs["tracks"]["en"]["kind"] == "asr" and subs["duration"] == 60.0
    assert len(subs["segments"]) == 8 and subs["segments"][0]["text"]["de"].startswith("Hallo")
    assert set(subs["track_problems"]) == {"fr"}

    # a crawl tar that cannot be read: every video of its parquet gets a row, none is lost
    broken = {r["video_id"]: r["status"] for r in read_rows(UnitFiles(out, "aligned", 1).parquet)}
    assert sorted(broken.values()) == ["shard_unreadable", "upstream_failed"]
    stats = json.loads(UnitFiles(out, "aligned", 1).stats.read_text())
    assert stats["counts"]["crawl_tar_unreadable"] == 1


def test_resume_skips_done_units_and_redoes_changed_ones(crawl, tmp_path, capsys):
    out = tmp_path / "aligned"
    assert run(crawl, out) == 0
    assert "2 units written" in capsys.readouterr().out
    assert run(crawl, out) == 0
    assert "0 units written, 2 already complete" in capsys.readouterr().out
    stats = UnitFiles(crawl, "crawl", 0).stats
    stats.write_text(json.dumps({**json.loads(stats.read_text()), "finished": 0.5}))  # crawl unit rewritten since
    assert run(crawl, out) == 0
    assert "1 units written, 1 already complete" in capsys.readouterr().out
    os.utime(stats, (stats.stat().st_mtime + 10,) * 2)  # only touched: the same content, nothing to redo
    assert run(crawl, out) == 0
    assert "0 units written, 2 already complete" in capsys.readouterr().out


def test_keep_annotations_and_user_errors(crawl, tmp_path, capsys):
    out = tmp_path / "kept"
    assert run(crawl, out, "--keep-annotations") == 0
    rows = {r["video_id"]: r for r in read_rows(UnitFiles(out, "aligned", 0).parquet)}
    assert rows[IDS["F"]]["status"] == "partial" and rows[IDS["F"]]["en_cues"] == 1
    assert run(crawl, out) == 2  # same output, different configuration
    assert "different keep_annotations" in capsys.readouterr().err
    assert main(["--crawl", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["--crawl", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "no completed crawl unit" in capsys.readouterr().err
