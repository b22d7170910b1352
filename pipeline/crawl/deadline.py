"""A total time limit for one HTTP request: connecting, the TLS handshake, status line, headers and body.

A socket timeout bounds one silence, not a whole answer: a server that sends a byte every few
seconds never trips it, and holds its client for as long as it likes. Here every wait of a
request (connecting, the handshake, each read of the answer) is given at most the time left until
the request's deadline (and never longer than the socket timeout at a time), so a trickled answer
fails with ``AnswerTooSlow`` once the deadline passes. No thread watches the request: each blocking
call simply cannot outlast the deadline, plain or TLS (whose socket reads and handshake honour the
socket timeout as a total), directly or through a proxy's tunnel.

``read_within_deadline(opener, deadline)`` fits an opener's HTTP(S) handlers with this: each
connection they open works against the monotonic time ``deadline()`` returns when the connection
is made (the caller sets it per request, redirects and all). The handlers keep their own way of
connecting (the URL policy's checked connections, proxies, tunnels); only how long each wait may
last changes.
"""
from __future__ import annotations

import functools
import http.client
import io
import time
import urllib.request


class AnswerTooSlow(TimeoutError):
    """The request was not complete by its deadline."""


def _too_slow() -> AnswerTooSlow:
    return AnswerTooSlow("the answer was not complete by the request's deadline")


def _time_left(deadline: float, timeout=None) -> float:
    """Seconds one wait may last: what is left until ``deadline``, no more than ``timeout`` (a number,
    else unbounded); AnswerTooSlow when nothing is left."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise _too_slow()
    return min(timeout, left) if isinstance(timeout, (int, float)) else left


class _DeadlineReader(io.RawIOBase):
    """The bytes of a socket, each read given only the time left until ``deadline``."""

    def __init__(self, sock, deadline: float):
        self._sock = sock
        self._per_read = sock.gettimeout()  # the socket timeout: the longest single silence
        self._raw = sock.makefile("rb", buffering=0)  # keeps the socket open while the answer is read
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self._sock.settimeout(_time_left(self._deadline, self._per_read))
        try:
            return self._raw.readinto(buffer)
        except TimeoutError:
            if time.monotonic() >= self._deadline:
                raise _too_slow() from None
            raise

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class DeadlineResponse(http.client.HTTPResponse):
    """An ``HTTPResponse`` whose every read, from the status line on, ends by ``deadline``."""

    def __init__(self, sock, *args, deadline: float, **kwargs):
        super().__init__(sock, *args, **kwargs)
        self.fp.close()  # the plain reader http.client made: no byte has been read through it yet
        self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))


def _connecting_within(conn: http.client.HTTPConnection, deadline: float) -> None:
    """Bound ``conn``'s connecting and TLS handshake by ``deadline``; its answers (a proxy's to
    CONNECT included) are read through ``DeadlineResponse``."""
    create, connect = conn._create_connection, conn.connect

    def create_within(address, timeout, *args):
        sock = create(address, _time_left(deadline, timeout), *args)
        try:  # the TLS handshake that follows waits with this socket's timeout, as one total
            sock.settimeout(_time_left(deadline, sock.gettimeout()))
        except AnswerTooSlow:
            sock.close()
            raise
        return sock

    def connect_within():
        try:
            connect()
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise _too_slow() from None
            raise

    conn._create_connection, conn.connect = create_within, connect_within
    conn.response_class = functools.partial(DeadlineResponse, deadline=deadline)


def _opening_within(do_open, deadline):
    """``do_open`` of an urllib HTTP handler whose connections work against ``deadline()``."""
    @functools.wraps(do_open)
    def opening(http_class, req, **kwargs):
        def connection(*args, **kw):
            conn = http_class(*args, **kw)
            _connecting_within(conn, deadline())
            return conn
        return do_open(connection, req, **kwargs)
    return opening


def read_within_deadline(opener: urllib.request.OpenerDirector, deadline) -> urllib.request.OpenerDirector:
    """Fit ``opener``'s HTTP and HTTPS handlers so that every request ends by ``deadline()``."""
    for handler in opener.handlers:
        if isinstance(handler, urllib.request.AbstractHTTPHandler):
            handler.do_open = _opening_within(handler.do_open, deadline)
    return opener
