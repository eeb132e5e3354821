// Layout and dtype rules shared by the CPU kernels (csrc/cpu/common.h) and the CUDA bindings
// (csrc/cuda/binding.h): one copy of fused_attn/_layout.py's memory-format rule, so every backend and every
// fake kernel agree on output strides. Device-agnostic: no CUDA header, no ISA-specific code.
#pragma once

#include <ATen/ATen.h>

namespace fa {

// float64 math for float64 tensors, float32 for the rest (float16 and bfloat16 included).
inline at::ScalarType acc_scalar_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// fused_attn/_layout.py::memory_format: channels_last only when x is strictly channels_last.
inline bool is_channels_last(const at::Tensor& x) {
  return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}
inline at::MemoryFormat format_of(const at::Tensor& x) {
  return is_channels_last(x) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// `t` dense in `fmt` with dtype `dtype`: itself when it already is, else a copy (documented slow path for
// sliced/permuted inputs, or a gradient that arrives in another layout or dtype than its forward input).
inline at::Tensor dense(const at::Tensor& t, at::MemoryFormat fmt, at::ScalarType dtype) {
  return t.to(dtype).contiguous(fmt);
}

// A small tensor ([B, C] gates, statistics, GroupNorm affine) as a contiguous copy in the accumulation dtype
// of x's dtype `xt` (no copy when it already is).
inline at::Tensor small_acc(const at::Tensor& t, at::ScalarType xt) {
  return t.to(acc_scalar_type(xt)).contiguous();
}

}  // namespace fa
