"""The drop-in modules against the seed modules (and the official EMA, a plain CBAM): strict state_dict loading,
forward and input / parameter gradients in float32 through every serving backend, NCHW and channels_last;
float64 gradcheck; recording; EMAX's dynamic grouping; torch.compile."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn
from test_mod_oracles import SEED, OfficialEMA, PlainCBAM, backends_for, check_parity, perturb_

import fused_attn
from fused_attn import nn as fnn
from fused_attn.nn import ema as ema_module

GATE_OPS = ("channel_squeeze", "apply_gates")
EMA_OPS = ("ema_strip_pool", "ema_core")

# kind -> (channels, ours(), reference(), reference forward or None, ops the module calls)
SPECS = {
    "SEBlock": (32, lambda: fnn.SEBlock(32), lambda: SEED.SEBlock(32), None, ("squeeze_excite",)),
    "MultiScaleAttention": (32, lambda: fnn.MultiScaleAttention(32), lambda: SEED.MultiScaleAttention(32), None,
                            GATE_OPS + ("channel_pool",)),
    "DualAttention": (16, lambda: fnn.DualAttention(16), lambda: SEED.DualAttention(16), None, GATE_OPS),
    "LiteDualAttention": (32, lambda: fnn.LiteDualAttention(32), lambda: SEED.LiteDualAttention(32), None,
                          GATE_OPS),
    "AttnResBlock": (16, lambda: fnn.AttnResBlock(16), lambda: SEED.AttnResBlock(16), None, GATE_OPS),
    "EMA": (16, lambda: fnn.EMA(16, factor=4), lambda: OfficialEMA(16, factor=4), None, EMA_OPS),
    "EMA-factor32": (32, lambda: fnn.EMA(32), lambda: OfficialEMA(32), None, EMA_OPS),
    "EMAX": (32, lambda: fnn.EMAX(32, factor=8), lambda: SEED.EMAX(32, factor=8), lambda m: lambda x: m(x, groups=8),
             EMA_OPS + ("apply_gates", "squeeze_excite")),
}
SHAPES = [(2, 7, 9), (1, 5, 5), (2, 1, 6)]          # (B, H, W): odd sizes, batch 1, a single row
# 32 groups of one channel: one Triton-interpreter program per (b, group) is slow, so one shape suffices
SHAPES_OF = {"EMA-factor32": SHAPES[1:2]}
CASES = [pytest.param(kind, b, shape, id=f"{kind}-{b}-{'x'.join(map(str, shape))}")
         for kind, spec in SPECS.items() for b in backends_for(*spec[4]) for shape in SHAPES_OF.get(kind, SHAPES)]


def _pair(kind: str, backend=None):
    """(ours, reference, reference forward) with random parameters, ours loaded strictly from the reference."""
    _, make_ours, make_ref, ref_forward, _ = SPECS[kind]
    ref = perturb_(make_ref())
    ours = make_ours()
    ours.backend = backend
    for m in ours.modules():          # AttnResBlock holds its DualAttention
        if isinstance(m, fnn.AttentionModule):
            m.backend = backend
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours, ref, (ref_forward(ref) if ref_forward else ref)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("kind,backend,shape", CASES)
def test_parity_with_seed(kind, backend, shape, channels_last):
    ours, ref, ref_forward = _pair(kind, backend)
    x = torch.randn(shape[0], SPECS[kind][0], *shape[1:])
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = check_parity(ours, ref, x.contiguous(memory_format=fmt), ref_forward)
    assert out.is_contiguous(memory_format=fmt)


def _tiny(kind: str) -> nn.Module:
    return {"SEBlock": lambda: fnn.SEBlock(8, reduction=4),
            "MultiScaleAttention": lambda: fnn.MultiScaleAttention(8, reduction_ratio=4),
            "DualAttention": lambda: fnn.DualAttention(8),
            "LiteDualAttention": lambda: fnn.LiteDualAttention(16),
            "AttnResBlock": lambda: fnn.AttnResBlock(8),
            "EMA": lambda: fnn.EMA(8, factor=2),
            "EMAX": lambda: fnn.EMAX(8, factor=2, reduction=4),
            "EMAX-dynamic": lambda: fnn.EMAX(8, factor=4, reduction=4, dynamic_groups=True),
            "CBAM": lambda: fnn.CBAM(8, reduction=4, spatial_kernel_size=3)}[kind]()


@pytest.mark.parametrize("kind", ["SEBlock", "MultiScaleAttention", "DualAttention", "LiteDualAttention",
                                  "AttnResBlock", "EMA", "EMAX", "EMAX-dynamic", "CBAM"])
def test_gradcheck_whole_module(kind):
    """float64 gradcheck of the input and every parameter through the module (current backend setting)."""
    m = perturb_(_tiny(kind)).double()
    names, params = zip(*[(n, p.detach().clone().requires_grad_()) for n, p in m.named_parameters()])
    c = 16 if kind == "LiteDualAttention" else 8
    x = torch.randn(2, c, 3, 4, dtype=torch.float64, requires_grad=True)
    if kind == "LiteDualAttention":   # keep hardswish / hardsigmoid inputs off their kinks
        x = (x.detach() * 0.3).requires_grad_()

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,))

    # fast mode (random projections of the Jacobian): the full Jacobian costs minutes on a shared 2-core CPU;
    # the float32 parity tests compare every gradient element against the seeds
    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


# ------------------------------------------------------------------------------------ state_dict and repr
@pytest.mark.parametrize("kind", ["SEBlock", "MultiScaleAttention", "DualAttention", "LiteDualAttention",
                                  "AttnResBlock", "EMAX"])
def test_state_dict_and_repr_round_trip(kind):
    ours, ref, _ = _pair(kind)
    ref.load_state_dict(ours.state_dict(), strict=True)        # and back: the same keys and shapes
    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    buf.seek(0)
    fresh = SPECS[kind][1]()
    fresh.load_state_dict(torch.load(buf), strict=True)
    x = torch.randn(2, SPECS[kind][0], 5, 6)
    torch.testing.assert_close(fresh(x), ours(x), rtol=0, atol=0)
    mine, theirs = dict(ours.named_children()), dict(ref.named_children())
    for name, child in mine.items():                           # every layer prints as the seed's
        assert repr(child) == repr(theirs[name]), name
    if kind in ("MultiScaleAttention", "DualAttention", "LiteDualAttention", "AttnResBlock"):
        assert repr(ours) == repr(ref)
    assert "backend='reference'" in repr(fnn.SEBlock(32, backend="reference"))


def test_ema_loads_the_official_state_dict_and_checks_factor():
    ref = OfficialEMA(16, factor=4)
    fnn.EMA(16, factor=4).load_state_dict(ref.state_dict(), strict=True)
    with pytest.raises(ValueError, match="divisor"):
        fnn.EMA(20, factor=8)


# -------------------------------------------------------------------------------------------------- CBAM
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("backend", backends_for(*GATE_OPS, "channel_pool"))
@pytest.mark.parametrize("kwargs,plain", [
    ({}, dict(hidden=2)),
    ({"rd_ratio": 0.25, "act_layer": "silu", "gate_layer": "hardsigmoid", "mlp_bias": True},
     dict(hidden=8, act=nn.SiLU, gate=nn.Hardsigmoid, bias=True)),
    ({"rd_channels": 5, "act_layer": nn.Hardswish, "spatial_kernel_size": 3},
     dict(hidden=5, act=nn.Hardswish, kernel=3)),
], ids=["default", "rd_ratio-silu-hardsigmoid", "rd_channels-k3"])
def test_cbam_against_plain_cbam(kwargs, plain, backend, channels_last):
    ref = perturb_(PlainCBAM(32, **plain))
    ours = fnn.CBAM(32, backend=backend, **kwargs)
    ours.load_state_dict(ref.state_dict(), strict=True)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for b, h, w in SHAPES[:2]:
        check_parity(ours, ref, torch.randn(b, 32, h, w).contiguous(memory_format=fmt))


# ----------------------------------------------------------------------------------------------- recording
@pytest.mark.parametrize("kind", ["SEBlock", "MultiScaleAttention", "DualAttention", "LiteDualAttention",
                                  "AttnResBlock", "EMA", "EMAX", "EMAX-dynamic", "CBAM"])
def test_recording_off_stores_nothing_and_does_no_extra_work(kind, monkeypatch):
    m = _tiny(kind)
    x = torch.randn(2, 16 if kind == "LiteDualAttention" else 8, 5, 6)

    def boom(*args, **kwargs):
        raise AssertionError("attention map computed while recording is off")

    monkeypatch.setattr(ema_module, "ema_attention_map", boom)
    m(x)
    for sub in m.modules():
        if isinstance(sub, fnn.AttentionModule):
            assert not sub.record_attention and sub.attention_maps == {}


def test_recorded_maps_are_the_applied_gates():
    x = torch.randn(2, 16, 5, 7)
    dual = perturb_(fnn.DualAttention(16, record_attention=True))
    out = dual(x)
    maps = dual.attention_maps
    assert set(maps) == {"channel", "spatial"} and not maps["channel"].requires_grad
    torch.testing.assert_close(out, x * maps["channel"][:, :, None, None] * maps["spatial"][:, None])
    se = perturb_(fnn.SEBlock(16, 4, record_attention=True))
    torch.testing.assert_close(se(x), x * se.attention_maps["channel"][:, :, None, None])
    ema = perturb_(fnn.EMA(16, factor=4, record_attention=True))
    spatial = ema(x).reshape(2, 4, 4, 5, 7) / x.reshape(2, 4, 4, 5, 7)
    torch.testing.assert_close(spatial, ema.attention_maps["spatial"][:, :, None].expand_as(spatial))
    cbam = fnn.CBAM(16, 4, record_attention=True)
    cbam(x)
    assert cbam.attention_maps["channel"].shape == (2, 16) and cbam.attention_maps["spatial"].shape == (2, 5, 7)


def test_recording_gives_the_same_output_and_emax_maps():
    x = torch.randn(2, 16, 5, 7)
    for dynamic in (False, True):
        m = perturb_(fnn.EMAX(16, factor=4, reduction=4, dynamic_groups=dynamic))
        plain = m(x)
        with fused_attn.record_attention(m) as maps:
            torch.testing.assert_close(m(x), plain)
        assert not m.record_attention                       # restored
        shapes = {k: tuple(v.shape) for k, v in maps["EMAX"].items()}
        expect = {"spatial": (2, 5, 7) if dynamic else (2, 4, 5, 7), "channel": (2, 16), "global": (2, 16)}
        if dynamic:
            expect["groups"] = (2, len(m.group_choices))
        assert shapes == expect


def test_record_attention_context_on_a_model():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), fnn.SEBlock(16, 4), nn.ReLU(), fnn.AttnResBlock(16))
    with fused_attn.record_attention(model) as maps:
        assert model[1].record_attention and model[3].attn.record_attention
        model(torch.randn(1, 3, 9, 9))
    assert sorted(maps) == ["1", "3.attn"] and maps["3.attn"]["spatial"].shape == (1, 7, 7)
    assert not model[1].record_attention and not model[3].attn.record_attention
    with pytest.raises(ValueError, match="no fused_attn attention modules"):
        with fused_attn.record_attention(nn.Conv2d(3, 3, 1)):
            pass


# ----------------------------------------------------------------------------------------- EMAX dynamic
def _dynamic_reference(m: fnn.EMAX, seed_emax: nn.Module):
    """sum_k softmax(controller columns g_k - 1)_k OfficialEMA_{g_k}(x), then the seed's channel / global gates."""
    emas = []
    for g in m.group_choices:
        src = m if g == m.groups else m.branches[str(g)]
        e = OfficialEMA(m.channels, factor=g)
        e.gn, e.conv1x1, e.conv3x3 = src.gn, src.conv1x1, src.conv3x3     # the very same parameters
        emas.append(e)
    columns = [g - 1 for g in m.group_choices]

    def forward(x):
        p = seed_emax.group_controller(x.mean(dim=(2, 3)))[:, columns].softmax(dim=-1)
        spatial = sum(p[:, k, None, None, None] * e(x) for k, e in enumerate(emas))
        fused = spatial + seed_emax.gamma * x * seed_emax.channel_gate(x)
        return fused * seed_emax.global_attn(fused)
    return forward


def test_emax_dynamic_is_the_expected_mixture_with_gradients():
    m = perturb_(fnn.EMAX(32, factor=8, dynamic_groups=True))
    assert m.group_choices == (2, 4, 8) and sorted(m.branches) == ["2", "4"]
    seed = SEED.EMAX(32, factor=8)
    seed.load_state_dict(m.state_dict(), strict=False)   # dynamic mode adds the branches' keys
    for name in ("channel_gate", "group_controller", "global_attn"):
        setattr(seed, name, getattr(m, name))            # share, so parameter gradients compare by name
    seed.gamma = m.gamma
    check_parity(m, m, torch.randn(2, 32, 5, 7), _dynamic_reference(m, seed))
    x = torch.randn(2, 32, 5, 7)
    m.zero_grad()
    m(x).square().sum().backward()
    assert m.group_controller.weight.grad.abs().sum() > 0


def test_emax_dynamic_with_one_choice_is_fixed_mode():
    fixed = perturb_(fnn.EMAX(16, factor=4, reduction=4))
    dyn = fnn.EMAX(16, factor=4, reduction=4, dynamic_groups=True, group_choices=[4])
    dyn.load_state_dict(fixed.state_dict(), strict=True)
    x = torch.randn(2, 16, 5, 7)
    torch.testing.assert_close(dyn(x), fixed(x))
    with pytest.raises(ValueError, match="divisor"):
        fnn.EMAX(16, factor=4, dynamic_groups=True, group_choices=[3])
    with pytest.raises(ValueError, match="exceeds"):
        fnn.EMAX(16, factor=4, dynamic_groups=True, group_choices=[8])


def test_emax_dynamic_is_deterministic_and_sync_free():
    m = perturb_(fnn.EMAX(16, factor=4, reduction=4, dynamic_groups=True)).eval()
    x = torch.randn(2, 16, 5, 7, requires_grad=True)
    first = m(x)
    assert torch.equal(first, m(x))
    # fullgraph tracing fails on any data-dependent host read (.item(), bool(), .tolist(), multinomial + mode)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, first)
    (gx,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(gx, torch.autograd.grad(first.sum(), x)[0])


# ------------------------------------------------------------------------------------------------- compile
def test_torch_compile_fullgraph():
    m = perturb_(_tiny("DualAttention"))
    x = torch.randn(2, 8, 5, 7, requires_grad=True)
    compiled = torch.compile(m, fullgraph=True)
    out = compiled(x)
    expected = m(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(torch.autograd.grad(out.sum(), x)[0], torch.autograd.grad(expected.sum(), x)[0])


@pytest.mark.parametrize("kind", ["SEBlock", "MultiScaleAttention", "LiteDualAttention", "AttnResBlock", "EMA",
                                  "EMAX", "CBAM"])
def test_fullgraph_capture(kind):
    """Every module traces as one graph (dynamo only: the inductor build above is the slow part)."""
    m = perturb_(_tiny(kind))
    x = torch.randn(2, 16 if kind == "LiteDualAttention" else 8, 5, 7)
    torch.testing.assert_close(torch.compile(m, fullgraph=True, backend="eager")(x), m(x))
