"""PyAV: probing a file (rotation, coded size, frame rate, start time) and the fallback decoder.

The fallback reads every packet's pts first (demux only), then decodes sequentially,
keeping only the frames some row needs, turned upright and resized by FFmpeg's own
filters (``_Scaler``), so it hands the recipes the same bytes as decord.

Frame sizes are bounded inside FFmpeg: every decoder here, FFmpeg's own probing at open
included, gets ``max_pixels`` (``--max-video-pixels``), so a stream that declares 16x16 and
decodes 16000x16000 is refused before the frame is allocated; FFmpeg reports that as an
invalid argument, which is recorded as ``too_large``. A size the stream declares is checked
before its first frame is decoded.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from features.frames import Chunk, chunk_ranges, decode_size
from features.video import DecodeError, VideoInfo, VideoLimits, emit_chunk, plan_rows


def _open_av(path: str, limits: VideoLimits):
    import av

    try:
        # FFmpeg's probe decodes a frame itself when the container says too little (a PNG track).
        return av.open(path, options=_max_pixels(limits))
    except av.FFmpegError as exc:
        raise DecodeError("decode_error", f"not a readable media file ({exc.__class__.__name__}: {exc})"[:300]) from None


def _max_pixels(limits: VideoLimits) -> dict:
    return {"max_pixels": str(int(limits.max_video_pixels))}


def _video_stream(container, limits: VideoLimits):
    """The first video stream, its declared size checked, its decoder bounded to --max-video-pixels."""
    streams = list(container.streams.video)
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise DecodeError("no_video_stream", f"no video stream (streams: {', '.join(kinds)})")
    stream = streams[0]
    if stream.codec_context is None:  # PyAV found no decoder for it
        raise DecodeError("decode_error", "no decoder for the video stream's codec in this FFmpeg")
    limits.check_size(stream.codec_context.width, stream.codec_context.height)
    stream.codec_context.options = _max_pixels(limits)
    return stream


def _decode_failed(exc, where: str, limits: VideoLimits, note: str = "") -> DecodeError:
    import av

    if isinstance(exc, av.error.ArgumentError):  # what a decoder over max_pixels raises
        return DecodeError("too_large", f"a frame larger than --max-video-pixels {limits.max_video_pixels} was "
                           f"refused ({where}: {exc})"[:300] + note)
    return DecodeError("decode_error", f"{where}: {exc}"[:300] + note)


def probe_rotation(path: str, limits: VideoLimits) -> tuple[int, int, int, float]:
    """(rotation, coded width, coded height, average fps) from PyAV; rotation from the first frame."""
    rotation, width, height, rate, _ = probe_video(path, limits)
    return rotation, width, height, rate


def probe_video(path: str, limits: VideoLimits) -> tuple[int, int, int, float, float]:
    """probe_rotation's facts and the stream's start time in seconds (0 when it has none); a frame
    over `limits` is a DecodeError ``too_large``, declared or decoded."""
    import av

    with _open_av(path, limits) as container:
        stream = _video_stream(container, limits)
        rate = float(stream.average_rate or stream.guessed_rate or 0.0)
        try:
            frame = next(container.decode(stream), None)
        except av.FFmpegError as exc:
            raise _decode_failed(exc, "first frame does not decode", limits) from None
        if frame is None:
            raise DecodeError("no_frames", "the video stream holds no decodable frame")
        limits.check_size(frame.width, frame.height)
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
        return _rotation_of(frame), frame.width, frame.height, rate, start


def _rotation_of(frame) -> int:
    rot = getattr(frame, "rotation", 0) or 0
    return int(round(rot / 90.0)) * 90 % 360


def display_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    return (height, width) if rotation % 180 == 90 else (width, height)


def demux_times(path: str, limits: VideoLimits) -> tuple[np.ndarray, float, float, tuple[float, bool]]:
    """(every frame's pts in seconds, sorted; where the last frame ends; average fps; (the file's
    start time in seconds, whether it holds more than one stream)) from the packets alone (AVI: the command line's dts-based times, which decode one frame, _avi_times).
    The end is the last pts plus that packet's duration (the median
    pts step when the container gives none): where the ffmpeg command line ends the stream, which
    a stream or container duration is not (an MP4 with B-frames declares less, WebM none).
    The file's start time is the earliest of its streams' (an audio track may start first), which the
    command line subtracts from every timestamp before its filters (0 when the file declares none);
    with more than one stream its rawvideo output repeats a first frame that comes after that start."""
    import av

    with _open_av(path, limits) as container:
        stream = _video_stream(container, limits)
        tb = float(stream.time_base) if stream.time_base else None
        rate = float(stream.average_rate or stream.guessed_rate or 0.0)
        avi = "avi" in container.format.name.split(",")
        origin = (container.start_time / 1e6 if container.start_time is not None else 0.0,
                  len(container.streams) > 1)
        pts, durs, dts = [], [], []
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size:
                    pts.append(int(packet.pts))
                    durs.append(int(packet.duration or 0))
                    dts.append(packet.dts)
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
    if avi and None not in dts and np.all(np.diff(dts) > 0):
        times_abs = _avi_times(path, limits, np.asarray(dts, dtype=np.int64), durs[-1]) * tb
    else:
        times_abs = pts_sorted * tb
    return times_abs, float(times_abs[-1] + last_dur), rate, origin


def _avi_times(path: str, limits: VideoLimits, dts: np.ndarray, last_dur: int) -> np.ndarray:
    """The n-th decoded frame's time in an AVI (time-base units), as the ffmpeg command line has it.

    AVI stores no presentation times: the demuxer's pts are a guess (the dts plus one for H.264,
    whatever its reordering). The command line times each frame by the dts of the packet whose
    decoding gave it out, that is the n-th frame by the (n + delay)-th dts, where the delay is
    the decoder's reordering depth (the first frame's dts less the first packet's); the frames
    flushed at the end follow the last dts one packet duration apart.
    """
    import av

    delay = 0
    with _open_av(path, limits) as container:
        stream = _video_stream(container, limits)
        try:
            frame = next(container.decode(stream), None)
        except av.FFmpegError:
            frame = None
        if frame is not None and frame.dts is not None:
            delay = max(0, int(np.searchsorted(dts, frame.dts)))
    step = max(int(last_dur), 1)
    n = len(dts)
    extended = np.concatenate([dts, dts[-1] + step * np.arange(1, delay + 1, dtype=np.int64)])
    return extended[delay:delay + n]


def pyav_chunks(path: str, specs, chunk_seconds: int, info_out: list, reason: str | None,
                limits: VideoLimits) -> Iterator[Chunk]:
    import av

    # Pass 1: demux only (no decoding) for every frame's pts, which fixes times and duration.
    times_abs, end_abs, rate, origin = demux_times(path, limits)
    first = float(times_abs[0])
    duration = round(float(end_abs - first), 6)

    rotation, width, height, _ = probe_rotation(path, limits)
    width_d, height_d = display_size(width, height, rotation)
    dw, dh = decode_size(width_d, height_d, specs)
    info = VideoInfo(duration=duration, fps=rate or (len(times_abs) / duration if duration else 0.0), width=width_d,
                     height=height_d, rotation=rotation, decoder="pyav", frames=len(times_abs), first_pts=first,
                     fallback_reason=reason)
    info_out.append(info)
    n_rows = plan_rows(info, times_abs, end_abs, specs, limits, origin)
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
    with _open_av(path, limits) as container:
        stream = _video_stream(container, limits)
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
                    yield emit_chunk(kept, plan, ranges[c], specs)
                    newest = max(kept) if kept else None
                    kept = {k: v for k, v in kept.items() if last_user[k] > c or k == newest}
                    c += 1
        except av.FFmpegError as exc:
            raise _decode_failed(exc, f"decoding failed near frame {len(kept)}", limits,
                                 f" (decord: {reason})" if reason else "") from None
    if c < len(ranges) and not kept:
        raise DecodeError("no_frames", "no frame of the video stream decoded")
    while c < len(ranges):  # frames lost at the end: their windows repeat the last kept frame
        yield emit_chunk(kept, plan, ranges[c], specs)
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
