// A CPU emulator of the CUDA execution model, for running csrc/cuda/*_kernels.cu without a GPU.
//
// build.py compiles each kernel file as plain C++ with this header forced in first (-include) and
// -DFA_CUDA_EMULATION. Kernels keep their CUDA source: the qualifiers (__global__, __device__, ...) become empty,
// the builtins (threadIdx, blockIdx, blockDim, gridDim) read the emulated thread's coordinates, and
//   FA_LAUNCH(grid, block, smem, stream, kernel)(args...)   runs every block of the grid, one after another, each
//                                                           block as blockDim cooperative fibers (runtime.cpp);
//   __syncthreads()                                         a block barrier between the fibers;
//   __shfl_xor_sync(mask, v, lane_mask[, width])            a warp exchange (two warp barriers);
//   __shared__ T a[n]                                       a static array (blocks run one at a time);
//   FA_DYNAMIC_SMEM(name)                                   the launch's dynamic shared memory;
// both filled with 0xff bytes (NaN) before each block, so a read of shared memory nobody wrote shows.
// The runtime checks what the hardware leaves undefined: a __syncthreads that not every live thread of the block
// reaches at the same call site, or that some threads have exited before; a shuffle whose mask names a lane that
// exited, does not exist, or waits elsewhere; launch configurations out of range; dynamic shared memory over 48 KB
// without cudaFuncSetAttribute. The order in which fibers run between barriers is selectable (forward, reverse,
// seeded random: set_schedule), so results that depend on it (a missing barrier) show up as differences.
//
// The CUDA runtime functions the kernels call (cudaGetLastError, cudaMemsetAsync, cudaFuncSetAttribute,
// cudaDeviceGetAttribute, ...) are defined in runtime.cpp, synchronously, on host memory: "device" pointers are
// CPU tensors' data.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#include <functional>
#include <tuple>
#include <utility>

#undef __host__
#undef __device__
#undef __global__
#undef __shared__
#undef __launch_bounds__
#define __host__
#define __device__
#define __global__
// static shared arrays live in one section, which the runtime fills with 0xff bytes before every block
#define __shared__ static __attribute__((section("fa_emu_shared")))
#define __launch_bounds__(...)

namespace fa_emu {

// The emulated thread's builtins, set by the scheduler before it resumes a fiber.
struct Builtins {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
extern thread_local Builtins builtins;

void block_barrier(const char* file, int line);
// Exchanges `bytes` of `value` with lane (lane ^ lane_mask) of the same `width`-lane segment -> out.
void warp_exchange(const void* value, void* out, int bytes, unsigned mask, int lane_mask, int width, const char* file,
                   int line);
unsigned char* dynamic_smem();
// Runs body on every thread of every block; records (and returns) the launch error for cudaGetLastError.
cudaError_t launch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, const void* kernel,
                   const std::function<void()>& body);

template <typename... P>
struct Launch {
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  void (*kernel)(P...);

  template <typename... Args>
  void operator()(Args&&... args) const {
    const std::tuple<P...> params(std::forward<Args>(args)...);  // converted as a launch converts them
    launch(grid, block, smem, stream, reinterpret_cast<const void*>(kernel), [&] { std::apply(kernel, params); });
  }
};

template <typename... P>
Launch<P...> make_launch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, void (*kernel)(P...)) {
  return Launch<P...>{grid, block, smem, stream, kernel};
}

template <typename T>
T shfl_xor(const char* file, int line, unsigned mask, T value, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= 8, "fa_emu: shuffles of at most 8 bytes");
  T out;
  warp_exchange(&value, &out, static_cast<int>(sizeof(T)), mask, lane_mask, width, file, line);
  return out;
}

}  // namespace fa_emu

#define threadIdx (::fa_emu::builtins.thread_idx)
#define blockIdx (::fa_emu::builtins.block_idx)
#define blockDim (::fa_emu::builtins.block_dim)
#define gridDim (::fa_emu::builtins.grid_dim)
#define warpSize 32
#define __syncthreads() ::fa_emu::block_barrier(__FILE__, __LINE__)
#define __shfl_xor_sync(...) ::fa_emu::shfl_xor(__FILE__, __LINE__, __VA_ARGS__)

#define FA_LAUNCH(grid, block, smem, stream, ...) ::fa_emu::make_launch(grid, block, smem, stream, __VA_ARGS__)
#define FA_DYNAMIC_SMEM(name) unsigned char* name = ::fa_emu::dynamic_smem()

// cuda_runtime.h declares this overload for nvcc only.
template <class T>
cudaError_t cudaFuncSetAttribute(T* entry, enum cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(entry), attr, value);
}
