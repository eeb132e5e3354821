// The interface between the torch-free CUDA kernels (csrc/cuda/*_kernels.cu) and their torch bindings
// (csrc/cuda/<family>.cpp): plain C launchers taking raw device pointers, int64 sizes, a dtype code and a
// cudaStream_t; each returns the cudaError_t of its launches (cudaGetLastError after every launch). A pass with a
// kernel of its own has the launcher fa_<pass> (the pass's name in every layer, fused_attn/backends/__init__.py);
// the other passes are built from the shared launchers of the first section.
//
// Conventions (every launcher):
//  * dtype: FA_FLOAT32, FA_FLOAT64, FA_FLOAT16, FA_BFLOAT16 for the big tensors ("T"); "acc" pointers are float,
//    or double when dtype is FA_FLOAT64 (the accumulation type); math runs in acc, one rounding per output.
//  * 4-D tensors [B, C, H, W] are dense in one of two layouts, told by `channels_last` (0: NCHW, 1: NHWC
//    strides); the bindings copy anything else (slices, permutations, a gradient in the other layout) first,
//    as the CPU kernels do. All indexing is 64-bit.
//  * Reductions never use atomics: every sum is computed by one thread / warp / block in an order fixed by the
//    shapes and the dtype alone (two-stage partial sums where a reduction spans blocks), so results are
//    bitwise reproducible run to run.
//  * Zero-size problems launch nothing and return cudaSuccess.
//
// The only non-torch header here is the CUDA runtime API (for cudaError_t and cudaStream_t); the bindings need
// no torch CUDA header (see csrc/cuda/binding.h).
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum fa_dtype { FA_FLOAT32 = 0, FA_FLOAT64 = 1, FA_FLOAT16 = 2, FA_BFLOAT16 = 3 };

// ----------------------------------------------------------------- shared building blocks (apply_gates_kernels.cu)
// Not passes themselves: the passes of several families are built from these three launchers (their bindings
// say which), each taking its tensors in a parameter struct (every pointer optional where it says so: NULL;
// zero-initialise the struct, then set what the call uses).

// The elementwise map shared by apply_gates, squeeze_excite and dual_attention (every term optional):
//   out[b, c, p] = (in[b, c, p] * scale[b, c]) * spatial[b, p] + add[b, c, p] + shift[b, c] / shift_div
//                  + outer_c[c] * outer_p[b, p]                      (dual_attention's grad_x; both or neither)
// in / add / out: T, dense in the layout; scale / shift [B, C], spatial / outer_p [B, H * W], outer_c [C]: acc,
// contiguous. reverse != 0 walks the tensor from its end (a second pass over x then starts on the part of x that
// the first pass left in L2).
typedef struct {
  const void* in;
  const void* scale;
  const void* spatial;
  const void* add;
  const void* shift;
  double shift_div;  // with shift: its divisor (non-zero)
  const void* outer_c;
  const void* outer_p;
  void* out;
  int reverse;
} fa_gate_map_args;
cudaError_t fa_gate_map(int dtype, int channels_last, fa_gate_map_args args, int64_t B, int64_t C, int64_t N,
                        cudaStream_t stream);

// Per image b a matrix of R rows x L contiguous columns (NCHW: rows = channels, columns = pixels; channels_last:
// rows = pixels, columns = channels), e = a * m (m optional):
//   out[b, r, l]        = a * row_gate[b, r] * col_gate[b, l]                     (optional, T)
//   row_part[b, t, r]   = sum_{l in column tile t} e * col_gate[b, l]              (optional, acc)
//   col_part[b, k, r]   = sum_{r in row chunk k} e * row_gate[b, r]                (optional, acc; index l)
// gates are acc and optional (1). Column tiles and row chunks: fa_tile_geometry. The partials are added by
// fa_merge_partials.
typedef struct {
  const void* a;
  const void* m;
  void* out;
  const void* row_gate;
  const void* col_gate;
  void* row_part;
  void* col_part;
} fa_tile_sums_args;
cudaError_t fa_tile_sums(int dtype, fa_tile_sums_args args, int64_t nb, int64_t R, int64_t L, cudaStream_t stream);

// Where fa_merge_partials writes merged value (b, i), b < nb, i < n, and what it divides it by:
//   out[(b / b_inner) ob1 + (b % b_inner) ob2 + (i / i_inner) os1 + (i % i_inner) os2 + offset]
// fa_merge_rows / fa_merge_strided_rows below build the common cases; set the fields for a transposing write.
typedef struct {
  double divisor;
  int64_t b_inner, ob1, ob2, i_inner, os1, os2, offset;
} fa_merge_out;

// out[o(b, i)] = (sum_{k < K} part[(b K + k) n + i]) / divisor, added in k order; part acc (of in_dtype), out of
// out_dtype.
cudaError_t fa_merge_partials(int in_dtype, int out_dtype, const void* part, void* out, int64_t nb, int64_t K,
                              int64_t n, fa_merge_out where, cudaStream_t stream);

// ----------------------------------------------------------------- squeeze_excite (squeeze_excite_kernels.cu)
// sums[b, c] = (sum_p a[b, c, p] * m[b, c, p]) / divisor (m optional), acc [B, C]; channel_squeeze_reduce
// (divisor H W) and squeeze_excite_grad_gate (sum_p grad_y x). scratch: fa_hw_sum_scratch(...) acc elements.
cudaError_t fa_hw_sum(int dtype, int channels_last, const void* a, const void* m, void* sums, void* scratch, int64_t B,
                      int64_t C, int64_t N, double divisor, cudaStream_t stream);

// ------------------------------------------------------------------------- channel_pool (channel_pool_kernels.cu)
// stat_max / stat_mean / stat_std: output plane of each statistic (-1: not requested), K planes in all.
// fa_channel_pool_reduce: out [B, K, H, W] (T, in the layout), argmax [B, N] int32, moments [B, 2, N] (mean, std)
// acc.
cudaError_t fa_channel_pool_reduce(int dtype, int channels_last, const void* x, void* out, int32_t* argmax,
                                   void* moments, int64_t B, int64_t C, int64_t N, int K, int stat_max, int stat_mean,
                                   int stat_std, cudaStream_t stream);
// grad_x = [c == argmax] g_max + g_mean / C + g_std (x - mean) / ((C - 1) std)  (std term 0 where std == 0);
// grad [B, K, H, W] T in the layout.
cudaError_t fa_channel_pool_grad_input(int dtype, int channels_last, const void* grad, const void* x,
                                       const int32_t* argmax, const void* moments, void* grad_x, int64_t B, int64_t C,
                                       int64_t N, int K, int stat_max, int stat_mean, int stat_std,
                                       cudaStream_t stream);

// --------------------------------------------------------------------- ema_strip_pool (ema_strip_pool_kernels.cu)
// out [B, C, H + W] T (row means, then column means); scratch: acc, fa_strip_pool_scratch(...) elements (the
// partial sums of the two-stage reductions).
cudaError_t fa_ema_strip_pool_reduce(int dtype, int channels_last, const void* x, void* out, void* scratch, int64_t B,
                                     int64_t C, int64_t H, int64_t W, cudaStream_t stream);
// grad_x[b, c, i, j] = grad[b, c, i] / W + grad[b, c, H + j] / H; grad acc [B, C, H + W] contiguous.
cudaError_t fa_ema_strip_pool_grad_input(int dtype, int channels_last, const void* grad, void* grad_x, int64_t B,
                                         int64_t C, int64_t H, int64_t W, cudaStream_t stream);

// ------------------------------------------------------------------------------- ema_core (ema_core_kernels.cu)
// The EMA core (fused_attn/backends/reference/ema_core.py): sig_hw = sigmoid(hw) [B, C, H + W] acc,
// a1 = softmax(gn_bias) [cg] acc, gn_w / gn_b [cg] acc; x, x2 (and grad, outputs) T in the layout.
// fa_ema_core_combine -> out, mean / rstd [B, C] acc.
cudaError_t fa_ema_core_combine(int dtype, int channels_last, const void* x, const void* x2, const void* sig_hw,
                                const void* gn_w, const void* gn_b, const void* a1, void* out, void* mean, void* rstd,
                                int64_t B, int64_t C, int64_t G, int64_t H, int64_t W, double eps, cudaStream_t stream);
// fa_ema_core_grads -> grad_x, grad_x2 (T, the layout), grad_hw [B, C, H + W] acc, gn_part [2][B G][cg] acc (per-tile
// GroupNorm weight / bias gradients, summed by fa_merge_partials); pix: acc scratch of 2 B G H W elements.
cudaError_t fa_ema_core_grads(int dtype, int channels_last, const void* grad, const void* x, const void* x2,
                              const void* sig_hw, const void* gn_w, const void* gn_b, const void* a1, const void* mean,
                              const void* rstd, void* grad_x, void* grad_x2, void* grad_hw, void* gn_part, void* pix,
                              int64_t B, int64_t C, int64_t G, int64_t H, int64_t W, cudaStream_t stream);

// ------------------------------------------------------------------------------------- simam (simam_kernels.cu)
// SimAM per (b, c) plane of N = H W pixels: fa_simam_gate -> out (T, the layout) = x sigmoid((x - mu)^2 k + 0.5),
// mean, k = 1 / (4 (sum (x - mu)^2 / (N - 1) + e_lambda)) [B, C] acc. fa_simam_grad_input -> grad_x (T, the layout)
// from grad (T, the layout), x and the saved mean, k.
cudaError_t fa_simam_gate(int dtype, int channels_last, const void* x, void* out, void* mean, void* k, int64_t B,
                          int64_t C, int64_t N, double e_lambda, cudaStream_t stream);
cudaError_t fa_simam_grad_input(int dtype, int channels_last, const void* grad, const void* x, const void* mean,
                                const void* k, void* grad_x, int64_t B, int64_t C, int64_t N, cudaStream_t stream);
// --------------------------------------------------------------------------- coord_gate (coord_gate_kernels.cu)
// mode 0: out = (x * a_w) * a_h; 1 / 2 / 3: out = x * sigmoid / hardsigmoid(a_h + a_w) (2: / 6 as torch on CPU, 3:
// * float32 1/6 as torch on CUDA); skip != 0 adds x. ah / aw acc:
// NCHW [B, C, H] / [B, C, W]; channels_last transposed, [B, H, C] / [B, W, C].
cudaError_t fa_coord_gate_combine(int dtype, int channels_last, int mode, int skip, const void* x, const void* ah,
                                  const void* aw, void* out, int64_t B, int64_t C, int64_t H, int64_t W,
                                  cudaStream_t stream);
// One pass over (grad, x): grad_x (T, the layout); gh acc, complete (NCHW [B, C, H], channels_last [B, H, C]);
// part: acc partials of grad_a_w over fa_coord_geometry(...).chunks row chunks (NCHW [B C][chunks][W], channels_last
// [B][chunks][W][C]), to be added in chunk order (fa_merge_partials).
cudaError_t fa_coord_gate_grads(int dtype, int channels_last, int mode, int skip, const void* grad, const void* x,
                                const void* ah, const void* aw, void* grad_x, void* gh, void* part, int64_t B,
                                int64_t C, int64_t H, int64_t W, cudaStream_t stream);
// ------------------------------------------------------------------- global_context (global_context_kernels.cu)
// fa_global_context_pool_reduce -> ctx [B, C] acc, lse [B] acc (N = H W > 0); weight [C] acc contiguous; scratch:
// fa_global_context_scratch(...) acc elements (per-tile channel sums, maxima and exp sums).
cudaError_t fa_global_context_pool_reduce(int dtype, int channels_last, const void* x, const void* weight, void* ctx,
                                          void* lse, void* scratch, int64_t B, int64_t C, int64_t N,
                                          cudaStream_t stream);
// fa_global_context_pool_grads -> grad_x (T, the layout), grad_weight [C] acc; grad_ctx, ctx [B, C], lse [B],
// weight [C] acc contiguous; scratch: fa_global_context_grads_scratch(...) acc elements (per-tile grad_weight rows).
cudaError_t fa_global_context_pool_grads(int dtype, int channels_last, const void* x, const void* weight,
                                         const void* grad_ctx, const void* ctx, const void* lse, void* grad_x,
                                         void* grad_weight, void* scratch, int64_t B, int64_t C, int64_t N,
                                         cudaStream_t stream);

#ifdef __cplusplus
}  // extern "C"
#endif

// --------------------------------------------------------------------------- geometry shared by both sides
// Pure functions of the shapes and dtype, so the bindings size the partial-sum buffers exactly as the kernels
// fill them.
static inline int64_t fa_dtype_size(int dtype) {
  return dtype == FA_FLOAT64 ? 8 : dtype == FA_FLOAT32 ? 4 : 2;
}
static inline int64_t fa_acc_size(int dtype) {
  return dtype == FA_FLOAT64 ? 8 : 4;
}

// fa_merge_partials into row b of a plain row-major [nb][n] out: out[b n + i] (/ divisor).
static inline fa_merge_out fa_merge_rows(int64_t n, double divisor) {
  fa_merge_out o = {divisor, 1, n, 0, n, 0, 1, 0};
  return o;
}
// ... into out[b row_stride + offset + i] (/ divisor): a slice of each row of a wider out.
static inline fa_merge_out fa_merge_strided_rows(int64_t n, int64_t row_stride, int64_t offset, double divisor) {
  fa_merge_out o = {divisor, 1, row_stride, 0, n, 0, 1, offset};
  return o;
}

// fa_tile_sums: a block of 256 threads = TY rows x TX threads; each thread owns VEC = 16 / sizeof(T) consecutive
// columns (one 16-byte load). Column tile = TX VEC columns, row chunk = 8 TY rows.
typedef struct {
  int64_t vec, tx, ty, tile_cols, chunk_rows, col_tiles, row_chunks;
} fa_tile_geom;

static inline fa_tile_geom fa_tile_geometry(int dtype, int64_t R, int64_t L) {
  fa_tile_geom g;
  g.vec = 16 / fa_dtype_size(dtype);
  const int64_t need = (L + g.vec - 1) / g.vec;
  g.tx = 1;
  while (g.tx < 32 && g.tx < need) g.tx *= 2;
  g.ty = 256 / g.tx;
  g.tile_cols = g.tx * g.vec;
  g.chunk_rows = 8 * g.ty;
  g.col_tiles = L > 0 ? (L + g.tile_cols - 1) / g.tile_cols : 0;
  g.row_chunks = R > 0 ? (R + g.chunk_rows - 1) / g.chunk_rows : 0;
  return g;
}

// fa_ema_strip_pool_reduce's scratch (acc elements). NCHW: fa_tile_sums over each (b, c) plane (R = H,
// L = W): row partials [B C][column tiles][H] + column partials [B C][row chunks][W]. channels_last: blocks of
// FA_STRIP_POOL_ROWS image rows: column partials [B][row blocks][W][C] (the row sums are complete in a block).
#define FA_STRIP_POOL_ROWS 8
static inline int64_t fa_strip_pool_scratch(int dtype, int channels_last, int64_t B, int64_t C, int64_t H, int64_t W) {
  if (channels_last) return B * ((H + FA_STRIP_POOL_ROWS - 1) / FA_STRIP_POOL_ROWS) * W * C;
  const fa_tile_geom g = fa_tile_geometry(dtype, H, W);
  return B * C * (g.col_tiles * H + g.row_chunks * W);
}

// fa_ema_core_grads's per-pixel scratch (acc elements): sig(w) and dw of every (b, group) tile.
static inline int64_t fa_ema_pixel_scratch(int64_t B, int64_t G, int64_t H, int64_t W) {
  return 2 * B * G * H * W;
}

// fa_hw_sum's scratch (acc elements): NCHW row partials [B][column tiles][C] (R = C, L = N); channels_last column
// partials [B][row chunks][C] (R = N, L = C).
static inline int64_t fa_hw_sum_scratch(int dtype, int channels_last, int64_t B, int64_t C, int64_t N) {
  const fa_tile_geom g = channels_last ? fa_tile_geometry(dtype, N, C) : fa_tile_geometry(dtype, C, N);
  const int64_t parts = channels_last ? g.row_chunks : g.col_tiles;
  return B * C * (parts > 0 ? parts : 1);  // N = 0 uses B C elements of zeros
}

// fa_coord_gate_grads's geometry: tx lanes per thread row (NCHW: along W; channels_last: along C), row chunks
// (NCHW: 4 * (256 / tx) rows; channels_last: 4 rows) and channel tiles (channels_last).
typedef struct {
  int64_t tx, chunks, ctiles;
} fa_coord_geom;

static inline fa_coord_geom fa_coord_geometry(int channels_last, int64_t C, int64_t H, int64_t W) {
  fa_coord_geom g;
  const int64_t along = channels_last ? C : W;
  g.tx = 1;
  while (g.tx < 32 && g.tx < along) g.tx *= 2;
  const int64_t rows = channels_last ? 4 : 4 * (256 / g.tx);
  g.chunks = H > 0 ? (H + rows - 1) / rows : 0;
  g.ctiles = channels_last ? (C + g.tx - 1) / g.tx : 1;
  return g;
}

// global_context: pixel tiles of one block (NCHW 64: 4 thread rows x 64 pixels; channels_last 32: 8 warps x 4
// pixels), and the scratch of its two launchers (acc elements).
#define FA_GC_TILE_NCHW 64
#define FA_GC_TILE_CL 32
static inline int64_t fa_global_context_tiles(int channels_last, int64_t N) {
  const int64_t tile = channels_last ? FA_GC_TILE_CL : FA_GC_TILE_NCHW;
  return (N + tile - 1) / tile;
}
static inline int64_t fa_global_context_scratch(int channels_last, int64_t B, int64_t C, int64_t N) {
  return B * fa_global_context_tiles(channels_last, N) * (C + 2);
}
static inline int64_t fa_global_context_grads_scratch(int channels_last, int64_t B, int64_t C, int64_t N) {
  const int64_t n = B * fa_global_context_tiles(channels_last, N) * C;
  return n > 0 ? n : 1;
}
