"""Cleaning one track: rolling ASR captions, text normalisation, and every kind of bad input."""
from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path

import pytest

from pipeline.subtitles.align import count_tokens
from pipeline.subtitles.clean import (MIN_ROLLING_CUE_S, clean_text, clean_track, detect_rolling,
                                script_flag)

WORDS = "guys this is a delicious sweet onion tomato sauce if you never made pasta before".split()


def ts(t: float) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def rolling_vtt(lines: list[list[str]], lang: str = "en", start: float = 0.0, word_s: float = 0.3,
                pause_every: int = 0) -> str:
    """YouTube's rolling ASR layout, as yt-dlp fetches it: Kind/Language header, cue
    settings, the previous line repeated above the spoken one, inline word times, and
    a 10 ms snapshot cue holding the finished line after each spoken one."""
    out = ["WEBVTT", "Kind: captions", f"Language: {lang}", ""]
    t, prev = start, None
    for n, words in enumerate(lines):
        times = [t + i * word_s for i in range(len(words))]
        end = times[-1] + word_s
        spoken = words[0] + "".join(f"<{ts(w_t)}><c> {w}</c>" for w_t, w in zip(times[1:], words[1:]))
        out += [f"{ts(t)} --> {ts(end)} align:start position:0%", prev if prev else " ", spoken, ""]
        prev = " ".join(words)
        out += [f"{ts(end)} --> {ts(end + 0.01)} align:start position:0%", prev, " ", ""]
        t = end + 0.01 + (3.0 if pause_every and n % pause_every == pause_every - 1 else 0.0)
    return "\n".join(out) + "\n"


def manual_vtt(cues: list[tuple[float, float, str]], header: bool = True) -> str:
    out = ["WEBVTT", ""] if header else []
    for s, e, text in cues:
        out += [f"{ts(s)} --> {ts(e)}", text, ""]
    return "\n".join(out) + "\n"


def word_lines(n_lines: int, per_line: int = 7, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    return [[f"{rng.choice(WORDS)}{i}x{j}" for j in range(per_line)] for i in range(n_lines)]


def words_of(cues) -> list[str]:
    return " ".join(c[2] for c in cues).split()


def assert_clean_timeline(cues):
    for s, e, t in cues:
        assert e > s and t == t.strip() and t
    for a, b in zip(cues, cues[1:]):
        assert a[0] <= b[0] and a[1] <= b[0] + 1e-9, (a, b)


# ---------------------------------------------------------------- rolling captions

def test_rolling_each_word_once_in_order_placed_by_word_times():
    lines = word_lines(12)
    cues, rep = clean_track(rolling_vtt(lines).encode(), "en")
    assert rep.status == "ok" and rep.rolling
    assert words_of(cues) == [w for line in lines for w in line]
    assert all(e - s >= MIN_ROLLING_CUE_S for s, e, _ in cues)  # no snapshot survives
    assert_clean_timeline(cues)
    assert cues[0][0] == 0.0 and cues[0][1] == pytest.approx(7 * 0.3)
    assert rep.repairs["rolling_repeat_dropped"] == 12


def test_rolling_split_at_long_pause_in_word_times():
    body = ("WEBVTT\n\n00:00:10.000 --> 00:00:20.000 align:start position:0%\n \n"
            "do<00:00:10.300><c> it</c><00:00:15.000><c> we're</c><00:00:15.400><c> gonna</c>\n\n"
            "00:00:20.000 --> 00:00:20.010 align:start position:0%\ndo it we're gonna\n \n\n"
            "00:00:20.010 --> 00:00:22.000 align:start position:0%\ndo it we're gonna\nmake<00:00:20.500><c> soup</c>\n")
    cues, rep = clean_track(body.encode())
    assert rep.rolling
    assert [c[2] for c in cues] == ["do it", "we're gonna", "make soup"]
    assert cues[0] == (10.0, pytest.approx(11.3), "do it") and cues[1][0] == 15.0


def test_rolling_detected_without_inline_times_and_manual_not_rolling():
    lines = [" ".join(l) for l in word_lines(6)]
    cues_text, prev = [], ""
    for i, line in enumerate(lines):  # repeated previous line, no word times (SRT of an ASR track)
        cues_text.append((i * 2.0, i * 2.0 + 1.99, (prev + "\n" + line) if prev else line))
        prev = line
    cues, rep = clean_track(manual_vtt(cues_text).encode())
    assert rep.rolling and [c[2] for c in cues] == lines
    manual = manual_vtt([(i * 3.0, i * 3.0 + 2.5, f"Sentence number {i}.\nSecond line {i}.") for i in range(8)])
    cues, rep = clean_track(manual.encode())
    assert not rep.rolling and len(cues) == 8 and cues[0][2] == "Sentence number 0. Second line 0."


def test_detect_rolling_needs_evidence():
    raw = [(0.0, 1.0, ["hello there"]), (1.0, 2.0, ["hello there"])]  # one cue proves nothing
    keys = [[("hello there", "hello there")]] * 2
    assert detect_rolling(raw[:1], keys[:1]) is False and detect_rolling(raw, keys) is True


# ---------------------------------------------------------------- text

def test_clean_text_tags_entities_nfc_whitespace():
    assert clean_text("<v Roger><b>Tom</b>  &amp;&nbsp;Jerry</v>\t&lt;3") == "Tom & Jerry <3"
    assert clean_text("Cafe\u0301   au\n lait") == "Caf\u00e9 au lait"
    assert clean_text("<c.colorE5E5E5>hi</c>\u200b there") == "hi there"


def test_annotations_dropped_unless_kept_including_localised():
    assert clean_text("[Music] so [Applause] we start") == "so we start"
    assert clean_text("[âm nhạc] xin chào") == "xin chào"
    assert clean_text("[Música] hola ♪") == "hola"
    assert clean_text("&gt;&gt; next speaker") == "next speaker"
    assert clean_text("[Music] so", keep_annotations=True) == "[Music] so"
    body = manual_vtt([(0, 2, "[Music]"), (2, 4, "real words")])
    cues, _ = clean_track(body.encode())
    assert [c[2] for c in cues] == ["real words"]
    cues, _ = clean_track(body.encode(), keep_annotations=True)
    assert [c[2] for c in cues] == ["[Music]", "real words"]


def test_cue_settings_and_tag_only_cues_dropped():
    body = "WEBVTT\n\n00:00:01.000 --> 00:00:02.000 align:start position:0% line:0\n<i>hi</i>\n\n" \
           "00:00:02.000 --> 00:00:03.000\n<c.colorCCCCCC></c>\n\n00:00:03.000 --> 00:00:04.000\nthere\n"
    cues, rep = clean_track(body.encode())
    assert [c[2] for c in cues] == ["hi", "there"] and rep.repairs["empty_cue_dropped"] == 1


def test_count_tokens_and_script_check():
    assert count_tokens("hello big world", "en") == 3
    assert count_tokens("我们今天做饭 ok", "zh") == 7
    en = [(0, 1, "Please do not translate this text, it is a test of the system")]
    assert script_flag(en, "ru") and script_flag(en, "zh") and not script_flag(en, "en")
    assert not script_flag([(0, 1, "Пожалуйста, не переводите этот текст никогда")], "ru")
    assert not script_flag([(0, 1, "我们今天要做一道非常好吃的番茄意大利面条吧朋友们")], "zh")


# ---------------------------------------------------------------- bad input

CUES = [(1.0, 2.0, "one"), (2.5, 3.5, "two"), (4.0, 5.0, "three")]


@pytest.mark.parametrize("name,body,repair,parser", [
    ("missing header", manual_vtt(CUES, header=False), "added_header", "webvtt_repaired"),
    ("srt as vtt", "1\n00:00:01,000 --> 00:00:02,000\none\n\n2\n00:00:02,500 --> 00:00:03,500\ntwo\n\n"
                   "3\n00:00:04,000 --> 00:00:05,000\nthree\n", "timestamps_normalised", "webvtt_repaired"),
    ("no hours", "WEBVTT\n\n00:01.000 --> 00:02.000\none\n\n00:02.500 --> 00:03.500\ntwo\n\n"
                 "00:04.000 --> 00:05.000\nthree\n", None, "webvtt"),
    ("commas", "WEBVTT\n\n00:00:01,000 --> 00:00:02,000\none\n\n00:00:02.500 --> 00:00:03.500\ntwo\n\n"
               "00:00:04,000 --> 00:00:05,000\nthree\n", "timestamps_normalised", "webvtt_repaired"),
    ("bom", "\ufeff" + manual_vtt(CUES), "bom", "webvtt"),
    ("crlf", manual_vtt(CUES).replace("\n", "\r\n"), "crlf", "webvtt"),
    ("end before start", manual_vtt([(1.0, 2.0, "one"), (3.5, 2.5, "two"), (4.0, 5.0, "three")]),
     "end_before_start", None),
    ("out of order", manual_vtt([CUES[2], CUES[0], CUES[1]]), "out_of_order", None),
])
def test_bad_input_repaired(name, body, repair, parser):
    cues, rep = clean_track(body.encode("utf-8"))
    assert rep.status == "ok", rep
    assert cues == CUES, name
    if repair:
        assert rep.repairs.get(repair), rep.repairs
    if parser:
        assert rep.parser == parser


def test_minutes_past_59_without_hours_fall_back_to_tolerant_parser():
    body = "WEBVTT\n\n75:00.000 --> 75:02.000\nlate\n\n01:00.000 --> 01:02.000\nearly\n"
    cues, rep = clean_track(body.encode())
    assert [c[2] for c in cues] == ["early", "late"] and cues[1][0] == 4500.0
    assert rep.parser in ("webvtt_repaired", "tolerant")


def test_overlapping_and_zero_length_cues_repaired():
    body = manual_vtt([(1.0, 3.0, "a"), (2.0, 4.0, "b"), (4.0, 4.0, "c"), (6.0, 7.0, "d"), (6.0, 7.5, "e")])
    cues, rep = clean_track(body.encode())
    assert_clean_timeline(cues)
    assert words_of(cues) == ["a", "b", "c", "d", "e"]
    assert rep.repairs["overlap_trimmed"] == 1 and rep.repairs["zero_length"] == 1
    assert rep.repairs["overlap_merged"] == 1


def test_text_after_blank_line_recovered():
    # yt-dlp's SRT of ASR tracks: the text of a cue after a pause follows an empty line
    body = "1\n00:00:01,000 --> 00:00:04,000\n\nfirst line here\n\n2\n00:00:04,000 --> 00:00:04,010\n" \
           "first line here\n \n\n3\n00:00:04,010 --> 00:00:06,000\nfirst line here\nsecond line now\n"
    cues, rep = clean_track(body.encode())
    assert [c[2] for c in cues] == ["first line here", "second line now"]
    assert cues[0][:2] == (1.0, 4.0)


def test_fifty_megabytes_is_a_recorded_failure_quickly():
    block = b"00:00:01.000 --> 00:00:02.000\nword word word word\n\n"
    data = b"WEBVTT\n\n" + block * (50 * 2**20 // len(block) + 1)
    t = time.time()
    cues, rep = clean_track(data)
    assert rep.status == "too_large" and cues == [] and rep.error.startswith("50 MiB is over the 32 MiB limit")
    assert time.time() - t < 2


def test_binary_garbage_is_a_recorded_failure():
    cues, rep = clean_track(random.Random(0).randbytes(20000))
    assert rep.status == "not_text" and cues == []
    for data in (b"", b"WEBVTT\n\n", b"\x00" * 10, "hello world".encode()):
        cues, rep = clean_track(data)
        assert cues == [] and rep.status in ("empty", "not_text", "parse_error")


def test_wrong_language_track_is_flagged():
    lines = [["please", "do", "not", "translate", "this", "text", "now"]] * 1
    body = rolling_vtt(lines + word_lines(3), lang="ru")
    cues, rep = clean_track(body.encode(), "ru")
    assert cues and "wrong_script" in rep.flags
    cues, rep = clean_track(body.encode(), "zh")
    assert "wrong_script" in rep.flags
    cues, rep = clean_track(body.encode(), "en")
    assert rep.flags == []


# ---------------------------------------------------------------- the real files

REAL = os.environ.get("MMP_REAL_FIXTURES")
real = pytest.mark.skipif(not REAL, reason="MMP_REAL_FIXTURES not set")
_TIMED = re.compile(r"<\d+:\d\d[:.][\d:.]+>")


def _real_files(*parts):
    root = Path(REAL or ".") / "vtt"
    return sorted(p for part in parts for p in (root / part).rglob("*") if p.is_file())


@real
def test_real_caption_files_clean():
    files = _real_files("youtube_auto", "youtube_manual", "same_video_multilang")
    assert len(files) >= 10
    for path in files:
        lang = path.name.split(".")[-2] if path.name.count(".") >= 2 else None
        cues, rep = clean_track(path.read_bytes(), lang if lang in ("en", "es", "vi", "de", "fr", "ru") else None)
        assert rep.status == "ok" and cues, path
        assert_clean_timeline(cues)
        words = words_of(cues)
        if rep.rolling:
            assert all(e - s >= MIN_ROLLING_CUE_S for s, e, _ in cues), path
        text = path.read_text(encoding="utf-8-sig")
        if _TIMED.search(text):
            # YouTube's layout: the line being spoken is the last line of every cue that is
            # not a 10 ms snapshot; read independently with webvtt-py, those lines in order
            # are the words, each once
            import webvtt

            spoken = []
            for cap in webvtt.from_string(text).captions:
                lines = [l for l in cap.lines if l.strip()]
                if lines and cap.end_time.in_milliseconds() - cap.start_time.in_milliseconds() > 50:
                    spoken += clean_text(lines[-1]).split()
            assert words == spoken, path
        else:  # no run of words immediately repeated: what rolling duplication leaves behind
            n = 8
            assert not any(words[i:i + n] == words[i + n:i + 2 * n] for i in range(len(words) - 2 * n)), path


@real
def test_real_mislabelled_track_flagged_and_parser_edge_never_raises():
    ru = _real_files("youtube_manual/ru_mislabeled")[0]
    cues, rep = clean_track(ru.read_bytes(), "ru")
    assert cues and "wrong_script" in rep.flags
    for path in _real_files("parser_edge"):
        if path.suffix == ".json":
            continue
        cues, rep = clean_track(path.read_bytes())
        assert rep.status in ("ok", "empty", "parse_error", "not_text"), path
        assert_clean_timeline(cues)
