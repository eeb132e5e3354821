// CUDA kernels of channel_pool (fused_attn/backends/reference/channel_pool.py is the oracle). Per pixel p of
// image b, over the C channels x_c:
// fa_channel_pool_reduce:
//   max = max_c x_c, argmax = the first c holding it (NaN counts as the maximum, as torch.argmax)
//   mean = sum_c x_c / C;  std = sqrt(sum_c (x_c - mean)^2 / (C - 1))   (unbiased; C = 1 gives NaN, as torch.std)
// fa_channel_pool_grad_input:
//   grad_x[c] = g_mean / C + g_std (x_c - mean) / ((C - 1) std) + [c == argmax] g_max
//   (the std term is 0 where std == 0).
//
// NCHW: a thread owns VEC = 16 / sizeof(T) consecutive pixels (one 16-byte load per channel row) and walks the
//   channels in order: per pixel a running max/argmax, the plain sum (the mean: +-inf and NaN reach it as in
//   torch.mean) and, for std, a Welford mean/M2 of x_c - x_0 (never E[x^2] - E[x]^2; the shift by the first
//   channel keeps it exact for data far from zero); a warp reads 32 x 16 contiguous bytes per channel. The
//   grad_input pass splits the channels into chunks of kChunk per thread.
// channels_last: TX lanes (a power of two <= 32) share a pixel's C contiguous channels, VEC per 16-byte load;
//   lane partial sums and (max, argmax) are combined by butterflies, the squared deviations from the exact mean
//   are summed in a second pass over the same (cached) row.
// One pass over x (reduce), one writing grad_x (grad_input, reading x for std); deterministic (fixed orders, no
// atomics).
#include <math.h>

#include "kernel_utils.cuh"

namespace fa {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 32;  // channels per thread in the NCHW backward

struct Stats {
  int K, max, mean, std;  // plane of each statistic, -1 when not requested
};

template <typename A>
__device__ __forceinline__ bool takes_max(A v, A m) {  // v replaces the running max m: larger, or the first NaN
  return (v > m) || ((v != v) && (m == m));
}

template <typename T, bool MAX, bool STD>
__global__ void __launch_bounds__(kThreads)
    pool_reduce_nchw(const T* __restrict__ x, T* __restrict__ out, int32_t* __restrict__ argmax,
                     acc_t<T>* __restrict__ moments, Stats s, int64_t B, int64_t C, int64_t N) {
  using A = acc_t<T>;
  constexpr int V = Vec<T>::kN;
  const int64_t vpr = ceil_div(N, V), total = B * vpr;
  for (int64_t id = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; id < total;
       id += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t b = id / vpr, p0 = (id - b * vpr) * V;
    const int n = static_cast<int>(N - p0 < V ? N - p0 : V);
    const T* xb = x + b * C * N + p0;
    A v[V], mx[V], sm[V], x0[V], mu[V], m2[V];
    int32_t am[V];
    load_acc<T, V>(xb, n, n == V && aligned16(xb), v);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      mx[k] = sm[k] = x0[k] = v[k];
      mu[k] = m2[k] = A(0);  // Welford state of the shifted values x_c - x_0
      am[k] = 0;
    }
    for (int64_t c = 1; c < C; ++c) {
      const T* row = xb + c * N;
      load_acc<T, V>(row, n, n == V && aligned16(row), v);
      const A inv = A(1) / A(c + 1);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        if (MAX && takes_max(v[k], mx[k])) {
          mx[k] = v[k];
          am[k] = static_cast<int32_t>(c);
        }
        sm[k] += v[k];
        if (STD) {
          const A y = v[k] - x0[k], d = y - mu[k];
          mu[k] += d * inv;
          m2[k] += d * (y - mu[k]);
        }
      }
    }
    A mean[V], sd[V];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      mean[k] = sm[k] / A(C);
      sd[k] = STD ? acc_sqrt(m2[k] / A(C - 1)) : A(0);
    }
    auto plane = [&](int k) { return out + (b * s.K + k) * N + p0; };
    if (MAX) {
      T* o = plane(s.max);
      store_acc<T, V>(o, n, n == V && aligned16(o), mx);
      for (int k = 0; k < n; ++k) argmax[b * N + p0 + k] = am[k];
    }
    if (s.mean >= 0) {
      T* o = plane(s.mean);
      store_acc<T, V>(o, n, n == V && aligned16(o), mean);
    }
    if (s.std >= 0) {
      T* o = plane(s.std);
      store_acc<T, V>(o, n, n == V && aligned16(o), sd);
      for (int k = 0; k < n; ++k) {
        moments[(b * 2) * N + p0 + k] = mean[k];
        moments[(b * 2 + 1) * N + p0 + k] = sd[k];
      }
    }
  }
}

// f(v, n, c0) for each 16-byte piece of a channels_last row that lane tx of tx_n owns: channels c0 .. c0 + n - 1
// (n < VEC only at the row's end; v[n..] are 0), c0 = (tx + j tx_n) VEC.
template <typename T, typename F>
__device__ __forceinline__ void for_lane_pieces(const T* row, int64_t C, int tx, int tx_n, F&& f) {
  constexpr int V = Vec<T>::kN;
  for (int64_t c0 = static_cast<int64_t>(tx) * V; c0 < C; c0 += static_cast<int64_t>(tx_n) * V) {
    const int n = static_cast<int>(C - c0 < V ? C - c0 : V);
    acc_t<T> v[V];
    load_acc<T, V>(row + c0, n, n == V && aligned16(row + c0), v);
    f(v, n, c0);
  }
}

// Block iteration: TY = kThreads / TX pixels, TX lanes each. Every lane runs every shuffle (invalid pixels
// load nothing).
template <typename T, bool MAX, bool STD>
__global__ void __launch_bounds__(kThreads)
    pool_reduce_cl(const T* __restrict__ x, T* __restrict__ out, int32_t* __restrict__ argmax,
                   acc_t<T>* __restrict__ moments, Stats s, int64_t B, int64_t C, int64_t N, int tx_n) {
  using A = acc_t<T>;
  constexpr int V = Vec<T>::kN;
  const int ty_n = kThreads / tx_n, tx = threadIdx.x % tx_n, ty = threadIdx.x / tx_n;
  const int64_t BN = B * N;
  for (int64_t blk = blockIdx.x; blk * ty_n < BN; blk += gridDim.x) {
    const int64_t gp = blk * ty_n + ty;  // pixel b * N + p
    const bool valid = gp < BN;
    const T* row = x + (valid ? gp : 0) * C;
    A sum = A(0), mx = -INFINITY;
    int32_t am = INT32_MAX;
    if (valid) {
      for_lane_pieces(row, C, tx, tx_n, [&](const A* v, int n, int64_t c0) {
#pragma unroll
        for (int k = 0; k < V; ++k) {
          if (k < n) {
            sum += v[k];
            if (MAX) max_merge(mx, am, v[k], static_cast<int32_t>(c0 + k));
          }
        }
      });
    }
    sum = group_sum(sum, tx_n);
    if (MAX) group_max(mx, am, tx_n);
    const A mean = sum / A(C);
    A sd = A(0);
    if (STD) {
      A ss = A(0);
      if (valid) {
        for_lane_pieces(row, C, tx, tx_n, [&](const A* v, int n, int64_t) {
#pragma unroll
          for (int k = 0; k < V; ++k) {
            const A d = v[k] - mean;
            if (k < n) ss += d * d;
          }
        });
      }
      ss = group_sum(ss, tx_n);
      sd = acc_sqrt(ss / A(C - 1));
    }
    if (valid && tx == 0) {
      const int64_t b = gp / N, p = gp - b * N;
      T* o = out + gp * s.K;
      if (MAX) {
        o[s.max] = from_acc<T>(mx);
        argmax[gp] = am;
      }
      if (s.mean >= 0) o[s.mean] = from_acc<T>(mean);
      if (s.std >= 0) {
        o[s.std] = from_acc<T>(sd);
        moments[(b * 2) * N + p] = mean;
        moments[(b * 2 + 1) * N + p] = sd;
      }
    }
  }
}

// Per-pixel backward coefficients: grad_x[c] = base + coef (x_c - mean) + [c == am] gmax.
template <typename A>
struct Coef {
  A base, coef, mean, gmax;
  int32_t am;
};

template <typename T, bool MAX, bool STD>
__device__ __forceinline__ Coef<acc_t<T>> coefficients(const T* __restrict__ g, int64_t gstride,
                                                       const int32_t* __restrict__ argmax,
                                                       const acc_t<T>* __restrict__ moments, const Stats& s, int64_t b,
                                                       int64_t p, int64_t N, int64_t C) {
  using A = acc_t<T>;
  Coef<A> k;
  k.base = s.mean >= 0 ? to_acc<A>(g[s.mean * gstride]) / A(C) : A(0);
  k.coef = k.mean = k.gmax = A(0);
  k.am = -1;
  if (STD) {
    k.mean = moments[(b * 2) * N + p];
    const A sd = moments[(b * 2 + 1) * N + p];
    k.coef = sd == A(0) ? A(0) : to_acc<A>(g[s.std * gstride]) / (A(C - 1) * sd);
  }
  if (MAX) {
    k.gmax = to_acc<A>(g[s.max * gstride]);
    k.am = argmax[b * N + p];
  }
  return k;
}

template <bool MAX, bool STD, typename A>
__device__ __forceinline__ A grad_at(const Coef<A>& k, A xc, int64_t c) {  // grad_x[c] given x_c
  A r = k.base;
  if (STD) r += k.coef * (xc - k.mean);
  if (MAX) r += k.am == c ? k.gmax : A(0);
  return r;
}

template <typename T, bool MAX, bool STD>
__global__ void __launch_bounds__(kThreads)
    pool_grad_input_nchw(const T* __restrict__ g, const T* __restrict__ x, const int32_t* __restrict__ argmax,
                         const acc_t<T>* __restrict__ moments, T* __restrict__ gx, Stats s, int64_t B, int64_t C,
                         int64_t N) {
  using A = acc_t<T>;
  constexpr int V = Vec<T>::kN;
  const int64_t vpr = ceil_div(N, V), chunks = ceil_div(C, kChunk), total = B * chunks * vpr;
  for (int64_t id = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; id < total;
       id += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t pv = id % vpr, ch = (id / vpr) % chunks, b = id / (vpr * chunks);
    const int64_t p0 = pv * V;
    const int n = static_cast<int>(N - p0 < V ? N - p0 : V);
    Coef<A> k[V];
#pragma unroll
    for (int q = 0; q < V; ++q)
      if (q < n) k[q] = coefficients<T, MAX, STD>(g + b * s.K * N + p0 + q, N, argmax, moments, s, b, p0 + q, N, C);
    const int64_t c1 = (ch + 1) * kChunk < C ? (ch + 1) * kChunk : C;
    for (int64_t c = ch * kChunk; c < c1; ++c) {
      const int64_t off = (b * C + c) * N + p0;
      A v[V], o[V];
      if (STD) load_acc<T, V>(x + off, n, n == V && aligned16(x + off), v);
#pragma unroll
      for (int q = 0; q < V; ++q) {
        o[q] = q < n ? grad_at<MAX, STD>(k[q], v[q], c) : A(0);
      }
      store_acc<T, V>(gx + off, n, n == V && aligned16(gx + off), o);
    }
  }
}

template <typename T, bool MAX, bool STD>
__global__ void __launch_bounds__(kThreads)
    pool_grad_input_cl(const T* __restrict__ g, const T* __restrict__ x, const int32_t* __restrict__ argmax,
                       const acc_t<T>* __restrict__ moments, T* __restrict__ gx, Stats s, int64_t B, int64_t C,
                       int64_t N, int tx_n) {
  using A = acc_t<T>;
  constexpr int V = Vec<T>::kN;
  const int ty_n = kThreads / tx_n, tx = threadIdx.x % tx_n, ty = threadIdx.x / tx_n;
  const int64_t BN = B * N, step = static_cast<int64_t>(tx_n) * V;
  for (int64_t blk = blockIdx.x; blk * ty_n < BN; blk += gridDim.x) {
    const int64_t gp = blk * ty_n + ty;
    if (gp >= BN) continue;  // no shuffles below
    const int64_t b = gp / N, p = gp - b * N;
    const Coef<A> k = coefficients<T, MAX, STD>(g + gp * s.K, 1, argmax, moments, s, b, p, N, C);
    for (int64_t c0 = static_cast<int64_t>(tx) * V; c0 < C; c0 += step) {
      const int n = static_cast<int>(C - c0 < V ? C - c0 : V);
      const int64_t off = gp * C + c0;
      A v[V], o[V];
      if (STD) load_acc<T, V>(x + off, n, n == V && aligned16(x + off), v);
#pragma unroll
      for (int q = 0; q < V; ++q) o[q] = grad_at<MAX, STD>(k, v[q], c0 + q);
      store_acc<T, V>(gx + off, n, n == V && aligned16(gx + off), o);
    }
  }
}

int lanes_for(int64_t C, int V) {  // TX: a power of two <= 32 covering C / V
  const int64_t need = ceil_div(C, V);
  int tx = 1;
  while (tx < 32 && tx < need) tx *= 2;
  return tx;
}

template <typename T, bool MAX, bool STD>
cudaError_t launch_reduce(bool cl, const void* x, void* out, int32_t* argmax, void* moments, Stats s, int64_t B,
                          int64_t C, int64_t N, cudaStream_t stream) {
  using A = acc_t<T>;
  constexpr int V = Vec<T>::kN;
  if (cl) {
    const int tx = lanes_for(C, V);
    const unsigned grid = grid_1d(ceil_div(B * N, kThreads / tx));
    FA_LAUNCH(grid, kThreads, 0, stream, pool_reduce_cl<T, MAX, STD>)(static_cast<const T*>(x), static_cast<T*>(out),
                                                                      argmax, static_cast<A*>(moments), s, B, C, N, tx);
  } else {
    const unsigned grid = grid_1d(ceil_div(B * ceil_div(N, V), kThreads));
    FA_LAUNCH(grid, kThreads, 0, stream, pool_reduce_nchw<T, MAX, STD>)(static_cast<const T*>(x), static_cast<T*>(out),
                                                                        argmax, static_cast<A*>(moments), s, B, C, N);
  }
  return cudaGetLastError();
}

template <typename T, bool MAX, bool STD>
cudaError_t launch_grad_input(bool cl, const void* g, const void* x, const int32_t* argmax, const void* moments,
                              void* gx, Stats s, int64_t B, int64_t C, int64_t N, cudaStream_t stream) {
  using A = acc_t<T>;
  constexpr int V = Vec<T>::kN;
  if (cl) {
    const int tx = lanes_for(C, V);
    const unsigned grid = grid_1d(ceil_div(B * N, kThreads / tx));
    FA_LAUNCH(grid, kThreads, 0, stream, pool_grad_input_cl<T, MAX, STD>)(
        static_cast<const T*>(g), static_cast<const T*>(x), argmax, static_cast<const A*>(moments), static_cast<T*>(gx),
        s, B, C, N, tx);
  } else {
    const unsigned grid = grid_1d(ceil_div(B * ceil_div(C, kChunk) * ceil_div(N, V), kThreads));
    FA_LAUNCH(grid, kThreads, 0, stream, pool_grad_input_nchw<T, MAX, STD>)(
        static_cast<const T*>(g), static_cast<const T*>(x), argmax, static_cast<const A*>(moments), static_cast<T*>(gx),
        s, B, C, N);
  }
  return cudaGetLastError();
}

}  // namespace
}  // namespace fa

using namespace fa;

extern "C" cudaError_t fa_channel_pool_reduce(int dtype, int channels_last, const void* x, void* out, int32_t* argmax,
                                              void* moments, int64_t B, int64_t C, int64_t N, int K, int stat_max,
                                              int stat_mean, int stat_std, cudaStream_t stream) {
  if (B * N == 0 || C == 0 || K == 0) return cudaSuccess;
  const Stats s{K, stat_max, stat_mean, stat_std};
  const bool cl = channels_last != 0;
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    return with_flags(stat_max >= 0, stat_std >= 0, [&](auto mx, auto sd) {
      return launch_reduce<T, decltype(mx)::value, decltype(sd)::value>(cl, x, out, argmax, moments, s, B, C, N,
                                                                        stream);
    });
  });
}

extern "C" cudaError_t fa_channel_pool_grad_input(int dtype, int channels_last, const void* grad, const void* x,
                                                  const int32_t* argmax, const void* moments, void* grad_x, int64_t B,
                                                  int64_t C, int64_t N, int K, int stat_max, int stat_mean,
                                                  int stat_std, cudaStream_t stream) {
  if (B * C * N == 0) return cudaSuccess;
  const Stats s{K, stat_max, stat_mean, stat_std};
  const bool cl = channels_last != 0;
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    return with_flags(stat_max >= 0, stat_std >= 0, [&](auto mx, auto sd) {
      return launch_grad_input<T, decltype(mx)::value, decltype(sd)::value>(cl, grad, x, argmax, moments, grad_x, s, B,
                                                                            C, N, stream);
    });
  });
}
