"""Automatic mixed precision: every public op and module under torch.autocast (CPU bf16; CUDA fp16 / bf16).

The oracle is eager autocast itself: the seed-style formulation of each op (tests/seed_style.py) and the seed
module of each drop-in module, run under the same autocast. Autocast lowers their convs / Linears / matmuls
and leaves pooling, mul and add in the dtype they receive; fused_attn's ops follow the same rule (no cast,
autocast off inside, fused_attn/ops/_autocast.py). Checked here:
  - output and gradient dtypes equal eager's;
  - values within a bf16 / fp16 tolerance relative to the output scale, forward and backward;
  - the ops accumulate in fp32: an fp32-accumulated sum of 1024 bf16 ones is 1024, a bf16 one stalls at 256;
  - inside an autocast region an op computes exactly what it computes outside (autocast does not reach in).
"""
from __future__ import annotations

import pytest
import seed_style
import torch
from common import assert_close, serving_backends
from test_mod_oracles import SEED, PlainCBAM, perturb_
from test_modules import SPECS, _dynamic_reference, _pair

from fused_attn import functional as FA
from fused_attn import nn as fnn
from fused_attn.models import vgg16_se

# (device, autocast dtype): CPU bf16 here; CUDA fp16 and bf16 on a GPU machine.
AMP = [pytest.param("cpu", torch.bfloat16, id="cpu-bf16"),
       pytest.param("cuda", torch.float16, id="cuda-fp16", marks=pytest.mark.cuda),
       pytest.param("cuda", torch.bfloat16, id="cuda-bf16", marks=pytest.mark.cuda)]
# relative to the output scale (tests/common.assert_close): one low-precision rounding of the eager path's
# convs / gates, propagated through a product of gates; gradients also sum such products over pixels
FWD_TOL = {torch.bfloat16: 3e-2, torch.float16: 5e-3}
GRAD_TOL = {torch.bfloat16: 6e-2, torch.float16: 1e-2}


def _amp_params(op_or_ops):
    """(device, amp dtype, backend) for every backend serving the op(s) on each AMP device."""
    ops = (op_or_ops,) if isinstance(op_or_ops, str) else op_or_ops
    params = []
    for p in AMP:
        device, dtype = p.values
        backends = [b for b in serving_backends(ops[0], device) if all(b in serving_backends(o, device) for o in ops)]
        for be in backends:
            params.append(pytest.param(device, dtype, be, id=f"{p.id}-{be}", marks=p.marks))
    return params


# --------------------------------------------------------------------------------------------------------- ops
def _op_case(op: str, device: str, x_dtype: torch.dtype):
    """(inputs, fused(backend), eager) for one public function; x in x_dtype, small tensors / weights in fp32."""
    b, c, h, w, g = 2, 8, 5, 6, 2
    cg = c // g

    def r(*shape, dtype=torch.float32, positive=False):
        t = torch.rand(*shape, device=device) + 0.2 if positive else torch.randn(*shape, device=device)
        return t.to(dtype)
    x = r(b, c, h, w, dtype=x_dtype)
    if op == "channel_pool":
        return [x], lambda be, x: FA.channel_pool(x, backend=be), seed_style.channel_pool
    if op == "channel_squeeze":
        return [x], lambda be, x: FA.channel_squeeze(x, backend=be), lambda x: x.mean(dim=(2, 3))
    if op == "channel_gate":
        return ([x, r(2, c), r(2), r(c, 2), r(c)], lambda be, *a: FA.channel_gate(*a, backend=be),
                lambda *a: seed_style.channel_gate(*a).flatten(1))
    if op == "squeeze_excite":
        return ([x, r(2, c), r(2), r(c, 2), r(c)], lambda be, *a: FA.squeeze_excite(*a, act="silu", backend=be),
                lambda *a: seed_style.squeeze_excite(*a, act="silu"))
    if op == "eca":              # the official eca_layer's forward (BangguWu/ECANet), k = 5
        return [x, r(1, 1, 5) * 0.5], lambda be, *a: FA.eca(*a, backend=be), _official_eca
    if op == "ese":              # timm's EffectiveSEModule forward (Hardsigmoid gate)
        return ([x, r(c, c, 1, 1) * c ** -0.5, r(c)], lambda be, *a: FA.ese(*a, backend=be),
                lambda x, w, b: x * torch.nn.functional.hardsigmoid(torch.nn.functional.conv2d(
                    x.mean((2, 3), keepdim=True), w, b)))
    if op == "apply_gates":      # a residual in fp32 while the branch is in x's dtype: eager promotes
        return ([x, r(b, c, positive=True), r(b, h, w, positive=True), r(b, c, h, w)],
                lambda be, *a: FA.apply_gates(*a, backend=be), seed_style.apply_gates)
    if op == "dual_attention":
        return ([x, r(2, c), r(2), r(c, 2), r(c), r(1, c, 1, 1), r(1)],
                lambda be, *a: FA.dual_attention(*a, act="silu", backend=be),
                lambda *a: seed_style.dual_attention(*a, act="silu"))
    if op == "ema_strip_pool":
        return [x], lambda be, x: FA.ema_strip_pool(x, backend=be), seed_style.ema_strip_pool
    if op == "ema_core":
        return ([x, r(b, c, h + w), r(b, c, h, w, dtype=x_dtype), r(cg, positive=True), r(cg)],
                lambda be, *a: FA.ema_core(*a, groups=g, backend=be), lambda *a: seed_style.ema_core(*a, groups=g))
    if op == "ema":
        return ([x, r(cg, cg, 1, 1) * 0.5, r(cg), r(cg, cg, 3, 3) * 0.3, r(cg), r(cg, positive=True), r(cg)],
                lambda be, *a: FA.ema(*a, groups=g, backend=be), lambda *a: seed_style.ema(*a, groups=g))
    if op == "simam":            # the official simam_module's forward (bench/baselines/official.py)
        return [x], lambda be, x: FA.simam(x, backend=be), _official_simam
    if op == "coord_gate":       # the gates in fp32 beside x (an fp32 gate next to a bf16 x promotes, as eager)
        return ([x, r(b, c, h, positive=True), r(b, c, w, positive=True)],
                lambda be, *a: FA.coord_gate(*a, backend=be),
                lambda x, a_h, a_w: x * a_w[:, :, None, :] * a_h[:, :, :, None])
    if op == "global_context_pool":   # timm's GlobalContext pooling: conv_attn, softmax over H W, matmul
        return ([x, r(1, c, 1, 1) * 0.5, r(1)], lambda be, *a: FA.global_context_pool(*a, backend=be),
                _eager_global_context_pool)
    raise ValueError(op)


def _official_eca(x, w):
    y = torch.nn.functional.adaptive_avg_pool2d(x, 1)
    y = torch.nn.functional.conv1d(y.squeeze(-1).transpose(-1, -2), w, padding=2).transpose(-1, -2).unsqueeze(-1)
    return x * torch.sigmoid(y).expand_as(x)


def _official_simam(x):
    n = x.shape[2] * x.shape[3] - 1
    d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
    return x * torch.sigmoid(d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + 1e-4)) + 0.5)


def _eager_global_context_pool(x, w, b):
    bsz, c, h, wd = x.shape
    attn = torch.softmax(torch.nn.functional.conv2d(x, w, b).reshape(bsz, 1, h * wd), dim=-1).unsqueeze(3)
    return (x.reshape(bsz, c, h * wd).unsqueeze(1) @ attn).reshape(bsz, c)


PUBLIC = ["channel_pool", "channel_squeeze", "channel_gate", "squeeze_excite", "eca", "ese", "apply_gates",
          "dual_attention",
          "ema_strip_pool", "ema_core", "ema", "simam", "coord_gate",
          "global_context_pool"]
OP_OF = {"channel_gate": "channel_squeeze", "ema": "ema_core"}


def _grads(out, inputs, g):
    return torch.autograd.grad(out, inputs, g)


@pytest.mark.parametrize("x_amp", [False, True], ids=["x-fp32", "x-amp"])
@pytest.mark.parametrize("op,device,amp_dtype,backend",
                         [pytest.param(op, *p.values, id=f"{op}-{p.id}", marks=p.marks)
                          for op in PUBLIC for p in _amp_params(OP_OF.get(op, op))])
def test_op_matches_eager_autocast(op, device, amp_dtype, backend, x_amp):
    """Forward and backward of each public function under autocast vs its seed-style formulation under the same
    autocast: equal output and gradient dtypes, values within the low-precision tolerance. x in fp32, or in the
    autocast dtype (x_amp: what an earlier autocast conv hands on)."""
    inputs, fused, eager = _op_case(op, device, amp_dtype if x_amp else torch.float32)
    ours_in = [t.detach().clone().requires_grad_() for t in inputs]
    eager_in = [t.detach().clone().requires_grad_() for t in inputs]
    with torch.autocast(device, dtype=amp_dtype):
        out = fused(backend, *ours_in)
        expected = eager(*eager_in)
    assert out.dtype == expected.dtype, f"output dtype {out.dtype}, eager autocast gives {expected.dtype}"
    assert_close(out, expected, tol=FWD_TOL[amp_dtype], what="forward")
    g = torch.randn_like(expected)
    for i, (a, e) in enumerate(zip(_grads(out, ours_in, g), _grads(expected, eager_in, g))):
        assert a.dtype == e.dtype == inputs[i].dtype, f"grad {i}: {a.dtype}, eager {e.dtype}"
        assert_close(a, e, tol=GRAD_TOL[amp_dtype], what=f"grad of input {i}")


RAW_OPS = {   # forward custom op -> args builder (x fp32 in; an autocast region must not change any output)
    "channel_pool": lambda x, be: (x, "max,mean,std", be),
    "channel_squeeze": lambda x, be: (x, be),
    "squeeze_excite": lambda x, be: (x, torch.randn(2, 8), torch.randn(2), torch.randn(8, 2), torch.randn(8),
                                     "relu", "sigmoid", be),
    "eca": lambda x, be: (x, torch.randn(5), True, "sigmoid", be),
    "ese": lambda x, be: (x, torch.randn(8, 8), torch.randn(8), "hardsigmoid", be),
    "apply_gates": lambda x, be: (x, torch.rand(2, 8), torch.rand(2, 5, 6), torch.randn_like(x), be),
    "dual_attention": lambda x, be: (x, torch.randn(2, 8), torch.randn(2), torch.randn(8, 2), torch.randn(8),
                                     torch.randn(8), torch.randn(1), "relu", "sigmoid", be),
    "ema_strip_pool": lambda x, be: (x, be),
    "ema_core": lambda x, be: (x, torch.randn(2, 8, 11), torch.randn_like(x), torch.rand(4) + 0.5, torch.randn(4),
                               2, 1e-5, be),
    "simam": lambda x, be: (x, 1e-4, be),
    "coord_gate": lambda x, be: (x, torch.rand(2, 8, 5), torch.rand(2, 8, 6), "none", True, be),
    "global_context_pool": lambda x, be: (x, torch.randn(8), torch.randn(1), be),
}


@pytest.mark.parametrize("op,backend", [(op, be) for op in RAW_OPS for be in serving_backends(op)])
def test_autocast_does_not_reach_inside_the_ops(op, backend):
    """Each custom op, forward and backward (the backward run inside the region too), gives bit for bit what it
    gives outside autocast: no input is cast and its internal math is not autocast (squeeze_excite's MLP ran in
    bf16 before the rule, returning bf16 auxiliary outputs where its fake kernel declares fp32)."""
    x = torch.randn(2, 8, 5, 6)
    args = RAW_OPS[op](x, backend)
    overload = getattr(torch.ops.fused_attn, op)

    def run():
        xg = x.clone().requires_grad_()
        outs = overload(xg, *args[1:])
        outs = outs if isinstance(outs, tuple) else (outs,)
        return [*outs, *torch.autograd.grad(outs[0], xg, torch.ones_like(outs[0]))]
    plain = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = run()
    for i, (p, a) in enumerate(zip(plain, amp)):
        assert a.dtype == p.dtype and torch.equal(a, p), f"output {i} (the last: grad of x)"


@pytest.mark.parametrize("device,amp_dtype,backend", _amp_params(("channel_pool", "channel_squeeze", "apply_gates")))
def test_ops_accumulate_in_fp32(device, amp_dtype, backend):
    """Sums of n = 4096 low-precision values accumulate in fp32: n values near 1 sum to about n, where a bf16
    accumulator stalls at 256 and an fp16 one at 2048. Checked on the channel mean / std, the H x W mean and
    apply_gates' channel-gate gradient (a sum over H x W), each within two roundings of the float64 result
    (relative: std is 0.01 here)."""
    n = 4096
    x = (1 + 0.01 * torch.randn(1, n, 2, 2, device=device)).to(amp_dtype)
    with torch.autocast(device, dtype=amp_dtype):
        pooled = FA.channel_pool(x, ("mean", "std"), backend=backend)
        xs = x.reshape(1, 4, 64, 64)
        squeezed = FA.channel_squeeze(xs, backend=backend)
        c = torch.ones(1, 4, device=device, dtype=amp_dtype, requires_grad=True)
        out = FA.apply_gates(xs, channel=c, backend=backend)
        (grad_c,) = torch.autograd.grad(out, c, torch.ones_like(out))
    x64, xs64 = x.double(), xs.double()
    assert pooled.dtype == squeezed.dtype == grad_c.dtype == amp_dtype
    checks = (("channel mean", pooled[:, 0], x64.mean(1)), ("channel std", pooled[:, 1], x64.std(1)),
              ("H x W mean", squeezed, xs64.mean((2, 3))), ("grad_c", grad_c, xs64.sum((2, 3))))
    for what, actual, expected in checks:
        torch.testing.assert_close(actual.double(), expected, rtol=2 ** -7, atol=0, msg=what)


# ------------------------------------------------------------------------------------------------------ modules
MODULES = [k for k in SPECS if k != "EMA-factor32"] + ["EMAX-dynamic", "CBAM"]
MODULE_OPS = {k: SPECS[k][4] for k in SPECS}
MODULE_OPS.update({"EMAX-dynamic": MODULE_OPS["EMAX"], "CBAM": ("channel_squeeze", "apply_gates", "channel_pool")})


def _module_pair(kind: str, backend: str):
    """(ours, reference module whose parameters we compare by name, reference forward, channels)."""
    if kind == "CBAM":
        ref = perturb_(PlainCBAM(32, hidden=2))
        ours = fnn.CBAM(32, backend=backend)
        ours.load_state_dict(ref.state_dict(), strict=True)
        return ours, ref, ref, 32
    if kind == "EMAX-dynamic":
        ours = perturb_(fnn.EMAX(32, factor=8, dynamic_groups=True, backend=backend))
        seed = SEED.EMAX(32, factor=8)
        seed.load_state_dict(ours.state_dict(), strict=False)
        for name in ("channel_gate", "group_controller", "global_attn"):
            setattr(seed, name, getattr(ours, name))          # shared: the reference differentiates ours' params
        seed.gamma = ours.gamma
        return ours, ours, _dynamic_reference(ours, seed), 32
    ours, ref, forward = _pair(kind, backend)
    return ours, ref, forward, SPECS[kind][0]


def _check_module_amp(ours, ref, ref_forward, x, device, amp_dtype, grad_names=None):
    """Forward under autocast, then the gradients of x and every parameter (or `grad_names`), vs the reference."""
    ours, ref = ours.to(device), ref.to(device)
    xa, xb = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    with torch.autocast(device, dtype=amp_dtype):
        out = ours(xa)
        expected = ref_forward(xb)
    assert out.dtype == expected.dtype, f"output dtype {out.dtype}, eager autocast gives {expected.dtype}"
    assert_close(out, expected, tol=FWD_TOL[amp_dtype], what="forward")
    pa, pb = dict(ours.named_parameters()), dict(ref.named_parameters())
    names = sorted(grad_names if grad_names is not None else pa)
    g = torch.randn_like(expected)
    ga = torch.autograd.grad(out, [xa] + [pa[n] for n in names], g, allow_unused=True)
    gb = torch.autograd.grad(expected, [xb] + [pb[n] for n in names], g, allow_unused=True)
    for name, a, b in zip(["input"] + names, ga, gb):
        if b is None:
            assert a is None or not a.any(), f"grad of {name}: the reference has none"
            continue
        assert a.dtype == b.dtype, f"grad of {name}: {a.dtype}, eager {b.dtype}"
        assert_close(a, b, tol=GRAD_TOL[amp_dtype], what=f"grad of {name}")
    return out


# x in the autocast dtype (the output of an earlier autocast conv) for one module per family; not CBAM /
# MultiScaleAttention: their channel max over bf16 values has near-ties that a 1-ulp difference flips (Triton's
# interpreter truncates fp32 -> bf16 casts where GPUs round to nearest), and the max gradient then goes to
# another channel.
AMP_INPUT = ("SEBlock", "DualAttention", "EMA", "EMAX")
# EMAX's dynamic mode runs the same ops as its fixed mode (every backend below): one backend suffices
ONE_BACKEND = ("EMAX-dynamic",)


def _module_params():
    params = []
    for kind in MODULES:
        amp = _amp_params(MODULE_OPS[kind])
        if kind in ONE_BACKEND:
            amp = [p for p in amp if p.values[2] == serving_backends(MODULE_OPS[kind][0], p.values[0])[0]]
        for p in amp:
            for x_amp in (False, True) if kind in AMP_INPUT else (False,):
                params.append(pytest.param(kind, *p.values, x_amp, marks=p.marks,
                                           id=f"{kind}-{p.id}-x-{'amp' if x_amp else 'fp32'}"))
    return params


@pytest.mark.parametrize("kind,device,amp_dtype,backend,x_amp", _module_params())
def test_module_matches_seed_under_autocast(kind, device, amp_dtype, backend, x_amp):
    """Every module vs its seed (official EMA, plain CBAM, the EMAX mixture) under the same autocast: output
    dtype equal to eager's (fp32 in -> fp32 out; a bf16 / fp16 input stays so, except in EMAX, whose fp32
    gamma promotes), forward and every gradient within tolerance."""
    ours, ref, forward, c = _module_pair(kind, backend)
    x = torch.randn(2, c, 5, 6, device=device).to(amp_dtype if x_amp else torch.float32)
    _check_module_amp(ours, ref, forward, x, device, amp_dtype)


@pytest.fixture(scope="module")
def vgg_pair():
    """(seed VGG16_SE, fused vgg16_se loaded from it): built once, the 134M parameters take seconds."""
    seed = SEED.vgg16_se(num_classes=10).eval()
    ours = vgg16_se(num_classes=10).eval()
    ours.load_state_dict(seed.state_dict(), strict=True)
    return seed, ours


@pytest.mark.parametrize("device,amp_dtype,backend", _amp_params("squeeze_excite"))
def test_vgg16_se_under_autocast(vgg_pair, device, amp_dtype, backend):
    """The whole VGG16-SE (fused SE blocks) vs the seed VGG16_SE under autocast: logits, input gradient and the SE
    blocks' and first conv's weight gradients (the 100M classifier weights' gradients are not asked for)."""
    seed, ours = vgg_pair
    for m in ours.modules():
        if isinstance(m, fnn.SEBlock):
            m.backend = backend
    names = ["features.0.weight"] + [n for n, _ in ours.named_parameters() if ".fc." in n]
    x = torch.randn(1, 3, 32, 32, device=device)
    _check_module_amp(ours, seed, seed, x, device, amp_dtype, grad_names=names)


# ------------------------------------------------------------------------------------------- mixed dtypes
def _mixed_cases(backend):
    """(op, args) with the mixed dtypes autocast produces: EMA's hw and x2 from bf16 convs beside an fp32 x (and
    the reverse), squeeze_excite's bf16 x with fp32 weights."""
    bf, f32 = torch.bfloat16, torch.float32
    cases = []
    for xd, cd in ((f32, bf), (bf, f32)):
        x = torch.randn(2, 8, 5, 6, dtype=xd)
        hw, x2 = torch.randn(2, 8, 11, dtype=cd), torch.randn(2, 8, 5, 6, dtype=cd)
        gw, gb = torch.rand(4) + 0.5, torch.randn(4)
        _, mean, rstd = torch.ops.fused_attn.ema_core(x, hw, x2, gw, gb, 2, 1e-5, backend)
        cases += [("ema_core", (x, hw, x2, gw, gb, 2, 1e-5, backend)),
                  ("ema_core_backward", (torch.randn_like(x), x, hw, x2, gw, gb, mean, rstd, 2, 1e-5, backend))]
    x, w1, b1, w2, b2 = torch.randn(2, 8, 5, 6, dtype=bf), torch.randn(2, 8), torch.randn(2), torch.randn(8, 2), None
    _, pooled, z1, z2 = torch.ops.fused_attn.squeeze_excite(x, w1, b1, w2, b2, "relu", "sigmoid", backend)
    cases += [("squeeze_excite", (x, w1, b1, w2, b2, "relu", "sigmoid", backend)),
              ("squeeze_excite_backward", (torch.randn_like(x), x, w1, b1, w2, b2, pooled, z1, z2, "relu", "sigmoid",
                                           backend))]
    return cases


@pytest.mark.parametrize("index", range(6))
@pytest.mark.parametrize("backend", serving_backends("ema_core"))
def test_mixed_dtype_ops_agree_with_their_fake_kernels(backend, index):
    """opcheck (real vs fake outputs: dtypes, shapes, strides) on the mixed dtypes autocast hands the ops. Eager
    autograd casts a gradient of the wrong dtype silently; a compiled backward trusts the fake kernel, so a
    mismatch there failed inside oneDNN's conv backward (EMA under autocast + torch.compile)."""
    op, args = _mixed_cases(backend)[index]
    if "backward" in op:
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    else:
        args = tuple(a.detach().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                     for a in args)
    torch.library.opcheck(getattr(torch.ops.fused_attn, op), args)


def test_cuda_rule_computes_low_precision_simam_in_float32():
    """simam's CUDA autocast rule (`upcast_on`; CUDA autocast runs the official code's pow and sum in float32, so
    its output is float32 for a float16 / bfloat16 x), run here through the rule's kernel under CPU autocast: a
    bfloat16 x gives the official simam of x in float32, and the gradient comes back in bfloat16."""
    from fused_attn.ops import _autocast
    kernel = _autocast._upcast_kernel("fused_attn::simam", torch._C.DispatchKey.AutocastCPU)
    x = torch.randn(2, 3, 5, 4, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _, _ = kernel(None, x, 1e-4, "reference")
    x32 = x.detach().float().requires_grad_()
    expected = _official_simam(x32)
    assert out.dtype == torch.float32
    assert_close(out, expected, tol=1e-5, what="forward")
    g = torch.randn_like(expected)
    (gx,) = torch.autograd.grad(out, x, g)
    assert gx.dtype == torch.bfloat16
    assert_close(gx, torch.autograd.grad(expected, x32, g)[0].bfloat16(), tol=GRAD_TOL[torch.bfloat16],
                 what="grad")
