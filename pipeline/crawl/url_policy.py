"""Which URLs the crawl may fetch: http(s) on YouTube's hosts, never this machine or its network.

An info dict names the URLs the crawl fetches (subtitle files, video formats), and an
info dict may come from a file anyone wrote. So every URL is checked before it is
requested, and again on every redirect: the scheme must be http or https, the host one
of YouTube's (``youtube.com``, ``youtu.be``, ``*.googlevideo.com``, ``*.ytimg.com``:
the hosts real info dicts name) unless the user allowed it with ``--allow-host``, and
every address the host resolves to must be a public one. The connection itself goes
only to an address that was checked (``UrlPolicy.connect``, or curl pinned to the checked
addresses: ``impersonate.py``), so a name that resolves differently the second time reaches
nothing it should not. Redirects are checked hop by hop (``ytdlp_requests.PolicyCheckedRH``).

A host the user allows (``host`` or ``host:port``) is their decision and is not checked
further: that is how tests and the demo reach the local stand-in for YouTube on
127.0.0.1. Nothing is allowed by default.
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline.crawl.errors import REFUSED_URL  # noqa: F401  (re-exported: a per-track or per-video status)
YOUTUBE_HOSTS = frozenset({"youtube.com", "youtu.be"})
YOUTUBE_DOMAINS = (".youtube.com", ".googlevideo.com", ".ytimg.com")
_SCHEMES = {"http": 80, "https": 443}


ALLOW_HINT = "--allow-host"  # in a refusal's reason only when allowing the host would lift it


def allowed_later(reason: str | None) -> bool:
    """Whether a refusal (a ``refused_url`` row's error) is one a setting can lift: a host that was not
    allowed. A scheme, an address on this machine's network or an info dict that is no video stay refused."""
    return ALLOW_HINT in (reason or "")


class UrlRefused(Exception):
    """A URL the crawl will not request; the message says why, in a phrase."""

    def __init__(self, url: str, reason: str):
        super().__init__(reason)
        self.url, self.reason = url, reason


def is_youtube_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host in YOUTUBE_HOSTS or host.endswith(YOUTUBE_DOMAINS)


def address_problem(address: str) -> str | None:
    """Why an IP address is no place to send a request (None for a public one)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    for what in ("loopback", "link_local", "unspecified", "multicast", "reserved", "private"):
        if getattr(ip, f"is_{what}"):
            return f"a {what.replace('_', '-')} address ({ip})"
    if not ip.is_global:  # shared (carrier-grade NAT) and other special-purpose ranges
        return f"a non-public address ({ip})"
    return None


def parse_allowed(text: str) -> str:
    """One ``--allow-host`` value as ``host`` or ``host:port`` (lower-case), or ValueError."""
    value = text.strip().lower()
    bad = ValueError(f"--allow-host {text!r} is not a host or host:port (e.g. 127.0.0.1:8000 or cdn.example.org)")
    if not value or any(c in value for c in "/@?#\\ "):
        raise bad
    parts = urlsplit(f"//{value}")
    try:
        port = parts.port
    except ValueError:
        raise bad from None
    if not parts.hostname or (port is None and value.rstrip("]").count(":") == 1):
        raise bad
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}" if port is not None else host


@dataclass(frozen=True)
class UrlPolicy:
    """The rule for one crawl: YouTube's hosts, plus the hosts the user allowed."""

    allowed: frozenset = frozenset()  # "host" (any port) or "host:port", as parse_allowed writes them
    resolve: object = socket.getaddrinfo

    @classmethod
    def allowing(cls, hosts) -> "UrlPolicy":
        return cls(frozenset(parse_allowed(h) for h in hosts or ()))

    def is_allowed(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        name = f"[{host}]" if ":" in host else host
        return name in self.allowed or f"{name}:{port}" in self.allowed

    def problem(self, url: str) -> str | None:
        """None when ``url`` may be requested, else why not. Resolves the host (no request)."""
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:
            return "not a valid URL"
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            return f"only http and https URLs are fetched (this one is {scheme or 'relative'}:)"
        if not host:
            return "the URL names no host"
        port = port or _SCHEMES[scheme]
        if self.is_allowed(host, port):
            return None
        if not is_youtube_host(host):
            return f"{host} is not a YouTube host ({ALLOW_HINT} {host} fetches from it)"
        return self._addresses_problem(host, port)

    def _addresses_problem(self, host: str, port: int) -> str | None:
        try:
            infos = self.resolve(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return None  # not resolvable now: the request fails as a network error, and is retried
        for info in infos:
            why = address_problem(info[4][0])
            if why is not None:
                return f"{host} resolves to {why}"
        return None

    def checked_addresses(self, host: str, port: int) -> list:
        """``host``'s addresses as resolved now (getaddrinfo's tuples), the only ones a connection may go to;
        UrlRefused when any of them is no place to send a request (OSError when it does not resolve)."""
        infos = self.resolve(host, port, type=socket.SOCK_STREAM)
        for info in infos:
            why = address_problem(info[4][0])
            if why is not None:
                raise UrlRefused(f"{host}:{port}", f"{host} resolves to {why}")
        return infos

    def connect(self, address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):
        """``socket.create_connection`` that reaches only checked addresses of ``address``'s host."""
        host, port = address
        if self.is_allowed(host, port):
            return socket.create_connection(address, timeout, source_address)
        infos = self.checked_addresses(host, port)
        last = OSError(f"{host} resolves to no address")
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        raise last


class _CheckedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, connect, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = connect


class _CheckedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, connect, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = connect


class CheckedHTTPHandler(urllib.request.HTTPHandler):
    """Connects with ``connect`` (default: ``policy.connect``, only to checked addresses)."""

    def __init__(self, policy: UrlPolicy, connect=None):
        super().__init__()
        self.policy, self.connect = policy, connect or policy.connect

    def http_open(self, req):
        return self.do_open(lambda *a, **kw: _CheckedHTTPConnection(*a, connect=self.connect, **kw), req)


class CheckedHTTPSHandler(urllib.request.HTTPSHandler):
    """Connects with ``connect`` (default: ``policy.connect``, only to checked addresses)."""

    def __init__(self, policy: UrlPolicy, connect=None, context=None):
        super().__init__(context=context)
        self.policy, self.connect = policy, connect or policy.connect

    def https_open(self, req):
        return self.do_open(lambda *a, **kw: _CheckedHTTPSConnection(*a, connect=self.connect, **kw), req,
                            context=self._context)
