/*
 * Small-M float32 GEMM for constant weights: C[M,N] = alpha * A[M,K] x B[K,N] (+ C), with B
 * row-major and read where it lies (no packing, no extra memory: a 1 GiB external-data model
 * stays a read-only mapping). Register-tile kernels for AVX-512F and AVX2+FMA, chosen at run
 * time with __builtin_cpu_supports; OpenBLAS (sgemv for M == 1, sgemm otherwise) elsewhere.
 *
 * Threads: N is split in 32-column panels (M == 1 on AVX-512: K in 4 fixed pieces up to 4096
 * columns, the bits the same for any thread count) over the process-wide pool: libgomp's team,
 * the one oneDNN runs on (SHARDSERVE_POOL=own: a pool of pthreads that sleep on a condition
 * variable when idle, grown at plan time by ss_gemm_pool_reserve). A call never allocates. If
 * another call holds the pool, a call runs on its own thread alone instead of waiting.
 */
#ifndef SS_RUNTIME_GEMM_KERNEL_H
#define SS_RUNTIME_GEMM_KERNEL_H

#include <stdbool.h>
#include <stdint.h>

#include "shardserve/core.h"

/* Rows of A one kernel pass takes (its packed A lives on the stack: 64 x 256 floats). */
#define SS_GEMM_SMALL_MAX_M 64
/* Largest M the plans send here; larger M runs in passes of SS_GEMM_SMALL_MAX_M rows, each
 * streaming B again. Measured on the 4096 x 4096 MLP (1 thread): at M = 64 and 128 the passes
 * beat OpenBLAS sgemm, which packs B on every call, by about 2x per row. */
#define SS_GEMM_TILE_MAX_M 256

typedef enum {
    SS_GEMM_AUTO = 0, /* the best variant this CPU supports */
    SS_GEMM_BLAS,     /* OpenBLAS: sgemv for M == 1, sgemm otherwise */
    SS_GEMM_AVX2,     /* AVX2 + FMA, 6 x 16 tiles */
    SS_GEMM_AVX512,   /* AVX-512F, 12 x 32 tiles */
} ss_gemm_variant;

/* Whether this CPU runs variant v. */
bool ss_gemm_supported(ss_gemm_variant v);
/* The variant plans choose: the forced one if set (tests), else the best supported. */
ss_gemm_variant ss_gemm_pick(void);
/* Test hook: plans made after this call use v (SS_GEMM_AUTO restores the default). */
void ss_gemm_force(ss_gemm_variant v);
const char *ss_gemm_variant_name(ss_gemm_variant v);
/* How many ss_gemm_small calls ran on variant v (tests check the path they forced was taken). */
unsigned long ss_gemm_calls(ss_gemm_variant v);

/* How the M == 1 GEMV (AVX-512) splits B over threads: default K pieces for up to 4096 columns
 * and column chunks of >= 1024 above; legacy 4 chunks of 32-column panels per thread (what it was
 * before issue 15's split); columns the default's column chunks for any N. Bench hook
 * (bench_kernels --decode): calls after this use s. */
typedef enum {
    SS_GEMV_SPLIT_DEFAULT = 0,
    SS_GEMV_SPLIT_LEGACY,
    SS_GEMV_SPLIT_COLUMNS,
} ss_gemv_split;
void ss_gemm_force_gemv_split(ss_gemv_split s);
ss_gemv_split ss_gemm_gemv_split(void);

/* Makes the pool able to run `threads` parts at once (threads - 1 workers; plan time). Returns
 * how many parts it can run (less than asked if thread creation failed). */
int ss_gemm_pool_reserve(int threads);
/* Whether the pool is libgomp's team (default) rather than the own pthreads (SHARDSERVE_POOL=own,
 * read once). */
bool ss_pool_is_openmp(void);

/* The same pool for any op: runs fn(ctx, part, parts) on the calling thread (part 0) and on up to
 * parts - 1 workers, and returns when every call that started has returned. A worker that is not
 * scheduled before the caller's call returns never runs the task, so fn must claim its work in
 * pieces from a counter in ctx until none is left (the caller's call alone then does it all).
 * parts is capped by the pool's size (reserve it at plan time); when another call holds the
 * workers it becomes 1. */
typedef void (*ss_pool_fn)(void *ctx, int part, int parts);
/* How long the own pool's idle workers (and a caller waiting for them) poll before sleeping, in
 * microseconds (default 0: sleep at once; < 0: the default). The environment's
 * SHARDSERVE_POOL_SPIN_US sets it when the pool is first reserved. libgomp's team waits by its own
 * policy (OMP_WAIT_POLICY, GOMP_SPINCOUNT; see src/agent/spawn.c for the agents'). */
void ss_pool_set_spin_us(int us);
int ss_pool_spin_us(void);
void ss_pool_run(int parts, ss_pool_fn fn, void *ctx);
/* For a fn that does a fixed share, part i of n (an equal run of rows, so that consecutive ops
 * split the same rows the same way): runs fn(ctx, i, parts) once for every i in [0, parts), each
 * i claimed from a counter by whichever of ss_pool_run's callers gets to it first (the caller
 * alone does every i no worker took). */
void ss_pool_run_split(int parts, ss_pool_fn fn, void *ctx);

/* C = alpha * A x B, or C += alpha * A x B when acc. lda/ldb/ldc are row strides in floats.
 * Uses up to `threads` threads (capped by the pool and by the amount of work). Any M; plans use
 * it for M <= SS_GEMM_TILE_MAX_M. */
void ss_gemm_small(ss_gemm_variant v, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                   int64_t lda, const float *B, int64_t ldb, bool acc, float *C, int64_t ldc,
                   int threads);

/* OpenBLAS for float32/float64 (matmul.c): C[M,N] = alpha * op(A) x op(B) + beta * C, C dense
 * (ldc = N); op transposes when ta/tb. M == 1 streams B through gemv. */
void ss_op_blas_gemm(ss_dtype dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                     const void *A, int64_t lda, const void *B, int64_t ldb, float beta, void *C);

#endif
