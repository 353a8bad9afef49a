/*
 * Index-driven reads and writes: ScatterElements (and its deprecated name Scatter), ScatterND
 * and GatherND.
 *
 * The output of a scatter starts as a copy of data; each update then replaces its target element
 * (or slice), or combines with it under `reduction` (add, mul from opset 16, max, min from 18),
 * in the order of the updates, as the spec's reference loops do. Plain copies move elements by
 * size, so every dtype but string is served; reductions read and write through double, which is
 * exact for every dtype but 64-bit integers beyond 2^53. Indices may be negative (counted from
 * the end); one out of range fails the run naming the node. run never allocates.
 */
#include "common.h"

#include <string.h>

typedef enum { RED_NONE = 0, RED_ADD, RED_MUL, RED_MAX, RED_MIN } reduction;

/* The `reduction` attribute, as far as the opset defines it. */
static ss_status *read_reduction(const ss_kctx *k, reduction *out)
{
    char buf[16];
    const char *r = ss_onnx_attr_string(k->node, "reduction", buf, sizeof buf);
    *out = RED_NONE;
    if (!r || strcmp(r, "none") == 0) return NULL;
    if (strcmp(r, "add") == 0 && k->opset >= 16) *out = RED_ADD;
    if (strcmp(r, "mul") == 0 && k->opset >= 16) *out = RED_MUL;
    if (strcmp(r, "max") == 0 && k->opset >= 18) *out = RED_MAX;
    if (strcmp(r, "min") == 0 && k->opset >= 18) *out = RED_MIN;
    if (*out == RED_NONE)
        return ss_op_err(k, SS_ERR_INVALID, "reduction '%s' is not defined at opset %lld", r,
                         (long long)k->opset);
    return NULL;
}

/* out[o .. o+n) op= upd[u .. u+n), element by element. */
static void combine(ss_tensor *out, int64_t o, const ss_tensor *upd, int64_t u, int64_t n,
                    reduction r)
{
    size_t es = ss_dtype_size(out->dtype);
    if (r == RED_NONE) {
        memcpy((char *)out->data + (size_t)o * es, (const char *)upd->data + (size_t)u * es,
               (size_t)n * es);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        double a = ss_op_elem_f64(out, o + i), b = ss_op_elem_f64(upd, u + i);
        double v = r == RED_ADD   ? a + b
                   : r == RED_MUL ? a * b
                   : r == RED_MAX ? (a > b ? a : b)
                                  : (a < b ? a : b);
        ss_op_store_f64(out->data, o + i, out->dtype, v);
    }
}

/* Index value i of `indices` for an axis of length n, normalised, or -1 when out of range. */
static int64_t read_index(const ss_tensor *indices, int64_t i, int64_t n)
{
    int64_t v = ss_op_elem_i64(indices, i);
    if (v < 0) v += n;
    return v < 0 || v >= n ? -1 : v;
}

static ss_status *index_error(const ss_kctx *k, int64_t i)
{
    return ss_op_err(k, SS_ERR_INVALID, "index %lld (element %lld of indices) is out of range",
                     (long long)ss_op_elem_i64(k->in[1], i), (long long)i);
}

static ss_status *expect_indices(const ss_kctx *k)
{
    ss_dtype dt = k->in[1]->dtype;
    if (dt != SS_DT_INT32 && dt != SS_DT_INT64)
        return ss_op_err(k, SS_ERR_INVALID, "indices must be int32 or int64, not %s",
                         ss_dtype_name(dt));
    if (k->in[0]->dtype == SS_DT_STRING)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "string tensors are not supported");
    return NULL;
}

/* ------------------------------------------------------------------ ScatterElements */

typedef struct {
    int axis;
    reduction red;
} scatter_plan;

static ss_status *scatter_elements_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"axis", "reduction", NULL};
    ss_status *st = ss_op_expect_inputs(k, 3, 3);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = expect_indices(k);
    if (st) return st;
    const ss_tensor *x = k->in[0], *ind = k->in[1], *upd = k->in[2];
    if (ind->ndim != x->ndim || !ss_shape_equal(ind->ndim, ind->dims, upd->ndim, upd->dims) ||
        upd->dtype != x->dtype)
        return ss_op_err(k, SS_ERR_INVALID,
                         "indices and updates must have one shape, of data's rank and type");
    scatter_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    if ((st = ss_op_attr_axis(k, "axis", 0, x->ndim, &p->axis))) return st;
    if ((st = read_reduction(k, &p->red))) return st;
    for (int d = 0; d < x->ndim; d++)
        if (d != p->axis && ind->dims[d] > x->dims[d])
            return ss_op_err(k, SS_ERR_INVALID, "indices dim %d (%lld) exceeds data's (%lld)", d,
                             (long long)ind->dims[d], (long long)x->dims[d]);
    ss_op_same_shape(k->out[0], x);
    return NULL;
}

static ss_status *scatter_elements_run(ss_kctx *k)
{
    const scatter_plan *p = k->state;
    const ss_tensor *x = k->in[0], *ind = k->in[1], *upd = k->in[2];
    ss_tensor *y = k->out[0];
    memcpy(y->data, x->data, x->nbytes);
    int64_t n = ss_tensor_numel(ind), xs[SS_MAX_DIMS], is[SS_MAX_DIMS];
    ss_op_contiguous_strides(x->ndim, x->dims, xs);
    ss_op_contiguous_strides(ind->ndim, ind->dims, is);
    for (int64_t i = 0; i < n; i++) {
        int64_t v = read_index(ind, i, x->dims[p->axis]), o = 0;
        if (v < 0) return index_error(k, i);
        for (int d = 0; d < x->ndim; d++)
            o += (d == p->axis ? v : i / is[d] % ind->dims[d]) * xs[d];
        combine(y, o, upd, i, 1, p->red);
    }
    return NULL;
}

/* ------------------------------------------------------------------ ScatterND, GatherND */

/* indices [..., kdim] address slices of data: the first kdim dims (after batch_dims for
 * GatherND) pick a slice of `slice` elements. */
typedef struct {
    int64_t kdim, slice, tuples, batch, batch_data, batch_tuples;
    int first_dim; /* GatherND: batch_dims, the first data dim the tuples address */
    reduction red;
} nd_plan;

/* Element offset of index tuple t into data (after its batch), or -1 when out of range. */
static int64_t nd_offset(const ss_tensor *x, const ss_tensor *ind, int first_dim, int64_t t,
                         int64_t kdim, int64_t slice)
{
    int64_t off = 0;
    for (int64_t j = 0; j < kdim; j++) {
        int64_t n = x->dims[first_dim + j], v = read_index(ind, t * kdim + j, n);
        if (v < 0) return -1;
        off = off * n + v;
    }
    return off * slice;
}

static ss_status *scatternd_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"reduction", NULL};
    ss_status *st = ss_op_expect_inputs(k, 3, 3);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = expect_indices(k);
    if (st) return st;
    const ss_tensor *x = k->in[0], *ind = k->in[1], *upd = k->in[2];
    nd_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    if ((st = read_reduction(k, &p->red))) return st;
    p->kdim = ind->ndim ? ind->dims[ind->ndim - 1] : 0;
    if (ind->ndim < 1 || p->kdim > x->ndim || upd->dtype != x->dtype)
        return ss_op_err(k, SS_ERR_INVALID, "indices' last dim must be at most data's rank");
    /* updates = indices.shape[:-1] + data.shape[kdim:] */
    bool ok = upd->ndim == ind->ndim - 1 + x->ndim - (int)p->kdim;
    for (int d = 0; ok && d < ind->ndim - 1; d++)
        ok = upd->dims[d] == ind->dims[d];
    for (int d = (int)p->kdim; ok && d < x->ndim; d++)
        ok = upd->dims[ind->ndim - 1 + d - p->kdim] == x->dims[d];
    if (!ok) return ss_op_err(k, SS_ERR_INVALID, "updates' shape does not fit data and indices");
    p->slice = ss_op_dims_prod(x->dims, (int)p->kdim, x->ndim);
    p->tuples = ss_op_dims_prod(ind->dims, 0, ind->ndim - 1);
    ss_op_same_shape(k->out[0], x);
    return NULL;
}

static ss_status *scatternd_run(ss_kctx *k)
{
    const nd_plan *p = k->state;
    const ss_tensor *x = k->in[0], *ind = k->in[1], *upd = k->in[2];
    ss_tensor *y = k->out[0];
    memcpy(y->data, x->data, x->nbytes);
    for (int64_t t = 0; t < p->tuples; t++) {
        int64_t off = nd_offset(x, ind, 0, t, p->kdim, p->slice);
        if (off < 0) return index_error(k, t * p->kdim);
        combine(y, off, upd, t * p->slice, p->slice, p->red);
    }
    return NULL;
}

static ss_status *gathernd_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"batch_dims", NULL};
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = expect_indices(k);
    if (st) return st;
    const ss_tensor *x = k->in[0], *ind = k->in[1];
    int64_t b = ss_onnx_attr_int(k->node, "batch_dims", 0);
    nd_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->kdim = ind->ndim ? ind->dims[ind->ndim - 1] : -1;
    if (b < 0 || ind->ndim < 1 || b >= ind->ndim || p->kdim < 1 || b + p->kdim > x->ndim)
        return ss_op_err(k, SS_ERR_INVALID,
                         "batch_dims %lld and indices' last dim %lld do not "
                         "fit data of rank %d",
                         (long long)b, (long long)p->kdim, x->ndim);
    for (int d = 0; d < b; d++)
        if (x->dims[d] != ind->dims[d])
            return ss_op_err(k, SS_ERR_INVALID, "batch dim %d differs in data and indices", d);
    ss_tensor *y = k->out[0];
    if (ind->ndim - 1 + x->ndim - (b + p->kdim) > SS_MAX_DIMS) /* before writing y->dims */
        return ss_op_err(k, SS_ERR_LIMIT, "output rank above the limit of %d", SS_MAX_DIMS);
    y->dtype = x->dtype;
    y->ndim = 0;
    for (int d = 0; d < ind->ndim - 1; d++)
        y->dims[y->ndim++] = ind->dims[d];
    for (int d = (int)(b + p->kdim); d < x->ndim; d++)
        y->dims[y->ndim++] = x->dims[d];
    p->batch = ss_op_dims_prod(x->dims, 0, (int)b);
    p->batch_data = ss_op_dims_prod(x->dims, (int)b, x->ndim);
    p->slice = ss_op_dims_prod(x->dims, (int)(b + p->kdim), x->ndim);
    p->batch_tuples = ss_op_dims_prod(ind->dims, (int)b, ind->ndim - 1);
    p->first_dim = (int)b;
    return NULL;
}

static ss_status *gathernd_run(ss_kctx *k)
{
    const nd_plan *p = k->state;
    const ss_tensor *x = k->in[0], *ind = k->in[1];
    size_t es = ss_dtype_size(x->dtype), row = (size_t)p->slice * es;
    char *y = k->out[0]->data;
    for (int64_t bi = 0; bi < p->batch; bi++)
        for (int64_t t = 0; t < p->batch_tuples; t++) {
            int64_t tuple = bi * p->batch_tuples + t;
            int64_t off = nd_offset(x, ind, p->first_dim, tuple, p->kdim, p->slice);
            if (off < 0) return index_error(k, tuple * p->kdim);
            memcpy(y, (const char *)x->data + (size_t)(bi * p->batch_data + off) * es, row);
            y += row;
        }
    return NULL;
}

const ss_op_def ss_ops_scatter[] = {
    {"", "Scatter", 9, 10, scatter_elements_infer, scatter_elements_run, 0, NULL},
    {"", "ScatterElements", 11, 21, scatter_elements_infer, scatter_elements_run, 0, NULL},
    {"", "ScatterND", 11, 21, scatternd_infer, scatternd_run, 0, NULL},
    {"", "GatherND", 11, 21, gathernd_infer, gathernd_run, 0, NULL},
    {NULL, NULL, 0, 0, NULL, NULL, 0, NULL},
};
