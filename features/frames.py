"""From decoded frames to model windows: the frame plan, resize and crop, windows, batches.

Pure array work shared by both decoders (``features/decode.py``): which frame each
window needs (by timestamp), how each backbone's frames are resized and cropped (from
``features.spec``), how windows are gathered channels-last with one copy per frame, and
the batched uint8 -> float normalisation the model side runs (``Normaliser``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from features.spec import BackboneSpec, window_frame_times

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
        return len(next(iter(self.windows.values()))) if self.windows else 0


def frame_plan(times: np.ndarray, duration: float, specs: Sequence[BackboneSpec]) -> dict[str, np.ndarray]:
    """Per backbone, [N, frames] indices into `times` (sorted, relative to the first frame).

    For each wanted time the frame shown is the last with time <= t (the first frame for
    times before it).
    """
    times = np.asarray(times, dtype=np.float64)
    plan = {}
    for spec in specs:
        wanted = np.asarray(window_frame_times(duration, spec), dtype=np.float64).reshape(-1, spec.frames)
        idx = np.searchsorted(times, wanted + TIME_EPS_S, side="right") - 1
        plan[spec.name] = np.clip(idx, 0, len(times) - 1)
    return plan


def decode_size(width: int, height: int, specs: Sequence[BackboneSpec]) -> tuple[int, int]:
    """(width, height) to decode at: short side the largest any backbone needs, never upscaled.

    Aspect is kept, so per-backbone resize and centre crop see the same picture as from
    the full-size frame; sizes are even because some scalers prefer it.
    """
    need = max(s.short_side for s in specs)
    short = min(width, height)
    if short <= need:
        return width, height
    if width <= height:
        return need, 2 * math.ceil(height * need / width / 2)
    return 2 * math.ceil(width * need / height / 2), need


def chunk_ranges(n_windows: int, chunk_seconds: int) -> list[tuple[int, int]]:
    step = max(1, int(chunk_seconds))
    return [(a, min(a + step, n_windows)) for a in range(0, n_windows, step)]


def _quarter_turns(rotation: int) -> int:
    return (int(round(rotation / 90.0)) % 4) if rotation else 0


def _resized(h: int, w: int, spec: BackboneSpec) -> tuple[int, int]:
    """(height, width) with the short side at spec.short_side, never below the crop."""
    scale = spec.short_side / min(h, w)
    return max(spec.crop[0], int(round(h * scale))), max(spec.crop[1], int(round(w * scale)))


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
    top, left = (nh - spec.crop[0]) // 2, (nw - spec.crop[1]) // 2
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
    return ((h - spec.crop[0]) // 2, (w - spec.crop[1]) // 2) if _resized(h, w, spec) == (h, w) else None


def windows_from(decoded: dict, plan: dict, lo: int, hi: int, specs, rotation: int) -> Chunk:
    """Gather one chunk's windows from decoded frames {index: HxWx3 uint8}, per backbone.

    Frames are shared by the backbones (decoded once, at the largest size any needs). A
    backbone whose frames are already at its size (S3D at the decode size) copies each
    window frame's crop straight from the decoded frame: one copy per frame. Otherwise
    the frames it uses are resized once each, however many windows repeat them, then
    gathered. Windows are written channels last ([n * T, H, W, 3] memory, a row copy per
    frame) and returned as an [n, 3, T, H, W] view: moving channels to the front is left
    to the float conversion on the model side (`normalise`), which writes every value
    anyway, so the uint8 bytes are never transposed on their own.
    """
    import torch

    chunk = Chunk(first=lo)
    k = _quarter_turns(rotation)
    h, w = next(iter(decoded.values())).shape[:2]
    for spec in specs:
        idx = plan[spec.name][lo:hi]  # [n, T] frame indices
        n, t = idx.shape
        at = None if k else _crop_only(h, w, spec)
        if at is not None:
            (top, left), (ch, cw) = at, spec.crop
            out = np.empty((n * t, ch, cw, 3), np.uint8)
            for j, i in enumerate(idx.ravel().tolist()):
                out[j] = decoded[i][top:top + ch, left:left + cw]
            out = torch.from_numpy(out)
        else:
            used, pos = np.unique(idx, return_inverse=True)
            frames = torch.from_numpy(np.stack([decoded[i] for i in used.tolist()]))  # [U, H, W, 3]
            if k:
                frames = torch.rot90(frames, k, dims=(1, 2)).contiguous()
            prepared = _resize_crop(frames, spec)  # [U, crop_h, crop_w, 3]
            # index_select: a row copy per frame (advanced indexing is ~20x slower on a crop view).
            out = torch.index_select(prepared, 0, torch.from_numpy(pos.reshape(-1)))
        chunk.windows[spec.name] = out.view(n, t, *spec.crop, 3).permute(0, 4, 1, 2, 3)
    return chunk
