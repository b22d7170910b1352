"""Decode a video once into every recipe's feature rows (model windows), in bounded memory.

What the rows are is data in shards.feature_spec (one recipe per backbone); this module only
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
packet's duration, read by PyAV's demuxer for both decoders: where the ffmpeg command line
ends the stream) minus the first frame's pts; a container duration is not used, since it is
often missing (WebM) or stretched by a longer audio track.

Size: frames are decoded once at the size the recipes share (features.frames.decode_size:
short side 224, long side truncated, FFmpeg's swscale bilinear, up or down), which is the
released S3D recipe's own resize, so its crop is a copy; R(2+1)D resizes from there.

Decoders (``--decoder``, DECODERS): all three follow the same frame plan (the demuxer's times,
features.frames.frame_plan), so each gives the command line's row count.
- ``decord`` (the default, the fastest exact one per CPU-second, see DEFAULT_DECODER): converts only the
  frames some window needs (reading forward, skipping the others without colour conversion, a chunk of a
  few seconds at a time), resized at decode time by FFmpeg's swscale bilinear.
- ``pyav``: decodes sequentially, keeping only the frames some row needs, turned upright and resized by
  FFmpeg's own filters (``features.decode_pyav._Scaler``): the same bytes as decord
  (tests/features/test_s3d_released.py holds both to the ffmpeg command line's frames).
- ``torchcodec``: on the CPU or a GPU's NVDEC (``device``), not byte-exact (features/decode_torchcodec.py).
When the chosen decoder cannot open the file, reports unusable timestamps (decord returns garbage
for some AVI files), meets a rotated video, would fall back to the CPU unasked, or fails part way,
the whole video is decoded again with PyAV, and the reason is recorded (``decoder_note``).

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

Bounds (``features.video.VideoLimits``): the PyAV probe both decoders start from refuses a
frame size over the limits, declared or decoded (``too_large``), and rows are planned only for
a video within ``--max-video-seconds`` and ``--max-frame-gap`` (``too_long``, ``frame_gap``),
both checked on the frame times before any row exists. decord's timestamps are not trusted to
refuse a video: PyAV re-reads them and decides. A stream that changes to a larger size part way
through is refused inside FFmpeg on the PyAV path (``max_pixels``); decord exposes no such
bound, so there the executor's memory budget is what stops it.

Failures are values: `DecodeError(status, message)` with status `no_video` (file gone),
`empty_file`, `no_video_stream`, `no_frames`, `too_short`, `too_long`, `frame_gap`, `too_large`
or `decode_error`; a bug still raises anything else.
"""

from __future__ import annotations

import logging
import os
from typing import Iterator, Sequence

import numpy as np

from features.decode_pyav import demux_times, display_size, probe_video, pyav_chunks
from features.frames import Chunk, chunk_ranges, decode_groups, decode_size, windows_from
from features.video import DecodeError, DecoderFailed, VideoInfo, VideoLimits, check_file, plan_rows
from shards.feature_spec import BackboneSpec

log = logging.getLogger("mmp.decode")

# Seconds of windows decoded and handed on at a time: bounds memory whatever the length.
DEFAULT_CHUNK_SECONDS = 4

# --decoder: pyav and decord give the ffmpeg command line's frames byte for byte; torchcodec does not
# (features/decode_torchcodec.py). The default is the fastest exact one per CPU-second on H.264 at
# YouTube's sizes, as bench/extract.py (bench/decoders.py) measures it: decord, 1.04-1.09x pyav over
# 1-minute clips at 640x360, 854x480 and the real 480x360 (pyav ahead by up to 9% on the two smaller,
# decord by 12-24% on 854x480; pyav 1.2-1.4x faster per wall-second of one video, by FFmpeg's frame
# threads). At scale every core decodes some video, so CPU-seconds are what a run costs.
DECODERS = ("pyav", "decord", "torchcodec")
DEFAULT_DECODER = "decord"

# ---------------------------------------------------------------- decord

def _decord_message(exc: BaseException) -> str:
    """decord's first line without its '[time] /source/file.cc:123:' prefixes."""
    import re

    line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"\[[\d:]+\] \S+:\d+: ", "", line)[:200]


def _decord_chunks(path: str, specs, chunk_seconds: int, info_out: list, limits: VideoLimits) -> Iterator[Chunk]:
    import decord

    rotation, width, height, _, stream_start = probe_video(path, limits)  # sizes over `limits` end here
    if rotation:
        # decord 0.6 turns such frames itself but then squeezes them into the requested
        # width x height; PyAV gives coded frames and the angle, which we apply ourselves.
        raise DecoderFailed(f"rotation metadata ({rotation} degrees) is applied on the PyAV path")
    dw, dh = decode_size(width, height, specs)
    try:
        kw = {"width": dw, "height": dh} if (dw, dh) != (width, height) else {}
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1, **kw)
        n = len(vr)
        if n == 0:
            raise DecoderFailed("decord sees no frames")
        stamps = np.asarray(vr.get_frame_timestamp(np.arange(n)), dtype=np.float64).reshape(n, 2)
        fps = float(vr.get_avg_fps())
    except decord.DECORDError as exc:
        raise DecoderFailed(f"decord cannot open it: {_decord_message(exc)}") from None
    starts = stamps[:, 0]
    if not np.isfinite(stamps).all() or starts.min() < -1.0 or np.any(np.diff(starts) < 0) \
            or stamps[-1, 1] < starts[-1] or starts[-1] > 1e7:
        raise DecoderFailed("decord's frame timestamps are unusable")
    # decord counts from the stream's start time; the fps filter's rounding needs the pts themselves.
    starts = starts + stream_start
    # The frame times and where the stream ends are the demuxer's, as on the PyAV path and the
    # ffmpeg command line (the same pts, but in AVI the command line's dts-based times): decord
    # ends each frame one period of the stream's guessed rate (r_frame_rate) after its start,
    # which in a VFR MP4 with B-frames (guessed 100 fps) cut the last frame short and the fps
    # filter's output by one frame or more.
    demux_starts, demux_end, _, origin = demux_times(path, limits)
    if len(demux_starts) == n:
        starts = np.asarray(demux_starts, dtype=np.float64)
    first = float(starts[0])
    times = starts - first
    end = demux_end - first
    if end <= times[-1]:  # the demuxer and decord disagree on the frames: decord's own end
        end = float(stamps[-1, 1]) + stream_start - first
    if end <= times[-1]:
        end = times[-1] + (1.0 / fps if fps > 0 else 0.0)
    width_d, height_d = display_size(width, height, rotation)
    info = VideoInfo(duration=round(end, 6), fps=fps, width=width_d, height=height_d, rotation=rotation,
                     decoder="decord", frames=n, first_pts=first)
    info_out.append(info)
    try:
        n_rows = plan_rows(info, starts, first + end, specs, limits, origin)
    except DecodeError as exc:
        if exc.status in ("too_long", "frame_gap"):  # decord's timestamps are wrong for some files: PyAV judges
            raise DecoderFailed(f"decord's timestamps say {exc.message}") from None
        raise
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
            raise DecoderFailed(f"decord failed at second {lo}: {_decord_message(exc)}") from None
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


# ---------------------------------------------------------------- entry point

class DecodedVideo:
    """One video's windows for `specs`: `.chunks()` yields Chunks; `.info` is set once known.

    `decoder` is one of DECODERS; `device` is where torchcodec decodes ("cpu", "cuda:N"; the
    other decoders run on the CPU). Recipes that read different frames (features.frames.decode_groups:
    the shared 224 decode, the IG65M port's full-size frames) are decoded in one pass each, one after
    the other; a chunk holds the rows of one pass's recipes. A None item means the chosen decoder failed
    after yielding chunks and PyAV begins again from the first row of every recipe: a consumer then
    drops what it received before.
    """

    def __init__(self, path: str, specs: Sequence[BackboneSpec], chunk_seconds: int = DEFAULT_CHUNK_SECONDS,
                 decoder: str = DEFAULT_DECODER, limits: VideoLimits = VideoLimits(), device: str = "cpu"):
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, not {decoder!r}")
        self.path, self.specs, self.chunk_seconds, self.decoder = str(path), list(specs), chunk_seconds, decoder
        self.limits, self.device = limits, device
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
            per_chunk = self._rows_per_chunk(group)
            try:
                if decoder == "decord":
                    yield from _decord_chunks(self.path, group, per_chunk, infos, self.limits)
                elif decoder == "torchcodec":
                    from features.decode_torchcodec import torchcodec_chunks

                    yield from torchcodec_chunks(self.path, group, per_chunk, infos, self.limits, self.device)
                else:
                    yield from pyav_chunks(self.path, group, per_chunk, infos, reason, self.limits)
            finally:
                if infos:
                    infos_done.append(infos[-1])
                    self._merge(infos_done)

    def chunks(self) -> Iterator[Chunk | None]:
        """Chunks in row order per pass. A None item means: forget the chunks so far, decoding restarts."""
        check_file(self.path)
        reason = None
        if self.decoder != "pyav":
            yielded = False
            try:
                for chunk in self._passes(self.decoder, []):
                    yielded = True
                    yield chunk
                return
            except DecoderFailed as exc:
                reason = str(exc)
                log.info("%s: %s; decoding with PyAV", os.path.basename(self.path), reason)
                self.info = None
                if yielded:
                    yield None
        yield from self._passes("pyav", [], reason)


def decode_all(path: str, specs: Sequence[BackboneSpec], chunk_seconds: int = DEFAULT_CHUNK_SECONDS,
               decoder: str = DEFAULT_DECODER, limits: VideoLimits = VideoLimits(), device: str = "cpu"):
    """(VideoInfo, {backbone: uint8 [N, 3, T, H, W]}) for a whole video; for tests and short clips."""
    import torch

    video = DecodedVideo(path, specs, chunk_seconds, decoder, limits, device)
    parts: list[Chunk] = []
    for chunk in video.chunks():
        if chunk is None:
            parts = []
        else:
            parts.append(chunk)
    return video.info, {s.name: torch.cat([c.windows[s.name] for c in parts if s.name in c.windows]) for s in specs}
