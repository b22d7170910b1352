"""Feature extraction benchmark: input pipeline vs plain decord per recipe, full CPU extraction,
bf16 vs fp32 rows, memory, projection.

    python bench/extract.py                       # default: a few minutes on a 2-core CPU
    python bench/extract.py --model-seconds 60 --precision-windows 14 --rss-minutes 1,10,30
    python bench/extract.py --skip full,precision,rss,projection   # (1) only, ~1 minute

Measured in one run, on the real videos of ../shared/fixtures/video (or --videos) and on
longer ones made by looping one of them (packets copied with shifted timestamps, no
re-encoding):
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXTURES = ROOT.parent / "shared" / "fixtures" / "video"
HOWTO100M_HOURS = 134_000
# Assumed, not measured (no H100 here): dense BF16 peak of an H100 SXM is ~989 TFLOP/s;
# 3D convnets at these sizes reach well under half of it, so we assume 35% of peak.
H100_PEAK_TFLOPS = 989.0
H100_ASSUMED_UTILISATION = 0.35

RSS_CHILD = r"""
import json, sys, time

def peak_rss_mib():
    # VmHWM belongs to this process image; rusage's maxrss would carry the parent's peak
    # over fork + exec.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

sys.path.insert(0, sys.argv[1])
import torch
from features.batching import Backbone, VideoJob, extract_videos
from features.spec import R21D, S3D

class StandIn(torch.nn.Module):
    def __init__(self, dim):
        super().__init__(); self.dim = dim
    def features(self, x):
        return x.mean(dim=(2, 3, 4)).repeat(1, self.dim // 3 + 1)[:, :self.dim]

torch.set_num_threads(1)
start = time.perf_counter()
backbones = {"r21d": Backbone(R21D, StandIn(512)), "s3d": Backbone(S3D, StandIn(1024))}
result = next(extract_videos([VideoJob("v", path=sys.argv[2])], backbones, batch_size=32, decode_workers=2))
print(json.dumps({"status": result.status, "rows": {n: len(a) for n, a in result.features.items()},
                  "duration": result.info.duration if result.info else 0.0,
                  "seconds": time.perf_counter() - start,
                  "peak_rss_mib": peak_rss_mib()}))
"""


def loop_video(src: Path, dst: Path, seconds: float) -> float:
    """Copy src's video packets again and again (timestamps shifted) until `seconds`; no re-encoding."""
    import av

    with av.open(str(src)) as probe:
        stream = probe.streams.video[0]
        tb = stream.time_base
        packets = [(p.pts, p.dts, p.duration) for p in probe.demux(stream) if p.pts is not None]
    span = (max(p[0] + (p[2] or 0) for p in packets) - min(p[0] for p in packets)) * tb
    reps = max(1, int(seconds // float(span)) + 1)
    total = 0.0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        istream = inp.streams.video[0]
        ostream = out.add_stream_from_template(istream)
        for rep in range(reps):
            shift = int(round(rep * span / tb))
            inp.seek(0)
            for packet in inp.demux(istream):
                if packet.pts is None or packet.size == 0:
                    continue
                if float((packet.pts + shift) * tb) >= seconds:
                    continue
                packet.pts += shift
                packet.dts = packet.dts + shift if packet.dts is not None else None
                packet.stream = ostream
                out.mux(packet)
                total = max(total, float((packet.pts + (packet.duration or 0)) * tb))
    return total


def plain_decord(path: Path) -> tuple[float, float]:
    """(video seconds, wall seconds) decoding every frame at native size, sequentially, one thread."""
    import decord

    start = time.perf_counter()
    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    n = len(vr)
    for _ in range(n):
        vr.next()
    wall = time.perf_counter() - start
    return n / float(vr.get_avg_fps()), wall  # frame count / rate: decord's AVI timestamps are garbage


def our_pipeline(path: Path, specs, keep: bool = False) -> tuple[object, float, list]:
    """(VideoInfo, wall seconds, chunks): the uint8 windows of `specs`, as the model runner gets them.

    Chunks are dropped as they come (the runner consumes them) unless `keep`: holding a
    long video's windows would time page faults of memory the pipeline never holds.
    """
    from features.decode import DecodedVideo

    start = time.perf_counter()
    video = DecodedVideo(str(path), specs)
    chunks = []
    for chunk in video.chunks():
        if chunk is None:
            chunks = []
        elif keep:
            chunks.append(chunk)
    return video.info, time.perf_counter() - start, chunks


def first_windows(path, specs, n: int) -> dict:
    """{backbone: uint8 [<= n, 3, T, H, W]}: the first n windows of each recipe, decoding no further than needed."""
    import torch

    from features.decode import DecodedVideo

    parts: dict = {s.name: [] for s in specs}
    for chunk in DecodedVideo(str(path), specs).chunks():
        if chunk is None:  # decoding restarted with PyAV
            parts = {s.name: [] for s in specs}
            continue
        for s in specs:
            parts[s.name].append(chunk.windows[s.name])
        if all(sum(len(w) for w in parts[s.name]) >= n for s in specs):
            break
    return {name: torch.cat(p)[:n] for name, p in parts.items()}


def normalise_seconds(chunks: list, specs, batch: int, state: dict) -> float:
    """Wall seconds to batch the windows (`batch` per call) and normalise them as the runner does on the CPU.

    `state` keeps the Normaliser and stack buffer per backbone across files, as one
    extraction run keeps them across videos; they are made (and their memory touched) at
    full batch size before anything is timed, as in a run that has done its first batch.
    """
    import torch

    from features.frames import Normaliser, stack_windows

    total = 0.0
    for spec in specs:
        if spec.name not in state:
            normaliser = Normaliser(spec)
            buffer = torch.zeros((batch, spec.frames, *spec.crop, 3), dtype=torch.uint8)
            normaliser(buffer.permute(0, 4, 1, 2, 3))
            state[spec.name] = (normaliser, buffer)
        normaliser, buffer = state[spec.name]
        windows = [w for c in chunks for w in c.windows[spec.name]]
        for a in range(0, len(windows), batch):
            start = time.perf_counter()
            x = stack_windows(windows[a:a + batch], out=buffer)
            normaliser(x)
            total += time.perf_counter() - start
            if buffer is None or x.data_ptr() != buffer.data_ptr():
                buffer = x.permute(0, 2, 3, 4, 1)
        state[spec.name] = (normaliser, buffer)
    return total


class _NullModel:
    def __init__(self, dim):
        self.dim = dim

    def features(self, x):
        import torch

        return torch.zeros(len(x), self.dim)


class _Uint8Runner:
    """Stands in for BatchRunner without normalising: the uint8 batch is built, nothing more."""

    def __init__(self, spec, batch_size: int):
        self.spec, self.batch_size = spec, batch_size

    def run(self, windows, owners):
        return np.zeros((len(windows), self.spec.output_dim), np.float16), set()


def plain_threads(files: list, threads: int) -> tuple[float, float]:
    """(video seconds, wall seconds) of plain_decord over `files` in `threads` threads, a file per task."""
    from concurrent.futures import ThreadPoolExecutor

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        secs = sum(s for s, _ in pool.map(plain_decord, files))
    return secs, time.perf_counter() - start


def input_rate(files: list, specs, threads: int, batch: int, normalise: bool) -> float:
    """Video-seconds/s of extract_videos over `files` with models that cost nothing: the input
    pipeline as the stage runs it (`threads` decode workers, cross-video batches), with or
    without the CPU normalisation."""
    from features.batching import Backbone, VideoJob, extract_videos

    jobs = [VideoJob(p.stem, path=str(p)) for p in files]
    backbones = {s.name: Backbone(s, _NullModel(s.output_dim)) for s in specs}
    runners = None if normalise else {s.name: _Uint8Runner(s, batch) for s in specs}
    start = time.perf_counter()
    done = list(extract_videos(jobs, backbones, batch_size=batch, decode_workers=threads, runners=runners))
    wall = time.perf_counter() - start
    return sum(r.info.duration for r in done if r.status == "ok") / wall


def bench_input(files: list, sets: list, rounds: int, batch: int) -> None:
    from features.decode import DecodeError

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
            if infos[label].decoder == "decord":
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
        plain2 = uint8 = normed = 0.0
        for _ in range(rounds):  # alternating, the best of each kept
            secs_p, wall_p = plain_threads(both, threads)
            plain2 = max(plain2, secs_p / wall_p)
            uint8 = max(uint8, input_rate(both, specs, threads, batch, normalise=False))
            normed = max(normed, input_rate(both, specs, threads, batch, normalise=True))
        print(f"  {label:13}: uint8 batches {uint8:6.1f} video-s/s vs plain {plain2:.1f}: ratio {uint8 / plain2:.2f}; "
              f"+ CPU normalisation in the main thread {normed:6.1f}: ratio {normed / plain2:.2f}")


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


def precision_rows(backbones: dict, windows: dict, device, precisions, batch: int) -> tuple[dict, dict]:
    """Each backbone on the same windows under each precision, as BatchRunner runs it (normalise on
    the device, features.batching.precision, inference mode, the spec's output) but kept in
    float32 instead of the stored float16. Returns ({backbone: {precision: float32 [N, D]}},
    {backbone: {precision: seconds per window}})."""
    import torch

    from features.batching import precision
    from features.frames import normalise

    device = torch.device(device)
    rows: dict = {}
    seconds: dict = {}
    for name, b in backbones.items():
        for p in precisions:
            parts, spent = [], 0.0
            for a in range(0, len(windows[name]), batch):
                x = normalise(windows[name][a:a + batch].to(device), b.spec)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                with torch.inference_mode(), precision(p, device.type):
                    y = b.model.embed(x) if b.spec.output == "embedding" else b.model.features(x)
                parts.append(y.float().cpu().numpy())
                spent += time.perf_counter() - start
            rows.setdefault(name, {})[p] = np.concatenate(parts)
            seconds.setdefault(name, {})[p] = spent / max(1, len(windows[name]))
    return rows, seconds


def row_difference(ref: np.ndarray, other: np.ndarray) -> dict:
    """Relative L2 difference of two [N, D] row sets (||other - ref|| / ||ref||) and the per-row cosine."""
    ref, other = ref.astype(np.float64), other.astype(np.float64)
    rel = float(np.linalg.norm(other - ref) / max(np.linalg.norm(ref), 1e-300))
    cos = (ref * other).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(other, axis=1), 1e-300)
    return {"rel_l2": rel, "cos_mean": float(cos.mean()), "cos_min": float(cos.min())}


def float16_storage(ref: np.ndarray) -> dict:
    """row_difference of fp32 rows against the same rows stored as float16 (scaled to unit max first)."""
    scale = float(np.abs(ref).max()) or 1.0
    return row_difference(ref, (ref / scale).astype(np.float16).astype(np.float64) * scale)


def print_precision_table(rows: dict, seconds: dict, specs: dict, base: str = "fp32", others=("bf16",)) -> None:
    """One line per backbone and precision: its rows against `base`'s on the same windows."""
    print(f"{'rows':18} {'vs ' + base:>8} {'rel L2':>9} {'cos mean':>10} {'cos min':>10} | "
          f"{'float16 storage rel L2':>22} | seconds per window")
    for name, by_p in rows.items():
        store = float16_storage(by_p[base])
        for p in others:
            d = row_difference(by_p[base], by_p[p])
            times = ", ".join(f"{q} {seconds[name][q]:.3f}" for q in (base, p))
            print(f"{name + ' (' + specs[name].output + ')':18} {p:>8} {d['rel_l2']:9.2e} {d['cos_mean']:10.6f} "
                  f"{d['cos_min']:10.6f} | {store['rel_l2']:22.2e} | {times}")


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
    from features.spec import get_spec

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
    p.add_argument("--skip", default="", help="comma-separated parts to skip: input,full,precision,rss,projection")
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
