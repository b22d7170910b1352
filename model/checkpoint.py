"""Checkpoints: written atomically, read without unpickling.

A checkpoint is ``RUN/ckpt-000100.pt`` holding only tensors and plain values: the model
and optimiser state dicts, the step, and the model config, run config and data position
as JSON strings, and the trainer's own state (epochs done, the best validation so far;
``train_state``). ``RUN/best.pt``, the best checkpoint on the validation split, has the
same format with its validation scores in ``train_state["val"]``; it is not in the
``ckpt-*`` sequence, so a run directory given as ``--ckpt RUN`` still means the latest
checkpoint and the best one is named as ``--ckpt RUN/best.pt``. It is written to ``.ckpt-000100.pt.tmp-XXXX``, fsynced and renamed, so a
kill mid-write leaves a temporary file the loader never looks at, never a half checkpoint
under a final name. Loading uses ``torch.load(weights_only=True)``: a file holding
pickled objects is refused.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import uuid
from pathlib import Path

import torch

from shards.errors import UserError

CKPT_RE = re.compile(r"^ckpt-(\d{6,})\.pt$")


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, or holds more than tensors and plain values."""


def checkpoint_path(run: Path, step: int) -> Path:
    return Path(run) / f"ckpt-{step:06d}.pt"


def list_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """Final checkpoints of a run by step (temporary files from a killed writer are ignored)."""
    out = []
    if Path(run).is_dir():
        for p in Path(run).iterdir():
            m = CKPT_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
    return sorted(out)


def save_checkpoint(run: Path, step: int, model_state: dict, optimizer_state: dict | None, *,
                    model_config: str, run_config: dict, data_position: dict, keep: int = 3,
                    train_state: dict | None = None, name: str | None = None) -> Path:
    """Write the checkpoint atomically as ``ckpt-NNNNNN.pt`` (or ``name``, e.g. ``best.pt``) and
    prune the ``ckpt-*`` sequence to ``keep`` (0: keep all)."""
    path = checkpoint_path(run, step) if name is None else Path(run) / name
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    state = {
        "model": model_state,
        "optimizer": optimizer_state,
        "step": step,
        "model_config": model_config,
        "run_config": json.dumps(run_config, sort_keys=True),
        "data_position": json.dumps(data_position, sort_keys=True),
        "train_state": json.dumps(train_state or {}, sort_keys=True),
    }
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp.exists():
            tmp.unlink()
    for _, old in list_checkpoints(run)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's contents with its JSON fields decoded; CheckpointError when it cannot be
    read safely. ``path`` may be a run directory (its latest checkpoint)."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"{path} holds no checkpoint (ckpt-NNNNNN.pt)")
        path = found[-1][1]
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path} holds pickled objects, not only tensors and plain values; "
                              f"refusing to load it ({str(exc).splitlines()[0]})") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({str(exc).splitlines()[0]})") from exc
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise CheckpointError(f"{path} is not an mmp-train checkpoint (no model or model_config)")
    state["run_config"] = json.loads(state.get("run_config") or "{}")
    state["data_position"] = json.loads(state.get("data_position") or "{}")
    state["train_state"] = json.loads(state.get("train_state") or "{}")
    state["path"] = str(path)
    return state
