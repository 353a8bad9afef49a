/*
 * Data movement ops: Transpose, Concat, Split (num_outputs from 18), Slice, Gather, GatherElements,
 * Tile, Pad (axes input from 18, wrap mode from 19),
 * DepthToSpace, SpaceToDepth, Trilu.
 *
 * Every kernel moves elements by size (1/2/4/8 bytes, any other size byte-wise), never by type,
 * so every dtype but string is served by the same code. Transpose, Slice, Tile and the
 * DepthToSpace family reduce to one strided view (ss_view in common.h: output dims + a signed
 * source stride per output dim + a start offset) computed in infer and copied by ss_view_run,
 * which turns a row into one memcpy where the layout allows and copies 2-D transposes
 * (attention's [0,2,3,1]) in cache-sized tiles. run never allocates.
 */
#include "broadcast.h"
#include "common.h"

#include <string.h>

/* ------------------------------------------------------------------ helpers */

static bool is_index_type(ss_dtype dt)
{
    return dt == SS_DT_INT32 || dt == SS_DT_INT64;
}

/* Output element counts past 2^62 are refused here rather than overflowing later. */
static ss_status *check_numel(const ss_kctx *k, const ss_tensor *o)
{
    if (ss_tensor_numel(o) < 0) return ss_op_err(k, SS_ERR_LIMIT, "output too large");
    return NULL;
}

static ss_status *no_strings(const ss_kctx *k, int i)
{
    if (k->in[i]->dtype == SS_DT_STRING)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "string tensors are not supported");
    return NULL;
}

/* The output of a view op is the view's shape (before ss_view_simplify merges its dims). */
static void view_finish(ss_kctx *k, ss_view *v)
{
    ss_tensor *o = k->out[0];
    o->dtype = k->in[0]->dtype;
    o->ndim = v->nd;
    memcpy(o->dims, v->dims, sizeof(int64_t) * (size_t)v->nd);
    ss_view_simplify(v);
}

/* The view of a permutation of a tensor with the given dims. */
static void view_permute(ss_view *v, int nd, const int64_t *dims, const int *perm)
{
    int64_t strides[SS_VIEW_MAX];
    ss_op_contiguous_strides(nd, dims, strides);
    v->nd = nd;
    v->offset = 0;
    for (int i = 0; i < nd; i++) {
        v->dims[i] = dims[perm[i]];
        v->stride[i] = strides[perm[i]];
    }
}

/* ------------------------------------------------------------------ Transpose */

static ss_status *transpose_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = no_strings(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    int nd = x->ndim, perm[SS_MAX_DIMS];
    const int64_t *pa;
    int np = ss_onnx_attr_ints(k->node, "perm", &pa);
    if (np < 0) {
        for (int i = 0; i < nd; i++)
            perm[i] = nd - 1 - i;
    } else {
        if (np != nd)
            return ss_op_err(k, SS_ERR_INVALID, "perm has %d entries for rank %d", np, nd);
        unsigned seen = 0;
        for (int i = 0; i < nd; i++) {
            int a;
            if ((st = ss_op_axis(k, pa[i], nd, &a))) return st;
            if (seen & (1u << a)) return ss_op_err(k, SS_ERR_INVALID, "perm repeats axis %d", a);
            seen |= 1u << a;
            perm[i] = a;
        }
    }
    ss_view *v = ss_op_state_alloc(k, sizeof *v);
    if (!v) return ss_op_oom();
    view_permute(v, nd, x->dims, perm);
    view_finish(k, v);
    v->parts = ss_op_par_parts(k, v->numel);
    return NULL;
}

/* ------------------------------------------------------------------ Concat */

typedef struct {
    int64_t outer;
    int n;
    size_t bytes[]; /* per input: bytes per outer step */
} concat_plan;

static ss_status *concat_infer(ss_kctx *k)
{
    if (k->n_in < 1) return ss_op_err(k, SS_ERR_INVALID, "needs at least one input");
    for (int i = 0; i < k->n_in; i++) {
        if (!k->in[i]) return ss_op_err(k, SS_ERR_INVALID, "input %d is missing", i);
        ss_status *st = no_strings(k, i);
        if (st) return st;
    }
    const ss_tensor *x0 = k->in[0];
    int nd = x0->ndim, axis;
    const ss_onnx_attr *aa = ss_onnx_attr_find(k->node, "axis");
    if (!aa && k->opset >= 4) return ss_op_err(k, SS_ERR_INVALID, "attribute 'axis' is required");
    ss_status *st = ss_op_axis(k, aa ? aa->i : 1, nd, &axis);
    if (st) return st;
    if (nd == 0) return ss_op_err(k, SS_ERR_INVALID, "cannot concatenate scalars");
    ss_tensor *o = k->out[0];
    ss_op_same_shape(o, x0);
    o->dims[axis] = 0;
    size_t es = ss_dtype_size(x0->dtype);
    concat_plan *p = ss_op_state_alloc(k, sizeof *p + sizeof(size_t) * (size_t)k->n_in);
    if (!p) return ss_op_oom();
    p->n = k->n_in;
    p->outer = ss_op_dims_prod(x0->dims, 0, axis);
    for (int i = 0; i < k->n_in; i++) {
        const ss_tensor *x = k->in[i];
        if (x->dtype != x0->dtype || x->ndim != nd)
            return ss_op_err(k, SS_ERR_INVALID, "input %d differs in type or rank from input 0", i);
        for (int d = 0; d < nd; d++)
            if (d != axis && x->dims[d] != x0->dims[d])
                return ss_op_err(k, SS_ERR_INVALID, "input %d has dim %d = %lld, input 0 has %lld",
                                 i, d, (long long)x->dims[d], (long long)x0->dims[d]);
        o->dims[axis] += x->dims[axis];
        p->bytes[i] = (size_t)ss_op_dims_prod(x->dims, axis, nd) * es;
    }
    return NULL;
}

static ss_status *concat_run(ss_kctx *k)
{
    const concat_plan *p = k->state;
    char *dst = k->out[0]->data;
    if (p->outer == 1) {
        for (int i = 0; i < p->n; i++) {
            if (p->bytes[i]) memcpy(dst, k->in[i]->data, p->bytes[i]);
            dst += p->bytes[i];
        }
        return NULL;
    }
    for (int64_t o = 0; o < p->outer; o++)
        for (int i = 0; i < p->n; i++) {
            if (!p->bytes[i]) continue;
            memcpy(dst, (const char *)k->in[i]->data + (size_t)o * p->bytes[i], p->bytes[i]);
            dst += p->bytes[i];
        }
    return NULL;
}

/* ------------------------------------------------------------------ Split */

typedef struct {
    int64_t outer;
    size_t in_bytes; /* per outer step */
    int n;
    size_t bytes[]; /* per output, per outer step */
} split_plan;

/* Sizes without a 'split' input: equal parts, or from opset 18 (num_outputs) ceil(dim / n)
 * each with a smaller last part. */
static ss_status *split_even(ss_kctx *k, int64_t dim, int n_out, int64_t *sizes)
{
    const ss_onnx_attr *num = ss_onnx_attr_find(k->node, "num_outputs");
    if (num && k->opset < 18)
        return ss_op_err(k, SS_ERR_INVALID, "attribute 'num_outputs' needs opset 18");
    if (k->opset >= 18 && !num)
        return ss_op_err(k, SS_ERR_INVALID,
                         "needs the 'split' input or the 'num_outputs' attribute "
                         "from opset 18 on");
    if (num && num->i != n_out)
        return ss_op_err(k, SS_ERR_INVALID, "num_outputs is %lld but the node has %d outputs",
                         (long long)num->i, n_out);
    int64_t part = num ? (dim + n_out - 1) / n_out : dim / n_out;
    if (!num && dim % n_out)
        return ss_op_err(k, SS_ERR_INVALID, "axis of size %lld does not split evenly into %d",
                         (long long)dim, n_out);
    for (int i = 0; i < n_out; i++) {
        int64_t left = dim - part * i;
        sizes[i] = left < 0 ? 0 : left < part ? left : part;
    }
    return NULL;
}

static ss_status *split_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, k->opset >= 13 ? 2 : 1);
    if (!st) st = no_strings(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    int nd = x->ndim, axis;
    if ((st = ss_op_axis(k, ss_onnx_attr_int(k->node, "axis", 0), nd, &axis))) return st;
    int n_out = k->n_out;
    int64_t sizes[256];
    if (n_out < 1 || n_out > 256)
        return ss_op_err(k, SS_ERR_LIMIT, "%d outputs (1..256 supported)", n_out);
    int ns = -1;
    if (k->opset >= 13) {
        if ((st = ss_op_plan_ints(k, 1, "split", sizes, 256, &ns))) return st;
    } else {
        const int64_t *sa;
        ns = ss_onnx_attr_ints(k->node, "split", &sa);
        if (ns > 256) return ss_op_err(k, SS_ERR_LIMIT, "too many split sizes");
        for (int i = 0; i < ns; i++)
            sizes[i] = sa[i];
    }
    int64_t dim = x->dims[axis];
    if (ns >= 0 && ss_onnx_attr_find(k->node, "num_outputs"))
        return ss_op_err(k, SS_ERR_INVALID, "has both the 'split' input and 'num_outputs'");
    if (ns >= 0) {
        if (ns != n_out)
            return ss_op_err(k, SS_ERR_INVALID, "split has %d sizes for %d outputs", ns, n_out);
        int64_t sum = 0;
        for (int i = 0; i < ns; i++) {
            if (sizes[i] < 0) return ss_op_err(k, SS_ERR_INVALID, "negative split size");
            sum += sizes[i];
        }
        if (sum != dim)
            return ss_op_err(k, SS_ERR_INVALID, "split sizes sum to %lld, the axis has %lld",
                             (long long)sum, (long long)dim);
    } else if ((st = split_even(k, dim, n_out, sizes))) {
        return st;
    }
    split_plan *p = ss_op_state_alloc(k, sizeof *p + sizeof(size_t) * (size_t)n_out);
    if (!p) return ss_op_oom();
    size_t es = ss_dtype_size(x->dtype);
    p->n = n_out;
    p->outer = ss_op_dims_prod(x->dims, 0, axis);
    int64_t inner = ss_op_dims_prod(x->dims, axis + 1, nd);
    p->in_bytes = (size_t)(dim * inner) * es;
    for (int i = 0; i < n_out; i++) {
        p->bytes[i] = (size_t)(sizes[i] * inner) * es;
        ss_tensor *o = k->out[i];
        if (!o) continue;
        ss_op_same_shape(o, x);
        o->dims[axis] = sizes[i];
    }
    return NULL;
}

static ss_status *split_run(ss_kctx *k)
{
    const split_plan *p = k->state;
    const char *src = k->in[0]->data;
    for (int64_t o = 0; o < p->outer; o++) {
        const char *s = src + (size_t)o * p->in_bytes;
        for (int i = 0; i < p->n; s += p->bytes[i], i++)
            if (k->out[i] && p->bytes[i])
                memcpy((char *)k->out[i]->data + (size_t)o * p->bytes[i], s, p->bytes[i]);
    }
    return NULL;
}

/* ------------------------------------------------------------------ Slice */

static ss_status *slice_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, k->opset >= 10 ? 3 : 1, k->opset >= 10 ? 5 : 1);
    if (!st) st = no_strings(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    int nd = x->ndim;
    int64_t starts[SS_MAX_DIMS], ends[SS_MAX_DIMS], axes[SS_MAX_DIMS], steps[SS_MAX_DIMS];
    int ns, ne, na = -1, nst = -1;
    if (k->opset >= 10) {
        if ((st = ss_op_plan_ints(k, 1, "starts", starts, SS_MAX_DIMS, &ns))) return st;
        if ((st = ss_op_plan_ints(k, 2, "ends", ends, SS_MAX_DIMS, &ne))) return st;
        if ((st = ss_op_plan_ints(k, 3, "axes", axes, SS_MAX_DIMS, &na))) return st;
        if ((st = ss_op_plan_ints(k, 4, "steps", steps, SS_MAX_DIMS, &nst))) return st;
    } else {
        const int64_t *a;
        if ((ns = ss_onnx_attr_ints(k->node, "starts", &a)) > SS_MAX_DIMS) ns = -2;
        for (int i = 0; i < ns; i++)
            starts[i] = a[i];
        if ((ne = ss_onnx_attr_ints(k->node, "ends", &a)) > SS_MAX_DIMS) ne = -2;
        for (int i = 0; i < ne; i++)
            ends[i] = a[i];
        if ((na = ss_onnx_attr_ints(k->node, "axes", &a)) > SS_MAX_DIMS) na = -2;
        for (int i = 0; i < na; i++)
            axes[i] = a[i];
        if (ns < 0 || ne < 0 || na == -2)
            return ss_op_err(k, SS_ERR_INVALID, "attributes 'starts' and 'ends' are required");
    }
    if (ns != ne || (na >= 0 && na != ns) || (nst >= 0 && nst != ns))
        return ss_op_err(k, SS_ERR_INVALID, "starts, ends, axes and steps differ in length");
    ss_view *v = ss_op_state_alloc(k, sizeof *v);
    if (!v) return ss_op_oom();
    int64_t strides[SS_MAX_DIMS];
    ss_op_contiguous_strides(nd, x->dims, strides);
    v->nd = nd;
    v->offset = 0;
    for (int i = 0; i < nd; i++)
        v->dims[i] = x->dims[i], v->stride[i] = strides[i];
    unsigned seen = 0;
    for (int i = 0; i < ns; i++) {
        int a;
        if ((st = ss_op_axis(k, na >= 0 ? axes[i] : i, nd, &a))) return st;
        if (seen & (1u << a)) return ss_op_err(k, SS_ERR_INVALID, "axis %d is sliced twice", a);
        seen |= 1u << a;
        int64_t d = x->dims[a], step = nst >= 0 ? steps[i] : 1, s = starts[i], e = ends[i];
        if (step == 0) return ss_op_err(k, SS_ERR_INVALID, "step 0 on axis %d", a);
        /* a step longer than the dim takes at most one element: clamp it so nothing overflows */
        if (step > d) step = d + 1;
        if (step < -d) step = -d - 1;
        if (s < 0) s = s < -d ? 0 : s + d; /* avoid overflow for INT64_MIN */
        if (e < 0) e = e < -d ? -1 : e + d;
        int64_t count;
        if (step > 0) {
            s = s < 0 ? 0 : s > d ? d : s;
            e = e < 0 ? 0 : e > d ? d : e;
            count = e > s ? (e - s + step - 1) / step : 0;
        } else {
            s = s < 0 ? 0 : s > d - 1 ? d - 1 : s;
            e = e < -1 ? -1 : e > d - 1 ? d - 1 : e;
            count = s > e ? (s - e + (-step) - 1) / (-step) : 0;
        }
        v->dims[a] = count;
        if (count > 0) v->offset += s * strides[a];
        v->stride[a] = strides[a] * step;
    }
    view_finish(k, v);
    return NULL;
}

/* ------------------------------------------------------------------ Gather */

typedef struct {
    int64_t outer, n_idx, axis_dim;
    size_t inner_bytes;
} gather_plan;

/* Gather and GatherElements: data of any type but string, int32 or int64 indices. */
static ss_status *gather_inputs(const ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (!st) st = no_strings(k, 0);
    if (st) return st;
    if (!is_index_type(k->in[1]->dtype))
        return ss_op_err(k, SS_ERR_INVALID, "indices must be int32 or int64, not %s",
                         ss_dtype_name(k->in[1]->dtype));
    return NULL;
}

static ss_status *gather_infer(ss_kctx *k)
{
    ss_status *st = gather_inputs(k);
    if (st) return st;
    const ss_tensor *x = k->in[0], *ix = k->in[1];
    int axis;
    if (x->ndim == 0) return ss_op_err(k, SS_ERR_INVALID, "data must have rank >= 1");
    if ((st = ss_op_axis(k, ss_onnx_attr_int(k->node, "axis", 0), x->ndim, &axis))) return st;
    if (x->ndim - 1 + ix->ndim > SS_MAX_DIMS)
        return ss_op_err(k, SS_ERR_LIMIT, "output rank too large");
    gather_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->outer = ss_op_dims_prod(x->dims, 0, axis);
    p->axis_dim = x->dims[axis];
    p->n_idx = ss_tensor_numel(ix);
    p->inner_bytes = (size_t)ss_op_dims_prod(x->dims, axis + 1, x->ndim) * ss_dtype_size(x->dtype);
    ss_tensor *o = k->out[0];
    o->dtype = x->dtype;
    o->ndim = 0;
    for (int i = 0; i < axis; i++)
        o->dims[o->ndim++] = x->dims[i];
    for (int i = 0; i < ix->ndim; i++)
        o->dims[o->ndim++] = ix->dims[i];
    for (int i = axis + 1; i < x->ndim; i++)
        o->dims[o->ndim++] = x->dims[i];
    return check_numel(k, o);
}

static ss_status *gather_run(ss_kctx *k)
{
    const gather_plan *p = k->state;
    const ss_tensor *ix = k->in[1];
    const char *src = k->in[0]->data;
    char *dst = k->out[0]->data;
    size_t ib = p->inner_bytes;
    if (k->out[0]->nbytes == 0) return NULL; /* an empty output may have no buffer at all */
    for (int64_t o = 0; o < p->outer; o++) {
        const char *base = src + (size_t)(o * p->axis_dim) * ib;
        for (int64_t i = 0; i < p->n_idx; i++, dst += ib) {
            int64_t j = ss_op_elem_i64(ix, i);
            if (j < 0) j += p->axis_dim;
            if (j < 0 || j >= p->axis_dim)
                return ss_op_err(k, SS_ERR_INVALID, "index %lld is out of range for a dim of %lld",
                                 (long long)ss_op_elem_i64(ix, i), (long long)p->axis_dim);
            memcpy(dst, base + (size_t)j * ib, ib);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ GatherElements */

typedef struct {
    int nd, axis;
    int64_t dims[SS_MAX_DIMS];   /* indices (= output) dims */
    int64_t stride[SS_MAX_DIMS]; /* data strides */
    int64_t numel;
} gather_el_plan;

static ss_status *gather_el_infer(ss_kctx *k)
{
    ss_status *st = gather_inputs(k);
    if (st) return st;
    const ss_tensor *x = k->in[0], *ix = k->in[1];
    if (x->ndim != ix->ndim || x->ndim == 0)
        return ss_op_err(k, SS_ERR_INVALID, "data and indices must have the same rank >= 1");
    gather_el_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    if ((st = ss_op_axis(k, ss_onnx_attr_int(k->node, "axis", 0), x->ndim, &p->axis))) return st;
    for (int i = 0; i < x->ndim; i++)
        if (i != p->axis && ix->dims[i] > x->dims[i])
            return ss_op_err(k, SS_ERR_INVALID, "indices dim %d exceeds data's", i);
    p->nd = x->ndim;
    memcpy(p->dims, ix->dims, sizeof p->dims);
    ss_op_contiguous_strides(x->ndim, x->dims, p->stride);
    p->numel = ss_tensor_numel(ix);
    ss_op_same_shape(k->out[0], ix);
    k->out[0]->dtype = x->dtype;
    return NULL;
}

static ss_status *gather_el_run(ss_kctx *k)
{
    const gather_el_plan *p = k->state;
    const ss_tensor *x = k->in[0], *ix = k->in[1];
    size_t es = ss_dtype_size(x->dtype);
    int64_t ad = x->dims[p->axis], as = p->stride[p->axis];
    int64_t idx[SS_MAX_DIMS] = {0}, base = 0;
    char *dst = k->out[0]->data;
    for (int64_t i = 0; i < p->numel; i++) {
        int64_t j = ss_op_elem_i64(ix, i);
        if (j < 0) j += ad;
        if (j < 0 || j >= ad)
            return ss_op_err(k, SS_ERR_INVALID, "index %lld is out of range for a dim of %lld",
                             (long long)ss_op_elem_i64(ix, i), (long long)ad);
        memcpy(dst + (size_t)i * es, (const char *)x->data + (size_t)(base + j * as) * es, es);
        for (int d = p->nd - 1; d >= 0; d--) {
            if (d != p->axis) base += p->stride[d];
            if (++idx[d] < p->dims[d]) break;
            if (d != p->axis) base -= p->stride[d] * p->dims[d];
            idx[d] = 0;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ Tile */

static ss_status *tile_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (!st) st = no_strings(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    int nd = x->ndim, nr;
    int64_t reps[SS_MAX_DIMS];
    if ((st = ss_op_plan_ints(k, 1, "repeats", reps, SS_MAX_DIMS, &nr))) return st;
    if (nr != nd) return ss_op_err(k, SS_ERR_INVALID, "%d repeats for rank %d", nr, nd);
    ss_view *v = ss_op_state_alloc(k, sizeof *v);
    if (!v) return ss_op_oom();
    int64_t strides[SS_MAX_DIMS];
    ss_op_contiguous_strides(nd, x->dims, strides);
    ss_tensor *o = k->out[0];
    o->dtype = x->dtype;
    o->ndim = nd;
    v->nd = 2 * nd;
    v->offset = 0;
    for (int i = 0; i < nd; i++) {
        if (reps[i] < 0) return ss_op_err(k, SS_ERR_INVALID, "negative repeat");
        v->dims[2 * i] = reps[i];
        v->stride[2 * i] = 0;
        v->dims[2 * i + 1] = x->dims[i];
        v->stride[2 * i + 1] = strides[i];
        if (__builtin_mul_overflow(reps[i], x->dims[i], &o->dims[i]))
            return ss_op_err(k, SS_ERR_LIMIT, "output dim %d overflows", i);
    }
    if ((st = check_numel(k, o))) return st;
    ss_view_simplify(v);
    return NULL;
}

/* ------------------------------------------------------------------ Pad */

typedef struct {
    int nd;
    int mode; /* 0 constant, 1 reflect, 2 edge, 3 wrap (opset 19) */
    int64_t in_dims[SS_MAX_DIMS], out_dims[SS_MAX_DIMS], in_stride[SS_MAX_DIMS];
    int64_t *map[SS_MAX_DIMS]; /* per dim, per output coordinate: source coordinate or -1 */
    unsigned char value[16];   /* constant value bytes (opset < 11, or no constant_value input) */
    int64_t maps[];
} pad_plan;

/* Opset 18's 'axes' input: pads holds begins then ends for those axes only; spread them over
 * every axis (the others get 0). */
static ss_status *pad_axes(ss_kctx *k, int nd, int64_t *pads, int *np)
{
    int64_t axes[SS_MAX_DIMS], given[2 * SS_MAX_DIMS];
    int na;
    ss_status *st = ss_op_plan_ints(k, 3, "axes", axes, SS_MAX_DIMS, &na);
    if (st) return st;
    if (*np != 2 * na)
        return ss_op_err(k, SS_ERR_INVALID, "pads has %d values for %d axes", *np, na);
    memcpy(given, pads, sizeof(int64_t) * (size_t)*np);
    memset(pads, 0, sizeof(int64_t) * 2 * (size_t)nd);
    bool seen[SS_MAX_DIMS] = {false};
    for (int i = 0; i < na; i++) {
        int a;
        if ((st = ss_op_axis(k, axes[i], nd, &a))) return st;
        if (seen[a]) return ss_op_err(k, SS_ERR_INVALID, "axis %d is listed twice", a);
        seen[a] = true;
        pads[a] = given[i];
        pads[a + nd] = given[i + na];
    }
    *np = 2 * nd;
    return NULL;
}

static ss_status *pad_infer(ss_kctx *k)
{
    bool inputs = k->opset >= 11;
    ss_status *st = ss_op_expect_inputs(k, inputs ? 2 : 1, !inputs ? 1 : k->opset >= 18 ? 4 : 3);
    if (!st) st = no_strings(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    int nd = x->ndim, np;
    int64_t pads[2 * SS_MAX_DIMS];
    if (inputs) {
        if ((st = ss_op_plan_ints(k, 1, "pads", pads, 2 * SS_MAX_DIMS, &np))) return st;
        if (k->n_in > 3 && k->in[3] && (st = pad_axes(k, nd, pads, &np))) return st;
    } else {
        const int64_t *pa;
        np = ss_onnx_attr_ints(k->node, "pads", &pa);
        if (np > 2 * SS_MAX_DIMS) np = -1;
        for (int i = 0; i < np; i++)
            pads[i] = pa[i];
    }
    if (np != 2 * nd) return ss_op_err(k, SS_ERR_INVALID, "pads has %d values for rank %d", np, nd);
    char mode[32] = "constant";
    ss_onnx_attr_string(k->node, "mode", mode, sizeof mode);
    int m = strcmp(mode, "constant") == 0                 ? 0
            : strcmp(mode, "reflect") == 0                ? 1
            : strcmp(mode, "edge") == 0                   ? 2
            : strcmp(mode, "wrap") == 0 && k->opset >= 19 ? 3
                                                          : -1;
    if (m < 0) return ss_op_err(k, SS_ERR_UNSUPPORTED, "mode '%s' is not supported", mode);
    int64_t out_dims[SS_MAX_DIMS] = {0}, total = 0;
    for (int i = 0; i < nd; i++) {
        if (__builtin_add_overflow(x->dims[i], pads[i], &out_dims[i]) ||
            __builtin_add_overflow(out_dims[i], pads[i + nd], &out_dims[i]))
            return ss_op_err(k, SS_ERR_LIMIT, "pads overflow dim %d", i);
        if (out_dims[i] < 0) return ss_op_err(k, SS_ERR_INVALID, "pads crop dim %d below zero", i);
        if (m != 0 && x->dims[i] == 0 && out_dims[i] > 0)
            return ss_op_err(k, SS_ERR_INVALID, "cannot %s-pad an empty dim", mode);
        if (__builtin_add_overflow(total, out_dims[i], &total))
            return ss_op_err(k, SS_ERR_LIMIT, "output too large");
    }
    /* the plan maps every output index of every dim: one int64 each (a pad of 2^62 on a small
     * tensor must fail here, cleanly, not wrap the size below) */
    size_t map_bytes;
    if (ss_shape_numel(nd, out_dims) < 0 || total >= INT64_MAX ||
        __builtin_mul_overflow((size_t)(total + 1), sizeof(int64_t), &map_bytes) ||
        map_bytes > SIZE_MAX - sizeof(pad_plan))
        return ss_op_err(k, SS_ERR_LIMIT, "output too large");
    pad_plan *p = ss_op_state_alloc(k, sizeof *p + map_bytes);
    if (!p) return ss_op_oom();
    p->nd = nd;
    p->mode = m;
    memcpy(p->in_dims, x->dims, sizeof p->in_dims);
    memcpy(p->out_dims, out_dims, sizeof p->out_dims);
    ss_op_contiguous_strides(nd, x->dims, p->in_stride);
    int64_t *mp = p->maps;
    for (int i = 0; i < nd; i++) {
        p->map[i] = mp;
        int64_t d = x->dims[i];
        for (int64_t j = 0; j < out_dims[i]; j++) {
            int64_t s = j - pads[i];
            if (s < 0 || s >= d) {
                if (m == 0)
                    s = -1;
                else if (m == 3)
                    s = (s % d + d) % d;
                else if (m == 2)
                    s = s < 0 ? 0 : d - 1;
                else if (d == 1)
                    s = 0;
                else {
                    int64_t period = 2 * (d - 1);
                    s %= period;
                    if (s < 0) s += period;
                    if (s >= d) s = period - s;
                }
            }
            mp[j] = s;
        }
        mp += out_dims[i];
    }
    size_t es = ss_dtype_size(x->dtype);
    if (es > sizeof p->value) return ss_op_err(k, SS_ERR_UNSUPPORTED, "element size %zu", es);
    if (!inputs) {
        double v = ss_onnx_attr_float(k->node, "value", 0.0f);
        switch (x->dtype) {
        case SS_DT_FLOAT32: {
            float f = (float)v;
            memcpy(p->value, &f, 4);
            break;
        }
        case SS_DT_FLOAT64:
            memcpy(p->value, &v, 8);
            break;
        case SS_DT_FLOAT16: {
            uint16_t h = ss_f32_to_f16((float)v);
            memcpy(p->value, &h, 2);
            break;
        }
        default:
            if (v != 0.0)
                return ss_op_err(k, SS_ERR_UNSUPPORTED, "a non-zero 'value' for %s",
                                 ss_dtype_name(x->dtype));
        }
    } else if (k->n_in > 2 && k->in[2]) {
        if (k->in[2]->dtype != x->dtype || ss_tensor_numel(k->in[2]) != 1)
            return ss_op_err(k, SS_ERR_INVALID,
                             "constant_value must be one value of the data's type");
    }
    ss_tensor *o = k->out[0];
    o->dtype = x->dtype;
    o->ndim = nd;
    memcpy(o->dims, out_dims, sizeof(int64_t) * (size_t)nd);
    return NULL;
}

static ss_status *pad_run(ss_kctx *k)
{
    const pad_plan *p = k->state;
    const ss_tensor *x = k->in[0];
    size_t es = ss_dtype_size(x->dtype);
    const unsigned char *value = p->value;
    if (k->n_in > 2 && k->in[2]) value = k->in[2]->data;
    int nd = p->nd;
    char *dst = k->out[0]->data;
    int64_t numel = ss_shape_numel(nd, p->out_dims);
    if (numel == 0) return NULL;
    if (nd == 0) {
        memcpy(dst, x->data, es);
        return NULL;
    }
    int64_t row = p->out_dims[nd - 1], n_rows = numel / row;
    const int64_t *last = p->map[nd - 1];
    int64_t idx[SS_MAX_DIMS] = {0};
    const char *src = x->data;
    for (int64_t r = 0; r < n_rows; r++, dst += row * (int64_t)es) {
        /* source row for this output row, or none (constant fill) */
        int64_t off = 0;
        bool inside = true;
        for (int d = 0; d < nd - 1; d++) {
            int64_t s = p->map[d][idx[d]];
            if (s < 0) inside = false;
            off += s * p->in_stride[d];
        }
        const char *srow = src + off * (int64_t)es;
        for (int64_t j = 0; j < row; j++) {
            int64_t s = last[j];
            memcpy(dst + j * (int64_t)es,
                   inside && s >= 0 ? srow + s * (int64_t)es : (const char *)value, es);
        }
        for (int d = nd - 2; d >= 0 && ++idx[d] == p->out_dims[d]; d--)
            idx[d] = 0;
    }
    return NULL;
}

/* ------------------------------------------------------------------ DepthToSpace, SpaceToDepth */

static ss_status *space_infer(ss_kctx *k, bool to_space)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = no_strings(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->ndim != 4) return ss_op_err(k, SS_ERR_INVALID, "input must be 4-D (NCHW)");
    int64_t b = ss_onnx_attr_int(k->node, "blocksize", 0);
    if (b <= 0 || b > (1 << 20))
        return ss_op_err(k, SS_ERR_INVALID, "attribute 'blocksize' must be in 1..2^20");
    int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
    char mode[16] = "DCR";
    ss_onnx_attr_string(k->node, "mode", mode, sizeof mode);
    bool crd = strcmp(mode, "CRD") == 0;
    if (!crd && strcmp(mode, "DCR") != 0)
        return ss_op_err(k, SS_ERR_INVALID, "unknown mode '%s'", mode);
    ss_view *v = ss_op_state_alloc(k, sizeof *v);
    if (!v) return ss_op_oom();
    ss_tensor *o = k->out[0];
    o->dtype = x->dtype;
    o->ndim = 4;
    if (to_space) {
        if (C % (b * b))
            return ss_op_err(k, SS_ERR_INVALID, "channels not divisible by blocksize^2");
        int64_t c = C / (b * b);
        if (crd) {
            int64_t d6[6] = {N, c, b, b, H, W};
            int perm[6] = {0, 1, 4, 2, 5, 3};
            view_permute(v, 6, d6, perm);
        } else {
            int64_t d6[6] = {N, b, b, c, H, W};
            int perm[6] = {0, 3, 4, 1, 5, 2};
            view_permute(v, 6, d6, perm);
        }
        o->dims[0] = N, o->dims[1] = c, o->dims[2] = H * b, o->dims[3] = W * b;
    } else {
        if (H % b || W % b)
            return ss_op_err(k, SS_ERR_INVALID, "H and W must be divisible by blocksize");
        int64_t d6[6] = {N, C, H / b, b, W / b, b};
        int perm[6] = {0, 3, 5, 1, 2, 4};
        view_permute(v, 6, d6, perm);
        o->dims[0] = N, o->dims[1] = C * b * b, o->dims[2] = H / b, o->dims[3] = W / b;
    }
    ss_view_simplify(v);
    return NULL;
}

static ss_status *depth_to_space_infer(ss_kctx *k)
{
    return space_infer(k, true);
}
static ss_status *space_to_depth_infer(ss_kctx *k)
{
    return space_infer(k, false);
}

/* ------------------------------------------------------------------ Trilu */

static ss_status *trilu_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 2);
    if (!st) st = no_strings(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->ndim < 2) return ss_op_err(k, SS_ERR_INVALID, "input must have rank >= 2");
    if (k->n_in > 1 && k->in[1] &&
        (k->in[1]->dtype != SS_DT_INT64 || ss_tensor_numel(k->in[1]) != 1))
        return ss_op_err(k, SS_ERR_INVALID, "k must be one int64");
    bool *upper = ss_op_state_alloc(k, sizeof *upper);
    if (!upper) return ss_op_oom();
    *upper = ss_onnx_attr_int(k->node, "upper", 1) != 0;
    ss_op_same_shape(k->out[0], x);
    return NULL;
}

static ss_status *trilu_run(ss_kctx *k)
{
    const ss_tensor *x = k->in[0];
    size_t es = ss_dtype_size(x->dtype);
    int64_t diag =
        k->n_in > 1 && k->in[1] ? ss_op_elem_i64(k->in[1], 0) : 0; /* may change per run */
    bool upper = *(const bool *)k->state;
    int64_t R = x->dims[x->ndim - 2], C = x->dims[x->ndim - 1];
    if (diag > C)
        diag = C; /* beyond the matrix every k gives the same result; keeps r + diag exact */
    if (diag < -R) diag = -R;
    int64_t n_mat = R > 0 && C > 0 ? ss_tensor_numel(x) / (R * C) : 0;
    const char *src = x->data;
    char *dst = k->out[0]->data;
    size_t row = (size_t)C * es;
    for (int64_t m = 0; m < n_mat; m++)
        for (int64_t r = 0; r < R; r++, src += row, dst += row) {
            /* keep columns c with c - r >= diag (upper) or c - r <= diag (lower) */
            int64_t lo = upper ? r + diag : 0, hi = upper ? C : r + diag + 1;
            lo = lo < 0 ? 0 : lo > C ? C : lo;
            hi = hi < 0 ? 0 : hi > C ? C : hi;
            if (hi < lo) hi = lo;
            memset(dst, 0, (size_t)lo * es);
            memcpy(dst + (size_t)lo * es, src + (size_t)lo * es, (size_t)(hi - lo) * es);
            memset(dst + (size_t)hi * es, 0, (size_t)(C - hi) * es);
        }
    return NULL;
}

const ss_op_def ss_ops_movement[] = {
    {"", "Transpose", 1, 21, transpose_infer, ss_view_run, 0},
    {"", "Concat", 1, 21, concat_infer, concat_run, 0},
    {"", "Split", 2, 21, split_infer, split_run, 0},
    {"", "Slice", 1, 21, slice_infer, ss_view_run, 0},
    {"", "Gather", 1, 21, gather_infer, gather_run, 0},
    {"", "GatherElements", 11, 21, gather_el_infer, gather_el_run, 0},
    {"", "Tile", 6, 21, tile_infer, ss_view_run, 0},
    {"", "Pad", 2, 21, pad_infer, pad_run, 0},
    {"", "DepthToSpace", 1, 21, depth_to_space_infer, ss_view_run, 0},
    {"", "SpaceToDepth", 1, 21, space_to_depth_infer, ss_view_run, 0},
    {"", "Trilu", 14, 21, trilu_infer, trilu_run, 0},
    {"com.microsoft", "Trilu", 1, 1, trilu_infer, trilu_run, 0}, /* onnxruntime's, before 14 */
    {0},
};
