"""The downstream sets' feature files: one .npy per video or image, or one array per split;
read without unpickling, checked (shape, width, finite, within float16) and hashed once each."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shards.bounded import UnreadableInput, read_regular
from shards.codec import load_npy
from shards.errors import UserError
from shards.writer import sha256_file

from pipeline.downstream.annotations import Item

log = logging.getLogger("mmp.prepare")

FEATURE_DIMS = {"r21d": 512, "s3d": 1024, "regions": 0}  # 0: any width
FLOAT16_MAX = 65504.0
MAX_FEATURE_BYTES = 384 * 2**20  # one video's features: a 3-hour video's are 44 MB of float32

@dataclass(frozen=True)
class FeatureSource:
    """Where one feature member comes from: ``{id}.npy`` files in a directory, or per-split arrays."""

    name: str
    path: Path
    dim: int  # expected last dimension; 0 accepts any
    per_split: dict = field(default_factory=dict)  # split -> [N, R, D] .npy (Multi30K)


_HASHES: dict[str, str] = {}
_ARRAYS: dict[str, np.ndarray] = {}


def _cached_hash(path: Path) -> str:
    key = str(path)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def open_array(path: Path, mmap: bool = False) -> np.ndarray:
    """``np.load`` that never unpickles; ValueError saying why a file cannot be used.

    Per-split arrays are memory-mapped so a worker reads only the rows of its unit."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as exc:
        raise ValueError(f"refused: {path.name} is not a plain numeric .npy array; pickled data is never loaded ({exc})") from None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path.name} is not a .npy array file ({type(exc).__name__}: {exc})") from None


def check_array(array: np.ndarray, label: str, ndim: int, dim: int) -> np.ndarray:
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        raise ValueError(f"{label} is a {getattr(array, 'dtype', type(array))} array, not float")
    if array.ndim != ndim:
        raise ValueError(f"{label} has shape {tuple(array.shape)}, expected {ndim} dimensions")
    if array.shape[0] == 0:
        raise ValueError(f"{label} has no rows")
    if dim and array.shape[-1] != dim:
        raise ValueError(f"{label} has width {array.shape[-1]}, expected {dim}")
    array = np.asarray(array)
    if not np.isfinite(array).all():
        raise ValueError(f"{label} holds NaN or infinite values")
    if np.abs(array).max() > FLOAT16_MAX:
        raise ValueError(f"{label} holds values beyond float16's range")
    return array


def load_feature(source: FeatureSource, item: Item) -> tuple[np.ndarray, dict] | None:
    """The item's array and its meta entry; None when it has no feature file; ValueError when unusable."""
    if item.group in source.per_split and item.index is not None:
        path = source.per_split[item.group]
        if str(path) not in _ARRAYS:
            _ARRAYS[str(path)] = open_array(path, mmap=True)
        array = check_array(_ARRAYS[str(path)][item.index], f"{path.name}[{item.index}]", 2, source.dim)
        file_entry = {"file": path.name, "index": item.index, "sha256": _cached_hash(path)}
    else:
        path = source.path / f"{item.video_id}.npy"
        if not path.is_file():
            return None
        try:
            data = read_regular(path, MAX_FEATURE_BYTES, "feature file")
        except UnreadableInput as exc:
            raise ValueError(str(exc)) from None
        array = check_array(load_npy(data, path.name), path.name, 2, source.dim)
        file_entry = {"file": path.name, "sha256": sha256_file(path)}
    return array, dict(file_entry, rows=int(array.shape[0]), dim=int(array.shape[-1]))


def parse_features(specs: list[str], allowed: tuple[str, ...], dims: list[str]) -> list[tuple[str, Path, int]]:
    overrides = {}
    for spec in dims or []:
        name, _, value = spec.partition("=")
        if name not in allowed or not value.isdigit():
            raise UserError(f"--feature-dim {spec!r}: expected NAME=WIDTH with NAME one of {', '.join(allowed)}")
        overrides[name] = int(value)
    out = []
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or name not in allowed or not path:
            raise UserError(f"--features {spec!r}: expected NAME=PATH with NAME one of {', '.join(allowed)}")
        if any(n == name for n, _, _ in out):
            raise UserError(f"--features names {name} twice")
        if not Path(path).exists():
            raise UserError(f"--features {name}={path}: no such file or directory")
        out.append((name, Path(path), overrides.get(name, FEATURE_DIMS[name])))
    if not out:
        raise UserError(f"give the features: --features {'=DIR '.join(allowed)}=DIR (one or more)")
    return out


def region_source(name: str, path: Path, dim: int, splits: list[str]) -> FeatureSource:
    """Per-image files, or per-split ``[N, R, D]`` arrays (checked here: a bad one is one clear error)."""
    per_split = {}
    if path.is_file():
        if len(splits) != 1:
            raise UserError(f"--features regions={path} is one array; convert one --splits at a time, "
                            f"or give a directory holding SPLIT.npy per split")
        per_split = {splits[0]: path}
    else:
        per_split = {s: path / f"{s}.npy" for s in splits if (path / f"{s}.npy").is_file()}
    for split, p in per_split.items():
        try:
            array = open_array(p, mmap=True)
        except ValueError as exc:
            raise UserError(f"--features regions: {exc}") from None
        if array.dtype.kind != "f" or array.ndim != 3:
            raise UserError(f"--features regions: {p} is a {array.dtype} array of shape {tuple(array.shape)}; "
                            f"expected float [images, regions, dim]")
    return FeatureSource(name, path, dim, per_split)
