"""Triton backend: one module per op family, kernels and launchers together (docs/triton.md).

  channel_pool.py     max / mean / std over C: reduce, grad_input
  squeeze_excite.py   channel squeeze (mean over HW), channel scale, the SE backward's grad_gate and grad_input
  apply_gates.py      residual + y * channel * spatial: combine, and one-pass grads / grad_gates
  dual_attention.py   the channel + spatial gates' reduce and grad_input passes (with apply_gates' two)
  ema_strip_pool.py   EMA's row and column means: reduce, grad_input
  ema_core.py         the EMA cross-spatial core, one program per (b, group): combine, grads
  _common.py          stride views, block-size heuristics, kernel decorator, the shared pointwise kernel

Serves CUDA tensors, and CPU tensors under TRITON_INTERPRET=1 (how CI tests it). Nothing is imported here:
fused_attn.dispatch imports a family's module the first time an op of that family asks for `triton`.
"""
