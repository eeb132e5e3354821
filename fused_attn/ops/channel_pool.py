"""fused_attn::channel_pool: max / mean / std over channels (math: fused_attn/backends/reference/channel_pool.py).

Passes (fused_attn.backends.<backend>.channel_pool):
  channel_pool_reduce(x, stats) -> (out [B, k, H, W] like x, argmax [B, H, W] int32 | [0], moments [B, 2, H, W] | [0])
  channel_pool_grad_input(grad_out, x, argmax, moments, stats) -> grad_x like x

Autocast: not cast. Each op runs on the dtypes it receives with autocast off inside, as eager runs the
pooling / mul / add ops it replaces (autocast leaves those alone); see fused_attn/ops/_autocast.py.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import dispatch
from .._layout import acc_dtype, empty_4d
from . import _autocast, _double_backward, _eager

STATS = ("max", "mean", "std")


def parse_stats(stats: str) -> tuple[str, ...]:
    return tuple(stats.split(","))


def _impl(x: Tensor, backend: str):
    return dispatch.implementation("channel_pool", backend, x.device, x.dtype)[1]


@_eager.custom_op("fused_attn::channel_pool")
def channel_pool(x: Tensor, stats: str, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """x [B, C, H, W], stats "max,mean,std" (any ordered subset) -> (out, argmax, moments)."""
    return _impl(x, backend).channel_pool_reduce(x, parse_stats(stats))


@channel_pool.register_fake
def _(x, stats, backend):
    names = parse_stats(stats)
    b, _, h, w = x.shape
    out = empty_4d(x, (b, len(names), h, w))
    argmax = x.new_empty((b, h, w) if "max" in names else (0,), dtype=torch.int32)
    moments = x.new_empty((b, 2, h, w) if "std" in names else (0,), dtype=acc_dtype(x.dtype))
    return out, argmax, moments


@torch.library.custom_op("fused_attn::channel_pool_backward", mutates_args=())
def channel_pool_backward(grad_out: Tensor, x: Tensor, argmax: Tensor, moments: Tensor, stats: str,
                          backend: str) -> Tensor:
    return _impl(x, backend).channel_pool_grad_input(grad_out, x, argmax, moments, parse_stats(stats))


@channel_pool_backward.register_fake
def _(grad_out, x, argmax, moments, stats, backend):
    return empty_4d(x, x.shape)


def _setup_context(ctx, inputs, output):
    x, stats, backend = inputs
    _, argmax, moments = output
    ctx.mark_non_differentiable(argmax, moments)
    ctx.save_for_backward(x, argmax, moments)
    ctx.stats, ctx.backend = stats, backend


def _backward(ctx, grad_out, _grad_argmax, _grad_moments):
    x, argmax, moments = ctx.saved_tensors
    return channel_pool_backward(grad_out, x, argmax, moments, ctx.stats, ctx.backend), None, None


channel_pool.register_autograd(_backward, setup_context=_setup_context)
_double_backward.register(channel_pool_backward, channel_pool)
_autocast.pass_through("fused_attn::channel_pool", "fused_attn::channel_pool_backward")
