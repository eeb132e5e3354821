// CUDA bindings of coord_gate (kernels: coord_gate_kernels.cu; math: fused_attn/backends/reference/coord_gate.py).
// Same outputs as csrc/cpu/coord_gate.cpp:
//   coord_gate_combine  -> (x * a_w) * a_h, or x * gate(a_h + a_w), + x when skip; x's layout and dtype: one
//                          fa_coord_gate_combine
//   coord_gate_grads    -> (grad_x like x, grad_a_h [B, C, H] in a_h's dtype, grad_a_w [B, C, W] in a_w's dtype):
//                          one fa_coord_gate_grads over (grad_out, x) plus the ordered merges (fa_merge_partials)
// The gates are read as contiguous acc copies in any floating dtype; channels_last transposes them to [B, H, C] /
// [B, W, C] first (small), so the kernels read them along the contiguous channels.
#include <string>

#include "binding.h"

namespace fa {
namespace cuda {
namespace {

// the kernels' gate mode; hardsigmoid rounds as torch's kernel for the tensors' device (coord_gate_kernels.cu)
int gate_mode(c10::string_view gate, const Tensor& x) {
  const std::string g(gate);
  if (g == "none") return 0;
  if (g == "sigmoid") return 1;
  if (g == "hardsigmoid") return x.is_cuda() ? 3 : 2;
  TORCH_CHECK(false, "fused_attn (cuda): coord_gate gate must be none, sigmoid or hardsigmoid, got ", g);
  return 0;
}

struct Gates {
  Tensor ah, aw;
};

Gates gates_in(const Tensor& x, const Tensor& a_h, const Tensor& a_w, bool cl) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  check_same_device(x, a_h, "a_h");
  check_same_device(x, a_w, "a_w");
  check_numel(a_h, B * C * H, "a_h", "[B, C, H]");
  check_numel(a_w, B * C * W, "a_w", "[B, C, W]");
  dtype_code(a_h.scalar_type());
  dtype_code(a_w.scalar_type());
  const auto acc = acc_scalar_type(x.scalar_type());
  Tensor ah = a_h.reshape({B, C, H}).to(acc), aw = a_w.reshape({B, C, W}).to(acc);
  if (cl) return {ah.transpose(1, 2).contiguous(), aw.transpose(1, 2).contiguous()};
  return {ah.contiguous(), aw.contiguous()};
}

Tensor coord_gate_combine(const Tensor& x_in, const Tensor& a_h, const Tensor& a_w, c10::string_view gate, bool skip) {
  check_4d(x_in, "x");
  const int mode = gate_mode(gate, x_in);
  const c10::DeviceGuard guard(x_in.device());
  const auto fmt = format_of(x_in);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const auto dt = x_in.scalar_type();
  const Tensor x = dense(x_in, fmt, dt);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const Gates gt = gates_in(x, a_h, a_w, cl);
  Tensor out = empty_4d(x.sizes(), x, fmt, dt);
  check_launch(fa_coord_gate_combine(dtype_code(dt), cl, mode, skip, x.const_data_ptr(), gt.ah.const_data_ptr(),
                                     gt.aw.const_data_ptr(), out.mutable_data_ptr(), B, C, H, W, current_stream(x)),
               "coord_gate_combine");
  return out;
}

std::tuple<Tensor, Tensor, Tensor> coord_gate_grads(const Tensor& grad_out, const Tensor& x_in, const Tensor& a_h,
                                                    const Tensor& a_w, c10::string_view gate, bool skip) {
  check_4d(x_in, "x");
  check_same_device(x_in, grad_out, "grad_out");
  TORCH_CHECK(grad_out.sizes() == x_in.sizes(), "fused_attn (cuda): grad_out must have x's shape ", x_in.sizes(),
              ", got ", grad_out.sizes());
  const int mode = gate_mode(gate, x_in);
  const c10::DeviceGuard guard(x_in.device());
  const auto fmt = format_of(x_in);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const auto dt = x_in.scalar_type();
  const int code = dtype_code(dt);
  const Tensor x = dense(x_in, fmt, dt);
  const Tensor g = dense(grad_out, fmt, dt);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const Gates gt = gates_in(x, a_h, a_w, cl);
  const fa_coord_geom geo = fa_coord_geometry(cl, C, H, W);
  const auto acc = x.options().dtype(acc_scalar_type(dt));
  Tensor grad_x = empty_4d(x.sizes(), x, fmt, dt);
  Tensor gh = at::empty({B * C * H}, acc);
  Tensor part = at::empty({B * C * W * geo.chunks}, acc);
  Tensor grad_h = at::empty({B, C, H}, x.options().dtype(a_h.scalar_type()));
  Tensor grad_w = at::empty({B, C, W}, x.options().dtype(a_w.scalar_type()));
  if (x.numel() == 0) {
    grad_h.zero_();
    grad_w.zero_();
    return {grad_x, grad_h, grad_w};
  }
  const cudaStream_t stream = current_stream(x);
  check_launch(fa_coord_gate_grads(code, cl, mode, skip, g.const_data_ptr(), x.const_data_ptr(), gt.ah.const_data_ptr(),
                                   gt.aw.const_data_ptr(), grad_x.mutable_data_ptr(), gh.mutable_data_ptr(),
                                   part.mutable_data_ptr(), B, C, H, W, stream),
               "coord_gate_grads");
  // NCHW: plain rows; channels_last: value (b, i C + c) goes to out[b C n + c n + i] (n = H or W)
  auto where = [&](int64_t n) {
    fa_merge_out o = {1.0, 1, C * n, 0, C, 1, n, 0};
    return cl ? o : fa_merge_rows(n, 1.0);
  };
  const int64_t nb = cl ? B : B * C;
  check_launch(fa_merge_partials(code, dtype_code(a_h.scalar_type()), gh.const_data_ptr(), grad_h.mutable_data_ptr(),
                                 nb, 1, cl ? H * C : H, where(H), stream),
               "coord_gate_grads (merge a_h)");
  check_launch(fa_merge_partials(code, dtype_code(a_w.scalar_type()), part.const_data_ptr(), grad_w.mutable_data_ptr(),
                                 nb, geo.chunks, cl ? W * C : W, where(W), stream),
               "coord_gate_grads (merge a_w)");
  return {grad_x, grad_h, grad_w};
}

}  // namespace
}  // namespace cuda
}  // namespace fa

TORCH_LIBRARY_IMPL(FA_CUDA_LIBRARY, FA_CUDA_KEY, m) {
  m.impl("coord_gate_combine", &fa::cuda::coord_gate_combine);
  m.impl("coord_gate_grads", &fa::cuda::coord_gate_grads);
}
