"""Crawl benchmark: mmp-crawl against the local stand-in for YouTube, beside two baselines.

    python bench/crawl.py [--videos 500] [--rate 20]

Crawls N sample videos x 9 languages from a local server with 1 and 4 workers and
prints, in one run: videos/s, CPU-ms per video (the crawl's processes, from rusage),
HTTP requests per video (from the server's own log), beside (a) bare yt-dlp writing the
same subtitles from the same info JSON in one process and (b) a plain urllib fetch of the
same files. Then checks that ``--max-requests-per-second R`` holds within 10% on the
server's clock, and projects the wall-clock for 1.2M videos x 9 languages per egress IP.
Targets: 1.0 request per track; CPU per video <= 2x bare yt-dlp; rate within 10% of R.

Last (or alone, with ``--adaptive``; 40 s) the adaptive budget: a server refuses beyond a
hidden threshold T, workers fetch through one machine budget whose ceiling is 3T, and the
run prints the rate the budget settled at (requests the server accepted per second over
the last half) against T, and the 429s beside a budget at a fixed 3T run at the same time
against a second such server.
Target: the settled rate within 20% of T.

Then (or alone, with ``--storm``) a 429 storm: the same kind of server in front of N
videos x 9 tracks, crawled with the ceiling at 3T and ``--retry-failed`` until nothing
transient is left, with and without the adaptive budget: requests per track delivered and
tracks served twice, from the server's log.
Targets: no track served twice; requests within 1.1x of the tracks delivered.

Then (or alone, with ``--translation-storm``) YouTube as it answers in 2026: every machine
translation refused, the own tracks served; requests per delivered track, own tracks and
translations apart, in the storm and over the ``--retry-failed`` runs after it, and the days
HowTo100M takes at the default budgets of one session.
Targets: every own track delivered in the storm run at 1.0 request each; not halted; nothing twice.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.crawl.fetch import FetchError, Fetcher, RetryPolicy  # noqa: E402
from pipeline.crawl.politeness import RequestBudget  # noqa: E402
from demo.sample import build_sample  # noqa: E402
from demo.server import SampleServer  # noqa: E402
from pipeline.crawl.url_policy import UrlPolicy  # noqa: E402
from pipeline.crawl.errors import TRANSIENT  # noqa: E402
from shards.reader import read_rows  # noqa: E402

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


def budget_run(server: SampleServer, url: str, budget_file: Path, ceiling: float, adaptive: bool,
               seconds: float, workers: int, quiet: float) -> dict:
    """``workers`` threads, each with its own budget object on one file (as the crawl's processes
    have), fetch ``url`` without retries for ``seconds``; the server's log says what got through."""
    def budget():
        # the breaker is off so that the two runs compare the rate rule alone
        return RequestBudget(budget_file, ceiling, adaptive=adaptive, quiet_seconds=quiet, breaker_threshold=10**9)

    budgets = [budget() for _ in range(workers)]
    start = time.time()
    deadline = start + seconds

    def client(b):
        fetcher = Fetcher(b, timeout=5.0, policy=RetryPolicy(retries=0),
                          url_policy=UrlPolicy.allowing([urlsplit(url).netloc]))
        while time.time() < deadline:
            try:
                fetcher.get(url)
            except FetchError:
                pass

    n0 = len(server.requests)
    threads = [threading.Thread(target=client, args=(b,)) for b in budgets]
    for t in threads:
        t.start()
    watcher, timeline = budget(), []
    while time.time() < deadline:
        timeline.append(watcher.current_rate())
        time.sleep(1.0)
    for t in threads:
        t.join()
    reqs = [r for r in server.requests[n0:] if r["t"] < deadline]
    half = start + seconds / 2
    return {"accepted": sum(1 for r in reqs if r["status"] == 200 and r["t"] >= half) / (seconds / 2),
            "refused": sum(1 for r in reqs if r["status"] == 429), "requests": len(reqs), "timeline": timeline,
            "decreases": sum(b.decreases for b in budgets), "increases": sum(b.increases for b in budgets)}


def adaptive_bench(work: Path, threshold: float, seconds: float, workers: int = 4, quiet: float = 1.0,
                   window: float = 0.5) -> None:
    """The adaptive and the fixed budget at the same ceiling, side by side against two servers
    (two addresses) with the same hidden threshold.

    The crawl's quiet period is 60 s against limits that YouTube counts over seconds; here time is
    compressed, but the quiet period stays longer than the server's window so that a rate which
    held for a quiet period really was below the threshold.
    """
    files = work / "adaptive"
    (files / "subs").mkdir(parents=True)
    (files / "subs" / "en.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nhello\n")
    ceiling = 3 * threshold
    logging.getLogger("mmp.politeness").setLevel(logging.ERROR)  # one warning per halving: the counts say it
    names = {True: f"adaptive, ceiling {ceiling:g}/s", False: f"fixed {ceiling:g}/s"}
    runs = {}
    with SampleServer(files) as one, SampleServer(files) as other:
        def run(server, adaptive):
            server.rate_limit(threshold, window)
            runs[adaptive] = budget_run(server, server.base_url + "/subs/en.vtt", work / f"adaptive-{adaptive}.budget",
                                        ceiling, adaptive, seconds, workers, quiet)

        both = [threading.Thread(target=run, args=(server, adaptive)) for server, adaptive in ((one, True), (other, False))]
        for t in both:
            t.start()
        for t in both:
            t.join()
    print(f"\nAdaptive request budget against a hidden threshold of {threshold:g} requests/s over a "
          f"{window:g}s window ({workers} workers, quiet period {quiet:g}s, {seconds:g}s)")
    print("  budget's rate, one sample a second: " + " ".join(f"{r:.1f}" for r in runs[True]["timeline"]))
    print(f"  {'':22s} {'accepted/s':>10s} {'/ threshold':>11s} {'429s':>6s} {'requests':>9s} "
          f"{'decreases':>9s} {'increases':>9s}")
    for adaptive in (True, False):
        r = runs[adaptive]
        print(f"  {names[adaptive]:22s} {r['accepted']:10.2f} {r['accepted'] / threshold:11.2f} {r['refused']:6d} "
              f"{r['requests']:9d} {r['decreases']:9d} {r['increases']:9d}")
    ratio = runs[True]["accepted"] / threshold
    refused, fixed_refused = runs[True]["refused"], runs[False]["refused"]
    print(f"  settled rate (accepted over the last half, server's clock) / threshold: {ratio:.2f} "
          f"(target within 20%: {'met' if abs(ratio - 1) <= 0.2 else 'missed'}); "
          f"429s adaptive / fixed: {refused} / {fixed_refused} = {refused / max(1, fixed_refused):.2f}x")


def storm_bench(work: Path, videos: int, threshold: float, rounds: int = 6, quiet: float = 2.0) -> None:
    """A 429 storm: a server that refuses every request above a hidden rate, crawled with the
    ceiling at 3x that rate, then ``--retry-failed`` until nothing transient is left (at most
    ``rounds`` runs), with and without the adaptive budget. Counted from the server's log:
    requests per track delivered, and whether any track was served twice."""
    sample = work / "storm"
    server = SampleServer(sample / "files").start()
    try:
        build_sample(sample, server.base_url, videos=False)
        info = sample / "info"
        template = json.loads((info / "smplPancak1.info.json").read_text())  # 9 tracks, 9 files
        ids = [f"storm{i:06d}" for i in range(videos)]
        for vid in ids:
            text = json.dumps(dict(template, id=vid)).replace("/subs/smplPancak1/", f"/subs/{vid}/")
            (info / f"{vid}.info.json").write_text(text)
            shutil.copytree(sample / "files" / "subs" / "smplPancak1", sample / "files" / "subs" / vid)
        (sample / "ids.txt").write_text("\n".join(ids) + "\n")
        print(f"\n429 storm: {videos} videos x 9 languages, server refuses above {threshold:g} requests/s, "
              f"ceiling {3 * threshold:g}/s, 4 workers, then --retry-failed until done (at most {rounds} runs)")
        print(f"  {'':10s} {'runs':>5s} {'requests':>9s} {'429s':>6s} {'delivered':>10s} {'req/track':>10s} "
              f"{'served twice':>13s} {'seconds':>8s}")
        for adaptive in (True, False):
            server.rate_limit(threshold, 1.0)
            out = work / f"storm-out-{adaptive}"
            n0, t0 = len(server.requests), time.time()
            base = [sys.executable, "-m", "pipeline.crawl.stage", "--videos", str(sample / "ids.txt"), "--out", str(out / "crawl"),
                    "--info-json", str(info), "--langs", LANGS, "--workers", "4", "--unit-size", "10",
                    "--no-progress", "--max-requests-per-second", str(3 * threshold), "--sleep-subtitles", "0",
                    "--translation-requests-per-second", str(3 * threshold), "--translation-retries", "4",
                    "--translation-max-wait", "600",
                    "--allow-host", urlsplit(server.base_url).netloc,
                    "--rate-quiet-seconds", str(quiet), "--retries", "4", "--backoff-base", "0.2",
                    "--backoff-max", "2", "--breaker-threshold", "1000", "--budget-dir", str(work / f"storm-{adaptive}")]
            if not adaptive:
                base.append("--no-adaptive-rate")
            runs = 0
            for runs in range(1, rounds + 1):
                subprocess.run(base + (["--retry-failed"] if runs > 1 else []), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                rows = [r for p in sorted((out / "crawl").glob("*.parquet")) for r in read_rows(p)]
                if not any(r["status"] in TRANSIENT or any(r.get(f"{l}_status") in TRANSIENT for l in LANGS.split(","))
                           for r in rows):
                    break
            reqs = [r for r in server.requests[n0:] if r["path"].startswith("/subs/")]
            served = collections.Counter(r["path"] for r in reqs if r["status"] == 200)
            delivered = sum(r["n_tracks"] or 0 for r in rows)
            name = "adaptive" if adaptive else "fixed"
            print(f"  {name:10s} {runs:5d} {len(reqs):9d} {sum(r['status'] == 429 for r in reqs):6d} {delivered:10d} "
                  f"{len(reqs) / max(1, delivered):10.3f} {sum(n > 1 for n in served.values()):13d} "
                  f"{time.time() - t0:8.1f}")
        server.rate_limit(None)
        print("  targets: no track served twice; requests within 1.1x of the tracks delivered")
    finally:
        server.stop()


def is_translation(request: dict) -> bool:
    """A request the stand-in's log shows was for a machine translation (``tlang`` other than ``lang``)."""
    q = parse_qs(urlsplit(request["raw"]).query)
    tlang, lang = q.get("tlang", [None])[0], q.get("lang", [""])[0]
    return bool(tlang) and tlang.removesuffix("-orig") != lang.removesuffix("-orig")


def print_projections() -> None:
    """Days for all of HowTo100M at the default budgets of one session (sessions.projection)."""
    from pipeline.crawl.config import CrawlConfig
    from pipeline.crawl.sessions import ANONYMOUS, projection

    cfg = CrawlConfig(videos="-", out="-", langs=LANGS.split(","))
    print("\nProjected crawl of HowTo100M at the default budgets:")
    for account in (ANONYMOUS, "account"):
        print(f"  {'anonymous' if account == ANONYMOUS else 'signed in'}: {projection(cfg, 1_238_911, account)}")


def translation_storm_bench(work: Path, videos: int, rounds: int = 4) -> None:
    """YouTube in 2026 (yt-dlp #13831): every machine-translated track refused, the own tracks served. N videos
    x 9 languages crawled with 4 workers and the default breaker (scaled to seconds), then, the storm over,
    ``--retry-failed`` until nothing transient is left. Counted from the stand-in's log, own tracks and
    translations apart: requests, tracks delivered, requests per delivered track, files served twice."""
    sample = work / "tstorm"
    server = SampleServer(sample / "files").start()
    try:
        build_sample(sample, server.base_url, videos=False)
        info = sample / "info"
        templates = {v: json.loads((info / f"{v}.info.json").read_text()) for v in ("smplPancak1", "smplBikeFx2")}
        ids = [f"tstorm{i:05d}" for i in range(videos)]
        for i, vid in enumerate(ids):
            src = ("smplPancak1", "smplBikeFx2")[i % 2]
            text = json.dumps(dict(templates[src], id=vid)).replace(f"/subs/{src}/", f"/subs/{vid}/")
            (info / f"{vid}.info.json").write_text(text)
            shutil.copytree(sample / "files" / "subs" / src, sample / "files" / "subs" / vid)
        (sample / "ids.txt").write_text("\n".join(ids) + "\n")
        out = work / "tstorm-out"
        base = [sys.executable, "-m", "pipeline.crawl.stage", "--videos", str(sample / "ids.txt"), "--out",
                str(out / "crawl"), "--info-json", str(info), "--langs", LANGS, "--workers", "4", "--unit-size", "10",
                "--no-progress", "--max-requests-per-second", "50", "--translation-requests-per-second", "50",
                "--sleep-subtitles", "0", "--allow-host", urlsplit(server.base_url).netloc, "--retries", "4",
                "--backoff-base", "0.05", "--breaker-pause", "2", "--translation-max-wait", "1",
                "--budget-dir", str(work / "tstorm-budget")]
        print(f"\nTranslation storm: {videos} videos x 9 languages, every translated track refused (429), then "
              f"served again; 4 workers, breaker 5 refusals / 2 s pause, --translation-max-wait 1")
        print(f"  {'':22s} {'rc':>3s} {'own req':>8s} {'own got':>8s} {'req/own':>8s} {'tr req':>7s} {'tr got':>7s} "
              f"{'req/tr':>7s} {'seconds':>8s}")
        totals = collections.Counter()

        def phase(name, extra):
            n0, t0 = len(server.requests), time.time()
            rc = subprocess.run(base + extra, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
            rows = [r for p in sorted((out / "crawl").glob("*.parquet")) for r in read_rows(p)]
            reqs = [r for r in server.requests[n0:] if r["path"].startswith("/subs/")]
            got = {kind: sum(r.get(f"{l}_status") == "ok" and (r.get(f"{l}_kind") == "translated") == (kind == "tr")
                             for r in rows for l in LANGS.split(",")) for kind in ("own", "tr")}
            new = {k: got[k] - totals[f"{k} got"] for k in got}
            own_req = sum(not is_translation(r) for r in reqs)
            tr_req = len(reqs) - own_req
            totals.update({"own req": own_req, "tr req": tr_req, "own got": new["own"], "tr got": new["tr"]})
            print(f"  {name:22s} {rc:3d} {own_req:8d} {new['own']:8d} {own_req / max(1, new['own']):8.2f} "
                  f"{tr_req:7d} {new['tr']:7d} {tr_req / max(1, new['tr']):7.2f} {time.time() - t0:8.1f}")
            return rows

        server.refuse_translations(True)
        phase("storm", [])
        server.refuse_translations(False)
        time.sleep(2.5)  # the translations' breaker pause runs out
        for n in range(1, rounds + 1):
            rows = phase(f"--retry-failed #{n}", ["--retry-failed"])
            if not any(r.get(f"{l}_status") in TRANSIENT for r in rows for l in LANGS.split(",")):
                break
        served = collections.Counter(r["path"] for r in server.requests if r["status"] == 200)
        print(f"  {'all runs':22s} {'':3s} {totals['own req']:8d} {totals['own got']:8d} "
              f"{totals['own req'] / max(1, totals['own got']):8.2f} {totals['tr req']:7d} {totals['tr got']:7d} "
              f"{totals['tr req'] / max(1, totals['tr got']):7.2f}")
        print(f"  files served twice: {sum(n > 1 for n in served.values())}; targets: every own track in the storm "
              f"run at 1.0 request each, the crawl not halted (rc 0), nothing served twice")
    finally:
        server.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=500)
    p.add_argument("--rate", type=float, default=20.0, help="R for the rate check")
    p.add_argument("--rate-videos", type=int, default=40)
    p.add_argument("--adaptive", action="store_true", help="run only the adaptive-budget section")
    p.add_argument("--threshold", type=float, default=10.0, help="the server's hidden requests/s for --adaptive")
    p.add_argument("--adaptive-seconds", type=float, default=40.0, help="length of the adaptive-budget runs")
    p.add_argument("--storm", action="store_true", help="run only the 429-storm section")
    p.add_argument("--storm-videos", type=int, default=80)
    p.add_argument("--storm-quiet", type=float, default=3.0, help="--rate-quiet-seconds of the storm crawls")
    p.add_argument("--translation-storm", action="store_true", help="run only the translation-storm section")
    p.add_argument("--translation-storm-videos", type=int, default=80)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mmp-bench-crawl-"))
    if args.adaptive or args.storm or args.translation_storm:
        try:
            if args.adaptive:
                adaptive_bench(work, args.threshold, args.adaptive_seconds)
            if args.storm:
                storm_bench(work, args.storm_videos, args.threshold, quiet=args.storm_quiet)
            if args.translation_storm:
                translation_storm_bench(work, args.translation_storm_videos)
                print_projections()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return 0
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
            wall, cpu = run_child([sys.executable, "-m", "pipeline.crawl.stage", "--videos", str(work / "ids.txt"),
                                   "--out", str(out / "crawl"), "--info-json", str(info), "--langs", LANGS,
                                   "--workers", str(workers), "--unit-size", "50", "--no-progress",
                                   "--budget-dir", str(work / "budget"), "--no-request-limit",
                                   "--allow-host", urlsplit(server.base_url).netloc, "--sleep-subtitles", "0"])
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
        run_child([sys.executable, "-m", "pipeline.crawl.stage", "--videos", str(work / "rate.txt"), "--out",
                   str(work / "rate" / "crawl"), "--info-json", str(info), "--langs", LANGS, "--workers", "4",
                   "--unit-size", "5", "--no-progress", "--translation-requests-per-second", str(args.rate),
                   "--max-requests-per-second", str(args.rate),
                   "--no-adaptive-rate", "--sleep-subtitles", "0", "--budget-dir", str(work / "budget-rate"),
                   "--translation-max-wait", "600", "--allow-host", urlsplit(server.base_url).netloc])
        # the translations (most of the requests) keep to their own budget
        times = sorted(r["t"] for r in server.requests[n0:] if is_translation(r))
        measured = (len(times) - 1) / (times[-1] - times[0])
        print(f"--translation-requests-per-second {args.rate:g} with 4 workers: measured {measured:.2f}/s "
              f"({100 * (measured / args.rate - 1):+.1f}%, target within 10%)")
        print_projections()
        server.stop()
        adaptive_bench(work, args.threshold, args.adaptive_seconds)
        storm_bench(work, args.storm_videos, args.threshold, quiet=args.storm_quiet)
        translation_storm_bench(work, args.translation_storm_videos)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
