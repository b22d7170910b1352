"""GPU extraction benchmark: the stage's own loop on one GPU over ~10 minutes of real-size video.

    bash bench/gpu_extract.sh            # the way to run it (venv, fixtures, an 8-minute budget)
    python bench/gpu_extract.py --device cuda --minutes 10
    python bench/gpu_extract.py --device cpu --minutes 0.1 --files 2 --batch-size 2   # tiny, on the CPU

Measured in one run, on videos made by looping real fixture videos (packets copied with
shifted timestamps, no re-encoding; v_ZNVhz7ctTq0.mp4 is a HowTo100M video at its own
480x360), with both backbones at their default recipes (r21d=paper, s3d=released) and
random weights, as ``mmp-extract-features --gpus 1 --random-weights`` runs each worker:
``features.batching.extract_videos`` with --decode-workers threads and --batch-size:
1. The input pipeline alone (models that cost nothing, uint8 batches) in video-s/s, beside
   decord's plain decode of every frame of the same files in as many threads.
2. The models alone: each backbone's BatchRunner (uint8 to the device, normalisation there,
   the recipe's precision) on full batches of real windows, windows/s, and both together
   in video-s/s (one row of each per second).
3. The full extraction at each of --precisions, --passes times over the videos in one run
   (so a fast GPU is timed over more than a few seconds): video-seconds/s per GPU, decode
   vs model share of the summed thread time and the main thread's time in the models as a
   share of wall (near 100%: the GPU bounds it; low: decoding does), peak GPU memory
   (torch.cuda.max_memory_allocated), and the GPU-hours HowTo100M's ~134k hours would take
   at that rate (134000 * 3600 / rate / 3600).
4. bf16 (and tf32 on CUDA) vs fp32 rows on the device, on the same real windows: relative
   L2 difference and cosine (bench/extract.py's measurement).
5. GPU decoders where they import: torchcodec's CUDA decoder (RGB frames) and
   PyNvVideoCodec (NV12 frames), decoding every frame of the same clip, beside decord at
   native size with one thread and with --decode-workers threads (that many copies at a
   time); where they do not import, why.
6. ``--decoder`` in the stage's loop: pyav (CPU, exact) vs torchcodec on NVDEC, video-s/s per GPU,
   decode vs model share, which decoder really ran, S3D frame and row differences (bench/gpu_decoders.py).
Nothing printed is assumed: every number is measured in the run.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from bench.extract import HOWTO100M_HOURS, input_rate, plain_threads  # noqa: E402
from bench.gpu_decoders import bench_decoder_choice  # noqa: E402
from bench.extract_parts import first_windows, loop_video, plain_decord, precision_rows, print_precision_table  # noqa: E402

SOURCES = "v_ZNVhz7ctTq0.mp4,decord_flipping_a_pancake.mkv"


def fixtures() -> Path:
    return Path(os.environ.get("MMP_REAL_FIXTURES") or ROOT.parent / "shared" / "fixtures") / "video"


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def describe_device(device: str) -> str:
    import torch

    if torch.device(device).type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return (f"{device}: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs; "
                f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    return f"cpu: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; torch {torch.__version__}"


def build_videos(sources: list, minutes: float, files: int, work: Path) -> list:
    """`files` videos looping the sources in turn, together `minutes` of video."""
    seconds = minutes * 60 / files
    out = []
    for k in range(files):
        src = sources[k % len(sources)]
        dst = work / f"loop{k:02d}_{src.stem}{src.suffix}"
        loop_video(src, dst, seconds)
        out.append(dst)
    return out


def models_alone(backbones: dict, windows: dict, device: str, batch: int, reps: int) -> dict:
    """name -> windows/s of its BatchRunner on full batches of real windows (after one untimed batch)."""
    from features.batching import BatchRunner

    rates = {}
    for name, b in backbones.items():
        runner = BatchRunner(b, device, batch)
        x = windows[name][:batch]
        owners = [0] * len(x)
        runner.run(x, owners)
        sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            runner.run(x, owners)
        sync(device)
        rates[name] = reps * len(x) / (time.perf_counter() - start)
    return rates


def full_run(jobs: list, backbones: dict, device: str, batch: int, workers: int) -> dict:
    import torch

    from features.batching import extract_videos

    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    results = list(extract_videos(jobs, backbones, device=device, batch_size=batch, decode_workers=workers))
    wall = time.perf_counter() - start
    ok = [r for r in results if r.status == "ok"]
    return {"wall": wall, "seconds": sum(r.info.duration for r in ok), "ok": len(ok), "videos": len(results),
            "decode": sum(r.seconds_decode for r in results), "model": sum(r.seconds_model for r in results),
            "rows": {name: sum(len(r.features[name]) for r in ok) for name in backbones},
            "peak": torch.cuda.max_memory_allocated(device) if cuda else None,
            "statuses": sorted({r.status for r in results if r.status != "ok"})}


def time_torchcodec(clip: Path, device: str, batch: int = 64) -> tuple[int, float]:
    """(frames, wall seconds) decoding every frame of `clip` with torchcodec on `device`."""
    from torchcodec.decoders import VideoDecoder

    start = time.perf_counter()
    decoder = VideoDecoder(str(clip), device=device, dimension_order="NHWC")
    n = decoder.metadata.num_frames or len(decoder)
    for a in range(0, n, batch):
        decoder.get_frames_in_range(a, min(a + batch, n))
    sync(device)
    return n, time.perf_counter() - start


def time_pynvvideocodec(clip: Path, gpu: int) -> tuple[int, float]:
    """(frames, wall seconds) decoding every frame of `clip` with PyNvVideoCodec, frames left in device memory."""
    import PyNvVideoCodec as nvc

    start = time.perf_counter()
    demuxer = nvc.CreateDemuxer(filename=str(clip))
    decoder = nvc.CreateDecoder(gpuid=gpu, codec=demuxer.GetNvCodecId(), cudacontext=0, cudastream=0,
                                usedevicememory=True)
    n = 0
    for packet in demuxer:
        n += len(list(decoder.Decode(packet)))
    return n, time.perf_counter() - start


def bench_gpu_decoders(clip: Path, device: str, workers: int) -> None:
    import importlib

    import torch

    print(f"\n(5) GPU decoders on {clip.name}, every frame at native size, beside decord")
    secs, wall = plain_decord(clip)
    frames_d = None
    try:
        import decord

        frames_d = len(decord.VideoReader(str(clip), num_threads=1))
    except Exception:  # only the frame count for the line below
        pass
    one = secs / wall
    copies_s, copies_w = plain_threads([clip] * workers, workers)
    many = copies_s / copies_w
    print(f"  decord, 1 thread:               {one:8.1f} video-s/s ({frames_d} frames, {wall:.2f} s)")
    print(f"  decord, {workers:2d} threads ({workers} copies): {many:8.1f} video-s/s")
    cuda = torch.device(device).type == "cuda"
    for name, module, timer in (("torchcodec (CUDA)", "torchcodec.decoders", lambda: time_torchcodec(clip, device)),
                                ("PyNvVideoCodec", "PyNvVideoCodec",
                                 lambda: time_pynvvideocodec(clip, torch.device(device).index or 0))):
        try:
            importlib.import_module(module)
        except Exception as exc:  # absent, or present without the libraries it loads (FFmpeg, the driver's)
            print(f"  {name:30} absent: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}")
            continue
        if not cuda:
            print(f"  {name:30} imports; not timed: no CUDA device in this run")
            continue
        try:
            timer()  # first use: decoder and context set-up
            n, wall_g = timer()
        except Exception as exc:
            print(f"  {name:30} imports but failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            continue
        rate = secs * (n / frames_d if frames_d else 1.0) / wall_g
        print(f"  {name:30} {rate:8.1f} video-s/s ({n} frames, {wall_g:.2f} s): {rate / one:.1f}x decord 1 thread, "
              f"{rate / many:.2f}x decord {workers} threads")
    print("  (GPU decoders convert colour and resize on their own: the recipes' frames are swscale's, so rows from "
          "them would not be the s3d=released bytes)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    p.add_argument("--videos", type=Path, default=None, help="fixture directory (default $MMP_REAL_FIXTURES/video)")
    p.add_argument("--sources", default=SOURCES, help="fixtures looped into the test videos, comma-separated")
    p.add_argument("--minutes", type=float, default=10.0, help="minutes of video in all (default 10)")
    p.add_argument("--files", type=int, default=0, help="videos they are split into (default: --decode-workers)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per model call (the CLI's default 32)")
    p.add_argument("--decode-workers", type=int, default=min(16, os.cpu_count() or 1),
                   help="decode threads (default: the cores, at most 16)")
    p.add_argument("--passes", type=int, default=1,
                   help="times the full extraction (3) goes over the videos in one run, for a longer timed run")
    p.add_argument("--precisions", default="fp32,bf16", help="full runs, comma-separated (fp32 is the recipes' own)")
    p.add_argument("--model-reps", type=int, default=5, help="timed batches per backbone in (2)")
    p.add_argument("--precision-windows", type=int, default=32, help="windows per backbone compared in (4)")
    args = p.parse_args(argv)

    import torch

    from features.batching import Backbone, VideoJob
    from shards.feature_spec import R21D, S3D
    from features.weights import random_backbone

    device = args.device
    if torch.device(device).type == "cuda":
        if not torch.cuda.is_available():
            print(f"--device {device}: torch {torch.__version__} sees no CUDA device", file=sys.stderr)
            return 2
        torch.cuda.set_device(torch.device(device))
    print(f"device: {describe_device(device)}")
    videos = args.videos or fixtures()
    sources = [videos / s for s in args.sources.split(",") if s]
    missing = [str(s) for s in sources if not s.is_file()]
    if missing:
        print(f"missing fixture videos: {', '.join(missing)} (set MMP_REAL_FIXTURES)", file=sys.stderr)
        return 2
    workers, batch = args.decode_workers, args.batch_size
    files = args.files or workers
    specs = [R21D, S3D]

    with tempfile.TemporaryDirectory(prefix="mmp-gpu-bench-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        clips = build_videos(sources, args.minutes, files, work)
        jobs = [VideoJob(c.stem, path=str(c)) for c in clips]
        print(f"videos: {len(clips)} files, {args.minutes:g} min in all, looping {', '.join(s.name for s in sources)} "
              f"({time.perf_counter() - start:.1f} s to build); batch {batch}, {workers} decode threads")

        start = time.perf_counter()
        models = {s.name: random_backbone(s.name, seed=0, device=device) for s in specs}
        sample = first_windows(clips[0], specs, max(batch, args.precision_windows))
        warm = {s.name: Backbone(s, models[s.name]) for s in specs}
        full_run(jobs[:1], warm, device, batch, 1)  # CUDA context, cuDNN's choices, page cache: untimed
        print(f"warm-up (models, first windows, one video through the loop): {time.perf_counter() - start:.1f} s")

        print(f"\n(1) input pipeline alone (uint8 batches, models that cost nothing), {workers} decode threads")
        secs_p, wall_p = plain_threads(clips, workers)
        rate_in = input_rate(clips, specs, workers, batch, normalise=False)
        print(f"  ours {rate_in:8.1f} video-s/s vs decord's plain decode of every frame, {workers} files at a time: "
              f"{secs_p / wall_p:.1f} (ratio {rate_in / (secs_p / wall_p):.2f})")

        precisions = [q for q in args.precisions.split(",") if q]
        print(f"\n(2) models alone, batches of {batch} real windows, uint8 in, normalised on {device}")
        for q in precisions:
            backbones = {s.name: Backbone(s.with_options(precision=q), models[s.name]) for s in specs}
            rates = models_alone(backbones, sample, device, batch, args.model_reps)
            both = 1.0 / sum(1.0 / r for r in rates.values())
            print(f"  {q}: " + ", ".join(f"{n} {r:8.1f} windows/s" for n, r in rates.items())
                  + f"; both {both:8.1f} video-s/s")

        print(f"\n(3) full extraction (extract_videos, as --gpus 1 runs each worker), random weights, "
              f"{workers} decode threads, batch {batch}, {args.passes} pass(es) over the videos")
        passes = [VideoJob(f"{j.key}-{k}", path=j.path) for k in range(args.passes) for j in jobs]
        for q in precisions:
            backbones = {s.name: Backbone(s.with_options(precision=q), models[s.name]) for s in specs}
            r = full_run(passes, backbones, device, batch, workers)
            rate = r["seconds"] / r["wall"]
            busy = r["decode"] + r["model"]
            peak = f"{r['peak'] / 2**30:.2f} GiB" if r["peak"] is not None else "n/a (CPU run)"
            hours = HOWTO100M_HOURS * 3600 / rate / 3600
            print(f"  {q}: {r['seconds']:.0f} video-s in {r['wall']:.1f} s -> {rate:.1f} video-s/s per "
                  f"{'GPU' if r['peak'] is not None else 'CPU'}; {r['ok']}/{r['videos']} ok"
                  + (f" (others: {', '.join(r['statuses'])})" if r["statuses"] else "")
                  + "; rows " + ", ".join(f"{n} {k}" for n, k in r["rows"].items()))
            print(f"        decode {r['decode']:.1f} s ({100 * r['decode'] / busy:.0f}% of thread time), model "
                  f"{r['model']:.1f} s ({100 * r['model'] / busy:.0f}%); main thread in the models "
                  f"{100 * r['model'] / r['wall']:.0f}% of wall; peak GPU memory {peak}")
            print(f"        HowTo100M ~{HOWTO100M_HOURS:,} h at this rate: {hours:,.0f} "
                  f"{'GPU' if r['peak'] is not None else 'CPU'}-hours ({hours / 8 / 24:.1f} days on 8 of them)")

        n = min(args.precision_windows, *(len(w) for w in sample.values()))
        windows = {name: w[:n] for name, w in sample.items()}
        others = ("tf32", "bf16") if torch.device(device).type == "cuda" else ("bf16",)
        print(f"\n(4) {', '.join(others)} vs fp32 rows on {device}, random weights (seed 0), the first {n} windows "
              f"of {clips[0].name}")
        base = {s.name: Backbone(s.with_options(precision="fp32"), models[s.name]) for s in specs}
        rows, seconds = precision_rows(base, windows, device, ("fp32",) + others, batch)
        print_precision_table(rows, seconds, {name: b.spec for name, b in base.items()}, others=others)

        bench_gpu_decoders(clips[0], device, workers)
        backbones = {s.name: Backbone(s, models[s.name]) for s in specs}
        bench_decoder_choice(jobs, backbones, device, batch, workers)
    print(f"\n(this process's peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
