"""Triton kernels of EMA's strip pooling (math: fused_attn/backends/reference/ema_strip_pool.py).

  reduce      one pass over x: each program sums a [BLOCK_C, BLOCK_H, BLOCK_W] tile's rows (complete: whole
              rows) and adds its column partials per row chunk, merged in chunk order (deterministic)
  grad_input  one pass writing grad_x = grad_rows / W + grad_cols / H
"""
from __future__ import annotations

import torch
import triton.language as tl

from ..._layout import acc_dtype, empty_4d
from . import _common as cm

OPS = {"ema_strip_pool"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


@cm.kernel(key=["C", "H", "W", "BLOCK_C", "BLOCK_H", "BLOCK_W"])
def _ema_strip_pool_reduce_kernel(x_ptr, out_ptr, col_ptr, C, H, W, rows_per_chunk, n_chunk, n_cblk, col_div,
                                  sx_b, sx_c, sx_h, sx_w, sc_b, sc_s, sc_c,
                           ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Program (b, channel block, row chunk k): out[b, c, h] = mean_w x[b, c, h, :] for the chunk's rows,
    col[b, k, c, w] = sum_{h in chunk} x[b, c, h, w] / col_div (out[:, :, H:] itself when one chunk)."""
    b, cb, k = cm.program_coords(n_chunk, n_cblk)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    c64 = c.to(tl.int64)
    w = tl.arange(0, BLOCK_W)
    wm = w < W
    colacc = tl.full([BLOCK_C, BLOCK_W], 0, ACC)
    h_start = k * rows_per_chunk
    h_stop = tl.minimum(H, h_start + rows_per_chunk)
    hr = tl.arange(0, BLOCK_H)
    h = h_start + hr
    xp = x_ptr + b * sx_b + cm.tile_offsets(c64, h, w, sx_c, sx_h, sx_w)   # advanced by BLOCK_H rows a step
    op = out_ptr + (b * C + c64[:, None]) * (H + W) + h[None, :]
    for h0 in range(h_start, h_stop, BLOCK_H):
        hm = h0 + hr < h_stop
        x = tl.load(xp, mask=cmask[:, None, None] & hm[None, :, None] & wm[None, None, :], other=0).to(ACC)
        tl.store(op, (tl.sum(x, axis=2) / W).to(out_ptr.dtype.element_ty), mask=cmask[:, None] & hm[None, :])
        colacc += tl.sum(x, axis=1)
        xp += BLOCK_H * sx_h
        op += BLOCK_H
    tl.store(col_ptr + b * sc_b + k * sc_s + c64[:, None] * sc_c + w[None, :],
             (colacc / col_div).to(col_ptr.dtype.element_ty), mask=cmask[:, None] & wm[None, :])


@cm.kernel(key=["C", "H", "W", "BLOCK_C", "BLOCK_P"])
def _ema_strip_pool_grad_input_kernel(g_ptr, gx_ptr, C, H, W, n_cblk, n_pblk, so_b, so_c, so_p,
                                      ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """grad_x[b, c, i, j] = g[b, c, i] / W + g[b, c, H + j] / H   (g contiguous [B, C, H + W])."""
    b, cb, t = cm.program_coords(n_pblk, n_cblk)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    p = t * BLOCK_P + tl.arange(0, BLOCK_P)
    mask = (c < C)[:, None] & (p < H * W)[None, :]
    c64 = c.to(tl.int64)[:, None]
    p64 = p.to(tl.int64)[None, :]
    base = g_ptr + (b * C + c64) * (H + W)
    grad = (tl.load(base + p64 // W, mask=mask, other=0).to(ACC) / W
            + tl.load(base + H + p64 % W, mask=mask, other=0).to(ACC) / H)
    tl.store(gx_ptr + b * so_b + c64 * so_c + p64 * so_p, grad.to(gx_ptr.dtype.element_ty), mask=mask)


def _tile_chw(c: int, h: int, w: int, c_fast: bool, budget: int) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_H, BLOCK_W) with whole rows (BLOCK_W = pow2(W)); up to 64 channels when channels are
    the unit-stride axis, else as many rows as fit before adding channels."""
    bw = cm.pow2(w)
    if c_fast:
        bc = min(cm.pow2(c), 64, max(1, budget // bw))
        return bc, min(cm.pow2(h), max(1, budget // (bc * bw))), bw
    bh = min(cm.pow2(h), max(1, budget // bw))
    return min(cm.pow2(c), max(1, budget // (bh * bw))), bh, bw


def ema_strip_pool_reduce(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, H + W]: means over W (one per row), then over H (one per column); x's dtype."""
    b, c, h, w = x.shape
    out = torch.empty((b, c, h + w), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    if h == 0 or w == 0:
        return out.fill_(float("nan"))
    c_fast, budget = cm.channels_fast(cm.pixel_view(x)[1]), cm.tile_elems()
    bc, bh, bw = _tile_chw(c, h, w, c_fast, budget)
    # channels_last: narrower channel blocks (down to 16) before splitting rows into chunks with partials
    while c_fast and bc > 16 and b * cm.cdiv(c, bc) < cm.target_programs(x.device):
        bc //= 2
        bh = min(cm.pow2(h), max(1, budget // (bc * bw)))
    n_cblk = cm.cdiv(c, bc)
    blocks_per_chunk, n_chunk = cm.split(b * n_cblk, cm.cdiv(h, bh), x.device)
    if n_chunk == 1:   # the column means go straight into out[:, :, H:]
        col, col_strides, col_div = out[:, :, h:], (out.stride(0), 0, out.stride(1)), h
    else:              # per-chunk column sums, summed below (deterministic second stage)
        col = torch.empty((b, n_chunk, c, w), dtype=acc_dtype(x.dtype), device=x.device)
        col_strides, col_div = col.stride()[:3], 1
    _ema_strip_pool_reduce_kernel[cm.grid1(b * n_cblk * n_chunk)](
        x, out, col, c, h, w, blocks_per_chunk * bh, n_chunk, n_cblk, col_div, *x.stride(), *col_strides,
        ACC=cm.acc_tl(x.dtype), BLOCK_C=bc, BLOCK_H=bh, BLOCK_W=bw)
    if n_chunk > 1:
        out[:, :, h:] = col.sum(dim=1) / h
    return out


def ema_strip_pool_grad_input(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """grad [B, C, H + W] -> grad_x [B, C, H, W] = grad_h[..., i] / W + grad_w[..., j] / H, like x."""
    b, c, h, w = x.shape
    grad_x = empty_4d(x, x.shape)
    if grad_x.numel() == 0:
        return grad_x
    _, so = cm.pixel_view(grad_x)
    bc, bp = cm.tile_cp(c, h * w, cm.channels_fast(so))
    n_cblk, n_pblk = cm.cdiv(c, bc), cm.cdiv(h * w, bp)
    _ema_strip_pool_grad_input_kernel[cm.grid1(b * n_cblk * n_pblk)](
        grad.contiguous(), grad_x, c, h, w, n_cblk, n_pblk, *so, ACC=cm.acc_tl(x.dtype), BLOCK_C=bc, BLOCK_P=bp)
    return grad_x
