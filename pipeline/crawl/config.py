"""``mmp-crawl``'s flags and the ``CrawlConfig`` they become.

Every number a flag takes is checked where it is parsed (a bad one is argparse's one-line
error, exit 2), so no worker ever starts with a setting that makes each unit fail.
"""
from __future__ import annotations

import argparse
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shards.errors import UserError
from shards.samples import LANGS
from shards.storage import is_url, local_copy

from pipeline.crawl import errors
from pipeline.runtime.cli import add_common_flags, add_executor_args, add_options, comma_list, from_args, option
from pipeline.runtime.langs import add_langs_flag, parse_langs

from pipeline.crawl.access import parse_proxy
from pipeline.crawl.url_policy import parse_allowed
from pipeline.crawl.videolist import check_video_list

DEFAULT_LANGS = LANGS
DEFAULT_VIDEO_FORMAT = "best[ext=mp4][height<=360]/best[height<=360]/worst[ext=mp4]/worst"
# Politeness a fresh address survives: YouTube refuses the machine-translated tracks first
# (yt-dlp issues #13831, #13770, #17536, where users report 429s from bursts of a few
# subtitle requests a second and recommend pauses; yt-dlp's own "-t sleep" preset waits
# 5 s per subtitle). Well under one request a second per egress address, shared by every
# worker, with a pause before each subtitle file; the adaptive budget slows down further.
DEFAULT_RATE = 0.5
# HowTo100M videos average ~6.5 minutes and few pass an hour; at the 360p format the crawl picks
# that is ~25 MB on average and ~250 MB for an hour. 2 GiB leaves room for the fallback
# formats and the longest videos while a hostile endless body stops there; 15 minutes fetches
# 2 GiB at 2.4 MB/s and a one-hour 360p video at 0.3 MB/s.
DEFAULT_MAX_VIDEO_BYTES = 2 << 30
DEFAULT_VIDEO_DOWNLOAD_SECONDS = 900.0
DEFAULT_SLEEP_SUBTITLES = 1.0
_POT_VALUE = re.compile(r"(po_token=|\+)[^;,\s]+")  # PO tokens in --extractor-args are credentials


# ---------------------------------------------------------------- flag types

def _number(kind, test, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; give {what}") from None
        if not math.isfinite(value) or not test(value):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; give {what}")
        return value
    return parse


count = _number(int, lambda v: v >= 0, "a whole number, 0 or more")
at_least_one = _number(int, lambda v: v >= 1, "a whole number, 1 or more")
seconds = _number(float, lambda v: v >= 0, "seconds, 0 or more")
positive_seconds = _number(float, lambda v: v > 0, "seconds, more than 0")
rate = _number(float, lambda v: v > 0, "requests per second, more than 0 (--no-request-limit for none)")
positive_rate = _number(float, lambda v: v > 0, "requests per second, more than 0")
per_hour = _number(float, lambda v: v > 0, "videos per hour, more than 0")


def allowed_host(text: str) -> str:
    try:
        return parse_allowed(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--allow-host ")) from None


YT = "yt-dlp"
POLITE = "politeness and robustness"


@dataclass
class CrawlConfig:
    """The crawl's settings. Each ``option`` field is also its flag, its default written here once."""

    videos: str
    out: str
    langs: list = field(default_factory=lambda: list(DEFAULT_LANGS))
    lang_variants: dict = field(default_factory=dict)  # e.g. {"zh": "zh-Hant"}: the YouTube key tried first
    info_json: str | None = None
    download_video: bool = option(False, "also fetch the video into the sample")
    video_format: str = option(DEFAULT_VIDEO_FORMAT, "yt-dlp format selector for --download-video")
    max_video_bytes: int = option(
        DEFAULT_MAX_VIDEO_BYTES, "the most bytes one video download may hold (every request of it together); a "
        "larger one is a failure (video_status over_budget), nothing of it stored", type=at_least_one)
    video_download_seconds: float = option(
        DEFAULT_VIDEO_DOWNLOAD_SECONDS, "the longest one video download may take, every request of it (headers, "
        "body, segments) together; a slower one is a failure (video_status over_budget)", type=positive_seconds)
    max_requests_per_second: float | None = option(
        DEFAULT_RATE, "request budget of one egress address, shared by every crawl process on this machine. It is "
        "the ceiling: on a 429 or a bot check the rate is halved, and creeps back up after a quiet period",
        group=POLITE, type=rate)  # None: no limit (--no-request-limit)
    adaptive_rate: bool = option(True, "keep the request rate fixed at --max-requests-per-second, whatever "
                                 "YouTube answers", flags=("--no-adaptive-rate",), group=POLITE)
    rate_quiet_seconds: float = option(60.0, "seconds without a refusal before the adaptive rate creeps back up",
                                       group=POLITE, type=positive_seconds)
    sleep_subtitles: float = option(DEFAULT_SLEEP_SUBTITLES, "seconds to pause before each subtitle file",
                                    group=POLITE, type=seconds)
    translated_format: str = option(
        "vtt", "the format machine translations are asked for in: vtt, or srt (YouTube's timedtext URL with "
        "fmt=srt, stored as <lang>.srt; reported to get through where WebVTT gets 429s, unverified at scale). "
        "Other tracks are always WebVTT, as is a translation offered neither as SRT nor by a timedtext URL",
        group=POLITE, choices=("vtt", "srt"))
    js_runtime: str | None = option(
        None, "the JavaScript runtime yt-dlp solves YouTube's challenges with: deno, node, bun or quickjs, "
        "optionally with its path (default: the deno installed with this project, else one on PATH)",
        group=YT, metavar="NAME[:PATH]")
    extractor_args: list = option(
        help="passed to yt-dlp as its own --extractor-args, e.g. 'youtube:player_client=default,mweb' (repeatable)",
        default_factory=list, group=YT, action="append", metavar="KEY:ARGS")
    cookies: str | None = None
    proxies: list = field(default_factory=list)
    allow_hosts: list = field(default_factory=list)  # hosts fetched from besides YouTube's (url_policy)
    socket_timeout: float = option(20.0, "seconds before a silent connection fails", group=POLITE,
                                   type=positive_seconds)
    request_timeout: float = option(
        60.0, "seconds any single request of the crawl may take in all, connecting, headers and body, "
        "however often the server sends a byte: a video's metadata pages and each subtitle file alike "
        "(a subtitle file past it fails as a network error and is retried, a metadata page fails the "
        "video as over_budget; a video download has --video-download-seconds)", group=POLITE,
        type=positive_seconds)
    retries: int = option(4, "retries of a transient failure (backoff with jitter)", group=POLITE, type=count)
    backoff_base: float = option(1.0, "first backoff in seconds; doubles per retry", group=POLITE, type=seconds)
    backoff_max: float = option(60.0, "longest single backoff, Retry-After included", group=POLITE, type=seconds)
    unit_size: int = option(1000, "videos per work unit", type=at_least_one)
    budget_dir: str | None = None
    budget_name: str = "youtube"
    breaker_threshold: int = option(5, "429s or bot checks in a row that pause the whole crawl", group=POLITE,
                                    type=at_least_one)
    breaker_pause: float = option(60.0, "first pause in seconds; doubles each time", group=POLITE,
                                  type=positive_seconds)
    breaker_max_pauses: int = option(6, "pauses in a row before the crawl halts", group=POLITE, type=at_least_one)
    videos_per_hour: float | None = option(
        None, "videos one session may extract per hour (default: 300 for an anonymous session, 2000 signed in "
        "with --cookies: the figures of yt-dlp's wiki); a session is the cookies' account or an anonymous "
        "one, from one egress address", group=POLITE, type=per_hour)
    translation_requests_per_second: float = option(
        DEFAULT_RATE, "request budget of YouTube's machine translations, apart from the video's own tracks: "
        "their refusals slow and pause only them", group=POLITE, type=positive_rate)
    translation_max_wait: float = option(
        30.0, "the longest a translation waits for its turn; one whose budget is paused, halted or slowed past "
        "this is not requested now (rate_limited, for --retry-failed), so the own tracks go on", group=POLITE,
        type=seconds)
    translation_retries: int = option(
        0, "retries of a refused translation within the run (YouTube refuses translations in storms that "
        "retries seconds apart do not outlast; --retry-failed asks again later)", group=POLITE, type=count)
    # Whether requests are sent as a browser sends them (curl_cffi's impersonation, as yt-dlp's own); the
    # preflight turns it off only when curl_cffi cannot and --allow-no-impersonation says to crawl anyway.
    impersonate: bool = True
    egress: list = field(default_factory=list)  # egress address labels; units spread over them (Ray)
    budget_backend: str = "file"  # "file": one budget per machine; "ray": one actor per egress address

    def public(self) -> dict:
        """For config.json: cookie path kept, cookie contents never read here; proxy passwords hidden."""
        d = asdict(self)
        d["proxies"] = [errors.redact(p) for p in self.proxies]
        d["extractor_args"] = [_POT_VALUE.sub(r"\1***", a) for a in self.extractor_args]
        return d


# ---------------------------------------------------------------- the parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmp-crawl",
        description="Fetch YouTube subtitles in several languages (one manual, ASR or machine-translated "
        "track per language, as WebVTT) for a list of videos, into resumable WebDataset shards in --out "
        "(e.g. DATA/crawl).",
        epilog="Re-running the same command resumes: finished units are skipped. --retry-failed asks again "
        "for what failed transiently in earlier runs (rate_limited, bot_check, network, server_error, "
        "bad_response, po_token_required), whole videos or single tracks, keeping every track already fetched. "
        "Run `mmp-crawl --check` first on a new machine.",
    )
    p.add_argument("--check", action="store_true",
                   help="only check, offline, whether this machine is ready to crawl (yt-dlp, JS runtime, EJS "
                   "scripts, browser impersonation, PO-token plugins, and --cookies, --proxy and the request "
                   "budget when given); "
                   "one line each, exit 0 when ready")
    p.add_argument("--videos",
                   help="CSV/TSV (e.g. HowTo100M_v1.csv), Parquet, or a text file of ids or YouTube URLs "
                   "(a path or an fsspec URL such as s3://bucket/videos.csv)")
    p.add_argument("--out",
                   help="the crawl directory, a path or an fsspec URL (e.g. DATA/crawl or s3://bucket/data/crawl): "
                   "crawl-NNNNNN.tar/.parquet/.stats.json and config.json go straight into it")
    add_langs_flag(p, default=DEFAULT_LANGS, read=parse_langs,
                   help="the languages to ask YouTube for, as YouTube spells them; a variant (zh-Hant, pt-BR) is "
                   "stored as its language (zh, pt), that variant tried first and recorded")
    p.add_argument("--info-json", type=Path, help="read saved info JSON (DIR/ID.info.json) instead of asking YouTube")
    p.add_argument("--retry-failed", action="store_true", help="re-crawl the transient failures of earlier runs")
    p.add_argument("--allow-host", action="append", default=[], type=allowed_host, metavar="HOST[:PORT]",
                   help="also fetch from this host (only YouTube's are fetched otherwise, and never an address "
                   "on this machine or its network); repeatable. For a stand-in server, e.g. 127.0.0.1:8000")
    pol = p.add_argument_group(POLITE)
    pol.add_argument("--no-request-limit", dest="max_requests_per_second", action="store_const", const=None,
                     default=argparse.SUPPRESS, help="no request budget at all (for a local stand-in server, never for YouTube)")
    pol.add_argument("--cookies", type=Path, help="Netscape cookies file (its contents are never logged or copied to outputs)")
    pol.add_argument("--proxy", action="append", default=[],
                     help="http://[USER:PASSWORD@]HOST:PORT proxy (http:// only: every request goes through the URL "
                     "policy's own HTTP transport); repeat or comma-separate several to rotate between them")
    pol.add_argument("--budget-dir", type=Path, help="where the machine-wide request budget lives (default: a temp dir; "
                     "with --executor ray the budget is a Ray actor per egress address instead)")
    pol.add_argument("--egress", action="append", default=[],
                     help="with --executor ray: name of an outbound address (repeat or comma-separate several); "
                     "units are dealt over them, each needs one Ray resource egress_NAME (nodes that send from "
                     "that address advertise it: ray start --resources '{\"egress_NAME\": 4}') and shares one "
                     "request budget per name. Without it the budget is per node (or per --proxy set)")
    yt = p.add_argument_group(YT)
    yt.add_argument("--allow-no-js-runtime", action="store_true",
                    help="crawl YouTube even without a usable JavaScript runtime (yt-dlp then falls back to one "
                    "client and subtitles may be missing)")
    yt.add_argument("--allow-no-impersonation", action="store_true",
                    help="crawl even when requests cannot be sent as a browser sends them (curl_cffi missing): "
                    "they then go out as a script's, which YouTube refuses sooner")
    add_options(p, CrawlConfig)
    add_executor_args(p)
    add_common_flags(p)
    return p


def config_from_args(args) -> CrawlConfig:
    if not args.videos or not args.out:
        raise UserError("--videos and --out are required (or run `mmp-crawl --check` alone)")
    langs, variants = args.langs
    proxies = comma_list(*args.proxy)
    for proxy in proxies:  # a proxy that cannot work would fail every unit: refuse it now, password unshown
        parse_proxy(proxy)
    egress = comma_list(*args.egress)
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
    check_video_list(videos)
    if args.info_json is not None and not args.info_json.is_dir():
        raise UserError(f"--info-json {args.info_json} is not a directory of ID.info.json files")
    if args.cookies is not None and not args.cookies.is_file():
        raise UserError(f"--cookies {args.cookies} does not exist or is not a file")
    return from_args(
        CrawlConfig, args, videos=str(videos), out=str(args.out), langs=langs, lang_variants=variants, egress=egress,
        budget_backend="ray" if args.executor == "ray" else "file",
        info_json=str(args.info_json) if args.info_json else None,
        cookies=str(args.cookies) if args.cookies else None, proxies=proxies, allow_hosts=list(args.allow_host),
        budget_dir=str(args.budget_dir) if args.budget_dir else None)
