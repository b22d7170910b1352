"""The JSON members of a sample other than ``meta.json``: ``info.json``, ``subs.json``, ``captions.json``.

Each is a dataclass whose fields are the member's top-level keys: ``to_member()`` writes
the bytes every stage writes (``shards.codec.json_bytes``), ``from_member()`` reads them
back, raising ValueError with the member's name when they are malformed. A field left
``ABSENT`` is not written (None is written as null); keys no field names are kept in
``extra``, so a member read and written back is byte-identical. ``shards.samples`` is
where users import them from.

``SubsJson.lazy`` reads a ``subs.json`` for training: every top-level value but the
tracks is decoded, and a track only when its cues are asked for (a clip draws one or two
of up to nine languages). The trainer's questions (``cues_near``, ``parallel_texts``)
are methods of ``SubsJson``.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from shards.codec import WS, json_bytes, load_json, loads, object_spans

INFO_JSON = "info.json"
SUBS_JSON = "subs.json"
CAPTIONS_JSON = "captions.json"


class _Absent:
    """A field a producer does not write (distinct from None, written as null)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()


class JsonMember:
    """``to_dict``/``from_dict``/``to_member``/``from_member`` for a dataclass of top-level keys."""

    MEMBER = ""
    REQUIRED: tuple = ()

    def _values(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}

    def to_dict(self) -> dict:
        out = {k: v for k, v in self._values().items() if v is not ABSENT}
        return {**self.extra, **out}

    def to_member(self) -> bytes:
        return json_bytes(self.to_dict())

    @classmethod
    def _split(cls, doc) -> tuple[dict, dict]:
        if not isinstance(doc, dict):
            raise ValueError(f"{cls.MEMBER} is a JSON {type(doc).__name__}, not an object")
        missing = [k for k in cls.REQUIRED if k not in doc]
        if missing:
            raise ValueError(f"{cls.MEMBER} has no {', '.join(missing)}")
        names = {f.name for f in fields(cls)} - {"extra"}
        return ({k: v for k, v in doc.items() if k in names}, {k: v for k, v in doc.items() if k not in names})

    @classmethod
    def from_dict(cls, doc: dict):
        known, extra = cls._split(doc)
        return cls(**known, extra=extra)

    @classmethod
    def from_member(cls, data: bytes):
        """The member's bytes; ValueError when they are malformed."""
        try:
            doc = load_json(data)
        except ValueError as exc:
            raise ValueError(f"{cls.MEMBER} is not JSON ({exc})") from None
        return cls.from_dict(doc)


# ---------------------------------------------------------------- info.json


@dataclass(frozen=True)
class TrackRecord(JsonMember):
    """One language's entry in ``info.json``'s ``tracks``: what the crawl chose and how it went."""

    MEMBER = f"{INFO_JSON} track"

    lang: object = ABSENT
    kind: object = ABSENT  # manual | asr | translated | none
    key: object = ABSENT  # the key in yt-dlp's dict (en-orig, fr-de, zh-Hans...)
    source_lang: object = ABSENT
    ext: object = ABSENT
    name: object = ABSENT
    variant: object = ABSENT
    po_token: object = ABSENT
    url_host: object = ABSENT
    status: object = ABSENT
    error: object = ABSENT
    warning: object = ABSENT
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class InfoJson(JsonMember):
    """A crawl sample's ``info.json``: the trimmed yt-dlp info dict plus ``tracks`` per language.

    ``tracks`` maps a language to its ``TrackRecord``; an entry that is not an object,
    or a ``tracks`` that is not one, is kept as it is (``declared()`` skips it), so a
    sample from an odd info dict still reads, aligns and round-trips.
    """

    MEMBER = INFO_JSON

    id: object = ABSENT
    title: object = ABSENT
    duration: object = ABSENT
    channel: object = ABSENT
    channel_id: object = ABSENT
    upload_date: object = ABSENT
    language: object = ABSENT
    categories: object = ABSENT
    availability: object = ABSENT
    webpage_url: object = ABSENT
    input_meta: object = ABSENT
    tracks: object = ABSENT
    extra: dict = field(default_factory=dict)

    def declared(self) -> dict[str, TrackRecord]:
        """The well-formed track records, by language."""
        tracks = self.tracks if isinstance(self.tracks, dict) else {}
        return {lang: t for lang, t in tracks.items() if isinstance(t, TrackRecord)}

    def to_dict(self) -> dict:
        out = super().to_dict()
        if isinstance(self.tracks, dict):
            out["tracks"] = {l: t.to_dict() if isinstance(t, TrackRecord) else t for l, t in self.tracks.items()}
        return out

    @classmethod
    def from_dict(cls, doc: dict) -> "InfoJson":
        known, extra = cls._split(doc)
        if isinstance(known.get("tracks"), dict):
            known["tracks"] = {l: TrackRecord.from_dict(t) if isinstance(t, dict) else t
                               for l, t in known["tracks"].items()}
        return cls(**known, extra=extra)


# ---------------------------------------------------------------- subs.json


class LazyTracks(Mapping):
    """``subs.json``'s tracks located in its text, each decoded (as strictly as ``json.loads``)
    on first access; a malformed track that is never asked for is never noticed."""

    def __init__(self, text: str, spans: dict):
        self._text, self._spans, self._decoded = text, spans, {}

    def __getitem__(self, lang: str) -> dict:
        if lang not in self._decoded:
            a, b = self._spans[lang]
            track = loads(self._text[a:b])
            if not isinstance(track, dict):
                raise ValueError(f"{SUBS_JSON} track {lang!r} is not an object")
            self._decoded[lang] = track
        return self._decoded[lang]

    def __iter__(self):
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)

    def decoded(self) -> list[str]:
        """The languages decoded so far."""
        return sorted(self._decoded)


@dataclass(frozen=True)
class SubsJson(JsonMember):
    """An aligned (or mmp/) sample's ``subs.json``: the cleaned tracks, one timeline, coverage.

    ``tracks``: ``{lang: {"kind", "source_lang", "cues": [[start_s, end_s, text], ...], "report"}}``;
    ``segments``: ``[{"start", "end", "text": {lang: text}}, ...]`` (``pipeline.subtitles.align``).
    mmp-import adds ``source``, ``stopwords_removed`` and ``meta``.
    """

    MEMBER = SUBS_JSON

    video_id: object = ABSENT
    duration: object = ABSENT
    language: object = ABSENT
    timeline: object = ABSENT
    tracks: object = ABSENT
    segments: object = ABSENT
    coverage: object = ABSENT
    flagged_tracks: object = ABSENT
    track_problems: object = ABSENT
    source: object = ABSENT
    stopwords_removed: object = ABSENT
    meta: object = ABSENT
    extra: dict = field(default_factory=dict)

    @property
    def track_map(self) -> Mapping:
        """``tracks`` as a mapping: empty when the member has none (absent, null or an empty list)."""
        return self.tracks if isinstance(self.tracks, Mapping) else {}

    def to_dict(self) -> dict:
        out = super().to_dict()
        if isinstance(self.tracks, LazyTracks):
            out["tracks"] = dict(self.tracks)
        return out

    @classmethod
    def from_dict(cls, doc: dict) -> "SubsJson":
        known, extra = cls._split(doc)
        tracks = known.get("tracks")
        if not isinstance(tracks, dict) and tracks:  # null or an empty list mean no tracks, as a missing key does
            raise ValueError(f"{SUBS_JSON} 'tracks' is not an object")
        return cls(**known, extra=extra)

    @classmethod
    def lazy(cls, data: bytes) -> "SubsJson":
        """A ``subs.json`` member whose tracks are decoded only when asked for (``LazyTracks``).

        Everything else is decoded at once, strictly; a track that is asked for is checked as
        strictly as ``json.loads`` would check it.
        """
        s = data.decode("utf-8")
        i = WS.match(s).end()
        if s[i:i + 1] != "{":
            raise ValueError(f"{SUBS_JSON} is not a JSON object")
        top, end = object_spans(s, i, walk="tracks")
        if WS.match(s, end).end() != len(s):
            raise ValueError(f"extra data after the {SUBS_JSON} object at character {end}")
        tracks = top.get("tracks", (0, 0, None))[2]
        doc = {k: loads(s[a:b]) for k, (a, b, _) in top.items() if not (k == "tracks" and tracks is not None)}
        if tracks is not None:
            doc["tracks"] = {}
            self = cls.from_dict(doc)
            object.__setattr__(self, "tracks", LazyTracks(s, {lang: (a, b) for lang, (a, b, _) in tracks.items()}))
            return self
        return cls.from_dict(doc)

    def langs(self) -> list[str]:
        return sorted(self.track_map)

    def cues(self, lang: str) -> list:
        """``[[start_s, end_s, text], ...]`` of one language (empty when it has none)."""
        track = self.track_map.get(lang)
        if not track:
            return []
        if not isinstance(track, dict):
            raise ValueError(f"{SUBS_JSON} track {lang!r} is not an object")
        return track.get("cues") or []

    def cues_near(self, lang: str, start: float, end: float, max_cues: int | None = None) -> list:
        """The consecutive cues of ``lang`` closest in time to the window ``[start, end]``.

        Every cue overlapping the window (``cue_end > start and cue_start < end``), in order;
        if none does, the single nearest cue (the earlier on a tie). With ``max_cues``, the
        run is cut to that many around the window's centre. Empty when the video has no cues
        in ``lang``. Cues are sorted and do not overlap (``pipeline.subtitles.clean``).
        """
        cues = self.cues(lang)
        if not cues:
            return []
        if end < start:
            start, end = end, start
        i = bisect_right(cues, start, key=lambda c: c[1])  # first cue ending after the window starts
        j = bisect_left(cues, end, key=lambda c: c[0])     # first cue starting at or after its end
        if j <= i:
            before = start - cues[i - 1][1] if i > 0 else float("inf")
            after = cues[i][0] - end if i < len(cues) else float("inf")
            run = [cues[i - 1 if before <= after else i]]
        else:
            run = cues[i:j]
        if max_cues is not None and len(run) > max_cues > 0:
            centre = (start + end) / 2
            mid = min(range(len(run)), key=lambda n: abs((run[n][0] + run[n][1]) / 2 - centre))
            lo = max(0, min(mid - max_cues // 2, len(run) - max_cues))
            run = run[lo:lo + max_cues]
        return [tuple(c) for c in run]

    def parallel_texts(self, lang_a: str, lang_b: str) -> list[tuple]:
        """``[(start, end, text_a, text_b), ...]`` over the segments that hold both languages."""
        out = []
        for seg in self.segments if isinstance(self.segments, list) else []:
            pair = segment_pair(seg, lang_a, lang_b)
            if pair is not None:
                out.append((seg["start"], seg["end"], *pair))
        return out


def segment_pair(segment: dict, lang_a: str, lang_b: str) -> tuple[str, str] | None:
    """One segment's texts in two languages, or None if either is missing."""
    text = segment.get("text") or {}
    a, b = text.get(lang_a), text.get(lang_b)
    return (a, b) if a and b else None


# ---------------------------------------------------------------- captions.json


@dataclass(frozen=True)
class Captions(JsonMember):
    """A downstream mmp/ sample's ``captions.json``: ``captions`` ``{lang: [caption, ...]}``,
    the ``parallel`` entries ``[{lang: caption}, ...]`` and the ``split`` it belongs to."""

    MEMBER = CAPTIONS_JSON

    video_id: object = ABSENT
    split: object = ABSENT
    captions: object = ABSENT
    parallel: object = ABSENT
    extra: dict = field(default_factory=dict)

    @property
    def split_name(self) -> str:
        """The split, ``train`` when the member names none."""
        return "train" if self.split is ABSENT else self.split

    def by_lang(self) -> dict:
        """``captions``: ``{lang: [caption, ...]}``, empty when there are none."""
        return self.captions if isinstance(self.captions, dict) else {}

    def entries(self) -> list:
        """``parallel``: ``[{lang: caption}, ...]``, empty when there are none."""
        return self.parallel if isinstance(self.parallel, list) else []
