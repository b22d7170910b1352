"""A total time limit for one HTTP answer: status line, headers and body, however slowly they come.

A socket timeout bounds one silence, not a whole answer: a server that sends a byte every few
seconds never trips it, and holds its client for as long as it likes. Here every read of an
answer waits at most until the request's deadline (and never longer than the socket timeout
at a time), so a trickled answer fails with ``AnswerTooSlow`` once the deadline passes.

``read_within_deadline(opener, deadline)`` fits an opener's HTTP(S) handlers with this: each
connection they open reads its answer through ``DeadlineResponse``, against the monotonic time
``deadline()`` returns when the connection is opened (the caller sets it per request, redirects
and all). The handlers keep their own way of connecting (the URL policy's checked connections,
proxies, tunnels); only how the answer is read changes.
"""
from __future__ import annotations

import functools
import http.client
import io
import time
import urllib.request


class AnswerTooSlow(TimeoutError):
    """The answer was not complete by the request's deadline."""


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
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise AnswerTooSlow("the answer was not complete by the request's deadline")
        self._sock.settimeout(left if self._per_read is None else min(self._per_read, left))
        try:
            return self._raw.readinto(buffer)
        except TimeoutError:
            if time.monotonic() >= self._deadline:
                raise AnswerTooSlow("the answer was not complete by the request's deadline") from None
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


def _opening_within(do_open, deadline):
    """``do_open`` of an urllib HTTP handler whose connections read their answers against ``deadline()``."""
    @functools.wraps(do_open)
    def opening(http_class, req, **kwargs):
        def connection(*args, **kw):
            conn = http_class(*args, **kw)
            conn.response_class = functools.partial(DeadlineResponse, deadline=deadline())
            return conn
        return do_open(connection, req, **kwargs)
    return opening


def read_within_deadline(opener: urllib.request.OpenerDirector, deadline) -> urllib.request.OpenerDirector:
    """Fit ``opener``'s HTTP and HTTPS handlers so that every answer is read by ``deadline()``."""
    for handler in opener.handlers:
        if isinstance(handler, urllib.request.AbstractHTTPHandler):
            handler.do_open = _opening_within(handler.do_open, deadline)
    return opener
