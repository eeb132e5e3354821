"""Public functions reject bad input with errors naming the argument, before any kernel runs."""
import pytest
import torch

from fused_attn import functional as FA

X = torch.randn(2, 4, 3, 5)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: FA.channel_pool(torch.randn(4, 3, 5)), ValueError, "x must be 4-D"),
    (lambda: FA.channel_pool(X.long()), TypeError, "x must be a floating tensor"),
    (lambda: FA.channel_pool([1.0]), TypeError, "x must be a torch.Tensor"),
    (lambda: FA.channel_pool(torch.randn(2, 0, 3, 3)), ValueError, "at least one channel"),
    (lambda: FA.channel_pool(X, ("max", "median")), ValueError, "stats must be"),
    (lambda: FA.channel_pool(X, ("max", "max")), ValueError, "without repeats"),
    (lambda: FA.channel_pool(X, ()), ValueError, "non-empty"),
    (lambda: FA.squeeze_excite(X, torch.randn(2, 5), None, torch.randn(4, 2), None), ValueError, r"w1 must have shape \[Cr, 4\]"),
    (lambda: FA.squeeze_excite(X, torch.randn(2, 4), None, torch.randn(4, 3), None), ValueError, "w2 must have shape"),
    (lambda: FA.squeeze_excite(X, torch.randn(2, 4), torch.randn(3), torch.randn(4, 2), None), ValueError, "b1 must have shape"),
    (lambda: FA.squeeze_excite(X, torch.randn(2, 4, 3, 3), None, torch.randn(4, 2), None), ValueError, "1x1 conv weight"),
    (lambda: FA.squeeze_excite(X, torch.randn(2, 4), None, torch.randn(4, 2), None, act="tanh"), ValueError, "act must be"),
    (lambda: FA.squeeze_excite(X, torch.randn(2, 4), None, torch.randn(4, 2), None, gate="softmax"), ValueError, "gate must be"),
    (lambda: FA.ese(X, torch.randn(4, 3, 1, 1)), ValueError, r"weight must have shape \(4, 4\)"),
    (lambda: FA.ese(X, torch.randn(4, 4, 3, 3)), ValueError, "1x1 conv weight"),
    (lambda: FA.ese(X, torch.randn(4, 4), torch.randn(3)), ValueError, r"bias must have shape \(4,\)"),
    (lambda: FA.ese(X, torch.randn(4, 4), gate="relu"), ValueError, "gate must be one of"),
    (lambda: FA.ese(X, torch.randn(4, 4).int()), TypeError, "weight must be a floating"),
    (lambda: FA.eca(X, torch.randn(1, 1, 4)), ValueError, "odd number of taps"),
    (lambda: FA.eca(X, torch.randn(2, 1, 3)), ValueError, r"Conv1d\(1, 1, k\) weight"),
    (lambda: FA.eca(X, torch.randn(3, 3)), ValueError, r"weight must be a Conv1d"),
    (lambda: FA.eca(X, torch.randn(3).int()), TypeError, "weight must be a floating"),
    (lambda: FA.eca(X, torch.randn(3), circular=1), TypeError, "circular must be a bool"),
    (lambda: FA.eca(X, torch.randn(3), gate="tanh"), ValueError, "gate must be one of"),
    (lambda: FA.eca(torch.randn(4, 3, 5), torch.randn(3)), ValueError, "x must be 4-D"),
    (lambda: FA.dual_attention(X, torch.randn(2, 4), None, torch.randn(4, 2), None, torch.randn(1, 5, 1, 1), None), ValueError, "ws must be"),
    (lambda: FA.dual_attention(X, torch.randn(2, 4), None, torch.randn(4, 2), None, torch.randn(2, 4, 1, 1), None), ValueError, "ws must be"),
    (lambda: FA.dual_attention(X, torch.randn(2, 4), None, torch.randn(4, 2), None, torch.randn(4), torch.randn(2)), ValueError, "bs must be"),
    (lambda: FA.dual_attention(X, torch.randn(2, 4), None, torch.randn(4, 2), None, torch.randn(4).int(), None), TypeError, "ws must be a floating"),
    (lambda: FA.coord_gate(X, torch.rand(2, 4, 5), torch.rand(2, 4, 5)), ValueError, r"a_h must have shape \(2, 4, 3\)"),
    (lambda: FA.coord_gate(X, torch.rand(2, 4, 3), torch.rand(2, 4, 3)), ValueError, r"a_w must have shape \(2, 4, 5\)"),
    (lambda: FA.coord_gate(X, torch.rand(2, 4, 3), torch.rand(2, 4, 5), gate="tanh"), ValueError, "gate must be one of"),
    (lambda: FA.coord_gate(X, torch.rand(2, 4, 3).int(), torch.rand(2, 4, 5)), TypeError, "a_h must be a floating"),
    (lambda: FA.coord_gate(X, torch.rand(2, 4, 3), torch.rand(2, 4, 5), skip=1), TypeError, "skip must be a bool"),
    (lambda: FA.apply_gates(X, torch.rand(2, 3)), ValueError, r"channel must have shape \(2, 4\)"),
    (lambda: FA.apply_gates(X, None, torch.rand(2, 5, 3)), ValueError, r"spatial must have shape \(2, 3, 5\)"),
    (lambda: FA.apply_gates(X, residual=torch.randn(2, 4, 3, 4)), ValueError, "residual must have shape"),
    (lambda: FA.apply_gates(X, torch.rand(2, 4).bool()), TypeError, "channel must be a floating tensor"),
    (lambda: FA.ema_strip_pool(torch.randn(3, 3)), ValueError, "x must be 4-D"),
    (lambda: FA.ema_core(X, torch.randn(2, 4, 8), X, torch.randn(2), torch.randn(2), groups=3), ValueError,
     "not divisible by groups=3"),
    (lambda: FA.ema_core(X, torch.randn(2, 4, 7), X, torch.randn(2), torch.randn(2), groups=2), ValueError,
     r"hw must have shape \(2, 4, 8\)"),
    (lambda: FA.ema_core(X, torch.randn(2, 4, 8), X, torch.randn(4), torch.randn(2), groups=2), ValueError,
     r"gn_weight must have shape \(2,\)"),
    (lambda: FA.ema_core(X, torch.randn(2, 4, 8), X, torch.randn(2), torch.randn(2), groups=0), ValueError,
     "groups must be a positive int"),
    (lambda: FA.channel_gate(X, torch.randn(2, 4), None, torch.randn(4, 2), None, pooled=torch.randn(2, 3)),
     ValueError, r"pooled must have shape \(2, 4\)"),
    (lambda: FA.channel_gate(X, torch.randn(2, 4), None, torch.randn(4, 2), None, pooled=torch.randn(2, 4, 1)),
     ValueError, "pooled must be 2-D"),
    (lambda: FA.ema(X, torch.randn(2, 2, 1, 1), None, torch.randn(2, 2, 3, 3), None, torch.randn(2), torch.randn(2),
                    2, strips=torch.randn(2, 4, 7)), ValueError, r"strips must have shape \(2, 4, 8\)"),
    (lambda: FA.simam(torch.randn(3, 3)), ValueError, "x must be 4-D"),
    (lambda: FA.simam(X.int()), TypeError, "x must be a floating tensor"),
    (lambda: FA.simam(X, -1e-4), ValueError, "e_lambda must be a finite float >= 0"),
    (lambda: FA.simam(X, float("nan")), ValueError, "e_lambda must be a finite float >= 0"),
    (lambda: FA.simam(X, float("inf")), ValueError, "e_lambda must be a finite float >= 0"),
    (lambda: FA.simam(X, True), ValueError, "e_lambda must be a finite float >= 0"),
    (lambda: FA.simam(X, torch.tensor(1e-4)), ValueError, "e_lambda must be a finite float >= 0"),
    (lambda: FA.global_context_pool(X, torch.randn(1, 5, 1, 1)), ValueError, r"weight must be a 1x1 conv weight \[1, 4, 1, 1\]"),
    (lambda: FA.global_context_pool(X, torch.randn(2, 4, 1, 1)), ValueError, "weight must be"),
    (lambda: FA.global_context_pool(X, torch.randn(4), torch.randn(2)), ValueError, "bias must be a conv bias"),
    (lambda: FA.global_context_pool(X, torch.randn(4).int()), TypeError, "weight must be a floating"),
    (lambda: FA.global_context_pool(torch.randn(4, 3, 5), torch.randn(4)), ValueError, "x must be 4-D"),
])
def test_bad_input_raises_a_named_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_devices_must_match():
    meta = torch.rand(2, 4, device="meta")
    with pytest.raises(ValueError, match="one device"):
        FA.apply_gates(X, meta)


def test_inputs_are_not_mutated():
    x, c, s, r = X.clone(), torch.rand(2, 4), torch.rand(2, 3, 5), torch.randn(2, 4, 3, 5)
    copies = [t.clone() for t in (x, c, s, r)]
    FA.apply_gates(x, c, s, r)
    FA.channel_pool(x)
    FA.squeeze_excite(x, torch.randn(2, 4), None, torch.randn(4, 2), None)
    FA.eca(x, torch.randn(1, 1, 3), circular=True)
    FA.ese(x, torch.randn(4, 4, 1, 1), torch.randn(4))
    for before, after in zip(copies, (x, c, s, r)):
        assert torch.equal(before, after)


def test_sliced_non_contiguous_inputs_give_correct_results():
    big = torch.randn(2, 8, 6, 10)
    x = big[:, ::2, :, 1:6]  # non-contiguous in C and W
    assert not x.is_contiguous()
    assert torch.allclose(FA.channel_pool(x), torch.cat([x.max(1, keepdim=True)[0], x.mean(1, keepdim=True),
                                                         x.std(1, keepdim=True)], 1), atol=1e-6)
    assert torch.allclose(FA.ema_strip_pool(x), torch.cat([x.mean(3), x.mean(2)], 2), atol=1e-6)


def test_apply_gates_promotes_mixed_dtypes_like_eager():
    y, c = torch.randn(2, 4, 3, 5).bfloat16(), torch.rand(2, 4).bfloat16()
    s, r = torch.rand(2, 3, 5).bfloat16(), torch.randn(2, 4, 3, 5)
    out = FA.apply_gates(y, c, s, r)
    eager = r + y * c[:, :, None, None] * s[:, None]
    assert out.dtype == eager.dtype == torch.float32
    assert torch.allclose(out, r + (y.float() * c.float()[:, :, None, None] * s.float()[:, None]), atol=1e-6)


@pytest.mark.parametrize("shape", [(0, 4, 3, 5), (2, 4, 0, 5)], ids=["B=0", "H=0"])
def test_empty_inputs_give_empty_results_and_gradients(shape):
    """Empty x: every op returns eager's (empty) shape on every serving backend, forward and backward (EMA's
    3x3 conv rejects H = 0 as eager's does, so ema runs only with B = 0)."""
    from common import serving_backends
    c, g = shape[1], 2
    calls = {
        "channel_pool": (lambda x, be: FA.channel_pool(x, backend=be), (shape[0], 3, *shape[2:])),
        "squeeze_excite": (lambda x, be: FA.squeeze_excite(x, torch.randn(2, c), None, torch.randn(c, 2), None,
                                                           backend=be), shape),
        "eca": (lambda x, be: FA.eca(x, torch.randn(1, 1, 3), backend=be), shape),
        "ese": (lambda x, be: FA.ese(x, torch.randn(c, c, 1, 1), torch.randn(c), backend=be), shape),
        "dual_attention": (lambda x, be: FA.dual_attention(x, torch.randn(2, c), None, torch.randn(c, 2), None,
                                                           torch.randn(c), torch.randn(1), backend=be), shape),
        "apply_gates": (lambda x, be: FA.apply_gates(x, torch.rand(shape[0], c), torch.rand(shape[0], *shape[2:]),
                                                     x, backend=be), shape),
        "ema_strip_pool": (lambda x, be: FA.ema_strip_pool(x, backend=be), (*shape[:2], shape[2] + shape[3])),
        "coord_gate": (lambda x, be: FA.coord_gate(x, torch.rand(*shape[:3]), torch.rand(*shape[:2], shape[3]),
                                                   backend=be), shape),
        "ema_core": (lambda x, be: FA.ema(x, torch.randn(2, 2, 1, 1), None, torch.randn(2, 2, 3, 3), None,
                                          torch.ones(2), torch.zeros(2), g, backend=be), shape),
        "simam": (lambda x, be: FA.simam(x, backend=be), shape),
        "global_context_pool": (lambda x, be: FA.global_context_pool(x, torch.randn(c), torch.randn(1), backend=be),
                                shape[:2]),
    }
    for op, (call, expected) in calls.items():
        if op == "ema_core" and shape[0]:
            continue
        for backend in serving_backends(op):
            x = torch.randn(shape, requires_grad=True)
            out = call(x, backend)
            assert tuple(out.shape) == expected, f"{op} {backend}"
            (grad,) = torch.autograd.grad(out.sum(), x)
            assert grad.shape == x.shape, f"{op} {backend}"


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_nan_and_inf_propagate_like_the_reference(channels_last):
    """+inf, -inf and NaN in single channels give the reference's outputs on every serving backend: max and mean
    are +-inf or NaN exactly where the reference has them, std is NaN there (inf - inf), and other pixels stay
    finite. Channel 0 and a middle channel both hold specials, so running statistics see a special first and
    finite values after it."""
    from common import serving_backends
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    x[0, 0, 0, 0] = float("inf")
    x[0, 3, 0, 1] = float("inf")
    x[1, 0, 1, 1] = float("-inf")
    x[1, 2, 2, 3] = float("nan")
    x[0, 2, 2, 2], x[0, 4, 2, 2] = float("inf"), float("-inf")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = FA.channel_pool(x, ("max", "mean", "std"), backend="reference")
    assert expected[0, 1, 0, 0] == float("inf") and expected[1, 1, 1, 1] == float("-inf")  # the cases are real
    for backend in serving_backends("channel_pool", "cpu", torch.float64):
        out = FA.channel_pool(x, ("max", "mean", "std"), backend=backend)
        special = ~expected.isfinite()
        same = (out == expected) | (out.isnan() & expected.isnan())
        assert bool(same[special].all()), f"{backend}: +-inf/NaN differ from the reference at {(special & ~same).nonzero()}"
        assert bool(out[~special].isfinite().all()), f"{backend}: non-finite where the reference is finite"
        torch.testing.assert_close(out[~special], expected[~special], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_channel_std_is_accurate_far_from_zero(channels_last):
    """Data near 1000 with unit spread (C = 37): float32 mean and std, and the std gradient (which uses
    x - mean), stay within float32 tolerance of the float64 reference on every backend. A running mean of the
    raw values (plain Welford) loses ~4e-5 of std here; a sum-based mean loses ~1e-3 in the gradient."""
    from common import assert_close, serving_backends
    torch.manual_seed(0)
    x64 = 1000 + torch.randn(3, 37, 9, 11, dtype=torch.float64)
    if channels_last:
        x64 = x64.contiguous(memory_format=torch.channels_last)
    g = torch.randn(3, 1, 9, 11, dtype=torch.float64)
    x64.requires_grad_()
    ref = x64.std(1, keepdim=True)
    (ref_grad,) = torch.autograd.grad(ref, x64, g)
    for backend in serving_backends("channel_pool", "cpu", torch.float32):
        x = x64.detach().float().requires_grad_()
        out = FA.channel_pool(x, ("mean", "std"), backend=backend)
        assert_close(out[:, 1:], ref, torch.float32, what=f"{backend} std")
        assert_close(out[:, :1], x64.mean(1, keepdim=True), torch.float32, what=f"{backend} mean")
        (grad,) = torch.autograd.grad(out[:, 1:], x, g.float())
        assert_close(grad, ref_grad, torch.float32, what=f"{backend} grad std")


def test_precomputed_pooled_and_strips_give_the_same_results():
    """channel_gate(pooled=mean_hw x) and ema(strips=ema_strip_pool x) equal the calls that compute them, and
    mean_hw x is the mean of the H row means in the strips (what EMAX relies on), forward and backward, fp64."""
    x = torch.randn(2, 4, 5, 7, dtype=torch.float64, requires_grad=True)
    w1, w2 = torch.randn(2, 4, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    ema_w = (torch.randn(2, 2, 1, 1, dtype=torch.float64), torch.randn(2, dtype=torch.float64),
             torch.randn(2, 2, 3, 3, dtype=torch.float64), None, torch.rand(2, dtype=torch.float64) + 0.5,
             torch.randn(2, dtype=torch.float64))
    strips = FA.ema_strip_pool(x)
    torch.testing.assert_close(strips[:, :, :5].mean(-1), x.mean(dim=(2, 3)))
    gate = FA.channel_gate(x, w1, None, w2, None)
    gate_pooled = FA.channel_gate(x, w1, None, w2, None, pooled=strips[:, :, :5].mean(-1))
    out, out_strips = FA.ema(x, *ema_w, 2), FA.ema(x, *ema_w, 2, strips=strips)
    torch.testing.assert_close(gate_pooled, gate)
    torch.testing.assert_close(out_strips, out)
    g = torch.randn_like(out)
    grads = torch.autograd.grad((gate.sum(), (out * g).sum()), x)
    grads_shared = torch.autograd.grad((gate_pooled.sum(), (out_strips * g).sum()), x)
    torch.testing.assert_close(grads_shared, grads)
