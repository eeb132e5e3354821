// CUDA bindings of channel_pool (kernels: fa_channel_pool_reduce, fa_channel_pool_grad_input of
// channel_pool_kernels.cu; math: fused_attn/backends/reference/channel_pool.py). Same outputs as the CPU kernels
// (csrc/cpu/channel_pool.cpp): out [B, K, H, W] in x's layout and dtype, argmax [B, H, W] int32 | [0], moments
// [B, 2, H, W] (mean, std) in the accumulation dtype | [0].
#include <string>

#include "../channel_pool_stats.h"
#include "binding.h"

namespace fa {
namespace cuda {
namespace {

using Stats = PoolStats;

std::tuple<Tensor, Tensor, Tensor> channel_pool_reduce(const Tensor& x_in, c10::string_view stats) {
  check_4d(x_in, "x");
  const Stats s = parse_pool_stats(stats, "cuda");
  const c10::DeviceGuard guard(x_in.device());
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const auto acc = acc_scalar_type(dt);
  const Tensor x = dense(x_in, fmt, dt);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor out = empty_4d({B, s.k, H, W}, x, fmt, dt);
  const auto int_opts = x.options().dtype(at::kInt), acc_opts = x.options().dtype(acc);
  Tensor argmax = s.max >= 0 ? at::empty({B, H, W}, int_opts) : at::empty({0}, int_opts);
  Tensor moments = s.std >= 0 ? at::empty({B, 2, H, W}, acc_opts) : at::empty({0}, acc_opts);
  if (C == 0) {  // torch: max / argmax of nothing raise; mean and std of nothing are NaN
    TORCH_CHECK(s.max < 0, "fused_attn (cuda): channel_pool max over C = 0 channels");
    out.fill_(NAN);
    moments.fill_(NAN);
    return {out, argmax, moments};
  }
  check_launch(fa_channel_pool_reduce(dtype_code(dt), fmt == at::MemoryFormat::ChannelsLast, x.const_data_ptr(),
                                      out.mutable_data_ptr(), s.max >= 0 ? argmax.mutable_data_ptr<int32_t>() : nullptr,
                                      s.std >= 0 ? moments.mutable_data_ptr() : nullptr, B, C, H * W, s.k, s.max,
                                      s.mean, s.std, current_stream(x)),
               "channel_pool_reduce");
  return {out, argmax, moments};
}

Tensor channel_pool_grad_input(const Tensor& grad_out, const Tensor& x_in, const Tensor& argmax_in,
                               const Tensor& moments_in, c10::string_view stats) {
  check_4d(x_in, "x");
  check_same_device(x_in, grad_out, "grad_out");
  const Stats s = parse_pool_stats(stats, "cuda");
  const c10::DeviceGuard guard(x_in.device());
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const int64_t B = x_in.size(0), C = x_in.size(1), N = x_in.size(2) * x_in.size(3);
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == B && grad_out.size(1) == s.k &&
                  grad_out.size(2) * grad_out.size(3) == N,
              "fused_attn (cuda): grad_out must be [B, ", s.k, ", H, W], got ", grad_out.sizes());
  const bool need_x = s.std >= 0;
  const Tensor x = need_x ? dense(x_in, fmt, dt) : x_in;
  const Tensor g = dense(grad_out.reshape({B, s.k, x_in.size(2), x_in.size(3)}), fmt, dt);
  Tensor argmax, moments;
  if (s.max >= 0) {
    check_same_device(x_in, argmax_in, "argmax");
    argmax = argmax_in.to(at::kInt).contiguous();
    check_numel(argmax, B * N, "argmax", "[B, H, W]");
  }
  if (need_x) {
    check_same_device(x_in, moments_in, "moments");
    moments = small_acc(moments_in, dt);
    check_numel(moments, 2 * B * N, "moments", "[B, 2, H, W]");
  }
  Tensor gx = empty_4d(x_in.sizes(), x_in, fmt, dt);
  check_launch(fa_channel_pool_grad_input(
                   dtype_code(dt), fmt == at::MemoryFormat::ChannelsLast, g.const_data_ptr(),
                   need_x ? x.const_data_ptr() : nullptr, s.max >= 0 ? argmax.const_data_ptr<int32_t>() : nullptr,
                   cptr(moments), gx.mutable_data_ptr(), B, C, N, s.k, s.max, s.mean, s.std, current_stream(x_in)),
               "channel_pool_grad_input");
  return gx;
}

}  // namespace
}  // namespace cuda
}  // namespace fa

TORCH_LIBRARY_IMPL(FA_CUDA_LIBRARY, FA_CUDA_KEY, m) {
  m.impl("channel_pool_reduce", &fa::cuda::channel_pool_reduce);
  m.impl("channel_pool_grad_input", &fa::cuda::channel_pool_grad_input);
}
