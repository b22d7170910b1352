"""Stopping a stage: Ctrl-C, SIGTERM, a killed main process, and the workers' device slots.

The real ``mmp-crawl`` against the local YouTube stand-in, in a subprocess: the first
SIGINT (SIGTERM) stops it within a few seconds with one line and exit 130 (143), no
traceback, no temporaries, no worker left; a second SIGINT exits at once; killing only
the main process takes its pool workers with it. A re-run completes the rest.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shards.verify import verify_dir

from tests.conftest import assert_final_files_whole, read_all_rows

ROOT = Path(__file__).resolve().parents[3]


def crawl_cmd(sample, tmp_path, videos, *extra, sleep="0.03"):
    return [sys.executable, "-m", "pipeline.crawl.stage", "--videos", str(videos), "--out", str(tmp_path / "data" / "crawl"),
            "--info-json", str(sample.info), "--budget-dir", str(tmp_path / "budget"), "--langs", "en,de,fr",
            "--unit-size", "4", "--sleep-subtitles", sleep, "--no-progress", "--no-request-limit",
            *extra]


def start(cmd, **env):
    return subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **env})


def wait_for_units(crawl_dir, n, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline and len(list(crawl_dir.glob("*.stats.json"))) < n:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


def worker_pids(crawl_dir) -> list[int]:
    return [int(m.group(1)) for p in (crawl_dir / "logs").glob("*.log") if (m := re.search(r"-worker(\d+)\.log$", p.name))]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_dead(pids, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def temporaries(crawl_dir):
    return [p for p in crawl_dir.iterdir() if ".tmp" in p.name]


def check_resume(cmd, crawl_dir, ids):
    assert verify_dir(crawl_dir).ok
    assert_final_files_whole(crawl_dir)
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(r["video_id"] for r in read_all_rows(crawl_dir)) == sorted(ids)
    assert not temporaries(crawl_dir) and not list(crawl_dir.glob(".run*.lock"))


@pytest.mark.parametrize("executor,sig,code", [("local", signal.SIGINT, 130), ("local", signal.SIGTERM, 143),
                                               ("inline", signal.SIGINT, 130)])
def test_first_signal_stops_with_one_line_and_resumes(sample, tmp_path, executor, sig, code):
    ids, videos = sample.many_videos(40, "intr")
    crawl_dir = tmp_path / "data" / "crawl"
    cmd = crawl_cmd(sample, tmp_path, videos, "--executor", executor, "--workers", "2")
    proc = start(cmd)
    wait_for_units(crawl_dir, 2, proc)
    workers = [p for p in worker_pids(crawl_dir) if p != proc.pid]  # inline: the main process logs as a worker
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C reaches the whole foreground process group
    else:
        os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.startswith("interrupted:")]
    assert len(lines) == 1 and re.fullmatch(r"interrupted: (\d+) of 10 units complete; run the same command "
                                            r"to resume", lines[0]), err
    complete = int(lines[0].split()[1])
    assert complete == len(list(crawl_dir.glob("*.stats.json"))) < 10
    assert len(workers) == (0 if executor == "inline" else 2)
    assert not wait_dead(workers)
    assert not temporaries(crawl_dir) and not list(crawl_dir.glob(".run*.lock"))
    check_resume(cmd, crawl_dir, ids)


def test_second_ctrl_c_exits_at_once(sample, tmp_path):
    ids, videos = sample.many_videos(16, "intr")
    crawl_dir = tmp_path / "data" / "crawl"
    cmd = crawl_cmd(sample, tmp_path, videos, "--workers", "2", sleep="0.4")
    proc = start(cmd, MMP_INTERRUPT_GRACE="120")  # in-flight units would take long to finish
    deadline = time.time() + 60
    while time.time() < deadline and len(worker_pids(crawl_dir)) < 2:
        time.sleep(0.05)
    workers = worker_pids(crawl_dir)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # the first waits for the units in flight
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 130 and "interrupted again" in err and "Traceback" not in err, err
    assert not wait_dead(workers)
    assert_final_files_whole(crawl_dir)


def test_workers_die_when_only_the_main_process_is_killed(sample, tmp_path):
    ids, videos = sample.many_videos(40, "intr")
    crawl_dir = tmp_path / "data" / "crawl"
    cmd = crawl_cmd(sample, tmp_path, videos, "--workers", "2")
    proc = start(cmd)
    wait_for_units(crawl_dir, 1, proc)
    workers = worker_pids(crawl_dir)
    assert len(workers) == 2
    os.kill(proc.pid, signal.SIGKILL)  # the main process only, not its group
    proc.communicate()
    try:
        assert not wait_dead(workers)
    finally:
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    check_resume(cmd, crawl_dir, ids)  # the dead run's lock is taken over, its temporaries cleared


# ---------------------------------------------------------------- workers' setup and device slots

def _no_free_slot():
    raise RuntimeError("no free device slot among 2 in /somewhere: more workers than --gpus")


def test_a_worker_whose_setup_fails_reports_the_cause():
    from pipeline.runtime.executors import LocalExecutor

    outcomes = list(LocalExecutor(2, initializer=_no_free_slot).run(abs, [1, 2, 3], lambda e: None))
    assert len(outcomes) == 3
    assert all("no free device slot" in o.error for o in outcomes), [o.error for o in outcomes]


def test_cpu_workers_claim_no_slot_files(tmp_path):
    pytest.importorskip("torch")
    from features import devices

    worker = devices.Worker()
    assert devices.pick_device(tmp_path, 0, 2, worker) == "cpu"
    assert worker.lock is None
    assert not list(tmp_path.glob(".gpu-slot-*"))


def test_slot_of_a_killed_worker_is_free_again(tmp_path):
    code = ("import time; from pathlib import Path; from features.devices import claim_slot; "
            f"i, f = claim_slot(Path({str(tmp_path)!r}), 1); print(i, flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "0"
        from features.devices import NoFreeSlot, claim_slot

        with pytest.raises(NoFreeSlot):
            claim_slot(tmp_path, 1)
    finally:
        proc.kill()
        proc.wait()
    slot, f = claim_slot(tmp_path, 1)
    f.close()
    assert slot == 0
