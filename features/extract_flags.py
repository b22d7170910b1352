"""mmp-extract-features' command line: the parser, and the per-backbone flags read and checked
(``--weights NAME=PATH``, ``--recipe NAME=RECIPE``, ``--precision [NAME=]P``, ``--s3d-output``)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.runtime.budget import Budget, add_budget_args
from pipeline.runtime.cli import OldSpelling, add_common_flags, add_executor_args, add_options
from shards.errors import UserError
from shards.storage import as_path

from features.decode import DECODERS, DEFAULT_CHUNK_SECONDS, DEFAULT_DECODER
from features.video import VideoLimits
from shards.feature_spec import DEFAULT_RECIPES, OUTPUTS, PRECISIONS, RECIPES, SPECS, get_spec

log = logging.getLogger("mmp.extract")

DEFAULT_BACKBONES = ("r21d", "s3d")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mmp-extract-features",
        description="Decode each aligned video and write one feature row per second per backbone into training "
        "shards (mmp-*.tar), each backbone following a named recipe (shards/feature_spec.py): r21d=paper (R(2+1)D-34 "
        "IG65M clip8, 30 fps, 8 frames from the start of every second, 112x112) and s3d=released (S3D-G MIL-NCE, "
        "the released HowTo100M features' own FFmpeg chain: fps=16, short side 224 truncated, bilinear, centre "
        "crop 224, 16-frame chunks, pooled mixed_5c, fp32).",
        epilog="Re-running the same command resumes: finished units are skipped. Rows: r21d=paper gives "
        "ceil(duration); s3d=released gives ceil(frames at 16 fps / 16), the last chunk padded with black frames, "
        "and a video under 16 frames is 'too_short'. meta.json records each recipe whole and how its rows map "
        "to seconds. Example: mmp-extract-features --aligned DATA/aligned --video-dir DATA/videos --out DATA/mmp "
        "--gpus 8 --weights r21d=r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth s3d=s3d_howto100m.pth")
    p.add_argument("--aligned", required=True, type=as_path, help="mmp-align / mmp-import output (aligned-*.tar)")
    p.add_argument("--video-dir", "--videos", dest="video_dir", required=True, type=Path, action=OldSpelling,
                   old=("--videos",), help="a directory of VIDEO_ID.mp4/.webm/... files, or an mmp-crawl output "
                   "made with --download-video (detected by its crawl-*.stats.json files); --videos elsewhere is "
                   "a list of videos")
    p.add_argument("--out", required=True, type=as_path, help="where mmp-*.{tar,parquet,stats.json} go")
    p.add_argument("--gpus", type=int, default=0,
                   help="0: run on the CPU (with --workers processes); N: one worker process per GPU, cuda:0..N-1")
    p.add_argument("--weights", nargs="+", default=[], metavar="NAME=PATH",
                   help="checkpoint per backbone: r21d=r2plus1d_34_clip8_ig65m_*.pth s3d=s3d_howto100m.pth")
    p.add_argument("--random-weights", action="store_true",
                   help="random weights for backbones without --weights (smoke runs only: features are meaningless)")
    p.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES),
                   help=f"comma-separated, from {', '.join(sorted(SPECS))} (default r21d,s3d)")
    p.add_argument("--recipe", nargs="+", default=[], metavar="NAME=RECIPE",
                   help="recipe per backbone: " + "; ".join(f"{n}: {', '.join(RECIPES[n])} (default {DEFAULT_RECIPES[n]})"
                                                           for n in sorted(RECIPES)))
    p.add_argument("--precision", nargs="+", default=[], metavar="[NAME=]P",
                   help="model arithmetic, fp32 | tf32 | bf16, for every backbone or per backbone (s3d=fp32 "
                   "r21d=bf16); default: the recipe's own (fp32 for both; bf16 is faster on GPUs and moves rows, "
                   "see bench/extract.py). tf32 differs from fp32 only on CUDA")
    p.add_argument("--s3d-output", choices=OUTPUTS["s3d"], default="mixed_5c",
                   help="mixed_5c: the 1024-d pooled mixed_5c (the released features' format, default); embedding: "
                   "MIL-NCE's 512-d video embedding, the checkpoint's fc over it (the paper's 512-d S3D vector)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per model call, across videos")
    p.add_argument("--decoder", choices=DECODERS, default=DEFAULT_DECODER,
                   help="decord (default): the ffmpeg command line's frames byte for byte, the fastest exact decoder "
                   "per CPU-second (bench/extract.py); pyav: the same bytes through FFmpeg's own filters, faster per "
                   "wall-second of one video; torchcodec: on the CPU, or on each worker's GPU (NVDEC) with --gpus N, "
                   "frames not byte-equal to FFmpeg's (RGB "
                   "converted before the resize, mean abs diff ~1/255). Row counts are the same with each. A video the "
                   "chosen decoder cannot do is decoded with PyAV (meta.json: decoder, decoder_note)")
    p.add_argument("--decode-workers", type=int, default=2, help="decoding threads per worker")
    p.add_argument("--chunk-seconds", type=int, default=DEFAULT_CHUNK_SECONDS,
                   help="seconds of windows decoded at a time; bounds memory (default 4)")
    add_options(p, VideoLimits, groups={"limits": "what one video may claim (beyond it: a failure row)"})
    add_budget_args(p, EXTRACT_BUDGET, "decoding and extracting one video (raise it for long videos on the CPU)")
    add_executor_args(p)
    add_common_flags(p)
    return p


# A 12-hour video (--max-video-seconds) takes minutes on a GPU; decoding holds a few chunks of a few
# seconds (--chunk-seconds), so memory does not grow with a video's length.
EXTRACT_BUDGET = Budget(seconds=3600.0, memory_mb=8192.0)


def torchcodec_problem() -> str | None:
    """Why ``--decoder torchcodec`` cannot run here (None when it can): torchcodec missing, or FFmpeg's
    shared libraries it loads."""
    try:
        import torchcodec.decoders  # noqa: F401  (loads FFmpeg's libraries)
    except ImportError as exc:
        return f"torchcodec is not installed ({exc}); pip install torchcodec"
    except (OSError, RuntimeError) as exc:
        return (f"torchcodec cannot load FFmpeg's shared libraries ({str(exc).splitlines()[0][:160]}); install "
                "FFmpeg (apt-get install ffmpeg)")
    return None


def split_named(item: str, flag: str, value_name: str, example: str, backbones: list) -> tuple[str, str]:
    """``NAME=VALUE`` of a per-backbone flag, NAME one of --backbones; UserError otherwise."""
    name, sep, value = item.partition("=")
    if not sep or not value:
        raise UserError(f"{flag} takes NAME={value_name} (e.g. {example}), got {item!r}")
    if name not in backbones:
        raise UserError(f"{flag} {name}=... names a backbone not in --backbones {','.join(backbones)}")
    return name, value


def parse_weights(items: list, backbones: list) -> dict:
    weights = {}
    for item in items:
        name, path = split_named(item, "--weights", "PATH", "s3d=s3d_howto100m.pth", backbones)
        if not Path(path).is_file():
            raise UserError(f"--weights {name}={path}: no such file")
        weights[name] = str(Path(path))
    return weights


def parse_recipes(recipes: list, precisions: list, s3d_output: str, backbones: list) -> dict:
    """backbone -> BackboneSpec from --recipe NAME=RECIPE, --precision [NAME=]P and --s3d-output."""
    chosen = {}
    for item in recipes:
        name, recipe = split_named(item, "--recipe", "RECIPE", "s3d=released", backbones)
        try:
            chosen[name] = get_spec(name, recipe)
        except ValueError as exc:
            raise UserError(f"--recipe {item}: {exc}") from None
    precision: dict = {}
    for item in precisions:
        name, sep, value = item.rpartition("=")
        targets = [name] if sep else list(backbones)
        if sep and name not in backbones:
            raise UserError(f"--precision {item} names a backbone not in --backbones {','.join(backbones)}")
        if value not in PRECISIONS:
            raise UserError(f"--precision {item}: choose one of {', '.join(PRECISIONS)}")
        precision.update({t: value for t in targets})
    specs = {}
    for name in backbones:
        spec = chosen.get(name) or get_spec(name)
        specs[name] = spec.with_options(precision=precision.get(name), output=s3d_output if name == "s3d" else None)
    return specs
