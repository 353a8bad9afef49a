/*
 * ConvInteger (ops/conv.c, im2col + float64 gemm in blocks of output rows) and MatMulInteger
 * (ops/quant.c, one float64 gemm per batch) against Conv and MatMul in float64 on the same
 * zero-point-shifted values, which is exact here: 1-D, 2-D, 3-D, strides, dilations, pads, groups,
 * uint8 and int8, per-channel weight zero points, an output wider than one gemm block, broadcast
 * matmul batches. The int32 sums must be equal, and run must not allocate.
 */
#include "quant.h"
#define OP_HARNESS_COUNT_ALLOCS
#include "op_harness.h"

typedef struct {
    int nsp;
    int64_t N, C, M, group, in[3], k[3], s[3], d[3], pads[6];
    ss_dtype xdt, wdt;
    bool w_per_channel;
} qcase;

static const qcase cases[] = {
    {2, 1, 3, 8, 1, {33, 29}, {3, 3}, {2, 2}, {1, 1}, {1, 1, 1, 1}, SS_DT_UINT8, SS_DT_UINT8, 0},
    {2, 2, 4, 6, 2, {9, 11}, {3, 2}, {1, 2}, {2, 1}, {2, 0, 1, 1}, SS_DT_INT8, SS_DT_UINT8, 1},
    {2, 1, 2, 2, 1, {3, 9000}, {1, 3}, {1, 1}, {1, 1}, {0, 1, 0, 1}, SS_DT_UINT8, SS_DT_INT8, 1},
    {1, 1, 5, 3, 1, {40}, {4}, {3}, {1}, {0, 2}, SS_DT_UINT8, SS_DT_UINT8, 0},
    {3,
     1,
     2,
     3,
     1,
     {4, 5, 6},
     {2, 2, 3},
     {1, 2, 1},
     {1, 1, 2},
     {1, 0, 1, 0, 1, 2},
     SS_DT_INT8,
     SS_DT_INT8,
     0},
    {2, 1, 4, 4, 4, {6, 6}, {3, 3}, {1, 1}, {1, 1}, {1, 1, 1, 1}, SS_DT_UINT8, SS_DT_UINT8, 1},
};

/* A random 8-bit tensor and its values minus zero point zp (one per slice of `per` elements
 * when zp has several) as float64. */
static void make_q(ss_dtype dt, int nd, const int64_t *dims, const ss_tensor *zp, int64_t per,
                   ss_tensor *q, ss_tensor *shifted)
{
    *q = make(dt, nd, dims, NULL);
    *shifted = make(SS_DT_FLOAT64, nd, dims, NULL);
    for (int64_t i = 0; i < ss_tensor_numel(q); i++) {
        int v = dt == SS_DT_UINT8 ? (int)((urand() + 1) * 127.99) : (int)(urand() * 127.99);
        ss_quant_store(q->data, i, dt, v);
        double z = ss_tensor_elem_f64(zp, ss_tensor_numel(zp) > 1 ? i / per : 0);
        ((double *)shifted->data)[i] = ss_tensor_elem_f64(q, i) - z;
    }
}

static ss_tensor make_zp(ss_dtype dt, int64_t n)
{
    int64_t dims[1] = {n};
    ss_tensor t = make(dt, n > 1 ? 1 : 0, dims, NULL);
    for (int64_t i = 0; i < n; i++)
        ss_quant_store(t.data, i, dt, dt == SS_DT_UINT8 ? 100 + 20 * urand() : 20 * urand());
    return t;
}

static void check_sums(const char *what, const ss_tensor *want, const ss_tensor *got);

static ss_status *run(const char *op, const qcase *c, int n_in, ss_tensor **in, ss_tensor *out)
{
    tnode t;
    tnode_init(&t, op);
    attr_int(&t, "group", c->group);
    attr_ints(&t, "strides", (int64_t *)c->s, (size_t)c->nsp);
    attr_ints(&t, "dilations", (int64_t *)c->d, (size_t)c->nsp);
    attr_ints(&t, "pads", (int64_t *)c->pads, (size_t)(2 * c->nsp));
    return op_run(&t, 13, n_in, in, 1, out, &(op_run_opts){.check_allocs = true});
}

static void check_case(int ci, const qcase *c)
{
    int nd = c->nsp + 2;
    int64_t xd[5] = {c->N, c->C}, wd[5] = {c->M, c->C / c->group};
    for (int i = 0; i < c->nsp; i++)
        xd[2 + i] = c->in[i], wd[2 + i] = c->k[i];
    ss_tensor xz = make_zp(c->xdt, 1), wz = make_zp(c->wdt, c->w_per_channel ? c->M : 1);
    ss_tensor x, xf, w, wf, want, got;
    make_q(c->xdt, nd, xd, &xz, 1, &x, &xf);
    make_q(c->wdt, nd, wd, &wz, ss_shape_numel(nd, wd) / c->M, &w, &wf);
    ss_tensor *fin[2] = {&xf, &wf}, *qin[4] = {&x, &w, &xz, &wz};
    CHECK_OK(run("Conv", c, 2, fin, &want));
    CHECK_OK(run("ConvInteger", c, 4, qin, &got));
    char what[32];
    snprintf(what, sizeof what, "ConvInteger case %d", ci);
    check_sums(what, &want, &got);
    ss_tensor *all[] = {&x, &xf, &w, &wf, &xz, &wz, &want, &got};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ss_tensor_free(all[i]);
}

static void convinteger_equals_exact_float64_conv(void)
{
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++)
        check_case(i, &cases[i]);
}

/* Equal int32 sums in got and float64 ones in want. */
static void check_sums(const char *what, const ss_tensor *want, const ss_tensor *got)
{
    CHECK_MSG(got->dtype == SS_DT_INT32 && ss_tensor_numel(got) == ss_tensor_numel(want),
              "%s: wrong output", what);
    for (int64_t i = 0, bad = 0; !bad && got->data && i < ss_tensor_numel(want); i++) {
        double a = ((double *)want->data)[i], g = ((int32_t *)got->data)[i];
        bad = a != g;
        CHECK_MSG(!bad, "%s element %lld: %g, expected %g", what, (long long)i, g, a);
    }
}

static void matmulinteger_equals_exact_float64_matmul(void)
{
    /* A [3, 1, 5, 40] x B [2, 40, 7]: batch dims broadcast to [3, 2]; B's zero point per column */
    int64_t ad[4] = {3, 1, 5, 40}, bd[3] = {2, 40, 7};
    ss_tensor az = make_zp(SS_DT_UINT8, 1), bz = make_zp(SS_DT_INT8, 7), a, af, b, bf, want, got;
    make_q(SS_DT_UINT8, 4, ad, &az, 1, &a, &af);
    make_q(SS_DT_INT8, 3, bd, &bz, ss_shape_numel(3, bd), &b, &bf); /* redone below */
    for (int64_t i = 0; i < ss_tensor_numel(&b); i++) /* zero point per column: index % 7 */
        ((double *)bf.data)[i] = ss_tensor_elem_f64(&b, i) - ss_tensor_elem_f64(&bz, i % 7);
    ss_tensor *fin[2] = {&af, &bf}, *qin[4] = {&a, &b, &az, &bz};
    tnode t;
    tnode_init(&t, "MatMul");
    CHECK_OK(op_run(&t, 13, 2, fin, 1, &want, NULL));
    tnode_init(&t, "MatMulInteger");
    CHECK_OK(op_run(&t, 13, 4, qin, 1, &got, &(op_run_opts){.check_allocs = true}));
    check_sums("MatMulInteger", &want, &got);
    ss_tensor *all[] = {&a, &af, &b, &bf, &az, &bz, &want, &got};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ss_tensor_free(all[i]);
}

TEST_MAIN(TEST(convinteger_equals_exact_float64_conv),
          TEST(matmulinteger_equals_exact_float64_matmul))
