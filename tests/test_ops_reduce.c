/*
 * Reduction, normalization and convolution/pooling ops (ops/reduce.c, normalize.c, conv.c),
 * called through the op table the way the planner calls them (infer, then run on buffers of the
 * inferred size) and compared with naive reference loops written here. Covers what the ONNX node
 * cases do not: every axis subset of a 4-D tensor (so every coalesced layout and the last-axis
 * fast path), float32 sums that need a double accumulator, integer reductions, strided
 * softmax/argmax, opset-dependent Softmax semantics, broadcast LayerNormalization parameters,
 * grouped/dilated/strided/asymmetrically padded convolutions in 1, 2 and 3 dims, pooling with
 * ceil_mode and count_include_pad, errors for bad and unsupported attributes, and that run does
 * not call malloc.
 */
#include <float.h>
#include <stdlib.h>
#include <string.h>

/* Linked with -Wl,--wrap=malloc,calloc,realloc (tests/ops_reduce.cmake). */
#define OP_HARNESS_COUNT_ALLOCS
#include "op_harness.h"
#include "ops/isa.h"

/* ------------------------------------------------------------------ counting allocations */

/* The counter above must see the runtime's allocations, or the no-malloc checks prove nothing. */
static void test_alloc_counter_sees_malloc(void)
{
    int before = alloc_count;
    ss_tensor t = {0};
    int64_t d[1] = {3};
    CHECK_OK(ss_tensor_alloc(&t, SS_DT_FLOAT32, 1, d));
    CHECK(alloc_count > before);
    ss_tensor_free(&t);
}

/* ------------------------------------------------------------------ running ops */

/* infer + run twice (the second run must not allocate); `omit` marks omitted optional outputs. */
static ss_status *run_op_n(tnode *t, int64_t opset, int n_in, ss_tensor **in, int n_out,
                           ss_tensor *out, const bool *omit)
{
    return op_run(t, opset, n_in, in, n_out, out,
                  &(op_run_opts){.omit = omit, .check_allocs = true});
}

static ss_status *run_op(tnode *t, int64_t opset, int n_in, ss_tensor **in, ss_tensor *out)
{
    return run_op_n(t, opset, n_in, in, 1, out, NULL);
}

/* infer + run (twice: the second run must not allocate). Outputs are allocated here; NULL
 * entries in `want` mark omitted optional outputs. */
static double get(const ss_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case SS_DT_FLOAT32:
        return ((const float *)t->data)[i];
    case SS_DT_FLOAT64:
        return ((const double *)t->data)[i];
    case SS_DT_INT32:
        return ((const int32_t *)t->data)[i];
    case SS_DT_INT64:
        return (double)((const int64_t *)t->data)[i];
    default:
        return NAN;
    }
}

/* Largest |a - b| / (atol + rtol |b|); <= 1 is a match. Shapes must agree. */
static double mismatch(const ss_tensor *got, const ss_tensor *ref, double rtol, double atol)
{
    if (!ss_shape_equal(got->ndim, got->dims, ref->ndim, ref->dims)) return INFINITY;
    double worst = 0;
    int64_t n = ss_tensor_numel(ref);
    for (int64_t i = 0; i < n; i++) {
        double a = get(got, i), b = get(ref, i);
        if (isnan(b) && isnan(a)) continue;
        double e = fabs(a - b) / (atol + rtol * fabs(b));
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

/* ------------------------------------------------------------------ reductions */

static const char *const reduce_ops[] = {
    "ReduceSum", "ReduceMean", "ReduceMax",    "ReduceMin",       "ReduceProd",
    "ReduceL1",  "ReduceL2",   "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"};

static void ref_reduce(const char *op, const ss_tensor *x, unsigned mask, bool keep, ss_tensor *ref)
{
    int64_t od[SS_MAX_DIMS];
    int ond = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (!(mask >> d & 1))
            od[ond++] = x->dims[d];
        else if (keep)
            od[ond++] = 1;
    }
    *ref = make(SS_DT_FLOAT64, ond, od, NULL);
    int64_t n_out = ss_tensor_numel(ref), n = ss_tensor_numel(x), cnt = n_out ? n / n_out : 0;
    double *acc = calloc((size_t)n_out + 1, sizeof(double)),
           *mx = calloc((size_t)n_out + 1, sizeof(double));
    bool is_max = !strcmp(op, "ReduceMax"), is_min = !strcmp(op, "ReduceMin"),
         is_prod = !strcmp(op, "ReduceProd");
    for (int64_t o = 0; o < n_out; o++)
        acc[o] = is_max ? -INFINITY : is_min ? INFINITY : is_prod ? 1 : 0, mx[o] = -INFINITY;
    for (int pass = 0; pass < 2; pass++) {
        int64_t idx[SS_MAX_DIMS] = {0};
        for (int64_t i = 0; i < n; i++) {
            int64_t o = 0;
            for (int d = 0; d < x->ndim; d++)
                if (!(mask >> d & 1)) o = o * x->dims[d] + idx[d];
            double v = get(x, i);
            if (pass == 0) {
                if (v > mx[o]) mx[o] = v;
                if (is_max)
                    acc[o] = v > acc[o] ? v : acc[o];
                else if (is_min)
                    acc[o] = v < acc[o] ? v : acc[o];
                else if (is_prod)
                    acc[o] *= v;
                else if (!strcmp(op, "ReduceL1"))
                    acc[o] += fabs(v);
                else if (!strcmp(op, "ReduceL2") || !strcmp(op, "ReduceSumSquare"))
                    acc[o] += v * v;
                else if (strcmp(op, "ReduceLogSumExp"))
                    acc[o] += v;
            } else if (!strcmp(op, "ReduceLogSumExp")) {
                acc[o] += exp(v - mx[o]);
            }
            for (int d = x->ndim - 1; d >= 0 && ++idx[d] == x->dims[d]; d--)
                idx[d] = 0;
        }
    }
    for (int64_t o = 0; o < n_out; o++) {
        double v = acc[o];
        if (!strcmp(op, "ReduceMean"))
            v = ss_dtype_is_int(x->dtype) ? (double)((int64_t)v / cnt) : v / (double)cnt;
        if (!strcmp(op, "ReduceL2")) v = sqrt(v);
        if (!strcmp(op, "ReduceLogSum")) v = log(v);
        if (!strcmp(op, "ReduceLogSumExp")) v = log(v) + mx[o];
        ((double *)ref->data)[o] = v;
    }
    free(acc);
    free(mx);
}

static ss_status *reduce_with_mask(const char *op, int64_t opset, ss_tensor *x, unsigned mask,
                                   bool keep, ss_tensor *out)
{
    int64_t axes[SS_MAX_DIMS];
    int na = 0;
    for (int d = 0; d < x->ndim; d++)
        if (mask >> d & 1) {
            axes[na] = (na & 1) ? d - x->ndim : d; /* mix negative axes in */
            na++;
        }
    tnode t;
    tnode_init(&t, op);
    attr_int(&t, "keepdims", keep);
    bool axes_input = !strcmp(op, "ReduceSum") && opset >= 13;
    int64_t one = na;
    ss_tensor ax = make(SS_DT_INT64, 1, &one, axes);
    ss_tensor *in[2] = {x, &ax};
    if (!axes_input && na) attr_ints(&t, "axes", axes, (size_t)na);
    ss_status *st = run_op(&t, opset, axes_input ? 2 : 1, in, out);
    ss_tensor_free(&ax);
    return st;
}

/* Every axis subset of a 4-D tensor, every reduction, both float types and both keepdims. */
static void test_reduce_every_axis_subset_matches_reference(void)
{
    int64_t dims[4] = {3, 1, 4, 5};
    for (int dt = 0; dt < 2; dt++) {
        ss_tensor x = make_rand(dt ? SS_DT_FLOAT64 : SS_DT_FLOAT32, 4, dims);
        /* ReduceLogSum needs positive sums: shift the data */
        ss_tensor xp = make(x.dtype, 4, dims, NULL);
        for (int64_t i = 0; i < ss_tensor_numel(&x); i++) {
            if (dt)
                ((double *)xp.data)[i] = ((double *)x.data)[i] + 1.5;
            else
                ((float *)xp.data)[i] = ((float *)x.data)[i] + 1.5f;
        }
        for (size_t op = 0; op < sizeof reduce_ops / sizeof reduce_ops[0]; op++)
            for (unsigned mask = 1; mask < 16; mask++)
                for (int keep = 0; keep < 2; keep++) {
                    ss_tensor *src = strcmp(reduce_ops[op], "ReduceLogSum") ? &x : &xp;
                    ss_tensor out, ref;
                    ss_status *st = reduce_with_mask(reduce_ops[op], 13, src, mask, keep, &out);
                    CHECK_MSG(!st, "%s: %s", reduce_ops[op], st ? st->msg : "");
                    if (st) {
                        ss_status_free(st);
                        continue;
                    }
                    ref_reduce(reduce_ops[op], src, mask, keep, &ref);
                    double e = mismatch(&out, &ref, dt ? 1e-12 : 1e-5, 1e-6);
                    CHECK_MSG(e <= 1 && out.dtype == x.dtype, "%s %s mask %u keep %d: error %g",
                              reduce_ops[op], ss_dtype_name(x.dtype), mask, keep, e);
                    ss_tensor_free(&out);
                    ss_tensor_free(&ref);
                }
        ss_tensor_free(&x);
        ss_tensor_free(&xp);
    }
}

static void test_reduce_integers(void)
{
    int64_t dims[3] = {4, 3, 5};
    static const char *const ops[] = {"ReduceSum",  "ReduceMax",       "ReduceMin", "ReduceProd",
                                      "ReduceMean", "ReduceSumSquare", "ReduceL1"};
    for (int dt = 0; dt < 2; dt++) {
        ss_tensor x = make_rand(dt ? SS_DT_INT64 : SS_DT_INT32, 3, dims);
        for (size_t op = 0; op < sizeof ops / sizeof ops[0]; op++)
            for (unsigned mask = 1; mask < 8; mask++) {
                ss_tensor out, ref;
                CHECK_OK(reduce_with_mask(ops[op], 11, &x, mask, true, &out));
                ref_reduce(ops[op], &x, mask, true, &ref);
                CHECK_MSG(mismatch(&out, &ref, 0, 1e-9) <= 1 && out.dtype == x.dtype,
                          "%s %s mask %u", ops[op], ss_dtype_name(x.dtype), mask);
                ss_tensor_free(&out);
                ss_tensor_free(&ref);
            }
        ss_tensor_free(&x);
    }
}

/* 2^24 + many small values: a float accumulator would stall at 2^24. */
static void test_reduce_mean_last_axis_accumulates_in_double(void)
{
    int64_t dims[2] = {2, 1 << 22};
    ss_tensor x = make(SS_DT_FLOAT32, 2, dims, NULL);
    float *v = x.data;
    for (int64_t i = 0; i < dims[0] * dims[1]; i++)
        v[i] = (i % dims[1]) == 0 ? 16777216.0f : 1.0f;
    tnode t;
    tnode_init(&t, "ReduceMean");
    int64_t axes[1] = {-1};
    attr_ints(&t, "axes", axes, 1);
    ss_tensor out;
    ss_tensor *in[1] = {&x};
    CHECK_OK(run_op(&t, 13, 1, in, &out));
    double want = (16777216.0 + (double)(dims[1] - 1)) / (double)dims[1];
    CHECK(out.ndim == 2 && out.dims[1] == 1);
    CHECK_NEAR(((float *)out.data)[0], want, want * 1e-6);
    CHECK_NEAR(((float *)out.data)[1], want, want * 1e-6);
    ss_tensor_free(&out);
    ss_tensor_free(&x);
}

static void test_reduce_sum_axes_input_and_noop(void)
{
    int64_t dims[2] = {2, 3};
    ss_tensor x = make(SS_DT_FLOAT32, 2, dims, (float[]){1, 2, 3, 4, 5, 6}), out;
    int64_t zero = 0;
    ss_tensor empty = make(SS_DT_INT64, 1, &zero, NULL);
    ss_tensor *in[2] = {&x, &empty};
    tnode t;
    tnode_init(&t, "ReduceSum");
    attr_int(&t, "keepdims", 0);
    CHECK_OK(run_op(&t, 13, 2, in, &out)); /* empty axes: reduce everything */
    CHECK(out.ndim == 0 && ((float *)out.data)[0] == 21);
    ss_tensor_free(&out);
    CHECK_OK(run_op(&t, 13, 1, in, &out)); /* omitted axes: same */
    CHECK(out.ndim == 0 && ((float *)out.data)[0] == 21);
    ss_tensor_free(&out);
    attr_int(&t, "noop_with_empty_axes", 1);
    CHECK_OK(run_op(&t, 13, 2, in, &out)); /* noop: identity */
    CHECK(out.ndim == 2 && memcmp(out.data, x.data, x.nbytes) == 0);
    ss_tensor_free(&out);
    /* the opset-11 ReduceSum has no axes input, and no noop_with_empty_axes */
    CHECK_ERR(run_op(&t, 11, 1, in, &out), "noop_with_empty_axes");
    /* ... and the opset-13 one no axes attribute */
    tnode_init(&t, "ReduceSum");
    int64_t ax0[1] = {0};
    attr_ints(&t, "axes", ax0, 1);
    CHECK_ERR(run_op(&t, 13, 1, in, &out), "'axes'");
    ss_tensor_free(&empty);
    ss_tensor_free(&x);
}

static void test_reduce_errors(void)
{
    int64_t dims[2] = {2, 3};
    ss_tensor x = make(SS_DT_FLOAT32, 2, dims, NULL), out;
    ss_tensor *in[2] = {&x, NULL};
    tnode t;
    tnode_init(&t, "ReduceMean");
    int64_t dup[2] = {1, -1};
    attr_ints(&t, "axes", dup, 2);
    CHECK_ERR(run_op(&t, 13, 1, in, &out), "repeated");
    tnode_init(&t, "ReduceMean");
    int64_t bad[1] = {2};
    attr_ints(&t, "axes", bad, 1);
    CHECK_ERR(run_op(&t, 13, 1, in, &out), "out of range");
    tnode_init(&t, "ReduceMax");
    attr_int(&t, "frobnicate", 1);
    CHECK_ERR(run_op(&t, 13, 1, in, &out), "'frobnicate'");
    ss_tensor h = make(SS_DT_FLOAT16, 2, dims, NULL);
    in[0] = &h;
    tnode_init(&t, "ReduceMax");
    CHECK_ERR(run_op(&t, 13, 1, in, &out), "float16");
    /* axes known only at run time */
    ss_tensor ax = {.dtype = SS_DT_INT64, .ndim = 1, .dims = {1}};
    in[0] = &x;
    in[1] = &ax;
    tnode_init(&t, "ReduceSum");
    ss_status *st = run_op(&t, 13, 2, in, &out);
    CHECK(st && st->code == SS_ERR_UNSUPPORTED && strstr(st->msg, "axes"));
    ss_status_free(st);
    ss_tensor_free(&h);
    ss_tensor_free(&x);
}

static void ref_arg(const ss_tensor *x, int axis, bool is_max, bool last, int64_t *ref)
{
    int64_t outer = 1, inner = 1, n = x->dims[axis];
    for (int d = 0; d < axis; d++)
        outer *= x->dims[d];
    for (int d = axis + 1; d < x->ndim; d++)
        inner *= x->dims[d];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            int64_t bi = 0;
            for (int64_t a = 1; a < n; a++) {
                double v = get(x, (o * n + a) * inner + j), b = get(x, (o * n + bi) * inner + j);
                if (is_max ? (v > b || (last && v == b)) : (v < b || (last && v == b))) bi = a;
            }
            ref[o * inner + j] = bi;
        }
}

static void test_argmax_argmin_every_axis_with_ties(void)
{
    int64_t dims[3] = {3, 4, 5};
    ss_tensor x = make_rand(SS_DT_INT32, 3, dims); /* small ints: many ties */
    ss_tensor xf = make_rand(SS_DT_FLOAT32, 3, dims);
    for (int which = 0; which < 2; which++)
        for (int axis = -3; axis < 3; axis++)
            for (int last = 0; last < 2; last++)
                for (int is_max = 0; is_max < 2; is_max++) {
                    ss_tensor *src = which ? &xf : &x;
                    tnode t;
                    tnode_init(&t, is_max ? "ArgMax" : "ArgMin");
                    attr_int(&t, "axis", axis);
                    attr_int(&t, "keepdims", 0);
                    attr_int(&t, "select_last_index", last);
                    ss_tensor out;
                    ss_tensor *in[1] = {src};
                    CHECK_OK(run_op(&t, 13, 1, in, &out));
                    int64_t ref[60];
                    ref_arg(src, axis < 0 ? axis + 3 : axis, is_max, last, ref);
                    CHECK_MSG(out.dtype == SS_DT_INT64 && out.ndim == 2 &&
                                  memcmp(out.data, ref, out.nbytes) == 0,
                              "axis %d last %d max %d", axis, last, is_max);
                    ss_tensor_free(&out);
                }
    ss_tensor_free(&x);
    ss_tensor_free(&xf);
}

/* ------------------------------------------------------------------ softmax family */

/* Softmax over rows of length n with stride `inner`. */
static void ref_softmax(const ss_tensor *x, int64_t outer, int64_t n, int64_t inner, int kind,
                        double *ref)
{
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < inner; j++) {
            double mx = -INFINITY, s = 0;
            for (int64_t a = 0; a < n; a++)
                mx = fmax(mx, get(x, (o * n + a) * inner + j));
            for (int64_t a = 0; a < n; a++)
                s += exp(get(x, (o * n + a) * inner + j) - mx);
            for (int64_t a = 0; a < n; a++) {
                double v = get(x, (o * n + a) * inner + j);
                ref[(o * n + a) * inner + j] = kind ? v - mx - log(s) : exp(v - mx) / s;
            }
        }
}

static void test_softmax_axis_semantics_by_opset(void)
{
    int64_t dims[3] = {2, 3, 4};
    ss_tensor x = make_rand(SS_DT_FLOAT32, 3, dims);
    for (int i = 0; i < 24; i++)
        ((float *)x.data)[i] *= 500; /* large logits: needs the max shift */
    double ref[24];
    for (int kind = 0; kind < 2; kind++) {
        ss_tensor out, rt = make(SS_DT_FLOAT64, 3, dims, NULL);
        ss_tensor *in[1] = {&x};
        tnode t;
        tnode_init(&t, kind ? "LogSoftmax" : "Softmax");
        attr_int(&t, "axis", 1);
        /* opset 13: along axis 1 only (strided) */
        CHECK_OK(run_op(&t, 13, 1, in, &out));
        ref_softmax(&x, 2, 3, 4, kind, ref);
        memcpy(rt.data, ref, sizeof ref);
        CHECK_MSG(mismatch(&out, &rt, 1e-5, 1e-6) <= 1, "%s opset 13 axis 1", t.node.op_type);
        ss_tensor_free(&out);
        /* opset 11: coerced to [2, 12] */
        CHECK_OK(run_op(&t, 11, 1, in, &out));
        ref_softmax(&x, 2, 12, 1, kind, ref);
        memcpy(rt.data, ref, sizeof ref);
        CHECK_MSG(mismatch(&out, &rt, 1e-5, 1e-6) <= 1, "%s opset 11 axis 1", t.node.op_type);
        ss_tensor_free(&out);
        /* default axis: -1 from 13, 1 before */
        tnode_init(&t, kind ? "LogSoftmax" : "Softmax");
        CHECK_OK(run_op(&t, 13, 1, in, &out));
        ref_softmax(&x, 6, 4, 1, kind, ref);
        memcpy(rt.data, ref, sizeof ref);
        CHECK_MSG(mismatch(&out, &rt, 1e-5, 1e-6) <= 1, "%s opset 13 default axis", t.node.op_type);
        ss_tensor_free(&out);
        ss_tensor_free(&rt);
    }
    ss_tensor_free(&x);
}

/* Rows long enough for the vectorized float32 row (normalize.c: softmax_row_f32v, 16 lanes and
 * a tail): logits up to +-60, masked positions at -FLT_MAX and -inf (they must come out 0), the
 * maximum in the tail; at every ISA level. */
static void test_softmax_long_rows_every_isa(void)
{
    static const int64_t lens[] = {16, 37, 128, 203};
    ss_isa best = ss_isa_detect();
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        int64_t n = lens[li], dims[2] = {3, n};
        ss_tensor x = make_rand(SS_DT_FLOAT32, 2, dims);
        float *xv = x.data;
        for (int64_t i = 0; i < 3 * n; i++)
            xv[i] *= 60;
        xv[5] = -FLT_MAX, xv[n + 2] = -INFINITY, xv[2 * n + n - 1] = 200; /* row 2: max last */
        double *ref = malloc(sizeof(double) * (size_t)(3 * n));
        ref_softmax(&x, 3, n, 1, 0, ref);
        ss_tensor rt = make(SS_DT_FLOAT64, 2, dims, NULL);
        memcpy(rt.data, ref, sizeof(double) * (size_t)(3 * n));
        for (int level = (int)best; level >= SS_ISA_BASE; level--) {
            CHECK(ss_isa_force((ss_isa)level) == (ss_isa)level);
            ss_tensor out, *in[1] = {&x};
            tnode t;
            tnode_init(&t, "Softmax");
            CHECK_OK(run_op(&t, 13, 1, in, &out));
            CHECK_MSG(mismatch(&out, &rt, 1e-5, 1e-30) <= 1, "Softmax row of %lld at %s",
                      (long long)n, ss_isa_name((ss_isa)level));
            CHECK(((float *)out.data)[5] == 0 && ((float *)out.data)[n + 2] == 0);
            ss_tensor_free(&out);
        }
        ss_isa_force(best);
        free(ref);
        ss_tensor_free(&rt);
        ss_tensor_free(&x);
    }
}

/* Rows long and short for the float32 row's 16 partial sums (normalize.c: moments, ln_f32): every
 * length from 1 to 40, BERT's 768 and 1001, with a large common offset (the two-pass variance must
 * not lose it) and a bias, at every ISA level, against a double reference. */
static void test_layernorm_rows_every_isa(void)
{
    ss_isa best = ss_isa_detect();
    for (int64_t n = 1; n <= 1001; n = n < 40 ? n + 1 : n < 768 ? 768 : 1002) {
        int64_t dims[2] = {3, n}, pd[1] = {n};
        ss_tensor x = make_rand(SS_DT_FLOAT32, 2, dims), scale = make_rand(SS_DT_FLOAT32, 1, pd),
                  bias = make_rand(SS_DT_FLOAT32, 1, pd);
        float *xv = x.data;
        for (int64_t i = 0; i < 3 * n; i++)
            xv[i] = xv[i] * 3 + (i < n ? 1000.0f : 0.0f); /* row 0 sits at 1000 */
        for (int level = (int)best; level >= SS_ISA_BASE; level--) {
            CHECK(ss_isa_force((ss_isa)level) == (ss_isa)level);
            ss_tensor out[3], *in[3] = {&x, &scale, &bias};
            tnode t;
            tnode_init(&t, "LayerNormalization");
            CHECK_OK(run_op_n(&t, 17, 3, in, 3, out, NULL));
            int bad = 0;
            for (int r = 0; r < 3; r++) {
                const float *a = xv + r * n;
                double m = 0, v = 0;
                for (int64_t i = 0; i < n; i++)
                    m += a[i];
                m /= (double)n;
                for (int64_t i = 0; i < n; i++)
                    v += (a[i] - m) * (a[i] - m);
                double inv = 1 / sqrt(v / (double)n + 1e-5);
                bad += fabs(((float *)out[1].data)[r] - m) > 1e-6 * (1 + fabs(m));
                bad += fabs(((float *)out[2].data)[r] - inv) > 1e-5 * inv;
                for (int64_t i = 0; i < n; i++) {
                    double want =
                        (a[i] - m) * inv * ((float *)scale.data)[i] + ((float *)bias.data)[i];
                    bad += fabs(((float *)out[0].data)[r * n + i] - want) > 2e-4 * (1 + fabs(want));
                }
            }
            CHECK_MSG(bad == 0, "LayerNormalization rows of %lld at %s: %d values off",
                      (long long)n, ss_isa_name((ss_isa)level), bad);
            for (int i = 0; i < 3; i++)
                ss_tensor_free(&out[i]);
        }
        ss_isa_force(best);
        ss_tensor_free(&x);
        ss_tensor_free(&scale);
        ss_tensor_free(&bias);
    }
}

static void test_hardmax_first_maximum(void)
{
    int64_t dims[2] = {2, 3};
    ss_tensor x = make(SS_DT_FLOAT32, 2, dims, (float[]){1, 3, 3, 0, 0, -1}), out;
    ss_tensor *in[1] = {&x};
    tnode t;
    tnode_init(&t, "Hardmax");
    CHECK_OK(run_op(&t, 13, 1, in, &out));
    CHECK(memcmp(out.data, (float[]){0, 1, 0, 1, 0, 0}, 24) == 0);
    ss_tensor_free(&out);
    attr_int(&t, "axis", 0); /* strided */
    CHECK_OK(run_op(&t, 13, 1, in, &out));
    CHECK(memcmp(out.data, (float[]){1, 1, 1, 0, 0, 0}, 24) == 0);
    ss_tensor_free(&out);
    ss_tensor_free(&x);
}

static void test_lp_normalization(void)
{
    int64_t dims[2] = {2, 2};
    ss_tensor x = make(SS_DT_FLOAT64, 2, dims, (double[]){3, -4, 0, 0}), out;
    ss_tensor *in[1] = {&x};
    tnode t;
    tnode_init(&t, "LpNormalization");
    CHECK_OK(run_op(&t, 1, 1, in, &out));
    CHECK(memcmp(out.data, (double[]){0.6, -0.8, 0, 0}, 32) == 0);
    ss_tensor_free(&out);
    attr_int(&t, "p", 1);
    attr_int(&t, "axis", 0);
    CHECK_OK(run_op(&t, 1, 1, in, &out));
    CHECK(memcmp(out.data, (double[]){1, -1, 0, 0}, 32) == 0);
    ss_tensor_free(&out);
    tnode_init(&t, "LpNormalization");
    attr_int(&t, "p", 3);
    CHECK_ERR(run_op(&t, 1, 1, in, &out), "'p'");
    ss_tensor_free(&x);
}

/* ------------------------------------------------------------------ LayerNormalization */

static void test_layernorm_broadcast_params_and_stats(void)
{
    int64_t dims[3] = {2, 3, 4}, sdims[2] = {1, 4}, bdims[1] = {1};
    ss_tensor x = make_rand(SS_DT_FLOAT32, 3, dims);
    ss_tensor scale = make_rand(SS_DT_FLOAT32, 2, sdims),
              bias = make(SS_DT_FLOAT32, 1, bdims, (float[]){0.25f});
    ss_tensor *in[3] = {&x, &scale, &bias};
    ss_tensor out[3];
    tnode t;
    tnode_init(&t, "LayerNormalization");
    attr_int(&t, "axis", -2);
    attr_float(&t, "epsilon", 1e-3f);
    CHECK_OK(run_op_n(&t, 17, 3, in, 3, out, NULL));
    CHECK(out[1].ndim == 3 && out[1].dims[0] == 2 && out[1].dims[1] == 1 && out[1].dims[2] == 1);
    CHECK(out[1].dtype == SS_DT_FLOAT32 && out[2].dtype == SS_DT_FLOAT32);
    const float *xv = x.data, *sv = scale.data;
    for (int r = 0; r < 2; r++) {
        double m = 0, v = 0;
        for (int i = 0; i < 12; i++)
            m += xv[r * 12 + i];
        m /= 12;
        for (int i = 0; i < 12; i++)
            v += (xv[r * 12 + i] - m) * (xv[r * 12 + i] - m);
        double inv = 1 / sqrt(v / 12 + 1e-3);
        CHECK_NEAR(((float *)out[1].data)[r], m, 1e-6);
        CHECK_NEAR(((float *)out[2].data)[r], inv, 1e-5 * inv);
        for (int i = 0; i < 12; i++)
            CHECK_NEAR(((float *)out[0].data)[r * 12 + i],
                       (xv[r * 12 + i] - m) * inv * sv[i % 4] + 0.25, 1e-5);
    }
    for (int i = 0; i < 3; i++)
        ss_tensor_free(&out[i]);
    /* optional outputs omitted, no bias */
    bool omit[3] = {false, true, true};
    CHECK_OK(run_op_n(&t, 17, 2, in, 3, out, omit));
    ss_tensor_free(&out[0]);
    /* a scale that does not broadcast */
    int64_t bad[1] = {3};
    ss_tensor sb = make(SS_DT_FLOAT32, 1, bad, NULL);
    in[1] = &sb;
    CHECK_ERR(run_op_n(&t, 17, 2, in, 1, out, NULL), "broadcast");
    attr_int(&t, "stash_type", 11);
    in[1] = &scale;
    CHECK_ERR(run_op_n(&t, 17, 2, in, 1, out, NULL), "stash_type");
    ss_tensor_free(&sb);
    ss_tensor_free(&x);
    ss_tensor_free(&scale);
    ss_tensor_free(&bias);
}

/* ------------------------------------------------------------------ Batch/InstanceNormalization */

static void test_batchnorm_inference_and_unsupported(void)
{
    int64_t dims[3] = {2, 2, 3}, cd[1] = {2};
    ss_tensor x = make_rand(SS_DT_FLOAT64, 3, dims);
    ss_tensor s = make(SS_DT_FLOAT64, 1, cd, (double[]){2, 3}),
              b = make(SS_DT_FLOAT64, 1, cd, (double[]){1, -1});
    ss_tensor m = make(SS_DT_FLOAT64, 1, cd, (double[]){0.5, -0.5}),
              v = make(SS_DT_FLOAT64, 1, cd, (double[]){4, 9});
    ss_tensor *in[5] = {&x, &s, &b, &m, &v};
    ss_tensor out[3];
    tnode t;
    tnode_init(&t, "BatchNormalization");
    attr_float(&t, "epsilon", 0);
    CHECK_OK(run_op(&t, 15, 5, in, out));
    const double *xv = x.data, *yv = out[0].data, sd[2] = {2, 3};
    for (int i = 0; i < 12; i++) {
        int c = (i / 3) % 2;
        double want = (xv[i] - (c ? -0.5 : 0.5)) / sd[c] * (c ? 3 : 2) + (c ? -1 : 1);
        CHECK_NEAR(yv[i], want, 1e-12);
    }
    ss_tensor_free(&out[0]);
    /* running statistics are only produced in training mode */
    CHECK_ERR(run_op_n(&t, 9, 5, in, 3, out, NULL), "training");
    tnode_init(&t, "BatchNormalization");
    attr_int(&t, "spatial", 0);
    CHECK_ERR(run_op(&t, 7, 5, in, out), "spatial");
    ss_tensor_free(&x), ss_tensor_free(&s), ss_tensor_free(&b), ss_tensor_free(&m),
        ss_tensor_free(&v);
}

static void test_instancenorm(void)
{
    int64_t dims[3] = {2, 2, 5}, cd[1] = {2};
    ss_tensor x = make_rand(SS_DT_FLOAT32, 3, dims);
    ss_tensor s = make(SS_DT_FLOAT32, 1, cd, (float[]){1, 2}),
              b = make(SS_DT_FLOAT32, 1, cd, (float[]){0, 1});
    ss_tensor *in[3] = {&x, &s, &b};
    ss_tensor out;
    tnode t;
    tnode_init(&t, "InstanceNormalization");
    CHECK_OK(run_op(&t, 6, 3, in, &out));
    const float *xv = x.data, *yv = out.data;
    for (int p = 0; p < 4; p++) {
        double m = 0, v = 0;
        for (int i = 0; i < 5; i++)
            m += xv[p * 5 + i];
        m /= 5;
        for (int i = 0; i < 5; i++)
            v += (xv[p * 5 + i] - m) * (xv[p * 5 + i] - m);
        double inv = 1 / sqrt(v / 5 + 1e-5);
        for (int i = 0; i < 5; i++)
            CHECK_NEAR(yv[p * 5 + i], (xv[p * 5 + i] - m) * inv * (p % 2 ? 2 : 1) + (p % 2), 1e-5);
    }
    ss_tensor_free(&out);
    ss_tensor_free(&x), ss_tensor_free(&s), ss_tensor_free(&b);
}

/* ------------------------------------------------------------------ losses */

static void test_losses_int32_targets_ignore_and_range(void)
{
    int64_t xd[2] = {3, 2}, td[1] = {3}, wd[1] = {2};
    ss_tensor x = make(SS_DT_FLOAT32, 2, xd, (float[]){0, 1, 2, 0, 1, 1});
    ss_tensor tg = make(SS_DT_INT32, 1, td, (int32_t[]){1, -1, 0});
    ss_tensor w = make(SS_DT_FLOAT32, 1, wd, (float[]){2, 3});
    ss_tensor *in[3] = {&x, &tg, &w};
    ss_tensor out[2];
    tnode t;
    tnode_init(&t, "SoftmaxCrossEntropyLoss");
    attr_int(&t, "ignore_index", -1);
    CHECK_OK(run_op_n(&t, 13, 3, in, 2, out, NULL));
    /* row 0: -log softmax([0,1])[1] * 3; row 2: -log softmax([1,1])[0] * 2; mean over weights 3 + 2
     */
    double l0 = log(1 + exp(-1.0)) * 3, l2 = log(2.0) * 2;
    CHECK(out[0].ndim == 0);
    CHECK_NEAR(((float *)out[0].data)[0], (l0 + l2) / 5, 1e-6);
    CHECK_NEAR(((float *)out[1].data)[1], -log(1 + exp(-1.0)), 1e-6);
    ss_tensor_free(&out[0]), ss_tensor_free(&out[1]);
    tnode_init(&t, "NegativeLogLikelihoodLoss");
    attr_str(&t, "reduction", "none");
    attr_int(&t, "ignore_index", -1);
    CHECK_OK(run_op_n(&t, 13, 2, in, 1, out, NULL));
    CHECK(out[0].ndim == 1 && memcmp(out[0].data, (float[]){-1, 0, -1}, 12) == 0);
    ss_tensor_free(&out[0]);
    tnode_init(&t, "NegativeLogLikelihoodLoss"); /* -1 is not ignored now */
    CHECK_ERR(run_op_n(&t, 13, 2, in, 1, out, NULL), "not a class index");
    ss_tensor_free(&out[0]);
    ss_tensor_free(&x), ss_tensor_free(&tg), ss_tensor_free(&w);
}

/* ------------------------------------------------------------------ Conv */

typedef struct {
    int nsp;
    int64_t n, c, m, group;
    int64_t in[3], k[3], s[3], d[3], pads[6];
    const char *auto_pad;
    bool bias;
} conv_case;

/* Direct convolution with explicit pads (auto_pad resolved by the caller). */
static void ref_conv(const conv_case *cc, const int64_t *pb, const int64_t *out, const ss_tensor *x,
                     const ss_tensor *w, const ss_tensor *b, double *y)
{
    int64_t in3[3] = {1, 1, 1}, k3[3] = {1, 1, 1}, s3[3] = {1, 1, 1}, d3[3] = {1, 1, 1},
            p3[3] = {0, 0, 0}, o3[3] = {1, 1, 1};
    for (int i = 0; i < cc->nsp; i++) {
        int j = 3 - cc->nsp + i;
        in3[j] = cc->in[i], k3[j] = cc->k[i], s3[j] = cc->s[i], d3[j] = cc->d[i], p3[j] = pb[i],
        o3[j] = out[i];
    }
    int64_t cg = cc->c / cc->group, mg = cc->m / cc->group;
    int64_t ivol = in3[0] * in3[1] * in3[2], ovol = o3[0] * o3[1] * o3[2],
            kvol = k3[0] * k3[1] * k3[2];
    for (int64_t n = 0; n < cc->n; n++)
        for (int64_t m = 0; m < cc->m; m++)
            for (int64_t od = 0; od < o3[0]; od++)
                for (int64_t oh = 0; oh < o3[1]; oh++)
                    for (int64_t ow = 0; ow < o3[2]; ow++) {
                        double acc = b ? get(b, m) : 0;
                        int64_t g = m / mg;
                        for (int64_t c = 0; c < cg; c++)
                            for (int64_t kd = 0; kd < k3[0]; kd++)
                                for (int64_t kh = 0; kh < k3[1]; kh++)
                                    for (int64_t kw = 0; kw < k3[2]; kw++) {
                                        int64_t id = od * s3[0] - p3[0] + kd * d3[0];
                                        int64_t ih = oh * s3[1] - p3[1] + kh * d3[1];
                                        int64_t iw = ow * s3[2] - p3[2] + kw * d3[2];
                                        if (id < 0 || id >= in3[0] || ih < 0 || ih >= in3[1] ||
                                            iw < 0 || iw >= in3[2])
                                            continue;
                                        double xv = get(x, (n * cc->c + g * cg + c) * ivol +
                                                               (id * in3[1] + ih) * in3[2] + iw);
                                        double wv = get(w, (m * cg + c) * kvol +
                                                               (kd * k3[1] + kh) * k3[2] + kw);
                                        acc += xv * wv;
                                    }
                        y[((n * cc->m + m) * ovol) + (od * o3[1] + oh) * o3[2] + ow] = acc;
                    }
}

static void check_conv(const conv_case *cc, ss_dtype dt)
{
    int64_t xd[5] = {cc->n, cc->c}, wd[5] = {cc->m, cc->c / cc->group}, bd[1] = {cc->m};
    for (int i = 0; i < cc->nsp; i++)
        xd[2 + i] = cc->in[i], wd[2 + i] = cc->k[i];
    ss_tensor x = make_rand(dt, 2 + cc->nsp, xd), w = make_rand(dt, 2 + cc->nsp, wd),
              b = make_rand(dt, 1, bd);
    tnode t;
    tnode_init(&t, "Conv");
    int64_t s[3], d[3], pads[6];
    memcpy(s, cc->s, sizeof s), memcpy(d, cc->d, sizeof d), memcpy(pads, cc->pads, sizeof pads);
    attr_ints(&t, "strides", s, (size_t)cc->nsp);
    attr_ints(&t, "dilations", d, (size_t)cc->nsp);
    if (cc->auto_pad)
        attr_str(&t, "auto_pad", cc->auto_pad);
    else
        attr_ints(&t, "pads", pads, (size_t)(2 * cc->nsp));
    attr_int(&t, "group", cc->group);
    ss_tensor *in[3] = {&x, &w, &b};
    ss_tensor out;
    ss_status *st = run_op(&t, 11, cc->bias ? 3 : 2, in, &out);
    CHECK_MSG(!st, "%s", st ? st->msg : "");
    if (!st) {
        int64_t pb[3], o[3];
        for (int i = 0; i < cc->nsp; i++) {
            int64_t ek = (cc->k[i] - 1) * cc->d[i] + 1;
            if (cc->auto_pad) {
                o[i] = (cc->in[i] + cc->s[i] - 1) / cc->s[i];
                int64_t total = (o[i] - 1) * cc->s[i] + ek - cc->in[i];
                total = total < 0 ? 0 : total;
                pb[i] = strcmp(cc->auto_pad, "SAME_UPPER") == 0 ? total / 2 : total - total / 2;
            } else {
                pb[i] = cc->pads[i];
                o[i] = (cc->in[i] + cc->pads[i] + cc->pads[cc->nsp + i] - ek) / cc->s[i] + 1;
            }
        }
        int64_t od[5] = {cc->n, cc->m};
        for (int i = 0; i < cc->nsp; i++)
            od[2 + i] = o[i];
        ss_tensor ref = make(SS_DT_FLOAT64, 2 + cc->nsp, od, NULL);
        ref_conv(cc, pb, o, &x, &w, cc->bias ? &b : NULL, ref.data);
        double e = mismatch(&out, &ref, dt == SS_DT_FLOAT32 ? 1e-4 : 1e-10, 1e-5);
        CHECK_MSG(e <= 1, "conv nsp %d group %lld %s: error %g", cc->nsp, (long long)cc->group,
                  cc->auto_pad ? cc->auto_pad : "pads", e);
        ss_tensor_free(&ref);
        ss_tensor_free(&out);
    } else {
        ss_status_free(st);
    }
    ss_tensor_free(&x), ss_tensor_free(&w), ss_tensor_free(&b);
}

static void test_conv_matches_direct_reference(void)
{
    static const conv_case cases[] = {
        /* 2-D: plain, padded+strided asymmetric, dilated, grouped, depthwise, 1x1 direct, SAME */
        {2, 2, 3, 4, 1, {7, 6}, {3, 3}, {1, 1}, {1, 1}, {0, 0, 0, 0}, NULL, true},
        {2, 1, 2, 3, 1, {7, 8}, {3, 2}, {2, 3}, {1, 1}, {1, 0, 2, 1}, NULL, true},
        {2, 1, 2, 2, 1, {9, 9}, {3, 3}, {1, 2}, {2, 2}, {2, 1, 0, 3}, NULL, false},
        {2, 2, 4, 6, 2, {5, 6}, {3, 3}, {1, 1}, {1, 1}, {1, 1, 1, 1}, NULL, true},
        {2, 1, 4, 4, 4, {5, 5}, {3, 3}, {2, 2}, {1, 1}, {1, 1, 1, 1}, NULL, true},
        {2, 2, 5, 3, 1, {4, 3}, {1, 1}, {1, 1}, {1, 1}, {0, 0, 0, 0}, NULL, true},
        {2, 1, 3, 2, 1, {4, 3}, {1, 1}, {2, 1}, {1, 1}, {0, 0, 0, 0}, NULL, false},
        {2, 1, 2, 2, 1, {5, 6}, {3, 2}, {2, 2}, {1, 1}, {0}, "SAME_UPPER", true},
        {2, 1, 2, 2, 1, {5, 6}, {4, 3}, {3, 1}, {1, 2}, {0}, "SAME_LOWER", true},
        {2, 2, 3, 3, 3, {6, 7}, {3, 2}, {1, 2}, {2, 1}, {2, 0, 1, 1}, NULL, true}, /* depthwise */
        {2, 1, 2, 2, 2, {5, 5}, {2, 2}, {1, 1}, {1, 1}, {0}, "SAME_LOWER", false},
        /* 1-D and 3-D */
        {1, 2, 3, 2, 1, {10}, {3}, {2}, {2}, {1, 2}, NULL, true},
        {3, 1, 2, 3, 1, {4, 5, 4}, {2, 3, 2}, {1, 2, 1}, {1, 1, 2}, {1, 0, 1, 0, 1, 1}, NULL, true},
        {1, 2, 4, 4, 4, {9}, {3}, {2}, {1}, {1, 1}, NULL, true},
        {3, 1, 2, 2, 2, {3, 4, 5}, {2, 2, 3}, {1, 1, 2}, {1, 2, 1}, {0, 1, 1, 1, 0, 1}, NULL, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_conv(&cases[i], SS_DT_FLOAT32);
        check_conv(&cases[i], SS_DT_FLOAT64);
    }
}

static void test_conv_errors(void)
{
    int64_t xd[4] = {1, 3, 5, 5}, wd[4] = {2, 2, 3, 3}, x5[7] = {1, 1, 2, 2, 2, 2, 2};
    ss_tensor x = make(SS_DT_FLOAT32, 4, xd, NULL), w = make(SS_DT_FLOAT32, 4, wd, NULL), out;
    ss_tensor *in[2] = {&x, &w};
    tnode t;
    tnode_init(&t, "Conv");
    CHECK_ERR(run_op(&t, 11, 2, in, &out), "group"); /* 3 channels vs W's 2 */
    tnode_init(&t, "Conv");
    attr_str(&t, "auto_pad", "SAME_SIDEWAYS");
    CHECK_ERR(run_op(&t, 11, 2, in, &out), "auto_pad");
    tnode_init(&t, "Conv");
    attr_int(&t, "channels_last", 1);
    CHECK_ERR(run_op(&t, 11, 2, in, &out), "'channels_last'");
    ss_tensor x4 = make(SS_DT_FLOAT32, 7, x5, NULL), w4 = make(SS_DT_FLOAT32, 7, x5, NULL);
    in[0] = &x4, in[1] = &w4;
    tnode_init(&t, "Conv");
    ss_status *st = run_op(&t, 11, 2, in, &out);
    CHECK(st && st->code == SS_ERR_UNSUPPORTED && strstr(st->msg, "spatial"));
    ss_status_free(st);
    ss_tensor_free(&x), ss_tensor_free(&w), ss_tensor_free(&x4), ss_tensor_free(&w4);
}

/* ConvTranspose as the scatter it is defined to be: every input pixel adds kernel-weighted copies.
 */
static void check_convtranspose(ss_dtype dt, int64_t group, const int64_t *s, const int64_t *d,
                                const int64_t *pads, const int64_t *opad, const int64_t *oshape)
{
    int64_t C = 4, Mg = 3, xd[4] = {2, C, 3, 4}, wd[4] = {C, Mg, 3, 2}, bd[1] = {Mg * group};
    ss_tensor x = make_rand(dt, 4, xd), w = make_rand(dt, 4, wd), b = make_rand(dt, 1, bd);
    tnode t;
    tnode_init(&t, "ConvTranspose");
    int64_t sv[2] = {s[0], s[1]}, dv[2] = {d[0], d[1]},
            pv[4] = {pads[0], pads[1], pads[2], pads[3]};
    int64_t ov[2] = {opad[0], opad[1]}, osv[2] = {oshape ? oshape[0] : 0, oshape ? oshape[1] : 0};
    attr_ints(&t, "strides", sv, 2);
    attr_ints(&t, "dilations", dv, 2);
    attr_ints(&t, "output_padding", ov, 2);
    if (oshape)
        attr_ints(&t, "output_shape", osv, 2);
    else
        attr_ints(&t, "pads", pv, 4);
    attr_int(&t, "group", group);
    ss_tensor *in[3] = {&x, &w, &b};
    ss_tensor out;
    ss_status *st = run_op(&t, 11, 3, in, &out);
    CHECK_MSG(!st, "%s", st ? st->msg : "");
    if (st) {
        ss_status_free(st);
    } else {
        int64_t od[2], pb[2];
        for (int i = 0; i < 2; i++) {
            int64_t full = s[i] * (xd[2 + i] - 1) + opad[i] + (wd[2 + i] - 1) * d[i] + 1;
            if (oshape) {
                int64_t total = full - oshape[i];
                total = total < 0 ? 0 : total;
                od[i] = oshape[i], pb[i] = total - total / 2;
            } else {
                od[i] = full - pads[i] - pads[2 + i], pb[i] = pads[i];
            }
        }
        int64_t yd[4] = {2, Mg * group, od[0], od[1]};
        ss_tensor ref = make(SS_DT_FLOAT64, 4, yd, NULL);
        double *r = ref.data;
        int64_t cg = C / group;
        for (int64_t n = 0; n < 2; n++)
            for (int64_t m = 0; m < Mg * group; m++)
                for (int64_t i = 0; i < od[0] * od[1]; i++)
                    r[(n * Mg * group + m) * od[0] * od[1] + i] = get(&b, m);
        for (int64_t n = 0; n < 2; n++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t ih = 0; ih < xd[2]; ih++)
                    for (int64_t iw = 0; iw < xd[3]; iw++)
                        for (int64_t m = 0; m < Mg; m++)
                            for (int64_t kh = 0; kh < wd[2]; kh++)
                                for (int64_t kw = 0; kw < wd[3]; kw++) {
                                    int64_t oh = ih * s[0] - pb[0] + kh * d[0],
                                            ow = iw * s[1] - pb[1] + kw * d[1];
                                    if (oh < 0 || oh >= od[0] || ow < 0 || ow >= od[1]) continue;
                                    int64_t mo = (c / cg) * Mg + m;
                                    r[((n * Mg * group + mo) * od[0] + oh) * od[1] + ow] +=
                                        get(&x, ((n * C + c) * xd[2] + ih) * xd[3] + iw) *
                                        get(&w, ((c * Mg + m) * wd[2] + kh) * wd[3] + kw);
                                }
        double e = mismatch(&out, &ref, dt == SS_DT_FLOAT32 ? 1e-4 : 1e-10, 1e-5);
        CHECK_MSG(e <= 1, "convtranspose %s group %lld: error %g", ss_dtype_name(dt),
                  (long long)group, e);
        ss_tensor_free(&ref);
        ss_tensor_free(&out);
    }
    ss_tensor_free(&x), ss_tensor_free(&w), ss_tensor_free(&b);
}

static void test_convtranspose_matches_scatter_reference(void)
{
    int64_t one[2] = {1, 1}, s32[2] = {3, 2}, d21[2] = {2, 1}, zero4[4] = {0, 0, 0, 0},
            pads[4] = {1, 0, 2, 1};
    int64_t op[2] = {1, 0}, zero2[2] = {0, 0}, oshape[2] = {12, 9};
    for (int f64 = 0; f64 < 2; f64++) {
        ss_dtype dt = f64 ? SS_DT_FLOAT64 : SS_DT_FLOAT32;
        check_convtranspose(dt, 1, one, one, zero4, zero2, NULL);
        check_convtranspose(dt, 2, s32, d21, pads, op, NULL);
        check_convtranspose(dt, 4, s32, one, zero4, zero2, NULL);
        check_convtranspose(dt, 1, s32, one, zero4, zero2,
                            oshape); /* larger than computed: padded at the end */
    }
}

static void test_lrn_and_mvn(void)
{
    int64_t dims[4] = {1, 4, 1, 2};
    ss_tensor x = make_rand(SS_DT_FLOAT32, 4, dims), out;
    ss_tensor *in[1] = {&x};
    tnode t;
    tnode_init(&t, "LRN");
    attr_int(&t, "size", 2);
    attr_float(&t, "alpha", 0.5f);
    CHECK_OK(run_op(&t, 13, 1, in, &out));
    const float *xv = x.data;
    for (int c = 0; c < 4; c++)
        for (int s = 0; s < 2; s++) {
            double sq = 0; /* size 2: channels c and c + 1 */
            for (int cc = c; cc <= c + 1 && cc < 4; cc++)
                sq += xv[cc * 2 + s] * xv[cc * 2 + s];
            CHECK_NEAR(((float *)out.data)[c * 2 + s], xv[c * 2 + s] / pow(1 + 0.25 * sq, 0.75),
                       1e-6);
        }
    ss_tensor_free(&out);
    tnode_init(&t, "MeanVarianceNormalization");
    int64_t axes[2] = {1, -1};
    attr_ints(&t, "axes", axes, 2);
    CHECK_OK(run_op(&t, 13, 1, in, &out));
    double m = 0, q = 0;
    for (int i = 0; i < 8; i++)
        m += xv[i], q += xv[i] * xv[i];
    m /= 8, q = sqrt(q / 8 - m * m) + 1e-9;
    for (int i = 0; i < 8; i++)
        CHECK_NEAR(((float *)out.data)[i], (xv[i] - m) / q, 1e-5);
    ss_tensor_free(&out);
    ss_tensor_free(&x);
}

/* ------------------------------------------------------------------ pooling */

static void test_pools_match_reference(void)
{
    int64_t xd[4] = {1, 2, 6, 7};
    ss_tensor x = make_rand(SS_DT_FLOAT32, 4, xd);
    const float *xv = x.data;
    for (int ceil_mode = 0; ceil_mode < 2; ceil_mode++)
        for (int include = 0; include < 2; include++)
            for (int is_max = 0; is_max < 2; is_max++) {
                tnode t;
                tnode_init(&t, is_max ? "MaxPool" : "AveragePool");
                int64_t k[2] = {3, 2}, s[2] = {2, 2}, pads[4] = {1, 0, 1, 1};
                attr_ints(&t, "kernel_shape", k, 2);
                attr_ints(&t, "strides", s, 2);
                attr_ints(&t, "pads", pads, 4);
                attr_int(&t, "ceil_mode", ceil_mode);
                if (!is_max) attr_int(&t, "count_include_pad", include);
                ss_tensor out;
                ss_tensor *in[1] = {&x};
                CHECK_OK(run_op(&t, 12, 1, in, &out));
                int64_t oh = (6 + 2 - 3 + (ceil_mode ? 1 : 0)) / 2 + 1,
                        ow = (7 + 1 - 2 + (ceil_mode ? 1 : 0)) / 2 + 1;
                CHECK(out.ndim == 4 && out.dims[2] == oh && out.dims[3] == ow);
                for (int c = 0; c < 2 && out.ndim == 4 && out.dims[2] == oh && out.dims[3] == ow;
                     c++)
                    for (int64_t i = 0; i < oh; i++)
                        for (int64_t j = 0; j < ow; j++) {
                            double best = -INFINITY, sum = 0;
                            int cnt = 0, padded = 0;
                            for (int a = 0; a < 3; a++)
                                for (int b = 0; b < 2; b++) {
                                    int64_t h = i * 2 - 1 + a, w = j * 2 + b;
                                    if (h < 7 && w < 8) padded++; /* inside input + end pads */
                                    if (h < 0 || h >= 6 || w < 0 || w >= 7) continue;
                                    double v = xv[(c * 6 + h) * 7 + w];
                                    best = fmax(best, v), sum += v, cnt++;
                                }
                            double want = is_max ? best : sum / (include ? padded : cnt);
                            double got = ((float *)out.data)[(c * oh + i) * ow + j];
                            CHECK_MSG(fabs(got - want) < 1e-6,
                                      "%s ceil %d include %d at %d,%lld,%lld: %g vs %g",
                                      t.node.op_type, ceil_mode, include, c, (long long)i,
                                      (long long)j, got, want);
                        }
                ss_tensor_free(&out);
            }
    ss_tensor_free(&x);
}

static void test_maxpool_indices_and_global_pools(void)
{
    int64_t xd[4] = {2, 1, 2, 3};
    ss_tensor x = make(SS_DT_FLOAT32, 4, xd, (float[]){1, 5, 2, 7, 0, 3, 9, 8, 7, 6, 5, 4});
    ss_tensor *in[1] = {&x};
    ss_tensor out[2];
    tnode t;
    tnode_init(&t, "MaxPool");
    int64_t k[2] = {2, 2};
    attr_ints(&t, "kernel_shape", k, 2);
    CHECK_OK(run_op_n(&t, 12, 1, in, 2, out, NULL));
    CHECK(memcmp(out[0].data, (float[]){7, 5, 9, 8}, 16) == 0);
    CHECK(memcmp(out[1].data, (int64_t[]){3, 1, 6, 7}, 32) == 0);
    ss_tensor_free(&out[0]), ss_tensor_free(&out[1]);
    attr_int(&t, "storage_order", 1);
    CHECK_OK(run_op_n(&t, 12, 1, in, 2, out, NULL));
    CHECK(memcmp(out[1].data, (int64_t[]){1, 2, 6, 8}, 32) == 0);
    ss_tensor_free(&out[0]), ss_tensor_free(&out[1]);
    tnode_init(&t, "GlobalAveragePool");
    CHECK_OK(run_op(&t, 1, 1, in, out));
    CHECK(out[0].ndim == 4 && out[0].dims[2] == 1 && out[0].dims[3] == 1);
    CHECK_NEAR(((float *)out[0].data)[0], 18.0 / 6, 1e-6);
    CHECK_NEAR(((float *)out[0].data)[1], 39.0 / 6, 1e-6);
    ss_tensor_free(&out[0]);
    tnode_init(&t, "GlobalMaxPool");
    CHECK_OK(run_op(&t, 1, 1, in, out));
    CHECK(((float *)out[0].data)[0] == 7 && ((float *)out[0].data)[1] == 9);
    ss_tensor_free(&out[0]);
    tnode_init(&t, "MaxPool");
    CHECK_ERR(run_op(&t, 12, 1, in, out), "kernel_shape");
    ss_tensor_free(&x);
}

TEST_MAIN(TEST(test_alloc_counter_sees_malloc),
          TEST(test_reduce_every_axis_subset_matches_reference), TEST(test_reduce_integers),
          TEST(test_reduce_mean_last_axis_accumulates_in_double),
          TEST(test_reduce_sum_axes_input_and_noop), TEST(test_reduce_errors),
          TEST(test_argmax_argmin_every_axis_with_ties), TEST(test_softmax_axis_semantics_by_opset),
          TEST(test_softmax_long_rows_every_isa), TEST(test_hardmax_first_maximum),
          TEST(test_lp_normalization), TEST(test_layernorm_broadcast_params_and_stats),
          TEST(test_layernorm_rows_every_isa), TEST(test_batchnorm_inference_and_unsupported),
          TEST(test_instancenorm), TEST(test_losses_int32_targets_ignore_and_range),
          TEST(test_conv_matches_direct_reference), TEST(test_conv_errors),
          TEST(test_convtranspose_matches_scatter_reference), TEST(test_lrn_and_mvn),
          TEST(test_pools_match_reference), TEST(test_maxpool_indices_and_global_pools))
