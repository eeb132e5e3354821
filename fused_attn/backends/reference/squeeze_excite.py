"""Squeeze-excite passes over x (the MLP between them is fused_attn._mlp, shared by every backend).

  channel_squeeze_reduce:      p[b, c] = mean_hw x[b, c, h, w]
  channel_squeeze_grad_input:  grad_x = grad_p[b, c] / HW
  channel_scale:               y[b, c, h, w] = x[b, c, h, w] * s[b, c]
  squeeze_excite_combine:      the whole forward: p = channel_squeeze_reduce(x), (z1, z2, s) = the MLP
                               (fused_attn._mlp.forward), y = channel_scale(x, s)  -> (y, p, z1, z2)
  eca_combine:                 the ECA forward: p = channel_squeeze_reduce(x), z = the k-tap correlation of
                               weight across the channels (fused_attn._eca.forward), y = channel_scale(x,
                               gate(z))  -> (y, p, z); its backward is the SE one with _eca.backward between
  ese_combine:                 the ESE forward: p = channel_squeeze_reduce(x), z = weight p + bias (one C x C
                               layer, fused_attn._mlp.single_forward), y = channel_scale(x, gate(z)) -> (y, p, z)
  squeeze_excite backward, given g = grad_y and grad_pooled from the MLP backward:
    squeeze_excite_grad_gate:   grad_s[b, c] = sum_hw g * x                     (one pass over g, x)
    squeeze_excite_grad_input:  grad_x = g * s[b, c] + grad_pooled[b, c] / HW   (one pass over g)
"""
from __future__ import annotations

import torch

from ... import _mlp, _pooled_gates
from ..._layout import acc_dtype, as_layout_of

OPS = {"channel_squeeze", "squeeze_excite", "eca", "ese"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


def channel_squeeze_reduce(x: torch.Tensor) -> torch.Tensor:
    """mean over H, W -> [B, C] in the accumulation dtype."""
    return x.to(acc_dtype(x.dtype)).mean(dim=(2, 3))


def channel_squeeze_grad_input(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """grad [B, C] -> grad_x [B, C, H, W] in x's dtype and layout."""
    hw = x.shape[2] * x.shape[3]
    g = (grad.to(acc_dtype(x.dtype)) / hw)[:, :, None, None]
    return as_layout_of(g.expand(x.shape), x)


def channel_scale(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x * s[:, :, None, None] in x's dtype and layout (s in the accumulation dtype)."""
    acc = acc_dtype(x.dtype)
    return as_layout_of(x.to(acc) * s.to(acc)[:, :, None, None], x)


def squeeze_excite_combine(x: torch.Tensor, w1: torch.Tensor, b1, w2: torch.Tensor, b2, act: str, gate: str):
    """-> (y like x, pooled [B, C], z1 [B, Cr], z2 [B, C]); the last three in the accumulation dtype."""
    pooled = channel_squeeze_reduce(x)
    z1, z2, s = _mlp.forward(pooled, w1, b1, w2, b2, act, gate)
    return channel_scale(x, s), pooled, z1, z2


# the ECA and ESE forwards: these two passes around the layer in PyTorch (fused_attn/_pooled_gates.py)
eca_combine, ese_combine = _pooled_gates.one_layer_forwards(channel_squeeze_reduce, channel_scale)


def squeeze_excite_grad_gate(grad_y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum over H, W of grad_y * x -> [B, C] in the accumulation dtype."""
    acc = acc_dtype(x.dtype)
    return (grad_y.to(acc) * x.to(acc)).sum(dim=(2, 3))


def squeeze_excite_grad_input(grad_y: torch.Tensor, x: torch.Tensor, s: torch.Tensor,
                              grad_pooled: torch.Tensor) -> torch.Tensor:
    """grad_y * s + grad_pooled / HW -> grad_x in x's dtype and layout."""
    acc = acc_dtype(x.dtype)
    hw = x.shape[2] * x.shape[3]
    g = grad_y.to(acc) * s.to(acc)[:, :, None, None] + (grad_pooled.to(acc) / hw)[:, :, None, None]
    return as_layout_of(g, x)
