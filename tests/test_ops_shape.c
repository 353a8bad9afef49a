/*
 * Shape, movement and generate ops, called through the op table the way the planner calls them
 * (infer, then run on buffers of the inferred size). Covers what the ONNX node cases do not: the
 * blocked transpose paths at every element size and at sizes that are not multiples of the tile,
 * Slice clamping at int64 extremes, negative and int32 indices, bool data, zero-size dims,
 * data-dependent shapes reported as UNSUPPORTED, and bad input reported as errors.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "op_harness.h"

/* ------------------------------------------------------------------ running ops */

/* infer + run; allocates the outputs (caller frees them). */
static ss_status *run_op(tnode *t, int64_t opset, int n_in, ss_tensor **in, int n_out,
                         ss_tensor *out)
{
    return op_run(t, opset, n_in, in, n_out, out, NULL);
}

static ss_tensor make_i64(int n, const int64_t *v)
{
    int64_t d[1] = {n};
    return make(SS_DT_INT64, 1, d, v);
}

/* Fills with a pattern unique per element and element size. */
static void pattern(ss_tensor *t)
{
    size_t es = ss_dtype_size(t->dtype);
    unsigned char *p = t->data;
    for (size_t i = 0; i < t->nbytes; i++)
        p[i] = (unsigned char)(i * 131 + i / es * 7 + 1);
}

static bool shape_is(const ss_tensor *t, int nd, const int64_t *dims)
{
    return ss_shape_equal(t->ndim, t->dims, nd, dims);
}

/* ------------------------------------------------------------------ Transpose */

static void ref_transpose(const ss_tensor *x, const int *perm, ss_tensor *ref)
{
    int nd = x->ndim;
    int64_t od[SS_MAX_DIMS], xs[SS_MAX_DIMS], s = 1;
    for (int i = nd - 1; i >= 0; i--)
        xs[i] = s, s *= x->dims[i];
    for (int i = 0; i < nd; i++)
        od[i] = x->dims[perm[i]];
    *ref = make(x->dtype, nd, od, NULL);
    size_t es = ss_dtype_size(x->dtype);
    int64_t idx[SS_MAX_DIMS] = {0}, n = ss_tensor_numel(ref);
    for (int64_t o = 0; o < n; o++) {
        int64_t src = 0;
        for (int i = 0; i < nd; i++)
            src += idx[i] * xs[perm[i]];
        memcpy((char *)ref->data + o * (int64_t)es, (const char *)x->data + src * (int64_t)es, es);
        for (int i = nd - 1; i >= 0 && ++idx[i] == od[i]; i--)
            idx[i] = 0;
    }
}

static void check_transpose(ss_dtype dt, int nd, const int64_t *dims, const int *perm)
{
    tnode t;
    tnode_init(&t, "Transpose");
    int64_t p64[SS_MAX_DIMS];
    for (int i = 0; i < nd; i++)
        p64[i] = perm[i];
    attr_ints(&t, "perm", p64, (size_t)nd);
    ss_tensor x = make(dt, nd, dims, NULL), out, ref;
    pattern(&x);
    ss_tensor *in[1] = {&x};
    CHECK_OK(run_op(&t, 13, 1, in, 1, &out));
    ref_transpose(&x, perm, &ref);
    char sh[64];
    CHECK_MSG(ss_shape_equal(out.ndim, out.dims, ref.ndim, ref.dims) && out.nbytes == ref.nbytes &&
                  memcmp(out.data, ref.data, ref.nbytes) == 0,
              "transpose %s of %s differs", ss_dtype_name(dt),
              ss_shape_str(nd, dims, sh, sizeof sh));
    ss_tensor_free(&x);
    ss_tensor_free(&out);
    ss_tensor_free(&ref);
}

static void test_transpose_fast_paths_match_reference(void)
{
    static const ss_dtype types[] = {SS_DT_BOOL, SS_DT_FLOAT16, SS_DT_FLOAT32, SS_DT_INT64};
    for (int ti = 0; ti < 4; ti++) {
        ss_dtype dt = types[ti];
        check_transpose(dt, 4, (int64_t[]){2, 37, 3, 5}, (int[]){0, 2, 1, 3}); /* heads split */
        check_transpose(dt, 4, (int64_t[]){2, 37, 3, 5}, (int[]){0, 2, 3, 1}); /* keys^T */
        check_transpose(dt, 2, (int64_t[]){67, 45}, (int[]){1, 0});            /* blocked 2-D */
        check_transpose(dt, 2, (int64_t[]){1, 45}, (int[]){1, 0});
        check_transpose(dt, 3, (int64_t[]){3, 4, 5}, (int[]){2, 0, 1});
        check_transpose(dt, 3, (int64_t[]){3, 4, 5}, (int[]){1, 2, 0});
        check_transpose(dt, 5, (int64_t[]){2, 3, 1, 4, 2}, (int[]){4, 2, 0, 3, 1});
        check_transpose(dt, 3, (int64_t[]){3, 0, 5}, (int[]){2, 1, 0}); /* empty */
        check_transpose(dt, 0, (int64_t[]){0}, (int[]){0});             /* scalar */
    }
    check_transpose(SS_DT_FLOAT32, 2, (int64_t[]){300, 129}, (int[]){1, 0});
}

static void test_transpose_rejects_bad_perm(void)
{
    tnode t;
    tnode_init(&t, "Transpose");
    int64_t perm[3] = {0, 0, 1};
    attr_ints(&t, "perm", perm, 3);
    ss_tensor x = make(SS_DT_FLOAT32, 3, (int64_t[]){2, 2, 2}, NULL), out[1];
    ss_tensor *in[1] = {&x};
    CHECK_ERR(run_op(&t, 13, 1, in, 1, out), "repeats");
    ss_tensor_free(&x);
}

/* ------------------------------------------------------------------ Reshape family */

static void test_reshape_zero_and_inferred_dims(void)
{
    float v[24];
    for (int i = 0; i < 24; i++)
        v[i] = (float)i;
    ss_tensor x = make(SS_DT_FLOAT32, 3, (int64_t[]){2, 3, 4}, v), out[1];
    ss_tensor shape = make_i64(3, (int64_t[]){0, -1, 2});
    ss_tensor *in[2] = {&x, &shape};
    tnode t;
    tnode_init(&t, "Reshape");
    CHECK_OK(run_op(&t, 13, 2, in, 1, out));
    CHECK(shape_is(&out[0], 3, (int64_t[]){2, 6, 2}));
    CHECK(memcmp(out[0].data, v, sizeof v) == 0);
    ss_tensor_free(&out[0]);
    /* allowzero=1: a 0 is a real zero-size dim, which 24 elements cannot fill */
    attr_int(&t, "allowzero", 1);
    CHECK_ERR(run_op(&t, 14, 2, in, 1, out), "cannot infer");
    ss_tensor_free(&shape);
    /* two -1 */
    shape = make_i64(2, (int64_t[]){-1, -1});
    tnode_init(&t, "Reshape");
    CHECK_ERR(run_op(&t, 13, 2, in, 1, out), "more than one -1");
    ss_tensor_free(&shape);
    shape = make_i64(2, (int64_t[]){5, 5});
    CHECK_ERR(run_op(&t, 13, 2, in, 1, out), "cannot reshape [2,3,4]");
    ss_tensor_free(&shape);
    ss_tensor_free(&x);
}

static void test_value_only_known_at_run_time_is_unsupported(void)
{
    ss_tensor x = make(SS_DT_FLOAT32, 2, (int64_t[]){2, 3}, NULL), out[1];
    ss_tensor shape = {.dtype = SS_DT_INT64, .ndim = 1, .dims = {2}}; /* no data: run-time value */
    ss_tensor *in[5] = {&x, &shape, &shape, NULL, NULL};
    const char *ops[] = {"Reshape", "Expand", "Tile"};
    for (int i = 0; i < 3; i++) {
        tnode t;
        tnode_init(&t, ops[i]);
        CHECK_ERR(run_op(&t, 13, 2, in, 1, out), "data-dependent output shape");
    }
    tnode t;
    tnode_init(&t, "Slice");
    CHECK_ERR(run_op(&t, 13, 3, in, 1, out), "data-dependent output shape");
    ss_tensor_free(&x);
}

static void test_squeeze_unsqueeze_axes_attribute_and_input(void)
{
    ss_tensor x = make(SS_DT_INT64, 3, (int64_t[]){1, 3, 1}, (int64_t[]){7, 8, 9}), out[1];
    ss_tensor *in[2] = {&x, NULL};
    tnode t;
    tnode_init(&t, "Squeeze");
    CHECK_OK(run_op(&t, 11, 1, in, 1, out)); /* no axes: every 1 goes */
    CHECK(shape_is(&out[0], 1, (int64_t[]){3}));
    ss_tensor_free(&out[0]);
    int64_t ax[1] = {-1};
    attr_ints(&t, "axes", ax, 1);
    CHECK_OK(run_op(&t, 11, 1, in, 1, out));
    CHECK(shape_is(&out[0], 2, (int64_t[]){1, 3}));
    ss_tensor_free(&out[0]);
    ss_tensor axes = make_i64(1, (int64_t[]){1});
    in[1] = &axes;
    tnode_init(&t, "Squeeze");
    CHECK_ERR(run_op(&t, 13, 2, in, 1, out), "cannot squeeze axis 1");
    ss_tensor_free(&axes);
    axes = make_i64(2, (int64_t[]){-1, 0});
    tnode_init(&t, "Unsqueeze");
    CHECK_OK(run_op(&t, 13, 2, in, 1, out));
    CHECK(shape_is(&out[0], 5, (int64_t[]){1, 1, 3, 1, 1}));
    CHECK(((int64_t *)out[0].data)[2] == 9);
    ss_tensor_free(&out[0]);
    ss_tensor_free(&axes);
    ss_tensor_free(&x);
}

static void test_shape_start_end_and_size(void)
{
    ss_tensor x = {.dtype = SS_DT_FLOAT32, .ndim = 4, .dims = {2, 3, 5, 7}},
              out[1]; /* no data needed */
    ss_tensor *in[1] = {&x};
    tnode t;
    tnode_init(&t, "Shape");
    attr_int(&t, "start", -3);
    attr_int(&t, "end", 100);
    CHECK_OK(run_op(&t, 15, 1, in, 1, out));
    CHECK(shape_is(&out[0], 1, (int64_t[]){3}));
    CHECK(memcmp(out[0].data, (int64_t[]){3, 5, 7}, 24) == 0);
    ss_tensor_free(&out[0]);
    tnode_init(&t, "Size");
    CHECK_OK(run_op(&t, 13, 1, in, 1, out));
    CHECK(out[0].ndim == 0 && *(int64_t *)out[0].data == 210);
    ss_tensor_free(&out[0]);
}

static void test_expand_broadcasts_both_ways(void)
{
    ss_tensor x = make(SS_DT_UINT8, 2, (int64_t[]){3, 1}, (uint8_t[]){1, 2, 3}), out[1];
    ss_tensor shape = make_i64(3, (int64_t[]){2, 1, 4});
    ss_tensor *in[2] = {&x, &shape};
    tnode t;
    tnode_init(&t, "Expand");
    CHECK_OK(run_op(&t, 13, 2, in, 1, out));
    CHECK(shape_is(&out[0], 3, (int64_t[]){2, 3, 4}));
    const uint8_t *o = out[0].data;
    CHECK(o[0] == 1 && o[3] == 1 && o[4] == 2 && o[11] == 3 && o[12] == 1 && o[23] == 3);
    ss_tensor_free(&out[0]);
    ss_tensor_free(&shape);
    shape = make_i64(2, (int64_t[]){2, 2});
    CHECK_ERR(run_op(&t, 13, 2, in, 1, out), "do not broadcast");
    ss_tensor_free(&shape);
    ss_tensor_free(&x);
}

/* ------------------------------------------------------------------ Slice, Gather */

static void test_slice_clamps_and_negative_steps_on_bool(void)
{
    uint8_t v[20];
    for (int i = 0; i < 20; i++)
        v[i] = (uint8_t)(i % 3 == 0);
    ss_tensor x = make(SS_DT_BOOL, 2, (int64_t[]){4, 5}, v), out[1];
    ss_tensor starts = make_i64(2, (int64_t[]){INT64_MAX, -100});
    ss_tensor ends = make_i64(2, (int64_t[]){INT64_MIN, INT64_MAX});
    ss_tensor axes = make_i64(2, (int64_t[]){0, -1});
    ss_tensor steps = make_i64(2, (int64_t[]){-2, 3});
    ss_tensor *in[5] = {&x, &starts, &ends, &axes, &steps};
    tnode t;
    tnode_init(&t, "Slice");
    CHECK_OK(run_op(&t, 13, 5, in, 1, out));
    /* rows 3, 1; columns 0, 3 */
    CHECK(shape_is(&out[0], 2, (int64_t[]){2, 2}));
    const uint8_t *o = out[0].data;
    CHECK(o[0] == v[15] && o[1] == v[18] && o[2] == v[5] && o[3] == v[8]);
    ss_tensor_free(&out[0]);
    ss_tensor_free(&steps);
    int64_t zero[2] = {1, 0};
    steps = make_i64(2, zero);
    CHECK_ERR(run_op(&t, 13, 5, in, 1, out), "step 0");
    ss_tensor_free(&steps);
    /* empty result: start past end with a positive step */
    ss_tensor s2 = make_i64(1, (int64_t[]){3}), e2 = make_i64(1, (int64_t[]){1});
    ss_tensor *in2[3] = {&x, &s2, &e2};
    CHECK_OK(run_op(&t, 13, 3, in2, 1, out));
    CHECK(shape_is(&out[0], 2, (int64_t[]){0, 5}));
    ss_tensor_free(&out[0]);
    ss_tensor_free(&s2);
    ss_tensor_free(&e2);
    ss_tensor_free(&starts);
    ss_tensor_free(&ends);
    ss_tensor_free(&axes);
    ss_tensor_free(&x);
}

static void test_gather_negative_int32_indices_and_range_error(void)
{
    float v[6] = {0, 1, 2, 10, 11, 12};
    ss_tensor x = make(SS_DT_FLOAT32, 2, (int64_t[]){2, 3}, v), out[1];
    ss_tensor ix = make(SS_DT_INT32, 2, (int64_t[]){2, 2}, (int32_t[]){-1, 0, 2, 1});
    ss_tensor *in[2] = {&x, &ix};
    tnode t;
    tnode_init(&t, "Gather");
    attr_int(&t, "axis", -1);
    CHECK_OK(run_op(&t, 13, 2, in, 1, out));
    CHECK(shape_is(&out[0], 3, (int64_t[]){2, 2, 2}));
    const float *o = out[0].data;
    CHECK(o[0] == 2 && o[1] == 0 && o[2] == 2 && o[3] == 1 && o[4] == 12 && o[7] == 11);
    ss_tensor_free(&out[0]);
    ((int32_t *)ix.data)[3] = 3;
    ss_status *st = run_op(&t, 13, 2, in, 1, out);
    CHECK(st && strstr(st->msg, "out of range"));
    ss_status_free(st);
    ss_tensor_free(&out[0]);
    ss_tensor_free(&ix);
    ss_tensor_free(&x);
}

/* ------------------------------------------------------------------ Concat, Split, Tile, Pad */

static void test_concat_split_round_trip(void)
{
    int16_t a[6] = {1, 2, 3, 4, 5, 6}, b[2] = {7, 8};
    ss_tensor x = make(SS_DT_INT16, 2, (int64_t[]){2, 3}, a),
              y = make(SS_DT_INT16, 2, (int64_t[]){2, 1}, b);
    ss_tensor e = make(SS_DT_INT16, 2, (int64_t[]){2, 0}, NULL), out[3];
    ss_tensor *in[3] = {&x, &e, &y};
    tnode t;
    tnode_init(&t, "Concat");
    attr_int(&t, "axis", -1);
    CHECK_OK(run_op(&t, 13, 3, in, 1, out));
    CHECK(shape_is(&out[0], 2, (int64_t[]){2, 4}));
    CHECK(memcmp(out[0].data, (int16_t[]){1, 2, 3, 7, 4, 5, 6, 8}, 16) == 0);
    ss_tensor cat = out[0];
    ss_tensor split = make_i64(2, (int64_t[]){3, 1});
    ss_tensor *sin[2] = {&cat, &split};
    tnode_init(&t, "Split");
    attr_int(&t, "axis", 1);
    CHECK_OK(run_op(&t, 13, 2, sin, 2, out));
    CHECK(memcmp(out[0].data, a, 12) == 0 && memcmp(out[1].data, b, 4) == 0);
    ss_tensor_free(&out[0]);
    ss_tensor_free(&out[1]);
    /* no split input: equal parts, and uneven sizes are an error before opset 18 */
    CHECK_OK(run_op(&t, 13, 1, sin, 2, out));
    CHECK(shape_is(&out[1], 2, (int64_t[]){2, 2}));
    ss_tensor_free(&out[0]);
    ss_tensor_free(&out[1]);
    CHECK_ERR(run_op(&t, 13, 1, sin, 3, out), "does not split evenly");
    ss_tensor_free(&split);
    ss_tensor_free(&cat);
    ss_tensor_free(&x);
    ss_tensor_free(&y);
    ss_tensor_free(&e);
}

static void test_tile_and_pad_modes(void)
{
    int64_t v[4] = {1, 2, 3, 4};
    ss_tensor x = make(SS_DT_INT64, 2, (int64_t[]){2, 2}, v), out[1];
    ss_tensor reps = make_i64(2, (int64_t[]){2, 3});
    ss_tensor *in[3] = {&x, &reps, NULL};
    tnode t;
    tnode_init(&t, "Tile");
    CHECK_OK(run_op(&t, 13, 2, in, 1, out));
    CHECK(shape_is(&out[0], 2, (int64_t[]){4, 6}));
    const int64_t *o = out[0].data;
    CHECK(o[0] == 1 && o[1] == 2 && o[2] == 1 && o[5] == 2 && o[6] == 3 && o[23] == 4);
    ss_tensor_free(&out[0]);
    ss_tensor_free(&reps);

    ss_tensor pads = make_i64(4, (int64_t[]){0, 2, 0, -1}); /* 2 before on axis 1, crop 1 after */
    in[1] = &pads;
    static const char *modes[3] = {"reflect", "edge", "constant"};
    static const int64_t want[3][6] = {{1, 2, 1, 3, 4, 3}, {1, 1, 1, 3, 3, 3}, {9, 9, 1, 9, 9, 3}};
    ss_tensor cv = make(SS_DT_INT64, 0, NULL, (int64_t[]){9});
    for (int m = 0; m < 3; m++) {
        tnode_init(&t, "Pad");
        attr_str(&t, "mode", modes[m]);
        in[2] = m == 2 ? &cv : NULL;
        CHECK_OK(run_op(&t, 13, 3, in, 1, out));
        CHECK(shape_is(&out[0], 2, (int64_t[]){2, 3}));
        CHECK_MSG(memcmp(out[0].data, want[m], sizeof want[m]) == 0, "mode %s", modes[m]);
        ss_tensor_free(&out[0]);
    }
    tnode_init(&t, "Pad");
    attr_str(&t, "mode", "wrap");
    CHECK_ERR(run_op(&t, 13, 2, in, 1, out), "mode 'wrap'");
    ss_tensor_free(&cv);
    ss_tensor_free(&pads);
    ss_tensor_free(&x);
}

/* ------------------------------------------------------------------ generate */

static void test_range_constant_of_shape_eyelike(void)
{
    ss_tensor s = make(SS_DT_INT32, 0, NULL, (int32_t[]){10}),
              l = make(SS_DT_INT32, 0, NULL, (int32_t[]){-3});
    ss_tensor d = make(SS_DT_INT32, 0, NULL, (int32_t[]){-4}), out[1];
    ss_tensor *in[3] = {&s, &l, &d};
    tnode t;
    tnode_init(&t, "Range");
    CHECK_OK(run_op(&t, 11, 3, in, 1, out));
    CHECK(shape_is(&out[0], 1, (int64_t[]){4}));
    CHECK(memcmp(out[0].data, (int32_t[]){10, 6, 2, -2}, 16) == 0);
    ss_tensor_free(&out[0]);
    ((int32_t *)d.data)[0] = 0;
    CHECK_ERR(run_op(&t, 11, 3, in, 1, out), "delta is zero");
    ss_tensor_free(&s);
    ss_tensor_free(&l);
    ss_tensor_free(&d);

    ss_tensor shape = make_i64(2, (int64_t[]){2, 3});
    in[0] = &shape;
    tnode_init(&t, "ConstantOfShape");
    CHECK_OK(run_op(&t, 13, 1, in, 1, out));
    CHECK(out[0].dtype == SS_DT_FLOAT32 && shape_is(&out[0], 2, (int64_t[]){2, 3}));
    CHECK(((float *)out[0].data)[5] == 0.0f);
    ss_tensor_free(&out[0]);

    ss_tensor x = make(SS_DT_INT32, 2, (int64_t[]){3, 4}, NULL);
    in[0] = &x;
    tnode_init(&t, "EyeLike");
    attr_int(&t, "dtype", SS_DT_FLOAT16);
    attr_int(&t, "k", 1);
    CHECK_OK(run_op(&t, 13, 1, in, 1, out));
    const uint16_t *h = out[0].data;
    CHECK(out[0].dtype == SS_DT_FLOAT16 && h[1] == 0x3C00 && h[6] == 0x3C00 && h[0] == 0 &&
          h[11] == 0x3C00);
    ss_tensor_free(&out[0]);
    ss_tensor_free(&x);
    ss_tensor_free(&shape);
}

static void test_trilu_lower_with_k(void)
{
    int64_t dims[2] = {3, 3};
    ss_tensor x = make(SS_DT_FLOAT64, 2, dims, (double[]){1, 2, 3, 4, 5, 6, 7, 8, 9}), out[1];
    ss_tensor kk = make(SS_DT_INT64, 0, NULL, (int64_t[]){-1});
    ss_tensor *in[2] = {&x, &kk};
    tnode t;
    tnode_init(&t, "Trilu");
    attr_int(&t, "upper", 0);
    CHECK_OK(run_op(&t, 14, 2, in, 1, out));
    CHECK(memcmp(out[0].data, (double[]){0, 0, 0, 4, 0, 0, 7, 8, 0}, 72) == 0);
    ss_tensor_free(&out[0]);
    ss_tensor_free(&kk);
    ss_tensor_free(&x);
}

/* Extreme values from a hostile model give errors or exact results, never overflow (UBSan). */
static void test_extreme_values_do_not_overflow(void)
{
    ss_tensor x = make(SS_DT_INT8, 2, (int64_t[]){3, 4},
                       (int8_t[]){1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}),
              out[1];
    ss_tensor starts = make_i64(1, (int64_t[]){-1}), ends = make_i64(1, (int64_t[]){INT64_MIN});
    ss_tensor axes = make_i64(1, (int64_t[]){1}), steps = make_i64(1, (int64_t[]){INT64_MIN});
    ss_tensor *in[5] = {&x, &starts, &ends, &axes, &steps};
    tnode t;
    tnode_init(&t, "Slice");
    CHECK_OK(run_op(&t, 13, 5, in, 1, out));
    CHECK(shape_is(&out[0], 2, (int64_t[]){3, 1}));
    CHECK(((int8_t *)out[0].data)[2] == 12);
    ss_tensor_free(&out[0]);
    ss_tensor reps = make_i64(2, (int64_t[]){INT64_MAX, 2});
    in[1] = &reps;
    tnode_init(&t, "Tile");
    CHECK_ERR(run_op(&t, 13, 2, in, 1, out), "overflow");
    ss_tensor_free(&reps);
    ss_tensor kk = make(SS_DT_INT64, 0, NULL, (int64_t[]){INT64_MAX});
    in[1] = &kk;
    tnode_init(&t, "Trilu");
    attr_int(&t, "upper", 0);
    CHECK_OK(run_op(&t, 14, 2, in, 1, out));
    CHECK(memcmp(out[0].data, x.data, 12) == 0);
    ss_tensor_free(&out[0]);
    ss_tensor_free(&kk);
    ss_tensor rs = make(SS_DT_INT64, 0, NULL, (int64_t[]){INT64_MIN}),
              rl = make(SS_DT_INT64, 0, NULL, (int64_t[]){INT64_MAX});
    ss_tensor rd = make(SS_DT_INT64, 0, NULL, (int64_t[]){INT64_MAX});
    ss_tensor *rin[3] = {&rs, &rl, &rd};
    tnode_init(&t, "Range");
    CHECK_OK(run_op(&t, 11, 3, rin, 1, out));
    CHECK(shape_is(&out[0], 1, (int64_t[]){3}));
    CHECK(((int64_t *)out[0].data)[2] == INT64_MAX - 1);
    ss_tensor_free(&out[0]);
    ((int64_t *)rd.data)[0] = 1;
    CHECK_ERR(run_op(&t, 11, 3, rin, 1, out), "range too long");
    ss_tensor_free(&rs);
    ss_tensor_free(&rl);
    ss_tensor_free(&rd);
    ss_tensor_free(&starts);
    ss_tensor_free(&ends);
    ss_tensor_free(&axes);
    ss_tensor_free(&steps);
    ss_tensor_free(&x);
}

/* Before opset 13 (10 for Slice, 11 for Pad) the same parameters come as attributes. */
static void test_attribute_forms_of_older_opsets(void)
{
    float v[6] = {1, 2, 3, 4, 5, 6};
    ss_tensor x = make(SS_DT_FLOAT32, 2, (int64_t[]){2, 3}, v), out[2];
    ss_tensor *in[1] = {&x};
    tnode t;
    tnode_init(&t, "Split");
    attr_int(&t, "axis", -1);
    attr_ints(&t, "split", (int64_t[]){1, 2}, 2);
    CHECK_OK(run_op(&t, 11, 1, in, 2, out));
    CHECK(shape_is(&out[0], 2, (int64_t[]){2, 1}) && shape_is(&out[1], 2, (int64_t[]){2, 2}));
    CHECK(memcmp(out[1].data, (float[]){2, 3, 5, 6}, 16) == 0);
    ss_tensor_free(&out[0]);
    ss_tensor_free(&out[1]);

    tnode_init(&t, "Slice");
    attr_ints(&t, "starts", (int64_t[]){1, -2}, 2);
    attr_ints(&t, "ends", (int64_t[]){1000, -1}, 2);
    CHECK_OK(run_op(&t, 9, 1, in, 1, out));
    CHECK(shape_is(&out[0], 2, (int64_t[]){1, 1}) && ((float *)out[0].data)[0] == 5);
    ss_tensor_free(&out[0]);

    tnode_init(&t, "Pad");
    attr_ints(&t, "pads", (int64_t[]){1, 0, 0, 1}, 4);
    add_attr(&t, "value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT)->f = 1.5f;
    CHECK_OK(run_op(&t, 2, 1, in, 1, out));
    CHECK(shape_is(&out[0], 2, (int64_t[]){3, 4}));
    CHECK(memcmp(out[0].data, (float[]){1.5f, 1.5f, 1.5f, 1.5f, 1, 2, 3, 1.5f, 4, 5, 6, 1.5f},
                 48) == 0);
    ss_tensor_free(&out[0]);

    tnode_init(&t, "Unsqueeze");
    CHECK_ERR(run_op(&t, 11, 1, in, 1, out), "'axes' is required");
    attr_ints(&t, "axes", (int64_t[]){0, 3}, 2);
    CHECK_OK(run_op(&t, 11, 1, in, 1, out));
    CHECK(shape_is(&out[0], 4, (int64_t[]){1, 2, 3, 1}));
    ss_tensor_free(&out[0]);

    tnode_init(&t, "Flatten");
    attr_int(&t, "axis", 0);
    CHECK_OK(run_op(&t, 11, 1, in, 1, out));
    CHECK(shape_is(&out[0], 2, (int64_t[]){1, 6}));
    ss_tensor_free(&out[0]);
    ss_tensor_free(&x);
}

TEST_MAIN(TEST(test_transpose_fast_paths_match_reference), TEST(test_transpose_rejects_bad_perm),
          TEST(test_reshape_zero_and_inferred_dims),
          TEST(test_value_only_known_at_run_time_is_unsupported),
          TEST(test_squeeze_unsqueeze_axes_attribute_and_input),
          TEST(test_shape_start_end_and_size), TEST(test_expand_broadcasts_both_ways),
          TEST(test_slice_clamps_and_negative_steps_on_bool),
          TEST(test_gather_negative_int32_indices_and_range_error),
          TEST(test_concat_split_round_trip), TEST(test_tile_and_pad_modes),
          TEST(test_range_constant_of_shape_eyelike), TEST(test_trilu_lower_with_k),
          TEST(test_extreme_values_do_not_overflow), TEST(test_attribute_forms_of_older_opsets))
