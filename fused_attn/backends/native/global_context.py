"""Native passes of global_context (csrc/cpu/global_context.cpp, csrc/cuda/global_context.cpp)."""
from __future__ import annotations

import torch

from ._library import DTYPES, kernels  # noqa: F401  (DTYPES is part of the backend interface)

OPS = {"global_context_pool"}


def global_context_pool_reduce(x: torch.Tensor, weight: torch.Tensor):
    """-> (ctx [B, C], lse [B]) in the accumulation dtype: softmax_p(weight . x)-weighted channel sums."""
    return kernels().global_context_pool_reduce(x, weight)


def global_context_pool_grads(grad_ctx: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, ctx: torch.Tensor,
                              lse: torch.Tensor):
    """-> (grad_x like x, grad_weight [C] accumulation dtype)."""
    return kernels().global_context_pool_grads(grad_ctx, x, weight, ctx, lse)
