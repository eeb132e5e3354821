#!/usr/bin/env python3
"""Ahead-of-time compile check of every Triton kernel of fused_attn for CUDA (sm_80, sm_90), without a GPU.

CI runs the Triton kernels only through the interpreter (TRITON_INTERPRET=1), which never compiles them, so
errors that only the GPU compiler sees (a loop-carried variable that changes dtype, an int32 / int64 mix, a bad
cast or pointer type, an op illegal for fp64 / fp16 / bf16, an LLVM or ptxas failure) would only show on a GPU.
This script compiles the kernels with the specialisations the real launchers produce, to cubin (ptxas ships
with the triton wheel):

  1. Launches are recorded instead of run (tools/triton_aot.py): one per autotune config (num_warps 4 and 8),
     each specialised by triton's own binder as `JITFunction.run` does on a GPU: integers equal to 1 become
     constexprs, integers of 2^31 and more int64, 16-divisible integers and 16-byte-aligned pointers get
     `tt.divisibility`.
  2. The driver matrix is the sample registry's (fused_attn/testing/registry.py). Every op of OPS runs on the
     cases of GRIDS["aot"] (--quick: "aot-quick"), forward and autograd backward, through its public function
     with backend="triton" on CPU tensors: only shapes, strides, dtypes and data_ptr matter (values are
     garbage). grad_out is stride 0 for the "sliced" cases (as `.sum().backward()` gives), dense NCHW one
     element off 16-byte alignment for the "mixed" ones (x channels_last), else like the output.
     fused_attn.dispatch is told Triton may serve CPU tensors, and `_common.TARGET_PROGRAMS` stands in for the
     device (4 waves of SMs: 108 on an A100 for sm_80, 132 on an H100 for sm_90), so the block-size heuristics
     pick what they pick on that GPU. The full matrix then launches every pass of PASSES directly, with its
     arguments on meta tensors of over 2^31 elements (GRIDS["aot-huge"]: the int64 paths).
  3. Compiling (triton_aot.plan): each unique (kernel, specialisation, arch, num_warps) costs ~0.2-2 s on one
     core and the matrix has thousands, so a covering set goes to cubin (`triton.compile(ASTSource(fn, signature,
     constexprs, attrs), target=GPUTarget("cuda", arch, 32), options)`): every code path (pointer types +
     constexpr flags) on every (arch, num_warps) target and every tile geometry (BLOCK sizes, unit strides,
     alignment) on each arch and with each num_warps (--quick: each on one target). Every other specialisation
     goes only through the frontend (AST -> TTIR, where the arch-independent errors arise); --exhaustive takes
     everything to cubin. A fresh TRITON_CACHE_DIR is used and removed: no cached kernel can hide an error.

Coverage is enforced: every autotuned kernel (and every plain-jit `*_kernel`) in fused_attn/backends/triton/*.py
must have been launched, and every public launcher of a family module (one with OPS) called, or the check fails.

Usage: python tools/check_triton_kernels.py [--arch 80,90] [--quick | --exhaustive] [-j N] [--only REGEX]
                                            [--list] [-v]
Exit status 0 when everything compiles (or, skipped, when triton is not importable), 1 otherwise; each failure
is printed with the kernel, the target, the specialisation (argument types, constexprs, divisibility), the
driver case that first launched it and the compiler's error.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import os
import pkgutil
import re
import shutil
import sys
import tempfile
import time
import traceback
import warnings

# Before anything imports triton or fused_attn's Triton backend: the kernels must be real @triton.jit / autotune
# objects, not interpreter functions (both read TRITON_INTERPRET at import time).
os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))                    # tools/: triton_aot
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the checkout: fused_attn

import triton_aot
from triton_aot import REC, SPECS, TAG

TRITON_PACKAGE = "fused_attn.backends.triton"


# ------------------------------------------------------------------------------------------------ driving
def family_modules() -> list:
    """Every module of the Triton backend (_common included: it holds the shared pointwise kernel)."""
    pkg = importlib.import_module(TRITON_PACKAGE)
    return [importlib.import_module(f"{TRITON_PACKAGE}.{m.name}") for m in pkgutil.iter_modules(pkg.__path__)]


def _grad_out(out, layout: str):
    import torch
    if layout == "sliced":     # stride 0 everywhere
        return torch.ones((), dtype=out.dtype).expand(out.shape)
    if layout == "mixed":      # NCHW beside a channels_last x, base pointer one element off alignment
        return torch.randn(out.numel() + 1, dtype=out.dtype)[1:].view(out.shape)
    return torch.randn_like(out)


def _forward_backward(op: str, case) -> None:
    """The op's public function on the registry's sample inputs (backend="triton"), then its backward."""
    import torch

    from fused_attn.testing import registry
    s = registry.sample(op, case)
    leaves = [t.detach().requires_grad_() if i in s.grads else t for i, t in enumerate(s.inputs)]
    out = s.call("triton", leaves)
    torch.autograd.grad(out, [leaves[i] for i in s.grads], _grad_out(out, case.layout))


def _launch_pass(name: str, case) -> None:
    """One pass called directly on the registry's arguments drawn on the meta device (no memory: the launchers
    read only shapes and strides, data_ptr is 0; the custom ops would run their fake kernels instead)."""
    from fused_attn.testing import registry
    args = registry.pass_args(name, case, "meta")
    if args is not None:
        module = importlib.import_module(f"{TRITON_PACKAGE}.{registry.PASSES[name].family}")
        getattr(module, name)(*args)   # looked up now: the launcher counted by triton_aot.count_launchers


def driver_cases(quick: bool) -> list:
    """(label, thunk) for every driver case: the public ops on the registry's AOT grid, then (full only) every
    pass on the >2^31-element meta cases."""
    from fused_attn.testing import registry
    grid = "aot-quick" if quick else "aot"
    cases = [(f"{op}[{case.id}]", functools.partial(_forward_backward, op, case))
             for op in registry.OPS for case in registry.op_cases(op, grid)]
    if not quick:
        cases += [(f"{name}[{case.id}] (meta)", functools.partial(_launch_pass, name, case))
                  for name in registry.PASSES for case in registry.pass_cases(name, "aot-huge")]
    return cases


def drive(quick: bool, archs) -> tuple:
    """Run every driver case once per target arch with launches recorded. -> (kernels, launcher calls, cases)."""
    import torch

    from fused_attn import dispatch
    from fused_attn.backends.triton import _common

    torch.set_num_threads(1)
    mods = family_modules()
    kernels = triton_aot.kernels_of(mods)
    calls = triton_aot.count_launchers(mods)
    # let the triton backend serve CPU tensors (what it does under the interpreter); launches only record
    dispatch._interpreting_triton = lambda: True
    dispatch.clear_caches()
    cases = driver_cases(quick)
    with triton_aot.recording(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for arch in archs:
            REC.set_target(arch)
            _common.TARGET_PROGRAMS = 4 * triton_aot.SM_COUNT.get(arch, 132)
            for label, thunk in cases:
                REC.case = f"{label} (TARGET_PROGRAMS={_common.TARGET_PROGRAMS})"
                try:
                    thunk()
                except Exception:
                    print(f"{TAG}: FAILED to drive {label} for sm_{arch}:\n{traceback.format_exc()}", flush=True)
                    raise SystemExit(1) from None
    return kernels, calls, len(cases)


# ------------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="80,90", help="comma-separated CUDA compute capabilities (default 80,90)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help='the registry\'s GRIDS["aot-quick"] (fewer shapes and layouts, no meta cases)')
    mode.add_argument("--exhaustive", action="store_true",
                      help="compile every specialisation to cubin for every target (slow: ~10x the default)")
    ap.add_argument("--jobs", "-j", type=int, default=min(os.cpu_count() or 1, 8),
                    help="compile processes (default: the CPU count, at most 8)")
    ap.add_argument("--only", metavar="REGEX",
                    help="compile only the kernels whose name matches (coverage is still checked)")
    ap.add_argument("--list", action="store_true", help="record and plan only, compile nothing")
    ap.add_argument("--verbose", "-v", action="store_true", help="one line per compile")
    args = ap.parse_args(argv)
    try:
        archs = sorted({int(a.strip().replace("sm_", "")) for a in args.arch.split(",") if a.strip()})
    except ValueError:
        ap.error(f"--arch: expected e.g. 80,90, got {args.arch!r}")
    if not archs:
        ap.error("--arch: no target given")

    try:
        import triton
    except ImportError as exc:
        print(f"{TAG}: triton is not importable ({exc}): skipped")
        return 0

    t0 = time.perf_counter()
    cache = tempfile.mkdtemp(prefix="triton-check-cache-")
    os.environ["TRITON_CACHE_DIR"] = cache   # fresh and removed afterwards: no cached kernel hides an error
    try:
        from triton import knobs
        knobs.cache.dir = cache
        knobs.compilation.always_compile = True
        targets = ", ".join(f"sm_{a}" for a in archs)
        matrix = 'GRIDS["aot-quick"]' if args.quick else 'GRIDS["aot"] + GRIDS["aot-huge"]'
        print(f"{TAG}: triton {triton.__version__} ({os.path.dirname(triton.__file__)}), ptxas "
              f"{knobs.nvidia.ptxas.path}; targets {targets} x num_warps of the autotune configs; "
              f"{matrix}{', exhaustive' if args.exhaustive else ''}", flush=True)
        kernels, calls, n_cases = drive(args.quick, archs)
        t_drive = time.perf_counter() - t0
        missing = sorted(n for fn, n in kernels.items() if REC.launched[fn] == 0)
        uncalled = sorted(q for q, n in calls.items() if n == 0)
        SPECS[:] = sorted((s for s in REC.specs.values() if not args.only or re.search(args.only, s.name)),
                          key=lambda s: (s.fn.fn.__module__, s.name, s.arch, s.options.num_warps, s.order))
        how = "exhaustive" if args.exhaustive else "once" if args.quick else "cover"
        cubin, frontend = triton_aot.plan(SPECS, how)
        n_front_keys = len({triton_aot.frontend_key(s) for s in SPECS})
        print(f"{TAG}: {n_cases} driver cases x {len(archs)} arch(s): {REC.n_launches} launches (one per autotune "
              f"config) from {sum(calls.values())} launcher calls ({t_drive:.1f}s) -> {n_front_keys} distinct "
              f"specialisations, {len(SPECS)} with arch and num_warps; to compile: {len(cubin)} to cubin, "
              f"{len(frontend)} more through the frontend only", flush=True)
        jobs = [("cubin", i) for i in cubin] + [("frontend", i) for i in frontend]
        if args.list:
            results = [(kind, i, 0.0, None) for kind, i in jobs]
        else:
            results = triton_aot.compile_all(jobs, max(1, args.jobs), args.verbose)
        wall = time.perf_counter() - t0
        failures = triton_aot.report(results, args.list)
        for name in missing:
            print(f"{TAG}: FAILED: kernel {name} was never launched by the driver cases (add registry cases)")
        for q in uncalled:
            print(f"{TAG}: FAILED: launcher {q} was never called by the driver cases (add registry cases)")
        ok = not failures and not missing and not uncalled
        verb = "planned" if args.list else "compiled"
        print(f"{TAG}: {'OK' if ok else 'FAILED'}: {len({s.fn for s in SPECS})} kernels; {n_front_keys} distinct "
              f"specialisations, every one through the frontend (AST -> TTIR); {len(cubin)} of their {len(SPECS)} "
              f"(arch, num_warps) variants {verb} to cubin for {targets}; {len(failures)} compile error(s); "
              f"{len(missing)} kernel(s) and {len(uncalled)} launcher(s) not covered; {wall:.0f}s wall "
              f"({sum(r[2] for r in results):.0f}s compiling, {args.jobs} process(es))")
        return 0 if ok else 1
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
