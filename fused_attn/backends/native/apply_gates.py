"""Native passes of apply_gates (csrc/cpu/apply_gates.cpp, csrc/cuda/apply_gates.cpp)."""
from __future__ import annotations

from typing import Optional

import torch

from ._library import DTYPES, kernels  # noqa: F401  (DTYPES is part of the backend interface)

OPS = {"apply_gates"}


def apply_gates_combine(y: torch.Tensor, channel: Optional[torch.Tensor], spatial: Optional[torch.Tensor],
                        residual: Optional[torch.Tensor]) -> torch.Tensor:
    return kernels().apply_gates_combine(y, channel, spatial, residual)


def apply_gates_grads(grad_out: torch.Tensor, y: torch.Tensor, channel: Optional[torch.Tensor],
                      spatial: Optional[torch.Tensor]):
    """-> (grad_y like y, grad_channel [B, C] | [0], grad_spatial [B, H, W] | [0])."""
    return kernels().apply_gates_grads(grad_out, y, channel, spatial)


def apply_gates_grad_gates(grad_out: torch.Tensor, y: torch.Tensor, channel: torch.Tensor, spatial: torch.Tensor):
    """-> (grad_channel, grad_spatial) without grad_y."""
    return kernels().apply_gates_grad_gates(grad_out, y, channel, spatial)
