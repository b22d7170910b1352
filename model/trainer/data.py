"""The training and evaluation input: mmp/ shards -> clips -> token ids -> padded batches.

The pipeline is an explicit list of generator stages, as in webdataset and open_clip:

    shard list -> per-epoch seeded shuffle -> split by node -> split by worker
    -> tar samples (a counting, logging error handler) -> shuffle buffer
    -> clip sampling -> tokenise -> batch

The stream is endless (epoch after epoch), so ranks with uneven shares never leave
DDP waiting; training stops at ``--steps``. Every batch carries its worker's data
position (epoch, raw samples read in that epoch) and its counters, so a checkpoint
can record where each worker was and ``--resume`` skips what was already read
without decoding it.

A clip uses little of a sample, so only that little is decoded (``model.clips``: the
clip's feature rows, the subtitle tracks drawn) and tokenised (``model.trainer.tokens``: the
words that can reach ``max_text_len`` tokens, a batch at a time); this module holds
the stages and their order. ``bench/train.py`` measures the loader against reading the
same tars with tarfile alone.

Nothing is unpickled: members are decoded by name (``.json`` as JSON, ``.npy`` with
``allow_pickle=False``) and pickle-format members are refused. How shards are read and
which members are refused before they are read (links, ``..`` names, members over a size
cap, gzip not named so) is ``model.trainer.shard_stream``.
"""
from __future__ import annotations

import glob
import logging
import os
import random
from dataclasses import dataclass

import numpy as np

from shards.errors import UserError
from shards.members import DEFAULT_LIMITS, MemberLimits
from shards.samples import CAPTIONS_JSON, META_JSON, SUBS_JSON, Captions, SubsJson

from model.clips import ClipConfig, FeatureRows, _caption_clip, _pretrain_clip
from model.row_times import RowTimesError
from model.trainer.shard_stream import StreamState, tar_samples
from model.trainer.tokens import tokenize
from shards.codec import load_json

log = logging.getLogger("mmp.data")


class DataError(UserError):
    """A shard specification that cannot be used (empty list, glob matching nothing)."""


# ---------------------------------------------------------------------------- shard lists


def expand_shards(spec: str | list[str]) -> list[str]:
    """Shard names from brace patterns (``mmp-{000000..000099}.tar``), globs, paths and URLs.

    Several specs may be joined with ``::`` (webdataset's rule) or given as a list.
    A local brace pattern that names missing files is an error, as is a glob that
    matches nothing: both are usually a typo, and training on a silent subset is worse.
    """
    import braceexpand

    specs = spec if isinstance(spec, (list, tuple)) else str(spec).split("::")
    urls: list[str] = []
    for s in specs:
        s = s.strip()
        if not s:
            continue
        is_url = "://" in s or s.startswith("pipe:")
        for name in braceexpand.braceexpand(s):
            if is_url:
                urls.append(name)
            elif any(c in name for c in "*?["):
                matched = sorted(glob.glob(os.path.expanduser(name)))
                if not matched:
                    raise DataError(f"--shards: the glob {name!r} matches no file")
                urls += matched
            else:
                path = os.path.expanduser(name)
                if not os.path.exists(path):
                    raise DataError(f"--shards: {name} does not exist")
                if os.path.isdir(path):
                    found = sorted(glob.glob(os.path.join(path, "*.tar")))
                    if not found:
                        raise DataError(f"--shards: directory {name} holds no .tar shards")
                    urls += found
                else:
                    urls.append(path)
    if not urls:
        raise DataError("--shards names no shards; give e.g. 'DATA/mmp/mmp-{000000..000099}.tar'")
    return urls


def epoch_shards(urls: list[str], seed: int, start_epoch: int = 0):
    """Endless stream of ``(epoch, shards)``; each epoch's order is shuffled from (seed, epoch)."""
    epoch = start_epoch
    while True:
        order = list(urls)
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        yield epoch, order
        epoch += 1


def split_by_node(src, rank: int, world_size: int):
    """Each rank takes every world_size-th shard of each epoch (datatrove's ``files[rank::world]``)."""
    for epoch, shards in src:
        yield epoch, shards[rank::world_size]


def split_by_worker(src, worker: int, num_workers: int):
    for epoch, shards in src:
        yield epoch, shards[worker::num_workers]


# ---------------------------------------------------------------------------- samples


def shuffle(src, bufsize: int, rng: random.Random):
    """A shuffle buffer, as webdataset's (fill, then emit a random element per input), drained
    at each epoch's end so an epoch's samples never wait behind the next epoch's."""
    if bufsize <= 1:
        yield from src
        return
    buf, epoch = [], None
    for sample in src:
        if sample["__epoch__"] != epoch:
            rng.shuffle(buf)
            yield from buf
            buf, epoch = [], sample["__epoch__"]
        buf.append(sample)
        if len(buf) >= bufsize:
            i = rng.randrange(len(buf))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


@dataclass
class MemberLayout:
    """One chosen member as the first usable sample holds it: its width and its meta.json entry."""

    name: str
    width: int
    meta: dict  # meta.json features[name] (the recipe: output, output_dim, ...), {} when not recorded


def feature_layout(urls: list[str], members: tuple[str, ...], limit: int = 64,
                   limits: MemberLimits = DEFAULT_LIMITS, max_sample_bytes: int | None = None) -> list[MemberLayout]:
    """The chosen members' widths, in order, read from the first samples that carry them all."""
    state = StreamState()
    seen = 0
    for sample in tar_samples(iter([(0, urls)]), state, limits=limits, max_sample_bytes=max_sample_bytes):
        seen += 1
        try:
            rows = FeatureRows(sample, members)
            rows[0:1]  # the rows decode
        except (KeyError, ValueError):
            if seen >= limit:
                break
            continue
        try:
            features = load_json(sample[META_JSON]).get("features") if META_JSON in sample else None
        except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
            features = None
        features = features if isinstance(features, dict) else {}
        return [MemberLayout(name, int(a.shape[1]), features[name] if isinstance(features.get(name), dict) else {})
                for name, a in zip(members, rows.members)]
    raise DataError(f"no sample in the first {seen} of --shards carries all of --video-features "
                    f"{','.join(members)}; pick members the shards hold (r21d, s3d, regions)")


def feature_dim(urls: list[str], members: tuple[str, ...], limit: int = 64,
                limits: MemberLimits = DEFAULT_LIMITS, max_sample_bytes: int | None = None) -> int:
    """The video input dimension, read from the first samples that carry the chosen members."""
    return sum(m.width for m in feature_layout(urls, members, limit, limits, max_sample_bytes))


# ---------------------------------------------------------------------------- clip sampling


def sample_clips(src, cfg: ClipConfig, state: StreamState, seed: int):
    """Cut one training clip from each sample, decoding only what the clip uses (the feature
    rows of its window, the subtitle tracks it draws); unusable samples are counted, a
    meta.json whose rows-to-time mapping is malformed as ``skipped/bad_row_times``."""
    for sample in src:
        key = sample["__key__"]
        state.tried += 1
        rng = random.Random(f"{seed}/{sample['__epoch__']}/{key}")
        try:
            video = FeatureRows(sample, cfg.members)
            if cfg.task == "pretrain":
                if SUBS_JSON not in sample:
                    state.count("skipped/no_subs")
                    continue
                clip = _pretrain_clip(SubsJson.lazy(sample[SUBS_JSON]), video, cfg, rng)
            else:
                if CAPTIONS_JSON not in sample:
                    state.count("skipped/no_captions")
                    continue
                captions = Captions.from_member(sample[CAPTIONS_JSON])
                if captions.split_name != cfg.split:
                    state.count("skipped/other_split")
                    continue
                clip = _caption_clip(captions, video, cfg, rng)
        except KeyError as exc:
            state.count(f"skipped/missing_{exc.args[0]}")
            continue
        except RowTimesError as exc:
            state.count("skipped/bad_row_times")
            log.warning("skipping sample %s in %s: %s", key, sample.get("__url__"), exc)
            continue
        except (ValueError, UnicodeDecodeError, TypeError, IndexError, AttributeError, RecursionError) as exc:
            state.count("skipped/corrupt")
            log.warning("skipping sample %s in %s: %s", key, sample.get("__url__"), exc)
            continue
        if clip is None:
            state.count("skipped/no_text_in_langs")
            continue
        lang, text, pair, pair_lang, rows = clip
        state.count("samples/used")
        yield {"key": key, "lang": lang, "text": text, "pair": pair, "pair_lang": pair_lang, "video": rows,
               "rng": rng, "epoch": sample["__epoch__"]}


# ---------------------------------------------------------------------------- batches


def _pad(seqs: list[list[int]], pad_id: int):
    """``(ids, mask)`` as long tensors ``[B, longest]``, filled in numpy (a list of ints
    goes into a numpy row much faster than through ``torch.tensor``)."""
    import torch

    n = max(len(s) for s in seqs)
    ids = np.full((len(seqs), n), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), n), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def collate(samples: list[dict], pad_id: int) -> dict:
    """Pad text and video to the longest in the batch. Samples without a parallel text reuse
    their own text (and its masked copy) as the pair and are marked invalid: every term of
    the parallel text leaves them out."""
    import torch

    ids, mask = _pad([s["ids"] for s in samples], pad_id)
    noisy, _ = _pad([s["noisy_ids"] for s in samples], pad_id)
    pair_ids, pair_mask = _pad([s["pair_ids"] or s["ids"] for s in samples], pad_id)
    pair_noisy, _ = _pad([(s.get("pair_noisy_ids") or s["pair_ids"]) if s["pair_ids"] else s["noisy_ids"]
                          for s in samples], pad_id)
    t = max(len(s["video"]) for s in samples)
    f = samples[0]["video"].shape[1]
    # float16 as stored: half the bytes through the worker queues; the model widens it
    half = all(s["video"].dtype == np.float16 for s in samples)
    video = np.zeros((len(samples), t, f), dtype=np.float16 if half else np.float32)
    video_mask = np.zeros((len(samples), t), dtype=bool)
    frame_noise = np.zeros((len(samples), t), dtype=bool)
    for i, s in enumerate(samples):
        n = len(s["video"])
        video[i, :n] = s["video"]
        video_mask[i, :n] = True
        frame_noise[i, :n] = s["frame_noise"]
    return {
        "text_ids": ids, "text_mask": mask, "noisy_ids": noisy,
        "pair_ids": pair_ids, "pair_mask": pair_mask, "pair_noisy_ids": pair_noisy,
        "pair_valid": torch.tensor([s["pair_ids"] is not None for s in samples]),
        "video": torch.from_numpy(video), "video_mask": torch.from_numpy(video_mask),
        "frame_noise": torch.from_numpy(frame_noise),
        "keys": [s["key"] for s in samples], "langs": [s["lang"] for s in samples],
    }


def batched(src, batch_size: int, pad_id: int, state: StreamState, worker: int):
    """Full batches only (DDP needs equal shapes across ranks for the gathered losses).

    Each batch's position also says how many epochs of this worker's share are wholly in
    it and the batches before it (``epochs_done``, counted from epoch 0, so a resumed stream
    counts on). Whether a batch closes its epoch shows only in the sample after it, so a
    full batch is held until that sample arrives; its ``epoch``/``raw`` are taken when it
    fills, so a resume rereads the held sample rather than passing over it.
    """
    buf, ready = [], None
    for s in src:
        if ready is not None:
            batch, last = ready
            batch["position"]["epochs_done"] = max(s["epoch"], last)
            yield batch
            ready = None
        buf.append(s)
        if len(buf) == batch_size:
            batch = collate(buf, pad_id)
            batch["position"] = {"worker": worker, "epoch": state.epoch, "raw": state.raw}
            batch["counts"] = dict(state.counts)
            ready, buf = (batch, buf[-1]["epoch"]), []
    if ready is not None:  # the stream ended (a barren epoch): what it gave is whole
        batch, last = ready
        batch["position"]["epochs_done"] = last + 1
        yield batch


# ---------------------------------------------------------------------------- the dataset


def _iterable_dataset():
    import torch.utils.data

    return torch.utils.data.IterableDataset


class ClipStream(_iterable_dataset()):
    """An endless ``IterableDataset`` of batches for one rank; each DataLoader worker runs the
    whole pipeline over its share of the shards.

    ``positions`` (from a checkpoint) maps a worker id to ``(epoch, raw)``: that worker starts
    at that epoch and passes over the raw samples it had already read. Samples that were
    waiting in the shuffle buffer at the checkpoint are among those passed over, so a
    resume skips at most ``shuffle_buffer`` samples per worker and never repeats one.
    A worker without a position starts at ``start_epoch`` (a resume whose ranks or workers
    changed restarts the stream at the epoch it had reached, so the epoch count goes on).
    ``limits`` caps each tar member's size by its type (``MemberLimits.parse`` reads a flag),
    ``max_sample_bytes`` the members of one sample together (None: derived from ``limits``).
    """

    def __init__(self, urls, tokenizer, cfg: ClipConfig, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle_buffer: int = 100, positions: dict | None = None,
                 start_epoch: int = 0, limits: MemberLimits = DEFAULT_LIMITS, max_sample_bytes: int | None = None):
        self.urls, self.tokenizer, self.cfg = list(urls), tokenizer, cfg
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.shuffle_buffer = shuffle_buffer
        self.positions = {int(k): v for k, v in (positions or {}).items()}
        self.start_epoch = start_epoch
        self.limits, self.max_sample_bytes = limits, max_sample_bytes

    def pipeline(self, worker: int, num_workers: int):
        state = StreamState()
        epoch, raw = self.positions.get(worker, (self.start_epoch, 0))
        rng = random.Random(f"{self.seed}/{self.rank}/{worker}/{epoch}/{raw}")
        stages = [
            lambda _: epoch_shards(self.urls, self.seed, start_epoch=epoch),
            lambda src: split_by_node(src, self.rank, self.world_size),
            lambda src: split_by_worker(src, worker, num_workers),
            lambda src: _stop_on_empty(src),
            lambda src: tar_samples(src, state, skip={epoch: raw}, limits=self.limits,
                                    max_sample_bytes=self.max_sample_bytes),
            lambda src: shuffle(src, self.shuffle_buffer, rng),
            lambda src: sample_clips(src, self.cfg, state, self.seed),
            lambda src: tokenize(src, self.tokenizer, self.cfg, chunk=self.batch_size),
            lambda src: batched(src, self.batch_size, self.tokenizer.pad_token_id, state, worker),
        ]
        src = None
        for stage in stages:
            src = stage(src)
        return src

    def __iter__(self):
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.pipeline(worker, num_workers)


def _stop_on_empty(src):
    for epoch, shards in src:
        if not shards:
            return  # this worker has no share of the shards: it simply ends
        yield epoch, shards
