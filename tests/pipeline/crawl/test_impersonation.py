"""Every request of the crawl goes out as a current browser's (curl_cffi, as yt-dlp sends its own), under the same
URL policy and bounds; a machine that cannot impersonate is not ready, and a crawl there refuses to start unless
told to go on.

The stand-in logs the headers of each request it gets, so a test sees what YouTube would see. Hosts beyond this
machine are given addresses by a fake resolver (UrlPolicy(resolve=...)) and never reached.
"""
import json
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from yt_dlp.networking import Request
from yt_dlp.networking.impersonate import ImpersonateTarget

from pipeline.crawl import stage as crawl
from pipeline.crawl import url_policy
from pipeline.crawl.fetch import USER_AGENT, Fetcher, RetryPolicy
from pipeline.crawl.impersonate import CheckedCurlCffiRH, impersonation_status
from pipeline.crawl.politeness import RequestBudget
from pipeline.crawl.url_policy import UrlPolicy
from pipeline.crawl.ytdlp_requests import Bounds, CheckedYoutubeDL, OverBounds, RequestRefused

from tests.conftest import read_all_rows, read_all_samples
from tests.watchdog import run_bounded

VIDEO = "smplPancak1"
EN = f"/subs/{VIDEO}/en-orig.vtt"
TARGET = impersonation_status().target  # e.g. chrome-152:windows-10
# What a browser's User-Agent names itself by (Safari gives its version as Version/N).
_AGENT_WORD = {"chrome": "Chrome", "edge": "Edg", "firefox": "Firefox", "safari": "Version", "tor": "Firefox"}


def assert_browser(headers: dict) -> None:
    """``headers`` (as the stand-in logged them) are those of the browser the crawl impersonates."""
    client, _, version = TARGET.split(":")[0].partition("-")
    agent = headers.get("user-agent", "")
    assert re.search(rf"\b{_AGENT_WORD[client]}/{re.escape(version)}\b", agent), (TARGET, headers)
    assert "Chrome/120.0 " not in agent  # never the fixed agent of a script
    if client in ("chrome", "edge"):  # client hints: what urllib never sends
        assert client.title() in headers.get("sec-ch-ua", "") or "Chromium" in headers["sec-ch-ua"], headers
        assert headers["sec-fetch-mode"] and headers["sec-ch-ua-platform"]


def resolver(*addresses):
    def resolve(host, port, type=0):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]
    return resolve


def curl(policy: UrlPolicy, seconds: float = 5.0, max_bytes: int = 1 << 20) -> CheckedCurlCffiRH:
    """The curl transport as a CheckedYoutubeDL holds it (silences may last longer than the bound)."""
    return CheckedCurlCffiRH(logger=None, url_policy=policy, impersonate=ImpersonateTarget(), timeout=20,
                             bounds=Bounds(seconds, max_bytes, seconds_flag="--the-bound"))


@pytest.fixture
def no_curl_cffi(monkeypatch):
    """curl_cffi cannot be imported (as where it is not installed)."""
    monkeypatch.setitem(sys.modules, "curl_cffi", None)


# ---------------------------------------------------------------- what YouTube sees

def test_this_machine_impersonates_yt_dlps_first_browser():
    from yt_dlp.networking._curlcffi import CurlCFFIRH

    status = impersonation_status()
    assert status.available and status.target == str(next(iter(CurlCFFIRH._SUPPORTED_IMPERSONATE_TARGET_MAP)))
    assert "curl_cffi 0." in status.detail and status.target in status.detail


def test_every_subtitle_request_of_a_crawl_goes_out_as_a_browser(sample, tmp_path):
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tSID\tsubtitlecookie\n")
    out = tmp_path / "data"
    assert crawl.main(sample.crawl_args(out, "--langs", "en,de", "--cookies", str(cookies))) == 0
    subs = [r for r in sample.server.requests if r["path"].startswith("/subs/")]
    assert len(subs) >= 10
    for request in subs:
        assert_browser(request["headers"])
        assert "SID=subtitlecookie" in request["headers"].get("cookie", "")  # the crawl's cookies go along
    assert {r["status"] for r in read_all_rows(out / "crawl") if r["video_id"] == VIDEO} == {"ok"}
    assert json.loads((out / "crawl" / "config.json").read_text())["config"]["impersonate"] is True


def test_a_video_download_goes_out_as_a_browser(sample_with_videos, tmp_path):
    out = tmp_path / "data"
    assert crawl.main(sample_with_videos.crawl_args(out, "--download-video", "--langs", "en")) == 0
    videos = [r for r in sample_with_videos.server.requests if r["path"].startswith("/videos/")]
    assert videos
    for request in videos:
        assert_browser(request["headers"])
    assert read_all_samples(out / "crawl")[VIDEO]["mp4"][4:8] == b"ftyp"


def test_a_saved_dicts_browser_agent_gives_way_to_the_impersonated_one(sample_with_videos, tmp_path):
    """Saved info JSON carries the User-Agent of the yt-dlp that wrote it in each format's http_headers."""
    sample = sample_with_videos
    path = sample.info / f"{VIDEO}.info.json"
    info = json.loads(path.read_text())
    old = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/100.0 Safari/537.36"
    for fmt in info["formats"]:
        fmt["http_headers"] = {"User-Agent": old, "Accept-Language": "en-us,en;q=0.5"}
    path.write_text(json.dumps(info))
    out = tmp_path / "data"
    assert crawl.main(sample.crawl_args(out, "--download-video", "--langs", "en")) == 0
    videos = [r for r in sample.server.requests if r["path"].startswith("/videos/")]
    assert videos
    for request in videos:
        assert_browser(request["headers"]) and "Chrome/100" not in request["headers"]["user-agent"]


def test_headers_ytdlp_sets_itself_stay_as_it_sends_them(sample):
    """An Innertube client's User-Agent is yt-dlp's choice for that request: only yt-dlp's defaults give way."""
    android = "com.google.android.youtube/20.10.38 (Linux; U; Android 11) gzip"
    with CheckedYoutubeDL({"quiet": True}, UrlPolicy.allowing([sample.host])) as ydl:
        assert ydl.impersonating == TARGET
        assert ydl.urlopen(Request(sample.server.base_url + EN, headers={"User-Agent": android,
                                                                         "X-YouTube-Client-Name": "3"})).read()
        ydl.urlopen(Request(sample.server.base_url + EN)).read()
    mine, default = sample.server.requests[-2]["headers"], sample.server.requests[-1]["headers"]
    assert mine["user-agent"] == android and mine["x-youtube-client-name"] == "3"
    assert_browser(default)


def test_told_not_to_the_requests_go_out_through_urllib(sample, tmp_path):
    fetcher = Fetcher(RequestBudget(tmp_path / "budget"), url_policy=UrlPolicy.allowing([sample.host]),
                      impersonate=False)
    assert fetcher.impersonating is None
    assert fetcher.get(sample.server.base_url + EN).startswith(b"WEBVTT")
    headers = sample.server.requests[-1]["headers"]
    assert headers["user-agent"] == USER_AGENT and "sec-ch-ua" not in headers


class _CookieHops(BaseHTTPRequestHandler):
    """/hop sets a cookie and redirects to /landed, which answers with the Cookie header it got."""

    def do_GET(self):
        body = b"" if self.path == "/hop" else (self.headers.get("Cookie") or "").encode()
        self.send_response(302 if self.path == "/hop" else 200)
        if self.path == "/hop":
            self.send_header("Location", "/landed")
            self.send_header("Set-Cookie", "hop=1; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_cookie_set_by_a_redirect_goes_with_the_next_hop():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CookieHops)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        with CheckedYoutubeDL({"quiet": True}, UrlPolicy.allowing([host])) as ydl:
            assert ydl.impersonating
            assert ydl.urlopen(Request(f"http://{host}/hop")).read() == b"hop=1"
            assert [c.name for c in ydl.cookiejar] == ["hop"]
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- where curl may connect

def test_a_redirect_to_this_machine_or_its_network_is_refused(sample):
    policy = UrlPolicy(allowed=frozenset({sample.host}), resolve=resolver("10.1.2.3"))
    handler = curl(policy)
    for target, why in ((f"http://127.0.0.1:{sample.server.port + 1}/x", "not a YouTube host"),
                        ("http://169.254.169.254/latest/meta-data/", "not a YouTube host"),
                        ("https://rr1---sn-abc.googlevideo.com/videoplayback", "private address (10.1.2.3)")):
        sample.server.fault(EN, f"redirect:{target}")
        with pytest.raises(RequestRefused, match="redirected to") as refused:
            handler.send(Request(sample.server.base_url + EN))
        assert why in refused.value.reason and handler.log.refused[-1] is refused.value
    assert sample.server.count() == 3  # only the stand-in's first hops were asked


def test_a_name_resolving_inward_when_curl_would_connect_is_refused():
    """The transport resolves again itself: a name that turned inward since the policy checked it is refused."""
    handler = curl(UrlPolicy(resolve=resolver("142.250.1.1", "192.168.0.7")))
    with pytest.raises(RequestRefused, match="private address"):
        handler._send_once(Request("https://www.youtube.com/api/timedtext?v=x"), Bounds(5, 1 << 20))


def test_curl_connects_only_to_the_address_that_was_checked(sample, monkeypatch):
    """r1.googlevideo.com does not resolve on this machine: the request reaches the stand-in only because curl
    is pinned to the address the policy checked (here loopback, accepted for this test alone)."""
    monkeypatch.setattr(url_policy, "address_problem", lambda address: None)
    handler = curl(UrlPolicy(resolve=resolver("::1", "127.0.0.1")))
    for host in ("r1.googlevideo.com", "R1.GoogleVideo.com."):  # as the URL spells it, trailing dot and all
        response = handler.send(Request(f"http://{host}:{sample.server.port}{EN}"))
        assert response.read().startswith(b"WEBVTT")
        assert sample.server.requests[-1]["headers"]["host"].lower() == f"{host}:{sample.server.port}".lower()
        assert_browser(sample.server.requests[-1]["headers"])


# ---------------------------------------------------------------- what one request may spend

def send_bounded(url: str, max_bytes: int):
    """One request through the curl transport, bound to 1 s and ``max_bytes``: how it ended, and what was logged."""
    handler = curl(UrlPolicy.allowing([url.split("/")[2]]), seconds=1.0, max_bytes=max_bytes)
    try:
        body = handler.send(Request(url)).read()
    except OverBounds as exc:
        return exc.kind, exc.announced, [str(e) for e in handler.log.exceeded]
    return "complete", len(body), []


@pytest.mark.parametrize("fault,max_bytes,ends", [("trickle", 1 << 20, "time"), ("slow-headers", 1 << 20, "time"),
                                                  ("endless", 1 << 20, "size"), ("ok", 100, "size")])
def test_the_curl_transport_stops_within_its_bounds(sample, fault, max_bytes, ends):
    sample.server.fault(EN, fault, sticky=True)
    kind, announced, logged = run_bounded(send_bounded, sample.server.base_url + EN, max_bytes, seconds=15,
                                          memory_mb=400)
    assert kind == ends and len(logged) == 1
    expected = "took longer than --the-bound 1 s" if ends == "time" else f"is larger than the answer size cap {max_bytes}"
    assert logged[0].startswith(expected)
    if fault == "ok":  # the stand-in announced the file's length: not a byte of it was read
        assert announced == (sample.files / "subs" / VIDEO / "en-orig.vtt").stat().st_size


# ---------------------------------------------------------------- a machine that cannot impersonate

def test_check_lists_impersonation(capsys):
    assert crawl.main(["--check"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if " impersonation " in line)
    assert line.startswith("ok") and TARGET in line and "curl_cffi" in line


def test_check_without_curl_cffi_is_not_ready(capsys, no_curl_cffi):
    assert crawl.main(["--check"]) != 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if " impersonation " in line)
    assert line.startswith("fail") and 'pip install "yt-dlp[default,curl-cffi]"' in line and "make install" in line
    assert out.strip().splitlines()[-1].startswith("not ready")


def test_a_crawl_without_impersonation_starts_only_when_told(sample, tmp_path, capsys, no_curl_cffi):
    out = tmp_path / "data"
    assert crawl.main(sample.crawl_args(out, "--langs", "en")) == 2
    err = capsys.readouterr().err
    assert "--allow-no-impersonation" in err and 'yt-dlp[default,curl-cffi]' in err and "Traceback" not in err
    assert sample.server.count() == 0 and not list((out / "crawl").glob("*.parquet"))

    assert crawl.main(sample.crawl_args(out, "--langs", "en", "--allow-no-impersonation")) == 0
    assert json.loads((out / "crawl" / "config.json").read_text())["config"]["impersonate"] is False
    subs = [r for r in sample.server.requests if r["path"].startswith("/subs/")]
    assert subs and all(r["headers"]["user-agent"] == USER_AGENT and "sec-ch-ua" not in r["headers"] for r in subs)


def test_a_worker_that_cannot_impersonate_fails_rather_than_crawl_otherwise(sample, tmp_path, no_curl_cffi):
    """The machine that checked could impersonate (config.json says so): a worker that cannot must not go on."""
    from shards.errors import UserError

    from pipeline.crawl.config import CrawlConfig

    cfg = CrawlConfig(videos=str(sample.videos), out=str(tmp_path / "crawl"), info_json=str(sample.info),
                      budget_dir=str(tmp_path), allow_hosts=[sample.host])
    assert cfg.impersonate
    with pytest.raises(UserError, match="this worker cannot send requests as a browser does: curl_cffi is not"):
        crawl.CrawlContext(cfg, run_dir=tmp_path / "run")
