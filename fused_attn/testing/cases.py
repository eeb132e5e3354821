"""The vocabulary of the sample registry (fused_attn/testing/registry.py): cases, grids, input makers, checks.

  Case     one input configuration: shape [B, C, H, W], dtype, layout of the 4-D tensors, variant (op-specific:
           pooled stats, gate parts, activations, EMA groups)
  Grid     a set of cases (shapes x dtypes x layouts x variants); a consumer's grid is a tuple of Grids
  Maker    draws a case's tensors on one device (the meta device too: shapes and strides only)
  Out      how one output of a kernel pass is checked against the reference (dtype, layout, comparison)
  check    the comparison itself: max |actual - expected| <= tol * max(|expected|, 1) in float64
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

from .._layout import acc_dtype, memory_format

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# (rtol, atol) relative to the reference's max magnitude (at least 1), per dtype: see check()
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}
LAYOUTS = ("nchw", "channels_last", "sliced")   # + "mixed" for ops with several 4-D inputs (ema_core)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class Case:
    shape: tuple
    dtype: torch.dtype = torch.float32
    layout: str = "nchw"
    variant: str = ""

    @property
    def id(self) -> str:
        parts = [dtype_name(self.dtype), self.layout, "x".join(map(str, self.shape))]
        return "-".join(parts + ([self.variant] if self.variant else []))

    def with_(self, **changes) -> "Case":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Grid:
    """shapes x dtypes x layouts x variants. A shape may come with its own variant, as (shape, variant); the
    variants are those of the pass or op the grid is expanded for, or what `variants` makes of them."""
    shapes: tuple
    dtypes: tuple = DTYPES
    layouts: tuple = ("nchw", "channels_last")
    variants: Optional[Callable[[tuple], tuple]] = None

    def cases(self, variants: tuple) -> list[Case]:
        out = []
        for dtype in self.dtypes:
            for layout in self.layouts:
                for entry in self.shapes:
                    shape, own = (entry[0], (entry[1],)) if isinstance(entry[0], tuple) else (entry, None)
                    for variant in own or (self.variants(variants) if self.variants else variants):
                        out.append(Case(tuple(shape), dtype, layout, variant))
        return out


GridSpec = Union[Grid, tuple]   # one Grid or a tuple of grid specs


def _grids(spec: GridSpec) -> list[Grid]:
    return [spec] if isinstance(spec, Grid) else [g for s in spec for g in _grids(s)]


def expand(spec: GridSpec, variants: tuple) -> list[Case]:
    """Every case of a grid spec, duplicates dropped (first occurrence kept)."""
    seen, out = set(), []
    for grid in _grids(spec):
        for case in grid.cases(variants):
            if case not in seen:
                seen.add(case)
                out.append(case)
    return out


class Maker:
    """Draws the tensors of one case on one device: 4-D tensors in the case's layout, small tensors dense."""

    MIXED = ("channels_last", "nchw", "sliced")   # the "mixed" layout: the first 4-D tensor drawn, the second, ...

    def __init__(self, case: Case, device="cpu"):
        self.case, self.device = case, torch.device(device)
        self.dtype, self.acc = case.dtype, acc_dtype(case.dtype)
        self.b, self.c, self.h, self.w = case.shape
        self._drawn_4d = 0

    def _draw(self, shape, dtype, kind: str, scale: float) -> torch.Tensor:
        if self.device.type == "meta":
            return torch.empty(shape, dtype=dtype, device=self.device)
        if kind == "positive":   # uniform in [0.5, 1.5): gates, GroupNorm weights, anything kept away from 0
            return torch.rand(shape, dtype=torch.float32, device=self.device).add_(0.5).to(dtype)
        if kind == "gate":       # in (0, 1), like a sigmoid's output
            return torch.sigmoid(torch.randn(shape, dtype=torch.float32, device=self.device)).to(dtype)
        return (torch.randn(shape, dtype=torch.float32, device=self.device) * scale).to(dtype)

    def x4(self, shape=None, layout: Optional[str] = None, dtype=None, kind: str = "normal") -> torch.Tensor:
        """A 4-D tensor ([B, C, H, W] by default) in `layout` (default: the case's): dense NCHW, dense
        channels_last, "sliced" (a channel and column slice: not dense in any format), "expanded" (stride 0
        everywhere, like the gradient of `.sum()`) or "mixed" (each tensor drawn in the next of MIXED)."""
        shape = tuple(shape or self.case.shape)
        layout = layout or self.case.layout
        if layout == "mixed":
            layout = self.MIXED[self._drawn_4d % len(self.MIXED)]
            self._drawn_4d += 1
        dtype = dtype or self.dtype
        if layout == "sliced":
            b, c, h, w = shape
            return self._draw((b, c + 1, h, w + 2), dtype, kind, 1.0)[:, 1:, :, 1:-1]
        if layout == "expanded":
            return self._draw((), dtype, kind, 1.0).expand(shape)
        t = self._draw(shape, dtype, kind, 1.0)
        return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else t

    def t(self, *shape, dtype: Union[torch.dtype, str, None] = None, kind: str = "normal",
          scale: float = 1.0) -> torch.Tensor:
        """A dense tensor; dtype "acc" is the case's accumulation dtype (float64 for float64, else float32)."""
        dtype = self.acc if dtype == "acc" else (dtype or self.dtype)
        return self._draw(shape, dtype, kind, scale)


@dataclass(frozen=True)
class Out:
    """How one output of a kernel pass is checked. dtype: "case" (the case's dtype), "acc", a torch.dtype or an
    int (the dtype of that pass argument); like: the index of the argument whose memory format a 4-D output
    keeps; compare: "close", "equal" (integer outputs) or "ratio" (actual / expected close to 1); tol_of: compare
    at the coarser of the case's dtype and that argument's dtype (an output in a gate's dtype)."""
    name: str
    dtype: object = "case"
    like: Optional[int] = None
    compare: str = "close"
    tol_of: Optional[int] = None
    contiguous: bool = False


def check(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = "",
          tol: Optional[float] = None) -> None:
    """max |actual - expected| <= tol * max(|expected|, 1), compared in float64; NaN must match NaN."""
    tol = TOL[dtype] if tol is None else tol
    assert tuple(actual.shape) == tuple(expected.shape), \
        f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert torch.equal(a.isnan(), e.isnan()), f"{what}: NaN positions differ"
    a, e = torch.nan_to_num(a), torch.nan_to_num(e)
    scale = max(e.abs().max().item() if e.numel() else 0.0, 1.0)
    err = (a - e).abs().max().item() if e.numel() else 0.0
    assert err <= tol * scale, f"{what}: max abs error {err:.3e} > {tol:.1e} * {scale:.3e}"


def check_layout(actual: torch.Tensor, like: torch.Tensor, what: str) -> None:
    """A 4-D result keeps its input's memory format (fused_attn/_layout.py's rule)."""
    assert actual.is_contiguous(memory_format=memory_format(like)), f"{what}: layout of {tuple(actual.stride())}"


def coarser(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype with the largest tolerance."""
    return max(dtypes, key=TOL.get)


def to_f64(args: tuple) -> tuple:
    """Float64 copies of the floating tensors of a pass's arguments (the reference's inputs)."""
    return tuple(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
