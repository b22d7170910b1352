"""Report sections for one aligned directory: Table 8 beside the paper, track kinds, languages
per video, alignment coverage, tokens per video and per subtitle."""
from __future__ import annotations

from pipeline.stats.report_blocks import (Details, Figure, Note, Section, Side, Table, big, hist_grid, hours, lang_boxes,
                            lang_color, lang_label, legend_outside, n, num, pct, share, style_axes)

KIND_COLORS = {"manual": "#2b8a3e", "asr": "#1c7ed6", "translated": "#f08c00", "released": "#862e9c",
               "none": "#adb5bd"}


def ratio_bars(fig, ours: dict, paper: dict) -> None:
    """Ours as % of the paper per language and measure; a log axis when some are far below 100%,
    so that 0.1% is as visible as 100%, and every bar labelled with its value."""
    import numpy as np

    ax = fig.add_subplot(111)
    langs = list(ours)
    x = np.arange(len(langs))
    values = {key: [100 * ours[l][key] / paper[l][key] if paper.get(l) and ours[l][key] is not None else None
                    for l in langs] for key in ("videos", "subtitles", "tokens")}
    positive = [v for vals in values.values() for v in vals if v]
    log = bool(positive) and min(positive) < 5
    floor = 10 ** np.floor(np.log10(min(positive))) / 2 if log else 0
    for j, (key, color) in enumerate((("videos", "#1c7ed6"), ("subtitles", "#2b8a3e"), ("tokens", "#f08c00"))):
        xs = x + (j - 1) * 0.27
        heights = [v if v else 0 for v in values[key]]
        bars = ax.bar(xs, [h - floor if h else 0 for h in heights], 0.27, bottom=floor, label=key, color=color)
        for b, v in zip(bars, values[key]):
            label = "–" if v is None else share(v, 100)
            ax.annotate(label, (b.get_x() + b.get_width() / 2, max(floor, b.get_y() + b.get_height())),
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=6.5,
                        rotation=90 if len(langs) > 5 else 0)
    ax.axhline(100, color="#495057", linewidth=1, linestyle="--")
    if log:
        ax.set_yscale("log")
        ax.set_ylim(floor, max(300, max(positive) * 3))
    else:
        ax.set_ylim(0, max(120, max(positive or [0]) * 1.2))
    ax.set_xticks(x, langs)
    for tick, lang in zip(ax.get_xticklabels(), langs):
        tick.set_color(lang_color(lang))
        tick.set_fontweight("bold")
    style_axes(ax, "language", "ours as % of the paper" + (" (log scale)" if log else ""),
               "Our counts relative to the paper's Table 8")
    legend_outside(ax)


def _token_column(a: dict):
    """(tokens of a language, the column's name, note): the tokenizer's counts when there are."""
    tc = a.get("tokenizer_counts")
    per = a["per_lang"]
    if not tc or not tc["sample_videos"]:  # no tokenizer, or no subtitle text in these shards to count
        return (lambda l: per[l]["tokens"]), "tokens (whitespace rule)", None
    return (lambda l: tc["per_lang"].get(l, {}).get("tokens")), f"tokens ({tc['name']})", tc


def tokenizer_table(a: dict, tc: dict) -> list:
    """What the tokenizer counted, beside the rule, with the sample size and the estimate's error."""
    per = a["per_lang"]
    rows = []
    for lang, d in tc["per_lang"].items():
        err = "exact" if tc["exact"] else (f"±{100 * 1.96 * d['rel_error']:.1f}%" if d.get("rel_error") is not None
                                           else "–")
        rows.append([lang_label(lang), big(per[lang]["tokens"]), big(d.get("tokens")), num(d.get("ratio"), 2), err,
                     n(d["sample_tracks"]), num(d.get("tokens_per_subtitle"), 1), big((per[lang]["paper"] or {}).get("tokens"))])
    if tc["exact"]:
        how = f"every one of the {n(tc['sample_videos'])} videos with text was tokenized: the counts are exact."
    else:
        cues = f" (at most {tc['cues_per_track']} evenly spread cues of each track)" if tc.get("cues_per_track") else ""
        how = (f"a sample of {n(tc['sample_videos'])} videos{cues} was tokenized; each total is the rule's exact "
               "total times the sampled ratio (tokenizer / rule tokens), '±' is the 95% interval of that ratio "
               "estimate (1.96 standard errors).")
    return [Table(["language", "rule tokens", f"{tc['name']} tokens", "ratio", "error", "tracks tokenized",
                   "tokens/subtitle", "paper tokens"], rows, numeric=set(range(1, 8)),
                  caption=f"Tokens counted with {tc['name']} (no special tokens), in {tc['seconds']:.1f} s: {how}")]


def paper_sections(a: dict, tokenizer: dict) -> list[Section]:
    per = a["per_lang"]
    langs = list(per)
    suffix = f" — {a['path']}"
    tok_of, tok_name, tc = _token_column(a)
    rows, tot = [], {"v": 0, "s": 0, "t": 0, "pv": 0, "ps": 0, "pt": 0}
    for lang in langs:
        d, p = per[lang], per[lang]["paper"] or {}
        tokens = tok_of(lang)
        rows.append([lang_label(lang), n(d["videos"]), n(p.get("videos")), share(d["videos"], p.get("videos")),
                     n(d["subtitles"]), n(p.get("subtitles")), share(d["subtitles"], p.get("subtitles")),
                     big(tokens), big(p.get("tokens")), share(tokens, p.get("tokens"))])
        if p:
            for k, value in (("v", d["videos"]), ("s", d["subtitles"]), ("t", tokens or 0)):
                tot[k] += value
            for k, key in (("v", "videos"), ("s", "subtitles"), ("t", "tokens")):
                tot["p" + k] += p[key]
    rows.append(["all (paper languages)", n(tot["v"]), n(tot["pv"]), share(tot["v"], tot["pv"]), n(tot["s"]),
                 n(tot["ps"]), share(tot["s"], tot["ps"]), big(tot["t"]), big(tot["pt"]), share(tot["t"], tot["pt"])])
    table = Table(["language"] + ["ours", "paper", "ours/paper"] * 3, rows,
                  caption="Videos with a usable track, subtitles (cleaned cues) and tokens per language, beside "
                  "the paper's Table 8.", numeric=set(range(1, 10)),
                  groups=[("", 1), ("videos", 3), ("subtitles", 3), (tok_name, 3)])

    def draw_ratio(fig):
        ratio_bars(fig, {l: {k: (per[l][k] if k != "tokens" else tok_of(l)) for k in ("videos", "subtitles", "tokens")}
                         for l in langs}, {l: per[l]["paper"] for l in langs})

    blocks = [table, Figure(draw_ratio, "Ours as a percentage of the paper's Table 8 (dashed line: 100%; a log "
                            "axis when some counts are far below it).", size=(7.5, 2.8))]
    if tc:
        blocks += tokenizer_table(a, tc)
    elif a.get("tokenizer_counts"):
        blocks.append(Note(f"--tokenizer {a['tokenizer_counts']['name']} found no subtitle text in these shards "
                           "(no subs.json with tracks): the token column is the whitespace rule's.", "warning"))
    else:
        blocks.append(Note("Tokens here are whitespace words (CJK: characters); the paper counted with a tokenizer: "
                           "mmp-stats --tokenizer xlm-roberta-base counts the same way."))
    sections = [Section("Subtitles per language, beside the paper (Table 8)" + suffix, f"table8-{a['path']}", blocks,
                        group=a["path"], short="Table 8", has_data=any(per[l]["videos"] for l in langs))]

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
        for tick, lang in zip(ax.get_xticklabels(), langs):
            tick.set_color(lang_color(lang))
            tick.set_fontweight("bold")
        style_axes(ax, "language", "videos with a usable track", "Track kind per language", counts="y")
        legend_outside(ax, "track kind")

    statuses = sorted({s for l in langs for s in per[l]["track_statuses"]},
                      key=lambda s: (s != "ok", s == "not aligned", s))
    status_rows = [[lang_label(l)] + [n(per[l]["track_statuses"].get(s, 0)) for s in statuses] for l in langs]
    sections.append(Section("Track kinds: manual, ASR, translated, released" + suffix, f"kinds-{a['path']}", [
        Figure(draw_kinds, "Videos with a usable track, by track kind.", size=(6.5, 2.4)),
        Details("Table 8 split by track kind, and track statuses per language", [
            Table(kind_columns, kind_rows,
                  caption="Table 8 split by track kind: YouTube manual subtitles, YouTube ASR, YouTube's machine "
                  "translation, or imported from a published release (kind 'released').",
                  numeric=set(range(1, len(kind_columns))), groups=[("", 1)] + [(k, 3) for k in all_kinds]),
            Table(["language"] + statuses, status_rows, caption="Track status per language (mmp-align's taxonomy; "
                  "'not aligned': the video failed before alignment).", numeric=set(range(1, len(statuses) + 1)))]),
    ], group=a["path"], short="track kinds", has_data=bool(all_kinds)))
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
    return Section(f"Languages per video — {a['path']}", f"langs-{a['path']}", group=a["path"],
                   short="languages per video", has_data=bool(with_any), blocks=[
        Note(f"{pct(a['share_in_paper_range'], 1, 2)} of the {n(with_any)} videos with any usable track have "
             f"{lo} to {hi} languages (the paper reports 7 to 9 per video); mean {num(s['mean'], 2)}, "
             f"median {num(s['median'], 0)}."),
        Side([Table(["languages", "videos", "share"], rows, numeric={1, 2}),
              Figure(draw, "Number of languages with a usable track per video.", size=(5.2, 2.3))]),
    ])


def coverage_section(a: dict) -> Section:
    per = a["per_lang"]
    langs = list(per)
    rows = [[lang_label(l), n(per[l]["coverage"]["n"]), pct(per[l]["coverage"]["mean"], 1),
             pct(per[l]["coverage"]["median"], 1), pct(per[l]["coverage"]["p10"], 1),
             pct(per[l]["coverage"]["p90"], 1)] for l in langs]

    def draw(fig):
        ax = fig.add_subplot(111)
        for i, l in enumerate(langs):
            c, color = per[l]["coverage"], lang_color(l)
            if c["n"]:
                ax.plot([100 * c["p10"], 100 * c["p90"]], [i, i], color=color, linewidth=6, alpha=0.5,
                        solid_capstyle="butt")
                ax.plot(100 * c["median"], i, "o", color=color, markersize=8)
                ax.plot(100 * c["mean"], i, "|", color="#212529", markersize=12)
        ax.set_yticks(range(len(langs)), langs)
        ax.set_xlim(0, 102)
        style_axes(ax, "% of the timeline's speech seconds covered by the language's cues", "",
               "Coverage (bar: 10th–90th percentile, dot: median, tick: mean)")
        ax.grid(True, axis="x", alpha=0.3)
        ax.invert_yaxis()

    timeline = ", ".join(f"{k}: {n(v)}" for k, v in a["timeline_kinds"].items()) or "–"
    return Section(f"Alignment coverage — {a['path']}", f"coverage-{a['path']}", group=a["path"], short="coverage",
                   has_data=any(per[l]["coverage"]["n"] for l in langs), blocks=[
        Note("Coverage: the fraction of timeline seconds (the union of the timeline track's cues) that a "
             f"language's own cues overlap. Timeline tracks by kind: {timeline}."),
        Side([Table(["language", "videos", "mean", "median", "p10", "p90"], rows, numeric={1, 2, 3, 4, 5}),
              Figure(draw, "Alignment coverage per language.", size=(5.6, 0.8 + 0.3 * len(langs)))]),
    ])


def tokens_section(a: dict, tokenizer: dict) -> Section:
    per = a["per_lang"]
    langs = list(per)
    rows = []
    for l in langs:
        tv, ts, ss = per[l]["tokens_per_video"], per[l]["tokens_per_subtitle"], per[l]["subtitle_seconds"]
        rows.append([lang_label(l), num(tv["median"], 0), num(tv["mean"], 0), num(tv["p90"], 0),
                     num(per[l]["tokens_per_subtitle_overall"], 2), num(ts["median"], 2),
                     num(ss["median"], 2), hours(per[l]["subtitle_hours"]), big(per[l]["chars"])])
    measures = (("tokens_per_video", "tokens per video (cf. the paper's Fig. 5)", "tokens (log scale)", True,
                 "tokens per video (log scale)"),
                ("tokens_per_subtitle", "tokens per subtitle (cf. Fig. 6)", "tokens, per-video average", False,
                 "tokens per subtitle (per-video average; last bin holds 40 and more)"),
                ("subtitle_seconds", "subtitle duration", "seconds, per-video average", False,
                 "seconds per subtitle (per-video average; last bin holds 15 s and more)"))

    def draw_boxes(fig):
        lang_boxes(fig, [(title, xlabel, {l: per[l][key] for l in langs}, logx)
                         for key, title, xlabel, logx, _ in measures])

    def grid(key, xlabel, title, logx):
        return Figure(lambda fig: hist_grid(fig, {l: per[l][f"{key}_hist"] for l in langs}, xlabel, title, logx),
                      f"{title}: one panel per language.", size=(9.0, 0.9 + 1.7 * -(-len(langs) // 3)))

    videos = max((per[l]["tokens_per_video"]["n"] for l in langs), default=0)
    return Section(f"Tokens per video and per subtitle (the paper's Fig. 5 and 6) — {a['path']}",
                   f"tokens-{a['path']}", group=a["path"], short="tokens", has_data=bool(videos), blocks=[
        Figure(draw_boxes, "One box per language: quartiles, whiskers from the 10th to the 90th percentile, "
               "line the median, white dot the mean.", size=(10.0, 0.9 + 0.28 * len(langs))),
        Table(["language", "tokens/video median", "mean", "p90", "tokens/subtitle (all)", "median per video",
               "subtitle s median", "subtitle time", "characters"], rows, numeric=set(range(1, 9))),
        Details("Full distributions, one panel per language",
                [grid(key, hist_label, title[0].upper() + title[1:], logx) for key, title, _, logx, hist_label in measures]),
        Note("'tokens/subtitle (all)' is exact (all tokens / all subtitles); the distributions are of each video's "
             "average (the rows keep per-video totals), narrower than over single subtitles."),
    ])


def _clock(t) -> str:
    if t is None:
        return "–"
    m, sec = divmod(float(t), 60)
    return f"{int(m)}:{sec:04.1f}"


def examples_section(a: dict) -> Section:
    """Consecutive segments of one video in every language, to check the alignment by eye."""
    ex = a.get("examples")
    title = f"Example aligned segments — {a['path']}"
    anchor = f"examples-{a['path']}"
    if not ex:
        return Section(title, anchor, [Note("No aligned sample with segments in the first shard (or the shards "
                                            "were not read: --no-examples).")],
                       group=a["path"], short="examples", has_data=False)
    columns = ["language"] + [f"{_clock(s['start'])}–{_clock(s['end'])}" for s in ex["segments"]]
    rows = [[lang_label(l)] + [s["text"].get(l) or "–" for s in ex["segments"]] for l in ex["langs"]]
    return Section(title, anchor, group=a["path"], short="examples", blocks=[
        Table(columns, rows, caption=f"Video {ex['video_id']} (shard {ex['shard']}), {len(ex['segments'])} "
              f"consecutive segments on the {ex.get('timeline') or 'timeline'} track's timeline (min:s): each "
              "column is one segment, each row what a language says during it. '–': no cue of that language "
              "overlaps the segment.")])
