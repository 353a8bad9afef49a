/*
 * The bf16-weight GEMM of ops/gemm_bf16.c: each ISA variant this CPU supports, forced in turn,
 * against a double-precision product of the float32 operands. The bound is bf16's: each weight
 * is rounded to 8 significant bits (relative error <= 2^-9), and the vdpbf16ps variant rounds A
 * too, so |error| <= 2 * 2^-9 * sum |a b| (+ float32 accumulation). A row's result must not
 * depend on the rows computed with it (continuous batching must not change a sequence's tokens)
 * nor on the thread count, and a MatMul under --weights bf16 at decode shapes must take the path
 * (or, past the measured row count, oneDNN's bf16 matmul, within the same bound).
 */
#include "check.h"
#include "op_harness.h"
#include "gemm_bf16.h"
#include "gemm_kernel.h"
#include "onednn.h"
#include "op.h"
#include "shardserve/core.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float frand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

static float *rand_floats(size_t n, unsigned seed)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; p && i < n; i++)
        p[i] = frand(&seed);
    return p;
}

typedef struct {
    int64_t M, K, N;
    bool tb, acc;
} shape;

/* Runs v on shape s (B stored transposed when tb) and checks every element against the float32
 * reference within the bf16 bound; returns the packed weights' result for row 0 in row0. The
 * weights are packed into ss_gemm_bf16_alloc's memory, as the MatMul op does. */
static void check_variant(ss_bf16_variant v, shape s, int threads, float *row0)
{
    float *A = rand_floats((size_t)(s.M * s.K), 1), *B = rand_floats((size_t)(s.K * s.N), 2);
    float *C = rand_floats((size_t)(s.M * s.N), 3),
          *C0 = malloc(sizeof(float) * (size_t)(s.M * s.N));
    uint16_t *Bp = ss_gemm_bf16_alloc(s.K, s.N); /* in 2 MiB pages from 768 x 1366 */
    void *scratch = malloc(ss_gemm_bf16_scratch(s.M, s.K) + 1);
    CHECK(A && B && C && C0 && Bp && scratch);
    memcpy(C0, C, sizeof(float) * (size_t)(s.M * s.N));
    ss_gemm_bf16_pack(B, s.K, s.N, s.tb ? s.K : s.N, s.tb, Bp);
    ss_gemm_bf16_force(v);
    unsigned long before = ss_gemm_bf16_calls(v);
    ss_gemm_bf16(s.M, s.N, s.K, A, s.K, Bp, s.acc, C, s.N, threads, scratch);
    CHECK_MSG(ss_gemm_bf16_calls(v) == before + 1, "%s not taken", ss_gemm_bf16_name(v));
    ss_gemm_bf16_force(SS_BF16_AUTO);
    double worst = 0;
    for (int64_t m = 0; m < s.M; m++)
        for (int64_t n = 0; n < s.N; n++) {
            double ref = s.acc ? C0[m * s.N + n] : 0, mag = 0;
            for (int64_t k = 0; k < s.K; k++) {
                double b = s.tb ? B[n * s.K + k] : B[k * s.N + n];
                ref += (double)A[m * s.K + k] * b;
                mag += fabs((double)A[m * s.K + k] * b);
            }
            double err = fabs(C[m * s.N + n] - ref) / (2 * ldexp(mag, -9) + 1e-5 * (mag + 1));
            if (err > worst) worst = err;
        }
    CHECK_MSG(worst <= 1.0, "%s M=%lld K=%lld N=%lld tb=%d acc=%d: error %.2f x the bound",
              ss_gemm_bf16_name(v), (long long)s.M, (long long)s.K, (long long)s.N, s.tb, s.acc,
              worst);
    if (row0) memcpy(row0, C, sizeof(float) * (size_t)s.N);
    free(A), free(B), free(C), free(C0), free(Bp), free(scratch);
}

static const ss_bf16_variant variants[] = {SS_BF16_C, SS_BF16_AVX2, SS_BF16_AVX512,
                                           SS_BF16_AVX512_DOT};

/* Odd K (the padded last pair), N off the 64-column blocks, M off the 4-row tiles, more rows
 * than a block's chunks run over at once (70) and K in several chunks with a short last (1001),
 * accumulation into C and transposed weights (Gemm transB); one row over 14 and 53 blocks
 * (the GEMV's groups of 6 blocks and a shorter last group). */
static void test_every_variant_within_bf16_of_f32(void)
{
    static const shape shapes[] = {{1, 768, 2304, false, false}, {1, 77, 130, false, true},
                                   {3, 301, 65, true, false},    {5, 64, 64, false, false},
                                   {17, 129, 200, true, true},   {64, 96, 320, false, false},
                                   {1, 301, 837, true, true},    {1, 96, 3390, false, false},
                                   {70, 300, 130, false, false}, {9, 1001, 200, true, false}};
    int ran = 0;
    for (size_t v = 0; v < sizeof variants / sizeof *variants; v++) {
        if (!ss_gemm_bf16_supported(variants[v])) {
            fprintf(stderr, "note: this CPU has no %s: not checked\n",
                    ss_gemm_bf16_name(variants[v]));
            continue;
        }
        ran++;
        for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
            check_variant(variants[v], shapes[i], 2, NULL);
    }
    CHECK(ran >= 1);
    fprintf(stderr, "auto picks %s\n", ss_gemm_bf16_name(ss_gemm_bf16_pick()));
}

/* Row 0 of A computed alone, with 6 more rows, on 1 or 2 threads and with the GEMV's claims of
 * polling workers: bit for bit the same. */
static void test_row_independent_of_batch_and_threads(void)
{
    ss_gemm_pool_reserve(2);
    for (size_t v = 0; v < sizeof variants / sizeof *variants; v++) {
        if (!ss_gemm_bf16_supported(variants[v])) continue;
        float one[835], seven[835], one_thread[835];
        check_variant(variants[v], (shape){1, 333, 835, false, false}, 2, one);
        check_variant(variants[v], (shape){7, 333, 835, false, false}, 2, seven);
        check_variant(variants[v], (shape){1, 333, 835, false, false}, 1, one_thread);
        CHECK_MSG(!memcmp(one, seven, sizeof one), "%s: row 0 changes with 7 rows",
                  ss_gemm_bf16_name(variants[v]));
        CHECK_MSG(!memcmp(one, one_thread, sizeof one), "%s: row 0 changes with threads",
                  ss_gemm_bf16_name(variants[v]));
        ss_pool_set_spin_us(50); /* polling workers: the GEMV claims 6 blocks at a time */
        check_variant(variants[v], (shape){1, 333, 835, false, false}, 2, one_thread);
        ss_pool_set_spin_us(-1);
        CHECK_MSG(!memcmp(one, one_thread, sizeof one), "%s: row 0 changes with the claims",
                  ss_gemm_bf16_name(variants[v]));
    }
}

/* The k chunks a block's tiles run over (and the prefetch of the next) change no bit: the
 * accumulators go to memory between chunks exactly and each output's k order stays. */
static void test_chunks_change_nothing(void)
{
    ss_gemm_pool_reserve(2);
    static const struct {
        int64_t kp;
        bool prefetch;
    } chunks[] = {{0, true}, {7, false}, {64, true}, {1 << 30, false}};
    for (size_t v = 0; v < sizeof variants / sizeof *variants; v++) {
        if (!ss_gemm_bf16_supported(variants[v])) continue;
        float first[200], other[200];
        for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
            ss_gemm_bf16_force_chunk(chunks[c].kp, chunks[c].prefetch);
            check_variant(variants[v], (shape){9, 1001, 200, false, false}, 2, c ? other : first);
            CHECK_MSG(c == 0 || !memcmp(first, other, sizeof first),
                      "%s: chunks of %lld k pairs change the result",
                      ss_gemm_bf16_name(variants[v]), (long long)chunks[c].kp);
        }
        ss_gemm_bf16_force_chunk(0, true);
    }
}

static unsigned long own_bf16_calls(void)
{
    unsigned long n = 0;
    for (size_t v = 0; v < sizeof variants / sizeof *variants; v++)
        n += ss_gemm_bf16_calls(variants[v]);
    return n;
}

typedef struct {
    unsigned long own, dnnl_bf16; /* calls each kernel took */
} path_calls;

/* A MatMul x [M, K] x w [K, N] through the op table with the session's bf16 flag, 2 threads,
 * into y (allocated here); counts the bf16 calls of each kernel. */
static path_calls run_matmul(ss_tensor *x, ss_tensor *w, bool bf16, ss_tensor *y)
{
    ss_tensor *in[2] = {x, w};
    tnode t;
    tnode_init(&t, "MatMul");
    op_run_opts o = {.threads = 2, .weights = bf16 ? SS_WEIGHTS_BF16 : SS_WEIGHTS_F32};
    path_calls before = {own_bf16_calls(), ss_dnnl_bf16_calls()};
    CHECK_OK(op_run(&t, 13, 2, in, 1, y, &o));
    return (path_calls){own_bf16_calls() - before.own, ss_dnnl_bf16_calls() - before.dnnl_bf16};
}

static ss_tensor rand_tensor(int64_t rows, int64_t cols, unsigned seed)
{
    int64_t dims[2] = {rows, cols};
    ss_tensor t;
    CHECK_OK(ss_tensor_alloc(&t, SS_DT_FLOAT32, 2, dims));
    for (int64_t i = 0; i < rows * cols; i++)
        ((float *)t.data)[i] = frand(&seed);
    return t;
}

/* The MatMul [M, K] x [K, N] under the bf16 flag against the float32 flag's result, element by
 * element within the bf16 bound (weights and A rounded: 2 * 2^-9 * sum |a b|), and not equal to
 * it (the weights were rounded); returns the bf16 run's kernel calls. */
static path_calls check_matmul_bf16(int64_t M, int64_t K, int64_t N)
{
    ss_tensor x = rand_tensor(M, K, 9), w = rand_tensor(K, N, 10), y[2];
    path_calls f32 = run_matmul(&x, &w, false, &y[0]);
    CHECK_MSG(f32.own == 0 && f32.dnnl_bf16 == 0, "float32 flag took a bf16 kernel");
    path_calls calls = run_matmul(&x, &w, true, &y[1]);
    const float *a = x.data, *b = w.data, *y0 = y[0].data, *y1 = y[1].data;
    double worst = 0;
    bool differs = false;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double mag = 0;
            for (int64_t k = 0; k < K; k++)
                mag += fabs((double)a[m * K + k] * b[k * N + n]);
            double err = fabs(y1[m * N + n] - y0[m * N + n]) / (2 * ldexp(mag, -9) + 1e-5 * mag);
            if (err > worst) worst = err;
            differs |= y1[m * N + n] != y0[m * N + n];
        }
    CHECK_MSG(worst <= 1.0 && differs, "M=%lld N=%lld: error %.2f x the bound, differs %d",
              (long long)M, (long long)N, worst, differs);
    ss_tensor_free(&x), ss_tensor_free(&w), ss_tensor_free(&y[0]), ss_tensor_free(&y[1]);
    return calls;
}

/* A MatMul [1, K] x [K, N] with the session's bf16 flag: the bf16 kernel runs it (one call). */
static void test_matmul_decode_shape_takes_bf16_path(void)
{
    path_calls c = check_matmul_bf16(1, 640, 384);
    CHECK_MSG(c.own == 1 && c.dnnl_bf16 == 0, "own %lu, oneDNN bf16 %lu calls", c.own, c.dnnl_bf16);
}

/* Batched decode: up to ss_gemm_bf16_max_m(N) rows on this kernel, more on oneDNN's bf16 matmul
 * where it has native bf16 (else this kernel up to SS_GEMM_BF16_MAX_M), both within bf16 of the
 * float32 result, for a narrow and a wide (LM head) N. */
static void test_matmul_batched_decode_crossover(void)
{
    static const int64_t ns[] = {384, 9000}, forced[] = {-1, 3}; /* default, a low crossover */
    for (size_t f = 0; f < sizeof forced / sizeof *forced; f++) {
        ss_gemm_bf16_force_max_m(forced[f]);
        for (size_t i = 0; i < sizeof ns / sizeof *ns; i++) {
            int64_t N = ns[i], max_m = ss_dnnl_bf16_native() ? ss_gemm_bf16_max_m(N) : 64;
            CHECK(max_m >= 1 && max_m <= SS_GEMM_BF16_MAX_M);
            int64_t ms[] = {max_m, max_m + 1};
            for (int j = 0; j < (ss_dnnl_bf16_native() ? 2 : 1); j++) { /* else f32 past max_m */
                path_calls c = check_matmul_bf16(ms[j], 320, N);
                bool own = ms[j] <= max_m;
                CHECK_MSG(c.own == (own ? 1u : 0u) && c.dnnl_bf16 == (own ? 0u : 1u),
                          "M=%lld N=%lld (max %lld): own %lu, oneDNN bf16 %lu calls",
                          (long long)ms[j], (long long)N, (long long)max_m, c.own, c.dnnl_bf16);
            }
        }
    }
    ss_gemm_bf16_force_max_m(-1);
}

TEST_MAIN(TEST(test_every_variant_within_bf16_of_f32),
          TEST(test_row_independent_of_batch_and_threads), TEST(test_chunks_change_nothing),
          TEST(test_matmul_decode_shape_takes_bf16_path),
          TEST(test_matmul_batched_decode_crossover))
