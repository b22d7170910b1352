"""What a decoded video is, whichever decoder read it: its facts (``VideoInfo``), the bounds it must
keep (``VideoLimits``), the rows every recipe plans from its frame times, the chunk of windows a
pass hands on, and the recorded failures (``DecodeError`` with a status from ``DECODE_STATUSES``).

Bounds: a file's claims cost nothing until checked. Rows are planned from the decoded frames'
times, and before anything proportional to rows exists (`plan_rows`) the video must run at most
``--max-video-seconds`` from its first frame to the end of its last (``too_long``) and show a
frame at least every ``--max-frame-gap`` seconds (``frame_gap``; a last frame whose duration
claims more counts the same). Real videos repeat a frame over a few missing seconds (variable
frame rate, a dropped stretch of a stream), and a window with no frame of its own shows the one
before it; a file with two frames 3,000,000 s apart is a failure row, not 3,000,001 of them.
Frames are refused by size (``too_large``) before one is decoded at that size: over
``--max-video-pixels``, or with one side more than ``MAX_ASPECT`` times the other (the short
side is resized to 224, so a 60000x16 frame would become 840,000x224).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from features.frames import Chunk, frame_plan, windows_from
from pipeline.runtime.cli import option


DECODE_STATUSES = ("no_video", "empty_file", "no_video_stream", "no_frames", "too_short", "too_long", "frame_gap",
                   "too_large", "decode_error")


class DecodeError(Exception):
    """A video that cannot give features, with a status from DECODE_STATUSES."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message

    def __reduce__(self):  # whole across processes (a decode run in a worker, a test's child)
        return DecodeError, (self.status, self.message)


class DecoderFailed(Exception):
    """The chosen decoder cannot do this file (cannot open it, untrusted times, a failure part way, a
    GPU decoder that would run on the CPU): the PyAV path decodes it again, the reason recorded."""


# Long side over short side beyond which no real video goes: YouTube's widest formats are 32:9
# (3.6) and 360-degree equirectangular (2); vertical videos are 9:16.
MAX_ASPECT = 10


@dataclass(frozen=True)
class VideoLimits:
    """What one video may claim before it is a failure row (``too_long``, ``frame_gap``, ``too_large``)."""

    max_video_seconds: float = option(
        43200.0, "a video whose track runs longer, first frame to end of last, is 'too_long' (default 43200: "
        "12 hours, YouTube's upload limit, so above every HowTo100M video, whose mean is ~6.5 minutes); "
        "rows never exceed it", type=float, metavar="S", group="limits")
    max_frame_gap: float = option(
        300.0, "seconds a video may go without a new frame (its rows repeat the last one); longer is "
        "'frame_gap' (default 300: real videos miss a few seconds, not minutes)", type=float, metavar="S", group="limits")
    max_video_pixels: int = option(
        8192 * 8192, "frames larger, declared or decoded, are 'too_large' and never decoded at that size "
        "(default 67108864 = 8192x8192: about twice the largest frame H.264, HEVC and AV1 levels allow, "
        "35.7 megapixels; YouTube's 8K is 7680x4320, 33.2)", type=int, metavar="N", group="limits")

    def check(self) -> None:
        """ValueError (one sentence naming the flag) unless every bound is positive."""
        for name in ("max_video_seconds", "max_frame_gap", "max_video_pixels"):
            value = getattr(self, name)
            if not value > 0 or value != value or value == float("inf"):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive number, got {value}")

    def check_size(self, width: int, height: int) -> None:
        """DecodeError ``too_large`` for frames of width x height over the bounds."""
        if width * height > self.max_video_pixels:
            raise DecodeError("too_large", f"frames of {width}x{height} ({width * height / 1e6:.1f} megapixels), "
                              f"over --max-video-pixels {self.max_video_pixels}")
        if min(width, height) > 0 and max(width, height) > MAX_ASPECT * min(width, height):
            raise DecodeError("too_large", f"frames of {width}x{height} are {max(width, height) / min(width, height):g} "
                              f"times as {'wide as high' if width > height else 'high as wide'}, over the "
                              f"{MAX_ASPECT} any real video has")

    def check_times(self, times_abs: np.ndarray, end_abs: float) -> None:
        """DecodeError ``too_long`` / ``frame_gap`` for frames shown at `times_abs` (sorted, seconds), the last
        until `end_abs`. O(frames), before any row exists."""
        first = float(times_abs[0])
        span = end_abs - first
        if not span <= self.max_video_seconds:  # also NaN
            raise DecodeError("too_long", f"the video track runs {span:.3f} s from its first frame to the end of its "
                              f"last, over --max-video-seconds {self.max_video_seconds:g}")
        gaps = np.diff(np.append(times_abs, end_abs))
        worst = int(np.argmax(gaps))
        if gaps[worst] > self.max_frame_gap:
            raise DecodeError("frame_gap", f"no frame for {gaps[worst]:.3f} s after {times_abs[worst] - first:.3f} s "
                              f"(over --max-frame-gap {self.max_frame_gap:g})")


@dataclass
class VideoInfo:
    duration: float  # seconds, end of the last frame minus pts of the first
    fps: float  # the source's average frame rate
    width: int  # display size (after rotation) of the source
    height: int
    rotation: int  # degrees counter-clockwise the coded frames are turned to be upright
    decoder: str  # "pyav", "decord", "torchcodec" or "torchcodec-cuda" (features.decode.DECODERS)
    frames: int  # frames in the video track
    first_pts: float  # seconds; window times are relative to it
    fallback_reason: str | None = None
    file_start: float = 0.0  # seconds; the container's start time (its earliest stream's first timestamp)
    plans: dict = field(default_factory=dict, repr=False)  # backbone -> RowPlan

    @property
    def rows(self) -> dict:
        """Backbone -> feature rows its recipe gives for this video."""
        return {name: p.rows for name, p in self.plans.items()}

    def row_times(self, name: str) -> dict:
        """How backbone `name`'s rows map to time, for meta.json: row t covers ``row_start_s +
        t * row_seconds`` s from the first frame, which comes ``first_frame_s`` after the file's
        start (the container's start time, the ffmpeg command line's time zero)."""
        p = self.plans[name]
        return {"rows": p.rows, "row_start_s": round(p.start, 6), "row_seconds": p.seconds,
                "frames_sampled": p.frames_out, "first_frame_s": round(self.first_pts - self.file_start, 6)}


def plan_rows(info: VideoInfo, times_abs: np.ndarray, end_abs: float, specs, limits: VideoLimits,
              origin: tuple[float, bool] = (0.0, False)) -> int:
    """Plan every recipe's rows into `info` (frame_plan; `origin` is the container's start time,
    which the ffmpeg command line counts from, and whether the file holds several streams); the
    most rows any recipe gives. A video too short for some recipe, or past `limits`, is a DecodeError."""
    if info.duration <= 0:
        raise DecodeError("no_frames", "the video track has zero duration")
    limits.check_times(times_abs, end_abs)
    head = float(times_abs[0]) - origin[0]
    if origin[1] and head > 0:  # rows repeat the first frame from the file's start: bounded as the track is
        if not end_abs - origin[0] <= limits.max_video_seconds:
            raise DecodeError("too_long", f"the file runs {end_abs - origin[0]:.3f} s from its start to the end of "
                              f"its last frame, over --max-video-seconds {limits.max_video_seconds:g}")
        if head > limits.max_frame_gap:
            raise DecodeError("frame_gap", f"no frame for the first {head:.3f} s of the file (another stream starts "
                              f"first; over --max-frame-gap {limits.max_frame_gap:g})")
    info.file_start = origin[0]
    info.plans = frame_plan(times_abs, end_abs, specs, *origin)
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
