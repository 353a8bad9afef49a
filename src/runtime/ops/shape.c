/*
 * Shape ops: Reshape, Flatten, Squeeze, Unsqueeze (aliases: the output is the input's bytes
 * with new dims, no kernel runs), Shape and Size (read only shapes, so the planner always folds
 * them), and Expand (a broadcast copy).
 *
 * Output shapes that depend on an input's value (Reshape's shape, Squeeze/Unsqueeze's axes from
 * opset 13, Expand's shape) are read at plan time with ss_kctx_value(); a value only known at run
 * time fails with SS_ERR_UNSUPPORTED "data-dependent output shape". Expand is a broadcast
 * ss_view of its input (common.h), copied by element size, so every dtype but string shares one
 * kernel; run never allocates.
 */
#include "common.h"

#include <string.h>

/* ------------------------------------------------------------------ helpers */

static ss_status *alias_run(ss_kctx *k)
{
    return NULL;
}

/* Axes from the attribute (opset < 13) or input 1 (opset >= 13); *n = -1 when absent. */
static ss_status *read_axes(ss_kctx *k, int64_t *axes, int *n)
{
    if (k->opset >= 13) return ss_op_plan_ints(k, 1, "axes", axes, SS_MAX_DIMS, n);
    const int64_t *a;
    *n = ss_onnx_attr_ints(k->node, "axes", &a);
    if (*n > SS_MAX_DIMS) return ss_op_err(k, SS_ERR_LIMIT, "too many axes");
    for (int i = 0; i < *n; i++)
        axes[i] = a[i];
    return NULL;
}

static void set_out(ss_kctx *k, int nd, const int64_t *dims)
{
    ss_tensor *o = k->out[0];
    o->dtype = k->in[0]->dtype;
    o->ndim = nd;
    memcpy(o->dims, dims, sizeof(int64_t) * (size_t)nd);
}

/* ------------------------------------------------------------------ Reshape */

static ss_status *reshape_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    int64_t shape[SS_MAX_DIMS];
    int n;
    if (ss_tensor_numel(k->in[1]) > SS_MAX_DIMS)
        return ss_op_err(k, SS_ERR_LIMIT, "target rank above %d", SS_MAX_DIMS);
    if ((st = ss_op_plan_ints(k, 1, "shape", shape, SS_MAX_DIMS, &n))) return st;
    bool allowzero = k->opset >= 14 && ss_onnx_attr_int(k->node, "allowzero", 0) != 0;
    int infer_at = -1;
    int64_t known = 1;
    for (int i = 0; i < n; i++) {
        if (shape[i] == 0 && !allowzero) {
            if (i >= x->ndim)
                return ss_op_err(k, SS_ERR_INVALID, "shape[%d] = 0 copies a dim the input lacks",
                                 i);
            shape[i] = x->dims[i];
        }
        if (shape[i] == -1) {
            if (infer_at >= 0) return ss_op_err(k, SS_ERR_INVALID, "more than one -1 in shape");
            infer_at = i;
        } else if (shape[i] < 0) {
            return ss_op_err(k, SS_ERR_INVALID, "shape[%d] = %lld is negative", i,
                             (long long)shape[i]);
        } else {
            if (__builtin_mul_overflow(known, shape[i], &known))
                return ss_op_err(k, SS_ERR_INVALID, "shape overflows");
        }
    }
    int64_t numel = ss_tensor_numel(x);
    if (infer_at >= 0) {
        if (known == 0 || numel % known)
            return ss_op_err(k, SS_ERR_INVALID,
                             "cannot infer the -1 dim: %lld elements into blocks of %lld",
                             (long long)numel, (long long)known);
        shape[infer_at] = numel / known;
    } else if (known != numel) {
        char a[128], b[128];
        return ss_op_err(k, SS_ERR_INVALID, "cannot reshape %s into %s",
                         ss_shape_str(x->ndim, x->dims, a, sizeof a),
                         ss_shape_str(n, shape, b, sizeof b));
    }
    set_out(k, n, shape);
    return NULL;
}

/* ------------------------------------------------------------------ Flatten */

static ss_status *flatten_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    int64_t axis = ss_onnx_attr_int(k->node, "axis", 1);
    if (axis < 0) axis += x->ndim;
    if (axis < 0 || axis > x->ndim)
        return ss_op_err(k, SS_ERR_INVALID, "axis %lld is out of range for rank %d",
                         (long long)ss_onnx_attr_int(k->node, "axis", 1), x->ndim);
    int64_t d[2] = {1, 1};
    for (int i = 0; i < x->ndim; i++)
        d[i >= axis] *= x->dims[i];
    set_out(k, 2, d);
    return NULL;
}

/* ------------------------------------------------------------------ Squeeze, Unsqueeze */

static ss_status *squeeze_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, k->opset >= 13 ? 2 : 1);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    int64_t axes[SS_MAX_DIMS];
    int n;
    if ((st = read_axes(k, axes, &n))) return st;
    unsigned drop = 0;
    if (n < 0) {
        for (int i = 0; i < x->ndim; i++)
            if (x->dims[i] == 1) drop |= 1u << i;
    } else {
        for (int i = 0; i < n; i++) {
            int a;
            if ((st = ss_op_axis(k, axes[i], x->ndim, &a))) return st;
            if (x->dims[a] != 1)
                return ss_op_err(k, SS_ERR_INVALID, "cannot squeeze axis %d of size %lld", a,
                                 (long long)x->dims[a]);
            drop |= 1u << a;
        }
    }
    int64_t d[SS_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < x->ndim; i++)
        if (!(drop & (1u << i))) d[nd++] = x->dims[i];
    set_out(k, nd, d);
    return NULL;
}

static ss_status *unsqueeze_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, k->opset >= 13 ? 2 : 1, k->opset >= 13 ? 2 : 1);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    int64_t axes[SS_MAX_DIMS];
    int n;
    if ((st = read_axes(k, axes, &n))) return st;
    if (n < 0) return ss_op_err(k, SS_ERR_INVALID, "'axes' is required");
    int nd = x->ndim + n;
    if (nd > SS_MAX_DIMS)
        return ss_op_err(k, SS_ERR_LIMIT, "output rank %d above %d", nd, SS_MAX_DIMS);
    unsigned add = 0;
    for (int i = 0; i < n; i++) {
        int a;
        if ((st = ss_op_axis(k, axes[i], nd, &a))) return st;
        if (add & (1u << a)) return ss_op_err(k, SS_ERR_INVALID, "axis %d repeats", a);
        add |= 1u << a;
    }
    int64_t d[SS_MAX_DIMS];
    for (int i = 0, j = 0; i < nd; i++)
        d[i] = (add & (1u << i)) ? 1 : x->dims[j++];
    set_out(k, nd, d);
    return NULL;
}

/* com.microsoft ExpandDims(X, axis): Unsqueeze at one axis given as an int32 scalar input. */
static ss_status *expand_dims_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    int64_t axis;
    int n;
    if ((st = ss_op_plan_ints(k, 1, "axis", &axis, 1, &n))) return st;
    if (n != 1) return ss_op_err(k, SS_ERR_INVALID, "'axis' must be one value");
    int nd = x->ndim + 1, a;
    if (nd > SS_MAX_DIMS)
        return ss_op_err(k, SS_ERR_LIMIT, "output rank %d above %d", nd, SS_MAX_DIMS);
    if ((st = ss_op_axis(k, axis, nd, &a))) return st;
    int64_t d[SS_MAX_DIMS];
    for (int i = 0, j = 0; i < nd; i++)
        d[i] = i == a ? 1 : x->dims[j++];
    set_out(k, nd, d);
    return NULL;
}

/* ------------------------------------------------------------------ Shape, Size */

typedef struct {
    int start, count;
} shape_plan;

static ss_status *shape_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (st) return st;
    int r = k->in[0]->ndim;
    int64_t start = 0, end = r;
    if (k->opset >= 15) {
        start = ss_onnx_attr_int(k->node, "start", 0);
        end = ss_onnx_attr_int(k->node, "end", r);
    }
    if (start < 0) start += r;
    if (end < 0) end += r;
    start = start < 0 ? 0 : start > r ? r : start;
    end = end < 0 ? 0 : end > r ? r : end;
    shape_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->start = (int)start;
    p->count = end > start ? (int)(end - start) : 0;
    ss_tensor *o = k->out[0];
    o->dtype = SS_DT_INT64;
    o->ndim = 1;
    o->dims[0] = p->count;
    return NULL;
}

static ss_status *shape_run(ss_kctx *k)
{
    const shape_plan *p = k->state;
    memcpy(k->out[0]->data, k->in[0]->dims + p->start, sizeof(int64_t) * (size_t)p->count);
    return NULL;
}

static ss_status *size_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (st) return st;
    k->out[0]->dtype = SS_DT_INT64;
    k->out[0]->ndim = 0;
    return NULL;
}

static ss_status *size_run(ss_kctx *k)
{
    int64_t n = ss_tensor_numel(k->in[0]);
    memcpy(k->out[0]->data, &n, sizeof n);
    return NULL;
}

/* ------------------------------------------------------------------ Expand */

static ss_status *expand_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->dtype == SS_DT_STRING)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "string tensors are not supported");
    ss_tensor shape = {0};
    if (ss_tensor_numel(k->in[1]) > SS_MAX_DIMS)
        return ss_op_err(k, SS_ERR_LIMIT, "target rank above %d", SS_MAX_DIMS);
    if ((st = ss_op_plan_ints(k, 1, "shape", shape.dims, SS_MAX_DIMS, &shape.ndim))) return st;
    for (int i = 0; i < shape.ndim; i++)
        if (shape.dims[i] < 0) return ss_op_err(k, SS_ERR_INVALID, "negative dim in shape");
    ss_tensor *o = k->out[0];
    if ((st = ss_op_broadcast(k, x, &shape, o))) return st;
    o->dtype = x->dtype;
    if (ss_tensor_numel(o) < 0) return ss_op_err(k, SS_ERR_LIMIT, "output too large");
    ss_view *v = ss_op_state_alloc(k, sizeof *v);
    if (!v) return ss_op_oom();
    ss_view_broadcast(v, x, o->ndim, o->dims);
    ss_view_simplify(v);
    return NULL;
}

const ss_op_def ss_ops_shape[] = {
    {"", "Reshape", 5, 21, reshape_infer, alias_run, SS_OPF_ALIAS},
    {"", "Flatten", 1, 21, flatten_infer, alias_run, SS_OPF_ALIAS},
    {"", "Squeeze", 1, 21, squeeze_infer, alias_run, SS_OPF_ALIAS},
    {"", "Unsqueeze", 1, 21, unsqueeze_infer, alias_run, SS_OPF_ALIAS},
    {"com.microsoft", "ExpandDims", 1, 1, expand_dims_infer, alias_run, SS_OPF_ALIAS},
    {"", "Shape", 1, 21, shape_infer, shape_run, SS_OPF_SHAPE_ONLY},
    {"", "Size", 1, 21, size_infer, size_run, SS_OPF_SHAPE_ONLY},
    {"", "Expand", 8, 21, expand_infer, ss_view_run, 0},
    {0},
};
