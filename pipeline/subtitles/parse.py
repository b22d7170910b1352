"""Reading one subtitle track: raw bytes in, raw cues ``(start_s, end_s, payload lines)`` out.

``decode`` checks the size and that the bytes are text; ``parse_track`` reads the cues with
webvtt-py (its WebVTT reader, or its SubRip one for an ``.srt`` track), repairing the file when
it fails, and falls back on a tolerant parser of its own.
``TrackReport`` is what every step of reading and cleaning a track writes down. Every step
is linear in the size of the track, whatever the track holds.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from shards.members import MB, TRACK_MAX_BYTES

OK, EMPTY, NOT_TEXT, TOO_LARGE, PARSE_ERROR = "ok", "empty", "not_text", "too_large", "parse_error"
DEFAULT_MAX_BYTES = TRACK_MAX_BYTES
# ~115 days: past any video YouTube holds, and times this large stay exact to the millisecond
MAX_CUE_TIME_S = 10_000_000

_TIMING_LINE = re.compile(r"^[ \t]*([\d:.,]+)[ \t]*-->[ \t]*([\d:.,]+)", re.M)
# Text after the blank line that follows a timing line. Only the last arrow of a line is tried
# (the tempered dot stops at the next one): trying every arrow of a line of arrows is quadratic.
_TEXT_AFTER_GAP = re.compile(r"-->(?:(?!-->)[^\n])*\r?\n\r?\n[ \t]*[^\s\d]")
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\ufffd]")
_MAX_FIELD_DIGITS = 12  # more digits in an hours or minutes field is out of range whatever they are


@dataclass
class TrackReport:
    """What happened to one track. ``repairs`` counts fixes by name; ``flags`` are doubts."""

    status: str = OK
    error: str | None = None
    parser: str = "none"       # webvtt | webvtt_srt | webvtt_repaired | tolerant | none
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


def too_large_error(size: int, max_bytes: int) -> str:
    return f"{size / MB:.3g} MiB is over the {max_bytes / MB:.3g} MiB limit for one track (mmp-align --max-track-mb)"


def decode(data: bytes, report: TrackReport, max_bytes: int) -> str | None:
    if len(data) > max_bytes:
        report.fail(TOO_LARGE, too_large_error(len(data), max_bytes))
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


# ---------------------------------------------------------------- timestamps

def seconds(token: str) -> float | None:
    """Lenient timestamp: ``[h:]m:s[.,]frac`` with any field widths, or plain seconds.

    None when it is not a timestamp; ``inf`` when it is one too large for a float (400 digits
    of hours), which ``in_range`` refuses.
    """
    parts = token.replace(",", ".").split(":")
    if len(parts) > 3 or not parts[-1]:
        return None
    try:
        value = float(parts[-1])
        for i, part in enumerate(reversed(parts[:-1])):
            if len(part.lstrip("0")) > _MAX_FIELD_DIGITS:
                if not part.isdigit():
                    return None
                return math.inf
            value += int(part) * 60 ** (i + 1)
    except ValueError:
        return None
    return value


def in_range(value: float) -> bool:
    return 0 <= value <= MAX_CUE_TIME_S  # False for NaN too


def _format_ts(value: float) -> str:
    ms = int(round(value * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def normalise_timings(text: str) -> tuple[str, int]:
    """Rewrite every cue timing line as ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` (settings kept)."""
    changed = 0

    def fix(m):
        nonlocal changed
        s, e = seconds(m.group(1)), seconds(m.group(2))
        if s is None or e is None or not (in_range(s) and in_range(e)):
            return m.group(0)
        new = f"{_format_ts(s)} --> {_format_ts(e)}"
        changed += new != m.group(0).strip()
        return new

    return _TIMING_LINE.sub(fix, text), changed


# ---------------------------------------------------------------- cues

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
            s, e = seconds(m.group(1)), seconds(m.group(2))
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


def _ms_seconds(ms: int) -> float:
    """webvtt-py's whole milliseconds as seconds; ``inf`` past what a float holds (its hours
    field may have any number of digits)."""
    return ms / 1000 if ms <= MAX_CUE_TIME_S * 1000 else math.inf


def _webvtt_cues(text: str, fmt: str = "vtt") -> list:
    import io

    import webvtt  # imported here: only workers that clean subtitles need it

    captions = webvtt.from_string(text) if fmt == "vtt" else webvtt.WebVTT.from_buffer(io.StringIO(text), format=fmt)
    return [(_ms_seconds(c.start_time.in_milliseconds()), _ms_seconds(c.end_time.in_milliseconds()), c.lines)
            for c in captions.captions]


def _try_webvtt(text: str, report: TrackReport, label: str, fmt: str = "vtt") -> list | None:
    from webvtt.errors import MalformedCaptionError, MalformedFileError

    try:
        return _webvtt_cues(text, fmt)
    except (MalformedFileError, MalformedCaptionError, ValueError, OverflowError) as exc:
        report.warnings.append(f"{label}: {type(exc).__name__}: {exc}"[:200])
        return None


def _parse_srt(text: str, report: TrackReport) -> list | None:
    """Raw cues of a SubRip track from webvtt-py's SRT reader, or None when it reads fewer cues
    than the file has (``parse_track`` then reads the file as it reads damaged WebVTT)."""
    cues = _try_webvtt(text.lstrip(), report, "webvtt-py (srt)", "srt")
    if cues is None:
        return None
    if len(cues) < text.count("-->"):  # cheap upper bound; its reader also drops cues without text
        loose = _filled(parse_tolerant(text))
        if len(cues) < loose:
            report.warnings.append(f"webvtt-py (srt) read {len(cues)} of {loose} cues with text")
            return None
    report.parser = "webvtt_srt"
    return cues


def parse_track(text: str, report: TrackReport, fmt: str = "vtt") -> list:
    """Raw cues ``(start, end, payload lines)`` from webvtt-py, repairing the file when it fails.

    A SubRip track (``fmt="srt"``) is read by webvtt-py's SRT reader; one it cannot read whole is
    read as below, as WebVTT (cue numbers are identifiers there, and commas are repaired).

    webvtt-py raises MalformedFileError without a ``WEBVTT`` first line, and silently
    skips cues whose timings it cannot read (commas, minutes past 59): the number of
    timing lines tells when that happened. Then timings are normalised and it is tried
    again, and last the tolerant parser is used, whichever reads more cues. A cue time
    may be out of range (``in_range``): ``clean_track`` checks.
    """
    if fmt == "srt":
        cues = _parse_srt(text, report)
        if cues is not None:
            return cues
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


def out_of_range(cues: list) -> bool:
    """True when a cue time is not a number of seconds from 0 to ``MAX_CUE_TIME_S``."""
    return not all(in_range(s) and in_range(e) for s, e, _ in cues)
