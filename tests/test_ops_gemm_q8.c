/*
 * The int8-weight GEMM of ops/gemm_q8.c (`--weights int8`). On a CPU with AVX512-VNNI:
 *  - the kernel equals, bit for bit, the int8 arithmetic it stands for, written out here in
 *    plain C (each weight column quantized with absmax / 127, each row of A the same way, exact
 *    integer sums, the sum times row scale x column scale), for row counts that take one pass,
 *    several passes and chunks of k, ragged K and N, transposed B, accumulation into C, 1 and 2
 *    threads;
 *  - it stays within the quantization bound of the double-precision product: each operand is
 *    off by at most half a step, so |error| <= K x max|a| x max|b| x (2/254 + 1/254^2);
 *  - a MatMul and a Gemm (transB, bias) under the session's int8 flag take it, one row or more
 *    than a pass holds, within that bound of the float32 flag's result and not equal to it; past
 *    SS_GEMM_Q8_MAX_K (int32 sums could overflow) and under SHARDSERVE_KERNELS=blas the flag
 *    changes nothing.
 *  - packing a column at a time gives the bytes packing the matrix whole gives;
 *  - a row of A holding a NaN gives NaN outputs, the other rows finite ones;
 *  - the exact int32 product over gathered rows (ss_gemm_q8_i32_taps, a convolution's window taps
 *    read where they are) equals it over the same rows stored (ss_gemm_q8_i32), for row counts of
 *    tails, one pass and several, taps of 1 to 160 k quads (past a 128-quad chunk), a shared
 *    padding tap, and a column range of a wider matrix.
 * On a CPU without it, the int8 flag must leave every MatMul exactly as float32.
 */
#include "check.h"
#include "op_harness.h"
#include "gemm_kernel.h"
#include "gemm_q8.h"
#include "onednn.h"
#include "op.h"
#include "shardserve/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* n floats in [-1, 1) from the harness's generator. */
static float *rand_floats(size_t n)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; p && i < n; i++)
        p[i] = (float)urand();
    return p;
}

typedef struct {
    int64_t M, K, N;
    bool tb, acc;
} shape;

static float b_at(const float *B, const shape *s, int64_t k, int64_t n)
{
    return s->tb ? B[n * s->K + k] : B[k * s->N + n];
}

static long clamp127(long q)
{
    return q > 127 ? 127 : q < -127 ? -127 : q;
}

/* The kernel's arithmetic in plain C: C (+)= dequantized int8 product. */
static void emulate(const shape *s, const float *A, const float *B, float *C)
{
    float *cs = calloc((size_t)s->N, sizeof *cs);
    CHECK(cs);
    for (int64_t k = 0; k < s->K; k++)
        for (int64_t n = 0; n < s->N; n++)
            cs[n] = fmaxf(cs[n], fabsf(b_at(B, s, k, n)));
    for (int64_t n = 0; n < s->N; n++)
        cs[n] /= 127.0f;
    for (int64_t m = 0; m < s->M; m++) {
        const float *a = A + m * s->K;
        float am = 0;
        for (int64_t k = 0; k < s->K; k++)
            am = fmaxf(am, fabsf(a[k]));
        float rs = am / 127.0f, inv = am > 0 ? 127.0f / am : 0.0f;
        for (int64_t n = 0; n < s->N; n++) {
            long sum = 0;
            for (int64_t k = 0; k < s->K; k++) {
                long qa = clamp127(lrintf(nearbyintf(a[k] * inv)));
                long qb = cs[n] > 0 ? clamp127(lrintf(b_at(B, s, k, n) / cs[n])) : 0;
                sum += qa * qb;
            }
            float v = (float)sum * (cs[n] * rs);
            C[m * s->N + n] = s->acc ? C[m * s->N + n] + v : v;
        }
    }
    free(cs);
}

/* Runs the kernel on s; checks it against emulate() exactly and against the double product
 * within the quantization bound. */
static void check_shape(shape s, int threads)
{
    float *A = rand_floats((size_t)(s.M * s.K)), *B = rand_floats((size_t)(s.K * s.N));
    float *C = rand_floats((size_t)(s.M * s.N)), *E = malloc(sizeof(float) * (size_t)(s.M * s.N)),
          *C0 = malloc(sizeof(float) * (size_t)(s.M * s.N));
    void *Bp = ss_gemm_q8_alloc(s.K, s.N), *scratch = malloc(ss_gemm_q8_scratch(s.M, s.K));
    CHECK(A && B && C && E && C0 && Bp && scratch);
    memcpy(C0, C, sizeof(float) * (size_t)(s.M * s.N));
    memcpy(E, C, sizeof(float) * (size_t)(s.M * s.N));
    ss_gemm_q8_pack(B, s.K, s.N, s.tb ? s.K : s.N, s.tb, Bp);
    unsigned long before = ss_gemm_q8_calls();
    ss_gemm_q8(s.M, s.N, s.K, A, s.K, Bp, s.acc, C, s.N, threads, scratch);
    CHECK(ss_gemm_q8_calls() == before + 1);
    emulate(&s, A, B, E);
    float bmax = 0;
    for (int64_t i = 0; i < s.K * s.N; i++)
        bmax = fmaxf(bmax, fabsf(B[i]));
    int64_t mismatches = 0;
    double worst = 0;
    for (int64_t m = 0; m < s.M; m++) {
        float amax = 0;
        for (int64_t k = 0; k < s.K; k++)
            amax = fmaxf(amax, fabsf(A[m * s.K + k]));
        double bound = (double)s.K * amax * bmax * (2.0 / 254 + 1.0 / (254.0 * 254)) + 1e-4;
        for (int64_t n = 0; n < s.N; n++) {
            double ref = s.acc ? C0[m * s.N + n] : 0;
            for (int64_t k = 0; k < s.K; k++)
                ref += (double)A[m * s.K + k] * b_at(B, &s, k, n);
            double err = fabs(C[m * s.N + n] - ref) / bound;
            if (err > worst) worst = err;
            mismatches += C[m * s.N + n] != E[m * s.N + n];
        }
    }
    CHECK_MSG(mismatches == 0 && worst <= 1.0,
              "M=%lld K=%lld N=%lld tb=%d acc=%d threads=%d: %lld outputs differ from the int8 "
              "arithmetic, error %.2f x the bound",
              (long long)s.M, (long long)s.K, (long long)s.N, s.tb, s.acc, threads,
              (long long)mismatches, worst);
    free(A), free(B), free(C), free(E), free(C0), free(Bp), free(scratch);
}

static void test_kernel_is_the_int8_arithmetic(void)
{
    static const shape shapes[] = {
        {1, 5, 1, false, false},      {1, 1030, 200, true, false}, /* ragged K and N */
        {3, 64, 64, false, false},    {4, 100, 129, false, true},  /* one pass, + C */
        {5, 7, 15, false, false},     {17, 256, 70, true, true},   /* several passes */
        {8, 1030, 300, false, false},                              /* k in chunks */
        {6, 1030, 70, true, false},   {7, 300, 129, false, true},  /* passes of 4 and the rest */
        {11, 520, 64, false, false},                               /* 4 + 4 + 3 */
        {64, 300, 64, false, false},  {65, 33, 65, false, true},   /* past MAX_M: rows in turns */
    };
    ss_gemm_pool_reserve(2);
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
        for (int threads = 1; threads <= 2; threads++)
            check_shape(shapes[i], threads);
}

/* ------------------------------------------------------------------ through the op table */

/* op (MatMul, or Gemm with transB and a bias) through the op table with the session's int8 flag,
 * 2 threads, into y (allocated here); returns the int8 kernel's calls. */
static unsigned long run_op(const char *op, ss_tensor **in, int n_in, bool int8, ss_tensor *y)
{
    tnode t;
    tnode_init(&t, op);
    if (!strcmp(op, "Gemm")) attr_int(&t, "transB", 1);
    op_run_opts o = {.threads = 2, .weights = int8 ? SS_WEIGHTS_INT8 : SS_WEIGHTS_F32};
    unsigned long before = ss_gemm_q8_calls();
    CHECK_OK(op_run(&t, 13, n_in, in, 1, y, &o));
    return ss_gemm_q8_calls() - before;
}

/* op at M rows (x [M, K], weights [K, N] or [N, K] for Gemm, Gemm's bias [N]) under the int8 flag
 * against the float32 flag: int8 taken where expected, within the quantization bound (and not
 * equal), else exactly equal. */
static void check_op(const char *op, int64_t M, int64_t K, int64_t N, bool expect_int8)
{
    bool gemm = !strcmp(op, "Gemm");
    int64_t xd[2] = {M, K}, wd[2] = {gemm ? N : K, gemm ? K : N}, bd[1] = {N};
    ss_tensor x = make_rand(SS_DT_FLOAT32, 2, xd), w = make_rand(SS_DT_FLOAT32, 2, wd),
              bias = make_rand(SS_DT_FLOAT32, 1, bd);
    ss_tensor *in[3] = {&x, &w, &bias}, y[2];
    int n_in = gemm ? 3 : 2;
    CHECK(run_op(op, in, n_in, false, &y[0]) == 0);
    unsigned long calls = run_op(op, in, n_in, true, &y[1]);
    CHECK_MSG(calls == (expect_int8 ? 1u : 0u), "%s M=%lld: %lu int8 calls", op, (long long)M,
              calls);
    const float *a = x.data, *b = w.data, *y0 = y[0].data, *y1 = y[1].data;
    float bmax = 0;
    for (int64_t i = 0; i < K * N; i++)
        bmax = fmaxf(bmax, fabsf(b[i]));
    double worst = 0;
    bool differs = false;
    for (int64_t m = 0; m < M; m++) {
        float amax = 0;
        for (int64_t k = 0; k < K; k++)
            amax = fmaxf(amax, fabsf(a[m * K + k]));
        double bound = (double)K * amax * bmax * (2.0 / 254 + 1.0 / (254.0 * 254)) + 1e-4;
        for (int64_t n = 0; n < N; n++) {
            double err = fabs(y1[m * N + n] - y0[m * N + n]) / bound;
            if (err > worst) worst = err;
            differs |= y1[m * N + n] != y0[m * N + n];
        }
    }
    if (expect_int8)
        CHECK_MSG(worst <= 1.0 && differs, "%s M=%lld N=%lld: error %.2f x the bound, differs %d",
                  op, (long long)M, (long long)N, worst, differs);
    else
        CHECK_MSG(!differs, "%s M=%lld: the int8 flag changed a float32 result", op, (long long)M);
    ss_tensor_free(&x), ss_tensor_free(&w), ss_tensor_free(&bias);
    ss_tensor_free(&y[0]), ss_tensor_free(&y[1]);
}

static void test_matmul_and_gemm_take_int8(void)
{
    bool vnni = ss_gemm_q8_supported();
    check_op("MatMul", 1, 640, 384, vnni);
    check_op("MatMul", SS_GEMM_Q8_MAX_M, 320, 200, vnni);
    check_op("MatMul", 2 * SS_GEMM_Q8_MAX_M + 3, 320, 200, vnni); /* three passes */
    check_op("Gemm", 2, 300, 130, vnni);
    check_op("MatMul", 1, SS_GEMM_Q8_MAX_K + 1, 16, false);
    ss_kernels_force(SS_KERNELS_BLAS);
    check_op("MatMul", 4, 320, 200, false);
    ss_kernels_force(SS_KERNELS_AUTO);
}

/* Packing a column at a time (MatMulNBits makes its columns one by one) gives the same bytes as
 * packing the matrix whole, NaN and all-zero columns included, ragged K and N. */
static void test_pack_by_columns(void)
{
    static const int64_t shapes[][2] = {{37, 70}, {64, 16}, {5, 3}};
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        int64_t K = shapes[si][0], N = shapes[si][1];
        float *Bt = rand_floats((size_t)(K * N)); /* [N, K]: column n's values are row n */
        for (int64_t k = 0; k < K; k++)
            Bt[2 * K + k] = 0.0f; /* column 2 all zero */
        Bt[K + 3] = NAN;          /* a NaN in column 1 */
        size_t bytes = ss_gemm_q8_packed_bytes(K, N);
        void *whole = aligned_alloc(64, (bytes + 63) / 64 * 64);
        void *cols = aligned_alloc(64, (bytes + 63) / 64 * 64);
        CHECK(whole && cols);
        ss_gemm_q8_pack(Bt, K, N, K, true, whole);
        ss_gemm_q8_pack_begin(K, N, cols);
        for (int64_t n = 0; n < N; n++)
            ss_gemm_q8_pack_column(Bt + n * K, K, N, n, cols);
        CHECK_MSG(!memcmp(whole, cols, bytes), "K %lld N %lld: the packings differ", (long long)K,
                  (long long)N);
        free(whole);
        free(cols);
        free(Bt);
    }
}

/* A row of A holding a NaN gives NaN outputs (as float32 would), wherever in the row the NaN is;
 * the other rows stay finite. */
static void test_nan_rows(void)
{
    int64_t M = 3, K = 70, N = 20;
    float *A = rand_floats((size_t)(M * K)), *B = rand_floats((size_t)(K * N));
    A[0] = NAN;         /* row 0: in the first 16 */
    A[K + K - 1] = NAN; /* row 1: in the scalar tail */
    void *Bp = aligned_alloc(64, (ss_gemm_q8_packed_bytes(K, N) + 63) / 64 * 64);
    void *scratch = aligned_alloc(64, (ss_gemm_q8_scratch(M, K) + 63) / 64 * 64);
    float *C = calloc((size_t)(M * N), sizeof *C);
    CHECK(Bp && scratch && C);
    ss_gemm_q8_pack(B, K, N, N, false, Bp);
    ss_gemm_q8(M, N, K, A, K, Bp, false, C, N, 1, scratch);
    for (int64_t n = 0; n < N; n++) {
        CHECK_MSG(isnan(C[n]) && isnan(C[N + n]), "column %lld: a NaN row gave a number",
                  (long long)n);
        CHECK_MSG(isfinite(C[2 * N + n]), "column %lld: the finite row gave %g", (long long)n,
                  (double)C[2 * N + n]);
    }
    free(A), free(B), free(Bp), free(scratch), free(C);
}

/* Rows too small for a finite 127 / max|a| (below 127 / FLT_MAX) give the large row's outputs
 * scaled down, signs kept; an infinity gives NaN (never a conversion of NaN to int8). */
static void test_extreme_rows(void)
{
    int64_t M = 3, K = 70, N = 20;
    float *A = rand_floats((size_t)(M * K)), *B = rand_floats((size_t)(K * N));
    float *tiny = malloc(sizeof(float) * (size_t)(M * K));
    void *Bp = aligned_alloc(64, (ss_gemm_q8_packed_bytes(K, N) + 63) / 64 * 64);
    void *scratch = aligned_alloc(64, (ss_gemm_q8_scratch(M, K) + 63) / 64 * 64);
    float *big = calloc((size_t)(M * N), sizeof *big), *C = calloc((size_t)(M * N), sizeof *C);
    CHECK(tiny && Bp && scratch && big && C);
    for (int64_t i = 0; i < M * K; i++)
        tiny[i] = ldexpf(A[i], -122); /* max |a| below 127 / FLT_MAX */
    tiny[K + 2] = INFINITY;           /* row 1: in the first 16 */
    tiny[3 * K - 1] = -INFINITY;      /* row 2: in the scalar tail */
    ss_gemm_q8_pack(B, K, N, N, false, Bp);
    ss_gemm_q8(M, N, K, A, K, Bp, false, big, N, 1, scratch);
    ss_gemm_q8(M, N, K, tiny, K, Bp, false, C, N, 1, scratch);
    float top = 0;
    for (int64_t n = 0; n < N; n++)
        top = fmaxf(top, fabsf(big[n]));
    for (int64_t n = 0; n < N; n++) {
        float want = ldexpf(big[n], -122);
        /* the output's scale x row step is below FLT_MIN here: a few bits fewer */
        CHECK_MSG(fabsf(C[n] - want) <= 1e-3f * ldexpf(top, -122),
                  "tiny row column %lld: %g, want %g", (long long)n, (double)C[n], (double)want);
        CHECK_MSG(isnan(C[N + n]) && isnan(C[2 * N + n]),
                  "column %lld: an infinite row gave %g / %g, not NaN", (long long)n,
                  (double)C[N + n], (double)C[2 * N + n]);
    }
    free(A), free(B), free(tiny), free(Bp), free(scratch), free(big), free(C);
}

/* Without AVX512-VNNI only the fallback is checked; the exit code then says "skipped" (77), so
 * CTest does not count the kernel as tested. */
static void test_gathered_rows(void)
{
    static const int64_t ms[] = {1, 3, 4, 5, 64, 70, 133}, tqs[] = {1, 16, 160};
    for (size_t ti = 0; ti < sizeof tqs / sizeof tqs[0]; ti++)
        for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
            int64_t M = ms[mi], tq = tqs[ti], ntaps = 9, K = ntaps * tq * 4, N = 150;
            int64_t n0 = SS_GEMM_Q8_COLS, n1 = N; /* a column range: from the second group */
            int64_t pixels = M + 40, tb = tq * 4;
            uint8_t *img = malloc((size_t)(pixels * tb)), *rows = malloc((size_t)(M * K));
            int8_t *B = malloc((size_t)(K * N));
            const uint8_t **taps = malloc(sizeof *taps * (size_t)(M * ntaps));
            int32_t *c1 = calloc((size_t)(M * N), sizeof(int32_t)),
                    *c2 = calloc((size_t)(M * N), sizeof(int32_t));
            void *bp = ss_gemm_q8_alloc(K, N);
            for (int64_t i = 0; i < pixels * tb; i++)
                img[i] = (uint8_t)(i * 7919 % 251);
            for (int64_t i = 0; i < K * N; i++)
                B[i] = (int8_t)(i * 104729 % 255 - 127);
            ss_gemm_q8_pack_int(B, false, K, N, N, false, bp);
            const uint8_t *pad = img + 3 * tb; /* one pixel every padding tap points at */
            for (int64_t r = 0; r < M; r++)
                for (int64_t t = 0; t < ntaps; t++) {
                    const uint8_t *src =
                        (r + t) % 5 == 0 ? pad : img + ((r * 3 + t * 11) % pixels) * tb;
                    taps[r * ntaps + t] = src;
                    memcpy(rows + r * K + t * tb, src, (size_t)tb);
                }
            ss_gemm_q8_i32(M, N, K, rows, K, bp, n0, n1, c1, N);
            ss_gemm_q8_i32_taps(M, N, taps, ntaps, tq, bp, n0, n1, c2, N);
            CHECK_MSG(memcmp(c1, c2, sizeof(int32_t) * (size_t)(M * N)) == 0,
                      "gathered rows differ: M %lld, tap of %lld quads", (long long)M,
                      (long long)tq);
            free(bp);
            free(img), free(rows), free(B), free(taps), free(c1), free(c2);
        }
}

static void test_fallback_without_vnni(void)
{
    CHECK(!ss_gemm_q8_supported());
    check_op("MatMul", 1, 640, 384, false);
}

int main(int argc, char **argv)
{
    test_argc = argc, test_argv = argv;
    if (!ss_gemm_q8_supported()) {
        static const test_case fallback[] = {TEST(test_fallback_without_vnni)};
        int rc = run_tests(fallback, 1);
        printf("no AVX512-VNNI: the int8 kernel is not tested on this CPU\n");
        return rc ? rc : 77;
    }
    static const test_case cases[] = {TEST(test_kernel_is_the_int8_arithmetic),
                                      TEST(test_matmul_and_gemm_take_int8),
                                      TEST(test_pack_by_columns),
                                      TEST(test_nan_rows),
                                      TEST(test_gathered_rows),
                                      TEST(test_extreme_rows)};
    return run_tests(cases, sizeof cases / sizeof cases[0]);
}
