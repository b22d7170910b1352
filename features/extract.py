"""``mmp-extract-features``: R(2+1)D and S3D features at one row per second into ``mmp/`` shards.

One ``mmp`` unit per completed aligned unit, same index; one parquet row per aligned row.
A video with aligned subtitles and a decodable file becomes a sample: ``r21d.npy``
(float16 [N, 512]), ``s3d.npy`` (float16 [N, 1024], pooled mixed_5c, the released HowTo100M
layout; [N, 512] with ``--s3d-output embedding``), ``subs.json`` (copied from aligned) and
``meta.json`` (source facts and, per backbone, the whole recipe, weights file and sha256,
and how its rows map to time: ``rows``, ``row_start_s``, ``row_seconds``). Each backbone
follows a recipe (``--recipe``; shards.feature_spec holds them as data, features.decode follows
them): ``r21d=paper`` gives ceil(duration) rows, ``s3d=released`` reproduces the released
features' FFmpeg chain and gives ceil(frames at 16 fps / 16) rows, so the two can differ
by one row at the end; ``feature_rows`` in the parquet is the smaller, the rows both have.

Throughput (features.batching): ``--decode-workers`` threads decode videos ahead of the model into a bounded
queue (decord and PyAV release the GIL while decoding; the queue holds a few chunks of a
few seconds each, so memory does not depend on video length). Windows from different
videos are batched together to ``--batch-size`` per backbone and put back in order per
video. The models run at the recipe's precision (``--precision``: fp32 by default,
TF32 off; bf16 autocast on request). A CUDA out-of-memory halves that backbone's batch and retries, down to one window; a window
that still does not fit fails its video with status ``oom``.

Devices (features.devices): ``--gpus 0`` runs on the CPU with ``--workers`` processes and no
slot files. ``--gpus N`` runs N worker processes; each claims a free slot i (a non-blocking
``flock`` on ``OUT/.gpu-slot-HOST-i.lock``, released by the kernel when the process ends)
and uses ``cuda:i``. Where a scheduler already gave the process fewer visible GPUs than N
(Ray, Slurm with CUDA_VISIBLE_DEVICES), it uses ``cuda:0``.

Video statuses: ok; no_subtitles (the aligned row has no sample: skipped, recorded);
no_video (no file for the id in SRC); empty_file; no_video_stream (e.g. audio only);
no_frames; too_short (under the 16 frames of one s3d=released row); too_long (over
``--max-video-seconds`` from first frame to end of last); frame_gap (no frame for over
``--max-frame-gap`` seconds); too_large (frames over ``--max-video-pixels``, declared or
decoded, or of an aspect no real video has); decode_error (corrupt or unreadable, with the
reason); oom. The limits (features.video.VideoLimits) are recorded in ``config.json``.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.runtime.budget import Budget, budget_from_args
from pipeline.runtime.cli import comma_list, executor_options, from_args, parse_args
from pipeline.runtime.stage import Stage, Unit, prepare_output, print_summary, run_stage, units_from_upstream
from shards.errors import UserError, command
from shards.layout import MMP, UnitFiles, is_valid_video_id
from shards.codec import load_json, npy_bytes
from shards.reader import read_unit
from shards.samples import CARRIED_KEYS, META_JSON, SUBS_JSON, MmpMeta
from shards.storage import as_path
from shards.versions import versions
from shards.writer import UnitWriter

from shards.members import VIDEO_SUFFIXES

from features.batching import Backbone, VideoJob, extract_videos
from features.decode import DEFAULT_DECODER
from features.devices import Worker, pick_device
from features.extract_flags import build_parser, parse_recipes, parse_weights, torchcodec_problem
from features.video import VideoLimits
from shards.feature_spec import SPECS, get_spec

log = logging.getLogger("mmp.extract")

SCHEMA = pa.schema([
    ("video_id", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("duration", pa.float64()), ("aligned_duration", pa.float64()), ("fps", pa.float64()),
    ("width", pa.int32()), ("height", pa.int32()), ("rotation", pa.int32()), ("decoder", pa.string()),
    ("feature_rows", pa.int32()), ("feature_seconds", pa.float64()), ("feature_dim", pa.int32()),
    ("backbones", pa.string()),
    ("length_mismatch", pa.float64()), ("seconds_decode", pa.float64()),
    ("seconds_model", pa.float64()), ("device", pa.string()), ("source", pa.string()), ("aligned_unit", pa.int32()),
])
RANDOM_SEED = 0


# ---------------------------------------------------------------- one worker's device and models

def load_backbones(specs: dict, weights: dict, random_weights: bool, device: str,
                   preloaded: dict | None = None) -> dict:
    """name -> Backbone on `device` following its recipe (`specs`), from --weights files or seeded random init;
    a model in `preloaded` ((name, path) -> (CPU model, sha256), taken out of it) is not read again."""
    from features.weights import load_backbone, random_backbone

    preloaded = {} if preloaded is None else preloaded

    out = {}
    for name, spec in specs.items():
        if name in weights:
            if (name, weights[name]) in preloaded:
                model, sha = preloaded.pop((name, weights[name]))
                model = model.to(device)
            else:
                model, sha = load_backbone(name, weights[name], device)
            info = {"weights": Path(weights[name]).name, "sha256": sha}
        else:
            model = random_backbone(name, seed=RANDOM_SEED, device=device)
            info = {"weights": "random", "seed": RANDOM_SEED,
                    "warning": "RANDOM WEIGHTS: these features are meaningless (smoke run)"}
        out[name] = Backbone(spec, model, info)
    return out


# ---------------------------------------------------------------- the stage

def find_video_file(src: Path, video_id: str) -> Path | None:
    """`src/{video_id}.{ext}` for the first known video extension that exists.

    A few stat calls per video instead of listing a directory that may hold a million files.
    """
    for ext in VIDEO_SUFFIXES:
        path = src / f"{video_id}.{ext}"
        if path.is_file():
            return path
    return None


def _crawl_members(tar_path: Path) -> dict:
    """video_id -> (tar path, data offset, size, suffix) of video members in one crawl tar."""
    found: dict = {}
    try:
        with tarfile.open(tar_path, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, _, member = info.name.rsplit("/", 1)[-1].partition(".")
                if member in VIDEO_SUFFIXES:
                    found.setdefault(key, (str(tar_path), info.offset_data, info.size, "." + member))
    except (tarfile.TarError, OSError, EOFError) as exc:
        log.warning("%s unreadable: %s", tar_path, exc)
    return found


class ExtractStage(Stage):
    name = "mmp"
    layout = MMP
    schema = SCHEMA
    resources = {"num_cpus": 1, "num_gpus": 1}

    def __init__(self, aligned: Path, videos: Path, out: Path, backbones: list, weights: dict, random_weights: bool,
                 *, gpus: int, workers: int, batch_size: int, decode_workers: int, chunk_seconds: int,
                 specs: dict | None = None, limits: VideoLimits = VideoLimits(), budget: Budget | None = None,
                 decoder: str = DEFAULT_DECODER):
        self.aligned, self.videos, self.out = as_path(aligned), Path(videos), as_path(out)
        self.backbones, self.weights, self.random_weights = list(backbones), dict(weights), random_weights
        # The recipe each backbone follows (default: shards.feature_spec.DEFAULT_RECIPES).
        self.specs = {n: (specs or {}).get(n) or get_spec(n) for n in self.backbones}
        self.gpus, self.workers, self.batch_size, self.decode_workers = gpus, workers, batch_size, decode_workers
        self.chunk_seconds, self.limits, self.decoder = chunk_seconds, limits, decoder
        self.budget = budget  # each video's decoding and extraction (Stage.within_budget)
        self.crawl_source = bool(list(self.videos.glob("crawl-*.stats.json")))
        # Read by executors that place work by resources (e.g. a Ray executor).
        self.resources = {"num_cpus": max(1, decode_workers), "num_gpus": 1 if gpus > 0 else 0}

    def plan(self) -> list[Unit]:
        units = units_from_upstream(self.aligned, "aligned")
        if not units:
            raise UserError(f"--aligned {self.aligned} holds no completed aligned units; run mmp-align or mmp-import first")
        return units

    def config(self) -> dict:
        return {"aligned": str(self.aligned), "videos": str(self.videos), "source": "crawl" if self.crawl_source else "files",
                "backbones": self.backbones, "weights": {k: str(v) for k, v in self.weights.items()},
                "random_weights": self.random_weights, "gpus": self.gpus, "batch_size": self.batch_size,
                "decode_workers": self.decode_workers, "chunk_seconds": self.chunk_seconds, "decoder": self.decoder,
                "limits": dataclasses.asdict(self.limits), "specs": {n: spec.to_json() for n, spec in self.specs.items()}}

    def built_from(self, unit: Unit) -> dict | None:
        from pipeline.runtime.lineage import unit_identity

        return {"aligned": unit_identity(UnitFiles(self.aligned, "aligned", unit.index))}

    def fingerprint(self) -> dict:
        from pipeline.runtime.lineage import content_hash, stage_identity

        return {"aligned_identity": stage_identity(self.aligned), "backbones": self.backbones,
                "weights_identity": {k: content_hash(v) if Path(v).is_file() else str(v)
                                     for k, v in self.weights.items()},
                "random_weights": self.random_weights, "decoder": self.decoder,
                "recipes": {n: [spec.key, spec.precision, spec.output] for n, spec in self.specs.items()}}

    preloaded: dict | None = None  # (name, path) -> (CPU model, sha256) main() checked, for units run in-process
    _worker: Worker | None = None  # this process's device, slot and models, made on first use

    def __getstate__(self):  # a pickled copy loads its own models on its own device
        return {k: v for k, v in super().__getstate__().items() if k not in ("preloaded", "_worker")}

    def worker(self) -> Worker:
        if self._worker is None:
            self._worker = Worker()
        return self._worker

    def setup_worker(self) -> None:
        pick_device(self.out, self.gpus, self.workers, self.worker())

    def _models(self) -> dict:
        worker = self.worker()
        device = pick_device(self.out, self.gpus, self.workers, worker)
        key = (tuple(self.specs.values()), tuple(sorted(self.weights.items())), self.random_weights, device)
        if worker.models_key != key:
            worker.models = load_backbones(self.specs, self.weights, self.random_weights, device, self.preloaded)
            worker.models_key = key
        return worker.models

    def _source(self, members: dict | None, video_id: str):
        if not is_valid_video_id(video_id):  # never let a malformed id reach a path
            return None
        if members is not None:
            return members.get(video_id)
        return find_video_file(self.videos, video_id)

    def process(self, unit: Unit, writer: UnitWriter) -> None:
        files = UnitFiles(self.aligned, "aligned", unit.index)
        arows, samples, tar_error = read_unit(files)
        if tar_error is not None:
            log.error("%s", tar_error)
            writer.count("aligned_tar_unreadable")
        # A crawl unit holds the videos of the aligned unit with the same index.
        members = _crawl_members(UnitFiles(self.videos, "crawl", unit.index).tar) if self.crawl_source else None
        backbones = self._models()
        device = self.worker().device

        jobs, plans = [], []
        for arow in arows:
            vid = arow["video_id"]
            row = {"video_id": vid, "aligned_duration": arow.get("duration"), "aligned_unit": unit.index}
            sample = samples.get(vid)
            src = self._source(members, vid)
            if sample is None:
                row.update(status="no_subtitles", error=f"no aligned subtitles (aligned status {arow.get('status')})")
            elif src is None:
                where = f"crawl-{unit.index:06d}.tar" if self.crawl_source else str(self.videos)
                row.update(status="no_video", error=f"no video file for {vid} in {where}")
            else:
                if self.crawl_source:
                    jobs.append(VideoJob(vid, tar=src))
                    row["source"] = f"crawl-{unit.index:06d}.tar:{vid}{src[3]}"
                else:
                    jobs.append(VideoJob(vid, path=str(src)))
                    row["source"] = src.name
                plans.append((row, sample))
                continue
            writer.add_row(row)
            self.video_done(row["status"])

        for (row, sample), result in zip(plans, extract_videos(
                jobs, backbones, device=device, batch_size=self.batch_size, decode_workers=self.decode_workers,
                chunk_seconds=self.chunk_seconds, decoder=self.decoder, limits=self.limits,
                within=self.within_budget)):
            info = result.info
            row.update(status=result.status, error=result.error, device=device,
                       seconds_decode=round(result.seconds_decode, 4), seconds_model=round(result.seconds_model, 4))
            if info is not None:
                row.update(duration=info.duration, fps=round(info.fps, 4), width=info.width, height=info.height,
                           rotation=info.rotation, decoder=info.decoder)
            if result.status == "ok":
                got = {name: len(a) for name, a in result.features.items()}
                if got != info.rows:  # a bug in the batching, never a property of the video
                    raise RuntimeError(f"{row['video_id']}: feature rows {got} vs planned {info.rows}")
                # Rows every backbone has (recipes may differ by one at the end: the released S3D
                # recipe drops a tail under half a 1/16 s frame, the paper's R(2+1)D keeps it).
                # Seconds every backbone's rows cover (row_seconds: 1, or 32 / fps for r21d=ig65m),
                # and the one-second rows the trainer's grid gets from them.
                seconds = min(info.plans[n].rows * info.plans[n].seconds for n in got)
                rows = min(got.values()) if all(abs(info.plans[n].seconds - 1.0) < 1e-9 for n in got) \
                    else int(np.floor(seconds + 1e-6))
                row.update(feature_rows=rows, feature_seconds=round(seconds, 4),
                           length_mismatch=round(seconds - info.duration, 4),
                           # Width of the rows once concatenated (r21d 512 + s3d 1024), like the importer's column.
                           feature_dim=sum(b.spec.output_dim for b in backbones.values()),
                           backbones=",".join(backbones))
                writer.write_sample(row["video_id"], self._members(row, sample, info, result, backbones))
                writer.count("feature_rows", rows)
                writer.count("video_seconds", info.duration)
            writer.add_row(row)
            self.video_done(row["status"])

    def _members(self, row, sample, info, result, backbones) -> dict:
        carried = {}
        if META_JSON in sample:
            try:
                extra = load_json(sample[META_JSON])
            except ValueError:
                extra = {}
            if isinstance(extra, dict):
                carried = {key: extra[key] for key in CARRIED_KEYS if key in extra}
        meta = MmpMeta(video_id=row["video_id"], duration=info.duration, fps=info.fps, width=info.width,
                       height=info.height, rotation=info.rotation, decoder=info.decoder,
                       decoder_note=info.fallback_reason, source=row.get("source"),
                       features={name: {**b.spec.to_json(), **b.weights, **info.row_times(name)}
                                 for name, b in backbones.items()},
                       versions=versions("torch", "torchvision", "decord", "av",
                                         *(["torchcodec"] if info.decoder.startswith("torchcodec") else [])),
                       **carried)
        members = {META_JSON: meta.to_member(), SUBS_JSON: sample[SUBS_JSON]}
        for name, b in backbones.items():
            members[b.spec.member] = npy_bytes(result.features[name].astype(np.float16))
        return members


# ---------------------------------------------------------------- CLI

def check_weights(weights: dict) -> dict:
    """Load each --weights file once on the CPU, so a wrong file is one clear error before any unit runs;
    (name, path) -> (CPU model, sha256)."""
    from features.weights import WeightsError, load_backbone

    preloaded = {}
    for name, path in weights.items():
        try:
            model, sha = load_backbone(name, path, "cpu")
        except WeightsError as exc:
            raise UserError(str(exc)) from None
        preloaded[(name, path)] = (model, sha)
    return preloaded


def stage_from_args(args) -> ExtractStage:
    backbones = comma_list(args.backbones)
    unknown = [b for b in backbones if b not in SPECS]
    if not backbones or unknown:
        raise UserError(f"--backbones must name some of {', '.join(sorted(SPECS))} (got {args.backbones!r})")
    if len(set(backbones)) != len(backbones):
        raise UserError(f"--backbones {args.backbones}: a backbone is named twice")
    specs = parse_recipes(args.recipe, args.precision, args.s3d_output, backbones)
    weights = parse_weights(args.weights, backbones)
    missing = [b for b in backbones if b not in weights]
    if missing and not args.random_weights:
        raise UserError(f"no weights for {', '.join(missing)}: pass --weights "
                        + " ".join(f"{b}=PATH" for b in missing) + " (or --random-weights for a smoke run)")
    if not args.aligned.is_dir():
        raise UserError(f"--aligned {args.aligned} is not a directory; point it at DATA/aligned")
    if not args.video_dir.is_dir():
        raise UserError(f"--video-dir {args.video_dir} is not a directory of video files or a crawl output")
    if args.gpus < 0 or args.batch_size < 1 or args.decode_workers < 1 or args.chunk_seconds < 1:
        raise UserError("--gpus must be >= 0 and --batch-size, --decode-workers, --chunk-seconds >= 1")
    if args.decoder == "torchcodec":
        problem = torchcodec_problem()
        if problem:
            raise UserError(f"--decoder torchcodec: {problem}; or use --decoder pyav")
    limits = from_args(VideoLimits, args)
    try:
        limits.check()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.gpus > 0 and args.executor == "ray":
        args.workers = args.gpus  # the GPUs are on the cluster's nodes, not necessarily here
    elif args.gpus > 0:
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"--gpus {args.gpus} but no CUDA device is available; use --gpus 0 for the CPU")
        args.workers = args.gpus
    preloaded = check_weights(weights)  # last: it reads whole checkpoints
    if missing:
        print(f"WARNING: RANDOM WEIGHTS for {', '.join(missing)}: the features written are meaningless; "
              "use them only for smoke runs", file=sys.stderr)
    stage = ExtractStage(args.aligned, args.video_dir, args.out, backbones, weights, args.random_weights,
                         gpus=args.gpus, workers=args.workers, batch_size=args.batch_size,
                         decode_workers=args.decode_workers, chunk_seconds=args.chunk_seconds, specs=specs,
                         limits=limits, budget=budget_from_args(args), decoder=args.decoder)
    stage.preloaded = preloaded
    return stage


@command("mmp-extract-features")
def main(argv=None) -> int:
    args = parse_args(build_parser(), argv)
    stage = stage_from_args(args)
    if args.gpus > 0 or args.workers > 1 or args.executor != "local":
        stage.preloaded = {}  # workers load their own copies; this process needs none
    prepare_output(args.out)
    summary = run_stage(stage, args.out, **executor_options(args))
    print_summary("mmp-extract-features", args.out, summary)
    hint = nothing_usable(summary.counts, args.video_dir)
    if hint:
        print(f"mmp-extract-features: {hint}", file=sys.stderr)
        return 1
    return 1 if summary.units_failed else 0


def nothing_usable(counts, videos) -> str | None:
    """What to do when a run that had videos to do produced no features at all (None otherwise)."""
    statuses = {k.split("/", 1)[1]: n for k, n in counts.items() if k.startswith("status/")}
    if not statuses or statuses.get("ok", 0) or statuses.get("partial", 0):
        return None
    total = sum(statuses.values())
    if statuses.get("no_video", 0) == total:
        return (f"no features: none of the {total} videos has a video file in --video-dir {videos}. Crawl with "
                "--download-video (the videos land in the crawl's samples: --video-dir DATA/crawl), or give "
                "--video-dir a directory of VIDEO_ID.mp4 files")
    return (f"no features: every one of the {total} videos failed ("
            + ", ".join(f"{k} {n}" for k, n in sorted(statuses.items())) + "); the unit parquet rows say why")


if __name__ == "__main__":
    sys.exit(main())
