"""VATEX's annotation files into ``Item``s.

VATEX: JSON lists of ``{"videoID", "enCap": [10], "chCap": [10]}``. In VATEX the last five
English captions are translations of the last five Chinese ones (the first five of each
are written independently), so positions 5-9 become parallel en/zh pairs. The paper's
VATEX numbers use HGR's split (Chen et al., CVPR 2020): the v1.0 training file for
training and the public validation file's 3,000 videos cut into 1,500 for validation and
1,500 for test (HGR used VATEX v1.0, which published no test captions). HGR's cut is a
list of names, not a rule, so it is read from a file
(``read_id_list``: text, one id per line, a JSON list, or a ``.npy`` array of strings such
as HGR's ``public_split/tst_names.npy``); no split is made up here.
"""
from __future__ import annotations

import re
from pathlib import Path

from pipeline.downstream.annotations import (Item, clean_caption, clean_captions, read_json, read_lines, split_of,
                                            strip_video_ext)
from shards.errors import UserError


def read_id_list(path: Path, what: str) -> list[str]:
    """Video ids, one per line of a text file, a JSON list, or a ``.npy`` array of strings (never unpickled).

    A trailing video extension (``.mp4``) is dropped, so file names and ids both work."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist; give a file of video ids (one per line, a JSON list or a .npy of strings)")
    if path.suffix == ".npy":
        import numpy as np

        try:
            array = np.load(path, allow_pickle=False)
        except ValueError:
            raise UserError(f"{what} {path} is a pickled (object) array, which is never loaded; convert it to a text "
                            f"file of one id per line (unpickling it yourself only if you trust its source)") from None
        except (OSError, EOFError) as exc:
            raise UserError(f"{what} {path} is not a .npy array file ({exc})") from None
        if array.dtype.kind not in "US" or array.ndim != 1:
            raise UserError(f"{what} {path} is a {array.dtype} array of shape {tuple(array.shape)}; expected a list of id strings")
        values = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.tolist()]
    elif path.suffix == ".json":
        values = read_json(path, what)
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise UserError(f"{what} {path}: expected a JSON list of video id strings")
    else:
        values = read_lines(path)
    ids = [strip_video_ext(v.strip()) for v in values if v.strip()]
    if not ids:
        raise UserError(f"{what} {path} lists no video id")
    return ids


def vatex_items(specs: list[str], test_ids: list[str] | None = None) -> list[Item]:
    """Items of the given VATEX files; with ``test_ids`` (HGR's split), the listed videos of the
    validation file(s) become ``test`` and the others stay ``val``."""
    items = []
    if test_ids is not None:
        moved = set(test_ids)
        splits = [s.split("=", 1)[0] if "=" in s and s.split("=", 1)[0] in ("train", "val", "test")
                  else split_of(Path(s).name) for s in specs]
        if "test" in splits:
            raise UserError("--test-ids takes the test videos out of the validation file; give no test annotation "
                            "file with it (HGR's split does not use VATEX's public test set)")
        if "val" not in splits:
            raise UserError("--test-ids needs the validation file (vatex_validation_v1.0.json): the test videos are "
                            "taken from it")
    for spec in specs:
        split = None
        if "=" in spec and spec.split("=", 1)[0] in ("train", "val", "test"):
            split, spec = spec.split("=", 1)
        path = Path(spec)
        split = split or split_of(path.name)
        data = read_json(path, "VATEX annotations")
        if not isinstance(data, list):
            raise UserError(f"{path} is not a VATEX annotation file: expected a JSON list of {{videoID, enCap, chCap}}")
        for i, entry in enumerate(data):
            if not isinstance(entry, dict) or not isinstance(entry.get("videoID"), str):
                items.append(Item(f"{path.name}#{i}", split, status="bad_annotation",
                                  error=f"entry {i} of {path.name} has no videoID string"))
                continue
            vid = entry["videoID"]
            raw_en, raw_zh = entry.get("enCap"), entry.get("chCap")
            captions = {lang: caps for lang, caps in (("en", clean_captions(raw_en)), ("zh", clean_captions(raw_zh))) if caps}
            parallel = []
            if isinstance(raw_en, list) and isinstance(raw_zh, list) and len(raw_en) == len(raw_zh) == 10:
                for en, zh in zip(raw_en[5:], raw_zh[5:]):
                    en, zh = clean_caption(en), clean_caption(zh)
                    if en and zh:
                        parallel.append({"en": en, "zh": zh})
            m = re.search(r"_(\d+)_(\d+)$", vid)
            duration = float(int(m.group(2)) - int(m.group(1))) if m and int(m.group(2)) > int(m.group(1)) else None
            items.append(Item(vid, split, captions, parallel, duration=duration))
    if test_ids is not None:
        for item in items:
            if item.split == "val" and item.video_id in moved:
                item.split = "test"
        if not any(item.split == "test" for item in items):
            raise UserError(f"none of the {len(moved)} --test-ids is a videoID of the validation file; expected VATEX "
                            f"videoIDs such as Ptf_2VRj-V0_000122_000132")
    return items
