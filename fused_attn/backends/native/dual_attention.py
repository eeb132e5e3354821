"""Native passes of dual_attention (csrc/cpu/dual_attention.cpp, csrc/cuda/dual_attention.cpp); its other two
passes are apply_gates_combine and apply_gates_grad_gates of the apply_gates family."""
from __future__ import annotations

import torch

from ._library import DTYPES, kernels  # noqa: F401  (DTYPES is part of the backend interface)
from .apply_gates import apply_gates_combine, apply_gates_grad_gates  # noqa: F401  (passes of this op)

OPS = {"dual_attention"}


def dual_attention_reduce(x: torch.Tensor, ws: torch.Tensor):
    """-> (pooled = mean_hw x [B, C], logit = sum_c ws x [B, H, W]), accumulation dtype, one pass."""
    return kernels().dual_attention_reduce(x, ws)


def dual_attention_grad_input(grad_out: torch.Tensor, x: torch.Tensor, channel: torch.Tensor,
                              spatial: torch.Tensor, ws: torch.Tensor, grad_logit: torch.Tensor,
                              grad_pooled: torch.Tensor):
    """-> (grad_x like x, grad_ws [C] accumulation dtype), one pass."""
    return kernels().dual_attention_grad_input(grad_out, x, channel, spatial, ws, grad_logit, grad_pooled)
