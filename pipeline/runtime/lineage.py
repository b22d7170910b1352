"""What a stage's output was built from, by content rather than by path.

A stage records these identities in its fingerprint (``config.json``), so a re-run over other
input is refused and a dataset copied or mounted elsewhere still resumes: names and contents
travel with a copy, absolute paths and mtimes do not.

- ``content_hash``: the sha256 of a file's whole content, read in 1 MiB chunks (about 670 MiB/s
  on one core here: 0.12 s for an 80 MiB caption file). Nothing is sampled, so no edit goes
  unnoticed. A ``DigestCache`` keeps the digests of local files by device, inode, size, mtime and
  ctime, so a re-run reads only what changed; any write to a file moves its ctime, which nobody
  can set back, so a rewrite at the same size and mtime is read again.
- ``file_identity``: a file's size, mtime and content hash.
- ``inputs_identity``: one digest over several files (or directories) by base name and
  content; ``directory_identity`` over a directory's files by relative name and content.
- ``stage_identity``: an upstream stage directory by its own fingerprint, which is built the
  same way, so the identity follows the data back to the crawl's video list.
- ``reopen_changed``: a re-run redoes exactly the finished units whose upstream unit changed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import sys
import time
from pathlib import Path

from shards.bounded import UnreadableInput, open_regular
from shards.errors import UserError, output_errors
from shards.layout import UnitFiles

log = logging.getLogger("mmp")

BLOCK = 1 << 20
# File times tick coarsely (a few ms on Linux): a file changed this recently may change again
# without its ctime moving, so its digest is not kept (it is read again next time, as git does).
RECENT_NS = 2_000_000_000


def _path(p):
    """A local path as ``Path``; a ``shards.storage.RemotePath`` (fsspec URL) as it is."""
    return p if hasattr(p, "fs") else Path(p)


class DigestCache:
    """Content digests of local files, kept in an SQLite file in an output's private work area.

    The key is what any change of the content changes: device, inode, size, mtime and ctime (in
    ns). A rename or a copy elsewhere is a miss (read again), never a stale hit. One writer at a
    time: the stage holds its output's run lock while it fingerprints its inputs.
    """

    def __init__(self, path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path))
        self.db.execute("CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, key TEXT, digest TEXT)")
        self.hits = 0

    @staticmethod
    def _key(st: os.stat_result) -> str:
        return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"

    def get(self, path: Path, st: os.stat_result) -> str | None:
        row = self.db.execute("SELECT key, digest FROM digests WHERE path = ?", (str(path),)).fetchone()
        if row is not None and row[0] == self._key(st):
            self.hits += 1
            return row[1]
        return None

    def put(self, path: Path, st: os.stat_result, digest: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO digests VALUES (?, ?, ?)", (str(path), self._key(st), digest))

    def close(self) -> None:
        self.db.commit()
        self.db.close()

    def __enter__(self) -> "DigestCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_digest_cache(out):
    """The ``DigestCache`` of a local output (``OUT/.lineage/digests.sqlite``), as a context manager;
    ``None`` in it for an output on an object store (its inputs are then read at every start)."""
    import contextlib

    from shards.storage import as_path

    out = as_path(out)
    if not isinstance(out, Path):
        return contextlib.nullcontext(None)
    with output_errors(out):
        return DigestCache(out / ".lineage" / "digests.sqlite")


def content_hash(path, cache: DigestCache | None = None) -> str:
    """The sha256 of ``size=N;`` and the whole content (the same as before for files under 64 MiB,
    which were hashed whole then too)."""
    path = _path(path)
    if not isinstance(path, Path):
        with path.open("rb") as f:
            return _sha256(f, path.stat().st_size)
    path = Path(os.path.abspath(path))
    if cache is not None:  # a hit costs a stat and a lookup, no open
        try:
            digest = cache.get(path, path.stat())
        except OSError:
            digest = None  # not there: open_regular below says so in one sentence
        if digest is not None:
            return digest
    with open(open_regular(path, "input file"), "rb") as f:  # a FIFO or a device is refused, not read
        st = os.fstat(f.fileno())  # the key of the file read, not of what the name says later
        digest = _sha256(f, st.st_size)
        if cache is not None:
            after = os.fstat(f.fileno())
            settled = time.time_ns() - after.st_ctime_ns > RECENT_NS
            if settled and after.st_mtime_ns == st.st_mtime_ns and after.st_ctime_ns == st.st_ctime_ns:
                cache.put(path, st, digest)  # not a file written while it was read, or just before
    return digest


def _sha256(f, size: int) -> str:
    h = hashlib.sha256(f"size={size};".encode())
    for chunk in iter(lambda: f.read(BLOCK), b""):
        h.update(chunk)
    return h.hexdigest()


def file_identity(path) -> dict:
    st = _path(path).stat()
    return {"size": st.st_size, "mtime": int(st.st_mtime), "sha256": content_hash(path)}


def directory_identity(path, cache: DigestCache | None = None) -> str:
    """A digest of a directory's files by relative name and content (a feature directory holds one
    file per video: a ``cache`` makes a re-run stat them, not read them)."""
    root = _path(path)
    h = hashlib.sha256()
    if not isinstance(root, Path):  # an object store prefix: its objects, one level
        for p in sorted(root.iterdir(), key=lambda p: p.name):
            h.update(f"{p.name}\0{content_hash(p)}\n".encode())
        return h.hexdigest()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            try:
                what = content_hash(p, cache)
            except UnreadableInput:  # a FIFO, a device, a dangling link: named, never read
                what = "not a regular file"
            h.update(f"{p.relative_to(root).as_posix()}\0{what}\n".encode())
    return h.hexdigest()


def inputs_identity(paths, cache: DigestCache | None = None) -> str:
    """One digest over files and directories, by base name and content, in the order given."""
    h = hashlib.sha256()
    for p in map(_path, paths):
        try:
            what = directory_identity(p, cache) if p.is_dir() else content_hash(p, cache)
        except UnreadableInput as exc:  # an input the user named: a FIFO, a device, gone
            raise UserError(str(exc)) from None
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
