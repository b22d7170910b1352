"""``mmp-prepare``: downstream retrieval sets (MSR-VTT, VATEX, Multi30K) as ``mmp/`` shards.

The public annotation files are read as they are published and, with pre-extracted
features, written in the training-shard layout so one loader serves pre-training,
fine-tuning and evaluation. Per sample (key = the dataset's video or image id):
``r21d.npy`` / ``s3d.npy`` (float16 ``[T, dim]``) or ``regions.npy`` (float16 ``[R, D]``),
``captions.json`` (``{"video_id", "split", "captions": {lang: [...]}, "parallel": [{lang:
caption}, ...]}``) and ``meta.json``. One parquet row per input item, failures included.

Formats read:
- MSR-VTT: ``MSRVTT_data.json`` (``videos`` with ``split`` train/validate/test, ``sentences``
  with ``video_id``, ``caption``, ``sen_id``) and the JSFusion 1k-A test list
  (``MSRVTT_JSFUSION_test.csv``: key, vid_key, video_id, sentence). ``--split 1k-A`` keeps
  those 1,000 videos with their one sentence; ``--split 9k`` keeps the other 9,000.
- Translated MSR-VTT captions (the Multi-HT100M release; its README does not describe the
  files' layout, so the layouts below are the ones we accept and document): one JSON
  ``{lang: {video_id: [captions]}}``, or one file per language, named by its code
  (``de.json``, ``msrvtt_de.json``, or ``de=PATH``) holding ``{video_id: [captions]}`` (keys
  may end in ``.mp4``) or a translated copy of ``MSRVTT_data.json`` (``{"sentences": [...]}``).
  A translation list as long as the video's English list (in ``sen_id`` order), or as long
  as the captions kept (one per video for 1k-A), is aligned caption by caption and gives
  the ``parallel`` entries; otherwise its captions are kept without pairs.
- VATEX: JSON lists of ``{"videoID", "enCap": [10], "chCap": [10]}``. In VATEX the last five
  English captions are translations of the last five Chinese ones (the first five of each
  are written independently), so positions 5-9 become parallel en/zh pairs.
- Multi30K: ``{split}.{lang}`` text files (optionally ``.gz``, in DIR or DIR/raw), the image
  list ``{split}_images.txt`` (or ``image_splits/{split}.txt``); line i of every file
  describes image i. Region features: ``{image_stem}.npy`` ``[R, D]`` per image in a
  directory, or one ``[N, R, D]`` array per split in image-list order (``DIR/{split}.npy``,
  or a single ``.npy`` file when one split is converted).
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import logging
import re
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.import_features import npy_bytes
from pipeline.stage import (Stage, Unit, UserError, add_executor_args, executor_options, print_summary, run_stage,
                            video_done)
from shards.layout import MMP
from shards.writer import UnitWriter, sha256_file

log = logging.getLogger("mmp.prepare")

LANGS = ("en", "de", "fr", "cs", "sw", "ru", "vi", "es", "zh")
KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
FEATURE_DIMS = {"r21d": 512, "s3d": 1024, "regions": 0}  # 0: any width
VIDEO_FEATURES = ("r21d", "s3d")
FLOAT16_MAX = 65504.0

SCHEMA = pa.schema([
    ("video_id", pa.string()), ("dataset", pa.string()), ("split", pa.string()), ("status", pa.string()),
    ("error", pa.string()), ("languages", pa.list_(pa.string())), ("captions", pa.int32()),
    ("parallel", pa.int32()), ("feature_rows", pa.int32()), ("features", pa.list_(pa.string())),
    ("duration", pa.float64()),
])


@dataclass
class Item:
    """One video or image of a downstream set, as read from its annotations."""

    video_id: str
    split: str
    captions: dict = field(default_factory=dict)
    parallel: list = field(default_factory=list)
    duration: float | None = None
    status: str | None = None  # set when the annotations alone already make it a failure
    error: str | None = None
    group: str | None = None  # Multi30K: the split whose per-split region array holds it
    index: int | None = None  # Multi30K: its row in that array


# ---------------------------------------------------------------- reading annotations

def read_json(path: Path, what: str):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist; give the path of the downloaded file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path} is not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None


def clean_caption(text) -> str:
    """NFC, whitespace collapsed; '' for anything that is not text."""
    if not isinstance(text, str):
        return ""
    return " ".join(unicodedata.normalize("NFC", text).split())


def clean_captions(values) -> list[str]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        return []
    return [c for c in (clean_caption(v) for v in values) if c]


def strip_video_ext(key: str) -> str:
    return re.sub(r"\.(mp4|avi|webm|mkv)$", "", key)


def group_sentences(sentences) -> dict[str, list[str]]:
    """MSR-VTT ``sentences`` -> ``{video_id: [caption, ...]}`` in ``sen_id`` order (file order if absent)."""
    grouped: dict[str, list[tuple]] = {}
    for pos, s in enumerate(sentences if isinstance(sentences, list) else []):
        if not isinstance(s, dict) or not isinstance(s.get("video_id"), str):
            continue
        sen_id = s.get("sen_id")
        order = (0, sen_id) if isinstance(sen_id, int) else (1, pos)
        grouped.setdefault(strip_video_ext(s["video_id"]), []).append((order, clean_caption(s.get("caption"))))
    return {vid: [c for _, c in sorted(pairs, key=lambda p: p[0])] for vid, pairs in grouped.items()}


def load_msrvtt(path: Path) -> tuple[dict, dict]:
    data = read_json(path, "MSR-VTT annotations")
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list) or not isinstance(data.get("sentences"), list):
        raise UserError(f"{path} is not MSR-VTT's MSRVTT_data.json: expected an object with 'videos' and 'sentences' lists")
    videos = {v["video_id"]: v for v in data["videos"] if isinstance(v, dict) and isinstance(v.get("video_id"), str)}
    return videos, group_sentences(data["sentences"])


def read_jsfusion(path: Path) -> dict[str, str]:
    """``MSRVTT_JSFUSION_test.csv`` -> ``{video_id: sentence}`` in file order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--jsfusion-csv {path} does not exist; it is MSRVTT_JSFUSION_test.csv (key,vid_key,video_id,sentence)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"video_id", "sentence"} <= set(reader.fieldnames):
            raise UserError(f"{path} has columns {reader.fieldnames}; expected key,vid_key,video_id,sentence")
        out: dict[str, str] = {}
        for row in reader:
            vid = (row.get("video_id") or "").strip()
            if vid and vid not in out:
                out[vid] = clean_caption(row.get("sentence"))
    if not out:
        raise UserError(f"{path} lists no videos")
    return out


def _lang_from_name(path: Path) -> str | None:
    tokens = re.split(r"[._\-]", path.name.lower())
    found = [t for t in tokens if t in LANGS]
    return found[-1] if len(set(found)) == 1 else None


def _per_language_table(data, path: Path) -> dict[str, list[str]]:
    if isinstance(data, dict) and isinstance(data.get("sentences"), list):
        return group_sentences(data["sentences"])
    if isinstance(data, list):
        return group_sentences(data)
    if isinstance(data, dict) and all(isinstance(v, (list, str)) for v in data.values()):
        # empty entries are kept as '' so positions still match the English list
        return {strip_video_ext(k): [clean_caption(c) for c in ([v] if isinstance(v, str) else v)]
                for k, v in data.items()}
    raise UserError(f"translations {path}: expected {{video_id: [captions]}} or {{'sentences': [...]}}")


def load_translations(specs: list[str]) -> dict[str, dict[str, list[str]]]:
    """``--translations`` arguments -> ``{lang: {video_id: [captions]}}`` (see the module docstring)."""
    tables: dict[str, dict[str, list[str]]] = {}
    for spec in specs:
        lang = None
        if "=" in spec and spec.split("=", 1)[0] in LANGS:
            lang, spec = spec.split("=", 1)
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.glob("*.json") if _lang_from_name(p))
            if not files:
                raise UserError(f"--translations {path} holds no JSON file named by a language code (de.json, msrvtt_fr.json, ...)")
            for p in files:
                tables.setdefault(_lang_from_name(p), {}).update(_per_language_table(read_json(p, "translations"), p))
            continue
        data = read_json(path, "translations")
        if lang is None and isinstance(data, dict) and data and set(data) <= set(LANGS) \
                and all(isinstance(v, dict) for v in data.values()):
            for code, table in data.items():
                tables.setdefault(code, {}).update(_per_language_table(table, path))
            continue
        lang = lang or _lang_from_name(path)
        if lang is None:
            raise UserError(f"--translations {path}: cannot tell its language; name it like de.json or pass de={path}")
        tables.setdefault(lang, {}).update(_per_language_table(data, path))
    return tables


def attach_translations(item: Item, english_all: list[str], positions: list[int | None],
                        translations: dict[str, dict[str, list[str]]]) -> None:
    """Add translated captions to ``item`` and pair them with its English captions where aligned."""
    english = item.captions.get("en", [])
    pairs = [{"en": c} for c in english]
    for lang, table in sorted(translations.items()):
        if lang == "en":
            continue
        trans = table.get(item.video_id)
        if not trans or not any(trans):
            continue
        aligned: list[str | None] | None = None
        if english_all and len(trans) == len(english_all) and all(p is not None for p in positions):
            aligned = [trans[p] for p in positions]
        elif len(trans) == len(english):
            aligned = list(trans)
        if aligned is None:
            item.captions[lang] = [t for t in trans if t]
            continue
        item.captions[lang] = [t for t in aligned if t]
        for pair, t in zip(pairs, aligned):
            if t:
                pair[lang] = t
    item.parallel = [p for p in pairs if len(p) > 1]


def msrvtt_items(data_json: Path, split: str, jsfusion: Path | None, translation_specs: list[str]) -> list[Item]:
    videos, sentences = load_msrvtt(data_json)
    test_1k = read_jsfusion(jsfusion) if split in ("1k-A", "9k") else {}
    translations = load_translations(translation_specs) if translation_specs else {}
    split_names = {"train": "train", "validate": "val", "val": "val", "test": "test"}
    if split == "1k-A":
        ids = list(test_1k)
    elif split == "9k":
        ids = [v for v in videos if v not in test_1k]
    elif split == "all":
        ids = list(videos)
    else:
        ids = [v for v in videos if split_names.get(videos[v].get("split")) == split]
    items = []
    for vid in ids:
        video = videos.get(vid)
        english_all = sentences.get(vid, [])
        if split == "1k-A":
            item_split = "test"
        elif split == "9k":
            item_split = "train"
        else:
            item_split = split_names.get((video or {}).get("split"), "train")
        if video is None:
            items.append(Item(vid, item_split, status="not_in_annotations",
                              error=f"{vid} is in {Path(jsfusion).name} but not in {Path(data_json).name}"))
            continue
        if split == "1k-A":
            sentence = test_1k[vid]
            english = [sentence] if sentence else []
            lowered = [c.lower() for c in english_all]
            positions = [lowered.index(sentence.lower()) if sentence.lower() in lowered else None for _ in english]
        else:
            english = [c for c in english_all if c]
            positions = [i for i, c in enumerate(english_all) if c]
        duration = None
        try:
            duration = round(float(video["end time"]) - float(video["start time"]), 3)
        except (KeyError, TypeError, ValueError):
            pass
        item = Item(vid, item_split, {"en": english} if english else {}, duration=duration)
        if english:
            attach_translations(item, english_all, positions, translations)
        items.append(item)
    return items


def split_of(name: str) -> str:
    """A file or split name -> train / val / test."""
    low = name.lower()
    if "train" in low:
        return "train"
    if "val" in low or "dev" in low:
        return "val"
    if "test" in low:
        return "test"
    raise UserError(f"cannot tell the split of {name}; pass it as train=PATH, val=PATH or test=PATH")


def vatex_items(specs: list[str]) -> list[Item]:
    items = []
    for spec in specs:
        split = None
        if "=" in spec and spec.split("=", 1)[0] in ("train", "val", "test"):
            split, spec = spec.split("=", 1)
        path = Path(spec)
        split = split or split_of(path.name)
        data = read_json(path, "VATEX annotations")
        if not isinstance(data, list):
            raise UserError(f"{path} is not a VATEX annotation file: expected a JSON list of {{videoID, enCap, chCap}}")
        for i, entry in enumerate(data):
            if not isinstance(entry, dict) or not isinstance(entry.get("videoID"), str):
                items.append(Item(f"{path.name}#{i}", split, status="bad_annotation",
                                  error=f"entry {i} of {path.name} has no videoID string"))
                continue
            vid = entry["videoID"]
            raw_en, raw_zh = entry.get("enCap"), entry.get("chCap")
            captions = {lang: caps for lang, caps in (("en", clean_captions(raw_en)), ("zh", clean_captions(raw_zh))) if caps}
            parallel = []
            if isinstance(raw_en, list) and isinstance(raw_zh, list) and len(raw_en) == len(raw_zh) == 10:
                for en, zh in zip(raw_en[5:], raw_zh[5:]):
                    en, zh = clean_caption(en), clean_caption(zh)
                    if en and zh:
                        parallel.append({"en": en, "zh": zh})
            m = re.search(r"_(\d+)_(\d+)$", vid)
            duration = float(int(m.group(2)) - int(m.group(1))) if m and int(m.group(2)) > int(m.group(1)) else None
            items.append(Item(vid, split, captions, parallel, duration=duration))
    return items


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return f.read().splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text ({exc.reason})") from None


def _find(root: Path, names: list[str]) -> Path | None:
    for name in names:
        for base in (root, root / "raw"):
            for candidate in (base / name, base / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    return None


def multi30k_items(root: Path, splits: list[str], langs: list[str]) -> list[Item]:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"Multi30K directory {root} does not exist; give the folder with train.en, train_images.txt, ...")
    items = []
    for split in splits:
        image_list = _find(root, [f"{split}_images.txt", f"image_splits/{split}.txt"])
        if image_list is None:
            raise UserError(f"no image list for split {split!r} in {root} ({split}_images.txt or image_splits/{split}.txt)")
        images = [line.strip() for line in read_lines(image_list)]
        while images and not images[-1]:
            images.pop()
        texts = {}
        for lang in langs:
            path = _find(root, [f"{split}.{lang}"])
            if path is None:
                continue
            lines = read_lines(path)
            if len(lines) != len(images):
                raise UserError(f"{path} has {len(lines)} lines but {image_list.name} lists {len(images)} images; "
                                f"line i of every file must describe image i")
            texts[lang] = lines
        if not texts:
            raise UserError(f"no caption files for split {split!r} in {root} (expected {split}.en, {split}.de, ...)")
        for i, name in enumerate(images):
            captions = {lang: [clean_caption(lines[i])] for lang, lines in texts.items() if clean_caption(lines[i])}
            parallel = [{lang: caps[0] for lang, caps in captions.items()}] if len(captions) > 1 else []
            items.append(Item(Path(name).stem, split_of(split), captions, parallel, group=split, index=i))
    return items


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
