"""Parsing and cleaning one subtitle track: raw bytes in, clean cues and a report out.

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
"""
from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import asdict, dataclass, field

OK, EMPTY, NOT_TEXT, TOO_LARGE, PARSE_ERROR = "ok", "empty", "not_text", "too_large", "parse_error"
DEFAULT_MAX_BYTES = 32 << 20   # ~100 hours of rolling captions: far beyond any HowTo100M video
SNAPSHOT_S = 0.05              # YouTube's snapshot cues last 10 ms; real cues never this short
MIN_ROLLING_CUE_S = 0.1        # the bar: nothing this short survives from a rolling track
PAUSE_SPLIT_S = 2.0            # a silence this long between timed words starts a new cue
WORD_TAIL_S = 1.0              # how long the last word before such a pause is taken to last

_TAG = re.compile(r"<[^>]*>")
_INLINE_TS = re.compile(r"<((?:\d+:)?\d{1,2}:\d{1,2}[.,]\d{1,3})>")
_TIMING_LINE = re.compile(r"^[ \t]*([\d:.,]+)[ \t]*-->[ \t]*([\d:.,]+)", re.M)
_TEXT_AFTER_GAP = re.compile(r"-->[^\n]*\r?\n\r?\n[ \t]*[^\s\d]")
_ANNOTATION = re.compile(r"\[[^\[\]]*\]|\([^()]*\b(?:music|applause|laughter)\b[^()]*\)|[♪♫]+|>>+", re.I)
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\ufffd]")
_LETTER = re.compile(r"[^\W\d_]")
_SCRIPTS = {"cjk": re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff]"),
            "cyrillic": re.compile(r"[\u0400-\u04ff]"), "latin": re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]")}
_LANG_SCRIPT = {"zh": "cjk", "ja": "cjk", "ru": "cyrillic", "uk": "cyrillic", "bg": "cyrillic"}
# Latin-script languages whose text without these letters is almost surely another language.
_MARKERS = {"vi": re.compile(r"[ăâđêôơưĂÂĐÊÔƠƯ\u1ea0-\u1ef9]"), "cs": re.compile(r"[ěščřžůňťďĚŠČŘŽŮŇŤĎ]")}


@dataclass
class TrackReport:
    """What happened to one track. ``repairs`` counts fixes by name; ``flags`` are doubts."""

    status: str = OK
    error: str | None = None
    parser: str = "none"       # webvtt | webvtt_repaired | tolerant | none
    rolling: bool = False
    raw_cues: int = 0
    repairs: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    flags: list = field(default_factory=list)

    def repair(self, name: str, n: int = 1) -> None:
        if n:
            self.repairs[name] = self.repairs.get(name, 0) + n

    def fail(self, status: str, error: str) -> "TrackReport":
        self.status, self.error = status, error
        return self

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- text

def clean_text(raw: str, keep_annotations: bool = False) -> str:
    """Cue text without tags, entities, annotations, odd whitespace; NFC."""
    if "<" in raw:
        raw = _TAG.sub("", raw)  # before unescaping, so "&lt;b&gt;" stays text
    if "&" in raw:
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


# ---------------------------------------------------------------- parsing

def _seconds(token: str) -> float | None:
    """Lenient timestamp: ``[h:]m:s[.,]frac`` with any field widths, or plain seconds."""
    parts = token.replace(",", ".").split(":")
    if len(parts) > 3 or not parts[-1]:
        return None
    try:
        value = float(parts[-1])
        for i, part in enumerate(reversed(parts[:-1])):
            value += int(part) * 60 ** (i + 1)
    except ValueError:
        return None
    return value


def _format_ts(value: float) -> str:
    ms = int(round(value * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def normalise_timings(text: str) -> tuple[str, int]:
    """Rewrite every cue timing line as ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` (settings kept)."""
    changed = 0

    def fix(m):
        nonlocal changed
        s, e = _seconds(m.group(1)), _seconds(m.group(2))
        if s is None or e is None:
            return m.group(0)
        new = f"{_format_ts(s)} --> {_format_ts(e)}"
        changed += new != m.group(0).strip()
        return new

    return _TIMING_LINE.sub(fix, text), changed


def parse_tolerant(text: str) -> list:
    """A small forgiving parser: any line ``T --> T`` starts a cue, an empty line ends it.

    Two departures from WebVTT, both seen in real files: an empty line right after
    the timing line does not end the cue (yt-dlp's SRT of ASR tracks writes the text
    after one), and a line just before a timing line is its identifier, not text.
    """
    cues, current = [], None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = _TIMING_LINE.match(line)
        if m:
            s, e = _seconds(m.group(1)), _seconds(m.group(2))
            current = (s, e, []) if s is not None and e is not None else None
            if current is not None:
                cues.append(current)
        elif not line:
            if current is not None and current[2]:
                current = None
        elif current is not None and not (i + 1 < len(lines) and _TIMING_LINE.match(lines[i + 1])):
            current[2].append(line)
    return cues


def _filled(cues: list) -> int:
    return sum(1 for c in cues if any(l.strip() for l in c[2]))


def _webvtt_cues(text: str) -> list:
    import webvtt  # imported here: only workers that clean subtitles need it

    return [(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000, c.lines)
            for c in webvtt.from_string(text).captions]


def _try_webvtt(text: str, report: TrackReport, label: str) -> list | None:
    from webvtt.errors import MalformedCaptionError, MalformedFileError

    try:
        return _webvtt_cues(text)
    except (MalformedFileError, MalformedCaptionError, ValueError) as exc:
        report.warnings.append(f"{label}: {type(exc).__name__}: {exc}"[:200])
        return None


def parse_track(text: str, report: TrackReport) -> list:
    """Raw cues ``(start, end, payload lines)`` from webvtt-py, repairing the file when it fails.

    webvtt-py raises MalformedFileError without a ``WEBVTT`` first line, and silently
    skips cues whose timings it cannot read (commas, minutes past 59): the number of
    timing lines tells when that happened. Then timings are normalised and it is tried
    again, and last the tolerant parser is used, whichever reads more cues.
    """
    arrows = text.count("-->")  # cheap upper bound; the exact count only when cues went missing
    if not text.startswith("WEBVTT"):
        stripped = text.lstrip()
        if stripped.startswith("WEBVTT"):
            text = stripped
        else:
            text = "WEBVTT\n\n" + text
            report.repair("added_header")
    report.parser = "webvtt"
    cues = _try_webvtt(text, report, "webvtt-py") or []
    expected = len(_TIMING_LINE.findall(text)) if len(cues) < arrows else len(cues)
    if len(cues) < expected:
        fixed, changed = normalise_timings(text)
        report.repair("timestamps_normalised", changed)
        again = _try_webvtt(fixed, report, "webvtt-py after repair") if changed else None
        if again is not None:
            cues, report.parser = again, "webvtt_repaired"
    if len(cues) < expected:
        loose = parse_tolerant(text)
        if len(loose) > len(cues):
            report.warnings.append(f"webvtt-py read {len(cues)} of {expected} cues; tolerant parser used")
            cues, report.parser = loose, "tolerant"
    elif _TEXT_AFTER_GAP.search(text) and any(not any(l.strip() for l in c[2]) for c in cues):
        # cues left empty because their text follows a blank line: webvtt-py drops that text
        loose = parse_tolerant(text)
        if _filled(loose) > _filled(cues):
            report.repair("text_after_blank_line", _filled(loose) - _filled(cues))
            cues, report.parser = loose, "tolerant"
    if report.repairs.get("added_header") and report.parser == "webvtt":
        report.parser = "webvtt_repaired"
    return cues


# ---------------------------------------------------------------- rolling captions

def _line_key(line: str) -> str:
    return " ".join((_TAG.sub("", line) if "<" in line else line).split())


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
        ts = _seconds(parts[i])
        if ts is None or ts < t or ts > end:
            report.repair("word_time_clamped")
            ts = min(max(ts if ts is not None else t, t), end)
        t = ts
        chunks.append((t, parts[i + 1]))
    return chunks


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
                out[-1] = (ps, max(pe, end), pt + " " + text)
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
    return out


# ---------------------------------------------------------------- repairs

def repair_timeline(cues: list, report: TrackReport) -> list:
    """Sorted, no end before start, no zero length, no overlaps, no exact duplicates."""
    report.repair("end_before_start", sum(1 for s, e, _ in cues if e < s))
    fixed = [(e, s, t) if e < s else (s, e, t) for s, e, t in cues]
    if any(a[0] > b[0] for a, b in zip(fixed, fixed[1:])):
        report.repair("out_of_order")
        fixed.sort(key=lambda c: (c[0], c[1]))
    out = []
    for i, (s, e, t) in enumerate(fixed):
        if e <= s:  # give it a reading time, but never past the next cue's start
            report.repair("zero_length")
            e = s + min(5.0, max(0.5, 0.06 * len(t)))
            nxt = next((c[0] for c in fixed[i + 1:] if c[0] > s), None)
            if nxt is not None:
                e = min(e, nxt)
        if out and s < out[-1][1]:
            ps, pe, pt = out[-1]
            if s == ps and t == pt:
                report.repair("duplicate_dropped")
                out[-1] = (ps, max(pe, e), pt)
                continue
            if s > ps:
                out[-1] = (ps, s, pt)
                report.repair("overlap_trimmed")
            else:  # same start: one cue holding both texts keeps the order and loses nothing
                out[-1] = (ps, max(pe, e), pt + " " + t)
                report.repair("overlap_merged")
                continue
        out.append((s, e, t))
    return out


def _merge_short(cues: list, report: TrackReport) -> list:
    out = []
    for c in cues:
        if out and (c[1] - c[0] < MIN_ROLLING_CUE_S or out[-1][1] - out[-1][0] < MIN_ROLLING_CUE_S):
            ps, pe, pt = out[-1]
            out[-1] = (ps, max(pe, c[1]), pt + " " + c[2])
            report.repair("short_cue_merged")
        else:
            out.append(c)
    return out


# ---------------------------------------------------------------- the whole track

def decode(data: bytes, report: TrackReport, max_bytes: int) -> str | None:
    if len(data) > max_bytes:
        report.fail(TOO_LARGE, f"{len(data) / 1e6:.1f} MB is over the {max_bytes / 1e6:.0f} MB limit for one track")
        return None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
        report.repair("bom")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = data.decode("utf-8", "replace")
        report.warnings.append(f"invalid UTF-8 from byte {exc.start}; replaced")
    head = text[:65536]
    bad = len(_BAD_CHARS.findall(head)) if _BAD_CHARS.search(head) else 0
    if head and bad > 0.02 * len(head):
        report.fail(NOT_TEXT, f"not a subtitle file: {bad} of the first {len(head)} characters are binary")
        return None
    if "\r" in text:
        report.repair("crlf")
    return text


def clean_track(data: bytes, lang: str | None = None, *, keep_annotations: bool = False,
                max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[list, TrackReport]:
    """Bytes of a WebVTT (or SRT-as-VTT) file -> (clean cues, report). Never raises on bad input."""
    report = TrackReport()
    text = decode(data, report, max_bytes)
    if text is None:
        return [], report
    raw = parse_track(text, report)
    report.raw_cues = len(raw)
    if not raw:
        return [], report.fail(PARSE_ERROR if "-->" in text else EMPTY,
                               "no cue could be read" if "-->" in text else "the file holds no cues")
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
