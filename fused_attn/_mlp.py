"""The squeeze-excite MLP on pooled channel descriptors, forward and backward written out.

  z1 = pooled @ w1^T + b1      [B, Cr]   (w1: [Cr, C]; Linear(C, Cr) or a 1x1 conv's weight viewed 2-D)
  z2 = act(z1) @ w2^T + b2     [B, C]    (w2: [C, Cr])
  s  = gate(z2)                [B, C]

  (ESE, single_forward / single_backward: one layer, s = gate(pooled @ w^T + b), w: [C, C])

It is tiny (B x C x Cr), so it runs in PyTorch between the kernel passes over x (the CPU forwards run their own
C++ copy inside their cache-sized waves); the backward always runs here.
Computed in the accumulation dtype; weight gradients are returned in the weights' dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

ACTIVATIONS = ("relu", "hardswish", "silu")
GATES = ("sigmoid", "hardsigmoid")
# torch's hardsigmoid backward uses the float32 1/6 in every dtype (float64 included); so do all the backends
_HARDSIGMOID_SLOPE = float(torch.tensor(1 / 6, dtype=torch.float32))


def activation(name: str, z: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return torch.relu(z)
    if name == "hardswish":
        return F.hardswish(z)
    if name == "silu":
        return F.silu(z)
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


def activation_grad(name: str, z: torch.Tensor) -> torch.Tensor:
    """d act(z) / dz."""
    if name == "relu":
        return (z > 0).to(z.dtype)
    if name == "hardswish":  # x * relu6(x + 3) / 6: 0 below -3, 1 above 3, (2x + 3) / 6 between
        return torch.where(z < -3, torch.zeros_like(z), torch.where(z > 3, torch.ones_like(z), (2 * z + 3) / 6))
    if name == "silu":
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


class _Hardsigmoid(torch.autograd.Function):
    """F.hardsigmoid (its values, as torch rounds them per device) with a backward that is itself differentiable:
    torch has no derivative of hardsigmoid_backward, so a double backward (gradient penalties) through a
    hardsigmoid gate raised torch's internal error. The first backward is torch's: grad * the float 1/6 strictly
    inside (-3, 3) (gate_grad); its own derivative is 0 in z."""

    generate_vmap_rule = True   # composes with torch.func (the double-backward path runs under torch.func.vjp)

    @staticmethod
    def forward(z):
        return F.hardsigmoid(z)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * gate_grad("hardsigmoid", z)


def gate(name: str, z: torch.Tensor) -> torch.Tensor:
    if name == "sigmoid":
        return torch.sigmoid(z)
    if name == "hardsigmoid":
        # traced by torch.compile (the inline policy): torch's own op, as the block it replaces (Dynamo fails on
        # this autograd.Function's backward under dynamic shapes, torch 2.14); so no double backward there
        return F.hardsigmoid(z) if torch.compiler.is_compiling() else _Hardsigmoid.apply(z)
    raise ValueError(f"unknown gate {name!r}; expected one of {GATES}")


def gate_grad(name: str, z: torch.Tensor) -> torch.Tensor:
    """d gate(z) / dz."""
    if name == "sigmoid":
        s = torch.sigmoid(z)
        return s * (1 - s)
    if name == "hardsigmoid":  # relu6(x + 3) / 6: slope 1/6 strictly inside (-3, 3), as torch, whose backward
        # kernels (CPU and CUDA) take the slope as the float 1.0f / 6.0f in every dtype (float64 too)
        return ((z > -3) & (z < 3)).to(z.dtype) * _HARDSIGMOID_SLOPE
    raise ValueError(f"unknown gate {name!r}; expected one of {GATES}")


def forward(pooled: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor], w2: torch.Tensor,
            b2: Optional[torch.Tensor], act: str, gate_name: str):
    """-> (z1, z2, s), all in pooled's dtype (the accumulation dtype)."""
    dt = pooled.dtype
    z1 = pooled @ w1.to(dt).t()
    if b1 is not None:
        z1 = z1 + b1.to(dt)
    z2 = activation(act, z1) @ w2.to(dt).t()
    if b2 is not None:
        z2 = z2 + b2.to(dt)
    return z1, z2, gate(gate_name, z2)


def backward(grad_s: torch.Tensor, pooled: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor,
             w1: torch.Tensor, b1: Optional[torch.Tensor], w2: torch.Tensor, b2: Optional[torch.Tensor],
             act: str, gate_name: str):
    """-> (grad_pooled, grad_w1, grad_b1, grad_w2, grad_b2); bias grads are None for absent biases."""
    dt = pooled.dtype
    dz2 = grad_s.to(dt) * gate_grad(gate_name, z2)
    a1 = activation(act, z1)
    grad_w2 = (dz2.t() @ a1).to(w2.dtype)
    grad_b2 = dz2.sum(0).to(b2.dtype) if b2 is not None else None
    dz1 = (dz2 @ w2.to(dt)) * activation_grad(act, z1)
    grad_w1 = (dz1.t() @ pooled).to(w1.dtype)
    grad_b1 = dz1.sum(0).to(b1.dtype) if b1 is not None else None
    grad_pooled = dz1 @ w1.to(dt)
    return grad_pooled, grad_w1, grad_b1, grad_w2, grad_b2


def single_forward(pooled: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], gate_name: str):
    """The one-layer gate of effective squeeze-excite (ESE): z = pooled @ w^T + b, s = gate(z) -> (z, s) in
    pooled's dtype; w [C, C]."""
    dt = pooled.dtype
    z = pooled @ w.to(dt).t()
    if b is not None:
        z = z + b.to(dt)
    return z, gate(gate_name, z)


def single_backward(grad_s: torch.Tensor, pooled: torch.Tensor, z: torch.Tensor, w: torch.Tensor,
                    b: Optional[torch.Tensor], gate_name: str):
    """-> (grad_pooled, grad_w, grad_b); grad_b is None for an absent bias."""
    dt = pooled.dtype
    dz = grad_s.to(dt) * gate_grad(gate_name, z)
    grad_w = (dz.t() @ pooled).to(w.dtype)
    grad_b = dz.sum(0).to(b.dtype) if b is not None else None
    return dz @ w.to(dt), grad_w, grad_b
