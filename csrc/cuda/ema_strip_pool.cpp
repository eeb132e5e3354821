// CUDA bindings of ema_strip_pool (kernels: fa_ema_strip_pool_reduce, fa_ema_strip_pool_grad_input of
// ema_strip_pool_kernels.cu; math: fused_attn/backends/reference/ema_strip_pool.py). Same outputs as
// csrc/cpu/ema_strip_pool.cpp:
//   ema_strip_pool_reduce      [B, C, H + W] in x's dtype (contiguous)
//   ema_strip_pool_grad_input  grad_x like x
#include "binding.h"

namespace fa {
namespace cuda {
namespace {

Tensor ema_strip_pool_reduce(const Tensor& x_in) {
  check_4d(x_in, "x");
  const c10::DeviceGuard guard(x_in.device());
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const Tensor x = dense(x_in, fmt, dt);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  Tensor out = at::empty({B, C, H + W}, x.options());
  if (H * W == 0) return out.fill_(NAN);  // means of nothing (torch: NaN)
  Tensor scratch =
      at::empty({fa_strip_pool_scratch(dtype_code(dt), cl, B, C, H, W)}, x.options().dtype(acc_scalar_type(dt)));
  check_launch(fa_ema_strip_pool_reduce(dtype_code(dt), cl, x.const_data_ptr(), out.mutable_data_ptr(),
                                        scratch.mutable_data_ptr(), B, C, H, W, current_stream(x)),
               "ema_strip_pool_reduce");
  return out;
}

Tensor ema_strip_pool_grad_input(const Tensor& grad, const Tensor& x) {
  check_4d(x, "x");
  check_same_device(x, grad, "grad");
  const c10::DeviceGuard guard(x.device());
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  check_numel(grad, B * C * (H + W), "grad", "[B, C, H + W]");
  const auto fmt = format_of(x);
  const auto dt = x.scalar_type();
  const Tensor g = small_acc(grad, dt);
  Tensor gx = empty_4d(x.sizes(), x, fmt, dt);
  check_launch(fa_ema_strip_pool_grad_input(dtype_code(dt), fmt == at::MemoryFormat::ChannelsLast, g.const_data_ptr(),
                                            gx.mutable_data_ptr(), B, C, H, W, current_stream(x)),
               "ema_strip_pool_grad_input");
  return gx;
}

}  // namespace
}  // namespace cuda
}  // namespace fa

TORCH_LIBRARY_IMPL(FA_CUDA_LIBRARY, FA_CUDA_KEY, m) {
  m.impl("ema_strip_pool_reduce", &fa::cuda::ema_strip_pool_reduce);
  m.impl("ema_strip_pool_grad_input", &fa::cuda::ema_strip_pool_grad_input);
}
