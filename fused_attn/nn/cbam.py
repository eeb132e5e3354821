"""CBAM: channel attention, then spatial attention (Woo et al., 2018), timm-style constructor."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn

from .. import functional as FA
from .base import AttentionModule

__all__ = ["CBAM"]

_ACT_LAYERS = {"relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU, "hardswish": nn.Hardswish, "gelu": nn.GELU}
_GATE_LAYERS = {"sigmoid": nn.Sigmoid, "hardsigmoid": nn.Hardsigmoid, "hard_sigmoid": nn.Hardsigmoid}


def _layer(spec, table: dict, what: str) -> nn.Module:
    if isinstance(spec, str):
        if spec not in table:
            raise ValueError(f"unknown {what} {spec!r}; expected one of {sorted(table)} or an nn.Module class")
        spec = table[spec]
    return spec()


class _ChannelMLP(nn.Module):
    """fc2(act(fc1(p))) on pooled descriptors p [N, C, 1, 1] (1x1 convs, as timm's CBAM)."""

    def __init__(self, channels: int, rd_channels: int, act_layer, bias: bool):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=bias)
        self.act = _layer(act_layer, _ACT_LAYERS, "act_layer")
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=bias)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(pooled)))


class CBAM(AttentionModule):
    """CBAM, in sequence (the paper's order):

        c   = gate(mlp(max_hw x) + mlp(mean_hw x))                 [B, C]   shared mlp = fc2 act(fc1 .)
        y   = x * c
        s   = gate(conv_kxk(cat(max_c y, mean_c y)))               [B, H, W]
        out = y * s

    mean_hw is `functional.channel_squeeze`, the channel pools `functional.channel_pool(y, ("max", "mean"))`,
    both products `functional.apply_gates`. max_hw is `torch.amax` (fused_attn has no spatial max-pool op yet).
    The spatial conv has a bias and no BatchNorm (timm's has BN). Hidden width: `rd_channels`, else
    round(channels * rd_ratio), else channels // reduction (at least 1). `act_layer` / `gate_layer`: an
    nn.Module class or a name ("relu", "silu", "hardswish", "gelu"; "sigmoid", "hardsigmoid").
    Records "channel" [B, C] and "spatial" [B, H, W] when recording.
    """

    def __init__(self, channels: int, reduction: int = 16, spatial_kernel_size: int = 7, *,
                 rd_ratio: Optional[float] = None, rd_channels: Optional[int] = None,
                 act_layer: Union[str, type] = nn.ReLU, gate_layer: Union[str, type] = "sigmoid",
                 mlp_bias: bool = False, backend: Optional[str] = None, record_attention: bool = False):
        super().__init__(backend, record_attention)
        if rd_channels is None:
            rd_channels = round(channels * rd_ratio) if rd_ratio is not None else channels // reduction
        self.channel = _ChannelMLP(channels, max(1, rd_channels), act_layer, mlp_bias)
        self.spatial = nn.Conv2d(2, 1, spatial_kernel_size, padding=spatial_kernel_size // 2)
        self.gate = _layer(gate_layer, _GATE_LAYERS, "gate_layer")

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        pooled = torch.cat([FA.channel_squeeze(x, backend=self.backend), x.amax(dim=(2, 3))])  # [2B, C]
        z = self.channel(pooled[:, :, None, None]).flatten(1)
        channel = self.gate(z[:b] + z[b:])
        y = FA.apply_gates(x, channel=channel, backend=self.backend)
        spatial = self.gate(self.spatial(FA.channel_pool(y, ("max", "mean"), backend=self.backend)))
        if self.record_attention:
            self._record(channel=channel, spatial=spatial[:, 0])
        return FA.apply_gates(y, spatial=spatial, backend=self.backend)
