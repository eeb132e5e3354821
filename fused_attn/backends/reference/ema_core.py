"""EMA (Efficient Multi-scale Attention) cross-spatial core, around the two convolutions it keeps as aten calls.

x: [B, C, H, W] seen as G groups of cg = C / G channels (group_x = x.view(B*G, cg, H, W)); per (b, group),
channel c (0..cg), pixel p = (i, j), N = H * W. The block before the core (functional.ema): the strip means
pooled = ema_strip_pool(x) [B, C, H + W] (fused_attn/backends/reference/ema_strip_pool.py), then hw =
conv1x1(pooled) and x2 = conv3x3(group_x), both aten.

ema_core_combine(x, hw, x2, gn_weight, gn_bias, groups, eps) -> (out, mean, rstd):
  u[c, p]  = x[c, p] * sig(hw[c, i]) * sig(hw[c, H + j])
  x1[c, p] = (u[c, p] - mean_p u[c]) * rstd[c] * gn_weight[c] + gn_bias[c]     (GroupNorm(cg, cg), biased var)
  a1 = softmax_c(mean_p x1) = softmax_c(gn_bias)        (mean_p of the normalised term is exactly zero)
  a2 = softmax_c(mean_p x2)
  w[p] = sum_c a1[c] x2[c, p] + a2[c] x1[c, p];   out[c, p] = x[c, p] * sig(w[p])

ema_core_grads, with g = grad_out, sg = sig(w), uhat = (u - mean) * rstd (mean, rstd: the forward's):
  dw[p] = sg (1 - sg) sum_c g x;       grad_x = g sg + du * sig_h * sig_w
  grad_x2[c, p] = a1[c] dw[p] + (a2 (da2 - <a2, da2>))[c] / N,    da2[c] = sum_p dw x1[c, p]
  grad_gn_bias  = sum_{b,g} a2 sum_p dw + a1 (da1 - <a1, da1>),   da1[c] = sum_p dw x2[c, p]
  grad_gn_weight = sum_{b,g} a2[c] sum_p dw uhat[c, p]
  du[c, p] = rstd (d[p] - mean_p d - uhat[c, p] mean_p(d uhat[c])),  d = a2[c] gn_weight[c] dw[p]
  grad_hw[c, i] = (1 - sig_h[c, i]) sum_j du u;   grad_hw[c, H + j] = (1 - sig_w[c, j]) sum_i du u
"""
from __future__ import annotations

import torch

from ..._layout import acc_dtype, as_layout_of

OPS = {"ema_core"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


def _grouped(t: torch.Tensor, groups: int) -> torch.Tensor:
    b, c = t.shape[:2]
    return t.reshape(b, groups, c // groups, *t.shape[2:])


def _normalised(x, hw, groups, eps, mean=None, rstd=None):
    """(X, u, sig_h, sig_w, mean, rstd, uhat), grouped [B, G, cg, ...], in the accumulation dtype."""
    acc = acc_dtype(x.dtype)
    h = x.shape[2]
    X = _grouped(x.to(acc), groups)
    hwf = _grouped(hw.to(acc), groups)
    sig_h = torch.sigmoid(hwf[..., :h]).unsqueeze(-1)        # [B, G, cg, H, 1]
    sig_w = torch.sigmoid(hwf[..., h:]).unsqueeze(-2)        # [B, G, cg, 1, W]
    u = X * sig_h * sig_w
    if mean is None:
        mean = u.mean(dim=(3, 4))
        var = (u - mean[..., None, None]).square().mean(dim=(3, 4))
        rstd = torch.rsqrt(var + eps)
    else:
        mean, rstd = _grouped(mean, groups), _grouped(rstd, groups)
    uhat = (u - mean[..., None, None]) * rstd[..., None, None]
    return X, u, sig_h, sig_w, mean, rstd, uhat


def _attention(x2f, gn_weight, gn_bias, uhat):
    """(x1, a1, a2, w) from the grouped tensors."""
    acc = x2f.dtype
    gw = gn_weight.to(acc)[:, None, None]
    gb = gn_bias.to(acc)[:, None, None]
    x1 = uhat * gw + gb
    a1 = torch.softmax(gn_bias.to(acc), dim=0)[:, None, None]                  # [cg, 1, 1]
    a2 = torch.softmax(x2f.mean(dim=(3, 4)), dim=2)[..., None, None]            # [B, G, cg, 1, 1]
    w = (a1 * x2f + a2 * x1).sum(dim=2)                                         # [B, G, H, W]
    return x1, a1, a2, w


def ema_core_combine(x, hw, x2, gn_weight, gn_bias, groups: int, eps: float):
    """-> (out like x, mean [B, C], rstd [B, C]); mean/rstd of u per channel, in the accumulation dtype."""
    X, u, sig_h, sig_w, mean, rstd, uhat = _normalised(x, hw, groups, eps)
    x2f = _grouped(x2.to(X.dtype), groups)
    _, _, _, w = _attention(x2f, gn_weight, gn_bias, uhat)
    out = X * torch.sigmoid(w).unsqueeze(2)
    b, c = x.shape[:2]
    return as_layout_of(out.reshape(x.shape), x), mean.reshape(b, c).contiguous(), rstd.reshape(b, c).contiguous()


def ema_core_grads(grad_out, x, hw, x2, gn_weight, gn_bias, mean, rstd, groups: int, eps: float):
    """-> (grad_x like x, grad_hw [B, C, H + W], grad_x2 like x2, grad_gn_weight [cg], grad_gn_bias [cg])."""
    X, u, sig_h, sig_w, mean, rstd, uhat = _normalised(x, hw, groups, eps, mean, rstd)
    acc = X.dtype
    x2f = _grouped(x2.to(acc), groups)
    x1, a1, a2, w = _attention(x2f, gn_weight, gn_bias, uhat)
    G = _grouped(grad_out.to(acc), groups)
    n = x.shape[2] * x.shape[3]
    sg = torch.sigmoid(w).unsqueeze(2)                                          # [B, G, 1, H, W]
    dw = (G * X).sum(dim=2, keepdim=True) * sg * (1 - sg)                       # [B, G, 1, H, W]

    da1 = (dw * x2f).sum(dim=(3, 4))                                            # [B, G, cg]
    da2 = (dw * x1).sum(dim=(3, 4))
    a1v, a2v = a1[:, 0, 0], a2[..., 0, 0]
    dm2 = a2v * (da2 - (a2v * da2).sum(dim=2, keepdim=True))
    grad_x2 = a1 * dw + (dm2 / n)[..., None, None]
    dgb_softmax = a1v * (da1 - (a1v * da1).sum(dim=2, keepdim=True))
    dx1 = a2 * dw
    grad_gn_weight = (dx1 * uhat).sum(dim=(0, 1, 3, 4))
    grad_gn_bias = dx1.sum(dim=(0, 1, 3, 4)) + dgb_softmax.sum(dim=(0, 1))

    d = dx1 * gn_weight.to(acc)[:, None, None]
    du = rstd[..., None, None] * (d - d.mean(dim=(3, 4), keepdim=True)
                                  - uhat * (d * uhat).mean(dim=(3, 4), keepdim=True))
    grad_x = G * sg + du * sig_h * sig_w
    duu = du * u
    grad_hw = torch.cat([duu.sum(dim=4) * (1 - sig_h[..., 0]), duu.sum(dim=3) * (1 - sig_w[..., 0, :])], dim=-1)
    b, c = x.shape[:2]
    return (as_layout_of(grad_x.reshape(x.shape), x),
            grad_hw.reshape(b, c, hw.shape[2]).to(hw.dtype).contiguous(),
            as_layout_of(grad_x2.reshape(x2.shape), x2),
            grad_gn_weight.to(gn_weight.dtype), grad_gn_bias.to(gn_bias.dtype))
