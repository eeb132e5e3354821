// CUDA bindings of dual_attention (math: fused_attn/backends/reference/dual_attention.py). Same outputs as
// csrc/cpu/dual_attention.cpp, built from the shared launchers of apply_gates_kernels.cu (no kernel of its own):
//   dual_attention_reduce(x, ws)
//       -> (pooled = mean_p x [B, C], logit = sum_c ws[c] x [B, H, W]), both acc: one fa_tile_sums over x (the
//          row sums give one, the column sums weighted by ws the other) + ordered merges (fa_merge_partials)
//   dual_attention_grad_input(g, x, channel, spatial, ws, grad_logit, grad_pooled)
//       -> (grad_x = g channel spatial + ws[c] grad_logit[b, p] + grad_pooled / HW like x: one fa_gate_map
//          reading g; grad_ws = sum_{b, p} x grad_logit [C] acc: one fa_tile_sums reading x)
// The op's other two passes are of the apply_gates family (csrc/cuda/apply_gates.cpp): apply_gates_combine and
// apply_gates_grad_gates.
#include "binding.h"

#include <limits>

namespace fa {
namespace cuda {
namespace {

// [B, n] copies of the [n] vector v in the accumulation dtype (a per-image gate for fa_tile_sums).
Tensor per_image(const Tensor& v, int64_t B, at::ScalarType dt) {
  return small_acc(v, dt).reshape({1, -1}).expand({B, -1}).contiguous();
}

// out[i] = sum_k part[k, i] in k order, into `out` (acc, [n])
void merge_rows(const Tensor& part, int64_t K, int64_t n, Tensor& out, int code, cudaStream_t s) {
  check_launch(fa_merge_partials(code, dtype_code(out.scalar_type()), part.const_data_ptr(), out.mutable_data_ptr(), 1,
                                 K, n, fa_merge_rows(n, 1.0), s),
               "dual_attention_grad_input (merge)");
}

std::tuple<Tensor, Tensor> dual_attention_reduce(const Tensor& x_in, const Tensor& ws) {
  check_4d(x_in, "x");
  check_same_device(x_in, ws, "ws");
  const c10::DeviceGuard guard(x_in.device());
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const int code = dtype_code(dt);
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3), N = H * W;
  check_numel(ws, C, "ws", "[C]");
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const Tensor x = dense(x_in, fmt, dt);
  const Tensor w = per_image(ws, B, dt);  // NCHW: a row gate (rows = channels); channels_last: a column gate
  const auto acc = x.options().dtype(acc_scalar_type(dt));
  Tensor pooled = at::empty({B, C}, acc), logit = at::empty({B, H, W}, acc);
  if (B * C * N == 0) {
    pooled.fill_(N == 0 ? std::numeric_limits<double>::quiet_NaN() : 0.0);  // mean of nothing, as torch.mean
    logit.zero_();
    return {pooled, logit};
  }
  const int64_t R = cl ? N : C, L = cl ? C : N;
  const fa_tile_geom geo = fa_tile_geometry(code, R, L);
  Tensor row_part = at::empty({B, geo.col_tiles, R}, acc), col_part = at::empty({B, geo.row_chunks, L}, acc);
  const cudaStream_t stream = current_stream(x);
  fa_tile_sums_args sums = {};
  sums.a = x.const_data_ptr();
  (cl ? sums.col_gate : sums.row_gate) = w.const_data_ptr();
  sums.row_part = row_part.mutable_data_ptr();
  sums.col_part = col_part.mutable_data_ptr();
  check_launch(fa_tile_sums(code, sums, B, R, L, stream), "dual_attention_reduce");
  // NCHW: row sums (over pixels) = pooled * N, column sums (over channels, weighted by ws) = logit; channels_last:
  // row sums (over channels, weighted by ws) = logit, column sums (over pixels) = pooled * N.
  auto merge = [&](const Tensor& part, int64_t K, int64_t n, double divisor, Tensor& out) {
    check_launch(fa_merge_partials(code, dtype_code(out.scalar_type()), part.const_data_ptr(), out.mutable_data_ptr(),
                                   B, K, n, fa_merge_rows(n, divisor), stream),
                 "dual_attention_reduce (merge)");
  };
  merge(row_part, geo.col_tiles, R, cl ? 1.0 : static_cast<double>(N), cl ? logit : pooled);
  merge(col_part, geo.row_chunks, L, cl ? static_cast<double>(N) : 1.0, cl ? pooled : logit);
  return {pooled, logit};
}

std::tuple<Tensor, Tensor> dual_attention_grad_input(const Tensor& grad_out, const Tensor& x_in, const Tensor& channel,
                                                     const Tensor& spatial, const Tensor& ws, const Tensor& grad_logit,
                                                     const Tensor& grad_pooled) {
  check_4d(x_in, "x");
  check_same_device(x_in, grad_out, "grad_out");
  TORCH_CHECK(grad_out.sizes() == x_in.sizes(), "fused_attn (cuda): grad_out must have x's shape ", x_in.sizes(),
              ", got ", grad_out.sizes());
  check_same_device(x_in, channel, "channel");
  check_same_device(x_in, spatial, "spatial");
  check_same_device(x_in, ws, "ws");
  check_same_device(x_in, grad_logit, "grad_logit");
  check_same_device(x_in, grad_pooled, "grad_pooled");
  const c10::DeviceGuard guard(x_in.device());
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const int code = dtype_code(dt);
  const int64_t B = x_in.size(0), C = x_in.size(1), N = x_in.size(2) * x_in.size(3);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const Tensor x = dense(x_in, fmt, dt), g = dense(grad_out, fmt, dt);
  const Tensor ch = small_acc(channel, dt), sp = small_acc(spatial, dt), w = small_acc(ws, dt);
  const Tensor gl = small_acc(grad_logit, dt), gp = small_acc(grad_pooled, dt);
  check_numel(ch, B * C, "channel", "[B, C]");
  check_numel(gp, B * C, "grad_pooled", "[B, C]");
  check_numel(sp, B * N, "spatial", "[B, H, W]");
  check_numel(gl, B * N, "grad_logit", "[B, H, W]");
  check_numel(w, C, "ws", "[C]");
  const cudaStream_t stream = current_stream(x);
  Tensor grad_x = empty_4d(x_in.sizes(), x_in, fmt, dt);
  fa_gate_map_args map = {};
  map.in = g.const_data_ptr();
  map.scale = ch.const_data_ptr();
  map.spatial = sp.const_data_ptr();
  map.shift = gp.const_data_ptr();
  map.shift_div = static_cast<double>(N);
  map.outer_c = w.const_data_ptr();
  map.outer_p = gl.const_data_ptr();
  map.out = grad_x.mutable_data_ptr();
  check_launch(fa_gate_map(code, cl, map, B, C, N, stream), "dual_attention_grad_input (grad_x)");
  Tensor grad_ws = at::empty({C}, x.options().dtype(acc_scalar_type(dt)));
  if (B * C * N == 0) return {grad_x, grad_ws.zero_()};
  // grad_ws: NCHW rows = channels, summed over pixels with the column gate grad_logit; channels_last columns =
  // channels, summed over pixels with the row gate grad_logit. Partials of every image merged in one ordered sum.
  const int64_t R = cl ? N : C, L = cl ? C : N;
  const fa_tile_geom geo = fa_tile_geometry(code, R, L);
  if (!cl) {
    Tensor part = at::empty({B, geo.col_tiles, C}, gl.options());
    fa_tile_sums_args sums = {};
    sums.a = x.const_data_ptr();
    sums.col_gate = gl.const_data_ptr();
    sums.row_part = part.mutable_data_ptr();
    check_launch(fa_tile_sums(code, sums, B, R, L, stream), "dual_attention_grad_input (grad_ws)");
    merge_rows(part, B * geo.col_tiles, C, grad_ws, code, stream);
  } else {
    Tensor part = at::empty({B, geo.row_chunks, C}, gl.options());
    fa_tile_sums_args sums = {};
    sums.a = x.const_data_ptr();
    sums.row_gate = gl.const_data_ptr();
    sums.col_part = part.mutable_data_ptr();
    check_launch(fa_tile_sums(code, sums, B, R, L, stream), "dual_attention_grad_input (grad_ws)");
    merge_rows(part, B * geo.row_chunks, C, grad_ws, code, stream);
  }
  return {grad_x, grad_ws};
}

}  // namespace
}  // namespace cuda
}  // namespace fa

TORCH_LIBRARY_IMPL(FA_CUDA_LIBRARY, FA_CUDA_KEY, m) {
  m.impl("dual_attention_reduce", &fa::cuda::dual_attention_reduce);
  m.impl("dual_attention_grad_input", &fa::cuda::dual_attention_grad_input);
}
