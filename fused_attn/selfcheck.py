"""`python -m fused_attn.selfcheck`: run every op on every backend that serves it here, forward and
backward, on fresh random inputs, and compare with the reference backend (computed in float64).

Exit status 1 if any backend's result is off by more than the dtype's tolerance.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from . import dispatch
from . import functional as FA

_TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}


def _cases(device, dtype, b=2, c=32, h=9, w=7, groups=4):
    """(op name, function of the inputs and a backend, list of inputs) per op."""
    def t(*shape, positive=False):
        v = torch.rand(*shape, device=device, dtype=dtype) if positive else torch.randn(*shape, device=device, dtype=dtype)
        return v.requires_grad_()
    cr, cg = c // 4, c // groups
    return [
        ("channel_pool", lambda x, be: FA.channel_pool(x, backend=be), [t(b, c, h, w)]),
        ("channel_squeeze", lambda x, be: FA.channel_squeeze(x, backend=be), [t(b, c, h, w)]),
        ("squeeze_excite", lambda x, w1, w2, be: FA.squeeze_excite(x, w1, None, w2, None, backend=be),
         [t(b, c, h, w), t(cr, c), t(c, cr)]),
        ("apply_gates", lambda y, c_, s, r, be: FA.apply_gates(y, c_, s, r, backend=be),
         [t(b, c, h, w), t(b, c, positive=True), t(b, h, w, positive=True), t(b, c, h, w)]),
        ("ema_strip_pool", lambda x, be: FA.ema_strip_pool(x, backend=be), [t(b, c, h, w)]),
        ("ema_core", lambda x, hw, x2, gw, gb, be: FA.ema_core(x, hw, x2, gw, gb, groups, backend=be),
         [t(b, c, h, w), t(b, c, h + w), t(b, c, h, w), t(cg), t(cg)]),
    ]


def _run(fn, inputs, backend):
    inputs = [i.detach().clone().requires_grad_() for i in inputs]
    out = fn(*inputs, backend)
    grads = torch.autograd.grad(out, inputs, torch.ones_like(out) * 0.5 + out.detach() * 0.1)
    return [out, *grads]


def _rel_err(a, ref):
    ref = ref.double()
    return ((a.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    failures = 0
    print(f"{'op':<16}{'backend':<11}{'max rel err (out, grads)':<28}{'fwd+bwd ms':>10}")
    for op, fn, inputs in _cases(args.device, dtype):
        ref = _run(fn, [i.double() for i in inputs], "reference")
        for backend in dispatch.serving(op, args.device, dtype):
            start = time.perf_counter()
            res = _run(fn, inputs, backend)
            ms = (time.perf_counter() - start) * 1e3
            err = max(_rel_err(r, e) for r, e in zip(res, ref))
            ok = err <= _TOL[dtype]
            failures += not ok
            print(f"{op:<16}{backend:<11}{err:<28.2e}{ms:>10.2f}{'' if ok else '  FAIL'}")
    print("selfcheck: " + ("all backends agree with the reference" if not failures else f"{failures} FAILED"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
