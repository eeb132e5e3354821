// Instruction-set variants of the CPU kernels.
//
// Every csrc/cpu/<family>.cpp is compiled twice: once as itself for the baseline ISA (its kernels in namespace
// fused_attn::cpu::base, plus the op registrations), and once through csrc/cpu/<family>_avx2.cpp, which defines
// FUSED_ATTN_ISA=avx2 and includes it, so that the same code lands in fused_attn::cpu::avx2 inside a
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
#define FUSED_ATTN_HAS_AVX2 1
#else
#define FUSED_ATTN_HAS_AVX2 0
#endif

#ifndef FUSED_ATTN_ISA
#define FUSED_ATTN_ISA base
#define FUSED_ATTN_ISA_BASE 1
#define FUSED_ATTN_ISA_BEGIN
#define FUSED_ATTN_ISA_END
#else
#define FUSED_ATTN_ISA_BASE 0
#define FUSED_ATTN_ISA_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define FUSED_ATTN_ISA_END _Pragma("GCC pop_options")
#endif

namespace fused_attn {
namespace cpu {

// Whether the registered kernels are the AVX2 + FMA variants (decided once per process).
inline bool use_avx2() {
#if FUSED_ATTN_HAS_AVX2
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

inline const char* cpu_isa_name() { return use_avx2() ? "avx2" : "baseline"; }

}  // namespace cpu
}  // namespace fused_attn

// FUSED_ATTN_REGISTER(OPS) registers a family's ops for the CPU key, OPS(X) listing X(op) for each; per op,
// FUSED_ATTN_DECLARE_AVX2 declares the avx2 variant (defined by the family's _avx2.cpp) and FUSED_ATTN_KERNEL
// picks the variant to register.
#if FUSED_ATTN_HAS_AVX2
#define FUSED_ATTN_DECLARE_AVX2(name) \
  namespace fused_attn {              \
  namespace cpu {                     \
  namespace avx2 {                    \
  decltype(base::name) name;          \
  }                                   \
  }                                   \
  }
#define FUSED_ATTN_KERNEL(name) \
  (::fused_attn::cpu::use_avx2() ? &::fused_attn::cpu::avx2::name : &::fused_attn::cpu::base::name)
#else
#define FUSED_ATTN_DECLARE_AVX2(name)
#define FUSED_ATTN_KERNEL(name) (&::fused_attn::cpu::base::name)
#endif

#define FUSED_ATTN_IMPL(name) m.impl(#name, FUSED_ATTN_KERNEL(name));
#define FUSED_ATTN_REGISTER(OPS) \
  OPS(FUSED_ATTN_DECLARE_AVX2)   \
  TORCH_LIBRARY_IMPL(fused_attn_C, CPU, m) { OPS(FUSED_ATTN_IMPL) }
