"""Per-backbone preprocessing as data, and where each one-second window samples its frames.

Everything that decides what numbers a backbone sees (frame rate, frames per window,
where a window sits in its second, resize, crop, normalisation) lives here, once, as a
frozen dataclass per backbone. The decoder and the extraction stage read it, and
`meta.json` records it through `to_json()`, so a shard says exactly how its features
were made. This module is pure Python: no torch, no decoder.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

# A container duration like 3.0000001 s is float noise, not a fourth second of video.
# A window must cover more than this much video to count.
_DURATION_EPS_S = 1e-3


@dataclass(frozen=True)
class BackboneSpec:
    """How one backbone turns one second of video into one feature row."""

    # Registry key and `--weights NAME=PATH` name.
    name: str
    # Human-readable architecture and pre-training, recorded in meta.json.
    architecture: str
    # Frames are sampled on this grid (the video is re-sampled to it, not decoded at its own rate).
    fps: float
    # Frames the model sees per window (one window per second of video).
    frames: int
    # "start": frames k, k + 1/fps, ... from the start of second k (clip fits in a second);
    # "centre": the clip is centred on k + 0.5 (clip longer than a second, e.g. 32 frames at 30 fps).
    placement: str
    # Resize so the short side is this many pixels, keeping aspect ratio, then centre crop.
    short_side: int
    # (height, width) of the centre crop fed to the model.
    crop: tuple[int, int]
    # Pixels are divided by this first (uint8 -> [0, 1]).
    scale: float
    # Per-channel RGB mean/std applied after scaling; None means the model takes [0, 1] as is.
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    # Width of the stored feature row.
    output_dim: int
    # Which activation is stored, for readers of meta.json.
    output: str
    # WebDataset member name of the [T, output_dim] float16 array.
    member: str

    def __post_init__(self) -> None:
        if self.placement not in ("start", "centre"):
            raise ValueError(f"placement must be 'start' or 'centre', not {self.placement!r}")
        if self.placement == "start" and self.frames / self.fps > 1.0 + 1e-9:
            # Start-aligned clips longer than a second would overlap the next window.
            raise ValueError(f"{self.name}: {self.frames} frames at {self.fps} fps exceed one second; use 'centre'")
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"{self.name}: give both mean and std or neither")

    @property
    def clip_seconds(self) -> float:
        """Time span of one clip on the sampling grid."""
        return self.frames / self.fps

    def to_json(self) -> dict:
        """Plain JSON types (tuples become lists) for meta.json."""
        out = asdict(self)
        out["crop"] = list(self.crop)
        out["mean"] = None if self.mean is None else list(self.mean)
        out["std"] = None if self.std is None else list(self.std)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "BackboneSpec":
        """Inverse of to_json, so a reader can rebuild the spec a shard was made with."""
        fields = dict(data)
        fields["crop"] = tuple(fields["crop"])
        for key in ("mean", "std"):
            if fields[key] is not None:
                fields[key] = tuple(fields[key])
        return cls(**fields)


# The paper's R(2+1)D recipe: re-sample to 30 fps, 8 consecutive frames from the start of
# every second, for the IG65M clip8 model; 112x112 centre crop of a 128 short side and the
# IG65M (Kinetics) mean/std, as the IG65M PyTorch port's extraction tool does.
R21D = BackboneSpec(
    name="r21d",
    architecture="R(2+1)D-34, IG65M pre-trained (Caffe2 port), clip8",
    fps=30.0,
    frames=8,
    placement="start",
    short_side=128,
    crop=(112, 112),
    scale=1.0 / 255.0,
    mean=(0.43216, 0.394666, 0.37645),
    std=(0.22803, 0.22145, 0.216989),
    output_dim=512,
    output="layer4, mean over T,H,W",
    member="r21d.npy",
)

# The 32-frame IG65M model: 32 frames at 30 fps span 1.07 s, so the clip is centred on
# its second. Not the default; kept so `--r21d-clip 32` style runs are one line.
R21D_CLIP32 = BackboneSpec(
    name="r21d_clip32",
    architecture="R(2+1)D-34, IG65M pre-trained (Caffe2 port), clip32",
    fps=30.0,
    frames=32,
    placement="centre",
    short_side=128,
    crop=(112, 112),
    scale=1.0 / 255.0,
    mean=R21D.mean,
    std=R21D.std,
    output_dim=512,
    output="layer4, mean over T,H,W",
    member="r21d.npy",
)

# The released HowTo100M S3D features: 16 fps, contiguous 16-frame chunks (one chunk is
# exactly one second), 224x224, RGB in [0, 1] with no mean/std (MIL-NCE's input).
S3D = BackboneSpec(
    name="s3d",
    architecture="S3D-G, MIL-NCE HowTo100M (s3d_howto100m.pth)",
    fps=16.0,
    frames=16,
    placement="start",
    short_side=224,
    crop=(224, 224),
    scale=1.0 / 255.0,
    mean=None,
    std=None,
    output_dim=1024,
    output="mixed_5c, mean over T,H,W",
    member="s3d.npy",
)

SPECS: dict[str, BackboneSpec] = {s.name: s for s in (R21D, R21D_CLIP32, S3D)}


def get_spec(name: str) -> BackboneSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(SPECS))}") from None


def num_windows(duration_s: float) -> int:
    """Feature rows for a video: ceil(duration), so a trailing partial second gets its row.

    Ceil (not floor) keeps every second that has subtitles covered, and is the same for
    every backbone, so r21d.npy and s3d.npy always have the same length. Durations within
    1 ms above a whole second count as that whole second (container rounding noise).
    """
    if not math.isfinite(duration_s) or duration_s < 0:
        raise ValueError(f"duration must be a finite number of seconds >= 0, got {duration_s!r}")
    return max(0, math.ceil(duration_s - _DURATION_EPS_S))


def window_frame_times(duration_s: float, spec: BackboneSpec) -> list[list[float]]:
    """Timestamps (s, from the video's first frame) of the frames each window feeds the model.

    Window k covers [k, k+1). Its spec.frames timestamps sit on the spec.fps grid: from k
    ("start" placement) or centred on k + 0.5 ("centre"). Timestamps past the end of the
    video repeat the window's last timestamp inside the video (short tails are padded by
    repeating the last frame); in a centred clip, timestamps before 0 repeat time 0. Every
    window keeps exactly spec.frames entries, so windows batch without ragged shapes.
    The decoder shows, for a timestamp t, the last frame whose presentation time is <= t.
    """
    n = num_windows(duration_s)
    step = 1.0 / spec.fps
    windows: list[list[float]] = []
    for k in range(n):
        if spec.placement == "start":
            first = float(k)
        else:
            first = k + 0.5 - spec.clip_seconds / 2.0
        times = [first + i * step for i in range(spec.frames)]
        # The last grid time strictly inside the video; window k always has one because
        # k < duration (num_windows never counts a window that starts at or past the end).
        inside = [t for t in times if 0.0 <= t < duration_s]
        last_inside = inside[-1] if inside else float(k)
        windows.append([0.0 if t < 0.0 else (t if t < duration_s else last_inside) for t in times])
    return windows
