"""Per-video budgets: work that runs out of time or memory is its video's ``over_budget`` row.

Python work is stopped in its own process (the guard's thread); native work that holds the
interpreter, and a worker that dies doing a video, are stopped or noticed by the local executor,
which judges the video and sends its unit again: the unit's other videos are all there.
"""
from __future__ import annotations

import ctypes
import os
import signal
import time

import pyarrow as pa
import pytest

from pipeline.runtime.budget import CRASHED, OVER_BUDGET, Budget, Guard, OverBudget, WorkSlots, judge
from pipeline.runtime.executors import InlineExecutor, LocalExecutor
from pipeline.runtime.stage import Stage, Unit, _UnitRunner, run_stage
from tests.watchdog import run_bounded


def _work(key: str) -> str:
    if key.startswith("loop"):  # Python that never ends
        while True:
            pass
    if key.startswith("grow"):  # Python that allocates without end
        blocks = []
        while True:
            blocks.append(bytearray(2**20))
    if key.startswith("native"):  # native code holding the interpreter: no thread can stop it
        ctypes.PyDLL(None).sleep(120)
    if key.startswith("slow"):  # a moment's work that lets go of the interpreter (a decoder's I/O)
        time.sleep(0.5)
    if key.startswith("crash"):  # a decoder that brings its process down
        os.kill(os.getpid(), signal.SIGKILL)
    return "ok"


class Budgeted(Stage):
    name = "budgeted"
    schema = pa.schema([("video_id", pa.string()), ("status", pa.string()), ("error", pa.string())])

    def __init__(self, units: list[list[str]], budget: Budget):
        self.units, self.budget = units, budget

    def plan(self):
        return [Unit(i, keys) for i, keys in enumerate(self.units)]

    def process(self, unit, writer):
        for key in unit.items:
            try:
                status, error = self.within_budget(key, _work, key), None
            except OverBudget as exc:
                status, error = exc.status, exc.what
            writer.add_row({"video_id": key, "status": status, "error": error})
            self.video_done(status)


class Threaded(Budgeted):
    """Pieces run two at a time in threads, as the extraction's decode threads run videos."""

    def process(self, unit, writer):
        from concurrent.futures import ThreadPoolExecutor

        def one(key):
            try:
                return key, self.within_budget(key, _work, key), None
            except OverBudget as exc:
                return key, exc.status, exc.what

        with ThreadPoolExecutor(2) as pool:
            for key, status, error in pool.map(one, unit.items):
                writer.add_row({"video_id": key, "status": status, "error": error})
                self.video_done(status)


def _rows(out):
    from shards.reader import read_rows

    rows = []
    for path in sorted(out.glob("budgeted-*.parquet")):
        rows.extend(read_rows(path))
    return {r["video_id"]: r for r in rows}


def test_the_guard_stops_python_work_and_lets_the_rest_through():
    guard = Guard()
    started = time.monotonic()
    with pytest.raises(OverBudget, match=r"wall time \(0.3 s\)") as caught:
        guard.run("loop1", Budget(0.3, 0), _work, "loop1")
    assert caught.value.status == OVER_BUDGET and caught.value.key == "loop1"
    with pytest.raises(OverBudget, match=r"memory \(100 MiB"):
        run_bounded(guard.run, "grow1", Budget(0, 100), _work, "grow1", seconds=30, memory_mb=1500)
    assert guard.run("v1", Budget(5, 100), _work, "v1") == "ok"
    assert time.monotonic() - started < 20

    def swallows():  # an ``except Exception`` in the work does not keep it alive
        try:
            _work("loop2")
        except Exception:
            return "swallowed"

    with pytest.raises(OverBudget):
        guard.run("loop2", Budget(0.2, 0), swallows)
    guard.judged["v2"] = (CRASHED, "the worker process died while doing it (signal 9)")
    with pytest.raises(OverBudget, match="crashed"):
        guard.run("v2", Budget(5, 100), pytest.fail, "a judged video is not run again")


def test_the_executor_stops_native_work_and_notices_a_dead_worker(tmp_path):
    """Inline, native work could hold the run for two minutes; the pool's parent stops it at the
    budget's hard bound, judges it, and the unit is written whole with one over_budget row."""
    stage = Budgeted([["a1", "native1", "a2"], ["b1", "crash1", "b2"], ["c1", "loop3"]], Budget(1.0, 512))
    summary = run_bounded(run_stage, stage, tmp_path, workers=2, progress=False, seconds=90, memory_mb=3000)
    assert summary.units_done == 3 and summary.units_failed == 0
    rows = _rows(tmp_path)
    assert {k for k, r in rows.items() if r["status"] == "ok"} == {"a1", "a2", "b1", "b2", "c1"}
    assert rows["native1"]["status"] == OVER_BUDGET and "stopped by the executor" in rows["native1"]["error"]
    assert rows["crash1"]["status"] == CRASHED and "signal 9" in rows["crash1"]["error"]
    assert rows["loop3"]["status"] == OVER_BUDGET and rows["loop3"]["error"] == "wall time (1 s)"
    import json

    assert json.loads((tmp_path / "config.json").read_text())["budget"] == {"seconds": 1.0, "memory_mb": 512}


def test_native_work_beside_other_pieces_costs_only_its_own_row(tmp_path):
    """A native loop holding the interpreter stops the piece beside it too: the executor cannot tell
    which of the two held the worker, so it judges neither, and runs each alone on the next try."""
    stage = Threaded([["slow1", "native1", "a2"]], Budget(1.0, 512))
    summary = run_bounded(run_stage, stage, tmp_path, workers=2, progress=False, seconds=120, memory_mb=3000)
    assert summary.units_done == 1 and summary.units_failed == 0
    rows = _rows(tmp_path)
    assert {k for k, r in rows.items() if r["status"] == "ok"} == {"slow1", "a2"}
    assert rows["native1"]["status"] == OVER_BUDGET and "stopped by the executor" in rows["native1"]["error"]


def test_inline_runs_keep_the_python_bound(tmp_path):
    stage = Budgeted([["a1", "loop1", "grow1", "a2"]], Budget(0.5, 100))
    outcomes = run_bounded(lambda: list(InlineExecutor().run(_UnitRunner(stage, tmp_path), stage.plan(),
                                                              lambda e: None)), seconds=60, memory_mb=800)
    assert [o.error for o in outcomes] == [None]
    assert {k: r["status"] for k, r in _rows(tmp_path).items()} == {
        "a1": "ok", "loop1": OVER_BUDGET, "grow1": OVER_BUDGET, "a2": "ok"}


def test_judge_reads_the_slots_a_worker_publishes():
    import multiprocessing as mp

    slots = WorkSlots(mp.get_context("spawn"))
    assert judge(slots, rss=10 << 30) is None  # nothing running: nothing to judge
    now = time.monotonic()
    slots.publish(3, "old", now - 20, Budget(10, 100), 1 << 30)
    slots.publish(5, "young", now - 1, Budget(10, 100), 1 << 30)
    key, what = judge(slots, rss=(1 << 30) + (50 << 20), now=now)
    assert key == "old" and what.startswith("wall time (10 s")
    slots.clear(3)
    assert judge(slots, rss=(1 << 30) + (50 << 20), now=now) is None
    key, what = judge(slots, rss=(1 << 30) + (200 << 20), now=now)
    assert key == "young" and what.startswith("memory (100 MiB; the worker grew by 200 MiB")
    with pytest.raises(ValueError, match="seconds must be a number >= 0"):
        Budget(-1, 10)


def test_an_idle_guard_leaves_no_thread_and_starts_one_again(monkeypatch):
    import threading

    import pipeline.runtime.budget as budget_module

    monkeypatch.setattr(budget_module, "_IDLE_EXIT_S", 0.2)
    guard = Guard()
    assert guard.run("v1", Budget(5, 100), _work, "v1") == "ok"
    watcher = guard._thread
    deadline = time.monotonic() + 10
    while watcher.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not watcher.is_alive() and guard._thread is None
    with pytest.raises(OverBudget, match="wall time"):  # a new watcher comes with the next piece of work
        guard.run("loop9", Budget(0.3, 0), _work, "loop9")
    assert not any(t is watcher for t in threading.enumerate())
