"""``mmp-prepare``: downstream retrieval sets (MSR-VTT, VATEX, Multi30K) as ``mmp/`` shards.

The public annotation files are read as they are published and, with pre-extracted
features, written in the training-shard layout so one loader serves pre-training,
fine-tuning and evaluation. Per sample (key = the dataset's video or image id):
``r21d.npy`` / ``s3d.npy`` (float16 ``[T, dim]``) or ``regions.npy`` (float16 ``[R, D]``),
``captions.json`` (``{"video_id", "split", "captions": {lang: [...]}, "parallel": [{lang:
caption}, ...]}``) and ``meta.json``. One parquet row per input item, failures included.

Formats read: see ``model/downstream.py``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.import_features import npy_bytes
from pipeline.stage import (Stage, Unit, UserError, add_executor_args, executor_options, print_summary, run_stage,
                            video_done)
from shards.layout import MMP
from shards.writer import UnitWriter, sha256_file

from .downstream import KEY_RE, Item, msrvtt_items, multi30k_items, vatex_items

log = logging.getLogger("mmp.prepare")

FEATURE_DIMS = {"r21d": 512, "s3d": 1024, "regions": 0}  # 0: any width
VIDEO_FEATURES = ("r21d", "s3d")
FLOAT16_MAX = 65504.0

SCHEMA = pa.schema([
    ("video_id", pa.string()), ("dataset", pa.string()), ("split", pa.string()), ("status", pa.string()),
    ("error", pa.string()), ("languages", pa.list_(pa.string())), ("captions", pa.int32()),
    ("parallel", pa.int32()), ("feature_rows", pa.int32()), ("features", pa.list_(pa.string())),
    ("duration", pa.float64()),
])


# ---------------------------------------------------------------- features

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
        array = check_array(open_array(path), path.name, 2, source.dim)
        file_entry = {"file": path.name, "sha256": sha256_file(path)}
    return array, dict(file_entry, rows=int(array.shape[0]), dim=int(array.shape[-1]))


# ---------------------------------------------------------------- the stage

class PrepareStage(Stage):
    name = "mmp"
    layout = MMP
    schema = SCHEMA

    def __init__(self, dataset: str, items: list[Item], sources: list[FeatureSource], inputs: list[str],
                 unit_size: int = 1000, options: dict | None = None):
        self.dataset, self.sources, self.inputs = dataset, sources, inputs
        self.unit_size, self.options = unit_size, options or {}
        seen, self.items, self.duplicates = set(), [], 0
        for item in items:  # one row and one sample per id, whatever the annotations repeat
            if item.video_id in seen:
                self.duplicates += 1
                continue
            seen.add(item.video_id)
            self.items.append(item)
        if self.duplicates:
            log.warning("%s: %d repeated ids dropped (first kept)", dataset, self.duplicates)

    def plan(self) -> list[Unit]:
        n = self.unit_size
        return [Unit(i // n, self.items[i:i + n]) for i in range(0, len(self.items), n)]

    def config(self) -> dict:
        return {"dataset": self.dataset, "inputs": self.inputs, "items": len(self.items),
                "duplicates_dropped": self.duplicates, "unit_size": self.unit_size, **self.options,
                "features": {s.name: {"path": str(s.path), "dim": s.dim,
                                      "per_split": {k: str(v) for k, v in s.per_split.items()}} for s in self.sources}}

    def fingerprint(self) -> dict:
        return {"dataset": self.dataset, "inputs": [str(Path(p).resolve()) for p in self.inputs],
                "items": len(self.items), "unit_size": self.unit_size, **self.options}

    def process(self, unit: Unit, writer: UnitWriter) -> None:
        for item in unit.items:
            row = self.convert(item, writer)
            writer.add_row(row)
            video_done(row["status"])

    def convert(self, item: Item, writer: UnitWriter) -> dict:
        langs = sorted(lang for lang, caps in item.captions.items() if caps)
        row = {"video_id": item.video_id, "dataset": self.dataset, "split": item.split, "languages": langs,
               "captions": sum(len(c) for c in item.captions.values()), "parallel": len(item.parallel),
               "duration": item.duration, "features": []}
        if item.status:
            return dict(row, status=item.status, error=item.error)
        if not KEY_RE.match(item.video_id):
            return dict(row, status="bad_id", error="id must be letters, digits, '_' or '-' (it names a sample and a file)")
        if not langs:
            return dict(row, status="no_captions", error="the annotations give no non-empty caption")
        arrays, metas, missing, bad = {}, {}, [], []
        for source in self.sources:
            try:
                found = load_feature(source, item)
            except ValueError as exc:
                bad.append(f"{source.name}: {exc}")
                continue
            if found is None:
                missing.append(source.name)
            else:
                arrays[source.name], metas[source.name] = found
        row["features"] = sorted(arrays)
        if bad:
            return dict(row, status="bad_features", error="; ".join(bad)[:500])
        if not arrays:
            where = ", ".join(f"{s.name} in {s.path}" for s in self.sources)
            return dict(row, status="no_features", error=f"no feature file ({where})"[:500])
        row["feature_rows"] = int(next(iter(arrays[k] for k in sorted(arrays))).shape[0])
        captions = {"video_id": item.video_id, "split": item.split,
                    "captions": {lang: item.captions[lang] for lang in langs}, "parallel": item.parallel}
        meta = {"video_id": item.video_id, "dataset": self.dataset, "split": item.split, "features": metas}
        if item.duration is not None:
            meta["duration"] = item.duration
        members = {f"{name}.npy": npy_bytes(a.astype(np.float16)) for name, a in arrays.items()}
        members.update({"captions.json": captions, "meta.json": meta})
        writer.write_sample(item.video_id, members)
        writer.count("captions", row["captions"])
        writer.count("parallel", row["parallel"])
        for lang in langs:
            writer.count(f"lang/{lang}")
        return dict(row, status="ok", error=f"no {', '.join(missing)} feature file" if missing else None)


# ---------------------------------------------------------------- CLI

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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmp-prepare",
        description="Convert a downstream retrieval set (public annotation files + pre-extracted features) into "
        "mmp/ shards: features, captions.json (captions per language and parallel pairs) and meta.json per video.",
        epilog="Re-running the same command resumes: finished units are skipped. Check the output with mmp-verify.")
    sub = p.add_subparsers(dest="dataset", required=True)

    def common(sp, feature_help):
        sp.add_argument("--out", required=True,
                        help="where mmp-*.{tar,parquet,stats.json} go: a directory or an fsspec URL (s3://...)")
        sp.add_argument("--features", nargs="+", metavar="NAME=PATH", help=feature_help)
        sp.add_argument("--feature-dim", nargs="+", metavar="NAME=WIDTH",
                        help="expected last dimension per feature (default r21d=512 s3d=1024, regions any; 0 = any)")
        sp.add_argument("--unit-size", type=int, default=1000, help="items per output shard (default 1000)")
        add_executor_args(sp)

    video_help = "s3d=DIR and/or r21d=DIR, each holding VIDEO_ID.npy float [seconds, dim]"
    m = sub.add_parser("msrvtt", help="MSR-VTT (MSRVTT_data.json, the 1k-A test list, translations)")
    m.add_argument("annotations", type=Path, help="MSRVTT_data.json")
    m.add_argument("--split", default="all", choices=["all", "train", "val", "test", "1k-A", "9k"],
                   help="which videos: the official splits, 1k-A (JSFusion's 1,000 test videos, one sentence each) "
                   "or 9k (all the others, for training); default all")
    m.add_argument("--jsfusion-csv", type=Path, help="MSRVTT_JSFUSION_test.csv (needed for --split 1k-A and 9k)")
    m.add_argument("--translations", nargs="+", default=[], metavar="FILE_OR_DIR",
                   help="translated captions: {lang: {video_id: [...]}} JSON, per-language files (de.json or de=PATH) "
                   "or a directory of them")
    common(m, video_help)
    v = sub.add_parser("vatex", help="VATEX (JSON lists with enCap and chCap)")
    v.add_argument("annotations", nargs="+", help="vatex_*.json files; the split comes from the name or SPLIT=PATH")
    common(v, video_help)
    t = sub.add_parser("multi30k", help="Multi30K (text files per split and language, image lists, region .npy)")
    t.add_argument("root", type=Path, help="directory with train.en, train.de, ..., train_images.txt, ...")
    t.add_argument("--splits", nargs="+", default=["train", "val", "test_2016_flickr"], help="splits to convert")
    t.add_argument("--langs", nargs="+", default=["en", "de", "fr", "cs"], help="languages to read where present")
    common(t, "regions=DIR (IMAGE_STEM.npy [R, D] each, or SPLIT.npy [N, R, D]) or regions=FILE.npy (one split)")
    return p


def make_stage(args) -> PrepareStage:
    if args.unit_size < 1:
        raise UserError("--unit-size must be at least 1")
    if args.dataset == "multi30k":
        sources = [region_source(n, path, d, args.splits)
                   for n, path, d in parse_features(args.features, ("regions",), args.feature_dim)]
        items = multi30k_items(args.root, args.splits, args.langs)
        inputs, options = [str(args.root)], {"splits": args.splits, "langs": args.langs}
    else:
        sources = []
        for name, path, dim in parse_features(args.features, VIDEO_FEATURES, args.feature_dim):
            if not path.is_dir():
                raise UserError(f"--features {name}={path} is not a directory of VIDEO_ID.npy files")
            sources.append(FeatureSource(name, path, dim))
        if args.dataset == "msrvtt":
            if args.split in ("1k-A", "9k") and args.jsfusion_csv is None:
                raise UserError(f"--split {args.split} needs --jsfusion-csv MSRVTT_JSFUSION_test.csv")
            items = msrvtt_items(args.annotations, args.split, args.jsfusion_csv, args.translations)
            inputs = [str(args.annotations)] + ([str(args.jsfusion_csv)] if args.jsfusion_csv else [])
            options = {"split": args.split, "translations": [str(t) for t in args.translations]}
        else:
            items = vatex_items(args.annotations)
            inputs, options = [a.split("=", 1)[-1] for a in args.annotations], {}
    if not items:
        raise UserError(f"the {args.dataset} annotations select no video")
    for source in sources:
        for split, path in source.per_split.items():
            images = sum(1 for item in items if item.group == split)
            rows = open_array(path, mmap=True).shape[0]
            if rows != images:
                raise UserError(f"--features regions: {path} has {rows} rows but split {split} lists {images} images; "
                                f"row i must be image i of the list")
    return PrepareStage(args.dataset, items, sources, inputs, args.unit_size, options)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        stage = make_stage(args)
        summary = run_stage(stage, args.out, **executor_options(args))
    except UserError as exc:
        print(f"mmp-prepare: error: {exc}", file=sys.stderr)
        return 2
    print_summary(f"mmp-prepare {args.dataset}", args.out, summary)
    return 1 if summary.units_failed else 0


if __name__ == "__main__":
    sys.exit(main())
