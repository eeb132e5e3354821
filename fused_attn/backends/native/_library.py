"""What every native shim shares: the dtype set of the C++ kernels and the op namespace."""
from __future__ import annotations

import torch

from ... import _ext

# dtypes the C++ kernels are compiled for (csrc/cpu/common.h FA_DISPATCH, csrc/cuda/binding.h dtype_code);
# float16 / bfloat16 accumulate in float32
DTYPES = {torch.float32, torch.float64, torch.bfloat16, torch.float16}


def kernels():
    """torch.ops.fused_attn_C, loading fused_attn._C first (an actionable error when it is not built). Resolved
    per call, so the shims import without the extension."""
    _ext.require()
    return torch.ops.fused_attn_C
