"""The backends: one package per implementation, one module per op family in each, the same passes in all.

  reference/   pure PyTorch: the oracle and the fallback, any device
  native/      shims over the C++ kernel ops fused_attn_C::<pass>: backend "cpu" (csrc/cpu, OpenMP) and
               backend "cuda" (csrc/cuda), told apart by the tensors' device
  triton/      Triton kernels: CUDA tensors, CPU tensors under TRITON_INTERPRET=1

A pass is one kernel's contract, named for what it computes and called by the same name, with the same
arguments, in every layer: the Python function here, the C++ kernel op fused_attn_C::<pass> (csrc/op_schemas.h)
and, where the pass has a CUDA kernel of its own, the CUDA launcher fa_<pass> (csrc/cuda/launchers.h). Roles
in the names: `_reduce` (x -> small statistics), `_combine` (the pass that writes the op's x-sized output),
`channel_scale` (x * s[b, c]), `_grad_gate(s)` (grad_out, x -> the small gradients), `_grad_input` (the pass
that writes grad_x), `_grads` (grad_x and the small gradients in one pass). Which passes each op runs:
fused_attn.dispatch.OP_PASSES; their sample inputs and tolerances: fused_attn.testing.registry. Every family
module also has OPS (the op names it serves) and DTYPES (the dtypes it accepts).
"""
