"""Native passes of ema_strip_pool (csrc/cpu/ema_strip_pool.cpp, csrc/cuda/ema_strip_pool.cpp)."""
from __future__ import annotations

import torch

from ._library import DTYPES, kernels  # noqa: F401  (DTYPES is part of the backend interface)

OPS = {"ema_strip_pool"}


def ema_strip_pool_reduce(x: torch.Tensor) -> torch.Tensor:
    """-> [B, C, H + W] in x's dtype: row means, then column means."""
    return kernels().ema_strip_pool_reduce(x)


def ema_strip_pool_grad_input(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return kernels().ema_strip_pool_grad_input(grad, x)
