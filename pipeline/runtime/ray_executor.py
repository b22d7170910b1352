"""The Ray executor: one Ray task per unit, on a cluster or on a local instance bound to
127.0.0.1; progress through an actor; a unit whose worker or node died re-run up to
``--max-unit-retries`` times."""
from __future__ import annotations

import os
import time
from typing import Callable, Iterable, Iterator

from pipeline.runtime.executors import DEFAULT_UNIT_RETRIES, Outcome, bind_events, type_name


class RayUnavailable(RuntimeError):
    """Ray is not installed, the cluster cannot be reached, or no node offers what a unit needs."""


def start_local_ray(num_cpus: int, resources: dict | None = None, num_gpus: int | None = None):
    """Start a Ray instance in this process, every port bound to 127.0.0.1.

    Ray binds its servers to the node's address; on Linux that is the outward one
    unless cluster mode is off, so it is switched off for this process and the Ray
    processes it starts (they inherit the environment). A local instance is never
    reachable from another machine.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    kwargs = {"num_cpus": max(1, int(num_cpus)), "include_dashboard": False, "log_to_driver": False,
              "_node_ip_address": "127.0.0.1", "address": "local"}
    if resources:
        kwargs["resources"] = dict(resources)
    if num_gpus is not None:
        kwargs["num_gpus"] = num_gpus
    return ray.init(**kwargs)


def ensure_ray(address: str | None, workers: int, resources: dict | None = None) -> bool:
    """Connect to Ray: the running instance of this process, else ``address``, else a new local one.

    ``resources`` are the custom resources (e.g. ``egress_a``) a local instance must
    offer for the units to be schedulable. Returns True when a local instance was
    started here (it stops with the process).
    """
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable("--executor ray needs Ray: pip install 'multi-howto100m[cluster]' (or ray)") from exc
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        problem = _unreachable(address)
        if problem:
            raise RayUnavailable(f"cannot reach the Ray cluster at {address} ({problem}); start it with "
                                 f"`ray start --head --port 6379` on the head node, or check --ray-address")
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayUnavailable(f"cannot join the Ray cluster at {address}: {exc}") from exc
        return False
    custom = {k: float(max(1, workers)) for k in (resources or {}) if k not in ("num_cpus", "num_gpus", "memory")}
    start_local_ray(workers, custom)
    return True


def _unreachable(address: str, timeout: float = 5.0) -> str | None:
    """Why a ``host:port`` address cannot be connected to (None if it can, or is another form).
    Ray itself retries an unreachable address for minutes before giving up."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def check_resources(needs: list[dict]) -> None:
    """Refuse to submit units no node of the cluster could ever run (they would wait forever)."""
    import ray

    have = ray.cluster_resources()
    names = {"num_cpus": "CPU", "num_gpus": "GPU", "memory": "memory"}
    for need in needs:
        for key, amount in need.items():
            name = names.get(key, key)
            if amount and have.get(name, 0) < amount:
                hint = ""
                if name == "GPU":
                    hint = "; start the GPU nodes with `ray start --address HEAD:6379 --num-gpus N`"
                elif name not in ("CPU", "memory"):
                    hint = f"; start a node with `ray start --resources '{{\"{name}\": 4}}'` (its units then run there)"
                raise RayUnavailable(f"the Ray cluster offers {have.get(name, 0):g} {name} but a unit needs {amount:g}{hint}")


class _RayEvents:
    """A worker's progress events, sent to the driver's progress actor in batches."""

    def __init__(self, progress, interval: float = 0.5):
        self.progress, self.interval = progress, interval
        self.buffer: list = []
        self.last = time.monotonic()

    def put(self, event) -> None:
        self.buffer.append(event)
        if time.monotonic() - self.last >= self.interval:
            self.flush()

    def flush(self, wait: bool = False) -> None:
        if self.buffer:
            ref = self.progress.push.remote(self.buffer)
            self.buffer = []
            if wait:
                import ray

                ray.get(ref)
        self.last = time.monotonic()


class _Progress:
    """Collects progress events from every task; the driver drains it for its progress bar."""

    def __init__(self):
        self.events: list = []

    def push(self, events: list) -> None:
        self.events.extend(events)

    def drain(self) -> list:
        events, self.events = self.events, []
        return events


class _SetUpFn:
    """The unit function of the run this Ray worker process last served, unpickled and set up once.

    A Ray task is a plain function with nothing of its own that outlives one call, and
    the stage's setup (a loaded model, a claimed GPU) must not be redone per unit, so
    this one module-level object is the per-process cache; it holds one run at a time."""

    def __init__(self):
        self.token: str | None = None
        self.fn: Callable | None = None

    def get(self, token: str, payload) -> Callable:
        if self.token != token:
            fn, initializer, initargs = payload
            if initializer is not None:
                initializer(*initargs)
            self.token, self.fn = token, fn  # drop an earlier run's stage
        return self.fn


_SET_UP = _SetUpFn()


def _ray_unit(token: str, payload, unit, progress):
    """The body of one Ray task: set up this worker for the run once, then do the unit."""
    fn = _SET_UP.get(token, payload)
    events = _RayEvents(progress)
    bind_events(fn, events)
    try:
        return fn(unit)
    finally:
        bind_events(fn, None)
        events.flush(wait=True)


class RayExecutor:
    """One Ray task per unit, with the unit's resources; a task whose worker or node died is retried.

    ``resources_for(unit)`` gives a unit's Ray resources (``num_cpus``, ``num_gpus``,
    custom ones such as ``egress_a``). Ray re-runs a task up to ``max_retries`` times
    when its process dies (killed, out of memory, node lost); an exception raised by
    the unit is a bug and is not retried. A retried unit starts clean: the runner
    skips a unit whose stats file exists and clears its temporaries.
    """

    name = "ray"

    def __init__(self, workers: int, initializer=None, initargs=(), *, address: str | None = None,
                 max_retries: int = DEFAULT_UNIT_RETRIES, resources_for: Callable | None = None):
        self.workers = max(1, int(workers))
        self.initializer, self.initargs = initializer, initargs
        self.address, self.max_retries = address, max(0, int(max_retries))
        self.resources_for = resources_for or (lambda unit: {"num_cpus": 1})

    def run(self, fn: Callable, units: Iterable, on_event: Callable, stop=None) -> Iterator[Outcome]:
        import uuid

        units = list(units)
        if not units:  # nothing to do: no cluster to start or join
            return
        needs = [dict(self.resources_for(u)) for u in units]
        merged: dict = {}
        for need in needs:
            merged.update(need)
        ensure_ray(self.address, self.workers, merged)
        if stop is not None:
            stop.install()  # ray.init sets its own SIGTERM handler
        import ray
        from ray import exceptions as rex

        check_resources({frozenset(n.items()): n for n in needs}.values())
        progress = ray.remote(_Progress).options(num_cpus=0).remote()
        payload = ray.put((fn, self.initializer, self.initargs))
        task = ray.remote(_ray_unit)
        token = uuid.uuid4().hex
        refs = {}
        for unit, need in zip(units, needs):
            opts = {"max_retries": self.max_retries, "retry_exceptions": False,
                    "num_cpus": need.get("num_cpus", 1), "num_gpus": need.get("num_gpus", 0)}
            custom = {k: v for k, v in need.items() if k not in ("num_cpus", "num_gpus", "memory")}
            if custom:
                opts["resources"] = custom
            if need.get("memory"):
                opts["memory"] = need["memory"]
            refs[task.options(**opts).remote(token, payload, unit, progress)] = unit
        pending = list(refs)
        try:
            while pending:
                if stop is not None and stop.requested:
                    return  # the tasks left are cancelled below
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.2)
                for event in ray.get(progress.drain.remote()):
                    on_event(event)
                for ref in done:
                    unit = refs[ref]
                    try:
                        yield Outcome(unit, result=ray.get(ref))
                    except rex.RayTaskError as exc:  # the unit raised: a bug, reported with its traceback
                        cause = getattr(exc, "cause", None)
                        yield Outcome(unit, error=str(exc), error_type=type_name(type(cause)) if cause else None)
                    except rex.RayError as exc:  # its process or node died more often than retried
                        yield Outcome(unit, error=f"the Ray task died {self.max_retries + 1} times (worker killed, "
                                                  f"out of memory or node lost): {type(exc).__name__}: {exc}")
            for event in ray.get(progress.drain.remote()):
                on_event(event)
        finally:
            for ref in pending:  # the driver stopped early (Ctrl-C): do not leave tasks running
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished or its worker is gone
                    pass
            ray.kill(progress)
