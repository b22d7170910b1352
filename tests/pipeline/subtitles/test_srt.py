"""A track stored as SubRip (``mmp-crawl --translated-format srt``) cleans to the cues of the same track in WebVTT."""
from __future__ import annotations

import re

import pytest

from pipeline.subtitles.clean import clean_track
from tests.conftest import real_fixtures
from tests.pipeline.subtitles.test_subtitles import manual_vtt, rolling_vtt, word_lines

_TIMING = re.compile(r"^\s*(\S+)\s*-->\s*(\S+)")


def _srt_time(ts: str) -> str:
    ts = ts.replace(",", ".")
    return ("00:" + ts if ts.count(":") == 1 else ts).replace(".", ",")


def vtt_to_srt(vtt: str) -> str:
    """The cues of a WebVTT file as SubRip: numbered from 1, hours always written, a comma before the
    milliseconds, cue settings and the header gone, each cue's lines as they are. Written here from
    the two formats' rules, so the reader under test is not its own oracle. (A cue ends at an empty
    line only: YouTube's rolling captions hold lines of one space.)"""
    out = []
    for block in vtt.replace("\r\n", "\n").strip().split("\n\n"):
        lines = block.split("\n")
        at = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if at is None:  # the header, a NOTE or STYLE block
            continue
        m = _TIMING.match(lines[at])
        out.append("\n".join([str(len(out) + 1), f"{_srt_time(m.group(1))} --> {_srt_time(m.group(2))}",
                              *lines[at + 1:]]))
    return "\n\n".join(out) + "\n"


def test_the_converter_writes_subrip():
    vtt = ("WEBVTT\nKind: captions\n\n00:01.000 --> 00:02.500 align:start\nhello\nthere\n\n"
           "01:00:00.000 --> 01:00:01.000\nbye\n")
    assert vtt_to_srt(vtt) == ("1\n00:00:01,000 --> 00:00:02,500\nhello\nthere\n\n"
                               "2\n01:00:00,000 --> 01:00:01,000\nbye\n")
    rolling = vtt_to_srt(rolling_vtt(word_lines(2)))  # a rolling cue's first line is one space: kept
    assert rolling.startswith("1\n00:00:00,000 --> 00:00:02,100\n \n")


@pytest.mark.parametrize("vtt", [
    manual_vtt([(0.5, 4.45, "Hallo <i>und</i> willkommen"), (4.5, 8.45, "heute &amp; morgen\nzwei Zeilen"),
                (9.0, 9.5, "[Musik]"), (10.0, 12.0, "ende")]),
    rolling_vtt(word_lines(6)),  # YouTube's layout of an ASR track and of its translations: unrolled the same
], ids=["plain", "rolling"])
def test_srt_and_vtt_of_one_track_clean_to_the_same_cues(vtt):
    srt = vtt_to_srt(vtt)
    want, vtt_report = clean_track(vtt.encode(), "de")
    got, report = clean_track(srt.encode(), "de", fmt="srt")
    assert vtt_report.status == report.status == "ok" and want
    assert got == want
    assert report.parser == "webvtt_srt" and not report.warnings and report.rolling == vtt_report.rolling


def test_srt_with_bom_crlf_and_a_leading_blank_line():
    srt = "\ufeff\r\n1\r\n00:00:01,000 --> 00:00:02,000\r\nhello\r\n\r\n2\r\n00:00:02,000 --> 00:00:03,000\r\nthere\r\n"
    cues, report = clean_track(srt.encode(), "en", fmt="srt")
    assert cues == [(1.0, 2.0, "hello"), (2.0, 3.0, "there")] and report.parser == "webvtt_srt"


def test_srt_its_reader_cannot_read_whole_is_read_as_damaged_webvtt():
    # webvtt-py's SRT reader needs a cue number on the first line; here the numbers are missing
    srt = "00:00:01,000 --> 00:00:02,000\nhello\n\n00:00:02,000 --> 00:00:03,000\nthere\n"
    cues, report = clean_track(srt.encode(), "en", fmt="srt")
    assert cues == [(1.0, 2.0, "hello"), (2.0, 3.0, "there")]
    assert report.parser == "webvtt_repaired" and "webvtt-py (srt)" in report.warnings[0]


def test_an_empty_or_cueless_srt_is_empty_not_an_error():
    assert clean_track(b"", "en", fmt="srt")[1].status == "empty"
    assert clean_track(b"1\n00:00:01,000 --> 00:00:02,000\n\n", "en", fmt="srt")[1].status in ("empty", "parse_error")


def test_real_youtube_tracks_as_srt_clean_to_their_vtt_cues():
    """Every real YouTube caption file (auto, translated and manual), converted to SRT, gives the cues of
    the file itself; and the real SRT files (yt-dlp's conversion of one video's tracks) are read by
    webvtt-py's SRT reader with no fallback, to the cues of their own WebVTT form."""
    root = real_fixtures() / "vtt"
    vtts = sorted(p for d in ("youtube_auto", "youtube_manual") for p in (root / d).rglob("*.vtt"))
    srts = sorted((root / "same_video_multilang").rglob("*.srt"))
    assert len(vtts) >= 10 and len(srts) == 3
    for path in vtts:
        text = path.read_text(encoding="utf-8-sig")
        assert clean_track(vtt_to_srt(text).encode(), fmt="srt")[0] == clean_track(text.encode())[0], path
    for path in srts:
        text = path.read_text(encoding="utf-8-sig")
        as_vtt = "WEBVTT\n\n" + re.sub(r"(\d),(\d{3})", r"\1.\2", text)
        cues, report = clean_track(text.encode(), fmt="srt")
        assert report.status == "ok" and report.parser == "webvtt_srt" and not report.warnings, path
        assert cues == clean_track(as_vtt.encode())[0], path


def test_mmp_align_reads_srt_members_and_caps_them_like_vtt(tmp_path):
    from pipeline.subtitles.clean import too_large_error
    from shards.members import MB
    from tests.pipeline.subtitles.test_align_bounds import A, B, DE, EN, align, aligned_rows, crawl_unit

    de_srt = vtt_to_srt(DE.decode()).encode()
    big = vtt_to_srt(manual_vtt([(i, i + 0.5, "mehr Worte hier") for i in range(60)])).encode()
    crawl_unit(tmp_path / "crawl", {A: {"info.json": info_srt(A), "en.vtt": EN, "de.srt": de_srt},
                                    B: {"info.json": info_srt(B), "en.vtt": EN, "de.srt": big}})
    assert len(big) > 2000 > len(de_srt)
    out = tmp_path / "aligned"
    code, _, stderr = align(tmp_path / "crawl", out, "--max-track-mb", repr(2000 / MB))
    assert code == 0, stderr
    rows = aligned_rows(out)
    assert (rows[A]["status"], rows[A]["de_status"], rows[A]["de_parser"], rows[A]["de_cues"]) == (
        "ok", "ok", "webvtt_srt", 1)
    assert (rows[B]["status"], rows[B]["de_status"]) == ("partial", "too_large")  # passed over unread, as a .vtt is
    assert rows[B]["de_error"] == too_large_error(len(big), 2000)


def info_srt(vid: str) -> dict:
    return {"id": vid, "duration": 5.0, "language": "en", "tracks": {
        "en": {"kind": "manual", "source_lang": "en", "ext": "vtt"},
        "de": {"kind": "translated", "source_lang": "en", "ext": "srt"}}}
