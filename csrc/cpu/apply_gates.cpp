// CPU kernels of apply_gates (fused_attn/backends/reference/apply_gates.py is the oracle):
//
//   apply_gates_combine:  out[b, c, p] = residual[b, c, p] + (y[b, c, p] * channel[b, c]) * spatial[b, p]
//                         (each optional)
//   apply_gates_grads, one pass over (g = grad_out, y):
//     grad_y       = (g * channel) * spatial                        like y
//     grad_channel = sum_p (g * y) * spatial                        [B, C]
//     grad_spatial = sum_c (g * y) * channel                        [B, H, W]
//   (grad_residual = g needs no kernel.)
//   apply_gates_grad_gates: the same pass without grad_y (reads g, y; writes only the two small gradients), for
//   dual_attention's backward, whose grad_x has more terms (csrc/cpu/dual_attention.cpp).
// apply_gates_combine is the shared elementwise pass (gate_map.h).
#include "common.h"
#include "isa.h"

FA_ISA_BEGIN
namespace fa {
namespace cpu {
namespace FA_ISA {

#include "gate_map.h"  // inside the ISA namespace and region

Tensor apply_gates_combine(const Tensor& y, const c10::optional<Tensor>& channel, const c10::optional<Tensor>& spatial,
                           const c10::optional<Tensor>& residual) {
  return gate_map(y, y, channel.value_or(Tensor()), spatial.value_or(Tensor()), residual.value_or(Tensor()), Tensor());
}

// One NCHW row (b, c) of the backward: grad_y = (g cv) sp (when GY), returns sum_p (g y) sp (grad_channel[b, c])
// and adds (g y) cv to the unit's grad_spatial partial row. Out of line (FA_ROW: the caller loops over c).
template <typename T, bool HC, bool HS, bool GY>
FA_ROW acc_t<T> gates_grads_row(const T* __restrict__ g, const T* __restrict__ y, acc_t<T> cv,
                                const acc_t<T>* __restrict__ sp, T* __restrict__ gy, acc_t<T>* __restrict__ gs_part,
                                int64_t n) {
  using A = acc_t<T>;
  A lanes[kLanes<A>] = {};
  lane_for<A>(n, [&](int64_t i, int64_t l) {
    const A gv = A(g[i]), sv = sp[i];
    if (GY) gy[i] = static_cast<T>((gv * cv) * sv);
    const A gyv = gv * A(y[i]);
    if (HC) lanes[l] += gyv * sv;
    if (HS) gs_part[i] += gyv * cv;
  });
  return HC ? lanes_total(lanes) : A(0);
}

// ch [B, C] and sp [B, N] are always given (ones when the gate is absent); HC / HS say which gradients to
// reduce. Both layouts stream their rows in memory order:
//  NCHW: unit = (b, chunk of kChunk channels), a contiguous slab; grad_channel is each row's sum (final, into
//        gc [B, C]); grad_spatial accumulates into the unit's partial row, gs [B, chunks, N].
//  channels_last: unit = (b, block of kPixels pixels); grad_spatial is each pixel row's sum (final, into
//        gs [B, N]); grad_channel accumulates into the unit's partial row, gc [B, blocks, C].
// Partials are added in unit order afterwards (sum_partials): deterministic.
constexpr int64_t kChunk = 16, kPixels = 64;

template <typename T, bool HC, bool HS, bool GY>
void gates_grads_kernel(const T* __restrict__ g, const T* __restrict__ y, const acc_t<T>* __restrict__ ch,
                        const acc_t<T>* __restrict__ sp, T* __restrict__ gy, acc_t<T>* __restrict__ gc,
                        acc_t<T>* __restrict__ gs, int64_t B, int64_t C, int64_t N, bool channels_last) {
  using A = acc_t<T>;
  if (!channels_last) {
    const int64_t chunks = (C + kChunk - 1) / kChunk;
    parallel_units(B * chunks, [&](int64_t u) {
      const int64_t b = u / chunks, c0 = (u % chunks) * kChunk, c1 = std::min(C, c0 + kChunk);
      A* __restrict__ gsp = HS ? gs + u * N : nullptr;
      if (HS) std::fill(gsp, gsp + N, A(0));
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t off = (b * C + c) * N;
        const A total = gates_grads_row<T, HC, HS, GY>(g + off, y + off, ch[b * C + c], sp + b * N, gy + off, gsp, N);
        if (HC) gc[b * C + c] = total;
      }
    });
    return;
  }
  const int64_t blocks = (N + kPixels - 1) / kPixels;
  parallel_units(B * blocks, [&](int64_t u) {
    const int64_t b = u / blocks, p0 = (u % blocks) * kPixels, p1 = std::min(N, p0 + kPixels);
    A* __restrict__ part = HC ? gc + u * C : nullptr;
    if (HC) std::fill(part, part + C, A(0));
    const A* __restrict__ chb = ch + b * C;
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t off = (b * N + p) * C;
      const A sv = sp[b * N + p];
      A lanes[kLanes<A>] = {};
      lane_for<A>(C, [&](int64_t c, int64_t l) {
        const A gv = A(g[off + c]), cv = chb[c];
        if (GY) gy[off + c] = static_cast<T>((gv * cv) * sv);
        const A gyv = gv * A(y[off + c]);
        if (HC) part[c] += gyv * sv;
        if (HS) lanes[l] += gyv * cv;
      });
      if (HS) gs[b * N + p] = lanes_total(lanes);
    }
  });
}

// The backward pass; grad_y is written only when write_grad_y (else returned undefined).
std::tuple<Tensor, Tensor, Tensor> gates_grads(const Tensor& grad_out, const Tensor& y,
                                               const c10::optional<Tensor>& channel,
                                               const c10::optional<Tensor>& spatial, bool write_grad_y) {
  check_4d(y, "y");
  TORCH_CHECK(grad_out.sizes() == y.sizes(), "fused_attn (cpu): grad_out must have y's shape");
  const auto fmt = format_of(y);
  const auto dt = y.scalar_type();
  const auto acc = acc_scalar_type(dt);
  const int64_t B = y.size(0), C = y.size(1), N = y.size(2) * y.size(3);
  const bool hc = channel.has_value() && channel->defined();
  const bool hs = spatial.has_value() && spatial->defined();
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const Tensor yd = dense(y, fmt, dt);
  const Tensor gd = dense(grad_out, fmt, dt);
  const Tensor ch = hc ? small_acc(*channel, dt) : at::ones({B, C}, y.options().dtype(acc));
  const Tensor sp = hs ? small_acc(*spatial, dt) : at::ones({B, N}, y.options().dtype(acc));
  TORCH_CHECK(ch.numel() == B * C, "fused_attn (cpu): channel must be [B, C]");
  TORCH_CHECK(sp.numel() == B * N, "fused_attn (cpu): spatial must be [B, H, W]");
  // partial sums: NCHW reduces grad_spatial over channel chunks, channels_last grad_channel over pixel blocks
  const int64_t parts = cl ? (N + kPixels - 1) / kPixels : (C + kChunk - 1) / kChunk;
  Tensor grad_y = write_grad_y ? empty_4d(y.sizes(), y, fmt, dt) : Tensor();
  Tensor gc = at::empty({hc ? B * (cl ? parts : 1) * C : 0}, y.options().dtype(acc));
  Tensor gs = at::empty({hs ? B * (cl ? 1 : parts) * N : 0}, y.options().dtype(acc));
  Tensor grad_channel = hc ? at::empty({B, C}, y.options().dtype(channel->scalar_type())) : y.new_empty({0});
  Tensor grad_spatial =
      hs ? at::empty({B, y.size(2), y.size(3)}, y.options().dtype(spatial->scalar_type())) : y.new_empty({0});
  FA_DISPATCH(dt, "fa_apply_gates_grads", [&] {
    using A = acc_t<scalar_t>;
    scalar_t* gyp = write_grad_y ? grad_y.mutable_data_ptr<scalar_t>() : nullptr;
    auto run = [&](auto hc_tag, auto hs_tag) {
      auto kernel = [&](auto gy_tag) {
        gates_grads_kernel<scalar_t, decltype(hc_tag)::value, decltype(hs_tag)::value, decltype(gy_tag)::value>(
            gd.const_data_ptr<scalar_t>(), yd.const_data_ptr<scalar_t>(), ch.const_data_ptr<A>(),
            sp.const_data_ptr<A>(), gyp, gc.mutable_data_ptr<A>(), gs.mutable_data_ptr<A>(), B, C, N, cl);
      };
      if (write_grad_y) kernel(std::true_type{});
      else kernel(std::false_type{});
    };
    using T_ = std::true_type;
    using F_ = std::false_type;
    if (hc && hs) run(T_{}, T_{});
    else if (hc) run(T_{}, F_{});
    else if (hs) run(F_{}, T_{});
    else run(F_{}, F_{});
    // merge the partials (or cast the finished sums) into the gates' dtype
    const A* gcp = gc.const_data_ptr<A>();
    const A* gsp = gs.const_data_ptr<A>();
    if (hc) {
      FA_DISPATCH(grad_channel.scalar_type(), "grad_channel",
                  [&] { sum_partials(gcp, grad_channel.mutable_data_ptr<scalar_t>(), B, cl ? parts : 1, C); });
    }
    if (hs) {
      FA_DISPATCH(grad_spatial.scalar_type(), "grad_spatial",
                  [&] { sum_partials(gsp, grad_spatial.mutable_data_ptr<scalar_t>(), B, cl ? 1 : parts, N); });
    }
  });
  return {grad_y, grad_channel, grad_spatial};
}

std::tuple<Tensor, Tensor, Tensor> apply_gates_grads(const Tensor& grad_out, const Tensor& y,
                                                     const c10::optional<Tensor>& channel,
                                                     const c10::optional<Tensor>& spatial) {
  return gates_grads(grad_out, y, channel, spatial, true);
}

// -> (grad_channel, grad_spatial) of apply_gates_grads, without writing grad_y.
std::tuple<Tensor, Tensor> apply_gates_grad_gates(const Tensor& grad_out, const Tensor& y, const Tensor& channel,
                                                  const Tensor& spatial) {
  auto grads = gates_grads(grad_out, y, channel, spatial, false);
  return {std::get<1>(grads), std::get<2>(grads)};
}

}  // namespace FA_ISA
}  // namespace cpu
}  // namespace fa
FA_ISA_END

#if FA_ISA_BASE
#define APPLY_GATES_OPS(X) X(apply_gates_combine) X(apply_gates_grads) X(apply_gates_grad_gates)
FA_REGISTER(APPLY_GATES_OPS)
#endif
