// Shared pieces of the CUDA bindings (csrc/cuda/<family>.cpp): input checks, layouts, the current stream, launch
// error checks. No torch CUDA header: the device guard is c10::DeviceGuard and the current stream comes from the
// CUDA DeviceGuardImpl that a CUDA build of torch registers, so these files also compile (and are syntax-checked
// in CI, tools/check_cuda_kernels.sh) against a CPU-only torch. The one CUDA header is the runtime API
// (launchers.h: cudaError_t, cudaStream_t, cudaGetErrorString).
//
// Conventions mirror the CPU kernels (csrc/cpu/common.h): 4-D outputs take x's memory format
// (fused_attn/_layout.py); inputs that are not dense in that format are copied once (a documented slow path);
// small tensors (gates, statistics, GroupNorm affine) are read as contiguous accumulation-dtype copies.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/library.h>

#include <cstdint>

#include "../layout.h"
#include "launchers.h"

// The library and dispatch key the bindings register under. tools/cuda_emu builds these same files with
// FA_CUDA_EMULATION for CPU tensors under its own library (fused_attn_cuda_emu), to run the kernels on its CPU
// emulator of the CUDA execution model.
#ifdef FA_CUDA_EMULATION
#define FA_CUDA_LIBRARY fused_attn_cuda_emu
#define FA_CUDA_KEY CPU
#else
#define FA_CUDA_LIBRARY fused_attn_C
#define FA_CUDA_KEY CUDA
#endif

namespace fa {
namespace cuda {

using at::Tensor;

inline int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return FA_FLOAT32;
    case at::kDouble:
      return FA_FLOAT64;
    case at::kHalf:
      return FA_FLOAT16;
    case at::kBFloat16:
      return FA_BFLOAT16;
    default:
      TORCH_CHECK(false, "fused_attn (cuda): unsupported dtype ", t, " (float32, float64, float16, bfloat16)");
  }
  return FA_FLOAT32;  // unreachable
}

inline void check_cuda(const Tensor& t, const char* name) {
  TORCH_CHECK(t.defined(), "fused_attn (cuda): ", name, " is undefined");
#ifdef FA_CUDA_EMULATION
  TORCH_CHECK(t.device().is_cpu(), "fused_attn (cuda emulation): ", name, " must be a CPU tensor, got ", t.device());
#else
  TORCH_CHECK(t.device().is_cuda(), "fused_attn (cuda): ", name, " must be a CUDA tensor, got ", t.device());
#endif
}

// x: 4-D CUDA tensor of a supported dtype.
inline void check_4d(const Tensor& t, const char* name) {
  check_cuda(t, name);
  TORCH_CHECK(t.dim() == 4, "fused_attn (cuda): ", name, " must be 4-D [B, C, H, W], got ", t.sizes());
  dtype_code(t.scalar_type());
}

// `t` on the device of `ref` (same GPU).
inline void check_same_device(const Tensor& ref, const Tensor& t, const char* name) {
  check_cuda(t, name);
  TORCH_CHECK(t.device() == ref.device(), "fused_attn (cuda): ", name, " is on ", t.device(), " but the input is on ",
              ref.device());
}

inline void check_numel(const Tensor& t, int64_t n, const char* name, const char* shape) {
  TORCH_CHECK(t.numel() == n, "fused_attn (cuda): ", name, " must be ", shape, " (", n, " elements), got ", t.sizes());
}

inline Tensor empty_4d(at::IntArrayRef shape, const Tensor& like, at::MemoryFormat fmt, at::ScalarType dtype) {
  return at::empty(shape, like.options().dtype(dtype).memory_format(fmt));
}

// The current CUDA stream of `t`'s device, through the CUDA DeviceGuardImpl (no c10/cuda header).
inline cudaStream_t current_stream(const Tensor& t) {
#ifdef FA_CUDA_EMULATION
  (void)t;
  return nullptr;  // the emulator runs every launch synchronously
#else
  const c10::Stream s = c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getStream(t.device());
  return static_cast<cudaStream_t>(s.native_handle());
#endif
}

// Every launcher's status, checked (the launchers call cudaGetLastError after each launch).
inline void check_launch(cudaError_t e, const char* what) {
  TORCH_CHECK(e == cudaSuccess, "fused_attn (cuda): ", what, " failed: ", cudaGetErrorString(e));
}

inline const void* cptr(const Tensor& t) {
  return t.defined() ? t.const_data_ptr() : nullptr;
}
inline void* mptr(Tensor& t) {
  return t.defined() ? t.mutable_data_ptr() : nullptr;
}

}  // namespace cuda
}  // namespace fa
