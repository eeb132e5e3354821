"""Channel pooling for spatial attention: max / mean / std over the channel axis.

  out[b, k, h, w] = stat_k(x[b, :, h, w])   stat in {max, mean, std}, std unbiased (divides by C - 1)

Backward, with g_k = grad_out[b, k, h, w] and x_c = x[b, c, h, w]:
  max:  g_max goes to the first channel holding the maximum (argmax saved by the forward); ties give
        all of it to the first such channel (as torch.argmax picks it).
  mean: g_mean / C to every channel.
  std:  g_std * (x_c - mean) / ((C - 1) * std); zero where std == 0 (constant channels), as torch.std.
"""
from __future__ import annotations

import torch

from ..._layout import acc_dtype, as_layout_of

OPS = {"channel_pool"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


def _mean_std(xf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = xf.shape[1]
    mean = xf.mean(dim=1)
    var = (xf - mean.unsqueeze(1)).square().sum(dim=1) / (c - 1) if c > 1 else torch.full_like(mean, float("nan"))
    return mean, var.sqrt()


def channel_pool_reduce(x: torch.Tensor, stats: tuple[str, ...]):
    """-> (out [B, len(stats), H, W] in x's dtype and layout, argmax [B, H, W] int32 or empty,
    moments [B, 2, H, W] (mean, std) in the accumulation dtype when "std" is asked, else empty)."""
    xf = x.to(acc_dtype(x.dtype))
    argmax = x.new_empty((0,), dtype=torch.int32)
    moments = x.new_empty((0,), dtype=xf.dtype)
    mean = std = None
    if "mean" in stats or "std" in stats:
        mean, std = _mean_std(xf)
    planes = []
    for stat in stats:
        if stat == "max":
            idx = torch.argmax(xf, dim=1)
            planes.append(xf.gather(1, idx.unsqueeze(1)).squeeze(1))
            argmax = idx.to(torch.int32).contiguous()
        elif stat == "mean":
            planes.append(mean)
        else:
            planes.append(std)
    if "std" in stats:
        moments = torch.stack([mean, std], dim=1).contiguous()
    out = as_layout_of(torch.stack(planes, dim=1), x)
    return out, argmax, moments


def channel_pool_grad_input(grad_out: torch.Tensor, x: torch.Tensor, argmax: torch.Tensor,
                            moments: torch.Tensor, stats: tuple[str, ...]) -> torch.Tensor:
    """grad_x [B, C, H, W] in x's dtype and layout."""
    acc = acc_dtype(x.dtype)
    xf = x.to(acc)
    g = grad_out.to(acc)
    c = x.shape[1]
    grad = torch.zeros(x.shape, dtype=acc, device=x.device)
    for k, stat in enumerate(stats):
        gk = g[:, k]
        if stat == "max":
            grad.scatter_add_(1, argmax.long().unsqueeze(1), gk.unsqueeze(1))
        elif stat == "mean":
            grad += (gk / c).unsqueeze(1)
        else:
            mean, std = moments[:, 0], moments[:, 1]
            coef = torch.where(std == 0, torch.zeros_like(std), gk / ((c - 1) * std))
            grad += coef.unsqueeze(1) * (xf - mean.unsqueeze(1))
    return as_layout_of(grad, x)
