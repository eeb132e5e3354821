"""Shared pieces of the Triton backend: layouts, block-size heuristics, the kernel decorator, and the one
pointwise kernel that several families use (out = residual + y * channel * spatial + shift / div).

Layouts. Every 4-D tensor is handed to a kernel as a [B, C, P = H*W] view with its own three strides
(`pixel_view`): NCHW (sP = 1) and channels_last (sC = 1) both merge H and W, so neither is copied; only a
tensor whose H and W cannot be merged (a slice, a permutation) is copied once into the layout that
fused_attn._layout picks for it. Triton specialises integer arguments equal to 1, so the unit stride is a
compile-time constant and loads along it are vectorised and coalesced whichever axis it is.

64-bit offsets: kernels cast program ids and index vectors to int64 before multiplying by a stride, so
tensors over 2^31 elements are addressed correctly (strides over 2^31 arrive as int64 by themselves).

Block sizes come from size-keyed heuristics (`tile_cp`, `split`). On a GPU each kernel is also autotuned
over num_warps (two configs, keyed on the sizes); under TRITON_INTERPRET=1 it is a plain jit kernel, since
the interpreter cannot run an autotuner with more than one config.
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import torch
import triton
import triton.language as tl

from ..._layout import acc_dtype, memory_format

# Knobs the tests lower to drive every multi-block path through the interpreter with tiny tensors:
# elements in one program's tile, and the number of programs a launch aims for (None = device default).
TILE_ELEMS: Optional[int] = None
TARGET_PROGRAMS: Optional[int] = None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def tile_elems() -> int:
    """Elements in one program's tile: 4096 on a GPU (16 KB of fp32 per operand, 32 / 16 values a thread
    at 4 / 8 warps), 64 Ki under the interpreter, where every program costs ~5-40 ms."""
    if TILE_ELEMS is not None:
        return TILE_ELEMS
    return 1 << 16 if interpreting() else 4096


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def target_programs(device: torch.device) -> int:
    """Programs a launch should have to fill the device: 4 waves of SMs on a GPU, 1 under the interpreter."""
    if TARGET_PROGRAMS is not None:
        return TARGET_PROGRAMS
    if device.type != "cuda":
        return 1
    return 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def acc_tl(dtype: torch.dtype):
    """Triton accumulation dtype (a constexpr argument): float64 for float64 tensors, else float32."""
    return tl.float64 if acc_dtype(dtype) == torch.float64 else tl.float32


def pixel_view(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(t, (sB, sC, sP)): a 4-D tensor seen as [B, C, H*W]. Copies only when H and W cannot be merged."""
    _, _, h, w = t.shape
    _, _, sh, sw = t.stride()
    if w == 1:
        sp = sh
    elif h == 1 or sh == sw * w:
        sp = sw
    else:
        return pixel_view(t.contiguous(memory_format=memory_format(t)))
    return t, (t.stride(0), t.stride(1), sp)


def channels_fast(strides: tuple[int, int, int]) -> bool:
    """True when channels are the unit-stride axis (channels_last), so tiles should be long along C."""
    return strides[1] == 1 and strides[2] != 1


def tile_cp(c: int, p: int, c_fast: bool, budget: Optional[int] = None) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_P) for a [C, P] tile of at most `budget` elements, long along the unit-stride axis:
    up to 64 channels (256 B of fp32) when channels are contiguous, up to 1024 pixels otherwise."""
    budget = budget or tile_elems()
    if c_fast:
        bc = min(pow2(c), 64, budget)
        return bc, min(pow2(p), max(1, budget // bc))
    bp = min(pow2(p), 1024, budget)
    return min(pow2(c), max(1, budget // bp)), bp


def split(n_other: int, n_blocks: int, device: torch.device) -> tuple[int, int]:
    """Split a loop of `n_blocks` blocks over programs so that n_other * splits reaches the device's target.
    -> (blocks per split, number of splits)."""
    want = max(1, min(n_blocks, cdiv(target_programs(device), max(n_other, 1))))
    per = cdiv(n_blocks, want)
    return per, cdiv(n_blocks, per)


def channel_chunks(b: int, c: int, p: int, c_fast: bool, device: torch.device) -> tuple[int, int, int, int, int]:
    """Geometry of a kernel whose programs each own a pixel tile and loop over a chunk of channels:
    (BLOCK_C, BLOCK_P, pixel tiles, channels per chunk, chunks); one chunk (all C) unless B x pixel tiles
    is too few to fill the device. Grid: B x chunks x pixel tiles."""
    bc, bp = tile_cp(c, p, c_fast)
    n_pblk = cdiv(p, bp)
    blocks_per_chunk, n_chunk = split(b * n_pblk, cdiv(c, bc), device)
    return bc, bp, n_pblk, blocks_per_chunk * bc, n_chunk


def kernel(key: list[str]):
    """@triton.jit, plus an autotune over num_warps (4, 8) keyed on `key` when running on a GPU."""
    def wrap(fn):
        jitted = triton.jit(fn)
        if interpreting():
            return jitted
        return triton.autotune([triton.Config({}, num_warps=w) for w in (4, 8)], key=key)(jitted)
    return wrap


def device_fn(fn):
    """@triton.jit for a device helper; a plain function under the interpreter, which otherwise re-patches
    triton.language on every call of a jit function (~1.6 ms each: most of an interpreted program's time).
    The body is the same Python either way."""
    return fn if interpreting() else triton.jit(fn)


@device_fn
def program_coords(n_inner, n_mid):
    """(b as int64, middle index, inner index) of this program in a 1-D grid of B x n_mid x n_inner programs."""
    pid = tl.program_id(0)
    return (pid // (n_inner * n_mid)).to(tl.int64), (pid // n_inner) % n_mid, pid % n_inner


@device_fn
def tile_offsets(c64, h, w, s_c, s_h, s_w):
    """int64 offsets of a [BLOCK_C, BLOCK_H, BLOCK_W] tile from channel, row and column index vectors."""
    return (c64[:, None, None] * s_c + h.to(tl.int64)[None, :, None] * s_h
            + w.to(tl.int64)[None, None, :] * s_w)


@device_fn
def sigmoid(x):
    """1 / (1 + exp(-x)) in x's dtype (tl.sigmoid, as a device_fn)."""
    return 1 / (1 + tl.exp(-x))


def grid1(n: int) -> tuple[int]:
    return (max(int(n), 1),)


# --------------------------------------------------------------------------------------- pointwise gate
@kernel(key=["C", "P", "BLOCK_C", "BLOCK_P"])
def _gate_kernel(out_ptr, y_ptr, ch_ptr, sp_ptr, res_ptr, shift_ptr, C, P, shift_div, n_cblk, n_pblk,
                 so_b, so_c, so_p, sy_b, sy_c, sy_p, sr_b, sr_c, sr_p,
                 HAS_Y: tl.constexpr, HAS_CH: tl.constexpr, HAS_SP: tl.constexpr, HAS_RES: tl.constexpr,
                 HAS_SHIFT: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """out[b, c, p] = res[b, c, p] + y[b, c, p] * ch[b, c] * sp[b, p] + shift[b, c] / shift_div.

    Every term optional (constexpr flags); ch, shift are contiguous [B, C], sp is contiguous [B, P].
    One [BLOCK_C, BLOCK_P] tile per program, computed in ACC, stored in out's dtype.
    """
    b, cb, pb = program_coords(n_pblk, n_cblk)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    cm = c < C
    pm = p < P
    mask = cm[:, None] & pm[None, :]
    c64 = c.to(tl.int64)[:, None]
    p64 = p.to(tl.int64)[None, :]
    val = tl.full([BLOCK_C, BLOCK_P], 0, ACC)
    if HAS_Y:
        val = tl.load(y_ptr + b * sy_b + c64 * sy_c + p64 * sy_p, mask=mask, other=0).to(ACC)
        if HAS_CH:
            val = val * tl.load(ch_ptr + b * C + c, mask=cm, other=0).to(ACC)[:, None]
        if HAS_SP:
            val = val * tl.load(sp_ptr + b * P + p, mask=pm, other=0).to(ACC)[None, :]
    if HAS_RES:
        val = tl.load(res_ptr + b * sr_b + c64 * sr_c + p64 * sr_p, mask=mask, other=0).to(ACC) + val
    if HAS_SHIFT:
        val = val + (tl.load(shift_ptr + b * C + c, mask=cm, other=0).to(ACC) / shift_div)[:, None]
    tl.store(out_ptr + b * so_b + c64 * so_c + p64 * so_p, val.to(out_ptr.dtype.element_ty), mask=mask)


def gate_pointwise(out: torch.Tensor, y: Optional[torch.Tensor] = None, channel: Optional[torch.Tensor] = None,
                   spatial: Optional[torch.Tensor] = None, residual: Optional[torch.Tensor] = None,
                   shift: Optional[torch.Tensor] = None, shift_div: int = 1) -> torch.Tensor:
    """Fill the 4-D `out` with residual + y * channel[b, c] * spatial[b, h, w] + shift[b, c] / shift_div.

    y, residual: 4-D, any layout (read through their strides); channel, shift: [B, C]; spatial: [B, H, W].
    The tile is long along out's unit-stride axis. Returns out.
    """
    b, c, h, w = out.shape
    p = h * w
    if out.numel() == 0:
        return out
    out_v, so = pixel_view(out)
    assert out_v is out, "out must have mergeable H, W strides"
    has_y, has_res = y is not None, residual is not None
    y, sy = pixel_view(y) if has_y else (out, so)
    residual, sr = pixel_view(residual) if has_res else (out, so)
    ch = channel.contiguous() if channel is not None else out
    sp = spatial.reshape(b, p).contiguous() if spatial is not None else out
    sh = shift.contiguous() if shift is not None else out
    bc, bp = tile_cp(c, p, channels_fast(so))
    n_cblk, n_pblk = cdiv(c, bc), cdiv(p, bp)
    _gate_kernel[grid1(b * n_cblk * n_pblk)](
        out, y, ch, sp, residual, sh, c, p, shift_div, n_cblk, n_pblk, *so, *sy, *sr,
        HAS_Y=has_y, HAS_CH=channel is not None, HAS_SP=spatial is not None, HAS_RES=has_res,
        HAS_SHIFT=shift is not None, ACC=acc_tl(out.dtype), BLOCK_C=bc, BLOCK_P=bp)
    return out
