"""torchcodec: frames decoded by torchcodec's ``VideoDecoder``, on the CPU or on a GPU's NVDEC.

Chosen only by ``--decoder torchcodec``, never by default, because its frames are not FFmpeg's
chain: torchcodec converts each frame to RGB and resizes after that (its ``Resize`` decoder
transform, bilinear with antialiasing), where the ffmpeg command line scales in YUV with swscale's
bilinear. On the real fixtures no frame is byte-equal to the command line's; the mean absolute
difference is about 0.9-1.2 (of 255) per value (``tests/features/test_decoders.py`` measures it;
``bench/extract.py`` and ``bench/gpu_extract.sh`` print it with the row differences).

What is the same as on the exact paths: the frame plan. Frame times, where the stream ends and the
container's start come from PyAV's demuxer (``demux_times``), so the rows per recipe equal the
command line's count whichever decoder runs; torchcodec only supplies the pixels of the frames
the plan picks, by index in presentation order (its exact seek mode scans the file for them).

On a GPU (``device="cuda:N"``) torchcodec decodes on NVDEC and may fall back to the CPU on its own
when NVDEC cannot take a stream (``VideoDecoder.cpu_fallback``). A fallback is never silent here:
it is checked when the decoder opens and after the first frames, and the video is then decoded on
the PyAV path with the reason recorded (``decoder_note``), as any failure of this path is.
Frames decoded on the GPU are copied to host memory for windowing, so a chunk is the same object
whichever decoder made it.

Bounds: the probe (``probe_video``) refuses a declared or first frame over the limits; torchcodec
has no ``max_pixels``, so a stream that grows part way is stopped by the executor's memory budget,
as on the decord path. Rotated videos take the PyAV path (its FFmpeg filters turn them upright), and so
do AVI files, whose frames torchcodec orders by pts that AVI does not store.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from features.decode_pyav import demux_times, display_size, probe_video
from features.frames import Chunk, chunk_ranges, decode_size, windows_from
from features.video import DecoderFailed, VideoInfo, VideoLimits, plan_rows


def _message(exc: BaseException) -> str:
    """torchcodec's first line, without its source location prefix."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split(".cpp:", 1)[-1].split(", ", 1)[-1][:200] if ".cpp:" in text else text[:200]


def _is_avi(path: str, limits: VideoLimits) -> bool:
    from features.decode_pyav import _open_av

    with _open_av(path, limits) as container:
        return "avi" in container.format.name.split(",")


def decoder_name(device: str) -> str:
    """The ``decoder`` recorded per row: "torchcodec" on the CPU, "torchcodec-cuda" on NVDEC."""
    return "torchcodec" if device == "cpu" else "torchcodec-cuda"


def _open(path: str, device: str, size: tuple[int, int], coded: tuple[int, int]):
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    transforms = [Resize(size)] if size != coded else None
    try:
        decoder = VideoDecoder(path, device=device, dimension_order="NHWC", seek_mode="exact", transforms=transforms)
    except (RuntimeError, ValueError) as exc:
        raise DecoderFailed(f"torchcodec cannot open it: {_message(exc)}") from None
    _check_fallback(decoder, device)
    return decoder


def _check_fallback(decoder, device: str) -> None:
    if device != "cpu" and decoder.cpu_fallback:
        raise DecoderFailed(f"torchcodec would decode it on the CPU, not on {device}: {decoder.cpu_fallback}")


def torchcodec_chunks(path: str, specs, chunk_seconds: int, info_out: list, limits: VideoLimits,
                      device: str = "cpu") -> Iterator[Chunk]:
    """Chunks of windows of `specs` from torchcodec's frames; ``DecoderFailed`` where PyAV must take over."""
    rotation, width, height, _, _ = probe_video(path, limits)  # sizes over `limits` end here
    if rotation:
        raise DecoderFailed(f"rotation metadata ({rotation} degrees) is applied on the PyAV path")
    if _is_avi(path, limits):
        # torchcodec orders frames by the demuxer's pts, which AVI does not store (its guesses come
        # reordered): on mmaction2_test.avi a third of the frames were a neighbour's.
        raise DecoderFailed("AVI stores no presentation times; frames are ordered on the PyAV path")
    times_abs, end_abs, rate, origin = demux_times(path, limits)
    first = float(times_abs[0])
    width_d, height_d = display_size(width, height, rotation)
    info = VideoInfo(duration=round(float(end_abs - first), 6), fps=rate, width=width_d, height=height_d,
                     rotation=rotation, decoder=decoder_name(device), frames=len(times_abs), first_pts=first)
    info_out.append(info)
    n_rows = plan_rows(info, times_abs, end_abs, specs, limits, origin)  # bounded before torchcodec scans the file
    dw, dh = decode_size(width, height, specs)
    decoder = _open(path, device, (dh, dw), (height, width))
    if len(decoder) != len(times_abs):
        raise DecoderFailed(f"torchcodec counts {len(decoder)} frames where the demuxer has {len(times_abs)}")
    plan = info.plans
    previous: dict = {}
    for c, (lo, hi) in enumerate(chunk_ranges(n_rows, chunk_seconds)):
        needed = np.unique(np.concatenate([plan[s.name].needed(lo, hi) for s in specs])).tolist()
        fresh = [i for i in needed if i not in previous]
        decoded = {i: previous[i] for i in needed if i in previous}
        if fresh:
            try:
                frames = decoder.get_frames_at(fresh).data
            except (RuntimeError, IndexError, ValueError) as exc:
                raise DecoderFailed(f"torchcodec failed at second {lo}: {_message(exc)}") from None
            if c == 0:
                _check_fallback(decoder, device)
            frames = frames.cpu().numpy()
            decoded.update(zip(fresh, frames))
        previous = decoded
        yield windows_from(decoded, plan, lo, hi, specs)
