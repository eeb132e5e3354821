// CPU kernels of ema_core (fused_attn/backends/reference/ema_core.py is the oracle and has the full derivation):
// ema_core_combine (forward) and ema_core_grads (backward).
//
// Per (b, group) tile of cg = C / G channels x N = H * W pixels (channel c, pixel p = (i, j)):
//   u = x sig(hw_h[c, i]) sig(hw_w[c, j]);  uhat = (u - mean_p u) rstd,  rstd = 1 / sqrt(var_p u + eps)
//   x1 = uhat gn_w + gn_b;  a1 = softmax_c(gn_b);  a2 = softmax_c(mean_p x2)
//   w[p] = sum_c a1 x2 + a2 x1;  out = x sig(w)
// grads (g = grad_out, sg = sig(w)):
//   dw = sg (1 - sg) sum_c g x;  da1 = sum_p dw x2;  da2 = sum_p dw x1
//   grad_x2 = a1 dw + a2 (da2 - <a2, da2>) / N
//   grad_gn_w += a2 sum_p dw uhat;  grad_gn_b += a2 sum_p dw + a1 (da1 - <a1, da1>)   (summed over tiles)
//   du = rstd a2 gn_w (dw - mean_p dw - uhat mean_p(dw uhat));  grad_x = g sg + du sig_h sig_w
//   grad_hw[c, i] = (1 - sig_h) sum_j du u;  grad_hw[c, H + j] = (1 - sig_w) sum_i du u
//
// NCHW: one (b, group) tile of cg x N at a time. A tile (e.g. 8 x 56 x 56 fp32 = 100 KB) is contiguous and fits
// in L2: x, x2 (and g) are read from memory once (fp32/fp64 in place, half types converted into a per-thread
// scratch), every pass runs over cached contiguous pixel rows, each output is written once.
// channels_last: whole-image passes over pixel rows of C contiguous channels (so every access streams); a unit
// is (b, block of image rows), per-channel sums over pixels are per-unit partials merged in unit order. The
// forward reads x and x2 twice (statistics, then output), the backward x2 three times, x and g twice.
// x2 and grad_out are read in x's layout (copied when they differ, e.g. an NCHW x2 from the official EMA's
// conv3x3 of x.reshape(B G, cg, H, W) beside a channels_last x; functional.ema runs that conv as a grouped conv
// of x itself, so its x2 keeps x's layout); grad_x2 is returned in x2's dtype and layout.
// Cross-tile / cross-unit sums (GroupNorm affine gradients, channels_last statistics) are added in a fixed
// order: deterministic.
//
// The two layouts' kernels: ema_core_nchw.h ((b, group) tiles) and ema_core_channels_last.h (whole-image
// passes), included here inside the ISA namespace (isa.h).
#include "common.h"
#include "isa.h"

FA_ISA_BEGIN
namespace fa {
namespace cpu {
namespace FA_ISA {

struct Geom {
  int64_t B, C, G, cg, H, W, N;
};

template <typename A>
void softmax(const A* v, A* out, int64_t n) {
  A m = v[0];
  for (int64_t k = 1; k < n; ++k) m = std::max(m, v[k]);
  A z = 0;
  for (int64_t k = 0; k < n; ++k) z += (out[k] = std::exp(v[k] - m));
  for (int64_t k = 0; k < n; ++k) out[k] /= z;
}

// v[k] = sigmoid(v[k]) for k < n; float uses fast_exp (a loop the compiler vectorises).
template <typename A>
void sigmoid_inplace(A* __restrict__ v, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    if constexpr (std::is_same<A, float>::value) v[k] = 1.0f / (1.0f + fast_exp(-v[k]));
    else v[k] = sigmoid(v[k]);
  }
}

#include "ema_core_nchw.h"           // inside the ISA namespace and region
#include "ema_core_channels_last.h"  // inside the ISA namespace and region

// ------------------------------------------------------------------------------------------------ host side
struct CoreInputs {
  Geom s;
  at::MemoryFormat fmt;
  Tensor x, x2, hw, gw, gb;
};

CoreInputs core_inputs(const Tensor& x_in, const Tensor& hw_in, const Tensor& x2_in, const Tensor& gn_weight,
                       const Tensor& gn_bias, int64_t groups) {
  check_4d(x_in, "x");
  check_4d(x2_in, "x2");
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  TORCH_CHECK(groups > 0 && C % groups == 0, "fused_attn (cpu): C must be divisible by groups");
  TORCH_CHECK(x2_in.sizes() == x_in.sizes(), "fused_attn (cpu): x2 must have x's shape");
  TORCH_CHECK(hw_in.numel() == B * C * (H + W), "fused_attn (cpu): hw must be [B, C, H + W]");
  TORCH_CHECK(gn_weight.numel() == C / groups && gn_bias.numel() == C / groups,
              "fused_attn (cpu): gn affine must be [C / groups]");
  const auto dt = x_in.scalar_type();
  const auto fmt = format_of(x_in);
  return {Geom{B, C, groups, C / groups, H, W, H * W},
          fmt,
          dense(x_in, fmt, dt),
          dense(x2_in, fmt, dt),
          small_acc(hw_in, dt),
          small_acc(gn_weight, dt),
          small_acc(gn_bias, dt)};
}

std::tuple<Tensor, Tensor, Tensor> ema_core_combine(const Tensor& x_in, const Tensor& hw_in, const Tensor& x2_in,
                                                    const Tensor& gn_weight, const Tensor& gn_bias, int64_t groups,
                                                    double eps) {
  const CoreInputs in = core_inputs(x_in, hw_in, x2_in, gn_weight, gn_bias, groups);
  const Geom& s = in.s;
  const auto dt = in.x.scalar_type();
  Tensor out = empty_4d(in.x.sizes(), in.x, in.fmt, dt);
  Tensor mean = at::empty({s.B, s.C}, in.x.options().dtype(acc_scalar_type(dt)));
  Tensor rstd = at::empty({s.B, s.C}, mean.options());
  if (s.N == 0 || s.B == 0) return {out, mean.fill_(NAN), rstd.fill_(NAN)};
  FA_DISPATCH(dt, "fa_ema_core_combine", [&] {
    using A = acc_t<scalar_t>;
    std::vector<A> a1(static_cast<size_t>(s.cg));
    softmax(in.gb.const_data_ptr<A>(), a1.data(), s.cg);
    auto run = in.fmt == at::MemoryFormat::ChannelsLast ? core_combine_cl<scalar_t> : core_combine_nchw<scalar_t>;
    run(in.x.const_data_ptr<scalar_t>(), in.x2.const_data_ptr<scalar_t>(), in.hw.const_data_ptr<A>(),
        in.gw.const_data_ptr<A>(), in.gb.const_data_ptr<A>(), a1.data(), out.mutable_data_ptr<scalar_t>(),
        mean.mutable_data_ptr<A>(), rstd.mutable_data_ptr<A>(), s, static_cast<A>(eps));
  });
  return {out, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> ema_core_grads(const Tensor& grad_out, const Tensor& x_in,
                                                                  const Tensor& hw_in, const Tensor& x2_in,
                                                                  const Tensor& gn_weight, const Tensor& gn_bias,
                                                                  const Tensor& mean_in, const Tensor& rstd_in,
                                                                  int64_t groups, double eps) {
  (void)eps;  // the forward's statistics (mean, rstd) are reused
  const CoreInputs in = core_inputs(x_in, hw_in, x2_in, gn_weight, gn_bias, groups);
  const Geom& s = in.s;
  const auto dt = in.x.scalar_type();
  const auto acc = acc_scalar_type(dt);
  TORCH_CHECK(grad_out.sizes() == x_in.sizes(), "fused_attn (cpu): grad_out must have x's shape");
  TORCH_CHECK(mean_in.numel() == s.B * s.C && rstd_in.numel() == s.B * s.C,
              "fused_attn (cpu): mean, rstd must be [B, C]");
  const Tensor g = dense(grad_out, in.fmt, dt);
  const Tensor mean = small_acc(mean_in, dt), rstd = small_acc(rstd_in, dt);
  Tensor grad_x = empty_4d(in.x.sizes(), in.x, in.fmt, dt);
  Tensor grad_x2 = empty_4d(in.x.sizes(), in.x, in.fmt, dt);
  Tensor grad_hw = at::zeros({s.B, s.C, s.H + s.W}, in.x.options().dtype(acc));
  Tensor gn_part = at::zeros({2, s.B * s.G, s.cg}, in.x.options().dtype(acc));  // per-tile (weight, bias) grads
  if (s.N > 0) {
    FA_DISPATCH(dt, "fa_ema_core_grads", [&] {
      using A = acc_t<scalar_t>;
      std::vector<A> a1(static_cast<size_t>(s.cg));
      softmax(in.gb.const_data_ptr<A>(), a1.data(), s.cg);
      auto run = in.fmt == at::MemoryFormat::ChannelsLast ? core_grads_cl<scalar_t> : core_grads_nchw<scalar_t>;
      run(g.const_data_ptr<scalar_t>(), in.x.const_data_ptr<scalar_t>(), in.x2.const_data_ptr<scalar_t>(),
          in.hw.const_data_ptr<A>(), in.gw.const_data_ptr<A>(), in.gb.const_data_ptr<A>(), a1.data(),
          mean.const_data_ptr<A>(), rstd.const_data_ptr<A>(), grad_x.mutable_data_ptr<scalar_t>(),
          grad_x2.mutable_data_ptr<scalar_t>(), grad_hw.mutable_data_ptr<A>(), gn_part.mutable_data_ptr<A>(), s);
    });
  }
  // GroupNorm affine gradients: per-tile partials added in tile order (deterministic).
  Tensor grad_gw = at::empty({s.cg}, gn_part.options()), grad_gb = at::empty({s.cg}, gn_part.options());
  AT_DISPATCH_FLOATING_TYPES(acc, "fa_ema_gn_grads", [&] {
    const scalar_t* part = gn_part.const_data_ptr<scalar_t>();
    sum_partials(part, grad_gw.mutable_data_ptr<scalar_t>(), 1, s.B * s.G, s.cg);
    sum_partials(part + s.B * s.G * s.cg, grad_gb.mutable_data_ptr<scalar_t>(), 1, s.B * s.G, s.cg);
  });
  // grad_x2 goes back in x2's own dtype and layout (a copy when either differs from x's; autocast can hand
  // the op a bf16 x2 beside an fp32 x)
  return {grad_x, grad_hw.to(hw_in.scalar_type()), grad_x2.to(x2_in.scalar_type()).contiguous(format_of(x2_in)),
          grad_gw.to(gn_weight.scalar_type()), grad_gb.to(gn_bias.scalar_type())};
}

}  // namespace FA_ISA
}  // namespace cpu
}  // namespace fa
FA_ISA_END

#if FA_ISA_BASE
#define EMA_CORE_OPS(X) X(ema_core_combine) X(ema_core_grads)
FA_REGISTER(EMA_CORE_OPS)
#endif
