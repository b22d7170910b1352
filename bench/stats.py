"""Scale benchmark of ``mmp-stats``: a 1.2M-video, 9-language dataset's parquet, then the report.

    python bench/stats.py                         # 1.2M videos, 1,000-row units (as the stages write)
    python bench/stats.py --videos 100000         # a quick look
    python bench/stats.py --unit-size 10000       # fewer, bigger units: faster to generate
    python bench/stats.py --tokenizer tiny        # also count tokens with a tokenizer (tiny: a WordPiece built
                                                  # here; or a save_pretrained directory such as XLM-R's)

Generates ``crawl/``, ``aligned/`` and ``mmp/`` in the stages' real parquet schemas
(``shards.rows.crawl_schema``, ``shards.rows.aligned_schema``,
``pipeline.release.s3d_features.SCHEMA``), each unit with its ``stats.json`` (three crawl
runs, the later ones resumes, so the runs table has something to show) and an empty
tar (mmp-stats never opens tars). Distributions are modelled on the
paper: most videos with 7 to 9 languages, English ASR, the other languages mostly
YouTube translations. Then runs ``mmp-stats`` in a fresh process and prints its wall
time and peak RSS (from rusage) against the targets: under 2 minutes, under 4 GiB.
The generated data is kept in --dir and reused by the next run with the same sizes.

With ``--tokenizer``, the first ``--text-per-unit`` videos of every aligned shard get a
real ``subs.json`` (words per cue as the parquet's counts say), enough for mmp-stats'
sample (it reads at most that many videos per shard), and mmp-stats runs with
``--tokenizer``: the time it spent tokenizing, the sample size and the estimate's error
are printed. The sample is a fixed number of videos, so that part of the cost does not
grow with the dataset.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from shards.rows import aligned_schema, crawl_schema  # noqa: E402
from pipeline.release.s3d_features import SCHEMA as MMP_SCHEMA  # noqa: E402
from shards.samples import LANGS  # noqa: E402

TOKENS_PER_CUE = {"en": 8.5, "de": 18.2, "fr": 19.2, "ru": 18.1, "es": 16.5, "cs": 17.7, "sw": 17.7, "zh": 13.6, "vi": 16.4}
CATEGORIES = ["Food and Entertaining", "Hobbies and Crafts", "Home and Garden", "Cars & Other Vehicles",
              "Pets and Animals", "Personal Care and Style", "Sports and Fitness", "Health",
              "Arts and Entertainment", "Computers and Electronics", "Education and Communications",
              "Travel", "Holidays and Traditions", "Family Life", "Work World"]
CAT_WEIGHTS = np.array([40, 20, 15, 8, 5, 4, 3, 2, 1, 1, .5, .2, .1, .1, .1])
CRAWL_STATUS = ["ok", "partial", "no_subtitles", "unavailable", "rate_limited", "bot_check", "network", "error"]
CRAWL_P = np.array([.78, .10, .05, .05, .004, .002, .004, .01])
CRAWL_ERRORS = {"partial": "missing: sw", "no_subtitles": "YouTube offers no subtitles in the requested languages",
                "unavailable": "ERROR: [youtube] Video unavailable. This video has been removed by the uploader",
                "rate_limited": "HTTP Error 429: Too Many Requests", "bot_check": "Sign in to confirm you're not a bot",
                "network": "timed out [cause: TimeoutError: The read operation timed out]",
                "error": "every offered track failed: en: not a WebVTT file (no WEBVTT header)"}
T0 = 1_790_000_000.0


def opt(values, mask, typ) -> pa.Array:
    """``values`` where ``mask`` holds, null elsewhere."""
    values = np.asarray(values)
    if typ == pa.string():
        values = values.astype(object)
    elif pa.types.is_integer(typ):
        values = np.nan_to_num(values.astype(float)).astype(np.int64)
    return pa.array(values, type=typ, mask=~np.asarray(mask, dtype=bool))


def table_of(columns: dict, schema: pa.Schema) -> pa.Table:
    """The columns in the stage's schema; the schema's other columns (ones the report never reads) null."""
    n = len(next(iter(columns.values())))
    return pa.Table.from_pydict({f.name: columns[f.name] if f.name in columns else pa.nulls(n, f.type)
                                 for f in schema}, schema=schema)


def strings(values, codes) -> pa.Array:
    arr = np.asarray(values, dtype=object)[codes]
    return pa.array(arr, type=pa.string())


def stats_doc(prefix: str, index: int, rows: int, samples: int, statuses, started: float, seconds: float,
              tar_size: int, parquet: Path, extra_counts: dict) -> dict:
    values, counts = np.unique(statuses, return_counts=True)
    c = {f"status/{v}": int(k) for v, k in zip(values, counts)}
    c.update(extra_counts)
    return {"version": 1, "unit": index, "prefix": prefix, "layout": prefix, "rows": rows, "samples": samples,
            "failures": rows - samples, "counts": dict(sorted(c.items())),
            "files": {"tar": {"name": f"{prefix}-{index:06d}.tar", "size": tar_size, "sha256": "0" * 64},
                      "parquet": {"name": parquet.name, "size": parquet.stat().st_size, "sha256": "0" * 64}},
            "started": started, "finished": started + seconds, "seconds": seconds, "host": "bench", "pid": 1}


EMPTY_TAR = bytes(10240)  # what tarfile writes for an archive with no members


def write_unit(directory: Path, prefix: str, index: int, table: pa.Table, doc_args: dict) -> None:
    stem = f"{prefix}-{index:06d}"
    pq.write_table(table, directory / f"{stem}.parquet")
    # An empty (end-of-archive only) tar: mmp-stats never opens tars, only checks they exist.
    (directory / f"{stem}.tar").write_bytes(EMPTY_TAR)
    doc = stats_doc(prefix, index, table.num_rows, parquet=directory / f"{stem}.parquet", **doc_args)
    (directory / f"{stem}.stats.json").write_text(json.dumps(doc))


WORDS = {lang: [f"{lang}{w}" for w in ("cut", "onion", "slowly", "pan", "oil", "heat", "stir", "add", "salt",
                                        "water", "boil", "pour", "bowl", "mix", "knife", "board")] for lang in LANGS}
WORDS["zh"] = list("切洋葱慢慢锅油加热搅拌盐水煮倒碗")


def text_tar(path: Path, ids, samples: list) -> None:
    """An aligned tar holding ``subs.json`` for ``samples``: ``[(row index, {lang: (cues, tokens)}), ...]``."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for i, tracks in samples:
            doc = {"video_id": ids[i], "duration": None, "timeline": "en", "segments": [], "tracks": {}}
            for lang, (cues, tokens) in tracks.items():
                words, per = WORDS[lang], max(1, int(round(tokens / max(cues, 1))))
                sep = "" if lang == "zh" else " "
                doc["tracks"][lang] = {"kind": "translated", "source_lang": "en", "cues": [
                    [2.0 * c, 2.0 * c + 1.8, sep.join(words[(i + c + k) % len(words)] for k in range(per))]
                    for c in range(int(cues))]}
            data = json.dumps(doc, ensure_ascii=False).encode()
            info = tarfile.TarInfo(f"{ids[i]}.subs.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def make_unit(args) -> int:
    out, index, n, units, seed, text_per_unit = args
    rng = np.random.default_rng(seed * 100_003 + index)
    ids = [f"b{index:06d}{i:04d}"[:11].ljust(11, "x") for i in range(n)]
    # crawl
    st = rng.choice(len(CRAWL_STATUS), n, p=CRAWL_P)
    status = np.asarray(CRAWL_STATUS, dtype=object)[st]
    has_sample = st <= 2
    with_subs = st <= 1
    duration = np.where(st <= 3, np.clip(rng.lognormal(np.log(300), 0.7, n), 15, 7200).round(1), np.nan)
    attempts = np.where(rng.random(n) < 0.03, rng.integers(2, 4, n), 1)
    # Three runs: units in the first 60% crawled first, the rest after a pause, then a retry pass.
    run = 0 if index < 0.6 * units else (1 if index < 0.95 * units else 2)
    started = T0 + run * 8 * 3600 + index * 30.0
    crawl = {"video_id": pa.array(ids), "input": pa.array(ids), "status": pa.array(status, pa.string()),
             "error": pa.array(np.where(st == 0, None, np.asarray([CRAWL_ERRORS.get(s) for s in CRAWL_STATUS],
                                                                   dtype=object)[st]), pa.string()),
             "attempts": pa.array(attempts, pa.int32()), "crawled_at": pa.array(started + np.arange(n) * 0.03),
             "seconds": pa.array(rng.gamma(2, 0.5, n)), "title": pa.array(np.full(n, "How to make pancakes", object)),
             "duration": opt(duration, np.isfinite(duration), pa.float64()), "channel": pa.array(np.full(n, "A channel", object)),
             "language": pa.array(np.where(has_sample, "en", None), pa.string()),
             "upload_date": pa.array(np.full(n, "20180301", object)),
             "category_1": strings(CATEGORIES, rng.choice(len(CATEGORIES), n, p=CAT_WEIGHTS / CAT_WEIGHTS.sum())),
             "category_2": pa.nulls(n, pa.string()), "rank": pa.nulls(n, pa.string()),
             "task_id": pa.nulls(n, pa.string()), "n_tracks": pa.array(np.where(with_subs, 9, 0), pa.int32()),
             "video_ext": pa.nulls(n, pa.string()), "video_bytes": pa.nulls(n, pa.int64()),
             "video_error": pa.nulls(n, pa.string())}
    kinds = {}
    for lang in LANGS:
        if lang == "en":
            k = np.where(rng.random(n) < 0.15, "manual", "asr")
        else:
            r = rng.random(n)
            k = np.where(r < 0.04, "manual", np.where(r < 0.07, "asr", "translated"))
        k = np.where(with_subs, k, np.where(has_sample, "none", None))
        if lang == "sw":
            k = np.where((st == 1) | ~with_subs, np.where(has_sample, "none", None), k)
        kinds[lang] = k
        crawl[f"{lang}_kind"] = pa.array(k, pa.string())
        crawl[f"{lang}_source"] = pa.array(np.where(k == "translated", "en", np.where(k == None, None, lang)), pa.string())  # noqa: E711
        crawl[f"{lang}_bytes"] = pa.array(np.where(with_subs, rng.integers(2_000, 60_000, n), None), pa.int64())
        crawl[f"{lang}_error"] = pa.nulls(n, pa.string())
    table = table_of(crawl, crawl_schema(LANGS))
    write_unit(out / "crawl", "crawl", index, table, dict(
        samples=int(has_sample.sum()), statuses=status, started=started, seconds=n * 0.03,
        tar_size=int(with_subs.sum() * 9 * 25_000), extra_counts={"requests": int(n * 10), "tracks": int(with_subs.sum() * 9)}))

    # aligned: one row per crawl row
    aligned = {"video_id": pa.array(ids), "crawl_status": pa.array(status, pa.string()),
               "crawl_unit": pa.array(np.full(n, index), pa.int32()), "duration": opt(duration, np.isfinite(duration), pa.float64()),
               "language": crawl["language"], "seconds": pa.array(rng.gamma(2, 0.01, n))}
    n_langs = np.zeros(n, int)
    usable = {}
    base_cues = np.where(with_subs, np.maximum(1, duration / rng.uniform(4.5, 7.5, n)), 0)
    for lang in LANGS:
        k = kinds[lang]
        present = (k != None) & (k != "none")  # noqa: E711
        bad = present & (rng.random(n) < 0.01)
        ok = present & ~bad
        usable[lang] = ok
        n_langs += ok
        cues = np.where(ok, np.maximum(1, base_cues * rng.uniform(0.9, 1.1, n)).astype(int), 0)
        tokens = np.where(ok, np.maximum(1, cues * TOKENS_PER_CUE[lang] * rng.lognormal(0, 0.25, n)).astype(int), 0)
        tstatus = np.where(ok, "ok", np.where(bad, "wrong_script", np.where(has_sample, "missing", None)))
        aligned.update({
            f"{lang}_kind": pa.array(np.where(k == None, None, k), pa.string()),  # noqa: E711
            f"{lang}_source": crawl[f"{lang}_source"], f"{lang}_status": pa.array(tstatus, pa.string()),
            f"{lang}_error": pa.array(np.where(bad, "script looks like Latin, not Han", None), pa.string()),
            f"{lang}_cues": opt(cues, ok, pa.int32()),
            f"{lang}_tokens": opt(tokens, ok, pa.int64()),
            f"{lang}_chars": opt(tokens * (1.3 if lang == "zh" else 5.6), ok, pa.int64()),
            f"{lang}_seconds": opt(cues * rng.uniform(3.5, 6.0, n), ok, pa.float64()),
            f"{lang}_coverage": opt(np.clip(rng.beta(12, 1.2, n), 0, 1).round(3), ok, pa.float64()),
            f"{lang}_rolling": opt(k == "asr", ok, pa.bool_()),
            f"{lang}_parser": pa.array(np.where(ok, "webvtt", None), pa.string()),
            f"{lang}_repairs": pa.nulls(n, pa.string()), f"{lang}_flags": pa.nulls(n, pa.string())})
    astatus = np.where(n_langs == len(LANGS), "ok", np.where(n_langs > 0, "partial",
                       np.where(has_sample, "no_subtitles", "upstream_failed")))
    aligned.update({"status": pa.array(astatus, pa.string()),
                    "error": pa.array(np.where(astatus == "ok", None, np.where(astatus == "upstream_failed",
                                      "crawl " + status.astype(str), "missing: sw")), pa.string()),
                    "n_langs": pa.array(n_langs, pa.int32()),
                    "langs": pa.array(np.where(n_langs > 0, "en,de,fr,ru,es,cs,zh,vi", None), pa.string()),
                    "timeline": pa.array(np.where(usable["en"], "en", None), pa.string()),
                    "timeline_kind": pa.array(np.where(usable["en"], kinds["en"], None), pa.string()),
                    "n_segments": pa.array(base_cues.astype(int), pa.int32())})
    table = table_of(aligned, aligned_schema(LANGS))
    write_unit(out / "aligned", "aligned", index, table, dict(
        samples=int((n_langs > 0).sum()), statuses=astatus, started=started + 86400, seconds=n * 0.01,
        tar_size=int((n_langs > 0).sum() * 9 * 6_000), extra_counts={}))
    if text_per_unit:
        rows = np.flatnonzero(n_langs > 0)[:text_per_unit]
        cols = {lang: (table.column(f"{lang}_cues").to_numpy(zero_copy_only=False),
                       table.column(f"{lang}_tokens").to_numpy(zero_copy_only=False)) for lang in LANGS}
        text_tar(out / "aligned" / f"aligned-{index:06d}.tar", ids,
                 [(int(i), {l: (cols[l][0][i], cols[l][1][i]) for l in LANGS if usable[l][i]}) for i in rows])

    # mmp: one row per aligned row
    r = rng.random(n)
    has_subs = n_langs > 0
    mst = np.where(~has_subs, "no_subtitles", np.where(r < 0.03, "no_features", np.where(r < 0.035, "bad_features", "ok")))
    feat = mst == "ok"
    jitter = np.where(rng.random(n) < 0.015, rng.normal(0, 30, n), rng.normal(0, 0.4, n))
    rows = np.where(feat, np.maximum(1, np.ceil(duration + jitter)), np.nan)
    mismatch = np.where(feat, rows - duration, np.nan)
    mst = np.where(feat & (np.abs(mismatch) > 3), "length_mismatch", mst)
    mmp = {"video_id": pa.array(ids), "status": pa.array(mst, pa.string()),
           "error": pa.array(np.where(mst == "ok", None, np.where(mst == "no_subtitles", "no aligned subtitles",
                             np.where(mst == "no_features", "no features file", "kept; tolerance 3s"))), pa.string()),
           "duration": opt(duration, np.isfinite(duration), pa.float64()), "feature_rows": opt(rows, feat, pa.int32()),
           "feature_dim": opt(np.full(n, 1024), feat, pa.int32()),
           "length_mismatch": opt(mismatch.round(3), feat, pa.float64()),
           "feature_file": pa.nulls(n, pa.string()), "aligned_unit": pa.array(np.full(n, index), pa.int32())}
    table = table_of(mmp, MMP_SCHEMA)
    write_unit(out / "mmp", "mmp", index, table, dict(
        samples=int(feat.sum()), statuses=mst, started=started + 2 * 86400, seconds=n * 0.5,
        tar_size=int(np.nansum(rows) * 3072), extra_counts={}))
    return n


def generate(out: Path, videos: int, unit_size: int, workers: int, seed: int, text_per_unit: int = 0) -> float:
    marker = out / "bench.json"
    spec = {"videos": videos, "unit_size": unit_size, "seed": seed, "version": 4, "text_per_unit": text_per_unit}
    if marker.exists() and json.loads(marker.read_text()) == spec:
        print(f"[bench] reusing the dataset in {out}")
        return 0.0
    if out.exists():
        shutil.rmtree(out)
    for stage in ("crawl", "aligned", "mmp"):
        (out / stage).mkdir(parents=True)
        (out / stage / "config.json").write_text(json.dumps({"stage": stage, "config": {"langs": list(LANGS)}}))
    units = (videos + unit_size - 1) // unit_size
    jobs = [(out, i, min(unit_size, videos - i * unit_size), units, seed, text_per_unit) for i in range(units)]
    start = time.time()
    from tqdm import tqdm

    with ProcessPoolExecutor(workers) as pool:
        for _ in tqdm(pool.map(make_unit, jobs, chunksize=4), total=units, desc="generating units", unit="unit"):
            pass
    marker.write_text(json.dumps(spec))
    return time.time() - start


def tiny_tokenizer(root: Path) -> Path:
    """The small WordPiece tokenizer the tests use, trained on the bench's words (no download)."""
    from model.tiny import build_text_model

    return build_text_model(root / "tokenizer", extra_words=tuple(" ".join(w) for w in WORDS.values()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=1_200_000)
    p.add_argument("--unit-size", type=int, default=1000, help="rows per unit (the stages write ~1,000)")
    p.add_argument("--dir", type=Path, default=Path("/tmp/mmp-bench-stats"))
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes generating the data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", help="also count tokens with this tokenizer (tiny: build a small WordPiece here)")
    p.add_argument("--text-per-unit", type=int, default=50,
                   help="videos per aligned shard given real subtitle text when --tokenizer is on")
    args = p.parse_args()
    gen = generate(args.dir, args.videos, args.unit_size, args.workers, args.seed,
                   args.text_per_unit if args.tokenizer else 0)
    if gen:
        print(f"[bench] generated {args.videos:,} videos x {len(LANGS)} languages in "
              f"{(args.videos + args.unit_size - 1) // args.unit_size:,} units of {args.unit_size:,} rows "
              f"per stage (crawl, aligned, mmp) in {gen:.1f}s")
    report = args.dir / "reports"
    cmd = [sys.executable, "-m", "pipeline.stats.stage", "--data", str(args.dir), "--out", str(report), "--no-progress"]
    if args.tokenizer:
        cmd += ["--tokenizer", str(tiny_tokenizer(args.dir) if args.tokenizer == "tiny" else args.tokenizer)]
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - start
    rss_gib = usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    if os.waitstatus_to_exitcode(status) != 0:
        print("[bench] mmp-stats failed", file=sys.stderr)
        return 1
    print(f"[bench] mmp-stats over {args.videos:,} videos: {wall:.1f}s wall (target < 120s, "
          f"{wall / 120:.2f} of it), peak RSS {rss_gib:.2f} GiB (target < 4 GiB, {rss_gib / 4:.2f} of it)")
    if args.tokenizer:
        doc = json.loads((report / "stats.json").read_text())
        for a in doc["aligned"]:
            tc = a.get("tokenizer_counts") or {}
            errs = [d["rel_error"] for d in tc.get("per_lang", {}).values() if d.get("rel_error") is not None]
            print(f"[bench] --tokenizer on {a['path']}: {tc.get('sample_videos', 0):,} videos tokenized "
                  f"({'all' if tc.get('exact') else 'a sample'}) in {tc.get('seconds', 0):.1f}s; "
                  f"standard error per language {100 * min(errs or [0]):.2f}%-{100 * max(errs or [0]):.2f}%")
    sizes = {p.name: p.stat().st_size for p in report.iterdir()}
    print("[bench] " + ", ".join(f"{k} {v / 2**10:,.0f} KiB" for k, v in sorted(sizes.items())))
    return 0 if wall < 120 and rss_gib < 4 else 1


if __name__ == "__main__":
    sys.exit(main())
