"""What a sample is at each stage, and the names of a work unit's files.

Every stage writes work units as three files, ``NAME-000123.tar`` (WebDataset),
``NAME-000123.parquet`` (one row per input video, failures included) and, last,
``NAME-000123.stats.json`` (counts, sizes, checksums). The stats file marks the
unit complete. This module is the one place that names those files and the
members of a sample.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from shards.errors import UserError
from shards.members import VIDEO_SUFFIXES
from shards.samples import (CAPTIONS_JSON, FEATURE_NAMES, INFO_JSON, META_JSON, SUBS_JSON, TRACK_EXTS,
                            feature_member)
from shards.storage import RemotePath, as_path, staging_dir, staging_name

VIDEO_ID_RE = re.compile(r"[A-Za-z0-9_-]{11}")  # whole string (fullmatch): "$" would let a trailing newline by

UNIT_DIGITS = 6
UNIT_RE = re.compile(r"^(?P<prefix>[a-z0-9_]+)-(?P<index>\d{6})\.stats\.json$")


def is_valid_video_id(video_id: str) -> bool:
    """True for an 11-character YouTube id. Checked before an id reaches yt-dlp or a path."""
    return isinstance(video_id, str) and VIDEO_ID_RE.fullmatch(video_id) is not None


@dataclass(frozen=True)
class UnitFiles:
    """The final names of one work unit's outputs.

    ``directory`` is a ``Path`` or, for an fsspec URL, a ``shards.storage.RemotePath``;
    the names below are of the same kind.
    """

    directory: Path | RemotePath
    prefix: str
    index: int

    def __post_init__(self):
        object.__setattr__(self, "directory", as_path(self.directory))

    @property
    def stem(self) -> str:
        return f"{self.prefix}-{self.index:0{UNIT_DIGITS}d}"

    @property
    def tar(self) -> Path:
        return self.directory / f"{self.stem}.tar"

    @property
    def parquet(self) -> Path:
        return self.directory / f"{self.stem}.parquet"

    @property
    def stats(self) -> Path:
        return self.directory / f"{self.stem}.stats.json"

    @property
    def remote(self) -> bool:
        return isinstance(self.directory, RemotePath)

    @property
    def temp_directory(self) -> Path:
        """Where this unit's temporaries go: beside the outputs, or a local staging
        directory when the outputs are in an object store (which has no rename)."""
        if self.remote:
            return staging_dir() / staging_name(self.directory)
        return self.directory

    def is_complete(self) -> bool:
        return self.stats.exists()

    def temporaries(self) -> list[Path]:
        """Leftovers of an interrupted attempt at this unit (never under a final name)."""
        if self.remote and not self.temp_directory.is_dir():
            return []
        return sorted(self.temp_directory.glob(f".{self.stem}.*.tmp*"))


# a unit is ~1,000 videos; a count past this is damage, and a plan would build a list of it
MAX_UNIT_ROWS = 10_000_000


class DamagedUnit(UserError, ValueError):
    """A unit whose stats file cannot be used: unreadable, not a JSON object, or a field of
    the wrong type. Its message is one sentence naming the file."""


def _count_field(stats: dict, name: str, where: str) -> None:
    value = stats.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_UNIT_ROWS:
        raise DamagedUnit(f"{where}: {name!r} is {value!r}, not a count between 0 and {MAX_UNIT_ROWS:,}")


def read_stats(files: "UnitFiles") -> dict:
    """A unit's stats file, checked where readers use it: a JSON object whose ``rows``,
    ``samples`` and ``failures`` are counts, whose ``counts`` (when there) maps names to counts (or seconds) and
    whose ``files`` (when there) maps ``tar``/``parquet`` to ``{size, sha256}`` entries.
    Raises DamagedUnit, with one sentence, for anything else."""
    where = f"{files.stem}: stats file {files.stats.name}"
    try:
        stats = json.loads(files.stats.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise DamagedUnit(f"{where} is unreadable ({type(exc).__name__}: {exc}); the unit is damaged") from None
    if not isinstance(stats, dict):
        raise DamagedUnit(f"{where} holds a JSON {type(stats).__name__}, not an object; the unit is damaged")
    for name in ("rows", "samples", "failures"):
        _count_field(stats, name, where)
    counts = stats.get("counts", {})
    if not isinstance(counts, dict):
        raise DamagedUnit(f"{where}: 'counts' is not an object")
    for name, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not n >= 0:  # counts and seconds
            raise DamagedUnit(f"{where}: 'counts.{name}' is {n!r}, not a count")
    if not isinstance(stats.get("layout"), (str, type(None))):
        raise DamagedUnit(f"{where}: 'layout' is {stats['layout']!r}, not a stage name")
    recorded = stats.get("files", {})
    if not isinstance(recorded, dict):
        raise DamagedUnit(f"{where}: 'files' is not an object")
    for kind in ("tar", "parquet"):
        entry = recorded.get(kind, {})
        if not isinstance(entry, dict):
            raise DamagedUnit(f"{where}: 'files.{kind}' is not an object")
        size, digest = entry.get("size"), entry.get("sha256")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise DamagedUnit(f"{where}: 'files.{kind}.size' is {size!r}, not a byte count")
        if digest is not None and not isinstance(digest, str):
            raise DamagedUnit(f"{where}: 'files.{kind}.sha256' is {digest!r}, not a hex digest")
    return stats


def completed_units(directory, prefix: str) -> list[UnitFiles]:
    """The units of a stage whose stats file exists, in index order (a path or an fsspec URL)."""
    directory = as_path(directory)
    units = []
    for path in sorted(directory.glob(f"{prefix}-*.stats.json"), key=lambda p: p.name):
        m = UNIT_RE.match(path.name)
        if m and m.group("prefix") == prefix:
            units.append(UnitFiles(directory, prefix, int(m.group("index"))))
    return units


@dataclass(frozen=True)
class SampleLayout:
    """The members a stage's samples carry. ``required`` must be in every sample."""

    stage: str
    required: tuple[str, ...]
    optional_patterns: tuple[str, ...] = field(default_factory=tuple)

    def check(self, members: dict) -> list[str]:
        """Problems with one sample's member names (empty when it is well formed)."""
        problems = [f"missing member {name!r}" for name in self.required if name not in members]
        allowed = [re.compile(p) for p in self.optional_patterns]
        for name in members:
            if name.startswith("__"):
                continue
            if name in self.required or any(p.fullmatch(name) for p in allowed):
                continue
            problems.append(f"unexpected member {name!r}")
        return problems


# crawl/: info.json (trimmed yt-dlp info + tracks), one <lang>.vtt (or .srt) per language found,
# optionally the video file.
CRAWL = SampleLayout(
    stage="crawl",
    required=(INFO_JSON,),
    optional_patterns=(rf"[a-z]{{2,3}}(-[A-Za-z]+)?\.({'|'.join(TRACK_EXTS)})", "|".join(VIDEO_SUFFIXES)),
)

# aligned/: subs.json with cleaned cues per language and the common timeline.
ALIGNED = SampleLayout(stage="aligned", required=(SUBS_JSON,), optional_patterns=(re.escape(META_JSON),))

# mmp/: features at one row per second (or image regions, for Multi30K), subtitles or
# downstream captions, metadata.
MMP = SampleLayout(
    stage="mmp",
    required=(META_JSON,),
    optional_patterns=tuple(re.escape(m) for m in (*map(feature_member, FEATURE_NAMES), SUBS_JSON, CAPTIONS_JSON)),
)

LAYOUTS = {layout.stage: layout for layout in (CRAWL, ALIGNED, MMP)}

