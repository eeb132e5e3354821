"""The real ecosystem in the test environment: torchvision, timm and ultralytics import beside this torch, their
models build with random weights (nothing is downloaded: YOLO_OFFLINE=1), and fused_attn's squeeze-excite equals
their squeeze-excite modules, taken out of real models, on every backend, forward and gradients."""
from __future__ import annotations

import os

import pytest
import torch
from common import serving_backends
from torch import nn

from fused_attn import functional as FA

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")


def _se_modules(model: nn.Module, cls: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, cls)]


def _act_name(module: nn.Module) -> str:
    names = {nn.ReLU: "relu", nn.SiLU: "silu", nn.Hardswish: "hardswish", nn.Sigmoid: "sigmoid",
             nn.Hardsigmoid: "hardsigmoid"}
    return names[type(module)]


def _check_against(module: nn.Module, fc1: nn.Conv2d, fc2: nn.Conv2d, act: str, gate: str, backend: str,
                   layout: str) -> None:
    """fused squeeze_excite with module's own weights vs module itself: output, grad_x and the four weight grads."""
    c = fc1.in_channels
    x = torch.randn(2, c, 7, 5)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    want = module(xs[0])
    got = FA.squeeze_excite(xs[1], fc1.weight, fc1.bias, fc2.weight, fc2.bias, act, gate, backend=backend)
    torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)
    g = torch.randn_like(want)
    params = [fc1.weight, fc1.bias, fc2.weight, fc2.bias]
    want_grads = torch.autograd.grad(want, [xs[0], *params], g)
    got_grads = torch.autograd.grad(got, [xs[1], *params], g)
    for name, a, b in zip(("x", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"), got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-5, msg=lambda m, name=name: f"grad {name}: {m}")


def test_ultralytics_imports_offline():
    assert os.environ.get("YOLO_OFFLINE") == "1"
    from ultralytics.nn.modules import CBAM
    out = CBAM(16, kernel_size=7)(torch.randn(1, 16, 8, 8))
    assert out.shape == (1, 16, 8, 8)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("backend", serving_backends("squeeze_excite"))
def test_torchvision_efficientnet_b0_squeeze_excitation(backend, layout):
    """torchvision's efficientnet_b0 (random weights) holds 16 SqueezeExcitation blocks (SiLU, Sigmoid); the
    model runs, and fused squeeze_excite equals two of them (the first, the widest)."""
    from torchvision.ops.misc import SqueezeExcitation
    model = torchvision.models.efficientnet_b0(weights=None).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    blocks = _se_modules(model, SqueezeExcitation)
    assert len(blocks) == 16
    for se in (blocks[0], max(blocks, key=lambda m: m.fc1.in_channels)):
        _check_against(se, se.fc1, se.fc2, _act_name(se.activation), _act_name(se.scale_activation), backend,
                       layout)


@pytest.mark.parametrize("backend", serving_backends("squeeze_excite"))
def test_torchvision_mobilenet_v3_hardsigmoid_squeeze_excitation(backend):
    """mobilenet_v3_small's SqueezeExcitation: ReLU and Hardsigmoid."""
    from torchvision.ops.misc import SqueezeExcitation
    model = torchvision.models.mobilenet_v3_small(weights=None)
    se = _se_modules(model, SqueezeExcitation)[0]
    assert (_act_name(se.activation), _act_name(se.scale_activation)) == ("relu", "hardsigmoid")
    _check_against(se, se.fc1, se.fc2, "relu", "hardsigmoid", backend, "nchw")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("backend", serving_backends("squeeze_excite"))
def test_timm_seresnet18_se_module(backend, layout):
    """timm's seresnet18 (random weights): its SEModules (ReLU, sigmoid gate) against fused squeeze_excite."""
    from timm.layers.squeeze_excite import SEModule
    model = timm.create_model("seresnet18", pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    blocks = _se_modules(model, SEModule)
    assert len(blocks) == 8
    se = blocks[-1]
    assert isinstance(se.bn, nn.Identity) and not se.add_maxpool
    _check_against(se, se.fc1, se.fc2, _act_name(se.act), "sigmoid", backend, layout)


def _check_one_op_twin(src: nn.Module, twin: nn.Module, op: str, channels: int, layout: str, backend: str,
                       params: list, monkeypatch) -> None:
    """twin (convert's copy of src) on `backend` calls FA.<op> once per forward and no pooling op, and equals src
    in float64: output, grad_x and the gradients of `params` (names of parameters both share), for a dense and a
    `.sum()` (stride-0) gradient."""
    calls = []
    real_op, real_squeeze = getattr(FA, op), FA.channel_squeeze
    monkeypatch.setattr(FA, op, lambda *a, **k: calls.append(op) or real_op(*a, **k))
    monkeypatch.setattr(FA, "channel_squeeze", lambda *a, **k: calls.append("squeeze") or real_squeeze(*a, **k))
    twin.backend = backend
    x = torch.randn(3, channels, 9, 7, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    for grad_of in ("random", "sum"):
        xs = [x.clone().requires_grad_() for _ in range(2)]
        want, got = src(xs[0]), twin(xs[1])
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        g = torch.randn_like(want) if grad_of == "random" else None
        want_grads = torch.autograd.grad(want if g is not None else want.sum(),
                                         [xs[0]] + [src.get_parameter(n) for n in params], g)
        got_grads = torch.autograd.grad(got if g is not None else got.sum(),
                                        [xs[1]] + [twin.get_parameter(n) for n in params], g)
        for name, a, b in zip(["x"] + params, got_grads, want_grads):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12,
                                       msg=lambda m, n=name, g=grad_of: f"{g} grad {n}: {m}")
    assert calls == [op] * 2


def _eca_sources() -> dict:
    from timm.layers.eca import CecaModule, EcaModule

    from bench.baselines import official
    return {"timm EcaModule(C=72, k=5)": lambda: EcaModule(72),
            "timm EcaModule hard_sigmoid": lambda: EcaModule(40, gate_layer="hard_sigmoid"),
            "timm CecaModule(C=256, k=5)": lambda: CecaModule(256),
            "timm CecaModule(C=3, k=7)": lambda: CecaModule(kernel_size=7),
            "official eca_layer(C=48, k=3)": lambda: official.eca_layer(48, 3)}


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("backend", serving_backends("eca"))
@pytest.mark.parametrize("source", list(_eca_sources()))
def test_eca_twins_are_one_eca_op_and_match_the_sources(source, backend, layout, monkeypatch):
    """timm's EcaModule / CecaModule (zero and circular padding, Sigmoid and timm's HardSigmoid) and the official
    eca_layer: the converted twin runs one fused `eca` op (no separate pooling pass) and equals the source in
    float64, output, grad_x and the conv's grad, on every backend; a `.sum()` gradient (stride 0) too."""
    import fused_attn
    torch.manual_seed(0)
    src = _eca_sources()[source]().double()
    channels = next(v for k, v in {"C=72": 72, "hard_sigmoid": 40, "C=256": 256, "C=3": 3, "C=48": 48}.items()
                    if k in source)
    twin, report = fused_attn.convert(src)
    assert len(report) == 1 and not report.skipped, str(report)
    _check_one_op_twin(src, twin, "eca", channels, layout, backend, ["conv.weight"], monkeypatch)


def test_eca_with_an_mlp_keeps_the_pooled_route():
    """timm's EcaModule(use_mlp=True) (conv, act, conv2) is not one k-tap conv: the twin pools, runs the source's
    layers and scales (and still equals the source)."""
    from timm.layers.eca import EcaModule

    import fused_attn
    torch.manual_seed(0)
    src = EcaModule(32, use_mlp=True).double()
    twin, report = fused_attn.convert(src)
    assert len(report) == 1 and twin.fused_eca() is None
    x = torch.randn(2, 32, 5, 6, dtype=torch.float64)
    torch.testing.assert_close(twin(x), src(x), rtol=1e-12, atol=1e-12)


def _ese_sources() -> dict:
    from timm.layers import EffectiveSEModule
    from timm.models.hgnet import EseModule
    from ultralytics.nn.modules import ChannelAttention
    return {"timm EffectiveSEModule(C=48) hard_sigmoid": lambda: EffectiveSEModule(48),
            "timm EffectiveSEModule(C=16) sigmoid": lambda: EffectiveSEModule(16, gate_layer="sigmoid"),
            "hgnet EseModule(C=40)": lambda: EseModule(40),
            "ultralytics ChannelAttention(C=24)": lambda: ChannelAttention(24)}


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("backend", serving_backends("ese"))
@pytest.mark.parametrize("source", list(_ese_sources()))
def test_ese_twins_are_one_ese_op_and_match_the_sources(source, backend, layout, monkeypatch):
    """timm's EffectiveSEModule (Hardsigmoid and Sigmoid), timm hgnet's EseModule and ultralytics'
    ChannelAttention (one C -> C 1x1 conv with bias, then the gate): the converted twin runs one fused `ese` op
    and equals the source in float64, output, grad_x and the conv's weight and bias gradients, on every backend,
    with dense and `.sum()` gradients."""
    import fused_attn
    torch.manual_seed(0)
    src = _ese_sources()[source]().double()
    twin, report = fused_attn.convert(src)
    assert len(report) == 1 and not report.skipped, str(report)
    conv = next(n for n, m in src.named_modules() if isinstance(m, nn.Conv2d))
    channels = src.get_submodule(conv).in_channels
    _check_one_op_twin(src, twin, "ese", channels, layout, backend, [f"{conv}.weight", f"{conv}.bias"], monkeypatch)
