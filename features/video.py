"""What a decoded video is, whichever decoder read it: its facts (``VideoInfo``), the rows
every recipe plans from its frame times, the chunk of windows a pass hands on, and the
recorded failures (``DecodeError`` with a status from ``DECODE_STATUSES``)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from features.frames import Chunk, frame_plan, windows_from


DECODE_STATUSES = ("no_video", "empty_file", "no_video_stream", "no_frames", "too_short", "decode_error")


class DecodeError(Exception):
    """A video that cannot give features, with a status from DECODE_STATUSES."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class VideoInfo:
    duration: float  # seconds, end of the last frame minus pts of the first
    fps: float  # the source's average frame rate
    width: int  # display size (after rotation) of the source
    height: int
    rotation: int  # degrees counter-clockwise the coded frames are turned to be upright
    decoder: str  # "decord" or "pyav"
    frames: int  # frames in the video track
    first_pts: float  # seconds; window times are relative to it
    fallback_reason: str | None = None
    plans: dict = field(default_factory=dict, repr=False)  # backbone -> RowPlan

    @property
    def rows(self) -> dict:
        """Backbone -> feature rows its recipe gives for this video."""
        return {name: p.rows for name, p in self.plans.items()}

    def row_times(self, name: str) -> dict:
        """How backbone `name`'s rows map to time, for meta.json."""
        p = self.plans[name]
        return {"rows": p.rows, "row_start_s": round(p.start, 6), "row_seconds": p.seconds,
                "frames_sampled": p.frames_out}


def plan_rows(info: VideoInfo, times_abs: np.ndarray, end_abs: float, specs) -> int:
    """Plan every recipe's rows into `info`; the most rows any recipe gives. A video too short
    for some recipe is a DecodeError."""
    if info.duration <= 0:
        raise DecodeError("no_frames", "the video track has zero duration")
    info.plans = frame_plan(times_abs, end_abs, specs)
    for spec in specs:
        p = info.plans[spec.name]
        if p.rows == 0 and spec.tail in ("zero_pad", "drop"):
            rate = f"at {spec.fps:g} fps" if spec.fps else "of its own"
            raise DecodeError("too_short", f"{info.duration:.3f} s of video gives {p.frames_out} frames {rate}, "
                              f"under the {spec.frames} of one {spec.key} row")
        if p.rows == 0:
            raise DecodeError("no_frames", "the video track has zero duration")
    return max(info.rows.values())


def check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DecodeError("no_video", f"{os.path.basename(path)} disappeared before decoding")
    if os.path.getsize(path) == 0:
        raise DecodeError("empty_file", "the file is empty (0 bytes)")



def emit_chunk(kept: dict, plan: dict, rng: tuple[int, int], specs) -> Chunk:
    lo, hi = rng
    if not kept:
        raise DecodeError("decode_error", f"no frame for seconds {lo}-{hi} decoded")
    needed = np.unique(np.concatenate([plan[s.name].needed(lo, hi) for s in specs]))
    have = np.asarray(sorted(kept))
    decoded = {}
    for i in needed:
        i = int(i)
        if i in kept:
            decoded[i] = kept[i]
        else:  # a frame that did not decode: the nearest earlier one (else later) stands in
            j = np.searchsorted(have, i) - 1
            decoded[i] = kept[int(have[max(j, 0)])]
    return windows_from(decoded, plan, lo, hi, specs)
