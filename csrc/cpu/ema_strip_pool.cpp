// CPU kernels of ema_strip_pool (fused_attn/backends/reference/ema_strip_pool.py is the oracle):
//
//   ema_strip_pool_reduce:      pooled[b, c, i] = mean_j x[b, c, i, j], pooled[b, c, H + j] = mean_i x[b, c, i, j]
//   ema_strip_pool_grad_input:  grad_x[b, c, i, j] = grad[b, c, i] / W + grad[b, c, H + j] / H
#include "common.h"
#include "isa.h"

FA_ISA_BEGIN
namespace fa {
namespace cpu {
namespace FA_ISA {

template <typename T>
void strip_pool_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t B, int64_t C, int64_t H, int64_t W,
                       bool cl) {
  using A = acc_t<T>;
  const int64_t HW = H + W;
  if (!cl) {  // unit = one (b, c) plane: row sums along contiguous j, column sums accumulated across rows
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      std::vector<A> col(static_cast<size_t>(W));  // one buffer per thread's range: small planes are many
      A* __restrict__ cs = col.data();
      for (int64_t bc = begin; bc < end; ++bc) {
        const T* __restrict__ plane = x + bc * H * W;
        T* __restrict__ o = out + bc * HW;
        std::fill(cs, cs + W, A(0));
        for (int64_t i = 0; i < H; ++i) {
          const T* __restrict__ row = plane + i * W;
          o[i] = static_cast<T>(lane_sum<A>(W, [&](int64_t j) { return A(row[j]); }) / A(W));
          for (int64_t j = 0; j < W; ++j) cs[j] += A(row[j]);
        }
        for (int64_t j = 0; j < W; ++j) o[H + j] = static_cast<T>(cs[j] / A(H));
      }
    });
    return;
  }
  // channels_last: unit = (b, chunk of kChunk channels); pixel rows of the chunk are contiguous
  constexpr int64_t kChunk = 64;
  const int64_t chunks = (C + kChunk - 1) / kChunk;
  parallel_units(B * chunks, [&](int64_t u) {
    const int64_t b = u / chunks, c0 = (u % chunks) * kChunk, cc = std::min(C, c0 + kChunk) - c0;
    std::vector<A> acc(static_cast<size_t>((W + 1) * cc), A(0));
    A* __restrict__ racc = acc.data();       // [cc]: the current row's sums
    A* __restrict__ cacc = acc.data() + cc;  // [W][cc]: column sums
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

Tensor ema_strip_pool_reduce(const Tensor& x_in) {
  check_4d(x_in, "x");
  const auto fmt = format_of(x_in);
  const auto dt = x_in.scalar_type();
  const Tensor x = dense(x_in, fmt, dt);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor out = at::empty({B, C, H + W}, x.options());
  FA_DISPATCH(dt, "fa_ema_strip_pool_reduce", [&] {
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
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      std::vector<A> col(static_cast<size_t>(W));  // one buffer per thread's range
      A* __restrict__ gw = col.data();
      for (int64_t bc = begin; bc < end; ++bc) {
        const A* __restrict__ g = grad + bc * HW;
        T* __restrict__ o = gx + bc * H * W;
        for (int64_t j = 0; j < W; ++j) gw[j] = g[H + j] / A(H);
        for (int64_t i = 0; i < H; ++i) {
          const A gh = g[i] / A(W);
          for (int64_t j = 0; j < W; ++j) o[i * W + j] = static_cast<T>(gh + gw[j]);
        }
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

Tensor ema_strip_pool_grad_input(const Tensor& grad, const Tensor& x) {
  check_4d(x, "x");
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  TORCH_CHECK(grad.numel() == B * C * (H + W), "fused_attn (cpu): grad must be [B, C, H + W]");
  const auto fmt = format_of(x);
  const auto dt = x.scalar_type();
  const Tensor g = small_acc(grad, dt);
  Tensor gx = empty_4d(x.sizes(), x, fmt, dt);
  FA_DISPATCH(dt, "fa_ema_strip_pool_grad_input", [&] {
    strip_unpool_kernel<scalar_t>(g.const_data_ptr<acc_t<scalar_t>>(), gx.mutable_data_ptr<scalar_t>(), B, C, H, W,
                                  fmt == at::MemoryFormat::ChannelsLast);
  });
  return gx;
}

}  // namespace FA_ISA
}  // namespace cpu
}  // namespace fa
FA_ISA_END

#if FA_ISA_BASE
#define EMA_STRIP_POOL_OPS(X) X(ema_strip_pool_reduce) X(ema_strip_pool_grad_input)
FA_REGISTER(EMA_STRIP_POOL_OPS)
#endif
