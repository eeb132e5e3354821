"""Fused twins of coordinate attention (Hou et al., CVPR 2021):

    strips = cat(mean_w x, mean_h x)                   [B, C, H + W]   functional.ema_strip_pool (one pass over x)
    y      = act(norm(conv1(strips)))                  the source's own small layers, in PyTorch
    a_h, a_w = gate(conv_h(y[:H])), gate(conv_w(y[H:]))  [B, C, H], [B, C, W]
    out    = x * a_w * a_h  (+ x)                      functional.coord_gate (one pass over x)

Eager code reads x four times and writes two x-sized tensors in the forward (two strip pools, two multiplies);
the twins read it twice and write once, and the backward of the gate is one pass over (grad_out, x).

  CoordAtt         the official block (houqb/CoordAttention coordatt.py, MIT): children pool_h, pool_w, conv1 (bias),
                   bn1, act (h_swish), conv_h, conv_w; CoordAtt(inp, oup, reduction=32) with oup == inp
  CoordAttn        timm.layers.CoordAttn: conv1, bn1, act, conv_h, conv_w, gate; has_skip adds x
  SimpleCoordAttn  timm.layers.SimpleCoordAttn: fc1, act, fc_h, fc_w (Linear), gate applied to a_h + a_w:
                   out = x * gate(a_h + a_w) (+ x), fused as coord_gate(x, a_h, a_w, gate="sigmoid" | "hardsigmoid")

Each keeps its source's child names (state_dicts load strictly both ways); `from_source(module)` builds the twin
around the source's own layers (the same objects: parameters shared), `misfit(module)` says why one cannot be.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .. import functional as FA
from .base import AttentionModule, twin_around
from .conv_se import gate_name

__all__ = ["CoordAtt", "CoordAttn", "SimpleCoordAttn", "h_sigmoid", "h_swish"]


class h_sigmoid(nn.Module):  # noqa: N801  (the official class name: convert and state_dict comparisons read it)
    """The official code's hard sigmoid: relu6(x + 3) / 6."""

    def __init__(self, inplace: bool = True):
        super().__init__()
        self.relu = nn.ReLU6(inplace=inplace)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(x + 3) / 6


class h_swish(nn.Module):  # noqa: N801
    """The official code's hard swish: x * h_sigmoid(x)."""

    def __init__(self, inplace: bool = True):
        super().__init__()
        self.sigmoid = h_sigmoid(inplace=inplace)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.sigmoid(x)


def behaves_as_h_swish(act: nn.Module) -> bool:
    """Whether `act` computes x * relu6(x + 3) / 6 (probed on a few float64 values, the kinks included)."""
    probe = torch.tensor([-4.0, -3.0, -1.5, -0.25, 0.0, 0.5, 2.0, 3.0, 5.0], dtype=torch.float64)
    try:
        with torch.no_grad():
            got = act(probe.clone())
    except Exception:  # noqa: BLE001  (anything that cannot run on a 1-D float64 tensor is no h_swish)
        return False
    return isinstance(got, Tensor) and got.shape == probe.shape and torch.allclose(
        got, probe * torch.clamp(probe + 3, 0, 6) / 6, rtol=1e-12, atol=1e-12)


class _CoordBase(AttentionModule):
    """Shared forward pieces; subclasses define gates(strips, h, w) -> (a_h, a_w, gate, skip)."""

    def gates(self, strips: Tensor, h: int, w: int) -> tuple[Tensor, Tensor, str, bool]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w = x.shape
        strips = FA.ema_strip_pool(x, backend=self.backend)          # [B, C, H + W] = cat(x_h, x_w^T)
        a_h, a_w, gate, skip = self.gates(strips, h, w)
        if self.record_attention:   # the gates (SimpleCoordAttn: the logits of its one gate)
            self._record(height=a_h, width=a_w)
        return FA.coord_gate(x, a_h, a_w, gate, skip, backend=self.backend)

    @classmethod
    def misfit(cls, source: nn.Module) -> Optional[str]:
        """Why `source` cannot be swapped for this twin; None when it can."""
        return None

    @classmethod
    def from_source(cls, source: nn.Module, backend: Optional[str] = None) -> "_CoordBase":
        """The twin of `source` around source's own child layers (same objects: parameters shared)."""
        return twin_around(cls, source, backend)


class CoordAtt(_CoordBase):
    """The official CoordAtt(inp, oup, reduction=32): mip = max(8, inp // reduction) (or `mip` given);
    a_h = sigmoid(conv_h(x_h)), a_w = sigmoid(conv_w(x_w)), out = x * a_w * a_h. oup must equal inp (the
    official forward multiplies x by the [B, oup, ...] gates)."""

    def __init__(self, inp: int, oup: int, reduction: int = 32, *, mip: Optional[int] = None,
                 backend: Optional[str] = None, record_attention: bool = False):
        super().__init__(backend, record_attention)
        if oup != inp:
            raise ValueError(f"CoordAtt: oup ({oup}) must equal inp ({inp}): the output is x * a_w * a_h")
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        mip = mip or max(8, inp // reduction)
        self.conv1 = nn.Conv2d(inp, mip, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = h_swish()
        self.conv_h = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)
        self.conv_w = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)

    def gates(self, strips, h, w):
        y = self.act(self.bn1(self.conv1(strips[..., None])))         # [B, mip, H + W, 1]
        x_h, x_w = torch.split(y, [h, w], dim=2)
        x_w = x_w.permute(0, 1, 3, 2)
        return self.conv_h(x_h).sigmoid(), self.conv_w(x_w).sigmoid(), "none", False

    @classmethod
    def misfit(cls, source: nn.Module) -> Optional[str]:
        names = {n for n, _ in source.named_children()}
        want = {"pool_h", "pool_w", "conv1", "bn1", "act", "conv_h", "conv_w"}
        if names != want:
            return f"children {sorted(names)} are not the official CoordAtt's {sorted(want)}"
        pool_h, pool_w = source.pool_h, source.pool_w
        if not (isinstance(pool_h, nn.AdaptiveAvgPool2d) and tuple(pool_h.output_size) == (None, 1)
                and isinstance(pool_w, nn.AdaptiveAvgPool2d) and tuple(pool_w.output_size) == (1, None)):
            return "pool_h / pool_w are not AdaptiveAvgPool2d((None, 1)) / ((1, None))"
        convs = (source.conv1, source.conv_h, source.conv_w)
        for conv in convs:
            if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
                    and conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1):
                return f"{conv!r} is not a plain 1x1 convolution"
        if not isinstance(source.bn1, nn.BatchNorm2d):
            return f"bn1 is {type(source.bn1).__name__}, not BatchNorm2d"
        if source.conv_h.out_channels != source.conv1.in_channels or source.conv_w.out_channels != \
                source.conv1.in_channels:
            return "oup != inp: the official forward x * a_w * a_h does not broadcast"
        if type(source.act).__name__ != "h_swish" or not behaves_as_h_swish(source.act):
            return f"act is {type(source.act).__name__}, not the official h_swish (x * relu6(x + 3) / 6)"
        return None


class CoordAttn(_CoordBase):
    """timm's CoordAttn(channels, rd_ratio=1/16, rd_channels=None, rd_divisor=8, se_factor=2/3, bias=False,
    act_layer=Hardswish, norm_layer=BatchNorm2d, gate_layer=Sigmoid, has_skip=False). Any gate layer works (it
    runs in PyTorch on the [B, C, H] / [B, C, W] logits)."""

    def __init__(self, channels: int, rd_channels: int, bias: bool = False, act_layer: type = nn.Hardswish,
                 norm_layer: Optional[type] = nn.BatchNorm2d, gate_layer: type = nn.Sigmoid, has_skip: bool = False,
                 *, backend: Optional[str] = None, record_attention: bool = False):
        super().__init__(backend, record_attention)
        self.has_skip = has_skip
        self.conv1 = nn.Conv2d(channels, rd_channels, kernel_size=1, stride=1, padding=0, bias=bias)
        self.bn1 = norm_layer(rd_channels) if norm_layer is not None else nn.Identity()
        self.act = act_layer()
        self.conv_h = nn.Conv2d(rd_channels, channels, kernel_size=1, stride=1, padding=0, bias=bias)
        self.conv_w = nn.Conv2d(rd_channels, channels, kernel_size=1, stride=1, padding=0, bias=bias)
        self.gate = gate_layer()

    def gates(self, strips, h, w):
        y = self.act(self.bn1(self.conv1(strips[..., None])))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        x_w = x_w.transpose(-1, -2)
        return self.gate(self.conv_h(x_h)), self.gate(self.conv_w(x_w)), "none", bool(self.has_skip)


class SimpleCoordAttn(_CoordBase):
    """timm's SimpleCoordAttn(channels, rd_ratio=0.25, rd_channels=None, rd_divisor=8, se_factor=2/3, bias=True,
    act_layer=SiLU, gate_layer=Sigmoid, has_skip=False): out = x * gate(fc_h(h) + fc_w(w)) (+ x); the gate
    (Sigmoid or Hardsigmoid, torch's or timm's class) runs inside the fused coord_gate."""

    def __init__(self, channels: int, rd_channels: int, bias: bool = True, act_layer: type = nn.SiLU,
                 gate_layer: type = nn.Sigmoid, has_skip: bool = False, *, backend: Optional[str] = None,
                 record_attention: bool = False):
        super().__init__(backend, record_attention)
        self.has_skip = has_skip
        self.fc1 = nn.Linear(channels, rd_channels, bias=bias)
        self.act = act_layer()
        self.fc_h = nn.Linear(rd_channels, channels, bias=bias)
        self.fc_w = nn.Linear(rd_channels, channels, bias=bias)
        self.gate = gate_layer()

    def gates(self, strips, h, w):
        y = self.act(self.fc1(strips.transpose(1, 2)))                 # [B, H + W, rd]
        a_h = self.fc_h(y[:, :h]).transpose(1, 2)                      # [B, C, H] logits
        a_w = self.fc_w(y[:, h:]).transpose(1, 2)                      # [B, C, W] logits
        return a_h, a_w, gate_name(self.gate), bool(self.has_skip)

    @classmethod
    def misfit(cls, source: nn.Module) -> Optional[str]:
        try:
            gate_name(source.gate)
        except (TypeError, AttributeError) as exc:
            return f"its gate is not fused: {exc}"
        return None
