"""Triton kernels of the EMA cross-spatial core (math: fused_attn/backends/reference/ema_core.py).

Per (b, group) the core works on a [cg, H, W] slab; N = H * W, c indexes the group's cg channels.
  forward   u = x sig(hw_h) sig(hw_w); GroupNorm(cg, cg) statistics of u; x1 = uhat gn_w + gn_b;
            a1 = softmax(gn_b); a2 = softmax(mean_p x2); w = sum_c a1 x2 + a2 x1; out = x sig(w)
  backward  the reference's formulas (see its docstring), with dw = sig(w)(1 - sig(w)) sum_c g x.

One program per (b, group) owns the whole slab, so every reduction over the slab (GroupNorm statistics,
mean_p x2, the softmax backward sums, the strip sums of grad_hw) stays in registers and nothing but the
outputs (and a [B*G, cg] partial for the GroupNorm parameter gradients) is written. The slab is walked in
[pow2(cg), BLOCK_H, pow2(W)] tiles (whole rows, so the row sums of grad_hw complete in a tile and the
column sums accumulate in registers): forward 2 passes (statistics; output), backward 3 passes (mean_p x2;
dw and its sums; gradients). Each pass after the first re-reads the slab the same program has just read:
from L1/L2, not HBM (a slab is cg * N elements, e.g. 8 x 56 x 56 fp32 = 100 KB).
"""
from __future__ import annotations

import numpy as np
import torch
import triton.language as tl

from ..._layout import acc_dtype, empty_4d
from . import _common as cm

OPS = {"ema_core"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


# --------------------------------------------------------------------------------------------------- core
@cm.device_fn
def _softmax(v, mask):
    """softmax over a 1-D vector, masked lanes excluded (weight 0)."""
    v = tl.where(mask, v, float("-inf"))
    e = tl.where(mask, tl.exp(v - tl.max(v, axis=0)), 0)
    return e / tl.sum(e, axis=0)


@cm.device_fn
def _sum_hw(t):
    """[BLOCK_C, BLOCK_H, BLOCK_W] -> [BLOCK_C]."""
    return tl.sum(tl.sum(t, axis=2), axis=1)


@cm.device_fn
def _core_tile(xp, x2p, hwp, mask, hmask, sig_w, mean, rstd, gw, gb, a1, a2, ACC: tl.constexpr):
    """One [C, BLOCK_H, W] tile of the forward at pointer tiles xp, x2p (and hwp, the rows' hw gates):
    (x, x2, sig_h, u, uhat, w) with u = x sig_h sig_w, uhat = (u - mean) rstd,
    w[h, w] = sum_c a1 x2 + a2 (uhat gn_w + gn_b)."""
    x = tl.load(xp, mask=mask, other=0).to(ACC)
    x2 = tl.load(x2p, mask=mask, other=0).to(ACC)
    sig_h = cm.sigmoid(tl.load(hwp, mask=hmask, other=0).to(ACC))
    u = x * sig_h[:, :, None] * sig_w[:, None, :]
    uhat = (u - mean[:, None, None]) * rstd[:, None, None]
    x1 = uhat * gw[:, None, None] + gb[:, None, None]
    wv = tl.sum(a1[:, None, None] * x2 + a2[:, None, None] * x1, axis=0)
    return x, x2, sig_h, u, uhat, wv


@cm.device_fn
def _core_dw(gp, xp, x2p, hwp, mask, hmask, sig_w, mean, rstd, gw, gb, a1, a2, ACC: tl.constexpr):
    """A backward tile: the forward tile plus g, sig(w) and dw = sig(w) (1 - sig(w)) sum_c g x ([1, BH, BW])."""
    x, x2, sig_h, u, uhat, wv = _core_tile(xp, x2p, hwp, mask, hmask, sig_w, mean, rstd, gw, gb, a1, a2, ACC)
    g = tl.load(gp, mask=mask, other=0).to(ACC)
    sg = cm.sigmoid(wv)
    dw = (sg * (1 - sg) * tl.sum(g * x, axis=0))[None, :, :]
    return g, x2, sig_h, u, uhat, sg, dw


@cm.device_fn
def _core_setup(hw_ptr, gw_ptr, gb_ptr, x2_ptr, CG, H, W, sh_c, sh_l, s2_c, s2_h, s2_w,
                ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Per-slab constants (pointers already at the slab): channel mask and int64 offsets, row and column
    index vectors, sig_w [C, W], gn_w, gn_b, a1 = softmax(gn_b) and a2 = softmax(mean_p x2) (one pass over x2)."""
    c = tl.arange(0, BLOCK_C)
    hr = tl.arange(0, BLOCK_H)
    w = tl.arange(0, BLOCK_W)
    cmask = c < CG
    c64 = c.to(tl.int64)
    cw_mask = cmask[:, None, None] & (w < W)[None, None, :]
    sig_w = cm.sigmoid(tl.load(hw_ptr + c64[:, None] * sh_c + (H + w)[None, :].to(tl.int64) * sh_l,
                               mask=cmask[:, None] & (w < W)[None, :], other=0).to(ACC))
    gw = tl.load(gw_ptr + c, mask=cmask, other=0).to(ACC)
    gb = tl.load(gb_ptr + c, mask=cmask, other=0).to(ACC)
    s2 = tl.full([BLOCK_C], 0, ACC)
    x2p = x2_ptr + cm.tile_offsets(c64, hr, w, s2_c, s2_h, s2_w)
    for h0 in range(0, H, BLOCK_H):
        mask = cw_mask & (h0 + hr < H)[None, :, None]
        s2 += _sum_hw(tl.load(x2p, mask=mask, other=0).to(ACC))
        x2p += BLOCK_H * s2_h
    return cmask, c64, hr, w, cw_mask, sig_w, gw, gb, _softmax(gb, cmask), _softmax(s2 / (H * W), cmask)


@cm.kernel(key=["CG", "H", "W", "BLOCK_C", "BLOCK_H", "BLOCK_W"])
def _ema_core_combine_kernel(x_ptr, hw_ptr, x2_ptr, gw_ptr, gb_ptr, out_ptr, mean_ptr, rstd_ptr,
                             CG, G, H, W, eps_hi, eps_lo,
                             sx_b, sx_c, sx_h, sx_w, s2_b, s2_c, s2_h, s2_w, so_b, so_c, so_h, so_w, sh_b, sh_c, sh_l,
                             ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Program (b, group): mean/rstd of u per channel (pass 1, Chan-merged per tile), then
    out = x * sigmoid(sum_c a1 x2 + a2 x1) (pass 2); stores out and mean, rstd [B, C]."""
    b, _, grp = cm.program_coords(G, 1)
    ch0 = grp.to(tl.int64) * CG   # first channel of the group
    x_ptr += b * sx_b + ch0 * sx_c
    x2_ptr += b * s2_b + ch0 * s2_c
    out_ptr += b * so_b + ch0 * so_c
    hw_ptr += b * sh_b + ch0 * sh_c
    cmask, c64, hr, w, cw_mask, sig_w, gw, gb, a1, a2 = _core_setup(
        hw_ptr, gw_ptr, gb_ptr, x2_ptr, CG, H, W, sh_c, sh_l, s2_c, s2_h, s2_w, ACC, BLOCK_C, BLOCK_H, BLOCK_W)
    x_tile = x_ptr + cm.tile_offsets(c64, hr, w, sx_c, sx_h, sx_w)      # pointer tiles of rows [0, BLOCK_H)
    hw_rows = hw_ptr + c64[:, None] * sh_c + hr[None, :] * sh_l
    # pass 1: GroupNorm statistics of u, tile by tile (tile mean and M2 two-pass, merged with Chan's update)
    mean = tl.full([BLOCK_C], 0, ACC)
    m2 = tl.full([BLOCK_C], 0, ACC)
    n = tl.full([BLOCK_C], 0, ACC)
    xp, hwp = x_tile, hw_rows
    for h0 in range(0, H, BLOCK_H):
        hm = h0 + hr < H
        mask = cw_mask & hm[None, :, None]
        x = tl.load(xp, mask=mask, other=0).to(ACC)
        sig_h = cm.sigmoid(tl.load(hwp, mask=cmask[:, None] & hm[None, :], other=0).to(ACC))
        u = x * sig_h[:, :, None] * sig_w[:, None, :]
        nb = tl.sum(tl.where(hm, 1.0, 0.0).to(ACC), axis=0) * W
        bmean = _sum_hw(u) / nb
        d = tl.where(mask, u - bmean[:, None, None], 0)
        delta = bmean - mean
        n_new = n + nb
        mean = mean + delta * (nb / n_new)
        m2 = m2 + _sum_hw(d * d) + delta * delta * (n * nb / n_new)
        n = n_new
        xp += BLOCK_H * sx_h
        hwp += BLOCK_H * sh_l
    rstd = 1.0 / tl.sqrt(m2 / (H * W) + eps_hi + eps_lo)
    # pass 2: attention weights and output
    xp, x2p, hwp = x_tile, x2_ptr + cm.tile_offsets(c64, hr, w, s2_c, s2_h, s2_w), hw_rows
    op = out_ptr + cm.tile_offsets(c64, hr, w, so_c, so_h, so_w)
    for h0 in range(0, H, BLOCK_H):
        hm = h0 + hr < H
        mask = cw_mask & hm[None, :, None]
        x, x2, sig_h, u, uhat, wv = _core_tile(xp, x2p, hwp, mask, cmask[:, None] & hm[None, :], sig_w,
                                               mean, rstd, gw, gb, a1, a2, ACC)
        tl.store(op, (x * cm.sigmoid(wv)[None, :, :]).to(out_ptr.dtype.element_ty), mask=mask)
        xp += BLOCK_H * sx_h
        x2p += BLOCK_H * s2_h
        hwp += BLOCK_H * sh_l
        op += BLOCK_H * so_h
    stat = b * G * CG + ch0 + c64
    tl.store(mean_ptr + stat, mean, mask=cmask)
    tl.store(rstd_ptr + stat, rstd, mask=cmask)


@cm.kernel(key=["CG", "H", "W", "BLOCK_C", "BLOCK_H", "BLOCK_W"])
def _ema_core_grads_kernel(g_ptr, x_ptr, hw_ptr, x2_ptr, gw_ptr, gb_ptr, mean_ptr, rstd_ptr,
                           gx_ptr, ghw_ptr, gx2_ptr, ggw_ptr, ggb_ptr, CG, G, H, W,
                           sg_b, sg_c, sg_h, sg_w, sx_b, sx_c, sx_h, sx_w, s2_b, s2_c, s2_h, s2_w,
                           sgx_b, sgx_c, sgx_h, sgx_w, sgx2_b, sgx2_c, sgx2_h, sgx2_w, sh_b, sh_c, sh_l,
                           ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Program (b, group), three passes over the slab:
    A (in _core_setup) a2 = softmax(mean_p x2);  B: dw = sig(w)(1 - sig(w)) sum_c g x and its sums
    S = sum_p dw, Sx2[c] = sum_p dw x2, Su[c] = sum_p dw uhat;  C: grad_x2 = a1 dw + a2 (da2 - <a2, da2>) / N,
    du = rstd (d - mean_p d - uhat mean_p(d uhat)) with d = a2 gn_w dw, grad_x = g sig(w) + du sig_h sig_w,
    grad_hw rows / columns = (1 - sig) * strip sums of du u. Also per-slab gn_w / gn_b gradient partials."""
    b, _, grp = cm.program_coords(G, 1)
    ch0 = grp.to(tl.int64) * CG
    g_ptr += b * sg_b + ch0 * sg_c
    x_ptr += b * sx_b + ch0 * sx_c
    x2_ptr += b * s2_b + ch0 * s2_c
    gx_ptr += b * sgx_b + ch0 * sgx_c
    gx2_ptr += b * sgx2_b + ch0 * sgx2_c
    hw_ptr += b * sh_b + ch0 * sh_c
    ghw_ptr += (b * G * CG + ch0) * (H + W)
    cmask, c64, hr, w, cw_mask, sig_w, gw, gb, a1, a2 = _core_setup(
        hw_ptr, gw_ptr, gb_ptr, x2_ptr, CG, H, W, sh_c, sh_l, s2_c, s2_h, s2_w, ACC, BLOCK_C, BLOCK_H, BLOCK_W)
    stat = b * G * CG + ch0 + c64
    mean = tl.load(mean_ptr + stat, mask=cmask, other=0).to(ACC)
    rstd = tl.load(rstd_ptr + stat, mask=cmask, other=0).to(ACC)
    g_tile = g_ptr + cm.tile_offsets(c64, hr, w, sg_c, sg_h, sg_w)
    x_tile = x_ptr + cm.tile_offsets(c64, hr, w, sx_c, sx_h, sx_w)
    x2_tile = x2_ptr + cm.tile_offsets(c64, hr, w, s2_c, s2_h, s2_w)
    hw_rows = hw_ptr + c64[:, None] * sh_c + hr[None, :] * sh_l
    # pass B
    s_dw = tl.full([BLOCK_C], 0, ACC)   # every lane holds the same sum_p dw
    s_x2 = tl.full([BLOCK_C], 0, ACC)
    s_u = tl.full([BLOCK_C], 0, ACC)
    gp, xp, x2p, hwp = g_tile, x_tile, x2_tile, hw_rows
    for h0 in range(0, H, BLOCK_H):
        hm = h0 + hr < H
        mask = cw_mask & hm[None, :, None]
        g, x2, sig_h, u, uhat, sg, dw = _core_dw(gp, xp, x2p, hwp, mask, cmask[:, None] & hm[None, :], sig_w,
                                                 mean, rstd, gw, gb, a1, a2, ACC)
        s_dw += tl.sum(tl.sum(dw, axis=2), axis=1)
        s_x2 += _sum_hw(dw * x2)
        s_u += _sum_hw(tl.where(mask, dw * uhat, 0))
        gp += BLOCK_H * sg_h
        xp += BLOCK_H * sx_h
        x2p += BLOCK_H * s2_h
        hwp += BLOCK_H * sh_l
    n_pix = H * W
    da1 = s_x2
    da2 = gw * s_u + gb * s_dw
    dm2 = a2 * (da2 - tl.sum(a2 * da2, axis=0)) / n_pix
    tl.store(ggw_ptr + stat, a2 * s_u, mask=cmask)
    tl.store(ggb_ptr + stat, a2 * s_dw + a1 * (da1 - tl.sum(a1 * da1, axis=0)), mask=cmask)
    coef = a2 * gw
    md = coef * s_dw / n_pix
    mdu = coef * s_u / n_pix
    # pass C
    colacc = tl.full([BLOCK_C, BLOCK_W], 0, ACC)
    gp, xp, x2p, hwp = g_tile, x_tile, x2_tile, hw_rows
    gxp = gx_ptr + cm.tile_offsets(c64, hr, w, sgx_c, sgx_h, sgx_w)
    gx2p = gx2_ptr + cm.tile_offsets(c64, hr, w, sgx2_c, sgx2_h, sgx2_w)
    ghwp = ghw_ptr + c64[:, None] * (H + W) + hr[None, :]
    for h0 in range(0, H, BLOCK_H):
        hm = h0 + hr < H
        mask = cw_mask & hm[None, :, None]
        hmask = cmask[:, None] & hm[None, :]
        g, x2, sig_h, u, uhat, sg, dw = _core_dw(gp, xp, x2p, hwp, mask, hmask, sig_w,
                                                 mean, rstd, gw, gb, a1, a2, ACC)
        gx2 = a1[:, None, None] * dw + dm2[:, None, None]
        tl.store(gx2p, gx2.to(gx2_ptr.dtype.element_ty), mask=mask)
        du = rstd[:, None, None] * (coef[:, None, None] * dw - md[:, None, None] - uhat * mdu[:, None, None])
        gx = g * sg[None, :, :] + du * sig_h[:, :, None] * sig_w[:, None, :]
        tl.store(gxp, gx.to(gx_ptr.dtype.element_ty), mask=mask)
        duu = tl.where(mask, du * u, 0)
        tl.store(ghwp, ((1 - sig_h) * tl.sum(duu, axis=2)).to(ghw_ptr.dtype.element_ty), mask=hmask)
        colacc += tl.sum(duu, axis=1)
        gp += BLOCK_H * sg_h
        xp += BLOCK_H * sx_h
        x2p += BLOCK_H * s2_h
        hwp += BLOCK_H * sh_l
        gxp += BLOCK_H * sgx_h
        gx2p += BLOCK_H * sgx2_h
        ghwp += BLOCK_H
    tl.store(ghw_ptr + c64[:, None] * (H + W) + H + w[None, :], ((1 - sig_w) * colacc).to(ghw_ptr.dtype.element_ty),
             mask=cmask[:, None] & (w < W)[None, :])


def _core_blocks(cg: int, h: int, w: int, budget: int) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_H, BLOCK_W): all cg channels and whole rows; as many rows as fit in `budget`."""
    bc, bw = cm.pow2(cg), cm.pow2(w)
    return bc, min(cm.pow2(h), max(1, budget // (bc * bw))), bw


def _eps_parts(eps: float) -> tuple[float, float]:
    """eps as fp32 hi + lo, so an fp64 kernel adds eps to full precision from two fp32 scalar arguments."""
    hi = float(np.float32(eps))
    return hi, float(np.float32(eps - hi))


def ema_core_combine(x, hw, x2, gn_weight, gn_bias, groups: int, eps: float):
    """-> (out like x, mean [B, C], rstd [B, C]); mean/rstd of u per channel, in the accumulation dtype."""
    b, c, h, w = x.shape
    cg = c // groups
    acc = acc_dtype(x.dtype)
    out = empty_4d(x, x.shape)
    mean = torch.empty((b, c), dtype=acc, device=x.device)
    rstd = torch.empty_like(mean)
    if x.numel() == 0:
        return out, mean.fill_(float("nan")), rstd.fill_(float("nan"))
    bc, bh, bw = _core_blocks(cg, h, w, cm.tile_elems())
    _ema_core_combine_kernel[cm.grid1(b * groups)](
        x, hw, x2, gn_weight.contiguous(), gn_bias.contiguous(), out, mean, rstd, cg, groups, h, w, *_eps_parts(eps),
        *x.stride(), *x2.stride(), *out.stride(), *hw.stride(),
        ACC=cm.acc_tl(x.dtype), BLOCK_C=bc, BLOCK_H=bh, BLOCK_W=bw)
    return out, mean, rstd


def ema_core_grads(grad_out, x, hw, x2, gn_weight, gn_bias, mean, rstd, groups: int, eps: float):
    """-> (grad_x like x, grad_hw [B, C, H + W], grad_x2 like x2, grad_gn_weight [cg], grad_gn_bias [cg])."""
    b, c, h, w = x.shape
    cg = c // groups
    acc = acc_dtype(x.dtype)
    grad_x = empty_4d(x, x.shape)
    grad_x2 = empty_4d(x2, x2.shape)
    grad_hw = torch.empty((b, c, h + w), dtype=hw.dtype, device=x.device)
    ggw = torch.zeros((b * groups, cg), dtype=acc, device=x.device)
    ggb = torch.zeros_like(ggw)
    if x.numel() > 0:
        bc, bh, bw = _core_blocks(cg, h, w, max(1, cm.tile_elems() // 2))
        _ema_core_grads_kernel[cm.grid1(b * groups)](
            grad_out, x, hw, x2, gn_weight.contiguous(), gn_bias.contiguous(), mean.contiguous(), rstd.contiguous(),
            grad_x, grad_hw, grad_x2, ggw, ggb, cg, groups, h, w,
            *grad_out.stride(), *x.stride(), *x2.stride(), *grad_x.stride(), *grad_x2.stride(), *hw.stride(),
            ACC=cm.acc_tl(x.dtype), BLOCK_C=bc, BLOCK_H=bh, BLOCK_W=bw)
    else:
        grad_hw.zero_()
    return (grad_x, grad_hw, grad_x2, ggw.sum(dim=0).to(gn_weight.dtype), ggb.sum(dim=0).to(gn_bias.dtype))
