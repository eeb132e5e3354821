"""Every op, through every backend that serves it here, against the independent seed-style formulation:
forward values and the gradients of all inputs (autograd of tests/seed_style.py), NCHW and channels_last."""
import pytest
import seed_style
import torch
from common import assert_close, randn4d, serving_backends

from fused_attn import functional as FA

SHAPES = [(2, 8, 5, 7), (1, 3, 1, 1), (3, 16, 4, 9)]
LAYOUTS = [False, True]


def _check(fn_ours, fn_seed, inputs, dtype, what, tol=None):
    leaves_a = [t.detach().clone().requires_grad_() for t in inputs]
    leaves_b = [t.detach().clone().requires_grad_() for t in inputs]
    out_a, out_b = fn_ours(*leaves_a), fn_seed(*leaves_b)
    assert_close(out_a, out_b, dtype, f"{what} forward", tol)
    g = torch.randn_like(out_b)
    grads_a = torch.autograd.grad(out_a, leaves_a, g)
    grads_b = torch.autograd.grad(out_b, leaves_b, g)
    for i, (ga, gb) in enumerate(zip(grads_a, grads_b)):
        assert_close(ga, gb, dtype, f"{what} grad of input {i}", tol)
    return out_a


@pytest.mark.parametrize("backend", serving_backends("channel_pool"))
@pytest.mark.parametrize("stats", [("max", "mean", "std"), ("max", "mean"), ("std",), ("mean", "max")])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", LAYOUTS)
def test_channel_pool(backend, stats, shape, channels_last):
    if shape[1] == 1 and "std" in stats:
        pytest.skip("C = 1: std is NaN (tested separately)")
    x = randn4d(*shape, dtype=torch.float64, channels_last=channels_last)
    out = _check(lambda x: FA.channel_pool(x, stats, backend=backend), lambda x: seed_style.channel_pool(x, stats),
                 [x], torch.float64, f"channel_pool{stats}")
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("backend", serving_backends("channel_pool"))
def test_channel_pool_single_channel_std_is_nan_like_torch(backend):
    x = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    out = FA.channel_pool(x, ("mean", "std"), backend=backend)
    assert torch.equal(out[:, 0], x[:, 0])
    assert torch.isnan(out[:, 1]).all() and torch.isnan(torch.std(x, dim=1)).all()


@pytest.mark.parametrize("backend", serving_backends("channel_pool"))
def test_channel_pool_max_ties_route_gradient_to_first_channel(backend):
    x = torch.zeros(1, 4, 2, 2, dtype=torch.float64)
    x[:, 1] = 1.0
    x[:, 3] = 1.0  # channels 1 and 3 tie for the max
    x.requires_grad_()
    FA.channel_pool(x, ("max",), backend=backend).sum().backward()
    expected = torch.zeros_like(x)
    expected[:, 1] = 1.0
    assert torch.equal(x.grad, expected)


@pytest.mark.parametrize("backend", serving_backends("channel_pool"))
def test_channel_pool_std_of_constant_channels_has_zero_gradient(backend):
    x = torch.full((1, 5, 2, 3), 2.5, dtype=torch.float64, requires_grad=True)
    out = FA.channel_pool(x, ("std",), backend=backend)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("backend", serving_backends("channel_squeeze"))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", LAYOUTS)
def test_channel_squeeze(backend, shape, channels_last):
    x = randn4d(*shape, dtype=torch.float64, channels_last=channels_last)
    _check(lambda x: FA.channel_squeeze(x, backend=backend), lambda x: x.mean(dim=(2, 3)), [x], torch.float64,
           "channel_squeeze")


@pytest.mark.parametrize("backend", serving_backends("dual_attention"))
@pytest.mark.parametrize("act,gate,bias", [("relu", "sigmoid", True), ("hardswish", "hardsigmoid", True),
                                           ("silu", "sigmoid", False)])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", LAYOUTS)
def test_dual_attention(backend, act, gate, bias, shape, channels_last):
    d = torch.float64
    b, c, h, w = shape
    gen = torch.Generator().manual_seed(3)
    x = randn4d(*shape, dtype=d, channels_last=channels_last)
    w1, w2 = torch.randn(2, c, dtype=d, generator=gen), torch.randn(c, 2, dtype=d, generator=gen)
    ws = torch.randn(1, c, 1, 1, dtype=d, generator=gen)
    biases = [torch.randn(2, dtype=d, generator=gen), torch.randn(c, dtype=d, generator=gen),
              torch.randn(1, dtype=d, generator=gen)] if bias else []
    if bias:
        ours = lambda x, w1, w2, ws, b1, b2, bs: FA.dual_attention(x, w1, b1, w2, b2, ws, bs, act, gate,  # noqa: E731
                                                                   backend=backend)
        seed = lambda x, w1, w2, ws, b1, b2, bs: seed_style.dual_attention(x, w1, b1, w2, b2, ws, bs, act, gate)  # noqa: E731
    else:
        ours = lambda x, w1, w2, ws: FA.dual_attention(x, w1, None, w2, None, ws, None, act, gate,  # noqa: E731
                                                       backend=backend)
        seed = lambda x, w1, w2, ws: seed_style.dual_attention(x, w1, None, w2, None, ws, None, act, gate)  # noqa: E731
    tol = 1e-7 if gate == "hardsigmoid" else None   # torch's float32 1/6 in its hardsigmoid backward (below)
    out = _check(ours, seed, [x, w1, w2, ws, *biases], d, f"dual_attention({act}, {gate})", tol)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("backend", serving_backends("dual_attention"))
def test_dual_attention_returns_its_gates(backend):
    x = torch.randn(2, 6, 4, 5, dtype=torch.float64)
    w1, w2, ws, bs = torch.randn(3, 6), torch.randn(6, 3), torch.randn(1, 6, 1, 1), torch.randn(1)
    args = [t.double() for t in (w1, w2, ws, bs)]
    out, ch, sp = FA.dual_attention(x, args[0], None, args[1], None, args[2], args[3], backend=backend,
                                    return_gates=True)
    assert_close(ch, seed_style.channel_gate(x, args[0], None, args[1], None).flatten(1))
    assert_close(sp, torch.sigmoid(torch.nn.functional.conv2d(x, args[2], args[3]))[:, 0])
    assert_close(out, x * ch[:, :, None, None] * sp[:, None])


@pytest.mark.parametrize("backend", serving_backends("squeeze_excite"))
@pytest.mark.parametrize("act,gate,bias", [("relu", "sigmoid", False), ("relu", "sigmoid", True),
                                           ("hardswish", "hardsigmoid", True), ("silu", "sigmoid", True)])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", LAYOUTS)
def test_squeeze_excite_and_channel_gate(backend, act, gate, bias, shape, channels_last):
    b, c, h, w = shape
    cr = max(c // 4, 1)
    d = torch.float64
    x = randn4d(*shape, dtype=d, channels_last=channels_last)
    w1, w2 = torch.randn(cr, c, dtype=d), torch.randn(c, cr, dtype=d)
    b1, b2 = (torch.randn(cr, dtype=d), torch.randn(c, dtype=d)) if bias else (None, None)
    if bias:
        args = [x, w1, b1, w2, b2]
        ours = lambda x, w1, b1, w2, b2: FA.squeeze_excite(x, w1, b1, w2, b2, act, gate, backend=backend)  # noqa: E731
        seed = lambda x, w1, b1, w2, b2: seed_style.squeeze_excite(x, w1, b1, w2, b2, act, gate)  # noqa: E731
        gate_ours = lambda x, w1, b1, w2, b2: FA.channel_gate(x, w1, b1, w2, b2, act, gate, backend=backend)  # noqa: E731
        gate_seed = lambda x, w1, b1, w2, b2: seed_style.channel_gate(x, w1, b1, w2, b2, act, gate).flatten(1)  # noqa: E731
    else:
        args = [x, w1, w2]
        ours = lambda x, w1, w2: FA.squeeze_excite(x, w1, None, w2, None, act, gate, backend=backend)  # noqa: E731
        seed = lambda x, w1, w2: seed_style.squeeze_excite(x, w1, None, w2, None, act, gate)  # noqa: E731
        gate_ours = lambda x, w1, w2: FA.channel_gate(x, w1, None, w2, None, act, gate, backend=backend)  # noqa: E731
        gate_seed = lambda x, w1, w2: seed_style.channel_gate(x, w1, None, w2, None, act, gate).flatten(1)  # noqa: E731
    # torch's hardsigmoid backward uses the float32 constant 1/6 even for float64 (relative error ~1e-8)
    tol = 1e-7 if gate == "hardsigmoid" else None
    out = _check(ours, seed, args, d, f"squeeze_excite({act}, {gate})", tol)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    _check(gate_ours, gate_seed, args, d, f"channel_gate({act}, {gate})", tol)


def test_squeeze_excite_accepts_conv_weights():
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    w1, w2 = torch.randn(2, 8, 1, 1, dtype=torch.float64), torch.randn(8, 2, 1, 1, dtype=torch.float64)
    assert_close(FA.squeeze_excite(x, w1, None, w2, None), seed_style.squeeze_excite(x, w1, None, w2, None))


@pytest.mark.parametrize("backend", serving_backends("apply_gates"))
@pytest.mark.parametrize("parts", ["c", "s", "r", "cs", "csr", "sr", ""])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", LAYOUTS)
def test_apply_gates(backend, parts, shape, channels_last):
    b, c, h, w = shape
    d = torch.float64
    y = randn4d(*shape, dtype=d, channels_last=channels_last)
    given = {"channel": torch.rand(b, c, dtype=d) if "c" in parts else None,
             "spatial": torch.rand(b, h, w, dtype=d) if "s" in parts else None,
             "residual": randn4d(*shape, dtype=d, channels_last=channels_last) if "r" in parts else None}
    names = [k for k, v in given.items() if v is not None]

    def call(fn, **kw):
        return lambda y, *ts: fn(y, **dict(zip(names, ts)), **kw)
    out = _check(call(FA.apply_gates, backend=backend), call(seed_style.apply_gates),
                 [y] + [given[n] for n in names], d, f"apply_gates({parts})")
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert out.data_ptr() != y.data_ptr()


def test_apply_gates_accepts_keepdim_gate_shapes():
    y = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    c, s = torch.rand(2, 4, 1, 1, dtype=torch.float64), torch.rand(2, 1, 3, 5, dtype=torch.float64)
    assert_close(FA.apply_gates(y, c, s), y * c * s)


@pytest.mark.parametrize("backend", serving_backends("ema_strip_pool"))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels_last", LAYOUTS)
def test_ema_strip_pool(backend, shape, channels_last):
    x = randn4d(*shape, dtype=torch.float64, channels_last=channels_last)
    _check(lambda x: FA.ema_strip_pool(x, backend=backend), seed_style.ema_strip_pool, [x], torch.float64,
           "ema_strip_pool")


EMA_SHAPES = [(2, 8, 5, 7, 2), (1, 4, 1, 1, 4), (2, 12, 6, 3, 3), (1, 6, 4, 4, 1)]


@pytest.mark.parametrize("backend", serving_backends("ema_core"))
@pytest.mark.parametrize("shape", EMA_SHAPES)
@pytest.mark.parametrize("channels_last", LAYOUTS)
def test_ema_core(backend, shape, channels_last):
    b, c, h, w, groups = shape
    cg, d = c // groups, torch.float64
    x = randn4d(b, c, h, w, dtype=d, channels_last=channels_last)
    x2 = randn4d(b, c, h, w, dtype=d, channels_last=channels_last)
    hw, gw, gb = torch.randn(b, c, h + w, dtype=d), torch.randn(cg, dtype=d), torch.randn(cg, dtype=d)
    out = _check(lambda *a: FA.ema_core(*a, groups, backend=backend),
                 lambda *a: seed_style.ema_core(*a, groups), [x, hw, x2, gw, gb], d, "ema_core")
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("backend", serving_backends("ema_core"))
@pytest.mark.parametrize("channels_last", LAYOUTS)
def test_ema_whole_block(backend, channels_last):
    b, c, h, w, groups = 2, 16, 6, 5, 4
    cg, d = c // groups, torch.float64
    x = randn4d(b, c, h, w, dtype=d, channels_last=channels_last)
    params = [torch.randn(cg, cg, 1, 1, dtype=d), torch.randn(cg, dtype=d), torch.randn(cg, cg, 3, 3, dtype=d),
              torch.randn(cg, dtype=d), torch.randn(cg, dtype=d), torch.randn(cg, dtype=d)]
    _check(lambda *a: FA.ema(*a, groups, backend=backend), lambda *a: seed_style.ema(*a, groups), [x] + params, d,
           "ema")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_reduced_precision_matches_float64_reference_within_tolerance(dtype):
    """Low-precision inputs accumulate in float32: results stay within the dtype's rounding of the fp64 value."""
    x = torch.randn(2, 64, 7, 7)
    xd = x.to(dtype)
    ref = seed_style.channel_pool(xd.double())
    assert_close(FA.channel_pool(xd), ref, dtype)
    c, s = torch.rand(2, 64), torch.rand(2, 7, 7)
    ref = seed_style.apply_gates(xd.double(), c.to(dtype).double(), s.to(dtype).double(), xd.double())
    assert_close(FA.apply_gates(xd, c.to(dtype), s.to(dtype), xd), ref, dtype)
    assert FA.channel_pool(xd).dtype == dtype
