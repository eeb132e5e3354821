"""Property-based tests: random shapes, dtypes, layouts and values (large magnitudes, ties in max, constant
channels where std = 0), every backend that serves the op here against the reference backend."""
import pytest
import torch
from common import assert_close, kernel_backends

from fused_attn import functional as FA

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True)
DTYPES = st.sampled_from([torch.float32, torch.float64])


@st.composite
def tensors4d(draw, max_c=9, max_hw=6):
    b = draw(st.integers(1, 2))
    c = draw(st.integers(1, max_c))
    h = draw(st.integers(1, max_hw))
    w = draw(st.integers(1, max_hw))
    dtype = draw(DTYPES)
    kind = draw(st.sampled_from(["normal", "large", "ties", "constant_channels", "int_valued"]))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    if kind == "large":
        x = x * 1e4 + 3e4
    elif kind == "ties":
        x = torch.randint(0, 3, (b, c, h, w), generator=g).to(torch.float64)
    elif kind == "constant_channels":
        x = torch.randn(b, 1, h, w, generator=g, dtype=torch.float64).expand(b, c, h, w).clone()
    elif kind == "int_valued":
        x = torch.randint(-4, 5, (b, c, h, w), generator=g).to(torch.float64)
    x = x.to(dtype)
    if draw(st.booleans()):
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _fwd_bwd(fn, inputs):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    g = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    return [out, *torch.autograd.grad(out, inputs, g)]


def _compare(op, fn, inputs, tol=None):
    dtype = inputs[0].dtype
    ref = _fwd_bwd(lambda *a: fn(*a, "reference"), inputs)
    for backend in kernel_backends(op, dtype=dtype):
        got = _fwd_bwd(lambda *a, backend=backend: fn(*a, backend), inputs)
        for i, (a, e) in enumerate(zip(got, ref)):
            assert_close(a, e, dtype, f"{op} {backend} output {i}", tol)


def test_there_is_something_to_compare_or_skip():
    if not any(kernel_backends(op) for op in ("channel_pool", "apply_gates", "ema_core")):
        pytest.skip("no kernel backend serves CPU tensors here: fuzzing compares kernels with the reference")


@SETTINGS
@given(x=tensors4d(), stats=st.permutations(["max", "mean", "std"]).map(tuple), k=st.integers(1, 3))
def test_channel_pool(x, stats, k):
    if x.shape[1] == 1 and "std" in stats[:k]:
        stats = tuple(s for s in stats if s != "std") or ("max",)
        k = len(stats)
    _compare("channel_pool", lambda x, be: FA.channel_pool(x, stats[:k], backend=be), [x])


@SETTINGS
@given(x=tensors4d())
def test_apply_gates(x):
    b, c, h, w = x.shape
    gen = torch.Generator().manual_seed(int(x.abs().sum().item()) % 1000)
    cg = torch.rand(b, c, generator=gen, dtype=x.dtype)
    sp = torch.rand(b, h, w, generator=gen, dtype=x.dtype)
    _compare("apply_gates", lambda y, c_, s, r, be: FA.apply_gates(y, c_, s, r, backend=be), [x, cg, sp, x.flip(0)])


def _mlp_weights(x):
    """Fixed SE MLP weights (w1 [2, C], w2 [C, 2]) in x's dtype: the inputs alone vary."""
    c = x.shape[1]
    return (torch.linspace(-0.5, 0.5, 2 * c, dtype=x.dtype).reshape(2, c),
            torch.linspace(0.3, -0.3, 2 * c, dtype=x.dtype).reshape(c, 2))


@SETTINGS
@given(x=tensors4d())
def test_squeeze_excite_and_strip_pool(x):
    w1, w2 = _mlp_weights(x)
    _compare("squeeze_excite", lambda x, w1, w2, be: FA.squeeze_excite(x, w1, None, w2, None, backend=be), [x, w1, w2])
    _compare("ema_strip_pool", lambda x, be: FA.ema_strip_pool(x, backend=be), [x])


@SETTINGS
@given(x=tensors4d())
def test_dual_attention(x):
    w1, w2 = _mlp_weights(x)
    ws = torch.linspace(-0.4, 0.6, x.shape[1], dtype=x.dtype)
    _compare("dual_attention", lambda x, w1, w2, ws, be: FA.dual_attention(x, w1, None, w2, None, ws, None, backend=be),
             [x, w1, w2, ws])


@SETTINGS
@given(x=tensors4d(max_c=8), groups=st.sampled_from([1, 2, 4]))
def test_ema_core(x, groups):
    b, c, h, w = x.shape
    if c % groups:
        groups = 1
    cg = c // groups
    xs = x / (x.abs().amax() + 1)  # the GroupNorm of near-constant inputs amplifies rounding: keep values O(1)
    hw = torch.linspace(-2, 2, b * c * (h + w), dtype=x.dtype).reshape(b, c, h + w)
    x2 = xs.flip(1)
    gw, gb = torch.linspace(0.5, 1.5, cg, dtype=x.dtype), torch.linspace(-0.2, 0.2, cg, dtype=x.dtype)
    _compare("ema_core", lambda *a: FA.ema_core(*a[:-1], groups, backend=a[-1]), [xs, hw, x2, gw, gb],
             tol=1e-3 if x.dtype == torch.float32 else 1e-8)


@SETTINGS
@given(x=tensors4d(max_hw=9), scale=st.sampled_from([1.0, 8.0]))
def test_global_context_pool(x, scale):
    """Softmax pooling with flat to peaked logits (scale 8: logits spread over ~+-30, the online max rescaling);
    values kept O(1) (the backward's g . x - g . ctx cancels at the inputs' magnitude)."""
    xs = x / (x.abs().amax() + 1)
    ws = torch.linspace(-scale, scale, x.shape[1], dtype=x.dtype)
    _compare("global_context_pool", lambda x, ws, be: FA.global_context_pool(x, ws, None, backend=be), [xs, ws])
