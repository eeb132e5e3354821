"""C++ backend of apply_gates: fused_attn_C::apply_gates_{forward,backward} (csrc/cpu/apply_gates.cpp).

Same functions as fused_attn/reference/apply_gates.py (contract in fused_attn/ops/apply_gates.py); the
backward is one pass over (grad_out, y) producing grad_y, grad_channel and grad_spatial.
"""
from __future__ import annotations

from typing import Optional

import torch

from ._ops import DTYPES, ops  # noqa: F401  (DTYPES is part of the backend interface)

OPS = {"apply_gates"}


def apply_gates_forward(y: torch.Tensor, channel: Optional[torch.Tensor], spatial: Optional[torch.Tensor],
                        residual: Optional[torch.Tensor]) -> torch.Tensor:
    return ops().apply_gates_forward(y, channel, spatial, residual)


def apply_gates_backward(grad_out: torch.Tensor, y: torch.Tensor, channel: Optional[torch.Tensor],
                         spatial: Optional[torch.Tensor]):
    """-> (grad_y like y, grad_channel [B, C] | [0], grad_spatial [B, H, W] | [0])."""
    return ops().apply_gates_backward(grad_out, y, channel, spatial)
