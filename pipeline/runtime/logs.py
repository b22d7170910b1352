"""Where a stage's logs go: one file per host and process role under ``out/logs`` (or, for an
output on an object store, a local directory named after it), warnings also on stderr."""
from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path

from shards.private import private_dir
from shards.storage import RemotePath, as_path, staging_name


def log_dir_for(out) -> Path:
    """``out/logs`` for a local ``out``; for a URL, a local directory named after it
    (``$MMP_LOG_DIR``, default ``$TMPDIR/mmp-logs-<uid>``, a private directory: ``shards.private``):
    log files are appended line by line, which an object store cannot do."""
    out = as_path(out)
    if isinstance(out, RemotePath):
        return _remote_log_base() / staging_name(out)
    return out / "logs"


def _remote_log_base() -> Path:
    import tempfile

    return Path(os.environ.get("MMP_LOG_DIR") or Path(tempfile.gettempdir()) / f"mmp-logs-{os.getuid()}")


def setup_logging(out, stage: str, role: str) -> Path:
    """Log to ``out/logs/{stage}-{host}-{role}.log`` (see ``log_dir_for``); warnings also to stderr."""
    log_dir = log_dir_for(out)
    if isinstance(as_path(out), RemotePath):
        private_dir(_remote_log_base())
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{stage}-{socket.gethostname()}-{role}.log"
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_mmp", False):
            root.removeHandler(handler)
    fh = logging.FileHandler(path)
    fh.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    fh._mmp = True
    root.addHandler(fh)
    root.setLevel(logging.INFO)
    if role == "main":
        sh = logging.StreamHandler(sys.stderr)
        sh.setLevel(logging.WARNING)
        sh.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        sh._mmp = True
        root.addHandler(sh)
    return path
