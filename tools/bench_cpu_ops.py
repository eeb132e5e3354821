"""Time every op's forward and backward pass on CPU: backend "cpu" (C++ kernels) vs the reference (eager
PyTorch) vs torch.compile of the reference, at CNN-sized shapes, and report GB/s of the minimal traffic.

  .venv/bin/python tools/bench_cpu_ops.py                       # both shapes, fp32, NCHW, with torch.compile
  .venv/bin/python tools/bench_cpu_ops.py --no-compile --ops channel_pool,apply_gates --channels-last

Each pass is the backend contract (fused_attn/ops/<family>.py) run through one implementation module:
fused_attn.cpp.<family> (cpu) or fused_attn.reference.<family> (eager; compiled whole by torch.compile).
squeeze_excite includes its PyTorch MLP between the kernel passes, as the op does. Medians of --repeat runs
after --warmup runs. GB/s counts the minimal bytes (each input read once, each output written once, the
auxiliary outputs included); "%copy" compares with a copy of the same tensor into a preallocated one, timed in
the same run (outputs are new tensors, so every op also pays fresh pages, as x.clone() does).
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time

import torch

from fused_attn import _mlp
from fused_attn.cpp import apply_gates as cpp_gates
from fused_attn.cpp import channel_pool as cpp_pool
from fused_attn.cpp import ema as cpp_ema
from fused_attn.cpp import squeeze_excite as cpp_se
from fused_attn.reference import apply_gates as ref_gates
from fused_attn.reference import channel_pool as ref_pool
from fused_attn.reference import ema as ref_ema
from fused_attn.reference import squeeze_excite as ref_se

STATS = ("max", "mean", "std")
IMPLS = {
    "channel_pool": (cpp_pool, ref_pool),
    "channel_squeeze": (cpp_se, ref_se),
    "squeeze_excite": (cpp_se, ref_se),
    "apply_gates": (cpp_gates, ref_gates),
    "ema_strip_pool": (cpp_ema, ref_ema),
    "ema_core": (cpp_ema, ref_ema),
}
GROUPS = 32  # the official EMA factor


# ------------------------------------------------------------------------- each op's passes, per implementation
def se_forward(impl, x, w1, w2):
    pooled = impl.channel_squeeze_forward(x)
    z1, z2, s = _mlp.forward(pooled, w1, None, w2, None, "relu", "sigmoid")
    return impl.channel_scale_forward(x, s), pooled, z1, z2


def se_backward(impl, g, x, w1, w2, pooled, z1, z2):
    grad_s = impl.squeeze_excite_grad_gate(g, x)
    grad_pooled, gw1, _, gw2, _ = _mlp.backward(grad_s, pooled, z1, z2, w1, None, w2, None, "relu", "sigmoid")
    return impl.squeeze_excite_grad_input(g, _mlp.gate("sigmoid", z2), grad_pooled, x), gw1, gw2


PASSES = {  # op -> (forward(impl, *inputs), backward(impl, *inputs))
    "channel_pool": (lambda m, x: m.channel_pool_forward(x, STATS),
                     lambda m, g, x, am, mom: m.channel_pool_backward(g, x, am, mom, STATS)),
    "channel_squeeze": (lambda m, x: m.channel_squeeze_forward(x), lambda m, g, x: m.channel_squeeze_backward(g, x)),
    "squeeze_excite": (se_forward, se_backward),
    "apply_gates": (lambda m, y, c, s, r: m.apply_gates_forward(y, c, s, r),
                    lambda m, g, y, c, s: m.apply_gates_backward(g, y, c, s)),
    "ema_strip_pool": (lambda m, x: m.ema_strip_pool_forward(x), lambda m, g, x: m.ema_strip_pool_backward(g, x)),
    "ema_core": (lambda m, x, hw, x2, gw, gb: m.ema_core_forward(x, hw, x2, gw, gb, GROUPS, 1e-5),
                 lambda m, g, x, hw, x2, gw, gb, mean, rstd: m.ema_core_backward(g, x, hw, x2, gw, gb, mean, rstd,
                                                                                 GROUPS, 1e-5)),
}


def inputs(op, shape, dtype, channels_last):
    """(forward inputs, backward inputs, forward bytes, backward bytes) with the reference's saved tensors."""
    b, c, h, w = shape
    n, e = h * w, b * c * h * w
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def big():
        return torch.randn(shape, dtype=dtype).contiguous(memory_format=fmt)
    x = big()
    item = x.element_size()
    small = 4 if dtype != torch.float64 else 8
    if op == "channel_pool":
        out, am, mom = ref_pool.channel_pool_forward(x, STATS)
        g = torch.randn_like(out)
        aux = b * n * (4 + 2 * small)
        return (x,), (g, x, am, mom), (e + 3 * b * n) * item + aux, (2 * e + 3 * b * n) * item + aux
    if op == "channel_squeeze":
        return (x,), (torch.randn(b, c, dtype=dtype), x), e * item + b * c * small, e * item + b * c * small
    if op == "squeeze_excite":
        cr = max(c // 16, 1)
        w1, w2 = torch.randn(cr, c, dtype=dtype) * c ** -0.5, torch.randn(c, cr, dtype=dtype) * cr ** -0.5
        _, pooled, z1, z2 = se_forward(ref_se, x, w1, w2)
        return (x, w1, w2), (big(), x, w1, w2, pooled, z1, z2), 2 * e * item, 3 * e * item
    if op == "apply_gates":
        ch, sp = torch.rand(b, c, dtype=dtype), torch.rand(b, h, w, dtype=dtype)
        return (x, ch, sp, big()), (big(), x, ch, sp), 3 * e * item, 3 * e * item
    if op == "ema_strip_pool":
        pooled_bytes = b * c * (h + w) * item
        return (x,), (torch.randn(b, c, h + w, dtype=dtype), x), e * item + pooled_bytes, e * item + pooled_bytes
    if op == "ema_core":
        cg = c // GROUPS
        hw, x2 = torch.randn(b, c, h + w, dtype=dtype), big()
        gw, gb = torch.rand(cg, dtype=dtype) + 0.5, torch.randn(cg, dtype=dtype)
        _, mean, rstd = ref_ema.ema_core_forward(x, hw, x2, gw, gb, GROUPS, 1e-5)
        return (x, hw, x2, gw, gb), (big(), x, hw, x2, gw, gb, mean, rstd), 3 * e * item, 5 * e * item
    raise ValueError(op)


def median_ms(fns, args, warmup, repeat):
    """Median wall time (ms) of each function of `fns` on `args`; the runs are interleaved (fn0, fn1, ..., fn0,
    ...) so that a load change on a shared machine hits every contender alike."""
    for fn in fns:
        for _ in range(warmup):
            fn(*args)
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn(*args)
            ts.append(time.perf_counter() - start)
    return [statistics.median(ts) * 1e3 for ts in times]


def seed_channel_pool(x):
    """The seed modules' eager pooling (torch.max / mean / std over channels)."""
    return torch.cat([x.max(dim=1, keepdim=True)[0], x.mean(dim=1, keepdim=True), x.std(dim=1, keepdim=True)], dim=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", default=",".join(PASSES), help="comma-separated op names")
    ap.add_argument("--shapes", default="8x256x56x56,32x128x56x56", help="comma-separated BxCxHxW")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile of the reference")
    ap.add_argument("--no-reference", action="store_true", help="time the cpu backend (and copy) only")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, "
          f"{'channels_last' if args.channels_last else 'NCHW'}, median of {args.repeat} after {args.warmup} warm-up")
    head = (f"{'op':<16}{'pass':<5}{'shape':<14}{'cpu ms':>9}{'ref ms':>9}{'compile':>9}{'cpu GB/s':>10}"
            f"{'%copy':>7}{'x ref':>7}{'x comp':>8}")
    for shape_text in args.shapes.split(","):
        shape = tuple(int(v) for v in shape_text.split("x"))
        x = torch.randn(shape, dtype=dtype)
        y = torch.empty_like(x)
        copy_ms, clone_ms = median_ms([lambda t: y.copy_(t), lambda t: t.clone()], (x,), args.warmup, args.repeat)
        copy_gbs = 2 * x.numel() * x.element_size() / copy_ms / 1e6
        print(f"\n{shape_text}: copy into a preallocated tensor {copy_ms:.2f} ms = {copy_gbs:.1f} GB/s "
              f"(x.clone(), which also pays the new pages: {clone_ms:.2f} ms)")
        print(head)
        del x, y
        for op in args.ops.split(","):
            cpp_mod, ref_mod = IMPLS[op]
            fwd_in, bwd_in, fwd_bytes, bwd_bytes = inputs(op, shape, dtype, args.channels_last)
            for name, fn, ins, nbytes in (("fwd", PASSES[op][0], fwd_in, fwd_bytes),
                                          ("bwd", PASSES[op][1], bwd_in, bwd_bytes)):
                fns = [functools.partial(fn, cpp_mod)]
                if not args.no_reference:
                    fns.append(functools.partial(fn, ref_mod))
                    if not args.no_compile:  # one compiled function per op and pass (dynamo caches per code object)
                        fns.append(torch.compile(functools.partial(fn, ref_mod)))
                cpu, ref, comp = (median_ms(fns, ins, args.warmup, args.repeat) + [float("nan")] * 2)[:3]
                gbs = nbytes / cpu / 1e6
                print(f"{op:<16}{name:<5}{shape_text:<14}{cpu:>9.2f}{ref:>9.2f}{comp:>9.2f}{gbs:>10.1f}"
                      f"{100 * gbs / copy_gbs:>6.0f}%{ref / cpu:>7.1f}{comp / cpu:>8.1f}", flush=True)
            if op == "channel_pool" and not args.no_reference:
                fns = [seed_channel_pool] + ([] if args.no_compile else [torch.compile(seed_channel_pool)])
                times = median_ms(fns, (fwd_in[0],), args.warmup, args.repeat)
                print(f"  seed-style torch.max/mean/std: eager {times[0]:.2f} ms"
                      + ("" if args.no_compile else f", compiled {times[1]:.2f} ms"), flush=True)
            del fwd_in, bwd_in
    return 0


if __name__ == "__main__":
    sys.exit(main())
