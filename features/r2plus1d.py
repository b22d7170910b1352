"""R(2+1)D-34 as pre-trained on IG65M (the PyTorch port of the Caffe2 VMZ models).

The public `.pth` files (e.g. r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth) are state
dicts of torchvision's VideoResNet with two Caffe2 differences, so we build on torchvision's
blocks and keep its module names: the state dict keys then match the files one to one
(`stem.0.weight`, `layer2.0.conv2.0.0.weight`, `layer4.0.downsample.1.running_var`,
`fc.weight`, ...). Differences from torchvision's r2plus1d_18-style construction:

- torchvision gives both convs of a BasicBlock the mid-width computed from
  (inplanes, planes); Caffe2 computes the second conv's from (planes, planes). Only the
  first block of layers 2-4 has inplanes != planes, so only there the second conv's
  (2+1)D mid-width differs: 288, 576, 1152 (torchvision would give 230, 460, 921).
- Caffe2's BatchNorm epsilon is 1e-3 (PyTorch's default 1e-5 would shift every
  normalised activation of the pretrained weights).

The classifier (`fc`) exists only so the checkpoint loads strictly; features stop at layer4.
Pretraining classes: 359 or 487 depending on the file (the port's README and code
disagree on which clip length has which), so the count is read from the checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

# (layer attribute, planes, Caffe2 mid-width of block 0's second (2+1)D conv)
_CAFFE2_MIDPLANES = (("layer2", 128, 288), ("layer3", 256, 576), ("layer4", 512, 1152))

CAFFE2_BN_EPS = 1e-3
FEATURE_DIM = 512
# Accepted pretraining heads of the public IG65M files; any positive count builds.
IG65M_NUM_CLASSES = (359, 487)


class R2Plus1D34(VideoResNet):
    """R(2+1)D-34 with the Caffe2/IG65M layer widths and BatchNorm epsilon."""

    def __init__(self, num_classes: int = 359) -> None:
        super().__init__(
            block=BasicBlock,
            conv_makers=[Conv2Plus1D] * 4,
            layers=[3, 4, 6, 3],
            stem=R2Plus1dStem,
            num_classes=num_classes,
        )
        for layer_name, planes, midplanes in _CAFFE2_MIDPLANES:
            block = getattr(self, layer_name)[0]
            # conv2 is Sequential(Conv2Plus1D, BatchNorm3d); only the (2+1)D conv changes.
            block.conv2[0] = Conv2Plus1D(planes, planes, midplanes)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.eps = CAFFE2_BN_EPS
        self.num_classes = num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] normalised clips -> [B, 512]: layer4 averaged over T, H and W.

        The stem halves H and W and layers 2-4 halve T, H and W (rounding up), so any
        T, H, W >= 1 runs: 8x112x112 ends as a 1x7x7 layer4 map, 8x32x32 as 1x2x2.
        """
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"expected [B, 3, T, H, W], got {tuple(x.shape)}")
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        return x.mean(dim=(2, 3, 4))


def build_r2plus1d_34(num_classes: int = 359) -> R2Plus1D34:
    """A freshly initialised model (torchvision's init); weights come from features.weights."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    return R2Plus1D34(num_classes=num_classes)


def num_classes_in(state_dict: dict) -> int | None:
    """The classifier width a checkpoint was trained with, or None when it has no `fc.weight`."""
    weight = state_dict.get("fc.weight")
    if weight is None or getattr(weight, "dim", lambda: 0)() != 2:
        return None
    return int(weight.shape[0])
