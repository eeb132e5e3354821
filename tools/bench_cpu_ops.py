"""Time every kernel pass of the cpu backend (the C++ kernels) against the same pass of the reference backend and
torch.compile of it, at CNN-sized shapes, with GB/s of the pass's own tensors. The op-level benchmark, against
eager PyTorch baselines, is `python -m bench` (docs/bench.md); this is the per-pass view for kernel work.

  .venv/bin/python tools/bench_cpu_ops.py                       # every pass, both shapes, fp32, NCHW, with compile
  .venv/bin/python tools/bench_cpu_ops.py --no-compile --ops channel_pool,apply_gates --channels-last
  .venv/bin/python tools/bench_cpu_ops.py --passes channel_pool_reduce --variant max,mean --dtype bfloat16

The passes are the sample registry's PASSES (fused_attn/testing/registry.py), in its order, named as in every
layer (fused_attn/backends/__init__.py): each runs as fused_attn.backends.native.<family>.<pass> (cpu) and
fused_attn.backends.reference.<family>.<pass> (reference; torch.compile'd whole), on the arguments
PassInfo.args draws for a Case of the shape, dtype, layout and variant (its first variant, or --variant where
the pass takes it; ema_core's groups: --groups). Medians of --repeat runs after --warmup runs, the contenders'
runs interleaved so that a load change on a shared machine hits them alike. GB/s counts every tensor argument
read once and every output written once; "%copy" compares with a copy of x into a preallocated tensor timed in
the same run (the passes also allocate their outputs, as x.clone() does).
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time

import torch

import fused_attn  # noqa: F401  (registers the ops)
from fused_attn import _ext
from fused_attn.testing import registry
from fused_attn.testing.cases import Case


def passes_for(ops: list[str] | None, names: list[str] | None) -> list[str]:
    """The registry's passes of `ops` (every pass when neither is given), plus the passes named, registry order."""
    if not ops and not names:
        return list(registry.PASSES)
    unknown = [o for o in ops or () if o not in registry.OPS] + [p for p in names or () if p not in registry.PASSES]
    if unknown:
        raise SystemExit(f"unknown op or pass {', '.join(unknown)}; ops: {', '.join(registry.OPS)}; "
                         f"passes: {', '.join(registry.PASSES)}")
    wanted = {p for o in ops or () for p in registry.OPS[o].passes} | set(names or ())
    return [p for p in registry.PASSES if p in wanted]


def variant_for(info: registry.PassInfo, variant: str | None, groups: int) -> str:
    """ema_core: groups=G; else --variant where the pass has it (channel_pool: any ordered subset of max, mean,
    std), else the pass's first variant."""
    if info.family == "ema_core":
        return f"groups={groups}"
    if variant is None or info.variants == ("",):
        return info.variants[0]
    stats = variant.split(",")
    pool_ok = info.family == "channel_pool" and len(set(stats)) == len(stats) and set(stats) <= {"max", "mean", "std"}
    return variant if variant in info.variants or pool_ok else info.variants[0]


def family_modules(info: registry.PassInfo) -> tuple:
    """(native, reference) family modules of a pass; each has the pass as a function of its name, and DTYPES."""
    return tuple(importlib.import_module(f"fused_attn.backends.{package}.{info.family}")
                 for package in ("native", "reference"))


def tensor_bytes(values) -> int:
    """Bytes of every tensor in `values` (nested tuples / lists; non-tensors count 0)."""
    if isinstance(values, torch.Tensor):
        return values.numel() * values.element_size()
    if isinstance(values, (tuple, list)):
        return sum(tensor_bytes(v) for v in values)
    return 0


def median_ms(fns, args, warmup: int, repeat: int) -> list[float]:
    """Median wall time (ms) of each function of `fns` on `args`; the runs are interleaved (fn0, fn1, ..., fn0,
    ...) so that a load change on a shared machine hits every contender alike."""
    for fn in fns:
        for _ in range(warmup):
            fn(*args)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn(*args)
            ts.append(time.perf_counter() - start)
    return [statistics.median(ts) * 1e3 for ts in times]


def copy_gbps(shape, dtype, warmup: int, repeat: int) -> tuple[float, float]:
    """(ms, GB/s) of x copied into a preallocated tensor of its size, bytes read + written."""
    x = torch.randn(shape, dtype=torch.float32).to(dtype)
    dst = torch.empty_like(x)
    (ms,) = median_ms([dst.copy_], (x,), warmup, repeat)
    return ms, 2 * x.numel() * x.element_size() / ms / 1e6


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", default="", help=f"comma-separated ops, their passes ({', '.join(registry.OPS)})")
    ap.add_argument("--passes", default="", help="comma-separated pass names (default with --ops: none; else all)")
    ap.add_argument("--variant", default=None, help="variant for the passes that have it (e.g. max,mean; cs)")
    ap.add_argument("--groups", type=int, default=32, help="ema_core's groups (default 32, the EMA factor)")
    ap.add_argument("--shapes", default="8x256x56x56,32x128x56x56", help="comma-separated BxCxHxW")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    ap.add_argument("--channels-last", action="store_true", help="4-D tensors channels_last (default NCHW)")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile of the reference")
    ap.add_argument("--no-reference", action="store_true", help="time the cpu backend (and copy) only")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=7)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not _ext.available():
        raise SystemExit(f"the C++ extension is not available: {_ext.load_error()}")
    dtype = getattr(torch, args.dtype)
    layout = "channels_last" if args.channels_last else "nchw"
    names = passes_for([o for o in args.ops.split(",") if o], [p for p in args.passes.split(",") if p])
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    compiled: dict = {}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, {layout}, "
          f"median of {args.repeat} after {args.warmup} warm-up; cpu = fused_attn.backends.native, "
          f"ref = fused_attn.backends.reference")
    head = (f"{'pass':<28}{'variant':<14}{'cpu ms':>9}{'ref ms':>9}{'compile':>9}{'cpu GB/s':>10}{'%copy':>7}"
            f"{'x ref':>7}{'x comp':>8}")
    for shape_text in args.shapes.split(","):
        shape = tuple(int(v) for v in shape_text.lower().split("x"))
        copy_ms, copy_rate = copy_gbps(shape, dtype, args.warmup, args.repeat)
        print(f"\n{shape_text}: copy into a preallocated tensor {copy_ms:.2f} ms = {copy_rate:.1f} GB/s")
        print(head)
        for name in names:
            info = registry.PASSES[name]
            variant = variant_for(info, args.variant, args.groups)
            if not _ext.has_kernel(name, "cpu"):
                print(f"{name:<28}{variant:<14}  no cpu kernel in fused_attn._C", flush=True)
                continue
            native, reference = family_modules(info)
            if dtype not in native.DTYPES:
                print(f"{name:<28}{variant:<14}  cpu kernels do not take {args.dtype}", flush=True)
                continue
            cpu, ref = getattr(native, name), getattr(reference, name)
            pass_args = registry.pass_args(name, Case(shape, dtype, layout, variant), "cpu")
            fns = [cpu]
            if not args.no_reference:
                fns.append(ref)
                if not args.no_compile:  # one compiled function per pass (dynamo caches per code object)
                    fns.append(compiled.setdefault(name, torch.compile(ref)))
            nbytes = tensor_bytes(pass_args) + tensor_bytes(cpu(*pass_args))
            t_cpu, t_ref, t_comp = (median_ms(fns, pass_args, args.warmup, args.repeat) + [float("nan")] * 2)[:3]
            rate = nbytes / t_cpu / 1e6
            print(f"{name:<28}{variant:<14}{t_cpu:>9.2f}{t_ref:>9.2f}{t_comp:>9.2f}{rate:>10.1f}"
                  f"{100 * rate / copy_rate:>6.0f}%{t_ref / t_cpu:>7.1f}{t_comp / t_cpu:>8.1f}", flush=True)
            del pass_args
    return 0


if __name__ == "__main__":
    sys.exit(main())
