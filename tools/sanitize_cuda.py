"""Run every CUDA kernel op of fused_attn once, forward and backward, on small inputs (NCHW and channels_last,
float32, and bfloat16 on two shapes), for compute-sanitizer:

    compute-sanitizer --tool memcheck --error-exitcode 1 python tools/sanitize_cuda.py

(bench/gpu.sh runs exactly this). The shapes take every kernel path: odd sizes, C = 1, the two-stage reductions
with several tiles, the EMA tile with and without its shared-memory cache and the channels_last fallback reduction
(C / groups > 256). Exits 0 after printing a one-line summary; 2 when the cuda backend is unavailable.
"""
from __future__ import annotations

import sys

import torch

import fused_attn  # noqa: F401  (registers the ops)
from fused_attn import dispatch
from fused_attn.cpp._ops import ops


def inputs(shape, dtype, channels_last, groups):
    b, c, h, w = shape

    def x4():
        t = torch.randn(shape, dtype=dtype, device="cuda")
        return t.contiguous(memory_format=torch.channels_last) if channels_last else t
    return dict(x=x4(), g=x4(), x2=x4(), s=torch.rand(b, c, device="cuda") + 0.5, gp=torch.randn(b, c, device="cuda"),
                ch=torch.rand(b, c, dtype=dtype, device="cuda"), sp=torch.rand(b, h, w, dtype=dtype, device="cuda"),
                hw=torch.randn(b, c, h + w, dtype=dtype, device="cuda"),
                gw=torch.rand(c // groups, dtype=dtype, device="cuda") + 0.5,
                gb=torch.randn(c // groups, dtype=dtype, device="cuda"), groups=groups)


def run_all(t) -> int:
    """Every fused_attn_C op once; returns the number of calls."""
    C = ops()  # torch.ops.fused_attn_C, fused_attn._C loaded
    x, g = t["x"], t["g"]
    calls = 0
    for stats in ("max,mean,std", "mean", "std,max"):
        out, am, mom = C.channel_pool_reduce(x, stats)
        C.channel_pool_grad_input(torch.randn_like(out), x, am, mom, stats)
        calls += 2
    C.channel_squeeze_reduce(x)
    C.channel_squeeze_grad_input(t["gp"], x)
    C.channel_scale(x, t["s"])
    C.squeeze_excite_grad_gate(g, x)
    C.squeeze_excite_grad_input(g, x, t["s"], t["gp"])
    C.apply_gates_combine(x, t["ch"], t["sp"], g)
    C.apply_gates_combine(x, None, t["sp"], None)
    C.apply_gates_grads(g, x, t["ch"], t["sp"])
    C.apply_gates_grads(g, x, None, t["sp"])
    pooled = C.ema_strip_pool_reduce(x)
    C.ema_strip_pool_grad_input(pooled, x)
    out, mean, rstd = C.ema_core_combine(x, t["hw"], t["x2"], t["gw"], t["gb"], t["groups"], 1e-5)
    C.ema_core_grads(g, x, t["hw"], t["x2"], t["gw"], t["gb"], mean, rstd, t["groups"], 1e-5)
    return calls + 13


def main() -> int:
    reason = dispatch.unavailable_reason("cuda", "channel_pool", "cuda", torch.float32)
    if reason is not None:
        print(f"sanitize_cuda: cuda backend unavailable: {reason}")
        return 2
    torch.manual_seed(0)
    cases = [((2, 5, 7, 9), 1), ((1, 1, 1, 5), 1), ((2, 130, 9, 15), 2), ((1, 8, 40, 40), 1), ((1, 300, 3, 5), 1)]
    calls = 0
    for dtype, shapes in ((torch.float32, cases), (torch.bfloat16, cases[:3:2])):  # bf16: 8-element vectors
        for channels_last in (False, True):
            for shape, groups in shapes:
                calls += run_all(inputs(shape, dtype, channels_last, groups))
    torch.cuda.synchronize()
    print(f"sanitize_cuda: {calls} op calls ran (float32: {len(cases)} shapes, bfloat16: 2; NCHW and channels_last)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
