"""The torch.library layer: fp64 gradcheck through the custom ops, opcheck (schema, fake kernels, autograd
registration, AOT dispatch) on NCHW and channels_last inputs, and torch.compile(fullgraph=True) forward and
backward with no graph break, for every backend that serves the op here."""
import backend_contracts as bc
import pytest
import torch
from common import assert_close, randn4d, serving_backends

import fused_attn  # noqa: F401  (registers the ops)
from fused_attn import dispatch
from fused_attn import functional as FA
from fused_attn.testing import registry


def _params(grid: str, variants_per_op: int):
    """(op, case, backend) for every op, case of the grid and backend serving the op here."""
    return [pytest.param(op, case, be, id=f"{op}-{case.id}-{be}")
            for op in registry.OPS for case in registry.op_cases(op, grid, registry.OPS[op].variants[:variants_per_op])
            for be in serving_backends(op, dtype=case.dtype)]


@pytest.mark.parametrize("op,case,backend", _params("opcheck", 2))
def test_opcheck(op, case, backend):
    bc.check_opcheck(op, case, backend)


@pytest.mark.parametrize("op,case,backend", _params("opcheck", 1))
def test_opcheck_backward_op(op, case, backend):
    bc.check_opcheck_backward(op, case, backend)


# Tiny shapes: gradcheck evaluates the op twice per input element. Triton on CPU runs in its interpreter (~0.5 s a
# call): there the Jacobian is checked along random directions (gradcheck's fast mode); on a GPU entry by entry.
@pytest.mark.parametrize("op,case,backend", _params("gradcheck", 1))
def test_gradcheck_fp64(op, case, backend):
    bc.check_gradcheck(op, case, backend, fast_mode=backend == "triton" and dispatch._interpreting_triton())


# Second order: the backward ops' autograd (reference math) against finite differences of each backend's first
# backward. Triton's interpreter: along random directions (fast mode), as above.
@pytest.mark.parametrize("op,case,backend", _params("gradcheck", 1))
def test_gradgradcheck_fp64(op, case, backend):
    bc.check_gradgradcheck(op, case, backend, fast_mode=backend == "triton" and dispatch._interpreting_triton())


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
