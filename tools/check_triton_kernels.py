#!/usr/bin/env python3
"""Ahead-of-time compile check of every Triton kernel of fused_attn for CUDA (sm_80, sm_90), without a GPU.

CI runs the Triton kernels only through the interpreter (TRITON_INTERPRET=1), which never compiles them, so
errors that only the GPU compiler sees (a loop-carried variable that changes dtype, an int32 / int64 mix, a bad
cast or pointer type, an op illegal for fp64 / fp16 / bf16, an LLVM or ptxas failure) would only show on a GPU.
This script compiles the kernels with the specialisations the real launchers produce, to cubin (ptxas ships
with the triton wheel):

  1. Launches are recorded instead of run: `Autotuner.run` expands a launch into one per autotune config
     (num_warps 4 and 8) and `JITFunction.run` (where `kernel[grid](...)` ends) records it. The
     specialisation comes from triton's own binder (`create_function_from_signature` over
     `native_specialize_impl`, then `JITFunction._pack_args`), exactly as `JITFunction.run` computes it on a GPU:
     integers equal to 1 become constexprs, integers of 2^31 and more int64, 16-divisible integers and
     16-byte-aligned pointers get `tt.divisibility`.
  2. The launchers are driven through the public API (fused_attn.functional with backend="triton", forward and
     autograd backward) on small CPU tensors: only shapes, strides, dtypes and data_ptr matter (values are
     garbage). fused_attn.dispatch is told Triton may serve CPU tensors, and `_common.TARGET_PROGRAMS` stands in
     for the device (4 waves of SMs: 108 on an A100 for sm_80, 132 on an H100 for sm_90), so the block-size
     heuristics pick what they pick on that GPU. Tensors of over 2^31 elements (the int64 paths) are meta
     tensors handed to the launchers directly. The matrix is below (SHAPES ...).
  3. Compiling: every unique (kernel, specialisation, arch, num_warps) costs ~0.2-2 s on one core, and the
     matrix has thousands, so by default a covering set is compiled to cubin with `triton.compile(ASTSource(fn,
     signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32), options)`: every code path (pointer
     types + constexpr flags) on every (arch, num_warps) target, and every tile geometry (BLOCK sizes, unit
     strides, alignment) on each arch and with each num_warps (see `plan`). Every other specialisation goes
     through the frontend stages of triton.compile (AST -> TTIR, where the errors that do not depend on the arch
     and num_warps arise). --exhaustive compiles everything to cubin. A temporary TRITON_CACHE_DIR is used and
     removed: no cached kernel can hide an error on the next run.

Coverage is enforced: every autotuned kernel (and every plain-jit `*_kernel`) in fused_attn/triton/*.py must
have been launched, and every public launcher of a family module (one with OPS) called, or the check fails.

Usage: python tools/check_triton_kernels.py [--arch 80,90] [--quick | --exhaustive] [-j N] [--only REGEX]
                                            [--list] [-v]
Exit status 0 when everything compiles (or, skipped, when triton is not importable), 1 otherwise; each failure
is printed with the kernel, the target, the specialisation (argument types, constexprs, divisibility), the
driver case that first launched it and the compiler's error.
"""
from __future__ import annotations

import os
import sys

# Before anything imports triton or fused_attn.triton: the kernels must be real @triton.jit / autotune
# objects, not interpreter functions (both read TRITON_INTERPRET at import time).
os.environ.pop("TRITON_INTERPRET", None)

import argparse  # noqa: E402
import collections  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import inspect  # noqa: E402
import multiprocessing  # noqa: E402
import pkgutil  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TAG = "triton-check"
# 4 waves of SMs per arch, as _common.target_programs computes on the device (A100: 108 SMs, H100 SXM: 132)
SM_COUNT = {80: 108, 86: 84, 89: 128, 90: 132}


@dataclasses.dataclass
class Spec:
    """One unique specialisation of one kernel for one target: what `JITFunction._do_compile` compiles."""
    fn: object            # the JITFunction
    arch: int
    options: object       # the backend's parsed options (CUDAOptions)
    signature: dict
    constexprs: dict
    attrs: dict
    case: str             # the first driver case that produced it
    order: int = 0        # recording order
    launches: int = 1

    @property
    def name(self) -> str:
        return self.fn.fn.__name__

    def target(self, kind: str = "cubin") -> str:
        if kind == "cubin":
            return f"sm_{self.arch} num_warps={self.options.num_warps} num_stages={self.options.num_stages}"
        return "frontend (AST -> TTIR, any target)"

    def describe(self, kind: str = "cubin") -> str:
        names = [p.name for p in self.fn.params]
        const = ", ".join(f"{names[k[0]]}={_short(v)}" for k, v in self.constexprs.items())
        sig = ", ".join(f"{k}:{v}" for k, v in self.signature.items() if v != "constexpr")
        div = ", ".join(names[k[0]] for k, v in self.attrs.items() if v)
        return (f"{self.name} {self.target(kind)}\n"
                f"    args: {sig}\n    constexprs: {const}\n    divisibility 16: {div or '-'}\n"
                f"    first launched by: {self.case}")


def _short(v) -> str:
    s = str(v)
    return s.replace("triton.language.", "tl.")


class Recorder:
    """Turns recorded launches into unique Specs for the current target, using triton's own binder."""

    def __init__(self):
        self.specs: dict = {}
        self.launched = collections.Counter()   # JITFunction -> launches
        self.n_launches = 0
        self.case = "?"
        self.arch = None
        self._backend = None
        self._binders: dict = {}

    def set_target(self, arch: int):
        from triton.backends.compiler import GPUTarget
        from triton.compiler.compiler import make_backend
        self.arch = arch
        self.target = GPUTarget("cuda", arch, 32)
        self._backend = make_backend(self.target)
        self._binders = {}

    def record(self, fn, args, kwargs):
        """What JITFunction.run does up to `_do_compile`, without a device: bind, specialise, pack."""
        from triton import knobs
        from triton.runtime.jit import compute_cache_key, create_function_from_signature
        kwargs = dict(kwargs)
        kwargs.pop("grid", None)
        kwargs.pop("warmup", None)
        kwargs["debug"] = kwargs.get("debug", fn.debug) or knobs.runtime.debug
        for knob in ("instrumentation_mode", "fpsan_homomorphic_casts"):   # as triton 3.9's run (if it has them)
            if hasattr(knobs.compilation, knob):
                kwargs[knob] = getattr(knobs.compilation, knob)
        binder = self._binders.get(fn)
        if binder is None:
            binder = self._binders[fn] = create_function_from_signature(fn.signature, fn.params, self._backend)
        bound_args, specialization, options = binder(*args, **kwargs)
        self.launched[fn] += 1
        self.n_launches += 1
        key = (fn, self.arch, compute_cache_key({}, specialization, options))
        spec = self.specs.get(key)
        if spec is not None:
            spec.launches += 1
            return
        options, signature, constexprs, attrs = fn._pack_args(self._backend, kwargs, bound_args, specialization,
                                                              options)
        self.specs[key] = Spec(fn, self.arch, options, signature, constexprs, attrs, self.case, len(self.specs))


REC = Recorder()


@contextlib.contextmanager
def recording():
    """Launches record (never run): Autotuner.run fans out over its configs, JITFunction.run records."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    def autotuner_run(self, *args, **kwargs):
        self.nargs = dict(zip(self.arg_names, args))
        for config in self.prune_configs(kwargs):
            conflicts = kwargs.keys() & config.kwargs.keys()
            if conflicts:
                raise ValueError(f"{self.base_fn.__name__}: conflicting meta-parameters {sorted(conflicts)}")
            self.fn.run(*args, **kwargs, **config.all_kwargs())
        self.nargs = None

    def jit_run(self, *args, grid, warmup, **kwargs):
        REC.record(self, args, kwargs)
        return None

    saved = Autotuner.run, JITFunction.run
    Autotuner.run, JITFunction.run = autotuner_run, jit_run
    try:
        yield
    finally:
        Autotuner.run, JITFunction.run = saved


# ------------------------------------------------------------------------------------------------ driving
def family_modules():
    import fused_attn.triton as pkg
    import importlib
    mods = []
    for info in pkgutil.iter_modules(pkg.__path__):
        mods.append(importlib.import_module(f"fused_attn.triton.{info.name}"))
    return mods


def kernels_of(mods):
    """{JITFunction: 'module.name'} of every launchable kernel: autotuned ones, and plain-jit *_kernel."""
    from triton.runtime.autotuner import Autotuner, Heuristics
    from triton.runtime.jit import JITFunction
    found = {}
    for mod in mods:
        for name, obj in vars(mod).items():
            inner = obj
            while isinstance(inner, (Autotuner, Heuristics)):
                inner = inner.fn
            if inner is obj and not (isinstance(obj, JITFunction) and name.endswith("_kernel")):
                continue
            if isinstance(inner, JITFunction) and inner.fn.__module__ == mod.__name__:
                found[inner] = f"{mod.__name__.rsplit('.', 1)[1]}.{name}"
    return found


def count_launcher_calls(mods):
    """Wrap the public launchers of every family module (those with OPS): {qualified name: call count}."""
    calls = collections.Counter()
    originals = {}
    for mod in mods:
        if not hasattr(mod, "OPS"):
            continue
        for name, obj in list(vars(mod).items()):
            if inspect.isfunction(obj) and not name.startswith("_") and obj.__module__ == mod.__name__:
                originals[obj] = f"{mod.__name__.rsplit('.', 1)[1]}.{name}"
                calls[originals[obj]] += 0

    def wrap(fn, qual):
        def counted(*a, **k):
            calls[qual] += 1
            return fn(*a, **k)
        counted.__wrapped__ = fn
        return counted
    wrapped = {fn: wrap(fn, q) for fn, q in originals.items()}
    for mod in mods:   # every module's reference to a launcher (dual_attention imports apply_gates_grad_gates)
        for name, obj in list(vars(mod).items()):
            if inspect.isfunction(obj) and obj in wrapped:
                setattr(mod, name, wrapped[obj])
    return calls


# The matrix. Tier 1: every op's main variant in every dtype, NCHW and channels_last, on SHAPES. Tier 2: the
# other variants (channel_pool stat subsets, apply_gates part subsets, EMA hw / x2 in bf16 / fp16 beside an fp32
# x) on VARIANT_SHAPES. Tier 3 (full only): awkward strides (a channel slice, whose base pointer is not 16-byte
# aligned, with a stride-0 grad_out as `.sum().backward()` gives; channels_last x with an NCHW grad_out) on
# STRIDE_SHAPES in fp32 and bf16. Shapes: odd small ones, C = 1 / 3 / H = W = 1, and large maps, so that the
# block-size heuristics pick different BLOCK sizes, splits and chunks (and integers equal to 1 specialise).
SHAPES = {"quick": ((2, 5, 7, 3), (4, 64, 56, 56), (1, 3, 1, 1)),
          "full": ((2, 5, 7, 3), (4, 64, 56, 56), (2, 256, 14, 14), (1, 3, 1, 1), (1, 1, 9, 17))}
VARIANT_SHAPES = {"quick": ((2, 5, 7, 3),), "full": ((2, 5, 7, 3), (2, 256, 14, 14))}
STRIDE_SHAPES = {"quick": (), "full": ((2, 5, 7, 3), (4, 64, 56, 56))}
# Tier 4 (full only): over 2^31 elements, on the meta device: a batch stride of 2^31; P = H * W = 2^31 (with W =
# 512: the EMA kernels tile whole rows, and a W of 32768 gives [2, 1, 32768] tiles that take minutes to compile)
HUGE_SHAPES = {"quick": (), "full": ((2, 65536, 256, 128), (1, 2, 4194304, 512))}
DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")
STAT_SETS = (("max", "mean", "std"), ("max",), ("mean",), ("std",), ("std", "max"), ("mean", "std"))
GATE_PARTS = ("csr", "c", "s", "r", "cs", "sr", "cr", "")


def _op_cases(shape, dtype, layout, main: bool, variants: bool):
    """(label, thunk) for every launcher call of one (shape, dtype, layout): each op's forward and backward
    through fused_attn.functional (main: the main variant of each op; variants: the others)."""
    import torch

    from fused_attn import functional as FA

    b, c, h, w = shape
    cr = max(1, c // 4)
    lab = f"{'x'.join(map(str, shape))} {str(dtype).replace('torch.', '')} {layout}"

    def x4(dt=dtype):
        if layout == "sliced":   # a channel slice: mergeable strides, base pointer off by H*W elements
            return torch.randn(b, c + 1, h, w, dtype=dt)[:, 1:]
        x = torch.randn(shape, dtype=dt)
        return x.contiguous(memory_format=torch.channels_last) if layout.startswith("channels_last") else x

    def t(*size, dt=dtype):
        return torch.randn(*size, dtype=dt)

    def grad_like(out):
        if layout == "channels_last_x_nchw_grad":
            return torch.randn(out.shape, dtype=out.dtype)
        if layout == "sliced":   # stride-0 grad_out
            return torch.ones((), dtype=out.dtype).expand(out.shape)
        return torch.randn_like(out)

    def fwd_bwd(fn, *inputs):
        ins = [i.requires_grad_() for i in inputs]
        out = fn(*ins)
        torch.autograd.grad(out, ins, grad_like(out))

    for stats in STAT_SETS:
        if (main and stats == STAT_SETS[0]) or (variants and stats != STAT_SETS[0]):
            yield (f"channel_pool[{','.join(stats)}] {lab}",
                   lambda stats=stats: fwd_bwd(lambda x: FA.channel_pool(x, stats, backend="triton"), x4()))
    if main:
        yield (f"channel_squeeze {lab}", lambda: fwd_bwd(lambda x: FA.channel_squeeze(x, backend="triton"), x4()))
        yield (f"squeeze_excite {lab}",
               lambda: fwd_bwd(lambda x, *wb: FA.squeeze_excite(x, *wb, act="silu", backend="triton"),
                               x4(), t(cr, c), t(cr), t(c, cr), t(c)))
    for parts in GATE_PARTS:
        if not ((main and parts == GATE_PARTS[0]) or (variants and parts != GATE_PARTS[0])):
            continue

        def gates(parts=parts):
            keep = [True, "c" in parts, "s" in parts, "r" in parts]
            used = [v for v, k in zip([x4(), t(b, c), t(b, h, w), x4()], keep) if k]

            def fn(*a):
                it = iter(a)
                return FA.apply_gates(*[next(it) if k else None for k in keep], backend="triton")
            fwd_bwd(fn, *used)
        yield f"apply_gates[{parts or 'none'}] {lab}", gates
    if main:
        yield (f"dual_attention {lab}",
               lambda: fwd_bwd(lambda x, *wb: FA.dual_attention(x, *wb, act="silu", backend="triton"),
                               x4(), t(cr, c), t(cr), t(c, cr), t(c), t(c), t(1)))
        yield f"ema_strip_pool {lab}", lambda: fwd_bwd(lambda x: FA.ema_strip_pool(x, backend="triton"), x4())
    groups = c // 8 if c % 8 == 0 else 1
    cg = c // groups
    # main: everything in x's dtype; variants: hw, x2 from bf16 / fp16 convolutions beside an fp32 x (autocast)
    sides = ([dtype] if main else []) + ([torch.bfloat16, torch.float16] if variants and dtype == torch.float32 else [])
    for sd in sides:
        side_lab = "" if sd == dtype else f" (hw, x2 {str(sd).replace('torch.', '')})"
        yield (f"ema_core[groups={groups}] {lab}{side_lab}",
               lambda sd=sd: fwd_bwd(lambda *a: FA.ema_core(*a, groups, backend="triton"),
                                     x4(), t(b, c, h + w, dt=sd), x4(sd), t(cg), t(cg)))


def _huge_cases(shape, dtype, layout):
    """(label, thunk) for every family launcher on a tensor of over 2^31 elements, on the meta device (no memory:
    the launchers only read shapes and strides, and data_ptr is 0). Integers of 2^31 and more are specialised
    as int64 (here the batch stride, or P = H * W and the channel stride): the kernels' 64-bit paths. Called
    directly (the custom ops would run their fake kernels on meta tensors), with the gate dtypes the ops pass."""
    import torch

    from fused_attn._layout import acc_dtype
    from fused_attn.triton import apply_gates as ag, channel_pool as cp, dual_attention as da, ema, \
        squeeze_excite as se

    b, c, h, w = shape
    acc = acc_dtype(dtype)
    lab = f"{'x'.join(map(str, shape))} {str(dtype).replace('torch.', '')} {layout} (meta)"
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format

    def x4(dt=dtype):
        return torch.empty(shape, dtype=dt, device="meta", memory_format=fmt)

    def t(*size, dt=dtype):
        return torch.empty(size, dtype=dt, device="meta")

    def pool():
        stats = ("max", "mean", "std")
        x = x4()
        out, argmax, moments = cp.channel_pool_forward(x, stats)
        cp.channel_pool_backward(torch.empty_like(out), x, argmax, moments, stats)

    def squeeze():
        x = x4()
        se.channel_squeeze_forward(x)
        se.channel_squeeze_backward(t(b, c), x)
        se.channel_scale_forward(x, t(b, c, dt=acc))
        se.squeeze_excite_grad_gate(x4(), x)
        se.squeeze_excite_grad_input(x4(), t(b, c, dt=acc), t(b, c, dt=acc), x)

    def gates():
        y = x4()
        ag.apply_gates_forward(y, t(b, c), t(b, h, w), x4())
        ag.apply_gates_backward(x4(), y, t(b, c), t(b, h, w))

    def dual():
        x = x4()
        da.dual_attention_reduce(x, t(c))
        da.dual_attention_apply(x, t(b, c, dt=acc), t(b, h, w, dt=acc))
        da.dual_attention_grad_gates(x4(), x, t(b, c, dt=acc), t(b, h, w, dt=acc))
        da.dual_attention_grad_input(x4(), x, t(b, c, dt=acc), t(b, h, w, dt=acc), t(c), t(b, h, w, dt=acc),
                                     t(b, c, dt=acc))

    def strip():
        x = x4()
        ema.ema_strip_pool_forward(x)
        ema.ema_strip_pool_backward(t(b, c, h + w), x)

    groups = c // 8 if c % 8 == 0 else 1

    def core():
        x, hw, x2 = x4(), t(b, c, h + w), x4()
        gw, gb = t(c // groups), t(c // groups)
        _, mean, rstd = ema.ema_core_forward(x, hw, x2, gw, gb, groups, 1e-5)
        ema.ema_core_backward(x4(), x, hw, x2, gw, gb, mean, rstd, groups, 1e-5)

    for name, fn in (("channel_pool", pool), ("squeeze_excite", squeeze), ("apply_gates", gates),
                     ("dual_attention", dual), ("ema_strip_pool", strip), ("ema_core", core)):
        yield f"{name} {lab}", fn


def _cases(mode: str):
    import torch
    dtypes = [getattr(torch, n) for n in DTYPE_NAMES]
    for shape in SHAPES[mode]:
        for dtype in dtypes:
            for layout in ("nchw", "channels_last"):
                yield from _op_cases(shape, dtype, layout, main=True, variants=shape in VARIANT_SHAPES[mode])
    for shape in STRIDE_SHAPES[mode]:
        for dtype in (torch.float32, torch.bfloat16):
            for layout in ("sliced", "channels_last_x_nchw_grad"):
                yield from _op_cases(shape, dtype, layout, main=True, variants=False)
    for shape in HUGE_SHAPES[mode]:
        for dtype in (torch.float32, torch.bfloat16):
            for layout in ("nchw", "channels_last"):
                yield from _huge_cases(shape, dtype, layout)


def drive(matrix: str, archs):
    """Run every case once per target arch with launches recorded. -> (kernels, launcher calls)."""
    import torch

    from fused_attn import dispatch
    from fused_attn.triton import _common

    torch.set_num_threads(1)
    mods = family_modules()
    kernels = kernels_of(mods)
    calls = count_launcher_calls(mods)
    # let the triton backend serve CPU tensors (what it does under the interpreter); launches only record
    dispatch._interpreting_triton = lambda: True
    dispatch.clear_caches()
    with recording(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for arch in archs:
            REC.set_target(arch)
            _common.TARGET_PROGRAMS = 4 * SM_COUNT.get(arch, 132)
            for label, thunk in _cases(matrix):
                REC.case = f"{label} (TARGET_PROGRAMS={_common.TARGET_PROGRAMS})"
                try:
                    thunk()
                except Exception:
                    print(f"{TAG}: FAILED to drive {label} for sm_{arch}:\n{traceback.format_exc()}", flush=True)
                    raise SystemExit(1)
    return kernels, calls


# ---------------------------------------------------------------------------------------------- planning
def _param_names(spec):
    return [p.name for p in spec.fn.params]


def path_of(spec):
    """The kernel's code path: its pointer element types and its declared constexpr flags (not the BLOCKs)."""
    names = _param_names(spec)
    flags = tuple((names[k[0]], _short(v)) for k, v in spec.constexprs.items()
                  if spec.fn.params[k[0]].is_constexpr and not names[k[0]].startswith("BLOCK"))
    ptrs = tuple(v for v in spec.signature.values() if v.startswith("*"))
    return spec.fn, ptrs, flags


def tile_of(spec):
    """The kernel's tile geometry: ACC, the BLOCK sizes, the integers specialised to 1 (unit strides, single
    blocks) and the pointers without 16-byte alignment."""
    names = _param_names(spec)
    blocks = tuple((names[k[0]], v) for k, v in spec.constexprs.items() if names[k[0]].startswith("BLOCK"))
    acc = tuple(_short(v) for k, v in spec.constexprs.items() if names[k[0]] == "ACC")
    ones = tuple(names[k[0]] for k in spec.constexprs if not spec.fn.params[k[0]].is_constexpr)
    unaligned = tuple(names[k[0]] for k, v in spec.attrs.items()
                      if spec.signature[names[k[0]]].startswith("*") and not v)
    return spec.fn, acc, blocks, ones, unaligned


def frontend_key(spec):
    """Specialisations with this key produce the same Triton IR whatever the arch and num_warps."""
    return spec.fn, str(spec.signature), str(spec.constexprs), str(spec.attrs)


def plan(specs, how: str):
    """-> (indices compiled to cubin, indices only taken through the frontend to TTIR).

    how = "exhaustive": every specialisation to cubin, for every target. Otherwise a covering set goes to cubin,
    chosen greedily (each pick covers as many new elements as it can):
      "cover" (the default): every code path (pointer types + constexpr flags) on every (arch, num_warps)
          target, and every tile geometry (BLOCK sizes, integers specialised to 1, unaligned pointers) on each
          arch and with each num_warps;
      "once" (--quick): every code path and every tile geometry on one target, and every kernel in every dtype
          on every target.
    Picks alternate between the two diagonals of (arch, num_warps) so that each target gets a share of the
    tiles. Every other specialisation goes through the frontend (AST -> TTIR: the errors that do not depend on
    arch and num_warps), once per frontend key."""
    if how == "exhaustive":
        return list(range(len(specs))), []
    archs = sorted({s.arch for s in specs})
    warps = sorted({s.options.num_warps for s in specs})
    path_ids: dict = {}

    def elements(s):
        p, t = path_of(s), tile_of(s)
        if how == "cover":
            return {("path", p, s.arch, s.options.num_warps),
                    ("tile", t, "sm", s.arch), ("tile", t, "w", s.options.num_warps)}
        first_ptr = next((v for v in s.signature.values() if v.startswith("*")), "")
        return {("kernel x dtype", s.fn, first_ptr, s.arch, s.options.num_warps), ("path", p), ("tile", t)}

    def off_diagonal(s):   # 0 when this spec's target is on the diagonal preferred for its path
        pid = path_ids.setdefault(path_of(s), len(path_ids))
        return (archs.index(s.arch) + warps.index(s.options.num_warps) + pid) % 2
    order = sorted(range(len(specs)), key=lambda i: (off_diagonal(specs[i]), i))
    elems = {i: elements(specs[i]) for i in order}
    uncovered = set().union(*elems.values()) if elems else set()
    chosen = []
    for need in range(max(map(len, elems.values()), default=0), 0, -1):   # greedy by gain level
        for i in order:
            if len(elems[i] & uncovered) >= need:
                chosen.append(i)
                uncovered -= elems[i]
    compiled = {frontend_key(specs[i]) for i in chosen}
    frontend, seen = [], set()
    for i, s in enumerate(specs):
        k = frontend_key(s)
        if k not in compiled and k not in seen:
            seen.add(k)
            frontend.append(i)
    return sorted(chosen), frontend


# ---------------------------------------------------------------------------------------------- compiling
_SPECS: list = []


def _compile_job(job):
    """job = (kind, i): "cubin": triton.compile to a cubin; "frontend": the first stages of triton.compile
    (ASTSource.make_ir and the ttir passes). -> (kind, i, seconds, error text or None)."""
    import triton
    from triton._C.libtriton import ir
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource, make_backend
    kind, i = job
    spec = _SPECS[i]
    target = GPUTarget("cuda", spec.arch, 32)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src = ASTSource(spec.fn, spec.signature, spec.constexprs, spec.attrs)
            if kind == "cubin":
                kernel = triton.compile(src, target=target, options=spec.options.__dict__)
                if not kernel.asm.get("cubin"):
                    raise RuntimeError("triton.compile produced no cubin")
            else:   # what triton.compile does before its backend stages, then the ttir stage
                backend = make_backend(target)
                options = backend.parse_options(dict(spec.options.__dict__))
                context = ir.context()
                ir.load_dialects(context)
                backend.load_dialects(context)
                module = src.make_ir(target, options, backend.get_codegen_implementation(options),
                                     backend.get_module_map(), context)
                stages = {}
                backend.add_stages(stages, options, src.language)
                stages["ttir"](module, {"target": target, **options.__dict__})
        return kind, i, time.perf_counter() - t0, None
    except Exception as exc:  # a compile error of any kind is what this check is for
        return kind, i, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"


def run_jobs(jobs, n_proc: int, verbose: bool):
    """Run the compile jobs in forked worker processes (they inherit _SPECS: JITFunctions do not pickle). A
    worker that dies (a crash inside MLIR / LLVM) breaks the pool: the jobs left are then rerun one process each,
    so that the crashing specialisation is reported rather than the whole check dying without a name."""
    import concurrent.futures as cf
    results = []
    # biggest kernels first, so that the pool does not end on one long compile
    jobs = sorted(jobs, key=lambda j: (j[0] != "cubin", -len(_SPECS[j[1]].fn.src)))
    if "fork" not in multiprocessing.get_all_start_methods():
        for job in jobs:
            results.append(_compile_job(job))
            _progress(results[-1], verbose)
        return results
    ctx = multiprocessing.get_context("fork")
    done = set()
    try:
        with cf.ProcessPoolExecutor(max_workers=n_proc, mp_context=ctx) as pool:
            futures = [pool.submit(_compile_job, job) for job in jobs]
            for fut in cf.as_completed(futures):
                r = fut.result()
                results.append(r)
                done.add((r[0], r[1]))
                _progress(r, verbose)
    except cf.process.BrokenProcessPool:
        left = [job for job in jobs if job not in done]
        print(f"{TAG}: a compiler process died; rerunning the {len(left)} job(s) left one process each", flush=True)
        for job in left:
            results.append(_isolated(ctx, job))
            _progress(results[-1], verbose)
    return results


def _isolated(ctx, job):
    """_compile_job in a process of its own; a crash becomes an error of this job."""
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=lambda: send.send(_compile_job(job)))
    t0 = time.perf_counter()
    proc.start()
    send.close()
    try:
        result = recv.recv()
    except EOFError:
        result = None
    proc.join()
    if result is None:
        code = proc.exitcode
        why = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        result = (job[0], job[1], time.perf_counter() - t0, f"the compiler process died ({why})")
    return result


def _progress(result, verbose):
    kind, i, secs, err = result
    if verbose:
        spec = _SPECS[i]
        where = f"sm_{spec.arch} num_warps={spec.options.num_warps}" if kind == "cubin" else "frontend"
        print(f"{TAG}: {'FAIL' if err else 'ok'} {secs:5.2f}s {spec.name} {where} [{spec.case}]", flush=True)


def _indent(text: str, limit: int = 60) -> str:
    lines = text.rstrip().splitlines()
    if len(lines) > limit:
        lines = lines[:limit] + [f"... ({len(lines) - limit} more lines)"]
    return "\n".join("    " + ln for ln in lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="80,90", help="comma-separated CUDA compute capabilities (default 80,90)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a smaller matrix (fewer shapes, layouts, variants)")
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
        matrix = "quick" if args.quick else "full"
        print(f"{TAG}: triton {triton.__version__} ({os.path.dirname(triton.__file__)}), ptxas "
              f"{knobs.nvidia.ptxas.path}; targets {', '.join(f'sm_{a}' for a in archs)} x num_warps of the "
              f"autotune configs; {matrix} matrix{', exhaustive' if args.exhaustive else ''}", flush=True)
        kernels, calls = drive(matrix, archs)
        t_drive = time.perf_counter() - t0
        missing = sorted(n for fn, n in kernels.items() if REC.launched[fn] == 0)
        uncalled = sorted(q for q, n in calls.items() if n == 0)
        _SPECS[:] = sorted((s for s in REC.specs.values() if not args.only or re.search(args.only, s.name)),
                           key=lambda s: (s.fn.fn.__module__, s.name, s.arch, s.options.num_warps, s.order))
        cubin, frontend = plan(_SPECS, "exhaustive" if args.exhaustive else "once" if args.quick else "cover")
        n_front_keys = len({frontend_key(s) for s in _SPECS})
        print(f"{TAG}: {REC.n_launches} launches (one per autotune config) from {sum(calls.values())} launcher "
              f"calls ({t_drive:.1f}s) -> {n_front_keys} distinct specialisations, {len(_SPECS)} with arch and "
              f"num_warps; to compile: {len(cubin)} to cubin, {len(frontend)} more through the frontend only",
              flush=True)
        if args.list:
            results = [("cubin", i, 0.0, None) for i in cubin] + [("frontend", i, 0.0, None) for i in frontend]
        else:
            results = run_jobs([("cubin", i) for i in cubin] + [("frontend", i) for i in frontend],
                               max(1, args.jobs), args.verbose)
        wall = time.perf_counter() - t0

        per = collections.defaultdict(lambda: [0, 0, 0.0])   # compiles, failed, seconds
        for kind, i, secs, err in results:
            s = _SPECS[i]
            name = f"{s.fn.fn.__module__.rsplit('.', 1)[1]}.{s.name}"
            where = f"sm_{s.arch} num_warps={s.options.num_warps}: " if kind == "cubin" else "frontend only:"
            k = (name, where)
            per[k][0] += 1
            per[k][1] += err is not None
            per[k][2] += secs
        verb = "planned" if args.list else "compiled"
        for (name, where), (n, nfail, secs) in sorted(per.items()):
            what = f"{verb} to cubin" if where.startswith("sm_") else "(AST -> TTIR, any target)"
            print(f"{TAG}: {name:<42} {where:<22}{n:4d} {what}{f', {nfail} FAILED' if nfail else ''}"
                  f"{'' if args.list else f' ({secs:.1f}s)'}")

        failures = sorted(((kind, i, err) for kind, i, _, err in results if err is not None),
                          key=lambda f: (_SPECS[f[1]].name, f[0] != "frontend", f[1]))
        groups = collections.defaultdict(list)   # one error (same source location) in many specialisations
        for kind, i, err in failures:
            groups[(_SPECS[i].name, err.splitlines()[0] if err.strip() else "")].append((kind, i, err))
        for (name, _), members in groups.items():
            kind, i, err = members[0]
            print(f"\n{TAG}: FAILED: {_SPECS[i].describe(kind)}\n{_indent(err)}", flush=True)
            for kind, i, _ in members[1:6]:
                sp = _SPECS[i]
                print(f"{TAG}:   same error: {sp.target(kind)}, first launched by {sp.case}")
            if len(members) > 6:
                print(f"{TAG}:   same error in {len(members) - 6} more specialisation(s) of {name}")
        for name in missing:
            print(f"{TAG}: FAILED: kernel {name} was never launched by the driver cases (add a case)")
        for q in uncalled:
            print(f"{TAG}: FAILED: launcher {q} was never called by the driver cases (add a case)")
        ok = not failures and not missing and not uncalled
        n_kernels = len({s.fn for s in _SPECS})
        cpu = sum(r[2] for r in results)
        print(f"{TAG}: {'OK' if ok else 'FAILED'}: {n_kernels} kernels; {n_front_keys} distinct specialisations, "
              f"every one through the frontend (AST -> TTIR); {len(cubin)} of their {len(_SPECS)} (arch, num_warps) "
              f"variants {verb} to cubin for {', '.join(f'sm_{a}' for a in archs)}; {len(failures)} compile "
              f"error(s); {len(missing)} kernel(s) and {len(uncalled)} launcher(s) not covered; {wall:.0f}s wall "
              f"({cpu:.0f}s compiling, {args.jobs} process(es))")
        return 0 if ok else 1
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
