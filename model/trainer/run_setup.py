"""What an mmp-train run is made of, checked before any step: the task's defaults, the loss
terms, the video members and their width against a checkpoint, the S3D fc, the model config
to build or continue, and the rate of each step. Every misfit is one ``ConfigError``.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.runtime.cli import comma_list
from shards.errors import UserError

TASK_LOSSES = {  # the paper's objective per task (Eq. 1-6)
    "pretrain": "inter,intra",
    "finetune": "inter,intra,xling",
}


class ConfigError(UserError):
    """Flags, data and checkpoint that do not fit together."""


def lr_at(step: int, base: float, schedule: str, warmup: int, total: int | None) -> float:
    """The rate of (1-based) ``step``: linear warm-up over ``warmup`` steps, then constant or a
    cosine from ``base`` towards 0 at ``total`` (constant while ``total`` is unknown)."""
    import math

    if warmup and step <= warmup:
        return base * step / warmup
    if schedule == "constant" or total is None:
        return base
    progress = min(1.0, (step - warmup - 1) / max(1, total - warmup))
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def parse_members(text: str) -> tuple[str, ...]:
    from shards.samples import FEATURE_NAMES as FEATURE_MEMBERS

    members = tuple(comma_list(text))
    bad = [m for m in members if m not in FEATURE_MEMBERS]
    if not members or bad:
        raise ConfigError(f"--video-features {text!r}: choose from {', '.join(FEATURE_MEMBERS)}")
    return members


def parse_losses(text: str | None, task: str) -> tuple[str, ...]:
    """``--losses`` as a tuple of terms, the task's default when not given."""
    from model.losses import parse_terms

    try:
        return parse_terms(TASK_LOSSES[task] if text is None else text)
    except ValueError as exc:
        raise ConfigError(f"--losses {exc}") from None


def check_video_dim(cfg, dim: int, members: tuple[str, ...], source: str, layout=None) -> None:
    """The shards' row width ``dim`` (and, given ``layout``, where the s3d columns lie) fits ``cfg``."""
    if cfg.row_dim != dim:
        mapped = (f", whose s3d fc maps {cfg.s3d_fc['in_dim']}-d s3d rows to {cfg.s3d_fc['out_dim']}"
                  if cfg.s3d_fc else "")
        raise ConfigError(
            f"the shards' video features ({'+'.join(members)}) are {dim}-dimensional but {source} expects "
            f"{cfg.row_dim} ({'+'.join(cfg.video_features)}{mapped}); use the same --video-features as that model, "
            "or, from an --init checkpoint, --new-video-input for other features (e.g. Multi30K's regions)")
    if cfg.s3d_fc and layout is not None:
        offset = s3d_offset(layout)
        if offset != cfg.s3d_fc["offset"]:
            raise ConfigError(f"{source} maps its s3d fc over columns from {cfg.s3d_fc['offset']} "
                              f"({'+'.join(cfg.video_features)}) but --video-features {'+'.join(members)} puts "
                              f"the s3d rows at {offset}; use the same --video-features as that model")


def s3d_offset(layout) -> int | None:
    """The first column of the s3d rows in the concatenated input (None without s3d)."""
    offset = 0
    for m in layout:
        if m.name == "s3d":
            return offset
        offset += m.width
    return None


def read_s3d_fc(opts, members, layout):
    """``(weight, bias, config entry)`` for ``--s3d-fc``, or None without it; ConfigError when the
    file, the chosen members or the shards' s3d rows do not fit the map."""
    from model.mmp import S3D_FC_IN, S3D_FC_OUT, S3DFcError, load_s3d_fc

    if opts.s3d_fc is None:
        return None
    try:
        weight, bias, sha256 = load_s3d_fc(opts.s3d_fc)
    except S3DFcError as exc:
        raise ConfigError(str(exc)) from None
    if "s3d" not in members:
        raise ConfigError(f"--s3d-fc maps the s3d rows, but --video-features {','.join(members)} does not include s3d")
    s3d = next(m for m in layout if m.name == "s3d")
    if s3d.meta.get("output") == "embedding" or s3d.width == S3D_FC_OUT:
        raise ConfigError(f"--s3d-fc: the shards' s3d rows are already {s3d.width}-d"
                          f"{' (meta.json output: embedding)' if s3d.meta.get('output') == 'embedding' else ''}, "
                          "the S3D embedding the fc gives; drop --s3d-fc, or use 1024-d mixed_5c s3d features")
    if s3d.width != S3D_FC_IN:
        raise ConfigError(f"--s3d-fc maps {S3D_FC_IN}-d s3d rows (pooled mixed_5c) but the shards' s3d rows "
                          f"are {s3d.width}-d")
    entry = {"offset": s3d_offset(layout), "in_dim": S3D_FC_IN, "out_dim": S3D_FC_OUT,
             "file": str(opts.s3d_fc), "sha256": sha256}
    return weight, bias, entry


def check_s3d_fc(cfg, ck, fc, source: str) -> None:
    """``--s3d-fc`` with a checkpoint: the checkpoint must hold the same map (its own wins anyway)."""
    import torch

    if fc is None:
        return
    if cfg.s3d_fc is None:
        raise ConfigError(f"--s3d-fc: {source} was trained without an s3d fc (its video input is "
                          f"{cfg.video_dim}-d {'+'.join(cfg.video_features)}); drop --s3d-fc or start a new model")
    weight, bias, _ = fc
    if not (torch.equal(ck["model"]["s3d_fc_weight"].float(), weight)
            and torch.equal(ck["model"]["s3d_fc_bias"].float(), bias)):
        raise ConfigError(f"--s3d-fc {fc[2]['file']} differs from the s3d fc {source} was trained with "
                          f"({cfg.s3d_fc.get('file')}); drop --s3d-fc to keep the checkpoint's")


def resolve_model(opts, members, layout, fc=None):
    """The model config, the checkpoint to start from (or None) and whether it is a resume."""
    from model.checkpoint import list_checkpoints, load_checkpoint
    from model.mmp import MMPConfig

    dim = sum(m.width for m in layout)
    if opts.resume and list_checkpoints(opts.out):
        ck = load_checkpoint(opts.out)
        cfg = MMPConfig.from_json(ck["model_config"])
        check_video_dim(cfg, dim, members, f"the checkpoint {ck['path']}", layout)
        check_s3d_fc(cfg, ck, fc, f"the checkpoint {ck['path']}")
        return cfg, ck, True
    if opts.new_video_input and opts.init is None:
        raise ConfigError("--new-video-input replaces the video input layer of an --init checkpoint; give --init")
    if opts.init is not None:
        ck = load_checkpoint(opts.init)
        cfg = MMPConfig.from_json(ck["model_config"])
        if opts.new_video_input:
            if not opts.new_input_lr_scale > 0:
                raise ConfigError(f"--new-input-lr-scale must be positive, got {opts.new_input_lr_scale}")
            # A new input layer for these shards' members (and their own s3d fc, if any).
            cfg.video_features, cfg.s3d_fc = list(members), None if fc is None else fc[2]
            cfg.video_dim = dim if fc is None else dim - fc[2]["in_dim"] + fc[2]["out_dim"]
            cfg.video_input_lr_scale = float(opts.new_input_lr_scale)
            if opts.text_model:
                cfg.text_model = opts.text_model
            return cfg, ck, False
        check_video_dim(cfg, dim, members, f"the checkpoint {ck['path']}", layout)
        check_s3d_fc(cfg, ck, fc, f"the checkpoint {ck['path']}")
        if opts.text_model:
            cfg.text_model = opts.text_model  # the same encoder, found at a new place
        return cfg, ck, False
    if not opts.text_model:
        raise ConfigError("--text-model is required without --init or a checkpoint to --resume")
    s3d_fc = None if fc is None else fc[2]
    video_dim = dim if s3d_fc is None else dim - s3d_fc["in_dim"] + s3d_fc["out_dim"]
    cfg = MMPConfig(text_model=opts.text_model, video_dim=video_dim, video_features=list(members),
                    d_model=opts.d_model, heads=opts.heads, layers=opts.head_layers, dropout=opts.dropout,
                    output_layer=opts.text_output_layer, trainable_layers=opts.text_trainable_layers,
                    temperature=opts.temperature, s3d_fc=s3d_fc)
    return cfg, None, False


def load_without_video_input(model, state: dict, source) -> None:
    """A checkpoint's weights into a model whose video input layer (and s3d fc) is new: every
    other key must match exactly, so only the input layer starts afresh."""
    fresh = ("video_proj.", "s3d_fc_")
    from model.checkpoint import load_weights

    missing, unexpected = load_weights(model, {k: v for k, v in state.items() if not k.startswith(fresh)}, source,
                                       strict=False)
    missing = [k for k in missing if not k.startswith(fresh)]
    if missing or unexpected:
        raise ConfigError(f"--new-video-input: {source} does not fit the model beyond its video input "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def param_groups(model, params: list, input_scale: float) -> list:
    """One group, or the video input layer apart at ``input_scale`` times the rate (``lr_scale``,
    applied by the schedule each step)."""
    if input_scale == 1.0:
        return [{"params": params, "lr_scale": 1.0}]
    inputs = {id(p) for p in model.video_proj.parameters()}
    return [{"params": [p for p in params if id(p) not in inputs], "lr_scale": 1.0},
            {"params": [p for p in params if id(p) in inputs], "lr_scale": input_scale}]


def open_logs(out: Path, rank: int):
    """The JSONL log and, if tensorboard is installed, a SummaryWriter (rank 0 only)."""
    if rank != 0:
        return None, None
    jsonl = open(out / "train_log.jsonl", "a", buffering=1)
    try:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(out / "tensorboard"))
    except ImportError:
        tb = None
    return jsonl, tb


# (flag dest, the smallest value allowed, whether that value itself is allowed)
_LIMITS = (("steps", 1, True), ("epochs", 1, True), ("ckpt_every", 1, True), ("log_every", 1, True),
           ("val_every", 1, True), ("batch_size", 1, True), ("max_text_len", 3, True), ("max_video_len", 1, True),
           ("shuffle_buffer", 1, True), ("warmup_steps", 0, True), ("keep", 0, True), ("loader_workers", 0, True),
           ("threads", 0, True), ("text_trainable_layers", 0, True), ("lr", 0, False), ("clip_grad", 0, False),
           ("temperature", 0, False), ("new_input_lr_scale", 0, False), ("mask_prob", 0, True), ("dropout", 0, True),
           ("max_sample_mb", 0, False))


def check_flags(opts) -> None:
    """Every numeric flag in its range, one sentence for the first that is not."""
    for name, low, inclusive in _LIMITS:
        value = getattr(opts, name, None)
        if value is None:
            continue
        if value < low or (value == low and not inclusive) or value != value:
            bound = f"at least {low}" if inclusive else f"more than {low}"
            raise ConfigError(f"--{name.replace('_', '-')} must be {bound}, got {value}")
    for name in ("mask_prob", "dropout"):
        if getattr(opts, name, 0) >= 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be below 1, got {getattr(opts, name)}")


MEMBER_MB_HELP = ("largest shard member read, in MB per kind: npy, json, text, video, other, and members=N, "
                  "the most members of one sample (default npy=512,json=64,text=32,video=4096,other=64,"
                  "members=256); a sample over a limit is skipped and counted as skipped/member_too_large or "
                  "skipped/too_many_members")


SAMPLE_MB_HELP = ("most MB the members of one sample may hold together, counted from the tar headers before they "
                  "are read (default: twice the npy and twice the json cap of --max-member-mb, 1152 with its "
                  "defaults); a sample over it is skipped and counted as skipped/sample_too_large")


def sample_bytes(megabytes: float | None, limits) -> int:
    """``--max-sample-mb`` in bytes; without it, the default derived from the member caps."""
    from model.trainer.shard_stream import default_sample_bytes
    from shards.members import MB

    return default_sample_bytes(limits) if megabytes is None else int(megabytes * MB)


def member_limits(spec: str | None):
    """``--max-member-mb`` as ``shards.members.MemberLimits``."""
    from shards.members import MemberLimits

    try:
        return MemberLimits.parse(spec)
    except ValueError as exc:
        raise ConfigError(f"--max-member-mb: {exc}") from None
