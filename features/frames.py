"""From decoded frames to model windows: the frame plan, resize and crop, windows, batches.

Pure array work shared by both decoders (``features/decode.py``): which frame each
window needs (by timestamp), how each backbone's frames are resized and cropped (from
``shards.feature_spec``), how windows are gathered channels-last with one copy per frame, and
the batched uint8 -> float normalisation the model side runs (``Normaliser``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from shards.feature_spec import (BackboneSpec, crop_offsets, fps_filter_output, fps_filter_rows, native_rows,
                                 resized_size, window_frame_times)

# A frame whose pts is within this of a wanted time counts as shown at it (float noise
# in time bases like 1001/30000).
TIME_EPS_S = 1e-4


@dataclass
class Chunk:
    """Windows [first, first + n) of one video, per backbone uint8 [n, 3, T, H, W].

    The model's shape, stored channels last ([n, T, H, W, 3] memory; see windows_from).
    """

    first: int
    windows: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return max((len(w) for w in self.windows.values()), default=0)


@dataclass
class RowPlan:
    """One recipe's rows for one video: which decoded frame fills each place, and row times.

    ``index`` is [rows, frames] into the video's frames in presentation order, -1 where
    the recipe pads with a black frame. Row t covers ``[start + t * seconds, ... + seconds)``
    seconds from the first frame.
    """

    index: np.ndarray
    start: float
    seconds: float
    frames_out: int  # frames the recipe's sampling gives before padding (fps filter output)

    @property
    def rows(self) -> int:
        return int(self.index.shape[0])

    def needed(self, lo: int, hi: int) -> np.ndarray:
        i = self.index[lo:hi].ravel()
        return i[i >= 0]


def _ticks(times: np.ndarray, fps: float) -> np.ndarray:
    """fps_tick for an array of times (half away from zero, as FFmpeg rescales)."""
    x = times * fps
    return np.where(x >= 0, np.floor(x + 0.5 + 1e-9), -np.floor(-x + 0.5 + 1e-9)).astype(np.int64)


def frame_plan(times: np.ndarray, end: float, specs: Sequence[BackboneSpec],
               origin: float = 0.0, several_streams: bool = False) -> dict[str, RowPlan]:
    """Per recipe, the RowPlan for a video whose frames show at `times` (sorted, absolute
    pts in seconds) and whose last frame ends at `end`, in a file whose streams start at
    `origin` (the container's start time: the earliest stream's first timestamp) and holds
    more than the video stream when `several_streams`.

    "grid": for each wanted time (from the first frame) the frame shown is the last with
    time <= t. "fps_filter": what ``ffmpeg -i VIDEO -vf fps=...`` to rawvideo outputs
    (fps_filter_output), cut into chunks of spec.frames, the last chunk padded with black frames.
    """
    times = np.asarray(times, dtype=np.float64)
    first = float(times[0])
    plan = {}
    for spec in specs:
        if spec.frame_choice == "native":
            rows = native_rows(len(times), spec)
            idx = np.arange(rows * spec.frames, dtype=np.int64).reshape(rows, spec.frames)
            plan[spec.name] = RowPlan(idx, 0.0, (end - first) * spec.frames / len(times), len(times))
            continue
        if spec.frame_choice == "grid":
            duration = end - first
            wanted = np.asarray(window_frame_times(duration, spec), dtype=np.float64).reshape(-1, spec.frames)
            idx = np.searchsorted(times - first, wanted + TIME_EPS_S, side="right") - 1
            plan[spec.name] = RowPlan(np.clip(idx, 0, len(times) - 1), 0.0, 1.0, idx.size)
            continue
        n0, count = fps_filter_output(first - origin, end - origin, spec.fps, several_streams)
        rows = fps_filter_rows(count, spec)
        ticks = n0 + np.arange(rows * spec.frames, dtype=np.int64)
        frame_ticks = _ticks(times - origin, spec.fps)
        # ticks before the first frame's repeat the fps filter's first output (the last frame on its tick)
        idx = np.searchsorted(frame_ticks, np.maximum(ticks, frame_ticks[0]), side="right") - 1
        idx[count:] = -1  # the public extractor's zero padding of the last chunk
        plan[spec.name] = RowPlan(idx.reshape(rows, spec.frames), n0 / spec.fps - (first - origin),
                                  spec.frames / spec.fps, count)
    return plan


def decode_groups(specs: Sequence[BackboneSpec]) -> list[list[BackboneSpec]]:
    """The recipes of a run split by the frames they decode: those reading the source's own
    full-size frames (``native``) apart from those sharing the 224 decode. One decoding pass each."""
    native = [s for s in specs if s.scaler == "torch_bilinear_float"]
    shared = [s for s in specs if s.scaler != "torch_bilinear_float"]
    return [g for g in (shared, native) if g]


def decode_size(width: int, height: int, specs: Sequence[BackboneSpec]) -> tuple[int, int]:
    """(width, height) to decode (upright) frames at, the same for every recipe of a run.

    A recipe scaled by swscale decodes at its own resize (the released S3D recipe: 480x360
    -> 298x224, 176x144 -> 273x224, up or down); a recipe scaled by torch starts from frames
    at its `source_short_side` with the long side truncated the same way. Both at 224 give
    one decode size, so a backbone's rows never depend on which other backbones run.
    """
    sizes = set()
    for spec in specs:
        if spec.scaler == "torch_bilinear_float":
            sizes.add((width, height))  # the whole source frame, resized later in float
        elif spec.scaler == "swscale_bilinear":
            sizes.add(resized_size(width, height, spec))
        else:
            short = spec.source_short_side
            sizes.add((int(width * short / height), short) if width >= height else (short, int(height * short / width)))
    if len(sizes) > 1:
        raise ValueError(f"recipes {', '.join(s.key for s in specs)} want different decode sizes: {sorted(sizes)}")
    return sizes.pop()


def chunk_ranges(n_windows: int, chunk_seconds: int) -> list[tuple[int, int]]:
    step = max(1, int(chunk_seconds))
    return [(a, min(a + step, n_windows)) for a in range(0, n_windows, step)]


def _quarter_turns(rotation: int) -> int:
    return (int(round(rotation / 90.0)) % 4) if rotation else 0


def _resized(h: int, w: int, spec: BackboneSpec) -> tuple[int, int]:
    """(height, width) after the recipe's resize (shards.feature_spec.resized_size)."""
    rw, rh = resized_size(w, h, spec)
    return rh, rw


def _resize_crop(frames, spec: BackboneSpec):
    """uint8 [N, H, W, 3] tensor (upright) -> uint8 [N, crop_h, crop_w, 3], channels last.

    Resized so the short side is spec.short_side (bilinear, antialiased when shrinking;
    torch's uint8 channels-last path), then centre-cropped. Without a resize the crop is
    a view of `frames`.
    """
    import torch.nn.functional as F

    h, w = frames.shape[1:3]
    nh, nw = _resized(h, w, spec)
    x = frames
    if (nh, nw) != (h, w):
        import torch

        # permute gives a channels-last NCHW view of NHWC memory; the output is channels
        # last too, so permuting back is a view again.
        x = F.interpolate(frames.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last), size=(nh, nw),
                          mode="bilinear", align_corners=False, antialias=nh < h or nw < w).permute(0, 2, 3, 1)
    top, left = crop_offsets(nw, nh, spec)
    return x[:, top:top + spec.crop[0], left:left + spec.crop[1]]


def prepare_frames(frames, spec: BackboneSpec, rotation: int = 0):
    """uint8 [N, H, W, 3] (coded orientation) -> uint8 [N, 3, crop_h, crop_w] for `spec`.

    Turned upright, resized so the short side is spec.short_side (bilinear, antialiased
    when shrinking), centre-cropped. Everything stays uint8; scaling and mean/std come
    later (`normalise`), on the model's device. The result is a channels-last view.
    """
    import torch

    x = torch.as_tensor(frames)
    k = _quarter_turns(rotation)
    if k:
        x = torch.rot90(x, k, dims=(1, 2))
    return _resize_crop(x, spec).permute(0, 3, 1, 2)


def normalise(windows, spec: BackboneSpec, dtype=None, out=None):
    """uint8 [B, 3, T, H, W] -> float [B, 3, T, H, W]: scale, then mean/std if the spec has them.

    A multiply and an add per pixel, in place: x * (scale / std) - mean / std. `out`, a
    float tensor of the same shape, is filled instead of allocating (see Normaliser).
    """
    import torch

    # The float copy also moves channels in front (windows come channels last, see
    # windows_from): the model gets a contiguous [B, 3, T, H, W] tensor either way.
    if out is not None:
        x = out.copy_(windows)
    else:
        x = windows.to(dtype or torch.float32, memory_format=torch.contiguous_format)
    if spec.mean is None:
        return x.mul_(spec.scale)
    mul = torch.tensor([spec.scale / s for s in spec.std], dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)
    add = torch.tensor([-m / s for m, s in zip(spec.mean, spec.std)], dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)
    return x.mul_(mul).add_(add)


class Normaliser:
    """normalise() into a reused float buffer.

    On the CPU a fresh 100 MB float tensor per batch costs more in page faults (the
    allocator hands big blocks back to the OS) than the arithmetic; reusing one buffer
    made this step ~10x faster. A smaller batch (a flush at the end of the videos) uses
    the front of the buffer instead of replacing it, so alternating batch sizes do not
    reallocate. The result is overwritten by the next call, so use it before calling
    again. On CUDA the caching allocator already reuses memory.
    """

    def __init__(self, spec: BackboneSpec):
        self.spec, self._buffer = spec, None

    def __call__(self, windows):
        import torch

        if windows.device.type != "cpu":
            return normalise(windows, self.spec)
        n, rest = windows.shape[0], tuple(windows.shape[1:])
        buf = self._buffer
        if buf is None or tuple(buf.shape[1:]) != rest or buf.shape[0] < n:
            self._buffer = buf = None  # freed before the new one is allocated
            buf = self._buffer = torch.empty((n, *rest), dtype=torch.float32)
        return normalise(windows, self.spec, out=buf[:n])


def stack_windows(windows, out=None):
    """Windows (uint8 [3, T, H, W] each, channels last as chunks hold them) -> [B, 3, T, H, W].

    Stacked in their memory order, a memcpy per window; torch.stack on the [3, T, H, W]
    views would transpose every byte into channels-first order, the slowest copy here.
    `out`, a uint8 [B', T, H, W, 3] tensor from an earlier call, is filled (its first B
    rows) when it fits (a fresh batch-sized tensor costs page faults on every batch); the
    result then shares its memory, so use it before the next call.
    """
    import torch

    parts = [w.permute(1, 2, 3, 0) for w in windows]
    if out is not None and tuple(out.shape[1:]) == tuple(parts[0].shape) and out.shape[0] >= len(parts):
        x = torch.stack(parts, out=out[:len(parts)])
    else:
        x = torch.stack(parts)
    return x.permute(0, 4, 1, 2, 3)


def _crop_only(h: int, w: int, spec: BackboneSpec) -> tuple[int, int] | None:
    """(top, left) when frames of h x w need no resize for `spec`, only a centre crop; else None."""
    return crop_offsets(w, h, spec) if _resized(h, w, spec) == (h, w) else None


def windows_from(decoded: dict, plan: dict, lo: int, hi: int, specs, rotation: int = 0) -> Chunk:
    """Gather rows [lo, hi) of each recipe from decoded frames {index: HxWx3 uint8}.

    Frames are shared by the backbones (decoded once; see decode_size). A recipe whose
    frames are already at its size (S3D at its own decode size) copies each frame's crop
    straight from the decoded frame: one copy per frame. Otherwise the frames it uses are
    resized once each, however many rows repeat them, then gathered. Places the plan pads
    (-1) are black. A recipe with fewer rows than `hi` gives what it has. Rows are written
    channels last ([n * T, H, W, 3] memory, a row copy per frame) and returned as an
    [n, 3, T, H, W] view: moving channels to the front is left to the float conversion on
    the model side (`normalise`), which writes every value anyway, so the uint8 bytes are
    never transposed on their own.
    """
    import torch

    chunk = Chunk(first=lo)
    k = _quarter_turns(rotation)
    h, w = next(iter(decoded.values())).shape[:2]
    for spec in specs:
        idx = plan[spec.name].index[lo:hi]  # [n, T] frame indices, -1 black
        n, t = idx.shape
        if spec.scaler == "torch_bilinear_float":
            chunk.windows[spec.name] = _float_windows(decoded, idx, spec, k)
            continue
        at = None if k else _crop_only(h, w, spec)
        if spec.scaler == "swscale_bilinear" and at is None:
            raise ValueError(f"{spec.key}: frames were decoded at {w}x{h}, not at the recipe's own size")
        if at is not None:
            (top, left), (ch, cw) = at, spec.crop
            out = np.empty((n * t, ch, cw, 3), np.uint8)
            for j, i in enumerate(idx.ravel().tolist()):
                if i < 0:
                    out[j] = 0
                else:
                    out[j] = decoded[i][top:top + ch, left:left + cw]
            out = torch.from_numpy(out)
        elif n == 0:
            out = torch.empty((0, *spec.crop, 3), dtype=torch.uint8)
        else:
            flat = idx.reshape(-1)
            used, pos = np.unique(flat[flat >= 0], return_inverse=True)
            frames = torch.from_numpy(np.stack([decoded[i] for i in used.tolist()]))  # [U, H, W, 3]
            if k:
                frames = torch.rot90(frames, k, dims=(1, 2)).contiguous()
            prepared = _resize_crop(frames, spec)  # [U, crop_h, crop_w, 3]
            where = np.full(flat.shape, len(used), dtype=np.int64)  # the black frame after the used ones
            where[flat >= 0] = pos
            if (flat < 0).any():
                prepared = torch.cat([prepared, torch.zeros((1, *prepared.shape[1:]), dtype=torch.uint8)])
            # index_select: a row copy per frame (advanced indexing is ~20x slower on a crop view).
            out = torch.index_select(prepared, 0, torch.from_numpy(where))
        chunk.windows[spec.name] = out.view(n, t, *spec.crop, 3).permute(0, 4, 1, 2, 3)
    return chunk


def _float_windows(decoded: dict, idx: np.ndarray, spec: BackboneSpec, quarter_turns: int = 0):
    """The IG65M port's preprocessing: each source frame / 255 in float32, resized whole by
    ``F.interpolate(scale_factor=short_side / short side, bilinear, align_corners=False)``
    (no antialias, output floor(side * factor)), no crop. float32 [n, 3, T, h, w] (channels-last
    memory, like the uint8 windows); mean/std follow on the model side (spec.scale is 1)."""
    import torch
    import torch.nn.functional as F

    n, t = idx.shape
    if n == 0:
        return torch.empty((0, 3, t, 1, 1), dtype=torch.float32)
    used, pos = np.unique(idx.reshape(-1), return_inverse=True)
    frames = torch.from_numpy(np.stack([decoded[i] for i in used.tolist()]))  # [U, H, W, 3] uint8
    if quarter_turns:
        frames = torch.rot90(frames, quarter_turns, dims=(1, 2))
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)
    factor = spec.short_side / min(x.shape[-2:])
    x = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    x = x.permute(0, 2, 3, 1).contiguous()  # [U, h, w, 3]
    out = torch.index_select(x, 0, torch.from_numpy(pos.reshape(-1)))
    return out.view(n, t, *x.shape[1:]).permute(0, 4, 1, 2, 3)
