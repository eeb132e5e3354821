"""Run every CUDA kernel pass of fused_attn on the sample registry's "sanitizer" cases (fused_attn/testing/
registry.py: odd sizes, C = 1, the two-stage reductions with several tiles, the EMA tile with and without its
shared-memory cache and the channels_last fallback reduction, float32 and bfloat16, NCHW and channels_last),
every kernel variant, for compute-sanitizer:

    compute-sanitizer --tool memcheck --error-exitcode 1 python tools/sanitize_cuda.py

(bench/gpu.sh runs exactly this). Exits 0 after a one-line summary; 2 when the cuda backend is unavailable.
--device cpu runs the same calls on the native CPU kernels (a smoke test of this script without a GPU).
"""
from __future__ import annotations

import argparse
import importlib
import sys

import torch

import fused_attn  # noqa: F401  (registers the ops)
from fused_attn import dispatch
from fused_attn.testing import registry


def run_passes(device: str) -> int:
    """Every pass of the native backend on every sanitizer case; returns the number of calls."""
    calls = 0
    for name, info in registry.PASSES.items():
        fn = getattr(importlib.import_module(f"fused_attn.backends.native.{info.family}"), name)
        for case in registry.pass_cases(name, "sanitizer"):
            args = registry.pass_args(name, case, device)
            if args is not None:
                fn(*args)
                calls += 1
    return calls


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    device = ap.parse_args(argv).device
    reason = dispatch.unavailable_reason(device, "channel_pool", device, torch.float32)
    if reason is not None:
        print(f"sanitize_cuda: {device} backend unavailable: {reason}")
        return 2
    torch.manual_seed(0)
    calls = run_passes(device)
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"sanitize_cuda: {calls} kernel pass calls ran on {device} ({len(registry.PASSES)} passes, every variant,"
          " the registry's sanitizer cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
