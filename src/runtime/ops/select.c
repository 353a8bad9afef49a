/*
 * Ops whose output shape depends on input values: NonZero, Unique, Compress, TopK and
 * NonMaxSuppression. Each is SS_OPF_DYNAMIC_SHAPE (op.h): infer sets the largest shape the
 * output can take (NonZero: [rank, numel]; TopK: k when K is known at plan time, else the axis
 * length), run writes the actual one with ss_op_set_shape, and the session re-plans what follows
 * when it differs from the plan's. Sorting is one stable merge sort over element indices with a
 * comparison callback (ties keep the lower index first, as the spec asks of TopK and Unique);
 * its buffers are the node's scratch, sized by infer, so run never allocates.
 */
#include "common.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ stable index sort */

typedef int (*idx_cmp)(const void *ctx, int64_t a, int64_t b);

/* Sorts idx[0..n) stably by cmp; tmp holds n entries. */
static void idx_sort(int64_t *idx, int64_t *tmp, int64_t n, idx_cmp cmp, const void *ctx)
{
    for (int64_t w = 1; w < n; w *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t i = lo, j = mid, o = lo;
            while (i < mid && j < hi)
                tmp[o++] = cmp(ctx, idx[j], idx[i]) < 0 ? idx[j++] : idx[i++];
            while (i < mid)
                tmp[o++] = idx[i++];
            while (j < hi)
                tmp[o++] = idx[j++];
        }
        memcpy(idx, tmp, sizeof(int64_t) * (size_t)n);
    }
}

static int cmp_f64(double a, double b)
{
    return a < b ? -1 : a > b ? 1 : 0;
}

/* Scratch for `count` int64 index arrays of n entries each. */
static void want_index_scratch(ss_kctx *k, int64_t n, int count)
{
    k->scratch_bytes = sizeof(int64_t) * (size_t)(n > 0 ? n : 1) * (size_t)count;
}

/* ------------------------------------------------------------------ NonZero */

static ss_status *nonzero_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->dtype == SS_DT_STRING)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "string tensors are not supported");
    ss_tensor *y = k->out[0];
    y->dtype = SS_DT_INT64;
    y->ndim = 2;
    y->dims[0] = x->ndim;
    y->dims[1] = ss_tensor_numel(x);
    return NULL;
}

static ss_status *nonzero_run(ss_kctx *k)
{
    const ss_tensor *x = k->in[0];
    int64_t n = ss_tensor_numel(x), nnz = 0, strides[SS_MAX_DIMS];
    for (int64_t i = 0; i < n; i++)
        nnz += ss_op_elem_f64(x, i) != 0;
    ss_op_contiguous_strides(x->ndim, x->dims, strides);
    int64_t *y = k->out[0]->data, col = 0;
    for (int64_t i = 0; i < n; i++) {
        if (ss_op_elem_f64(x, i) == 0) continue;
        for (int d = 0; d < x->ndim; d++)
            y[d * nnz + col] = i / strides[d] % x->dims[d];
        col++;
    }
    int64_t dims[2] = {x->ndim, nnz};
    ss_op_set_shape(k, 0, 2, dims);
    return NULL;
}

/* ------------------------------------------------------------------ Compress */

typedef struct {
    int axis; /* -1: flattened */
} compress_plan;

static ss_status *compress_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"axis", NULL};
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (st) return st;
    const ss_tensor *x = k->in[0], *c = k->in[1];
    if (c->dtype != SS_DT_BOOL || c->ndim != 1)
        return ss_op_err(k, SS_ERR_INVALID, "condition must be a 1-D bool tensor");
    if (x->dtype == SS_DT_STRING)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "string tensors are not supported");
    compress_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->axis = -1;
    if (ss_onnx_attr_find(k->node, "axis") &&
        (st = ss_op_attr_axis(k, "axis", 0, x->ndim, &p->axis)))
        return st;
    ss_tensor *y = k->out[0];
    if (p->axis < 0) {
        y->dtype = x->dtype;
        y->ndim = 1;
        y->dims[0] = ss_tensor_numel(x);
    } else {
        ss_op_same_shape(y, x);
    }
    int64_t len = p->axis < 0 ? y->dims[0] : x->dims[p->axis];
    if (c->dims[0] > len)
        return ss_op_err(k, SS_ERR_INVALID, "condition has %lld values for %lld slices",
                         (long long)c->dims[0], (long long)len);
    return NULL;
}

static ss_status *compress_run(ss_kctx *k)
{
    const compress_plan *p = k->state;
    const ss_tensor *x = k->in[0], *c = k->in[1];
    const uint8_t *cond = c->data;
    int64_t outer = 1, n = ss_tensor_numel(x), inner = 1;
    if (p->axis >= 0) ss_op_split_axis(x, p->axis, &outer, &n, &inner);
    int64_t kept = 0;
    for (int64_t a = 0; a < c->dims[0] && a < n; a++)
        kept += cond[a] != 0;
    size_t es = ss_dtype_size(x->dtype), row = (size_t)inner * es;
    char *y = k->out[0]->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t a = 0; a < c->dims[0] && a < n; a++)
            if (cond[a]) {
                memcpy(y, (const char *)x->data + (size_t)(o * n + a) * row, row);
                y += row;
            }
    int64_t dims[SS_MAX_DIMS];
    memcpy(dims, k->out[0]->dims, sizeof dims);
    dims[p->axis < 0 ? 0 : p->axis] = kept;
    ss_op_set_shape(k, 0, k->out[0]->ndim, dims);
    return NULL;
}

/* ------------------------------------------------------------------ TopK */

typedef struct {
    int axis;
    bool largest;
    int64_t k_attr; /* opset 1: the attribute; -1 from opset 10 (an input) */
} topk_plan;

typedef struct {
    const ss_tensor *x;
    int64_t base, stride;
    bool largest;
} topk_ctx;

static int topk_cmp(const void *ctx, int64_t a, int64_t b)
{
    const topk_ctx *c = ctx;
    double va = ss_op_elem_f64(c->x, c->base + a * c->stride);
    double vb = ss_op_elem_f64(c->x, c->base + b * c->stride);
    return c->largest ? cmp_f64(vb, va) : cmp_f64(va, vb);
}

static ss_status *topk_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"axis", "k", "largest", "sorted", NULL};
    ss_status *st = ss_op_expect_inputs(k, k->opset >= 10 ? 2 : 1, k->opset >= 10 ? 2 : 1);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->dtype == SS_DT_STRING || x->dtype == SS_DT_BOOL || x->ndim < 1)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "input of type %s, rank %d",
                         ss_dtype_name(x->dtype), x->ndim);
    topk_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    if ((st = ss_op_attr_axis(k, "axis", -1, x->ndim, &p->axis))) return st;
    p->largest = ss_onnx_attr_int(k->node, "largest", 1) != 0;
    p->k_attr = k->opset >= 10 ? -1 : ss_onnx_attr_int(k->node, "k", -1);
    int64_t kk = p->k_attr, n = x->dims[p->axis];
    const ss_tensor *kv = k->opset >= 10 ? ss_kctx_value(k, 1) : NULL;
    if (k->opset >= 10 && ss_tensor_numel(k->in[1]) != 1)
        return ss_op_err(k, SS_ERR_INVALID, "K must hold one value");
    if (kv && kv->data) kk = ss_op_elem_i64(kv, 0);
    if (kk > n || (kk < 0 && k->opset < 10))
        return ss_op_err(k, SS_ERR_INVALID, "k = %lld for an axis of %lld", (long long)kk,
                         (long long)n);
    for (int j = 0; j < 2; j++) {
        ss_op_same_shape(k->out[j], x);
        k->out[j]->dims[p->axis] = kk < 0 ? n : kk;
    }
    k->out[1]->dtype = SS_DT_INT64;
    want_index_scratch(k, n, 2);
    return NULL;
}

static ss_status *topk_run(ss_kctx *k)
{
    const topk_plan *p = k->state;
    const ss_tensor *x = k->in[0];
    int64_t outer, n, inner;
    ss_op_split_axis(x, p->axis, &outer, &n, &inner);
    int64_t kk = p->k_attr >= 0 ? p->k_attr : ss_op_elem_i64(k->in[1], 0);
    if (kk < 0 || kk > n)
        return ss_op_err(k, SS_ERR_INVALID, "K = %lld for an axis of %lld", (long long)kk,
                         (long long)n);
    int64_t *idx = k->scratch, *tmp = idx + n;
    size_t es = ss_dtype_size(x->dtype);
    char *vals = k->out[0]->data;
    int64_t *inds = k->out[1]->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            topk_ctx c = {x, o * n * inner + i, inner, p->largest};
            for (int64_t a = 0; a < n; a++)
                idx[a] = a;
            idx_sort(idx, tmp, n, topk_cmp, &c);
            for (int64_t r = 0; r < kk; r++) {
                int64_t dst = (o * kk + r) * inner + i;
                inds[dst] = idx[r];
                memcpy(vals + (size_t)dst * es,
                       (const char *)x->data + (size_t)(c.base + idx[r] * inner) * es, es);
            }
        }
    int64_t dims[SS_MAX_DIMS];
    memcpy(dims, x->dims, sizeof dims);
    dims[p->axis] = kk;
    ss_op_set_shape(k, 0, x->ndim, dims);
    ss_op_set_shape(k, 1, x->ndim, dims);
    return NULL;
}

/* ------------------------------------------------------------------ Unique */

/* Items are the slices along the axis (elements when flattened), compared lexicographically. */
typedef struct {
    const ss_tensor *x;
    int64_t outer, n, inner;
} unique_ctx;

typedef struct {
    unique_ctx c;
    int axis; /* -1: flattened */
    bool sorted;
} unique_plan;

static int unique_cmp(const void *ctx, int64_t a, int64_t b)
{
    const unique_ctx *c = ctx;
    for (int64_t o = 0; o < c->outer; o++)
        for (int64_t i = 0; i < c->inner; i++) {
            int r = cmp_f64(ss_op_elem_f64(c->x, (o * c->n + a) * c->inner + i),
                            ss_op_elem_f64(c->x, (o * c->n + b) * c->inner + i));
            if (r) return r;
        }
    return 0;
}

static ss_status *unique_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"axis", "sorted", NULL};
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->dtype == SS_DT_STRING)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "string tensors are not supported");
    unique_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->axis = -1;
    p->sorted = ss_onnx_attr_int(k->node, "sorted", 1) != 0;
    if (ss_onnx_attr_find(k->node, "axis") &&
        (st = ss_op_attr_axis(k, "axis", 0, x->ndim, &p->axis)))
        return st;
    p->c = (unique_ctx){.outer = 1, .n = ss_tensor_numel(x), .inner = 1};
    if (p->axis >= 0) ss_op_split_axis(x, p->axis, &p->c.outer, &p->c.n, &p->c.inner);
    ss_tensor *y = k->out[0];
    if (p->axis < 0) {
        *y = (ss_tensor){.dtype = x->dtype, .ndim = 1, .dims = {p->c.n}};
    } else {
        ss_op_same_shape(y, x);
    }
    for (int j = 1; j < 4 && j < k->n_out; j++)
        if (k->out[j]) *k->out[j] = (ss_tensor){.dtype = SS_DT_INT64, .ndim = 1, .dims = {p->c.n}};
    want_index_scratch(k, p->c.n, 4);
    return NULL;
}

static void unique_write_item(const unique_ctx *c, int64_t item, int64_t pos, int64_t count,
                              char *y)
{
    size_t es = ss_dtype_size(c->x->dtype), row = (size_t)c->inner * es;
    for (int64_t o = 0; o < c->outer; o++)
        memcpy(y + (size_t)(o * count + pos) * row,
               (const char *)c->x->data + (size_t)(o * c->n + item) * row, row);
}

static ss_status *unique_run(ss_kctx *k)
{
    const unique_plan *p = k->state;
    unique_ctx c = p->c;
    c.x = k->in[0];
    int64_t n = c.n, *idx = k->scratch, *tmp = idx + n, *group = tmp + n, *first = group + n;
    for (int64_t a = 0; a < n; a++)
        idx[a] = a;
    idx_sort(idx, tmp, n, unique_cmp, &c);
    /* groups of equal items in sorted order; the first of each is its lowest index */
    int64_t ng = 0;
    for (int64_t r = 0; r < n; r++) {
        if (r == 0 || unique_cmp(&c, idx[r - 1], idx[r]) != 0) first[ng++] = idx[r];
        group[idx[r]] = ng - 1;
    }
    /* tmp: a group's output position; unsorted output lists groups by first occurrence */
    if (p->sorted) {
        for (int64_t g = 0; g < ng; g++)
            tmp[g] = g;
    } else {
        int64_t pos = 0;
        for (int64_t a = 0; a < n; a++)
            if (first[group[a]] == a) tmp[group[a]] = pos++;
    }
    int64_t *inds = k->n_out > 1 && k->out[1] ? k->out[1]->data : NULL;
    int64_t *inv = k->n_out > 2 && k->out[2] ? k->out[2]->data : NULL;
    int64_t *counts = k->n_out > 3 && k->out[3] ? k->out[3]->data : NULL;
    for (int64_t g = 0; g < ng; g++) {
        unique_write_item(&c, first[g], tmp[g], ng, k->out[0]->data);
        if (inds) inds[tmp[g]] = first[g];
        if (counts) counts[tmp[g]] = 0;
    }
    for (int64_t a = 0; a < n; a++) {
        if (inv) inv[a] = tmp[group[a]];
        if (counts) counts[tmp[group[a]]]++;
    }
    int64_t dims[SS_MAX_DIMS];
    memcpy(dims, k->out[0]->dims, sizeof dims);
    dims[p->axis < 0 ? 0 : p->axis] = ng;
    ss_op_set_shape(k, 0, k->out[0]->ndim, dims);
    for (int j = 1; j < 4 && j < k->n_out; j++)
        if (j != 2) ss_op_set_shape(k, j, 1, &ng);
    return NULL;
}

/* ------------------------------------------------------------------ NonMaxSuppression */

typedef struct {
    int64_t B, C, N;
    bool center;
} nms_plan;

typedef struct {
    const ss_tensor *scores;
    int64_t base;
} nms_ctx;

static int nms_cmp(const void *ctx, int64_t a, int64_t b)
{
    const nms_ctx *c = ctx;
    return cmp_f64(ss_op_elem_f64(c->scores, c->base + b), ss_op_elem_f64(c->scores, c->base + a));
}

static ss_status *nms_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"center_point_box", NULL};
    ss_status *st = ss_op_expect_inputs(k, 2, 5);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (st) return st;
    const ss_tensor *b = k->in[0], *s = k->in[1];
    if (b->ndim != 3 || b->dims[2] != 4 || s->ndim != 3 || s->dims[0] != b->dims[0] ||
        s->dims[2] != b->dims[1])
        return ss_op_err(k, SS_ERR_INVALID,
                         "boxes must be [batch, boxes, 4] and scores [batch, classes, boxes]");
    if (b->dtype != SS_DT_FLOAT32 || s->dtype != SS_DT_FLOAT32)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "boxes and scores must be float32");
    nms_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    *p = (nms_plan){b->dims[0], s->dims[1], b->dims[1],
                    ss_onnx_attr_int(k->node, "center_point_box", 0) != 0};
    *k->out[0] = (ss_tensor){.dtype = SS_DT_INT64, .ndim = 2, .dims = {p->B * p->C * p->N, 3}};
    want_index_scratch(k, p->N, 3);
    return NULL;
}

/* Box i of batch b as (y1, x1, y2, x2) with y1 <= y2 and x1 <= x2. */
static void nms_box(const nms_plan *p, const float *boxes, int64_t b, int64_t i, float *r)
{
    const float *v = boxes + (b * p->N + i) * 4;
    if (p->center) {
        r[0] = v[1] - v[3] / 2, r[1] = v[0] - v[2] / 2, r[2] = v[1] + v[3] / 2,
        r[3] = v[0] + v[2] / 2;
        return;
    }
    r[0] = fminf(v[0], v[2]), r[1] = fminf(v[1], v[3]), r[2] = fmaxf(v[0], v[2]),
    r[3] = fmaxf(v[1], v[3]);
}

static bool nms_overlaps(const nms_plan *p, const float *boxes, int64_t b, int64_t i, int64_t j,
                         float threshold)
{
    float x[4], y[4];
    nms_box(p, boxes, b, i, x);
    nms_box(p, boxes, b, j, y);
    float ih = fminf(x[2], y[2]) - fmaxf(x[0], y[0]), iw = fminf(x[3], y[3]) - fmaxf(x[1], y[1]);
    if (ih <= 0 || iw <= 0) return false;
    float inter = ih * iw, ax = (x[2] - x[0]) * (x[3] - x[1]), ay = (y[2] - y[0]) * (y[3] - y[1]);
    float uni = ax + ay - inter;
    return uni > 0 && inter / uni > threshold;
}

static double nms_scalar(const ss_kctx *k, int i, double dflt)
{
    if (i >= k->n_in || !k->in[i] || ss_tensor_numel(k->in[i]) < 1) return dflt;
    return ss_op_elem_f64(k->in[i], 0);
}

static ss_status *nms_run(ss_kctx *k)
{
    const nms_plan *p = k->state;
    const float *boxes = k->in[0]->data;
    int64_t max_out =
        k->n_in > 2 && k->in[2] && ss_tensor_numel(k->in[2]) > 0 ? ss_op_elem_i64(k->in[2], 0) : 0;
    float iou = (float)nms_scalar(k, 3, 0), score_min = (float)nms_scalar(k, 4, -INFINITY);
    bool has_min = k->n_in > 4 && k->in[4];
    int64_t *idx = k->scratch, *tmp = idx + p->N, *sel = tmp + p->N, *y = k->out[0]->data, n = 0;
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t c = 0; c < p->C; c++) {
            nms_ctx cx = {k->in[1], (b * p->C + c) * p->N};
            int64_t cand = 0, nsel = 0;
            for (int64_t i = 0; i < p->N; i++)
                if (!has_min || ss_op_elem_f64(cx.scores, cx.base + i) > score_min) idx[cand++] = i;
            idx_sort(idx, tmp, cand, nms_cmp, &cx);
            for (int64_t r = 0; r < cand && nsel < max_out; r++) {
                bool keep = true;
                for (int64_t s = 0; s < nsel && keep; s++)
                    keep = !nms_overlaps(p, boxes, b, sel[s], idx[r], iou);
                if (!keep) continue;
                sel[nsel++] = idx[r];
                y[n * 3] = b, y[n * 3 + 1] = c, y[n * 3 + 2] = idx[r];
                n++;
            }
        }
    int64_t dims[2] = {n, 3};
    ss_op_set_shape(k, 0, 2, dims);
    return NULL;
}

const ss_op_def ss_ops_select[] = {
    {"", "NonZero", 9, 21, nonzero_infer, nonzero_run, SS_OPF_DYNAMIC_SHAPE, NULL},
    {"", "Compress", 9, 21, compress_infer, compress_run, SS_OPF_DYNAMIC_SHAPE, NULL},
    {"", "TopK", 1, 21, topk_infer, topk_run, SS_OPF_DYNAMIC_SHAPE, NULL},
    {"", "Unique", 11, 21, unique_infer, unique_run, SS_OPF_DYNAMIC_SHAPE, NULL},
    {"", "NonMaxSuppression", 10, 21, nms_infer, nms_run, SS_OPF_DYNAMIC_SHAPE, NULL},
    {NULL, NULL, 0, 0, NULL, NULL, 0, NULL},
};
