"""Where work units run. Executors know nothing about subtitles or features.

An executor takes a picklable function and a list of units and yields each unit's
result as it completes. ``inline`` runs in this process (debugging, one worker),
``local`` a process pool, ``ray`` one Ray task per unit on a Ray cluster (joined
with an address, else a local instance bound to 127.0.0.1). A slice ``--rank i
--world-size n`` is applied before the executor sees the units, so it composes with
any executor.

Whichever runs a unit, the function is the same and completion is decided by the
unit's stats file, so a unit retried after its worker died never duplicates output.

Each executor's ``run`` takes an optional ``stop`` (``pipeline.runtime.interrupt.StopRequest``):
once it is requested no unit starts, units in flight get ``GRACE_S`` seconds, and the
rest are abandoned (pool workers killed, Ray tasks cancelled). Pool workers die with
their parent, and one whose setup fails sends its reason before it goes.

Progress events travel with the work: an executor hands its sink (a queue, a Ray
batcher) to a function that has ``bind_events(sink)`` once per worker process, before
its first unit; no module variable holds it.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import queue
import time
import traceback
from typing import Callable, Iterable, Iterator

from pipeline.runtime.budget import CRASHED, OVER_BUDGET, Guard, WorkSlots, judge, resident_bytes
from pipeline.runtime.interrupt import GRACE_S, UnitAbandoned, bind_worker_to_parent

# Re-runs of a Ray task whose worker process or node died (--max-unit-retries).
DEFAULT_UNIT_RETRIES = 3
SETUP_FAILED = "worker_setup_failed"  # event kind: a worker's initializer raised (the message follows)


def bind_events(fn: Callable, events) -> None:
    """Give ``fn`` the sink its progress events go to (a queue, a Ray batcher, or None), if it takes one."""
    bind = getattr(fn, "bind_events", None)
    if bind is not None:
        bind(events)


def bind_guard(fn: Callable, guard) -> None:
    """Give ``fn`` the per-video budget ``Guard`` of the process it runs in, if it takes one."""
    bind = getattr(fn, "bind_guard", None)
    if bind is not None:
        bind(guard)


def _serve(payload: bytes, tasks, results, events, slots, parent_pid: int) -> None:
    """A pool worker: unpickle the unit function and its setup once (one pickle, so the stage its
    setup prepared is the one its units use), then do the units sent to it until ``None``. Each
    task carries the keys of the unit that the parent already judged over budget (see budget.py)."""
    bind_worker_to_parent(parent_pid)
    fn, initializer, initargs = pickle.loads(payload)
    bind_events(fn, events)
    guard = Guard(slots)
    bind_guard(fn, guard)
    if initializer is not None:
        try:
            initializer(*initargs)
        except Exception as exc:  # the parent only sees a dead worker: tell it why, then die
            logging.getLogger("mmp").exception("worker setup failed")
            events.put((SETUP_FAILED, f"{type(exc).__name__}: {exc}"))
            events.close()
            events.join_thread()  # the message is in the pipe before the process goes
            os._exit(1)
    while (task := tasks.get()) is not None:
        key, unit, judged, suspects = task
        guard.judged, guard.suspects = judged, suspects
        try:
            reply = pickle.dumps((key, fn(unit), None, None))
        except Exception as exc:
            failed = _raised(unit, exc)
            reply = pickle.dumps((key, None, failed.error, failed.error_type))
        results.put(reply)


class EventSink:
    """A worker process's progress events to the process showing progress, and the warnings it sent."""

    def __init__(self, target):
        self.target, self.warned = target, set()  # target: a queue or a Ray batcher

    def put(self, event) -> None:
        self.target.put(event)

    def warn(self, text: str) -> None:
        if text not in self.warned:
            self.warned.add(text)
            self.target.put(("warning", text))


class Outcome:
    """What became of one unit: its result, or the exception's text and type name if it raised."""

    __slots__ = ("unit", "result", "error", "error_type")

    def __init__(self, unit, result=None, error: str | None = None, error_type: str | None = None):
        self.unit, self.result, self.error, self.error_type = unit, result, error, error_type


def type_name(cls: type) -> str:
    """``module.QualName`` of an exception type, as an ``Outcome`` records it."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _raised(unit, exc: BaseException) -> Outcome:
    return Outcome(unit, error="".join(traceback.format_exception(exc)), error_type=type_name(type(exc)))


class InlineExecutor:
    name = "inline"

    def __init__(self, initializer=None, initargs=()):
        self.initializer, self.initargs = initializer, initargs

    def run(self, fn: Callable, units: Iterable, on_event: Callable, stop=None) -> Iterator[Outcome]:
        events: "queue.SimpleQueue" = queue.SimpleQueue()
        bind_events(fn, events)
        bind_guard(fn, Guard())
        if self.initializer is not None:
            self.initializer(*self.initargs)
        try:
            for unit in units:
                if stop is not None and stop.requested:
                    return
                try:
                    if stop is not None:
                        stop.inline = True
                    outcome = Outcome(unit, result=fn(unit))
                except UnitAbandoned:  # the first Ctrl-C: the unit writer has removed its temporaries
                    return
                except Exception as exc:  # a bug in a unit: recorded, other units go on
                    outcome = _raised(unit, exc)
                finally:
                    if stop is not None:
                        stop.inline = False
                while not events.empty():
                    on_event(events.get())
                yield outcome
        finally:
            bind_events(fn, None)
            bind_guard(fn, None)


class _PoolWorker:
    """One pool process and its own pipes (a worker killed mid-write damages only its own)."""

    def __init__(self, ctx, payload: bytes):
        self.tasks, self.results, self.events = ctx.Queue(), ctx.Queue(), ctx.Queue()
        self.slots = WorkSlots(ctx)
        self.proc = ctx.Process(target=_serve, args=(payload, self.tasks, self.results, self.events, self.slots,
                                                     os.getpid()))
        self.proc.start()

    def stop(self, abandon: bool) -> None:
        _stop_workers([(self.proc, self.tasks)], abandon)


class LocalExecutor:
    """``workers`` processes (spawned: no state forked from the parent), each given one unit at a time.

    It also enforces the per-video budgets (``pipeline.runtime.budget``): a worker stuck past a
    budget, or dead while doing a video, is replaced, the video judged, and its unit sent again
    (at most ``MAX_RESENDS`` times; then the unit fails as before and the next run redoes it).
    """

    name = "local"
    MAX_RESENDS = 20

    def __init__(self, workers: int, initializer=None, initargs=()):
        self.workers = max(1, int(workers))
        self.initializer, self.initargs = initializer, initargs

    def run(self, fn: Callable, units: Iterable, on_event: Callable, stop=None) -> Iterator[Outcome]:
        units = list(units)
        if not units:
            return
        ctx = mp.get_context("spawn")
        setup_errors: list = []

        def on_worker_event(event):
            if isinstance(event, tuple) and event and event[0] == SETUP_FAILED:
                setup_errors.append(event[1])
            else:
                on_event(event)

        payload = pickle.dumps((fn, self.initializer, self.initargs))
        workers = [_PoolWorker(ctx, payload) for _ in range(min(self.workers, len(units)))]
        todo = list(range(len(units)))[::-1]  # unit indices not yet sent, next one last
        running: dict = {}  # worker number -> the unit index it is doing
        judged: dict = {}  # unit index -> {key: (status, what)} found by the budget watch
        suspects: dict = {}  # unit index -> keys running beside others when a worker was stopped
        resent: dict = {}  # unit index -> how many times it was sent again
        deadline = None  # set by a stop request: when units still in flight are abandoned
        finished = False
        try:
            while todo or running:
                if stop is not None and stop.requested and deadline is None:
                    todo.clear()
                    deadline = time.monotonic() + GRACE_S
                if deadline is not None and time.monotonic() >= deadline:
                    return
                for w, worker in enumerate(workers):
                    if todo and w not in running:
                        running[w] = todo.pop()
                        worker.tasks.put((w, units[running[w]], dict(judged.get(running[w], {})),
                                          set(suspects.get(running[w], ()))))
                replies = _replies([w.results for w in workers], timeout=0.2)
                for worker in workers:
                    _drain(worker.events, on_worker_event)
                for w, result, error, error_type in replies:
                    unit = units[running.pop(w)]
                    yield Outcome(unit, result, error, error_type)
                for w in list(running):
                    verdict = self._watch(workers[w])
                    if verdict is None or deadline is not None:
                        continue
                    k = running.pop(w)
                    key, status, what, beside = verdict
                    if beside:  # which piece held the worker is unknown: each runs alone next time
                        logging.getLogger("mmp").warning(
                            "unit %s: %s %s (%s) while %s ran beside it; each is run alone again",
                            getattr(units[k], "index", k), key, status, what, ", ".join(beside))
                        suspects.setdefault(k, set()).update([key, *beside])
                    else:
                        logging.getLogger("mmp").warning("unit %s: %s %s (%s); its unit is sent again",
                                                         getattr(units[k], "index", k), key, status, what)
                        judged.setdefault(k, {})[key] = (status, what)
                    resent[k] = resent.get(k, 0) + 1
                    workers[w].stop(abandon=True)
                    workers[w] = _PoolWorker(ctx, payload)
                    if resent[k] > self.MAX_RESENDS:
                        yield Outcome(units[k], error=f"its workers were stopped {resent[k]} times ({what})")
                    else:
                        todo.append(k)
                if any(not worker.proc.is_alive() for worker in workers) and running:
                    if deadline is not None:
                        return
                    time.sleep(0.1)  # what a dead worker's siblings finished is in their pipes
                    for w, result, error, error_type in _replies([w.results for w in workers]):
                        yield Outcome(units[running.pop(w)], result, error, error_type)
                    for worker in workers:
                        _drain(worker.events, on_worker_event)
                    # A worker died outside any video (its setup failed, killed): its unit and every
                    # unit not yet finished are reported; a re-run redoes them.
                    why = (f"a worker process failed to start: {setup_errors[0]}" if setup_errors else
                           "a worker process died (killed or out of memory) before this unit finished")
                    for k in sorted([*running.values(), *todo]):
                        yield Outcome(units[k], error=why)
                    return
            for worker in workers:
                _drain(worker.events, on_worker_event)
            finished = True
        finally:
            for worker in workers:
                worker.stop(abandon=not finished)

    @staticmethod
    def _watch(worker: _PoolWorker) -> tuple[str, str, str, list] | None:
        """(key, status, what, the other keys running beside it) when ``worker`` must be replaced for the
        piece of work it is doing: past its budget (``judge``), or dead while doing it."""
        running = [item[0] for item in worker.slots.running()]
        if not worker.proc.is_alive():
            if not running:
                return None
            code = worker.proc.exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            return running[0], CRASHED, f"the worker process died while doing it ({how})", running[1:]
        verdict = judge(worker.slots, resident_bytes(worker.proc.pid))
        if verdict is None:
            return None
        return verdict[0], OVER_BUDGET, verdict[1], [key for key in running if key != verdict[0]]


def _replies(pipes: list, timeout: float = 0.0) -> list:
    """The (worker, result, error, error type) replies in the workers' results pipes, waiting up
    to ``timeout`` seconds for the first."""
    end = time.monotonic() + timeout
    while True:
        replies = []
        for results in pipes:
            while True:
                try:
                    replies.append(pickle.loads(results.get_nowait()))
                except (queue.Empty, EOFError, OSError):
                    break
        if replies or time.monotonic() >= end:
            return replies
        time.sleep(0.01)


def _stop_workers(workers: list, abandon: bool) -> None:
    """Stop the workers. Units still running (a stop, a dead worker, an early exit) are
    abandoned: their workers are killed (they ignore SIGTERM, which is the parent's to act on)."""
    if not abandon:
        for proc, tasks in workers:
            if proc.is_alive():
                tasks.put(None)
        for proc, _ in workers:  # idle workers leave at once on the sentinel
            proc.join(timeout=30)
    for proc, tasks in workers:
        try:
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=5)
        except (OSError, ValueError, AssertionError):
            pass
        tasks.cancel_join_thread()


def _drain(events, on_event) -> None:
    while True:
        try:
            on_event(events.get_nowait())
        except queue.Empty:
            return
        except (EOFError, OSError):
            return


def make_executor(name: str, workers: int, initializer=None, initargs=(), *, ray_address: str | None = None,
                  max_unit_retries: int = DEFAULT_UNIT_RETRIES, resources_for: Callable | None = None):
    if name == "local":
        if workers <= 1:
            return InlineExecutor(initializer, initargs)
        return LocalExecutor(workers, initializer, initargs)
    if name == "inline":
        return InlineExecutor(initializer, initargs)
    if name == "ray":
        from pipeline.runtime.ray_executor import RayExecutor

        return RayExecutor(workers, initializer, initargs, address=ray_address, max_retries=max_unit_retries,
                           resources_for=resources_for)
    raise ValueError(f"unknown executor {name!r}; choose 'local' (a process pool), 'ray' or 'inline'")
