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
// A tile (e.g. 8 x 56 x 56 fp32 = 100 KB) fits in L2: x, x2 (and g) are read from memory once into a
// per-thread scratch buffer in [cg][N] order (whatever their layout, NCHW or channels_last, each tensor read
// in its own), every pass then runs over cached, contiguous pixel rows, and the outputs are written once.
// Cross-tile sums (GroupNorm affine gradients) add per-tile partials in tile order: deterministic.
#include "common.h"

namespace fused_attn {
namespace cpu {
namespace {

// ------------------------------------------------------------------------------------------- ema_strip_pool
template <typename T>
void strip_pool_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t B, int64_t C, int64_t H, int64_t W,
                       bool cl) {
  using A = acc_t<T>;
  const int64_t HW = H + W;
  if (!cl) {  // unit = one (b, c) plane: row sums along contiguous j, column sums accumulated across rows
    parallel_units(B * C, [&](int64_t bc) {
      const T* __restrict__ plane = x + bc * H * W;
      T* __restrict__ o = out + bc * HW;
      std::vector<A> col(static_cast<size_t>(W), A(0));
      A* __restrict__ cs = col.data();
      for (int64_t i = 0; i < H; ++i) {
        const T* __restrict__ row = plane + i * W;
        o[i] = static_cast<T>(lane_sum<A>(W, [&](int64_t j) { return A(row[j]); }) / A(W));
        for (int64_t j = 0; j < W; ++j) cs[j] += A(row[j]);
      }
      for (int64_t j = 0; j < W; ++j) o[H + j] = static_cast<T>(cs[j] / A(H));
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
    parallel_units(B * C, [&](int64_t bc) {
      const A* __restrict__ g = grad + bc * HW;
      T* __restrict__ o = gx + bc * H * W;
      for (int64_t i = 0; i < H; ++i) {
        const A gh = g[i] / A(W);
        for (int64_t j = 0; j < W; ++j) o[i * W + j] = static_cast<T>(gh + g[H + j] / A(H));
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
struct Tiles {
  int64_t B, C, G, cg, H, W, N;
};

// dst[c][p] = t[b, g * cg + c, p] for one tile, t dense NCHW or channels_last.
template <typename T, typename A>
void load_tile(const T* __restrict__ t, bool cl, A* __restrict__ dst, int64_t tile, const Tiles& s) {
  const int64_t b = tile / s.G, c0 = (tile % s.G) * s.cg;
  if (!cl) {
    const T* __restrict__ src = t + (b * s.C + c0) * s.N;
    for (int64_t k = 0; k < s.cg * s.N; ++k) dst[k] = A(src[k]);
    return;
  }
  for (int64_t p = 0; p < s.N; ++p) {
    const T* __restrict__ px = t + (b * s.N + p) * s.C + c0;
    for (int64_t c = 0; c < s.cg; ++c) dst[c * s.N + p] = A(px[c]);
  }
}

// t[b, g * cg + c, p] = src[c][p] for one tile (the inverse of load_tile).
template <typename T, typename A>
void store_tile(const A* __restrict__ src, bool cl, T* __restrict__ t, int64_t tile, const Tiles& s) {
  const int64_t b = tile / s.G, c0 = (tile % s.G) * s.cg;
  if (!cl) {
    T* __restrict__ dst = t + (b * s.C + c0) * s.N;
    for (int64_t k = 0; k < s.cg * s.N; ++k) dst[k] = static_cast<T>(src[k]);
    return;
  }
  for (int64_t p = 0; p < s.N; ++p) {
    T* __restrict__ px = t + (b * s.N + p) * s.C + c0;
    for (int64_t c = 0; c < s.cg; ++c) px[c] = static_cast<T>(src[c * s.N + p]);
  }
}

template <typename A>
void softmax(const A* v, A* out, int64_t n) {
  A m = v[0];
  for (int64_t k = 1; k < n; ++k) m = std::max(m, v[k]);
  A z = 0;
  for (int64_t k = 0; k < n; ++k) z += (out[k] = std::exp(v[k] - m));
  for (int64_t k = 0; k < n; ++k) out[k] /= z;
}

// Per-tile scratch shared by forward and backward: the tile's gates, u = x sig_h sig_w, and a2.
template <typename A>
struct TileScratch {
  const Tiles& s;
  std::vector<A> buf;
  A *X, *X2, *U, *G, *P, *Q, *sh, *sw, *a2, *m2;
  TileScratch(const Tiles& s_, bool with_grad) : s(s_) {
    const int64_t t = s.cg * s.N;
    buf.resize(static_cast<size_t>((with_grad ? 4 : 3) * t + 2 * s.N + s.cg * (s.H + s.W) + 2 * s.cg));
    A* q = buf.data();
    X = q, q += t;
    X2 = q, q += t;
    U = q, q += t;
    G = with_grad ? q : nullptr, q += with_grad ? t : 0;
    P = q, q += s.N;
    Q = q, q += s.N;
    sh = q, q += s.cg * s.H;
    sw = q, q += s.cg * s.W;
    a2 = q, q += s.cg;
    m2 = q;
  }
  // sig_h, sig_w from hw's tile rows; U = (X sig_h) sig_w; a2 = softmax_c(mean_p X2).
  void gates_and_attention(const A* __restrict__ hw, int64_t tile) {
    const int64_t H = s.H, W = s.W, N = s.N, HW = H + W;
    const A* __restrict__ hwt = hw + tile * s.cg * HW;  // tile's channels are contiguous in [B, C, H + W]
    for (int64_t c = 0; c < s.cg; ++c) {
      for (int64_t i = 0; i < H; ++i) sh[c * H + i] = sigmoid(hwt[c * HW + i]);
      for (int64_t j = 0; j < W; ++j) sw[c * W + j] = sigmoid(hwt[c * HW + H + j]);
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

std::tuple<Tensor, Tensor, Tensor> ema_core_forward(const Tensor& x_in, const Tensor& hw_in, const Tensor& x2_in,
                                                    const Tensor& gn_weight, const Tensor& gn_bias, int64_t groups,
                                                    double eps) {
  check_4d(x_in, "x");
  check_4d(x2_in, "x2");
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  TORCH_CHECK(groups > 0 && C % groups == 0, "fused_attn (cpu): C must be divisible by groups");
  const Tiles s{B, C, groups, C / groups, H, W, H * W};
  TORCH_CHECK(x2_in.sizes() == x_in.sizes(), "fused_attn (cpu): x2 must have x's shape");
  TORCH_CHECK(hw_in.numel() == B * C * (H + W), "fused_attn (cpu): hw must be [B, C, H + W]");
  TORCH_CHECK(gn_weight.numel() == s.cg && gn_bias.numel() == s.cg, "fused_attn (cpu): gn affine must be [C / groups]");
  const auto dt = x_in.scalar_type();
  const auto fx = format_of(x_in), f2 = format_of(x2_in);
  const Tensor x = dense(x_in, fx, dt), x2 = dense(x2_in, f2, dt);
  const Tensor hw = small_acc(hw_in, dt), gw = small_acc(gn_weight, dt), gb = small_acc(gn_bias, dt);
  Tensor out = empty_4d(x.sizes(), x, fx, dt);
  Tensor mean = at::empty({B, C}, x.options().dtype(acc_scalar_type(dt)));
  Tensor rstd = at::empty({B, C}, mean.options());
  FUSED_ATTN_DISPATCH(dt, "fused_attn_ema_core_forward", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* x2p = x2.const_data_ptr<scalar_t>();
    const A* hwp = hw.const_data_ptr<A>();
    const A* gwp = gw.const_data_ptr<A>();
    const A* gbp = gb.const_data_ptr<A>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    A* meanp = mean.mutable_data_ptr<A>();
    A* rstdp = rstd.mutable_data_ptr<A>();
    const bool clx = fx == at::MemoryFormat::ChannelsLast, cl2 = f2 == at::MemoryFormat::ChannelsLast;
    std::vector<A> a1(static_cast<size_t>(s.cg));
    softmax(gbp, a1.data(), s.cg);
    const int64_t N = s.N;
    const A epsa = static_cast<A>(eps);
    at::parallel_for(0, B * groups, 1, [&](int64_t begin, int64_t end) {
      TileScratch<A> t(s, false);
      for (int64_t tile = begin; tile < end; ++tile) {
        load_tile(xp, clx, t.X, tile, s);
        load_tile(x2p, cl2, t.X2, tile, s);
        t.gates_and_attention(hwp, tile);
        A* __restrict__ w = t.P;
        std::fill(w, w + N, A(0));
        for (int64_t c = 0; c < s.cg; ++c) {
          const A* __restrict__ ur = t.U + c * N;
          const A* __restrict__ x2r = t.X2 + c * N;
          const A mu = lane_sum<A>(N, [&](int64_t p) { return ur[p]; }) / A(N);
          const A var = lane_sum<A>(N, [&](int64_t p) {
                          const A d = ur[p] - mu;
                          return d * d;
                        }) / A(N);
          const A rs = A(1) / std::sqrt(var + epsa);
          meanp[tile * s.cg + c] = mu;
          rstdp[tile * s.cg + c] = rs;
          const A k1 = a1[c], k2 = t.a2[c], gwc = gwp[c], gbc = gbp[c];
          for (int64_t p = 0; p < N; ++p) w[p] += k1 * x2r[p] + k2 * (((ur[p] - mu) * rs) * gwc + gbc);
        }
        for (int64_t p = 0; p < N; ++p) w[p] = sigmoid(w[p]);
        for (int64_t c = 0; c < s.cg; ++c) {
          A* __restrict__ xr = t.X + c * N;
          for (int64_t p = 0; p < N; ++p) xr[p] *= w[p];
        }
        store_tile(t.X, clx, op, tile, s);
      }
    });
  });
  return {out, mean, rstd};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> ema_core_backward(
    const Tensor& grad_out, const Tensor& x_in, const Tensor& hw_in, const Tensor& x2_in, const Tensor& gn_weight,
    const Tensor& gn_bias, const Tensor& mean_in, const Tensor& rstd_in, int64_t groups, double eps) {
  (void)eps;  // the forward's statistics are reused
  check_4d(x_in, "x");
  check_4d(x2_in, "x2");
  check_4d(grad_out, "grad_out");
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  TORCH_CHECK(groups > 0 && C % groups == 0, "fused_attn (cpu): C must be divisible by groups");
  const Tiles s{B, C, groups, C / groups, H, W, H * W};
  TORCH_CHECK(x2_in.sizes() == x_in.sizes() && grad_out.sizes() == x_in.sizes(),
              "fused_attn (cpu): x2 and grad_out must have x's shape");
  TORCH_CHECK(hw_in.numel() == B * C * (H + W), "fused_attn (cpu): hw must be [B, C, H + W]");
  TORCH_CHECK(gn_weight.numel() == s.cg && gn_bias.numel() == s.cg, "fused_attn (cpu): gn affine must be [C / groups]");
  TORCH_CHECK(mean_in.numel() == B * C && rstd_in.numel() == B * C, "fused_attn (cpu): mean, rstd must be [B, C]");
  const auto dt = x_in.scalar_type();
  const auto acc = acc_scalar_type(dt);
  const auto fx = format_of(x_in), f2 = format_of(x2_in), fg = format_of(grad_out);
  const Tensor x = dense(x_in, fx, dt), x2 = dense(x2_in, f2, dt), g = dense(grad_out, fg, dt);
  const Tensor hw = small_acc(hw_in, dt), gw = small_acc(gn_weight, dt), gb = small_acc(gn_bias, dt);
  const Tensor mean = small_acc(mean_in, dt), rstd = small_acc(rstd_in, dt);
  Tensor grad_x = empty_4d(x.sizes(), x, fx, dt);
  Tensor grad_x2 = empty_4d(x.sizes(), x, f2, dt);
  Tensor grad_hw = at::empty({B, C, H + W}, x.options().dtype(acc));
  Tensor gn_part = at::empty({2, B * groups, s.cg}, x.options().dtype(acc));  // per-tile (weight, bias) grads
  FUSED_ATTN_DISPATCH(dt, "fused_attn_ema_core_backward", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* x2p = x2.const_data_ptr<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    const A* hwp = hw.const_data_ptr<A>();
    const A* gwp = gw.const_data_ptr<A>();
    const A* gbp = gb.const_data_ptr<A>();
    const A* meanp = mean.const_data_ptr<A>();
    const A* rstdp = rstd.const_data_ptr<A>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    scalar_t* gx2p = grad_x2.mutable_data_ptr<scalar_t>();
    A* ghwp = grad_hw.mutable_data_ptr<A>();
    A* gwpart = gn_part.mutable_data_ptr<A>();
    A* gbpart = gwpart + B * groups * s.cg;
    const bool clx = fx == at::MemoryFormat::ChannelsLast, cl2 = f2 == at::MemoryFormat::ChannelsLast,
               clg = fg == at::MemoryFormat::ChannelsLast;
    std::vector<A> a1(static_cast<size_t>(s.cg));
    softmax(gbp, a1.data(), s.cg);
    const int64_t N = s.N, HW = H + W, cg = s.cg;
    at::parallel_for(0, B * groups, 1, [&](int64_t begin, int64_t end) {
      TileScratch<A> t(s, true);
      std::vector<A> per_c(static_cast<size_t>(3 * cg));
      A *da1 = per_c.data(), *da2 = da1 + cg, *sdu = da2 + cg;
      for (int64_t tile = begin; tile < end; ++tile) {
        load_tile(xp, clx, t.X, tile, s);
        load_tile(x2p, cl2, t.X2, tile, s);
        load_tile(gp, clg, t.G, tile, s);
        t.gates_and_attention(hwp, tile);
        const A* mu = meanp + tile * cg;
        const A* rs = rstdp + tile * cg;
        // w[p] = sum_c a1 x2 + a2 x1 and gx[p] = sum_c g x, then sg = sig(w), dw = gx sg (1 - sg)
        A* __restrict__ sg = t.P;
        A* __restrict__ dw = t.Q;
        std::fill(sg, sg + N, A(0));
        std::fill(dw, dw + N, A(0));
        for (int64_t c = 0; c < cg; ++c) {
          const A *__restrict__ ur = t.U + c * N, *__restrict__ x2r = t.X2 + c * N;
          const A *__restrict__ xr = t.X + c * N, *__restrict__ gr = t.G + c * N;
          const A k1 = a1[c], k2 = t.a2[c], m = mu[c], r = rs[c], gwc = gwp[c], gbc = gbp[c];
          for (int64_t p = 0; p < N; ++p) {
            sg[p] += k1 * x2r[p] + k2 * (((ur[p] - m) * r) * gwc + gbc);
            dw[p] += gr[p] * xr[p];
          }
        }
        for (int64_t p = 0; p < N; ++p) {
          const A v = sigmoid(sg[p]);
          sg[p] = v;
          dw[p] = (dw[p] * v) * (A(1) - v);
        }
        const A sdw = lane_sum<A>(N, [&](int64_t p) { return dw[p]; });
        // da1 = sum_p dw x2, da2 = sum_p dw x1, sdu = sum_p dw uhat
        for (int64_t c = 0; c < cg; ++c) {
          const A *__restrict__ ur = t.U + c * N, *__restrict__ x2r = t.X2 + c * N;
          const A m = mu[c], r = rs[c], gwc = gwp[c], gbc = gbp[c];
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
        for (int64_t c = 0; c < cg; ++c) {
          const A k2 = t.a2[c];
          gwpart[tile * cg + c] = k2 * sdu[c];
          gbpart[tile * cg + c] = k2 * sdw + a1[c] * (da1[c] - dot1);
          // grad_x2 = a1 dw + dm2 / N  (written over X2, no longer needed)
          const A k1 = a1[c], dm2n = k2 * (da2[c] - dot2) / A(N);
          A* __restrict__ x2r = t.X2 + c * N;
          for (int64_t p = 0; p < N; ++p) x2r[p] = k1 * dw[p] + dm2n;
          // du = rstd a2 gn_w (dw - sdw / N - uhat sdu / N); grad_x = g sg + du sig_h sig_w (over G);
          // grad_hw rows / columns from du u.
          const A m = mu[c], r = rs[c], kr = r * k2 * gwp[c], mdw = sdw * inv_n, mdu = sdu[c] * inv_n;
          const A *__restrict__ ur = t.U + c * N, *__restrict__ shc = t.sh + c * H, *__restrict__ swc = t.sw + c * W;
          A* __restrict__ gr = t.G + c * N;
          A* __restrict__ ghw = ghwp + (tile * cg + c) * HW;
          std::fill(ghw + H, ghw + HW, A(0));
          for (int64_t i = 0; i < H; ++i) {
            const A shi = shc[i];
            A lanes[kLanes<A>] = {};
            lane_for<A>(W, [&](int64_t j, int64_t l) {
              const int64_t p = i * W + j;
              const A du = kr * (dw[p] - mdw - ((ur[p] - m) * r) * mdu);
              gr[p] = gr[p] * sg[p] + (du * shi) * swc[j];
              const A duu = du * ur[p];
              lanes[l] += duu;
              ghw[H + j] += duu;
            });
            ghw[i] = lanes_total(lanes) * (A(1) - shi);
          }
          for (int64_t j = 0; j < W; ++j) ghw[H + j] *= A(1) - swc[j];
        }
        store_tile(t.X2, cl2, gx2p, tile, s);
        store_tile(t.G, clx, gxp, tile, s);
      }
    });
  });
  // GroupNorm affine gradients: per-tile partials added in tile order (deterministic).
  Tensor grad_gw = at::empty({s.cg}, gn_part.options()), grad_gb = at::empty({s.cg}, gn_part.options());
  AT_DISPATCH_FLOATING_TYPES(acc, "fused_attn_ema_gn_grads", [&] {
    const scalar_t* part = gn_part.const_data_ptr<scalar_t>();
    sum_partials(part, grad_gw.mutable_data_ptr<scalar_t>(), 1, B * groups, s.cg);
    sum_partials(part + B * groups * s.cg, grad_gb.mutable_data_ptr<scalar_t>(), 1, B * groups, s.cg);
  });
  return {grad_x, grad_hw.to(hw_in.scalar_type()), grad_x2, grad_gw.to(gn_weight.scalar_type()),
          grad_gb.to(gn_bias.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_attn_C, CPU, m) {
  m.impl("ema_strip_pool_forward", &ema_strip_pool_forward);
  m.impl("ema_strip_pool_backward", &ema_strip_pool_backward);
  m.impl("ema_core_forward", &ema_core_forward);
  m.impl("ema_core_backward", &ema_core_backward);
}

}  // namespace cpu
}  // namespace fused_attn
