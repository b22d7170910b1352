"""``mmp-stats``: what a dataset holds, from the parquet and stats files the stages write.

Never opens a tar: every figure comes from the per-video parquet rows
(``crawl-*.parquet``, ``aligned-*.parquet``, ``mmp-*.parquet``), the per-unit
``*.stats.json`` files and ``config.json``. Only completed units (the ones with
their stats file) are counted, so it runs on a crawl that is still going and on
the outputs of one stage. Damaged or missing files become entries under
``issues`` in the report, never a traceback.

Columns are read per unit with pyarrow (only those needed, strings dictionary
encoded), concatenated and aggregated with numpy: no Python loop over videos.
``pipeline/report.py`` renders the result as ``report.html`` and ``report.md``;
``stats.json`` is the same result as data.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shards.layout import UNIT_DIGITS, UnitFiles
from shards.writer import atomic_write_bytes

from . import errors
from .stage import UserError

STAGES = ("crawl", "aligned", "mmp")
STATS_VERSION = 1
UNIT_FILE_RE = re.compile(rf"^(?P<prefix>{'|'.join(STAGES)})-(?P<index>\d{{{UNIT_DIGITS}}})"
                          r"\.(?P<kind>tar|parquet|stats\.json)$")
TEMP_FILE_RE = re.compile(rf"^\.(?P<prefix>{'|'.join(STAGES)})-(?P<index>\d{{{UNIT_DIGITS}}})\..*\.tmp")
LANG_COLUMN_RE = re.compile(r"^(?P<lang>[a-z]{2,3}(?:-[A-Za-z0-9]+)?)_kind$")
SKIP_DIRS = frozenset({"logs", "reports"})

# The paper's Table 8 (Huang et al., NAACL 2021): videos, subtitles, tokens per language.
PAPER_TABLE8 = {
    "en": (1_238_911, 138_429_877, 1.18e9), "de": (1_092_947, 69_317_890, 1.26e9),
    "fr": (1_093_070, 69_399_097, 1.33e9), "cs": (1_092_717, 68_911_940, 1.22e9),
    "ru": (1_092_802, 69_117_193, 1.25e9), "zh": (1_092_915, 68_939_488, 0.94e9),
    "sw": (1_092_302, 68_898_800, 1.22e9), "vi": (1_092_603, 68_887_868, 1.13e9),
    "es": (1_092_649, 70_143_503, 1.16e9),
}
PAPER_LANGS_PER_VIDEO = (7, 9)
KINDS = ("manual", "asr", "translated", "released")
TOKEN_RULE = ("whitespace-separated words; in languages written without spaces (zh, ja, th) each CJK "
              "character is one token and other runs are split on whitespace (pipeline.align.count_tokens)")

STR, INT, FLOAT = "str", "int", "float"
ARROW_TYPES = {STR: pa.dictionary(pa.int32(), pa.string()), INT: pa.int64(), FLOAT: pa.float64()}
# Columns read per stage; {lang} columns are read for every language the unit has.
COLUMNS = {
    "crawl": {"status": STR, "error": STR, "attempts": INT, "crawled_at": FLOAT, "duration": FLOAT,
              "category_1": STR, "n_tracks": INT, "video_bytes": INT, "{lang}_kind": STR},
    "aligned": {"status": STR, "error": STR, "duration": FLOAT, "n_langs": INT, "timeline_kind": STR,
                "{lang}_kind": STR, "{lang}_status": STR, "{lang}_cues": INT, "{lang}_tokens": INT,
                "{lang}_chars": INT, "{lang}_seconds": FLOAT, "{lang}_coverage": FLOAT},
    "mmp": {"status": STR, "error": STR, "duration": FLOAT, "feature_rows": INT, "feature_dim": INT,
            "length_mismatch": FLOAT, "aligned_duration": FLOAT, "decoder": STR, "device": STR,
            "seconds_decode": FLOAT, "seconds_model": FLOAT},
}
# Columns every unit of the stage is expected to carry; others are optional extras.
REQUIRED = {
    "crawl": ("status", "error", "attempts", "crawled_at", "duration"),
    "aligned": ("status", "error", "duration", "n_langs", "{lang}_kind", "{lang}_status", "{lang}_cues",
                "{lang}_tokens", "{lang}_seconds", "{lang}_coverage"),
    "mmp": ("status", "error", "duration", "feature_rows", "length_mismatch"),
}
RUN_GAP_SECONDS = 600  # a pause longer than this between units starts a new run (a resume)

# Histogram bins shared by every language so that the plots overlay.
TOKENS_PER_VIDEO_BINS = np.unique(np.round(np.logspace(0, 5, 51), 6))
TOKENS_PER_SUB_BINS = np.arange(0, 41, 1.0)
CUE_SECONDS_BINS = np.arange(0, 15.5, 0.5)
COVERAGE_BINS = np.linspace(0, 1, 21)
VIDEO_MINUTES_BINS = np.arange(0, 61, 2.0)
MISMATCH_BINS = np.array([0, 0.5, 1, 2, 3, 5, 10, 30, 60, 300, np.inf])


# ---------------------------------------------------------------- finding the units

@dataclass
class UnitState:
    """What exists on disk for one unit index, and its stats document if readable."""

    files: UnitFiles
    has_tar: bool = False
    has_parquet: bool = False
    has_stats: bool = False
    stats: dict | None = None


@dataclass
class StageDir:
    stage: str
    path: Path
    label: str  # the path relative to DATA, as shown in the report
    units: dict = field(default_factory=dict)  # index -> UnitState
    temporaries: int = 0
    config: dict = field(default_factory=dict)


def scan_dir(path: Path, names: list | None = None) -> dict:
    """``{prefix: StageDir}`` for the unit files directly inside ``path`` (``names``: its listing, if known)."""
    found: dict = {}
    if names is None:
        try:
            names = os.listdir(path)
        except OSError:
            return found
    for name in names:
        m = UNIT_FILE_RE.match(name)
        if m:
            prefix, index = m.group("prefix"), int(m.group("index"))
            sd = found.setdefault(prefix, StageDir(prefix, path, ""))
            unit = sd.units.setdefault(index, UnitState(UnitFiles(path, prefix, index)))
            kind = m.group("kind")
            if kind == "tar":
                unit.has_tar = True
            elif kind == "parquet":
                unit.has_parquet = True
            else:
                unit.has_stats = True
            continue
        m = TEMP_FILE_RE.match(name)
        if m:
            sd = found.setdefault(m.group("prefix"), StageDir(m.group("prefix"), path, ""))
            sd.temporaries += 1
    return found


def find_stage_dirs(data: Path, max_depth: int = 3) -> list[StageDir]:
    """Every directory at most ``max_depth`` below ``data`` (``data`` included) holding unit files.

    Covers ``DATA/crawl``, ``DATA/aligned``, ``DATA/mmp``, ``DATA/imported/aligned`` and DATA
    being one stage's directory itself; hidden directories (``.import``) and logs are skipped.
    """
    data = Path(data)
    out = []
    for root, dirs, files in os.walk(data):
        depth = len(Path(root).relative_to(data).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS and depth < max_depth)
        if _is_downstream_set(Path(root), files):
            continue  # mmp-prepare's MSR-VTT / VATEX / Multi30K shards are not part of the dataset
        for prefix, sd in sorted(scan_dir(Path(root), files).items(), key=lambda kv: STAGES.index(kv[0])):
            rel = Path(root).relative_to(data)
            sd.label = str(rel) if str(rel) != "." else (data.name or str(data))
            out.append(sd)
    order = {s: i for i, s in enumerate(STAGES)}
    return sorted(out, key=lambda sd: (order[sd.stage], sd.label))


def _is_downstream_set(path: Path, names: list) -> bool:
    """A directory written by mmp-prepare: its config.json names the downstream dataset."""
    if "config.json" not in names:
        return False
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("config"), dict) and "dataset" in config["config"]


# ---------------------------------------------------------------- reading

class Issues(list):
    """Problems found while reading, shown at the top of the report."""

    def add(self, level: str, where: str, message: str) -> None:
        self.append({"level": level, "where": where, "message": message})


def read_stats_files(sd: StageDir, issues: Issues) -> None:
    """Load each unit's stats.json; report units whose files do not fit together."""
    in_progress, missing_parquet, missing_tar, bad_stats, malformed = [], [], [], [], []
    for index, unit in sorted(sd.units.items()):
        if not unit.has_stats:
            in_progress.append(unit.files.stem)
            continue
        try:
            doc = json.loads(unit.files.stats.read_text())
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            unit.stats, bad_fields = normalise_stats(doc)
            if bad_fields:
                malformed.append(f"{unit.files.stem} ({', '.join(bad_fields)})")
        except FileNotFoundError:  # reopened meanwhile (mmp-crawl --retry-failed): in progress again
            unit.has_stats = False
            in_progress.append(unit.files.stem)
            continue
        except (OSError, ValueError) as exc:
            unit.stats = None
            bad_stats.append(f"{unit.files.stem} ({exc})")
        if not unit.has_parquet:
            missing_parquet.append(unit.files.stem)
        if not unit.has_tar:
            missing_tar.append(unit.files.stem)
    if in_progress:
        issues.add("warning", sd.label, f"{_count(in_progress, 'unit')} without a stats file (incomplete, or in "
                   f"progress while a stage runs), not counted: {_names(in_progress)}")
    if sd.temporaries:
        issues.add("warning", sd.label, f"{_count(sd.temporaries, 'temporary file')} of units being written "
                   "(a stage is running, or was killed; a re-run cleans them)")
    if missing_parquet:
        issues.add("error", sd.label, f"{_count(missing_parquet, 'complete unit')} without a parquet file beside "
                   f"the tar; their rows are missing from every table: {_names(missing_parquet)}")
    if missing_tar:
        issues.add("error", sd.label, f"{_count(missing_tar, 'complete unit')} without a tar file (shard deleted "
                   f"or moved?): {_names(missing_tar)}")
    if malformed:
        issues.add("warning", sd.label, f"{_count(malformed, 'stats file')} with fields of the wrong type, left "
                   f"out of shard sizes and run times: {_names(malformed)}")
    if bad_stats:
        issues.add("error", sd.label, f"{_count(bad_stats, 'unreadable stats file')}; shard sizes and run times "
                   f"leave those units out: {_names(bad_stats)}")
    cfg = sd.path / "config.json"
    if cfg.exists():
        try:
            sd.config = json.loads(cfg.read_text())
        except (OSError, ValueError) as exc:
            issues.add("warning", sd.label, f"config.json is unreadable ({exc}); languages are taken from the parquet columns")


def normalise_stats(doc: dict) -> tuple[dict, list]:
    """The fields of a stats file the report uses, type-checked, and the names of those that were not usable.

    An older or hand-edited stats file loses only its bad fields, never the report.
    """
    bad = []

    def number(value, name):
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            bad.append(name)
            return None
        return value

    files = doc.get("files")
    if files is not None and not isinstance(files, dict):
        bad.append("files")
    tar = files.get("tar") if isinstance(files, dict) else None
    counts = doc.get("counts")
    if counts is not None and not isinstance(counts, dict):
        bad.append("counts")
    counts = counts if isinstance(counts, dict) else {}
    clean = {k: int(v) for k, v in counts.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    if len(clean) != len(counts):
        bad.append("counts")
    return {"rows": number(doc.get("rows"), "rows"), "samples": number(doc.get("samples"), "samples"),
            "tar_size": number(tar.get("size") if isinstance(tar, dict) else None, "files.tar.size"),
            "started": number(doc.get("started"), "started"), "finished": number(doc.get("finished"), "finished"),
            "counts": clean}, bad


def _count(items, noun: str) -> str:
    """'1 unit', '3 units' (``items`` a number or a list)."""
    k = int(items) if isinstance(items, (int, float)) else len(items)
    return f"{k} {noun}{'' if k == 1 else 's'}"


def _names(items: list, limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _wanted(stage: str, names: list[str]) -> tuple[dict, list[str]]:
    """Columns to read from a unit with these column names: ``{column: kind}``, and its languages."""
    langs = [m.group("lang") for m in map(LANG_COLUMN_RE.match, names) if m]
    wanted = {}
    for col, kind in COLUMNS[stage].items():
        for lang in (langs if "{lang}" in col else [None]):
            wanted[col.format(lang=lang) if lang else col] = kind
    return wanted, langs


def _null_column(kind: str, n: int) -> pa.Array:
    return pa.nulls(n, type=ARROW_TYPES[kind])


def _coerce(column: pa.ChunkedArray, kind: str) -> pa.ChunkedArray:
    if kind == STR:
        if pa.types.is_dictionary(column.type):
            return column.cast(ARROW_TYPES[STR])
        return pc.dictionary_encode(column.cast(pa.string())).cast(ARROW_TYPES[STR])
    return column.cast(ARROW_TYPES[kind])


def read_unit_table(stage: str, path: Path) -> tuple[pa.Table | None, list[str], list[str], str | None]:
    """(table of the wanted columns, languages, missing required columns, error) for one parquet file."""
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        wanted, langs = _wanted(stage, names)
        present = [c for c in wanted if c in names]
        table = pf.read(columns=present)
    except Exception as exc:  # pyarrow raises several kinds (ArrowInvalid, OSError) for a damaged file
        return None, [], [], f"{type(exc).__name__}: {str(exc)[:200]}"
    required = [r.format(lang=l) for r in REQUIRED[stage] for l in (langs if "{lang}" in r else [None])]
    missing = [c for c in required if c not in names]
    columns, fields = [], []
    for col, kind in wanted.items():
        if col in names:
            try:
                columns.append(_coerce(table.column(col), kind))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                missing.append(f"{col} (type {table.schema.field(col).type})")
                columns.append(pa.chunked_array([_null_column(kind, table.num_rows)]))
        else:
            columns.append(pa.chunked_array([_null_column(kind, table.num_rows)]))
        fields.append(pa.field(col, ARROW_TYPES[kind]))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields)), langs, missing, None


def read_stage_table(sd: StageDir, issues: Issues, threads: int = 4, progress: bool = False) -> tuple[pa.Table, list]:
    """The wanted columns of every complete unit's parquet, concatenated; and the languages seen."""
    units = [u for _, u in sorted(sd.units.items()) if u.has_stats and u.has_parquet]
    tables, langs_seen, old_schema, corrupt = [], [], {}, []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(units), unit="unit", desc=f"reading {sd.label}", file=sys.stderr, disable=None)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for unit, (table, langs, missing, error) in zip(
                units, pool.map(lambda u: read_unit_table(sd.stage, u.files.parquet), units)):
            if bar is not None:
                bar.update(1)
            if error is not None:
                rows = (unit.stats or {}).get("rows")
                corrupt.append(f"{unit.files.parquet.name} ({error}; {_count(rows, 'row') if rows is not None else 'its rows'} lost)")
                continue
            if missing:
                old_schema.setdefault(tuple(missing), []).append(unit.files.stem)
            for lang in langs:
                if lang not in langs_seen:
                    langs_seen.append(lang)
            tables.append(table)
    if bar is not None:
        bar.close()
    if corrupt:
        issues.add("error", sd.label, f"{_count(corrupt, 'unreadable parquet file')} (corrupt or truncated); "
                   f"their videos are left out: {_names(corrupt, 5)}")
    for missing, stems in old_schema.items():
        issues.add("warning", sd.label, f"{_count(stems, 'unit')} written with an older schema that lacks "
                   f"{', '.join(missing)}; figures that need those columns leave these units out: {_names(stems)}")
    wanted, _ = _wanted(sd.stage, [f"{l}_kind" for l in langs_seen])
    schema = pa.schema([pa.field(c, ARROW_TYPES[k]) for c, k in wanted.items()])
    aligned = []
    for table in tables:
        have = set(table.column_names)
        arrays = [table.column(c) if c in have else pa.chunked_array([_null_column(wanted[c], table.num_rows)])
                  for c in wanted]
        aligned.append(pa.Table.from_arrays(arrays, schema=schema))
    table = pa.concat_tables(aligned) if aligned else schema.empty_table()
    return table, langs_seen


# ---------------------------------------------------------------- columnar helpers

def codes(column: pa.ChunkedArray) -> tuple[np.ndarray, list]:
    """A dictionary column as (int codes, -1 for null; the category names)."""
    if len(column) == 0:
        return np.zeros(0, dtype=np.int64), []
    array = column.unify_dictionaries().combine_chunks()  # one dictionary, one index array
    indices = pc.fill_null(array.indices, -1).to_numpy(zero_copy_only=False)
    return indices.astype(np.int64), array.dictionary.to_pylist()


def counts_of(column: pa.ChunkedArray, null: str | None = None) -> dict:
    """Value counts, largest first; nulls under ``null`` if given, else left out."""
    idx, names = codes(column)
    counts = np.bincount(idx + 1, minlength=len(names) + 1)
    out = {name: int(c) for name, c in zip(names, counts[1:]) if c}
    if null is not None and counts[0]:
        out[null] = out.get(null, 0) + int(counts[0])
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def floats(column: pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64, NaN for null."""
    if len(column) == 0:
        return np.zeros(0)
    return pc.fill_null(column.cast(pa.float64()), math.nan).to_numpy()


def value_counts(values: np.ndarray) -> dict:
    """Counts of the finite values of a small-integer column, keyed by the integer as text."""
    keys, counts = np.unique(values[np.isfinite(values)], return_counts=True)
    return {str(int(k)): int(c) for k, c in zip(keys, counts)}


def equals(column: pa.ChunkedArray, *values: str) -> np.ndarray:
    idx, names = codes(column)
    hit = np.array([n in values for n in names] + [False], dtype=bool)  # last entry: null (-1)
    return hit[idx]


def summary(values: np.ndarray) -> dict:
    """n, mean, median, p10, p90 of the finite values."""
    v = values[np.isfinite(values)]
    if not len(v):
        return {"n": 0, "mean": None, "median": None, "p10": None, "p90": None}
    p10, p50, p90 = np.percentile(v, [10, 50, 90])
    return {"n": int(len(v)), "mean": float(v.mean()), "median": float(p50), "p10": float(p10), "p90": float(p90)}


def histogram(values: np.ndarray, bins: np.ndarray) -> dict:
    """Counts in ``bins``; values past the last edge go to the last bin (noted as overflow)."""
    v = values[np.isfinite(values)]
    edges = np.asarray(bins, dtype=float)
    finite_top = edges[-1] if np.isfinite(edges[-1]) else edges[-2] * 10
    clipped = np.clip(v, edges[0], np.nextafter(finite_top, -np.inf))
    counts, _ = np.histogram(clipped, bins=np.where(np.isfinite(edges), edges, finite_top))
    return {"edges": [float(e) if np.isfinite(e) else None for e in edges], "counts": counts.astype(int).tolist(),
            "overflow": int((v >= finite_top).sum()), "underflow": int((v < edges[0]).sum())}


_NUMBER = re.compile(r"\d+\.\d+|\d{4,}")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_PATH = re.compile(r"(/[^\s:;,]+)+")


def reasons_by_status(status: pa.ChunkedArray, error: pa.ChunkedArray, top: int = 6) -> dict:
    """``{status: {reason: count}}``: error messages grouped after hiding numbers, paths and quoted names."""
    s_idx, s_names = codes(status)
    e_idx, e_names = codes(error)
    if not e_names:
        return {}
    norm = pc.replace_substring_regex(pa.array(e_names, pa.string()), _NUMBER.pattern, "#")
    norm = pc.replace_substring_regex(norm, _QUOTED.pattern, "'…'")
    norm = pc.replace_substring_regex(norm, _PATH.pattern, "PATH")
    norm = pc.utf8_slice_codeunits(norm, 0, 120)
    group = pc.dictionary_encode(norm)
    g_idx = group.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    g_names = group.dictionary.to_pylist()
    has = e_idx >= 0
    mapped = g_idx[e_idx[has]]
    st = s_idx[has]
    key = (st + 1) * (len(g_names) + 1) + mapped
    uniq, cnt = np.unique(key, return_counts=True)
    out: dict = {}
    for k, c in zip(uniq.tolist(), cnt.tolist()):
        si, gi = divmod(k, len(g_names) + 1)
        name = s_names[si - 1] if si > 0 else "unknown"
        out.setdefault(name, {})[g_names[gi]] = c
    return {s: dict(sorted(r.items(), key=lambda kv: -kv[1])[:top]) for s, r in out.items()}


def order_langs(langs: list, config: dict) -> list:
    configured = (config.get("config") or {}).get("langs") or []
    ordered = [l for l in configured if l in langs]
    ordered += [l for l in PAPER_TABLE8 if l in langs and l not in ordered]
    return ordered + sorted(l for l in langs if l not in ordered)


# ---------------------------------------------------------------- per stage

def shard_summary(sd: StageDir) -> dict:
    """Shard count, sizes and samples per shard from the stats files (stat() where they lack a size)."""
    complete = [u for u in sd.units.values() if u.has_stats]
    sizes, samples, rows = [], [], []
    for u in complete:
        st = u.stats or {}
        size = st.get("tar_size")
        if size is None and u.has_tar:
            try:
                size = u.files.tar.stat().st_size
            except OSError:
                size = None
        if size is not None:
            sizes.append(size)
        if st.get("samples") is not None:
            samples.append(st["samples"])
        if st.get("rows") is not None:
            rows.append(st["rows"])
    sizes_a, samples_a = np.array(sizes, dtype=float), np.array(samples, dtype=float)
    out = {"stage": sd.stage, "path": sd.label, "units_complete": len(complete),
           "units_incomplete": len(sd.units) - len(complete), "temporaries": sd.temporaries,
           "rows": int(sum(rows)), "samples": int(sum(samples)), "bytes": int(sum(sizes)),
           "shard_bytes": summary(sizes_a), "samples_per_shard": summary(samples_a)}
    if len(sizes_a):
        out["shard_mib_hist"] = histogram(sizes_a / 2**20, np.histogram_bin_edges(sizes_a / 2**20, bins=20))
    if len(samples_a):
        out["samples_hist"] = histogram(samples_a, np.histogram_bin_edges(samples_a, bins=20))
    return out


def crawl_runs(sd: StageDir, gap: float = RUN_GAP_SECONDS) -> list[dict]:
    """Group units into runs by their start and finish times: a pause longer than ``gap`` is a resume."""
    spans = []
    for u in sd.units.values():
        st = u.stats or {}
        if st.get("started") is not None and st.get("finished") is not None:
            statuses = {k.split("/", 1)[1]: v for k, v in st["counts"].items() if k.startswith("status/")}
            spans.append((float(st["started"]), float(st["finished"]), statuses, st["counts"]))
    spans.sort(key=lambda s: s[0])
    runs: list = []
    for start, end, statuses, counts in spans:
        if not runs or start > runs[-1]["end"] + gap:
            runs.append({"start": start, "end": end, "units": 0, "statuses": {}, "retried": 0, "carried_over": 0,
                         "requests": 0})
        run = runs[-1]
        run["end"] = max(run["end"], end)
        run["units"] += 1
        for k, v in statuses.items():
            run["statuses"][k] = run["statuses"].get(k, 0) + int(v)
        for k in ("retried", "carried_over", "requests"):
            run[k] += counts.get(k, 0)
    for i, run in enumerate(runs):
        run["run"] = i + 1
        run["videos"] = sum(run["statuses"].values())
        hours = max(run["end"] - run["start"], 1.0) / 3600
        run["videos_per_hour"] = run["videos"] / hours
        run["start_iso"] = _iso(run["start"])
        run["end_iso"] = _iso(run["end"])
    return runs


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def summarize_crawl(table: pa.Table, langs: list, sd: StageDir) -> dict:
    n = table.num_rows
    status = table.column("status")
    ok = equals(status, errors.OK, errors.PARTIAL)
    attempts = floats(table.column("attempts"))
    duration = floats(table.column("duration"))
    out = {"videos": n, "statuses": counts_of(status, "unknown"),
           "reasons": reasons_by_status(status, table.column("error")),
           "with_subtitles": int(ok.sum()),
           "transient": int(equals(status, *errors.TRANSIENT).sum()),
           "attempts": value_counts(attempts),
           "retried_videos": int((attempts > 1).sum()),
           "retried_statuses": counts_of(table.filter(pa.array(attempts > 1)).column("status"), "unknown") if n else {},
           "runs": crawl_runs(sd),
           "duration": summary(duration[ok]), "duration_minutes_hist": histogram(duration[ok] / 60, VIDEO_MINUTES_BINS),
           "hours_with_subtitles": float(np.nansum(duration[ok]) / 3600)}
    counts_total: dict = {}
    for u in sd.units.values():
        for k, v in ((u.stats or {}).get("counts") or {}).items():
            if k in ("retried", "carried_over", "requests", "tracks"):
                counts_total[k] = counts_total.get(k, 0) + v
    out["unit_counts"] = counts_total
    cat = table.column("category_1")
    cats_all = counts_of(cat)
    out["categories"] = {"all": cats_all, "with_subtitles": counts_of(cat.filter(pa.array(ok))) if n else {},
                         "missing": int(n - sum(cats_all.values()))}
    out["kinds"] = {lang: counts_of(table.column(f"{lang}_kind")) for lang in langs}
    vb = floats(table.column("video_bytes"))
    out["videos_downloaded"] = int(np.isfinite(vb).sum())
    out["video_bytes"] = float(np.nansum(vb))
    return out


def summarize_aligned(table: pa.Table, langs: list) -> dict:
    n = table.num_rows
    status = table.column("status")
    n_langs = floats(table.column("n_langs"))
    known = np.isfinite(n_langs)
    per_video = np.bincount(n_langs[known].astype(int), minlength=len(langs) + 1) if known.any() else np.zeros(len(langs) + 1, int)
    with_any = n_langs >= 1
    lo, hi = PAPER_LANGS_PER_VIDEO
    duration = floats(table.column("duration"))
    out = {"videos": n, "statuses": counts_of(status, "unknown"),
           "reasons": reasons_by_status(status, table.column("error")),
           "videos_with_subtitles": int(with_any.sum()),
           "langs_per_video": {str(i): int(c) for i, c in enumerate(per_video.tolist())},
           "langs_per_video_unknown": int((~known).sum()),
           "langs_per_video_summary": summary(n_langs[with_any]),
           "share_in_paper_range": float(((n_langs >= lo) & (n_langs <= hi)).sum() / max(1, with_any.sum())),
           "timeline_kinds": counts_of(table.column("timeline_kind")),
           "duration": summary(duration[with_any]),
           "duration_known": int(np.isfinite(duration[with_any]).sum()),
           "duration_minutes_hist": histogram(duration[with_any] / 60, VIDEO_MINUTES_BINS),
           "per_lang": {}}
    for lang in langs:
        ok = equals(table.column(f"{lang}_status"), "ok")
        kind_idx, kind_names = codes(table.column(f"{lang}_kind"))
        cues = floats(table.column(f"{lang}_cues"))
        tokens = floats(table.column(f"{lang}_tokens"))
        chars = floats(table.column(f"{lang}_chars"))
        seconds = floats(table.column(f"{lang}_seconds"))
        coverage = floats(table.column(f"{lang}_coverage"))
        c, t, s = cues[ok], tokens[ok], seconds[ok]
        with np.errstate(divide="ignore", invalid="ignore"):
            tok_per_sub = np.where(c > 0, t / c, np.nan)
            sec_per_sub = np.where(c > 0, s / c, np.nan)
        by_kind = {}
        for ki, kname in enumerate(kind_names):
            sel = ok & (kind_idx == ki)
            if sel.any():
                by_kind[kname] = {"videos": int(sel.sum()), "subtitles": float(np.nansum(cues[sel])),
                                  "tokens": float(np.nansum(tokens[sel]))}
        paper = PAPER_TABLE8.get(lang)
        out["per_lang"][lang] = {
            "videos": int(ok.sum()), "subtitles": float(np.nansum(c)), "tokens": float(np.nansum(t)),
            "chars": float(np.nansum(chars[ok])), "subtitle_hours": float(np.nansum(s) / 3600),
            "tokens_known": int(np.isfinite(t).sum()),
            "paper": {"videos": paper[0], "subtitles": paper[1], "tokens": paper[2]} if paper else None,
            "by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1]["videos"])),
            "track_statuses": counts_of(table.column(f"{lang}_status"), "not aligned"),
            "tokens_per_video": summary(t), "tokens_per_video_hist": histogram(t, TOKENS_PER_VIDEO_BINS),
            "tokens_per_subtitle": summary(tok_per_sub),
            "tokens_per_subtitle_overall": float(np.nansum(t) / np.nansum(c)) if np.nansum(c) else None,
            "tokens_per_subtitle_hist": histogram(tok_per_sub, TOKENS_PER_SUB_BINS),
            "subtitle_seconds": summary(sec_per_sub),
            "subtitle_seconds_hist": histogram(sec_per_sub, CUE_SECONDS_BINS),
            "coverage": summary(coverage[ok]), "coverage_hist": histogram(coverage[ok], COVERAGE_BINS),
        }
    return out


def summarize_mmp(table: pa.Table, sd: StageDir) -> dict:
    n = table.num_rows
    status = table.column("status")
    rows = floats(table.column("feature_rows"))
    duration = floats(table.column("duration"))
    mismatch = floats(table.column("length_mismatch"))
    has = rows > 0
    tolerance = (sd.config.get("config") or {}).get("tolerance_seconds", 3.0)
    try:
        tolerance = float(tolerance)
    except (TypeError, ValueError):
        tolerance = 3.0
    absm = np.abs(mismatch[has])
    listed = rows[has] - floats(table.column("aligned_duration"))[has]
    return {"videos": n, "statuses": counts_of(status, "unknown"),
            "reasons": reasons_by_status(status, table.column("error")),
            "videos_with_features": int(has.sum()),
            "feature_hours": float(np.nansum(rows[has]) / 3600),
            "video_hours_with_features": float(np.nansum(duration[has]) / 3600),
            "duration_known": int(np.isfinite(duration[has]).sum()),
            "feature_dims": value_counts(floats(table.column("feature_dim"))),
            "tolerance_seconds": tolerance,
            "mismatch_known": int(np.isfinite(absm).sum()),
            "mismatch_over_tolerance": int((absm > tolerance).sum()),
            "features_shorter": int((mismatch[has] < -tolerance).sum()),
            "features_longer": int((mismatch[has] > tolerance).sum()),
            "mismatch": summary(mismatch[has]),
            "abs_mismatch_hist": histogram(absm, MISMATCH_BINS),
            # mmp-extract-features only: the duration the aligned rows (YouTube's metadata) gave, and the cost.
            "listed_mismatch_known": int(np.isfinite(listed).sum()),
            "listed_mismatch_over_tolerance": int((np.abs(listed) > tolerance).sum()),
            "decoders": counts_of(table.column("decoder")), "devices": counts_of(table.column("device")),
            "decode_hours": float(np.nansum(floats(table.column("seconds_decode"))) / 3600),
            "model_hours": float(np.nansum(floats(table.column("seconds_model"))) / 3600)}


# ---------------------------------------------------------------- the whole dataset

def tokenizer_note(tokenizer: Path | None) -> dict:
    """Which rule counted the tokens, and what ``--tokenizer`` can and cannot change."""
    note = {"rule": TOKEN_RULE, "counted_by": "mmp-align / mmp-import when the aligned rows were written",
            "requested": None}
    if tokenizer is None:
        return note
    name = tokenizer.name
    cfg = tokenizer / "tokenizer_config.json"
    if cfg.exists():
        try:
            doc = json.loads(cfg.read_text())
            name = doc.get("name_or_path") or doc.get("tokenizer_class") or name
        except (OSError, ValueError):
            pass
    note["requested"] = str(name)
    note["limit"] = (f"--tokenizer {tokenizer} was given, but the parquet rows keep counts, not text, and this "
                     "report never opens the tars: the token columns below are still counted by the rule above. "
                     "Subword tokenizers such as XLM-R's usually give more tokens per word (and per Chinese "
                     "character, fewer or more depending on the vocabulary), so compare the paper's token column "
                     "with that in mind; characters per language are shown as a tokenizer-free measure.")
    return note


def build_stats(data: Path, tokenizer: Path | None = None, threads: int = 4, progress: bool = False) -> dict:
    """Everything the report shows, as plain JSON-able data."""
    started = time.time()
    issues = Issues()
    dirs = find_stage_dirs(data)
    result = {"version": STATS_VERSION, "generated_at": _iso(time.time()), "data": str(data),
              "tokenizer": tokenizer_note(tokenizer), "issues": issues,
              "crawl": [], "aligned": [], "mmp": [], "shards": []}
    if not dirs:
        issues.add("error", str(data), "no stage outputs found: no crawl-/aligned-/mmp-NNNNNN.{tar,parquet,stats.json} "
                   "files here or in crawl/, aligned/, mmp/, imported/*/ below it (empty dataset, or the wrong --data)")
    for sd in dirs:
        read_stats_files(sd, issues)
        result["shards"].append(shard_summary(sd))
        complete = [u for u in sd.units.values() if u.has_stats]
        if not complete:
            issues.add("warning", sd.label, f"no completed {sd.stage} unit yet; nothing from this directory is counted")
            continue
        table, langs = read_stage_table(sd, issues, threads=threads, progress=progress)
        langs = order_langs(langs, sd.config)
        section = {"path": sd.label, "langs": langs, "units": len(complete), "rows": table.num_rows}
        if sd.stage == "crawl":
            section.update(summarize_crawl(table, langs, sd))
        elif sd.stage == "aligned":
            section.update(summarize_aligned(table, langs))
            section["source"] = (sd.config.get("config") or {}).get("source") or "mmp-align"
        else:
            section.update(summarize_mmp(table, sd))
        if table.num_rows == 0:
            issues.add("warning", sd.label, "the completed units hold no readable rows")
        result[sd.stage].append(section)
        del table
    result["seconds"] = round(time.time() - started, 3)
    result["issues"] = list(issues)
    return result


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return None if not np.isfinite(obj) else float(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _clean_floats(obj):
    """NaN and infinity are not JSON: they become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_floats(v) for v in obj]
    return obj


def write_report(stats: dict, out: Path) -> dict:
    """stats.json, report.md and report.html under ``out``; returns their paths."""
    from . import report

    out.mkdir(parents=True, exist_ok=True)
    stats = _clean_floats(stats)
    paths = {"json": out / "stats.json", "md": out / "report.md", "html": out / "report.html"}
    atomic_write_bytes(paths["json"], (json.dumps(stats, indent=1, default=_json_default, ensure_ascii=False) + "\n").encode())
    atomic_write_bytes(paths["md"], report.render_markdown(stats).encode("utf-8"))
    atomic_write_bytes(paths["html"], report.render_html(stats).encode("utf-8"))
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmp-stats",
        description="Dataset statistics from the parquet and stats files the stages write (never the tars): "
        "the paper's Table 8 beside ours, track kinds, languages per video, alignment coverage, tokens per "
        "video and per subtitle, durations, categories, crawl outcomes and runs, features and shards. "
        "Writes OUT/report.html (self-contained, opens offline), OUT/report.md and OUT/stats.json.",
        epilog="Works on a dataset that is still being built: only units with their stats file are counted, "
        "the others are listed as warnings. Damaged files are reported in the report, not as errors.")
    p.add_argument("--data", required=True,
                   help="dataset root holding crawl/, aligned/, mmp/ or imported/aligned/, or one stage's directory")
    p.add_argument("--out", type=Path, help="where the reports go (default: DATA/reports)")
    p.add_argument("--tokenizer", type=Path,
                   help="a tokenizer directory (e.g. XLM-R's) to name in the report; counts come from the parquet "
                   "rows and stay those of mmp-align's rule (the report explains)")
    p.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="parquet files read at once")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if "://" in args.data:
            raise UserError(f"--data {args.data} is a URL; mmp-stats reads a local (or mounted) directory: mount the "
                            "bucket (e.g. s3fs, gcsfuse) or copy the parquet and stats files (not the tars) locally")
        args.data = Path(args.data)
        if not args.data.is_dir():
            raise UserError(f"--data {args.data} is not a directory; point it at the dataset root (e.g. data/)")
        if args.tokenizer is not None and not args.tokenizer.is_dir():
            raise UserError(f"--tokenizer {args.tokenizer} is not a directory (a transformers tokenizer directory)")
        if importlib.util.find_spec("matplotlib") is None:
            raise UserError("mmp-stats needs matplotlib for its plots: pip install 'multi-howto100m[stats]'")
        out = args.out or args.data / "reports"
        stats = build_stats(args.data, args.tokenizer, threads=args.threads, progress=not args.no_progress)
        paths = write_report(stats, out)
    except UserError as exc:
        print(f"mmp-stats: error: {exc}", file=sys.stderr)
        return 2
    for issue in stats["issues"]:
        print(f"mmp-stats: {issue['level']}: {issue['where']}: {issue['message']}", file=sys.stderr)
    print(f"mmp-stats: {len(stats['crawl'])} crawl, {len(stats['aligned'])} aligned, {len(stats['mmp'])} mmp "
          f"directories; {len(stats['issues'])} issues; in {stats['seconds']:.1f}s -> {paths['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
