"""What one sample holds on disk: the languages, the names of its members, and ``meta.json``.

Every stage names a sample's members through these constants and functions, so a member
is spelled once: ``info.json`` and ``<lang>.vtt`` (``<lang>.srt`` for a track fetched as SubRip)
in crawl/, ``subs.json`` in aligned/, ``meta.json``, ``<backbone>.npy`` and ``subs.json`` or
``captions.json`` in mmp/.
``MmpMeta`` is an mmp/ sample's ``meta.json``, whichever stage writes it (feature
extraction, the released S3D import, downstream preparation): each writes its own subset
of the fields, and a field it leaves ``ABSENT`` is not in its bytes. The other JSON members
(``InfoJson`` with its ``TrackRecord``s, ``SubsJson``, ``Captions``) are defined in
``shards.members_json`` and imported from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from shards.members_json import (ABSENT, CAPTIONS_JSON, INFO_JSON, SUBS_JSON, Captions, InfoJson, JsonMember,
                                 LazyTracks, SubsJson, TrackRecord, segment_pair)

__all__ = ["ABSENT", "CAPTIONS_JSON", "CARRIED_KEYS", "FEATURE_EXT", "FEATURE_NAMES", "INFO_JSON", "LANGS",
           "META_JSON", "RELEASE_LANGS", "SUBS_JSON", "TRACK_EXT", "TRACK_EXTS", "Captions", "InfoJson", "LazyTracks",
           "MmpMeta", "SubsJson", "TrackRecord", "feature_member", "find_track_member", "is_track_member",
           "segment_pair", "track_format", "track_member"]

# The 9 languages of Multi-HowTo100M, in the order the paper's pre-training lists them.
LANGS = ("en", "de", "fr", "ru", "es", "cs", "sw", "zh", "vi")
# The same 9 in the order the released subtitle files (how2_{lang}.json) are listed.
RELEASE_LANGS = ("en", "de", "fr", "cs", "sw", "ru", "vi", "es", "zh")

META_JSON = "meta.json"
TRACK_EXT = "vtt"
# The formats a crawled track may be stored in, the usual one first: WebVTT, and SubRip for a
# translation fetched with ``mmp-crawl --translated-format srt``. The member's suffix says which.
TRACK_EXTS = (TRACK_EXT, "srt")
FEATURE_EXT = "npy"


def track_member(lang: str, ext: str = TRACK_EXT) -> str:
    """The member holding one language's subtitle track: ``en.vtt`` (``en.srt`` with ``ext="srt"``)."""
    if ext not in TRACK_EXTS:
        raise ValueError(f"a track is stored as one of {', '.join(TRACK_EXTS)}, not {ext!r}")
    return f"{lang}.{ext}"


def is_track_member(name: str) -> bool:
    return name.endswith(tuple(f".{ext}" for ext in TRACK_EXTS))


def track_format(name: str) -> str:
    """The format of a track member, from its suffix: ``vtt`` or ``srt``."""
    if not is_track_member(name):
        raise ValueError(f"{name!r} is not a track member")
    return name.rpartition(".")[2]


def find_track_member(members, lang: str, prefer: object = None) -> str | None:
    """The name of ``lang``'s track among ``members`` (any container of member names), whichever format
    it was stored in; ``prefer`` (the ``ext`` the crawl recorded) is looked for first. None when absent."""
    order = ([prefer] if prefer in TRACK_EXTS else []) + [e for e in TRACK_EXTS if e != prefer]
    return next((track_member(lang, ext) for ext in order if track_member(lang, ext) in members), None)


# The feature arrays an mmp/ sample may hold: the two backbones, or a Multi30K image's regions.
FEATURE_NAMES = ("r21d", "s3d", "regions")


def feature_member(name: str) -> str:
    """The member holding one backbone's (or the regions') feature array: ``r21d.npy``."""
    return f"{name}.{FEATURE_EXT}"


# The crawl's descriptive fields that feature extraction carries from an aligned
# sample's meta.json into the mmp/ one, where present.
CARRIED_KEYS = ("title", "categories", "category_1", "category_2", "task_id", "channel", "language")


@dataclass(frozen=True)
class MmpMeta(JsonMember):
    """An mmp/ sample's ``meta.json``: the union of what its three producers write.

    ``features`` maps each feature member's name (``s3d``) to its recipe, weights, file
    and row times. A field left ``ABSENT`` is left out of the member; None is written as
    null. Keys no field names are kept in ``extra``, so a member read and written back is
    unchanged.
    """

    MEMBER = META_JSON
    REQUIRED = ("video_id", "features", "versions")

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
