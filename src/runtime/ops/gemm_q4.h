/*
 * GEMM on 4-bit block-quantized weights, as MatMulNBits stores them (bits 4, a float32 scale and a
 * 4-bit zero point per block of `block` weights along K), where the node allows int8 math
 * (accuracy_level 4) or the session holds weights as int8: C[M,N] = A[M,K] x W^T with W [N, K],
 *
 *   C[m][n] = row_scale[m] x sum_blocks scale[n][b] x sum_k (q[n][k] - zp[n][b]) x a[m][k],
 *
 * a[m][k] being A's row quantized to int8 (absmax / 127, as gemm_q8.h's rows). The weights stay
 * 4-bit: half the bytes of gemm_q8.h's int8 copy, which decode reads once per token, and the
 * blocks' own scales rather than one per column (no second rounding of the weights). Sums of a
 * block are exact int32 on AVX512-VNNI (vpdpbusd: the 4-bit values unsigned, A signed); the zero
 * point's term is taken off with the block's sum of A; blocks add in float32.
 *
 * Layout (ss_gemm_q4_pack): groups of 16 columns; for each group and block, block / 8 vectors of
 * 64 bytes, byte 4n + j holding k0 + j in its low and k0 + 4 + j in its high nibble for column n
 * (k0 the vector's first k); then per group and block the 16 scales (float32) and the 16 zero
 * points (uint8). N is padded to 16 and K to whole blocks with zeros.
 *
 * Only where ss_gemm_q8_supported (AVX512-VNNI and AVX512BW). Threads: groups over the gemm pool;
 * a call never allocates. Each output's k order is fixed, so a row's result does not depend on
 * the rows batched with it.
 */
#ifndef SS_RUNTIME_GEMM_Q4_H
#define SS_RUNTIME_GEMM_Q4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Whether a MatMulNBits of this shape can run here: a VNNI CPU, 4-bit weights, blocks of a
 * multiple of 8 weights, K within gemm_q8.h's bound. */
bool ss_gemm_q4_usable(int64_t K, int64_t block, int bits);
/* How many calls ran. */
unsigned long ss_gemm_q4_calls(void);

size_t ss_gemm_q4_packed_bytes(int64_t K, int64_t N, int64_t block);
/* Packs MatMulNBits' B ([N][blocks][block / 2] bytes, two weights a byte, low nibble first),
 * scales ([N][blocks]) and zero points ([N][ceil(blocks / 2)] bytes, two a byte; NULL: 8) into
 * `out` (ss_gemm_q4_packed_bytes, 64-byte aligned). */
void ss_gemm_q4_pack(const uint8_t *B, const float *scales, const uint8_t *zp, int64_t K,
                     int64_t N, int64_t block, void *out);
/* Scratch a call of M rows needs (A's rows quantized, their block sums and scales). */
size_t ss_gemm_q4_scratch(int64_t M, int64_t K, int64_t block);
/* C = A x W^T (lda, ldc: row strides in floats) on up to `threads` parts of the gemm pool
 * (reserve it at plan time). */
void ss_gemm_q4(int64_t M, int64_t N, int64_t K, int64_t block, const float *A, int64_t lda,
                const void *packed, float *C, int64_t ldc, int threads, void *scratch);

#endif
