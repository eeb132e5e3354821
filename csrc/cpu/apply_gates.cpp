// CPU kernels of apply_gates (fused_attn/reference/apply_gates.py is the oracle):
//
//   forward:  out[b, c, p] = residual[b, c, p] + (y[b, c, p] * channel[b, c]) * spatial[b, p]   (each optional)
//   backward, one pass over (g = grad_out, y):
//     grad_y       = (g * channel) * spatial                        like y
//     grad_channel = sum_p (g * y) * spatial                        [B, C]
//     grad_spatial = sum_c (g * y) * channel                        [B, H, W]
//   (grad_residual = g needs no kernel.)
#include "common.h"
#include "gate_map.h"

namespace fused_attn {
namespace cpu {
namespace {

Tensor apply_gates_forward(const Tensor& y, const c10::optional<Tensor>& channel,
                           const c10::optional<Tensor>& spatial, const c10::optional<Tensor>& residual) {
  return gate_map(y, y, channel.value_or(Tensor()), spatial.value_or(Tensor()), residual.value_or(Tensor()),
                  Tensor());
}

// ch [B, C] and sp [B, N] are always given (ones when the gate is absent); HC / HS say which gradients to
// reduce. gc_part [B, blocks, C]: per-unit partial sums of grad_channel; gs [B, N]: grad_spatial.
//  NCHW: unit = (b, block of kBlock pixels); channels in the outer loop, grad_spatial accumulated per pixel in
//        a block-sized buffer, grad_channel per (block, c) over the contiguous pixel row.
//  channels_last: unit = (b, block of kBlock pixels); per pixel a row of C channels: grad_spatial is that
//        row's sum, grad_channel accumulates into the unit's partial row.
template <typename T, bool HC, bool HS>
void gates_backward_kernel(const T* __restrict__ g, const T* __restrict__ y, const acc_t<T>* __restrict__ ch,
                           const acc_t<T>* __restrict__ sp, T* __restrict__ gy, acc_t<T>* __restrict__ gc_part,
                           acc_t<T>* __restrict__ gs, int64_t B, int64_t C, int64_t N, int64_t block,
                           bool channels_last) {
  using A = acc_t<T>;
  const int64_t blocks = (N + block - 1) / block;
  if (!channels_last) {
    parallel_units(B * blocks, [&](int64_t u) {
      const int64_t b = u / blocks, p0 = (u % blocks) * block, n = std::min(N, p0 + block) - p0;
      std::vector<A> gs_acc(HS ? static_cast<size_t>(n) : 0, A(0));
      A* __restrict__ gsa = gs_acc.data();
      const A* __restrict__ spb = sp + b * N + p0;
      for (int64_t c = 0; c < C; ++c) {
        const int64_t off = (b * C + c) * N + p0;
        const A cv = ch[b * C + c];
        A lanes[kLanes<A>] = {};
        lane_for<A>(n, [&](int64_t i, int64_t l) {
          const A gv = A(g[off + i]), sv = spb[i];
          gy[off + i] = static_cast<T>((gv * cv) * sv);
          const A gyv = gv * A(y[off + i]);
          if (HC) lanes[l] += gyv * sv;
          if (HS) gsa[i] += gyv * cv;
        });
        if (HC) gc_part[u * C + c] = lanes_total(lanes);
      }
      if (HS) std::copy(gsa, gsa + n, gs + b * N + p0);
    });
    return;
  }
  parallel_units(B * blocks, [&](int64_t u) {
    const int64_t b = u / blocks, p0 = (u % blocks) * block, p1 = std::min(N, p0 + block);
    A* __restrict__ part = gc_part + u * C;
    if (HC) std::fill(part, part + C, A(0));
    const A* __restrict__ chb = ch + b * C;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t off = (b * N + p) * C;
      const A sv = sp[b * N + p];
      A lanes[kLanes<A>] = {};
      lane_for<A>(C, [&](int64_t c, int64_t l) {
        const A gv = A(g[off + c]), cv = chb[c];
        gy[off + c] = static_cast<T>((gv * cv) * sv);
        const A gyv = gv * A(y[off + c]);
        if (HC) part[c] += gyv * sv;
        if (HS) lanes[l] += gyv * cv;
      });
      if (HS) gs[b * N + p] = lanes_total(lanes);
    }
  });
}

std::tuple<Tensor, Tensor, Tensor> apply_gates_backward(const Tensor& grad_out, const Tensor& y,
                                                        const c10::optional<Tensor>& channel,
                                                        const c10::optional<Tensor>& spatial) {
  check_4d(y, "y");
  TORCH_CHECK(grad_out.sizes() == y.sizes(), "fused_attn (cpu): grad_out must have y's shape");
  const auto fmt = format_of(y);
  const auto dt = y.scalar_type();
  const auto acc = acc_scalar_type(dt);
  const int64_t B = y.size(0), C = y.size(1), N = y.size(2) * y.size(3);
  const bool hc = channel.has_value() && channel->defined();
  const bool hs = spatial.has_value() && spatial->defined();
  const Tensor yd = dense(y, fmt, dt);
  const Tensor gd = dense(grad_out, fmt, dt);
  const Tensor ch = hc ? small_acc(*channel, dt) : at::ones({B, C}, y.options().dtype(acc));
  const Tensor sp = hs ? small_acc(*spatial, dt) : at::ones({B, N}, y.options().dtype(acc));
  TORCH_CHECK(ch.numel() == B * C, "fused_attn (cpu): channel must be [B, C]");
  TORCH_CHECK(sp.numel() == B * N, "fused_attn (cpu): spatial must be [B, H, W]");
  constexpr int64_t kBlock = 256;
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  Tensor grad_y = empty_4d(y.sizes(), y, fmt, dt);
  Tensor gc_part = at::empty({hc ? B * blocks * C : 0}, y.options().dtype(acc));
  Tensor gs = at::empty({hs ? B * N : 0}, y.options().dtype(acc));
  Tensor grad_channel = hc ? at::empty({B, C}, y.options().dtype(channel->scalar_type())) : y.new_empty({0});
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  FUSED_ATTN_DISPATCH(dt, "fused_attn_apply_gates_backward", [&] {
    using A = acc_t<scalar_t>;
    auto run = [&](auto hc_tag, auto hs_tag) {
      gates_backward_kernel<scalar_t, decltype(hc_tag)::value, decltype(hs_tag)::value>(
          gd.const_data_ptr<scalar_t>(), yd.const_data_ptr<scalar_t>(), ch.const_data_ptr<A>(),
          sp.const_data_ptr<A>(), grad_y.mutable_data_ptr<scalar_t>(), gc_part.mutable_data_ptr<A>(),
          gs.mutable_data_ptr<A>(), B, C, N, kBlock, cl);
    };
    using T_ = std::true_type;
    using F_ = std::false_type;
    if (hc && hs) run(T_{}, T_{});
    else if (hc) run(T_{}, F_{});
    else if (hs) run(F_{}, T_{});
    else run(F_{}, F_{});
    if (hc) {
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad_channel.scalar_type(), "grad_channel", [&] {
        sum_partials(gc_part.const_data_ptr<A>(), grad_channel.mutable_data_ptr<scalar_t>(), B, blocks, C);
      });
    }
  });
  Tensor grad_spatial = hs ? gs.view({B, y.size(2), y.size(3)}).to(spatial->scalar_type()) : y.new_empty({0});
  return {grad_y, grad_channel, grad_spatial};
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_attn_C, CPU, m) {
  m.impl("apply_gates_forward", &apply_gates_forward);
  m.impl("apply_gates_backward", &apply_gates_backward);
}

}  // namespace cpu
}  // namespace fused_attn
