"""GPU pre-training benchmark: the real trainer (``mmp-train``) at the paper's sizes on one GPU.

    bash bench/gpu_train.sh              # the way to run it (venv, an 8-minute budget)
    python bench/gpu_train.py --device cuda
    python bench/gpu_train.py --device cpu --tiny   # the same code on the CPU with tiny sizes

What it builds, with no network:
- a text encoder shaped like XLM-R large (``XLMRobertaConfig``: 24 layers, hidden 1024, 16
  heads, intermediate 4096, vocabulary 250,002) with random weights, ``save_pretrained``
  into a temporary directory with a WordPiece tokenizer learnt from the shipped sample
  subtitles (specials at XLM-R's ids: <s>=0, <pad>=1, </s>=2, <unk>=3), so ``--text-model
  DIR`` loads both through AutoModel / AutoTokenizer as it would load xlm-roberta-large;
- mmp/ shards written by ``bench/train.py``'s ``write_shards`` (r21d [T,512] + s3d [T,1024]
  float16, one row per second, subtitles in 9 languages).

What it runs and measures (every number printed is measured in the run):
1. ``model.trainer.train.main`` (``mmp-train``, ``python -m model.trainer.train``) in this process, once per
   --workers value: --device cuda (bf16 autocast, as the trainer does on a GPU), batch 64,
   192 text tokens, 128 feature rows, D 1024, 2-layer 4-head pooling heads, output layer 12
   with the top 3 layers trained (the trainer's defaults, the paper's). --log-every 1 and
   --no-progress: every step writes a train_log.jsonl row (its ``.item()`` reads synchronise
   the GPU once a step, as the default progress bar's loss read does).
   - samples/s: the trainer's own, from train_log.jsonl (rows after --warmup steps: samples
     over the ``time`` between rows) and summary.json (whole run, start-up and the last
     checkpoint included);
   - peak GPU memory: ``torch.cuda.max_memory_allocated`` (and max_memory_reserved) after
     the run, in this process;
   - the loader's share: the trainer's ``iter(DataLoader)`` is wrapped (the only addition:
     the trainer does not time it) to time each ``next()``: the wait for a batch vs the
     rest of each step (transfer, forward, backward, optimiser, the log row), after the
     warm-up steps; and the padded batch widths the loader actually produced;
   - the projection: 16 epochs over 1.2M videos at that rate, in GPU-hours:
     1.2e6 * 16 / samples_per_s / 3600. A sample is one clip per video per epoch (the
     loader draws one clip from each video it reads), so an epoch is 1.2M samples.
2. ``torchrun --nproc_per_node 1 -m model.trainer.train`` for a few steps (it reads summary.json's
   world_size), and a torchrun NCCL probe (init_process_group("nccl"), an all_reduce and a
   DDP step on the GPU): with one rank the trainer itself starts no process group (it
   does so only for world_size > 1), so the probe is what exercises NCCL.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(BENCH))  # bench/train.py (write_shards)

from bench.gpu_inputs import write_inputs  # noqa: E402

PAPER_VIDEOS, PAPER_EPOCHS = 1.2e6, 16


def describe_device(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(device)
        return (f"{device}: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs; "
                f"torch {torch.__version__}, CUDA {torch.version.cuda}, NCCL "
                f"{'.'.join(map(str, torch.cuda.nccl.version())) if torch.distributed.is_nccl_available() else 'absent'}")
    return f"cpu: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; torch {torch.__version__}"


# ---------------------------------------------------------------------------- inputs


# ---------------------------------------------------------------------------- the trainer, timed


class TimedIter:
    """The DataLoader iterator, with each next() timed and the batch widths noted."""

    def __init__(self, inner, rec: list):
        self.inner, self.rec = inner, rec

    def __iter__(self):
        return self

    def __next__(self):
        t0 = time.perf_counter()
        b = next(self.inner)
        t1 = time.perf_counter()
        self.rec.append({"call": t0, "ret": t1, "text": tuple(b["text_ids"].shape), "video": tuple(b["video"].shape)})
        return b

    def __getattr__(self, name):
        return getattr(self.inner, name)


def trainer_argv(args, text_dir: Path, shard_dir: Path, out: Path, steps: int, workers: int) -> list:
    return ["--shards", str(shard_dir), "--out", str(out), "--text-model", str(text_dir), "--task", "pretrain",
            "--steps", str(steps), "--batch-size", str(args.batch_size), "--device", args.device.split(":")[0],
            "--loader-workers", str(workers), "--max-text-len", str(args.max_text_len),
            "--max-video-len", str(args.max_video_len), "--video-features", "r21d,s3d",
            "--d-model", str(args.d_model), "--heads", str(args.heads), "--head-layers", str(args.head_layers),
            "--text-output-layer", str(args.output_layer), "--text-trainable-layers", str(args.trainable_layers),
            "--ckpt-every", str(steps), "--keep", "1", "--log-every", "1", "--no-progress"]


def run_trainer(args, text_dir: Path, shard_dir: Path, out: Path, workers: int) -> dict:
    import torch
    import torch.utils.data as tud

    from model.trainer import train as mmp_train

    cuda = args.device.startswith("cuda")
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    rec: list = []
    original = tud.DataLoader.__iter__
    tud.DataLoader.__iter__ = lambda self: TimedIter(original(self), rec)
    t0 = time.perf_counter()
    try:
        rc = mmp_train.main(trainer_argv(args, text_dir, shard_dir, out, args.steps, workers))
    finally:
        tud.DataLoader.__iter__ = original
    wall = time.perf_counter() - t0
    res = {"rc": rc, "wall": wall, "workers": workers}
    if cuda:
        torch.cuda.synchronize()
        res["peak_alloc"] = torch.cuda.max_memory_allocated()
        res["peak_reserved"] = torch.cuda.max_memory_reserved()
    if rc:
        return res
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((out / "summary.json").read_text())
    cfg = json.loads((out / "run_config.json").read_text())
    res.update(rows=rows, summary=summary, run_config=cfg)
    warm = min(args.warmup, len(rows) - 2)  # keep at least one interval
    first = next(r for r in rows if r["step"] >= rows[0]["step"] + warm)
    last = rows[-1]
    batch = summary["global_batch"]
    res["steady_sps"] = (last["step"] - first["step"]) * batch / max(last["time"] - first["time"], 1e-9)
    res["steady_steps"] = (first["step"], last["step"])
    res["row_sps"] = [r["samples_per_s"] for r in rows if r["step"] > first["step"]]
    res["run_sps"] = summary["steps"] * batch / summary["seconds"]
    # loader waits vs the rest of the step, over the steps after the warm-up: step k runs from
    # the return of next() k to the call of next() k+1; the wait for batch k+1 follows it
    waits = [rec[k + 1]["ret"] - rec[k + 1]["call"] for k in range(warm, len(rec) - 1)]
    steps = [rec[k + 1]["call"] - rec[k]["ret"] for k in range(warm, len(rec) - 1)]
    res["first_wait"] = rec[0]["ret"] - rec[0]["call"] if rec else float("nan")
    res["wait_s"], res["step_s"] = sum(waits), sum(steps)
    res["wait_median"] = statistics.median(waits) if waits else float("nan")
    res["step_median"] = statistics.median(steps) if steps else float("nan")
    res["text_widths"] = sorted({r["text"][1] for r in rec})
    res["video_shapes"] = sorted({r["video"][1:] for r in rec})
    res["timed_batches"] = len(waits)
    return res


def report_trainer(res: dict, args) -> None:
    if res["rc"]:
        print(f"  mmp-train returned {res['rc']} after {res['wall']:.1f} s: no numbers from this run")
        return
    s, cfg = res["summary"], res["run_config"]
    print(f"  ran {s['steps']} steps, world_size {s['world_size']}, global batch {s['global_batch']}, "
          f"{cfg['workers_per_rank']} loader workers, video_dim {cfg['video_dim']}, losses {cfg['losses']}; "
          f"final loss {s['final'].get('loss', float('nan')):.4f}; mmp-train wall {res['wall']:.1f} s "
          f"(summary.json: {s['seconds']:.1f} s)")
    print(f"  batches the loader gave: text_ids widths {res['text_widths']} (max {args.max_text_len}), "
          f"video [rows, dim] {res['video_shapes']} (max {args.max_video_len} rows)")
    a, b = res["steady_steps"]
    rows = res["row_sps"]
    print(f"  samples/s (train_log.jsonl, steps {a}->{b}): {res['steady_sps']:.1f}; per-step rows median "
          f"{statistics.median(rows) if rows else float('nan'):.1f}, min {min(rows, default=float('nan')):.1f}, "
          f"max {max(rows, default=float('nan')):.1f}; whole run incl. start-up and checkpoint (summary.json): "
          f"{res['run_sps']:.1f}")
    if "peak_alloc" in res:
        print(f"  peak GPU memory: {res['peak_alloc'] / 2**30:.2f} GiB allocated "
              f"(torch.cuda.max_memory_allocated), {res['peak_reserved'] / 2**30:.2f} GiB reserved")
    total = res["wait_s"] + res["step_s"]
    if total > 0:
        print(f"  time over {res['timed_batches']} steps after the warm-up: waiting for batches "
              f"{100 * res['wait_s'] / total:.1f}% ({res['wait_s']:.2f} s, median {1000 * res['wait_median']:.1f} ms), "
              f"the step {100 * res['step_s'] / total:.1f}% ({res['step_s']:.2f} s, median "
              f"{1000 * res['step_median']:.1f} ms); the first batch took {res['first_wait']:.1f} s (loader start-up included)")
    hours = PAPER_VIDEOS * PAPER_EPOCHS / res["steady_sps"] / 3600
    print(f"  projection: {PAPER_EPOCHS} epochs x {PAPER_VIDEOS / 1e6:.1f}M videos (a sample is one clip per video "
          f"per epoch, as the loader draws) / {res['steady_sps']:.1f} samples/s = {hours:,.1f} "
          f"{'GPU' if 'peak_alloc' in res else 'CPU-process'}-hours")


# ---------------------------------------------------------------------------- torchrun


NCCL_PROBE = r"""
import os, sys, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
cuda = sys.argv[1] == "cuda"
backend = "nccl" if cuda else "gloo"
dist.init_process_group(backend)
rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
dev = torch.device("cuda", local) if cuda else torch.device("cpu")
if cuda:
    torch.cuda.set_device(dev)
x = torch.full((1024,), float(rank + 1), device=dev)
dist.all_reduce(x)
m = DistributedDataParallel(torch.nn.Linear(64, 64).to(dev), device_ids=[local] if cuda else None)
m(torch.randn(8, 64, device=dev)).sum().backward()
dist.barrier()
print(f"probe: backend {dist.get_backend()}, world {dist.get_world_size()}, all_reduce sum {x[0].item():.0f}, "
      f"DDP backward ok, grad norm {m.module.weight.grad.norm().item():.3f}")
dist.destroy_process_group()
"""


def torchrun(args, text_dir: Path, shard_dir: Path, out: Path, budget: float) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "4"))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    cmd = launcher + ["-m", "model.trainer.train"] + trainer_argv(args, text_dir, shard_dir, out, args.torchrun_steps,
                                                          args.workers[0])
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=max(budget, 10))
        rc, tail = p.returncode, (p.stdout + p.stderr).strip().splitlines()[-6:]
    except subprocess.TimeoutExpired:
        rc, tail = "timeout", []
    wall = time.perf_counter() - t0
    if rc == 0 and (out / "summary.json").exists():
        s = json.loads((out / "summary.json").read_text())
        rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if line.strip()]
        print(f"  torchrun --nproc_per_node 1 -m model.trainer.train: rc 0 in {wall:.1f} s; summary.json: {s['steps']} "
              f"steps, world_size {s['world_size']}, final loss {s['final'].get('loss', float('nan')):.4f}; last "
              f"logged samples/s {rows[-1]['samples_per_s'] if rows else 'none'}")
    else:
        print(f"  torchrun --nproc_per_node 1 -m model.trainer.train: rc {rc} after {wall:.1f} s")
        for line in tail:
            print(f"    | {line}")
    left = budget - wall
    if left < 10:
        print("  NCCL probe: not run, the budget is spent")
        return
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    t0 = time.perf_counter()
    try:
        probe = out.parent / "nccl_probe.py"
        probe.write_text(NCCL_PROBE)
        p = subprocess.run(launcher + [str(probe), kind], env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=left)
        rc, lines = p.returncode, (p.stdout + p.stderr).strip().splitlines()
    except subprocess.TimeoutExpired:
        rc, lines = "timeout", []
    ok = [line for line in lines if line.startswith("probe:")]
    print(f"  torchrun --nproc_per_node 1 {'NCCL' if kind == 'cuda' else 'gloo'} probe: rc {rc} in "
          f"{time.perf_counter() - t0:.1f} s{': ' + ok[-1][7:] if ok else ''}")
    if rc != 0:
        for line in lines[-6:]:
            print(f"    | {line}")


# ---------------------------------------------------------------------------- the paper's figure


def paper_statement() -> str:
    """Lines of the repo's docs that state the paper's pre-training compute, if any."""
    docs = [ROOT / "README.md", ROOT.parent / "shared" / "DESIGN.md"]
    pat = re.compile(r"(GPU[- ]?(hours|days)|V100|\bTPU|\d+\s*GPUs?\b.*(hour|day|week))", re.I)
    found = []
    for doc in docs:
        if doc.exists():
            for i, line in enumerate(doc.read_text(errors="replace").splitlines(), 1):
                if pat.search(line) and re.search(r"paper|pre-?train|MMP|epoch", line, re.I):
                    found.append(f"{doc.name}:{i}: {line.strip()}")
    if not found:
        return f"not in the repo (no line of {', '.join(d.name for d in docs)} states the paper's pre-training GPU time)"
    return "; ".join(found)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda or cpu (default cuda)")
    p.add_argument("--tiny", action="store_true", help="tiny sizes everywhere (the dry run)")
    p.add_argument("--steps", type=int, default=None, help="train steps per timed run (default 60; tiny 6)")
    p.add_argument("--warmup", type=int, default=None, help="steps left out of the steady numbers (default 5; tiny 2)")
    p.add_argument("--workers", default=None, help="loader workers per run, comma list (default 2,8; tiny 0,2)")
    p.add_argument("--torchrun-steps", type=int, default=None, help="steps of the torchrun run (default 5; tiny 2)")
    p.add_argument("--videos", type=int, default=None, help="videos in the shards (default 512; tiny 24)")
    p.add_argument("--seconds", type=int, default=None, help="video length in feature rows (default 240; tiny 40)")
    p.add_argument("--per-shard", type=int, default=None, help="videos per shard (default 32; tiny 4)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (default 64; tiny 4)")
    p.add_argument("--max-text-len", type=int, default=None, help="text tokens (default 192; tiny 48)")
    p.add_argument("--max-video-len", type=int, default=None, help="feature rows (default 128; tiny 16)")
    p.add_argument("--budget", type=float, default=3600.0,
                   help="seconds this script may take; later runs are skipped when too little is left")
    args = p.parse_args(argv)
    tiny = args.tiny
    # (paper, tiny): the text encoder, the heads and the batch
    sizes = {"layers": (24, 4), "hidden": (1024, 64), "attn_heads": (16, 4), "intermediate": (4096, 128),
             "vocab": (250002, 250002), "tokenizer_vocab": (8000, 2000), "output_layer": (12, 2),
             "trainable_layers": (3, 1), "d_model": (1024, 64), "heads": (4, 4), "head_layers": (2, 2),
             "batch_size": (64, 4), "max_text_len": (192, 48), "max_video_len": (128, 16),
             "steps": (60, 6), "warmup": (5, 2), "torchrun_steps": (5, 2), "videos": (512, 24),
             "seconds": (240, 40), "per_shard": (32, 4), "workers": ("2,8", "0,2")}
    for name, (paper, small) in sizes.items():
        if getattr(args, name, None) is None:
            setattr(args, name, small if tiny else paper)
    args.workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    start = time.perf_counter()

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device is visible: use --device cpu (bash bench/gpu_train.sh --dry-run)", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"device {describe_device(args.device)}; {os.cpu_count()} CPU cores")
    print(f"sizes: batch {args.batch_size}, {args.max_text_len} text tokens, {args.max_video_len} feature rows, "
          f"D {args.d_model}, pooling heads {args.head_layers} layers x {args.heads} heads, text output layer "
          f"{args.output_layer} with the top {args.trainable_layers} trained, {args.steps} steps per run "
          f"({args.warmup} warm-up), loader workers {args.workers}{' (TINY: not the paper sizes)' if tiny else ''}")
    with tempfile.TemporaryDirectory(prefix="mmp-gpu-train-") as tmp:
        tmp = Path(tmp)
        text_dir, shard_dir = write_inputs(tmp, args)
        results = []
        for i, workers in enumerate(args.workers):
            left = args.budget - (time.perf_counter() - start)
            if results and results[-1]["rc"] == 0:
                need = results[-1]["wall"] * 1.2 + 30
                if left < need:
                    print(f"\n(1) mmp-train with {workers} loader workers: skipped, {left:.0f} s of the budget left "
                          f"(the last run took {results[-1]['wall']:.0f} s)")
                    continue
            print(f"\n(1) mmp-train (model.trainer.train.main, in this process) on {args.device}, {workers} loader workers")
            out = tmp / f"run-w{workers}"
            res = run_trainer(args, text_dir, shard_dir, out, workers)
            report_trainer(res, args)
            results.append(res)
            shutil.rmtree(out, ignore_errors=True)  # the checkpoint: GBs at these sizes
        left = args.budget - (time.perf_counter() - start)
        print(f"\n(2) torchrun, one process ({left:.0f} s of the budget left)")
        if left > 30:
            torchrun(args, text_dir, shard_dir, tmp / "run-torchrun", left - 5)
        else:
            print("  not run: the budget is spent")
    ok = [r for r in results if r["rc"] == 0]
    print("\n(3) summary")
    for r in ok:
        hours = PAPER_VIDEOS * PAPER_EPOCHS / r["steady_sps"] / 3600
        total = r["wait_s"] + r["step_s"]
        print(f"  {r['workers']} workers: {r['steady_sps']:.1f} samples/s, loader wait "
              f"{100 * r['wait_s'] / total if total else float('nan'):.1f}% of the step time"
              + (f", peak {r['peak_alloc'] / 2**30:.2f} GiB" if "peak_alloc" in r else "")
              + f", {PAPER_EPOCHS} x {PAPER_VIDEOS / 1e6:.1f}M samples = {hours:,.1f} "
              f"{'GPU' if 'peak_alloc' in r else 'CPU-process'}-hours")
    print(f"  the paper's own figure for its pre-training compute: {paper_statement()}")
    if tiny:
        print("  (tiny sizes: these numbers say the code runs, not what the paper's sizes cost)")
    return 0 if ok and all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
