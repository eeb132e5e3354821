"""Triton squeeze-excite passes (the MLP between them stays in PyTorch, fused_attn._mlp):

  channel_squeeze_reduce      p[b, c] = sum_hw x / HW                 reduction over HW
  channel_squeeze_grad_input  grad_x = grad_p[b, c] / HW              pointwise write
  channel_scale               y = x * s[b, c]                         pointwise
  squeeze_excite_combine      channel_squeeze_reduce, the MLP in PyTorch, channel_scale (two passes over x)
  eca_combine                 channel_squeeze_reduce, the k-tap conv and gate in PyTorch, channel_scale
  ese_combine                 channel_squeeze_reduce, the one C x C layer and gate in PyTorch, channel_scale
  squeeze_excite_grad_gate    grad_s[b, c] = sum_hw g * x             reduction over HW, one pass over (g, x)
  squeeze_excite_grad_input   grad_x = g * s[b, c] + grad_p[b, c] / HW   pointwise, one pass over g

The reductions: program (b, channel block, pixel split) loops over its split's pixel blocks, accumulating a
[BLOCK_C, BLOCK_P] tile in registers and reducing it once at the end; when B x channel blocks is too few to
fill the GPU, HW is split and the [B, n_split, C] partials are summed by a second, deterministic stage.
"""
from __future__ import annotations

import torch
import triton.language as tl

from ... import _mlp, _pooled_gates
from ..._layout import acc_dtype, empty_4d
from . import _common as cm

OPS = {"channel_squeeze", "squeeze_excite", "eca", "ese"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


@cm.kernel(key=["C", "P", "BLOCK_C", "BLOCK_P"])
def _hw_sum_kernel(a_ptr, b_ptr, out_ptr, C, P, p_per_split, n_split, n_cblk, div,
                   sa_b, sa_c, sa_p, sb_b, sb_c, sb_p,
                   HAS_B: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """out[b, s, c] = sum_{p in split s} a[b, c, p] * b[b, c, p] / div   (b optional; out [B, n_split, C])."""
    bi, cb, s = cm.program_coords(n_split, n_cblk)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    c64 = c.to(tl.int64)[:, None]
    acc = tl.full([BLOCK_C, BLOCK_P], 0, ACC)
    p_start = s * p_per_split
    p_stop = tl.minimum(P, p_start + p_per_split)
    pr = tl.arange(0, BLOCK_P)
    p64 = (p_start + pr).to(tl.int64)[None, :]
    ap = a_ptr + bi * sa_b + c64 * sa_c + p64 * sa_p   # pointer tiles, advanced by BLOCK_P pixels a step
    bp = b_ptr + bi * sb_b + c64 * sb_c + p64 * sb_p
    for p0 in range(p_start, p_stop, BLOCK_P):
        mask = cmask[:, None] & (p0 + pr < p_stop)[None, :]
        v = tl.load(ap, mask=mask, other=0).to(ACC)
        if HAS_B:
            v = v * tl.load(bp, mask=mask, other=0).to(ACC)
        acc += v
        ap += BLOCK_P * sa_p
        bp += BLOCK_P * sb_p
    tl.store(out_ptr + (bi * n_split + s) * C + c, tl.sum(acc, axis=1) / div, mask=cmask)


def _hw_sum(a: torch.Tensor, b: torch.Tensor | None, mean: bool) -> torch.Tensor:
    """sum (or mean) over H, W of a (* b) -> [B, C] in the accumulation dtype."""
    nb, c, h, w = a.shape
    p = h * w
    acc = acc_dtype(a.dtype)
    if a.numel() == 0:
        return torch.full((nb, c), float("nan") if mean else 0.0, dtype=acc, device=a.device)
    has_b = b is not None
    a, sa = cm.pixel_view(a)
    b, sb = cm.pixel_view(b) if has_b else (a, sa)
    bc, bp = cm.tile_cp(c, p, cm.channels_fast(sa))
    n_cblk = cm.cdiv(c, bc)
    blocks_per_split, n_split = cm.split(nb * n_cblk, cm.cdiv(p, bp), a.device)
    out = torch.empty((nb, n_split, c), dtype=acc, device=a.device)
    _hw_sum_kernel[cm.grid1(nb * n_cblk * n_split)](
        a, b, out, c, p, blocks_per_split * bp, n_split, n_cblk, p if mean else 1, *sa, *sb,
        HAS_B=has_b, ACC=cm.acc_tl(a.dtype), BLOCK_C=bc, BLOCK_P=bp)
    return out[:, 0] if n_split == 1 else out.sum(dim=1)


def channel_squeeze_reduce(x: torch.Tensor) -> torch.Tensor:
    """mean over H, W -> [B, C] in the accumulation dtype."""
    return _hw_sum(x, None, mean=True)


def channel_squeeze_grad_input(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """grad [B, C] -> grad_x [B, C, H, W] = grad / HW, in x's dtype and layout."""
    return cm.gate_pointwise(empty_4d(x, x.shape), shift=grad, shift_div=x.shape[2] * x.shape[3])


def channel_scale(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x * s[:, :, None, None] in x's dtype and layout."""
    return cm.gate_pointwise(empty_4d(x, x.shape), x, channel=s)


def squeeze_excite_combine(x: torch.Tensor, w1: torch.Tensor, b1, w2: torch.Tensor, b2, act: str, gate: str):
    """-> (y like x, pooled [B, C], z1 [B, Cr], z2 [B, C]) (acc dtype): pool, MLP, scale. A single-pass
    (L2-resident) schedule is left for a GPU session (docs/triton.md)."""
    pooled = channel_squeeze_reduce(x)
    z1, z2, s = _mlp.forward(pooled, w1, b1, w2, b2, act, gate)
    return channel_scale(x, s), pooled, z1, z2


# the ECA and ESE forwards: these two passes around the layer in PyTorch (fused_attn/_pooled_gates.py)
eca_combine, ese_combine = _pooled_gates.one_layer_forwards(channel_squeeze_reduce, channel_scale)


def squeeze_excite_grad_gate(grad_y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum over H, W of grad_y * x -> [B, C] in the accumulation dtype."""
    return _hw_sum(x, grad_y, mean=False)


def squeeze_excite_grad_input(grad_y: torch.Tensor, x: torch.Tensor, s: torch.Tensor,
                              grad_pooled: torch.Tensor) -> torch.Tensor:
    """grad_y * s + grad_pooled / HW -> grad_x in x's dtype and layout."""
    return cm.gate_pointwise(empty_4d(x, x.shape), grad_y, channel=s, shift=grad_pooled,
                             shift_div=x.shape[2] * x.shape[3])
