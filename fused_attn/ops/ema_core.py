"""fused_attn::ema_core: the official EMA block after its two convolutions, one op (math:
fused_attn/backends/reference/ema_core.py).

Passes (fused_attn.backends.<backend>.ema_core):
  ema_core_combine(x, hw, x2, gn_weight, gn_bias, groups, eps) -> (out like x, mean [B, C], rstd [B, C])
  ema_core_grads(grad_out, x, hw, x2, gn_weight, gn_bias, mean, rstd, groups, eps)
      -> (grad_x like x, grad_hw [B, C, H + W], grad_x2 like x2, grad_gn_weight, grad_gn_bias)

Autocast: not cast (fused_attn/ops/_autocast.py). Under autocast ema_core receives x in its own dtype and hw,
x2 from bf16/fp16 convolutions: the result has x's dtype, as the official EMA's group_x * sigmoid(weights)
promotes to it.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import dispatch
from .._layout import acc_dtype, empty_4d
from . import _autocast, _double_backward, _eager

OP = "ema_core"


def _impl(x: Tensor, backend: str):
    return dispatch.implementation(OP, backend, x.device, x.dtype)[1]


@_eager.custom_op("fused_attn::ema_core")
def ema_core(x: Tensor, hw: Tensor, x2: Tensor, gn_weight: Tensor, gn_bias: Tensor, groups: int, eps: float,
             backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """-> (out like x, mean [B, C], rstd [B, C]) (the last two: GroupNorm statistics, saved for backward)."""
    return _impl(x, backend).ema_core_combine(x, hw, x2, gn_weight, gn_bias, groups, eps)


@ema_core.register_fake
def _(x, hw, x2, gn_weight, gn_bias, groups, eps, backend):
    stats = x.new_empty(x.shape[:2], dtype=acc_dtype(x.dtype))
    return empty_4d(x, x.shape), stats, torch.empty_like(stats)


@torch.library.custom_op("fused_attn::ema_core_backward", mutates_args=())
def ema_core_backward(grad_out: Tensor, x: Tensor, hw: Tensor, x2: Tensor, gn_weight: Tensor, gn_bias: Tensor,
                      mean: Tensor, rstd: Tensor, groups: int, eps: float,
                      backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    grad_x, grad_hw, grad_x2, grad_w, grad_b = _impl(x, backend).ema_core_grads(
        grad_out, x, hw, x2, gn_weight, gn_bias, mean, rstd, groups, eps)
    return grad_x, grad_hw, grad_x2, grad_w, grad_b


@ema_core_backward.register_fake
def _(grad_out, x, hw, x2, gn_weight, gn_bias, mean, rstd, groups, eps, backend):
    return (empty_4d(x, x.shape), torch.empty_like(hw, memory_format=torch.contiguous_format), empty_4d(x2, x2.shape),
            torch.empty_like(gn_weight), torch.empty_like(gn_bias))


def _core_setup(ctx, inputs, output):
    x, hw, x2, gn_weight, gn_bias, groups, eps, backend = inputs
    _, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    ctx.save_for_backward(x, hw, x2, gn_weight, gn_bias, mean, rstd)
    ctx.groups, ctx.eps, ctx.backend = groups, eps, backend


def _core_backward(ctx, grad_out, _gm, _gr):
    x, hw, x2, gn_weight, gn_bias, mean, rstd = ctx.saved_tensors
    grads = ema_core_backward(grad_out, x, hw, x2, gn_weight, gn_bias, mean, rstd, ctx.groups, ctx.eps, ctx.backend)
    return (*grads, None, None, None)


ema_core.register_autograd(_core_backward, setup_context=_core_setup)


_double_backward.register(ema_core_backward, ema_core)
_autocast.pass_through("fused_attn::ema_core", "fused_attn::ema_core_backward")
