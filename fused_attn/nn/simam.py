"""SimAM (Yang et al., "SimAM: A Simple, Parameter-Free Attention Module for Convolutional Neural Networks",
ICML 2021): the twin of the official `simam_module` (github.com/ZjjConan/SimAM, networks/attentions/
simam_module.py) and of External-Attention-pytorch's `SimAM` (the same code)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .. import functional as FA
from .._layout import acc_dtype
from .base import AttentionModule

__all__ = ["SimAM", "simam_attention_map"]


@torch.no_grad()
def simam_attention_map(x: Tensor, e_lambda: float) -> Tensor:
    """SimAM's 3-D attention sigmoid(y) [B, C, H, W] (the op returns only x * sigmoid(y)); for recording."""
    xf = x.to(acc_dtype(x.dtype))
    d = (xf - xf.mean(dim=(2, 3), keepdim=True)).square()
    y = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / (x.shape[2] * x.shape[3] - 1) + e_lambda)) + 0.5
    return torch.sigmoid(y).to(x.dtype)


class SimAM(AttentionModule):
    """SimAM, parameter-free: per (b, c) plane of N = H W pixels, n = N - 1, d = (x - mean_hw x)^2,
    out = x * sigmoid(d / (4 (sum_hw d / n + e_lambda)) + 0.5)   (`functional.simam`, one fused op).

    Structure as the official module: `channels` is accepted and ignored, the float attribute `e_lambda`, the
    child `activaton` (sic) = nn.Sigmoid() (kept so that the module tree, state_dict (empty) and repr match the
    official code's; the fused op applies the sigmoid itself). H W = 1 gives NaN, as the official code does.
    When recording, keeps "gate" [B, C, H, W] = sigmoid(y), recomputed from x (an extra pass, only then).
    """

    def __init__(self, channels: Optional[int] = None, e_lambda: float = 1e-4, *, backend: Optional[str] = None,
                 record_attention: bool = False):
        super().__init__(backend, record_attention)
        if isinstance(e_lambda, bool) or not isinstance(e_lambda, (int, float)) or not math.isfinite(e_lambda) \
                or e_lambda < 0:
            raise ValueError(f"e_lambda must be a finite float >= 0, got {e_lambda!r}")
        self.activaton = nn.Sigmoid()
        self.e_lambda = float(e_lambda)

    def __repr__(self) -> str:  # the official repr, plus the fused settings when set
        extra = self.extra_repr()
        return f"{self.__class__.__name__}(lambda={self.e_lambda:f}{', ' + extra if extra else ''})"

    @staticmethod
    def get_module_name() -> str:
        return "simam"

    def forward(self, x: Tensor) -> Tensor:
        out = FA.simam(x, self.e_lambda, backend=self.backend)
        if self.record_attention:
            self._record(gate=simam_attention_map(x, self.e_lambda))
        return out

    @classmethod
    def misfit(cls, source: nn.Module) -> Optional[str]:
        """None when `source` has the official structure (only child `activaton`, an nn.Sigmoid; a finite float
        e_lambda >= 0; no parameters or buffers), else the reason it is not swapped."""
        children = dict(source.named_children())
        if set(children) != {"activaton"} or type(children["activaton"]) is not nn.Sigmoid:
            return f"children {sorted(children)} are not exactly activaton = nn.Sigmoid()"
        lam = getattr(source, "e_lambda", None)
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
            return f"e_lambda {lam!r} is not a finite float >= 0"
        if any(True for _ in source.parameters()) or any(True for _ in source.buffers()):
            return "it has parameters or buffers (the official SimAM has none)"
        return None

    @classmethod
    def from_source(cls, source: nn.Module, backend: Optional[str] = None) -> "SimAM":
        """The twin of an official simam_module / External-Attention SimAM (same e_lambda and training mode)."""
        return cls(e_lambda=source.e_lambda, backend=backend).train(source.training)
