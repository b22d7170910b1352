"""The pieces bench/extract.py measures with: peak RSS of a child, a stand-in model, looped videos, plain decord, our decoding path, windows and their normalisation, rows at other precisions and how far they move."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


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
from shards.feature_spec import R21D, S3D

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


def our_pipeline(path: Path, specs, keep: bool = False, decoder: str | None = None) -> tuple[object, float, list]:
    """(VideoInfo, wall seconds, chunks): the uint8 windows of `specs`, as the model runner gets them.

    Chunks are dropped as they come (the runner consumes them) unless `keep`: holding a
    long video's windows would time page faults of memory the pipeline never holds.
    """
    from features.decode import DEFAULT_DECODER, DecodedVideo

    start = time.perf_counter()
    video = DecodedVideo(str(path), specs, decoder=decoder or DEFAULT_DECODER)
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


class NullModel:
    def __init__(self, dim):
        self.dim = dim

    def features(self, x):
        import torch

        return torch.zeros(len(x), self.dim)


class Uint8Runner:
    """Stands in for BatchRunner without normalising: the uint8 batch is built, nothing more."""

    def __init__(self, spec, batch_size: int):
        self.spec, self.batch_size = spec, batch_size

    def run(self, windows, owners):
        return np.zeros((len(windows), self.spec.output_dim), np.float16), set()


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
