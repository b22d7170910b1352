"""``mmp-prepare``: downstream retrieval sets (MSR-VTT, VATEX, Multi30K) as ``mmp/`` shards.

The public annotation files are read as they are published and, with pre-extracted
features, written in the training-shard layout so one loader serves pre-training,
fine-tuning and evaluation. Per sample (key = the dataset's video or image id):
``r21d.npy`` / ``s3d.npy`` (float16 ``[T, dim]``) or ``regions.npy`` (float16 ``[R, D]``),
``captions.json`` (``{"video_id", "split", "captions": {lang: [...]}, "parallel": [{lang:
caption}, ...]}``) and ``meta.json``. One parquet row per input item, failures included.

A retrieval number is only comparable to a published one over the same gallery, so a
video is written only with every feature asked for: one missing a feature file is a
``no_features`` row (the error names the missing member), never a silently smaller
gallery. After the run the command prints, per split, a WARNING line with how many of
the split's videos are not in the shards and why, and every ``meta.json`` records its
split's size as listed by the annotations (``split_videos``, and ``benchmark`` for the
paper's protocols) so ``mmp-eval`` can say when its pool falls short of it.

- MSR-VTT 1k-A (``--split 1k-A``): JSFusion's 1,000 test videos, one sentence each, in
  every language; where a translation of the sentence cannot be found the language
  keeps the video's first translated caption (parquet ``translation_fallback``,
  ``sentence_matched``; one WARNING line with the count). See ``pipeline/downstream/annotations.py``.
- VATEX (``--test-ids FILE``): the paper compares on HGR's split (Chen et al., CVPR
  2020): training on ``vatex_training_v1.0.json``, and the public validation file's
  3,000 videos cut into 1,500 for validation and 1,500 for test. Without ``--test-ids``
  the validation file stays one ``val`` split of 3,000, which is not that protocol.

Formats read: see ``pipeline/downstream/annotations.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.runtime.cli import add_common_flags, add_executor_args, executor_options, parse_args
from pipeline.runtime.langs import add_langs_flag
from pipeline.runtime.stage import Stage, Unit, print_summary, run_stage
from shards.errors import UserError, command
from shards.codec import npy_bytes
from shards.layout import MMP, DamagedUnit, UnitFiles, read_stats
from shards.samples import ABSENT, CAPTIONS_JSON, META_JSON, Captions, MmpMeta, feature_member
from shards.versions import versions
from shards.writer import UnitWriter, sha256_file

from pipeline.downstream.annotations import KEY_RE, Item, msrvtt_items
from pipeline.downstream.feature_files import (FeatureSource, load_feature, open_array, parse_features,
                                               region_source)
from pipeline.downstream.multi30k import multi30k_items
from pipeline.downstream.vatex import read_id_list, vatex_items

log = logging.getLogger("mmp.prepare")

VIDEO_FEATURES = ("r21d", "s3d")
NO_USABLE_FEATURES = ("no_features", "bad_features")
HGR_VAL, HGR_TEST = 1500, 1500  # HGR's cut of VATEX's 3,000 public validation videos

SCHEMA = pa.schema([
    ("video_id", pa.string()), ("dataset", pa.string()), ("split", pa.string()), ("status", pa.string()),
    ("error", pa.string()), ("languages", pa.list_(pa.string())), ("captions", pa.int32()),
    ("parallel", pa.int32()), ("feature_rows", pa.int32()), ("features", pa.list_(pa.string())),
    ("duration", pa.float64()),
    ("sentence_matched", pa.bool_()),  # 1k-A: the csv's sentence is among the video's MSRVTT_data.json captions
    ("translation_fallback", pa.list_(pa.string())),  # 1k-A: languages keeping their first caption, unpaired
])


# ---------------------------------------------------------------- the stage

class PrepareStage(Stage):
    name = "mmp"
    layout = MMP
    schema = SCHEMA

    def __init__(self, dataset: str, items: list[Item], sources: list[FeatureSource], inputs: list[str],
                 unit_size: int, options: dict | None = None, benchmarks: dict | None = None):
        self.dataset, self.sources, self.inputs = dataset, sources, inputs
        self.unit_size, self.options = unit_size, options or {}
        self.benchmarks = benchmarks or {}  # split -> the paper's protocol it is, for meta.json
        self.notes: list[str] = []  # lines main prints before the run
        self.out = None  # the output, where the inputs' digests are kept (set by main)
        self._fingerprint: dict | None = None
        seen, self.items, self.duplicates = set(), [], 0
        for item in items:  # one row and one sample per id, whatever the annotations repeat
            if item.video_id in seen:
                self.duplicates += 1
                continue
            seen.add(item.video_id)
            self.items.append(item)
        if self.duplicates:
            log.warning("%s: %d repeated ids dropped (first kept)", dataset, self.duplicates)
        self.split_videos = Counter(item.split for item in self.items)  # failures included: the split as listed

    def plan(self) -> list[Unit]:
        n = self.unit_size
        return [Unit(i // n, self.items[i:i + n]) for i in range(0, len(self.items), n)]

    def config(self) -> dict:
        return {"dataset": self.dataset, "inputs": self.inputs, "items": len(self.items),
                "duplicates_dropped": self.duplicates, "unit_size": self.unit_size, **self.options,
                "features": {s.name: {"path": str(s.path), "dim": s.dim,
                                      "per_split": {k: str(v) for k, v in s.per_split.items()}} for s in self.sources}}

    def fingerprint(self) -> dict:
        """By content, not path: other annotation or feature files are refused, a copy resumes. Every
        feature file is read once per run (the run asks twice), and on a re-run only if it changed
        (digests kept in the output, ``self.out``, when main has set it)."""
        from pipeline.runtime.lineage import inputs_identity, open_digest_cache

        if self._fingerprint is None:
            with open_digest_cache(self.out) if self.out is not None else contextlib.nullcontext() as cache:
                features = {s.name: inputs_identity([p for p in [s.path] if p]
                                                    + [s.per_split[k] for k in sorted(s.per_split)], cache)
                            for s in self.sources if s.path or s.per_split}
                self._fingerprint = {"dataset": self.dataset, "inputs_identity": inputs_identity(self.inputs, cache),
                                     "features_identity": features, "items": len(self.items),
                                     "unit_size": self.unit_size, **self.options}
        return self._fingerprint

    def process(self, unit: Unit, writer: UnitWriter) -> None:
        for item in unit.items:
            row = self.convert(item, writer)
            writer.add_row(row)
            writer.count(f"split/{row['split']}/{row['status']}")
            if item.sentence_matched is False:
                writer.count("sentence_unmatched")
            for lang in item.fallback:
                writer.count(f"translation_fallback/{lang}")
            self.video_done(row["status"])

    def convert(self, item: Item, writer: UnitWriter) -> dict:
        langs = sorted(lang for lang, caps in item.captions.items() if caps)
        row = {"video_id": item.video_id, "dataset": self.dataset, "split": item.split, "languages": langs,
               "captions": sum(len(c) for c in item.captions.values()), "parallel": len(item.parallel),
               "duration": item.duration, "features": [], "sentence_matched": item.sentence_matched,
               "translation_fallback": list(item.fallback)}
        if item.status:
            return dict(row, status=item.status, error=item.error)
        if not KEY_RE.match(item.video_id):
            return dict(row, status="bad_id", error="id must be letters, digits, '_' or '-' (it names a sample and a file)")
        if not langs:
            return dict(row, status="no_captions", error="the annotations give no non-empty caption")
        arrays, metas, missing, bad = {}, {}, [], []
        for source in self.sources:
            try:
                found = load_feature(source, item)
            except ValueError as exc:
                bad.append(f"{source.name}: {exc}")
                continue
            if found is None:
                missing.append(source.name)
            else:
                arrays[source.name], metas[source.name] = found
        row["features"] = sorted(arrays)
        if bad:
            return dict(row, status="bad_features", error="; ".join(bad)[:500])
        if missing:  # a gallery short of a video is not the benchmark's: never written with fewer members
            where = ", ".join(f"{s.name} in {s.path}" for s in self.sources if s.name in missing)
            found = f"; found {', '.join(sorted(arrays))}" if arrays else ""
            return dict(row, status="no_features", error=f"no {', '.join(missing)} feature file ({where}){found}"[:500])
        row["feature_rows"] = int(next(iter(arrays[k] for k in sorted(arrays))).shape[0])
        captions = Captions(video_id=item.video_id, split=item.split,
                            captions={lang: item.captions[lang] for lang in langs}, parallel=item.parallel)
        meta = MmpMeta(video_id=item.video_id, dataset=self.dataset, split=item.split, features=metas,
                       split_videos=self.split_videos[item.split], versions=versions(),
                       benchmark=self.benchmarks.get(item.split) or ABSENT,
                       duration=ABSENT if item.duration is None else item.duration)
        members = {feature_member(name): npy_bytes(a.astype(np.float16)) for name, a in arrays.items()}
        members.update({CAPTIONS_JSON: captions.to_member(), META_JSON: meta.to_member()})
        writer.write_sample(item.video_id, members)
        writer.count("captions", row["captions"])
        writer.count("parallel", row["parallel"])
        for lang in langs:
            writer.count(f"lang/{lang}")
        return dict(row, status="ok", error=None)


# ---------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmp-prepare",
        description="Convert a downstream retrieval set (public annotation files + pre-extracted features) into "
        "mmp/ shards: features, captions.json (captions per language and parallel pairs) and meta.json per video.",
        epilog="Re-running the same command resumes: finished units are skipped. Check the output with mmp-verify.")
    sub = p.add_subparsers(dest="dataset", required=True)

    def common(sp, feature_help):
        sp.add_argument("--out", required=True,
                        help="where mmp-*.{tar,parquet,stats.json} go: a directory or an fsspec URL (s3://...)")
        sp.add_argument("--features", nargs="+", metavar="NAME=PATH", help=feature_help)
        sp.add_argument("--feature-dim", nargs="+", metavar="NAME=WIDTH",
                        help="expected last dimension per feature (default r21d=512 s3d=1024, regions any; 0 = any)")
        sp.add_argument("--unit-size", type=int, default=1000, help="items per output shard")
        add_executor_args(sp)

    video_help = "s3d=DIR and/or r21d=DIR, each holding VIDEO_ID.npy float [seconds, dim]"
    m = sub.add_parser("msrvtt", help="MSR-VTT (MSRVTT_data.json, the 1k-A test list, translations)")
    m.add_argument("annotations", type=Path, help="MSRVTT_data.json")
    m.add_argument("--split", default="all", choices=["all", "train", "val", "test", "1k-A", "9k"],
                   help="which videos: the official splits, 1k-A (JSFusion's 1,000 test videos, one sentence each) "
                   "or 9k (all the others, for training); default all")
    m.add_argument("--jsfusion-csv", type=Path, help="MSRVTT_JSFUSION_test.csv (needed for --split 1k-A and 9k)")
    m.add_argument("--translations", nargs="+", default=[], metavar="FILE_OR_DIR",
                   help="translated captions: {lang: {video_id: [...]}} JSON, per-language files (de.json or de=PATH) "
                   "or a directory of them")
    common(m, video_help)
    v = sub.add_parser(
        "vatex", help="VATEX (JSON lists with enCap and chCap)",
        description="VATEX as the paper compares on it: HGR's split (Chen et al., CVPR 2020), 25,991 training videos "
        "(vatex_training_v1.0.json) and the public validation file's 3,000 videos cut into 1,500 for validation and "
        "1,500 for test. That cut is HGR's list, not a rule: give it as --test-ids (HGR's public_split/tst_names.npy, "
        "in the VATEX data linked from https://github.com/cshizhe/hgr_v2t#datasets). Without --test-ids the "
        "validation file is one 'val' split of 3,000 and a public test file is 'test': not the paper's protocol.")
    v.add_argument("annotations", nargs="+", help="vatex_*.json files; the split comes from the name or SPLIT=PATH")
    v.add_argument("--test-ids", type=Path, metavar="FILE",
                   help="HGR's split: the validation file's videos listed in FILE are written as split 'test' and the "
                   "others stay 'val' (HGR: 1,500 and 1,500). FILE: one videoID per line, a JSON list, or a .npy array "
                   "of strings such as HGR's tst_names.npy; give no test annotation file with it")
    common(v, video_help)
    t = sub.add_parser("multi30k", help="Multi30K (text files per split and language, image lists, region .npy)")
    t.add_argument("root", type=Path, help="directory with train.en, train.de, ..., train_images.txt, ...")
    t.add_argument("--splits", nargs="+", default=["train", "val", "test_2016_flickr"], help="splits to convert")
    add_langs_flag(t, default=("en", "de", "fr", "cs"), help="the languages to read where present (the default: "
                   "those the Multi30K annotations have)")
    common(t, "regions=DIR (IMAGE_STEM.npy [R, D] each, or SPLIT.npy [N, R, D]) or regions=FILE.npy (one split)")
    add_common_flags(p)
    return p


def make_stage(args) -> PrepareStage:
    if args.unit_size < 1:
        raise UserError("--unit-size must be at least 1")
    benchmarks, notes = {}, []
    if args.dataset == "multi30k":
        sources = [region_source(n, path, d, args.splits)
                   for n, path, d in parse_features(args.features, ("regions",), args.feature_dim)]
        items = multi30k_items(args.root, args.splits, args.langs)
        inputs, options = [str(args.root)], {"splits": args.splits, "langs": args.langs}
    else:
        sources = []
        for name, path, dim in parse_features(args.features, VIDEO_FEATURES, args.feature_dim):
            if not path.is_dir():
                raise UserError(f"--features {name}={path} is not a directory of VIDEO_ID.npy files")
            sources.append(FeatureSource(name, path, dim))
        if args.dataset == "msrvtt":
            if args.split in ("1k-A", "9k") and args.jsfusion_csv is None:
                raise UserError(f"--split {args.split} needs --jsfusion-csv MSRVTT_JSFUSION_test.csv")
            items = msrvtt_items(args.annotations, args.split, args.jsfusion_csv, args.translations)
            inputs = [str(args.annotations)] + ([str(args.jsfusion_csv)] if args.jsfusion_csv else [])
            options = {"split": args.split, "translations": [str(t) for t in args.translations]}
            if args.split == "1k-A":
                benchmarks = {"test": "MSR-VTT 1k-A"}
                notes = fallback_notes(items)
        else:
            test_ids = read_id_list(args.test_ids, "--test-ids") if args.test_ids is not None else None
            items = vatex_items(args.annotations, test_ids)
            inputs, options = [a.split("=", 1)[-1] for a in args.annotations], {}
            if test_ids is not None:
                options = {"test_ids": str(args.test_ids), "test_ids_sha256": sha256_file(args.test_ids)}
                benchmarks = {"val": "VATEX (HGR split)", "test": "VATEX (HGR split)"}
                notes = hgr_notes(items, test_ids, args.test_ids)
    if not items:
        raise UserError(f"the {args.dataset} annotations select no video")
    for source in sources:
        for split, path in source.per_split.items():
            images = sum(1 for item in items if item.group == split)
            rows = open_array(path, mmap=True).shape[0]
            if rows != images:
                raise UserError(f"--features regions: {path} has {rows} rows but split {split} lists {images} images; "
                                f"row i must be image i of the list")
    stage = PrepareStage(args.dataset, items, sources, inputs, args.unit_size, options, benchmarks)
    stage.notes = notes
    return stage


def _n(k: int, noun: str) -> str:
    """'1 video', '3 videos'."""
    return f"{k} {noun}{'' if k == 1 else 's'}"


def fallback_notes(items: list[Item]) -> list[str]:
    """1k-A: one WARNING line when some videos' translations are not those of their sentence."""
    fell = [item for item in items if item.fallback]
    if not fell:
        return []
    unmatched = sum(1 for item in fell if item.sentence_matched is False)
    langs = Counter(lang for item in fell for lang in item.fallback)
    return [f"mmp-prepare: WARNING: 1k-A: {len(fell)} of {len(items)} videos keep their first translated caption "
            f"({', '.join(f'{k}={v}' for k, v in sorted(langs.items()))}) instead of their sentence's translation: "
            f"{_n(unmatched, 'sentence')} not among the video's MSRVTT_data.json captions, "
            f"{_n(len(fell) - unmatched, 'translation list')} not lining up with them; those captions are unpaired "
            f"(parquet: translation_fallback)"]


def hgr_notes(items: list[Item], test_ids: list[str], path: Path) -> list[str]:
    """What --test-ids made of the validation file, and a WARNING where it is not HGR's 1,500 / 1,500."""
    val = sum(1 for item in items if item.split == "val")
    test = sum(1 for item in items if item.split == "test")
    listed = {item.video_id for item in items if item.split == "test"}
    unknown = len(set(test_ids) - listed)
    notes = [f"mmp-prepare: vatex: --test-ids {path.name}: {test} of the validation file's {val + test} videos are "
             f"'test', the other {val} 'val' (HGR's split)"]
    if unknown:
        notes.append(f"mmp-prepare: WARNING: {unknown} of the {len(set(test_ids))} ids in {path.name} are not videoIDs "
                     f"of the validation file and are left out")
    if (val, test) != (HGR_VAL, HGR_TEST):
        notes.append(f"mmp-prepare: WARNING: HGR's split is {HGR_VAL:,} val / {HGR_TEST:,} test videos; this is "
                     f"{val:,} / {test:,}: results are not comparable to the paper's VATEX numbers")
    return notes


def split_warnings(stage: PrepareStage, out, rank: int = 0, world_size: int = 1) -> list[str]:
    """Per split, the videos the shards lack and why, from every unit's stats file (resumed ones too)."""
    counts: Counter = Counter()
    for unit in stage.plan():
        if unit.index % world_size != rank:
            continue
        try:
            stats = read_stats(UnitFiles(out, stage.name, unit.index))
        except DamagedUnit as exc:  # reported; the other units' counts still make the warnings
            log.warning("%s", exc)
            continue
        counts.update({k: v for k, v in (stats.get("counts") or {}).items() if k.startswith("split/")})
    by_split: dict[str, Counter] = {}
    for key, n in counts.items():
        parts = key.split("/", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:  # written as split/SPLIT/STATUS
            log.warning("mmp-prepare: the count %r in a unit's stats is not split/SPLIT/STATUS; left out", key)
            continue
        by_split.setdefault(parts[1], Counter())[parts[2]] += n
    lines = []
    for split in sorted(by_split, key=lambda s: (s != "test", s)):
        statuses = by_split[split]
        total, ok = sum(statuses.values()), statuses.get("ok", 0)
        if ok == total:
            continue
        lacking = {k: v for k, v in statuses.items() if k in NO_USABLE_FEATURES}
        other = {k: v for k, v in statuses.items() if k != "ok" and k not in NO_USABLE_FEATURES}
        parts = []
        if lacking:
            parts.append(f"{sum(lacking.values())} have no usable features "
                         f"({', '.join(f'{k}={v}' for k, v in sorted(lacking.items()))})")
        if other:
            parts.append(f"{sum(other.values())} other ({', '.join(f'{k}={v}' for k, v in sorted(other.items()))})")
        benchmark = stage.benchmarks.get(split)
        tail = f"; not the paper's {benchmark}" if benchmark else ""
        scope = f" (in this rank's units, {rank} of --world-size {world_size})" if world_size > 1 else ""
        lines.append(f"mmp-prepare: WARNING: {split}{scope}: {total - ok} of {total} videos are not in the shards: "
                     f"{' and '.join(parts)}; retrieval on {split} will be over {_n(ok, 'video')}, not {total}{tail}")
    return lines


@command("mmp-prepare")
def main(argv=None) -> int:
    args = parse_args(build_parser(), argv)
    stage = make_stage(args)
    stage.out = args.out
    for line in stage.notes:
        print(line)
    summary = run_stage(stage, args.out, **executor_options(args))
    print_summary(f"mmp-prepare {args.dataset}", args.out, summary)
    for line in split_warnings(stage, args.out, args.rank, args.world_size):
        print(line)
    return 1 if summary.units_failed else 0


if __name__ == "__main__":
    sys.exit(main())
