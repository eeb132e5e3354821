"""Fused twins of the ecosystem's CBAM blocks (Woo et al., 2018) and of their two halves:

    channel half   c = gate(mlp(mean_hw x) + mlp(amax_hw x))   [B, C]     y = x * c
    spatial half   s = gate(conv(cat(pool_c y)))               [B, H, W]  out = y * s

mean_hw is one `functional.channel_squeeze` pass, amax_hw `torch.amax` (as the sources: fused_attn has no
spatial max-pool op), the channel pools one `functional.channel_pool` pass in the source's order, each product
one `functional.apply_gates` pass; the small layers (the MLP on [B, C], the k x k conv and BatchNorm on
[B, 2, H, W], the gates) are the source's own, in PyTorch. Eager moves about as many bytes; the gain is the
fused backward passes (no adaptive_max_pool2d backward scatter, deterministic on CUDA) and channels_last
without copies. Each twin keeps its source's child names (state_dicts load strictly both ways):

  timm.layers.cbam       ChannelAttn (fc1, act, fc2, gate), LightChannelAttn (sigmoid(mlp(0.5 mean + 0.5 max))),
                         SpatialAttn (conv = ConvNormAct, gate; pools (mean, max)), LightSpatialAttn
                         (0.5 mean + 0.5 max), CbamModule / LightCbamModule (channel, spatial)
  ultralytics            SpatialAttention (cv1, act; pools (mean, max)), CBAM (channel_attention,
                         spatial_attention); its ChannelAttention is fused_attn.nn.ChannelAttention
  official (Jongchan/attention-module MODELS/cbam.py, by class name and structure): ChannelGate (mlp =
                         Flatten, Linear, ReLU, Linear; pool_types avg / max), SpatialGate (compress,
                         spatial = BasicConv; pools (max, mean)), CBAM (ChannelGate, SpatialGate)

`from_source(module)` builds the twin around the source's own layers (shared parameters); a whole CBAM's
halves become their twins.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .. import functional as FA
from .base import AttentionModule, twin_around
from .pooled_gate import ChannelAttention

__all__ = ["ChannelAttn", "LightChannelAttn", "SpatialAttn", "LightSpatialAttn", "CbamModule", "LightCbamModule",
           "SpatialAttention", "UltralyticsCBAM", "ChannelGate", "SpatialGate", "OfficialCBAM"]


class _Twin(AttentionModule):
    @classmethod
    def misfit(cls, source: nn.Module) -> Optional[str]:
        """Why `source` cannot be swapped for this twin; None when it can."""
        return None

    @classmethod
    def from_source(cls, source: nn.Module, backend: Optional[str] = None) -> "_Twin":
        """The twin of `source` around source's own child layers (same objects: parameters shared)."""
        return twin_around(cls, source, backend)


# ------------------------------------------------------------------------------------------ channel halves
class _ChannelHalf(_Twin):
    def gate_of(self, x: Tensor) -> Tensor:
        """The [B, C] channel gate of x."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        c = self.gate_of(x)
        if self.record_attention:
            self._record(channel=c)
        return FA.apply_gates(x, channel=c, backend=self.backend)

    def _mean_max(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return FA.channel_squeeze(x, backend=self.backend).to(x.dtype), x.amax(dim=(2, 3))


class ChannelAttn(_ChannelHalf):
    """timm's ChannelAttn: gate(fc2 act(fc1 mean) + fc2 act(fc1 amax)), both through one batched MLP call."""

    def gate_of(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        z = self.fc2(self.act(self.fc1(torch.cat(self._mean_max(x))[:, :, None, None])))
        return self.gate(z[:b] + z[b:]).flatten(1)


class LightChannelAttn(_ChannelHalf):
    """timm's LightChannelAttn: sigmoid(fc2 act(fc1 (0.5 mean + 0.5 amax))) (its forward ignores `gate`)."""

    def gate_of(self, x: Tensor) -> Tensor:
        mean, amax = self._mean_max(x)
        return torch.sigmoid(self.fc2(self.act(self.fc1((0.5 * mean + 0.5 * amax)[:, :, None, None])))).flatten(1)


class ChannelGate(_ChannelHalf):
    """The official CBAM's ChannelGate: sigmoid(sum over pool_types of mlp(pool x)), pool_types from avg / max."""

    @classmethod
    def misfit(cls, source: nn.Module) -> Optional[str]:
        pools = list(getattr(source, "pool_types", ["avg", "max"]))
        if not pools or any(p not in ("avg", "max") for p in pools):
            return f"pool_types {pools} (only 'avg' and 'max' are fused)"
        return None

    def gate_of(self, x: Tensor) -> Tensor:
        mean, amax = self._mean_max(x)
        pooled = {"avg": mean, "max": amax}
        att = None
        for pool in getattr(self, "pool_types", ["avg", "max"]):
            raw = self.mlp(pooled[pool][:, :, None, None])
            att = raw if att is None else att + raw
        return torch.sigmoid(att)


# ------------------------------------------------------------------------------------------ spatial halves
class _SpatialHalf(_Twin):
    POOLS: tuple = ("mean", "max")

    def map_of(self, pooled: Tensor) -> Tensor:
        """The [B, 1, H, W] spatial gate from the channel pools [B, 2, H, W] (in POOLS order)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        s = self.map_of(FA.channel_pool(x, self.POOLS, backend=self.backend))[:, 0]
        if self.record_attention:
            self._record(spatial=s)
        return FA.apply_gates(x, spatial=s, backend=self.backend)


class SpatialAttn(_SpatialHalf):
    """timm's SpatialAttn: gate(conv(cat(mean_c x, amax_c x))), conv = ConvNormAct (conv + BatchNorm)."""

    def map_of(self, pooled: Tensor) -> Tensor:
        return self.gate(self.conv(pooled))


class LightSpatialAttn(_SpatialHalf):
    """timm's LightSpatialAttn: gate(conv(0.5 mean_c x + 0.5 amax_c x))."""

    def map_of(self, pooled: Tensor) -> Tensor:
        return self.gate(self.conv(0.5 * pooled[:, :1] + 0.5 * pooled[:, 1:]))


class SpatialAttention(_SpatialHalf):
    """ultralytics' SpatialAttention: sigmoid(cv1(cat(mean_c x, max_c x))), cv1 k x k without bias."""

    def map_of(self, pooled: Tensor) -> Tensor:
        return self.act(self.cv1(pooled))


class SpatialGate(_SpatialHalf):
    """The official CBAM's SpatialGate: sigmoid(BasicConv(cat(max_c x, mean_c x))), BasicConv = conv + BN."""

    POOLS = ("max", "mean")

    def map_of(self, pooled: Tensor) -> Tensor:
        return torch.sigmoid(self.spatial(pooled))


# ------------------------------------------------------------------------------------------- whole blocks
class _Sequence(_Twin):
    """A whole CBAM: HALVES = ((child name, twin class), ...) applied in order, each half its twin."""

    HALVES: tuple = ()

    @classmethod
    def misfit(cls, source: nn.Module) -> Optional[str]:
        for name, half in cls.HALVES:
            reason = half.misfit(getattr(source, name))
            if reason is not None:
                return f"{name}: {reason}"
        return None

    @classmethod
    def from_source(cls, source: nn.Module, backend: Optional[str] = None) -> "_Sequence":
        twin = super().from_source(source, backend)
        for name, half in cls.HALVES:
            twin._modules[name] = half.from_source(getattr(source, name), backend)
        return twin

    def forward(self, x: Tensor) -> Tensor:
        for name, _ in self.HALVES:
            x = self._modules[name](x)
        return x


class CbamModule(_Sequence):
    """timm's CbamModule: channel (ChannelAttn), then spatial (SpatialAttn)."""

    HALVES = (("channel", ChannelAttn), ("spatial", SpatialAttn))


class LightCbamModule(_Sequence):
    """timm's LightCbamModule: channel (LightChannelAttn), then spatial (LightSpatialAttn)."""

    HALVES = (("channel", LightChannelAttn), ("spatial", LightSpatialAttn))


class UltralyticsCBAM(_Sequence):
    """ultralytics' CBAM(c1, kernel_size): channel_attention (ChannelAttention), then spatial_attention."""

    HALVES = (("channel_attention", ChannelAttention), ("spatial_attention", SpatialAttention))


class OfficialCBAM(_Sequence):
    """The official CBAM (Jongchan/attention-module): ChannelGate, then SpatialGate (unless no_spatial)."""

    HALVES = (("ChannelGate", ChannelGate), ("SpatialGate", SpatialGate))

    @classmethod
    def misfit(cls, source: nn.Module) -> Optional[str]:
        if getattr(source, "no_spatial", False):
            return "no_spatial=True (a ChannelGate alone: convert converts that child)"
        return super().misfit(source)
