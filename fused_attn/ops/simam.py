"""fused_attn::simam: SimAM's parameter-free 3-D attention, one op (math: fused_attn/backends/reference/simam.py).

  simam(x, e_lambda) -> (out = x * sigmoid((x - mu)^2 k + 0.5) like x, mean [B, C] acc, k [B, C] acc),
  k = 1 / (4 (sum_hw (x - mu)^2 / (H W - 1) + e_lambda)); mean and k are saved for backward (8 bytes per plane)

Passes (fused_attn.backends.<backend>.simam): simam_gate(x, e_lambda) forward,
simam_grad_input(grad_out, x, mean, k) backward. Only x and the two [B, C] statistics are saved.

Autocast (fused_attn/ops/_autocast.py): CPU, not cast: the op runs on the dtype it receives, as the official
code's mean / pow / sum / sigmoid / mul run under CPU autocast. CUDA: a float16 / bfloat16 x is computed in
float32 and the output is float32, as CUDA autocast runs the official code's pow and sum in float32 (and the
final x * sigmoid(...) promotes).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import dispatch
from .._layout import acc_dtype, empty_4d
from . import _autocast, _double_backward, _eager

OP = "simam"


def _impl(x: Tensor, backend: str):
    return dispatch.implementation(OP, backend, x.device, x.dtype)[1]


@_eager.custom_op("fused_attn::simam")
def simam(x: Tensor, e_lambda: float, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """-> (out like x, mean [B, C], k [B, C]) (the last two: per-plane statistics, saved for backward)."""
    return _impl(x, backend).simam_gate(x, e_lambda)


@simam.register_fake
def _(x, e_lambda, backend):
    stats = x.new_empty(x.shape[:2], dtype=acc_dtype(x.dtype))
    return empty_4d(x, x.shape), stats, torch.empty_like(stats)


@torch.library.custom_op("fused_attn::simam_backward", mutates_args=())
def simam_backward(grad_out: Tensor, x: Tensor, mean: Tensor, k: Tensor, e_lambda: float, backend: str) -> Tensor:
    """-> grad_x like x (the kernels read e_lambda through k; the double backward needs it)."""
    return _impl(x, backend).simam_grad_input(grad_out, x, mean, k)


@simam_backward.register_fake
def _(grad_out, x, mean, k, e_lambda, backend):
    return empty_4d(x, x.shape)


def _simam_setup(ctx, inputs, output):
    x, e_lambda, backend = inputs
    _, mean, k = output
    ctx.mark_non_differentiable(mean, k)
    ctx.save_for_backward(x, mean, k)
    ctx.e_lambda, ctx.backend = e_lambda, backend


def _simam_backward(ctx, grad_out, _gm, _gk):
    x, mean, k = ctx.saved_tensors
    return simam_backward(grad_out, x, mean, k, ctx.e_lambda, ctx.backend), None, None


simam.register_autograd(_simam_backward, setup_context=_simam_setup)


_double_backward.register(simam_backward, simam)
_autocast.pass_through("fused_attn::simam", upcast_on=("cuda",))
_autocast.pass_through("fused_attn::simam_backward")
