"""What every drop-in module shares: a backend request, the SE-style gate helpers, attention recording.

Recording is off by default and then costs one attribute test per forward: nothing is computed or kept.
With it on (`record_attention=True` at construction, or `with fused_attn.record_attention(model):`), each
module keeps its last attention weights, detached, in `module.attention_maps`:
  "channel"  [B, C]        channel gate
  "spatial"  [B, H, W]     spatial gate (EMA, fixed EMAX: [B, G, H, W], one map per group)
  "global"   [B, C]        EMAX's global gate on the fused output
  "groups"   [B, K]        EMAX dynamic mode: the mixture weights over its group counts
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Iterator, Optional

from torch import Tensor, nn

from .. import functional as FA

__all__ = ["AttentionModule", "AttentionMaps", "record_attention", "mlp_gate_args"]

_ACT_NAMES = {nn.ReLU: "relu", nn.Hardswish: "hardswish", nn.SiLU: "silu"}
_GATE_NAMES = {nn.Sigmoid: "sigmoid", nn.Hardsigmoid: "hardsigmoid"}


def mlp_gate_args(seq: nn.Sequential) -> tuple:
    """(w1, b1, w2, b2, act, gate) of an SE-style MLP `[pool,] fc1, act, fc2, gate` (Linear or 1x1 Conv2d fcs)."""
    mods = [m for m in seq if not isinstance(m, nn.AdaptiveAvgPool2d)]
    if len(mods) != 4 or not all(isinstance(m, (nn.Linear, nn.Conv2d)) for m in mods[::2]):
        raise TypeError(f"expected [pool,] fc, act, fc, gate; got {[type(m).__name__ for m in seq]}")
    fc1, act, fc2, gate = mods
    try:
        return fc1.weight, fc1.bias, fc2.weight, fc2.bias, _ACT_NAMES[type(act)], _GATE_NAMES[type(gate)]
    except KeyError as exc:
        raise TypeError(f"unsupported activation or gate {exc}; activations: {sorted(_ACT_NAMES.values())}, "
                        f"gates: {sorted(_GATE_NAMES.values())}") from None


class AttentionModule(nn.Module):
    """Base of the drop-in modules: `backend` (None = the current fused_attn setting) and attention recording."""

    def __init__(self, backend: Optional[str] = None, record_attention: bool = False):
        super().__init__()
        self.backend = backend
        self.record_attention = record_attention
        self.attention_maps: dict[str, Tensor] = {}

    def extra_repr(self) -> str:
        parts = [f"backend={self.backend!r}"] if self.backend is not None else []
        return ", ".join(parts + (["record_attention=True"] if self.record_attention else []))

    def _record(self, **maps: Optional[Tensor]) -> None:
        self.attention_maps = {k: v.detach() for k, v in maps.items() if v is not None}

    def _gate(self, x: Tensor, seq: nn.Sequential, pooled: Optional[Tensor] = None) -> Tensor:
        """seq's channel gate of x, [B, C]: gate(fc2 act(fc1 mean_hw(x))); pooled: mean_hw(x) if known."""
        return FA.channel_gate(x, *mlp_gate_args(seq), backend=self.backend, pooled=pooled)

    def _excite(self, x: Tensor, seq: nn.Sequential) -> tuple[Tensor, Optional[Tensor]]:
        """(x * gate, gate): one squeeze_excite op, or (when recording) channel_gate + apply_gates to keep the gate."""
        if not self.record_attention:
            return FA.squeeze_excite(x, *mlp_gate_args(seq), backend=self.backend), None
        s = self._gate(x, seq)
        return FA.apply_gates(x, channel=s, backend=self.backend), s


def carry_attributes(source: nn.Module, twin: nn.Module) -> nn.Module:
    """Give `twin` the plain public attributes of `source` it does not have itself: the source's settings
    (timm's add_maxpool, CECA's padding) and what frameworks attach to their layers (ultralytics' `i`, `f`,
    `type`, `np`, which its model's forward reads)."""
    for name, value in vars(source).items():
        if not name.startswith("_") and name != "training":
            twin.__dict__.setdefault(name, value)
    return twin


def twin_around(cls: type, source: nn.Module, backend: Optional[str]) -> AttentionModule:
    """An instance of the twin class `cls` holding `source`'s own child modules under their names (the same
    objects: parameters shared, state_dict keys unchanged; None entries too) and its plain attributes."""
    twin = cls.__new__(cls)
    AttentionModule.__init__(twin, backend)
    for name, child in source._modules.items():
        twin._modules[name] = child
    carry_attributes(source, twin)
    return twin.train(source.training)


class AttentionMaps(Mapping):
    """Live view {module path: that module's last attention maps} over the attention modules of a model."""

    def __init__(self, modules: dict[str, AttentionModule]):
        self.modules = modules

    def __getitem__(self, path: str) -> dict[str, Tensor]:
        return self.modules[path].attention_maps

    def __iter__(self):
        return (path for path, m in self.modules.items() if m.attention_maps)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def attention_modules(model: nn.Module) -> dict[str, AttentionModule]:
    """{path: module} for every fused_attn attention module in `model` (the root's path is its class name)."""
    return {path or type(m).__name__: m for path, m in model.named_modules() if isinstance(m, AttentionModule)}


@contextlib.contextmanager
def record_attention(model: nn.Module, enabled: bool = True) -> Iterator[AttentionMaps]:
    """Turn recording on for every attention module in `model` for the scope; yields {path: maps}.

        with fused_attn.record_attention(model) as maps:
            model(x)
        fused_attn.viz.plot_attention(maps, "attention.png")

    The maps stay on the modules after the scope ends (until their next recorded forward); the flags are restored.
    """
    modules = attention_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no fused_attn attention modules "
                         "(convert a seed model first: fused_attn.convert(model))")
    previous = {path: m.record_attention for path, m in modules.items()}
    for m in modules.values():
        m.record_attention = enabled
    try:
        yield AttentionMaps(modules)
    finally:
        for path, m in modules.items():
            m.record_attention = previous[path]
