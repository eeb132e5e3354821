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

import copy
import itertools

import pytest
import torch

from fused_attn import _backend, ops
from fused_attn import functional as FA
from fused_attn import nn as fnn
from fused_attn._layout import memory_format
from fused_attn.reference import channel_pool as ref_pool

import kernel_contracts as kc
from common import DTYPES, assert_close

pytestmark = pytest.mark.cuda

DEV = "cuda"
CUDA_REASON = _backend.unavailable_reason("cuda", "channel_pool", DEV, torch.float32)
needs_cuda_backend = pytest.mark.skipif(CUDA_REASON is not None, reason=f"cuda backend unavailable: {CUDA_REASON}")

if CUDA_REASON is None:
    from fused_attn.cpp import apply_gates as cpp_gates
    from fused_attn.cpp import channel_pool as cpp_pool
    from fused_attn.cpp import dual_attention as cpp_dual
    from fused_attn.cpp import ema as cpp_ema
    from fused_attn.cpp import squeeze_excite as cpp_se

# (B, C, H, W): odd sizes, C = 1, H = W = 1; (2, 130, 9, 15) takes several column tiles and row chunks of the
# two-stage reductions in both layouts (fp32), (1, 8, 40, 40) several strip-pool row blocks.
SHAPES = [(3, 5, 7, 9), (1, 1, 1, 5), (3, 16, 1, 1), (2, 17, 7, 9), (2, 130, 9, 15), (1, 8, 40, 40)]
SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]
LAYOUTS = ["nchw", "channels_last"]
STATS = [("max", "mean", "std"), ("mean", "max"), ("std", "mean"), ("max",), ("mean",)]


@pytest.fixture(autouse=True)
def _no_tf32():
    """Exact float32 convolutions / matmuls: the module tests compare two paths that share them."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def rand(shape, dtype=torch.float32, layout="nchw", positive=False):
    """A CUDA tensor of `shape`: dense NCHW, dense channels_last, or a non-contiguous slice."""
    def draw(*s):
        return (torch.rand(*s, dtype=dtype, device=DEV) + 0.5 if positive
                else torch.randn(*s, dtype=dtype, device=DEV))
    if layout == "channels_last" and len(shape) == 4:
        return draw(*shape).contiguous(memory_format=torch.channels_last)
    if layout == "sliced" and len(shape) == 4:
        b, c, h, w = shape
        return draw(b, c + 1, h, w + 2)[:, 1:, :, 1:-1]
    return draw(*shape)



def check(actual, expected, dtype, what, like=None):
    assert actual.device.type == "cuda", f"{what}: on {actual.device}"
    assert_close(actual, expected, dtype, what)
    if like is not None:  # 4-D outputs follow the input's memory format (fused_attn/_layout.py)
        assert actual.is_contiguous(memory_format=memory_format(like)), f"{what}: layout of {tuple(actual.stride())}"


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
    return needs_cuda_backend(pytest.mark.parametrize("dtype,layout,shape", kernel_cases())(test))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_backend_serves_every_op():
    """On a GPU machine the extension must have been built with the CUDA kernels (a failed build fails here)."""
    assert CUDA_REASON is None, CUDA_REASON
    for op in _backend.OPS:
        for dtype in DTYPES:
            assert "cuda" in _backend.serving(op, DEV, dtype), (op, dtype)
        assert _backend.resolve(op, "auto", DEV, torch.float32) == _backend.auto_order(op, DEV)[0]


# --------------------------------------------------------------------------------------- kernels vs reference
POOL_CASES = [pytest.param(st, *c.values, id=f"{','.join(st)}-{c.id}") for c in kernel_cases()
              for st in (STATS if c.values[0] == torch.float32 else STATS[:1] + STATS[4:])]


@needs_cuda_backend
@pytest.mark.parametrize("stats,dtype,layout,shape", POOL_CASES)
def test_channel_pool(stats, dtype, layout, shape):
    kc.channel_pool(rand, check, stats, shape, layout, dtype)


def assert_specials_and_close(out, ref, what):
    """+-inf / NaN exactly where `ref` has them, the finite rest within float32's tolerance."""
    special = ~ref.isfinite()
    same = (out == ref) | (out.isnan() & ref.isnan())
    assert bool(same[special].all()), f"{what}: +-inf / NaN differ at {(special & ~same).nonzero().tolist()}"
    assert_close(out[~special], ref[~special], torch.float32, what)


@needs_cuda_backend
@pytest.mark.parametrize("layout", LAYOUTS)
def test_channel_pool_ties_nan_and_large_mean(layout):
    """Ties go to the first maximal channel and NaN counts as the maximum (torch.argmax), across lane groups;
    +-inf reach the mean as in torch.mean (std NaN there); Welford / two-pass std stays exact around a large mean."""
    x = torch.randn(2, 70, 4, 6, device=DEV).round()  # many ties
    x[0, 5, 1, 2] = float("nan")
    x[1, 33:, 0, 0] = float("nan")
    x[1, :, 2, 2] = float("-inf")
    xl = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
    out, argmax, _ = cpp_pool.channel_pool_forward(xl, ("max", "mean"))
    rout, rargmax, _ = ref_pool.channel_pool_forward(x, ("max", "mean"))
    assert torch.equal(argmax, rargmax)
    assert_specials_and_close(out, rout, "max, mean")
    x[0, 0, 3, 3] = x[0, 9, 3, 4] = float("inf")
    xl = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
    out = cpp_pool.channel_pool_forward(xl, ("max", "mean", "std"))[0]
    rout = ref_pool.channel_pool_forward(x, ("max", "mean", "std"))[0]
    assert rout[0, 1, 3, 3] == float("inf") and rout[1, 1, 2, 2] == float("-inf")  # the cases are real
    assert_specials_and_close(out, rout, "max, mean, std")
    big = rand((2, 37, 3, 5), layout=layout) + 1000.0
    assert_close(cpp_pool.channel_pool_forward(big, ("std",))[0], big.double().std(dim=1, keepdim=True),
                 torch.float32)


@kernel_grid
def test_squeeze_excite(dtype, layout, shape):
    kc.squeeze_excite(rand, check, shape, layout, dtype)


@kernel_grid
def test_dual_attention(dtype, layout, shape):
    kc.dual_attention(rand, check, shape, layout, dtype)


PARTS = list(itertools.product((False, True), repeat=3))
GATE_CASES = [pytest.param(sh, parts, lay, dt, id="-".join(["x".join(map(str, sh)),
                                                              "".join(n for n, on in zip("csr", parts) if on) or "none",
                                                              lay, str(dt)[6:]]))
              for sh in [(2, 17, 7, 9), (2, 130, 9, 15)] for dt in DTYPES
              for parts in (PARTS if dt in (torch.float32, torch.bfloat16) else PARTS[::3])
              for lay in LAYOUTS + (["sliced"] if dt == torch.float32 else [])]


@needs_cuda_backend
@pytest.mark.parametrize("shape,parts,layout,dtype", GATE_CASES)
def test_apply_gates(shape, parts, layout, dtype):
    kc.apply_gates(rand, check, shape, parts, layout, dtype, spatial_dtype=torch.float32)  # a gate in another dtype


@kernel_grid
def test_ema_strip_pool(dtype, layout, shape):
    kc.ema_strip_pool(rand, check, shape, layout, dtype)


# (shape, groups): cg = 1, 4, 5, 8 (several tiles per image); (1, 8, 40, 40) with one group does not fit the
# shared-memory tile cache in fp32 / fp64 (the L2 re-read path); cg = 300 > 256 takes the channels_last fallback
# reduction.
EMA_CASES = [((3, 5, 7, 9), 1), ((1, 1, 1, 5), 1), ((3, 16, 1, 1), 4), ((2, 16, 5, 7), 2), ((2, 24, 9, 6), 3),
             ((1, 8, 40, 40), 1), ((1, 300, 3, 5), 1)]


EMA_PARAMS = [pytest.param(sh, g, lay, dt, id=f"{'x'.join(map(str, sh))}-g{g}-{lay}-{str(dt)[6:]}")
              for sh, g in EMA_CASES for dt in DTYPES
              for lay in LAYOUTS + (["sliced", "mixed"] if dt == torch.float32 else [])]  # copies: any dtype


@needs_cuda_backend
@pytest.mark.parametrize("shape,groups,layout,dtype", EMA_PARAMS)
def test_ema_core(shape, groups, layout, dtype):
    kc.ema_core(rand, check, shape, groups, layout, dtype)


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
    name, fn, inputs = public_cases(dtype, layout, shape=(2, 8, 6, 5))[case]
    inputs = [t.detach().requires_grad_() for t in inputs]
    out = fn(inputs, "cuda")
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, inputs, g)
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    rout = fn(ref_inputs, "reference")
    rgrads = torch.autograd.grad(rout, ref_inputs, g.double())
    assert_close(out, rout, dtype, f"{name} out")
    if out.dim() == 4:
        assert out.is_contiguous(memory_format=memory_format(inputs[0])), name
    for i, (got, want) in enumerate(zip(grads, rgrads)):
        assert_close(got, want, dtype, f"{name} grad {i}")
        if got.dim() == 4:
            assert got.is_contiguous(memory_format=memory_format(inputs[i])), f"{name} grad {i} layout"


def opcheck_cases(layout):
    x = rand((2, 8, 5, 6), torch.float32, layout).requires_grad_()
    b, c, h, w = x.shape
    groups, cg = 2, 4

    def leaf(*shape, positive=False, lay="nchw"):
        return rand(shape, torch.float32, lay, positive).requires_grad_()
    return [
        (ops.channel_pool.channel_pool, (x, "max,mean,std", "cuda")),
        (ops.squeeze_excite.channel_squeeze, (x, "cuda")),
        (ops.squeeze_excite.squeeze_excite, (x, leaf(3, c), leaf(3), leaf(c, 3), None, "relu", "sigmoid", "cuda")),
        (ops.apply_gates.apply_gates, (x, leaf(b, c, positive=True), leaf(b, h, w, positive=True),
                                       leaf(b, c, h, w, lay=layout), "cuda")),
        (ops.ema.ema_strip_pool, (x, "cuda")),
        (ops.ema.ema_core, (x, leaf(b, c, h + w), leaf(b, c, h, w, lay=layout), leaf(cg, positive=True), leaf(cg),
                            groups, 1e-5, "cuda")),
        (ops.dual_attention.dual_attention, (x, leaf(3, c), leaf(3), leaf(c, 3), leaf(c), leaf(c), leaf(1), "relu",
                                             "sigmoid", "cuda")),
    ]


@needs_cuda_backend
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", range(7), ids=["channel_pool", "channel_squeeze", "squeeze_excite", "apply_gates",
                                                "ema_strip_pool", "ema_core", "dual_attention"])
def test_opcheck(case, layout):
    op, args = opcheck_cases(layout)[case]
    torch.library.opcheck(op, args)


# ---------------------------------------------------------------------------- determinism, graphs, streams
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


def kernel_inputs(layout, shape=(3, 16, 29, 31)):
    b, c, h, w = shape
    return [rand(shape, layout=layout), rand(shape, layout=layout), rand((b, c), positive=True), rand((b, c)),
            rand((b, c), positive=True), rand((b, h, w), positive=True), rand((b, c, h + w)),
            rand(shape, layout=layout),
            rand((c // 2,), positive=True), rand((c // 2,))]


@needs_cuda_backend
@pytest.mark.parametrize("layout", LAYOUTS)
def test_bitwise_deterministic_under_use_deterministic_algorithms(layout):
    """Every kernel output is the same bit for bit run to run; with use_deterministic_algorithms(True) (which also
    fills new tensors with NaN: a kernel that left an output element unwritten would show here)."""
    inputs = kernel_inputs(layout)
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
    static = kernel_inputs(layout, shape=(2, 16, 9, 11))
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
        fresh = kernel_inputs(layout, shape=(2, 16, 9, 11))
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
    inputs = kernel_inputs(layout, shape=(2, 16, 9, 11))
    fresh = kernel_inputs(layout, shape=(2, 16, 9, 11))
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
MODULES = {
    "SEBlock": (32, lambda be: fnn.SEBlock(32, backend=be)),
    "CBAM": (32, lambda be: fnn.CBAM(32, reduction=4, backend=be)),
    "MultiScaleAttention": (32, lambda be: fnn.MultiScaleAttention(32, backend=be)),
    "DualAttention": (16, lambda be: fnn.DualAttention(16, backend=be)),
    "LiteDualAttention": (32, lambda be: fnn.LiteDualAttention(32, backend=be)),
    "AttnResBlock": (16, lambda be: fnn.AttnResBlock(16, backend=be)),
    "EMA": (16, lambda be: fnn.EMA(16, factor=4, backend=be)),
    "EMAX": (32, lambda be: fnn.EMAX(32, factor=8, backend=be)),
}


def _set_backend(module, backend):
    for m in module.modules():  # AttnResBlock holds its DualAttention
        if isinstance(m, fnn.AttentionModule):
            m.backend = backend
    return module


@needs_cuda_backend
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", list(MODULES))
def test_module_cuda_matches_reference(kind, layout):
    """Each module with backend="cuda" vs the same module (same parameters) with backend="reference": forward,
    input gradient and every parameter gradient, float32 on the GPU."""
    channels, make = MODULES[kind]
    ref = make("reference").to(DEV)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = _set_backend(copy.deepcopy(ref), "cuda")
    x = rand((2, channels, 9, 7), layout=layout)
    xs = [x.detach().clone().requires_grad_() for _ in range(2)]
    outs = [m(t) for m, t in zip((ours, ref), xs)]
    g = torch.randn_like(outs[1])
    outs[0].backward(g)
    outs[1].backward(g)
    assert_close(outs[0], outs[1], torch.float32, f"{kind} out")
    assert memory_format(outs[0]) == memory_format(x)
    assert_close(xs[0].grad, xs[1].grad, torch.float32, f"{kind} grad_x")
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        if q.grad is None:  # a parameter this forward does not use
            assert p.grad is None, f"{kind} grad {name}"
        else:
            assert_close(p.grad, q.grad, torch.float32, f"{kind} grad {name}")


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
