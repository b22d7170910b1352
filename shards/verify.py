"""``mmp-verify DIR``: check that a stage's outputs are whole and consistent.

For every unit: the stats file parses, the tar and parquet it names exist with the
recorded size and sha256, every tar member is readable, the parquet has one row per
input video and rows = samples + failures. Units that have a tar or parquet but no
stats file (in flight or killed) and leftover temporaries are reported too.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field

from .layout import LAYOUTS, UNIT_RE, UnitFiles
from .reader import ShardError, iter_samples, read_rows
from .storage import RemotePath, as_path, staging_dir, staging_name
from .writer import sha256_file


@dataclass
class VerifyReport:
    units: int = 0
    samples: int = 0
    rows: int = 0
    problems: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_unit(unit: UnitFiles, report: VerifyReport, deep: bool = True) -> None:
    name = unit.stem
    try:
        stats = json.loads(unit.stats.read_text())
    except (OSError, ValueError) as exc:
        report.problems.append(f"{name}: stats file unreadable: {exc}")
        return
    for kind, path in (("tar", unit.tar), ("parquet", unit.parquet)):
        recorded = stats.get("files", {}).get(kind, {})
        if not path.exists():
            report.problems.append(f"{name}: {path.name} is missing")
            return
        if recorded.get("size") != path.stat().st_size:
            report.problems.append(f"{name}: {path.name} size {path.stat().st_size} != recorded {recorded.get('size')}")
        elif deep and recorded.get("sha256") != sha256_file(path):
            report.problems.append(f"{name}: {path.name} sha256 differs from the one recorded")
    try:
        rows = read_rows(unit.parquet)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        report.problems.append(f"{name}: parquet unreadable: {exc}")
        return
    keys: list[str] = []
    layout = LAYOUTS.get(stats.get("layout", ""))
    try:
        for sample in iter_samples(unit.tar):
            keys.append(sample["__key__"])
            if layout is not None:
                for problem in layout.check({k: v for k, v in sample.items() if k != "__key__"}):
                    report.problems.append(f"{name}: sample {sample['__key__']}: {problem}")
    except ShardError as exc:
        report.problems.append(f"{name}: tar unreadable: {exc}")
        return
    ids = [r.get("video_id") for r in rows]
    if len(set(keys)) != len(keys):
        report.problems.append(f"{name}: duplicate sample keys in tar")
    if len(set(ids)) != len(ids):
        report.problems.append(f"{name}: duplicate video_id rows in parquet")
    missing = set(keys) - set(ids)
    if missing:
        report.problems.append(f"{name}: {len(missing)} samples without a parquet row, e.g. {sorted(missing)[0]}")
    failures = len(set(ids) - set(keys))
    if len(rows) != len(keys) + failures:
        report.problems.append(f"{name}: rows {len(rows)} != samples {len(keys)} + failures {failures}")
    for field_name, actual in (("rows", len(rows)), ("samples", len(keys)), ("failures", failures)):
        if stats.get(field_name) != actual:
            report.problems.append(f"{name}: stats say {field_name}={stats.get(field_name)}, found {actual}")
    report.units += 1
    report.samples += len(keys)
    report.rows += len(rows)


def verify_dir(directory, deep: bool = True) -> VerifyReport:
    """Check a stage's output directory, a local path or an fsspec URL (``s3://bucket/crawl``)."""
    directory = as_path(directory)
    report = VerifyReport()
    if not directory.is_dir():
        report.problems.append(f"{directory} is not a directory")
        return report
    stems = set()
    listing = list(directory.iterdir())
    if isinstance(directory, RemotePath):  # an object store's temporaries are local to the writing node
        local = staging_dir() / staging_name(directory)
        listing += list(local.iterdir()) if local.is_dir() else []
    for path in listing:
        m = re.match(r"^([a-z0-9_]+-\d{6})\.(tar|parquet|stats\.json)$", path.name)
        if m:
            stems.add(m.group(1))
        elif re.match(r"^\.[a-z0-9_]+-\d{6}\..*\.tmp", path.name):
            report.incomplete.append(f"leftover temporary {path.name} (from an interrupted unit)")
    for stem in sorted(stems):
        prefix, index = stem.rsplit("-", 1)
        unit = UnitFiles(directory, prefix, int(index))
        if unit.stats.exists() and UNIT_RE.match(unit.stats.name):
            verify_unit(unit, report, deep=deep)
        else:
            report.incomplete.append(f"{stem}: no stats file (unit incomplete; a re-run redoes it)")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="mmp-verify",
        description="Check a stage output directory (e.g. DATA/crawl): every unit's tar readable, "
        "parquet rows = samples + failures, stats present, recorded sizes and sha256 match.",
    )
    parser.add_argument("dirs", nargs="+", help="stage output directories (paths or fsspec URLs such as s3://b/crawl)")
    parser.add_argument("--quick", action="store_true", help="skip sha256 (sizes are still checked)")
    args = parser.parse_args(argv)
    status = 0
    for directory in args.dirs:
        directory = as_path(directory)
        report = verify_dir(directory, deep=not args.quick)
        for line in report.incomplete:
            print(f"{directory}: note: {line}")
        for line in report.problems:
            print(f"{directory}: PROBLEM: {line}")
        verdict = "ok" if report.ok else f"{len(report.problems)} problems"
        print(f"{directory}: {report.units} units, {report.samples} samples, {report.rows} rows: {verdict}")
        if not report.ok:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
