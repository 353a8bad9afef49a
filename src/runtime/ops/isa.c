/*
 * The run-time ISA level of isa.h: detected once before main (a constructor, so the dispatchers
 * never see an unset level), forced only by tests.
 */
#include "isa.h"

ss_isa ss_isa_active = SS_ISA_BASE;

ss_isa ss_isa_detect(void)
{
#if defined(__x86_64__)
    /* libgcc's probe also checks that the OS saves the wider registers (XGETBV) */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
        return SS_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return SS_ISA_AVX2;
#endif
    return SS_ISA_BASE;
}

__attribute__((constructor)) static void isa_init(void)
{
    ss_isa_active = ss_isa_detect();
}

ss_isa ss_isa_force(ss_isa level)
{
    ss_isa best = ss_isa_detect();
    ss_isa_active = level < best ? level : best;
    return ss_isa_active;
}

const char *ss_isa_name(ss_isa level)
{
    static const char *names[] = {"baseline", "avx2", "avx512"};
    return (unsigned)level < 3 ? names[level] : "?";
}
