"""What every C++ backend shim shares: the dtype set of the CPU kernels and the op namespace."""
from __future__ import annotations

import torch

from .. import _ext

# dtypes the CPU kernels are compiled for (csrc/cpu/common.h, FUSED_ATTN_DISPATCH); float16/bfloat16 accumulate
# in float32. A CUDA registration with another dtype set must make DTYPES device-aware (it is the CPU set now).
DTYPES = {torch.float32, torch.float64, torch.bfloat16, torch.float16}


def ops():
    """torch.ops.fused_attn_C, loading fused_attn._C first (an actionable error when it is not built). Resolved
    per call, so the shims import without the extension."""
    _ext.require()
    return torch.ops.fused_attn_C
