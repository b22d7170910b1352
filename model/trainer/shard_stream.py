"""Streaming samples out of tar shards for training and evaluation, with counted refusals.

A shard is read front to back once (``tarfile`` stream mode, a local file or any URL
``webdataset.gopen`` opens). It is a plain tar unless its name ends ``.tar.gz``/``.tgz``,
and then it is inflated here, so the bytes counted are the tar's own and the
end-of-archive check holds for both. Members are checked from their headers before a
byte of payload is read (``shards.members``): a link, an absolute or ``..`` name, or a
member over its type's size cap drops its sample, counted as ``skipped/unsafe_member``
or ``skipped/member_too_large``; a pickle-format member is dropped alone
(``skipped/pickle_member``). The members of one sample together are capped too, from their
headers (``default_sample_bytes``, ``--max-sample-mb``): a gzip of six members of zeros, each
under its cap, is ``skipped/sample_too_large`` at the member that crosses the cap, unread. A shard that ends without its end-of-archive marker is
truncated: the sample it was in the middle of is dropped (``skipped/truncated``).
"""
from __future__ import annotations

import gzip
import logging
import os
import tarfile
from collections import Counter
from dataclasses import dataclass, field

from shards.members import DEFAULT_LIMITS, BoundedTarInfo, MemberLimits, SampleGrouper, is_compressed_name

log = logging.getLogger("mmp.data")

# tarfile's stream mode slices its read buffer on every member read, so each read copies up
# to the buffer size: 1 MB made reading 5x slower than 64 kB, which is near the optimum
TAR_BUFSIZE = 1 << 16


@dataclass
class StreamState:
    """What one worker has read: counters by reason and its position in the epoch."""

    counts: Counter = field(default_factory=Counter)
    epoch: int = 0
    raw: int = 0  # samples read from tars in this epoch (before any filtering)
    tried: int = 0  # samples handed to clip sampling, all epochs
    epochs_read: int = 0

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n


def counting_handler(state: StreamState, url: str, exc: Exception) -> None:
    """Corrupt input is counted and logged, never fatal (webdataset's warn_and_continue, counted)."""
    state.count("error/shard")
    log.warning("skipping the rest of %s: %s", url, exc)


def barren(state: StreamState) -> bool:
    """True when the last epoch read nothing, or every sample of a full epoch was unusable:
    later epochs read the same shards, so the endless stream would spin without output."""
    return state.raw == 0 or (state.tried >= state.raw and state.counts["samples/used"] == 0)


def _open(url: str):
    if os.path.exists(url):
        return open(url, "rb")
    import webdataset

    return webdataset.gopen(url, "rb")


class _Counting:
    """A read-only stream that counts the bytes read through it."""

    def __init__(self, f):
        self.f, self.count = f, 0

    def read(self, n=-1):
        data = self.f.read(n)
        self.count += len(data)
        return data


def default_sample_bytes(limits: MemberLimits) -> int:
    """The most bytes one training sample may hold when no cap is given: what an mmp/ sample is
    made of at the member caps, two feature arrays (r21d, s3d) and two JSON members (meta.json,
    subs.json or captions.json). Every real sample is far below (a 5-minute video is about 1 MB)."""
    return 2 * limits.npy + 2 * limits.json


def shard_samples(url: str, epoch: int, state: StreamState, limits: MemberLimits = DEFAULT_LIMITS,
                  handler=counting_handler, max_sample_bytes: int | None = None):
    """Whole samples ``{"__key__", "__url__", "__epoch__", member: bytes}`` of one shard, in
    tar order. A sample is yielded once the next one starts, the last one once the
    end-of-archive marker is seen; an unreadable shard goes to ``handler``. ``max_sample_bytes``
    caps one sample's members together (None: ``default_sample_bytes(limits)``)."""
    def refused(key, name, reason):
        state.count(f"skipped/{name}")
        log.warning("%s: skipping sample %s: %s", url, key, reason)

    def pickled(info):
        state.count("skipped/pickle_member")
        log.warning("%s: refusing pickle-format member %s", url, info.name)

    cap = default_sample_bytes(limits) if max_sample_bytes is None else max_sample_bytes
    samples = SampleGrouper(limits, on_refused=refused, on_pickle=pickled,
                            extra={"__url__": url, "__epoch__": epoch}, max_sample_bytes=cap)
    try:
        with _open(url) as raw:
            # inflated here rather than by tarfile, so the count below is of tar bytes
            stream = _Counting(gzip.GzipFile(fileobj=raw, mode="rb") if is_compressed_name(url) else raw)
            with tarfile.open(fileobj=stream, mode="r|", bufsize=TAR_BUFSIZE, tarinfo=BoundedTarInfo) as tar:
                for info in tar:
                    tar.members = []  # tarfile keeps every header it reads; a shard may hold millions
                    if info.isfile() or info.issym() or info.islnk():
                        yield from samples.feed(info, lambda i: tar.extractfile(i).read())
                while stream.read(1 << 16):
                    pass
                if stream.count - tar.offset < 1024:
                    # tarfile ends quietly when a cut falls between members; a whole tar
                    # ends with two zero blocks, so their absence means a truncated shard
                    raise tarfile.ReadError("no end-of-archive marker (truncated)")
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        handler(state, url, exc)
        if samples.finish() is not None:
            state.count("skipped/truncated")
        return
    last = samples.finish()
    if last is not None:
        yield last


def tar_samples(src, state: StreamState, skip: dict | None = None, handler=counting_handler,
                limits: MemberLimits = DEFAULT_LIMITS, max_sample_bytes: int | None = None):
    """Samples ``{"__key__", "__url__", member: bytes}`` from each epoch's shards.

    ``skip`` maps an epoch to the number of raw samples to pass over (resume); they are
    read but not decoded. ``limits`` caps each member's size by its type, ``max_sample_bytes``
    the members of one sample together (None: ``default_sample_bytes(limits)``).
    """
    for epoch, shards in src:
        if state.epochs_read and barren(state):
            log.error("stopping: a whole epoch of %d samples gave no usable clip (%s)", state.raw, dict(state.counts))
            return
        state.epoch, state.raw = epoch, 0
        state.epochs_read += 1
        to_skip = (skip or {}).get(epoch, 0)
        for url in shards:
            for sample in shard_samples(url, epoch, state, limits, handler, max_sample_bytes):
                state.raw += 1
                if state.raw > to_skip:
                    yield sample
