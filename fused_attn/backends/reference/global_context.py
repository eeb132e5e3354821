"""Global-context attention pooling (GCNet, timm's GlobalContext with use_attn=True): a softmax over the pixels of a
1x1-conv logit map, then the softmax-weighted mean of every channel.

  global_context_pool_reduce(x, weight [C]) -> (ctx [B, C], lse [B]), both in the accumulation dtype:
      z[b, p]   = sum_c weight[c] x[b, c, p]                  (the 1x1 conv C -> 1; its bias is left out, below)
      lse[b]    = log sum_p exp z[b, p]                       (the per-sample statistic the backward reads)
      a[b, p]   = exp(z[b, p] - lse[b])                       (softmax over the H * W pixels)
      ctx[b, c] = sum_p a[b, p] x[b, c, p]
  global_context_pool_grads(grad_ctx [B, C], x, weight, ctx, lse) -> (grad_x like x, grad_weight [C] accumulation):
      with g = grad_ctx:  dz[b, p] = a[b, p] (sum_c g[b, c] x[b, c, p] - sum_c g[b, c] ctx[b, c])
      grad_x[b, c, p] = g[b, c] a[b, p] + dz[b, p] weight[c]
      grad_weight[c]  = sum_{b, p} dz[b, p] x[b, c, p]

p = h * W + w. The conv's bias adds one constant to every logit of a sample, which the softmax removes exactly, so ctx
does not depend on it and its gradient, sum_p dz[b, p] = g.ctx - g.ctx, is exactly zero (the op returns zeros; the
kernels never read the bias). H * W = 0 gives ctx = 0 (a sum over no pixels, as timm's matmul gives) and lse = -inf.
"""
from __future__ import annotations

import torch

from ..._layout import acc_dtype, as_layout_of

OPS = {"global_context_pool"}
DTYPES = {torch.float16, torch.bfloat16, torch.float32, torch.float64}


def _logits(x: torch.Tensor, weight: torch.Tensor):
    acc = acc_dtype(x.dtype)
    xf = x.to(acc).flatten(2)                                       # [B, C, N]
    return xf, torch.matmul(weight.to(acc).reshape(-1), xf)         # [B, N]


def global_context_pool_reduce(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    """-> (ctx [B, C] = sum_p softmax_p(weight . x)[p] x[:, :, p], lse [B] = logsumexp_p(weight . x)), accumulation
    dtype. `bias` (the logit conv's, [1]) shifts every logit alike, so ctx does not depend on it; when given it is
    added as the source module adds it, so that traced math (torch.compile) gives it its (zero) gradient and lse
    includes it."""
    xf, z = _logits(x, weight)
    if bias is not None:
        z = z + bias.to(z.dtype)
    lse = torch.logsumexp(z, dim=1)
    a = torch.exp(z - lse[:, None])
    ctx = torch.matmul(xf, a[:, :, None]).squeeze(2)
    return ctx.contiguous(), lse.contiguous()


def global_context_pool_grads(grad_ctx: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, ctx: torch.Tensor,
                              lse: torch.Tensor):
    """-> (grad_x like x, grad_weight [C] accumulation dtype); see the module docstring."""
    xf, z = _logits(x, weight)
    acc = xf.dtype
    g = grad_ctx.to(acc)
    a = torch.exp(z - lse.to(acc)[:, None])                          # [B, N]
    s = torch.matmul(g[:, None, :], xf).squeeze(1)                   # [B, N] = sum_c g x
    dz = a * (s - (g * ctx.to(acc)).sum(dim=1, keepdim=True))
    w = weight.to(acc).reshape(-1)
    grad_x = g[:, :, None] * a[:, None, :] + w[None, :, None] * dz[:, None, :]
    grad_w = (xf * dz[:, None, :]).sum(dim=(0, 2))
    return as_layout_of(grad_x.reshape(x.shape), x), grad_w
