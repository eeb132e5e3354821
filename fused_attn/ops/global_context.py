"""fused_attn::global_context_pool (math: fused_attn/backends/reference/global_context.py).

  global_context_pool(x, weight [C], bias) = (ctx [B, C], lse [B])     both in the accumulation dtype
      ctx[b, c] = sum_p softmax_p(weight . x[b, :, p] + bias)[p] x[b, c, p]      (GCNet's attention pooling)

The forward reads x once (global_context_pool_reduce: per pixel tile the logits, an online softmax and the
weighted channel sums; tile partials merged in a fixed order); the backward reads x once and writes grad_x once
(global_context_pool_grads, grad_weight reduced on the way). Saved for the backward: x, ctx and lse, nothing
x-sized beyond x. The bias cancels in the softmax: ctx does not depend on it, and its gradient is returned as
exact zeros (what the true gradient is; eager autograd returns rounding noise of the same zero).

Passes (fused_attn.backends.<backend>.global_context):
  global_context_pool_reduce(x, weight) -> (ctx [B, C], lse [B]) accumulation dtype
  global_context_pool_grads(grad_ctx, x, weight, ctx, lse) -> (grad_x like x, grad_weight [C] accumulation dtype)

Autocast: not cast (fused_attn/ops/_autocast.py). x keeps its dtype (bf16 after an autocast conv), the weight is
read in the accumulation dtype whatever its own (an fp32 parameter beside a bf16 x is not rounded to bf16, where
eager autocast would run the 1x1 conv in bf16), and the gradients come back in the weight's and bias's dtypes.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import dispatch
from .._layout import acc_dtype, empty_4d
from . import _autocast, _double_backward, _eager

OP = "global_context_pool"


def _impl(x: Tensor, backend: str):
    return dispatch.implementation(OP, backend, x.device, x.dtype)[1]


@_eager.custom_op("fused_attn::global_context_pool")
def global_context_pool(x: Tensor, weight: Tensor, bias: Optional[Tensor], backend: str) -> tuple[Tensor, Tensor]:
    """x [B, C, H, W], weight [C], bias [1] | None -> (ctx [B, C], lse [B]) in the accumulation dtype:
    ctx = sum_p softmax_p(weight . x + bias) x; lse = logsumexp_p(weight . x) (without the bias)."""
    return _impl(x, backend).global_context_pool_reduce(x, weight)


@global_context_pool.register_fake
def _(x, weight, bias, backend):
    acc = acc_dtype(x.dtype)
    return x.new_empty(x.shape[:2], dtype=acc), x.new_empty(x.shape[:1], dtype=acc)


@torch.library.custom_op("fused_attn::global_context_pool_backward", mutates_args=())
def global_context_pool_backward(grad_ctx: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor], ctx: Tensor,
                                 lse: Tensor, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """-> (grad_x like x, grad_weight like weight, grad_bias = zeros like bias | [0])."""
    grad_x, grad_w = _impl(x, backend).global_context_pool_grads(grad_ctx, x, weight, ctx, lse)
    grad_b = torch.zeros_like(bias, memory_format=torch.contiguous_format) if bias is not None else x.new_empty((0,))
    return grad_x, grad_w.to(weight.dtype).reshape(weight.shape), grad_b


@global_context_pool_backward.register_fake
def _(grad_ctx, x, weight, bias, ctx, lse, backend):
    def like(t):
        return torch.empty_like(t, memory_format=torch.contiguous_format) if t is not None else x.new_empty((0,))
    return empty_4d(x, x.shape), like(weight), like(bias)


def _setup(ctx, inputs, output):
    x, weight, bias, backend = inputs
    pooled, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(x, weight, bias, pooled, lse)
    ctx.backend = backend


def _backward(ctx, grad_ctx, _grad_lse):
    x, weight, bias, pooled, lse = ctx.saved_tensors
    if grad_ctx is None:
        grad_ctx = torch.zeros_like(pooled)
    gx, gw, gb = global_context_pool_backward(grad_ctx, x, weight, bias, pooled, lse, ctx.backend)
    return gx, gw, gb if bias is not None else None, None


global_context_pool.register_autograd(_backward, setup_context=_setup)
_double_backward.register(global_context_pool_backward, global_context_pool)
_autocast.pass_through("fused_attn::global_context_pool", "fused_attn::global_context_pool_backward")
