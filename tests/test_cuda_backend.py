"""The "cuda" backend (CUDA kernels csrc/cuda, shims fused_attn/cpp) against the reference backend, on a GPU.

Every test is marked `cuda` (skipped without a device, tests/conftest.py). Kernel-level tests call the backend
contract functions (fused_attn/cpp/<family>.py) on CUDA tensors and compare every output, auxiliary ones
included, with fused_attn/reference run on float64 copies of the same inputs; end-to-end tests go through the
public functions, the custom ops (gradcheck, opcheck) and the modules. Also: layouts (NCHW, channels_last, sliced,
mixed), odd shapes (C = 1, H = W = 1, 3 x 5 x 7 x 9), shapes that take the multi-tile / multi-chunk reductions and
both EMA tile paths (shared-memory cache and L2 re-read), CUDA-graph capture and replay, a non-default stream,
bitwise determinism, and > 2^31-element tensors (64-bit indexing, marked slow).
"""
from __future__ import annotations


import pytest
import torch

from fused_attn import _backend
from fused_attn import functional as FA
from fused_attn._layout import memory_format

import common
import kernel_contracts as kc
from common import DTYPES, assert_close
from cuda_cases import LAYOUTS, KernelContracts, kernel_calls, kernel_inputs

pytestmark = pytest.mark.cuda

DEV = "cuda"
CUDA_REASON = _backend.unavailable_reason("cuda", "channel_pool", DEV, torch.float32)
needs_cuda_backend = pytest.mark.skipif(CUDA_REASON is not None, reason=f"cuda backend unavailable: {CUDA_REASON}")

if CUDA_REASON is None:
    from fused_attn.cpp import apply_gates as cpp_gates
    from fused_attn.cpp import ema as cpp_ema
    from fused_attn.cpp import squeeze_excite as cpp_se


@pytest.fixture(autouse=True)
def _no_tf32():
    """Exact float32 convolutions / matmuls: the module tests compare two paths that share them."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def rand(shape, dtype=torch.float32, layout="nchw", positive=False):
    """common.rand on the GPU."""
    return common.rand(shape, dtype, layout, positive, device=DEV)


def check(actual, expected, dtype, what, like=None):
    assert actual.device.type == "cuda", f"{what}: on {actual.device}"
    assert_close(actual, expected, dtype, what)
    if like is not None:  # 4-D outputs follow the input's memory format (fused_attn/_layout.py)
        assert actual.is_contiguous(memory_format=memory_format(like)), f"{what}: layout of {tuple(actual.stride())}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_backend_serves_every_op():
    """On a GPU machine the extension must have been built with the CUDA kernels (a failed build fails here)."""
    assert CUDA_REASON is None, CUDA_REASON
    for op in _backend.OPS:
        for dtype in DTYPES:
            assert "cuda" in _backend.serving(op, DEV, dtype), (op, dtype)
        assert _backend.resolve(op, "auto", DEV, torch.float32) == _backend.auto_order(op, DEV)[0]


# --------------------------------------------------------------------------------------- kernels vs reference
@needs_cuda_backend
class TestKernelContracts(KernelContracts):
    rand = staticmethod(rand)
    check = staticmethod(check)


@needs_cuda_backend
def test_errors_name_the_problem():
    x = rand((2, 8, 3, 3))
    with pytest.raises(RuntimeError, match="divisible by groups"):
        cpp_ema.ema_core_forward(x, rand((2, 8, 6)), x, rand((3,)), rand((3,)), 3, 1e-5)
    with pytest.raises(RuntimeError, match="CUDA tensor"):
        cpp_gates.apply_gates_forward(x, torch.rand(2, 8), None, None)
    with pytest.raises(RuntimeError, match="unknown channel_pool stat"):
        torch.ops.fused_attn_C.channel_pool_forward(x, "max,median")
    with pytest.raises(RuntimeError, match="dtype"):
        torch.ops.fused_attn_C.channel_squeeze_forward(x.to(torch.int32))


# ------------------------------------------------------------------------------ public functions and custom ops
def public_cases(dtype=torch.float64, layout="nchw", shape=(2, 8, 5, 7)):
    return kc.public_cases(rand, dtype, layout, shape)


@needs_cuda_backend
@pytest.mark.parametrize("case", range(len(kc.PUBLIC_CASES)), ids=kc.PUBLIC_CASES)
def test_gradcheck_fp64(case):
    name, fn, inputs = public_cases(torch.float64, "channels_last", shape=(2, 4, 2, 3))[case]
    inputs = [t.detach().requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(lambda *t: fn(t, "cuda"), inputs, eps=1e-6, atol=1e-7, rtol=1e-5), name


@needs_cuda_backend
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", range(len(kc.PUBLIC_CASES)), ids=kc.PUBLIC_CASES)
def test_public_functions_match_reference(case, layout, dtype):
    """Forward and every input gradient through the custom ops vs the reference backend on float64 copies."""
    kc.public_function(rand, check, case, layout, dtype, "cuda")


@needs_cuda_backend
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", range(len(kc.OPCHECK_CASES)), ids=kc.OPCHECK_CASES)
def test_opcheck(case, layout):
    op, args = kc.opcheck_cases(rand, layout, "cuda")[case]
    torch.library.opcheck(op, args)


# ---------------------------------------------------------------------------- determinism, graphs, streams


@needs_cuda_backend
@pytest.mark.parametrize("layout", LAYOUTS)
def test_bitwise_deterministic_under_use_deterministic_algorithms(layout):
    """Every kernel output is the same bit for bit run to run; with use_deterministic_algorithms(True) (which also
    fills new tensors with NaN: a kernel that left an output element unwritten would show here)."""
    inputs = kernel_inputs(rand, layout)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = kernel_calls(*inputs)
        again = kernel_calls(*inputs)
    finally:
        torch.use_deterministic_algorithms(before)
    for k, (a, b) in enumerate(zip(first, again)):
        assert torch.equal(a, b), f"result {k} differs between runs"
        assert not a.is_floating_point() or not a.isnan().any(), f"result {k} has NaN (an unwritten element?)"


@needs_cuda_backend
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_graph_capture_and_replay(layout):
    """Every kernel op captured in a CUDA graph; replays on new input data equal eager runs bit for bit."""
    static = kernel_inputs(rand, layout, shape=(2, 16, 9, 11))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            kernel_calls(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = kernel_calls(*static)
    for _ in range(2):
        fresh = kernel_inputs(rand, layout, shape=(2, 16, 9, 11))
        for dst, src in zip(static, fresh):
            dst.copy_(src)
        graph.replay()
        torch.cuda.synchronize()
        eager = kernel_calls(*fresh)
        for k, (a, b) in enumerate(zip(captured, eager)):
            assert torch.equal(a, b), f"result {k} differs after replay"


@needs_cuda_backend
@pytest.mark.parametrize("layout", LAYOUTS)
def test_runs_on_the_current_stream(layout):
    """On a side stream held back by a sleep, the kernels must wait for the input written on that stream: a kernel
    launched on any other stream would read the stale input."""
    inputs = kernel_inputs(rand, layout, shape=(2, 16, 9, 11))
    fresh = kernel_inputs(rand, layout, shape=(2, 16, 9, 11))
    expected = kernel_calls(*fresh)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)  # ~50 ms of GPU time on this stream only
        for dst, src in zip(inputs, fresh):
            dst.copy_(src)
        got = kernel_calls(*inputs)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    for k, (a, b) in enumerate(zip(got, expected)):
        assert torch.equal(a, b), f"result {k}: not ordered after the side stream's writes"


@needs_cuda_backend
def test_second_device_guard():
    """Tensors on cuda:1 (when present) run on cuda:1."""
    if torch.cuda.device_count() < 2:
        pytest.skip("one GPU")
    x = torch.randn(2, 8, 5, 5, device="cuda:1")
    assert_close(cpp_se.channel_squeeze_forward(x), x.double().mean(dim=(2, 3)), torch.float32)


# ----------------------------------------------------------------------------------------------------- modules


@needs_cuda_backend
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", list(kc.MODULES))
def test_module_cuda_matches_reference(kind, layout):
    """Each module with backend="cuda" vs the same module (same parameters) with backend="reference": forward,
    input gradient and every parameter gradient, float32 on the GPU."""
    kc.module_matches_reference(rand, kind, layout, "cuda", device=DEV)


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
    assert_close(out[1, -4:], (last * ch[1, -4:, None, None].float() * sp[1].float()).half())
    del out
    assert_close(FA.channel_squeeze(x, backend="cuda")[1, -4:], last.mean(dim=(1, 2)).half())
    pooled = FA.channel_pool(x, ("max", "mean"), backend="cuda")
    tail = x[1, :, -2:].float()
    assert_close(pooled[1, :, -2:], torch.stack([tail.amax(0), tail.mean(0)]).half())
