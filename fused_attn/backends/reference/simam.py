"""SimAM (Yang et al., ICML 2021): a parameter-free 3-D attention, per (b, c) plane of N = H*W pixels.

  n = N - 1,  mu = mean_hw x,  d = (x - mu)^2,  v = sum_hw d / n,  k = 1 / (4 (v + e_lambda))
  y = d k + 0.5,  s = sigmoid(y),  out = x s

  simam_gate:        x, e_lambda -> (out like x, mean [B, C] acc, k [B, C] acc)
  simam_grad_input:  grad, x, mean, k -> grad_x like x, with per plane
                       gy = g x s (1 - s),  A = sum_hw gy d,  B = sum_hw gy (x - mu)
                       grad_x = g s + 2 (x - mu) (k gy - 4 k^2 A / n) - 2 k B / N

The backward is derived by hand (dk/dv = -4 k^2, dv/dd = 1 / n, dd/dx = 2 (x - mu) (1 - 1 / N)); the term
4 k^2 A / n * sum_hw (x - mu) / N vanishes (sum_hw (x - mu) = 0) and is dropped. N = 1 gives n = 0, v = 0 / 0 =
NaN: every output and gradient of that plane is NaN, as the official code gives.
"""
from __future__ import annotations

import torch

from ..._layout import acc_dtype, as_layout_of

OPS = {"simam"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


def _plane_stats(xf: torch.Tensor, e_lambda: float) -> tuple:
    n = xf.shape[2] * xf.shape[3] - 1
    mean = xf.mean(dim=(2, 3))
    d = (xf - mean[:, :, None, None]).square()
    v = d.sum(dim=(2, 3)) / n if n != 0 else d.sum(dim=(2, 3)) * float("nan")  # 0 / 0 like the official code
    return mean, 1.0 / (4.0 * (v + e_lambda)), d


def simam_gate(x: torch.Tensor, e_lambda: float) -> tuple:
    """out = x * sigmoid((x - mu)^2 k + 0.5) like x; mean, k = 1 / (4 (v + e_lambda)) per plane [B, C] acc."""
    xf = x.to(acc_dtype(x.dtype))
    mean, k, d = _plane_stats(xf, e_lambda)
    out = xf * torch.sigmoid(d * k[:, :, None, None] + 0.5)
    return as_layout_of(out, x), mean, k


def simam_grad_input(grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """grad_x = g s + 2 (x - mu) (k gy - 4 k^2 A / n) - 2 k B / N (see the module docstring) like x."""
    acc = acc_dtype(x.dtype)
    xf, g = x.to(acc), grad.to(acc)
    big_n = x.shape[2] * x.shape[3]
    n = big_n - 1
    mu, kk = mean.to(acc)[:, :, None, None], k.to(acc)[:, :, None, None]
    xm = xf - mu
    d = xm.square()
    s = torch.sigmoid(d * kk + 0.5)
    gy = g * xf * s * (1 - s)
    a = (gy * d).sum(dim=(2, 3), keepdim=True)
    b = (gy * xm).sum(dim=(2, 3), keepdim=True)
    inv_n = 1.0 / n if n != 0 else float("nan")
    gx = g * s + 2 * xm * (kk * gy - 4 * kk.square() * a * inv_n) - 2 * kk * b / big_n
    return as_layout_of(gx, x)
