"""Determinism: under torch.use_deterministic_algorithms(True) every public op and every module gives bitwise-equal
outputs and gradients (input and parameters) run to run, on every backend, or raises an error that names the
non-deterministic operation (CUDA: an aten op without a deterministic kernel). Bitwise equality across thread
counts for the cpu backend's kernels is tested in tests/test_cpu_backend.py; the modules' aten convolutions make
no such promise, so it is not asserted for whole modules."""
from __future__ import annotations

import pytest
import torch
from common import MODULE_OPS, serving_backends
from test_amp import OP_OF, PUBLIC, _op_case
from test_mod_oracles import perturb_
from test_modules import _tiny

from fused_attn import nn as fnn

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=pytest.mark.cuda)]
KINDS = ["SEBlock", "MultiScaleAttention", "DualAttention", "LiteDualAttention", "AttnResBlock", "EMA", "EMAX",
         "EMAX-dynamic", "CBAM"]
OPS_OF = MODULE_OPS


@pytest.fixture(autouse=True)
def _deterministic():
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def _params(ops_for):
    """(name, device, backend) for every backend serving every op of `ops_for(name)` on each device."""
    out = []
    for d in DEVICES:
        device = d.values[0]
        for name, ops in ops_for:
            for be in serving_backends(ops[0], device):
                if all(be in serving_backends(o, device) for o in ops[1:]):
                    out.append(pytest.param(name, device, be, id=f"{name}-{d.id}-{be}", marks=d.marks))
    return out


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """t's bit patterns (NaN compares equal to the same NaN)."""
    return t.contiguous().view(-1).view(_INT_OF_SIZE[t.element_size()])


def _twice_bitwise(run, device: str):
    """run() twice: every returned tensor equal bit for bit. On CUDA an aten op may instead refuse loudly (the
    documented alternative); on CPU every op here has a deterministic kernel, so no error is accepted."""
    try:
        first, second = run(), run()
    except RuntimeError as exc:
        if device == "cpu" or "deterministic" not in str(exc):
            raise
        pytest.skip(f"refused under deterministic algorithms: {str(exc)[:160]}")
    assert len(first) == len(second)
    for i, (a, b) in enumerate(zip(first, second)):
        assert (a is None) == (b is None), f"tensor {i}"
        if a is not None:
            assert a.dtype == b.dtype and a.stride() == b.stride() and torch.equal(_bits(a), _bits(b)), \
                f"tensor {i} (0: output, then gradients) differs between two runs"


@pytest.mark.parametrize("op,device,backend", _params([(op, (OP_OF.get(op, op),)) for op in PUBLIC]))
def test_ops_are_bitwise_reproducible(op, device, backend):
    """Forward and the gradient of every input, twice on the same inputs, with shapes large enough for several
    reduction units / programs per output (C = 48 channels, 13 x 17 pixels)."""
    torch.manual_seed(0)
    inputs, fused, _ = _op_case(op, device, torch.float32)
    if op in ("channel_pool", "channel_squeeze", "ema_strip_pool", "apply_gates"):
        inputs[0] = torch.randn(2, 48, 13, 17, device=device)
        if op == "apply_gates":
            inputs[1:] = [torch.rand(2, 48, device=device), torch.rand(2, 13, 17, device=device),
                          torch.randn(2, 48, 13, 17, device=device)]
    g = None

    def run():
        nonlocal g
        ins = [t.detach().clone().requires_grad_() for t in inputs]
        out = fused(backend, *ins)
        if g is None:
            g = torch.randn_like(out)
        return [out, *torch.autograd.grad(out, ins, g)]
    _twice_bitwise(run, device)


@pytest.mark.parametrize("kind,device,backend", _params([(k, OPS_OF[k]) for k in KINDS]))
def test_modules_are_bitwise_reproducible(kind, device, backend):
    """Forward, input gradient and every parameter gradient of each module, twice (eval mode and train mode
    alike: no module has dropout or batch statistics)."""
    torch.manual_seed(0)
    m = perturb_(_tiny(kind)).to(device)
    for sub in m.modules():
        if isinstance(sub, fnn.AttentionModule):
            sub.backend = backend
    x = torch.randn(2, 16 if kind == "LiteDualAttention" else 8, 9, 11, device=device)
    params = [p for _, p in sorted(m.named_parameters())]
    g = torch.randn(x.shape[0], x.shape[1], 9, 11, device=device)

    def run():
        xi = x.clone().requires_grad_()
        out = m(xi)
        return [out, *torch.autograd.grad(out, [xi] + params, g, allow_unused=True)]
    _twice_bitwise(run, device)


def test_the_bitwise_check_can_fail():
    """The comparison is not vacuous: two different draws differ, and -0.0 differs from 0.0 bit for bit."""
    with pytest.raises(AssertionError, match="differs between two runs"):
        _twice_bitwise(lambda: [torch.randn(3)], "cpu")
    flip = iter([torch.tensor([0.0]), torch.tensor([-0.0])])
    with pytest.raises(AssertionError, match="differs between two runs"):
        _twice_bitwise(lambda: [next(flip)], "cpu")
