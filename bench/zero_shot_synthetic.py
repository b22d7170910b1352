"""The paper's main claim in miniature: zero-shot cross-lingual retrieval after English-only fine-tuning.

    python bench/zero_shot_synthetic.py                # 3 seeds, about 10 minutes on a 2-core CPU
    python bench/zero_shot_synthetic.py --quick        # 1 seed, fewer steps: a smoke run of under 2 minutes

For each seed the planted-structure corpus (``bench/synthetic.py``: concepts shown by noisy
video features, captions in 9 synthetic languages) is written as real mmp shards, a tiny
BERT and WordPiece tokenizer are built from its text (``model/tiny.py``), and every row
goes through the real ``mmp-train`` and ``mmp-eval``:

- no pre-training: English fine-tuning from the random model;
- MP: English-only pre-training (``pretrain_en/``), then English fine-tuning;
- MMP (inter,intra): pre-training on all 9 languages' subtitles with the paper's MMP
  objective, then English fine-tuning. The headline row;
- MMP + xling: the same with the visually-pivoted cross-lingual term on the parallel
  subtitles (``--losses inter,intra,xling``), then English fine-tuning;
- MMP, no fine-tuning (for both pre-trainings): the pre-trained checkpoint scored as it is.

Every row is asked text->video R@1 on ``eval/`` in each language (mean +- sample std over
seeds, R@1 as a fraction; chance is 1 / videos).

The corpus is built so that the comparison could come out either way. If the languages
shared no words, the baselines could not leave chance whatever they learnt; so 40% of the
concepts are loanwords spelt alike in the Latin-script languages (``--cognates``), which a
model fine-tuned on English alone can use, as mBERT and XLM-R use shared subwords; ru and
zh have none. If fine-tuning and test videos looked like pre-training's, MMP's pre-training
alone would solve the test; so their features come from prototypes moved away from
pre-training's (``--downstream-shift`` 0.8: the new prototype keeps sqrt(0.2) of the old),
and the no-fine-tuning rows show how much of MMP's score pre-training alone gives. What is
then measured is whether cross-lingual alignment learnt in pre-training survives English
fine-tuning on other features, and how it compares with the transfer shared words give.

The numbers measure this toy corpus and a 32-wide text encoder, never the paper's models:
the shape of the result, not its size.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (row key, label, pre-training or None, fine-tuned): every row is scored on the same eval/ videos
ARMS = (("none", "no pre-training", None, True),
        ("mp", "MP (English pre-training)", "mp", True),
        ("mmp", "MMP (inter,intra)", "mmp", True),
        ("mmp_xling", "MMP + xling", "mmp_xling", True),
        ("mmp_noft", "MMP, no fine-tuning", "mmp", False),
        ("mmp_xling_noft", "MMP + xling, no fine-tuning", "mmp_xling", False))
# pre-training runs: shards, languages, --losses
PRETRAIN = {"mp": ("pretrain_en", "en", "inter,intra"),
            "mmp": ("pretrain", None, "inter,intra"),
            "mmp_xling": ("pretrain", None, "inter,intra,xling")}
HEADLINE, BASELINES = "mmp", ("none", "mp")
NON_EN = "non-en avg"


class BenchError(Exception):
    """Settings that cannot run, or a trainer/evaluator call that failed (its log is named)."""


@dataclass
class BenchConfig:
    seeds: tuple = (0, 1, 2)
    pretrain_steps: int = 600  # fits the time budget with three pre-trainings per seed
    finetune_steps: int = 200
    batch_size: int = 32  # pre-training and fine-tuning alike: 32 negatives per NCE term
    lr: float = 1e-3  # tiny heads from scratch want more than the paper's 2e-4 (a 1024-wide model)
    temperature: float = 0.1  # the paper's
    d_model: int = 64
    heads: int = 4
    head_layers: int = 2
    text_hidden: int = 32  # the tiny BERT's width; 2 layers, all trained (--text-trainable-layers 2)
    vocab_size: int = 3000  # upper bound; the corpus' distinct words and pieces fit whole
    max_text_len: int = 64
    max_video_len: int = 16  # a synthetic video has 8..16 feature rows
    threads: int = 1  # torch threads per call; the 2-core machine is shared
    corpus: dict = field(default_factory=dict)  # extra keyword arguments of write_synthetic_corpus

    def check(self) -> None:
        if not self.seeds:
            raise BenchError("give at least one seed")
        for name in ("pretrain_steps", "finetune_steps", "batch_size", "d_model", "heads", "head_layers",
                     "text_hidden", "vocab_size", "max_text_len", "max_video_len", "threads"):
            if getattr(self, name) < 1:
                raise BenchError(f"--{name.replace('_', '-')} must be at least 1")
        if self.d_model % self.heads:
            raise BenchError(f"--d-model {self.d_model} must be divisible by --heads {self.heads}")
        if self.lr <= 0 or self.temperature <= 0:
            raise BenchError("--lr and --temperature must be positive")


QUICK = dict(seeds=(0,), pretrain_steps=250, finetune_steps=80)


def _call(fn, argv: list[str], log: Path) -> None:
    """Run a CLI ``main(argv)`` with its stdout in ``log``; a non-zero exit is a BenchError."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f, contextlib.redirect_stdout(f):
        rc = fn(argv)
    if rc != 0:
        raise BenchError(f"{fn.__module__} {' '.join(argv)} exited with {rc} (stdout in {log}; error on stderr)")


def _common(cfg: BenchConfig, seed: int) -> list[str]:
    return ["--video-features", "s3d", "--device", "cpu", "--threads", str(cfg.threads), "--loader-workers", "0",
            "--no-progress", "--ckpt-every", "1000000", "--keep", "1", "--seed", str(seed),
            "--batch-size", str(cfg.batch_size), "--lr", str(cfg.lr),
            "--max-text-len", str(cfg.max_text_len), "--max-video-len", str(cfg.max_video_len)]


def _evaluate(corpus: dict, ckpt: Path, out: Path, cfg: BenchConfig) -> dict:
    """R@1 per language (a fraction), queries per language and the number of videos."""
    from model.trainer.evaluate import main as evaluate

    _call(evaluate, ["--shards", corpus["shards"]["eval"], "--ckpt", str(ckpt), "--split", "test",
                     "--langs", ",".join(corpus["summary"]["langs"]), "--device", "cpu",
                     "--threads", str(cfg.threads), "--max-text-len", str(cfg.max_text_len),
                     "--max-video-len", str(cfg.max_video_len), "--out", str(out)], out.with_suffix(".log"))
    res = json.loads(out.read_text())
    return {"R@1": {lang: round(r["R@1"] / 100, 4) for lang, r in res["languages"].items()},  # percent -> fraction
            "queries": {lang: r["queries"] for lang, r in res["languages"].items()}, "videos": res["videos"]}


def run_seed(corpus: dict, text_model: Path, runs: Path, cfg: BenchConfig, seed: int, tick=None) -> dict:
    """Every row of ARMS for one seed: each pre-training once, its checkpoint scored as it is and after
    English fine-tuning; ``{row: {"R@1", "queries", "videos", "seconds", losses}}``."""
    from model.trainer.train import main as train

    model = ["--text-model", str(text_model), "--d-model", str(cfg.d_model), "--heads", str(cfg.heads),
             "--head-layers", str(cfg.head_layers), "--dropout", "0", "--text-output-layer", "2",
             "--text-trainable-layers", "2", "--temperature", str(cfg.temperature)]
    all_langs = ",".join(corpus["summary"]["langs"])
    records, pretrained = {}, {}
    for key, _, pre, finetuned in ARMS:
        run = runs / key
        shutil.rmtree(run, ignore_errors=True)  # never resume a stale run with other settings
        record = {"seconds": {}, "pretrain": pre, "finetuned": finetuned}
        start = model
        if pre is not None:
            if pre not in pretrained:
                part, langs, losses = PRETRAIN[pre]
                out = runs / f"pretrain-{pre}"
                shutil.rmtree(out, ignore_errors=True)
                t = time.perf_counter()
                _call(train, ["--shards", corpus["shards"][part], "--out", str(out), "--task", "pretrain",
                              "--langs", langs or all_langs, "--losses", losses, "--steps", str(cfg.pretrain_steps)]
                      + _common(cfg, seed) + model, runs / f"pretrain-{pre}.log")
                pretrained[pre] = {"dir": out, "seconds": round(time.perf_counter() - t, 2),
                                   "final": json.loads((out / "summary.json").read_text())["final"]}
                record["seconds"]["pretrain"] = pretrained[pre]["seconds"]
            record["pretrain_final"] = pretrained[pre]["final"]
            start = ["--init", str(pretrained[pre]["dir"])]
        ckpt = pretrained[pre]["dir"] if pre is not None else None
        if finetuned:
            t = time.perf_counter()
            _call(train, ["--shards", corpus["shards"]["finetune"], "--out", str(run / "finetune"),
                          "--task", "finetune", "--langs", "en", "--split", "train", "--steps", str(cfg.finetune_steps)]
                  + _common(cfg, seed) + start, run / "finetune.log")
            record["seconds"]["finetune"] = round(time.perf_counter() - t, 2)
            record["finetune_final"] = json.loads((run / "finetune" / "summary.json").read_text())["final"]
            ckpt = run / "finetune"
        t = time.perf_counter()
        run.mkdir(parents=True, exist_ok=True)
        record.update(_evaluate(corpus, ckpt, run / "results.json", cfg))
        record["seconds"]["evaluate"] = round(time.perf_counter() - t, 2)
        records[key] = record
        if tick is not None:
            tick(key)
    return records


def summarise(per_seed: dict, langs: list[str]) -> dict:
    """``{arm: {column: {"mean", "std", "values"}}}`` over seeds; the non-English average is
    taken per seed first, so its std is the spread of that average."""
    table = {}
    for arm, *_ in ARMS:
        rows = [per_seed[s][arm]["R@1"] for s in per_seed]
        columns = {lang: [r[lang] for r in rows] for lang in langs}
        columns[NON_EN] = [statistics.fmean(r[l] for l in langs if l != "en") for r in rows]
        table[arm] = {c: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                          "values": v} for c, v in columns.items()}
    return table


def format_table(result: dict) -> str:
    langs, table = result["langs"], result["table"]
    columns = langs + [NON_EN]
    n = len(result["config"]["seeds"])
    width = max(len(label) for _, label, *_ in ARMS) + 2
    lines = [f"zero-shot text->video R@1 on eval/ after English-only fine-tuning, or none where a row says so "
             f"(mean ± std over {n} seed{'s' * (n > 1)}; {result['videos']} videos, one caption per language)",
             f"{'arm':<{width}}" + "".join(f"{c:>12}" for c in columns)]
    for arm, label, *_ in ARMS:
        lines.append(f"{label:<{width}}" + "".join(
            f"{table[arm][c]['mean']:.3f}±{table[arm][c]['std']:.3f}".rjust(12) for c in columns))
    e = result["effect"]
    lines.append(f"MMP (inter,intra) minus the better of no pre-training and MP, non-English average: "
                 f"{e['mmp_minus_best_other']:+.3f}±{e['mmp_minus_best_other_std']:.3f} "
                 f"(MMP above both in {e['seeds_mmp_above_both']} of {n} seeds); "
                 f"fine-tuning adds {e['finetune_gain']:+.3f} to MMP's")
    return "\n".join(lines)


def run_benchmark(workdir: Path, cfg: BenchConfig, progress: bool = True) -> dict:
    """Every seed and arm; the result (table, per-seed numbers, losses, timings, settings) as a dict."""
    from bench.synthetic import write_synthetic_corpus
    from model.tiny import build_text_model

    cfg.check()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a "Loading weights" bar per call would bury the table
    except ImportError:
        pass
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cfg.seeds) * len(ARMS), desc="zero-shot bench", unit="arm")
    started = time.perf_counter()
    per_seed, runs, langs, videos = {}, {}, None, None
    try:
        for seed in cfg.seeds:
            base = Path(workdir) / f"seed{seed}"
            try:
                corpus = write_synthetic_corpus(base / "corpus", seed, **cfg.corpus)
            except ValueError as exc:
                raise BenchError(f"synthetic corpus: {exc}") from exc
            langs = corpus["summary"]["langs"]
            texts = Path(corpus["tokenizer_corpus"]).read_text(encoding="utf-8").splitlines()
            text_model = build_text_model(base / f"text-h{cfg.text_hidden}-v{cfg.vocab_size}", texts,
                                          hidden=cfg.text_hidden, layers=2, dropout=0.0, vocab_size=cfg.vocab_size)
            if bar is not None:
                bar.set_postfix(seed=seed)
            runs[seed] = run_seed(corpus, text_model, base / "runs", cfg, seed,
                                  tick=(lambda _key: bar.update(1)) if bar is not None else None)
            per_seed[seed] = {arm: {"R@1": r["R@1"]} for arm, r in runs[seed].items()}
            videos = next(iter(runs[seed].values()))["videos"]
    finally:
        if bar is not None:
            bar.close()
    table = summarise(per_seed, langs)
    best_other = [max(table[b][NON_EN]["values"][i] for b in BASELINES) for i in range(len(cfg.seeds))]
    mmp = table[HEADLINE][NON_EN]["values"]
    diffs = [m - b for m, b in zip(mmp, best_other)]
    gains = [m - z for m, z in zip(mmp, table[f"{HEADLINE}_noft"][NON_EN]["values"])]
    effect = {"mmp_minus_best_other": statistics.fmean(diffs),
              "mmp_minus_best_other_std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
              "seeds_mmp_above_both": sum(d > 0 for d in diffs), "finetune_gain": statistics.fmean(gains)}
    return {"metric": "text->video R@1 (fraction of queries whose video ranks first; ties count against)",
            "arms": {key: label for key, label, *_ in ARMS}, "langs": langs, "columns": langs + [NON_EN], "videos": videos,
            "table": table, "effect": effect, "per_seed": {str(s): v for s, v in per_seed.items()},
            "runs": {str(s): v for s, v in runs.items()}, "config": asdict(cfg),
            "seconds": round(time.perf_counter() - started, 1), "threads": cfg.threads, "cores": os.cpu_count()}


def build_parser() -> argparse.ArgumentParser:
    d = BenchConfig()
    p = argparse.ArgumentParser(
        prog="python bench/zero_shot_synthetic.py", description=__doc__.split("\n\n")[0],
        epilog="Runs no pre-training, MP, MMP and MMP's controls through mmp-train and mmp-eval on a "
               "planted-structure corpus; see the module docstring.")
    p.add_argument("--out", type=Path, default=Path("bench_results/zero_shot_synthetic.json"),
                   help="write the table, per-seed numbers, losses and timings here as JSON (default %(default)s)")
    p.add_argument("--workdir", type=Path,
                   help="keep corpora, text models, runs and logs here (default: a temporary directory, removed)")
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke run of under 2 minutes: seed 0 only, {QUICK['pretrain_steps']} pre-training and "
                        f"{QUICK['finetune_steps']} fine-tuning steps (explicit flags below still win)")
    p.add_argument("--seeds", help=f"comma-separated corpus and training seeds (default {','.join(map(str, d.seeds))})")
    p.add_argument("--pretrain-steps", type=int, help=f"steps of MP and MMP pre-training (default {d.pretrain_steps})")
    p.add_argument("--finetune-steps", type=int, help=f"steps of English fine-tuning (default {d.finetune_steps})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="global batch of every pre-training and fine-tuning run (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate of every run (default %(default)s)")
    p.add_argument("--temperature", type=float, default=d.temperature, help="NCE temperature (default %(default)s)")
    p.add_argument("--d-model", type=int, default=d.d_model,
                   help="joint embedding and pooling-head width (default %(default)s)")
    p.add_argument("--heads", type=int, default=d.heads, help="attention heads per pooling head (default %(default)s)")
    p.add_argument("--head-layers", type=int, default=d.head_layers,
                   help="Transformer layers per pooling head (default %(default)s)")
    p.add_argument("--text-hidden", type=int, default=d.text_hidden,
                   help="width of the tiny BERT (default %(default)s)")
    p.add_argument("--vocab-size", type=int, default=d.vocab_size,
                   help="WordPiece vocabulary limit (default %(default)s)")
    p.add_argument("--threads", type=int, default=d.threads,
                   help="torch CPU threads per trainer/evaluator call (default %(default)s)")
    p.add_argument("--pretrain-videos", type=int, default=400,
                   help="synthetic corpus: pre-training videos (default %(default)s)")
    p.add_argument("--noise", type=float, default=1.0, help="synthetic corpus: feature noise std (default %(default)s)")
    p.add_argument("--cognates", type=float, default=0.4,
                   help="synthetic corpus: share of concepts spelt as in English in every Latin-script language "
                        "(default %(default)s)")
    p.add_argument("--downstream-shift", type=float, default=0.8,
                   help="synthetic corpus: how far fine-tuning/eval features move from pre-training's, 0..1 "
                        "(default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args) -> BenchConfig:
    base = QUICK if args.quick else {}
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip()) if args.seeds else \
            base.get("seeds", BenchConfig.seeds)
    except ValueError:
        raise BenchError(f"--seeds must be comma-separated integers (got {args.seeds!r})") from None
    return BenchConfig(
        seeds=seeds,
        pretrain_steps=args.pretrain_steps if args.pretrain_steps is not None else
        base.get("pretrain_steps", BenchConfig.pretrain_steps),
        finetune_steps=args.finetune_steps if args.finetune_steps is not None else
        base.get("finetune_steps", BenchConfig.finetune_steps),
        batch_size=args.batch_size, lr=args.lr, temperature=args.temperature, d_model=args.d_model,
        heads=args.heads, head_layers=args.head_layers, text_hidden=args.text_hidden, vocab_size=args.vocab_size,
        threads=args.threads, corpus={"pretrain_videos": args.pretrain_videos, "noise": args.noise,
                                              "cognates": args.cognates, "downstream_shift": args.downstream_shift})


def main(argv=None) -> int:
    import logging

    from shards.writer import atomic_write_json

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args)
        cfg.check()
        print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, torch threads {cfg.threads}; "
              f"seeds {','.join(map(str, cfg.seeds))}, {cfg.pretrain_steps} pre-training and {cfg.finetune_steps} "
              f"fine-tuning steps per arm")
        if args.workdir is not None:
            result = run_benchmark(args.workdir, cfg, progress=not args.no_progress)
        else:
            with tempfile.TemporaryDirectory(prefix="mmp-zero-shot-") as tmp:
                result = run_benchmark(Path(tmp), cfg, progress=not args.no_progress)
    except BenchError as exc:
        print(f"zero_shot_synthetic: error: {exc}", file=sys.stderr)
        return 2
    result["command"] = " ".join(["python", "bench/zero_shot_synthetic.py"] + list(argv if argv is not None
                                                                                     else sys.argv[1:]))
    print(format_table(result))
    print(f"wall time {result['seconds']:.0f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
