"""Plain eager calls of the custom ops, skipping torch.library's dispatch when nothing can observe it.

A call through a torch.library custom op costs ~17 us of Python dispatch on top of the kernel (~45 us more
when autograd records it): on small feature maps as much as the kernel itself. `call(op, *args)` runs the op's
Python implementation directly when that gives the same result and nothing needs the op to be seen:

  * no autograd: grad mode off, or no tensor argument requires grad;
  * nothing traces or transforms the call: not torch.compile / torch.export (is_compiling), not jit tracing, no
    torch function or dispatch mode (FakeTensorMode, FunctionalTensorMode, user modes), no functorch transform
    (vmap, grad), every tensor a plain torch.Tensor or nn.Parameter (no other subclass; a Parameter turns its
    torch function handling off, and the modules pass their weights as Parameters: `w.flatten(1)` of a Linear
    weight returns the Parameter itself);
  * no autocast (the ops run with autocast off inside, see _autocast.py) and no profiler (which should show the
    fused_attn::* ops).

Otherwise, and always under torch.compile, the call goes through the op. Inference (torch.no_grad,
torch.inference_mode, eval loops) takes the direct path: same kernels, same outputs, bit for bit.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

_C = torch._C
_PLAIN = (Tensor, torch.nn.Parameter)


def custom_op(qualname: str) -> Callable:
    """torch.library.custom_op(qualname, mutates_args=()), keeping the undecorated function as `op.eager_fn`."""
    def wrap(fn):
        op = torch.library.custom_op(qualname, mutates_args=())(fn)
        op.eager_fn = fn
        return op
    return wrap


def _unobserved(tensors: list) -> bool:
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if _C._len_torch_dispatch_stack() or _C._len_torch_function_stack():
        return False
    if _C._functorch.peek_interpreter_stack() is not None:
        return False
    if _C._is_any_autocast_enabled() or torch.autograd.profiler._is_profiler_enabled:
        return False
    grad = torch.is_grad_enabled()
    for t in tensors:
        if type(t) not in _PLAIN or (grad and t.requires_grad):
            return False
    return True


def call(op, *args):
    """op(*args), or op.eager_fn(*args) when nothing can tell the difference (see the module docstring)."""
    if _unobserved([a for a in args if isinstance(a, Tensor)]):
        return op.eager_fn(*args)
    return op(*args)
