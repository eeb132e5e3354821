"""The "cpu" backend (C++/OpenMP kernels, csrc/cpu, shims fused_attn/backends/native) against the reference.

Every kernel pass on the registry's "cpu" grid (fused_attn/testing/registry.py: every dtype, NCHW, channels_last,
sliced and mixed layouts, odd shapes, every kernel variant) against the reference pass on float64 copies; the
public functions through the custom ops; special values; bitwise determinism across thread counts; the
baseline-ISA kernels; the backend selection rules. gradcheck and opcheck of the cpu backend: tests/test_custom_ops.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import backend_contracts as bc
import pytest
import torch

from fused_attn import _ext, dispatch
from fused_attn import functional as FA
from fused_attn.testing import registry
from fused_attn.testing.cases import DTYPES, Case

CPU_REASON = dispatch.unavailable_reason("cpu", "channel_pool", "cpu", torch.float32)
needs_cpu = pytest.mark.skipif(CPU_REASON is not None, reason=f"cpu backend unavailable: {CPU_REASON}")
native = bc.backend_module("native")


@needs_cpu
@pytest.mark.parametrize("name,case", bc.pass_params("cpu"))
def test_pass_matches_reference(name, case):
    bc.check_pass(native, name, case)


@needs_cpu
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_channel_pool_ties_nan_and_large_mean(layout):
    bc.check_channel_pool_specials(native, layout)


@needs_cpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stats", [("max", "mean", "std"), ("max", "mean"), ("mean",), ("std", "max"), ("max",)])
@pytest.mark.parametrize("hw", [(23, 24), (37, 41)])
def test_channel_pool_wide_images(hw, stats, dtype):
    """NCHW images of 512 pixels and more take the register-column path (with std) or the channel-group path
    (without): every dtype and stat subset against the reference on float64 copies, argmax exactly; 23 x 24 = 552
    and 37 x 41 = 1517 pixels leave tails past the last full vector and the last 1024-pixel block, and 19
    channels a partial channel group."""
    x = torch.randn(3, 19, *hw).to(dtype)
    out, argmax, moments = native("channel_pool").channel_pool_reduce(x, stats)
    rout, rargmax, rmoments = bc.reference_module("channel_pool").channel_pool_reduce(x.double(), stats)
    bc.check(out, rout, dtype, f"channel_pool {stats}")
    if "max" in stats:
        assert torch.equal(argmax, rargmax)
    if "std" in stats:
        bc.check(moments, rmoments, dtype, "moments")


@needs_cpu
@pytest.mark.parametrize("op,case", bc.public_params("public", variants_per_op=2))
def test_public_function_matches_reference(op, case):
    """Forward and every input gradient through the custom ops; channels_last stays channels_last."""
    bc.check_public(op, case, "cpu")


@needs_cpu
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "sliced"])
@pytest.mark.parametrize("op", list(registry.OPS))
def test_expanded_gradients(op, layout):
    """A stride-0 grad_out (from `.sum()`) gives the reference's gradients; squeeze_excite does not read it
    (its broadcast-scalar path), the others read it once."""
    bc.check_public(op, Case((3, 8, 5, 7), torch.float32, layout, registry.OPS[op].variants[0]), "cpu",
                    expanded_grad=True)


# ------------------------------------------------------------------------------------------------ determinism
@needs_cpu
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_bitwise_identical_across_thread_counts(layout):
    """Every output and gradient is the same bit for bit with 1, 2 and 3 threads (fixed work partitioning)."""
    def run():
        torch.manual_seed(1)
        results = []
        for op, info in registry.OPS.items():
            sample = registry.sample(op, Case((3, 32, 33, 34), torch.float32, layout, info.variants[0]))
            out, grads, _ = sample.run("cpu")
            results += [out, *grads]
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


@needs_cpu
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(5, 24, 9, 11), (6, 75, 3, 5)])
@pytest.mark.parametrize("combine,variant", [("squeeze_excite_combine", "silu,sigmoid"),
                                             ("eca_combine", "k5,zero,sigmoid"),
                                             ("eca_combine", "k7,circular,sigmoid"),
                                             ("ese_combine", "hardsigmoid,nobias")])
def test_wave_forwards_change_no_bit(monkeypatch, layout, dtype, shape, combine, variant):
    """squeeze_excite_combine's, eca_combine's and ese_combine's cache-sized waves only schedule: one sample per wave
    (FUSED_ATTN_CPU_WAVE_BYTES=1), a few, or the whole batch in one, with the output written by streaming stores
    (FUSED_ATTN_CPU_STREAM_BYTES=1) or through the cache, give the same values as each other and as
    channel_squeeze_reduce's pooling, and match the reference. The waves change which samples share the MLP's
    register tiles (4 samples x 2 rows, edges by smaller tiles); (6, 75, 3, 5) has row and sample edges and dot
    products with a tail (75, 18), and channels_last rows of 75 channels start at every 16-byte misalignment."""
    sample_bytes = shape[1] * shape[2] * shape[3] * torch.empty((), dtype=dtype).element_size()
    case = Case(shape, dtype, layout, variant)
    args = registry.pass_args(combine, case)
    runs = []
    for wave in ("1", str(2 * sample_bytes), str(1 << 40)):
        for stream in ("1", str(1 << 60)):
            monkeypatch.setenv("FUSED_ATTN_CPU_WAVE_BYTES", wave)
            monkeypatch.setenv("FUSED_ATTN_CPU_STREAM_BYTES", stream)
            runs.append(getattr(native("squeeze_excite"), combine)(*args))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)
    assert torch.equal(runs[0][1], native("squeeze_excite").channel_squeeze_reduce(args[0]))
    ref = getattr(bc.reference_module("squeeze_excite"), combine)(*args)
    for got, want in zip(runs[0], ref):
        bc.check(got, want, dtype, combine)


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
    select = "cpu_isa or public_function or bitwise or ties_and_nan or (test_pass and float32)"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", __file__,
                          "-k", select],
                         env={**os.environ, "FUSED_ATTN_CPU_ISA": "baseline"}, cwd=Path(__file__).parent.parent,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


# -------------------------------------------------------------------------------------------- backend selection
@needs_cpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_auto_picks_cpu(dtype):
    for op in dispatch.OPS:
        assert dispatch.resolve(op, "auto", "cpu", dtype) == "cpu", op
    assert "cpu" in dispatch.available_backends("cpu")


def test_cpu_backend_refuses_cuda_tensors():
    for op in dispatch.OPS:
        with pytest.raises(dispatch.BackendUnavailable, match="cpu"):
            dispatch.resolve(op, "cpu", "cuda", torch.float32)


def test_cpu_backend_without_extension(monkeypatch):
    dispatch.clear_caches()
    monkeypatch.setattr(_ext, "load_error", lambda: "not built (mocked)")
    try:
        for op in dispatch.OPS:
            with pytest.raises(dispatch.BackendUnavailable, match="not built \\(mocked\\)"):
                dispatch.resolve(op, "cpu", "cpu", torch.float32)
            assert dispatch.resolve(op, "auto", "cpu", torch.float32) == "reference"
        with pytest.raises(dispatch.BackendUnavailable):
            FA.channel_pool(torch.randn(1, 3, 4, 4), backend="cpu")
    finally:
        monkeypatch.undo()
        dispatch.clear_caches()
