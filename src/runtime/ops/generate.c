/*
 * Ops that make tensors from attributes and shapes: Constant, ConstantOfShape, Range, EyeLike,
 * OneHot.
 *
 * Constant has no inputs, so the planner always folds it; its value (from `value` or, from opset
 * 12, value_float(s)/value_int(s)/value_string(s)) is copied into the node's state in infer.
 * ConstantOfShape, Range and OneHot have output shapes that depend on input values; those are
 * read at plan time with ss_kctx_value(), and a value only known at run time fails with
 * SS_ERR_UNSUPPORTED "data-dependent output shape". Fills work by element size; run never
 * allocates (except Constant's string values, which are only ever produced at plan time).
 */
#include "common.h"

#include <math.h>
#include <string.h>

/* Writes the value 1 of dtype dt into dst; false for types without a 1. */
static bool one_bytes(ss_dtype dt, void *dst)
{
    switch (dt) {
    case SS_DT_FLOAT32: {
        float f = 1.0f;
        memcpy(dst, &f, 4);
        return true;
    }
    case SS_DT_FLOAT64: {
        double d = 1.0;
        memcpy(dst, &d, 8);
        return true;
    }
    case SS_DT_FLOAT16: {
        uint16_t h = 0x3C00;
        memcpy(dst, &h, 2);
        return true;
    }
    case SS_DT_BFLOAT16: {
        uint16_t h = 0x3F80;
        memcpy(dst, &h, 2);
        return true;
    }
    case SS_DT_STRING:
    case SS_DT_UNDEFINED:
        return false;
    default: {
        uint64_t one = 1; /* little-endian: the low bytes hold 1 for every integer width */
        memcpy(dst, &one, ss_dtype_size(dt));
        return true;
    }
    }
}

/* ------------------------------------------------------------------ Constant */

typedef struct {
    const Onnx__TensorProto *strings; /* string constants are copied from the proto in run */
    size_t nbytes;
    unsigned char bytes[];
} const_plan;

static ss_status *constant_set(ss_kctx *k, ss_dtype dt, int nd, int64_t n, const void *data)
{
    size_t nbytes = (size_t)n * ss_dtype_size(dt);
    const_plan *p = ss_op_state_alloc(k, sizeof *p + nbytes + 1);
    if (!p) return ss_op_oom();
    p->nbytes = nbytes;
    if (nbytes) memcpy(p->bytes, data, nbytes);
    ss_tensor *o = k->out[0];
    o->dtype = dt;
    o->ndim = nd;
    o->dims[0] = n;
    return NULL;
}

static ss_status *constant_infer(ss_kctx *k)
{
    if (k->n_in != 0 || k->n_out != 1)
        return ss_op_err(k, SS_ERR_INVALID, "takes no inputs and has one output");
    const ss_onnx_node *n = k->node;
    const ss_onnx_attr *a;
    if ((a = ss_onnx_attr_find(n, "value")) &&
        a->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR) {
        ss_tensor t = {0};
        ss_status *st = ss_onnx_tensor(NULL, a->t, &t);
        if (st) return ss_status_wrap(st, "%s node '%s'", n->op_type, k->node_name);
        if (t.dtype == SS_DT_STRING) {
            int64_t numel = ss_tensor_numel(&t);
            st = constant_set(k, SS_DT_UINT8, 0, 0, NULL);
            if (!st) {
                ((const_plan *)k->state)->strings = a->t;
                if ((size_t)numel != a->t->n_string_data)
                    st = ss_op_err(k, SS_ERR_INVALID,
                                   "string tensor has %zu values for %lld elements",
                                   a->t->n_string_data, (long long)numel);
            }
        } else {
            st = constant_set(k, t.dtype, 1, (int64_t)(t.nbytes / ss_dtype_size(t.dtype)), t.data);
        }
        if (!st) {
            k->out[0]->dtype = t.dtype;
            k->out[0]->ndim = t.ndim;
            memcpy(k->out[0]->dims, t.dims, sizeof t.dims);
        }
        ss_tensor_free(&t);
        return st;
    }
    if (ss_onnx_attr_find(n, "sparse_value"))
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "attribute 'sparse_value' is not supported");
    if ((a = ss_onnx_attr_find(n, "value_float")) &&
        a->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT)
        return constant_set(k, SS_DT_FLOAT32, 0, 1, &a->f);
    if ((a = ss_onnx_attr_find(n, "value_floats")) &&
        a->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS)
        return constant_set(k, SS_DT_FLOAT32, 1, (int64_t)a->n_floats, a->floats);
    if ((a = ss_onnx_attr_find(n, "value_int")) &&
        a->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT)
        return constant_set(k, SS_DT_INT64, 0, 1, &a->i);
    if ((a = ss_onnx_attr_find(n, "value_ints")) &&
        a->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS)
        return constant_set(k, SS_DT_INT64, 1, (int64_t)a->n_ints, a->ints);
    if (ss_onnx_attr_find(n, "value_string") || ss_onnx_attr_find(n, "value_strings"))
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "attributes 'value_string(s)' are not supported");
    return ss_op_err(k, SS_ERR_INVALID, "no value attribute");
}

static ss_status *constant_run(ss_kctx *k)
{
    const const_plan *p = k->state;
    ss_tensor *o = k->out[0];
    if (p->strings) {
        for (size_t i = 0; i < p->strings->n_string_data; i++) {
            ss_status *st =
                ss_tensor_set_string(o, (int64_t)i, (const char *)p->strings->string_data[i].data,
                                     p->strings->string_data[i].len);
            if (st) return st;
        }
        return NULL;
    }
    if (p->nbytes) memcpy(o->data, p->bytes, p->nbytes);
    return NULL;
}

/* ------------------------------------------------------------------ ConstantOfShape */

typedef struct {
    unsigned char value[16];
} fill_plan;

static ss_status *const_of_shape_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (st) return st;
    const ss_tensor *shape = NULL;
    if ((st = ss_op_plan_value(k, 0, "input", &shape))) return st;
    int64_t dims[SS_MAX_DIMS];
    if (shape->dtype != SS_DT_INT64) return ss_op_err(k, SS_ERR_INVALID, "the shape must be int64");
    int nd = ss_op_read_ints(shape, dims, SS_MAX_DIMS);
    if (nd < 0)
        return ss_op_err(k, SS_ERR_INVALID, "the shape must be 1-D with at most %d values",
                         SS_MAX_DIMS);
    for (int i = 0; i < nd; i++)
        if (dims[i] < 0)
            return ss_op_err(k, SS_ERR_INVALID, "negative dim %lld", (long long)dims[i]);
    fill_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    ss_tensor *o = k->out[0];
    o->dtype = SS_DT_FLOAT32;
    const ss_onnx_attr *a = ss_onnx_attr_find(k->node, "value");
    if (a) {
        ss_tensor t = {0};
        if (a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR)
            return ss_op_err(k, SS_ERR_INVALID, "'value' must be a tensor");
        if ((st = ss_onnx_tensor(NULL, a->t, &t)))
            return ss_status_wrap(st, "ConstantOfShape node '%s'", k->node_name);
        if (ss_tensor_numel(&t) != 1 || t.dtype == SS_DT_STRING ||
            ss_dtype_size(t.dtype) > sizeof p->value)
            st = ss_op_err(k, SS_ERR_INVALID, "'value' must be one numeric or bool element");
        else {
            memcpy(p->value, t.data, ss_dtype_size(t.dtype));
            o->dtype = t.dtype;
        }
        ss_tensor_free(&t);
        if (st) return st;
    }
    o->ndim = nd;
    memcpy(o->dims, dims, sizeof(int64_t) * (size_t)nd);
    if (ss_tensor_numel(o) < 0) return ss_op_err(k, SS_ERR_LIMIT, "output too large");
    return NULL;
}

static ss_status *const_of_shape_run(ss_kctx *k)
{
    const fill_plan *p = k->state;
    ss_tensor *o = k->out[0];
    ss_op_fill(o->data, p->value, ss_tensor_numel(o), ss_dtype_size(o->dtype));
    return NULL;
}

/* ------------------------------------------------------------------ Range */

/* Range, and com.microsoft's Range, whose delta is optional (1 when absent). */
static bool range_has_delta(const ss_kctx *k)
{
    return k->n_in > 2 && k->in[2];
}

static ss_status *range_infer(ss_kctx *k)
{
    bool ms = k->node->domain && !strcmp(k->node->domain, "com.microsoft");
    ss_status *st = ss_op_expect_inputs(k, ms ? 2 : 3, 3);
    if (st) return st;
    static const ss_dtype types[] = {SS_DT_FLOAT32, SS_DT_FLOAT64, SS_DT_INT16, SS_DT_INT32,
                                     SS_DT_INT64};
    if ((st = ss_op_expect_dtype(k, 0, types, 5))) return st;
    const ss_tensor *v[3] = {0};
    static const char *names[3] = {"start", "limit", "delta"};
    for (int i = 0; i < (range_has_delta(k) ? 3 : 2); i++) {
        if (k->in[i]->dtype != k->in[0]->dtype || ss_tensor_numel(k->in[i]) != 1)
            return ss_op_err(k, SS_ERR_INVALID, "'%s' must be a scalar of the same type as 'start'",
                             names[i]);
        if ((st = ss_op_plan_value(k, i, names[i], &v[i]))) return st;
    }
    int64_t n;
    if (ss_dtype_is_float(k->in[0]->dtype)) {
        double s = ss_op_elem_f64(v[0], 0), l = ss_op_elem_f64(v[1], 0),
               d = v[2] ? ss_op_elem_f64(v[2], 0) : 1;
        if (d == 0) return ss_op_err(k, SS_ERR_INVALID, "delta is zero");
        double c = ceil((l - s) / d);
        if (!(c < 1e12)) return ss_op_err(k, SS_ERR_LIMIT, "range too long");
        n = c > 0 ? (int64_t)c : 0;
    } else {
        int64_t s = ss_op_elem_i64(v[0], 0), l = ss_op_elem_i64(v[1], 0),
                d = v[2] ? ss_op_elem_i64(v[2], 0) : 1;
        if (d == 0) return ss_op_err(k, SS_ERR_INVALID, "delta is zero");
        /* unsigned arithmetic: exact for any int64 start, limit and delta */
        uint64_t span = d > 0 ? (l > s ? (uint64_t)l - (uint64_t)s : 0)
                              : (s > l ? (uint64_t)s - (uint64_t)l : 0);
        uint64_t step = d > 0 ? (uint64_t)d : 0 - (uint64_t)d;
        uint64_t c = span / step + (span % step != 0);
        if (c > ((uint64_t)1 << 40)) return ss_op_err(k, SS_ERR_LIMIT, "range too long");
        n = (int64_t)c;
    }
    ss_tensor *o = k->out[0];
    o->dtype = k->in[0]->dtype;
    o->ndim = 1;
    o->dims[0] = n;
    return NULL;
}

#define RANGE_FLOAT(T)                                                                             \
    do {                                                                                           \
        T s, d = 1, *out = o->data;                                                                \
        memcpy(&s, k->in[0]->data, sizeof s);                                                      \
        if (range_has_delta(k)) memcpy(&d, k->in[2]->data, sizeof d);                              \
        for (int64_t i = 0; i < n; i++)                                                            \
            out[i] = s + (T)i * d;                                                                 \
    } while (0)

/* Integers step in uint64 (wrapping): every value lies in [start, limit), so the wrapped sum is
 * exact even where i * delta alone would overflow. */
#define RANGE_INT(T)                                                                               \
    do {                                                                                           \
        T s, d = 1, *out = o->data;                                                                \
        memcpy(&s, k->in[0]->data, sizeof s);                                                      \
        if (range_has_delta(k)) memcpy(&d, k->in[2]->data, sizeof d);                              \
        uint64_t us = (uint64_t)(int64_t)s, ud = (uint64_t)(int64_t)d;                             \
        for (int64_t i = 0; i < n; i++)                                                            \
            out[i] = (T)(int64_t)(us + (uint64_t)i * ud);                                          \
    } while (0)

static ss_status *range_run(ss_kctx *k)
{
    ss_tensor *o = k->out[0];
    int64_t n = o->dims[0];
    switch (o->dtype) {
    case SS_DT_FLOAT32:
        RANGE_FLOAT(float);
        break;
    case SS_DT_FLOAT64:
        RANGE_FLOAT(double);
        break;
    case SS_DT_INT16:
        RANGE_INT(int16_t);
        break;
    case SS_DT_INT32:
        RANGE_INT(int32_t);
        break;
    default:
        RANGE_INT(int64_t);
        break;
    }
    return NULL;
}

/* ------------------------------------------------------------------ EyeLike */

typedef struct {
    unsigned char one[16];
    int64_t k;
} eye_plan;

static ss_status *eye_like_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->ndim != 2) return ss_op_err(k, SS_ERR_INVALID, "input must be 2-D");
    int64_t dt = ss_onnx_attr_int(k->node, "dtype", x->dtype);
    if (!ss_dtype_valid((int)dt) || dt == SS_DT_STRING || dt == SS_DT_UNDEFINED)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "dtype %lld", (long long)dt);
    eye_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    one_bytes((ss_dtype)dt, p->one);
    p->k = ss_onnx_attr_int(k->node, "k", 0);
    /* beyond the matrix every k gives all zeros; clamping keeps r + k exact */
    if (p->k > x->dims[1]) p->k = x->dims[1];
    if (p->k < -x->dims[0]) p->k = -x->dims[0];
    ss_op_same_shape(k->out[0], x);
    k->out[0]->dtype = (ss_dtype)dt;
    return NULL;
}

static ss_status *eye_like_run(ss_kctx *k)
{
    const eye_plan *p = k->state;
    ss_tensor *o = k->out[0];
    size_t es = ss_dtype_size(o->dtype);
    int64_t R = o->dims[0], C = o->dims[1];
    if (o->nbytes) memset(o->data, 0, o->nbytes);
    for (int64_t r = 0; r < R; r++) {
        int64_t c = r + p->k;
        if (c >= 0 && c < C) memcpy((char *)o->data + (size_t)(r * C + c) * es, p->one, es);
    }
    return NULL;
}

/* ------------------------------------------------------------------ OneHot */

typedef struct {
    int64_t outer, inner, depth;
} onehot_plan;

static ss_status *onehot_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 3, 3);
    if (st) return st;
    const ss_tensor *ix = k->in[0], *vals = k->in[2], *depth = NULL;
    if (ix->dtype == SS_DT_STRING || ix->dtype == SS_DT_BOOL || k->in[1]->dtype == SS_DT_STRING)
        return ss_op_err(k, SS_ERR_INVALID, "indices and depth must be numeric");
    if (ss_tensor_numel(vals) != 2 || vals->dtype == SS_DT_STRING)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "values must be two numeric elements [off, on]");
    if (ss_tensor_numel(k->in[1]) != 1)
        return ss_op_err(k, SS_ERR_INVALID, "depth must be one value");
    if ((st = ss_op_plan_value(k, 1, "depth", &depth))) return st;
    double dd = ss_op_elem_f64(depth, 0);
    if (!(dd >= 1 && dd <= (double)((int64_t)1 << 40)))
        return ss_op_err(k, SS_ERR_INVALID, "depth %g must be in 1..2^40", dd);
    int64_t d = (int64_t)dd;
    int r = ix->ndim;
    if (r + 1 > SS_MAX_DIMS) return ss_op_err(k, SS_ERR_LIMIT, "output rank too large");
    int64_t axis = ss_onnx_attr_int(k->node, "axis", -1);
    if (axis < 0) axis += r + 1;
    if (axis < 0 || axis > r) return ss_op_err(k, SS_ERR_INVALID, "axis out of range");
    onehot_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->depth = d;
    p->outer = 1;
    p->inner = 1;
    ss_tensor *o = k->out[0];
    o->dtype = vals->dtype;
    o->ndim = r + 1;
    for (int i = 0, j = 0; i <= r; i++) {
        if (i == axis) {
            o->dims[i] = d;
            continue;
        }
        o->dims[i] = ix->dims[j];
        if (i < axis)
            p->outer *= ix->dims[j];
        else
            p->inner *= ix->dims[j];
        j++;
    }
    if (ss_tensor_numel(o) < 0) return ss_op_err(k, SS_ERR_LIMIT, "output too large");
    return NULL;
}

static ss_status *onehot_run(ss_kctx *k)
{
    const onehot_plan *p = k->state;
    const ss_tensor *ix = k->in[0], *vals = k->in[2];
    ss_tensor *o = k->out[0];
    size_t es = ss_dtype_size(o->dtype);
    const char *off = vals->data, *on = off + es;
    char *dst = o->data;
    ss_op_fill(dst, off, ss_tensor_numel(o), es);
    for (int64_t a = 0; a < p->outer; a++)
        for (int64_t b = 0; b < p->inner; b++) {
            int64_t i;
            if (ss_dtype_is_float(ix->dtype)) {
                double f = ss_op_elem_f64(ix, a * p->inner + b);
                i = f > -(double)p->depth - 1 && f < (double)p->depth + 1 ? (int64_t)f : p->depth;
            } else {
                i = ss_op_elem_i64(ix, a * p->inner + b);
            }
            if (i < 0) i += p->depth;
            if (i < 0 || i >= p->depth) continue; /* out of range: the row stays all "off" */
            memcpy(dst + (size_t)((a * p->depth + i) * p->inner + b) * es, on, es);
        }
    return NULL;
}

const ss_op_def ss_ops_generate[] = {
    {"", "Constant", 1, 21, constant_infer, constant_run, 0},
    {"", "ConstantOfShape", 9, 21, const_of_shape_infer, const_of_shape_run, 0},
    {"", "Range", 11, 21, range_infer, range_run, 0},
    {"com.microsoft", "Range", 1, 1, range_infer, range_run, 0},
    {"", "EyeLike", 9, 21, eye_like_infer, eye_like_run, 0},
    {"", "OneHot", 9, 21, onehot_infer, onehot_run, 0},
    {0},
};
