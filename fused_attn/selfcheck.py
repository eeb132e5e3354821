"""`python -m fused_attn.selfcheck`: every op on every backend that serves it here, forward and backward, on
fresh random inputs (the sample registry's "selfcheck" cases, fused_attn/testing/registry.py), against the
reference backend computed on float64 copies.

A result passes when max |result - reference| <= tol * max(|reference|, 1) for the dtype's tolerance
(fused_attn.testing.cases.TOL). Exit status 1 if any backend's result fails.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from . import dispatch
from .testing import registry
from .testing.cases import TOL


def _max_error(got, want) -> float:
    """max |got - want| / max(|want|, 1), in float64."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    if not want.numel():
        return 0.0
    return (got - want).abs().max().item() / max(want.abs().max().item(), 1.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    failures = 0
    print(f"{'op':<16}{'backend':<11}{'variant':<16}{'max rel err (out, grads)':<28}{'fwd+bwd ms':>10}")
    for op, info in registry.OPS.items():
        for case in registry.op_cases(op, "selfcheck", info.variants[:1]):
            sample = registry.sample(op, case.with_(dtype=dtype), args.device)
            ref = sample.run("reference", inputs=sample.float64_inputs())
            grad_out = ref[2].to(dtype)
            for backend in dispatch.serving(op, args.device, dtype):
                start = time.perf_counter()
                out, grads, _ = sample.run(backend, grad_out)
                ms = (time.perf_counter() - start) * 1e3
                err = max(_max_error(g, w) for g, w in zip((out, *grads), (ref[0], *ref[1])))
                ok = err <= TOL[dtype]
                failures += not ok
                print(f"{op:<16}{backend:<11}{case.variant:<16}{err:<28.2e}{ms:>10.2f}{'' if ok else '  FAIL'}")
    print("selfcheck: " + ("all backends agree with the reference" if not failures else f"{failures} FAILED"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
