"""HTTP fetching for the crawl: one request per file, retried politely, sent as yt-dlp sends its own.

Every request waits for the shared ``RequestBudget``. Transient failures (429,
5xx, resets, stalls, truncated bodies) are retried with exponential backoff and
full jitter; a ``Retry-After`` header is honoured. The error raised at the end
carries the real cause of the last attempt. A URL the ``UrlPolicy`` refuses (another
scheme or host, an address on this machine or its network, directly or by a redirect)
is never requested and fails for good as ``refused_url``.

The requests go through the same checked transports as yt-dlp's own (a ``CheckedYoutubeDL``'s,
``ytdlp_requests``): each subtitle file is asked for as a current browser asks (curl_cffi's
impersonation, as yt-dlp asks for subtitle files), or, without curl_cffi or with
``impersonate=False``, by urllib with a browser's User-Agent. Cookies come from the crawl's cookie
file; proxies take turns, one request each.

One request (its redirects included) has ``request_timeout`` seconds in all, connecting and its
whole answer, however slowly the server sends it: a trickled answer is a ``network``
failure, retried like the others, and nothing of it is kept. A body is read in chunks up to
``max_bytes``; a longer one (or one announcing more) fails for good.
"""
from __future__ import annotations

import copy
import email.utils
import http.client
import itertools
import logging
import random
import time
from contextlib import closing
from dataclasses import dataclass

from shards.members import TRACK_MAX_BYTES

from pipeline.crawl import errors
from pipeline.crawl.politeness import RequestBudget
from pipeline.crawl.url_policy import REFUSED_URL, UrlPolicy

log = logging.getLogger("mmp.fetch")
_CHUNK = 1 << 16  # bytes read at a time: a body is checked against its cap as it arrives
# What a request says of itself when it cannot be sent as a browser (no curl_cffi).
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"


class FetchError(Exception):
    """A request that failed, classified (``status``); ``retry_after`` is the server's Retry-After, if any."""

    def __init__(self, status: str, message: str, http_status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.message, self.http_status, self.retry_after = status, message, http_status, retry_after

    @property
    def transient(self) -> bool:
        return self.status in errors.TRANSIENT


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class RetryPolicy:
    retries: int = 4            # attempts after the first
    backoff_base: float = 1.0   # seconds; doubles per attempt
    backoff_max: float = 60.0   # cap for one wait (Retry-After included)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        jittered = random.uniform(0, min(self.backoff_max, self.backoff_base * (2 ** attempt)))
        if retry_after is not None:
            return min(self.backoff_max, max(retry_after, jittered))
        return jittered


def with_retries(attempt, policy: RetryPolicy, budget: RequestBudget, *, count_retries: bool = False):
    """Run ``attempt()`` (one request to YouTube, which raises FetchError when it fails) until it succeeds or
    fails for good: a transient failure is retried ``policy.retries`` times with backoff (the server's
    Retry-After honoured), and every refusal and the success are told to the budget. Raises the last
    FetchError, its message ending "(after N retries)" with ``count_retries``; any other exception
    propagates (a bug fails its unit with a traceback rather than become a video's ``error``)."""
    last: FetchError | None = None
    for n in range(policy.retries + 1):
        try:
            result = attempt()
        except FetchError as exc:
            last = exc
        else:
            budget.record("ok")
            return result
        if last.status in errors.REFUSALS:
            budget.record(last.status)
        if not last.transient or last.status in errors.LATER_ONLY or n == policy.retries:
            break
        delay = policy.delay(n, last.retry_after)
        log.info("%s; retry %d/%d in %.1fs", last.message, n + 1, policy.retries, delay)
        time.sleep(delay)
    if count_retries and last.transient and n:
        last.message += f" (after {n} retries)"
    raise last


class _YtdlpLog:
    """yt-dlp's messages about the fetcher's requests, at debug level: a failure reaches the caller as a FetchError."""

    def debug(self, msg):
        log.debug("yt-dlp: %s", errors.redact(str(msg)))

    info = warning = error = debug


class Fetcher:
    """Fetches URLs through the shared budget, rotating proxies, with cookies if given, as a browser where it can."""

    def __init__(self, budget: RequestBudget, *, timeout: float = 20.0, request_timeout: float = 60.0,
                 policy: RetryPolicy | None = None, proxies: list[str] | None = None, cookies: str | None = None,
                 max_bytes: int = TRACK_MAX_BYTES, url_policy: UrlPolicy | None = None, impersonate: bool = True):
        from yt_dlp.utils import YoutubeDLError

        from pipeline.crawl.ytdlp_requests import Bounds, CheckedYoutubeDL

        self.budget = budget
        self.url_policy = url_policy or UrlPolicy()
        self.timeout = timeout                  # the longest silence of a connection
        self.request_timeout = request_timeout  # the longest a whole answer may take, its redirects included
        self.policy = policy or RetryPolicy()
        self.max_bytes = max_bytes
        params = {"quiet": True, "no_warnings": True, "logger": _YtdlpLog(), "socket_timeout": timeout,
                  "proxy": "", "cachedir": False}  # "": no proxy of the environment's; --proxy ones per request
        if cookies:
            params["cookiefile"] = cookies
        try:
            self._ydl = CheckedYoutubeDL(params, self.url_policy, impersonate=impersonate,
                                         bounds=lambda: Bounds(request_timeout, max_bytes, total_seconds=request_timeout,
                                                               seconds_flag="--request-timeout"))
            self._ydl.cookiejar  # loaded now: a file that cannot be read fails here, not at the first request
        except YoutubeDLError:
            if not cookies:
                raise
            raise ValueError(f"cookie file {cookies} could not be loaded; export it in Netscape format") from None
        self.impersonating = self._ydl.impersonating  # the browser requests are sent as, or None
        self._proxies = list(proxies or [None])
        self._rotation = itertools.cycle(range(len(self._proxies)))
        self.requests = 0

    def _request(self, url: str):
        from yt_dlp.networking import Request
        from yt_dlp.networking.impersonate import ImpersonateTarget

        proxy = self._proxies[next(self._rotation)]
        if self.impersonating:  # as yt-dlp asks for a subtitle file: the browser's own headers
            return Request(url, proxies={"all": proxy} if proxy else None,
                           extensions={"impersonate": ImpersonateTarget()})
        return Request(url, headers={"User-Agent": USER_AGENT, "Accept-Language": "en-US,en;q=0.8"},
                       proxies={"all": proxy} if proxy else None)

    def _once(self, url: str) -> bytes:
        request = self._request(url)
        self.budget.acquire()
        self.requests += 1
        self._ydl.request_log.clear()
        with closing(self._ydl.urlopen(request)) as response:
            final_url = response.url or url
            chunks = []
            while chunk := response.read(_CHUNK):
                chunks.append(chunk)
            body = b"".join(chunks)
            length = response.get_header("Content-Length")
            if (length is not None and length.isdigit() and int(length) != len(body)
                    and response.get_header("Content-Encoding", "identity").lower() == "identity"):
                raise http.client.IncompleteRead(body, int(length) - len(body))
            if "/sorry/" in final_url:
                raise FetchError(errors.BOT_CHECK, f"redirected to a bot check page ({_short(final_url)})")
            return body

    def spending(self, budget, policy: RetryPolicy) -> "Fetcher":
        """A fetcher over the same transports, cookie jar and proxies that spends ``budget`` and retries by
        ``policy`` (the translations' fetcher beside the own tracks')."""
        other = copy.copy(self)
        other.budget, other.policy, other.requests = budget, policy, 0
        return other

    def get(self, url: str, check=None) -> bytes:
        """The body of ``url``. ``check(body)`` may return a FetchError for a 200 that is not
        the file (an empty body, an HTML page): a transient one is retried like a 429."""
        why = self.url_policy.problem(url)
        if why is not None:
            raise FetchError(REFUSED_URL, f"not fetched: {why} ({_short(url)})")
        return with_retries(lambda: self._checked(url, check), self.policy, self.budget, count_retries=True)

    def _checked(self, url: str, check) -> bytes:
        """One request for ``url``, its failure (the transport's, or ``check``'s) as a FetchError."""
        from yt_dlp.networking.exceptions import HTTPError, NoSupportingHandlers, RequestError, TransportError

        from pipeline.crawl.ytdlp_requests import OverBounds, RequestRefused

        try:
            body = self._once(url)
        except RequestRefused as exc:
            if "/sorry/" in exc.url:  # YouTube's bot check lives on www.google.com: no need to open it
                raise FetchError(errors.BOT_CHECK, f"redirected to a bot check page ({_short(exc.url)})") from None
            raise FetchError(REFUSED_URL, f"not fetched: {exc.reason}") from None
        except HTTPError as exc:
            raise self._http_failure(url, exc) from None
        except OverBounds as exc:
            if exc.kind == "time":
                raise FetchError(errors.NETWORK, f"no complete answer within {self.request_timeout:g} s "
                                                 f"(--request-timeout) from {_short(url)}") from None
            if exc.announced is not None:
                raise FetchError(errors.ERROR, f"response announces {exc.announced} bytes, more than the "
                                               f"{self.max_bytes} allowed, from {_short(url)}") from None
            raise FetchError(errors.ERROR, f"response larger than {self.max_bytes} bytes from {_short(url)}") from None
        except NoSupportingHandlers as exc:
            if exc.unexpected_errors:  # a transport's bug, which yt-dlp's director only logs
                raise exc.unexpected_errors[0]
            raise FetchError(errors.ERROR, f"{errors.redact(str(exc))} ({_short(url)})") from None
        except (TransportError, http.client.HTTPException, OSError) as exc:
            cause = exc.cause if isinstance(exc, RequestError) and isinstance(exc.cause, BaseException) else exc
            raise FetchError(errors.NETWORK, f"{type(cause).__name__}: {errors.redact(str(cause)) or 'no detail'} "
                                             f"from {_short(url)}") from None
        except RequestError as exc:  # yt-dlp could not send it at all (its words say why)
            raise FetchError(errors.ERROR, f"{errors.redact(str(exc))} ({_short(url)})") from None
        problem = check(body) if check is not None else None
        if problem is not None:
            raise problem
        return body

    @staticmethod
    def _http_failure(url: str, exc) -> FetchError:
        """An error status as a FetchError, classified by its code and the start of its body."""
        from yt_dlp.networking.exceptions import TransportError

        response = exc.response
        snippet = ""
        try:
            snippet = response.read(2048).decode("utf-8", "replace")
        except (TransportError, OSError, ValueError, http.client.HTTPException):  # the error body is a hint only
            pass
        finally:
            response.close()
        where = response.url or url
        if "/sorry/" in where:
            return FetchError(errors.BOT_CHECK, f"redirected to a bot check page ({_short(where)})", exc.status)
        status = errors.classify_message(f"HTTP {exc.status} {exc.reason} {snippet}", exc.status)
        retry_after = parse_retry_after(response.get_header("Retry-After"))
        return FetchError(status, f"HTTP {exc.status} {exc.reason} from {_short(url)}", exc.status, retry_after)


def _short(url: str, limit: int = 120) -> str:
    """A URL for messages: credentials hidden, query cut."""
    url = errors.redact(url)
    return url if len(url) <= limit else url[:limit] + "..."
