/*
 * MatMul and Gemm (ops/matmul.c) with every small-M kernel variant this CPU has (OpenBLAS,
 * AVX2+FMA, AVX-512; forced in turn with ss_gemm_force) and 1, 2 and 3 threads, called through
 * the op table the way the planner calls them, against a double-precision reference: odd M
 * (1 2 3 7 31 33 64 65 130 257: tile remainders, passes of 64 rows, the M limit), K and N that are
 * not multiples of 16/32/256 (column masks, K blocks), folded batch dims, true batched and
 * broadcast MatMul, 1-D operands, Gemm with transA/transB, alpha, beta and every bias broadcast,
 * the kernel entry point with strided operands and accumulation, and NaN garbage in the output
 * buffer. Each case checks that the forced variant really ran and that the second run did not call
 * malloc.
 *
 * ctest runs it once per SHARDSERVE_KERNELS value (ops_matmul.cmake): under onednn every float32
 * case the oneDNN path takes must run there (alpha != 1 stays on the other kernels), under blas
 * neither oneDNN nor the tile kernels may run, under own the tile kernels run as before oneDNN,
 * and under auto the path must be the one ss_kernels_use_dnnl picks for the shape, except the
 * float32 MatMuls on one constant matrix with folded M in gemm_f32p.h's range on AVX-512, which
 * must run on the own kernel over packed weights (its entry point is also checked on its own: row,
 * column and K-block remainders, B transposed, 1-3 threads).
 */
#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "gemm_bf16.h"
#include "gemm_f32p.h"
#include "gemm_kernel.h"
#include "onednn.h"
#define OP_HARNESS_COUNT_ALLOCS
#include "op_harness.h"

/* The counter must see the runtime's allocations, or the no-malloc checks prove nothing. */
static void test_alloc_counter_sees_malloc(void)
{
    int before = alloc_count;
    ss_tensor t = {0};
    int64_t d[1] = {3};
    CHECK_OK(ss_tensor_alloc(&t, SS_DT_FLOAT32, 1, d));
    CHECK(alloc_count > before);
    ss_tensor_free(&t);
}

/* ------------------------------------------------------------------ helpers */

/* One output, poisoned with NaN before the first run; the second run must not allocate. */
static ss_status *run_node(tnode *t, int64_t opset, int n_in, ss_tensor **in, ss_tensor *out)
{
    return op_run(t, opset, n_in, in, 1, out, &(op_run_opts){.poison = true, .check_allocs = true});
}

static const ss_gemm_variant variants[] = {SS_GEMM_BLAS, SS_GEMM_AVX2, SS_GEMM_AVX512};
#define N_VARIANTS 3

static double get(const ss_tensor *t, int64_t i)
{
    return t->dtype == SS_DT_FLOAT32 ? (double)((const float *)t->data)[i]
                                     : ((const double *)t->data)[i];
}

/* The tensor's elements as doubles (malloc'd). */
static double *to_doubles(const ss_tensor *t)
{
    int64_t n = ss_tensor_numel(t);
    double *d = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t i = 0; d && i < n; i++)
        d[i] = get(t, i);
    return d;
}

/* The reference product in double precision, added to ref (M x N), and the sum of its terms'
 * magnitudes added to mag (the scale of the allowed error): a's element (m, q) at a[m * am + q *
 * aq], b's (q, j) at b[q * bq + j * bj]. Each output sums its terms in q order. Not instrumented
 * by the sanitizers: it is the test's arithmetic, not the code under test, and under ASan it took
 * half of this test's time. */
__attribute__((no_sanitize("address", "undefined"))) static void
ref_product(const double *a, int64_t am, int64_t aq, const double *b, int64_t bq, int64_t bj,
            int64_t M, int64_t K, int64_t N, double *ref, double *mag)
{
    for (int64_t m = 0; m < M; m++)
        for (int64_t q = 0; q < K; q++) {
            double x = a[m * am + q * aq];
            for (int64_t j = 0; j < N; j++) {
                double t = x * b[q * bq + j * bj];
                ref[m * N + j] += t, mag[m * N + j] += fabs(t);
            }
        }
}

/* Sum of the tile-kernel call counters (to see that the OpenBLAS variant does not reach them). */
static unsigned long tile_calls(void)
{
    return ss_gemm_calls(SS_GEMM_AVX2) + ss_gemm_calls(SS_GEMM_AVX512);
}

/* Whether the oneDNN path should take a float32 case of M x K x N (dnnl_ok: the op's attributes
 * allow it) under the SHARDSERVE_KERNELS mode this process runs with. */
static bool dnnl_expected(ss_dtype dt, int64_t M, int64_t K, int64_t N, bool dnnl_ok)
{
    return dnnl_ok && ss_kernels_use_dnnl(ss_kernels_mode(), dt, M, K, N);
}

/* Whether a float32 MatMul of M (folded) rows on one constant matrix b (b_nd == 2) runs on the own
 * packed kernel under this process's mode: auto only, where gemm_f32p.h says it applies. */
static bool f32p_expected(ss_dtype dt, int b_nd, int64_t M, int64_t K, int64_t N)
{
    return ss_kernels_mode() == SS_KERNELS_AUTO && dt == SS_DT_FLOAT32 && b_nd == 2 &&
           ss_gemm_f32p_usable(M, K, N, false);
}

/* After a node ran twice: the packed kernel ran iff expected, and then nothing else; oneDNN ran iff
 * expected; else the forced tile variant ran iff expected (and never under blas); OpenBLAS never
 * reaches the tile kernels. */
static void check_path(const char *what, ss_gemm_variant v, bool expect_small, bool expect_dnnl,
                       bool expect_f32p, unsigned long f32p_before, unsigned long before,
                       unsigned long tiles_before, unsigned long dnnl_before)
{
    CHECK_MSG(ss_gemm_f32p_calls() == f32p_before + (expect_f32p ? 2 : 0), "%s: packed kernel %s",
              what, expect_f32p ? "not used" : "used");
    if (expect_f32p) {
        CHECK_MSG(ss_dnnl_calls() == dnnl_before, "%s: oneDNN used besides the packed kernel",
                  what);
        CHECK_MSG(tile_calls() == tiles_before, "%s: tile kernel used besides the packed kernel",
                  what);
        return;
    }
    if (expect_dnnl) {
        CHECK_MSG(ss_dnnl_calls() == dnnl_before + 2, "%s: oneDNN not used", what);
        CHECK_MSG(tile_calls() == tiles_before, "%s: tile kernel used besides oneDNN", what);
        return;
    }
    CHECK_MSG(ss_dnnl_calls() == dnnl_before, "%s: oneDNN used", what);
    if (v == SS_GEMM_BLAS || !expect_small || ss_kernels_mode() == SS_KERNELS_BLAS)
        CHECK_MSG(tile_calls() == tiles_before, "%s: tile kernel used", what);
    else
        CHECK_MSG(ss_gemm_calls(v) == before + 2, "%s: kernel not used", what);
}

/* infer, then run twice on an output full of NaN; the second run must not allocate. */
/* Compares out with a reference; tolerance relative to sum |a_i b_i| of each element. */
static int compare(const char *what, const ss_tensor *out, const double *ref, const double *mag,
                   int64_t n)
{
    double tol = out->dtype == SS_DT_FLOAT32 ? 2e-6 : 1e-13;
    if (ss_tensor_numel(out) != n) {
        fprintf(stderr, "%s: %lld elements, want %lld\n", what, (long long)ss_tensor_numel(out),
                (long long)n);
        return 1;
    }
    for (int64_t i = 0; i < n; i++) {
        double g = get(out, i);
        if (!(fabs(g - ref[i]) <= tol * (mag[i] + 1.0) * 4)) {
            fprintf(stderr, "%s: element %lld is %.9g, want %.9g\n", what, (long long)i, g, ref[i]);
            return 1;
        }
    }
    return 0;
}

/* MatMul of a [a_nd dims] x b [b_nd dims] against the numpy-semantics reference computed here. */
static void check_matmul(ss_dtype dt, int a_nd, const int64_t *ad, int b_nd, const int64_t *bd,
                         ss_gemm_variant v, int threads, bool expect_small)
{
    ss_tensor a = make_rand(dt, a_nd, ad), b = make_rand(dt, b_nd, bd), out;
    ss_tensor *in[2] = {&a, &b};
    tnode t;
    tnode_init(&t, "MatMul");
    char what[160];
    snprintf(what, sizeof what, "MatMul %s a_nd %d b_nd %d M %lld K %lld N %lld threads %d",
             ss_gemm_variant_name(v), a_nd, b_nd, (long long)(a_nd > 1 ? ad[a_nd - 2] : 1),
             (long long)ad[a_nd - 1], (long long)(b_nd > 1 ? bd[b_nd - 1] : 1), threads);
    /* reference: promote, broadcast batch dims (at most 2 here) */
    int64_t M = a_nd > 1 ? ad[a_nd - 2] : 1, K = ad[a_nd - 1], N = b_nd > 1 ? bd[b_nd - 1] : 1;
    int abn = a_nd > 2 ? a_nd - 2 : 0, bbn = b_nd > 2 ? b_nd - 2 : 0;
    int nbd = abn > bbn ? abn : bbn;
    int64_t bdim[2] = {1, 1}, adim[2] = {1, 1}, bbdim[2] = {1, 1};
    for (int i = 0; i < nbd; i++) {
        int ia = i - (nbd - abn), ib = i - (nbd - bbn);
        adim[i] = ia >= 0 ? ad[ia] : 1;
        bbdim[i] = ib >= 0 ? bd[ib] : 1;
        bdim[i] = adim[i] > bbdim[i] ? adim[i] : bbdim[i];
    }
    int64_t nb = bdim[0] * bdim[1], n = nb * M * N;
    /* the kernel choice sees every batch's rows as M */
    bool expect_f32p = f32p_expected(dt, b_nd, M * nb, K, N);
    bool expect_dnnl = !expect_f32p && dnnl_expected(dt, M * nb, K, N, true);
    unsigned long before = ss_gemm_calls(v), tiles_before = tile_calls(),
                  dnnl_before = ss_dnnl_calls(), f32p_before = ss_gemm_f32p_calls();
    ss_status *st = run_node(&t, 13, 2, in, &out);
    CHECK_MSG(!st, "%s: %s", what, st ? st->msg : "");
    if (st) {
        ss_status_free(st);
        goto done;
    }
    check_path(what, v, expect_small, expect_dnnl, expect_f32p, f32p_before, before, tiles_before,
               dnnl_before);
    double *ref = calloc((size_t)n, sizeof(double)), *mag = calloc((size_t)n, sizeof(double));
    double *av = to_doubles(&a), *bv = to_doubles(&b);
    bool made = ref && mag && av && bv;
    CHECK(made);
    for (int64_t i0 = 0; made && i0 < bdim[0]; i0++)
        for (int64_t i1 = 0; i1 < bdim[1]; i1++) {
            int64_t ao = ((adim[0] == 1 ? 0 : i0) * adim[1] + (adim[1] == 1 ? 0 : i1)) * M * K;
            int64_t bo = ((bbdim[0] == 1 ? 0 : i0) * bbdim[1] + (bbdim[1] == 1 ? 0 : i1)) * K * N;
            int64_t co = (i0 * bdim[1] + i1) * M * N;
            ref_product(av + ao, K, 1, bv + bo, N, 1, M, K, N, ref + co, mag + co);
        }
    if (made) CHECK(compare(what, &out, ref, mag, n) == 0);
    free(ref);
    free(mag);
    free(av);
    free(bv);
    ss_tensor_free(&out);
done:
    ss_tensor_free(&a);
    ss_tensor_free(&b);
}

/* Gemm with the given flags; bias shape cnd/cd (cnd < 0: no C). */
static void check_gemm(int64_t M, int64_t K, int64_t N, bool ta, bool tb, float alpha, float beta,
                       int cnd, const int64_t *cd, ss_gemm_variant v, int threads,
                       bool expect_small)
{
    int64_t ad[2] = {ta ? K : M, ta ? M : K}, bd[2] = {tb ? N : K, tb ? K : N};
    ss_tensor a = make_rand(SS_DT_FLOAT32, 2, ad), b = make_rand(SS_DT_FLOAT32, 2, bd), c = {0},
              out;
    if (cnd >= 0) c = make_rand(SS_DT_FLOAT32, cnd, cd);
    ss_tensor *in[3] = {&a, &b, &c};
    tnode t;
    tnode_init(&t, "Gemm");
    if (ta) attr_int(&t, "transA", 1);
    if (tb) attr_int(&t, "transB", 1);
    if (alpha != 1.0f) attr_float(&t, "alpha", alpha);
    if (beta != 1.0f) attr_float(&t, "beta", beta);
    char what[160];
    snprintf(what, sizeof what, "Gemm %s M %lld K %lld N %lld ta %d tb %d C rank %d threads %d",
             ss_gemm_variant_name(v), (long long)M, (long long)K, (long long)N, ta, tb, cnd,
             threads);
    /* alpha 1 and A as stored: the packed kernel where it applies (from 1 row when B is
     * transposed), with beta x C filled in first */
    bool expect_f32p = ss_kernels_mode() == SS_KERNELS_AUTO && !ta && alpha == 1.0f &&
                       ss_gemm_f32p_usable(M, K, N, tb);
    bool expect_dnnl = !expect_f32p && dnnl_expected(SS_DT_FLOAT32, M, K, N, alpha == 1.0f);
    unsigned long before = ss_gemm_calls(v), tiles_before = tile_calls(),
                  dnnl_before = ss_dnnl_calls(), f32p_before = ss_gemm_f32p_calls();
    ss_status *st = run_node(&t, 13, cnd >= 0 ? 3 : 2, in, &out);
    CHECK_MSG(!st, "%s: %s", what, st ? st->msg : "");
    if (st) {
        ss_status_free(st);
        goto done;
    }
    check_path(what, v, expect_small, expect_dnnl, expect_f32p, f32p_before, before, tiles_before,
               dnnl_before);
    double *ref = calloc((size_t)(M * N), sizeof(double)),
           *mag = calloc((size_t)(M * N), sizeof(double));
    double *av = to_doubles(&a), *bv = to_doubles(&b);
    bool made = ref && mag && av && bv;
    CHECK(made);
    int64_t cm = cnd == 2 ? cd[0] : 1, cn = cnd >= 1 ? cd[cnd - 1] : 1;
    if (made)
        ref_product(av, ta ? 1 : K, ta ? M : 1, bv, tb ? 1 : N, tb ? K : 1, M, K, N, ref, mag);
    for (int64_t m = 0; made && m < M; m++)
        for (int64_t j = 0; j < N; j++) {
            double s = ref[m * N + j] * alpha, g = mag[m * N + j] * fabs(alpha);
            if (cnd >= 0) {
                double bias = beta * get(&c, (cm == 1 ? 0 : m) * cn + (cn == 1 ? 0 : j));
                s += bias, g += fabs(bias);
            }
            ref[m * N + j] = s, mag[m * N + j] = g;
        }
    if (made) CHECK(compare(what, &out, ref, mag, M * N) == 0);
    free(ref);
    free(mag);
    free(av);
    free(bv);
    ss_tensor_free(&out);
done:
    ss_tensor_free(&a);
    ss_tensor_free(&b);
    ss_tensor_free(&c);
}

static const int64_t Ms[] = {1, 2, 3, 7, 31, 33, 64, 65, 130, 257};
/* N up to 8 on AVX-512: the narrow path (a dot per output), K across its 16-wide steps */
static const int64_t KNs[][2] = {{1, 1},   {5, 17}, {67, 33}, {300, 130}, {257, 1000},
                                 {16, 64}, {96, 2}, {37, 5},  {1100, 7},  {2000, 8}};

/* ------------------------------------------------------------------ cases */

static int n_variants_run;

static void for_each_variant(void (*fn)(ss_gemm_variant v, int threads))
{
    for (int vi = 0; vi < N_VARIANTS; vi++) {
        if (!ss_gemm_supported(variants[vi])) {
            fprintf(stderr, "note: this CPU lacks %s; that variant is not tested here\n",
                    ss_gemm_variant_name(variants[vi]));
            continue;
        }
        n_variants_run++;
        for (int threads = 1; threads <= 3; threads++) {
            openblas_set_num_threads(threads);
            ss_gemm_force(variants[vi]);
            fn(variants[vi], threads);
        }
    }
    ss_gemm_force(SS_GEMM_AUTO);
    openblas_set_num_threads(1);
}

static void matmul_shapes(ss_gemm_variant v, int threads)
{
    for (size_t mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++)
        for (size_t ki = 0; ki < sizeof KNs / sizeof KNs[0]; ki++) {
            int64_t M = Ms[mi], K = KNs[ki][0], N = KNs[ki][1];
            if (threads > 1 && K * N < 20000) continue; /* one thread anyway */
            int64_t ad[2] = {M, K}, bd[2] = {K, N};
            check_matmul(SS_DT_FLOAT32, 2, ad, 2, bd, v, threads, M <= SS_GEMM_TILE_MAX_M);
        }
}

static void test_matmul_odd_shapes_every_variant(void)
{
    for_each_variant(matmul_shapes);
    CHECK(n_variants_run > 0);
}

static void matmul_batched(ss_gemm_variant v, int threads)
{
    /* folded: [2,3,M,K] x [K,N] -> M*6 rows (small up to 64 rows) */
    int64_t a1[4] = {2, 3, 5, 70}, b1[2] = {70, 45};
    check_matmul(SS_DT_FLOAT32, 4, a1, 2, b1, v, threads, true);
    int64_t a2[3] = {3, 22, 40}, b2[2] = {40, 97}; /* 66 rows: two passes */
    check_matmul(SS_DT_FLOAT32, 3, a2, 2, b2, v, threads, true);
    a2[1] = 90; /* 270 rows: OpenBLAS */
    check_matmul(SS_DT_FLOAT32, 3, a2, 2, b2, v, threads, false);
    /* true batch and broadcast batch: OpenBLAS per matrix */
    int64_t a3[3] = {2, 3, 9}, b3[3] = {2, 9, 11};
    check_matmul(SS_DT_FLOAT32, 3, a3, 3, b3, v, threads, false);
    int64_t a4[4] = {2, 1, 1, 9}, b4[3] = {3, 9, 11}; /* M == 1 per batch: sgemv */
    check_matmul(SS_DT_FLOAT32, 4, a4, 3, b4, v, threads, false);
    /* 1-D operands */
    int64_t a5[1] = {37}, b5[2] = {37, 50};
    check_matmul(SS_DT_FLOAT32, 1, a5, 2, b5, v, threads, true);
    int64_t a6[2] = {4, 37}, b6[1] = {37};
    check_matmul(SS_DT_FLOAT32, 2, a6, 1, b6, v, threads, false);
    int64_t a7[3] = {2, 3, 37};
    check_matmul(SS_DT_FLOAT32, 3, a7, 1, b6, v, threads, false);
    /* float64 never takes the float32 kernel */
    int64_t a8[2] = {1, 19}, b8[2] = {19, 23}, a9[2] = {5, 19};
    check_matmul(SS_DT_FLOAT64, 2, a8, 2, b8, v, threads, false);
    check_matmul(SS_DT_FLOAT64, 2, a9, 2, b8, v, threads, false);
}

static void test_matmul_batched_and_vectors(void)
{
    for_each_variant(matmul_batched);
}

static void gemm_cases(ss_gemm_variant v, int threads)
{
    int64_t M = 7, K = 83, N = 150;
    int64_t c_n[1] = {N}, c_1n[2] = {1, N}, c_m1[2] = {M, 1}, c_mn[2] = {M, N}, c_1[1] = {1};
    check_gemm(M, K, N, false, false, 1.0f, 1.0f, -1, NULL, v, threads, true);
    check_gemm(M, K, N, false, false, 0.5f, 2.0f, 1, c_n, v, threads, true);
    check_gemm(M, K, N, false, false, 1.0f, 1.0f, 2, c_1n, v, threads, true);
    check_gemm(M, K, N, false, false, -1.5f, 0.25f, 2, c_m1, v, threads, true);
    check_gemm(1, K, N, false, false, -1.5f, 0.25f, 1, c_n, v, threads, true); /* GEMV, alpha */
    check_gemm(M, K, N, false, false, 1.0f, 1.0f, 2, c_mn, v, threads, true);
    check_gemm(M, K, N, false, false, 1.0f, 1.0f, 0, c_1, v, threads, true);
    check_gemm(M, K, N, false, false, 1.0f, 0.0f, 1, c_n, v, threads, true);
    /* transB (torch's Linear), transA: OpenBLAS (sgemv for M == 1) */
    check_gemm(M, K, N, false, true, 1.0f, 1.0f, 1, c_n, v, threads, false);
    check_gemm(1, K, N, false, true, 2.0f, 1.0f, 1, c_n, v, threads, false);
    check_gemm(1, K, N, false, true, 1.0f, 1.0f, -1, NULL, v, threads, false);
    check_gemm(M, K, N, true, false, 1.0f, 1.0f, 2, c_m1, v, threads, false);
    check_gemm(M, K, N, true, true, 1.0f, 1.0f, 2, c_mn, v, threads, false);
    int64_t c_big[1] = {1000};
    for (size_t mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++)
        check_gemm(Ms[mi], 257, 1000, false, false, 1.0f, 1.0f, 1, c_big, v, threads,
                   Ms[mi] <= SS_GEMM_TILE_MAX_M);
}

static void test_gemm_bias_broadcasts_and_transposes(void)
{
    for_each_variant(gemm_cases);
}

/* The entry point itself: leading dimensions larger than the row, accumulation into C. */
static void strided_case(ss_gemm_variant v, int threads, int64_t M, int64_t K, int64_t N)
{
    int64_t lda = K + 10, ldb = 90, ldc = 81;
    float *A = malloc(sizeof(float) * (size_t)(M * lda)),
          *B = malloc(sizeof(float) * (size_t)(K * ldb)),
          *C = malloc(sizeof(float) * (size_t)(M * ldc));
    double *C0 = malloc(sizeof(double) * (size_t)(M * ldc));
    for (int64_t i = 0; i < M * lda; i++) /* NaN past each row: a kernel must not read it */
        A[i] = i % lda < K ? (float)urand() : NAN;
    for (int64_t i = 0; i < K * ldb; i++)
        B[i] = (float)urand();
    for (int64_t i = 0; i < M * ldc; i++)
        C[i] = (float)urand(), C0[i] = C[i];
    int parts = ss_gemm_pool_reserve(threads);
    CHECK(parts >= threads); /* this machine can start 2 threads */
    parts = threads;
    unsigned long before = ss_gemm_calls(v);
    ss_gemm_small(v, M, N, K, 0.75f, A, lda, B, ldb, true, C, ldc, parts);
    CHECK(ss_gemm_calls(v) == before + 1);
    int bad = 0;
    for (int64_t m = 0; m < M && !bad; m++)
        for (int64_t j = 0; j < ldc && !bad; j++) {
            double s = C0[m * ldc + j], g = fabs(s);
            if (j < N)
                for (int64_t q = 0; q < K; q++) {
                    double x = 0.75 * (double)A[m * lda + q] * (double)B[q * ldb + j];
                    s += x, g += fabs(x);
                }
            if (!(fabs((double)C[m * ldc + j] - s) <= 8e-6 * (g + 1))) {
                fprintf(stderr, "strided %s: C[%lld][%lld] = %.9g, want %.9g\n",
                        ss_gemm_variant_name(v), (long long)m, (long long)j, C[m * ldc + j], s);
                bad = 1;
            }
        }
    CHECK(!bad);
    free(A), free(B), free(C), free(C0);
}

/* 13 rows on the tiles; 1 row on the GEMV with K = 7 x 12 + 7 (its 12-, 4- and 1-row steps);
 * narrow B (N <= 8 on AVX-512: a dot per output), K a multiple of 16 and not. */
static void kernel_strided(ss_gemm_variant v, int threads)
{
    strided_case(v, threads, 13, 300, 77);
    strided_case(v, threads, 1, 91, 77);
    strided_case(v, threads, 130, 96, 2);
    strided_case(v, threads, 5, 1100, 7);
    strided_case(v, threads, 65, 37, 8);
}

static void test_kernel_strided_accumulate(void)
{
    for_each_variant(kernel_strided);
}

/* The packed kernel's entry point against a double-precision reference: M across the 6-row tile
 * remainders, N not a multiple of the 64-column panel (masked stores, zero-padded panel), K across
 * the 512-deep blocks, B given transposed, 1-3 threads, and NaN garbage in C beforehand, or with
 * acc, values in C it must add to. */
static void test_f32p_kernel_remainders(void)
{
    if (!ss_gemm_f32p_usable(SS_GEMM_F32P_MIN_M, 64, 64, false)) {
        fprintf(stderr, "note: no AVX-512 here: the packed kernel is never chosen, not tested\n");
        return;
    }
    static const int64_t ms[] = {1, 5, 17, 23, 32, 64},
                         kns[][2] = {{64, 64}, {513, 65}, {1100, 200}};
    ss_gemm_pool_reserve(3);
    for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++)
        for (size_t ki = 0; ki < sizeof kns / sizeof kns[0]; ki++)
            for (int tb = 0; tb < 2; tb++)
                for (int threads = 1; threads <= 3; threads++) {
                    int64_t M = ms[mi], K = kns[ki][0], N = kns[ki][1], lda = K + 3, ldc = N + 5;
                    bool acc = (mi + ki + (size_t)threads) % 2 == 1;
                    float *A = malloc(sizeof(float) * (size_t)(M * lda)),
                          *B = malloc(sizeof(float) * (size_t)(K * N)),
                          *C = malloc(sizeof(float) * (size_t)(M * ldc));
                    float *Bp = ss_gemm_f32p_alloc(K, N);
                    CHECK(A && B && C && Bp);
                    for (int64_t j = 0; j < M * lda; j++)
                        A[j] = (float)urand();
                    for (int64_t j = 0; j < K * N; j++)
                        B[j] = (float)urand();
                    for (int64_t j = 0; j < M * ldc; j++)
                        C[j] = acc && j % ldc < N ? (float)urand() : NAN;
                    float *C0 = malloc(sizeof(float) * (size_t)(M * ldc));
                    CHECK(C0);
                    memcpy(C0, C, sizeof(float) * (size_t)(M * ldc));
                    /* B as [K, N], or its transpose stored [N, K] */
                    float *Bs = B;
                    if (tb) {
                        Bs = malloc(sizeof(float) * (size_t)(K * N));
                        for (int64_t q = 0; q < K; q++)
                            for (int64_t j = 0; j < N; j++)
                                Bs[j * K + q] = B[q * N + j];
                    }
                    ss_gemm_f32p_pack(Bs, K, N, tb ? K : N, tb, Bp);
                    unsigned long calls = ss_gemm_f32p_calls();
                    ss_gemm_f32p(M, N, K, A, lda, Bp, acc, C, ldc, threads);
                    CHECK(ss_gemm_f32p_calls() == calls + 1);
                    int bad = 0;
                    for (int64_t m = 0; m < M && !bad; m++) {
                        for (int64_t j = 0; j < N && !bad; j++) {
                            double sum = acc ? C0[m * ldc + j] : 0, g = fabs(sum);
                            for (int64_t q = 0; q < K; q++) {
                                double x = (double)A[m * lda + q] * B[q * N + j];
                                sum += x, g += fabs(x);
                            }
                            bad = !(fabs(C[m * ldc + j] - sum) <= 8e-6 * (g + 1));
                        }
                        for (int64_t j = N; j < ldc && !bad; j++) /* past the row: untouched */
                            bad = !isnan(C[m * ldc + j]);
                    }
                    CHECK_MSG(!bad, "packed kernel M %lld K %lld N %lld tb %d acc %d threads %d",
                              (long long)M, (long long)K, (long long)N, tb, acc, threads);
                    if (tb) free(Bs);
                    free(A), free(B), free(C), free(C0), free(Bp);
                }
}

/* M = 1 (the GEMV) on 1, 2 and 3 threads: the same bits (its split of B must not depend on the
 * threads), close to a double reference, with and without accumulation; B of 1400 columns (split
 * over K, the last piece longer) and of 5000 (split over columns, a masked tail); the pool's
 * workers sleeping between tasks and polling. */
static void gemv_threads_case(ss_gemm_variant v, int64_t K, int64_t N, bool acc)
{
    float *A = malloc(sizeof(float) * (size_t)K), *B = malloc(sizeof(float) * (size_t)(K * N));
    float *C[3], *C0 = malloc(sizeof(float) * (size_t)N);
    for (int64_t i = 0; i < K; i++)
        A[i] = (float)urand();
    for (int64_t i = 0; i < K * N; i++)
        B[i] = (float)urand();
    for (int64_t j = 0; j < N; j++)
        C0[j] = (float)urand();
    for (int t = 0; t < 3; t++) {
        C[t] = malloc(sizeof(float) * (size_t)N);
        memcpy(C[t], C0, sizeof(float) * (size_t)N);
        ss_gemm_small(v, 1, N, K, 0.5f, A, K, B, N, acc, C[t], N, t + 1);
    }
    int bad = 0;
    for (int64_t j = 0; j < N && !bad; j++) {
        double s = acc ? C0[j] : 0.0, g = fabs(s);
        for (int64_t q = 0; q < K; q++) {
            double x = 0.5 * (double)A[q] * (double)B[q * N + j];
            s += x, g += fabs(x);
        }
        if (!(fabs((double)C[0][j] - s) <= 8e-6 * (g + 1))) {
            fprintf(stderr, "gemv %s K %lld N %lld: C[%lld] = %.9g, want %.9g\n",
                    ss_gemm_variant_name(v), (long long)K, (long long)N, (long long)j, C[0][j], s);
            bad = 1;
        }
    }
    CHECK(!bad);
    for (int t = 1; t < 3; t++)
        CHECK_MSG(!memcmp(C[0], C[t], sizeof(float) * (size_t)N),
                  "gemv %s K %lld N %lld acc %d: %d threads differ from 1", ss_gemm_variant_name(v),
                  (long long)K, (long long)N, acc, t + 1);
    for (int t = 0; t < 3; t++)
        free(C[t]);
    free(A), free(B), free(C0);
}

static void test_gemv_bits_independent_of_threads(void)
{
    CHECK(ss_gemm_pool_reserve(3) >= 3);
    for (int spin = 0; spin <= 50; spin += 50) { /* workers that sleep, and that poll 50 us */
        ss_pool_set_spin_us(spin);
        for (size_t vi = 0; vi < sizeof variants / sizeof *variants; vi++) {
            if (!ss_gemm_supported(variants[vi])) continue;
            for (int acc = 0; acc < 2; acc++) {
                gemv_threads_case(variants[vi], 1531, 1400, acc);
                gemv_threads_case(variants[vi], 503, 5000, acc);
            }
        }
    }
    ss_pool_set_spin_us(-1);
}

/* Two threads calling at once: one owns the pool, the other runs alone; both must be right. */
typedef struct {
    int64_t M, K, N;
    float *A, *B, *C;
} conc_arg;

static void *conc_main(void *p)
{
    conc_arg *c = p;
    for (int r = 0; r < 20; r++)
        ss_gemm_small(ss_gemm_pick(), c->M, c->N, c->K, 1.0f, c->A, c->K, c->B, c->N, false, c->C,
                      c->N, 2);
    return NULL;
}

static void test_concurrent_callers(void)
{
    ss_gemm_pool_reserve(2);
    conc_arg args[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        conc_arg *c = &args[i];
        c->M = 9 + i, c->K = 200, c->N = 3000;
        c->A = malloc(sizeof(float) * (size_t)(c->M * c->K));
        c->B = malloc(sizeof(float) * (size_t)(c->K * c->N));
        c->C = malloc(sizeof(float) * (size_t)(c->M * c->N));
        for (int64_t j = 0; j < c->M * c->K; j++)
            c->A[j] = (float)urand();
        for (int64_t j = 0; j < c->K * c->N; j++)
            c->B[j] = (float)urand();
        CHECK(pthread_create(&t[i], NULL, conc_main, c) == 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        conc_arg *c = &args[i];
        int bad = 0;
        for (int64_t m = 0; m < c->M && !bad; m++)
            for (int64_t j = 0; j < c->N && !bad; j += 7) {
                double s = 0, g = 0;
                for (int64_t q = 0; q < c->K; q++) {
                    double x = (double)c->A[m * c->K + q] * c->B[q * c->N + j];
                    s += x, g += fabs(x);
                }
                bad = !(fabs(c->C[m * c->N + j] - s) <= 8e-6 * (g + 1));
            }
        CHECK(!bad);
        free(c->A), free(c->B), free(c->C);
    }
}

/* One MatMul layer with the session's bf16-weights flag set as the planner sets it. */
static ss_status *mlp_layer(ss_tensor *x, ss_tensor *w, bool bf16, ss_tensor *y)
{
    tnode t;
    tnode_init(&t, "MatMul");
    ss_tensor *in[2] = {x, w};
    op_run_opts o = {.threads = 2, .weights = bf16 ? SS_WEIGHTS_BF16 : SS_WEIGHTS_F32};
    ss_status *st = op_run(&t, 13, 2, in, 1, y, &o);
    for (int64_t i = 0; !st && i < ss_tensor_numel(y); i++) /* Relu */
        if (((float *)y->data)[i] < 0) ((float *)y->data)[i] = 0;
    return st;
}

/* MatMuls run on bf16 weights, by oneDNN or the own bf16 kernel. */
static unsigned long bf16_calls(void)
{
    unsigned long n = ss_dnnl_bf16_calls();
    for (int v = SS_BF16_C; v <= SS_BF16_AVX512_DOT; v++)
        n += ss_gemm_bf16_calls((ss_bf16_variant)v);
    return n;
}

/* 4 x (MatMul 512x512 + Relu), batch 32: bf16 weights against f32, relative error (L2) <= 1e-2.
 * Under SHARDSERVE_KERNELS=blas the flag changes nothing (f32 weights). */
static void test_bf16_weights_mlp_close_to_f32(void)
{
    int64_t xd[2] = {32, 512}, wd[2] = {512, 512};
    ss_tensor x = make_rand(SS_DT_FLOAT32, 2, xd), w[4];
    for (int l = 0; l < 4; l++) {
        w[l] = make_rand(SS_DT_FLOAT32, 2, wd);
        for (int64_t i = 0; i < 512 * 512; i++)
            ((float *)w[l].data)[i] *= 0.08f; /* ~unit gain */
    }
    ss_tensor y[2][4];
    unsigned long bf16_before = bf16_calls();
    for (int mode = 0; mode < 2; mode++)
        for (int l = 0; l < 4; l++)
            CHECK_OK(mlp_layer(l ? &y[mode][l - 1] : &x, &w[l], mode == 1, &y[mode][l]));
    /* 32 rows: the own bf16 kernel (gemm_bf16.c, any CPU) unless the kernels are forced to BLAS */
    bool native = ss_kernels_mode() != SS_KERNELS_BLAS;
    if (!native)
        fprintf(stderr,
                "note: no bf16 path here (ISA %s, kernels %s): bf16 weights must equal f32\n",
                ss_dnnl_isa_name(), ss_kernels_name(ss_kernels_mode()));
    CHECK_MSG(bf16_calls() == bf16_before + (native ? 4 : 0), "bf16 path taken %lu times",
              bf16_calls() - bf16_before);
    double num = 0, den = 0;
    for (int64_t i = 0; i < ss_tensor_numel(&y[0][3]); i++) {
        double a = ((float *)y[0][3].data)[i], b = ((float *)y[1][3].data)[i];
        num += (a - b) * (a - b), den += a * a;
    }
    double rel = sqrt(num / den);
    fprintf(stderr, "bf16 weights: relative L2 error %.2e over 4 layers\n", rel);
    CHECK(den > 0);
    CHECK_MSG(native ? rel <= 1e-2 && rel > 0 : rel == 0, "relative error %.3g", rel);
    for (int mode = 0; mode < 2; mode++)
        for (int l = 0; l < 4; l++)
            ss_tensor_free(&y[mode][l]);
    for (int l = 0; l < 4; l++)
        ss_tensor_free(&w[l]);
    ss_tensor_free(&x);
}

/* Few rows: oneDNN reads the constant weights where they are (no packed copy, so a first prefill
 * does not pay a pass over every weight); one row more packs them. Results against the reference
 * either way (odd K and N: the primitive's column tails). */
static void test_dnnl_few_rows_read_weights_in_place(void)
{
    static const int64_t rows[] = {2, 7, SS_DNNL_IN_PLACE_MAX_ROWS, SS_DNNL_IN_PLACE_MAX_ROWS + 1};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        int64_t ad[2] = {rows[i], 301}, bd[2] = {301, 515};
        if (f32p_expected(SS_DT_FLOAT32, 2, rows[i], 301, 515)) {
            fprintf(stderr, "note: %lld rows run on the own packed kernel here, not oneDNN\n",
                    (long long)rows[i]);
            continue;
        }
        if (!dnnl_expected(SS_DT_FLOAT32, rows[i], 301, 515, true)) {
            fprintf(stderr, "note: kernels %s: oneDNN does not run %lld rows, nothing to check\n",
                    ss_kernels_name(ss_kernels_mode()), (long long)rows[i]);
            continue;
        }
        unsigned long packs = ss_dnnl_packs();
        check_matmul(SS_DT_FLOAT32, 2, ad, 2, bd, SS_GEMM_AUTO, 1, false);
        unsigned long want = rows[i] > SS_DNNL_IN_PLACE_MAX_ROWS ? 1 : 0;
        CHECK_MSG(ss_dnnl_packs() == packs + want, "%lld rows: %lu packs, want %lu",
                  (long long)rows[i], ss_dnnl_packs() - packs, want);
    }
}

/* ss_pool_run: each part of a task runs once and every call returns with its work done; under
 * libgomp's team (the default) every part runs, on a thread of its own; a nested call runs alone.
 */
typedef struct {
    int seen[8], parts_seen, nested_parts;
    pid_t tid[8];
    int64_t next, done;
} pool_probe;

static void probe_nested(void *ctx, int part, int parts)
{
    (void)part;
    __atomic_store_n(&((pool_probe *)ctx)->nested_parts, parts, __ATOMIC_RELAXED);
}

static void probe_part(void *ctx, int part, int parts)
{
    pool_probe *p = ctx;
    if (part < 0 || part >= 8) return;
    __atomic_add_fetch(&p->seen[part], 1, __ATOMIC_RELAXED);
    __atomic_store_n(&p->parts_seen, parts, __ATOMIC_RELAXED);
    p->tid[part] = (pid_t)syscall(SYS_gettid);
    if (part == 0) ss_pool_run(2, probe_nested, p);
    while (__atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED) < 1000)
        __atomic_add_fetch(&p->done, 1, __ATOMIC_RELAXED);
}

static void test_pool_runs_every_part(void)
{
    CHECK(ss_gemm_pool_reserve(3) >= 3);
    for (int round = 0; round < 50; round++) {
        pool_probe p = {{0}};
        ss_pool_run(3, probe_part, &p);
        CHECK(p.done == 1000);
        CHECK(p.seen[0] == 1 && p.nested_parts == 1);
        if (ss_pool_is_openmp()) {
            CHECK_MSG(p.parts_seen == 3 && p.seen[1] == 1 && p.seen[2] == 1,
                      "round %d: parts %d, seen %d %d %d", round, p.parts_seen, p.seen[0],
                      p.seen[1], p.seen[2]);
            CHECK(p.tid[0] != p.tid[1] && p.tid[1] != p.tid[2] && p.tid[0] != p.tid[2]);
        } else { /* a worker not scheduled in time skips the task */
            CHECK(p.seen[1] <= 1 && p.seen[2] <= 1);
        }
    }
}

TEST_MAIN(TEST(test_alloc_counter_sees_malloc), TEST(test_dnnl_few_rows_read_weights_in_place),
          TEST(test_bf16_weights_mlp_close_to_f32), TEST(test_matmul_odd_shapes_every_variant),
          TEST(test_matmul_batched_and_vectors), TEST(test_gemm_bias_broadcasts_and_transposes),
          TEST(test_kernel_strided_accumulate), TEST(test_f32p_kernel_remainders),
          TEST(test_gemv_bits_independent_of_threads), TEST(test_concurrent_callers),
          TEST(test_pool_runs_every_part))
