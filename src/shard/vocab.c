/*
 * Vocabulary-parallel token embedding and LM head (Megatron's VocabParallelEmbedding and
 * column-parallel output layer). In a decoder these two tables are the largest single weights
 * ([vocab, hidden] each, often the same tensor); split by vocabulary every rank of a stage holds
 * ceil(vocab / ranks) rows of them, the last rank's share padded with zero rows when the ranks do
 * not divide the vocabulary.
 *   embedding  Gather(E, ids): each rank looks up the ids in its own range, the others give
 *              zeros, and the partial result is summed (AllReduce) where it is first needed; the
 *              sum adds exact zeros, so it is bit-exact.
 *   LM head    MatMul(x, W[hidden, vocab]) (or Gemm): each rank computes its columns, AllGather
 *              joins them and a Slice drops the padding, so the output stays the full logits.
 *   tied       when the head's weight is the embedding table transposed (GPT-2; the exporter
 *              folds the transpose into a second copy) and both sit on the same stage, the head
 *              reads the embedding's rows (Gemm transB): one copy on disk and in memory.
 * The LM head is the producer of a graph output whose last dim is the vocabulary, the embedding a
 * Gather on axis 0 of a [vocab, hidden] table by computed ids; a model needs both (a last MatMul
 * with no token embedding is left to the Megatron pairs). Nothing depends on names.
 */
#include "shard_internal.h"

#include <stdio.h>
#include <string.h>

/* The head's weight as [hidden, vocab]: false for anything but a plain 2-D f32 MatMul/Gemm. */
static bool head_shape(const shard_ctx *c, const Onnx__NodeProto *n, int64_t *hidden,
                       int64_t *vocab, bool *tb)
{
    bool gemm = !strcmp(n->op_type, "Gemm");
    ss_tensor x, w;
    if ((!gemm && strcmp(n->op_type, "MatMul")) || n->n_input < 2 ||
        (gemm && (ss_onnx_attr_int(n, "transA", 0) || (n->n_input > 2 && n->input[2][0]))))
        return false;
    if (!shard_value_desc(c, n->input[0], &x) || x.data || x.ndim < 2 ||
        !shard_value_desc(c, n->input[1], &w) || !w.data || w.ndim != 2 || w.dtype != SS_DT_FLOAT32)
        return false;
    *tb = gemm && ss_onnx_attr_int(n, "transB", 0);
    *hidden = w.dims[*tb ? 1 : 0], *vocab = w.dims[*tb ? 0 : 1];
    return true;
}

static bool is_embedding(const shard_ctx *c, const Onnx__NodeProto *n)
{
    ss_tensor table, ids;
    return !strcmp(n->op_type, "Gather") && n->n_input == 2 && n->n_output == 1 &&
           ss_onnx_attr_int(n, "axis", 0) == 0 && shard_value_desc(c, n->input[0], &table) &&
           table.data && table.ndim == 2 && table.dtype == SS_DT_FLOAT32 &&
           table.dims[0] == c->vocab && table.dims[1] == c->vocab_hidden &&
           shard_value_desc(c, n->input[1], &ids) && !ids.data &&
           (ids.dtype == SS_DT_INT64 || ids.dtype == SS_DT_INT32);
}

/* Is the head's weight the embedding table transposed (or the same table read with transB)? */
static bool heads_tied(const shard_ctx *c)
{
    const Onnx__NodeProto *head = c->nodes[c->vocab_head].node,
                          *emb = c->nodes[c->vocab_embedding].node;
    int64_t h = 0, v = 0;
    bool tb = false;
    ss_tensor w, e;
    if (c->nodes[c->vocab_head].stage != c->nodes[c->vocab_embedding].stage ||
        !head_shape(c, head, &h, &v, &tb) || !shard_value_desc(c, head->input[1], &w) ||
        !shard_value_desc(c, emb->input[0], &e))
        return false;
    if (tb) return !memcmp(w.data, e.data, e.nbytes);
    const float *wf = w.data, *ef = e.data;
    for (int64_t row = 0; row < v; row++)
        for (int64_t k = 0; k < h; k++)
            if (wf[k * v + row] != ef[row * h + k]) return false;
    return true;
}

/* Rows per rank of the vocabulary (the last rank's share padded to it). */
static int64_t vocab_chunk(const shard_ctx *c)
{
    return (c->vocab + c->tp - 1) / c->tp;
}

void shard_vocab_analyse(shard_ctx *c)
{
    c->vocab_head = c->vocab_embedding = -1;
    c->vocab_tied = false;
    if (c->opt->mode != SS_SHARD_AUTO || c->tp < 2) return;
    for (size_t i = 0; i < c->graph->n_output && c->vocab_head < 0; i++) {
        int id = shard_name_find(c, c->graph->output[i]->name);
        int p = id >= 0 ? c->producer[id] : -1;
        if (p >= 0 && !c->nodes[p].constant &&
            head_shape(c, c->nodes[p].node, &c->vocab_hidden, &c->vocab, &(bool){0}) &&
            c->vocab >= c->tp)
            c->vocab_head = p;
    }
    for (int i = 0; i < c->n_nodes && c->vocab_head >= 0 && c->vocab_embedding < 0; i++)
        if (!c->nodes[i].constant && is_embedding(c, c->nodes[i].node)) c->vocab_embedding = i;
    if (c->vocab_embedding < 0) { /* no token embedding: a plain last layer, Megatron's pairs */
        c->vocab_head = -1;
        return;
    }
    c->vocab_tied = heads_tied(c);
    if (c->vocab_head >= 0 && c->opt->progress)
        fprintf(
            stderr,
            "shard: vocabulary-parallel LM head and embedding: vocab %lld, %lld rows per rank%s\n",
            (long long)c->vocab, (long long)vocab_chunk(c),
            c->vocab_tied ? " (tied: one table)" : "");
}

/* This rank's vocabulary share of a 2-D table along `axis` (0: rows, 1: columns), zero-padded to
 * vocab_chunk, as the initializer `name`. */
static void emit_vocab_share(rank_ctx *r, const char *name, const ss_tensor *w, int axis)
{
    int64_t chunk = vocab_chunk(r->c), start = chunk * r->pos, dims[2] = {w->dims[0], w->dims[1]};
    int64_t have = r->c->vocab - start < chunk ? r->c->vocab - start : chunk;
    dims[axis] = chunk;
    ss_tensor share;
    ss_status *st = ss_tensor_alloc(&share, SS_DT_FLOAT32, 2, dims);
    if (st) {
        rg_fail(&r->g, st);
        return;
    }
    const float *src = w->data;
    float *dst = share.data;
    for (int64_t i = 0; i < (axis ? dims[0] : have); i++) /* rows: contiguous; columns: per row */
        if (axis)
            memcpy(dst + i * chunk, src + i * w->dims[1] + start,
                   sizeof(float) * (size_t)(have > 0 ? have : 0));
        else
            memcpy(dst + i * dims[1], src + (start + i) * dims[1], sizeof(float) * (size_t)dims[1]);
    rg_init(&r->g, name, &share, 0, 1, 0);
    ss_tensor_free(&share);
}

/* A scalar initializer of dtype dt (int32, int64 or float) holding v. */
static const char *emit_scalar(rank_ctx *r, const char *name, ss_dtype dt, int64_t v)
{
    int64_t i64 = v;
    int32_t i32 = (int32_t)v;
    float f = (float)v;
    void *data = dt == SS_DT_INT64 ? (void *)&i64 : dt == SS_DT_INT32 ? (void *)&i32 : (void *)&f;
    ss_tensor t;
    ss_tensor_borrow(&t, dt, 0, NULL, data, ss_dtype_size(dt));
    rg_init(&r->g, name, &t, 0, 1, 0);
    return name;
}

static const char *emit1(rank_ctx *r, const char *op, const char *a, const char *b, const char *out)
{
    const char *ins[2] = {a, b};
    rg_node(&r->g, op, NULL, b ? 2 : 1, ins, 1, &out);
    return out;
}

static const char *embedding_table(rank_ctx *r)
{
    return rg_printf(&r->g, "%s__vocab%d", r->c->nodes[r->c->vocab_embedding].node->input[0],
                     r->pos);
}

/* lo <= x < hi, elementwise (bool), named after `tag`. */
static const char *emit_in_range(rank_ctx *r, const char *x, const char *lo, const char *hi,
                                 const char *tag)
{
    const char *below = emit1(r, "Less", x, lo, rg_printf(&r->g, "%s_below", tag));
    const char *under = emit1(r, "Less", x, hi, rg_printf(&r->g, "%s_under", tag));
    const char *ge = emit1(r, "Not", below, NULL, rg_printf(&r->g, "%s_ge", tag));
    return emit1(r, "And", ge, under, tag);
}

/* Gather(E, ids) on this rank's rows: ids of other ranks look up row 0 and are masked to zero.
 * An id outside the vocabulary fails the Gather on every rank, as it fails the whole model's
 * (an id >= vocab is looked up as itself, a negative one as vocab: both beyond the rank's rows),
 * so no rank is left waiting in the AllReduce and no wrong token is made of zeros. */
static void emit_embedding(rank_ctx *r, const Onnx__NodeProto *n)
{
    const char *out = n->output[0];
    ss_tensor table, ids;
    shard_value_desc(r->c, n->input[0], &table);
    shard_value_desc(r->c, n->input[1], &ids);
    const char *e = embedding_table(r);
    emit_vocab_share(r, e, &table, 0);
    const char *in = shard_input_repl(r, n->input[1]);
    const char *start =
        emit_scalar(r, rg_printf(&r->g, "%s__vstart", e), ids.dtype, vocab_chunk(r->c) * r->pos);
    const char *zero = emit_scalar(r, rg_printf(&r->g, "__vzero%d", ids.dtype), ids.dtype, 0);
    const char *end = emit_scalar(r, rg_printf(&r->g, "%s__vend", e), ids.dtype, vocab_chunk(r->c));
    const char *vocab =
        emit_scalar(r, rg_printf(&r->g, "__vocab%d", ids.dtype), ids.dtype, r->c->vocab);
    const char *fzero = emit_scalar(r, "__vzero_f32", SS_DT_FLOAT32, 0);
    const char *local = emit1(r, "Sub", in, start, rg_printf(&r->g, "%s__vlocal", out));
    const char *mine = emit_in_range(r, local, zero, end, rg_printf(&r->g, "%s__vmine", out));
    const char *valid = emit_in_range(r, in, zero, vocab, rg_printf(&r->g, "%s__vvalid", out));
    const char *negative = rg_printf(&r->g, "%s__vvalid_below", out);
    const char *bad_in[3] = {negative, vocab, in};
    const char *bad = rg_printf(&r->g, "%s__vbad", out);
    rg_node(&r->g, "Where", NULL, 3, bad_in, 1, &bad);
    const char *other_in[3] = {valid, zero, bad};
    const char *other = rg_printf(&r->g, "%s__vother", out);
    rg_node(&r->g, "Where", NULL, 3, other_in, 1, &other);
    const char *where_in[3] = {mine, local, other};
    const char *idx = rg_printf(&r->g, "%s__vindex", out);
    rg_node(&r->g, "Where", NULL, 3, where_in, 1, &idx);
    const char *rows = rg_printf(&r->g, "%s__vrows", out);
    const char *gather_in[2] = {e, idx};
    Onnx__NodeProto *g = rg_node(&r->g, "Gather", NULL, 2, gather_in, 1, &rows);
    if (g) /* named for the error an id outside the vocabulary gets */
        g->name = rg_printf(&r->g, "%s (vocabulary-parallel embedding of %lld ids)",
                            n->name && n->name[0] ? n->name : out, (long long)r->c->vocab);
    /* the mask broadcast over hidden: [.., 1] */
    const char *mask = rg_printf(&r->g, "%s__vmask", out);
    int64_t last = -1;
    if (ss_onnx_opset(r->c->model, "") >= 13) {
        const char *axes = rg_printf(&r->g, "__vaxes_last");
        rg_init_i64(&r->g, axes, &last, 1);
        emit1(r, "Unsqueeze", mine, axes, mask);
    } else {
        Onnx__NodeProto *u = rg_node(&r->g, "Unsqueeze", NULL, 1, &mine, 1, &mask);
        rg_attr_ints(&r->g, u, "axes", &last, 1);
    }
    const char *masked_in[3] = {mask, rows, fzero};
    const char *partial = rg_printf(&r->g, "%s__vpartial", out);
    rg_node(&r->g, "Where", NULL, 3, masked_in, 1, &partial);
    r->ts[shard_name_find(r->c, out)] = (tstate){partial, L_PARTIAL, 0};
}

/* This rank's columns of the head. A tied head reads the embedding's rows [chunk, hidden] as they
 * are (Gemm with transB on x flattened to [rows, hidden]): no transposed copy of the table is made
 * when the rank loads. */
static const char *emit_head_columns(rank_ctx *r, const Onnx__NodeProto *n, const char *weight,
                                     bool flat, int64_t hidden)
{
    const char *x = shard_materialize(r, n->input[0]), *out = n->output[0];
    const char *part = rg_printf(&r->g, "%s__vcols", out);
    ss_tensor xd;
    shard_value_desc(r->c, n->input[0], &xd);
    if (!flat) {
        const char *ins[2] = {x, weight};
        Onnx__NodeProto *m = rg_node(&r->g, n->op_type, NULL, 2, ins, 1, &part);
        rg_attr_copy(&r->g, m, n);
        return part;
    }
    if (xd.ndim != 2) {
        int64_t rows[2] = {-1, hidden};
        const char *shape = rg_printf(&r->g, "%s__vrows_shape", out);
        rg_init_i64(&r->g, shape, rows, 2);
        x = emit1(r, "Reshape", x, shape, rg_printf(&r->g, "%s__vx2d", out));
    }
    static const char *const skip[] = {"transB", NULL};
    const char *ins[2] = {x, weight};
    Onnx__NodeProto *m = rg_node(&r->g, "Gemm", NULL, 2, ins, 1, &part);
    rg_attr_copy_except(&r->g, m, n, skip);
    rg_attr_int(&r->g, m, "transB", 1);
    return part;
}

/* The flattened logits [rows, vocab] back in x's leading dims: [.., vocab]. */
static void emit_unflatten(rank_ctx *r, const char *flat, const char *x, int ndim, const char *out)
{
    int64_t zero = 0, lead = ndim - 1, vocab = r->c->vocab;
    const char *names[3] = {rg_printf(&r->g, "%s__vl0", out), rg_printf(&r->g, "%s__vl1", out),
                            rg_printf(&r->g, "%s__vV", out)};
    rg_init_i64(&r->g, names[0], &zero, 1);
    rg_init_i64(&r->g, names[1], &lead, 1);
    rg_init_i64(&r->g, names[2], &vocab, 1);
    const char *shape = emit1(r, "Shape", x, NULL, rg_printf(&r->g, "%s__vxshape", out));
    const char *lead_in[3] = {shape, names[0], names[1]};
    const char *leading = rg_printf(&r->g, "%s__vlead", out);
    rg_node(&r->g, "Slice", NULL, 3, lead_in, 1, &leading);
    const char *cat_in[2] = {leading, names[2]};
    const char *target = rg_printf(&r->g, "%s__vshape", out);
    Onnx__NodeProto *cat = rg_node(&r->g, "Concat", NULL, 2, cat_in, 1, &target);
    rg_attr_int(&r->g, cat, "axis", 0);
    emit1(r, "Reshape", flat, target, out);
}

/* The head on this rank's columns, gathered and unpadded into the full logits. */
static void emit_head(rank_ctx *r, const Onnx__NodeProto *n)
{
    shard_ctx *c = r->c;
    int64_t h = 0, v = 0;
    bool tb = false;
    head_shape(c, n, &h, &v, &tb);
    const char *weight;
    if (c->vocab_tied) { /* the embedding's rows */
        ss_tensor e;
        weight = embedding_table(r);
        shard_value_desc(c, c->nodes[c->vocab_embedding].node->input[0], &e);
        emit_vocab_share(r, weight, &e, 0); /* once per name: no-op after the embedding */
    } else {
        ss_tensor w;
        shard_value_desc(c, n->input[1], &w);
        weight = rg_printf(&r->g, "%s__vocab%d", n->input[1], r->pos);
        emit_vocab_share(r, weight, &w, tb ? 0 : 1);
    }
    bool flat = c->vocab_tied && !tb, padded = vocab_chunk(c) * c->tp != c->vocab;
    const char *part = emit_head_columns(r, n, weight, flat, h), *out = n->output[0];
    ss_tensor outd;
    shard_value_desc(c, out, &outd);
    bool reshaped = flat && outd.ndim != 2;
    const char *joined = reshaped ? rg_printf(&r->g, "%s__vflat", out) : out;
    const char *gathered = padded ? rg_printf(&r->g, "%s__vpadded", out) : joined;
    Onnx__NodeProto *g = rg_node(&r->g, "AllGather", SS_DOMAIN_COLLECTIVE, 1, &part, 1, &gathered);
    rg_attr_int(&r->g, g, "axis", flat ? 1 : outd.ndim - 1);
    rg_attr_string(&r->g, g, "group", r->group);
    if (padded) {
        int64_t s = 0, e = c->vocab, a = -1;
        const char *sn = rg_printf(&r->g, "%s__vs", out), *en = rg_printf(&r->g, "%s__ve", out),
                   *an = rg_printf(&r->g, "__axis%d", -1);
        rg_init_i64(&r->g, sn, &s, 1);
        rg_init_i64(&r->g, en, &e, 1);
        rg_init_i64(&r->g, an, &a, 1);
        const char *slice_in[4] = {gathered, sn, en, an};
        rg_node(&r->g, "Slice", NULL, 4, slice_in, 1, &joined);
    }
    if (reshaped) emit_unflatten(r, joined, shard_materialize(r, n->input[0]), outd.ndim, out);
    r->ts[shard_name_find(c, out)] = (tstate){out, L_REPL, 0};
}

bool shard_emit_vocab(rank_ctx *r, const node_info *ni)
{
    const shard_ctx *c = r->c;
    int i = (int)(ni - c->nodes);
    if (i == c->vocab_embedding)
        emit_embedding(r, ni->node);
    else if (i == c->vocab_head && r->ts[shard_name_find(c, ni->node->input[0])].kind != L_SPLIT)
        emit_head(r, ni->node); /* a head on split input stays a row-parallel MatMul */
    else
        return false;
    return true;
}
