"""``TrainConfig``: every setting of an mmp-train run, its default and what it means.

Each field is also its flag (``pipeline.runtime.cli.option``), so a default is written here
once; ``model.trainer.flags`` builds the parser from these fields, ``train`` takes the
dataclass, and ``run_config.json`` records it. ``None`` for the batch and the lengths means
the task's paper setting (``model.clips.TASK_SETTINGS``), resolved when the run starts.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.runtime.cli import OldSpelling, option
from shards.samples import LANGS

from model.clips import TASK_SETTINGS
from model.trainer.run_setup import MEMBER_MB_HELP, SAMPLE_MB_HELP

MODEL = "model"
VALIDATION = "validation"
GROUPS = {MODEL: "model (ignored with --init / --resume: the checkpoint's config wins)",
          VALIDATION: "validation (text->video retrieval; the best checkpoint is RUN/best.pt)"}


def _per_task(i: int) -> str:
    return ", ".join(f"{s[i]} {task}" for task, s in TASK_SETTINGS.items())


@dataclass
class TrainConfig:
    shards: str = option(None, "shard tars: brace pattern ('mmp/mmp-{000000..000099}.tar'), glob, directory, paths "
                         "or URLs joined with '::'", required=True)
    out: Path = option(None, "run directory: checkpoints, train_log.jsonl, summary.json", required=True, type=Path)
    text_model: str | None = option(None, "hub name (xlm-roberta-large, bert-base-multilingual-cased) or a "
                                    "save_pretrained directory; taken from --init / --resume checkpoints if omitted")
    task: str = option("pretrain", "pretrain: clips with subtitles (subs.json); finetune: downstream captions "
                       "(captions.json)", choices=sorted(TASK_SETTINGS))
    init: Path | None = option(None, "start from this checkpoint's weights (e.g. pre-training for fine-tuning)",
                               type=Path)
    new_video_input: bool = option(False, "with --init: keep the checkpoint's model but give it a new video input "
                                   "layer for these shards' --video-features (the paper's Multi30K: image region "
                                   "features on an MMP model), trained at --new-input-lr-scale times the rate")
    new_input_lr_scale: float = option(2.0, "rate multiple of the new video input layer (the paper's)", type=float)
    resume: bool = option(False, "continue from the latest checkpoint in --out, if any")
    steps: int | None = option(None, "optimiser steps in total (a resumed run counts on); 1000 when neither this nor "
                               "--epochs", type=int)
    epochs: int | None = option(None, "train for N passes over the shards' usable samples instead of --steps (a "
                                "resumed run counts on; the paper: 16 pre-training, 10 or 20 fine-tuning)", type=int)
    batch_size: int | None = option(None, f"global batch (split over ranks); default {_per_task(0)}", type=int)
    lr: float = option(2e-4, "Adam learning rate (the peak, with a schedule)", type=float)
    lr_schedule: str = option("constant", "the rate per step after --warmup-steps of linear warm-up: constant, or "
                              "cosine decay to 0 over the run (with --epochs its length is known once the first "
                              "epoch ends; until then the rate stays at --lr)", choices=["constant", "warmup-cosine"])
    warmup_steps: int = option(0, "steps of linear warm-up from 0 to --lr", type=int)
    clip_grad: float = option(0.2, "gradient norm clipping", type=float)
    ckpt_every: int = option(500, "steps between checkpoints (the last step always saves)", type=int)
    keep: int = option(3, "checkpoints kept in --out", type=int)
    loader_workers: int = option(2, "data loader processes per rank (0: load in the trainer); --workers in the "
                                 "stages is their number of processes", flags=("--loader-workers", "--workers"),
                                 type=int, action=OldSpelling, old=("--workers",))
    seed: int = option(0, "", type=int)
    langs: list = field(default_factory=lambda: list(LANGS))  # --langs (pipeline.runtime.langs)
    split: str = option("train", "finetune: the captions.json split to train on")
    max_text_len: int | None = option(None, f"tokens per text; default {_per_task(1)}", type=int)
    max_video_len: int | None = option(None, f"feature rows per clip; default {_per_task(2)}", type=int)
    video_features: str = option("r21d,s3d", "sample members concatenated as the video input (r21d, s3d, regions); "
                                 "samples lacking one are skipped and counted")
    s3d_fc: Path | None = option(None, "S3D checkpoint (s3d_howto100m.pth) whose fc.weight [512, 1024] / fc.bias "
                                 "[512] map the s3d member's 1024-d mixed_5c rows to the 512-d S3D embedding before "
                                 "the model, fixed (not trained) and saved with the model; the paper's r21d 512 + "
                                 "s3d 512 input", type=Path, metavar="PATH")
    device: str = option("auto", "", choices=["auto", "cpu", "cuda"])
    threads: int = option(0, "torch CPU threads per rank (0: torch's default)", type=int)
    d_model: int = option(1024, "joint embedding and head width", group=MODEL, type=int)
    heads: int = option(4, "attention heads per pooling head", group=MODEL, type=int)
    head_layers: int = option(2, "Transformer layers per pooling head", group=MODEL, type=int)
    dropout: float = option(0.3, "", group=MODEL, type=float)
    text_output_layer: int = option(12, "text encoder layer feeding the head (1-based)", group=MODEL, type=int)
    text_trainable_layers: int = option(3, "top text encoder layers, up to --text-output-layer, that are trained; "
                                        "the rest is frozen (the paper's: layers 10-12 of 12; 0 freezes the "
                                        "encoder; the output layer itself trains the embeddings too)",
                                        group=MODEL, type=int)
    text_freeze_below: int | None = option(None, argparse.SUPPRESS, group=MODEL, type=int)  # renamed: refused
    temperature: float = option(0.1, "NCE softmax temperature", group=MODEL, type=float)
    losses: str | None = option(None, "NCE terms trained, a comma list from inter (text-video), intra (each against "
                                "its masked copy), xling (the parallel text: its own inter and intra terms and the "
                                "visually-pivoted cross-lingual term); default inter,intra for pretrain, "
                                "inter,intra,xling for finetune")
    mask_prob: float = option(0.05, "intra-modal noise: share of tokens/frames masked", type=float)
    shuffle_buffer: int = option(100, "samples in each worker's shuffle buffer (about 1 MB each for a 5-minute "
                                 "video); shards are shuffled per epoch as well", type=int)
    log_every: int = option(10, "steps between log lines", type=int)
    val_shards: str | None = option(None, "downstream shards holding the validation split (as --shards); scored at "
                                    "the last step, each epoch's end with --epochs, and every --val-every steps",
                                    group=VALIDATION)
    val_every: int | None = option(None, "steps between validations; without it, only at epoch ends (--epochs) and "
                                   "the last step", group=VALIDATION, type=int)
    val_split: str = option("val", "the captions.json split of --val-shards scored", group=VALIDATION)
    max_member_mb: str | None = option(None, MEMBER_MB_HELP, metavar="KIND=MB,...")
    max_sample_mb: float | None = option(None, SAMPLE_MB_HELP, type=float, metavar="MB")
    no_progress: bool = option(False, "no progress bar")
