"""The pattern every stage follows: work units, atomic outputs, resume by marker.

A stage plans its input into work units (picklable), and processes one unit into a
``UnitWriter``. ``run_stage`` saves the resolved configuration, skips the units that
already have a stats file, hands the rest to an executor, shows progress and adds
up the per-unit counters. The per-video work lives in the stage's own module as
plain functions; nothing here knows what a video is.

Output directories may be local paths or fsspec URLs (``s3://bucket/prefix``; see
``shards.storage``); logs always go to a local directory. A run holds its output's
lock (``pipeline.runtime.runlock``), stops cleanly on Ctrl-C or SIGTERM (``pipeline.runtime.interrupt``)
and turns an output it cannot write (read-only, a file in the way, a full disk) into
one sentence; progress is shown by ``pipeline.runtime.progress``.
"""
from __future__ import annotations

import abc
import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from shards.errors import UserError, output_errors, output_problem
from shards.layout import DamagedUnit, SampleLayout, UnitFiles, completed_units, read_stats
from shards.storage import as_path
from shards.versions import versions
from shards.writer import UnitWriter, atomic_write_json

from pipeline.runtime.budget import Budget, Guard
from pipeline.runtime.executors import DEFAULT_UNIT_RETRIES, EventSink, make_executor, type_name
from pipeline.runtime.ray_executor import RayUnavailable
from pipeline.runtime.interrupt import StageInterrupted, StopRequest, UnitAbandoned
from pipeline.runtime.lineage import reopen_changed
from pipeline.runtime.logs import log_dir_for, setup_logging
from pipeline.runtime.progress import StageProgress
from pipeline.runtime.runlock import LockLost, RunLock, RunLocked, check_held

log = logging.getLogger("mmp")

FAILED_STATUSES_OK = ("ok", "partial")


@dataclass
class Unit:
    """A work unit: its index (fixes its output names) and its items (video rows, a shard path...)."""

    index: int
    items: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


def units_from_upstream(directory, prefix: str) -> list[Unit]:
    """One unit per completed unit of an upstream stage (``aligned`` for mmp-extract-features), with the
    same index, sized by its stats' row count for the progress bar; a damaged stats file is reported and
    its unit still runs (and records what its files hold)."""
    planned = []
    for files in completed_units(directory, prefix):
        try:
            rows = read_stats(files)["rows"]
        except DamagedUnit as exc:
            log.warning("%s", exc)
            rows = 0
        planned.append(Unit(files.index, list(range(rows))))
    return planned


class Stage(abc.ABC):
    """Subclasses set ``name`` (the output prefix), ``layout`` and ``schema`` and implement
    ``plan()`` and ``process(unit, writer)``.

    ``resources`` is what one unit needs from a Ray node (``--executor ray``):
    ``{"num_cpus": 1}`` unless a stage says otherwise, e.g. ``{"num_cpus": 1, "num_gpus": 1}``
    for GPU feature extraction, or a custom resource such as ``{"egress_a": 1}`` that
    only nodes started with ``ray start --resources '{"egress_a": 4}'`` offer. Override
    ``unit_resources`` when units differ (the crawl spreads units over egress addresses).
    """

    name: str = "stage"
    layout: SampleLayout | None = None
    schema = None
    resources: dict | None = None

    @abc.abstractmethod
    def plan(self) -> list[Unit]:
        """The work units, in a deterministic order (their index fixes their output names)."""

    @abc.abstractmethod
    def process(self, unit: Unit, writer: UnitWriter) -> None:
        """Write one unit: a sample and a row per input video into ``writer``."""

    def config(self) -> dict:
        """The resolved configuration saved as config.json (no secrets)."""
        return {}

    def fingerprint(self) -> dict:
        """What must not change between a run and its resumption (input identity, unit size)."""
        return {}

    def built_from(self, unit: Unit) -> dict | None:
        """The identity of the upstream data ``unit`` is made from (``pipeline.runtime.lineage``), kept in
        its stats as ``built_from``; a re-run redoes a finished unit whose upstream changed since.
        None: the unit has no upstream unit (its input is in the fingerprint)."""
        return None

    def setup_worker(self) -> None:
        """Called once in each worker process before its first unit."""

    def after_publish(self, files: UnitFiles) -> None:
        """Called after a unit's stats file is written (e.g. to drop a retry marker)."""

    def progress_ok(self, status: str) -> bool:
        return status in FAILED_STATUSES_OK

    def unit_resources(self, unit: Unit) -> dict:
        """Ray resources of one unit (default: the class's ``resources``, else one CPU)."""
        return dict(self.resources or {"num_cpus": 1})

    events: "EventSink | None" = None  # set by the unit runner in the process that runs the units
    guard: "Guard | None" = None  # likewise: the per-video budget watch of that process
    budget: "Budget | None" = None  # what one video's work may take (the stage's flags); None: unbounded

    def within_budget(self, key: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, one video's work, under the stage's ``budget``; raises
        ``OverBudget`` (``pipeline.runtime.budget``) when it runs out or was judged so before."""
        if self.guard is None:
            self.guard = Guard()  # a stage driven without an executor (a test, a notebook)
        return self.guard.run(key, self.budget or Budget(0, 0), fn, *args, **kwargs)

    def video_done(self, status: str) -> None:
        """Called by a stage once per input video, for the progress bar."""
        if self.events is not None:
            self.events.put(status)

    def report_warning(self, text: str) -> None:
        """A warning worth a user's eye (e.g. one of yt-dlp's), shown once per run on the console
        by the process that shows progress, however many workers and videos meet it."""
        if self.events is not None:
            self.events.warn(text)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("events", "guard")}  # set where it runs


def _worker_setup(stage: Stage, out: str) -> None:
    setup_logging(out, stage.name, f"worker{os.getpid()}")
    stage.setup_worker()


class _UnitRunner:
    """Picklable callable that processes one unit in a worker process. With ``lock`` (the run lock's
    path and token) it checks the run still holds its output before a unit starts and before it is
    published: a run whose lock was taken writes nothing more."""

    def __init__(self, stage: Stage, out, lock: tuple | None = None):
        self.stage, self.out, self.lock = stage, as_path(out), lock

    def _check_lock(self) -> None:
        if self.lock is not None:
            check_held(*self.lock)

    def bind_events(self, events) -> None:
        """Where the stage's progress events go in this process (``None``: nowhere)."""
        self.stage.events = None if events is None else EventSink(events)

    def bind_guard(self, guard) -> None:
        """The per-video budget watch of the process the units run in (``None``: none)."""
        self.stage.guard = guard

    def __call__(self, unit: Unit) -> dict:
        files = UnitFiles(self.out, self.stage.name, unit.index)
        try:
            if files.is_complete():  # another runner finished it meanwhile
                return {"skipped": True, "counts": {}}
            self._check_lock()
            for tmp in files.temporaries():
                tmp.unlink(missing_ok=True)
            source = self.stage.built_from(unit)
            with UnitWriter(files, self.stage.schema, self.stage.layout) as writer:
                if source:
                    writer.extra["built_from"] = source
                self.stage.process(unit, writer)
                self._check_lock()  # raising here leaves the unit unpublished
        except LockLost as exc:
            log.error("unit %s not written: %s", files.stem, exc)
            return {"output_error": str(exc), "lock_lost": True, "counts": {}}
        except OSError as exc:
            problem = output_problem(exc, self.out)
            if problem is None:
                raise
            log.error("unit %s not written: %s", files.stem, problem)
            return {"output_error": problem, "counts": {}}
        self.stage.after_publish(files)
        log.info("unit %s done: %s", files.stem, dict(writer.counts))
        return writer.stats


def prepare_output(out) -> None:
    """Create ``out``; an ``out`` that cannot be (a file in the way, read-only) is a UserError."""
    with output_errors(out):
        as_path(out).mkdir(parents=True, exist_ok=True)


def lock_output(out, rank: int = 0, world_size: int = 1) -> RunLock:
    """Take ``out``'s run lock (see ``pipeline.runtime.runlock``); a live holder is a UserError naming it.
    A main that writes to its output before ``run_stage`` takes it first and hands it on:
    ``with lock_output(out) as lock: ...; run_stage(stage, out, lock=lock, ...)``."""
    lock = RunLock(out, rank, world_size)
    try:
        with output_errors(out):
            return lock.acquire()
    except RunLocked as exc:
        raise UserError(f"{exc}; wait for it to finish or stop it, or choose another --out") from exc


@dataclass
class RunSummary:
    units_total: int
    units_skipped: int
    units_done: int
    units_failed: int
    counts: Counter
    seconds: float
    failures: list = field(default_factory=list)  # (unit index, traceback text, exception type name or None)

    def raised(self, exc_type: type) -> bool:
        """Whether a unit failed by raising an ``exc_type`` (the type itself, by its qualified name)."""
        return any(error_type == type_name(exc_type) for _, _, error_type in self.failures)

    def as_dict(self) -> dict:
        return {
            "units_total": self.units_total, "units_skipped": self.units_skipped,
            "units_done": self.units_done, "units_failed": self.units_failed,
            "counts": dict(sorted(self.counts.items())), "seconds": round(self.seconds, 3),
        }


def check_config(out, stage: Stage) -> None:
    """Refuse to resume into ``out`` if it holds a run over a different input or plan."""
    path = as_path(out) / "config.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text()).get("fingerprint", {})
    except (ValueError, RecursionError, AttributeError):
        return
    new = stage.fingerprint()
    diffs = [k for k in new if isinstance(old, dict) and k in old and old[k] != new[k]]
    if diffs:
        said = ", ".join(k.removesuffix("_identity") + (" (by content)" if k.endswith("_identity") else "")
                         for k in diffs)
        raise UserError(
            f"{out} already holds a {stage.name} run over a different {said} ({', '.join(diffs)} in its "
            f"config.json); run the command that made it to resume, or choose a new --out"
        )


def run_stage(stage: Stage, out, *, executor: str = "local", workers: int = 1,
              rank: int = 0, world_size: int = 1, progress: bool = True,
              ray_address: str | None = None, max_unit_retries: int | None = None,
              lock: RunLock | None = None) -> RunSummary:
    """Run ``stage``'s pending units into ``out`` (a path or an fsspec URL) on an executor.

    ``ray_address`` and ``max_unit_retries`` apply to ``executor="ray"``: join that
    cluster (else ``$RAY_ADDRESS``, else start a local instance bound to 127.0.0.1),
    and re-run a unit whose worker process or node died up to that many times.

    The run holds ``out``'s run lock throughout (a second run on it is a UserError): ``lock``,
    when the caller took it first (``with lock_output(out) as lock:``), else its own.
    SIGINT or SIGTERM stops it (see ``pipeline.runtime.interrupt``): ``StageInterrupted`` is
    raised, which exits the program with 130 or 143 unless caught.
    """
    out = as_path(out)
    if max_unit_retries is None:
        max_unit_retries = DEFAULT_UNIT_RETRIES
    if max_unit_retries < 0:
        raise UserError("--max-unit-retries must be 0 or more")
    if workers < 1:
        raise UserError(f"--workers {workers} is not a number of processes; give 1 or more")
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"--rank {rank} is outside --world-size {world_size}; use 0 <= rank < world-size")
    prepare_output(out)
    own = lock is None
    if own:
        lock = lock_output(out, rank, world_size)
    stop = StopRequest(on_exit=lock.release)
    lock.on_lost = stop.stop
    try:
        stop.install()
        return _run_locked(stage, out, stop, lock, executor=executor, workers=workers, rank=rank, world_size=world_size,
                           progress=progress, ray_address=ray_address, max_unit_retries=max_unit_retries)
    finally:
        stop.uninstall()
        if own:
            lock.release()


def _run_locked(stage: Stage, out, stop: StopRequest, lock: RunLock, *, executor, workers, rank, world_size, progress,
                ray_address, max_unit_retries) -> RunSummary:
    with output_errors(out):
        setup_logging(out, stage.name, "main" if world_size == 1 else f"rank{rank}")
        check_config(out, stage)
        units = stage.plan()
        config = {"stage": stage.name, "config": stage.config(), "fingerprint": stage.fingerprint(),
                  "budget": None if stage.budget is None else asdict(stage.budget),
                  "units": len(units), "executor": executor, "workers": workers, "world_size": world_size,
                  "versions": versions()}
        atomic_write_json(out / "config.json", config)

    mine = [u for u in units if u.index % world_size == rank]
    published = {p.name for p in out.glob(f"{stage.name}-*.stats.json")}  # one listing, also on an object store
    redo = reopen_changed(stage, out, [u for u in mine if UnitFiles(out, stage.name, u.index).stats.name in published])
    published -= {UnitFiles(out, stage.name, u.index).stats.name for u in redo}
    pending = [u for u in mine if UnitFiles(out, stage.name, u.index).stats.name not in published]
    skipped = len(mine) - len(pending)
    if skipped:
        log.warning("%s: %d of %d units already complete; doing the other %d", stage.name, skipped, len(mine), len(pending))
    counts: Counter = Counter()
    failures: list = []
    start = time.time()
    bar = StageProgress(stage.name, sum(len(u) for u in pending), len(pending), enabled=progress)
    shown: set = set()

    def on_event(status):
        if isinstance(status, tuple) and status[0] == "warning":
            if status[1] not in shown:
                shown.add(status[1])
                bar.write(f"WARNING: {status[1]}")
                log.info("warning shown: %s", status[1])
            return
        bar.video(status, stage.progress_ok(status))

    done = 0
    finished: set = set()
    runner = _UnitRunner(stage, out, (lock.path, lock.token))
    ex = make_executor(executor, workers, initializer=_worker_setup, initargs=(stage, str(out)),
                       ray_address=ray_address, max_unit_retries=max_unit_retries,
                       resources_for=stage.unit_resources)
    try:
        for outcome in _outcomes(ex, runner, pending, on_event, stop):
            if outcome.error is not None:
                failures.append((outcome.unit.index, outcome.error, outcome.error_type))
                log.error("unit %d of %s raised; it will be redone on the next run:\n%s",
                          outcome.unit.index, stage.name, outcome.error)
            elif outcome.result.get("output_error"):
                if outcome.result.get("lock_lost"):
                    lock.lost = lock.lost or outcome.result["output_error"]
                stop.stop(outcome.result["output_error"])
            else:
                done += 1
                finished.add(outcome.unit.index)
                counts.update(outcome.result.get("counts", {}))
                bar.unit_done()
    finally:
        bar.close()
    if stop.requested:
        if lock.lost is None:  # the temporaries there now may be the new holder's
            _clear_abandoned(out, stage.name, [u for u in pending if u.index not in finished])
        if stop.reason is not None and stop.signum is None:
            raise UserError(stop.reason)
        complete = skipped + done
        message = f"interrupted: {complete} of {len(mine)} units complete; run the same command to resume"
        print(message, file=sys.stderr, flush=True)
        log.warning("%s %s", stage.name, message)
        raise StageInterrupted(stop.signum, message)
    summary = RunSummary(len(mine), skipped, done, len(failures), counts, time.time() - start, failures)
    log.info("%s finished: %s", stage.name, summary.as_dict())
    return summary


def _clear_abandoned(out, name: str, units) -> None:
    """Remove the temporaries of units stopped mid-way (their workers are gone; this run holds the lock)."""
    for unit in units:
        try:
            for tmp in UnitFiles(out, name, unit.index).temporaries():
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove the temporaries of unit %d: %s", unit.index, exc)


def _outcomes(ex, runner, pending, on_event, stop):
    try:
        yield from ex.run(runner, pending, on_event, stop)
    except RayUnavailable as exc:
        raise UserError(str(exc)) from exc
    except UnitAbandoned:  # a signal between an inline unit's end and the executor's bookkeeping
        return


def print_summary(stage_name: str, out, summary: RunSummary) -> None:
    c = summary.counts
    statuses = {k.split("/", 1)[1]: v for k, v in c.items() if k.startswith("status/")}
    print(f"{stage_name}: {summary.units_done} units written, {summary.units_skipped} already complete, "
          f"{summary.units_failed} units failed, in {summary.seconds:.1f}s -> {out}")
    if statuses:
        print("  videos by status: " + ", ".join(f"{k}={v}" for k, v in sorted(statuses.items())))
    if summary.units_failed:
        print(f"  {summary.units_failed} units raised (see {log_dir_for(out)}); re-run the same command to redo them",
              file=sys.stderr)
