"""``mmp-demo``: run every stage on the shipped sample, end to end, offline.

crawl -> align -> import -> extract features (random weights, said loudly) -> prepare a
downstream set -> pre-train a few steps -> fine-tune -> evaluate -> statistics report.

A local server on 127.0.0.1 stands in for YouTube and serves the sample
(``demo/sample.py``); the crawl reads saved info JSON whose URLs point at it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from shards.errors import command
from pipeline.runtime.cli import add_common_flags, parse_args
from demo.sample import build_sample
from demo.server import SampleServer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmp-demo", description="Run the pipeline end to end on the shipped sample, "
                                "offline. OUT gets one directory per stage: OUT/crawl, OUT/aligned, "
                                "OUT/imported/aligned, OUT/mmp, OUT/msrvtt, OUT/runs, OUT/reports.")
    p.add_argument("--out", type=Path, default=Path("data/demo"), help="where the demo dataset goes (default data/demo)")
    p.add_argument("--fresh", action="store_true", help="delete OUT first (otherwise the run resumes)")
    p.add_argument("--workers", type=int, default=2, help="worker processes per stage (default 2)")
    p.add_argument("--backbones", default="r21d,s3d",
                   help="feature backbones to extract (default both; r21d alone is about 3x faster on a CPU)")
    p.add_argument("--steps", type=int, default=20, help="pre-training steps (fine-tuning runs half as many)")
    p.add_argument("--skip-model", action="store_true", help="stop after the subtitle stages (no torch needed)")
    add_common_flags(p)
    return p


@command("mmp-demo")
def main(argv=None) -> int:
    args = parse_args(build_parser(), argv)
    out = args.out.resolve()
    if args.fresh and out.exists():
        shutil.rmtree(out)
    sample = out / "sample"
    started = time.time()
    from pipeline.crawl import stage as crawl

    try:
        with SampleServer(sample / "files") as server:
            (sample / "files").mkdir(parents=True, exist_ok=True)
            built = build_sample(sample, server.base_url)
            print(f"[demo] sample: {built['videos']} videos with subtitles ({built['video_files']} video files) "
                  f"served at {server.base_url}")
            _step("mmp-crawl", crawl.main,
                  ["--videos", built["list"], "--out", str(out / "crawl"), "--info-json", built["info_json"],
                   "--download-video", "--workers", str(args.workers), "--unit-size", "4",
                   "--budget-dir", str(out / ".budget"), "--retries", "1", "--backoff-base", "0.2",
                   # the local stand-in needs no politeness, and is on this machine: allowed by name
                   "--no-request-limit", "--sleep-subtitles", "0",
                   "--allow-host", f"127.0.0.1:{server.port}"], out / "crawl")
        return _after_crawl(out, args, sample, started)  # offline from here on
    except _StepFailed as exc:
        print(f"[demo] {exc}", file=sys.stderr)
        return exc.code


class _StepFailed(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _step(name: str, main, argv: list, verify_dir: Path | None = None) -> None:
    """Run one stage's CLI; a non-zero exit or shards mmp-verify rejects end the demo."""
    from shards.verify import main as verify

    rc = main(argv)
    if rc != 0:
        raise _StepFailed(f"{name} failed with exit code {rc}", rc)
    if verify_dir is not None and verify([str(verify_dir)]) != 0:
        raise _StepFailed(f"{name} wrote shards that mmp-verify rejects: {verify_dir}", 1)


def _after_crawl(out: Path, args, sample: Path, started: float) -> int:
    from pipeline.subtitles.stage import main as align_main
    from pipeline.release.importer import main as import_main
    from demo.sample import write_release_sample
    from pipeline.stats.stage import main as stats_main

    _step("mmp-align", align_main, ["--crawl", str(out / "crawl"), "--out", str(out / "aligned"),
                                    "--workers", str(args.workers)], out / "aligned")
    # The published files are a first-class source too: a tiny release in the Multi-HT100M layout.
    release = write_release_sample(sample / "release")
    _step("mmp-import", import_main, ["multi-ht100m", "--captions", str(release),
                                      "--out", str(out / "imported" / "aligned"),
                                      "--partitions", "2", "--workers", "1"], out / "imported" / "aligned")
    stages = ["crawl", "aligned", "imported/aligned"]
    if not args.skip_model:
        _features_and_model(out, args, stages)
    _step("mmp-stats", stats_main, ["--data", str(out), "--out", str(out / "reports"), "--no-progress"])
    print(f"[demo] done in {time.time() - started:.1f}s. Outputs:")
    for stage in stages:
        prefix = "mmp" if stage == "msrvtt" else stage.split("/")[-1]
        print(f"  {out / stage}/   ({prefix}-NNNNNN.tar / .parquet / .stats.json, config.json, logs/)")
    for extra in ("pretrain", "finetune", "eval.json"):
        if (out / "runs" / extra).exists():
            print(f"  {out / 'runs' / extra}")
    print(f"[demo] report: {out / 'reports' / 'report.html'}  (open it in a browser; also report.md, stats.json)")
    return 0


def _features_and_model(out: Path, args, stages: list) -> None:
    """Extract features (random weights), pre-train a few steps, fine-tune, evaluate."""
    from features.extract import main as extract_main

    print("[demo] " + "!" * 78)
    print("[demo] mmp-extract-features with RANDOM WEIGHTS (no checkpoints can be downloaded here):")
    print("[demo] the features, and every number the model below reports, are meaningless.")
    print("[demo] Real runs: --weights r21d=r2plus1d_34_clip8_ig65m_*.pth s3d=s3d_howto100m.pth")
    print("[demo] " + "!" * 78)
    _step("mmp-extract-features", extract_main,
          ["--aligned", str(out / "aligned"), "--video-dir", str(out / "crawl"), "--out", str(out / "mmp"),
           "--gpus", "0", "--random-weights", "--backbones", args.backbones,
           "--workers", str(args.workers), "--decode-workers", "1"], out / "mmp")
    stages.append("mmp")

    # A downstream set in MSR-VTT's own file format, made from the same videos, so the
    # fine-tuning and retrieval path runs as it does on the real sets.
    msrvtt = _msrvtt_from_demo(out / "mmp", out / "sample" / "msrvtt", args.backbones.split(","))
    from pipeline.downstream.prepare import main as prepare_main

    _step("mmp-prepare", prepare_main,
          ["msrvtt", str(msrvtt / "MSRVTT_data.json"), "--split", "all",
           "--translations", str(msrvtt / "translations.json"), "--out", str(out / "msrvtt"),
           "--features", *[f"{b}={msrvtt / b}" for b in args.backbones.split(",")],
           "--workers", "1", "--no-progress"], out / "msrvtt")
    stages.append("msrvtt")

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from model.tiny import build_text_model

    print("[demo] text encoder: a TINY RANDOM BERT with a tokenizer trained on the sample's text "
          "(real runs: --text-model xlm-roberta-large or bert-base-multilingual-cased)")
    texts = [line for lang in _sample_texts().values() for line in lang]
    text_model = build_text_model(out / "runs" / "tiny-text-model", texts, vocab_size=1200)
    common = ["--text-model", str(text_model), "--text-output-layer", "2", "--text-trainable-layers", "2",
              "--video-features", args.backbones, "--d-model", "128", "--dropout", "0.1",
              "--device", "cpu", "--threads", "1", "--loader-workers", "0", "--no-progress", "--resume"]
    from model.trainer.train import main as train_main

    _step("mmp-train (pre-training)", train_main,
          ["--task", "pretrain", "--shards", str(out / "mmp"), "--out", str(out / "runs" / "pretrain"),
           "--steps", str(args.steps), "--batch-size", "4", "--ckpt-every", str(args.steps), *common])
    finetune_steps = str(max(1, args.steps // 2))
    _step("mmp-train (fine-tuning)", train_main,
          ["--task", "finetune", "--init", str(out / "runs" / "pretrain"), "--langs", "en", "--split", "train",
           "--shards", str(out / "msrvtt"), "--out", str(out / "runs" / "finetune"),
           "--steps", finetune_steps, "--batch-size", "4", "--ckpt-every", finetune_steps, *common])
    from model.trainer.evaluate import main as eval_main

    _step("mmp-eval", eval_main, ["--shards", str(out / "msrvtt"), "--ckpt", str(out / "runs" / "finetune"),
                                  "--split", "test", "--out", str(out / "runs" / "eval.json"),
                                  "--device", "cpu", "--threads", "1"])


def _sample_texts() -> dict:
    from demo.sample import load_texts

    by_lang: dict = {}
    for topic in load_texts().values():
        for lang, lines in topic.items():
            if isinstance(lines, list):
                by_lang.setdefault(lang, []).extend(lines)
    return by_lang


def _msrvtt_from_demo(mmp: Path, dest: Path, backbones: list) -> Path:
    """MSR-VTT-format annotations (``MSRVTT_data.json`` + 9-language translations) and
    per-video feature files for the demo's videos: their subtitles become the captions."""
    import json

    import numpy as np

    from shards.codec import load_json, load_npy
    from shards.reader import iter_stage_samples
    from shards.samples import SUBS_JSON, feature_member

    for b in backbones:
        (dest / b).mkdir(parents=True, exist_ok=True)
    videos, sentences, translations = [], [], {}
    for _, sample in iter_stage_samples(mmp, "mmp"):
        vid = sample["__key__"]
        subs = load_json(sample[SUBS_JSON])
        tracks = subs.get("tracks", {})
        if "en" not in tracks or not tracks["en"].get("cues"):
            continue
        for b in backbones:
            np.save(dest / b / f"{vid}.npy", load_npy(sample[feature_member(b)]).astype(np.float32), allow_pickle=False)
        split = "test" if len(videos) % 2 else "train"  # every other video is held out for mmp-eval
        videos.append({"video_id": vid, "split": split, "category": 0, "start time": 0.0,
                       "end time": float(subs.get("duration") or 0.0)})
        for lang, track in tracks.items():
            caps = [" ".join(c[2] for c in track.get("cues", [])[i:i + 2]) for i in (0, 2)]
            caps = [c for c in caps if c]
            if lang == "en":
                sentences += [{"video_id": vid, "caption": c, "sen_id": len(sentences) + i} for i, c in enumerate(caps)]
            elif caps:
                translations.setdefault(lang, {})[vid] = caps
    (dest / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    (dest / "translations.json").write_text(json.dumps(translations, ensure_ascii=False))
    return dest


if __name__ == "__main__":
    sys.exit(main())
