"""What a sample is at each stage, and the names of a work unit's files.

Every stage writes work units as three files, ``NAME-000123.tar`` (WebDataset),
``NAME-000123.parquet`` (one row per input video, failures included) and, last,
``NAME-000123.stats.json`` (counts, sizes, checksums). The stats file marks the
unit complete. This module is the one place that names those files and the
members of a sample.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .storage import RemotePath, as_path, staging_dir, staging_name

VIDEO_ID_RE = re.compile(r"^[A-Za-z0-9_-]{11}$")

UNIT_DIGITS = 6
UNIT_RE = re.compile(r"^(?P<prefix>[a-z0-9_]+)-(?P<index>\d{6})\.stats\.json$")


def is_valid_video_id(video_id: str) -> bool:
    """True for an 11-character YouTube id. Checked before an id reaches yt-dlp or a path."""
    return isinstance(video_id, str) and VIDEO_ID_RE.match(video_id) is not None


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


# crawl/: info.json (trimmed yt-dlp info + tracks), one <lang>.vtt per language found,
# optionally the video file.
CRAWL = SampleLayout(
    stage="crawl",
    required=("info.json",),
    optional_patterns=(r"[a-z]{2,3}(-[A-Za-z]+)?\.vtt", r"mp4|webm|mkv|m4a|mov|flv|3gp"),
)

# aligned/: subs.json with cleaned cues per language and the common timeline.
ALIGNED = SampleLayout(stage="aligned", required=("subs.json",), optional_patterns=(r"meta\.json",))

# mmp/: features at one row per second (or image regions, for Multi30K), subtitles or
# downstream captions, metadata.
MMP = SampleLayout(
    stage="mmp",
    required=("meta.json",),
    optional_patterns=(r"r21d\.npy", r"s3d\.npy", r"regions\.npy", r"subs\.json", r"captions\.json"),
)

LAYOUTS = {layout.stage: layout for layout in (CRAWL, ALIGNED, MMP)}

# Members that would be unpickled by webdataset's default decoders: never written.
FORBIDDEN_SUFFIXES = (".pyd", ".pickle", ".pkl", ".pth", ".pt")
