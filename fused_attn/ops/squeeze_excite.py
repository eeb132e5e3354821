"""fused_attn::channel_squeeze, fused_attn::squeeze_excite and fused_attn::eca (math:
fused_attn/backends/reference/squeeze_excite.py).

  channel_squeeze(x) = mean_hw x                                      [B, C]
  squeeze_excite(x, w1, b1, w2, b2) = x * gate(w2 act(w1 mean_hw(x) + b1) + b2)
  eca(x, weight) = x * gate(z),  z[b, c] = sum_j weight[j] p[b, c + j - pad],  p = mean_hw x
                   (k = len(weight) odd, pad = (k - 1) // 2, zero or circular padding across the channels)
  ese(x, weight, bias) = x * gate(weight mean_hw(x) + bias)   (effective SE: one C x C layer)

The forward is one pass, squeeze_excite_combine: on the CPU it pools, runs the MLP (in C++) and scales in waves
of samples that stay in cache (1 read + 1 write of x); elsewhere pool, MLP (fused_attn._mlp), scale. The MLP
of the backward runs in PyTorch (fused_attn._mlp) between the kernel passes, the fused 3-read, 1-write scheme:
grad_s = sum_hw(g x) (reads g, x), MLP backward, grad_x = g s + grad_pooled / HW
(reads g, writes grad_x). eca and ese are the same with the k-tap conv (fused_attn._eca) or the one C x C layer
(fused_attn._mlp.single_*) in the MLP's place.

Passes (fused_attn.backends.<backend>.squeeze_excite):
  channel_squeeze_reduce(x) -> [B, C] (accumulation dtype)
  channel_squeeze_grad_input(grad [B, C], x) -> grad_x like x
  channel_scale(x, s [B, C]) -> x * s like x
  squeeze_excite_combine(x, w1, b1, w2, b2, act, gate) -> (y, pooled, z1, z2)
  squeeze_excite_grad_gate(grad_y, x) -> sum_hw grad_y * x  [B, C] (accumulation dtype)
  squeeze_excite_grad_input(grad_y, x, s, grad_pooled) -> grad_y * s + grad_pooled / HW like x
  eca_combine(x, weight, circular, gate) -> (y, pooled, z)
  ese_combine(x, weight, bias, gate) -> (y, pooled, z)

Autocast: not cast. Each op runs on the dtypes it receives with autocast off inside, as eager runs the
pooling / mul / add ops it replaces (autocast leaves those alone); see fused_attn/ops/_autocast.py.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _eca, _mlp, dispatch
from .._layout import acc_dtype, broadcast_scalar, empty_4d
from . import _autocast, _double_backward, _eager


def _impl(op: str, x: Tensor, backend: str):
    return dispatch.implementation(op, backend, x.device, x.dtype)[1]


# ------------------------------------------------------------------------------------------- channel_squeeze
@_eager.custom_op("fused_attn::channel_squeeze")
def channel_squeeze(x: Tensor, backend: str) -> Tensor:
    """x [B, C, H, W] -> mean over H, W [B, C] in x's dtype."""
    return _impl("channel_squeeze", x, backend).channel_squeeze_reduce(x).to(x.dtype)


@channel_squeeze.register_fake
def _(x, backend):
    return x.new_empty(x.shape[:2])


@torch.library.custom_op("fused_attn::channel_squeeze_backward", mutates_args=())
def channel_squeeze_backward(grad: Tensor, x: Tensor, backend: str) -> Tensor:
    return _impl("channel_squeeze", x, backend).channel_squeeze_grad_input(grad, x)


@channel_squeeze_backward.register_fake
def _(grad, x, backend):
    return empty_4d(x, x.shape)


def _squeeze_setup(ctx, inputs, output):
    x, backend = inputs
    ctx.save_for_backward(x)  # only its shape, dtype and layout are read
    ctx.backend = backend


def _squeeze_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return channel_squeeze_backward(grad, x, ctx.backend), None


channel_squeeze.register_autograd(_squeeze_backward, setup_context=_squeeze_setup)


# ----------------------------------------------------- the backward passes shared by squeeze_excite, eca, ese
def _grad_gate(impl, grad_y: Tensor, x: Tensor, pooled: Tensor) -> Tensor:
    """grad_s = sum_hw grad_y x [B, C]. A gradient broadcast from a scalar g (`y.sum().backward()`, `y.mean()`)
    is not read: sum_hw g x = g HW pooled."""
    g = broadcast_scalar(grad_y)
    if g is None:
        return impl.squeeze_excite_grad_gate(grad_y, x)
    return g.to(pooled.dtype) * (x.shape[2] * x.shape[3]) * pooled


def _grad_input(impl, grad_y: Tensor, x: Tensor, s: Tensor, grad_pooled: Tensor) -> Tensor:
    """grad_x = grad_y s + grad_pooled / HW; constant per plane for a broadcast-scalar gradient (one write pass)."""
    g = broadcast_scalar(grad_y)
    if g is None:
        return impl.squeeze_excite_grad_input(grad_y, x, s, grad_pooled)
    return impl.channel_squeeze_grad_input(g.to(s.dtype) * (x.shape[2] * x.shape[3]) * s + grad_pooled, x)


def _bias_grad(grad: Optional[Tensor], x: Tensor) -> Tensor:
    """A bias gradient, or the empty tensor a custom op returns for an absent bias."""
    return grad if grad is not None else x.new_empty((0,))


# ------------------------------------------------------------------------------------------- squeeze_excite
@_eager.custom_op("fused_attn::squeeze_excite")
def squeeze_excite(x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor, b2: Optional[Tensor], act: str,
                   gate: str, backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> (y = x * s like x, pooled [B, C], z1 [B, Cr], z2 [B, C]); the last three in the accumulation dtype."""
    return _impl("squeeze_excite", x, backend).squeeze_excite_combine(x, w1, b1, w2, b2, act, gate)


@squeeze_excite.register_fake
def _(x, w1, b1, w2, b2, act, gate, backend):
    acc = acc_dtype(x.dtype)
    b, c = x.shape[:2]
    return empty_4d(x, x.shape), x.new_empty((b, c), dtype=acc), x.new_empty((b, w1.shape[0]), dtype=acc), \
        x.new_empty((b, c), dtype=acc)


@torch.library.custom_op("fused_attn::squeeze_excite_backward", mutates_args=())
def squeeze_excite_backward(grad_y: Tensor, x: Tensor, w1: Tensor, b1: Optional[Tensor], w2: Tensor,
                            b2: Optional[Tensor], pooled: Tensor, z1: Tensor, z2: Tensor, act: str, gate: str,
                            backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> (grad_x, grad_w1, grad_b1 | [0], grad_w2, grad_b2 | [0]).

    A gradient broadcast from a scalar g (`y.sum().backward()`, `y.mean()`) is not read at all:
    sum_hw g x = g HW pooled, and grad_x = g s + grad_pooled / HW is constant per plane (one write pass)."""
    impl = _impl("squeeze_excite", x, backend)
    grad_s = _grad_gate(impl, grad_y, x, pooled)
    grad_pooled, gw1, gb1, gw2, gb2 = _mlp.backward(grad_s, pooled, z1, z2, w1, b1, w2, b2, act, gate)
    grad_x = _grad_input(impl, grad_y, x, _mlp.gate(gate, z2), grad_pooled)
    return grad_x, gw1, _bias_grad(gb1, x), gw2, _bias_grad(gb2, x)


@squeeze_excite_backward.register_fake
def _(grad_y, x, w1, b1, w2, b2, pooled, z1, z2, act, gate, backend):
    def like(t):
        return torch.empty_like(t, memory_format=torch.contiguous_format) if t is not None else x.new_empty((0,))
    return empty_4d(x, x.shape), like(w1), like(b1), like(w2), like(b2)


def _se_setup(ctx, inputs, output):
    x, w1, b1, w2, b2, act, gate, backend = inputs
    _, pooled, z1, z2 = output
    ctx.mark_non_differentiable(pooled, z1, z2)
    ctx.save_for_backward(x, w1, b1, w2, b2, pooled, z1, z2)
    ctx.act, ctx.gate, ctx.backend = act, gate, backend


def _se_backward(ctx, grad_y, _gp, _gz1, _gz2):
    x, w1, b1, w2, b2, pooled, z1, z2 = ctx.saved_tensors
    gx, gw1, gb1, gw2, gb2 = squeeze_excite_backward(grad_y, x, w1, b1, w2, b2, pooled, z1, z2,
                                                     ctx.act, ctx.gate, ctx.backend)
    return gx, gw1, gb1 if b1 is not None else None, gw2, gb2 if b2 is not None else None, None, None, None


squeeze_excite.register_autograd(_se_backward, setup_context=_se_setup)


# ------------------------------------------------------------------------------------------------------ eca
@_eager.custom_op("fused_attn::eca")
def eca(x: Tensor, weight: Tensor, circular: bool, gate: str, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """-> (y = x * gate(z) like x, pooled [B, C], z [B, C]); the last two in the accumulation dtype."""
    return _impl("eca", x, backend).eca_combine(x, weight, circular, gate)


def _one_layer_fake(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(y like x, pooled [B, C], z [B, C] in the accumulation dtype): the outputs of eca and ese."""
    acc = acc_dtype(x.dtype)
    return empty_4d(x, x.shape), x.new_empty(x.shape[:2], dtype=acc), x.new_empty(x.shape[:2], dtype=acc)


@eca.register_fake
def _(x, weight, circular, gate, backend):
    return _one_layer_fake(x)


@torch.library.custom_op("fused_attn::eca_backward", mutates_args=())
def eca_backward(grad_y: Tensor, x: Tensor, weight: Tensor, pooled: Tensor, z: Tensor, circular: bool, gate: str,
                 backend: str) -> tuple[Tensor, Tensor]:
    """-> (grad_x, grad_weight). grad_s = sum_hw g x, grad_z = grad_s gate'(z), (grad_pooled, grad_weight) by
    the conv's backward (fused_attn._eca), grad_x = g s + grad_pooled / HW; a broadcast-scalar gradient is not
    read (as squeeze_excite_backward)."""
    impl = _impl("eca", x, backend)
    grad_s = _grad_gate(impl, grad_y, x, pooled)
    grad_pooled, grad_weight = _eca.backward(grad_s * _mlp.gate_grad(gate, z), pooled, weight, circular)
    return _grad_input(impl, grad_y, x, _mlp.gate(gate, z), grad_pooled), grad_weight


@eca_backward.register_fake
def _(grad_y, x, weight, pooled, z, circular, gate, backend):
    return empty_4d(x, x.shape), torch.empty_like(weight, memory_format=torch.contiguous_format)


def _eca_setup(ctx, inputs, output):
    x, weight, circular, gate, backend = inputs
    _, pooled, z = output
    ctx.mark_non_differentiable(pooled, z)
    ctx.save_for_backward(x, weight, pooled, z)
    ctx.circular, ctx.gate, ctx.backend = circular, gate, backend


def _eca_backward(ctx, grad_y, _gp, _gz):
    x, weight, pooled, z = ctx.saved_tensors
    gx, gw = eca_backward(grad_y, x, weight, pooled, z, ctx.circular, ctx.gate, ctx.backend)
    return gx, gw, None, None, None


eca.register_autograd(_eca_backward, setup_context=_eca_setup)


# ------------------------------------------------------------------------------------------------------ ese
@_eager.custom_op("fused_attn::ese")
def ese(x: Tensor, weight: Tensor, bias: Optional[Tensor], gate: str, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """-> (y = x * gate(weight mean_hw x + bias) like x, pooled [B, C], z [B, C]); the last two in the
    accumulation dtype."""
    return _impl("ese", x, backend).ese_combine(x, weight, bias, gate)


@ese.register_fake
def _(x, weight, bias, gate, backend):
    return _one_layer_fake(x)


@torch.library.custom_op("fused_attn::ese_backward", mutates_args=())
def ese_backward(grad_y: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor], pooled: Tensor, z: Tensor,
                 gate: str, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """-> (grad_x, grad_weight, grad_bias | [0]): the squeeze_excite passes around the one layer's backward."""
    impl = _impl("ese", x, backend)
    grad_s = _grad_gate(impl, grad_y, x, pooled)
    c = x.shape[1]
    grad_pooled, grad_w, grad_b = _mlp.single_backward(grad_s, pooled, z, weight.reshape(c, c), bias, gate)
    grad_x = _grad_input(impl, grad_y, x, _mlp.gate(gate, z), grad_pooled)
    return grad_x, grad_w.reshape(weight.shape), _bias_grad(grad_b, x)


@ese_backward.register_fake
def _(grad_y, x, weight, bias, pooled, z, gate, backend):
    def like(t):
        return torch.empty_like(t, memory_format=torch.contiguous_format) if t is not None else x.new_empty((0,))
    return empty_4d(x, x.shape), like(weight), like(bias)


def _ese_setup(ctx, inputs, output):
    x, weight, bias, gate, backend = inputs
    _, pooled, z = output
    ctx.mark_non_differentiable(pooled, z)
    ctx.save_for_backward(x, weight, bias, pooled, z)
    ctx.gate, ctx.backend = gate, backend


def _ese_backward(ctx, grad_y, _gp, _gz):
    x, weight, bias, pooled, z = ctx.saved_tensors
    gx, gw, gb = ese_backward(grad_y, x, weight, bias, pooled, z, ctx.gate, ctx.backend)
    return gx, gw, gb if bias is not None else None, None, None


ese.register_autograd(_ese_backward, setup_context=_ese_setup)
_double_backward.register(channel_squeeze_backward, channel_squeeze)
_double_backward.register(squeeze_excite_backward, squeeze_excite)
_double_backward.register(eca_backward, eca)
_double_backward.register(ese_backward, ese)
_autocast.pass_through("fused_attn::channel_squeeze", "fused_attn::channel_squeeze_backward",
                       "fused_attn::squeeze_excite", "fused_attn::squeeze_excite_backward",
                       "fused_attn::eca", "fused_attn::eca_backward", "fused_attn::ese", "fused_attn::ese_backward")
