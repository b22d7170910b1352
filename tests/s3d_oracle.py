"""FFmpeg's own chain for the released S3D recipe, run through PyAV's filter graph: the oracle.

``[transpose | hflip,vflip] -> fps=16 -> scale=W:H:flags=bilinear -> crop=224:224:X:Y ->
format=rgb24``, with W x H and X, Y from the extractor's arithmetic on the upright size. The
n-th decoded frame is given the n-th smallest packet pts before it enters the graph: decoders
hand frames over in presentation order, but AVI labels them with its packets' reordered pts.
In AVI (which stores no presentation times) a frame is given what FFmpeg's command line gives
it: the dts of the packet whose decoding gave it out, the frames flushed at the end one packet
duration apart.
"""
from __future__ import annotations

import av
import numpy as np

from shards.feature_spec import S3D, crop_offsets, resized_size

_UPRIGHT = {90: [("transpose", "cclock")], 180: [("hflip", None), ("vflip", None)], 270: [("transpose", "clock")]}


def _drain(graph, out: list) -> None:
    while True:
        try:
            out.append(graph.pull().to_ndarray())
        except (av.error.BlockingIOError, av.error.EOFError):
            return


def ffmpeg_s3d_frames(path: str) -> np.ndarray:
    """uint8 [F, 224, 224, 3]: every frame FFmpeg's chain outputs, before any chunking."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        avi = "avi" in container.format.name.split(",")
        packets = [p for p in container.demux(stream) if p.size and p.pts is not None]
        pts = sorted(p.pts for p in packets)
        step = packets[-1].duration or 1 if packets else 1
    frames: list = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        graph = None
        previous = None
        for n, frame in enumerate(container.decode(stream)):
            if avi:
                frame.pts = frame.dts if frame.dts is not None else previous + step
                previous = frame.pts
            elif n < len(pts):
                frame.pts = pts[n]
            if graph is None:
                rotation = int(round((frame.rotation or 0) / 90.0)) * 90 % 360
                w, h = (frame.height, frame.width) if rotation % 180 == 90 else (frame.width, frame.height)
                W, H = resized_size(w, h, S3D)
                top, left = crop_offsets(W, H, S3D)
                graph = av.filter.Graph()
                chain = [graph.add_buffer(template=stream)]
                chain += [graph.add(name, arg) if arg else graph.add(name) for name, arg in _UPRIGHT.get(rotation, [])]
                chain += [graph.add("fps", "16"), graph.add("scale", f"{W}:{H}:flags=bilinear"),
                          graph.add("crop", f"224:224:{left}:{top}"), graph.add("format", "rgb24"),
                          graph.add("buffersink")]
                for a, b in zip(chain, chain[1:]):
                    a.link_to(b)
                graph.configure()
            graph.push(frame)
            _drain(graph, frames)
        if graph is not None:
            graph.push(None)
            _drain(graph, frames)
    return np.stack(frames) if frames else np.zeros((0, 224, 224, 3), np.uint8)


def cli_s3d_frames(path: str) -> np.ndarray:
    """uint8 [F, 224, 224, 3]: what the ffmpeg command line itself (imageio-ffmpeg's binary) writes for
    ``-vf fps=16,scale=W:H:flags=bilinear,crop=224:224:X:Y`` to rawvideo rgb24: it turns frames
    upright itself, counts time from the file's start, and repeats a first frame that comes after it."""
    import subprocess

    import imageio_ffmpeg

    with av.open(path) as container:
        frame = next(container.decode(video=0))
        rotation = int(round((frame.rotation or 0) / 90.0)) * 90 % 360
        w, h = (frame.height, frame.width) if rotation % 180 == 90 else (frame.width, frame.height)
    W, H = resized_size(w, h, S3D)
    top, left = crop_offsets(W, H, S3D)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", path, "-an", "-sn", "-vf",
           f"fps=16,scale={W}:{H}:flags=bilinear,crop=224:224:{left}:{top}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, 224, 224, 3)
