// Shared device code of the CUDA kernels (csrc/cuda/*_kernels.cu): type traits and conversions, 16-byte vector
// loads and stores with a scalar fallback, warp and block reductions in a fixed order, launch helpers.
// Torch-free: only CUDA headers (see launchers.h for the conventions every kernel follows).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <type_traits>

#include "launchers.h"

// Launches and dynamic shared memory go through these two macros so that tools/cuda_emu (a CPU emulator of the
// CUDA execution model, which CI uses to run these kernels without a GPU) can compile the files as plain C++
// with its own definitions:
//   FA_LAUNCH(grid, block, smem, stream, kernel)(args...)   kernel<<<grid, block, smem, stream>>>(args...)
//   FA_DYNAMIC_SMEM(name);                                  the block's dynamic shared memory, 16-byte aligned
#ifndef FA_CUDA_EMULATION
#define FA_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define FA_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace fa {

// ----------------------------------------------------------------------------------------------- type traits
template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};
template <typename T>
using acc_t = typename Acc<T>::type;

template <typename A, typename T>
__device__ __forceinline__ A to_acc(T v) {
  return static_cast<A>(v);
}
template <>
__device__ __forceinline__ float to_acc<float, __half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_acc<float, __nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T, typename A>
__device__ __forceinline__ T from_acc(A v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ __half from_acc<__half, float>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16, float>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_acc<__half, double>(double v) {  // a half output of a float64 sum
  return __double2half(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16, double>(double v) {
  return __double2bfloat16(v);
}

template <typename A>
__device__ __forceinline__ A sigmoid(A v) {
  return A(1) / (A(1) + exp(-v));
}
template <>
__device__ __forceinline__ float sigmoid<float>(float v) {
  return 1.0f / (1.0f + expf(-v));
}

template <typename A>
__device__ __forceinline__ A acc_sqrt(A v) {
  return sqrt(v);
}
template <>
__device__ __forceinline__ float acc_sqrt<float>(float v) {
  return sqrtf(v);
}

// ------------------------------------------------------------------------------------ 16-byte vector access
// VEC elements of T in one 16-byte transaction.
template <typename T>
struct Vec {
  static constexpr int kN = 16 / static_cast<int>(sizeof(T));
};

template <typename T, int N>
struct alignas(16) Pack {
  T v[N];
};

__device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// dst[k] = acc(src[k]) for k < n (n <= N); one 16-byte load when `full` (n == N and src 16-byte aligned).
template <typename T, int N, typename A>
__device__ __forceinline__ void load_acc(const T* __restrict__ src, int n, bool full, A (&dst)[N]) {
  if (full) {
    const Pack<T, N> p = *reinterpret_cast<const Pack<T, N>*>(src);
#pragma unroll
    for (int k = 0; k < N; ++k) dst[k] = to_acc<A>(p.v[k]);
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) dst[k] = k < n ? to_acc<A>(src[k]) : A(0);
  }
}

template <typename T, int N, typename A>
__device__ __forceinline__ void store_acc(T* __restrict__ dst, int n, bool full, const A (&src)[N]) {
  if (full) {
    Pack<T, N> p;
#pragma unroll
    for (int k = 0; k < N; ++k) p.v[k] = from_acc<T>(src[k]);
    *reinterpret_cast<Pack<T, N>*>(dst) = p;
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k)
      if (k < n) dst[k] = from_acc<T>(src[k]);
  }
}

// ------------------------------------------------------------------------------------------------ reductions
// Butterfly sum over `width` consecutive lanes (a power of two <= 32); every lane gets the total, in an order
// fixed by width alone.
template <typename A>
__device__ __forceinline__ A group_sum(A v, int width) {
  for (int off = width / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off, width);
  return v;
}

// (value, index) maximum with torch.argmax's rules: NaN beats any number (the first NaN wins), larger beats
// smaller, ties go to the smaller index. Associative and commutative, so any reduction tree gives the answer of
// the sequential scan.
template <typename A>
__device__ __forceinline__ void max_merge(A& v, int32_t& i, A ov, int32_t oi) {
  const bool vn = v != v, on = ov != ov;
  bool take;
  if (vn || on) take = on && (!vn || oi < i);
  else take = ov > v || (ov == v && oi < i);
  if (take) {
    v = ov;
    i = oi;
  }
}

template <typename A>
__device__ __forceinline__ void group_max(A& v, int32_t& i, int width) {
  for (int off = width / 2; off > 0; off /= 2) {
    const A ov = __shfl_xor_sync(0xffffffffu, v, off, width);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, i, off, width);
    max_merge(v, i, ov, oi);
  }
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024): warp butterflies, then warp 0 adds the warp totals
// in warp order. Every thread gets the total. `scratch`: 32 A in shared memory; two __syncthreads.
template <typename A>
__device__ __forceinline__ A block_sum(A v, A* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = group_sum(v, 32);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  A t = A(0);
  for (int k = 0; k < warps; ++k) t += scratch[k];
  return t;
}

// ---------------------------------------------------------------------------------------------- host helpers
__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// A 1-D grid of at most `cap` blocks (kernels loop over the rest with a block-stride loop).
inline unsigned grid_1d(int64_t blocks, int64_t cap = 65535LL * 16) {
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks < cap ? blocks : cap));
}

// Runs f.template operator()<T>() for the dtype code (the `dispatch` of every extern "C" launcher).
template <typename F>
cudaError_t dispatch(int dtype, F&& f) {
  switch (dtype) {
    case FA_FLOAT32:
      return f(float{});
    case FA_FLOAT64:
      return f(double{});
    case FA_FLOAT16:
      return f(__half{});
    case FA_BFLOAT16:
      return f(__nv_bfloat16{});
    default:
      return cudaErrorInvalidValue;
  }
}

// Runs f(std::integral_constant<bool, a>{}, std::integral_constant<bool, b>{}) for two runtime flags: picks the
// kernel instantiation whose compile-time flags match (layout x tile cache, statistic subsets, ...).
template <typename F>
cudaError_t with_flags(bool a, bool b, F&& f) {
  using yes = std::true_type;
  using no = std::false_type;
  if (a) return b ? f(yes{}, yes{}) : f(yes{}, no{});
  return b ? f(no{}, yes{}) : f(no{}, no{});
}

}  // namespace fa
