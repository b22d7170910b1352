"""What one sample holds on disk: the languages, the names of its members, and ``meta.json``.

Every stage names a sample's members through these constants and functions, so a member
is spelled once: ``info.json`` and ``<lang>.vtt`` in crawl/, ``subs.json`` in aligned/,
``meta.json``, ``<backbone>.npy`` and ``subs.json`` or ``captions.json`` in mmp/.
``MmpMeta`` is an mmp/ sample's ``meta.json``, whichever stage writes it (feature
extraction, the released S3D import, downstream preparation): each writes its own subset
of the fields, and a field it leaves ``ABSENT`` is not in its bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from shards.codec import json_bytes, load_json

# The 9 languages of Multi-HowTo100M, in the order the paper's pre-training lists them.
LANGS = ("en", "de", "fr", "ru", "es", "cs", "sw", "zh", "vi")
# The same 9 in the order the released subtitle files (how2_{lang}.json) are listed.
RELEASE_LANGS = ("en", "de", "fr", "cs", "sw", "ru", "vi", "es", "zh")

INFO_JSON = "info.json"
SUBS_JSON = "subs.json"
META_JSON = "meta.json"
CAPTIONS_JSON = "captions.json"
TRACK_EXT = "vtt"
FEATURE_EXT = "npy"


def track_member(lang: str, ext: str = TRACK_EXT) -> str:
    """The member holding one language's subtitle track: ``en.vtt``."""
    return f"{lang}.{ext}"


def is_track_member(name: str) -> bool:
    return name.endswith(f".{TRACK_EXT}")


# The feature arrays an mmp/ sample may hold: the two backbones, or a Multi30K image's regions.
FEATURE_NAMES = ("r21d", "s3d", "regions")


def feature_member(name: str) -> str:
    """The member holding one backbone's (or the regions') feature array: ``r21d.npy``."""
    return f"{name}.{FEATURE_EXT}"


# The crawl's descriptive fields that feature extraction carries from an aligned
# sample's meta.json into the mmp/ one, where present.
CARRIED_KEYS = ("title", "categories", "category_1", "category_2", "task_id", "channel", "language")


class _Absent:
    """A field a producer does not write (distinct from None, written as null)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()


@dataclass(frozen=True)
class MmpMeta:
    """An mmp/ sample's ``meta.json``: the union of what its three producers write.

    ``features`` maps each feature member's name (``s3d``) to its recipe, weights, file
    and row times. A field left ``ABSENT`` is left out of the member; None is written as
    null. Keys no field names are kept in ``extra``, so a member read and written back is
    unchanged.
    """

    video_id: str
    features: dict
    versions: dict
    duration: object = ABSENT
    fps: object = ABSENT
    width: object = ABSENT
    height: object = ABSENT
    rotation: object = ABSENT
    decoder: object = ABSENT
    decoder_note: object = ABSENT
    source: object = ABSENT
    dataset: object = ABSENT
    split: object = ABSENT
    split_videos: object = ABSENT
    benchmark: object = ABSENT
    title: object = ABSENT
    categories: object = ABSENT
    category_1: object = ABSENT
    category_2: object = ABSENT
    task_id: object = ABSENT
    channel: object = ABSENT
    language: object = ABSENT
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out = {k: v for k, v in out.items() if v is not ABSENT}
        return {**self.extra, **out}

    def to_member(self) -> bytes:
        return json_bytes(self.to_dict())

    @classmethod
    def from_dict(cls, doc: dict) -> "MmpMeta":
        if not isinstance(doc, dict):
            raise ValueError(f"{META_JSON} is a JSON {type(doc).__name__}, not an object")
        missing = [k for k in ("video_id", "features", "versions") if k not in doc]
        if missing:
            raise ValueError(f"{META_JSON} has no {', '.join(missing)}")
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in doc.items() if k in names},
                   extra={k: v for k, v in doc.items() if k not in names})

    @classmethod
    def from_member(cls, data: bytes) -> "MmpMeta":
        """A ``meta.json`` member's bytes; ValueError when malformed or not an mmp/ meta."""
        return cls.from_dict(load_json(data))
