"""What a sample is decoded into for training: feature rows, subtitle tracks, clips.

A clip uses little of a sample, so only that little is decoded: the ``.npy`` headers,
then the clip's rows straight from the tar bytes (``NpyRows``, ``FeatureRows``); the one
or two subtitle tracks drawn, not all nine (``shards.samples.SubsJson.lazy``). ``pretrain_clip`` and
``caption_clip`` cut one clip from a video and its text; ``model.trainer.data.sample_clips`` is
the pipeline stage that calls them.

Rows are not assumed to be seconds: ``meta.json`` says, per backbone, where row 0 starts
and how long a row lasts (``model.row_times``, checked against the arrays read). Subtitle
times are seconds, so members with other row spans are mapped onto a common one-second
grid, for the rows a clip asks for alone; members at one row per second (every recipe
today, and imported features, whose documented mapping is one row per second from 0) keep
the contiguous slice of their rows.

Nothing is unpickled: ``.json`` is read as JSON and ``.npy`` with ``allow_pickle=False``.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np

from shards.codec import load_npy
from shards.samples import LANGS, META_JSON, Captions, SubsJson, feature_member

from model.row_times import grid_rows, row_times, second_grid

MIN_CLIP_SECONDS = 4


# ---------------------------------------------------------------------------- decoding


_NPY_HEADER = re.compile(r"\{'descr': '([<>|=][a-z]\d+)', 'fortran_order': (True|False), "
                         r"'shape': \((\d+), (\d+)\), \}\s*$")


class NpyRows:
    """A 2-d ``.npy`` member read from its header alone: rows are taken straight from the
    bytes (``np.frombuffer``), so a clip costs its own rows, not the whole video's.

    Headers that are not the plain C-order numeric layout ``np.save`` writes go through
    ``np.load(allow_pickle=False)``, as does any object dtype (which it refuses).
    """

    def __init__(self, data: bytes):
        self.data, self.array = data, None
        m = None
        if data[:6] == b"\x93NUMPY" and len(data) >= 10:
            major = data[6]
            size, start = ((int.from_bytes(data[8:10], "little"), 10) if major == 1 else
                           (int.from_bytes(data[8:12], "little"), 12))
            m = _NPY_HEADER.match(data[start:start + size].decode("latin1"))
            self.offset = start + size
        if m is None or m.group(2) == "True":
            self.array = load_npy(data)
            self.shape, self.dtype = self.array.shape, self.array.dtype
            return
        self.dtype = np.dtype(m.group(1))
        self.shape = (int(m.group(3)), int(m.group(4)))
        if len(data) - self.offset < self.shape[0] * self.shape[1] * self.dtype.itemsize:
            raise ValueError(f"npy data holds {len(data) - self.offset} bytes, fewer than shape {self.shape} needs")

    def rows(self, start: int, end: int) -> np.ndarray:
        """Rows ``[start, end)`` as a read-only view on the member's bytes."""
        if self.array is not None:
            return self.array[start:end]
        width = self.shape[1]
        return np.frombuffer(self.data, self.dtype, count=(end - start) * width,
                             offset=self.offset + start * width * self.dtype.itemsize).reshape(end - start, width)


class FeatureRows:
    """The chosen feature members of a sample, concatenated along the feature axis on demand,
    one row per second.

    Behaves like the ``[T, F]`` array for what clip sampling needs (``shape``, ``len``,
    slicing rows): only the sliced rows are copied out of the tar bytes, in the stored
    precision (the model widens them). Backbones may differ by a row at the end (rounding
    of the duration): the shorter wins.

    Each member's rows-to-time mapping is read from the sample's ``meta.json``
    (``row_times``). When every member has one row per second, row ``k`` is second ``k``
    and a slice is a contiguous slice of every member. Otherwise ``T`` is the seconds
    every member covers and second ``k`` takes, per member, the row covering ``k + 0.5``
    (``grid_rows``), looked up for the rows asked for alone (``gridded``). Raises KeyError
    naming a missing member, ValueError for a malformed array and RowTimesError (a
    ValueError) for a malformed mapping, or one the arrays contradict.
    """

    def __init__(self, sample: dict, members: tuple[str, ...]):
        self.members = []
        for name in members:
            member = feature_member(name)
            if member not in sample:
                raise KeyError(name)
            a = NpyRows(sample[member])
            if len(a.shape) != 2 or a.shape[0] == 0 or a.dtype.kind != "f":
                raise ValueError(f"{member} has shape {a.shape} and dtype {a.dtype}; expected float [T, D]")
            self.members.append(a)
        self.times = row_times(sample.get(META_JSON), tuple(members), tuple(a.shape[0] for a in self.members))
        width = sum(a.shape[1] for a in self.members)
        self.gridded = not all(t.per_second for t in self.times)
        if not self.gridded:  # the contiguous path
            self.shape = (min(a.shape[0] for a in self.members), width)
            return
        seconds = min(second_grid(a.shape[0], t) for a, t in zip(self.members, self.times))
        if seconds == 0:
            raise ValueError(f"the rows of {', '.join(members)} cover no common second")
        self.shape = (seconds, width)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, end, step = rows.indices(self.shape[0])
        if step != 1:
            raise IndexError("feature rows are sliced contiguously")
        end = max(start, end)
        if not self.gridded:
            parts = [a.rows(start, end) for a in self.members]
            # one copy of the clip's rows: writable, contiguous, never a view on the tar bytes
            return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0].copy()
        return self._gather(np.arange(start, end))

    def take(self, seconds) -> np.ndarray:
        """The rows of the given seconds (non-decreasing, each below ``len(self)``), copied."""
        seconds = np.asarray(seconds, dtype=np.intp)
        return self._gather(seconds) if self.gridded else self._gather_rows([seconds] * len(self.members))

    def _gather(self, seconds: np.ndarray) -> np.ndarray:
        return self._gather_rows([grid_rows(a.shape[0], t, seconds) for a, t in zip(self.members, self.times)])

    def _gather_rows(self, indices: list) -> np.ndarray:
        """Each member's rows at its (non-decreasing) indices, concatenated: a copy of those rows alone."""
        parts = []
        for a, take in zip(self.members, indices):
            if len(take) == 0:
                parts.append(np.empty((0, a.shape[1]), a.dtype))
                continue
            lo, hi = int(take[0]), int(take[-1]) + 1  # the index is non-decreasing: read that span alone
            parts.append(a.rows(lo, hi)[take - lo])  # fancy indexing copies
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def video_features(sample: dict, members: tuple[str, ...]) -> np.ndarray:
    """The chosen feature members concatenated along the feature axis, ``[T, F]``, in the
    stored precision. Raises KeyError naming a missing member and ValueError for a malformed array."""
    return FeatureRows(sample, members)[:]


# ---------------------------------------------------------------------------- clips


# The paper's settings per task: (global batch, max text tokens, max video rows per clip).
TASK_SETTINGS = {
    "pretrain": (64, 192, 128),
    "finetune": (128, 96, 36),
}


@dataclass
class ClipConfig:
    task: str = "pretrain"  # pretrain: subtitles; finetune/eval: captions.json
    langs: tuple[str, ...] = LANGS
    members: tuple[str, ...] = ("r21d", "s3d")
    max_text_len: int = TASK_SETTINGS["pretrain"][1]
    max_video_len: int = TASK_SETTINGS["pretrain"][2]
    split: str = "train"  # which captions.json split a finetune or eval stream keeps
    mask_prob: float = 0.05  # intra-modal noise: share of text tokens / video rows masked
    pairs: bool = True  # draw parallel text (only the ``xling`` loss term reads it)


def _window_rows(video, max_len: int, rng: random.Random):
    if video.shape[0] <= max_len:
        return video[:]
    start = rng.randrange(video.shape[0] - max_len + 1)
    return video[start:start + max_len]


def _pick_track(langs: list[str], subs: SubsJson, rng: random.Random):
    """A random language among ``langs`` whose track has cues. Languages found empty are
    dropped from ``langs`` and the draw repeated: uniform over the tracks with cues, and
    only the drawn tracks are decoded."""
    while langs:
        lang = rng.choice(langs)
        if subs.cues(lang):
            return lang
        langs.remove(lang)
    return None


def _inside(cues: list, start: float, end: float) -> bool:
    """Whether a run from ``SubsJson.cues_near`` overlaps the window (else it is the nearest cue)."""
    return bool(cues) and cues[0][1] > start and cues[0][0] < end


def _pretrain_clip(subs, video, cfg: ClipConfig, rng: random.Random):
    subs = subs if isinstance(subs, SubsJson) else SubsJson.from_dict(subs)
    langs = [l for l in subs.langs() if l in cfg.langs]
    lang = _pick_track(langs, subs, rng)
    if lang is None:
        return None
    n = video.shape[0]
    longest = max(1, min(n, cfg.max_video_len))
    length = rng.randint(min(MIN_CLIP_SECONDS, longest), longest)
    start = rng.randint(0, n - length)
    end = start + length
    inside = subs.cues_near(lang, start, end)
    if not _inside(inside, start, end):
        # No subtitle in the window: move the window onto the subtitle closest in time.
        centre = (start + end) / 2
        nearest = min(subs.cues(lang), key=lambda c: abs((c[0] + c[1]) / 2 - centre))
        start = int(max(0, min(n - length, (nearest[0] + nearest[1]) / 2 - length / 2)))
        end = start + length
        inside = subs.cues_near(lang, start, end)
        if not _inside(inside, start, end):
            inside = [nearest]
    text = " ".join(c[2] for c in inside)
    pair, other = None, None
    if cfg.pairs:
        other = _pick_track([l for l in langs if l != lang], subs, rng)
    if other is not None:
        parallel = subs.cues_near(other, start, end)
        if _inside(parallel, start, end):  # never the nearest cue far from the window
            pair = " ".join(c[2] for c in parallel)
    return lang, text, pair, other if pair is not None else None, video[start:end]


def pretrain_clip(subs, video, cfg: ClipConfig, rng: random.Random):
    """A random clip of a video, its subtitles in a random language, and (when another
    language covers the same seconds) the parallel subtitles for the cross-lingual loss.

    ``subs`` is a ``SubsJson`` (``SubsJson.lazy`` decodes only the drawn tracks) or the
    parsed ``subs.json``; ``video`` the ``[T, F]`` array or a ``FeatureRows`` (which copies
    only the clip's rows). The clip's cues, and the other language's, are
    ``SubsJson.cues_near`` the window. Returns ``(lang, text, pair_text_or_None, rows)`` or
    None when no chosen language has cues.
    """
    clip = _pretrain_clip(subs, video, cfg, rng)
    return None if clip is None else (clip[0], clip[1], clip[2], clip[4])


def caption_units(captions: Captions | dict, langs) -> list[tuple]:
    """What one caption draw picks from: each parallel entry with two or more of ``langs``
    as one unit ``("pair", {lang: caption})``, and every other caption of ``langs`` as a unit
    of its own ``("single", lang, caption)``. A caption that a usable entry holds is drawn
    through that entry, never twice; one the entries do not hold (VATEX's first five per
    language, whose two languages were written independently) is drawn alone, so a stream of
    draws covers every caption."""
    captions = captions if isinstance(captions, Captions) else Captions.from_dict(captions)
    units, paired = [], set()
    for entry in captions.entries():
        entry = {l: c for l, c in entry.items() if l in langs and c}
        if len(entry) >= 2:
            units.append(("pair", entry))
            paired.update(entry.items())
    for lang, caps in sorted(captions.by_lang().items()):
        if lang in langs:
            units.extend(("single", lang, c) for c in caps if c and (lang, c) not in paired)
    return units


def _caption_clip(captions: Captions | dict, video, cfg: ClipConfig, rng: random.Random):
    units = caption_units(captions, cfg.langs)
    if not units:
        return None
    unit = rng.choice(units)
    if unit[0] == "single":
        lang, text, pair, pair_lang = unit[1], unit[2], None, None
    elif not cfg.pairs:  # one language of the entry, drawn as a caption of its own
        lang = rng.choice(sorted(unit[1]))
        text, pair, pair_lang = unit[1][lang], None, None
    else:
        lang, pair_lang = rng.sample(sorted(unit[1]), 2)
        text, pair = unit[1][lang], unit[1][pair_lang]
    return lang, text, pair, pair_lang, _window_rows(video, cfg.max_video_len, rng)


def caption_clip(captions: Captions | dict, video, cfg: ClipConfig, rng: random.Random):
    """One draw, uniform over ``caption_units``: a parallel entry (a random two of its
    languages in ``--langs``, as text and pair) or a caption without one (pair None).
    Returns ``(lang, text, pair_or_None, rows)`` or None when no caption is in ``--langs``."""
    clip = _caption_clip(captions, video, cfg, rng)
    return None if clip is None else (clip[0], clip[1], clip[2], clip[4])

