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


def _cases():
    """Every module on the default backend (auto); two modules on the other CPU backends (the op is opaque to the
    compiler, the backend only changes what runs inside it)."""
    cases = [pytest.param(kind, None, id=f"{kind}-auto") for kind in KINDS]
    others = {"reference": "DualAttention", "triton": "CBAM"}
    for backend, kind in others.items():
        if backend in serving_backends("apply_gates"):
            cases.append(pytest.param(kind, backend, id=f"{kind}-{backend}"))
    return cases


@pytest.mark.parametrize("kind,backend", _cases())
def test_module_compiles_fullgraph_dynamic(kind, backend):
    """fullgraph=True, dynamic=True, backend aot_eager (the AOT-autograd joint graph, without inductor's codegen,
    too slow for every module on 2 cores): forward and backward equal eager at two sizes, <= 1 recompile."""
    torch._dynamo.reset()
    m = _module(kind, backend)
    compiled = torch.compile(m, fullgraph=True, dynamic=True, backend="aot_eager")
    before = _unique_graphs()
    for b, h, w in SIZES:
        x = torch.randn(b, _channels(kind), h, w)
        _compare(_run(compiled, m, x), _run(m, m, x))
    compiles = _unique_graphs() - before
    assert 1 <= compiles <= 2, f"{compiles} compiles for two sizes under dynamic=True"


def test_inductor_dynamic_squeeze_excite():
    """The default inductor backend, dynamic=True: SEBlock (the squeeze_excite op and its backward as extern
    calls inside generated code) matches eager forward and backward at two sizes, compiled once."""
    torch._dynamo.reset()
    m = _module("SEBlock")
    compiled = torch.compile(m, fullgraph=True, dynamic=True)
    before = _unique_graphs()
    for b, h, w in SIZES:
        x = torch.randn(b, 8, h, w)
        _compare(_run(compiled, m, x), _run(m, m, x))
    assert _unique_graphs() - before == 1


@pytest.mark.parametrize("kind", ["EMAX", "CBAM"])
def test_compile_under_autocast_channels_last(kind):
    """Compiled under CPU bf16 autocast with a channels_last input: the output's dtype and strides and every
    gradient as eager autocast gives them (the ops' autocast rule and fake kernels agree with their real runs)."""
    torch._dynamo.reset()
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
