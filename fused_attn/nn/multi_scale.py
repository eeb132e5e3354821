"""Multi-scale attention (seed 000)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .. import functional as FA
from .base import AttentionModule

__all__ = ["MultiScaleAttention"]


class MultiScaleAttention(AttentionModule):
    """Multi-scale convolutions gated by channel and spatial attention, with a residual:

        fused = fusion_conv(cat(conv1x1 x, conv3x3 x, conv5x5 x))                       [B, C, H, W]
        c     = sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)                                [B, C]
        s     = sigmoid(conv7x7(cat(max_c x, mean_c x, std_c x)))   (std unbiased)       [B, H, W]
        out   = x + fused * c * s

    Parameters and state_dict keys as the seed. c is `functional.channel_gate` (the 1x1-conv weights of
    `channel_attention`), the pools one `functional.channel_pool`, the last line one `functional.apply_gates`;
    the four convolutions stay aten calls. Records "channel" and "spatial" when recording.
    """

    def __init__(self, in_channels: int, reduction_ratio: int = 16, *, backend: Optional[str] = None,
                 record_attention: bool = False):
        super().__init__(backend, record_attention)
        mid = in_channels // reduction_ratio
        self.conv1x1 = nn.Conv2d(in_channels, mid, kernel_size=1)
        self.conv3x3 = nn.Conv2d(in_channels, mid, kernel_size=3, padding=1)
        self.conv5x5 = nn.Conv2d(in_channels, mid, kernel_size=5, padding=2)
        self.channel_attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, mid, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, in_channels, kernel_size=1),
            nn.Sigmoid(),
        )
        self.spatial_attention = nn.Sequential(nn.Conv2d(3, 1, kernel_size=7, padding=3), nn.Sigmoid())
        self.fusion_conv = nn.Conv2d(in_channels * 3 // reduction_ratio, in_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        fused = self.fusion_conv(torch.cat([self.conv1x1(x), self.conv3x3(x), self.conv5x5(x)], dim=1))
        channel = self._gate(x, self.channel_attention)
        spatial = self.spatial_attention(FA.channel_pool(x, ("max", "mean", "std"), backend=self.backend))
        if self.record_attention:
            self._record(channel=channel, spatial=spatial[:, 0])
        return FA.apply_gates(fused, channel=channel, spatial=spatial, residual=x, backend=self.backend)
