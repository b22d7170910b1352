"""The downstream sets' ``Item`` (one video or image with its captions per language), the readers they
share, and MSR-VTT's annotation files (VATEX: ``pipeline.downstream.vatex``; Multi30K:
``pipeline.downstream.multi30k``).

Formats read:
- MSR-VTT: ``MSRVTT_data.json`` (``videos`` with ``split`` train/validate/test, ``sentences``
  with ``video_id``, ``caption``, ``sen_id``) and the JSFusion 1k-A test list
  (``MSRVTT_JSFUSION_test.csv``: key, vid_key, video_id, sentence). ``--split 1k-A`` keeps
  those 1,000 videos with their one sentence; ``--split 9k`` keeps the other 9,000.
- Translated MSR-VTT captions (the Multi-HT100M release; its README does not describe the
  files' layout, so the layouts below are the ones we accept and document): one JSON
  ``{lang: {video_id: [captions]}}``, or one file per language, named by its code
  (``de.json``, ``msrvtt_de.json``, or ``de=PATH``) holding ``{video_id: [captions]}`` (keys
  may end in ``.mp4``) or a translated copy of ``MSRVTT_data.json`` (``{"sentences": [...]}``).
  A translation list as long as the video's English list (in ``sen_id`` order), or as long
  as the captions kept (one per video for 1k-A), is aligned caption by caption and gives
  the ``parallel`` entries; otherwise its captions are kept without pairs.
- 1k-A keeps one query per video in every language, as the paper evaluates it. A
  translation is found by matching the csv's sentence among the video's English captions;
  when the sentence is not among them (the csv and ``MSRVTT_data.json`` differ for a few
  videos) or the translation list does not line up with them, the translation of *that*
  sentence cannot be told apart, so the language keeps the video's first non-empty
  translated caption in the file's order (``sen_id`` order for a translated
  ``MSRVTT_data.json``), unpaired: a fixed rule that does not depend on the model and
  keeps the query count at one per video. Such languages are listed on the item
  (``fallback``, a parquet column) and counted; taking the whole list instead would give
  that video 20 queries in that language.
"""
from __future__ import annotations

import csv
import gzip
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from shards.errors import UserError
from shards.samples import RELEASE_LANGS as LANGS

KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass
class Item:
    """One video or image of a downstream set, as read from its annotations."""

    video_id: str
    split: str
    captions: dict = field(default_factory=dict)
    parallel: list = field(default_factory=list)
    duration: float | None = None
    status: str | None = None  # set when the annotations alone already make it a failure
    error: str | None = None
    group: str | None = None  # Multi30K: the split whose per-split region array holds it
    index: int | None = None  # Multi30K: its row in that array
    sentence_matched: bool | None = None  # MSR-VTT 1k-A: the csv's sentence is among the video's captions
    fallback: list = field(default_factory=list)  # languages keeping their first caption (1k-A, unaligned)


# ---------------------------------------------------------------- reading annotations

def read_json(path: Path, what: str):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist; give the path of the downloaded file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path} is not UTF-8 text ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None


def clean_caption(text) -> str:
    """NFC, whitespace collapsed; '' for anything that is not text."""
    if not isinstance(text, str):
        return ""
    return " ".join(unicodedata.normalize("NFC", text).split())


def clean_captions(values) -> list[str]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        return []
    return [c for c in (clean_caption(v) for v in values) if c]


def strip_video_ext(key: str) -> str:
    return re.sub(r"\.(mp4|avi|webm|mkv)$", "", key)


def group_sentences(sentences) -> dict[str, list[str]]:
    """MSR-VTT ``sentences`` -> ``{video_id: [caption, ...]}`` in ``sen_id`` order (file order if absent)."""
    grouped: dict[str, list[tuple]] = {}
    for pos, s in enumerate(sentences if isinstance(sentences, list) else []):
        if not isinstance(s, dict) or not isinstance(s.get("video_id"), str):
            continue
        sen_id = s.get("sen_id")
        order = (0, sen_id) if isinstance(sen_id, int) else (1, pos)
        grouped.setdefault(strip_video_ext(s["video_id"]), []).append((order, clean_caption(s.get("caption"))))
    return {vid: [c for _, c in sorted(pairs, key=lambda p: p[0])] for vid, pairs in grouped.items()}


def load_msrvtt(path: Path) -> tuple[dict, dict]:
    data = read_json(path, "MSR-VTT annotations")
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list) or not isinstance(data.get("sentences"), list):
        raise UserError(f"{path} is not MSR-VTT's MSRVTT_data.json: expected an object with 'videos' and 'sentences' lists")
    videos = {v["video_id"]: v for v in data["videos"] if isinstance(v, dict) and isinstance(v.get("video_id"), str)}
    return videos, group_sentences(data["sentences"])


def read_jsfusion(path: Path) -> dict[str, str]:
    """``MSRVTT_JSFUSION_test.csv`` -> ``{video_id: sentence}`` in file order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--jsfusion-csv {path} does not exist; it is MSRVTT_JSFUSION_test.csv (key,vid_key,video_id,sentence)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"video_id", "sentence"} <= set(reader.fieldnames):
            raise UserError(f"{path} has columns {reader.fieldnames}; expected key,vid_key,video_id,sentence")
        out: dict[str, str] = {}
        for row in reader:
            vid = (row.get("video_id") or "").strip()
            if vid and vid not in out:
                out[vid] = clean_caption(row.get("sentence"))
    if not out:
        raise UserError(f"{path} lists no videos")
    return out


def _lang_from_name(path: Path) -> str | None:
    tokens = re.split(r"[._\-]", path.name.lower())
    found = [t for t in tokens if t in LANGS]
    return found[-1] if len(set(found)) == 1 else None


def _per_language_table(data, path: Path) -> dict[str, list[str]]:
    if isinstance(data, dict) and isinstance(data.get("sentences"), list):
        return group_sentences(data["sentences"])
    if isinstance(data, list):
        return group_sentences(data)
    if isinstance(data, dict) and all(isinstance(v, (list, str)) for v in data.values()):
        # empty entries are kept as '' so positions still match the English list
        return {strip_video_ext(k): [clean_caption(c) for c in ([v] if isinstance(v, str) else v)]
                for k, v in data.items()}
    raise UserError(f"translations {path}: expected {{video_id: [captions]}} or {{'sentences': [...]}}")


def load_translations(specs: list[str]) -> dict[str, dict[str, list[str]]]:
    """``--translations`` arguments -> ``{lang: {video_id: [captions]}}`` (see the module docstring)."""
    tables: dict[str, dict[str, list[str]]] = {}
    for spec in specs:
        lang = None
        if "=" in spec and spec.split("=", 1)[0] in LANGS:
            lang, spec = spec.split("=", 1)
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.glob("*.json") if _lang_from_name(p))
            if not files:
                raise UserError(f"--translations {path} holds no JSON file named by a language code (de.json, msrvtt_fr.json, ...)")
            for p in files:
                tables.setdefault(_lang_from_name(p), {}).update(_per_language_table(read_json(p, "translations"), p))
            continue
        data = read_json(path, "translations")
        if lang is None and isinstance(data, dict) and data and set(data) <= set(LANGS) \
                and all(isinstance(v, dict) for v in data.values()):
            for code, table in data.items():
                tables.setdefault(code, {}).update(_per_language_table(table, path))
            continue
        lang = lang or _lang_from_name(path)
        if lang is None:
            raise UserError(f"--translations {path}: cannot tell its language; name it like de.json or pass de={path}")
        tables.setdefault(lang, {}).update(_per_language_table(data, path))
    return tables


def attach_translations(item: Item, english_all: list[str], positions: list[int | None],
                        translations: dict[str, dict[str, list[str]]], one_per_video: bool = False) -> None:
    """Add translated captions to ``item`` and pair them with its English captions where aligned.

    ``one_per_video`` (1k-A): a language whose list cannot be aligned keeps its first
    non-empty caption, unpaired, and is listed in ``item.fallback`` (see the module docstring).
    """
    english = item.captions.get("en", [])
    pairs = [{"en": c} for c in english]
    for lang, table in sorted(translations.items()):
        if lang == "en":
            continue
        trans = table.get(item.video_id)
        if not trans or not any(trans):
            continue
        aligned: list[str | None] | None = None
        if english_all and len(trans) == len(english_all) and all(p is not None for p in positions):
            aligned = [trans[p] for p in positions]
        elif len(trans) == len(english):
            aligned = list(trans)
        if aligned is None:
            kept = [t for t in trans if t]
            if one_per_video:
                kept = kept[:1]
                item.fallback.append(lang)
            item.captions[lang] = kept
            continue
        item.captions[lang] = [t for t in aligned if t]
        for pair, t in zip(pairs, aligned):
            if t:
                pair[lang] = t
    item.parallel = [p for p in pairs if len(p) > 1]


def msrvtt_items(data_json: Path, split: str, jsfusion: Path | None, translation_specs: list[str]) -> list[Item]:
    videos, sentences = load_msrvtt(data_json)
    test_1k = read_jsfusion(jsfusion) if split in ("1k-A", "9k") else {}
    translations = load_translations(translation_specs) if translation_specs else {}
    split_names = {"train": "train", "validate": "val", "val": "val", "test": "test"}
    if split == "1k-A":
        ids = list(test_1k)
    elif split == "9k":
        ids = [v for v in videos if v not in test_1k]
    elif split == "all":
        ids = list(videos)
    else:
        ids = [v for v in videos if split_names.get(videos[v].get("split")) == split]
    items = []
    for vid in ids:
        video = videos.get(vid)
        english_all = sentences.get(vid, [])
        if split == "1k-A":
            item_split = "test"
        elif split == "9k":
            item_split = "train"
        else:
            item_split = split_names.get((video or {}).get("split"), "train")
        if video is None:
            items.append(Item(vid, item_split, status="not_in_annotations",
                              error=f"{vid} is in {Path(jsfusion).name} but not in {Path(data_json).name}"))
            continue
        if split == "1k-A":
            sentence = test_1k[vid]
            english = [sentence] if sentence else []
            lowered = [c.lower() for c in english_all]
            positions = [lowered.index(sentence.lower()) if sentence.lower() in lowered else None for _ in english]
            matched = bool(english) and positions[0] is not None
        else:
            english = [c for c in english_all if c]
            positions = [i for i, c in enumerate(english_all) if c]
        duration = None
        try:
            duration = round(float(video["end time"]) - float(video["start time"]), 3)
        except (KeyError, TypeError, ValueError):
            pass
        item = Item(vid, item_split, {"en": english} if english else {}, duration=duration)
        if split == "1k-A" and english:
            item.sentence_matched = matched
        if english:
            attach_translations(item, english_all, positions, translations, one_per_video=split == "1k-A")
        items.append(item)
    return items


def split_of(name: str) -> str:
    """A file or split name -> train / val / test."""
    low = name.lower()
    if "train" in low:
        return "train"
    if "val" in low or "dev" in low:
        return "val"
    if "test" in low:
        return "test"
    raise UserError(f"cannot tell the split of {name}; pass it as train=PATH, val=PATH or test=PATH")


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return f.read().splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text ({exc.reason})") from None
