"""The C++ extension's backends ("cpu" and "cuda"): thin Python shims over torch.ops.fused_attn_C.

One module per op family (added with its kernels, csrc/cpu/<family>.cpp and csrc/cuda/<family>.cpp),
exposing the family's backend functions (see fused_attn/ops/<family>.py). A family is served on a device
only when fused_attn._C registered a kernel for that device's dispatch key.
"""
