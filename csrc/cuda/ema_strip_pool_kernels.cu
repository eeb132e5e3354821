// CUDA kernels of ema_strip_pool (fused_attn/backends/reference/ema_strip_pool.py is the oracle).
//
// fa_ema_strip_pool_reduce: pooled[b, c, i] = mean_j x[b, c, i, j], pooled[b, c, H + j] = mean_i x[b, c, i, j]
//   NCHW: fa_tile_sums over each (b, c) plane (rows and columns in one pass) + two ordered merges.
//   channels_last: a block owns (b, a tile of channels, FA_STRIP_POOL_ROWS image rows): lanes over contiguous
//   channels (16-byte loads), thread rows over j; the row sums are complete in the block, the column sums are
//   per-block partials merged in order.
// fa_ema_strip_pool_grad_input: grad_x[b, c, i, j] = grad[b, c, i] / W + grad[b, c, H + j] / H (an elementwise
//   write pass).
#include "kernel_utils.cuh"

namespace fa {
namespace {

constexpr int kThreads = 256;

// ------------------------------------------------------------------------------------------ strip pool (CL)
template <typename T>
__global__ void __launch_bounds__(kThreads)
    strip_pool_cl_kernel(const T* __restrict__ x, T* __restrict__ out, acc_t<T>* __restrict__ part, int64_t B,
                         int64_t C, int64_t H, int64_t W, int tx_n) {
  using A = acc_t<T>;
  constexpr int V = Vec<T>::kN;
  constexpr int R = FA_STRIP_POOL_ROWS;
  __shared__ A red[kThreads * V];
  const int ty_n = kThreads / tx_n, tx = threadIdx.x % tx_n, ty = threadIdx.x / tx_n;
  const int64_t tile_c = static_cast<int64_t>(tx_n) * V, ctiles = ceil_div(C, tile_c), chunks = ceil_div(H, R);
  const int64_t units = B * ctiles * chunks;
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const int64_t ct = u % ctiles, ic = (u / ctiles) % chunks, b = u / (ctiles * chunks);
    const int64_t c0 = ct * tile_c + tx * V, i0 = ic * R;
    const int n = c0 >= C ? 0 : static_cast<int>(C - c0 < V ? C - c0 : V);
    A racc[R][V];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int q = 0; q < V; ++q) racc[r][q] = A(0);
    for (int64_t j = ty; j < W; j += ty_n) {
      A cacc[V];
#pragma unroll
      for (int q = 0; q < V; ++q) cacc[q] = A(0);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (i0 + r < H && n > 0) {
          const T* px = x + ((b * H + i0 + r) * W + j) * C + c0;
          A v[V];
          load_acc<T, V>(px, n, n == V && aligned16(px), v);
#pragma unroll
          for (int q = 0; q < V; ++q) {
            cacc[q] += v[q];
            racc[r][q] += v[q];
          }
        }
      }
      for (int q = 0; q < n; ++q) part[((b * chunks + ic) * W + j) * C + c0 + q] = cacc[q];
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      __syncthreads();
#pragma unroll
      for (int q = 0; q < V; ++q) red[ty * tile_c + tx * V + q] = racc[r][q];
      __syncthreads();
      const int64_t c = ct * tile_c + threadIdx.x;
      if (threadIdx.x < tile_c && c < C && i0 + r < H) {
        A s = A(0);
        for (int y = 0; y < ty_n; ++y) s += red[y * tile_c + threadIdx.x];
        out[(b * C + c) * (H + W) + i0 + r] = from_acc<T>(s / A(W));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------- strip unpool
template <typename T, bool CL>
__global__ void __launch_bounds__(kThreads)
    strip_unpool_kernel(const acc_t<T>* __restrict__ g, T* __restrict__ gx, int64_t C, int64_t H, int64_t W, int64_t L,
                        int64_t vpr, int64_t total) {
  using A = acc_t<T>;
  constexpr int V = Vec<T>::kN;
  const int64_t HW = H + W;
  for (int64_t v = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; v < total;
       v += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t row = v / vpr, l0 = (v - row * vpr) * V;
    const int n = static_cast<int>(L - l0 < V ? L - l0 : V);
    A o[V];
    if (CL) {  // row = (b H + i) W + j, elements c = l0 ..
      const int64_t j = row % W, i = (row / W) % H, b = row / (W * H);
#pragma unroll
      for (int q = 0; q < V; ++q) {
        const int64_t gr = (b * C + l0 + (q < n ? q : 0)) * HW;
        o[q] = q < n ? g[gr + i] / A(W) + g[gr + H + j] / A(H) : A(0);
      }
    } else {  // row = (b C + c) H + i, elements j = l0 ..
      const int64_t i = row % H, bc = row / H;
      const A gh = g[bc * HW + i] / A(W);
#pragma unroll
      for (int q = 0; q < V; ++q) o[q] = q < n ? gh + g[bc * HW + H + l0 + q] / A(H) : A(0);
    }
    T* dst = gx + row * L + l0;
    store_acc<T, V>(dst, n, n == V && aligned16(dst), o);
  }
}

}  // namespace
}  // namespace fa

using namespace fa;

extern "C" cudaError_t fa_ema_strip_pool_reduce(int dtype, int channels_last, const void* x, void* out, void* scratch,
                                                int64_t B, int64_t C, int64_t H, int64_t W, cudaStream_t stream) {
  if (B * C * H * W == 0) return cudaSuccess;
  const int64_t HW = H + W;
  if (!channels_last) {
    const fa_tile_geom geo = fa_tile_geometry(dtype, H, W);
    const int64_t acc = fa_acc_size(dtype);
    char* rows = static_cast<char*>(scratch);
    char* cols = rows + B * C * geo.col_tiles * H * acc;
    fa_tile_sums_args t = {};
    t.a = x;
    t.row_part = rows;
    t.col_part = cols;
    cudaError_t e = fa_tile_sums(dtype, t, B * C, H, W, stream);
    if (e != cudaSuccess) return e;
    // row means into out[b, c, 0 .. H), column means into out[b, c, H .. H + W)
    e = fa_merge_partials(dtype, dtype, rows, out, B * C, geo.col_tiles, H,
                          fa_merge_strided_rows(H, HW, 0, static_cast<double>(W)), stream);
    if (e != cudaSuccess) return e;
    return fa_merge_partials(dtype, dtype, cols, out, B * C, geo.row_chunks, W,
                             fa_merge_strided_rows(W, HW, H, static_cast<double>(H)), stream);
  }
  cudaError_t e = dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int V = Vec<T>::kN;
    int tx = 1;
    while (tx < 32 && tx < ceil_div(C, V)) tx *= 2;
    const int64_t units = B * ceil_div(C, static_cast<int64_t>(tx) * V) * ceil_div(H, FA_STRIP_POOL_ROWS);
    FA_LAUNCH(grid_1d(units), kThreads, 0, stream, strip_pool_cl_kernel<T>)(
        static_cast<const T*>(x), static_cast<T*>(out), static_cast<A*>(scratch), B, C, H, W, tx);
    return cudaGetLastError();
  });
  if (e != cudaSuccess) return e;
  // column means: part [B][chunks][W][C], merged value i = j C + c -> out[b, c, H + j]
  const int64_t chunks = ceil_div(H, FA_STRIP_POOL_ROWS);
  fa_merge_out where = fa_merge_strided_rows(W * C, C * HW, H, static_cast<double>(H));
  where.i_inner = C;  // i / C = j: stride 1; i % C = c: stride H + W
  where.os1 = 1;
  where.os2 = HW;
  return fa_merge_partials(dtype, dtype, scratch, out, B, chunks, W * C, where, stream);
}

extern "C" cudaError_t fa_ema_strip_pool_grad_input(int dtype, int channels_last, const void* grad, void* grad_x,
                                                    int64_t B, int64_t C, int64_t H, int64_t W, cudaStream_t stream) {
  if (B * C * H * W == 0) return cudaSuccess;
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int V = Vec<T>::kN;
    const int64_t L = channels_last ? C : W, rows = B * C * H * W / L, vpr = ceil_div(L, V), total = rows * vpr;
    auto kernel = channels_last ? strip_unpool_kernel<T, true> : strip_unpool_kernel<T, false>;
    FA_LAUNCH(grid_1d(ceil_div(total, kThreads)), kThreads, 0, stream, kernel)(
        static_cast<const A*>(grad), static_cast<T*>(grad_x), C, H, W, L, vpr, total);
    return cudaGetLastError();
  });
}
