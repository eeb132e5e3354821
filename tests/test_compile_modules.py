"""torch.compile of every drop-in module: fullgraph=True (one graph, no break), forward and backward (the input's
and every parameter's gradient) equal to eager, and dynamic=True across two input sizes with at most one
recompile. tests/test_custom_ops.py covers the ops (opcheck, compile per backend, NCHW and channels_last) and
tests/test_modules.py one inductor module and forward-only capture; this file adds the modules' backward, the
parameter gradients, dynamic shapes, one inductor dynamic case and compile under autocast with channels_last.

Compiles are counted as dynamo's unique graphs. A backend-call counter (CompileCounter) would count two for the
EMA modules without any recompile: under dynamic=True dynamo first traces GroupNorm's float eps as a symbol,
then restarts the analysis to specialise it (no guard failure, one cache entry).
"""
from __future__ import annotations

import pytest
import torch
from common import assert_close, serving_backends
from test_mod_oracles import perturb_
from test_modules import _tiny
from torch._dynamo.utils import counters

import fused_attn
from fused_attn import nn as fnn

KINDS = ["SEBlock", "MultiScaleAttention", "DualAttention", "LiteDualAttention", "AttnResBlock", "EMA", "EMAX",
         "EMAX-dynamic", "CBAM"]
SIZES = [(2, 5, 7), (3, 6, 9)]   # (B, H, W): every dynamic dimension changes (C is fixed by the weights)


def _module(kind: str, backend=None) -> torch.nn.Module:
    m = perturb_(_tiny(kind))
    for sub in m.modules():
        if isinstance(sub, fnn.AttentionModule):
            sub.backend = backend
    return m


def _channels(kind: str) -> int:
    return 16 if kind == "LiteDualAttention" else 8


def _run(fn, m, x):
    """(output, grad of x, grads of every parameter) for a fixed output gradient."""
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    params = [p for _, p in sorted(m.named_parameters())]
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out.dtype)
    return out, torch.autograd.grad(out, [x] + params, g, allow_unused=True)


def _compare(compiled, eager, tol=None):
    (out_c, grads_c), (out_e, grads_e) = compiled, eager
    assert out_c.dtype == out_e.dtype and out_c.stride() == out_e.stride()
    assert_close(out_c, out_e, what="forward", tol=tol)
    for i, (a, e) in enumerate(zip(grads_c, grads_e)):
        if e is None:
            assert a is None or not a.any(), f"gradient {i}: eager has none"
        else:
            assert_close(a, e, what=f"gradient {i} (0: input, then parameters by name)", tol=tol)


def _unique_graphs() -> int:
    """Graphs dynamo has compiled in this process (torch._dynamo.reset() does not clear the counter)."""
    return counters["stats"]["unique_graphs"]


@pytest.fixture
def policy(request):
    """fused_attn's compile policy for one test (dispatch.set_compile_policy), restored after it."""
    before = fused_attn.compile_policy()
    fused_attn.set_compile_policy(request.param)
    torch._dynamo.reset()
    yield request.param
    fused_attn.set_compile_policy(before)
    torch._dynamo.reset()


def _fused_ops(gm: torch.fx.GraphModule) -> set:
    return {str(n.target) for n in gm.graph.nodes if n.op == "call_function" and "fused_attn" in str(n.target)}


def _cases():
    """Every module on the default backend (auto) under both compile policies: "inline" traces the ops'
    reference math, "kernels" keeps the fused ops (opaque to the compiler); two modules on other CPU backends
    (always the op; the backend only changes what runs inside it)."""
    cases = [pytest.param(kind, None, policy, id=f"{kind}-auto-{policy}")
             for policy in ("inline", "kernels") for kind in KINDS]
    others = {"reference": "DualAttention", "triton": "CBAM"}
    for backend, kind in others.items():
        if backend in serving_backends("apply_gates"):
            cases.append(pytest.param(kind, backend, "inline", id=f"{kind}-{backend}"))
    return cases


@pytest.mark.parametrize("kind,backend,policy", _cases(), indirect=["policy"])
def test_module_compiles_fullgraph_dynamic(kind, backend, policy):
    """fullgraph=True, dynamic=True, backend aot_eager (the AOT-autograd joint graph, without inductor's codegen,
    too slow for every module on 2 cores): forward and backward equal eager at two sizes, <= 1 recompile; the
    graph holds fused_attn ops exactly when the policy or an explicit backend keeps them."""
    m = _module(kind, backend)
    graphs = []

    def keep(gm, example_inputs):
        graphs.append(gm)
        return gm
    torch.compile(m, fullgraph=True, backend=keep)(torch.randn(2, _channels(kind), 5, 7))
    assert bool(_fused_ops(graphs[0])) == (policy == "kernels" or backend is not None), _fused_ops(graphs[0])
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, dynamic=True, backend="aot_eager")
    before = _unique_graphs()
    for b, h, w in SIZES:
        x = torch.randn(b, _channels(kind), h, w)
        _compare(_run(compiled, m, x), _run(m, m, x))
    compiles = _unique_graphs() - before
    assert 1 <= compiles <= 2, f"{compiles} compiles for two sizes under dynamic=True"


@pytest.mark.parametrize("policy", ["inline", "kernels"], indirect=True)
def test_inductor_dynamic_squeeze_excite(policy):
    """The default inductor backend, dynamic=True: SEBlock (inline: its math in generated code; kernels: the
    squeeze_excite op and its backward as extern calls inside it) matches eager forward and backward at two
    sizes, compiled once."""
    m = _module("SEBlock")
    compiled = torch.compile(m, fullgraph=True, dynamic=True)
    before = _unique_graphs()
    for b, h, w in SIZES:
        x = torch.randn(b, 8, h, w)
        _compare(_run(compiled, m, x), _run(m, m, x))
    assert _unique_graphs() - before == 1


@pytest.mark.parametrize("policy", ["inline", "kernels"], indirect=True)
@pytest.mark.parametrize("kind", ["EMAX", "CBAM"])
def test_compile_under_autocast_channels_last(kind, policy):
    """Compiled under CPU bf16 autocast with a channels_last input: the output's dtype and strides and every
    gradient as eager autocast gives them (kernels: the ops' autocast rule and fake kernels agree with their real
    runs; inline: the reference math autocasts as the fused calls do)."""
    m = _module(kind)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 8, 5, 7).contiguous(memory_format=torch.channels_last)

    def amp(fn):
        def run(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn(x)
        return run
    result = _run(amp(compiled), m, x)
    assert result[0].is_contiguous(memory_format=torch.channels_last) and result[0].dtype == torch.float32
    _compare(result, _run(amp(m), m, x), tol=3e-2)
