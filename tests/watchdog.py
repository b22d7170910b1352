"""A watchdog for the tests of bounds: a call runs in a child process that is killed when it runs
past its time or its memory, so a regression fails its test instead of taking the machine down.

``run_bounded(fn, *args, seconds=, memory_mb=)`` forks, runs ``fn(*args)`` in the child (its own
process group, so processes it starts are killed with it) and returns its result, or
re-raises what it raised (``SystemExit`` included). The parent samples the resident memory of the
child and its descendants every 20 ms; once it has grown by more than ``memory_mb`` over what the child held when
it began (a fork starts with some of the test process's pages), or after ``seconds``, it kills the group and
fails the test with ``Exceeded``, saying which bound and what was seen. ``call_main`` does the same for a command's
``main(argv)`` and hands back its exit code and what it printed.
"""
from __future__ import annotations

import contextlib
import io
import multiprocessing as mp
import os
import pickle
import signal
import sys
import time
import traceback
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")


class Exceeded(AssertionError):
    """The call ran past a bound of the watchdog (the test fails)."""


def tree_rss(root: int) -> tuple[int, int]:
    """(resident bytes, processes) of process ``root`` and all its descendants (Linux's /proc)."""
    parents, sizes = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # fields after the name: state, ppid, ...
            pid = int(entry.name)
            parents[pid] = int(fields[1])
            sizes[pid] = int((entry / "statm").read_text().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            continue  # the process ended while it was read
    tree, todo = {root}, [root]
    children: dict = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in tree:
                tree.add(child)
                todo.append(child)
    return sum(sizes.get(pid, 0) for pid in tree), sum(1 for pid in tree if pid in sizes)


def _own_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _child(conn, start_rss, fn, args, kwargs) -> None:
    os.setpgrp()
    start_rss.value = _own_rss()  # what the child holds before its work: a fork shares only some pages
    torch = sys.modules.get("torch")
    if torch is not None:  # the parent's OpenMP pool is not in a fork: one thread never asks for it
        torch.set_num_threads(1)
    try:
        reply = ("ok", fn(*args, **kwargs))
    except BaseException as exc:  # handed to the parent, which raises it in the test
        reply = ("raised", exc, traceback.format_exc())
    try:
        conn.send_bytes(pickle.dumps(reply))
    except Exception:  # an unpicklable result or exception: its text still reaches the test
        conn.send_bytes(pickle.dumps(("raised", RuntimeError(repr(reply[1])), traceback.format_exc())))
    conn.close()
    os._exit(0)


def run_bounded(fn, *args, seconds: float = 60.0, memory_mb: float = 1024.0, start: str = "fork", **kwargs):
    """``fn(*args, **kwargs)`` in a child under a wall-time and resident-memory bound.

    ``start="fork"`` (the default) keeps what the test set up (monkeypatches, fixtures' state) and
    takes any callable; ``"spawn"`` starts a clean interpreter, for work a fork cannot do safely
    once the test process has run torch (its thread pools do not survive a fork), and takes only
    what pickles (module-level functions)."""
    ctx = mp.get_context(start)
    receive, send = ctx.Pipe(duplex=False)
    start_rss = ctx.RawValue("d", 0.0)
    proc = ctx.Process(target=_child, args=(send, start_rss, fn, args, kwargs))
    proc.start()
    send.close()
    base = _own_rss()  # until the child says what it started with
    started = time.monotonic()
    peak = 0
    try:
        while True:
            if receive.poll(0.02):
                try:
                    reply = pickle.loads(receive.recv_bytes())
                except EOFError:  # the child went without a word (a crash, os._exit)
                    proc.join(5)
                    raise Exceeded(f"{getattr(fn, '__name__', fn)}'s process died (exit code {proc.exitcode})")
                break
            rss, count = tree_rss(proc.pid)
            peak = max(peak, rss)
            base = start_rss.value or base
            if rss > base + memory_mb * 2**20:
                raise Exceeded(f"{getattr(fn, '__name__', fn)} used more than {memory_mb:g} MiB of memory "
                               f"(grew by {(rss - base) / 2**20:.0f} MiB in {time.monotonic() - started:.1f} s: "
                               f"{rss / 2**20:.0f} MiB in {count} processes, {base / 2**20:.0f} MiB at the start, "
                               f"the test process {_own_rss() / 2**20:.0f} MiB)")
            if time.monotonic() - started > seconds:
                raise Exceeded(f"{getattr(fn, '__name__', fn)} ran past {seconds:g} s "
                               f"(peak {peak / 2**20:.0f} MiB resident)")
            if not proc.is_alive() and not receive.poll(0.2):
                raise Exceeded(f"{getattr(fn, '__name__', fn)}'s process died (exit code {proc.exitcode})")
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.join(5)
        receive.close()
    if reply[0] == "ok":
        return reply[1]
    exc = reply[1]
    if not isinstance(exc, (SystemExit, KeyboardInterrupt)):
        exc.add_note(f"raised in the watched process:\n{reply[2]}")
    raise exc


def _main_printing(main, argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def call_main(main, argv, *, seconds: float = 120.0, memory_mb: float = 1024.0, start: str = "fork"):
    """``main(argv)`` under the watchdog: (exit code, stdout, stderr)."""
    return run_bounded(_main_printing, main, list(argv), seconds=seconds, memory_mb=memory_mb, start=start)
