"""Reading the list of videos to crawl: CSV, TSV, Parquet, or a plain list of ids or URLs.

The HowTo100M CSV (``video_id,category_1,category_2,rank,task_id``) is read as is;
its other columns travel with each video. Ids are validated here, before they can
reach yt-dlp or a path; invalid ones are kept so that they get an ``invalid_id`` row.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from shards.errors import UserError
from shards.layout import is_valid_video_id

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


def _rows_from_table(rows: list[dict], source: Path) -> list[VideoEntry]:
    if not rows:
        return []
    columns = {c.lower().strip(): c for c in rows[0].keys() if c is not None}
    id_col = next((columns[c] for c in ID_COLUMNS if c in columns), None)
    if id_col is None:
        raise UserError(f"{source}: no video id column; name one of {', '.join(ID_COLUMNS[:4])} (found {', '.join(columns)})")
    entries = []
    for row in rows:
        raw = str(row.get(id_col) or "").strip()
        if not raw:
            continue
        meta = {k: v for k, v in row.items() if k != id_col and k is not None and v not in (None, "")}
        entries.append(VideoEntry(raw, parse_video_ref(raw), meta))
    return entries


def read_video_list(path: Path) -> list[VideoEntry]:
    """All entries of the input, in order, blank lines skipped, duplicates kept (see ``dedupe``)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"video list {path} does not exist; give a CSV, TSV, Parquet or text file of ids or URLs")
    if path.is_dir():
        raise UserError(f"video list {path} is a directory; give a CSV, TSV, Parquet or text file of ids or URLs")
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return _rows_from_table(pq.read_table(path).to_pylist(), path)
        data = path.read_bytes()
    except PermissionError:
        raise UserError(f"video list {path} is not readable (permission denied)") from None
    except OSError as exc:
        raise UserError(f"video list {path} could not be read: {exc}") from None
    text = data.decode("utf-8-sig", errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    first = lines[0]
    delimiter = "\t" if "\t" in first else ("," if "," in first else None)
    header = [c.strip().lower() for c in re.split(r"[\t,]", first)] if delimiter else [first.strip().lower()]
    if any(c in ID_COLUMNS for c in header):
        if delimiter is None:
            return [VideoEntry(l.strip(), parse_video_ref(l), {}) for l in lines[1:]]
        reader = csv.DictReader(io.StringIO("\n".join(lines)), delimiter=delimiter)
        return _rows_from_table(list(reader), path)
    if delimiter:  # no header: first column is the id
        reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter)
        return [VideoEntry(r[0].strip(), parse_video_ref(r[0]), {}) for r in reader if r and r[0].strip()]
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
