"""Native passes of channel_pool (csrc/cpu/channel_pool.cpp, csrc/cuda/channel_pool.cpp)."""
from __future__ import annotations

import torch

from ._library import DTYPES, kernels  # noqa: F401  (DTYPES is part of the backend interface)

OPS = {"channel_pool"}


def channel_pool_reduce(x: torch.Tensor, stats: tuple[str, ...]):
    """-> (out [B, len(stats), H, W] like x, argmax [B, H, W] int32 | [0], moments [B, 2, H, W] acc | [0])."""
    return kernels().channel_pool_reduce(x, ",".join(stats))


def channel_pool_grad_input(grad_out: torch.Tensor, x: torch.Tensor, argmax: torch.Tensor, moments: torch.Tensor,
                            stats: tuple[str, ...]) -> torch.Tensor:
    return kernels().channel_pool_grad_input(grad_out, x, argmax, moments, ",".join(stats))
