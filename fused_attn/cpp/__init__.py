"""The C++ extension's backends ("cpu" and "cuda"): thin Python shims over torch.ops.fused_attn_C.

One module per op family (channel_pool, squeeze_excite, apply_gates, ema), exposing the family's backend
functions (the contract in fused_attn/ops/<family>.py, the same signatures as fused_attn/reference/<family>.py)
plus the sets OPS and DTYPES. The shims are device-agnostic: they call the fused_attn_C::* schemas declared in
csrc/fused_attn.cpp, whose kernels are registered per dispatch key (CPU: csrc/cpu/<family>.cpp; CUDA:
csrc/cuda/<family>.cpp). A family is served on a device only when fused_attn._C registered a kernel for that
device's dispatch key (fused_attn._backend checks fused_attn_C::<op>_forward). DTYPES is the CPU set (float32,
float64, bfloat16, float16; see _ops.py). The CPU kernels, their layouts and determinism: docs/cpu.md.
"""
