"""The ECA gate's k-tap convolution across the channels, forward and backward written out.

  z[b, c] = sum_j w[j] p[b, c + j - pad]      j < k (odd), pad = (k - 1) // 2
  s       = gate(z)

p [B, C] are the channel means; a tap that falls outside [0, C) reads 0 (zero padding: timm EcaModule, the
official eca_layer) or wraps around modulo C (circular: timm CecaModule). It is tiny (B x C x k), so every
backend but the CPU one (which runs it in C++ between its wave passes) runs it in PyTorch; only the passes over
x are kernels. Computed in the accumulation dtype; the weight gradient is returned in the weight's dtype.
Deterministic on every device (no scatter: the backward is the transposed correlation as a conv1d).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _mlp


def _wrapped(p: torch.Tensor, pad: int) -> torch.Tensor:
    """p [B, C] extended by `pad` channels on each side wrapping around modulo C -> [B, C + 2 pad]."""
    c = p.shape[1]
    idx = torch.arange(-pad, c + pad, device=p.device) % c
    return p[:, idx]


def _padded(p: torch.Tensor, pad: int, circular: bool) -> torch.Tensor:
    return _wrapped(p, pad) if circular else F.pad(p, (pad, pad))


def forward(pooled: torch.Tensor, weight: torch.Tensor, circular: bool) -> torch.Tensor:
    """z [B, C] in pooled's dtype (the accumulation dtype); weight [k]."""
    k = weight.numel()
    pad = (k - 1) // 2
    dt = pooled.dtype
    return F.conv1d(_padded(pooled, pad, circular)[:, None], weight.to(dt).reshape(1, 1, k))[:, 0]


def backward(grad_z: torch.Tensor, pooled: torch.Tensor, weight: torch.Tensor, circular: bool):
    """-> (grad_pooled [B, C] in pooled's dtype, grad_weight like weight)."""
    k = weight.numel()
    pad = (k - 1) // 2
    dt = pooled.dtype
    gz = grad_z.to(dt)
    # grad_p[c] = sum_j w[j] grad_z[c - j + pad]: the correlation with the flipped taps (k odd)
    flipped = weight.to(dt).reshape(k).flip(0).reshape(1, 1, k)
    grad_pooled = F.conv1d(_padded(gz, pad, circular)[:, None], flipped)[:, 0]
    # grad_w[j] = sum_{b, c} grad_z[b, c] p[b, c + j - pad]
    windows = _padded(pooled, pad, circular).unfold(1, k, 1)  # [B, C, k]
    grad_weight = torch.einsum("bc,bck->k", gz, windows)
    return grad_pooled, grad_weight.to(weight.dtype).reshape(weight.shape)


def forward_gate(pooled: torch.Tensor, weight: torch.Tensor, circular: bool, gate: str):
    """(z, s = gate(z)), [B, C] in pooled's dtype."""
    z = forward(pooled, weight, circular)
    return z, _mlp.gate(gate, z)
