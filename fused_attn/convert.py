"""fused_attn.convert: swap the attention modules of a model for their fused twins.

    model, report = fused_attn.convert(seed_model)            # a converted copy; seed_model is untouched
    print(report)                                             # path, old class, new class per replacement

Recognised by exact class, and built around the source's own layers (shared parameters):
  torchvision   SqueezeExcitation (fused_attn.nn.conv_se); ultralytics ChannelAttention (nn.pooled_gate),
                SpatialAttention and CBAM (nn.cbam_blocks)
  timm          SEModule, the EfficientNet-block SqueezeExcite (conv_se: one squeeze_excite op where it can
                express the MLP, else the pooled route: norm, add_maxpool, any activation or gate),
                EffectiveSEModule, EcaModule, CecaModule, hgnet's EseModule (pooled_gate), ChannelAttn,
                LightChannelAttn, SpatialAttn, LightSpatialAttn, CbamModule, LightCbamModule (cbam_blocks),
                GlobalContext (nn.global_context)
A subclass of one of them with its own forward (torchvision's QuantizableSqueezeExcitation) or an unsupported
setting is listed in `report.skipped` with the reason. The official code users paste, by class name and the
names and types of its children (`_OFFICIAL`): eca_layer (ECANet), CBAM / ChannelGate / SpatialGate
(Jongchan/attention-module); a class of that name with other children is walked into, not replaced.
Recognised by class name, then structure (the twin's state_dict keys and shapes, and the type and settings of
every parameterised layer, must equal the original's): SEBlock, MultiScaleAttention, DualAttention,
LiteDualAttention, AttnResBlock, EMAX (-> fixed groups, the only mode in which the seed's forward is defined),
and the official EMA, by structure alone (children exactly softmax, agp, pool_h, pool_w, gn, conv1x1, conv3x3,
and an int `groups`), whatever its class name. Coordinate attention: timm's CoordAttn and SimpleCoordAttn by
exact class, the official CoordAtt by class name, then structure (its children, plain 1x1 convolutions, oup == inp,
an `h_swish` act that computes x relu6(x + 3) / 6), all around their own layers (fused_attn.nn.coord).
A module with a recognised name and another structure is left
in place and listed in `report.skipped` with the reason. SimAM: the official `simam_module` and
External-Attention-pytorch's `SimAM`, by class name, then structure (only the child `activaton`, an nn.Sigmoid,
a float `e_lambda`, no parameters; fused_attn.nn.SimAM.misfit). A twin carries its source's plain public
attributes (e.g. ultralytics' layer indices `i`, `f`); hooks registered on a replaced module are not carried over.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Optional

from torch import nn

from .nn import (
    EMA,
    EMAX,
    AttnResBlock,
    DualAttention,
    LiteDualAttention,
    MultiScaleAttention,
    SEBlock,
    SimAM,
    cbam_blocks,
    conv_se,
    coord,
    global_context,
    pooled_gate,
)
from .nn.base import carry_attributes

__all__ = ["convert", "ConversionReport", "Replacement"]


@dataclass(frozen=True)
class Replacement:
    path: str   # "" for the model itself
    old: str    # class name of the replaced module
    new: str    # class name of its fused twin


@dataclass
class ConversionReport:
    replaced: list[Replacement] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)   # (path, class name, reason)

    def __len__(self) -> int:
        return len(self.replaced)

    def __iter__(self):
        return iter(self.replaced)

    def __str__(self) -> str:
        rows = [f"{r.path or '<model>'}: {r.old} -> fused_attn {r.new}" for r in self.replaced]
        rows += [f"{path or '<model>'}: {name} kept ({reason})" for path, name, reason in self.skipped]
        return f"converted {len(self.replaced)} module(s)" + "".join("\n  " + r for r in rows)


def _reduction(channels: int, hidden: int) -> int:
    return channels // hidden


_BY_NAME: dict[str, Callable[[nn.Module, Optional[str]], nn.Module]] = {
    "SEBlock": lambda m, b: SEBlock(m.fc[0].in_features, _reduction(m.fc[0].in_features, m.fc[0].out_features),
                                    backend=b),
    "MultiScaleAttention": lambda m, b: MultiScaleAttention(
        m.conv1x1.in_channels, _reduction(m.conv1x1.in_channels, m.conv1x1.out_channels), backend=b),
    "DualAttention": lambda m, b: DualAttention(
        m.spatial_att[0].in_channels, _reduction(m.spatial_att[0].in_channels, m.channel_att[1].out_channels),
        backend=b),
    "LiteDualAttention": lambda m, b: LiteDualAttention(
        m.spatial_att[0].in_channels, _reduction(m.spatial_att[0].in_channels, m.channel_att[1].out_channels),
        backend=b),
    "AttnResBlock": lambda m, b: AttnResBlock(
        m.conv.in_channels, _reduction(m.conv.in_channels, m.attn.channel_att[1].out_channels), backend=b),
    "EMAX": lambda m, b: EMAX(m.channels, factor=m.groups,
                              reduction=_reduction(m.channels, m.channel_gate[1].out_channels), backend=b),
}
_EMA_CHILDREN = {"softmax", "agp", "pool_h", "pool_w", "gn", "conv1x1", "conv3x3"}


def _is_official_ema(m: nn.Module) -> bool:
    return ({name for name, _ in m.named_children()} == _EMA_CHILDREN and isinstance(getattr(m, "groups", None), int)
            and isinstance(m.gn, nn.GroupNorm) and isinstance(m.conv1x1, nn.Conv2d))


def _structure_mismatch(src: nn.Module, dst: nn.Module) -> Optional[str]:
    """None when dst has src's state_dict keys and shapes and the same layers (type and settings) where both
    have one."""
    a = {k: tuple(v.shape) for k, v in src.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in dst.state_dict().items()}
    if a != b:
        diff = sorted(set(a.items()) ^ set(b.items()))[:4]
        return f"state_dict keys/shapes differ from the fused twin's, e.g. {diff}"
    theirs = dict(src.named_modules())
    for name, mine in dst.named_modules():
        other = theirs.get(name)
        if name and other is not None and (type(other).__name__ != type(mine).__name__ or (
                mine._parameters and other.extra_repr() != mine.extra_repr())):
            return f"layer {name!r} is {other!r}, the fused twin has {mine!r}"
    return None


def _assign(module: nn.Module, name: str, value) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(module.get_submodule(parent), leaf, value)


# the ecosystem's blocks, by exact class (module, name): their fused twin, built around their own layers
_ECOSYSTEM = {
    ("torchvision.ops.misc", "SqueezeExcitation"): conv_se.SqueezeExcitation,
    ("timm.layers.squeeze_excite", "SEModule"): conv_se.SEModule,
    ("timm.models._efficientnet_blocks", "SqueezeExcite"): conv_se.SqueezeExcite,
    ("timm.layers.squeeze_excite", "EffectiveSEModule"): pooled_gate.EffectiveSEModule,
    ("timm.layers.eca", "EcaModule"): pooled_gate.EcaModule,
    ("timm.layers.eca", "CecaModule"): pooled_gate.CecaModule,
    ("ultralytics.nn.modules.conv", "ChannelAttention"): pooled_gate.ChannelAttention,
    ("timm.models.hgnet", "EseModule"): pooled_gate.EseModule,
    ("timm.layers.cbam", "ChannelAttn"): cbam_blocks.ChannelAttn,
    ("timm.layers.cbam", "LightChannelAttn"): cbam_blocks.LightChannelAttn,
    ("timm.layers.cbam", "SpatialAttn"): cbam_blocks.SpatialAttn,
    ("timm.layers.cbam", "LightSpatialAttn"): cbam_blocks.LightSpatialAttn,
    ("timm.layers.cbam", "CbamModule"): cbam_blocks.CbamModule,
    ("timm.layers.cbam", "LightCbamModule"): cbam_blocks.LightCbamModule,
    ("ultralytics.nn.modules.conv", "SpatialAttention"): cbam_blocks.SpatialAttention,
    ("ultralytics.nn.modules.conv", "CBAM"): cbam_blocks.UltralyticsCBAM,
    ("timm.layers.coord_attn", "CoordAttn"): coord.CoordAttn,
    ("timm.layers.coord_attn", "SimpleCoordAttn"): coord.SimpleCoordAttn,
    ("timm.layers.global_context", "GlobalContext"): global_context.GlobalContext,
}

# the official code users paste into their projects, by class name and structure: (twin, child names -> the
# type names they must have); a class of that name with other children is not this block and is walked into
_OFFICIAL = {
    "eca_layer": (pooled_gate.EcaLayer, {"avg_pool": "AdaptiveAvgPool2d", "conv": "Conv1d", "sigmoid": "Sigmoid"}),
    "CBAM": (cbam_blocks.OfficialCBAM, {"ChannelGate": "ChannelGate", "SpatialGate": "SpatialGate"}),
    "ChannelGate": (cbam_blocks.ChannelGate, {"mlp": "Sequential"}),
    "SpatialGate": (cbam_blocks.SpatialGate, {"compress": "ChannelPool", "spatial": "BasicConv"}),
}
# by class name, then structure (coord.CoordAtt.misfit), around their own layers: the official CoordAtt
_BY_NAME_AROUND = {"CoordAtt": coord.CoordAtt}


def _class_key(cls: type) -> tuple[str, str]:
    return cls.__module__, cls.__name__


def _official_twin_class(m: nn.Module) -> Optional[type]:
    twin_cls, children = _OFFICIAL.get(type(m).__name__, (None, None))
    if twin_cls is None or {n: type(c).__name__ for n, c in m.named_children()} != children:
        return None
    return twin_cls


def _ecosystem_twin(m: nn.Module, backend: Optional[str]) -> tuple[Optional[nn.Module], Optional[str]]:
    key = _class_key(type(m))
    twin_cls = _ECOSYSTEM.get(key)
    if twin_cls is None:
        base = next((c for c in type(m).__mro__[1:] if _class_key(c) in _ECOSYSTEM), None)
        if base is not None:   # e.g. torchvision's QuantizableSqueezeExcitation: its own forward
            return None, f"a subclass of {base.__module__}.{base.__name__} with its own forward is not swapped"
        twin_cls = _official_twin_class(m)
        if twin_cls is None:
            return None, None
    reason = twin_cls.misfit(m)
    if reason is not None:
        return None, reason
    return twin_cls.from_source(m, backend), None


# parameter-free SimAM (official simam_module, External-Attention-pytorch's SimAM): by class name, then structure
_SIMAM_NAMES = {"simam_module", "SimAM"}


def _simam_twin(m: nn.Module, backend: Optional[str]) -> tuple[Optional[nn.Module], Optional[str]]:
    reason = SimAM.misfit(m)
    return (None, reason) if reason is not None else (SimAM.from_source(m, backend), None)


def _twin(m: nn.Module, backend: Optional[str]) -> tuple[Optional[nn.Module], Optional[str]]:
    """(fused twin sharing m's parameters, None), (None, reason) for a recognised misfit, or (None, None)."""
    if type(m).__module__.startswith("fused_attn."):
        return None, None
    if type(m).__name__ in _SIMAM_NAMES:
        return _simam_twin(m, backend)
    twin, reason = _ecosystem_twin(m, backend)
    if twin is not None or reason is not None:
        return twin, reason
    around = _BY_NAME_AROUND.get(type(m).__name__)
    if around is not None:
        reason = around.misfit(m)
        return (None, reason) if reason is not None else (around.from_source(m, backend), None)
    build = _BY_NAME.get(type(m).__name__)
    if build is None:
        if not _is_official_ema(m):
            return None, None
        build = lambda m, b: EMA(m.groups * m.conv1x1.in_channels, factor=m.groups, backend=b)  # noqa: E731
    try:
        twin = build(m, backend)
    except (AttributeError, TypeError, IndexError, ValueError, ZeroDivisionError) as exc:
        return None, f"cannot read its sizes: {type(exc).__name__}: {exc}"
    reason = _structure_mismatch(m, twin)
    if reason is not None:
        return None, reason
    for name, p in m.named_parameters():
        _assign(twin, name, p)
    for name, buf in m.named_buffers():
        _assign(twin, name, buf)
    return carry_attributes(m, twin).train(m.training), None


def convert(model: nn.Module, backend: Optional[str] = None, inplace: bool = False
            ) -> tuple[nn.Module, ConversionReport]:
    """Replace every recognised seed-style module of `model` by its fused twin -> (model, report).

    The twins share the originals' Parameter objects (and training mode); with inplace=False the model is
    deep-copied first, so the returned model's parameters are copies and `model` stays as it was. With
    inplace=True `model` itself is changed (and returned, unless `model` itself is the replaced module).
    `backend` is given to every twin (None = the current fused_attn setting at each call).
    """
    if not inplace:
        model = copy.deepcopy(model)
    report = ConversionReport()
    done: dict[int, nn.Module] = {}

    def replace(m: nn.Module, path: str) -> Optional[nn.Module]:
        if id(m) in done:
            return done[id(m)]
        twin, reason = _twin(m, backend)
        if twin is not None:
            done[id(m)] = twin
            report.replaced.append(Replacement(path, type(m).__name__, type(twin).__name__))
        elif reason is not None:
            report.skipped.append((path, type(m).__name__, reason))
        return twin

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in list(module.named_children()):
            path = f"{prefix}.{name}" if prefix else name
            twin = replace(child, path)
            if twin is not None:
                setattr(module, name, twin)
            elif not type(child).__module__.startswith("fused_attn."):
                walk(child, path)

    root = replace(model, "")
    if root is not None:
        return root, report
    walk(model, "")
    return model, report
