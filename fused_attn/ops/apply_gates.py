"""fused_attn::apply_gates: residual + y * channel * spatial (math: fused_attn/backends/reference/apply_gates.py).

Passes (fused_attn.backends.<backend>.apply_gates):
  apply_gates_combine(y, channel | None, spatial | None, residual | None) -> out like y
  apply_gates_grads(grad_out, y, channel | None, spatial | None) -> (grad_y, grad_channel | [0], grad_spatial | [0])

Autocast: not cast. Each op runs on the dtypes it receives with autocast off inside, as eager runs the
pooling / mul / add ops it replaces (autocast leaves those alone); see fused_attn/ops/_autocast.py.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import dispatch
from .._layout import empty_4d
from . import _autocast, _double_backward, _eager


def _impl(y: Tensor, backend: str):
    return dispatch.implementation("apply_gates", backend, y.device, y.dtype)[1]


@_eager.custom_op("fused_attn::apply_gates")
def apply_gates(y: Tensor, channel: Optional[Tensor], spatial: Optional[Tensor], residual: Optional[Tensor],
                backend: str) -> Tensor:
    """y [B, C, H, W], channel [B, C], spatial [B, H, W], residual [B, C, H, W] -> residual + y * channel * spatial."""
    return _impl(y, backend).apply_gates_combine(y, channel, spatial, residual)


@apply_gates.register_fake
def _(y, channel, spatial, residual, backend):
    return empty_4d(y, y.shape)


@torch.library.custom_op("fused_attn::apply_gates_backward", mutates_args=())
def apply_gates_backward(grad_out: Tensor, y: Tensor, channel: Optional[Tensor], spatial: Optional[Tensor],
                         backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return _impl(y, backend).apply_gates_grads(grad_out, y, channel, spatial)


@apply_gates_backward.register_fake
def _(grad_out, y, channel, spatial, backend):
    def dense_like(t):
        return torch.empty_like(t, memory_format=torch.contiguous_format) if t is not None else y.new_empty((0,))
    grad_channel, grad_spatial = dense_like(channel), dense_like(spatial)
    return empty_4d(y, y.shape), grad_channel, grad_spatial


def _setup_context(ctx, inputs, output):
    y, channel, spatial, residual, backend = inputs
    ctx.save_for_backward(y, channel, spatial)
    ctx.backend = backend
    ctx.has_residual = residual is not None


def _backward(ctx, grad_out):
    y, channel, spatial = ctx.saved_tensors
    grad_y, grad_channel, grad_spatial = apply_gates_backward(grad_out, y, channel, spatial, ctx.backend)
    return (grad_y,
            grad_channel if channel is not None else None,
            grad_spatial if spatial is not None else None,
            grad_out if ctx.has_residual else None,
            None)


apply_gates.register_autograd(_backward, setup_context=_setup_context)
_double_backward.register(apply_gates_backward, apply_gates, absent=("residual",))
_autocast.pass_through("fused_attn::apply_gates", "fused_attn::apply_gates_backward")
