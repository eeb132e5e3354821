"""The Triton backend against the reference, through the public functions with backend="triton".

On a machine without a GPU the kernels run on CPU tensors through the Triton interpreter (conftest sets
TRITON_INTERPRET=1), so shapes are tiny; the same tests run on CUDA tensors when a GPU is present (the
`cuda` parameters, skipped elsewhere). The `tiles="small"` parameter shrinks the block-size heuristics
(16-element tiles, 64 target programs) so that every channel / pixel / row loop, every split and every
second-stage reduction runs, not only the single-tile fast path the tiny shapes would otherwise take.
"""
import warnings

import pytest
import torch

import fused_attn  # noqa: F401  (registers the ops)
from fused_attn import _backend
from fused_attn import functional as FA
from fused_attn._layout import memory_format

from common import assert_close, randn4d

pytest.importorskip("triton")
from fused_attn.triton import _common as tcm  # noqa: E402

OPS = ("channel_pool", "channel_squeeze", "squeeze_excite", "apply_gates", "dual_attention", "ema_strip_pool",
       "ema_core")
DEVICES = [
    pytest.param("cpu", id="cpu-interpreter", marks=pytest.mark.skipif(
        not _backend._interpreting_triton(), reason="Triton runs CPU tensors only under TRITON_INTERPRET=1")),
    pytest.param("cuda", marks=pytest.mark.cuda),
]
# (B, C, H, W): odd sizes, C = 1 and 3, H = W = 1, 5 x 3; EMA groups = C / 2 when C is even, else 1
SHAPES = [(2, 6, 5, 3), (1, 1, 1, 1), (2, 3, 1, 5), (1, 4, 4, 7)]


@pytest.fixture(autouse=True)
def _quiet_interpreter():
    # the interpreter runs numpy on masked-out lanes too (0 / 0 where a result is discarded)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"triton\.runtime\.interpreter")
        yield


@pytest.fixture(params=["default", "small"])
def tiles(request, monkeypatch):
    if request.param == "small":
        monkeypatch.setattr(tcm, "TILE_ELEMS", 16)
        monkeypatch.setattr(tcm, "TARGET_PROGRAMS", 64)
    return request.param


def _groups(c):
    return c // 2 if c % 2 == 0 else 1


def _case(op, shape, dtype, device, channels_last=False):
    """(inputs, fn(*inputs, backend)) for one public function; 4-D inputs in the requested layout."""
    b, c, h, w = shape

    def x4():
        return randn4d(b, c, h, w, dtype, channels_last, device)

    def t(*size, positive=False):
        v = torch.randn(*size, dtype=dtype, device=device)
        return v.abs() + 0.1 if positive else v
    if op == "channel_pool":
        return [x4()], lambda x, be: FA.channel_pool(x, ("max", "mean", "std"), backend=be)
    if op == "channel_squeeze":
        return [x4()], lambda x, be: FA.channel_squeeze(x, backend=be)
    if op == "squeeze_excite":
        return ([x4(), t(2, c), t(2), t(c, 2), t(c)],
                lambda x, w1, b1, w2, b2, be: FA.squeeze_excite(x, w1, b1, w2, b2, act="silu", backend=be))
    if op == "apply_gates":
        return ([x4(), t(b, c, positive=True), t(b, h, w, positive=True), x4()],
                lambda y, ch, sp, r, be: FA.apply_gates(y, ch, sp, r, backend=be))
    if op == "dual_attention":
        return ([x4(), t(2, c), t(2), t(c, 2), t(c), t(1, c, 1, 1), t(1)],
                lambda *a: FA.dual_attention(*a[:-1], act="silu", backend=a[-1]))
    if op == "ema_strip_pool":
        return [x4()], lambda x, be: FA.ema_strip_pool(x, backend=be)
    g = _groups(c)
    return ([x4(), t(b, c, h + w), x4(), t(c // g), t(c // g)],
            lambda x, hw, x2, gw, gb, be: FA.ema_core(x, hw, x2, gw, gb, g, backend=be))


def _run(fn, inputs, backend, grad_out=None):
    ins = [i.detach().clone().requires_grad_() for i in inputs]
    out = fn(*ins, backend)
    if grad_out is None:
        grad_out = torch.randn_like(out)
    return out, torch.autograd.grad(out, ins, grad_out), grad_out


def _compare(fn, inputs, dtype, tol=None):
    """Forward and every input gradient of backend="triton" vs "reference"; 4-D results keep the layout."""
    out, grads, grad_out = _run(fn, inputs, "triton")
    ref, ref_grads, _ = _run(fn, inputs, "reference", grad_out)
    assert_close(out, ref, dtype, "output", tol)
    if out.dim() == 4:
        assert memory_format(out) == memory_format(inputs[0]) and out.stride() == ref.stride()
    for i, (a, e) in enumerate(zip(grads, ref_grads)):
        assert_close(a, e, dtype, f"grad of input {i}", tol)
        if a.dim() == 4:
            assert memory_format(a) == memory_format(inputs[i]), f"grad of input {i} changed layout"


# --------------------------------------------------------------------------------------- vs reference
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("op", OPS)
def test_forward_backward_match_reference(op, shape, dtype, layout, tiles, device):
    inputs, fn = _case(op, shape, dtype, device, layout == "channels_last")
    _compare(fn, inputs, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("op", OPS)
def test_half_precision_matches_reference(op, dtype, device):
    inputs, fn = _case(op, (2, 6, 5, 3), dtype, device, channels_last=True)
    _compare(fn, inputs, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stats", [("std", "max"), ("mean",), ("max",), ("mean", "std")], ids=",".join)
def test_channel_pool_stat_subsets_and_aux_outputs(stats, tiles, device):
    """Any ordered subset; the saved argmax (int32) and moments (mean, std) equal the reference's."""
    x = randn4d(2, 37, 3, 5, device=device)
    _compare(lambda x, be: FA.channel_pool(x, stats, backend=be), [x], torch.float32)
    op = torch.ops.fused_attn.channel_pool
    got, ref = op(x, ",".join(stats), "triton"), op(x, ",".join(stats), "reference")
    assert got[1].dtype == torch.int32 and torch.equal(got[1], ref[1])
    assert_close(got[2], ref[2], torch.float32, "moments")


@pytest.mark.parametrize("device", DEVICES)
def test_channel_pool_nan_ties_and_constant_channels(tiles, device):
    """NaN is the maximum (first NaN wins, as torch.argmax); ties go to the first maximal channel, also
    across channel blocks; constant pixels have std 0 and a zero std gradient."""
    x = torch.randint(0, 3, (2, 37, 3, 5), device=device).float()
    x[0, 20, 1, 1] = x[0, 30, 1, 1] = float("nan")
    x[1, :, 2, 4] = 1.5
    _compare(lambda x, be: FA.channel_pool(x, ("max", "mean", "std"), backend=be), [x], torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_channel_pool_std_is_stable_with_a_large_mean(tiles, device):
    """Chan-merged block moments: an E[x^2] - E[x]^2 formula in fp32 would be off by ~1e-2 here."""
    x = randn4d(2, 37, 3, 5, device=device) + 1000.0
    got = FA.channel_pool(x, ("std",), backend="triton")
    assert_close(got, x.double().std(dim=1, keepdim=True), torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("parts", ["c", "s", "r", "cs", "sr", "cr", "none"])
def test_apply_gates_optional_parts(parts, tiles, device):
    b, c, h, w = 2, 5, 3, 4
    y = randn4d(b, c, h, w, device=device)
    inputs = [y, torch.rand(b, c, device=device), torch.rand(b, h, w, device=device), randn4d(b, c, h, w, device=device)]
    keep = ["y", "c" in parts, "s" in parts, "r" in parts]
    used = [i for i, k in zip(inputs, keep) if k]

    def fn(*a):
        it = iter(a[:-1])
        args = [next(it) if k else None for k in keep]
        return FA.apply_gates(*args, backend=a[-1])
    _compare(fn, used, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_strided_inputs_and_expanded_gradients(op, device):
    """Inputs whose H, W cannot be merged (a slice) are copied once; a stride-0 grad_out (from .sum()) is read
    through its strides."""
    inputs, fn = _case(op, (2, 4, 5, 6), torch.float64, device)
    inputs = [i[..., ::2] if i.dim() == 4 or (op == "apply_gates" and i.dim() == 3) else i for i in inputs]
    if op == "ema_core":
        inputs[1] = inputs[1][..., :8].contiguous()   # hw: [B, C, H + W'] for the sliced W' = 3
    ins = [i.detach().clone().requires_grad_() for i in inputs]
    ref_ins = [i.detach().clone().requires_grad_() for i in inputs]
    fn(*ins, "triton").sum().backward()
    fn(*ref_ins, "reference").sum().backward()
    for a, e in zip(ins, ref_ins):
        assert_close(a.grad, e.grad)


@pytest.mark.parametrize("device", DEVICES)
def test_two_stage_reductions_are_deterministic(device, monkeypatch):
    monkeypatch.setattr(tcm, "TILE_ELEMS", 16)
    monkeypatch.setattr(tcm, "TARGET_PROGRAMS", 64)
    y = randn4d(2, 9, 5, 7, device=device)
    c, s, g = torch.rand(2, 9, device=device), torch.rand(2, 5, 7, device=device), torch.randn_like(y)
    first = torch.ops.fused_attn.apply_gates_backward(g, y, c, s, "triton")
    again = torch.ops.fused_attn.apply_gates_backward(g, y, c, s, "triton")
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert torch.equal(FA.channel_squeeze(y, backend="triton"), FA.channel_squeeze(y, backend="triton"))


# ------------------------------------------------------------------------------------ torch.library layer
GRADCHECK_SHAPE = (1, 4, 2, 3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS)
def test_gradcheck_fp64(op, device):
    inputs, fn = _case(op, GRADCHECK_SHAPE, torch.float64, device, channels_last=op in ("channel_pool", "ema_core"))
    inputs = [i.detach().requires_grad_() for i in inputs]
    assert torch.autograd.gradcheck(lambda *a: fn(*a, "triton"), inputs)


def _opcheck_args(op, device, channels_last):
    inputs, _ = _case(op, (2, 4, 3, 5), torch.float64, device, channels_last)
    inputs = [i.requires_grad_() for i in inputs]
    if op == "channel_pool":
        return torch.ops.fused_attn.channel_pool, (inputs[0], "max,mean,std", "triton")
    if op == "squeeze_excite":
        return torch.ops.fused_attn.squeeze_excite, (*inputs, "relu", "sigmoid", "triton")
    if op == "apply_gates":
        return torch.ops.fused_attn.apply_gates, (*inputs, "triton")
    return torch.ops.fused_attn.ema_core, (*inputs, 2, 1e-5, "triton")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("op", ["channel_pool", "squeeze_excite", "apply_gates", "ema_core"])
def test_opcheck(op, layout, device):
    overload, args = _opcheck_args(op, device, layout == "channels_last")
    torch.library.opcheck(overload, args)


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_forward_and_backward(device):
    torch._dynamo.reset()
    x = randn4d(2, 6, 5, 3, channels_last=True, device=device)
    c, s = torch.rand(2, 6, device=device), torch.rand(2, 5, 3, device=device)

    def fn(x, c, s):
        pooled = FA.channel_pool(x, ("max", "mean"), backend="triton")
        return FA.apply_gates(x, c, s * pooled.sum(1), residual=x, backend="triton")
    eager_in = [t.clone().requires_grad_() for t in (x, c, s)]
    comp_in = [t.clone().requires_grad_() for t in (x, c, s)]
    eager = fn(*eager_in)
    compiled = torch.compile(fn, fullgraph=True)(*comp_in)
    assert_close(compiled, eager)
    assert memory_format(compiled) == torch.channels_last
    eager.square().sum().backward()
    compiled.square().sum().backward()
    for a, e in zip(comp_in, eager_in):
        assert_close(a.grad, e.grad)


@pytest.mark.parametrize("device", DEVICES)
def test_backend_serves_every_op(device):
    for op in OPS:
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            assert "triton" in _backend.serving(op, device, dtype), (op, dtype)


# ----------------------------------------------------------------------------------------- GPU only
@pytest.mark.cuda
@pytest.mark.slow
def test_more_than_2_31_elements():
    """64-bit offsets: a 2.15e9-element fp16 tensor (4.3 GB); the last batch is checked against PyTorch."""
    b, c, h, w = 2, 2048, 724, 725
    assert b * c * h * w > 2 ** 31
    x = torch.randn(b, c, h, w, device="cuda", dtype=torch.float16)
    ch, sp = torch.rand(b, c, device="cuda", dtype=torch.float16), torch.rand(b, h, w, device="cuda", dtype=torch.float16)
    last = x[1].float()
    out = FA.apply_gates(x, ch, sp, backend="triton")
    assert_close(out[1, -4:], (last[-4:] * ch[1, -4:, None, None].float() * sp[1].float()).half())
    del out
    assert_close(FA.channel_squeeze(x, backend="triton")[1, -4:], last[-4:].mean(dim=(1, 2)).half())
    pooled = FA.channel_pool(x, ("max", "mean"), backend="triton")
    assert_close(pooled[1, :, -2:], torch.stack([last[:, -2:].amax(0), last[:, -2:].mean(0)]).half())
