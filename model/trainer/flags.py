"""mmp-train's command line, built from ``TrainConfig`` (``model.trainer.config``): one flag per field,
its default the field's."""
from __future__ import annotations

import argparse

from pipeline.runtime.cli import add_common_flags, add_options, field_default
from pipeline.runtime.langs import add_langs_flag

from model.trainer.config import GROUPS, TrainConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmp-train",
        description="Train the MMP model (multilingual text encoder + video encoder, NCE losses) on mmp/ shards. "
                    "Runs on one CPU as is, and as DDP under torchrun (--nproc-per-node N).")
    add_options(p, TrainConfig, groups=GROUPS)
    add_langs_flag(p, default=tuple(field_default(TrainConfig, "langs")), help="the languages to sample text from")
    add_common_flags(p)
    return p
