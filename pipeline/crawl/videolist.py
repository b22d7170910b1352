"""Reading the list of videos to crawl: CSV, TSV, Parquet, or a plain list of ids or URLs.

The HowTo100M CSV (``video_id,category_1,category_2,rank,task_id``) is read as is;
its other columns travel with each video. Ids are validated here, before they can
reach yt-dlp or a path; invalid ones are kept so that they get an ``invalid_id`` row.

The list is a regular file up to ``MAX_LIST_BYTES`` (a FIFO, a device or a larger file is a
one-sentence ``UserError`` before any work), read as a stream: memory holds its entries, not
copies of its text.
"""
from __future__ import annotations

import csv
import io
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import parse_qs, urlparse

from shards.bounded import UnreadableInput, open_regular
from shards.errors import UserError
from shards.layout import is_valid_video_id

# HowTo100M_v1.csv (1.24M videos) is 60 MB and its entries take about 0.8 GB: room for lists four times
# its size, whose entries still fit a planner's memory.
MAX_LIST_BYTES = 256 << 20
ID_COLUMNS = ("video_id", "videoid", "youtube_id", "ytid", "id", "url", "video_url", "link")
_YT_PATH = re.compile(r"^/(?:shorts|embed|v|live|e)/([^/?#]+)")


@dataclass
class VideoEntry:
    raw: str                      # as written in the input
    video_id: str | None          # the 11-character id, or None if none could be read
    meta: dict = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.video_id is not None and is_valid_video_id(self.video_id)


def parse_video_ref(ref: str) -> str | None:
    """An id from an id or a URL (watch?v=, youtu.be/, /shorts/, /embed/, or ``.../ID.mp4``)."""
    ref = (ref or "").strip()
    if not ref:
        return None
    if "://" not in ref and not ref.startswith(("www.", "youtube.", "youtu.be")):
        return ref
    url = urlparse(ref if "://" in ref else "https://" + ref)
    host = (url.hostname or "").lower()
    if host.endswith("youtu.be"):
        return url.path.lstrip("/").split("/")[0]
    if "youtube" in host:
        query = parse_qs(url.query)
        if "v" in query:
            return query["v"][0]
        m = _YT_PATH.match(url.path)
        return m.group(1) if m else ref
    stem = Path(url.path).stem  # e.g. http://howto100m.inria.fr/dataset/NFsc2pCdBAI.mp4
    return stem or ref


def _rows_from_table(rows: Iterable[dict], columns: list, source: Path) -> list[VideoEntry]:
    names = {c.lower().strip(): c for c in columns if c is not None}
    id_col = next((names[c] for c in ID_COLUMNS if c in names), None)
    if id_col is None:
        raise UserError(f"{source}: no video id column; name one of {', '.join(ID_COLUMNS[:4])} (found {', '.join(names)})")
    entries = []
    for row in rows:
        raw = str(row.get(id_col) or "").strip()
        if not raw:
            continue
        meta = {k: v for k, v in row.items() if k != id_col and k is not None and v not in (None, "")}
        entries.append(VideoEntry(raw, parse_video_ref(raw), meta))
    return entries


def _open_list(path: Path) -> int:
    """A descriptor of the list, a regular file under the cap; a UserError otherwise."""
    hint = "give a CSV, TSV, Parquet or text file of ids or URLs"
    try:
        fd = open_regular(path, "video list")
    except UnreadableInput as exc:
        raise UserError(f"{str(exc).removesuffix('; give a file')}; {hint}") from None
    if os.fstat(fd).st_size > MAX_LIST_BYTES:
        os.close(fd)
        raise UserError(f"video list {path} is larger than {MAX_LIST_BYTES / 2**20:g} MiB, the limit for one list; "
                        f"split it and crawl each part into its own --out")
    return fd


def check_video_list(path) -> None:
    """A UserError now, before any work, unless ``path`` is a list ``read_video_list`` will read."""
    os.close(_open_list(Path(path)))


def _parquet_rows(file) -> tuple[Iterator[dict], list]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(file)
    rows = (row for batch in table.iter_batches(batch_size=65536) for row in batch.to_pylist())
    return rows, table.schema_arrow.names


def read_video_list(path: Path) -> list[VideoEntry]:
    """All entries of the input, in order, blank lines skipped, duplicates kept (see ``dedupe``)."""
    path = Path(path)
    fd = _open_list(path)
    try:
        with open(fd, "rb") as raw:
            if path.suffix.lower() == ".parquet":
                rows, columns = _parquet_rows(raw)
                return _rows_from_table(rows, columns, path)
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
            return _entries_from_lines((line for line in text if line.strip()), path)
    except OSError as exc:
        raise UserError(f"video list {path} could not be read: {exc.strerror or exc}") from None


def _entries_from_lines(lines: Iterator[str], source: Path) -> list[VideoEntry]:
    first = next(lines, None)
    if first is None:
        return []
    delimiter = "\t" if "\t" in first else ("," if "," in first else None)
    header = [c.strip().lower() for c in re.split(r"[\t,]", first)] if delimiter else [first.strip().lower()]
    if any(c in ID_COLUMNS for c in header):
        if delimiter is None:
            return [VideoEntry(l.strip(), parse_video_ref(l), {}) for l in lines]
        reader = csv.DictReader(itertools.chain([first], lines), delimiter=delimiter)
        return _rows_from_table(reader, reader.fieldnames or [], source)
    lines = itertools.chain([first], lines)
    if delimiter:  # no header: first column is the id
        return [VideoEntry(r[0].strip(), parse_video_ref(r[0]), {}) for r in csv.reader(lines, delimiter=delimiter)
                if r and r[0].strip()]
    return [VideoEntry(l.strip(), parse_video_ref(l), {}) for l in lines]


def dedupe(entries: list[VideoEntry]) -> tuple[list[VideoEntry], int]:
    """Keep the first occurrence of each id (or raw text, for invalid ones); return (kept, dropped)."""
    seen, kept = set(), []
    for entry in entries:
        key = entry.video_id if entry.valid else ("raw", entry.raw)
        if key in seen:
            continue
        seen.add(key)
        kept.append(entry)
    return kept, len(entries) - len(kept)
