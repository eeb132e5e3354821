// Kernels that exercise the emulator itself (tests/test_cuda_emulated.py, through emu_selftest in library.cpp):
// shuffles against known butterfly sums, and bugs it must report (a divergent or partial __syncthreads, a
// shuffle that not every named lane reaches, dynamic shared memory over the default limit) or expose (a missing
// barrier, whose result depends on the schedule). Compiled only for the emulator (build.py).
#include <stdint.h>

namespace {

// out[t] = sum of (lane + 1) over the t's `width`-lane segment, by a butterfly.
__global__ void shuffle_sums(float* out, int width) {
  const int t = threadIdx.x;
  float v = static_cast<float>((t & 31) + 1);
  for (int off = width / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off, width);
  out[t] = v;
}

// Threads below 32 wait at one barrier, the rest at another.
__global__ void divergent_barrier(float* out) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

// Threads from 32 on return before the barrier.
__global__ void exited_barrier(float* out) {
  if (threadIdx.x >= 32) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// Half of warp 0 shuffles with the full mask.
__global__ void partial_shuffle(float* out) {
  float v = 1.0f;
  if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

// Each thread writes its slot of shared memory, then reads its neighbour's: correct only with the barrier.
__device__ void neighbour_body(float* out, int with_barrier) {
  FA_DYNAMIC_SMEM(smem);
  float* s = reinterpret_cast<float*>(smem);
  const int t = threadIdx.x, n = blockDim.x;
  s[t] = static_cast<float>(t);
  if (with_barrier) __syncthreads();
  out[t] = s[(t + 1) % n];
}

__global__ void neighbour(float* out, int with_barrier) {
  neighbour_body(out, with_barrier);
}

// The same through a static __shared__ array (which keeps the previous block's values on the hardware).
__global__ void static_neighbour(float* out, int with_barrier) {
  __shared__ float s[1024];
  const int t = threadIdx.x, n = blockDim.x;
  s[t] = static_cast<float>(t);
  if (with_barrier) __syncthreads();
  out[t] = s[(t + 1) % n];
}
// the same, for the launch that raises its dynamic shared-memory limit first (the limit is per kernel)
__global__ void neighbour_opt_in(float* out, int with_barrier) {
  neighbour_body(out, with_barrier);
}

}  // namespace

// name: shuffle_sums, divergent_barrier, exited_barrier, partial_shuffle, neighbour, static_neighbour, big_smem,
// big_smem_allowed.
// out: at least `threads` floats. Returns the launch's cudaError_t (cudaErrorInvalidValue for an unknown name).
extern "C" cudaError_t fa_emu_selftest(const char* name, float* out, int threads, int arg) {
  const auto is = [&](const char* s) {
    for (int i = 0;; ++i) {
      if (name[i] != s[i]) return false;
      if (!s[i]) return true;
    }
  };
  if (is("shuffle_sums")) FA_LAUNCH(1, threads, 0, nullptr, shuffle_sums)(out, arg);
  else if (is("divergent_barrier")) FA_LAUNCH(1, threads, 0, nullptr, divergent_barrier)(out);
  else if (is("exited_barrier")) FA_LAUNCH(1, threads, 0, nullptr, exited_barrier)(out);
  else if (is("partial_shuffle")) FA_LAUNCH(1, threads, 0, nullptr, partial_shuffle)(out);
  else if (is("neighbour")) FA_LAUNCH(1, threads, threads * sizeof(float), nullptr, neighbour)(out, arg);
  else if (is("static_neighbour")) FA_LAUNCH(1, threads, 0, nullptr, static_neighbour)(out, arg);
  else if (is("big_smem") || is("big_smem_allowed")) {
    const int bytes = 64 * 1024;
    if (is("big_smem")) {
      FA_LAUNCH(1, threads, bytes, nullptr, neighbour)(out, 1);
    } else {
      const cudaError_t e = cudaFuncSetAttribute(neighbour_opt_in, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
      if (e != cudaSuccess) return e;
      FA_LAUNCH(1, threads, bytes, nullptr, neighbour_opt_in)(out, 1);
    }
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}
