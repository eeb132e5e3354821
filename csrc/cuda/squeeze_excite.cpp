// CUDA bindings of the squeeze_excite family (kernels: fa_hw_sum of squeeze_excite_kernels.cu and the shared
// elementwise map fa_gate_map of apply_gates_kernels.cu; math: fused_attn/backends/reference/squeeze_excite.py).
// Same outputs as
// csrc/cpu/squeeze_excite.cpp: [B, C] sums in the accumulation dtype, 4-D results in x's layout and dtype.
#include "binding.h"

namespace fa {
namespace cuda {
namespace {

// [B, C] = sum_hw a (* m) / divisor, accumulation dtype; m is read in a's layout.
Tensor hw_sum(const Tensor& a_in, const Tensor& m_in, double divisor) {
  check_4d(a_in, "x");
  const c10::DeviceGuard guard(a_in.device());
  const auto fmt = format_of(a_in);
  const auto dt = a_in.scalar_type();
  const int64_t B = a_in.size(0), C = a_in.size(1), N = a_in.size(2) * a_in.size(3);
  const Tensor a = dense(a_in, fmt, dt);
  Tensor m;
  if (m_in.defined()) {
    check_same_device(a_in, m_in, "grad_y");
    TORCH_CHECK(m_in.sizes() == a_in.sizes(), "fused_attn (cuda): grad_y must have x's shape ", a_in.sizes(), ", got ",
                m_in.sizes());
    m = dense(m_in, fmt, dt);
  }
  const auto acc = a.options().dtype(acc_scalar_type(dt));
  Tensor sums = at::empty({B, C}, acc);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  Tensor scratch = at::empty({fa_hw_sum_scratch(dtype_code(dt), cl, B, C, N)}, acc);
  check_launch(fa_hw_sum(dtype_code(dt), cl, a.const_data_ptr(), cptr(m), sums.mutable_data_ptr(),
                         scratch.mutable_data_ptr(), B, C, N, divisor, current_stream(a)),
               "hw_sum");
  return sums;
}

// out = (in * scale[b, c]) + shift[b, c] / shift_div in like's layout (in optional), see fa_gate_map.
Tensor scale_shift(const Tensor& like, const Tensor& in_t, const Tensor& scale_t, const Tensor& shift_t,
                   double shift_div, bool reverse) {
  check_4d(like, "x");
  const c10::DeviceGuard guard(like.device());
  const auto fmt = format_of(like);
  const auto dt = like.scalar_type();
  const int64_t B = like.size(0), C = like.size(1), N = like.size(2) * like.size(3);
  Tensor in, scale, shift;
  if (in_t.defined()) {
    check_same_device(like, in_t, "grad_y");
    TORCH_CHECK(in_t.sizes() == like.sizes(), "fused_attn (cuda): grad_y must have x's shape ", like.sizes(), ", got ",
                in_t.sizes());
    in = dense(in_t, fmt, dt);
  }
  if (scale_t.defined()) {
    check_same_device(like, scale_t, "s");
    scale = small_acc(scale_t, dt);
    check_numel(scale, B * C, "the gate s", "[B, C]");
  }
  if (shift_t.defined()) {
    check_same_device(like, shift_t, "grad");
    shift = small_acc(shift_t, dt);
    check_numel(shift, B * C, "the channel gradient", "[B, C]");
  }
  Tensor out = empty_4d(like.sizes(), like, fmt, dt);
  fa_gate_map_args args = {};
  args.in = cptr(in);
  args.scale = cptr(scale);
  args.shift = cptr(shift);
  args.shift_div = shift_div;
  args.out = out.mutable_data_ptr();
  args.reverse = reverse;
  check_launch(fa_gate_map(dtype_code(dt), fmt == at::MemoryFormat::ChannelsLast, args, B, C, N, current_stream(like)),
               "gate_map");
  return out;
}

double hw_of(const Tensor& x) {
  return static_cast<double>(x.size(2) * x.size(3));
}

// p = mean_hw x
Tensor channel_squeeze_reduce(const Tensor& x) {
  check_4d(x, "x");
  return hw_sum(x, Tensor(), hw_of(x));
}

// grad_x = grad[b, c] / HW at every pixel (write-only)
Tensor channel_squeeze_grad_input(const Tensor& grad, const Tensor& x) {
  check_4d(x, "x");
  return scale_shift(x, Tensor(), Tensor(), grad, hw_of(x), false);
}

// y = x * s[b, c]; walks x backwards (channel_squeeze_reduce just read it forwards)
Tensor channel_scale(const Tensor& x, const Tensor& s) {
  check_4d(x, "x");
  return scale_shift(x, x, s, Tensor(), 1.0, true);
}

// s = gate(z) in ATen: sigmoid | hardsigmoid.
Tensor gate_values(const Tensor& z, c10::string_view gate) {
  if (gate == "sigmoid") return at::sigmoid(z);
  if (gate == "hardsigmoid") return at::hardsigmoid(z);
  TORCH_CHECK(false, "fused_attn (cuda): unknown gate '", std::string(gate), "'; expected sigmoid, hardsigmoid");
}

// The SE MLP on the pooled descriptors, in ATen (cuBLAS): [B, Cr] and [B, C] rows are too few for a kernel.
Tensor mlp_layer(const Tensor& in, const Tensor& w, const std::optional<Tensor>& bias, int64_t rows, int64_t cols,
                 const char* name) {
  TORCH_CHECK(w.numel() == rows * cols && w.size(0) == rows, "fused_attn (cuda): ", name, " must be [", rows, ", ",
              cols, "], got ", w.sizes());
  check_same_device(in, w, name);
  Tensor out = at::matmul(in, w.to(in.scalar_type()).reshape({rows, cols}).t());
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->numel() == rows, "fused_attn (cuda): the bias after ", name, " must have ", rows, " elements");
    out = out + bias->to(in.scalar_type()).reshape({rows});
  }
  return out;
}

// the whole forward: p = mean_hw x, z1 = w1 p + b1, z2 = w2 act(z1) + b2, y = x * gate(z2). Two kernel passes
// over x around the MLP (a single-pass, L2-resident schedule is left for a GPU session; see docs/cuda.md).
std::tuple<Tensor, Tensor, Tensor, Tensor> squeeze_excite_combine(const Tensor& x, const Tensor& w1,
                                                                  const std::optional<Tensor>& b1, const Tensor& w2,
                                                                  const std::optional<Tensor>& b2, c10::string_view act,
                                                                  c10::string_view gate) {
  check_4d(x, "x");
  const int64_t C = x.size(1), Cr = w1.size(0);
  const Tensor pooled = hw_sum(x, Tensor(), hw_of(x));
  const Tensor z1 = mlp_layer(pooled, w1, b1, Cr, C, "w1");
  Tensor hidden;
  if (act == "relu") hidden = at::relu(z1);
  else if (act == "hardswish") hidden = at::hardswish(z1);
  else if (act == "silu") hidden = at::silu(z1);
  else
    TORCH_CHECK(false, "fused_attn (cuda): unknown activation '", std::string(act),
                "'; expected relu, hardswish, silu");
  const Tensor z2 = mlp_layer(hidden, w2, b2, C, Cr, "w2");
  const Tensor s = gate_values(z2, gate);
  return {scale_shift(x, x, s, Tensor(), 1.0, true), pooled, z1, z2};
}

// the whole ECA forward: p = mean_hw x, z[b, c] = sum_j w[j] p[b, c + j - pad] (zero padding, or wrapping
// modulo C when circular), y = x * gate(z). The k-tap conv across the channels runs in ATen on the [B, C] means,
// as fused_attn/_eca.py writes it; two kernel passes over x around it.
std::tuple<Tensor, Tensor, Tensor> eca_combine(const Tensor& x, const Tensor& weight, bool circular,
                                               c10::string_view gate) {
  check_4d(x, "x");
  check_same_device(x, weight, "weight");
  const int64_t k = weight.numel(), C = x.size(1), pad = (k - 1) / 2;
  TORCH_CHECK(k % 2 == 1, "fused_attn (cuda): the ECA weight must have an odd number of taps, got ", k);
  const Tensor pooled = hw_sum(x, Tensor(), hw_of(x));
  Tensor padded;
  if (circular) {
    const Tensor idx = at::remainder(at::arange(-pad, C + pad, pooled.options().dtype(at::kLong)), C);
    padded = pooled.index_select(1, idx);
  } else {
    padded = at::constant_pad_nd(pooled, {pad, pad}, 0);
  }
  const Tensor z = at::conv1d(padded.unsqueeze(1), weight.to(pooled.scalar_type()).reshape({1, 1, k})).squeeze(1);
  const Tensor s = gate_values(z, gate);
  return {scale_shift(x, x, s, Tensor(), 1.0, true), pooled, z};
}

// the whole ESE forward: p = mean_hw x, z = weight p + bias (one C x C layer in ATen), y = x * gate(z)
std::tuple<Tensor, Tensor, Tensor> ese_combine(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                                               c10::string_view gate) {
  check_4d(x, "x");
  const int64_t C = x.size(1);
  const Tensor pooled = hw_sum(x, Tensor(), hw_of(x));
  const Tensor z = mlp_layer(pooled, weight, bias, C, C, "weight");
  const Tensor s = gate_values(z, gate);
  return {scale_shift(x, x, s, Tensor(), 1.0, true), pooled, z};
}

// grad_s = sum_hw grad_y * x
Tensor squeeze_excite_grad_gate(const Tensor& grad_y, const Tensor& x) {
  check_4d(x, "x");
  TORCH_CHECK(grad_y.defined(), "fused_attn (cuda): grad_y is undefined");
  return hw_sum(x, grad_y, 1.0);
}

// grad_x = grad_y * s + grad_pooled / HW; walks grad_y backwards (squeeze_excite_grad_gate just read it forwards)
Tensor squeeze_excite_grad_input(const Tensor& grad_y, const Tensor& x, const Tensor& s, const Tensor& grad_pooled) {
  check_4d(x, "x");
  TORCH_CHECK(grad_y.defined(), "fused_attn (cuda): grad_y is undefined");
  return scale_shift(x, grad_y, s, grad_pooled, hw_of(x), true);
}

}  // namespace
}  // namespace cuda
}  // namespace fa

TORCH_LIBRARY_IMPL(FA_CUDA_LIBRARY, FA_CUDA_KEY, m) {
  m.impl("channel_squeeze_reduce", &fa::cuda::channel_squeeze_reduce);
  m.impl("channel_squeeze_grad_input", &fa::cuda::channel_squeeze_grad_input);
  m.impl("channel_scale", &fa::cuda::channel_scale);
  m.impl("squeeze_excite_combine", &fa::cuda::squeeze_excite_combine);
  m.impl("squeeze_excite_grad_gate", &fa::cuda::squeeze_excite_grad_gate);
  m.impl("squeeze_excite_grad_input", &fa::cuda::squeeze_excite_grad_input);
  m.impl("eca_combine", &fa::cuda::eca_combine);
  m.impl("ese_combine", &fa::cuda::ese_combine);
}
