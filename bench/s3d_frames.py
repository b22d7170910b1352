"""Which frames the released HowTo100M S3D features saw, and whether decord can give the same.

    python bench/s3d_frames.py [VIDEO ...]   (default: $MMP_REAL_FIXTURES/video/*)

The released features were made with FFmpeg's chain ``fps=16, scale=W:H:flags=bilinear,
crop=224:224:X:Y, format=rgb24`` with W x H the source scaled so its short side is 224
and the long side truncated (``int(w * 224 / h)``) and X, Y = ``int((W - 224) / 2)``,
``int((H - 224) / 2)``. This runs that chain through PyAV's filter graph (FFmpeg's own
filters) as the oracle, and beside it decord decoding at W x H with the fps filter's
frame choice done as index arithmetic on decord's timestamps: output slot n (counted
from n0 = round(16 * first pts)) shows the last frame whose time is before
(n + 0.5) / 16 (the filter rounds each input pts to the nearest output tick). It prints,
per video, how many of the oracle's frames are equal byte for byte, and the rows the
released chunk rule gives (full 16-frame chunks; a remainder is dropped).
Target: every frame equal.
"""
from __future__ import annotations

import glob
import os
import sys

import numpy as np


def truncated_size(w: int, h: int, short: int = 224) -> tuple[int, int]:
    return (int(w * short / h), short) if w >= h else (short, int(h * short / w))


def oracle_frames(path: str) -> tuple[np.ndarray, tuple]:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        W, H = truncated_size(stream.codec_context.width, stream.codec_context.height)
        X, Y = (W - 224) // 2, (H - 224) // 2
        graph = av.filter.Graph()
        chain = [graph.add_buffer(template=stream), graph.add("fps", "16"),
                 graph.add("scale", f"{W}:{H}:flags=bilinear"), graph.add("crop", f"224:224:{X}:{Y}"),
                 graph.add("format", "rgb24"), graph.add("buffersink")]
        for a, b in zip(chain, chain[1:]):
            a.link_to(b)
        graph.configure()
        out = []

        def drain():
            while True:
                try:
                    out.append(graph.pull().to_ndarray())
                except (av.error.BlockingIOError, av.error.EOFError):
                    return

        for frame in container.decode(stream):
            graph.push(frame)
            drain()
        graph.push(None)
        drain()
    return np.stack(out) if out else np.zeros((0, 224, 224, 3), np.uint8), (W, H, X, Y)


def decord_frames(path: str, n_out: int, geometry: tuple) -> np.ndarray:
    import decord

    W, H, X, Y = geometry
    vr = decord.VideoReader(path, width=W, height=H)
    ts = np.array([vr.get_frame_timestamp(i)[0] for i in range(len(vr))])
    n0 = int(np.floor(ts[0] * 16 + 0.5))
    slots = (np.arange(n0, n0 + n_out) + 0.5) / 16
    idx = np.clip(np.searchsorted(ts, slots, side="left") - 1, 0, len(ts) - 1)
    return vr.get_batch(idx.tolist()).asnumpy()[:, Y:Y + 224, X:X + 224]


def main(argv) -> int:
    paths = argv or sorted(p for p in glob.glob(os.path.join(os.environ.get("MMP_REAL_FIXTURES", ""), "video", "*"))
                           if not p.endswith((".md", ".txt", ".tsv")))
    if not paths:
        print("no videos: give paths or set MMP_REAL_FIXTURES", file=sys.stderr)
        return 2
    print(f"{'video':40s} {'W x H':>9s} {'X':>4s} {'oracle':>7s} {'equal':>7s} {'mean |diff|':>11s} {'rows':>5s}")
    for path in paths:
        name = os.path.basename(path)
        try:
            oracle, geometry = oracle_frames(path)
            ours = decord_frames(path, len(oracle), geometry)
        except Exception as exc:  # a fixture either decoder refuses: say which and go on
            print(f"{name:40s} failed: {type(exc).__name__}: {str(exc)[:80]}")
            continue
        equal = sum(bool((a == b).all()) for a, b in zip(ours, oracle))
        diff = float(np.abs(ours.astype(np.int16) - oracle.astype(np.int16)).mean()) if len(oracle) else 0.0
        W, H, X, _ = geometry
        print(f"{name:40s} {W:4d}x{H:<4d} {X:4d} {len(oracle):7d} {equal:7d} {diff:11.3f} {len(oracle) // 16:5d}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
