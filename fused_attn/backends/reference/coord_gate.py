"""Coordinate-attention gate application (CoordAtt, timm's CoordAttn / SimpleCoordAttn):

  gate "none" (CoordAtt, CoordAttn; a_h, a_w are the gates):
    coord_gate_combine:  out[b, c, i, j] = (x * a_w[b, c, j]) * a_h[b, c, i]      (+ x when skip)
    coord_gate_grads:    one pass over (g = grad_out, x):
                           grad_x              = (g * a_h) * a_w                  (+ g when skip)
                           grad_a_h[b, c, i]   = sum_j (g * x) * a_w[b, c, j]
                           grad_a_w[b, c, j]   = sum_i (g * x) * a_h[b, c, i]
  gate "sigmoid" / "hardsigmoid" (SimpleCoordAttn; a_h, a_w are the logits of one additive gate):
    coord_gate_combine:  out = x * s,  s = gate(a_h[b, c, i] + a_w[b, c, j])      (+ x when skip)
    coord_gate_grads:    grad_x = g * s (+ g),  d = (g * x) * gate'(a_h + a_w),
                         grad_a_h = sum_j d,  grad_a_w = sum_i d                 (s recomputed, not saved)

a_h [B, C, H], a_w [B, C, W] in any floating dtype (autocast hands bf16 / fp16 gates beside an fp32 x); math in
the accumulation dtype of x; out, grad_x like x (its dtype and memory format); grad_a_h, grad_a_w in the gates'
own dtypes, contiguous.
"""
from __future__ import annotations

import torch

from ..._layout import acc_dtype, as_layout_of
from ..._mlp import gate as _gate_fn
from ..._mlp import gate_grad as _gate_grad

OPS = {"coord_gate"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}
GATES = ("none", "sigmoid", "hardsigmoid")


def coord_gate_combine(x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor, gate: str, skip: bool) -> torch.Tensor:
    """x [B, C, H, W], a_h [B, C, H], a_w [B, C, W] -> out like x (see the module docstring)."""
    acc = acc_dtype(x.dtype)
    xf = x.to(acc)
    h, w = a_h.to(acc)[..., :, None], a_w.to(acc)[..., None, :]
    out = (xf * w) * h if gate == "none" else xf * _gate_fn(gate, h + w)
    if skip:
        out = out + xf
    return as_layout_of(out, x)


def coord_gate_grads(grad_out: torch.Tensor, x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor, gate: str,
                     skip: bool):
    """-> (grad_x like x, grad_a_h [B, C, H] in a_h's dtype, grad_a_w [B, C, W] in a_w's dtype)."""
    acc = acc_dtype(x.dtype)
    g, xf = grad_out.to(acc), x.to(acc)
    h, w = a_h.to(acc)[..., :, None], a_w.to(acc)[..., None, :]
    gx = g * xf
    if gate == "none":
        grad_x = (g * h) * w
        grad_h, grad_w = (gx * w).sum(dim=3), (gx * h).sum(dim=2)
    else:
        z = h + w
        grad_x = g * _gate_fn(gate, z)
        d = gx * _gate_grad(gate, z)
        grad_h, grad_w = d.sum(dim=3), d.sum(dim=2)
    if skip:
        grad_x = grad_x + g
    return (as_layout_of(grad_x, x), grad_h.to(a_h.dtype).contiguous(), grad_w.to(a_w.dtype).contiguous())
