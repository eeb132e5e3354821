// CUDA passes of the squeeze_excite family (fused_attn/backends/reference/squeeze_excite.py is the oracle; the
// bindings: squeeze_excite.cpp):
//
//   channel_squeeze_reduce      p[b, c] = mean_hw x                    fa_hw_sum (divisor H W)
//   squeeze_excite_grad_gate    grad_s[b, c] = sum_hw grad_y x         fa_hw_sum (a = x, m = grad_y)
//   channel_squeeze_grad_input  grad_x = grad[b, c] / HW               fa_gate_map (shift only, write-only pass)
//   channel_scale               y = x s[b, c]                          fa_gate_map (scale)
//   squeeze_excite_grad_input   grad_x = grad_y s + grad_pooled / HW   fa_gate_map (scale + shift)
//
// The MLP between the passes runs in PyTorch (fused_attn/_mlp.py), so the forward is channel_squeeze_reduce
// (reads x), MLP, channel_scale (reads x, writes y) and the backward squeeze_excite_grad_gate (reads grad_y, x),
// MLP backward, squeeze_excite_grad_input (reads grad_y, writes grad_x): 2 reads + 1 write forward, 3 reads +
// 1 write backward. The second pass of each walks the
// tensor from its end (fa_gate_map's `reverse`), so it starts on the samples the first pass read last, still in
// L2 (50 MB on an H100: a per-sample tiling without moving the MLP into the kernels).
//
// fa_hw_sum: per image the NCHW matrix is C rows x N contiguous pixels (the sum is a row sum, complete per column
// tile, then merged over tiles), the channels_last one N rows x C contiguous channels (a column sum per row chunk,
// merged over chunks); both through fa_tile_sums (16-byte loads, fixed-order reductions, no atomics).
#include "kernel_utils.cuh"

extern "C" cudaError_t fa_hw_sum(int dtype, int channels_last, const void* a, const void* m, void* sums, void* scratch,
                                 int64_t B, int64_t C, int64_t N, double divisor, cudaStream_t stream) {
  if (B * C == 0) return cudaSuccess;
  const int acc = dtype == FA_FLOAT64 ? FA_FLOAT64 : FA_FLOAT32;
  if (N == 0) {  // empty sums: 0 / divisor, as torch (NaN for the mean)
    const size_t bytes = static_cast<size_t>(B * C * fa_acc_size(dtype));
    cudaError_t e = cudaMemsetAsync(scratch, 0, bytes, stream);
    if (e != cudaSuccess) return e;
    return fa_merge_partials(dtype, acc, scratch, sums, B * C, 1, 1, fa_merge_rows(1, divisor), stream);
  }
  const fa_tile_geom g = channels_last ? fa_tile_geometry(dtype, N, C) : fa_tile_geometry(dtype, C, N);
  if (channels_last) {
    fa_tile_sums_args t = {};
    t.a = a;
    t.m = m;
    t.col_part = scratch;
    cudaError_t e = fa_tile_sums(dtype, t, B, N, C, stream);
    if (e != cudaSuccess) return e;
    return fa_merge_partials(dtype, acc, scratch, sums, B, g.row_chunks, C, fa_merge_rows(C, divisor), stream);
  }
  fa_tile_sums_args t = {};
  t.a = a;
  t.m = m;
  t.row_part = scratch;
  cudaError_t e = fa_tile_sums(dtype, t, B, C, N, stream);
  if (e != cudaSuccess) return e;
  return fa_merge_partials(dtype, acc, scratch, sums, B, g.col_tiles, C, fa_merge_rows(C, divisor), stream);
}
