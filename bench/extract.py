"""Feature extraction benchmark: decoders, input pipeline vs plain decord per recipe, full CPU extraction,
bf16 vs fp32 rows, memory, projection.

    python bench/extract.py                       # default: a few minutes on a 2-core CPU
    python bench/extract.py --model-seconds 60 --precision-windows 14 --rss-minutes 1,10,30
    python bench/extract.py --skip decoders,full,precision,rss,projection   # (1) only, ~1 minute

Measured in one run, on the real videos of ../shared/fixtures/video (or --videos) and on
longer ones made by looping one of them (packets copied with shifted timestamps, no
re-encoding):
0. The decoders (bench/decoders.py): video-seconds per CPU-second of the S3D recipe's frames with
   each --decoder on whole H.264 clips (640x360, 854x480, the real 480x360), and frames equal to
   the ffmpeg command line's; the fastest exact one is the default.
1. The input pipeline alone, per recipe (s3d=released alone, r21d=paper alone, both
   together), in video-seconds per wall-second, against decord's plain sequential decode
   of every frame of the same files at native size (decord, one thread, best of --rounds
   alternating rounds). "Ours" is the uint8 windows as the model runner receives them:
   decode the frames the recipe picks (s3d=released: FFmpeg's fps=16 frame choice,
   scaled by swscale while decoding to its truncated short-side-224 size, cropped to 224;
   r21d=paper: 8 frames from the start of every second on a 30 fps grid, from the same
   decoded size resized by torch to 128 and cropped to 112), window them. Per file it
   prints the rows each recipe gives (s3d=released: ceil(frames at 16 fps / 16);
   r21d=paper: ceil(duration)). Target: ratio >= 0.7 for each recipe, judged on that
   recipe's totals line. Normalisation (float conversion, channels to the front, scale,
   mean/std) is model-side work: one vectorised op per batch on the model's device, so on
   a GPU it is not the decode threads' cost. It is measured and printed separately (CPU,
   batches of --input-batch) with the combined ratio, so nothing is hidden. Then the same
   with 2 threads on both sides: plain decodes two files at a time; ours is
   extract_videos with 2 decode threads and cross-video batching. Files decord cannot
   open are listed, not in the ratio.
2. The full extraction (both backbones at their real input sizes, random weights, CPU,
   fp32) over --model-seconds of video: video-seconds/s and the share of time in
   decoding vs the models (decoding runs in threads ahead of the models, so the shares
   are of summed thread time).
3. bf16 vs fp32 rows on the CPU: random (seeded) weights, the first --precision-windows
   windows of --base at its real size, each backbone run on the same windows under fp32
   and under bf16 autocast (features.batching.precision, as the extraction runs a recipe
   with --precision bf16), rows kept in float32: the relative L2 difference of the rows
   and their cosine (mean, min over windows), per backbone at its recipe's output
   (--recipe, pooled layer4 / mixed_5c). Beside it, how much storing the fp32
   rows as float16 alone moves them (rows scaled to unit max first: random S3D rows are
   ~1e-9, under float16's range). Random weights: the numbers say how far bf16 moves this
   architecture's rows, not the trained checkpoints' (not available here).
4. Peak RSS (VmHWM, each in a fresh process) extracting a 10-minute vs a 1-minute video.
   The models are swapped for a stand-in of the same output width here (a 10-minute
   video would take the real ones an hour on a CPU); their memory does not grow with
   video length (fixed batch), while decoding, queues and results would. Target: within 20%.
Then a projection of GPU-hours for HowTo100M (~134k hours) from FLOPs per window
counted with torch.utils.flop_counter and an assumed H100 rate (printed as assumed;
bench/gpu_extract.sh measures the rate on a GPU).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.decoders import bench_decoders, make_clips  # noqa: E402
from bench.extract_parts import (RSS_CHILD, NullModel, Uint8Runner, first_windows, loop_video,  # noqa: E402
                                 normalise_seconds, our_pipeline, plain_decord, precision_rows,
                                 print_precision_table)

FIXTURES = ROOT.parent / "shared" / "fixtures" / "video"
HOWTO100M_HOURS = 134_000
# Assumed, not measured (no H100 here): dense BF16 peak of an H100 SXM is ~989 TFLOP/s;
# 3D convnets at these sizes reach well under half of it, so we assume 35% of peak.
H100_PEAK_TFLOPS = 989.0
H100_ASSUMED_UTILISATION = 0.35

def plain_threads(files: list, threads: int) -> tuple[float, float]:
    """(video seconds, wall seconds) of plain_decord over `files` in `threads` threads, a file per task."""
    from concurrent.futures import ThreadPoolExecutor

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        secs = sum(s for s, _ in pool.map(plain_decord, files))
    return secs, time.perf_counter() - start


def input_rate(files: list, specs, threads: int, batch: int, normalise: bool, budget: bool = False) -> float:
    """Video-seconds/s of extract_videos over `files` with models that cost nothing: the input
    pipeline as the stage runs it (`threads` decode workers, cross-video batches), with or
    without the CPU normalisation, and with or without each video under the stage's default
    per-video budget (``pipeline.runtime.budget``, as mmp-extract-features runs it)."""
    from features.batching import Backbone, VideoJob, extract_videos
    from features.extract_flags import EXTRACT_BUDGET
    from pipeline.runtime.budget import Guard

    jobs = [VideoJob(p.stem, path=str(p)) for p in files]
    backbones = {s.name: Backbone(s, NullModel(s.output_dim)) for s in specs}
    runners = None if normalise else {s.name: Uint8Runner(s, batch) for s in specs}
    guard = Guard()
    within = (lambda key, fn, *args: guard.run(key, EXTRACT_BUDGET, fn, *args)) if budget else None
    start = time.perf_counter()
    done = list(extract_videos(jobs, backbones, batch_size=batch, decode_workers=threads, runners=runners,
                               within=within))
    wall = time.perf_counter() - start
    return sum(r.info.duration for r in done if r.status == "ok") / wall


def bench_input(files: list, sets: list, rounds: int, batch: int) -> None:
    from features.video import DecodeError

    labels = [label for label, _ in sets]
    names = list(dict.fromkeys(s.name for _, specs in sets for s in specs))
    print("\n(1) input pipeline vs decord's plain sequential decode (video-seconds per wall-second), per recipe")
    print("    plain: decord, every frame at native size, num_threads=1. ours: the uint8 windows of the recipe(s)")
    print("    (decode the frames each recipe picks, resize, crop, window). One thread each; per file the best of")
    print(f"    {rounds} alternating rounds. rows: what each recipe gives for the file (alone and together: the same).")
    print(f"{'':36} {'':>6}{'rows':>{5 * len(names)}} {'plain':>7}" + "".join(f" | {lb:>13}" for lb in labels))
    print(f"{'file':36} {'secs':>6}" + "".join(f" {n:>4}" for n in names) + f" {'vs/s':>7}"
          + f" | {'ours':>7} {'ratio':>5}" * len(labels) + "  decoder")
    tot = {lb: dict(plain=0.0, ours=0.0, norm=0.0, vs_plain=0.0, vs_ours=0.0, files=[]) for lb in labels}
    norm_state: dict = {lb: {} for lb in labels}
    row_totals = {n: 0 for n in names}
    for path in files:
        infos, failed, first_wall = {}, {}, {}
        for label, specs in sets:  # warms the page cache; also finds what each recipe refuses
            try:
                infos[label], first_wall[label], _ = our_pipeline(path, specs)
            except DecodeError as exc:
                failed[label] = exc.status
        if not infos:
            print(f"{path.name[:36]:36} recorded failure: {', '.join(sorted(set(failed.values())))}")
            continue
        rows: dict = {}
        for info in infos.values():
            for n, r in info.rows.items():
                rows.setdefault(n, set()).add(r)
        for n in names:
            row_totals[n] += max(rows.get(n, {0}))
        rows_txt = "".join(f" {'/'.join(map(str, sorted(rows[n]))) if n in rows else '-':>4}" for n in names)
        secs = next(iter(infos.values())).duration
        decoders = "/".join(sorted({info.decoder for info in infos.values()}))
        try:
            plain_decord(path)
        except Exception as exc:  # decord cannot read it: ours falls back to PyAV
            cells = "".join(f" | {secs / first_wall[lb]:7.1f} {'-':>5}" if lb in infos else f" | {failed[lb]:>13}"
                            for lb in labels)
            print(f"{path.name[:36]:36} {secs:6.1f}{rows_txt} {'-':>7}{cells}  {decoders} "
                  f"(decord: {type(exc).__name__})")
            continue
        walls_p, walls = [], {lb: [] for lb in infos}
        for _ in range(rounds):
            secs_p, wall_p = plain_decord(path)
            walls_p.append(wall_p)
            for label, specs in sets:
                if label in infos:
                    walls[label].append(our_pipeline(path, specs)[1])
        wall_p = min(walls_p)
        plain_rate = secs_p / wall_p
        cells = ""
        for label, specs in sets:
            if label not in infos:
                cells += f" | {failed[label]:>13}"
                continue
            wall = min(walls[label])
            cells += f" | {secs / wall:7.1f} {(secs / wall) / plain_rate:5.2f}"
            if infos[label].fallback_reason is None:  # decoded by --decoder itself, not its PyAV fallback
                norm = normalise_seconds(our_pipeline(path, specs, keep=True)[2], specs, batch, norm_state[label])
                t = tot[label]
                t["plain"] += wall_p
                t["ours"] += wall
                t["norm"] += norm
                t["vs_plain"] += secs_p
                t["vs_ours"] += secs
                t["files"].append(path)
        print(f"{path.name[:36]:36} {secs:6.1f}{rows_txt} {plain_rate:7.1f}{cells}  {decoders}")
    print("rows over these files: " + ", ".join(f"{n} {row_totals[n]}" for n in names)
          + " (a/b in a rows column: the recipe gave different rows alone and beside the other: a bug)")
    print("files read with decord, 1 thread each:")
    for label, specs in sets:
        t = tot[label]
        if not t["plain"]:
            print(f"  {label}: no file read with decord")
            continue
        plain_rate, ours_rate = t["vs_plain"] / t["plain"], t["vs_ours"] / t["ours"]
        both_rate = t["vs_ours"] / (t["ours"] + t["norm"])
        print(f"  {label:13} ({len(t['files'])} files): input pipeline (uint8 windows) {ours_rate:6.1f} video-s/s "
              f"vs plain {plain_rate:.1f}: ratio {ours_rate / plain_rate:.2f}   <- target >= 0.7")
        print(f"  {'':13} normalisation on the model device {1000 * t['norm'] / t['vs_ours']:5.1f} ms per video-second "
              f"(here the CPU, {_threads()} torch thread(s), batches of {batch}); pipeline + CPU normalisation "
              f"{both_rate:6.1f} video-s/s: ratio {both_rate / plain_rate:.2f}")

    # The same with two threads on both sides: plain decodes two files at a time; ours is
    # mmp-extract-features' own loop (--decode-workers 2 ahead of cross-video batching),
    # models replaced by runners that cost nothing.
    threads = 2
    print(f"{threads} threads (plain: {threads} files at a time; ours: extract_videos, --decode-workers {threads}, "
          f"batches of {batch}; best of {rounds} alternating rounds):")
    for label, specs in sets:
        both = tot[label]["files"]
        if not both:
            continue
        plain2 = uint8 = normed = guarded = 0.0
        for _ in range(rounds):  # alternating, the best of each kept
            secs_p, wall_p = plain_threads(both, threads)
            plain2 = max(plain2, secs_p / wall_p)
            uint8 = max(uint8, input_rate(both, specs, threads, batch, normalise=False))
            guarded = max(guarded, input_rate(both, specs, threads, batch, normalise=False, budget=True))
            normed = max(normed, input_rate(both, specs, threads, batch, normalise=True))
        print(f"  {label:13}: uint8 batches {uint8:6.1f} video-s/s vs plain {plain2:.1f}: ratio {uint8 / plain2:.2f}; "
              f"+ CPU normalisation in the main thread {normed:6.1f}: ratio {normed / plain2:.2f}; "
              f"each video under the default budget {guarded:6.1f}: {guarded / uint8:.2f}x unbudgeted")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def bench_full(path: Path, seconds: float, workdir: Path, batch: int, specs) -> dict:
    import torch

    from features.batching import Backbone, VideoJob, extract_videos
    from features.weights import random_backbone

    clip = workdir / f"full_{int(seconds)}s{path.suffix}"
    loop_video(path, clip, seconds)
    backbones = {s.name: Backbone(s, random_backbone(s.name)) for s in specs}
    start = time.perf_counter()
    result = next(extract_videos([VideoJob("v", path=str(clip))], backbones, batch_size=batch, decode_workers=2))
    wall = time.perf_counter() - start
    dur = result.info.duration
    busy = result.seconds_decode + result.seconds_model
    rows = ", ".join(f"{b.spec.key} {n}" for b, n in zip(backbones.values(), result.info.rows.values()))
    print(f"\n(2) full extraction, {' + '.join(s.key for s in specs)} at real sizes, random weights, CPU "
          f"({torch.get_num_threads()} threads), batch {batch}")
    print(f"{clip.name}: {dur:.1f} video-s, rows {rows}, {wall:.1f} s wall -> "
          f"{dur / wall:.3f} video-s/s; decode {result.seconds_decode:.1f} s ({100 * result.seconds_decode / busy:.0f}%), "
          f"model {result.seconds_model:.1f} s ({100 * result.seconds_model / busy:.0f}%)")
    return {"wall": wall, "duration": dur}


def bench_precision(path: Path, specs, n: int, batch: int) -> None:
    import torch

    from features.batching import Backbone
    from features.weights import random_backbone

    windows = first_windows(path, specs, n)
    fp32 = [s.with_options(precision="fp32") for s in specs]
    backbones = {s.name: Backbone(s, random_backbone(s.name, seed=0)) for s in fp32}
    sizes = ", ".join(f"{name} {len(w)}x{list(w.shape[1:])}" for name, w in windows.items())
    print(f"\n(3) bf16 autocast vs fp32 rows on the CPU ({torch.get_num_threads()} torch threads), random weights "
          f"(seed 0), the first windows of {path.name}: {sizes}")
    rows, seconds = precision_rows(backbones, windows, "cpu", ("fp32", "bf16"), batch)
    print_precision_table(rows, seconds, {n: b.spec for n, b in backbones.items()})
    print("    (random weights: how far bf16 moves these architectures' rows, not the trained checkpoints'; "
          "'float16 storage': what writing fp32 rows to .npy as float16 moves them)")


def bench_rss(path: Path, minutes: list, workdir: Path) -> None:
    print("\n(4) peak RSS extracting one long video (fresh process each; models replaced by a stand-in)")
    results = {}
    for m in minutes:
        clip = workdir / f"rss_{m}min{path.suffix}"
        loop_video(path, clip, m * 60)
        out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(ROOT), str(clip)], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{m} min: failed: {out.stderr[-500:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results[m] = r
        rows = ", ".join(f"{n} {k}" for n, k in r["rows"].items())
        print(f"{m:>4} min: rows {rows}, {r['seconds']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB "
              f"({r['duration'] / r['seconds']:.0f} video-s/s input pipeline)")
    if len(results) >= 2:
        lo, hi = results[min(results)], results[max(results)]
        print(f"peak RSS {max(results)} min / {min(results)} min: {hi['peak_rss_mib'] / lo['peak_rss_mib']:.2f} "
              f"(target within 1.20)")


def projection(specs) -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from features.weights import random_backbone

    print("\nprojection for HowTo100M (~134k hours) on H100s")
    total = 0.0
    for spec in specs:
        model = random_backbone(spec.name)
        x = torch.zeros(1, 3, spec.frames, *spec.crop)
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model.features(x)
        flops = counter.get_total_flops()
        total += flops
        print(f"  {spec.key}: {flops / 1e9:.1f} GFLOP per window ({spec.frames}x{spec.crop[0]}x{spec.crop[1]})")
    windows = HOWTO100M_HOURS * 3600
    rate = H100_PEAK_TFLOPS * 1e12 * H100_ASSUMED_UTILISATION
    hours = windows * total / rate / 3600
    print(f"  {windows / 1e6:.0f}M windows x {total / 1e9:.1f} GFLOP = {windows * total / 1e18:.0f} EFLOP")
    print(f"  ASSUMED H100 rate (not measured here): {H100_PEAK_TFLOPS:.0f} TFLOP/s bf16 peak x "
          f"{H100_ASSUMED_UTILISATION:.0%} utilisation = {rate / 1e12:.0f} TFLOP/s")
    print(f"  -> ~{hours:,.0f} GPU-hours of model compute ({hours / 8 / 24:.1f} days on one 8-GPU node); "
          f"each GPU then needs {windows / (hours * 3600):,.0f} video-s/s of decoding to keep up "
          f"(bench/gpu_extract.sh measures both on a GPU)")


def recipe_specs(items: list) -> list:
    """[r21d spec, s3d spec] following --recipe NAME=RECIPE (default: each backbone's default recipe)."""
    from shards.feature_spec import get_spec

    chosen = {}
    for item in items:
        name, _, recipe = item.partition("=")
        chosen[name] = get_spec(name, recipe or None)
    return [chosen.get(name) or get_spec(name) for name in ("r21d", "s3d")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=Path, default=FIXTURES, help="directory of real videos (default: the fixtures)")
    p.add_argument("--base", default="v_ZNVhz7ctTq0.mp4", help="fixture looped into the longer videos, and used in (3)")
    p.add_argument("--loop-minutes", default="2", help="extra looped videos for (1), minutes, comma-separated")
    p.add_argument("--recipe", nargs="*", default=[], metavar="NAME=RECIPE",
                   help="recipe per backbone (default r21d=paper s3d=released)")
    p.add_argument("--model-seconds", type=float, default=8, help="video seconds for the full extraction (2)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per model call in (2) and (3)")
    p.add_argument("--input-batch", type=int, default=32, help="windows per batch in (1) (the CLI's default)")
    p.add_argument("--rounds", type=int, default=3, help="alternating plain/ours rounds per file in (1); best kept")
    p.add_argument("--precision-windows", type=int, default=4, help="windows per backbone compared in (3)")
    p.add_argument("--rss-minutes", default="1,10", help="video lengths for the memory test (4)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: the fair match for single-threaded decord)")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: decoders,input,full,precision,rss,"
                   "projection")
    p.add_argument("--decoder-minutes", type=float, default=1.0,
                   help="length of each clip in (0), the decoder table (bench/decoders.py; the issue's table: 5)")
    args = p.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))

    import torch

    torch.set_num_threads(args.threads)
    r21d, s3d = recipe_specs(args.recipe)
    base = args.videos / args.base
    with tempfile.TemporaryDirectory(prefix="mmp-bench-") as tmp:
        work = Path(tmp)
        files = sorted(p for p in args.videos.iterdir() if p.suffix != ".md" and p.is_file())
        for m in filter(None, args.loop_minutes.split(",")):
            looped = work / f"looped_{m}min{base.suffix}"
            loop_video(base, looped, float(m) * 60)
            files.append(looped)
        if "decoders" not in skip:
            bench_decoders(make_clips(base, args.decoder_minutes, work), args.rounds)
        if "input" not in skip:
            bench_input(files, [(s3d.key, [s3d]), (r21d.key, [r21d]), ("both", [r21d, s3d])],
                        args.rounds, args.input_batch)
        if "full" not in skip:
            bench_full(base, args.model_seconds, work, args.batch_size, [r21d, s3d])
        if "precision" not in skip:
            bench_precision(base, [r21d, s3d], args.precision_windows, args.batch_size)
        if "rss" not in skip:
            bench_rss(base, [float(m) for m in args.rss_minutes.split(",")], work)
        if "projection" not in skip:
            projection([r21d, s3d])
    print(f"\n(this process's peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
