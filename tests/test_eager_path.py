"""fused_attn/ops/_eager.py: calls that nothing observes skip torch.library's dispatch, and give the op's
results bit for bit; every observer (autograd, autocast, modes, functorch, subclasses, the profiler,
torch.compile) sees the op."""
from __future__ import annotations

import contextlib

import pytest
import torch
from common import serving_backends
from torch.utils._python_dispatch import TorchDispatchMode

from fused_attn import functional as FA
from fused_attn import ops

OP = ops.apply_gates.apply_gates


def _count_direct_calls(monkeypatch, op) -> dict:
    """{"n": calls of `op` that took the direct path}, counted from now on (its kernel registration is left alone)."""
    count = {"n": 0}
    fn = op.eager_fn

    def counted(*args):
        count["n"] += 1
        return fn(*args)
    monkeypatch.setattr(op, "eager_fn", counted)
    return count


@pytest.fixture
def direct_calls(monkeypatch):
    return _count_direct_calls(monkeypatch, OP)


def _gates(requires_grad=False):
    y = torch.randn(2, 4, 3, 5, requires_grad=requires_grad)
    return y, torch.rand(2, 4), torch.rand(2, 3, 5)


class _Sub(torch.Tensor):
    pass


class _Passthrough(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("context,direct", [
    (contextlib.nullcontext, True),
    (torch.no_grad, True),
    (torch.inference_mode, True),
    (lambda: torch.autocast("cpu", dtype=torch.bfloat16), False),
    (_Passthrough, False),
    (lambda: torch.autograd.profiler.profile(), False),
], ids=["plain", "no_grad", "inference_mode", "autocast", "dispatch_mode", "profiler"])
def test_which_calls_skip_the_dispatch(direct_calls, context, direct):
    y, c, s = _gates()
    with context():
        FA.apply_gates(y, c, s)
    assert direct_calls["n"] == int(direct)


def test_autograd_and_subclasses_go_through_the_op(direct_calls):
    y, c, s = _gates(requires_grad=True)
    out = FA.apply_gates(y, c, s)
    assert out.grad_fn is not None and direct_calls["n"] == 0
    with torch.no_grad():
        FA.apply_gates(y, c, s)        # requires_grad but grad mode off: nothing records it
    assert direct_calls["n"] == 1
    FA.apply_gates(y.detach().as_subclass(_Sub), c, s)
    assert direct_calls["n"] == 1


def test_module_inference_with_parameters_skips_the_dispatch(monkeypatch):
    """A drop-in module hands its weights over as nn.Parameters (`w.flatten(1)` of a Linear weight is the
    Parameter itself); under no_grad that is still a call nothing observes, so it takes the direct path, and
    gives the seed SEBlock's output."""
    from test_mod_oracles import SEED

    import fused_attn
    SeedSE = SEED.SEBlock
    count = _count_direct_calls(monkeypatch, ops.squeeze_excite.squeeze_excite)
    seed = SeedSE(32).eval()
    twin = fused_attn.nn.SEBlock(32).eval()
    twin.load_state_dict(seed.state_dict())
    assert isinstance(twin.fc[0].weight.flatten(1), torch.nn.Parameter)
    x = torch.randn(2, 32, 3, 5)
    with torch.no_grad():
        out = twin(x)
    assert count["n"] == 1
    torch.testing.assert_close(out, seed(x))
    out = twin(x)                      # grad mode on and the weights require grad: autograd must see the op
    assert count["n"] == 1 and out.grad_fn is not None


def test_vmap_and_compile_go_through_the_op(direct_calls):
    y, c, s = _gates()
    # no batching rule: vmap reaches the op and runs torch's per-sample fallback (a direct call would hand the
    # kernel a BatchedTensor)
    out = torch.vmap(lambda t: FA.apply_gates(t, c, s))(y.unsqueeze(0))
    torch.testing.assert_close(out[0], y * c[:, :, None, None] * s[:, None])
    torch._dynamo.reset()
    compiled = torch.compile(lambda y, c, s: FA.apply_gates(y, c, s), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(y, c, s), y * c[:, :, None, None] * s[:, None])
    assert direct_calls["n"] == 0


def _public_calls():
    x = torch.randn(2, 8, 5, 6)
    cw = (torch.randn(2, 8), torch.randn(2), torch.randn(8, 2), torch.randn(8))
    return {
        "channel_pool": (lambda be: FA.channel_pool(x, backend=be)),
        "channel_squeeze": (lambda be: FA.channel_squeeze(x, backend=be)),
        "squeeze_excite": (lambda be: FA.squeeze_excite(x, *cw, backend=be)),
        "apply_gates": (lambda be: FA.apply_gates(x, torch.rand(2, 8), torch.rand(2, 5, 6), x, backend=be)),
        "dual_attention": (lambda be: FA.dual_attention(x, *cw, torch.randn(8), torch.randn(1), backend=be)),
        "ema_strip_pool": (lambda be: FA.ema_strip_pool(x, backend=be)),
        "coord_gate": (lambda be: FA.coord_gate(x, torch.rand(2, 8, 5), torch.rand(2, 8, 6), "sigmoid", True,
                                                backend=be)),
        "ema_core": (lambda be: FA.ema_core(x, torch.randn(2, 8, 11), torch.randn_like(x), torch.rand(4) + 0.5,
                                            torch.randn(4), 2, backend=be)),
        "simam": (lambda be: FA.simam(x, backend=be)),
    }


@pytest.mark.parametrize("op,backend", [(op, be) for op in _public_calls() for be in serving_backends(op)])
def test_direct_path_gives_the_op_results_bitwise(op, backend, monkeypatch):
    torch.manual_seed(0)
    direct = _public_calls()[op](backend)
    monkeypatch.setattr(ops._eager, "_unobserved", lambda tensors: False)
    torch.manual_seed(0)
    through_op = _public_calls()[op](backend)
    assert torch.equal(direct, through_op)
