// CPU kernels of coord_gate (fused_attn/backends/reference/coord_gate.py is the oracle). gate "none":
//   coord_gate_combine:  out[b, c, i, j] = (x * a_w[b, c, j]) * a_h[b, c, i]              (+ x when skip)
//   coord_gate_grads:    one pass over (g = grad_out, x):
//                          grad_x = (g * a_h) * a_w (+ g);  grad_a_h[b, c, i] = sum_j (g x) a_w;
//                          grad_a_w[b, c, j] = sum_i (g x) a_h
// gate "sigmoid" / "hardsigmoid" (a_h, a_w are logits): s = gate(a_h + a_w), out = x s (+ x),
//   grad_x = g s (+ g), d = (g x) gate'(a_h + a_w), grad_a_h = sum_j d, grad_a_w = sum_i d.
//
// Gates are read as contiguous acc_t copies in any floating dtype (autocast's bf16 beside an fp32 x); their
// gradients are returned in their own dtypes.
//  NCHW: unit = one (b, c) plane, which owns grad_a_h[b, c, :] and grad_a_w[b, c, :] outright (rows along j,
//        column sums accumulated row after row): no partials.
//  channels_last: the gates are transposed to [B, H, C] / [B, W, C] (small); combine: unit = (b, i) row of
//        W pixels; grads: unit = (b, chunk of kRows image rows): grad_a_h of its rows complete, grad_a_w as the
//        unit's partial [W, C], added in chunk order afterwards (sum_partials). Deterministic for any thread count.
#include "common.h"
#include "isa.h"

FA_ISA_BEGIN
namespace fa {
namespace cpu {
namespace FA_ISA {

namespace {

constexpr int64_t kRows = 8;

int gate_mode(const std::string& gate) {
  if (gate == "none") return 0;
  if (gate == "sigmoid") return 1;
  if (gate == "hardsigmoid") return 2;
  TORCH_CHECK(false, "fused_attn (cpu): coord_gate gate must be none, sigmoid or hardsigmoid, got ", gate);
  return 0;
}

template <typename A>
FA_INLINE A exp_neg(A z) {
  if constexpr (std::is_same_v<A, float>) return fast_exp(-z);
  else return std::exp(-z);
}

// gate(z) for mode M (1: sigmoid, 2: hardsigmoid = min(max(z + 3, 0), 6) / 6, as torch)
template <int M, typename A>
FA_INLINE A gate_of(A z) {
  if constexpr (M == 1) return A(1) / (A(1) + exp_neg(z));
  else return std::min(std::max(z + A(3), A(0)), A(6)) / A(6);
}

// (gate(z), gate'(z)); hardsigmoid's slope is 1/6 strictly inside (-3, 3), the float32 1/6 in every dtype, as torch
template <int M, typename A>
FA_INLINE void gate_and_slope(A z, A& s, A& ds) {
  if constexpr (M == 1) {
    s = A(1) / (A(1) + exp_neg(z));
    ds = s * (A(1) - s);
  } else {
    s = std::min(std::max(z + A(3), A(0)), A(6)) / A(6);
    ds = (z > A(-3) && z < A(3)) ? A(1.0f / 6.0f) : A(0);
  }
}

// one output element of the forward
template <int M, bool SKIP, typename A>
FA_INLINE A combine_one(A xv, A hv, A wv) {
  A r;
  if constexpr (M == 0) r = (xv * wv) * hv;
  else r = xv * gate_of<M>(hv + wv);
  if constexpr (SKIP) r += xv;
  return r;
}

// one element of the backward: grad_x, and the contributions dh (to grad_a_h) and dw (to grad_a_w)
template <int M, bool SKIP, typename A>
FA_INLINE A grads_one(A gv, A xv, A hv, A wv, A& dh, A& dw) {
  const A e = gv * xv;
  A gx;
  if constexpr (M == 0) {
    gx = (gv * hv) * wv;
    dh = e * wv;
    dw = e * hv;
  } else {
    A s, ds;
    gate_and_slope<M>(hv + wv, s, ds);
    gx = gv * s;
    dh = dw = e * ds;
  }
  if constexpr (SKIP) gx += gv;
  return gx;
}

template <typename F>
void with_mode(int mode, bool skip, F&& f) {
  auto go = [&](auto m) {
    if (skip) f(m, std::true_type{});
    else f(m, std::false_type{});
  };
  if (mode == 0) go(std::integral_constant<int, 0>{});
  else if (mode == 1) go(std::integral_constant<int, 1>{});
  else go(std::integral_constant<int, 2>{});
}

template <typename T, int M, bool SKIP>
void combine_kernel(const T* __restrict__ x, const acc_t<T>* __restrict__ ah, const acc_t<T>* __restrict__ aw,
                    T* __restrict__ out, int64_t B, int64_t C, int64_t H, int64_t W, bool cl) {
  using A = acc_t<T>;
  if (!cl) {  // unit = (b, c) plane; ah [B C][H], aw [B C][W]
    parallel_units(B * C, [&](int64_t bc) {
      const A* __restrict__ wr = aw + bc * W;
      for (int64_t i = 0; i < H; ++i) {
        const int64_t off = (bc * H + i) * W;
        const A hv = ah[bc * H + i];
        for (int64_t j = 0; j < W; ++j) out[off + j] = static_cast<T>(combine_one<M, SKIP>(A(x[off + j]), hv, wr[j]));
      }
    });
    return;
  }
  // channels_last: ah [B][H][C], aw [B][W][C]; unit = (b, i) row of W pixels of C channels
  parallel_units(B * H, [&](int64_t bi) {
    const int64_t b = bi / H;
    const A* __restrict__ hr = ah + bi * C;
    for (int64_t j = 0; j < W; ++j) {
      const int64_t off = (bi * W + j) * C;
      const A* __restrict__ wr = aw + (b * W + j) * C;
      for (int64_t c = 0; c < C; ++c) out[off + c] = static_cast<T>(combine_one<M, SKIP>(A(x[off + c]), hr[c], wr[c]));
    }
  });
}

// NCHW: gh [B C][H], gw [B C][W] complete (acc). channels_last: gh [B][H][C] complete, part [B][chunks][W][C].
template <typename T, int M, bool SKIP>
void grads_kernel(const T* __restrict__ g, const T* __restrict__ x, const acc_t<T>* __restrict__ ah,
                  const acc_t<T>* __restrict__ aw, T* __restrict__ gx, acc_t<T>* __restrict__ gh,
                  acc_t<T>* __restrict__ gw, int64_t B, int64_t C, int64_t H, int64_t W, bool cl) {
  using A = acc_t<T>;
  if (!cl) {
    parallel_units(B * C, [&](int64_t bc) {
      const A* __restrict__ wr = aw + bc * W;
      A* __restrict__ gwr = gw + bc * W;
      std::fill(gwr, gwr + W, A(0));
      for (int64_t i = 0; i < H; ++i) {
        const int64_t off = (bc * H + i) * W;
        const A hv = ah[bc * H + i];
        A lanes[kLanes<A>] = {};
        lane_for<A>(W, [&](int64_t j, int64_t l) {
          A dh, dw;
          gx[off + j] = static_cast<T>(grads_one<M, SKIP>(A(g[off + j]), A(x[off + j]), hv, wr[j], dh, dw));
          lanes[l] += dh;
          gwr[j] += dw;
        });
        gh[bc * H + i] = lanes_total(lanes);
      }
    });
    return;
  }
  const int64_t chunks = (H + kRows - 1) / kRows;
  parallel_units(B * chunks, [&](int64_t u) {
    const int64_t b = u / chunks, i0 = (u % chunks) * kRows, i1 = std::min(H, i0 + kRows);
    A* __restrict__ part = gw + u * W * C;
    std::fill(part, part + W * C, A(0));
    for (int64_t i = i0; i < i1; ++i) {
      const A* __restrict__ hr = ah + (b * H + i) * C;
      A* __restrict__ ghr = gh + (b * H + i) * C;
      std::fill(ghr, ghr + C, A(0));
      for (int64_t j = 0; j < W; ++j) {
        const int64_t off = ((b * H + i) * W + j) * C;
        const A* __restrict__ wr = aw + (b * W + j) * C;
        A* __restrict__ pr = part + j * C;
        for (int64_t c = 0; c < C; ++c) {
          A dh, dw;
          gx[off + c] = static_cast<T>(grads_one<M, SKIP>(A(g[off + c]), A(x[off + c]), hr[c], wr[c], dh, dw));
          ghr[c] += dh;
          pr[c] += dw;
        }
      }
    }
  });
}

struct Gates {
  Tensor ah, aw;  // acc, NCHW: [B, C, H] / [B, C, W]; channels_last: [B, H, C] / [B, W, C]
};

Gates gates_in(const Tensor& x, const Tensor& a_h, const Tensor& a_w, bool cl) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(a_h.numel() == B * C * H, "fused_attn (cpu): a_h must be [B, C, H] = [", B, ", ", C, ", ", H, "], got ",
              a_h.sizes());
  TORCH_CHECK(a_w.numel() == B * C * W, "fused_attn (cpu): a_w must be [B, C, W] = [", B, ", ", C, ", ", W, "], got ",
              a_w.sizes());
  const auto acc = acc_scalar_type(x.scalar_type());
  Tensor ah = a_h.reshape({B, C, H}).to(acc), aw = a_w.reshape({B, C, W}).to(acc);
  if (cl) return {ah.transpose(1, 2).contiguous(), aw.transpose(1, 2).contiguous()};
  return {ah.contiguous(), aw.contiguous()};
}

}  // namespace

Tensor coord_gate_combine(const Tensor& x_in, const Tensor& a_h, const Tensor& a_w, c10::string_view gate, bool skip) {
  check_4d(x_in, "x");
  const int mode = gate_mode(std::string(gate));
  const auto fmt = format_of(x_in);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const auto dt = x_in.scalar_type();
  const Tensor x = dense(x_in, fmt, dt);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const Gates gt = gates_in(x, a_h, a_w, cl);
  Tensor out = empty_4d(x.sizes(), x, fmt, dt);
  FA_DISPATCH(dt, "fa_coord_gate_combine", [&] {
    using A = acc_t<scalar_t>;
    with_mode(mode, skip, [&](auto m, auto s) {
      combine_kernel<scalar_t, decltype(m)::value, decltype(s)::value>(
          x.const_data_ptr<scalar_t>(), gt.ah.const_data_ptr<A>(), gt.aw.const_data_ptr<A>(),
          out.mutable_data_ptr<scalar_t>(), B, C, H, W, cl);
    });
  });
  return out;
}

std::tuple<Tensor, Tensor, Tensor> coord_gate_grads(const Tensor& grad_out, const Tensor& x_in, const Tensor& a_h,
                                                    const Tensor& a_w, c10::string_view gate, bool skip) {
  check_4d(x_in, "x");
  TORCH_CHECK(grad_out.sizes() == x_in.sizes(), "fused_attn (cpu): grad_out must have x's shape ", x_in.sizes(),
              ", got ", grad_out.sizes());
  const int mode = gate_mode(std::string(gate));
  const auto fmt = format_of(x_in);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const auto dt = x_in.scalar_type();
  const auto acc = acc_scalar_type(dt);
  const Tensor x = dense(x_in, fmt, dt);
  const Tensor g = dense(grad_out, fmt, dt);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const Gates gt = gates_in(x, a_h, a_w, cl);
  const int64_t chunks = (H + kRows - 1) / kRows;
  Tensor grad_x = empty_4d(x.sizes(), x, fmt, dt);
  Tensor gh = at::empty(cl ? at::IntArrayRef{B, H, C} : at::IntArrayRef{B, C, H}, x.options().dtype(acc));
  Tensor gw = at::empty({cl ? B * chunks * W * C : B * C * W}, x.options().dtype(acc));
  FA_DISPATCH(dt, "fa_coord_gate_grads", [&] {
    using A = acc_t<scalar_t>;
    with_mode(mode, skip, [&](auto m, auto s) {
      grads_kernel<scalar_t, decltype(m)::value, decltype(s)::value>(
          g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), gt.ah.const_data_ptr<A>(),
          gt.aw.const_data_ptr<A>(), grad_x.mutable_data_ptr<scalar_t>(), gh.mutable_data_ptr<A>(),
          gw.mutable_data_ptr<A>(), B, C, H, W, cl);
    });
  });
  Tensor grad_h, grad_w;
  if (cl) {
    Tensor gw_sum = at::empty({B, W, C}, x.options().dtype(acc));
    FA_DISPATCH(dt, "fa_coord_gate_grads (merge)", [&] {
      using A = acc_t<scalar_t>;
      sum_partials(gw.const_data_ptr<A>(), gw_sum.mutable_data_ptr<A>(), B, chunks, W * C);
    });
    grad_h = gh.transpose(1, 2).to(a_h.scalar_type()).contiguous();
    grad_w = gw_sum.transpose(1, 2).to(a_w.scalar_type()).contiguous();
  } else {
    grad_h = gh.to(a_h.scalar_type()).contiguous();
    grad_w = gw.reshape({B, C, W}).to(a_w.scalar_type()).contiguous();
  }
  return {grad_x, grad_h, grad_w};
}

}  // namespace FA_ISA
}  // namespace cpu
}  // namespace fa
FA_ISA_END

#if FA_ISA_BASE
#define COORD_GATE_OPS(X) X(coord_gate_combine) X(coord_gate_grads)
FA_REGISTER(COORD_GATE_OPS)
#endif
