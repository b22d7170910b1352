"""The ``mmp-stats`` report: one list of sections, written as HTML and as Markdown.

Everything here works from the JSON-able dict ``pipeline.stats.stage.build_stats`` returns,
so a saved ``stats.json`` renders the same report. This module holds the overview and
the crawl, duration, category, feature and shard sections and puts them in order;
``report_subtitles`` builds the aligned directories' sections, ``report_blocks`` the
blocks they are made of, and ``report_render`` writes them as HTML (plots inline) or
Markdown (tables only).
"""
from __future__ import annotations

from pipeline.stats.report_blocks import (Details, Figure, Note, Section, Side, Table, barh, big, hist_lines, hours, lang_label,
                            legend_outside, n, palette, pct, size, style_axes)
from pipeline.stats.report_crawl import failures_block, progress_blocks
from pipeline.stats.report_render import page_html, page_markdown
from pipeline.stats.report_subtitles import coverage_section, examples_section, langs_section, paper_sections, tokens_section


OK_STATUSES = ("ok", "partial")
STATUS_COLORS = {"ok": "#2b8a3e", "partial": "#94d82d", "length_mismatch": "#94d82d", "no_subtitles": "#adb5bd",
                 "no_features": "#adb5bd", "no_text": "#ced4da", "unavailable": "#e03131", "upstream_failed": "#e03131",
                 "rate_limited": "#f08c00", "bot_check": "#9c36b5", "network": "#1c7ed6", "server_error": "#862e9c",
                 "invalid_id": "#f783ac", "error": "#a61e4d", "bad_features": "#a61e4d", "parse_error": "#a61e4d"}


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
                     f"{n(m['videos_with_features'])} with features, {hours(m['feature_hours'])}"])
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
    return Section("Overview", "overview", blocks, short="overview")


def duration_section(stats: dict) -> Section | None:
    hists, rows = {}, []
    for c in stats["crawl"]:
        if c["duration"]["n"]:
            hists[f"crawl: {c['path']}"] = c["duration_minutes_hist"]
            rows.append([c["path"], "crawled videos with subtitles", n(c["duration"]["n"]),
                         _minutes(c["duration"]["median"]), _minutes(c["duration"]["mean"]),
                         _minutes(c["duration"]["p90"]), hours(c["hours_with_subtitles"])])
    for a in stats["aligned"]:
        d = a["duration"]
        if d["n"]:
            hists[f"aligned: {a['path']}"] = a["duration_minutes_hist"]
            rows.append([a["path"], "aligned videos", n(d["n"]), _minutes(d["median"]), _minutes(d["mean"]),
                         _minutes(d["p90"]), hours(d["mean"] * d["n"] / 3600)])
    if not rows:
        return None
    return Section("Video duration", "duration", [
        Table(["directory", "videos", "with a duration", "median", "mean", "p90", "total"], rows,
              numeric={2, 3, 4, 5, 6}),
        Figure(lambda fig: hist_lines(fig, hists, "minutes (last bin holds 60 and more)", "Video duration"),
               "Distribution of video durations.", size=(7.5, 2.4)),
    ], short="video duration")


def _count(k, noun: str) -> str:
    return f"{n(k)} {noun}{'' if k == 1 else 's'}"


def _minutes(seconds) -> str:
    if seconds is None:
        return "–"
    return f"{seconds / 60:,.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def categories_section(c: dict) -> Section | None:
    cats = c["categories"]
    if not cats["all"]:
        return Section(f"Categories — {c['path']}", f"categories-{c['path']}", [
            Note("No category_1 in these crawl rows (the video list had no HowTo100M category columns).")],
            group=c["path"], short="categories", has_data=False)
    total = sum(cats["all"].values())
    rows = [[k, n(v), pct(v, total), n(cats["with_subtitles"].get(k, 0)), pct(cats["with_subtitles"].get(k, 0), v)]
            for k, v in cats["all"].items()]
    return Section(f"Categories (HowTo100M category_1) — {c['path']}", f"categories-{c['path']}", [
        Table(["category_1", "videos", "share", "with subtitles", "of the category"], rows, numeric={1, 2, 3, 4},
              caption=(f"{n(cats['missing'])} {'row carries' if cats['missing'] == 1 else 'rows carry'} no category."
                       if cats["missing"] else "")),
        Figure(lambda fig: barh(fig, cats["with_subtitles"] or cats["all"], "videos with subtitles",
                                 "Videos per category"), "Videos with subtitles per HowTo100M category_1.",
               size=(7.5, max(1.6, 0.26 * min(20, len(cats["all"])) + 0.7))),
    ], group=c["path"], short="categories")


def crawl_section(c: dict) -> list[Section]:
    total = c["videos"]
    rows = []
    for status, count in c["statuses"].items():
        reasons = c["reasons"].get(status, {})
        why = "; ".join(f"{r} ({n(v)})" for r, v in list(reasons.items())[:3])
        rows.append([status, n(count), pct(count, total), why])
    def draw_status(fig):
        barh(fig, c["statuses"], "videos", "Crawl outcome by status", lambda s: STATUS_COLORS.get(s, "#1c7ed6"))

    blocks = [Side([Table(["status", "videos", "share", "most frequent reasons"], rows, numeric={1, 2}),
                    Figure(draw_status, "Crawl outcomes by status.", size=(5.5, max(1.6, 0.26 * len(rows) + 0.7)))])]
    blocks += failures_block(c.get("failed_examples"))
    blocks += progress_blocks(c.get("progress"), c.get("runs") or [])
    if c.get("projection"):
        blocks.append(Note(f"At its session's budgets (mmp-crawl --check shows the same): {c['projection']}. "
                           f"More sessions (--egress, each its own address or account) divide it."))
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
                for s, color in zip(statuses, palette(len(statuses))):
                    vals = np.array([r["statuses"].get(s, 0) for r in runs], dtype=float)
                    ax.bar(labels, vals, bottom=bottom, label=s, color=STATUS_COLORS.get(s, color))
                    bottom += vals
                style_axes(ax, "run (UTC start)", "videos", "Crawl outcomes over time, per run", counts="y")
                legend_outside(ax, "status")
            blocks.append(Details(f"Outcomes per run ({len(runs)} runs)",
                                  [Figure(draw_runs, "Outcomes per run, in time order.", size=(7.5, 2.4))]))
    att = c["attempts"]
    uc = c["unit_counts"]
    downloads = (f"; videos downloaded: {n(c['videos_downloaded'])} ({size(c['video_bytes'])})"
                 if c["videos_downloaded"] else "")
    now = ", ".join(f"{k} {n(v)}" for k, v in c["retried_statuses"].items())
    blocks.append(Note(f"Retries: {n(c['retried_videos'])} {'video' if c['retried_videos'] == 1 else 'videos'} needed "
                       f"more than one attempt (attempts: {', '.join(f'{k}: {n(v)}' for k, v in att.items()) or '–'})"
                       f"{'; now ' + now if now else ''}. "
                       f"{_count(c['transient'], 'video')} and {_count(c.get('transient_tracks', 0), 'track')} still hold a transient "
                       f"failure (rate_limited, bot_check, network, server_error, bad_response, po_token_required): "
                       f"mmp-crawl --retry-failed asks for them again, keeping the tracks already fetched. Requests "
                       f"made: {n(uc.get('requests'))}; subtitle tracks fetched: {n(uc.get('tracks'))}{downloads}; "
                       f"request-rate changes of the adaptive budget: {n(uc.get('rate_decreases', 0))} down, "
                       f"{n(uc.get('rate_increases', 0))} up."))
    if c.get("track_statuses"):
        ts = c["track_statuses"]
        blocks.append(Table(["track outcome", "tracks", "share"],
                            [[k, n(v), pct(v, sum(ts.values()))] for k, v in ts.items()], numeric={1, 2},
                            caption="What became of each requested language of each video (ok: fetched; none: "
                            "YouTube offers nothing; no_url: no fetchable format; the rest are failures)."))
    if c.get("ytdlp_warnings"):
        blocks.append(Table(["yt-dlp warning", "videos"], [[k, n(v)] for k, v in c["ytdlp_warnings"].items()],
                            numeric={1}, caption="Videos whose metadata extraction drew a yt-dlp warning, by kind "
                            "(po_token, js_runtime: see mmp-crawl --check). The texts are in the crawl's logs."))
    kinds = c["kinds"]
    all_kinds = sorted({k for v in kinds.values() for k in v})
    blocks.append(Table(["language"] + all_kinds, [[lang_label(l)] + [n(kinds[l].get(k, 0)) for k in all_kinds]
                                                   for l in kinds], numeric=set(range(1, len(all_kinds) + 1)),
                        caption="Track chosen per language at crawl time (none: YouTube offers nothing in it)."))
    return [Section(f"Crawl outcomes — {c['path']}", f"crawl-{c['path']}", blocks, group=c["path"],
                    short="crawl outcomes", has_data=bool(total))]


def features_section(m: dict) -> Section:
    total = m["videos"]
    rows = [[s, n(v), pct(v, total), "; ".join(f"{r} ({n(k)})" for r, k in list(m["reasons"].get(s, {}).items())[:2])]
            for s, v in m["statuses"].items()]
    summary = [["videos with features", n(m["videos_with_features"]), pct(m["videos_with_features"], total)],
               ["feature time (rows x each recipe's row_seconds)", hours(m["feature_hours"]), ""],
               ["video time of those videos", hours(m["video_hours_with_features"]),
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
        summary.append(["extraction time (decode + model)", hours(m["decode_hours"] + m["model_hours"]),
                        f"devices {', '.join(f'{k}: {n(v)}' for k, v in m['devices'].items()) or '–'}; "
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
        style_axes(ax, "|feature rows − video seconds| (s)", "videos", counts="y", title=
               f"Feature length vs video duration (orange: beyond the {m['tolerance_seconds']:g} s tolerance)")

    return Section(f"Video features — {m['path']}", f"features-{m['path']}", [
        Table(["", "value", ""], summary, numeric={1}),
        Table(["status", "videos", "share", "reasons"], rows, numeric={1, 2}),
        *failures_block(m.get("failed_examples")),
        Figure(draw, "Feature length against video duration.", size=(7.5, 2.3)),
    ], group=m["path"], short="features", has_data=bool(total))


def shards_section(stats: dict) -> Section | None:
    shards = stats["shards"]
    if not shards:
        return None
    rows = []
    for s in shards:
        b, sp = s["shard_bytes"], s["samples_per_shard"]
        rows.append([s["path"], s["stage"], n(s["units_complete"]), n(s["units_incomplete"]), n(s["samples"]),
                     n(s["rows"]), size(s["bytes"]), size(b["median"]), f"{size(b['p10'])} – {size(b['p90'])}",
                     n(sp["median"]), f"{n(sp['p10'])}–{n(sp['p90'])}"])
    blocks = [Table(["directory", "stage", "shards", "incomplete", "samples", "rows", "size", "shard median",
                     "shard p10–p90", "samples/shard median", "p10–p90"], rows, numeric=set(range(2, 11)),
                    caption="Shards are the units' tar files; sizes and counts from their stats files.")]
    with_hist = [s for s in shards if s.get("shard_mib_hist") or s.get("samples_hist")]
    if with_hist:
        blocks.append(Details("Shard sizes and samples per shard, per directory", [
            Figure(lambda fig: shard_hists(fig, with_hist), "Shard sizes and samples per shard, one row per "
                   "directory.", size=(9.0, 0.5 + 1.9 * len(with_hist)))]))
    return Section("Shards", "shards", blocks, short="shards")


def shard_hists(fig, with_hist: list) -> None:
    """One row per directory, titled by it; shard size and samples per shard side by side, whole-number counts."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    axes = fig.subplots(len(with_hist), 2, squeeze=False)
    for i, (s, color) in enumerate(zip(with_hist, palette(len(with_hist)))):
        for j, key in enumerate(("shard_mib_hist", "samples_hist")):
            ax, h = axes[i][j], s.get(key)
            xlabel = "samples per shard"
            if h:
                edges = np.array(h["edges"], dtype=float)
                if j == 0:  # sizes in KiB when the shards are small, so the ticks read 0-900 rather than 0.00-0.88
                    small = edges[-1] < 1
                    edges, xlabel = (edges * 1024, "shard size (KiB)") if small else (edges, "shard size (MiB)")
                ax.bar(edges[:-1], h["counts"], width=np.diff(edges), align="edge", color=color)
                ax.set_xlim(max(0.0, edges[0]), edges[-1])
                if j == 1 and edges[-1] - edges[0] <= 6:  # a few whole numbers of samples: tick each one
                    ax.set_xticks(range(int(np.ceil(edges[0])), int(np.floor(edges[-1])) + 1))
            ax.set_title(f"{s['path']} ({s['stage']})" if j == 0 else "", fontsize=10, loc="left", fontweight="bold")
            ax.set_xlabel(xlabel if h or j else "shard size", fontsize=9)
            ax.set_ylabel("shards" if j == 0 else "", fontsize=9)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
            if not (j == 1 and h and edges[-1] - edges[0] <= 6):
                ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=j == 1))
            ax.tick_params(labelsize=8)
            ax.grid(True, axis="y", alpha=0.3)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)


def about_section(stats: dict) -> Section:
    tok = stats["tokenizer"]
    text = [f"Token counts: {tok['rule']}; counted by {tok['counted_by']}."]
    if tok.get("counting"):
        text.append(tok["counting"])
    text.append("Only units with their stats file (the stages' completion marker) are counted; the tars are read "
                "only for the example segments (the first samples of one aligned shard) and --tokenizer. A video counts for a language when its track there has status ok (usable, in "
                "the expected script). Subtitles are cleaned cues (rolling ASR captions unrolled, empty cues "
                "dropped), which is why ASR-heavy languages may show fewer subtitles than raw caption files.")
    if not any(c["categories"]["all"] for c in stats["crawl"]):
        text.append("Categories (HowTo100M's category_1) come from the crawl rows, which copy them from the video "
                    "list; aligned rows written by mmp-import do not carry them, so without a crawl with a "
                    "HowTo100M_v1.csv-style list there is no category table.")
    return Section("How these figures are counted", "about", [Details("How mmp-stats counts", [Note(t) for t in text])],
                   short="how it counts")


def sections(stats: dict) -> list[Section]:
    out = [overview(stats)]
    tok = stats["tokenizer"]
    for a in stats["aligned"]:
        if not a["per_lang"]:
            out.append(Section(f"Subtitles — {a['path']}", f"aligned-{a['path']}",
                               [Note("No language columns in these aligned rows.", "warning")], group=a["path"],
                               short="subtitles", has_data=False))
            out += failure_sections(a)
            continue
        out += paper_sections(a, tok)
        out.append(langs_section(a))
        out.append(coverage_section(a))
        out.append(tokens_section(a, tok))
        out.append(examples_section(a))
        out += failure_sections(a)
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


def failure_sections(a: dict) -> list:
    blocks = failures_block(a.get("failed_examples"), open_=True)
    if not blocks:
        return []
    return [Section(f"Videos not (fully) aligned — {a['path']}", f"failed-{a['path']}", blocks, group=a["path"],
                    short="failures")]


def render_html(stats: dict) -> str:
    return page_html(sections(stats))


def render_markdown(stats: dict) -> str:
    return page_markdown(sections(stats))
