"""Fused twins of the channel-gate blocks whose gate is one small layer over the pooled channels:

    s = gate_layers(mean_hw(x))  [B, C]        y = x * s[:, :, None, None]

mean_hw(x) is one `functional.channel_squeeze` pass, the gate layers are the source's own (a few B x C values, in
PyTorch), and the scaling is one `functional.apply_gates` pass; gradients flow through both fused passes. Where
the gate is one plain k-tap conv (ECA: odd k, no bias) or one plain C -> C 1x1 conv (ESE) and a Sigmoid /
Hardsigmoid, the twin is one `functional.eca` / `functional.ese` op instead (on the CPU pool, gate layer and
scale in cache-sized waves: x read from memory once). Each twin keeps its source's child names (state_dicts load
strictly both ways):

  EffectiveSEModule   timm.layers.EffectiveSEModule (ESE: ese_vovnet, hgnet), add_maxpool=False: fc, gate
                      s = gate(fc(mean))               fc: 1x1 conv C -> C
  EcaModule           timm.layers.EcaModule (ECA, ecaresnet): conv[, act, conv2], gate
                      s = gate(conv1d_k(mean))         k-tap convolution across the channels
  CecaModule          timm.layers.CecaModule: conv, gate, with circular padding across the channels
  ChannelAttention    ultralytics.nn.modules.ChannelAttention (its CBAM's channel half): pool, fc, act
                      s = act(fc(mean))
  EseModule           timm.models.hgnet.EseModule (PP-HGNet): conv, sigmoid     s = sigmoid(conv(mean))
  EcaLayer            the official ECA (BangguWu/ECANet models/eca_module.py `eca_layer(channel, k_size)`):
                      avg_pool, conv, sigmoid                    s = sigmoid(conv1d_k(mean))

`from_source(module)` builds the twin around the source's own layers (shared parameters).
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as FA
from .base import AttentionModule, twin_around
from .conv_se import GATE_NAMES, plain_1x1

__all__ = ["EffectiveSEModule", "EcaModule", "CecaModule", "ChannelAttention", "EseModule", "EcaLayer"]


class _PooledGate(AttentionModule):
    def gate_of(self, pooled: Tensor) -> Tensor:
        """[B, C] gate from the [B, C] channel means, with the source's layers."""
        raise NotImplementedError

    def fused_eca(self) -> Optional[tuple]:
        """(taps, circular, gate) when one `functional.eca` op computes this block, else None."""
        return None

    def fused_ese(self) -> Optional[tuple]:
        """(weight, bias, gate) when one `functional.ese` op computes this block, else None."""
        return None

    def forward(self, x: Tensor) -> Tensor:
        if not self.record_attention:
            eca = self.fused_eca()
            if eca is not None:
                return FA.eca(x, *eca, backend=self.backend)
            ese = self.fused_ese()
            if ese is not None:
                return FA.ese(x, *ese, backend=self.backend)
        pooled = FA.channel_squeeze(x, backend=self.backend).to(x.dtype)
        s = self.gate_of(pooled)
        if self.record_attention:
            self._record(channel=s)
        return FA.apply_gates(x, channel=s, backend=self.backend)

    @classmethod
    def misfit(cls, source: nn.Module) -> Optional[str]:
        """Why `source` cannot be swapped for this twin; None when it can."""
        if getattr(source, "add_maxpool", False):
            return "add_maxpool=True (mean + max squeeze) is not fused"
        return None

    @classmethod
    def from_source(cls, source: nn.Module, backend: Optional[str] = None) -> "_PooledGate":
        """The twin of `source` around source's own child layers (same objects: parameters shared)."""
        return twin_around(cls, source, backend)


def _eca_taps(conv: nn.Module, padding: int) -> Optional[Tensor]:
    """conv's weight when it is a plain Conv1d(1, 1, k) over the channels (odd k, no bias, stride and dilation 1,
    the given padding), else None."""
    if not (type(conv) is nn.Conv1d and conv.in_channels == 1 and conv.out_channels == 1 and conv.bias is None):
        return None
    k = conv.kernel_size[0]
    plain = conv.stride == (1,) and conv.dilation == (1,) and conv.groups == 1 and conv.padding_mode == "zeros"
    if k % 2 == 0 or not plain or conv.padding != (padding,):
        return None
    return conv.weight


def _eca_args(conv: nn.Module, gate: nn.Module, circular: bool, padding: int) -> Optional[tuple]:
    taps = _eca_taps(conv, padding)
    name = GATE_NAMES.get(type(gate).__name__)
    if taps is None or name is None:
        return None
    return taps, circular, name


def _ese_args(fc: nn.Module, gate: nn.Module) -> Optional[tuple]:
    """(weight, bias, gate name) when fc is a plain C -> C 1x1 conv and gate a Sigmoid / Hardsigmoid, else None."""
    name = GATE_NAMES.get(type(gate).__name__)
    if name is None or not (plain_1x1(fc) and fc.in_channels == fc.out_channels):
        return None
    return fc.weight, fc.bias, name


class EffectiveSEModule(_PooledGate):
    """timm's EffectiveSEModule(channels, gate_layer): s = gate(fc(mean_hw x)), fc a C -> C 1x1 conv."""

    def __init__(self, channels: int, gate_layer: type = nn.Hardsigmoid, *, backend: Optional[str] = None,
                 record_attention: bool = False):
        super().__init__(backend, record_attention)
        self.add_maxpool = False
        self.fc = nn.Conv2d(channels, channels, kernel_size=1)
        self.gate = gate_layer()

    def fused_ese(self) -> Optional[tuple]:
        return None if self.add_maxpool else _ese_args(self.fc, self.gate)

    def gate_of(self, pooled: Tensor) -> Tensor:
        return self.gate(self.fc(pooled[:, :, None, None])).flatten(1)


class EcaModule(_PooledGate):
    """timm's EcaModule with an explicit kernel_size: s = gate(conv1d_k(mean_hw x)) across the channels
    (use_mlp: conv2(act(conv(.))))."""

    def __init__(self, kernel_size: int = 3, gate_layer: type = nn.Sigmoid, *, backend: Optional[str] = None,
                 record_attention: bool = False):
        super().__init__(backend, record_attention)
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.act = None
        self.conv2 = None
        self.gate = gate_layer()

    def fused_eca(self) -> Optional[tuple]:
        if self.conv2 is not None:
            return None
        return _eca_args(self.conv, self.gate, False, (self.conv.kernel_size[0] - 1) // 2)

    def gate_of(self, pooled: Tensor) -> Tensor:
        y = self.conv(pooled[:, None, :])
        if self.conv2 is not None:
            y = self.conv2(self.act(y))
        return self.gate(y).flatten(1)


class CecaModule(_PooledGate):
    """timm's CecaModule with an explicit kernel_size: ECA with circular padding across the channels."""

    def __init__(self, kernel_size: int = 3, gate_layer: type = nn.Sigmoid, *, backend: Optional[str] = None,
                 record_attention: bool = False):
        super().__init__(backend, record_attention)
        self.padding = (kernel_size - 1) // 2
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=0, bias=False)
        self.gate = gate_layer()

    def fused_eca(self) -> Optional[tuple]:
        if self.padding != (self.conv.kernel_size[0] - 1) // 2:
            return None
        return _eca_args(self.conv, self.gate, True, 0)

    def gate_of(self, pooled: Tensor) -> Tensor:
        y = F.pad(pooled[:, None, :], (self.padding, self.padding), mode="circular")
        return self.gate(self.conv(y)).flatten(1)


class ChannelAttention(_PooledGate):
    """ultralytics' ChannelAttention(channels): s = sigmoid(fc(mean_hw x)), fc a C -> C 1x1 conv with bias."""

    def __init__(self, channels: int, *, backend: Optional[str] = None, record_attention: bool = False):
        super().__init__(backend, record_attention)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, 1, 0, bias=True)
        self.act = nn.Sigmoid()

    def fused_ese(self) -> Optional[tuple]:
        return _ese_args(self.fc, self.act)

    def gate_of(self, pooled: Tensor) -> Tensor:
        return self.act(self.fc(pooled[:, :, None, None])).flatten(1)


class EseModule(_PooledGate):
    """timm's hgnet EseModule(chs): s = sigmoid(conv(mean_hw x)), conv a C -> C 1x1 conv with bias."""

    def __init__(self, chs: int, *, backend: Optional[str] = None, record_attention: bool = False):
        super().__init__(backend, record_attention)
        self.conv = nn.Conv2d(chs, chs, kernel_size=1)
        self.sigmoid = nn.Sigmoid()

    def fused_ese(self) -> Optional[tuple]:
        return _ese_args(self.conv, self.sigmoid)

    def gate_of(self, pooled: Tensor) -> Tensor:
        return self.sigmoid(self.conv(pooled[:, :, None, None])).flatten(1)


class EcaLayer(_PooledGate):
    """The official ECA layer, eca_layer(channel, k_size=3): s = sigmoid(conv1d_k(mean_hw x)) across the channels,
    zero padding (k - 1) // 2, no bias."""

    def __init__(self, channel: int, k_size: int = 3, *, backend: Optional[str] = None,
                 record_attention: bool = False):
        super().__init__(backend, record_attention)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def fused_eca(self) -> Optional[tuple]:
        return _eca_args(self.conv, self.sigmoid, False, (self.conv.kernel_size[0] - 1) // 2)

    def gate_of(self, pooled: Tensor) -> Tensor:
        return self.sigmoid(self.conv(pooled[:, None, :])).flatten(1)
