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
