/*
 * Control flow with a body: Loop (opsets 11 to 21) and Scan (opsets 8 to 21; opset 8's batch dim
 * is scanned row by row, full-length sequences only).
 *
 * The body is a session of its own (subgraph.c), built and planned once when the node is planned:
 * its declared inputs first (Loop: iteration number, condition, loop-carried values; Scan: state
 * values, then one slice of each scan input), then the outer-scope values it reads. Loop-carried
 * and state values must keep their shape from one iteration to the next; they live in the node's
 * scratch between iterations (the body's outputs sit in the body's arena, which the next run
 * overwrites), so an iteration allocates nothing. A body whose shapes depend on the iteration
 * number (a Slice by it) is re-planned by the body session when that value changes: correct,
 * but it allocates. Scan outputs are stacked into the node's outputs slice by slice; a Loop with
 * scan outputs needs its trip count at plan time and a condition that only passes its input
 * through (the usual exporter pattern), because the stacked shape depends on the count.
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

/* The body and its input descriptors, shared by Loop and Scan. */
typedef struct {
    ss_session *body;
    int n_decl;    /* the body's declared inputs */
    int n_outer;   /* outer-scope values after them (also after the node's declared inputs) */
    ss_tensor *in; /* n_decl + n_outer descriptors; data set before every run */
} body_plan;

static void body_release(void *state)
{
    ss_session_free(((body_plan *)state)->body);
}

/* Plans the body for descs (in[0..n_decl) already filled by the caller; the outer values are
 * taken from the node's inputs after its first `node_in` ones). */
static ss_status *body_plan_make(ss_kctx *k, body_plan *b, int node_in)
{
    const ss_onnx_attr *a = ss_onnx_attr_find(k->node, "body");
    if (!a || !a->g) return ss_op_err(k, SS_ERR_INVALID, "attribute 'body' (a graph) is required");
    if ((int)a->g->n_input != b->n_decl)
        return ss_op_err(k, SS_ERR_INVALID, "body declares %zu inputs, expects %d", a->g->n_input,
                         b->n_decl);
    ss_name_list outer;
    ss_status *st = ss_subgraph_outer_names(k->node, &outer);
    if (st) return st;
    if (outer.n != b->n_outer)
        st = ss_op_err(k, SS_ERR_INTERNAL, "%d outer names but %d implicit inputs", outer.n,
                       b->n_outer);
    for (int i = 0; !st && i < b->n_outer; i++) {
        b->in[b->n_decl + i] = *k->in[node_in + i]; /* data only where known at plan time */
        b->in[b->n_decl + i].storage = SS_STORE_BORROWED;
        /* a sequence's element shapes size what the body reads from it (SequenceAt) */
        const ss_tensor *v =
            k->in[node_in + i]->dtype == SS_DT_SEQUENCE ? ss_kctx_value(k, node_in + i) : NULL;
        if (v && v->data) b->in[b->n_decl + i].data = v->data;
    }
    if (!st) st = ss_subgraph_session(k, a->g, "body", &outer, b->in, &b->body);
    ss_name_list_free(&outer);
    return st;
}

/* The body's output j as planned. */
static ss_status *body_output(ss_kctx *k, const body_plan *b, int j, ss_tensor *desc)
{
    const ss_session *s = b->body;
    if (!ss_session_value_desc(s, ss_session_output(s, j)->name, desc))
        return ss_op_err(k, SS_ERR_INVALID, "body output %d has no type", j);
    return NULL;
}

static ss_status *body_run(ss_kctx *k, body_plan *b, int node_in, const ss_tensor **outs)
{
    for (int i = 0; i < b->n_outer; i++) {
        b->in[b->n_decl + i].data = k->in[node_in + i]->data;
        b->in[b->n_decl + i].nbytes = k->in[node_in + i]->nbytes;
    }
    ss_status *st = ss_session_run(b->body, b->in, b->n_decl + b->n_outer, outs);
    return st ? ss_status_wrap(st, "%s node '%s', body", k->node->op_type, k->node_name) : NULL;
}

/* A carried value must come out of the body with the type and shape it went in with. */
static ss_status *same_desc(ss_kctx *k, const char *what, int j, const ss_tensor *in,
                            const ss_tensor *out)
{
    if (in->dtype == out->dtype && ss_shape_equal(in->ndim, in->dims, out->ndim, out->dims))
        return NULL;
    char a[128], b[128];
    return ss_op_err(k, SS_ERR_UNSUPPORTED,
                     "%s %d goes into the body as %s %s and comes out as %s %s: values that change "
                     "shape across iterations are not supported",
                     what, j, ss_dtype_name(in->dtype),
                     ss_shape_str(in->ndim, in->dims, a, sizeof a), ss_dtype_name(out->dtype),
                     ss_shape_str(out->ndim, out->dims, b, sizeof b));
}

/* Slice i of the middle dim of an [outer, n, inner] tensor <-> a contiguous [outer, inner]. */
static void slice_copy(char *tensor, char *slice, int64_t outer, int64_t n, int64_t i,
                       size_t inner_bytes, bool to_slice)
{
    for (int64_t o = 0; o < outer; o++) {
        char *t = tensor + (size_t)(o * n + i) * inner_bytes, *s = slice + (size_t)o * inner_bytes;
        if (inner_bytes) memcpy(to_slice ? s : t, to_slice ? t : s, inner_bytes);
    }
}

/* ------------------------------------------------------------------ Loop */

typedef struct {
    body_plan b;
    int n_carried, n_scan;
    int64_t planned_iters; /* scan outputs' length, or -1 when there are none */
    int64_t iter;          /* the body's iteration-number input */
    unsigned char cond;    /* the body's condition input */
} loop_plan;

/* Whether body output 0 (the condition) is body input 1 passed through (Identity chains). */
static bool cond_passes_through(const Onnx__GraphProto *g)
{
    if (g->n_input < 2 || g->n_output < 1) return false;
    const char *name = g->output[0]->name, *cond = g->input[1]->name;
    for (int hops = 0; hops < 16; hops++) {
        if (!strcmp(name, cond)) return true;
        const Onnx__NodeProto *prod = NULL;
        for (size_t i = 0; i < g->n_node && !prod; i++)
            for (size_t j = 0; j < g->node[i]->n_output; j++)
                if (!strcmp(g->node[i]->output[j], name)) prod = g->node[i];
        if (!prod || strcmp(prod->op_type, "Identity") || prod->n_input != 1) return false;
        name = prod->input[0];
    }
    return false;
}

/* The body's condition output as a plan-time constant (an outer `true`, as PyTorch writes it):
 * 1 or 0, or -1 when it is computed at run time. */
static int cond_constant(const loop_plan *p)
{
    ss_tensor d;
    const ss_session *s = p->b.body;
    if (!ss_session_value_desc(s, ss_session_output(s, 0)->name, &d) || !d.data ||
        ss_tensor_numel(&d) != 1)
        return -1;
    return ss_op_elem_f64(&d, 0) != 0;
}

/* The scan outputs' length: the trip count when the body's condition passes its input through
 * or is constantly true (one iteration when constantly false), 0 when it starts false. */
static ss_status *loop_count_iters(ss_kctx *k, loop_plan *p)
{
    const ss_tensor *m = NULL, *c = NULL;
    const ss_onnx_attr *a = ss_onnx_attr_find(k->node, "body");
    int body_cond = cond_passes_through(a->g) ? 1 : cond_constant(p);
    if (!k->in[0] || body_cond < 0)
        return ss_op_err(k, SS_ERR_UNSUPPORTED,
                         "scan outputs need a trip count M and a body condition that passes its "
                         "input through or is constant (the stacked length is only known at run "
                         "time otherwise)");
    ss_status *st = ss_op_plan_value(k, 0, "M", &m);
    if (!st && k->in[1]) st = ss_op_plan_value(k, 1, "cond", &c);
    if (st) return st;
    int64_t n = ss_op_elem_i64(m, 0);
    p->planned_iters = (c && !ss_op_elem_f64(c, 0)) || n < 0 ? 0 : body_cond ? n : n > 0;
    return NULL;
}

static ss_status *loop_set_outputs(ss_kctx *k, loop_plan *p)
{
    int n_body_out = ss_session_num_outputs(p->b.body);
    if (n_body_out != 1 + p->n_carried + p->n_scan)
        return ss_op_err(k, SS_ERR_INVALID, "body has %d outputs, expects %d", n_body_out,
                         1 + p->n_carried + p->n_scan);
    ss_status *st = NULL;
    for (int j = 0; !st && j < p->n_carried + p->n_scan; j++) {
        ss_tensor d;
        if ((st = body_output(k, &p->b, 1 + j, &d))) break;
        if (j < p->n_carried && (st = same_desc(k, "loop-carried value", j, &p->b.in[2 + j], &d)))
            break;
        ss_tensor *o = k->out[j];
        if (!o) continue;
        if (j < p->n_carried) {
            ss_op_same_shape(o, &d);
            continue;
        }
        if (d.ndim >= SS_MAX_DIMS) return ss_op_err(k, SS_ERR_LIMIT, "scan output rank too large");
        o->dtype = d.dtype;
        o->ndim = d.ndim + 1;
        o->dims[0] = p->planned_iters;
        memcpy(o->dims + 1, d.dims, sizeof(int64_t) * (size_t)d.ndim);
    }
    return st;
}

static ss_status *loop_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"body", NULL};
    ss_status *st = ss_op_check_attrs(k, attrs);
    if (st) return st;
    int n_decl_in = (int)k->node->n_input, n_carried = n_decl_in - 2;
    if (n_carried < 0) return ss_op_err(k, SS_ERR_INVALID, "expects inputs M, cond, v_initial...");
    if ((k->in[0] && (k->in[0]->dtype != SS_DT_INT64 || ss_tensor_numel(k->in[0]) != 1)) ||
        (k->in[1] && (k->in[1]->dtype != SS_DT_BOOL || ss_tensor_numel(k->in[1]) != 1)))
        return ss_op_err(k, SS_ERR_INVALID, "M must be one int64 and cond one bool");
    int n_outer = k->n_in - n_decl_in, n_body_in = n_decl_in + n_outer;
    loop_plan *p = ss_op_state_alloc(k, sizeof *p + sizeof(ss_tensor) * (size_t)(n_body_in + 1));
    if (!p) return ss_op_oom();
    p->b = (body_plan){.n_decl = n_decl_in, .n_outer = n_outer, .in = (ss_tensor *)(p + 1)};
    p->n_carried = n_carried;
    p->n_scan = k->n_out - n_carried;
    p->planned_iters = -1;
    size_t carried_bytes = 0;
    for (int j = 0; j < n_carried; j++) {
        if (!k->in[2 + j]) return ss_op_err(k, SS_ERR_INVALID, "v_initial %d is missing", j);
        p->b.in[2 + j] = *k->in[2 + j];
        p->b.in[2 + j].data = NULL; /* changes every iteration */
        p->b.in[2 + j].storage = SS_STORE_BORROWED;
        carried_bytes += (k->in[2 + j]->nbytes + 63) / 64 * 64;
    }
    p->b.in[0] = (ss_tensor){.dtype = SS_DT_INT64, .nbytes = 8, .data = &p->iter};
    p->b.in[1] = (ss_tensor){.dtype = SS_DT_BOOL, .nbytes = 1, .data = &p->cond};
    p->cond = 1;
    if (p->n_scan < 0) return ss_op_err(k, SS_ERR_INVALID, "fewer outputs than carried values");
    k->scratch_bytes = 2 * carried_bytes; /* two sets: a body output may be a body input */
    if ((st = body_plan_make(k, &p->b, n_decl_in))) return st;
    if (p->n_scan > 0 && (st = loop_count_iters(k, p))) return st;
    return loop_set_outputs(k, p);
}

/* Carried value j's buffer in set `set` of the scratch (each 64-byte aligned, in input order).
 * Iterations alternate between the sets, so an output that is (a view of) an input is read
 * before anything overwrites it. */
static char *loop_carry(ss_kctx *k, int set, int j)
{
    char *at = (char *)k->scratch + (size_t)set * (k->scratch_bytes / 2);
    for (int i = 0; i < j; i++)
        at += (k->in[2 + i]->nbytes + 63) / 64 * 64;
    return at;
}

static ss_status *loop_step_outputs(ss_kctx *k, loop_plan *p, const ss_tensor *outs, int64_t i)
{
    for (int j = 0; j < p->n_carried; j++) {
        ss_status *st = same_desc(k, "loop-carried value", j, &p->b.in[2 + j], &outs[1 + j]);
        if (st) return st;
        char *next = loop_carry(k, (int)((i + 1) & 1), j);
        if (outs[1 + j].nbytes) memcpy(next, outs[1 + j].data, outs[1 + j].nbytes);
        p->b.in[2 + j].data = next;
    }
    for (int j = 0; j < p->n_scan; j++) {
        ss_tensor *o = k->out[p->n_carried + j];
        const ss_tensor *s = &outs[1 + p->n_carried + j];
        if (!o) continue;
        if (i >= p->planned_iters || (size_t)ss_tensor_numel(o) /
                                             (size_t)(o->dims[0] ? o->dims[0] : 1) *
                                             ss_dtype_size(o->dtype) !=
                                         s->nbytes)
            return ss_op_err(k, SS_ERR_UNSUPPORTED,
                             "scan output %d: iteration %lld does not fit the planned %lld "
                             "iterations of this shape",
                             j, (long long)i, (long long)p->planned_iters);
        if (s->nbytes) memcpy((char *)o->data + (size_t)i * s->nbytes, s->data, s->nbytes);
    }
    return NULL;
}

static ss_status *loop_run(ss_kctx *k)
{
    loop_plan *p = k->state;
    int64_t max_iter = k->in[0] ? ss_op_elem_i64(k->in[0], 0) : INT64_MAX;
    bool cond = k->in[1] ? ss_op_elem_f64(k->in[1], 0) != 0 : true;
    for (int j = 0; j < p->n_carried; j++) {
        if (k->in[2 + j]->nbytes)
            memcpy(loop_carry(k, 0, j), k->in[2 + j]->data, k->in[2 + j]->nbytes);
        p->b.in[2 + j].data = loop_carry(k, 0, j);
        p->b.in[2 + j].nbytes = k->in[2 + j]->nbytes;
    }
    int64_t i = 0;
    for (; i < max_iter && cond; i++) {
        p->iter = i;
        p->cond = cond;
        const ss_tensor *outs = NULL;
        ss_status *st = ss_kctx_check_deadline(k, i); /* the data decides how long this goes on */
        if (!st) st = body_run(k, &p->b, (int)k->node->n_input, &outs);
        if (!st) st = loop_step_outputs(k, p, outs, i);
        if (st) return st;
        cond = ss_op_elem_f64(&outs[0], 0) != 0;
    }
    if (p->n_scan > 0 && i != p->planned_iters)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "ran %lld iterations, planned %lld", (long long)i,
                         (long long)p->planned_iters);
    for (int j = 0; j < p->n_carried; j++)
        if (k->out[j] && k->out[j]->nbytes)
            memcpy(k->out[j]->data, p->b.in[2 + j].data, k->out[j]->nbytes);
    return NULL;
}

/* ------------------------------------------------------------------ Scan */

typedef struct {
    body_plan b;
    int first;    /* node inputs before the states: opset 8's sequence_lens */
    bool batched; /* opset 8: every input and output has a leading batch dim, scanned per row */
    int64_t batch;
    int n_state, n_scan_in, n_scan_out;
    int64_t seq;
    int in_axis[SS_MAX_DIMS * 4], out_axis[SS_MAX_DIMS * 4];
    bool in_rev[SS_MAX_DIMS * 4], out_rev[SS_MAX_DIMS * 4];
} scan_plan;

enum { SCAN_MAX_VALUES = SS_MAX_DIMS * 4 };

/* Row b of t when the scan is batched (a view: no copy), else t itself. */
static ss_tensor batch_part(const ss_tensor *t, const scan_plan *p, int64_t b)
{
    ss_tensor v = *t;
    if (!p->batched) return v;
    v.ndim = t->ndim - 1;
    memmove(v.dims, v.dims + 1, sizeof(int64_t) * (size_t)v.ndim);
    v.nbytes = (size_t)ss_tensor_numel(&v) * ss_dtype_size(v.dtype);
    v.data = t->data ? (char *)t->data + (size_t)b * v.nbytes : NULL;
    return v;
}

static ss_status *scan_attr_list(ss_kctx *k, const char *name, int n, int rank_of(ss_kctx *, int),
                                 int *axes, bool *flags)
{
    const int64_t *v = NULL;
    int nv = ss_onnx_attr_ints(k->node, name, &v);
    if (nv > 0 && nv != n)
        return ss_op_err(k, SS_ERR_INVALID, "'%s' has %d values, expects %d", name, nv, n);
    for (int j = 0; j < n; j++) {
        int64_t x = nv > 0 ? v[j] : 0;
        if (flags) {
            flags[j] = x != 0;
            continue;
        }
        int r = rank_of ? rank_of(k, j) : 1;
        if (x < 0) x += r;
        if (x < 0 || x >= r)
            return ss_op_err(k, SS_ERR_INVALID, "'%s'[%d] is out of range for rank %d", name, j, r);
        axes[j] = (int)x;
    }
    return NULL;
}

static int scan_in_rank(ss_kctx *k, int j)
{
    const scan_plan *p = k->state;
    return k->in[p->first + p->n_state + j]->ndim - p->batched;
}

static int scan_out_rank(ss_kctx *k, int j)
{
    const scan_plan *p = k->state;
    ss_tensor d = {0};
    body_output(k, &p->b, p->n_state + j, &d);
    return d.ndim + 1;
}

/* Axes and directions: opset 8 scans axis 0 of each row, inputs in `directions`. */
static ss_status *scan_axes(ss_kctx *k, scan_plan *p, bool outputs)
{
    if (p->batched)
        return outputs ? NULL
                       : scan_attr_list(k, "directions", p->n_scan_in, NULL, NULL, p->in_rev);
    if (outputs) {
        ss_status *st =
            scan_attr_list(k, "scan_output_axes", p->n_scan_out, scan_out_rank, p->out_axis, NULL);
        return st ? st
                  : scan_attr_list(k, "scan_output_directions", p->n_scan_out, NULL, NULL,
                                   p->out_rev);
    }
    ss_status *st =
        scan_attr_list(k, "scan_input_axes", p->n_scan_in, scan_in_rank, p->in_axis, NULL);
    return st ? st
              : scan_attr_list(k, "scan_input_directions", p->n_scan_in, NULL, NULL, p->in_rev);
}

static ss_status *scan_inputs(ss_kctx *k, scan_plan *p)
{
    ss_status *st = scan_axes(k, p, false);
    if (st) return st;
    size_t bytes = 0;
    p->seq = -1;
    p->batch = p->batched ? -1 : 1;
    for (int j = 0; j < p->n_state + p->n_scan_in; j++) {
        const ss_tensor *x = k->in[p->first + j];
        if (!x) return ss_op_err(k, SS_ERR_INVALID, "input %d is missing", p->first + j);
        if (p->batched && (x->ndim < 1 || (p->batch >= 0 && x->dims[0] != p->batch)))
            return ss_op_err(k, SS_ERR_INVALID, "inputs disagree on the batch dim");
        if (p->batched) p->batch = x->dims[0];
        ss_tensor *d = &p->b.in[j];
        *d = batch_part(x, p, 0);
        d->data = NULL;
        d->storage = SS_STORE_BORROWED;
        if (j >= p->n_state) {
            int ax = p->in_axis[j - p->n_state];
            if (d->ndim < 1 || (p->seq >= 0 && d->dims[ax] != p->seq))
                return ss_op_err(k, SS_ERR_INVALID, "scan inputs disagree on the sequence length");
            p->seq = d->dims[ax];
            d->ndim--;
            memmove(d->dims + ax, d->dims + ax + 1, sizeof(int64_t) * (size_t)(d->ndim - ax));
            d->nbytes = (size_t)ss_tensor_numel(d) * ss_dtype_size(d->dtype);
        }
        /* states twice (two sets, as Loop's carried values), slices once */
        bytes += (j < p->n_state ? 2 : 1) * ((d->nbytes + 63) / 64 * 64);
    }
    if (p->seq < 0) return ss_op_err(k, SS_ERR_INVALID, "num_scan_inputs must be at least 1");
    k->scratch_bytes = bytes;
    return NULL;
}

/* Output j's dims from the body's (per row) output d: the sequence inserted at its axis for a
 * scan output, then the batch dim in front when batched. */
static void scan_output_dims(const scan_plan *p, int j, const ss_tensor *d, ss_tensor *o)
{
    ss_op_same_shape(o, d);
    if (j >= p->n_state) {
        int ax = p->out_axis[j - p->n_state];
        memmove(o->dims + ax + 1, o->dims + ax, sizeof(int64_t) * (size_t)(d->ndim - ax));
        o->dims[ax] = p->seq;
        o->ndim++;
    }
    if (p->batched) {
        memmove(o->dims + 1, o->dims, sizeof(int64_t) * (size_t)o->ndim);
        o->dims[0] = p->batch;
        o->ndim++;
    }
}

static ss_status *scan_outputs(ss_kctx *k, scan_plan *p)
{
    if (ss_session_num_outputs(p->b.body) != p->n_state + p->n_scan_out)
        return ss_op_err(k, SS_ERR_INVALID, "body has %d outputs, the node %d",
                         ss_session_num_outputs(p->b.body), p->n_state + p->n_scan_out);
    ss_status *st = scan_axes(k, p, true);
    for (int j = 0; !st && j < p->n_state + p->n_scan_out; j++) {
        ss_tensor d;
        if ((st = body_output(k, &p->b, j, &d))) break;
        if (j < p->n_state && (st = same_desc(k, "state value", j, &p->b.in[j], &d))) break;
        if (d.ndim + 2 > SS_MAX_DIMS) return ss_op_err(k, SS_ERR_LIMIT, "output rank too large");
        if (k->out[j]) scan_output_dims(p, j, &d, k->out[j]);
    }
    return st;
}

static ss_status *scan_setup(ss_kctx *k, int first, bool batched)
{
    int n_decl_in = (int)k->node->n_input;
    int64_t m = ss_onnx_attr_int(k->node, "num_scan_inputs", -1);
    if (m < 1 || m > n_decl_in - first || n_decl_in > SCAN_MAX_VALUES || k->n_out > SCAN_MAX_VALUES)
        return ss_op_err(k, SS_ERR_INVALID,
                         "num_scan_inputs must be in [1, inputs] (and at most %d values)",
                         SCAN_MAX_VALUES);
    int n_outer = k->n_in - n_decl_in;
    scan_plan *p = ss_op_state_alloc(k, sizeof *p + sizeof(ss_tensor) * (size_t)(k->n_in + 1));
    if (!p) return ss_op_oom();
    p->b = (body_plan){.n_decl = n_decl_in - first, .n_outer = n_outer, .in = (ss_tensor *)(p + 1)};
    p->first = first;
    p->batched = batched;
    p->n_scan_in = (int)m;
    p->n_state = n_decl_in - first - (int)m;
    p->n_scan_out = k->n_out - p->n_state;
    if (p->n_scan_out < 0) return ss_op_err(k, SS_ERR_INVALID, "fewer outputs than state values");
    if (first && k->in[0] && (k->in[0]->dtype != SS_DT_INT32 || k->in[0]->ndim != 1))
        return ss_op_err(k, SS_ERR_INVALID, "sequence_lens must be a 1-D int32 tensor");
    ss_status *st = scan_inputs(k, p);
    if (!st) st = body_plan_make(k, &p->b, n_decl_in);
    return st ? st : scan_outputs(k, p);
}

static ss_status *scan_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"body",
                                        "num_scan_inputs",
                                        "scan_input_axes",
                                        "scan_input_directions",
                                        "scan_output_axes",
                                        "scan_output_directions",
                                        NULL};
    ss_status *st = ss_op_check_attrs(k, attrs);
    return st ? st : scan_setup(k, 0, false);
}

static ss_status *scan8_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"body", "directions", "num_scan_inputs", NULL};
    ss_status *st = ss_op_check_attrs(k, attrs);
    return st ? st : scan_setup(k, 1, true);
}

/* Scratch: two sets of the state values, then one slice per scan input (each 64-byte
 * aligned). Input j < n_state in set `set`; the slices ignore `set`. */
static char *scan_buf(ss_kctx *k, const scan_plan *p, int set, int j)
{
    char *at = k->scratch;
    for (int i = 0; i < j; i++)
        at += (p->b.in[i].nbytes + 63) / 64 * 64;
    if (j >= p->n_state) set = 1;
    for (int i = 0; i < p->n_state && set; i++)
        at += (p->b.in[i].nbytes + 63) / 64 * 64;
    return at;
}

static void scan_copy(const ss_tensor *t, int axis, int64_t i, char *slice, bool to_slice)
{
    size_t es = ss_dtype_size(t->dtype);
    int64_t outer, n, inner;
    ss_op_split_axis(t, axis, &outer, &n, &inner);
    slice_copy(t->data, slice, outer, n, i, (size_t)inner * es, to_slice);
}

/* One iteration on row `row`: slices in, body, scan outputs stacked, states to the other set. */
static ss_status *scan_step(ss_kctx *k, scan_plan *p, int64_t row, int64_t i)
{
    for (int j = 0; j < p->n_scan_in; j++) {
        ss_tensor x = batch_part(k->in[p->first + p->n_state + j], p, row);
        scan_copy(&x, p->in_axis[j], p->in_rev[j] ? p->seq - 1 - i : i,
                  p->b.in[p->n_state + j].data, true);
    }
    const ss_tensor *outs = NULL;
    ss_status *st = body_run(k, &p->b, (int)k->node->n_input, &outs);
    if (st) return st;
    for (int j = 0; j < p->n_scan_out; j++) {
        if (!k->out[p->n_state + j]) continue;
        ss_tensor o = batch_part(k->out[p->n_state + j], p, row);
        size_t slice =
            (size_t)(ss_tensor_numel(&o) / (p->seq ? p->seq : 1)) * ss_dtype_size(o.dtype);
        if (outs[p->n_state + j].nbytes != slice)
            return ss_op_err(k, SS_ERR_UNSUPPORTED,
                             "scan output %d changed shape at iteration %lld", j, (long long)i);
        scan_copy(&o, p->out_axis[j], p->out_rev[j] ? p->seq - 1 - i : i,
                  (char *)outs[p->n_state + j].data, false);
    }
    for (int j = 0; j < p->n_state; j++) { /* into the other set: an output may be an input */
        if ((st = same_desc(k, "state value", j, &p->b.in[j], &outs[j]))) return st;
        char *next = scan_buf(k, p, (int)((i + 1) & 1), j);
        if (outs[j].nbytes) memcpy(next, outs[j].data, outs[j].nbytes);
        p->b.in[j].data = next;
    }
    return NULL;
}

static ss_status *scan_run(ss_kctx *k)
{
    scan_plan *p = k->state;
    const ss_tensor *lens = p->first ? k->in[0] : NULL;
    for (int64_t b = 0; lens && b < ss_tensor_numel(lens); b++)
        if (ss_op_elem_i64(lens, b) != p->seq)
            return ss_op_err(k, SS_ERR_UNSUPPORTED,
                             "sequence_lens[%lld] = %lld: only full-length sequences (%lld) are "
                             "supported",
                             (long long)b, (long long)ss_op_elem_i64(lens, b), (long long)p->seq);
    for (int64_t row = 0; row < p->batch; row++) {
        for (int j = 0; j < p->b.n_decl; j++)
            p->b.in[j].data = scan_buf(k, p, 0, j);
        for (int j = 0; j < p->n_state; j++) {
            ss_tensor s = batch_part(k->in[p->first + j], p, row);
            if (s.nbytes) memcpy(p->b.in[j].data, s.data, s.nbytes);
        }
        for (int64_t i = 0; i < p->seq; i++) {
            ss_status *st = scan_step(k, p, row, i);
            if (st) return st;
        }
        for (int j = 0; j < p->n_state; j++) {
            if (!k->out[j]) continue;
            ss_tensor o = batch_part(k->out[j], p, row);
            if (o.nbytes) memcpy(o.data, p->b.in[j].data, o.nbytes);
        }
    }
    return NULL;
}

const ss_op_def ss_ops_loop[] = {
    {"", "Loop", 11, 21, loop_infer, loop_run, 0, body_release},
    {"", "Scan", 8, 8, scan8_infer, scan_run, 0, body_release},
    {"", "Scan", 9, 21, scan_infer, scan_run, 0, body_release},
    {0},
};
