"""Report blocks about how a stage went: example failed videos per status, and a crawl's progress
(videos per hour over time, the current rate, the ETA at that rate)."""
from __future__ import annotations

from pipeline.stats.report_blocks import Details, Figure, Note, Table, n, style_axes


def failures_block(examples: dict | None, open_: bool = False) -> list:
    """A few video ids per status with their reasons, to look them up or retry them by hand."""
    if not examples:
        return []
    rows = [[status, vid, reason or "–"] for status, items in examples.items() for vid, reason in items]
    table = Table(["status", "video id", "reason"], rows,
                  caption="The first videos of each status in the units' order (at most 5 per status).")
    return [table] if open_ else [Details(f"Example videos per status ({n(len(rows))})", [table])]


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def progress_blocks(progress: dict | None, runs: list) -> list:
    """Videos finished per time bin and, while units are missing, the ETA at the current rate."""
    if not progress or not progress.get("rate_bins"):
        return []
    rate = progress.get("rate_per_hour")
    planned, done = progress.get("units_planned"), progress["units_complete"]
    if progress.get("in_progress") and progress.get("eta_seconds") is not None:
        text = (f"In progress: {n(done)} of {n(planned)} units done; at the current rate of {n(rate)} videos/hour "
                f"(the latest units of the latest run) the other ~{n(progress['remaining_videos'])} videos take "
                f"{_duration(progress['eta_seconds'])} more: done around {progress['eta_iso']} if it keeps running.")
    elif planned and done >= planned:
        text = f"Complete: all {n(planned)} planned units are done; the last rate was {n(rate)} videos/hour."
    else:
        text = (f"{n(done)} units done (the plan is unknown: config.json holds no unit count); the last rate was "
                f"{n(rate)} videos/hour.")
    bins = progress["rate_bins"]

    def draw(fig):
        import numpy as np

        ax = fig.add_subplot(111)
        videos = np.array(bins["videos"], dtype=float)
        hours_from = np.arange(len(videos)) * bins["width"] / 3600
        per_hour = videos / (bins["width"] / 3600)
        ax.bar(hours_from, per_hour, width=bins["width"] / 3600, align="edge", color="#1c7ed6")
        if rate:
            ax.axhline(rate, color="#e8590c", linestyle="--", linewidth=1, label=f"current rate {n(rate)}/h")
            ax.legend(loc="upper left", frameon=False, fontsize=8)
        style_axes(ax, "hours since the first unit started", "videos per hour", "Crawl rate over time", counts="y")

    return [Note(text), Figure(draw, "Videos finished per hour, over the crawl's time (gaps: pauses between runs).",
                               size=(7.5, 2.2))]
