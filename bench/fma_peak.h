/*
 * The CPU's f32 multiply-add peak, measured: independent FMA chains in registers (no loads), on
 * `threads` threads at once, with the widest vector ISA this CPU runs (src/runtime/ops/isa.h:
 * AVX-512, AVX2+FMA, or 128-bit mul+add on the x86-64 baseline). Benches quote GEMM GFLOP/s as a
 * fraction of this number measured in the same run (a data sheet's peak assumes a clock the VM
 * may not give).
 */
#ifndef SS_BENCH_FMA_PEAK_H
#define SS_BENCH_FMA_PEAK_H

#include <stddef.h>

typedef struct {
    const char *isa;    /* "avx512", "avx2", "sse" */
    double gflops_wall; /* all threads' flops / wall time, best of the repeats */
    double gflops_cpu;  /* sum over threads of flops / that thread's CPU time (descheduling
                           excluded), best of the repeats */
    int threads;
} fma_peak;

/* About `seconds` of work per repeat, `repeats` times; the best repeat is kept. */
fma_peak fma_peak_measure(int threads, double seconds, int repeats);

/* Memory read bandwidth in GB/s: `threads` threads summing their share of a `mib` MiB buffer
 * (far larger than the caches) with vector loads, best of `repeats` passes. What a GEMM that
 * streams its weights once per call can at best get. 0 when the buffer cannot be allocated. */
double read_bw_measure(int threads, size_t mib, int repeats);

#endif
