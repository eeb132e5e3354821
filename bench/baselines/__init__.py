"""The eager baselines: what each row's `eager` provider runs, plain PyTorch as users write it; never fused_attn.

Module rows time fused_attn's module against the module it replaces, the first available of its candidates in
MODULE_BASELINES: the real torchvision / timm / ultralytics class where fused_attn's module stands in for one,
else the seed module the fused module is the drop-in for (seed_modules.py, in this folder), else the block as its
authors' official code writes it (official.py). The fused module gets the baseline's weights: its state_dict
as it is (loaded strictly), or mapped where the layouts differ (`to_fused`, e.g. timm CBAM's BatchNorm folded
into the spatial conv). Baselines are built with random weights (norm layers' affine parameters and running
statistics drawn too, so that a mapping is checked), nothing is downloaded.

  SEBlock, MultiScaleAttention, DualAttention,    the seed modules (seed 001, 000, 002, 003; EMAX run with its
  LiteDualAttention, EMAX, vgg16_se                 fixed groups, as its sampled grouping cannot run)
  EMA                                             official EMA (YOLOonMe/EMA-attention-module), official.py
  CBAM                                            timm.layers.cbam.CbamModule; without timm, the official CBAM
                                                  (Jongchan/attention-module), official.py

Not rows (fused_attn has no module that replaces them yet): torchvision.ops.SqueezeExcitation and timm's
SEModule (1x1 convs with biases; SEBlock is the Linear, bias-free SE of seed 001), timm's EcaModule,
ultralytics' CBAM (one C -> C conv for the channel gate, no MLP). Op rows: torch_ops.py.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from . import official, seed_modules

HERE = Path(__file__).resolve().parent
VGG_CLASSES = 10


class Missing(Exception):
    """No candidate baseline can be built here (the message says why)."""


@dataclass(frozen=True)
class Baseline:
    name: str                                          # what the row prints, e.g. "timm.layers.cbam.CbamModule"
    source: str                                        # where the class comes from
    make: Callable[[int], nn.Module]                   # channels -> the module, random weights
    requires: Optional[str] = None                     # a package it imports (absent: try the next candidate)
    fused_kwargs: Callable[[nn.Module], dict] = lambda m: {}   # fused_attn constructor arguments matching it
    to_fused: Optional[Callable[[nn.Module], dict]] = None      # its weights as fused_attn's state_dict
    shared: Optional[Callable[[nn.Module], list]] = None        # [(its name, fused name)] of compared params
    forward_kwargs: Callable[[nn.Module], dict] = lambda m: {}  # extra forward arguments
    mapping: str = ""                                  # how its weights reach the fused module, when mapped

    def missing(self) -> Optional[str]:
        if self.requires and importlib.util.find_spec(self.requires) is None:
            return f"{self.requires} is not installed"
        return None

    def version(self) -> str:
        if not self.requires:
            return self.source
        return f"{self.source} {getattr(importlib.import_module(self.requires), '__version__', '')}".rstrip()

    def state_for_fused(self, module: nn.Module) -> dict:
        return module.state_dict() if self.to_fused is None else self.to_fused(module)

    def param_pairs(self, module: nn.Module) -> list:
        """(baseline name, fused name) of the trainable parameters whose gradients are compared."""
        if self.shared is not None:
            return self.shared(module)
        return [(n, n) for n, p in module.named_parameters() if p.requires_grad]


def _randomise_norms(module: nn.Module) -> nn.Module:
    """Random affine parameters and running statistics for every BatchNorm / GroupNorm (defaults are 1, 0)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return module


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple:
    """(weight, bias) of one conv equal to conv -> bn in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return (conv.weight * scale.reshape(-1, 1, 1, 1)).detach().clone(), bias.detach().clone()


# --------------------------------------------------------------------------------------------------- CBAM
def _timm_cbam(channels: int) -> nn.Module:
    from timm.layers.cbam import CbamModule
    return _randomise_norms(CbamModule(channels))


def _timm_cbam_state(m: nn.Module) -> dict:
    """timm: spatial gate conv(cat(mean_c, amax_c)) -> BN; fused_attn: conv with bias on cat(max_c, mean_c)."""
    weight, bias = _fold_bn(m.spatial.conv.conv, m.spatial.conv.bn)
    return {"channel.fc1.weight": m.channel.fc1.weight.detach().clone(),
            "channel.fc2.weight": m.channel.fc2.weight.detach().clone(),
            "spatial.weight": weight[:, [1, 0]].contiguous(), "spatial.bias": bias}


def _official_cbam_state(m: nn.Module) -> dict:
    """Official: Linear MLP with biases, spatial BasicConv (conv, BN) on cat(max_c, mean_c), fused_attn's order."""
    fc1, fc2 = m.ChannelGate.mlp[1], m.ChannelGate.mlp[3]
    weight, bias = _fold_bn(m.SpatialGate.spatial.conv, m.SpatialGate.spatial.bn)
    return {"channel.fc1.weight": fc1.weight.detach()[:, :, None, None].clone(), "channel.fc1.bias": fc1.bias.detach(),
            "channel.fc2.weight": fc2.weight.detach()[:, :, None, None].clone(), "channel.fc2.bias": fc2.bias.detach(),
            "spatial.weight": weight, "spatial.bias": bias}


TIMM_CBAM = Baseline(
    "timm.layers.cbam.CbamModule", "timm", _timm_cbam, requires="timm",
    fused_kwargs=lambda m: {"rd_channels": m.channel.fc1.out_channels},
    to_fused=_timm_cbam_state,
    shared=lambda m: [("channel.fc1.weight", "channel.fc1.weight"), ("channel.fc2.weight", "channel.fc2.weight")],
    mapping="eval-mode BN folded into fused_attn's spatial conv, its input planes swapped to (max, mean)")
OFFICIAL_CBAM = Baseline(
    "official CBAM (Jongchan)", "bench/baselines/official.py",
    lambda c: _randomise_norms(official.CBAM(c)),
    fused_kwargs=lambda m: {"rd_channels": m.ChannelGate.mlp[1].out_features, "mlp_bias": True},
    to_fused=_official_cbam_state, shared=lambda m: [],
    mapping="Linear weights as 1x1 convs; eval-mode BN folded into fused_attn's spatial conv")


# ------------------------------------------------------------------------------------------ seed and EMA
def _seed(name: str, forward_kwargs: Callable[[nn.Module], dict] = lambda m: {}) -> Baseline:
    return Baseline(f"seed {name}", "bench/baselines/seed_modules.py",
                    lambda c: getattr(seed_modules, name)(c), forward_kwargs=forward_kwargs)


OFFICIAL_EMA = Baseline("official EMA (YOLOonMe)", "bench/baselines/official.py",
                        lambda c: _randomise_norms(official.EMA(c)))
SEED_VGG16_SE = Baseline("seed vgg16_se", "bench/baselines/seed_modules.py",
                         lambda c: seed_modules.vgg16_se(num_classes=VGG_CLASSES))

# module row -> candidates, the first available one is used
MODULE_BASELINES: dict[str, tuple] = {
    "SEBlock": (_seed("SEBlock"),),
    "MultiScaleAttention": (_seed("MultiScaleAttention"),),
    "DualAttention": (_seed("DualAttention"),),
    "LiteDualAttention": (_seed("LiteDualAttention"),),
    "EMA": (OFFICIAL_EMA,),
    # the seed EMAX's own group sampling cannot run (see seed_modules.py): run it with its fixed groups
    "EMAX": (_seed("EMAX", lambda m: {"groups": m.groups}),),
    "CBAM": (TIMM_CBAM, OFFICIAL_CBAM),
    "vgg16_se": (SEED_VGG16_SE,),
}


def for_module(name: str) -> Baseline:
    """The baseline of module row `name`: its first candidate that can be built here; Missing if none."""
    reasons = []
    for candidate in MODULE_BASELINES[name]:
        why = candidate.missing()
        if why is None:
            return candidate
        reasons.append(f"{candidate.name}: {why}")
    raise Missing(f"no eager baseline ({'; '.join(reasons)})")


def describe() -> dict:
    """{module row: the baseline it uses here (or why none)}."""
    out = {}
    for name in MODULE_BASELINES:
        try:
            out[name] = for_module(name).name
        except Missing as exc:
            out[name] = str(exc)
    return out
