"""The pipeline's own S3D frames (s3d=released) against FFmpeg's chain, per video and decoder.

    python bench/s3d_frames.py [VIDEO ...]   (default: $MMP_REAL_FIXTURES/video/*)

The released HowTo100M S3D features were made with FFmpeg's chain ``fps=16,
scale=W:H:flags=bilinear, crop=224:224:X:Y, format=rgb24``, W x H the upright source
scaled so its short side is 224 with the long side truncated (``int(w * 224 / h)``), X, Y
= ``int((W - 224) / 2)``, ``int((H - 224) / 2)``. The oracle is that chain run by the ffmpeg
command line itself (imageio-ffmpeg's binary; tests/s3d_oracle.py ``cli_s3d_frames``, as the tests use).
Beside it, the frames the extraction stage itself hands S3D: ``features.decode.decode_all``
with the s3d=released spec alone, once per decoder (``--decoder``: pyav, decord, torchcodec; PyAV
where the chosen one cannot, e.g. rotated videos). Per video and decoder it
prints the decoder that ran, the frames the recipe sampled (``plans["s3d"].frames_out``,
before the black padding of the last chunk), how many of them equal the oracle's byte for
byte, the mean |difference|, whether the padding is black, and the rows
(ceil(frames / 16)). A video the pipeline refuses shows its status (too_short under 16
frames, decode_error). Target: every frame equal for pyav and decord; torchcodec is not exact
(features/decode_torchcodec.py): its frame count must match, its |diff| is printed.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.decode import DECODERS, decode_all  # noqa: E402
from features.video import DecodeError  # noqa: E402
from shards.feature_spec import S3D, crop_offsets, resized_size  # noqa: E402
from tests.s3d_oracle import cli_s3d_frames  # noqa: E402

def pipeline_frames(path: str, decoder: str):
    """(VideoInfo, uint8 [rows * 16, 224, 224, 3]): S3D's windows from the pipeline, unrolled to frames."""
    info, windows = decode_all(path, [S3D], decoder=decoder)
    return info, windows["s3d"].permute(0, 2, 3, 4, 1).reshape(-1, *S3D.crop, 3).numpy()


def compare(path: str, oracle: np.ndarray | None, decoder: str) -> dict:
    """One decoder's frames against the oracle's: the numbers of one table cell."""
    try:
        info, frames = pipeline_frames(path, decoder)
    except DecodeError as exc:
        return {"status": exc.status}
    count = info.plans["s3d"].frames_out
    cell = {"status": info.decoder, "frames": count, "rows": info.rows["s3d"], "info": info,
            "black_tail": not frames[count:].any()}
    if oracle is not None:
        n = min(count, len(oracle))
        cell["equal"] = sum(bool(np.array_equal(a, b)) for a, b in zip(frames[:n], oracle[:n]))
        cell["diff"] = float(np.abs(frames[:n].astype(np.int16) - oracle[:n].astype(np.int16)).mean()) if n else 0.0
        cell["count_ok"] = count == len(oracle)
    return cell


def main(argv) -> int:
    import av

    paths = argv or sorted(p for p in glob.glob(os.path.join(os.environ.get("MMP_REAL_FIXTURES", ""), "video", "*"))
                           if not p.endswith((".md", ".txt", ".tsv")))
    if not paths:
        print("no videos: give paths or set MMP_REAL_FIXTURES", file=sys.stderr)
        return 2
    print("S3D (s3d=released) frames from the pipeline (decode_all) vs the ffmpeg command line's chain")
    print("per decoder: which ran, frames sampled, equal byte for byte, mean |diff|, padding black, rows")
    head = "".join(f" | {'--decoder ' + name:>35}" for name in DECODERS)
    sub = f" | {'ran':>6} {'frms':>4} {'equal':>5} {'|diff|':>6} {'pad':>5} {'rows':>4}" * len(DECODERS)
    print(f"{'video':36s} {'W x H':>9s} {'X':>4s} {'oracle':>6s}{head}")
    print(f"{'':36s} {'':>9s} {'':>4s} {'':>6s}{sub}")
    totals = {name: [0, 0] for name in DECODERS}  # frames compared, equal
    for path in paths:
        name = os.path.basename(path)
        try:
            oracle = cli_s3d_frames(path)
        except (av.FFmpegError, subprocess.CalledProcessError) as exc:
            oracle, note = None, f"oracle unreadable ({type(exc).__name__})"
        else:
            note = ""
        cells = [compare(path, oracle, name) for name in DECODERS]
        info = next((c["info"] for c in cells if "info" in c), None)
        if info is not None:
            W, H = resized_size(info.width, info.height, S3D)
            geometry = f"{W:4d}x{H:<4d} {crop_offsets(W, H, S3D)[1]:4d}"
        else:
            geometry = f"{'-':>9s} {'-':>4s}"
        line = f"{name[:36]:36s} {geometry} {len(oracle) if oracle is not None else '-':>6}"
        for dec, cell in zip(DECODERS, cells):
            if "frames" not in cell:
                line += f" | {cell['status']:>35}"
                continue
            if "equal" in cell:
                totals[dec][0] += cell["frames"]
                totals[dec][1] += cell["equal"]
                same = f"{cell['equal']:4d}{'' if cell['count_ok'] else '!'}"
                diff = f"{cell['diff']:6.3f}"
            else:
                same, diff = f"{'-':>4}", f"{'-':>6}"
            black = "black" if cell["black_tail"] else "NOT black"
            line += f" | {cell['status']:>6} {cell['frames']:4d} {same:>5} {diff} {black:>5} {cell['rows']:4d}"
        print(line + (f"  {note}" if note else ""))
    print("(! after the equal count: the pipeline sampled a different number of frames than FFmpeg output)")
    for dec in DECODERS:
        compared, equal = totals[dec]
        print(f"--decoder {dec}: {equal} of {compared} frames equal to FFmpeg's "
              f"({100 * equal / compared if compared else 0:.1f}%; "
              + ("not exact by design: those equal were decoded by PyAV)" if dec == "torchcodec" else "target 100%)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
