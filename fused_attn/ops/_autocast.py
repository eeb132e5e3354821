"""The autocast rule of every fused_attn op: run on the dtypes it receives, with autocast off inside.

Why not `torch.library.register_autocast`: it casts every floating input to one dtype, which is what eager
autocast does to its lower-precision ops (conv, linear, matmul: cast to bf16/fp16) and to its float32 ops
(losses, some norms: cast to fp32). The seed modules compute what these ops fuse with ops autocast leaves
alone: adaptive_avg_pool2d, max / mean / std over channels, mul, add, sigmoid. Those run in the dtype they
receive (fp32 after an fp32 input, bf16 after an autocast conv) and promote mixed operands. The ops match that:

  - no input is cast; each output has the dtype eager gives (x's; `functional.apply_gates` promotes mixed
    operands before the op, like eager's mul and add);
  - autocast is off inside the op, so everything it computes internally (the squeeze-excite MLP, the EMA
    statistics) runs in the accumulation dtype its fake kernel declares (float32; float64 for float64).

Without the rule autocast would reach into the implementation: squeeze_excite's MLP would run in bf16 and return
bf16 auxiliary outputs where the fake kernel declares float32, and eager and torch.compile would disagree.
This is `register_autocast` without the cast (the same dispatcher mechanism), for CPU and CUDA autocast.

One exception, per device type: CUDA autocast runs `pow` and `sum` in float32 (its fp32 list; CPU autocast
leaves both alone), so an original whose formula goes through them returns float32 under
CUDA autocast for a float16 / bfloat16 input (SimAM's `(x - mean).pow(2)` and `.sum()`, then `x * sigmoid(...)`
promotes). The op matches it with `upcast_on=("cuda",)`: its float16 / bfloat16 tensor arguments are cast to
float32 (a differentiable cast: the gradient returns in the input's dtype, as eager's does).
"""
from __future__ import annotations

import torch

_LIB = torch.library.Library("fused_attn", "IMPL")   # kept alive: registrations last as long as it does
DEVICE_TYPES = ("cpu", "cuda")
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _kernel(qualname: str, key: "torch._C.DispatchKey"):
    def kernel(_keyset, *args, **kwargs):
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            return torch._library.utils.lookup_op(qualname)(*args, **kwargs)
    return kernel


def _upcast_kernel(qualname: str, key: "torch._C.DispatchKey"):
    def kernel(_keyset, *args, **kwargs):
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            args = tuple(a.float() if isinstance(a, torch.Tensor) and a.dtype in LOW_PRECISION else a for a in args)
            return torch._library.utils.lookup_op(qualname)(*args, **kwargs)
    return kernel


def pass_through(*qualnames: str, upcast_on: tuple = ()) -> None:
    """Register the rule above for each op ("fused_attn::name") on every autocast device type; on the device types
    in `upcast_on`, float16 / bfloat16 tensor arguments are cast to float32 first (see `upcast`)."""
    for qualname in qualnames:
        name = qualname.split("::", 1)[1]
        for device_type in DEVICE_TYPES:
            key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
            make = _upcast_kernel if device_type in upcast_on else _kernel
            _LIB.impl(name, make(qualname, getattr(torch._C.DispatchKey, key)), key, with_keyset=True)
