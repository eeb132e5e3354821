"""The Triton backend against the reference: every kernel pass (the sample registry's "interpreter" grid) and the
public functions with backend="triton".

On a machine without a GPU the kernels run on CPU tensors through the Triton interpreter (conftest sets
TRITON_INTERPRET=1), so shapes are tiny; the same tests run on CUDA tensors when a GPU is present (the
`cuda` parameters, skipped elsewhere). The `tiles="small"` parameter shrinks the block-size heuristics
(16-element tiles, 64 target programs) so that every channel / pixel / row loop, every split and every
second-stage reduction runs, not only the single-tile fast path the tiny shapes would otherwise take.
"""
import warnings

import backend_contracts as bc
import pytest
import torch
from common import assert_close, randn4d

import fused_attn  # noqa: F401  (registers the ops)
from fused_attn import dispatch
from fused_attn import functional as FA
from fused_attn.testing import registry
from fused_attn.testing.cases import Case, check

pytest.importorskip("triton")
from fused_attn.backends.triton import _common as tcm  # noqa: E402

DEVICES = [
    pytest.param("cpu", id="cpu-interpreter", marks=pytest.mark.skipif(
        not dispatch._interpreting_triton(), reason="Triton runs CPU tensors only under TRITON_INTERPRET=1")),
    pytest.param("cuda", marks=pytest.mark.cuda),
]
triton_modules = bc.backend_module("triton")


@pytest.fixture(autouse=True)
def _quiet_interpreter():
    # the interpreter runs numpy on masked-out lanes too (0 / 0 where a result is discarded)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"triton\.runtime\.interpreter")
        yield


@pytest.fixture(params=["default", "small"])
def tiles(request, monkeypatch):
    if request.param == "small":
        monkeypatch.setattr(tcm, "TILE_ELEMS", 16)
        monkeypatch.setattr(tcm, "TARGET_PROGRAMS", 64)
    return request.param


# --------------------------------------------------------------------------------------- vs reference
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,case", bc.pass_params("interpreter"))
def test_pass_matches_reference(name, case, tiles, device):
    bc.check_pass(triton_modules, name, case, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op,case", bc.public_params("interpreter", variants_per_op=1))
def test_public_function_matches_reference(op, case, device):
    bc.check_public(op, case, "triton", device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_channel_pool_ties_nan_and_large_mean(layout, tiles, device):
    bc.check_channel_pool_specials(triton_modules, layout, device)


@pytest.mark.parametrize("device", DEVICES)
def test_channel_pool_constant_channels_have_zero_std_gradient(tiles, device):
    """Constant pixels have std 0 and a zero std gradient (as torch.std's), the rest as the reference."""
    x = torch.randint(0, 3, (2, 37, 3, 5), device=device).float()
    x[1, :, 2, 4] = 1.5
    grads = []
    for be in ("triton", "reference"):
        leaf = x.clone().requires_grad_()
        FA.channel_pool(leaf, ("max", "mean", "std"), backend=be).square().sum().backward()
        grads.append(leaf.grad)
    check(grads[0], grads[1], torch.float32, "grad_x")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", list(registry.OPS))
def test_strided_inputs_and_expanded_gradients(op, device):
    """Inputs not dense in any format (a slice) are copied once; a stride-0 grad_out (from .sum()) is read
    through its strides."""
    bc.check_public(op, Case((2, 4, 5, 6), torch.float64, "sliced", registry.OPS[op].variants[0]), "triton",
                    device, expanded_grad=True)


@pytest.mark.parametrize("device", DEVICES)
def test_two_stage_reductions_are_deterministic(device, monkeypatch):
    monkeypatch.setattr(tcm, "TILE_ELEMS", 16)
    monkeypatch.setattr(tcm, "TARGET_PROGRAMS", 64)
    y = randn4d(2, 9, 5, 7, device=device)
    c, s, g = torch.rand(2, 9, device=device), torch.rand(2, 5, 7, device=device), torch.randn_like(y)
    first = torch.ops.fused_attn.apply_gates_backward(g, y, c, s, "triton")
    again = torch.ops.fused_attn.apply_gates_backward(g, y, c, s, "triton")
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert torch.equal(FA.channel_squeeze(y, backend="triton"), FA.channel_squeeze(y, backend="triton"))


# ------------------------------------------------------------------------------------ torch.library layer
# On CPU tests/test_custom_ops.py runs gradcheck and opcheck for every serving backend, triton included.
@pytest.mark.cuda
@pytest.mark.parametrize("op,case", bc.public_params("gradcheck", variants_per_op=1))
def test_gradcheck_fp64_cuda(op, case):
    bc.check_gradcheck(op, case, "triton", "cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("op,case", bc.public_params("opcheck", variants_per_op=2))
def test_opcheck_cuda(op, case):
    bc.check_opcheck(op, case, "triton", "cuda")


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_forward_and_backward(device):
    torch._dynamo.reset()
    x = randn4d(2, 6, 5, 3, channels_last=True, device=device)
    c, s = torch.rand(2, 6, device=device), torch.rand(2, 5, 3, device=device)

    def fn(x, c, s):
        pooled = FA.channel_pool(x, ("max", "mean"), backend="triton")
        return FA.apply_gates(x, c, s * pooled.sum(1), residual=x, backend="triton")
    eager_in = [t.clone().requires_grad_() for t in (x, c, s)]
    comp_in = [t.clone().requires_grad_() for t in (x, c, s)]
    eager = fn(*eager_in)
    compiled = torch.compile(fn, fullgraph=True)(*comp_in)
    assert_close(compiled, eager)
    assert compiled.is_contiguous(memory_format=torch.channels_last)
    eager.square().sum().backward()
    compiled.square().sum().backward()
    for a, e in zip(comp_in, eager_in):
        assert_close(a.grad, e.grad)


@pytest.mark.parametrize("device", DEVICES)
def test_backend_serves_every_op(device):
    for op in dispatch.OPS:
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            assert "triton" in dispatch.serving(op, device, dtype), (op, dtype)


# ----------------------------------------------------------------------------------------- GPU only
@pytest.mark.cuda
@pytest.mark.slow
def test_more_than_2_31_elements():
    """64-bit offsets: a 2.15e9-element fp16 tensor (4.3 GB); the last batch is checked against PyTorch."""
    b, c, h, w = 2, 2048, 724, 725
    assert b * c * h * w > 2 ** 31
    x = torch.randn(b, c, h, w, device="cuda", dtype=torch.float16)
    ch = torch.rand(b, c, device="cuda", dtype=torch.float16)
    sp = torch.rand(b, h, w, device="cuda", dtype=torch.float16)
    last = x[1].float()
    out = FA.apply_gates(x, ch, sp, backend="triton")
    assert_close(out[1, -4:], (last[-4:] * ch[1, -4:, None, None].float() * sp[1].float()).half())
    del out
    assert_close(FA.channel_squeeze(x, backend="triton")[1, -4:], last[-4:].mean(dim=(1, 2)).half())
    pooled = FA.channel_pool(x, ("max", "mean"), backend="triton")
    assert_close(pooled[1, :, -2:], torch.stack([last[:, -2:].amax(0), last[:, -2:].mean(0)]).half())


@pytest.mark.skipif(not dispatch._interpreting_triton(), reason="the CUDA rounding path, forced on CPU tensors")
def test_coord_gate_hardsigmoid_rounds_as_torch_on_cuda(monkeypatch):
    """On CUDA tensors torch's hardsigmoid multiplies by its float32 1/6 (3e-8 relative in float64; its CPU kernel
    divides by 6); the kernels' MODE 3, which CUDA tensors take, must do the same, forward and backward."""
    from fused_attn.backends.triton import coord_gate as tcg
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    ah, aw = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 3, 5, dtype=torch.float64)
    z = ah[..., None] + aw[..., None, :]
    cuda_rounding = x * ((z + 3).clamp(0, 6) * torch.tensor(1 / 6, dtype=torch.float32).double())
    cpu_rounding = x * ((z + 3).clamp(0, 6) / 6)
    assert (cuda_rounding - cpu_rounding).abs().max() > 1e-9   # the two roundings are told apart
    assert torch.equal(tcg.coord_gate_combine(x, ah, aw, "hardsigmoid", False), cpu_rounding)
    monkeypatch.setattr(tcg, "_mode", lambda gate, t: tcg._CUDA_HARDSIGMOID if gate == "hardsigmoid" else 0)
    out = tcg.coord_gate_combine(x, ah, aw, "hardsigmoid", False)
    torch.testing.assert_close(out, cuda_rounding, rtol=1e-15, atol=1e-15)
    g = torch.randn_like(x)
    grad_x, _, _ = tcg.coord_gate_grads(g, x, ah, aw, "hardsigmoid", False)
    torch.testing.assert_close(grad_x, g * ((z + 3).clamp(0, 6) * torch.tensor(1 / 6, dtype=torch.float32).double()),
                               rtol=1e-15, atol=1e-15)
