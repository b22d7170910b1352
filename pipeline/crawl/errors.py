"""The crawl's status taxonomy and the mapping of real errors onto it.

A failure keeps its real cause: the message of the innermost exception that
started it (yt-dlp wraps the HTTP error in an ExtractorError in a DownloadError),
never a secondary error raised while handling it. Errors of a stage's output storage
(a full disk, a read-only or misplaced ``--out``) are no video's failure: they stop
the run with one sentence (``shards.errors.output_problem``).
"""
from __future__ import annotations

import re

from pipeline.runtime.budget import OVER_BUDGET as BUDGET_STATUS

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
# YouTube answered 200 with something that is not the file (an empty body, an HTML page):
# what it sends to a client it has quietly throttled, so it is retried like a 429.
BAD_RESPONSE = "bad_response"
# The track needs a PO token that this crawl could not provide (yt-dlp dropped it, or the
# URL is marked ``exp=xpe`` and YouTube sent an empty body): a provider plugin, cookies or a
# later run can fix it.
PO_TOKEN_REQUIRED = "po_token_required"
# A bound ran out (a video download past --max-video-bytes or --video-download-seconds): final.
# The same status as a video whose work ran out of its budget (pipeline.runtime.budget).
OVER_BUDGET = BUDGET_STATUS

# A URL the crawl's URL policy refused (pipeline.crawl.url_policy): never requested.
REFUSED_URL = "refused_url"

STATUSES = (OK, PARTIAL, NO_SUBTITLES, UNAVAILABLE, RATE_LIMITED, BOT_CHECK, NETWORK,
            SERVER_ERROR, BAD_RESPONSE, PO_TOKEN_REQUIRED, INVALID_ID, OVER_BUDGET, ERROR)
# Worth trying again later (--retry-failed); everything else is final. They apply to a
# whole video and to single tracks (``{lang}_status``) alike.
TRANSIENT = frozenset({RATE_LIMITED, BOT_CHECK, NETWORK, SERVER_ERROR, BAD_RESPONSE, PO_TOKEN_REQUIRED})
# Transient across runs but the same answer within one: asked once, never retried in the run. A track
# that needs a PO token gets an empty 200 every time until a token provider runs.
LATER_ONLY = frozenset({PO_TOKEN_REQUIRED})
# Refusals the request budget slows down for and the circuit breaker counts.
REFUSALS = frozenset({RATE_LIMITED, BOT_CHECK, BAD_RESPONSE})
# Statuses that always come with a sample (info.json and whatever tracks were found); an
# `error` video has one when its info dict was read (its track choices are kept).
WITH_SAMPLE = frozenset({OK, PARTIAL, NO_SUBTITLES})

# Per-track outcomes in the crawl's ``{lang}_status`` column besides the statuses above.
TRACK_OK = "ok"          # fetched, in the sample as <lang>.vtt (or .srt)
TRACK_NONE = "none"      # YouTube offers no track in this language
TRACK_NO_URL = "no_url"  # a track was chosen but none of its formats is a fetchable file

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
    r"unable to download (webpage|api page|json)|urlopen error|broken pipe|read operation|"
    r"operation too slow|could(n.t| not) (connect|resolve)|(recv|send) failure|empty reply from server",  # curl's
    re.I,
)
_SERVER = re.compile(r"\b50[0-4]\b|internal server error|bad gateway|service unavailable", re.I)
_INVALID = re.compile(r"incomplete youtube id|not a valid url|unsupported url", re.I)

_SECRET_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<cred>[^/@\s:]+(:[^\s]*)?)@", re.I)  # a password may hold "/" or "@"


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
    text = str(exc).replace("\r\n", "\n").replace("\r", "")  # yt-dlp's download errors hold a bare \r
    outer = redact(text).strip().splitlines()[0] if text.strip() else type(exc).__name__
    inner = redact(str(cause)).strip() or type(cause).__name__
    message = outer if cause is exc else f"{outer} [cause: {type(cause).__name__}: {inner}]"
    if isinstance(cause, (socket.timeout, TimeoutError, ConnectionError)):
        return NETWORK, message
    return classify_message(f"{outer} {inner}", http_status_of(cause)), message


# ---------------------------------------------------------------- yt-dlp's warnings

_WARNING_KINDS = (
    ("po_token", re.compile(r"po.?token", re.I)),
    ("js_runtime", re.compile(r"javascript runtime|challenge solving failed|signature solving failed|"
                              r"\bejs\b|challenge solver", re.I)),
    ("formats_missing", re.compile(r"formats may be missing|missing formats|only images are available", re.I)),
    ("sabr", re.compile(r"\bsabr\b", re.I)),
    ("age_restricted", re.compile(r"age.restricted|age.verification", re.I)),
    ("rate_limited", re.compile(r"\b429\b|rate.?limit|too many requests", re.I)),
    ("bot_check", _BOT),
    ("cookies", re.compile(r"cookie", re.I)),
    ("client", re.compile(r"client", re.I)),
)
_VIDEO_PREFIX = re.compile(r"^\[[\w:]+\] ?[A-Za-z0-9_-]{11}: ")


def warning_kind(message: str) -> str:
    """The kind of a yt-dlp warning, for counting (``po_token``, ``js_runtime``... or ``other``)."""
    for kind, pattern in _WARNING_KINDS:
        if pattern.search(message or ""):
            return kind
    return "other"


def warning_text(message: str, video_id: str | None = None) -> str:
    """A warning without the video it was about, so one problem seen on many videos reads once."""
    text = _VIDEO_PREFIX.sub("", redact(message or "").strip())
    if video_id:
        text = text.replace(video_id, "<id>")
    return text


def pot_missing_languages(message: str) -> tuple[bool, set | None]:
    """For yt-dlp's "missing subtitles ... a PO token was not provided" warning: (whether it is
    one, the languages it affects, None for all). It names the manual-subtitle languages,
    and automatic captions only by their number, which then affects every language."""
    if not re.search(r"missing subtitles languages because a PO token|subtitles require a PO Token", message or "", re.I):
        return False, set()
    m = re.search(r"Subtitles for these languages are missing: ([^.]*)\.", message)
    if m is None or re.search(r"Automatic captions for \d+ languages are missing", message):
        return True, None
    return True, {l.strip() for l in m.group(1).split(",") if l.strip()}
