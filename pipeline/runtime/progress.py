"""A stage's progress on the console: a tqdm bar on a terminal, a plain line every N seconds elsewhere.

Videos are counted by status, under the same names as the summary's "videos by
status" line (a skipped video is not a failure): ``ok`` holds what the stage calls
fine (``Stage.progress_ok``), every other status is shown by its own name. When
stderr is not a terminal (Slurm and nohup logs) a bar would print nothing useful, so
a line like ``crawl: 3/12 units, 14/48 videos (ok=12 unavailable=2), 4.1 videos/s``
goes there every ``MMP_PROGRESS_EVERY`` seconds (default 30) and once at the end.
"""
from __future__ import annotations

import os
import sys
import time
from collections import Counter

PROGRESS_EVERY_S = float(os.environ.get("MMP_PROGRESS_EVERY", "30"))


class StageProgress:
    def __init__(self, name: str, total_items: int, total_units: int, enabled: bool = True,
                 every: float | None = None, stream=None):
        self.name, self.total_items, self.total_units = name, total_items, total_units
        self.stream = stream or sys.stderr
        self.every = PROGRESS_EVERY_S if every is None else every
        self.statuses: Counter = Counter()
        self.videos = self.units = 0
        self.start = self.last_line = time.monotonic()
        self.bar = None
        self.plain = False
        if not enabled:
            return
        if _is_terminal(self.stream):
            from tqdm import tqdm

            self.bar = tqdm(total=total_items, unit="video", desc=self._desc(), dynamic_ncols=True, file=self.stream)
        else:
            self.plain = True

    def _desc(self) -> str:
        return f"{self.name} {self.units}/{self.total_units} units"

    def postfix(self) -> str:
        ok = self.statuses.get("ok", 0)
        others = sorted((k, v) for k, v in self.statuses.items() if k != "ok")
        return " ".join([f"ok={ok}", *(f"{k}={v}" for k, v in others)])

    def line(self) -> str:
        rate = self.videos / max(1e-9, time.monotonic() - self.start)
        return (f"{self.name}: {self.units}/{self.total_units} units, {self.videos}/{self.total_items} videos "
                f"({self.postfix()}), {rate:.1f} videos/s")

    def video(self, status: str, ok: bool) -> None:
        self.videos += 1
        self.statuses["ok" if ok else str(status)] += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(self.postfix(), refresh=False)
        self._maybe_line()

    def unit_done(self) -> None:
        self.units += 1
        if self.bar is not None:
            self.bar.set_description(self._desc())
        self._maybe_line()

    def _maybe_line(self) -> None:
        if self.plain and time.monotonic() - self.last_line >= self.every:
            self.last_line = time.monotonic()
            print(self.line(), file=self.stream, flush=True)

    def write(self, text: str) -> None:
        """A line that must not break the bar (a warning)."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.plain and self.total_units:
            print(self.line(), file=self.stream, flush=True)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
