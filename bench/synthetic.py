"""A planted-structure corpus for the zero-shot cross-lingual benchmark, as real ``mmp/`` shards.

The paper's claim in miniature: after English-only fine-tuning, multilingual multimodal
pre-training transfers retrieval to other languages better than English-only pre-training
or none. For that to be a measurement rather than a construction, the corpus gives the
baselines something to transfer with and keeps pre-training from solving the test:

- K concepts. Each has a fixed random prototype per feature member; a video is a
  sequence of concept spans, and feature row t is the prototype of the concept shown
  in second t plus Gaussian noise.
- A domain shift: ``finetune/`` and ``eval/`` draw their features from other prototypes,
  ``sqrt(1 - s) * pretrain prototype + sqrt(s) * a fresh one`` (``downstream_shift`` s), as
  HowTo100M clips differ from MSR-VTT's. A pre-trained model scored without fine-tuning
  meets features only partly like those it learnt (at s = 1, unrelated ones), so English
  fine-tuning has to re-fit the video side, and pre-training cannot solve the test alone.
- 9 synthetic languages. Each names each concept with its own word, built from its own
  consonants (its own script for ru and zh), and has its own filler words; digits and the
  full stop are shared and say nothing. A share of the concepts (``cognates``) are
  loanwords: one spelling, the English one, in every Latin-script language (not ru, zh).
  They are what mBERT's shared subwords are to real languages: a way for a model that
  never saw a language paired with video to understand some of it.
- ``pretrain/``: subtitles (the aligned ``subs.json`` layout) in every language; the cue
  over second t names the concept shown in second t, in every language at once.
  ``pretrain_en/``: the same videos with the English track only (the MP baseline).
- ``finetune/``: other videos, English captions naming their concepts in order (split
  ``train``). ``eval/``: other videos again, one caption per language (split ``test``),
  with concept sets unique within the set so retrieval has one right answer.
- ``tokenizer_corpus.txt``: every distinct text, one per line, to build a tokenizer from.

Everything is drawn from generators seeded by ``seed`` (and the video's index), so the
same seed gives the same samples.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from shards.layout import MMP, UnitFiles
from shards.writer import UnitWriter, atomic_write_bytes, atomic_write_json

from pipeline.downstream.prepare import SCHEMA
from shards.codec import npy_bytes
from shards.samples import CAPTIONS_JSON, META_JSON, SUBS_JSON, feature_member

from bench.synthetic_words import (LANGS, PARTS, SHARED_TOKENS, Lexicon, cognate_concepts, make_lexicons,
                                   sentence)


@dataclass
class Video:
    video_id: str
    seconds: int
    spans: list  # [(start, end, concept)], covering [0, seconds)
    features: dict = field(default_factory=dict)  # member name -> float16 [seconds, dim]

    @property
    def per_second(self) -> list[int]:
        return [c for s, e, c in self.spans for _ in range(s, e)]


def make_video(video_id: str, rng: np.random.Generator, cfg: "SyntheticConfig", n_concepts: int,
               prototypes: dict, concepts: list[int] | None = None) -> Video:
    seconds = int(rng.integers(cfg.min_seconds, cfg.max_seconds + 1))
    if concepts is None:
        concepts = [int(c) for c in rng.choice(cfg.concepts, size=n_concepts, replace=False)]
    n = min(len(concepts), seconds // 2)
    concepts = concepts[:n]
    lengths = 2 + rng.multinomial(seconds - 2 * n, [1 / n] * n)  # every concept shown at least 2 s
    spans, start = [], 0
    for c, length in zip(concepts, lengths):
        spans.append((start, start + int(length), c))
        start += int(length)
    video = Video(video_id, seconds, spans)
    rows = np.array(video.per_second)
    for name, proto in prototypes.items():
        noise = rng.standard_normal((seconds, proto.shape[1])) * cfg.noise
        video.features[name] = (proto[rows] + noise).astype(np.float16)
    return video


def subtitles(video: Video, lexicons: dict[str, Lexicon], rng: np.random.Generator) -> dict:
    """The aligned ``subs.json``: per concept span one or two cues naming it, in every language."""
    times = []
    for s, e, c in video.spans:
        if e - s >= 4:
            m = (s + e) // 2
            times += [(s, m, c), (m, e, c)]
        else:
            times.append((s, e, c))
    tracks = {lang: {"kind": "asr" if lang == "en" else "translated", "source_lang": "en", "cues": []}
              for lang in lexicons}
    segments = []
    for s, e, c in times:
        text = {lang: sentence(lex, [c], rng) for lang, lex in lexicons.items()}
        for lang in lexicons:
            tracks[lang]["cues"].append([float(s), float(e), text[lang]])
        segments.append({"start": float(s), "end": float(e), "text": text})
    return {"video_id": video.video_id, "duration": float(video.seconds), "tracks": tracks, "segments": segments}


def english_only(subs: dict) -> dict:
    return {"video_id": subs["video_id"], "duration": subs["duration"], "tracks": {"en": subs["tracks"]["en"]},
            "segments": [{"start": g["start"], "end": g["end"], "text": {"en": g["text"]["en"]}}
                         for g in subs["segments"]]}


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int
    concepts: int = 24  # K: how many things videos can show
    langs: tuple = LANGS
    pretrain_videos: int = 400
    finetune_videos: int = 200
    eval_videos: int = 100
    min_seconds: int = 8
    max_seconds: int = 16
    concepts_per_video: int = 3  # downstream videos show exactly this many; pre-training 2..this+1
    feature_dims: tuple = (("s3d", 32),)  # members and widths; the trainer reads widths from the data
    noise: float = 1.0  # std of the per-second Gaussian noise around a concept's unit-variance prototype
    finetune_captions: int = 3  # English captions per fine-tuning video
    videos_per_unit: int = 100
    cognates: float = 0.4  # share of concepts spelt as in English in every Latin-script language
    downstream_shift: float = 0.8  # finetune/eval prototypes: sqrt(1-s) * pretrain + sqrt(s) * fresh


def meta(video: Video, split: str) -> dict:
    return {"video_id": video.video_id, "dataset": "synthetic", "split": split, "duration": float(video.seconds),
            "concepts": video.per_second,
            "features": {name: {"file": None, "sha256": hashlib.sha256(a.tobytes()).hexdigest(),
                                "rows": int(a.shape[0]), "dim": int(a.shape[1])} for name, a in video.features.items()}}


def row(video: Video, split: str, langs: list[str], captions: int, parallel: int = 0) -> dict:
    return {"video_id": video.video_id, "dataset": "synthetic", "split": split, "status": "ok", "error": None,
            "languages": sorted(langs), "captions": captions, "parallel": parallel,
            "feature_rows": video.seconds, "features": sorted(video.features), "duration": float(video.seconds)}


def write_units(directory: Path, samples: list[tuple[str, dict, dict]], per_unit: int) -> list[Path]:
    """Write (key, members, parquet row) triples as mmp units; units already complete are kept."""
    directory.mkdir(parents=True, exist_ok=True)
    tars = []
    for index, start in enumerate(range(0, len(samples), per_unit)):
        files = UnitFiles(directory, "mmp", index)
        tars.append(files.tar)
        if files.is_complete():
            continue
        for tmp in files.temporaries():
            tmp.unlink(missing_ok=True)
        with UnitWriter(files, SCHEMA, MMP) as writer:
            for key, members, parquet_row in samples[start:start + per_unit]:
                writer.write_sample(key, members)
                writer.add_row(parquet_row)
    return tars


def shard_pattern(directory: Path, units: int) -> str:
    return str(directory / f"mmp-{{000000..{units - 1:06d}}}.tar") if units > 1 else str(directory / "mmp-000000.tar")


def build(cfg: SyntheticConfig):
    """The corpus in memory: lexicons, videos with their texts, per part."""
    lexicons = make_lexicons(cfg.langs, cfg.concepts, cfg.seed, cfg.cognates)
    proto_rng = np.random.default_rng([cfg.seed, 0, 99])
    prototypes = {name: proto_rng.standard_normal((cfg.concepts, dim)) for name, dim in cfg.feature_dims}
    fresh_rng = np.random.default_rng([cfg.seed, 0, 98])
    s = cfg.downstream_shift
    downstream = {name: np.sqrt(1 - s) * proto + np.sqrt(s) * fresh_rng.standard_normal(proto.shape)
                  for name, proto in prototypes.items()}
    parts: dict[str, list] = {"pretrain": [], "finetune": [], "eval": []}
    for i in range(cfg.pretrain_videos):
        rng = np.random.default_rng([cfg.seed, PARTS["pretrain"], i])
        k = int(rng.integers(2, cfg.concepts_per_video + 2))
        video = make_video(f"pt{i:06d}", rng, cfg, k, prototypes)
        parts["pretrain"].append((video, subtitles(video, lexicons, rng)))
    for i in range(cfg.finetune_videos):
        rng = np.random.default_rng([cfg.seed, PARTS["finetune"], i])
        video = make_video(f"ft{i:06d}", rng, cfg, cfg.concepts_per_video, downstream)
        caps = [sentence(lexicons["en"], [c for _, _, c in video.spans], rng) for _ in range(cfg.finetune_captions)]
        parts["finetune"].append((video, {"en": caps}))
    taken = set()
    for i in range(cfg.eval_videos):
        rng = np.random.default_rng([cfg.seed, PARTS["eval"], i])
        for _ in range(1000):  # a concept set no other eval video has
            concepts = [int(c) for c in rng.choice(cfg.concepts, size=cfg.concepts_per_video, replace=False)]
            if frozenset(concepts) not in taken:
                break
        else:
            raise ValueError(f"{cfg.eval_videos} eval videos need more distinct concept sets; raise concepts")
        video = make_video(f"ev{i:06d}", rng, cfg, cfg.concepts_per_video, downstream, concepts)
        taken.add(frozenset(c for _, _, c in video.spans))
        shown = [c for _, _, c in video.spans]
        parts["eval"].append((video, {lang: [sentence(lex, shown, rng)] for lang, lex in lexicons.items()}))
    return lexicons, {"pretrain": prototypes, "downstream": downstream}, parts


def write_synthetic_corpus(out: Path, seed: int, *, concepts: int = 24, langs=LANGS, pretrain_videos: int = 400,
                           finetune_videos: int = 200, eval_videos: int = 100, min_seconds: int = 8,
                           max_seconds: int = 16, concepts_per_video: int = 3, feature_dims=None,
                           noise: float = 1.0, finetune_captions: int = 3, videos_per_unit: int = 100,
                           cognates: float = 0.4, downstream_shift: float = 0.8) -> dict:
    """Write the corpus under ``out`` and return its paths and a summary (see the module docstring).

    Re-running with the same arguments keeps the units already written; an ``out`` holding a
    corpus made with other arguments is refused (ValueError) rather than mixed.
    """
    langs = tuple(langs)
    if "en" not in langs:
        raise ValueError("langs must include 'en': fine-tuning and the MP baseline are English")
    if min_seconds < 2 * concepts_per_video or max_seconds < min_seconds:
        raise ValueError("need 2 * concepts_per_video <= min_seconds <= max_seconds (a concept is shown at least 2 s)")
    cfg = SyntheticConfig(seed=seed, concepts=concepts, langs=langs, pretrain_videos=pretrain_videos,
                          finetune_videos=finetune_videos, eval_videos=eval_videos, min_seconds=min_seconds,
                          max_seconds=max_seconds, concepts_per_video=concepts_per_video,
                          feature_dims=tuple(sorted((feature_dims or {"s3d": 32}).items())), noise=noise,
                          finetune_captions=finetune_captions, videos_per_unit=videos_per_unit,
                          cognates=cognates, downstream_shift=downstream_shift)
    if not 0.0 <= downstream_shift <= 1.0:
        raise ValueError("downstream_shift must be between 0 (pre-training's features) and 1 (unrelated ones)")
    if not 0.0 <= cognates <= 1.0:
        raise ValueError("cognates is a share of the concepts, between 0 and 1")
    if concepts < concepts_per_video + 1:
        raise ValueError("concepts must exceed concepts_per_video")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "synthetic.json"
    config = json.loads(json.dumps(asdict(cfg)))
    if config_path.exists() and json.loads(config_path.read_text()).get("config") != config:
        raise ValueError(f"{out} holds a synthetic corpus made with other arguments; choose a new directory")
    atomic_write_json(config_path, {"config": config})

    lexicons, _, parts = build(cfg)
    texts: dict[str, None] = {}
    words_by_lang: dict[str, set] = {lang: set() for lang in langs}
    pretrain, pretrain_en, finetune, evaluation = [], [], [], []
    for video, subs in parts["pretrain"]:
        feats = {feature_member(n): npy_bytes(a) for n, a in video.features.items()}
        en = english_only(subs)
        for lang, track in subs["tracks"].items():
            texts.update((c[2], None) for c in track["cues"])
            words_by_lang[lang].update(w for c in track["cues"] for w in c[2].split())
        cues = sum(len(t["cues"]) for t in subs["tracks"].values())
        pretrain.append((video.video_id, {**feats, SUBS_JSON: subs, META_JSON: meta(video, "pretrain")},
                         row(video, "pretrain", list(subs["tracks"]), cues)))
        pretrain_en.append((video.video_id, {**feats, SUBS_JSON: en, META_JSON: meta(video, "pretrain")},
                            row(video, "pretrain", ["en"], len(en["tracks"]["en"]["cues"]))))
    for part, split, target in (("finetune", "train", finetune), ("eval", "test", evaluation)):
        for video, caps in parts[part]:
            for lang, lines in caps.items():
                texts.update((t, None) for t in lines)
                words_by_lang[lang].update(w for t in lines for w in t.split())
            parallel = [{lang: lines[0] for lang, lines in caps.items()}] if len(caps) > 1 else []
            captions = {"video_id": video.video_id, "split": split, "captions": caps, "parallel": parallel}
            members = {**{feature_member(n): npy_bytes(a) for n, a in video.features.items()},
                       CAPTIONS_JSON: captions, META_JSON: meta(video, split)}
            target.append((video.video_id, members,
                           row(video, split, list(caps), sum(len(c) for c in caps.values()), len(parallel))))

    dirs = {"pretrain": out / "pretrain", "pretrain_en": out / "pretrain_en", "finetune": out / "finetune",
            "eval": out / "eval"}
    shards = {}
    for name, samples in (("pretrain", pretrain), ("pretrain_en", pretrain_en), ("finetune", finetune),
                          ("eval", evaluation)):
        tars = write_units(dirs[name], samples, videos_per_unit) if samples else []
        shards[name] = shard_pattern(dirs[name], len(tars)) if tars else None
    corpus = out / "tokenizer_corpus.txt"
    atomic_write_bytes(corpus, ("\n".join(texts) + "\n").encode("utf-8"))

    tokens = words_by_lang
    overlap = max((len(tokens[a] & tokens[b]) / len(tokens[a] | tokens[b])
                   for i, a in enumerate(langs) for b in langs[i + 1:]), default=0.0)
    summary = {
        "seed": seed, "concepts": concepts, "langs": list(langs), "feature_dims": dict(cfg.feature_dims),
        "videos": {"pretrain": len(pretrain), "finetune": len(finetune), "eval": len(evaluation)},
        "seconds": {"pretrain": sum(v.seconds for v, _ in parts["pretrain"])},
        "texts": len(texts), "shared_tokens": SHARED_TOKENS, "downstream_shift": downstream_shift,
        "cognates": {str(c): lexicons["en"].concepts[c] for c in cognate_concepts(concepts, cognates, seed)},
        "max_vocabulary_overlap": round(overlap, 4),  # largest Jaccard of two languages' token sets
    }
    result = {"out": str(out), "dirs": {k: str(v) for k, v in dirs.items()}, "shards": shards,
              "tokenizer_corpus": str(corpus), "summary": summary,
              "lexicon": {lang: {"concepts": lex.concepts, "fillers": lex.fillers, "connector": lex.connector}
                          for lang, lex in lexicons.items()}}
    atomic_write_json(config_path, {"config": config, **result})
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.synthetic",
        description="Write the planted-structure corpus (pretrain/, pretrain_en/, finetune/, eval/ mmp shards and "
        "tokenizer_corpus.txt) used by bench/zero_shot_synthetic.py.")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concepts", type=int, default=24)
    p.add_argument("--pretrain-videos", type=int, default=400)
    p.add_argument("--finetune-videos", type=int, default=200)
    p.add_argument("--eval-videos", type=int, default=100)
    p.add_argument("--dim", type=int, default=32, help="width of s3d.npy")
    p.add_argument("--noise", type=float, default=1.0)
    p.add_argument("--cognates", type=float, default=0.4,
                   help="share of concepts spelt as in English in every Latin-script language")
    p.add_argument("--downstream-shift", type=float, default=0.8,
                   help="how far finetune/eval features move from pre-training's (0: not at all, 1: unrelated)")
    args = p.parse_args(argv)
    try:
        result = write_synthetic_corpus(args.out, args.seed, concepts=args.concepts, pretrain_videos=args.pretrain_videos,
                                        finetune_videos=args.finetune_videos, eval_videos=args.eval_videos,
                                        feature_dims={"s3d": args.dim}, noise=args.noise, cognates=args.cognates,
                                        downstream_shift=args.downstream_shift)
    except ValueError as exc:
        print(f"synthetic: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"shards": result["shards"], "summary": result["summary"]}, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
