"""Where work units run. Executors know nothing about subtitles or features.

An executor takes a picklable function and a list of units and yields each unit's
result as it completes. ``inline`` runs in this process (debugging, one worker),
``local`` a process pool. A slice ``--rank i --world-size n`` is applied before
the executor sees the units, so it composes with any executor.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import queue
from typing import Callable, Iterable, Iterator

_EVENTS = None  # the progress queue, set in each worker process


def _init_worker(events, initializer, initargs):
    global _EVENTS
    _EVENTS = events
    if initializer is not None:
        initializer(*initargs)


def report_event(event) -> None:
    """Send a progress event (e.g. a video's status) to the process showing the progress bar."""
    if _EVENTS is not None:
        _EVENTS.put(event)


class Outcome:
    """What became of one unit: its result, or the exception text if it raised."""

    __slots__ = ("unit", "result", "error")

    def __init__(self, unit, result=None, error: str | None = None):
        self.unit, self.result, self.error = unit, result, error


class InlineExecutor:
    name = "inline"

    def __init__(self, initializer=None, initargs=()):
        self.initializer, self.initargs = initializer, initargs

    def run(self, fn: Callable, units: Iterable, on_event: Callable) -> Iterator[Outcome]:
        global _EVENTS
        events: "queue.SimpleQueue" = queue.SimpleQueue()
        _EVENTS = events
        if self.initializer is not None:
            self.initializer(*self.initargs)
        try:
            for unit in units:
                try:
                    outcome = Outcome(unit, result=fn(unit))
                except Exception as exc:  # a bug in a unit: recorded, other units go on
                    import traceback

                    outcome = Outcome(unit, error="".join(traceback.format_exception(exc)))
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

    def run(self, fn: Callable, units: Iterable, on_event: Callable) -> Iterator[Outcome]:
        ctx = mp.get_context("spawn")
        events = ctx.Queue()
        units = list(units)
        with cf.ProcessPoolExecutor(
            max_workers=min(self.workers, max(1, len(units))),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(events, self.initializer, self.initargs),
        ) as pool:
            futures = {pool.submit(fn, unit): unit for unit in units}
            pending = set(futures)
            while pending:
                done, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
                _drain(events, on_event)
                for fut in done:
                    unit = futures[fut]
                    try:
                        yield Outcome(unit, result=fut.result())
                    except cf.process.BrokenProcessPool:
                        # A worker died (killed, out of memory): its unit and every unit not yet
                        # finished are reported; a re-run redoes them.
                        for other in [fut, *pending]:
                            yield Outcome(futures[other], error="a worker process died (killed or out of memory) "
                                                                "before this unit finished")
                        pool.shutdown(wait=False, cancel_futures=True)
                        return
                    except Exception as exc:
                        import traceback

                        yield Outcome(unit, error="".join(traceback.format_exception(exc)))
            _drain(events, on_event)


def _drain(events, on_event) -> None:
    while True:
        try:
            on_event(events.get_nowait())
        except queue.Empty:
            return
        except (EOFError, OSError):
            return


def make_executor(name: str, workers: int, initializer=None, initargs=()):
    if name == "local":
        if workers <= 1:
            return InlineExecutor(initializer, initargs)
        return LocalExecutor(workers, initializer, initargs)
    if name == "inline":
        return InlineExecutor(initializer, initargs)
    raise ValueError(f"unknown executor {name!r}; choose 'local' (a process pool)")
