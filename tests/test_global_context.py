"""GCNet's global-context attention: functional.global_context_pool and the fused twin of timm's GlobalContext.

  - the op against an explicit float64 formulation (conv -> softmax -> matmul, autograd for the gradients) on every
    serving backend, NCHW / channels_last / sliced, odd sizes, H * W = 1, several work units; large H * W in fp32
    keeps fp32 accuracy (online softmax rescaling, fp32 accumulation); the bias does not change ctx and gets an
    exactly-zero gradient; H * W = 0 gives zeros;
  - fused_attn.nn.GlobalContext (built around timm's own layers) against timm.layers.GlobalContext in float64:
    output, input gradient and every parameter gradient, for every (fuse_add, fuse_scale, use_attn), train and
    eval, NCHW and channels_last, odd sizes and H * W = 1; fp32 within fp32 tolerance; state_dicts load strictly
    both ways; torch.compile(fullgraph=True); torch.export;
  - fused_attn.convert on timm's gcresnet33ts (random weights): every GlobalContext replaced, none left, outputs
    and all parameter gradients equal in float64; unsupported settings are reported in report.skipped.
"""
from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from common import assert_close, rand, serving_backends
from torch import nn

import fused_attn
from fused_attn import functional as FA
from fused_attn import nn as fnn

timm = pytest.importorskip("timm")
from timm.layers.global_context import GlobalContext  # noqa: E402

OP = "global_context_pool"
BACKENDS = serving_backends(OP)
FLAGS = list(itertools.product((False, True), repeat=3))   # (fuse_add, fuse_scale, use_attn)


def _eager_pool(x, w, b):
    """timm's formulation: conv_attn -> softmax over H W -> matmul with x."""
    bsz, c, h, wd = x.shape
    attn = F.softmax(F.conv2d(x, w.reshape(1, c, 1, 1), b).reshape(bsz, 1, h * wd), dim=-1).unsqueeze(3)
    return (x.reshape(bsz, c, h * wd).unsqueeze(1) @ attn).reshape(bsz, c)


# ------------------------------------------------------------------------------------------------------ the op
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "sliced"])
@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (1, 3, 1, 1), (2, 1, 4, 4), (3, 17, 29, 23), (1, 40, 1, 9)])
def test_op_matches_eager_in_float64(backend, layout, shape):
    torch.manual_seed(0)
    x = rand(shape, torch.float64, layout)
    w = torch.randn(1, shape[1], 1, 1, dtype=torch.float64) * 2 / shape[1] ** 0.5
    b = torch.randn(1, dtype=torch.float64)
    ins = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    ref = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    out = FA.global_context_pool(*ins, backend=backend)
    expected = _eager_pool(*ref)
    assert out.dtype == torch.float64 and out.shape == (shape[0], shape[1])
    assert_close(out, expected, what="ctx")
    g = torch.randn_like(expected)
    got = torch.autograd.grad(out, ins, g)
    want = torch.autograd.grad(expected, ref, g)
    for name, a, e in zip(("x", "weight"), got, want):
        assert_close(a, e, what=f"grad_{name}")
    assert got[0].stride() == (x.contiguous(memory_format=fused_attn._layout.memory_format(x))).stride()
    assert torch.equal(got[2], torch.zeros_like(b)), "the bias gradient is exactly zero (softmax shift invariance)"
    assert want[2].abs().item() < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_large_maps_keep_fp32_accuracy(backend, channels_last):
    """H W = 147456 pixels with logits spread over ~+-20: fp32 within fp32 tolerance of the fp64 result (the
    online softmax rescales its running sums; nothing overflows or loses the small terms)."""
    torch.manual_seed(1)
    x = torch.randn(2, 4, 384, 384)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.tensor([6.0, -4.0, 3.0, 2.0])
    out = FA.global_context_pool(x, w, None, backend=backend)
    expected = _eager_pool(x.double(), w.double(), None)
    assert_close(out, expected, torch.float32, what="ctx")


@pytest.mark.parametrize("backend", BACKENDS)
def test_bias_does_not_change_ctx_and_empty_maps_give_zeros(backend):
    x = torch.randn(2, 6, 5, 4)
    w = torch.randn(6)
    a = FA.global_context_pool(x, w, torch.tensor([3.0]), backend=backend)
    b = FA.global_context_pool(x, w, None, backend=backend)
    assert torch.equal(a, b)
    empty = FA.global_context_pool(torch.randn(2, 6, 0, 4), w, None, backend=backend)
    assert torch.equal(empty, torch.zeros(2, 6))


def test_bf16_x_with_fp32_weight():
    """A bf16 x beside the fp32 conv parameters (AMP): ctx in bf16, gradients in each input's dtype, values within
    bf16 tolerance of the fp64 result."""
    torch.manual_seed(2)
    x = torch.randn(2, 8, 6, 5).bfloat16().requires_grad_()
    w = torch.randn(1, 8, 1, 1, requires_grad=True)
    b = torch.randn(1, requires_grad=True)
    out = FA.global_context_pool(x, w, b)
    assert out.dtype == torch.bfloat16
    gx, gw, gb = torch.autograd.grad(out.float().sum(), (x, w, b))
    assert (gx.dtype, gw.dtype, gb.dtype) == (torch.bfloat16, torch.float32, torch.float32)
    xd, wd = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    expected = _eager_pool(xd, wd, None)
    assert_close(out, expected, torch.bfloat16, what="ctx")
    ex, ew = torch.autograd.grad(expected.sum(), (xd, wd))
    assert_close(gx, ex, torch.bfloat16, what="grad_x")
    assert_close(gw, ew, tol=3e-2, what="grad_weight")


# ------------------------------------------------------------------------------------------------ the twin
def _randomize_(m: nn.Module) -> nn.Module:
    """Random values in every parameter (timm zero-initialises mlp_add.fc2, which would hide the add path)."""
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p.copy_(torch.randn_like(p) * (0.5 if "weight" in name else 0.2) + (1.0 if "norm.weight" in name else 0))
    return m


def _pair(fuse_add, fuse_scale, use_attn, channels=12, dtype=torch.float64, backend=None):
    src = _randomize_(GlobalContext(channels, use_attn=use_attn, fuse_add=fuse_add, fuse_scale=fuse_scale)).to(dtype)
    twin = fnn.GlobalContext.from_source(copy.deepcopy(src), backend=backend)
    return src, twin


def _compare(src, twin, x, dtype, what):
    xa, xb = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    expected, got = src(xa), twin(xb)
    assert got.stride() == expected.stride() or got.shape[2:] == (1, 1), f"{what}: output layout"
    assert_close(got, expected, dtype, what=f"{what} output")
    g = torch.randn_like(expected)
    pa, pb = dict(src.named_parameters()), dict(twin.named_parameters())
    assert list(pa) == list(pb)
    ga = torch.autograd.grad(expected, [xa, *pa.values()], g, allow_unused=True)
    gb = torch.autograd.grad(got, [xb, *pb.values()], g, allow_unused=True)
    for name, a, b in zip(["x", *pa], gb, ga):
        assert (a is None) == (b is None), f"{what} grad {name}: None in one of them"
        if a is not None and name.endswith("conv_attn.bias"):
            # exactly zero here; eager's is the rounding noise of sum_p dz = g.ctx - g.ctx (~1e-5 in fp32)
            assert torch.equal(a, torch.zeros_like(a)), f"{what}: the bias gradient is not exactly zero"
            assert_close(a, b, dtype, what=f"{what} grad {name}", tol=1e-10 if dtype == torch.float64 else 1e-3)
        elif a is not None:
            assert_close(a, b, dtype, what=f"{what} grad {name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fuse_add,fuse_scale,use_attn", FLAGS)
def test_twin_matches_timm_in_float64(backend, fuse_add, fuse_scale, use_attn):
    src, twin = _pair(fuse_add, fuse_scale, use_attn, backend=backend)
    torch.manual_seed(4)
    for training, channels_last, shape in itertools.product((True, False), (False, True),
                                                            ((2, 12, 7, 5), (3, 12, 1, 1), (1, 12, 23, 29))):
        src.train(training)
        twin.train(training)
        x = torch.randn(shape, dtype=torch.float64)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        _compare(src, twin, x, torch.float64, f"train={training} cl={channels_last} {shape}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_twin_matches_timm_in_float32(backend):
    src, twin = _pair(True, True, True, channels=64, dtype=torch.float32, backend=backend)
    _compare(src, twin, torch.randn(2, 64, 14, 14), torch.float32, "fp32")


def test_twin_state_dict_loads_both_ways_and_defaults_match_timm():
    for flags in FLAGS:
        fuse_add, fuse_scale, use_attn = flags
        src = GlobalContext(32, use_attn=use_attn, fuse_add=fuse_add, fuse_scale=fuse_scale)
        own = fnn.GlobalContext(32, use_attn=use_attn, fuse_add=fuse_add, fuse_scale=fuse_scale)
        assert {k: v.shape for k, v in own.state_dict().items()} == {k: v.shape for k, v in src.state_dict().items()}
        own.load_state_dict(_randomize_(src).state_dict(), strict=True)
        src.load_state_dict(own.state_dict(), strict=True)
        _compare(src.double(), own.double(), torch.randn(2, 32, 5, 6, dtype=torch.float64), torch.float64,
                 f"own layers {flags}")
    assert fnn.GlobalContext(256).mlp_scale.fc1.out_channels == GlobalContext(256).mlp_scale.fc1.out_channels == 32


def test_twin_compiles_fullgraph():
    """float64: inductor's own kernels for the MLP and LayerNorm round differently from eager in fp32."""
    src, twin = _pair(True, True, True)
    compiled = torch.compile(twin, fullgraph=True)
    x = torch.randn(2, 12, 7, 5, dtype=torch.float64, requires_grad=True)
    out = compiled(x)
    assert_close(out, twin(x), what="compiled forward")
    g = torch.randn_like(out)
    params = list(twin.parameters())
    a = torch.autograd.grad(out, [x, *params], g)
    b = torch.autograd.grad(twin(x), [x, *params], g)
    for i, (u, v) in enumerate(zip(a, b)):
        assert_close(u, v, what=f"compiled grad {i}")


def test_twin_exports_with_the_fused_op():
    _, twin = _pair(True, True, True, dtype=torch.float32)
    twin.eval()
    x = torch.randn(2, 12, 7, 5)
    ep = torch.export.export(twin, (x,))
    ops = {n.target.name() for n in ep.graph.nodes if n.op == "call_function"
           and isinstance(n.target, torch._ops.OpOverload) and n.target.namespace == "fused_attn"}
    assert any("global_context_pool" in o for o in ops), ops
    with torch.no_grad():
        assert_close(ep.module()(x), twin(x), what="exported")


def test_twin_records_the_channel_gate():
    _, twin = _pair(False, True, True, dtype=torch.float32)
    with fused_attn.record_attention(twin) as maps:
        twin(torch.randn(2, 12, 5, 5))
    assert maps["GlobalContext"]["channel"].shape == (2, 12)


# ------------------------------------------------------------------------------------------------- convert
def test_convert_gcresnet33ts_float64():
    """Every GlobalContext of timm's gcresnet33ts is replaced (none left); outputs and every parameter gradient equal
    the original's in float64, train and eval."""
    torch.manual_seed(5)
    model = timm.create_model("gcresnet33ts", pretrained=False).double()
    n_gc = sum(isinstance(m, GlobalContext) for m in model.modules())
    assert n_gc > 0
    fused, report = fused_attn.convert(model)
    assert len(report) == n_gc and not report.skipped
    assert not any(isinstance(m, GlobalContext) for m in fused.modules())
    assert sum(isinstance(m, fnn.GlobalContext) for m in fused.modules()) == n_gc
    assert list(dict(model.named_parameters())) == list(dict(fused.named_parameters()))
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    for training in (True, False):
        model.train(training)
        fused.train(training)
        _compare(model, fused, x, torch.float64, f"gcresnet33ts train={training}")


def test_convert_reports_unsupported_settings():
    m = nn.Sequential(GlobalContext(16), GlobalContext(16))
    m[1].conv_attn = nn.Conv2d(16, 1, 3, padding=1)
    fused, report = fused_attn.convert(m)
    assert isinstance(fused[0], fnn.GlobalContext) and isinstance(fused[1], GlobalContext)
    assert len(report.skipped) == 1 and "1x1" in report.skipped[0][2]
