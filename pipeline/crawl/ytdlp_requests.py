"""yt-dlp's requests under the crawl's URL policy and bounds: the only request handlers of its YoutubeDLs.

yt-dlp sends every request of an extraction or a download (pages, APIs, subtitle and video
files, HLS playlists and segments, DASH fragments) through ``YoutubeDL.urlopen``, which hands it
to the request handlers of the YoutubeDL's request director. ``CheckedYoutubeDL`` is a
YoutubeDL whose director holds only the checked transports below, so nothing yt-dlp asks for leaves
unchecked, and which downloads only with yt-dlp's native downloaders (an external program such as
ffmpeg would fetch URLs itself, beyond any check). The crawl's own subtitle fetcher (``fetch.py``)
sends its requests through one too.

The policy is one layer and the transport another. ``PolicyCheckedRH`` checks each URL with the
crawl's ``UrlPolicy`` before anything is sent, follows redirects itself, one hop at a time, each
hop checked the same way, and keeps what it refused or cut short in a ``RequestLog``; a transport
(``_send_once``) sends exactly one request, follows no redirect, connects only to addresses the
policy checked and honours the ``Bounds``: a time bound on the whole request (connecting, headers
and body, so a server trickling a byte per second cannot hold a worker: ``deadline.py``, whose deadline
never passes the end of the totals, so a download of many segments stops when its own time is up) and
a cap on the bytes of an answer.
``CheckedUrllibRH`` is that transport over urllib; ``impersonate.CheckedCurlCffiRH`` the one over curl_cffi,
which sends each request as a current browser does (its TLS handshake, HTTP/2 settings and headers), as yt-dlp
itself sends YouTube's subtitle files. Where curl_cffi can impersonate, a ``CheckedYoutubeDL`` sends every
request through it (YoutubeDL's ``impersonate`` set to the best browser yt-dlp knows), and its urllib
transport takes none of them; without curl_cffi (or told not to impersonate) the urllib transport sends all.
"""
from __future__ import annotations

import abc

import functools
import http.client
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from yt_dlp import YoutubeDL
from yt_dlp.networking.common import Features, RequestHandler, Response
from yt_dlp.networking.exceptions import HTTPError, RequestError, TransportError, UnsupportedRequest
from yt_dlp.networking.impersonate import ImpersonateRequestHandler
from yt_dlp.utils.networking import select_proxy

from pipeline.crawl.deadline import AnswerTooSlow, read_within_deadline
from pipeline.crawl.errors import redact
from pipeline.crawl.url_policy import CheckedHTTPHandler, CheckedHTTPSHandler, UrlPolicy, UrlRefused

MAX_REDIRECTS = 10
_REDIRECTS = (301, 302, 303, 307, 308)


class RequestRefused(RequestError):
    """The policy refused a URL (the first or a redirect); nothing was sent to it."""

    def __init__(self, url: str, reason: str):
        super().__init__(reason)
        self.url, self.reason = url, reason


class OverBounds(TransportError):
    """A request ran past its time bound (``kind`` "time") or an answer past its byte cap ("size", with the
    length it ``announced``, if that was the reason); what came is dropped."""

    def __init__(self, msg: str, kind: str, announced: int | None = None):
        super().__init__(msg)
        self.kind, self.announced = kind, announced


@dataclass
class Bounds:
    """What requests through one handler may spend: each request, and all of them together
    (``total_*``, e.g. every request of one video's download). ``*_flag`` name the settings in messages."""

    seconds: float                      # one request, from connecting to its last byte
    max_bytes: int                      # one answer's body
    total_seconds: float | None = None
    total_bytes: int | None = None
    seconds_flag: str = "the request time bound"
    bytes_flag: str = "the answer size cap"
    _started: float = field(default_factory=time.monotonic)
    _spent: int = 0

    def for_request(self) -> tuple[float, int]:
        """(seconds, bytes) the next request may use; OverBounds when the totals are spent."""
        seconds, size = self.seconds, self.max_bytes
        if self.total_seconds is not None:
            seconds = min(seconds, self.total_seconds - (time.monotonic() - self._started))
        if self.total_bytes is not None:
            size = min(size, self.total_bytes - self._spent)
        if seconds <= 0:
            raise self.too_slow()
        return seconds, size

    def spend(self, n: int) -> None:
        self._spent += n

    def too_slow(self) -> OverBounds:
        limit = self.total_seconds if self.total_seconds is not None else self.seconds
        return OverBounds(f"took longer than {self.seconds_flag} {limit:g} s", "time")

    def too_large(self, announced: int | None = None) -> OverBounds:
        limit = self.total_bytes if self.total_bytes is not None else self.max_bytes
        return OverBounds(f"is larger than {self.bytes_flag} {limit} bytes", "size", announced)


@dataclass
class RequestLog:
    """What a handler refused or cut short, kept apart from yt-dlp's error handling (which may
    skip a failed fragment, or wrap the cause), so the crawl decides on what happened."""

    refused: list = field(default_factory=list)    # RequestRefused
    exceeded: list = field(default_factory=list)   # OverBounds

    def clear(self) -> None:
        self.refused.clear()
        self.exceeded.clear()


def _short(url: str, limit: int = 80) -> str:
    url = redact(url)
    return url if len(url) <= limit else url[:limit] + "..."


def _redirect_method(method: str, code: int) -> str:
    if code == 303 and method != "HEAD" or code in (301, 302) and method == "POST":
        return "GET"
    return method


class PolicyCheckedRH(RequestHandler):
    """The policy layer: every URL checked before it is sent, redirects followed here, hop by hop."""

    _SUPPORTED_URL_SCHEMES = None  # the policy decides, and says why
    _SUPPORTED_PROXY_SCHEMES = ("http",)
    _SUPPORTED_FEATURES = (Features.ALL_PROXY, Features.NO_PROXY)

    def __init__(self, *, url_policy: UrlPolicy, bounds=None, log: RequestLog | None = None, **kwargs):
        super().__init__(**kwargs)
        self.url_policy = url_policy
        self.bounds = bounds  # a Bounds shared by every request, or a function making each request's own
        self.log = log if log is not None else RequestLog()

    def _check_extensions(self, extensions):
        super()._check_extensions(extensions)
        for name in ("cookiejar", "timeout", "legacy_ssl", "keep_header_casing"):
            extensions.pop(name, None)

    def _refuse(self, url: str, reason: str):
        refused = RequestRefused(url, reason)
        self.log.refused.append(refused)
        raise refused

    def _check(self, url: str, redirected: bool = False) -> None:
        why = self.url_policy.problem(url)
        if why is not None:
            self._refuse(url, f"redirected to {_short(url)}: {why}" if redirected else f"{why} ({_short(url)})")

    def _validate(self, request):
        super()._validate(request)
        self._check(request.url)

    def _bounds(self) -> Bounds:
        if callable(self.bounds):
            return self.bounds()
        return self.bounds or Bounds(seconds=self.timeout * 6, max_bytes=256 << 20)

    def _send(self, request):
        bounds = self._bounds()
        try:
            for hop in range(MAX_REDIRECTS + 1):
                self._check(request.url, redirected=hop > 0)
                response = self._send_once(request, bounds)
                location = response.get_header("Location")
                if response.status not in _REDIRECTS or not location:
                    break
                response.close()
                request = self._redirected(request, response.status, urljoin(request.url, location))
            else:
                raise HTTPError(response, redirect_loop=True)
        except OverBounds as exc:
            self.log.exceeded.append(exc)
            raise
        if not 200 <= response.status < 300:
            raise HTTPError(response)
        return response

    @staticmethod
    def _redirected(request, code: int, url: str):
        new = request.copy()
        method = _redirect_method(request.method, code)
        if method != request.method:
            new.data = None
            for name in ("Content-Length", "Content-Type"):
                new.headers.pop(name, None)
        new.method = method
        new.headers.pop("Cookie", None)  # the cookie jar adds what belongs to the new host
        if urlsplit(url).netloc != urlsplit(request.url).netloc:
            new.headers.pop("Authorization", None)
        new.url = url
        return new

    @abc.abstractmethod
    def _send_once(self, request, bounds: Bounds) -> Response:
        """Send ``request`` (already checked) and return its answer as it is: no redirect followed,
        connecting only to addresses the policy checked, within ``bounds``. Each transport defines it."""


class _BoundedResponse(Response):
    """An answer read within its request's time bound (``deadline.py``) and byte cap."""

    def __init__(self, raw, bounds: Bounds, max_bytes: int, log: RequestLog):
        super().__init__(fp=raw, url=raw.url, headers=raw.headers, status=raw.status, reason=raw.reason)
        self._bounds, self._left, self._log = bounds, max_bytes, log

    def _over(self, exc: OverBounds) -> OverBounds:
        self._log.exceeded.append(exc)
        self.close()
        return exc

    def read(self, amt=None):
        if self.closed:
            return b""
        want = self._left + 1 if amt is None or amt < 0 else min(amt, self._left + 1)
        try:
            data = self.fp.read(want)
        except AnswerTooSlow:
            raise self._over(self._bounds.too_slow()) from None
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(cause=exc) from exc
        self._left -= len(data)
        self._bounds.spend(len(data))
        if self._left < 0:
            raise self._over(self._bounds.too_large())
        if not data or amt is None:
            self.close()
        return data


class CheckedUrllibRH(PolicyCheckedRH):
    """The urllib transport: one request per call, to checked addresses only, time and size bounded."""

    RH_NAME = "checked_urllib"

    def __init__(self, *, impersonate=None, **kwargs):
        super().__init__(**kwargs)
        self.impersonate = impersonate  # set when the YoutubeDL impersonates: then the curl transport sends

    def _validate(self, request):
        if self.impersonate is not None:
            raise UnsupportedRequest("every request is sent as a browser (by the curl_cffi transport)")
        super()._validate(request)

    def _send_once(self, request, bounds: Bounds) -> Response:
        seconds, max_bytes = bounds.for_request()
        deadline = time.monotonic() + seconds  # never past the totals' end: a download stops with its time
        proxy = select_proxy(request.url, self._get_proxies(request))
        connect = socket.create_connection if proxy else self.url_policy.connect  # a proxy resolves for us
        opener = urllib.request.OpenerDirector()
        for handler in (urllib.request.ProxyHandler({"http": proxy, "https": proxy} if proxy else {}),
                        CheckedHTTPHandler(self.url_policy, connect=connect),
                        CheckedHTTPSHandler(self.url_policy, connect=connect,
                                            context=self._make_sslcontext(request.extensions.get("legacy_ssl"))),
                        urllib.request.HTTPCookieProcessor(self._get_cookiejar(request)),
                        urllib.request.UnknownHandler()):
            opener.add_handler(handler)
        read_within_deadline(opener, lambda: deadline)
        raw_request = urllib.request.Request(request.url, data=request.data, headers=self._get_headers(request),
                                             method=request.method)
        try:
            raw = opener.open(raw_request, timeout=min(self._calculate_timeout(request), seconds))
        except UrlRefused as exc:  # the name resolved inward when connecting
            self._refuse(request.url, f"{exc.reason} ({_short(request.url)})")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            cause = getattr(exc, "reason", exc)
            if isinstance(cause, AnswerTooSlow):
                raise bounds.too_slow() from None
            if isinstance(cause, UrlRefused):
                self._refuse(request.url, f"{cause.reason} ({_short(request.url)})")
            raise TransportError(cause=exc) from exc
        length = raw.headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > max_bytes:
            raw.close()
            raise bounds.too_large(int(length))
        return _BoundedResponse(raw, bounds, max_bytes, self.log)


_NATIVE = ("HttpFD", "HlsFD", "DashSegmentsFD")  # yt-dlp's own downloaders, every request through urlopen


def _prefer_impersonation(handler, request) -> int:
    return 1000 if isinstance(handler, ImpersonateRequestHandler) else 0


class CheckedYoutubeDL(YoutubeDL):
    """A YoutubeDL whose every request passes the URL policy, downloading natively only, sent as a browser
    (``CheckedCurlCffiRH``) where curl_cffi can and ``impersonate`` is on, else by ``CheckedUrllibRH``.
    ``impersonating`` names the browser (e.g. ``chrome-152:windows-10``), or is None."""

    def __init__(self, params: dict, url_policy: UrlPolicy, bounds=None, log: RequestLog | None = None,
                 impersonate: bool = True):
        self.request_log = log if log is not None else RequestLog()
        checked = {"url_policy": url_policy, "bounds": bounds, "log": self.request_log}
        self._checked_handlers = [functools.partial(CheckedUrllibRH, **checked)]
        self.impersonating = None
        if impersonate:
            from pipeline.crawl.impersonate import CheckedCurlCffiRH, best_target

            target = best_target()
            if target is not None:
                self._checked_handlers.append(functools.partial(CheckedCurlCffiRH, **checked))
                self.impersonating = str(target)
                params = {"impersonate": target, **params}  # yt-dlp's --impersonate: every request
        super().__init__({**params, "external_downloader": {"default": "native"}, "skip_unavailable_fragments": False})

    @functools.cached_property
    def _request_director(self):
        return self.build_request_director(self._checked_handlers, [_prefer_impersonation])

    def dl(self, name, info, subtitle=False, test=False):
        from yt_dlp.downloader import get_suitable_downloader

        downloader = get_suitable_downloader(dict(info), self.params, to_stdout=(name == "-"))
        if getattr(downloader, "__name__", None) not in _NATIVE:
            protocol = info.get("protocol") or "?"
            refused = RequestRefused(info.get("url") or "", f"protocol {protocol} would be fetched by "
                                     f"{getattr(downloader, '__name__', 'no downloader')}, outside the URL checks")
            self.request_log.refused.append(refused)
            raise refused
        return super().dl(name, info, subtitle, test)
