"""Every fault the local server can play, and what the crawl makes of it."""
import json
import time

import pytest

from pipeline.crawl import stage as crawl
from shards.verify import verify_dir

from tests.conftest import read_all_rows, read_all_samples

EN = "/subs/smplPancak1/en-orig.vtt"
DE = "/subs/smplPancak1/de.vtt"


def run(sample, out, *extra):
    rc = crawl.main(sample.crawl_args(out, "--langs", "en,de", *extra))
    rows = {r["video_id"]: r for r in read_all_rows(out / "crawl")}
    return rc, rows


def hits(server, path):
    return [r for r in server.requests if r["path"] == path]


def test_429_with_retry_after_is_honoured(sample, tmp_path):
    sample.server.fault(EN, "429:retry-after=1", "ok")
    rc, rows = run(sample, tmp_path / "d")
    assert rc == 0 and rows["smplPancak1"]["status"] == "ok"
    first, second = hits(sample.server, EN)
    assert first["status"] == 429 and second["status"] == 200
    assert second["t"] - first["t"] >= 0.95


def test_429_without_retry_after_backs_off_then_succeeds(sample, tmp_path):
    sample.server.fault(EN, "429", "429", "ok")
    rc, rows = run(sample, tmp_path / "d")
    assert rows["smplPancak1"]["status"] == "ok"
    assert [h["status"] for h in hits(sample.server, EN)] == [429, 429, 200]


def test_persistent_429_is_a_transient_failure_with_its_cause(sample, tmp_path):
    sample.server.fault(EN, "429", sticky=True)
    rc, rows = run(sample, tmp_path / "d")
    row = rows["smplPancak1"]
    assert row["status"] == "rate_limited"
    assert "HTTP 429" in row["error"] and "after 2 retries" in row["error"]
    assert len(hits(sample.server, EN)) == 3
    assert "smplPancak1" not in read_all_samples(tmp_path / "d" / "crawl")
    assert verify_dir(tmp_path / "d" / "crawl").ok


@pytest.mark.parametrize("fault,status", [("500", "server_error"), ("reset", "network"), ("truncate", "network"),
                                          ("stall:3", "network")])
def test_transient_faults_retry_then_record(sample, tmp_path, fault, status):
    sample.server.fault(EN, fault, sticky=True)
    rc, rows = run(sample, tmp_path / "d", "--retries", "1")
    row = rows["smplPancak1"]
    # the track's failure is recorded on the track; the German one fetched after it is kept
    assert row["en_status"] == status and row["status"] == "partial" and row["de_status"] == "ok", row
    assert len(hits(sample.server, EN)) == 2
    # the other videos are unaffected
    assert rows["smplBikeFx2"]["status"] == "ok"


@pytest.mark.parametrize("fault", ["500", "reset", "truncate", "stall:3"])
def test_transient_faults_recover(sample, tmp_path, fault):
    sample.server.fault(EN, fault, "ok")
    rc, rows = run(sample, tmp_path / "d")
    assert rows["smplPancak1"]["status"] == "ok"
    assert read_all_samples(tmp_path / "d" / "crawl")["smplPancak1"]["en.vtt"].startswith(b"WEBVTT")


@pytest.mark.parametrize("fault,expect", [("403", "HTTP 403"), ("404", "HTTP 404")])
def test_permanent_track_faults_make_the_video_partial(sample, tmp_path, fault, expect):
    sample.server.fault(EN, fault, sticky=True)
    rc, rows = run(sample, tmp_path / "d")
    row = rows["smplPancak1"]
    assert row["status"] == "partial"
    assert expect in row["en_error"]
    assert len(hits(sample.server, EN)) == 1  # not retried: retrying cannot help
    info = json.loads(read_all_samples(tmp_path / "d" / "crawl")["smplPancak1"]["info.json"])
    assert expect in info["tracks"]["en"]["error"]


def test_invalid_utf8_is_kept_repaired_and_flagged(sample, tmp_path):
    sample.server.fault(EN, "garbage", sticky=True)
    rc, rows = run(sample, tmp_path / "d")
    assert rows["smplPancak1"]["status"] == "ok"
    s = read_all_samples(tmp_path / "d" / "crawl")["smplPancak1"]
    s["en.vtt"].decode("utf-8")
    assert "invalid UTF-8" in json.loads(s["info.json"])["tracks"]["en"]["warning"]


def test_bot_check_redirect_is_classified(sample, tmp_path):
    sample.server.fault(EN, "sorry", sticky=True)
    rc, rows = run(sample, tmp_path / "d", "--retries", "0")
    assert rows["smplPancak1"]["status"] == "bot_check"


def test_all_tracks_failing_is_an_error_without_sample(sample, tmp_path):
    sample.server.fault(EN, "403", sticky=True)
    sample.server.fault(DE, "403", sticky=True)
    rc, rows = run(sample, tmp_path / "d")
    assert rows["smplPancak1"]["status"] == "error"
    assert "every offered track failed" in rows["smplPancak1"]["error"]
    assert verify_dir(tmp_path / "d" / "crawl").ok


@pytest.mark.parametrize("fault", ["429", "empty"])  # an empty 200 is a refusal too
def test_circuit_breaker_halts_instead_of_burning_the_list(sample, tmp_path, capsys, fault):
    for vid in ("smplPancak1", "smplBikeFx2", "smplMixed03", "-smplDash05", "smplPancak6"):
        for key in ("en-orig", "en", "de"):
            sample.server.fault(f"/subs/{vid}/{key}.vtt", fault, sticky=True)
    rc = crawl.main(sample.crawl_args(tmp_path / "d", "--langs", "en,de", "--retries", "1", "--unit-size", "100",
                                      "--breaker-threshold", "2", "--breaker-pause", "0.2",
                                      "--breaker-max-pauses", "1"))
    assert rc == 3
    assert "circuit breaker" in capsys.readouterr().err
    # the unit was not written: nothing is recorded as failed for good, a later run redoes it
    assert not list((tmp_path / "d" / "crawl").glob("*.parquet"))
    assert len(sample.server.requests) < 12


def test_retry_failed_recrawls_only_transient_failures(sample, tmp_path):
    out = tmp_path / "d"
    sample.server.fault(EN, "429", sticky=True)
    rc, rows = run(sample, out, "--retries", "0", "--unit-size", "3")
    assert rows["smplPancak1"]["status"] == "rate_limited"
    sample.server.clear_faults()
    n_before = len(sample.server.requests)
    rc, rows = run(sample, out, "--retries", "0", "--unit-size", "3", "--retry-failed")
    assert rc == 0
    assert rows["smplPancak1"]["status"] == "ok" and rows["smplPancak1"]["attempts"] == 2
    assert rows["smplBikeFx2"]["attempts"] == 1
    new = sample.server.requests[n_before:]
    assert {r["path"].split("/")[2] for r in new} == {"smplPancak1"}
    assert len(rows) == 9 and verify_dir(out / "crawl").ok
    samples = read_all_samples(out / "crawl")
    assert "smplPancak1" in samples and "smplBikeFx2" in samples
    assert not list((out / "crawl").glob(".*retry*"))


def test_retry_failed_with_nothing_to_retry_changes_nothing(sample, tmp_path, capsys):
    out = tmp_path / "d"
    run(sample, out)
    before = {p.name: p.read_bytes() for p in (out / "crawl").iterdir() if p.suffix in (".tar", ".parquet")}
    run(sample, out, "--retry-failed")
    assert "0 units hold transient failures" in capsys.readouterr().out
    after = {p.name: p.read_bytes() for p in (out / "crawl").iterdir() if p.suffix in (".tar", ".parquet")}
    assert before == after


def test_proxy_is_used_and_secrets_stay_secret(sample, tmp_path):
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n.youtube.com\tTRUE\t/\tTRUE\t0\tSID\tcookiesecretvalue\n")
    proxy = f"http://alice:proxysecretpw@127.0.0.1:{sample.server.port}"
    out = tmp_path / "d"
    rc = crawl.main(sample.crawl_args(out, "--langs", "en", "--cookies", str(cookies), "--proxy", proxy))
    assert rc == 0
    # a proxied request carries the absolute URL in its request line
    assert any(r["raw"].startswith("http://") for r in sample.server.requests)
    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert b"cookiesecretvalue" not in blob and b"proxysecretpw" not in blob
    config = json.loads((out / "crawl" / "config.json").read_text())
    assert config["config"]["proxies"] == [f"http://***@127.0.0.1:{sample.server.port}"]
    assert config["config"]["cookies"] == str(cookies)


def test_proxy_failure_message_hides_the_password(sample, tmp_path):
    out = tmp_path / "d"
    rc = crawl.main(sample.crawl_args(out, "--langs", "en", "--retries", "0",
                                      "--proxy", "http://bob:hunter2pw@127.0.0.1:9"))
    rows = read_all_rows(out / "crawl")
    assert any(r["status"] == "network" for r in rows)
    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert b"hunter2pw" not in blob


def test_ytdlp_refusing_a_video_is_recorded_on_its_row(sample, tmp_path, monkeypatch):
    yt_dlp = pytest.importorskip("yt_dlp")

    def private(self, *args, **kwargs):
        raise yt_dlp.utils.DownloadError("ERROR: [youtube] smplPancak1: Video unavailable. This video is private")

    monkeypatch.setattr(yt_dlp.YoutubeDL, "process_ie_result", private)
    rc, rows = run(sample, tmp_path / "d", "--download-video")
    assert rc == 0
    assert rows["smplPancak1"]["status"] == "ok" and rows["smplPancak1"]["video_status"] == "unavailable"
    assert "This video is private" in rows["smplPancak1"]["video_error"]


def test_a_bug_under_ytdlp_fails_the_unit_instead_of_becoming_an_error_row(sample, tmp_path, monkeypatch, caplog):
    yt_dlp = pytest.importorskip("yt_dlp")

    def broken(self, *args, **kwargs):  # a bug of ours, or a yt-dlp API change
        raise AttributeError("'NoneType' object has no attribute 'get'")

    monkeypatch.setattr(yt_dlp.YoutubeDL, "process_ie_result", broken)
    rc, rows = run(sample, tmp_path / "d", "--download-video")
    assert rc == 1 and rows == {}  # the unit failed (a re-run redoes it); no video is recorded as an error
    assert "AttributeError: 'NoneType' object has no attribute 'get'" in caplog.text
    assert "Traceback" in caplog.text
