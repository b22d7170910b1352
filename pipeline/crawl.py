"""``mmp-crawl``: fetch YouTube subtitles in many languages (and optionally the video) with yt-dlp.

One ``extract_info`` per video serves every language (or a saved info JSON with
``--info-json``); one track is chosen per language (``tracks.select_tracks``) and
fetched as WebVTT, each through the machine's shared request budget. A unit of
~1,000 videos becomes ``crawl-000123.{tar,parquet,stats.json}``: a sample per
video whose metadata was read (``info.json`` plus ``<lang>.vtt`` per track
found), a parquet row per input video whatever became of it.
"""
from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

from shards.layout import CRAWL, UnitFiles, completed_units
from shards.storage import as_path, is_url, local_copy
from shards.reader import ShardError, iter_samples, read_rows
from shards.writer import UnitWriter, atomic_write_json, sha256_file

from . import errors
from .fetch import FetchError, Fetcher, RetryPolicy
from .politeness import RayRequestBudget, RequestBudget, default_budget_dir
from .sources import InfoJsonSource, YtdlpSource, download_video
from .stage import (Stage, Unit, UserError, add_executor_args, executor_options, print_summary, run_stage,
                    video_done)
from .tracks import NONE, select_tracks
from .videolist import VideoEntry, dedupe, read_video_list

log = logging.getLogger("mmp.crawl")

DEFAULT_LANGS = ("en", "de", "fr", "ru", "es", "cs", "sw", "zh", "vi")
DEFAULT_VIDEO_FORMAT = "best[ext=mp4][height<=360]/best[height<=360]/worst[ext=mp4]/worst"
INFO_KEYS = ("id", "title", "duration", "channel", "channel_id", "upload_date", "language",
             "categories", "availability", "webpage_url")
META_COLUMNS = ("category_1", "category_2", "rank", "task_id")


@dataclass
class CrawlConfig:
    videos: str
    out: str
    langs: list = field(default_factory=lambda: list(DEFAULT_LANGS))
    info_json: str | None = None
    download_video: bool = False
    video_format: str = DEFAULT_VIDEO_FORMAT
    max_requests_per_second: float | None = None
    sleep_subtitles: float = 0.0
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
        return d


def schema_for(langs) -> pa.Schema:
    fields = [
        ("video_id", pa.string()), ("input", pa.string()), ("status", pa.string()), ("error", pa.string()),
        ("attempts", pa.int32()), ("crawled_at", pa.float64()), ("seconds", pa.float64()),
        ("title", pa.string()), ("duration", pa.float64()), ("channel", pa.string()),
        ("language", pa.string()), ("upload_date", pa.string()),
        ("category_1", pa.string()), ("category_2", pa.string()), ("rank", pa.string()), ("task_id", pa.string()),
        ("n_tracks", pa.int32()), ("video_ext", pa.string()), ("video_bytes", pa.int64()), ("video_error", pa.string()),
    ]
    for lang in langs:
        fields += [(f"{lang}_kind", pa.string()), (f"{lang}_source", pa.string()),
                   (f"{lang}_bytes", pa.int64()), (f"{lang}_error", pa.string())]
    return pa.schema(fields)


# ---------------------------------------------------------------- per-video work

def looks_like_vtt(body: bytes) -> str | None:
    """None if ``body`` is a WebVTT file, else why not."""
    if not body.strip():
        return "empty file"
    head = body.lstrip(b"\xef\xbb\xbf").lstrip()[:256]
    if head.startswith(b"WEBVTT"):
        return None
    lowered = head.lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or b"<html" in lowered:
        return "an HTML page where WebVTT was expected"
    return "not a WebVTT file (no WEBVTT header)"


def trim_info(info: dict, entry: VideoEntry) -> dict:
    trimmed = {k: info.get(k) for k in INFO_KEYS}
    trimmed["id"] = entry.video_id
    if entry.meta:
        trimmed["input_meta"] = entry.meta
    return trimmed


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
                                max_trips=cfg.breaker_max_pauses)
    budget_dir = Path(cfg.budget_dir) if cfg.budget_dir else default_budget_dir()
    return RequestBudget(budget_dir / f"{cfg.budget_name}.budget", cfg.max_requests_per_second,
                         breaker_threshold=cfg.breaker_threshold, pause_seconds=cfg.breaker_pause,
                         max_trips=cfg.breaker_max_pauses)


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


def crawl_video(entry: VideoEntry, ctx: CrawlContext) -> tuple[dict, dict | None]:
    """Crawl one video: (parquet row, sample members or None). Failures are values; bugs raise."""
    cfg = ctx.cfg
    started = time.time()
    row = {"video_id": entry.video_id if entry.valid else None, "input": entry.raw, "attempts": 1,
           "crawled_at": started}
    for col in META_COLUMNS:
        if col in entry.meta:
            row[col] = str(entry.meta[col])

    def finish(status, error=None, members=None):
        row.update(status=status, error=error, seconds=round(time.time() - started, 4))
        return row, members

    if not entry.valid:
        row["video_id"] = entry.raw
        return finish(errors.INVALID_ID, f"not a YouTube video id (11 characters of A-Z a-z 0-9 _ -): {entry.raw!r}")
    try:
        info = ctx.info_source.get(entry.video_id)
    except FetchError as exc:
        return finish(exc.status, exc.message)
    row.update(title=info.get("title"), channel=info.get("channel") or info.get("uploader"),
               language=info.get("language"), upload_date=info.get("upload_date"))
    duration = info.get("duration")
    row["duration"] = float(duration) if isinstance(duration, (int, float)) else None

    choices = select_tracks(info, cfg.langs)
    members: dict = {}
    tracks: dict = {}
    by_url: dict = {}
    offered = 0
    for lang, choice in choices.items():
        record = choice.record()
        row[f"{lang}_kind"] = choice.kind
        row[f"{lang}_source"] = choice.source_lang
        tracks[lang] = record
        if choice.kind == NONE:
            continue
        offered += 1
        if not choice.url:
            record["error"] = row[f"{lang}_error"] = "no WebVTT format offered for this track"
            continue
        if choice.url in by_url:  # the same file serves two languages: fetch it once
            body = by_url[choice.url]
        else:
            if cfg.sleep_subtitles > 0:
                time.sleep(cfg.sleep_subtitles)
            try:
                body = ctx.fetcher.get(choice.url)
            except FetchError as exc:
                if exc.transient:
                    return finish(exc.status, f"{lang} track: {exc.message}")
                record["error"] = row[f"{lang}_error"] = exc.message
                continue
            by_url[choice.url] = body
        problem = looks_like_vtt(body)
        if problem:
            record["error"] = row[f"{lang}_error"] = problem
            continue
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = sum(1 for _ in body.decode("utf-8", "replace") if _ == "\ufffd")
            body = body.decode("utf-8", "replace").encode("utf-8")
            record["warning"] = f"invalid UTF-8 ({bad} characters replaced, first at byte {exc.start})"
        members[f"{lang}.vtt"] = body
        row[f"{lang}_bytes"] = len(body)

    if cfg.download_video:
        try:
            ext, data = ctx.download_video(info)
            members[ext] = data
            row["video_ext"], row["video_bytes"] = ext, len(data)
        except FetchError as exc:
            if exc.transient:
                return finish(exc.status, f"video: {exc.message}")
            row["video_error"] = exc.message

    fetched = sum(1 for m in members if m.endswith(".vtt"))
    row["n_tracks"] = fetched
    trimmed = trim_info(info, entry)
    trimmed["tracks"] = tracks
    members["info.json"] = trimmed
    if fetched == len(cfg.langs):
        return finish(errors.OK, None, members)
    missing = [l for l in cfg.langs if f"{l}.vtt" not in members]
    if fetched:
        return finish(errors.PARTIAL, "missing: " + ", ".join(missing), members)
    if offered:
        return finish(errors.ERROR, "every offered track failed: " + "; ".join(
            f"{l}: {tracks[l].get('error')}" for l in missing if tracks[l].get("error")))
    return finish(errors.NO_SUBTITLES, "YouTube offers no subtitles in the requested languages", members)


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
            if prev is not None and prev.get("status") not in errors.TRANSIENT:
                row, members = prev, prev_samples.get(key)
                writer.count("carried_over")
            else:
                row, members = crawl_video(entry, ctx)
                if prev is not None:
                    row["attempts"] = int(prev.get("attempts") or 1) + 1
                    writer.count("retried")
            if members is not None:
                writer.write_sample(entry.video_id, members)
                writer.count("tracks", sum(1 for m in members if m.endswith(".vtt")))
            writer.add_row(row)
            video_done(row["status"])
            log.info("%s %s %s", row["video_id"], row["status"], row.get("error") or "")
        writer.count("videos", len(unit.items))
        writer.count("requests", ctx.budget.requests)
        ctx.budget.requests = 0

    def after_publish(self, files: UnitFiles) -> None:
        retry_marker(files).unlink(missing_ok=True)


def mark_transient_units(out) -> int:
    """For --retry-failed: reopen every complete unit that holds transient failures.

    The unit's stats go to a retry marker (with the checksums of its files) and the
    stats file is removed, so the unit is redone; its final rows are carried over.
    A kill in between is safe: the unit is simply incomplete and is redone.
    """
    reopened = 0
    for files in completed_units(out, "crawl"):
        try:
            statuses = {r.get("status") for r in read_rows(files.parquet)}
        except Exception as exc:  # pyarrow raises several kinds for a damaged file
            log.warning("%s: parquet unreadable (%s); redoing the unit", files.stem, exc)
            statuses = set(errors.TRANSIENT)
        if statuses & errors.TRANSIENT:
            atomic_write_json(retry_marker(files), json.loads(files.stats.read_text()))
            files.stats.unlink()
            reopened += 1
    return reopened


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmp-crawl",
        description="Fetch YouTube subtitles in several languages (one manual, ASR or machine-translated "
        "track per language, as WebVTT) for a list of videos, into resumable WebDataset shards DATA/crawl/.",
        epilog="Re-running the same command resumes: finished units are skipped. --retry-failed re-crawls "
        "only rate_limited, bot_check, network and server_error videos of earlier runs.",
    )
    p.add_argument("--videos", required=True,
                   help="CSV/TSV (e.g. HowTo100M_v1.csv), Parquet, or a text file of ids or YouTube URLs "
                   "(a path or an fsspec URL such as s3://bucket/videos.csv)")
    p.add_argument("--out", required=True,
                   help="dataset root, a path or an fsspec URL (s3://bucket/data); the crawl goes to OUT/crawl/")
    p.add_argument("--langs", default=",".join(DEFAULT_LANGS), help="comma-separated languages (default: the 9 of Multi-HowTo100M)")
    p.add_argument("--info-json", type=Path, help="read saved info JSON (DIR/ID.info.json) instead of asking YouTube")
    p.add_argument("--download-video", action="store_true", help="also fetch the video into the sample")
    p.add_argument("--video-format", default=DEFAULT_VIDEO_FORMAT, help="yt-dlp format selector for --download-video")
    p.add_argument("--unit-size", type=int, default=1000, help="videos per work unit (default 1000)")
    p.add_argument("--retry-failed", action="store_true", help="re-crawl the transient failures of earlier runs")
    pol = p.add_argument_group("politeness and robustness")
    pol.add_argument("--max-requests-per-second", type=float, default=None,
                     help="request budget shared by every crawl process on this machine (default: none)")
    pol.add_argument("--sleep-subtitles", type=float, default=0.0, help="seconds to sleep before each subtitle fetch")
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
    add_executor_args(p)
    return p


def config_from_args(args) -> CrawlConfig:
    langs = [l.strip() for l in args.langs.split(",") if l.strip()]
    bad = [l for l in langs if not l.replace("-", "").isalnum() or len(l) > 12]
    if not langs or bad:
        raise UserError(f"--langs must be comma-separated language codes like en,de,zh (got {args.langs!r})")
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
        videos=str(videos), out=str(args.out), langs=langs, egress=egress,
        budget_backend="ray" if args.executor == "ray" else "file",
        info_json=str(args.info_json) if args.info_json else None,
        download_video=args.download_video, video_format=args.video_format,
        max_requests_per_second=args.max_requests_per_second, sleep_subtitles=args.sleep_subtitles,
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
    try:
        cfg = config_from_args(args)
        stage = CrawlStage(cfg)
        stage.out.mkdir(parents=True, exist_ok=True)
        if args.retry_failed:
            reopened = mark_transient_units(stage.out)
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
