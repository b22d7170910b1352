"""``mmp-align``: clean every crawled subtitle track and put each video's languages on one timeline.

One work unit per completed crawl unit, same index: ``crawl-000123`` becomes
``aligned-000123.{tar,parquet,stats.json}``. Every row of the crawl parquet gets
exactly one aligned row, whatever became of it; a video with at least one usable
track also gets a ``subs.json`` sample (``shards.layout.ALIGNED``).

Video statuses:
  ok                every requested language has a usable track
  partial           some do; ``error`` lists what is missing or failed and why
  no_subtitles      the crawl found no track in the requested languages
  no_text           tracks were there but hold no text once cleaned (e.g. only [Music])
  parse_error       no track could be read (binary, too large, no cue readable)
  upstream_failed   the crawl failed for this video (its status is in ``crawl_status``)
  missing_sample    the crawl parquet promises a sample the crawl tar does not hold
  shard_unreadable  the crawl tar broke before this video's sample
  bad_sample        the sample is there but its info.json or key is unusable
  over_budget       cleaning it ran out of --budget-seconds or --budget-memory-mb (``error`` says which)
  crashed           its worker process died while cleaning it
Track statuses (``{lang}_status``): ok, missing, crawl_error, wrong_script (kept under
``flagged_tracks``, out of ``tracks`` and ``segments``), and subtitles' empty,
not_text, too_large, parse_error.

A track over ``--max-track-mb`` (``shards.members.TRACK_MAX_BYTES``, the crawl's cap too) is
never read from the tar: the reader passes it over, and it is that track's ``too_large``
while the video's other tracks are cleaned as usual.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field

from shards.errors import UserError, command
from shards.layout import ALIGNED, UnitFiles, completed_units, is_valid_video_id
from shards.members import MemberLimits
from shards.reader import UNREADABLE_PARQUET, ShardError, iter_samples, read_rows
from shards.rows import aligned_schema, lang_column
from shards.samples import (ABSENT, INFO_JSON, LANGS, SUBS_JSON, InfoJson, SubsJson, TrackRecord, find_track_member,
                            is_track_member, track_format)
from shards.storage import RemotePath, as_path
from shards.writer import UnitWriter

from pipeline.subtitles.align import align_tracks, track_stats
from pipeline.runtime.budget import Budget, OverBudget, budget_number
from pipeline.runtime.cli import (add_common_flags, add_executor_args, add_options, executor_options, field_default,
                                  from_args, option, parse_args)
from pipeline.runtime.langs import add_langs_flag
from pipeline.runtime.stage import (Stage, Unit, check_config, lock_output, prepare_output, print_summary, run_stage,
                                    units_from_upstream)
from pipeline.subtitles.clean import DEFAULT_MAX_BYTES, OK as TRACK_OK, TOO_LARGE, TrackReport, clean_track, \
    too_large_error

log = logging.getLogger("mmp.align")

DEFAULT_LANGS = LANGS
WITH_SAMPLE = frozenset({"ok", "partial", "no_subtitles"})  # crawl statuses that come with a sample
READ_FAILURES = frozenset({"not_text", "too_large", "parse_error"})
@dataclass
class AlignConfig:
    crawl: str
    out: str
    langs: list = field(default_factory=lambda: list(DEFAULT_LANGS))
    keep_annotations: bool = option(False, "keep [Music]-style annotations and >> markers")
    max_track_bytes: int = DEFAULT_MAX_BYTES  # --max-track-mb, in MiB
    # Cleaning is linear in a track's size: a real video's nine tracks take well under a second, the
    # largest allowed ones (--max-track-mb) tens of seconds.
    budget_seconds: float = option(300.0, "wall time one video's cleaning and alignment may take (seconds; 0: no "
                                   "bound); past it the video is over_budget", type=budget_number)
    budget_memory_mb: float = option(4096.0, "memory one video's cleaning and alignment may add (MiB; 0: no "
                                     "bound); past it the video is over_budget", type=budget_number)


# ---------------------------------------------------------------- per-video work

def _set(value):
    """A field's value, None where the member leaves it out."""
    return None if value is ABSENT else value


def align_video(video_id: str, info: InfoJson, members: dict, cfg: AlignConfig,
                skipped: dict | None = None) -> tuple[dict, SubsJson | None]:
    """One crawl sample -> (parquet row, subs.json or None). Bad tracks are values; bugs raise.

    ``skipped``: ``{member: error}`` of the members the reader passed over as too large."""
    declared = info.declared()
    cleaned = {}
    for lang in cfg.langs:
        meta = declared.get(lang) or TrackRecord()
        member = find_track_member(members, lang, prefer=meta.ext)  # <lang>.vtt, or .srt as fetched
        data = members.get(member) if member is not None else None
        too_large = find_track_member(skipped or {}, lang, prefer=meta.ext)
        if data is None and too_large is not None:
            report = TrackReport().fail(TOO_LARGE, skipped[too_large])
            cleaned[lang] = ([], report, _set(meta.kind) or "none", _set(meta.source_lang))
        if data is None:
            continue
        cues, report = clean_track(data, lang, keep_annotations=cfg.keep_annotations, max_bytes=cfg.max_track_bytes,
                                   fmt=track_format(member))
        cleaned[lang] = (cues, report, _set(meta.kind) or "none", _set(meta.source_lang))
    return assemble_video(video_id, info, cleaned, cfg.langs, declared)


def assemble_video(video_id: str, info: InfoJson, cleaned: dict, langs, declared: dict | None = None,
                   started: float | None = None) -> tuple[dict, SubsJson | None]:
    """Cleaned tracks ``{lang: (cues, TrackReport, kind, source_lang)}`` -> (parquet row, subs.json or None).

    ``declared``: the crawl's ``TrackRecord`` per language. Shared by mmp-align (tracks from WebVTT
    or SRT) and mmp-import (tracks from the published files), so both write the same rows and samples.
    """
    started = time.time() if started is None else started
    declared = declared or {}
    duration, language = _set(info.duration), _set(info.language)
    row = {"video_id": video_id, "language": language,
           "duration": float(duration) if isinstance(duration, (int, float)) else None}
    usable, flagged, problems = {}, {}, {}
    present = 0
    for lang in langs:
        meta = declared.get(lang) or TrackRecord()
        if lang not in cleaned:
            error = _set(meta.error)
            row[lang_column(lang, "kind")] = _set(meta.kind) or "none"
            row[lang_column(lang, "source")] = _set(meta.source_lang)
            status = "crawl_error" if error else "missing"
            row[lang_column(lang, "status")], row[lang_column(lang, "error")] = status, error
            if error:
                problems[lang] = {"status": status, "error": error}
            continue
        cues, report, kind, source = cleaned[lang]
        row[lang_column(lang, "kind")], row[lang_column(lang, "source")] = kind, source
        present += 1
        row.update({lang_column(lang, "rolling"): report.rolling, lang_column(lang, "parser"): report.parser,
                    lang_column(lang, "repairs"): json.dumps(report.repairs, sort_keys=True) if report.repairs else None,
                    lang_column(lang, "flags"): ",".join(report.flags) or None})
        if report.status != TRACK_OK:
            row[lang_column(lang, "status")], row[lang_column(lang, "error")] = report.status, report.error
            problems[lang] = {"status": report.status, "error": report.error, "report": report.as_dict()}
            continue
        row.update({lang_column(lang, k): v for k, v in track_stats(cues, lang).items()})
        entry = {"kind": kind, "source_lang": source, "cues": [list(c) for c in cues], "report": report.as_dict()}
        if "wrong_script" in report.flags:
            row[lang_column(lang, "status")] = "wrong_script"
            row[lang_column(lang, "error")] = "; ".join(report.warnings)[:300]
            flagged[lang] = entry
        else:
            row[lang_column(lang, "status")] = "ok"
            usable[lang] = entry

    timeline, segments, coverage = align_tracks(usable, language)
    for lang, frac in coverage.items():
        row[lang_column(lang, "coverage")] = frac
    row.update(n_langs=len(usable), langs=",".join(l for l in langs if l in usable) or None,
               timeline=timeline, timeline_kind=usable[timeline]["kind"] if timeline else None,
               n_segments=len(segments))
    track_status = {l: row.get(lang_column(l, "status")) for l in langs}
    failed = [f"{l} ({track_status[l]})" for l in langs if track_status[l] not in ("ok", "missing")]
    missing = [l for l in langs if track_status[l] == "missing"]
    why = "; ".join(p for p in (("missing: " + ", ".join(missing)) if missing else "",
                                ("failed: " + ", ".join(failed)) if failed else "") if p) or None
    if usable:
        status = "ok" if len(usable) == len(langs) else "partial"
    elif present == 0:
        status = "no_subtitles"
    elif any(p["status"] in READ_FAILURES for p in problems.values()):
        status = "parse_error"
    else:
        status = "no_text"
    row.update(status=status, error=why if status != "ok" else None, seconds=round(time.time() - started, 4))
    if not usable:
        return row, None
    return row, SubsJson(video_id=video_id, duration=row["duration"], language=language, timeline=timeline,
                         tracks=usable, segments=segments, coverage=coverage,
                         flagged_tracks=flagged or ABSENT, track_problems=problems or ABSENT)


# ---------------------------------------------------------------- the stage

class AlignStage(Stage):
    name = "aligned"
    layout = ALIGNED

    def __init__(self, cfg: AlignConfig):
        self.cfg = cfg
        self.schema = aligned_schema(cfg.langs)
        self.budget = Budget(cfg.budget_seconds, cfg.budget_memory_mb)
        self.crawl = as_path(cfg.crawl)

    def plan(self) -> list[Unit]:
        return units_from_upstream(self.crawl, "crawl")

    def config(self) -> dict:
        return asdict(self.cfg)

    def built_from(self, unit: Unit) -> dict | None:
        from pipeline.runtime.lineage import unit_identity

        return {"crawl": unit_identity(UnitFiles(self.crawl, "crawl", unit.index))}

    def fingerprint(self) -> dict:
        from pipeline.runtime.lineage import stage_identity

        return {"crawl_identity": stage_identity(self.crawl), "langs": list(self.cfg.langs),
                "keep_annotations": self.cfg.keep_annotations, "max_track_bytes": self.cfg.max_track_bytes}

    def process(self, unit: Unit, writer: UnitWriter) -> None:
        source = UnitFiles(self.crawl, "crawl", unit.index)
        try:
            crawl_rows = {r["video_id"]: r for r in read_rows(source.parquet)}
        except UNREADABLE_PARQUET as exc:
            log.warning("%s: parquet unreadable (%s); rows rebuilt from the tar", source.stem, exc)
            writer.count("crawl_parquet_unreadable")
            crawl_rows = {}
        done: set = set()
        skipped: dict = {}  # key -> {member: error}: members over their cap, passed over unread

        def skip(key: str, member: str, size: int, reason: str) -> None:
            log.warning("%s: sample %s: %s; that member is skipped", source.stem, key, reason)
            writer.count("members_too_large")
            error = too_large_error(size, self.cfg.max_track_bytes) if is_track_member(member) else reason
            skipped.setdefault(key, {})[member] = error

        def emit(row: dict, subs: SubsJson | None) -> None:
            row["crawl_unit"] = unit.index
            if subs is not None:
                writer.write_sample(row["video_id"], {SUBS_JSON: subs.to_member()})
                writer.count("segments", len(subs.segments))
            for lang in self.cfg.langs:
                status = row.get(lang_column(lang, "status"))
                if status and status != "missing":
                    writer.count(f"tracks/{status}")
                writer.count("cues", row.get(lang_column(lang, "cues")) or 0)
            writer.add_row(row)
            done.add(row["video_id"])
            self.video_done(row["status"])

        broken = None
        try:
            # a track over --max-track-mb is never read: the reader's cap for text members is the same
            limits = MemberLimits(text=self.cfg.max_track_bytes)
            for sample in iter_samples(source.tar, limits, on_skipped=skip):
                key = sample.pop("__key__")
                over = skipped.pop(key, {})
                crawl = crawl_rows.get(key, {})
                base = {"crawl_status": crawl.get("status", "unknown")}
                if key in done:
                    writer.count("duplicate_samples")
                    continue
                if not is_valid_video_id(key):
                    emit({**base, "video_id": key, "status": "bad_sample", "error": "sample key is not a video id"}, None)
                    continue
                try:
                    info = InfoJson.from_member(sample[INFO_JSON])
                except (KeyError, ValueError) as exc:
                    why = over.get(INFO_JSON, exc)
                    emit({**base, "video_id": key, "status": "bad_sample", "error": f"info.json unusable: {why}"[:300]}, None)
                    continue
                try:
                    row, subs = self.within_budget(key, align_video, key, info, sample, self.cfg, over)
                except OverBudget as exc:
                    row, subs = {"video_id": key, "status": exc.status, "error": exc.what}, None
                emit({**base, **row}, subs)
        except ShardError as exc:
            broken = str(exc)
            log.warning("%s: tar unreadable after %d samples: %s", source.stem, len(done), exc)
            writer.count("crawl_tar_unreadable")

        for vid, crawl in crawl_rows.items():
            if vid in done:
                continue
            status = crawl.get("status")
            if status not in WITH_SAMPLE:
                row = {"status": "upstream_failed", "error": f"crawl {status}: {crawl.get('error') or ''}".strip()[:500]}
            elif broken:
                row = {"status": "shard_unreadable", "error": f"crawl tar unreadable: {broken}"[:500]}
            else:
                row = {"status": "missing_sample", "error": f"crawl row says {status} but its tar has no sample"}
            emit({"video_id": vid, "crawl_status": status, **row}, None)
        writer.count("videos", len(done))


def reopen_stale_units(crawl, out) -> int:
    """Redo aligned units written before units recorded what they were built from (``built_from``,
    compared by ``run_stage``) whose crawl unit is newer than they are."""
    reopened = 0
    for files in completed_units(out, "aligned"):
        try:
            if "built_from" in json.loads(files.stats.read_text()):
                continue
        except (OSError, ValueError, RecursionError):
            continue
        source = UnitFiles(crawl, "crawl", files.index)
        newer = source.stats.stat().st_mtime if source.is_complete() else None
        own = files.stats.stat().st_mtime
        if newer is not None and (isinstance(source.directory, RemotePath) or isinstance(files.directory, RemotePath)):
            newer, own = int(newer), int(own)  # object stores keep whole seconds
        if newer is not None and newer > own:
            files.stats.unlink()
            reopened += 1
    return reopened


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmp-align",
        description="Clean the crawled subtitles (rolling ASR captions unrolled, tags, entities and "
        "annotations removed) and put each video's languages on one timeline, into DATA/aligned/.",
        epilog="Re-running the same command resumes: finished units are skipped, and units whose crawl "
        "unit changed since are redone.")
    p.add_argument("--crawl", required=True,
                   help="the crawl's output directory (crawl-*.tar/parquet), a path or an fsspec URL (s3://b/crawl)")
    p.add_argument("--out", required=True,
                   help="where aligned-*.{tar,parquet,stats.json} go, a path or an fsspec URL (s3://b/aligned)")
    add_langs_flag(p, default=None, help="the languages to keep",
                   default_text="the languages the crawl was run with, from its config.json; else "
                   + ",".join(DEFAULT_LANGS))
    add_options(p, AlignConfig)
    p.add_argument("--max-track-mb", type=float, default=field_default(AlignConfig, "max_track_bytes") / 2**20,
                   help="tracks larger than this are recorded as too_large, never read from the crawl tar nor parsed "
                   "(default: %(default)g, the largest track the crawl stores)")
    add_executor_args(p)
    add_common_flags(p)
    return p


def crawl_langs(crawl) -> list[str] | None:
    """The languages the crawl in ``crawl`` was run with (its config.json), if it says."""
    try:
        langs = json.loads((as_path(crawl) / "config.json").read_text())["config"]["langs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ok = isinstance(langs, list) and langs and all(isinstance(l, str) for l in langs)
    return list(langs) if ok else None


def config_from_args(args) -> AlignConfig:
    langs = args.langs or crawl_langs(args.crawl) or list(DEFAULT_LANGS)  # --langs is checked as it is read
    if not as_path(args.crawl).is_dir():
        raise UserError(f"--crawl {args.crawl} is not a directory; point it at mmp-crawl's output (DATA/crawl)")
    if not completed_units(args.crawl, "crawl"):
        raise UserError(f"--crawl {args.crawl} holds no completed crawl unit (crawl-*.stats.json); run mmp-crawl first")
    if args.max_track_mb <= 0:
        raise UserError("--max-track-mb must be positive")
    return from_args(AlignConfig, args, crawl=str(args.crawl), out=str(args.out), langs=list(langs),
                     max_track_bytes=int(args.max_track_mb * 2**20))


@command("mmp-align")
def main(argv=None) -> int:
    args = parse_args(build_parser(), argv)
    cfg = config_from_args(args)
    stage = AlignStage(cfg)
    out = as_path(args.out)
    prepare_output(out)
    with lock_output(out, args.rank, args.world_size) as lock:
        check_config(out, stage)  # before touching any unit of a run over other input
        stale = reopen_stale_units(stage.crawl, out)
        if stale:
            print(f"mmp-align: {stale} units are redone because their crawl units changed")
        summary = run_stage(stage, out, lock=lock, **executor_options(args))
    print_summary("mmp-align", out, summary)
    return 1 if summary.units_failed else 0


if __name__ == "__main__":
    sys.exit(main())
