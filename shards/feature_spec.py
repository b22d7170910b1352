"""Feature recipes as data: what frames each backbone sees, at what size and precision, and
how its rows map to seconds.

A recipe is everything that decides the numbers a backbone writes: frame choice, frames per
row, resize arithmetic and scaler, crop, normalisation, the tail rule, precision and which
activation is stored. Each is one frozen ``BackboneSpec`` here, named ``BACKBONE=RECIPE``
(``--recipe s3d=released``), and ``meta.json`` records it whole through ``to_json()``, so
a shard says exactly how its features were made. The decoder and the extraction stage
only follow these fields. This module is pure Python: no numpy, no torch, no decoder.

Recipes:

- ``r21d=paper`` (default): the paper's R(2+1)D window. Re-sampled to 30 fps on a grid
  from the first frame, the 8 consecutive grid frames from the start of every second for
  the IG65M clip8 model; frames decoded at short side 224 (as S3D's), then resized by
  torch to short side 128, centre crop 112, IG65M mean/std. Rows:
  ceil(duration) (a trailing partial second gets a row; its times past the end repeat
  the last frame). Row t covers [t, t + 1) s from the first frame.
- ``s3d=released`` (default): the recipe of the released HowTo100M S3D features (16 fps,
  contiguous 16-frame chunks, 224x224, one pooled mixed_5c per second). It is the public
  extraction code's FFmpeg chain ``fps=16, scale=W:H, crop=224:224:X:Y``, reproduced:

  * frame choice, FFmpeg's ``fps`` filter with its default rounding: every input pts is
    rounded to the nearest 1/16 s tick (half away from zero), output tick n shows the
    last frame whose rounded tick is <= n, i.e. the last frame with pts < (n + 1/2) / 16.
    Ticks run from n0 = round(16 * first pts) to round(16 * end) - 1, end being the last
    frame's pts plus its duration. Times are the stream's own pts (no start offset).
  * geometry, the extractor's arithmetic: short side 224, the long side truncated,
    ``int(w * 224 / h)`` (480x360 -> 298x224; smaller sources are scaled up), scaled by
    FFmpeg's swscale with ``flags=bilinear`` (a filter graph's ``scale`` default), crop at
    ``int((W - 224) / 2)``, ``int((H - 224) / 2)``. A rotated source is turned upright
    first (as the ffmpeg command line's autorotate does) and measured upright.
  * tail: the frames are cut into chunks of 16; the public extractor zero-pads the last
    chunk with black frames to a full 16, so rows = ceil(frames / 16). The features'
    README states the whole-second case: 1m20s -> 80 rows. A video with fewer than 16
    frames (under ~1 s) gets no row and the status ``too_short``.
  * fp32 (the release has no reduced precision); RGB in [0, 1], no mean/std.

  Row t covers ticks [n0 + 16t, n0 + 16t + 16), i.e. [t, t + 1) s from n0 / 16 (within
  1/32 s of the first frame); ``meta.json`` records that start.
- ``r21d=ig65m``: the IG65M PyTorch port's own extraction tool, for features that must match
  ones made with it: the clip32 model on back-to-back 32-frame clips of the source's own
  frames (no re-sampling), rows = floor(frames / 32) (its loader drops a last partial clip);
  each frame divided by 255 and resized as a whole, no crop, by ``F.interpolate(scale_factor=
  128 / short side, bilinear)`` (480x360 -> 170x128), then IG65M mean/std. Row t covers
  32 source frames: 32 / fps seconds (1.067 s at 30 fps), which ``meta.json`` records per
  video; the trainer maps such rows onto seconds. It reads full-size frames, so it decodes
  separately from the other recipes of a run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from shards.samples import feature_member

# A container duration like 3.0000001 s is float noise, not a fourth second of video.
# A window must cover more than this much video to count.
_DURATION_EPS_S = 1e-3
# Float seconds that fall this close below a half tick are taken as the half tick itself
# (decoders give pts * time_base as a float; FFmpeg rounds the exact rational).
_TICK_EPS = 1e-9

FRAME_CHOICES = ("grid", "fps_filter", "native")
SIZE_RULES = ("round", "truncate", "scale_factor")
SCALERS = ("torch_bilinear_antialias", "swscale_bilinear", "torch_bilinear_float")
TAILS = ("repeat_last", "zero_pad", "drop")
PRECISIONS = ("fp32", "tf32", "bf16")
OUTPUTS = {"r21d": ("layer4",), "s3d": ("mixed_5c", "embedding")}
# Architectures a recipe runs (features.weights builds each): R(2+1)D-34 and S3D-G.
FAMILIES = ("r2plus1d_34", "s3dg")


@dataclass(frozen=True)
class BackboneSpec:
    """One recipe: how one backbone turns video into feature rows."""

    # Backbone (registry key, `--weights NAME=PATH` name) and the recipe's name.
    name: str
    recipe: str
    # Human-readable architecture and pre-training, recorded in meta.json.
    architecture: str
    # Frames are chosen on this grid (the video is re-sampled to it); 0 for "native".
    fps: float
    # Frames the model sees per row.
    frames: int
    # "grid": row k takes `frames` grid times from second k, the frame shown at time t being
    #   the last with pts <= t (times from the first frame);
    # "fps_filter": FFmpeg's fps filter (see the module docstring), rows are consecutive
    #   chunks of `frames` output frames;
    # "native": the source's own frames, back-to-back chunks of `frames` in presentation order.
    frame_choice: str
    # Resize so the short side is this many pixels, keeping aspect ratio, then centre crop.
    short_side: int
    # "round": long side rounded to the nearest pixel; "truncate": int(long * short_side / short);
    # "scale_factor": both sides floor(side * short_side / short), as F.interpolate(scale_factor=) gives.
    size_rule: str
    # Who resizes: swscale's bilinear while decoding (the decode size is this recipe's own), or
    # torch's bilinear (antialiased when shrinking) from frames decoded at `source_short_side`
    # (long side truncated, swscale bilinear): the same frames whichever other recipes run.
    scaler: str
    # "torch_bilinear_float": F.interpolate(scale_factor=, bilinear, no antialias) on the
    # native frames divided by 255, in float32 (the IG65M port's Resize).
    # (height, width) of the centre crop fed to the model, offsets int((size - crop) / 2); None:
    # no crop, the whole resized frame (its size then depends on the video).
    crop: tuple[int, int] | None
    # Pixels are divided by this first (uint8 -> [0, 1]).
    scale: float
    # Per-channel RGB mean/std applied after scaling; None means the model takes [0, 1] as is.
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    # "repeat_last": times past the end show the last frame; "zero_pad": missing frames of
    # the last chunk are black (zeros); "drop": a last partial chunk is left out. Under one
    # chunk, "zero_pad" and "drop" make the video `too_short`.
    tail: str
    # Model arithmetic: "fp32" (TF32 off), "tf32" (TF32 matmuls and convolutions on CUDA),
    # "bf16" (autocast). TF32 exists only on CUDA; on the CPU it is fp32.
    precision: str
    # Which activation is stored ("layer4", "mixed_5c" or "embedding"), its width, and how.
    output: str
    output_dim: int
    pooling: str
    # WebDataset member name of the [T, output_dim] float16 array.
    member: str
    # How rows map to time, for readers: row t covers [start + t * row_seconds, ... + row_seconds).
    row_seconds: float = 1.0
    # For the torch scaler: the short side of the decoded frames it starts from.
    source_short_side: int = 224
    # The architecture (one of FAMILIES), which features.weights builds and loads weights into;
    # not in meta.json, where ``architecture`` says it in words.
    family: str = ""

    def __post_init__(self) -> None:
        for field, allowed in (("frame_choice", FRAME_CHOICES), ("size_rule", SIZE_RULES), ("scaler", SCALERS),
                               ("tail", TAILS), ("precision", PRECISIONS), ("family", FAMILIES)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"{self.name}={self.recipe}: {field} must be one of {', '.join(allowed)}, "
                                 f"not {getattr(self, field)!r}")
        if self.output not in OUTPUTS.get(self.name, ()):
            raise ValueError(f"{self.name}={self.recipe}: output {self.output!r} is not one of "
                             f"{', '.join(OUTPUTS.get(self.name, ()))}")
        if (self.frame_choice == "native") != (self.fps == 0):
            raise ValueError(f"{self.name}={self.recipe}: fps 0 means the native frames, and only it")
        if (self.crop is None) != (self.scaler == "torch_bilinear_float"):
            raise ValueError(f"{self.name}={self.recipe}: only the float scaler runs on uncropped frames")
        if self.frame_choice == "grid" and self.frames / self.fps > 1.0 + 1e-9:
            raise ValueError(f"{self.name}: {self.frames} frames at {self.fps} fps exceed the one-second row")
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"{self.name}: give both mean and std or neither")

    @property
    def key(self) -> str:
        return f"{self.name}={self.recipe}"

    def to_json(self) -> dict:
        """Plain JSON types (tuples become lists) for meta.json."""
        out = asdict(self)
        del out["family"]
        out["crop"] = None if self.crop is None else list(self.crop)
        out["mean"] = None if self.mean is None else list(self.mean)
        out["std"] = None if self.std is None else list(self.std)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "BackboneSpec":
        """Inverse of to_json, so a reader can rebuild the spec a shard was made with."""
        names = set(cls.__dataclass_fields__)
        fields = {k: v for k, v in data.items() if k in names}
        fields.setdefault("family", get_spec(fields["name"]).family)  # one per backbone name
        fields["crop"] = None if fields["crop"] is None else tuple(fields["crop"])
        for key in ("mean", "std"):
            if fields[key] is not None:
                fields[key] = tuple(fields[key])
        return cls(**fields)

    def with_options(self, precision: str | None = None, output: str | None = None) -> "BackboneSpec":
        """This recipe with another precision or stored activation (``--precision``, ``--s3d-output``)."""
        from dataclasses import replace

        spec = self
        if precision is not None:
            spec = replace(spec, precision=precision)
        if output is not None and output != spec.output:
            if output == "embedding":
                spec = replace(spec, output="embedding", output_dim=512,
                               pooling="fc (512x1024) over mixed_5c averaged over T,H,W: MIL-NCE's video_embedding")
            else:
                spec = replace(spec, output=output, output_dim=1024, pooling="mean over T,H,W")
        return spec


R21D = BackboneSpec(
    name="r21d",
    recipe="paper",
    architecture="R(2+1)D-34, IG65M pre-trained (Caffe2 port), clip8",
    fps=30.0,
    frames=8,
    frame_choice="grid",
    short_side=128,
    size_rule="round",
    scaler="torch_bilinear_antialias",
    crop=(112, 112),
    scale=1.0 / 255.0,
    mean=(0.43216, 0.394666, 0.37645),
    std=(0.22803, 0.22145, 0.216989),
    tail="repeat_last",
    precision="fp32",
    output="layer4",
    output_dim=512,
    pooling="mean over T,H,W",
    member=feature_member("r21d"),
    family="r2plus1d_34",
)

S3D = BackboneSpec(
    name="s3d",
    recipe="released",
    architecture="S3D-G, MIL-NCE HowTo100M (s3d_howto100m.pth)",
    fps=16.0,
    frames=16,
    frame_choice="fps_filter",
    short_side=224,
    size_rule="truncate",
    scaler="swscale_bilinear",
    crop=(224, 224),
    scale=1.0 / 255.0,
    mean=None,
    std=None,
    tail="zero_pad",
    precision="fp32",
    output="mixed_5c",
    output_dim=1024,
    pooling="mean over T,H,W",
    member=feature_member("s3d"),
    family="s3dg",
)

R21D_IG65M = BackboneSpec(
    name="r21d",
    recipe="ig65m",
    architecture="R(2+1)D-34, IG65M pre-trained (Caffe2 port), clip32",
    fps=0.0,
    frames=32,
    frame_choice="native",
    short_side=128,
    size_rule="scale_factor",
    scaler="torch_bilinear_float",
    crop=None,
    scale=1.0,  # the float scaler already divided by 255
    mean=R21D.mean,
    std=R21D.std,
    tail="drop",
    precision="fp32",
    output="layer4",
    output_dim=512,
    pooling="mean over T,H,W",
    member=feature_member("r21d"),
    row_seconds=0.0,  # 32 source frames: 32 / fps, per video (meta.json's row_seconds)
    family="r2plus1d_34",
)

RECIPES: dict[str, dict[str, BackboneSpec]] = {"r21d": {"paper": R21D, "ig65m": R21D_IG65M},
                                               "s3d": {"released": S3D}}
DEFAULT_RECIPES = {"r21d": "paper", "s3d": "released"}
# Backbones by name, each with its default recipe.
SPECS: dict[str, BackboneSpec] = {name: RECIPES[name][DEFAULT_RECIPES[name]] for name in RECIPES}


def get_spec(name: str, recipe: str | None = None) -> BackboneSpec:
    try:
        recipes = RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(RECIPES))}") from None
    recipe = recipe or DEFAULT_RECIPES[name]
    try:
        return recipes[recipe]
    except KeyError:
        raise ValueError(f"unknown recipe {name}={recipe}; {name} has {', '.join(sorted(recipes))}") from None


# ---------------------------------------------------------------- geometry

def resized_size(width: int, height: int, spec: BackboneSpec) -> tuple[int, int]:
    """(width, height) after the recipe's resize of a width x height (upright) frame."""
    short = min(width, height)
    if spec.size_rule == "scale_factor":
        scale = spec.short_side / short
        return int(math.floor(width * scale)), int(math.floor(height * scale))
    if spec.size_rule == "truncate":
        # The extractor's int(): 480x360 -> 298x224, 176x144 -> 273x224.
        if width >= height:
            w, h = int(width * spec.short_side / height), spec.short_side
        else:
            w, h = spec.short_side, int(height * spec.short_side / width)
    else:
        scale = spec.short_side / short
        w, h = int(round(width * scale)), int(round(height * scale))
    return max(spec.crop[1], w), max(spec.crop[0], h)


def crop_offsets(width: int, height: int, spec: BackboneSpec) -> tuple[int, int]:
    """(top, left) of the centre crop in a width x height frame: int((size - crop) / 2)."""
    return (height - spec.crop[0]) // 2, (width - spec.crop[1]) // 2


# ---------------------------------------------------------------- rows and their frames

def num_windows(duration_s: float) -> int:
    """Rows of a "grid" recipe: ceil(duration), so a trailing partial second gets its row.

    Durations within 1 ms above a whole second count as that whole second (container
    rounding noise).
    """
    if not math.isfinite(duration_s) or duration_s < 0:
        raise ValueError(f"duration must be a finite number of seconds >= 0, got {duration_s!r}")
    return max(0, math.ceil(duration_s - _DURATION_EPS_S))


def window_frame_times(duration_s: float, spec: BackboneSpec) -> list[list[float]]:
    """For a "grid" recipe: timestamps (s, from the first frame) of the frames each row takes.

    Row k covers [k, k+1); its spec.frames timestamps sit on the spec.fps grid from k.
    Timestamps past the end of the video repeat the row's last timestamp inside the video.
    Every row keeps exactly spec.frames entries, so rows batch without ragged shapes.
    The decoder shows, for a timestamp t, the last frame whose presentation time is <= t.
    """
    n = num_windows(duration_s)
    step = 1.0 / spec.fps
    windows: list[list[float]] = []
    for k in range(n):
        times = [k + i * step for i in range(spec.frames)]
        # k < duration (num_windows never counts a row that starts at or past the end).
        inside = [t for t in times if t < duration_s]
        last_inside = inside[-1] if inside else float(k)
        windows.append([t if t < duration_s else last_inside for t in times])
    return windows


def fps_tick(t: float, fps: float) -> int:
    """FFmpeg's rescale of a time to the fps filter's 1/fps ticks, rounding half away from zero."""
    x = t * fps
    return int(math.floor(x + 0.5 + _TICK_EPS)) if x >= 0 else -int(math.floor(-x + 0.5 + _TICK_EPS))


def fps_filter_ticks(start_s: float, end_s: float, fps: float) -> tuple[int, int]:
    """(first tick, number of output frames) FFmpeg's fps filter gives for a stream whose
    first frame is at `start_s` and whose last frame ends at `end_s` (absolute pts)."""
    n0 = fps_tick(start_s, fps)
    return n0, max(0, fps_tick(end_s, fps) - n0)


def fps_filter_output(start_s: float, end_s: float, fps: float, several_streams: bool) -> tuple[int, int]:
    """(first tick, number of frames) ``ffmpeg -i VIDEO -vf fps=...`` writes to rawvideo for a video
    stream whose first frame is at `start_s` and whose last frame ends at `end_s`, both counted
    from the file's start (the command line subtracts the container's start time).

    The fps filter gives ticks from the first frame's (fps_filter_ticks). The command line then
    keeps rawvideo at a constant frame rate from tick 0 when the input file holds several
    streams (its "cfr" sync), so a first frame one or more ticks after the file's start (a video
    that starts after its audio) is repeated from tick 0 on; an input of one stream gets "vscfr",
    which leaves those initial repeats out.
    """
    n0, count = fps_filter_ticks(start_s, end_s, fps)
    if several_streams and n0 > 0 and count > 0:
        return 0, count + n0
    return n0, count


def native_rows(frames: int, spec: BackboneSpec) -> int:
    """Rows of a "native" recipe: back-to-back chunks of spec.frames source frames, the rest dropped."""
    return frames // spec.frames


def fps_filter_rows(frames_out: int, spec: BackboneSpec) -> int:
    """Rows of an "fps_filter" recipe: ceil(frames / spec.frames), none under one chunk."""
    return 0 if frames_out < spec.frames else -(-frames_out // spec.frames)
