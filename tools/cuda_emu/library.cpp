// torch.ops.fused_attn_cuda_emu: the kernel ops of fused_attn_C (same schemas, csrc/op_schemas.h), implemented
// for CPU tensors by the CUDA bindings (csrc/cuda/*.cpp built with FA_CUDA_EMULATION) over the CUDA kernels on
// the emulator (cuda_emu.h), plus two controls of the emulator:
//   emu_set_schedule(mode, seed)  order of the fibers between barriers: "forward", "reverse" or "random"
//   emu_stats(reset) -> [launches, blocks, threads, block barriers, warp exchanges] since the last reset
// and emu_selftest(name, out, threads, arg) -> (cudaError_t, message): one launch of a kernel of
// selftest_kernels.cu that checks the emulator itself.
#include <torch/library.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "../../csrc/op_schemas.h"
#include "cuda_emu.h"

extern "C" cudaError_t fa_emu_selftest(const char* name, float* out, int threads, int arg);

namespace fa_emu {
void set_schedule(int mode, uint64_t seed);
std::vector<int64_t> read_stats(bool reset);
}  // namespace fa_emu

namespace {

void emu_set_schedule(const std::string& mode, int64_t seed) {
  int m = -1;
  if (mode == "forward") m = 0;
  if (mode == "reverse") m = 1;
  if (mode == "random") m = 2;
  TORCH_CHECK(m >= 0, "fa_emu: schedule must be forward, reverse or random, got ", mode);
  fa_emu::set_schedule(m, static_cast<uint64_t>(seed));
}

std::vector<int64_t> emu_stats(bool reset) {
  return fa_emu::read_stats(reset);
}

std::tuple<int64_t, std::string> emu_selftest(const std::string& name, at::Tensor& out, int64_t threads, int64_t arg) {
  TORCH_CHECK(out.is_cpu() && out.scalar_type() == at::kFloat && out.is_contiguous() && out.numel() >= threads,
              "fa_emu: emu_selftest needs a contiguous float32 CPU tensor of at least `threads` elements");
  const cudaError_t e =
      fa_emu_selftest(name.c_str(), out.data_ptr<float>(), static_cast<int>(threads), static_cast<int>(arg));
  return {static_cast<int64_t>(e), e == cudaSuccess ? std::string() : std::string(cudaGetErrorString(e))};
}

}  // namespace

TORCH_LIBRARY(fused_attn_cuda_emu, m) {
  fa::define_kernel_ops(m);
  m.def("emu_set_schedule(str mode, int seed=0) -> ()", &emu_set_schedule);
  m.def("emu_stats(bool reset=False) -> int[]", &emu_stats);
  m.def("emu_selftest(str name, Tensor(a!) out, int threads, int arg=0) -> (int, str)", &emu_selftest);
}
