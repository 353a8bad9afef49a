/*
 * Conv on oneDNN (ops/conv.c -> ops/onednn.c) against the own im2col kernel (which the ONNX
 * node conformance cases check): 1-D, 2-D and 3-D, strides, dilations, asymmetric and SAME pads,
 * groups, depthwise, with and without bias, batch 2, NaN garbage in the output buffer. Each case
 * must really run on oneDNN (its call counter), agree with the own kernel, and not allocate in
 * our code on its second run.
 */
#include <cblas.h>

#include "gemm_kernel.h"
#include "isa.h"
#include "onednn.h"
#define OP_HARNESS_COUNT_ALLOCS
#include "op_harness.h"

typedef struct {
    const char *what;
    int nsp;
    int64_t N, C, M, group;
    int64_t in[3], k[3];
    int64_t strides[3], dil[3], pads[6];
    const char *auto_pad; /* NULL: explicit pads */
    bool bias;
} conv_case;

static ss_status *run_conv(const conv_case *c, ss_tensor **in, int n_in, ss_kernels mode,
                           ss_tensor *out)
{
    tnode t;
    tnode_init(&t, "Conv");
    int n = c->nsp;
    if (c->group > 1) attr_int(&t, "group", c->group);
    attr_ints(&t, "strides", (int64_t *)c->strides, (size_t)n);
    attr_ints(&t, "dilations", (int64_t *)c->dil, (size_t)n);
    if (c->auto_pad)
        attr_str(&t, "auto_pad", c->auto_pad);
    else
        attr_ints(&t, "pads", (int64_t *)c->pads, (size_t)(2 * n));
    ss_kernels_force(mode);
    ss_status *st =
        op_run(&t, 13, n_in, in, 1, out,
               &(op_run_opts){.poison = true,
                              .check_allocs = mode == SS_KERNELS_ONEDNN || mode == SS_KERNELS_OWN});
    ss_kernels_force(SS_KERNELS_AUTO);
    return st;
}

static void check_case(const conv_case *c)
{
    int nd = c->nsp + 2;
    int64_t xd[5] = {c->N, c->C}, wd[5] = {c->M, c->C / c->group}, bd[1] = {c->M};
    for (int i = 0; i < c->nsp; i++)
        xd[2 + i] = c->in[i], wd[2 + i] = c->k[i];
    ss_tensor x = make_rand(SS_DT_FLOAT32, nd, xd), w = make_rand(SS_DT_FLOAT32, nd, wd),
              b = make_rand(SS_DT_FLOAT32, 1, bd), own, dnnl;
    ss_tensor *in[3] = {&x, &w, &b};
    int n_in = c->bias ? 3 : 2;
    CHECK_OK(run_conv(c, in, n_in, SS_KERNELS_OWN, &own));
    unsigned long before = ss_dnnl_conv_calls();
    ss_status *st = run_conv(c, in, n_in, SS_KERNELS_ONEDNN, &dnnl);
    CHECK_MSG(!st, "%s: %s", c->what, st ? st->msg : "");
    ss_status_free(st);
    CHECK_MSG(ss_dnnl_conv_calls() == before + 2, "%s: oneDNN ran %lu times, want 2", c->what,
              ss_dnnl_conv_calls() - before);
    int64_t n = ss_tensor_numel(&own);
    CHECK_MSG(!st && ss_tensor_numel(&dnnl) == n, "%s: output sizes differ", c->what);
    int bad = 0;
    for (int64_t i = 0; !st && i < n && !bad; i++) {
        float a = ((float *)own.data)[i], g = ((float *)dnnl.data)[i];
        if (!(fabsf(a - g) <= 1e-4f * (1.0f + fabsf(a)))) {
            fprintf(stderr, "%s: element %lld is %.7g, own kernel %.7g\n", c->what, (long long)i, g,
                    a);
            bad = 1;
        }
    }
    CHECK(!bad);
    ss_tensor_free(&own);
    ss_tensor_free(&dnnl);
    ss_tensor_free(&x);
    ss_tensor_free(&w);
    ss_tensor_free(&b);
}

static void test_conv_cases_match_own_kernel(void)
{
    static const conv_case cases[] = {
        {"2-D 3x3 pad 1 bias",
         2,
         2,
         16,
         32,
         1,
         {14, 13},
         {3, 3},
         {1, 1},
         {1, 1},
         {1, 1, 1, 1},
         NULL,
         true},
        {"2-D stride 2 asymmetric pads",
         2,
         1,
         8,
         24,
         1,
         {17, 15},
         {3, 2},
         {2, 2},
         {1, 1},
         {0, 1, 2, 0},
         NULL,
         true},
        {"2-D dilation 2 no bias",
         2,
         2,
         12,
         20,
         1,
         {16, 16},
         {3, 3},
         {1, 1},
         {2, 2},
         {2, 2, 2, 2},
         NULL,
         false},
        {"2-D SAME_UPPER stride 2",
         2,
         1,
         16,
         16,
         1,
         {15, 15},
         {3, 3},
         {2, 2},
         {1, 1},
         {0},
         "SAME_UPPER",
         true},
        {"2-D groups 4",
         2,
         2,
         32,
         64,
         4,
         {12, 12},
         {3, 3},
         {1, 1},
         {1, 1},
         {1, 1, 1, 1},
         NULL,
         true},
        {"2-D depthwise",
         2,
         1,
         32,
         32,
         32,
         {20, 20},
         {3, 3},
         {1, 1},
         {1, 1},
         {1, 1, 1, 1},
         NULL,
         true},
        {"2-D 1x1", 2, 2, 64, 48, 1, {14, 14}, {1, 1}, {1, 1}, {1, 1}, {0, 0, 0, 0}, NULL, true},
        {"1-D k5 stride 2", 1, 2, 16, 24, 1, {50}, {5}, {2}, {1}, {2, 1}, NULL, true},
        {"3-D 3x3x3",
         3,
         1,
         8,
         16,
         1,
         {6, 8, 8},
         {3, 3, 3},
         {1, 1, 1},
         {1, 1, 1},
         {1, 1, 1, 1, 1, 1},
         NULL,
         true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(&cases[i]);
}

/* 3x3 stride-1 Convs of 64+ channels and 14x14+ outputs run on Winograd where oneDNN has it
 * (AVX-512): same bound against the own kernel, and the Winograd primitive really ran. */
static void test_winograd_cases_match_own_kernel(void)
{
    static const conv_case cases[] = {
        {"Winograd 64 -> 64, 16x16, bias",
         2,
         1,
         64,
         64,
         1,
         {16, 16},
         {3, 3},
         {1, 1},
         {1, 1},
         {1, 1, 1, 1},
         NULL,
         true},
        {"Winograd 96 -> 80, 15x17 batch 2, no bias",
         2,
         2,
         96,
         80,
         1,
         {15, 17},
         {3, 3},
         {1, 1},
         {1, 1},
         {1, 1, 1, 1},
         NULL,
         false},
    };
    unsigned long before = ss_dnnl_conv_winograd_calls();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(&cases[i]);
    unsigned long ran = ss_dnnl_conv_winograd_calls() - before;
    if (ss_isa_detect() >= SS_ISA_AVX512)
        CHECK_MSG(ran == 4, "Winograd ran %lu times, want 4 (2 cases x 2 runs)", ran);
    else
        fprintf(stderr, "note: no AVX-512: oneDNN has no Winograd here, the Convs ran direct\n");
}

/* The own depthwise loop (one channel per group) on every ISA variant this CPU has (isa.h)
 * against oneDNN: widths that leave vector tails (37, 19), stride 2, dilation 2, a 5x5 kernel,
 * asymmetric pads, 1-D, a row narrower than the kernel (3-tap rows have no interior). */
static void test_depthwise_every_isa_matches_onednn(void)
{
    static const conv_case cases[] = {
        {"dw 3x3 odd width", 2, 2, 24, 24, 24, {13, 37}, {3, 3}, {1, 1}, {1, 1}, {1, 1, 1, 1}},
        {"dw 3x3 stride 2", 2, 1, 16, 16, 16, {19, 37}, {3, 3}, {2, 2}, {1, 1}, {0, 1, 1, 0}},
        {"dw 5x5 dilation 2", 2, 1, 8, 8, 8, {21, 19}, {5, 5}, {1, 1}, {2, 2}, {4, 3, 4, 5}},
        {"dw 1-D k7", 1, 2, 12, 12, 12, {67}, {7}, {1}, {1}, {3, 3}},
        {"dw 3x3 40ch (split over threads)",
         2,
         1,
         40,
         40,
         40,
         {33, 29},
         {3, 3},
         {1, 1},
         {1, 1},
         {1, 1, 1, 1}},
        {"dw 3x3 narrower than the kernel",
         2,
         1,
         4,
         4,
         4,
         {5, 2},
         {3, 3},
         {1, 1},
         {1, 1},
         {1, 1, 1, 1}},
        {"dw 3x3 stride 2 dilation 2",
         2,
         1,
         8,
         8,
         8,
         {23, 23},
         {3, 3},
         {2, 2},
         {2, 2},
         {2, 1, 2, 3}},
    };
    ss_isa best = ss_isa_detect();
    if (best < SS_ISA_AVX512)
        fprintf(stderr, "note: this CPU runs up to %s; wider variants are not tested here\n",
                ss_isa_name(best));
    for (int level = (int)best; level >= SS_ISA_BASE; level--) {
        CHECK(ss_isa_force((ss_isa)level) == (ss_isa)level);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            conv_case c = cases[i];
            c.bias = i % 2 == 0;
            /* one thread, then channels split over 3 (the larger cases pass the threshold) */
            for (int threads = 1; threads <= 3; threads += 2) {
                openblas_set_num_threads(threads);
                check_case(&c);
            }
        }
    }
    openblas_set_num_threads(1);
    ss_isa_force(best);
}

/* Whether run_conv under `mode` ran the own register-tile GEMM (gemm_kernel.h call counter). */
static bool ran_own_gemm(const conv_case *c, ss_tensor **in, int n_in, ss_kernels mode,
                         ss_tensor *out)
{
    ss_gemm_variant v = ss_gemm_pick();
    unsigned long before = ss_gemm_calls(v);
    CHECK_OK(run_conv(c, in, n_in, mode, out));
    return v != SS_GEMM_BLAS && ss_gemm_calls(v) != before;
}

/* A pointwise Conv on the own GEMM straight on NCHW (no im2col): under own always, under auto
 * for maps of >= 64 positions and M <= 256 (conv.c: pw_own_wins); equal to OpenBLAS's sgemm,
 * grouped and batched too, and no allocation per run. */
static void test_pointwise_own_gemm_matches_blas(void)
{
    static const struct {
        conv_case c;
        bool auto_own;
    } cases[] = {
        {{"1x1 64->48 14x14 batch 2", 2, 2, 64, 48, 1, {14, 14}, {1, 1}, {1, 1}, {1, 1}}, true},
        {{"1x1 16->32 48x48 no bias", 2, 1, 16, 32, 1, {48, 48}, {1, 1}, {1, 1}, {1, 1}}, true},
        {{"1x1 grouped 300->20 9x9", 2, 2, 300, 20, 2, {9, 9}, {1, 1}, {1, 1}, {1, 1}}, true},
        {{"1x1 1-D 40->24 width 70", 1, 1, 40, 24, 1, {70}, {1}, {1}, {1}}, true},
        {{"1x1 SE 96->24 1x1", 2, 1, 96, 24, 1, {1, 1}, {1, 1}, {1, 1}, {1, 1}}, false},
        {{"1x1 384->384 4x4", 2, 1, 384, 384, 1, {4, 4}, {1, 1}, {1, 1}, {1, 1}}, false},
        {{"1x1 20->300 10x10", 2, 1, 20, 300, 1, {10, 10}, {1, 1}, {1, 1}, {1, 1}}, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        conv_case c = cases[i].c;
        c.bias = i != 1;
        int nd = c.nsp + 2;
        int64_t xd[5] = {c.N, c.C}, wd[5] = {c.M, c.C / c.group, 1, 1}, bd[1] = {c.M};
        for (int d = 0; d < c.nsp; d++)
            xd[2 + d] = c.in[d];
        ss_tensor x = make_rand(SS_DT_FLOAT32, nd, xd), w = make_rand(SS_DT_FLOAT32, nd, wd),
                  b = make_rand(SS_DT_FLOAT32, 1, bd), blas, own, au;
        ss_tensor *in[3] = {&x, &w, &b};
        int n_in = c.bias ? 3 : 2;
        CHECK_OK(run_conv(&c, in, n_in, SS_KERNELS_BLAS, &blas));
        CHECK_MSG(ran_own_gemm(&c, in, n_in, SS_KERNELS_OWN, &own) ==
                      (ss_gemm_pick() != SS_GEMM_BLAS),
                  "%s: own mode did not run the own GEMM", c.what);
        /* pw_own_wins decides only without the layout pass; with it (the default) auto leaves a
         * pointwise Conv on oneDNN where oneDNN takes it (conv.c: pw_chained) */
        ss_layout_enable(false);
        CHECK_MSG(ran_own_gemm(&c, in, n_in, SS_KERNELS_AUTO, &au) ==
                      (cases[i].auto_own && ss_gemm_pick() != SS_GEMM_BLAS),
                  "%s: auto %s the own GEMM", c.what, cases[i].auto_own ? "skipped" : "took");
        ss_layout_enable(true);
        ss_tensor chained;
        unsigned long dnnl_before = ss_dnnl_conv_calls();
        CHECK_OK(run_conv(&c, in, n_in, SS_KERNELS_AUTO, &chained));
        CHECK_MSG(!cases[i].auto_own || ss_dnnl_conv_calls() != dnnl_before,
                  "%s: with the layout pass, auto did not run oneDNN", c.what);
        for (int64_t j = 0, bad = 0; j < ss_tensor_numel(&blas) && !bad; j++) {
            float r = ((float *)blas.data)[j], o = ((float *)own.data)[j],
                  a = ((float *)au.data)[j], h = ((float *)chained.data)[j];
            bad = !(fabsf(r - o) <= 1e-4f * (1.0f + fabsf(r))) ||
                  !(fabsf(r - a) <= 1e-4f * (1.0f + fabsf(r))) ||
                  !(fabsf(r - h) <= 1e-4f * (1.0f + fabsf(r)));
            CHECK_MSG(!bad, "%s: element %lld: sgemm %.7g, own %.7g, auto %.7g / %.7g", c.what,
                      (long long)j, r, o, a, h);
        }
        ss_tensor *ts[] = {&x, &w, &b, &blas, &own, &au, &chained};
        for (size_t j = 0; j < sizeof ts / sizeof ts[0]; j++)
            ss_tensor_free(ts[j]);
    }
}

TEST_MAIN(TEST(test_conv_cases_match_own_kernel), TEST(test_winograd_cases_match_own_kernel),
          TEST(test_depthwise_every_isa_matches_onednn), TEST(test_pointwise_own_gemm_matches_blas))
