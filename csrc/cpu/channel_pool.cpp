// CPU kernels of channel_pool (fused_attn/backends/reference/channel_pool.py is the oracle): per pixel p of
// image b, over the C channels x_c = x[b, c, p]:
//
//   max  = max_c x_c, argmax = the first c holding it (NaN counts as the maximum, as torch.argmax)
//   mean = sum_c x_c / C
//   std  = sqrt(sum_c (x_c - mean)^2 / (C - 1))         (unbiased; C = 1 gives NaN, as torch.std)
//
// channel_pool_reduce -> (out [B, K, H, W] in x's layout, argmax [B, H, W] int32 | [0], moments [B, 2, H, W] =
//     (mean, std) in the accumulation dtype | [0]), K = number of requested stats, in request order.
// channel_pool_grad_input -> grad_x[c] = [c == argmax] g_max + g_mean / C + g_std (x_c - mean) / ((C - 1) std)
//     (the std term is zero where std == 0).
//
// channel_pool_reduce reads x once from memory. NCHW images of at least kWideImagePixels pixels: with std,
// register columns of 16 fp32 pixels walk down the C channels holding max/argmax/sum in SIMD registers (each row
// prefetched ahead), then walk down again, from L1, for the squared deviations from the exact mean (never
// E[x^2] - E[x]^2); without std, the row path below with kGroupRows channel rows folded per pass over its state.
// Smaller images (and the pixels past the last full vector): the row path, a unit is a block of contiguous
// pixels of one image (with std: sized so its C rows stay in L2) and the channels are the outer loop, so every
// load is a contiguous, vectorised row; the per-pixel state lives in L1 arrays, the squared deviations come from
// a second pass over the unit's rows from L2. channels_last: a unit is a block of pixels, each pixel's C
// channels are contiguous and stay in L1: sum and max in one lane-parallel pass, the squared deviations from
// the exact mean in a second pass over the same cached row, argmax as the first index equal to the max.
#include "../channel_pool_stats.h"
#include "common.h"
#include "isa.h"

FA_ISA_BEGIN
namespace fa {
namespace cpu {
namespace FA_ISA {

using Stats = PoolStats;

// Index type as wide as A, so that the argmax select vectorises alongside the max.
template <typename A>
using index_t = std::conditional_t<sizeof(A) == 8, int64_t, int32_t>;

template <typename A>
inline bool takes_max(A v, A m) {  // v replaces the running max m: larger, or the first NaN
  return (v > m) | ((v != v) & (m == m));
}

// Writes the requested statistics of pixel p (flat index within image b) to out / argmax / moments.
template <typename T, typename A>
inline void store_stats(const Stats& s, T* out, int32_t* argmax, A* moments, int64_t b, int64_t p, int64_t N, bool cl,
                        A mx, int64_t am, A mean, A std) {
  auto plane = [&](int64_t k) -> T& { return cl ? out[(b * N + p) * s.k + k] : out[(b * s.k + k) * N + p]; };
  if (s.max >= 0) {
    plane(s.max) = static_cast<T>(mx);
    argmax[b * N + p] = static_cast<int32_t>(am);
  }
  if (s.mean >= 0) plane(s.mean) = static_cast<T>(mean);
  if (s.std >= 0) {
    plane(s.std) = static_cast<T>(std);
    moments[(b * 2) * N + p] = mean;
    moments[(b * 2 + 1) * N + p] = std;
  }
}

// One channel row folded into the running per-pixel statistics of an NCHW block: max/argmax and the plain sum
// (SUM). Out of line on purpose (FA_ROW).
template <typename T, bool MAX, bool SUM>
FA_ROW void pool_row(const T* __restrict__ row, int64_t n, index_t<acc_t<T>> ci, acc_t<T>* __restrict__ mx,
                     index_t<acc_t<T>>* __restrict__ am, acc_t<T>* __restrict__ sm) {
  using A = acc_t<T>;
  for (int64_t i = 0; i < n; ++i) {
    const A v = A(row[i]);
    if (MAX) {
      const bool gt = takes_max(v, mx[i]);
      mx[i] = gt ? v : mx[i];
      am[i] = gt ? ci : am[i];
    }
    if (SUM) sm[i] += v;
  }
}

// One channel row's squared deviations from the block's exact means, added to ss (the std's second pass).
template <typename T>
FA_ROW void squared_deviation_row(const T* __restrict__ row, int64_t n, const acc_t<T>* __restrict__ mean,
                                  acc_t<T>* __restrict__ ss) {
  using A = acc_t<T>;
  for (int64_t i = 0; i < n; ++i) {
    const A d = A(row[i]) - mean[i];
    ss[i] += d * d;
  }
}

// Pixels per NCHW unit: 1024 (4 KB fp32 rows, long enough for the prefetchers), fewer with std so that the
// unit's C rows stay in half of a core's L2 (512 KB) for the second pass; a multiple of 64, fixed by the stats,
// C and the dtype alone (so results are deterministic).
inline int64_t nchw_block_pixels(bool second_pass, int64_t C, int64_t elem) {
  if (!second_pass) return 1024;
  constexpr int64_t kL2Share = 512 * 1024;
  const int64_t fit = kL2Share / std::max<int64_t>(1, C * elem);
  return std::min<int64_t>(1024, std::max<int64_t>(64, fit / 64 * 64));
}

// Row path (any n <= 1024 pixels of one image from xb, at flat pixel p0): per-pixel state in arrays, one
// vectorised pass per channel row. MOM: 0 no moments, 1 mean only, 2 mean and std. Two passes over the rows:
// max/argmax and the sum, then (MOM 2) the squared deviations from the exact mean over the same rows, re-read
// from L2 (never E[x^2] - E[x]^2: accurate far from 0). No division per element.
template <typename T, bool MAX, int MOM>
void pool_rows_nchw(const T* __restrict__ xb, int64_t n, int64_t p0, T* out, int32_t* argmax, acc_t<T>* moments,
                    const Stats& s, int64_t b, int64_t C, int64_t N) {
  using A = acc_t<T>;
  using I = index_t<A>;
  constexpr int64_t kMaxBlock = 1024;
  A mx[kMaxBlock], sm[kMaxBlock], ss[kMaxBlock];
  I am[kMaxBlock];
  for (int64_t i = 0; i < n; ++i) {
    const A v = A(xb[i]);
    mx[i] = v;
    am[i] = 0;
    sm[i] = v;
    ss[i] = 0;
  }
  for (int64_t c = 1; c < C; ++c) pool_row<T, MAX, (MOM >= 1)>(xb + c * N, n, static_cast<I>(c), mx, am, sm);
  for (int64_t i = 0; i < n; ++i) sm[i] /= A(C);  // now the means
  if (MOM == 2)
    for (int64_t c = 0; c < C; ++c) squared_deviation_row<T>(xb + c * N, n, sm, ss);
  for (int64_t i = 0; i < n; ++i) {
    const A std = MOM == 2 ? std::sqrt(ss[i] / A(C - 1)) : A(0);
    store_stats(s, out, argmax, moments, b, p0 + i, N, false, mx[i], am[i], sm[i], std);
  }
}

#if FA_HAS_VEC32
// Vector form of takes_max: folds v (channel index ci) into the running max m and argmax a, lane by lane.
template <typename A>
FA_INLINE void fold_max(typename Vec32<A>::type v, typename Vec32<A>::mask ci, typename Vec32<A>::type& m,
                        typename Vec32<A>::mask& a) {
  const typename Vec32<A>::mask gt = ~(v <= m) & (m == m);  // larger, or the first NaN
  m = gt ? v : m;
  a = gt ? ci : a;
}

// Column path (with std): a column of kColumnVecs vectors (16 fp32 / 8 fp64 pixels) keeps its max, argmax and sum in
// registers while it walks down all C channels (the loop order Inductor generates), then walks down again for
// the squared deviations (the column's C cache lines are still in L1). Each step down touches one cache line
// per channel row, a stride the hardware prefetchers do not follow, so every step prefetches the same row
// kPrefetchColumns columns ahead: measured on the 2-core dev machine (one thread, 32x128x56x56 fp32, std) 4.1-4.5
// ms against 8-11 ms without the prefetch and 9-11 ms for the row path. Same arithmetic, in the same order, as
// the row path.
constexpr int64_t kColumnVecs = 2, kPrefetchColumns = 2;

template <typename A>
constexpr int64_t kColumnPixels = kColumnVecs * Vec32<A>::kLanes;

template <typename T, bool MAX>
FA_INLINE void pool_column_nchw(const T* __restrict__ xc, int64_t p, T* out, int32_t* argmax, acc_t<T>* moments,
                                const Stats& s, int64_t b, int64_t C, int64_t N) {
  using A = acc_t<T>;
  using V = typename Vec32<A>::type;
  using M = typename Vec32<A>::mask;
  constexpr int64_t K = kColumnVecs, L = Vec32<A>::kLanes, W = kColumnPixels<A>;
  V mx[K], sm[K];
  M am[K];
  for (int64_t k = 0; k < K; ++k) {
    mx[k] = load_vec32<A>(xc + k * L);
    sm[k] = mx[k];
    am[k] = M{};
  }
  for (int64_t c = 1; c < C; ++c) {
    const T* __restrict__ row = xc + c * N;
    __builtin_prefetch(row + kPrefetchColumns * W);
    const M ci = M{} + static_cast<typename Vec32<A>::mask_lane>(c);
    for (int64_t k = 0; k < K; ++k) {
      const V v = load_vec32<A>(row + k * L);
      if (MAX) fold_max<A>(v, ci, mx[k], am[k]);
      sm[k] += v;
    }
  }
  V mean[K], ss[K] = {};
  for (int64_t k = 0; k < K; ++k) mean[k] = sm[k] / A(C);
  for (int64_t c = 0; c < C; ++c) {
    const T* __restrict__ row = xc + c * N;
    for (int64_t k = 0; k < K; ++k) {
      const V d = load_vec32<A>(row + k * L) - mean[k];
      ss[k] += d * d;
    }
  }
  for (int64_t k = 0; k < K; ++k)
    for (int64_t l = 0; l < L; ++l) {
      const A std = std::sqrt(ss[k][l] / A(C - 1));
      store_stats(s, out, argmax, moments, b, p + k * L + l, N, false, A(mx[k][l]), static_cast<int64_t>(am[k][l]),
                  A(mean[k][l]), std);
    }
}

// Channel-group path (max / argmax / mean without std): the row path's L1 state arrays, but each pass over
// them folds kGroupRows channel rows held in registers, so the state is loaded and stored once per group
// instead of once per channel, and the loads are kGroupRows sequential streams the prefetchers follow. Pixels
// past the last full vector and channels past the last full group take pool_row, in channel order per pixel:
// the same arithmetic, in the same order, as the row path.
constexpr int64_t kGroupRows = 8;

template <typename T, bool MAX, int MOM>
void pool_groups_nchw(const T* __restrict__ xb, int64_t n, int64_t p0, T* out, int32_t* argmax, acc_t<T>* moments,
                      const Stats& s, int64_t b, int64_t C, int64_t N) {
  static_assert(MOM < 2, "the std takes the column path");
  using A = acc_t<T>;
  using I = index_t<A>;
  using V = typename Vec32<A>::type;
  using M = typename Vec32<A>::mask;
  constexpr int64_t kMaxBlock = 1024, L = Vec32<A>::kLanes, G = kGroupRows;
  alignas(32) A mx[kMaxBlock], sm[kMaxBlock];
  alignas(32) I am[kMaxBlock];
  for (int64_t i = 0; i < n; ++i) {
    const A v = A(xb[i]);
    mx[i] = v;
    am[i] = 0;
    sm[i] = v;
  }
  const int64_t nv = n / L * L;
  int64_t c = 1;
  for (; c + G <= C; c += G) {
    const T* __restrict__ rows = xb + c * N;
    for (int64_t i = 0; i < nv; i += L) {
      V m = *reinterpret_cast<const V*>(mx + i), sum = *reinterpret_cast<const V*>(sm + i);
      M a = *reinterpret_cast<const M*>(am + i);
      for (int64_t g = 0; g < G; ++g) {
        const V v = load_vec32<A>(rows + g * N + i);
        if (MAX) fold_max<A>(v, M{} + static_cast<typename Vec32<A>::mask_lane>(c + g), m, a);
        if (MOM >= 1) sum += v;
      }
      *reinterpret_cast<V*>(mx + i) = m;
      *reinterpret_cast<V*>(sm + i) = sum;
      *reinterpret_cast<M*>(am + i) = a;
    }
  }
  for (int64_t k = c; k < C; ++k) pool_row<T, MAX, (MOM >= 1)>(xb + k * N, nv, static_cast<I>(k), mx, am, sm);
  if (nv < n)
    for (int64_t k = 1; k < C; ++k)
      pool_row<T, MAX, (MOM >= 1)>(xb + k * N + nv, n - nv, static_cast<I>(k), mx + nv, am + nv, sm + nv);
  for (int64_t i = 0; i < n; ++i)
    store_stats(s, out, argmax, moments, b, p0 + i, N, false, mx[i], am[i], sm[i] / A(C), A(0));
}
#endif

// Images of at least this many pixels take the column path (with std) or the channel-group path (without);
// smaller ones, where the row path reads each image nearly sequentially, keep it. Measured on the dev machine,
// fp32, 2 threads, medians in ms (row / column / group path): 32x128x56x56 with std 5.7 / 3.9 / 3.4, without
// 5.2 / 3.7 / 2.8; 8x256x56x56 with std 4.0 / 1.9 / 1.7; 16x240x28x28 with std 2.2 / 1.1 / 1.3, without
// 0.48 / 0.68 / 0.50; 64x512x14x14 without 1.4 / 1.7 / 2.4. Fixed by the shape alone.
constexpr int64_t kWideImagePixels = 512;

template <typename T, bool MAX, int MOM>
void pool_reduce_nchw(const T* __restrict__ x, T* out, int32_t* argmax, acc_t<T>* moments, const Stats& s, int64_t B,
                      int64_t C, int64_t N) {
#if FA_HAS_VEC32
  const bool wide = N >= kWideImagePixels;
#else
  const bool wide = false;
#endif
  const int64_t block = wide ? 1024 : nchw_block_pixels(MOM == 2, C, static_cast<int64_t>(sizeof(T)));
  const int64_t blocks = (N + block - 1) / block;
  parallel_units(B * blocks, [&](int64_t u) {
    const int64_t b = u / blocks, p0 = (u % blocks) * block, n = std::min(N, p0 + block) - p0;
    const T* __restrict__ xb = x + b * C * N;
    int64_t done = 0;
#if FA_HAS_VEC32
    if constexpr (MOM < 2) {
      if (wide) {
        pool_groups_nchw<T, MAX, MOM>(xb + p0, n, p0, out, argmax, moments, s, b, C, N);
        return;
      }
    } else if (wide) {
      constexpr int64_t W = kColumnPixels<acc_t<T>>;
      for (; done + W <= n; done += W)
        pool_column_nchw<T, MAX>(xb + p0 + done, p0 + done, out, argmax, moments, s, b, C, N);
    }
#endif
    if (done < n) pool_rows_nchw<T, MAX, MOM>(xb + p0 + done, n - done, p0 + done, out, argmax, moments, s, b, C, N);
  });
}

// channels_last, per pixel: one lane-parallel pass for the sum and the max (the compiler's max instruction:
// NaN never enters a lane), the argmax as the first channel equal to the max (found a chunk at a time), the
// squared deviations from the exact mean in a second pass over the cached row. A NaN anywhere makes the sum
// NaN; such rows (and rows mixing +inf and -inf) take an exact scalar max/argmax with torch's NaN rule.
template <typename T, bool MAX, int MOM>
void pool_reduce_cl(const T* __restrict__ x, T* out, int32_t* argmax, acc_t<T>* moments, const Stats& s, int64_t B,
                    int64_t C, int64_t N) {
  using A = acc_t<T>;
  constexpr int64_t L = kLanes<A>;
  constexpr int64_t kPixels = 64;
  const int64_t blocks = (N + kPixels - 1) / kPixels;
  parallel_units(B * blocks, [&](int64_t u) {
    const int64_t b = u / blocks, p0 = (u % blocks) * kPixels, p1 = std::min(N, p0 + kPixels);
    for (int64_t p = p0; p < p1; ++p) {
      const T* __restrict__ row = x + (b * N + p) * C;
      A sl[L] = {}, ml[L];
      std::fill(ml, ml + L, -std::numeric_limits<A>::infinity());
      lane_for<A>(C, [&](int64_t c, int64_t l) {
        const A v = A(row[c]);
        sl[l] += v;
        if (MAX) ml[l] = v > ml[l] ? v : ml[l];
      });
      const A total = lanes_total(sl);
      A mx = 0;
      int64_t am = 0;
      if (MAX) {
        if (total != total) {  // exact path: a NaN (or +inf and -inf) in this row
          mx = A(row[0]);
          for (int64_t c = 1; c < C; ++c) {
            const A v = A(row[c]);
            if (takes_max(v, mx)) mx = v, am = c;
          }
        } else {
          mx = ml[0];
          for (int64_t l = 1; l < L; ++l) mx = ml[l] > mx ? ml[l] : mx;
          for (;; am += L) {  // the chunk holding the first channel equal to the max, then the channel
            int hits = 0;
            for (int64_t l = 0; l < L && am + l < C; ++l) hits += A(row[am + l]) == mx;
            if (hits) break;
          }
          while (A(row[am]) != mx) ++am;
        }
      }
      const A mean = total / A(C);
      A std = 0;
      if (MOM == 2) {
        const A ss = lane_sum<A>(C, [&](int64_t c) {
          const A d = A(row[c]) - mean;
          return d * d;
        });
        std = std::sqrt(ss / A(C - 1));
      }
      store_stats(s, out, argmax, moments, b, p, N, true, mx, am, mean, std);
    }
  });
}

template <typename T, bool MAX, int MOM>
void pool_reduce(bool cl, const T* x, T* out, int32_t* argmax, acc_t<T>* moments, const Stats& s, int64_t B, int64_t C,
                 int64_t N) {
  if (cl) pool_reduce_cl<T, MAX, MOM>(x, out, argmax, moments, s, B, C, N);
  else pool_reduce_nchw<T, MAX, MOM>(x, out, argmax, moments, s, B, C, N);
}

std::tuple<Tensor, Tensor, Tensor> channel_pool_reduce(const Tensor& x_in, c10::string_view stats) {
  check_4d(x_in, "x");
  const Stats s = parse_pool_stats(stats, "cpu");
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const auto acc = acc_scalar_type(dt);
  const Tensor x = dense(x_in, fmt, dt);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), N = H * W;
  Tensor out = empty_4d({B, s.k, H, W}, x, fmt, dt);
  const auto int_opts = x.options().dtype(at::kInt), acc_opts = x.options().dtype(acc);
  Tensor argmax = s.max >= 0 ? at::empty({B, H, W}, int_opts) : at::empty({0}, int_opts);
  Tensor moments = s.std >= 0 ? at::empty({B, 2, H, W}, acc_opts) : at::empty({0}, acc_opts);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const int mom = s.std >= 0 ? 2 : s.mean >= 0 ? 1 : 0;
  FA_DISPATCH(dt, "fa_channel_pool_reduce", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    int32_t* ap = s.max >= 0 ? argmax.mutable_data_ptr<int32_t>() : nullptr;
    A* mp = s.std >= 0 ? moments.mutable_data_ptr<A>() : nullptr;
    if (s.max >= 0) {
      if (mom == 2) pool_reduce<scalar_t, true, 2>(cl, xp, op, ap, mp, s, B, C, N);
      else if (mom == 1) pool_reduce<scalar_t, true, 1>(cl, xp, op, ap, mp, s, B, C, N);
      else pool_reduce<scalar_t, true, 0>(cl, xp, op, ap, mp, s, B, C, N);
    } else {
      if (mom == 2) pool_reduce<scalar_t, false, 2>(cl, xp, op, ap, mp, s, B, C, N);
      else pool_reduce<scalar_t, false, 1>(cl, xp, op, ap, mp, s, B, C, N);
    }
  });
  return {out, argmax, moments};
}

// grad_x[c] = g_mean / C + g_std (x_c - mean) / ((C - 1) std) + [c == argmax] g_max, added in that order in both
// layouts, from per-pixel coefficients base = g_mean / C, coef = g_std / ((C - 1) std) (0 where std == 0).
//  NCHW: the coefficients of every pixel are computed first ([B, N] arrays), then each unit (b, chunk of
//        kChunk channels) streams its contiguous rows of x and grad_x.
//  channels_last: unit = (b, block of kPixels pixels), coefficients per pixel, one row of C channels each.
template <typename T, bool MAX, bool STD>
void pool_grad_input_kernel(const T* __restrict__ g, const T* __restrict__ x, const int32_t* __restrict__ argmax,
                            const acc_t<T>* __restrict__ moments, T* __restrict__ gx, const Stats& s, int64_t B,
                            int64_t C, int64_t N, bool cl) {
  using A = acc_t<T>;
  using I = index_t<A>;
  constexpr int64_t kChunk = 16, kPixels = 64;
  const A c_a = A(C), c1 = A(C - 1);
  auto grad = [&](int64_t b, int64_t k, int64_t p) -> A {
    return A(cl ? g[(b * N + p) * s.k + k] : g[(b * s.k + k) * N + p]);
  };
  auto coefficients = [&](int64_t b, int64_t p, A& base, A& coef, A& mean, A& gmax, I& am) {
    base = s.mean >= 0 ? grad(b, s.mean, p) / c_a : A(0);
    coef = mean = gmax = A(0);
    am = 0;
    if (STD) {
      mean = moments[(b * 2) * N + p];
      const A std = moments[(b * 2 + 1) * N + p];
      coef = std == A(0) ? A(0) : grad(b, s.std, p) / (c1 * std);
    }
    if (MAX) {
      gmax = grad(b, s.max, p);
      am = static_cast<I>(argmax[b * N + p]);
    }
  };
  const int64_t blocks = (N + kPixels - 1) / kPixels;
  if (cl) {
    parallel_units(B * blocks, [&](int64_t u) {
      const int64_t b = u / blocks, p0 = (u % blocks) * kPixels, p1 = std::min(N, p0 + kPixels);
      for (int64_t p = p0; p < p1; ++p) {
        A base, coef, mean, gmax;
        I am;
        coefficients(b, p, base, coef, mean, gmax, am);
        const int64_t off = (b * N + p) * C;
        for (int64_t c = 0; c < C; ++c) {
          A v = base;
          if (STD) v += coef * (A(x[off + c]) - mean);
          if (MAX) v += static_cast<I>(c) == am ? gmax : A(0);
          gx[off + c] = static_cast<T>(v);
        }
      }
    });
    return;
  }
  std::vector<A> coeffs(static_cast<size_t>(4 * B * N));
  std::vector<I> ams(static_cast<size_t>(B * N));
  A *base = coeffs.data(), *coef = base + B * N, *mean = coef + B * N, *gmax = mean + B * N;
  parallel_units(B * blocks, [&](int64_t u) {
    const int64_t b = u / blocks, p0 = (u % blocks) * kPixels, p1 = std::min(N, p0 + kPixels);
    for (int64_t p = b * N + p0; p < b * N + p1; ++p)
      coefficients(b, p - b * N, base[p], coef[p], mean[p], gmax[p], ams[p]);
  });
  const int64_t chunks = (C + kChunk - 1) / kChunk;
  parallel_units(B * chunks, [&](int64_t u) {
    const int64_t b = u / chunks, c0 = (u % chunks) * kChunk, c1 = std::min(C, c0 + kChunk);
    const A* __restrict__ bs = base + b * N;
    const A* __restrict__ cf = coef + b * N;
    const A* __restrict__ mu = mean + b * N;
    const A* __restrict__ gm = gmax + b * N;
    const I* __restrict__ am = ams.data() + b * N;
    for (int64_t c = c0; c < c1; ++c) {
      const T* __restrict__ xr = x + (b * C + c) * N;
      T* __restrict__ o = gx + (b * C + c) * N;
      const I ci = static_cast<I>(c);
      for (int64_t i = 0; i < N; ++i) {
        A v = bs[i];
        if (STD) v += cf[i] * (A(xr[i]) - mu[i]);
        if (MAX) v += am[i] == ci ? gm[i] : A(0);
        o[i] = static_cast<T>(v);
      }
    }
  });
}

Tensor channel_pool_grad_input(const Tensor& grad_out, const Tensor& x_in, const Tensor& argmax_in,
                               const Tensor& moments_in, c10::string_view stats) {
  check_4d(x_in, "x");
  const Stats s = parse_pool_stats(stats, "cpu");
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const int64_t B = x_in.size(0), C = x_in.size(1), N = x_in.size(2) * x_in.size(3);
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == B && grad_out.size(1) == s.k &&
                  grad_out.size(2) * grad_out.size(3) == N,
              "fused_attn (cpu): grad_out must be [B, ", s.k, ", H, W]");
  const bool need_x = s.std >= 0;
  const Tensor x = need_x ? dense(x_in, fmt, dt) : x_in;
  const Tensor g = dense(grad_out, fmt, dt);
  const Tensor argmax = s.max >= 0 ? argmax_in.contiguous() : argmax_in;
  const Tensor moments = need_x ? small_acc(moments_in, dt) : moments_in;
  TORCH_CHECK(s.max < 0 || argmax.numel() == B * N, "fused_attn (cpu): argmax must be [B, H, W]");
  TORCH_CHECK(!need_x || moments.numel() == 2 * B * N, "fused_attn (cpu): moments must be [B, 2, H, W]");
  Tensor gx = empty_4d(x_in.sizes(), x_in, fmt, dt);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  FA_DISPATCH(dt, "fa_channel_pool_grad_input", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const scalar_t* xp = need_x ? x.const_data_ptr<scalar_t>() : nullptr;
    const int32_t* ap = s.max >= 0 ? argmax.const_data_ptr<int32_t>() : nullptr;
    const A* mp = need_x ? moments.const_data_ptr<A>() : nullptr;
    scalar_t* op = gx.mutable_data_ptr<scalar_t>();
    if (s.max >= 0 && need_x) pool_grad_input_kernel<scalar_t, true, true>(gp, xp, ap, mp, op, s, B, C, N, cl);
    else if (s.max >= 0) pool_grad_input_kernel<scalar_t, true, false>(gp, xp, ap, mp, op, s, B, C, N, cl);
    else if (need_x) pool_grad_input_kernel<scalar_t, false, true>(gp, xp, ap, mp, op, s, B, C, N, cl);
    else pool_grad_input_kernel<scalar_t, false, false>(gp, xp, ap, mp, op, s, B, C, N, cl);
  });
  return gx;
}

}  // namespace FA_ISA
}  // namespace cpu
}  // namespace fa
FA_ISA_END

#if FA_ISA_BASE
#define CHANNEL_POOL_OPS(X) X(channel_pool_reduce) X(channel_pool_grad_input)
FA_REGISTER(CHANNEL_POOL_OPS)
#endif
