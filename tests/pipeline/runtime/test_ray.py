"""--executor ray on a real local Ray instance (127.0.0.1, 2 CPUs, one per module).

A worker killed in the middle of a unit is retried and nothing is lost or
duplicated; the crawl's request budget is one actor per egress address, shared by
every worker (checked against the local server's request log); units that need what
no node offers are refused up front.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import time
import uuid

import pyarrow as pa
import pytest

ray = pytest.importorskip("ray")

from pipeline.crawl import stage as crawl  # noqa: E402
from pipeline.runtime.ray_executor import start_local_ray  # noqa: E402
from pipeline.crawl.politeness import CrawlHalted  # noqa: E402
from pipeline.crawl.ray_budget import RayRequestBudget  # noqa: E402
from pipeline.runtime.stage import Stage, Unit, run_stage  # noqa: E402
from shards.errors import UserError  # noqa: E402
from shards.layout import UnitFiles, completed_units  # noqa: E402
from shards.reader import iter_samples, read_rows  # noqa: E402
from shards.verify import verify_dir  # noqa: E402

SCHEMA = pa.schema([("video_id", pa.string()), ("status", pa.string()), ("error", pa.string()),
                    ("pid", pa.int64())])


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    start_local_ray(2, {"egress_a": 2})
    try:
        yield
    finally:
        ray.shutdown()


class KillOnce(Stage):
    """Four units of three items; unit 1's worker kills itself (SIGKILL) after two items,
    the first ``kills`` times it gets there (counted in marker files)."""

    name = "test"
    schema = SCHEMA

    def __init__(self, markers, kills: int = 1):
        self.markers, self.kills = markers, kills

    def plan(self):
        return [Unit(i, [f"v{i}x{j}" for j in range(3)]) for i in range(4)]

    def process(self, unit, writer):
        for j, key in enumerate(unit.items):
            writer.write_sample(key, {"txt": key})
            writer.add_row({"video_id": key, "status": "ok", "pid": os.getpid()})
            self.video_done("ok")
            if unit.index == 1 and j == 1:
                done = len(list(self.markers.glob("kill-*")))
                if done < self.kills:
                    (self.markers / f"kill-{done}").write_text(str(os.getpid()))
                    os.kill(os.getpid(), signal.SIGKILL)


def all_keys(out):
    rows = [r["video_id"] for u in completed_units(out, "test") for r in read_rows(u.parquet)]
    samples = [s["__key__"] for u in completed_units(out, "test") for s in iter_samples(u.tar)]
    return rows, samples


def test_killed_worker_is_retried_and_nothing_is_lost_or_duplicated(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / "out"
    summary = run_stage(KillOnce(markers), out, executor="ray", workers=2, max_unit_retries=2, progress=False)
    assert (summary.units_done, summary.units_failed) == (4, 0), summary.failures
    killed_pid = int((markers / "kill-0").read_text())
    rows, samples = all_keys(out)
    expected = [f"v{i}x{j}" for i in range(4) for j in range(3)]
    assert sorted(rows) == expected and sorted(samples) == expected  # each exactly once
    retried = read_rows(UnitFiles(out, "test", 1).parquet)
    assert {r["pid"] for r in retried} != {killed_pid}, "unit 1 was redone by another worker process"
    report = verify_dir(out)
    assert report.ok and report.units == 4 and not report.incomplete, (report.problems, report.incomplete)


def test_out_of_retries_is_a_failed_unit_that_a_rerun_redoes(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / "out"
    summary = run_stage(KillOnce(markers, kills=1), out, executor="ray", workers=2, max_unit_retries=0, progress=False)
    assert (summary.units_done, summary.units_failed) == (3, 1)
    assert summary.failures[0][0] == 1 and "died" in summary.failures[0][1]
    assert not UnitFiles(out, "test", 1).tar.exists(), "nothing under a final name from the killed attempt"
    again = run_stage(KillOnce(markers, kills=1), out, executor="ray", workers=2, progress=False)
    assert (again.units_skipped, again.units_done, again.units_failed) == (3, 1, 0)
    rows, samples = all_keys(out)
    assert len(rows) == len(set(rows)) == 12 and len(samples) == len(set(samples)) == 12
    assert verify_dir(out).ok


class NeedsGpu(KillOnce):
    resources = {"num_cpus": 1, "num_gpus": 1}


def test_units_no_node_can_run_are_refused(tmp_path):
    with pytest.raises(UserError, match="offers 0 GPU.*--num-gpus"):
        run_stage(NeedsGpu(tmp_path, kills=0), tmp_path / "out", executor="ray", workers=2, progress=False)


def test_crawl_egress_without_a_node_advertising_it_is_a_clear_error(sample, tmp_path, capsys):
    assert crawl.main(sample.crawl_args(tmp_path / "o", "--executor", "ray", "--egress", "nowhere")) == 2
    err = capsys.readouterr().err
    assert "egress_nowhere" in err and "ray start --resources" in err
    assert crawl.main(sample.crawl_args(tmp_path / "o", "--egress", "a")) == 2  # local executor
    assert "--executor ray" in capsys.readouterr().err


def test_two_ray_workers_share_one_budget_per_egress_address(sample, tmp_path):
    """Units on two Ray workers, one egress address, 8 translation requests/s: the server sees 8/s, not 16/s."""
    rate = 8.0
    before = len(sample.server.requests)
    out = tmp_path / "o"
    assert crawl.main(sample.crawl_args(out, "--unit-size", "2", "--langs", "en,de,fr,ru", "--executor", "ray",
                                        "--workers", "2", "--egress", "a", "--max-requests-per-second", "100",
                                        "--translation-requests-per-second", str(rate))) == 0
    requests = sample.server.requests[before:]
    stats = [json.loads(u.stats.read_text()) for u in completed_units(out / "crawl", "crawl")]
    assert len({s["pid"] for s in stats}) >= 2, "units ran in two worker processes"
    assert sum(s["counts"].get("requests", 0) for s in stats) == len(requests)
    translations = [r for r in requests if "tlang=" in r["raw"]]
    assert sum(s["counts"].get("translation_requests", 0) for s in stats) == len(translations)
    times = sorted(r["t"] for r in translations)
    n = len(times)
    assert n >= 8
    # n requests through one budget at `rate`: at least (n - 1) / rate seconds from first to last
    assert times[-1] - times[0] >= (n - 1) / rate * 0.9
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert sorted(gaps)[len(gaps) // 2] >= 0.8 / rate  # typical gap is one slot, not half of one
    for kind in ("own", "translations", "videos"):  # the budgets of the anonymous session from address a
        assert ray.get_actor(f"mmp-budget:youtube.anonymous@egress-a.{kind}", namespace="mmp") is not None


def test_budget_actor_breaker_pauses_everyone_then_halts(tmp_path):
    name = f"t-{uuid.uuid4().hex[:8]}"
    a = RayRequestBudget(name, None, breaker_threshold=2, pause_seconds=0.3, max_trips=1)
    b = RayRequestBudget(name, None, breaker_threshold=2, pause_seconds=0.3, max_trips=1)
    assert a.acquire() == 0
    a.record("rate_limited")
    b.record("bot_check")  # two strikes from two clients: the shared breaker trips
    assert b.state()["trips"] == 1

    @ray.remote(num_cpus=0)
    def waited(budget):
        return budget.acquire()

    assert 0.1 < ray.get(waited.remote(b)) <= 0.35  # a task elsewhere waits out the pause too
    a.record("rate_limited")
    a.record("rate_limited")
    time.sleep(0.35)
    with pytest.raises(CrawlHalted, match=name):
        b.acquire()
    b.reset_halt()
    assert a.acquire() >= 0
    a.record("ok")
    assert a.state()["trips"] == 0


def test_budget_actor_spaces_requests_from_two_tasks():
    name = f"t-{uuid.uuid4().hex[:8]}"
    rate, n = 20.0, 10

    @ray.remote(num_cpus=1)
    def hammer(budget):
        out = []
        for _ in range(n):
            budget.acquire()
            out.append(time.time())
        return out

    budget = RayRequestBudget(name, rate)
    times = sorted(sum(ray.get([hammer.remote(budget), hammer.remote(budget)]), []))
    assert times[-1] - times[0] >= (2 * n - 1) / rate * 0.9


def test_local_instance_listens_on_loopback_only():
    psutil = pytest.importorskip("psutil")

    @ray.remote(num_cpus=0)
    def node_ip():
        return ray.util.get_node_ip_address()

    assert ray.get(node_ip.remote()) == "127.0.0.1"
    node = ray._private.worker._global_node  # this instance's processes only (others may run Ray too)
    ray_pids = {info.process.pid for infos in node.all_processes.values() for info in infos}
    ray_pids |= {c.pid for pid in list(ray_pids) if psutil.pid_exists(pid) for c in psutil.Process(pid).children(True)}
    listening = [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.pid in ray_pids]
    assert listening, "found the Ray servers' sockets"
    assert all(c.laddr.ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for c in listening), listening


def test_unreachable_cluster_is_a_clear_error_not_a_hang(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from tests.pipeline.runtime.test_ray import KillOnce; "
            "from pipeline.runtime.stage import run_stage; from shards.errors import UserError\n"
            "try:\n    run_stage(KillOnce(Path(sys.argv[1]), kills=0), Path(sys.argv[1]) / 'o', executor='ray', "
            "ray_address='127.0.0.1:1', progress=False)\n"
            "except UserError as e:\n    print('USER ERROR:', e); sys.exit(2)\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env=env, cwd=str(Path(__file__).resolve().parents[3]))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in done.stdout and "ray start --head" in done.stdout
    with pytest.raises(UserError, match="--max-unit-retries"):
        run_stage(KillOnce(tmp_path, kills=0), tmp_path / "o", executor="ray", max_unit_retries=-1, progress=False)


class InterruptDriver(Stage):
    """Unit 0 sends the driver a SIGINT (a Ctrl-C) on its first run; the other units take a while."""

    name = "test"
    schema = SCHEMA

    def __init__(self, markers):
        self.markers, self.driver = markers, os.getpid()

    def plan(self):
        return [Unit(i, [f"v{i}"]) for i in range(6)]

    def process(self, unit, writer):
        if unit.index == 0 and not (self.markers / "sent").exists():
            (self.markers / "sent").write_text("")
            os.kill(self.driver, signal.SIGINT)
        else:
            time.sleep(0.5)
        writer.add_row({"video_id": unit.items[0], "status": "ok", "pid": os.getpid()})
        self.video_done("ok")


def test_ctrl_c_stops_a_ray_run_with_exit_130_and_a_rerun_finishes(tmp_path, capsys):
    from pipeline.runtime.interrupt import StageInterrupted

    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / "out"
    with pytest.raises(StageInterrupted) as exc:
        run_stage(InterruptDriver(markers), out, executor="ray", workers=2, progress=False)
    assert exc.value.code == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "units complete; run the same command to resume" in err, err
    assert not list(out.glob(".run*.lock"))
    summary = run_stage(InterruptDriver(markers), out, executor="ray", workers=2, progress=False)
    assert summary.units_done + summary.units_skipped == 6 and not summary.failures
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
