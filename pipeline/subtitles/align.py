"""Putting several languages of one video on one timeline, and reading them back.

The timeline is one language's cleaned cues: the English track when it is manual
or ASR (it is spoken-aligned), else the source track (manual or ASR in the video's
language). Each segment is one timeline cue; every other language's cues are
projected onto the segments by time.

Projection rule (one-to-many and many-to-one, nothing dropped or duplicated): each
foreign cue goes, whole, to the one segment it overlaps most; a cue that overlaps
no segment (it falls in a gap of the timeline) goes to the nearest segment in time.
Whole cues, not word-proportional splits, because splitting by words is meaningless
for Chinese and misplaces words whenever speech rate varies; the cost is that a
long German cue spanning two English cues lands in one of them. A segment's text in
a language is its assigned cues joined in time order.

Coverage of a language is the fraction of timeline seconds (the union of timeline
cues) that its own cues overlap: it measures the tracks, not the assignment rule.
"""
from __future__ import annotations

import re
from bisect import bisect_right

from shards.samples import SubsJson, segment_pair

ORIGINAL_KINDS = ("manual", "asr")
NO_SPACE_LANGS = frozenset({"zh", "ja", "th"})  # written without spaces between words
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff]")


def join_texts(texts, lang: str | None) -> str:
    return ("" if lang in NO_SPACE_LANGS else " ").join(t for t in texts if t)


def count_tokens(text: str, lang: str | None) -> int:
    """Whitespace words; for languages written without spaces, each CJK character counts as one."""
    if lang in NO_SPACE_LANGS:
        cjk = len(_CJK.findall(text))
        return cjk + len(_CJK.sub(" ", text).split())
    return len(text.split())


def track_stats(cues: list, lang: str | None) -> dict:
    """Counts for the parquet row: cues, tokens, characters, seconds covered."""
    return {"cues": len(cues), "tokens": sum(count_tokens(c[2], lang) for c in cues),
            "chars": sum(len(c[2]) for c in cues), "seconds": round(sum(c[1] - c[0] for c in cues), 3)}


def _base(lang: str | None) -> str:
    return (lang or "").split("-")[0].lower()


def choose_timeline(tracks: dict, video_lang: str | None = None) -> str | None:
    """The language whose cues become the segments, or None without any cues.

    ``tracks``: ``{lang: {"kind": ..., "source_lang": ..., "cues": [...]}}``, usable ones.
    Order: English manual/ASR; the manual/ASR track in the video's language; any
    other manual/ASR track; the track the translations were made from; the most cues.
    """
    have = {lang: t for lang, t in tracks.items() if t.get("cues")}
    if not have:
        return None
    original = [l for l, t in have.items() if t.get("kind") in ORIGINAL_KINDS]
    if "en" in original:
        return "en"
    vl = _base(video_lang)
    for lang in original:
        if _base(lang) == vl:
            return lang
    if original:
        return max(original, key=lambda l: (have[l].get("kind") == "manual", len(have[l]["cues"]), l))
    sources = [_base(t.get("source_lang")) for t in have.values()]
    for src in sources:
        if src in have:
            return src
    return max(have, key=lambda l: (len(have[l]["cues"]), l))


def project(cues: list, seg_starts: list, seg_ends: list) -> list[int]:
    """For each cue, the index of the segment it belongs to (see the module docstring)."""
    n = len(seg_starts)
    out = []
    for s, e, _ in cues:
        i = bisect_right(seg_ends, s)  # first segment ending after the cue starts
        best, best_ov = -1, 0.0
        j = i
        while j < n and seg_starts[j] < e:
            ov = min(e, seg_ends[j]) - max(s, seg_starts[j])
            if ov > best_ov:
                best, best_ov = j, ov
            j += 1
        if best < 0:  # in a gap (or a point cue): nearest segment, the earlier on a tie
            before = s - seg_ends[i - 1] if i > 0 else float("inf")
            after = seg_starts[i] - e if i < n else float("inf")
            best = i - 1 if before <= after else i
        out.append(best)
    return out


def covered_seconds(a: list, b: list) -> float:
    """Seconds where the (sorted, non-overlapping) cue lists ``a`` and ``b`` overlap."""
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if hi > lo:
            total += hi - lo
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def align_tracks(tracks: dict, video_lang: str | None = None) -> tuple[str | None, list, dict]:
    """``(timeline_lang, segments, coverage)`` for usable tracks ``{lang: {kind, source_lang, cues}}``.

    Segments are ``{"start", "end", "text": {lang: text}}``, one per timeline cue; a
    language absent from a segment has no key. Differing cue counts are the normal case.
    """
    timeline = choose_timeline(tracks, video_lang)
    if timeline is None:
        return None, [], {}
    base = tracks[timeline]["cues"]
    starts = [c[0] for c in base]
    ends = [c[1] for c in base]
    assigned: list[dict] = [{timeline: [c[2]]} for c in base]
    span = sum(e - s for s, e in zip(starts, ends))
    coverage = {timeline: 1.0 if span > 0 else 0.0}
    for lang in sorted(tracks):
        cues = tracks[lang].get("cues") or []
        if lang == timeline or not cues:
            continue
        for cue, k in zip(cues, project(cues, starts, ends)):
            assigned[k].setdefault(lang, []).append(cue[2])
        coverage[lang] = round(covered_seconds(base, cues) / span, 4) if span > 0 else 0.0
    segments = [{"start": s, "end": e, "text": {l: join_texts(t, l) for l, t in texts.items()}}
                for s, e, texts in zip(starts, ends, assigned)]
    return timeline, segments, coverage


# ---------------------------------------------------------------- what the trainer asks

def cues_near(subs: dict | SubsJson, lang: str, start: float, end: float, max_cues: int | None = None) -> list:
    """``SubsJson.cues_near`` for a ``subs.json`` parsed or read: the consecutive cues of ``lang``
    closest in time to the window ``[start, end]``."""
    subs = subs if isinstance(subs, SubsJson) else SubsJson.from_dict(subs)
    return subs.cues_near(lang, start, end, max_cues)


def parallel_texts(segment_or_subs: dict | SubsJson, lang_a: str, lang_b: str):
    """Parallel texts in two languages.

    Given one segment: ``(text_a, text_b)``, or None if either language is missing.
    Given a whole ``subs.json`` (parsed, or a ``SubsJson``): ``[(start, end, text_a, text_b), ...]``
    over the segments that hold both (``SubsJson.parallel_texts``).
    """
    if isinstance(segment_or_subs, SubsJson):
        return segment_or_subs.parallel_texts(lang_a, lang_b)
    if "text" in segment_or_subs and "start" in segment_or_subs:
        return segment_pair(segment_or_subs, lang_a, lang_b)
    return SubsJson.from_dict(segment_or_subs).parallel_texts(lang_a, lang_b)
