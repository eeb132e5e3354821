"""Triton dual_attention passes (math in fused_attn/backends/reference/dual_attention.py).

  dual_attention_reduce:      one pass over x: pooled[b, c] = mean_p x and logit[b, p] = sum_c ws[c] x
  dual_attention_grad_input:  one pass over (g, x): grad_x = g channel spatial + ws[c] grad_logit[b, p]
                              + grad_pooled[b, c] / HW, grad_ws[c] = sum_{b, p} x grad_logit
  and, of the apply_gates family, apply_gates_combine (x * channel * spatial: the shared pointwise kernel) and
  apply_gates_grad_gates (apply_gates' backward kernel without its grad_y store: reads g, x)

The reduce and grad_input programs own a pixel tile and loop over a chunk of channels (as apply_gates'
backward): the per-pixel sum over channels stays in registers, the per-channel sums over pixels are written
as per-tile partials [B, tiles, C] and added in a fixed order afterwards (deterministic).
"""
from __future__ import annotations

import torch
import triton.language as tl

from ..._layout import acc_dtype, empty_4d
from . import _common as cm
from .apply_gates import apply_gates_combine, apply_gates_grad_gates  # noqa: F401  (passes of this op)

OPS = {"dual_attention"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


@cm.kernel(key=["C", "P", "BLOCK_C", "BLOCK_P"])
def _dual_attention_reduce_kernel(x_ptr, ws_ptr, psum_ptr, plogit_ptr, C, P, c_per_chunk, n_chunk, n_pblk,
                                  sx_b, sx_c, sx_p, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Program (b, chunk k, tile t): psum[b, t, c] = sum_{p in t} x, plogit[b, k, p] = sum_{c in k} ws[c] x."""
    b, k, t = cm.program_coords(n_pblk, n_chunk)
    p = t * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    logit = tl.full([BLOCK_P], 0, ACC)
    c_start = k * c_per_chunk
    c_stop = tl.minimum(C, c_start + c_per_chunk)
    cr = tl.arange(0, BLOCK_C)
    xp = x_ptr + b * sx_b + (c_start + cr).to(tl.int64)[:, None] * sx_c + p.to(tl.int64)[None, :] * sx_p
    wp = ws_ptr + c_start + cr
    sp = psum_ptr + (b * n_pblk + t) * C + c_start + cr
    for c0 in range(c_start, c_stop, BLOCK_C):
        cmask = c0 + cr < c_stop
        x = tl.load(xp, mask=cmask[:, None] & pm[None, :], other=0).to(ACC)
        w = tl.load(wp, mask=cmask, other=0).to(ACC)
        logit += tl.sum(x * w[:, None], axis=0)
        tl.store(sp, tl.sum(x, axis=1), mask=cmask)
        xp += BLOCK_C * sx_c
        wp += BLOCK_C
        sp += BLOCK_C
    tl.store(plogit_ptr + (b * n_chunk + k) * P + p, logit, mask=pm)


def dual_attention_reduce(x: torch.Tensor, ws: torch.Tensor):
    """-> (pooled [B, C], logit [B, H, W]) in the accumulation dtype."""
    b, c, h, w = x.shape
    p = h * w
    acc = acc_dtype(x.dtype)
    if x.numel() == 0:
        return x.new_zeros((b, c), dtype=acc) / p, x.new_zeros((b, h, w), dtype=acc)  # mean of nothing: NaN
    x, sx = cm.pixel_view(x)
    bc, bp, n_pblk, c_per_chunk, n_chunk = cm.channel_chunks(b, c, p, cm.channels_fast(sx), x.device)
    psum = torch.empty((b, n_pblk, c), dtype=acc, device=x.device)
    plogit = torch.empty((b, n_chunk, p), dtype=acc, device=x.device)
    _dual_attention_reduce_kernel[cm.grid1(b * n_chunk * n_pblk)](
        x, ws.to(acc).contiguous(), psum, plogit, c, p, c_per_chunk, n_chunk, n_pblk, *sx,
        ACC=cm.acc_tl(x.dtype), BLOCK_C=bc, BLOCK_P=bp)
    return psum.sum(dim=1) / p, plogit.sum(dim=1).reshape(b, h, w)


@cm.kernel(key=["C", "P", "BLOCK_C", "BLOCK_P"])
def _dual_attention_grad_input_kernel(g_ptr, x_ptr, ch_ptr, sp_ptr, ws_ptr, gl_ptr, gp_ptr, gx_ptr, pws_ptr,
                                      C, P, c_per_chunk, n_chunk, n_pblk,
                                      sg_b, sg_c, sg_p, sx_b, sx_c, sx_p, so_b, so_c, so_p,
                                      ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Program (b, chunk k, tile t): grad_x = g ch sp + ws gl + gp / P, pws[b, t, c] = sum_{p in t} x gl."""
    b, k, t = cm.program_coords(n_pblk, n_chunk)
    p = t * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    sp = tl.load(sp_ptr + b * P + p, mask=pm, other=0).to(ACC)[None, :]
    gl = tl.load(gl_ptr + b * P + p, mask=pm, other=0).to(ACC)[None, :]
    c_start = k * c_per_chunk
    c_stop = tl.minimum(C, c_start + c_per_chunk)
    cr = tl.arange(0, BLOCK_C)
    c64 = (c_start + cr).to(tl.int64)[:, None]
    p64 = p.to(tl.int64)[None, :]
    gp = g_ptr + b * sg_b + c64 * sg_c + p64 * sg_p
    xp = x_ptr + b * sx_b + c64 * sx_c + p64 * sx_p
    op = gx_ptr + b * so_b + c64 * so_c + p64 * so_p
    cidx = c_start + cr
    for c0 in range(c_start, c_stop, BLOCK_C):
        cmask = c0 + cr < c_stop
        mask = cmask[:, None] & pm[None, :]
        g = tl.load(gp, mask=mask, other=0).to(ACC)
        x = tl.load(xp, mask=mask, other=0).to(ACC)
        ch = tl.load(ch_ptr + b * C + cidx, mask=cmask, other=0).to(ACC)[:, None]
        w = tl.load(ws_ptr + cidx, mask=cmask, other=0).to(ACC)[:, None]
        shift = tl.load(gp_ptr + b * C + cidx, mask=cmask, other=0).to(ACC)[:, None] / P
        tl.store(op, (g * ch * sp + w * gl + shift).to(gx_ptr.dtype.element_ty), mask=mask)
        tl.store(pws_ptr + (b * n_pblk + t) * C + cidx, tl.sum(x * gl, axis=1), mask=cmask)
        gp += BLOCK_C * sg_c
        xp += BLOCK_C * sx_c
        op += BLOCK_C * so_c
        cidx += BLOCK_C


def dual_attention_grad_input(grad_out: torch.Tensor, x: torch.Tensor, channel: torch.Tensor,
                              spatial: torch.Tensor, ws: torch.Tensor, grad_logit: torch.Tensor,
                              grad_pooled: torch.Tensor):
    """-> (grad_x like x, grad_ws [C] in the accumulation dtype)."""
    b, c, h, w = x.shape
    p = h * w
    acc = acc_dtype(x.dtype)
    grad_x = empty_4d(x, x.shape)
    if x.numel() == 0:
        return grad_x, x.new_zeros((c,), dtype=acc)
    x, sx = cm.pixel_view(x)
    g, sg = cm.pixel_view(grad_out)
    _, so = cm.pixel_view(grad_x)
    bc, bp, n_pblk, c_per_chunk, n_chunk = cm.channel_chunks(b, c, p, cm.channels_fast(sx), x.device)
    pws = torch.empty((b, n_pblk, c), dtype=acc, device=x.device)
    _dual_attention_grad_input_kernel[cm.grid1(b * n_chunk * n_pblk)](
        g, x, channel.to(acc).contiguous(), spatial.to(acc).reshape(b, p).contiguous(), ws.to(acc).contiguous(),
        grad_logit.to(acc).reshape(b, p).contiguous(), grad_pooled.to(acc).contiguous(), grad_x, pws,
        c, p, c_per_chunk, n_chunk, n_pblk, *sg, *sx, *so,
        ACC=cm.acc_tl(x.dtype), BLOCK_C=bc, BLOCK_P=bp)
    return grad_x, pws.sum(dim=(0, 1))
