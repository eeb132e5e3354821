// CUDA bindings of simam (kernels: fa_simam_gate, fa_simam_grad_input of simam_kernels.cu; math:
// fused_attn/backends/reference/simam.py). Same outputs as csrc/cpu/simam.cpp:
//   simam_gate        (out like x, mean [B, C] acc, k [B, C] acc)
//   simam_grad_input  grad_x like x
#include "binding.h"

namespace fa {
namespace cuda {
namespace {

std::tuple<Tensor, Tensor, Tensor> simam_gate(const Tensor& x_in, double e_lambda) {
  check_4d(x_in, "x");
  const c10::DeviceGuard guard(x_in.device());
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const Tensor x = dense(x_in, fmt, dt);
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2) * x.size(3);
  Tensor out = empty_4d(x.sizes(), x, fmt, dt);
  Tensor mean = at::empty({B, C}, x.options().dtype(acc_scalar_type(dt)));
  Tensor k = at::empty({B, C}, x.options().dtype(acc_scalar_type(dt)));
  check_launch(
      fa_simam_gate(dtype_code(dt), fmt == at::MemoryFormat::ChannelsLast, x.const_data_ptr(), out.mutable_data_ptr(),
                    mean.mutable_data_ptr(), k.mutable_data_ptr(), B, C, N, e_lambda, current_stream(x)),
      "simam_gate");
  return {out, mean, k};
}

Tensor simam_grad_input(const Tensor& grad, const Tensor& x_in, const Tensor& mean_in, const Tensor& k_in) {
  check_4d(x_in, "x");
  check_same_device(x_in, grad, "grad_out");
  check_same_device(x_in, mean_in, "mean");
  check_same_device(x_in, k_in, "k");
  const c10::DeviceGuard guard(x_in.device());
  TORCH_CHECK(grad.sizes() == x_in.sizes(), "fused_attn (cuda): grad_out must have x's shape ", x_in.sizes(), ", got ",
              grad.sizes());
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const Tensor x = dense(x_in, fmt, dt);
  const Tensor g = dense(grad, fmt, dt);
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2) * x.size(3);
  check_numel(mean_in, B * C, "mean", "[B, C]");
  check_numel(k_in, B * C, "k", "[B, C]");
  const Tensor mean = small_acc(mean_in, dt), k = small_acc(k_in, dt);
  Tensor gx = empty_4d(x.sizes(), x, fmt, dt);
  check_launch(
      fa_simam_grad_input(dtype_code(dt), fmt == at::MemoryFormat::ChannelsLast, g.const_data_ptr(), x.const_data_ptr(),
                          mean.const_data_ptr(), k.const_data_ptr(), gx.mutable_data_ptr(), B, C, N, current_stream(x)),
      "simam_grad_input");
  return gx;
}

}  // namespace
}  // namespace cuda
}  // namespace fa

TORCH_LIBRARY_IMPL(FA_CUDA_LIBRARY, FA_CUDA_KEY, m) {
  m.impl("simam_gate", &fa::cuda::simam_gate);
  m.impl("simam_grad_input", &fa::cuda::simam_grad_input);
}
