/*
 * How a split travels through the ops that are not split MatMul/Gemm: elementwise ops keep it,
 * and the ops of an exported attention block (Reshape to heads, Transpose, RoPE's Slice/Concat,
 * the KV cache's Concat, GQA's Expand, Softmax, the batched MatMuls) keep a split by whole heads,
 * so attention runs on each rank's heads with no collective inside. A rule that does not fit
 * leaves the op to the caller, which materializes its inputs: always exact, only slower.
 */
#include "shard_internal.h"

#include <string.h>

/* The one node reading value `id` besides Shape nodes (which read no data), or -1. */
static int sole_consumer(const shard_ctx *c, int id)
{
    int found = -1;
    for (int i = c->producer[id] + 1; i < c->n_nodes; i++) {
        const Onnx__NodeProto *n = c->nodes[i].node;
        if (c->nodes[i].constant || !strcmp(n->op_type, "Shape")) continue;
        for (size_t j = 0; j < n->n_input; j++)
            if (!strcmp(n->input[j], c->names[id])) {
                if (found >= 0 && found != i) return -1;
                found = i;
            }
    }
    return found;
}

/* The output axis (negative) a Reshape carries an input split into `parts` along `axis` to, or 0
 * when it cannot: the dims before the split must multiply to the same on both sides, and the
 * split dim and the output dim it maps to must both divide by the parts (whole heads on each
 * rank). With *parts = 0, the parts are the output dim itself when the ranks are a multiple of it
 * (a grouped split: fewer heads than ranks), returned in *parts. */
static int reshape_axis_parts(const shard_ctx *c, const Onnx__NodeProto *n, int axis, int *parts)
{
    ss_tensor in, out;
    if (!shard_value_desc(c, n->input[0], &in) || !shard_value_desc(c, n->output[0], &out))
        return 0;
    int a = in.ndim + axis;
    if (a < 0) return 0;
    int64_t before = 1, po = 1;
    for (int k = 0; k < a; k++)
        before *= in.dims[k];
    for (int b = 0; b < out.ndim && po <= before; po *= out.dims[b], b++) {
        if (po != before) continue;
        int64_t p = *parts ? *parts : out.dims[b];
        bool fits = *parts ? true : p > 1 && c->tp % p == 0;
        if (fits && in.dims[a] % p == 0 && out.dims[b] % p == 0)
            return *parts = (int)p, b - out.ndim;
    }
    return 0;
}

static int reshape_axis(const shard_ctx *c, const Onnx__NodeProto *n, int axis, int parts)
{
    return reshape_axis_parts(c, n, axis, &parts);
}

/* Does a Reshape leave the last axis as it is (only the leading dims regroup)? A split of the
 * last axis, blockwise or not, then passes through unchanged. */
static bool keeps_last_axis(const shard_ctx *c, const Onnx__NodeProto *n)
{
    ss_tensor in, out;
    return shard_value_desc(c, n->input[0], &in) && shard_value_desc(c, n->output[0], &out) &&
           in.ndim >= 1 && out.ndim >= 1 && in.dims[in.ndim - 1] == out.dims[out.ndim - 1];
}

/* A Split along the last axis into equal parts that divide by the ranks: its part count, else 0. */
static int equal_last_axis_split(const shard_ctx *c, const Onnx__NodeProto *n)
{
    ss_tensor in, part;
    if (!shard_value_desc(c, n->input[0], &in) || in.ndim < 1) return 0;
    int64_t axis = ss_onnx_attr_int(n, "axis", 0);
    if (axis != -1 && axis != in.ndim - 1) return 0;
    for (size_t j = 0; j < n->n_output; j++)
        if (!shard_value_desc(c, n->output[j], &part) ||
            part.dims[part.ndim - 1] * (int64_t)n->n_output != in.dims[in.ndim - 1] ||
            part.dims[part.ndim - 1] % c->tp)
            return 0;
    return (int)n->n_output;
}

/* Would a column split of value `id` survive until it is used, and into how many parts? Follows
 * it through elementwise ops to the first other consumer: a Reshape must keep whole heads on each
 * rank (attention's MatMul -> Reshape(.., heads, head_dim) chain); with fewer heads than ranks,
 * and ranks a multiple of the heads, each group of ranks shares one head (grouped: KV heads of
 * GQA); otherwise the projection stays whole. A Split into equal parts along the last axis (a fused
 * QKV) makes the split blockwise, each part then judged the same way. */
bool shard_cols_fit(const shard_ctx *c, int id, int *blocks, int *parts)
{
    *blocks = 1, *parts = c->tp;
    for (int hops = 0; hops < 16 && id >= 0; hops++) {
        int ni = sole_consumer(c, id);
        if (ni < 0) return true;
        const Onnx__NodeProto *n = c->nodes[ni].node;
        if (!strcmp(n->op_type, "Reshape")) {
            if (keeps_last_axis(c, n)) { /* HF Conv1D's view(-1, d) ... view(B, T, 3d) */
                id = shard_name_find(c, n->output[0]);
                continue;
            }
            if (reshape_axis(c, n, -1, c->tp)) return true;
            *parts = 0; /* fewer heads than ranks: each group of ranks takes one */
            return reshape_axis_parts(c, n, -1, parts) != 0;
        }
        if (!strcmp(n->op_type, "Split")) { /* every part split alike (grouped or not) */
            int n_parts = equal_last_axis_split(c, n), inner, inner_parts;
            for (int j = 0; j < n_parts; j++)
                if (!shard_cols_fit(c, shard_name_find(c, n->output[j]), &inner, &inner_parts) ||
                    inner != 1 || (j > 0 && inner_parts != *parts))
                    return false;
                else
                    *parts = inner_parts;
            *blocks = n_parts;
            return n_parts > 0;
        }
        if (!shard_is_elementwise(c, n) || n->n_output != 1) return true;
        id = shard_name_find(c, n->output[0]);
    }
    return true;
}

/* The layout of a computed input: its tstate, or NULL for a constant or an empty name. */
static tstate *computed_state(rank_ctx *r, const char *name)
{
    ss_tensor d;
    if (!name[0] || (shard_value_desc(r->c, name, &d) && d.data)) return NULL;
    int id = shard_name_find(r->c, name);
    return id < 0 ? NULL : &r->ts[id];
}

/* The axis all split inputs of n share (0: none split, or they disagree in axis, blocks or
 * parts, or one spans two axes), and the first of them in *like. */
static int common_split_axis(rank_ctx *r, const Onnx__NodeProto *n, const tstate **like)
{
    *like = NULL;
    for (size_t j = 0; j < n->n_input; j++) {
        const tstate *t = computed_state(r, n->input[j]);
        if (!t || t->kind != L_SPLIT) continue;
        if (t->span > 1) return 0;
        if (*like && (t->axis != (*like)->axis || shard_blocks_of(t) != shard_blocks_of(*like) ||
                      shard_parts(r->c, t) != shard_parts(r->c, *like)))
            return 0;
        if (!*like) *like = t;
    }
    return *like ? (*like)->axis : 0;
}

/* Can every input of an elementwise op split along `axis` stay as it is on this rank? Split ones
 * must have the output's full shape; replicated computed ones and constants must broadcast along
 * the axis (a dim of 1 or none) unless a constant can be sliced like the split. */
static bool elementwise_inputs_fit(rank_ctx *r, const Onnx__NodeProto *n, int axis)
{
    ss_tensor outd, d;
    shard_value_desc(r->c, n->output[0], &outd);
    int64_t full = outd.dims[outd.ndim + axis];
    for (size_t j = 0; j < n->n_input; j++) {
        if (!n->input[j][0] || !shard_value_desc(r->c, n->input[j], &d)) continue;
        const tstate *t = computed_state(r, n->input[j]);
        int a = d.ndim + axis;
        int64_t dim = a >= 0 ? d.dims[a] : 1;
        if (t && t->kind == L_SPLIT) {
            if (!ss_shape_equal(d.ndim, d.dims, outd.ndim, outd.dims)) return false;
        } else if (t) {
            if (t->kind != L_REPL || dim != 1) return false;
        } else if (dim != 1 && dim != full) {
            return false;
        }
    }
    return true;
}

/* This rank's name for input j of an elementwise op split like `like`. */
static const char *elementwise_input(rank_ctx *r, const char *name, const tstate *like)
{
    int axis = like->axis, blocks = shard_blocks_of(like), parts = shard_parts(r->c, like);
    ss_tensor d;
    if (!name[0]) return "";
    const tstate *t = computed_state(r, name);
    if (t) return t->local;
    shard_value_desc(r->c, name, &d);
    int a = d.ndim + axis;
    if (a < 0 || d.dims[a] <= 1) {
        rg_init(&r->g, name, &d, 0, 1, 0);
        return name;
    }
    int index = shard_part_index(r, like);
    const char *sn = rg_printf(&r->g, "%s__split%d_%d_b%d_p%d", name, axis, index, blocks, parts);
    rg_init_blocked(&r->g, sn, &d, a, blocks, parts, index);
    return sn;
}

/* Try to keep an elementwise op on split inputs; false if it must see replicated inputs. */
bool shard_emit_split_elementwise(rank_ctx *r, const Onnx__NodeProto *n)
{
    shard_ctx *c = r->c;
    if (!shard_is_elementwise(c, n) || n->n_output != 1 || n->n_input > 8) return false;
    const tstate *like;
    int axis = common_split_axis(r, n, &like);
    for (size_t j = 0; j < n->n_input && axis; j++) { /* partial sums are summed first */
        const tstate *t = computed_state(r, n->input[j]);
        if (t && t->kind == L_PARTIAL) return false;
    }
    if (!axis || !elementwise_inputs_fit(r, n, axis)) return false;
    const char *ins[8];
    for (size_t j = 0; j < n->n_input; j++)
        ins[j] = elementwise_input(r, n->input[j], like);
    /* split tensors never carry the original name: materializing them produces it */
    const char *out = rg_printf(&r->g, "%s__split", n->output[0]);
    Onnx__NodeProto *m = rg_node(&r->g, n->op_type, n->domain, (int)n->n_input, ins, 1, &out);
    rg_attr_copy(&r->g, m, n);
    r->ts[shard_name_find(c, n->output[0])] =
        (tstate){out, L_SPLIT, axis, like->blocks, like->parts, 1};
    return true;
}

/* ------------------------------------------------------------------ head-parallel attention
 * Attention splits by heads with no collective inside: once Q/K/V are column-split by whole heads,
 * the ops between them and the row-parallel output projection keep the split. Each rule below says
 * where the split axis goes through one op; an op no rule fits materializes its inputs (always
 * exact, only slower). Nothing depends on node names: the chain is recognised by these rules
 * holding one after the other. */

/* A computed input of n that is split along one axis: its layout, else NULL. */
static tstate *split_input(rank_ctx *r, const char *name)
{
    tstate *t = computed_state(r, name);
    return t && t->kind == L_SPLIT && t->span <= 1 ? t : NULL;
}

/* Emits n on this rank's parts: split inputs by their local names, the others replicated, input
 * alt_index replaced by alt (when alt is set); its first output split along out_axis. */
static void emit_split_node(rank_ctx *r, const Onnx__NodeProto *n, int out_axis, int alt_index,
                            const char *alt)
{
    const char *ins[16];
    int n_in = n->n_input < 16 ? (int)n->n_input : 16, parts = 0;
    for (int j = 0; j < n_in; j++) {
        const tstate *t = computed_state(r, n->input[j]);
        bool split = t && t->kind == L_SPLIT;
        if (split && !parts) parts = shard_parts(r->c, t); /* the output's parts: its input's */
        ins[j] = alt && j == alt_index ? alt : split ? t->local : shard_input_repl(r, n->input[j]);
    }
    const char *out = rg_printf(&r->g, "%s__split", n->output[0]);
    Onnx__NodeProto *m = rg_node(&r->g, n->op_type, n->domain, n_in, ins, 1, &out);
    rg_attr_copy(&r->g, m, n);
    r->ts[shard_name_find(r->c, n->output[0])] = (tstate){out, L_SPLIT, out_axis, 1, parts, 1};
}

static int normalize_axis(int64_t axis, int ndim)
{
    return (int)(axis < 0 ? axis + ndim : axis);
}

/* Element `pos` of an int64 shape value when it is known: a constant, or a constant part of the
 * Concat that builds it (exported Reshape targets: Concat(B, T, C[heads], C[head_dim])). */
static bool shape_elem(const shard_ctx *c, const char *name, int64_t pos, int64_t *v)
{
    ss_tensor d;
    if (!shard_value_desc(c, name, &d) || d.dtype != SS_DT_INT64) return false;
    if (d.data) return pos < ss_tensor_numel(&d) ? (*v = ((const int64_t *)d.data)[pos], true) : 0;
    int id = shard_name_find(c, name), p = id >= 0 ? c->producer[id] : -1;
    if (p < 0 || strcmp(c->nodes[p].node->op_type, "Concat")) return false;
    const Onnx__NodeProto *n = c->nodes[p].node;
    for (size_t j = 0; j < n->n_input; j++) {
        if (!shard_value_desc(c, n->input[j], &d) || d.ndim != 1) return false;
        if (pos < d.dims[0]) return shape_elem(c, n->input[j], pos, v);
        pos -= d.dims[0];
    }
    return false;
}

/* This rank's shape for a Reshape/Expand whose output is split at `pos`: the full shape with
 * element pos divided by the ranks; with `at_least_one`, 1 stays 1 (Expand's broadcast dims). */
static const char *rank_shape(rank_ctx *r, const char *shape, int len, const int64_t *div,
                              bool at_least_one)
{
    const char *dn = rg_printf(&r->g, "%s__ranks_div%d", shape, r->g.counter++);
    rg_init_i64(&r->g, dn, div, len);
    const char *out = rg_printf(&r->g, "%s__rank%d", shape, r->g.counter++);
    rg_node(&r->g, "Div", NULL, 2, (const char *[]){shard_input_repl(r, shape), dn}, 1, &out);
    if (!at_least_one) return out;
    int64_t one = 1;
    const char *on = "__one_i64", *maxed = rg_printf(&r->g, "%s__atleast1", out);
    rg_init_i64(&r->g, on, &one, 1);
    rg_node(&r->g, "Max", NULL, 2, (const char *[]){out, on}, 1, &maxed);
    return maxed;
}

static bool split_transpose(rank_ctx *r, const Onnx__NodeProto *n)
{
    tstate *t = split_input(r, n->input[0]);
    ss_tensor d;
    const int64_t *perm;
    if (!t || shard_blocks_of(t) > 1 || !shard_value_desc(r->c, n->input[0], &d)) return false;
    int np = ss_onnx_attr_ints(n, "perm", &perm), a = d.ndim + t->axis;
    for (int j = 0; j < np && np == d.ndim; j++)
        if (perm[j] == a) return emit_split_node(r, n, j - d.ndim, -1, NULL), true;
    return false;
}

/* The output axis (negative) of a Reshape that merges the two axes a split spans, or 0. */
static int merged_axis(const ss_tensor *in, const ss_tensor *out, int axis)
{
    int a = in->ndim + axis;
    int64_t before = 1, po = 1;
    for (int k = 0; k < a; k++)
        before *= in->dims[k];
    for (int b = 0; b < out->ndim && po <= before && a + 1 < in->ndim; po *= out->dims[b], b++)
        if (po == before && out->dims[b] == in->dims[a] * in->dims[a + 1]) return b - out->ndim;
    return 0;
}

/* A divisor per element of a shape of `len` dims: `parts` at pos, 1 elsewhere. */
static void shape_divisor(int64_t *div, int len, int pos, int64_t parts)
{
    for (int k = 0; k < len; k++)
        div[k] = k == pos ? parts : 1;
}

static bool split_reshape(rank_ctx *r, const Onnx__NodeProto *n)
{
    tstate *t = computed_state(r, n->input[0]);
    ss_tensor in, out;
    if (!t || t->kind != L_SPLIT || !shard_value_desc(r->c, n->input[0], &in) ||
        !shard_value_desc(r->c, n->output[0], &out))
        return false;
    int parts = shard_parts(r->c, t), b = 0;
    bool kept = t->axis == -1 && t->span <= 1 && keeps_last_axis(r->c, n); /* blocks and all */
    if (kept)
        b = -1;
    else if (shard_blocks_of(t) == 1)
        b = t->span > 1 ? merged_axis(&in, &out, t->axis) : reshape_axis(r->c, n, t->axis, parts);
    if (!b) return false;
    int blocks = t->blocks;
    int64_t v = 0, div[SS_MAX_DIMS];
    if (shape_elem(r->c, n->input[1], out.ndim + b, &v) && v == -1) { /* infers the local dim */
        emit_split_node(r, n, b, -1, NULL);
    } else {
        shape_divisor(div, out.ndim, out.ndim + b, parts);
        emit_split_node(r, n, b, 1, rank_shape(r, n->input[1], out.ndim, div, false));
    }
    if (kept) r->ts[shard_name_find(r->c, n->output[0])].blocks = blocks;
    return true;
}

static bool split_expand(rank_ctx *r, const Onnx__NodeProto *n)
{
    tstate *t = split_input(r, n->input[0]);
    ss_tensor in, out, shape;
    if (!t || shard_blocks_of(t) > 1 || !shard_value_desc(r->c, n->input[0], &in) ||
        !shard_value_desc(r->c, n->output[0], &out) ||
        !shard_value_desc(r->c, n->input[1], &shape) || shape.ndim != 1 ||
        shape.dims[0] != out.ndim || in.dims[in.ndim + t->axis] != out.dims[out.ndim + t->axis])
        return false;
    int parts = shard_parts(r->c, t), a = out.ndim + t->axis, ranks_per_part = r->c->tp / parts;
    int64_t div[SS_MAX_DIMS];
    shape_divisor(div, out.ndim, a, parts);
    /* GQA's repeat of a grouped KV head [.., 1 head, 1, ..] -> [.., 1, repeats, ..]: a rank needs
     * only the repeats its own query heads use, 1/ranks_per_part of them; the result is split
     * across the two axes (heads x repeats) in rank order, as the query heads are */
    bool widen = ranks_per_part > 1;
    if (widen &&
        (t->axis >= -1 || in.dims[in.ndim + t->axis + 1] != 1 || out.dims[a + 1] % ranks_per_part))
        return false;
    if (widen) div[a + 1] = ranks_per_part;
    emit_split_node(r, n, t->axis, 1, rank_shape(r, n->input[1], out.ndim, div, true));
    if (widen) {
        tstate *o = &r->ts[shard_name_find(r->c, n->output[0])];
        o->parts = r->c->tp, o->span = 2;
    }
    return true;
}

static bool split_unsqueeze(rank_ctx *r, const Onnx__NodeProto *n)
{
    tstate *t = split_input(r, n->input[0]);
    ss_tensor in, out, axes_t;
    const int64_t *axes = NULL;
    int n_axes = ss_onnx_attr_ints(n, "axes", &axes);
    if (n_axes <= 0 && n->n_input > 1 && shard_value_desc(r->c, n->input[1], &axes_t) &&
        axes_t.data)
        axes = axes_t.data, n_axes = (int)ss_tensor_numel(&axes_t);
    if (!t || shard_blocks_of(t) > 1 || n_axes <= 0 || !shard_value_desc(r->c, n->input[0], &in) ||
        !shard_value_desc(r->c, n->output[0], &out))
        return false;
    for (int q = 0, i = 0; q < out.ndim; q++) {
        bool inserted = false;
        for (int k = 0; k < n_axes; k++)
            inserted |= normalize_axis(axes[k], out.ndim) == q;
        if (!inserted && i++ == in.ndim + t->axis)
            return emit_split_node(r, n, q - out.ndim, -1, NULL), true;
    }
    return false;
}

static bool split_slice(rank_ctx *r, const Onnx__NodeProto *n)
{
    tstate *t = split_input(r, n->input[0]);
    ss_tensor in, axes;
    if (!t || shard_blocks_of(t) > 1 || n->n_input < 4 ||
        !shard_value_desc(r->c, n->input[0], &in) || !shard_value_desc(r->c, n->input[3], &axes) ||
        !axes.data || axes.dtype != SS_DT_INT64)
        return false;
    for (int64_t k = 0; k < ss_tensor_numel(&axes); k++)
        if (normalize_axis(((const int64_t *)axes.data)[k], in.ndim) == in.ndim + t->axis)
            return false;
    emit_split_node(r, n, t->axis, -1, NULL);
    return true;
}

/* Concat along another axis than the split: the KV cache's Concat(past, new) is the one place a
 * graph input joins, so a state input (past_key_values.*) takes the split of its partner: each
 * rank is given, and returns, only its own heads. */
static bool split_concat(rank_ctx *r, const Onnx__NodeProto *n)
{
    ss_tensor out;
    const tstate *like;
    int axis = common_split_axis(r, n, &like);
    if (!axis || shard_blocks_of(like) > 1 || !shard_value_desc(r->c, n->output[0], &out) ||
        normalize_axis(ss_onnx_attr_int(n, "axis", 0), out.ndim) == out.ndim + axis)
        return false;
    for (size_t j = 0; j < n->n_input; j++) {
        tstate *t = computed_state(r, n->input[j]);
        int id = n->input[j][0] ? shard_name_find(r->c, n->input[j]) : -1;
        if (!t) return false;
        if (t->kind == L_SPLIT) continue;
        if (!r->c->is_state[id] || t->kind != L_REPL) return false;
    }
    for (size_t j = 0; j < n->n_input; j++) {
        tstate *t = computed_state(r, n->input[j]);
        if (t->kind == L_REPL) *t = (tstate){t->local, L_SPLIT, axis, 1, like->parts, 1};
    }
    emit_split_node(r, n, axis, -1, NULL);
    return true;
}

static bool split_softmax(rank_ctx *r, const Onnx__NodeProto *n)
{
    tstate *t = split_input(r, n->input[0]);
    ss_tensor in;
    if (!t || shard_blocks_of(t) > 1 || !shard_value_desc(r->c, n->input[0], &in)) return false;
    bool coerced = ss_onnx_opset(r->c->model, n->domain) < 13; /* flattens from axis on */
    int axis = normalize_axis(ss_onnx_attr_int(n, "axis", coerced ? 1 : -1), in.ndim);
    int a = in.ndim + t->axis;
    if (coerced ? a >= axis : a == axis) return false;
    emit_split_node(r, n, t->axis, -1, NULL);
    return true;
}

/* Shape of a split tensor: the local tensor's shape, when every reader only Gathers dims other
 * than the split one (the batch and sequence sizes exporters read back). */
static bool split_shape(rank_ctx *r, const Onnx__NodeProto *n)
{
    shard_ctx *c = r->c;
    tstate *t = split_input(r, n->input[0]);
    ss_tensor in, idx;
    if (!t || shard_blocks_of(t) > 1 || ss_onnx_attr_find(n, "start") ||
        ss_onnx_attr_find(n, "end") || !shard_value_desc(c, n->input[0], &in))
        return false;
    int a = in.ndim + t->axis;
    for (int i = 0; i < c->n_nodes; i++) {
        const Onnx__NodeProto *u = c->nodes[i].node;
        for (size_t j = 0; j < u->n_input; j++) {
            if (c->nodes[i].constant || strcmp(u->input[j], n->output[0])) continue;
            if (strcmp(u->op_type, "Gather") || j != 0 || u->n_input < 2 ||
                !shard_value_desc(c, u->input[1], &idx) || !idx.data || idx.dtype != SS_DT_INT64)
                return false;
            for (int64_t k = 0; k < ss_tensor_numel(&idx); k++)
                if (normalize_axis(((const int64_t *)idx.data)[k], in.ndim) == a) return false;
        }
    }
    const char *out = n->output[0];
    Onnx__NodeProto *m = rg_node(&r->g, "Shape", NULL, 1, (const char *[]){t->local}, 1, &out);
    rg_attr_copy(&r->g, m, n);
    r->ts[shard_name_find(c, out)] = (tstate){out, L_REPL, 0, 1};
    return true;
}

/* A batched MatMul of two computed tensors (QK^T, probabilities x V) split along the same batch
 * axis (heads); a replicated operand (K/V kept whole when the KV heads are fewer than the ranks)
 * is cut to this rank's heads. */
static bool split_batched_matmul(rank_ctx *r, const Onnx__NodeProto *n)
{
    tstate *ta = computed_state(r, n->input[0]), *tb = computed_state(r, n->input[1]);
    ss_tensor a, b;
    if (!ta || !tb || !shard_value_desc(r->c, n->input[0], &a) ||
        !shard_value_desc(r->c, n->input[1], &b) || a.ndim != b.ndim || a.ndim < 3)
        return false;
    tstate *split = ta->kind == L_SPLIT ? ta : tb, *other = split == ta ? tb : ta;
    int axis = split->axis, parts = shard_parts(r->c, split);
    if (split->kind != L_SPLIT || axis > -3 || shard_blocks_of(split) > 1 || split->span > 1)
        return false;
    if (other->kind == L_SPLIT)
        return other->axis == axis && shard_blocks_of(other) == 1 && other->span <= 1 &&
                       shard_parts(r->c, other) == parts
                   ? (emit_split_node(r, n, axis, -1, NULL), true)
                   : false;
    const ss_tensor *od = other == ta ? &a : &b;
    const char *oname = n->input[other == ta ? 0 : 1];
    if (other->kind != L_REPL || od->dims[od->ndim + axis] % parts) return false;
    emit_split_node(r, n, axis, other == ta ? 0 : 1,
                    shard_slice_activation(r, oname, axis, parts, shard_part_index(r, split)));
    return true;
}

/* Split of a split tensor: along another axis as it is; along the split axis only a blockwise
 * (fused QKV) tensor whose blocks are the parts, each part leaving split by heads. */
static bool split_split(rank_ctx *r, const Onnx__NodeProto *n)
{
    shard_ctx *c = r->c;
    tstate *t = split_input(r, n->input[0]);
    ss_tensor in, part;
    if (!t || !shard_value_desc(c, n->input[0], &in) || n->n_output > 16 || n->n_input > 2)
        return false;
    int n_out = (int)n->n_output, axis = normalize_axis(ss_onnx_attr_int(n, "axis", 0), in.ndim);
    bool along = axis - in.ndim == t->axis;
    if (along ? shard_blocks_of(t) != n_out || !equal_last_axis_split(c, n)
              : shard_blocks_of(t) > 1)
        return false;
    const char *ins[2] = {t->local, n->n_input > 1 ? shard_input_repl(r, n->input[1]) : ""};
    const char *outs[16];
    int64_t sizes[16];
    for (int j = 0; j < n_out; j++) {
        outs[j] = rg_printf(&r->g, "%s__split", n->output[j]);
        sizes[j] = shard_value_desc(c, n->output[j], &part)
                       ? part.dims[part.ndim - 1] / shard_parts(c, t)
                       : 0;
    }
    if (along && n->n_input > 1 && n->input[1][0]) {
        ins[1] = rg_printf(&r->g, "%s__rank_sizes", n->output[0]);
        rg_init_i64(&r->g, ins[1], sizes, n_out);
    }
    Onnx__NodeProto *m = rg_node(&r->g, "Split", n->domain, (int)n->n_input, ins, n_out, outs);
    static const char *const skip[] = {"split", NULL};
    rg_attr_copy_except(&r->g, m, n, along ? skip : NULL);
    if (along && ss_onnx_attr_find(n, "split")) rg_attr_ints(&r->g, m, "split", sizes, n_out);
    for (int j = 0; j < n_out; j++)
        r->ts[shard_name_find(c, n->output[j])] =
            (tstate){outs[j], L_SPLIT, t->axis, 1, t->parts, 1};
    return true;
}

/* PagedAttention (--kv-pool) on this rank's heads: Q split by heads one part per rank, K and V
 * by heads alike, into as many parts or fewer (a group of ranks sharing the KV head its query
 * heads read); sequence ids and positions replicated. Each rank's KV block pool then holds its
 * own KV heads only. */
static bool split_paged_attention(rank_ctx *r, const Onnx__NodeProto *n)
{
    const tstate *t[3];
    for (int j = 0; j < 3; j++) {
        t[j] = n->n_input == 5 ? split_input(r, n->input[j]) : NULL;
        if (!t[j] || t[j]->axis != -3 || shard_blocks_of(t[j]) > 1) return false;
    }
    int pq = shard_parts(r->c, t[0]), pk = shard_parts(r->c, t[1]);
    if (pq != r->c->tp || pk != shard_parts(r->c, t[2]) || pq % pk) return false;
    emit_split_node(r, n, -3, -1, NULL);
    return true;
}

/* Keeps a split through one of the ops above; false: the caller materializes. */
bool shard_emit_split_structural(rank_ctx *r, const Onnx__NodeProto *n)
{
    static const struct {
        const char *op;
        bool (*emit)(rank_ctx *, const Onnx__NodeProto *);
    } rules[] = {{"Transpose", split_transpose},  {"Reshape", split_reshape},
                 {"Expand", split_expand},        {"Unsqueeze", split_unsqueeze},
                 {"Slice", split_slice},          {"Concat", split_concat},
                 {"Softmax", split_softmax},      {"Shape", split_shape},
                 {"MatMul", split_batched_matmul}};
    if (n->domain && !strcmp(n->domain, SS_DOMAIN_KVPOOL) && !strcmp(n->op_type, "PagedAttention"))
        return split_paged_attention(r, n);
    if (n->domain && n->domain[0] && strcmp(n->domain, "ai.onnx")) return false;
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        if (!strcmp(n->op_type, rules[i].op)) return n->n_output >= 1 && rules[i].emit(r, n);
    return n->n_output > 1 && !strcmp(n->op_type, "Split") && split_split(r, n);
}
