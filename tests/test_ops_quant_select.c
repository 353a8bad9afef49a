/*
 * The quantization, data-dependent and index ops (ops/quant.c, select.c, scatter.c) beyond what
 * the ONNX node cases cover: per-block quantization (opset 21), the actual shape a data-dependent
 * op reports after its run, kernels that allocate nothing, and bad input refused with the input
 * or index named, never a crash.
 */
#define OP_HARNESS_COUNT_ALLOCS
#include "op_harness.h"
#include "ops/isa.h"

#include <math.h>

static const op_run_opts no_alloc = {.check_allocs = true};

/* QuantizeLinear with block_size 2 along axis 1: each pair of columns has its own scale. */
static void quantize_per_block(void)
{
    ss_tensor x = make(SS_DT_FLOAT32, 2, (int64_t[]){2, 4}, (float[]){1, 2, 3, 4, -1, -2, -3, -4}),
              s = make(SS_DT_FLOAT32, 2, (int64_t[]){2, 2}, (float[]){1, 2, 0.5f, 4}),
              z = make(SS_DT_INT8, 2, (int64_t[]){2, 2}, (int8_t[]){0, 1, 0, -1}), out[1];
    ss_tensor *in[3] = {&x, &s, &z};
    tnode t;
    tnode_init(&t, "QuantizeLinear");
    attr_int(&t, "axis", 1);
    attr_int(&t, "block_size", 2);
    CHECK_OK(op_run(&t, 21, 3, in, 1, out, &no_alloc));
    /* round-half-even of x/s, plus z: [1,2 | 2,3] and [-2,-4 | -2,-2] */
    static const int8_t want[8] = {1, 2, 3, 3, -2, -4, -2, -2};
    if (out[0].data) CHECK(memcmp(out[0].data, want, 8) == 0);
    ss_tensor_free(&out[0]);
    tnode_init(&t, "QuantizeLinear");
    attr_int(&t, "axis", 1);
    attr_int(&t, "block_size", 3); /* 4 columns need 2 blocks of 3, the scale has 2: fine */
    CHECK_OK(op_run(&t, 21, 3, in, 1, out, NULL));
    ss_tensor_free(&out[0]);
    tnode_init(&t, "QuantizeLinear");
    attr_int(&t, "axis", 1);
    attr_int(&t, "block_size", 1);
    CHECK_ERR(op_run(&t, 21, 3, in, 1, out, NULL), "does not fit block_size 1");
    ss_tensor_free(&x), ss_tensor_free(&s), ss_tensor_free(&z);
}

/* NonZero's buffer is sized for every element; run reports the real count. */
/* float32 to uint8 with one scale (quant.c: dynq_store, compiled per ISA): round half to even,
 * saturation at both ends, NaN and -inf to 0, +inf to 255, -0 to the zero point; 37 values (two
 * 16-lane vectors and a tail) at every ISA level. */
static void quantize_u8_saturates_every_isa(void)
{
    float xv[37];
    uint8_t want[37];
    static const float edge[8] = {NAN, INFINITY, -INFINITY, -0.0f, 1e30f, -1e30f, 0.25f, 0.75f};
    static const uint8_t edge_want[8] = {0, 255, 0, 10, 255, 0, 10, 12};
    for (int i = 0; i < 37; i++) {
        xv[i] = i < 8 ? edge[i] : (float)(i - 20) * 13.0f; /* -156 .. 208, scale 0.5: saturates */
        long q = i < 8 ? 0 : lrintf(xv[i] / 0.5f) + 10;
        want[i] = i < 8 ? edge_want[i] : (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
    }
    ss_tensor x = make(SS_DT_FLOAT32, 1, (int64_t[]){37}, xv),
              s = make(SS_DT_FLOAT32, 0, NULL, (float[]){0.5f}),
              z = make(SS_DT_UINT8, 0, NULL, (uint8_t[]){10}), out[1];
    ss_tensor *in[3] = {&x, &s, &z};
    ss_isa best = ss_isa_detect();
    for (int level = (int)best; level >= SS_ISA_BASE; level--) {
        CHECK(ss_isa_force((ss_isa)level) == (ss_isa)level);
        tnode t;
        tnode_init(&t, "QuantizeLinear");
        CHECK_OK(op_run(&t, 13, 3, in, 1, out, &no_alloc));
        CHECK_MSG(out[0].data && memcmp(out[0].data, want, 37) == 0, "uint8 values at %s",
                  ss_isa_name((ss_isa)level));
        ss_tensor_free(&out[0]);
    }
    ss_isa_force(best);
    ss_tensor_free(&x);
    ss_tensor_free(&s);
    ss_tensor_free(&z);
}

static void nonzero_reports_its_shape(void)
{
    ss_tensor x = make(SS_DT_INT32, 2, (int64_t[]){2, 3}, (int32_t[]){0, 5, 0, 7, 0, 9}), out[1];
    ss_tensor *in[1] = {&x};
    tnode t;
    tnode_init(&t, "NonZero");
    CHECK_OK(op_run(&t, 13, 1, in, 1, out, &no_alloc));
    CHECK(out[0].ndim == 2 && out[0].dims[0] == 2 && out[0].dims[1] == 3);
    static const int64_t want[6] = {0, 1, 1, 1, 0, 2};
    if (out[0].data) CHECK(memcmp(out[0].data, want, sizeof want) == 0);
    ss_tensor_free(&out[0]);
    ss_tensor_free(&x);
}

/* TopK reads K from its input; a K past the axis is refused. */
static void topk_checks_k_at_run_time(void)
{
    ss_tensor x = make(SS_DT_FLOAT32, 1, (int64_t[]){3}, (float[]){1, 3, 2}),
              kk = make(SS_DT_INT64, 1, (int64_t[]){1}, (int64_t[]){2}), out[2];
    ss_tensor *in[2] = {&x, &kk};
    tnode t;
    tnode_init(&t, "TopK");
    CHECK_OK(op_run(&t, 11, 2, in, 2, out, &no_alloc));
    CHECK(out[0].dims[0] == 2 && ((float *)out[0].data)[0] == 3 && ((float *)out[0].data)[1] == 2);
    CHECK(((int64_t *)out[1].data)[0] == 1 && ((int64_t *)out[1].data)[1] == 2);
    ss_tensor_free(&out[0]), ss_tensor_free(&out[1]);
    ((int64_t *)kk.data)[0] = 4;
    CHECK_ERR(op_run(&t, 11, 2, in, 2, out, NULL), "k = 4 for an axis of 3");
    ss_tensor_free(&out[0]), ss_tensor_free(&out[1]);
    ss_tensor_free(&x), ss_tensor_free(&kk);
}

static void scatter_and_gather_refuse_bad_indices(void)
{
    ss_tensor x = make(SS_DT_FLOAT32, 2, (int64_t[]){2, 2}, (float[]){1, 2, 3, 4}),
              idx = make(SS_DT_INT64, 2, (int64_t[]){1, 2}, (int64_t[]){0, 5}),
              upd = make(SS_DT_FLOAT32, 2, (int64_t[]){1, 2}, (float[]){9, 9}),
              big = make(SS_DT_INT64, 2, (int64_t[]){1, 3}, (int64_t[]){0, 0, 0}),
              bigu = make(SS_DT_FLOAT32, 2, (int64_t[]){1, 3}, NULL), out[1];
    ss_tensor *in[3] = {&x, &idx, &upd};
    tnode t;
    tnode_init(&t, "ScatterElements");
    CHECK_ERR(op_run(&t, 13, 3, in, 1, out, NULL), "index 5 (element 1 of indices)");
    ss_tensor_free(&out[0]);
    in[1] = &big, in[2] = &bigu;
    CHECK_ERR(op_run(&t, 13, 3, in, 1, out, NULL), "indices dim 1 (3) exceeds data's (2)");
    ss_tensor_free(&out[0]);
    ((int64_t *)idx.data)[1] = -1; /* a negative index counts from the end: row 1 */
    in[1] = &idx, in[2] = &upd;
    CHECK_OK(op_run(&t, 13, 3, in, 1, out, &no_alloc));
    static const float want[4] = {9, 2, 3, 9};
    if (out[0].data) CHECK(memcmp(out[0].data, want, sizeof want) == 0);
    ss_tensor_free(&out[0]);
    tnode_init(&t, "GatherND");
    attr_int(&t, "batch_dims", 2);
    CHECK_ERR(op_run(&t, 13, 2, in, 1, out, NULL), "batch_dims 2");
    ss_tensor_free(&out[0]);
    ss_tensor_free(&x), ss_tensor_free(&idx), ss_tensor_free(&upd), ss_tensor_free(&big),
        ss_tensor_free(&bigu);
}

static void qlinearmatmul_refuses_per_row_scale_of_wrong_length(void)
{
    ss_tensor a = make(SS_DT_UINT8, 2, (int64_t[]){2, 3}, NULL),
              b = make(SS_DT_UINT8, 2, (int64_t[]){3, 2}, NULL),
              sc = make(SS_DT_FLOAT32, 0, NULL, (float[]){1}),
              sc3 = make(SS_DT_FLOAT32, 1, (int64_t[]){3}, (float[]){1, 1, 1}),
              zp = make(SS_DT_UINT8, 0, NULL, NULL), out[1];
    ss_tensor *in[8] = {&a, &sc3, &zp, &b, &sc, &zp, &sc, &zp};
    tnode t;
    tnode_init(&t, "QLinearMatMul");
    CHECK_ERR(op_run(&t, 10, 8, in, 1, out, NULL), "a_scale has 3 values, expected 1 or 2");
    ss_tensor_free(&out[0]);
    in[1] = &sc;
    CHECK_OK(op_run(&t, 10, 8, in, 1, out, &no_alloc));
    CHECK(out[0].dtype == SS_DT_UINT8 && out[0].dims[0] == 2 && out[0].dims[1] == 2);
    ss_tensor_free(&out[0]);
    ss_tensor_free(&a), ss_tensor_free(&b), ss_tensor_free(&sc), ss_tensor_free(&sc3),
        ss_tensor_free(&zp);
}

TEST_MAIN(TEST(quantize_per_block), TEST(quantize_u8_saturates_every_isa),
          TEST(nonzero_reports_its_shape), TEST(topk_checks_k_at_run_time),
          TEST(scatter_and_gather_refuse_bad_indices),
          TEST(qlinearmatmul_refuses_per_row_scale_of_wrong_length))
