"""SCA-CNN dual attention (seed 002): DualAttention, LiteDualAttention, AttnResBlock."""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .. import functional as FA
from .base import AttentionModule, mlp_gate_args

__all__ = ["DualAttention", "LiteDualAttention", "AttnResBlock"]


class DualAttention(AttentionModule):
    """Channel and spatial attention in parallel (SCA-CNN):

        c   = sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2)     [B, C]      W1: C -> C / reduction
        s   = sigmoid(w_s . x[:, :, h, w] + b_s)            [B, H, W]   (1x1 conv C -> 1)
        out = x * c * s

    Parameters and state_dict keys as the seed (`channel_att`, `spatial_att`); reduction=8 is the seed's
    fixed C // 8. The whole block is one fused op, `functional.dual_attention` (forward 2 reads + 1 write of
    x's size, backward 4 reads + 1 write). Records "channel" and "spatial" when recording.
    """

    _act, _gate_layer, _default_reduction = nn.ReLU, nn.Sigmoid, 8

    def __init__(self, in_channels: int, reduction: Optional[int] = None, *, backend: Optional[str] = None,
                 record_attention: bool = False):
        super().__init__(backend, record_attention)
        mid = in_channels // (reduction or self._default_reduction)
        self.channel_att = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, mid, 1),
            self._act(),
            nn.Conv2d(mid, in_channels, 1),
            self._gate_layer(),
        )
        self.spatial_att = nn.Sequential(nn.Conv2d(in_channels, 1, 1), self._gate_layer())

    def forward(self, x: Tensor) -> Tensor:
        w1, b1, w2, b2, act, gate = mlp_gate_args(self.channel_att)
        conv = self.spatial_att[0]
        args = (x, w1, b1, w2, b2, conv.weight, conv.bias, act, gate)
        if not self.record_attention:
            return FA.dual_attention(*args, backend=self.backend)
        out, channel, spatial = FA.dual_attention(*args, backend=self.backend, return_gates=True)
        self._record(channel=channel, spatial=spatial)
        return out


class LiteDualAttention(DualAttention):
    """DualAttention for mobile nets (seed 002): reduction 16, hardswish MLP, hardsigmoid gates.

        out = x * hardsigmoid(W2 hardswish(W1 mean_hw(x) + b1) + b2) * hardsigmoid(w_s . x + b_s)

    The seed defines only __init__; its forward is taken to be DualAttention's (x * c * s), as here and in the
    seed transcription bench/baselines/seed_modules.py.
    """

    _act, _gate_layer, _default_reduction = nn.Hardswish, nn.Hardsigmoid, 16


class AttnResBlock(nn.Module):
    """Residual block around DualAttention (seed 002): out = x + conv3x3(DualAttention(x)).

    The seed accepts `reduction` and ignores it (its DualAttention always reduces by 8); here it is passed
    on to DualAttention, and the default 8 gives the seed's module exactly.
    """

    def __init__(self, in_channels: int, reduction: int = 8, *, backend: Optional[str] = None,
                 record_attention: bool = False):
        super().__init__()
        self.attn = DualAttention(in_channels, reduction, backend=backend, record_attention=record_attention)
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(self.attn(x))
