"""Where the crawl's info dicts and videos come from: saved info JSON, or YouTube via yt-dlp.

Every call to YouTube waits for the shared request budget and is retried on
transient failures by the crawl's one loop, ``fetch.with_retries``, which also tells the circuit
breaker about rate limits and bot checks. A saved info JSON that cannot be read (not a
regular file, larger than ``MAX_INFO_JSON_BYTES``, not JSON, nested beyond reason, not an
object) fails its video only. Every request yt-dlp makes
for the crawl passes the crawl's ``UrlPolicy`` (``ytdlp_requests``), sent as a browser sends it where
``cfg.impersonate`` (``impersonate``): a refused one fails the
video (or its download) as ``refused_url``; a request of an extraction past ``--request-timeout``
or ``METADATA_MAX_BYTES``, or a download past ``--max-video-bytes`` or ``--video-download-seconds``,
fails as ``over_budget``; nothing of either is stored.
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from shards.bounded import UnreadableInput, read_regular_text

from pipeline.crawl import errors
from pipeline.crawl.fetch import FetchError, RetryPolicy, with_retries
from pipeline.crawl.politeness import RequestBudget
from pipeline.crawl.url_policy import REFUSED_URL, UrlPolicy

# The bytes one answer of an extraction may have: YouTube's watch page and player script are a few MB.
# (Its time is the crawl's --request-timeout, as for every single request.)
METADATA_MAX_BYTES = 64 << 20

log = logging.getLogger("mmp.crawl")
# Real info dicts (every format and caption track listed) are well under 2 MB.
MAX_INFO_JSON_BYTES = 32 << 20


def ytdlp_failures() -> tuple[type, ...]:
    """What a yt-dlp call raises when the video cannot be had: yt-dlp's own errors (``DownloadError``,
    ``ExtractorError``, its networking ``RequestError``s, all ``YoutubeDLError``) and the network's
    (``OSError``: socket, ssl, urllib; ``http.client.HTTPException``). Anything else is a bug, ours
    or a yt-dlp API change, and is not caught."""
    import http.client

    from yt_dlp.utils import YoutubeDLError

    return YoutubeDLError, OSError, http.client.HTTPException


def ytdlp_with_retries(call, policy: RetryPolicy, budget: RequestBudget):
    """Run ``call()`` (one yt-dlp request to YouTube, through the budget) with the crawl's retries
    (``fetch.with_retries``). ``call`` may raise FetchError (already classified) or one of
    ``ytdlp_failures()``, which is classified from its real cause; any other exception propagates."""
    failures = ytdlp_failures()

    def attempt():
        budget.acquire()
        try:
            return call()
        except failures as exc:
            raise FetchError(*errors.classify_exception(exc)) from exc

    return with_retries(attempt, policy, budget)


class InfoJsonSource:
    """Saved info JSON files (``DIR/{video_id}.info.json``, as ``yt-dlp --write-info-json`` writes them)."""

    def __init__(self, directory: str):
        self.directory = Path(directory)

    def take_warnings(self) -> list[str]:
        return []

    def get(self, video_id: str) -> dict:
        path = self.directory / f"{video_id}.info.json"
        if not path.exists():
            raise FetchError(errors.UNAVAILABLE, f"no saved info JSON {path.name} in {self.directory}")
        try:
            # a regular file only, up to a cap: a FIFO, a device or a huge file costs this video, not its worker
            info = json.loads(read_regular_text(path, MAX_INFO_JSON_BYTES, "saved info JSON"))
        except UnreadableInput as exc:
            raise FetchError(errors.ERROR, str(exc)) from None
        except ValueError as exc:
            raise FetchError(errors.ERROR, f"saved info JSON {path.name} is not valid JSON: {exc}") from None
        except RecursionError:
            raise FetchError(errors.ERROR, f"saved info JSON {path.name} is nested too deeply to read") from None
        except OSError as exc:
            raise FetchError(errors.ERROR, f"saved info JSON {path.name} could not be read: {exc}") from None
        if not isinstance(info, dict):
            raise FetchError(errors.ERROR, f"saved info JSON {path.name} is not an object")
        return info


class _YtdlpLogger:
    """yt-dlp's messages: warnings and errors are kept for the video being crawled (counted by
    kind in its row and the unit's stats) and each distinct one is handed to ``warn`` (the stage's
    ``report_warning``), which shows it once on the console."""

    def __init__(self, warn: Callable[[str], None] | None = None):
        self.seen: list[str] = []
        self.warn = warn

    def debug(self, msg):
        pass

    def info(self, msg):
        pass

    def warning(self, msg):
        msg = errors.redact(str(msg))
        self.seen.append(msg)
        log.info("yt-dlp: %s", msg)
        if self.warn is not None:
            self.warn(f"yt-dlp: {errors.warning_text(msg)}")

    def error(self, msg):
        log.info("yt-dlp: %s", errors.redact(str(msg)))

    def take(self) -> list[str]:
        seen, self.seen = self.seen, []
        return seen


def _policy(cfg) -> RetryPolicy:
    return RetryPolicy(cfg.retries, cfg.backoff_base, cfg.backoff_max)


def logged_failure(log, what: str) -> FetchError | None:
    """The crawl's failure for what a checked YoutubeDL refused or cut short (its ``RequestLog``), else None."""
    if log.refused:
        return FetchError(REFUSED_URL, f"{what} not fetched: {log.refused[0].reason}")
    if log.exceeded:
        return FetchError(errors.OVER_BUDGET, f"{what} {log.exceeded[0]}")
    return None


@functools.lru_cache(maxsize=8)
def pot_provider_hosts(extractor_args: tuple) -> frozenset:
    """``host:port`` of the PO-token provider servers the user runs (bgutil's, on this machine by
    default): yt-dlp asks them for tokens while extracting, so the extraction may reach them."""
    from pipeline.crawl.url_policy import parse_allowed
    from pipeline.crawl.ytdlp_env import parse_extractor_args, po_token_providers

    hosts = set()
    for provider in po_token_providers(parse_extractor_args(list(extractor_args))):
        if provider.base_url:
            parts = urlsplit(provider.base_url)
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
                hosts.add(parse_allowed(f"{parts.hostname}:{port}"))
            except (TypeError, ValueError):
                continue
    return frozenset(hosts)


class YtdlpSource:
    """Asks YouTube through yt-dlp's Python API: one ``extract_info`` per video, no download."""

    def __init__(self, cfg, budget: RequestBudget, cookie_copy: str | None, warn: Callable[[str], None] | None = None,
                 url_policy: UrlPolicy | None = None, video_budget: RequestBudget | None = None):
        from pipeline.crawl.ytdlp_requests import Bounds, CheckedYoutubeDL

        url_policy = url_policy or UrlPolicy()
        url_policy = replace(url_policy, allowed=url_policy.allowed | pot_provider_hosts(tuple(cfg.extractor_args)))
        self.budget, self.policy = budget, _policy(cfg)
        self.video_budget = video_budget  # one slot per video extracted: the session's videos/hour
        self.logger = _YtdlpLogger(warn)
        self._ydls = []
        for proxy in cfg.proxies or [None]:
            # writesubtitles/writeautomaticsub: without them yt-dlp leaves out the translations
            # of manual tracks ("fr-de") and hides its PO-token warnings; nothing is written,
            # since the info is only extracted.
            params = {"quiet": True, "no_warnings": False, "skip_download": True, "noplaylist": True,
                      "socket_timeout": cfg.socket_timeout, "extractor_retries": 0, "logger": self.logger,
                      "retries": 0, "noprogress": True, "writesubtitles": True, "writeautomaticsub": True,
                      **ytdlp_params_for(cfg)}
            if proxy:
                params["proxy"] = proxy
            if cookie_copy:
                params["cookiefile"] = cookie_copy
            bounds = Bounds(cfg.request_timeout, METADATA_MAX_BYTES, seconds_flag="--request-timeout")
            self._ydls.append(CheckedYoutubeDL(params, url_policy, bounds, impersonate=cfg.impersonate))
        self._turn = 0

    def get(self, video_id: str) -> dict:
        def call():
            ydl = self._ydls[self._turn % len(self._ydls)]
            self._turn += 1
            ydl.request_log.clear()
            # The id is validated and sits inside a URL: it can never be read as an option.
            try:
                info = ydl.extract_info(f"https://www.youtube.com/watch?v={video_id}", download=False, process=False)
            except failures:
                failure = logged_failure(ydl.request_log, "the video's page")
                if failure is None:
                    raise
                raise failure from None
            return ydl.sanitize_info(info)

        failures = ytdlp_failures()
        self.logger.take()
        if self.video_budget is not None:
            self.video_budget.acquire()
        return ytdlp_with_retries(call, self.policy, self.budget)

    def take_warnings(self) -> list[str]:
        """yt-dlp's warnings since the last ``get`` began."""
        return self.logger.take()


def ytdlp_params_for(cfg) -> dict:
    """What yt-dlp needs from the crawl's configuration: the JS runtime and ``--extractor-args``."""
    return dict(_ytdlp_params(cfg.js_runtime, tuple(cfg.extractor_args)))


@functools.lru_cache(maxsize=8)
def _ytdlp_params(js_runtime: str | None, extractor_args: tuple) -> dict:
    # Resolved once per process: finding the runtime runs it for its version.
    from pipeline.crawl.ytdlp_env import find_js_runtime, parse_extractor_args, ytdlp_params

    return ytdlp_params(find_js_runtime(js_runtime), parse_extractor_args(list(extractor_args)))


_FORMAT_URL_KEYS = ("url", "manifest_url", "fragment_base_url")


def format_urls(fmt: dict) -> list[str]:
    """Every URL one format of an info dict would have yt-dlp request."""
    urls = [fmt[k] for k in _FORMAT_URL_KEYS if isinstance(fmt.get(k), str)]
    for fragment in fmt.get("fragments") or ():
        if isinstance(fragment, dict) and isinstance(fragment.get("url"), str):
            urls.append(fragment["url"])
    return urls


def chosen_formats(ydl, info: dict) -> list[dict]:
    """The formats yt-dlp picks for ``info`` under its ``format`` setting, found without downloading."""
    chosen = ydl.process_ie_result(copy.deepcopy(info), download=False)
    return list(chosen.get("requested_formats") or [chosen])


def refused_format(ydl, info: dict, url_policy: UrlPolicy) -> FetchError | None:
    """A ``refused_url`` error when a URL of a chosen format may not be requested, else None."""
    for fmt in chosen_formats(ydl, info):
        for url in format_urls(fmt):
            why = url_policy.problem(url)
            if why is not None:
                return FetchError(REFUSED_URL, f"video format {fmt.get('format_id') or '?'} not fetched: {why}")
    return None


def for_download(info: dict, impersonate: bool) -> dict:
    """A copy of ``info`` to download from. Impersonating, a browser User-Agent an info dict carries in its
    formats' ``http_headers`` (a saved one keeps the browser of the yt-dlp that wrote it) gives way to the
    impersonated browser's own, so the User-Agent and the client hints name one browser; a client's own
    (an Innertube app's) stays."""
    info = copy.deepcopy(info)
    if not impersonate:
        return info
    for holder in [info, *(f for f in info.get("formats") or () if isinstance(f, dict))]:
        headers = holder.get("http_headers")
        if isinstance(headers, dict):
            for name in [k for k, v in headers.items() if k.lower() == "user-agent" and str(v).startswith("Mozilla/")]:
                del headers[name]
    return info


def download_video(info: dict, cfg, budget: RequestBudget, scratch: Path, cookie_copy: str | None,
                   url_policy: UrlPolicy | None = None, warn: Callable[[str], None] | None = None) -> tuple[str, Path]:
    """Fetch the video in ``cfg.video_format`` with yt-dlp from the info already at hand: (ext, a file in
    ``scratch`` that the caller streams into its sample and then removes).

    Every request passes ``url_policy``; the download as a whole (all its requests, segments and
    fragments) is bounded by ``cfg.max_video_bytes`` and ``cfg.video_download_seconds`` and streams
    to a scratch file. A refusal or an overrun anywhere fails the video, even one yt-dlp would
    have passed over, and nothing partial is kept.
    """
    from pipeline.crawl.ytdlp_requests import Bounds, CheckedYoutubeDL, RequestLog

    url_policy = url_policy or UrlPolicy()
    target = Path(tempfile.mkdtemp(dir=scratch))
    params = {"quiet": True, "no_warnings": True, "noprogress": True, "format": cfg.video_format,
              "socket_timeout": cfg.socket_timeout, "retries": 0, "fragment_retries": 0, "continuedl": False,
              "logger": _YtdlpLogger(warn), "noplaylist": True, "writesubtitles": False, "writeautomaticsub": False,
              "cachedir": False, **ytdlp_params_for(cfg)}
    if cfg.proxies:
        params["proxy"] = cfg.proxies[0]
    if cookie_copy:
        params["cookiefile"] = cookie_copy
    failures = ytdlp_failures()

    def call():
        attempt = Path(tempfile.mkdtemp(dir=target))  # a retry never resumes what a failed attempt left
        log = RequestLog()
        bounds = Bounds(cfg.video_download_seconds, cfg.max_video_bytes, total_seconds=cfg.video_download_seconds,
                        total_bytes=cfg.max_video_bytes, seconds_flag="--video-download-seconds",
                        bytes_flag="--max-video-bytes")
        with CheckedYoutubeDL({**params, "outtmpl": str(attempt / "video.%(ext)s")}, url_policy, bounds, log,
                              impersonate=cfg.impersonate) as ydl:
            refused = refused_format(ydl, info, url_policy)
            if refused is not None:
                raise refused
            try:
                ydl.process_ie_result(for_download(info, cfg.impersonate), download=True)
            except failures:
                failure = logged_failure(log, "the video download")
                if failure is None:
                    raise
                raise failure from None
        failure = logged_failure(log, "the video download")  # yt-dlp may have skipped what was refused
        if failure is not None:
            raise failure
        files = [p for p in attempt.iterdir() if p.is_file() and not p.name.endswith((".part", ".ytdl"))]
        if not files:
            raise FetchError(errors.ERROR, "yt-dlp finished without writing a video file")
        path = max(files, key=lambda p: p.stat().st_size)
        kept = Path(scratch) / f"{target.name}.{path.suffix.lstrip('.').lower() or 'bin'}"
        os.replace(path, kept)
        return path.suffix.lstrip(".").lower(), kept

    try:
        return ytdlp_with_retries(call, _policy(cfg), budget)
    finally:
        shutil.rmtree(target, ignore_errors=True)
