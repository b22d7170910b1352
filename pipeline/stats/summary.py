"""Aggregations for ``mmp-stats``: one stage's concatenated columns in, plain JSON-able dicts out.

Columns arrive dictionary encoded (strings) or as numbers with nulls; they become numpy
arrays of codes or float64 with NaN, and every figure is a vectorised count, percentile
or histogram over them: no Python loop over videos.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shards.rows import lang_column

from pipeline.crawl import errors
from pipeline.stats.progress import crawl_progress, crawl_projection
from pipeline.stats.read import StageDir

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
RUN_GAP_SECONDS = 600  # a pause longer than this between units starts a new run (a resume)

# Histogram bins shared by every language so that the plots overlay.
TOKENS_PER_VIDEO_BINS = np.unique(np.round(np.logspace(0, 5, 51), 6))
TOKENS_PER_SUB_BINS = np.arange(0, 41, 1.0)
CUE_SECONDS_BINS = np.arange(0, 15.5, 0.5)
COVERAGE_BINS = np.linspace(0, 1, 21)
VIDEO_MINUTES_BINS = np.arange(0, 61, 2.0)
MISMATCH_BINS = np.array([0, 0.5, 1, 2, 3, 5, 10, 30, 60, 300, np.inf])


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
    """n, mean, median, p10, p25, p75, p90 of the finite values."""
    v = values[np.isfinite(values)]
    if not len(v):
        return {"n": 0, "mean": None, "median": None, "p10": None, "p25": None, "p75": None, "p90": None}
    p10, p25, p50, p75, p90 = np.percentile(v, [10, 25, 50, 75, 90])
    return {"n": int(len(v)), "mean": float(v.mean()), "median": float(p50), "p10": float(p10), "p25": float(p25),
            "p75": float(p75), "p90": float(p90)}


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


def failure_examples(table: pa.Table, fine=("ok",), per_status: int = 5) -> dict:
    """``{status: [[video_id, reason], ...]}``: the first few videos of each status other than ``fine``."""
    if "video_id" not in table.column_names or not table.num_rows:
        return {}
    s_idx, s_names = codes(table.column("status"))
    out = {}
    for i, name in enumerate(s_names):
        if name in fine:
            continue
        rows = np.flatnonzero(s_idx == i)[:per_status]
        if not len(rows):
            continue
        picked = table.take(pa.array(rows))
        out[name] = [[v, e] for v, e in zip(picked.column("video_id").to_pylist(), picked.column("error").to_pylist())]
    return out


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
           "runs": crawl_runs(sd), "progress": crawl_progress(sd, n), "projection": crawl_projection(sd),
           "failed_examples": failure_examples(table),
           "duration": summary(duration[ok]), "duration_minutes_hist": histogram(duration[ok] / 60, VIDEO_MINUTES_BINS),
           "hours_with_subtitles": float(np.nansum(duration[ok]) / 3600)}
    counts_total: dict = {}
    warnings: dict = {}
    track_statuses: dict = {}
    for u in sd.units.values():
        for k, v in ((u.stats or {}).get("counts") or {}).items():
            if k in ("retried", "carried_over", "requests", "tracks", "rate_decreases", "rate_increases"):
                counts_total[k] = counts_total.get(k, 0) + v
            elif k.startswith("ytdlp_warnings/"):
                warnings[k.split("/", 1)[1]] = warnings.get(k.split("/", 1)[1], 0) + v
            elif k.startswith("track_status/"):
                track_statuses[k.split("/", 1)[1]] = track_statuses.get(k.split("/", 1)[1], 0) + v
    out["unit_counts"] = counts_total
    out["ytdlp_warnings"] = dict(sorted(warnings.items(), key=lambda kv: -kv[1]))
    out["track_statuses"] = dict(sorted(track_statuses.items(), key=lambda kv: -kv[1]))
    out["transient_tracks"] = sum(v for k, v in track_statuses.items() if k in errors.TRANSIENT)
    cat = table.column("category_1")
    cats_all = counts_of(cat)
    out["categories"] = {"all": cats_all, "with_subtitles": counts_of(cat.filter(pa.array(ok))) if n else {},
                         "missing": int(n - sum(cats_all.values()))}
    out["kinds"] = {lang: counts_of(table.column(lang_column(lang, "kind"))) for lang in langs}
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
           "failed_examples": failure_examples(table),
           "duration": summary(duration[with_any]),
           "duration_known": int(np.isfinite(duration[with_any]).sum()),
           "duration_minutes_hist": histogram(duration[with_any] / 60, VIDEO_MINUTES_BINS),
           "per_lang": {}}
    for lang in langs:
        ok = equals(table.column(lang_column(lang, "status")), "ok")
        kind_idx, kind_names = codes(table.column(lang_column(lang, "kind")))
        cues = floats(table.column(lang_column(lang, "cues")))
        tokens = floats(table.column(lang_column(lang, "tokens")))
        chars = floats(table.column(lang_column(lang, "chars")))
        seconds = floats(table.column(lang_column(lang, "seconds")))
        coverage = floats(table.column(lang_column(lang, "coverage")))
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
            "track_statuses": counts_of(table.column(lang_column(lang, "status")), "not aligned"),
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
    # Seconds the rows cover, by each recipe's rows-to-seconds mapping (meta.json's row_seconds);
    # parquet written before the column existed had one row per second.
    seconds = floats(table.column("feature_seconds")) if "feature_seconds" in table.column_names else rows
    seconds = np.where(np.isfinite(seconds), seconds, rows)
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
            "failed_examples": failure_examples(table),
            "feature_hours": float(np.nansum(seconds[has]) / 3600),
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

