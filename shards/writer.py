"""Writing one work unit: a WebDataset tar, a parquet table and, last, the stats file.

Each file is written under a temporary name in the same directory and renamed into
place, so a kill at any moment never leaves a partial file under a final name. The
stats file goes last and marks the unit complete. When the directory is an fsspec
URL (an object store, which has no rename), the temporaries are local files and each
is uploaded under its final name in one PUT, the stats object last.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tarfile
import time
import uuid
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from shards.codec import json_bytes
from shards.layout import SampleLayout, UnitFiles
from shards.members import FORBIDDEN_SUFFIXES  # pickle formats: never written
from shards.storage import RemotePath, as_path, open_file

STATS_VERSION = 1


def sha256_file(path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open_file(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename (one PUT on an object store)."""
    path = as_path(path)
    if isinstance(path, RemotePath):
        path.write_bytes(data)
        return
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_json(path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())


def _encode(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (dict, list)):
        return json_bytes(value)
    raise TypeError(f"cannot write a sample member of type {type(value).__name__}; give bytes, str, dict or list")


class UnitWriter:
    """Collects one unit's samples and rows, and publishes them atomically.

    Use as a context manager. Leaving the block normally publishes the tar, the
    parquet and then the stats file; leaving it with an exception removes the
    temporaries and publishes nothing, so the unit is redone on the next run.
    """

    def __init__(self, files: UnitFiles, schema: pa.Schema, layout: SampleLayout | None = None):
        self.files = files
        self.schema = schema
        self.layout = layout
        self.counts: Counter = Counter()
        self.rows: list[dict] = []
        self.sample_keys: list[str] = []
        self._token = uuid.uuid4().hex[:8]
        tmp_dir = files.temp_directory
        self._tar_tmp = tmp_dir / f".{files.stem}.tar.tmp-{self._token}"
        self._pq_tmp = tmp_dir / f".{files.stem}.parquet.tmp-{self._token}"
        self._tar: tarfile.TarFile | None = None
        self._started = time.time()
        self.extra: dict = {}  # further fields of the stats file (e.g. ``built_from``)

    def __enter__(self) -> "UnitWriter":
        self.files.directory.mkdir(parents=True, exist_ok=True)
        self._tar_tmp.parent.mkdir(parents=True, exist_ok=True)
        self._tar = tarfile.open(self._tar_tmp, "w", format=tarfile.USTAR_FORMAT)
        return self

    def write_sample(self, key: str, members: dict) -> None:
        """Add one sample: ``members`` maps a member name (``info.json``, ``en.vtt``) to its content, or
        to a ``pathlib.Path`` of a local file whose bytes are streamed in (a video: never held in memory)."""
        if "." in key or "/" in key or not key:
            raise ValueError(f"sample key {key!r} must be non-empty and contain no '.' or '/'")
        if self.layout is not None:
            problems = self.layout.check(members)
            if problems:
                raise ValueError(f"sample {key}: " + "; ".join(problems))
        mtime = int(self._started)
        for name in sorted(members):
            if name.endswith(FORBIDDEN_SUFFIXES):
                raise ValueError(f"sample {key}: member {name!r} would be unpickled by readers; not written")
            info = tarfile.TarInfo(f"{key}.{name}")
            info.mtime = mtime
            info.mode = 0o444
            if isinstance(members[name], os.PathLike):
                with open(members[name], "rb") as f:
                    info.size = os.fstat(f.fileno()).st_size
                    self._tar.addfile(info, f)
                continue
            data = _encode(members[name])
            info.size = len(data)
            self._tar.addfile(info, io.BytesIO(data))
        self.sample_keys.append(key)

    def add_row(self, row: dict) -> None:
        """Add one parquet row (one per input video, failures included)."""
        self.rows.append(row)
        status = row.get("status")
        if status is not None:
            self.counts[f"status/{status}"] += 1

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def _publish(self, extra: dict | None) -> dict:
        self._tar.close()
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        pq.write_table(table, self._pq_tmp)
        for tmp in (self._tar_tmp, self._pq_tmp):
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        sample_set = set(self.sample_keys)
        failures = sum(1 for r in self.rows if r.get("video_id") not in sample_set)
        stats = {
            "version": STATS_VERSION,
            "unit": self.files.index,
            "prefix": self.files.prefix,
            "layout": self.layout.stage if self.layout is not None else None,
            "rows": len(self.rows),
            "samples": len(self.sample_keys),
            "failures": failures,
            "counts": dict(sorted(self.counts.items())),
            "files": {
                "tar": {"name": self.files.tar.name, "size": self._tar_tmp.stat().st_size,
                        "sha256": sha256_file(self._tar_tmp)},
                "parquet": {"name": self.files.parquet.name, "size": self._pq_tmp.stat().st_size,
                            "sha256": sha256_file(self._pq_tmp)},
            },
            "started": self._started,
            "finished": time.time(),
            "seconds": round(time.time() - self._started, 3),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        stats.update(self.extra)
        if extra:
            stats.update(extra)
        if self.files.remote:
            self.files.tar.upload(self._tar_tmp)
            self.files.parquet.upload(self._pq_tmp)
            atomic_write_json(self.files.stats, stats)
            self._tar_tmp.unlink()
            self._pq_tmp.unlink()
        else:
            os.replace(self._tar_tmp, self.files.tar)
            os.replace(self._pq_tmp, self.files.parquet)
            atomic_write_json(self.files.stats, stats)
        return stats

    def close(self, extra: dict | None = None) -> dict:
        try:
            return self._publish(extra)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Remove the temporaries; never raises (it runs while another error is on its way)."""
        if self._tar is not None and not self._tar.closed:
            try:
                self._tar.close()
            except OSError:  # closing flushes; on a full disk that fails too
                pass
        for tmp in (self._tar_tmp, self._pq_tmp):
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
            return False
        try:
            self.stats = self._publish(None)
        except BaseException:  # a full disk, a kill signal: no temporaries stay behind
            self.abort()
            raise
        return False
