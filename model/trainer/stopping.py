"""Stopping mmp-train on a signal without losing steps.

The first SIGINT (Ctrl-C) or SIGTERM (what Slurm sends before it preempts a job) asks the run to
stop once the step in flight is done: every rank agrees on the step (one all-reduce of the
request), a checkpoint is written there, and the process exits 130 or 143. A second signal
exits at once; checkpoints are published by rename, so none is left half-written under its
final name. Data loader workers ignore both signals: the trainer owns the decision, and it ends
them as it exits (torch's workers also end when their parent dies).
"""
from __future__ import annotations

import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ignore_stop_signals(_worker_id: int = 0) -> None:
    """``worker_init_fn`` for data loader workers."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class StopRequest:
    """Context manager that turns the first stop signal into a request read between steps."""

    def __init__(self, prog: str = "mmp-train"):
        self.prog = prog
        self.signum = 0
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, _frame) -> None:
        if self.signum:
            print(f"{self.prog}: {signal.Signals(signum).name} again: exiting now, without a checkpoint",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        print(f"{self.prog}: {signal.Signals(signum).name}: stopping after this step and writing a checkpoint "
              "(send it again to exit at once)", file=sys.stderr, flush=True)

    def agreed(self, world: int, device) -> int:
        """The signal any rank received (0: none); every rank returns the same value."""
        if world == 1:
            return self.signum
        import torch
        import torch.distributed as dist

        flag = torch.tensor([self.signum], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())
