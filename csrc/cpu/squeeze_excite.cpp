// CPU kernels of the squeeze_excite family (fused_attn/backends/reference/squeeze_excite.py is the oracle):
//
//   channel_squeeze_reduce(x)            p[b, c] = mean_hw x[b, c]                [B, C] acc dtype
//   channel_squeeze_grad_input(grad, x)  grad_x[b, c, p] = grad[b, c] / HW        like x
//   channel_scale(x, s)                  y = x * s[b, c]                          like x
//   squeeze_excite_grad_gate(grad_y, x)  grad_s[b, c] = sum_hw grad_y * x         [B, C] acc dtype
//   squeeze_excite_grad_input(grad_y, x, s, grad_pooled)
//                                        grad_x = grad_y * s + grad_pooled / HW   like x
//
// The SE MLP runs in PyTorch between the passes, so the fused backward is squeeze_excite_grad_gate (reads
// grad_y, x), the MLP backward, then squeeze_excite_grad_input (reads grad_y, writes grad_x): 3 reads + 1 write
// of x's size.
#include "common.h"
#include "isa.h"

FA_ISA_BEGIN
namespace fa {
namespace cpu {
namespace FA_ISA {

#include "gate_map.h"  // inside the ISA namespace and region

// sums[b, c] = sum_p a[b, c, p] (* m[b, c, p] when PROD).
//  NCHW: one unit per (b, c) row of N contiguous pixels, reduced with lane_sum.
//  channels_last: one unit per block of kPixels pixels of one image, accumulating rows of C contiguous
//  channels into that unit's partial row; partial rows are then added in block order (deterministic).
template <typename T, bool PROD>
void hw_sum_kernel(const T* __restrict__ a, const T* __restrict__ m, acc_t<T>* __restrict__ sums, int64_t B, int64_t C,
                   int64_t N, bool channels_last) {
  using A = acc_t<T>;
  if (!channels_last) {
    parallel_units(B * C, [&](int64_t bc) {
      const T* __restrict__ ar = a + bc * N;
      const T* __restrict__ mr = PROD ? m + bc * N : nullptr;
      sums[bc] = lane_sum<A>(N, [&](int64_t i) { return PROD ? A(ar[i]) * A(mr[i]) : A(ar[i]); });
    });
    return;
  }
  constexpr int64_t kPixels = 64;
  const int64_t blocks = (N + kPixels - 1) / kPixels;
  reduce_in_parts<A>(sums, B, blocks, C, [&](int64_t b, int64_t k, A* __restrict__ acc) {
    const int64_t p0 = k * kPixels, p1 = std::min(N, p0 + kPixels);
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t off = (b * N + p) * C;
      for (int64_t c = 0; c < C; ++c) acc[c] += PROD ? A(a[off + c]) * A(m[off + c]) : A(a[off + c]);
    }
  });
}

// [B, C] sums over H, W of a (or a * m, m read in a's layout), in the accumulation dtype.
Tensor hw_sum(const Tensor& a, const Tensor& m) {
  check_4d(a, "x");
  const auto fmt = format_of(a);
  const auto dt = a.scalar_type();
  const Tensor ad = dense(a, fmt, dt);
  const Tensor md = m.defined() ? dense(m, fmt, dt) : m;
  const int64_t B = a.size(0), C = a.size(1), N = a.size(2) * a.size(3);
  Tensor sums = at::empty({B, C}, a.options().dtype(acc_scalar_type(dt)));
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  FA_DISPATCH(dt, "fa_hw_sum", [&] {
    using A = acc_t<scalar_t>;
    if (md.defined())
      hw_sum_kernel<scalar_t, true>(ad.const_data_ptr<scalar_t>(), md.const_data_ptr<scalar_t>(),
                                    sums.mutable_data_ptr<A>(), B, C, N, cl);
    else
      hw_sum_kernel<scalar_t, false>(ad.const_data_ptr<scalar_t>(), nullptr, sums.mutable_data_ptr<A>(), B, C, N, cl);
  });
  return sums;
}

// p = mean_hw x
Tensor channel_squeeze_reduce(const Tensor& x) {
  Tensor sums = hw_sum(x, Tensor());
  return sums.div_(static_cast<double>(x.size(2) * x.size(3)));
}

// grad_x = grad[b, c] / HW at every pixel (a write-only pass)
Tensor channel_squeeze_grad_input(const Tensor& grad, const Tensor& x) {
  check_4d(x, "x");
  const Tensor shift = small_acc(grad, x.scalar_type()) / static_cast<double>(x.size(2) * x.size(3));
  return gate_map(x, Tensor(), Tensor(), Tensor(), Tensor(), shift);
}

// y = x * s[b, c]
Tensor channel_scale(const Tensor& x, const Tensor& s) {
  return gate_map(x, x, s, Tensor(), Tensor(), Tensor());
}

// grad_s = sum_hw grad_y * x (grad_y read in x's layout)
Tensor squeeze_excite_grad_gate(const Tensor& grad_y, const Tensor& x) {
  TORCH_CHECK(grad_y.sizes() == x.sizes(), "fused_attn (cpu): grad_y must have x's shape");
  return hw_sum(x, grad_y);
}

// grad_x = grad_y * s + grad_pooled / HW
Tensor squeeze_excite_grad_input(const Tensor& grad_y, const Tensor& x, const Tensor& s, const Tensor& grad_pooled) {
  check_4d(x, "x");
  TORCH_CHECK(grad_y.sizes() == x.sizes(), "fused_attn (cpu): grad_y must have x's shape");
  const Tensor shift = small_acc(grad_pooled, x.scalar_type()) / static_cast<double>(x.size(2) * x.size(3));
  return gate_map(x, grad_y, s, Tensor(), Tensor(), shift);
}

}  // namespace FA_ISA
}  // namespace cpu
}  // namespace fa
FA_ISA_END

#if FA_ISA_BASE
#define SQUEEZE_EXCITE_OPS(X) \
  X(channel_squeeze_reduce)   \
  X(channel_squeeze_grad_input) X(channel_scale) X(squeeze_excite_grad_gate) X(squeeze_excite_grad_input)
FA_REGISTER(SQUEEZE_EXCITE_OPS)
#endif
