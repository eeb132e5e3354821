"""The backend contract checks, shared by every backend's test file (cpu, triton, the emulated and the real cuda),
all driven by the sample registry (fused_attn/testing/registry.py):

  check_pass(module_of, name, case, device)   one kernel pass of a backend against the reference pass on float64
                                              copies of the same arguments: every output (auxiliary ones too), its
                                              dtype and the memory format of 4-D outputs
  check_public(op, case, backend, device)     the public function and every input gradient through the custom ops
                                              against backend="reference" on float64 copies
  pass_params(grid) / public_params(grid)     pytest parameters: every (pass, case) / (op, case) of a grid

`module_of(family)` returns the backend's family module (fused_attn.backends.<package>.<family>); the emulated
cuda tests hand in modules routed to the emulator.
"""
from __future__ import annotations

import importlib

import pytest
import torch

from fused_attn._layout import memory_format
from fused_attn.testing import registry
from fused_attn.testing.cases import TOL, Case, Maker, Out, check, check_layout, coarser, to_f64


def reference_module(family: str):
    return importlib.import_module(f"fused_attn.backends.reference.{family}")


def backend_module(package: str):
    """module_of for a backend package: "native", "triton" or "reference"."""
    return lambda family: importlib.import_module(f"fused_attn.backends.{package}.{family}")


def _expected_dtype(out: Out, case, args):
    if out.dtype == "case":
        return case.dtype
    if out.dtype == "acc":
        return torch.float64 if case.dtype == torch.float64 else torch.float32
    if isinstance(out.dtype, int):
        arg = args[out.dtype]
        return arg.dtype if isinstance(arg, torch.Tensor) else None
    return out.dtype


def check_outputs(name: str, case, args, got, want) -> None:
    """Every output of pass `name` (got, from args) against the reference's (want, from float64 copies)."""
    outs = registry.PASSES[name].outs
    got = got if isinstance(got, (tuple, list)) else (got,)
    want = want if isinstance(want, (tuple, list)) else (want,)
    assert len(got) == len(outs) == len(want), f"{name}: {len(got)} outputs, expected {len(outs)}"
    for spec, g, w in zip(outs, got, want):
        what = f"{name} {spec.name}"
        dtype = _expected_dtype(spec, case, args)
        if dtype is not None and g.numel():
            assert g.dtype == dtype, f"{what}: dtype {g.dtype}, expected {dtype}"
        if spec.compare == "equal":
            assert torch.equal(g.cpu(), w.cpu().to(g.dtype)), f"{what}: not equal"
            continue
        tol_dtype = case.dtype
        if spec.tol_of is not None and isinstance(args[spec.tol_of], torch.Tensor):
            tol_dtype = coarser(case.dtype, args[spec.tol_of].dtype)
        if spec.compare == "ratio":
            check(g.double() / w, torch.ones_like(w), tol_dtype, what + " (relative)")
        else:
            check(g, w, tol_dtype, what)
        if spec.like is not None and g.dim() == 4:
            check_layout(g, args[spec.like], what)
        if spec.contiguous:
            assert g.is_contiguous(), f"{what}: not contiguous"


def check_pass(module_of, name: str, case, device="cpu") -> None:
    info = registry.PASSES[name]
    args = registry.pass_args(name, case, device)
    if args is None:
        pytest.skip(f"{name} has nothing to do for variant {case.variant!r}")
    got = getattr(module_of(info.family), name)(*args)
    want = getattr(reference_module(info.family), name)(*to_f64(args))
    check_outputs(name, case, args, got, want)


def pass_params(grid: str, names=None) -> list:
    names = names or registry.unique_passes()
    return [pytest.param(name, case, id=f"{name}-{case.id}") for name in names
            for case in registry.pass_cases(name, grid)]


def public_params(grid: str, ops=None, variants_per_op: int = 0) -> list:
    """Every (op, case) of a grid; variants_per_op > 0 keeps that many variants of each op (the main first)."""
    params = []
    for op in ops or registry.OPS:
        variants = registry.OPS[op].variants[:variants_per_op] if variants_per_op else None
        params += [pytest.param(op, case, id=f"{op}-{case.id}") for case in registry.op_cases(op, grid, variants)]
    return params


def check_public(op: str, case, backend: str, device="cpu", tol=None, expanded_grad: bool = False) -> None:
    """The public function on `backend` vs the reference on float64 copies: output and every input gradient
    (of a random grad_out, or with expanded_grad of a stride-0 one, as `.sum()` gives); 4-D results keep their
    input's memory format."""
    sample = registry.sample(op, case, device)
    grad_out = None
    if expanded_grad:
        shape = sample.call("reference").shape
        grad_out = torch.ones((), dtype=case.dtype, device=device).expand(shape)
    out, grads, grad_out = sample.run(backend, grad_out)
    ref, ref_grads, _ = sample.run("reference", grad_out.double(), sample.float64_inputs())
    tol = TOL[case.dtype] if tol is None else tol
    check(out, ref, case.dtype, f"{op} out", tol)
    if out.dim() == 4:
        check_layout(out, sample.inputs[0], f"{op} out")
    primary = sample.inputs[0]
    for i, got, want in zip(sample.grads, grads, ref_grads):
        check(got, want, case.dtype, f"{op} grad of input {i}", tol)
        # a 4-D input's gradient keeps its layout (a residual in another layout gets grad_out itself: any layout)
        if got.dim() == 4 and (i == 0 or memory_format(sample.inputs[i]) == memory_format(primary)):
            check_layout(got, sample.inputs[i], f"{op} grad of input {i}")


# ------------------------------------------------------------------------------------ the torch.library layer
def _differentiable(op: str, case, backend: str, device):
    """(fn, leaves): the public function of a registry sample as a function of its differentiable inputs, and
    fresh leaves of those inputs (what gradcheck and gradgradcheck take)."""
    sample = registry.sample(op, case, device)
    leaves = [sample.inputs[i].detach().requires_grad_() for i in sample.grads]

    def fn(*ts):
        inputs = list(sample.inputs)
        for i, t in zip(sample.grads, ts):
            inputs[i] = t
        return sample.call(backend, inputs)
    return fn, leaves


def check_gradcheck(op: str, case, backend: str, device="cpu", fast_mode: bool = False) -> None:
    """fp64 gradcheck of the public function (through the custom ops) in every differentiable input; fast_mode
    compares the Jacobian along random directions instead of entry by entry (a few evaluations instead of two
    per input element: for Triton's interpreter, ~0.5 s a call)."""
    fn, leaves = _differentiable(op, case, backend, device)
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=fast_mode), op


def check_gradgradcheck(op: str, case, backend: str, device="cpu", fast_mode: bool = False) -> None:
    """fp64 gradgradcheck of the public function: the backward op's own derivative (fused_attn/ops/
    _double_backward.py) against finite differences of the backend's first backward."""
    fn, leaves = _differentiable(op, case, backend, device)
    assert torch.autograd.gradgradcheck(fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=fast_mode), op


def _requiring_grad(sample) -> list:
    return [t.detach().requires_grad_() if i in sample.grads else t for i, t in enumerate(sample.inputs)]


def check_opcheck(op: str, case, backend: str, device="cpu") -> None:
    """torch.library.opcheck of the forward custom op (schema, fake kernel, autograd registration, AOT dispatch)."""
    sample = registry.sample(op, case, device)
    overload, args = sample.op.custom_op(_requiring_grad(sample), case.variant, backend)
    torch.library.opcheck(overload, args)


def check_opcheck_backward(op: str, case, backend: str, device="cpu") -> None:
    """torch.library.opcheck of the backward custom op, on the outputs its forward saved."""
    sample = registry.sample(op, case, device)
    overload, args = sample.op.backward_op(sample.inputs, case.variant, backend)
    args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(overload, args)


# ------------------------------------------------------------------------------------------ special values
def assert_specials_and_close(out, ref, what):
    """+-inf / NaN exactly where `ref` has them, the finite rest within float32's tolerance."""
    special = ~ref.isfinite()
    same = (out == ref) | (out.isnan() & ref.isnan())
    assert bool(same[special].all()), f"{what}: +-inf / NaN differ at {(special & ~same).nonzero().tolist()}"
    check(out[~special], ref[~special], torch.float32, what)


def check_channel_pool_specials(module_of, layout: str, device="cpu") -> None:
    """Ties go to the first maximal channel and NaN counts as the maximum (torch.argmax), across lane groups and
    channel blocks; +-inf reach the mean as in torch.mean (std NaN there); the std stays exact around a large
    mean (Welford / shifted sums, not E[x^2] - E[x]^2). Two image sizes: 4x6 and 33x34 (1122 pixels: the CPU
    kernel's NCHW wide-image paths, from 512 pixels, and their tails), specials early and in the last pixels."""
    for h, w in ((4, 6), (33, 34)):
        _check_channel_pool_specials(module_of, layout, device, h, w)


def _check_channel_pool_specials(module_of, layout, device, h, w) -> None:
    pool, ref = module_of("channel_pool"), reference_module("channel_pool")

    def laid(t):
        return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t
    x = torch.randn(2, 70, h, w, device=device).round()  # many ties
    x[0, 5, 1, 2] = x[0, 5, h - 1, w - 1] = float("nan")
    x[1, 33:, 0, 0] = x[1, 33:, h - 1, w - 2] = float("nan")
    x[1, :, 2, 2] = x[1, :, h - 1, w - 4] = float("-inf")
    out, argmax, _ = pool.channel_pool_reduce(laid(x), ("max", "mean"))
    rout, rargmax, _ = ref.channel_pool_reduce(x, ("max", "mean"))
    assert torch.equal(argmax, rargmax)
    assert_specials_and_close(out, rout, "max, mean")
    x[0, 0, 3, 3] = x[0, 9, 3, 4] = x[1, 69, h - 2, w - 1] = float("inf")
    out = pool.channel_pool_reduce(laid(x), ("max", "mean", "std"))[0]
    rout = ref.channel_pool_reduce(x, ("max", "mean", "std"))[0]
    # the cases are real
    assert rout[0, 1, 3, 3] == rout[1, 1, h - 2, w - 1] == float("inf")
    assert rout[1, 1, 2, 2] == rout[1, 1, h - 1, w - 4] == float("-inf")
    assert_specials_and_close(out, rout, "max, mean, std")
    big = laid(torch.randn(2, 37, h, w + 1, device=device) + 1000.0)
    check(pool.channel_pool_reduce(big, ("std",))[0], big.double().std(dim=1, keepdim=True), torch.float32, "std")


# ------------------------------------------------------------------------------------------------ modules
def _modules():
    from fused_attn import nn as fnn
    # (channels, constructor of backend) of every drop-in module, small
    return {
        "SEBlock": (32, lambda be: fnn.SEBlock(32, backend=be)),
        "CBAM": (32, lambda be: fnn.CBAM(32, reduction=4, backend=be)),
        "MultiScaleAttention": (32, lambda be: fnn.MultiScaleAttention(32, backend=be)),
        "DualAttention": (16, lambda be: fnn.DualAttention(16, backend=be)),
        "LiteDualAttention": (32, lambda be: fnn.LiteDualAttention(32, backend=be)),
        "AttnResBlock": (16, lambda be: fnn.AttnResBlock(16, backend=be)),
        "EMA": (16, lambda be: fnn.EMA(16, factor=4, backend=be)),
        "EMAX": (32, lambda be: fnn.EMAX(32, factor=8, backend=be)),
    }


MODULES = tuple(_modules())


def module_matches_reference(kind: str, layout: str, backend: str, device="cpu") -> None:
    """Module `kind` on `backend` vs the same module (same, perturbed parameters) on the reference backend:
    forward, input gradient and every parameter gradient, float32; the output keeps x's memory format."""
    import copy

    from fused_attn import nn as fnn
    channels, make = _modules()[kind]
    ref = make("reference").to(device)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = copy.deepcopy(ref)
    for m in ours.modules():  # AttnResBlock holds its DualAttention
        if isinstance(m, fnn.AttentionModule):
            m.backend = backend
    x = Maker(Case((2, channels, 9, 7), torch.float32, layout), device).x4()
    xs = [x.detach().clone().requires_grad_() for _ in range(2)]
    outs = [m(t) for m, t in zip((ours, ref), xs)]
    g = torch.randn_like(outs[1])
    outs[0].backward(g)
    outs[1].backward(g)
    check(outs[0], outs[1], torch.float32, f"{kind} out")
    assert memory_format(outs[0]) == memory_format(x)
    check(xs[0].grad, xs[1].grad, torch.float32, f"{kind} grad_x")
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        if q.grad is None:  # a parameter this forward does not use
            assert p.grad is None, f"{kind} grad {name}"
        else:
            check(p.grad, q.grad, torch.float32, f"{kind} grad {name}")


# --------------------------------------------------------------------------------- every pass, once each
def pass_calls(module_of, layout: str, shape=(2, 16, 13, 11), device="cpu") -> list:
    """(name, function, arguments) of every pass in its first variant, float32, the arguments drawn now."""
    calls = []
    for name, info in registry.PASSES.items():
        case = Case(shape, torch.float32, layout, info.variants[0])
        calls.append((name, getattr(module_of(info.family), name), registry.pass_args(name, case, device)))
    return calls


def run_calls(calls) -> list:
    """[(what, tensor)] of every output of every call."""
    results = []
    for name, fn, args in calls:
        out = fn(*args)
        for k, t in enumerate(out if isinstance(out, (tuple, list)) else (out,)):
            results.append((f"{name} output {k}", t))
    return results


def copy_arguments(dst_calls, src_calls) -> None:
    """Copy the tensor arguments of src_calls into those of dst_calls (same structure) in place."""
    for (_, _, dst), (_, _, src) in zip(dst_calls, src_calls):
        for d, s in zip(dst, src):
            if isinstance(d, torch.Tensor):
                d.copy_(s)
