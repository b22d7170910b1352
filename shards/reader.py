"""Reading work units back: samples from a tar, rows from a parquet file.

Nothing here unpickles: JSON and text are decoded as such, arrays are ``.npy``
loaded with ``allow_pickle=False``.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

from .layout import FORBIDDEN_SUFFIXES, UnitFiles, completed_units


class ShardError(Exception):
    """A shard that cannot be read (truncated, not a tar, ...)."""


def split_member_name(name: str) -> tuple[str, str]:
    """``dir/KEY.en.vtt`` -> (``KEY``, ``en.vtt``), WebDataset's rule: the key ends at the first dot."""
    base = name.rsplit("/", 1)[-1]
    key, _, member = base.partition(".")
    return key, member


def iter_samples(path: Path) -> Iterator[dict]:
    """Yield one dict per sample: ``{"__key__": key, member: bytes, ...}``, in tar order."""
    current: dict | None = None
    try:
        with tarfile.open(path, "r:") as tar:
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


def read_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def load_json(data: bytes):
    return json.loads(data.decode("utf-8"))


def load_npy(data: bytes):
    import numpy as np

    return np.load(io.BytesIO(data), allow_pickle=False)


def iter_stage_samples(directory: Path, prefix: str) -> Iterator[tuple[UnitFiles, dict]]:
    """Every sample of every completed unit of a stage."""
    for unit in completed_units(Path(directory), prefix):
        for sample in iter_samples(unit.tar):
            yield unit, sample
