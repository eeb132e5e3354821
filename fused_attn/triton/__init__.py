"""Triton backend: one module per op family, kernels and launchers together (docs/triton.md).

  channel_pool.py    max / mean / std over C, forward and backward
  squeeze_excite.py  channel squeeze (mean over HW), channel scale, the fused SE backward passes
  apply_gates.py     residual + y * channel * spatial, forward and one-pass backward
  ema.py             EMA strip pooling and the cross-spatial core (one program per (b, group))
  _common.py         stride views, block-size heuristics, kernel decorator, the shared pointwise kernel

Serves CUDA tensors, and CPU tensors under TRITON_INTERPRET=1 (how CI tests it). Nothing is imported here:
fused_attn._backend imports a family's module the first time an op of that family asks for `triton`.
"""
