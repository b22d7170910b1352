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
# One colour per language on every chart and table of the page, whatever languages a directory has.
LANG_COLORS = {"en": "#1f77b4", "de": "#ff7f0e", "fr": "#2ca02c", "ru": "#d62728", "es": "#9467bd",
               "cs": "#8c564b", "sw": "#e377c2", "zh": "#17becf", "vi": "#bcbd22"}
OTHER_COLORS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354")


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
    size: tuple = (7.5, 3.0)


@dataclass
class Note:
    text: str
    level: str = "note"  # note | warning | error


@dataclass
class Side:
    """Blocks shown side by side where the page is wide enough (one after the other in Markdown)."""

    blocks: list


@dataclass
class Details:
    """Blocks folded under a one-line summary (in HTML; Markdown shows them after the summary)."""

    summary: str
    blocks: list


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list = field(default_factory=list)
    group: str = ""  # the directory it belongs to ("" for the whole dataset): the contents are grouped by it
    short: str = ""  # its name in the contents
    has_data: bool = True  # sections without data are folded


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


def share(part, whole) -> str:
    """A percentage with two significant digits however small: '0.00032%' rather than '<0.1%'."""
    if not whole or part is None:
        return "–"
    value = 100 * part / whole
    if value == 0 or value >= 10:
        return f"{value:.0f}%"
    if value >= 1:
        return f"{value:.1f}%"
    import math

    return f"{value:.{1 - math.floor(math.log10(value))}f}%"


def num(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def hours(value) -> str:
    """A duration in hours, in the unit that keeps small data readable: '1,234.5 h', '12 min', '40 s'."""
    if value is None:
        return "–"
    if value == 0:
        return "0 h"
    if value >= 1:
        return f"{value:,.1f} h"
    if value * 60 >= 1:
        return f"{value * 60:.0f} min"
    return f"{value * 3600:.0f} s"


def size(value) -> str:
    """Bytes as B, KiB, MiB, GiB or TiB, whichever keeps 1 to 3 digits before the point."""
    if value is None:
        return "–"
    for unit, div in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= div:
            return f"{value / div:,.1f} {unit}"
    return f"{value:,.0f} B"


def lang_label(lang: str) -> str:
    return f"{lang} ({LANG_NAMES[lang]})" if lang in LANG_NAMES else lang


def lang_color(lang: str) -> str:
    """The language's colour: fixed for the paper's nine, stable (by name) for any other."""
    if lang in LANG_COLORS:
        return LANG_COLORS[lang]
    import zlib

    return OTHER_COLORS[zlib.crc32(lang.encode()) % len(OTHER_COLORS)]


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
        color = lang_color(lang) if lang in LANG_COLORS else color
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


def plain_log(axis) -> None:
    """Log-axis ticks as 20, 50, 1,000 rather than 2x10^1: decades labelled, and 2 and 5 within a short span."""
    import numpy as np
    from matplotlib.ticker import FuncFormatter

    def label(v, _):
        return f"{v:,.0f}" if v >= 1 else f"{v:g}"

    def minor(v, _):
        lo, hi = axis.get_view_interval()
        digit = round(v / 10 ** np.floor(np.log10(v))) if v > 0 else 0
        span = hi / max(lo, 1e-12)
        return label(v, _) if span < 10 or (span < 100 and digit in (2, 5)) else ""

    axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_formatter(FuncFormatter(minor))


def _edges(h: dict):
    import numpy as np

    edges = np.array([e if e is not None else np.nan for e in h["edges"]], dtype=float)
    if np.isnan(edges[-1]):
        edges[-1] = edges[-2] * 2
    return edges


def hist_grid(fig, hists: dict, xlabel: str, title: str, logx: bool = False, columns: int = 3) -> None:
    """Small multiples: one panel per language, in its colour, on shared axes (share of its videos)."""
    import numpy as np

    langs = [l for l, h in hists.items() if sum(h["counts"])]
    if not langs:
        return
    rows = -(-len(langs) // columns)
    axes = fig.subplots(rows, min(columns, len(langs)), squeeze=False, sharex=True, sharey=True)
    lo, hi = np.inf, -np.inf
    for ax, lang in zip(axes.flat, langs):
        h = hists[lang]
        counts, edges = np.array(h["counts"], dtype=float), _edges(h)
        used = np.nonzero(counts)[0]
        lo, hi = min(lo, edges[used[0]]), max(hi, edges[used[-1] + 1])
        ax.stairs(counts / counts.sum(), edges, color=lang_color(lang), fill=True, alpha=0.85)
        ax.set_title(f"{lang_label(lang)} ({int(counts.sum()):,} videos)", fontsize=9, loc="left")
        ax.grid(True, axis="y", alpha=0.3)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    for ax in list(axes.flat)[len(langs):]:
        ax.set_visible(False)
    if logx:
        axes[0][0].set_xscale("log")
        plain_log(axes[0][0].xaxis)
    if hi > lo:
        pad = (hi / lo) ** 0.05 if logx and lo > 0 else None
        axes[0][0].set_xlim(lo / pad, hi * pad) if pad else axes[0][0].set_xlim(lo - 0.03 * (hi - lo),
                                                                               hi + 0.03 * (hi - lo))
    fig.supxlabel(xlabel, fontsize=10)
    fig.supylabel("share of the language's videos", fontsize=10)
    fig.suptitle(title, fontsize=11)


def lang_boxes(fig, panels: list) -> None:
    """Side-by-side panels of one box per language: ``[(title, xlabel, {lang: summary}, logx), ...]``.

    A summary holds p10, p25, median, p75, p90 and mean (``pipeline.stats.summary.summary``): the box spans
    the quartiles, the whiskers the 10th to 90th percentile, the white dot is the mean.
    """
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, (title, xlabel, summaries, logx) in zip(axes, panels):
        langs = list(summaries)
        stats, positions, colors = [], [], []
        for i, lang in enumerate(langs):
            s = summaries[lang]
            if not s.get("n"):
                continue
            q1, q3 = s.get("p25", s["median"]), s.get("p75", s["median"])
            stats.append({"med": s["median"], "q1": q1, "q3": q3, "whislo": s["p10"], "whishi": s["p90"],
                          "mean": s["mean"], "label": lang})
            positions.append(i)
            colors.append(lang_color(lang))
        if stats:
            art = ax.bxp(stats, positions=positions, orientation="horizontal", showmeans=True, showfliers=False,
                         patch_artist=True, widths=0.6, medianprops={"color": "#212529"},
                         meanprops={"marker": "o", "markerfacecolor": "white", "markeredgecolor": "#212529",
                                    "markersize": 4})
            for box, color, st, pos in zip(art["boxes"], colors, stats, positions):
                box.set_facecolor(color)
                box.set_alpha(0.85)
                if st["q3"] <= st["q1"]:  # all values alike (small data): a box of no width, so mark the value
                    ax.plot(st["med"], pos, "D", color=color, markersize=8, markeredgecolor="#212529", zorder=3)
        ax.set_yticks(range(len(langs)), langs)
        ax.set_ylim(len(langs) - 0.5, -0.5)
        if logx:
            ax.set_xscale("log")
            plain_log(ax.xaxis)
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_xlabel(xlabel)
        ax.grid(True, axis="x", alpha=0.3)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
