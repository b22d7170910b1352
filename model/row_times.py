"""How a feature member's rows map to time, as an mmp/ sample's ``meta.json`` claims it, checked
against the arrays read.

``features[name].row_start_s`` / ``row_seconds`` (written by the extraction stage) say where row 0
starts and how long a row lasts; samples that record none (imported released features, older
shards) have one row per second from 0. The mapping is a claim of a file nobody on the team may
have written, so nothing is sized by it: ``row_times`` checks it against the arrays (a row span in
a sane range, a start inside the rows, ``rows`` equal to the array's, and rows of another span not
outlasting the video's ``duration`` by more than two rows and a second), and ``grid_rows`` maps
the seconds asked for alone, never the whole claimed timeline. A mapping that fails is a
``RowTimesError``: the sample is skipped and counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from shards.codec import load_json
from shards.errors import UserError
from shards.samples import feature_member

# Rows this close to one second long are taken as one row per second (the contiguous slice).
ROW_SECONDS_TOLERANCE = 1e-6
# The span a row may claim: every recipe's rows last 1 s or one clip (32 frames: 1.07 s at 30 fps,
# 32 s at 1 fps). A meta.json claiming rows outside it is refused, whatever the arrays hold.
MIN_ROW_SECONDS = 1e-3
MAX_ROW_SECONDS = 60.0


class RowTimesError(UserError, ValueError):
    """A ``meta.json`` whose rows-to-time mapping cannot be used: the sample is skipped and counted."""


@dataclass(frozen=True)
class RowTimes:
    """How one member's rows map to time: row ``t`` covers ``[start + t * seconds, ... + seconds)``,
    in seconds from the video's first frame."""

    start: float = 0.0
    seconds: float = 1.0

    @property
    def per_second(self) -> bool:
        return abs(self.seconds - 1.0) <= ROW_SECONDS_TOLERANCE


# Samples that record no mapping (imported released features, older shards): one row per second from 0.
DEFAULT_ROW_TIMES = RowTimes()
_ROW_TIME_FIELDS = (b'"row_start_s"', b'"row_seconds"')


def _seconds_field(entry: dict, field: str, default: float, name: str) -> float:
    if field not in entry:
        return default
    value = entry[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RowTimesError(f"meta.json features.{name}.{field} is {value!r}, not a finite number of seconds")
    return float(value)


def _check_against_rows(name: str, entry: dict, times: RowTimes, rows: int, duration) -> None:
    """A mapping that the array's ``rows`` (and the video's ``duration``) contradict: RowTimesError."""
    claimed = entry.get("rows")
    if claimed is not None and (isinstance(claimed, bool) or not isinstance(claimed, int) or claimed != rows):
        raise RowTimesError(f"meta.json features.{name}.rows is {claimed!r} but {feature_member(name)} holds "
                            f"{rows} rows")
    if not -rows * times.seconds <= times.start <= rows * times.seconds:
        raise RowTimesError(f"meta.json features.{name}.row_start_s is {times.start!r}: the first frame must "
                            f"fall within the {rows} rows of {times.seconds:g} s")
    if times.per_second or isinstance(duration, bool) or not isinstance(duration, (int, float)) \
            or not math.isfinite(duration) or duration <= 0:
        return  # one row per second is the arrays' own timeline (imported rows may differ from the duration)
    if rows * times.seconds > duration + 2 * times.seconds + 1:
        raise RowTimesError(f"meta.json features.{name}: {rows} rows of {times.seconds:g} s (row_seconds) span "
                            f"{rows * times.seconds:g} s, past the {duration:g} s duration of the video")


def row_times(meta: bytes | dict | None, members: tuple[str, ...], rows: tuple[int, ...] | None = None
              ) -> list[RowTimes]:
    """Each member's ``RowTimes`` from a sample's ``meta.json`` (bytes or parsed).

    A member without ``features[name]``, or an entry without the fields, gets the default
    (one row per second from 0); bytes that name neither field are not even parsed. Raises
    RowTimesError for a mapping that is there but unusable: meta.json that is not a JSON
    object, an entry that is not an object, a field that is not a finite number, a row span
    outside ``MIN_ROW_SECONDS``..``MAX_ROW_SECONDS``; and, given each member's ``rows`` (the
    arrays read), one they contradict (``_check_against_rows``).
    """
    if meta is None or (isinstance(meta, (bytes, bytearray)) and not any(f in meta for f in _ROW_TIME_FIELDS)):
        return [DEFAULT_ROW_TIMES] * len(members)
    if isinstance(meta, (bytes, bytearray)):
        try:
            meta = load_json(meta)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RowTimesError(f"meta.json is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise RowTimesError(f"meta.json holds a {type(meta).__name__}, not an object")
    features = meta.get("features")
    if not isinstance(features, dict):  # absent, or an older layout listing member names
        return [DEFAULT_ROW_TIMES] * len(members)
    out = []
    for name in members:
        entry = features.get(name)
        if entry is None:
            out.append(DEFAULT_ROW_TIMES)
            continue
        if not isinstance(entry, dict):
            raise RowTimesError(f"meta.json features.{name} is a {type(entry).__name__}, not an object")
        start = _seconds_field(entry, "row_start_s", DEFAULT_ROW_TIMES.start, name)
        seconds = _seconds_field(entry, "row_seconds", DEFAULT_ROW_TIMES.seconds, name)
        if seconds <= 0:
            raise RowTimesError(f"meta.json features.{name}.row_seconds is {seconds!r}; a row must last "
                                "a positive number of seconds")
        if not MIN_ROW_SECONDS <= seconds <= MAX_ROW_SECONDS:
            raise RowTimesError(f"meta.json features.{name}.row_seconds is {seconds!r}; a feature row lasts "
                                f"{MIN_ROW_SECONDS:g} to {MAX_ROW_SECONDS:g} seconds")
        times = RowTimes(start, seconds)
        if rows is not None:
            _check_against_rows(name, entry, times, rows[len(out)], meta.get("duration"))
        out.append(times)
    return out


def second_grid(rows: int, times: RowTimes) -> int:
    """How many whole seconds from 0 a member's rows cover: second ``k`` is covered when its
    centre ``k + 0.5`` falls inside the rows' span."""
    end = times.start + rows * times.seconds
    return max(0, math.ceil(end - 0.5 - 1e-9))


def grid_rows(rows: int, times: RowTimes, seconds) -> np.ndarray:
    """The member row each second takes (``seconds``: how many from 0, or an array of them): the
    one covering time ``k + 0.5``, clipped to the member's rows."""
    seconds = np.arange(seconds) if np.isscalar(seconds) else np.asarray(seconds)
    centres = seconds.astype(np.float64) + 0.5
    index = np.floor((centres - times.start) / times.seconds)
    return np.clip(index, 0, rows - 1).astype(np.intp)
