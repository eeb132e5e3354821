"""Native passes of ema_core (csrc/cpu/ema_core.cpp, csrc/cuda/ema_core.cpp): the whole core after EMA's two
convolutions, forward in one pass (`combine`) and backward in one (`grads`); how each kernel tiles the work per
layout: docs/cpu.md, docs/cuda.md."""
from __future__ import annotations

from ._library import DTYPES, kernels  # noqa: F401  (DTYPES is part of the backend interface)

OPS = {"ema_core"}


def ema_core_combine(x, hw, x2, gn_weight, gn_bias, groups: int, eps: float):
    """-> (out like x, mean [B, C], rstd [B, C]) (GroupNorm statistics in the accumulation dtype)."""
    return kernels().ema_core_combine(x, hw, x2, gn_weight, gn_bias, groups, eps)


def ema_core_grads(grad_out, x, hw, x2, gn_weight, gn_bias, mean, rstd, groups: int, eps: float):
    """-> (grad_x like x, grad_hw [B, C, H + W], grad_x2 like x2, grad_gn_weight, grad_gn_bias)."""
    return kernels().ema_core_grads(grad_out, x, hw, x2, gn_weight, gn_bias, mean, rstd, groups, eps)
