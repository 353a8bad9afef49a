/*
 * MaxPool, AveragePool (with and without count_include_pad), GlobalAveragePool and GlobalMaxPool
 * (ops/conv.c) on every ISA variant this CPU has (isa.h) against a direct per-window reference
 * in double: odd widths that leave vector tails, strides, asymmetric pads, planes whose length
 * is not a multiple of the global pool's 8 partial sums, NaN garbage in the output buffer.
 */
#include "isa.h"
#include "op_harness.h"

typedef struct {
    const char *what, *op;
    int64_t C, H, W, kh, kw, sh, sw;
    int64_t pads[4]; /* top, left, bottom, right */
    bool include_pad;
} pool_case;

/* One output element of the reference: the window's max, or its mean over the taps inside the
 * image (all taps, padding included, with include_pad). */
static double ref_window(const pool_case *c, const float *plane, int64_t oh, int64_t ow)
{
    bool is_max = strstr(c->op, "MaxPool") != NULL;
    double acc = is_max ? -INFINITY : 0;
    int64_t inside = 0, padded = 0;
    for (int64_t i = 0; i < c->kh; i++)
        for (int64_t j = 0; j < c->kw; j++) {
            int64_t h = oh * c->sh - c->pads[0] + i, w = ow * c->sw - c->pads[1] + j;
            if (h < c->H + c->pads[2] && w < c->W + c->pads[3]) padded++;
            if (h < 0 || w < 0 || h >= c->H || w >= c->W) continue;
            double v = plane[h * c->W + w];
            acc = is_max ? (v > acc ? v : acc) : acc + v;
            inside++;
        }
    return is_max ? acc : acc / (double)(c->include_pad ? padded : inside);
}

static bool global_op(const pool_case *c)
{
    return strncmp(c->op, "Global", 6) == 0;
}

static void check_pool(const pool_case *c, ss_isa level)
{
    int64_t xd[4] = {2, c->C, c->H, c->W};
    ss_tensor x = make_rand(SS_DT_FLOAT32, 4, xd), y;
    ss_tensor *in[1] = {&x};
    tnode t;
    tnode_init(&t, c->op);
    int64_t k[2] = {c->kh, c->kw}, s[2] = {c->sh, c->sw}; /* the attributes point here */
    if (!global_op(c)) {
        attr_ints(&t, "kernel_shape", k, 2);
        attr_ints(&t, "strides", s, 2);
        attr_ints(&t, "pads", (int64_t *)c->pads, 4);
        if (c->include_pad) attr_int(&t, "count_include_pad", 1);
    }
    ss_status *st = op_run(&t, 13, 1, in, 1, &y, &(op_run_opts){.poison = true});
    CHECK_MSG(!st, "%s: %s", c->what, st ? st->msg : "");
    ss_status_free(st);
    int64_t oh_n = st ? 0 : y.dims[2], ow_n = st ? 0 : y.dims[3], bad = 0;
    for (int64_t pl = 0; pl < 2 * c->C && !bad; pl++)
        for (int64_t oh = 0; oh < oh_n && !bad; oh++)
            for (int64_t ow = 0; ow < ow_n && !bad; ow++) {
                const float *plane = (const float *)x.data + pl * c->H * c->W;
                double want = ref_window(c, plane, oh, ow);
                float got = ((float *)y.data)[(pl * oh_n + oh) * ow_n + ow];
                if (!(fabs(got - want) <= 1e-6 * (1 + fabs(want)))) {
                    fprintf(stderr, "%s (%s): plane %lld (%lld, %lld) is %.7g, want %.7g\n",
                            c->what, ss_isa_name(level), (long long)pl, (long long)oh,
                            (long long)ow, got, want);
                    bad = 1;
                }
            }
    CHECK(!bad);
    if (!st) ss_tensor_free(&y);
    ss_tensor_free(&x);
}

static void test_pools_every_isa_match_reference(void)
{
    static const pool_case cases[] = {
        {"max 3x3/2 pad 1", "MaxPool", 5, 19, 37, 3, 3, 2, 2, {1, 1, 1, 1}, false},
        {"max 2x2/2 odd", "MaxPool", 3, 17, 23, 2, 2, 2, 2, {0, 0, 0, 0}, false},
        {"max 3x1/1 asymmetric", "MaxPool", 4, 9, 35, 3, 1, 1, 1, {2, 0, 0, 0}, false},
        {"avg 3x3/1 pad 1", "AveragePool", 3, 13, 29, 3, 3, 1, 1, {1, 1, 1, 1}, false},
        {"avg 3x3/2 include pad", "AveragePool", 3, 14, 21, 3, 3, 2, 2, {1, 0, 1, 1}, true},
        {"global avg 7x11", "GlobalAveragePool", 6, 7, 11, 7, 11, 1, 1, {0}, false},
        {"global avg 1x3", "GlobalAveragePool", 9, 1, 3, 1, 3, 1, 1, {0}, false},
        {"global max 5x13", "GlobalMaxPool", 4, 5, 13, 5, 13, 1, 1, {0}, false},
    };
    ss_isa best = ss_isa_detect();
    if (best < SS_ISA_AVX512)
        fprintf(stderr, "note: this CPU runs up to %s; wider variants are not tested here\n",
                ss_isa_name(best));
    for (int level = (int)best; level >= SS_ISA_BASE; level--) {
        CHECK(ss_isa_force((ss_isa)level) == (ss_isa)level);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            check_pool(&cases[i], (ss_isa)level);
    }
    ss_isa_force(best);
}

TEST_MAIN(TEST(test_pools_every_isa_match_reference))
