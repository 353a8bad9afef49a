/*
 * The random ops (ops/random.c): RandomUniform, RandomNormal, their Like forms, Bernoulli and
 * Multinomial. Their draws cannot be compared with another runtime's, so the checks are what the
 * spec promises: range, moments and frequencies over 200,000 draws (bounds at 6 or more standard
 * errors, so a correct kernel fails about once in 10^8 runs), dtypes and shapes, attribute errors,
 * and, through sessions on models (argv[1], tests/onnx/make_models.py), that a seeded model
 * repeats its sequence in every session, across re-plans, while consecutive runs differ and
 * constant-shaped draws are not folded into constants.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "op_harness.h"
#include "shardserve/runtime.h"

#define N_DRAWS 200000

static double mean_of(const ss_tensor *t)
{
    double s = 0;
    int64_t n = ss_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        s += ss_tensor_elem_f64(t, i);
    return s / (double)n;
}

static double var_of(const ss_tensor *t, double mean)
{
    double s = 0;
    int64_t n = ss_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        double d = ss_tensor_elem_f64(t, i) - mean;
        s += d * d;
    }
    return s / (double)(n - 1);
}

static void test_uniform_range_and_moments(void)
{
    int64_t shape[] = {400, N_DRAWS / 400};
    tnode t;
    tnode_init(&t, "RandomUniform");
    attr_ints(&t, "shape", shape, 2);
    attr_float(&t, "low", -2.0f);
    attr_float(&t, "high", 3.0f);
    attr_float(&t, "seed", 1.5f);
    ss_tensor y;
    CHECK_OK(op_run(&t, 17, 0, NULL, 1, &y, NULL));
    CHECK(y.dtype == SS_DT_FLOAT32 && y.ndim == 2 && y.dims[0] == 400 && y.dims[1] == 500);
    const float *v = y.data;
    int bad = 0, low_half = 0;
    for (int64_t i = 0; i < N_DRAWS; i++) {
        bad += !(v[i] >= -2.0f && v[i] < 3.0f);
        low_half += v[i] < 0.5f;
    }
    CHECK_MSG(bad == 0, "%d draws outside [-2, 3)", bad);
    /* mean 0.5, variance 25/12; standard errors 0.0032 and 0.0066 */
    double m = mean_of(&y);
    CHECK_NEAR(m, 0.5, 0.03);
    CHECK_NEAR(var_of(&y, m), 25.0 / 12.0, 0.05);
    CHECK_NEAR((double)low_half / N_DRAWS, 0.5, 0.007);
    ss_tensor_free(&y);

    /* double output, low == high: every draw is low */
    tnode_init(&t, "RandomUniform");
    int64_t s3[] = {3};
    attr_ints(&t, "shape", s3, 1);
    attr_int(&t, "dtype", SS_DT_FLOAT64);
    attr_float(&t, "low", 7.0f);
    attr_float(&t, "high", 7.0f);
    CHECK_OK(op_run(&t, 17, 0, NULL, 1, &y, NULL));
    CHECK(y.dtype == SS_DT_FLOAT64 && ((double *)y.data)[0] == 7.0 && ((double *)y.data)[2] == 7.0);
    ss_tensor_free(&y);
}

static void test_normal_moments_and_shape_of_like(void)
{
    int64_t dims[] = {N_DRAWS};
    ss_tensor x = make(SS_DT_FLOAT16, 1, dims, NULL);
    ss_tensor *in[] = {&x};
    tnode t;
    tnode_init(&t, "RandomNormalLike");
    attr_float(&t, "mean", 1.0f);
    attr_float(&t, "scale", 2.0f);
    attr_int(&t, "dtype", SS_DT_FLOAT64);
    ss_tensor y;
    CHECK_OK(op_run(&t, 17, 1, in, 1, &y, NULL));
    CHECK(y.dtype == SS_DT_FLOAT64 && y.ndim == 1 && y.dims[0] == N_DRAWS);
    double m = mean_of(&y), sd = sqrt(var_of(&y, m));
    CHECK_NEAR(m, 1.0, 0.03);   /* standard error 0.0045 */
    CHECK_NEAR(sd, 2.0, 0.025); /* standard error 0.0032 */
    int within = 0, tail = 0;
    for (int64_t i = 0; i < N_DRAWS; i++) {
        double z = (((double *)y.data)[i] - 1.0) / 2.0;
        within += fabs(z) < 1.0;
        tail += z > 2.0;
    }
    CHECK_NEAR((double)within / N_DRAWS, 0.682689, 0.007);
    CHECK_NEAR((double)tail / N_DRAWS, 0.022750, 0.002);
    ss_tensor_free(&y);

    /* without dtype the output is the input's type */
    tnode_init(&t, "RandomNormalLike");
    CHECK_OK(op_run(&t, 17, 1, in, 1, &y, NULL));
    CHECK(y.dtype == SS_DT_FLOAT16 && y.dims[0] == N_DRAWS);
    ss_tensor_free(&y);
    ss_tensor_free(&x);

    /* an integer input needs a dtype */
    int64_t d2[] = {2, 2};
    ss_tensor xi = make(SS_DT_INT64, 2, d2, NULL);
    in[0] = &xi;
    tnode_init(&t, "RandomUniformLike");
    CHECK_ERR(op_run(&t, 17, 1, in, 1, &y, NULL), "'dtype'");
    tnode_init(&t, "RandomUniformLike");
    attr_int(&t, "dtype", SS_DT_FLOAT32);
    CHECK_OK(op_run(&t, 17, 1, in, 1, &y, NULL));
    CHECK(y.dtype == SS_DT_FLOAT32 && y.ndim == 2 && y.dims[1] == 2);
    ss_tensor_free(&y);
    ss_tensor_free(&xi);
}

static void test_seed_repeats_and_differs(void)
{
    int64_t shape[] = {64};
    ss_tensor a[3];
    for (int r = 0; r < 3; r++) {
        tnode t;
        tnode_init(&t, "RandomNormal");
        attr_ints(&t, "shape", shape, 1);
        if (r < 2) attr_float(&t, "seed", 11.0f);
        CHECK_OK(op_run(&t, 17, 0, NULL, 1, &a[r], NULL));
    }
    CHECK(!memcmp(a[0].data, a[1].data, a[0].nbytes)); /* the same seed, the same draws */
    CHECK(memcmp(a[0].data, a[2].data, a[0].nbytes));  /* no seed: fresh entropy */
    for (int r = 0; r < 3; r++)
        ss_tensor_free(&a[r]);
}

static void test_random_attribute_errors(void)
{
    tnode t;
    ss_tensor y;
    tnode_init(&t, "RandomUniform");
    CHECK_ERR(op_run(&t, 17, 0, NULL, 1, &y, NULL), "'shape' is required");
    int64_t neg[] = {2, -1};
    tnode_init(&t, "RandomUniform");
    attr_ints(&t, "shape", neg, 2);
    CHECK_ERR(op_run(&t, 17, 0, NULL, 1, &y, NULL), "negative");
    int64_t ok[] = {2};
    tnode_init(&t, "RandomUniform");
    attr_ints(&t, "shape", ok, 1);
    attr_float(&t, "low", 1.0f);
    attr_float(&t, "high", 0.0f);
    CHECK_ERR(op_run(&t, 17, 0, NULL, 1, &y, NULL), "low <= high");
    tnode_init(&t, "RandomNormal");
    attr_ints(&t, "shape", ok, 1);
    attr_int(&t, "dtype", SS_DT_INT32);
    CHECK_ERR(op_run(&t, 17, 0, NULL, 1, &y, NULL), "'dtype'");
    tnode_init(&t, "RandomNormal");
    attr_ints(&t, "shape", ok, 1);
    attr_float(&t, "scale", INFINITY);
    CHECK_ERR(op_run(&t, 17, 0, NULL, 1, &y, NULL), "finite");
}

static void test_bernoulli_frequencies_and_types(void)
{
    int64_t dims[] = {N_DRAWS};
    ss_tensor p = make(SS_DT_FLOAT64, 1, dims, NULL);
    double *pv = p.data;
    /* a third each: p = 0, p = 1 (and above), p = 0.3 */
    for (int64_t i = 0; i < N_DRAWS; i++)
        pv[i] = i % 3 == 0 ? 0.0 : i % 3 == 1 ? (i % 2 ? 1.0 : 1.5) : 0.3;
    pv[0] = NAN;
    ss_tensor *in[] = {&p};
    tnode t;
    tnode_init(&t, "Bernoulli");
    attr_float(&t, "seed", 2.0f);
    attr_int(&t, "dtype", SS_DT_BOOL);
    ss_tensor y;
    CHECK_OK(op_run(&t, 15, 1, in, 1, &y, NULL));
    CHECK(y.dtype == SS_DT_BOOL && y.dims[0] == N_DRAWS);
    const uint8_t *b = y.data;
    int wrong = 0, ones = 0, thirds = 0;
    for (int64_t i = 0; i < N_DRAWS; i++) {
        if (i % 3 == 0) wrong += b[i] != 0;
        if (i % 3 == 1) wrong += b[i] != 1;
        if (i % 3 == 2) ones += b[i], thirds++;
    }
    CHECK_MSG(wrong == 0, "%d draws of p = 0, NaN or >= 1 came out wrong", wrong);
    CHECK_NEAR((double)ones / thirds, 0.3, 0.012); /* standard error 0.0018 */
    ss_tensor_free(&y);

    /* default output type: the input's */
    tnode_init(&t, "Bernoulli");
    CHECK_OK(op_run(&t, 15, 1, in, 1, &y, NULL));
    CHECK(y.dtype == SS_DT_FLOAT64 && ((double *)y.data)[1] == 1.0 && ((double *)y.data)[3] == 0);
    ss_tensor_free(&y);
    ss_tensor_free(&p);

    ss_tensor pi = make(SS_DT_INT32, 1, dims, NULL);
    in[0] = &pi;
    tnode_init(&t, "Bernoulli");
    CHECK_ERR(op_run(&t, 15, 1, in, 1, &y, NULL), "int32");
    ss_tensor_free(&pi);
}

static void test_multinomial_frequencies(void)
{
    /* row 0: probabilities 0.1, 0.2, 0, 0.7 (class 2 -inf); row 1: one class only */
    int64_t dims[] = {2, 4};
    float logits[] = {logf(0.1f), logf(0.2f), -INFINITY, logf(0.7f),
                      -INFINITY,  5.0f,       -INFINITY, NAN};
    ss_tensor x = make(SS_DT_FLOAT32, 2, dims, logits);
    ss_tensor *in[] = {&x};
    tnode t;
    tnode_init(&t, "Multinomial");
    attr_int(&t, "sample_size", N_DRAWS);
    attr_int(&t, "dtype", SS_DT_INT64);
    attr_float(&t, "seed", 9.0f);
    ss_tensor y;
    CHECK_OK(op_run(&t, 7, 1, in, 1, &y, NULL));
    CHECK(y.dtype == SS_DT_INT64 && y.ndim == 2 && y.dims[0] == 2 && y.dims[1] == N_DRAWS);
    const int64_t *c = y.data;
    int64_t count[4] = {0}, other = 0;
    for (int64_t s = 0; s < N_DRAWS; s++) {
        if (c[s] >= 0 && c[s] < 4) count[c[s]]++;
        other += c[N_DRAWS + s] != 1;
    }
    CHECK_MSG(count[2] == 0, "a class of probability 0 was drawn %lld times", (long long)count[2]);
    CHECK_MSG(other == 0, "row 1 drew %lld times outside its one finite class", (long long)other);
    CHECK_NEAR((double)count[0] / N_DRAWS, 0.1, 0.005); /* standard errors <= 0.001 */
    CHECK_NEAR((double)count[1] / N_DRAWS, 0.2, 0.006);
    CHECK_NEAR((double)count[3] / N_DRAWS, 0.7, 0.006);
    ss_tensor_free(&y);

    /* default dtype int32; a row with no finite logit is an error naming the row */
    float dead[] = {0.0f, 1.0f, -INFINITY, NAN};
    int64_t d2[] = {2, 2};
    ss_tensor xd = make(SS_DT_FLOAT32, 2, d2, dead);
    in[0] = &xd;
    tnode_init(&t, "Multinomial");
    CHECK_ERR(op_run(&t, 7, 1, in, 1, &y, NULL), "row 1");
    ss_tensor_free(&y);
    tnode_init(&t, "Multinomial");
    attr_int(&t, "sample_size", 0);
    CHECK_ERR(op_run(&t, 7, 1, in, 1, &y, NULL), "'sample_size'");
    ss_tensor_free(&xd);
    tnode_init(&t, "Multinomial");
    in[0] = &x;
    CHECK_OK(op_run(&t, 7, 1, in, 1, &y, NULL));
    CHECK(y.dtype == SS_DT_INT32 && y.dims[1] == 1);
    ss_tensor_free(&y);
    ss_tensor_free(&x);
}

/* ------------------------------------------------------------------ sessions */

typedef struct {
    float n[3][8]; /* RandomNormalLike over runs of x[4], x[4], x[6] */
    float u[3][1000];
} draws;

static void session_draws(const char *model, draws *d)
{
    ss_session *s = NULL;
    CHECK_OK(ss_session_create(model, NULL, &s));
    if (!s) return;
    static const int lens[3] = {4, 4, 6};
    for (int r = 0; r < 3; r++) {
        int64_t dims[] = {lens[r]};
        ss_tensor x = make(SS_DT_FLOAT32, 1, dims, NULL);
        const ss_tensor *outs = NULL;
        CHECK_OK(ss_session_run(s, &x, 1, &outs));
        if (outs) {
            CHECK(outs[0].dims[0] == lens[r] && outs[1].dims[0] == 1000);
            memcpy(d->n[r], outs[0].data, outs[0].nbytes);
            memcpy(d->u[r], outs[1].data, outs[1].nbytes);
        }
        ss_tensor_free(&x);
    }
    ss_session_free(s);
}

static void test_sessions_repeat_seeded_sequences(void)
{
    if (test_argc < 2) {
        CHECK_MSG(0, "usage: test_ops_random MODELS_DIR");
        return;
    }
    char path[4096];
    draws a = {0}, b = {0}, c = {0}, e = {0};
    snprintf(path, sizeof path, "%s/random_seeded.onnx", test_argv[1]);
    session_draws(path, &a);
    session_draws(path, &b);
    /* every session draws the same sequence, the re-plan for x[6] included */
    CHECK(!memcmp(&a, &b, sizeof a));
    /* consecutive runs differ: the run count advances, and the constant-shaped u is drawn at
     * every run rather than folded once */
    CHECK(memcmp(a.n[0], a.n[1], 4 * sizeof(float)));
    CHECK(memcmp(a.u[0], a.u[1], sizeof a.u[0]));
    CHECK(memcmp(a.u[1], a.u[2], sizeof a.u[1]));
    /* the third run (after the re-plan) is not the first run again */
    CHECK(memcmp(a.n[0], a.n[2], 4 * sizeof(float)));
    snprintf(path, sizeof path, "%s/random_unseeded.onnx", test_argv[1]);
    session_draws(path, &c);
    session_draws(path, &e);
    CHECK(memcmp(c.u[0], e.u[0], sizeof c.u[0]));
    CHECK(memcmp(c.n[0], e.n[0], 4 * sizeof(float)));
}

TEST_MAIN(TEST(test_uniform_range_and_moments), TEST(test_normal_moments_and_shape_of_like),
          TEST(test_seed_repeats_and_differs), TEST(test_random_attribute_errors),
          TEST(test_bernoulli_frequencies_and_types), TEST(test_multinomial_frequencies),
          TEST(test_sessions_repeat_seeded_sequences))
