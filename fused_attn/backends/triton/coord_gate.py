"""Triton kernels of coord_gate (math: fused_attn/backends/reference/coord_gate.py).

  combine  one pass over x: each program owns a [BLOCK_C, BLOCK_H, BLOCK_W] tile of whole rows and writes
           (x * a_w) * a_h, or x * gate(a_h + a_w) (+ x)
  grads    one pass over (grad_out, x): each program (b, channel block, row chunk) loops over the chunk's row
           blocks, writes grad_x, grad_a_h of its rows (complete: whole rows) and its per-chunk column partials
           of grad_a_w, which are summed in chunk order afterwards (deterministic; one chunk on small maps)
Tensors are read through their four strides (NCHW, channels_last, slices: no copies); gates are contiguous
[B, C, H] / [B, C, W] in any floating dtype, converted to the accumulation dtype on load.
"""
from __future__ import annotations

import torch
import triton.language as tl

from ..._layout import acc_dtype, empty_4d
from . import _common as cm

OPS = {"coord_gate"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}
_MODES = {"none": 0, "sigmoid": 1, "hardsigmoid": 2}
# hardsigmoid rounds as torch's kernel for the tensor's device: its CPU kernel divides by 6 (MODE 2: CPU tensors,
# the interpreter), its CUDA kernel multiplies by the float32 1/6 in every dtype (MODE 3; 3e-8 relative in float64)
_CUDA_HARDSIGMOID = 3


def _mode(gate: str, x) -> int:
    mode = _MODES[gate]
    return _CUDA_HARDSIGMOID if mode == 2 and x.is_cuda else mode


@cm.device_fn
def _gate_value(z, MODE: tl.constexpr):
    if MODE == 1:
        return cm.sigmoid(z)
    if MODE == 3:
        return tl.minimum(tl.maximum(z + 3, 0), 6) * 0.1666666716337204
    return tl.minimum(tl.maximum(z + 3, 0), 6) / 6


@cm.device_fn
def _gate_slope(z, s, MODE: tl.constexpr):
    """gate'(z) (s = gate(z)); hardsigmoid: torch's float32 1/6 strictly inside (-3, 3)."""
    if MODE == 1:
        return s * (1 - s)
    return tl.where((z > -3) & (z < 3), 0.1666666716337204, 0.0).to(s.dtype)


@cm.kernel(key=["C", "H", "W", "BLOCK_C", "BLOCK_H", "BLOCK_W"])
def _coord_gate_combine_kernel(x_ptr, ah_ptr, aw_ptr, out_ptr, C, H, W, n_cblk, n_hblk,
                               sx_b, sx_c, sx_h, sx_w, so_b, so_c, so_h, so_w,
                               MODE: tl.constexpr, SKIP: tl.constexpr, ACC: tl.constexpr,
                               BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Program (b, channel block, row block): out = (x * a_w) * a_h or x * gate(a_h + a_w), + x when SKIP."""
    b, cb, hb = cm.program_coords(n_hblk, n_cblk)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    h = hb * BLOCK_H + tl.arange(0, BLOCK_H)
    w = tl.arange(0, BLOCK_W)
    cmask, hm, wm = c < C, h < H, w < W
    c64 = c.to(tl.int64)
    mask = cmask[:, None, None] & hm[None, :, None] & wm[None, None, :]
    x = tl.load(x_ptr + b * sx_b + cm.tile_offsets(c64, h, w, sx_c, sx_h, sx_w), mask=mask, other=0).to(ACC)
    ah = tl.load(ah_ptr + (b * C + c64[:, None]) * H + h[None, :], mask=cmask[:, None] & hm[None, :],
                 other=0).to(ACC)[:, :, None]
    aw = tl.load(aw_ptr + (b * C + c64[:, None]) * W + w[None, :], mask=cmask[:, None] & wm[None, :],
                 other=0).to(ACC)[:, None, :]
    if MODE == 0:
        out = (x * aw) * ah
    else:
        out = x * _gate_value(ah + aw, MODE)
    if SKIP:
        out = out + x
    tl.store(out_ptr + b * so_b + cm.tile_offsets(c64, h, w, so_c, so_h, so_w), out.to(out_ptr.dtype.element_ty),
             mask=mask)


@cm.kernel(key=["C", "H", "W", "BLOCK_C", "BLOCK_H", "BLOCK_W"])
def _coord_gate_grads_kernel(g_ptr, x_ptr, ah_ptr, aw_ptr, gx_ptr, gh_ptr, gw_ptr, C, H, W, rows_per_chunk, n_chunk,
                             n_cblk, sg_b, sg_c, sg_h, sg_w, sx_b, sx_c, sx_h, sx_w, so_b, so_c, so_h, so_w,
                             MODE: tl.constexpr, SKIP: tl.constexpr, ACC: tl.constexpr,
                             BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Program (b, channel block, row chunk k): grad_x of its rows, gh[b, c, h] = sum_w dh (complete rows),
    gw[b, k, c, w] = sum_{h in chunk} dw (partials, acc)."""
    b, cb, k = cm.program_coords(n_chunk, n_cblk)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    c64 = c.to(tl.int64)
    w = tl.arange(0, BLOCK_W)
    wm = w < W
    aw = tl.load(aw_ptr + (b * C + c64[:, None]) * W + w[None, :], mask=cmask[:, None] & wm[None, :],
                 other=0).to(ACC)[:, None, :]
    colacc = tl.full([BLOCK_C, BLOCK_W], 0, ACC)
    h_start = k * rows_per_chunk
    h_stop = tl.minimum(H, h_start + rows_per_chunk)
    hr = tl.arange(0, BLOCK_H)
    for h0 in range(h_start, h_stop, BLOCK_H):
        h = h0 + hr
        hm = h < h_stop
        mask = cmask[:, None, None] & hm[None, :, None] & wm[None, None, :]
        g = tl.load(g_ptr + b * sg_b + cm.tile_offsets(c64, h, w, sg_c, sg_h, sg_w), mask=mask, other=0).to(ACC)
        x = tl.load(x_ptr + b * sx_b + cm.tile_offsets(c64, h, w, sx_c, sx_h, sx_w), mask=mask, other=0).to(ACC)
        hmask2 = cmask[:, None] & hm[None, :]
        ah = tl.load(ah_ptr + (b * C + c64[:, None]) * H + h[None, :], mask=hmask2, other=0).to(ACC)[:, :, None]
        e = g * x
        if MODE == 0:
            gx = (g * ah) * aw
            dh = e * aw
            dw = e * ah
        else:
            z = ah + aw
            s = _gate_value(z, MODE)
            gx = g * s
            dh = e * _gate_slope(z, s, MODE)
            dw = dh
        if SKIP:
            gx = gx + g
        tl.store(gx_ptr + b * so_b + cm.tile_offsets(c64, h, w, so_c, so_h, so_w), gx.to(gx_ptr.dtype.element_ty),
                 mask=mask)
        dh = tl.where(mask, dh, 0)
        dw = tl.where(mask, dw, 0)
        tl.store(gh_ptr + (b * C + c64[:, None]) * H + h[None, :], tl.sum(dh, axis=2).to(gh_ptr.dtype.element_ty),
                 mask=hmask2)
        colacc += tl.sum(dw, axis=1)
    tl.store(gw_ptr + ((b * n_chunk + k) * C + c64[:, None]) * W + w[None, :], colacc,
             mask=cmask[:, None] & wm[None, :])


def _tile(c: int, h: int, w: int, c_fast: bool) -> tuple[int, int, int]:
    budget = cm.tile_elems()
    bw = cm.pow2(w)
    if c_fast:
        bc = min(cm.pow2(c), 64, max(1, budget // bw))
        return bc, min(cm.pow2(h), max(1, budget // (bc * bw))), bw
    bh = min(cm.pow2(h), max(1, budget // bw))
    return min(cm.pow2(c), max(1, budget // (bh * bw))), bh, bw


def _gates(x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor):
    b, c, h, w = x.shape
    return a_h.reshape(b, c, h).contiguous(), a_w.reshape(b, c, w).contiguous()


def coord_gate_combine(x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor, gate: str, skip: bool) -> torch.Tensor:
    """x [B, C, H, W], a_h [B, C, H], a_w [B, C, W] -> out like x."""
    b, c, h, w = x.shape
    out = empty_4d(x, x.shape)
    if out.numel() == 0:
        return out
    ah, aw = _gates(x, a_h, a_w)
    bc, bh, bw = _tile(c, h, w, cm.channels_fast(cm.pixel_view(x)[1]))
    n_cblk, n_hblk = cm.cdiv(c, bc), cm.cdiv(h, bh)
    _coord_gate_combine_kernel[cm.grid1(b * n_cblk * n_hblk)](
        x, ah, aw, out, c, h, w, n_cblk, n_hblk, *x.stride(), *out.stride(),
        MODE=_mode(gate, x), SKIP=bool(skip), ACC=cm.acc_tl(x.dtype), BLOCK_C=bc, BLOCK_H=bh, BLOCK_W=bw)
    return out


def coord_gate_grads(grad_out: torch.Tensor, x: torch.Tensor, a_h: torch.Tensor, a_w: torch.Tensor, gate: str,
                     skip: bool):
    """-> (grad_x like x, grad_a_h [B, C, H] in a_h's dtype, grad_a_w [B, C, W] in a_w's dtype)."""
    b, c, h, w = x.shape
    grad_x = empty_4d(x, x.shape)
    acc = acc_dtype(x.dtype)
    if x.numel() == 0:
        return grad_x, torch.zeros((b, c, h), dtype=a_h.dtype, device=x.device), \
            torch.zeros((b, c, w), dtype=a_w.dtype, device=x.device)
    ah, aw = _gates(x, a_h, a_w)
    bc, bh, bw = _tile(c, h, w, cm.channels_fast(cm.pixel_view(x)[1]))
    n_cblk = cm.cdiv(c, bc)
    blocks_per_chunk, n_chunk = cm.split(b * n_cblk, cm.cdiv(h, bh), x.device)
    gh = torch.empty((b, c, h), dtype=acc, device=x.device)
    gw = torch.empty((b, n_chunk, c, w), dtype=acc, device=x.device)
    _coord_gate_grads_kernel[cm.grid1(b * n_cblk * n_chunk)](
        grad_out, x, ah, aw, grad_x, gh, gw, c, h, w, blocks_per_chunk * bh, n_chunk, n_cblk,
        *grad_out.stride(), *x.stride(), *grad_x.stride(),
        MODE=_mode(gate, x), SKIP=bool(skip), ACC=cm.acc_tl(x.dtype), BLOCK_C=bc, BLOCK_H=bh, BLOCK_W=bw)
    grad_w = gw[:, 0] if n_chunk == 1 else gw.sum(dim=1)
    return grad_x, gh.to(a_h.dtype).contiguous(), grad_w.to(a_w.dtype).contiguous()
