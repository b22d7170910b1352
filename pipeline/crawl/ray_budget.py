"""The request budget across nodes: ``BudgetState`` in a named Ray actor (``RayRequestBudget``).

Under ``--executor ray`` every crawl task of a session, on any node, asks one detached actor for
its slot, so the budget holds across processes and nodes that send from one address
(``pipeline.crawl.politeness`` has the rule, the state and the one-machine budget).
"""
from __future__ import annotations

from pipeline.crawl.politeness import CrawlHalted, BudgetBase, BudgetState, halted_message


def budget_actor_name(name: str) -> str:
    return f"mmp-budget:{name}"


class RayRequestBudget(BudgetBase):
    """``RequestBudget``'s interface (acquire, acquire_within, record, reset_halt, current_rate, state) over a Ray actor.

    Used by the crawl under ``--executor ray``: one detached, named actor per egress
    address (``name``), shared by every crawl task on every node that sends requests
    from that address, and by consecutive crawls on the same cluster. Needs a Ray
    connection (a task's worker has one; the driver after ``ray.init``).
    """

    NAMESPACE = "mmp"

    def __init__(self, name: str, rate: float | None = None, *, breaker_threshold: int = 5,
                 pause_seconds: float = 60.0, max_pause: float = 3600.0, max_trips: int = 6,
                 adaptive: bool = True, quiet_seconds: float = 60.0, min_rate: float | None = None):
        super().__init__(name, rate, breaker_threshold, pause_seconds, max_pause, max_trips,
                         adaptive, quiet_seconds, min_rate)
        self._actor = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_actor"] = None
        return state

    @property
    def actor(self):
        if self._actor is None:
            import ray

            self._actor = ray.remote(BudgetState).options(
                name=budget_actor_name(self.name), namespace=self.NAMESPACE, get_if_exists=True,
                lifetime="detached", num_cpus=0, max_restarts=-1).remote()
        return self._actor

    def _call(self, method, *args):
        import ray

        return ray.get(getattr(self.actor, method).remote(*args))

    def acquire(self) -> float:
        wait, trips, change = self._call("reserve", self.rate, self.max_trips, self.rule)
        if wait is None:
            raise CrawlHalted(halted_message(trips, self.name))
        self._increased(change)
        return self._wait(wait)

    def acquire_within(self, max_wait: float) -> str | None:
        wait, _, change = self._call("reserve", self.rate, self.max_trips, self.rule, max_wait, self.max_pause)
        return self._granted(wait, change)

    def record(self, outcome: str) -> None:
        tripped, change = self._call("record", outcome, self.breaker_threshold, self.pause_seconds,
                                     self.max_pause, self.rule, self.max_trips)
        self._recorded(outcome, tripped, change)

    def reset_halt(self) -> None:
        self._call("reset_halt", self.max_trips)

    def current_rate(self) -> float | None:
        return self._call("current_rate", self.rule) if self.rule is not None else self.rate

    def state(self) -> dict:
        return self._call("state", self.rate, self.rule)
