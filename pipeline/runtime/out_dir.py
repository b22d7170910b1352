"""What ``--out`` names: the stage's own directory, in every command.

``mmp-crawl --out DATA/crawl`` writes ``crawl-*.tar`` straight into ``DATA/crawl``, as
``mmp-align --out DATA/aligned`` always did. ``mmp-crawl`` and ``mmp-import`` used to take
the dataset root and add ``crawl/`` or ``aligned/`` themselves; ``stage_out`` still
understands that old spelling where it is unambiguous, so an earlier run's command
resumes where its output is instead of starting a new run one level up.
"""
from __future__ import annotations

import json
import sys

from shards.storage import as_path


def holds_run(directory, stage: str) -> bool:
    """Whether ``directory`` holds a run of ``stage``: its config.json, or a unit file of it."""
    try:
        if _config_stage(directory) == stage:
            return True
        return any(True for _ in as_path(directory).glob(f"{stage}-*"))
    except OSError:  # not a directory (a file in the way): prepare_output says so
        return False


def _config_stage(directory) -> str | None:
    path = as_path(directory) / "config.json"
    try:
        if not path.is_file():
            return None
        doc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return doc.get("stage") if isinstance(doc, dict) else None


def stage_out(out, stage: str, prog: str, what: str | None = None):
    """The directory a stage writes into for ``--out OUT`` (a path or an fsspec URL).

    ``OUT`` itself, unless it holds no run of ``stage`` while ``OUT/<stage>`` holds one
    (an earlier run given the dataset root): then ``OUT/<stage>``, said in one line.
    """
    out = as_path(out)
    old = out / stage
    if holds_run(out, stage) or _config_stage(old) != stage:
        return out
    what = what or stage
    print(f"{prog}: note: --out is the {stage} directory itself now; resuming the {what} in {old} "
          f"(give --out {old})", file=sys.stderr)
    return old
