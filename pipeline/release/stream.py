"""Reading one release file as a stream of ``(video_id, value)``, with every value bounded.

A release file is one JSON object ``{video_id: {"text": [...], "start": [...], "end": [...]}}`` of up
to tens of GB, read with ijson's event parser (``basic_parse``: no prefix strings, which grow with
the nesting depth and cost memory with its square). Each video's value is built here from the events
under two bounds: ``MAX_DEPTH`` levels of nesting and ``MAX_SCALARS`` numbers and strings. A value
past either is skipped to its end (counting brackets, nothing kept) and handed on as an
``Unusable`` marker, so it becomes that video's failure row and the videos after it are read as usual.
A file whose structure breaks (not an object, cut short, bad JSON, a nesting that never closes) ends
with its videos so far and one sentence in the ``StreamReport``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from shards.bounded import UnreadableInput, open_regular
from shards.errors import UserError
from shards.storage import as_path, open_file

log = logging.getLogger("mmp.release")

# A video's value is {"text": [...], "start": [...], "end": [...]}: two levels. Eight leave room for a
# text given as a list of lists; more is no caption list.
MAX_DEPTH = 8
# The longest HowTo100M videos (hours) have some tens of thousands of cues, three values each; a
# million values is far past any of them and about 100 MB of Python objects at most.
MAX_SCALARS = 1_000_000
_SCALARS = frozenset({"string", "number", "boolean", "null"})

# Python's json writes NaN and Infinity, which are not JSON and which no streaming parser
# accepts; the parser also stops at a number it cannot hold (over 18 integer digits, or an exponent
# past a double's), and the rest of the file with it. Outside strings such values can only stand
# where a value does: after [ , or :. They are read as null (a time that is no time).
_NOT_READABLE = re.compile(rb"(?<=[\[,:])(\s*)(-?Infinity|NaN|-?\d{19,}(?:\.\d*)?(?:[eE][+-]?\d+)?"
                           rb"|-?\d+(?:\.\d*)?[eE][+-]?\d{3,})(?=\s*(?:[,\]}]|\Z))")
# Finding a long number in C: digits read as 0, and E, + and - as e.
_NUMBER_SHAPES = bytes.maketrans(b"123456789E+-", b"000000000eee")
# A \uD800-\uDFFF escape that is not half of a pair decodes to no character, and the parser's
# string decoding fails where it stands (the rest of the file with it): read as U+FFFD. The
# escape must not itself be escaped (an even run of backslashes before it).
_LONE_SURROGATE = re.compile(
    rb"(?<!\\)((?:\\\\)*)(\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})")


class ReleaseError(UserError):
    """A release file that cannot be read at all (missing, not JSON at its start)."""


@dataclass(frozen=True)
class Unusable:
    """A video's value that was not kept, and why (one sentence)."""

    reason: str


@dataclass
class StreamReport:
    videos: int = 0
    truncated: bool = False
    error: str | None = None
    bytes_read: int = 0
    careful_helps: bool = False  # stopped where the careful reading (_NanAsNull numbers=True) goes on


class _NanAsNull:
    """A binary reader that turns bare NaN/Infinity into null, chunk by chunk; with ``numbers=True``
    (the careful reading) also numbers the parser cannot hold, and lone surrogate escapes into U+FFFD."""

    HOLD = 16  # longer than "-Infinity" plus the delimiter before it

    def __init__(self, raw, chunk: int = 1 << 20, numbers: bool = False):
        self.raw, self.chunk, self.tail, self.numbers = raw, chunk, b"", numbers
        self.replaced = 0

    def _suspect(self, data: bytes) -> bool:
        if b"NaN" in data or b"Infinity" in data:
            return True
        if not self.numbers:
            return False
        shapes = data.translate(_NUMBER_SHAPES)
        return (b"0" * 19 in shapes or b"e000" in shapes or b"ee000" in shapes
                or b"\\ud" in data or b"\\uD" in data)

    def read(self, n: int = -1) -> bytes:
        if n == 0:  # ijson probes with read(0) to tell bytes from text
            return b""
        more = self.raw.read(max(n, self.chunk) if n and n > 0 else -1)
        data = self.tail + more
        if not more:  # end of file: whatever is left goes out
            self.tail = b""
            data = _NOT_READABLE.sub(rb"\1null", data)
            return _LONE_SURROGATE.sub(rb"\1\\ufffd", data) if self.numbers else data
        # Hold back from the last delimiter on, so a value after it is seen whole next time
        # ("Infin" | "ity", or a long number split across reads); without a delimiter near the
        # end (inside a long string), only the last few bytes.
        near = max(0, len(data) - 4096)
        cut = max(data.rfind(b",", near), data.rfind(b"[", near), data.rfind(b":", near))
        if cut <= 0:
            cut = max(0, len(data) - self.HOLD)
        head, self.tail = data[:cut], data[cut:]
        if not self._suspect(head):
            return head  # the common case: nothing to replace
        head, n_sub = _NOT_READABLE.subn(rb"\1null", head)
        if self.numbers:
            head, n_lone = _LONE_SURROGATE.subn(rb"\1\\ufffd", head)
            n_sub += n_lone
        self.replaced += n_sub
        return head

    def tell(self) -> int:
        return self.raw.tell()


def _skip(events, depth: int) -> None:
    """Consume events until the ``depth`` containers open at this point are closed."""
    for event, _ in events:
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
            if depth == 0:
                return


def build_value(events, max_depth: int = MAX_DEPTH, max_scalars: int = MAX_SCALARS):
    """The next JSON value from ijson ``basic_parse`` events, or ``Unusable`` when it is too deep or
    too large (its events are consumed either way, so the stream goes on after it)."""
    outer: list = []   # (container, key) of each open container around the current one
    current = None     # the innermost open container
    key = None         # in a map: the key its next value goes under
    scalars = 0
    for event, value in events:  # the order of the tests follows the events' frequency
        if event in _SCALARS:
            if current is None:
                return value
            scalars += 1
            if scalars > max_scalars:
                _skip(events, len(outer) + 1)
                return Unusable(f"the value holds more than {max_scalars:,} numbers and strings")
            if type(current) is list:
                current.append(value)
            else:
                current[key] = value
        elif event == "map_key":
            key = value
        elif event == "start_array" or event == "start_map":
            depth = len(outer) + (current is not None)
            if depth >= max_depth:
                _skip(events, depth + 1)
                return Unusable(f"the value is nested deeper than {max_depth} levels")
            new = [] if event == "start_array" else {}
            if current is not None:
                if type(current) is list:
                    current.append(new)
                else:
                    current[key] = new
                outer.append((current, key))
            current, key = new, None
        else:  # end_array / end_map
            if not outer:
                return current
            current, key = outer.pop()
    raise EOFError  # the events ended inside the value: the file is cut short


def iter_release(path: Path, report: StreamReport, max_depth: int = MAX_DEPTH,
                 max_scalars: int = MAX_SCALARS) -> Iterator[tuple[str, object]]:
    """Yield ``(video_id, value)`` from one release file as it is read (``value`` may be ``Unusable``).

    A file cut short (the last video half written) yields every complete video before
    the cut; the report says where it stopped and why. A number the parser cannot hold stops
    it too: the file is then read again from its start with such numbers read as null (a slower
    filter, paid only by such files), and the videos already yielded are not yielded again.
    """
    path = as_path(path)
    if not isinstance(path, Path) and not path.is_file():
        raise ReleaseError(f"caption file {path} does not exist")
    careful = False
    while True:
        attempt = StreamReport()
        skip = report.videos
        for video_id, value in _read_once(path, attempt, careful, max_depth, max_scalars):
            if attempt.videos > skip:
                report.videos += 1
                yield video_id, value
        if not careful and attempt.careful_helps:
            log.info("%s holds a number too large or a string escape the parser cannot read; reading it "
                     "again with such numbers as null and such escapes as U+FFFD", path.name)
            careful = True
            continue
        report.truncated, report.error, report.bytes_read = attempt.truncated, attempt.error, attempt.bytes_read
        break
    if report.truncated and report.videos == 0 and report.bytes_read < 2:
        raise ReleaseError(f"caption file {path} is empty")


def _open(path):
    if isinstance(path, Path):
        try:
            fd = open_regular(path, "caption file")
        except UnreadableInput as exc:
            raise ReleaseError(str(exc)) from None
        return open(fd, "rb")
    return open_file(path, "rb")


def _read_once(path, report: StreamReport, careful: bool, max_depth: int, max_scalars: int):
    import ijson

    with _open(path) as raw:
        f = _NanAsNull(raw, numbers=careful)
        events = ijson.basic_parse(f, use_float=True)
        try:
            first = next(events, (None, None))[0]
            if first is not None and first != "start_map":
                report.truncated = True
                report.error = (f"{path.name} is not a JSON object of videos (it starts with a {first}); "
                                "nothing read from it")
            else:
                for event, video_id in events:
                    if event != "map_key":  # the object's end
                        break
                    value = build_value(events, max_depth, max_scalars)
                    report.videos += 1
                    yield video_id, value
        except (ijson.common.IncompleteJSONError, EOFError) as exc:
            report.truncated, report.careful_helps = True, "overflow" in str(exc)
            why = f" ({exc})" if str(exc) else ""
            report.error = f"{path.name} ends early after {report.videos} complete videos{why}; the rest is lost"
        except ijson.common.JSONError as exc:
            report.truncated = True
            report.error = f"{path.name} is not valid JSON after {report.videos} complete videos: {exc}"
        except UnicodeDecodeError as exc:  # a string the parser decoded to no text (a lone surrogate escape)
            report.truncated, report.careful_helps = True, True
            report.error = (f"{path.name} holds a string that is not text after {report.videos} complete videos "
                            f"({exc.reason}); the rest is lost")
        report.bytes_read = f.tell()
