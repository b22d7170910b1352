"""A storm of refusals on machine translations, as YouTube answers in 2026 (yt-dlp #13831): the own
tracks go on, translations wait for a later run, nothing is fetched twice; and budgets per session."""
import json
import time
from collections import Counter

import pytest

from pipeline.crawl import errors
from pipeline.crawl import stage as crawl
from pipeline.crawl.config import CrawlConfig
from pipeline.crawl.politeness import CrawlHalted, RequestBudget
from pipeline.crawl.sessions import (ANONYMOUS, DeferringBudget, Deferred, SessionKey, account_of,
                                     projection, session_budgets)
from tests.conftest import read_all_rows, read_all_samples

LANGS = "en,de,fr,ru,es,cs,sw,zh,vi"


def run(sample, out, *extra):
    rc = crawl.main(sample.crawl_args(out, "--langs", LANGS, "--unit-size", "2", *extra))
    return rc, {r["video_id"]: r for r in read_all_rows(out / "crawl")}


def own_langs(row):
    return [l for l in LANGS.split(",") if row.get(f"{l}_kind") in ("manual", "asr")]


def translated_langs(row):
    return [l for l in LANGS.split(",") if row.get(f"{l}_kind") == "translated"]


def test_a_storm_on_translations_never_costs_an_own_track(sample, tmp_path):
    sample.server.refuse_translations(True)
    out = tmp_path / "d"
    storm = ("--breaker-threshold", "2", "--breaker-pause", "1", "--breaker-max-pauses", "1",
             "--translation-max-wait", "0.5")
    rc, rows = run(sample, out, *storm)
    assert rc == 0  # not halted: the refusals were all of translations
    crawled = {v: r for v, r in rows.items() if r.get("title")}
    assert len(crawled) == 6
    own_seen = 0
    for vid, row in crawled.items():
        for lang in own_langs(row):
            assert row[f"{lang}_status"] == "ok", (vid, lang, row.get(f"{lang}_error"))
            own_seen += 1
        for lang in translated_langs(row):
            assert row[f"{lang}_status"] == errors.RATE_LIMITED, (vid, lang)
    assert own_seen == 8  # en ASR x5, manual de, en, es and fr
    # the video with a manual Spanish track has it, whatever became of its translations
    assert rows["smplMixed03"]["es_kind"] == "manual" and rows["smplMixed03"]["es_status"] == "ok"
    # two refusals tripped the translations' breaker; after it nothing more was asked of them
    refused = [r for r in sample.server.requests if r["fault"] == "translation"]
    assert len(refused) == 2
    held = [row[f"{l}_error"] for row in crawled.values() for l in translated_langs(row)]
    assert any("held back" in e for e in held) and all("not requested" in e or "HTTP 429" in e for e in held)
    stats = [json.loads(p.read_text())["counts"] for p in (out / "crawl").glob("*.stats.json")]
    assert sum(s.get("translations_deferred", 0) for s in stats) == 3  # one per later video
    # the own tracks' budget never saw a refusal: no strike, no pause
    budgets = sample.root / "budget"
    own = RequestBudget(budgets / "youtube.anonymous@local.own.budget").state()
    translations = RequestBudget(budgets / "youtube.anonymous@local.translations.budget").state()
    assert own["trips"] == own["strikes"] == 0 and own["pause_until"] == 0
    assert translations["trips"] == 1

    # Once YouTube serves them again, --retry-failed fetches every translation once and no own track again.
    sample.server.refuse_translations(False)
    time.sleep(1.2)  # the translations' pause runs out
    before = len(sample.server.requests)
    rc, rows = run(sample, out, "--retry-failed", *storm)
    assert rc == 0
    for vid in crawled:
        assert not [l for l in LANGS.split(",") if rows[vid].get(f"{l}_status") in errors.TRANSIENT], vid
    again = Counter(r["path"] for r in sample.server.requests[before:] if r["path"].startswith("/subs/"))
    assert all(n == 1 for n in again.values())
    whole = Counter(r["path"] for r in sample.server.requests if r["path"].startswith("/subs/"))
    assert sum(n - 1 for n in whole.values()) == 2  # over both runs, only the two refused files twice
    samples = read_all_samples(out / "crawl")
    assert {k for k in samples["smplPancak1"] if k.endswith(".vtt")} == {f"{l}.vtt" for l in LANGS.split(",")}


def test_a_refused_own_track_still_holds_back_the_rest_of_its_video(sample, tmp_path):
    out = tmp_path / "d"
    sample.server.fault("/subs/smplBikeFx2/de.vtt", "429", sticky=True)
    rc, rows = run(sample, out, "--retries", "0")
    row = rows["smplBikeFx2"]
    assert row["de_kind"] == "manual" and row["de_status"] == errors.RATE_LIMITED
    for lang in translated_langs(row):
        assert row[f"{lang}_status"] == errors.RATE_LIMITED and "de track was refused" in row[f"{lang}_error"]
    assert not any(r["path"].startswith("/subs/smplBikeFx2/") and "tlang" in r["raw"]
                   for r in sample.server.requests)


def test_a_deferring_budget_never_waits_past_its_bound_nor_raises_a_halt(tmp_path):
    budget = RequestBudget(tmp_path / "t.budget", None, breaker_threshold=1, pause_seconds=30, max_trips=1)
    deferring = DeferringBudget(budget, max_wait=0.5)
    deferring.acquire()  # nothing against it: granted at once
    budget.record(errors.RATE_LIMITED)  # trips the breaker: 30 s pause
    started = time.monotonic()
    with pytest.raises(Deferred, match="paused them"):
        deferring.acquire()
    assert time.monotonic() - started < 5
    assert budget.deferred == 1
    budget.record(errors.RATE_LIMITED)  # a second trip: past max_trips, halted
    with pytest.raises(Deferred, match="halted"):
        deferring.acquire()
    with pytest.raises(CrawlHalted):  # what the own tracks' acquire does on a halt
        budget.acquire()


def test_budgets_are_keyed_on_the_session_and_its_egress(tmp_path):
    cookies = tmp_path / "cookies.txt"
    far = int(time.time()) + 86400 * 300
    cookies.write_text("# Netscape HTTP Cookie File\n" + "".join(
        f".youtube.com\tTRUE\t/\tTRUE\t{far}\t{name}\t{value}\n"
        for name, value in (("SID", "s3cr3t-sid"), ("SAPISID", "abc/def"), ("LOGIN_INFO", "li:1"))))
    account = account_of(str(cookies))
    assert account.startswith("account-") and "s3cr3t" not in account and account_of(None) == ANONYMOUS
    cfg = CrawlConfig(videos="x", out=str(tmp_path), budget_dir=str(tmp_path / "b"), cookies=str(cookies))
    signed_in = session_budgets(cfg)
    assert signed_in.key == SessionKey(account, "local")
    assert signed_in.videos.rate == pytest.approx(2000 / 3600)  # the wiki's figure for accounts
    # an account's videos/hour are one budget whatever the egress; its requests' budgets are per egress
    elsewhere = session_budgets(CrawlConfig(videos="x", out=str(tmp_path), budget_dir=str(tmp_path / "b"),
                                            cookies=str(cookies), proxies=["http://p9:8080"]))
    assert elsewhere.videos.path == signed_in.videos.path and elsewhere.own.path != signed_in.own.path
    anonymous = session_budgets(CrawlConfig(videos="x", out=str(tmp_path), budget_dir=str(tmp_path / "b")))
    assert anonymous.videos.rate == pytest.approx(300 / 3600)
    proxied = session_budgets(CrawlConfig(videos="x", out=str(tmp_path), budget_dir=str(tmp_path / "b"),
                                          proxies=["http://p1:8080"]))
    assert proxied.key.egress.startswith("proxy-")
    paths = {b.path for s in (signed_in, anonymous, proxied) for b in s.all()}
    assert len(paths) == 9  # three budgets for each of three sessions, none shared
    assert "s3cr3t" not in " ".join(str(p) for p in paths)


def test_projection_names_the_budget_that_bounds_it():
    cfg = CrawlConfig(videos="x", out="y")
    line = projection(cfg, 1_200_000, account=ANONYMOUS)
    # 8 translations a video at 0.5 requests/s: 225 videos/hour, under the guest session's 300
    assert "225 videos/hour" in line and "--translation-requests-per-second" in line
    assert "222.2 days in one session" in line and "guest session may extract 300/hour" in line
    fast = CrawlConfig(videos="x", out="y", max_requests_per_second=10, translation_requests_per_second=10)
    line = projection(fast, 1_200_000, account="account-x", sessions=4)
    # one account's 2,000 videos/hour hold across its four egresses (the wiki's limit is per account)
    assert "25.0 days in 4 sessions at 500 videos/hour" in line and "bound by --videos-per-hour" in line
    assert "one account across all its egresses" in line
    anonymous = projection(fast, 1_200_000, account=ANONYMOUS, sessions=4)
    assert "41.7 days in 4 sessions at 300 videos/hour" in anonymous  # four guest sessions, four budgets
    assert "no request limit" in projection(CrawlConfig(videos="x", out="y", max_requests_per_second=None), 10)
    odd = CrawlConfig(videos="x", out="y", translation_requests_per_second=0, videos_per_hour=-5)
    assert "days" in projection(odd, 100, account=ANONYMOUS)  # nonsense limits are ignored, never a crash


def test_check_projects_the_input_at_the_session_budget(sample, capsys):
    crawl.main(["--check", "--videos", str(sample.videos), "--videos-per-hour", "100",
                "--max-requests-per-second", "10", "--translation-requests-per-second", "10"])
    line = next(l for l in capsys.readouterr().out.splitlines() if l.split()[1:2] == ["session"])
    # 7 distinct valid ids in the sample's list, at 100 videos/hour
    assert "anonymous" in line and "7 videos take 0.0 days in one session at 100 videos/hour" in line
    assert "bound by --videos-per-hour" in line


def test_a_halt_of_the_translations_lets_one_probe_through_per_pause(tmp_path):
    budget = RequestBudget(tmp_path / "t.budget", None, breaker_threshold=1, pause_seconds=0.2, max_pause=0.4,
                           max_trips=0)
    budget.record(errors.RATE_LIMITED)  # one trip past max_trips 0: halted, paused 0.2 s
    assert "halted" in budget.acquire_within(0.05)
    time.sleep(0.3)
    assert budget.acquire_within(0.05) is None  # the pause is over: one request probes
    assert "halted" in budget.acquire_within(0.05)  # and only one, until the next pause ends
    budget.record("ok")  # the probe was served: the halt is over
    assert budget.acquire_within(0.05) is None and budget.state()["trips"] == 0


def test_translations_wait_for_plain_pacing_but_not_for_a_rate_refusals_slowed(tmp_path):
    budget = RequestBudget(tmp_path / "p.budget", 20.0, breaker_threshold=100, min_rate=0.5)
    started = time.monotonic()
    for _ in range(4):  # slots 50 ms apart at the ceiling: waited for although each is past max_wait 0.01
        assert budget.acquire_within(0.01) is None
    assert time.monotonic() - started >= 0.1
    for _ in range(8):  # refusals, each past the hold of the last decrease: the rate halves to the floor
        budget.record(errors.RATE_LIMITED)
        state = budget._locked
        with state() as s:
            s.adaptive.hold_until = 0.0
    assert budget.state()["rate"] == 0.5
    budget.acquire_within(5.0)  # takes the next slot (2 s apart at 0.5/s)
    why = budget.acquire_within(0.01)
    assert why is not None and "slowed them to 0.5 requests/s" in why


def test_a_deferring_budget_pickles(tmp_path):
    import pickle

    deferring = DeferringBudget(RequestBudget(tmp_path / "d.budget", 1.0), 5.0)
    again = pickle.loads(pickle.dumps(deferring))
    assert again.max_wait == 5.0 and again.rate == 1.0
