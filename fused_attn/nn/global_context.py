"""Fused twin of timm's GlobalContext block (GCNet: gcresnet33ts, gcresnet50t, gcresnext26ts, ...;
timm.layers.create_attn names 'gc' = fuse_scale, 'gca' = fuse_add):

    ctx = sum_p softmax_p(conv_attn(x))[p] x[:, :, p]     [B, C]   (use_attn=False: ctx = mean_hw x)
    y   = x * gate(mlp_scale(ctx))  (fuse_scale)   then   y + mlp_add(ctx)  (fuse_add)

The attention pooling is one `functional.global_context_pool` op (x read once forward, once backward; eager runs a
conv, a softmax and a matmul that reads x again); use_attn=False pools with `functional.channel_squeeze`. The MLPs
(ConvMlp with LayerNorm2d) and the gate run on [B, C, 1, 1] in PyTorch with the source's own layers; the scaling
is one `functional.apply_gates` pass, the add term a broadcast add, as in timm. Child names are timm's
(conv_attn, mlp_add, mlp_scale, gate), so state_dicts load strictly both ways; `from_source(module)` builds the
twin around the source's own layers (shared parameters).
"""
from __future__ import annotations

from typing import Optional, Union

import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as FA
from .base import AttentionModule, twin_around

__all__ = ["GlobalContext"]

_GATE_LAYERS = {"sigmoid": nn.Sigmoid, "hard_sigmoid": nn.Hardsigmoid, "tanh": nn.Tanh, "identity": nn.Identity}
_ACT_LAYERS = {"relu": nn.ReLU, "silu": nn.SiLU, "swish": nn.SiLU, "gelu": nn.GELU, "hard_swish": nn.Hardswish}


class _LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: LayerNorm over the channels of an NCHW map."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__(num_channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class _ConvMlp(nn.Module):
    """timm's ConvMlp(C, hidden, norm_layer=LayerNorm2d): fc1, norm, act, drop, fc2 (1x1 convs with biases)."""

    def __init__(self, channels: int, hidden: int, act_layer: type):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.norm = _LayerNorm2d(hidden)
        self.act = act_layer()
        self.drop = nn.Dropout(0.0)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(self.act(self.norm(self.fc1(x)))))


def _layer(layer: Union[str, type], table: dict, what: str) -> nn.Module:
    if isinstance(layer, str):
        if layer not in table:
            raise ValueError(f"unsupported {what} {layer!r}; names: {sorted(table)} (or pass a module class)")
        layer = table[layer]
    return layer()


class GlobalContext(AttentionModule):
    """timm.layers.GlobalContext(channels, use_attn, fuse_add, fuse_scale, init_last_zero, rd_ratio, rd_channels,
    rd_divisor, act_layer, gate_layer) with its parameters and child names, on fused_attn's ops."""

    def __init__(self, channels: int, use_attn: bool = True, fuse_add: bool = False, fuse_scale: bool = True,
                 init_last_zero: bool = False, rd_ratio: float = 1. / 8, rd_channels: Optional[int] = None,
                 rd_divisor: int = 1, act_layer: Union[str, type] = nn.ReLU, gate_layer: Union[str, type] = "sigmoid",
                 *, backend: Optional[str] = None, record_attention: bool = False):
        super().__init__(backend, record_attention)
        act = _ACT_LAYERS[act_layer] if isinstance(act_layer, str) else act_layer
        self.conv_attn = nn.Conv2d(channels, 1, kernel_size=1, bias=True) if use_attn else None
        if rd_channels is None:   # timm's make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.)
            v = channels * rd_ratio
            rd_channels = max(rd_divisor, int(v + rd_divisor / 2) // rd_divisor * rd_divisor)
        self.mlp_add = _ConvMlp(channels, rd_channels, act) if fuse_add else None
        self.mlp_scale = _ConvMlp(channels, rd_channels, act) if fuse_scale else None
        self.gate = _layer(gate_layer, _GATE_LAYERS, "gate")
        self.init_last_zero = init_last_zero
        if self.conv_attn is not None:
            nn.init.kaiming_normal_(self.conv_attn.weight, mode="fan_in", nonlinearity="relu")
        if self.mlp_add is not None:
            nn.init.zeros_(self.mlp_add.fc2.weight)

    def forward(self, x: Tensor) -> Tensor:
        if self.mlp_scale is None and self.mlp_add is None:
            return x   # timm computes the context and drops it
        if self.conv_attn is not None:
            ctx = FA.global_context_pool(x, self.conv_attn.weight, self.conv_attn.bias, backend=self.backend)
        else:
            ctx = FA.channel_squeeze(x, backend=self.backend).to(x.dtype)
        ctx = ctx[:, :, None, None]
        out, s = x, None
        if self.mlp_scale is not None:
            s = self.gate(self.mlp_scale(ctx)).flatten(1)
            out = FA.apply_gates(x, channel=s, backend=self.backend)
        if self.mlp_add is not None:
            out = out + self.mlp_add(ctx)
        if self.record_attention:
            self._record(channel=s)
        return out

    @classmethod
    def misfit(cls, source: nn.Module) -> Optional[str]:
        """Why `source` (a timm GlobalContext) cannot be swapped for this twin; None when it can."""
        conv = getattr(source, "conv_attn", None)
        if conv is not None:
            if not isinstance(conv, nn.Conv2d):
                return f"conv_attn is a {type(conv).__name__}, not a Conv2d"
            if (conv.out_channels != 1 or conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.groups != 1
                    or conv.dilation != (1, 1) or any(conv.padding) or conv.padding_mode != "zeros"):
                return f"conv_attn {conv!r} is not a plain 1x1 conv C -> 1"
        for name in ("mlp_add", "mlp_scale", "gate"):
            if not hasattr(source, name):
                return f"it has no {name} layer"
        if source.mlp_scale is not None and not callable(source.gate):
            return "its gate is not callable"
        return None

    @classmethod
    def from_source(cls, source: nn.Module, backend: Optional[str] = None) -> "GlobalContext":
        """The twin of `source` around source's own child layers (same objects: parameters shared)."""
        # conv_attn / mlp_add / mlp_scale = None are plain attributes of the source (not child modules)
        return twin_around(cls, source, backend)
