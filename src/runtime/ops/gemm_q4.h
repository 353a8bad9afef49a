/*
 * GEMM on 4-bit weights as they are stored (MatMulNBits bits=4, where int8 math is allowed:
 * accuracy_level 4 or --weights int8), any number of rows: C[M,N] = A[M,K] x B[K,N], A and
 * C float32, B's 4-bit values q with a float32 scale s and a zero point z per column and block of
 * `bs` k values, B[k,n] = (q - z) x s. Each call quantizes every row of A to int8 (absmax / 127,
 * signed) and sums q x a exactly on AVX512-VNNI (vpdpbusd, q the unsigned side); per block an
 * output takes s x (sum - z x the block's sum of a), and at the end the row's scale.
 *
 * What it is for: at M = 1 the product is bound by reading B. gemm_q8.h's copy of these weights
 * (requantized to int8, a byte per weight) reads twice the bytes of the 4-bit values; this one
 * reads the nibbles, the block's scales and zero points: 0.66 bytes per weight at bs = 32,
 * what onnxruntime's 4-bit kernels read. With many rows (prefill) the int8 copy is faster (it
 * converts once per output instead of once per block: 32 rows of 4096 x 4096 x 4 took 7.0 ms
 * there against 11.5 here), but holding both copies would take 1.66 bytes a weight, 3x the
 * model's 4-bit weights, so plans use this one for every row count unless
 * SHARDSERVE_NBITS_COPY=int8 (contrib.c).
 *
 * Error: the weights are exact; only A is rounded (one int8 step per row, relative L2 ~4e-3 on
 * uniform data). Each output's k order is fixed, so a row's result does not depend on the rows
 * with it or on the threads.
 *
 * Layout (ss_gemm_q4_pack_column): columns padded to a multiple of 64, in blocks of 16; for each
 * block of 16 columns, for each k block, one record of bs x 8 bytes of nibbles, then 16 float32
 * scales, then 16 uint8 zero points (bs x 8 + 80 bytes). In the nibbles, 64 bytes cover 8 k
 * values of the 16 columns: byte 4c + t holds k0 + t (low nibble) and k0 + 4 + t (high) of column
 * c, so a mask and a shift give vpdpbusd's two 16 x 4-byte operands. K is padded to a multiple of
 * bs with q = 0 (A's padding is 0 too).
 *
 * Only where ss_gemm_q8_supported (AVX512-VNNI and AVX512BW); threads: groups of 4 column blocks
 * over the gemm pool; a call never allocates.
 */
#ifndef SS_RUNTIME_GEMM_Q4_H
#define SS_RUNTIME_GEMM_Q4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Block sizes the layout takes: a power of 2 from 8 to 4096 (a block's integer sum, at most
 * 15 x 127 x 4096, converts to float32 exactly). */
bool ss_gemm_q4_block_ok(int64_t bs);
/* How many calls ran. */
unsigned long ss_gemm_q4_calls(void);

/* Bytes of the packed form of a K x N matrix with blocks of bs k values. */
size_t ss_gemm_q4_packed_bytes(int64_t K, int64_t N, int64_t bs);
/* Memory for it, zeroed (free() releases it; NULL when out of memory): 64-byte aligned, in huge
 * pages where the kernel allows them. */
void *ss_gemm_q4_alloc(int64_t K, int64_t N, int64_t bs);
/* Column n of B into `out` (from ss_gemm_q4_alloc): its K values q (0..15, one per byte), and one
 * scale and zero point per k block ((K + bs - 1) / bs of each). Once for every n < N. */
void ss_gemm_q4_pack_column(const uint8_t *q, const float *scale, const uint8_t *zero, int64_t K,
                            int64_t N, int64_t bs, int64_t n, void *out);
/* Scratch a call of M rows needs (A's rows quantized, their block sums and scales). */
size_t ss_gemm_q4_scratch(int64_t M, int64_t K, int64_t bs);

/* C = A x Bp; lda/ldc are row strides in floats. Up to `threads` parts on
 * the gemm pool (reserve it at plan time). scratch: ss_gemm_q4_scratch bytes, 64-byte aligned.
 * Only where ss_gemm_q8_supported. */
void ss_gemm_q4(int64_t M, int64_t N, int64_t K, int64_t bs, const float *A, int64_t lda,
                const void *Bp, float *C, int64_t ldc, int threads, void *scratch);

#endif
