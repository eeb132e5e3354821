// global_context.cpp compiled again for AVX2 + FMA, into namespace fa::cpu::avx2 (see isa.h).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FA_ISA avx2
#include "global_context.cpp"
#endif
