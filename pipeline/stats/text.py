"""The subtitle text behind ``mmp-stats``: a few aligned segments to look at, and token counts
by a real tokenizer (``--tokenizer``).

The parquet rows keep counts only; the text lives in the aligned shards (``subs.json``
members). Both readers here open few tars and stop early: the examples read the first
samples of one shard; the tokenizer reads a fixed-size sample of videos spread over
randomly chosen shards, and at most ``SAMPLE_CUES`` evenly spread cues of each of their
tracks (everything when the dataset is small), so its cost does not grow with the
dataset. Counting a sample gives an estimate: the ratio of tokenizer tokens to the rule's
tokens (``pipeline.subtitles.align.count_tokens``) on the sampled cues, times the rule's exact
total from the parquet, with the ratio estimator's standard error over the sampled tracks.
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np

from shards.reader import ShardError, iter_samples
from shards.samples import ABSENT, SUBS_JSON, SubsJson

from pipeline.runtime.hub import TextModelError, load_tokenizer
from pipeline.subtitles.align import count_tokens
from pipeline.stats.read import Issues, StageDir

EXAMPLE_SEGMENTS = 3  # consecutive segments shown from one video
EXAMPLE_SCAN = 64  # samples of the first shard looked at to find a video with many languages
EXAMPLE_CHARS = 220
SAMPLE_VIDEOS = 1000  # videos whose text the tokenizer counts (all of them when there are fewer)
SAMPLE_SHARDS = 40  # shards the sample is spread over
SAMPLE_CUES = 16  # cues per track tokenized when sampling (evenly spread): more videos, less text from each


def _subs(sample: dict) -> SubsJson | None:
    raw = sample.get(SUBS_JSON)
    if raw is None:
        return None
    try:
        doc = SubsJson.from_member(raw)
    except ValueError:
        return None
    return doc if isinstance(doc.tracks, dict) else None


def _tar_units(sd: StageDir) -> list:
    return [u for _, u in sorted(sd.units.items()) if u.has_stats and u.has_tar]


# ---------------------------------------------------------------- examples

def pick_segments(doc: SubsJson, k: int = EXAMPLE_SEGMENTS) -> list:
    """``k`` consecutive segments from the middle of the video, where the most languages have text."""
    listed = doc.segments if isinstance(doc.segments, list) else []
    segs = [s for s in listed if isinstance(s, dict) and isinstance(s.get("text"), dict)]
    if not segs:
        return []
    width = [sum(1 for t in s["text"].values() if t) for s in segs]
    windows = [sum(width[i:i + k]) for i in range(max(1, len(segs) - k + 1))]
    middle = (len(windows) - 1) / 2
    best = max(range(len(windows)), key=lambda i: (windows[i], -abs(i - middle)))
    return segs[best:best + k]


def segment_examples(sd: StageDir, issues: Issues, langs: list) -> dict | None:
    """A few consecutive segments of one video of the first shard, in all its languages, with times."""
    best, best_width = None, -1
    for unit in _tar_units(sd)[:1]:
        try:
            for i, sample in enumerate(iter_samples(unit.files.tar)):
                if i >= EXAMPLE_SCAN:
                    break
                doc = _subs(sample)
                if doc is None:
                    continue
                segs = pick_segments(doc)
                width = len({l for s in segs for l, t in s["text"].items() if t})
                if segs and width > best_width:
                    best, best_width = (sample["__key__"], unit.files.stem, doc, segs), width
                if best_width >= len(langs):
                    break
        except ShardError as exc:
            issues.add("warning", sd.label, f"cannot read {unit.files.tar.name} for the example segments ({exc})")
    if best is None:
        return None
    key, stem, doc, segs = best
    shown = [l for l in langs if any(s["text"].get(l) for s in segs)]
    shown += sorted({l for s in segs for l in s["text"]} - set(shown))
    video_id, timeline = (None if v is ABSENT else v for v in (doc.video_id, doc.timeline))
    return {"video_id": video_id or key, "shard": stem, "timeline": timeline,
            "langs": shown, "segments": [{"start": s.get("start"), "end": s.get("end"),
                                          "text": {l: _short(s["text"].get(l)) for l in shown}} for s in segs]}


def _short(text) -> str | None:
    if not text:
        return None
    text = " ".join(str(text).split())
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS - 1] + "…"


# ---------------------------------------------------------------- tokenizer counts

def load_counting_tokenizer(name: str):
    """The tokenizer through ``--text-model``'s loading path; None and a reason when that cannot work."""
    try:
        return load_tokenizer(name), None
    except TextModelError as exc:
        return None, str(exc).replace("--text-model", "--tokenizer")
    except ImportError as exc:
        return None, f"--tokenizer needs transformers to load {name} ({exc}); pip install 'multi-howto100m[train]'"


def _sampled_videos(sd: StageDir, size: int, seed: int):
    """(unit, sample) pairs: every video of every shard when there are few, else ``size`` spread over shards."""
    units = _tar_units(sd)
    total = sum(int((u.stats or {}).get("samples") or 0) for u in units)
    if total <= size:
        for unit in units:
            for sample in iter_samples(unit.files.tar):
                yield unit, sample
        return
    order = np.random.default_rng(seed).permutation(len(units))
    per_shard = max(1, math.ceil(size / min(len(units), SAMPLE_SHARDS)))
    taken = 0
    for i in order:
        for j, sample in enumerate(iter_samples(units[i].files.tar)):
            if j >= per_shard or taken >= size:
                break
            taken += 1
            yield units[i], sample
        if taken >= size:
            return


def token_lengths(tokenizer, texts: list) -> list:
    """Tokens in each text, without special tokens; a fast tokenizer's Rust backend directly when it has one
    (transformers' per-text Python wrapping would cost more than the tokenizing itself)."""
    if not texts:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch  # _fast: no offsets
        return [len(e.ids) for e in encode(texts, add_special_tokens=False)]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def count_sample(tokenizer, sd: StageDir, issues: Issues, size: int = SAMPLE_VIDEOS, seed: int = 0,
                 progress: bool = False) -> tuple[dict, int, bool]:
    """``{lang: (rule tokens, tokenizer tokens, cues) per sampled track}``, videos read, and whether all were."""
    per: dict = {}
    videos, complete = 0, True
    units = _tar_units(sd)
    total = sum(int((u.stats or {}).get("samples") or 0) for u in units)
    expected = min(size, total)
    cue_cap = None if total <= size else SAMPLE_CUES
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=expected, unit="video", desc=f"tokenizing {sd.label}", file=sys.stderr, disable=None)
    try:
        for _, sample in _sampled_videos(sd, size, seed):
            doc = _subs(sample)
            if bar is not None:
                bar.update(1)
            if doc is None:
                continue
            videos += 1
            texts, owners = [], []
            for lang, track in doc.tracks.items():
                cues = [c[2] for c in (track or {}).get("cues") or [] if isinstance(c, (list, tuple)) and len(c) > 2]
                if cue_cap and len(cues) > cue_cap:
                    cues = cues[::math.ceil(len(cues) / cue_cap)]
                texts += [str(c) for c in cues]
                owners.append((lang, len(cues), sum(count_tokens(str(c), lang) for c in cues)))
            lengths = token_lengths(tokenizer, texts)
            pos = 0
            for lang, k, rule in owners:
                tok = sum(lengths[pos:pos + k])
                pos += k
                per.setdefault(lang, []).append((rule, tok, k))
    except ShardError as exc:
        complete = False
        issues.add("warning", sd.label, f"a shard could not be read while counting tokens ({exc}); the count "
                   "uses the videos read before it")
    if bar is not None:
        bar.close()
    return per, videos, complete and videos >= total


def ratio_estimate(rule: np.ndarray, tok: np.ndarray, rule_total: float, population: int) -> dict:
    """Tokenizer total estimated as (sum tok / sum rule) x ``rule_total``, with its standard error.

    The ratio estimator's variance: (1 - n/N) / (n * mean(rule)^2) * var(tok - R * rule).
    """
    n = len(rule)
    if not n or not rule.sum():
        return {"tokens": None, "se": None, "ratio": None}
    ratio = float(tok.sum() / rule.sum())
    if n < 2:
        return {"tokens": ratio * rule_total, "se": None, "ratio": ratio}
    resid = tok - ratio * rule
    fpc = max(0.0, 1 - n / max(population, n))
    var_ratio = fpc * resid.var(ddof=1) / (n * rule.mean() ** 2)
    return {"tokens": ratio * rule_total, "se": float(math.sqrt(var_ratio) * rule_total), "ratio": ratio}


def tokenizer_counts(tokenizer, name: str, sd: StageDir, per_lang: dict, issues: Issues,
                     size: int = SAMPLE_VIDEOS, progress: bool = False) -> dict:
    """Tokens per language by ``tokenizer``: exact when every video was read, else estimated from a sample."""
    started = time.time()
    per, videos, exact = count_sample(tokenizer, sd, issues, size=size, progress=progress)
    out = {"name": name, "sample_videos": videos, "exact": exact, "per_lang": {},
           "cues_per_track": None if exact else SAMPLE_CUES}
    for lang, d in per_lang.items():
        tracks = np.array(per.get(lang, []), dtype=float).reshape(-1, 3)
        rule, tok, cues = tracks[:, 0], tracks[:, 1], tracks[:, 2]
        entry = {"sample_tracks": len(tracks), "sample_tokens": float(tok.sum()), "sample_rule_tokens": float(rule.sum()),
                 "tokens_per_subtitle": float(tok.sum() / cues.sum()) if cues.sum() else None}
        if exact:
            entry.update(tokens=float(tok.sum()), se=0.0,
                         ratio=float(tok.sum() / rule.sum()) if rule.sum() else None)
        else:
            entry.update(ratio_estimate(rule, tok, d["tokens"], d["videos"]))
        entry["rel_error"] = (entry["se"] / entry["tokens"] if entry.get("se") is not None and entry.get("tokens")
                              else None)
        out["per_lang"][lang] = entry
    out["seconds"] = round(time.time() - started, 3)
    return out
