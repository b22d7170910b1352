"""One run per output directory, and an output that cannot be written is one sentence.

A second run on the same ``--out`` is refused with a sentence naming the holder; a
lock left by a dead process (or by another host that stopped beating) is taken
over; slices of one split run side by side. A read-only ``--out``, an ``--out``
that is a file and a full disk stop the run with one sentence, no traceback and no
temporaries.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from pipeline.subtitles import stage as align_stage

from pipeline.crawl import stage as crawl

from pipeline.runtime import runlock
from pipeline.runtime.runlock import RunLock, RunLocked
from pipeline.runtime.stage import Stage, Unit, run_stage
from shards.errors import UserError
from shards.layout import UnitFiles
from shards.writer import UnitWriter

SCHEMA = pa.schema([("video_id", pa.string()), ("status", pa.string()), ("error", pa.string())])


class Tiny(Stage):
    name = "test"
    schema = SCHEMA

    def plan(self):
        return [Unit(i, [f"v{i}x{j}" for j in range(2)]) for i in range(3)]

    def process(self, unit, writer):
        for key in unit.items:
            writer.write_sample(key, {"txt": key})
            writer.add_row({"video_id": key, "status": "ok"})
            self.video_done("ok")


def write_lock(directory, pid, host=None, name=".run.lock", **extra):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": time.time(),
                                "command": "mmp-crawl --out elsewhere", "rank": 0, "world_size": 1,
                                "token": "theirs", **extra}))
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def one_sentence(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------- the lock

def test_second_crawl_on_the_same_out_is_refused_naming_the_holder(sample, tmp_path, live_pid, capsys):
    out = tmp_path / "data"
    write_lock(out / "crawl", live_pid)
    assert crawl.main(sample.crawl_args(out)) == 2
    line = one_sentence(capsys.readouterr().err)
    assert f"pid {live_pid} on {socket.gethostname()}" in line and "mmp-crawl --out elsewhere" in line
    assert not list((out / "crawl").glob("*.stats.json")) and not list((out / "crawl").glob(".*.tmp*"))


def test_second_align_is_refused_and_the_lock_is_released_after_a_run(sample, tmp_path, live_pid, capsys):
    out = tmp_path / "data"
    assert crawl.main(sample.crawl_args(out)) == 0
    assert not (out / "crawl" / ".run.lock").exists()  # released when the run ended
    args = ["--crawl", str(out / "crawl"), "--out", str(out / "aligned"), "--langs", "en,de", "--no-progress"]
    write_lock(out / "aligned", live_pid)
    capsys.readouterr()
    assert align_stage.main(args) == 2
    assert f"pid {live_pid}" in one_sentence(capsys.readouterr().err)


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    write_lock(tmp_path, dead_pid())
    summary = run_stage(Tiny(), tmp_path, executor="inline", progress=False)
    assert summary.units_done == 3
    assert not (tmp_path / ".run.lock").exists() and not list(tmp_path.glob(".run.lock.*"))


def test_other_hosts_lock_is_live_while_it_beats_and_stale_after(tmp_path, monkeypatch):
    path = write_lock(tmp_path, 1, host="some-other-node")
    with pytest.raises(UserError, match="pid 1 on some-other-node"):
        run_stage(Tiny(), tmp_path, executor="inline", progress=False)
    old = time.time() - runlock.TIMEOUT_S - 5
    os.utime(path, (old, old))
    assert run_stage(Tiny(), tmp_path, executor="inline", progress=False).units_done == 3


def test_two_takeovers_of_one_stale_lock_leave_one_holder(tmp_path, monkeypatch):
    write_lock(tmp_path, dead_pid())
    first = RunLock(tmp_path).acquire()
    try:
        with pytest.raises(RunLocked, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    finally:
        first.release()
    assert not (tmp_path / ".run.lock").exists()


def test_a_main_may_take_the_lock_before_run_stage(tmp_path):
    from pipeline.runtime.stage import lock_output

    with lock_output(tmp_path) as lock:
        assert (tmp_path / ".run.lock").exists()
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):  # held, and not handed over
            run_stage(Tiny(), tmp_path, executor="inline", progress=False)
        assert run_stage(Tiny(), tmp_path, executor="inline", progress=False, lock=lock).units_done == 3
        assert (tmp_path / ".run.lock").exists()  # still the main's until it lets go
    assert not (tmp_path / ".run.lock").exists()


def test_heartbeat_refreshes_the_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "HEARTBEAT_S", 0.05)
    lock = RunLock(tmp_path).acquire()
    try:
        old = time.time() - 1000
        os.utime(lock.path, (old, old))
        deadline = time.time() + 5
        while time.time() < deadline and lock.path.stat().st_mtime < old + 1:
            time.sleep(0.02)
        assert lock.path.stat().st_mtime > old + 1
    finally:
        lock.release()


def test_slices_share_an_output_but_a_whole_run_does_not(tmp_path, live_pid):
    write_lock(tmp_path, live_pid, name=runlock.lock_name(1, 2), rank=1, world_size=2)
    assert run_stage(Tiny(), tmp_path, executor="inline", rank=0, world_size=2, progress=False).units_done == 2
    with pytest.raises(UserError, match=f"pid {live_pid}"):  # a whole run would redo slice 1's units
        run_stage(Tiny(), tmp_path, executor="inline", progress=False)


def test_lease_on_an_object_store_refuses_a_second_run(monkeypatch):
    pytest.importorskip("fsspec")
    monkeypatch.setattr(runlock, "LEASE_SETTLE_S", 0.0)
    out = "memory://mmp-lease-test/out"
    first = RunLock(out).acquire()
    try:
        with pytest.raises(RunLocked, match=f"pid {os.getpid()}"):
            RunLock(out).acquire()
    finally:
        first.release()
    RunLock(out).acquire().release()  # free again once released


# ---------------------------------------------------------------- the output's storage

def test_out_that_is_a_file_is_one_sentence(tmp_path):
    out = tmp_path / "out"
    out.write_text("not a directory")
    with pytest.raises(UserError, match=f"cannot write the output {out}.*not a directory"):
        run_stage(Tiny(), out, executor="inline", progress=False)
    with pytest.raises(UserError, match="a part of the path is a file"):
        run_stage(Tiny(), out / "crawl", executor="inline", progress=False)


def test_read_only_out_is_one_sentence(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    real_open = os.open

    def read_only(path, flags, *a, **kw):  # the tests run as root, which chmod cannot stop
        if str(path).startswith(str(out)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(runlock.os, "open", read_only)
    with pytest.raises(UserError, match=f"cannot write the output {out}.*read-only"):
        run_stage(Tiny(), out, executor="inline", progress=False)


def test_full_disk_stops_the_crawl_with_one_sentence_and_no_temporaries(sample, tmp_path, monkeypatch, capsys):
    import shards.writer as writer

    def full(*a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer.pq, "write_table", full)
    out = tmp_path / "data"
    assert crawl.main(sample.crawl_args(out, "--unit-size", "2", "--executor", "inline")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if "mmp-crawl: error:" in l]
    assert len(lines) == 1 and "disk is full" in lines[0] and str(out / "crawl") in lines[0], err
    assert not [p for p in (out / "crawl").iterdir() if ".tmp" in p.name]
    assert not list((out / "crawl").glob("*.stats.json"))


def test_writer_removes_its_temporaries_when_publishing_fails(tmp_path, monkeypatch):
    import shards.writer as writer

    files = UnitFiles(tmp_path, "test", 0)
    monkeypatch.setattr(writer, "atomic_write_json", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError):
        with UnitWriter(files, SCHEMA) as w:
            w.write_sample("k", {"txt": "x"})
            w.add_row({"video_id": "k", "status": "ok"})
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    assert not files.stats.exists()


def test_a_live_holder_on_this_host_keeps_its_lock_whatever_its_heartbeat(tmp_path, live_pid):
    """A run stopped with Ctrl-Z past MMP_LOCK_TIMEOUT, or whose lock's mtime was pushed back, is
    still alive: a second run must not take its output."""
    path = write_lock(tmp_path, live_pid, pid_start=runlock.process_start(live_pid))
    old = time.time() - runlock.TIMEOUT_S - 3600
    os.utime(path, (old, old))
    with pytest.raises(UserError, match=f"pid {live_pid}"):
        run_stage(Tiny(), tmp_path, executor="inline", progress=False)
    assert json.loads(path.read_text())["token"] == "theirs"
    assert not list(tmp_path.glob("test-*.stats.json"))


def test_a_reused_pid_does_not_keep_a_dead_runs_lock(tmp_path, live_pid):
    write_lock(tmp_path, live_pid, pid_start=runlock.process_start(live_pid) - 1)  # another process had the pid
    assert run_stage(Tiny(), tmp_path, executor="inline", progress=False).units_done == 3


class Slow(Tiny):
    def process(self, unit, writer):
        time.sleep(0.3)
        super().process(unit, writer)


def test_a_run_whose_lock_is_taken_stops_writing(tmp_path, monkeypatch):
    """Another run replaced the lock (as a takeover would): units not yet published are not."""
    monkeypatch.setattr(runlock, "HEARTBEAT_S", 0.05)
    lock = RunLock(tmp_path).acquire()

    class TakenAfterFirst(Slow):
        def process(self, unit, writer):
            super().process(unit, writer)
            if unit.index == 0:
                write_lock(tmp_path, 1, host="another-node")  # taken while unit 0 is being written
                (tmp_path / ".test-000001.tar.tmp-theirs").write_bytes(b"the new holder's unit in progress")

    with pytest.raises(UserError, match="was taken by another run; this run stopped writing"):
        run_stage(TakenAfterFirst(), tmp_path, executor="inline", progress=False, lock=lock)
    lock.release()
    assert not list(tmp_path.glob("test-*.stats.json"))
    assert [p.name for p in tmp_path.glob(".*tmp*")] == [".test-000001.tar.tmp-theirs"]
    assert json.loads((tmp_path / ".run.lock").read_text())["host"] == "another-node"
    assert (tmp_path / ".test-000001.tar.tmp-theirs").exists()  # the new holder's temporaries are its own
