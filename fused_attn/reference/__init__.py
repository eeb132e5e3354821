"""Pure-PyTorch reference backend: the oracle every kernel is tested against, and the fallback.

One module per op family, each exposing the same functions as the kernel backends (see fused_attn/ops):
forward and backward written out explicitly, accumulating in float32 (float64 for float64 inputs).
The backward formulas are the specification for the kernels' backward, not autograd of the forward.
"""
