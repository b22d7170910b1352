"""Reading work units back: samples from a tar, rows from a parquet file.

Nothing here unpickles: members come back as bytes, decoded by ``shards.codec``
(JSON as such, ``.npy`` with ``allow_pickle=False``). Paths may be local or fsspec URLs
(``shards.storage``). A tar is read as a plain tar unless its name says gzip; members
are checked from their headers before their payload is read (``shards.members``), and
a tar that ends without its end-of-archive marker is truncated.
"""
from __future__ import annotations

import gzip
import logging
import tarfile
from contextlib import contextmanager
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from shards.errors import UserError
from shards.layout import UnitFiles, completed_units
from shards.members import DEFAULT_LIMITS, BoundedTarInfo, MemberLimits, SampleGrouper, is_compressed_name
from shards.storage import RemotePath, as_path

log = logging.getLogger("mmp.shards")

END_OF_ARCHIVE = b"\0" * 1024


class ShardError(UserError):
    """A shard that cannot be read (truncated, not a tar, ...)."""


@contextmanager
def _open_tar(path):
    path = as_path(path)
    with path.open("rb") if isinstance(path, RemotePath) else open(path, "rb") as f:
        # inflated only when the name says so: a gzip stream named .tar is not a tar
        inner = gzip.GzipFile(fileobj=f, mode="rb") if is_compressed_name(path.name) else f
        with tarfile.open(fileobj=inner, mode="r:", tarinfo=BoundedTarInfo) as tar:
            yield tar


def _log_refusal(key: str, reason: str) -> None:
    log.warning("skipping sample %s: %s", key, reason)


def iter_samples(path, limits: MemberLimits = DEFAULT_LIMITS, on_refused=_log_refusal,
                 on_skipped=None) -> Iterator[dict]:
    """Yield one dict per sample: ``{"__key__": key, member: bytes, ...}``, in tar order.

    A sample holding a member that is unsafe (a link, an absolute or ``..`` name), over
    its type's size cap, or one member too many, is not yielded: ``on_refused(key, reason)``
    is told instead, and the refused member's payload is never read. A reader that can do
    without a member passes ``on_skipped(key, member, size, reason)``: then a member over its
    cap is passed over, unread, that call is made before its sample is yielded, and the sample
    comes with its other members (with none when it held no other).
    """
    def pickled(info):
        raise ShardError(f"{path}: member {info.name!r} is a pickle format; refusing to read it")

    try:
        with _open_tar(path) as tar:
            samples = SampleGrouper(limits, on_refused=lambda key, _, reason: on_refused(key, reason),
                                    on_pickle=pickled, on_skipped=on_skipped)
            for info in tar:
                tar.members = []  # tarfile keeps every header it reads; a shard may hold millions
                if info.isfile() or info.issym() or info.islnk():
                    yield from samples.feed(info, lambda i: tar.extractfile(i).read())
            tar.fileobj.seek(tar.offset)
            if tar.fileobj.read(len(END_OF_ARCHIVE)) != END_OF_ARCHIVE:
                # tarfile stops quietly at a cut between members or at a damaged header;
                # a whole tar ends with two zero blocks
                raise ShardError(f"{path}: no end-of-archive marker after byte {tar.offset} (truncated or damaged)")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ShardError(f"{path}: {exc}") from exc
    last = samples.finish()
    if last is not None:
        yield last


# What pyarrow raises for a parquet file it cannot read (not parquet, truncated, a damaged page,
# gone): ArrowInvalid (a ValueError), OSError, other ArrowExceptions. Anything else is a bug.
UNREADABLE_PARQUET = (pa.ArrowException, OSError, ValueError)


def read_rows(path) -> list[dict]:
    path = as_path(path)
    if isinstance(path, RemotePath):
        with path.open("rb") as f:
            return pq.read_table(f).to_pylist()
    return pq.read_table(path).to_pylist()


def read_unit(files: UnitFiles) -> tuple[list[dict], dict, str | None]:
    """A completed unit as (parquet rows, ``{key: sample}``, the tar's error or None).

    The rows are the unit's ledger; an unreadable tar leaves the samples empty and says
    why, so a later stage records each video's failure instead of losing the unit.
    """
    rows = read_rows(files.parquet)
    try:
        samples = {s.pop("__key__"): s for s in iter_samples(files.tar)}
    except ShardError as exc:
        return rows, {}, str(exc)
    return rows, samples, None


def iter_stage_samples(directory, prefix: str) -> Iterator[tuple[UnitFiles, dict]]:
    """Every sample of every completed unit of a stage."""
    for unit in completed_units(directory, prefix):
        for sample in iter_samples(unit.tar):
            yield unit, sample
