"""How the crawl presents itself to YouTube: the user's cookie file, proxies and PO tokens, checked offline.

All are secrets: what is reported about them is counts, cookie names, expiry dates,
hosts and ports, never a cookie value, a proxy password or a token, and an error names the
user's own path (never a temporary copy) so they know which file to fix.

A cookie file is read by the loader yt-dlp uses (``yt_dlp.cookies.YoutubeDLCookieJar``)
and by the one the subtitle fetcher uses (``http.cookiejar.MozillaCookieJar``, see
``fetch.py``): the crawl opens it both ways, so a file is accepted only if both accept it.
"""
from __future__ import annotations

import contextlib
import http.cookiejar
import io
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

from shards.errors import UserError

from pipeline.crawl import errors

# Cookies a signed-in YouTube session carries; the PAPISID pair is what yt-dlp falls back to
# when SAPISID is missing (its YoutubeBaseInfoExtractor._get_sid_cookies).
LOGIN_COOKIES = ("SID", "HSID", "SSID", "APISID", "SAPISID", "__Secure-1PSID", "__Secure-3PSID",
                 "__Secure-1PAPISID", "__Secure-3PAPISID", "LOGIN_INFO")
_SAPISIDS = ("SAPISID", "__Secure-1PAPISID", "__Secure-3PAPISID")
# Every request of the crawl, yt-dlp's too, goes through the URL policy's own HTTP transport
# (pipeline.crawl.ytdlp_requests), which reaches the web through an http:// proxy only.
PROXY_SCHEMES = ("http",)
_EXPORT_HINT = "export it again from a browser signed in to youtube.com in Netscape (cookies.txt) format"


class CookieFileError(UserError, ValueError):
    """The cookie file cannot be used; the message names the user's path, never its contents."""


class ProxyError(UserError, ValueError):
    """A proxy URL cannot be used; the message never holds its password."""


@dataclass(frozen=True)
class CookieSummary:
    path: str
    total: int                   # every cookie yt-dlp loaded
    youtube: int                 # of them, for youtube.com or google.com
    login: tuple                 # login cookie names present (LOGIN_COOKIES order)
    earliest_expiry: datetime | None  # the first login cookie to expire; None: only session cookies
    expired: tuple               # login cookies already past their expiry
    logged_in: bool              # yt-dlp's own test: LOGIN_INFO and a SAPISID sent to www.youtube.com


def _is_youtube(domain: str) -> bool:
    host = domain.lstrip(".").lower()
    return any(host == d or host.endswith("." + d) for d in ("youtube.com", "google.com"))


def _load(jar, path: str) -> int:
    """Load ``jar`` from ``path``; the number of lines yt-dlp skipped as malformed."""
    # yt-dlp prints each line it skips, cookie value and all, to stderr: keep that out of the
    # terminal and count the lines instead.
    noise = io.StringIO()
    try:
        with contextlib.redirect_stderr(noise):
            jar.load(ignore_discard=True, ignore_expires=True)
    except UnicodeDecodeError:
        raise CookieFileError(f"cookie file {path} is not a text file; {_EXPORT_HINT}") from None
    except http.cookiejar.LoadError:
        raise CookieFileError(f"cookie file {path} is not in Netscape cookies.txt format; {_EXPORT_HINT}") from None
    except OSError as exc:
        raise CookieFileError(f"cookie file {path} cannot be read ({exc.strerror or type(exc).__name__}); "
                              "check its permissions") from None
    return noise.getvalue().count("skipping cookie file entry")


def inspect_cookies(path, now: float | None = None) -> CookieSummary:
    """What the cookie file at ``path`` gives the crawl; CookieFileError if the crawl cannot use it."""
    from yt_dlp.cookies import YoutubeDLCookieJar

    shown = os.fspath(path)
    if not os.path.isfile(shown):
        raise CookieFileError(f"cookie file {shown} does not exist or is not a file; {_EXPORT_HINT}")
    jar = YoutubeDLCookieJar(shown)
    skipped = _load(jar, shown)
    if skipped:
        raise CookieFileError(f"cookie file {shown} has {skipped} line(s) that are not cookies.txt entries "
                              f"(7 tab-separated fields); {_EXPORT_HINT}")
    _load(http.cookiejar.MozillaCookieJar(shown), shown)  # the subtitle fetcher's reading of it

    now = time.time() if now is None else now
    ours = [c for c in jar if _is_youtube(c.domain)]
    login = [c for c in ours if c.name in LOGIN_COOKIES]
    expiries = [c.expires for c in login if c.expires]
    sent = {c.name for c in jar.get_cookies_for_url("https://www.youtube.com")}
    return CookieSummary(
        path=shown, total=len(jar), youtube=len(ours),
        login=tuple(n for n in LOGIN_COOKIES if any(c.name == n for c in login)),
        earliest_expiry=datetime.fromtimestamp(min(expiries), timezone.utc) if expiries else None,
        expired=tuple(n for n in LOGIN_COOKIES if any(c.name == n and c.expires and c.expires <= now for c in login)),
        logged_in="LOGIN_INFO" in sent and any(n in sent for n in _SAPISIDS),
    )


def cookie_level(summary: CookieSummary, now: float | None = None) -> tuple[str, str]:
    """("ok" | "warn", one line about ``summary``) for the crawl's readiness check."""
    now = time.time() if now is None else now
    head = f"{summary.total} cookies, {summary.youtube} for YouTube/Google"
    if not summary.youtube:
        return "warn", f"{head}: none will reach YouTube; {_EXPORT_HINT}"
    if summary.expired:
        return "warn", f"{head}; login cookies expired: {', '.join(summary.expired)}; sign in again and re-export"
    if not summary.logged_in:
        return "warn", f"{head}; not signed in (yt-dlp needs LOGIN_INFO and SAPISID for youtube.com)"
    if summary.earliest_expiry is None:
        return "ok", f"{head}; signed in ({', '.join(summary.login)}), session cookies only"
    days = int((summary.earliest_expiry.timestamp() - now) // 86400)
    when = f"{summary.earliest_expiry:%Y-%m-%d} (in {days} days)"
    if days < 7:
        return "warn", f"{head}; signed in, but the first login cookie expires {when}; re-export soon"
    return "ok", f"{head}; signed in ({', '.join(summary.login)}), first login expiry {when}"


def mask_url(url: str) -> str:
    """``url`` with any credentials before its host hidden."""
    # Everything before the last "@" of the authority is credentials, whatever characters a
    # password holds ("@", "/" and ":" included); errors.redact then covers the usual form.
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return errors.redact(f"{scheme}{sep}{rest}" if sep else url)


def parse_proxy(url: str) -> str:
    """Check one proxy URL; returns it for display with the credentials hidden.

    The URL itself (credentials and all) is what goes to yt-dlp; only this form is shown.
    """
    shown = mask_url(url.strip())
    form = "write it as http://[USER:PASSWORD@]HOST:PORT, e.g. http://127.0.0.1:3128"
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ProxyError(f"proxy {shown} has no valid host and port; {form}") from None
    scheme = parts.scheme.lower()
    if scheme not in PROXY_SCHEMES:
        raise ProxyError(f"proxy {shown} has scheme {scheme or '(none)'!r}: the crawl's requests all go through "
                         f"its URL policy's HTTP transport, which uses http:// proxies only; {form}")
    if not parts.hostname or port is None:
        raise ProxyError(f"proxy {shown} needs both a host and a port; {form}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyError(f"proxy {shown} has a path or query after the port; {form}")
    return shown


def proxy_level(proxies) -> tuple[str, str]:
    """("ok" | "fail", one line about the proxies) for the crawl's readiness check."""
    if not proxies:
        return "ok", "none: requests leave from this machine's own address"
    shown = []
    for proxy in proxies:
        try:
            shown.append(parse_proxy(proxy))
        except ProxyError as exc:
            return "fail", str(exc)
    return "ok", f"{len(shown)} to rotate: {', '.join(shown)}"


_SECRET_ARG = re.compile(r"(?i)^(po_token|visitor_data|data_sync_id|.*token.*|.*password.*)$")


def describe_args(extractor_args: dict) -> str:
    """Extractor args for display, with token-like values hidden."""
    parts = []
    for ie_key, args in extractor_args.items():
        shown = "; ".join(f"{k}=(hidden)" if _SECRET_ARG.match(k) else f"{k}={','.join(map(mask_url, v))}"
                          for k, v in args.items())
        parts.append(f"{ie_key}: {shown}")
    return " | ".join(parts)


def mask_arg_text(text: str) -> str:
    """An --extractor-args value for an error message, token-like values hidden."""
    return re.sub(r"(?i)((?:po_token|visitor_data|data_sync_id|[\w-]*token[\w-]*)=)[^;]*", r"\1(hidden)",
                  mask_url(text))
