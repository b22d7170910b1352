"""A local HTTP server that stands in for YouTube: serves files, and faults on demand.

Tests, ``make demo`` and ``bench/crawl.py`` serve subtitle files and videos from a
directory on 127.0.0.1 and point info JSON URLs at it. Each request is logged
(method, path, status), so a test can count requests per file. Faults are set per
path and consumed in order (``server.fault("/subs/x/en.vtt", "429", "ok")``), or
made permanent with ``sticky=True``:

- ``"429"``, ``"403"``, ``"500"``...: that status; ``"429:retry-after=2"`` adds the header
- ``"reset"``: close the connection without a response
- ``"stall:5"``: wait 5 s before answering (clients should time out)
- ``"truncate"``: announce the full length, send half the body
- ``"html"``: a 200 with an HTML error page instead of the file
- ``"garbage"``: a 200 with invalid UTF-8 bytes; ``"empty"``: a 200 with no body
- ``"sorry"``: redirect to a bot-check page
- ``"redirect:URL"``: a 302 to ``URL`` (anywhere: what a hostile server would send)
- ``"trickle"``: announce the file's length, then send its body one byte every 0.1 s
- ``"slow-headers"``: send the status line, then one byte of a never-ending header every 0.1 s
- ``"endless"``: a 200 with no length whose body of zeros never ends (until the client hangs up)
- ``"ok"``: serve the file normally

Two behaviours hold for every path at once, as YouTube's do:

- ``server.rate_limit(per_second, window=1.0)``: a hidden threshold. A request that
  finds ``per_second * window`` requests already in the last ``window`` seconds gets a
  429 (logged with fault ``"ratelimit"``); queued faults wait for a request that gets
  through. Refused requests count toward the window, because YouTube counts what an
  address sends: a client that keeps hammering through 429s stays refused, one that
  slows down below the threshold gets through again.
- ``server.refuse_translations(True)``: a 429 for every machine-translated track (a query whose
  ``tlang`` is not its ``lang``) and for nothing else (logged with fault ``"translation"``), as
  YouTube answers in 2026 (yt-dlp #13831: the original ASR downloads, every translation is refused).
- ``server.require_po_token(True)``: a subtitle URL marked ``exp=xpe`` (YouTube's mark
  for a track that needs a PO token) without a non-empty ``pot=`` gets a 200 with an
  empty body, which is what YouTube sends when the token is missing (logged with fault
  ``"po_token"``); with ``pot=`` the file is served.
"""
from __future__ import annotations

import argparse
import collections
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

CONTENT_TYPES = {".vtt": "text/vtt; charset=utf-8", ".srt": "application/x-subrip; charset=utf-8",
                 ".json": "application/json", ".mp4": "video/mp4", ".webm": "video/webm", ".html": "text/html"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, fmt, *args):  # the server keeps its own log
        pass

    def _send(self, status: int, body: bytes, ctype: str = "text/plain", headers: dict | None = None,
              length: int | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        owner: SampleServer = self.server.owner
        url = urlparse(self.path)
        path = unquote(url.path)
        fault = owner._next_fault(path, parse_qs(url.query))
        entry = owner._log(self.command, self.path, path, fault)
        entry["headers"] = {name.lower(): value for name, value in self.headers.items()}  # what the client sent
        try:
            entry["status"] = self._respond(owner, path, fault)
        finally:
            owner._flush(entry)

    def _respond(self, owner: "SampleServer", path: str, fault: str | None) -> int:
        if fault and fault.startswith("stall"):
            time.sleep(float(fault.split(":", 1)[1]) if ":" in fault else 30.0)
            fault = None
        if fault == "reset":
            self.close_connection = True
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return 0
        if fault in ("slow-headers", "endless"):
            return self._hold(fault)
        if fault and fault.startswith("redirect:"):
            self._send(302, b"", headers={"Location": fault.split(":", 1)[1]})
            return 302
        if fault in ("ratelimit", "translation"):
            self._send(429, b"<html><body>Error 429 (Too Many Requests)</body></html>", "text/html")
            return 429
        if fault and fault.split(":", 1)[0].isdigit():
            code = int(fault.split(":", 1)[0])
            headers = {}
            if "retry-after=" in fault:
                headers["Retry-After"] = fault.split("retry-after=", 1)[1]
            body = f"<html><body>Error {code}</body></html>".encode()
            self._send(code, body, "text/html", headers)
            return code
        if fault == "sorry":
            self._send(302, b"", headers={"Location": f"http://127.0.0.1:{owner.port}/sorry/index"})
            return 302
        if path.startswith("/sorry/"):
            self._send(429, b"<html>Our systems have detected unusual traffic from your computer network.</html>", "text/html")
            return 429
        file = (owner.root / path.lstrip("/")).resolve()
        if owner.root not in file.parents or not file.is_file():
            self._send(404, b"not found")
            return 404
        body = file.read_bytes()
        ctype = CONTENT_TYPES.get(file.suffix, "application/octet-stream")
        if fault == "html":
            self._send(200, b"<!DOCTYPE html><html><head><title>Error</title></head><body>Sorry</body></html>", "text/html")
        elif fault == "garbage":
            self._send(200, b"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nbad \xff\xfe bytes \xc3\x28 here\n", ctype)
        elif fault in ("empty", "po_token"):
            self._send(200, b"", ctype)
        elif fault == "trickle":
            self.close_connection = True
            self._send(200, b"", ctype, length=len(body))
            try:
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:  # the client hung up
                pass
        elif fault == "truncate":
            self._send(200, body[: len(body) // 2], ctype, length=len(body))
            self.close_connection = True
        else:
            self._send(200, body, ctype)
        return 200


    def _hold(self, fault: str) -> int:
        """A server that never finishes its answer: what a client must bound in time or size."""
        self.close_connection = True
        try:
            if fault == "slow-headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while True:
                    self.wfile.write(b"a")
                    self.wfile.flush()
                    time.sleep(0.1)
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Connection", "close")
            self.end_headers()
            zeros = bytes(1 << 16)
            while True:
                self.wfile.write(zeros)
        except OSError:  # the client hung up: what it should do
            return 200


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class SampleServer:
    """Serve ``root`` on 127.0.0.1 (an ephemeral port unless given)."""

    def __init__(self, root: Path, port: int = 0, log_file: Path | None = None):
        self.root = Path(root).resolve()
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._faults: dict[str, collections.deque] = {}
        self._sticky: dict[str, str] = {}
        self._lock = threading.Lock()
        self.requests: list[dict] = []
        self._log_file = open(log_file, "a") if log_file else None
        self._thread: threading.Thread | None = None
        self._limit: float | None = None  # requests allowed per window
        self._window = 1.0
        self._recent: collections.deque = collections.deque()  # arrival times within the window
        self._po_token = False
        self._refuse_translations = False

    def fault(self, path: str, *faults: str, sticky: bool = False) -> None:
        with self._lock:
            if sticky:
                self._sticky[path] = faults[0]
            else:
                self._faults.setdefault(path, collections.deque()).extend(faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._sticky.clear()

    def rate_limit(self, per_second: float | None, window: float = 1.0) -> None:
        """Refuse (429) any request beyond ``per_second * window`` in a sliding ``window``; None: off.
        Setting it starts a fresh window."""
        with self._lock:
            self._limit = per_second * window if per_second else None
            self._window = window
            self._recent.clear()

    def require_po_token(self, required: bool = True) -> None:
        """Answer ``exp=xpe`` subtitle URLs that lack ``pot=`` with an empty 200, as YouTube does."""
        with self._lock:
            self._po_token = required

    def refuse_translations(self, refused: bool = True) -> None:
        """Answer 429 to every translated track (``tlang`` other than ``lang``), and to nothing else."""
        with self._lock:
            self._refuse_translations = refused

    def _over_limit(self, now: float) -> bool:
        if self._limit is None:
            return False
        while self._recent and self._recent[0] <= now - self._window:
            self._recent.popleft()
        over = len(self._recent) + 1 > self._limit
        self._recent.append(now)
        return over

    def _next_fault(self, path: str, query: dict | None = None) -> str | None:
        with self._lock:
            if self._over_limit(time.time()):
                return "ratelimit"
            if path in self._sticky:
                return self._sticky[path]
            queue = self._faults.get(path)
            if queue:
                fault = queue.popleft()
                if fault != "ok":
                    return fault
            query = query or {}
            tlang, lang = query.get("tlang", [None])[0], query.get("lang", [None])[0]
            if self._refuse_translations and tlang and tlang.removesuffix("-orig") != (lang or "").removesuffix("-orig"):
                return "translation"
            if self._po_token and "xpe" in ",".join(query.get("exp", [])).split(",") and "pot" not in query:
                return "po_token"
        return None

    def _log(self, method, raw_path, path, fault) -> dict:
        """Requests are logged when they arrive (a stalled one counts at once)."""
        entry = {"t": time.time(), "method": method, "raw": raw_path, "path": path, "fault": fault, "status": None}
        with self._lock:
            self.requests.append(entry)
        return entry

    def _flush(self, entry: dict) -> None:
        if self._log_file:
            with self._lock:
                self._log_file.write(json.dumps(entry) + "\n")
                self._log_file.flush()

    def count(self, prefix: str = "/") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r["path"].startswith(prefix))

    def start(self) -> "SampleServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="sample-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._log_file:
            self._log_file.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Serve a directory on 127.0.0.1 as a stand-in for YouTube.")
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--log", type=Path, help="append one JSON line per request here")
    p.add_argument("--rate-limit", type=float, help="refuse (429) requests beyond this many per second")
    p.add_argument("--refuse-translations", action="store_true",
                   help="answer 429 to every machine-translated track (tlang other than lang), as YouTube does now")
    p.add_argument("--require-po-token", action="store_true",
                   help="answer exp=xpe subtitle URLs without pot= with an empty body")
    args = p.parse_args(argv)
    server = SampleServer(args.root, args.port, args.log)
    server.rate_limit(args.rate_limit)
    server.require_po_token(args.require_po_token)
    server.refuse_translations(args.refuse_translations)
    print(f"serving {server.root} at {server.base_url}", flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
