"""SimAM: fused_attn.nn.SimAM and functional.simam against the official code (github.com/ZjjConan/SimAM,
bench/baselines/official.py's rendition) and External-Attention-pytorch's SimAM, on every serving backend.

The kernel passes (simam_gate, simam_grad_input) are checked against the reference on the registry's grids by
the backend contract tests (tests/test_cpu_backend.py, test_triton_backend.py, test_cuda_emulated.py), the
custom ops by opcheck and fp64 gradcheck (tests/test_custom_ops.py); AMP, export, validation, determinism and the
direct eager path list simam with the other ops."""
from __future__ import annotations

import pytest
import torch
from common import assert_close, serving_backends
from test_mod_oracles import _load_baseline

import fused_attn
from fused_attn import functional as FA
from fused_attn import nn as fnn
from fused_attn.backends.reference import simam as ref_simam

OFFICIAL = _load_baseline("official")
BACKENDS = serving_backends("simam")
SHAPES = [(2, 5, 7, 9), (1, 3, 1, 5), (3, 1, 4, 1), (2, 17, 56, 56), (1, 40, 6, 6)]
LAYOUTS = ["nchw", "channels_last"]


def _x(shape, dtype=torch.float64, layout="nchw", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 0.5).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def _run(module, x, g):
    x = x.detach().clone().requires_grad_()
    out = module(x)
    (gx,) = torch.autograd.grad(out, x, g)
    return out, gx


def _rel(a, e) -> float:
    return ((a.double() - e.double()).abs().max() / e.double().abs().max().clamp_min(1e-300)).item()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("e_lambda", [1e-4, 0.5])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_module_matches_official_fp64(shape, e_lambda, layout, backend):
    """Outputs and input gradients within 1e-7 relative of the official simam_module in float64; the output
    keeps x's memory format."""
    if backend == "triton" and shape[2] * shape[3] > 64:
        pytest.skip("the Triton interpreter: small shapes only")
    x = _x(shape, layout=layout)
    g = torch.randn(shape, dtype=torch.float64)
    out, gx = _run(fnn.SimAM(shape[1], e_lambda, backend=backend), x, g)
    ref, rgx = _run(OFFICIAL.simam_module(shape[1], e_lambda), x, g)
    assert _rel(out, ref) <= 1e-7 and _rel(gx, rgx) <= 1e-7, (_rel(out, ref), _rel(gx, rgx))
    assert out.is_contiguous(memory_format=fused_attn._layout.memory_format(x))
    assert gx.is_contiguous(memory_format=fused_attn._layout.memory_format(x))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_low_precision_close_to_official_fp64(dtype, layout, backend):
    """fp32 / bf16 / fp16 inputs (fp32 accumulation) against the official code on the same values in float64."""
    shape = (2, 6, 5, 7) if backend == "triton" else (2, 19, 13, 11)
    x = _x(shape, dtype, layout)
    g = torch.randn(shape).to(dtype)
    out, gx = _run(fnn.SimAM(backend=backend), x, g)
    ref, rgx = _run(OFFICIAL.simam_module(), x.double(), g.double())
    assert out.dtype == gx.dtype == dtype
    tol = {torch.float32: 2e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}[dtype]
    assert_close(out, ref, dtype, "out", tol=tol)
    assert_close(gx, rgx, dtype, "grad_x", tol=2 * tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_single_pixel_planes_give_nan_like_official(layout, backend):
    """H W = 1: n = 0 and the official code's variance is 0 / 0: every output and gradient is NaN (documented)."""
    x = _x((2, 3, 1, 1), torch.float32, layout)
    g = torch.randn(2, 3, 1, 1)
    out, gx = _run(fnn.SimAM(backend=backend), x, g)
    ref, rgx = _run(OFFICIAL.simam_module(), x, g)
    assert ref.isnan().all() and rgx.isnan().all()
    assert out.isnan().all() and gx.isnan().all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_external_attention_simam_is_the_same(backend):
    """External-Attention-pytorch's SimAM has the official code: same results."""
    x = _x((2, 4, 5, 6))
    g = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    out, gx = _run(fnn.SimAM(backend=backend), x, g)
    ref, rgx = _run(OFFICIAL.SimAM(4), x, g)
    assert _rel(out, ref) <= 1e-7 and _rel(gx, rgx) <= 1e-7


@pytest.mark.parametrize("backend", BACKENDS)
def test_sliced_and_expanded_gradients(backend):
    """A sliced x and the stride-0 gradient of `.sum()`."""
    base = torch.randn(2, 6, 5, 9, dtype=torch.float64)
    x = base[:, 1:, :, 2:-1].detach().requires_grad_()
    out = FA.simam(x, backend=backend)
    (gx,) = torch.autograd.grad(out.sum(), x)
    xr = x.detach().clone().requires_grad_()
    ref = OFFICIAL.simam_module()(xr)
    (rgx,) = torch.autograd.grad(ref.sum(), xr)
    assert _rel(out, ref) <= 1e-7 and _rel(gx, rgx) <= 1e-7


def test_reference_backward_matches_autograd_fp64():
    """The reference's hand-derived backward equals autograd of the official forward (1e-12 relative)."""
    for shape, lam in (((2, 3, 5, 7), 1e-4), ((1, 2, 1, 2), 0.3), ((2, 4, 3, 1), 2.0)):
        x = _x(shape)
        g = torch.randn(shape, dtype=torch.float64)
        _, rgx = _run(OFFICIAL.simam_module(e_lambda=lam), x, g)
        out, mean, k = ref_simam.simam_gate(x, lam)
        assert _rel(ref_simam.simam_grad_input(g, x, mean, k), rgx) <= 1e-12


def test_module_structure_and_repr_match_official():
    ours, theirs = fnn.SimAM(64, 1e-4), OFFICIAL.simam_module(64, 1e-4)
    assert repr(ours) == repr(theirs).replace("simam_module", "SimAM") == "SimAM(lambda=0.000100)"
    assert [n for n, _ in ours.named_children()] == ["activaton"] and isinstance(ours.activaton, torch.nn.Sigmoid)
    assert ours.state_dict().keys() == theirs.state_dict().keys() == set()
    assert ours.e_lambda == theirs.e_lambda and ours.get_module_name() == "simam"
    with pytest.raises(ValueError, match="e_lambda"):
        fnn.SimAM(e_lambda=-1.0)


def test_recording_keeps_the_3d_gate():
    x = _x((2, 4, 5, 6), torch.float32)
    m = fnn.SimAM(record_attention=True)
    out = m(x)
    gate = m.attention_maps["gate"]
    assert gate.shape == x.shape
    torch.testing.assert_close(x * gate, out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_compile_fullgraph_module(backend, layout):
    """torch.compile(fullgraph=True) of the module (forward and backward) without graph breaks; one fused op."""
    torch._dynamo.reset()
    m = fnn.SimAM(backend=backend)
    x = _x((2, 6, 5, 7), torch.float32, layout)
    g = torch.randn(2, 6, 5, 7)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    out, gx = _run(compiled, x, g)
    ref, rgx = _run(m, x, g)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gx, rgx)
    explain = torch._dynamo.explain(m)(x)
    assert explain.graph_break_count == 0 and explain.graph_count == 1


def test_compile_inductor_module():
    torch._dynamo.reset()
    m = fnn.SimAM()
    x = _x((2, 6, 5, 7), torch.float32)
    g = torch.randn(2, 6, 5, 7)
    out, gx = _run(torch.compile(m, fullgraph=True), x, g)
    ref, rgx = _run(OFFICIAL.simam_module(), x, g)
    torch.testing.assert_close(out, ref, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(gx, rgx, rtol=2e-5, atol=2e-5)


def test_export_keeps_one_op_and_onnx_path_uses_the_reference(monkeypatch):
    """torch.export shows one fused_attn::simam; while exporting to ONNX functional.simam runs the reference."""
    x = _x((2, 4, 5, 6), torch.float32)
    ep = torch.export.export(fnn.SimAM().eval(), (x,))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert torch.ops.fused_attn.simam.default in targets
    torch.testing.assert_close(ep.module()(x), OFFICIAL.simam_module()(x), rtol=2e-5, atol=2e-5)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    called = {}
    real = ref_simam.simam_gate
    monkeypatch.setattr(ref_simam, "simam_gate", lambda *a: called.setdefault("ref", real(*a)))
    torch.testing.assert_close(FA.simam(x), OFFICIAL.simam_module()(x), rtol=2e-5, atol=2e-5)
    assert "ref" in called


class _Net(torch.nn.Module):
    def __init__(self, sim):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.att1 = sim(8)
        self.block = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), OFFICIAL.simam_module(8, 0.3),
                                         torch.nn.ReLU())
        self.att2 = OFFICIAL.SimAM(8)

    def forward(self, x):
        return self.att2(self.block(self.att1(self.conv1(x))))


def test_convert_replaces_every_official_simam():
    torch.manual_seed(0)
    model = _Net(OFFICIAL.simam_module).eval()
    x = torch.randn(2, 3, 9, 7)
    converted, report = fused_attn.convert(model)
    assert sorted(r.path for r in report) == ["att1", "att2", "block.1"] and not report.skipped
    assert all(type(m) is fnn.SimAM for m in (converted.att1, converted.block[1], converted.att2))
    assert converted.block[1].e_lambda == 0.3
    assert not any(type(m).__name__ in ("simam_module",) or type(m) is OFFICIAL.SimAM for m in converted.modules())
    torch.testing.assert_close(converted(x), model(x), rtol=1e-5, atol=1e-6)
    assert type(model.att1) is OFFICIAL.simam_module   # not inplace: the original is untouched


def test_convert_skips_a_simam_named_module_of_another_structure():
    class SimAM(torch.nn.Module):   # a same-named module with a parameter
        def __init__(self):
            super().__init__()
            self.activaton = torch.nn.Sigmoid()
            self.e_lambda = 1e-4
            self.scale = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.scale

    model = torch.nn.Sequential(SimAM(), OFFICIAL.simam_module())
    converted, report = fused_attn.convert(model)
    assert [r.path for r in report] == ["1"] and [s[0] for s in report.skipped] == ["0"]
    assert "parameters" in report.skipped[0][2]
