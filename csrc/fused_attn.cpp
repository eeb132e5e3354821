// fused_attn._C: the op schemas of the C++ backends and a bare Python module.
//
// Every C++ op lives in the torch.library namespace `fused_attn_C`; its schema is declared here and its
// kernels are registered per device in csrc/cpu/<family>.cpp (CPU) and csrc/cuda/<family>.cpp (CUDA).
// Python reaches them through torch.ops.fused_attn_C.*, so the module needs no pybind: importing it only
// loads this library, whose static initialisers run the registrations below.
#include <Python.h>

#include <string>

#include <torch/library.h>

#include "cpu/isa.h"

#ifdef _OPENMP
#include <omp.h>
#endif

extern "C" {
// The module `fused_attn._C` itself is empty (Python limited API, no libtorch_python link).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace fused_attn {

// "key=value;..." describing this build; read by fused_attn._ext.build_info().
static std::string build_info() {
  std::string s = "version=1";
#ifdef _OPENMP
  s += ";openmp=1;omp_max_threads=" + std::to_string(omp_get_max_threads());
#else
  s += ";openmp=0";
#endif
#ifdef FUSED_ATTN_WITH_CUDA
  s += ";cuda=1";
#else
  s += ";cuda=0";
#endif
#if defined(__clang__)
  s += ";compiler=clang " + std::string(__clang_version__);
#elif defined(__GNUC__)
  s += ";compiler=gcc " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__);
#endif
  s += ";cplusplus=" + std::to_string(__cplusplus);
  return s;
}

// Schemas of the kernel ops; Python shims fused_attn/cpp/<family>.py implement each family's backend contract
// (fused_attn/ops/<family>.py) on top of them. The math of each op is in its kernel file and in
// fused_attn/reference/<family>.py. "acc" = float64 for float64 inputs, else float32.
TORCH_LIBRARY(fused_attn_C, m) {
  m.def("build_info() -> str", &build_info);
  // Instruction set of the registered CPU kernels: "avx2" (AVX2 + FMA variants) or "baseline" (csrc/cpu/isa.h).
  m.def("cpu_isa() -> str", [] { return std::string(fused_attn::cpu::cpu_isa_name()); });

  // channel_pool (csrc/cpu/channel_pool.cpp). stats: comma-separated ordered subset of max, mean, std.
  //   -> (out [B, K, H, W] like x, argmax [B, H, W] int32 | [0], moments [B, 2, H, W] (mean, std) acc | [0])
  m.def("channel_pool_forward(Tensor x, str stats) -> (Tensor, Tensor, Tensor)");
  m.def("channel_pool_backward(Tensor grad_out, Tensor x, Tensor argmax, Tensor moments, str stats) -> Tensor");

  // squeeze_excite family (csrc/cpu/squeeze_excite.cpp).
  m.def("channel_squeeze_forward(Tensor x) -> Tensor");                       // mean_hw x, [B, C] acc
  m.def("channel_squeeze_backward(Tensor grad, Tensor x) -> Tensor");         // grad / HW, like x
  m.def("squeeze_excite_forward(Tensor x, Tensor s) -> Tensor");              // x * s[b, c], like x
  m.def("squeeze_excite_grad_gate(Tensor grad_y, Tensor x) -> Tensor");       // sum_hw grad_y * x, [B, C] acc
  // the last pass of the SE backward (after the MLP backward): grad_y * s + grad_pooled / HW, like x
  m.def("squeeze_excite_backward(Tensor grad_y, Tensor x, Tensor s, Tensor grad_pooled) -> Tensor");

  // apply_gates (csrc/cpu/apply_gates.cpp): residual + y * channel[b, c] * spatial[b, h, w].
  m.def("apply_gates_forward(Tensor y, Tensor? channel, Tensor? spatial, Tensor? residual) -> Tensor");
  //   -> (grad_y like y, grad_channel [B, C] | [0], grad_spatial [B, H, W] | [0])
  m.def("apply_gates_backward(Tensor grad_out, Tensor y, Tensor? channel, Tensor? spatial) "
        "-> (Tensor, Tensor, Tensor)");

  //   -> (grad_channel, grad_spatial) of apply_gates_backward without writing grad_y (dual_attention's backward)
  m.def("apply_gates_grad_gates(Tensor grad_out, Tensor y, Tensor channel, Tensor spatial) -> (Tensor, Tensor)");

  // dual_attention (csrc/cpu/dual_attention.cpp).
  //   -> (pooled = mean_hw x [B, C] acc, logit = sum_c ws[c] x [B, H, W] acc), one pass over x
  m.def("dual_attention_forward(Tensor x, Tensor ws) -> (Tensor, Tensor)");
  //   -> (grad_x = g channel spatial + ws[c] grad_logit + grad_pooled / HW like x, grad_ws [C] acc)
  m.def("dual_attention_backward(Tensor grad_out, Tensor x, Tensor channel, Tensor spatial, Tensor ws, "
        "Tensor grad_logit, Tensor grad_pooled) -> (Tensor, Tensor)");

  // EMA (csrc/cpu/ema.cpp).
  m.def("ema_strip_pool_forward(Tensor x) -> Tensor");                        // [B, C, H + W] in x's dtype
  m.def("ema_strip_pool_backward(Tensor grad, Tensor x) -> Tensor");          // like x
  //   -> (out like x, mean [B, C] acc, rstd [B, C] acc)
  m.def("ema_core_forward(Tensor x, Tensor hw, Tensor x2, Tensor gn_weight, Tensor gn_bias, int groups, "
        "float eps) -> (Tensor, Tensor, Tensor)");
  //   -> (grad_x like x, grad_hw [B, C, H + W], grad_x2 like x2, grad_gn_weight, grad_gn_bias)
  m.def("ema_core_backward(Tensor grad_out, Tensor x, Tensor hw, Tensor x2, Tensor gn_weight, Tensor gn_bias, "
        "Tensor mean, Tensor rstd, int groups, float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

}  // namespace fused_attn
