// CUDA kernels of apply_gates, and the building blocks that the passes of squeeze_excite, dual_attention,
// ema_strip_pool and ema_core also use (launchers.h has the contracts; fused_attn/backends/reference/
// apply_gates.py is the oracle):
//
//   fa_gate_map        out = (in * scale[b, c]) * spatial[b, p] + add + shift[b, c] / shift_div
//                            + outer_c[c] outer_p[b, p]                                          (elementwise)
//   fa_tile_sums       per image, an R x L matrix (rows x contiguous columns): optional gated copy
//                      out = a row_gate[r] col_gate[l], and the partial sums of e = a * m along rows (weighted by
//                      col_gate) and along columns (weighted by row_gate) in one pass
//   fa_merge_partials  the second stage of every cross-block sum, in a fixed order
//
// apply_gates_combine is one fa_gate_map; apply_gates_grads one fa_tile_sums over (g, y) + merges:
//   grad_y = g channel spatial;  grad_channel = sum_p g y spatial;  grad_spatial = sum_c g y channel.
// The NCHW matrix is channels x pixels, the channels_last one pixels x channels; the two gates swap roles.
//
// Memory: each thread owns VEC = 16 / sizeof(T) consecutive elements of a row (one 16-byte load or store when
// aligned and whole, else scalar accesses); reads and writes are coalesced in both layouts; 64-bit indices.
// Determinism: a column tile's row sum is a butterfly over the TX lanes that hold it; a row chunk's column sum
// adds the TY thread rows in order; tiles and chunks are added in order by fa_merge_partials. The geometry
// (fa_tile_geometry) depends on dtype and shapes only, never on alignment or the device.
#include "kernel_utils.cuh"

namespace fa {
namespace {

constexpr int kThreads = 256;

// ---------------------------------------------------------------------------------------------- gate_map
// The tensor as rows of L contiguous elements (NCHW: (b, c) rows of N pixels; channels_last: (b, p) rows of C
// channels), cut into vectors of VEC elements (the last one of a row may be short). Blocks take tiles of
// kThreads vectors, from the end when `reverse`.
template <typename T, bool CL>
__global__ void __launch_bounds__(kThreads)
    gate_map_kernel(const T* __restrict__ in, const acc_t<T>* __restrict__ scale, const acc_t<T>* __restrict__ spatial,
                    const T* __restrict__ add, const acc_t<T>* __restrict__ shift, acc_t<T> shift_div,
                    const acc_t<T>* __restrict__ outer_c, const acc_t<T>* __restrict__ outer_p, T* __restrict__ out,
                    int64_t C, int64_t N, int64_t L, int64_t vecs_per_row, int64_t total_vecs, bool reverse) {
  using A = acc_t<T>;
  constexpr int V = Vec<T>::kN;
  const int64_t tiles = ceil_div(total_vecs, kThreads);
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t tile = reverse ? tiles - 1 - t : t;
    const int64_t v = tile * kThreads + threadIdx.x;
    if (v >= total_vecs) continue;
    const int64_t row = v / vecs_per_row, l0 = (v - row * vecs_per_row) * V;
    const int n = static_cast<int>(L - l0 < V ? L - l0 : V);
    const int64_t off = row * L + l0;
    // (b, c, p) of the vector's first element; along the vector p advances (NCHW) or c does (channels_last)
    int64_t b, c, p;
    if (CL) {
      b = row / N;
      p = row - b * N;
      c = l0;
    } else {
      b = row / C;
      c = row - b * C;
      p = l0;
    }
    A xv[V], av[V];
    if (in) load_acc<T, V>(in + off, n, n == V && aligned16(in + off), xv);
    if (add) load_acc<T, V>(add + off, n, n == V && aligned16(add + off), av);
    A res[V];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const int64_t ck = CL ? c + k : c, pk = CL ? p : p + k;
      const bool live = k < n;
      A r = A(0);
      if (in) {
        r = xv[k];
        if (scale) r *= live ? scale[b * C + ck] : A(0);
        if (spatial) r *= live ? spatial[b * N + pk] : A(0);
      }
      if (add) r += av[k];
      if (shift) r += (live ? shift[b * C + ck] : A(0)) / shift_div;
      if (outer_c && live) r += outer_c[ck] * outer_p[b * N + pk];
      res[k] = r;
    }
    store_acc<T, V>(out + off, n, n == V && aligned16(out + off), res);
  }
}

// ---------------------------------------------------------------------------------------------- tile sums
// Block u -> (b, row chunk k, column tile t). Thread (ty, tx) owns columns l0 .. l0 + VEC - 1 and rows
// r = k * chunk_rows + ty + j * TY, j < 8 (every thread runs all 8 steps so that the lane shuffles see full warps).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    tile_sums_kernel(const T* __restrict__ a, const T* __restrict__ m, T* __restrict__ out,
                     const acc_t<T>* __restrict__ row_gate, const acc_t<T>* __restrict__ col_gate,
                     acc_t<T>* __restrict__ row_part, acc_t<T>* __restrict__ col_part, int64_t nb, int64_t R, int64_t L,
                     int tx_n, int64_t col_tiles, int64_t row_chunks) {
  using A = acc_t<T>;
  constexpr int V = Vec<T>::kN;
  __shared__ A cols[kThreads * V];
  const int ty_n = kThreads / tx_n;
  const int tx = threadIdx.x % tx_n, ty = threadIdx.x / tx_n;
  const int64_t tile_cols = static_cast<int64_t>(tx_n) * V, chunk_rows = 8LL * ty_n;
  const int64_t units = nb * row_chunks * col_tiles;
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
    const int64_t t = u % col_tiles, k = (u / col_tiles) % row_chunks, b = u / (col_tiles * row_chunks);
    const int64_t l0 = t * tile_cols + tx * V;
    const int n = l0 >= L ? 0 : static_cast<int>(L - l0 < V ? L - l0 : V);
    A cg[V], cacc[V];
#pragma unroll
    for (int q = 0; q < V; ++q) {
      cg[q] = (col_gate && q < n) ? col_gate[b * L + l0 + q] : A(1);
      cacc[q] = A(0);
    }
    for (int j = 0; j < 8; ++j) {
      const int64_t r = k * chunk_rows + ty + static_cast<int64_t>(j) * ty_n;
      const bool row_ok = r < R;
      const int nr = row_ok ? n : 0;
      const int64_t off = (b * R + (row_ok ? r : 0)) * L + l0;
      A av[V], mv[V];
      load_acc<T, V>(a + off, nr, nr == V && aligned16(a + off), av);
      if (m) load_acc<T, V>(m + off, nr, nr == V && aligned16(m + off), mv);
      const A rg = (row_gate && row_ok) ? row_gate[b * R + r] : A(1);
      if (out && nr > 0) {
        A o[V];
#pragma unroll
        for (int q = 0; q < V; ++q) o[q] = (av[q] * rg) * cg[q];
        store_acc<T, V>(out + off, nr, nr == V && aligned16(out + off), o);
      }
      A rs = A(0);
#pragma unroll
      for (int q = 0; q < V; ++q) {
        const A e = m ? av[q] * mv[q] : av[q];
        rs += e * cg[q];
        cacc[q] += e * rg;
      }
      if (row_part) {
        rs = group_sum(rs, tx_n);
        if (tx == 0 && row_ok) row_part[(b * col_tiles + t) * R + r] = rs;
      }
    }
    if (col_part) {
      __syncthreads();  // the previous unit's reads of `cols` are done
#pragma unroll
      for (int q = 0; q < V; ++q) cols[ty * tile_cols + tx * V + q] = cacc[q];
      __syncthreads();
      const int64_t l = t * tile_cols + threadIdx.x;
      if (threadIdx.x < tile_cols && l < L) {
        A s = A(0);
        for (int y = 0; y < ty_n; ++y) s += cols[y * tile_cols + threadIdx.x];
        col_part[(b * row_chunks + k) * L + l] = s;
      }
    }
  }
}

// ----------------------------------------------------------------------------------------- merge partials
template <typename A, typename O>
__global__ void __launch_bounds__(kThreads)
    merge_kernel(const A* __restrict__ part, O* __restrict__ out, int64_t nb, int64_t K, int64_t n, A divisor,
                 int64_t b_inner, int64_t ob1, int64_t ob2, int64_t i_inner, int64_t os1, int64_t os2, int64_t offset) {
  const int64_t total = nb * n;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = e / n, i = e - b * n;
    const A* p = part + b * K * n + i;
    A s = A(0);
    for (int64_t k = 0; k < K; ++k) s += p[k * n];
    const int64_t o = (b / b_inner) * ob1 + (b % b_inner) * ob2 + (i / i_inner) * os1 + (i % i_inner) * os2 + offset;
    out[o] = from_acc<O>(s / divisor);
  }
}

}  // namespace
}  // namespace fa

using namespace fa;

extern "C" cudaError_t fa_gate_map(int dtype, int channels_last, fa_gate_map_args a, int64_t B, int64_t C, int64_t N,
                                   cudaStream_t stream) {
  if (B * C * N == 0) return cudaSuccess;
  if ((a.outer_c == nullptr) != (a.outer_p == nullptr)) return cudaErrorInvalidValue;
  if (a.shift != nullptr && a.shift_div == 0) return cudaErrorInvalidValue;
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int V = Vec<T>::kN;
    const int64_t L = channels_last ? C : N, rows = B * (channels_last ? N : C);
    const int64_t vpr = ceil_div(L, V), total = rows * vpr;
    const unsigned grid = grid_1d(ceil_div(total, kThreads));
    auto kernel = channels_last ? gate_map_kernel<T, true> : gate_map_kernel<T, false>;
    FA_LAUNCH(grid, kThreads, 0, stream, kernel)(static_cast<const T*>(a.in), static_cast<const A*>(a.scale),
                                                 static_cast<const A*>(a.spatial), static_cast<const T*>(a.add),
                                                 static_cast<const A*>(a.shift), static_cast<A>(a.shift_div),
                                                 static_cast<const A*>(a.outer_c), static_cast<const A*>(a.outer_p),
                                                 static_cast<T*>(a.out), C, N, L, vpr, total, a.reverse != 0);
    return cudaGetLastError();
  });
}

extern "C" cudaError_t fa_tile_sums(int dtype, fa_tile_sums_args t, int64_t nb, int64_t R, int64_t L,
                                    cudaStream_t stream) {
  if (nb * R * L == 0) return cudaSuccess;
  const fa_tile_geom g = fa_tile_geometry(dtype, R, L);
  return dispatch(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    const unsigned grid = grid_1d(nb * g.row_chunks * g.col_tiles);
    FA_LAUNCH(grid, kThreads, 0, stream, tile_sums_kernel<T>)(
        static_cast<const T*>(t.a), static_cast<const T*>(t.m), static_cast<T*>(t.out),
        static_cast<const A*>(t.row_gate), static_cast<const A*>(t.col_gate), static_cast<A*>(t.row_part),
        static_cast<A*>(t.col_part), nb, R, L, static_cast<int>(g.tx), g.col_tiles, g.row_chunks);
    return cudaGetLastError();
  });
}

extern "C" cudaError_t fa_merge_partials(int in_dtype, int out_dtype, const void* part, void* out, int64_t nb,
                                         int64_t K, int64_t n, fa_merge_out o, cudaStream_t stream) {
  if (nb * n == 0) return cudaSuccess;
  if (o.b_inner < 1 || o.i_inner < 1) return cudaErrorInvalidValue;
  const unsigned grid = grid_1d(ceil_div(nb * n, kThreads));
  auto run = [&](auto acc_tag) -> cudaError_t {
    using A = decltype(acc_tag);
    return dispatch(out_dtype, [&](auto out_tag) -> cudaError_t {
      using O = decltype(out_tag);
      FA_LAUNCH(grid, kThreads, 0, stream, merge_kernel<A, O>)(static_cast<const A*>(part), static_cast<O*>(out), nb, K,
                                                               n, static_cast<A>(o.divisor), o.b_inner, o.ob1, o.ob2,
                                                               o.i_inner, o.os1, o.os2, o.offset);
      return cudaGetLastError();
    });
  };
  return in_dtype == FA_FLOAT64 ? run(double{}) : run(float{});
}
