// CPU kernels of the dual_attention family (fused_attn/backends/reference/dual_attention.py is the oracle):
//
//   dual_attention_reduce(x, ws)      one pass over x:
//     pooled[b, c] = mean_p x[b, c, p]                       [B, C] acc dtype
//     logit[b, p]  = sum_c ws[c] x[b, c, p]                  [B, H, W] acc dtype (the 1x1 conv C -> 1, no bias)
//   dual_attention_grad_input(g, x, channel, spatial, ws, grad_logit, grad_pooled)   one pass over (g, x):
//     grad_x[b, c, p] = (g channel[b, c]) spatial[b, p] + ws[c] grad_logit[b, p] + grad_pooled[b, c] / HW
//     grad_ws[c]      = sum_{b, p} x[b, c, p] grad_logit[b, p]                       [C] acc dtype
//
// The op's other two passes are of the apply_gates family (csrc/cpu/apply_gates.cpp): x * channel * spatial is
// apply_gates_combine, the gate gradients (sum_p g x spatial, sum_c g x channel) are apply_gates_grad_gates.
#include "common.h"
#include "isa.h"

FA_ISA_BEGIN
namespace fa {
namespace cpu {
namespace FA_ISA {

// Units as in apply_gates' backward: NCHW (b, chunk of kChunk channels), channels_last (b, block of kPixels
// pixels); the cross-unit sums go through per-unit partial rows added in unit order (deterministic).
constexpr int64_t kChunk = 16, kPixels = 64;

// One NCHW row (b, c) of the forward: returns sum_p x, adds wc x to the unit's partial logit row.
template <typename T>
FA_ROW acc_t<T> reduce_row(const T* __restrict__ x, acc_t<T> wc, acc_t<T>* __restrict__ logit_part, int64_t n) {
  using A = acc_t<T>;
  A lanes[kLanes<A>] = {};
  lane_for<A>(n, [&](int64_t i, int64_t l) {
    const A v = A(x[i]);
    lanes[l] += v;
    logit_part[i] += wc * v;
  });
  return lanes_total(lanes);
}

// sums [B, C] (of x over pixels), logit [B, N]
template <typename T>
void reduce_kernel(const T* __restrict__ x, const acc_t<T>* __restrict__ ws, acc_t<T>* __restrict__ sums,
                   acc_t<T>* __restrict__ logit, int64_t B, int64_t C, int64_t N, bool channels_last) {
  using A = acc_t<T>;
  if (!channels_last) {
    const int64_t chunks = (C + kChunk - 1) / kChunk;
    reduce_in_parts<A>(logit, B, chunks, N, [&](int64_t b, int64_t k, A* __restrict__ part) {
      const int64_t c0 = k * kChunk, c1 = std::min(C, c0 + kChunk);
      for (int64_t c = c0; c < c1; ++c) sums[b * C + c] = reduce_row<T>(x + (b * C + c) * N, ws[c], part, N);
    });
    return;
  }
  const int64_t blocks = (N + kPixels - 1) / kPixels;
  reduce_in_parts<A>(sums, B, blocks, C, [&](int64_t b, int64_t k, A* __restrict__ part) {
    const int64_t p0 = k * kPixels, p1 = std::min(N, p0 + kPixels);
    for (int64_t p = p0; p < p1; ++p) {
      const T* __restrict__ xr = x + (b * N + p) * C;
      A lanes[kLanes<A>] = {};
      lane_for<A>(C, [&](int64_t c, int64_t l) {
        const A v = A(xr[c]);
        part[c] += v;
        lanes[l] += ws[c] * v;
      });
      logit[b * N + p] = lanes_total(lanes);
    }
  });
}

// -> (pooled [B, C], logit [B, H, W]) in the accumulation dtype
std::tuple<Tensor, Tensor> dual_attention_reduce(const Tensor& x, const Tensor& ws) {
  check_4d(x, "x");
  const auto fmt = format_of(x);
  const auto dt = x.scalar_type();
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2) * x.size(3);
  TORCH_CHECK(ws.numel() == C, "fused_attn (cpu): ws must have C = ", C, " elements, got ", ws.numel());
  const Tensor xd = dense(x, fmt, dt);
  const Tensor w = small_acc(ws, dt);
  const auto opts = x.options().dtype(acc_scalar_type(dt));
  Tensor pooled = at::empty({B, C}, opts);
  Tensor logit = at::empty({B, x.size(2), x.size(3)}, opts);
  FA_DISPATCH(dt, "fa_dual_attention_reduce", [&] {
    using A = acc_t<scalar_t>;
    reduce_kernel<scalar_t>(xd.const_data_ptr<scalar_t>(), w.const_data_ptr<A>(), pooled.mutable_data_ptr<A>(),
                            logit.mutable_data_ptr<A>(), B, C, N, fmt == at::MemoryFormat::ChannelsLast);
  });
  return {pooled.div_(static_cast<double>(N)), logit};
}

// One NCHW row (b, c) of the backward: writes grad_x, returns sum_p x grad_logit.
template <typename T>
FA_ROW acc_t<T> grad_input_row(const T* __restrict__ g, const T* __restrict__ x, acc_t<T> cv,
                               const acc_t<T>* __restrict__ sp, acc_t<T> wc, const acc_t<T>* __restrict__ gl,
                               acc_t<T> shift, T* __restrict__ gx, int64_t n) {
  using A = acc_t<T>;
  A lanes[kLanes<A>] = {};
  lane_for<A>(n, [&](int64_t i, int64_t l) {
    const A glv = gl[i];
    gx[i] = static_cast<T>((A(g[i]) * cv) * sp[i] + wc * glv + shift);
    lanes[l] += A(x[i]) * glv;
  });
  return lanes_total(lanes);
}

// grad_x like x; part_ws: NCHW [B, C] (one partial per (b, c) row), channels_last [B * blocks, C].
template <typename T>
void grad_input_kernel(const T* __restrict__ g, const T* __restrict__ x, const acc_t<T>* __restrict__ ch,
                       const acc_t<T>* __restrict__ sp, const acc_t<T>* __restrict__ ws,
                       const acc_t<T>* __restrict__ gl, const acc_t<T>* __restrict__ shift, T* __restrict__ gx,
                       acc_t<T>* __restrict__ part_ws, int64_t B, int64_t C, int64_t N, bool channels_last) {
  using A = acc_t<T>;
  if (!channels_last) {
    parallel_units(B * C, [&](int64_t bc) {
      const int64_t b = bc / C, c = bc % C, off = bc * N;
      part_ws[bc] = grad_input_row<T>(g + off, x + off, ch[bc], sp + b * N, ws[c], gl + b * N, shift[bc], gx + off, N);
    });
    return;
  }
  const int64_t blocks = (N + kPixels - 1) / kPixels;
  parallel_units(B * blocks, [&](int64_t u) {
    const int64_t b = u / blocks, p0 = (u % blocks) * kPixels, p1 = std::min(N, p0 + kPixels);
    A* __restrict__ part = part_ws + u * C;
    std::fill(part, part + C, A(0));
    const A* __restrict__ chb = ch + b * C;
    const A* __restrict__ shb = shift + b * C;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t off = (b * N + p) * C;
      const A spv = sp[b * N + p], glv = gl[b * N + p];
      for (int64_t c = 0; c < C; ++c) {
        gx[off + c] = static_cast<T>((A(g[off + c]) * chb[c]) * spv + ws[c] * glv + shb[c]);
        part[c] += A(x[off + c]) * glv;
      }
    }
  });
}

// -> (grad_x like x, grad_ws [C] acc dtype)
std::tuple<Tensor, Tensor> dual_attention_grad_input(const Tensor& grad_out, const Tensor& x, const Tensor& channel,
                                                     const Tensor& spatial, const Tensor& ws, const Tensor& grad_logit,
                                                     const Tensor& grad_pooled) {
  check_4d(x, "x");
  TORCH_CHECK(grad_out.sizes() == x.sizes(), "fused_attn (cpu): grad_out must have x's shape");
  const auto fmt = format_of(x);
  const auto dt = x.scalar_type();
  const int64_t B = x.size(0), C = x.size(1), N = x.size(2) * x.size(3);
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const Tensor xd = dense(x, fmt, dt), gd = dense(grad_out, fmt, dt);
  const Tensor ch = small_acc(channel, dt), sp = small_acc(spatial, dt), w = small_acc(ws, dt);
  const Tensor gl = small_acc(grad_logit, dt);
  const Tensor shift = small_acc(grad_pooled, dt) / static_cast<double>(std::max<int64_t>(N, 1));
  TORCH_CHECK(ch.numel() == B * C && shift.numel() == B * C, "fused_attn (cpu): channel terms must be [B, C]");
  TORCH_CHECK(sp.numel() == B * N && gl.numel() == B * N, "fused_attn (cpu): spatial terms must be [B, H, W]");
  TORCH_CHECK(w.numel() == C, "fused_attn (cpu): ws must have C = ", C, " elements");
  const auto acc = acc_scalar_type(dt);
  Tensor grad_x = empty_4d(x.sizes(), x, fmt, dt);
  const int64_t parts = cl ? B * ((N + kPixels - 1) / kPixels) : B;
  Tensor part_ws = at::empty({parts, C}, x.options().dtype(acc));
  Tensor grad_ws = at::empty({C}, x.options().dtype(acc));
  FA_DISPATCH(dt, "fa_dual_attention_grad_input", [&] {
    using A = acc_t<scalar_t>;
    grad_input_kernel<scalar_t>(gd.const_data_ptr<scalar_t>(), xd.const_data_ptr<scalar_t>(), ch.const_data_ptr<A>(),
                                sp.const_data_ptr<A>(), w.const_data_ptr<A>(), gl.const_data_ptr<A>(),
                                shift.const_data_ptr<A>(), grad_x.mutable_data_ptr<scalar_t>(),
                                part_ws.mutable_data_ptr<A>(), B, C, N, cl);
    sum_partials(part_ws.const_data_ptr<A>(), grad_ws.mutable_data_ptr<A>(), 1, parts, C);
  });
  return {grad_x, grad_ws};
}

}  // namespace FA_ISA
}  // namespace cpu
}  // namespace fa
FA_ISA_END

#if FA_ISA_BASE
#define DUAL_ATTENTION_OPS(X) X(dual_attention_reduce) X(dual_attention_grad_input)
FA_REGISTER(DUAL_ATTENTION_OPS)
#endif
