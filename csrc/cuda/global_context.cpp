// CUDA bindings of global_context (kernels: fa_global_context_pool_reduce, fa_global_context_pool_grads of
// global_context_kernels.cu; math: fused_attn/backends/reference/global_context.py). Same outputs as
// csrc/cpu/global_context.cpp:
//   global_context_pool_reduce  (ctx [B, C], lse [B]) accumulation dtype
//   global_context_pool_grads   (grad_x like x, grad_weight [C] accumulation dtype)
#include "binding.h"

#include <limits>

namespace fa {
namespace cuda {
namespace {

std::tuple<Tensor, Tensor> global_context_pool_reduce(const Tensor& x_in, const Tensor& weight) {
  check_4d(x_in, "x");
  check_same_device(x_in, weight, "weight");
  const c10::DeviceGuard guard(x_in.device());
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const int64_t B = x_in.size(0), C = x_in.size(1), N = x_in.size(2) * x_in.size(3);
  check_numel(weight, C, "weight", "[C]");
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const Tensor x = dense(x_in, fmt, dt);
  const Tensor w = small_acc(weight, dt);
  const auto opts = x.options().dtype(acc_scalar_type(dt));
  Tensor ctx = at::empty({B, C}, opts);
  Tensor lse = at::empty({B}, opts);
  if (N == 0) return {ctx.zero_(), lse.fill_(-std::numeric_limits<double>::infinity())};
  if (B == 0) return {ctx, lse};
  Tensor scratch = at::empty({fa_global_context_scratch(cl, B, C, N)}, opts);
  check_launch(
      fa_global_context_pool_reduce(dtype_code(dt), cl, x.const_data_ptr(), w.const_data_ptr(), ctx.mutable_data_ptr(),
                                    lse.mutable_data_ptr(), scratch.mutable_data_ptr(), B, C, N, current_stream(x)),
      "global_context_pool_reduce");
  return {ctx, lse};
}

std::tuple<Tensor, Tensor> global_context_pool_grads(const Tensor& grad_ctx, const Tensor& x_in, const Tensor& weight,
                                                     const Tensor& ctx, const Tensor& lse) {
  check_4d(x_in, "x");
  check_same_device(x_in, grad_ctx, "grad_ctx");
  check_same_device(x_in, weight, "weight");
  check_same_device(x_in, ctx, "ctx");
  check_same_device(x_in, lse, "lse");
  const c10::DeviceGuard guard(x_in.device());
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const int64_t B = x_in.size(0), C = x_in.size(1), N = x_in.size(2) * x_in.size(3);
  check_numel(weight, C, "weight", "[C]");
  check_numel(grad_ctx, B * C, "grad_ctx", "[B, C]");
  check_numel(ctx, B * C, "ctx", "[B, C]");
  check_numel(lse, B, "lse", "[B]");
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const Tensor x = dense(x_in, fmt, dt);
  const Tensor w = small_acc(weight, dt), g = small_acc(grad_ctx, dt), c = small_acc(ctx, dt), l = small_acc(lse, dt);
  const auto opts = x.options().dtype(acc_scalar_type(dt));
  Tensor grad_x = empty_4d(x.sizes(), x, fmt, dt);
  Tensor grad_w = at::empty({C}, opts);
  Tensor scratch = at::empty({fa_global_context_grads_scratch(cl, B, C, N)}, opts);
  check_launch(
      fa_global_context_pool_grads(dtype_code(dt), cl, x.const_data_ptr(), w.const_data_ptr(), g.const_data_ptr(),
                                   c.const_data_ptr(), l.const_data_ptr(), grad_x.mutable_data_ptr(),
                                   grad_w.mutable_data_ptr(), scratch.mutable_data_ptr(), B, C, N, current_stream(x)),
      "global_context_pool_grads");
  return {grad_x, grad_w};
}

}  // namespace
}  // namespace cuda
}  // namespace fa

TORCH_LIBRARY_IMPL(FA_CUDA_LIBRARY, FA_CUDA_KEY, m) {
  m.impl("global_context_pool_reduce", &fa::cuda::global_context_pool_reduce);
  m.impl("global_context_pool_grads", &fa::cuda::global_context_pool_grads);
}
