"""Stopping a stage: Ctrl-C and SIGTERM in the main process, and the life of pool workers.

The main process decides. The first SIGINT or SIGTERM (what Slurm sends before it
preempts a job) asks the executor to stop scheduling; units in flight get a short
grace period (``MMP_INTERRUPT_GRACE`` seconds) and are then abandoned, their
temporaries removed; ``run_stage`` prints one line and exits 130 (143 for SIGTERM).
A second signal exits at once. When units run in the main process itself (the inline
executor) the first signal abandons the unit in hand at once, through an exception
that ``except Exception`` does not catch, so the unit writer removes its temporaries.

Pool workers ignore SIGINT and SIGTERM (a terminal's Ctrl-C reaches the whole process
group, Slurm signals every process of a job) and die with their parent: the kernel
kills them when it exits (``PR_SET_PDEATHSIG``), and a watchdog thread checks the
parent pid where that is not available.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

GRACE_S = float(os.environ.get("MMP_INTERRUPT_GRACE", "3"))
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class UnitAbandoned(BaseException):
    """Raised in the main process by a first signal while it runs a unit itself (inline executor)."""


class StageInterrupted(SystemExit):
    """Raised by ``run_stage`` after an interruption: exits the program with 130 (SIGINT) or 143 (SIGTERM)
    without a traceback; a caller that wants to go on may catch it."""

    def __init__(self, signum: int, message: str):
        super().__init__(128 + signum)
        self.signum, self.message = signum, message


class StopRequest:
    """The main process's view of SIGINT/SIGTERM during a run; executors poll ``requested``.

    ``inline`` is true while a unit runs in this process: a first signal then raises
    ``UnitAbandoned`` where the unit is. ``on_exit`` runs before a second signal ends the
    process (to release the run lock).
    """

    def __init__(self, on_exit=None):
        self.signum: int | None = None
        self.reason: str | None = None  # a non-signal stop (e.g. the output became unwritable)
        self.inline = False
        self.on_exit = on_exit
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None or self.reason is not None

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            os.write(2, f"interrupted again: exiting now ({signal.Signals(signum).name})\n".encode())
            if self.on_exit is not None:
                try:
                    self.on_exit()
                except Exception:  # exiting anyway
                    pass
            os._exit(128 + signum)
        self.signum = signum
        if self.inline:
            raise UnitAbandoned(signum)

    def install(self) -> "StopRequest":
        """Take over SIGINT and SIGTERM (only possible in the main thread; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in _SIGNALS:
            if signal.getsignal(sig) is not self._handle:
                self._previous.setdefault(sig, signal.getsignal(sig))
                signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


# ---------------------------------------------------------------- pool workers

_PR_SET_PDEATHSIG = 1


def _parent_death_signal(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, interval: float) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(interval)


def _ignore(signum, frame) -> None:
    """A no-op handler rather than SIG_IGN: programs a worker starts (ffmpeg) get the default back on exec."""


def bind_worker_to_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Make a pool worker ignore the signals its parent handles and die when the parent does."""
    for sig in _SIGNALS:
        signal.signal(sig, _ignore)
    _parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid, interval), name="mmp-parent-watch",
                     daemon=True).start()
