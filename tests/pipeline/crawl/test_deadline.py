"""One request's total time, over TLS too: a deadline-fitted urllib opener and each of yt-dlp's transports alike.

A server on 127.0.0.1 speaks TLS with a certificate made here and holds its client in one of three
ways: it never answers the handshake, it trickles its headers, or it trickles its body; a proxy on
127.0.0.1 may instead trickle its answer to CONNECT. Each request runs under the watchdog with a
socket timeout (the longest silence) far above its deadline, so only the deadline can end it in time.
"""
import datetime
import ipaddress
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request

import pytest

from pipeline.crawl.deadline import AnswerTooSlow, read_within_deadline
from pipeline.crawl.url_policy import UrlPolicy
from tests.watchdog import run_bounded

SILENCE = 20.0   # the socket timeout: never reached within the watchdog's bound
DEADLINE = 1.0   # what the request may take in all


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: (cert file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return str(folder / "cert.pem"), str(folder / "key.pem")


class Holder:
    """Accepts connections on 127.0.0.1 and holds each one as ``mode`` says, in a thread of its own."""

    def __init__(self, mode: str, cert=None):
        self.mode = mode
        self.context = None
        if cert is not None:
            self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.context.load_cert_chain(*cert)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _trickle(self, conn, data: bytes):
        for i in range(len(data)):
            if self.stop.is_set():
                return
            conn.sendall(data[i:i + 1])
            time.sleep(0.1)

    def _hold(self, conn):
        try:
            if self.mode == "stalled-handshake":  # the client's hello is never answered
                self.stop.wait(60)
                return
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            conn.recv(65536)
            if self.mode == "slow-connect":  # a proxy's answer to CONNECT, a byte at a time
                self._trickle(conn, b"HTTP/1.1 200 Connection established\r\nX-Slow: " + b"a" * 600)
            elif self.mode == "slow-headers":
                self._trickle(conn, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 600)
            elif self.mode == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 600\r\nConnection: close\r\n\r\n")
                self._trickle(conn, b"b" * 600)
        except OSError:  # the client hung up
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        try:  # wakes the thread blocked in accept(): closing alone leaves the socket listening under it
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()


@pytest.fixture
def holder(cert):
    made = []

    def make(mode, tls=True):
        made.append(Holder(mode, cert if tls else None))
        return made[-1]

    yield make
    for server in made:
        server.close()


def fetch_tls(url: str, cafile: str, proxy: str | None = None) -> str:
    """What one request through a deadline-fitted opener ended with: the exception's type name."""
    context = ssl.create_default_context(cafile=cafile)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"https": proxy} if proxy else {}),
                                         urllib.request.HTTPSHandler(context=context))
    deadline = time.monotonic() + DEADLINE
    read_within_deadline(opener, lambda: deadline)
    try:
        with opener.open(url, timeout=SILENCE) as response:
            response.read()
    except urllib.error.URLError as exc:
        return type(exc.reason).__name__
    except OSError as exc:
        return type(exc).__name__
    return "complete"


@pytest.mark.parametrize("mode", ["stalled-handshake", "slow-headers", "trickle"])
def test_a_held_tls_answer_ends_at_the_deadline(holder, cert, mode):
    server = holder(mode)
    ended = run_bounded(fetch_tls, f"https://127.0.0.1:{server.port}/", cert[0], seconds=8)
    assert ended == AnswerTooSlow.__name__


def test_a_proxy_trickling_its_connect_answer_ends_at_the_deadline(holder, cert):
    proxy = holder("slow-connect", tls=False)
    ended = run_bounded(fetch_tls, "https://127.0.0.1:9/", cert[0], f"http://127.0.0.1:{proxy.port}", seconds=8)
    assert ended == AnswerTooSlow.__name__


def send_through_ytdlp_handler(url: str, proxy: str | None = None, transport: str = "urllib") -> str:
    """One request through one of the crawl's yt-dlp transports (bounded by ``DEADLINE``): its error's message."""
    from yt_dlp.networking import Request
    from yt_dlp.networking.impersonate import ImpersonateTarget

    from pipeline.crawl.impersonate import CheckedCurlCffiRH
    from pipeline.crawl.ytdlp_requests import Bounds, CheckedUrllibRH, OverBounds

    kind, more = (CheckedUrllibRH, {}) if transport == "urllib" else (CheckedCurlCffiRH,
                                                                      {"impersonate": ImpersonateTarget()})
    handler = kind(logger=None, verify=False, timeout=SILENCE, url_policy=UrlPolicy.allowing(["127.0.0.1"]),
                   bounds=Bounds(DEADLINE, 1 << 20, seconds_flag="--the-bound"), **more)
    try:
        response = handler.send(Request(url, proxies={"all": proxy} if proxy else {}))
        response.read()
    except OverBounds as exc:
        return str(exc)
    return "complete"


TRANSPORTS = pytest.mark.parametrize("transport", ["urllib", "curl_cffi"])


@TRANSPORTS
@pytest.mark.parametrize("mode", ["stalled-handshake", "slow-headers", "trickle"])
def test_the_ytdlp_handler_ends_a_held_tls_answer_at_its_bound(holder, mode, transport):
    server = holder(mode)
    message = run_bounded(send_through_ytdlp_handler, f"https://127.0.0.1:{server.port}/v.mp4", None, transport,
                          seconds=8)
    assert message == "took longer than --the-bound 1 s"


@TRANSPORTS
def test_the_ytdlp_handler_ends_a_trickled_connect_answer_at_its_bound(holder, transport):
    proxy = holder("slow-connect", tls=False)
    message = run_bounded(send_through_ytdlp_handler, "https://127.0.0.1:9/v.mp4",
                          f"http://127.0.0.1:{proxy.port}", transport, seconds=8)
    assert message == "took longer than --the-bound 1 s"


def metadata_request(tmp_path, url: str):
    """A YtdlpSource's lookup whose extraction asks ``url``: (status, message) of its failure."""
    import yt_dlp

    from pipeline.crawl.fetch import FetchError
    from pipeline.crawl.sources import YtdlpSource
    from pipeline.crawl.stage import CrawlConfig
    from pipeline.crawl.sessions import session_budgets

    def extract_info(self, *args, **kwargs):  # what yt-dlp's extractor does for a page: one urlopen
        return {"id": "x", "page": self.urlopen(url).read().decode()}

    yt_dlp.YoutubeDL.extract_info = extract_info  # in the watched child only
    cfg = CrawlConfig(videos="x", out=str(tmp_path), budget_dir=str(tmp_path), retries=0,
                      socket_timeout=SILENCE, request_timeout=DEADLINE)
    source = YtdlpSource(cfg, session_budgets(cfg).own, None, url_policy=UrlPolicy.allowing(["127.0.0.1"]))
    try:
        source.get("abcdefghijk")
    except FetchError as exc:
        return exc.status, exc.message
    return "ok", ""


def test_a_metadata_request_is_bounded_by_the_request_timeout(holder, tmp_path):
    server = holder("trickle", tls=False)
    status, message = run_bounded(metadata_request, tmp_path, f"http://127.0.0.1:{server.port}/watch", seconds=8)
    assert status == "over_budget" and message == "the video's page took longer than --request-timeout 1 s"
