"""Which decoder to extract with: video-seconds per CPU-second and frames equal to the ffmpeg CLI, per decoder.

    python bench/decoders.py                      # 1-minute H.264 clips at 640x360, 854x480 and the real 480x360
    python bench/decoders.py --minutes 5 --rounds 3

What ``--decoder`` chooses between (features/decode.py DECODERS), on what HowTo100M is made of: H.264
at YouTube's sizes. The clips are the real fixture (--base, 480x360, looped without re-encoding) and
the same pictures re-encoded by libx264 at 640x360 and 854x480 (YouTube's 360p and 480p). For each
decoder, the S3D recipe's windows (s3d=released: fps=16, short side 224, centre crop 224) of each
whole clip, as the extraction hands them to the model:
- video-seconds per CPU-second of this process (user + system, all its threads: decord with one
  thread still runs more than one core), the best of --rounds alternating rounds, and per wall-second;
- frames byte-equal to the ffmpeg command line running the same chain (imageio-ffmpeg's binary,
  ``-vf fps=16,scale=W:H:flags=bilinear,crop=224:224:X:Y``), of the frames the command line gives,
  and the mean absolute difference per value where they differ.
The command line itself is timed beside them (its CPU-seconds as a child process), as a reference.
The default of ``--decoder`` is the fastest of the exact ones (every frame equal) on these clips.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.extract_parts import loop_video  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "video"
SIZES = ((640, 360), (854, 480))


def cpu_seconds(who=resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def reencode(src: Path, dst: Path, width: int, height: int) -> None:
    """`src`'s pictures scaled to width x height and encoded by libx264 (yuv420p, CRF 23, its default GOP)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        istream = inp.streams.video[0]
        rate = istream.average_rate
        ostream = out.add_stream("libx264", rate=rate)
        ostream.width, ostream.height, ostream.pix_fmt = width, height, "yuv420p"
        ostream.codec_context.time_base = 1 / rate
        ostream.options = {"preset": "veryfast", "crf": "23"}
        for i, frame in enumerate(inp.decode(istream)):
            scaled = frame.reformat(width=width, height=height, format="yuv420p")
            scaled.pts, scaled.time_base = i, 1 / rate
            for packet in ostream.encode(scaled):
                out.mux(packet)
        for packet in ostream.encode():
            out.mux(packet)


def decoder_frames(path: Path, decoder: str) -> tuple[np.ndarray, str, float, float]:
    """(S3D frames [F, 224, 224, 3] without the tail's black padding, the decoder that ran, CPU s, wall s)."""
    from features.decode import decode_all
    from shards.feature_spec import S3D

    cpu, wall = cpu_seconds(), time.perf_counter()
    info, windows = decode_all(str(path), [S3D], decoder=decoder)
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    frames = windows["s3d"].permute(0, 2, 3, 4, 1).reshape(-1, 224, 224, 3).numpy()
    return frames[:info.plans["s3d"].frames_out], info.decoder, cpu, wall


def cli_frames(path: Path) -> tuple[np.ndarray, float, float]:
    """(the command line's S3D frames, its CPU s, wall s)."""
    from tests.s3d_oracle import cli_s3d_frames

    cpu, wall = cpu_seconds(resource.RUSAGE_CHILDREN), time.perf_counter()
    frames = cli_s3d_frames(str(path))
    return frames, cpu_seconds(resource.RUSAGE_CHILDREN) - cpu, time.perf_counter() - wall


def duration(path: Path) -> float:
    from features.decode_pyav import demux_times
    from features.video import VideoLimits

    times, end, _, _ = demux_times(str(path), VideoLimits())
    return float(end - times[0])


def bench_decoders(clips: list, rounds: int) -> dict:
    """Print the table; {decoder: (exact on every clip, summed video-s per CPU-s)}."""
    from features.decode import DECODERS

    names = [*DECODERS, "ffmpeg CLI"]
    print("\ndecoders: the S3D recipe's frames (fps=16, 224x224 RGB) of whole H.264 clips, video-seconds per "
          f"CPU-second (per wall-second), best of {rounds} alternating rounds; frames equal to the ffmpeg CLI")
    print(f"{'decoder':12}" + "".join(f" | {clip.name[:30]:>30}" for clip in clips) + " | all clips")
    cells = {name: [] for name in names}
    summary = {}
    for clip in clips:
        secs = duration(clip)
        oracle, _, _ = cli_frames(clip)
        best: dict = {}
        for _ in range(rounds):
            for name in names:
                if name == "ffmpeg CLI":
                    frames, cpu, wall = cli_frames(clip)
                    ran = name
                else:
                    frames, ran, cpu, wall = decoder_frames(clip, name)
                if name not in best or cpu < best[name][1]:
                    equal = sum(bool(np.array_equal(a, b)) for a, b in zip(frames, oracle))
                    n = min(len(frames), len(oracle))
                    mad = float(np.abs(frames[:n].astype(np.int16) - oracle[:n]).mean()) if n else 0.0
                    best[name] = (secs, cpu, wall, equal, len(frames), len(oracle), mad, ran)
                del frames
        for name in names:
            cells[name].append(best[name])
    for name in names:
        row = cells[name]
        text = []
        for secs, cpu, wall, equal, got, want, mad, ran in row:
            eq = f"{equal}/{want}" + ("" if got == want else f" (gave {got})")
            text.append(f"{secs / cpu:6.1f} ({secs / wall:6.1f}) {eq:>9} d{mad:4.2f}" + ("" if ran == name else "*"))
        exact = all(equal == want == got for _, _, _, equal, got, want, _, _ in row)
        rate = sum(r[0] for r in row) / sum(r[1] for r in row)
        summary[name] = (exact, rate)
        print(f"{name:12}" + "".join(f" | {t:>30}" for t in text) + f" | {rate:6.1f} {'exact' if exact else 'not exact'}")
    print("  (dN.NN: mean |difference| per value from the CLI's frames; *: another decoder ran, as the extraction "
          "would fall back)")
    exact = {n: r for n, (e, r) in summary.items() if e and n != "ffmpeg CLI"}
    if exact:
        fastest = max(exact, key=exact.get)
        print(f"  fastest exact decoder: {fastest} ({exact[fastest]:.1f} video-s per CPU-s"
              + "".join(f"; {exact[fastest] / r:.2f}x {n}" for n, r in exact.items() if n != fastest) + ")")
    return summary


def make_clips(base: Path, minutes: float, work: Path) -> list:
    looped = work / f"real_480x360_{minutes:g}min{base.suffix}"
    loop_video(base, looped, minutes * 60)
    clips = []
    for width, height in SIZES:
        clip = work / f"h264_{width}x{height}_{minutes:g}min.mp4"
        reencode(looped, clip, width, height)
        clips.append(clip)
    return [*clips, looped]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=Path, default=FIXTURES, help="directory of real videos (default: the fixtures)")
    p.add_argument("--base", default="v_ZNVhz7ctTq0.mp4", help="the real H.264 clip looped and re-encoded")
    p.add_argument("--minutes", type=float, default=1.0, help="length of each clip (the issue's table: 5)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best CPU time is kept")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="mmp-decoders-") as tmp:
        clips = make_clips(args.videos / args.base, args.minutes, Path(tmp))
        bench_decoders(clips, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
