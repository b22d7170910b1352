"""The adaptive request rate (the rule on a fake clock, both backends) and the server's
rate threshold and PO-token mode that stand in for YouTube's."""
import logging
import pickle
import time
import urllib.error
import urllib.request
from collections import deque

import pytest

from pipeline.crawl.politeness import _LEGACY, _STATE, AdaptiveRate, RateState, RequestBudget, BudgetState
from pipeline.crawl.ray_budget import RayRequestBudget
from demo.server import SampleServer


# ---------------------------------------------------------------- the rule, on a fake clock

def test_a_refusal_halves_the_rate_down_to_the_floor():
    rule = AdaptiveRate(8.0, floor=1.0, quiet_seconds=1000)
    s = RateState()
    assert rule.current(s) == 8.0  # a fresh address starts at the ceiling
    seen = [rule.refused(s, t) for t in (100.0, 200.0, 300.0, 400.0)]
    assert seen == [(8.0, 4.0), (4.0, 2.0), (2.0, 1.0), None]  # the last one is at the floor already
    assert rule.current(s) == 1.0
    assert AdaptiveRate(64.0).floor == 1.0  # default floor: ceiling / 64


def test_a_burst_of_refusals_is_one_decrease_per_hold():
    rule = AdaptiveRate(10.0, quiet_seconds=1000)
    s = RateState()
    changes = [rule.refused(s, 100.0 + i * 0.02) for i in range(40)]  # 40 in-flight 429s within 0.8 s
    assert [c for c in changes if c] == [(10.0, 5.0)]
    assert s.decreased_at == 100.0
    # the hold is at least min_hold (1 s); a refusal after it is news and halves again
    assert rule.refused(s, 101.05) == (5.0, 2.5)
    # slots already handed out at the old rate extend the hold by their length
    rule.refused(s, 200.0, backlog=5.0)
    assert s.hold_until >= 205.0 + 2 / rule.current(s) - 1e-9
    assert rule.refused(s, 204.0) is None


def test_increase_only_after_a_quiet_period_then_fast_to_near_the_last_refusal_then_probing():
    rule = AdaptiveRate(20.0, quiet_seconds=60)
    s = RateState()
    rule.refused(s, 0.0)  # 20 -> 10; nothing held before, so the climb resumes half-way, at 15
    assert rule.quiet(s, 59.0) is None
    rule.refused(s, 0.5)  # an echo inside the hold: no decrease, but it restarts the quiet period
    assert rule.current(s) == 10.0
    assert rule.quiet(s, 60.2) is None
    assert rule.quiet(s, 60.6) == (10.0, 15.0)
    assert rule.quiet(s, 61.0) is None  # the next step waits a whole quiet period again
    assert rule.quiet(s, 121.0) == (15.0, pytest.approx(15.2))  # probe: 1% of the refused 20
    for t in range(3, 40):
        change = rule.quiet(s, 61.0 * t)
        assert change is None or change[1] <= 20.0
        assert s.rate <= 20.0
    assert rule.current(s) == 20.0 and rule.quiet(s, 10_000.0) is None  # never above the ceiling


def test_the_climb_resumes_between_the_rate_that_held_and_the_refused_one():
    rule = AdaptiveRate(40.0, quiet_seconds=10)
    s = RateState(rate=8.0, refusal_rate=16.0, resume_rate=8.0)
    assert rule.quiet(s, 100.0) == (8.0, pytest.approx(8.16))  # 8 held for the quiet period
    rule.quiet(s, 200.0)
    rule.quiet(s, 300.0)  # ... and so did 8.16, then 8.32 -> 8.48 draws a refusal
    assert rule.refused(s, 305.0) == (pytest.approx(8.48), pytest.approx(4.24))
    assert s.resume_rate == pytest.approx(0.9 * 8.48)  # they are close: just under the refused rate
    s = RateState(rate=12.0, good_rate=6.0, refusal_rate=20.0, resume_rate=12.0)
    rule.refused(s, 0.0)  # 6 held, 12 refused: the threshold is between them
    assert s.resume_rate == pytest.approx(9.0)
    s = RateState(rate=12.0, good_rate=30.0, refusal_rate=40.0)
    rule.refused(s, 0.0)  # a rate that held long ago above today's refusal says nothing
    assert s.resume_rate == pytest.approx(9.0)  # (6 + 12) / 2, from the halved rate


def test_no_refusal_on_record_climbs_to_the_ceiling_and_a_lower_ceiling_holds_at_once():
    assert AdaptiveRate(8.0, quiet_seconds=5).quiet(RateState(rate=2.0), 10.0) == (2.0, 8.0)
    assert AdaptiveRate(8.0).current(RateState(rate=20.0)) == 8.0
    with pytest.raises(ValueError):
        AdaptiveRate(0.0)


def simulate(rule: AdaptiveRate | None, ceiling: float, threshold: float, seconds: float):
    """Requests at the budget's rate against a server that refuses beyond ``threshold`` per
    second (refusals counting toward its 1 s window): (accepted per second over the last half,
    refusals, highest rate)."""
    s, t, window, accepted, refusals, top = RateState(), 0.0, deque(), 0, 0, 0.0
    while t < seconds:
        if rule:
            rule.quiet(s, t)
        rate = rule.current(s) if rule else ceiling
        top = max(top, rate)
        while window and window[0] <= t - 1.0:
            window.popleft()
        refused = len(window) >= threshold
        window.append(t)
        if refused:
            refusals += 1
            if rule:
                rule.refused(s, t)
        elif t >= seconds / 2:
            accepted += 1
        t += 1.0 / rate
    return accepted / (seconds / 2), refusals, top


@pytest.mark.parametrize("threshold", [3.0, 10.0, 37.0])
def test_the_rule_converges_near_a_hidden_threshold(threshold):
    """Within 20% of the threshold and far fewer refusals than a fixed rate above it; a rule
    whose climb stalls, overshoots or saws down to half the threshold fails this."""
    ceiling = 3 * threshold
    rate, refusals, top = simulate(AdaptiveRate(ceiling, quiet_seconds=5.0), ceiling, threshold, 600.0)
    assert 0.8 * threshold <= rate <= threshold * 1.01, rate
    assert top <= ceiling
    fixed_rate, fixed_refusals, _ = simulate(None, ceiling, threshold, 600.0)
    assert fixed_rate < 0.1 * threshold  # a fixed rate above the threshold is refused nearly always
    assert refusals < fixed_refusals / 20


# ---------------------------------------------------------------- the file backend

def test_two_budgets_on_one_file_share_the_rate(tmp_path, caplog):
    caplog.set_level(logging.INFO, "mmp.politeness")
    a = RequestBudget(tmp_path / "youtube.budget", 8.0, quiet_seconds=0.05)
    b = RequestBudget(tmp_path / "youtube.budget", 8.0, quiet_seconds=0.05)
    assert a.current_rate() == b.current_rate() == 8.0
    a.record("rate_limited")
    b.record("bot_check")  # inside a's hold: the same event
    assert a.current_rate() == b.current_rate() == 4.0 == b.state()["rate"]
    assert (a.decreases, b.decreases) == (1, 0)
    assert "request budget youtube: rate_limited; 8.00 -> 4.00 requests/s" in [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    time.sleep(0.3)  # longer than the quiet period (0.05 s): the next request earns an increase
    b.acquire()
    assert b.increases == 1 and a.current_rate() == pytest.approx(6.0)  # half-way back to the refused 8
    assert any(r.levelno == logging.INFO and "4.00 -> 6.00 requests/s" in r.getMessage() for r in caplog.records)


def test_slots_follow_the_adapted_rate():
    rule = AdaptiveRate(40.0, quiet_seconds=1000)
    state = BudgetState()
    state.reserve(40.0, 6, rule)
    first = state.next_slot
    state.reserve(40.0, 6, rule)
    assert state.next_slot - first == pytest.approx(1 / 40, abs=1e-6)
    assert state.record("rate_limited", 5, 60.0, 3600.0, rule) == (None, (40.0, 20.0))
    before = state.next_slot
    state.reserve(40.0, 6, rule)
    assert state.next_slot - before == pytest.approx(1 / 20, abs=1e-6)


def test_fixed_and_unlimited_budgets_do_not_adapt(tmp_path):
    fixed = RequestBudget(tmp_path / "f", 8.0, adaptive=False)
    for _ in range(3):
        fixed.record("rate_limited")
    assert fixed.current_rate() == 8.0 and fixed.decreases == 0 and fixed.state()["rate"] == 8.0
    unlimited = RequestBudget(tmp_path / "u", None)
    unlimited.record("rate_limited")
    assert unlimited.current_rate() is None and unlimited.acquire() == 0 and unlimited.state()["next_slot"] == 0


def test_an_old_or_empty_state_file_reads_as_fresh_rate(tmp_path):
    old = tmp_path / "old.budget"
    old.write_bytes(_LEGACY.pack(0.0, 0.0, 2, 1))  # the 32-byte layout of earlier versions
    b = RequestBudget(old, 8.0)
    assert _LEGACY.size == 32 and b.state()["rate"] == 8.0 and b.state()["trips"] == 1  # breaker kept
    b.record("rate_limited")
    assert old.stat().st_size == _STATE.size and b.current_rate() == 4.0 and b.state()["strikes"] == 3
    for raw in (b"", b"\x00" * 7):
        path = tmp_path / f"odd{len(raw)}.budget"
        path.write_bytes(raw)
        assert RequestBudget(path, 8.0).state()["rate"] == 8.0


def test_breaker_still_trips_with_an_adaptive_rate(tmp_path):
    b = RequestBudget(tmp_path / "b", 100.0, breaker_threshold=2, pause_seconds=0.3, max_trips=1)
    b.record("rate_limited")
    b.record("rate_limited")
    assert b.state()["trips"] == 1 and b.state()["pause_until"] > time.time() + 0.1
    assert b.current_rate() == 50.0  # two refusals inside one hold: one halving


# ---------------------------------------------------------------- the Ray backend, without Ray

def test_ray_budget_adapts_through_its_actor(caplog):
    caplog.set_level(logging.INFO, "mmp.politeness")
    actor = BudgetState()  # what the named actor holds; called here in-process
    budgets = [RayRequestBudget("youtube:egress-a", 6.0, quiet_seconds=0.05) for _ in range(2)]
    for b in budgets:
        b._call = lambda method, *args: getattr(actor, method)(*pickle.loads(pickle.dumps(args)))
    budgets[0].record("rate_limited")
    assert budgets[1].current_rate() == 3.0 == budgets[1].state()["rate"] and budgets[0].decreases == 1
    assert "request budget youtube:egress-a: rate_limited; 6.00 -> 3.00 requests/s" in caplog.text
    time.sleep(0.3)
    budgets[1].acquire()
    assert budgets[1].increases == 1 and budgets[0].current_rate() == pytest.approx(4.5)


# ---------------------------------------------------------------- the server's threshold and PO tokens

@pytest.fixture
def server(tmp_path):
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "en.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nhello\n")
    with SampleServer(tmp_path) as s:
        yield s


def get(server, path):
    try:
        with urllib.request.urlopen(server.base_url + path, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_burst_above_the_threshold_gets_429s(server):
    server.rate_limit(0.5, window=20.0)  # 10 requests per 20 s: the burst below takes far less
    statuses = [get(server, "/subs/en.vtt")[0] for _ in range(15)]
    assert statuses == [200] * 10 + [429] * 5
    assert [r["fault"] for r in server.requests[-5:]] == ["ratelimit"] * 5
    server.rate_limit(None)
    assert get(server, "/subs/en.vtt")[0] == 200


def test_traffic_below_the_threshold_gets_through(server):
    server.rate_limit(20.0, window=0.5)  # 10 per half second; these come 1 per 0.2 s at most
    statuses = []
    for _ in range(8):
        statuses.append(get(server, "/subs/en.vtt")[0])
        time.sleep(0.2)
    assert statuses == [200] * 8


def test_refused_requests_count_toward_the_window(server):
    server.rate_limit(2.0, window=1.0)
    assert [server._over_limit(t) for t in (0.0, 0.1, 0.2, 0.9)] == [False, False, True, True]
    assert server._over_limit(1.05)  # 0.1 has left the window, the refused 0.2 and 0.9 have not
    assert not server._over_limit(5.0)  # quiet for a window: through again
    server.rate_limit(2.5, window=1.0)  # "beyond 2.5 a second": the third is refused
    assert [server._over_limit(t) for t in (0.0, 0.1, 0.2)] == [False, False, True]


def test_po_token_mode_empties_marked_urls_without_a_token(server):
    url = "/subs/en.vtt?lang=en&exp=xpe&fmt=vtt"
    assert get(server, url)[1].startswith(b"WEBVTT")  # off by default
    server.require_po_token(True)
    assert get(server, url) == (200, b"")
    assert server.requests[-1]["fault"] == "po_token"
    assert get(server, url + "&pot=MnQ-token")[1].startswith(b"WEBVTT")
    assert get(server, "/subs/en.vtt?lang=en&fmt=vtt")[1].startswith(b"WEBVTT")  # not marked: no token needed
    server.fault("/subs/en.vtt", "500")
    assert get(server, url)[0] == 500  # queued faults come first
