/*
 * Testing one op of src/runtime/ops without a model: build a NodeProto with attributes, make
 * input tensors, run the op's infer and run as the planner would. Shared by the op-family tests.
 *
 * Define OP_HARNESS_COUNT_ALLOCS before including it in a test linked with
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc: every allocation of the statically linked
 * runtime is then counted, and op_run can require that a second run allocates nothing.
 */
#ifndef SS_TEST_OP_HARNESS_H
#define SS_TEST_OP_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "op.h"

#ifdef OP_HARNESS_COUNT_ALLOCS
#include "alloc_count.h"
#endif

/* ------------------------------------------------------------------ nodes */

typedef struct {
    Onnx__NodeProto node;
    Onnx__AttributeProto attrs[8];
    Onnx__AttributeProto *ptrs[8];
} tnode;

static inline void tnode_init(tnode *t, const char *op)
{
    memset(t, 0, sizeof *t);
    onnx__node_proto__init(&t->node);
    t->node.op_type = (char *)op;
    t->node.name = (char *)"test";
    t->node.attribute = t->ptrs;
}

static inline Onnx__AttributeProto *add_attr(tnode *t, const char *name,
                                             Onnx__AttributeProto__AttributeType type)
{
    Onnx__AttributeProto *a = &t->attrs[t->node.n_attribute];
    onnx__attribute_proto__init(a);
    a->name = (char *)name;
    a->type = type;
    t->ptrs[t->node.n_attribute++] = a;
    return a;
}

static inline void attr_int(tnode *t, const char *name, int64_t v)
{
    add_attr(t, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT)->i = v;
}

static inline void attr_float(tnode *t, const char *name, float v)
{
    add_attr(t, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT)->f = v;
}

static inline void attr_ints(tnode *t, const char *name, int64_t *v, size_t n)
{
    Onnx__AttributeProto *a = add_attr(t, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->ints = v;
    a->n_ints = n;
}

static inline void attr_str(tnode *t, const char *name, const char *s)
{
    Onnx__AttributeProto *a = add_attr(t, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    a->s.data = (uint8_t *)s;
    a->s.len = strlen(s);
}

/* ------------------------------------------------------------------ tensors */

static inline ss_tensor make(ss_dtype dt, int nd, const int64_t *dims, const void *data)
{
    static const int64_t none[1] = {0};
    ss_tensor t = {0};
    ss_status *st = ss_tensor_alloc(&t, dt, nd, dims ? dims : none);
    if (st) {
        fprintf(stderr, "alloc: %s\n", st->msg);
        abort();
    }
    if (data) memcpy(t.data, data, t.nbytes);
    return t;
}

static uint64_t rng_state = 88172645463325252ull;
static inline double urand(void) /* [-1, 1), the same sequence in every run */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / (double)(1ull << 52) - 1.0;
}

/* Random values: floats in [-1, 1), integers in -5..4. */
static inline ss_tensor make_rand(ss_dtype dt, int nd, const int64_t *dims)
{
    ss_tensor t = make(dt, nd, dims, NULL);
    int64_t n = ss_tensor_numel(&t);
    for (int64_t i = 0; i < n; i++) {
        double v = urand();
        switch (dt) {
        case SS_DT_FLOAT32:
            ((float *)t.data)[i] = (float)v;
            break;
        case SS_DT_FLOAT64:
            ((double *)t.data)[i] = v;
            break;
        case SS_DT_INT32:
            ((int32_t *)t.data)[i] = (int32_t)(v * 5);
            break;
        case SS_DT_INT64:
            ((int64_t *)t.data)[i] = (int64_t)(v * 5);
            break;
        default:
            break;
        }
    }
    return t;
}

/* ------------------------------------------------------------------ running one op */

typedef struct {
    const bool *omit;   /* omitted optional outputs (NULL: none) */
    bool poison;        /* fill float outputs with NaN first: the kernel must write every element */
    bool check_allocs;  /* run twice; the second run must not allocate (OP_HARNESS_COUNT_ALLOCS) */
    int threads;        /* the session's intra-op threads (0: OpenBLAS's setting) */
    ss_weights weights; /* the session's --weights */
} op_run_opts;

/* infer, allocate the outputs (the caller frees them), run. Alias ops (Reshape family) have no
 * kernel: their output gets a copy of input 0's bytes, as the planner's shared buffer would. */
static inline ss_status *op_run(tnode *t, int64_t opset, int n_in, ss_tensor **in, int n_out,
                                ss_tensor *out, const op_run_opts *o)
{
    const ss_op_def *d = ss_op_find("", t->node.op_type, opset);
    if (!d)
        return ss_errf(SS_ERR_UNSUPPORTED, "no %s at opset %lld", t->node.op_type,
                       (long long)opset);
    if (n_out > 16) return ss_errf(SS_ERR_LIMIT, "too many outputs");
    ss_tensor *outp[16];
    for (int i = 0; i < n_out; i++) {
        memset(&out[i], 0, sizeof out[i]);
        outp[i] = o && o->omit && o->omit[i] ? NULL : &out[i];
    }
    t->node.n_input = (size_t)n_in;
    t->node.n_output = (size_t)n_out;
    ss_kctx k = {.node = &t->node,
                 .node_name = "test",
                 .opset = opset,
                 .n_in = n_in,
                 .n_out = n_out,
                 .in = in,
                 .out = outp,
                 .threads = o ? o->threads : 0,
                 .weights = o ? o->weights : SS_WEIGHTS_F32};
    bool alias = d->flags & SS_OPF_ALIAS;
    ss_status *st = d->infer(&k);
    for (int i = 0; !st && i < n_out; i++) {
        if (!outp[i]) continue;
        ss_tensor shape = out[i];
        st = ss_tensor_alloc(&out[i], shape.dtype, shape.ndim, shape.dims);
        if (!st && alias) memcpy(out[i].data, in[0]->data, out[i].nbytes);
        for (int64_t e = 0; !st && o && o->poison && e < ss_tensor_numel(&out[i]); e++) {
            if (out[i].dtype == SS_DT_FLOAT32)
                ((float *)out[i].data)[e] = NAN;
            else if (out[i].dtype == SS_DT_FLOAT64)
                ((double *)out[i].data)[e] = NAN;
        }
    }
    if (!st && k.scratch_bytes) { /* the planner's arena slice */
        k.scratch = aligned_alloc(64, (k.scratch_bytes + 63) / 64 * 64);
        if (!k.scratch) st = ss_errf(SS_ERR_NOMEM, "scratch");
    }
    if (!st && !alias) st = d->run(&k);
    if (!st && !alias && o && o->check_allocs) {
#ifdef OP_HARNESS_COUNT_ALLOCS
        int before = alloc_count;
        st = d->run(&k);
        int n = alloc_count - before;
        if (!st && n)
            st = ss_errf(SS_ERR_INTERNAL, "%s run called malloc %d times", t->node.op_type, n);
#else
        st = ss_errf(SS_ERR_INTERNAL, "check_allocs needs OP_HARNESS_COUNT_ALLOCS");
#endif
    }
    if (k.state && d->release) d->release(k.state);
    free(k.state);
    free(k.scratch);
    return st;
}

#endif
