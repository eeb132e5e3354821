"""Output layout rules shared by every backend and every fake kernel.

A fake kernel must return the same strides as the real op, so the memory format of each output is
decided here, once: 4-D outputs follow the input's format (channels_last in, channels_last out;
anything else, including sliced or permuted inputs, gives contiguous NCHW).
"""
from __future__ import annotations

import torch


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is (strictly) channels_last, else contiguous_format."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def empty_4d(like: torch.Tensor, shape, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialised 4-D tensor of `shape` in the memory format of `like`."""
    return torch.empty(tuple(shape), dtype=dtype or like.dtype, device=like.device,
                       memory_format=memory_format(like))


def as_layout_of(value: torch.Tensor, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`value` (any strides) copied into a new tensor laid out as `like` dictates (see `empty_4d`)."""
    if torch.jit.is_tracing():  # TorchScript ONNX export (dynamo=False) has no symbolic for empty + copy_
        return value.to(dtype=dtype or like.dtype, memory_format=memory_format(like), copy=True)
    out = empty_4d(like, value.shape, dtype or like.dtype)
    out.copy_(value)
    return out


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 for float64 inputs, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def broadcast_scalar(t: torch.Tensor) -> torch.Tensor | None:
    """The one value of a tensor broadcast from a scalar (every stride 0, as the gradient of `y.sum()` or
    `y.mean()` arrives), as a 0-d view of it; None for any other tensor. Backward passes use it to skip reading
    a gradient that is the same at every element instead of materialising it."""
    if t.numel() == 0 or any(s != 0 for s in t.stride()):
        return None
    return t.as_strided((), (), t.storage_offset())
