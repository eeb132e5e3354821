"""C++ backend of the squeeze_excite family (csrc/cpu/squeeze_excite.cpp).

Same functions as fused_attn/reference/squeeze_excite.py (contract in fused_attn/ops/squeeze_excite.py):
  channel_squeeze_forward / _backward   fused_attn_C::channel_squeeze_forward / _backward
  channel_scale_forward                 fused_attn_C::squeeze_excite_forward     (x * s)
  squeeze_excite_grad_gate              fused_attn_C::squeeze_excite_grad_gate   (sum_hw grad_y * x)
  squeeze_excite_grad_input             fused_attn_C::squeeze_excite_backward    (grad_y * s + grad_pooled / HW)
"""
from __future__ import annotations

import torch

from ._ops import DTYPES, ops  # noqa: F401  (DTYPES is part of the backend interface)

OPS = {"channel_squeeze", "squeeze_excite"}


def channel_squeeze_forward(x: torch.Tensor) -> torch.Tensor:
    """mean over H, W -> [B, C] in the accumulation dtype."""
    return ops().channel_squeeze_forward(x)


def channel_squeeze_backward(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return ops().channel_squeeze_backward(grad, x)


def channel_scale_forward(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return ops().squeeze_excite_forward(x, s)


def squeeze_excite_grad_gate(grad_y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return ops().squeeze_excite_grad_gate(grad_y, x)


def squeeze_excite_grad_input(grad_y: torch.Tensor, s: torch.Tensor, grad_pooled: torch.Tensor,
                              x: torch.Tensor) -> torch.Tensor:
    return ops().squeeze_excite_backward(grad_y, x, s, grad_pooled)
