"""Progress events and warnings travel with the work, and no module holds a process's state.

A stage's ``video_done`` and ``report_warning`` reach the parent's progress callback from
pool workers and from the inline executor (a warning once per worker process, however
many videos meet it); the modules that run units keep no mutable private globals.
"""
from __future__ import annotations

import ast
import importlib
import inspect

import pyarrow as pa
import pytest

from pipeline.runtime.executors import InlineExecutor, LocalExecutor
from pipeline.runtime.stage import Stage, Unit, _UnitRunner

STATE_FREE = ["pipeline.runtime.executors", "pipeline.runtime.ray_executor", "pipeline.runtime.stage",
              "features.devices", "features.extract", "pipeline.crawl.sources",
              "pipeline.runtime.budget"]
# The Ray worker's per-process cache of the set-up unit function: one object, documented there.
ALLOWED = {("pipeline.runtime.ray_executor", "_SET_UP")}


class Warns(Stage):
    name = "test"
    schema = pa.schema([("video_id", pa.string()), ("status", pa.string())])

    def plan(self):
        return [Unit(i, [f"v{i}x{j}" for j in range(3)]) for i in range(4)]

    def process(self, unit, writer):
        for key in unit.items:
            writer.add_row({"video_id": key, "status": "ok"})
            self.video_done("ok")
            self.report_warning("the same warning")


@pytest.mark.parametrize("executor", [InlineExecutor(), LocalExecutor(2)], ids=["inline", "local"])
def test_events_and_a_once_per_process_warning_reach_the_parent(tmp_path, executor):
    stage = Warns()
    seen: list = []
    outcomes = list(executor.run(_UnitRunner(stage, tmp_path), stage.plan(), seen.append))
    assert len(outcomes) == 4 and not any(o.error for o in outcomes), [o.error for o in outcomes]
    assert seen.count("ok") == 12
    warnings = [e for e in seen if e == ("warning", "the same warning")]
    assert 1 <= len(warnings) <= (1 if executor.name == "inline" else 2)
    assert stage.events is None  # the inline run's sink is gone with the run


def test_a_pickled_stage_leaves_its_sink_behind():
    import pickle

    stage = Warns()
    _UnitRunner(stage, "/tmp").bind_events(object())
    assert stage.events is not None
    assert pickle.loads(pickle.dumps(stage)).events is None


@pytest.mark.parametrize("name", STATE_FREE)
def test_no_mutable_module_state(name):
    if name.startswith("features"):
        pytest.importorskip("torch")
    module = importlib.import_module(name)
    held = [k for k, v in vars(module).items()
            if k.startswith("_") and not k.startswith("__") and (name, k) not in ALLOWED
            and (v is None or isinstance(v, (dict, list, set)))]
    assert not held, f"{name} holds process state in {held}"
    tree = ast.parse(inspect.getsource(module))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Global)], f"{name} rebinds a module global"
