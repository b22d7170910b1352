"""The run directory of mmp-train: whether ``--out`` already holds a run, and what a resume keeps.

A run is its settings as much as its weights. ``--out`` that holds a run (a checkpoint or a
``run_config.json``) is refused without ``--resume``, so a second run never prunes the first
one's checkpoints or rewrites its config. With ``--resume`` every setting in ``RUN_SETTINGS``
that the command does not give comes from the run's own ``run_config.json``; one that it gives
with another value is refused, naming both (a forgotten ``--batch-size 4`` must not become the
default 64 half-way through a run). What may change on a resume: the length of the run
(``--steps`` / ``--epochs``), where the data and the text model lie, workers, logging,
checkpoint cadence and validation.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from model.clips import TASK_SETTINGS
from model.trainer.run_setup import ConfigError, parse_losses
from shards.errors import check_writable as writable

# Free bytes an output directory needs before any work: results and logs are kilobytes.
MIN_FREE_BYTES = 1 << 20

# Settings that define what a run trains; ``task`` first, the others read its defaults.
RUN_SETTINGS = ("task", "batch_size", "lr", "lr_schedule", "warmup_steps", "clip_grad", "losses",
                "max_text_len", "max_video_len", "langs", "split", "video_features", "mask_prob", "seed")
_TASK_SETTING = {"batch_size": 0, "max_text_len": 1, "max_video_len": 2}  # index in TASK_SETTINGS


def given_flags(parser: argparse.ArgumentParser, argv) -> set[str]:
    """The ``dest`` of every option the command line gives (whatever its value)."""
    probe = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:  # the same options, every default suppressed
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            kwargs = {"dest": action.dest, "default": argparse.SUPPRESS}
            if action.nargs == 0:
                kwargs["action"] = "store_const"
                kwargs["const"] = True
            else:
                kwargs["nargs"] = action.nargs
            probe.add_argument(*action.option_strings, **kwargs)
    known, _ = probe.parse_known_args(argv)
    return set(vars(known))


def check_writable(directory: Path, out=None, need: int = MIN_FREE_BYTES) -> None:
    """``shards.errors.check_writable`` with the trainer's free-space floor."""
    writable(directory, need, out)


def resolve_paths(opts) -> None:
    """Paths as absolute ones, so the run config and the model config name them from anywhere
    (``mmp-eval`` run from another directory finds the text model)."""
    for name, value in vars(opts).items():
        if isinstance(value, Path):
            setattr(opts, name, value.expanduser().resolve())
    if opts.text_model and os.path.exists(os.path.expanduser(opts.text_model)):
        opts.text_model = str(Path(opts.text_model).expanduser().resolve())


def _comparable(name: str, value, task: str):
    """One form per setting: the task's default for an unset batch or length, terms and lists as tuples."""
    if name in _TASK_SETTING and value is None:
        return TASK_SETTINGS[task][_TASK_SETTING[name]]
    if name == "losses":
        return parse_losses(value if value is None or isinstance(value, str) else ",".join(value), task)
    if name in ("langs", "video_features"):
        items = value.split(",") if isinstance(value, str) else value
        return tuple(v.strip() for v in items if v.strip())
    if isinstance(value, int) and not isinstance(value, bool) and name in ("lr", "clip_grad", "mask_prob"):
        return float(value)
    return value


def _restored(name: str, value):
    """A saved setting as its flag gives it: ``--langs`` a list (an older run_config.json holds "en,de"),
    the other lists as their comma text."""
    if name == "langs":
        return list(_comparable(name, value, "pretrain"))
    return ",".join(value) if isinstance(value, list) else value


def _shown(name: str, value) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


def saved_run(out: Path) -> dict | None:
    """The settings of the run ``out`` holds, or None when it holds none."""
    from model.checkpoint import list_checkpoints, load_checkpoint

    if not out.is_dir():
        return None
    config = out / "run_config.json"
    if config.is_file():
        try:
            saved = json.loads(config.read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise ConfigError(f"--out {out} holds an unreadable run_config.json ({exc}); "
                              "move it away to start again, or give another --out") from None
        if not isinstance(saved, dict):
            raise ConfigError(f"--out {out}: run_config.json is not a JSON object; give another --out")
        return saved
    if list_checkpoints(out):
        return load_checkpoint(out)["run_config"]
    return None


def check_run_dir(opts, given: set[str]) -> None:
    """Refuse an ``--out`` that holds a run without ``--resume``; on a resume, take the run's own
    settings for what the command leaves out and refuse what it gives otherwise."""
    from model.checkpoint import list_checkpoints

    if opts.out.exists() and not opts.out.is_dir():
        raise ConfigError(f"--out {opts.out} is a file, not a run directory")
    saved = saved_run(opts.out)
    if saved is None:
        return
    if not opts.resume:
        found = list_checkpoints(opts.out)
        held = f"checkpoints up to step {found[-1][0]}" if found else "its run_config.json, no checkpoint yet"
        raise ConfigError(f"--out {opts.out} holds a run ({held}); add --resume to continue it, "
                          "or give another --out for a new run")
    conflicts = []
    for name in RUN_SETTINGS:
        if name not in saved:
            continue
        task = saved.get("task", "pretrain")
        if name in given:
            mine, theirs = _comparable(name, getattr(opts, name), opts.task), _comparable(name, saved[name], task)
            if mine != theirs:
                conflicts.append(f"--{name.replace('_', '-')} {_shown(name, mine)} (the run's: {_shown(name, theirs)})")
        else:
            setattr(opts, name, _restored(name, saved[name]))
    if conflicts:
        raise ConfigError(f"--resume continues the run in {opts.out} with its own settings, but this command "
                          f"changes {'; '.join(conflicts)}; drop the flag, or give another --out for a new run")
    if "steps" not in given and "epochs" not in given:  # the run's own length
        opts.steps, opts.epochs = saved.get("steps"), saved.get("epochs")
