"""Crawl benchmark: mmp-crawl against the local stand-in for YouTube, beside two baselines.

    python bench/crawl.py [--videos 500] [--rate 20]

Crawls N sample videos x 9 languages from a local server with 1 and 4 workers and
prints, in one run: videos/s, CPU-ms per video (the crawl's processes, from rusage),
HTTP requests per video (from the server's own log), beside (a) bare yt-dlp writing the
same subtitles from the same info JSON in one process and (b) a plain urllib fetch of the
same files. Then checks that ``--max-requests-per-second R`` holds within 10% on the
server's clock, and projects the wall-clock for 1.2M videos x 9 languages per egress IP.
Targets: 1.0 request per track; CPU per video <= 2x bare yt-dlp; rate within 10% of R.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.sample import build_sample  # noqa: E402
from pipeline.sample_server import SampleServer  # noqa: E402

LANGS = "en,de,fr,ru,es,cs,sw,zh,vi"

YTDLP_BASELINE = r"""
import sys, glob, yt_dlp
info_dir, out = sys.argv[1], sys.argv[2]
params = {"quiet": True, "no_warnings": True, "skip_download": True, "writesubtitles": True, "ignore_no_formats_error": True,
          "writeautomaticsub": True, "subtitlesformat": "vtt", "outtmpl": out + "/%(id)s.%(ext)s",
          "subtitleslangs": ["en-orig", "de", "fr", "ru", "es", "cs", "sw", "zh-Hans", "vi"]}
with yt_dlp.YoutubeDL(params) as ydl:
    for path in sorted(glob.glob(info_dir + "/bench*.info.json")):
        ydl.download_with_info_file(path)
"""

URLLIB_BASELINE = r"""
import sys, urllib.request
for url in open(sys.argv[1]).read().split():
    with urllib.request.urlopen(url, timeout=20) as r:
        r.read()
"""


def run_child(cmd) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.time() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=500)
    p.add_argument("--rate", type=float, default=20.0, help="R for the rate check")
    p.add_argument("--rate-videos", type=int, default=40)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mmp-bench-crawl-"))
    try:
        server = SampleServer(work / "sample" / "files").start()
        build_sample(work / "sample", server.base_url, videos=False)
        info = work / "sample" / "info"
        templates = [json.loads((info / f"{v}.info.json").read_text()) for v in ("smplPancak1", "smplBikeFx2")]
        ids = [f"bench{i:06d}" for i in range(args.videos)]
        for i, vid in enumerate(ids):
            (info / f"{vid}.info.json").write_text(json.dumps(dict(templates[i % 2], id=vid)))
        (work / "ids.txt").write_text("\n".join(ids) + "\n")

        results = {}
        for workers in (1, 4):
            out = work / f"out{workers}"
            n0 = len(server.requests)
            wall, cpu = run_child([sys.executable, "-m", "pipeline.crawl", "--videos", str(work / "ids.txt"),
                                   "--out", str(out), "--info-json", str(info), "--langs", LANGS,
                                   "--workers", str(workers), "--unit-size", "50", "--no-progress",
                                   "--budget-dir", str(work / "budget")])
            reqs = server.requests[n0:]
            tracks = sum(json.loads(s.read_text())["counts"].get("tracks", 0) for s in (out / "crawl").glob("*.stats.json"))
            results[f"mmp-crawl x{workers}"] = (wall, cpu, len(reqs), tracks)
            if workers == 1:  # the same files, request for request, for the urllib baseline
                urls = [server.base_url + r["path"] for r in reqs]

        n0 = len(server.requests)
        wall, cpu = run_child([sys.executable, "-c", YTDLP_BASELINE, str(info), str(work / "ytdlp")])
        results["bare yt-dlp x1"] = (wall, cpu, len(server.requests) - n0, None)
        (work / "urls.txt").write_text("\n".join(urls))
        n0 = len(server.requests)
        wall, cpu = run_child([sys.executable, "-c", URLLIB_BASELINE, str(work / "urls.txt")])
        results["plain urllib x1"] = (wall, cpu, len(server.requests) - n0, None)

        n = args.videos
        print(f"\n{n} videos x 9 languages from a local server ({os.cpu_count()} cores)")
        print(f"{'':18s} {'videos/s':>9s} {'CPU-ms/video':>13s} {'requests/video':>15s} {'requests/track':>15s}")
        for name, (wall, cpu, reqs, tracks) in results.items():
            per_track = f"{reqs / tracks:.3f}" if tracks else "-"
            print(f"{name:18s} {n / wall:9.1f} {1000 * cpu / n:13.1f} {reqs / n:15.2f} {per_track:>15s}")
        base_cpu = results["bare yt-dlp x1"][1]
        ours = results["mmp-crawl x1"][1]
        print(f"CPU per video, mmp-crawl / bare yt-dlp: {ours / base_cpu:.2f}x (target <= 2.0)")

        # the request budget, measured on the server's clock
        rate_ids = ids[: args.rate_videos]
        (work / "rate.txt").write_text("\n".join(rate_ids) + "\n")
        n0 = len(server.requests)
        run_child([sys.executable, "-m", "pipeline.crawl", "--videos", str(work / "rate.txt"), "--out",
                   str(work / "rate"), "--info-json", str(info), "--langs", LANGS, "--workers", "4",
                   "--unit-size", "5", "--no-progress", "--max-requests-per-second", str(args.rate),
                   "--budget-dir", str(work / "budget-rate")])
        times = sorted(r["t"] for r in server.requests[n0:])
        measured = (len(times) - 1) / (times[-1] - times[0])
        print(f"--max-requests-per-second {args.rate:g} with 4 workers: measured {measured:.2f}/s "
              f"({100 * (measured / args.rate - 1):+.1f}%, target within 10%)")

        reqs_per_video = results["mmp-crawl x1"][2] / n
        print("\nProjected crawl of 1.2M videos x 9 languages per egress IP "
              f"({reqs_per_video:.1f} subtitle requests per video + 1 metadata request):")
        for r in (0.5, 1.0, 2.0, 5.0):
            days = 1.2e6 * (reqs_per_video + 1) / r / 86400
            print(f"  at {r:4.1f} requests/s: {days:6.1f} days")
        server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
