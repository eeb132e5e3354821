"""The forwards of the one-layer SE-type ops, eca and ese, composed from a backend's two passes over x:

  pooled = reduce(x) (mean_hw, accumulation dtype)
  z, s   = the layer on the [B, C] means in PyTorch: ECA's k-tap conv across the channels (fused_attn._eca), or
           ESE's one C x C layer (fused_attn._mlp.single_forward); s = gate(z)
  y      = scale(x, s)                                  -> (y, pooled, z)

For the backends whose kernels are those passes (reference, Triton); the native backends run the whole forward
in C++ (csrc/*/squeeze_excite.cpp).
"""
from __future__ import annotations

from typing import Callable

import torch

from . import _eca, _mlp


def one_layer_forwards(reduce: Callable, scale: Callable) -> tuple[Callable, Callable]:
    """(eca_combine, ese_combine) of a backend with the passes reduce(x) -> [B, C] and scale(x, s) -> y."""
    def eca_combine(x: torch.Tensor, weight: torch.Tensor, circular: bool, gate: str):
        """-> (y like x, pooled [B, C], z [B, C]); the last two in the accumulation dtype."""
        pooled = reduce(x)
        z, s = _eca.forward_gate(pooled, weight, circular, gate)
        return scale(x, s), pooled, z

    def ese_combine(x: torch.Tensor, weight: torch.Tensor, bias, gate: str):
        """-> (y like x, pooled [B, C], z [B, C]); the last two in the accumulation dtype."""
        pooled = reduce(x)
        c = x.shape[1]
        z, s = _mlp.single_forward(pooled, weight.reshape(c, c), bias, gate)
        return scale(x, s), pooled, z

    return eca_combine, ese_combine
