// CUDA kernels of the global_context family (fused_attn/backends/reference/global_context.py is the oracle).
//
// fa_global_context_pool_reduce: z[b, p] = weight . x[b, :, p]; lse[b] = logsumexp_p z; ctx[b, c] =
//   sum_p exp(z - lse) x[b, c, p]. One block per (b, tile of FA_GC_TILE pixels) reads its [C, tile] slab of x:
//   (1) the tile's logits, a reduction over C (NCHW: 4 thread rows of 64 pixels stride the channels, added in row
//   order; channels_last: a warp per pixel, lanes over the contiguous channels, a butterfly sum); (2) the tile's
//   max m_t, e = exp(z - m_t) and l_t = sum e (warp 0); (3) the tile's channel sums sum_p e x (NCHW: a warp per
//   channel, lanes over pixels; channels_last: a thread per channel, pixels in order), re-reading the slab the
//   block just read (L1 / L2: x is read from DRAM once). Each tile leaves (m_t, l_t, sums_t[C]) in scratch; the
//   merge kernel adds the tiles of an image in tile order: M = max m_t, L = sum l_t e^(m_t - M),
//   ctx = sum_t sums_t e^(m_t - M) / L, lse = M + log L. No atomics anywhere: bitwise reproducible.
// fa_global_context_pool_grads: per block (b, tile): gc = g . ctx (a block sum, the same in every block of b),
//   z and s = g . x per pixel as above, a = exp(z - lse), dz = a (s - gc), then grad_x = g a + dz weight written
//   over the slab and the tile's partial grad_weight row sum_p dz x (scratch [B tiles][C]), which
//   fa_merge_partials adds in tile order. Reads x once, writes grad_x once.
#include "kernel_utils.cuh"

namespace fa {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxTile = 64;

template <typename A>
__device__ __forceinline__ A acc_exp(A v) {
  return exp(v);
}
template <>
__device__ __forceinline__ float acc_exp<float>(float v) {
  return expf(v);
}
template <typename A>
__device__ __forceinline__ A acc_log(A v) {
  return log(v);
}
template <>
__device__ __forceinline__ float acc_log<float>(float v) {
  return logf(v);
}
template <typename A>
__device__ __forceinline__ A acc_max(A a, A b) {
  return fmax(a, b);
}
template <>
__device__ __forceinline__ float acc_max<float>(float a, float b) {
  return fmaxf(a, b);
}

template <typename A>
__device__ __forceinline__ A warp_max(A v) {
  for (int off = 16; off > 0; off /= 2) v = acc_max(v, __shfl_xor_sync(0xffffffffu, v, off, 32));
  return v;
}

// Per-pixel dot products of one tile: z[i] = sum_c w[c] x[c, p0 + i] and, with G, s[i] = sum_c g[c] x[c, p0 + i].
// red: [4][kMaxTile] A scratch (NCHW).
template <typename T, bool CL, bool G>
__device__ __forceinline__ void tile_dots(const T* __restrict__ xb, const acc_t<T>* __restrict__ w,
                                          const acc_t<T>* __restrict__ g, int64_t C, int64_t N, int64_t p0, int n,
                                          acc_t<T>* z, acc_t<T>* s, acc_t<T> (*red)[kMaxTile],
                                          acc_t<T> (*red2)[kMaxTile]) {
  using A = acc_t<T>;
  const int tid = threadIdx.x;
  if (CL) {
    const int lane = tid & 31, warp = tid >> 5;
    for (int i = warp; i < n; i += kThreads / 32) {
      const T* __restrict__ xr = xb + (p0 + i) * C;
      A zs = A(0), ss = A(0);
      for (int64_t c = lane; c < C; c += 32) {
        const A v = to_acc<A>(xr[c]);
        zs += w[c] * v;
        if (G) ss += g[c] * v;
      }
      zs = group_sum(zs, 32);
      if (G) ss = group_sum(ss, 32);
      if (lane == 0) {
        z[i] = zs;
        if (G) s[i] = ss;
      }
    }
    __syncthreads();
    return;
  }
  const int i = tid % kMaxTile, row = tid / kMaxTile;  // 4 rows of 64 pixels
  A zs = A(0), ss = A(0);
  if (i < n) {
    const T* __restrict__ xp = xb + p0 + i;
    for (int64_t c = row; c < C; c += kThreads / kMaxTile) {
      const A v = to_acc<A>(xp[c * N]);
      zs += w[c] * v;
      if (G) ss += g[c] * v;
    }
  }
  red[row][i] = zs;
  if (G) red2[row][i] = ss;
  __syncthreads();
  if (tid < n) {
    z[tid] = ((red[0][tid] + red[1][tid]) + red[2][tid]) + red[3][tid];
    if (G) s[tid] = ((red2[0][tid] + red2[1][tid]) + red2[2][tid]) + red2[3][tid];
  }
  __syncthreads();
}

// Per-channel weighted sums of one tile: out[c] = sum_{i < n} e[i] x[c, p0 + i]; with GX also
// grad_x[c, p0 + i] = gb[c] a[i] + e[i] w[c] (e = dz then).
template <typename T, bool CL, bool GX>
__device__ __forceinline__ void tile_channel_sums(const T* __restrict__ xb, const acc_t<T>* e, int64_t C, int64_t N,
                                                  int64_t p0, int n, acc_t<T>* __restrict__ out,
                                                  const acc_t<T>* __restrict__ w, const acc_t<T>* __restrict__ gb,
                                                  const acc_t<T>* a, T* __restrict__ gxb) {
  using A = acc_t<T>;
  const int tid = threadIdx.x;
  if (CL) {
    for (int64_t c = tid; c < C; c += kThreads) {
      A acc = A(0);
      for (int i = 0; i < n; ++i) {
        const int64_t off = (p0 + i) * C + c;
        acc += e[i] * to_acc<A>(xb[off]);
        if (GX) gxb[off] = from_acc<T>(gb[c] * a[i] + e[i] * w[c]);
      }
      out[c] = acc;
    }
    return;
  }
  const int lane = tid & 31, warp = tid >> 5;
  for (int64_t c = warp; c < C; c += kThreads / 32) {
    A acc = A(0);
    for (int i = lane; i < n; i += 32) {
      const int64_t off = c * N + p0 + i;
      acc += e[i] * to_acc<A>(xb[off]);
      if (GX) gxb[off] = from_acc<T>(gb[c] * a[i] + e[i] * w[c]);
    }
    acc = group_sum(acc, 32);
    if (lane == 0) out[c] = acc;
  }
}

// scratch: sums [B T][C], then m [B T], then l [B T]
template <typename T, bool CL>
__global__ void __launch_bounds__(kThreads)
    gc_reduce_kernel(const T* __restrict__ x, const acc_t<T>* __restrict__ w, acc_t<T>* __restrict__ scratch, int64_t B,
                     int64_t C, int64_t N, int64_t T_tiles, int tile) {
  using A = acc_t<T>;
  __shared__ A red[kThreads / kMaxTile][kMaxTile];
  __shared__ A z[kMaxTile];
  A* sums = scratch;
  A* ms = scratch + B * T_tiles * C;
  A* ls = ms + B * T_tiles;
  for (int64_t u = blockIdx.x; u < B * T_tiles; u += gridDim.x) {
    const int64_t b = u / T_tiles, p0 = (u % T_tiles) * tile;
    const int n = static_cast<int>(N - p0 < tile ? N - p0 : tile);
    const T* __restrict__ xb = x + b * C * N;
    tile_dots<T, CL, false>(xb, w, nullptr, C, N, p0, n, z, nullptr, red, nullptr);
    if (threadIdx.x < 32) {
      const int lane = threadIdx.x;
      A m = lane < n ? z[lane] : -INFINITY;
      if (lane + 32 < n) m = acc_max(m, z[lane + 32]);
      m = warp_max(m);
      A e0 = A(0), e1 = A(0);
      if (lane < n) z[lane] = e0 = acc_exp(z[lane] - m);
      if (lane + 32 < n) z[lane + 32] = e1 = acc_exp(z[lane + 32] - m);
      const A l = group_sum(e0 + e1, 32);
      if (lane == 0) {
        ms[u] = m;
        ls[u] = l;
      }
    }
    __syncthreads();
    tile_channel_sums<T, CL, false>(xb, z, C, N, p0, n, sums + u * C, nullptr, nullptr, nullptr, nullptr);
    __syncthreads();  // z is rewritten by the next unit
  }
}

// One block per image: M, L over the image's tiles (block reductions in a fixed order), then ctx per channel.
template <typename A>
__global__ void __launch_bounds__(kThreads)
    gc_merge_kernel(const A* __restrict__ scratch, A* __restrict__ ctx, A* __restrict__ lse, int64_t B, int64_t C,
                    int64_t T_tiles) {
  __shared__ A red[32];
  const A* sums = scratch;
  const A* ms = scratch + B * T_tiles * C;
  const A* ls = ms + B * T_tiles;
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const A* mb = ms + b * T_tiles;
    const A* lb = ls + b * T_tiles;
    A m = -INFINITY;
    for (int64_t t = threadIdx.x; t < T_tiles; t += kThreads) m = acc_max(m, mb[t]);
    m = warp_max(m);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = m;
    __syncthreads();
    A M = red[0];
    for (int k = 1; k < kThreads / 32; ++k) M = acc_max(M, red[k]);
    A l = A(0);
    for (int64_t t = threadIdx.x; t < T_tiles; t += kThreads) l += lb[t] * acc_exp(mb[t] - M);
    const A L = block_sum(l, red);
    const A inv = A(1) / L;
    for (int64_t c = threadIdx.x; c < C; c += kThreads) {
      A acc = A(0);
      for (int64_t t = 0; t < T_tiles; ++t) acc += sums[(b * T_tiles + t) * C + c] * acc_exp(mb[t] - M);
      ctx[b * C + c] = acc * inv;
    }
    if (threadIdx.x == 0) lse[b] = M + acc_log(L);
    __syncthreads();
  }
}

template <typename T, bool CL>
__global__ void __launch_bounds__(kThreads)
    gc_grads_kernel(const T* __restrict__ x, const acc_t<T>* __restrict__ w, const acc_t<T>* __restrict__ g,
                    const acc_t<T>* __restrict__ ctx, const acc_t<T>* __restrict__ lse, T* __restrict__ gx,
                    acc_t<T>* __restrict__ part_w, int64_t B, int64_t C, int64_t N, int64_t T_tiles, int tile) {
  using A = acc_t<T>;
  __shared__ A red[kThreads / kMaxTile][kMaxTile];
  __shared__ A red2[kThreads / kMaxTile][kMaxTile];
  __shared__ A z[kMaxTile];
  __shared__ A s[kMaxTile];
  __shared__ A bred[32];
  for (int64_t u = blockIdx.x; u < B * T_tiles; u += gridDim.x) {
    const int64_t b = u / T_tiles, p0 = (u % T_tiles) * tile;
    const int n = static_cast<int>(N - p0 < tile ? N - p0 : tile);
    const T* __restrict__ xb = x + b * C * N;
    const A* __restrict__ gb = g + b * C;
    A gcv = A(0);
    for (int64_t c = threadIdx.x; c < C; c += kThreads) gcv += gb[c] * ctx[b * C + c];
    gcv = block_sum(gcv, bred);
    tile_dots<T, CL, true>(xb, w, gb, C, N, p0, n, z, s, red, red2);
    if (threadIdx.x < n) {
      const A a = acc_exp(z[threadIdx.x] - lse[b]);
      z[threadIdx.x] = a;
      s[threadIdx.x] = a * (s[threadIdx.x] - gcv);  // dz
    }
    __syncthreads();
    tile_channel_sums<T, CL, true>(xb, s, C, N, p0, n, part_w + u * C, w, gb, z, gx + b * C * N);
    __syncthreads();
  }
}

int gc_tile(int channels_last) {
  return channels_last ? FA_GC_TILE_CL : FA_GC_TILE_NCHW;
}

}  // namespace
}  // namespace fa

using namespace fa;

extern "C" cudaError_t fa_global_context_pool_reduce(int dtype, int channels_last, const void* x, const void* weight,
                                                     void* ctx, void* lse, void* scratch, int64_t B, int64_t C,
                                                     int64_t N, cudaStream_t stream) {
  if (B == 0 || N == 0) return cudaSuccess;  // the binding fills the N = 0 outputs
  const int tile = gc_tile(channels_last);
  const int64_t T_tiles = fa_global_context_tiles(channels_last, N);
  cudaError_t e = dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    auto kernel = channels_last ? gc_reduce_kernel<T, true> : gc_reduce_kernel<T, false>;
    FA_LAUNCH(grid_1d(B * T_tiles), kThreads, 0, stream, kernel)(
        static_cast<const T*>(x), static_cast<const A*>(weight), static_cast<A*>(scratch), B, C, N, T_tiles, tile);
    return cudaGetLastError();
  });
  if (e != cudaSuccess) return e;
  if (dtype == FA_FLOAT64) {
    FA_LAUNCH(grid_1d(B), kThreads, 0, stream, gc_merge_kernel<double>)(
        static_cast<const double*>(scratch), static_cast<double*>(ctx), static_cast<double*>(lse), B, C, T_tiles);
  } else {
    FA_LAUNCH(grid_1d(B), kThreads, 0, stream, gc_merge_kernel<float>)(
        static_cast<const float*>(scratch), static_cast<float*>(ctx), static_cast<float*>(lse), B, C, T_tiles);
  }
  return cudaGetLastError();
}

extern "C" cudaError_t fa_global_context_pool_grads(int dtype, int channels_last, const void* x, const void* weight,
                                                    const void* grad_ctx, const void* ctx, const void* lse,
                                                    void* grad_x, void* grad_weight, void* scratch, int64_t B,
                                                    int64_t C, int64_t N, cudaStream_t stream) {
  if (B * C == 0) return cudaSuccess;
  const int tile = gc_tile(channels_last);
  const int64_t T_tiles = fa_global_context_tiles(channels_last, N);
  const int acc_code = dtype == FA_FLOAT64 ? FA_FLOAT64 : FA_FLOAT32;
  if (N > 0) {
    cudaError_t e = dispatch(dtype, [&](auto tag) -> cudaError_t {
      using T = decltype(tag);
      using A = acc_t<T>;
      auto kernel = channels_last ? gc_grads_kernel<T, true> : gc_grads_kernel<T, false>;
      FA_LAUNCH(grid_1d(B * T_tiles), kThreads, 0, stream, kernel)(
          static_cast<const T*>(x), static_cast<const A*>(weight), static_cast<const A*>(grad_ctx),
          static_cast<const A*>(ctx), static_cast<const A*>(lse), static_cast<T*>(grad_x), static_cast<A*>(scratch), B,
          C, N, T_tiles, tile);
      return cudaGetLastError();
    });
    if (e != cudaSuccess) return e;
  }
  // grad_weight[c] = sum over the B T tiles of their partial rows, in tile order (K = 0: zeros)
  return fa_merge_partials(dtype, acc_code, scratch, grad_weight, 1, B * T_tiles, C, fa_merge_rows(C, 1.0), stream);
}
