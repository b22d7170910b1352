"""``mmp-verify DIR``: check that a stage's outputs are whole and consistent.

For every unit: the stats file parses and its fields have their types, the tar and
parquet it names exist with the recorded size and sha256, the tar is whole (its
end-of-archive marker is there) and every member readable and safe (no links, no
absolute or ``..`` names, none over the readers' size caps), the parquet has one row per
input video and rows = samples + failures, and rows and members agree: an ok row has its
sample, and the members a row records (tracks, video, feature arrays) are there with the
recorded sizes. Units that have a tar or parquet but no stats file (in flight or killed)
and leftover temporaries are reported too.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field

from shards.errors import command
from shards.layout import LAYOUTS, UNIT_RE, DamagedUnit, UnitFiles, read_stats
from shards.reader import UNREADABLE_PARQUET, ShardError, iter_samples, read_rows
from shards.rows import lang_column
from shards.samples import TRACK_EXTS, feature_member, find_track_member, is_track_member, track_member
from shards.storage import RemotePath, as_path, staging_dir, staging_name
from shards.versions import add_version_flag
from shards.writer import sha256_file


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


def recorded_members(row: dict) -> dict[str, int | None]:
    """The members a parquet row says its sample holds, with the byte count where it records one:
    a crawl row's fetched tracks (``{lang}_status`` ok, ``{lang}_bytes``; named ``<lang>.vtt`` here,
    though a track may be stored as ``<lang>.srt``: ``cross_check`` takes either) and video file
    (``video_ext``, ``video_bytes``); a feature row's arrays (``backbones`` or ``features``)."""
    members: dict[str, int | None] = {}
    for column, value in row.items():
        lang = column[:-len("_bytes")]
        if column.endswith("_bytes") and lang != "video" and value is not None \
                and row.get(lang_column(lang, "status")) == "ok":
            members[track_member(lang)] = int(value)
    if row.get("video_ext") and row.get("video_status") == "ok":
        members[str(row["video_ext"])] = row.get("video_bytes")
    arrays = row.get("backbones") or row.get("features") or []
    for name in arrays.split(",") if isinstance(arrays, str) else arrays:
        if name:
            members[feature_member(name)] = None
    return members


def cross_check(name: str, rows: list[dict], sizes: dict[str, dict | None], report: VerifyReport) -> None:
    """Rows against the tar: every ok row has its sample, and every member a row records is in
    that sample with the recorded size."""
    for row in rows:
        vid = row.get("video_id")
        if vid in sizes and sizes[vid] is None:
            continue  # a refused sample, reported as such
        sample = sizes.get(vid)
        if sample is None:
            if row.get("status") == "ok":
                report.problems.append(f"{name}: row {vid} has status ok but the tar holds no sample for it")
            continue
        for member, size in sorted(recorded_members(row).items()):
            if is_track_member(member):  # the row records a track, not the format it was stored in
                lang = member.rpartition(".")[0]
                stored = [track_member(lang, ext) for ext in TRACK_EXTS if track_member(lang, ext) in sample]
                if len(stored) > 1:
                    report.problems.append(f"{name}: sample {vid}: language {lang!r} has {len(stored)} track "
                                           f"members ({', '.join(stored)}); a crawl stores one")
                member = find_track_member(sample, lang) or member
            if member not in sample:
                report.problems.append(f"{name}: sample {vid}: the row records member {member!r}, the tar lacks it")
            elif size is not None and sample[member] != size:
                report.problems.append(f"{name}: sample {vid}: member {member!r} holds {sample[member]} bytes, "
                                       f"the row records {size}")


def verify_unit(unit: UnitFiles, report: VerifyReport, deep: bool = True) -> None:
    name = unit.stem
    try:
        stats = read_stats(unit)
    except DamagedUnit as exc:
        report.problems.append(str(exc))
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
    except UNREADABLE_PARQUET as exc:
        report.problems.append(f"{name}: parquet unreadable: {exc}")
        return
    keys: list[str] = []
    sizes: dict[str, dict | None] = {}  # key -> member sizes; None for a refused sample
    layout = LAYOUTS.get(stats.get("layout") or "")

    def refused(key: str, reason: str) -> None:
        keys.append(key)  # the sample is in the tar, though no reader will yield it
        sizes[key] = None
        report.problems.append(f"{name}: sample {key}: {reason}; readers refuse it")

    try:
        for sample in iter_samples(unit.tar, on_refused=refused):
            keys.append(sample["__key__"])
            sizes[sample["__key__"]] = {k: len(v) for k, v in sample.items() if k != "__key__"}
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
    cross_check(name, rows, sizes, report)
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


@command("mmp-verify")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="mmp-verify",
        description="Check a stage output directory (e.g. DATA/crawl): every unit's stats well formed, tar whole "
        "and readable with no unsafe member (links, absolute or '..' names, over the size caps), parquet rows = "
        "samples + failures, rows and members agree (tracks, video, arrays, byte counts), recorded sizes and "
        "sha256 match.",
    )
    parser.add_argument("dirs", nargs="+", help="stage output directories (paths or fsspec URLs such as s3://b/crawl)")
    parser.add_argument("--quick", action="store_true", help="skip sha256 (sizes are still checked)")
    add_version_flag(parser)
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
