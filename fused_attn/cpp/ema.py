"""C++ backend of the EMA family: fused_attn_C::ema_strip_pool_* and ema_core_* (csrc/cpu/ema.cpp).

Same functions as fused_attn/reference/ema.py (contract in fused_attn/ops/ema.py). ema_core works one
(batch, group) tile of C / groups x H x W at a time: x, x2 (and grad_out) are read once, the outputs written once.
"""
from __future__ import annotations

import torch

from ._ops import DTYPES, ops  # noqa: F401  (DTYPES is part of the backend interface)

OPS = {"ema_strip_pool", "ema_core"}


def ema_strip_pool_forward(x: torch.Tensor) -> torch.Tensor:
    return ops().ema_strip_pool_forward(x)


def ema_strip_pool_backward(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return ops().ema_strip_pool_backward(grad, x)


def ema_core_forward(x, hw, x2, gn_weight, gn_bias, groups: int, eps: float):
    """-> (out like x, mean [B, C], rstd [B, C]) (GroupNorm statistics in the accumulation dtype)."""
    return ops().ema_core_forward(x, hw, x2, gn_weight, gn_bias, groups, eps)


def ema_core_backward(grad_out, x, hw, x2, gn_weight, gn_bias, mean, rstd, groups: int, eps: float):
    """-> (grad_x like x, grad_hw [B, C, H + W], grad_x2 like x2, grad_gn_weight, grad_gn_bias)."""
    return ops().ema_core_backward(grad_out, x, hw, x2, gn_weight, gn_bias, mean, rstd, groups, eps)
