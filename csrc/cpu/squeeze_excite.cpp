// CPU kernels of the squeeze_excite family (fused_attn/backends/reference/squeeze_excite.py is the oracle):
//
//   channel_squeeze_reduce(x)            p[b, c] = mean_hw x[b, c]                [B, C] acc dtype
//   channel_squeeze_grad_input(grad, x)  grad_x[b, c, p] = grad[b, c] / HW        like x
//   channel_scale(x, s)                  y = x * s[b, c]                          like x
//   squeeze_excite_combine(x, w1, b1, w2, b2, act, gate)
//                                        the whole SE forward: p = mean_hw x, z1 = w1 p + b1,
//                                        z2 = w2 act(z1) + b2, y = x * gate(z2)   (y, p, z1, z2)
//   squeeze_excite_grad_gate(grad_y, x)  grad_s[b, c] = sum_hw grad_y * x         [B, C] acc dtype
//   squeeze_excite_grad_input(grad_y, x, s, grad_pooled)
//                                        grad_x = grad_y * s + grad_pooled / HW   like x
//   eca_combine(x, weight, circular, gate) the whole ECA forward: p = mean_hw x, z = the k-tap correlation of
//                                        weight across the channels, y = x * gate(z)           (y, p, z)
//   ese_combine(x, weight, bias, gate)   the whole ESE forward: p = mean_hw x, z = weight p + bias (one C x C
//                                        layer), y = x * gate(z)                                (y, p, z)
//
// squeeze_excite_combine reads x from memory once: it runs the batch in waves of whole samples sized to stay in
// the last-level cache (fa::cpu::wave_bytes), each wave pooled, put through the MLP (in C++, here) and scaled
// while its samples are still cached, so memory sees 1 read + 1 write of x instead of the 2 reads + 1 write of
// pool-then-scale. Every element's arithmetic is fixed by the shapes (the waves only schedule), so the results
// are the same bits for any wave size and thread count, and equal channel_squeeze_reduce's pooling.
// eca_combine and ese_combine run the same waves (gate_in_waves) with ECA's k-tap conv across the channels, or
// ESE's single C x C layer, in the MLP's place.
//
// In the backward the MLP runs in PyTorch between the passes, so the fused backward is squeeze_excite_grad_gate (reads
// grad_y, x), the MLP backward, then squeeze_excite_grad_input (reads grad_y, writes grad_x): 3 reads + 1 write
// of x's size.
#include "common.h"
#include "isa.h"

FA_ISA_BEGIN
namespace fa {
namespace cpu {
namespace FA_ISA {

#include "gate_map.h"  // inside the ISA namespace and region

// The lane total of a Vec32 of partial sums, in the fixed pairwise order of every SE MLP sum: lanes l and
// l + VL/2, then l and l + VL/4, ... (for 8 floats: ((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7))).
#if FA_HAS_VEC32
template <typename A, typename V>
FA_INLINE A lanes_total_vec(const V& v) {
  constexpr int64_t VL = Vec32<A>::kLanes;
  A lanes[VL];
  for (int64_t l = 0; l < VL; ++l) lanes[l] = v[l];
  for (int64_t width = VL / 2; width > 0; width /= 2)
    for (int64_t l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  return lanes[0];
}
#endif

#if FA_HAS_VEC32 && defined(__GNUC__) && !defined(__clang__)
#define FA_HAS_TRANSPOSED_TOTALS 1
// The lane totals of 8 Vec32<float>s at once, t[i] = lanes_total_vec(v[i]) bit for bit: three levels of
// shuffles and adds (12 shuffles, 7 adds for 8 sums) instead of 8 scalar trees through memory. Level 1 adds
// lane l to lane l + 4 of two vectors at a time, level 2 lane l to l + 2, level 3 lane 0 to lane 1: the
// order of lanes_total_vec.
FA_INLINE Vec32<float>::type transposed_totals(const Vec32<float>::type (&v)[8]) {
  using V = Vec32<float>::type;
  using M = Vec32<float>::mask;
  const M lo = {0, 1, 2, 3, 8, 9, 10, 11}, hi = {4, 5, 6, 7, 12, 13, 14, 15};
  const M ev2 = {0, 1, 4, 5, 8, 9, 12, 13}, od2 = {2, 3, 6, 7, 10, 11, 14, 15};
  const M ev1 = {0, 2, 4, 6, 8, 10, 12, 14}, od1 = {1, 3, 5, 7, 9, 11, 13, 15};
  V p[4], q[2];
  for (int i = 0; i < 4; ++i)
    p[i] = __builtin_shuffle(v[2 * i], v[2 * i + 1], lo) + __builtin_shuffle(v[2 * i], v[2 * i + 1], hi);
  for (int i = 0; i < 2; ++i)
    q[i] = __builtin_shuffle(p[2 * i], p[2 * i + 1], ev2) + __builtin_shuffle(p[2 * i], p[2 * i + 1], od2);
  return __builtin_shuffle(q[0], q[1], ev1) + __builtin_shuffle(q[0], q[1], od1);
}
#else
#define FA_HAS_TRANSPOSED_TOTALS 0
#endif

// sums[row] = sum_p a[row, p] (* m[row, p] when PROD) over `rows` contiguous rows of N, float accumulation: per
// row one Vec32 of partial sums over the whole 8-blocks, its lane total (lanes_total_vec's order), then the last
// N % 8 terms in order. Units of 8 rows take their 8 totals at once (transposed_totals, the same bits), so a
// 49-pixel row (7x7) no longer pays a scalar lane tree of its own; an edge unit's rows go one by one.
template <typename T, bool PROD>
void row_sums_float(const T* __restrict__ a, const T* __restrict__ m, float* __restrict__ sums, int64_t rows,
                    int64_t N) {
#if FA_HAS_TRANSPOSED_TOTALS
  using V = Vec32<float>::type;
  constexpr int64_t G = 8, VL = Vec32<float>::kLanes;
  const auto term = [&](int64_t row, int64_t p) {
    return PROD ? float(a[row * N + p]) * float(m[row * N + p]) : float(a[row * N + p]);
  };
  const auto block = [&](int64_t row, int64_t p) {
    V v = load_vec32<float>(a + row * N + p);
    if constexpr (PROD) v = v * load_vec32<float>(m + row * N + p);
    return v;
  };
  const int64_t full = N - N % VL;
  parallel_units((rows + G - 1) / G, [&](int64_t u) {
    const int64_t r0 = u * G, r1 = std::min(rows, r0 + G);
    if (r1 - r0 == G) {
      V acc[G];
      for (int64_t j = 0; j < G; ++j) acc[j] = V{};
      for (int64_t p = 0; p < full; p += VL)
        for (int64_t j = 0; j < G; ++j) acc[j] += block(r0 + j, p);
      const V t = transposed_totals(acc);
      for (int64_t j = 0; j < G; ++j) {
        float total = t[j];
        for (int64_t p = full; p < N; ++p) total += term(r0 + j, p);
        sums[r0 + j] = total;
      }
      return;
    }
    for (int64_t row = r0; row < r1; ++row) {
      V acc = V{};
      for (int64_t p = 0; p < full; p += VL) acc += block(row, p);
      float total = lanes_total_vec<float>(acc);
      for (int64_t p = full; p < N; ++p) total += term(row, p);
      sums[row] = total;
    }
  });
#else
  parallel_units(rows, [&](int64_t row) {
    const T* __restrict__ ar = a + row * N;
    const T* __restrict__ mr = PROD ? m + row * N : nullptr;
    sums[row] = lane_sum<float>(N, [&](int64_t i) { return PROD ? float(ar[i]) * float(mr[i]) : float(ar[i]); });
  });
#endif
}

// sums[b, c] = sum_p a[b, c, p] (* m[b, c, p] when PROD).
//  NCHW: rows of N contiguous pixels per (b, c): row_sums_float for float accumulation (float32, bfloat16,
//  float16), one lane_sum per row for float64.
//  channels_last: one unit per block of kPixels pixels of one image, accumulating rows of C contiguous
//  channels into that unit's partial row; partial rows are then added in block order (deterministic).
template <typename T, bool PROD>
void hw_sum_kernel(const T* __restrict__ a, const T* __restrict__ m, acc_t<T>* __restrict__ sums, int64_t B, int64_t C,
                   int64_t N, bool channels_last) {
  using A = acc_t<T>;
  if (!channels_last && std::is_same_v<A, float>) {
    if constexpr (std::is_same_v<A, float>) row_sums_float<T, PROD>(a, m, sums, B * C, N);
    return;
  }
  if (!channels_last) {
    parallel_units(B * C, [&](int64_t bc) {
      const T* __restrict__ ar = a + bc * N;
      const T* __restrict__ mr = PROD ? m + bc * N : nullptr;
      sums[bc] = lane_sum<A>(N, [&](int64_t i) { return PROD ? A(ar[i]) * A(mr[i]) : A(ar[i]); });
    });
    return;
  }
  constexpr int64_t kPixels = 64;
  const int64_t blocks = (N + kPixels - 1) / kPixels;
  reduce_in_parts<A>(sums, B, blocks, C, [&](int64_t b, int64_t k, A* __restrict__ acc) {
    const int64_t p0 = k * kPixels, p1 = std::min(N, p0 + kPixels);
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t off = (b * N + p) * C;
      for (int64_t c = 0; c < C; ++c) acc[c] += PROD ? A(a[off + c]) * A(m[off + c]) : A(a[off + c]);
    }
  });
}

// [B, C] sums over H, W of a (or a * m, m read in a's layout), in the accumulation dtype.
Tensor hw_sum(const Tensor& a, const Tensor& m) {
  check_4d(a, "x");
  const auto fmt = format_of(a);
  const auto dt = a.scalar_type();
  const Tensor ad = dense(a, fmt, dt);
  const Tensor md = m.defined() ? dense(m, fmt, dt) : m;
  const int64_t B = a.size(0), C = a.size(1), N = a.size(2) * a.size(3);
  Tensor sums = at::empty({B, C}, a.options().dtype(acc_scalar_type(dt)));
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  FA_DISPATCH(dt, "fa_hw_sum", [&] {
    using A = acc_t<scalar_t>;
    if (md.defined())
      hw_sum_kernel<scalar_t, true>(ad.const_data_ptr<scalar_t>(), md.const_data_ptr<scalar_t>(),
                                    sums.mutable_data_ptr<A>(), B, C, N, cl);
    else
      hw_sum_kernel<scalar_t, false>(ad.const_data_ptr<scalar_t>(), nullptr, sums.mutable_data_ptr<A>(), B, C, N, cl);
  });
  return sums;
}

// p = mean_hw x
Tensor channel_squeeze_reduce(const Tensor& x) {
  Tensor sums = hw_sum(x, Tensor());
  return sums.div_(static_cast<double>(x.size(2) * x.size(3)));
}

// grad_x = grad[b, c] / HW at every pixel (a write-only pass)
Tensor channel_squeeze_grad_input(const Tensor& grad, const Tensor& x) {
  check_4d(x, "x");
  const Tensor shift = small_acc(grad, x.scalar_type()) / static_cast<double>(x.size(2) * x.size(3));
  return gate_map(x, Tensor(), Tensor(), Tensor(), Tensor(), shift);
}

// y = x * s[b, c]
Tensor channel_scale(const Tensor& x, const Tensor& s) {
  return gate_map(x, x, s, Tensor(), Tensor(), Tensor());
}

// The SE-type forward in waves of whole samples (see the top of the file): per wave pool x into pooled (the
// mean, acc dtype), gate(b0, b1, s) writes the gate s [B, C] of samples [b0, b1) from pooled, then y = x * s
// while the wave is cached; y by streaming stores when the whole output is too large to stay cached
// (stream_bytes), else through gate_map_kernel.
template <typename T, typename G>
void gate_in_waves(const Tensor& xd, Tensor& y, Tensor& pooled, bool cl, G&& gate) {
  using A = acc_t<T>;
  const int64_t B = xd.size(0), C = xd.size(1), N = xd.size(2) * xd.size(3);
  const int64_t sample_bytes = C * N * static_cast<int64_t>(xd.element_size());
  // samples per wave: as many as fit the cache budget, at least one
  const int64_t per_wave =
      std::max<int64_t>(1, std::min<int64_t>(B, wave_bytes() / std::max<int64_t>(1, sample_bytes)));
  const bool stream = B * sample_bytes >= stream_bytes();
  const T* xp = xd.const_data_ptr<T>();
  T* yp = y.mutable_data_ptr<T>();
  A* pp = pooled.mutable_data_ptr<A>();
  std::vector<A> s(static_cast<size_t>(B * C)), zero(static_cast<size_t>(B * C), A(0));
  for (int64_t b0 = 0; b0 < B; b0 += per_wave) {
    const int64_t nb = std::min(per_wave, B - b0), off = b0 * C * N;
    hw_sum_kernel<T, false>(xp + off, nullptr, pp + b0 * C, nb, C, N, cl);
    for (int64_t i = b0 * C; i < (b0 + nb) * C; ++i) pp[i] /= A(N);
    gate(b0, b0 + nb, s.data());
    if (stream) detail::scale_streaming<T>(xp + off, s.data() + b0 * C, zero.data(), yp + off, nb, C, N, cl);
    else
      detail::gate_map_kernel<T, true, false, false>(xp + off, s.data() + b0 * C, nullptr, nullptr, zero.data(),
                                                     yp + off, nb, C, N, cl);
  }
}

// ------------------------------------------------------------------------------------ squeeze_excite_combine
enum class Act { relu, hardswish, silu };
enum class Gate { sigmoid, hardsigmoid };

inline Act act_of(c10::string_view name) {
  if (name == "relu") return Act::relu;
  if (name == "hardswish") return Act::hardswish;
  if (name == "silu") return Act::silu;
  TORCH_CHECK(false, "fused_attn (cpu): unknown activation '", std::string(name), "'; expected relu, hardswish, silu");
}

inline Gate gate_of(c10::string_view name) {
  if (name == "sigmoid") return Gate::sigmoid;
  if (name == "hardsigmoid") return Gate::hardsigmoid;
  TORCH_CHECK(false, "fused_attn (cpu): unknown gate '", std::string(name), "'; expected sigmoid, hardsigmoid");
}

template <typename A>
A activate(Act act, A v) {
  switch (act) {
    case Act::relu:
      return v > A(0) ? v : A(0);
    case Act::hardswish:
      return v * std::min(std::max(v + A(3), A(0)), A(6)) / A(6);
    default:
      return v / (A(1) + std::exp(-v));  // silu
  }
}

template <typename A>
A gate_value(Gate gate, A v) {
  return gate == Gate::sigmoid ? A(1) / (A(1) + std::exp(-v)) : std::min(std::max(v + A(3), A(0)), A(6)) / A(6);
}

// out[s][r] = sum_k a[r * n + k] v[s * n + k] for R rows of a and S rows of v (row length n, both contiguous):
// the register tile of the SE MLP's two layers. Each of the R * S sums keeps one Vec32 of partial sums (lane l
// adds the terms k = l mod VL of the whole VL-blocks), totals its lanes pairwise (lanes_total_vec; 8 float sums
// at once by transposed_totals, the same bits), then adds the last n % VL terms in order: an order fixed by n
// alone, the same in every tile shape, so which rows and samples share a tile never changes a result. One load
// of a row block serves S samples and one load of a sample block R rows (a sample-at-a-time dot product
// re-streamed the whole weight per sample: 1.3 MB of w1 per sample at C = 1152, Cr = 288, more than L2).
template <typename A, int R, int S>
FA_INLINE void dot_tile(const A* __restrict__ a, const A* __restrict__ v, int64_t n, A (&out)[S][R]) {
#if FA_HAS_VEC32
  using V = typename Vec32<A>::type;
  constexpr int64_t VL = Vec32<A>::kLanes;
  V acc[S][R];
  for (int s = 0; s < S; ++s)
    for (int r = 0; r < R; ++r) acc[s][r] = V{};
  int64_t k = 0;
  for (; k + VL <= n; k += VL) {
    V ar[R];
    for (int r = 0; r < R; ++r) ar[r] = load_vec32<A>(a + r * n + k);
    for (int s = 0; s < S; ++s) {
      const V vs = load_vec32<A>(v + s * n + k);
      for (int r = 0; r < R; ++r) acc[s][r] += ar[r] * vs;
    }
  }
  bool totalled = false;
#if FA_HAS_TRANSPOSED_TOTALS
  if constexpr (std::is_same_v<A, float> && R * S == 8) {
    V flat[8];
    for (int s = 0; s < S; ++s)
      for (int r = 0; r < R; ++r) flat[s * R + r] = acc[s][r];
    const V t = transposed_totals(flat);
    for (int s = 0; s < S; ++s)
      for (int r = 0; r < R; ++r) out[s][r] = t[s * R + r];
    totalled = true;
  }
#endif
  for (int s = 0; s < S; ++s)
    for (int r = 0; r < R; ++r) {
      A total = totalled ? out[s][r] : lanes_total_vec<A>(acc[s][r]);
      for (int64_t t = k; t < n; ++t) total += a[r * n + t] * v[s * n + t];
      out[s][r] = total;
    }
#else
  for (int s = 0; s < S; ++s)
    for (int r = 0; r < R; ++r) out[s][r] = lane_sum<A>(n, [&](int64_t t) { return a[r * n + t] * v[s * n + t]; });
#endif
}

// One layer of the SE MLP for the samples of a wave: out[i * rows + r] = sum_k w[r, k] in[i, k] + bias[r] for
// i < n_samples, r < rows (w [rows, n] contiguous, in rows contiguous), then finish(i, r0, r1) once per unit and
// sample over the unit's rows [r0, r1) (the elementwise activation or gate, vectorised over the row range).
// Units: (group of kSamples samples, tile of kRowTile rows), fixed by the shapes; inside a unit, dot_tile tiles
// of kR rows x kS samples, the edges by smaller tiles of the same arithmetic.
template <typename A, typename F>
void mlp_layer(const A* __restrict__ in, const A* __restrict__ w, const A* bias, int64_t n_samples, int64_t rows,
               int64_t n, A* __restrict__ out, F&& finish) {
  constexpr int kR = 2, kS = 4;
  constexpr int64_t kRowTile = 32;
  const int64_t groups = (n_samples + kS - 1) / kS, tiles = (rows + kRowTile - 1) / kRowTile;
  parallel_units(groups * tiles, [&](int64_t u) {
    const int64_t i0 = (u / tiles) * kS, r0 = (u % tiles) * kRowTile;
    const int64_t i1 = std::min(n_samples, i0 + kS), r1 = std::min(rows, r0 + kRowTile);
    auto tile = [&](auto rows_c, auto samples_c, int64_t r, int64_t i) {
      constexpr int TR = decltype(rows_c)::value, TS = decltype(samples_c)::value;
      A sums[TS][TR];
      dot_tile<A, TR, TS>(w + r * n, in + i * n, n, sums);
      for (int s = 0; s < TS; ++s)
        for (int t = 0; t < TR; ++t) out[(i + s) * rows + r + t] = sums[s][t] + (bias ? bias[r + t] : A(0));
    };
    using one = std::integral_constant<int, 1>;
    using full_r = std::integral_constant<int, kR>;
    using full_s = std::integral_constant<int, kS>;
    int64_t r = r0;
    for (; r + kR <= r1; r += kR) {
      if (i1 - i0 == kS) {
        tile(full_r{}, full_s{}, r, i0);
      } else {
        for (int64_t i = i0; i < i1; ++i) tile(full_r{}, one{}, r, i);
      }
    }
    for (; r < r1; ++r) {
      if (i1 - i0 == kS) {
        tile(one{}, full_s{}, r, i0);
      } else {
        for (int64_t i = i0; i < i1; ++i) tile(one{}, one{}, r, i);
      }
    }
    for (int64_t i = i0; i < i1; ++i) finish(i, r0, r1);
  });
}

// gate(z) over z[0..n) into s: for float the sigmoid through fast_exp (common.h, relative error ~1e-7) so that
// the loop vectorises (std::exp per element was ~20 cycles, a tenth of a 16x1152x7x7 SE forward); float64 keeps
// std::exp.
template <typename A>
FA_INLINE void gate_row(Gate gate, const A* __restrict__ z, A* __restrict__ s, int64_t n) {
  if (gate == Gate::hardsigmoid) {
    for (int64_t c = 0; c < n; ++c) s[c] = std::min(std::max(z[c] + A(3), A(0)), A(6)) / A(6);
  } else if constexpr (std::is_same_v<A, float>) {
    for (int64_t c = 0; c < n; ++c) s[c] = 1.0f / (1.0f + fast_exp(-z[c]));
  } else {
    for (int64_t c = 0; c < n; ++c) s[c] = gate_value(gate, z[c]);
  }
}

// The MLP of samples [b0, b1): z1 = w1 p + b1, z2 = w2 act(z1) + b2, s = gate(z2); w1 [Cr, C] and w2 [C, Cr] as
// contiguous acc copies, bias pointers null when absent. Both layers are mlp_layer's register-tiled dot products
// over the weights' contiguous rows (no transposed copy of w2). Runs on every thread.
template <typename A>
void se_mlp(const A* pooled, const A* w1, const A* bias1, const A* w2, const A* bias2, A* z1, A* z2, A* s, int64_t b0,
            int64_t b1, int64_t C, int64_t Cr, Act act, Gate gate) {
  const int64_t n = b1 - b0;
  std::vector<A> hidden(static_cast<size_t>(n * Cr));
  A* const z1w = z1 + b0 * Cr;
  mlp_layer<A>(pooled + b0 * C, w1, bias1, n, Cr, C, z1w, [&](int64_t i, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) hidden[static_cast<size_t>(i * Cr + r)] = activate(act, z1w[i * Cr + r]);
  });
  A* const z2w = z2 + b0 * C;
  A* const sw = s + b0 * C;
  mlp_layer<A>(hidden.data(), w2, bias2, n, C, Cr, z2w, [&](int64_t i, int64_t c0, int64_t c1) {
    gate_row<A>(gate, z2w + i * C + c0, sw + i * C + c0, c1 - c0);
  });
}

// A [C_out, C_in] weight (Linear, or a 1x1 conv's [C_out, C_in, 1, 1]) as a contiguous acc copy.
Tensor mlp_weight(const Tensor& w, int64_t rows, int64_t cols, at::ScalarType xt, const char* name) {
  TORCH_CHECK(w.numel() == rows * cols && w.size(0) == rows, "fused_attn (cpu): ", name, " must be [", rows, ", ", cols,
              "], got ", w.sizes());
  return small_acc(w, xt).reshape({rows, cols});
}

std::tuple<Tensor, Tensor, Tensor, Tensor> squeeze_excite_combine(const Tensor& x, const Tensor& w1,
                                                                  const std::optional<Tensor>& b1, const Tensor& w2,
                                                                  const std::optional<Tensor>& b2, c10::string_view act,
                                                                  c10::string_view gate) {
  check_4d(x, "x");
  const Act a = act_of(act);
  const Gate g = gate_of(gate);
  const auto fmt = format_of(x);
  const auto dt = x.scalar_type();
  const int64_t B = x.size(0), C = x.size(1), Cr = w1.size(0);
  const Tensor xd = dense(x, fmt, dt);
  const Tensor w1a = mlp_weight(w1, Cr, C, dt, "w1"), w2a = mlp_weight(w2, C, Cr, dt, "w2");
  const Tensor b1a = b1.has_value() && b1->defined() ? small_acc(*b1, dt) : Tensor();
  const Tensor b2a = b2.has_value() && b2->defined() ? small_acc(*b2, dt) : Tensor();
  TORCH_CHECK(!b1a.defined() || b1a.numel() == Cr, "fused_attn (cpu): b1 must have ", Cr, " elements");
  TORCH_CHECK(!b2a.defined() || b2a.numel() == C, "fused_attn (cpu): b2 must have ", C, " elements");
  const auto acc = x.options().dtype(acc_scalar_type(dt));
  Tensor y = empty_4d(x.sizes(), x, fmt, dt);
  Tensor pooled = at::empty({B, C}, acc), z1 = at::empty({B, Cr}, acc), z2 = at::empty({B, C}, acc);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  FA_DISPATCH(dt, "fa_squeeze_excite_combine", [&] {
    using A = acc_t<scalar_t>;
    gate_in_waves<scalar_t>(xd, y, pooled, cl, [&](int64_t b0, int64_t b1, A* s) {
      se_mlp<A>(pooled.const_data_ptr<A>(), w1a.const_data_ptr<A>(), b1a.defined() ? b1a.const_data_ptr<A>() : nullptr,
                w2a.const_data_ptr<A>(), b2a.defined() ? b2a.const_data_ptr<A>() : nullptr, z1.mutable_data_ptr<A>(),
                z2.mutable_data_ptr<A>(), s, b0, b1, C, Cr, a, g);
    });
  });
  return {y, pooled, z1, z2};
}

// ------------------------------------------------------------------------------------------------ eca_combine
// z[b, c] = sum_j w[j] p[b, c + j - pad] over samples [b0, b1) (taps outside [0, C) read 0, or wrap modulo C
// when circular), s = gate(z). Tap by tap over all channels (the interior run vectorises), so each z[c] still
// adds its k terms in tap order: the same bits as a per-channel loop.
template <typename A>
void eca_conv_gate(const A* __restrict__ pooled, const A* __restrict__ w, int64_t k, bool circular, Gate gate,
                   A* __restrict__ z, A* __restrict__ s, int64_t b0, int64_t b1, int64_t C) {
  const int64_t pad = (k - 1) / 2;
  parallel_units(b1 - b0, [&](int64_t i) {
    const int64_t b = b0 + i;
    const A* __restrict__ p = pooled + b * C;
    A* __restrict__ zb = z + b * C;
    for (int64_t c = 0; c < C; ++c) zb[c] = A(0);
    for (int64_t j = 0; j < k; ++j) {
      const A wj = w[j];
      const int64_t shift = j - pad;  // z[c] += wj p[c + shift]
      const int64_t lo = std::clamp<int64_t>(-shift, 0, C), hi = std::clamp<int64_t>(C - shift, lo, C);
      for (int64_t c = lo; c < hi; ++c) zb[c] += wj * p[c + shift];
      if (circular) {
        const auto wrapped = [&](int64_t c) {
          const int64_t src = ((c + shift) % C + C) % C;
          zb[c] += wj * p[src];
        };
        for (int64_t c = 0; c < lo; ++c) wrapped(c);
        for (int64_t c = hi; c < C; ++c) wrapped(c);
      }
    }
    gate_row<A>(gate, zb, s + b * C, C);
  });
}

// (y, pooled, z) of an SE-type forward whose gate is one layer over the [B, C] means: gate_in_waves over x's
// dtype, layer(b0, b1, pooled, z, s) writing z and s = gate(z) of samples [b0, b1) (acc-typed pointers).
template <typename Layer>
std::tuple<Tensor, Tensor, Tensor> one_layer_in_waves(const Tensor& x, Layer&& layer) {
  const auto fmt = format_of(x);
  const auto dt = x.scalar_type();
  const auto acc = x.options().dtype(acc_scalar_type(dt));
  const Tensor xd = dense(x, fmt, dt);
  Tensor y = empty_4d(x.sizes(), x, fmt, dt);
  Tensor pooled = at::empty({x.size(0), x.size(1)}, acc), z = at::empty({x.size(0), x.size(1)}, acc);
  FA_DISPATCH(dt, "fa_one_layer_in_waves", [&] {
    using A = acc_t<scalar_t>;
    gate_in_waves<scalar_t>(xd, y, pooled, fmt == at::MemoryFormat::ChannelsLast, [&](int64_t b0, int64_t b1, A* s) {
      layer(b0, b1, pooled.const_data_ptr<A>(), z.mutable_data_ptr<A>(), s);
    });
  });
  return {y, pooled, z};
}

std::tuple<Tensor, Tensor, Tensor> eca_combine(const Tensor& x, const Tensor& weight, bool circular,
                                               c10::string_view gate) {
  check_4d(x, "x");
  const Gate g = gate_of(gate);
  const int64_t k = weight.numel(), C = x.size(1);
  TORCH_CHECK(k % 2 == 1, "fused_attn (cpu): the ECA weight must have an odd number of taps, got ", k);
  const Tensor wa = small_acc(weight, x.scalar_type());
  return one_layer_in_waves(x, [&](int64_t b0, int64_t b1, const auto* pooled, auto* z, auto* s) {
    using A = std::remove_pointer_t<decltype(s)>;
    eca_conv_gate<A>(pooled, wa.const_data_ptr<A>(), k, circular, g, z, s, b0, b1, C);
  });
}

// ------------------------------------------------------------------------------------------------ ese_combine
// The ESE forward in waves: per wave z = weight p + bias (one mlp_layer, register-tiled), s = gate(z).
std::tuple<Tensor, Tensor, Tensor> ese_combine(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                                               c10::string_view gate) {
  check_4d(x, "x");
  const Gate g = gate_of(gate);
  const int64_t C = x.size(1);
  const Tensor wa = mlp_weight(weight, C, C, x.scalar_type(), "weight");
  const Tensor ba = bias.has_value() && bias->defined() ? small_acc(*bias, x.scalar_type()) : Tensor();
  TORCH_CHECK(!ba.defined() || ba.numel() == C, "fused_attn (cpu): bias must have ", C, " elements");
  return one_layer_in_waves(x, [&](int64_t b0, int64_t b1, const auto* pooled, auto* z, auto* s) {
    using A = std::remove_pointer_t<decltype(s)>;
    A* const zw = z + b0 * C;
    A* const sw = s + b0 * C;
    mlp_layer<A>(pooled + b0 * C, wa.const_data_ptr<A>(), ba.defined() ? ba.const_data_ptr<A>() : nullptr, b1 - b0, C,
                 C, zw,
                 [&](int64_t i, int64_t c0, int64_t c1) { gate_row<A>(g, zw + i * C + c0, sw + i * C + c0, c1 - c0); });
  });
}

// grad_s = sum_hw grad_y * x (grad_y read in x's layout)
Tensor squeeze_excite_grad_gate(const Tensor& grad_y, const Tensor& x) {
  TORCH_CHECK(grad_y.sizes() == x.sizes(), "fused_attn (cpu): grad_y must have x's shape");
  return hw_sum(x, grad_y);
}

// grad_x = grad_y * s + grad_pooled / HW
Tensor squeeze_excite_grad_input(const Tensor& grad_y, const Tensor& x, const Tensor& s, const Tensor& grad_pooled) {
  check_4d(x, "x");
  TORCH_CHECK(grad_y.sizes() == x.sizes(), "fused_attn (cpu): grad_y must have x's shape");
  const Tensor shift = small_acc(grad_pooled, x.scalar_type()) / static_cast<double>(x.size(2) * x.size(3));
  return gate_map(x, grad_y, s, Tensor(), Tensor(), shift);
}

}  // namespace FA_ISA
}  // namespace cpu
}  // namespace fa
FA_ISA_END

#if FA_ISA_BASE
#define SQUEEZE_EXCITE_OPS(X)   \
  X(channel_squeeze_reduce)     \
  X(channel_squeeze_grad_input) \
  X(channel_scale)              \
  X(squeeze_excite_combine) X(squeeze_excite_grad_gate) X(squeeze_excite_grad_input) X(eca_combine) X(ese_combine)
FA_REGISTER(SQUEEZE_EXCITE_OPS)
#endif
