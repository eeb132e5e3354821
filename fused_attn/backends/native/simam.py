"""Native passes of simam (csrc/cpu/simam.cpp, csrc/cuda/simam.cpp)."""
from __future__ import annotations

import torch

from ._library import DTYPES, kernels  # noqa: F401  (DTYPES is part of the backend interface)

OPS = {"simam"}


def simam_gate(x: torch.Tensor, e_lambda: float) -> tuple:
    """-> (out like x, mean [B, C] acc, k [B, C] acc): out = x sigmoid((x - mu)^2 k + 0.5), one read of x."""
    return kernels().simam_gate(x, e_lambda)


def simam_grad_input(grad_out: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """grad_x like x (reads grad_out and x once)."""
    return kernels().simam_grad_input(grad_out, x, mean, k)
