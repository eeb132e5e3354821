"""Loads the C++/CUDA extension fused_attn._C if it was built, and answers what it holds.

The extension registers its ops under the torch.library namespace `fused_attn_C` (csrc/fused_attn.cpp; the
kernel ops' schemas: csrc/op_schemas.h); importing the module only loads the shared library. Every question
here is safe to ask when the extension is absent: the package then runs on the reference and Triton backends.
"""
from __future__ import annotations

import functools
import importlib
import os
from typing import Optional

import torch

NAMESPACE = "fused_attn_C"
_DISPATCH_KEY = {"cpu": "CPU", "cuda": "CUDA"}


@functools.lru_cache(maxsize=None)
def load_error() -> Optional[str]:
    """None when fused_attn._C is loaded, else why not (one line)."""
    if os.environ.get("FUSED_ATTN_NO_EXT") == "1":
        return "disabled by FUSED_ATTN_NO_EXT=1"
    try:
        importlib.import_module("fused_attn._C")
    except ImportError as exc:
        return (f"not built or not loadable: {exc}. Build it with `pip install -e . --no-build-isolation` "
                f"(or `make setup`)")
    return None


def available() -> bool:
    return load_error() is None


def require() -> None:
    """Raise an actionable error when the extension is needed but absent."""
    err = load_error()
    if err is not None:
        raise RuntimeError(f"fused_attn._C is required here: {err}")


@functools.lru_cache(maxsize=None)
def build_info() -> dict[str, str]:
    """What the extension was built with (empty when absent): parsed from fused_attn_C::build_info."""
    if not available():
        return {}
    text = torch.ops.fused_attn_C.build_info()
    return dict(item.split("=", 1) for item in text.split(";") if "=" in item)


def built_with_cuda() -> bool:
    return build_info().get("cuda", "0") == "1"


def has_kernel(op: str, device_type: str) -> bool:
    """Whether fused_attn_C::<op> has a kernel registered for this device type ("cpu" or "cuda")."""
    if not available():
        return False
    qualname = f"{NAMESPACE}::{op}"
    if not torch._C._dispatch_has_kernel(qualname):
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(qualname, _DISPATCH_KEY[device_type])
