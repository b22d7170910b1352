"""Decode a video once into every recipe's feature rows (model windows), in bounded memory.

What the rows are is data in features.spec (one recipe per backbone); this module only
follows it:
- ``r21d=paper``: re-sampled to 30 fps on a grid from the first frame, row k takes the 8
  consecutive grid frames from second k; ceil(duration) rows, times past the end repeat
  the last frame.
- ``s3d=released``: FFmpeg's ``fps=16`` filter as index arithmetic on the decoded pts
  (tick n shows the last frame with pts < (n + 1/2) / 16), cut into 16-frame chunks;
  ceil(frames / 16) rows, the last chunk padded black; under 16 frames: ``too_short``.

Timestamps, not frame counts: every frame's presentation time is read (decord's
`get_frame_timestamp` plus the stream's start time, or PyAV's packet pts), so a variable
frame rate or a stream that starts at pts 0.5 s cannot shift features against subtitles.
The duration is the video track's own extent: end of the last frame (its pts plus its
duration) minus the first frame's pts; a container duration is not used, since it is often
missing (WebM) or stretched by a longer audio track.

Size: frames are decoded once at the size the recipes share (features.frames.decode_size:
short side 224, long side truncated, FFmpeg's swscale bilinear, up or down), which is the
released S3D recipe's own resize, so its crop is a copy; R(2+1)D resizes from there.

Decoders: decord is tried first and converts only the frames some window needs (reading
forward, skipping the others without colour conversion, a chunk of a few seconds at a
time), resized at decode
time (a 4K frame never exists at full size in our memory). When decord cannot open the
file, reports unusable timestamps (it returns garbage for some AVI files) or fails part
way, the whole video is decoded again with PyAV, sequentially, keeping only the needed
frames, turned upright and resized by FFmpeg's own filters (``_Scaler``). Both use the
same frame plan and the same scaler, so they give the same bytes (tests/features/test_s3d_released.py
holds both to FFmpeg's chain).

Cost: decoding every frame is the floor (the codec needs them all); beyond it, each
needed frame is converted and scaled once, shared by the backbones, each backbone
resizes only its own frames once, and windows are gathered with one copy per frame,
channels last. Windows stay uint8 up to the model: float conversion (which also moves
channels to the front), scale and mean/std are one vectorised pass per batch on the
model's device (`features.frames.Normaliser`), where on a GPU they cost the decode threads nothing.

Rotation: phone videos carry a display matrix. PyAV reports it per frame
(`frame.rotation`, degrees counter-clockwise, as FFmpeg's autorotate reads it) and gives
frames in coded orientation, which FFmpeg's transpose/flip filters turn upright before the
resize (as the ffmpeg command line's autorotate does), so the model sees the upright
picture; the recipes' geometry is measured on the upright size. decord's handling differs
by version (0.6 turns the frame but then squeezes it into the requested width x height), so
rotated videos take the PyAV path.

Failures are values: `DecodeError(status, message)` with status `no_video` (file gone),
`empty_file`, `no_video_stream`, `no_frames`, `too_short` or `decode_error`; a bug still raises
anything else.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from features.frames import Chunk, chunk_ranges, decode_groups, decode_size, frame_plan, windows_from
from features.spec import BackboneSpec

log = logging.getLogger("mmp.decode")

# Seconds of windows decoded and handed on at a time: bounds memory whatever the length.
DEFAULT_CHUNK_SECONDS = 4
# Extensions a downloaded file may carry (crawl members, SRC files), in lookup order.
VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "mov", "avi", "flv", "3gp", "m4v", "ts", "mpg", "mpeg", "ogv", "wmv",
                    "m4a", "mka")  # audio-only downloads too: they get a recorded no_video_stream

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


def _plan_rows(info: VideoInfo, times_abs: np.ndarray, end_abs: float, specs) -> int:
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


# ---------------------------------------------------------------- probing (PyAV)

def _open_av(path: str):
    import av

    try:
        return av.open(path)
    except av.FFmpegError as exc:
        raise DecodeError("decode_error", f"not a readable media file ({exc.__class__.__name__}: {exc})"[:300]) from None


def _video_stream(container, path: str):
    streams = list(container.streams.video)
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise DecodeError("no_video_stream", f"no video stream (streams: {', '.join(kinds)})")
    return streams[0]


def check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DecodeError("no_video", f"{os.path.basename(path)} disappeared before decoding")
    if os.path.getsize(path) == 0:
        raise DecodeError("empty_file", "the file is empty (0 bytes)")


def probe_rotation(path: str) -> tuple[int, int, int, float]:
    """(rotation, coded width, coded height, average fps) from PyAV; rotation from the first frame."""
    rotation, width, height, rate, _ = probe_video(path)
    return rotation, width, height, rate


def probe_video(path: str) -> tuple[int, int, int, float, float]:
    """probe_rotation's facts and the stream's start time in seconds (0 when it has none)."""
    import av

    with _open_av(path) as container:
        stream = _video_stream(container, path)
        rate = float(stream.average_rate or stream.guessed_rate or 0.0)
        try:
            frame = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise DecodeError("decode_error", f"first frame does not decode: {exc}"[:300]) from None
        if frame is None:
            raise DecodeError("no_frames", "the video stream holds no decodable frame")
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
        return _rotation_of(frame), frame.width, frame.height, rate, start


def _rotation_of(frame) -> int:
    rot = getattr(frame, "rotation", 0) or 0
    return int(round(rot / 90.0)) * 90 % 360


def _display(width: int, height: int, rotation: int) -> tuple[int, int]:
    return (height, width) if rotation % 180 == 90 else (width, height)


# ---------------------------------------------------------------- decord

def _decord_message(exc: BaseException) -> str:
    """decord's first line without its '[time] /source/file.cc:123:' prefixes."""
    import re

    line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"\[[\d:]+\] \S+:\d+: ", "", line)[:200]


class _DecordFailed(Exception):
    """decord cannot do this file; PyAV is tried."""


def _decord_chunks(path: str, specs, chunk_seconds: int, info_out: list) -> Iterator[Chunk]:
    import decord

    rotation, width, height, _, stream_start = probe_video(path)
    if rotation:
        # decord 0.6 turns such frames itself but then squeezes them into the requested
        # width x height; PyAV gives coded frames and the angle, which we apply ourselves.
        raise _DecordFailed(f"rotation metadata ({rotation} degrees) is applied on the PyAV path")
    dw, dh = decode_size(width, height, specs)
    try:
        kw = {"width": dw, "height": dh} if (dw, dh) != (width, height) else {}
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1, **kw)
        n = len(vr)
        if n == 0:
            raise _DecordFailed("decord sees no frames")
        stamps = np.asarray(vr.get_frame_timestamp(np.arange(n)), dtype=np.float64).reshape(n, 2)
        fps = float(vr.get_avg_fps())
    except decord.DECORDError as exc:
        raise _DecordFailed(f"decord cannot open it: {_decord_message(exc)}") from None
    starts = stamps[:, 0]
    if not np.isfinite(stamps).all() or starts.min() < -1.0 or np.any(np.diff(starts) < 0) \
            or stamps[-1, 1] < starts[-1] or starts[-1] > 1e7:
        raise _DecordFailed("decord's frame timestamps are unusable")
    # decord counts from the stream's start time; the fps filter's rounding needs the pts themselves.
    starts = starts + stream_start
    first = float(starts[0])
    times = starts - first
    end = float(stamps[-1, 1]) + stream_start - first
    if end <= times[-1]:
        end = times[-1] + (1.0 / fps if fps > 0 else 0.0)
    width_d, height_d = _display(width, height, rotation)
    info = VideoInfo(duration=round(end, 6), fps=fps, width=width_d, height=height_d, rotation=rotation,
                     decoder="decord", frames=n, first_pts=first)
    info_out.append(info)
    n_rows = _plan_rows(info, starts, first + end, specs)
    plan = info.plans
    # Read forward only: skip_frames decodes without colour conversion or resize, next()
    # converts the frames a window needs. (get_batch is slower here even for the frames
    # we need, and plain decoding converts every frame.)
    # Frames land in one buffer per chunk: an array per frame costs more in page faults
    # than the copy itself (see _FrameCopier).
    pos, previous = 0, {}
    copier = _FrameCopier()
    for lo, hi in chunk_ranges(n_rows, chunk_seconds):
        needed = np.unique(np.concatenate([plan[s.name].needed(lo, hi) for s in specs]))
        decoded = {}
        buffer = None
        try:
            for slot, i in enumerate(needed.tolist()):
                if i in previous:  # shared with the previous chunk (padding, repeated frames)
                    decoded[i] = previous[i]
                    continue
                if i < pos:
                    vr.seek_accurate(i)
                    pos = i
                elif i > pos:
                    vr.skip_frames(i - pos)
                    pos = i
                frame = vr.next()
                if buffer is None:
                    buffer = np.empty((len(needed), *frame.shape), np.uint8)
                decoded[i] = copier(frame, buffer[slot])
                pos += 1
        except (decord.DECORDError, StopIteration) as exc:
            raise _DecordFailed(f"decord failed at second {lo}: {_decord_message(exc)}") from None
        previous = decoded
        yield windows_from(decoded, plan, lo, hi, specs)


class _FrameCopier:
    """Copies a decord frame into a given uint8 array (a row of the chunk's buffer).

    `NDArray.asnumpy()` allocates a fresh array per frame (200 kB at 298x224), and the
    page faults on it made the copies ~8% of the decord loop on a 2-minute 480x360
    video; into one buffer per chunk, which the allocator reuses, ~1-3%. decord has no
    public copy-into, so this calls the C function asnumpy itself uses; when that is
    missing (another decord version) or the frame does not match the row, asnumpy is used.
    """

    def __init__(self):
        try:
            import ctypes

            from decord._ffi.base import _LIB, check_call

            self._copy, self._check, self._ctypes = _LIB.DECORDArrayCopyToBytes, check_call, ctypes
        except (ImportError, AttributeError):
            self._copy = None

    def __call__(self, frame, row: np.ndarray) -> np.ndarray:
        if self._copy is None or tuple(frame.shape) != row.shape or frame.dtype != "uint8" \
                or not row.flags["C_CONTIGUOUS"]:
            return frame.asnumpy()
        ct = self._ctypes
        self._check(self._copy(frame.handle, row.ctypes.data_as(ct.c_void_p), ct.c_size_t(row.nbytes)))
        return row


# ---------------------------------------------------------------- PyAV (fallback)

def _pyav_chunks(path: str, specs, chunk_seconds: int, info_out: list, reason: str | None) -> Iterator[Chunk]:
    import av

    # Pass 1: demux only (no decoding) for every frame's pts, which fixes times and duration.
    with _open_av(path) as container:
        stream = _video_stream(container, path)
        tb = float(stream.time_base) if stream.time_base else None
        rate = float(stream.average_rate or stream.guessed_rate or 0.0)
        pts, durs = [], []
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size:
                    pts.append(int(packet.pts))
                    durs.append(int(packet.duration or 0))
        except av.FFmpegError as exc:
            raise DecodeError("decode_error", f"demuxing failed: {exc}"[:300]) from None
    if not pts or tb is None:
        raise DecodeError("no_frames", "the video stream holds no frames with timestamps")
    order = np.argsort(pts, kind="stable")
    pts_sorted = np.asarray(pts, dtype=np.int64)[order]
    last_dur = durs[order[-1]] * tb
    if last_dur <= 0:
        deltas = np.diff(pts_sorted) * tb
        last_dur = float(np.median(deltas)) if len(deltas) else (1.0 / rate if rate > 0 else 0.04)
    first = float(pts_sorted[0] * tb)
    times_abs = pts_sorted * tb
    duration = round(float(times_abs[-1] - first + last_dur), 6)

    rotation, width, height, _ = probe_rotation(path)
    width_d, height_d = _display(width, height, rotation)
    dw, dh = decode_size(width_d, height_d, specs)
    info = VideoInfo(duration=duration, fps=rate or (len(times_abs) / duration if duration else 0.0), width=width_d,
                     height=height_d, rotation=rotation, decoder="pyav", frames=len(times_abs), first_pts=first,
                     fallback_reason=reason)
    info_out.append(info)
    n_rows = _plan_rows(info, times_abs, float(times_abs[-1] + last_dur), specs)
    plan = info.plans
    ranges = chunk_ranges(n_rows, chunk_seconds)
    # For each needed frame, the last chunk that needs it: frames are kept until then.
    last_user: dict[int, int] = {}
    chunk_max = []
    for c, (lo, hi) in enumerate(ranges):
        needed = np.unique(np.concatenate([plan[s.name].needed(lo, hi) for s in specs]))
        for i in needed:
            last_user[int(i)] = c
        chunk_max.append(int(needed.max()))

    kept: dict[int, np.ndarray] = {}
    c = 0
    with _open_av(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        scaler = _Scaler(stream, rotation, dw, dh)
        try:
            for n, frame in enumerate(container.decode(stream)):
                # The decoder gives frames in presentation order: the n-th is the n-th pts.
                # (Its pts labels cannot be trusted: in AVI they are the packets' own and
                # arrive reordered, 1, 2, 4, 3, ...)
                i = min(n, len(times_abs) - 1)
                if i in last_user and i not in kept:
                    kept[i] = scaler(frame)
                while c < len(ranges) and i >= chunk_max[c]:
                    yield _emit(kept, plan, ranges[c], specs)
                    newest = max(kept) if kept else None
                    kept = {k: v for k, v in kept.items() if last_user[k] > c or k == newest}
                    c += 1
        except av.FFmpegError as exc:
            raise DecodeError("decode_error", f"decoding failed near frame {len(kept)}: {exc}"[:300]
                              + (f" (decord: {reason})" if reason else "")) from None
    if c < len(ranges) and not kept:
        raise DecodeError("no_frames", "no frame of the video stream decoded")
    while c < len(ranges):  # frames lost at the end: their windows repeat the last kept frame
        yield _emit(kept, plan, ranges[c], specs)
        c += 1


# FFmpeg filters that turn a frame upright, by our rotation (degrees counter-clockwise).
_UPRIGHT = {90: (("transpose", "cclock"),), 180: (("hflip", ""), ("vflip", "")), 270: (("transpose", "clock"),)}


class _Scaler:
    """Decoded PyAV frames -> upright rgb24 arrays at the decode size, through FFmpeg's own filters.

    ``[transpose | hflip,vflip] -> scale=W:H:flags=bilinear -> format=rgb24``: the chain the
    released S3D features were made with (and what decord's resize gives), so both decoders
    hand the recipes the same bytes. PyAV's ``to_ndarray(width=, height=)`` goes through
    another swscale setup and differs by about 0.2/255 on average. Frames are filtered one
    at a time (scale keeps no state between frames), only those some row needs.
    """

    def __init__(self, stream, rotation: int, width: int, height: int):
        import av

        self.graph = graph = av.filter.Graph()
        chain = [graph.add_buffer(template=stream)]
        for name, arg in _UPRIGHT.get(rotation, ()):
            chain.append(graph.add(name, arg) if arg else graph.add(name))
        chain += [graph.add("scale", f"{width}:{height}:flags=bilinear"), graph.add("format", "rgb24"),
                  graph.add("buffersink")]
        for a, b in zip(chain, chain[1:]):
            a.link_to(b)
        graph.configure()

    def __call__(self, frame) -> np.ndarray:
        self.graph.push(frame)
        return self.graph.pull().to_ndarray()


def _emit(kept: dict, plan: dict, rng: tuple[int, int], specs) -> Chunk:
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


# ---------------------------------------------------------------- entry point

class DecodedVideo:
    """One video's windows for `specs`: `.chunks()` yields Chunks; `.info` is set once known.

    Recipes that read different frames (features.frames.decode_groups: the shared 224 decode,
    the IG65M port's full-size frames) are decoded in one pass each, one after the other; a
    chunk holds the rows of one pass's recipes. A None item means decord failed after
    yielding chunks and PyAV begins again from the first row of every recipe: a consumer
    then drops what it received before.
    """

    def __init__(self, path: str, specs: Sequence[BackboneSpec], chunk_seconds: int = DEFAULT_CHUNK_SECONDS,
                 use_decord: bool = True):
        self.path, self.specs, self.chunk_seconds, self.use_decord = str(path), list(specs), chunk_seconds, use_decord
        self.info: VideoInfo | None = None

    def _rows_per_chunk(self, group) -> int:
        # Full-size frames (1080p: 6 MB each) are held one 32-frame row at a time.
        return 1 if any(s.scaler == "torch_bilinear_float" for s in group) else self.chunk_seconds

    def _merge(self, infos: list) -> None:
        if infos:
            info = infos[0]
            for other in infos[1:]:
                info.plans = {**info.plans, **other.plans}
            self.info = info

    def _passes(self, decoder, infos_done: list, reason=None) -> Iterator[Chunk]:
        for group in decode_groups(self.specs):
            infos: list = []
            try:
                if decoder == "decord":
                    yield from _decord_chunks(self.path, group, self._rows_per_chunk(group), infos)
                else:
                    yield from _pyav_chunks(self.path, group, self._rows_per_chunk(group), infos, reason)
            finally:
                if infos:
                    infos_done.append(infos[-1])
                    self._merge(infos_done)

    def chunks(self) -> Iterator[Chunk | None]:
        """Chunks in row order per pass. A None item means: forget the chunks so far, decoding restarts."""
        check_file(self.path)
        reason = None
        if self.use_decord:
            yielded = False
            try:
                for chunk in self._passes("decord", []):
                    yielded = True
                    yield chunk
                return
            except _DecordFailed as exc:
                reason = str(exc)
                log.info("%s: %s; decoding with PyAV", os.path.basename(self.path), reason)
                self.info = None
                if yielded:
                    yield None
        else:
            reason = "decord not used"
        yield from self._passes("pyav", [], reason)


def decode_all(path: str, specs: Sequence[BackboneSpec], chunk_seconds: int = DEFAULT_CHUNK_SECONDS,
               use_decord: bool = True):
    """(VideoInfo, {backbone: uint8 [N, 3, T, H, W]}) for a whole video; for tests and short clips."""
    import torch

    video = DecodedVideo(path, specs, chunk_seconds, use_decord)
    parts: list[Chunk] = []
    for chunk in video.chunks():
        if chunk is None:
            parts = []
        else:
            parts.append(chunk)
    return video.info, {s.name: torch.cat([c.windows[s.name] for c in parts if s.name in c.windows]) for s in specs}
