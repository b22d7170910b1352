"""``mmp-demo``: run every stage that exists on the shipped sample, end to end, offline.

A local server on 127.0.0.1 stands in for YouTube and serves the sample
(``pipeline/sample.py``); the crawl reads saved info JSON whose URLs point at it.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from .sample import build_sample
from .sample_server import SampleServer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="mmp-demo", description="Run the pipeline end to end on the shipped sample, offline.")
    p.add_argument("--out", type=Path, default=Path("data/demo"), help="where the demo dataset goes (default data/demo)")
    p.add_argument("--fresh", action="store_true", help="delete OUT first (otherwise the run resumes)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    out = args.out.resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    sample = out / "sample"
    started = time.time()
    with SampleServer(sample / "files") as server:
        (sample / "files").mkdir(parents=True, exist_ok=True)
        built = build_sample(sample, server.base_url)
        print(f"[demo] sample: {built['videos']} videos with subtitles ({built['video_files']} video files) "
              f"served at {server.base_url}")
        from . import crawl

        rc = crawl.main(["--videos", built["list"], "--out", str(out), "--info-json", built["info_json"],
                         "--download-video", "--workers", str(args.workers), "--unit-size", "4",
                         "--budget-dir", str(out / ".budget"), "--retries", "1", "--backoff-base", "0.2"])
        if rc != 0:
            print(f"[demo] mmp-crawl failed with exit code {rc}", file=sys.stderr)
            return rc
    from shards.verify import main as verify

    if verify([str(out / "crawl")]) != 0:
        return 1
    stages = ["crawl"]
    align_main = _optional("pipeline.align_stage")
    if align_main is not None:
        rc = align_main(["--crawl", str(out / "crawl"), "--out", str(out / "aligned"), "--workers", str(args.workers)])
        if rc != 0:
            print(f"[demo] mmp-align failed with exit code {rc}", file=sys.stderr)
            return rc
        if verify([str(out / "aligned")]) != 0:
            return 1
        stages.append("aligned")
    # The published files are a first-class source too: a tiny release in the Multi-HT100M layout.
    from .importer import main as import_main
    from .sample import write_release_sample

    release = write_release_sample(sample / "release")
    rc = import_main(["multi-ht100m", "--captions", str(release), "--out", str(out / "imported"),
                      "--partitions", "2", "--workers", "1"])
    if rc != 0 or verify([str(out / "imported" / "aligned")]) != 0:
        print(f"[demo] mmp-import failed with exit code {rc}", file=sys.stderr)
        return rc or 1
    stages.append("imported/aligned")
    print(f"[demo] done in {time.time() - started:.1f}s. Outputs:")
    for stage in stages:
        print(f"  {out / stage}/   ({stage.split('/')[-1]}-NNNNNN.tar / .parquet / .stats.json, config.json, logs/)")
    return 0


def _optional(module: str):
    import importlib

    try:
        return importlib.import_module(module).main
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise


if __name__ == "__main__":
    sys.exit(main())
