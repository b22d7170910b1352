"""mmp-train: pre-train or fine-tune the MMP model on mmp/ shards, on one CPU or many GPUs.

    mmp-train --shards 'DATA/mmp/mmp-{000000..000099}.tar' --out RUN --text-model xlm-roberta-large
    torchrun --nproc-per-node 8 -m model.trainer.train --shards ... --out RUN --text-model ...

The run's pieces live beside this file: ``model.trainer.run_setup`` (flags checked against the data and a
checkpoint, the model config, the step's rate), ``model.trainer.distributed`` (torchrun's environment,
collectives, teardown), ``model.trainer.validation`` (scoring during training).

DDP is one explicit check of the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK):
gloo on CPU, nccl on GPU. ``--batch-size`` is the global batch; each rank takes its share,
and the losses gather embeddings so the negatives span the global batch. Checkpoints
(model, optimiser, step, configs, every worker's data position) are written atomically
every ``--ckpt-every`` steps; ``--resume`` continues from the latest.

The paper trains for a number of epochs (16 pre-training, 10 or 20 fine-tuning), so
``--epochs N`` may stand for ``--steps``: an epoch is one pass over every training shard's
usable samples, all ranks together. The stream is endless and each loader worker reads its
own share, so the run stops when the slowest share has been read N times (a faster share
may start its next pass meanwhile); a resumed run counts on. ``--lr-schedule`` sets the
rate of each step from the step alone (``constant``, the default, the paper states none;
``warmup-cosine``), so a resume continues the schedule exactly. With ``--val-shards`` the
model is scored every ``--val-every`` steps, at each epoch's end and at the last step by
text->video R@1/5/10 on the validation split (mmp-eval's code, on rank 0 while the others
wait); the best by R@1 + R@5 + R@10, the paper's selection, is kept as ``RUN/best.pt``,
for ``mmp-eval --ckpt RUN/best.pt``.

``--s3d-fc s3d_howto100m.pth`` builds the paper's 512 + 512 video input from 1024-d S3D
rows (released features or extracted mixed_5c): the checkpoint's ``fc`` maps them to
MIL-NCE's embedding inside the model, fixed, and is saved with it (``model.mmp``).

``--losses`` picks the NCE terms (``model.losses``). The defaults are the paper's: pre-training
on subtitles trains ``inter,intra``; fine-tuning ``inter,intra,xling``, which uses the parallel
captions where a sample has them. Without ``xling`` the parallel text is not embedded at all.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from model.trainer.distributed import broadcast_object, ddp_env, gather_objects, pick_device, shutdown_distributed, to_device
from shards.errors import command, output_errors
from pipeline.runtime.cli import from_args, parse_args

from model.trainer.config import TrainConfig
from model.trainer.flags import build_parser
from model.trainer.run_dir import check_run_dir, check_writable, given_flags, resolve_paths
from model.clips import TASK_SETTINGS
from model.trainer.run_setup import (ConfigError, check_flags, load_without_video_input, lr_at,
                                     member_limits, open_logs, param_groups, parse_losses, parse_members, read_s3d_fc,
                                     resolve_model, sample_bytes)
from model.trainer.stopping import StopRequest, ignore_stop_signals
from model.trainer.validation import load_validation, validate

log = logging.getLogger("mmp.train")


# ---------------------------------------------------------------------------- training


def train(opts: TrainConfig, given: set[str] | None = None) -> int:
    """Run one training as ``opts`` says; ``given`` names the settings the command gave (a resume takes
    the run's own for the others; default: all of them)."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from model.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
    from model.clips import ClipConfig
    from model.trainer.data import ClipStream, DataError, expand_shards, feature_layout
    from model.losses import mmp_loss
    from model.mmp import build_model
    from pipeline.runtime.hub import load_tokenizer
    from shards.members import MB

    if opts.text_freeze_below is not None:
        keep = max(0, opts.text_output_layer - opts.text_freeze_below + 1) if opts.text_freeze_below else \
            opts.text_output_layer
        raise ConfigError(f"--text-freeze-below is gone (it trained one layer more than the paper's 'freeze below 9'): "
                          f"use --text-trainable-layers N, the top N layers trained (the paper: 3; "
                          f"--text-freeze-below {opts.text_freeze_below} was --text-trainable-layers {keep})")
    check_flags(opts)
    check_run_dir(opts, set(vars(opts)) if given is None else given)
    check_writable(opts.out)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rank, world, local_rank = ddp_env()
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    device = pick_device(opts.device, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    batch, text_len, video_len = TASK_SETTINGS[opts.task]
    batch = opts.batch_size or batch
    if batch % world:
        raise ConfigError(f"--batch-size {batch} is not divisible by the {world} ranks")
    if opts.steps is not None and opts.epochs is not None:
        raise ConfigError(f"--steps {opts.steps} and --epochs {opts.epochs}: training stops at one of them; "
                          "give only one")
    if opts.steps is None and opts.epochs is None:
        opts.steps = 1000
    if opts.val_every is not None and not opts.val_shards:
        raise ConfigError("--val-every needs --val-shards (the shards holding the validation split)")
    members = parse_members(opts.video_features)
    losses = parse_losses(opts.losses, opts.task)
    urls = expand_shards(opts.shards)
    if len(urls) < world:
        raise ConfigError(f"--shards names {len(urls)} shards for {world} ranks; every rank needs at least one")
    limits = member_limits(opts.max_member_mb)
    max_sample = sample_bytes(opts.max_sample_mb, limits)
    opts.max_sample_mb = max_sample / MB  # the run config records the cap in force
    layout = feature_layout(urls, members, limits=limits, max_sample_bytes=max_sample)
    fc = read_s3d_fc(opts, members, layout)
    opts.out.mkdir(parents=True, exist_ok=True)

    cfg, ck, resumed = resolve_model(opts, members, layout, fc)
    val = load_validation(opts, cfg, members, opts.max_video_len or video_len, rank, world)
    tokenizer = load_tokenizer(opts.text_model or cfg.text_model)
    torch.manual_seed(opts.seed)
    model = build_model(cfg)
    start_step, positions, state = 0, None, {}
    if ck is not None and not resumed and opts.new_video_input:
        load_without_video_input(model, ck["model"], ck["path"])
        if fc is not None:
            model.set_s3d_fc(fc[0], fc[1])
    elif ck is not None:
        load_weights(model, ck["model"], ck["path"])  # an s3d fc comes with the checkpoint's weights
    elif fc is not None:
        model.set_s3d_fc(fc[0], fc[1])
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(param_groups(model, params, cfg.video_input_lr_scale), lr=opts.lr)
    workers = min(opts.loader_workers, max(1, len(urls) // world)) if opts.loader_workers > 0 else 0
    if resumed:
        try:  # the moments continue; the rate is this command's schedule's
            opt.load_state_dict(ck["optimizer"])
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
            raise CheckpointError(f"{ck['path']}: its optimiser state does not fit the model ({exc})") from None
        start_step = int(ck["step"])
        state = ck.get("train_state") or {}
        dp = ck["data_position"]
        if dp.get("world_size") == world and dp.get("workers") == workers:
            positions = dp["ranks"][rank]
        else:
            log.warning("resuming with %d ranks x %d workers (checkpoint: %s x %s): the data stream restarts "
                        "at the epoch start", world, workers, dp.get("world_size"), dp.get("workers"))
    ddp = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None) \
        if world > 1 else model

    clip = ClipConfig(task=opts.task, langs=tuple(opts.langs),
                      members=members, max_text_len=opts.max_text_len or text_len,
                      max_video_len=opts.max_video_len or video_len, split=opts.split, mask_prob=opts.mask_prob,
                      pairs="xling" in losses)
    opts.batch_size, opts.max_text_len, opts.max_video_len = batch, clip.max_text_len, clip.max_video_len
    opts.losses = ",".join(losses)  # the run config records what this run trains, defaults resolved
    dataset = ClipStream(urls, tokenizer, clip, batch // world, seed=opts.seed, rank=rank, world_size=world,
                         shuffle_buffer=opts.shuffle_buffer, positions=positions,
                         start_epoch=int(state.get("epochs_done", 0)), limits=limits, max_sample_bytes=max_sample)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers,
                                         prefetch_factor=4 if workers else None,
                                         pin_memory=device.type == "cuda",
                                         worker_init_fn=ignore_stop_signals if workers else None)

    if resumed and (start_step >= opts.steps if opts.epochs is None else state.get("epochs_done", 0) >= opts.epochs):
        if rank == 0:
            print(f"mmp-train: the run in {opts.out} is complete at step {start_step}; its checkpoints and "
                  "summary.json stand (give a larger --steps or --epochs to train on)")
        return 0
    run_config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()}
    run_config.update(world_size=world, global_batch=batch, workers_per_rank=workers, clip=asdict(clip),
                      shards=len(urls), video_dim=cfg.video_dim, row_dim=cfg.row_dim, s3d_fc_map=cfg.s3d_fc,
                      losses=list(losses))
    if rank == 0:
        (opts.out / "run_config.json").write_text(json.dumps(run_config, indent=2, sort_keys=True) + "\n")
    jsonl, tb = open_logs(opts.out, rank)
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

    epochs_done = int(state.get("epochs_done", 0))
    streams = {w: epochs_done for w in range(max(workers, 1))}  # epochs done per worker on this rank
    steps_per_epoch = state.get("steps_per_epoch")
    best = state.get("best")
    if resumed and rank == 0 and (opts.out / "best.pt").is_file():  # it may be newer than the checkpoint resumed
        kept = load_checkpoint(opts.out / "best.pt")["train_state"].get("best")
        if kept and (best is None or kept["rsum"] > best["rsum"]):
            best = kept
    best = broadcast_object(best, world)

    def global_epochs() -> int:
        """Epochs done by every worker of every rank (the slowest share's count)."""
        mine = torch.tensor([min(streams.values())], dtype=torch.long, device=device)
        if world > 1:
            dist.all_reduce(mine, op=dist.ReduceOp.MIN)
        return int(mine.item())

    def total_steps():
        if opts.epochs is None:
            return opts.steps
        return None if steps_per_epoch is None else opts.epochs * steps_per_epoch

    def train_state(lr):
        return {"epochs_done": epochs_done, "steps_per_epoch": steps_per_epoch, "best": best, "lr": lr}

    def finished(at: int) -> bool:
        return at >= opts.steps if opts.epochs is None else epochs_done >= opts.epochs

    use_amp = device.type == "cuda"
    bar = None
    if rank == 0 and not opts.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=opts.steps, initial=start_step, desc="mmp-train", unit="step")
    def checkpoint(at: int, lr: float) -> None:
        nonlocal epochs_done
        if opts.epochs is None:
            epochs_done = global_epochs()
        position = data_position()
        if rank == 0:
            save_checkpoint(opts.out, at, model.state_dict(), opt.state_dict(), model_config=cfg.to_json(),
                            run_config=run_config, data_position=position, keep=opts.keep, train_state=train_state(lr))

    stop = StopRequest().__enter__()
    interrupted = 0
    it = iter(loader)
    started, last_time, last_step = time.time(), time.time(), start_step
    terms = {}
    step = start_step
    model.train()
    try:
        while not finished(step):
            step += 1
            try:
                b = next(it)
            except StopIteration:
                seen = sum((Counter(c) for c in worker_counts.values()), Counter())
                raise DataError(f"the shards stopped giving batches of {batch // world} samples on rank {rank} "
                                f"(counts so far: {dict(sorted(seen.items()))}; the log names the cause); check "
                                "--task, --langs, --video-features and --split against the data") from None
            worker_pos[b["position"]["worker"]] = (b["position"]["epoch"], b["position"]["raw"])
            worker_counts[b["position"]["worker"]] = b["counts"]
            streams[b["position"]["worker"]] = b["position"]["epochs_done"]
            lr = lr_at(step, opts.lr, opts.lr_schedule, opts.warmup_steps, total_steps())
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
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
            grad_norm = torch.nn.utils.clip_grad_norm_(params, opts.clip_grad)
            opt.step()
            epoch_end = False
            if opts.epochs is not None:
                done = global_epochs()
                epoch_end, epochs_done = done > epochs_done, max(done, epochs_done)
                if epoch_end and steps_per_epoch is None:
                    steps_per_epoch = max(1, step // epochs_done)  # the first epoch's length sets the horizon
            last = finished(step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{terms['loss'].item():.4f}",
                                **({"epoch": epochs_done} if opts.epochs is not None else {}))
            if rank == 0 and (step % opts.log_every == 0 or last or epoch_end or step == start_step + 1):
                now = time.time()
                row = {"step": step, "lr": lr, "grad_norm": float(grad_norm),
                       "samples_per_s": round((step - last_step) * batch / max(now - last_time, 1e-9), 2),
                       "time": round(now - started, 3)}
                row.update({k: v.item() for k, v in terms.items()})
                if opts.epochs is not None:
                    row["epochs"] = epochs_done
                jsonl.write(json.dumps(row) + "\n")
                if tb is not None:
                    for k, v in row.items():
                        if k != "step":
                            tb.add_scalar(f"train/{k}", v, step)
                last_time, last_step = now, step
            if opts.val_shards and (last or epoch_end or (opts.val_every and step % opts.val_every == 0)):
                if opts.epochs is None:
                    epochs_done = global_epochs()
                scores, better = None, False
                if rank == 0:  # the others wait in the broadcast, so none runs ahead into a collective
                    scores = validate(model, tokenizer, val, clip.max_text_len, device)
                    better = best is None or scores["rsum"] > best["rsum"]
                    if better:
                        best = {"step": step, "epochs": epochs_done, **scores}
                scores, better, best = broadcast_object((scores, better, best), world)
                if rank == 0:
                    row = {"step": step, **{f"val/{k}": v for k, v in scores.items()}, "val/best": better}
                    if opts.epochs is not None:
                        row["epochs"] = epochs_done
                    jsonl.write(json.dumps(row) + "\n")
                    if tb is not None:
                        for k in ("R@1", "R@5", "R@10", "MdR", "rsum"):
                            tb.add_scalar(f"val/{k}", scores[k], step)
                if better:
                    position = data_position()
                    if rank == 0:
                        save_checkpoint(opts.out, step, model.state_dict(), opt.state_dict(),
                                        model_config=cfg.to_json(), run_config=run_config, data_position=position, keep=0,
                                        train_state={**train_state(lr), "val": scores}, name="best.pt")
            saved = step % opts.ckpt_every == 0 or last
            if saved:
                checkpoint(step, lr)
            interrupted = 0 if last else stop.agreed(world, device)
            if interrupted:
                if not saved:
                    checkpoint(step, lr)
                break
        if opts.epochs is None:
            epochs_done = global_epochs()
        counts = counts_total()
    finally:
        stop.__exit__()
        if bar is not None:
            bar.close()
        if jsonl is not None:
            jsonl.close()
        if tb is not None:
            tb.close()
    if interrupted:
        if rank == 0:
            print(f"mmp-train: interrupted at step {step}: checkpoint written in {opts.out}; run the same command "
                  "with --resume to continue")
        return 128 + interrupted
    if rank == 0:
        summary = {"steps": step, "started_at_step": start_step, "resumed": resumed, "world_size": world,
                   "global_batch": batch, "seconds": round(time.time() - started, 3), "epochs": epochs_done,
                   "steps_per_epoch": steps_per_epoch, "lr_schedule": opts.lr_schedule, "best": best,
                   "final": {k: v.item() for k, v in terms.items()}, "counts": counts}
        (opts.out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        print(f"mmp-train: {step} steps ({epochs_done} epochs) in {summary['seconds']:.1f}s, "
              f"loss {summary['final'].get('loss', float('nan')):.4f}; checkpoints in {opts.out}")
        if best is not None:
            print(f"mmp-train: best on {opts.val_split}: step {best['step']}, R@1 {best['R@1']:.1f} "
                  f"R@5 {best['R@5']:.1f} R@10 {best['R@10']:.1f}; {opts.out / 'best.pt'}")
        skipped = {k: v for k, v in counts.items() if k.startswith(("skipped/", "error/"))}
        if skipped:
            print(f"mmp-train: skipped input: {skipped}")
    return 0


@command("mmp-train")
def main(argv=None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    given = given_flags(parser, sys.argv[1:] if argv is None else argv) | set(getattr(args, "config_given", ()))
    opts = from_args(TrainConfig, args)
    resolve_paths(opts)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    finished = False
    try:
        with output_errors(opts.out):  # a disk that fills during the run: one sentence, the last checkpoint stands
            code = train(opts, given)
        finished = True
        return code
    finally:
        shutdown_distributed(finished)


if __name__ == "__main__":
    sys.exit(main())
