// fused_attn._C: the op schemas of the C++ backends and a bare Python module.
//
// Every C++ op lives in the torch.library namespace `fused_attn_C`: build_info and cpu_isa are defined here, the
// kernel ops (one per kernel pass, fused_attn_C::<pass>) are declared by op_schemas.h and their kernels are
// registered per device in csrc/cpu/<family>.cpp (CPU) and csrc/cuda/<family>.cpp (CUDA).
// Python reaches them through torch.ops.fused_attn_C.*, so the module needs no pybind: importing it only
// loads this library, whose static initialisers run the registrations below.
#include <Python.h>

#include <string>

#include <torch/library.h>

#include "cpu/isa.h"
#include "op_schemas.h"

#ifdef _OPENMP
#include <omp.h>
#endif

extern "C" {
// The module `fused_attn._C` itself is empty (Python limited API, no libtorch_python link).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace fa {

// "key=value;..." describing this build; read by fused_attn._ext.build_info().
static std::string build_info() {
  std::string s = "version=1";
#ifdef _OPENMP
  s += ";openmp=1;omp_max_threads=" + std::to_string(omp_get_max_threads());
#else
  s += ";openmp=0";
#endif
#ifdef FA_WITH_CUDA
  s += ";cuda=1";
#else
  s += ";cuda=0";
#endif
#if defined(__clang__)
  s += ";compiler=clang " + std::string(__clang_version__);
#elif defined(__GNUC__)
  s += ";compiler=gcc " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__);
#endif
  s += ";cplusplus=" + std::to_string(__cplusplus);
  return s;
}

// The kernel ops' schemas are in op_schemas.h (shared with tools/cuda_emu's library).
TORCH_LIBRARY(fused_attn_C, m) {
  m.def("build_info() -> str", &build_info);
  // Instruction set of the registered CPU kernels: "avx2" (AVX2 + FMA variants) or "baseline" (csrc/cpu/isa.h).
  m.def("cpu_isa() -> str", [] { return std::string(fa::cpu::cpu_isa_name()); });

  define_kernel_ops(m);
}

}  // namespace fa
