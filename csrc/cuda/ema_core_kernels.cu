// CUDA kernels of ema_core (fused_attn/backends/reference/ema_core.py is the oracle and has the derivation):
// fa_ema_core_combine (forward) and fa_ema_core_grads (backward).
//
// One block per (b, group) tile of cg = C / G channels x N = H W pixels (channel c, pixel p = (i, j)):
//   u = x sig_h[c, i] sig_w[c, j];  uhat = (u - mean_p u) rstd, rstd = 1 / sqrt(var_p u + eps)
//   x1 = uhat gn_w + gn_b;  a1 = softmax_c(gn_b);  a2 = softmax_c(mean_p x2)
//   w[p] = sum_c a1 x2 + a2 x1;  out = x sig(w)
// grads (g = grad_out, sg = sig(w)):
//   dw = sg (1 - sg) sum_c g x;  da1 = sum_p dw x2;  da2 = sum_p dw x1
//   grad_x2 = a1 dw + a2 (da2 - <a2, da2>) / N
//   grad_gn_w += a2 sum_p dw uhat;  grad_gn_b += a2 sum_p dw + a1 (da1 - <a1, da1>)   (per-tile partials)
//   du = rstd a2 gn_w (dw - mean_p dw - uhat mean_p(dw uhat));  grad_x = g sg + du sig_h sig_w
//   grad_hw[c, i] = (1 - sig_h) sum_j du u;  grad_hw[c, H + j] = (1 - sig_w) sum_i du u
// The tile is read from HBM once: when it fits (kCacheBytes) the first pass copies x, x2 (and g) into shared
// memory and the later passes read them there; otherwise the later passes re-read the tile, which the
// block touched moments before, from L2. Per-channel sums: NCHW, a warp per channel row (coalesced);
// channels_last, thread t owns channel t % cg (consecutive threads read a pixel's cg contiguous channels) and the
// per-thread partials are added in thread order. Per-pixel sums over channels: a thread per pixel.
// sigmoid(hw) and softmax(gn_bias) are computed by the binding (tiny aten ops) and passed in.
#include <math.h>

#include "kernel_utils.cuh"

namespace fa {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kCacheBytes = 64 * 1024;  // shared-memory tile cache limit per block (3 blocks per SM fit)

template <typename A>
__device__ __forceinline__ A acc_exp(A v) {
  return exp(v);
}
template <>
__device__ __forceinline__ float acc_exp<float>(float v) {
  return expf(v);
}

// ------------------------------------------------------------------------------------------------ ema_core
// Addressing of one (b, group) tile: global index of (c, p), shared-cache index (the tile in its own memory
// order), sig_h / sig_w.
template <bool CL>
struct TileAt {
  int64_t b, c_base, C, cg, N, W, H;
  __device__ __forceinline__ int64_t g(int64_t c, int64_t p) const {
    return CL ? (b * N + p) * C + c_base + c : (b * C + c_base + c) * N + p;
  }
  __device__ __forceinline__ int64_t l(int64_t c, int64_t p) const { return CL ? p * cg + c : c * N + p; }
  __device__ __forceinline__ int64_t hw(int64_t c) const { return (b * C + c_base + c) * (H + W); }
};

// out[v * cg + c] = sum_p f(c, p)[v] for every channel c of the tile, NV sums at once, in an order fixed by the
// shapes (see the file comment). red: NV * kThreads A of shared memory. Ends with __syncthreads.
template <bool CL, int NV, typename A, typename F>
__device__ __forceinline__ void channel_sums(int64_t cg, int64_t N, A* out, A* red, F&& f) {
  const int t = threadIdx.x;
  if (CL && cg <= kThreads) {
    const int64_t per = kThreads / cg, used = per * cg;  // threads t < used own channel t % cg
    A acc[NV];
#pragma unroll
    for (int v = 0; v < NV; ++v) acc[v] = A(0);
    if (t < used)
      for (int64_t p = t / cg; p < N; p += per) f(t % cg, p, acc);
#pragma unroll
    for (int v = 0; v < NV; ++v) red[v * kThreads + t] = acc[v];
    __syncthreads();
    for (int64_t c = t; c < cg; c += kThreads) {
#pragma unroll
      for (int v = 0; v < NV; ++v) {
        A s = A(0);
        for (int64_t k = 0; k < per; ++k) s += red[v * kThreads + c + k * cg];
        out[v * cg + c] = s;
      }
    }
  } else {
    const int lane = t & 31, warp = t >> 5;
    for (int64_t c = warp; c < cg; c += kThreads / 32) {
      A acc[NV];
#pragma unroll
      for (int v = 0; v < NV; ++v) acc[v] = A(0);
      for (int64_t p = lane; p < N; p += 32) f(c, p, acc);
#pragma unroll
      for (int v = 0; v < NV; ++v) {
        const A s = group_sum(acc[v], 32);
        if (lane == 0) out[v * cg + c] = s;
      }
    }
  }
  __syncthreads();
}

// v[0..n) = softmax(v[0..n)), by one thread.
template <typename A>
__device__ void softmax_serial(A* v, int64_t n) {
  A m = v[0];
  for (int64_t k = 1; k < n; ++k) m = v[k] > m ? v[k] : m;
  A z = A(0);
  for (int64_t k = 0; k < n; ++k) z += (v[k] = acc_exp(v[k] - m));
  for (int64_t k = 0; k < n; ++k) v[k] /= z;
}

// Shared memory: per-channel arrays (kChannelArrays x cg A), the reduction scratch (4 kThreads A), then the
// tile cache (ncache x cg N T, 16-byte aligned).
constexpr int kChannelArrays = 14;

__host__ __device__ __forceinline__ int64_t channel_smem(int64_t cg, int64_t acc_size) {
  return ((kChannelArrays * cg + 4 * kThreads) * acc_size + 15) / 16 * 16;
}

template <typename T, bool CL, bool CACHE>
__global__ void __launch_bounds__(kThreads)
    core_combine_kernel(const T* __restrict__ x, const T* __restrict__ x2, const acc_t<T>* __restrict__ sig_hw,
                        const acc_t<T>* __restrict__ gn_w, const acc_t<T>* __restrict__ gn_b,
                        const acc_t<T>* __restrict__ a1g, T* __restrict__ out, acc_t<T>* __restrict__ mean_out,
                        acc_t<T>* __restrict__ rstd_out, int64_t B, int64_t C, int64_t G, int64_t H, int64_t W,
                        acc_t<T> eps) {
  using A = acc_t<T>;
  FA_DYNAMIC_SMEM(smem);
  const int64_t cg = C / G, N = H * W;
  A* s_mean = reinterpret_cast<A*>(smem);
  A *s_rstd = s_mean + cg, *s_a2 = s_rstd + cg, *s_gw = s_a2 + cg, *s_gb = s_gw + cg, *s_a1 = s_gb + cg;
  A* red = s_mean + kChannelArrays * cg;
  T* xs = reinterpret_cast<T*>(smem + channel_smem(cg, sizeof(A)));
  T* x2s = xs + cg * N;
  const int t = threadIdx.x;
  for (int64_t tile = blockIdx.x; tile < B * G; tile += gridDim.x) {
    const TileAt<CL> at{tile / G, (tile % G) * cg, C, cg, N, W, H};
    for (int64_t c = t; c < cg; c += kThreads) {
      s_gw[c] = gn_w[c];
      s_gb[c] = gn_b[c];
      s_a1[c] = a1g[c];
    }
    __syncthreads();
    // pass 1: sum_p u, sum_p x2 (and the tile into the cache)
    channel_sums<CL, 2>(cg, N, s_mean, red, [&](int64_t c, int64_t p, A* acc) {
      const int64_t gi = at.g(c, p);
      const T xv = x[gi], x2v = x2[gi];
      if (CACHE) {
        xs[at.l(c, p)] = xv;
        x2s[at.l(c, p)] = x2v;
      }
      const int64_t i = p / W, j = p - i * W, r = at.hw(c);
      acc[0] += (to_acc<A>(xv) * sig_hw[r + i]) * sig_hw[r + H + j];
      acc[1] += to_acc<A>(x2v);
    });  // s_mean = sum u, s_rstd = sum x2 (NV = 2 fills two consecutive arrays)
    for (int64_t c = t; c < cg; c += kThreads) {
      s_mean[c] /= A(N);
      s_a2[c] = s_rstd[c] / A(N);
    }
    __syncthreads();
    auto X = [&](int64_t c, int64_t p) { return to_acc<A>(CACHE ? xs[at.l(c, p)] : x[at.g(c, p)]); };
    auto X2 = [&](int64_t c, int64_t p) { return to_acc<A>(CACHE ? x2s[at.l(c, p)] : x2[at.g(c, p)]); };
    auto U = [&](int64_t c, int64_t p) {
      const int64_t i = p / W, j = p - i * W, r = at.hw(c);
      return (X(c, p) * sig_hw[r + i]) * sig_hw[r + H + j];
    };
    // pass 2: the variance around the exact mean
    channel_sums<CL, 1>(cg, N, s_rstd, red, [&](int64_t c, int64_t p, A* acc) {
      const A d = U(c, p) - s_mean[c];
      acc[0] += d * d;
    });
    for (int64_t c = t; c < cg; c += kThreads) {
      s_rstd[c] = A(1) / acc_sqrt(s_rstd[c] / A(N) + eps);
      mean_out[at.b * C + at.c_base + c] = s_mean[c];
      rstd_out[at.b * C + at.c_base + c] = s_rstd[c];
    }
    if (t == 0) softmax_serial(s_a2, cg);
    __syncthreads();
    // pass 3: per pixel, w = sum_c a1 x2 + a2 x1, out = x sig(w)
    for (int64_t p = t; p < N; p += kThreads) {
      A w = A(0);
      for (int64_t c = 0; c < cg; ++c)
        w += s_a1[c] * X2(c, p) + s_a2[c] * (((U(c, p) - s_mean[c]) * s_rstd[c]) * s_gw[c] + s_gb[c]);
      const A sg = sigmoid(w);
      for (int64_t c = 0; c < cg; ++c) out[at.g(c, p)] = from_acc<T>(X(c, p) * sg);
    }
    __syncthreads();  // the next tile overwrites the shared arrays
  }
}

template <typename T, bool CL, bool CACHE>
__global__ void __launch_bounds__(kThreads)
    core_grads_kernel(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ x2,
                      const acc_t<T>* __restrict__ sig_hw, const acc_t<T>* __restrict__ gn_w,
                      const acc_t<T>* __restrict__ gn_b, const acc_t<T>* __restrict__ a1g,
                      const acc_t<T>* __restrict__ mean_in, const acc_t<T>* __restrict__ rstd_in,
                      T* __restrict__ grad_x, T* __restrict__ grad_x2, acc_t<T>* __restrict__ grad_hw,
                      acc_t<T>* __restrict__ gn_part, acc_t<T>* __restrict__ pix, int64_t B, int64_t C, int64_t G,
                      int64_t H, int64_t W) {
  using A = acc_t<T>;
  FA_DYNAMIC_SMEM(smem);
  const int64_t cg = C / G, N = H * W;
  A* s_mean = reinterpret_cast<A*>(smem);
  A *s_rstd = s_mean + cg, *s_a2 = s_rstd + cg, *s_gw = s_a2 + cg, *s_gb = s_gw + cg, *s_a1 = s_gb + cg;
  A *s_da1 = s_a1 + cg, *s_da2 = s_da1 + cg, *s_sdu = s_da2 + cg, *s_sdw = s_sdu + cg;  // filled together (NV = 4)
  A *s_k = s_sdw + cg, *s_kr = s_k + cg, *s_mdw = s_kr + cg, *s_mdu = s_mdw + cg;
  A* red = s_mean + kChannelArrays * cg;
  T* xs = reinterpret_cast<T*>(smem + channel_smem(cg, sizeof(A)));
  T* x2s = xs + cg * N;
  T* gs = x2s + cg * N;
  const int t = threadIdx.x;
  for (int64_t tile = blockIdx.x; tile < B * G; tile += gridDim.x) {
    const TileAt<CL> at{tile / G, (tile % G) * cg, C, cg, N, W, H};
    A* sgp = pix + tile * 2 * N;  // sig(w) [N], then dw [N]
    A* dwp = sgp + N;
    for (int64_t c = t; c < cg; c += kThreads) {
      s_mean[c] = mean_in[at.b * C + at.c_base + c];
      s_rstd[c] = rstd_in[at.b * C + at.c_base + c];
      s_gw[c] = gn_w[c];
      s_gb[c] = gn_b[c];
      s_a1[c] = a1g[c];
    }
    __syncthreads();
    // pass 1: a2 from sum_p x2 (and the tile into the cache)
    channel_sums<CL, 1>(cg, N, s_a2, red, [&](int64_t c, int64_t p, A* acc) {
      const int64_t gi = at.g(c, p);
      const T x2v = x2[gi];
      if (CACHE) {
        const int64_t li = at.l(c, p);
        xs[li] = x[gi];
        x2s[li] = x2v;
        gs[li] = g[gi];
      }
      acc[0] += to_acc<A>(x2v);
    });
    for (int64_t c = t; c < cg; c += kThreads) s_a2[c] /= A(N);
    __syncthreads();
    if (t == 0) softmax_serial(s_a2, cg);
    __syncthreads();
    auto X = [&](int64_t c, int64_t p) { return to_acc<A>(CACHE ? xs[at.l(c, p)] : x[at.g(c, p)]); };
    auto X2 = [&](int64_t c, int64_t p) { return to_acc<A>(CACHE ? x2s[at.l(c, p)] : x2[at.g(c, p)]); };
    auto Gr = [&](int64_t c, int64_t p) { return to_acc<A>(CACHE ? gs[at.l(c, p)] : g[at.g(c, p)]); };
    auto U = [&](int64_t c, int64_t p) {
      const int64_t i = p / W, j = p - i * W, r = at.hw(c);
      return (X(c, p) * sig_hw[r + i]) * sig_hw[r + H + j];
    };
    // pass 2: per pixel sg = sig(w), dw = sg (1 - sg) sum_c g x
    for (int64_t p = t; p < N; p += kThreads) {
      A w = A(0), gx = A(0);
      for (int64_t c = 0; c < cg; ++c) {
        w += s_a1[c] * X2(c, p) + s_a2[c] * (((U(c, p) - s_mean[c]) * s_rstd[c]) * s_gw[c] + s_gb[c]);
        gx += Gr(c, p) * X(c, p);
      }
      const A sg = sigmoid(w);
      sgp[p] = sg;
      dwp[p] = (gx * sg) * (A(1) - sg);
    }
    __syncthreads();
    // pass 3: da1 = sum_p dw x2, da2 = sum_p dw x1, sdu = sum_p dw uhat, sdw = sum_p dw
    channel_sums<CL, 4>(cg, N, s_da1, red, [&](int64_t c, int64_t p, A* acc) {
      const A d = dwp[p], uh = (U(c, p) - s_mean[c]) * s_rstd[c];
      acc[0] += d * X2(c, p);
      acc[1] += d * (uh * s_gw[c] + s_gb[c]);
      acc[2] += d * uh;
      acc[3] += d;
    });
    if (t == 0) {
      A dot1 = A(0), dot2 = A(0);
      for (int64_t c = 0; c < cg; ++c) {
        dot1 += s_a1[c] * s_da1[c];
        dot2 += s_a2[c] * s_da2[c];
      }
      red[0] = dot1;
      red[1] = dot2;
    }
    __syncthreads();
    const A dot1 = red[0], dot2 = red[1];
    for (int64_t c = t; c < cg; c += kThreads) {
      const A k2 = s_a2[c];
      gn_part[tile * cg + c] = k2 * s_sdu[c];
      gn_part[(B * G + tile) * cg + c] = k2 * s_sdw[c] + s_a1[c] * (s_da1[c] - dot1);
      s_k[c] = k2 * (s_da2[c] - dot2) / A(N);
      s_kr[c] = s_rstd[c] * k2 * s_gw[c];
      s_mdw[c] = s_sdw[c] / A(N);
      s_mdu[c] = s_sdu[c] / A(N);
    }
    __syncthreads();
    auto DU = [&](int64_t c, int64_t p, A u) {  // du at (c, p), u = U(c, p)
      return s_kr[c] * (dwp[p] - s_mdw[c] - ((u - s_mean[c]) * s_rstd[c]) * s_mdu[c]);
    };
    // pass 4: grad_x2, grad_x, element by element in memory order
    for (int64_t k = t; k < cg * N; k += kThreads) {
      const int64_t c = CL ? k % cg : k / N, p = CL ? k / cg : k % N;
      const int64_t i = p / W, j = p - i * W, r = at.hw(c), gi = at.g(c, p);
      const A sh = sig_hw[r + i], sw = sig_hw[r + H + j];
      const A u = (X(c, p) * sh) * sw, d = dwp[p];
      grad_x2[gi] = from_acc<T>(s_a1[c] * d + s_k[c]);
      grad_x[gi] = from_acc<T>(Gr(c, p) * sgp[p] + (DU(c, p, u) * sh) * sw);
    }
    // pass 5: grad_hw, row sums (over j) and column sums (over i) of du u
    if (CL) {
      for (int64_t k = t; k < cg * H; k += kThreads) {
        const int64_t c = k % cg, i = k / cg, r = at.hw(c);
        A s = A(0);
        for (int64_t j = 0; j < W; ++j) {
          const int64_t p = i * W + j;
          const A u = U(c, p);
          s += DU(c, p, u) * u;
        }
        grad_hw[r + i] = s * (A(1) - sig_hw[r + i]);
      }
    } else {
      const int lane = t & 31, warp = t >> 5;
      for (int64_t k = warp; k < cg * H; k += kThreads / 32) {
        const int64_t c = k / H, i = k % H, r = at.hw(c);
        A s = A(0);
        for (int64_t j = lane; j < W; j += 32) {
          const int64_t p = i * W + j;
          const A u = U(c, p);
          s += DU(c, p, u) * u;
        }
        s = group_sum(s, 32);
        if (lane == 0) grad_hw[r + i] = s * (A(1) - sig_hw[r + i]);
      }
    }
    for (int64_t k = t; k < cg * W; k += kThreads) {
      const int64_t c = CL ? k % cg : k / W, j = CL ? k / cg : k % W, r = at.hw(c);
      A s = A(0);
      for (int64_t i = 0; i < H; ++i) {
        const int64_t p = i * W + j;
        const A u = U(c, p);
        s += DU(c, p, u) * u;
      }
      grad_hw[r + H + j] = s * (A(1) - sig_hw[r + H + j]);
    }
    __syncthreads();  // the next tile overwrites the shared arrays
  }
}

// Max dynamic shared memory per block on the current device (opt-in), cached per device.
int max_smem_optin() {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 48 * 1024;
  static int cache[64] = {0};
  if (dev < 64 && cache[dev]) return cache[dev];
  int v = 48 * 1024;
  if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) v = 48 * 1024;
  if (dev < 64) cache[dev] = v;
  return v;
}

// Launches kernel<<<B G, kThreads, smem>>> after raising its dynamic shared-memory limit when smem > 48 KB.
template <typename K, typename... Args>
cudaError_t launch_tiles(K kernel, int64_t tiles, int64_t smem, cudaStream_t stream, Args... args) {
  if (smem > max_smem_optin()) return cudaErrorInvalidConfiguration;
  if (smem > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  FA_LAUNCH(grid_1d(tiles, 1LL << 30), kThreads, static_cast<size_t>(smem), stream, kernel)(args...);
  return cudaGetLastError();
}

}  // namespace
}  // namespace fa

using namespace fa;

extern "C" cudaError_t fa_ema_core_combine(int dtype, int channels_last, const void* x, const void* x2,
                                           const void* sig_hw, const void* gn_w, const void* gn_b, const void* a1,
                                           void* out, void* mean, void* rstd, int64_t B, int64_t C, int64_t G,
                                           int64_t H, int64_t W, double eps, cudaStream_t stream) {
  if (G <= 0 || C % G != 0) return cudaErrorInvalidValue;
  if (B * C * H * W == 0) return cudaSuccess;
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    const int64_t cg = C / G, base = channel_smem(cg, sizeof(A)), cache = 2 * cg * H * W * sizeof(T);
    const bool use_cache = cache <= kCacheBytes;
    const int64_t smem = base + (use_cache ? cache : 0);
    auto args = [&](auto kernel) {
      return launch_tiles(kernel, B * G, smem, stream, static_cast<const T*>(x), static_cast<const T*>(x2),
                          static_cast<const A*>(sig_hw), static_cast<const A*>(gn_w), static_cast<const A*>(gn_b),
                          static_cast<const A*>(a1), static_cast<T*>(out), static_cast<A*>(mean), static_cast<A*>(rstd),
                          B, C, G, H, W, static_cast<A>(eps));
    };
    return with_flags(channels_last, use_cache, [&](auto cl, auto cached) {
      return args(core_combine_kernel<T, decltype(cl)::value, decltype(cached)::value>);
    });
  });
}

extern "C" cudaError_t fa_ema_core_grads(int dtype, int channels_last, const void* grad, const void* x, const void* x2,
                                         const void* sig_hw, const void* gn_w, const void* gn_b, const void* a1,
                                         const void* mean, const void* rstd, void* grad_x, void* grad_x2, void* grad_hw,
                                         void* gn_part, void* pix, int64_t B, int64_t C, int64_t G, int64_t H,
                                         int64_t W, cudaStream_t stream) {
  if (G <= 0 || C % G != 0) return cudaErrorInvalidValue;
  if (B * C * H * W == 0) return cudaSuccess;
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    const int64_t cg = C / G, base = channel_smem(cg, sizeof(A)), cache = 3 * cg * H * W * sizeof(T);
    const bool use_cache = cache <= kCacheBytes;
    const int64_t smem = base + (use_cache ? cache : 0);
    auto args = [&](auto kernel) {
      return launch_tiles(kernel, B * G, smem, stream, static_cast<const T*>(grad), static_cast<const T*>(x),
                          static_cast<const T*>(x2), static_cast<const A*>(sig_hw), static_cast<const A*>(gn_w),
                          static_cast<const A*>(gn_b), static_cast<const A*>(a1), static_cast<const A*>(mean),
                          static_cast<const A*>(rstd), static_cast<T*>(grad_x), static_cast<T*>(grad_x2),
                          static_cast<A*>(grad_hw), static_cast<A*>(gn_part), static_cast<A*>(pix), B, C, G, H, W);
    };
    return with_flags(channels_last, use_cache, [&](auto cl, auto cached) {
      return args(core_grads_kernel<T, decltype(cl)::value, decltype(cached)::value>);
    });
  });
}
