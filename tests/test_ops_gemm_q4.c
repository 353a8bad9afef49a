/*
 * The 4-bit-weight GEMV of ops/gemm_q4.c (MatMulNBits bits=4 where int8 math is allowed). On a
 * CPU with AVX512-VNNI:
 *  - the kernel equals, bit for bit, the arithmetic it stands for, written out here in plain C
 *    (each row of A quantized with absmax / 127; per k block the exact integer sum of q x a, minus
 *    the zero point times the block's sum of a, times the block's scale, in float32 with the same
 *    fused steps; at the end the row's scale), for 1 to 4 rows, block sizes 8 to 128, ragged K
 *    (a part of a last block) and N (not a multiple of the 64-column groups), 1 and 2 threads;
 *  - it stays within the quantization bound of the double-precision product of A and the
 *    dequantized weights: A is off by at most half a step per value, the weights are exact;
 *  - a row's result does not depend on the rows with it (one call of 3 rows = 3 calls of 1);
 *  - a row of A holding a NaN gives NaN outputs, the other rows finite ones.
 * Without VNNI the kernel is never planned and the test reports itself skipped.
 */
#include "check.h"
#include "op_harness.h"
#include "gemm_kernel.h"
#include "gemm_q4.h"
#include "gemm_q8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t K, N, bs;
    uint8_t *q;    /* N x K values 0..15 */
    float *scale;  /* N x blocks */
    uint8_t *zero; /* N x blocks */
    void *packed;
} weights;

static int64_t blocks_of(const weights *w)
{
    return (w->K + w->bs - 1) / w->bs;
}

static void make_weights(weights *w, int64_t K, int64_t N, int64_t bs)
{
    *w = (weights){K, N, bs, NULL, NULL, NULL, NULL};
    int64_t nb = blocks_of(w);
    w->q = malloc((size_t)(N * K));
    w->scale = malloc(sizeof(float) * (size_t)(N * nb));
    w->zero = malloc((size_t)(N * nb));
    w->packed = ss_gemm_q4_alloc(K, N, bs);
    CHECK(w->q && w->scale && w->zero && w->packed);
    for (int64_t i = 0; i < N * K; i++)
        w->q[i] = (uint8_t)((urand() + 1.0) * 8.0) & 15;
    for (int64_t i = 0; i < N * nb; i++) {
        w->scale[i] = (float)(urand() * 0.1); /* signs of both kinds, as exporters leave them */
        w->zero[i] = (uint8_t)((urand() + 1.0) * 8.0) & 15;
    }
    for (int64_t n = 0; n < N; n++)
        ss_gemm_q4_pack_column(w->q + n * K, w->scale + n * nb, w->zero + n * nb, K, N, bs, n,
                               w->packed);
}

static void free_weights(weights *w)
{
    free(w->q), free(w->scale), free(w->zero), free(w->packed);
}

static long clamp127(long v)
{
    return v > 127 ? 127 : v < -127 ? -127 : v;
}

/* The kernel's arithmetic in plain C, row by row. */
static void emulate(const weights *w, int64_t M, const float *A, float *C)
{
    int64_t K = w->K, nb = blocks_of(w);
    long *qa = malloc(sizeof(long) * (size_t)K);
    CHECK(qa);
    for (int64_t m = 0; m < M; m++) {
        const float *a = A + m * K;
        float am = 0;
        for (int64_t k = 0; k < K; k++)
            am = fmaxf(am, fabsf(a[k]));
        float rs = am / 127.0f, inv = am > 0 ? 127.0f / am : 0.0f;
        for (int64_t k = 0; k < K; k++)
            qa[k] = clamp127(lrintf(nearbyintf(a[k] * inv)));
        for (int64_t n = 0; n < w->N; n++) {
            float f = 0;
            for (int64_t kb = 0; kb < nb; kb++) {
                long dot = 0, asum = 0;
                for (int64_t k = kb * w->bs; k < (kb + 1) * w->bs && k < K; k++)
                    dot += (long)w->q[n * K + k] * qa[k], asum += qa[k];
                float t = fmaf(-(float)w->zero[n * nb + kb], (float)asum, (float)dot);
                f = fmaf(t, w->scale[n * nb + kb], f);
            }
            C[m * w->N + n] = f * rs;
        }
    }
    free(qa);
}

static float *rand_rows(int64_t M, int64_t K)
{
    float *a = malloc(sizeof(float) * (size_t)(M * K));
    CHECK(a);
    for (int64_t i = 0; i < M * K; i++)
        a[i] = (float)(urand() * 3.0);
    return a;
}

static void run_q4(const weights *w, int64_t M, const float *A, float *C, int threads)
{
    void *scratch = aligned_alloc(64, (ss_gemm_q4_scratch(M, w->K, w->bs) + 63) / 64 * 64);
    CHECK(scratch);
    ss_gemm_q4(M, w->N, w->K, w->bs, A, w->K, w->packed, C, w->N, threads, scratch);
    free(scratch);
}

static void test_kernel_is_the_arithmetic(void)
{
    static const int64_t shapes[][3] = {/* K, N, bs */
                                        {256, 200, 32},   {300, 70, 32}, {37, 16, 8},
                                        {4096, 130, 128}, {96, 1, 16},   {520, 64, 64}};
    /* rows: passes of 1, 2 and 4 (over half the column group each) and their mixes */
    static const int64_t rows[] = {1, 2, 3, 4, 5, 6, 7, 9, 33};
    ss_gemm_pool_reserve(2);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (size_t mi = 0; mi < sizeof rows / sizeof rows[0]; mi++)
            for (int threads = 1; threads <= 2; threads++) {
                int64_t M = rows[mi];
                weights w;
                make_weights(&w, shapes[si][0], shapes[si][1], shapes[si][2]);
                float *A = rand_rows(M, w.K);
                float *got = malloc(sizeof(float) * (size_t)(M * w.N)),
                      *want = malloc(sizeof(float) * (size_t)(M * w.N));
                CHECK(got && want);
                run_q4(&w, M, A, got, threads);
                emulate(&w, M, A, want);
                CHECK_MSG(memcmp(got, want, sizeof(float) * (size_t)(M * w.N)) == 0,
                          "K %lld N %lld bs %lld M %lld threads %d: not the arithmetic",
                          (long long)w.K, (long long)w.N, (long long)w.bs, (long long)M, threads);
                /* against the exact product: A off by half a step (max|a| / 254) per value */
                int64_t nb = blocks_of(&w);
                for (int64_t m = 0; m < M; m++) {
                    double am = 0;
                    for (int64_t k = 0; k < w.K; k++)
                        am = fmax(am, fabs(A[m * w.K + k]));
                    for (int64_t n = 0; n < w.N; n++) {
                        double exact = 0, wsum = 0;
                        for (int64_t k = 0; k < w.K; k++) {
                            int64_t b = k / w.bs;
                            double wk = ((double)w.q[n * w.K + k] - w.zero[n * nb + b]) *
                                        w.scale[n * nb + b];
                            exact += wk * A[m * w.K + k], wsum += fabs(wk);
                        }
                        double bound = wsum * am / 254.0 * 1.001 + 1e-5 * fabs(exact) + 1e-6;
                        CHECK_MSG(fabs(got[m * w.N + n] - exact) <= bound,
                                  "K %lld bs %lld row %lld col %lld: %g vs exact %g (bound %g)",
                                  (long long)w.K, (long long)w.bs, (long long)m, (long long)n,
                                  got[m * w.N + n], exact, bound);
                    }
                }
                free(A), free(got), free(want);
                free_weights(&w);
            }
}

static void test_rows_independent(void)
{
    weights w;
    make_weights(&w, 512, 150, 32);
    float *A = rand_rows(3, w.K);
    float *all = malloc(sizeof(float) * (size_t)(3 * w.N)),
          *one = malloc(sizeof(float) * (size_t)w.N);
    CHECK(all && one);
    run_q4(&w, 3, A, all, 2);
    for (int64_t m = 0; m < 3; m++) {
        run_q4(&w, 1, A + m * w.K, one, 1);
        CHECK_MSG(memcmp(one, all + m * w.N, sizeof(float) * (size_t)w.N) == 0,
                  "row %lld alone differs from the row among 3", (long long)m);
    }
    free(A), free(all), free(one);
    free_weights(&w);
}

static void test_nan_rows(void)
{
    weights w;
    make_weights(&w, 256, 80, 32);
    float *A = rand_rows(2, w.K);
    A[w.K + 17] = NAN; /* row 1 */
    float *C = malloc(sizeof(float) * (size_t)(2 * w.N));
    CHECK(C);
    run_q4(&w, 2, A, C, 1);
    for (int64_t n = 0; n < w.N; n++) {
        CHECK_MSG(isfinite(C[n]), "row 0 col %lld: %g", (long long)n, C[n]);
        CHECK_MSG(isnan(C[w.N + n]), "row 1 col %lld: %g, not NaN", (long long)n, C[w.N + n]);
    }
    free(A), free(C);
    free_weights(&w);
}

/* Rows too small for a finite 127 / max|a| (below 127 / FLT_MAX) give the large row's outputs
 * scaled down, signs kept; infinities give NaN (never a conversion of NaN to int8). */
static void test_extreme_rows(void)
{
    weights w;
    make_weights(&w, 300, 40, 32); /* K: vectors and a scalar tail */
    float *A = rand_rows(4, w.K), *tiny = malloc(sizeof(float) * (size_t)(4 * w.K));
    float *big = malloc(sizeof(float) * (size_t)(4 * w.N)),
          *C = malloc(sizeof(float) * (size_t)(4 * w.N));
    CHECK(tiny && big && C);
    memcpy(tiny, A, sizeof(float) * (size_t)(4 * w.K));
    for (int64_t k = 0; k < w.K; k++)
        tiny[k] = ldexpf(A[k], -123); /* row 0: max |a| ~ 3e-37 */
    tiny[w.K + 5] = INFINITY;         /* row 1: in the vectors */
    tiny[3 * w.K - 1] = -INFINITY;    /* row 2: in the tail */
    run_q4(&w, 4, A, big, 1);
    run_q4(&w, 4, tiny, C, 1);
    float top = 0;
    for (int64_t n = 0; n < w.N; n++)
        top = fmaxf(top, fabsf(big[n]));
    for (int64_t n = 0; n < w.N; n++) {
        float want = ldexpf(big[n], -123);
        CHECK_MSG(fabsf(C[n] - want) <= 1e-5f * ldexpf(top, -123), "tiny row col %lld: %g, want %g",
                  (long long)n, C[n], want);
        CHECK_MSG(isnan(C[w.N + n]) && isnan(C[2 * w.N + n]),
                  "col %lld: an infinite row gave %g / %g, not NaN", (long long)n, C[w.N + n],
                  C[2 * w.N + n]);
        CHECK_MSG(C[3 * w.N + n] == big[3 * w.N + n], "col %lld: the plain row changed",
                  (long long)n);
    }
    free(A), free(tiny), free(big), free(C);
    free_weights(&w);
}

int main(int argc, char **argv)
{
    test_argc = argc, test_argv = argv;
    if (!ss_gemm_q8_supported()) {
        printf("no AVX512-VNNI: the 4-bit kernel is never planned on this CPU\n");
        return 77;
    }
    static const test_case cases[] = {TEST(test_kernel_is_the_arithmetic),
                                      TEST(test_rows_independent), TEST(test_nan_rows),
                                      TEST(test_extreme_rows)};
    return run_tests(cases, sizeof cases / sizeof cases[0]);
}
