// CUDA bindings of apply_gates (kernels: apply_gates_kernels.cu; math: fused_attn/backends/reference/apply_gates.py).
// Same outputs as csrc/cpu/apply_gates.cpp:
//   apply_gates_combine     -> residual + y * channel[b, c] * spatial[b, h, w] in y's layout and dtype: one
//                              fa_gate_map
//   apply_gates_grads       -> (grad_y like y, grad_channel [B, C] in channel's dtype | [0], grad_spatial [B, H, W]
//                              in spatial's dtype | [0]): one fa_tile_sums over (grad_out, y) plus the ordered
//                              merges of the partial sums (fa_merge_partials)
//   apply_gates_grad_gates  -> (grad_channel, grad_spatial) of apply_gates_grads without writing grad_y
//                              (dual_attention's backward)
#include "binding.h"

namespace fa {
namespace cuda {
namespace {

Tensor gate_in(const Tensor& y, const c10::optional<Tensor>& t, int64_t n, const char* name, const char* shape) {
  if (!t.has_value() || !t->defined()) return Tensor();
  check_same_device(y, *t, name);
  Tensor g = small_acc(*t, y.scalar_type());
  check_numel(g, n, name, shape);
  return g;
}

Tensor apply_gates_combine(const Tensor& y_in, const c10::optional<Tensor>& channel,
                           const c10::optional<Tensor>& spatial, const c10::optional<Tensor>& residual) {
  check_4d(y_in, "y");
  const c10::DeviceGuard guard(y_in.device());
  const auto fmt = format_of(y_in);
  const auto dt = y_in.scalar_type();
  const int64_t B = y_in.size(0), C = y_in.size(1), N = y_in.size(2) * y_in.size(3);
  const Tensor y = dense(y_in, fmt, dt);
  const Tensor ch = gate_in(y_in, channel, B * C, "channel", "[B, C]");
  const Tensor sp = gate_in(y_in, spatial, B * N, "spatial", "[B, H, W]");
  Tensor res;
  if (residual.has_value() && residual->defined()) {
    check_same_device(y_in, *residual, "residual");
    TORCH_CHECK(residual->sizes() == y_in.sizes(), "fused_attn (cuda): residual must have y's shape ", y_in.sizes(),
                ", got ", residual->sizes());
    res = dense(*residual, fmt, dt);
  }
  Tensor out = empty_4d(y_in.sizes(), y_in, fmt, dt);
  fa_gate_map_args args = {};
  args.in = y.const_data_ptr();
  args.scale = cptr(ch);
  args.spatial = cptr(sp);
  args.add = cptr(res);
  args.out = out.mutable_data_ptr();
  check_launch(fa_gate_map(dtype_code(dt), fmt == at::MemoryFormat::ChannelsLast, args, B, C, N, current_stream(y)),
               "apply_gates_combine");
  return out;
}

// The backward pass; grad_y is written only when write_grad_y (else returned undefined).
std::tuple<Tensor, Tensor, Tensor> gates_grads(const Tensor& grad_out, const Tensor& y_in,
                                               const c10::optional<Tensor>& channel,
                                               const c10::optional<Tensor>& spatial, bool write_grad_y) {
  check_4d(y_in, "y");
  check_same_device(y_in, grad_out, "grad_out");
  TORCH_CHECK(grad_out.sizes() == y_in.sizes(), "fused_attn (cuda): grad_out must have y's shape ", y_in.sizes(),
              ", got ", grad_out.sizes());
  const c10::DeviceGuard guard(y_in.device());
  const auto fmt = format_of(y_in);
  const auto dt = y_in.scalar_type();
  const int code = dtype_code(dt);
  const int64_t B = y_in.size(0), C = y_in.size(1), H = y_in.size(2), W = y_in.size(3), N = H * W;
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const Tensor y = dense(y_in, fmt, dt);
  const Tensor g = dense(grad_out, fmt, dt);
  const Tensor ch = gate_in(y_in, channel, B * C, "channel", "[B, C]");
  const Tensor sp = gate_in(y_in, spatial, B * N, "spatial", "[B, H, W]");
  const bool hc = ch.defined(), hs = sp.defined();
  Tensor grad_y = write_grad_y ? empty_4d(y_in.sizes(), y_in, fmt, dt) : Tensor();
  Tensor grad_channel = hc ? at::empty({B, C}, y.options().dtype(channel->scalar_type())) : y.new_empty({0});
  Tensor grad_spatial = hs ? at::empty({B, H, W}, y.options().dtype(spatial->scalar_type())) : y.new_empty({0});
  if (hc) dtype_code(channel->scalar_type());
  if (hs) dtype_code(spatial->scalar_type());
  // The matrix per image: NCHW rows = channels, columns = pixels; channels_last the transpose.
  const int64_t R = cl ? N : C, L = cl ? C : N;
  const fa_tile_geom geo = fa_tile_geometry(code, R, L);
  const Tensor& row_gate = cl ? sp : ch;
  const Tensor& col_gate = cl ? ch : sp;
  // the row sums are grad_channel (NCHW) / grad_spatial (channels_last); the column sums the other one
  const bool want_rows = cl ? hs : hc, want_cols = cl ? hc : hs;
  const auto acc = y.options().dtype(acc_scalar_type(dt));
  Tensor row_part = want_rows ? at::empty({B, geo.col_tiles, R}, acc) : Tensor();
  Tensor col_part = want_cols ? at::empty({B, geo.row_chunks, L}, acc) : Tensor();
  const cudaStream_t stream = current_stream(y);
  fa_tile_sums_args sums = {};
  sums.a = g.const_data_ptr();
  sums.m = y.const_data_ptr();
  sums.out = mptr(grad_y);
  sums.row_gate = cptr(row_gate);
  sums.col_gate = cptr(col_gate);
  sums.row_part = mptr(row_part);
  sums.col_part = mptr(col_part);
  check_launch(fa_tile_sums(code, sums, B, R, L, stream), "apply_gates_grads");
  auto merge = [&](const Tensor& part, int64_t K, int64_t n, Tensor& out) {
    check_launch(fa_merge_partials(code, dtype_code(out.scalar_type()), part.const_data_ptr(), out.mutable_data_ptr(),
                                   B, K, n, fa_merge_rows(n, 1.0), stream),
                 "apply_gates_grads (merge)");
  };
  if (N * C > 0) {
    if (want_rows) merge(row_part, geo.col_tiles, R, cl ? grad_spatial : grad_channel);
    if (want_cols) merge(col_part, geo.row_chunks, L, cl ? grad_channel : grad_spatial);
  } else {  // nothing to sum
    if (hc) grad_channel.zero_();
    if (hs) grad_spatial.zero_();
  }
  return {grad_y, grad_channel, grad_spatial};
}

std::tuple<Tensor, Tensor, Tensor> apply_gates_grads(const Tensor& grad_out, const Tensor& y,
                                                     const c10::optional<Tensor>& channel,
                                                     const c10::optional<Tensor>& spatial) {
  return gates_grads(grad_out, y, channel, spatial, true);
}

// -> (grad_channel, grad_spatial) of apply_gates_grads, without writing grad_y (dual_attention's backward).
std::tuple<Tensor, Tensor> apply_gates_grad_gates(const Tensor& grad_out, const Tensor& y, const Tensor& channel,
                                                  const Tensor& spatial) {
  auto grads = gates_grads(grad_out, y, channel, spatial, false);
  return {std::get<1>(grads), std::get<2>(grads)};
}

}  // namespace
}  // namespace cuda
}  // namespace fa

TORCH_LIBRARY_IMPL(FA_CUDA_LIBRARY, FA_CUDA_KEY, m) {
  m.impl("apply_gates_combine", &fa::cuda::apply_gates_combine);
  m.impl("apply_gates_grads", &fa::cuda::apply_gates_grads);
  m.impl("apply_gates_grad_gates", &fa::cuda::apply_gates_grad_gates);
}
