// ema_core's channels_last kernels: whole-image passes over pixel rows of C contiguous channels
// (csrc/cpu/ema_core.cpp has the math). Included by ema_core.cpp inside its ISA namespace (see isa.h).
#pragma once

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
      : sh(static_cast<size_t>(s.B * s.H * s.C)),
        sw(static_cast<size_t>(s.B * s.W * s.C)),
        gw(static_cast<size_t>(s.C)),
        gb(static_cast<size_t>(s.C)),
        a1(static_cast<size_t>(s.C)) {
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
FA_ROW void stats_row(const T* __restrict__ x, const T* __restrict__ x2, const acc_t<T>* __restrict__ sh,
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
FA_ROW void logits_cl_row(const T* __restrict__ x, const T* __restrict__ x2, const T* __restrict__ g,
                          const acc_t<T>* __restrict__ sh, const acc_t<T>* __restrict__ sw,
                          const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ rstd,
                          const ClTables<acc_t<T>>& tb, const acc_t<T>* __restrict__ a2, acc_t<T>* __restrict__ t,
                          acc_t<T>* __restrict__ gxr, acc_t<T>* __restrict__ w, acc_t<T>* __restrict__ gxs,
                          const Geom& s) {
  using A = acc_t<T>;
  const A* __restrict__ gwc = tb.gw.data(), * __restrict__ gbc = tb.gb.data(), * __restrict__ a1 = tb.a1.data();
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
void core_combine_cl(const T* x, const T* x2, const acc_t<T>* hw, const acc_t<T>* gw, const acc_t<T>* gb,
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
        stats_row(x + off, x2 + off, tb.sh.data() + (b * s.H + i) * C, tb.sw.data() + (b * W + j) * C, A(1) / A(++n),
                  mu, mu + C, mu + 2 * C, C);
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
FA_ROW void dw_sums_row(const T* __restrict__ x, const T* __restrict__ x2, const acc_t<T>* __restrict__ sh,
                        const acc_t<T>* __restrict__ sw, const acc_t<T>* __restrict__ mean,
                        const acc_t<T>* __restrict__ rstd, const ClTables<acc_t<T>>& tb,
                        const acc_t<T>* __restrict__ dwc, acc_t<T>* __restrict__ acc, int64_t C) {
  using A = acc_t<T>;
  const A* __restrict__ gwc = tb.gw.data(), * __restrict__ gbc = tb.gb.data();
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
FA_ROW void grads_cl_row(const T* __restrict__ g, const T* __restrict__ x, const acc_t<T>* __restrict__ sh,
                         const acc_t<T>* __restrict__ sw, const acc_t<T>* __restrict__ mean,
                         const acc_t<T>* __restrict__ rstd, const acc_t<T>* __restrict__ k,
                         const acc_t<T>* __restrict__ sgc, const acc_t<T>* __restrict__ dwc,
                         const acc_t<T>* __restrict__ a1, T* __restrict__ gx, T* __restrict__ gx2,
                         acc_t<T>* __restrict__ racc, acc_t<T>* __restrict__ cacc, int64_t C) {
  using A = acc_t<T>;
  const A* __restrict__ dm2n = k, * __restrict__ kr = k + C;
  const A* __restrict__ mdw = k + 2 * C, * __restrict__ mdu = k + 3 * C;
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
void core_grads_cl(const T* g, const T* x, const T* x2, const acc_t<T>* hw, const acc_t<T>* gw, const acc_t<T>* gb,
                   const acc_t<T>* a1p, const acc_t<T>* mean, const acc_t<T>* rstd, T* grad_x, T* grad_x2,
                   acc_t<T>* grad_hw, acc_t<T>* gn_part, const Geom& s) {
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
        logits_cl_row<T, true>(x + off, x2 + off, g + off, shr, swr, mean + b * C, rstd + b * C, tb, a2.data() + b * C,
                               t, gxr, sg, gxs, s);
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
