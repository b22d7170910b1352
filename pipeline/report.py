"""Rendering ``mmp-stats`` results: one list of sections, written as HTML and as Markdown.

Everything here works from the JSON-able dict ``pipeline.stats.build_stats`` returns,
so a saved ``stats.json`` renders the same report. The HTML is one file: CSS inline,
plots as base64 PNG from matplotlib's Agg backend, no external URL, so it opens
offline and can be mailed around. Markdown gets the same tables; plots live in the
HTML only.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Callable

LANG_NAMES = {"en": "English", "de": "German", "fr": "French", "ru": "Russian", "es": "Spanish",
              "cs": "Czech", "sw": "Swahili", "zh": "Chinese", "vi": "Vietnamese"}
KIND_COLORS = {"manual": "#2b8a3e", "asr": "#1c7ed6", "translated": "#f08c00", "released": "#862e9c",
               "none": "#adb5bd"}
OK_STATUSES = ("ok", "partial")
STATUS_COLORS = {"ok": "#2b8a3e", "partial": "#94d82d", "length_mismatch": "#94d82d", "no_subtitles": "#adb5bd",
                 "no_features": "#adb5bd", "no_text": "#ced4da", "unavailable": "#e03131", "upstream_failed": "#e03131",
                 "rate_limited": "#f08c00", "bot_check": "#9c36b5", "network": "#1c7ed6", "server_error": "#862e9c",
                 "invalid_id": "#f783ac", "error": "#a61e4d", "bad_features": "#a61e4d", "parse_error": "#a61e4d"}


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

def _style(ax, xlabel: str, ylabel: str, title: str = "", counts: str | None = None) -> None:
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


def _legend(ax, title: str | None = None) -> None:
    """Legend outside the axes, on the right, so it never hides data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8, title=title,
                  title_fontsize=8)


def _colors(k: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(k)]


def _hist_lines(fig, hists: dict, xlabel: str, title: str, logx: bool = False, density: bool = True) -> None:
    """One step line per language over shared bins (share of that language's videos)."""
    import numpy as np

    ax = fig.add_subplot(111)
    lo, hi = None, None
    for (lang, h), color in zip(hists.items(), _colors(len(hists))):
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
    _style(ax, xlabel, "share of videos" if density else "videos", title)
    _legend(ax)


def _barh(fig, counts: dict, xlabel: str, title: str, color=None, limit: int = 20) -> None:
    items = list(counts.items())[:limit][::-1]
    ax = fig.add_subplot(111)
    colors = [color(k) if callable(color) else (color or "#1c7ed6") for k, _ in items]
    ax.barh([str(k) for k, _ in items], [v for _, v in items], color=colors)
    total = max((v for _, v in items), default=0)
    for i, (_, v) in enumerate(items):
        ax.text(v + total * 0.01, i, f"{v:,}", va="center", fontsize=8)
    _style(ax, xlabel, "", title, counts="x")
    ax.grid(True, axis="x", alpha=0.3)
    ax.grid(False, axis="y")
    ax.set_xlim(0, total * 1.15 if total else 1)


def figure_png(fig_spec: Figure) -> str:
    """The figure as a base64 PNG. A bare ``matplotlib.figure.Figure`` renders with Agg and never
    touches pyplot's global state or a display."""
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=fig_spec.size, dpi=100, layout="constrained")
    fig_spec.draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------- sections

def overview(stats: dict) -> Section:
    rows = []
    for c in stats["crawl"]:
        rows.append([c["path"], "crawl", n(c["units"]), n(c["videos"]),
                     f"{n(c['with_subtitles'])} with subtitles ({pct(c['with_subtitles'], c['videos'])})"])
    for a in stats["aligned"]:
        rows.append([a["path"], f"aligned ({a.get('source')})", n(a["units"]), n(a["videos"]),
                     f"{n(a['videos_with_subtitles'])} with a usable track; "
                     f"{big(sum(l['tokens'] for l in a['per_lang'].values()))} tokens"])
    for m in stats["mmp"]:
        rows.append([m["path"], "mmp (features)", n(m["units"]), n(m["videos"]),
                     f"{n(m['videos_with_features'])} with features, {num(m['feature_hours'])} h"])
    blocks = [Note(f"Dataset {stats['data']}, report of {stats['generated_at']} "
                   f"(built in {stats.get('seconds', 0):.1f} s from parquet and stats files only).")]
    if rows:
        blocks.append(Table(["directory", "stage", "complete units", "videos (rows)", "in short"], rows,
                            numeric={2, 3}))
    errors = [i for i in stats["issues"] if i["level"] == "error"]
    warnings = [i for i in stats["issues"] if i["level"] != "error"]
    for issue in errors + warnings:
        blocks.append(Note(f"{issue['where']}: {issue['message']}", issue["level"]))
    if not stats["issues"]:
        blocks.append(Note("No problems found: every unit has its parquet, tar and stats file, all readable."))
    return Section("Overview", "overview", blocks)


def paper_sections(a: dict, tokenizer: dict) -> list[Section]:
    per = a["per_lang"]
    langs = list(per)
    suffix = f" — {a['path']}"
    rows, tot = [], {"v": 0, "s": 0, "t": 0, "pv": 0, "ps": 0, "pt": 0}
    for lang in langs:
        d, p = per[lang], per[lang]["paper"] or {}
        rows.append([lang_label(lang), n(d["videos"]), n(p.get("videos")), pct(d["videos"], p.get("videos")),
                     n(d["subtitles"]), n(p.get("subtitles")), pct(d["subtitles"], p.get("subtitles")),
                     big(d["tokens"]), big(p.get("tokens")), pct(d["tokens"], p.get("tokens"))])
        if p:
            for k, key in (("v", "videos"), ("s", "subtitles"), ("t", "tokens")):
                tot[k] += d[key]
                tot["p" + k] += p[key]
    rows.append(["all (paper languages)", n(tot["v"]), n(tot["pv"]), pct(tot["v"], tot["pv"]), n(tot["s"]),
                 n(tot["ps"]), pct(tot["s"], tot["ps"]), big(tot["t"]), big(tot["pt"]), pct(tot["t"], tot["pt"])])
    table = Table(["language"] + ["ours", "paper", "ours/paper"] * 3, rows,
                  caption="Videos with a usable track, subtitles (cleaned cues) and tokens per language, beside "
                  "the paper's Table 8.", numeric=set(range(1, 10)),
                  groups=[("", 1), ("videos", 3), ("subtitles", 3), ("tokens", 3)])

    def draw_ratio(fig):
        import numpy as np

        ax = fig.add_subplot(111)
        x = np.arange(len(langs))
        for j, (key, color) in enumerate((("videos", "#1c7ed6"), ("subtitles", "#2b8a3e"), ("tokens", "#f08c00"))):
            vals = [100 * per[l][key] / per[l]["paper"][key] if per[l]["paper"] else 0 for l in langs]
            ax.bar(x + (j - 1) * 0.27, vals, 0.27, label=key, color=color)
        ax.axhline(100, color="#495057", linewidth=1, linestyle="--")
        ax.set_xticks(x, langs)
        _style(ax, "language", "ours as % of the paper", "Our counts relative to the paper's Table 8")
        _legend(ax)

    blocks = [table, Figure(draw_ratio, "Ours as a percentage of the paper's Table 8 (dashed line: 100%).")]
    blocks.append(Note(f"Tokens: {tokenizer['rule']}; counted by {tokenizer['counted_by']}. The paper's tokenizer "
                       "may split differently (subwords, Chinese words), so compare the token column loosely."))
    if tokenizer.get("limit"):
        blocks.append(Note(tokenizer["limit"], "warning"))
    sections = [Section("Subtitles per language, beside the paper (Table 8)" + suffix, f"table8-{a['path']}", blocks)]

    all_kinds = sorted({k for l in langs for k in per[l]["by_kind"]},
                       key=lambda k: list(KIND_COLORS).index(k) if k in KIND_COLORS else 99)
    kind_rows = []
    for lang in langs:
        row = [lang_label(lang)]
        for kind in all_kinds:
            d = per[lang]["by_kind"].get(kind)
            row += [f"{n(d['videos'])} ({pct(d['videos'], per[lang]['videos'], 0)})", big(d["subtitles"]),
                    big(d["tokens"])] if d else ["–", "–", "–"]
        kind_rows.append(row)
    kind_columns = ["language"] + ["videos", "subtitles", "tokens"] * len(all_kinds)

    def draw_kinds(fig):
        import numpy as np

        ax = fig.add_subplot(111)
        bottom = np.zeros(len(langs))
        for kind in all_kinds:
            vals = np.array([per[l]["by_kind"].get(kind, {}).get("videos", 0) for l in langs], dtype=float)
            ax.bar(langs, vals, bottom=bottom, label=kind, color=KIND_COLORS.get(kind, "#868e96"))
            bottom += vals
        _style(ax, "language", "videos with a usable track", "Track kind per language", counts="y")
        _legend(ax, "track kind")

    statuses = sorted({s for l in langs for s in per[l]["track_statuses"]},
                      key=lambda s: (s != "ok", s == "not aligned", s))
    status_rows = [[lang_label(l)] + [n(per[l]["track_statuses"].get(s, 0)) for s in statuses] for l in langs]
    sections.append(Section("Track kinds: manual, ASR, translated, released" + suffix, f"kinds-{a['path']}", [
        Table(kind_columns, kind_rows,
              caption="Table 8 split by track kind: YouTube manual subtitles, YouTube ASR, YouTube's machine "
              "translation, or imported from a published release (kind 'released').",
              numeric=set(range(1, len(kind_columns))), groups=[("", 1)] + [(k, 3) for k in all_kinds]),
        Figure(draw_kinds, "Videos with a usable track, by track kind."),
        Table(["language"] + statuses, status_rows, caption="Track status per language (mmp-align's taxonomy; "
              "'not aligned': the video failed before alignment).", numeric=set(range(1, len(statuses) + 1))),
    ]))
    return sections


def langs_section(a: dict) -> Section:
    dist = a["langs_per_video"]
    total = sum(dist.values())
    with_any = a["videos_with_subtitles"]
    total += a["langs_per_video_unknown"]
    rows = [[k, n(v), pct(v, total)] for k, v in dist.items()]
    if a["langs_per_video_unknown"]:
        rows.append(["not aligned (failed upstream)", n(a["langs_per_video_unknown"]),
                     pct(a["langs_per_video_unknown"], total)])
    lo, hi = 7, 9

    def draw(fig):
        ax = fig.add_subplot(111)
        keys = list(dist)
        colors = ["#2b8a3e" if lo <= int(k) <= hi else "#1c7ed6" for k in keys]
        ax.bar(keys, [dist[k] for k in keys], color=colors)
        _style(ax, "languages with a usable track", "videos", "Languages per video (green: the paper's 7 to 9)",
               counts="y")

    s = a["langs_per_video_summary"]
    return Section(f"Languages per video — {a['path']}", f"langs-{a['path']}", [
        Note(f"{pct(a['share_in_paper_range'], 1, 2)} of the {n(with_any)} videos with any usable track have "
             f"{lo} to {hi} languages (the paper reports 7 to 9 per video); mean {num(s['mean'], 2)}, "
             f"median {num(s['median'], 0)}."),
        Side([Table(["languages", "videos", "share"], rows, numeric={1, 2}),
              Figure(draw, "Number of languages with a usable track per video.", size=(7.4, 3.6))]),
    ])


def coverage_section(a: dict) -> Section:
    per = a["per_lang"]
    langs = list(per)
    rows = [[lang_label(l), n(per[l]["coverage"]["n"]), pct(per[l]["coverage"]["mean"], 1),
             pct(per[l]["coverage"]["median"], 1), pct(per[l]["coverage"]["p10"], 1),
             pct(per[l]["coverage"]["p90"], 1)] for l in langs]

    def draw(fig):
        ax = fig.add_subplot(111)
        for i, (l, color) in enumerate(zip(langs, _colors(len(langs)))):
            c = per[l]["coverage"]
            if c["n"]:
                ax.plot([100 * c["p10"], 100 * c["p90"]], [i, i], color=color, linewidth=6, alpha=0.5,
                        solid_capstyle="butt")
                ax.plot(100 * c["median"], i, "o", color=color)
                ax.plot(100 * c["mean"], i, "|", color="#212529", markersize=12)
        ax.set_yticks(range(len(langs)), langs)
        ax.set_xlim(0, 102)
        _style(ax, "% of the timeline's speech seconds covered by the language's cues", "",
               "Coverage (bar: 10th–90th percentile, dot: median, tick: mean)")
        ax.grid(True, axis="x", alpha=0.3)
        ax.invert_yaxis()

    timeline = ", ".join(f"{k}: {n(v)}" for k, v in a["timeline_kinds"].items()) or "–"
    return Section(f"Alignment coverage — {a['path']}", f"coverage-{a['path']}", [
        Note("Coverage: the fraction of timeline seconds (the union of the timeline track's cues) that a "
             f"language's own cues overlap. Timeline tracks by kind: {timeline}."),
        Side([Table(["language", "videos", "mean", "median", "p10", "p90"], rows, numeric={1, 2, 3, 4, 5}),
              Figure(draw, "Alignment coverage per language.", size=(5.6, 3.6))]),
    ])


def tokens_section(a: dict, tokenizer: dict) -> Section:
    per = a["per_lang"]
    langs = list(per)
    rows = []
    for l in langs:
        tv, ts, ss = per[l]["tokens_per_video"], per[l]["tokens_per_subtitle"], per[l]["subtitle_seconds"]
        rows.append([lang_label(l), num(tv["median"], 0), num(tv["mean"], 0), num(tv["p90"], 0),
                     num(per[l]["tokens_per_subtitle_overall"], 2), num(ts["median"], 2),
                     num(ss["median"], 2), num(per[l]["subtitle_hours"], 1), big(per[l]["chars"])])
    return Section(f"Tokens per video and per subtitle (the paper's Fig. 5 and 6) — {a['path']}",
                   f"tokens-{a['path']}", [
        Table(["language", "tokens/video median", "mean", "p90", "tokens/subtitle (all)", "median per video",
               "subtitle s median", "subtitle hours", "characters"], rows, numeric=set(range(1, 9))),
        Figure(lambda fig: _hist_lines(fig, {l: per[l]["tokens_per_video_hist"] for l in langs},
                                       "tokens per video (log scale)", "Tokens per video (cf. the paper's Fig. 5)",
                                       logx=True), "Distribution of tokens per video, per language."),
        Figure(lambda fig: _hist_lines(fig, {l: per[l]["tokens_per_subtitle_hist"] for l in langs},
                                       "tokens per subtitle (per-video average; last bin holds 40 and more)",
                                       "Tokens per subtitle (cf. the paper's Fig. 6)"),
               "Distribution of tokens per subtitle, per language."),
        Figure(lambda fig: _hist_lines(fig, {l: per[l]["subtitle_seconds_hist"] for l in langs},
                                       "seconds per subtitle (per-video average; last bin holds 15 s and more)",
                                       "Subtitle duration"), "Distribution of subtitle durations, per language."),
        Note("The parquet rows keep per-video totals (cues, tokens, seconds), so 'tokens/subtitle (all)' is exact "
             "(all tokens / all subtitles) while the per-subtitle distributions are of each video's average: "
             "they are narrower than a distribution over single subtitles would be. "
             f"Token rule: {tokenizer['rule']}."),
    ])


def duration_section(stats: dict) -> Section | None:
    hists, rows = {}, []
    for c in stats["crawl"]:
        if c["duration"]["n"]:
            hists[f"crawl: {c['path']}"] = c["duration_minutes_hist"]
            rows.append([c["path"], "crawled videos with subtitles", n(c["duration"]["n"]),
                         num(c["duration"]["median"] / 60), num(c["duration"]["mean"] / 60),
                         num(c["duration"]["p90"] / 60), num(c["hours_with_subtitles"], 0)])
    for a in stats["aligned"]:
        d = a["duration"]
        if d["n"]:
            hists[f"aligned: {a['path']}"] = a["duration_minutes_hist"]
            rows.append([a["path"], "aligned videos", n(d["n"]), num(d["median"] / 60), num(d["mean"] / 60),
                         num(d["p90"] / 60), num(d["mean"] * d["n"] / 3600, 0)])
    if not rows:
        return None
    return Section("Video duration", "duration", [
        Table(["directory", "videos", "with a duration", "median min", "mean min", "p90 min", "hours"], rows,
              numeric={2, 3, 4, 5, 6}),
        Figure(lambda fig: _hist_lines(fig, hists, "minutes (last bin holds 60 and more)", "Video duration"),
               "Distribution of video durations."),
    ])


def categories_section(c: dict) -> Section | None:
    cats = c["categories"]
    if not cats["all"]:
        return Section(f"Categories — {c['path']}", f"categories-{c['path']}", [
            Note("No category_1 in these crawl rows (the video list had no HowTo100M category columns).")])
    total = sum(cats["all"].values())
    rows = [[k, n(v), pct(v, total), n(cats["with_subtitles"].get(k, 0)), pct(cats["with_subtitles"].get(k, 0), v)]
            for k, v in cats["all"].items()]
    return Section(f"Categories (HowTo100M category_1) — {c['path']}", f"categories-{c['path']}", [
        Table(["category_1", "videos", "share", "with subtitles", "of the category"], rows, numeric={1, 2, 3, 4},
              caption=f"{n(cats['missing'])} rows carry no category."),
        Figure(lambda fig: _barh(fig, cats["with_subtitles"] or cats["all"], "videos with subtitles",
                                 "Videos per category"), "Videos with subtitles per HowTo100M category_1.",
               size=(8.0, max(2.5, 0.32 * min(20, len(cats["all"])) + 1))),
    ])


def crawl_section(c: dict) -> list[Section]:
    total = c["videos"]
    rows = []
    for status, count in c["statuses"].items():
        reasons = c["reasons"].get(status, {})
        why = "; ".join(f"{r} ({n(v)})" for r, v in list(reasons.items())[:3])
        rows.append([status, n(count), pct(count, total), why])
    def draw_status(fig):
        _barh(fig, c["statuses"], "videos", "Crawl outcome by status", lambda s: STATUS_COLORS.get(s, "#1c7ed6"))

    blocks = [Table(["status", "videos", "share", "most frequent reasons"], rows, numeric={1, 2}),
              Figure(draw_status, "Crawl outcomes by status.", size=(8.0, max(2.2, 0.35 * len(rows) + 1)))]
    runs = c["runs"]
    if runs:
        statuses = list(c["statuses"])
        run_rows = [[str(r["run"]), r["start_iso"], r["end_iso"], n(r["units"]), n(r["videos"]),
                     pct(sum(r["statuses"].get(s, 0) for s in OK_STATUSES), r["videos"]),
                     n(r["videos_per_hour"]), n(r["retried"]), n(r["carried_over"])] for r in runs]
        blocks.append(Table(["run", "first unit started", "last unit finished", "units", "videos", "ok or partial",
                             "videos/hour", "retried", "carried over"], run_rows, numeric={3, 4, 5, 6, 7, 8},
                            caption="Runs, told apart by pauses of more than 10 minutes between units "
                            "(a resumed or --retry-failed crawl starts a new run)."))
        if len(runs) > 1:
            def draw_runs(fig):
                import numpy as np

                ax = fig.add_subplot(111)
                labels = [f"run {r['run']}\n{r['start_iso'][5:16]}" for r in runs]
                bottom = np.zeros(len(runs))
                for s, color in zip(statuses, _colors(len(statuses))):
                    vals = np.array([r["statuses"].get(s, 0) for r in runs], dtype=float)
                    ax.bar(labels, vals, bottom=bottom, label=s, color=STATUS_COLORS.get(s, color))
                    bottom += vals
                _style(ax, "run (UTC start)", "videos", "Crawl outcomes over time, per run", counts="y")
                _legend(ax, "status")
            blocks.append(Figure(draw_runs, "Outcomes per run, in time order."))
    att = c["attempts"]
    uc = c["unit_counts"]
    downloads = (f"; videos downloaded: {n(c['videos_downloaded'])} ({big(c['video_bytes'])}B)"
                 if c["videos_downloaded"] else "")
    blocks.append(Note(f"Retries: {n(c['retried_videos'])} videos needed more than one attempt "
                       f"(attempts: {', '.join(f'{k}: {n(v)}' for k, v in att.items()) or '–'}); now "
                       f"{', '.join(f'{k} {n(v)}' for k, v in c['retried_statuses'].items()) or '–'}. "
                       f"{n(c['transient'])} videos still hold a transient failure (rate_limited, bot_check, network, "
                       f"server_error): mmp-crawl --retry-failed re-crawls them. Requests made: {n(uc.get('requests'))}; "
                       f"subtitle tracks fetched: {n(uc.get('tracks'))}{downloads}."))
    kinds = c["kinds"]
    all_kinds = sorted({k for v in kinds.values() for k in v})
    blocks.append(Table(["language"] + all_kinds, [[lang_label(l)] + [n(kinds[l].get(k, 0)) for k in all_kinds]
                                                   for l in kinds], numeric=set(range(1, len(all_kinds) + 1)),
                        caption="Track chosen per language at crawl time (none: YouTube offers nothing in it)."))
    return [Section(f"Crawl outcomes — {c['path']}", f"crawl-{c['path']}", blocks)]


def features_section(m: dict) -> Section:
    total = m["videos"]
    rows = [[s, n(v), pct(v, total), "; ".join(f"{r} ({n(k)})" for r, k in list(m["reasons"].get(s, {}).items())[:2])]
            for s, v in m["statuses"].items()]
    summary = [["videos with features", n(m["videos_with_features"]), pct(m["videos_with_features"], total)],
               ["feature hours (one row per second)", num(m["feature_hours"]), ""],
               ["video hours of those videos", num(m["video_hours_with_features"]),
                f"duration known for {n(m['duration_known'])}"],
               [f"length mismatch over {m['tolerance_seconds']:g} s", n(m["mismatch_over_tolerance"]),
                pct(m["mismatch_over_tolerance"], m["videos_with_features"])],
               ["  features shorter than the video", n(m["features_shorter"]), ""],
               ["  features longer than the video", n(m["features_longer"]), ""],
               ["feature dims", ", ".join(f"{k}: {n(v)}" for k, v in m["feature_dims"].items()) or "–", ""]]
    if m.get("listed_mismatch_known"):
        summary.append([f"rows vs listed duration over {m['tolerance_seconds']:g} s",
                        n(m["listed_mismatch_over_tolerance"]),
                        f"of {n(m['listed_mismatch_known'])} with a duration in the aligned rows"])
    if m.get("devices") or m.get("decoders"):
        summary.append(["extraction time (decode + model)", num(m["decode_hours"] + m["model_hours"]),
                        f"hours; devices {', '.join(f'{k}: {n(v)}' for k, v in m['devices'].items()) or '–'}; "
                        f"decoders {', '.join(f'{k}: {n(v)}' for k, v in m['decoders'].items()) or '–'}"])

    def draw(fig):
        h = m["abs_mismatch_hist"]
        ax = fig.add_subplot(111)
        edges = h["edges"]
        labels = [f"{edges[i]:g}–{edges[i + 1]:g}" if edges[i + 1] is not None else f"≥{edges[i]:g}"
                  for i in range(len(h["counts"]))]
        colors = ["#2b8a3e" if (edges[i + 1] or 1e9) <= m["tolerance_seconds"] else "#e8590c"
                  for i in range(len(h["counts"]))]
        ax.bar(labels, h["counts"], color=colors)
        _style(ax, "|feature rows − video seconds| (s)", "videos", counts="y", title=
               f"Feature length vs video duration (orange: beyond the {m['tolerance_seconds']:g} s tolerance)")

    return Section(f"Video features — {m['path']}", f"features-{m['path']}", [
        Table(["", "value", ""], summary, numeric={1}),
        Table(["status", "videos", "share", "reasons"], rows, numeric={1, 2}),
        Figure(draw, "Feature length against video duration."),
    ])


def shards_section(stats: dict) -> Section | None:
    shards = stats["shards"]
    if not shards:
        return None
    rows = []
    for s in shards:
        b, sp = s["shard_bytes"], s["samples_per_shard"]
        rows.append([s["path"], s["stage"], n(s["units_complete"]), n(s["units_incomplete"]), n(s["samples"]),
                     n(s["rows"]), f"{s['bytes'] / 2**30:,.2f}",
                     f"{(b['median'] or 0) / 2**20:,.1f}", f"{(b['p10'] or 0) / 2**20:,.1f}–{(b['p90'] or 0) / 2**20:,.1f}",
                     num(sp["median"], 0), f"{num(sp['p10'], 0)}–{num(sp['p90'], 0)}"])
    blocks = [Table(["directory", "stage", "shards", "incomplete", "samples", "rows", "GiB", "MiB median",
                     "MiB p10–p90", "samples/shard median", "p10–p90"], rows, numeric=set(range(2, 11)),
                    caption="Shards are the units' tar files; sizes and counts from their stats files.")]
    with_hist = [s for s in shards if s.get("shard_mib_hist") or s.get("samples_hist")]
    if with_hist:
        def draw(fig):
            import numpy as np

            axes = fig.subplots(len(with_hist), 2, squeeze=False)
            for i, (s, color) in enumerate(zip(with_hist, _colors(len(with_hist)))):
                for j, (key, xlabel) in enumerate((("shard_mib_hist", "shard size (MiB)"),
                                                    ("samples_hist", "samples per shard"))):
                    ax, h = axes[i][j], s.get(key)
                    if h:
                        edges = np.array(h["edges"], dtype=float)
                        ax.bar(edges[:-1], h["counts"], width=np.diff(edges), align="edge", color=color)
                    _style(ax, xlabel if i == len(with_hist) - 1 else "", "shards", f"{s['path']}: {xlabel}")
        blocks.append(Figure(draw, "Shard sizes and samples per shard, per directory.",
                             size=(9.0, 0.4 + 2.2 * len(with_hist))))
    return Section("Shards", "shards", blocks)


def about_section(stats: dict) -> Section:
    tok = stats["tokenizer"]
    text = [f"Token counts: {tok['rule']}; counted by {tok['counted_by']}."]
    if tok.get("limit"):
        text.append(tok["limit"])
    text.append("Only units with their stats file (the stages' completion marker) are counted; nothing is read "
                "from the tars. A video counts for a language when its track there has status ok (usable, in "
                "the expected script). Subtitles are cleaned cues (rolling ASR captions unrolled, empty cues "
                "dropped), which is why ASR-heavy languages may show fewer subtitles than raw caption files.")
    if not any(c["categories"]["all"] for c in stats["crawl"]):
        text.append("Categories (HowTo100M's category_1) come from the crawl rows, which copy them from the video "
                    "list; aligned rows written by mmp-import do not carry them, so without a crawl with a "
                    "HowTo100M_v1.csv-style list there is no category table.")
    return Section("How these figures are counted", "about", [Note(t) for t in text])


def sections(stats: dict) -> list[Section]:
    out = [overview(stats)]
    tok = stats["tokenizer"]
    for a in stats["aligned"]:
        if not a["per_lang"]:
            out.append(Section(f"Subtitles — {a['path']}", f"aligned-{a['path']}",
                               [Note("No language columns in these aligned rows.", "warning")]))
            continue
        out += paper_sections(a, tok)
        out.append(langs_section(a))
        out.append(coverage_section(a))
        out.append(tokens_section(a, tok))
    d = duration_section(stats)
    if d:
        out.append(d)
    for c in stats["crawl"]:
        cat = categories_section(c)
        if cat:
            out.append(cat)
    for c in stats["crawl"]:
        out += crawl_section(c)
    for m in stats["mmp"]:
        out.append(features_section(m))
    s = shards_section(stats)
    if s:
        out.append(s)
    out.append(about_section(stats))
    return out


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;color:#212529;margin:0;background:#f8f9fa}
main{max-width:1120px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:19px;margin:34px 0 10px;padding-top:10px;border-top:1px solid #dee2e6}
nav{font-size:13px;line-height:1.8;margin:10px 0 0}nav a{margin-right:12px;color:#1c7ed6;text-decoration:none}
table{border-collapse:collapse;margin:10px 0 6px;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:4px 9px;border-bottom:1px solid #e9ecef;text-align:left;vertical-align:top}
th{background:#f1f3f5;font-weight:600;border-bottom:2px solid #ced4da}
th.group{text-align:center;border-bottom:1px solid #ced4da;background:#e9ecef}
th.group+th.group,.gstart{border-left:1px solid #ced4da}
tr:nth-child(even) td{background:#fafbfc}td.num,th.num{text-align:right;white-space:nowrap}
caption{caption-side:bottom;text-align:left;font-size:12px;color:#6c757d;padding-top:4px}
figure{margin:12px 0 18px}figure img{max-width:100%;height:auto;border:1px solid #f1f3f5}
figcaption{font-size:12px;color:#6c757d}
.note{font-size:13.5px;line-height:1.5;margin:8px 0;max-width:960px}
.warning,.error{font-size:13.5px;padding:7px 11px;border-radius:4px;margin:6px 0;max-width:1020px}
.warning{background:#fff9db;border-left:4px solid #f59f00}.error{background:#fff5f5;border-left:4px solid #e03131}
.tablewrap{overflow-x:auto}
.side{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}.side figure{margin-top:10px}
"""

# Marks the page once every image has decoded (read back by the headless-browser test).
SCRIPT = """
(function(){
  function check(){
    var imgs=document.images, ok=0;
    for(var i=0;i<imgs.length;i++){ if(imgs[i].complete && imgs[i].naturalWidth>0){ ok++; } }
    document.body.setAttribute("data-images-total", String(imgs.length));
    document.body.setAttribute("data-images-decoded", String(ok));
  }
  check();
  window.addEventListener("load", check);
})();
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _table_html(t: Table) -> str:
    starts, col = set(), 0
    for _, span in t.groups[:-1]:
        col += span
        starts.add(col)  # a rule between column groups

    def cls(i):
        names = (["num"] if i in t.numeric else []) + (["gstart"] if i in starts else [])
        return f' class="{" ".join(names)}"' if names else ""

    head = "".join(f"<th{cls(i)}>{_e(c)}</th>" for i, c in enumerate(t.columns))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{_e(v)}</td>" for i, v in enumerate(row)) + "</tr>"
                   for row in t.rows)
    cap = f"<caption>{_e(t.caption)}</caption>" if t.caption else ""
    groups = ""
    if t.groups:
        groups = "<tr>" + "".join(f'<th colspan="{span}" class="group">{_e(label)}</th>' for label, span in t.groups) + "</tr>"
    return (f'<div class="tablewrap"><table>{cap}<thead>{groups}<tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def _block_html(block) -> str:
    if isinstance(block, Side):
        return '<div class="side">' + "".join(map(_block_html, block.blocks)) + "</div>"
    if isinstance(block, Table):
        return _table_html(block)
    if isinstance(block, Figure):
        png = figure_png(block)
        return (f'<figure><img alt="{_e(block.caption)}" src="data:image/png;base64,{png}">'
                f"<figcaption>{_e(block.caption)}</figcaption></figure>")
    cls = "note" if block.level == "note" else block.level
    prefix = {"warning": "Warning: ", "error": "Error: "}.get(block.level, "")
    return f'<p class="{cls}">{_e(prefix + block.text)}</p>'


def render_html(stats: dict) -> str:
    secs = sections(stats)
    nav = "".join(f'<a href="#{_e(s.anchor)}">{_e(s.title.split(" — ")[0] + (" (" + s.title.split(" — ")[1] + ")" if " — " in s.title else ""))}</a>'
                  for s in secs)
    body = "".join(f'<section id="{_e(s.anchor)}"><h2>{_e(s.title)}</h2>' + "".join(map(_block_html, s.blocks))
                   + "</section>" for s in secs)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>Multi-HowTo100M dataset report</title><style>{CSS}</style></head>"
            f"<body><main><h1>Multi-HowTo100M dataset report</h1><nav>{nav}</nav>{body}</main>"
            f"<script>{SCRIPT}</script></body></html>\n")


# ---------------------------------------------------------------- Markdown

def _md_cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _block_md(block) -> str:
    if isinstance(block, Side):
        return "\n".join(map(_block_md, block.blocks))
    if isinstance(block, Table):
        columns = list(block.columns)
        if block.groups:  # Markdown has one header row: prefix each column with its group
            labels = [label for label, span in block.groups for _ in range(span)]
            columns = [f"{g} {c}".strip() for g, c in zip(labels, columns)]
        head = "| " + " | ".join(_md_cell(c) or " " for c in columns) + " |"
        sep = "|" + "|".join("---:" if i in block.numeric else "---" for i in range(len(block.columns))) + "|"
        rows = ["| " + " | ".join(_md_cell(v) for v in r) + " |" for r in block.rows]
        cap = f"\n_{_md_cell(block.caption)}_\n" if block.caption else ""
        return "\n".join([head, sep, *rows]) + "\n" + cap
    if isinstance(block, Figure):
        return f"_Plot in report.html: {block.caption}_\n"
    prefix = {"warning": "**Warning:** ", "error": "**Error:** "}.get(block.level, "")
    return f"{prefix}{block.text}\n"


def render_markdown(stats: dict) -> str:
    parts = ["# Multi-HowTo100M dataset report\n"]
    for s in sections(stats):
        parts.append(f"## {s.title}\n")
        parts += [_block_md(b) for b in s.blocks]
    return "\n".join(parts)
