"""fused_attn.convert on real torchvision and timm models (random weights, nothing downloaded): every
squeeze-excite block replaced (none left), parameter names and state_dicts unchanged, outputs and every
parameter gradient equal to the original model's (float64, to rounding), in train and eval mode, NCHW and
channels_last."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fused_attn
from fused_attn import nn as fnn

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

from timm.layers.eca import CecaModule, EcaModule  # noqa: E402
from timm.layers.squeeze_excite import EffectiveSEModule, SEModule  # noqa: E402
from timm.models._efficientnet_blocks import SqueezeExcite  # noqa: E402
from torchvision.ops.misc import SqueezeExcitation  # noqa: E402

SOURCES = (SqueezeExcitation, SEModule, SqueezeExcite, EffectiveSEModule, EcaModule, CecaModule)
# (builder, number of squeeze-excite blocks, input size)
MODELS = {
    "tv_efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(weights=None), 16, 64),
    "tv_mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(weights=None), 9, 64),
    "tv_regnet_y_400mf": (lambda: torchvision.models.regnet_y_400mf(weights=None), 16, 64),
    "timm_seresnet18": (lambda: timm.create_model("seresnet18"), 8, 64),
    "timm_efficientnet_b0": (lambda: timm.create_model("efficientnet_b0"), 16, 64),
    "timm_mobilenetv3_large_100": (lambda: timm.create_model("mobilenetv3_large_100"), 8, 64),
    "timm_ese_vovnet19b_dw": (lambda: timm.create_model("ese_vovnet19b_dw"), 4, 64),
    "timm_ecaresnet26t": (lambda: timm.create_model("ecaresnet26t"), 8, 64),
    "timm_resnet18_ceca": (lambda: timm.create_model("resnet18", block_args=dict(attn_layer="ceca")), 8, 64),
}


def _perturb_norms(model: nn.Module) -> None:
    """Random BatchNorm affine parameters and running statistics, so that eval mode is not the identity."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)


def _fwd_bwd(model: nn.Module, x: torch.Tensor) -> tuple:
    torch.manual_seed(1)   # the same dropout / stochastic-depth masks in both models
    out = model(x)
    grads = torch.autograd.grad(out.square().mean(), [p for p in model.parameters()])
    return out, grads


def _close(got: torch.Tensor, want: torch.Tensor, what: str, floor: float = 0.0) -> None:
    """max |got - want| <= 1e-7 max |want| + floor, in float64: only rounding differences (another summation
    order in the pooling), which train-mode BatchNorm amplifies; `floor` covers gradients that cancel to ~0."""
    err = (got - want).abs().max().item()
    scale = want.abs().max().item()
    assert err <= 1e-7 * scale + floor, f"{what}: max abs error {err:.3e} vs scale {scale:.3e}"


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("name", list(MODELS))
def test_convert_replaces_every_squeeze_excite_and_matches(name, layout):
    build, blocks, size = MODELS[name]
    torch.manual_seed(0)
    model = build()
    _perturb_norms(model)
    converted, report = fused_attn.convert(model)
    assert len(report) == blocks and not report.skipped, str(report)
    assert not any(isinstance(m, SOURCES) for m in converted.modules()), "a squeeze-excite block is left"
    assert sum(isinstance(m, fnn.AttentionModule) for m in converted.modules()) == blocks
    assert [n for n, _ in converted.named_parameters()] == [n for n, _ in model.named_parameters()]
    converted.load_state_dict(model.state_dict(), strict=True)
    model.load_state_dict(converted.state_dict(), strict=True)
    model, converted = model.double(), converted.double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        model, converted = model.to(memory_format=torch.channels_last), converted.to(memory_format=torch.channels_last)
    for train in (True, False):
        model.train(train), converted.train(train)
        want, want_grads = _fwd_bwd(model, x)
        got, got_grads = _fwd_bwd(converted, x)
        _close(got, want, f"{name} train={train} output")
        floor = 1e-7 * max(g.abs().max().item() for g in want_grads)   # ReLU-kink flips at rounding level
        for (pname, _), a, b in zip(model.named_parameters(), got_grads, want_grads):
            _close(a, b, f"{name} train={train} grad {pname}", floor)


def test_convert_leaves_the_original_model_alone_and_inplace_shares():
    model = torchvision.models.mobilenet_v3_small(weights=None)
    before = copy.deepcopy(model.state_dict())
    converted, _ = fused_attn.convert(model)
    assert sum(isinstance(m, SqueezeExcitation) for m in model.modules()) == 9
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    same, report = fused_attn.convert(model, inplace=True)
    assert same is model and len(report) == 9
    assert model.features[1].block[1].fc1.weight is same.features[1].block[1].fc1.weight


def test_twins_load_the_sources_state_dicts_strictly_both_ways():
    pairs = [(SqueezeExcitation(24, 8, nn.SiLU, nn.Hardsigmoid), fnn.SqueezeExcitation(24, 8, nn.SiLU, nn.Hardsigmoid)),
             (SEModule(24, rd_channels=8), fnn.SEModule(24, 8)),
             (SqueezeExcite(24, rd_channels=6, act_layer=nn.SiLU), fnn.SqueezeExcite(24, 6, nn.SiLU)),
             (EffectiveSEModule(24), fnn.EffectiveSEModule(24)),
             (EcaModule(24), fnn.EcaModule(EcaModule(24).conv.kernel_size[0])),
             (CecaModule(24), fnn.CecaModule(CecaModule(24).conv.kernel_size[0]))]
    for src, twin in pairs:
        twin.load_state_dict(src.state_dict(), strict=True)
        src.load_state_dict(twin.state_dict(), strict=True)
        x = torch.randn(2, 24, 5, 7)
        torch.testing.assert_close(twin(x), src(x), rtol=1e-5, atol=1e-6)


def test_unsupported_blocks_are_reported_not_swapped():
    from torchvision.models.quantization.mobilenetv3 import QuantizableSqueezeExcitation
    model = nn.Sequential(SEModule(16, rd_channels=8, norm_layer=nn.BatchNorm2d), SEModule(16, add_maxpool=True),
                          SEModule(16, rd_channels=8, act_layer=nn.GELU), QuantizableSqueezeExcitation(16, 8))
    converted, report = fused_attn.convert(model)
    assert len(report) == 0
    reasons = [r for _, _, r in report.skipped]
    assert len(reasons) == 4
    assert "BatchNorm2d" in reasons[0] and "add_maxpool" in reasons[1] and "GELU" in reasons[2]
    assert "subclass" in reasons[3]
    assert [type(m) for m in converted] == [type(m) for m in model]


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_recording_keeps_the_channel_gate(backend):
    if backend not in fused_attn.available_backends("cpu"):
        pytest.skip(f"{backend} not available")
    src = SqueezeExcitation(16, 4)
    twin = fnn.SqueezeExcitation.from_source(src, backend)
    x = torch.randn(2, 16, 5, 5)
    with fused_attn.record_attention(twin) as maps:
        out = twin(x)
    torch.testing.assert_close(out, src(x))
    torch.testing.assert_close(maps[type(twin).__name__]["channel"], src._scale(x).flatten(1))


def test_converted_block_compiles_fullgraph():
    src = SqueezeExcite(16, rd_channels=4, act_layer=nn.SiLU)
    twin = fnn.SqueezeExcite.from_source(copy.deepcopy(src))
    compiled = torch.compile(twin, fullgraph=True)
    x = torch.randn(2, 16, 6, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = compiled(x)
    torch.testing.assert_close(out, src(x))
    assert out.is_contiguous(memory_format=torch.channels_last)
    out.sum().backward()


def test_ultralytics_cbam_channel_attention_is_swapped():
    """ultralytics' CBAM = ChannelAttention then SpatialAttention: its channel half becomes the fused twin."""
    from ultralytics.nn.modules import CBAM
    model = CBAM(32, kernel_size=7)
    converted, report = fused_attn.convert(model)
    assert [r.path for r in report] == ["channel_attention"]
    assert isinstance(converted.channel_attention, fnn.ChannelAttention)
    x = torch.randn(2, 32, 9, 7, dtype=torch.float64)
    model, converted = model.double(), converted.double()
    want, want_grads = _fwd_bwd(model, x)
    got, got_grads = _fwd_bwd(converted, x)
    _close(got, want, "CBAM output")
    for a, b in zip(got_grads, want_grads):
        _close(a, b, "CBAM grad")
