"""Finding and reading what the stages wrote, for ``mmp-stats``: unit files, stats files, parquet columns.

A directory's units are told apart by their file names alone (``crawl-000003.parquet``);
a unit counts once its stats file exists. Each parquet file is read for the few columns
the report needs, with strings dictionary encoded, and the units of one directory are
concatenated into one table. Whatever does not fit (a missing tar, a damaged file, an
older schema) becomes an entry in ``Issues`` instead of an exception.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shards.layout import UNIT_DIGITS, UnitFiles
from shards.reader import UNREADABLE_PARQUET
from shards.rows import lang_column

STAGES = ("crawl", "aligned", "mmp")
UNIT_FILE_RE = re.compile(rf"^(?P<prefix>{'|'.join(STAGES)})-(?P<index>\d{{{UNIT_DIGITS}}})"
                          r"\.(?P<kind>tar|parquet|stats\.json)$")
TEMP_FILE_RE = re.compile(rf"^\.(?P<prefix>{'|'.join(STAGES)})-(?P<index>\d{{{UNIT_DIGITS}}})\..*\.tmp")
LANG_COLUMN_RE = re.compile(r"^(?P<lang>[a-z]{2,3}(?:-[A-Za-z0-9]+)?)_kind$")
SKIP_DIRS = frozenset({"logs", "reports"})

STR, INT, FLOAT, ID = "str", "int", "float", "id"
# ID: a string that is unique per row (video ids), kept plain: a dictionary would be as long as the column.
ARROW_TYPES = {STR: pa.dictionary(pa.int32(), pa.string()), INT: pa.int64(), FLOAT: pa.float64(), ID: pa.string()}
# Columns read per stage; {lang} columns are read for every language the unit has.
COLUMNS = {
    "crawl": {"video_id": ID, "status": STR, "error": STR, "attempts": INT, "crawled_at": FLOAT, "duration": FLOAT,
              "category_1": STR, "n_tracks": INT, "video_bytes": INT, "{lang}_kind": STR},
    "aligned": {"video_id": ID, "status": STR, "error": STR, "duration": FLOAT, "n_langs": INT, "timeline_kind": STR,
                "{lang}_kind": STR, "{lang}_status": STR, "{lang}_cues": INT, "{lang}_tokens": INT,
                "{lang}_chars": INT, "{lang}_seconds": FLOAT, "{lang}_coverage": FLOAT},
    "mmp": {"video_id": ID, "status": STR, "error": STR, "duration": FLOAT, "feature_rows": INT, "feature_seconds": FLOAT,
            "feature_dim": INT,
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
    # (what, its level, its noun, what it means; "{names}" where the units are named)
    findings = [
        (in_progress, "warning", "unit", "without a stats file (incomplete, or in progress while a stage runs), "
         "not counted: {names}"),
        (sd.temporaries, "warning", "temporary file", "of units being written (a stage is running, or was killed; "
         "a re-run cleans them)"),
        (missing_parquet, "error", "complete unit", "without a parquet file beside the tar; their rows are missing "
         "from every table: {names}"),
        (missing_tar, "error", "complete unit", "without a tar file (shard deleted or moved?): {names}"),
        (malformed, "warning", "stats file", "with fields of the wrong type, left out of shard sizes and run "
         "times: {names}"),
        (bad_stats, "error", "unreadable stats file", "; shard sizes and run times leave those units out: {names}"),
    ]
    for found, level, noun, meaning in findings:
        if found:
            text = meaning.replace("{names}", _names(found)) if "{names}" in meaning else meaning  # a count only
            issues.add(level, sd.label, f"{_count(found, noun)}{'' if text.startswith(';') else ' '}{text}")
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
    if kind == ID:
        return column.cast(pa.string())
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
    except UNREADABLE_PARQUET as exc:
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
    wanted, _ = _wanted(sd.stage, [lang_column(l, "kind") for l in langs_seen])
    schema = pa.schema([pa.field(c, ARROW_TYPES[k]) for c, k in wanted.items()])
    aligned = []
    for table in tables:
        have = set(table.column_names)
        arrays = [table.column(c) if c in have else pa.chunked_array([_null_column(wanted[c], table.num_rows)])
                  for c in wanted]
        aligned.append(pa.Table.from_arrays(arrays, schema=schema))
    table = pa.concat_tables(aligned) if aligned else schema.empty_table()
    return table, langs_seen
