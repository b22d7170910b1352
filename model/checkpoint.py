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
import stat
import uuid
from pathlib import Path

import torch

from shards.errors import UserError

CKPT_RE = re.compile(r"^ckpt-(\d{6,})\.pt$")
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6


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


# What ``save_checkpoint`` writes and ``load_checkpoint`` checks: each JSON field holds an object.
_JSON_FIELDS = ("model_config", "run_config", "data_position", "train_state")


def _not_a_checkpoint(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is not an mmp-train checkpoint ({why}); give a ckpt-NNNNNN.pt or best.pt "
                           "that mmp-train wrote, or its run directory")


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's contents with its JSON fields decoded; CheckpointError, naming the file, when
    it cannot be read safely or is not what ``save_checkpoint`` writes. ``path`` may be a run
    directory (its latest checkpoint).

    Only a regular file in the zip format ``torch.save`` writes reaches ``torch.load`` (with
    ``weights_only=True``): any other file (text, a FIFO, a device, an older pickle format) is
    refused before it is read, and whatever ``torch.load`` raises on a damaged or foreign zip is a
    fault of the file, said in one sentence.
    """
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"{path} holds no checkpoint (ckpt-NNNNNN.pt)")
        path = found[-1][1]
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} does not exist or cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise _not_a_checkpoint(path, "not a regular file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror})") from None
    if magic != ZIP_MAGIC:
        raise _not_a_checkpoint(path, "not the zip format torch.save writes")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path} holds pickled objects, not only tensors and plain values; "
                              f"refusing to load it ({str(exc).splitlines()[0]})") from exc
    except Exception as exc:  # noqa: BLE001 - anything torch.load raises on these bytes is the file's fault
        first = (str(exc).splitlines() or [type(exc).__name__])[0].split(". ")[0][:200]
        raise CheckpointError(f"{path} is not a readable checkpoint (damaged, cut short, or not torch.save's: "
                              f"{first})") from exc
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise _not_a_checkpoint(path, "no model weights")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["model"].items()):
        raise _not_a_checkpoint(path, "its model entry is not a dict of named tensors")
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise _not_a_checkpoint(path, "no step count")
    for name in _JSON_FIELDS:
        text = state.get(name, "{}" if name != "model_config" else None)
        try:
            value = json.loads(text) if isinstance(text, (str, bytes)) else None
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            raise _not_a_checkpoint(path, f"{'no' if text is None else 'a malformed'} {name}")
        if name != "model_config":
            state[name] = value
    _check_model_config(path, state["model_config"])
    state["path"] = str(path)
    return state


def _check_model_config(path: Path, text: str) -> None:
    from model.mmp import MMPConfig

    try:
        MMPConfig.from_json(text)
    except (TypeError, ValueError, KeyError) as exc:
        raise _not_a_checkpoint(path, f"its model_config does not describe an MMP model: {exc}") from None


def load_weights(model, weights: dict, path, strict: bool = True):
    """A checkpoint's weights into ``model``; CheckpointError naming ``path`` when they do not fit
    the model its own config describes (other names or shapes)."""
    try:
        return model.load_state_dict(weights, strict=strict)
    except RuntimeError as exc:
        lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
        raise CheckpointError(f"{path}: its weights do not fit the model its config describes "
                              f"({' '.join(lines[1:3])[:300] or lines[0][:300]})") from None
