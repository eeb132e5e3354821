"""Triton kernels of GCNet's attention pooling (math: fused_attn/backends/reference/global_context.py).

  reduce  one pass over x: program (b, split) walks its run of pixel tiles; per tile the logits z = weight . x (a
          loop over channel blocks), then an online softmax: a running max m and sum l, and the split's channel
          sums (a row of the partial buffer that the program alone owns) rescaled by exp(m_old - m_new) when a tile
          raises the max, plus sum_p e x over the tile. The splits of an image are merged in split order in
          PyTorch (B x splits x C values): ctx = sum_k sums_k e^(m_k - M) / L, lse = M + log L.
  grads   one pass over x writing grad_x: per tile z and s = g . x, a = exp(z - lse), dz = a (s - g . ctx), then
          grad_x = g a + dz weight over the tile and the split's grad_weight row += sum_p dz x; rows added in
          split order.
No atomics; accumulation in float32 (float64 for float64).
"""
from __future__ import annotations

import torch
import triton.language as tl

from ..._layout import acc_dtype, empty_4d
from . import _common as cm

OPS = {"global_context_pool"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


@cm.kernel(key=["C", "P", "BLOCK_C", "BLOCK_P"])
def _global_context_pool_reduce_kernel(x_ptr, w_ptr, part_ptr, m_ptr, l_ptr, C, P, tiles_per_split, n_split,
                                       sx_b, sx_c, sx_p,
                                       ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Program (b, split k): part[b, k, c] = sum_p e^(z - m) x over its tiles, m[b, k], l[b, k] = sum_p e^(z - m)."""
    pid = tl.program_id(0)
    b = (pid // n_split).to(tl.int64)
    k = pid % n_split
    cr = tl.arange(0, BLOCK_C)
    pr = tl.arange(0, BLOCK_P)
    row = part_ptr + (b * n_split + k) * C
    for c0 in range(0, C, BLOCK_C):
        tl.store(row + c0 + cr, tl.full([BLOCK_C], 0, ACC), mask=c0 + cr < C)
    m = tl.max(tl.full([BLOCK_P], float("-inf"), ACC), axis=0)
    ls = tl.sum(tl.full([BLOCK_P], 0, ACC), axis=0)
    xb = x_ptr + b * sx_b
    t_start = k * tiles_per_split
    t_stop = tl.minimum(t_start + tiles_per_split, tl.cdiv(P, BLOCK_P))
    for t in range(t_start, t_stop):
        p = t * BLOCK_P + pr
        pm = p < P
        p64 = p.to(tl.int64)
        z = tl.full([BLOCK_P], 0, ACC)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cr
            cmask = c < C
            x = tl.load(xb + c.to(tl.int64)[:, None] * sx_c + p64[None, :] * sx_p,
                        mask=cmask[:, None] & pm[None, :], other=0).to(ACC)
            w = tl.load(w_ptr + c, mask=cmask, other=0).to(ACC)
            z += tl.sum(x * w[:, None], axis=0)
        z = tl.where(pm, z, float("-inf"))
        m_new = tl.maximum(m, tl.max(z, axis=0))
        scale = tl.exp(m - m_new)
        e = tl.where(pm, tl.exp(z - m_new), 0)
        ls = ls * scale + tl.sum(e, axis=0)
        m = m_new
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cr
            cmask = c < C
            x = tl.load(xb + c.to(tl.int64)[:, None] * sx_c + p64[None, :] * sx_p,
                        mask=cmask[:, None] & pm[None, :], other=0).to(ACC)
            acc = tl.load(row + c, mask=cmask, other=0)
            tl.store(row + c, acc * scale + tl.sum(x * e[None, :], axis=1), mask=cmask)
    tl.store(m_ptr + b * n_split + k, m)
    tl.store(l_ptr + b * n_split + k, ls)


@cm.kernel(key=["C", "P", "BLOCK_C", "BLOCK_P"])
def _global_context_pool_grads_kernel(x_ptr, w_ptr, g_ptr, gc_ptr, lse_ptr, gx_ptr, part_ptr, C, P, tiles_per_split,
                                      n_split, sx_b, sx_c, sx_p, so_b, so_c, so_p,
                                      ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Program (b, split k): grad_x over its tiles; part[b, k, c] = sum_p dz x."""
    pid = tl.program_id(0)
    b = (pid // n_split).to(tl.int64)
    k = pid % n_split
    cr = tl.arange(0, BLOCK_C)
    pr = tl.arange(0, BLOCK_P)
    row = part_ptr + (b * n_split + k) * C
    for c0 in range(0, C, BLOCK_C):
        tl.store(row + c0 + cr, tl.full([BLOCK_C], 0, ACC), mask=c0 + cr < C)
    lse = tl.load(lse_ptr + b).to(ACC)
    gcv = tl.load(gc_ptr + b).to(ACC)
    xb = x_ptr + b * sx_b
    ob = gx_ptr + b * so_b
    t_start = k * tiles_per_split
    t_stop = tl.minimum(t_start + tiles_per_split, tl.cdiv(P, BLOCK_P))
    for t in range(t_start, t_stop):
        p = t * BLOCK_P + pr
        pm = p < P
        p64 = p.to(tl.int64)
        z = tl.full([BLOCK_P], 0, ACC)
        s = tl.full([BLOCK_P], 0, ACC)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cr
            cmask = c < C
            x = tl.load(xb + c.to(tl.int64)[:, None] * sx_c + p64[None, :] * sx_p,
                        mask=cmask[:, None] & pm[None, :], other=0).to(ACC)
            w = tl.load(w_ptr + c, mask=cmask, other=0).to(ACC)
            g = tl.load(g_ptr + b * C + c, mask=cmask, other=0).to(ACC)
            z += tl.sum(x * w[:, None], axis=0)
            s += tl.sum(x * g[:, None], axis=0)
        a = tl.where(pm, tl.exp(z - lse), 0)
        dz = a * (s - gcv)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + cr
            cmask = c < C
            mask = cmask[:, None] & pm[None, :]
            c64 = c.to(tl.int64)[:, None]
            x = tl.load(xb + c64 * sx_c + p64[None, :] * sx_p, mask=mask, other=0).to(ACC)
            w = tl.load(w_ptr + c, mask=cmask, other=0).to(ACC)
            g = tl.load(g_ptr + b * C + c, mask=cmask, other=0).to(ACC)
            gx = g[:, None] * a[None, :] + w[:, None] * dz[None, :]
            tl.store(ob + c64 * so_c + p64[None, :] * so_p, gx.to(gx_ptr.dtype.element_ty), mask=mask)
            acc = tl.load(row + c, mask=cmask, other=0)
            tl.store(row + c, acc + tl.sum(x * dz[None, :], axis=1), mask=cmask)


def _geometry(x: torch.Tensor, strides: tuple) -> tuple[int, int, int, int]:
    """(BLOCK_C, BLOCK_P, tiles per split, splits): pixel tiles long along the unit-stride axis, split over
    programs until B x splits fills the device (one split per image under the interpreter)."""
    b, c, h, w = x.shape
    p = h * w
    bc, bp = cm.tile_cp(c, p, cm.channels_fast(strides))
    per, n_split = cm.split(b, cm.cdiv(p, bp), x.device)
    return bc, bp, per, n_split


def global_context_pool_reduce(x: torch.Tensor, weight: torch.Tensor):
    """-> (ctx [B, C], lse [B]) accumulation dtype."""
    b, c, h, w = x.shape
    acc = acc_dtype(x.dtype)
    if h * w == 0 or b == 0:
        return (torch.zeros((b, c), dtype=acc, device=x.device),
                torch.full((b,), float("-inf"), dtype=acc, device=x.device))
    xv, sx = cm.pixel_view(x)
    bc, bp, per, n_split = _geometry(x, sx)
    part = torch.empty((b, n_split, c), dtype=acc, device=x.device)
    m = torch.empty((b, n_split), dtype=acc, device=x.device)
    ls = torch.empty((b, n_split), dtype=acc, device=x.device)
    wv = weight.reshape(c).to(acc).contiguous()
    _global_context_pool_reduce_kernel[cm.grid1(b * n_split)](
        xv, wv, part, m, ls, c, h * w, per, n_split, *sx, ACC=cm.acc_tl(x.dtype), BLOCK_C=bc, BLOCK_P=bp)
    if n_split == 1:
        return part[:, 0] / ls, m[:, 0] + torch.log(ls[:, 0])
    big = m.amax(dim=1, keepdim=True)
    scale = torch.exp(m - big)                                   # [B, splits]
    total = (ls * scale).sum(dim=1)
    ctx = (part * scale[:, :, None]).sum(dim=1) / total[:, None]
    return ctx, big[:, 0] + torch.log(total)


def global_context_pool_grads(grad_ctx: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, ctx: torch.Tensor,
                              lse: torch.Tensor):
    """-> (grad_x like x, grad_weight [C] accumulation dtype)."""
    b, c, h, w = x.shape
    acc = acc_dtype(x.dtype)
    grad_x = empty_4d(x, x.shape)
    if grad_x.numel() == 0:
        return grad_x, torch.zeros((c,), dtype=acc, device=x.device)
    xv, sx = cm.pixel_view(x)
    _, so = cm.pixel_view(grad_x)
    bc, bp, per, n_split = _geometry(x, sx)
    g = grad_ctx.reshape(b, c).to(acc).contiguous()
    gc = (g * ctx.reshape(b, c).to(acc)).sum(dim=1).contiguous()
    part = torch.empty((b, n_split, c), dtype=acc, device=x.device)
    _global_context_pool_grads_kernel[cm.grid1(b * n_split)](
        xv, weight.reshape(c).to(acc).contiguous(), g, gc, lse.to(acc).contiguous(), grad_x, part, c, h * w, per,
        n_split, *sx, *so, ACC=cm.acc_tl(x.dtype), BLOCK_C=bc, BLOCK_P=bp)
    return grad_x, part.reshape(b * n_split, c).sum(dim=0)
