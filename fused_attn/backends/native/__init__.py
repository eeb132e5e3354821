"""The native backends, "cpu" and "cuda": thin Python shims over the C++ kernel ops torch.ops.fused_attn_C.*.

One module per op family, exposing that family's passes (fused_attn/backends/__init__.py) under the same names,
arguments and outputs as the reference (fused_attn/backends/reference/<family>.py), plus the sets OPS and
DTYPES. Every shim calls the kernel op of its own name: `channel_pool_reduce` here is
fused_attn_C::channel_pool_reduce (schema in csrc/op_schemas.h), implemented for CPU tensors in
csrc/cpu/<family>.cpp and for CUDA tensors in csrc/cuda/<family>.cpp (which calls the launcher fa_<pass> of
csrc/cuda/<family>_kernels.cu, or builds the pass from the shared launchers of csrc/cuda/launchers.h:
fa_gate_map, fa_tile_sums, fa_merge_partials, fa_hw_sum). A family is served on a device only when fused_attn._C
registered its kernels for that device's dispatch key (fused_attn.dispatch checks). DTYPES (_library.py) is
float32, float64, bfloat16 and float16 on both devices. The CPU kernels: docs/cpu.md; the CUDA kernels:
docs/cuda.md.
"""
