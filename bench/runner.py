"""Runs benchmark rows: inputs, providers, the fp64 check of each provider, its timing and its figures.

A row is one case (op or module) at one shape, dtype and mode ("fwd" or "fwd+bwd"). Each provider of a row
is run once on a copy of the first input set (that call also compiles, for `compile`) and compared with
the float64 reference; then it is timed over rotating input sets. A provider that cannot run is reported
"n/a" with the reason (backend unavailable, module not written yet); one that fails, "error".
"""
from __future__ import annotations

import copy
import functools
import importlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from . import baselines, cases
from .timing import Rotation, Timer, measure_copy, rotation_count, sync

EAGER, COMPILE, REFERENCE, AUTO = "eager", "compile", "reference", "auto"
KERNEL_BACKENDS = ("cpu", "cuda", "triton")
PROVIDERS = (EAGER, COMPILE, REFERENCE) + KERNEL_BACKENDS + (AUTO,)
LEGEND = ("eager = the row's baseline in plain PyTorch (op rows: the op in torch ops; module rows: the module "
          "fused_attn's replaces: torchvision / timm / ultralytics where it is one, else the seed or official "
          "code; bench/baselines); torch.compile = torch.compile(eager), default mode; fused_attn[b] = "
          "fused_attn's custom op (op rows) or module served by backend b, with the baseline's weights "
          "(reference: the pure-PyTorch oracle behind the custom op; auto: fused_attn's own choice per op)")
OP_BASELINES = "bench/baselines/torch_ops.py"


class NotAvailable(Exception):
    """A provider that cannot run here (reported as n/a with the message)."""


def fused_namespace(case: cases.ModuleCase):
    """fused_attn (or fused_attn.models for a whole network), imported when needed; NotAvailable if the
    module does not exist yet."""
    name = "fused_attn.models" if case.model else "fused_attn"
    try:
        namespace = importlib.import_module(name)
    except ImportError as exc:
        raise NotAvailable(f"not available ({name}: {exc})") from exc
    if not hasattr(namespace, case.name):
        raise NotAvailable(f"not available ({name}.{case.name} does not exist yet)")
    return namespace


# ------------------------------------------------------------------------------------------------ providers
@dataclass
class Provider:
    name: str
    label: str
    build: Callable[[], tuple]  # -> (callable, params aligned with the row's parameter names, note)


@dataclass
class Config:
    device: torch.device
    timer: Timer
    backends: Optional[list] = None      # provider names to run; None = every one
    time_limit_s: Optional[float] = None
    started: float = field(default_factory=time.perf_counter)
    _copies: dict = field(default_factory=dict)

    def wants(self, name: str) -> bool:
        if self.backends is not None:
            return name in self.backends
        # Triton on CPU means its interpreter (milliseconds per program): only when asked for by name
        return not (name == "triton" and self.device.type == "cpu")

    def over_time(self) -> bool:
        return self.time_limit_s is not None and time.perf_counter() - self.started > self.time_limit_s

    def copy_baseline(self, numel: int, dtype: torch.dtype) -> dict:
        key = (numel, dtype)
        if key not in self._copies:
            self._copies[key] = measure_copy(numel, dtype, self.device, self.timer)
        return self._copies[key]


def _kernel_backends_for_op(op: str, cfg: Config, dtype) -> list:
    from fused_attn import dispatch
    return [b for b in dispatch.serving(op, cfg.device, dtype) if b != REFERENCE and cfg.wants(b)]


def fused_label(backend: str) -> str:
    """fused_attn through its custom ops, on one backend (`reference`: the pure-PyTorch oracle)."""
    return f"fused_attn[{backend}]"


def _compiled(fn):
    torch._dynamo.reset()  # every row compiles afresh, with static shapes, within the recompile limit
    return torch.compile(fn)


def op_providers(case: cases.OpCase, eager: Callable, fused: Callable, cfg: Config, dtype) -> list:
    def ours(backend):
        return lambda: (functools.partial(fused, backend=backend), [], None)
    found = [Provider(EAGER, "eager: torch ops", lambda: (eager, [], None)),
             Provider(COMPILE, "torch.compile", lambda: (_compiled(eager), [], None))]
    found += [Provider(b, fused_label(b), ours(b))
              for b in [REFERENCE] + _kernel_backends_for_op(case.op, cfg, dtype)]
    return [p for p in found if cfg.wants(p.name)]


def _prepare(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    return module.to(device=device, dtype=dtype).eval()


def _aligned_params(module: torch.nn.Module, names: list) -> list:
    own = dict(module.named_parameters())
    return [own[n] for n in names]


class ModuleRow:
    """The modules of one module row: eager (the baseline, bench/baselines), its float64 copy (the reference),
    and fused_attn's module per backend, loaded with the baseline's weights (mapped where the layouts differ).

    Parameter gradients: every provider computes those of all its trainable parameters; the ones compared with
    the reference are the baseline's `param_pairs` (every parameter, same names, for the seed and official
    modules), which come first in each provider's list."""

    def __init__(self, case: cases.ModuleCase, dims, cfg: Config, dtype):
        self.case, self.dims, self.cfg, self.dtype = case, dims, cfg, dtype
        try:
            self.baseline = case.baseline()
        except baselines.Missing as exc:
            raise NotAvailable(str(exc)) from exc
        torch.manual_seed(0)
        self.eager = self.baseline.make(dims[1])
        self.kwargs = self.baseline.forward_kwargs(self.eager)
        self.fused_kwargs = self.baseline.fused_kwargs(self.eager)
        self.state = self.baseline.state_for_fused(self.eager)
        pairs = self.baseline.param_pairs(self.eager)
        compared = [a for a, _ in pairs]
        self.names = compared + [n for n, p in self.eager.named_parameters() if p.requires_grad and n not in compared]
        self.fused_names = [b for _, b in pairs]
        self.n_compared = len(pairs)
        self.n_params = sum(p.numel() for p in self.eager.parameters())
        self.eager_label = f"eager: {self.baseline.name}"
        self.reference = _prepare(copy.deepcopy(self.eager), cfg.device, torch.float64)
        _prepare(self.eager, cfg.device, dtype)

    def call(self, module, kwargs):
        return lambda x: module(x, **kwargs)

    def ours(self, backend: str):
        module = self.case.build(fused_namespace(self.case), backend, self.dims[1], **self.fused_kwargs)
        try:
            module.load_state_dict(self.state, strict=True)
            note = None
        except RuntimeError as exc:
            note = f"baseline weights not loadable, error not checked: {str(exc).splitlines()[0]}"
        module = _prepare(module, self.cfg.device, self.dtype)
        own = {n: p for n, p in module.named_parameters() if p.requires_grad}
        if note:
            return self.call(module, {}), list(own.values()), note
        params = [own[n] for n in self.fused_names] + [p for n, p in own.items() if n not in self.fused_names]
        return self.call(module, {}), params, None

    def providers(self) -> list:
        from fused_attn import dispatch
        eager_params = _aligned_params(self.eager, self.names)
        found = [Provider(EAGER, self.eager_label,
                          lambda: (self.call(self.eager, self.kwargs), eager_params, None)),
                 Provider(COMPILE, "torch.compile",
                          lambda: (self.call(_compiled(self.eager), self.kwargs), eager_params, None))]
        kernels = [b for b in dispatch.available_backends(self.cfg.device) if b in KERNEL_BACKENDS]
        found += [Provider(b, fused_label(b), functools.partial(self.ours, b))
                  for b in [REFERENCE] + kernels + [AUTO]]
        return [p for p in found if self.cfg.wants(p.name)]


# --------------------------------------------------------------------------------------------------- a row
def _clone_set(args: list) -> list:
    return [a.detach().clone().requires_grad_(a.requires_grad) for a in args]


def _as_float64(args: list) -> list:
    return [a.detach().double().requires_grad_(a.requires_grad) for a in args]


def max_rel_err(results: list, refs: list) -> float:
    """max over tensors of max|a - ref| / max|ref| (absolute where ref is all zero), in float64; inf when
    NaN/inf appear in other places than in the reference or shapes differ. None gradients count as zeros."""
    worst = 0.0
    for a, r in zip(results, refs):
        if a is None and r is None:
            continue
        r = torch.zeros_like(a, dtype=torch.float64) if r is None else r.detach().double()
        a = torch.zeros_like(r) if a is None else a.detach().to(r.device).double()
        if a.shape != r.shape or not torch.equal(a.isfinite(), r.isfinite()):
            return math.inf
        a, r = a[r.isfinite()], r[r.isfinite()]
        if r.numel() == 0:
            continue
        scale = r.abs().max().item()
        diff = (a - r).abs().max().item()
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


class Workload:
    """A row's inputs: rotating sets of (args, grad_out), and how one step runs (forward, or forward and the
    gradients of the chosen inputs and parameters)."""

    def __init__(self, mode: str, grad_idx: tuple, loss: Optional[Callable] = None):
        self.mode, self.grad_idx, self.loss = mode, grad_idx, loss

    def step(self, fn, params, args, grad_out):
        if self.mode == "fwd":
            with torch.no_grad():
                return [fn(*args)]
        return self.backward(fn(*args), params, args, grad_out)

    def backward(self, out, params, args, grad_out):
        """[out, gradients of the chosen inputs and of params] (None where unused)."""
        targets = [args[i] for i in self.grad_idx] + list(params)
        root, grad = (self.loss(out), None) if self.loss else (out, grad_out)
        return [out, *torch.autograd.grad(root, targets, grad, allow_unused=True)]


def _sum_loss(mode: str) -> Optional[Callable]:
    """The loss of the fwd+bwd(sum) mode, out.sum() (its gradient reaches the op as a stride-0 scalar); None
    otherwise (the backward of a random dense grad_out)."""
    return (lambda out: out.sum()) if mode == cases.SUM_MODE else None


def run_row(row: dict, providers: list, workload: Workload, first_args: list, ref_fn: Callable,
            ref_params: list, cfg: Config, progress) -> None:
    """Fill row["providers"]: the reference, the rotating sets, then each provider checked and timed.
    `progress.start(row)` is called once the row is set up, `progress.provider(result)` after each provider."""
    device = cfg.device
    training = workload.mode != "fwd"
    for i, a in enumerate(first_args):
        a.requires_grad_(training and i in workload.grad_idx)
    ref_args = _as_float64(first_args)
    grad_out = None
    if training:
        ref_out = ref_fn(*ref_args)
        if workload.loss is None:
            grad_out = torch.randn(ref_out.shape, device=device, dtype=torch.float32).to(first_args[0].dtype)
        refs = workload.backward(ref_out, ref_params, ref_args, None if grad_out is None else grad_out.double())
    else:
        refs = workload.step(ref_fn, ref_params, ref_args, None)
    set_bytes = sum(a.numel() * a.element_size() for a in first_args) + \
        (grad_out.numel() * grad_out.element_size() if grad_out is not None else 0)
    n_sets = rotation_count(set_bytes, device)
    rotation = Rotation([(first_args, grad_out)] + [(_clone_set(first_args), grad_out.clone() if grad_out is not None
                                                     else None) for _ in range(n_sets - 1)])
    row["rotation_sets"] = n_sets
    progress.start(row)
    for p in providers:
        result = {"name": p.name, "label": p.label, "status": "ok"}
        try:
            fn, params, note = p.build()
            if note:
                result["note"] = note
            start = time.perf_counter()
            outs = workload.step(fn, params, _clone_set(first_args), grad_out)
            sync(device)
            first_call_s = time.perf_counter() - start
            if p.name == COMPILE:
                result["compile_s"] = first_call_s
            # refs: the output, the input gradients and the compared parameters' gradients (listed first)
            result["max_err"] = None if note else max_rel_err(outs[:len(refs)], refs)
            del outs

            def call(fn=fn, params=params):
                args, g = rotation.next()
                return workload.step(fn, params, args, g)
            t = cfg.timer(call)
            result.update(median_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms, runs=t.runs)
        except NotAvailable as exc:
            result.update(status="n/a", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - reported in the row, the run goes on
            from fused_attn import BackendUnavailable
            kind = "n/a" if isinstance(exc, BackendUnavailable) else "error"
            result.update(status=kind, reason=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        row["providers"].append(result)
        add_figures(row)  # against the providers timed so far: eager and compile come first
        progress.provider(result)


def add_figures(row: dict) -> None:
    """GB/s, fraction of the copy's GB/s and speedups vs eager and compile, for every timed provider."""
    timed = {p["name"]: p["median_ms"] for p in row["providers"] if p.get("median_ms")}
    for p in row["providers"]:
        ms = p.get("median_ms")
        if not ms:
            continue
        if row.get("bytes"):
            p["gbps"] = row["bytes"] / (ms * 1e-3) / 1e9
            if row.get("copy"):
                p["frac_copy"] = p["gbps"] / row["copy"]["gbps"]
        for base in (EAGER, COMPILE):
            if base in timed:
                p[f"speedup_vs_{base}"] = timed[base] / ms


def baseline_name(case) -> Optional[str]:
    """The eager baseline a case's rows use here (None: a module row with no candidate available)."""
    if isinstance(case, cases.OpCase):
        return case.baseline
    try:
        return case.baseline().name
    except baselines.Missing:
        return None


def new_row(kind: str, case, dims, dtype, mode: str) -> dict:
    return {"kind": kind, "name": case.name, "op": getattr(case, "op", None), "ops": list(getattr(case, "ops", ())),
            "shape": list(dims), "dtype": str(dtype).replace("torch.", ""), "mode": mode, "status": "ok",
            "baseline": baseline_name(case), "providers": []}


def _dims_str(dims) -> str:
    return "x".join(str(d) for d in dims)


def op_row(case: cases.OpCase, dims, dtype, mode: str, cfg: Config, progress) -> dict:
    row = new_row("op", case, dims, dtype, mode)
    row.update(baseline=case.baseline, baseline_source=OP_BASELINES, variant=case.variant_for(dims))
    elem = torch.empty((), dtype=dtype).element_size()
    row["bytes"] = case.bytes(dims, elem, mode)
    row["bytes_formula"] = "fwd: " + case.fwd_bytes.formula() + ("" if mode == "fwd" else
                                                               "; bwd: " + case.bwd_bytes.formula())
    row["copy"] = cfg.copy_baseline(math.prod(dims), dtype)
    torch.manual_seed(0)
    args = case.make(dims, dtype, cfg.device)
    eager, fused = case.bind(dims)
    ref = functools.partial(fused, backend=REFERENCE)
    run_row(row, op_providers(case, eager, fused, cfg, dtype), Workload(mode, case.grads, loss=_sum_loss(mode)),
            args, ref, [], cfg, progress)
    return row


def module_row(case: cases.ModuleCase, dims, dtype, mode: str, cfg: Config, progress) -> dict:
    row = new_row("module", case, dims, dtype, mode)
    try:
        mods = ModuleRow(case, dims, cfg, dtype)
    except NotAvailable as exc:
        row.update(status="n/a", reason=str(exc))
        return row
    row.update(baseline=mods.baseline.name, baseline_source=mods.baseline.version())
    if mods.baseline.mapping:
        row["baseline_mapping"] = mods.baseline.mapping
    elem = torch.empty((), dtype=dtype).element_size()
    row["bytes"] = case.bytes(dims, elem, mode, mods.n_params)
    row["bytes_formula"] = None if case.model else cases.MODULE_BYTES
    row["copy"] = None if case.model else cfg.copy_baseline(math.prod(dims), dtype)
    torch.manual_seed(0)
    x = torch.randn(dims, device=cfg.device, dtype=torch.float32).to(dtype)
    if case.model:
        target = torch.randint(0, cases.VGG_CLASSES, (dims[0],), device=cfg.device)
        workload = Workload(mode, (), loss=lambda out: F.cross_entropy(
            out if out.dtype == torch.float64 else out.float(), target))
    else:
        workload = Workload(mode, (0,), loss=_sum_loss(mode))
    ref_params = _aligned_params(mods.reference, mods.names[:mods.n_compared])
    run_row(row, mods.providers(), workload, [x], mods.call(mods.reference, mods.kwargs), ref_params, cfg,
            progress)
    return row
