"""Requests sent as a current browser sends them: curl_cffi's impersonation, under the crawl's URL policy and bounds.

YouTube tells a script from a browser by more than its User-Agent: the TLS handshake, the HTTP/2
settings and the client hints a browser sends (``sec-ch-ua``...) give urllib away at once. yt-dlp
sends YouTube's subtitle files impersonating a browser (each subtitle format is marked
``'impersonate': True`` since 2025.07.21), and every request under ``--impersonate``; curl_cffi
(curl-impersonate) does the impersonating.

``CheckedCurlCffiRH`` is that transport for the crawl's policy layer (``ytdlp_requests.PolicyCheckedRH``):
one request per call as the request's browser (or the handler's), no redirect followed (the policy
layer follows each, checked), http and https only, and connected only to the addresses the URL
policy checked: curl is pinned to them and never resolves a name itself (without a proxy; a proxy
resolves for us, and a host the user allowed is theirs). The request's ``Bounds`` hold: our deadline
ends the wait for the answer and for each part of its body (curl's own timeouts are set a little
later, so they only end what is left), and the body comes through a small queue, counted against
the byte cap, so a server faster than its reader never fills memory. The socket timeout is curl's
connect timeout and its low-speed limit (as in yt-dlp's own curl handler): curl counts a connection
as silent until the body of its answer flows, so headers held back longer than that fail by it.
Cookies go through the request's cookie jar, a redirect's ``Set-Cookie`` included.

``impersonation_status`` says whether this machine can impersonate, and as which browser: yt-dlp's
own first choice (the first target of its table for the installed curl_cffi).
"""
from __future__ import annotations

import email.message
import http.client
import io
import math
import queue
import threading
import time
from typing import NamedTuple
from urllib.parse import urlsplit

from yt_dlp.networking.exceptions import CertificateVerifyError, ProxyError, SSLError, TransportError
from yt_dlp.networking.impersonate import ImpersonateRequestHandler, ImpersonateTarget
from yt_dlp.utils.networking import select_proxy

from pipeline.crawl.deadline import AnswerTooSlow
from pipeline.crawl.url_policy import UrlRefused
from pipeline.crawl.ytdlp_requests import Bounds, PolicyCheckedRH, _BoundedResponse, _short

FIX = 'pip install "yt-dlp[default,curl-cffi]" (or make install)'
_QUEUED = 32        # body chunks (curl's are up to 16 KiB) a transfer may hold before its reader takes them
_PATIENCE = 0.05    # seconds a waiting transfer sleeps before it looks again whether its reader hung up
_CURL_LATER = 0.5   # seconds curl's own timeouts run past our deadline: ours decides, curl's only cleans up
_PORTS = {"http": 80, "https": 443}

try:  # yt-dlp's table of the browsers the installed curl_cffi can be, best first
    from yt_dlp.networking._curlcffi import CurlCFFIRH as _YtdlpCurl
    _UNUSABLE = None
except ImportError as exc:  # not installed, or a version yt-dlp does not support
    _YtdlpCurl, _UNUSABLE = None, str(exc)


class Impersonation(NamedTuple):
    available: bool
    target: str | None  # the browser every request is sent as, e.g. "chrome-152:windows-10"
    detail: str         # curl_cffi's version and the browser, or why not and the fix


def best_target() -> ImpersonateTarget | None:
    """The browser requests are sent as (yt-dlp's first choice), None when curl_cffi cannot impersonate."""
    try:
        import curl_cffi  # noqa: F401  (a test may make it unimportable)
    except ImportError:
        return None
    targets = CheckedCurlCffiRH.supported_targets
    return targets[0] if _YtdlpCurl is not None and targets else None


def impersonation_status() -> Impersonation:
    """Whether the crawl can send its requests as a browser does, checked offline."""
    target = best_target()
    if target is not None:
        import curl_cffi

        return Impersonation(True, str(target), f"curl_cffi {curl_cffi.__version__}: requests are sent as {target}")
    try:
        import curl_cffi
    except ImportError:
        why = "curl_cffi is not installed"
    else:
        why = f"yt-dlp cannot use curl_cffi {curl_cffi.__version__} ({_UNUSABLE or 'it knows no browser of it'})"
    return Impersonation(False, None, f"{why}, so requests cannot be sent as a browser sends them; {FIX}")


class CheckedCurlCffiRH(PolicyCheckedRH, ImpersonateRequestHandler):
    """The curl_cffi transport: one request per call, as a browser, to checked addresses only, time and size bounded."""

    RH_NAME = "checked_curl_cffi"
    _SUPPORTED_IMPERSONATE_TARGET_MAP = _YtdlpCurl._SUPPORTED_IMPERSONATE_TARGET_MAP if _YtdlpCurl else {}

    def _check_extensions(self, extensions):
        super()._check_extensions(extensions)
        extensions.pop("impersonate", None)

    def _pinned(self, url: str) -> list[str] | None:
        """curl's RESOLVE entries for ``url``'s host: its checked addresses, for the name as the URL spells it
        and for any other (should curl spell it otherwise, it still resolves nothing); None for a host the
        user allowed."""
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or _PORTS[parts.scheme.lower()]
        if self.url_policy.is_allowed(host, port):
            return None
        try:
            infos = self.url_policy.checked_addresses(host, port)
        except UrlRefused as exc:  # the name resolves inward now
            self._refuse(url, f"{exc.reason} ({_short(url)})")
        except (OSError, UnicodeError) as exc:
            raise TransportError(cause=exc) from exc
        addresses = []
        for info in infos:
            address = f"[{info[4][0]}]" if ":" in info[4][0] else info[4][0]
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise TransportError(cause=OSError(f"{host} resolves to no address"))
        joined = ",".join(addresses)
        return [f"{host}:{port}:{joined}", f"*:{port}:{joined}"]

    def _curl_options(self, request, proxy: str | None, seconds: float) -> dict:
        from curl_cffi.const import CurlOpt

        silence = self._calculate_timeout(request)  # the longest a connection may stay silent
        later = seconds + _CURL_LATER
        options = {CurlOpt.FOLLOWLOCATION: 0, CurlOpt.PROTOCOLS_STR: "http,https",
                   CurlOpt.REDIR_PROTOCOLS_STR: "http,https", CurlOpt.TIMEOUT_MS: math.ceil(later * 1000),
                   CurlOpt.CONNECTTIMEOUT_MS: math.ceil(min(silence, later) * 1000)}
        if silence < seconds:
            options[CurlOpt.LOW_SPEED_LIMIT] = 1
            options[CurlOpt.LOW_SPEED_TIME] = math.ceil(silence)
        if not proxy:
            pinned = self._pinned(request.url)
            if pinned:
                options[CurlOpt.RESOLVE] = pinned
        return options

    def _send_once(self, request, bounds: Bounds):
        seconds, max_bytes = bounds.for_request()
        deadline = time.monotonic() + seconds
        proxy = select_proxy(request.url, self._get_proxies(request))
        target = self._get_request_target(request)
        headers = self._get_impersonate_headers(request) if target is not None else self._get_headers(request)
        jar = None if any(name.lower() == "cookie" for name in headers) else self._get_cookiejar(request)
        session = {"cookies": jar, "curl_options": self._curl_options(request, proxy, seconds), "trust_env": False,
                   "verify": self.verify, "interface": self.source_address, "allow_redirects": False,
                   "impersonate": self._SUPPORTED_IMPERSONATE_TARGET_MAP.get(target)}
        send = {"method": request.method, "url": request.url, "headers": headers, "data": request.data,
                "proxy": proxy, "timeout": None}
        transfer = _Transfer(session, send, deadline)
        if not transfer.answered.wait(max(0.0, deadline - time.monotonic())):
            transfer.close(wait=False)
            raise bounds.too_slow()
        if transfer.status is None or transfer.failed_before_body():
            transfer.close(wait=False)
            raise self._failure(transfer.error, deadline, bounds)
        length = transfer.headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > max_bytes:
            transfer.close(wait=False)
            raise bounds.too_large(int(length))
        response = _BoundedResponse(_CurlAnswer(transfer, request.url), bounds, max_bytes, self.log)
        response.extensions["impersonate"] = target
        return response

    @staticmethod
    def _failure(error: BaseException | None, deadline: float, bounds: Bounds) -> Exception:
        """What a transfer that failed before its answer raises, as yt-dlp's CurlCFFIRH names it."""
        from curl_cffi.const import CurlECode
        from curl_cffi.requests.exceptions import RequestException

        if not isinstance(error, RequestException):
            raise error or AssertionError("a curl transfer ended without an answer or an error")  # a bug
        code, text = error.code, _curl_text(error)
        if code == CurlECode.OPERATION_TIMEDOUT:
            return bounds.too_slow() if time.monotonic() >= deadline else TransportError(cause=TimeoutError(text))
        if code == CurlECode.PEER_FAILED_VERIFICATION:
            return CertificateVerifyError(cause=ConnectionError(text))
        if code == CurlECode.SSL_CONNECT_ERROR:
            return SSLError(cause=ConnectionError(text))
        if code == CurlECode.PROXY or (code in (CurlECode.RECV_ERROR, CurlECode.COULDNT_CONNECT) and "CONNECT" in text):
            return ProxyError(cause=ConnectionError(text))
        if code == CurlECode.PARTIAL_FILE:
            return TransportError(cause=http.client.IncompleteRead(b""))
        return TransportError(cause=ConnectionError(text))


def _curl_text(error) -> str:
    """curl's own words for ``error``: "(7) Failed to connect to ...", without curl_cffi's wrapping."""
    text = str(error).split(" See https://curl.se/", 1)[0]
    return text.split("curl: ", 1)[-1].strip()


class _Transfer:
    """One curl transfer in a thread of its own: its answer's status and headers, then its body, handed
    over through a small queue (curl waits while the queue is full; a reader that hung up stops it)."""

    _END = object()

    def __init__(self, session: dict, send: dict, deadline: float):
        self.chunks: queue.Queue = queue.Queue(maxsize=_QUEUED)
        self.answered = threading.Event()  # set at the first byte of the body, or when curl is done
        self.status: int | None = None
        self.reason: str | None = None
        self.headers = email.message.Message()
        self.error: BaseException | None = None
        self.deadline = deadline
        self._block: list[bytes] = []
        self._body_started = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(session, send), name="curl-transfer", daemon=True)
        self._thread.start()

    def _run(self, session: dict, send: dict) -> None:
        from curl_cffi.const import CurlOpt
        from curl_cffi.requests import Session

        session["curl_options"][CurlOpt.HEADERFUNCTION] = self._header_line
        try:
            with Session(**session) as s:  # a session of this thread's own, closed with the transfer
                s.request(**send, content_callback=self._body)
        except BaseException as exc:  # curl's error, or a bug: the reader raises it
            self.error = exc
        finally:
            self.answered.set()
            self._put(self._END)

    def _header_line(self, line: bytes) -> int:
        if line.startswith(b"HTTP/"):  # a new answer: after a proxy's to CONNECT, or an interim 1xx
            self._block = [line]
        elif line.strip():
            if line[:1] in (b" ", b"\t") and len(self._block) > 1:
                self._block[-1] = self._block[-1].rstrip(b"\r\n") + b" " + line.strip()
            else:
                self._block.append(line)
        elif self._block:
            self._take_headers()
        return len(line)

    def _take_headers(self) -> None:
        status_line, *lines = (line.decode("latin-1").strip() for line in self._block)
        parts = status_line.split(None, 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        self.reason = parts[2] if len(parts) > 2 else None
        self.headers = email.message.Message()
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                self.headers[name.strip()] = value.strip()

    def _body(self, chunk: bytes):
        from curl_cffi.curl import CURL_WRITEFUNC_ERROR

        self._body_started = True
        self.answered.set()
        return len(chunk) if self._put(chunk) else CURL_WRITEFUNC_ERROR

    def _put(self, item) -> bool:
        """Queue ``item``, waiting for room while the reader may still read; False once it cannot."""
        while not self._stop.is_set() and time.monotonic() < self.deadline + _CURL_LATER:
            try:
                self.chunks.put(item, timeout=_PATIENCE)
                return True
            except queue.Full:
                continue
        return False

    def failed_before_body(self) -> bool:
        return self.error is not None and not self._body_started

    def take(self) -> bytes | None:
        """The next part of the body, None at its end; AnswerTooSlow at the deadline, the transfer's error as
        ``OSError`` or ``http.client.HTTPException`` (``_BoundedResponse`` turns them into yt-dlp's)."""
        left = self.deadline - time.monotonic()
        try:
            if left <= 0:
                raise queue.Empty
            item = self.chunks.get(timeout=left)
        except queue.Empty:
            raise AnswerTooSlow("the answer was not complete by the request's deadline") from None
        if item is not self._END:
            return item
        self.chunks.put(item)  # later reads see the end too
        if self.error is None:
            return None
        from curl_cffi.const import CurlECode
        from curl_cffi.requests.exceptions import RequestException

        if not isinstance(self.error, RequestException):
            raise self.error  # a bug
        text = _curl_text(self.error)
        if self.error.code == CurlECode.PARTIAL_FILE:
            raise http.client.IncompleteRead(b"") from None
        if self.error.code == CurlECode.OPERATION_TIMEDOUT:
            if time.monotonic() >= self.deadline:
                raise AnswerTooSlow(text) from None
            raise TimeoutError(text) from None
        raise ConnectionError(text) from None

    def close(self, wait: bool = True) -> None:
        """Stop the transfer; with ``wait``, until it has ended (curl's timeout bounds that), so that the
        cookies its answer set are in the jar before the next request (a redirect's next hop)."""
        self._stop.set()
        while True:
            try:
                self.chunks.get_nowait()
            except queue.Empty:
                break
        if wait:
            self._thread.join(max(0.0, self.deadline + 2 * _CURL_LATER - time.monotonic()))


class _CurlAnswer(io.RawIOBase):
    """A transfer's answer as ``_BoundedResponse`` reads it: ``read(n)`` gives n bytes unless the body ends first."""

    def __init__(self, transfer: _Transfer, url: str):
        super().__init__()
        self._transfer, self._rest, self._ended = transfer, b"", False
        self.url, self.status, self.reason, self.headers = url, transfer.status, transfer.reason, transfer.headers

    def readable(self) -> bool:
        return True

    def read(self, size=-1) -> bytes:
        if size is None or size < 0:
            size = math.inf
        parts, have = [self._rest], len(self._rest)
        while have < size and not self._ended:
            chunk = self._transfer.take()
            if chunk is None:
                self._ended = True
            else:
                parts.append(chunk)
                have += len(chunk)
        data = b"".join(parts)
        cut = len(data) if size == math.inf else int(size)
        data, self._rest = data[:cut], data[cut:]
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._transfer.close()
        super().close()
