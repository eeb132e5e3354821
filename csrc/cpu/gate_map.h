// The one elementwise pass shared by apply_gates and squeeze_excite (csrc/cpu/{apply_gates,squeeze_excite}.cpp):
//
//   out[b, c, p] = (in[b, c, p] * scale[b, c]) * spatial[b, p] + add[b, c, p] + shift[b, c]
//
// every term optional (scale 1, spatial 1, add 0, shift 0 when absent), p = h * W + w. Reads each big
// tensor once and writes out once, in like's layout (NCHW: rows of pixels per (b, c); channels_last: rows
// of channels per pixel, so the inner loop is always contiguous).
//
// Included by the family files inside their ISA namespace (see isa.h), after common.h.
#pragma once

namespace detail {

template <typename T, bool IN, bool SP, bool ADD>
void gate_map_kernel(const T* __restrict__ in, const acc_t<T>* __restrict__ scale, const acc_t<T>* __restrict__ spatial,
                     const T* __restrict__ add, const acc_t<T>* __restrict__ shift, T* __restrict__ out, int64_t B,
                     int64_t C, int64_t N, bool channels_last) {
  using A = acc_t<T>;
  if (!channels_last) {
    // unit = one (b, c) row of N contiguous pixels
    parallel_units(B * C, [&](int64_t bc) {
      const int64_t off = bc * N;
      const A sc = scale[bc], sh = shift[bc];
      const A* __restrict__ sp = SP ? spatial + (bc / C) * N : nullptr;
      for (int64_t p = 0; p < N; ++p) {
        A v = IN ? A(in[off + p]) * sc : A(0);
        if (SP) v *= sp[p];
        if (ADD) v += A(add[off + p]);
        out[off + p] = static_cast<T>(v + sh);
      }
    });
    return;
  }
  // unit = a block of pixels of one image; per pixel a row of C contiguous channels
  constexpr int64_t kPixels = 64;
  const int64_t blocks = (N + kPixels - 1) / kPixels;
  parallel_units(B * blocks, [&](int64_t u) {
    const int64_t b = u / blocks, p0 = (u % blocks) * kPixels, p1 = std::min(N, p0 + kPixels);
    const A* __restrict__ sc = scale + b * C;
    const A* __restrict__ sh = shift + b * C;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t off = (b * N + p) * C;
      const A spv = SP ? spatial[b * N + p] : A(1);
      for (int64_t c = 0; c < C; ++c) {
        A v = IN ? A(in[off + c]) * sc[c] : A(0);
        if (SP) v *= spv;
        if (ADD) v += A(add[off + c]);
        out[off + c] = static_cast<T>(v + sh[c]);
      }
    }
  });
}

// out = in * scale[b, c] (the SE-type forwards' scaling) with non-temporal stores where T is float or double on
// x86-64: each output line goes to memory without being read first or kept in cache (see stream_bytes). Per row
// (NCHW: the pixels of one (b, c); channels_last: the channels of one pixel) scalar stores up to a 16-byte
// boundary of out, then 16-byte streaming stores, then a scalar tail; units as gate_map_kernel's, so in a wave
// each thread scales the rows it just pooled. One rounding per element, as eager's x * s (gate_map_kernel adds a
// zero shift, which only turns -0 into +0). Other dtypes and targets take gate_map_kernel.
template <typename T>
void scale_streaming(const T* __restrict__ in, const acc_t<T>* __restrict__ scale, const acc_t<T>* __restrict__ zero,
                     T* __restrict__ out, int64_t B, int64_t C, int64_t N, bool channels_last) {
#if defined(__SSE2__)
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    constexpr int64_t VL = 16 / static_cast<int64_t>(sizeof(T));
    const auto row = [](const T* __restrict__ src, const T* __restrict__ sc, bool per_element, T* __restrict__ dst,
                        int64_t n) {
      const int64_t misalign = static_cast<int64_t>(reinterpret_cast<uintptr_t>(dst) % 16) / sizeof(T);
      const int64_t head = std::min<int64_t>(n, misalign ? VL - misalign : 0);
      const auto s_at = [&](int64_t i) { return per_element ? sc[i] : sc[0]; };
      int64_t i = 0;
      for (; i < head; ++i) dst[i] = src[i] * s_at(i);
      for (; i + VL <= n; i += VL) {
        if constexpr (std::is_same_v<T, float>) {
          const __m128 s = per_element ? _mm_loadu_ps(sc + i) : _mm_set1_ps(sc[0]);
          _mm_stream_ps(dst + i, _mm_mul_ps(_mm_loadu_ps(src + i), s));
        } else {
          const __m128d s = per_element ? _mm_loadu_pd(sc + i) : _mm_set1_pd(sc[0]);
          _mm_stream_pd(dst + i, _mm_mul_pd(_mm_loadu_pd(src + i), s));
        }
      }
      for (; i < n; ++i) dst[i] = src[i] * s_at(i);
    };
    // parallel_units' split, each thread fencing its streaming stores (weakly ordered) before the join
    const auto units = [&](int64_t n, auto&& unit) {
      at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
        for (int64_t u = begin; u < end; ++u) unit(u);
        _mm_sfence();
      });
    };
    if (!channels_last) {
      units(B * C, [&](int64_t bc) { row(in + bc * N, scale + bc, false, out + bc * N, N); });
    } else {
      constexpr int64_t kPixels = 64;
      const int64_t blocks = (N + kPixels - 1) / kPixels;
      units(B * blocks, [&](int64_t u) {
        const int64_t b = u / blocks, p0 = (u % blocks) * kPixels, p1 = std::min(N, p0 + kPixels);
        for (int64_t p = p0; p < p1; ++p) row(in + (b * N + p) * C, scale + b * C, true, out + (b * N + p) * C, C);
      });
    }
    return;
  }
#endif
  gate_map_kernel<T, true, false, false>(in, scale, nullptr, nullptr, zero, out, B, C, N, channels_last);
}

template <typename T, bool IN, bool SP>
void gate_map_dispatch_add(bool add, const T* in, const acc_t<T>* sc, const acc_t<T>* sp, const T* ad,
                           const acc_t<T>* sh, T* out, int64_t B, int64_t C, int64_t N, bool cl) {
  if (add) gate_map_kernel<T, IN, SP, true>(in, sc, sp, ad, sh, out, B, C, N, cl);
  else gate_map_kernel<T, IN, SP, false>(in, sc, sp, ad, sh, out, B, C, N, cl);
}

}  // namespace detail

// Optional arguments are undefined Tensors. `like` [B, C, H, W] gives the output's shape, dtype and layout;
// in and add are read in that layout and dtype (copied only if they are not), scale/shift [B, C] and
// spatial [B, H, W] as contiguous accumulation-dtype tensors.
inline Tensor gate_map(const Tensor& like, const Tensor& in, const Tensor& scale, const Tensor& spatial,
                       const Tensor& add, const Tensor& shift) {
  check_4d(like, "input");
  const auto fmt = format_of(like);
  const auto dt = like.scalar_type();
  const int64_t B = like.size(0), C = like.size(1), N = like.size(2) * like.size(3);
  const auto acc = acc_scalar_type(dt);
  const Tensor in_d = in.defined() ? dense(in, fmt, dt) : in;
  const Tensor add_d = add.defined() ? dense(add, fmt, dt) : add;
  const Tensor sc = scale.defined() ? small_acc(scale, dt) : at::ones({B, C}, like.options().dtype(acc));
  const Tensor sh = shift.defined() ? small_acc(shift, dt) : at::zeros({B, C}, like.options().dtype(acc));
  const Tensor sp = spatial.defined() ? small_acc(spatial, dt) : spatial;
  TORCH_CHECK(sc.numel() == B * C && sh.numel() == B * C, "fused_attn (cpu): channel terms must be [B, C]");
  TORCH_CHECK(!sp.defined() || sp.numel() == B * N, "fused_attn (cpu): the spatial gate must be [B, H, W]");
  Tensor out = empty_4d(like.sizes(), like, fmt, dt);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  FA_DISPATCH(dt, "fa_gate_map", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* ip = in_d.defined() ? in_d.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* ap = add_d.defined() ? add_d.const_data_ptr<scalar_t>() : nullptr;
    const A* spp = sp.defined() ? sp.const_data_ptr<A>() : nullptr;
    const A* scp = sc.const_data_ptr<A>();
    const A* shp = sh.const_data_ptr<A>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    const bool has_add = ap != nullptr;  // without `in`, spatial has nothing to scale: shift (+ add) only
    if (ip && spp) detail::gate_map_dispatch_add<scalar_t, true, true>(has_add, ip, scp, spp, ap, shp, op, B, C, N, cl);
    else if (ip) detail::gate_map_dispatch_add<scalar_t, true, false>(has_add, ip, scp, spp, ap, shp, op, B, C, N, cl);
    else detail::gate_map_dispatch_add<scalar_t, false, false>(has_add, ip, scp, spp, ap, shp, op, B, C, N, cl);
  });
  return out;
}
