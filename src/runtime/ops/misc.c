/*
 * Small ops with no family of their own: Dropout (inference), CumSum, Shrink, ReverseSequence
 * and Det.
 *
 * Dropout is an identity at inference; training_mode (an input from opset 12) is accepted only
 * when its plan-time value makes the op deterministic (false, or a ratio of 0), because a random
 * mask could not match any other runtime. CumSum reads its axis at run time (a 0-D input).
 * Det factorises each matrix in double with partial pivoting in the scratch buffer. None of the
 * kernels allocates.
 */
#include "common.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ Dropout */

static ss_status *dropout_check_training(ss_kctx *k)
{
    if (k->n_in < 3 || !k->in[2]) return NULL;
    const ss_tensor *t = NULL, *r = NULL;
    ss_status *st = ss_op_plan_value(k, 2, "training_mode", &t);
    if (st) return st;
    if (t->dtype != SS_DT_BOOL || ss_tensor_numel(t) != 1)
        return ss_op_err(k, SS_ERR_INVALID, "training_mode must be one bool");
    if (!ss_op_elem_f64(t, 0)) return NULL;
    double ratio = 0.5;
    if (k->in[1]) {
        if ((st = ss_op_plan_value(k, 1, "ratio", &r))) return st;
        if (ss_tensor_numel(r) != 1) return ss_op_err(k, SS_ERR_INVALID, "ratio must be a scalar");
        ratio = ss_op_elem_f64(r, 0);
    }
    if (ratio != 0)
        return ss_op_err(k, SS_ERR_UNSUPPORTED,
                         "training_mode true with ratio %g draws a random mask; only inference "
                         "(or ratio 0) is supported",
                         ratio);
    return NULL;
}

static ss_status *dropout_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"ratio", "seed", NULL};
    ss_status *st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_op_expect_inputs(k, 1, k->opset >= 12 ? 3 : 1);
    if (!st) st = dropout_check_training(k);
    if (st) return st;
    ss_op_same_shape(k->out[0], k->in[0]);
    if (k->n_out > 1 && k->out[1]) {
        ss_op_same_shape(k->out[1], k->in[0]);
        if (k->opset >= 10) k->out[1]->dtype = SS_DT_BOOL; /* before 10 the mask is of type T */
    }
    return NULL;
}

static ss_status *dropout_run(ss_kctx *k)
{
    if (k->out[0]->data != k->in[0]->data && k->in[0]->nbytes)
        memcpy(k->out[0]->data, k->in[0]->data, k->in[0]->nbytes);
    if (k->n_out > 1 && k->out[1]) {
        ss_tensor *m = k->out[1];
        for (int64_t i = 0, n = ss_tensor_numel(m); i < n; i++)
            ss_op_store_f64(m->data, i, m->dtype, 1);
    }
    return NULL;
}

/* ------------------------------------------------------------------ CumSum */

static ss_status *cumsum_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"exclusive", "reverse", NULL};
    static const ss_dtype types[] = {SS_DT_FLOAT32, SS_DT_FLOAT64, SS_DT_INT32,
                                     SS_DT_INT64,   SS_DT_UINT32,  SS_DT_UINT64};
    ss_status *st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_op_expect_inputs(k, 2, 2);
    if (!st) st = ss_op_expect_dtype(k, 0, types, 6);
    if (st) return st;
    if (k->in[0]->ndim < 1) return ss_op_err(k, SS_ERR_INVALID, "input must have rank >= 1");
    const ss_tensor *axis = k->in[1];
    if ((axis->dtype != SS_DT_INT32 && axis->dtype != SS_DT_INT64) || ss_tensor_numel(axis) != 1)
        return ss_op_err(k, SS_ERR_INVALID, "axis must be one int32 or int64");
    ss_op_same_shape(k->out[0], k->in[0]);
    return NULL;
}

/* Prefix sums along the middle dim of [outer, n, inner]; reverse walks it backwards and
 * exclusive writes the sum of the elements before (after, reversed) each one. */
#define CUMSUM(T)                                                                                  \
    do {                                                                                           \
        const T *x = k->in[0]->data;                                                               \
        T *y = k->out[0]->data;                                                                    \
        for (int64_t o = 0; o < outer; o++)                                                        \
            for (int64_t in = 0; in < inner; in++) {                                               \
                T acc = 0;                                                                         \
                for (int64_t j = 0; j < n; j++) {                                                  \
                    int64_t idx = (o * n + (reverse ? n - 1 - j : j)) * inner + in;                \
                    if (exclusive) {                                                               \
                        y[idx] = acc;                                                              \
                        acc += x[idx];                                                             \
                    } else {                                                                       \
                        acc += x[idx];                                                             \
                        y[idx] = acc;                                                              \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
    } while (0)

static ss_status *cumsum_run(ss_kctx *k)
{
    int axis;
    ss_status *st = ss_op_axis(k, ss_op_elem_i64(k->in[1], 0), k->in[0]->ndim, &axis);
    if (st) return st;
    int64_t outer, n, inner;
    ss_op_split_axis(k->in[0], axis, &outer, &n, &inner);
    bool exclusive = ss_onnx_attr_int(k->node, "exclusive", 0) != 0;
    bool reverse = ss_onnx_attr_int(k->node, "reverse", 0) != 0;
    switch (k->in[0]->dtype) {
    case SS_DT_FLOAT32:
        CUMSUM(float);
        break;
    case SS_DT_FLOAT64:
        CUMSUM(double);
        break;
    case SS_DT_INT32:
        CUMSUM(int32_t);
        break;
    case SS_DT_UINT32:
        CUMSUM(uint32_t);
        break;
    case SS_DT_UINT64:
        CUMSUM(uint64_t);
        break;
    default:
        CUMSUM(int64_t);
        break;
    }
    return NULL;
}

/* ------------------------------------------------------------------ Shrink */

static ss_status *shrink_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"bias", "lambd", NULL};
    ss_status *st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_op_expect_inputs(k, 1, 1);
    if (st) return st;
    if (k->in[0]->dtype == SS_DT_STRING || k->in[0]->dtype == SS_DT_BOOL)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "input type %s", ss_dtype_name(k->in[0]->dtype));
    ss_op_same_shape(k->out[0], k->in[0]);
    return NULL;
}

static ss_status *shrink_run(ss_kctx *k)
{
    double bias = ss_onnx_attr_float(k->node, "bias", 0.0f);
    double lambd = ss_onnx_attr_float(k->node, "lambd", 0.5f);
    for (int64_t i = 0, n = ss_tensor_numel(k->in[0]); i < n; i++) {
        double x = ss_op_elem_f64(k->in[0], i);
        ss_op_store_f64(k->out[0]->data, i, k->out[0]->dtype,
                        x < -lambd  ? x + bias
                        : x > lambd ? x - bias
                                    : 0);
    }
    return NULL;
}

/* ------------------------------------------------------------------ ReverseSequence */

typedef struct {
    int batch_axis, time_axis;
} revseq_plan;

static ss_status *revseq_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"batch_axis", "time_axis", NULL};
    ss_status *st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_op_expect_inputs(k, 2, 2);
    if (st) return st;
    const ss_tensor *x = k->in[0], *lens = k->in[1];
    if (x->ndim < 2) return ss_op_err(k, SS_ERR_INVALID, "input must have rank >= 2");
    int b, t;
    if ((st = ss_op_attr_axis(k, "batch_axis", 1, x->ndim, &b)) ||
        (st = ss_op_attr_axis(k, "time_axis", 0, x->ndim, &t)))
        return st;
    if (b > 1 || t > 1 || b == t)
        return ss_op_err(k, SS_ERR_INVALID, "batch_axis and time_axis must be 0 and 1 or 1 and 0");
    if (lens->dtype != SS_DT_INT64 || lens->ndim != 1 || lens->dims[0] != x->dims[b])
        return ss_op_err(k, SS_ERR_INVALID, "sequence_lens must be int64 of shape [%lld]",
                         (long long)x->dims[b]);
    revseq_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->batch_axis = b;
    p->time_axis = t;
    ss_op_same_shape(k->out[0], x);
    return NULL;
}

static ss_status *revseq_run(ss_kctx *k)
{
    const revseq_plan *p = k->state;
    const ss_tensor *x = k->in[0];
    size_t es = ss_dtype_size(x->dtype);
    int64_t nt = x->dims[p->time_axis], nb = x->dims[p->batch_axis];
    size_t row = es * (size_t)ss_op_dims_prod(x->dims, 2, x->ndim);
    int64_t ts = p->time_axis == 0 ? nb : 1, bs = p->batch_axis == 0 ? nt : 1;
    for (int64_t b = 0; b < nb; b++) {
        int64_t len = ss_op_elem_i64(k->in[1], b);
        if (len < 0 || len > nt)
            return ss_op_err(k, SS_ERR_INVALID, "sequence_lens[%lld] = %lld is outside [0, %lld]",
                             (long long)b, (long long)len, (long long)nt);
        for (int64_t t = 0; t < nt; t++) {
            int64_t src = t < len ? len - 1 - t : t;
            memcpy((char *)k->out[0]->data + (size_t)(t * ts + b * bs) * row,
                   (const char *)x->data + (size_t)(src * ts + b * bs) * row, row);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ Det */

static ss_status *det_infer(ss_kctx *k)
{
    ss_status *st = ss_op_check_attrs(k, (const char *const[]){NULL});
    if (!st) st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = ss_op_expect_float(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->ndim < 2 || x->dims[x->ndim - 1] != x->dims[x->ndim - 2])
        return ss_op_err(k, SS_ERR_INVALID, "input must be [*, M, M]");
    int64_t m = x->dims[x->ndim - 1];
    k->scratch_bytes = sizeof(double) * (size_t)(m * m);
    k->out[0]->dtype = x->dtype;
    k->out[0]->ndim = x->ndim - 2;
    memcpy(k->out[0]->dims, x->dims, sizeof(int64_t) * (size_t)(x->ndim - 2));
    return NULL;
}

/* Determinant of the m x m matrix in a (destroyed): Gaussian elimination, partial pivoting. */
static double det_lu(double *a, int64_t m)
{
    double det = 1;
    for (int64_t c = 0; c < m; c++) {
        int64_t piv = c;
        for (int64_t r = c + 1; r < m; r++)
            if (fabs(a[r * m + c]) > fabs(a[piv * m + c])) piv = r;
        if (a[piv * m + c] == 0) return 0;
        if (piv != c) {
            for (int64_t j = 0; j < m; j++) {
                double t = a[c * m + j];
                a[c * m + j] = a[piv * m + j];
                a[piv * m + j] = t;
            }
            det = -det;
        }
        det *= a[c * m + c];
        for (int64_t r = c + 1; r < m; r++) {
            double f = a[r * m + c] / a[c * m + c];
            for (int64_t j = c; j < m; j++)
                a[r * m + j] -= f * a[c * m + j];
        }
    }
    return det;
}

static ss_status *det_run(ss_kctx *k)
{
    const ss_tensor *x = k->in[0];
    int64_t m = x->dims[x->ndim - 1], mm = m * m;
    double *a = k->scratch;
    for (int64_t b = 0, nb = ss_tensor_numel(k->out[0]); b < nb; b++) {
        for (int64_t i = 0; i < mm; i++)
            a[i] = ss_op_elem_f64(x, b * mm + i);
        ss_op_store_f64(k->out[0]->data, b, k->out[0]->dtype, det_lu(a, m));
    }
    return NULL;
}

const ss_op_def ss_ops_misc[] = {
    {"", "Dropout", 7, 21, dropout_infer, dropout_run, SS_OPF_ELEMENTWISE},
    {"", "CumSum", 11, 21, cumsum_infer, cumsum_run, 0},
    {"", "Shrink", 9, 21, shrink_infer, shrink_run, SS_OPF_ELEMENTWISE},
    {"", "ReverseSequence", 10, 21, revseq_infer, revseq_run, 0},
    {"", "Det", 11, 21, det_infer, det_run, 0},
    {0},
};
