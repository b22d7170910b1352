"""Cleaning one track stays linear in its size, and an absurd timestamp costs that track only.

Each hostile track is built here, at two sizes a doubling apart, and cleaned under the watchdog
with a bound that linear cleaning meets many times over and quadratic cleaning cannot (the
smaller size alone took quadratic code minutes).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from pipeline.subtitles.clean import MAX_CUE_TIME_S, TrackReport, clean_text, clean_track, repair_timeline
from tests.watchdog import run_bounded

HEADER = b"WEBVTT\n\n"
ONE_CUE = HEADER + b"00:00:00.000 --> 00:00:01.000\n"
SIZES = (1 << 20, 2 << 20)


def bounded_clean(data: bytes, **kwargs):
    return run_bounded(clean_track, data, seconds=20, memory_mb=1024, **kwargs)


@pytest.mark.parametrize("size", SIZES)
def test_a_run_of_unclosed_tag_openers_is_linear(size):
    cues, report = bounded_clean(ONE_CUE + b"<" * size + b"\n")
    assert report.status == "ok" and cues == [(0.0, 1.0, "<" * size)]


@pytest.mark.parametrize("size", SIZES)
def test_an_unclosed_music_annotation_is_linear(size):
    words = size // 6
    cues, report = bounded_clean(ONE_CUE + b"(" + b"music " * words + b"\n")
    assert report.status == "ok" and cues == [(0.0, 1.0, "(" + " ".join(["music"] * words))]


@pytest.mark.parametrize("size", SIZES)
def test_a_line_of_arrows_is_linear(size):
    cues, report = bounded_clean(ONE_CUE + b"hi\n\n" + b"-->" * (size // 3) + b"\n")
    assert report.status == "ok" and cues[0] == (0.0, 1.0, "hi")


def test_forty_thousand_zero_length_cues_at_one_time():
    n = 40_000
    data = HEADER + b"".join(b"00:00:01.000 --> 00:00:01.000\nw%d\n\n" % i for i in range(n))
    cues, report = bounded_clean(data)
    assert report.status == "ok" and len(cues) == 1
    assert cues[0][0] == 1.0 and cues[0][2] == " ".join(f"w{i}" for i in range(n))
    assert report.repairs["zero_length"] == n and report.repairs["overlap_merged"] == n - 1


@pytest.mark.parametrize("n", (200_000, 400_000))
def test_repairing_zero_length_cues_at_one_time_is_linear(n):
    """The timeline repair alone, past webvtt-py's own cost per cue: each zero-length cue looked
    for the next start through all the cues after it, and each merge copied the text so far."""
    cues = [(1.0, 1.0, f"w{i}") for i in range(n)] + [(9.0, 10.0, "end")]
    report = TrackReport()
    fixed = run_bounded(repair_timeline, cues, report, seconds=20, memory_mb=1024)
    assert fixed == [(1.0, 1.5, " ".join(f"w{i}" for i in range(n))), (9.0, 10.0, "end")]


@pytest.mark.parametrize("n", (10_000, 20_000))
def test_snapshot_cues_each_with_new_words_are_linear(n):
    """A rolling track (inline word times) whose 10 ms snapshot cues all add words to one line."""
    spoken = b"00:00:00.000 --> 00:00:01.000\nhi<00:00:00.500><c> there</c>\n\n"
    word = b"x" * 800
    snapshots = b"".join(b"00:00:01.000 --> 00:00:01.010\n%d%s\n\n" % (i, word) for i in range(n))
    cues, report = bounded_clean(HEADER + spoken * (n // 4) + snapshots)
    assert report.status == "ok" and report.rolling
    assert cues[-1][2].endswith(" ".join(f"{i}{word.decode()}" for i in range(n - 3, n)))
    assert report.repairs["snapshot_text_merged"] >= n - 1


# ---------------------------------------------------------------- absurd timestamps

GOOD_CUE = b"\n\n00:00:05.000 --> 00:00:06.000\nfine\n"


@pytest.mark.parametrize("track", [
    HEADER + b"9" * 400 + b":00:00.000 --> 00:00:01.000\nhi" + GOOD_CUE,            # webvtt-py reads it
    HEADER + b"00:00:00.000 --> " + b"9" * 400 + b":00:00.000\nhi" + GOOD_CUE,
    HEADER + b"9" * 305 + b":00:00.000 --> " + b"9" * 305 + b":00:01.000\nhi" + GOOD_CUE,
    HEADER + b"00:00:00.000 --> 00:00:" + b"9" * 400 + b".000\nhi" + GOOD_CUE,         # seconds: inf
    b"1\n" + b"9" * 400 + b":00:00,000 --> 00:00:01,000\nhi" + GOOD_CUE,               # SRT, repaired
    HEADER + b"9" * 300 + b":00:00.000 --> " + b"9" * 300 + b":00:01.000\nhi" + GOOD_CUE,  # finite, absurd
], ids=["hours-400", "end-hours-400", "hours-305", "seconds-400", "srt-hours-400", "hours-300"])
def test_a_cue_time_out_of_range_fails_the_track_with_a_reason(track):
    cues, report = run_bounded(clean_track, track, "en", seconds=20)
    assert cues == [] and report.status == "parse_error"
    assert report.error == f"a cue time is beyond {MAX_CUE_TIME_S / 3600:,.0f} hours"


def test_absurd_inline_word_times_and_character_references_are_repairs_not_errors():
    track = (HEADER + b"00:00:00.000 --> 00:00:05.000\nhi<" + b"9" * 400 + b":00:01.000><c> there</c>\n\n"
             b"00:00:05.000 --> 00:00:06.000\nx<00:00:05.500><c> y</c>\n")
    cues, report = run_bounded(clean_track, track, "en", seconds=20)
    assert report.status == "ok" and report.repairs["word_time_clamped"] == 1
    assert " ".join(c[2] for c in cues) == "hi there x y"
    # html.unescape raises on a reference of over 4300 digits; any reference past U+10FFFF is U+FFFD
    assert clean_text("a &#" + "9" * 5000 + "; b &#x" + "f" * 5000 + " c &#0065;") == "a \ufffd b \ufffd c A"
    assert clean_text("&#" + "0" * 5000 + "65;") == "A"


# ---------------------------------------------------------------- the real files, unchanged

REAL = os.environ.get("MMP_REAL_FIXTURES")
GOLDEN = Path(__file__).parents[2] / "data" / "clean_digests.json"


def clean_digests(root: Path) -> dict:
    """For every caption file under ``root``: a digest of its clean cues and report, with and
    without annotations kept."""
    digests = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix == ".json":
            continue
        parts = path.name.split(".")
        lang = parts[-2] if len(parts) >= 3 and 2 <= len(parts[-2]) <= 5 else None
        for keep in (False, True):
            cues, report = clean_track(path.read_bytes(), lang, keep_annotations=keep)
            blob = json.dumps({"cues": cues, "report": report.as_dict()}, sort_keys=True, ensure_ascii=False)
            digests[f"{path.relative_to(root)}|{int(keep)}"] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return digests


@pytest.mark.skipif(not REAL, reason="MMP_REAL_FIXTURES not set")
def test_real_caption_files_clean_exactly_as_recorded():
    """Every real file cleans to the cues and report recorded in ``clean_digests.json`` (made with
    the cleaning before it was made linear), so that rewrite changed no output."""
    recorded = json.loads(GOLDEN.read_text())
    now = clean_digests(Path(REAL) / "vtt")
    assert set(now) == set(recorded)
    assert [k for k in sorted(now) if now[k] != recorded[k]] == []
