"""How far a stage has come, for ``mmp-stats``: videos finished over time, the current rate, an ETA.

A unit's stats file says when it started and finished and how many rows it holds; the
stage's ``config.json`` says how many units were planned. From those alone: videos
finished per time bin, the rate over the last stretch of work, and, while units are
still missing, when the rest would be done at that rate.
"""
from __future__ import annotations

import math
import time

import numpy as np

from pipeline.stats.read import StageDir

RATE_BINS = 24  # bars in the rate-over-time chart
RECENT_UNITS = 20  # the current rate is taken over the most recently finished units (at most this many)


def unit_times(sd: StageDir) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(started, finished, rows) of the completed units whose stats file says all three, by finish time."""
    spans = []
    for u in sd.units.values():
        st = u.stats or {}
        if u.has_stats and st.get("started") is not None and st.get("finished") is not None:
            spans.append((float(st["started"]), float(st["finished"]), float(st.get("rows") or 0)))
    spans.sort(key=lambda s: s[1])
    a = np.array(spans, dtype=float).reshape(-1, 3)
    return a[:, 0], a[:, 1], a[:, 2]


def current_rate(started: np.ndarray, finished: np.ndarray, rows: np.ndarray, gap: float) -> float | None:
    """Videos per hour over the latest units of the latest run (a pause longer than ``gap`` ends a run)."""
    if not len(finished):
        return None
    last = slice(max(0, len(finished) - RECENT_UNITS), len(finished))
    s, f, r = started[last], finished[last], rows[last]
    breaks = np.flatnonzero(s[1:] > f[:-1] + gap)  # keep only the units after the last pause
    if len(breaks):
        keep = slice(breaks[-1] + 1, len(f))
        s, f, r = s[keep], f[keep], r[keep]
    seconds = max(f.max() - s.min(), 1.0)
    return float(r.sum() / seconds * 3600)


def crawl_progress(sd: StageDir, rows_read: int, gap: float = 600.0, now: float | None = None) -> dict:
    """Planned and finished units, videos per time bin, the current rate and the ETA at that rate."""
    started, finished, rows = unit_times(sd)
    complete = sum(1 for u in sd.units.values() if u.has_stats)
    planned = sd.config.get("units") if isinstance(sd.config.get("units"), int) else None
    out = {"units_planned": planned, "units_complete": complete, "rate_per_hour": None, "eta_seconds": None,
           "eta_iso": None, "remaining_videos": None, "in_progress": bool(planned and complete < planned),
           "rate_bins": None}
    if not len(finished):
        return out
    rate = current_rate(started, finished, rows, gap)
    out["rate_per_hour"] = rate
    lo, hi = float(started.min()), float(finished.max())
    width = max((hi - lo) / RATE_BINS, 60.0)
    edges = lo + width * np.arange(int(math.ceil((hi - lo) / width)) + 1)
    if len(edges) < 2:
        edges = np.array([lo, lo + width])
    counts, _ = np.histogram(finished, bins=edges, weights=rows)
    out["rate_bins"] = {"start": lo, "width": width, "videos": counts.astype(int).tolist()}
    if out["in_progress"] and rate:
        per_unit = rows_read / complete if complete else float(np.mean(rows))
        remaining = (planned - complete) * per_unit
        eta = remaining / rate * 3600
        out.update(remaining_videos=float(remaining), eta_seconds=float(eta))
        out["eta_iso"] = _iso(max(hi, now or time.time()) + eta)
    return out


def _iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def crawl_projection(sd: StageDir) -> str | None:
    """How long the crawl's input takes at its session's budgets (``pipeline.crawl.sessions.projection``), from
    the settings its config.json recorded; None for a crawl that recorded no session or ran unlimited."""
    from types import SimpleNamespace

    from pipeline.crawl.sessions import projection

    cfg = sd.config.get("config") or {}
    n = cfg.get("input_videos")
    if not isinstance(n, int) or not cfg.get("session") or not cfg.get("max_requests_per_second"):
        return None
    try:
        settings = SimpleNamespace(videos_per_hour=cfg.get("videos_per_hour"), langs=list(cfg.get("langs") or ()),
                                   max_requests_per_second=float(cfg["max_requests_per_second"]),
                                   translation_requests_per_second=float(cfg["translation_requests_per_second"]))
        return projection(settings, n, str(cfg["session"]), len(cfg.get("egress") or ()) or 1)
    except (KeyError, TypeError, ValueError):  # a config.json of another version
        return None
