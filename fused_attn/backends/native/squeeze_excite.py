"""Native passes of the squeeze_excite family (csrc/cpu/squeeze_excite.cpp, csrc/cuda/squeeze_excite.cpp)."""
from __future__ import annotations

import torch

from ._library import DTYPES, kernels  # noqa: F401  (DTYPES is part of the backend interface)

OPS = {"channel_squeeze", "squeeze_excite", "eca", "ese"}


def channel_squeeze_reduce(x: torch.Tensor) -> torch.Tensor:
    """mean over H, W -> [B, C] in the accumulation dtype."""
    return kernels().channel_squeeze_reduce(x)


def channel_squeeze_grad_input(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return kernels().channel_squeeze_grad_input(grad, x)


def channel_scale(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return kernels().channel_scale(x, s)


def squeeze_excite_combine(x: torch.Tensor, w1: torch.Tensor, b1, w2: torch.Tensor, b2, act: str, gate: str):
    """The whole forward, MLP included -> (y like x, pooled [B, C], z1 [B, Cr], z2 [B, C]) (acc dtype); on the
    CPU in cache-sized waves of samples, reading x from memory once."""
    return kernels().squeeze_excite_combine(x, w1, b1, w2, b2, act, gate)


def eca_combine(x: torch.Tensor, weight: torch.Tensor, circular: bool, gate: str):
    """The whole ECA forward -> (y like x, pooled [B, C], z [B, C]) (acc dtype); on the CPU in cache-sized waves
    of samples, reading x from memory once."""
    return kernels().eca_combine(x, weight, circular, gate)


def ese_combine(x: torch.Tensor, weight: torch.Tensor, bias, gate: str):
    """The whole ESE forward -> (y like x, pooled [B, C], z [B, C]) (acc dtype); on the CPU in cache-sized waves."""
    return kernels().ese_combine(x, weight, bias, gate)


def squeeze_excite_grad_gate(grad_y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return kernels().squeeze_excite_grad_gate(grad_y, x)


def squeeze_excite_grad_input(grad_y: torch.Tensor, x: torch.Tensor, s: torch.Tensor,
                              grad_pooled: torch.Tensor) -> torch.Tensor:
    return kernels().squeeze_excite_grad_input(grad_y, x, s, grad_pooled)
