"""No work thrown away: tracks fetched before a failure are kept, and --retry-failed asks
only for what is missing. Requests are counted from the local server's own log."""
import json
from collections import Counter

from pipeline.crawl import stage as crawl

from pipeline.crawl import errors
from shards.verify import verify_dir

from tests.conftest import read_all_rows, read_all_samples

VID = "smplPancak1"
LANGS = "en,de,fr,ru,es,cs,sw,zh,vi"
KEYS = {"en": "en-orig", "de": "de", "fr": "fr", "ru": "ru", "es": "es", "cs": "cs", "sw": "sw",
        "zh": "zh-Hans", "vi": "vi"}


def path(lang, vid=VID):
    return f"/subs/{vid}/{KEYS[lang]}.vtt"


def run(sample, out, *extra):
    rc = crawl.main(sample.crawl_args(out, "--langs", LANGS, "--unit-size", "3", *extra))
    rows = {r["video_id"]: r for r in read_all_rows(out / "crawl")}
    return rc, rows


def hits(server, since=0):
    return Counter(r["path"] for r in server.requests[since:] if r["path"].startswith("/subs/"))


def test_a_429_on_the_fifth_track_keeps_the_four_fetched(sample, tmp_path):
    out = tmp_path / "d"
    sample.server.fault(path("es"), "429", sticky=True)
    rc, rows = run(sample, out, "--retries", "1")
    row = rows[VID]
    assert row["status"] == "partial"
    assert [row[f"{l}_status"] for l in ("en", "de", "fr", "ru")] == ["ok"] * 4
    assert row["es_status"] == "rate_limited" and "HTTP 429" in row["es_error"]
    # the refusal stops this video's requests: the rest is left for the next run, marked transient
    for lang in ("cs", "sw", "zh", "vi"):
        assert row[f"{lang}_status"] == "rate_limited" and "not requested" in row[f"{lang}_error"]
    seen = hits(sample.server)
    # es is a machine translation: not retried within the run (--translation-retries 0), left for the next
    assert seen[path("es")] == 1 and all(seen[path(l)] == 0 for l in ("cs", "sw", "zh", "vi"))
    s = read_all_samples(out / "crawl")[VID]
    assert {k for k in s if k.endswith(".vtt")} == {"en.vtt", "de.vtt", "fr.vtt", "ru.vtt"}
    info = json.loads(s["info.json"])
    assert info["tracks"]["es"]["status"] == "rate_limited" and info["tracks"]["en"]["status"] == "ok"
    assert verify_dir(out / "crawl").ok


def test_retry_failed_fetches_only_the_missing_tracks_and_merges_them(sample, tmp_path, capsys):
    out = tmp_path / "d"
    sample.server.fault(path("es"), "429", sticky=True)
    run(sample, out, "--retries", "0")
    before = read_all_samples(out / "crawl")[VID]
    sample.server.clear_faults()
    n0 = len(sample.server.requests)
    rc, rows = run(sample, out, "--retries", "0", "--retry-failed")
    assert rc == 0 and "1 units hold transient failures" in capsys.readouterr().out
    assert rows[VID]["status"] == "ok" and rows[VID]["attempts"] == 2
    again = hits(sample.server, n0)
    # every missing track once, none that the first run holds, and no other video of the unit
    assert again == Counter({path(l): 1 for l in ("es", "cs", "sw", "zh", "vi")})
    whole = hits(sample.server)  # over both runs: each track once, the refused one once more
    assert {p: n for p, n in whole.items() if p.startswith(f"/subs/{VID}/")} == \
        {path(l): 2 if l == "es" else 1 for l in LANGS.split(",")}
    after = read_all_samples(out / "crawl")[VID]
    assert {k for k in after if k.endswith(".vtt")} == {f"{l}.vtt" for l in LANGS.split(",")}
    for lang in ("en", "de", "fr", "ru"):
        assert after[f"{lang}.vtt"] == before[f"{lang}.vtt"]
    assert len(rows) == 9 and verify_dir(out / "crawl").ok
    assert not list((out / "crawl").glob(".*retry*"))


def test_a_retry_that_fails_again_keeps_what_it_had(sample, tmp_path):
    out = tmp_path / "d"
    sample.server.fault(path("fr"), "429", sticky=True)
    run(sample, out, "--retries", "0")
    n0 = len(sample.server.requests)
    rc, rows = run(sample, out, "--retries", "0", "--retry-failed")
    row = rows[VID]
    assert row["status"] == "partial" and row["attempts"] == 2
    assert row["en_status"] == row["de_status"] == "ok" and row["fr_status"] == "rate_limited"
    assert hits(sample.server, n0) == Counter({path("fr"): 1})
    s = read_all_samples(out / "crawl")[VID]
    assert "en.vtt" in s and "de.vtt" in s and "fr.vtt" not in s
    # a third run with the fault gone completes the video
    sample.server.clear_faults()
    rc, rows = run(sample, out, "--retries", "0", "--retry-failed")
    assert rows[VID]["status"] == "ok" and rows[VID]["attempts"] == 3


def test_transient_failure_before_any_track_is_a_video_level_status(sample, tmp_path):
    out = tmp_path / "d"
    sample.server.fault(path("en"), "429", sticky=True)
    rc, rows = run(sample, out, "--retries", "0", "--langs", "en,de")
    row = rows[VID]
    assert row["status"] == "rate_limited" and row["en_status"] == "rate_limited"
    assert row["de_status"] == "rate_limited"  # not requested after the refusal
    assert VID not in read_all_samples(out / "crawl")


def test_empty_200_and_html_are_transient_retried_and_seen_by_the_breaker(sample, tmp_path):
    out = tmp_path / "d"
    sample.server.fault(path("de"), "empty", sticky=True)
    sample.server.fault(path("en", "smplBikeFx2"), "html", sticky=True)
    rc, rows = run(sample, out, "--retries", "2", "--translation-retries", "2", "--langs", "en,de", "--breaker-threshold", "100")
    assert rows[VID]["status"] == "partial" and rows[VID]["de_status"] == errors.BAD_RESPONSE
    assert "empty 200" in rows[VID]["de_error"]
    assert rows["smplBikeFx2"]["en_status"] == errors.BAD_RESPONSE
    assert "HTML page" in rows["smplBikeFx2"]["en_error"]
    seen = hits(sample.server)
    assert seen[path("de")] == 3 and seen[path("en", "smplBikeFx2")] == 3  # retried with backoff
    # they recover on --retry-failed
    sample.server.clear_faults()
    rc, rows = run(sample, out, "--retries", "0", "--langs", "en,de", "--retry-failed")
    assert rows[VID]["status"] == "ok" and rows["smplBikeFx2"]["status"] == "ok"


def _pot_info(sample, vid, pot: bool):
    """Rewrite a sample info dict so its tracks are marked as needing a PO token (exp=xpe)."""
    p = sample.info / f"{vid}.info.json"
    info = json.loads(p.read_text())
    for group in ("subtitles", "automatic_captions"):
        for formats in info[group].values():
            for fmt in formats:
                fmt["url"] += ("&" if "?" in fmt["url"] else "?") + "exp=xpe" + ("&pot=token123" if pot else "")
    p.write_text(json.dumps(info))


def test_po_token_tracks_are_transient_per_track_failures(sample, tmp_path):
    sample.server.require_po_token(True)
    _pot_info(sample, VID, pot=False)
    _pot_info(sample, "smplBikeFx2", pot=True)
    out = tmp_path / "d"
    rc, rows = run(sample, out, "--retries", "4", "--translation-retries", "4", "--langs", "en,de")
    row = rows[VID]
    assert row["status"] == errors.PO_TOKEN_REQUIRED
    assert row["en_status"] == row["de_status"] == errors.PO_TOKEN_REQUIRED
    assert "PO token" in row["en_error"] and "retries" not in row["en_error"]
    # without a token the empty answer is the same every time: each track is asked once, whatever --retries
    seen = hits(sample.server)
    assert seen[path("en")] == seen[path("de")] == 1
    assert rows["smplBikeFx2"]["status"] == "ok"  # a URL that carries its token is served
    # once the token is there (a provider plugin, or another run), --retry-failed gets the tracks
    _pot_info(sample, VID, pot=True)
    rc, rows = run(sample, out, "--retries", "0", "--langs", "en,de", "--retry-failed")
    assert rows[VID]["status"] == "ok"


def test_tracks_with_no_fetchable_url_are_recorded(sample, tmp_path):
    p = sample.info / "smplBikeFx2.info.json"
    info = json.loads(p.read_text())
    info["subtitles"]["de"] = [{"ext": "vtt", "protocol": "m3u8_native", "url": "http://127.0.0.1:9/x.m3u8"},
                               {"ext": "json3"}]
    for key in list(info["automatic_captions"]):
        if key != "de":
            del info["automatic_captions"][key]
    p.write_text(json.dumps(info))
    out = tmp_path / "d"
    rc, rows = run(sample, out, "--langs", "de")
    row = rows["smplBikeFx2"]
    assert row["status"] == "error" and row["de_status"] == "no_url" and row["de_kind"] == "manual"
    s = read_all_samples(out / "crawl")["smplBikeFx2"]
    track = json.loads(s["info.json"])["tracks"]["de"]
    assert (track["kind"], track["key"], track["status"]) == ("manual", "de", "no_url")
    assert verify_dir(out / "crawl").ok


def test_a_host_allowed_later_is_fetched_by_retry_failed(sample, tmp_path, capsys):
    out = tmp_path / "d"
    args = sample.crawl_args(out, "--langs", "en,de", "--unit-size", "3")
    at = args.index("--allow-host")
    without = args[:at] + args[at + 2:]
    assert crawl.main(without) == 0
    printed = capsys.readouterr().out
    assert "URL policy refused" in printed and "--allow-host HOST --retry-failed" in printed
    rows = {r["video_id"]: r for r in read_all_rows(out / "crawl")}
    assert rows[VID]["status"] == "refused_url" and not sample.server.requests
    rc, rows = run(sample, out, "--langs", "en,de", "--retry-failed")
    assert rc == 0 and "units hold transient failures (or failures of this machine's settings" in capsys.readouterr().out
    assert rows[VID]["status"] == "ok" and rows[VID]["attempts"] == 2
    assert {k for k in read_all_samples(out / "crawl")[VID] if k.endswith(".vtt")} == {"en.vtt", "de.vtt"}


def test_download_video_added_to_a_finished_crawl_fetches_only_the_videos(sample_with_videos, tmp_path, capsys):
    sample = sample_with_videos
    out = tmp_path / "d"
    rc, rows = run(sample, out, "--langs", "en,de")
    assert rc == 0 and not any(r["path"].startswith("/videos/") for r in sample.server.requests)
    subs = hits(sample.server)
    rc, rows = run(sample, out, "--langs", "en,de", "--download-video")
    assert rc == 0 and "hold videos not downloaded yet" in capsys.readouterr().out
    assert hits(sample.server) == subs  # no subtitle asked for again
    assert rows[VID]["video_status"] == "ok" and rows[VID]["en_status"] == "ok"
    s = read_all_samples(out / "crawl")[VID]
    assert rows[VID]["video_ext"] in s and {"en.vtt", "de.vtt"} <= set(s)
    videos = Counter(r["path"] for r in sample.server.requests if r["path"].startswith("/videos/"))
    assert videos and all(n == 1 for n in videos.values())
    # a third run has nothing left to do
    n = len(sample.server.requests)
    run(sample, out, "--langs", "en,de", "--download-video")
    assert len(sample.server.requests) == n


def test_tracks_an_extraction_without_a_js_runtime_missed_are_asked_again():
    from pipeline.crawl.video import Held, needs_retry

    row = {"video_id": VID, "status": "partial", "ytdlp_warnings": "js_runtime", "en_status": "ok",
           "de_status": "none"}
    assert needs_retry(row, ["en", "de"], runtime_ready=True)
    assert Held(row, runtime_ready=True).final_langs(["en", "de"]) == ["en"]
    # still no runtime: asking again would find the same nothing
    assert not needs_retry(row, ["en", "de"]) and Held(row).final_langs(["en", "de"]) == ["en", "de"]
    ran = dict(row, ytdlp_warnings=None)  # a runtime was there: "none" is YouTube's answer
    assert not needs_retry(ran, ["en", "de"], runtime_ready=True)
    refused = dict(ran, de_status="refused_url", de_error="not fetched: cdn.example is not a YouTube host "
                   "(--allow-host cdn.example fetches from it)")
    assert needs_retry(refused, ["en", "de"]) and Held(refused).final_langs(["en", "de"]) == ["en"]
    private = dict(refused, de_error="not fetched: r1.googlevideo.com resolves to a private address (10.0.0.1)")
    assert not needs_retry(private, ["en", "de"])  # no setting lifts that one


def test_a_video_gone_since_keeps_its_sample_when_retried(sample_with_videos, tmp_path):
    sample = sample_with_videos
    out = tmp_path / "d"
    sample.server.fault(path("es"), "429", sticky=True)
    run(sample, out, "--retries", "0")
    before = read_all_samples(out / "crawl")
    sample.server.clear_faults()
    for vid in (VID, "smplNoSubs4"):  # YouTube no longer has them: their pages fail on the next run
        (sample.info / f"{vid}.info.json").unlink()
    rc, rows = run(sample, out, "--retries", "0", "--retry-failed", "--download-video")
    assert rc == 0
    after = read_all_samples(out / "crawl")
    for vid in (VID, "smplNoSubs4"):
        assert "retry failed (unavailable" in rows[vid]["error"] and "earlier sample kept" in rows[vid]["error"]
        assert after[vid].keys() == before[vid].keys() and after[vid]["info.json"] == before[vid]["info.json"]
        # the video could not be had: its own status, so later runs do not reopen the unit for it
        assert rows[vid]["video_status"] == "unavailable" and "not downloaded" in rows[vid]["video_error"]
    assert rows["smplNoSubs4"]["status"] == "no_subtitles" and rows["smplNoSubs4"]["title"]
    assert rows[VID]["es_status"] == "rate_limited"  # still missing, still transient
    n = len(sample.server.requests)
    rc, rows = run(sample, out, "--download-video")  # nothing left that a download could fetch
    assert rc == 0 and len(sample.server.requests) == n


def test_a_refusal_no_setting_lifts_is_not_retried(sample, tmp_path, capsys):
    p = sample.info / "smplBikeFx2.info.json"
    info = json.loads(p.read_text())
    for formats in info["automatic_captions"].values():
        for fmt in formats:
            fmt["url"] = "ftp://" + fmt["url"].split("://", 1)[1]
    p.write_text(json.dumps(info))
    out = tmp_path / "d"
    run(sample, out, "--langs", "en,fr")
    rc, rows = run(sample, out, "--langs", "en,fr", "--retry-failed")
    assert rows["smplBikeFx2"]["fr_status"] == "refused_url" and "0 units hold" in capsys.readouterr().out
