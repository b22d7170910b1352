"""Per-video budgets: the wall time and memory one piece of per-video work may take.

Each stage runs its per-video work (clean a video's tracks, decode and extract a video, import a
record) through ``Guard.run(key, fn, ...)``. Running out is that video's status, ``over_budget``
with what ran out, never its unit's failure. The budget is enforced at two depths, because Python
cannot stop native code that holds the interpreter (decord's ``get_batch`` can loop forever so):

- In the working process, a watchdog thread samples each running piece of work's age and the
  process's resident memory every 100 ms. Past the budget it raises ``OverBudget`` in the working
  thread, at its next Python instruction: that stops Python loops and Python allocations, and a
  ``MemoryError`` inside the work counts as running out of memory.
- Around the worker process, the local executor's parent reads what each worker is doing (a few
  shared numbers per running piece: since when, its budget, the resident memory when it began, its
  key; ``WorkSlots``) and kills a worker that stays past the budget by ``HARD_GRACE`` (native code,
  a huge allocation in one call). It records the key as judged, starts a new worker and sends the
  unit again; this time the guard meets the key already judged and raises ``OverBudget`` at once,
  without running it. A unit's files are only published at its end, so nothing of it is lost.
  When several pieces were running in the worker (the extraction's decode threads), the kill cannot
  tell which one held the process (a native loop holding the interpreter stops its siblings too):
  none is judged; they become suspects, the unit is sent again, and the guard runs each suspect
  alone in its process (no other piece runs beside it). A suspect that runs out again is then the
  only piece running and is judged; the others finish as if nothing happened.
  A worker that dies of anything else (the system's out-of-memory killer, a crash in a decoder)
  while a piece of work is running is judged the same way, with status ``crashed``.

Memory is the growth of the process's resident set since the piece of work began (the models and
libraries already loaded are not the video's). When pieces run side by side in threads (the
extraction's decode threads), the oldest running one is held responsible for growth.

Inline runs (``--workers 1``) and Ray tasks have the first depth only: a native hang there holds its
process until the run is stopped. The defaults are each stage's (sized for real HowTo100M videos)
and are recorded in its ``config.json``.
"""
from __future__ import annotations

import ctypes
import os
import threading
import time
from dataclasses import dataclass

OVER_BUDGET = "over_budget"  # a video's status: its work ran out of time or memory
CRASHED = "crashed"  # a video's status: its worker process died while doing it
HARD_GRACE = (1.25, 5.0)  # the executor kills at budget x 1.25 + 5 s (or MiB): the thread's chance comes first
_TICK_S = 0.1  # finer sampling cost the align benchmark 7% (at 20 ms); 100 ms is within its noise
_IDLE_EXIT_S = 5.0  # a watcher with nothing to watch for this long ends; the next piece of work starts one
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Budget:
    """What one piece of per-video work may take: ``seconds`` of wall time, ``memory_mb`` MiB of growth
    of the process's resident memory. 0 turns that bound off."""

    seconds: float
    memory_mb: float

    def __post_init__(self):
        for name in ("seconds", "memory_mb"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value != value or value < 0:
                raise ValueError(f"a budget's {name} must be a number >= 0 (0: no bound), not {value!r}")

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_mb * 2**20)

    def hard_seconds(self) -> float:
        return self.seconds * HARD_GRACE[0] + HARD_GRACE[1] if self.seconds else 0.0

    def hard_bytes(self) -> int:
        return int(self.memory_bytes * HARD_GRACE[0] + HARD_GRACE[1] * 2**20) if self.memory_mb else 0

    def describe(self) -> str:
        parts = [f"{self.seconds:g} s" if self.seconds else "no time bound",
                 f"{self.memory_mb:g} MiB" if self.memory_mb else "no memory bound"]
        return " and ".join(parts)


class OverBudget(Exception):
    """A piece of work that ran out of its budget (or whose worker died doing it): ``status`` is
    ``over_budget`` or ``crashed`` and ``what`` says what ran out, e.g. ``"wall time (60 s)"``."""

    def __init__(self, key: str, what: str, status: str = OVER_BUDGET):
        super().__init__(f"{status}: {what}")
        self.key, self.what, self.status = key, what, status

    def __reduce__(self):
        return OverBudget, (self.key, self.what, self.status)


class _Tripped(BaseException):
    """Raised asynchronously in a working thread; a BaseException so that no ``except Exception``
    in the work swallows it. ``Guard.run`` turns it into ``OverBudget``."""


def budget_number(text: str) -> float:
    """A ``--budget-*`` flag's value: a number >= 0 (0 turns that bound off)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        import argparse

        raise argparse.ArgumentTypeError(f"{text!r} is not a budget; give a number >= 0 (0: no bound)")
    return value


def add_budget_args(parser, default: "Budget", what: str) -> None:
    """``--budget-seconds`` and ``--budget-memory-mb`` on a parser whose flags are not a config dataclass's
    (``what``: the per-video work they bound, for ``--help``); ``budget_from_args`` reads them back."""
    parser.add_argument("--budget-seconds", type=budget_number, default=default.seconds,
                        help=f"wall time {what} may take (seconds; 0: no bound); past it the video is over_budget")
    parser.add_argument("--budget-memory-mb", type=budget_number, default=default.memory_mb,
                        help=f"memory {what} may add (MiB; 0: no bound); past it the video is over_budget")


def budget_from_args(args) -> "Budget":
    return Budget(args.budget_seconds, args.budget_memory_mb)


def resident_bytes(pid: int | str = "self") -> int:
    """The resident memory of a process (0 where /proc cannot tell)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _raise_in(thread_id: int, exc) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), exc)


def slot_key(key: str) -> str:
    """``key`` as the parent reads it back from a slot (its first ``WorkSlots.KEY_BYTES`` UTF-8 bytes)."""
    return key.encode("utf-8")[:WorkSlots.KEY_BYTES].decode("utf-8", "ignore")


class WorkSlots:
    """What a worker process is doing, in memory its parent can read: per slot ``[active, started
    (monotonic), seconds, memory bytes, baseline resident bytes]`` and the key's UTF-8 bytes."""

    SLOTS = 16
    KEY_BYTES = 200

    def __init__(self, ctx):
        self.numbers = ctx.RawArray("d", self.SLOTS * 5)
        self.keys = ctx.RawArray("c", self.SLOTS * self.KEY_BYTES)

    def publish(self, slot: int, key: str, started: float, budget: Budget, baseline: int) -> None:
        raw = slot_key(key).encode("utf-8")
        self.keys[slot * self.KEY_BYTES:(slot + 1) * self.KEY_BYTES] = raw.ljust(self.KEY_BYTES, b"\0")
        self.numbers[slot * 5 + 1:slot * 5 + 5] = [started, budget.seconds, budget.memory_bytes, baseline]
        self.numbers[slot * 5] = 1.0  # last: the parent reads a slot only when it is whole

    def clear(self, slot: int) -> None:
        self.numbers[slot * 5] = 0.0

    def running(self) -> list[tuple[str, float, Budget, int]]:
        """(key, started, budget, baseline) of each piece running now, oldest first."""
        found = []
        for slot in range(self.SLOTS):
            active, started, seconds, memory, baseline = self.numbers[slot * 5:slot * 5 + 5]
            if active:
                key = bytes(self.keys[slot * self.KEY_BYTES:(slot + 1) * self.KEY_BYTES]).rstrip(b"\0")
                found.append((key.decode("utf-8", "replace"), started, Budget(seconds, memory / 2**20), int(baseline)))
        return sorted(found, key=lambda item: item[1])


def judge(slots: WorkSlots, rss: int, now: float | None = None) -> tuple[str, str] | None:
    """The (key, what ran out) for which the executor kills the worker now, or None: a piece past its
    time by ``HARD_GRACE``, or the worker's memory grown past the oldest piece's budget by as much."""
    now = time.monotonic() if now is None else now
    running = slots.running()
    for key, started, budget, _ in running:
        if budget.seconds and now - started > budget.hard_seconds():
            return key, f"wall time ({budget.seconds:g} s; stopped by the executor after {now - started:.0f} s)"
    if running and rss:
        key, _, budget, baseline = running[0]
        if budget.memory_mb and rss - baseline > budget.hard_bytes():
            return key, (f"memory ({budget.memory_mb:g} MiB; the worker grew by {(rss - baseline) / 2**20:.0f} MiB "
                         f"and was stopped by the executor)")
    return None


class Guard:
    """Runs per-video work under a ``Budget`` in this process (see the module docstring).

    ``judged`` maps the keys the executor already stopped to (status, what): they are not run
    again. ``suspects`` are keys that were running beside others when the executor stopped a worker:
    each runs alone. ``slots`` (``WorkSlots``) is where a pool worker shows its parent what it is doing.
    """

    def __init__(self, slots: WorkSlots | None = None):
        self.slots = slots
        self.judged: dict = {}
        self.suspects: set = set()
        self._turn = threading.Condition()  # who may run: any number of pieces, or one suspect alone
        self._shared = 0
        self._alone = False
        self._waiting_alone = 0
        self._lock = threading.Lock()
        self._running: dict = {}  # thread id -> [key, started, budget, baseline, slot, what ran out]
        self._free = list(range(WorkSlots.SLOTS))[::-1]
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def __getstate__(self):
        raise TypeError("a Guard belongs to the process it runs in")

    def run(self, key: str, budget: Budget, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` under ``budget``; raises ``OverBudget`` when it runs out."""
        judged = self.judged.get(key) or self.judged.get(slot_key(key))  # the parent saw it cut to a slot
        if judged is not None:
            status, what = judged
            raise OverBudget(key, what, status)
        if not budget.seconds and not budget.memory_mb:
            return fn(*args, **kwargs)
        alone = key in self.suspects or slot_key(key) in self.suspects
        self._enter(alone)
        try:
            return self._run(key, budget, fn, *args, **kwargs)
        finally:
            self._leave(alone)

    def _enter(self, alone: bool) -> None:
        with self._turn:
            if alone:
                self._waiting_alone += 1
                while self._alone or self._shared:
                    self._turn.wait()
                self._waiting_alone -= 1
                self._alone = True
            else:
                while self._alone or self._waiting_alone:
                    self._turn.wait()
                self._shared += 1

    def _leave(self, alone: bool) -> None:
        with self._turn:
            if alone:
                self._alone = False
            else:
                self._shared -= 1
            self._turn.notify_all()

    def _run(self, key: str, budget: Budget, fn, *args, **kwargs):
        tid = threading.get_ident()
        started, baseline = time.monotonic(), resident_bytes()
        record = [key, started, budget, baseline, None, None]  # ..., its slot, what ran out
        with self._lock:
            record[4] = self._free.pop() if self._free else None
            self._running[tid] = record
            if record[4] is not None and self.slots is not None:
                self.slots.publish(record[4], key, started, budget, baseline)
        self._start()
        try:
            try:
                result = fn(*args, **kwargs)
                grown = resident_bytes() - baseline if budget.memory_mb else 0
                if grown > budget.memory_bytes and len(self._running) == 1:  # what the last sample missed
                    raise OverBudget(key, f"memory ({budget.memory_mb:g} MiB; grew by {grown / 2**20:.0f} MiB)")
                return result
            finally:
                self._end(tid, record)
        except _Tripped:
            self._end(tid, record)  # the trip may have struck inside the first call
            raise OverBudget(key, record[5]) from None
        except MemoryError:
            raise OverBudget(key, f"memory (an allocation failed within {budget.describe()})") from None

    def _end(self, tid: int, record: list) -> None:
        with self._lock:
            if self._running.get(tid) is record:
                del self._running[tid]
                if record[4] is not None:
                    if self.slots is not None:
                        self.slots.clear(record[4])
                    self._free.append(record[4])
        if record[5] is not None:
            _raise_in(tid, None)  # a trip sent but not yet delivered must not strike later

    def _start(self) -> None:
        with self._lock:  # the watcher decides to leave under the same lock: one of us sees the other
            if self._thread is None or not self._thread.is_alive():  # not alive: gone with a fork
                self._thread = threading.Thread(target=self._watch, name="mmp-budget", daemon=True)
                self._thread.start()
        self._wake.set()

    def _watch(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._lock:
                idle = not self._running
                if idle and time.monotonic() - idle_since > _IDLE_EXIT_S:
                    self._thread = None  # a guard no longer used leaves no thread behind
                    return
            if idle:
                self._wake.wait(_TICK_S * 5)
                self._wake.clear()
                continue
            idle_since = time.monotonic()
            time.sleep(_TICK_S)
            now, rss = time.monotonic(), resident_bytes()
            with self._lock:
                oldest = min(self._running.values(), key=lambda e: e[1], default=None)
                for tid, entry in self._running.items():
                    key, started, budget, baseline, _, what = entry
                    if what is not None:
                        continue
                    if budget.seconds and now - started > budget.seconds:
                        entry[5] = f"wall time ({budget.seconds:g} s)"
                    elif budget.memory_mb and entry is oldest and rss and rss - baseline > budget.memory_bytes:
                        entry[5] = f"memory ({budget.memory_mb:g} MiB; grew by {(rss - baseline) / 2**20:.0f} MiB)"
                    if entry[5] is not None:
                        _raise_in(tid, ctypes.py_object(_Tripped))
