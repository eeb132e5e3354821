"""Triton apply_gates: out = residual + y * channel[b, c] * spatial[b, h, w] (every part optional).

Forward: the shared pointwise kernel (_common.gate_pointwise): reads y (+ residual), writes out.
Backward: one pass over (g, y) that writes grad_y and deterministic partial sums for both gate gradients:
  grad_y       = g * channel * spatial
  grad_channel = sum_hw g * y * spatial    per-pixel-tile partials [B, n_pblk, C], then summed over tiles
  grad_spatial = sum_c  g * y * channel    register-local over the program's channel chunk -> [B, n_chunk, P]
Each program owns a pixel tile and a chunk of channels that it loops over; on a big map there is one
chunk, so grad_spatial is complete in registers and only grad_channel has a (small) second stage.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton.language as tl

from ..._layout import acc_dtype, empty_4d
from . import _common as cm

OPS = {"apply_gates"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


def apply_gates_combine(y: torch.Tensor, channel: Optional[torch.Tensor], spatial: Optional[torch.Tensor],
                        residual: Optional[torch.Tensor]) -> torch.Tensor:
    """channel [B, C], spatial [B, H, W], residual like y (each optional) -> out like y."""
    return cm.gate_pointwise(empty_4d(y, y.shape), y, channel, spatial, residual)


@cm.kernel(key=["C", "P", "BLOCK_C", "BLOCK_P"])
def _apply_gates_grads_kernel(g_ptr, y_ptr, ch_ptr, sp_ptr, gy_ptr, gch_ptr, gsp_ptr,
                              C, P, c_per_chunk, n_chunk, n_pblk,
                              sg_b, sg_c, sg_p, sy_b, sy_c, sy_p, so_b, so_c, so_p,
                              HAS_CH: tl.constexpr, HAS_SP: tl.constexpr, HAS_GY: tl.constexpr, ACC: tl.constexpr,
                              BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """Program (b, channel chunk k, pixel tile t), looping over the chunk's channel blocks:
    grad_y = g * ch * sp (stored when HAS_GY), gch[b, t, c] = sum_{p in t} g y sp,
    gsp[b, k, p] = sum_{c in k} g y ch."""
    b, k, t = cm.program_coords(n_pblk, n_chunk)
    p = t * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < P
    p64 = p.to(tl.int64)[None, :]
    sp = tl.full([BLOCK_P], 1, ACC)
    if HAS_SP:
        sp = tl.load(sp_ptr + b * P + p, mask=pm, other=0).to(ACC)
    gsp = tl.full([BLOCK_P], 0, ACC)
    c_start = k * c_per_chunk
    c_stop = tl.minimum(C, c_start + c_per_chunk)
    cr = tl.arange(0, BLOCK_C)
    c64 = (c_start + cr).to(tl.int64)
    # pointer tiles at the chunk's first channel block, advanced by BLOCK_C channels a step
    gp = g_ptr + b * sg_b + c64[:, None] * sg_c + p64 * sg_p
    yp = y_ptr + b * sy_b + c64[:, None] * sy_c + p64 * sy_p
    op = gy_ptr + b * so_b + c64[:, None] * so_c + p64 * so_p
    chp = ch_ptr + b * C + c64
    gchp = gch_ptr + (b * n_pblk + t) * C + c64
    for c0 in range(c_start, c_stop, BLOCK_C):
        cmask = c0 + cr < c_stop
        mask = cmask[:, None] & pm[None, :]
        g = tl.load(gp, mask=mask, other=0).to(ACC)
        y = tl.load(yp, mask=mask, other=0).to(ACC)
        gy = g
        gyy = g * y
        if HAS_CH:
            ch = tl.load(chp, mask=cmask, other=0).to(ACC)[:, None]
            gy = gy * ch
            gsp += tl.sum(gyy * ch, axis=0)
            tl.store(gchp, tl.sum(gyy * sp[None, :], axis=1), mask=cmask)
        else:
            gsp += tl.sum(gyy, axis=0)
        if HAS_SP:
            gy = gy * sp[None, :]
        if HAS_GY:
            tl.store(op, gy.to(gy_ptr.dtype.element_ty), mask=mask)
        gp += BLOCK_C * sg_c
        yp += BLOCK_C * sy_c
        op += BLOCK_C * so_c
        chp += BLOCK_C
        gchp += BLOCK_C
    if HAS_SP:
        tl.store(gsp_ptr + (b * n_chunk + k) * P + p, gsp, mask=pm)


def _finish(partial: torch.Tensor, dtype: torch.dtype, shape) -> torch.Tensor:
    """Second stage: sum the [B, n, X] partials over n (deterministic), cast, reshape."""
    total = partial[:, 0] if partial.shape[1] == 1 else partial.sum(dim=1)
    return total.to(dtype).reshape(shape).contiguous()


def _grads(grad_out: torch.Tensor, y: torch.Tensor, channel: Optional[torch.Tensor],
           spatial: Optional[torch.Tensor], write_grad_y: bool):
    b, c, h, w = y.shape
    p = h * w
    grad_y = empty_4d(y, y.shape) if write_grad_y else None
    if y.numel() == 0:
                      return (grad_y, torch.zeros_like(channel) if channel is not None else y.new_empty((0,)),
                      torch.zeros_like(spatial) if spatial is not None else y.new_empty((0,)))
    y, sy = cm.pixel_view(y)
    g, sg = cm.pixel_view(grad_out)
    so = cm.pixel_view(grad_y)[1] if write_grad_y else sy
    bc, bp, n_pblk, c_per_chunk, n_chunk = cm.channel_chunks(b, c, p, cm.channels_fast(sy), y.device)
    acc = acc_dtype(y.dtype)
    out = grad_y if write_grad_y else y  # a placeholder pointer when nothing is written
    gch = torch.empty((b, n_pblk, c), dtype=acc, device=y.device) if channel is not None else out
    gsp = torch.empty((b, n_chunk, p), dtype=acc, device=y.device) if spatial is not None else out
    ch = channel.contiguous() if channel is not None else y
    sp = spatial.reshape(b, p).contiguous() if spatial is not None else y
    _apply_gates_grads_kernel[cm.grid1(b * n_chunk * n_pblk)](
        g, y, ch, sp, out, gch, gsp,
        c, p, c_per_chunk, n_chunk, n_pblk, *sg, *sy, *so,
        HAS_CH=channel is not None, HAS_SP=spatial is not None, HAS_GY=write_grad_y, ACC=cm.acc_tl(y.dtype),
        BLOCK_C=bc, BLOCK_P=bp)
    # distinct empty tensors for absent gates: custom-op outputs must not alias each other
    grad_channel = _finish(gch, channel.dtype, (b, c)) if channel is not None else y.new_empty((0,))
    grad_spatial = _finish(gsp, spatial.dtype, (b, h, w)) if spatial is not None else y.new_empty((0,))
    return grad_y, grad_channel, grad_spatial


def apply_gates_grads(grad_out: torch.Tensor, y: torch.Tensor, channel: Optional[torch.Tensor],
                      spatial: Optional[torch.Tensor]):
    """-> (grad_y like y, grad_channel [B, C] or empty, grad_spatial [B, H, W] or empty)."""
    return _grads(grad_out, y, channel, spatial, True)


def apply_gates_grad_gates(grad_out: torch.Tensor, y: torch.Tensor, channel: torch.Tensor, spatial: torch.Tensor):
    """(grad_channel, grad_spatial) of apply_gates_grads without writing grad_y: one pass reading (g, y)."""
    return _grads(grad_out, y, channel, spatial, False)[1:]
