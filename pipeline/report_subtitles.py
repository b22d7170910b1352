"""Report sections for one aligned directory: Table 8 beside the paper, track kinds, languages
per video, alignment coverage, tokens per video and per subtitle."""
from __future__ import annotations

from .report_blocks import (Figure, Note, Section, Side, Table, big, hist_lines, lang_label, legend_outside, n,
                            num, palette, pct, style_axes)

KIND_COLORS = {"manual": "#2b8a3e", "asr": "#1c7ed6", "translated": "#f08c00", "released": "#862e9c",
               "none": "#adb5bd"}


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
        style_axes(ax, "language", "ours as % of the paper", "Our counts relative to the paper's Table 8")
        legend_outside(ax)

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
        style_axes(ax, "language", "videos with a usable track", "Track kind per language", counts="y")
        legend_outside(ax, "track kind")

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
        style_axes(ax, "languages with a usable track", "videos", "Languages per video (green: the paper's 7 to 9)",
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
        for i, (l, color) in enumerate(zip(langs, palette(len(langs)))):
            c = per[l]["coverage"]
            if c["n"]:
                ax.plot([100 * c["p10"], 100 * c["p90"]], [i, i], color=color, linewidth=6, alpha=0.5,
                        solid_capstyle="butt")
                ax.plot(100 * c["median"], i, "o", color=color)
                ax.plot(100 * c["mean"], i, "|", color="#212529", markersize=12)
        ax.set_yticks(range(len(langs)), langs)
        ax.set_xlim(0, 102)
        style_axes(ax, "% of the timeline's speech seconds covered by the language's cues", "",
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
        Figure(lambda fig: hist_lines(fig, {l: per[l]["tokens_per_video_hist"] for l in langs},
                                       "tokens per video (log scale)", "Tokens per video (cf. the paper's Fig. 5)",
                                       logx=True), "Distribution of tokens per video, per language."),
        Figure(lambda fig: hist_lines(fig, {l: per[l]["tokens_per_subtitle_hist"] for l in langs},
                                       "tokens per subtitle (per-video average; last bin holds 40 and more)",
                                       "Tokens per subtitle (cf. the paper's Fig. 6)"),
               "Distribution of tokens per subtitle, per language."),
        Figure(lambda fig: hist_lines(fig, {l: per[l]["subtitle_seconds_hist"] for l in langs},
                                       "seconds per subtitle (per-video average; last bin holds 15 s and more)",
                                       "Subtitle duration"), "Distribution of subtitle durations, per language."),
        Note("The parquet rows keep per-video totals (cues, tokens, seconds), so 'tokens/subtitle (all)' is exact "
             "(all tokens / all subtitles) while the per-subtitle distributions are of each video's average: "
             "they are narrower than a distribution over single subtitles would be. "
             f"Token rule: {tokenizer['rule']}."),
    ])
