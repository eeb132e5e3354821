"""Case grids, call lists and the kernel-contract tests of the CUDA kernels, shared by tests/test_cuda_backend.py
(the kernels on a GPU) and tests/test_cuda_emulated.py (the same kernels on the CPU emulator, tools/cuda_emu):
which shapes take the multi-tile reductions, both EMA tile paths, every dtype and layout."""
from __future__ import annotations

import itertools

import pytest
import torch

from fused_attn._layout import memory_format
from fused_attn.cpp import apply_gates as cpp_gates
from fused_attn.cpp import channel_pool as cpp_pool
from fused_attn.cpp import dual_attention as cpp_dual
from fused_attn.cpp import ema as cpp_ema
from fused_attn.cpp import squeeze_excite as cpp_se

import kernel_contracts as kc
from common import DTYPES

# (B, C, H, W): odd sizes, C = 1, H = W = 1; (2, 130, 9, 15) takes several column tiles and row chunks of the
# two-stage reductions in both layouts (fp32), (1, 8, 40, 40) several strip-pool row blocks.
SHAPES = [(3, 5, 7, 9), (1, 1, 1, 5), (3, 16, 1, 1), (2, 17, 7, 9), (2, 130, 9, 15), (1, 8, 40, 40)]
SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]
LAYOUTS = ["nchw", "channels_last"]
STATS = [("max", "mean", "std"), ("mean", "max"), ("std", "mean"), ("max",), ("mean",)]


def kernel_cases(full_dtypes=(torch.float32, torch.bfloat16)):
    """(dtype, layout, shape): every shape in float32 and bfloat16, four (odd sizes, C = 1, H = W = 1, multi-tile)
    in float64 and float16; the sliced layout in float32 on two shapes (its copy does not depend on the dtype)."""
    cases = []
    for dt in DTYPES:
        shapes = SHAPES if dt in full_dtypes else SHAPES[:3] + SHAPES[4:5]
        cases += [pytest.param(dt, lay, sh, id=f"{str(dt)[6:]}-{lay}-{'x'.join(map(str, sh))}")
                  for lay in LAYOUTS for sh in shapes]
    cases += [pytest.param(torch.float32, "sliced", sh, id=f"float32-sliced-{sid}")
              for sh, sid in zip(SHAPES[:4:3], SHAPE_IDS[:4:3])]
    return cases



def kernel_grid(test):
    return pytest.mark.parametrize("dtype,layout,shape", kernel_cases())(test)


# every stat subset (each kernel variant) on every kernel case
POOL_CASES = [pytest.param(st, *c.values, id=f"{','.join(st)}-{c.id}") for c in kernel_cases() for st in STATS]

PARTS = list(itertools.product((False, True), repeat=3))
GATE_CASES = [pytest.param(sh, parts, lay, dt, id="-".join(["x".join(map(str, sh)),
                                                              "".join(n for n, on in zip("csr", parts) if on) or "none",
                                                              lay, str(dt)[6:]]))
              for sh in [(2, 17, 7, 9), (2, 130, 9, 15)] for dt in DTYPES
              for parts in (PARTS if dt in (torch.float32, torch.bfloat16) else PARTS[::3])
              for lay in LAYOUTS + (["sliced"] if dt == torch.float32 else [])]


# (shape, groups): cg = 1, 4, 5, 8 (several tiles per image); (1, 8, 40, 40) with one group does not fit the
# shared-memory tile cache in fp32 / fp64 (the L2 re-read path); cg = 300 > 256 takes the channels_last fallback
# reduction.
EMA_CASES = [((3, 5, 7, 9), 1), ((1, 1, 1, 5), 1), ((3, 16, 1, 1), 4), ((2, 16, 5, 7), 2), ((2, 24, 9, 6), 3),
             ((1, 8, 40, 40), 1), ((1, 300, 3, 5), 1)]


EMA_PARAMS = [pytest.param(sh, g, lay, dt, id=f"{'x'.join(map(str, sh))}-g{g}-{lay}-{str(dt)[6:]}")
              for sh, g in EMA_CASES for dt in DTYPES
              for lay in LAYOUTS + (["sliced", "mixed"] if dt == torch.float32 else [])]  # copies: any dtype



class KernelContracts:
    """The kernel-contract tests (tests/kernel_contracts.py) on the grids above. A test file subclasses it as
    `TestKernelContracts`, with its device's `rand` and `check` as static methods (and its skip marks)."""
    rand = check = None

    @pytest.mark.parametrize("stats,dtype,layout,shape", POOL_CASES)
    def test_channel_pool(self, stats, dtype, layout, shape):
        kc.channel_pool(self.rand, self.check, stats, shape, layout, dtype)

    @pytest.mark.parametrize("layout", LAYOUTS)
    def test_channel_pool_ties_nan_and_large_mean(self, layout):
        kc.channel_pool_specials(self.rand, layout)

    @kernel_grid
    def test_squeeze_excite(self, dtype, layout, shape):
        kc.squeeze_excite(self.rand, self.check, shape, layout, dtype)

    @kernel_grid
    def test_dual_attention(self, dtype, layout, shape):
        kc.dual_attention(self.rand, self.check, shape, layout, dtype)

    @pytest.mark.parametrize("shape,parts,layout,dtype", GATE_CASES)
    def test_apply_gates(self, shape, parts, layout, dtype):  # the spatial gate in another dtype
        kc.apply_gates(self.rand, self.check, shape, parts, layout, dtype, spatial_dtype=torch.float32)

    @kernel_grid
    def test_ema_strip_pool(self, dtype, layout, shape):
        kc.ema_strip_pool(self.rand, self.check, shape, layout, dtype)

    @pytest.mark.parametrize("shape,groups,layout,dtype", EMA_PARAMS)
    def test_ema_core(self, shape, groups, layout, dtype):
        kc.ema_core(self.rand, self.check, shape, groups, layout, dtype)

def kernel_calls(x, g, s, gp, ch, sp, hw, x2, gw, gb):
    """Every CUDA kernel op once (forward and backward) on the given inputs -> flat list of results."""
    out, am, mom = cpp_pool.channel_pool_forward(x, ("max", "mean", "std"))
    res = [out, am, mom, cpp_pool.channel_pool_backward(g[:, :3].contiguous(memory_format=memory_format(x)), x, am,
                                                        mom, ("max", "mean", "std"))]
    res += [cpp_se.channel_squeeze_forward(x), cpp_se.channel_squeeze_backward(gp, x),
            cpp_se.channel_scale_forward(x, s), cpp_se.squeeze_excite_grad_gate(g, x),
            cpp_se.squeeze_excite_grad_input(g, s, gp, x)]
    res += [cpp_gates.apply_gates_forward(x, ch, sp, g), *cpp_gates.apply_gates_backward(g, x, ch, sp)]
    pooled = cpp_ema.ema_strip_pool_forward(x)
    res += [pooled, cpp_ema.ema_strip_pool_backward(pooled, x)]
    o, mean, rstd = cpp_ema.ema_core_forward(x, hw, x2, gw, gb, 2, 1e-5)
    res += [o, mean, rstd, *cpp_ema.ema_core_backward(g, x, hw, x2, gw, gb, mean, rstd, 2, 1e-5)]
    ws = s[0]
    res += [*cpp_dual.dual_attention_reduce(x, ws), *cpp_dual.dual_attention_grad_gates(g, x, ch, sp),
            *cpp_dual.dual_attention_grad_input(g, x, ch, sp, ws, sp, gp)]
    return res


def kernel_inputs(rand, layout, shape=(3, 16, 29, 31)):
    """The inputs of kernel_calls, drawn by the test file's `rand`."""
    b, c, h, w = shape
    return [rand(shape, layout=layout), rand(shape, layout=layout), rand((b, c), positive=True), rand((b, c)),
            rand((b, c), positive=True), rand((b, h, w), positive=True), rand((b, c, h + w)),
            rand(shape, layout=layout),
            rand((c // 2,), positive=True), rand((c // 2,))]
