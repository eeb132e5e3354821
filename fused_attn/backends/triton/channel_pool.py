"""Triton channel pooling: max / mean / std (unbiased) over C per pixel, and its backward.

Forward: one program per (b, pixel tile) loops over channel blocks, reading x exactly once:
  running max + first argmax (NaN counts as the maximum, as torch.argmax), the mean as sum / C (as
  torch.mean: an all -inf pixel gives -inf), and M2 of x - x[c = 0] merged block by block with Chan's parallel
  update (each block's own mean and M2 computed two-pass in registers), so the variance never comes from
  E[x^2] - E[x]^2 nor from the rounding of a large mean.
Backward: one program per (b, pixel tile, channel chunk), pointwise over the chunk's channel blocks:
  grad_x = [c == argmax] g_max + g_mean / C + g_std (x - mean) / ((C - 1) std)   (0 where std == 0)
reading grad_out, the saved argmax / moments (per pixel, loaded once per program) and x only when std is
asked. One chunk (all C) unless B x pixel tiles is too few to fill the GPU.
"""
from __future__ import annotations

import torch
import triton.language as tl

from ..._layout import acc_dtype, empty_4d
from . import _common as cm

OPS = {"channel_pool"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


@cm.kernel(key=["C", "P", "BLOCK_C", "BLOCK_P"])
def _channel_pool_reduce_kernel(x_ptr, out_ptr, argmax_ptr, mom_ptr, C, P, n_pblk,
                                sx_b, sx_c, sx_p, so_b, so_k, so_p,
                                K_MAX: tl.constexpr, K_MEAN: tl.constexpr, K_STD: tl.constexpr, ACC: tl.constexpr,
                                BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """out[b, K_*, p] = max / mean / std over c of x[b, c, p] (K_* = -1: not asked);
    argmax[b, p] (int32) with max; moments[b, (0, 1), p] = (mean, std) with std."""
    b, _, t = cm.program_coords(n_pblk, 1)
    p = t * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    p64 = p.to(tl.int64)[None, :]
    best = tl.full([BLOCK_P], float("-inf"), ACC)
    best_i = tl.full([BLOCK_P], 0, tl.int32)
    mean = tl.full([BLOCK_P], 0, ACC)
    m2 = tl.full([BLOCK_P], 0, ACC)
    n = tl.full([BLOCK_P], 0, ACC)
    total = tl.full([BLOCK_P], 0, ACC)   # the mean output is total / C, as torch.mean (Chan's merged mean feeds M2)
    if K_STD >= 0:
        # M2 of x - x[c = 0]: the same M2, from values near 0, so the block means Chan's update merges carry no
        # rounding of a large mean (x ~ 1000 in fp32: the means' ulp would reach the std's 5th digit)
        shift = tl.load(x_ptr + b * sx_b + p.to(tl.int64) * sx_p, mask=pm, other=0).to(ACC)
    cr = tl.arange(0, BLOCK_C)
    xp = x_ptr + b * sx_b + cr.to(tl.int64)[:, None] * sx_c + p64 * sx_p   # advanced by BLOCK_C channels a step
    for c0 in range(0, C, BLOCK_C):
        c = c0 + cr
        cmask = (c < C)[:, None]
        mask = cmask & pm[None, :]
        x = tl.load(xp, mask=mask, other=0).to(ACC)
        xp += BLOCK_C * sx_c
        if K_MAX >= 0:
            # block max and its first index, NaN counting as the maximum (as torch.argmax): the first NaN
            # channel, if any, else the first maximal number
            isnan = (x != x) & cmask
            v, i = tl.max(tl.where(cmask & ~isnan, x, float("-inf")), axis=0, return_indices=True,
                          return_indices_tie_break_left=True)
            first_nan = tl.min(tl.where(isnan, c[:, None], C), axis=0)
            v = tl.where(first_nan < C, float("nan"), v)
            i = tl.where(first_nan < C, first_nan, i + c0)
            take = (v > best) | ((v != v) & (best == best))
            best = tl.where(take, v, best)
            best_i = tl.where(take, i, best_i)
        if K_MEAN >= 0 or K_STD >= 0:
            total += tl.sum(x, axis=0)
        if K_STD >= 0:
            xs = tl.where(cmask, x - shift[None, :], 0)
            nb = tl.sum(tl.where(cmask, 1.0, 0.0).to(ACC), axis=0)
            bmean = tl.sum(xs, axis=0) / nb
            d = tl.where(cmask, xs - bmean[None, :], 0)
            delta = bmean - mean
            n_new = n + nb
            mean = mean + delta * (nb / n_new)
            m2 = m2 + tl.sum(d * d, axis=0) + delta * delta * (n * nb / n_new)
            n = n_new
    base = out_ptr + b * so_b + p.to(tl.int64) * so_p
    if K_MAX >= 0:
        tl.store(base + K_MAX * so_k, best.to(out_ptr.dtype.element_ty), mask=pm)
        tl.store(argmax_ptr + b * P + p, best_i, mask=pm)
    mean = total / C   # an all -inf pixel: -inf, where the merged mean's -inf - -inf would give NaN
    if K_MEAN >= 0:
        tl.store(base + K_MEAN * so_k, mean.to(out_ptr.dtype.element_ty), mask=pm)
    if K_STD >= 0:
        std = tl.sqrt(m2 / (C - 1))  # C == 1: 0 / 0 = NaN, as torch.std
        tl.store(base + K_STD * so_k, std.to(out_ptr.dtype.element_ty), mask=pm)
        tl.store(mom_ptr + b * 2 * P + p, mean, mask=pm)
        tl.store(mom_ptr + (b * 2 + 1) * P + p, std, mask=pm)


@cm.kernel(key=["C", "P", "BLOCK_C", "BLOCK_P"])
def _channel_pool_grad_input_kernel(g_ptr, x_ptr, argmax_ptr, mom_ptr, gx_ptr, C, P, c_per_chunk, n_chunk, n_pblk,
                                    sg_b, sg_k, sg_p, sx_b, sx_c, sx_p, so_b, so_c, so_p,
                                    K_MAX: tl.constexpr, K_MEAN: tl.constexpr, K_STD: tl.constexpr, ACC: tl.constexpr,
                                    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """grad_x[b, c, p] = [c == argmax] g_max + g_mean / C + g_std (x - mean) / ((C - 1) std).
    Program (b, channel chunk k, pixel tile t): the per-pixel terms are loaded once, then the chunk's
    channel blocks are written (x is read only for std)."""
    b, k, t = cm.program_coords(n_pblk, n_chunk)
    p = t * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    p64 = p.to(tl.int64)
    g_base = g_ptr + b * sg_b + p64 * sg_p
    if K_MAX >= 0:
        g_max = tl.load(g_base + K_MAX * sg_k, mask=pm, other=0).to(ACC)
        am = tl.load(argmax_ptr + b * P + p, mask=pm, other=-1)
    if K_MEAN >= 0:
        g_mean = tl.load(g_base + K_MEAN * sg_k, mask=pm, other=0).to(ACC) / C
    if K_STD >= 0:
        g_std = tl.load(g_base + K_STD * sg_k, mask=pm, other=0).to(ACC)
        mean = tl.load(mom_ptr + b * 2 * P + p, mask=pm, other=0)
        std = tl.load(mom_ptr + (b * 2 + 1) * P + p, mask=pm, other=1)
        coef = tl.where(std == 0, 0, g_std / ((C - 1) * tl.where(std == 0, 1, std)))
    c_start = k * c_per_chunk
    c_stop = tl.minimum(C, c_start + c_per_chunk)
    cr = tl.arange(0, BLOCK_C)
    c64 = (c_start + cr).to(tl.int64)[:, None]
    xp = x_ptr + b * sx_b + c64 * sx_c + p64[None, :] * sx_p   # advanced by BLOCK_C channels a step
    op = gx_ptr + b * so_b + c64 * so_c + p64[None, :] * so_p
    for c0 in range(c_start, c_stop, BLOCK_C):
        c = c0 + cr
        mask = (c < c_stop)[:, None] & pm[None, :]
        grad = tl.full([BLOCK_C, BLOCK_P], 0, ACC)
        if K_MAX >= 0:
            grad += tl.where(c[:, None] == am[None, :], g_max[None, :], 0)
        if K_MEAN >= 0:
            grad += g_mean[None, :]
        if K_STD >= 0:
            grad += coef[None, :] * (tl.load(xp, mask=mask, other=0).to(ACC) - mean[None, :])
        tl.store(op, grad.to(gx_ptr.dtype.element_ty), mask=mask)
        xp += BLOCK_C * sx_c
        op += BLOCK_C * so_c


def _slots(stats: tuple[str, ...]) -> dict:
    return {f"K_{name.upper()}": stats.index(name) if name in stats else -1 for name in ("max", "mean", "std")}


def channel_pool_reduce(x: torch.Tensor, stats: tuple[str, ...]):
    """-> (out [B, len(stats), H, W] like x, argmax [B, H, W] int32 or [0], moments [B, 2, H, W] or [0])."""
    b, c, h, w = x.shape
    p = h * w
    acc = acc_dtype(x.dtype)
    out = empty_4d(x, (b, len(stats), h, w))
    argmax = x.new_empty((b, h, w) if "max" in stats else (0,), dtype=torch.int32)
    moments = x.new_empty((b, 2, h, w) if "std" in stats else (0,), dtype=acc)
    if out.numel() == 0:
        return out, argmax, moments
    x, sx = cm.pixel_view(x)
    _, so = cm.pixel_view(out)
    c_fast = cm.channels_fast(sx)
    bc, bp = cm.tile_cp(c, p, c_fast)
    # each program reduces all C for its pixels: fewer pixels per program (down to 32) until the grid
    # fills the device, keeping the tile size
    while bp > 32 and b * cm.cdiv(p, bp) < cm.target_programs(x.device):
        bp //= 2
        bc = bc if c_fast else min(cm.pow2(c), max(1, cm.tile_elems() // bp))
    n_pblk = cm.cdiv(p, bp)
    _channel_pool_reduce_kernel[cm.grid1(b * n_pblk)](
        x, out, argmax, moments, c, p, n_pblk, *sx, *so, **_slots(stats), ACC=cm.acc_tl(x.dtype),
        BLOCK_C=bc, BLOCK_P=bp)
    return out, argmax, moments


def channel_pool_grad_input(grad_out: torch.Tensor, x: torch.Tensor, argmax: torch.Tensor, moments: torch.Tensor,
                            stats: tuple[str, ...]) -> torch.Tensor:
    """grad_x [B, C, H, W] in x's dtype and layout."""
    b, c, h, w = x.shape
    p = h * w
    grad_x = empty_4d(x, x.shape)
    if x.numel() == 0:
        return grad_x
    x, sx = cm.pixel_view(x)
    g, sg = cm.pixel_view(grad_out)
    _, so = cm.pixel_view(grad_x)
    bc, bp, n_pblk, c_per_chunk, n_chunk = cm.channel_chunks(b, c, p, cm.channels_fast(so), x.device)
    _channel_pool_grad_input_kernel[cm.grid1(b * n_chunk * n_pblk)](
        g, x, argmax.contiguous() if "max" in stats else x, moments.contiguous() if "std" in stats else x,
        grad_x, c, p, c_per_chunk, n_chunk, n_pblk, *sg, *sx, *so, **_slots(stats),
        ACC=cm.acc_tl(x.dtype), BLOCK_C=bc, BLOCK_P=bp)
    return grad_x
