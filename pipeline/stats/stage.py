"""``mmp-stats``: what a dataset holds, from the parquet and stats files the stages write.

Every count comes from the per-video parquet rows (``crawl-*.parquet``,
``aligned-*.parquet``, ``mmp-*.parquet``), the per-unit ``*.stats.json`` files and
``config.json``. Tars are opened only for text the rows do not keep: the first samples
of one aligned shard for example segments, and, with ``--tokenizer``, a bounded sample
of videos to count tokens with it (``stats_text``). Only completed units (the ones with
their stats file) are counted, so it runs on a crawl that is still going and on
the outputs of one stage. Damaged or missing files become entries under
``issues`` in the report, never a traceback.

Columns are read per unit with pyarrow (only those needed, strings dictionary
encoded), concatenated and aggregated with numpy: no Python loop over videos.
``pipeline/stats/report.py`` renders the result as ``report.html`` and ``report.md``;
``stats.json`` is the same result as data.

This module is the CLI and the top level; ``pipeline.stats.read`` finds and reads the
files, ``pipeline.stats.summary`` aggregates the columns.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from shards.errors import UserError, check_writable, command, output_errors
from shards.writer import atomic_write_bytes

from pipeline.runtime.cli import add_common_flags, parse_args
from pipeline.stats.read import Issues, find_stage_dirs, read_stage_table, read_stats_files
from pipeline.stats.summary import _iso, order_langs, shard_summary, summarize_aligned, summarize_crawl, summarize_mmp
from pipeline.stats.text import SAMPLE_CUES, SAMPLE_VIDEOS, load_counting_tokenizer, segment_examples, tokenizer_counts

STATS_VERSION = 1
TOKEN_RULE = ("whitespace-separated words; in languages written without spaces (zh, ja, th) each CJK "
              "character is one token and other runs are split on whitespace (pipeline.subtitles.align.count_tokens)")


# ---------------------------------------------------------------- the whole dataset

def tokenizer_note(name: str | None, sample: int = SAMPLE_VIDEOS) -> dict:
    """Which rule counted the parquet's tokens, and what ``--tokenizer`` adds."""
    note = {"rule": TOKEN_RULE, "counted_by": "mmp-align / mmp-import when the aligned rows were written",
            "requested": name}
    if name is not None:
        note["counting"] = (f"--tokenizer {name} counted the text of the aligned shards (subs.json): every video "
                            f"when a directory holds at most {sample:,}, else a sample of {sample:,} videos spread "
                            f"over its shards (at most {SAMPLE_CUES} cues of each track), scaled by the rule's exact "
                            "totals (ratio estimate, with its standard error).")
    return note


def build_stats(data: Path, tokenizer=None, threads: int = 4, progress: bool = False, *,
                tokenizer_name: str | None = None, sample: int = SAMPLE_VIDEOS, examples: bool = True) -> dict:
    """Everything the report shows, as plain JSON-able data.

    ``tokenizer``: a loaded tokenizer (``pipeline.runtime.hub.load_tokenizer``) that counts the aligned text, or None.
    """
    started = time.time()
    issues = Issues()
    dirs = find_stage_dirs(data)
    result = {"version": STATS_VERSION, "generated_at": _iso(time.time()), "data": str(data),
              "tokenizer": tokenizer_note(tokenizer_name if tokenizer is not None else None, sample),
              "issues": issues, "crawl": [], "aligned": [], "mmp": [], "shards": []}
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
            if examples:
                section["examples"] = segment_examples(sd, issues, langs)
            if tokenizer is not None:
                section["tokenizer_counts"] = tokenizer_counts(tokenizer, tokenizer_name, sd, section["per_lang"],
                                                               issues, size=sample, progress=progress)
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


# The reports of a 1.2M-video dataset are a few MB (report.html embeds its PNG plots): less free
# space than this and the writes at the end would fail after all the reading.
MIN_FREE_BYTES = 64 * 2**20


def check_out(out: Path) -> None:
    """Make ``out`` and prove it takes a file and has room, before any input is read: a read-only,
    misplaced or full ``--out`` is one sentence (``UserError``), not a traceback at the end."""
    check_writable(out, MIN_FREE_BYTES)


def write_report(stats: dict, out: Path) -> dict:
    """stats.json, report.md and report.html under ``out``; returns their paths."""
    from pipeline.stats import report

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
        description="Dataset statistics from the parquet and stats files the stages write (tars only for example "
        "segments and --tokenizer): "
        "the paper's Table 8 beside ours, track kinds, languages per video, alignment coverage, tokens per "
        "video and per subtitle, durations, categories, crawl outcomes and runs, features and shards. "
        "Writes OUT/report.html (self-contained, opens offline), OUT/report.md and OUT/stats.json.",
        epilog="Works on a dataset that is still being built: only units with their stats file are counted, "
        "the others are listed as warnings. Damaged files are reported in the report, not as errors.")
    p.add_argument("--data", required=True,
                   help="dataset root holding crawl/, aligned/, mmp/ or imported/aligned/, or one stage's directory")
    p.add_argument("--out", type=Path, help="where the reports go (default: DATA/reports)")
    p.add_argument("--tokenizer", metavar="NAME",
                   help="count tokens per language with this tokenizer (a save_pretrained directory or a hub name, "
                   "e.g. xlm-roberta-base: the paper's Table 8 counts are tokenizer counts), loaded as --text-model "
                   "is; reads the aligned shards' text, sampled on big datasets (needs transformers)")
    p.add_argument("--tokenizer-sample", type=int, default=SAMPLE_VIDEOS, metavar="VIDEOS",
                   help="videos per aligned directory that --tokenizer reads (all of them when there are fewer); "
                   "the report gives the estimate's error (default: %(default)s)")
    p.add_argument("--no-examples", action="store_true",
                   help="do not open an aligned shard for the example segments")
    p.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="parquet files read at once")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_flags(p)
    return p


@command("mmp-stats")
def main(argv=None) -> int:
    args = parse_args(build_parser(), argv)
    if "://" in args.data:
        raise UserError(f"--data {args.data} is a URL; mmp-stats reads a local (or mounted) directory: mount the "
                        "bucket (e.g. s3fs, gcsfuse) or copy the parquet and stats files (and, for examples and "
                        "--tokenizer, a few aligned tars) locally")
    args.data = Path(args.data)
    if not args.data.is_dir():
        raise UserError(f"--data {args.data} is not a directory; point it at the dataset root (e.g. data/)")
    if args.tokenizer_sample < 1:
        raise UserError(f"--tokenizer-sample {args.tokenizer_sample} must be at least 1 video")
    if importlib.util.find_spec("matplotlib") is None:
        raise UserError("mmp-stats needs matplotlib for its plots: pip install 'multi-howto100m[stats]'")
    tokenizer = None
    if args.tokenizer is not None:
        tokenizer, why = load_counting_tokenizer(args.tokenizer)
        if tokenizer is None:
            raise UserError(why)
    out = args.out or args.data / "reports"
    check_out(out)
    stats = build_stats(args.data, tokenizer, threads=args.threads, progress=not args.no_progress,
                        tokenizer_name=args.tokenizer, sample=args.tokenizer_sample,
                        examples=not args.no_examples)
    with output_errors(out):  # checked at the start, but a disk can fill meanwhile
        paths = write_report(stats, out)
    for issue in stats["issues"]:
        print(f"mmp-stats: {issue['level']}: {issue['where']}: {issue['message']}", file=sys.stderr)
    print(f"mmp-stats: {len(stats['crawl'])} crawl, {len(stats['aligned'])} aligned, {len(stats['mmp'])} mmp "
          f"directories; {len(stats['issues'])} issues; in {stats['seconds']:.1f}s -> {paths['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
