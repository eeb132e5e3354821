// CPU kernels of the EMA family (fused_attn/reference/ema.py is the oracle and has the full derivation).
//
// ema_strip_pool: pooled[b, c, i] = mean_j x[b, c, i, j], pooled[b, c, H + j] = mean_i x[b, c, i, j]
//   backward:     grad_x[b, c, i, j] = grad[b, c, i] / W + grad[b, c, H + j] / H
//
// ema_core, per (b, group) tile of cg = C / G channels x N = H * W pixels (channel c, pixel p = (i, j)):
//   u = x sig(hw_h[c, i]) sig(hw_w[c, j]);  uhat = (u - mean_p u) rstd,  rstd = 1 / sqrt(var_p u + eps)
//   x1 = uhat gn_w + gn_b;  a1 = softmax_c(gn_b);  a2 = softmax_c(mean_p x2)
//   w[p] = sum_c a1 x2 + a2 x1;  out = x sig(w)
// backward (g = grad_out, sg = sig(w)):
//   dw = sg (1 - sg) sum_c g x;  da1 = sum_p dw x2;  da2 = sum_p dw x1
//   grad_x2 = a1 dw + a2 (da2 - <a2, da2>) / N
//   grad_gn_w += a2 sum_p dw uhat;  grad_gn_b += a2 sum_p dw + a1 (da1 - <a1, da1>)   (summed over tiles)
//   du = rstd a2 gn_w (dw - mean_p dw - uhat mean_p(dw uhat));  grad_x = g sg + du sig_h sig_w
//   grad_hw[c, i] = (1 - sig_h) sum_j du u;  grad_hw[c, H + j] = (1 - sig_w) sum_i du u
//
// NCHW: one (b, group) tile of cg x N at a time. A tile (e.g. 8 x 56 x 56 fp32 = 100 KB) is contiguous and fits
// in L2: x, x2 (and g) are read from memory once (fp32/fp64 in place, half types converted into a per-thread
// scratch), every pass runs over cached contiguous pixel rows, each output is written once.
// channels_last: whole-image passes over pixel rows of C contiguous channels (so every access streams); a unit
// is (b, block of image rows), per-channel sums over pixels are per-unit partials merged in unit order. The
// forward reads x and x2 twice (statistics, then output), the backward x2 three times, x and g twice.
// x2 and grad_out are read in x's layout (copied when they differ: the EMA block's conv3x3 gives NCHW x2 for a
// channels_last x); grad_x2 is returned in x2's layout.
// Cross-tile / cross-unit sums (GroupNorm affine gradients, channels_last statistics) are added in a fixed
// order: deterministic.
#include "common.h"
#include "isa.h"

FUSED_ATTN_ISA_BEGIN
namespace fused_attn {
namespace cpu {
namespace FUSED_ATTN_ISA {

// ------------------------------------------------------------------------------------------- ema_strip_pool
template <typename T>
void strip_pool_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t B, int64_t C, int64_t H, int64_t W,
                       bool cl) {
  using A = acc_t<T>;
  const int64_t HW = H + W;
  if (!cl) {  // unit = one (b, c) plane: row sums along contiguous j, column sums accumulated across rows
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      std::vector<A> col(static_cast<size_t>(W));  // one buffer per thread's range: small planes are many
      A* __restrict__ cs = col.data();
      for (int64_t bc = begin; bc < end; ++bc) {
        const T* __restrict__ plane = x + bc * H * W;
        T* __restrict__ o = out + bc * HW;
        std::fill(cs, cs + W, A(0));
        for (int64_t i = 0; i < H; ++i) {
          const T* __restrict__ row = plane + i * W;
          o[i] = static_cast<T>(lane_sum<A>(W, [&](int64_t j) { return A(row[j]); }) / A(W));
          for (int64_t j = 0; j < W; ++j) cs[j] += A(row[j]);
        }
        for (int64_t j = 0; j < W; ++j) o[H + j] = static_cast<T>(cs[j] / A(H));
      }
    });
    return;
  }
  // channels_last: unit = (b, chunk of kChunk channels); pixel rows of the chunk are contiguous
  constexpr int64_t kChunk = 64;
  const int64_t chunks = (C + kChunk - 1) / kChunk;
  parallel_units(B * chunks, [&](int64_t u) {
    const int64_t b = u / chunks, c0 = (u % chunks) * kChunk, cc = std::min(C, c0 + kChunk) - c0;
    std::vector<A> acc(static_cast<size_t>((W + 1) * cc), A(0));
    A* __restrict__ racc = acc.data();        // [cc]: the current row's sums
    A* __restrict__ cacc = acc.data() + cc;   // [W][cc]: column sums
    for (int64_t i = 0; i < H; ++i) {
      std::fill(racc, racc + cc, A(0));
      for (int64_t j = 0; j < W; ++j) {
        const T* __restrict__ px = x + ((b * H + i) * W + j) * C + c0;
        A* __restrict__ cj = cacc + j * cc;
        for (int64_t c = 0; c < cc; ++c) {
          const A v = A(px[c]);
          racc[c] += v;
          cj[c] += v;
        }
      }
      for (int64_t c = 0; c < cc; ++c) out[(b * C + c0 + c) * HW + i] = static_cast<T>(racc[c] / A(W));
    }
    for (int64_t c = 0; c < cc; ++c)
      for (int64_t j = 0; j < W; ++j) out[(b * C + c0 + c) * HW + H + j] = static_cast<T>(cacc[j * cc + c] / A(H));
  });
}

Tensor ema_strip_pool_forward(const Tensor& x_in) {
  check_4d(x_in, "x");
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const Tensor x = dense(x_in, fmt, dt);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor out = at::empty({B, C, H + W}, x.options());
  FUSED_ATTN_DISPATCH(dt, "fused_attn_ema_strip_pool_forward", [&] {
    strip_pool_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), B, C, H, W,
                                fmt == at::MemoryFormat::ChannelsLast);
  });
  return out;
}

// gx[b, c, i, j] = gs[b, c, i] + gs[b, c, H + j], gs = grad with its row part / W and column part / H.
// NCHW: unit = (b, c) plane. channels_last: gs is first transposed to [B, H + W, C]; unit = (b, i) row.
template <typename T>
void strip_unpool_kernel(const acc_t<T>* __restrict__ grad, T* __restrict__ gx, int64_t B, int64_t C, int64_t H,
                         int64_t W, bool cl) {
  using A = acc_t<T>;
  const int64_t HW = H + W;
  if (!cl) {
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      std::vector<A> col(static_cast<size_t>(W));  // one buffer per thread's range
      A* __restrict__ gw = col.data();
      for (int64_t bc = begin; bc < end; ++bc) {
        const A* __restrict__ g = grad + bc * HW;
        T* __restrict__ o = gx + bc * H * W;
        for (int64_t j = 0; j < W; ++j) gw[j] = g[H + j] / A(H);
        for (int64_t i = 0; i < H; ++i) {
          const A gh = g[i] / A(W);
          for (int64_t j = 0; j < W; ++j) o[i * W + j] = static_cast<T>(gh + gw[j]);
        }
      }
    });
    return;
  }
  std::vector<A> gt(static_cast<size_t>(B * HW * C));
  A* __restrict__ t = gt.data();
  parallel_units(B, [&](int64_t b) {
    for (int64_t c = 0; c < C; ++c)
      for (int64_t k = 0; k < HW; ++k) t[(b * HW + k) * C + c] = grad[(b * C + c) * HW + k] / A(k < H ? W : H);
  });
  parallel_units(B * H, [&](int64_t bi) {
    const int64_t b = bi / H, i = bi % H;
    const A* __restrict__ gh = t + (b * HW + i) * C;
    for (int64_t j = 0; j < W; ++j) {
      const A* __restrict__ gw = t + (b * HW + H + j) * C;
      T* __restrict__ o = gx + (bi * W + j) * C;
      for (int64_t c = 0; c < C; ++c) o[c] = static_cast<T>(gh[c] + gw[c]);
    }
  });
}

Tensor ema_strip_pool_backward(const Tensor& grad, const Tensor& x) {
  check_4d(x, "x");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(grad.numel() == B * C * (H + W), "fused_attn (cpu): grad must be [B, C, H + W]");
  const auto fmt = format_of(x);
  const auto dt = x.scalar_type();
  const Tensor g = small_acc(grad, dt);
  Tensor gx = empty_4d(x.sizes(), x, fmt, dt);
  FUSED_ATTN_DISPATCH(dt, "fused_attn_ema_strip_pool_backward", [&] {
    strip_unpool_kernel<scalar_t>(g.const_data_ptr<acc_t<scalar_t>>(), gx.mutable_data_ptr<scalar_t>(), B, C, H,
                                  W, fmt == at::MemoryFormat::ChannelsLast);
  });
  return gx;
}

// ------------------------------------------------------------------------------------------------- ema_core
struct Geom {
  int64_t B, C, G, cg, H, W, N;
};

template <typename A>
void softmax(const A* v, A* out, int64_t n) {
  A m = v[0];
  for (int64_t k = 1; k < n; ++k) m = std::max(m, v[k]);
  A z = 0;
  for (int64_t k = 0; k < n; ++k) z += (out[k] = std::exp(v[k] - m));
  for (int64_t k = 0; k < n; ++k) out[k] /= z;
}

// v[k] = sigmoid(v[k]) for k < n; float uses fast_exp (a loop the compiler vectorises).
template <typename A>
void sigmoid_inplace(A* __restrict__ v, int64_t n) {
  for (int64_t k = 0; k < n; ++k) {
    if constexpr (std::is_same<A, float>::value) v[k] = 1.0f / (1.0f + fast_exp(-v[k]));
    else v[k] = sigmoid(v[k]);
  }
}

// ------------------------------------------------------------------------------------- NCHW: (b, group) tiles
// Tile `tile` (= b * G + g: channels g cg .. g cg + cg - 1 of image b) of a dense NCHW tensor as acc_t rows:
// the tensor's own memory when T is the accumulation type, else a converted copy in `scratch`.
template <typename T, typename A>
const A* tile_in(const T* t, A* scratch, int64_t tile, const Geom& s) {
  const T* src = t + tile * s.cg * s.N;
  if constexpr (std::is_same<T, A>::value) {
    (void)scratch;
    return src;
  } else {
    for (int64_t k = 0; k < s.cg * s.N; ++k) scratch[k] = A(src[k]);
    return scratch;
  }
}

// Where a tile's output rows are computed: in the output itself when T is the accumulation type, else in
// `scratch`, converted by tile_out.
template <typename T, typename A>
A* tile_dst(T* t, A* scratch, int64_t tile, const Geom& s) {
  if constexpr (std::is_same<T, A>::value) {
    (void)scratch;
    return t + tile * s.cg * s.N;
  } else {
    return scratch;
  }
}

template <typename T, typename A>
void tile_out(const A* rows, T* t, int64_t tile, const Geom& s) {
  if constexpr (!std::is_same<T, A>::value) {
    T* dst = t + tile * s.cg * s.N;
    for (int64_t k = 0; k < s.cg * s.N; ++k) dst[k] = static_cast<T>(rows[k]);
  }
}

// Per-thread scratch of the tile kernels and the tile quantities both directions need.
template <typename T, typename A>
struct Tile {
  static constexpr bool kConvert = !std::is_same<T, A>::value;
  const Geom& s;
  std::vector<A> buf;
  A *in0, *in1, *in2, *out0, *out1;  // conversion scratch (half types only)
  A *U, *P, *Q, *sh, *sw, *m2, *a2;
  Tile(const Geom& s_, int64_t inputs, int64_t outputs) : s(s_) {
    const int64_t t = s.cg * s.N, conv = kConvert ? inputs + outputs : 0;
    buf.resize(static_cast<size_t>((conv + 1) * t + 2 * s.N + s.cg * (s.H + s.W) + 2 * s.cg));
    A* q = buf.data();
    A** conv_bufs[5] = {&in0, &in1, &in2, &out0, &out1};
    for (int k = 0; k < 5; ++k) {
      const bool used = kConvert && (k < 3 ? k < inputs : k - 3 < outputs);
      *conv_bufs[k] = used ? q : nullptr;
      q += used ? t : 0;
    }
    U = q, q += t;
    P = q, q += s.N;
    Q = q, q += s.N;
    sh = q, q += s.cg * s.H;
    sw = q, q += s.cg * s.W;
    m2 = q, q += s.cg;
    a2 = q;
  }
  // sig_h, sig_w from the tile's rows of hw [B, C, H + W]; U = (X sig_h) sig_w; a2 = softmax_c(mean_p X2).
  void gates_and_attention(const A* __restrict__ hw, const A* __restrict__ X, const A* __restrict__ X2,
                           int64_t tile) {
    const int64_t H = s.H, W = s.W, N = s.N, HW = H + W;
    const A* __restrict__ hwt = hw + tile * s.cg * HW;
    for (int64_t c = 0; c < s.cg; ++c) {
      std::copy(hwt + c * HW, hwt + c * HW + H, sh + c * H);
      std::copy(hwt + c * HW + H, hwt + (c + 1) * HW, sw + c * W);
    }
    sigmoid_inplace(sh, s.cg * H);
    sigmoid_inplace(sw, s.cg * W);
    for (int64_t c = 0; c < s.cg; ++c) {
      const A* __restrict__ xr = X + c * N;
      A* __restrict__ ur = U + c * N;
      const A* __restrict__ swc = sw + c * W;
      for (int64_t i = 0; i < H; ++i) {
        const A shi = sh[c * H + i];
        for (int64_t j = 0; j < W; ++j) ur[i * W + j] = (xr[i * W + j] * shi) * swc[j];
      }
      const A* __restrict__ x2r = X2 + c * N;
      m2[c] = lane_sum<A>(N, [&](int64_t p) { return x2r[p]; }) / A(N);
    }
    softmax(m2, a2, s.cg);
  }
};

// w[p] += k1 x2[p] + k2 x1[p], x1 = ((u - mu) rs) gw + gb: one channel's term of the attention logits.
template <typename A>
FUSED_ATTN_ROW void logits_row(A* __restrict__ w, const A* __restrict__ x2, const A* __restrict__ u, A k1, A k2,
                               A mu, A rs, A gw, A gb, int64_t n) {
  for (int64_t p = 0; p < n; ++p) w[p] += k1 * x2[p] + k2 * (((u[p] - mu) * rs) * gw + gb);
}

// The backward's logits row plus gx[p] += g[p] x[p] (the sum over channels of g x).
template <typename A>
FUSED_ATTN_ROW void logits_gx_row(A* __restrict__ w, A* __restrict__ gx, const A* __restrict__ x2,
                                  const A* __restrict__ u, const A* __restrict__ g, const A* __restrict__ x, A k1,
                                  A k2, A mu, A rs, A gw, A gb, int64_t n) {
  for (int64_t p = 0; p < n; ++p) {
    w[p] += k1 * x2[p] + k2 * (((u[p] - mu) * rs) * gw + gb);
    gx[p] += g[p] * x[p];
  }
}

// One channel of the input gradients: grad_x = g sg + du sig_h sig_w, du = kr (dw - mdw - uhat mdu), and the
// row / column sums of du u into grad_hw (ghw[i] = (1 - sig_h) sum_j, ghw[H + j] = (1 - sig_w) sum_i).
template <typename A>
FUSED_ATTN_ROW void grad_x_channel(A* __restrict__ gxo, const A* __restrict__ g, const A* __restrict__ sg,
                                   const A* __restrict__ dw, const A* __restrict__ u, const A* __restrict__ sh,
                                   const A* __restrict__ sw, A* __restrict__ ghw, A m, A r, A kr, A mdw, A mdu,
                                   int64_t H, int64_t W) {
  std::fill(ghw + H, ghw + H + W, A(0));
  for (int64_t i = 0; i < H; ++i) {
    const A shi = sh[i];
    A lanes[kLanes<A>] = {};
    lane_for<A>(W, [&](int64_t j, int64_t l) {
      const int64_t p = i * W + j;
      const A du = kr * (dw[p] - mdw - ((u[p] - m) * r) * mdu);
      gxo[p] = g[p] * sg[p] + (du * shi) * sw[j];
      const A duu = du * u[p];
      lanes[l] += duu;
      ghw[H + j] += duu;
    });
    ghw[i] = lanes_total(lanes) * (A(1) - shi);
  }
  for (int64_t j = 0; j < W; ++j) ghw[H + j] *= A(1) - sw[j];
}

template <typename T>
void core_forward_nchw(const T* x, const T* x2, const acc_t<T>* hw, const acc_t<T>* gw, const acc_t<T>* gb,
                       const acc_t<T>* a1, T* out, acc_t<T>* mean, acc_t<T>* rstd, const Geom& s, acc_t<T> eps) {
  using A = acc_t<T>;
  const int64_t N = s.N;
  at::parallel_for(0, s.B * s.G, 1, [&](int64_t begin, int64_t end) {
    Tile<T, A> t(s, 2, 1);
    for (int64_t tile = begin; tile < end; ++tile) {
      const A* X = tile_in(x, t.in0, tile, s);
      const A* X2 = tile_in(x2, t.in1, tile, s);
      t.gates_and_attention(hw, X, X2, tile);
      A* __restrict__ w = t.P;
      std::fill(w, w + N, A(0));
      for (int64_t c = 0; c < s.cg; ++c) {
        const A* __restrict__ ur = t.U + c * N;
        const A mu = lane_sum<A>(N, [&](int64_t p) { return ur[p]; }) / A(N);
        const A var = lane_sum<A>(N, [&](int64_t p) {
                        const A d = ur[p] - mu;
                        return d * d;
                      }) / A(N);
        const A rs = A(1) / std::sqrt(var + eps);
        mean[tile * s.cg + c] = mu;
        rstd[tile * s.cg + c] = rs;
        logits_row(w, X2 + c * N, ur, a1[c], t.a2[c], mu, rs, gw[c], gb[c], N);
      }
      sigmoid_inplace(w, N);
      A* O = tile_dst(out, t.out0, tile, s);
      for (int64_t c = 0; c < s.cg; ++c) {
        const A* __restrict__ xr = X + c * N;
        A* __restrict__ o = O + c * N;
        for (int64_t p = 0; p < N; ++p) o[p] = xr[p] * w[p];
      }
      tile_out(O, out, tile, s);
    }
  });
}

// gn_part [2][B * G][cg]: per-tile GroupNorm weight / bias gradients.
template <typename T>
void core_backward_nchw(const T* g, const T* x, const T* x2, const acc_t<T>* hw, const acc_t<T>* gw,
                        const acc_t<T>* gb, const acc_t<T>* a1, const acc_t<T>* mean, const acc_t<T>* rstd,
                        T* grad_x, T* grad_x2, acc_t<T>* grad_hw, acc_t<T>* gn_part, const Geom& s) {
  using A = acc_t<T>;
  const int64_t N = s.N, H = s.H, W = s.W, cg = s.cg;
  A* gw_part = gn_part;
  A* gb_part = gn_part + s.B * s.G * cg;
  at::parallel_for(0, s.B * s.G, 1, [&](int64_t begin, int64_t end) {
    Tile<T, A> t(s, 3, 2);
    std::vector<A> per_c(static_cast<size_t>(3 * cg));
    A *da1 = per_c.data(), *da2 = da1 + cg, *sdu = da2 + cg;
    for (int64_t tile = begin; tile < end; ++tile) {
      const A* X = tile_in(x, t.in0, tile, s);
      const A* X2 = tile_in(x2, t.in1, tile, s);
      const A* Gt = tile_in(g, t.in2, tile, s);
      t.gates_and_attention(hw, X, X2, tile);
      const A* mu = mean + tile * cg;
      const A* rs = rstd + tile * cg;
      // sg = sig(sum_c a1 x2 + a2 x1), dw = (sum_c g x) sg (1 - sg)
      A* __restrict__ sg = t.P;
      A* __restrict__ dw = t.Q;
      std::fill(sg, sg + N, A(0));
      std::fill(dw, dw + N, A(0));
      for (int64_t c = 0; c < cg; ++c)
        logits_gx_row(sg, dw, X2 + c * N, t.U + c * N, Gt + c * N, X + c * N, a1[c], t.a2[c], mu[c], rs[c], gw[c],
                      gb[c], N);
      sigmoid_inplace(sg, N);
      for (int64_t p = 0; p < N; ++p) dw[p] = (dw[p] * sg[p]) * (A(1) - sg[p]);
      const A sdw = lane_sum<A>(N, [&](int64_t p) { return dw[p]; });
      // da1 = sum_p dw x2, da2 = sum_p dw x1, sdu = sum_p dw uhat
      for (int64_t c = 0; c < cg; ++c) {
        const A *__restrict__ ur = t.U + c * N, *__restrict__ x2r = X2 + c * N;
        const A m = mu[c], r = rs[c], gwc = gw[c], gbc = gb[c];
        A l1[kLanes<A>] = {}, l2[kLanes<A>] = {}, l3[kLanes<A>] = {};
        lane_for<A>(N, [&](int64_t p, int64_t l) {
          const A uh = (ur[p] - m) * r;
          l1[l] += dw[p] * x2r[p];
          l2[l] += dw[p] * (uh * gwc + gbc);
          l3[l] += dw[p] * uh;
        });
        da1[c] = lanes_total(l1);
        da2[c] = lanes_total(l2);
        sdu[c] = lanes_total(l3);
      }
      A dot1 = 0, dot2 = 0;
      for (int64_t c = 0; c < cg; ++c) {
        dot1 += a1[c] * da1[c];
        dot2 += t.a2[c] * da2[c];
      }
      const A inv_n = A(1) / A(N);
      A* GX2 = tile_dst(grad_x2, t.out0, tile, s);
      A* GX = tile_dst(grad_x, t.out1, tile, s);
      for (int64_t c = 0; c < cg; ++c) {
        const A k1 = a1[c], k2 = t.a2[c];
        gw_part[tile * cg + c] = k2 * sdu[c];
        gb_part[tile * cg + c] = k2 * sdw + k1 * (da1[c] - dot1);
        const A dm2n = k2 * (da2[c] - dot2) * inv_n;
        A* __restrict__ gx2r = GX2 + c * N;
        for (int64_t p = 0; p < N; ++p) gx2r[p] = k1 * dw[p] + dm2n;
        grad_x_channel(GX + c * N, Gt + c * N, sg, dw, t.U + c * N, t.sh + c * H, t.sw + c * W,
                       grad_hw + (tile * cg + c) * (H + W), mu[c], rs[c], rs[c] * k2 * gw[c], sdw * inv_n,
                       sdu[c] * inv_n, H, W);
      }
      tile_out(GX2, grad_x2, tile, s);
      tile_out(GX, grad_x, tile, s);
    }
  });
}

// --------------------------------------------------------------------------- channels_last: whole-image passes
// A unit is (b, block of R image rows); R rows hold about 512 pixels.
struct RowBlocks {
  int64_t R, blocks;
  RowBlocks(int64_t H, int64_t W)
      : R(std::max<int64_t>(1, std::min<int64_t>(H, 512 / std::max<int64_t>(W, 1)))), blocks((H + R - 1) / R) {}
};

// Per-call tables in channels_last orientation: sig_h [B][H][C], sig_w [B][W][C], and gn_w, gn_b, a1 repeated
// per group to [C].
template <typename A>
struct ClTables {
  std::vector<A> sh, sw, gw, gb, a1;
  ClTables(const A* hw, const A* gwp, const A* gbp, const A* a1p, const Geom& s)
      : sh(static_cast<size_t>(s.B * s.H * s.C)), sw(static_cast<size_t>(s.B * s.W * s.C)),
        gw(static_cast<size_t>(s.C)), gb(static_cast<size_t>(s.C)), a1(static_cast<size_t>(s.C)) {
    const int64_t HW = s.H + s.W;
    parallel_units(s.B, [&](int64_t b) {
      for (int64_t c = 0; c < s.C; ++c) {
        const A* r = hw + (b * s.C + c) * HW;
        for (int64_t i = 0; i < s.H; ++i) sh[(b * s.H + i) * s.C + c] = r[i];
        for (int64_t j = 0; j < s.W; ++j) sw[(b * s.W + j) * s.C + c] = r[s.H + j];
      }
      sigmoid_inplace(sh.data() + b * s.H * s.C, s.H * s.C);
      sigmoid_inplace(sw.data() + b * s.W * s.C, s.W * s.C);
    });
    for (int64_t c = 0; c < s.C; ++c) {
      gw[c] = gwp[c % s.cg];
      gb[c] = gbp[c % s.cg];
      a1[c] = a1p[c % s.cg];
    }
  }
};

// a2 [B][C] = softmax over each group's channels of mean_p x2, from the per-unit partial sums of x2 (stride
// `stride` between units, merged in unit order).
template <typename A>
void attention_a2(const A* part, int64_t stride, A* a2, const Geom& s, int64_t blocks) {
  parallel_units(s.B, [&](int64_t b) {
    std::vector<A> m(static_cast<size_t>(s.C), A(0));
    for (int64_t k = 0; k < blocks; ++k) {
      const A* q = part + (b * blocks + k) * stride;
      for (int64_t c = 0; c < s.C; ++c) m[c] += q[c];
    }
    for (int64_t c = 0; c < s.C; ++c) m[c] /= A(s.N);
    for (int64_t g = 0; g < s.G; ++g) softmax(m.data() + g * s.cg, a2 + b * s.C + g * s.cg, s.cg);
  });
}

// Forward statistics of one pixel row: Welford mean / M2 of u = (x sig_h) sig_w (inv = 1 / pixels so far) and
// the sum of x2, per channel.
template <typename T>
FUSED_ATTN_ROW void stats_row(const T* __restrict__ x, const T* __restrict__ x2, const acc_t<T>* __restrict__ sh,
                              const acc_t<T>* __restrict__ sw, acc_t<T> inv, acc_t<T>* __restrict__ mu,
                              acc_t<T>* __restrict__ m2, acc_t<T>* __restrict__ s2, int64_t C) {
  using A = acc_t<T>;
  for (int64_t c = 0; c < C; ++c) {
    const A u = (A(x[c]) * sh[c]) * sw[c];
    const A d = u - mu[c];
    mu[c] += d * inv;
    m2[c] += d * (u - mu[c]);
    s2[c] += A(x2[c]);
  }
}

// t[c] = a1 x2 + a2 x1 (the per-channel terms of the logits) and, when GX, gxr[c] = g x; then per group the
// logit w = sum of its channels' t, sg = sig(w), and (GX) gxs = the group's sum of g x.
template <typename T, bool GX>
FUSED_ATTN_ROW void logits_cl_row(const T* __restrict__ x, const T* __restrict__ x2, const T* __restrict__ g,
                                  const acc_t<T>* __restrict__ sh, const acc_t<T>* __restrict__ sw,
                                  const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ rstd,
                                  const ClTables<acc_t<T>>& tb, const acc_t<T>* __restrict__ a2,
                                  acc_t<T>* __restrict__ t, acc_t<T>* __restrict__ gxr, acc_t<T>* __restrict__ w,
                                  acc_t<T>* __restrict__ gxs, const Geom& s) {
  using A = acc_t<T>;
  const A *__restrict__ gwc = tb.gw.data(), *__restrict__ gbc = tb.gb.data(), *__restrict__ a1 = tb.a1.data();
  for (int64_t c = 0; c < s.C; ++c) {
    const A u = (A(x[c]) * sh[c]) * sw[c];
    t[c] = a1[c] * A(x2[c]) + a2[c] * (((u - mean[c]) * rstd[c]) * gwc[c] + gbc[c]);
    if (GX) gxr[c] = A(g[c]) * A(x[c]);
  }
  for (int64_t k = 0; k < s.G; ++k) {
    A v = 0, gs = 0;
    for (int64_t c = k * s.cg; c < (k + 1) * s.cg; ++c) {
      v += t[c];
      if (GX) gs += gxr[c];
    }
    w[k] = v;
    if (GX) gxs[k] = gs;
  }
  sigmoid_inplace(w, s.G);
}

template <typename T>
void core_forward_cl(const T* x, const T* x2, const acc_t<T>* hw, const acc_t<T>* gw, const acc_t<T>* gb,
                     const acc_t<T>* a1p, T* out, acc_t<T>* mean, acc_t<T>* rstd, const Geom& s, acc_t<T> eps) {
  using A = acc_t<T>;
  const int64_t C = s.C, W = s.W, N = s.N;
  const RowBlocks rb(s.H, W);
  const ClTables<A> tb(hw, gw, gb, a1p, s);
  // pass 1: per unit Welford (mean, M2) of u and the sum of x2, per channel
  std::vector<A> part(static_cast<size_t>(s.B * rb.blocks * 3 * C));
  parallel_units(s.B * rb.blocks, [&](int64_t u) {
    const int64_t b = u / rb.blocks, i0 = (u % rb.blocks) * rb.R, i1 = std::min(s.H, i0 + rb.R);
    A* mu = part.data() + u * 3 * C;
    std::fill(mu, mu + 3 * C, A(0));
    int64_t n = 0;
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = 0; j < W; ++j) {
        const int64_t off = (b * N + i * W + j) * C;
        stats_row(x + off, x2 + off, tb.sh.data() + (b * s.H + i) * C, tb.sw.data() + (b * W + j) * C,
                  A(1) / A(++n), mu, mu + C, mu + 2 * C, C);
      }
  });
  // merge the units of each image in order (Chan et al.): mean, rstd; a2 from the x2 sums
  parallel_units(s.B, [&](int64_t b) {
    A* M = mean + b * C;
    std::vector<A> m2(static_cast<size_t>(C));
    int64_t na = 0;
    for (int64_t k = 0; k < rb.blocks; ++k) {
      const A* q = part.data() + (b * rb.blocks + k) * 3 * C;
      const int64_t nb = (std::min(s.H, (k + 1) * rb.R) - k * rb.R) * W, n = na + nb;
      const A fb = A(nb) / A(n), fab = A(na) * A(nb) / A(n);
      for (int64_t c = 0; c < C; ++c) {
        const A delta = q[c] - (k ? M[c] : A(0));
        M[c] = k ? M[c] + delta * fb : q[c];
        m2[c] = k ? m2[c] + q[C + c] + delta * delta * fab : q[C + c];
      }
      na = n;
    }
    for (int64_t c = 0; c < C; ++c) rstd[b * C + c] = A(1) / std::sqrt(m2[c] / A(N) + eps);
  });
  std::vector<A> a2(static_cast<size_t>(s.B * C));
  attention_a2(part.data() + 2 * C, 3 * C, a2.data(), s, rb.blocks);
  // pass 2: out = x sig(w_group)
  parallel_units(s.B * rb.blocks, [&](int64_t u) {
    const int64_t b = u / rb.blocks, i0 = (u % rb.blocks) * rb.R, i1 = std::min(s.H, i0 + rb.R);
    std::vector<A> buf(static_cast<size_t>(C + s.G));
    A *t = buf.data(), *w = t + C;
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = 0; j < W; ++j) {
        const int64_t off = (b * N + i * W + j) * C;
        logits_cl_row<T, false>(x + off, x2 + off, nullptr, tb.sh.data() + (b * s.H + i) * C,
                                tb.sw.data() + (b * W + j) * C, mean + b * C, rstd + b * C, tb, a2.data() + b * C, t,
                                nullptr, w, nullptr, s);
        for (int64_t k = 0; k < s.G; ++k)
          for (int64_t c = k * s.cg; c < (k + 1) * s.cg; ++c) out[off + c] = static_cast<T>(A(x[off + c]) * w[k]);
      }
  });
}

// Backward pass 2 for one pixel row: dw per group, and the per-channel sums da1 += dw x2, da2 += dw x1,
// sdu += dw uhat, sdw += dw (acc: 4 rows of C).
template <typename T>
FUSED_ATTN_ROW void dw_sums_row(const T* __restrict__ x, const T* __restrict__ x2, const acc_t<T>* __restrict__ sh,
                                const acc_t<T>* __restrict__ sw, const acc_t<T>* __restrict__ mean,
                                const acc_t<T>* __restrict__ rstd, const ClTables<acc_t<T>>& tb,
                                const acc_t<T>* __restrict__ dwc, acc_t<T>* __restrict__ acc, int64_t C) {
  using A = acc_t<T>;
  const A *__restrict__ gwc = tb.gw.data(), *__restrict__ gbc = tb.gb.data();
  for (int64_t c = 0; c < C; ++c) {
    const A uh = (((A(x[c]) * sh[c]) * sw[c]) - mean[c]) * rstd[c];
    const A d = dwc[c];
    acc[c] += d * A(x2[c]);
    acc[C + c] += d * (uh * gwc[c] + gbc[c]);
    acc[2 * C + c] += d * uh;
    acc[3 * C + c] += d;
  }
}

// Backward pass 3 for one pixel row: grad_x2, grad_x, and du u into the row sum (racc) and this unit's column
// partial (cacc).
template <typename T>
FUSED_ATTN_ROW void grads_cl_row(const T* __restrict__ g, const T* __restrict__ x, const acc_t<T>* __restrict__ sh,
                                 const acc_t<T>* __restrict__ sw, const acc_t<T>* __restrict__ mean,
                                 const acc_t<T>* __restrict__ rstd, const acc_t<T>* __restrict__ k,
                                 const acc_t<T>* __restrict__ sgc, const acc_t<T>* __restrict__ dwc,
                                 const acc_t<T>* __restrict__ a1, T* __restrict__ gx, T* __restrict__ gx2,
                                 acc_t<T>* __restrict__ racc, acc_t<T>* __restrict__ cacc, int64_t C) {
  using A = acc_t<T>;
  const A *__restrict__ dm2n = k, *__restrict__ kr = k + C;
  const A *__restrict__ mdw = k + 2 * C, *__restrict__ mdu = k + 3 * C;
  for (int64_t c = 0; c < C; ++c) {
    const A xv = A(x[c]), d = dwc[c];
    const A u = (xv * sh[c]) * sw[c];
    gx2[c] = static_cast<T>(a1[c] * d + dm2n[c]);
    const A du = kr[c] * (d - mdw[c] - ((u - mean[c]) * rstd[c]) * mdu[c]);
    gx[c] = static_cast<T>(A(g[c]) * sgc[c] + (du * sh[c]) * sw[c]);
    const A duu = du * u;
    racc[c] += duu;
    cacc[c] += duu;
  }
}

template <typename T>
void core_backward_cl(const T* g, const T* x, const T* x2, const acc_t<T>* hw, const acc_t<T>* gw,
                      const acc_t<T>* gb, const acc_t<T>* a1p, const acc_t<T>* mean, const acc_t<T>* rstd,
                      T* grad_x, T* grad_x2, acc_t<T>* grad_hw, acc_t<T>* gn_part, const Geom& s) {
  using A = acc_t<T>;
  const int64_t C = s.C, H = s.H, W = s.W, N = s.N, G = s.G, cg = s.cg, HW = H + W;
  const RowBlocks rb(H, W);
  const int64_t units = s.B * rb.blocks;
  const ClTables<A> tb(hw, gw, gb, a1p, s);
  auto rows = [&](int64_t u) {  // the unit's image rows [i0, i1)
    return std::make_pair((u % rb.blocks) * rb.R, std::min(H, (u % rb.blocks + 1) * rb.R));
  };
  // pass 1: a2 from the sums of x2
  std::vector<A> part(static_cast<size_t>(units * 4 * C));
  parallel_units(units, [&](int64_t u) {
    const int64_t b = u / rb.blocks;
    const auto [i0, i1] = rows(u);
    A* __restrict__ s2 = part.data() + u * C;
    std::fill(s2, s2 + C, A(0));
    for (int64_t p = i0 * W; p < i1 * W; ++p) {
      const T* __restrict__ r = x2 + (b * N + p) * C;
      for (int64_t c = 0; c < C; ++c) s2[c] += A(r[c]);
    }
  });
  std::vector<A> a2(static_cast<size_t>(s.B * C));
  attention_a2(part.data(), C, a2.data(), s, rb.blocks);
  // pass 2: sg and dw per (pixel, group), and per-unit partial sums of da1, da2, sdu, sdw per channel
  std::vector<A> sgdw(static_cast<size_t>(2 * s.B * N * G));
  A *sgb = sgdw.data(), *dwb = sgb + s.B * N * G;
  parallel_units(units, [&](int64_t u) {
    const int64_t b = u / rb.blocks;
    const auto [i0, i1] = rows(u);
    A* acc = part.data() + u * 4 * C;
    std::fill(acc, acc + 4 * C, A(0));
    std::vector<A> buf(static_cast<size_t>(3 * C + G));
    A *t = buf.data(), *gxr = t + C, *dwc = gxr + C, *gxs = dwc + C;
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = 0; j < W; ++j) {
        const int64_t p = i * W + j, off = (b * N + p) * C;
        const A *shr = tb.sh.data() + (b * H + i) * C, *swr = tb.sw.data() + (b * W + j) * C;
        A* sg = sgb + (b * N + p) * G;
        A* dw = dwb + (b * N + p) * G;
        logits_cl_row<T, true>(x + off, x2 + off, g + off, shr, swr, mean + b * C, rstd + b * C, tb,
                               a2.data() + b * C, t, gxr, sg, gxs, s);
        for (int64_t k = 0; k < G; ++k) {
          dw[k] = (gxs[k] * sg[k]) * (A(1) - sg[k]);
          std::fill(dwc + k * cg, dwc + (k + 1) * cg, dw[k]);
        }
        dw_sums_row(x + off, x2 + off, shr, swr, mean + b * C, rstd + b * C, tb, dwc, acc, C);
      }
  });
  // merge per image: per-channel sums, per-group dot products, GroupNorm partials [2][B * G][cg] and the
  // coefficients of pass 3: dm2 / N, kr = rstd a2 gn_w, mean_p dw, mean_p(dw uhat)
  std::vector<A> coef(static_cast<size_t>(s.B * 4 * C));
  A* gw_part = gn_part;
  A* gb_part = gn_part + s.B * G * cg;
  parallel_units(s.B, [&](int64_t b) {
    std::vector<A> tot(static_cast<size_t>(4 * C), A(0));
    for (int64_t k = 0; k < rb.blocks; ++k) {
      const A* q = part.data() + (b * rb.blocks + k) * 4 * C;
      for (int64_t c = 0; c < 4 * C; ++c) tot[c] += q[c];
    }
    const A *da1 = tot.data(), *da2 = da1 + C, *sdu = da2 + C, *sdw = sdu + C;
    const A* a2b = a2.data() + b * C;
    A* k = coef.data() + b * 4 * C;
    for (int64_t grp = 0; grp < G; ++grp) {
      A dot1 = 0, dot2 = 0;
      for (int64_t c = grp * cg; c < (grp + 1) * cg; ++c) {
        dot1 += tb.a1[c] * da1[c];
        dot2 += a2b[c] * da2[c];
      }
      for (int64_t c = grp * cg; c < (grp + 1) * cg; ++c) {
        gw_part[b * C + c] = a2b[c] * sdu[c];
        gb_part[b * C + c] = a2b[c] * sdw[c] + tb.a1[c] * (da1[c] - dot1);
        k[c] = a2b[c] * (da2[c] - dot2) / A(N);
        k[C + c] = rstd[b * C + c] * a2b[c] * tb.gw[c];
        k[2 * C + c] = sdw[c] / A(N);
        k[3 * C + c] = sdu[c] / A(N);
      }
    }
  });
  // pass 3: grad_x2, grad_x, grad_hw (row sums complete within a unit; column sums as per-unit partials)
  std::vector<A> colp(static_cast<size_t>(units * W * C));
  parallel_units(units, [&](int64_t u) {
    const int64_t b = u / rb.blocks;
    const auto [i0, i1] = rows(u);
    A* cacc = colp.data() + u * W * C;
    std::fill(cacc, cacc + W * C, A(0));
    std::vector<A> buf(static_cast<size_t>(3 * C));
    A *racc = buf.data(), *sgc = racc + C, *dwc = sgc + C;
    for (int64_t i = i0; i < i1; ++i) {
      std::fill(racc, racc + C, A(0));
      const A* shr = tb.sh.data() + (b * H + i) * C;
      for (int64_t j = 0; j < W; ++j) {
        const int64_t p = i * W + j, off = (b * N + p) * C;
        for (int64_t k = 0; k < G; ++k) {
          std::fill(sgc + k * cg, sgc + (k + 1) * cg, sgb[(b * N + p) * G + k]);
          std::fill(dwc + k * cg, dwc + (k + 1) * cg, dwb[(b * N + p) * G + k]);
        }
        grads_cl_row(g + off, x + off, shr, tb.sw.data() + (b * W + j) * C, mean + b * C, rstd + b * C,
                     coef.data() + b * 4 * C, sgc, dwc, tb.a1.data(), grad_x + off, grad_x2 + off, racc, cacc + j * C,
                     C);
      }
      for (int64_t c = 0; c < C; ++c) grad_hw[(b * C + c) * HW + i] = racc[c] * (A(1) - shr[c]);
    }
  });
  parallel_units(s.B, [&](int64_t b) {
    std::vector<A> tot(static_cast<size_t>(W * C), A(0));
    for (int64_t k = 0; k < rb.blocks; ++k) {
      const A* q = colp.data() + (b * rb.blocks + k) * W * C;
      for (int64_t e = 0; e < W * C; ++e) tot[e] += q[e];
    }
    for (int64_t j = 0; j < W; ++j) {
      const A* swr = tb.sw.data() + (b * W + j) * C;
      for (int64_t c = 0; c < C; ++c) grad_hw[(b * C + c) * HW + H + j] = tot[j * C + c] * (A(1) - swr[c]);
    }
  });
}

// ------------------------------------------------------------------------------------------------ host side
struct CoreInputs {
  Geom s;
  at::MemoryFormat fmt;
  Tensor x, x2, hw, gw, gb;
};

CoreInputs core_inputs(const Tensor& x_in, const Tensor& hw_in, const Tensor& x2_in, const Tensor& gn_weight,
                       const Tensor& gn_bias, int64_t groups) {
  check_4d(x_in, "x");
  check_4d(x2_in, "x2");
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  TORCH_CHECK(groups > 0 && C % groups == 0, "fused_attn (cpu): C must be divisible by groups");
  TORCH_CHECK(x2_in.sizes() == x_in.sizes(), "fused_attn (cpu): x2 must have x's shape");
  TORCH_CHECK(hw_in.numel() == B * C * (H + W), "fused_attn (cpu): hw must be [B, C, H + W]");
  TORCH_CHECK(gn_weight.numel() == C / groups && gn_bias.numel() == C / groups,
              "fused_attn (cpu): gn affine must be [C / groups]");
  const auto dt = x_in.scalar_type();
  const auto fmt = format_of(x_in);
  return {Geom{B, C, groups, C / groups, H, W, H * W}, fmt, dense(x_in, fmt, dt), dense(x2_in, fmt, dt),
          small_acc(hw_in, dt), small_acc(gn_weight, dt), small_acc(gn_bias, dt)};
}

std::tuple<Tensor, Tensor, Tensor> ema_core_forward(const Tensor& x_in, const Tensor& hw_in, const Tensor& x2_in,
                                                    const Tensor& gn_weight, const Tensor& gn_bias, int64_t groups,
                                                    double eps) {
  const CoreInputs in = core_inputs(x_in, hw_in, x2_in, gn_weight, gn_bias, groups);
  const Geom& s = in.s;
  const auto dt = in.x.scalar_type();
  Tensor out = empty_4d(in.x.sizes(), in.x, in.fmt, dt);
  Tensor mean = at::empty({s.B, s.C}, in.x.options().dtype(acc_scalar_type(dt)));
  Tensor rstd = at::empty({s.B, s.C}, mean.options());
  if (s.N == 0 || s.B == 0) return {out, mean.fill_(NAN), rstd.fill_(NAN)};
  FUSED_ATTN_DISPATCH(dt, "fused_attn_ema_core_forward", [&] {
    using A = acc_t<scalar_t>;
    std::vector<A> a1(static_cast<size_t>(s.cg));
    softmax(in.gb.const_data_ptr<A>(), a1.data(), s.cg);
    auto run = in.fmt == at::MemoryFormat::ChannelsLast ? core_forward_cl<scalar_t> : core_forward_nchw<scalar_t>;
    run(in.x.const_data_ptr<scalar_t>(), in.x2.const_data_ptr<scalar_t>(), in.hw.const_data_ptr<A>(),
        in.gw.const_data_ptr<A>(), in.gb.const_data_ptr<A>(), a1.data(), out.mutable_data_ptr<scalar_t>(),
        mean.mutable_data_ptr<A>(), rstd.mutable_data_ptr<A>(), s, static_cast<A>(eps));
  });
  return {out, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> ema_core_backward(
    const Tensor& grad_out, const Tensor& x_in, const Tensor& hw_in, const Tensor& x2_in, const Tensor& gn_weight,
    const Tensor& gn_bias, const Tensor& mean_in, const Tensor& rstd_in, int64_t groups, double eps) {
  (void)eps;  // the forward's statistics (mean, rstd) are reused
  const CoreInputs in = core_inputs(x_in, hw_in, x2_in, gn_weight, gn_bias, groups);
  const Geom& s = in.s;
  const auto dt = in.x.scalar_type();
  const auto acc = acc_scalar_type(dt);
  TORCH_CHECK(grad_out.sizes() == x_in.sizes(), "fused_attn (cpu): grad_out must have x's shape");
  TORCH_CHECK(mean_in.numel() == s.B * s.C && rstd_in.numel() == s.B * s.C,
              "fused_attn (cpu): mean, rstd must be [B, C]");
  const Tensor g = dense(grad_out, in.fmt, dt);
  const Tensor mean = small_acc(mean_in, dt), rstd = small_acc(rstd_in, dt);
  Tensor grad_x = empty_4d(in.x.sizes(), in.x, in.fmt, dt);
  Tensor grad_x2 = empty_4d(in.x.sizes(), in.x, in.fmt, dt);
  Tensor grad_hw = at::zeros({s.B, s.C, s.H + s.W}, in.x.options().dtype(acc));
  Tensor gn_part = at::zeros({2, s.B * s.G, s.cg}, in.x.options().dtype(acc));  // per-tile (weight, bias) grads
  if (s.N > 0) {
    FUSED_ATTN_DISPATCH(dt, "fused_attn_ema_core_backward", [&] {
      using A = acc_t<scalar_t>;
      std::vector<A> a1(static_cast<size_t>(s.cg));
      softmax(in.gb.const_data_ptr<A>(), a1.data(), s.cg);
      auto run = in.fmt == at::MemoryFormat::ChannelsLast ? core_backward_cl<scalar_t> : core_backward_nchw<scalar_t>;
      run(g.const_data_ptr<scalar_t>(), in.x.const_data_ptr<scalar_t>(), in.x2.const_data_ptr<scalar_t>(),
          in.hw.const_data_ptr<A>(), in.gw.const_data_ptr<A>(), in.gb.const_data_ptr<A>(), a1.data(),
          mean.const_data_ptr<A>(), rstd.const_data_ptr<A>(), grad_x.mutable_data_ptr<scalar_t>(),
          grad_x2.mutable_data_ptr<scalar_t>(), grad_hw.mutable_data_ptr<A>(), gn_part.mutable_data_ptr<A>(), s);
    });
  }
  // GroupNorm affine gradients: per-tile partials added in tile order (deterministic).
  Tensor grad_gw = at::empty({s.cg}, gn_part.options()), grad_gb = at::empty({s.cg}, gn_part.options());
  AT_DISPATCH_FLOATING_TYPES(acc, "fused_attn_ema_gn_grads", [&] {
    const scalar_t* part = gn_part.const_data_ptr<scalar_t>();
    sum_partials(part, grad_gw.mutable_data_ptr<scalar_t>(), 1, s.B * s.G, s.cg);
    sum_partials(part + s.B * s.G * s.cg, grad_gb.mutable_data_ptr<scalar_t>(), 1, s.B * s.G, s.cg);
  });
  // grad_x2 goes back in x2's own dtype and layout (a copy when either differs from x's; autocast can hand
  // the op a bf16 x2 beside an fp32 x)
  return {grad_x, grad_hw.to(hw_in.scalar_type()),
          grad_x2.to(x2_in.scalar_type()).contiguous(format_of(x2_in)),
          grad_gw.to(gn_weight.scalar_type()), grad_gb.to(gn_bias.scalar_type())};
}

}  // namespace FUSED_ATTN_ISA
}  // namespace cpu
}  // namespace fused_attn
FUSED_ATTN_ISA_END

#if FUSED_ATTN_ISA_BASE
#define EMA_OPS(X) X(ema_strip_pool_forward) X(ema_strip_pool_backward) X(ema_core_forward) X(ema_core_backward)
FUSED_ATTN_REGISTER(EMA_OPS)
#endif
