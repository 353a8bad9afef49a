/*
 * Elementwise plans split over the worker pool (ops/broadcast.c): large outputs in each collapsed
 * layout (one dim, a bias along rows, a per-row scalar, float16 operands converted in chunks,
 * a parameterised unary op) must run split (the counter) and give the same bytes as one thread,
 * and Add must equal a + b computed here. Sizes are odd so parts end mid-vector and mid-row.
 * The row-parallel ops (Softmax, LayerNormalization, Transpose: a fixed run of rows per part,
 * ss_pool_run_split) likewise; on the own pool (the _own_pool test) a worker that wakes after
 * the caller's part is done skips the task, so every share must still be done by someone.
 */
#include <cblas.h>

#include "broadcast.h"
#include "gemm_kernel.h"
#include "op_harness.h"

typedef struct {
    const char *what, *op;
    int an, bn; /* bn 0: unary */
    int64_t a[3], b[3];
    ss_dtype bdt; /* both operands' type */
} ew_case;

static ss_status *run_ew(const ew_case *c, ss_tensor *a, ss_tensor *b, int threads, ss_tensor *y)
{
    tnode t;
    tnode_init(&t, c->op);
    if (!strcmp(c->op, "LeakyRelu")) attr_float(&t, "alpha", 0.3f);
    ss_tensor *in[2] = {a, b};
    openblas_set_num_threads(threads);
    ss_status *st = op_run(&t, 17, c->bn ? 2 : 1, in, 1, y, &(op_run_opts){.poison = true});
    openblas_set_num_threads(1);
    return st;
}

static void check_ew(const ew_case *c)
{
    ss_tensor a = make_rand(c->bdt, c->an, c->a), y1, y3;
    ss_tensor b = c->bn ? make_rand(c->bdt, c->bn, c->b) : a;
    CHECK_OK(run_ew(c, &a, &b, 1, &y1));
    unsigned long split = ss_ew_parallel_runs();
    CHECK_OK(run_ew(c, &a, &b, 3, &y3));
    CHECK_MSG(ss_ew_parallel_runs() == split + 1, "%s: not split over threads", c->what);
    CHECK_MSG(y1.nbytes == y3.nbytes && !memcmp(y1.data, y3.data, y1.nbytes),
              "%s: 3 threads differ from 1", c->what);
    if (!strcmp(c->op, "Add") && c->bdt == SS_DT_FLOAT32 && c->an == c->bn) {
        int64_t n = ss_tensor_numel(&a), bad = 0;
        for (int64_t i = 0; i < n && !bad; i++)
            bad = ((float *)y3.data)[i] != ((float *)a.data)[i] + ((float *)b.data)[i];
        CHECK_MSG(!bad, "%s: not a + b", c->what);
    }
    ss_tensor_free(&y1);
    ss_tensor_free(&y3);
    if (c->bn) ss_tensor_free(&b);
    ss_tensor_free(&a);
}

static void test_large_plans_split_match_one_thread(void)
{
    static const ew_case cases[] = {
        {"Add same shape (one dim)", "Add", 1, 1, {200003}, {200003}, SS_DT_FLOAT32},
        {"Add 3-D same shape", "Add", 3, 3, {3, 301, 257}, {3, 301, 257}, SS_DT_FLOAT32},
        {"Mul bias along rows", "Mul", 2, 1, {301, 1001}, {1001}, SS_DT_FLOAT32},
        {"Div per-row scalar", "Div", 2, 2, {1003, 97}, {1003, 1}, SS_DT_FLOAT32},
        {"Sub scalar", "Sub", 3, 1, {7, 113, 101}, {1}, SS_DT_FLOAT32},
        {"Add float16 (converted chunks)", "Add", 2, 2, {301, 333}, {301, 333}, SS_DT_FLOAT16},
        {"LeakyRelu", "LeakyRelu", 2, 0, {517, 263}, {0}, SS_DT_FLOAT32},
    };
    if (ss_gemm_pool_reserve(3) < 2) {
        fprintf(stderr, "note: no worker threads could be started; nothing splits\n");
        CHECK(0);
        return;
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_ew(&cases[i]);
}

/* One row-parallel op on x (and, for LayerNormalization, scale and bias over its last dim) with
 * `threads` threads. */
static ss_status *run_rows(const char *op, ss_tensor *x, ss_tensor *scale, ss_tensor *bias,
                           int threads, ss_tensor *y)
{
    tnode t;
    tnode_init(&t, op);
    int64_t perm[2] = {1, 0};
    if (!strcmp(op, "Transpose")) attr_ints(&t, "perm", perm, 2);
    ss_tensor *in[3] = {x, scale, bias};
    openblas_set_num_threads(threads);
    ss_status *st = op_run(&t, 17, !strcmp(op, "LayerNormalization") ? 3 : 1, in, 1, y,
                           &(op_run_opts){.poison = true});
    openblas_set_num_threads(1);
    return st;
}

static void test_row_parallel_ops_match_one_thread(void)
{
    static const char *const ops[] = {"Softmax", "LayerNormalization", "Transpose"};
    int64_t xd[2] = {1003, 517}, nd[1] = {517};
    ss_tensor x = make_rand(SS_DT_FLOAT32, 2, xd), scale = make_rand(SS_DT_FLOAT32, 1, nd),
              bias = make_rand(SS_DT_FLOAT32, 1, nd);
    CHECK(ss_gemm_pool_reserve(3) >= 2);
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        for (int round = 0; round < 20; round++) { /* a late worker is a matter of timing */
            ss_tensor y1, y3;
            CHECK_OK(run_rows(ops[i], &x, &scale, &bias, 1, &y1));
            CHECK_OK(run_rows(ops[i], &x, &scale, &bias, 3, &y3));
            bool same = y1.nbytes == y3.nbytes && !memcmp(y1.data, y3.data, y1.nbytes);
            CHECK_MSG(same, "%s: 3 threads differ from 1 (round %d)", ops[i], round);
            ss_tensor_free(&y1);
            ss_tensor_free(&y3);
            if (!same) break;
        }
    ss_tensor_free(&x);
    ss_tensor_free(&scale);
    ss_tensor_free(&bias);
}

TEST_MAIN(TEST(test_large_plans_split_match_one_thread),
          TEST(test_row_parallel_ops_match_one_thread))
