"""mmp-train's command line: every flag, its default and what it means."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.runtime.cli import OldSpelling, add_common_flags
from pipeline.runtime.langs import add_langs_flag
from shards.samples import LANGS

from model.trainer.run_setup import MEMBER_MB_HELP, TASK_DEFAULTS


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
    p.add_argument("--new-video-input", action="store_true",
                   help="with --init: keep the checkpoint's model but give it a new video input layer for these "
                        "shards' --video-features (the paper's Multi30K: image region features on an MMP model), "
                        "trained at --new-input-lr-scale times the rate")
    p.add_argument("--new-input-lr-scale", type=float, default=2.0,
                   help="rate multiple of the new video input layer (default 2, the paper's)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out, if any")
    p.add_argument("--steps", type=int,
                   help="optimiser steps in total (a resumed run counts on); 1000 when neither this nor --epochs")
    p.add_argument("--epochs", type=int,
                   help="train for N passes over the shards' usable samples instead of --steps (a resumed run "
                        "counts on; the paper: 16 pre-training, 10 or 20 fine-tuning)")
    p.add_argument("--batch-size", type=int, help="global batch (split over ranks); default 64 pretrain, 128 finetune")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate (the peak, with a schedule)")
    p.add_argument("--lr-schedule", choices=["constant", "warmup-cosine"], default="constant",
                   help="the rate per step after --warmup-steps of linear warm-up: constant, or cosine decay to 0 "
                        "over the run (with --epochs its length is known once the first epoch ends; until then "
                        "the rate stays at --lr)")
    p.add_argument("--warmup-steps", type=int, default=0, help="steps of linear warm-up from 0 to --lr")
    p.add_argument("--clip-grad", type=float, default=0.2, help="gradient norm clipping")
    p.add_argument("--ckpt-every", type=int, default=500, help="steps between checkpoints (the last step always saves)")
    p.add_argument("--keep", type=int, default=3, help="checkpoints kept in --out")
    p.add_argument("--loader-workers", "--workers", type=int, default=2, action=OldSpelling, old=("--workers",),
                   help="data loader processes per rank (0: load in the trainer); --workers in the stages is "
                        "their number of processes")
    p.add_argument("--seed", type=int, default=0)
    add_langs_flag(p, default=LANGS, help="the languages to sample text from")
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
    v = p.add_argument_group("validation (text->video retrieval; the best checkpoint is RUN/best.pt)")
    v.add_argument("--val-shards", help="downstream shards holding the validation split (as --shards); scored at "
                                        "the last step, each epoch's end with --epochs, and every --val-every steps")
    v.add_argument("--val-every", type=int,
                   help="steps between validations; without it, only at epoch ends (--epochs) and the last step")
    v.add_argument("--val-split", default="val", help="the captions.json split of --val-shards scored")
    p.add_argument("--max-member-mb", metavar="KIND=MB,...", help=MEMBER_MB_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_flags(p)
    return p
