// Schemas of the kernel ops of fused_attn_C: one op per kernel pass, named as the pass is in every layer (the
// Python function of fused_attn/backends/<package>/<family>.py, fused_attn/backends/native's shim calling this op,
// the CUDA launcher fa_<pass> where the pass has a kernel of its own). Kernels: csrc/cpu/<family>.cpp (CPU),
// csrc/cuda/<family>.cpp (CUDA). The math of each pass is in fused_attn/backends/reference/<family>.py.
// "acc" = float64 for float64 inputs, else float32.
//
// One function so that the extension (csrc/fused_attn.cpp) and tools/cuda_emu's library of the same CUDA
// bindings on a CPU emulator declare the same ops.
#pragma once

#include <torch/library.h>

namespace fa {

inline void define_kernel_ops(torch::Library& m) {
  // channel_pool (csrc/cpu/channel_pool.cpp). stats: comma-separated ordered subset of max, mean, std.
  //   -> (out [B, K, H, W] like x, argmax [B, H, W] int32 | [0], moments [B, 2, H, W] (mean, std) acc | [0])
  m.def("channel_pool_reduce(Tensor x, str stats) -> (Tensor, Tensor, Tensor)");
  m.def("channel_pool_grad_input(Tensor grad_out, Tensor x, Tensor argmax, Tensor moments, str stats) -> Tensor");

  // squeeze_excite family (csrc/cpu/squeeze_excite.cpp).
  m.def("channel_squeeze_reduce(Tensor x) -> Tensor");                   // mean_hw x, [B, C] acc
  m.def("channel_squeeze_grad_input(Tensor grad, Tensor x) -> Tensor");  // grad / HW, like x
  m.def("channel_scale(Tensor x, Tensor s) -> Tensor");                  // x * s[b, c], like x
  // the whole forward, MLP included: -> (y = x * gate(z2) like x, pooled [B, C], z1 [B, Cr], z2 [B, C] acc);
  // act: relu | hardswish | silu, gate: sigmoid | hardsigmoid; w1 [Cr, C], w2 [C, Cr] (or 1x1 conv weights)
  m.def(
      "squeeze_excite_combine(Tensor x, Tensor w1, Tensor? b1, Tensor w2, Tensor? b2, str act, str gate) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("squeeze_excite_grad_gate(Tensor grad_y, Tensor x) -> Tensor");  // sum_hw grad_y * x, [B, C] acc
  // the last pass of the SE backward (after the MLP backward): grad_y * s + grad_pooled / HW, like x
  m.def("squeeze_excite_grad_input(Tensor grad_y, Tensor x, Tensor s, Tensor grad_pooled) -> Tensor");
  // the whole ECA forward: p = mean_hw x, z = the k-tap correlation of weight [k] (odd k) across the channels
  // (zero or circular padding), y = x * gate(z) -> (y like x, pooled [B, C], z [B, C] acc); gate: sigmoid |
  // hardsigmoid. Its backward is squeeze_excite_grad_gate, the tiny conv backward, squeeze_excite_grad_input.
  m.def("eca_combine(Tensor x, Tensor weight, bool circular, str gate) -> (Tensor, Tensor, Tensor)");
  // the whole ESE forward (effective squeeze-excite, one C -> C layer): p = mean_hw x, z = weight p + bias,
  // y = x * gate(z) -> (y like x, pooled [B, C], z [B, C] acc); weight [C, C] (or a 1x1 conv's [C, C, 1, 1])
  m.def("ese_combine(Tensor x, Tensor weight, Tensor? bias, str gate) -> (Tensor, Tensor, Tensor)");

  // apply_gates (csrc/cpu/apply_gates.cpp): residual + y * channel[b, c] * spatial[b, h, w].
  m.def("apply_gates_combine(Tensor y, Tensor? channel, Tensor? spatial, Tensor? residual) -> Tensor");
  //   -> (grad_y like y, grad_channel [B, C] | [0], grad_spatial [B, H, W] | [0])
  m.def(
      "apply_gates_grads(Tensor grad_out, Tensor y, Tensor? channel, Tensor? spatial) "
      "-> (Tensor, Tensor, Tensor)");

  //   -> (grad_channel, grad_spatial) of apply_gates_grads without writing grad_y (dual_attention's backward)
  m.def("apply_gates_grad_gates(Tensor grad_out, Tensor y, Tensor channel, Tensor spatial) -> (Tensor, Tensor)");

  // dual_attention (csrc/cpu/dual_attention.cpp).
  //   -> (pooled = mean_hw x [B, C] acc, logit = sum_c ws[c] x [B, H, W] acc), one pass over x
  m.def("dual_attention_reduce(Tensor x, Tensor ws) -> (Tensor, Tensor)");
  //   -> (grad_x = g channel spatial + ws[c] grad_logit + grad_pooled / HW like x, grad_ws [C] acc)
  m.def(
      "dual_attention_grad_input(Tensor grad_out, Tensor x, Tensor channel, Tensor spatial, Tensor ws, "
      "Tensor grad_logit, Tensor grad_pooled) -> (Tensor, Tensor)");

  // ema_strip_pool (csrc/cpu/ema_strip_pool.cpp).
  m.def("ema_strip_pool_reduce(Tensor x) -> Tensor");                   // [B, C, H + W] in x's dtype
  m.def("ema_strip_pool_grad_input(Tensor grad, Tensor x) -> Tensor");  // like x

  // ema_core (csrc/cpu/ema_core.cpp): the EMA block after its two convolutions.
  //   -> (out like x, mean [B, C] acc, rstd [B, C] acc)
  m.def(
      "ema_core_combine(Tensor x, Tensor hw, Tensor x2, Tensor gn_weight, Tensor gn_bias, int groups, "
      "float eps) -> (Tensor, Tensor, Tensor)");
  //   -> (grad_x like x, grad_hw [B, C, H + W], grad_x2 like x2, grad_gn_weight, grad_gn_bias)
  m.def(
      "ema_core_grads(Tensor grad_out, Tensor x, Tensor hw, Tensor x2, Tensor gn_weight, Tensor gn_bias, "
      "Tensor mean, Tensor rstd, int groups, float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");

  // simam (csrc/cpu/simam.cpp): per (b, c) plane, out = x sigmoid((x - mu)^2 k + 0.5).
  //   -> (out like x, mean [B, C] acc, k = 1 / (4 (sum (x - mu)^2 / (H W - 1) + e_lambda)) [B, C] acc)
  m.def("simam_gate(Tensor x, float e_lambda) -> (Tensor, Tensor, Tensor)");
  m.def("simam_grad_input(Tensor grad_out, Tensor x, Tensor mean, Tensor k) -> Tensor");  // grad_x like x
  // coord_gate (csrc/cpu/coord_gate.cpp): gate "none": (x * a_w[b, c, j]) * a_h[b, c, i]; "sigmoid" /
  // "hardsigmoid": x * gate(a_h + a_w); + x when skip. a_h [B, C, H], a_w [B, C, W] in any floating dtype.
  m.def("coord_gate_combine(Tensor x, Tensor a_h, Tensor a_w, str gate, bool skip) -> Tensor");  // like x
  //   -> (grad_x like x, grad_a_h [B, C, H] in a_h's dtype, grad_a_w [B, C, W] in a_w's dtype), one pass
  m.def(
      "coord_gate_grads(Tensor grad_out, Tensor x, Tensor a_h, Tensor a_w, str gate, bool skip) "
      "-> (Tensor, Tensor, Tensor)");
  // global_context (csrc/cpu/global_context.cpp): GCNet's softmax attention pooling over the pixels.
  //   -> (ctx = sum_p softmax_p(weight . x) x [B, C] acc, lse = logsumexp_p(weight . x) [B] acc), one pass over x
  m.def("global_context_pool_reduce(Tensor x, Tensor weight) -> (Tensor, Tensor)");
  //   -> (grad_x = g a + dz weight like x, grad_weight = sum dz x [C] acc), dz = a (g . x - g . ctx)
  m.def(
      "global_context_pool_grads(Tensor grad_ctx, Tensor x, Tensor weight, Tensor ctx, Tensor lse) "
      "-> (Tensor, Tensor)");
}

}  // namespace fa
