"""What a stage's output was built from, by content rather than by path.

A stage records these identities in its fingerprint (``config.json``), so a re-run over other
input is refused and a dataset copied or mounted elsewhere still resumes: names and contents
travel with a copy, absolute paths and mtimes do not.

- ``file_identity``: a file's size, mtime and a content hash. The hash reads the whole file
  up to 64 MiB and, above that, the size and 16 evenly spaced 1 MiB blocks: the published
  caption files run to many GB and are read at every start, and files that differ in size
  or in any sampled block are told apart without reading them twice.
- ``inputs_identity``: one digest over several files (or directories) by base name and
  content; ``directory_identity`` lists a directory's files by relative name and size.
- ``stage_identity``: an upstream stage directory by its own fingerprint, which is built the
  same way, so the identity follows the data back to the crawl's video list.
- ``reopen_changed``: a re-run redoes exactly the finished units whose upstream unit changed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path

from shards.errors import output_errors
from shards.layout import UnitFiles

log = logging.getLogger("mmp")

WHOLE_BELOW = 64 << 20
BLOCK = 1 << 20
BLOCKS = 16


def _path(p):
    """A local path as ``Path``; a ``shards.storage.RemotePath`` (fsspec URL) as it is."""
    return p if hasattr(p, "fs") else Path(p)


def content_hash(path) -> str:
    path = _path(path)
    size = path.stat().st_size
    h = hashlib.sha256(f"size={size};".encode())
    with path.open("rb") as f:
        if size <= WHOLE_BELOW:
            for chunk in iter(lambda: f.read(BLOCK), b""):
                h.update(chunk)
        else:
            for i in range(BLOCKS):
                f.seek((size - BLOCK) * i // (BLOCKS - 1))
                h.update(f.read(BLOCK))
    return h.hexdigest()


def file_identity(path) -> dict:
    st = _path(path).stat()
    return {"size": st.st_size, "mtime": int(st.st_mtime), "sha256": content_hash(path)}


def directory_identity(path) -> str:
    """A digest of a directory's files by relative name and size (their contents are not read:
    a feature directory holds one file per video)."""
    root = _path(path)
    h = hashlib.sha256()
    if not isinstance(root, Path):  # an object store prefix: its objects, one level
        for p in sorted(root.iterdir(), key=lambda p: p.name):
            h.update(f"{p.name}\0{p.stat().st_size}\n".encode())
        return h.hexdigest()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            h.update(f"{p.relative_to(root).as_posix()}\0{p.stat().st_size}\n".encode())
    return h.hexdigest()


def inputs_identity(paths) -> str:
    """One digest over files and directories, by base name and content, in the order given."""
    h = hashlib.sha256()
    for p in map(_path, paths):
        what = directory_identity(p) if p.is_dir() else content_hash(p)
        h.update(f"{p.name}\0{what}\n".encode())
    return h.hexdigest()


def stage_identity(directory) -> str | None:
    """The digest of a stage directory's fingerprint (None when it has no readable config.json)."""
    try:
        doc = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError, RecursionError):
        return None
    fingerprint = doc.get("fingerprint") if isinstance(doc, dict) else None
    if not isinstance(fingerprint, dict):
        return None
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def unit_identity(files) -> str | None:
    """The sha256 of a unit's stats file: it names the unit's tar and parquet by their sha256,
    so it changes whenever the unit is rewritten (None while the unit is not complete)."""
    try:
        return hashlib.sha256(files.stats.read_bytes()).hexdigest()
    except (FileNotFoundError, OSError):
        return None


def stale(built_from: dict | None, now: dict | None) -> bool:
    """Whether a unit recorded as built from ``built_from`` must be redone from ``now``: only
    when both are known and differ (units written before identities were recorded are kept)."""
    return bool(built_from) and bool(now) and built_from != now


def reopen_changed(stage, out, done: list) -> list:
    """The finished units among ``done`` whose upstream changed since they were built (their
    ``Stage.built_from`` now differs from the one in their stats): their stats file, the
    completion mark, is removed, so they are done again."""
    redo = []
    for unit in done:
        now = stage.built_from(unit)
        if not now:
            continue  # no upstream unit: nothing to compare
        files = UnitFiles(out, stage.name, unit.index)
        try:
            recorded = json.loads(files.stats.read_text()).get("built_from")
        except (OSError, ValueError, RecursionError, AttributeError):
            continue  # a damaged stats file is mmp-verify's to report
        if stale(recorded, now):
            with output_errors(out):
                files.stats.unlink()
            redo.append(unit)
    if redo:
        log.warning("%s: %d finished units are redone: what they were built from changed", stage.name, len(redo))
        print(f"{stage.name}: {len(redo)} finished units are redone because their upstream units changed",
              file=sys.stderr)
    return redo
