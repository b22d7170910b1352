"""The same units give the same outputs under inline, local, ray and --rank/--world-size.

One small crawl of the shipped sample (served on 127.0.0.1) and its alignment, run
under each executor; the parquet rows (timing columns aside) and the tar members
(names and bytes) must be identical. Ray is a real local instance, one per module.
Also what every executor shares: progress (plain lines when stderr is not a terminal,
videos counted by status) and the refusal of --workers below 1.
"""
from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.subtitles import stage as align_stage

from pipeline.crawl import stage as crawl
from pipeline.runtime.stage import Stage, Unit
from shards.layout import completed_units
from shards.reader import iter_samples, read_rows

TIMING = {"seconds", "crawled_at"}


def comparable_rows(directory) -> list[dict]:
    """Every row of every completed unit, without timing columns, in a stable order."""
    rows = []
    for prefix in ("crawl", "aligned", "mmp", "test"):
        for unit in completed_units(directory, prefix):
            rows += [{k: v for k, v in r.items() if k not in TIMING} for r in read_rows(unit.parquet)]
    return sorted(rows, key=lambda r: (str(r.get("video_id")), str(r)))


def tar_members(directory) -> dict:
    """``{unit stem: {member name: bytes}}`` over every completed unit."""
    out = {}
    for prefix in ("crawl", "aligned", "mmp", "test"):
        for unit in completed_units(directory, prefix):
            out[unit.stem] = {f"{s['__key__']}.{m}": v for s in iter_samples(unit.tar) for m, v in s.items()
                              if m != "__key__"}
    return out


@pytest.fixture(scope="module")
def ray_instance():
    pytest.importorskip("ray")
    from pipeline.runtime.ray_executor import start_local_ray
    import ray

    start_local_ray(2)
    try:
        yield ray
    finally:
        ray.shutdown()


def run_crawl(sample, out, *extra):
    return crawl.main(sample.crawl_args(out, "--unit-size", "2", "--langs", "en,de", *extra))


def run_align(source, out, *extra):
    return align_stage.main(["--crawl", str(source), "--out", str(out), "--langs", "en,de", "--no-progress", *extra])


def test_crawl_and_align_are_the_same_under_every_executor(sample, tmp_path, ray_instance):
    ref = tmp_path / "inline"
    assert run_crawl(sample, ref, "--executor", "inline") == 0
    assert run_align(ref / "crawl", ref / "aligned", "--executor", "inline") == 0
    rows, members = comparable_rows(ref / "crawl"), tar_members(ref / "crawl")
    arows, amembers = comparable_rows(ref / "aligned"), tar_members(ref / "aligned")
    assert len(members) >= 3 and rows and arows and amembers
    assert any(r["status"] != "ok" for r in rows), "the sample holds failures too"

    runs = {
        "local": [("--executor", "local", "--workers", "2")],
        "ray": [("--executor", "ray", "--workers", "2")],
        "slices": [("--rank", "0", "--world-size", "2"), ("--rank", "1", "--world-size", "2")],
    }
    for name, invocations in runs.items():
        out = tmp_path / name
        for flags in invocations:
            assert run_crawl(sample, out, *flags) == 0, name
            assert run_align(ref / "crawl", out / "aligned", *flags) == 0, name
        assert comparable_rows(out / "crawl") == rows, name
        assert tar_members(out / "crawl") == members, name
        assert comparable_rows(out / "aligned") == arows, name
        assert tar_members(out / "aligned") == amembers, name


def test_ray_executor_reports_progress_per_video(sample, tmp_path, ray_instance):
    """Events sent by Ray tasks reach the driver's progress callback, one per input video."""
    from pipeline.runtime.executors import make_executor

    seen = []
    ex = make_executor("ray", 2)
    outcomes = list(ex.run(_EmitItems(), [Unit(i, list(range(i + 2))) for i in range(3)], seen.append))
    assert sorted(o.result for o in outcomes) == [2, 3, 4] and not any(o.error for o in outcomes)
    assert sorted(seen) == sorted(["ok"] * 9)


class _EmitItems:
    """A unit function that sends one progress event per item to the sink its executor binds."""

    events = None

    def bind_events(self, events):
        self.events = events

    def __call__(self, unit):
        for _ in unit.items:
            self.events.put("ok")
        return len(unit.items)



# ---------------------------------------------------------------- progress and flags

class Statuses(Stage):
    """Two units whose videos end ok, skipped (no_subtitles) or unavailable."""

    name = "test"
    schema = pa.schema([("video_id", pa.string()), ("status", pa.string())])

    def plan(self):
        return [Unit(0, ["ok", "no_subtitles", "ok"]), Unit(1, ["unavailable", "ok"])]

    def process(self, unit, writer):
        for j, status in enumerate(unit.items):
            writer.add_row({"video_id": f"v{unit.index}{j}", "status": status})
            self.video_done(status)


def test_progress_is_plain_lines_when_not_a_terminal_and_names_statuses(tmp_path, monkeypatch, capsys):
    from pipeline.runtime import progress
    from pipeline.runtime.stage import print_summary, run_stage

    monkeypatch.setattr(progress, "PROGRESS_EVERY_S", 0.0)
    summary = run_stage(Statuses(), tmp_path, executor="inline", progress=True)
    print_summary("mmp-test", tmp_path, summary)
    captured = capsys.readouterr()
    lines = [l for l in captured.err.splitlines() if l.startswith("test: ")]
    assert lines and lines[-1].startswith("test: 2/2 units, 5/5 videos (ok=3 no_subtitles=1 unavailable=1)"), lines
    assert "failed=" not in captured.err  # a skipped video is not a failure
    assert "0 units failed" in captured.out


def test_workers_below_one_are_refused_in_one_sentence(sample, tmp_path, capsys):
    from pipeline.runtime.stage import run_stage
    from shards.errors import UserError

    for bad in ("0", "-2"):
        try:
            code = run_crawl(sample, tmp_path / "out", "--workers", bad)
        except SystemExit as exc:  # argparse's exit, where a main does not turn it into its return code
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err
        assert f"argument --workers: '{bad}' is not a number of worker processes; give 1 or more" in err
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="--workers 0"):
        run_stage(Statuses(), tmp_path, executor="local", workers=0, progress=False)


# ---------------------------------------------------------------- a failed unit's exception type

class Halt(RuntimeError):
    pass


class Raises(Stage):
    """Unit 0 raises a Halt; unit 1 a ValueError whose text names Halt (and CrawlHalted)."""

    name = "test"
    schema = pa.schema([("video_id", pa.string()), ("status", pa.string())])

    def plan(self):
        return [Unit(0, ["a"]), Unit(1, ["b"])]

    def process(self, unit, writer):
        if unit.index == 0:
            raise Halt("stop")
        raise ValueError("not a Halt, though its traceback says Halt and CrawlHalted")


@pytest.mark.parametrize("executor,workers", [("inline", 1), ("local", 2)])
def test_a_failed_unit_is_recorded_with_its_exception_type(tmp_path, executor, workers):
    from pipeline.runtime.executors import type_name
    from pipeline.runtime.stage import run_stage

    summary = run_stage(Raises(), tmp_path, executor=executor, workers=workers, progress=False)
    assert summary.units_failed == 2
    assert {unit: kind for unit, _, kind in summary.failures} == {0: type_name(Halt), 1: "builtins.ValueError"}
    assert all("Traceback" in text for _, text, _ in summary.failures)
    assert summary.raised(Halt) and summary.raised(ValueError)
    assert not summary.raised(RuntimeError)  # by the type itself, never by what a traceback's text says


def test_a_failed_ray_task_is_recorded_with_its_exception_type(tmp_path, ray_instance):
    from pipeline.runtime.executors import type_name
    from pipeline.runtime.stage import run_stage

    summary = run_stage(Raises(), tmp_path, executor="ray", workers=2, progress=False, max_unit_retries=0)
    assert {unit: kind for unit, _, kind in summary.failures} == {0: type_name(Halt), 1: "builtins.ValueError"}
    assert summary.raised(Halt) and not summary.raised(RuntimeError)
