/*
 * Run-time ISA choice for the runtime's own vector loops (elementwise kernels, depthwise
 * convolution): each such loop is compiled three times, for AVX-512, AVX2+FMA and the x86-64
 * baseline, and a small dispatcher calls the widest one this CPU (and OS) supports. The choice is
 * made from CPUID when the process starts, never at build time, so one binary is fast on every
 * x86-64 it meets; a test can force a narrower level to check every variant on one machine.
 *
 * SS_ISA_VARIANTS(RET, NAME, PARAMS, ARGS) defines NAME (the dispatcher) from an always-inline
 * NAME##_body with the same PARAMS: the body is inlined into each target-specific copy, which is
 * what lets the compiler vectorize it for that target.
 */
#ifndef SS_RUNTIME_OPS_ISA_H
#define SS_RUNTIME_OPS_ISA_H

typedef enum { SS_ISA_BASE = 0, SS_ISA_AVX2 = 1, SS_ISA_AVX512 = 2 } ss_isa;

/* The level the dispatchers use now (read per call: one predictable branch). */
extern ss_isa ss_isa_active;
/* The widest level this CPU supports. */
ss_isa ss_isa_detect(void);
/* Test hook: use `level` (clamped to what the CPU supports); returns the level set. */
ss_isa ss_isa_force(ss_isa level);
const char *ss_isa_name(ss_isa level);

#define SS_ISA_INLINE static inline __attribute__((always_inline))

#if defined(__x86_64__)
#define SS_ISA_VARIANTS(RET, NAME, PARAMS, ARGS)                                                   \
    __attribute__((                                                                                \
        target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))) static RET NAME##_avx512 PARAMS    \
    {                                                                                              \
        return NAME##_body ARGS;                                                                   \
    }                                                                                              \
    __attribute__((target("avx2,fma"))) static RET NAME##_avx2 PARAMS                              \
    {                                                                                              \
        return NAME##_body ARGS;                                                                   \
    }                                                                                              \
    static RET NAME##_base PARAMS                                                                  \
    {                                                                                              \
        return NAME##_body ARGS;                                                                   \
    }                                                                                              \
    static RET NAME PARAMS                                                                         \
    {                                                                                              \
        switch (ss_isa_active) {                                                                   \
        case SS_ISA_AVX512:                                                                        \
            return NAME##_avx512 ARGS;                                                             \
        case SS_ISA_AVX2:                                                                          \
            return NAME##_avx2 ARGS;                                                               \
        default:                                                                                   \
            return NAME##_base ARGS;                                                               \
        }                                                                                          \
    }
#else
#define SS_ISA_VARIANTS(RET, NAME, PARAMS, ARGS)                                                   \
    static RET NAME PARAMS                                                                         \
    {                                                                                              \
        return NAME##_body ARGS;                                                                   \
    }
#endif

#endif
