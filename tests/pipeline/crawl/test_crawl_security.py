"""Hostile info dicts and bad flags: what the crawl refuses to fetch, read or start with.

Every URL here points at this machine only (the stand-in, a second local server, a
file); addresses of other networks are checked through a fake resolver, never reached.
"""
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.crawl import config as crawl_config
from pipeline.crawl import stage as crawl
from pipeline.crawl.video import info_problem
from pipeline.crawl.fetch import FetchError, Fetcher, RetryPolicy
from pipeline.crawl.politeness import RequestBudget
from demo.server import SampleServer
from pipeline.crawl.url_policy import UrlPolicy, UrlRefused, parse_allowed

from tests.conftest import read_all_rows, read_all_samples, real_fixtures

ROOT = Path(__file__).resolve().parents[3]
VIDEO = "smplPancak1"


def point_tracks_at(sample, video_id: str, url_for) -> None:
    """Rewrite every subtitle URL of ``video_id``'s saved info JSON with ``url_for(old_url)``."""
    path = sample.info / f"{video_id}.info.json"
    info = json.loads(path.read_text())
    for key in ("subtitles", "automatic_captions"):
        for formats in info.get(key, {}).values():
            for fmt in formats:
                fmt["url"] = url_for(fmt["url"])
    path.write_text(json.dumps(info))


def track_paths(sample, video_id: str) -> set:
    """The stand-in's paths of every subtitle file of ``video_id``."""
    info = json.loads((sample.info / f"{video_id}.info.json").read_text())
    return {f["url"].split(str(sample.server.port), 1)[1].split("?")[0]
            for key in ("subtitles", "automatic_captions") for fs in info[key].values() for f in fs}


def crawl_one(sample, out, *extra) -> dict:
    assert crawl.main(sample.crawl_args(out, "--langs", "en", *extra)) == 0
    return {r["video_id"]: r for r in read_all_rows(out / "crawl")}


@pytest.fixture
def other_server(tmp_path):
    """A second server on 127.0.0.1 that no crawl allows: what a hostile URL would reach."""
    root = tmp_path / "other"
    (root / "subs").mkdir(parents=True)
    (root / "subs" / "x.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nsecret from this machine\n")
    with SampleServer(root) as server:
        yield server


# ---------------------------------------------------------------- what is fetched

def test_a_file_url_is_refused_and_never_stored(sample, tmp_path):
    secret = tmp_path / "secret.vtt"
    secret.write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nthe contents of a local file\n")
    point_tracks_at(sample, VIDEO, lambda _: secret.as_uri())
    rows = crawl_one(sample, tmp_path / "data")
    row = rows[VIDEO]
    assert row["en_status"] == "refused_url" and "http and https" in row["en_error"]
    assert row["status"] == "refused_url"
    assert "en.vtt" not in read_all_samples(tmp_path / "data" / "crawl").get(VIDEO, {})
    assert rows["smplBikeFx2"]["status"] == "ok"  # the other videos go on


def test_a_loopback_host_not_allowed_is_never_requested(sample, tmp_path, other_server):
    point_tracks_at(sample, VIDEO, lambda _: f"{other_server.base_url}/subs/x.vtt")
    row = crawl_one(sample, tmp_path / "data")[VIDEO]
    assert row["en_status"] == "refused_url" and "not a YouTube host" in row["en_error"]
    assert other_server.count() == 0


def test_a_redirect_to_a_refused_url_is_not_followed(sample, tmp_path, other_server):
    for path in track_paths(sample, VIDEO):
        sample.server.fault(path, f"redirect:{other_server.base_url}/subs/x.vtt", sticky=True)
    row = crawl_one(sample, tmp_path / "data")[VIDEO]
    assert row["en_status"] == "refused_url" and "redirected to" in row["en_error"]
    assert other_server.count() == 0
    assert sample.server.count("/subs/") >= 1  # the allowed first hop was asked


def test_the_stand_in_is_reached_only_when_allowed_by_name(sample, tmp_path):
    args = [a for a in sample.crawl_args(tmp_path / "data", "--langs", "en") if a != sample.host]
    args.remove("--allow-host")
    assert crawl.main(args) == 0
    rows = read_all_rows(tmp_path / "data" / "crawl")
    assert {r["en_status"] for r in rows if r["en_status"] not in (None, "none")} == {"refused_url"}
    assert sample.server.count() == 0


def test_an_info_dict_from_ytdlp_is_held_to_the_same_rule(sample, tmp_path, other_server, monkeypatch):
    """Whatever the info source (yt-dlp or saved files), its URLs go through one check."""
    info = json.loads((sample.info / f"{VIDEO}.info.json").read_text())
    for formats in info["automatic_captions"].values():
        for fmt in formats:
            fmt["url"] = f"{other_server.base_url}/subs/x.vtt"
    info["subtitles"] = {}

    class FromYtdlp:
        def get(self, video_id):
            return json.loads(json.dumps(info))

        def take_warnings(self):
            return []

    real_context = crawl.CrawlContext.__init__

    def with_ytdlp(self, *a, **kw):
        real_context(self, *a, **kw)
        self.info_source = FromYtdlp()

    monkeypatch.setattr(crawl.CrawlContext, "__init__", with_ytdlp)
    args = sample.crawl_args(tmp_path / "data", "--langs", "en", "--executor", "inline")
    assert crawl.main(args) == 0
    rows = read_all_rows(tmp_path / "data" / "crawl")
    crawled = [r for r in rows if r["en_status"] is not None]
    assert crawled and all(r["en_status"] == "refused_url" for r in crawled)
    assert other_server.count() == 0


def test_a_redirect_to_the_bot_check_page_is_a_bot_check_not_a_request(sample, tmp_path):
    """YouTube sends a refused client to www.google.com/sorry/: no YouTube host, but a bot check all the same."""
    for path in track_paths(sample, VIDEO):
        sample.server.fault(path, "redirect:https://sorry-page.invalid/sorry/index?continue=x", sticky=True)
    row = crawl_one(sample, tmp_path / "data", "--retries", "0")[VIDEO]
    assert row["en_status"] == "bot_check"


def test_a_video_format_url_is_checked_before_ytdlp_downloads(sample_with_videos, tmp_path, other_server, capsys):
    sample = sample_with_videos
    vid = next(p.name.split(".")[0] for p in sorted(sample.info.glob("*.info.json"))
               if json.loads(p.read_text()).get("formats"))
    path = sample.info / f"{vid}.info.json"
    info = json.loads(path.read_text())
    for fmt in info["formats"]:
        fmt["url"] = f"{other_server.base_url}/videos/{vid}.mp4"
    path.write_text(json.dumps(info))
    (sample.root / "one.txt").write_text(vid + "\n")
    args = sample.crawl_args(tmp_path / "data", "--langs", "en", "--download-video")
    args[args.index("--videos") + 1] = str(sample.root / "one.txt")
    assert crawl.main(args) == 0
    (row,) = read_all_rows(tmp_path / "data" / "crawl")
    assert row["video_status"] == "refused_url" and "not a YouTube host" in row["video_error"]
    assert row["en_status"] == "ok"  # the subtitles, on the allowed stand-in, are kept
    assert other_server.count() == 0
    assert "--download-video fetched no video" in capsys.readouterr().out


# ---------------------------------------------------------------- the rule itself

def resolver(*addresses):
    def resolve(host, port, type=0):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]
    return resolve


@pytest.mark.parametrize("address,word", [("169.254.169.254", "link-local"), ("10.1.2.3", "private"),
                                          ("192.168.0.7", "private"), ("127.0.0.1", "loopback"),
                                          ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
                                          ("0.0.0.0", "unspecified"), ("100.64.0.1", "non-public")])
def test_a_youtube_name_that_resolves_inward_is_refused(address, word):
    policy = UrlPolicy(resolve=resolver("142.250.1.1", address))
    why = policy.problem("https://rr1---sn-abc.googlevideo.com/videoplayback?x=1")
    assert why is not None and word in why


def test_only_youtube_host_families_pass():
    policy = UrlPolicy(resolve=resolver("142.250.1.1"))
    for url in ("https://www.youtube.com/api/timedtext?v=x", "https://youtube.com/watch?v=x", "https://youtu.be/x",
                "https://i.ytimg.com/vi/x/0.jpg", "https://manifest.googlevideo.com/api/manifest/dash/x",
                "http://www.youtube.com/api/timedtext?v=x"):
        assert policy.problem(url) is None, url
    for url in ("http://169.254.169.254/latest/meta-data/", "https://www.youtube.com.evil.example/api/timedtext",
                "https://evilyoutube.com/x", "https://googlevideo.com.example/x", "ftp://www.youtube.com/x",
                "file:///etc/passwd", "data:text/vtt,WEBVTT", "//www.youtube.com/x"):
        assert policy.problem(url) is not None, url


def test_an_allowed_host_is_exact_to_its_port():
    policy = UrlPolicy.allowing(["127.0.0.1:8001", "Cdn.Example.org"])
    assert policy.problem("http://127.0.0.1:8001/x.vtt") is None
    assert "not a YouTube host" in policy.problem("http://127.0.0.1:8002/x.vtt")
    assert policy.problem("https://cdn.example.org:9443/x") is None
    assert parse_allowed("[::1]:80") == "[::1]:80"
    for bad in ("http://x/", "x:y", "a@b", ""):
        with pytest.raises(ValueError):
            parse_allowed(bad)


@pytest.mark.parametrize("impersonate", [True, False], ids=["curl_cffi", "urllib"])
def test_the_connection_goes_only_to_a_checked_address(tmp_path, impersonate):
    """A name checked once and resolved again inward (DNS rebinding) is refused at connect time."""
    policy = UrlPolicy(resolve=resolver("127.0.0.1"))
    with pytest.raises(UrlRefused, match="loopback"):
        policy.connect(("www.youtube.com", 443), timeout=1)
    answers = iter([("142.250.1.1",), ("127.0.0.1",)])  # the check's answer, then the connection's

    def rebinding(host, port, type=0):
        return resolver(*next(answers))(host, port, type)

    fetcher = Fetcher(RequestBudget(tmp_path / "budget"), policy=RetryPolicy(retries=0),
                      url_policy=UrlPolicy(resolve=rebinding), impersonate=impersonate)
    with pytest.raises(FetchError) as caught:
        fetcher.get("https://www.youtube.com/api/timedtext?v=x&lang=en")
    assert caught.value.status == "refused_url" and "loopback" in caught.value.message


def test_every_url_in_real_info_json_passes():
    policy = UrlPolicy(resolve=resolver("142.250.1.1"))
    seen = 0

    def walk(node, key=None):
        nonlocal seen
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and key in ("url", "manifest_url", "fragment_base_url") and "://" in node:
            seen += 1
            assert policy.problem(node) is None, node

    for path in sorted((real_fixtures() / "infojson").glob("*.info.json")):
        walk(json.loads(path.read_text()))
    assert seen > 1000


# ---------------------------------------------------------------- what is read

@pytest.mark.parametrize("text,word", [("[" * 100000 + "]" * 100000, "nested too deeply"),
                                       (json.dumps({"id": VIDEO, "title": {"a": 1}}), "'title' is not a string"),
                                       (json.dumps({"id": VIDEO, "subtitles": "en"}), "'subtitles' is not an object"),
                                       (json.dumps({"id": VIDEO, "automatic_captions": {"en": [{"url": 3}]}}),
                                        "'url' is not a string")])
def test_bad_info_json_fails_its_video_only(sample, tmp_path, text, word):
    (sample.info / f"{VIDEO}.info.json").write_text(text)
    rows = crawl_one(sample, tmp_path / "data")
    assert rows[VIDEO]["status"] == "error" and word in rows[VIDEO]["error"]
    assert rows["smplBikeFx2"]["status"] == "ok"  # the other videos go on


def test_an_info_dict_of_yt_dlps_types_has_no_problem():
    for path in sorted((real_fixtures() / "infojson").glob("*.info.json")):
        assert info_problem(json.loads(path.read_text())) is None, path.name


# ---------------------------------------------------------------- the cookie copy

COOKIES = "# Netscape HTTP Cookie File\n.youtube.com\tTRUE\t/\tTRUE\t0\tSID\tcookiesecretvalue\n"


def cookie_copies(root: Path) -> list:
    return [p for p in root.rglob("*") if p.is_file() and b"cookiesecretvalue" in p.read_bytes()]


def test_a_sigkilled_crawl_leaves_no_cookie_copy_in_the_temp_folder(sample, tmp_path):
    base = json.loads((sample.info / f"{VIDEO}.info.json").read_text())
    ids = [f"cook{i:07d}" for i in range(16)]
    for vid in ids:
        (sample.info / f"{vid}.info.json").write_text(json.dumps(dict(base, id=vid)))
    (sample.root / "many.txt").write_text("\n".join(ids) + "\n")
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(COOKIES)
    temp = tmp_path / "temp"
    temp.mkdir()
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "pipeline.crawl.stage", *sample.crawl_args(out, "--langs", "en,de", "--unit-size", "2",
                                                                       "--cookies", str(cookies),
                                                                       "--sleep-subtitles", "0.1")]
    cmd[cmd.index("--videos") + 1] = str(sample.root / "many.txt")
    env = dict(os.environ, TMPDIR=str(temp))
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=ROOT, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not list((out / "crawl").glob("*.stats.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert cookie_copies(temp) == []
    left = cookie_copies(out / "crawl")
    assert left and all(".work" in p.parts for p in left)  # in the output's private work area only
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in left)
    assert stat.S_IMODE((out / "crawl" / ".work").stat().st_mode) == 0o700

    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert cookie_copies(out) == [] and cookie_copies(temp) == []  # the next run cleared what the kill left
    assert not (out / "crawl" / ".work").exists()


# ---------------------------------------------------------------- flags and the summary

@pytest.mark.parametrize("flag,value", [("--retries", "-1"), ("--max-requests-per-second", "0"),
                                        ("--max-requests-per-second", "-2"), ("--langs", "klingon"),
                                        ("--unit-size", "-3"), ("--socket-timeout", "0"),
                                        ("--backoff-base", "-1"), ("--backoff-max", "-0.5"),
                                        ("--breaker-threshold", "0"), ("--breaker-max-pauses", "0"),
                                        ("--breaker-pause", "0"), ("--allow-host", "http://x/")])
def test_a_bad_flag_is_one_line_and_exit_2(sample, tmp_path, capsys, flag, value):
    assert crawl.main(sample.crawl_args(tmp_path / "d", f"{flag}={value}")) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert not (tmp_path / "d" / "crawl").exists()


def test_no_request_limit_is_its_own_flag(sample, tmp_path):
    args = crawl_config.build_parser().parse_args(["--videos", "v", "--out", "o", "--no-request-limit"])
    assert args.max_requests_per_second is None
    assert crawl_config.build_parser().parse_args(["--videos", "v"]).max_requests_per_second == crawl_config.DEFAULT_RATE


def test_a_crawl_without_videos_says_what_extraction_needs(sample, tmp_path, capsys):
    crawl_one(sample, tmp_path / "data")
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "--download-video" in line]
    assert len(lines) == 1 and "mmp-extract-features" in lines[0]


def test_check_alone_refuses_a_bad_language_too(capsys):
    assert crawl.main(["--check", "--langs", "klingon"]) == 2
    assert "--langs" in capsys.readouterr().err
