"""Shared test helpers: tolerances, inputs, and which backends to parametrize over."""
from __future__ import annotations

import torch

from fused_attn import dispatch

# (rtol, atol) relative to the reference's max magnitude: see assert_close.
TOL = {
    torch.float64: 1e-10,
    torch.float32: 2e-5,
    torch.float16: 5e-3,
    torch.bfloat16: 3e-2,
}
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None, what: str = "",
                 tol: float | None = None):
    """max |actual - expected| <= tol * max(|expected|, 1), compared in float64; NaN must match NaN.
    tol defaults to TOL[dtype] (dtype defaults to actual's)."""
    tol = TOL[dtype or actual.dtype] if tol is None else tol
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert torch.equal(a.isnan(), e.isnan()), f"{what}: NaN positions differ"
    a, e = torch.nan_to_num(a), torch.nan_to_num(e)
    scale = max(e.abs().max().item() if e.numel() else 0.0, 1.0)
    err = (a - e).abs().max().item() if e.numel() else 0.0
    assert err <= tol * scale, f"{what}: max abs error {err:.3e} > {tol:.1e} * {scale:.3e}"


def rand(shape, dtype=torch.float32, layout="nchw", positive=False, device="cpu"):
    """A tensor of `shape` laid out as asked: dense NCHW, dense channels_last, or a non-contiguous slice; normal
    values, or uniform in [0.5, 1.5) when `positive`."""
    def draw(*s):
        return (torch.rand(*s, dtype=dtype, device=device) + 0.5 if positive
                else torch.randn(*s, dtype=dtype, device=device))
    if layout == "channels_last" and len(shape) == 4:
        return draw(*shape).contiguous(memory_format=torch.channels_last)
    if layout == "sliced" and len(shape) == 4:
        b, c, h, w = shape
        return draw(b, c + 1, h, w + 2)[:, 1:, :, 1:-1]
    return draw(*shape)


def randn4d(b, c, h, w, dtype=torch.float32, channels_last=False, device="cpu", requires_grad=False):
    x = torch.randn(b, c, h, w, dtype=dtype, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(requires_grad)


def kernel_backends(op: str, device="cpu", dtype=torch.float32) -> list[str]:
    """Every non-reference backend that serves `op` here (e.g. cpu when built, triton under the interpreter)."""
    return [b for b in dispatch.serving(op, device, dtype) if b != "reference"]


def serving_backends(op: str, device="cpu", dtype=torch.float32) -> list[str]:
    return dispatch.serving(op, device, dtype)


# The fused ops each drop-in module calls (module kind as in tests/test_modules.py::_tiny).
_GATE_OPS = ("channel_squeeze", "apply_gates")
MODULE_OPS = {"SEBlock": ("squeeze_excite",), "MultiScaleAttention": _GATE_OPS + ("channel_pool",),
              "DualAttention": ("dual_attention",), "LiteDualAttention": ("dual_attention",),
              "AttnResBlock": ("dual_attention",), "EMA": ("ema_strip_pool", "ema_core"),
              "CBAM": _GATE_OPS + ("channel_pool",)}
# EMAX: its channel gate's mean_hw x comes from the EMA strip means (no channel_squeeze)
MODULE_OPS["EMAX"] = MODULE_OPS["EMAX-dynamic"] = MODULE_OPS["EMA"] + ("apply_gates", "squeeze_excite")
