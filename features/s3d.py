"""S3D-G as pre-trained with MIL-NCE on HowTo100M (`s3d_howto100m.pth`).

torchvision's `s3d` is a different network (no self-gating, no space-to-depth stem, other
names), so this is our own definition whose attribute names reproduce the checkpoint's
keys: `conv1.conv1.weight`, `conv1.bn1.*`, `conv_2c.conv2.weight` (the temporal half of a
separable conv), `gating.fc.*` (the gate after conv_2c), `mixed_4b.conv_b1_b.bn2.*`,
`mixed_5c.gating_b0.fc.*`, `fc.weight` [512, 1024]. The checkpoint's text branch
(`text_module.*`) is not part of this module; features.weights drops it.

Behaviour kept from the MIL-NCE PyTorch port, because the released weights and the
released HowTo100M features were made with it:
- space-to-depth: every 2x2x2 block of pixels becomes 8x the channels (3 -> 24), then a
  2x4x4 conv with padding (1, 2, 2) whose first output in T, H and W is dropped: that
  reproduces TensorFlow's 'SAME' padding of the original stride-2 7x7x7 conv.
- the strided max pools pad like TensorFlow 'SAME' for even sizes (pad after, not
  before) with ceil_mode, padding with 0 rather than -inf: equivalent here since every
  pooled tensor is post-ReLU (and gates are positive), so values are >= 0.
- BatchNorm keeps PyTorch's default epsilon (1e-5), as the port does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 1024
EMBED_DIM = 512


class STConv3D(nn.Module):
    """Conv3d + BN + ReLU, or, when separable, a spatial (1,k,k) then a temporal (k,1,1) one."""

    def __init__(self, in_dim, out_dim, kernel, stride=(1, 1, 1), padding=(0, 0, 0), separable=False):
        super().__init__()
        kt, kh, kw = kernel
        st, sh, sw = stride
        pt, ph, pw = padding
        self.separable = separable and kt != 1
        if self.separable:
            self.conv1 = nn.Conv3d(in_dim, out_dim, (1, kh, kw), (1, sh, sw), (0, ph, pw), bias=False)
            self.bn1 = nn.BatchNorm3d(out_dim)
            self.conv2 = nn.Conv3d(out_dim, out_dim, (kt, 1, 1), (st, 1, 1), (pt, 0, 0), bias=False)
            self.bn2 = nn.BatchNorm3d(out_dim)
        else:
            self.conv1 = nn.Conv3d(in_dim, out_dim, kernel, stride, padding, bias=False)
            self.bn1 = nn.BatchNorm3d(out_dim)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        if self.separable:
            x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        return x


class SelfGating(nn.Module):
    """S3D-G's feature gating: channels scaled by sigmoid(fc(global average))."""

    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x):
        gate = torch.sigmoid(self.fc(x.mean(dim=(2, 3, 4))))
        return x * gate[:, :, None, None, None]


class SamePadMaxPool3d(nn.Module):
    """Max pool with TensorFlow-'SAME'-style fixed padding, as the MIL-NCE port computes it."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        # Per dim, max(k - s, 0) padding split low/high with the extra on the high side;
        # F.pad wants (W_lo, W_hi, H_lo, H_hi, T_lo, T_hi).
        pads = []
        for k, s in zip(reversed(kernel), reversed(stride)):
            total = max(k - s, 0)
            pads += [total // 2, total - total // 2]
        self.pad = tuple(pads)

    def forward(self, x):
        return F.max_pool3d(F.pad(x, self.pad, value=0.0), self.kernel, self.stride, ceil_mode=True)


class InceptionBlock(nn.Module):
    """Four branches (1x1; 1x1 -> sep 3x3x3; 1x1 -> sep 3x3x3; pool -> 1x1), each self-gated."""

    def __init__(self, in_dim, b0, b1a, b1b, b2a, b2b, b3b):
        super().__init__()
        sep = dict(kernel=(3, 3, 3), padding=(1, 1, 1), separable=True)
        one = (1, 1, 1)
        self.conv_b0 = STConv3D(in_dim, b0, one)
        self.conv_b1_a = STConv3D(in_dim, b1a, one)
        self.conv_b1_b = STConv3D(b1a, b1b, **sep)
        self.conv_b2_a = STConv3D(in_dim, b2a, one)
        self.conv_b2_b = STConv3D(b2a, b2b, **sep)
        self.maxpool_b3 = nn.MaxPool3d(3, stride=1, padding=1)
        self.conv_b3_b = STConv3D(in_dim, b3b, one)
        self.gating_b0 = SelfGating(b0)
        self.gating_b1 = SelfGating(b1b)
        self.gating_b2 = SelfGating(b2b)
        self.gating_b3 = SelfGating(b3b)
        self.output_dim = b0 + b1b + b2b + b3b

    def forward(self, x):
        b0 = self.gating_b0(self.conv_b0(x))
        b1 = self.gating_b1(self.conv_b1_b(self.conv_b1_a(x)))
        b2 = self.gating_b2(self.conv_b2_b(self.conv_b2_a(x)))
        b3 = self.gating_b3(self.conv_b3_b(self.maxpool_b3(x)))
        return torch.cat((b0, b1, b2, b3), dim=1)


# Inception widths (in_dim is chained): b0, b1a, b1b, b2a, b2b, b3b, as in S3D-G / Inception-v1.
_INCEPTION = (
    ("mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("mixed_5c", (384, 192, 384, 48, 128, 128)),
)
# Pools that run before the named block.
_POOL_BEFORE = {
    "mixed_3b": ("maxpool_3a", (1, 3, 3), (1, 2, 2)),
    "mixed_4b": ("maxpool_4a", (3, 3, 3), (2, 2, 2)),
    "mixed_5b": ("maxpool_5a", (2, 2, 2), (2, 2, 2)),
}


class S3DG(nn.Module):
    """S3D-G video tower of MIL-NCE. Input [B, 3, T, H, W] RGB in [0, 1], T, H, W even."""

    def __init__(self, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.conv1 = STConv3D(24, 64, (2, 4, 4), padding=(1, 2, 2))
        self.maxpool_2a = SamePadMaxPool3d((1, 3, 3), (1, 2, 2))
        self.conv_2b = STConv3D(64, 64, (1, 1, 1))
        self.conv_2c = STConv3D(64, 192, (3, 3, 3), padding=(1, 1, 1), separable=True)
        self.gating = SelfGating(192)
        in_dim = 192
        self.blocks = []  # names in forward order; modules live as attributes for the key names
        for name, widths in _INCEPTION:
            if name in _POOL_BEFORE:
                pool_name, kernel, stride = _POOL_BEFORE[name]
                setattr(self, pool_name, SamePadMaxPool3d(kernel, stride))
                self.blocks.append(pool_name)
            block = InceptionBlock(in_dim, *widths)
            setattr(self, name, block)
            self.blocks.append(name)
            in_dim = block.output_dim
        assert in_dim == FEATURE_DIM
        self.fc = nn.Linear(FEATURE_DIM, embed_dim)

    @staticmethod
    def space_to_depth(x: torch.Tensor) -> torch.Tensor:
        """[B, C, T, H, W] -> [B, 8C, T/2, H/2, W/2]; channel order (dt, dh, dw, c) as trained."""
        b, c, t, h, w = x.shape
        if t % 2 or h % 2 or w % 2:
            raise ValueError(f"S3D needs even T, H, W, got {t}x{h}x{w}")
        x = x.view(b, c, t // 2, 2, h // 2, 2, w // 2, 2)
        x = x.permute(0, 3, 5, 7, 1, 2, 4, 6)
        return x.reshape(b, 8 * c, t // 2, h // 2, w // 2)

    def mixed_5c_map(self, x: torch.Tensor) -> torch.Tensor:
        """The unpooled mixed_5c activations [B, 1024, T', H', W'] (T/8, H/32, W/32 for 224 crops)."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"expected [B, 3, T, H, W], got {tuple(x.shape)}")
        x = self.conv1(self.space_to_depth(x))
        x = x[:, :, 1:, 1:, 1:]
        x = self.maxpool_2a(x)
        x = self.gating(self.conv_2c(self.conv_2b(x)))
        for name in self.blocks:
            x = getattr(self, name)(x)
        return x

    def features_mixed_5c(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] -> [B, 1024]: mixed_5c averaged over T, H, W (the released features)."""
        return self.mixed_5c_map(x).mean(dim=(2, 3, 4))

    # The extraction stage calls `features` on every backbone.
    features = features_mixed_5c

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] -> [B, 512]: MIL-NCE's video embedding, fc over pooled mixed_5c.

        Stored s3d.npy rows are pooled mixed_5c, so `self.fc(rows)` gives the same vector
        later without the video.
        """
        return self.fc(self.features_mixed_5c(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_mixed_5c(x)


def build_s3dg() -> S3DG:
    """A freshly initialised S3D-G (PyTorch default init); weights come from features.weights."""
    return S3DG()
