// CPU kernels of simam (fused_attn/backends/reference/simam.py is the oracle), per (b, c) plane of N = H W pixels:
//
//   simam_gate:        mu = mean x, k = 1 / (4 (sum (x - mu)^2 / (N - 1) + e_lambda)),
//                      out = x sigmoid((x - mu)^2 k + 0.5); mean, k [B, C] acc
//   simam_grad_input:  s = sigmoid((x - mu)^2 k + 0.5), gy = g x s (1 - s), A = sum gy (x - mu)^2, B = sum gy (x - mu),
//                      grad_x = g s + 2 (x - mu) (k gy - 4 k^2 A / (N - 1)) - 2 k B / N
//
// Memory plan: a unit's planes are read three times (mean, squared deviations, gate) but are small enough to stay
// in L1 / L2 between the passes, so x comes from memory once and out goes to memory once (backward: g and x once,
// grad_x once). NCHW: unit = one contiguous plane. channels_last: the plane is strided by C, so a unit is
// (b, a block of kBlock contiguous channels) over all pixels: each pixel's block is one 64-byte line, its
// working set kBlock N elements (200 KB for 16 fp32 channels of 56 x 56). N = 1 gives 0 / 0 = NaN, as the
// official code does. Sums: lane sums (NCHW) or 4 interleaved pixel partials per channel (channels_last), fixed
// by the shapes, so results do not depend on the thread count.
// GCC does not if-convert fast_exp's clamps under the default -ftrapping-math ("control flow in loop"), which
// leaves every loop over a sigmoid scalar (8x64x56x56 fp32, one thread: forward 8.8 -> 4.3 ms, backward 20.6 -> 5.9
// ms; docs/cpu.md). -fno-trapping-math changes no result (FP exceptions are not observed): set for this file only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include "common.h"
#include "isa.h"

FA_ISA_BEGIN
namespace fa {
namespace cpu {
namespace FA_ISA {

template <typename A>
FA_INLINE A simam_sigmoid(A y) {
  if constexpr (std::is_same<A, float>::value) return 1.0f / (1.0f + fast_exp(-y));
  else return sigmoid(y);
}

// ---------------------------------------------------------------------------------------------------- NCHW
template <typename T>
void simam_plane_gate(const T* __restrict__ x, T* __restrict__ o, int64_t N, acc_t<T> lam, acc_t<T>* mean,
                      acc_t<T>* kout) {
  using A = acc_t<T>;
  const A mu = lane_sum<A>(N, [&](int64_t i) { return A(x[i]); }) / A(N);
  const A ss = lane_sum<A>(N, [&](int64_t i) {
    const A d = A(x[i]) - mu;
    return d * d;
  });
  const A k = A(1) / (A(4) * (ss / A(N - 1) + lam));
  for (int64_t i = 0; i < N; ++i) {
    const A xv = A(x[i]), d = xv - mu;
    o[i] = static_cast<T>(xv * simam_sigmoid(d * d * k + A(0.5)));
  }
  *mean = mu;
  *kout = k;
}

template <typename T>
void simam_plane_grad(const T* __restrict__ g, const T* __restrict__ x, T* __restrict__ gx, int64_t N, acc_t<T> mu,
                      acc_t<T> k) {
  using A = acc_t<T>;
  A la[kLanes<A>] = {}, lb[kLanes<A>] = {};
  lane_for<A>(N, [&](int64_t i, int64_t l) {
    const A xv = A(x[i]), xm = xv - mu, d = xm * xm, s = simam_sigmoid(d * k + A(0.5));
    const A gy = A(g[i]) * xv * s * (A(1) - s);
    la[l] += gy * d;
    lb[l] += gy * xm;
  });
  const A c1 = A(4) * k * k * lanes_total(la) / A(N - 1), c2 = A(2) * k * lanes_total(lb) / A(N);
  for (int64_t i = 0; i < N; ++i) {
    const A xv = A(x[i]), gv = A(g[i]), xm = xv - mu, s = simam_sigmoid(xm * xm * k + A(0.5));
    const A gy = gv * xv * s * (A(1) - s);
    gx[i] = static_cast<T>(gv * s + A(2) * xm * (k * gy - c1) - c2);
  }
}

// ------------------------------------------------------------------------------------------- channels_last
// A unit: image b, channels c0 .. c0 + NC (NC = kBlock, a compile-time width the compiler maps onto SIMD
// registers, or the runtime remainder cc < kBlock with NC = 0). Pixel p's channels are px = base + p C.
template <typename A>
constexpr int64_t kBlock = kLanes<A>;
constexpr int64_t kPix = 4;  // interleaved pixel partials per channel

template <typename T, int64_t NC>
void simam_cl_gate(const T* __restrict__ x, T* __restrict__ o, int64_t N, int64_t C, int64_t cc, acc_t<T> lam,
                   acc_t<T>* __restrict__ mean, acc_t<T>* __restrict__ kout) {
  using A = acc_t<T>;
  constexpr int64_t W = kBlock<A>;
  const int64_t n = NC ? NC : cc;
  A acc[kPix][W] = {}, mu[W], kk[W];
  for (int64_t p = 0; p < N; ++p) {
    const T* __restrict__ px = x + p * C;
    A* __restrict__ a = acc[p % kPix];
    for (int64_t c = 0; c < n; ++c) a[c] += A(px[c]);
  }
  for (int64_t c = 0; c < n; ++c) mu[c] = ((acc[0][c] + acc[1][c]) + (acc[2][c] + acc[3][c])) / A(N);
  A sq[kPix][W] = {};
  for (int64_t p = 0; p < N; ++p) {
    const T* __restrict__ px = x + p * C;
    A* __restrict__ a = sq[p % kPix];
    for (int64_t c = 0; c < n; ++c) {
      const A d = A(px[c]) - mu[c];
      a[c] += d * d;
    }
  }
  for (int64_t c = 0; c < n; ++c)
    kk[c] = A(1) / (A(4) * (((sq[0][c] + sq[1][c]) + (sq[2][c] + sq[3][c])) / A(N - 1) + lam));
  for (int64_t p = 0; p < N; ++p) {
    const T* __restrict__ px = x + p * C;
    T* __restrict__ po = o + p * C;
    for (int64_t c = 0; c < n; ++c) {
      const A xv = A(px[c]), d = xv - mu[c];
      po[c] = static_cast<T>(xv * simam_sigmoid(d * d * kk[c] + A(0.5)));
    }
  }
  for (int64_t c = 0; c < n; ++c) {
    mean[c] = mu[c];
    kout[c] = kk[c];
  }
}

template <typename T, int64_t NC>
void simam_cl_grad(const T* __restrict__ g, const T* __restrict__ x, T* __restrict__ gx, int64_t N, int64_t C,
                   int64_t cc, const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ kin) {
  using A = acc_t<T>;
  constexpr int64_t W = kBlock<A>;
  const int64_t n = NC ? NC : cc;
  A mu[W], kk[W], c1[W], c2[W], sa[kPix][W] = {}, sb[kPix][W] = {};
  for (int64_t c = 0; c < n; ++c) {
    mu[c] = mean[c];
    kk[c] = kin[c];
  }
  for (int64_t p = 0; p < N; ++p) {
    const T* __restrict__ px = x + p * C;
    const T* __restrict__ pg = g + p * C;
    A* __restrict__ a = sa[p % kPix];
    A* __restrict__ b = sb[p % kPix];
    for (int64_t c = 0; c < n; ++c) {
      const A xv = A(px[c]), xm = xv - mu[c], d = xm * xm, s = simam_sigmoid(d * kk[c] + A(0.5));
      const A gy = A(pg[c]) * xv * s * (A(1) - s);
      a[c] += gy * d;
      b[c] += gy * xm;
    }
  }
  for (int64_t c = 0; c < n; ++c) {
    const A ta = (sa[0][c] + sa[1][c]) + (sa[2][c] + sa[3][c]), tb = (sb[0][c] + sb[1][c]) + (sb[2][c] + sb[3][c]);
    c1[c] = A(4) * kk[c] * kk[c] * ta / A(N - 1);
    c2[c] = A(2) * kk[c] * tb / A(N);
  }
  for (int64_t p = 0; p < N; ++p) {
    const T* __restrict__ px = x + p * C;
    const T* __restrict__ pg = g + p * C;
    T* __restrict__ po = gx + p * C;
    for (int64_t c = 0; c < n; ++c) {
      const A xv = A(px[c]), gv = A(pg[c]), xm = xv - mu[c], s = simam_sigmoid(xm * xm * kk[c] + A(0.5));
      const A gy = gv * xv * s * (A(1) - s);
      po[c] = static_cast<T>(gv * s + A(2) * xm * (kk[c] * gy - c1[c]) - c2[c]);
    }
  }
}

// Units: NCHW planes (a range of small planes per task), or channels_last (b, channel block) pairs.
template <typename F>
void simam_units(int64_t units, int64_t unit_elems, F&& f) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(unit_elems, 1));
  at::parallel_for(0, units, grain, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) f(u);
  });
}

std::tuple<Tensor, Tensor, Tensor> simam_gate(const Tensor& x_in, double e_lambda) {
  check_4d(x_in, "x");
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const Tensor x = dense(x_in, fmt, dt);
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2) * x.size(3);
  Tensor out = empty_4d(x.sizes(), x, fmt, dt);
  Tensor mean = at::empty({B, C}, x.options().dtype(acc_scalar_type(dt)));
  Tensor k = at::empty({B, C}, x.options().dtype(acc_scalar_type(dt)));
  FA_DISPATCH(dt, "fa_simam_gate", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* xp = x.const_data_ptr<T>();
    T* op = out.mutable_data_ptr<T>();
    A* mp = mean.mutable_data_ptr<A>();
    A* kp = k.mutable_data_ptr<A>();
    const A lam = static_cast<A>(e_lambda);
    if (fmt != at::MemoryFormat::ChannelsLast) {
      simam_units(B * C, N,
                  [&](int64_t bc) { simam_plane_gate<T>(xp + bc * N, op + bc * N, N, lam, mp + bc, kp + bc); });
      return;
    }
    constexpr int64_t W = kBlock<A>;
    const int64_t blocks = (C + W - 1) / W;
    simam_units(B * blocks, N * W, [&](int64_t u) {
      const int64_t b = u / blocks, c0 = (u % blocks) * W, cc = std::min(C - c0, W);
      const int64_t off = b * N * C + c0;
      if (cc == W) simam_cl_gate<T, W>(xp + off, op + off, N, C, cc, lam, mp + b * C + c0, kp + b * C + c0);
      else simam_cl_gate<T, 0>(xp + off, op + off, N, C, cc, lam, mp + b * C + c0, kp + b * C + c0);
    });
  });
  return {out, mean, k};
}

Tensor simam_grad_input(const Tensor& grad, const Tensor& x_in, const Tensor& mean_in, const Tensor& k_in) {
  check_4d(x_in, "x");
  check_4d(grad, "grad_out");
  TORCH_CHECK(grad.sizes() == x_in.sizes(), "fused_attn (cpu): grad_out must have x's shape ", x_in.sizes(), ", got ",
              grad.sizes());
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const Tensor x = dense(x_in, fmt, dt);
  const Tensor g = dense(grad, fmt, dt);
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2) * x.size(3);
  TORCH_CHECK(mean_in.numel() == B * C && k_in.numel() == B * C, "fused_attn (cpu): mean and k must be [B, C]");
  const Tensor mean = small_acc(mean_in, dt), k = small_acc(k_in, dt);
  Tensor gx = empty_4d(x.sizes(), x, fmt, dt);
  FA_DISPATCH(dt, "fa_simam_grad_input", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* xp = x.const_data_ptr<T>();
    const T* gp = g.const_data_ptr<T>();
    T* op = gx.mutable_data_ptr<T>();
    const A* mp = mean.const_data_ptr<A>();
    const A* kp = k.const_data_ptr<A>();
    if (fmt != at::MemoryFormat::ChannelsLast) {
      simam_units(B * C, 2 * N,
                  [&](int64_t bc) { simam_plane_grad<T>(gp + bc * N, xp + bc * N, op + bc * N, N, mp[bc], kp[bc]); });
      return;
    }
    constexpr int64_t W = kBlock<A>;
    const int64_t blocks = (C + W - 1) / W;
    simam_units(B * blocks, 2 * N * W, [&](int64_t u) {
      const int64_t b = u / blocks, c0 = (u % blocks) * W, cc = std::min(C - c0, W);
      const int64_t off = b * N * C + c0;
      if (cc == W) simam_cl_grad<T, W>(gp + off, xp + off, op + off, N, C, cc, mp + b * C + c0, kp + b * C + c0);
      else simam_cl_grad<T, 0>(gp + off, xp + off, op + off, N, C, cc, mp + b * C + c0, kp + b * C + c0);
    });
  });
  return gx;
}

}  // namespace FA_ISA
}  // namespace cpu
}  // namespace fa
FA_ISA_END

#if FA_ISA_BASE
#define SIMAM_OPS(X) X(simam_gate) X(simam_grad_input)
FA_REGISTER(SIMAM_OPS)
#endif
