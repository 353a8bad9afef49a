/*
 * onnxruntime's com.microsoft math ops: Inverse (batched square matrices) and CDist (pairwise
 * distances). Both compute in float64; Inverse reads and writes float32 or float64, CDist float32
 * (other float types through contrib.h's converted copies); neither allocates at run time.
 *
 * Inverse: Gauss-Jordan elimination with partial pivoting (onnxruntime uses Eigen's LU with
 * partial pivoting), [..., N, N] -> the same shape. A singular matrix gives infinities or NaNs,
 * as Eigen's does, not an error. CDist: A [N, K] and B [M, K] -> [N, M], metric "sqeuclidean"
 * (the default) or "euclidean".
 */
#include "contrib.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ Inverse */

typedef struct {
    int64_t n, count; /* matrix size, matrices */
} inverse_plan;

static ss_status *inverse_plan_make(ss_kctx *k)
{
    static const char *const none[] = {NULL};
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = ss_op_check_attrs(k, none);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->dtype != SS_DT_FLOAT32 && x->dtype != SS_DT_FLOAT64)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "input has type %s; expects a float type",
                         ss_dtype_name(x->dtype));
    if (x->ndim < 2 || x->dims[x->ndim - 1] != x->dims[x->ndim - 2])
        return ss_op_err(k, SS_ERR_INVALID, "input must be [..., N, N] (square matrices)");
    inverse_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->n = x->dims[x->ndim - 1];
    p->count = p->n ? ss_tensor_numel(x) / (p->n * p->n) : 0;
    if (p->n > 4096)
        return ss_op_err(k, SS_ERR_LIMIT, "matrices of %lld rows (at most 4096)", (long long)p->n);
    k->scratch_bytes = sizeof(double) * (size_t)(2 * p->n * p->n);
    ss_op_same_shape(k->out[0], x);
    return NULL;
}

/* a (n x n, destroyed) -> inv, by Gauss-Jordan with the largest pivot of each column. */
static void invert(double *a, double *inv, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            inv[i * n + j] = i == j;
    for (int64_t c = 0; c < n; c++) {
        int64_t piv = c;
        for (int64_t r = c + 1; r < n; r++)
            if (fabs(a[r * n + c]) > fabs(a[piv * n + c])) piv = r;
        if (piv != c)
            for (int64_t j = 0; j < n; j++) {
                double t = a[c * n + j];
                a[c * n + j] = a[piv * n + j], a[piv * n + j] = t;
                t = inv[c * n + j];
                inv[c * n + j] = inv[piv * n + j], inv[piv * n + j] = t;
            }
        double d = a[c * n + c]; /* 0 for a singular matrix: infinities and NaNs follow */
        for (int64_t j = 0; j < n; j++)
            a[c * n + j] /= d, inv[c * n + j] /= d;
        for (int64_t r = 0; r < n; r++) {
            double f = a[r * n + c];
            if (r == c || f == 0) continue;
            for (int64_t j = 0; j < n; j++)
                a[r * n + j] -= f * a[c * n + j], inv[r * n + j] -= f * inv[c * n + j];
        }
    }
}

static ss_status *inverse_compute(ss_kctx *k)
{
    const inverse_plan *p = k->state;
    int64_t nn = p->n * p->n;
    double *a = k->scratch, *inv = a + nn;
    const ss_tensor *x = k->in[0];
    bool f64 = x->dtype == SS_DT_FLOAT64;
    for (int64_t m = 0; m < p->count; m++) {
        for (int64_t i = 0; i < nn; i++)
            a[i] = ss_op_elem_f64(x, m * nn + i);
        invert(a, inv, p->n);
        for (int64_t i = 0; i < nn; i++)
            if (f64)
                ((double *)k->out[0]->data)[m * nn + i] = inv[i];
            else
                ((float *)k->out[0]->data)[m * nn + i] = (float)inv[i];
    }
    return NULL;
}

/* float16 and bfloat16 through float32 copies; float64 as it is */
static bool inverse_half(const ss_tensor *x)
{
    return x->dtype == SS_DT_FLOAT16 || x->dtype == SS_DT_BFLOAT16;
}

static ss_status *inverse_infer(ss_kctx *k)
{
    if (k->n_in > 0 && k->in[0] && inverse_half(k->in[0]))
        return ss_op_infer_as_f32(k, inverse_plan_make);
    return inverse_plan_make(k);
}

static ss_status *inverse_run(ss_kctx *k)
{
    return inverse_half(k->in[0]) ? ss_op_run_as_f32(k, inverse_compute) : inverse_compute(k);
}

/* ------------------------------------------------------------------ CDist */

static ss_status *cdist_infer_f32(ss_kctx *k)
{
    static const char *const attrs[] = {"metric", NULL};
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_contrib_expect_f32(k, 2);
    if (st) return st;
    const ss_tensor *a = k->in[0], *b = k->in[1];
    if (a->ndim != 2 || b->ndim != 2 || a->dims[1] != b->dims[1])
        return ss_op_err(k, SS_ERR_INVALID, "inputs must be [N, K] and [M, K]");
    char buf[32];
    const char *metric = ss_onnx_attr_string(k->node, "metric", buf, sizeof buf);
    bool *root = ss_op_state_alloc(k, sizeof *root);
    if (!root) return ss_op_oom();
    if (!metric || !strcmp(metric, "sqeuclidean"))
        *root = false;
    else if (!strcmp(metric, "euclidean"))
        *root = true;
    else
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "metric '%s' (sqeuclidean or euclidean)", metric);
    *k->out[0] = (ss_tensor){.dtype = SS_DT_FLOAT32, .ndim = 2, .dims = {a->dims[0], b->dims[0]}};
    return NULL;
}

static ss_status *cdist_run_f32(ss_kctx *k)
{
    bool root = *(const bool *)k->state;
    const ss_tensor *a = k->in[0], *b = k->in[1];
    int64_t N = a->dims[0], M = b->dims[0], K = a->dims[1];
    const float *av = a->data, *bv = b->data;
    float *y = k->out[0]->data;
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < M; j++) {
            double s = 0;
            for (int64_t c = 0; c < K; c++) {
                double d = (double)av[i * K + c] - bv[j * K + c];
                s += d * d;
            }
            y[i * M + j] = (float)(root ? sqrt(s) : s);
        }
    return NULL;
}

SS_CONTRIB_F32(cdist)

const ss_op_def ss_ops_contrib_math[] = {
    {SS_DOMAIN_MS, "Inverse", 1, 1, inverse_infer, inverse_run, 0, NULL},
    {SS_DOMAIN_MS, "CDist", 1, 1, cdist_infer, cdist_run, 0, NULL},
    {NULL, NULL, 0, 0, NULL, NULL, 0, NULL},
};
