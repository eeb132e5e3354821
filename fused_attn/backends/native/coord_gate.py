"""Native passes of coord_gate (csrc/cpu/coord_gate.cpp, csrc/cuda/coord_gate.cpp)."""
from __future__ import annotations

import torch

from ._library import DTYPES, kernels  # noqa: F401  (DTYPES is part of the backend interface)

OPS = {"coord_gate"}


def coord_gate_combine(x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor, gate: str, skip: bool) -> torch.Tensor:
    """-> out like x: (x * a_w) * a_h, or x * gate(a_h + a_w); + x when skip."""
    return kernels().coord_gate_combine(x, a_h, a_w, gate, skip)


def coord_gate_grads(grad_out: torch.Tensor, x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor, gate: str,
                     skip: bool):
    """-> (grad_x like x, grad_a_h [B, C, H] in a_h's dtype, grad_a_w [B, C, W] in a_w's dtype), one pass."""
    return kernels().coord_gate_grads(grad_out, x, a_h, a_w, gate, skip)
