"""``mmp-crawl``: fetch YouTube subtitles in many languages (and optionally the video) with yt-dlp.

One ``extract_info`` per video serves every language (or a saved info JSON with
``--info-json``); one track is chosen per language (``tracks.select_tracks``) and
fetched as WebVTT, each through the machine's shared request budget. A unit of
~1,000 videos becomes ``crawl-000123.{tar,parquet,stats.json}``: a sample per
video whose metadata was read (``info.json`` plus ``<lang>.vtt`` per track
found), a parquet row per input video whatever became of it. The per-video work is
``pipeline.crawl_video``; the checks run before a crawl, ``pipeline.crawl_checks``.
"""
from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

from shards.layout import CRAWL, UnitFiles, completed_units
from shards.storage import as_path, is_url, local_copy
from shards.reader import ShardError, iter_samples, read_rows
from shards.writer import UnitWriter, atomic_write_json, sha256_file

from . import errors
from .fetch import Fetcher, RetryPolicy
from .politeness import RayRequestBudget, RequestBudget, default_budget_dir
from .sources import InfoJsonSource, YtdlpSource, download_video
from .stage import (Stage, Unit, UserError, add_executor_args, executor_options, print_summary, run_stage,
                    video_done)
from .crawl_checks import check_main, preflight
from .crawl_video import crawl_video, held_from, needs_retry
from .langs import parse_langs
from .videolist import dedupe, read_video_list

log = logging.getLogger("mmp.crawl")

DEFAULT_LANGS = ("en", "de", "fr", "ru", "es", "cs", "sw", "zh", "vi")
DEFAULT_VIDEO_FORMAT = "best[ext=mp4][height<=360]/best[height<=360]/worst[ext=mp4]/worst"
# Politeness a fresh address survives: YouTube refuses the machine-translated tracks first
# (yt-dlp issues #13831, #13770, #17536, where users report 429s from bursts of a few
# subtitle requests a second and recommend pauses; yt-dlp's own "-t sleep" preset waits
# 5 s per subtitle). Well under one request a second per egress address, shared by every
# worker, with a pause before each subtitle file; the adaptive budget slows down further.
DEFAULT_RATE = 0.5
DEFAULT_SLEEP_SUBTITLES = 1.0
_POT_VALUE = re.compile(r"(po_token=|\+)[^;,\s]+")  # PO tokens in --extractor-args are credentials


@dataclass
class CrawlConfig:
    videos: str
    out: str
    langs: list = field(default_factory=lambda: list(DEFAULT_LANGS))
    lang_variants: dict = field(default_factory=dict)  # e.g. {"zh": "zh-Hant"}: the YouTube key tried first
    info_json: str | None = None
    download_video: bool = False
    video_format: str = DEFAULT_VIDEO_FORMAT
    max_requests_per_second: float | None = DEFAULT_RATE
    adaptive_rate: bool = True          # halve on 429 / bot checks, creep back after a quiet period
    rate_quiet_seconds: float = 60.0
    sleep_subtitles: float = DEFAULT_SLEEP_SUBTITLES
    js_runtime: str | None = None       # NAME[:PATH]; default: the deno installed with the project
    extractor_args: list = field(default_factory=list)  # yt-dlp's --extractor-args, in its syntax
    cookies: str | None = None
    proxies: list = field(default_factory=list)
    socket_timeout: float = 20.0
    retries: int = 4
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    unit_size: int = 1000
    budget_dir: str | None = None
    budget_name: str = "youtube"
    breaker_threshold: int = 5
    breaker_pause: float = 60.0
    breaker_max_pauses: int = 6
    egress: list = field(default_factory=list)  # egress address labels; units spread over them (Ray)
    budget_backend: str = "file"  # "file": one budget per machine; "ray": one actor per egress address

    def public(self) -> dict:
        """For config.json: cookie path kept, cookie contents never read here; proxy passwords hidden."""
        d = asdict(self)
        d["proxies"] = [errors.redact(p) for p in self.proxies]
        d["extractor_args"] = [_POT_VALUE.sub(r"\1***", a) for a in self.extractor_args]
        return d


def schema_for(langs) -> pa.Schema:
    fields = [
        ("video_id", pa.string()), ("input", pa.string()), ("status", pa.string()), ("error", pa.string()),
        ("attempts", pa.int32()), ("crawled_at", pa.float64()), ("seconds", pa.float64()),
        ("title", pa.string()), ("duration", pa.float64()), ("channel", pa.string()),
        ("language", pa.string()), ("upload_date", pa.string()),
        ("category_1", pa.string()), ("category_2", pa.string()), ("rank", pa.string()), ("task_id", pa.string()),
        ("n_tracks", pa.int32()), ("video_ext", pa.string()), ("video_bytes", pa.int64()),
        ("video_status", pa.string()), ("video_error", pa.string()), ("ytdlp_warnings", pa.string()),
    ]
    for lang in langs:
        fields += [(f"{lang}_kind", pa.string()), (f"{lang}_source", pa.string()),
                   (f"{lang}_bytes", pa.int64()), (f"{lang}_error", pa.string()), (f"{lang}_status", pa.string())]
    return pa.schema(fields)


def egress_label(cfg: CrawlConfig, egress: str | None = None) -> str:
    """Which outbound address the requests of this process leave from, for the Ray budget.

    An ``--egress`` label names it; with proxies, the proxies are the address (any node
    can use them); otherwise it is the node's own address.
    """
    if egress:
        return f"egress-{egress}"
    if cfg.proxies:
        import hashlib

        hosts = ",".join(sorted(errors.redact(p) for p in cfg.proxies))
        return f"proxy-{hashlib.sha256(hosts.encode()).hexdigest()[:12]}"
    import ray

    return f"node-{ray.util.get_node_ip_address()}"


def make_budget(cfg: CrawlConfig, egress: str | None = None):
    """The request budget: a file shared by this machine's processes, or (``budget_backend
    == "ray"``) an actor shared by every task that uses the same egress address."""
    if cfg.budget_backend == "ray":
        return RayRequestBudget(f"{cfg.budget_name}:{egress_label(cfg, egress)}", cfg.max_requests_per_second,
                                breaker_threshold=cfg.breaker_threshold, pause_seconds=cfg.breaker_pause,
                                max_trips=cfg.breaker_max_pauses, adaptive=cfg.adaptive_rate,
                                quiet_seconds=cfg.rate_quiet_seconds)
    budget_dir = Path(cfg.budget_dir) if cfg.budget_dir else default_budget_dir()
    return RequestBudget(budget_dir / f"{cfg.budget_name}.budget", cfg.max_requests_per_second,
                         breaker_threshold=cfg.breaker_threshold, pause_seconds=cfg.breaker_pause,
                         max_trips=cfg.breaker_max_pauses, adaptive=cfg.adaptive_rate,
                         quiet_seconds=cfg.rate_quiet_seconds)


class CrawlContext:
    """Per-process resources: the budget, the fetcher, the info source, a scratch directory."""

    def __init__(self, cfg: CrawlConfig, egress: str | None = None):
        self.cfg = cfg
        self.budget = make_budget(cfg, egress)
        self.scratch = Path(tempfile.mkdtemp(prefix="mmp-crawl-"))
        atexit.register(shutil.rmtree, self.scratch, True)
        cookie_copy = None
        if cfg.cookies:
            # yt-dlp writes cookies back to its file: give each process a private copy.
            cookie_copy = str(self.scratch / "cookies.txt")
            shutil.copyfile(cfg.cookies, cookie_copy)
            os.chmod(cookie_copy, 0o600)
        self.fetcher = Fetcher(self.budget, timeout=cfg.socket_timeout,
                               policy=RetryPolicy(cfg.retries, cfg.backoff_base, cfg.backoff_max),
                               proxies=cfg.proxies, cookies=cookie_copy)
        self.info_source = InfoJsonSource(cfg.info_json) if cfg.info_json else YtdlpSource(cfg, self.budget, cookie_copy)
        self.cookie_copy = cookie_copy
        self._video_ydl = None

    def download_video(self, info: dict) -> tuple[str, bytes]:
        return download_video(info, self.cfg, self.budget, self.scratch, self.cookie_copy)


# ---------------------------------------------------------------- the stage

def retry_marker(files: UnitFiles) -> Path:
    return files.directory / f".{files.stem}.retry.json"


def load_previous(files: UnitFiles) -> tuple[dict, dict]:
    """Rows and samples of an earlier version of a unit being retried, if intact."""
    marker = retry_marker(files)
    if not marker.exists():
        return {}, {}
    try:
        old = json.loads(marker.read_text())
        for kind, path in (("tar", files.tar), ("parquet", files.parquet)):
            if not path.exists() or sha256_file(path) != old["files"][kind]["sha256"]:
                log.warning("%s: earlier version changed or missing; re-crawling the whole unit", files.stem)
                return {}, {}
        rows = {r["video_id"]: r for r in read_rows(files.parquet)}
        samples = {s.pop("__key__"): s for s in iter_samples(files.tar)}
        return rows, samples
    except (ValueError, KeyError, ShardError, OSError) as exc:
        log.warning("%s: earlier version unreadable (%s); re-crawling the whole unit", files.stem, exc)
        return {}, {}


class CrawlStage(Stage):
    name = "crawl"
    layout = CRAWL

    def __init__(self, cfg: CrawlConfig):
        self.cfg = cfg
        self.schema = schema_for(cfg.langs)
        self.out = as_path(cfg.out) / "crawl"
        self._ctxs: dict = {}
        self._input_sha = None
        self.duplicates = 0

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_ctxs"] = {}
        return state

    def egress_for(self, unit: Unit) -> str | None:
        """Units are dealt round-robin over the ``--egress`` addresses (None without any)."""
        return self.cfg.egress[unit.index % len(self.cfg.egress)] if self.cfg.egress else None

    def unit_resources(self, unit: Unit) -> dict:
        egress = self.egress_for(unit)
        return {"num_cpus": 1, f"egress_{egress}": 1} if egress else {"num_cpus": 1}

    def context(self, egress: str | None = None) -> "CrawlContext":
        if egress not in self._ctxs:
            self._ctxs[egress] = CrawlContext(self.cfg, egress)
        return self._ctxs[egress]

    def plan(self) -> list[Unit]:
        entries, self.duplicates = dedupe(read_video_list(Path(self.cfg.videos)))
        if self.duplicates:
            log.warning("%d duplicate ids in %s are crawled once", self.duplicates, self.cfg.videos)
        size = max(1, self.cfg.unit_size)
        return [Unit(i, entries[start:start + size]) for i, start in enumerate(range(0, len(entries), size))]

    def fingerprint(self) -> dict:
        if self._input_sha is None:
            self._input_sha = sha256_file(Path(self.cfg.videos))
        return {"input_sha256": self._input_sha, "unit_size": self.cfg.unit_size, "langs": list(self.cfg.langs)}

    def config(self) -> dict:
        return self.cfg.public()

    def setup_worker(self) -> None:
        if not self.cfg.egress:
            self.context()

    def process(self, unit: Unit, writer: UnitWriter) -> None:
        ctx = self.context(self.egress_for(unit))
        files = writer.files
        prev_rows, prev_samples = load_previous(files)
        for entry in unit.items:
            key = entry.video_id if entry.valid else None
            prev = prev_rows.get(key) if key else None
            if prev is not None and not needs_retry(prev, self.cfg.langs):
                row, members = prev, prev_samples.get(key)
                writer.count("carried_over")
            else:
                held = held_from(prev, prev_samples.get(key)) if prev is not None else None
                row, members = crawl_video(entry, ctx, held)
                if prev is not None:
                    row["attempts"] = int(prev.get("attempts") or 1) + 1
                    writer.count("retried")
            if members is not None:
                writer.write_sample(entry.video_id, members)
                writer.count("tracks", sum(1 for m in members if m.endswith(".vtt")))
            for lang in self.cfg.langs:
                if row.get(f"{lang}_status"):
                    writer.count(f"track_status/{row[f'{lang}_status']}")
            for kind in (row.get("ytdlp_warnings") or "").split(","):
                if kind:
                    writer.count(f"ytdlp_warnings/{kind}")
            writer.add_row(row)
            video_done(row["status"])
            log.info("%s %s %s", row["video_id"], row["status"], row.get("error") or "")
        writer.count("videos", len(unit.items))
        writer.count("requests", ctx.budget.requests)
        writer.count("rate_decreases", ctx.budget.decreases)
        writer.count("rate_increases", ctx.budget.increases)
        ctx.budget.requests = ctx.budget.decreases = ctx.budget.increases = 0

    def after_publish(self, files: UnitFiles) -> None:
        retry_marker(files).unlink(missing_ok=True)


def mark_transient_units(out, langs) -> int:
    """For --retry-failed: reopen every complete unit that holds transient failures
    (of whole videos, or of single tracks of ``partial`` ones).

    The unit's stats go to a retry marker (with the checksums of its files) and the
    stats file is removed, so the unit is redone; its final rows are carried over, and
    a partial video keeps the tracks it has.
    A kill in between is safe: the unit is simply incomplete and is redone.
    """
    reopened = 0
    for files in completed_units(out, "crawl"):
        try:
            retry = any(needs_retry(r, langs) for r in read_rows(files.parquet))
        except Exception as exc:  # pyarrow raises several kinds for a damaged file
            log.warning("%s: parquet unreadable (%s); redoing the unit", files.stem, exc)
            retry = True
        if retry:
            atomic_write_json(retry_marker(files), json.loads(files.stats.read_text()))
            files.stats.unlink()
            reopened += 1
    return reopened


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmp-crawl",
        description="Fetch YouTube subtitles in several languages (one manual, ASR or machine-translated "
        "track per language, as WebVTT) for a list of videos, into resumable WebDataset shards DATA/crawl/.",
        epilog="Re-running the same command resumes: finished units are skipped. --retry-failed asks again "
        "for what failed transiently in earlier runs (rate_limited, bot_check, network, server_error, "
        "bad_response, po_token_required), whole videos or single tracks, keeping every track already fetched. "
        "Run `mmp-crawl --check` first on a new machine.",
    )
    p.add_argument("--check", action="store_true",
                   help="only check, offline, whether this machine is ready to crawl (yt-dlp, JS runtime, EJS "
                   "scripts, PO-token plugins, and --cookies, --proxy and the request budget when given); "
                   "one line each, exit 0 when ready")
    p.add_argument("--videos",
                   help="CSV/TSV (e.g. HowTo100M_v1.csv), Parquet, or a text file of ids or YouTube URLs "
                   "(a path or an fsspec URL such as s3://bucket/videos.csv)")
    p.add_argument("--out",
                   help="dataset root, a path or an fsspec URL (s3://bucket/data); the crawl goes to OUT/crawl/")
    p.add_argument("--langs", default=",".join(DEFAULT_LANGS),
                   help="comma-separated language codes as YouTube spells them (default: the 9 of "
                   "Multi-HowTo100M). A variant (zh-Hant, pt-BR) is stored as its language (zh, pt), that "
                   "variant tried first and recorded")
    p.add_argument("--info-json", type=Path, help="read saved info JSON (DIR/ID.info.json) instead of asking YouTube")
    p.add_argument("--download-video", action="store_true", help="also fetch the video into the sample")
    p.add_argument("--video-format", default=DEFAULT_VIDEO_FORMAT, help="yt-dlp format selector for --download-video")
    p.add_argument("--unit-size", type=int, default=1000, help="videos per work unit (default 1000)")
    p.add_argument("--retry-failed", action="store_true", help="re-crawl the transient failures of earlier runs")
    pol = p.add_argument_group("politeness and robustness")
    pol.add_argument("--max-requests-per-second", type=float, default=DEFAULT_RATE,
                     help=f"request budget of one egress address, shared by every crawl process on this machine "
                     f"(default {DEFAULT_RATE}; 0: no limit). It is the ceiling: on a 429 or a bot check the rate "
                     "is halved, and creeps back up after a quiet period")
    pol.add_argument("--no-adaptive-rate", dest="adaptive_rate", action="store_false",
                     help="keep the request rate fixed at --max-requests-per-second, whatever YouTube answers")
    pol.add_argument("--rate-quiet-seconds", type=float, default=60.0,
                     help="seconds without a refusal before the adaptive rate creeps back up (default 60)")
    pol.add_argument("--sleep-subtitles", type=float, default=DEFAULT_SLEEP_SUBTITLES,
                     help=f"seconds to pause before each subtitle file (default {DEFAULT_SLEEP_SUBTITLES})")
    pol.add_argument("--cookies", type=Path, help="Netscape cookies file (its contents are never logged or copied to outputs)")
    pol.add_argument("--proxy", action="append", default=[],
                     help="proxy URL; repeat or comma-separate several to rotate between them")
    pol.add_argument("--socket-timeout", type=float, default=20.0, help="seconds before a silent connection fails")
    pol.add_argument("--retries", type=int, default=4, help="retries of a transient failure (backoff with jitter)")
    pol.add_argument("--backoff-base", type=float, default=1.0, help="first backoff in seconds; doubles per retry")
    pol.add_argument("--backoff-max", type=float, default=60.0, help="longest single backoff, Retry-After included")
    pol.add_argument("--budget-dir", type=Path, help="where the machine-wide request budget lives (default: a temp dir; "
                     "with --executor ray the budget is a Ray actor per egress address instead)")
    pol.add_argument("--egress", action="append", default=[],
                     help="with --executor ray: name of an outbound address (repeat or comma-separate several); "
                     "units are dealt over them, each needs one Ray resource egress_NAME (nodes that send from "
                     "that address advertise it: ray start --resources '{\"egress_NAME\": 4}') and shares one "
                     "request budget per name. Without it the budget is per node (or per --proxy set)")
    pol.add_argument("--breaker-threshold", type=int, default=5,
                     help="429s or bot checks in a row that pause the whole crawl")
    pol.add_argument("--breaker-pause", type=float, default=60.0, help="first pause in seconds; doubles each time")
    pol.add_argument("--breaker-max-pauses", type=int, default=6, help="pauses in a row before the crawl halts")
    yt = p.add_argument_group("yt-dlp")
    yt.add_argument("--js-runtime", metavar="NAME[:PATH]",
                    help="the JavaScript runtime yt-dlp solves YouTube's challenges with: deno, node, bun or "
                    "quickjs, optionally with its path (default: the deno installed with this project, else "
                    "one on PATH)")
    yt.add_argument("--allow-no-js-runtime", action="store_true",
                    help="crawl YouTube even without a usable JavaScript runtime (yt-dlp then falls back to one "
                    "client and subtitles may be missing)")
    yt.add_argument("--extractor-args", action="append", default=[], metavar="KEY:ARGS",
                    help="passed to yt-dlp as its own --extractor-args, e.g. "
                    "'youtube:player_client=default,mweb' (repeatable)")
    add_executor_args(p)
    return p


def config_from_args(args) -> CrawlConfig:
    if not args.videos or not args.out:
        raise UserError("--videos and --out are required (or run `mmp-crawl --check` alone)")
    langs, variants = parse_langs(args.langs)
    if args.max_requests_per_second is not None and args.max_requests_per_second < 0:
        raise UserError("--max-requests-per-second must be 0 (no limit) or more")
    if args.sleep_subtitles < 0 or args.rate_quiet_seconds <= 0:
        raise UserError("--sleep-subtitles must be 0 or more and --rate-quiet-seconds positive")
    proxies = [p.strip() for arg in args.proxy for p in arg.split(",") if p.strip()]
    egress = [e.strip() for arg in args.egress for e in arg.split(",") if e.strip()]
    bad_egress = [e for e in egress if not e.replace("_", "").replace("-", "").isalnum()]
    if bad_egress:
        raise UserError(f"--egress names are letters, digits, - and _ (got {bad_egress[0]!r})")
    if egress and args.executor != "ray":
        raise UserError("--egress places units on Ray nodes by address; use it with --executor ray")
    videos = args.videos
    if is_url(videos):  # a small list: read from a local copy
        try:
            videos = local_copy(videos)
        except FileNotFoundError:
            raise UserError(f"--videos {videos} does not exist") from None
    if args.info_json is not None and not args.info_json.is_dir():
        raise UserError(f"--info-json {args.info_json} is not a directory of ID.info.json files")
    if args.cookies is not None and not args.cookies.is_file():
        raise UserError(f"--cookies {args.cookies} does not exist or is not a file")
    if args.unit_size < 1:
        raise UserError("--unit-size must be at least 1")
    return CrawlConfig(
        videos=str(videos), out=str(args.out), langs=langs, lang_variants=variants, egress=egress,
        budget_backend="ray" if args.executor == "ray" else "file",
        info_json=str(args.info_json) if args.info_json else None,
        download_video=args.download_video, video_format=args.video_format,
        max_requests_per_second=args.max_requests_per_second or None, sleep_subtitles=args.sleep_subtitles,
        adaptive_rate=args.adaptive_rate, rate_quiet_seconds=args.rate_quiet_seconds,
        js_runtime=args.js_runtime, extractor_args=list(args.extractor_args),
        cookies=str(args.cookies) if args.cookies else None, proxies=proxies,
        socket_timeout=args.socket_timeout, retries=args.retries, backoff_base=args.backoff_base,
        backoff_max=args.backoff_max, unit_size=args.unit_size,
        budget_dir=str(args.budget_dir) if args.budget_dir else None,
        breaker_threshold=args.breaker_threshold, breaker_pause=args.breaker_pause,
        breaker_max_pauses=args.breaker_max_pauses,
    )


def reset_budgets(cfg: CrawlConfig, args) -> None:
    """Clear a halt an earlier run left in the budgets this crawl will use."""
    if cfg.budget_backend != "ray":
        make_budget(cfg).reset_halt()
        return
    from .executors import RayUnavailable, ensure_ray

    try:
        ensure_ray(args.ray_address, args.workers, {f"egress_{e}": 1 for e in cfg.egress})
    except RayUnavailable as exc:
        raise UserError(str(exc)) from exc
    if cfg.egress:
        for egress in cfg.egress:
            make_budget(cfg, egress).reset_halt()
    elif cfg.proxies:
        make_budget(cfg).reset_halt()
    else:
        import ray

        for node in ray.nodes():
            if node.get("Alive"):
                RayRequestBudget(f"{cfg.budget_name}:node-{node['NodeManagerAddress']}",
                                 max_trips=cfg.breaker_max_pauses).reset_halt()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.check:
        return check_main(args)
    try:
        cfg = config_from_args(args)
        preflight(cfg, args.allow_no_js_runtime)
        stage = CrawlStage(cfg)
        stage.out.mkdir(parents=True, exist_ok=True)
        if args.retry_failed:
            reopened = mark_transient_units(stage.out, cfg.langs)
            print(f"mmp-crawl: {reopened} units hold transient failures and will be retried")
        reset_budgets(cfg, args)
        summary = run_stage(stage, stage.out, **executor_options(args))
    except UserError as exc:
        print(f"mmp-crawl: error: {exc}", file=sys.stderr)
        return 2
    print_summary("mmp-crawl", stage.out, summary)
    if any("CrawlHalted" in err for _, err in summary.failures):
        print("mmp-crawl: halted by the circuit breaker: YouTube keeps refusing requests from this address. "
              "Completed units are kept; re-run later (add --cookies, --proxy or lower --max-requests-per-second).",
              file=sys.stderr)
        return 3
    return 1 if summary.units_failed else 0


if __name__ == "__main__":
    sys.exit(main())
