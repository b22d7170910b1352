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
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import queue
import time
import traceback
from typing import Callable, Iterable, Iterator

from pipeline.runtime.interrupt import GRACE_S, UnitAbandoned, bind_worker_to_parent

_EVENTS = None  # the progress queue, set in each worker process
_WORKER_FN = None  # the unit function of a pool worker, unpickled once with its initializer's arguments
SETUP_FAILED = "worker_setup_failed"  # event kind: a worker's initializer raised (the message follows)


def _init_worker(events, initializer, initargs, fn=None, parent_pid=None):
    global _EVENTS, _WORKER_FN
    if parent_pid is not None:
        bind_worker_to_parent(parent_pid)
    _EVENTS = events
    _WORKER_FN = fn
    if initializer is not None:
        try:
            initializer(*initargs)
        except Exception as exc:  # the pool only sees a dead worker: tell the parent why, then die
            logging.getLogger("mmp").exception("worker setup failed")
            events.put((SETUP_FAILED, f"{type(exc).__name__}: {exc}"))
            events.close()
            events.join_thread()  # the message is in the pipe before the process goes
            os._exit(1)


def _call_worker_fn(unit):
    return _WORKER_FN(unit)


def set_events(events) -> None:
    """Where this process's ``report_event`` sends to (a queue, a Ray batcher, or None)."""
    global _EVENTS
    _EVENTS = events


def report_event(event) -> None:
    """Send a progress event (e.g. a video's status) to the process showing the progress bar."""
    if _EVENTS is not None:
        _EVENTS.put(event)


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
        global _EVENTS
        events: "queue.SimpleQueue" = queue.SimpleQueue()
        _EVENTS = events
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
            _EVENTS = None


class LocalExecutor:
    """A process pool of ``workers`` processes (spawned: no state forked from the parent)."""

    name = "local"

    def __init__(self, workers: int, initializer=None, initargs=()):
        self.workers = max(1, int(workers))
        self.initializer, self.initargs = initializer, initargs

    def run(self, fn: Callable, units: Iterable, on_event: Callable, stop=None) -> Iterator[Outcome]:
        ctx = mp.get_context("spawn")
        events = ctx.Queue()
        units = list(units)
        setup_errors: list = []

        def on_worker_event(event):
            if isinstance(event, tuple) and event and event[0] == SETUP_FAILED:
                setup_errors.append(event[1])
            else:
                on_event(event)

        pool = cf.ProcessPoolExecutor(
            max_workers=min(self.workers, max(1, len(units))),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(events, self.initializer, self.initargs, fn, os.getpid()),
        )
        # fn travels with the initializer's arguments (one pickle), so the stage a
        # worker's setup prepared (a loaded model, a fetcher) is the one its units use.
        futures = {pool.submit(_call_worker_fn, unit): unit for unit in units}
        pending = set(futures)
        deadline = None  # set by a stop request: when units still in flight are abandoned
        broken = False
        try:
            while pending:
                if stop is not None and stop.requested and deadline is None:
                    pending = {f for f in pending if not f.cancel()}
                    deadline = time.monotonic() + GRACE_S
                if deadline is not None and time.monotonic() >= deadline:
                    return
                done, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
                _drain(events, on_worker_event)
                done = [f for f in done if not f.cancelled()]
                for k, fut in enumerate(done):
                    unit = futures[fut]
                    try:
                        yield Outcome(unit, result=fut.result())
                    except cf.process.BrokenProcessPool:
                        broken = True
                        if deadline is not None:
                            return
                        _drain(events, on_worker_event)
                        # A worker died (its setup failed, killed, out of memory): its unit and every
                        # unit not yet finished are reported; a re-run redoes them.
                        why = (f"a worker process failed to start: {setup_errors[0]}" if setup_errors else
                               "a worker process died (killed or out of memory) before this unit finished")
                        for other in [*done[k:], *pending]:
                            yield Outcome(futures[other], error=why)
                        return
                    except Exception as exc:
                        yield _raised(unit, exc)
            _drain(events, on_worker_event)
        finally:
            _stop_pool(pool, abandon=bool(pending) or broken)


def _stop_pool(pool, abandon: bool) -> None:
    """Shut the pool down. Units still running (a stop, a broken pool, an early exit) are
    abandoned: their workers are killed (they ignore SIGTERM, which is the parent's to act on)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    if not abandon:
        pool.shutdown(wait=False)
        for proc in processes:  # idle workers leave at once on the pool's sentinel
            proc.join(timeout=30)
    for proc in processes:
        try:
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=5)
        except (OSError, ValueError, AssertionError):
            pass
    pool.shutdown(wait=True, cancel_futures=True)


def _drain(events, on_event) -> None:
    while True:
        try:
            on_event(events.get_nowait())
        except queue.Empty:
            return
        except (EOFError, OSError):
            return


def make_executor(name: str, workers: int, initializer=None, initargs=(), *, ray_address: str | None = None,
                  max_unit_retries: int = 3, resources_for: Callable | None = None):
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
