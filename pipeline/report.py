"""The ``mmp-stats`` report: one list of sections, written as HTML and as Markdown.

Everything here works from the JSON-able dict ``pipeline.stats.build_stats`` returns,
so a saved ``stats.json`` renders the same report. This module holds the overview and
the crawl, duration, category, feature and shard sections and puts them in order;
``report_subtitles`` builds the aligned directories' sections, ``report_blocks`` the
blocks they are made of, and ``report_render`` writes them as HTML (plots inline) or
Markdown (tables only).
"""
from __future__ import annotations

from .report_blocks import (Figure, Note, Section, Table, barh, big, hist_lines, lang_label, legend_outside, n, num,
                            palette, pct, style_axes)
from .report_render import page_html, page_markdown
from .report_subtitles import coverage_section, langs_section, paper_sections, tokens_section

# Re-exported: pipeline.report stays the one place to import the report API from.
from .report_blocks import LANG_NAMES, Side  # noqa: F401
from .report_render import CSS, SCRIPT, figure_png  # noqa: F401
from .report_subtitles import KIND_COLORS  # noqa: F401

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
        Figure(lambda fig: hist_lines(fig, hists, "minutes (last bin holds 60 and more)", "Video duration"),
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
        Figure(lambda fig: barh(fig, cats["with_subtitles"] or cats["all"], "videos with subtitles",
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
        barh(fig, c["statuses"], "videos", "Crawl outcome by status", lambda s: STATUS_COLORS.get(s, "#1c7ed6"))

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
                for s, color in zip(statuses, palette(len(statuses))):
                    vals = np.array([r["statuses"].get(s, 0) for r in runs], dtype=float)
                    ax.bar(labels, vals, bottom=bottom, label=s, color=STATUS_COLORS.get(s, color))
                    bottom += vals
                style_axes(ax, "run (UTC start)", "videos", "Crawl outcomes over time, per run", counts="y")
                legend_outside(ax, "status")
            blocks.append(Figure(draw_runs, "Outcomes per run, in time order."))
    att = c["attempts"]
    uc = c["unit_counts"]
    downloads = (f"; videos downloaded: {n(c['videos_downloaded'])} ({big(c['video_bytes'])}B)"
                 if c["videos_downloaded"] else "")
    blocks.append(Note(f"Retries: {n(c['retried_videos'])} videos needed more than one attempt "
                       f"(attempts: {', '.join(f'{k}: {n(v)}' for k, v in att.items()) or '–'}); now "
                       f"{', '.join(f'{k} {n(v)}' for k, v in c['retried_statuses'].items()) or '–'}. "
                       f"{n(c['transient'])} videos and {n(c.get('transient_tracks', 0))} tracks still hold a transient "
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
    return [Section(f"Crawl outcomes — {c['path']}", f"crawl-{c['path']}", blocks)]


def features_section(m: dict) -> Section:
    total = m["videos"]
    rows = [[s, n(v), pct(v, total), "; ".join(f"{r} ({n(k)})" for r, k in list(m["reasons"].get(s, {}).items())[:2])]
            for s, v in m["statuses"].items()]
    summary = [["videos with features", n(m["videos_with_features"]), pct(m["videos_with_features"], total)],
               ["feature hours (rows x each recipe's row_seconds)", num(m["feature_hours"]), ""],
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
        style_axes(ax, "|feature rows − video seconds| (s)", "videos", counts="y", title=
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
            for i, (s, color) in enumerate(zip(with_hist, palette(len(with_hist)))):
                for j, (key, xlabel) in enumerate((("shard_mib_hist", "shard size (MiB)"),
                                                    ("samples_hist", "samples per shard"))):
                    ax, h = axes[i][j], s.get(key)
                    if h:
                        edges = np.array(h["edges"], dtype=float)
                        ax.bar(edges[:-1], h["counts"], width=np.diff(edges), align="edge", color=color)
                    style_axes(ax, xlabel if i == len(with_hist) - 1 else "", "shards", f"{s['path']}: {xlabel}")
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


def render_html(stats: dict) -> str:
    return page_html(sections(stats))


def render_markdown(stats: dict) -> str:
    return page_markdown(sections(stats))
