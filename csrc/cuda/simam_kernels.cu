// CUDA kernels of simam (fused_attn/backends/reference/simam.py is the oracle), per (b, c) plane of N = H W pixels:
//
// fa_simam_gate:        mu = mean x, k = 1 / (4 (sum (x - mu)^2 / (N - 1) + e_lambda)),
//                       out = x sigmoid((x - mu)^2 k + 0.5); mean, k [B, C] acc
// fa_simam_grad_input:  s = sigmoid((x - mu)^2 k + 0.5), gy = g x s (1 - s), A = sum gy (x - mu)^2,
//                       B = sum gy (x - mu), grad_x = g s + 2 (x - mu) (k gy - 4 k^2 A / (N - 1)) - 2 k B / N
//
// One block per unit = (b, a tile of tile_c channels) over all N pixels, in a block-stride loop over units; thread
// (tx, ty) = (threadIdx.x % tile_c, threadIdx.x / tile_c) owns channel c0 + tx and pixels ty, ty + ty_n, ...
//   NCHW: tile_c = 1 (one plane per block; blockDim = pow2(N) clamped to [32, 256], so small planes do not idle
//   most of the block), consecutive threads read consecutive pixels. channels_last: tile_c = 32 bytes of channels
//   (8 fp32, 16 fp16 / bf16, 4 fp64: one 32-byte sector per pixel), consecutive threads read consecutive channels.
// Memory plan: the forward reads its unit three times (mean, squared deviations, gate), the backward (g, x)
// twice. When the unit fits (tile_c N elements of T, twice for the backward, at most 40 KB) each thread keeps the
// elements it read in dynamic shared memory (only it reads them back: no barrier), so x is read from HBM once and
// out written once; larger units re-read global memory (the L2 serves most of it).
// Reductions: per-thread partials, butterflies over the warp lanes sharing a channel, then the warps' partials
// added in warp order: fixed by the shapes, no atomics, bitwise reproducible. N = 1 gives 0 / 0 = NaN, as the
// official code does. All indexing is 64-bit.
#include "kernel_utils.cuh"

namespace fa {
namespace {

constexpr int kMaxThreads = 256;
constexpr int64_t kCacheBytes = 40 * 1024;  // + the static `red`: under the 48 KB a block gets without opt-in

// The total of v over the threads of channel lane tx (threadIdx.x % tile_c; tile_c a power of two <= 16), for
// every thread. red: (kMaxThreads / 32) * 16 A in shared memory; two __syncthreads.
template <typename A>
__device__ __forceinline__ A channel_sum(A v, int tile_c, A* red) {
  for (int off = 16; off >= tile_c; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();  // red may still be read by a previous call
  if (lane < tile_c) red[warp * tile_c + lane] = v;
  __syncthreads();
  const int tx = lane % tile_c;
  A t = A(0);
  for (int w = 0; w < warps; ++w) t += red[w * tile_c + tx];
  return t;
}

template <typename T, bool CACHE>
__global__ void __launch_bounds__(kMaxThreads)
    simam_gate_kernel(const T* __restrict__ x, T* __restrict__ out, acc_t<T>* __restrict__ mean,
                      acc_t<T>* __restrict__ kout, int64_t B, int64_t C, int64_t N, int64_t sc, int64_t sp, int tile_c,
                      acc_t<T> lam) {
  using A = acc_t<T>;
  __shared__ A red[kMaxThreads / 32 * 16];
  FA_DYNAMIC_SMEM(smem);
  T* cache = reinterpret_cast<T*>(smem);
  const int tx = threadIdx.x % tile_c, ty = threadIdx.x / tile_c, ty_n = blockDim.x / tile_c;
  const int64_t ctiles = ceil_div(C, tile_c), units = B * ctiles;
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const int64_t b = u / ctiles, c = (u % ctiles) * tile_c + tx;
    const bool valid = c < C;
    const T* px = x + b * C * N + (valid ? c : 0) * sc;
    T* po = out + b * C * N + (valid ? c : 0) * sc;
    A s = A(0);
    if (valid)
      for (int64_t p = ty; p < N; p += ty_n) {
        const T v = px[p * sp];
        if (CACHE) cache[p * tile_c + tx] = v;
        s += to_acc<A>(v);
      }
    const A mu = channel_sum(s, tile_c, red) / A(N);
    A q = A(0);
    if (valid)
      for (int64_t p = ty; p < N; p += ty_n) {
        const A d = to_acc<A>(CACHE ? cache[p * tile_c + tx] : px[p * sp]) - mu;
        q += d * d;
      }
    const A k = A(1) / (A(4) * (channel_sum(q, tile_c, red) / A(N - 1) + lam));
    if (valid) {
      for (int64_t p = ty; p < N; p += ty_n) {
        const A xv = to_acc<A>(CACHE ? cache[p * tile_c + tx] : px[p * sp]), d = xv - mu;
        po[p * sp] = from_acc<T>(xv * sigmoid(d * d * k + A(0.5)));
      }
      if (ty == 0) {
        mean[b * C + c] = mu;
        kout[b * C + c] = k;
      }
    }
  }
}

template <typename T, bool CACHE>
__global__ void __launch_bounds__(kMaxThreads)
    simam_grad_kernel(const T* __restrict__ g, const T* __restrict__ x, T* __restrict__ gx,
                      const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ kin, int64_t B, int64_t C,
                      int64_t N, int64_t sc, int64_t sp, int tile_c) {
  using A = acc_t<T>;
  __shared__ A red[kMaxThreads / 32 * 16];
  FA_DYNAMIC_SMEM(smem);
  T* cx = reinterpret_cast<T*>(smem);
  T* cg = cx + tile_c * N;
  const int tx = threadIdx.x % tile_c, ty = threadIdx.x / tile_c, ty_n = blockDim.x / tile_c;
  const int64_t ctiles = ceil_div(C, tile_c), units = B * ctiles;
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const int64_t b = u / ctiles, c = (u % ctiles) * tile_c + tx;
    const bool valid = c < C;
    const int64_t off = b * C * N + (valid ? c : 0) * sc;
    const A mu = valid ? mean[b * C + c] : A(0), k = valid ? kin[b * C + c] : A(0);
    A sa = A(0), sb = A(0);
    if (valid)
      for (int64_t p = ty; p < N; p += ty_n) {
        const T xt = x[off + p * sp], gt = g[off + p * sp];
        if (CACHE) {
          cx[p * tile_c + tx] = xt;
          cg[p * tile_c + tx] = gt;
        }
        const A xv = to_acc<A>(xt), xm = xv - mu, d = xm * xm, s = sigmoid(d * k + A(0.5));
        const A gy = to_acc<A>(gt) * xv * s * (A(1) - s);
        sa += gy * d;
        sb += gy * xm;
      }
    const A ta = channel_sum(sa, tile_c, red), tb = channel_sum(sb, tile_c, red);
    if (!valid) continue;  // after the block-wide reductions
    const A c1 = A(4) * k * k * ta / A(N - 1), c2 = A(2) * k * tb / A(N);
    for (int64_t p = ty; p < N; p += ty_n) {
      const A xv = to_acc<A>(CACHE ? cx[p * tile_c + tx] : x[off + p * sp]);
      const A gv = to_acc<A>(CACHE ? cg[p * tile_c + tx] : g[off + p * sp]);
      const A xm = xv - mu, s = sigmoid(xm * xm * k + A(0.5)), gy = gv * xv * s * (A(1) - s);
      gx[off + p * sp] = from_acc<T>(gv * s + A(2) * xm * (k * gy - c1) - c2);
    }
  }
}

// Launch geometry shared by both passes: (tile_c, threads, channel stride, pixel stride).
struct SimamGeom {
  int tile_c, threads;
  int64_t sc, sp;
};

template <typename T>
SimamGeom simam_geom(bool channels_last, int64_t C, int64_t N) {
  SimamGeom g;
  if (channels_last) {
    g.tile_c = 1;
    while (g.tile_c < static_cast<int>(32 / sizeof(T)) && g.tile_c < C) g.tile_c *= 2;
    g.threads = kMaxThreads;
    g.sc = 1;
    g.sp = C;
  } else {
    g.tile_c = 1;
    g.threads = 32;
    while (g.threads < kMaxThreads && g.threads < N) g.threads *= 2;
    g.sc = N;
    g.sp = 1;
  }
  return g;
}

}  // namespace
}  // namespace fa

using namespace fa;

extern "C" cudaError_t fa_simam_gate(int dtype, int channels_last, const void* x, void* out, void* mean, void* k,
                                     int64_t B, int64_t C, int64_t N, double e_lambda, cudaStream_t stream) {
  if (B * C == 0) return cudaSuccess;
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    const SimamGeom geo = simam_geom<T>(channels_last != 0, C, N);
    const int64_t bytes = geo.tile_c * N * static_cast<int64_t>(sizeof(T));
    const unsigned grid = grid_1d(B * ceil_div(C, geo.tile_c));
    const A lam = static_cast<A>(e_lambda);
    if (bytes <= kCacheBytes) {
      FA_LAUNCH(grid, geo.threads, static_cast<size_t>(bytes), stream, simam_gate_kernel<T, true>)(
          static_cast<const T*>(x), static_cast<T*>(out), static_cast<A*>(mean), static_cast<A*>(k), B, C, N, geo.sc,
          geo.sp, geo.tile_c, lam);
    } else {
      FA_LAUNCH(grid, geo.threads, 0, stream, simam_gate_kernel<T, false>)(
          static_cast<const T*>(x), static_cast<T*>(out), static_cast<A*>(mean), static_cast<A*>(k), B, C, N, geo.sc,
          geo.sp, geo.tile_c, lam);
    }
    return cudaGetLastError();
  });
}

extern "C" cudaError_t fa_simam_grad_input(int dtype, int channels_last, const void* grad, const void* x,
                                           const void* mean, const void* k, void* grad_x, int64_t B, int64_t C,
                                           int64_t N, cudaStream_t stream) {
  if (B * C * N == 0) return cudaSuccess;
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    const SimamGeom geo = simam_geom<T>(channels_last != 0, C, N);
    const int64_t bytes = 2 * geo.tile_c * N * static_cast<int64_t>(sizeof(T));
    const unsigned grid = grid_1d(B * ceil_div(C, geo.tile_c));
    if (bytes <= kCacheBytes) {
      FA_LAUNCH(grid, geo.threads, static_cast<size_t>(bytes), stream, simam_grad_kernel<T, true>)(
          static_cast<const T*>(grad), static_cast<const T*>(x), static_cast<T*>(grad_x), static_cast<const A*>(mean),
          static_cast<const A*>(k), B, C, N, geo.sc, geo.sp, geo.tile_c);
    } else {
      FA_LAUNCH(grid, geo.threads, 0, stream, simam_grad_kernel<T, false>)(
          static_cast<const T*>(grad), static_cast<const T*>(x), static_cast<T*>(grad_x), static_cast<const A*>(mean),
          static_cast<const A*>(k), B, C, N, geo.sc, geo.sp, geo.tile_c);
    }
    return cudaGetLastError();
  });
}
