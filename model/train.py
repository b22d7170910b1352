"""mmp-train: pre-train or fine-tune the MMP model on mmp/ shards, on one CPU or many GPUs.

    mmp-train --shards 'DATA/mmp/mmp-{000000..000099}.tar' --out RUN --text-model xlm-roberta-large
    torchrun --nproc-per-node 8 -m model.train --shards ... --out RUN --text-model ...

DDP is one explicit check of the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK):
gloo on CPU, nccl on GPU. ``--batch-size`` is the global batch; each rank takes its share,
and the losses gather embeddings so the negatives span the global batch. Checkpoints
(model, optimiser, step, configs, every worker's data position) are written atomically
every ``--ckpt-every`` steps; ``--resume`` continues from the latest.

``--s3d-fc s3d_howto100m.pth`` builds the paper's 512 + 512 video input from 1024-d S3D
rows (released features or extracted mixed_5c): the checkpoint's ``fc`` maps them to
MIL-NCE's embedding inside the model, fixed, and is saved with it (``model.mmp``).

``--losses`` picks the NCE terms (``model.losses``). The defaults are the paper's: pre-training
on subtitles trains ``inter,intra``; fine-tuning ``inter,intra,xling``, which uses the parallel
captions where a sample has them. Without ``xling`` the parallel text is not embedded at all.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

log = logging.getLogger("mmp.train")

TASK_DEFAULTS = {  # the paper's settings: (batch, max text tokens, max video rows)
    "pretrain": (64, 192, 128),
    "finetune": (128, 96, 36),
}
TASK_LOSSES = {  # the paper's objective per task (Eq. 1-6)
    "pretrain": "inter,intra",
    "finetune": "inter,intra,xling",
}


class ConfigError(Exception):
    """Flags, data and checkpoint that do not fit together."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmp-train",
        description="Train the MMP model (multilingual text encoder + video encoder, NCE losses) on mmp/ shards. "
                    "Runs on one CPU as is, and as DDP under torchrun (--nproc-per-node N).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shards", required=True,
                   help="shard tars: brace pattern ('mmp/mmp-{000000..000099}.tar'), glob, directory, paths or URLs "
                        "joined with '::'")
    p.add_argument("--out", required=True, type=Path, help="run directory: checkpoints, train_log.jsonl, summary.json")
    p.add_argument("--text-model", help="hub name (xlm-roberta-large, bert-base-multilingual-cased) or a "
                                        "save_pretrained directory; taken from --init / --resume checkpoints if omitted")
    p.add_argument("--task", choices=sorted(TASK_DEFAULTS), default="pretrain",
                   help="pretrain: clips with subtitles (subs.json); finetune: downstream captions (captions.json)")
    p.add_argument("--init", type=Path, help="start from this checkpoint's weights (e.g. pre-training for fine-tuning)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out, if any")
    p.add_argument("--steps", type=int, default=1000, help="optimiser steps in total (a resumed run counts on)")
    p.add_argument("--batch-size", type=int, help="global batch (split over ranks); default 64 pretrain, 128 finetune")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate")
    p.add_argument("--clip-grad", type=float, default=0.2, help="gradient norm clipping")
    p.add_argument("--ckpt-every", type=int, default=500, help="steps between checkpoints (the last step always saves)")
    p.add_argument("--keep", type=int, default=3, help="checkpoints kept in --out")
    p.add_argument("--workers", type=int, default=2, help="data loader processes per rank (0: load in the trainer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--langs", default="en,de,fr,ru,es,cs,sw,zh,vi", help="languages to sample text from")
    p.add_argument("--split", default="train", help="finetune: the captions.json split to train on")
    p.add_argument("--max-text-len", type=int, help="tokens per text; default 192 pretrain, 96 finetune")
    p.add_argument("--max-video-len", type=int, help="feature rows per clip; default 128 pretrain, 36 finetune")
    p.add_argument("--video-features", default="r21d,s3d",
                   help="sample members concatenated as the video input (r21d, s3d, regions); samples lacking one "
                        "are skipped and counted")
    p.add_argument("--s3d-fc", type=Path, metavar="PATH",
                   help="S3D checkpoint (s3d_howto100m.pth) whose fc.weight [512, 1024] / fc.bias [512] map the s3d "
                        "member's 1024-d mixed_5c rows to the 512-d S3D embedding before the model, fixed (not "
                        "trained) and saved with the model; the paper's r21d 512 + s3d 512 input")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per rank (0: torch's default)")
    g = p.add_argument_group("model (ignored with --init / --resume: the checkpoint's config wins)")
    g.add_argument("--d-model", type=int, default=1024, help="joint embedding and head width")
    g.add_argument("--heads", type=int, default=4, help="attention heads per pooling head")
    g.add_argument("--head-layers", type=int, default=2, help="Transformer layers per pooling head")
    g.add_argument("--dropout", type=float, default=0.3)
    g.add_argument("--text-output-layer", type=int, default=12, help="text encoder layer feeding the head (1-based)")
    g.add_argument("--text-trainable-layers", type=int, default=3,
                   help="top text encoder layers, up to --text-output-layer, that are trained; the rest is frozen "
                        "(default 3, the paper's: layers 10-12 of 12; 0 freezes the encoder; the output layer "
                        "itself trains the embeddings too)")
    g.add_argument("--text-freeze-below", type=int, help=argparse.SUPPRESS)  # renamed: refused with a pointer
    g.add_argument("--temperature", type=float, default=0.1, help="NCE softmax temperature")
    p.add_argument("--losses",
                   help="NCE terms trained, a comma list from inter (text-video), intra (each against its masked "
                        "copy), xling (the parallel text: its own inter and intra terms and the visually-pivoted "
                        "cross-lingual term); default inter,intra for pretrain, inter,intra,xling for finetune")
    p.add_argument("--mask-prob", type=float, default=0.05, help="intra-modal noise: share of tokens/frames masked")
    p.add_argument("--shuffle-buffer", type=int, default=100,
                   help="samples in each worker's shuffle buffer (about 1 MB each for a 5-minute video); shards "
                        "are shuffled per epoch as well")
    p.add_argument("--log-every", type=int, default=10, help="steps between log lines")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


# ---------------------------------------------------------------------------- distributed


def ddp_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without it."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def pick_device(name: str, local_rank: int):
    import torch

    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda but no CUDA device is visible")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def to_device(batch: dict, device) -> dict:
    import torch

    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}


def gather_objects(obj, world: int) -> list:
    import torch.distributed as dist

    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


# ---------------------------------------------------------------------------- setup


def parse_members(text: str) -> tuple[str, ...]:
    from .data import FEATURE_MEMBERS

    members = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in members if m not in FEATURE_MEMBERS]
    if not members or bad:
        raise ConfigError(f"--video-features {text!r}: choose from {', '.join(FEATURE_MEMBERS)}")
    return members


def parse_losses(text: str | None, task: str) -> tuple[str, ...]:
    """``--losses`` as a tuple of terms, the task's default when not given."""
    from .losses import parse_terms

    try:
        return parse_terms(TASK_LOSSES[task] if text is None else text)
    except ValueError as exc:
        raise ConfigError(f"--losses {exc}") from None


def check_video_dim(cfg, dim: int, members: tuple[str, ...], source: str, layout=None) -> None:
    """The shards' row width ``dim`` (and, given ``layout``, where the s3d columns lie) fits ``cfg``."""
    if cfg.row_dim != dim:
        mapped = (f", whose s3d fc maps {cfg.s3d_fc['in_dim']}-d s3d rows to {cfg.s3d_fc['out_dim']}"
                  if cfg.s3d_fc else "")
        raise ConfigError(
            f"the shards' video features ({'+'.join(members)}) are {dim}-dimensional but {source} expects "
            f"{cfg.row_dim} ({'+'.join(cfg.video_features)}{mapped}); use the same --video-features as that model")
    if cfg.s3d_fc and layout is not None:
        offset = s3d_offset(layout)
        if offset != cfg.s3d_fc["offset"]:
            raise ConfigError(f"{source} maps its s3d fc over columns from {cfg.s3d_fc['offset']} "
                              f"({'+'.join(cfg.video_features)}) but --video-features {'+'.join(members)} puts "
                              f"the s3d rows at {offset}; use the same --video-features as that model")


def s3d_offset(layout) -> int | None:
    """The first column of the s3d rows in the concatenated input (None without s3d)."""
    offset = 0
    for m in layout:
        if m.name == "s3d":
            return offset
        offset += m.width
    return None


def read_s3d_fc(args, members, layout):
    """``(weight, bias, config entry)`` for ``--s3d-fc``, or None without it; ConfigError when the
    file, the chosen members or the shards' s3d rows do not fit the map."""
    from .mmp import S3D_FC_IN, S3D_FC_OUT, S3DFcError, load_s3d_fc

    if args.s3d_fc is None:
        return None
    try:
        weight, bias, sha256 = load_s3d_fc(args.s3d_fc)
    except S3DFcError as exc:
        raise ConfigError(str(exc)) from None
    if "s3d" not in members:
        raise ConfigError(f"--s3d-fc maps the s3d rows, but --video-features {','.join(members)} does not include s3d")
    s3d = next(m for m in layout if m.name == "s3d")
    if s3d.meta.get("output") == "embedding" or s3d.width == S3D_FC_OUT:
        raise ConfigError(f"--s3d-fc: the shards' s3d rows are already {s3d.width}-d"
                          f"{' (meta.json output: embedding)' if s3d.meta.get('output') == 'embedding' else ''}, "
                          "the S3D embedding the fc gives; drop --s3d-fc, or use 1024-d mixed_5c s3d features")
    if s3d.width != S3D_FC_IN:
        raise ConfigError(f"--s3d-fc maps {S3D_FC_IN}-d s3d rows (pooled mixed_5c) but the shards' s3d rows "
                          f"are {s3d.width}-d")
    entry = {"offset": s3d_offset(layout), "in_dim": S3D_FC_IN, "out_dim": S3D_FC_OUT,
             "file": str(args.s3d_fc), "sha256": sha256}
    return weight, bias, entry


def check_s3d_fc(cfg, ck, fc, source: str) -> None:
    """``--s3d-fc`` with a checkpoint: the checkpoint must hold the same map (its own wins anyway)."""
    import torch

    if fc is None:
        return
    if cfg.s3d_fc is None:
        raise ConfigError(f"--s3d-fc: {source} was trained without an s3d fc (its video input is "
                          f"{cfg.video_dim}-d {'+'.join(cfg.video_features)}); drop --s3d-fc or start a new model")
    weight, bias, _ = fc
    if not (torch.equal(ck["model"]["s3d_fc_weight"].float(), weight)
            and torch.equal(ck["model"]["s3d_fc_bias"].float(), bias)):
        raise ConfigError(f"--s3d-fc {fc[2]['file']} differs from the s3d fc {source} was trained with "
                          f"({cfg.s3d_fc.get('file')}); drop --s3d-fc to keep the checkpoint's")


def resolve_model(args, members, layout, fc=None):
    """The model config, the checkpoint to start from (or None) and whether it is a resume."""
    from .checkpoint import list_checkpoints, load_checkpoint
    from .mmp import MMPConfig

    dim = sum(m.width for m in layout)
    if args.resume and list_checkpoints(args.out):
        ck = load_checkpoint(args.out)
        cfg = MMPConfig.from_json(ck["model_config"])
        check_video_dim(cfg, dim, members, f"the checkpoint {ck['path']}", layout)
        check_s3d_fc(cfg, ck, fc, f"the checkpoint {ck['path']}")
        return cfg, ck, True
    if args.init is not None:
        ck = load_checkpoint(args.init)
        cfg = MMPConfig.from_json(ck["model_config"])
        check_video_dim(cfg, dim, members, f"the checkpoint {ck['path']}", layout)
        check_s3d_fc(cfg, ck, fc, f"the checkpoint {ck['path']}")
        if args.text_model:
            cfg.text_model = args.text_model  # the same encoder, found at a new place
        return cfg, ck, False
    if not args.text_model:
        raise ConfigError("--text-model is required without --init or a checkpoint to --resume")
    s3d_fc = None if fc is None else fc[2]
    video_dim = dim if s3d_fc is None else dim - s3d_fc["in_dim"] + s3d_fc["out_dim"]
    cfg = MMPConfig(text_model=args.text_model, video_dim=video_dim, video_features=list(members),
                    d_model=args.d_model, heads=args.heads, layers=args.head_layers, dropout=args.dropout,
                    output_layer=args.text_output_layer, trainable_layers=args.text_trainable_layers,
                    temperature=args.temperature, s3d_fc=s3d_fc)
    return cfg, None, False


def open_logs(out: Path, rank: int):
    """The JSONL log and, if tensorboard is installed, a SummaryWriter (rank 0 only)."""
    if rank != 0:
        return None, None
    jsonl = open(out / "train_log.jsonl", "a", buffering=1)
    try:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(out / "tensorboard"))
    except ImportError:
        tb = None
    return jsonl, tb


# ---------------------------------------------------------------------------- training


def train(args) -> int:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from .checkpoint import save_checkpoint
    from .data import ClipConfig, ClipStream, DataError, expand_shards, feature_layout
    from .losses import mmp_loss
    from .mmp import build_model
    from .text import load_tokenizer

    if args.text_freeze_below is not None:
        keep = max(0, args.text_output_layer - args.text_freeze_below + 1) if args.text_freeze_below else \
            args.text_output_layer
        raise ConfigError(f"--text-freeze-below is gone (it trained one layer more than the paper's 'freeze below 9'): "
                          f"use --text-trainable-layers N, the top N layers trained (the paper: 3; "
                          f"--text-freeze-below {args.text_freeze_below} was --text-trainable-layers {keep})")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rank, world, local_rank = ddp_env()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    batch, text_len, video_len = TASK_DEFAULTS[args.task]
    batch = args.batch_size or batch
    if batch % world:
        raise ConfigError(f"--batch-size {batch} is not divisible by the {world} ranks")
    for name in ("steps", "ckpt_every", "log_every"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    members = parse_members(args.video_features)
    losses = parse_losses(args.losses, args.task)
    urls = expand_shards(args.shards)
    if len(urls) < world:
        raise ConfigError(f"--shards names {len(urls)} shards for {world} ranks; every rank needs at least one")
    layout = feature_layout(urls, members)
    fc = read_s3d_fc(args, members, layout)
    args.out.mkdir(parents=True, exist_ok=True)

    cfg, ck, resumed = resolve_model(args, members, layout, fc)
    tokenizer = load_tokenizer(args.text_model or cfg.text_model)
    torch.manual_seed(args.seed)
    model = build_model(cfg)
    start_step, positions = 0, None
    if ck is not None:
        model.load_state_dict(ck["model"])  # an s3d fc comes with the checkpoint's weights
    elif fc is not None:
        model.set_s3d_fc(fc[0], fc[1])
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=args.lr)
    workers = min(args.workers, max(1, len(urls) // world)) if args.workers > 0 else 0
    if resumed:
        opt.load_state_dict(ck["optimizer"])
        for group in opt.param_groups:
            group["lr"] = args.lr  # the moments continue; the rate is this command's
        start_step = int(ck["step"])
        dp = ck["data_position"]
        if dp.get("world_size") == world and dp.get("workers") == workers:
            positions = dp["ranks"][rank]
        else:
            log.warning("resuming with %d ranks x %d workers (checkpoint: %s x %s): the data stream restarts "
                        "at the epoch start", world, workers, dp.get("world_size"), dp.get("workers"))
    ddp = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None) \
        if world > 1 else model

    clip = ClipConfig(task=args.task, langs=tuple(l.strip() for l in args.langs.split(",") if l.strip()),
                      members=members, max_text_len=args.max_text_len or text_len,
                      max_video_len=args.max_video_len or video_len, split=args.split, mask_prob=args.mask_prob)
    dataset = ClipStream(urls, tokenizer, clip, batch // world, seed=args.seed, rank=rank, world_size=world,
                         shuffle_buffer=args.shuffle_buffer, positions=positions)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                         prefetch_factor=4 if workers else None,
                                         pin_memory=device.type == "cuda")

    run_config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    run_config.update(world_size=world, global_batch=batch, workers_per_rank=workers, clip=asdict(clip),
                      shards=len(urls), video_dim=cfg.video_dim, row_dim=cfg.row_dim, s3d_fc_map=cfg.s3d_fc,
                      losses=list(losses))
    if rank == 0:
        (args.out / "run_config.json").write_text(json.dumps(run_config, indent=2, sort_keys=True) + "\n")
    jsonl, tb = open_logs(args.out, rank)
    worker_pos = {int(k): tuple(v) for k, v in (positions or {}).items()}
    worker_counts: dict = {}

    def data_position():
        ranks = gather_objects({w: list(p) for w, p in worker_pos.items()}, world)
        return {"world_size": world, "workers": workers, "ranks": ranks}

    def counts_total():
        total = Counter()
        for part in gather_objects(worker_counts, world):
            for c in part.values():
                total.update(c)
        return dict(sorted(total.items()))

    use_amp = device.type == "cuda"
    bar = None
    if rank == 0 and not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=args.steps, initial=start_step, desc="mmp-train", unit="step")
    it = iter(loader)
    started, last_time, last_step = time.time(), time.time(), start_step
    terms = {}
    step = start_step
    model.train()
    try:
        for step in range(start_step + 1, args.steps + 1):
            try:
                b = next(it)
            except StopIteration:
                seen = sum((Counter(c) for c in worker_counts.values()), Counter())
                raise DataError(f"the shards stopped giving batches of {batch // world} samples on rank {rank} "
                                f"(counts so far: {dict(sorted(seen.items()))}; the log names the cause); check "
                                "--task, --langs, --video-features and --split against the data") from None
            worker_pos[b["position"]["worker"]] = (b["position"]["epoch"], b["position"]["raw"])
            worker_counts[b["position"]["worker"]] = b["counts"]
            tensors = to_device(b, device)
            with_pairs = False
            if "xling" in losses:  # every rank takes the same branch: one with pairs makes all embed them
                has_pairs = tensors["pair_valid"].any().to(torch.int32)
                if world > 1:
                    dist.all_reduce(has_pairs, op=dist.ReduceOp.MAX)
                with_pairs = bool(has_pairs.item())
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = ddp(tensors, with_pairs=with_pairs)
            terms = mmp_loss(out, cfg.temperature, losses)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, args.clip_grad)
            opt.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{terms['loss'].item():.4f}")
            if rank == 0 and (step % args.log_every == 0 or step == args.steps or step == start_step + 1):
                now = time.time()
                row = {"step": step, "lr": opt.param_groups[0]["lr"], "grad_norm": float(grad_norm),
                       "samples_per_s": round((step - last_step) * batch / max(now - last_time, 1e-9), 2),
                       "time": round(now - started, 3)}
                row.update({k: v.item() for k, v in terms.items()})
                jsonl.write(json.dumps(row) + "\n")
                if tb is not None:
                    for k, v in row.items():
                        if k != "step":
                            tb.add_scalar(f"train/{k}", v, step)
                last_time, last_step = now, step
            if step % args.ckpt_every == 0 or step == args.steps:
                position = data_position()
                if rank == 0:
                    save_checkpoint(args.out, step, model.state_dict(), opt.state_dict(), model_config=cfg.to_json(),
                                    run_config=run_config, data_position=position, keep=args.keep)
        counts = counts_total()
    finally:
        if bar is not None:
            bar.close()
        if jsonl is not None:
            jsonl.close()
        if tb is not None:
            tb.close()
    if rank == 0:
        summary = {"steps": step, "started_at_step": start_step, "resumed": resumed, "world_size": world,
                   "global_batch": batch, "seconds": round(time.time() - started, 3),
                   "final": {k: v.item() for k, v in terms.items()}, "counts": counts}
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        print(f"mmp-train: {step} steps in {summary['seconds']:.1f}s, loss {summary['final'].get('loss', float('nan')):.4f}; "
              f"checkpoints in {args.out}")
        skipped = {k: v for k, v in counts.items() if k.startswith(("skipped/", "error/"))}
        if skipped:
            print(f"mmp-train: skipped input: {skipped}")
    return 0


def main(argv=None) -> int:
    from .checkpoint import CheckpointError
    from .data import DataError
    from .text import TextModelError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    finished = False
    try:
        code = train(args)
        finished = True
        return code
    except (ConfigError, DataError, TextModelError, CheckpointError) as exc:
        print(f"mmp-train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed(finished)


def shutdown_distributed(finished: bool) -> None:
    """Tear the process group down on every rank together, while the interpreter is whole.

    A rank that finished waits for the others before it closes its Gloo/NCCL connections, so no
    rank loses its peer while it still writes the summary or the last checkpoint; a group left to
    interpreter shutdown can abort the process ("terminate called without an active exception")
    and turn a finished run into a failed one under torchrun. After an error there is no barrier:
    the other ranks may never reach it.
    """
    import gc

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished:
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()
    gc.collect()


if __name__ == "__main__":
    sys.exit(main())
