/*
 * Float32 GEMM on prepacked constant weights for a batch of rows: C[M,N] = A[M,K] x B[K,N], B a
 * constant packed once at plan time (issue 10's MLP: M = 32, K = N = 4096).
 *
 * Layout (ss_gemm_f32p_pack): panels of 64 columns; a panel is K rows of 64 floats, one
 * contiguous stream (N padded to a multiple of 64 with zeros). The AVX-512 kernel keeps a 6 x 64
 * tile of C in 24 registers and, per k, loads 4 vectors of the panel and broadcasts 6 values of
 * A: 24 FMAs for 10 loads. K runs in blocks of 512 so that a block of the panel (128 KiB) stays
 * in L2 while every 6-row pass of M reads it; only the first pass reads the panel from memory.
 * On AMD EPYC Zen 5 this runs the MLP's GEMM at ~75-85% of the measured FMA peak against ~55-60%
 * for oneDNN 2.6's brgemm on its own packed layout (bench/RUNTIME.md, `bench_kernels --mlp`).
 *
 * AVX-512F only, chosen at run time (isa.h's level): plans use it where ss_gemm_f32p_usable says
 * so and keep oneDNN (or the own in-place kernel) elsewhere. Threads: panels over the gemm pool
 * (gemm_kernel.h), claimed from a counter; a call never allocates.
 */
#ifndef SS_RUNTIME_GEMM_F32P_H
#define SS_RUNTIME_GEMM_F32P_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Folded rows the plans send here (auto and own modes): fewer rows are bound by reading B, which
 * the in-place kernels and the GEMV do without a packed copy; more, and oneDNN's blocking for
 * large M takes over. */
#define SS_GEMM_F32P_MIN_M 17
#define SS_GEMM_F32P_MAX_M 64

/* Whether this process runs the kernel (AVX-512F at the active ISA level) and a product of this
 * shape should use it (rows in the range above, K and N large enough to pay for the pack). tb: B
 * is stored transposed, [N, K] (Gemm's transB, a torch Linear on 2-D input), which the in-place
 * kernels cannot read and OpenBLAS's GEMV reads on one thread: the packed copy from 1 row. */
bool ss_gemm_f32p_usable(int64_t M, int64_t K, int64_t N, bool tb);
/* How many calls ran (tests check the path was taken). */
unsigned long ss_gemm_f32p_calls(void);

/* Bytes of the packed form of a K x N matrix. */
size_t ss_gemm_f32p_packed_bytes(int64_t K, int64_t N);
/* Memory for the packed form (free() releases it; NULL when out of memory): 64-byte aligned, in
 * huge pages where the kernel allows them. */
float *ss_gemm_f32p_alloc(int64_t K, int64_t N);
/* Packs B (K x N, row stride ldb; stored N x K when tb) into `out`. */
void ss_gemm_f32p_pack(const float *B, int64_t K, int64_t N, int64_t ldb, bool tb, float *out);
/* The packed form holds panels of SS_GEMM_F32P_PANEL columns, panel p at
 * out + p * K * SS_GEMM_F32P_PANEL: packs panel p from B's columns p * SS_GEMM_F32P_PANEL ..
 * (N of them in all), with B pointing at the panel's first column (its first row when tb), so a
 * caller can produce B a panel at a time. */
#define SS_GEMM_F32P_PANEL 64
void ss_gemm_f32p_pack_panel(const float *B, int64_t K, int64_t N, int64_t ldb, bool tb, int64_t p,
                             float *out);

/* C = A x Bp, or C += A x Bp with acc (lda / ldc: row strides in floats), on up to `threads`
 * parts of the gemm pool (reserve it at plan time). Any M >= 1; the caller checked
 * ss_gemm_f32p_usable's ISA. */
void ss_gemm_f32p(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *Bp,
                  bool acc, float *C, int64_t ldc, int threads);

#endif
