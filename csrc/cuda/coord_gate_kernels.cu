// CUDA kernels of coord_gate (launchers.h has the contracts; fused_attn/backends/reference/coord_gate.py is the
// oracle). mode 0 ("none"): out = (x * a_w) * a_h; mode 1 / 2 / 3 ("sigmoid" / "hardsigmoid"): out = x * gate(a_h +
// a_w); + x when skip. Hardsigmoid rounds as torch does on the tensors' device: mode 2 min(max(z + 3, 0), 6) / 6
// (torch's CPU kernel: CPU tensors, the emulator), mode 3 the same times the float32 1/6 (torch's CUDA kernel,
// which multiplies by its float32 one_sixth in every dtype: 3e-8 relative in float64).
//
//   fa_coord_gate_combine  elementwise, one read and one write of x (64-bit grid-stride loop)
//   fa_coord_gate_grads    one pass over (g, x): grad_x, and deterministic partial sums of the gate gradients
//     NCHW: block = (plane b c, chunk of kRowsPerThread * TY rows); TX lanes (<= 32, one warp's slice) walk a row's
//           columns, TY thread rows its rows. A row's sum (grad_a_h) is complete in the block: per thread over its
//           columns, then a butterfly over the TX lanes; a column's sum over the chunk (grad_a_w) adds the TY
//           thread rows in order in shared memory -> part [B C][chunks][W].
//     channels_last: block = (b, chunk of kRowsPerThread image rows, tile of TX channels); TY thread rows walk the
//           row's pixels j. grad_a_h[b, i, c] adds the TY partials in order (complete: whole rows); grad_a_w's
//           chunk partials -> part [B][chunks][W][C].
//   The bindings merge the partials with fa_merge_partials (fixed order, transposing where the layout needs it).
// Gates arrive as acc arrays: NCHW [B, C, H] / [B, C, W], channels_last transposed to [B, H, C] / [B, W, C].
#include "kernel_utils.cuh"

namespace fa {
namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerThread = 4;

template <int M, typename A>
__device__ __forceinline__ A gate_value(A z) {
  if (M == 1) return sigmoid(z);
  if (M == 3) return fmin(fmax(z + A(3), A(0)), A(6)) * A(1.0f / 6.0f);
  return fmin(fmax(z + A(3), A(0)), A(6)) / A(6);
}

// one element of the forward
template <int M, bool SKIP, typename A>
__device__ __forceinline__ A combine_one(A xv, A hv, A wv) {
  A r = M == 0 ? (xv * wv) * hv : xv * gate_value<M>(hv + wv);
  if (SKIP) r += xv;
  return r;
}

// one element of the backward -> grad_x; dh, dw: its terms of grad_a_h and grad_a_w
template <int M, bool SKIP, typename A>
__device__ __forceinline__ A grads_one(A gv, A xv, A hv, A wv, A& dh, A& dw) {
  const A e = gv * xv;
  A gx;
  if (M == 0) {
    gx = (gv * hv) * wv;
    dh = e * wv;
    dw = e * hv;
  } else {
    const A z = hv + wv;
    const A s = gate_value<M>(z);
    // hardsigmoid: torch's float32 1/6 strictly inside (-3, 3), in every dtype
    const A ds = M == 1 ? s * (A(1) - s) : ((z > A(-3) && z < A(3)) ? A(1.0f / 6.0f) : A(0));
    gx = gv * s;
    dh = dw = e * ds;
  }
  if (SKIP) gx += gv;
  return gx;
}

template <typename T, int M, bool SKIP, bool CL>
__global__ void __launch_bounds__(kThreads)
    combine_kernel(const T* __restrict__ x, const acc_t<T>* __restrict__ ah, const acc_t<T>* __restrict__ aw,
                   T* __restrict__ out, int64_t C, int64_t H, int64_t W, int64_t total) {
  using A = acc_t<T>;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t hi, wi;
    if (CL) {  // e = ((b H + i) W + j) C + c
      const int64_t c = e % C, r = e / C, j = r % W, bi = r / W, b = bi / H;
      hi = bi * C + c;
      wi = (b * W + j) * C + c;
    } else {  // e = ((b C + c) H + i) W + j
      const int64_t j = e % W, q = e / W;
      hi = q;
      wi = (q / H) * W + j;
    }
    out[e] = from_acc<T>(combine_one<M, SKIP>(to_acc<A>(x[e]), ah[hi], aw[wi]));
  }
}

// NCHW grads. Block u -> (plane q = b C + c, row chunk k); thread (ty, tx); rows i = k chunk + ty + r TY.
template <typename T, int M, bool SKIP>
__global__ void __launch_bounds__(kThreads)
    grads_nchw_kernel(const T* __restrict__ g, const T* __restrict__ x, const acc_t<T>* __restrict__ ah,
                      const acc_t<T>* __restrict__ aw, T* __restrict__ gx, acc_t<T>* __restrict__ gh,
                      acc_t<T>* __restrict__ part, int64_t planes, int64_t H, int64_t W, int tx_n, int64_t chunks) {
  using A = acc_t<T>;
  __shared__ A cols[kThreads];
  const int ty_n = kThreads / tx_n;
  const int tx = threadIdx.x % tx_n, ty = threadIdx.x / tx_n;
  const int64_t chunk_rows = static_cast<int64_t>(kRowsPerThread) * ty_n;
  const int64_t tiles = ceil_div(W, tx_n);
  for (int64_t u = blockIdx.x; u < planes * chunks; u += gridDim.x) {
    const int64_t q = u / chunks, k = u % chunks;
    A racc[kRowsPerThread];
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) racc[r] = A(0);
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t j = t * tx_n + tx;
      const bool jok = j < W;
      const A wv = jok ? aw[q * W + j] : A(0);
      A cacc = A(0);
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) {
        const int64_t i = k * chunk_rows + ty + static_cast<int64_t>(r) * ty_n;
        if (jok && i < H) {
          const int64_t off = (q * H + i) * W + j;
          A dh, dw;
          gx[off] = from_acc<T>(grads_one<M, SKIP>(to_acc<A>(g[off]), to_acc<A>(x[off]), ah[q * H + i], wv, dh, dw));
          racc[r] += dh;
          cacc += dw;
        }
      }
      __syncthreads();  // the previous tile's reads of `cols` are done
      cols[threadIdx.x] = cacc;
      __syncthreads();
      if (ty == 0 && jok) {
        A s = A(0);
        for (int y = 0; y < ty_n; ++y) s += cols[y * tx_n + tx];
        part[(q * chunks + k) * W + j] = s;
      }
    }
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) {
      const A v = group_sum(racc[r], tx_n);
      const int64_t i = k * chunk_rows + ty + static_cast<int64_t>(r) * ty_n;
      if (tx == 0 && i < H) gh[q * H + i] = v;
    }
  }
}

// channels_last grads. Block u -> (b, row chunk k, channel tile ct); thread (ty, tx): channel c = ct TX + tx, pixels
// j = ty + s TY; rows i = k kRowsPerThread + r. gh: [B][H][C] complete; part [B][chunks][W][C].
template <typename T, int M, bool SKIP>
__global__ void __launch_bounds__(kThreads)
    grads_cl_kernel(const T* __restrict__ g, const T* __restrict__ x, const acc_t<T>* __restrict__ ah,
                    const acc_t<T>* __restrict__ aw, T* __restrict__ gx, acc_t<T>* __restrict__ gh,
                    acc_t<T>* __restrict__ part, int64_t B, int64_t C, int64_t H, int64_t W, int tx_n, int64_t chunks,
                    int64_t ctiles) {
  using A = acc_t<T>;
  __shared__ A rows[kRowsPerThread * kThreads];
  const int ty_n = kThreads / tx_n;
  const int tx = threadIdx.x % tx_n, ty = threadIdx.x / tx_n;
  for (int64_t u = blockIdx.x; u < B * chunks * ctiles; u += gridDim.x) {
    const int64_t ct = u % ctiles, k = (u / ctiles) % chunks, b = u / (ctiles * chunks);
    const int64_t c = ct * tx_n + tx;
    const bool cok = c < C;
    A racc[kRowsPerThread], hv[kRowsPerThread];
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) {
      const int64_t i = k * kRowsPerThread + r;
      racc[r] = A(0);
      hv[r] = (cok && i < H) ? ah[(b * H + i) * C + c] : A(0);
    }
    for (int64_t j = ty; j < W; j += ty_n) {
      const A wv = cok ? aw[(b * W + j) * C + c] : A(0);
      A cacc = A(0);
#pragma unroll
      for (int r = 0; r < kRowsPerThread; ++r) {
        const int64_t i = k * kRowsPerThread + r;
        if (cok && i < H) {
          const int64_t off = ((b * H + i) * W + j) * C + c;
          A dh, dw;
          gx[off] = from_acc<T>(grads_one<M, SKIP>(to_acc<A>(g[off]), to_acc<A>(x[off]), hv[r], wv, dh, dw));
          racc[r] += dh;
          cacc += dw;
        }
      }
      if (cok) part[((b * chunks + k) * W + j) * C + c] = cacc;
    }
    __syncthreads();  // the previous unit's reads of `rows` are done
#pragma unroll
    for (int r = 0; r < kRowsPerThread; ++r) rows[r * kThreads + threadIdx.x] = racc[r];
    __syncthreads();
    if (threadIdx.x < kRowsPerThread * tx_n) {
      const int r = threadIdx.x / tx_n, lx = threadIdx.x % tx_n;
      const int64_t i = k * kRowsPerThread + r, cc = ct * tx_n + lx;
      if (i < H && cc < C) {
        A s = A(0);
        for (int y = 0; y < ty_n; ++y) s += rows[r * kThreads + y * tx_n + lx];
        gh[(b * H + i) * C + cc] = s;
      }
    }
  }
}

template <typename F>
cudaError_t with_mode(int mode, int skip, F&& f) {
  auto go = [&](auto m) -> cudaError_t {
    if (skip) return f(m, std::true_type{});
    return f(m, std::false_type{});
  };
  switch (mode) {
    case 0:
      return go(std::integral_constant<int, 0>{});
    case 1:
      return go(std::integral_constant<int, 1>{});
    case 2:
      return go(std::integral_constant<int, 2>{});
    case 3:
      return go(std::integral_constant<int, 3>{});
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace
}  // namespace fa

using namespace fa;

extern "C" cudaError_t fa_coord_gate_combine(int dtype, int channels_last, int mode, int skip, const void* x,
                                             const void* ah, const void* aw, void* out, int64_t B, int64_t C, int64_t H,
                                             int64_t W, cudaStream_t stream) {
  const int64_t total = B * C * H * W;
  if (total == 0) return cudaSuccess;
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    return with_mode(mode, skip, [&](auto m, auto s) -> cudaError_t {
      constexpr int M = decltype(m)::value;
      constexpr bool S = decltype(s)::value;
      auto kernel = channels_last ? combine_kernel<T, M, S, true> : combine_kernel<T, M, S, false>;
      FA_LAUNCH(grid_1d(ceil_div(total, kThreads)), kThreads, 0, stream, kernel)(
          static_cast<const T*>(x), static_cast<const A*>(ah), static_cast<const A*>(aw), static_cast<T*>(out), C, H, W,
          total);
      return cudaGetLastError();
    });
  });
}

extern "C" cudaError_t fa_coord_gate_grads(int dtype, int channels_last, int mode, int skip, const void* grad,
                                           const void* x, const void* ah, const void* aw, void* grad_x, void* gh,
                                           void* part, int64_t B, int64_t C, int64_t H, int64_t W,
                                           cudaStream_t stream) {
  if (B * C * H * W == 0) return cudaSuccess;
  const fa_coord_geom geo = fa_coord_geometry(channels_last, C, H, W);
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    return with_mode(mode, skip, [&](auto m, auto s) -> cudaError_t {
      constexpr int M = decltype(m)::value;
      constexpr bool S = decltype(s)::value;
      if (channels_last) {
        FA_LAUNCH(grid_1d(B * geo.chunks * geo.ctiles), kThreads, 0, stream, grads_cl_kernel<T, M, S>)(
            static_cast<const T*>(grad), static_cast<const T*>(x), static_cast<const A*>(ah), static_cast<const A*>(aw),
            static_cast<T*>(grad_x), static_cast<A*>(gh), static_cast<A*>(part), B, C, H, W, static_cast<int>(geo.tx),
            geo.chunks, geo.ctiles);
      } else {
        FA_LAUNCH(grid_1d(B * C * geo.chunks), kThreads, 0, stream, grads_nchw_kernel<T, M, S>)(
            static_cast<const T*>(grad), static_cast<const T*>(x), static_cast<const A*>(ah), static_cast<const A*>(aw),
            static_cast<T*>(grad_x), static_cast<A*>(gh), static_cast<A*>(part), B * C, H, W, static_cast<int>(geo.tx),
            geo.chunks);
      }
      return cudaGetLastError();
    });
  });
}
