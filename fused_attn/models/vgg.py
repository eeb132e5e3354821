"""VGG16 with attention modules, and `insert_attention` for any nn.Sequential backbone.

Layer indices are torchvision's VGG16 `features` indices (no torchvision needed: the layout is built here):
  0 conv1_1  1 relu  2 conv1_2  3 relu  4 pool | 5 conv2_1 .. 9 pool | 10 conv3_1 .. 16 pool
  17 conv4_1 .. 23 pool | 24 conv5_1 25 relu 26 conv5_2 27 relu 28 conv5_3 29 relu 30 pool
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from ..nn import DualAttention, MultiScaleAttention, SEBlock

__all__ = ["VGG", "vgg16_features", "insert_attention", "vgg16", "vgg16_se", "vgg16_msa", "vgg16_sca",
           "VGG16_CFG", "VGG16_POOL_POSITIONS"]

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG16_POOL_POSITIONS = (4, 9, 16, 23, 30)   # the max-pools: "after each conv block"
SCA_POSITIONS = (28,)                       # seed 002: `features[:28] + [DualAttention(512)] + features[28:]`


def vgg16_features(cfg: Sequence = VGG16_CFG, in_channels: int = 3) -> nn.Sequential:
    """torchvision's VGG16 `features`: conv3x3 + ReLU(inplace) per number, MaxPool2d(2, 2) per "M"."""
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


def _channels_before(layers: Sequence[nn.Module], index: int, in_channels: int) -> int:
    """Channels of the tensor entering layers[index]: the last out_channels / num_features before it."""
    for layer in reversed(list(layers[:index])):
        for m in reversed(list(layer.modules())):
            for attr in ("out_channels", "num_features"):
                if isinstance(getattr(m, attr, None), int):
                    return getattr(m, attr)
    return in_channels


def insert_attention(features: nn.Sequential, factory: Callable[[int], nn.Module], positions: Sequence[int],
                     in_channels: int = 3) -> nn.Sequential:
    """A new nn.Sequential with `factory(channels)` inserted before features[i] for each i in `positions`.

    Positions index `features` as given (len(features) appends at the end); `channels` is the last
    `out_channels` / `num_features` of a layer before i (else `in_channels`). The layers are shared, not copied.
    """
    layers = list(features)
    wanted = sorted(set(positions))
    if any(not 0 <= i <= len(layers) for i in wanted):
        raise ValueError(f"positions must lie in [0, {len(layers)}], got {list(positions)}")
    out: list[nn.Module] = []
    for i in range(len(layers) + 1):
        if i in wanted:
            out.append(factory(_channels_before(layers, i, in_channels)))
        if i < len(layers):
            out.append(layers[i])
    return nn.Sequential(*out)


class VGG(nn.Module):
    """features -> AdaptiveAvgPool2d(7) -> flatten -> classifier (torchvision's / the seeds' VGG16 head)."""

    def __init__(self, features: nn.Sequential, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg16(num_classes: int = 1000) -> VGG:
    """Plain VGG16 (torchvision layout, PyTorch default initialisation like the seeds)."""
    return VGG(vgg16_features(), num_classes)


def vgg16_se(num_classes: int = 1000, reduction: int = 16, *, backend: Optional[str] = None) -> VGG:
    """VGG16 with SEBlock(C, reduction) before each max-pool; same layout and keys as the seed VGG16_SE."""
    return VGG(insert_attention(vgg16_features(), lambda c: SEBlock(c, reduction, backend=backend),
                                VGG16_POOL_POSITIONS), num_classes)


def vgg16_msa(num_classes: int = 1000, attention_positions: Optional[Sequence[int]] = None,
              reduction_ratio: int = 16, *, backend: Optional[str] = None) -> VGG:
    """VGG16 with MultiScaleAttention inserted before features layer i for i in `attention_positions`.

    Positions are torchvision VGG16 `features` indices; default (4, 9, 16, 23, 30) = before each max-pool, i.e.
    after each conv block (as the seed's text says, and as VGG16_SE places its SE blocks); (3, 8, 15, 22, 29)
    = before the last ReLU of each block. The seed's VGG16WithMSA counts config entries instead of layers, so it
    inserts only three modules (after conv2_1, conv3_3 and conv5_2): its state_dict does not load here.
    """
    positions = VGG16_POOL_POSITIONS if attention_positions is None else attention_positions
    return VGG(insert_attention(vgg16_features(),
                                lambda c: MultiScaleAttention(c, reduction_ratio, backend=backend), positions),
               num_classes)


def vgg16_sca(num_classes: int = 1000, attention_positions: Sequence[int] = SCA_POSITIONS, *,
              backend: Optional[str] = None) -> VGG:
    """VGG16 with SCA-CNN DualAttention inserted as seed 002 does: before features[28] (conv5_3).

    The seed's text says "after conv5_3", its code `features[:28] + [DualAttention(512)] + features[28:]`
    puts it after conv5_2's ReLU; the code is followed. `attention_positions` as in vgg16_msa.
    """
    return VGG(insert_attention(vgg16_features(), lambda c: DualAttention(c, backend=backend), attention_positions),
               num_classes)
