"""Triton kernels of SimAM (math: fused_attn/backends/reference/simam.py), per (b, c) plane of N = H W pixels.

  gate        program (b, block of BLOCK_C channels): mu = mean x, k = 1 / (4 (sum (x - mu)^2 / (N - 1) + e_lambda)),
              out = x sigmoid((x - mu)^2 k + 0.5); mean, k [B, C] acc
  grad_input  same programs: gy = g x s (1 - s), A = sum gy (x - mu)^2, B = sum gy (x - mu),
              grad_x = g s + 2 (x - mu) (k gy - 4 k^2 A / (N - 1)) - 2 k B / N

When a block's planes fit one tile (BLOCK_C x BLOCK_P >= BLOCK_C x N elements, ONE_TILE) they are loaded once into
registers and everything is computed from there: x read once, out written once (backward: g, x once, grad_x once).
Otherwise the program loops over pixel tiles: three passes over x forward (sum, squared deviations, gate), two over
(g, x) backward, the re-reads of a block's planes mostly from L2. NCHW: several small planes per program (up to
1024 pixels a tile); channels_last: up to 64 contiguous channels a tile. No atomics: every statistic is complete
within its program. N = 1 gives 0 / 0 = NaN, as the official code does.
"""
from __future__ import annotations

import numpy as np
import torch
import triton.language as tl

from ..._layout import acc_dtype, empty_4d
from . import _common as cm

OPS = {"simam"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


@cm.kernel(key=["C", "P", "BLOCK_C", "BLOCK_P"])
def _simam_gate_kernel(x_ptr, out_ptr, mean_ptr, k_ptr, C, P, n, n_cblk, lam_hi, lam_lo,
                       sx_b, sx_c, sx_p, so_b, so_c, so_p,
                       ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ONE_TILE: tl.constexpr):
    """Program (b, channel block): out = x sigmoid((x - mu)^2 k + 0.5), mean[b, c] = mu, k[b, c] = k."""
    pid = tl.program_id(0)
    b = (pid // n_cblk).to(tl.int64)
    c = (pid % n_cblk) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    c64 = c.to(tl.int64)
    pr = tl.arange(0, BLOCK_P)
    xb = x_ptr + b * sx_b + c64[:, None] * sx_c
    ob = out_ptr + b * so_b + c64[:, None] * so_c
    if ONE_TILE:
        m = cmask[:, None] & (pr < P)[None, :]
        p64 = pr.to(tl.int64)[None, :]
        x = tl.load(xb + p64 * sx_p, mask=m, other=0).to(ACC)
        mu = tl.sum(x, axis=1) / P
        d = tl.where(m, x - mu[:, None], 0)
        d2 = d * d
        k = 1.0 / (4.0 * (tl.sum(d2, axis=1) / n + lam_hi + lam_lo))
        tl.store(ob + p64 * so_p, (x * cm.sigmoid(d2 * k[:, None] + 0.5)).to(out_ptr.dtype.element_ty), mask=m)
    else:
        acc = tl.full([BLOCK_C, BLOCK_P], 0, ACC)
        for p0 in range(0, P, BLOCK_P):
            p = p0 + pr
            m = cmask[:, None] & (p < P)[None, :]
            acc += tl.load(xb + p.to(tl.int64)[None, :] * sx_p, mask=m, other=0).to(ACC)
        mu = tl.sum(acc, axis=1) / P
        acc = tl.full([BLOCK_C, BLOCK_P], 0, ACC)
        for p0 in range(0, P, BLOCK_P):
            p = p0 + pr
            m = cmask[:, None] & (p < P)[None, :]
            x = tl.load(xb + p.to(tl.int64)[None, :] * sx_p, mask=m, other=0).to(ACC)
            d = tl.where(m, x - mu[:, None], 0)
            acc += d * d
        k = 1.0 / (4.0 * (tl.sum(acc, axis=1) / n + lam_hi + lam_lo))
        for p0 in range(0, P, BLOCK_P):
            p = p0 + pr
            m = cmask[:, None] & (p < P)[None, :]
            p64 = p.to(tl.int64)[None, :]
            x = tl.load(xb + p64 * sx_p, mask=m, other=0).to(ACC)
            d = x - mu[:, None]
            tl.store(ob + p64 * so_p, (x * cm.sigmoid(d * d * k[:, None] + 0.5)).to(out_ptr.dtype.element_ty),
                     mask=m)
    tl.store(mean_ptr + b * C + c64, mu.to(mean_ptr.dtype.element_ty), mask=cmask)
    tl.store(k_ptr + b * C + c64, k.to(k_ptr.dtype.element_ty), mask=cmask)


@cm.kernel(key=["C", "P", "BLOCK_C", "BLOCK_P"])
def _simam_grad_input_kernel(g_ptr, x_ptr, mean_ptr, k_ptr, gx_ptr, C, P, n, n_cblk,
                             sg_b, sg_c, sg_p, sx_b, sx_c, sx_p, so_b, so_c, so_p,
                             ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
                             ONE_TILE: tl.constexpr):
    """Program (b, channel block): grad_x = g s + 2 (x - mu) (k gy - 4 k^2 A / n) - 2 k B / N."""
    pid = tl.program_id(0)
    b = (pid // n_cblk).to(tl.int64)
    c = (pid % n_cblk) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    c64 = c.to(tl.int64)
    pr = tl.arange(0, BLOCK_P)
    gb = g_ptr + b * sg_b + c64[:, None] * sg_c
    xb = x_ptr + b * sx_b + c64[:, None] * sx_c
    ob = gx_ptr + b * so_b + c64[:, None] * so_c
    mu = tl.load(mean_ptr + b * C + c64, mask=cmask, other=0).to(ACC)[:, None]
    k = tl.load(k_ptr + b * C + c64, mask=cmask, other=0).to(ACC)[:, None]
    if ONE_TILE:
        m = cmask[:, None] & (pr < P)[None, :]
        p64 = pr.to(tl.int64)[None, :]
        x = tl.load(xb + p64 * sx_p, mask=m, other=0).to(ACC)
        g = tl.load(gb + p64 * sg_p, mask=m, other=0).to(ACC)
        xm = x - mu
        s = cm.sigmoid(xm * xm * k + 0.5)
        gy = g * x * s * (1 - s)
        c1 = 4.0 * k * k * tl.sum(gy * xm * xm, axis=1)[:, None] / n
        c2 = 2.0 * k * tl.sum(gy * xm, axis=1)[:, None] / P
        tl.store(ob + p64 * so_p, (g * s + 2.0 * xm * (k * gy - c1) - c2).to(gx_ptr.dtype.element_ty), mask=m)
    else:
        sa = tl.full([BLOCK_C, BLOCK_P], 0, ACC)
        sb = tl.full([BLOCK_C, BLOCK_P], 0, ACC)
        for p0 in range(0, P, BLOCK_P):
            p = p0 + pr
            m = cmask[:, None] & (p < P)[None, :]
            p64 = p.to(tl.int64)[None, :]
            x = tl.load(xb + p64 * sx_p, mask=m, other=0).to(ACC)
            g = tl.load(gb + p64 * sg_p, mask=m, other=0).to(ACC)
            xm = x - mu
            s = cm.sigmoid(xm * xm * k + 0.5)
            gy = g * x * s * (1 - s)
            sa += gy * xm * xm
            sb += gy * xm
        c1 = 4.0 * k * k * tl.sum(sa, axis=1)[:, None] / n
        c2 = 2.0 * k * tl.sum(sb, axis=1)[:, None] / P
        for p0 in range(0, P, BLOCK_P):
            p = p0 + pr
            m = cmask[:, None] & (p < P)[None, :]
            p64 = p.to(tl.int64)[None, :]
            x = tl.load(xb + p64 * sx_p, mask=m, other=0).to(ACC)
            g = tl.load(gb + p64 * sg_p, mask=m, other=0).to(ACC)
            xm = x - mu
            s = cm.sigmoid(xm * xm * k + 0.5)
            gy = g * x * s * (1 - s)
            tl.store(ob + p64 * so_p, (g * s + 2.0 * xm * (k * gy - c1) - c2).to(gx_ptr.dtype.element_ty), mask=m)


def _lam_parts(e_lambda: float) -> tuple[float, float]:
    """e_lambda as fp32 hi + lo, so an fp64 kernel adds it to full precision from two fp32 scalar arguments."""
    hi = float(np.float32(e_lambda))
    return hi, float(np.float32(e_lambda - hi))


def _geometry(x: torch.Tensor, strides: tuple) -> tuple[int, int, int, bool]:
    """(BLOCK_C, BLOCK_P, channel blocks, ONE_TILE): a whole plane per tile when it fits the tile budget."""
    _, c, h, w = x.shape
    p = h * w
    c_fast, budget = cm.channels_fast(strides), cm.tile_elems()
    if cm.pow2(p) <= (budget // 16 if c_fast else budget):   # whole planes: as many channels as fit
        bp = cm.pow2(p)
        bc = min(cm.pow2(c), max(1, budget // bp), 64 if c_fast else budget)
        return bc, bp, cm.cdiv(c, bc), True
    bc, bp = cm.tile_cp(c, p, c_fast)
    return bc, bp, cm.cdiv(c, bc), False


def simam_gate(x: torch.Tensor, e_lambda: float) -> tuple:
    """-> (out like x, mean [B, C] acc, k [B, C] acc)."""
    b, c, h, w = x.shape
    out = empty_4d(x, x.shape)
    mean = torch.empty((b, c), dtype=acc_dtype(x.dtype), device=x.device)
    k = torch.empty_like(mean)
    if b * c == 0:
        return out, mean, k
    xv, sx = cm.pixel_view(x)
    _, so = cm.pixel_view(out)
    bc, bp, n_cblk, one = _geometry(x, sx)
    _simam_gate_kernel[cm.grid1(b * n_cblk)](
        xv, out, mean, k, c, h * w, h * w - 1, n_cblk, *_lam_parts(e_lambda), *sx, *so,
        ACC=cm.acc_tl(x.dtype), BLOCK_C=bc, BLOCK_P=bp, ONE_TILE=one)
    return out, mean, k


def simam_grad_input(grad_out: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """grad_x like x (grad_out read through its own strides)."""
    b, c, h, w = x.shape
    grad_x = empty_4d(x, x.shape)
    if grad_x.numel() == 0:
        return grad_x
    xv, sx = cm.pixel_view(x)
    gv, sg = cm.pixel_view(grad_out.to(x.dtype))
    _, so = cm.pixel_view(grad_x)
    bc, bp, n_cblk, one = _geometry(x, sx)
    _simam_grad_input_kernel[cm.grid1(b * n_cblk)](
        gv, xv, mean.to(acc_dtype(x.dtype)).contiguous(), k.to(acc_dtype(x.dtype)).contiguous(), grad_x, c, h * w,
        h * w - 1, n_cblk, *sg, *sx, *so, ACC=cm.acc_tl(x.dtype), BLOCK_C=bc, BLOCK_P=bp, ONE_TILE=one)
    return grad_x
