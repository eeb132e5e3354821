"""C++ backend of the channel_pool family: fused_attn_C::channel_pool_{forward,backward} (csrc/cpu/channel_pool.cpp).

Same functions, arguments and outputs as fused_attn/reference/channel_pool.py (the backend contract in
fused_attn/ops/channel_pool.py); one pass over x forward, one over grad_x backward.
"""
from __future__ import annotations

import torch

from ._ops import DTYPES, ops  # noqa: F401  (DTYPES is part of the backend interface)

OPS = {"channel_pool"}


def channel_pool_forward(x: torch.Tensor, stats: tuple[str, ...]):
    """-> (out [B, len(stats), H, W] like x, argmax [B, H, W] int32 | [0], moments [B, 2, H, W] acc | [0])."""
    return ops().channel_pool_forward(x, ",".join(stats))


def channel_pool_backward(grad_out: torch.Tensor, x: torch.Tensor, argmax: torch.Tensor, moments: torch.Tensor,
                          stats: tuple[str, ...]) -> torch.Tensor:
    return ops().channel_pool_backward(grad_out, x, argmax, moments, ",".join(stats))
