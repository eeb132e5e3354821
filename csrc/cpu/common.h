// Shared pieces of the CPU kernels (csrc/cpu/<family>.cpp): dtypes, layouts, deterministic reductions.
//
// Conventions of every CPU kernel:
//  * dtypes float32, float64, bfloat16, float16; math in acc_t<T> (float64 for float64, else float32), one
//    rounding to T per output element.
//  * layouts: a 4-D tensor is read in place when it is dense NCHW or dense channels_last (format_of); any other
//    strides (slices, permutations) are first copied to a dense tensor of the format its outputs take
//    (fused_attn/_layout.py's rule, mirrored by format_of). 4-D outputs take the input's format; small
//    tensors (gates, statistics, GroupNorm affine) are read as contiguous acc_t copies (small_acc).
//  * determinism: every output element is computed by one thread in an order fixed by the shapes alone; work
//    is split into units of fixed size (never by thread count) and cross-unit sums add per-unit partials in
//    unit order. Results are bitwise identical for any torch.set_num_threads.
//  * vectorisation: innermost loops run over contiguous memory (pixels for NCHW, channels for channels_last)
//    and keep kLanes independent partial sums, which the compiler maps onto SIMD registers; every kernel is
//    compiled for the baseline x86-64 ISA and for AVX2 + FMA, picked at load time (isa.h).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../layout.h"

#if defined(__SSE2__)
#include <emmintrin.h>  // streaming stores (gate_map.h's scale_streaming)
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace fa {
namespace cpu {

using at::Tensor;

// Dispatch over the dtypes the CPU kernels are compiled for.
#define FA_DISPATCH(TYPE, NAME, ...) AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, TYPE, NAME, __VA_ARGS__)

template <typename T>
using acc_t = at::opmath_type<T>;

// Asks Linux to back the 2 MB-aligned interior of a large, not yet written tensor with transparent huge pages
// (what THP_MEM_ALLOC_ENABLE=1 does for every torch CPU allocation). A new output is written page by page for
// the first time; with 4 KB pages the faults alone cost about as much as writing it (a 51 MB output: 20 ms to
// fill, 10 ms with huge pages, 6 ms into memory already mapped, measured on the 2-core dev machine).
inline void advise_huge_pages(const Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const size_t bytes = t.nbytes();
  if (bytes < 2 * kHuge) return;
  const uintptr_t p = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t begin = (p + kHuge - 1) & ~(kHuge - 1), end = (p + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // advice only: ignore errors
#else
  (void)t;
#endif
}

// A new 4-D tensor of `shape` in memory format `fmt`, with `like`'s device and dtype `dtype` (huge-page backed
// when large, see advise_huge_pages).
inline Tensor empty_4d(at::IntArrayRef shape, const Tensor& like, at::MemoryFormat fmt, at::ScalarType dtype) {
  Tensor t = at::empty(shape, like.options().dtype(dtype).memory_format(fmt));
  advise_huge_pages(t);
  return t;
}

// Bytes of input one cache-resident wave may hold (squeeze_excite_combine pools a wave of samples, then scales it
// while it is still cached): the environment variable FUSED_ATTN_CPU_WAVE_BYTES when set (tests and benchmarks
// use it to force either path), else an eighth of the last-level cache sysconf reports, clamped to [1, 4] MB
// (virtual machines often report the host's total). Small: the wave's output passes through the cache too, and
// measured on the 2-core dev machine (1 MB L2 per core, 32 MB L3), 2-4 MB waves ran 1.2-1.35x faster than one
// wave of the whole batch, 16 MB waves only 1.1x (docs/cpu.md).
inline int64_t wave_bytes() {
  if (const char* env = std::getenv("FUSED_ATTN_CPU_WAVE_BYTES")) {
    const long long v = std::atoll(env);
    if (v > 0) return static_cast<int64_t>(v);
  }
  constexpr int64_t kMB = int64_t(1) << 20;
  int64_t llc = 0;
#if defined(__linux__) && defined(_SC_LEVEL3_CACHE_SIZE)
  llc = static_cast<int64_t>(sysconf(_SC_LEVEL3_CACHE_SIZE));
  if (llc <= 0) llc = static_cast<int64_t>(sysconf(_SC_LEVEL2_CACHE_SIZE));
#endif
  if (llc <= 0) llc = 8 * kMB;
  return std::min(std::max(llc / 8, kMB), 4 * kMB);
}

// Outputs of at least this many bytes are written with non-temporal (streaming) stores by the SE-type wave
// forwards (squeeze_excite_combine, eca_combine, ese_combine): an output larger than the last-level cache cannot
// stay cached for the next layer anyway, and a streaming store skips the read-for-ownership of each output line
// (a 25.7 MB x * s pass: 1.65 -> 1.07 ms on the project's Xeon VM, docs/cpu.md). The last-level cache size
// sysconf reports (else 32 MB); FUSED_ATTN_CPU_STREAM_BYTES overrides it (1: always stream; a huge value: never).
inline int64_t stream_bytes() {
  if (const char* env = std::getenv("FUSED_ATTN_CPU_STREAM_BYTES")) {
    const long long v = std::atoll(env);
    if (v > 0) return static_cast<int64_t>(v);
  }
  int64_t llc = 0;
#if defined(__linux__) && defined(_SC_LEVEL3_CACHE_SIZE)
  llc = static_cast<int64_t>(sysconf(_SC_LEVEL3_CACHE_SIZE));
#endif
  return llc > 0 ? llc : int64_t(32) << 20;
}

inline void check_4d(const Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4, "fused_attn (cpu): ", name, " must be 4-D [B, C, H, W], got ", t.sizes());
  TORCH_CHECK(t.device().is_cpu(), "fused_attn (cpu): ", name, " must be a CPU tensor");
}

// Marks a function that folds one row into per-element accumulators (for c: row(c) updates acc[0..n)). Kept
// out of line: inlined into its caller's channel loop, GCC -O3 unroll-and-jams the pair into scalar code
// (measured 4x slower for channel_pool's Welford update).
#if defined(__GNUC__)
#define FA_ROW __attribute__((noinline))
#else
#define FA_ROW
#endif

// The lane helpers below are force-inlined: the kernels that call them may be compiled for another instruction
// set (isa.h), and a call from them into a helper compiled for the baseline would not vectorise for theirs.
#if defined(__GNUC__)
#define FA_INLINE inline __attribute__((always_inline))
#else
#define FA_INLINE inline
#endif

// Independent partial sums per reduction: 64 bytes (16 floats, 8 doubles): one AVX-512 or four SSE registers.
template <typename A>
constexpr int64_t kLanes = 64 / static_cast<int64_t>(sizeof(A));

// Sum of lanes[0..kLanes) in a fixed pairwise order.
template <typename A>
FA_INLINE A lanes_total(A* lanes) {
  for (int64_t width = kLanes<A> / 2; width > 0; width /= 2)
    for (int64_t l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  return lanes[0];
}

// body(i, l) for i < n with l = i % kLanes<A> (a compile-time constant in the main loop): accumulating into
// lanes[l] gives a loop the compiler vectorises and a summation order fixed by n alone.
template <typename A, typename F>
FA_INLINE void lane_for(int64_t n, F&& body) {
  constexpr int64_t L = kLanes<A>;
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int64_t l = 0; l < L; ++l) body(i + l, l);
  for (int64_t l = 0; i < n; ++i, ++l) body(i, l);
}

// sum_{i < n} f(i), deterministic: kLanes partial sums over the whole kLanes-blocks (the lanes stay in SIMD
// registers), their pairwise total, then the last n % kLanes terms in order. The tail goes to a scalar, not into
// the lanes: scalar stores into a lane array that the total then reads as vectors defeat store forwarding, which
// made a 49-element row (7x7 images) cost ~75 cycles.
template <typename A, typename F>
FA_INLINE A lane_sum(int64_t n, F&& f) {
  constexpr int64_t L = kLanes<A>;
  A lanes[L] = {};
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int64_t l = 0; l < L; ++l) lanes[l] += f(i + l);
  A total = lanes_total(lanes);
  for (; i < n; ++i) total += f(i);
  return total;
}

#if defined(__GNUC__)
#define FA_HAS_VEC32 1
// 32-byte SIMD vectors of A (GCC / Clang vector extensions): 8 floats or 4 doubles, one AVX2 register in the
// avx2 build (isa.h), a pair of SSE registers in the baseline. For kernels whose per-element state must stay in
// registers across a long loop, which the auto-vectoriser does not arrange (channel_pool's register columns).
template <typename A>
struct Vec32 {
  typedef A type __attribute__((vector_size(32)));
  typedef A unaligned __attribute__((vector_size(32), aligned(alignof(A))));
  // comparison results: lanes of 0 / -1 as wide as A
  typedef std::conditional_t<sizeof(A) == 8, int64_t, int32_t> mask_lane;
  typedef mask_lane mask __attribute__((vector_size(32)));
  static constexpr int64_t kLanes = 32 / static_cast<int64_t>(sizeof(A));
};

// The kLanes elements at p (any alignment), converted to A.
template <typename A, typename T>
FA_INLINE typename Vec32<A>::type load_vec32(const T* p) {
  if constexpr (std::is_same_v<T, A>) {
    return *reinterpret_cast<const typename Vec32<A>::unaligned*>(p);
  } else {
    typename Vec32<A>::type v;
    for (int64_t l = 0; l < Vec32<A>::kLanes; ++l) v[l] = A(p[l]);
    return v;
  }
}
#else
#define FA_HAS_VEC32 0
#endif

// Runs f(unit) for unit in [0, n) on the intra-op thread pool. Work units are fixed by the caller, so which
// thread runs a unit never changes what it computes.
template <typename F>
inline void parallel_units(int64_t n, F&& f) {
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) f(u);
  });
}

// out[b, c] = sum_k partial[b, k, c], k = 0..K-1 added in order (the deterministic merge of per-unit partial
// sums); rows of C are added whole, so the loop over c vectorises.
template <typename A, typename T>
inline void sum_partials(const A* partial, T* out, int64_t B, int64_t K, int64_t C) {
  std::vector<A> acc(static_cast<size_t>(C));
  for (int64_t b = 0; b < B; ++b) {
    const A* __restrict__ p = partial + b * K * C;
    A* __restrict__ a = acc.data();
    if (K > 0) std::copy(p, p + C, a);
    else std::fill(a, a + C, A(0));
    for (int64_t k = 1; k < K; ++k)
      for (int64_t c = 0; c < C; ++c) a[c] += p[k * C + c];
    T* __restrict__ o = out + b * C;
    for (int64_t c = 0; c < C; ++c) o[c] = static_cast<T>(a[c]);
  }
}

// Deterministic parallel reduction into out [B, n]: each of the B * K units (b, k) adds into its own zero-filled
// partial row of n via f(b, k, part); the K rows of each b are then added in k order (sum_partials).
template <typename A, typename T, typename F>
inline void reduce_in_parts(T* out, int64_t B, int64_t K, int64_t n, F&& f) {
  std::vector<A> partial(static_cast<size_t>(B * K * n));
  parallel_units(B * K, [&](int64_t u) {
    A* __restrict__ part = partial.data() + u * n;
    std::fill(part, part + n, A(0));
    f(u / K, u % K, part);
  });
  sum_partials(partial.data(), out, B, K, n);
}

// exp(v) in float without a libm call, so that loops over it vectorise: v = k ln2 + r with |r| <= ln2 / 2,
// exp(r) by the Cephes expf polynomial (relative error ~1e-7), 2^k written into the exponent bits; v is
// clamped to [-87, 88] (the normal range); NaN stays NaN.
FA_INLINE float fast_exp(float v) {
  v = std::min(std::max(v, -87.0f), 88.0f);
  const float k = (v * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23)
  const float r = (v - k * 0.693359375f) - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

template <typename A>
FA_INLINE A sigmoid(A v) {
  return A(1) / (A(1) + std::exp(-v));
}

}  // namespace cpu
}  // namespace fa
