"""Cleaning one subtitle track: raw bytes in, clean cues and a report out.

``clean_track(data, lang)`` returns ``(cues, report)``: cues ``(start_s, end_s, text)``
sorted, non-overlapping, never zero-length, with tags, cue settings and word timings
stripped, entities unescaped, NFC, whitespace collapsed, ``[Music]``-style annotations
dropped unless asked to keep them. The report says which parser read the file, what was
repaired and what looks wrong; bad input never raises, it becomes a report with a status.

YouTube's automatic captions are "rolling": each cue shows the previous line again
above the line being spoken, whose words carry inline times
(``word<00:00:01.234><c> next</c>``), and ~10 ms "snapshot" cues repeat the
finished line. Rolling is detected per track (inline timings, or cues that start
with the line the previous cue ended with), never assumed from the track kind.

Reading the cues is ``pipeline.subtitles.parse``'s. Every step is linear in the size of the
track: no pattern here can rescan what it failed on, and a text built from many cues is
joined once.
"""
from __future__ import annotations

import html
import re
import unicodedata

from pipeline.subtitles.parse import (DEFAULT_MAX_BYTES, EMPTY, MAX_CUE_TIME_S, NOT_TEXT, OK, PARSE_ERROR,
                                      TOO_LARGE, TrackReport, decode, out_of_range, parse_track, seconds,
                                      too_large_error)

__all__ = ["DEFAULT_MAX_BYTES", "EMPTY", "MAX_CUE_TIME_S", "NOT_TEXT", "OK", "PARSE_ERROR", "TOO_LARGE",
           "TrackReport", "clean_text", "clean_track", "detect_rolling", "repair_timeline", "script_flag",
           "too_large_error", "unroll"]

SNAPSHOT_S = 0.05              # YouTube's snapshot cues last 10 ms; real cues never this short
MIN_ROLLING_CUE_S = 0.1        # the bar: nothing this short survives from a rolling track
PAUSE_SPLIT_S = 2.0            # a silence this long between timed words starts a new cue
WORD_TAIL_S = 1.0              # how long the last word before such a pause is taken to last

_TAG = re.compile(r"<[^>]*>")  # applied only up to the last ">" (strip_tags): else each "<" scans to the end
_INLINE_TS = re.compile(r"<((?:\d+:)?\d{1,2}:\d{1,2}[.,]\d{1,3})>")
# A parenthesis holding one of the words, e.g. "(upbeat music)". The lookahead finds the first such
# word and, being atomic, is never retried from a later one: the rest of the parenthesis is
# scanned once (a backtracking search from each word of "(music music ..." is quadratic).
_ANNOTATION = re.compile(r"\[[^\[\]]*\]|\((?=([^()]*?\b(?:music|applause|laughter)\b))\1[^()]*\)|[♪♫]+|>>+", re.I)
# Numeric character references: html.unescape makes one past U+10FFFF U+FFFD, but raises on one
# of over 4300 digits (int()'s limit), leading zeros included
_CHARREF = re.compile(r"&#(?:([xX])0*([0-9a-fA-F]+)|0*([0-9]+))")
_LETTER = re.compile(r"[^\W\d_]")
_SCRIPTS = {"cjk": re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff]"),
            "cyrillic": re.compile(r"[\u0400-\u04ff]"), "latin": re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]")}
_LANG_SCRIPT = {"zh": "cjk", "ja": "cjk", "ru": "cyrillic", "uk": "cyrillic", "bg": "cyrillic"}
# Latin-script languages whose text without these letters is almost surely another language.
_MARKERS = {"vi": re.compile(r"[ăâđêôơưĂÂĐÊÔƠƯ\u1ea0-\u1ef9]"), "cs": re.compile(r"[ěščřžůňťďĚŠČŘŽŮŇŤĎ]")}


# ---------------------------------------------------------------- text

def strip_tags(text: str) -> str:
    """``text`` without ``<...>`` tags. A "<" with no ">" after it is text, and so is all after the last ">"."""
    last = text.rfind(">")
    return text if last < 0 else _TAG.sub("", text[:last + 1]) + text[last + 1:]


def _short_charref(m: re.Match) -> str:
    """The same reference in at most 16 digits: leading zeros dropped, a longer number (past
    U+10FFFF whatever its digits) made the largest of 16 digits."""
    if len(m.group(0)) <= 20:
        return m.group(0)
    if m.group(1):
        return f"&#{m.group(1)}{m.group(2) if len(m.group(2)) <= 16 else 'F' * 16}"
    return f"&#{m.group(3) if len(m.group(3)) <= 16 else '9' * 16}"


def clean_text(raw: str, keep_annotations: bool = False) -> str:
    """Cue text without tags, entities, annotations, odd whitespace; NFC."""
    if "<" in raw:
        raw = strip_tags(raw)  # before unescaping, so "&lt;b&gt;" stays text
    if "&" in raw:
        if "&#" in raw:
            raw = _CHARREF.sub(_short_charref, raw)
        raw = html.unescape(raw)
    if not keep_annotations and ("[" in raw or ">>" in raw or "(" in raw or "♪" in raw or "♫" in raw):
        raw = _ANNOTATION.sub(" ", raw)
    if "\u200b" in raw:
        raw = raw.replace("\u200b", "")
    text = " ".join(raw.split())  # also turns &nbsp; (now U+00A0) and tabs into single spaces
    if not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    return text


def script_flag(cues: list, lang: str | None) -> str | None:
    """A cheap wrong-language check on the first few thousand characters: a reason, or None."""
    base = (lang or "").split("-")[0].lower()
    sample = " ".join(c[2] for c in cues[:300])[:6000]
    letters = len(_LETTER.findall(sample))
    if letters < 20:
        return None
    script = _LANG_SCRIPT.get(base, "latin")
    share = len(_SCRIPTS[script].findall(sample)) / letters
    if share < 0.5:
        return f"labelled {base} but only {share:.0%} of letters are {script}"
    marker = _MARKERS.get(base)
    if marker is not None and letters >= 200 and not marker.search(sample):
        return f"labelled {base} but none of its distinctive letters occur"
    return None


# ---------------------------------------------------------------- rolling captions

def _line_key(line: str) -> str:
    return " ".join((strip_tags(line) if "<" in line else line).split())


def detect_rolling(raw: list, keys: list) -> bool:
    """Rolling if many cues carry inline word times, or start with the previous cue's last line."""
    n = len(raw)
    if n < 2:
        return False
    timed = sum(1 for _, _, lines in raw if any("<" in l and _INLINE_TS.search(l) for l in lines))
    repeats = sum(1 for prev, cur in zip(keys, keys[1:]) if prev and cur and cur[0][0] == prev[-1][0])
    return timed >= 0.2 * n or repeats >= 0.3 * (n - 1)


def _timed_chunks(line: str, start: float, end: float, report: TrackReport) -> list:
    """``[(t, raw text)]`` of a line with inline word times; the first chunk starts with the cue."""
    parts = _INLINE_TS.split(line)
    chunks, t = [(start, parts[0])], start
    for i in range(1, len(parts), 2):
        ts = seconds(parts[i])
        if ts is None or ts < t or ts > end:
            report.repair("word_time_clamped")
            ts = min(max(ts if ts is not None else t, t), end)
        t = ts
        chunks.append((t, parts[i + 1]))
    return chunks


class _Joined:
    """Cue texts joined with spaces, built by appending and joined once: a cue that absorbs many
    others costs their length, not the square of it. A cue's text is a str until it absorbs one."""

    __slots__ = ("parts", "size")

    def __init__(self, text: str):
        self.parts, self.size = [text], len(text)

    def add(self, text: str) -> "_Joined":
        self.parts.append(text)
        self.size += 1 + len(text)
        return self

    def same(self, text: str) -> bool:
        """Equal to ``text``; joined only when the lengths agree, at the cost of ``text``'s length."""
        return self.size == len(text) and str(self) == text

    def __str__(self) -> str:
        return " ".join(self.parts)


def _joined(text, more: str) -> _Joined:
    return (text if isinstance(text, _Joined) else _Joined(text)).add(more)


def _texts(cues: list) -> list:
    return [(s, e, t if isinstance(t, str) else str(t)) for s, e, t in cues]


def unroll(raw: list, keys: list, report: TrackReport, keep_annotations: bool) -> list:
    """Each spoken line once, placed by its word times; repeated lines and snapshots dropped."""
    out, recent = [], []
    for (start, end, lines), klines in zip(raw, keys):
        chunks = []
        for key, line in klines:
            if "<" in line and _INLINE_TS.search(line):  # being spoken in this cue: new by definition
                chunks.extend(_timed_chunks(line, start, end, report))
            elif key in recent:                           # the previous line shown again
                continue
            else:
                if recent and key.startswith(recent[-1] + " "):  # a line that grew: only its tail is new
                    line = key[len(recent[-1]) + 1:]
                chunks.append((chunks[-1][0] if chunks else start, line))
            chunks.append((chunks[-1][0], " "))  # line break = word break
            recent = (recent + [key])[-2:]
        if not chunks:
            report.repair("rolling_repeat_dropped")
            continue
        if end - start < SNAPSHOT_S:
            text = clean_text("".join(c[1] for c in chunks), keep_annotations)
            if text and out:  # new words in a snapshot: they belong to the line before
                ps, pe, pt = out[-1]
                out[-1] = (ps, max(pe, end), _joined(pt, text))
                report.repair("snapshot_text_merged")
            elif text:
                out.append((start, start + MIN_ROLLING_CUE_S, text))
            continue
        piece, piece_start = [], chunks[0][0]
        for i, (t, chunk) in enumerate(chunks):
            if piece and chunk.strip() and t - chunks[i - 1][0] > PAUSE_SPLIT_S:
                text = clean_text("".join(piece), keep_annotations)
                if text:
                    out.append((piece_start, min(t, chunks[i - 1][0] + WORD_TAIL_S), text))
                    report.repair("split_at_pause")
                piece, piece_start = [], t
            piece.append(chunk)
        text = clean_text("".join(piece), keep_annotations)
        if text:
            out.append((piece_start, end, text))
    return _texts(out)


# ---------------------------------------------------------------- repairs

def repair_timeline(cues: list, report: TrackReport) -> list:
    """Sorted, no end before start, no zero length, no overlaps, no exact duplicates."""
    report.repair("end_before_start", sum(1 for s, e, _ in cues if e < s))
    fixed = [(e, s, t) if e < s else (s, e, t) for s, e, t in cues]
    if any(a[0] > b[0] for a, b in zip(fixed, fixed[1:])):
        report.repair("out_of_order")
        fixed.sort(key=lambda c: (c[0], c[1]))
    out, later = [], None
    for i, (s, e, t) in enumerate(fixed):
        if e <= s:  # give it a reading time, but never past the next cue's start
            report.repair("zero_length")
            e = s + min(5.0, max(0.5, 0.06 * len(t)))
            if later is None:
                later = _next_starts(fixed)
            if later[i] is not None:
                e = min(e, later[i])
        if out and s < out[-1][1]:
            ps, pe, pt = out[-1]
            if s == ps and (pt == t if isinstance(pt, str) else pt.same(t)):
                report.repair("duplicate_dropped")
                out[-1] = (ps, max(pe, e), pt)
                continue
            if s > ps:
                out[-1] = (ps, s, pt)
                report.repair("overlap_trimmed")
            else:  # same start: one cue holding both texts keeps the order and loses nothing
                out[-1] = (ps, max(pe, e), _joined(pt, t))
                report.repair("overlap_merged")
                continue
        out.append((s, e, t))
    return _texts(out)


def _next_starts(cues: list) -> list:
    """For each cue of ``cues`` (sorted by start), the first start after its own, or None; one pass
    from the end, where a search from each cue through the many that share its start is quadratic."""
    later, nxt = [None] * len(cues), None
    for i in range(len(cues) - 2, -1, -1):
        if cues[i + 1][0] > cues[i][0]:
            nxt = cues[i + 1][0]
        later[i] = nxt
    return later


def _merge_short(cues: list, report: TrackReport) -> list:
    out = []
    for s, e, t in cues:
        if out and (e - s < MIN_ROLLING_CUE_S or out[-1][1] - out[-1][0] < MIN_ROLLING_CUE_S):
            ps, pe, pt = out[-1]
            out[-1] = (ps, max(pe, e), _joined(pt, t))
            report.repair("short_cue_merged")
        else:
            out.append((s, e, t))
    return _texts(out)


# ---------------------------------------------------------------- the whole track

def clean_track(data: bytes, lang: str | None = None, *, keep_annotations: bool = False,
                max_bytes: int = DEFAULT_MAX_BYTES, fmt: str = "vtt") -> tuple[list, TrackReport]:
    """Bytes of a WebVTT (``fmt="vtt"``) or SubRip (``fmt="srt"``) file -> (clean cues, report).
    Never raises on bad input; the same cues whichever format a track came in."""
    report = TrackReport()
    text = decode(data, report, max_bytes)
    if text is None:
        return [], report
    raw = parse_track(text, report, fmt)
    report.raw_cues = len(raw)
    if not raw:
        return [], report.fail(PARSE_ERROR if "-->" in text else EMPTY,
                               "no cue could be read" if "-->" in text else "the file holds no cues")
    if out_of_range(raw):  # 400 digits of hours: no arithmetic on such times is meaningful
        return [], report.fail(PARSE_ERROR, f"a cue time is beyond {MAX_CUE_TIME_S / 3600:,.0f} hours")
    keys = [[(k, l) for l in lines if (k := _line_key(l))] for _, _, lines in raw]  # (key, raw line)
    report.rolling = detect_rolling(raw, keys)
    if report.rolling:
        cues = unroll(raw, keys, report, keep_annotations)
    else:
        cues = [(s, e, t) for (s, e, lines), klines in zip(raw, keys)
                if klines and (t := clean_text(" ".join(lines), keep_annotations))]
        report.repair("empty_cue_dropped", len(raw) - len(cues))
    cues = repair_timeline(cues, report)
    if report.rolling:
        cues = _merge_short(cues, report)
    cues = [(round(s, 3), round(e, 3), t) for s, e, t in cues]
    if not cues:
        return [], report.fail(EMPTY, "no text left after cleaning")
    doubt = script_flag(cues, lang)
    if doubt:
        report.flags.append("wrong_script")
        report.warnings.append(doubt)
    return cues, report
