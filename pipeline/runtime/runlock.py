"""One run per output directory: an exclusive lock taken by ``run_stage`` before any unit starts.

Two runs of a stage on the same ``--out`` would delete each other's temporaries and
fetch everything twice, so the second one is refused with a sentence naming the
holder. The lock is a small JSON file in the output directory (``pid``, ``host``,
``started``, ``command``), created with ``O_CREAT | O_EXCL``, which is atomic on a
local disk and on NFS. While its run lives a thread touches its mtime (the
heartbeat). A lock is stale when its process is gone: on this host, when its pid is
dead (or is another process now: the lock records its start time), whatever its heartbeat
says (a run stopped with Ctrl-Z, or a clock pushed back, still holds it); from another host,
when its heartbeat is older than ``MMP_LOCK_TIMEOUT`` seconds. A run whose heartbeat finds its
lock taken by another calls ``on_lost`` (``run_stage`` stops the run there: no unit starts, the
units in flight are abandoned).
A stale lock is taken over by renaming a fresh lock over it, under a short-lived
``.takeover`` guard so that two runs never take over the same stale lock together.

An object store has neither O_EXCL nor rename: there the lock is a lease object,
written, then read back after a pause; the run whose token is still there holds it
(last writer wins), and it is rewritten on every heartbeat.

Slices of one run (``--rank i --world-size n``) lock one file each and do not refuse
each other; any other pair of runs on the same directory does, two in one process
included. A stage's main that writes before ``run_stage`` takes the lock first and hands
it on (``run_stage(..., lock=lock)``); no process-wide record of held locks is kept.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid

from shards.storage import RemotePath, as_path

log = logging.getLogger("mmp")

HEARTBEAT_S = float(os.environ.get("MMP_LOCK_HEARTBEAT", "30"))
TIMEOUT_S = float(os.environ.get("MMP_LOCK_TIMEOUT", "300"))
LEASE_SETTLE_S = float(os.environ.get("MMP_LEASE_SETTLE", "2"))
_GUARD_STALE_S = 30.0  # a takeover takes milliseconds; a guard this old was left by a killed run


class RunLocked(Exception):
    """Another live run holds the output directory; the message names it."""


class LockLost(Exception):
    """This run's lock was taken by another run; the message says so."""


def check_held(path, token: str) -> None:
    """LockLost unless the lock at ``path`` is still the one with ``token`` (cheap: one small read)."""
    try:
        holder = json.loads(path.read_bytes())
    except FileNotFoundError:
        holder = None
    except (OSError, ValueError):  # a storage hiccup, a lock being replaced: the heartbeat decides
        return
    if not isinstance(holder, dict) or holder.get("token") != token:
        raise LockLost(f"the run lock {path} was taken by another run; this run stopped writing to {path.parent}")


def lock_name(rank: int = 0, world_size: int = 1) -> str:
    return ".run.lock" if world_size == 1 else f".run-rank{rank}-of-{world_size}.lock"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, /proc), None where it cannot be told."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _holder_alive(holder: dict) -> bool:
    try:
        pid = int(holder.get("pid", -1))
    except (TypeError, ValueError):
        return False
    if pid <= 0 or not pid_alive(pid):
        return False
    recorded, now = holder.get("pid_start"), process_start(pid)
    return recorded is None or now is None or recorded == now  # else the pid was reused


def is_stale(holder: dict | None, mtime: float, now: float | None = None) -> bool:
    """Whether the run that wrote ``holder`` (a lock's JSON, None if unreadable) is gone."""
    now = time.time() if now is None else now
    if not holder:
        return now - mtime > _GUARD_STALE_S  # a lock being written is readable within milliseconds
    if holder.get("host") == socket.gethostname():
        return not _holder_alive(holder)  # a live holder keeps its lock, whatever its heartbeat
    return now - mtime > TIMEOUT_S


def describe(holder: dict | None, path) -> str:
    if not holder:
        return f"another run is writing to {path}"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return (f"another run (pid {holder.get('pid')} on {holder.get('host')}, started {started}: "
            f"{holder.get('command', '?')}) is writing to {path}")


def _conflicts(mine: dict, other: dict | None) -> bool:
    """Slices of the same split run side by side; everything else excludes each other."""
    if not other:
        return True
    same_split = mine["world_size"] > 1 and other.get("world_size") == mine["world_size"]
    return not (same_split and other.get("rank") != mine["rank"])


class RunLock:
    """Exclusive use of ``directory`` by this run. ``acquire()`` raises RunLocked; ``release()`` is idempotent."""

    def __init__(self, directory, rank: int = 0, world_size: int = 1, command: str | None = None):
        self.directory = as_path(directory)
        self.path = self.directory / lock_name(rank, world_size)
        self.token = uuid.uuid4().hex
        self.info = {"pid": os.getpid(), "pid_start": process_start(os.getpid()), "host": socket.gethostname(),
                     "started": time.time(),
                     "command": command or " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]]),
                     "rank": rank, "world_size": world_size, "token": self.token}
        self.remote = isinstance(self.directory, RemotePath)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False
        self.lost: str | None = None  # why this run no longer holds its lock
        self.on_lost = None  # called (in the heartbeat thread) with that sentence

    # ------------------------------------------------------------ reading

    def _read(self, path) -> tuple[dict | None, float] | None:
        """(holder, mtime) of a lock file, None if there is none."""
        try:
            raw = path.read_bytes()
            mtime = path.stat().st_mtime
        except (FileNotFoundError, IsADirectoryError):
            return None
        try:
            holder = json.loads(raw)
            if not isinstance(holder, dict):
                holder = None
        except ValueError:
            holder = None
        if holder and self.remote:
            mtime = max(mtime, float(holder.get("refreshed", 0)))
        return holder, mtime

    def _others(self):
        for path in self.directory.glob(".run*.lock"):
            if path.name != self.path.name:
                yield path

    # ------------------------------------------------------------ taking it

    def acquire(self) -> "RunLock":
        if self.remote:
            self._acquire_lease()
        else:
            self._acquire_file()
        self.held = True
        try:
            self._check_others()
        except RunLocked:
            self.release()
            raise
        self._thread = threading.Thread(target=self._heartbeat, name="mmp-run-lock", daemon=True)
        self._thread.start()
        return self

    def _payload(self) -> bytes:
        return json.dumps(dict(self.info, refreshed=time.time()), sort_keys=True).encode()

    def _acquire_file(self) -> None:
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(self._payload())
                    f.flush()
                    os.fsync(f.fileno())
                return
            seen = self._read(self.path)
            if seen is None:
                continue  # released meanwhile: try again
            holder, mtime = seen
            if not is_stale(holder, mtime):
                raise RunLocked(describe(holder, self.directory))
            if self._take_over(holder):
                log.warning("took over the lock of a run that is gone (%s)", describe(holder, self.directory))
                return
            time.sleep(0.05)
        raise RunLocked(f"could not lock {self.path}: other runs keep taking it")

    def _take_over(self, stale: dict | None) -> bool:
        """Replace the stale lock by ours, unless another run is doing the same right now."""
        guard = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - guard.stat().st_mtime > _GUARD_STALE_S:
                    guard.unlink()
            except FileNotFoundError:
                pass
            return False
        os.close(fd)
        try:
            seen = self._read(self.path)
            if seen is not None and seen[0] != stale:
                return False  # someone else took it over before us
            tmp = self.path.with_name(f"{self.path.name}.new-{self.token[:8]}")
            tmp.write_bytes(self._payload())
            os.replace(tmp, self.path)
            return True
        finally:
            guard.unlink(missing_ok=True)

    def _acquire_lease(self) -> None:
        seen = self._read(self.path)
        if seen is not None and not is_stale(*seen) and (seen[0] or {}).get("token") != self.token:
            raise RunLocked(describe(seen[0], self.directory))
        self.path.write_bytes(self._payload())
        time.sleep(LEASE_SETTLE_S)  # a run that wrote at the same moment has written by now
        seen = self._read(self.path)
        if seen is None or not seen[0] or seen[0].get("token") != self.token:
            raise RunLocked(describe(seen[0] if seen else None, self.directory))

    def _check_others(self) -> None:
        for path in self._others():
            seen = self._read(path)
            if seen is None:
                continue
            holder, mtime = seen
            if not is_stale(holder, mtime) and _conflicts(self.info, holder):
                raise RunLocked(describe(holder, self.directory))

    # ------------------------------------------------------------ holding and releasing

    def _still_mine(self) -> bool:
        seen = self._read(self.path)
        return bool(seen and seen[0] and seen[0].get("token") == self.token)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if not self._still_mine():
                    self.lost = (f"the run lock {self.path} was taken by another run; this run stopped writing "
                                 f"to {self.directory}")
                    log.error("%s", self.lost)
                    if self.on_lost is not None:
                        self.on_lost(self.lost)
                    return
                if self.remote:
                    self.path.write_bytes(self._payload())
                else:
                    os.utime(self.path)
            except OSError as exc:  # a storage hiccup: the next beat tries again
                log.warning("could not refresh the lock %s: %s", self.path, exc)

    def release(self) -> None:
        self._stop.set()
        if not self.held:
            return
        self.held = False
        try:
            if self._still_mine():
                self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove the lock %s: %s", self.path, exc)

    def __enter__(self) -> "RunLock":
        return self if self.held else self.acquire()  # ``with lock_output(out) as lock:`` holds it already

    def __exit__(self, *exc) -> None:
        self.release()
