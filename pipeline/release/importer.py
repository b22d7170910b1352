"""``mmp-import``: start from what was already published, not only from YouTube.

- ``multi-ht100m``: the nine ``how2_{lang}.json`` files of the Multi-HT100M release
- ``howto100m``: HowTo100M's English ``caption.json`` (stop words removed) or ``raw_caption.json``
- ``s3d-features``: the released HowTo100M S3D features (see ``pipeline.release.s3d_features``)

Captions land in ``--out`` (an aligned directory, e.g. ``DATA/aligned``) exactly as
``mmp-align`` writes it (track kind ``released``), cleaned and aligned by the same code,
so every later stage works on them unchanged. Two passes keep memory bounded whatever
the file sizes: each language file is streamed into hash partitions (``OUT/.import/``),
then each partition of all languages is joined, cleaned and aligned as one work unit.
Both passes run under the output's run lock; an earlier run's ``--out DATA`` resumes in
``DATA/aligned`` (``pipeline.runtime.out_dir``).
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from shards.errors import UserError, command, output_errors
from shards.layout import ALIGNED, is_valid_video_id
from shards.rows import aligned_schema
from shards.samples import ABSENT, RELEASE_LANGS, SUBS_JSON, InfoJson
from shards.storage import as_path, local_copy, staging_dir, staging_name
from shards.writer import UnitWriter

from pipeline.release import captions as release
from pipeline.runtime.cli import add_common_flags, add_executor_args, executor_options, parse_args
from pipeline.runtime.langs import add_langs_flag
from pipeline.runtime.lineage import inputs_identity, open_digest_cache
from pipeline.runtime.budget import Budget, OverBudget, add_budget_args, budget_from_args
from pipeline.subtitles.stage import assemble_video
from pipeline.runtime.out_dir import stage_out
from pipeline.runtime.stage import Stage, Unit, check_config, lock_output, prepare_output, print_summary, run_stage
from pipeline.subtitles.clean import TrackReport, clean_text, repair_timeline, script_flag
from pipeline.crawl.videolist import read_video_list

log = logging.getLogger("mmp.import")
RELEASED = "released"


# A published video's tracks clean in milliseconds (at most 10,000 cues each); a feature file is at most
# 384 MiB. Both bounds leave two orders of magnitude of room.
RELEASE_BUDGET = Budget(seconds=120.0, memory_mb=2048.0)
FEATURE_BUDGET = Budget(seconds=120.0, memory_mb=2048.0)


def clean_release_track(start: list, end: list, text: list, lang: str, problem: str | None,
                        keep_annotations: bool = False) -> tuple[list, TrackReport]:
    """The release's cue lists -> clean cues, by the rules ``mmp-align`` applies to VTT cues."""
    report = TrackReport(parser="release")
    if text is None:  # nothing of the value could be kept (pipeline.release.captions.check_cues)
        return [], report.fail("parse_error", problem or "the value holds no cue lists")
    report.raw_cues = len(text)
    if problem:
        report.warnings.append(problem)
        report.repair("release_problem")
    cues = []
    for s, e, t in zip(start, end, text):
        t = clean_text(t or "", keep_annotations)
        if t:
            cues.append((s, e, t))
        else:
            report.repair("empty_cue_dropped")
    cues = [(round(s, 3), round(e, 3), t) for s, e, t in repair_timeline(cues, report)]
    if not cues:
        return [], report.fail("empty", "no text left after cleaning")
    doubt = script_flag(cues, lang)
    if doubt:
        report.flags.append("wrong_script")
        report.warnings.append(doubt)
    return cues, report


def invalid_id_row(video_id: str) -> dict:
    """The row of a release key that is no YouTube id (shown cut short: a key can be of any length)."""
    shown = video_id if len(video_id) <= 64 else video_id[:64] + "..."
    return {"video_id": shown, "status": "invalid_id", "crawl_status": None,
            "error": f"video id {shown!r} is not 11 characters of A-Z, a-z, 0-9, _ and -; the video is skipped"}


class ReleaseImport(Stage):
    """Pass 2: one unit per hash partition, joining every language of its videos."""

    name = "aligned"
    layout = ALIGNED

    def __init__(self, parts: Path, langs: list, partitions: int, meta: dict | None = None,
                 source: str = "multi-ht100m", keep_annotations: bool = False, inputs: str | None = None,
                 budget: Budget | None = None):
        self.parts, self.langs, self.partitions = Path(parts), list(langs), partitions
        self.inputs = inputs  # the caption files' (and video list's) content identity
        self.meta = meta or {}
        self.source, self.keep_annotations = source, keep_annotations
        self.schema = aligned_schema(self.langs)
        self.budget = budget or RELEASE_BUDGET

    def plan(self) -> list[Unit]:
        present = set()
        for lang in self.langs:
            for path in (self.parts / lang).glob("part-*.arrow"):
                present.add(int(path.stem.split("-")[1]))
        return [Unit(p, [p]) for p in sorted(present)]

    def config(self) -> dict:
        return {"source": self.source, "langs": self.langs, "partitions": self.partitions,
                "keep_annotations": self.keep_annotations}

    def fingerprint(self) -> dict:
        return {"partitions": self.partitions, "langs": self.langs, "source": self.source,
                **({"inputs_identity": self.inputs} if self.inputs else {})}

    def _video(self, vid: str, by_lang: dict):
        """One video's published tracks -> (row, subs.json or None), as mmp-align writes them."""
        cleaned = {}
        for lang in self.langs:
            entry = by_lang[lang].get(vid)
            if entry is None:
                continue
            start, end, text, problem = entry
            cues, report = clean_release_track(start, end, text, lang, problem, self.keep_annotations)
            cleaned[lang] = (cues, report, RELEASED, lang)
        meta = self.meta.get(vid, {})
        info = InfoJson(duration=None, language=None, input_meta=meta or None, extra={"source": self.source})
        return assemble_video(vid, info, cleaned, self.langs)

    def process(self, unit: Unit, writer: UnitWriter) -> None:
        by_lang = {lang: release.read_partition(self.parts, lang, unit.index) for lang in self.langs}
        ids = sorted(set().union(*by_lang.values()))
        for vid in ids:
            if not is_valid_video_id(vid):  # a key of the file, not yet checked: it must never name a path
                writer.add_row(invalid_id_row(vid))
                self.video_done("invalid_id")
                continue
            try:
                row, subs = self.within_budget(vid, self._video, vid, by_lang)
            except OverBudget as exc:
                row, subs = {"video_id": vid, "status": exc.status, "error": exc.what}, None
            row["crawl_status"] = self.source
            meta = self.meta.get(vid, {})
            if subs is not None:
                subs = replace(subs, source=self.source, meta=meta or ABSENT,
                               stopwords_removed=(self.source == "howto100m-caption"
                                                  if self.source.startswith("howto100m") else ABSENT))
                writer.write_sample(vid, {SUBS_JSON: subs.to_member()})
            writer.add_row(row)
            self.video_done(row["status"])


def _caption_files(args_captions: list[Path], langs: list, layout: str) -> dict:
    """``{lang: [files]}`` from directories and files named ``how2_{lang}.json``."""
    found: dict = {}
    for item in args_captions:
        if item.is_dir():
            candidates = sorted(item.glob("*.json"))
        elif item.is_file():
            candidates = [item]
        else:
            raise UserError(f"--captions {item} does not exist")
        for path in candidates:
            if layout == "howto100m":
                found.setdefault("en", []).append(path)
                continue
            stem = Path(path.name).stem
            lang = stem.split("_")[-1] if stem.startswith("how2_") else None
            if lang in langs:
                found.setdefault(lang, []).append(path)
    if not found:
        raise UserError("no caption files found: give how2_{lang}.json files or a directory holding them")
    return found


def scratch_dir(aligned, scratch) -> Path:
    """Where the first pass's partitions go: ``--scratch``, else ``OUT/.import`` (a local
    directory named after OUT when OUT is on an object store)."""
    if scratch is not None:
        return Path(scratch)
    if isinstance(aligned, Path):
        return aligned / ".import"
    return staging_dir() / f"import-{staging_name(aligned)}"


def run_import(files_by_lang: dict, out, langs: list, partitions: int, meta: dict, source: str,
               args) -> int:
    """Both passes into the aligned directory ``out``, under its run lock."""
    aligned = stage_out(out, ReleaseImport.name, "mmp-import", "import")
    prepare_output(aligned)
    with lock_output(aligned, args.rank, args.world_size) as lock:
        summary, parts, present = _import_locked(files_by_lang, aligned, langs, partitions, meta, source, args, lock)
    _print_languages(parts, present)
    return 1 if summary.units_failed else 0


def _import_locked(files_by_lang: dict, aligned, langs: list, partitions: int, meta: dict, source: str, args, lock):
    parts = scratch_dir(aligned, args.scratch)
    from tqdm import tqdm

    videos = getattr(args, "videos", None)
    with open_digest_cache(aligned) as digests:  # each file read once, and on a re-run only if it changed
        identity = {lang: inputs_identity(files, digests) for lang, files in sorted(files_by_lang.items())}
        everything = inputs_identity([f for lang in sorted(files_by_lang) for f in files_by_lang[lang]]
                                     + ([local_copy(videos)] if videos is not None else []), digests)
    present = [l for l in langs if l in files_by_lang]
    stage = ReleaseImport(parts, present, partitions, meta, source, args.keep_annotations, inputs=everything,
                          budget=budget_from_args(args))
    check_config(aligned, stage)  # an import of other files is refused before anything is read
    with output_errors(parts):
        parts.mkdir(parents=True, exist_ok=True)
    for lang in present:
        done = release.language_report(parts, lang)
        if done is not None and done.get("input") == identity[lang]:
            log.info("%s already partitioned (%d videos)", lang, done["videos"])
            continue
        if done is not None:
            log.warning("%s: the partitions in %s are of other caption files; partitioning again", lang, parts)
        with tqdm(desc=f"reading {lang}", unit="video", disable=None if not args.no_progress else True,
                  file=sys.stderr) as bar:
            try:
                report = release.partition_language(lang, files_by_lang[lang], parts, partitions,
                                                    progress=bar.update, identity=identity[lang])
            except release.ReleaseError as exc:
                raise UserError(str(exc)) from None
        for line in report.truncated:
            print(f"mmp-import: warning: {line}", file=sys.stderr)
        if report.script_doubt:
            print(f"mmp-import: warning: {report.script_doubt}", file=sys.stderr)
    summary = run_stage(stage, aligned, lock=lock, **executor_options(args))
    print_summary("mmp-import", aligned, summary)
    return summary, parts, present


def _print_languages(parts: Path, present: list) -> None:
    for lang in present:
        rep = release.language_report(parts, lang) or {}
        notes = [f"{rep.get('videos', 0)} videos"]
        if rep.get("problems"):
            notes.append(f"{rep['problems']} with repaired cue lists")
        notes += rep.get("truncated") or []
        if rep.get("script_doubt"):
            notes.append("LANGUAGE DOUBT: " + rep["script_doubt"])
        elif rep.get("language_check", "stop words") != "stop words":
            notes.append("language " + rep["language_check"])
        print(f"  {lang}: " + "; ".join(notes))


def _partitions(value: str, files_by_lang: dict) -> int:
    if value == "auto":
        return release.auto_partitions([f for files in files_by_lang.values() for f in files])
    try:
        n = int(value)
    except ValueError:
        raise UserError(f"--partitions must be a whole number or 'auto', not {value!r}") from None
    if n < 1:
        raise UserError("--partitions must be at least 1")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmp-import", description="Import published Multi-HT100M / HowTo100M files "
                                "into the toolkit's stage outputs (DATA/aligned/, DATA/mmp/).")
    sub = p.add_subparsers(dest="source", required=True)
    m = sub.add_parser("multi-ht100m", help="the nine how2_{lang}.json caption files -> DATA/aligned/")
    m.add_argument("--captions", nargs="+", type=as_path, required=True,
                   help="how2_{lang}.json files or their directory (paths or fsspec URLs)")
    add_langs_flag(m, default=RELEASE_LANGS, help="the languages whose how2_{lang}.json files to import")
    h = sub.add_parser("howto100m", help="HowTo100M's caption.json or raw_caption.json (English) -> DATA/aligned/")
    h.add_argument("--captions", nargs=1, type=as_path, required=True, help="caption.json or raw_caption.json")
    h.add_argument("--videos", type=as_path, help="HowTo100M_v1.csv: categories and task ids go into the samples")
    for q in (m, h):
        q.add_argument("--out", type=as_path, required=True,
                       help="the aligned directory, a path or an fsspec URL (e.g. DATA/aligned): aligned-NNNNNN.* "
                            "and config.json go straight into it")
        q.add_argument("--scratch", type=Path,
                       help="where the first pass's hash partitions go (default OUT/.import, or a local "
                            "temporary directory when OUT is a URL; on a multi-node Ray run give a shared path)")
        q.add_argument("--partitions", default="auto",
                       help="hash partitions = work units of the join; memory holds one partition of every "
                            "language. 'auto' (default): one per ~64 MB of caption files, at most 4096")
        q.add_argument("--keep-annotations", action="store_true", help="keep [Music]-style annotations")
        add_budget_args(q, RELEASE_BUDGET, "cleaning one video's published tracks")
        add_executor_args(q)
    f = sub.add_parser("s3d-features", help="released HowTo100M S3D features + DATA/aligned -> DATA/mmp/")
    f.add_argument("--features", type=Path, required=True, help="directory of VIDEO_ID.npy, [seconds, 1024]")
    f.add_argument("--aligned", required=True,
                   help="DATA/aligned (from mmp-align or mmp-import), a path or an fsspec URL (s3://b/aligned)")
    f.add_argument("--out", required=True, help="the training shard directory, e.g. DATA/mmp or s3://b/mmp")
    f.add_argument("--tolerance", type=float, default=3.0,
                   help="seconds of length mismatch between features and video before it is recorded")
    add_budget_args(f, FEATURE_BUDGET, "reading one video's feature file")
    add_executor_args(f)
    add_common_flags(p)
    return p


@command("mmp-import")
def main(argv=None) -> int:
    args = parse_args(build_parser(), argv)
    if args.source == "s3d-features":
        from pipeline.release.s3d_features import S3DFeatureImport

        stage = S3DFeatureImport(args.features, args.aligned, args.out, args.tolerance, budget=budget_from_args(args))
        summary = run_stage(stage, args.out, **executor_options(args))
        print_summary("mmp-import", args.out, summary)
        return 1 if summary.units_failed else 0
    if args.source == "multi-ht100m":
        langs = args.langs
        files = _caption_files(args.captions, langs, "multi")
        return run_import(files, args.out, langs, _partitions(args.partitions, files), {}, "multi-ht100m", args)
    path = args.captions[0]
    if not path.is_file():
        raise UserError(f"--captions {path} does not exist")
    partitions = _partitions(args.partitions, {"en": [path]})
    meta = {}
    if args.videos is not None:
        meta = {e.video_id: e.meta for e in read_video_list(local_copy(args.videos)) if e.valid}
    stopwords = "raw_caption" not in path.name
    source = "howto100m-caption" if stopwords else "howto100m-raw_caption"
    log.info("%s: stop words %s", path.name, "removed" if stopwords else "kept")
    return run_import({"en": [path]}, args.out, ["en"], partitions, meta, source, args)


if __name__ == "__main__":
    sys.exit(main())
