"""The pieces a report is made of: blocks (tables, figures, notes), number formatting, plot styling.

Sections (``report.py``, ``report_subtitles.py``) are lists of these blocks and say
nothing about the output format; ``report_render.py`` turns them into HTML or Markdown.
A ``Figure`` holds a function that draws on a matplotlib figure, so matplotlib is only
imported when a plot is actually rendered.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

LANG_NAMES = {"en": "English", "de": "German", "fr": "French", "ru": "Russian", "es": "Spanish",
              "cs": "Czech", "sw": "Swahili", "zh": "Chinese", "vi": "Vietnamese"}


# ---------------------------------------------------------------- blocks

@dataclass
class Table:
    columns: list
    rows: list
    caption: str = ""
    numeric: set = field(default_factory=set)  # indices of right-aligned columns
    groups: list = field(default_factory=list)  # optional header row above: [(label, columns spanned), ...]


@dataclass
class Figure:
    draw: Callable  # draw(fig) fills a matplotlib Figure
    caption: str
    size: tuple = (8.0, 3.6)


@dataclass
class Note:
    text: str
    level: str = "note"  # note | warning | error


@dataclass
class Side:
    """Blocks shown side by side where the page is wide enough (one after the other in Markdown)."""

    blocks: list


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list = field(default_factory=list)


# ---------------------------------------------------------------- formatting

def n(value) -> str:
    """An integer with thousands separators; '–' for none."""
    if value is None:
        return "–"
    return f"{int(round(value)):,}"


def big(value) -> str:
    if value is None:
        return "–"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= div:
            return f"{value / div:.2f}{suffix}"
    return f"{value:,.0f}"


def pct(part, whole, digits: int = 1) -> str:
    if not whole or part is None:
        return "–"
    value = 100 * part / whole
    if 0 < abs(value) < 10 ** -digits:  # tiny but not zero: say so rather than 0.0%
        return f"<{10 ** -digits:g}%"
    return f"{value:.{digits}f}%"


def num(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def lang_label(lang: str) -> str:
    return f"{lang} ({LANG_NAMES[lang]})" if lang in LANG_NAMES else lang


# ---------------------------------------------------------------- plots

def style_axes(ax, xlabel: str, ylabel: str, title: str = "", counts: str | None = None) -> None:
    """Labels, light grid; ``counts`` ('x' or 'y') formats that axis as 1,000 / 1.2M rather than 1e6."""
    if counts:
        from matplotlib.ticker import FuncFormatter, MaxNLocator

        axis = ax.yaxis if counts == "y" else ax.xaxis
        axis.set_major_locator(MaxNLocator(integer=True))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if abs(v) < 10_000 else big(v).replace(".00", "")))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=11)
    ax.grid(True, axis="y", alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def legend_outside(ax, title: str | None = None) -> None:
    """Legend outside the axes, on the right, so it never hides data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8, title=title,
                  title_fontsize=8)


def palette(k: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(k)]


def hist_lines(fig, hists: dict, xlabel: str, title: str, logx: bool = False, density: bool = True) -> None:
    """One step line per language over shared bins (share of that language's videos)."""
    import numpy as np

    ax = fig.add_subplot(111)
    lo, hi = None, None
    for (lang, h), color in zip(hists.items(), palette(len(hists))):
        counts = np.array(h["counts"], dtype=float)
        edges = np.array([e if e is not None else np.nan for e in h["edges"]], dtype=float)
        if np.isnan(edges[-1]):
            edges[-1] = edges[-2] * 2
        total = counts.sum()
        if not total:
            continue
        used = np.nonzero(counts)[0]  # zoom onto the bins that hold data, whatever the shared bins span
        lo = edges[used[0]] if lo is None else min(lo, edges[used[0]])
        hi = edges[used[-1] + 1] if hi is None else max(hi, edges[used[-1] + 1])
        y = counts / total if density else counts
        ax.stairs(y, edges, label=lang, color=color, linewidth=1.6)
    if logx:
        ax.set_xscale("log")
    if lo is not None and hi > lo:
        pad = (hi / lo) ** 0.05 if logx and lo > 0 else None
        ax.set_xlim(lo / pad, hi * pad) if pad else ax.set_xlim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
    style_axes(ax, xlabel, "share of videos" if density else "videos", title)
    legend_outside(ax)


def barh(fig, counts: dict, xlabel: str, title: str, color=None, limit: int = 20) -> None:
    items = list(counts.items())[:limit][::-1]
    ax = fig.add_subplot(111)
    colors = [color(k) if callable(color) else (color or "#1c7ed6") for k, _ in items]
    ax.barh([str(k) for k, _ in items], [v for _, v in items], color=colors)
    total = max((v for _, v in items), default=0)
    for i, (_, v) in enumerate(items):
        ax.text(v + total * 0.01, i, f"{v:,}", va="center", fontsize=8)
    style_axes(ax, xlabel, "", title, counts="x")
    ax.grid(True, axis="x", alpha=0.3)
    ax.grid(False, axis="y")
    ax.set_xlim(0, total * 1.15 if total else 1)
