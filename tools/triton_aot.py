"""Recording and ahead-of-time compiling of Triton kernel launches without a GPU: the machinery of
tools/check_triton_kernels.py (which drives the launchers and enforces coverage).

  recording()           a context in which `Autotuner.run` expands a launch into one per autotune config and
                        `JITFunction.run` records it into REC instead of running it; the specialisation comes from
                        triton's own binder (`create_function_from_signature` over `native_specialize_impl`, then
                        `JITFunction._pack_args`), exactly as `JITFunction.run` computes it on a GPU
  kernels_of(mods)      every launchable kernel of some modules: autotuned ones and plain-jit `*_kernel`
  count_launchers(mods) wraps the public functions of the modules that have OPS, counting their calls
  plan(specs, how)      which specialisations go to cubin and which only through the frontend (AST -> TTIR)
  compile_all(...)      the compiles, in forked worker processes; report(...) prints the results

Nothing here imports triton at import time: the caller decides about TRITON_INTERPRET first.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import inspect
import multiprocessing
import time
import warnings

TAG = "triton-check"
# SMs per arch (A100: 108, RTX 30xx: 84, RTX 40xx: 128, H100 SXM: 132): the launchers aim at 4 waves of them
SM_COUNT = {80: 108, 86: 84, 89: 128, 90: 132}


def short(v) -> str:
    return str(v).replace("triton.language.", "tl.")


def module_tail(fn) -> str:
    """'family.kernel' of a JITFunction."""
    return f"{fn.fn.__module__.rsplit('.', 1)[1]}.{fn.fn.__name__}"


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
        const = ", ".join(f"{names[k[0]]}={short(v)}" for k, v in self.constexprs.items())
        sig = ", ".join(f"{k}:{v}" for k, v in self.signature.items() if v != "constexpr")
        div = ", ".join(names[k[0]] for k, v in self.attrs.items() if v)
        return (f"{self.name} {self.target(kind)}\n"
                f"    args: {sig}\n    constexprs: {const}\n    divisibility 16: {div or '-'}\n"
                f"    first launched by: {self.case}")


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
        self._backend = make_backend(GPUTarget("cuda", arch, 32))
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


# ------------------------------------------------------------------------------------------------ coverage
def kernels_of(mods) -> dict:
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


def count_launchers(mods) -> collections.Counter:
    """Wrap the public launchers of every family module (those with OPS), in every module that refers to them
    (dual_attention imports two apply_gates passes): -> {'family.launcher': call count}, updated as they run."""
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
    for mod in mods:
        for name, obj in list(vars(mod).items()):
            if inspect.isfunction(obj) and obj in wrapped:
                setattr(mod, name, wrapped[obj])
    return calls


# ---------------------------------------------------------------------------------------------- planning
def path_of(spec):
    """The kernel's code path: its pointer element types and its declared constexpr flags (not the BLOCKs)."""
    names = [p.name for p in spec.fn.params]
    flags = tuple((names[k[0]], short(v)) for k, v in spec.constexprs.items()
                  if spec.fn.params[k[0]].is_constexpr and not names[k[0]].startswith("BLOCK"))
    ptrs = tuple(v for v in spec.signature.values() if v.startswith("*"))
    return spec.fn, ptrs, flags


def tile_of(spec):
    """The kernel's tile geometry: ACC, the BLOCK sizes, the integers specialised to 1 (unit strides, single
    blocks) and the pointers without 16-byte alignment."""
    names = [p.name for p in spec.fn.params]
    blocks = tuple((names[k[0]], v) for k, v in spec.constexprs.items() if names[k[0]].startswith("BLOCK"))
    acc = tuple(short(v) for k, v in spec.constexprs.items() if names[k[0]] == "ACC")
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
SPECS: list = []   # what the compile jobs index (forked workers inherit it: JITFunctions do not pickle)


def _compile_job(job):
    """job = (kind, i): "cubin": triton.compile to a cubin; "frontend": the first stages of triton.compile
    (ASTSource.make_ir and the ttir passes). -> (kind, i, seconds, error text or None)."""
    import triton
    from triton._C.libtriton import ir
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource, make_backend
    kind, i = job
    spec = SPECS[i]
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


def compile_all(jobs, n_proc: int, verbose: bool) -> list:
    """Run the compile jobs in forked worker processes. A worker that dies (a crash inside MLIR / LLVM) breaks
    the pool: the jobs left are then rerun one process each, so that the crashing specialisation is reported
    rather than the whole check dying without a name."""
    import concurrent.futures as cf
    results = []
    # biggest kernels first, so that the pool does not end on one long compile
    jobs = sorted(jobs, key=lambda j: (j[0] != "cubin", -len(SPECS[j[1]].fn.src)))
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
        spec = SPECS[i]
        where = f"sm_{spec.arch} num_warps={spec.options.num_warps}" if kind == "cubin" else "frontend"
        print(f"{TAG}: {'FAIL' if err else 'ok'} {secs:5.2f}s {spec.name} {where} [{spec.case}]", flush=True)


def _indent(text: str, limit: int = 60) -> str:
    lines = text.rstrip().splitlines()
    if len(lines) > limit:
        lines = lines[:limit] + [f"... ({len(lines) - limit} more lines)"]
    return "\n".join("    " + ln for ln in lines)


def report(results, listing: bool) -> list:
    """Print the compiles per (kernel, target), then each distinct error once (the specialisation, the driver
    case that first launched it, the compiler's message) with the other specialisations it hit. -> failures."""
    per = collections.defaultdict(lambda: [0, 0, 0.0])   # compiles, failed, seconds
    for kind, i, secs, err in results:
        s = SPECS[i]
        where = f"sm_{s.arch} num_warps={s.options.num_warps}: " if kind == "cubin" else "frontend only:"
        k = (module_tail(s.fn), where)
        per[k][0] += 1
        per[k][1] += err is not None
        per[k][2] += secs
    verb = "planned" if listing else "compiled"
    for (name, where), (n, nfail, secs) in sorted(per.items()):
        what = f"{verb} to cubin" if where.startswith("sm_") else "(AST -> TTIR, any target)"
        print(f"{TAG}: {name:<50} {where:<22}{n:4d} {what}{f', {nfail} FAILED' if nfail else ''}"
              f"{'' if listing else f' ({secs:.1f}s)'}")

    failures = sorted(((kind, i, err) for kind, i, _, err in results if err is not None),
                      key=lambda f: (SPECS[f[1]].name, f[0] != "frontend", f[1]))
    groups = collections.defaultdict(list)   # one error (same first line) in many specialisations
    for kind, i, err in failures:
        groups[(SPECS[i].name, err.splitlines()[0] if err.strip() else "")].append((kind, i, err))
    for (name, _), members in groups.items():
        kind, i, err = members[0]
        print(f"\n{TAG}: FAILED: {SPECS[i].describe(kind)}\n{_indent(err)}", flush=True)
        for kind, i, _ in members[1:6]:
            sp = SPECS[i]
            print(f"{TAG}:   same error: {sp.target(kind)}, first launched by {sp.case}")
        if len(members) > 6:
            print(f"{TAG}:   same error in {len(members) - 6} more specialisation(s) of {name}")
    return failures
