"""One bad track costs that track: a track over the one cap (shards.members.TRACK_MAX_BYTES) or
with an absurd cue time is that language's failure, recorded in the video's row, while the
video's other tracks and the unit's other videos are aligned as usual."""
from __future__ import annotations

import json
import tarfile

from pipeline.crawl import stage as crawl_stage
from pipeline.subtitles.clean import MAX_CUE_TIME_S, too_large_error
from pipeline.subtitles.stage import main as align_main
from shards.layout import CRAWL, UnitFiles
from shards.members import MB, TRACK_MAX_BYTES
from shards.reader import read_rows
from shards.rows import crawl_schema
from shards.writer import UnitWriter
from tests.conftest import read_all_rows, read_all_samples
from tests.watchdog import call_main

A, B = "AAAAAAAAAAA", "BBBBBBBBBBB"
LANGS = ["en", "de"]
EN = b"WEBVTT\n\n00:00.000 --> 00:02.000\nhello there\n\n00:02.000 --> 00:04.000\nand welcome\n"
DE = b"WEBVTT\n\n00:00.000 --> 00:04.000\nhallo und willkommen\n"


def info(vid: str) -> dict:
    return {"id": vid, "duration": 5.0, "language": "en", "tracks": {
        "en": {"kind": "manual", "source_lang": "en", "ext": "vtt"},
        "de": {"kind": "manual", "source_lang": "de", "ext": "vtt"}}}


def crawl_unit(root, samples: dict) -> UnitFiles:
    files = UnitFiles(root, "crawl", 0)
    with UnitWriter(files, crawl_schema(LANGS), CRAWL) as w:
        for vid, members in samples.items():
            w.write_sample(vid, members)
            w.add_row({"video_id": vid, "status": "ok"})
    return files


def align(crawl, out, *extra):
    return call_main(align_main, ["--crawl", str(crawl), "--out", str(out), "--langs", ",".join(LANGS),
                                  "--workers", "1", "--no-progress", *extra], seconds=60, memory_mb=1024)


def aligned_rows(out) -> dict:
    return {r["video_id"]: r for r in read_rows(UnitFiles(out, "aligned", 0).parquet)}


def test_a_100mb_track_costs_that_track_only(tmp_path):
    """A crawl tar holding a 100 MB en.vtt (a hole: nothing of it is on disk, and nothing is read)
    between the video's info.json and its good de.vtt."""
    files = crawl_unit(tmp_path / "crawl", {A: {"info.json": info(A), "en.vtt": EN, "de.vtt": DE},
                                            B: {"info.json": info(B), "en.vtt": EN, "de.vtt": DE}})
    size = 100 * MB
    with open(files.tar, "wb") as f:  # the same unit, its A.en.vtt now 100 MB
        for name, data in [(f"{A}.info.json", json.dumps(info(A)).encode()), (f"{A}.en.vtt", size),
                           (f"{A}.de.vtt", DE), (f"{B}.info.json", json.dumps(info(B)).encode()),
                           (f"{B}.en.vtt", EN), (f"{B}.de.vtt", DE)]:
            header = tarfile.TarInfo(name)
            header.size = data if isinstance(data, int) else len(data)
            f.write(header.tobuf(format=tarfile.USTAR_FORMAT))
            if isinstance(data, int):
                f.seek(size + (-size % 512), 1)  # a hole: the payload is claimed, not on disk
            else:
                f.write(data + b"\0" * (-len(data) % 512))
        f.write(b"\0" * 1024)
    out = tmp_path / "aligned"
    code, stdout, stderr = align(tmp_path / "crawl", out)
    assert code == 0, stderr
    rows = aligned_rows(out)
    assert rows[B]["status"] == "ok"
    a = rows[A]
    assert (a["status"], a["en_status"], a["de_status"]) == ("partial", "too_large", "ok")
    assert a["en_error"] == "100 MiB is over the 32 MiB limit for one track (mmp-align --max-track-mb)"
    assert a["error"] == "failed: en (too_large)" and a["de_cues"] == 1
    counts = json.loads(UnitFiles(out, "aligned", 0).stats.read_text())["counts"]
    assert counts["members_too_large"] == 1 and counts["tracks/too_large"] == 1


def test_max_track_mb_is_the_readers_cap_too(tmp_path):
    big = EN + b"\n".join(b"00:%02d.000 --> 00:%02d.500\nmore words here" % (i, i) for i in range(5, 59)) + b"\n"
    crawl_unit(tmp_path / "crawl", {A: {"info.json": info(A), "en.vtt": big, "de.vtt": DE},
                                    B: {"info.json": info(B), "en.vtt": EN, "de.vtt": DE}})
    assert len(big) > 2000 > len(EN) and len(DE) < 2000
    out = tmp_path / "aligned"
    code, _, stderr = align(tmp_path / "crawl", out, "--max-track-mb", repr(2000 / MB))
    assert code == 0, stderr
    rows = aligned_rows(out)
    assert rows[B]["status"] == "ok"
    assert (rows[A]["status"], rows[A]["en_status"], rows[A]["de_status"]) == ("partial", "too_large", "ok")
    assert rows[A]["en_error"] == too_large_error(len(big), 2000)


def test_a_cue_time_out_of_range_fails_that_track_not_the_unit(tmp_path):
    absurd = b"WEBVTT\n\n" + b"9" * 400 + b":00:00.000 --> 00:00:01.000\nhi\n"
    crawl_unit(tmp_path / "crawl", {A: {"info.json": info(A), "en.vtt": absurd, "de.vtt": DE},
                                    B: {"info.json": info(B), "en.vtt": EN, "de.vtt": DE}})
    out = tmp_path / "aligned"
    code, stdout, stderr = align(tmp_path / "crawl", out)
    assert code == 0, stderr
    rows = aligned_rows(out)
    assert rows[B]["status"] == "ok"
    a = rows[A]
    assert (a["status"], a["en_status"], a["de_status"]) == ("partial", "parse_error", "ok")
    assert a["en_error"] == f"a cue time is beyond {MAX_CUE_TIME_S / 3600:,.0f} hours"
    # and a re-run finds the unit done
    code, stdout, _ = align(tmp_path / "crawl", out)
    assert code == 0 and "0 units written, 1 already complete" in stdout


def test_the_crawl_stores_no_track_over_the_cap_and_align_keeps_the_rest(sample, tmp_path):
    """mmp-crawl against the local stand-in, one of a video's tracks served over the cap: that
    language is the crawl's recorded failure, nothing of it is stored, and mmp-align keeps the
    video's other tracks."""
    track = sample.files / "subs" / "smplPancak1" / "de.vtt"
    with open(track, "ab") as f:
        f.truncate(TRACK_MAX_BYTES + 1)  # a hole: the server sends zeros past the real file
    data = tmp_path / "data"
    code, _, stderr = call_main(crawl_stage.main, sample.crawl_args(data), seconds=120, memory_mb=1024)
    assert code == 0, stderr
    row = {r["video_id"]: r for r in read_all_rows(data / "crawl")}["smplPancak1"]
    assert row["status"] == "partial" and row["de_status"] == "error" and row["en_status"] == "ok"
    assert f"than the {TRACK_MAX_BYTES} allowed" in row["de_error"] or f"larger than {TRACK_MAX_BYTES}" in row["de_error"]
    assert "de.vtt" not in read_all_samples(data / "crawl")["smplPancak1"]

    code, _, stderr = call_main(align_main, ["--crawl", str(data / "crawl"), "--out", str(data / "aligned"),
                                             "--workers", "1", "--no-progress"], seconds=120, memory_mb=1024)
    assert code == 0, stderr
    aligned = {r["video_id"]: r for r in read_all_rows(data / "aligned")}["smplPancak1"]
    assert aligned["status"] == "partial" and aligned["de_status"] == "crawl_error" and aligned["en_status"] == "ok"
    assert aligned["de_error"] == row["de_error"]


def test_a_track_that_its_utf8_repair_takes_past_the_cap_is_not_stored(sample, tmp_path):
    """Under the cap as fetched, but each invalid byte becomes a 3-byte U+FFFD: the crawl stores none
    larger than the readers take."""
    track = sample.files / "subs" / "smplPancak1" / "de.vtt"
    track.write_bytes(b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n" + b"\xff" * (TRACK_MAX_BYTES // 2))
    data = tmp_path / "data"
    code, _, stderr = call_main(crawl_stage.main, sample.crawl_args(data), seconds=120, memory_mb=1024)
    assert code == 0, stderr
    row = {r["video_id"]: r for r in read_all_rows(data / "crawl")}["smplPancak1"]
    assert row["de_status"] == "error" and "once its invalid UTF-8 is replaced" in row["de_error"]
    assert row["en_status"] == "ok" and "de.vtt" not in read_all_samples(data / "crawl")["smplPancak1"]
