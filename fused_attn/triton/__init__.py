"""Triton backend: one module per op family (kernels + launchers), added by the Triton kernel work.

Serves CUDA tensors, and CPU tensors under TRITON_INTERPRET=1 (how CI tests it).
"""
