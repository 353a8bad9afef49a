/*
 * Small-M GEMM on bf16 weights for decode: C[M,N] (+)= A[M,K] x B[K,N], A and C float32, B a
 * constant converted once to bf16 (`--weights bf16`). At decode M is 1 per sequence (a few at
 * batch) and the product is bound by reading B, so holding B in half the bytes halves the time;
 * oneDNN 2.6's bf16 matmul is slow for such M and reorders A to bf16 on every call.
 *
 * Layout (ss_gemm_bf16_pack): blocks of 64 columns; inside a block, for each pair of rows k, k+1
 * of B, 64 columns x 2 bf16 (k then k+1), i.e. one 64-byte vector per 16 columns. A block is one
 * contiguous stream, and one 32-bit lane holds (B[k][n], B[k+1][n]): a shift and a mask give both
 * as float32 (AVX-512F, AVX2), and vdpbf16ps (AVX512-BF16) takes the pair as it is. N is padded
 * to a multiple of 64 and K to even with zeros.
 *
 * Variants, chosen by CPUID at run time in this order (a test forces each): AVX512-BF16
 * (vdpbf16ps, A rounded to bf16 like oneDNN's bf16 path), AVX-512F and AVX2 (weights widened to
 * float32, A exact), and plain C. Every variant accumulates each output in the same k order
 * whatever M is, so a row's result does not depend on the rows batched with it. Threads: column
 * blocks over the gemm pool (gemm_kernel.h); a call never allocates.
 */
#ifndef SS_RUNTIME_GEMM_BF16_H
#define SS_RUNTIME_GEMM_BF16_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest M (batch rows folded) the kernel's tiles are written for. */
#define SS_GEMM_BF16_MAX_M 64

typedef enum {
    SS_BF16_AUTO = 0,
    SS_BF16_C,          /* plain C */
    SS_BF16_AVX2,       /* AVX2 + FMA, weights widened */
    SS_BF16_AVX512,     /* AVX-512F, weights widened */
    SS_BF16_AVX512_DOT, /* AVX512-BF16 vdpbf16ps, A rounded to bf16 */
} ss_bf16_variant;

bool ss_gemm_bf16_supported(ss_bf16_variant v);
/* The variant calls use: the forced one if set (tests), else the best this CPU supports. */
ss_bf16_variant ss_gemm_bf16_pick(void);
/* Test hook: calls after this use v (SS_BF16_AUTO restores the default). */
void ss_gemm_bf16_force(ss_bf16_variant v);
const char *ss_gemm_bf16_name(ss_bf16_variant v);
/* Largest M (batch rows folded) the plans send here for a GEMM of N columns on the variant calls
 * use, where oneDNN could run it in bf16 instead (see gemm_bf16.c for the measurements). */
int64_t ss_gemm_bf16_max_m(int64_t N);
/* Test and bench hook: plans after this use m as the largest M (m < 0 restores the default). */
void ss_gemm_bf16_force_max_m(int64_t m);
/* Bench hook: row tiles of at most `rows` (1 .. 6; 0 restores the default, 6). */
void ss_gemm_bf16_force_tile_rows(int rows);
/* Bench hook: chunks of kp k pairs (0: the default), the next chunk prefetched or not. */
void ss_gemm_bf16_force_chunk(int64_t kp, bool prefetch);
/* How many calls ran on variant v. */
unsigned long ss_gemm_bf16_calls(ss_bf16_variant v);

/* Bytes of the packed form of a K x N matrix. */
size_t ss_gemm_bf16_packed_bytes(int64_t K, int64_t N);
/* Memory for the packed form (free() releases it; NULL when out of memory): 64-byte aligned, in
 * huge pages where the kernel allows them. */
uint16_t *ss_gemm_bf16_alloc(int64_t K, int64_t N);
/* Rounds B (K x N, row stride ldb; stored N x K when tb) to bf16 (nearest even) into `out`
 * (ss_gemm_bf16_packed_bytes, 64-byte aligned). */
void ss_gemm_bf16_pack(const float *B, int64_t K, int64_t N, int64_t ldb, bool tb, uint16_t *out);
/* Scratch a call of M rows needs (A rounded to bf16 for the vdpbf16ps variant). */
size_t ss_gemm_bf16_scratch(int64_t M, int64_t K);

/* C = A x Bp, or C += A x Bp when acc; lda/ldc are row strides in floats. Up to `threads` parts
 * on the gemm pool (reserve it at plan time). scratch: ss_gemm_bf16_scratch bytes. */
void ss_gemm_bf16(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const uint16_t *Bp,
                  bool acc, float *C, int64_t ldc, int threads, void *scratch);

#endif
