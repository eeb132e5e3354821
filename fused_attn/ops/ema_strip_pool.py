"""fused_attn::ema_strip_pool (math: fused_attn/backends/reference/ema_strip_pool.py).

  ema_strip_pool(x) = cat(mean_w x, mean_h x)       [B, C, H + W] in x's dtype

Passes (fused_attn.backends.<backend>.ema_strip_pool): ema_strip_pool_reduce(x) forward,
ema_strip_pool_grad_input(grad, x) backward.

Autocast: not cast. Each op runs on the dtypes it receives with autocast off inside, as eager runs the
pooling ops it replaces (autocast leaves those alone); see fused_attn/ops/_autocast.py.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import dispatch
from .._layout import empty_4d
from . import _autocast, _double_backward, _eager

OP = "ema_strip_pool"


def _impl(x: Tensor, backend: str):
    return dispatch.implementation(OP, backend, x.device, x.dtype)[1]


@_eager.custom_op("fused_attn::ema_strip_pool")
def ema_strip_pool(x: Tensor, backend: str) -> Tensor:
    """x [B, C, H, W] -> [B, C, H + W]: row means (over W) then column means (over H)."""
    return _impl(x, backend).ema_strip_pool_reduce(x)


@ema_strip_pool.register_fake
def _(x, backend):
    b, c, h, w = x.shape
    return x.new_empty((b, c, h + w))


@torch.library.custom_op("fused_attn::ema_strip_pool_backward", mutates_args=())
def ema_strip_pool_backward(grad: Tensor, x: Tensor, backend: str) -> Tensor:
    return _impl(x, backend).ema_strip_pool_grad_input(grad, x)


@ema_strip_pool_backward.register_fake
def _(grad, x, backend):
    return empty_4d(x, x.shape)


def _pool_setup(ctx, inputs, output):
    x, backend = inputs
    ctx.save_for_backward(x)  # only its shape, dtype and layout are read
    ctx.backend = backend


def _pool_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return ema_strip_pool_backward(grad, x, ctx.backend), None


ema_strip_pool.register_autograd(_pool_backward, setup_context=_pool_setup)


_double_backward.register(ema_strip_pool_backward, ema_strip_pool)
_autocast.pass_through("fused_attn::ema_strip_pool", "fused_attn::ema_strip_pool_backward")
