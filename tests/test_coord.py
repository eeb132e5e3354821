"""Coordinate attention: functional.coord_gate and the twins of the official CoordAtt and timm's CoordAttn /
SimpleCoordAttn (fused_attn/nn/coord.py), against the source modules themselves (bench/baselines/official.py holds
a rendition of the official code; timm's are the installed classes). The kernel passes on every backend are covered by
the registry grids (tests/backend_contracts.py: test_cpu_backend, test_triton_backend, test_cuda_emulated, opcheck,
gradcheck)."""
from __future__ import annotations

import copy

import pytest
import torch
from common import serving_backends
from torch import nn

import fused_attn
from bench.baselines import official
from fused_attn import functional as FA
from fused_attn import nn as fnn

timm_coord = pytest.importorskip("timm.layers.coord_attn")

# CPU backends that serve coord_gate here (triton runs under its interpreter in test_triton_backend.py)
BACKENDS = [b for b in serving_backends("coord_gate") if b != "triton"]
SHAPES = [(2, 16, 7, 5), (1, 16, 1, 6), (2, 16, 6, 1), (1, 16, 1, 1)]


def _sources():
    return {
        "official": lambda: official.CoordAtt(16, 16, reduction=4),
        "timm-coord": lambda: timm_coord.CoordAttn(16),
        "timm-coord-skip-hard": lambda: timm_coord.CoordAttn(16, has_skip=True, gate_layer="hardsigmoid", bias=True),
        "timm-scoord": lambda: timm_coord.SimpleCoordAttn(16),
        "timm-scoord-skip-hard": lambda: timm_coord.SimpleCoordAttn(16, has_skip=True, gate_layer="hardsigmoid"),
    }


def _perturb(m: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine (eval mode would otherwise be the identity)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.3)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.num_features, generator=g) * 0.2)
    return m


def _run(m: nn.Module, x: torch.Tensor, g: torch.Tensor):
    x = x.detach().clone().requires_grad_()
    out = m(x)
    params = [p for _, p in sorted(m.named_parameters())]
    grads = torch.autograd.grad(out, [x] + params, g)
    return out, grads


def _compare(src: nn.Module, twin: nn.Module, x: torch.Tensor, tol: float):
    g = torch.randn(x.shape, dtype=x.dtype)
    out_s, grads_s = _run(src, x, g)
    out_t, grads_t = _run(twin, x, g)
    assert out_t.dtype == out_s.dtype and out_t.shape == out_s.shape
    scale = max(out_s.abs().max().item(), 1.0)
    assert (out_t - out_s).abs().max().item() <= tol * scale, "output"
    assert len(grads_s) == len(grads_t)
    for i, (a, e) in enumerate(zip(grads_t, grads_s)):
        scale = max(e.abs().max().item(), 1.0)
        assert (a - e).abs().max().item() <= tol * scale, f"gradient {i} (0: x, then parameters by name)"
    return out_t, grads_t


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("source", list(_sources()))
def test_twin_matches_source_float64(source, train, layout, backend):
    """Output, grad x and every parameter gradient within 1e-7 relative in float64, odd sizes (H != W, H or W = 1)."""
    torch.manual_seed(0)
    src = _perturb(_sources()[source]().double()).train(train)
    twin, report = fused_attn.convert(copy.deepcopy(src), backend=backend)
    assert len(report.replaced) == 1 and not report.skipped
    for shape in SHAPES:
        if train and shape[0] * shape[2] * shape[3] == 1 and "scoord" not in source:
            continue   # BatchNorm in training needs more than one value per channel
        x = torch.randn(shape, dtype=torch.float64)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        out, grads = _compare(src, twin, x, 1e-7)
        if layout == "channels_last" and shape[2] * shape[3] > 1 and shape[1] > 1:
            assert out.is_contiguous(memory_format=torch.channels_last)
            assert grads[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source", list(_sources()))
def test_twin_matches_source_float32(source, backend):
    torch.manual_seed(0)
    src = _perturb(_sources()[source]()).train()
    twin = fused_attn.convert(copy.deepcopy(src), backend=backend)[0]
    _compare(src, twin, torch.randn(2, 16, 9, 11), 2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_rounding_is_the_sources(backend):
    """fp32: (x * a_w) * a_h in the source's order, so the op is bitwise eager's `x * a_w * a_h`; with skip the
    C++ compiler may contract `r + x` into an FMA (one rounding fewer): within an ulp."""
    x, a_h, a_w = torch.randn(2, 8, 9, 7), torch.rand(2, 8, 9), torch.rand(2, 8, 7)
    eager = x * a_w[:, :, None, :] * a_h[..., None]
    assert torch.equal(FA.coord_gate(x, a_h, a_w, backend=backend), eager)
    torch.testing.assert_close(FA.coord_gate(x, a_h, a_w, skip=True, backend=backend), eager + x, rtol=2e-7,
                               atol=1e-7)
    xc = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(FA.coord_gate(xc, a_h[..., None], a_w[:, :, None], backend=backend), eager)


def test_state_dicts_load_strictly_both_ways():
    ours, theirs = fnn.CoordAtt(32, 32, reduction=4), official.CoordAtt(32, 32, reduction=4)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    x = torch.randn(2, 32, 6, 5)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=1e-5, atol=1e-6)
    for cls, kw in ((fnn.CoordAttn, dict(channels=32, rd_channels=8)), (fnn.SimpleCoordAttn,
                                                                         dict(channels=32, rd_channels=8))):
        src = getattr(timm_coord, cls.__name__)(32, rd_channels=8)
        cls(**kw).load_state_dict(src.state_dict(), strict=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("source", ["official", "timm-scoord-skip-hard"])
def test_compile_fullgraph(source, backend):
    torch._dynamo.reset()
    torch.manual_seed(0)
    src = _sources()[source]().train()
    twin = fused_attn.convert(copy.deepcopy(src), backend=backend)[0]
    compiled = torch.compile(twin, fullgraph=True)
    x = torch.randn(2, 16, 7, 5)
    g = torch.randn_like(x)
    out_e, grads_e = _run(copy.deepcopy(twin), x, g)
    out_c, grads_c = _run(compiled, x, g)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
    for a, e in zip(grads_c, grads_e):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attn", ["coord", "scoord"])
def test_convert_timm_resnet_float64(attn):
    """A timm resnet18 with coordinate attention in every block: every attention module replaced, none left,
    outputs and all gradients equal in float64 (train mode)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10, block_args=dict(attn_layer=attn)).double()
    cls = {"coord": timm_coord.CoordAttn, "scoord": timm_coord.SimpleCoordAttn}[attn]
    n_attn = sum(type(m) is cls for m in model.modules())
    assert n_attn == 8
    fused, report = fused_attn.convert(model)
    assert len(report.replaced) == n_attn and not report.skipped
    assert not any(type(m) is cls for m in fused.modules())
    assert fused.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(2, 3, 40, 48, dtype=torch.float64)
    g = torch.randn(2, 10, dtype=torch.float64)
    out_m, grads_m = _run(model, x, g)
    out_f, grads_f = _run(fused, x, g)
    torch.testing.assert_close(out_f, out_m, rtol=1e-9, atol=1e-10)
    for a, e in zip(grads_f, grads_m):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)


def test_convert_skips_unsupported_settings_with_a_reason():
    class CoordAtt(official.CoordAtt):   # an official-named block whose act is not h_swish
        pass
    odd = CoordAtt(16, 16, reduction=4)
    odd.act = nn.ReLU()
    _, report = fused_attn.convert(nn.Sequential(odd))
    assert not report.replaced and "h_swish" in report.skipped[0][2]
    fake = official.CoordAtt(16, 16, reduction=4)
    fake.act = type("h_swish", (nn.Module,), {"forward": lambda self, x: x * torch.sigmoid(x)})()
    _, report = fused_attn.convert(nn.Sequential(fake))
    assert not report.replaced and "h_swish" in report.skipped[0][2]
    tanh = timm_coord.SimpleCoordAttn(16, gate_layer=nn.Tanh)
    _, report = fused_attn.convert(nn.Sequential(tanh))
    assert not report.replaced and "gate" in report.skipped[0][2]
    wide = official.CoordAtt(16, 8, reduction=4)
    _, report = fused_attn.convert(nn.Sequential(wide))
    assert not report.replaced and "oup" in report.skipped[0][2]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gate", ["none", "sigmoid"])
def test_gates_from_autocast_in_bfloat16(gate, backend):
    """a_h, a_w in bf16 beside an fp32 x (autocast's convolutions): read as they are, fp32 result as eager's
    promotion gives, gate gradients in bf16."""
    x = torch.randn(2, 8, 6, 5, requires_grad=True)
    a_h = torch.randn(2, 8, 6).bfloat16().requires_grad_()
    a_w = torch.randn(2, 8, 5).bfloat16().requires_grad_()
    out = FA.coord_gate(x, a_h, a_w, gate, backend=backend)
    assert out.dtype == torch.float32
    h, w = a_h.float()[..., None], a_w.float()[:, :, None]
    eager = x * w * h if gate == "none" else x * torch.sigmoid(h + w)
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(out)
    ours = torch.autograd.grad(out, (x, a_h, a_w), g)
    theirs = torch.autograd.grad(eager, (x, a_h, a_w), g)
    assert [t.dtype for t in ours] == [torch.float32, torch.bfloat16, torch.bfloat16]
    for a, e in zip(ours, theirs):
        torch.testing.assert_close(a.float(), e.float(), rtol=2e-2, atol=2e-2)


def test_twin_under_autocast_matches_source():
    torch.manual_seed(0)
    src = official.CoordAtt(16, 16, reduction=4).train()
    twin = fused_attn.convert(copy.deepcopy(src))[0]
    x = torch.randn(2, 16, 7, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_s, out_t = src(x), twin(x)
    assert out_t.dtype == out_s.dtype
    torch.testing.assert_close(out_t.float(), out_s.float(), rtol=3e-2, atol=3e-2)
