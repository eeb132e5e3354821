"""fused_attn::dual_attention: a channel gate and a spatial gate of one x, applied together (SCA-CNN style).

  c   = gate(w2 act(w1 mean_hw(x) + b1) + b2)     [B, C]      (the SE MLP, fused_attn._mlp)
  s   = gate(ws . x[b, :, h, w] + bs)             [B, H, W]   (a 1x1 conv C -> 1)
  out = x * c * s

Passes over x-sized tensors: forward 2 reads + 1 write (dual_attention_reduce: mean_hw x and the spatial logit
together; apply_gates_combine), backward 4 reads + 1 write (apply_gates_grad_gates reads g, x;
dual_attention_grad_input reads g, x and writes grad_x, reducing grad_ws on the way). Unfused (squeeze, 1x1
conv, apply_gates and their backwards, autograd's sums of the three x-gradient terms) it is about 16 passes.
See fused_attn/backends/reference/dual_attention.py for the pass math.

Passes (fused_attn.backends.<backend>.dual_attention, which also holds the two of the apply_gates family):
  dual_attention_reduce(x, ws [C]) -> (pooled [B, C], logit [B, H, W]), accumulation dtype
  apply_gates_combine(x, channel [B, C], spatial [B, H, W], None) -> x * channel * spatial like x
  apply_gates_grad_gates(grad_out, x, channel, spatial) -> (grad_channel [B, C], grad_spatial [B, H, W])
  dual_attention_grad_input(grad_out, x, channel, spatial, ws, grad_logit [B, H, W], grad_pooled [B, C])
      -> (grad_x like x, grad_ws [C] accumulation dtype)
The gates are passed in the accumulation dtype (no rounding to x's dtype between the passes).

Autocast: not cast (fused_attn/ops/_autocast.py): the gates are computed in the accumulation dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _mlp, dispatch
from .._layout import acc_dtype, empty_4d
from . import _autocast, _double_backward, _eager


def _impl(x: Tensor, backend: str):
    return dispatch.implementation("dual_attention", backend, x.device, x.dtype)[1]


@_eager.custom_op("fused_attn::dual_attention")
def dual_attention(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor], ws: Tensor,
                   bs: Optional[Tensor], act: str, gate: str,
                   backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> (out like x, pooled [B, C], z1 [B, Cr], z2 [B, C], zs [B, H, W]); all but out in the accumulation dtype.
    c = gate(z2), s = gate(zs)."""
    impl = _impl(x, backend)
    pooled, logit = impl.dual_attention_reduce(x, ws)
    z1, z2, c = _mlp.forward(pooled, w1, b1, w2, b2, act, gate)
    zs = logit + bs.to(logit.dtype) if bs is not None else logit
    return impl.apply_gates_combine(x, c, _mlp.gate(gate, zs), None), pooled, z1, z2, zs


@dual_attention.register_fake
def _(x, w1, b1, w2, b2, ws, bs, act, gate, backend):
    acc = acc_dtype(x.dtype)
    b, c, h, w = x.shape
    return (empty_4d(x, x.shape), x.new_empty((b, c), dtype=acc), x.new_empty((b, w1.shape[0]), dtype=acc),
            x.new_empty((b, c), dtype=acc), x.new_empty((b, h, w), dtype=acc))


@torch.library.custom_op("fused_attn::dual_attention_backward", mutates_args=())
def dual_attention_backward(grad_out: Tensor, x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor,
                            b2: Optional[Tensor], ws: Tensor, bs: Optional[Tensor], pooled: Tensor, z1: Tensor,
                            z2: Tensor, zs: Tensor, act: str, gate: str,
                            backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> (grad_x, grad_w1, grad_b1 | [0], grad_w2, grad_b2 | [0], grad_ws, grad_bs | [0])."""
    impl = _impl(x, backend)
    c, s = _mlp.gate(gate, z2), _mlp.gate(gate, zs)
    grad_c, grad_s = impl.apply_gates_grad_gates(grad_out, x, c, s)
    grad_zs = grad_s * _mlp.gate_grad(gate, zs)
    grad_pooled, gw1, gb1, gw2, gb2 = _mlp.backward(grad_c, pooled, z1, z2, w1, b1, w2, b2, act, gate)
    grad_x, gws = impl.dual_attention_grad_input(grad_out, x, c, s, ws, grad_zs, grad_pooled)
    # an absent bias gets an empty gradient of its own: custom op outputs must not alias each other
    return (grad_x, gw1, gb1 if gb1 is not None else x.new_empty((0,)), gw2,
            gb2 if gb2 is not None else x.new_empty((0,)),
            gws.to(ws.dtype).reshape(ws.shape),
            grad_zs.sum().to(bs.dtype).reshape(bs.shape) if bs is not None else x.new_empty((0,)))


@dual_attention_backward.register_fake
def _(grad_out, x, w1, b1, w2, b2, ws, bs, pooled, z1, z2, zs, act, gate, backend):
    def like(t):
        return torch.empty_like(t, memory_format=torch.contiguous_format) if t is not None else x.new_empty((0,))
    return empty_4d(x, x.shape), like(w1), like(b1), like(w2), like(b2), like(ws), like(bs)


def _setup(ctx, inputs, output):
    x, w1, b1, w2, b2, ws, bs, act, gate, backend = inputs
    _, pooled, z1, z2, zs = output
    ctx.mark_non_differentiable(pooled, z1, z2, zs)
    ctx.save_for_backward(x, w1, b1, w2, b2, ws, bs, pooled, z1, z2, zs)
    ctx.act, ctx.gate, ctx.backend = act, gate, backend


def _backward(ctx, grad_out, _gp, _gz1, _gz2, _gzs):
    x, w1, b1, w2, b2, ws, bs, pooled, z1, z2, zs = ctx.saved_tensors
    gx, gw1, gb1, gw2, gb2, gws, gbs = dual_attention_backward(grad_out, x, w1, b1, w2, b2, ws, bs, pooled, z1, z2,
                                                               zs, ctx.act, ctx.gate, ctx.backend)
    return (gx, gw1, gb1 if b1 is not None else None, gw2, gb2 if b2 is not None else None, gws,
            gbs if bs is not None else None, None, None, None)


dual_attention.register_autograd(_backward, setup_context=_setup)
_double_backward.register(dual_attention_backward, dual_attention)
_autocast.pass_through("fused_attn::dual_attention", "fused_attn::dual_attention_backward")
