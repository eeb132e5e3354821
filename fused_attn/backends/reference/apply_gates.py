"""Gate application: out = residual + y * channel[b, c] * spatial[b, h, w], every part optional.

  apply_gates_combine:     out = residual + y * channel * spatial
  apply_gates_grads:       one pass over (g, y), g = grad_out:
                             grad_y       = g * channel * spatial
                             grad_channel = sum_hw g * y * spatial        [B, C]
                             grad_spatial = sum_c  g * y * channel        [B, H, W]
                             grad_residual = g                            (no kernel needed)
  apply_gates_grad_gates:  grad_channel and grad_spatial alone (nothing x-sized written; dual_attention's backward)
"""
from __future__ import annotations

from typing import Optional

import torch

from ..._layout import acc_dtype, as_layout_of

OPS = {"apply_gates"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


def _gated(yf: torch.Tensor, channel: Optional[torch.Tensor], spatial: Optional[torch.Tensor]) -> torch.Tensor:
    out = yf
    if channel is not None:
        out = out * channel.to(yf.dtype)[:, :, None, None]
    if spatial is not None:
        out = out * spatial.to(yf.dtype)[:, None, :, :]
    return out


def apply_gates_combine(y: torch.Tensor, channel: Optional[torch.Tensor], spatial: Optional[torch.Tensor],
                        residual: Optional[torch.Tensor]) -> torch.Tensor:
    """channel [B, C], spatial [B, H, W], residual [B, C, H, W] (each optional) -> out like y."""
    yf = y.to(acc_dtype(y.dtype))
    out = _gated(yf, channel, spatial)
    if residual is not None:
        out = residual.to(yf.dtype) + out
    return as_layout_of(out, y)


def apply_gates_grads(grad_out: torch.Tensor, y: torch.Tensor, channel: Optional[torch.Tensor],
                      spatial: Optional[torch.Tensor]):
    """-> (grad_y like y, grad_channel [B, C] or empty, grad_spatial [B, H, W] or empty)."""
    acc = acc_dtype(y.dtype)
    g = grad_out.to(acc)
    yf = y.to(acc)
    grad_y = as_layout_of(_gated(g, channel, spatial), y)
    grad_channel, grad_spatial = y.new_empty((0,)), y.new_empty((0,))
    if channel is not None:
        grad_channel = _gated(g * yf, None, spatial).sum(dim=(2, 3)).to(channel.dtype)
    if spatial is not None:
        grad_spatial = _gated(g * yf, channel, None).sum(dim=1).to(spatial.dtype).contiguous()
    return grad_y, grad_channel, grad_spatial


def apply_gates_grad_gates(grad_out: torch.Tensor, y: torch.Tensor, channel: torch.Tensor, spatial: torch.Tensor):
    """-> (grad_channel [B, C], grad_spatial [B, H, W]) in the gates' dtype; nothing y-sized is returned."""
    acc = acc_dtype(y.dtype)
    g = grad_out.to(acc) * y.to(acc)
    return ((g * spatial.to(acc)[:, None]).sum(dim=(2, 3)).to(channel.dtype),
            (g * channel.to(acc)[:, :, None, None]).sum(dim=1).to(spatial.dtype).contiguous())
