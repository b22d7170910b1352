"""What a hostile server or file can cost the crawl: a bounded time per request, a bounded read
per file, and a flag that cannot work refused before any work.

Each case builds its hostile input here (a server on 127.0.0.1 that trickles or never ends, a
FIFO, a link to /dev/zero, an oversize file) and runs the crawl under the watchdog, so a
regression fails the test instead of hanging it or taking the machine's memory.
"""
import json
import os
import time

import pytest

from pipeline.crawl import sources
from pipeline.crawl import stage as crawl
from pipeline.crawl import videolist
from pipeline.crawl.fetch import FetchError, Fetcher, RetryPolicy
from pipeline.crawl.politeness import RequestBudget
from pipeline.crawl.url_policy import UrlPolicy
from shards.errors import UserError

from tests.conftest import read_all_rows, read_all_samples
from tests.watchdog import call_main, run_bounded

VIDEO = "smplPancak1"
EN = f"/subs/{VIDEO}/en-orig.vtt"
DE = f"/subs/{VIDEO}/de.vtt"
MEMORY_MB = 1024  # the crawl's own few hundred MiB, never what a hostile input asks for
QUICK = ("--retries", "0", "--socket-timeout", "1", "--request-timeout", "2")


def two_videos(sample) -> str:
    path = sample.root / "two.txt"
    path.write_text(f"{VIDEO}\nsmplBikeFx2\n")
    return str(path)


def run_crawl(sample, out, *extra, videos=None, seconds=30):
    """mmp-crawl of two videos (or ``videos``) under the watchdog: (exit code, stderr, rows by id)."""
    args = sample.crawl_args(out, "--langs", "en,de", *extra)
    args[args.index("--videos") + 1] = videos or two_videos(sample)
    rc, _, err = call_main(crawl.main, args, seconds=seconds, memory_mb=MEMORY_MB)
    rows = {r["video_id"]: r for r in read_all_rows(out / "crawl")} if (out / "crawl").exists() else {}
    return rc, err, rows


# ---------------------------------------------------------------- a server that takes its time

@pytest.mark.parametrize("fault", ["slow-headers", "trickle"])
def test_a_trickled_answer_fails_as_network_and_nothing_is_stored(sample, tmp_path, fault):
    """Only the deadline can end it here: curl counts a connection as silent until the body of its answer flows,
    so headers trickled for longer than the socket timeout end by that; it is set past the deadline."""
    sample.server.fault(EN, fault, sticky=True)
    rc, _, rows = run_crawl(sample, tmp_path / "d", *QUICK, "--socket-timeout", "5")
    row = rows[VIDEO]
    assert rc == 0 and row["en_status"] == "network", row
    assert "--request-timeout" in row["en_error"]
    assert row["de_status"] == "ok" and row["status"] == "partial"
    assert "en.vtt" not in read_all_samples(tmp_path / "d" / "crawl")[VIDEO]
    assert rows["smplBikeFx2"]["status"] == "ok"


def test_a_trickled_answer_is_retried_like_any_network_failure(sample, tmp_path):
    sample.server.fault(EN, "trickle", "ok")
    rc, _, rows = run_crawl(sample, tmp_path / "d", "--retries", "1", "--socket-timeout", "1", "--request-timeout", "2")
    assert rows[VIDEO]["status"] == "ok"
    assert read_all_samples(tmp_path / "d" / "crawl")[VIDEO]["en.vtt"].startswith(b"WEBVTT")
    assert [h["fault"] for h in sample.server.requests if h["path"] == EN] == ["trickle", None]


def test_the_request_timeout_is_recorded(sample, tmp_path):
    rc, _, _ = run_crawl(sample, tmp_path / "d", "--request-timeout", "7.5")
    assert rc == 0
    assert json.loads((tmp_path / "d" / "crawl" / "config.json").read_text())["config"]["request_timeout"] == 7.5


def fetch_bounded(url, *, max_bytes=1 << 20, request_timeout=2.0, proxy=None, impersonate=True):
    # a silence bound above the deadline: on a loaded machine a slow server thread must not trip it first
    fetcher = Fetcher(RequestBudget(fetch_bounded.budget), timeout=5.0, request_timeout=request_timeout,
                      policy=RetryPolicy(retries=0), max_bytes=max_bytes, proxies=[proxy] if proxy else None,
                      url_policy=UrlPolicy.allowing([url.split("/")[2]]), impersonate=impersonate)
    assert bool(fetcher.impersonating) == impersonate  # curl_cffi's transport, or urllib's
    try:
        return fetcher.get(url)
    except FetchError as exc:
        return exc.status, exc.message


TRANSPORTS = pytest.mark.parametrize("impersonate", [True, False], ids=["curl_cffi", "urllib"])


@TRANSPORTS
def test_an_endless_body_stops_at_the_size_cap(sample, tmp_path, impersonate):
    sample.server.fault(EN, "endless", sticky=True)
    fetch_bounded.budget = tmp_path / "budget"
    status, message = run_bounded(fetch_bounded, sample.server.base_url + EN, max_bytes=1 << 20,
                                  impersonate=impersonate, seconds=20, memory_mb=MEMORY_MB)
    assert status == "error" and "larger than 1048576 bytes" in message


@TRANSPORTS
def test_the_deadline_holds_through_a_proxy(sample, tmp_path, impersonate):
    """The stand-in answers a proxy's absolute-URL request as its own: the trickle comes through the proxy."""
    sample.server.fault(EN, "trickle", sticky=True)
    fetch_bounded.budget = tmp_path / "budget"
    status, message = run_bounded(fetch_bounded, sample.server.base_url + EN, proxy=sample.server.base_url,
                                  impersonate=impersonate, seconds=20, memory_mb=MEMORY_MB)
    assert status == "network" and "no complete answer within 2 s (--request-timeout)" in message
    assert sample.server.requests[-1]["raw"].startswith("http://")  # it went by way of the proxy


@TRANSPORTS
def test_an_announced_length_over_the_cap_is_not_read(sample, tmp_path, impersonate):
    fetch_bounded.budget = tmp_path / "budget"
    status, message = run_bounded(fetch_bounded, sample.server.base_url + EN, max_bytes=100,
                                  impersonate=impersonate, seconds=20, memory_mb=MEMORY_MB)
    assert status == "error" and "announces" in message


# ---------------------------------------------------------------- saved info JSON that is not a file

def plant(sample, tmp_path, kind):
    path = sample.info / f"{VIDEO}.info.json"
    path.unlink()
    if kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()


@pytest.mark.parametrize("kind,reason", [("dev-zero", "a character device"), ("fifo", "a FIFO"),
                                         ("directory", "a directory")])
def test_an_info_json_that_is_no_file_fails_its_video_only(sample, tmp_path, kind, reason):
    plant(sample, tmp_path, kind)
    rc, _, rows = run_crawl(sample, tmp_path / "d")
    assert rc == 0
    assert rows[VIDEO]["status"] == "error" and reason in rows[VIDEO]["error"], rows[VIDEO]
    assert rows["smplBikeFx2"]["status"] == "ok"


def _crawl_with_small_info_cap(argv):
    sources.MAX_INFO_JSON_BYTES = 64 << 10  # in the watched child only
    return crawl.main(argv)


def test_an_oversize_info_json_fails_its_video_only(sample, tmp_path):
    path = sample.info / f"{VIDEO}.info.json"
    info = json.loads(path.read_text())
    info["description"] = "x" * (100 << 10)  # valid JSON, larger than the cap
    path.write_text(json.dumps(info))
    args = sample.crawl_args(tmp_path / "d", "--langs", "en,de")
    args[args.index("--videos") + 1] = two_videos(sample)
    rc, _, _ = call_main(_crawl_with_small_info_cap, args, seconds=30, memory_mb=MEMORY_MB)
    rows = {r["video_id"]: r for r in read_all_rows(tmp_path / "d" / "crawl")}
    assert rc == 0
    assert rows[VIDEO]["status"] == "error" and "larger than 64 KiB" in rows[VIDEO]["error"]
    assert rows["smplBikeFx2"]["status"] == "ok"


# ---------------------------------------------------------------- a video list that is no file

@pytest.mark.parametrize("kind,reason", [("dev-zero", "a character device"), ("fifo", "a FIFO"),
                                         ("directory", "a directory")])
def test_a_video_list_that_is_no_file_is_one_sentence(sample, tmp_path, kind, reason):
    videos = tmp_path / "videos.csv"
    if kind == "dev-zero":
        videos.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(videos)
    else:
        videos.mkdir()
    rc, err, _ = run_crawl(sample, tmp_path / "d", videos=str(videos), seconds=20)
    assert rc == 2 and reason in err and "Traceback" not in err, err
    assert err.startswith("mmp-crawl: error: video list") and err.count("\n") == 1
    assert not (tmp_path / "d").exists() and sample.server.count() == 0


def _read_with_small_cap(path):
    videolist.MAX_LIST_BYTES = 1 << 20
    try:
        return videolist.read_video_list(path)
    except UserError as exc:
        return str(exc)


def test_an_oversize_video_list_is_one_sentence(tmp_path):
    path = tmp_path / "huge.txt"
    with open(path, "wb") as f:
        f.truncate(2 << 20)  # sparse: 2 MiB of zeros over a 1 MiB cap
    said = run_bounded(_read_with_small_cap, path, seconds=20, memory_mb=MEMORY_MB)
    assert isinstance(said, str) and "larger than 1 MiB" in said


def test_a_large_real_list_is_read_streaming(tmp_path):
    """A HowTo100M-shaped CSV is read row by row: its entries, never several copies of its text."""
    path = tmp_path / "HowTo100M_v1.csv"
    n = 30_000
    with open(path, "w") as f:
        f.write("video_id,category_1,category_2,rank,task_id\n")
        for i in range(n):
            f.write(f"{i:011d},Food and Entertaining,Recipes,{i % 200},{i % 23000}\n")
    entries = run_bounded(videolist.read_video_list, path, seconds=60, memory_mb=MEMORY_MB)
    assert len(entries) == n and entries[-1].video_id == f"{n - 1:011d}"
    assert entries[0].meta == {"category_1": "Food and Entertaining", "category_2": "Recipes", "rank": "0",
                               "task_id": "0"}


# ---------------------------------------------------------------- a proxy that cannot work

@pytest.mark.parametrize("proxy,why", [
    ("http://user:s3cret@proxy.example:notaport", "no valid host and port"),
    ("http://user:s3cret@proxy.example", "needs both a host and a port"),
    ("ftp://user:s3cret@proxy.example:21", "scheme 'ftp'"),
    ("http://user:s3cret@:1080", "needs both a host and a port"),
    ("socks5h://user:s3cret@127.0.0.1:1080", "uses http:// proxies only"),
    ("proxy.example:3128", "scheme"),
])
def test_a_malformed_proxy_is_one_sentence_before_any_work(sample, tmp_path, proxy, why):
    rc, err, _ = run_crawl(sample, tmp_path / "d", "--proxy", proxy, seconds=20)
    assert rc == 2 and why in err and "Traceback" not in err, err
    assert err.startswith("mmp-crawl: error: proxy") and err.count("\n") == 1
    assert "s3cret" not in err
    assert not (tmp_path / "d").exists() and sample.server.count() == 0
