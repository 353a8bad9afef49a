/*
 * The exact 8-bit matrix product of the quantized ops (MatMulInteger, QLinearMatMul,
 * MatMulIntegerToFloat, DynamicQuantizeMatMul, QGemm, QAttention's projection), on gemm_q8.h's
 * VNNI kernel where the CPU has AVX512-VNNI:
 *
 *   sums[m][n] = sum_k (A[m,k] - za[m]) (B[k,n] - zb[n]), wrapped to int32 as the spec's sums,
 *
 * for uint8 or int8 A and B (or float32 A quantized to uint8 on the way, DynamicQuantizeMatMul's).
 * A' = A as uint8 (int8 A shifted by 128, with its zero point), B' = B as int8 (uint8 B shifted by
 * 128), so with c = 128 for uint8 B (else 0)
 *   sum_k (A' - za')(B' + c - zb) = S - za' colsum(B') + (c - zb)(rowsum(A') - K za'),
 * S = sum A'B' from the kernel; every step is exact mod 2^32, so the sums equal a float64 or
 * int64 reference's, wrapped. A constant B of rank <= 2 is packed once at plan time and shared
 * through the session; any other B is packed once per call and batch. A is
 * converted once per call; pieces of 64 rows x up to 256 columns go to the worker pool, and each
 * piece's rows are handed to the op's finisher while its sums are in cache.
 */
#ifndef SS_RUNTIME_OPS_Q8MM_H
#define SS_RUNTIME_OPS_Q8MM_H

#include "../op.h"

/* Columns of a piece at most (the finisher's row length). */
#define SS_Q8MM_MAX_COLS 256

typedef struct {
    /* set by the caller before ss_q8mm_plan */
    int64_t M, K, N, batch; /* batch products of [M, K] x [K, N] */
    bool ta, tb;            /* A stored [K, M], B stored [N, K] */
    /* set by ss_q8mm_plan */
    bool a_signed, a_float, b_unsigned;
    int64_t lda;  /* bytes of a converted row of A: K padded to 4 */
    int64_t cols; /* columns per piece */
    int parts;    /* of the worker pool */
    const uint8_t *bpack;
    ss_packed *bref; /* the session's packed B, or bowned */
    void *bowned;
} ss_q8mm;

/* Plans g for inputs ia (A) and ib (B) of k: false when the CPU has no VNNI, kernels are forced
 * to BLAS, a size is out of range or memory is short (the op keeps its own path then). */
bool ss_q8mm_plan(ss_kctx *k, ss_q8mm *g, int ia, int ib);
/* Scratch bytes ss_q8mm_run needs (64-byte aligned inside). */
size_t ss_q8mm_scratch(const ss_q8mm *g);
void ss_q8mm_release(ss_q8mm *g);

typedef struct {
    const void *a, *b; /* the operands' data (b unused when B was packed at plan time) */
    /* element offset of batch bi's matrix of A (b_side false) or B; NULL when batch is 1 */
    int64_t (*offset)(const void *ctx, int64_t bi, bool b_side);
    const int32_t *za, *zb; /* zero points: za[m * za_step], zb[n * zb_step]; steps 0 or 1 */
    int za_step, zb_step;
    float dyn_scale; /* float32 A: quantized as rint(A / dyn_scale) + za[0], saturated to uint8 */
    /* row m of batch bi's sums, columns n0 .. n1 - 1 (sums[0] is column n0; the finisher may
     * overwrite them; n1 - n0 <= SS_Q8MM_MAX_COLS); called from the pool's parts, each row and
     * column once */
    void (*finish)(void *ctx, int32_t *sums, int64_t bi, int64_t m, int64_t n0, int64_t n1);
    void *ctx;
} ss_q8mm_io;

void ss_q8mm_run(const ss_q8mm *g, const ss_q8mm_io *io, void *scratch);

/* B's zero point (bz: one value, one per column, or NULL for 0) into zb[N], and mult x B's scale
 * (bs: one value or one per column) into scale[N], as the 2-D quantized ops (QGemm, QAttention)
 * hand them to their finishers. */
void ss_q8mm_columns(const ss_tensor *bz, const ss_tensor *bs, float mult, int64_t N, int32_t *zb,
                     float *scale);

#endif
