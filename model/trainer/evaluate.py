"""mmp-eval: text->video retrieval, R@1/5/10 and median rank per query language.

    mmp-eval --shards 'DATA/msrvtt/mmp-*.tar' --ckpt RUN --langs en,de,fr --out results.json

Every caption of the chosen split (``captions.json``) in a query language is a query;
the gallery is every video of the split. The table has one row per query language and
the average over languages, as the paper's Table 4.

R@K depends on the gallery's size, so a pool smaller than the benchmark's (a video with
no usable features is not in the shards, or lacks a member the checkpoint reads) gives
numbers that are not comparable to published ones. ``mmp-prepare`` writes each split's
size into ``meta.json``; the pool evaluated and that size are in the results (printed
and JSON, ``pool``), a WARNING line says when they differ, and ``--require-complete``
refuses such a run. The median rank is the usual one: the mean of the two middle ranks
for an even number of queries.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from shards.errors import command
from pipeline.runtime.cli import add_common_flags, parse_args
from pipeline.runtime.langs import add_langs_flag
from shards.samples import CAPTIONS_JSON, LANGS, META_JSON, Captions

from model.clips import TASK_SETTINGS

log = logging.getLogger("mmp.eval")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmp-eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shards", required=True, help="downstream shards (brace pattern, glob, directory, paths, URLs)")
    p.add_argument("--ckpt", required=True, type=Path,
                   help="a checkpoint file, or a run directory (its latest); RUN/best.pt is the run's best on "
                        "its validation split (mmp-train --val-shards)")
    add_langs_flag(p, default=LANGS, help="the query languages (those present are used)")
    p.add_argument("--split", default="test", help="the captions.json split evaluated")
    p.add_argument("--require-complete", action="store_true",
                   help="refuse (exit 2) when fewer videos of the split are evaluated than the split holds (as "
                   "recorded by mmp-prepare), e.g. 995 of MSR-VTT 1k-A's 1,000")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--text-model", help="where the checkpoint's text model (its tokenizer) is now, if it moved")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-text-len", type=int, default=TASK_SETTINGS["finetune"][1])
    p.add_argument("--max-video-len", type=int, default=TASK_SETTINGS["finetune"][2])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    from model.trainer.run_setup import MEMBER_MB_HELP, SAMPLE_MB_HELP

    p.add_argument("--max-member-mb", metavar="KIND=MB,...", help=MEMBER_MB_HELP)
    p.add_argument("--max-sample-mb", type=float, metavar="MB", help=SAMPLE_MB_HELP)
    add_common_flags(p)
    return p


def retrieval_metrics(queries, videos, target) -> dict:
    """R@1/5/10 (percent) and median rank (1-based) of each query's video among ``videos``.

    ``queries`` [Q, D] and ``videos`` [V, D] are normalised embeddings, ``target`` [Q] the
    index of each query's video. Ties count against the query (the pessimistic rank). The
    median of an even number of ranks is the mean of the two middle ones (``np.median``;
    ``torch.median`` would give the lower one).
    """
    import torch

    queries, videos = torch.as_tensor(queries).float(), torch.as_tensor(videos).float()
    target = torch.as_tensor(target, dtype=torch.long)
    sims = queries @ videos.t()
    positive = sims.gather(1, target[:, None])
    ranks = (sims >= positive).sum(1)  # the positive itself counts once
    ranks_f = ranks.float()
    return {"R@1": 100 * (ranks_f <= 1).float().mean().item(), "R@5": 100 * (ranks_f <= 5).float().mean().item(),
            "R@10": 100 * (ranks_f <= 10).float().mean().item(), "MdR": median_rank(ranks),
            "queries": int(len(queries)), "videos": int(len(videos))}


def median_rank(ranks) -> float:
    """The median of 1-based ranks; for an even count, the mean of the two middle ranks."""
    import numpy as np

    return float(np.median(np.asarray(ranks, dtype=np.float64)))


def even_rows(video, max_len: int):
    """At most ``max_len`` rows spread evenly over the video (deterministic, for evaluation).
    ``video`` is an array or a ``model.clips.FeatureRows``, of which only those rows are copied."""
    import numpy as np

    from model.clips import FeatureRows

    if len(video) <= max_len:
        return video[:]
    index = np.linspace(0, len(video) - 1, max_len).round().astype(int)
    return video.take(index) if isinstance(video, FeatureRows) else video[index]


def load_split(urls, members, split: str, langs, max_video_len: int, limits=None, max_sample_bytes=None):
    """Videos of the split and the captions per language:
    ``(keys, videos, {lang: [(text, index)]}, counts, pool)``.

    ``pool``: ``{"videos", "expected", "expected_from", "in_shards", "benchmark"}``: the split's size as
    mmp-prepare recorded it in ``meta.json`` (``split_videos``), else the split's samples
    found in the shards, usable or not."""
    from collections import Counter

    from model.clips import FeatureRows
    from model.row_times import RowTimesError
    from model.trainer.shard_stream import StreamState, tar_samples
    from shards.codec import load_json

    state = StreamState()
    keys, videos, queries, counts = [], [], {l: [] for l in langs}, Counter()
    in_shards, recorded, benchmarks = 0, Counter(), Counter()
    for sample in tar_samples(iter([(0, urls)]), state, max_sample_bytes=max_sample_bytes,
                              **({"limits": limits} if limits else {})):
        if CAPTIONS_JSON not in sample:
            counts["skipped/no_captions"] += 1
            continue
        try:
            caps = Captions.from_member(sample[CAPTIONS_JSON])
            if caps.split != split:
                continue
            in_shards += 1
            meta = _meta(sample, load_json)
            if isinstance(meta.get("split_videos"), int):
                recorded[meta["split_videos"]] += 1
            if isinstance(meta.get("benchmark"), str):
                benchmarks[meta["benchmark"]] += 1
            video = even_rows(FeatureRows(sample, members), max_video_len)
        except KeyError as exc:
            counts[f"skipped/missing_{exc.args[0]}"] += 1
            continue
        except RowTimesError as exc:
            counts["skipped/bad_row_times"] += 1
            log.warning("skipping %s: %s", sample["__key__"], exc)
            continue
        except (ValueError, UnicodeDecodeError, AttributeError) as exc:
            counts["skipped/corrupt"] += 1
            log.warning("skipping %s: %s", sample["__key__"], exc)
            continue
        index = len(videos)
        keys.append(sample["__key__"])
        videos.append(video)
        for lang in langs:
            for text in caps.by_lang().get(lang) or []:
                queries[lang].append((text, index))
    counts.update(state.counts)
    if recorded:  # shards of one mmp-prepare run agree; mixed runs: the largest split is the gallery to compare
        expected, source = max(max(recorded), in_shards), META_JSON
    else:
        expected, source = in_shards, "shards"
    pool = {"videos": len(videos), "expected": expected, "expected_from": source, "in_shards": in_shards,
            "benchmark": benchmarks.most_common(1)[0][0] if benchmarks else None}
    return keys, videos, {l: q for l, q in queries.items() if q}, dict(counts), pool


def _meta(sample: dict, load_json) -> dict:
    try:
        meta = load_json(sample[META_JSON]) if META_JSON in sample else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def pool_warning(pool: dict, split: str) -> str | None:
    """The line saying the pool is smaller than the split, or None when it is whole."""
    if pool["expected"] is None or pool["videos"] >= pool["expected"]:
        return None
    against = f"the paper's {pool['benchmark']}" if pool["benchmark"] else f"results over the whole {split} split"
    return (f"WARNING: {pool['videos']} of {pool['expected']} {split} videos have features: R@K is over a pool of "
            f"{pool['videos']}, not comparable to {against}")


def evaluate(args) -> dict:
    import torch

    from model.checkpoint import load_checkpoint, load_weights
    from model.trainer.data import DataError, expand_shards, feature_dim
    from model.mmp import MMPConfig, build_model
    from pipeline.runtime.hub import TextModelError, load_tokenizer
    from model.trainer.distributed import pick_device
    from model.trainer.run_setup import check_video_dim, member_limits, sample_bytes

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    urls = expand_shards(args.shards)
    ck = load_checkpoint(args.ckpt)
    cfg = MMPConfig.from_json(ck["model_config"])
    members = tuple(cfg.video_features)
    limits = member_limits(args.max_member_mb)
    max_sample = sample_bytes(args.max_sample_mb, limits)
    check_video_dim(cfg, feature_dim(urls, members, limits=limits, max_sample_bytes=max_sample), members,
                    f"the checkpoint {ck['path']}")
    langs = list(args.langs)
    keys, videos, queries, counts, pool = load_split(urls, members, args.split, langs, args.max_video_len, limits,
                                                     max_sample)
    if not videos:
        raise DataError(f"--shards hold no video of split {args.split!r} with --video-features "
                        f"{','.join(members)} (counts: {counts})")
    if not queries:
        raise DataError(f"--shards hold no {args.split!r} caption in --langs {','.join(langs)}")
    pool["complete"] = pool["videos"] >= pool["expected"]
    if args.require_complete and not pool["complete"]:
        skipped = ", ".join(f"{k.split('/', 1)[1]}={v}" for k, v in sorted(counts.items()) if k.startswith("skipped/"))
        raise DataError(f"--require-complete: {pool['videos']} of {pool['expected']} {args.split} videos have features: "
                        f"{pool['expected'] - pool['in_shards']} are not in --shards (their mmp-prepare parquet rows say "
                        f"why), {pool['in_shards'] - pool['videos']} were skipped here ({skipped or 'none'})")
    if args.text_model:
        cfg.text_model = args.text_model
    try:
        tokenizer = load_tokenizer(cfg.text_model)
    except TextModelError as exc:
        if args.text_model:
            raise
        raise TextModelError(f"the checkpoint's text model {cfg.text_model} cannot be loaded "
                             f"({str(exc).split(': ', 1)[-1]}); give its place with --text-model DIR") from None
    model = build_model(cfg)
    load_weights(model, ck["model"], ck["path"])
    device = pick_device(args.device, 0)
    model.to(device).eval()

    results, average = retrieve(model, tokenizer, videos, queries, batch_size=args.batch_size,
                                max_text_len=args.max_text_len, device=device)
    pool["warning"] = pool_warning(pool, args.split)
    return {"checkpoint": ck["path"], "step": int(ck["step"]), "split": args.split, "videos": len(videos),
            "pool": pool, "query_langs": list(results),
            "video_features": list(members), "languages": results, "average": average, "counts": counts}


def embed_videos(model, videos, batch_size: int, device):
    """Video embeddings [V, D] (float, on the CPU) of ``videos``, lists of feature rows."""
    import torch

    out = []
    for i in range(0, len(videos), batch_size):
        chunk = videos[i:i + batch_size]
        t = max(len(v) for v in chunk)
        x = torch.zeros(len(chunk), t, chunk[0].shape[1])
        m = torch.zeros(len(chunk), t, dtype=torch.bool)
        for j, v in enumerate(chunk):
            x[j, :len(v)] = torch.from_numpy(v)
            m[j, :len(v)] = True
        out.append(model.embed_video(x.to(device), m.to(device)).float().cpu())
    return torch.cat(out)


def embed_texts(model, tokenizer, texts, batch_size: int, max_text_len: int, device):
    """Text embeddings [Q, D] (float, on the CPU) of ``texts``."""
    import torch

    from model.trainer.data import _pad

    out = []
    for i in range(0, len(texts), batch_size):
        ids = [tokenizer(text, truncation=True, max_length=max_text_len)["input_ids"] for text in texts[i:i + batch_size]]
        ids, mask = _pad(ids, tokenizer.pad_token_id)
        out.append(model.embed_text(ids.to(device), mask.to(device)).float().cpu())
    return torch.cat(out)


def retrieve(model, tokenizer, videos, queries, *, batch_size: int, max_text_len: int, device):
    """Text->video retrieval of ``queries`` (``{lang: [(text, video index)]}``, as ``load_split``
    gives them) among ``videos``: ``({lang: metrics}, average over languages)``. The model is
    used as it is (the caller puts it in eval mode); no gradient is kept. The trainer's
    validation calls this too, so its scores are mmp-eval's."""
    import torch

    with torch.inference_mode():
        v_emb = embed_videos(model, videos, batch_size, device)
        results = {}
        for lang, items in queries.items():
            q_emb = embed_texts(model, tokenizer, [text for text, _ in items], batch_size, max_text_len, device)
            results[lang] = retrieval_metrics(q_emb, v_emb, [index for _, index in items])
    metrics = ("R@1", "R@5", "R@10", "MdR")
    average = {m: sum(r[m] for r in results.values()) / len(results) for m in metrics}
    return results, average


def format_table(res: dict) -> str:
    pool = res.get("pool") or {}
    size = f"pool of {res['videos']} videos"
    if pool.get("expected") is not None and pool["expected"] != res["videos"]:
        size += f" (the split holds {pool['expected']}: INCOMPLETE)"
    lines = [f"text->video retrieval, split {res['split']}, {size}, checkpoint step {res['step']}",
             f"{'lang':<6}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'MdR':>8}{'queries':>9}"]
    for lang in res["query_langs"]:
        r = res["languages"][lang]
        lines.append(f"{lang:<6}{r['R@1']:>8.1f}{r['R@5']:>8.1f}{r['R@10']:>8.1f}{r['MdR']:>8.1f}{r['queries']:>9d}")
    a = res["average"]
    lines.append(f"{'avg':<6}{a['R@1']:>8.1f}{a['R@5']:>8.1f}{a['R@10']:>8.1f}{a['MdR']:>8.1f}")
    if pool.get("warning"):
        lines.append(pool["warning"])
    return "\n".join(lines)


@command("mmp-eval")
def main(argv=None) -> int:
    from model.trainer.run_dir import check_writable
    from model.trainer.run_setup import check_flags
    from shards.errors import output_errors
    from shards.writer import atomic_write_json

    args = parse_args(build_parser(), argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    check_flags(args)  # the numbers first, then the output: both before any shard or checkpoint is read
    if args.out is not None:
        check_writable(args.out.parent, args.out)
    res = evaluate(args)
    print(format_table(res))
    if args.out is not None:
        with output_errors(args.out):
            atomic_write_json(args.out, res)
        print(f"mmp-eval: results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
