"""The crawl's pure parts: reading video lists, classifying errors, the budget (track choice: test_tracks)."""
import multiprocessing as mp
import time

import pytest

from pipeline.crawl import errors
from pipeline.crawl.politeness import CrawlHalted, RequestBudget
from pipeline.crawl.videolist import dedupe, parse_video_ref, read_video_list
from shards.errors import UserError

from tests.conftest import real_fixtures


def test_howto100m_csv_is_read_as_is(tmp_path):
    p = tmp_path / "HowTo100M_v1.csv"
    p.write_text("video_id,category_1,category_2,rank,task_id\nnVbIUDjzWY4,Cars & Other Vehicles,Motorcycles,27,52907\n"
                 "\n-bcdefghijk,Food,Drinks,6,25938\nnVbIUDjzWY4,Cars & Other Vehicles,Motorcycles,27,52907\n")
    entries, dropped = dedupe(read_video_list(p))
    assert [e.video_id for e in entries] == ["nVbIUDjzWY4", "-bcdefghijk"] and dropped == 1
    assert entries[0].meta == {"category_1": "Cars & Other Vehicles", "category_2": "Motorcycles",
                               "rank": "27", "task_id": "52907"}
    assert all(e.valid for e in entries)


def test_plain_lists_tsv_parquet_and_urls(tmp_path):
    plain = tmp_path / "ids.txt"
    plain.write_text("https://www.youtube.com/watch?v=nVbIUDjzWY4&t=3\nyoutu.be/CTPAZ2euJ2Q\n\n"
                     "https://youtube.com/shorts/_97kyZVWVG0\nhttp://howto100m.inria.fr/dataset/NFsc2pCdBAI.mp4\n"
                     "../x\n;rm -rf /\nabcdefghij\nabcdefghijkl\nabc defghij\n")
    entries = read_video_list(plain)
    assert [e.video_id for e in entries if e.valid] == ["nVbIUDjzWY4", "CTPAZ2euJ2Q", "_97kyZVWVG0", "NFsc2pCdBAI"]
    assert [e.raw for e in entries if not e.valid] == ["../x", ";rm -rf /", "abcdefghij", "abcdefghijkl", "abc defghij"]
    tsv = tmp_path / "v.tsv"
    tsv.write_text("video_id\tcategory_1\nnVbIUDjzWY4\tCars\n")
    assert read_video_list(tsv)[0].meta == {"category_1": "Cars"}
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"video_id": ["nVbIUDjzWY4", "bad"], "task_id": [1, 2]}), tmp_path / "v.parquet")
    got = read_video_list(tmp_path / "v.parquet")
    assert [e.valid for e in got] == [True, False] and got[0].meta == {"task_id": 1}


def test_video_list_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_video_list(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("name,category\nfoo,bar\n")
    read = read_video_list(bad)  # no id column named: first column taken as ids, all invalid
    assert not any(e.valid for e in read)
    assert parse_video_ref("  ") is None


def test_real_howto100m_excerpt():
    fixtures = real_fixtures()
    entries = read_video_list(fixtures / "meta" / "HowTo100M_v1.excerpt.csv")
    assert len(entries) == 4 and all(e.valid for e in entries)
    assert entries[2].video_id == "_97kyZVWVG0" and entries[2].meta["task_id"] == "119814"
    urls = read_video_list(fixtures / "meta" / "howto100m_videos_sample.txt")
    assert all(e.valid for e in urls) and urls[0].video_id == "NFsc2pCdBAI"
    holdout = read_video_list(fixtures / "meta" / "htm_holdout_vid.txt")
    assert holdout[0].video_id == "---0tKA3iYI" and all(e.valid for e in holdout)


def test_classification_keeps_the_real_cause():
    yt_dlp = pytest.importorskip("yt_dlp")
    from yt_dlp.utils import DownloadError, ExtractorError

    import urllib.error

    def wrapped(inner):
        try:
            try:
                raise inner
            except Exception as e:
                raise ExtractorError("Unable to download webpage", cause=e) from e
        except ExtractorError as e2:
            return DownloadError("ERROR: [youtube] x: Unable to download webpage", (type(e2), e2, None))

    http429 = urllib.error.HTTPError("https://www.youtube.com/watch?v=x", 429, "Too Many Requests", {}, None)
    status, message = errors.classify_exception(wrapped(http429))
    assert status == "rate_limited" and "429" in message
    status, message = errors.classify_exception(wrapped(ConnectionResetError(104, "Connection reset by peer")))
    assert status == "network" and "reset" in message.lower()
    assert errors.classify_message("ERROR: [youtube] abc: Sign in to confirm you’re not a bot") == "bot_check"
    assert errors.classify_message("ERROR: [youtube] abc: Video unavailable. This video is private") == "unavailable"
    assert errors.classify_message("ERROR: [youtube] abc: Private video. Sign in if you've been granted access") == "unavailable"
    assert errors.classify_message("something odd") == "error"
    # what curl says of a network failure, and a download error's bare carriage return
    assert errors.classify_message("(7) Failed to connect to 10.0.0.1 port 443: Could not connect to server") == "network"
    assert errors.classify_message("(28) Operation too slow. Less than 1 bytes/sec transferred") == "network"
    assert errors.classify_exception(DownloadError("ERROR: \r[download] Got error: (56) Recv failure")) == (
        "network", "ERROR: [download] Got error: (56) Recv failure")
    assert errors.redact("proxy http://u:p4ss@host:1 failed") == "proxy http://***@host:1 failed"


def test_ytdlp_source_gets_the_id_inside_a_url(monkeypatch, tmp_path):
    yt_dlp = pytest.importorskip("yt_dlp")
    from pipeline.crawl.stage import CrawlConfig
    from pipeline.crawl.sources import YtdlpSource

    seen = []

    def fake_extract(self, url, download=True, process=True, **kw):
        seen.append(url)
        return {"id": url[-11:], "title": "t"}

    monkeypatch.setattr(yt_dlp.YoutubeDL, "extract_info", fake_extract)
    cfg = CrawlConfig(videos="x", out=str(tmp_path), budget_dir=str(tmp_path))
    from pipeline.crawl.sessions import session_budgets

    src = YtdlpSource(cfg, session_budgets(cfg).own, None)
    assert src.get("-abcdefghij")["id"] == "-abcdefghij"
    assert seen == ["https://www.youtube.com/watch?v=-abcdefghij"]


def _source_raising(monkeypatch, tmp_path, exc):
    """A YtdlpSource whose yt-dlp raises ``exc`` from every extract_info; and the list of its calls."""
    yt_dlp = pytest.importorskip("yt_dlp")
    from pipeline.crawl.stage import CrawlConfig
    from pipeline.crawl.sessions import session_budgets
    from pipeline.crawl.sources import YtdlpSource

    calls = []

    def fake_extract(self, url, download=True, process=True, **kw):
        calls.append(url)
        raise exc

    monkeypatch.setattr(yt_dlp.YoutubeDL, "extract_info", fake_extract)
    cfg = CrawlConfig(videos="x", out=str(tmp_path), budget_dir=str(tmp_path), retries=1, backoff_base=0.01)
    return YtdlpSource(cfg, session_budgets(cfg).own, None), calls


def test_ytdlp_errors_are_classified_and_retried(monkeypatch, tmp_path):
    from yt_dlp.utils import DownloadError

    from pipeline.crawl.fetch import FetchError

    src, calls = _source_raising(monkeypatch, tmp_path, DownloadError("ERROR: [youtube] x: Video unavailable"))
    with pytest.raises(FetchError) as err:
        src.get("abcdefghijk")
    assert err.value.status == "unavailable" and len(calls) == 1  # permanent: not retried
    src, calls = _source_raising(monkeypatch, tmp_path, ConnectionResetError(104, "Connection reset by peer"))
    with pytest.raises(FetchError) as err:
        src.get("abcdefghijk")
    assert err.value.status == "network" and len(calls) == 2  # transient: retried once


@pytest.mark.parametrize("bug", [AttributeError("'NoneType' object has no attribute 'get'"), KeyError("formats"),
                                 TypeError("extract_info() got an unexpected keyword argument 'process'")])
def test_a_bug_under_ytdlp_propagates_unclassified(monkeypatch, tmp_path, bug):
    src, calls = _source_raising(monkeypatch, tmp_path, bug)
    with pytest.raises(type(bug)):
        src.get("abcdefghijk")
    assert len(calls) == 1  # not retried as if YouTube had failed


class _ErrorBody:
    """The raw answer of an HTTP error whose body cannot be read: with ``exc`` (a broken connection, or a bug)."""

    url, status, reason, headers = "https://www.youtube.com/api/timedtext", 403, "Forbidden", {}
    closed = False

    def __init__(self, exc):
        self.exc = exc

    def read(self, n=-1):
        raise self.exc

    def readable(self):
        return True

    def close(self):
        self.closed = True


@pytest.mark.parametrize("unreadable,propagates", [(ConnectionResetError(104, "reset"), False),
                                                   (AttributeError("'NoneType' object has no attribute 'recv'"), True)])
def test_an_http_error_body_is_a_hint_but_a_bug_reading_it_is_not(tmp_path, unreadable, propagates):
    from yt_dlp.networking.exceptions import HTTPError

    from pipeline.crawl.fetch import FetchError, Fetcher, RetryPolicy
    from pipeline.crawl.ytdlp_requests import Bounds, RequestLog, _BoundedResponse

    def urlopen(request):  # what a transport answers: its body read as the transports read one
        raise HTTPError(_BoundedResponse(_ErrorBody(unreadable), Bounds(1, 1 << 20), 1 << 20, RequestLog()))

    fetcher = Fetcher(RequestBudget(tmp_path / "budget"), policy=RetryPolicy(retries=0))
    fetcher._ydl.urlopen = urlopen
    url = "https://www.youtube.com/api/timedtext?v=x&lang=en"
    if propagates:
        with pytest.raises(AttributeError):
            fetcher.get(url)
        return
    with pytest.raises(FetchError) as caught:
        fetcher.get(url)
    assert caught.value.http_status == 403 and "HTTP 403" in caught.value.message


def _hammer(path, rate, n, q):
    budget = RequestBudget(path, rate)
    times = []
    for _ in range(n):
        budget.acquire()
        times.append(time.time())
    q.put(times)


def test_request_budget_is_shared_across_processes(tmp_path):
    rate, n = 40.0, 20
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(tmp_path / "b", rate, n, q)) for _ in range(2)]
    for p in procs:
        p.start()
    times = sorted(q.get(timeout=60) + q.get(timeout=60))
    for p in procs:
        p.join()
    # 40 requests from two processes at 40/s: slots are 25 ms apart, whoever asks
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert times[-1] - times[0] >= (2 * n - 1) / rate * 0.95
    # a process descheduled after its slot makes one gap short and the next long: judge the median
    assert sorted(gaps)[len(gaps) // 2] >= 0.8 / rate


def test_breaker_pauses_everyone_then_halts(tmp_path):
    b = RequestBudget(tmp_path / "b", None, breaker_threshold=2, pause_seconds=0.3, max_trips=1)
    b.record("rate_limited")
    assert b.state()["pause_until"] == 0
    b.record("rate_limited")
    assert b.state()["trips"] == 1
    t = time.time()
    b.acquire()
    assert time.time() - t >= 0.25  # paused
    b.record("ok")
    assert b.state()["trips"] == 0
    for _ in range(4):
        b.record("bot_check")
    with pytest.raises(CrawlHalted, match="circuit breaker"):
        b.acquire()
    b.reset_halt()
    b.acquire()
