// ema_core's NCHW kernels: one (b, group) tile of cg x H W at a time (csrc/cpu/ema_core.cpp has the math).
// Included by ema_core.cpp inside its ISA namespace (see isa.h), after Geom, softmax and sigmoid_inplace.
#pragma once

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
  void gates_and_attention(const A* __restrict__ hw, const A* __restrict__ X, const A* __restrict__ X2, int64_t tile) {
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
FA_ROW void logits_row(A* __restrict__ w, const A* __restrict__ x2, const A* __restrict__ u, A k1, A k2, A mu, A rs,
                       A gw, A gb, int64_t n) {
  for (int64_t p = 0; p < n; ++p) w[p] += k1 * x2[p] + k2 * (((u[p] - mu) * rs) * gw + gb);
}

// The backward's logits row plus gx[p] += g[p] x[p] (the sum over channels of g x).
template <typename A>
FA_ROW void logits_gx_row(A* __restrict__ w, A* __restrict__ gx, const A* __restrict__ x2, const A* __restrict__ u,
                          const A* __restrict__ g, const A* __restrict__ x, A k1, A k2, A mu, A rs, A gw, A gb,
                          int64_t n) {
  for (int64_t p = 0; p < n; ++p) {
    w[p] += k1 * x2[p] + k2 * (((u[p] - mu) * rs) * gw + gb);
    gx[p] += g[p] * x[p];
  }
}

// One channel of the input gradients: grad_x = g sg + du sig_h sig_w, du = kr (dw - mdw - uhat mdu), and the
// row / column sums of du u into grad_hw (ghw[i] = (1 - sig_h) sum_j, ghw[H + j] = (1 - sig_w) sum_i).
template <typename A>
FA_ROW void grad_x_channel(A* __restrict__ gxo, const A* __restrict__ g, const A* __restrict__ sg,
                           const A* __restrict__ dw, const A* __restrict__ u, const A* __restrict__ sh,
                           const A* __restrict__ sw, A* __restrict__ ghw, A m, A r, A kr, A mdw, A mdu, int64_t H,
                           int64_t W) {
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
void core_combine_nchw(const T* x, const T* x2, const acc_t<T>* hw, const acc_t<T>* gw, const acc_t<T>* gb,
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
        const A var = lane_sum<A>(N,
                                  [&](int64_t p) {
                                    const A d = ur[p] - mu;
                                    return d * d;
                                  }) /
                      A(N);
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
void core_grads_nchw(const T* g, const T* x, const T* x2, const acc_t<T>* hw, const acc_t<T>* gw, const acc_t<T>* gb,
                     const acc_t<T>* a1, const acc_t<T>* mean, const acc_t<T>* rstd, T* grad_x, T* grad_x2,
                     acc_t<T>* grad_hw, acc_t<T>* gn_part, const Geom& s) {
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
        const A* __restrict__ ur = t.U + c * N, * __restrict__ x2r = X2 + c * N;
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
