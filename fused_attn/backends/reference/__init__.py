"""Pure-PyTorch reference backend: the oracle every kernel is tested against, and the fallback.

One module per op family, exposing the family's passes under the same names and signatures as the kernel
backends (fused_attn/backends/__init__.py): forward and backward written out explicitly, accumulating in float32
(float64 for float64 inputs). The backward formulas are the specification for the kernels' backward, not
autograd of the forward. It never imports another backend.
"""
