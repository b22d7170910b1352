"""The crawl's status taxonomy and the mapping of real errors onto it.

A failure keeps its real cause: the message of the innermost exception that
started it (yt-dlp wraps the HTTP error in an ExtractorError in a DownloadError),
never a secondary error raised while handling it.
"""
from __future__ import annotations

import re

OK = "ok"
PARTIAL = "partial"
NO_SUBTITLES = "no_subtitles"
UNAVAILABLE = "unavailable"
RATE_LIMITED = "rate_limited"
BOT_CHECK = "bot_check"
NETWORK = "network"
SERVER_ERROR = "server_error"
INVALID_ID = "invalid_id"
ERROR = "error"

STATUSES = (OK, PARTIAL, NO_SUBTITLES, UNAVAILABLE, RATE_LIMITED, BOT_CHECK, NETWORK,
            SERVER_ERROR, INVALID_ID, ERROR)
# Worth trying again later (--retry-failed); everything else is final.
TRANSIENT = frozenset({RATE_LIMITED, BOT_CHECK, NETWORK, SERVER_ERROR})
# Statuses for which a sample (info.json and whatever tracks were found) is written.
WITH_SAMPLE = frozenset({OK, PARTIAL, NO_SUBTITLES})

_BOT = re.compile(r"not a bot|confirm you.re not a robot|unusual traffic|captcha|/sorry/", re.I)
_RATE = re.compile(r"\b429\b|too many requests|rate.?limit|try again later", re.I)
_UNAVAILABLE = re.compile(
    r"video unavailable|private video|has been removed|no longer available|members.only|"
    r"not available in your country|not made this video available|account .*terminated|"
    r"confirm your age|age.restricted|inappropriate|copyright|is not available|"
    r"this video is unavailable|premieres in|join this channel|\b404\b|\b410\b|not found",
    re.I,
)
_NETWORK = re.compile(
    r"timed? ?out|connection (reset|refused|aborted)|remote end closed|incompleteread|"
    r"name resolution|network is unreachable|temporary failure|eof occurred|ssl|"
    r"unable to download (webpage|api page|json)|urlopen error|broken pipe|read operation",
    re.I,
)
_SERVER = re.compile(r"\b50[0-4]\b|internal server error|bad gateway|service unavailable", re.I)
_INVALID = re.compile(r"incomplete youtube id|not a valid url|unsupported url", re.I)

_SECRET_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<cred>[^/@\s:]+(:[^/@\s]*)?)@", re.I)


def redact(text: str) -> str:
    """Hide credentials in URLs (``http://user:pass@proxy`` -> ``http://***@proxy``)."""
    return _SECRET_URL.sub(lambda m: f"{m.group('scheme')}***@", text or "")


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception behind yt-dlp's wrappers and Python's chaining."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = None
        exc_info = getattr(exc, "exc_info", None)
        if isinstance(exc_info, tuple) and len(exc_info) > 1 and isinstance(exc_info[1], BaseException):
            inner = exc_info[1]
        if inner is None and isinstance(getattr(exc, "cause", None), BaseException):
            inner = exc.cause
        if inner is None and exc.__cause__ is not None:
            inner = exc.__cause__
        if inner is None or inner is exc:
            break
        exc = inner
    return exc


def classify_message(message: str, http_status: int | None = None) -> str:
    """Map an error message (and an HTTP status, if known) to a status of the taxonomy."""
    if http_status == 429:
        return BOT_CHECK if _BOT.search(message or "") else RATE_LIMITED
    if _BOT.search(message or ""):
        return BOT_CHECK
    if http_status is not None:
        if http_status >= 500:
            return SERVER_ERROR
        if http_status in (404, 410):
            return UNAVAILABLE
        if http_status == 403:
            return ERROR
    if _INVALID.search(message or ""):
        return INVALID_ID
    if _RATE.search(message or ""):
        return RATE_LIMITED
    if _UNAVAILABLE.search(message or ""):
        return UNAVAILABLE
    if _SERVER.search(message or ""):
        return SERVER_ERROR
    if _NETWORK.search(message or ""):
        return NETWORK
    return ERROR


def http_status_of(exc: BaseException) -> int | None:
    for attr in ("status", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    response = getattr(exc, "response", None)
    value = getattr(response, "status", None)
    return value if isinstance(value, int) else None


def classify_exception(exc: BaseException) -> tuple[str, str]:
    """(status, message) for an exception from yt-dlp or the network, from its real cause."""
    import socket

    cause = root_cause(exc)
    outer = redact(str(exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    inner = redact(str(cause)).strip() or type(cause).__name__
    message = outer if cause is exc else f"{outer} [cause: {type(cause).__name__}: {inner}]"
    if isinstance(cause, (socket.timeout, TimeoutError, ConnectionError)):
        return NETWORK, message
    return classify_message(f"{outer} {inner}", http_status_of(cause)), message
