/*
 * GEMM on int8 weights (`--weights int8`), written for decode: C[M,N] (+)= A[M,K] x B[K,N], A and
 * C float32, B a constant quantized once to int8 with one scale per output column (symmetric,
 * absmax / 127). Each call quantizes every row of A to int8 with its own scale (absmax / 127, the
 * dynamic quantization onnxruntime's MatMulInteger path uses per tensor) and accumulates exact
 * int32 dot products on AVX512-VNNI (vpdpbusd: 64 multiply-adds per instruction); an output is
 * (int32 sum) x row scale x column scale. At decode M is 1 per sequence and the product is bound
 * by reading B, so a quarter of float32's bytes (half of bf16's) is what it is for: measured on
 * the MLP's 4096x4096 layers (bench/RUNTIME.md, "Does an int8 path pay?") the int8 GEMV read its
 * 16 MiB at the bandwidth the bf16 GEMV reads its 32 MiB, 2.0x bf16 and 5.7x float32 on 2 threads;
 * oneDNN 2.6 runs int8 matmuls on gemm:jit here, no faster than float32 at M = 1.
 *
 * Error: one int8 step on each side, relative L2 ~5e-3 on uniform data (bf16: ~2e-3). Rows are
 * quantized separately and each output's k order is fixed, so a row's result does not depend on
 * the rows batched with it.
 *
 * Layout (ss_gemm_q8_pack): the column scales (float32) and compensations (int32: 128 x the
 * column's int8 sum, taking back the +128 that makes A unsigned for vpdpbusd), then blocks of 16
 * columns; inside a block, for each 4 rows k..k+3 of B, 16 columns x 4 int8 (one 64-byte vector).
 * N is padded to a multiple of 64 and K to a multiple of 4 with zeros.
 *
 * Only on CPUs with AVX512-VNNI and AVX512BW (ss_gemm_q8_supported); elsewhere plans keep
 * float32. Threads: groups of 4 blocks (4 weight streams at once) over the gemm pool; a call never
 * allocates.
 */
#ifndef SS_RUNTIME_GEMM_Q8_H
#define SS_RUNTIME_GEMM_Q8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Rows a call quantizes and runs per pass over the weights: a call takes any M, this many rows at
 * a time. Measured (bench_kernels --bf16, GPT-2-124M's matrices, 2 threads, Zen 5): faster than
 * the own bf16 kernel and oneDNN's bf16 matmul at 1 .. 256 rows (1.1-2.4x). */
#define SS_GEMM_Q8_MAX_M 64

/* Largest K plans send here: vpdpbusd sums into int32 without saturation, each term at most
 * 255 x 127 (A unsigned, B symmetric), so K up to 66311 cannot overflow. */
#define SS_GEMM_Q8_MAX_K 65536

bool ss_gemm_q8_supported(void);
/* How many calls ran. */
unsigned long ss_gemm_q8_calls(void);

/* Bytes of the packed form of a K x N matrix (scales, compensations, int8 blocks). */
size_t ss_gemm_q8_packed_bytes(int64_t K, int64_t N);
/* Memory for the packed form (free() releases it; NULL when out of memory): 64-byte aligned, in
 * huge pages where the kernel allows them. */
void *ss_gemm_q8_alloc(int64_t K, int64_t N);
/* Quantizes B (K x N, row stride ldb; stored N x K when tb) into `out` (ss_gemm_q8_packed_bytes,
 * 64-byte aligned). */
void ss_gemm_q8_pack(const float *B, int64_t K, int64_t N, int64_t ldb, bool tb, void *out);
/* The same packing a column at a time (a caller that makes B's columns one by one, never holding
 * B whole): ss_gemm_q8_pack_begin zeroes `out`, then ss_gemm_q8_pack_column packs column n of a
 * K x N matrix from its K values, once for every n < N; the result equals ss_gemm_q8_pack's. */
void ss_gemm_q8_pack_begin(int64_t K, int64_t N, void *out);
void ss_gemm_q8_pack_column(const float *v, int64_t K, int64_t N, int64_t n, void *out);
/* A row of K floats as int8 (the row quantization here and gemm_q4.c's): step absmax / 127, round
 * to nearest even, clamp to +-127, plus offset (128: uint8 for vpdpbusd's unsigned side; 0: the
 * int8 value's bits) into q[0..K). Returns the step: NaN when the row holds a NaN or an infinity
 * (q all offset; its outputs are NaN), 0 for a row of zeros (q all offset). Rows of tiny values
 * (below 127 / FLT_MAX) keep their signs and relative precision. Only where
 * ss_gemm_q8_supported. */
float ss_gemm_q8_quantize_row(const float *a, int64_t K, uint8_t offset, uint8_t *q);
/* Scratch a call of M rows needs (A's rows quantized, and their scales). */
size_t ss_gemm_q8_scratch(int64_t M, int64_t K);

/* C = A x Bp, or C += A x Bp when acc; lda/ldc are row strides in floats. Up to `threads` parts on
 * the gemm pool (reserve it at plan time). scratch: ss_gemm_q8_scratch bytes, 64-byte aligned. Only
 * where ss_gemm_q8_supported. */
void ss_gemm_q8(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const void *Bp,
                bool acc, float *C, int64_t ldc, int threads, void *scratch);

/* Columns per group of the packed layout: a column range of ss_gemm_q8_i32 starts at a multiple
 * of it. */
#define SS_GEMM_Q8_COLS 64

/* Exact integer products for quantized ops (QLinearConv, ConvInteger, MatMulInteger...): B's int8
 * values, or uint8 ones stored as value - 128 (is_unsigned), packed unscaled into `out`
 * (ss_gemm_q8_packed_bytes) in the layout above, with each column's sum of its stored values in
 * the compensations' place (ss_gemm_q8_colsum). */
void ss_gemm_q8_pack_int(const void *B, bool is_unsigned, int64_t K, int64_t N, int64_t ldb,
                         bool tb, void *out);
/* The column sums ss_gemm_q8_pack_int stored in Bp (N of them, padded with zeros to a multiple of
 * SS_GEMM_Q8_COLS). */
const int32_t *ss_gemm_q8_colsum(const void *Bp, int64_t N);
/* C[M, n1 - n0] (int32, row stride ldc; C's column 0 is column n0) = A x Bp's columns n0 ..
 * n1 - 1, exact: A is M rows of uint8, lda bytes apart (a multiple of 4), each holding K values
 * and any bytes up to the next multiple of 4 (B's padding is zero); Bp from ss_gemm_q8_pack_int of
 * a K x N matrix (so with uint8 B the sums are of A x (B - 128)). n0 is a multiple of
 * SS_GEMM_Q8_COLS, n1 <= N; K up to SS_GEMM_Q8_MAX_K. One thread (callers split rows or
 * columns); only where ss_gemm_q8_supported. */
void ss_gemm_q8_i32(int64_t M, int64_t N, int64_t K, const uint8_t *A, int64_t lda, const void *Bp,
                    int64_t n0, int64_t n1, int32_t *C, int64_t ldc);
/* ss_gemm_q8_i32 with A's rows gathered instead of stored: row r's k values t * tq * 4 ..
 * (t + 1) * tq * 4 - 1 are the tq * 4 bytes at taps[r * ntaps + t] (t < ntaps; K = ntaps x tq x
 * 4). A convolution's window taps, read where they are (no im2col copy). */
void ss_gemm_q8_i32_taps(int64_t M, int64_t N, const uint8_t *const *taps, int64_t ntaps,
                         int64_t tq, const void *Bp, int64_t n0, int64_t n1, int32_t *C,
                         int64_t ldc);

#endif
