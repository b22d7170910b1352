"""Encoding and decoding a sample's members: JSON and ``.npy``, never a pickle.

Every reader decodes a ``.json`` member through ``load_json``: malformed JSON, however
it is malformed (nesting too deep for the parser included), is a ValueError the reader
counts against that one sample, never an error that ends a unit or a run.
``object_spans`` locates the values of a JSON object (``subs.json``'s tracks) so a
reader decodes only those it needs. Arrays are written by ``npy_bytes`` and read by
``load_npy``, both with ``allow_pickle=False``: an object array is refused, never run.
``json_bytes`` is the one spelling of a JSON member's bytes (UTF-8, keys sorted).
"""
from __future__ import annotations

import io
import json
import re


def json_bytes(value) -> bytes:
    """A dict or list as a JSON member's bytes: UTF-8, not ASCII-escaped, keys sorted."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True).encode("utf-8")


def npy_bytes(array) -> bytes:
    """An array as a ``.npy`` member's bytes (``allow_pickle=False``: an object array is refused)."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def load_npy(data: bytes, name: str = "the .npy member"):
    """A ``.npy`` member as an array; ValueError for a pickled (object) array, never unpickled, and for
    a header whose shape is not the bytes that follow it, checked before numpy allocates what the
    header claims (it would, for a file-like object: a few bytes could ask for terabytes)."""
    import math

    import numpy as np

    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"format version {version} is not read here")
        shape, _, dtype = reader(f)
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise ValueError(f"{name} is not a .npy array ({type(exc).__name__}: {exc})") from None
    if dtype.hasobject:
        raise ValueError(f"refused: {name} holds pickled objects (an object array)")
    claimed, follows = math.prod(shape) * dtype.itemsize, len(data) - f.tell()
    if claimed != follows:
        raise ValueError(f"{name}: its header claims shape {tuple(shape)} ({claimed:,} bytes) but {follows:,} "
                         "bytes follow it")
    f.seek(0)
    return np.load(f, allow_pickle=False)


def loads(text: str):
    """``json.loads``, where nesting too deep for the parser is malformed JSON like any other."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to parse") from None


def load_json(data: bytes):
    """A JSON member; ValueError (or UnicodeDecodeError, a ValueError) for any malformed one."""
    return loads(data.decode("utf-8"))


WS = re.compile(r"[ \t\n\r]*")
_SCAN = json.JSONDecoder().scan_once


def _skip_flat_object(s: str, i: int) -> int:
    """The index just past the object at ``s[i]`` if it holds no object (a subtitle track:
    strings, numbers and arrays of cues), found with str.find and counts alone; -1 when
    that cannot be decided so cheaply (a nested object, a brace or an escaped backslash
    in a string), and the caller falls back to a full scan."""
    j = i
    while True:
        j = s.find("}", j + 1)
        if j < 0 or s.find("{", i + 1, j) >= 0:
            return -1
        quotes = s.count('"', i, j)
        if quotes and s.find("\\", i, j) >= 0:  # the writer's UTF-8 JSON rarely escapes anything
            escaped = s.count('\\"', i, j)
            if escaped and s.count("\\\\", i, j):
                return -1  # is \\" an escaped quote or an escaped backslash? let the scanner say
            quotes -= escaped
        if quotes % 2 == 0:  # an even number of string delimiters before it: "}" is outside strings
            return j + 1


def _skip_value(s: str, i: int) -> int:
    """The index just past the JSON value starting at ``s[i]``."""
    if s[i] == "{":
        end = _skip_flat_object(s, i)
        if end > 0:
            return end
    try:  # anything else is decoded and dropped: json's C scanner beats a regular expression here
        return _SCAN(s, i)[1]
    except StopIteration:
        raise ValueError(f"malformed JSON at character {i}") from None
    except RecursionError:
        raise ValueError(f"JSON nested too deeply to parse at character {i}") from None


def object_spans(s: str, i: int, walk: str | None = None) -> tuple[dict, int]:
    """``({key: (value_start, value_end, members)}, end)`` for the JSON object at ``s[i]``, values
    undecoded. ``members`` is None, or for the key ``walk`` (when its value is an object) that
    object's own spans, found in the same pass."""
    if s[i:i + 1] != "{":
        raise ValueError(f"expected a JSON object at character {i}")
    spans = {}
    i = WS.match(s, i + 1).end()
    if s[i:i + 1] == "}":
        return spans, i + 1
    while True:
        if s[i:i + 1] != '"':
            raise ValueError(f"expected a key at character {i}")
        key, i = json.decoder.scanstring(s, i + 1)
        i = WS.match(s, i).end()
        if s[i:i + 1] != ":":
            raise ValueError(f"expected ':' at character {i}")
        start = WS.match(s, i + 1).end()
        if key == walk and s[start:start + 1] == "{":
            members, end = object_spans(s, start)
        else:
            members, end = None, _skip_value(s, start)
        spans[key] = (start, end, members)
        i = WS.match(s, end).end()
        if s[i:i + 1] == "}":
            return spans, i + 1
        if s[i:i + 1] != ",":
            raise ValueError(f"expected ',' or '}}' at character {i}")
        i = WS.match(s, i + 1).end()
