/*
 * float16 and bfloat16 Conv, ConvTranspose, MaxPool, AveragePool and the global pools (ops/conv.c
 * through common.c's float32 copies): each must equal the float32 op run on the same values,
 * rounded once to the half type, and not allocate on its second run. A mismatched W type is an
 * error naming the inputs.
 */
#include "onednn.h"
#define OP_HARNESS_COUNT_ALLOCS
#include "op_harness.h"

typedef struct {
    const char *op;
    int64_t x[4], w[4]; /* w[0] == 0: no weights */
    bool bias, depthwise, ceil;
} half_case;

static const half_case cases[] = {
    {"Conv", {2, 3, 9, 7}, {4, 3, 3, 3}, true, false, false},
    {"Conv", {1, 4, 6, 6}, {4, 1, 3, 3}, false, true, false},
    {"ConvTranspose", {1, 3, 5, 4}, {3, 2, 3, 3}, true, false, false},
    {"MaxPool", {1, 3, 7, 9}, {0}, false, false, true},
    {"AveragePool", {2, 2, 6, 5}, {0}, false, false, false},
    {"GlobalAveragePool", {1, 3, 5, 5}, {0}, false, false, false},
    {"GlobalMaxPool", {1, 3, 5, 5}, {0}, false, false, false},
};

static uint16_t to_half(ss_dtype dt, float v)
{
    return dt == SS_DT_FLOAT16 ? ss_f32_to_f16(v) : ss_f32_to_bf16(v);
}

static float from_half(ss_dtype dt, uint16_t h)
{
    return dt == SS_DT_FLOAT16 ? ss_f16_to_f32(h) : ss_bf16_to_f32(h);
}

/* f: random float32 values that the half type holds exactly; h: the same values as dt. */
static void make_pair(ss_dtype dt, int nd, const int64_t *dims, ss_tensor *f, ss_tensor *h)
{
    *f = make_rand(SS_DT_FLOAT32, nd, dims);
    *h = make(dt, nd, dims, NULL);
    for (int64_t i = 0; i < ss_tensor_numel(f); i++) {
        uint16_t v = to_half(dt, ((float *)f->data)[i]);
        ((uint16_t *)h->data)[i] = v;
        ((float *)f->data)[i] = from_half(dt, v);
    }
}

static ss_status *run_case(const half_case *c, ss_tensor **in, int n_in, ss_tensor *out)
{
    tnode t;
    tnode_init(&t, c->op);
    int64_t two[2] = {2, 2}, pads[4] = {1, 0, 0, 1};
    if (!strcmp(c->op, "MaxPool") || !strcmp(c->op, "AveragePool")) {
        attr_ints(&t, "kernel_shape", two, 2);
        attr_ints(&t, "strides", two, 2);
        attr_int(&t, "ceil_mode", c->ceil);
    }
    if (c->w[0]) attr_ints(&t, "pads", pads, 4);
    if (c->depthwise) attr_int(&t, "group", c->x[1]);
    ss_kernels_force(SS_KERNELS_OWN); /* both runs on the same float32 kernel */
    ss_status *st = op_run(&t, 13, n_in, in, 1, out, &(op_run_opts){.check_allocs = true});
    ss_kernels_force(SS_KERNELS_AUTO);
    return st;
}

static void check_case(const half_case *c, ss_dtype dt)
{
    ss_tensor f[3], h[3], want, got;
    int64_t bd[1] = {c->w[0]};
    if (!strcmp(c->op, "ConvTranspose")) bd[0] = c->w[1];
    int n_in = 1 + (c->w[0] > 0) + c->bias;
    make_pair(dt, 4, c->x, &f[0], &h[0]);
    if (c->w[0]) make_pair(dt, 4, c->w, &f[1], &h[1]);
    if (c->bias) make_pair(dt, 1, bd, &f[2], &h[2]);
    ss_tensor *fin[3] = {&f[0], &f[1], &f[2]}, *hin[3] = {&h[0], &h[1], &h[2]};
    CHECK_OK(run_case(c, fin, n_in, &want));
    ss_status *st = run_case(c, hin, n_in, &got);
    CHECK_MSG(!st, "%s %s: %s", c->op, ss_dtype_name(dt), st ? st->msg : "");
    ss_status_free(st);
    CHECK_MSG(!st && got.dtype == dt && ss_tensor_numel(&got) == ss_tensor_numel(&want),
              "%s %s: wrong output", c->op, ss_dtype_name(dt));
    for (int64_t i = 0, bad = 0; !st && !bad && i < ss_tensor_numel(&want); i++) {
        uint16_t w = to_half(dt, ((float *)want.data)[i]), g = ((uint16_t *)got.data)[i];
        bad = w != g;
        CHECK_MSG(!bad, "%s %s element %lld: %g, float32 rounded %g", c->op, ss_dtype_name(dt),
                  (long long)i, from_half(dt, g), from_half(dt, w));
    }
    for (int i = 0; i < n_in; i++)
        ss_tensor_free(&f[i]), ss_tensor_free(&h[i]);
    ss_tensor_free(&want);
    ss_tensor_free(&got);
}

static void half_matches_float32_rounded(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_case(&cases[i], SS_DT_FLOAT16);
        check_case(&cases[i], SS_DT_BFLOAT16);
    }
}

static void mixed_types_are_refused(void)
{
    int64_t xd[4] = {1, 2, 4, 4}, wd[4] = {2, 2, 3, 3};
    ss_tensor x = make(SS_DT_FLOAT16, 4, xd, NULL), w = make_rand(SS_DT_FLOAT32, 4, wd), y;
    ss_tensor *in[2] = {&x, &w};
    tnode t;
    tnode_init(&t, "Conv");
    CHECK_ERR(op_run(&t, 13, 2, in, 1, &y, NULL), "input 1 is float32, input 0 float16");
    ss_tensor_free(&x);
    ss_tensor_free(&w);
}

TEST_MAIN(TEST(half_matches_float32_rounded), TEST(mixed_types_are_refused))
