"""C++ backend of the dual_attention family (csrc/cpu/dual_attention.cpp, csrc/cpu/apply_gates.cpp).

Same functions as fused_attn/reference/dual_attention.py (contract in fused_attn/ops/dual_attention.py):
  dual_attention_reduce       fused_attn_C::dual_attention_forward    (mean_hw x and sum_c ws x in one pass)
  dual_attention_apply        fused_attn_C::apply_gates_forward       (x * channel * spatial)
  dual_attention_grad_gates   fused_attn_C::apply_gates_grad_gates    (sum_p g x spatial, sum_c g x channel)
  dual_attention_grad_input   fused_attn_C::dual_attention_backward   (grad_x and grad_ws in one pass)
"""
from __future__ import annotations

import torch

from ._ops import DTYPES, ops  # noqa: F401  (DTYPES is part of the backend interface)

OPS = {"dual_attention"}


def dual_attention_reduce(x: torch.Tensor, ws: torch.Tensor):
    return ops().dual_attention_forward(x, ws)


def dual_attention_apply(x: torch.Tensor, channel: torch.Tensor, spatial: torch.Tensor) -> torch.Tensor:
    return ops().apply_gates_forward(x, channel, spatial, None)


def dual_attention_grad_gates(grad_out: torch.Tensor, x: torch.Tensor, channel: torch.Tensor,
                              spatial: torch.Tensor):
    return ops().apply_gates_grad_gates(grad_out, x, channel, spatial)


def dual_attention_grad_input(grad_out: torch.Tensor, x: torch.Tensor, channel: torch.Tensor,
                              spatial: torch.Tensor, ws: torch.Tensor, grad_logit: torch.Tensor,
                              grad_pooled: torch.Tensor):
    return ops().dual_attention_backward(grad_out, x, channel, spatial, ws, grad_logit, grad_pooled)
