"""A request budget and a circuit breaker shared by every process of a machine.

YouTube rate-limits per address, so the budget belongs to the machine (or egress
address), not to a worker. Its state is 32 bytes in a file, updated under an
exclusive ``flock``: the time of the next free request slot, a pause that holds
every worker, and the breaker's counters. A request reserves the next slot under
the lock and sleeps outside it, so N processes together make at most R requests
per second. Repeated 429s or bot checks pause everyone (doubling each time)
instead of burning through the id list; after ``max_trips`` pauses in a row with
no success in between, the crawl halts.

Under ``--executor ray`` the same state lives in a named Ray actor per egress
address (``RayRequestBudget``), so the budget holds across processes and nodes that
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
from pathlib import Path

log = logging.getLogger("mmp.politeness")
_STATE = struct.Struct("<ddqq")  # next_slot, pause_until, strikes, trips


class CrawlHalted(RuntimeError):
    """The circuit breaker tripped too often: YouTube keeps refusing this address."""


def default_budget_dir() -> Path:
    return Path(os.environ.get("MMP_BUDGET_DIR") or Path(tempfile.gettempdir()) / f"mmp-budget-{os.getuid()}")


class RequestBudget:
    def __init__(self, path: Path, rate: float | None = None, *, breaker_threshold: int = 5,
                 pause_seconds: float = 60.0, max_pause: float = 3600.0, max_trips: int = 6):
        self.path = Path(path)
        self.rate = rate if rate and rate > 0 else None
        self.breaker_threshold = max(1, breaker_threshold)
        self.pause_seconds = pause_seconds
        self.max_pause = max_pause
        self.max_trips = max_trips
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.requests = 0

    @contextmanager
    def _locked(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, _STATE.size, 0)
            state = list(_STATE.unpack(raw)) if len(raw) == _STATE.size else [0.0, 0.0, 0, 0]
            yield state
            os.pwrite(fd, _STATE.pack(*state), 0)
        finally:
            os.close(fd)

    def acquire(self) -> float:
        """Wait for this process's turn; return the seconds waited."""
        with self._locked() as state:
            if state[3] > self.max_trips:
                raise CrawlHalted(
                    f"the circuit breaker paused the crawl {state[3] - 1} times in a row and YouTube still refuses "
                    f"requests; stopped. Wait, then re-run (completed units are kept), ideally with --cookies, "
                    f"--proxy or a lower --max-requests-per-second")
            now = time.time()
            start = max(now, state[0], state[1])
            if self.rate:
                state[0] = start + 1.0 / self.rate
        wait = start - now
        if wait > 0:
            time.sleep(wait)
        self.requests += 1
        return wait

    def record(self, outcome: str) -> None:
        """Tell the breaker how a request went: ``ok``, ``rate_limited`` or ``bot_check``."""
        with self._locked() as state:
            if outcome == "ok":
                state[2] = 0
                state[3] = 0
                return
            state[2] += 1
            if state[2] >= self.breaker_threshold:
                pause = min(self.max_pause, self.pause_seconds * (2 ** state[3]))
                state[1] = max(state[1], time.time() + pause)
                state[2] = 0
                state[3] += 1
                log.warning("circuit breaker: %s responses in a row; pausing every worker for %.0fs (pause %d)",
                            outcome, pause, state[3])

    def reset_halt(self) -> None:
        """Clear a halt left by an earlier run (pauses still in force are kept)."""
        with self._locked() as state:
            if state[3] > self.max_trips:
                state[3] = 0
                state[2] = 0

    def state(self) -> dict:
        with self._locked() as state:
            return {"next_slot": state[0], "pause_until": state[1], "strikes": state[2], "trips": state[3]}


# ---------------------------------------------------------------- across nodes (Ray)

class _BudgetState:
    """The same state as the budget file, held by one named Ray actor per egress address.

    Every crawl task using that address, on any node, asks this actor for its slot.
    The actor's clock decides the slots and a task is told how long to wait, so the
    nodes' clocks need not agree.
    """

    def __init__(self):
        self.next_slot = 0.0
        self.pause_until = 0.0
        self.strikes = 0
        self.trips = 0

    def reserve(self, rate: float | None, max_trips: int):
        """(seconds to wait, None), or (None, trips) when the breaker has halted the crawl."""
        if self.trips > max_trips:
            return None, self.trips
        now = time.time()
        start = max(now, self.next_slot, self.pause_until)
        if rate:
            self.next_slot = start + 1.0 / rate
        return start - now, None

    def record(self, outcome: str, threshold: int, pause_seconds: float, max_pause: float):
        """Returns (pause, trips) when this outcome tripped the breaker, else None."""
        if outcome == "ok":
            self.strikes = self.trips = 0
            return None
        self.strikes += 1
        if self.strikes >= threshold:
            pause = min(max_pause, pause_seconds * (2 ** self.trips))
            self.pause_until = max(self.pause_until, time.time() + pause)
            self.strikes = 0
            self.trips += 1
            return pause, self.trips
        return None

    def reset_halt(self, max_trips: int) -> None:
        if self.trips > max_trips:
            self.trips = self.strikes = 0

    def state(self) -> dict:
        return {"next_slot": self.next_slot, "pause_until": self.pause_until, "strikes": self.strikes,
                "trips": self.trips}


def budget_actor_name(name: str) -> str:
    return f"mmp-budget:{name}"


class RayRequestBudget:
    """``RequestBudget``'s interface (acquire, record, reset_halt, state) over a Ray actor.

    Used by the crawl under ``--executor ray``: one detached, named actor per egress
    address (``name``), shared by every crawl task on every node that sends requests
    from that address, and by consecutive crawls on the same cluster. Needs a Ray
    connection (a task's worker has one; the driver after ``ray.init``).
    """

    NAMESPACE = "mmp"

    def __init__(self, name: str, rate: float | None = None, *, breaker_threshold: int = 5,
                 pause_seconds: float = 60.0, max_pause: float = 3600.0, max_trips: int = 6):
        self.name = name
        self.rate = rate if rate and rate > 0 else None
        self.breaker_threshold = max(1, breaker_threshold)
        self.pause_seconds = pause_seconds
        self.max_pause = max_pause
        self.max_trips = max_trips
        self.requests = 0
        self._actor = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_actor"] = None
        return state

    @property
    def actor(self):
        if self._actor is None:
            import ray

            self._actor = ray.remote(_BudgetState).options(
                name=budget_actor_name(self.name), namespace=self.NAMESPACE, get_if_exists=True,
                lifetime="detached", num_cpus=0, max_restarts=-1).remote()
        return self._actor

    def _call(self, method, *args):
        import ray

        return ray.get(getattr(self.actor, method).remote(*args))

    def acquire(self) -> float:
        wait, trips = self._call("reserve", self.rate, self.max_trips)
        if wait is None:
            raise CrawlHalted(
                f"the circuit breaker paused the crawl {trips - 1} times in a row and YouTube still refuses "
                f"requests from {self.name}; stopped. Wait, then re-run (completed units are kept), ideally with "
                f"--cookies, --proxy or a lower --max-requests-per-second")
        if wait > 0:
            time.sleep(wait)
        self.requests += 1
        return wait

    def record(self, outcome: str) -> None:
        tripped = self._call("record", outcome, self.breaker_threshold, self.pause_seconds, self.max_pause)
        if tripped:
            log.warning("circuit breaker (%s): %s responses in a row; pausing every worker for %.0fs (pause %d)",
                        self.name, outcome, tripped[0], tripped[1])

    def reset_halt(self) -> None:
        self._call("reset_halt", self.max_trips)

    def state(self) -> dict:
        return self._call("state")
