"""The "cpu" backend (C++/OpenMP kernels, csrc/cpu, shims fused_attn/cpp) against the reference backend.

Kernel-level tests call the backend contract functions (fused_attn/cpp/<family>.py) and compare every output,
auxiliary ones included, with fused_attn/reference run on float64 copies of the same inputs; end-to-end tests go
through the public functions and the custom ops (gradcheck, opcheck). Also: layouts (NCHW, channels_last,
sliced, mixed), odd shapes, bitwise determinism across thread counts, and the backend selection rules.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fused_attn import _backend, _ext, ops
from fused_attn import functional as FA
from fused_attn._layout import memory_format
from fused_attn.reference import apply_gates as ref_gates
from fused_attn.reference import channel_pool as ref_pool
from fused_attn.reference import squeeze_excite as ref_se

import kernel_contracts as kc
from common import DTYPES, assert_close, rand

CPU_REASON = _backend.unavailable_reason("cpu", "channel_pool", "cpu", torch.float32)
needs_cpu = pytest.mark.skipif(CPU_REASON is not None, reason=f"cpu backend unavailable: {CPU_REASON}")

if CPU_REASON is None:
    from fused_attn.cpp import apply_gates as cpp_gates
    from fused_attn.cpp import channel_pool as cpp_pool
    from fused_attn.cpp import squeeze_excite as cpp_se

# (B, C, H, W): C = 1, 3, 16, 17; H, W = 1, 5, 7 x 9; B = 1.
SHAPES = [(2, 17, 7, 9), (1, 3, 5, 5), (1, 1, 1, 5), (3, 16, 1, 1), (2, 16, 5, 7)]
LAYOUTS = ["nchw", "channels_last", "sliced"]
# every kernel variant (max with no / plain-sum / Welford moments, moments without max), in several orders
STATS = [("max", "mean", "std"), ("mean", "max"), ("std", "mean"), ("max",), ("mean",)]


def check(actual, expected, dtype, what, like=None):
    assert_close(actual, expected, dtype, what)
    if like is not None:  # 4-D outputs follow the input's memory format (fused_attn/_layout.py)
        assert actual.is_contiguous(memory_format=memory_format(like)), f"{what}: layout of {tuple(actual.stride())}"


def kernel_grid(test):
    """Every dtype x layout x odd shape (needs the cpu backend)."""
    for name, values in (("dtype", DTYPES), ("layout", LAYOUTS), ("shape", SHAPES)):
        test = pytest.mark.parametrize(name, values)(test)
    return needs_cpu(test)


def groups_for(c):
    return 4 if c % 4 == 0 else (c if c > 3 else 1)


# --------------------------------------------------------------------------------------- kernels vs reference
@pytest.mark.parametrize("stats", STATS, ids=",".join)
@kernel_grid
def test_channel_pool(stats, shape, layout, dtype):
    kc.channel_pool(rand, check, stats, shape, layout, dtype)


@needs_cpu
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_channel_pool_ties_nan_and_large_mean(layout):
    kc.channel_pool_specials(rand, layout)


@kernel_grid
def test_squeeze_excite(shape, layout, dtype):
    kc.squeeze_excite(rand, check, shape, layout, dtype)


@kernel_grid
def test_dual_attention(shape, layout, dtype):
    kc.dual_attention(rand, check, shape, layout, dtype)


@needs_cpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("parts", list(itertools.product((False, True), repeat=3)),
                         ids=lambda p: "".join(n for n, on in zip("csr", p) if on) or "none")
def test_apply_gates(parts, layout, dtype):
    kc.apply_gates(rand, check, (2, 17, 7, 9), parts, layout, dtype)


@kernel_grid
def test_ema_strip_pool(shape, layout, dtype):
    kc.ema_strip_pool(rand, check, shape, layout, dtype)


@needs_cpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS + ["mixed"])
@pytest.mark.parametrize("shape", SHAPES)
def test_ema_core(shape, layout, dtype):
    kc.ema_core(rand, check, shape, groups_for(shape[1]), layout, dtype)


@needs_cpu
def test_gradient_in_another_layout():
    """A gradient whose layout differs from its forward input (autograd may hand over either) is accepted."""
    x = rand((2, 16, 5, 7), layout="channels_last")
    g = rand((2, 16, 5, 7))
    check(cpp_se.squeeze_excite_grad_gate(g, x), ref_se.squeeze_excite_grad_gate(g, x), torch.float32, "grad_gate")
    s = rand((2, 16), positive=True)
    check(cpp_gates.apply_gates_backward(g, x, s, None)[0], ref_gates.apply_gates_backward(g, x, s, None)[0],
          torch.float32, "grad_y", like=x)
    out, am, mom = cpp_pool.channel_pool_forward(x, ("max", "std"))
    gout = rand(out.shape)  # NCHW while out is channels_last
    check(cpp_pool.channel_pool_backward(gout, x, am, mom, ("max", "std")),
          ref_pool.channel_pool_backward(gout, x, am, mom, ("max", "std")), torch.float32, "grad_x", like=x)


# ------------------------------------------------------------------------------ public functions and custom ops
def public_cases(dtype=torch.float64, layout="nchw", shape=(2, 8, 5, 7)):
    return kc.public_cases(rand, dtype, layout, shape)


@needs_cpu
@pytest.mark.parametrize("case", range(len(kc.PUBLIC_CASES)), ids=kc.PUBLIC_CASES)
def test_gradcheck(case):
    name, fn, inputs = public_cases(torch.float64, shape=(2, 4, 2, 3))[case]
    inputs = [t.detach().requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(lambda *t: fn(t, "cpu"), inputs, eps=1e-6, atol=1e-7, rtol=1e-5), name


@needs_cpu
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", range(len(kc.PUBLIC_CASES)), ids=kc.PUBLIC_CASES)
def test_public_functions_match_reference(case, layout):
    """Forward and every input gradient through the custom ops; channels_last stays channels_last."""
    kc.public_function(rand, check, case, layout, torch.float32, "cpu")


@needs_cpu
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", range(len(kc.OPCHECK_CASES)), ids=kc.OPCHECK_CASES)
def test_opcheck(case, layout):
    op, args = kc.opcheck_cases(rand, layout, "cpu")[case]
    torch.library.opcheck(op, args)


@needs_cpu
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_opcheck_backward_ops(layout):
    x = rand((2, 8, 5, 6), layout=layout)
    out, argmax, moments = ops.channel_pool.channel_pool(x, "max,mean,std", "cpu")
    torch.library.opcheck(ops.channel_pool.channel_pool_backward,
                          (torch.randn_like(out), x, argmax, moments, "max,mean,std", "cpu"))
    torch.library.opcheck(ops.squeeze_excite.channel_squeeze_backward, (torch.randn(2, 8), x, "cpu"))
    torch.library.opcheck(ops.apply_gates.apply_gates_backward,
                          (torch.randn_like(x), x, torch.rand(2, 8), torch.rand(2, 5, 6), "cpu"))
    torch.library.opcheck(ops.ema.ema_strip_pool_backward, (torch.randn(2, 8, 11), x, "cpu"))
    hw, x2, gw, gb = torch.randn(2, 8, 11), torch.randn_like(x), torch.rand(4) + 0.5, torch.randn(4)
    _, mean, rstd = ops.ema.ema_core(x, hw, x2, gw, gb, 2, 1e-5, "cpu")
    torch.library.opcheck(ops.ema.ema_core_backward,
                          (torch.randn_like(x), x, hw, x2, gw, gb, mean, rstd, 2, 1e-5, "cpu"))
    w1, b1, w2, b2, ws, bs = torch.randn(3, 8), torch.randn(3), torch.randn(8, 3), torch.randn(8), torch.randn(8), \
        torch.randn(1)
    _, pooled, z1, z2, zs = ops.dual_attention.dual_attention(x, w1, b1, w2, b2, ws, bs, "relu", "sigmoid", "cpu")
    torch.library.opcheck(ops.dual_attention.dual_attention_backward,
                          (torch.randn_like(x), x, w1, b1, w2, b2, ws, bs, pooled, z1, z2, zs, "relu", "sigmoid",
                           "cpu"))


# ------------------------------------------------------------------------------------------------ determinism
@needs_cpu
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_bitwise_identical_across_thread_counts(layout):
    """Every output and gradient is the same bit for bit with 1, 2 and 3 threads (fixed work partitioning)."""
    def run():
        torch.manual_seed(1)
        results = []
        for name, fn, inputs in public_cases(torch.float32, layout, shape=(3, 32, 29, 31)):
            inputs = [t.detach().requires_grad_() for t in inputs]
            out = fn(inputs, "cpu")
            results += [out, *torch.autograd.grad(out, inputs, torch.randn_like(out))]
        return results
    threads = torch.get_num_threads()
    try:
        runs = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            runs.append(run())
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------- instruction sets
@needs_cpu
def test_cpu_isa_reported():
    """fused_attn_C::cpu_isa names the registered kernel variant; FUSED_ATTN_CPU_ISA=baseline forces the baseline."""
    isa = torch.ops.fused_attn_C.cpu_isa()
    assert isa in ("avx2", "baseline")
    if os.environ.get("FUSED_ATTN_CPU_ISA") == "baseline":
        assert isa == "baseline"


@needs_cpu
@pytest.mark.skipif(os.environ.get("FUSED_ATTN_CPU_ISA") == "baseline", reason="already the baseline run")
def test_baseline_isa_kernels():
    """The baseline-ISA kernels (what a CPU without AVX2 runs) pass a subset of this file in a subprocess."""
    if torch.ops.fused_attn_C.cpu_isa() != "avx2":
        pytest.skip("the baseline kernels are the ones this run already tests")
    select = ("cpu_isa or public_functions or bitwise or gradient_in_another or ties_and_nan "
              "or (float32 and (test_channel_pool or test_squeeze_excite or test_apply_gates or test_ema))")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", select],
                         env={**os.environ, "FUSED_ATTN_CPU_ISA": "baseline"}, cwd=Path(__file__).parent.parent,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


# -------------------------------------------------------------------------------------------- backend selection
@needs_cpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_auto_picks_cpu(dtype):
    for op in _backend.OPS:
        assert _backend.resolve(op, "auto", "cpu", dtype) == "cpu", op
    assert "cpu" in _backend.available_backends("cpu")


def test_cpu_backend_refuses_cuda_tensors():
    for op in _backend.OPS:
        with pytest.raises(_backend.BackendUnavailable, match="cpu"):
            _backend.resolve(op, "cpu", "cuda", torch.float32)


def test_cpu_backend_without_extension(monkeypatch):
    _backend.clear_caches()
    monkeypatch.setattr(_ext, "load_error", lambda: "not built (mocked)")
    try:
        for op in _backend.OPS:
            with pytest.raises(_backend.BackendUnavailable, match="not built \\(mocked\\)"):
                _backend.resolve(op, "cpu", "cpu", torch.float32)
            assert _backend.resolve(op, "auto", "cpu", torch.float32) == "reference"
        with pytest.raises(_backend.BackendUnavailable):
            FA.channel_pool(torch.randn(1, 3, 4, 4), backend="cpu")
    finally:
        monkeypatch.undo()
        _backend.clear_caches()
