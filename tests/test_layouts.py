"""channels_last end to end: every module keeps its input's memory format (the output's and the input gradient's
strides are the input's), on every backend, with the same values as NCHW; and the fused backends make no hidden
copy of an x-sized tensor inside their ops (recorded with a TorchDispatchMode that follows the ops down to the
aten calls of their Python bodies and of the C++ kernels)."""
from __future__ import annotations

import functools

import pytest
import torch
from common import MODULE_OPS, assert_close, kernel_backends
from test_mod_oracles import backends_for, perturb_
from test_modules import _tiny
from torch._library.custom_ops import _maybe_get_opdef
from torch.utils._python_dispatch import TorchDispatchMode

from fused_attn import functional as FA
from fused_attn import nn as fnn

aten = torch.ops.aten
KINDS = ["SEBlock", "MultiScaleAttention", "DualAttention", "LiteDualAttention", "AttnResBlock", "EMA", "EMAX",
         "EMAX-dynamic", "CBAM"]
OPS_OF = MODULE_OPS
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
SHAPE = (2, 5, 7)   # B, H, W


def _module(kind: str, backend: str) -> torch.nn.Module:
    torch.manual_seed(0)
    m = perturb_(_tiny(kind))
    for sub in m.modules():
        if isinstance(sub, fnn.AttentionModule):
            sub.backend = backend
    return m


def _input(kind: str, layout: str, requires_grad=True) -> torch.Tensor:
    b, h, w = SHAPE
    x = torch.randn(b, 16 if kind == "LiteDualAttention" else 8, h, w, generator=torch.Generator().manual_seed(1))
    if kind == "LiteDualAttention":   # keep hardswish / hardsigmoid inputs off their kinks
        x = x * 0.3
    return x.contiguous(memory_format=LAYOUTS[layout]).requires_grad_(requires_grad)


def _forward_backward(m, x):
    out = m(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).contiguous(
        memory_format=LAYOUTS["channels_last" if x.is_contiguous(memory_format=torch.channels_last)
                              and not x.is_contiguous() else "nchw"])
    (gx,) = torch.autograd.grad(out, x, g)
    return out, gx


# -------------------------------------------------------------------------------------------- hidden copies
_ALWAYS_COPY = {aten.clone.default, aten._to_copy.default}
# composite ops that copy only when they cannot return a view of their input
_MAYBE_COPY = {aten.contiguous.default, aten.reshape.default, aten.flatten.using_ints, aten.to.dtype,
               aten.to.dtype_layout, aten.to.other, aten.to.device, aten.type_as.default}


class CopyRecorder(TorchDispatchMode):
    """Records copies of floating tensors with >= `numel` elements made inside fused_attn ops.

    On a fused_attn:: op it runs the op's Python body, and on a fused_attn_C:: op its CPU kernel, with this mode
    pushed again, so their own aten calls reach it. A copy is clone / _to_copy, a copy_ between two storages
    (the Triton interpreter's copy_ of a storage onto itself is not), or a contiguous / reshape / to / flatten
    that returned new storage."""

    def __init__(self, numel: int):
        super().__init__()
        self.numel, self.inside, self.copies = numel, [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace in ("fused_attn", "fused_attn_C"):
            self.inside.append(str(func))
            try:
                with self:
                    if func.namespace == "fused_attn":
                        return _maybe_get_opdef(func)._init_fn(*args, **kwargs)
                    return func._op_dk(torch._C.DispatchKey.CPU, *args, **kwargs)
            finally:
                self.inside.pop()
        out = func(*args, **kwargs)
        if self.inside and self._is_copy(func, args, out):
            src = args[1] if func is aten.copy_.default else args[0]
            self.copies.append(f"{func} of {tuple(src.shape)} strides {src.stride()} inside {self.inside[0]}")
        return out

    def _is_copy(self, func, args, out) -> bool:
        if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.numel() < self.numel:
            return False
        if func in _ALWAYS_COPY:
            return True
        if func is aten.copy_.default:
            return args[1].untyped_storage().data_ptr() != out.untyped_storage().data_ptr()
        return func in _MAYBE_COPY and out.untyped_storage().data_ptr() != args[0].untyped_storage().data_ptr()


def test_the_copy_recorder_sees_copies_inside_the_ops():
    """The recorder is not blind: the reference backend writes its output through a copy (as_layout_of), each
    fused backend copies a sliced input whose H, W cannot be merged (documented), and a copy outside an op
    is not counted."""
    x = torch.randn(2, 8, 5, 9)
    with CopyRecorder(x.numel()) as rec:
        FA.apply_gates(x, torch.rand(2, 8), backend="reference").contiguous(memory_format=torch.channels_last)
    assert len(rec.copies) == 1 and "copy_" in rec.copies[0] and "fused_attn.apply_gates" in rec.copies[0]
    sliced = x[..., 1:-1]
    for backend in kernel_backends("apply_gates"):
        with CopyRecorder(sliced.numel()) as rec:
            FA.apply_gates(sliced, torch.rand(2, 8), backend=backend)
        assert len(rec.copies) == 1 and "(2, 8, 5, 7) strides (360, 45, 9, 1)" in rec.copies[0], (backend, rec.copies)


@functools.lru_cache(maxsize=None)
def _reference(kind: str):
    """The reference backend's NCHW forward and input gradient (computed once per kind)."""
    return tuple(t.detach() for t in _forward_backward(_module(kind, "reference"), _input(kind, "nchw")))


def _cases():
    """(kind, backend) for every serving backend; EMAX's dynamic mode (the fixed mode's ops, once per group
    count) on the kernel backends only."""
    return [(k, b) for k in KINDS for b in backends_for(*OPS_OF[k]) if k != "EMAX-dynamic" or b != "reference"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind,backend", _cases())
def test_module_keeps_the_memory_format_without_copies(kind, backend, layout):
    """out and x.grad have x's strides (channels_last in -> channels_last out) and equal the reference backend's
    NCHW results; on a fused backend, no fused_attn op copies an x-sized tensor on the way, forward or backward
    (the convs and the module's own aten code run outside the ops and are not counted)."""
    m = _module(kind, backend)
    x = _input(kind, layout)
    with CopyRecorder(x.numel()) as rec:
        out, gx = _forward_backward(m, x)
    assert out.stride() == x.stride(), f"output strides {out.stride()}, input {x.stride()}"
    assert gx.stride() == x.stride(), f"input-gradient strides {gx.stride()}, input {x.stride()}"
    ref_out, ref_gx = _reference(kind)
    assert_close(out, ref_out, what="forward")
    assert_close(gx, ref_gx, what="input gradient")
    if backend in kernel_backends(OPS_OF[kind][0]):
        assert rec.copies == [], "hidden copies:\n" + "\n".join(rec.copies)
