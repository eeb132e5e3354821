"""Fused twins of the squeeze-excite blocks of torchvision and timm: 1x1-conv MLPs with biases.

    y = x * gate(fc2 act(fc1 mean_hw(x)))          fc1: C -> Cr, fc2: Cr -> C, 1x1 convs with biases

one `functional.squeeze_excite` op (pool, the tiny MLP in PyTorch, the scaling pass) on every backend. Each
twin keeps its source's child names, so state_dicts load strictly both ways:

  SqueezeExcitation   torchvision.ops.SqueezeExcitation (efficientnet, mobilenet_v3, regnet_y):
                      avgpool, fc1, activation, fc2, scale_activation
  SEModule            timm.layers.SEModule (seresnet, seresnext, regnety, ...), bn = Identity and
                      add_maxpool=False only: fc1, bn, act, fc2, gate
  SqueezeExcite       timm's EfficientNet / MobileNet block SE (timm.models._efficientnet_blocks.SqueezeExcite):
                      conv_reduce, act1, conv_expand, gate

Activations: ReLU, SiLU (timm Swish), Hardswish (timm HardSwish); gates: Sigmoid, Hardsigmoid (torch's or
timm's classes). `from_source(module)` builds the twin around the source's own layers (shared parameters).
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .. import functional as FA
from .base import AttentionModule, twin_around

__all__ = ["SqueezeExcitation", "SEModule", "SqueezeExcite", "activation_name", "gate_name"]

_ACTS = {"ReLU": "relu", "SiLU": "silu", "Swish": "silu", "Hardswish": "hardswish", "HardSwish": "hardswish"}
_GATES = {"Sigmoid": "sigmoid", "Hardsigmoid": "hardsigmoid", "HardSigmoid": "hardsigmoid"}


def _name_of(module: nn.Module, table: dict, what: str) -> str:
    name = table.get(type(module).__name__)
    if name is None:
        raise TypeError(f"unsupported {what} {type(module).__name__}; supported: {sorted(table)}")
    return name


def activation_name(module: nn.Module) -> str:
    """fused_attn's act name of an activation layer (torch's or timm's class), else TypeError."""
    return _name_of(module, _ACTS, "activation")


def gate_name(module: nn.Module) -> str:
    """fused_attn's gate name of a gate layer (torch's or timm's class), else TypeError."""
    return _name_of(module, _GATES, "gate")


def _conv1x1(cin: int, cout: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=bias)


class _ConvSqueezeExcite(AttentionModule):
    """The shared forward: the child names of (fc1, act, fc2, gate) are LAYERS."""

    LAYERS: tuple[str, str, str, str]

    def _layers(self) -> tuple[nn.Conv2d, str, nn.Conv2d, str]:
        fc1, act, fc2, gate = (getattr(self, n) for n in self.LAYERS)
        return fc1, activation_name(act), fc2, gate_name(gate)

    def forward(self, x: Tensor) -> Tensor:
        fc1, act, fc2, gate = self._layers()
        args = (fc1.weight, fc1.bias, fc2.weight, fc2.bias, act, gate)
        if not self.record_attention:
            return FA.squeeze_excite(x, *args, backend=self.backend)
        s = FA.channel_gate(x, *args, backend=self.backend)
        self._record(channel=s)
        return FA.apply_gates(x, channel=s, backend=self.backend)

    @classmethod
    def misfit(cls, source: nn.Module) -> Optional[str]:
        """Why `source` (of the class this twin stands for) cannot be swapped; None when it can."""
        if getattr(source, "add_maxpool", False):
            return "add_maxpool=True (mean + max squeeze) is not fused"
        bn = getattr(source, "bn", None)
        if bn is not None and not isinstance(bn, nn.Identity):
            return f"a {type(bn).__name__} between fc1 and the activation is not fused"
        fc1, act, fc2, gate = (getattr(source, name, None) for name in cls.LAYERS)
        for name, fc in ((cls.LAYERS[0], fc1), (cls.LAYERS[2], fc2)):
            if not (isinstance(fc, nn.Conv2d) and fc.kernel_size == (1, 1) and fc.groups == 1
                    and fc.stride == (1, 1) and fc.padding == (0, 0)):
                return f"{name} is {fc!r}, not a plain 1x1 convolution"
        try:
            activation_name(act)
            gate_name(gate)
        except TypeError as exc:
            return str(exc)
        return None

    @classmethod
    def from_source(cls, source: nn.Module, backend: Optional[str] = None) -> "_ConvSqueezeExcite":
        """The twin of `source` around source's own child layers (same objects: parameters shared)."""
        twin = twin_around(cls, source, backend)
        twin._layers()  # unsupported activations fail here, with their names
        return twin


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
        self._layers()


class SEModule(_ConvSqueezeExcite):
    """timm.layers.SEModule(channels, rd_channels=..., bias, act_layer, gate_layer), without norm or maxpool."""

    LAYERS = ("fc1", "act", "fc2", "gate")

    def __init__(self, channels: int, rd_channels: int, bias: bool = True, act_layer: type = nn.ReLU,
                 gate_layer: type = nn.Sigmoid, *, backend: Optional[str] = None, record_attention: bool = False):
        super().__init__(backend, record_attention)
        self.fc1 = _conv1x1(channels, rd_channels, bias)
        self.bn = nn.Identity()
        self.act = act_layer()
        self.fc2 = _conv1x1(rd_channels, channels, bias)
        self.gate = gate_layer()
        self._layers()


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
        self._layers()
