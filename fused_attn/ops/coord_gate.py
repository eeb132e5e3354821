"""fused_attn::coord_gate: the end of coordinate attention (math: fused_attn/backends/reference/coord_gate.py).

  coord_gate(x, a_h [B, C, H], a_w [B, C, W], gate, skip) =
      gate "none":                 (x * a_w[..., None, :]) * a_h[..., None]     (+ x when skip)
      gate "sigmoid"/"hardsigmoid": x * gate(a_h[..., None] + a_w[..., None, :])  (+ x when skip)

Passes (fused_attn.backends.<backend>.coord_gate):
  coord_gate_combine(x, a_h, a_w, gate, skip) -> out like x                        (1 read + 1 write of x)
  coord_gate_grads(grad_out, x, a_h, a_w, gate, skip) -> (grad_x, grad_a_h, grad_a_w)  (one pass over grad_out, x)

Autocast: not cast (fused_attn/ops/_autocast.py). Under autocast a_h, a_w come from bf16 / fp16 convolutions beside
an fp32 x: the op reads them in their own dtype, computes in x's accumulation dtype and returns x's dtype (as eager's
`x * a_w * a_h` promotes to it); their gradients come back in their own dtypes.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import dispatch
from .._layout import empty_4d
from . import _autocast, _double_backward, _eager

OP = "coord_gate"


def _impl(x: Tensor, backend: str):
    return dispatch.implementation(OP, backend, x.device, x.dtype)[1]


@_eager.custom_op("fused_attn::coord_gate")
def coord_gate(x: Tensor, a_h: Tensor, a_w: Tensor, gate: str, skip: bool, backend: str) -> Tensor:
    """x [B, C, H, W], a_h [B, C, H], a_w [B, C, W] -> out like x (x * a_w * a_h, or x * gate(a_h + a_w); + x)."""
    return _impl(x, backend).coord_gate_combine(x, a_h, a_w, gate, skip)


@coord_gate.register_fake
def _(x, a_h, a_w, gate, skip, backend):
    return empty_4d(x, x.shape)


@torch.library.custom_op("fused_attn::coord_gate_backward", mutates_args=())
def coord_gate_backward(grad_out: Tensor, x: Tensor, a_h: Tensor, a_w: Tensor, gate: str, skip: bool,
                        backend: str) -> tuple[Tensor, Tensor, Tensor]:
    grad_x, grad_a_h, grad_a_w = _impl(x, backend).coord_gate_grads(grad_out, x, a_h, a_w, gate, skip)
    return grad_x, grad_a_h, grad_a_w


@coord_gate_backward.register_fake
def _(grad_out, x, a_h, a_w, gate, skip, backend):
    return (empty_4d(x, x.shape), torch.empty_like(a_h, memory_format=torch.contiguous_format),
            torch.empty_like(a_w, memory_format=torch.contiguous_format))


def _setup(ctx, inputs, output):
    x, a_h, a_w, gate, skip, backend = inputs
    ctx.save_for_backward(x, a_h, a_w)
    ctx.gate, ctx.skip, ctx.backend = gate, skip, backend


def _backward(ctx, grad_out):
    x, a_h, a_w = ctx.saved_tensors
    grad_x, grad_a_h, grad_a_w = coord_gate_backward(grad_out, x, a_h, a_w, ctx.gate, ctx.skip, ctx.backend)
    return grad_x, grad_a_h, grad_a_w, None, None, None


coord_gate.register_autograd(_backward, setup_context=_setup)


_double_backward.register(coord_gate_backward, coord_gate)
_autocast.pass_through("fused_attn::coord_gate", "fused_attn::coord_gate_backward")
