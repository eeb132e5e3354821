"""The one dispatch point: which backend serves each op call.

Backends:
  reference  pure PyTorch (fused_attn/backends/reference): the oracle, and the fallback on every device.
  cpu        C++/OpenMP kernels of the extension fused_attn._C (csrc/cpu), CPU tensors.
  cuda       CUDA kernels of the extension (csrc/cuda), CUDA tensors.
  triton     Triton kernels (fused_attn/backends/triton), CUDA tensors; CPU tensors under TRITON_INTERPRET=1.
cpu and cuda share one Python package, fused_attn/backends/native (shims over the kernel ops fused_attn_C::*).

Under torch.compile (not torch.export) a request of `auto` traces the op's math, its pure-PyTorch reference, into
the graph instead of the opaque kernel call, so that Inductor fuses it with its neighbours as it fuses the block
the twin replaced (`set_compile_policy("inline")`, the default; measured on efficientnet_b0, batch 16, 2 CPU
threads: torch.compile(convert(m)) 0.83x torch.compile(m) with the kernels opaque, 1.00x inlined).
`set_compile_policy("kernels")`, FUSED_ATTN_COMPILE=kernels, or an explicit backend keeps the fused_attn ops in
the compiled graph (faster for a block compiled on its own: Inductor cannot fuse across an opaque op, but inside
the block it loses to the kernels). Eager calls and torch.export are unaffected.

A request is `auto` or one backend name. It comes from, in order: the call's `backend=` argument, the
innermost `use_backend(...)` scope of the calling thread, the process-wide `set_backend(...)`, the environment
variable FUSED_ATTN_BACKEND (read at import), else `auto`. `auto` takes the first backend of the op's priority
list for the tensor's device that can serve the call; an explicit backend that cannot serve it raises
BackendUnavailable naming the reason. It never falls back silently.

Each backend implements an op family in one module, `fused_attn.backends.<package>.<family>`, exposing the
family's passes (OP_PASSES: e.g. `channel_pool_reduce`), the set `OPS` of op names it serves and the set
`DTYPES` of dtypes it accepts. A native pass is the kernel op of the same name, fused_attn_C::<pass>.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import threading
from types import ModuleType
from typing import Iterator, Optional

import torch

from . import _ext

BACKENDS = ("reference", "cpu", "cuda", "triton")
CHOICES = ("auto",) + BACKENDS

# op name -> family (the module name under fused_attn/ops and fused_attn/backends/<package>, and of csrc's
# <device>/<family>.cpp) and the kernel passes the op runs, each a function of that backend module (forward
# passes first). dual_attention runs two passes of the apply_gates family, which its modules import.
OP_FAMILY = {
    "channel_pool": "channel_pool",
    "channel_squeeze": "squeeze_excite",
    "squeeze_excite": "squeeze_excite",
    "eca": "squeeze_excite",
    "ese": "squeeze_excite",
    "apply_gates": "apply_gates",
    "dual_attention": "dual_attention",
    "ema_strip_pool": "ema_strip_pool",
    "ema_core": "ema_core",
    "simam": "simam",
    "coord_gate": "coord_gate",
    "global_context_pool": "global_context",
}
OP_PASSES = {
    "channel_pool": ("channel_pool_reduce", "channel_pool_grad_input"),
    "channel_squeeze": ("channel_squeeze_reduce", "channel_squeeze_grad_input"),
    "squeeze_excite": ("squeeze_excite_combine", "squeeze_excite_grad_gate", "squeeze_excite_grad_input",
                       "channel_squeeze_grad_input"),  # the last: the backward of a broadcast-scalar gradient
    "eca": ("eca_combine", "squeeze_excite_grad_gate", "squeeze_excite_grad_input", "channel_squeeze_grad_input"),
    "ese": ("ese_combine", "squeeze_excite_grad_gate", "squeeze_excite_grad_input", "channel_squeeze_grad_input"),
    "apply_gates": ("apply_gates_combine", "apply_gates_grads"),
    "dual_attention": ("dual_attention_reduce", "apply_gates_combine", "apply_gates_grad_gates",
                       "dual_attention_grad_input"),
    "ema_strip_pool": ("ema_strip_pool_reduce", "ema_strip_pool_grad_input"),
    "ema_core": ("ema_core_combine", "ema_core_grads"),
    "simam": ("simam_gate", "simam_grad_input"),
    "coord_gate": ("coord_gate_combine", "coord_gate_grads"),
    "global_context_pool": ("global_context_pool_reduce", "global_context_pool_grads"),
}
OPS = tuple(OP_FAMILY)

# The order `auto` tries backends in, per device type; fastest first. AUTO_ORDER_PER_OP overrides it
# for single ops when committed benchmark results (bench/results/) show another order is faster.
AUTO_ORDER = {
    "cpu": ("cpu", "reference"),
    "cuda": ("cuda", "triton", "reference"),
}
AUTO_ORDER_PER_OP: dict[tuple[str, str], tuple[str, ...]] = {}

_PACKAGE = {"reference": "reference", "cpu": "native", "cuda": "native", "triton": "triton"}
_DEVICE_OF_BACKEND = {"cpu": "cpu", "cuda": "cuda"}
ENV_VAR = "FUSED_ATTN_BACKEND"
COMPILE_POLICIES = ("inline", "kernels")
COMPILE_ENV_VAR = "FUSED_ATTN_COMPILE"


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot serve this call (the message says why)."""


def _check_choice(name: str, where: str) -> str:
    if not isinstance(name, str) or name not in CHOICES:
        raise ValueError(f"{where}: unknown fused_attn backend {name!r}; expected one of {', '.join(CHOICES)}")
    return name


_default_backend = _check_choice(os.environ.get(ENV_VAR, "auto").strip() or "auto", f"environment variable {ENV_VAR}")


def _check_policy(policy: str, where: str) -> str:
    if not isinstance(policy, str) or policy not in COMPILE_POLICIES:
        raise ValueError(f"{where}: unknown compile policy {policy!r}; expected one of {', '.join(COMPILE_POLICIES)}")
    return policy


_compile_policy = _check_policy(os.environ.get(COMPILE_ENV_VAR, "inline").strip() or "inline",
                                f"environment variable {COMPILE_ENV_VAR}")


def set_compile_policy(policy: str) -> None:
    """What `auto` calls become under torch.compile, process-wide: "inline" (default) traces their pure-PyTorch
    math so Inductor fuses it with the surrounding layers; "kernels" keeps the fused_attn ops (opaque to
    Inductor) in the graph. Explicit backends always keep their kernels. Already compiled graphs recompile."""
    global _compile_policy
    _compile_policy = _check_policy(policy, "set_compile_policy")


def compile_policy() -> str:
    """The current compile policy ("inline" or "kernels"), see set_compile_policy."""
    return _compile_policy


def inlines_under_compile(request: str) -> bool:
    """True when a call with this request is being traced by torch.compile (not torch.export) and should trace
    its reference math rather than the fused_attn op: request `auto` and policy "inline"."""
    return request == "auto" and _compile_policy == "inline" and torch.compiler.is_compiling() and not _exporting()


def _exporting() -> bool:
    """torch.export is tracing. Read from the flag torch.export sets (torch/_export/utils.py), which Dynamo reads
    as a guarded global: on torch 2.11 Dynamo folds torch.compiler.is_exporting() to True under torch.compile
    as well, which would turn the inline policy off there."""
    flag = getattr(torch.compiler, "_is_exporting_flag", None)
    return torch.compiler.is_exporting() if flag is None else bool(flag)


class _Scopes(threading.local):
    """The `use_backend` scopes of one thread, innermost last. Per thread, as autocast's state is: two threads in
    different scopes never see each other's request. (threading.local rather than a ContextVar: torch.compile
    traces reads of a thread-local on torch 2.11 to 2.15, but not ContextVar.get before 2.14.)"""

    def __init__(self):
        self.stack: list[str] = []


_scopes = _Scopes()


def current_backend() -> str:
    """The backend request in force on this thread when a call passes backend=None."""
    stack = _scopes.stack
    return stack[-1] if stack else _default_backend


def set_backend(name: str) -> None:
    """Set the process-wide default request, seen by every thread (overrides FUSED_ATTN_BACKEND; `use_backend`
    scopes, which are per thread, win)."""
    global _default_backend
    _default_backend = _check_choice(name, "set_backend")


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Scope a backend request on this thread: `with fused_attn.use_backend("triton"): model(x)`. Other threads
    keep their own scopes (a new thread starts with none: the process default)."""
    stack = _scopes.stack
    stack.append(_check_choice(name, "use_backend"))
    try:
        yield
    finally:
        stack.pop()


def requested(backend: Optional[str]) -> str:
    """The request for one call: its own `backend=` if given, else the current setting."""
    return current_backend() if backend is None else _check_choice(backend, "backend=")


def _interpreting_triton() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _family_module(package: str, family: str) -> tuple[Optional[ModuleType], Optional[str]]:
    if package == "triton" and importlib.util.find_spec("triton") is None:
        return None, "the triton package is not installed"
    name = f"fused_attn.backends.{package}.{family}"
    if importlib.util.find_spec(name) is None:
        return None, f"it has no implementation of the {family} family yet"
    try:
        return importlib.import_module(name), None
    except Exception as exc:  # an import that breaks must say so, not pass for "absent"
        return None, f"importing {name} failed: {type(exc).__name__}: {exc}"


@functools.lru_cache(maxsize=None)
def _cuda_available() -> bool:
    return torch.cuda.is_available()


@functools.lru_cache(maxsize=None)
def _unavailable_reason(backend: str, op: str, device_type: str, dtype: torch.dtype, interpret: bool) -> Optional[str]:
    if op not in OP_FAMILY:
        raise ValueError(f"unknown fused_attn op {op!r}; expected one of {', '.join(OPS)}")
    if backend in ("cpu", "cuda"):
        err = _ext.load_error()
        if err is not None:
            return f"the C++ extension fused_attn._C is not available ({err})"
        if device_type != _DEVICE_OF_BACKEND[backend]:
            return f"it serves {_DEVICE_OF_BACKEND[backend]} tensors, this one is on {device_type}"
        if backend == "cuda":
            if not _ext.built_with_cuda():
                return "fused_attn._C was built without CUDA (build with a CUDA torch and nvcc, or FORCE_CUDA=1)"
            if not _cuda_available():
                return "no CUDA device is available"
        missing = [name for name in OP_PASSES[op] if not _ext.has_kernel(name, backend)]
        if missing:
            return f"fused_attn._C has no {backend} kernel for {', '.join(missing)} ({op}) yet"
    elif backend == "triton":
        if device_type == "cpu" and not interpret:
            return "Triton runs CPU tensors only under TRITON_INTERPRET=1"
        if device_type not in ("cpu", "cuda"):
            return f"Triton serves CUDA tensors, this one is on {device_type}"
        if device_type == "cuda" and not _cuda_available():
            return "no CUDA device is available"
    elif backend != "reference":
        raise ValueError(f"unknown fused_attn backend {backend!r}")
    module, reason = _family_module(_PACKAGE[backend], OP_FAMILY[op])
    if module is None:
        return reason
    if op not in getattr(module, "OPS", ()):
        return f"it does not implement {op} yet"
    dtypes = getattr(module, "DTYPES", ())
    if dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in sorted(dtypes, key=str))
        return f"it does not support dtype {str(dtype).replace('torch.', '')} (supported: {names})"
    return None


def unavailable_reason(backend: str, op: str, device, dtype: torch.dtype) -> Optional[str]:
    """None if `backend` can serve `op` on tensors of this device and dtype, else the reason why not."""
    device_type = torch.device(device).type
    return _unavailable_reason(backend, op, device_type, dtype, _interpreting_triton())


def auto_order(op: str, device) -> tuple[str, ...]:
    device_type = torch.device(device).type
    return AUTO_ORDER_PER_OP.get((op, device_type), AUTO_ORDER.get(device_type, ("reference",)))


def resolve(op: str, request: str, device, dtype: torch.dtype) -> str:
    """The concrete backend that serves `op` for this request, device and dtype, or BackendUnavailable."""
    request = _check_choice(request, "backend")
    if request != "auto":
        reason = unavailable_reason(request, op, device, dtype)
        if reason is not None:
            raise BackendUnavailable(
                f"fused_attn backend {request!r} cannot run {op} on a {torch.device(device).type} "
                f"{str(dtype).replace('torch.', '')} tensor: {reason}. Use backend='auto' to pick the "
                f"best available backend (available here: {', '.join(serving(op, device, dtype)) or 'none'}).")
        return request
    reasons = []
    for name in auto_order(op, device):
        reason = unavailable_reason(name, op, device, dtype)
        if reason is None:
            return name
        reasons.append(f"{name}: {reason}")
    raise BackendUnavailable(f"no fused_attn backend can run {op} on a {torch.device(device).type} "
                             f"{str(dtype).replace('torch.', '')} tensor ({'; '.join(reasons)})")


def serving(op: str, device, dtype: torch.dtype = torch.float32) -> list[str]:
    """Every backend that can serve `op` on this device and dtype, in `auto` order first."""
    order = list(auto_order(op, device)) + [b for b in BACKENDS if b not in auto_order(op, device)]
    return [b for b in order if unavailable_reason(b, op, device, dtype) is None]


def implementation(op: str, request: str, device, dtype: torch.dtype) -> tuple[str, ModuleType]:
    """(backend name, family module) that serves this call. Called by the ops on real tensors."""
    name = resolve(op, request, device, dtype)
    module, _ = _family_module(_PACKAGE[name], OP_FAMILY[op])
    return name, module


def available_backends(device=None) -> list[str]:
    """The backends that can serve at least one op on `device` (default: "cuda" if present, else "cpu")."""
    if device is None:
        device = "cuda" if _cuda_available() else "cpu"
    return [b for b in BACKENDS
            if any(unavailable_reason(b, op, device, dt) is None
                   for op in OPS for dt in (torch.float32, torch.float64, torch.bfloat16, torch.float16))]


def clear_caches() -> None:
    """Forget cached availability (after building or loading the extension in a running process)."""
    _unavailable_reason.cache_clear()
    _family_module.cache_clear()
    _cuda_available.cache_clear()
