// CPU kernels of the global_context family (fused_attn/backends/reference/global_context.py is the oracle):
//
//   global_context_pool_reduce(x, weight)   one pass over x:
//     z[b, p] = sum_c weight[c] x[b, c, p];  lse[b] = logsumexp_p z;  ctx[b, c] = sum_p exp(z - lse) x[b, c, p]
//   global_context_pool_grads(g, x, weight, ctx, lse)   one pass over x, one write of grad_x:
//     a = exp(z - lse), dz[b, p] = a (sum_c g x - sum_c g ctx)
//     grad_x[b, c, p] = g[b, c] a[b, p] + dz[b, p] weight[c];  grad_weight[c] = sum_{b, p} dz x
//
// (Function names carry a gc_ prefix: every family's kernels share the namespaces fa::cpu::base / avx2.)
// Work units are (b, block of kUnit pixels), fixed by the shapes. The forward walks a unit in tiles of kTile
// pixels: the tile's logits (a reduction over C), then an online softmax (running max m and sum l; when a tile
// raises the max, l and the unit's channel sums are rescaled by exp(m_old - m_new)) and the weighted channel sums
// over the tile, re-read from cache. Each unit leaves (m, l, sums[C]); the units of an image are merged in unit
// order: M = max m_k, L = sum l_k e^(m_k - M), ctx = sum sums_k e^(m_k - M) / L, lse = M + log L. The backward's
// units write grad_x and a partial grad_weight row each, added in unit order. No atomics: bitwise identical for
// any thread count. Nothing x-sized is allocated besides grad_x.
#include "common.h"
#include "isa.h"

FA_ISA_BEGIN
namespace fa {
namespace cpu {
namespace FA_ISA {

constexpr int64_t kUnit = 512;  // pixels per work unit
constexpr int64_t kTileNchw = 64, kTileCl = 16;

template <typename A>
FA_INLINE A gc_exp(A v) {
  if constexpr (std::is_same_v<A, float>) return fast_exp(v);
  else return std::exp(v);
}

// One unit's forward: out (m, l) and sums[C] (the unscaled sum_p e^(z - m) x) for pixels [p0, p1) of image b.
template <typename T>
void gc_reduce_unit(const T* __restrict__ xb, const acc_t<T>* __restrict__ w, int64_t C, int64_t N, int64_t p0,
                    int64_t p1, bool cl, acc_t<T>* __restrict__ sums, acc_t<T>& m_out, acc_t<T>& l_out) {
  using A = acc_t<T>;
  const int64_t tile = cl ? kTileCl : kTileNchw;
  A z[kTileNchw];
  A m = -std::numeric_limits<A>::infinity(), l = A(0);
  std::fill(sums, sums + C, A(0));
  for (int64_t t0 = p0; t0 < p1; t0 += tile) {
    const int64_t n = std::min(tile, p1 - t0);
    if (cl) {
      for (int64_t i = 0; i < n; ++i) {
        const T* __restrict__ xr = xb + (t0 + i) * C;
        z[i] = lane_sum<A>(C, [&](int64_t c) { return w[c] * A(xr[c]); });
      }
    } else {
      std::fill(z, z + n, A(0));
      for (int64_t c = 0; c < C; ++c) {
        const T* __restrict__ xr = xb + c * N + t0;
        const A wc = w[c];
        for (int64_t i = 0; i < n; ++i) z[i] += wc * A(xr[i]);
      }
    }
    A tm = z[0];
    for (int64_t i = 1; i < n; ++i) tm = std::max(tm, z[i]);
    if (tm > m) {  // a new running max: rescale what the unit has summed so far
      const A s = gc_exp<A>(m - tm);
      l *= s;
      for (int64_t c = 0; c < C; ++c) sums[c] *= s;
      m = tm;
    }
    for (int64_t i = 0; i < n; ++i) z[i] = gc_exp<A>(z[i] - m);
    for (int64_t i = 0; i < n; ++i) l += z[i];
    if (cl) {
      for (int64_t i = 0; i < n; ++i) {
        const T* __restrict__ xr = xb + (t0 + i) * C;
        const A e = z[i];
        for (int64_t c = 0; c < C; ++c) sums[c] += e * A(xr[c]);
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        const T* __restrict__ xr = xb + c * N + t0;
        sums[c] += lane_sum<A>(n, [&](int64_t i) { return z[i] * A(xr[i]); });
      }
    }
  }
  m_out = m;
  l_out = l;
}

// ctx [B, C], lse [B]; part: [B K][C + 2] per-unit (sums, m, l)
template <typename T>
void gc_reduce_kernel(const T* __restrict__ x, const acc_t<T>* __restrict__ w, acc_t<T>* __restrict__ ctx,
                      acc_t<T>* __restrict__ lse, int64_t B, int64_t C, int64_t N, bool cl) {
  using A = acc_t<T>;
  const int64_t K = (N + kUnit - 1) / kUnit, row = C + 2;
  std::vector<A> part(static_cast<size_t>(B * K * row));
  parallel_units(B * K, [&](int64_t u) {
    const int64_t b = u / K, p0 = (u % K) * kUnit, p1 = std::min(N, p0 + kUnit);
    A* __restrict__ pr = part.data() + u * row;
    gc_reduce_unit<T>(x + b * C * N, w, C, N, p0, p1, cl, pr, pr[C], pr[C + 1]);
  });
  parallel_units(B, [&](int64_t b) {
    const A* __restrict__ pb = part.data() + b * K * row;
    A M = -std::numeric_limits<A>::infinity();
    for (int64_t k = 0; k < K; ++k) M = std::max(M, pb[k * row + C]);
    A L = A(0);
    A* __restrict__ o = ctx + b * C;
    std::fill(o, o + C, A(0));
    for (int64_t k = 0; k < K; ++k) {
      const A* __restrict__ pk = pb + k * row;
      const A s = K == 1 ? A(1) : std::exp(pk[C] - M);
      L += pk[C + 1] * s;
      for (int64_t c = 0; c < C; ++c) o[c] += pk[c] * s;
    }
    const A inv = A(1) / L;
    for (int64_t c = 0; c < C; ++c) o[c] *= inv;
    lse[b] = M + std::log(L);
  });
}

// -> (ctx [B, C], lse [B]) in the accumulation dtype
std::tuple<Tensor, Tensor> global_context_pool_reduce(const Tensor& x_in, const Tensor& weight) {
  check_4d(x_in, "x");
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const int64_t B = x_in.size(0), C = x_in.size(1), N = x_in.size(2) * x_in.size(3);
  TORCH_CHECK(weight.numel() == C, "fused_attn (cpu): weight must have C = ", C, " elements, got ", weight.numel());
  const Tensor x = dense(x_in, fmt, dt);
  const Tensor w = small_acc(weight, dt);
  const auto opts = x.options().dtype(acc_scalar_type(dt));
  Tensor ctx = at::empty({B, C}, opts);
  Tensor lse = at::empty({B}, opts);
  if (N == 0) return {ctx.zero_(), lse.fill_(-std::numeric_limits<double>::infinity())};
  FA_DISPATCH(dt, "fa_global_context_pool_reduce", [&] {
    using A = acc_t<scalar_t>;
    gc_reduce_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), w.const_data_ptr<A>(), ctx.mutable_data_ptr<A>(),
                               lse.mutable_data_ptr<A>(), B, C, N, fmt == at::MemoryFormat::ChannelsLast);
  });
  return {ctx, lse};
}

// One unit of the backward: grad_x for pixels [p0, p1) of image b, and part_w[c] = sum_p dz x over them.
template <typename T>
void gc_grads_unit(const T* __restrict__ xb, const acc_t<T>* __restrict__ w, const acc_t<T>* __restrict__ g,
                   acc_t<T> lse, acc_t<T> gc, T* __restrict__ gxb, int64_t C, int64_t N, int64_t p0, int64_t p1,
                   bool cl, acc_t<T>* __restrict__ part_w) {
  using A = acc_t<T>;
  std::fill(part_w, part_w + C, A(0));
  if (cl) {  // pixel by pixel: the row of C channels is read for the two dot products, then again from L1
    for (int64_t p = p0; p < p1; ++p) {
      const T* __restrict__ xr = xb + p * C;
      T* __restrict__ gr = gxb + p * C;
      A lz[kLanes<A>] = {}, ls[kLanes<A>] = {};
      lane_for<A>(C, [&](int64_t c, int64_t l) {
        const A v = A(xr[c]);
        lz[l] += w[c] * v;
        ls[l] += g[c] * v;
      });
      const A z = lanes_total(lz), s = lanes_total(ls);
      const A a = gc_exp<A>(z - lse), dz = a * (s - gc);
      for (int64_t c = 0; c < C; ++c) {
        gr[c] = static_cast<T>(g[c] * a + dz * w[c]);
        part_w[c] += dz * A(xr[c]);
      }
    }
    return;
  }
  A z[kTileNchw], s[kTileNchw];
  for (int64_t t0 = p0; t0 < p1; t0 += kTileNchw) {
    const int64_t n = std::min(kTileNchw, p1 - t0);
    std::fill(z, z + n, A(0));
    std::fill(s, s + n, A(0));
    for (int64_t c = 0; c < C; ++c) {
      const T* __restrict__ xr = xb + c * N + t0;
      const A wc = w[c], gcv = g[c];
      for (int64_t i = 0; i < n; ++i) {
        const A v = A(xr[i]);
        z[i] += wc * v;
        s[i] += gcv * v;
      }
    }
    for (int64_t i = 0; i < n; ++i) {
      const A a = gc_exp<A>(z[i] - lse);
      z[i] = a;                // a
      s[i] = a * (s[i] - gc);  // dz
    }
    for (int64_t c = 0; c < C; ++c) {
      const T* __restrict__ xr = xb + c * N + t0;
      T* __restrict__ gr = gxb + c * N + t0;
      const A wc = w[c], gcv = g[c];
      for (int64_t i = 0; i < n; ++i) gr[i] = static_cast<T>(gcv * z[i] + s[i] * wc);
      part_w[c] += lane_sum<A>(n, [&](int64_t i) { return s[i] * A(xr[i]); });
    }
  }
}

// -> (grad_x like x, grad_weight [C] acc dtype)
std::tuple<Tensor, Tensor> global_context_pool_grads(const Tensor& grad_ctx, const Tensor& x_in, const Tensor& weight,
                                                     const Tensor& ctx, const Tensor& lse) {
  check_4d(x_in, "x");
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const int64_t B = x_in.size(0), C = x_in.size(1), N = x_in.size(2) * x_in.size(3);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  TORCH_CHECK(weight.numel() == C, "fused_attn (cpu): weight must have C = ", C, " elements, got ", weight.numel());
  TORCH_CHECK(grad_ctx.numel() == B * C && ctx.numel() == B * C, "fused_attn (cpu): grad_ctx and ctx must be [B, C]");
  TORCH_CHECK(lse.numel() == B, "fused_attn (cpu): lse must be [B]");
  const Tensor x = dense(x_in, fmt, dt);
  const Tensor w = small_acc(weight, dt), g = small_acc(grad_ctx, dt);
  const Tensor st = small_acc(lse, dt);
  const Tensor gc = (g * small_acc(ctx, dt).reshape({B, C})).sum(1).contiguous();  // [B] g . ctx
  const auto acc = acc_scalar_type(dt);
  Tensor grad_x = empty_4d(x.sizes(), x, fmt, dt);
  Tensor grad_w = at::empty({C}, x.options().dtype(acc));
  const int64_t K = (N + kUnit - 1) / kUnit;
  if (B * K == 0) return {grad_x, grad_w.zero_()};
  Tensor part_w = at::empty({B * K, C}, x.options().dtype(acc));
  FA_DISPATCH(dt, "fa_global_context_pool_grads", [&] {
    using A = acc_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    const A *wp = w.const_data_ptr<A>(), *gp = g.const_data_ptr<A>(), *lp = st.const_data_ptr<A>();
    const A* gcp = gc.const_data_ptr<A>();
    A* pw = part_w.mutable_data_ptr<A>();
    parallel_units(B * K, [&](int64_t u) {
      const int64_t b = u / K, p0 = (u % K) * kUnit, p1 = std::min(N, p0 + kUnit);
      gc_grads_unit<scalar_t>(xp + b * C * N, wp, gp + b * C, lp[b], gcp[b], gxp + b * C * N, C, N, p0, p1, cl,
                              pw + u * C);
    });
    sum_partials(part_w.const_data_ptr<A>(), grad_w.mutable_data_ptr<A>(), 1, B * K, C);
  });
  return {grad_x, grad_w};
}

}  // namespace FA_ISA
}  // namespace cpu
}  // namespace fa
FA_ISA_END

#if FA_ISA_BASE
#define GLOBAL_CONTEXT_OPS(X) X(global_context_pool_reduce) X(global_context_pool_grads)
FA_REGISTER(GLOBAL_CONTEXT_OPS)
#endif
