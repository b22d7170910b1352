"""Validation during mmp-train: the split is read on rank 0 and scored with mmp-eval's code."""
from __future__ import annotations

from model.trainer.distributed import broadcast_object
from model.trainer.run_setup import ConfigError, check_video_dim, member_limits, sample_bytes

def load_validation(opts, cfg, members, max_video_len: int, rank: int, world: int):
    """The validation split ``(videos, queries)`` on rank 0 (None elsewhere, and without
    --val-shards); every rank raises the same ConfigError when it cannot be used."""
    from model.trainer.data import DataError, expand_shards, feature_dim
    from model.trainer.evaluate import load_split

    if not opts.val_shards:
        return None
    val, err = None, None
    if rank == 0:
        try:
            urls = expand_shards(opts.val_shards)
            limits = member_limits(opts.max_member_mb)
            max_sample = sample_bytes(opts.max_sample_mb, limits)
            check_video_dim(cfg, feature_dim(urls, members, limits=limits, max_sample_bytes=max_sample), members,
                            "the model")
            langs = list(opts.langs)
            _, videos, queries, counts, _ = load_split(urls, members, opts.val_split, langs, max_video_len,
                                                       limits, max_sample)
            if not videos or not queries:
                err = (f"--val-shards hold no {opts.val_split!r} video with --video-features {','.join(members)} "
                       f"and a caption in --langs {','.join(langs)} (counts: {counts}); pick the split with --val-split")
            val = (videos, queries)
        except (DataError, ConfigError) as exc:
            err = str(exc).replace("--shards", "--val-shards")
    err = broadcast_object(err, world)
    if err:
        raise ConfigError(err)
    return val


def validate(model, tokenizer, val, max_text_len: int, device) -> dict:
    """Text->video retrieval on the validation split, averaged over its query languages, with
    ``rsum`` = R@1 + R@5 + R@10 (the paper's model selection)."""
    from model.trainer.evaluate import retrieve

    videos, queries = val
    model.eval()
    try:
        results, average = retrieve(model, tokenizer, videos, queries, batch_size=64, max_text_len=max_text_len,
                                    device=device)
    finally:
        model.train()
    scores = {k: round(v, 4) for k, v in average.items()}
    scores["rsum"] = round(average["R@1"] + average["R@5"] + average["R@10"], 4)
    scores["queries"] = sum(r["queries"] for r in results.values())
    scores["videos"] = len(videos)
    return scores

