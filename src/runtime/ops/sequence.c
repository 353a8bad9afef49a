/*
 * Sequence values (ONNX seq(tensor)) and their ops: SequenceEmpty, SequenceConstruct,
 * SequenceInsert, SequenceErase, SequenceLength, SequenceAt, ConcatFromSequence,
 * SplitToSequence and SequenceMap; Optional, OptionalHasElement and OptionalGetElement.
 *
 * A sequence is an ss_sequence (owned tensors) that a 0-D SS_DT_SEQUENCE value refers to. Its
 * element is {address, signature}: the signature hashes the count, dtypes and shapes, so a plan
 * that sized SequenceAt's or ConcatFromSequence's output from a sequence seen at plan time (the
 * session records such values and re-plans when their bytes change) re-plans exactly when a
 * shape changed. A producing node writes into the sequence the session keeps for it
 * (ss_kctx_sequence): the same object on every run, so SequenceInsert in a loop body extends it
 * in place. Sequences hold their own copies of the tensors, so these ops allocate while running
 * (as string ops do): sequences have no size a plan could know.
 */
#include "common.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    ss_sequence *self;
    uint64_t sig;
} seq_ref;

struct ss_sequence {
    seq_ref ref; /* what a SS_DT_SEQUENCE tensor's element holds */
    ss_dtype elem;
    bool optional; /* an optional(tensor): 0 or 1 items */
    int n, cap;
    ss_tensor *items;
};

/* ------------------------------------------------------------------ ss_sequence */

ss_sequence *ss_sequence_new(ss_dtype elem_dtype)
{
    ss_sequence *q = calloc(1, sizeof *q);
    if (q) q->elem = elem_dtype, q->ref.self = q;
    return q;
}

static void seq_clear(ss_sequence *q)
{
    for (int i = 0; i < q->n; i++)
        ss_tensor_free(&q->items[i]);
    q->n = 0;
}

void ss_sequence_free(ss_sequence *q)
{
    if (!q) return;
    seq_clear(q);
    free(q->items);
    free(q);
}

int ss_sequence_len(const ss_sequence *q)
{
    return q->n;
}

ss_dtype ss_sequence_elem_dtype(const ss_sequence *q)
{
    return q->elem;
}

const ss_tensor *ss_sequence_at(const ss_sequence *q, int i)
{
    return i >= 0 && i < q->n ? &q->items[i] : NULL;
}

/* Puts t (its storage taken over) at position i; on failure t is freed. */
static ss_status *seq_put(ss_sequence *q, int i, ss_tensor *t)
{
    if (q->n == q->cap) {
        int cap = q->cap ? 2 * q->cap : 8;
        ss_tensor *items = realloc(q->items, sizeof *items * (size_t)cap);
        if (!items) {
            ss_tensor_free(t);
            return ss_errf(SS_ERR_NOMEM, "out of memory growing a sequence");
        }
        q->items = items, q->cap = cap;
    }
    memmove(&q->items[i + 1], &q->items[i], sizeof *q->items * (size_t)(q->n - i));
    q->items[i] = *t;
    q->n++;
    q->elem = t->dtype;
    return NULL;
}

ss_status *ss_sequence_insert(ss_sequence *q, int i, const ss_tensor *t)
{
    if (i < 0 || i > q->n) return ss_errf(SS_ERR_INVALID, "sequence position %d out of range", i);
    if (q->n && t->dtype != q->elem)
        return ss_errf(SS_ERR_INVALID, "a %s tensor cannot join a sequence of %s",
                       ss_dtype_name(t->dtype), ss_dtype_name(q->elem));
    ss_tensor copy;
    ss_status *st = ss_tensor_copy(&copy, t);
    return st ? st : seq_put(q, i, &copy);
}

static void seq_erase(ss_sequence *q, int i)
{
    ss_tensor_free(&q->items[i]);
    memmove(&q->items[i], &q->items[i + 1], sizeof *q->items * (size_t)(q->n - i - 1));
    q->n--;
}

static uint64_t seq_sig(const ss_sequence *q)
{
    uint64_t h = 1469598103934665603ull;
#define MIX(v) (h = (h ^ (uint64_t)(v)) * 1099511628211ull)
    MIX(q->n);
    MIX(q->elem);
    MIX(q->optional);
    for (int i = 0; i < q->n; i++) {
        MIX(q->items[i].dtype);
        MIX(q->items[i].ndim);
        for (int d = 0; d < q->items[i].ndim; d++)
            MIX(q->items[i].dims[d]);
    }
#undef MIX
    return h;
}

void ss_sequence_tensor(ss_sequence *q, ss_tensor *out)
{
    static seq_ref none; /* an empty optional sequence: refers to nothing */
    if (q) q->ref.sig = seq_sig(q);
    ss_tensor_borrow(out, SS_DT_SEQUENCE, 0, NULL, q ? &q->ref : &none, sizeof none);
}

void ss_sequence_mark_optional(ss_sequence *q)
{
    q->optional = true;
}

bool ss_sequence_is_optional(const ss_sequence *q)
{
    return q->optional;
}

static seq_ref seq_read(const ss_tensor *t)
{
    seq_ref r = {0};
    if (t && t->dtype == SS_DT_SEQUENCE && t->data) memcpy(&r, t->data, sizeof r);
    return r;
}

const ss_sequence *ss_sequence_of(const ss_tensor *t)
{
    return seq_read(t).self;
}

/* ------------------------------------------------------------------ shared infer/run */

typedef struct {
    ss_sequence *out; /* the sequence this node produces (session-owned) */
    uint64_t sig;     /* SequenceAt, ConcatFromSequence: the input's signature at plan time */
    int64_t pos;      /* SequenceAt: the position planned for */
} seq_plan;

static ss_status *expect_seq(const ss_kctx *k, int i)
{
    if (i >= k->n_in || !k->in[i] || k->in[i]->dtype != SS_DT_SEQUENCE)
        return ss_op_err(k, SS_ERR_INVALID, "input %d must be a sequence", i);
    return NULL;
}

/* infer of an op whose output 0 is a sequence of elem dtype. */
static ss_status *seq_out_infer(ss_kctx *k, ss_dtype elem)
{
    seq_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->out = ss_kctx_sequence(k, 0, elem);
    if (!p->out) return ss_op_oom();
    *k->out[0] = (ss_tensor){.dtype = SS_DT_SEQUENCE, .ndim = 0};
    return NULL;
}

static void seq_out_write(ss_kctx *k, ss_sequence *q)
{
    q->ref.sig = seq_sig(q);
    memcpy(k->out[0]->data, &q->ref, sizeof q->ref);
}

/* The input sequence, checked against the plan's signature when the plan read it. */
static ss_status *seq_input(const ss_kctx *k, int i, uint64_t planned_sig, const ss_sequence **q)
{
    seq_ref r = seq_read(k->in[i]);
    if (!r.self) return ss_op_err(k, SS_ERR_INVALID, "input %d refers to no sequence", i);
    if (planned_sig && r.sig != planned_sig)
        return ss_op_err(k, SS_ERR_INTERNAL, "sequence shapes changed since planning");
    *q = r.self;
    return NULL;
}

/* dst = src (deep copies), unless they are the same sequence. */
static ss_status *seq_assign(ss_sequence *dst, const ss_sequence *src)
{
    if (dst == src) return NULL;
    seq_clear(dst);
    dst->elem = src->elem;
    ss_status *st = NULL;
    for (int i = 0; i < src->n && !st; i++)
        st = ss_sequence_insert(dst, i, &src->items[i]);
    return st;
}

/* A position (a 0-D/1-element integer t, or dflt when absent) in [-n, n + extra). */
static ss_status *seq_position(const ss_kctx *k, const ss_tensor *t, int64_t dflt, int n, int extra,
                               int *out)
{
    int64_t v = dflt;
    if (t) {
        if (ss_tensor_numel(t) != 1 || (t->dtype != SS_DT_INT64 && t->dtype != SS_DT_INT32))
            return ss_op_err(k, SS_ERR_INVALID, "position must be one int32/int64");
        v = ss_op_elem_i64(t, 0);
    }
    if (v < -(int64_t)n || v >= (int64_t)n + extra)
        return ss_op_err(k, SS_ERR_INVALID, "position %lld is out of range for length %d",
                         (long long)v, n);
    *out = (int)(v < 0 ? v + n : v);
    return NULL;
}

/* ------------------------------------------------------------------ producers */

static ss_status *empty_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"dtype", NULL};
    ss_status *st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_op_expect_inputs(k, 0, 0);
    if (st) return st;
    int64_t dt = ss_onnx_attr_int(k->node, "dtype", SS_DT_FLOAT32);
    if (!ss_dtype_valid((int)dt))
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "dtype %lld", (long long)dt);
    return seq_out_infer(k, (ss_dtype)dt);
}

static ss_status *empty_run(ss_kctx *k)
{
    seq_plan *p = k->state;
    seq_clear(p->out);
    p->out->elem = (ss_dtype)ss_onnx_attr_int(k->node, "dtype", SS_DT_FLOAT32);
    seq_out_write(k, p->out);
    return NULL;
}

static ss_status *construct_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1 << 20);
    if (!st) st = ss_op_check_attrs(k, (const char *const[]){NULL});
    if (st) return st;
    for (int i = 0; i < k->n_in; i++)
        if (!k->in[i] || k->in[i]->dtype != k->in[0]->dtype || k->in[i]->dtype == SS_DT_SEQUENCE)
            return ss_op_err(k, SS_ERR_INVALID, "inputs must be tensors of one dtype");
    return seq_out_infer(k, k->in[0]->dtype);
}

static ss_status *construct_run(ss_kctx *k)
{
    seq_plan *p = k->state;
    seq_clear(p->out);
    ss_status *st = NULL;
    for (int i = 0; i < k->n_in && !st; i++)
        st = ss_sequence_insert(p->out, i, k->in[i]);
    if (!st) seq_out_write(k, p->out);
    return st;
}

static ss_status *insert_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 3);
    if (!st) st = ss_op_check_attrs(k, (const char *const[]){NULL});
    if (!st) st = expect_seq(k, 0);
    if (st) return st;
    if (k->in[1]->dtype == SS_DT_SEQUENCE)
        return ss_op_err(k, SS_ERR_INVALID, "input 1 must be a tensor");
    return seq_out_infer(k, k->in[1]->dtype);
}

static ss_status *insert_run(ss_kctx *k)
{
    seq_plan *p = k->state;
    const ss_sequence *in = NULL;
    int at = 0;
    ss_status *st = seq_input(k, 0, 0, &in);
    if (!st) st = seq_position(k, k->n_in > 2 ? k->in[2] : NULL, in->n, in->n, 1, &at);
    if (!st) st = seq_assign(p->out, in);
    if (!st) st = ss_sequence_insert(p->out, at, k->in[1]);
    if (st) return st;
    seq_out_write(k, p->out);
    return NULL;
}

static ss_status *erase_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 2);
    if (!st) st = ss_op_check_attrs(k, (const char *const[]){NULL});
    if (!st) st = expect_seq(k, 0);
    if (st) return st;
    return seq_out_infer(k, SS_DT_FLOAT32);
}

static ss_status *erase_run(ss_kctx *k)
{
    seq_plan *p = k->state;
    const ss_sequence *in = NULL;
    int at = 0;
    ss_status *st = seq_input(k, 0, 0, &in);
    if (!st && in->n == 0) st = ss_op_err(k, SS_ERR_INVALID, "cannot erase from an empty sequence");
    if (!st) st = seq_position(k, k->n_in > 1 ? k->in[1] : NULL, -1, in->n, 0, &at);
    if (!st) st = seq_assign(p->out, in);
    if (st) return st;
    seq_erase(p->out, at);
    seq_out_write(k, p->out);
    return NULL;
}

/* ------------------------------------------------------------------ SplitToSequence */

static ss_status *split_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"axis", "keepdims", NULL};
    ss_status *st = ss_op_expect_inputs(k, 1, 2);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (st) return st;
    int axis;
    const ss_tensor *x = k->in[0];
    if (x->ndim < 1) return ss_op_err(k, SS_ERR_INVALID, "input must have rank >= 1");
    if ((st = ss_op_attr_axis(k, "axis", 0, x->ndim, &axis))) return st;
    return seq_out_infer(k, x->dtype);
}

/* The piece of x from `start`, `len` long along axis, as a new owned tensor in q. */
static ss_status *split_piece(ss_sequence *q, const ss_tensor *x, int axis, int64_t start,
                              int64_t len, bool squeeze)
{
    ss_tensor t = {0};
    int64_t dims[SS_MAX_DIMS];
    memcpy(dims, x->dims, sizeof dims);
    dims[axis] = len;
    ss_status *st = ss_tensor_alloc(&t, x->dtype, x->ndim, dims);
    if (st) return st;
    int64_t outer = ss_op_dims_prod(x->dims, 0, axis);
    size_t es = ss_dtype_size(x->dtype);
    size_t inner = es * (size_t)ss_op_dims_prod(x->dims, axis + 1, x->ndim);
    for (int64_t o = 0; o < outer && len; o++)
        memcpy((char *)t.data + (size_t)(o * len) * inner,
               (const char *)x->data + (size_t)(o * x->dims[axis] + start) * inner,
               (size_t)len * inner);
    if (squeeze) {
        memmove(&t.dims[axis], &t.dims[axis + 1], sizeof(int64_t) * (size_t)(t.ndim - axis - 1));
        t.ndim--;
    }
    return seq_put(q, q->n, &t);
}

static ss_status *split_run(ss_kctx *k)
{
    seq_plan *p = k->state;
    const ss_tensor *x = k->in[0], *split = k->n_in > 1 ? k->in[1] : NULL;
    int axis;
    ss_status *st = ss_op_attr_axis(k, "axis", 0, x->ndim, &axis);
    if (st) return st;
    int64_t dim = x->dims[axis], n_split = split ? ss_tensor_numel(split) : 0;
    bool squeeze = !split && !ss_onnx_attr_int(k->node, "keepdims", 1);
    seq_clear(p->out);
    p->out->elem = x->dtype;
    int64_t start = 0;
    for (int64_t i = 0; !st && start < dim; i++) {
        int64_t len = !split             ? 1
                      : split->ndim == 0 ? ss_op_elem_i64(split, 0)
                      : i < n_split      ? ss_op_elem_i64(split, i)
                                         : -1;
        if (split && split->ndim == 0 && len > dim - start) len = dim - start;
        if (len < 0 || (split && split->ndim == 0 && len == 0) || start + len > dim)
            return ss_op_err(k, SS_ERR_INVALID, "split does not divide dim %lld", (long long)dim);
        st = split_piece(p->out, x, axis, start, len, squeeze);
        start += len;
    }
    if (split && split->ndim == 1 && p->out->n != n_split && !st)
        return ss_op_err(k, SS_ERR_INVALID, "split sizes do not sum to dim %lld", (long long)dim);
    if (!st) seq_out_write(k, p->out);
    return st;
}

/* ------------------------------------------------------------------ consumers */

static ss_status *length_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = expect_seq(k, 0);
    if (st) return st;
    *k->out[0] = (ss_tensor){.dtype = SS_DT_INT64, .ndim = 0};
    return NULL;
}

static ss_status *length_run(ss_kctx *k)
{
    const ss_sequence *q = NULL;
    ss_status *st = seq_input(k, 0, 0, &q);
    if (!st) *(int64_t *)k->out[0]->data = q->n;
    return st;
}

/* The sequence input 0 at plan time (its shapes size the output). */
static ss_status *seq_plan_input(ss_kctx *k, seq_plan **pp, const ss_sequence **q)
{
    ss_status *st = expect_seq(k, 0);
    const ss_tensor *v = NULL;
    if (!st) st = ss_op_plan_value(k, 0, "sequence", &v);
    if (st) return st;
    seq_ref r = seq_read(v);
    if (!r.self) return ss_op_err(k, SS_ERR_INVALID, "input 0 refers to no sequence");
    seq_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->sig = seq_sig(r.self);
    *pp = p, *q = r.self;
    return NULL;
}

static ss_status *at_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    seq_plan *p;
    const ss_sequence *q = NULL;
    const ss_tensor *pos;
    int at = 0;
    if (!st) st = seq_plan_input(k, &p, &q);
    if (!st) st = ss_op_plan_value(k, 1, "position", &pos);
    if (!st) st = seq_position(k, pos, 0, q->n, 0, &at);
    if (st) return st;
    p->pos = at;
    ss_op_same_shape(k->out[0], &q->items[at]);
    return NULL;
}

static ss_status *at_run(ss_kctx *k)
{
    const seq_plan *p = k->state;
    const ss_sequence *q = NULL;
    ss_status *st = seq_input(k, 0, p->sig, &q);
    if (st) return st;
    const ss_tensor *t = &q->items[p->pos];
    if (t->nbytes) memcpy(k->out[0]->data, t->data, t->nbytes);
    return NULL;
}

static ss_status *concat_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"axis", "new_axis", NULL};
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    seq_plan *p;
    const ss_sequence *q = NULL;
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = seq_plan_input(k, &p, &q);
    if (st) return st;
    if (q->n == 0) return ss_op_err(k, SS_ERR_INVALID, "cannot concatenate an empty sequence");
    bool new_axis = ss_onnx_attr_int(k->node, "new_axis", 0) != 0;
    const ss_tensor *first = &q->items[0];
    int rank = first->ndim + new_axis, axis;
    if ((st = ss_op_attr_axis(k, "axis", 0, rank, &axis))) return st;
    if (!new_axis && first->ndim == 0) return ss_op_err(k, SS_ERR_INVALID, "scalars need new_axis");
    ss_tensor *o = k->out[0];
    *o = (ss_tensor){.dtype = first->dtype, .ndim = rank};
    for (int d = 0, s = 0; d < rank; d++)
        o->dims[d] = new_axis && d == axis ? q->n : first->dims[s++];
    for (int i = 1; i < q->n; i++) {
        const ss_tensor *t = &q->items[i];
        bool ok = t->ndim == first->ndim;
        for (int d = 0; ok && d < t->ndim; d++)
            ok = t->dims[d] == first->dims[d] || (!new_axis && d == axis);
        if (!ok) return ss_op_err(k, SS_ERR_INVALID, "sequence tensors %d and 0 differ", i);
        if (!new_axis) o->dims[axis] += t->dims[axis];
    }
    return NULL;
}

static ss_status *concat_run(ss_kctx *k)
{
    const seq_plan *p = k->state;
    const ss_sequence *q = NULL;
    ss_status *st = seq_input(k, 0, p->sig, &q);
    if (st) return st;
    const ss_tensor *o = k->out[0];
    int axis;
    ss_op_attr_axis(k, "axis", 0, o->ndim, &axis);
    size_t es = ss_dtype_size(o->dtype);
    int64_t outer = ss_op_dims_prod(o->dims, 0, axis);
    size_t row = es * (size_t)ss_op_dims_prod(o->dims, axis, o->ndim), at = 0;
    for (int i = 0; i < q->n; i++) {
        const ss_tensor *t = &q->items[i];
        size_t part = outer ? t->nbytes / (size_t)outer : 0;
        for (int64_t r = 0; r < outer && part; r++)
            memcpy((char *)o->data + (size_t)r * row + at, (const char *)t->data + r * part, part);
        at += part;
    }
    return NULL;
}

/* ------------------------------------------------------------------ SequenceMap
 * Runs `body` once per position of the input sequence: a sequence input gives the body its
 * element at that position, a tensor input itself; body output j's values make output sequence j.
 * The body is planned for the elements at position 0 (the sequences must be known at plan time)
 * and re-plans itself when a later element has another shape. */

typedef struct {
    ss_session *body;
    int n_decl, n_outer;
    ss_tensor *bin;     /* the body's inputs: declared, then outer-scope values */
    ss_sequence **outs; /* one per node output */
} map_plan;

static void map_release(void *state)
{
    ss_session_free(((map_plan *)state)->body);
}

/* The body's input descriptions for position 0; false when input 0 is empty (no body run). */
static ss_status *map_descs(ss_kctx *k, map_plan *p, bool *empty)
{
    *empty = false;
    for (int i = 0; i < p->n_decl; i++) {
        p->bin[i] = *k->in[i];
        p->bin[i].storage = SS_STORE_BORROWED;
        p->bin[i].data = NULL;
        if (k->in[i]->dtype != SS_DT_SEQUENCE) continue;
        const ss_tensor *v = NULL;
        ss_status *st = ss_op_plan_value(k, i, "sequence", &v);
        if (st) return st;
        const ss_sequence *q = seq_read(v).self;
        if (!q) return ss_op_err(k, SS_ERR_INVALID, "input %d refers to no sequence", i);
        if (q->n == 0) {
            *empty = true;
            continue;
        }
        p->bin[i] = q->items[0];
        p->bin[i].storage = SS_STORE_BORROWED;
        p->bin[i].data = NULL;
    }
    for (int i = 0; i < p->n_outer; i++) {
        p->bin[p->n_decl + i] = *k->in[p->n_decl + i];
        p->bin[p->n_decl + i].storage = SS_STORE_BORROWED;
    }
    return NULL;
}

static ss_status *map_outputs(ss_kctx *k, map_plan *p, bool empty)
{
    for (int j = 0; j < k->n_out; j++) {
        ss_tensor d = {.dtype = SS_DT_FLOAT32};
        if (!empty && !ss_session_value_desc(p->body, ss_session_output(p->body, j)->name, &d))
            return ss_op_err(k, SS_ERR_INVALID, "body output %d has no type", j);
        if (!k->out[j]) continue;
        if (!(p->outs[j] = ss_kctx_sequence(k, j, d.dtype))) return ss_op_oom();
        *k->out[j] = (ss_tensor){.dtype = SS_DT_SEQUENCE, .ndim = 0};
    }
    return NULL;
}

static ss_status *map_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"body", NULL};
    const ss_onnx_attr *a = ss_onnx_attr_find(k->node, "body");
    ss_status *st = ss_op_check_attrs(k, attrs);
    if (!st) st = expect_seq(k, 0);
    if (st) return st;
    if (!a || !a->g) return ss_op_err(k, SS_ERR_INVALID, "attribute 'body' (a graph) is required");
    int n_decl = (int)k->node->n_input, n_outer = k->n_in - n_decl;
    if ((int)a->g->n_input != n_decl || (int)a->g->n_output != k->n_out)
        return ss_op_err(k, SS_ERR_INVALID,
                         "body has %zu inputs and %zu outputs, the node %d and %d", a->g->n_input,
                         a->g->n_output, n_decl, k->n_out);
    map_plan *p = ss_op_state_alloc(k, sizeof *p + sizeof(ss_tensor) * (size_t)k->n_in +
                                           sizeof(ss_sequence *) * (size_t)k->n_out);
    if (!p) return ss_op_oom();
    p->n_decl = n_decl, p->n_outer = n_outer;
    p->bin = (ss_tensor *)(p + 1);
    p->outs = (ss_sequence **)(p->bin + k->n_in);
    bool empty;
    if ((st = map_descs(k, p, &empty))) return st;
    if (!empty) {
        ss_name_list outer;
        if ((st = ss_subgraph_outer_names(k->node, &outer))) return st;
        st = ss_subgraph_session(k, a->g, "body", &outer, p->bin, &p->body);
        ss_name_list_free(&outer);
        if (st) return st;
    }
    return map_outputs(k, p, empty);
}

/* Binds the body's inputs for position i. */
static ss_status *map_bind(ss_kctx *k, map_plan *p, int i, int n)
{
    for (int d = 0; d < p->n_decl; d++) {
        const ss_tensor *t = k->in[d];
        if (t->dtype == SS_DT_SEQUENCE) {
            const ss_sequence *q = seq_read(t).self;
            if (!q || q->n != n)
                return ss_op_err(k, SS_ERR_INVALID, "input sequences must have one length (%d)", n);
            t = &q->items[i];
        }
        p->bin[d] = *t;
        p->bin[d].storage = SS_STORE_BORROWED;
    }
    for (int o = 0; o < p->n_outer; o++) {
        p->bin[p->n_decl + o].data = k->in[p->n_decl + o]->data;
        p->bin[p->n_decl + o].nbytes = k->in[p->n_decl + o]->nbytes;
    }
    return NULL;
}

static ss_status *map_run(ss_kctx *k)
{
    map_plan *p = k->state;
    const ss_sequence *q0 = NULL;
    ss_status *st = seq_input(k, 0, 0, &q0);
    if (st) return st;
    int n = q0->n;
    for (int j = 0; j < k->n_out; j++)
        if (p->outs[j]) seq_clear(p->outs[j]);
    if (n && !p->body)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "planned for an empty sequence, given %d", n);
    for (int i = 0; i < n && !st; i++) {
        const ss_tensor *outs = NULL;
        if ((st = map_bind(k, p, i, n))) break;
        st = ss_session_run(p->body, p->bin, p->n_decl + p->n_outer, &outs);
        for (int j = 0; !st && j < k->n_out; j++)
            if (p->outs[j]) st = ss_sequence_insert(p->outs[j], i, &outs[j]);
    }
    if (st) return ss_status_wrap(st, "SequenceMap node '%s', body", k->node_name);
    for (int j = 0; j < k->n_out; j++)
        if (p->outs[j]) {
            p->outs[j]->ref.sig = seq_sig(p->outs[j]);
            memcpy(k->out[j]->data, &p->outs[j]->ref, sizeof p->outs[j]->ref);
        }
    return NULL;
}

/* ------------------------------------------------------------------ Optional
 * optional(tensor) is a sequence marked optional with 0 or 1 tensors (kept by the session per
 * value, as sequences are); optional(seq) is the sequence's own value, empty when it refers to no
 * sequence. */

/* What a value holds: a tensor, an optional(tensor) (opt_tensor, with 0/1 items), a sequence or
 * an empty optional sequence (q NULL). */
typedef struct {
    bool is_tensor, opt_tensor;
    const ss_sequence *q;
} opt_view;

static opt_view opt_read(const ss_tensor *t)
{
    if (!t || t->dtype != SS_DT_SEQUENCE) return (opt_view){.is_tensor = true};
    const ss_sequence *q = seq_read(t).self;
    return (opt_view){.opt_tensor = q && q->optional, .q = q};
}

static ss_status *optional_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"type", NULL};
    ss_status *st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_op_expect_inputs(k, 0, 1);
    if (st) return st;
    const ss_tensor *x = k->n_in ? k->in[0] : NULL;
    const ss_onnx_attr *a = ss_onnx_attr_find(k->node, "type");
    const Onnx__TypeProto *tp = a ? a->tp : NULL;
    bool tensor = x ? x->dtype != SS_DT_SEQUENCE
                    : tp && tp->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    if (!x && !tp) return ss_op_err(k, SS_ERR_INVALID, "needs an input or attribute 'type'");
    seq_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    if (tensor && !(p->out = ss_kctx_sequence(k, 0, x ? x->dtype : SS_DT_FLOAT32)))
        return ss_op_oom();
    if (p->out) p->out->optional = true;
    *k->out[0] = (ss_tensor){.dtype = SS_DT_SEQUENCE, .ndim = 0};
    return NULL;
}

static ss_status *optional_run(ss_kctx *k)
{
    seq_plan *p = k->state;
    const ss_tensor *x = k->n_in ? k->in[0] : NULL;
    if (!p->out) { /* optional(seq): the sequence itself, or none */
        seq_ref none = {0};
        memcpy(k->out[0]->data, x ? x->data : &none, sizeof none);
        return NULL;
    }
    seq_clear(p->out);
    ss_status *st = x ? ss_sequence_insert(p->out, 0, x) : NULL;
    if (!st) seq_out_write(k, p->out);
    return st;
}

static ss_status *has_element_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 0, 1);
    if (st) return st;
    *k->out[0] = (ss_tensor){.dtype = SS_DT_BOOL, .ndim = 0};
    return NULL;
}

static ss_status *has_element_run(ss_kctx *k)
{
    const ss_tensor *x = k->n_in ? k->in[0] : NULL;
    opt_view v = opt_read(x);
    *(uint8_t *)k->out[0]->data = x && (v.is_tensor || (v.opt_tensor ? v.q->n > 0 : v.q != NULL));
    return NULL;
}

static ss_status *get_element_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (st) return st;
    const ss_tensor *x = k->in[0], *v = NULL;
    if (x->dtype != SS_DT_SEQUENCE) {
        ss_op_same_shape(k->out[0], x);
        return NULL;
    }
    /* unknown until run time (a loop-carried optional): taken for an optional(seq), which run
     * checks */
    v = ss_kctx_value(k, 0);
    opt_view o = opt_read(v && v->data ? v : NULL);
    if (o.is_tensor || !o.opt_tensor) {
        *k->out[0] = (ss_tensor){.dtype = SS_DT_SEQUENCE, .ndim = 0};
        return NULL;
    }
    if (o.q->n == 0) return ss_op_err(k, SS_ERR_INVALID, "the optional input is empty");
    seq_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->sig = seq_sig(o.q);
    ss_op_same_shape(k->out[0], &o.q->items[0]);
    return NULL;
}

static ss_status *get_element_run(ss_kctx *k)
{
    const seq_plan *p = k->state;
    const ss_tensor *x = k->in[0];
    if (!p) { /* a tensor or a sequence passes through */
        const ss_sequence *q = seq_read(x).self;
        if (x->dtype == SS_DT_SEQUENCE && !q)
            return ss_op_err(k, SS_ERR_INVALID, "the optional input is empty");
        if (x->dtype == SS_DT_SEQUENCE && q->optional)
            return ss_op_err(k, SS_ERR_UNSUPPORTED,
                             "planned for an optional sequence, given an optional tensor");
        if (x->nbytes) memcpy(k->out[0]->data, x->data, x->nbytes);
        return NULL;
    }
    const ss_sequence *q = NULL;
    ss_status *st = seq_input(k, 0, p->sig, &q);
    if (!st && q->n == 0) st = ss_op_err(k, SS_ERR_INVALID, "the optional input is empty");
    if (!st && q->items[0].nbytes) memcpy(k->out[0]->data, q->items[0].data, q->items[0].nbytes);
    return st;
}

const ss_op_def ss_ops_sequence[] = {
    {"", "SequenceEmpty", 11, 21, empty_infer, empty_run, 0, NULL},
    {"", "SequenceConstruct", 11, 21, construct_infer, construct_run, 0, NULL},
    {"", "SequenceInsert", 11, 21, insert_infer, insert_run, 0, NULL},
    {"", "SequenceErase", 11, 21, erase_infer, erase_run, 0, NULL},
    {"", "SequenceLength", 11, 21, length_infer, length_run, 0, NULL},
    {"", "SequenceAt", 11, 21, at_infer, at_run, 0, NULL},
    {"", "ConcatFromSequence", 11, 21, concat_infer, concat_run, 0, NULL},
    {"", "SplitToSequence", 11, 21, split_infer, split_run, 0, NULL},
    {"", "SequenceMap", 17, 21, map_infer, map_run, 0, map_release},
    {"", "Optional", 15, 21, optional_infer, optional_run, 0, NULL},
    {"", "OptionalHasElement", 15, 21, has_element_infer, has_element_run, 0, NULL},
    {"", "OptionalGetElement", 15, 21, get_element_infer, get_element_run, 0, NULL},
    {NULL, NULL, 0, 0, NULL, NULL, 0, NULL},
};
