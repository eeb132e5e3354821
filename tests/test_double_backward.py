"""Second- and higher-order gradients through the fused twins, against the real torchvision / timm / official
modules: a gradient penalty (R1 / WGAN-GP style: the squared norm of d out / d x, then backward) and a
third-order derivative. The ops' own fp64 gradgradcheck on every backend is in tests/test_custom_ops.py; the
formula is fused_attn/ops/_double_backward.py."""
from __future__ import annotations

import pytest
import torch
from common import serving_backends

import fused_attn

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")
from timm.layers import cbam as timm_cbam  # noqa: E402
from timm.layers.coord_attn import CoordAttn  # noqa: E402
from timm.layers.eca import EcaModule  # noqa: E402
from timm.layers.global_context import GlobalContext  # noqa: E402
from timm.layers.squeeze_excite import SEModule  # noqa: E402
from torchvision.ops.misc import SqueezeExcitation  # noqa: E402

from bench.baselines import official  # noqa: E402

C = 16
BLOCKS = {
    "tv_SqueezeExcitation": lambda: SqueezeExcitation(C, 4),
    "timm_SEModule": lambda: SEModule(C, rd_ratio=1 / 4),
    "timm_EcaModule": lambda: EcaModule(C),
    "timm_CbamModule": lambda: timm_cbam.CbamModule(C, rd_ratio=1 / 4),
    "timm_CoordAttn": lambda: CoordAttn(C),
    "timm_GlobalContext": lambda: GlobalContext(C, fuse_add=True, fuse_scale=True),
    "official_simam": lambda: official.simam_module(),
    "official_EMA": lambda: official.EMA(C, factor=4),
}


def _pair(name: str, backend: str):
    torch.manual_seed(0)
    source = BLOCKS[name]().double()
    for p in source.parameters():  # nonzero everywhere (some blocks initialise weights or biases to zero)
        with torch.no_grad():
            p.add_(0.1 * torch.randn_like(p))
    twin, report = fused_attn.convert(source, backend=backend)
    assert report.replaced, f"{name}: not converted ({report})"
    return source, twin


def _penalty_grads(module, x):
    """d/d(params, x) of sum((d sum(out * w) / d x)^2): needs the backward's own backward."""
    x = x.detach().requires_grad_()
    out = module(x)
    weight = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    (gx,) = torch.autograd.grad((out * weight).sum(), x, create_graph=True)
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.autograd.grad(gx.square().sum(), [x] + params, allow_unused=True)


@pytest.mark.parametrize("backend", serving_backends("squeeze_excite"))
@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_gradient_penalty_matches_the_source_module(name, backend, channels_last):
    source, twin = _pair(name, backend)
    x = torch.randn(2, C, 7, 9, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    want = _penalty_grads(source, x)
    got = _penalty_grads(twin, x)
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None:
            assert g is None or not g.abs().any(), f"{name}: gradient {i} should be zero"
            continue
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10, msg=lambda m, i=i: f"{name} gradient {i}: {m}")


@pytest.mark.parametrize("backend", serving_backends("squeeze_excite"))
def test_third_order_derivative_matches_the_source_module(backend):
    """d^3 / dx^3 along fixed directions: the second backward's result stays differentiable."""
    source, twin = _pair("tv_SqueezeExcitation", backend)
    x0 = torch.randn(2, C, 5, 6, dtype=torch.float64)
    v = torch.randn_like(x0)

    def third(module):
        x = x0.clone().requires_grad_()
        (g1,) = torch.autograd.grad(module(x).sum(), x, create_graph=True)
        (g2,) = torch.autograd.grad((g1 * v).sum(), x, create_graph=True)
        (g3,) = torch.autograd.grad((g2 * v).sum(), x)
        return g3
    torch.testing.assert_close(third(twin), third(source), rtol=1e-9, atol=1e-10)


class _Relu6Hardsigmoid(torch.nn.Module):
    """hardsigmoid written as relu6(x + 3) / 6: the same function, which torch can differentiate twice (torch has
    no derivative of hardsigmoid_backward, so the real modules' Hardsigmoid cannot give the oracle)."""

    def forward(self, x):
        return torch.nn.functional.relu6(x + 3) / 6


def _hardsigmoid_blocks() -> dict:
    from timm.layers import EffectiveSEModule
    return {"tv_SqueezeExcitation_hardsigmoid": lambda: SqueezeExcitation(C, 4, torch.nn.Hardswish,
                                                                          torch.nn.Hardsigmoid),
            "timm_EcaModule_hardsigmoid": lambda: EcaModule(C, gate_layer="hard_sigmoid"),
            "timm_EffectiveSEModule": lambda: EffectiveSEModule(C)}


@pytest.mark.parametrize("backend", serving_backends("squeeze_excite"))
@pytest.mark.parametrize("name", list(_hardsigmoid_blocks()))
def test_gradient_penalty_through_a_hardsigmoid_gate(name, backend):
    """torch's Hardsigmoid has no double backward; the twins' hardsigmoid gates (SE, ECA, ESE ops) do: their
    gradient penalty equals the source's with the gate written as relu6(x + 3) / 6, to 1e-6 relative: the twins
    keep torch's first-order slope, the float 1/6 (3e-8 from the exact 1/6 relu6's gradient uses)."""
    torch.manual_seed(0)
    source = _hardsigmoid_blocks()[name]().double()
    for p in source.parameters():
        with torch.no_grad():
            p.add_(0.1 * torch.randn_like(p))
    twin, report = fused_attn.convert(source, backend=backend)
    assert report.replaced, str(report)
    oracle = source
    for parent in list(oracle.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, torch.nn.Hardsigmoid):
                setattr(parent, child_name, _Relu6Hardsigmoid())
    x = torch.randn(2, C, 7, 9, dtype=torch.float64) * 3   # gate inputs on both sides of the kinks at -3 and 3
    want = _penalty_grads(oracle, x)
    got = _penalty_grads(twin, x)
    for i, (g, w) in enumerate(zip(got, want)):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-8, msg=lambda m, i=i: f"{name} gradient {i}: {m}")
