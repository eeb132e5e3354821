"""Fused twins of the squeeze-excite blocks of torchvision and timm: 1x1-conv MLPs with biases.

    y = x * gate(fc2 act(fc1 mean_hw(x)))          fc1: C -> Cr, fc2: Cr -> C, 1x1 convs with biases

one `functional.squeeze_excite` op (pool, the tiny MLP in PyTorch, the scaling pass) on every backend when the
op can express the MLP: plain 1x1 convs, activation ReLU, SiLU (timm Swish) or Hardswish (timm HardSwish), gate
Sigmoid or Hardsigmoid (torch's or timm's classes), no norm, mean squeeze. Any other setting (timm's `bn`
between fc1 and the activation as in rexnet, `add_maxpool`, GELU or another activation or gate) takes the
pooled route: `functional.channel_squeeze` (+ `x.amax` for add_maxpool, as the source does), the source's own
layers on [B, C, 1, 1] in PyTorch, `functional.apply_gates`. Each twin keeps its source's child names, so
state_dicts load strictly both ways:

  SqueezeExcitation   torchvision.ops.SqueezeExcitation (efficientnet, mobilenet_v3, regnet_y):
                      avgpool, fc1, activation, fc2, scale_activation
  SEModule            timm.layers.SEModule (seresnet, seresnext, regnety, rexnet, ...): fc1, bn, act, fc2, gate
                      s = 0.5 mean + 0.5 amax with add_maxpool
  SqueezeExcite       timm's EfficientNet / MobileNet block SE (timm.models._efficientnet_blocks.SqueezeExcite):
                      conv_reduce, act1, conv_expand, gate

`from_source(module)` builds the twin around the source's own layers (shared parameters).
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .. import functional as FA
from .base import AttentionModule, twin_around

__all__ = ["SqueezeExcitation", "SEModule", "SqueezeExcite", "gate_name", "GATE_NAMES", "plain_1x1"]

_ACTS = {"ReLU": "relu", "SiLU": "silu", "Swish": "silu", "Hardswish": "hardswish", "HardSwish": "hardswish"}
# fused_attn's gate name per gate layer class name (torch's and timm's classes)
GATE_NAMES = {"Sigmoid": "sigmoid", "Hardsigmoid": "hardsigmoid", "HardSigmoid": "hardsigmoid"}


def gate_name(module: nn.Module) -> str:
    """fused_attn's gate name of a gate layer (torch's or timm's Sigmoid / Hardsigmoid class), else TypeError."""
    name = GATE_NAMES.get(type(module).__name__)
    if name is None:
        raise TypeError(f"unsupported gate {type(module).__name__}; supported: {sorted(GATE_NAMES)}")
    return name


def _conv1x1(cin: int, cout: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=bias)


def plain_1x1(fc: nn.Module) -> bool:
    """fc is an ungrouped 1x1 Conv2d with stride 1, no padding or dilation (a Linear on [B, C, 1, 1])."""
    return (isinstance(fc, nn.Conv2d) and fc.kernel_size == (1, 1) and fc.groups == 1 and fc.stride == (1, 1)
            and fc.padding == (0, 0) and fc.dilation == (1, 1))


class _ConvSqueezeExcite(AttentionModule):
    """The shared forward: the child names of (fc1, act, fc2, gate) are LAYERS; NORM the optional norm's name."""

    LAYERS: tuple[str, str, str, str]
    NORM: Optional[str] = None
    add_maxpool = False

    def fused_mlp(self) -> Optional[tuple]:
        """(w1, b1, w2, b2, act, gate) when one squeeze_excite op can run this block's MLP, else None."""
        fc1, act, fc2, gate = (getattr(self, n) for n in self.LAYERS)
        norm = getattr(self, self.NORM) if self.NORM else None
        if self.add_maxpool or not (norm is None or isinstance(norm, nn.Identity)):
            return None
        if not (plain_1x1(fc1) and plain_1x1(fc2)):
            return None
        act_name, gate = _ACTS.get(type(act).__name__), GATE_NAMES.get(type(gate).__name__)
        if act_name is None or gate is None:
            return None
        return fc1.weight, fc1.bias, fc2.weight, fc2.bias, act_name, gate

    def _pooled_gate(self, x: Tensor) -> Tensor:
        """[B, C] gate by the source's own layers on the pooled [B, C, 1, 1] squeeze."""
        fc1, act, fc2, gate = (getattr(self, n) for n in self.LAYERS)
        s = FA.channel_squeeze(x, backend=self.backend).to(x.dtype)[:, :, None, None]
        if self.add_maxpool:
            s = 0.5 * s + 0.5 * x.amax((2, 3), keepdim=True)
        s = fc1(s)
        if self.NORM:
            s = getattr(self, self.NORM)(s)
        return gate(fc2(act(s))).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        args = self.fused_mlp()
        if args is None:
            s = self._pooled_gate(x)
        elif not self.record_attention:
            return FA.squeeze_excite(x, *args, backend=self.backend)
        else:
            s = FA.channel_gate(x, *args, backend=self.backend)
        if self.record_attention:
            self._record(channel=s)
        return FA.apply_gates(x, channel=s, backend=self.backend)

    @classmethod
    def misfit(cls, source: nn.Module) -> Optional[str]:
        """Why `source` (of the class this twin stands for) cannot be swapped; None when it can."""
        missing = [n for n in cls.LAYERS if not isinstance(getattr(source, n, None), nn.Module)]
        return f"no layer {missing[0]!r}" if missing else None

    @classmethod
    def from_source(cls, source: nn.Module, backend: Optional[str] = None) -> "_ConvSqueezeExcite":
        """The twin of `source` around source's own child layers (same objects: parameters shared)."""
        return twin_around(cls, source, backend)


class SqueezeExcitation(_ConvSqueezeExcite):
    """torchvision.ops.SqueezeExcitation(input_channels, squeeze_channels, activation, scale_activation)."""

    LAYERS = ("fc1", "activation", "fc2", "scale_activation")

    def __init__(self, input_channels: int, squeeze_channels: int, activation: type = nn.ReLU,
                 scale_activation: type = nn.Sigmoid, *, backend: Optional[str] = None,
                 record_attention: bool = False):
        super().__init__(backend, record_attention)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = _conv1x1(input_channels, squeeze_channels, True)
        self.fc2 = _conv1x1(squeeze_channels, input_channels, True)
        self.activation = activation()
        self.scale_activation = scale_activation()


class SEModule(_ConvSqueezeExcite):
    """timm.layers.SEModule(channels, rd_channels=..., add_maxpool, bias, act_layer, norm_layer, gate_layer)."""

    LAYERS = ("fc1", "act", "fc2", "gate")
    NORM = "bn"

    def __init__(self, channels: int, rd_channels: int, add_maxpool: bool = False, bias: bool = True,
                 act_layer: type = nn.ReLU, norm_layer: Optional[type] = None, gate_layer: type = nn.Sigmoid, *,
                 backend: Optional[str] = None, record_attention: bool = False):
        super().__init__(backend, record_attention)
        self.add_maxpool = add_maxpool
        self.fc1 = _conv1x1(channels, rd_channels, bias)
        self.bn = norm_layer(rd_channels) if norm_layer else nn.Identity()
        self.act = act_layer()
        self.fc2 = _conv1x1(rd_channels, channels, bias)
        self.gate = gate_layer()


class SqueezeExcite(_ConvSqueezeExcite):
    """timm's EfficientNet-block SqueezeExcite(in_chs, rd_channels, act_layer, gate_layer)."""

    LAYERS = ("conv_reduce", "act1", "conv_expand", "gate")

    def __init__(self, in_chs: int, rd_channels: int, act_layer: type = nn.ReLU, gate_layer: type = nn.Sigmoid, *,
                 backend: Optional[str] = None, record_attention: bool = False):
        super().__init__(backend, record_attention)
        self.conv_reduce = _conv1x1(in_chs, rd_channels, True)
        self.act1 = act_layer()
        self.conv_expand = _conv1x1(rd_channels, in_chs, True)
        self.gate = gate_layer()
