"""HTTP fetching for the crawl: one request per file, retried politely.

Every request waits for the shared ``RequestBudget``. Transient failures (429,
5xx, resets, stalls, truncated bodies) are retried with exponential backoff and
full jitter; a ``Retry-After`` header is honoured. The error raised at the end
carries the real cause of the last attempt. A URL the ``UrlPolicy`` refuses (another
scheme or host, an address on this machine or its network, directly or by a redirect)
is never requested and fails for good as ``refused_url``.

One request (its redirects included) has ``request_timeout`` seconds in all, connecting and its
whole answer, however slowly the server sends it (``deadline.py``): a trickled answer is a ``network``
failure, retried like the others, and nothing of it is kept. A body is read in chunks up to
``max_bytes``; a longer one (or one announcing more) fails for good.
"""
from __future__ import annotations

import email.utils
import http.client
import http.cookiejar
import itertools
import logging
import math
import random
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from shards.members import TRACK_MAX_BYTES

from pipeline.crawl import errors
from pipeline.crawl.deadline import AnswerTooSlow, read_within_deadline
from pipeline.crawl.politeness import RequestBudget
from pipeline.crawl.url_policy import REFUSED_URL, UrlPolicy, UrlRefused, build_opener

log = logging.getLogger("mmp.fetch")
_CHUNK = 1 << 16  # bytes read at a time: a body is checked against its cap as it arrives
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


class Fetcher:
    """Fetches URLs through the shared budget, rotating proxies, with cookies if given."""

    def __init__(self, budget: RequestBudget, *, timeout: float = 20.0, request_timeout: float = 60.0,
                 policy: RetryPolicy | None = None, proxies: list[str] | None = None, cookies: str | None = None,
                 max_bytes: int = TRACK_MAX_BYTES, url_policy: UrlPolicy | None = None):
        self.budget = budget
        self.url_policy = url_policy or UrlPolicy()
        self.timeout = timeout                  # the longest silence of a connection
        self.request_timeout = request_timeout  # the longest a whole answer may take
        self._deadline = math.inf               # of the request in flight (monotonic time)
        self.policy = policy or RetryPolicy()
        self.max_bytes = max_bytes
        jar = None
        if cookies:
            jar = http.cookiejar.MozillaCookieJar(cookies)
            try:
                jar.load(ignore_discard=True, ignore_expires=True)
            except (OSError, http.cookiejar.LoadError) as exc:
                raise ValueError(f"cookie file {cookies} could not be loaded ({type(exc).__name__}); "
                                 f"export it in Netscape format") from None
        self._openers = []
        for proxy in proxies or [None]:
            cookie_handlers = [urllib.request.HTTPCookieProcessor(jar)] if jar is not None else []
            opener = build_opener(self.url_policy, *cookie_handlers, proxy=proxy)
            self._openers.append(read_within_deadline(opener, lambda: self._deadline))
        self._rotation = itertools.cycle(range(len(self._openers)))
        self.requests = 0

    def _once(self, url: str) -> bytes:
        opener = self._openers[next(self._rotation)]
        self.budget.acquire()
        self.requests += 1
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Language": "en-US,en;q=0.8"})
        self._deadline = time.monotonic() + self.request_timeout
        with opener.open(request, timeout=self.timeout) as response:
            final_url = response.geturl() or url
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                raise FetchError(errors.ERROR, f"response announces {int(length)} bytes, more than the "
                                               f"{self.max_bytes} allowed, from {_short(url)}")
            chunks, size = [], 0
            while chunk := response.read(_CHUNK):
                chunks.append(chunk)
                size += len(chunk)
                if size > self.max_bytes:
                    raise FetchError(errors.ERROR, f"response larger than {self.max_bytes} bytes from {_short(url)}")
            body = b"".join(chunks)
            if length is not None and length.isdigit() and int(length) != len(body):
                raise http.client.IncompleteRead(body, int(length) - len(body))
            if "/sorry/" in final_url:
                raise FetchError(errors.BOT_CHECK, f"redirected to a bot check page ({_short(final_url)})")
            return body

    def get(self, url: str, check=None) -> bytes:
        """The body of ``url``. ``check(body)`` may return a FetchError for a 200 that is not
        the file (an empty body, an HTML page): a transient one is retried like a 429."""
        why = self.url_policy.problem(url)
        if why is not None:
            raise FetchError(REFUSED_URL, f"not fetched: {why} ({_short(url)})")
        return with_retries(lambda: self._checked(url, check), self.policy, self.budget, count_retries=True)

    def _checked(self, url: str, check) -> bytes:
        """One request for ``url``, its failure (urllib's, or ``check``'s) as a FetchError."""
        try:
            body = self._once(url)
        except UrlRefused as exc:
            if "/sorry/" in exc.url:  # YouTube's bot check lives on www.google.com: no need to open it
                raise FetchError(errors.BOT_CHECK, f"redirected to a bot check page ({_short(exc.url)})") from None
            raise FetchError(REFUSED_URL, f"not fetched: {exc.reason} ({_short(exc.url)})") from None
        except urllib.error.HTTPError as exc:
            snippet = ""
            try:
                snippet = exc.read(2048).decode("utf-8", "replace")
            except (OSError, ValueError, http.client.HTTPException):  # the error body is a hint only
                pass
            status = errors.classify_message(f"HTTP {exc.code} {exc.reason} {snippet}", exc.code)
            retry_after = parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            raise FetchError(status, f"HTTP {exc.code} {exc.reason} from {_short(url)}", exc.code, retry_after) from None
        except (urllib.error.URLError, http.client.HTTPException, socket.timeout, TimeoutError,
                ConnectionError, OSError) as exc:
            cause = getattr(exc, "reason", exc)
            if isinstance(cause, AnswerTooSlow):
                raise FetchError(errors.NETWORK, f"no complete answer within {self.request_timeout:g} s "
                                                 f"(--request-timeout) from {_short(url)}") from None
            raise FetchError(errors.NETWORK, f"{type(cause).__name__}: {errors.redact(str(cause)) or 'no detail'} "
                                             f"from {_short(url)}") from None
        problem = check(body) if check is not None else None
        if problem is not None:
            raise problem
        return body


def _short(url: str, limit: int = 120) -> str:
    """A URL for messages: credentials hidden, query cut."""
    url = errors.redact(url)
    return url if len(url) <= limit else url[:limit] + "..."
