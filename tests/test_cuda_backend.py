"""The "cuda" backend (CUDA kernels csrc/cuda, shims fused_attn/backends/native) against the reference, on a GPU.

Every test is marked `cuda` (skipped without a device, tests/conftest.py). Every kernel pass on the sample
registry's "cuda" grid (fused_attn/testing/registry.py: NCHW, channels_last, sliced and mixed layouts, odd shapes,
shapes that take the multi-tile / multi-chunk reductions and both EMA tile paths) on CUDA tensors against the
reference pass on float64 copies, every output compared; the public functions, the custom ops (gradcheck,
opcheck) and the modules; CUDA-graph capture and replay, a non-default stream, bitwise determinism, and
> 2^31-element tensors (64-bit indexing, marked slow).
"""
from __future__ import annotations

import backend_contracts as bc
import pytest
import torch

from fused_attn import dispatch
from fused_attn import functional as FA
from fused_attn.testing.cases import DTYPES, check

pytestmark = pytest.mark.cuda

DEV = "cuda"
CUDA_REASON = dispatch.unavailable_reason("cuda", "channel_pool", DEV, torch.float32)
needs_cuda_backend = pytest.mark.skipif(CUDA_REASON is not None, reason=f"cuda backend unavailable: {CUDA_REASON}")
native = bc.backend_module("native")
LAYOUTS = ("nchw", "channels_last")


@pytest.fixture(autouse=True)
def _no_tf32():
    """Exact float32 convolutions / matmuls: the module tests compare two paths that share them."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_backend_serves_every_op():
    """On a GPU machine the extension must have been built with the CUDA kernels (a failed build fails here)."""
    assert CUDA_REASON is None, CUDA_REASON
    for op in dispatch.OPS:
        for dtype in DTYPES:
            assert "cuda" in dispatch.serving(op, DEV, dtype), (op, dtype)
        assert dispatch.resolve(op, "auto", DEV, torch.float32) == dispatch.auto_order(op, DEV)[0]


# --------------------------------------------------------------------------------------- kernels vs reference
@needs_cuda_backend
@pytest.mark.parametrize("name,case", bc.pass_params("cuda"))
def test_pass_matches_reference(name, case):
    bc.check_pass(native, name, case, DEV)


@needs_cuda_backend
@pytest.mark.parametrize("layout", LAYOUTS)
def test_channel_pool_ties_nan_and_large_mean(layout):
    bc.check_channel_pool_specials(native, layout, DEV)


# Each C++ error path is its own test (and bench/gpu.sh runs them alone, under cuda-gdb when one crashes): on the
# first H200 run (2026-12-04) the ema_core one killed its process with a segfault instead of raising.
ERROR_CASES = {
    "ema_core_groups": ("divisible by groups", lambda x: native("ema_core").ema_core_combine(
        x, torch.randn(2, 8, 6, device=DEV), x, torch.rand(3, device=DEV), torch.rand(3, device=DEV), 3, 1e-5)),
    "gate_on_cpu": ("CUDA tensor", lambda x: native("apply_gates").apply_gates_combine(x, torch.rand(2, 8), None,
                                                                                        None)),
    "unknown_stat": ("unknown channel_pool stat", lambda x: torch.ops.fused_attn_C.channel_pool_reduce(x,
                                                                                                      "max,median")),
    "int_dtype": ("dtype", lambda x: torch.ops.fused_attn_C.channel_squeeze_reduce(x.to(torch.int32))),
}


@needs_cuda_backend
@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_name_the_problem(case):
    match, call = ERROR_CASES[case]
    x = torch.randn(2, 8, 3, 3, device=DEV)
    with pytest.raises(RuntimeError, match=match):
        call(x)


# ------------------------------------------------------------------------------ public functions and custom ops
@needs_cuda_backend
@pytest.mark.parametrize("op,case", bc.public_params("gradcheck", variants_per_op=1))
def test_gradcheck_fp64(op, case):
    bc.check_gradcheck(op, case, "cuda", DEV)


@needs_cuda_backend
@pytest.mark.parametrize("op,case", bc.public_params("gradcheck", variants_per_op=1))
def test_gradgradcheck_fp64(op, case):
    bc.check_gradgradcheck(op, case, "cuda", DEV)


@needs_cuda_backend
@pytest.mark.parametrize("op,case", bc.public_params("public", variants_per_op=2))
def test_public_function_matches_reference(op, case):
    """Forward and every input gradient through the custom ops vs the reference backend on float64 copies."""
    bc.check_public(op, case, "cuda", DEV)


@needs_cuda_backend
@pytest.mark.parametrize("op,case", bc.public_params("opcheck", variants_per_op=2))
def test_opcheck(op, case):
    bc.check_opcheck(op, case, "cuda", DEV)


# ---------------------------------------------------------------------------- determinism, graphs, streams
@needs_cuda_backend
@pytest.mark.parametrize("layout", LAYOUTS)
def test_bitwise_deterministic_under_use_deterministic_algorithms(layout):
    """Every pass's outputs are the same bit for bit run to run; with use_deterministic_algorithms(True) (which
    also fills new tensors with NaN: a kernel that left an output element unwritten would show here)."""
    calls = bc.pass_calls(native, layout, device=DEV)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first, again = bc.run_calls(calls), bc.run_calls(calls)
    finally:
        torch.use_deterministic_algorithms(before)
    for (what, a), (_, b) in zip(first, again):
        assert torch.equal(a, b), f"{what} differs between runs"
        assert not a.is_floating_point() or not a.isnan().any(), f"{what} has NaN (an unwritten element?)"


@needs_cuda_backend
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_graph_capture_and_replay(layout):
    """Every pass captured in a CUDA graph; replays on new input data equal eager runs bit for bit."""
    static = bc.pass_calls(native, layout, (2, 16, 9, 11), DEV)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            bc.run_calls(static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = bc.run_calls(static)
    for _ in range(2):
        fresh = bc.pass_calls(native, layout, (2, 16, 9, 11), DEV)
        bc.copy_arguments(static, fresh)
        graph.replay()
        torch.cuda.synchronize()
        for (what, a), (_, b) in zip(captured, bc.run_calls(fresh)):
            assert torch.equal(a, b), f"{what} differs after replay"


@needs_cuda_backend
@pytest.mark.parametrize("layout", LAYOUTS)
def test_runs_on_the_current_stream(layout):
    """On a side stream held back by a sleep, the kernels must wait for the input written on that stream: a kernel
    launched on any other stream would read the stale input."""
    calls = bc.pass_calls(native, layout, (2, 16, 9, 11), DEV)
    fresh = bc.pass_calls(native, layout, (2, 16, 9, 11), DEV)
    expected = bc.run_calls(fresh)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)  # ~50 ms of GPU time on this stream only
        bc.copy_arguments(calls, fresh)
        got = bc.run_calls(calls)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    for (what, a), (_, b) in zip(got, expected):
        assert torch.equal(a, b), f"{what}: not ordered after the side stream's writes"


@needs_cuda_backend
def test_second_device_guard():
    """Tensors on cuda:1 (when present) run on cuda:1."""
    if torch.cuda.device_count() < 2:
        pytest.skip("one GPU")
    x = torch.randn(2, 8, 5, 5, device="cuda:1")
    check(native("squeeze_excite").channel_squeeze_reduce(x), x.double().mean(dim=(2, 3)), torch.float32)


# ----------------------------------------------------------------------------------------------------- modules


@needs_cuda_backend
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", bc.MODULES)
def test_module_cuda_matches_reference(kind, layout):
    """Each module with backend="cuda" vs the same module (same parameters) with backend="reference": forward,
    input gradient and every parameter gradient, float32 on the GPU."""
    bc.module_matches_reference(kind, layout, "cuda", device=DEV)


# -------------------------------------------------------------------------------------------------- 64-bit
@needs_cuda_backend
@pytest.mark.slow
def test_more_than_2_31_elements():
    """64-bit offsets: a 2.15e9-element fp16 tensor (4.3 GB); the last channels are checked against PyTorch."""
    b, c, h, w = 2, 2048, 724, 725
    assert b * c * h * w > 2 ** 31
    x = torch.randn(b, c, h, w, device=DEV, dtype=torch.float16)
    ch = torch.rand(b, c, device=DEV, dtype=torch.float16)
    sp = torch.rand(b, h, w, device=DEV, dtype=torch.float16)
    last = x[1, -4:].float()
    out = FA.apply_gates(x, ch, sp, backend="cuda")
    half = torch.float16
    check(out[1, -4:], (last * ch[1, -4:, None, None].float() * sp[1].float()).half(), half, "apply_gates")
    del out
    check(FA.channel_squeeze(x, backend="cuda")[1, -4:], last.mean(dim=(1, 2)).half(), half, "channel_squeeze")
    pooled = FA.channel_pool(x, ("max", "mean"), backend="cuda")
    tail = x[1, :, -2:].float()
    check(pooled[1, :, -2:], torch.stack([tail.amax(0), tail.mean(0)]).half(), half, "channel_pool")
