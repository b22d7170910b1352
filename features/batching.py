"""Batched extraction: decode threads ahead of the models, windows of many videos per batch.

`extract_videos` is the loop mmp-extract-features runs per unit (features.extract holds the
stage and its CLI). ``decode_workers`` threads decode videos into a bounded queue (decord
and PyAV release the GIL while decoding; the queue holds a few chunks of a few seconds
each, so memory does not depend on video length). Windows from different videos are
batched together to ``batch_size`` per backbone and put back in order per video; results
come out in job order. `BatchRunner` runs one backbone on uint8 batches: normalisation
happens there, on the model's device, and a CUDA out-of-memory halves the batch and
retries, down to one window; a window that still does not fit fails its video (``oom``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import queue
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.runtime.budget import OverBudget
from pipeline.runtime.runlock import pid_alive

from features.decode import DEFAULT_CHUNK_SECONDS, DEFAULT_DECODER, DecodedVideo
from features.video import DecodeError, VideoLimits
from features.frames import Normaliser, stack_windows

log = logging.getLogger("mmp.extract")


# ---------------------------------------------------------------- the batched extraction core

@dataclass
class Backbone:
    """A model with the spec its windows follow and what meta.json says about its weights."""

    spec: object
    model: object
    weights: dict = field(default_factory=dict)


@dataclass
class VideoJob:
    key: str
    path: str | None = None  # a file to decode
    tar: tuple | None = None  # (tar path, data offset, size, suffix): a crawl member copied to a temporary file


@dataclass
class VideoResult:
    key: str
    status: str = "ok"
    error: str | None = None
    info: object = None
    features: dict = field(default_factory=dict)  # name -> float16 [N, D]
    seconds_decode: float = 0.0
    seconds_model: float = 0.0


class BatchRunner:
    """Runs one backbone on batches of uint8 windows; halves the batch on CUDA out-of-memory."""

    def __init__(self, backbone: Backbone, device, batch_size: int):
        import torch

        self.backbone, self.device, self.batch_size = backbone, torch.device(device), max(1, int(batch_size))
        self.halvings = 0
        self.normalise = Normaliser(backbone.spec)

    def _forward(self, windows):
        import torch

        x = self.normalise(windows.to(self.device, non_blocking=True))
        spec = self.backbone.spec
        with torch.inference_mode(), precision(spec.precision, self.device.type):
            y = self.backbone.model.embed(x) if spec.output == "embedding" else self.backbone.model.features(x)
        return y.float().cpu().numpy().astype(np.float16)

    def run(self, windows, owners: list) -> tuple[np.ndarray | None, set]:
        """windows uint8 [B, 3, T, H, W] -> (float16 [B, D] with rows of failed owners zero, failed owners)."""
        import torch

        out = np.zeros((len(windows), self.backbone.spec.output_dim), dtype=np.float16)
        failed: set = set()
        start = 0
        while start < len(windows):
            size = min(self.batch_size, len(windows) - start)
            try:
                out[start:start + size] = self._forward(windows[start:start + size])
            except torch.cuda.OutOfMemoryError:  # only this: any other error is a bug and goes on up
                _free_cuda()
                if size > 1:
                    self.batch_size = max(1, size // 2)
                    self.halvings += 1
                    log.warning("%s: CUDA out of memory at batch %d; retrying at %d",
                                self.backbone.spec.name, size, self.batch_size)
                    continue
                failed.add(owners[start])
                log.warning("%s: CUDA out of memory on a single window of %s", self.backbone.spec.name, owners[start])
            start += size
        return out, failed


@contextlib.contextmanager
def precision(name: str, device_type: str):
    """The arithmetic a recipe asks for: "fp32" (TF32 off, which cuDNN convolutions otherwise
    use by default), "tf32" (TF32 matmuls and convolutions; CUDA only, fp32 elsewhere) or
    "bf16" (autocast on the model's device, the CPU too). Flags are restored afterwards."""
    import torch

    if name == "bf16":
        with torch.autocast(device_type, dtype=torch.bfloat16):
            yield
        return
    if device_type != "cuda":
        yield
        return
    tf32 = name == "tf32"
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=torch.backends.cudnn.benchmark,
                                        deterministic=torch.backends.cudnn.deterministic, allow_tf32=tf32):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def _free_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _decode_job(i: int, job, put, specs, chunk_seconds: int, decoding: tuple, limits: VideoLimits):
    """Decode one job into chunks on the queue: its last item, or None when the run stopped meanwhile."""
    started = time.perf_counter()
    tmp = video = None
    try:
        path = job.path
        if job.tar is not None:
            tmp = _copy_member(job.tar)
            path = tmp
        decoder, device = decoding
        video = DecodedVideo(path, specs, chunk_seconds, decoder, limits, device)
        elapsed = 0.0
        t0 = time.perf_counter()
        for chunk in video.chunks():
            elapsed += time.perf_counter() - t0
            if not put(("chunk", i, chunk, None)):
                return None
            t0 = time.perf_counter()
        elapsed += time.perf_counter() - t0
        return "done", i, video.info, elapsed
    except DecodeError as exc:
        return ("failed", i, (exc.status, exc.message, video.info if video is not None else None),
                time.perf_counter() - started)
    finally:
        if tmp is not None:
            os.unlink(tmp)


def _unbounded(key, fn, *args):
    return fn(*args)


def _decode_worker(jobs: list, next_job, out: "queue.Queue", specs, chunk_seconds: int, stop: threading.Event,
                   decoding: tuple, limits: VideoLimits, within) -> None:
    """Thread body: take the next job, decode it into chunks (under its budget: ``within``), put them on the queue."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    try:
        while not stop.is_set():
            i = next_job()
            if i is None:
                break
            job = jobs[i]
            started = time.perf_counter()
            try:
                item = within(job.key, _decode_job, i, job, put, specs, chunk_seconds, decoding, limits)
            except OverBudget as exc:  # stopped by the video's budget: its chunks so far are dropped
                item = ("failed", i, (exc.status, exc.what, None), time.perf_counter() - started)
            if item is None:  # stopped while putting a chunk
                return
            if not put(item):
                return
    except BaseException:  # a bug: the consumer re-raises it with this traceback
        put(("bug", None, traceback.format_exc(), None))
    finally:
        put(("worker_done", None, None, None))


COPY_PREFIX = "mmp-video-"


def _copy_member(ref: tuple) -> str:
    """A crawl tar member copied to a temporary file (decoders want a path), in 1 MiB blocks. Its name
    carries this process's pid, so that the copies of a worker killed mid-video (its budget, a crash)
    are found and removed by the next extraction on the machine (``_remove_dead_copies``)."""
    tar_path, offset, size, suffix = ref
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix=f"{COPY_PREFIX}{os.getpid()}-")
    try:
        with os.fdopen(fd, "wb") as dst, open(tar_path, "rb") as src:
            src.seek(offset)
            left = size
            while left > 0:
                block = src.read(min(left, 1 << 20))
                if not block:
                    break
                dst.write(block)
                left -= len(block)
    except BaseException:  # an error, or the video's budget striking mid-copy
        os.unlink(tmp)
        raise
    return tmp


def _remove_dead_copies() -> None:
    """Remove the member copies left by extraction processes that are gone (killed mid-video)."""
    for path in Path(tempfile.gettempdir()).glob(f"{COPY_PREFIX}*-*"):
        pid = path.name[len(COPY_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        try:
            if path.stat().st_uid == os.getuid():
                path.unlink()
        except OSError:  # removed meanwhile, or not ours to remove
            pass


def extract_videos(jobs: list, backbones: dict, *, device="cpu", batch_size: int = 32, decode_workers: int = 2,
                   chunk_seconds: int = DEFAULT_CHUNK_SECONDS, decoder: str = DEFAULT_DECODER,
                   runners: dict | None = None,
                   limits: VideoLimits = VideoLimits(), within=None):
    """Yield a VideoResult per job, in job order; decoding runs ahead in `decode_workers` threads.
    `decoder` is one of features.decode.DECODERS (torchcodec decodes on `device`, the others on the CPU).
    A video past `limits` is a failed result (too_long, frame_gap, too_large), like any DecodeError.
    `within(key, fn, *args)` runs each video's decoding under its budget (``Stage.within_budget``): one
    that runs out is a failed result with the budget's status (over_budget, crashed).

    `backbones`: name -> Backbone. Windows of different videos share batches; each
    backbone's batch runs as soon as it is full, the rest when decoding is over.
    """
    if any(job.tar is not None for job in jobs):
        _remove_dead_copies()
    specs = [b.spec for b in backbones.values()]
    runners = runners or {name: BatchRunner(b, device, batch_size) for name, b in backbones.items()}
    workers = max(1, int(decode_workers))
    q: queue.Queue = queue.Queue(maxsize=2 * workers + 2)
    stop = threading.Event()
    lock = threading.Lock()
    counter = iter(range(len(jobs)))

    def next_job():
        with lock:
            return next(counter, None)

    # torchcodec decodes on the models' GPU (NVDEC); the other decoders on the CPU.
    decoding = (decoder, str(device) if decoder == "torchcodec" else "cpu")
    args = (jobs, next_job, q, specs, chunk_seconds, stop, decoding, limits, within or _unbounded)
    threads = [threading.Thread(target=_decode_worker, args=args, daemon=True, name=f"decode-{k}")
               for k in range(workers)]
    for t in threads:
        t.start()

    results = {i: VideoResult(jobs[i].key) for i in range(len(jobs))}
    rows: dict[int, dict] = {i: {name: {} for name in backbones} for i in range(len(jobs))}  # window -> row
    expected: dict[int, dict] = {}  # video -> {backbone: rows}, once decoding finished
    generation = {i: 0 for i in range(len(jobs))}
    pending = {name: [] for name in backbones}  # [(video, generation, window, uint8 [3, T, H, W] view)]
    failed: set = set()
    stack_buffers: dict = {}

    def run_batch(name: str, items: list) -> None:
        items = [it for it in items if it[0] not in failed and it[1] == generation[it[0]]]
        if not items:
            return
        # One reused uint8 buffer per backbone (the runner is done with a batch when run()
        # returns); kept at the largest batch so far.
        buffer = stack_buffers.get(name)
        windows = stack_windows([it[3] for it in items], out=buffer)
        if buffer is None or windows.data_ptr() != buffer.data_ptr():
            stack_buffers[name] = windows.permute(0, 2, 3, 4, 1)
        owners = [it[0] for it in items]
        t0 = time.perf_counter()
        out, oom = runners[name].run(windows, owners)
        share = (time.perf_counter() - t0) / len(items)
        for (v, _, k, _), row in zip(items, out):
            results[v].seconds_model += share
            if v not in oom:
                rows[v][name][k] = row
        for v in oom:
            failed.add(v)
            results[v].status, results[v].error = "oom", f"{name}: CUDA out of memory even for one window"

    def flush(force: bool) -> None:
        for name, items in pending.items():
            while len(items) >= runners[name].batch_size or (force and items):
                take = items[:runners[name].batch_size]
                del items[:len(take)]
                run_batch(name, take)

    def complete(v: int) -> bool:
        if v in failed:
            return True
        if v not in expected:
            return False
        return all(len(rows[v][name]) == expected[v][name] for name in backbones)

    next_out = 0
    alive = workers
    try:
        while alive or next_out < len(jobs):
            if alive:
                kind, v, payload, extra = q.get()
            else:
                flush(force=True)
                kind = None
            if kind == "worker_done":
                alive -= 1
            elif kind == "bug":
                raise RuntimeError(f"a decode thread raised:\n{payload}")
            elif kind == "chunk":
                if payload is None:  # decoding restarted with another decoder
                    generation[v] += 1
                    rows[v] = {name: {} for name in backbones}
                elif v not in failed:
                    for name, windows in payload.windows.items():
                        for j, window in enumerate(windows):
                            items = pending[name]
                            if items and items[0][3].shape != window.shape:
                                # rows of another size (a recipe without a crop): the batch so far goes first
                                run_batch(name, items[:])
                                items.clear()
                            items.append((v, generation[v], payload.first + j, window))
                    flush(force=False)
            elif kind == "done":
                results[v].info, results[v].seconds_decode = payload, extra
                expected[v] = payload.rows
            elif kind == "failed":
                status, message, info = payload
                results[v].status, results[v].error, results[v].info = status, message, info
                results[v].seconds_decode = extra
                failed.add(v)
            if not alive:
                flush(force=True)
            while next_out < len(jobs) and complete(next_out):
                r = results[next_out]
                if next_out not in failed:
                    r.features = {name: np.stack([rows[next_out][name][k] for k in range(expected[next_out][name])])
                                  for name in backbones}
                rows.pop(next_out, None)
                yield r
                next_out += 1
            if not alive and next_out < len(jobs) and not complete(next_out):
                raise RuntimeError(f"video {jobs[next_out].key} never completed (decode thread lost)")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
