// Instruction-set variants of the CPU kernels.
//
// Every csrc/cpu/<family>.cpp is compiled twice: once as itself for the baseline ISA (its kernels in namespace
// fa::cpu::base, plus the op registrations), and once through csrc/cpu/<family>_avx2.cpp, which defines
// FA_ISA=avx2 and includes it, so that the same code lands in fa::cpu::avx2 inside a
// `#pragma GCC target("avx2,fma")` region (x86-64 GCC builds only; the extension is built for the baseline
// x86-64 ISA). The registrations pick the avx2 functions once, at load time, when the CPU has AVX2 and FMA and
// the environment variable FUSED_ATTN_CPU_ISA is not "baseline" (tests use it to check the baseline kernels).
//
// Safety of mixing: headers are included before the region, so every inline function or template they define
// is compiled for the baseline ISA (and merely inlined into AVX2 callers); what the region defines lives in the
// avx2 namespace or has internal linkage, so no AVX2 code can be picked by the linker for the baseline path.
#pragma once

#include <cstdlib>
#include <cstring>

#include <torch/library.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FA_HAS_AVX2 1
#else
#define FA_HAS_AVX2 0
#endif

#ifndef FA_ISA
#define FA_ISA base
#define FA_ISA_BASE 1
#define FA_ISA_BEGIN
#define FA_ISA_END
#else
#define FA_ISA_BASE 0
#define FA_ISA_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define FA_ISA_END _Pragma("GCC pop_options")
#endif

namespace fa {
namespace cpu {

// Whether the registered kernels are the AVX2 + FMA variants (decided once per process).
inline bool use_avx2() {
#if FA_HAS_AVX2
  static const bool avx2 = [] {
    const char* isa = std::getenv("FUSED_ATTN_CPU_ISA");
    if (isa != nullptr && std::strcmp(isa, "baseline") == 0) return false;
    __builtin_cpu_init();  // may run from a static initialiser (the op registrations)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return avx2;
#else
  return false;
#endif
}

inline const char* cpu_isa_name() {
  return use_avx2() ? "avx2" : "baseline";
}

}  // namespace cpu
}  // namespace fa

// FA_REGISTER(OPS) registers a family's ops for the CPU key, OPS(X) listing X(op) for each; per op,
// FA_DECLARE_AVX2 declares the avx2 variant (defined by the family's _avx2.cpp) and FA_KERNEL
// picks the variant to register.
#if FA_HAS_AVX2
#define FA_DECLARE_AVX2(name) \
  namespace fa {              \
  namespace cpu {             \
  namespace avx2 {            \
  decltype(base::name) name;  \
  }                           \
  }                           \
  }
#define FA_KERNEL(name) (::fa::cpu::use_avx2() ? &::fa::cpu::avx2::name : &::fa::cpu::base::name)
#else
#define FA_DECLARE_AVX2(name)
#define FA_KERNEL(name) (&::fa::cpu::base::name)
#endif

#define FA_IMPL(name) m.impl(#name, FA_KERNEL(name));
#define FA_REGISTER(OPS)                     \
  OPS(FA_DECLARE_AVX2)                       \
  TORCH_LIBRARY_IMPL(fused_attn_C, CPU, m) { \
    OPS(FA_IMPL)                             \
  }
