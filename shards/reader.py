"""Reading work units back: samples from a tar, rows from a parquet file.

Nothing here unpickles: JSON and text are decoded as such, arrays are ``.npy``
loaded with ``allow_pickle=False``. Paths may be local or fsspec URLs
(``shards.storage``).
"""
from __future__ import annotations

import io
import json
import tarfile
from contextlib import contextmanager
from typing import Iterator

import pyarrow.parquet as pq

from .layout import FORBIDDEN_SUFFIXES, UnitFiles, completed_units
from .storage import RemotePath, as_path


class ShardError(Exception):
    """A shard that cannot be read (truncated, not a tar, ...)."""


def split_member_name(name: str) -> tuple[str, str]:
    """``dir/KEY.en.vtt`` -> (``KEY``, ``en.vtt``), WebDataset's rule: the key ends at the first dot."""
    base = name.rsplit("/", 1)[-1]
    key, _, member = base.partition(".")
    return key, member


@contextmanager
def _open_tar(path):
    path = as_path(path)
    if not isinstance(path, RemotePath):
        with tarfile.open(path, "r:") as tar:
            yield tar
        return
    with path.open("rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        yield tar


def iter_samples(path) -> Iterator[dict]:
    """Yield one dict per sample: ``{"__key__": key, member: bytes, ...}``, in tar order."""
    current: dict | None = None
    try:
        with _open_tar(path) as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, member = split_member_name(info.name)
                if member.endswith(FORBIDDEN_SUFFIXES):
                    raise ShardError(f"{path}: member {info.name!r} is a pickle format; refusing to read it")
                data = tar.extractfile(info).read()
                if current is None or current["__key__"] != key:
                    if current is not None:
                        yield current
                    current = {"__key__": key}
                current[member] = data
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ShardError(f"{path}: {exc}") from exc
    if current is not None:
        yield current


def read_rows(path) -> list[dict]:
    path = as_path(path)
    if isinstance(path, RemotePath):
        with path.open("rb") as f:
            return pq.read_table(f).to_pylist()
    return pq.read_table(path).to_pylist()


def load_json(data: bytes):
    return json.loads(data.decode("utf-8"))


def load_npy(data: bytes):
    import numpy as np

    return np.load(io.BytesIO(data), allow_pickle=False)


def read_unit(files: UnitFiles) -> tuple[list[dict], dict, str | None]:
    """A completed unit as (parquet rows, ``{key: sample}``, the tar's error or None).

    The rows are the unit's ledger; an unreadable tar leaves the samples empty and says
    why, so a later stage records each video's failure instead of losing the unit.
    """
    rows = read_rows(files.parquet)
    try:
        samples = {s.pop("__key__"): s for s in iter_samples(files.tar)}
    except ShardError as exc:
        return rows, {}, str(exc)
    return rows, samples, None


def iter_stage_samples(directory, prefix: str) -> Iterator[tuple[UnitFiles, dict]]:
    """Every sample of every completed unit of a stage."""
    for unit in completed_units(directory, prefix):
        for sample in iter_samples(unit.tar):
            yield unit, sample
