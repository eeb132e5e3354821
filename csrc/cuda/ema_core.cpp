// CUDA bindings of ema_core (kernels: fa_ema_core_combine, fa_ema_core_grads of ema_core_kernels.cu; math:
// fused_attn/backends/reference/ema_core.py). The outputs of csrc/cpu/ema_core.cpp:
//   ema_core_combine  (out like x, mean [B, C], rstd [B, C] in the accumulation dtype)
//   ema_core_grads    (grad_x like x, grad_hw [B, C, H + W] in hw's dtype, grad_x2 in x2's layout and dtype,
//                      grad_gn_weight, grad_gn_bias in their dtypes)
// x2 and grad_out are read in x's layout (copied when they differ). sigmoid(hw) and a1 = softmax(gn_bias) are
// small aten ops here; the GroupNorm affine gradients are per-tile partials added in tile order (deterministic).
#include <cmath>

#include "binding.h"

namespace fa {
namespace cuda {
namespace {

struct CoreInputs {
  int64_t B, C, G, cg, H, W;
  at::MemoryFormat fmt;
  Tensor x, x2, sig_hw, gw, gb, a1;
};

CoreInputs core_inputs(const Tensor& x_in, const Tensor& hw_in, const Tensor& x2_in, const Tensor& gn_weight,
                       const Tensor& gn_bias, int64_t groups) {
  check_4d(x_in, "x");
  check_4d(x2_in, "x2");
  check_same_device(x_in, x2_in, "x2");
  check_same_device(x_in, hw_in, "hw");
  check_same_device(x_in, gn_weight, "gn_weight");
  check_same_device(x_in, gn_bias, "gn_bias");
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  TORCH_CHECK(groups > 0 && C % groups == 0, "fused_attn (cuda): C = ", C, " must be divisible by groups = ", groups);
  TORCH_CHECK(x2_in.sizes() == x_in.sizes(), "fused_attn (cuda): x2 must have x's shape ", x_in.sizes(), ", got ",
              x2_in.sizes());
  check_numel(hw_in, B * C * (H + W), "hw", "[B, C, H + W]");
  const int64_t cg = C / groups;
  check_numel(gn_weight, cg, "gn_weight", "[C / groups]");
  check_numel(gn_bias, cg, "gn_bias", "[C / groups]");
  const auto dt = x_in.scalar_type();
  const auto fmt = format_of(x_in);
  const Tensor gb = small_acc(gn_bias, dt);
  return {B,
          C,
          groups,
          cg,
          H,
          W,
          fmt,
          dense(x_in, fmt, dt),
          dense(x2_in, fmt, dt),
          at::sigmoid(small_acc(hw_in, dt)).contiguous(),
          small_acc(gn_weight, dt),
          gb,
          at::softmax(gb, 0).contiguous()};
}

std::tuple<Tensor, Tensor, Tensor> ema_core_combine(const Tensor& x_in, const Tensor& hw_in, const Tensor& x2_in,
                                                    const Tensor& gn_weight, const Tensor& gn_bias, int64_t groups,
                                                    double eps) {
  const c10::DeviceGuard guard(x_in.device());
  const CoreInputs in = core_inputs(x_in, hw_in, x2_in, gn_weight, gn_bias, groups);
  const auto dt = in.x.scalar_type();
  Tensor out = empty_4d(in.x.sizes(), in.x, in.fmt, dt);
  Tensor mean = at::empty({in.B, in.C}, in.x.options().dtype(acc_scalar_type(dt)));
  Tensor rstd = at::empty({in.B, in.C}, mean.options());
  if (in.H * in.W == 0 || in.B == 0) return {out, mean.fill_(NAN), rstd.fill_(NAN)};
  check_launch(fa_ema_core_combine(dtype_code(dt), in.fmt == at::MemoryFormat::ChannelsLast, in.x.const_data_ptr(),
                                   in.x2.const_data_ptr(), in.sig_hw.const_data_ptr(), in.gw.const_data_ptr(),
                                   in.gb.const_data_ptr(), in.a1.const_data_ptr(), out.mutable_data_ptr(),
                                   mean.mutable_data_ptr(), rstd.mutable_data_ptr(), in.B, in.C, in.G, in.H, in.W, eps,
                                   current_stream(in.x)),
               "ema_core_combine (C / groups too large for shared memory?)");
  return {out, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> ema_core_grads(const Tensor& grad_out, const Tensor& x_in,
                                                                  const Tensor& hw_in, const Tensor& x2_in,
                                                                  const Tensor& gn_weight, const Tensor& gn_bias,
                                                                  const Tensor& mean_in, const Tensor& rstd_in,
                                                                  int64_t groups, double eps) {
  (void)eps;  // the forward's statistics (mean, rstd) are reused
  const c10::DeviceGuard guard(x_in.device());
  const CoreInputs in = core_inputs(x_in, hw_in, x2_in, gn_weight, gn_bias, groups);
  check_same_device(x_in, grad_out, "grad_out");
  check_same_device(x_in, mean_in, "mean");
  check_same_device(x_in, rstd_in, "rstd");
  TORCH_CHECK(grad_out.sizes() == x_in.sizes(), "fused_attn (cuda): grad_out must have x's shape ", x_in.sizes(),
              ", got ", grad_out.sizes());
  const auto dt = in.x.scalar_type();
  const int code = dtype_code(dt);
  const auto acc = in.x.options().dtype(acc_scalar_type(dt));
  const Tensor g = dense(grad_out, in.fmt, dt);
  const Tensor mean = small_acc(mean_in, dt), rstd = small_acc(rstd_in, dt);
  check_numel(mean, in.B * in.C, "mean", "[B, C]");
  check_numel(rstd, in.B * in.C, "rstd", "[B, C]");
  dtype_code(gn_weight.scalar_type());
  dtype_code(gn_bias.scalar_type());
  dtype_code(hw_in.scalar_type());
  const int64_t N = in.H * in.W, tiles = in.B * in.G;
  const bool work = N > 0 && tiles > 0;
  Tensor grad_x = empty_4d(in.x.sizes(), in.x, in.fmt, dt);
  Tensor grad_x2 = empty_4d(in.x.sizes(), in.x, in.fmt, dt);
  Tensor grad_hw = work ? at::empty({in.B, in.C, in.H + in.W}, acc) : at::zeros({in.B, in.C, in.H + in.W}, acc);
  Tensor gn_part = work ? at::empty({2, tiles, in.cg}, acc) : at::zeros({2, tiles, in.cg}, acc);
  Tensor grad_gw = at::empty({in.cg}, gn_weight.options());
  Tensor grad_gb = at::empty({in.cg}, gn_bias.options());
  const cudaStream_t stream = current_stream(in.x);
  if (work) {
    Tensor pix = at::empty({fa_ema_pixel_scratch(in.B, in.G, in.H, in.W)}, acc);
    check_launch(
        fa_ema_core_grads(code, in.fmt == at::MemoryFormat::ChannelsLast, g.const_data_ptr(), in.x.const_data_ptr(),
                          in.x2.const_data_ptr(), in.sig_hw.const_data_ptr(), in.gw.const_data_ptr(),
                          in.gb.const_data_ptr(), in.a1.const_data_ptr(), mean.const_data_ptr(), rstd.const_data_ptr(),
                          grad_x.mutable_data_ptr(), grad_x2.mutable_data_ptr(), grad_hw.mutable_data_ptr(),
                          gn_part.mutable_data_ptr(), pix.mutable_data_ptr(), in.B, in.C, in.G, in.H, in.W, stream),
        "ema_core_grads (C / groups too large for shared memory?)");
  }
  // GroupNorm affine gradients: the per-tile partials added in tile order
  const char* part = static_cast<const char*>(gn_part.const_data_ptr());
  const int64_t half = tiles * in.cg * fa_acc_size(code);
  if (in.cg > 0 && tiles > 0) {
    check_launch(fa_merge_partials(code, dtype_code(grad_gw.scalar_type()), part, grad_gw.mutable_data_ptr(), 1, tiles,
                                   in.cg, fa_merge_rows(in.cg, 1.0), stream),
                 "ema_core_grads (gn_weight merge)");
    check_launch(fa_merge_partials(code, dtype_code(grad_gb.scalar_type()), part + half, grad_gb.mutable_data_ptr(), 1,
                                   tiles, in.cg, fa_merge_rows(in.cg, 1.0), stream),
                 "ema_core_grads (gn_bias merge)");
  } else {
    grad_gw.zero_();
    grad_gb.zero_();
  }
  // grad_x2 goes back in x2's own dtype and layout (a copy when either differs from x's; autocast can hand
  // x2 in bfloat16 beside a float32 x), as the cpu kernel and the pass contract say
  return {grad_x, grad_hw.to(hw_in.scalar_type()), grad_x2.to(x2_in.scalar_type()).contiguous(format_of(x2_in)),
          grad_gw, grad_gb};
}

}  // namespace
}  // namespace cuda
}  // namespace fa

TORCH_LIBRARY_IMPL(FA_CUDA_LIBRARY, FA_CUDA_KEY, m) {
  m.impl("ema_core_combine", &fa::cuda::ema_core_combine);
  m.impl("ema_core_grads", &fa::cuda::ema_core_grads);
}
