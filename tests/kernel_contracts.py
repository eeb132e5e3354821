"""Kernel-contract checks shared by the cpu and cuda backend tests (tests/test_cpu_backend.py,
tests/test_cuda_backend.py): each family's passes through the C++ shims (fused_attn/cpp, device-agnostic) against
fused_attn/reference on float64 copies of the same inputs, every output and auxiliary output compared.

Each check takes the test file's
  rand(shape, dtype=float32, layout="nchw", positive=False)   inputs on the device under test ("nchw",
                                                              "channels_last" or "sliced")
  check(actual, expected, dtype, what, like=None)             comparison (and layout of 4-D outputs, like `like`)
"""
from __future__ import annotations

import copy

import torch

from fused_attn import functional as FA
from fused_attn import nn as fnn
from fused_attn import ops
from fused_attn._layout import memory_format
from fused_attn.cpp import apply_gates as cpp_gates
from fused_attn.cpp import channel_pool as cpp_pool
from fused_attn.cpp import dual_attention as cpp_dual
from fused_attn.cpp import ema as cpp_ema
from fused_attn.cpp import squeeze_excite as cpp_se
from fused_attn.reference import apply_gates as ref_gates
from fused_attn.reference import channel_pool as ref_pool
from fused_attn.reference import dual_attention as ref_dual
from fused_attn.reference import ema as ref_ema
from fused_attn.reference import squeeze_excite as ref_se

from common import TOL, assert_close


PUBLIC_CASES = ("channel_pool", "channel_pool_cbam", "channel_squeeze", "squeeze_excite", "apply_gates",
                "ema_strip_pool", "ema_core", "dual_attention")


def f64(*ts):
    return [t.double() if isinstance(t, torch.Tensor) else t for t in ts]


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def channel_pool(rand, check, stats, shape, layout, dtype):
    x = rand(shape, dtype, layout)
    out, argmax, moments = cpp_pool.channel_pool_forward(x, stats)
    rout, rargmax, rmoments = ref_pool.channel_pool_forward(x.double(), stats)
    check(out, rout, dtype, "out", like=x)
    if "max" in stats:
        assert argmax.dtype == torch.int32 and torch.equal(argmax, rargmax)
    else:
        assert argmax.numel() == 0
    if "std" in stats:
        assert moments.dtype == _acc(dtype)
        check(moments, rmoments, dtype, "moments")
    else:
        assert moments.numel() == 0
    g = rand(out.shape, dtype)
    gx = cpp_pool.channel_pool_backward(g, x, argmax, moments, stats)
    check(gx, ref_pool.channel_pool_backward(g.double(), x.double(), rargmax, rmoments, stats), dtype, "grad_x", like=x)


def squeeze_excite(rand, check, shape, layout, dtype):
    x = rand(shape, dtype, layout)
    b, c = shape[:2]
    acc = _acc(dtype)
    s, gp = rand((b, c), acc, positive=True), rand((b, c), acc)
    g = rand(shape, dtype, layout)
    x64, g64, s64, gp64 = f64(x, g, s, gp)
    pooled = cpp_se.channel_squeeze_forward(x)
    assert pooled.dtype == acc
    check(pooled, ref_se.channel_squeeze_forward(x64), dtype, "channel_squeeze")
    check(cpp_se.channel_squeeze_backward(gp, x), ref_se.channel_squeeze_backward(gp64, x64), dtype,
          "channel_squeeze_backward", like=x)
    check(cpp_se.channel_scale_forward(x, s), ref_se.channel_scale_forward(x64, s64), dtype, "channel_scale", like=x)
    grad_gate = cpp_se.squeeze_excite_grad_gate(g, x)
    assert grad_gate.dtype == acc
    check(grad_gate, ref_se.squeeze_excite_grad_gate(g64, x64), dtype, "grad_gate")
    check(cpp_se.squeeze_excite_grad_input(g, s, gp, x), ref_se.squeeze_excite_grad_input(g64, s64, gp64, x64),
          dtype, "grad_input", like=x)


def dual_attention(rand, check, shape, layout, dtype):
    """Each pass of dual_attention (reduce, apply, grad_gates, grad_input)."""
    x, g = rand(shape, dtype, layout), rand(shape, dtype, layout)
    b, c, h, w = shape
    acc = _acc(dtype)
    ws, ch, sp = rand((c,), dtype), rand((b, c), acc, positive=True), rand((b, h, w), acc, positive=True)
    gl, gp = rand((b, h, w), acc), rand((b, c), acc)
    x64, g64, ws64, ch64, sp64, gl64, gp64 = f64(x, g, ws, ch, sp, gl, gp)
    pooled, logit = cpp_dual.dual_attention_reduce(x, ws)
    rpooled, rlogit = ref_dual.dual_attention_reduce(x64, ws64)
    assert pooled.dtype == logit.dtype == acc and logit.shape == (b, h, w)
    check(pooled, rpooled, dtype, "pooled")
    check(logit, rlogit, dtype, "logit")
    check(cpp_dual.dual_attention_apply(x, ch, sp), ref_dual.dual_attention_apply(x64, ch64, sp64), dtype, "apply",
          like=x)
    grad_ch, grad_sp = cpp_dual.dual_attention_grad_gates(g, x, ch, sp)
    rgrad_ch, rgrad_sp = ref_dual.dual_attention_grad_gates(g64, x64, ch64, sp64)
    check(grad_ch, rgrad_ch, dtype, "grad_channel")
    check(grad_sp, rgrad_sp, dtype, "grad_spatial")
    grad_x, grad_ws = cpp_dual.dual_attention_grad_input(g, x, ch, sp, ws, gl, gp)
    rgrad_x, rgrad_ws = ref_dual.dual_attention_grad_input(g64, x64, ch64, sp64, ws64, gl64, gp64)
    assert grad_ws.dtype == acc and grad_ws.shape == (c,)
    check(grad_x, rgrad_x, dtype, "grad_x", like=x)
    check(grad_ws, rgrad_ws, dtype, "grad_ws")


def apply_gates(rand, check, shape, parts, layout, dtype, spatial_dtype=None):
    """parts: (channel, spatial, residual) present; the residual in the other layout; spatial_dtype: the spatial
    gate's dtype (default: dtype)."""
    b, c, h, w = shape
    y = rand(shape, dtype, layout)
    channel = rand((b, c), dtype, positive=True) if parts[0] else None
    spatial = rand((b, h, w), spatial_dtype or dtype, positive=True) if parts[1] else None
    residual = rand(shape, dtype, "nchw" if layout == "channels_last" else "channels_last") if parts[2] else None
    y64, c64, s64, r64 = f64(y, channel, spatial, residual)
    check(cpp_gates.apply_gates_forward(y, channel, spatial, residual),
          ref_gates.apply_gates_forward(y64, c64, s64, r64), dtype, "out", like=y)
    g = rand(shape, dtype)
    gy, gc, gs = cpp_gates.apply_gates_backward(g, y, channel, spatial)
    rgy, rgc, rgs = ref_gates.apply_gates_backward(g.double(), y64, c64, s64)
    check(gy, rgy, dtype, "grad_y", like=y)
    for name, got, want, gate in (("grad_channel", gc, rgc, channel), ("grad_spatial", gs, rgs, spatial)):
        if gate is None:
            assert got.numel() == 0, name
        else:
            assert got.dtype == gate.dtype and got.is_contiguous(), name
            check(got, want, max(dtype, gate.dtype, key=TOL.get), name)  # returned in the gate's dtype


def ema_strip_pool(rand, check, shape, layout, dtype):
    x = rand(shape, dtype, layout)
    pooled = cpp_ema.ema_strip_pool_forward(x)
    assert pooled.dtype == dtype and pooled.is_contiguous()
    check(pooled, ref_ema.ema_strip_pool_forward(x.double()), dtype, "pooled")
    g = rand(pooled.shape, dtype)
    check(cpp_ema.ema_strip_pool_backward(g, x), ref_ema.ema_strip_pool_backward(g.double(), x.double()), dtype,
          "grad_x", like=x)


def ema_core(rand, check, shape, groups, layout, dtype):
    """x, x2 and grad_out each read in their own layout ("mixed": x channels_last, x2 NCHW, grad sliced)."""
    mixed = layout == "mixed"
    b, c, h, w = shape
    cg = c // groups
    x = rand(shape, dtype, "channels_last" if mixed else layout)
    hw = rand((b, c, h + w), dtype)
    x2 = rand(shape, dtype, "nchw" if mixed else layout)
    gw, gb = rand((cg,), dtype, positive=True), rand((cg,), dtype)
    eps = 1e-5
    out, mean, rstd = cpp_ema.ema_core_forward(x, hw, x2, gw, gb, groups, eps)
    rout, rmean, rrstd = ref_ema.ema_core_forward(*f64(x, hw, x2, gw, gb), groups, eps)
    check(out, rout, dtype, "out", like=x)
    check(mean, rmean, dtype, "mean")
    check(rstd / rrstd, torch.ones_like(rrstd), dtype, "rstd (relative)")
    g = rand(shape, dtype, "sliced" if mixed else layout)
    grads = cpp_ema.ema_core_backward(g, x, hw, x2, gw, gb, mean, rstd, groups, eps)
    rgrads = ref_ema.ema_core_backward(*f64(g, x, hw, x2, gw, gb, rmean, rrstd), groups, eps)
    names = ("grad_x", "grad_hw", "grad_x2", "grad_gn_weight", "grad_gn_bias")
    likes = (x, None, x2, None, None)
    for name, got, want, like, inp in zip(names, grads, rgrads, likes, (x, hw, x2, gw, gb)):
        assert got.dtype == inp.dtype and got.shape == inp.shape, name
        check(got, want, dtype, name, like=like)


# ------------------------------------------------------------------------------ public functions and custom ops
def public_cases(rand, dtype, layout, shape):
    """(name, function of (inputs, backend), inputs) for every public function, named as PUBLIC_CASES."""
    b, c, h, w = shape
    cr, groups = 3, 2
    cg = c // groups
    x = rand(shape, dtype, layout)
    cases = [
        ("channel_pool", lambda t, be: FA.channel_pool(t[0], ("max", "mean", "std"), backend=be), [x]),
        ("channel_pool_cbam", lambda t, be: FA.channel_pool(t[0], ("mean", "max"), backend=be), [x]),
        ("channel_squeeze", lambda t, be: FA.channel_squeeze(t[0], backend=be), [x]),
        ("squeeze_excite", lambda t, be: FA.squeeze_excite(t[0], t[1], t[2], t[3], t[4], backend=be),
         [x, rand((cr, c), dtype), rand((cr,), dtype), rand((c, cr), dtype), rand((c,), dtype)]),
        ("apply_gates", lambda t, be: FA.apply_gates(t[0], t[1], t[2], t[3], backend=be),
         [x, rand((b, c), dtype, positive=True), rand((b, h, w), dtype, positive=True), rand(shape, dtype, layout)]),
        ("ema_strip_pool", lambda t, be: FA.ema_strip_pool(t[0], backend=be), [x]),
        ("ema_core", lambda t, be: FA.ema_core(t[0], t[1], t[2], t[3], t[4], groups, backend=be),
         [x, rand((b, c, h + w), dtype), rand(shape, dtype, layout), rand((cg,), dtype, positive=True),
          rand((cg,), dtype)]),
        ("dual_attention", lambda t, be: FA.dual_attention(*t, act="silu", backend=be),
         [x, rand((cr, c), dtype), rand((cr,), dtype), rand((c, cr), dtype), rand((c,), dtype),
          rand((1, c, 1, 1), dtype), rand((1,), dtype)]),
    ]
    assert tuple(name for name, _, _ in cases) == PUBLIC_CASES
    return cases


def public_function(rand, check, case, layout, dtype, backend, shape=(2, 8, 6, 5)):
    """Public case `case` (index into PUBLIC_CASES) on `backend`: forward and every input gradient through the
    custom ops vs the reference backend on float64 copies; 4-D results keep their input's memory format."""
    name, fn, inputs = public_cases(rand, dtype, layout, shape)[case]
    inputs = [t.detach().requires_grad_() for t in inputs]
    out = fn(inputs, backend)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, inputs, g)
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    rout = fn(ref_inputs, "reference")
    rgrads = torch.autograd.grad(rout, ref_inputs, g.double())
    check(out, rout, dtype, f"{name} out", like=inputs[0] if out.dim() == 4 else None)
    for i, (got, want) in enumerate(zip(grads, rgrads)):
        check(got, want, dtype, f"{name} grad {i}", like=inputs[i] if got.dim() == 4 else None)


OPCHECK_CASES = ("channel_pool", "channel_pool_std_max", "channel_squeeze", "squeeze_excite", "apply_gates",
                 "apply_gates_spatial", "ema_strip_pool", "ema_core", "dual_attention", "dual_attention_hard")


def opcheck_cases(rand, layout, backend):
    """(op, args) for torch.library.opcheck, named as OPCHECK_CASES: every custom op, float32."""
    dtype = torch.float32
    x = rand((2, 8, 5, 6), dtype, layout).requires_grad_()
    b, c, h, w = x.shape
    groups, cg = 2, 4

    def leaf(*shape, positive=False, lay="nchw"):
        return rand(shape, dtype, lay, positive).requires_grad_()
    return [
        (ops.channel_pool.channel_pool, (x, "max,mean,std", backend)),
        (ops.channel_pool.channel_pool, (x, "std,max", backend)),
        (ops.squeeze_excite.channel_squeeze, (x, backend)),
        (ops.squeeze_excite.squeeze_excite, (x, leaf(3, c), leaf(3), leaf(c, 3), None, "relu", "sigmoid", backend)),
        (ops.apply_gates.apply_gates, (x, leaf(b, c, positive=True), leaf(b, h, w, positive=True),
                                       leaf(b, c, h, w, lay=layout), backend)),
        (ops.apply_gates.apply_gates, (x, None, leaf(b, h, w, positive=True), None, backend)),
        (ops.ema.ema_strip_pool, (x, backend)),
        (ops.ema.ema_core, (x, leaf(b, c, h + w), leaf(b, c, h, w, lay=layout), leaf(cg, positive=True), leaf(cg),
                            groups, 1e-5, backend)),
        (ops.dual_attention.dual_attention, (x, leaf(3, c), leaf(3), leaf(c, 3), leaf(c), leaf(c), leaf(1), "relu",
                                             "sigmoid", backend)),
        (ops.dual_attention.dual_attention, (x, leaf(3, c), None, leaf(c, 3), None, leaf(c), None, "hardswish",
                                             "hardsigmoid", backend)),
    ]


# (channels, constructor of backend) of every drop-in module, small.
MODULES = {
    "SEBlock": (32, lambda be: fnn.SEBlock(32, backend=be)),
    "CBAM": (32, lambda be: fnn.CBAM(32, reduction=4, backend=be)),
    "MultiScaleAttention": (32, lambda be: fnn.MultiScaleAttention(32, backend=be)),
    "DualAttention": (16, lambda be: fnn.DualAttention(16, backend=be)),
    "LiteDualAttention": (32, lambda be: fnn.LiteDualAttention(32, backend=be)),
    "AttnResBlock": (16, lambda be: fnn.AttnResBlock(16, backend=be)),
    "EMA": (16, lambda be: fnn.EMA(16, factor=4, backend=be)),
    "EMAX": (32, lambda be: fnn.EMAX(32, factor=8, backend=be)),
}


def module_matches_reference(rand, kind, layout, backend, device="cpu"):
    """Module `kind` on `backend` vs the same module (same, perturbed parameters) on the reference backend:
    forward, input gradient and every parameter gradient, float32; the output keeps x's memory format."""
    channels, make = MODULES[kind]
    ref = make("reference").to(device)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = copy.deepcopy(ref)
    for m in ours.modules():  # AttnResBlock holds its DualAttention
        if isinstance(m, fnn.AttentionModule):
            m.backend = backend
    x = rand((2, channels, 9, 7), layout=layout)
    xs = [x.detach().clone().requires_grad_() for _ in range(2)]
    outs = [m(t) for m, t in zip((ours, ref), xs)]
    g = torch.randn_like(outs[1])
    outs[0].backward(g)
    outs[1].backward(g)
    assert_close(outs[0], outs[1], torch.float32, f"{kind} out")
    assert memory_format(outs[0]) == memory_format(x)
    assert_close(xs[0].grad, xs[1].grad, torch.float32, f"{kind} grad_x")
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        if q.grad is None:  # a parameter this forward does not use
            assert p.grad is None, f"{kind} grad {name}"
        else:
            assert_close(p.grad, q.grad, torch.float32, f"{kind} grad {name}")


def assert_specials_and_close(out, ref, what):
    """+-inf / NaN exactly where `ref` has them, the finite rest within float32's tolerance."""
    special = ~ref.isfinite()
    same = (out == ref) | (out.isnan() & ref.isnan())
    assert bool(same[special].all()), f"{what}: +-inf / NaN differ at {(special & ~same).nonzero().tolist()}"
    assert_close(out[~special], ref[~special], torch.float32, what)


def channel_pool_specials(rand, layout):
    """Ties go to the first maximal channel and NaN counts as the maximum (torch.argmax), across lane groups;
    +-inf reach the mean as in torch.mean (std NaN there); Welford / two-pass std stays exact around a large mean."""
    x = rand((2, 70, 4, 6)).round()  # many ties
    x[0, 5, 1, 2] = float("nan")
    x[1, 33:, 0, 0] = float("nan")
    x[1, :, 2, 2] = float("-inf")
    xl = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
    out, argmax, _ = cpp_pool.channel_pool_forward(xl, ("max", "mean"))
    rout, rargmax, _ = ref_pool.channel_pool_forward(x, ("max", "mean"))
    assert torch.equal(argmax, rargmax)
    assert_specials_and_close(out, rout, "max, mean")
    x[0, 0, 3, 3] = x[0, 9, 3, 4] = float("inf")
    xl = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
    out = cpp_pool.channel_pool_forward(xl, ("max", "mean", "std"))[0]
    rout = ref_pool.channel_pool_forward(x, ("max", "mean", "std"))[0]
    assert rout[0, 1, 3, 3] == float("inf") and rout[1, 1, 2, 2] == float("-inf")  # the cases are real
    assert_specials_and_close(out, rout, "max, mean, std")
    big = rand((2, 37, 3, 5), layout=layout) + 1000.0
    assert_close(cpp_pool.channel_pool_forward(big, ("std",))[0], big.double().std(dim=1, keepdim=True),
                 torch.float32)
