"""Dual attention passes over x: a channel gate and a 1x1-conv spatial gate of the same x, applied together.

  dual_attention_reduce:      pooled[b, c] = mean_hw x[b, c, p]      logit[b, p] = sum_c ws[c] x[b, c, p]
  apply_gates_combine:        out = x * channel[b, c] * spatial[b, p]               (of the apply_gates family)
  backward, given g = grad_out (the channel MLP and the gate derivatives run in PyTorch between the passes):
    apply_gates_grad_gates:     grad_channel[b, c] = sum_p g x spatial   grad_spatial[b, p] = sum_c g x channel
    dual_attention_grad_input:  grad_x = g channel spatial + ws[c] grad_logit[b, p] + grad_pooled[b, c] / HW
                                grad_ws[c] = sum_{b, p} x grad_logit[b, p]

p = h * W + w. Gates, statistics and gradients of the small tensors are in the accumulation dtype.
"""
from __future__ import annotations

import torch

from ..._layout import acc_dtype, as_layout_of
from .apply_gates import apply_gates_combine, apply_gates_grad_gates  # noqa: F401  (passes of this op)

OPS = {"dual_attention"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


def dual_attention_reduce(x: torch.Tensor, ws: torch.Tensor):
    """-> (pooled [B, C] = mean_hw x, logit [B, H, W] = sum_c ws[c] x), both in the accumulation dtype."""
    acc = acc_dtype(x.dtype)
    xf = x.to(acc)
    b, _, h, w = x.shape
    logit = torch.matmul(ws.to(acc), xf.flatten(2)).reshape(b, h, w)  # [C] @ [B, C, HW]: a GEMV per image
    return xf.mean(dim=(2, 3)), logit.contiguous()


def dual_attention_grad_input(grad_out: torch.Tensor, x: torch.Tensor, channel: torch.Tensor,
                              spatial: torch.Tensor, ws: torch.Tensor, grad_logit: torch.Tensor,
                              grad_pooled: torch.Tensor):
    """-> (grad_x like x, grad_ws [C] in the accumulation dtype)."""
    acc = acc_dtype(x.dtype)
    hw = x.shape[2] * x.shape[3]
    gl = grad_logit.to(acc)[:, None]
    grad_x = (grad_out.to(acc) * channel.to(acc)[:, :, None, None] * spatial.to(acc)[:, None]
              + ws.to(acc)[None, :, None, None] * gl + (grad_pooled.to(acc) / hw)[:, :, None, None])
    grad_ws = (x.to(acc) * gl).sum(dim=(0, 2, 3))
    return as_layout_of(grad_x, x), grad_ws

