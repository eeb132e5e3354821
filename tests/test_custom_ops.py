"""The torch.library layer: fp64 gradcheck through the custom ops, opcheck (schema, fake kernels, autograd
registration, AOT dispatch) on NCHW and channels_last inputs, and torch.compile(fullgraph=True) forward and
backward with no graph break, for every backend that serves the op here."""
import pytest
import torch

import fused_attn  # noqa: F401  (registers the ops)
from fused_attn import functional as FA

from common import assert_close, randn4d, serving_backends

OPS = torch.ops.fused_attn


def _op_cases(backend, channels_last, dtype=torch.float64, b=2, c=6, h=5, w=3, groups=2):
    """(op name, op overload, args) for every forward and backward custom op; inputs require grad."""
    def x4():
        return randn4d(b, c, h, w, dtype=dtype, channels_last=channels_last, requires_grad=True)

    def t(*shape, positive=False):
        v = torch.rand(*shape, dtype=dtype) + 0.1 if positive else torch.randn(*shape, dtype=dtype)
        return v.requires_grad_()
    cr, cg = 3, c // groups
    x = x4()
    out, argmax, moments = OPS.channel_pool(x, "max,mean,std", backend)
    y, pooled, z1, z2 = OPS.squeeze_excite(x, t(cr, c), t(cr), t(c, cr), t(c), "relu", "sigmoid", backend)
    _, dpooled, dz1, dz2, dzs = OPS.dual_attention(x, t(cr, c), t(cr), t(c, cr), t(c), t(c), t(1), "relu", "sigmoid",
                                                   backend)
    hw = t(b, c, h + w)
    _, mean, rstd = OPS.ema_core(x, hw, x4(), t(cg), t(cg), groups, 1e-5, backend)
    g4 = x4().detach()
    return [
        ("channel_pool", OPS.channel_pool, (x4(), "max,mean,std", backend)),
        ("channel_pool", OPS.channel_pool, (x4(), "std,max", backend)),
        ("channel_pool", OPS.channel_pool_backward,
         (torch.randn_like(out), x.detach(), argmax, moments, "max,mean,std", backend)),
        ("channel_squeeze", OPS.channel_squeeze, (x4(), backend)),
        ("channel_squeeze", OPS.channel_squeeze_backward, (torch.randn(b, c, dtype=dtype), x.detach(), backend)),
        ("squeeze_excite", OPS.squeeze_excite, (x4(), t(cr, c), t(cr), t(c, cr), t(c), "hardswish", "hardsigmoid",
                                                backend)),
        ("squeeze_excite", OPS.squeeze_excite, (x4(), t(cr, c), None, t(c, cr), None, "relu", "sigmoid", backend)),
        ("squeeze_excite", OPS.squeeze_excite_backward,
         (g4, x.detach(), t(cr, c), t(cr), t(c, cr), t(c), pooled, z1, z2, "relu", "sigmoid", backend)),
        ("apply_gates", OPS.apply_gates, (x4(), t(b, c, positive=True), t(b, h, w, positive=True), x4(), backend)),
        ("apply_gates", OPS.apply_gates, (x4(), None, t(b, h, w), None, backend)),
        ("apply_gates", OPS.apply_gates_backward, (g4, x.detach(), t(b, c), t(b, h, w), backend)),
        ("dual_attention", OPS.dual_attention, (x4(), t(cr, c), t(cr), t(c, cr), t(c), t(c), t(1), "silu", "sigmoid",
                                                backend)),
        ("dual_attention", OPS.dual_attention, (x4(), t(cr, c), None, t(c, cr), None, t(c), None, "hardswish",
                                                "hardsigmoid", backend)),
        ("dual_attention", OPS.dual_attention_backward,
         (g4, x.detach(), t(cr, c), t(cr), t(c, cr), t(c), t(c), t(1), dpooled, dz1, dz2, dzs, "relu", "sigmoid",
          backend)),
        ("ema_strip_pool", OPS.ema_strip_pool, (x4(), backend)),
        ("ema_strip_pool", OPS.ema_strip_pool_backward, (torch.randn(b, c, h + w, dtype=dtype), x.detach(), backend)),
        ("ema_core", OPS.ema_core, (x4(), t(b, c, h + w), x4(), t(cg), t(cg), groups, 1e-5, backend)),
        ("ema_core", OPS.ema_core_backward, (g4, x.detach(), hw.detach(), x4().detach(), t(cg), t(cg), mean, rstd,
                                             groups, 1e-5, backend)),
    ]


def _all_cases():
    cases = []
    for channels_last in (False, True):
        for index, (op, overload, _) in enumerate(_op_cases("reference", channels_last)):
            for backend in serving_backends(op):
                layout = "cl" if channels_last else "nchw"
                cases.append(pytest.param(index, backend, channels_last, id=f"{index}-{overload}-{backend}-{layout}"))
    return cases


@pytest.mark.parametrize("index,backend,channels_last", _all_cases())
def test_opcheck(index, backend, channels_last):
    _, overload, args = _op_cases(backend, channels_last)[index]
    if "backward" in str(overload):  # backward ops are not differentiable (no double backward)
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(overload, args)


def _f64(*shape):
    return torch.randn(*shape, dtype=torch.float64)


# Tiny shapes: gradcheck evaluates the op twice per input element (and Triton's interpreter is slow).
GRADCHECK = {
    "channel_pool": lambda be: ([_f64(1, 4, 2, 3)], lambda x: FA.channel_pool(x, backend=be)),
    "channel_squeeze": lambda be: ([_f64(2, 3, 2, 3)], lambda x: FA.channel_squeeze(x, backend=be)),
    "squeeze_excite": lambda be: ([_f64(1, 4, 2, 3), _f64(2, 4), _f64(2), _f64(4, 2), _f64(4)],
                                  lambda *a: FA.squeeze_excite(*a, act="silu", backend=be)),
    "apply_gates": lambda be: ([_f64(1, 3, 2, 3), torch.rand(1, 3, dtype=torch.float64),
                                torch.rand(1, 2, 3, dtype=torch.float64), _f64(1, 3, 2, 3)],
                               lambda *a: FA.apply_gates(*a, backend=be)),
    "dual_attention": lambda be: ([_f64(1, 4, 2, 3), _f64(2, 4), _f64(2), _f64(4, 2), _f64(4), _f64(1, 4, 1, 1),
                                   _f64(1)], lambda *a: FA.dual_attention(*a, act="silu", backend=be)),
    "ema_strip_pool": lambda be: ([_f64(2, 3, 2, 3)], lambda x: FA.ema_strip_pool(x, backend=be)),
    "ema_core": lambda be: ([_f64(1, 4, 2, 3), _f64(1, 4, 5), _f64(1, 4, 2, 3), _f64(2), _f64(2)],
                            lambda *a: FA.ema_core(*a, groups=2, backend=be)),
}


@pytest.mark.parametrize("op,backend", [(op, be) for op in GRADCHECK for be in serving_backends(op, dtype=torch.float64)])
def test_gradcheck_fp64(op, backend):
    inputs, fn = GRADCHECK[op](backend)
    inputs = [i.requires_grad_() for i in inputs]
    assert torch.autograd.gradcheck(fn, inputs)


def _module_like(backend):
    """A small block using every op: what a fused attention module does."""
    def block(x, w1, w2, conv_w, hw, x2, gw, gb):
        se = FA.squeeze_excite(x, w1, None, w2, None, backend=backend)
        spatial = torch.sigmoid(torch.nn.functional.conv2d(FA.channel_pool(se, backend=backend), conv_w, padding=1))
        gate = FA.channel_gate(x, w1, None, w2, None, backend=backend)
        out = FA.apply_gates(se, gate, spatial, residual=x, backend=backend)
        return FA.ema_core(out, hw + FA.ema_strip_pool(out, backend=backend), x2, gw, gb, 2, backend=backend)
    return block


@pytest.mark.parametrize("backend", serving_backends("apply_gates"))
@pytest.mark.parametrize("channels_last", [False, True])
def test_compile_fullgraph_forward_and_backward(backend, channels_last):
    torch._dynamo.reset()
    b, c, h, w = 2, 8, 5, 6
    inputs = [randn4d(b, c, h, w, channels_last=channels_last), torch.randn(2, c), torch.randn(c, 2),
              torch.randn(1, 3, 3, 3), torch.randn(b, c, h + w), randn4d(b, c, h, w, channels_last=channels_last),
              torch.randn(c // 2), torch.randn(c // 2)]
    block = _module_like(backend)
    eager_in = [i.clone().requires_grad_() for i in inputs]
    comp_in = [i.clone().requires_grad_() for i in inputs]
    eager = block(*eager_in)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")(*comp_in)
    assert_close(compiled, eager)
    eager.square().sum().backward()
    compiled.square().sum().backward()
    for a, e in zip(comp_in, eager_in):
        assert_close(a.grad, e.grad)


def test_compile_inductor_fullgraph_runs_the_custom_ops():
    """The default inductor backend keeps the custom ops as extern calls and matches eager."""
    torch._dynamo.reset()
    x = torch.randn(2, 8, 5, 6, requires_grad=True)
    c, s = torch.rand(2, 8, requires_grad=True), torch.rand(2, 5, 6, requires_grad=True)

    def fn(x, c, s):
        return FA.apply_gates(x, c, s, residual=x) + FA.channel_pool(x, ("max", "mean")).sum(1, keepdim=True)
    compiled = torch.compile(fn, fullgraph=True)
    out = compiled(x, c, s)
    assert_close(out, fn(x, c, s))
    grads = torch.autograd.grad(out.sum(), (x, c, s))
    ref = torch.autograd.grad(fn(x, c, s).sum(), (x, c, s))
    for a, e in zip(grads, ref):
        assert_close(a, e)
