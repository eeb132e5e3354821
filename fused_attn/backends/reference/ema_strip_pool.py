"""EMA's strip pooling (also coordinate attention's): per-row and per-column means of x.

  ema_strip_pool_reduce:      pooled[b, c, i] = mean_j x[b, c, i, j],  pooled[b, c, H + j] = mean_i x[b, c, i, j]
                              -> [B, C, H + W] in x's dtype
  ema_strip_pool_grad_input:  grad_x[b, c, i, j] = grad[b, c, i] / W + grad[b, c, H + j] / H
"""
from __future__ import annotations

import torch

from ..._layout import acc_dtype, as_layout_of

OPS = {"ema_strip_pool"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


def ema_strip_pool_reduce(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, H + W]: means over W (one per row), then over H (one per column); x's dtype."""
    xf = x.to(acc_dtype(x.dtype))
    return torch.cat([xf.mean(dim=3), xf.mean(dim=2)], dim=2).to(x.dtype).contiguous()


def ema_strip_pool_grad_input(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """grad [B, C, H + W] -> grad_x [B, C, H, W] = grad_h[..., i] / W + grad_w[..., j] / H."""
    h, w = x.shape[2], x.shape[3]
    g = grad.to(acc_dtype(x.dtype))
    gx = g[:, :, :h, None] / w + g[:, :, None, h:] / h
    return as_layout_of(gx, x)
