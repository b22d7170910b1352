"""The training and evaluation input: mmp/ shards -> clips -> token ids -> padded batches.

The pipeline is an explicit list of generator stages, as in webdataset and open_clip:

    shard list -> per-epoch seeded shuffle -> split by node -> split by worker
    -> tar samples (a counting, logging error handler) -> shuffle buffer
    -> clip sampling -> tokenise -> batch

The stream is endless (epoch after epoch), so ranks with uneven shares never leave
DDP waiting; training stops at ``--steps``. Every batch carries its worker's data
position (epoch, raw samples read in that epoch) and its counters, so a checkpoint
can record where each worker was and ``--resume`` skips what was already read
without decoding it.

A clip uses little of a sample, so only that little is decoded: the ``.npy`` headers,
then the clip's rows straight from the tar bytes (``FeatureRows``); the one or two
subtitle tracks drawn, not all nine (``SubtitleTracks``); and the words that can reach
``max_text_len`` tokens, tokenised a batch at a time (``ClipTokenizer``).
``bench/train.py`` measures the loader against reading the same tars with tarfile alone.

Nothing is unpickled: members are decoded by name (``.json`` as JSON, ``.npy`` with
``allow_pickle=False``) and pickle-format members are refused.
"""
from __future__ import annotations

import glob
import io
import json
import logging
import os
import random
import re
import tarfile
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from shards.layout import FORBIDDEN_SUFFIXES

log = logging.getLogger("mmp.data")

LANGS = ("en", "de", "fr", "ru", "es", "cs", "sw", "zh", "vi")
FEATURE_MEMBERS = ("r21d", "s3d", "regions")
MIN_CLIP_SECONDS = 4
# tarfile's stream mode slices its read buffer on every member read, so each read copies up
# to the buffer size: 1 MB made reading 5x slower than 64 kB, which is near the optimum
TAR_BUFSIZE = 1 << 16


class DataError(Exception):
    """A shard specification that cannot be used (empty list, glob matching nothing)."""


# ---------------------------------------------------------------------------- shard lists


def expand_shards(spec: str | list[str]) -> list[str]:
    """Shard names from brace patterns (``mmp-{000000..000099}.tar``), globs, paths and URLs.

    Several specs may be joined with ``::`` (webdataset's rule) or given as a list.
    A local brace pattern that names missing files is an error, as is a glob that
    matches nothing: both are usually a typo, and training on a silent subset is worse.
    """
    import braceexpand

    specs = spec if isinstance(spec, (list, tuple)) else str(spec).split("::")
    urls: list[str] = []
    for s in specs:
        s = s.strip()
        if not s:
            continue
        is_url = "://" in s or s.startswith("pipe:")
        for name in braceexpand.braceexpand(s):
            if is_url:
                urls.append(name)
            elif any(c in name for c in "*?["):
                matched = sorted(glob.glob(os.path.expanduser(name)))
                if not matched:
                    raise DataError(f"--shards: the glob {name!r} matches no file")
                urls += matched
            else:
                path = os.path.expanduser(name)
                if not os.path.exists(path):
                    raise DataError(f"--shards: {name} does not exist")
                if os.path.isdir(path):
                    found = sorted(glob.glob(os.path.join(path, "*.tar")))
                    if not found:
                        raise DataError(f"--shards: directory {name} holds no .tar shards")
                    urls += found
                else:
                    urls.append(path)
    if not urls:
        raise DataError("--shards names no shards; give e.g. 'DATA/mmp/mmp-{000000..000099}.tar'")
    return urls


def epoch_shards(urls: list[str], seed: int, start_epoch: int = 0):
    """Endless stream of ``(epoch, shards)``; each epoch's order is shuffled from (seed, epoch)."""
    epoch = start_epoch
    while True:
        order = list(urls)
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        yield epoch, order
        epoch += 1


def split_by_node(src, rank: int, world_size: int):
    """Each rank takes every world_size-th shard of each epoch (datatrove's ``files[rank::world]``)."""
    for epoch, shards in src:
        yield epoch, shards[rank::world_size]


def split_by_worker(src, worker: int, num_workers: int):
    for epoch, shards in src:
        yield epoch, shards[worker::num_workers]


# ---------------------------------------------------------------------------- tar samples


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


def tar_samples(src, state: StreamState, skip: dict | None = None, handler=counting_handler):
    """Samples ``{"__key__", "__url__", member: bytes}`` from each epoch's shards.

    ``skip`` maps an epoch to the number of raw samples to pass over (resume); they are
    read but not decoded. A sample cut short by a truncated tar is dropped and counted.
    """
    for epoch, shards in src:
        if state.epochs_read and barren(state):
            log.error("stopping: a whole epoch of %d samples gave no usable clip (%s)", state.raw, dict(state.counts))
            return
        state.epoch, state.raw = epoch, 0
        state.epochs_read += 1
        to_skip = (skip or {}).get(epoch, 0)
        for url in shards:
            current = None
            try:
                with _open(url) as raw, tarfile.open(fileobj=(stream := _Counting(raw)), mode="r|*",
                                                     bufsize=TAR_BUFSIZE) as tar:
                    for info in tar:
                        if not info.isfile():
                            continue
                        base = info.name.rsplit("/", 1)[-1]
                        key, _, member = base.partition(".")
                        if member.endswith(FORBIDDEN_SUFFIXES):
                            state.count("skipped/pickle_member")
                            log.warning("%s: refusing pickle-format member %s", url, info.name)
                            continue
                        data = tar.extractfile(info).read()
                        if current is not None and current["__key__"] != key:
                            state.raw += 1
                            if state.raw > to_skip:
                                yield current
                            current = None
                        if current is None:
                            current = {"__key__": key, "__url__": url, "__epoch__": epoch}
                        current[member] = data
                    while stream.read(1 << 16):
                        pass
                    if stream.count - tar.offset < 1024:
                        # tarfile ends quietly when a cut falls between members; a whole tar
                        # ends with two zero blocks, so their absence means a truncated shard
                        raise tarfile.ReadError("no end-of-archive marker (truncated)")
            except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
                handler(state, url, exc)
                if current is not None:
                    state.count("skipped/truncated")
                current = None
            if current is not None:
                state.raw += 1
                if state.raw > to_skip:
                    yield current


def barren(state: StreamState) -> bool:
    """True when the last epoch read nothing, or every sample of a full epoch was unusable:
    later epochs read the same shards, so the endless stream would spin without output."""
    return state.raw == 0 or (state.tried >= state.raw and state.counts["samples/used"] == 0)


def shuffle(src, bufsize: int, rng: random.Random):
    """A shuffle buffer, as webdataset's (fill, then emit a random element per input), drained
    at each epoch's end so an epoch's samples never wait behind the next epoch's."""
    if bufsize <= 1:
        yield from src
        return
    buf, epoch = [], None
    for sample in src:
        if sample["__epoch__"] != epoch:
            rng.shuffle(buf)
            yield from buf
            buf, epoch = [], sample["__epoch__"]
        buf.append(sample)
        if len(buf) >= bufsize:
            i = rng.randrange(len(buf))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


# ---------------------------------------------------------------------------- decoding


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def load_json(data: bytes):
    return json.loads(data.decode("utf-8"))


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
    """The chosen feature members of a sample, concatenated along the feature axis on demand.

    Behaves like the ``[T, F]`` array for what clip sampling needs (``shape``, ``len``,
    slicing rows): only the sliced rows are copied out of the tar bytes, in the stored
    precision (the model widens them). Backbones may differ by a row at the end (rounding
    of the duration): the shorter wins. Raises KeyError naming a missing member and
    ValueError for a malformed array.
    """

    def __init__(self, sample: dict, members: tuple[str, ...]):
        self.members = []
        for name in members:
            member = f"{name}.npy"
            if member not in sample:
                raise KeyError(name)
            a = NpyRows(sample[member])
            if len(a.shape) != 2 or a.shape[0] == 0 or a.dtype.kind != "f":
                raise ValueError(f"{member} has shape {a.shape} and dtype {a.dtype}; expected float [T, D]")
            self.members.append(a)
        self.shape = (min(a.shape[0] for a in self.members), sum(a.shape[1] for a in self.members))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, end, step = rows.indices(self.shape[0])
        if step != 1:
            raise IndexError("feature rows are sliced contiguously")
        end = max(start, end)
        parts = [a.rows(start, end) for a in self.members]
        # one copy of the clip's rows: writable, contiguous, never a view on the tar bytes
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0].copy()


def video_features(sample: dict, members: tuple[str, ...]) -> np.ndarray:
    """The chosen feature members concatenated along the feature axis, ``[T, F]``, in the
    stored precision. Raises KeyError naming a missing member and ValueError for a malformed array."""
    return FeatureRows(sample, members)[:]


_WS = re.compile(r"[ \t\n\r]*")
_SCAN = json.JSONDecoder().scan_once


def _skip_flat_object(s: str, i: int) -> int:
    """The index just past the object at ``s[i]`` if it holds no object (a subtitle track:
    strings, numbers and arrays of cues), found with str.find and counts alone; -1 when
    that cannot be decided so cheaply (a nested object, a brace or an escaped backslash
    in a string), and the caller falls back to a full scan."""
    j = i
    while True:
        j = s.find("}", j + 1)
        if j < 0 or s.find("{", i + 1, j) >= 0:
            return -1
        quotes = s.count('"', i, j)
        if quotes and s.find("\\", i, j) >= 0:  # the writer's UTF-8 JSON rarely escapes anything
            escaped = s.count('\\"', i, j)
            if escaped and s.count("\\\\", i, j):
                return -1  # is \\" an escaped quote or an escaped backslash? let the scanner say
            quotes -= escaped
        if quotes % 2 == 0:  # an even number of string delimiters before it: "}" is outside strings
            return j + 1


def _skip_value(s: str, i: int) -> int:
    """The index just past the JSON value starting at ``s[i]``."""
    if s[i] == "{":
        end = _skip_flat_object(s, i)
        if end > 0:
            return end
    try:  # anything else is decoded and dropped: json's C scanner beats a regular expression here
        return _SCAN(s, i)[1]
    except StopIteration:
        raise ValueError(f"malformed JSON at character {i}") from None


def _object_spans(s: str, i: int, walk: str | None = None) -> tuple[dict, int]:
    """``({key: (value_start, value_end, members)}, end)`` for the JSON object at ``s[i]``, values
    undecoded. ``members`` is None, or for the key ``walk`` (when its value is an object) that
    object's own spans, found in the same pass."""
    if s[i:i + 1] != "{":
        raise ValueError(f"expected a JSON object at character {i}")
    spans = {}
    i = _WS.match(s, i + 1).end()
    if s[i:i + 1] == "}":
        return spans, i + 1
    while True:
        if s[i:i + 1] != '"':
            raise ValueError(f"expected a key at character {i}")
        key, i = json.decoder.scanstring(s, i + 1)
        i = _WS.match(s, i).end()
        if s[i:i + 1] != ":":
            raise ValueError(f"expected ':' at character {i}")
        start = _WS.match(s, i + 1).end()
        if key == walk and s[start:start + 1] == "{":
            members, end = _object_spans(s, start)
        else:
            members, end = None, _skip_value(s, start)
        spans[key] = (start, end, members)
        i = _WS.match(s, end).end()
        if s[i:i + 1] == "}":
            return spans, i + 1
        if s[i:i + 1] != ",":
            raise ValueError(f"expected ',' or '}}' at character {i}")
        i = _WS.match(s, i + 1).end()


class SubtitleTracks:
    """The tracks of a ``subs.json``, each decoded only when a clip asks for its cues.

    A clip needs one or two of up to nine languages, so the others are located (a track
    holds no nested object, so its end is found with ``str.find`` and quote counts) but
    never turned into Python objects. The rest (``segments``, the video id) is scanned
    with json's own scanner. A track that is decoded is checked as strictly as
    ``json.loads`` would; a malformed track that is never drawn is never noticed (the
    whole-file parse counted such a sample as corrupt). Built from bytes, or from an
    already parsed dict (``from_dict``).
    """

    def __init__(self, data: bytes | None = None):
        self._text, self._spans, self._cues = "", {}, {}
        if data is None:
            return
        s = self._text = data.decode("utf-8")
        top, end = _object_spans(s, _WS.match(s).end(), walk="tracks")
        if _WS.match(s, end).end() != len(s):
            raise ValueError(f"extra data after the subs.json object at character {end}")
        if "tracks" not in top:
            return
        a, b, members = top["tracks"]
        if members is None:
            if json.loads(s[a:b]):  # null or an empty list mean no tracks, as a missing key does
                raise ValueError("subs.json 'tracks' is not an object")
            return
        self._spans = {lang: (x, y) for lang, (x, y, _) in members.items()}

    @classmethod
    def from_dict(cls, subs: dict) -> "SubtitleTracks":
        self = cls()
        tracks = subs.get("tracks") or {}
        self._spans = dict.fromkeys(tracks)
        self._cues = {lang: (t.get("cues") or []) for lang, t in tracks.items()}
        return self

    def langs(self) -> list[str]:
        return sorted(self._spans)

    def cues(self, lang: str) -> list:
        """``[[start_s, end_s, text], ...]`` of one language (empty when it has none)."""
        if lang not in self._cues:
            a, b = self._spans[lang]
            track = json.loads(self._text[a:b])
            if not isinstance(track, dict):
                raise ValueError(f"subs.json track {lang!r} is not an object")
            self._cues[lang] = track.get("cues") or []
        return self._cues[lang]


def feature_dim(urls: list[str], members: tuple[str, ...], limit: int = 64) -> int:
    """The video input dimension, read from the first samples that carry the chosen members."""
    state = StreamState()
    seen = 0
    for sample in tar_samples(iter([(0, urls)]), state):
        seen += 1
        try:
            return int(video_features(sample, members).shape[1])
        except (KeyError, ValueError):
            if seen >= limit:
                break
    raise DataError(f"no sample in the first {seen} of --shards carries all of --video-features "
                    f"{','.join(members)}; pick members the shards hold (r21d, s3d, regions)")


# ---------------------------------------------------------------------------- clips


@dataclass
class ClipConfig:
    task: str = "pretrain"  # pretrain: subtitles; finetune/eval: captions.json
    langs: tuple[str, ...] = LANGS
    members: tuple[str, ...] = ("r21d", "s3d")
    max_text_len: int = 192
    max_video_len: int = 128
    split: str = "train"  # which captions.json split a finetune or eval stream keeps
    mask_prob: float = 0.05  # intra-modal noise: share of text tokens / video rows masked


def _window_rows(video, max_len: int, rng: random.Random):
    if video.shape[0] <= max_len:
        return video[:]
    start = rng.randrange(video.shape[0] - max_len + 1)
    return video[start:start + max_len]


def _pick_track(langs: list[str], tracks: SubtitleTracks, rng: random.Random):
    """A random language among ``langs`` whose track has cues, and its cues. Languages found
    empty are dropped from ``langs`` and the draw repeated: uniform over the tracks with cues,
    and only the drawn tracks are decoded."""
    while langs:
        lang = rng.choice(langs)
        cues = tracks.cues(lang)
        if cues:
            return lang, cues
        langs.remove(lang)
    return None, None


def _pretrain_clip(subs, video, cfg: ClipConfig, rng: random.Random):
    tracks = subs if isinstance(subs, SubtitleTracks) else SubtitleTracks.from_dict(subs)
    langs = [l for l in tracks.langs() if l in cfg.langs]
    lang, cues = _pick_track(langs, tracks, rng)
    if lang is None:
        return None
    n = video.shape[0]
    longest = max(1, min(n, cfg.max_video_len))
    length = rng.randint(min(MIN_CLIP_SECONDS, longest), longest)
    start = rng.randint(0, n - length)
    end = start + length
    inside = [c for c in cues if c[1] > start and c[0] < end]
    if not inside:
        # No subtitle in the window: move the window onto the subtitle closest in time.
        centre = (start + end) / 2
        nearest = min(cues, key=lambda c: abs((c[0] + c[1]) / 2 - centre))
        start = int(max(0, min(n - length, (nearest[0] + nearest[1]) / 2 - length / 2)))
        end = start + length
        inside = [c for c in cues if c[1] > start and c[0] < end] or [nearest]
    text = " ".join(c[2] for c in inside)
    pair = None
    other, other_cues = _pick_track([l for l in langs if l != lang], tracks, rng)
    if other is not None:
        parallel = [c for c in other_cues if c[1] > start and c[0] < end]
        if parallel:
            pair = " ".join(c[2] for c in parallel)
    return lang, text, pair, other if pair is not None else None, video[start:end]


def pretrain_clip(subs, video, cfg: ClipConfig, rng: random.Random):
    """A random clip of a video, its subtitles in a random language, and (when another
    language covers the same seconds) the parallel subtitles for the cross-lingual loss.

    ``subs`` is the parsed ``subs.json`` or a ``SubtitleTracks`` (which decodes only the
    drawn tracks); ``video`` the ``[T, F]`` array or a ``FeatureRows`` (which copies only
    the clip's rows). Returns ``(lang, text, pair_text_or_None, rows)`` or None when no
    chosen language has cues.
    """
    clip = _pretrain_clip(subs, video, cfg, rng)
    return None if clip is None else (clip[0], clip[1], clip[2], clip[4])


def _caption_clip(captions: dict, video, cfg: ClipConfig, rng: random.Random):
    by_lang = {l: c for l, c in (captions.get("captions") or {}).items() if l in cfg.langs and c}
    if not by_lang:
        return None
    lang = rng.choice(sorted(by_lang))
    text = rng.choice(by_lang[lang])
    pair = pair_lang = None
    parallel = [p for p in captions.get("parallel") or [] if len([l for l in p if l in cfg.langs]) >= 2]
    if parallel:
        entry = rng.choice(parallel)
        a, b = rng.sample(sorted(l for l in entry if l in cfg.langs), 2)
        text, pair, lang, pair_lang = entry[a], entry[b], a, b
    return lang, text, pair, pair_lang, _window_rows(video, cfg.max_video_len, rng)


def caption_clip(captions: dict, video, cfg: ClipConfig, rng: random.Random):
    """A caption in a random language of ``--langs`` and, when the set has them, a parallel
    caption in another language. Returns ``(lang, text, pair_or_None, rows)`` or None."""
    clip = _caption_clip(captions, video, cfg, rng)
    return None if clip is None else (clip[0], clip[1], clip[2], clip[4])


def sample_clips(src, cfg: ClipConfig, state: StreamState, seed: int):
    """Cut one training clip from each sample, decoding only what the clip uses (the feature
    rows of its window, the subtitle tracks it draws); unusable samples are counted."""
    for sample in src:
        key = sample["__key__"]
        state.tried += 1
        rng = random.Random(f"{seed}/{sample['__epoch__']}/{key}")
        try:
            video = FeatureRows(sample, cfg.members)
            if cfg.task == "pretrain":
                if "subs.json" not in sample:
                    state.count("skipped/no_subs")
                    continue
                clip = _pretrain_clip(SubtitleTracks(sample["subs.json"]), video, cfg, rng)
            else:
                if "captions.json" not in sample:
                    state.count("skipped/no_captions")
                    continue
                captions = load_json(sample["captions.json"])
                if captions.get("split", "train") != cfg.split:
                    state.count("skipped/other_split")
                    continue
                clip = _caption_clip(captions, video, cfg, rng)
        except KeyError as exc:
            state.count(f"skipped/missing_{exc.args[0]}")
            continue
        except (ValueError, UnicodeDecodeError, TypeError, IndexError, AttributeError) as exc:
            state.count("skipped/corrupt")
            log.warning("skipping sample %s in %s: %s", key, sample.get("__url__"), exc)
            continue
        if clip is None:
            state.count("skipped/no_text_in_langs")
            continue
        lang, text, pair, pair_lang, rows = clip
        state.count("samples/used")
        yield {"key": key, "lang": lang, "text": text, "pair": pair, "pair_lang": pair_lang, "video": rows,
               "rng": rng}


# ---------------------------------------------------------------------------- tokens and batches


class ClipTokenizer:
    """Token ids for a list of texts, truncated to ``max_len``, in one call to the tokenizer.

    A clip's subtitles run to hundreds of words, or thousands of characters without a
    space in Chinese, while only ``max_len`` tokens are kept. So each text is cut first:
    to ``max_len`` words (every word is at least one token), then at the first space past
    the characters its language needs on average for ``max_len`` tokens (counted from
    texts that were not truncated), with a margin. A text whose cut gives fewer than
    ``max_len`` tokens is encoded again uncut, so the ids are always those of the whole
    text. That holds for tokenizers whose tokens never span a space (WordPiece,
    SentencePiece, byte-level BPE); the first call checks it against the tokenizer's own
    call on the whole texts and stops cutting when they differ.

    With a fast tokenizer the Rust tokenizer is called directly (a copy, so the caller's
    tokenizer keeps its settings), without offsets and Python-side dicts.
    """

    MARGIN = 1.25

    def __init__(self, tokenizer, max_len: int):
        self.tokenizer, self.max_len = tokenizer, max_len
        self.chars_seen: Counter = Counter()
        self.tokens_seen: Counter = Counter()
        self.checked = False
        self.cutting = True
        self.backend, self.specials = None, 0
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or getattr(tokenizer, "truncation_side", "right") != "right":
            # a slow tokenizer, or one keeping the end of a text: its own call, on the word-capped
            # texts (cutting keeps the start)
            self.cutting = False
        else:
            from tokenizers import Tokenizer

            self.backend = Tokenizer.from_str(backend.to_str())
            self.backend.no_padding()
            self.backend.enable_truncation(max_len)
            self.specials = self.backend.num_special_tokens_to_add(False)
            self._encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)

    def plain(self, texts: list[str]) -> list[list[int]]:
        """The reference: the tokenizer's own call."""
        return self.tokenizer(texts, truncation=True, max_length=self.max_len)["input_ids"] if texts else []

    def _call(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        if self.backend is None:
            return self.plain(texts)
        return [e.ids for e in self._encode(texts)]

    def _cut(self, text: str, lang) -> str:
        chars, tokens = self.chars_seen[lang], self.tokens_seen[lang]
        # until a language is known, one character per token: Chinese fills max_len from the
        # first cut, and a spaced language comes back short once, and counted
        per_token = chars / tokens if tokens >= 2 * self.max_len else 1.0
        budget = int(self.max_len * self.MARGIN * per_token) + 16
        end = text.find(" ", budget) if len(text) > budget else -1
        return text[:end] if end > 0 else text

    def _count(self, ids: list[list[int]], texts: list[str], langs: list) -> None:
        for x, t, lang in zip(ids, texts, langs):
            if len(x) < self.max_len:  # a truncated text only bounds its characters per token
                self.chars_seen[lang] += len(t)
                self.tokens_seen[lang] += max(0, len(x) - self.specials)

    def __call__(self, texts: list[str], langs: list) -> list[list[int]]:
        full = []
        for t in texts:
            words = t.split()
            full.append(" ".join(words[:self.max_len]) if len(words) > self.max_len else t)
        if not self.cutting:
            return self._call(full)
        cut = [self._cut(t, lang) for t, lang in zip(full, langs)]
        ids = self._call(cut)
        self._count(ids, cut, langs)
        short = [i for i, x in enumerate(ids) if len(x) < self.max_len and len(cut[i]) < len(full[i])]
        again = self._call([full[i] for i in short])
        self._count(again, [full[i] for i in short], [langs[i] for i in short])
        for i, x in zip(short, again):
            ids[i] = x
        if not self.checked:
            self.checked = True
            if ids != self.plain(full):
                log.warning("this tokenizer's ids of cut texts differ from those of whole texts: "
                            "encoding whole texts with the tokenizer's own call from now on")
                self.cutting, self.backend = False, None
                return self.plain(full)
        return ids


def tokenize(src, tokenizer, cfg: ClipConfig, chunk: int = 1):
    """Token ids (truncated to max_text_len) and the intra-modal noise masks, per sample.

    ``chunk`` samples (the batch size in the stream) are tokenised in one call; they are
    yielded one by one, so the stage order and the data positions stay those of a per-sample stage.
    """
    special = set(tokenizer.all_special_ids)
    mask_id = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
    encode = ClipTokenizer(tokenizer, cfg.max_text_len)

    def flush(buf):
        texts, langs = [], []
        for s in buf:
            texts.append(s["text"])
            langs.append(s["lang"])
            if s["pair"]:
                texts.append(s["pair"])
                langs.append(s.get("pair_lang"))
        encoded = iter(encode(texts, langs))
        for s in buf:
            ids = next(encoded)
            s["pair_ids"] = next(encoded) if s["pair"] else None
            rng = s.pop("rng")
            noisy = [mask_id if (t not in special and rng.random() < cfg.mask_prob) else t for t in ids]
            frame_noise = np.array([rng.random() < cfg.mask_prob for _ in range(len(s["video"]))], dtype=bool)
            s["ids"], s["noisy_ids"], s["frame_noise"] = ids, noisy, frame_noise
        return buf

    buf = []
    for s in src:
        buf.append(s)
        if len(buf) >= chunk:
            yield from flush(buf)
            buf = []
    if buf:
        yield from flush(buf)


def _pad(seqs: list[list[int]], pad_id: int):
    """``(ids, mask)`` as long tensors ``[B, longest]``, filled in numpy (a list of ints
    goes into a numpy row much faster than through ``torch.tensor``)."""
    import torch

    n = max(len(s) for s in seqs)
    ids = np.full((len(seqs), n), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), n), dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def collate(samples: list[dict], pad_id: int) -> dict:
    """Pad text and video to the longest in the batch. Samples without a parallel text reuse
    their own text as the pair and are marked invalid for the cross-lingual loss."""
    import torch

    ids, mask = _pad([s["ids"] for s in samples], pad_id)
    noisy, _ = _pad([s["noisy_ids"] for s in samples], pad_id)
    pair_ids, pair_mask = _pad([s["pair_ids"] or s["ids"] for s in samples], pad_id)
    t = max(len(s["video"]) for s in samples)
    f = samples[0]["video"].shape[1]
    # float16 as stored: half the bytes through the worker queues; the model widens it
    half = all(s["video"].dtype == np.float16 for s in samples)
    video = np.zeros((len(samples), t, f), dtype=np.float16 if half else np.float32)
    video_mask = np.zeros((len(samples), t), dtype=bool)
    frame_noise = np.zeros((len(samples), t), dtype=bool)
    for i, s in enumerate(samples):
        n = len(s["video"])
        video[i, :n] = s["video"]
        video_mask[i, :n] = True
        frame_noise[i, :n] = s["frame_noise"]
    return {
        "text_ids": ids, "text_mask": mask, "noisy_ids": noisy,
        "pair_ids": pair_ids, "pair_mask": pair_mask,
        "pair_valid": torch.tensor([s["pair_ids"] is not None for s in samples]),
        "video": torch.from_numpy(video), "video_mask": torch.from_numpy(video_mask),
        "frame_noise": torch.from_numpy(frame_noise),
        "keys": [s["key"] for s in samples], "langs": [s["lang"] for s in samples],
    }


def batched(src, batch_size: int, pad_id: int, state: StreamState, worker: int):
    """Full batches only (DDP needs equal shapes across ranks for the gathered losses)."""
    buf = []
    for s in src:
        buf.append(s)
        if len(buf) == batch_size:
            batch = collate(buf, pad_id)
            batch["position"] = {"worker": worker, "epoch": state.epoch, "raw": state.raw}
            batch["counts"] = dict(state.counts)
            yield batch
            buf = []


# ---------------------------------------------------------------------------- the dataset


def _iterable_dataset():
    import torch.utils.data

    return torch.utils.data.IterableDataset


class ClipStream(_iterable_dataset()):
    """An endless ``IterableDataset`` of batches for one rank; each DataLoader worker runs the
    whole pipeline over its share of the shards.

    ``positions`` (from a checkpoint) maps a worker id to ``(epoch, raw)``: that worker starts
    at that epoch and passes over the raw samples it had already read. Samples that were
    waiting in the shuffle buffer at the checkpoint are among those passed over, so a
    resume skips at most ``shuffle_buffer`` samples per worker and never repeats one.
    """

    def __init__(self, urls, tokenizer, cfg: ClipConfig, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle_buffer: int = 100, positions: dict | None = None):
        self.urls, self.tokenizer, self.cfg = list(urls), tokenizer, cfg
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.shuffle_buffer = shuffle_buffer
        self.positions = {int(k): v for k, v in (positions or {}).items()}

    def pipeline(self, worker: int, num_workers: int):
        state = StreamState()
        epoch, raw = self.positions.get(worker, (0, 0))
        rng = random.Random(f"{self.seed}/{self.rank}/{worker}/{epoch}/{raw}")
        stages = [
            lambda _: epoch_shards(self.urls, self.seed, start_epoch=epoch),
            lambda src: split_by_node(src, self.rank, self.world_size),
            lambda src: split_by_worker(src, worker, num_workers),
            lambda src: _stop_on_empty(src),
            lambda src: tar_samples(src, state, skip={epoch: raw}),
            lambda src: shuffle(src, self.shuffle_buffer, rng),
            lambda src: sample_clips(src, self.cfg, state, self.seed),
            lambda src: tokenize(src, self.tokenizer, self.cfg, chunk=self.batch_size),
            lambda src: batched(src, self.batch_size, self.tokenizer.pad_token_id, state, worker),
        ]
        src = None
        for stage in stages:
            src = stage(src)
        return src

    def __iter__(self):
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.pipeline(worker, num_workers)


def _stop_on_empty(src):
    for epoch, shards in src:
        if not shards:
            return  # this worker has no share of the shards: it simply ends
        yield epoch, shards
