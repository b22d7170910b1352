"""A request budget, an adaptive rate and a circuit breaker shared by every process of a machine.

YouTube rate-limits per address, so the budget belongs to the machine (or egress
address), not to a worker. Its state (``BudgetState``) is a small struct in a file,
updated under an exclusive ``flock``: the time of the next free request slot, a pause
that holds every worker, the breaker's counters and the adaptive rate. A request
reserves the next slot under the lock and sleeps outside it, so N processes together
make at most R requests per second.

R adapts (``AdaptiveRate``, AIMD): a 429 or a bot check halves it for the whole
address; after a quiet period without refusals it climbs back, quickly to just under
the rate that drew the last refusal, then in small probing steps, never above the
ceiling the user set. A fresh address thus settles just under the server's threshold
instead of being throttled, or blocked, for sending at a fixed rate above it.

Repeated refusals also trip the breaker, which pauses everyone (doubling each time)
instead of burning through the id list; after ``max_trips`` pauses in a row with no
success in between, the crawl halts.

Under ``--executor ray`` the same state lives in a named Ray actor per egress
address (``ray_budget.RayRequestBudget``), so the budget holds across processes and nodes that
send requests from one address.
"""
from __future__ import annotations

import fcntl
import logging
import os
import struct
import tempfile
import time
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path

from shards.private import open_private, private_dir

log = logging.getLogger("mmp.politeness")
# next_slot, pause_until, strikes, trips: the whole file before the rate adapted
_LEGACY = struct.Struct("<ddqq")
# ... then RateState's eight floats
_STATE = struct.Struct("<ddqq8d")


class CrawlHalted(RuntimeError):
    """The circuit breaker tripped too often: YouTube keeps refusing this address."""


def default_budget_dir() -> Path:
    return Path(os.environ.get("MMP_BUDGET_DIR") or Path(tempfile.gettempdir()) / f"mmp-budget-{os.getuid()}")


# ---------------------------------------------------------------- the rule

@dataclass
class RateState:
    """What the adaptive rule remembers, shared by every process of an address."""
    rate: float = 0.0          # requests/s now; 0 means never set, i.e. the ceiling
    refusal_rate: float = 0.0  # the rate the last acted-on refusal came at: the threshold is at most this
    good_rate: float = 0.0     # the rate before the last increase: it held for a quiet period
    resume_rate: float = 0.0   # where the climb after the last decrease goes in one step
    changed_at: float = 0.0    # time of the last increase or decrease
    decreased_at: float = 0.0
    refused_at: float = 0.0    # time of the last refusal, acted on or not: each one restarts the quiet period
    hold_until: float = 0.0    # refusals before this are echoes of the rate before the last decrease


@dataclass
class AdaptiveRate:
    """Additive increase, multiplicative decrease of a request rate, on plain floats.

    Pure: no clock, no I/O; each call takes ``now`` and updates a ``RateState``.

    - A refusal halves the rate (not below ``floor``), unless it comes within the hold
      after the last decrease: requests already in flight, or whose slots were handed out
      at the old rate (``backlog`` seconds of them), all come back refused together, and
      that is one signal, not N. The hold is ``backlog`` plus ``hold_requests`` requests at
      the new rate, at least ``min_hold`` seconds.
    - The threshold lies between the last rate that held and the refused one, so the climb
      back resumes at their midpoint, at most ``near`` x the refused rate (just under the
      threshold once the two are close, without a long sawtooth from half of it).
    - After ``quiet_seconds`` with no refusal and no change, one increase: to that resume
      rate if below it, else a probe of ``probe`` x the refused rate, plus the distance
      already climbed past it (so a threshold that has risen is found in a few doublings,
      not hundreds of steps). Without a refusal on record, the ceiling.
    - Never above ``ceiling``.
    """
    ceiling: float
    floor: float = 0.0          # 0: ceiling / 64
    quiet_seconds: float = 60.0
    min_hold: float = 1.0
    hold_requests: float = 2.0
    near: float = 0.9
    probe: float = 0.01

    def __post_init__(self):
        if not self.ceiling or self.ceiling <= 0:
            raise ValueError("an adaptive rate needs a ceiling above 0 requests/s")
        self.floor = min(self.ceiling, self.floor if self.floor and self.floor > 0 else self.ceiling / 64)

    def current(self, s: RateState) -> float:
        return min(self.ceiling, max(self.floor, s.rate or self.ceiling))

    def refused(self, s: RateState, now: float, backlog: float = 0.0) -> tuple[float, float] | None:
        """A 429 or bot check at ``now``: (old, new) rate if it lowered the rate, else None."""
        s.refused_at = max(s.refused_at, now)
        if now < s.hold_until:
            return None
        old = self.current(s)
        new = max(self.floor, old / 2)
        held = s.good_rate if new < s.good_rate < old else new
        s.rate, s.refusal_rate, s.resume_rate = new, old, min(self.near * old, (held + old) / 2)
        s.hold_until = now + max(self.min_hold, max(0.0, backlog) + self.hold_requests / new)
        if new >= old:  # already at the floor
            return None
        s.changed_at = s.decreased_at = now
        return old, new

    def quiet(self, s: RateState, now: float) -> tuple[float, float] | None:
        """Called before each request: (old, new) rate if the quiet period earned an increase."""
        old = self.current(s)
        s.rate = old
        if old >= self.ceiling or now - max(s.changed_at, s.refused_at) < self.quiet_seconds:
            return None
        known = s.refusal_rate
        if known <= 0:
            new = self.ceiling
        elif old < s.resume_rate:
            new = s.resume_rate
        else:
            new = old + self.probe * known + max(0.0, old - known)
        s.rate, s.good_rate, s.changed_at = min(self.ceiling, new), old, now
        return old, s.rate


def _log_change(name: str, reason: str, change: tuple[float, float]) -> None:
    old, new = change
    level = logging.WARNING if new < old else logging.INFO
    log.log(level, "request budget %s: %s; %.2f -> %.2f requests/s", name, reason, old, new)


def halted_message(trips: int, name: str | None = None) -> str:
    where = f" from {name}" if name else ""
    return (f"the circuit breaker paused the crawl {trips - 1} times in a row and YouTube still refuses requests"
            f"{where}; stopped. Wait, then re-run (completed units are kept), ideally with --cookies, --proxy "
            f"or a lower --max-requests-per-second")


# ---------------------------------------------------------------- the shared state

class BudgetState:
    """Slots, pause, breaker and adaptive rate of one address: in a file, or in a named Ray actor.

    As an actor, every crawl task using that address, on any node, asks it for its slot.
    The actor's clock decides the slots and a task is told how long to wait, so the
    nodes' clocks need not agree.
    """

    def __init__(self):
        self.next_slot = 0.0
        self.pause_until = 0.0
        self.strikes = 0
        self.trips = 0
        self.adaptive = RateState()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "BudgetState":
        """A file of the current size, or of the size before the rate adapted (its slot, pause and
        breaker are kept, the rate starts afresh); anything else (empty, torn) is fresh state."""
        state = cls()
        if len(raw) in (_STATE.size, _LEGACY.size):
            fields = (_STATE if len(raw) == _STATE.size else _LEGACY).unpack(raw)
            state.next_slot, state.pause_until, state.strikes, state.trips = fields[:4]
            if len(fields) > 4:
                state.adaptive = RateState(*fields[4:])
        return state

    def to_bytes(self) -> bytes:
        return _STATE.pack(self.next_slot, self.pause_until, self.strikes, self.trips, *astuple(self.adaptive))

    def reserve(self, rate: float | None, max_trips: int, rule: AdaptiveRate | None = None,
                max_wait: float | None = None, probe_every: float = 3600.0):
        """(seconds to wait, None, rate change or None), or (None, trips, None) when the breaker halted.

        With ``max_wait`` nothing raises and nothing waits for refusals: (None, None, why) when the
        breaker's pause, or a rate the refusals slowed, puts the slot further away than that, ``why`` a
        phrase for what was not requested. Plain pacing at the ceiling is waited for. A halt lets one
        request through every ``probe_every`` seconds, whose answer clears it or keeps it."""
        now = time.time()
        if self.trips > max_trips:
            if max_wait is None:
                return None, self.trips, None
            if now < self.pause_until:
                return None, None, (f"the breaker halted them after {self.trips - 1} pauses in a row; one request "
                                    f"probes again in {self.pause_until - now:.0f} s")
            self.pause_until = now + probe_every  # this request is the probe
            return 0.0, None, None
        change = None
        if rule is not None:
            change = rule.quiet(self.adaptive, now)
            rate = rule.current(self.adaptive)
        start = max(now, self.next_slot, self.pause_until)
        if max_wait is not None and start - now > max_wait:
            if self.pause_until > now + max_wait:
                return None, None, f"the breaker paused them for {self.pause_until - now:.0f} s more"
            if rule is not None and rate < rule.ceiling:
                return None, None, (f"YouTube's refusals slowed them to {rate:.2g} requests/s; their next "
                                    f"request slot was {start - now:.0f} s away")
        if rate:
            self.next_slot = start + 1.0 / rate
        return start - now, None, change

    def record(self, outcome: str, threshold: int, pause_seconds: float, max_pause: float,
               rule: AdaptiveRate | None = None, max_trips: int | None = None):
        """(breaker trip as (pause, trips) or None, rate change as (old, new) or None). A success while
        halted (``acquire_within``'s probe) also ends the wait for the next probe."""
        if outcome == "ok":
            if max_trips is not None and self.trips > max_trips:
                self.pause_until = min(self.pause_until, time.time())
            self.strikes = self.trips = 0
            return None, None
        now = time.time()
        change = rule.refused(self.adaptive, now, self.next_slot - now) if rule is not None else None
        self.strikes += 1
        if self.strikes >= threshold:
            pause = min(max_pause, pause_seconds * (2 ** self.trips))
            self.pause_until = max(self.pause_until, now + pause)
            self.strikes = 0
            self.trips += 1
            return (pause, self.trips), change
        return None, change

    def reset_halt(self, max_trips: int) -> None:
        if self.trips > max_trips:
            self.trips = self.strikes = 0

    def current_rate(self, rule: AdaptiveRate) -> float:
        return rule.current(self.adaptive)

    def state(self, rate: float | None = None, rule: AdaptiveRate | None = None) -> dict:
        """The fields, for reports and tests; ``rate`` is the one requests keep to now (None: unlimited)."""
        a = self.adaptive
        return {"next_slot": self.next_slot, "pause_until": self.pause_until, "strikes": self.strikes,
                "trips": self.trips, "rate": rule.current(a) if rule is not None else rate,
                "refusal_rate": a.refusal_rate, "rate_changed_at": a.changed_at, "rate_decreased_at": a.decreased_at}


class BudgetBase:
    """What both backends share: their settings, the rule, the per-process counters, the logging."""

    def __init__(self, name: str, rate: float | None, breaker_threshold: int, pause_seconds: float,
                 max_pause: float, max_trips: int, adaptive: bool, quiet_seconds: float, min_rate: float | None):
        self.name = name
        self.rate = rate if rate and rate > 0 else None
        self.breaker_threshold = max(1, breaker_threshold)
        self.pause_seconds = pause_seconds
        self.max_pause = max_pause
        self.max_trips = max_trips
        # unlimited means no spacing, so there is nothing to adapt
        self.rule = AdaptiveRate(self.rate, min_rate or 0.0, quiet_seconds) if adaptive and self.rate else None
        self.requests = 0
        self.deferred = 0   # requests not made because their turn was too far away (acquire_within)
        self.decreases = 0  # rate changes this process made; the rate itself is shared
        self.increases = 0

    def _rate_changed(self, reason: str, change) -> None:
        if change:
            if change[1] < change[0]:
                self.decreases += 1
            else:
                self.increases += 1
            _log_change(self.name, reason, change)

    def _increased(self, change) -> None:
        if change:
            self._rate_changed(f"no refusal for {self.rule.quiet_seconds:g}s", change)

    def _recorded(self, outcome: str, tripped, change) -> None:
        self._rate_changed(outcome, change)
        if tripped:
            log.warning("circuit breaker (%s): %s responses in a row; pausing every worker for %.0fs (pause %d)",
                        self.name, outcome, tripped[0], tripped[1])

    def _wait(self, wait: float) -> float:
        if wait > 0:
            time.sleep(wait)
        self.requests += 1
        return wait

    def _granted(self, wait: float | None, change) -> str | None:
        """``acquire_within``'s end: None after waiting for the slot, or the reason it was not granted."""
        if wait is None:
            self.deferred += 1
            return change
        self._increased(change)
        self._wait(wait)
        return None


class RequestBudget(BudgetBase):
    """The budget of one machine: ``BudgetState`` in a file under ``flock``, shared by its processes."""

    def __init__(self, path: Path, rate: float | None = None, *, breaker_threshold: int = 5,
                 pause_seconds: float = 60.0, max_pause: float = 3600.0, max_trips: int = 6,
                 adaptive: bool = True, quiet_seconds: float = 60.0, min_rate: float | None = None):
        self.path = Path(path)
        super().__init__(self.path.stem, rate, breaker_threshold, pause_seconds, max_pause, max_trips,
                         adaptive, quiet_seconds, min_rate)
        private_dir(self.path.parent)  # other users must not plant the state file or a link in its place

    @contextmanager
    def _locked(self):
        fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state = BudgetState.from_bytes(os.pread(fd, _STATE.size, 0))
            yield state
            os.pwrite(fd, state.to_bytes(), 0)
        finally:
            os.close(fd)

    def acquire(self) -> float:
        """Wait for this process's turn; return the seconds waited."""
        with self._locked() as state:
            wait, trips, change = state.reserve(self.rate, self.max_trips, self.rule)
        if wait is None:
            raise CrawlHalted(halted_message(trips))
        self._increased(change)
        return self._wait(wait)

    def acquire_within(self, max_wait: float) -> str | None:
        """Like ``acquire``, but refusals never make it wait past ``max_wait`` seconds nor raise: None once
        waited, else why not (nothing reserved). Under a halt, one request every ``max_pause`` seconds
        probes whether the refusals are over. For work that can wait for a later run rather than hold up
        what may not wait (``reserve``)."""
        with self._locked() as state:
            wait, _, change = state.reserve(self.rate, self.max_trips, self.rule, max_wait, self.max_pause)
        return self._granted(wait, change)

    def record(self, outcome: str) -> None:
        """Tell the breaker and the rate how a request went: ``ok``, or a refusal (``rate_limited``,
        ``bot_check``, or any other status the caller counts as one)."""
        with self._locked() as state:
            tripped, change = state.record(outcome, self.breaker_threshold, self.pause_seconds, self.max_pause,
                                           self.rule, self.max_trips)
        self._recorded(outcome, tripped, change)

    def reset_halt(self) -> None:
        """Clear a halt left by an earlier run (pauses still in force, and the learnt rate, are kept)."""
        with self._locked() as state:
            state.reset_halt(self.max_trips)

    def current_rate(self) -> float | None:
        """Requests/s every process of this machine keeps to now (None: unlimited)."""
        if self.rule is None:
            return self.rate
        with self._locked() as state:
            return state.current_rate(self.rule)

    def state(self) -> dict:
        with self._locked() as state:
            return state.state(self.rate, self.rule)
