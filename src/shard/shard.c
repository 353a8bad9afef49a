/*
 * The shard tool: see include/shardserve/shard.h for the contract.
 *
 * 1. Plan the whole model with concrete input shapes (the runtime's shape inference): every
 *    value gets a dtype and shape, and every value computable from constants alone (initializers,
 *    the shape arithmetic of exported models) gets its value. Constant nodes are never copied into
 *    shards: their outputs become initializers where used. Named dynamic dims (batch, sequence,
 *    past length) need no --input-shape: the model is planned twice with different values for
 *    them, and what differs between the plans is shape plumbing the shards compute themselves.
 * 2. Cut the remaining nodes, in order, into stages of about equal cost (parameter bytes + FLOPs,
 *    each normalised to its total).
 * 3. For each rank, walk its stage's nodes tracking every tensor's layout on this rank:
 *    replicated, split along an axis, or a partial sum. MatMul/Gemm with a strategy split their
 *    weight and produce split or partial outputs; elementwise ops and attention's ops keep a split
 *    by whole heads (layout.c); everything else first materialises its inputs (AllGather /
 *    AllReduce over the stage's group). All ranks of a stage see the same layouts, so they insert
 * the same collectives in the same order, which is what makes the collectives match.
 * 4. Tensors crossing a stage cut are materialised and sent to the same position of the next stage
 *    (stages.c).
 */
#include "shardserve/shard.h"

#include "shard_internal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ names */

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

int shard_name_find(const shard_ctx *c, const char *name)
{
    for (uint64_t i = fnv(name) & (uint64_t)(c->hash_cap - 1);;
         i = (i + 1) & (uint64_t)(c->hash_cap - 1)) {
        if (c->hash[i] < 0) return -1;
        if (!strcmp(c->names[c->hash[i]], name)) return c->hash[i];
    }
}

static int name_add(shard_ctx *c, const char *name)
{
    int id = shard_name_find(c, name);
    if (id >= 0) return id;
    id = c->n_names++;
    c->names[id] = (char *)name;
    uint64_t i = fnv(name) & (uint64_t)(c->hash_cap - 1);
    while (c->hash[i] >= 0)
        i = (i + 1) & (uint64_t)(c->hash_cap - 1);
    c->hash[i] = id;
    return id;
}

/* ------------------------------------------------------------------ analysis */

bool shard_value_desc(const shard_ctx *c, const char *name, ss_tensor *d)
{
    if (!ss_session_value_desc(c->session, name, d)) return false;
    int id = c->varies ? shard_name_find(c, name) : -1;
    if (id >= 0 && c->varies[id]) d->data = NULL; /* depends on a dynamic dim: computed */
    return true;
}

static bool node_is_constant(const shard_ctx *c, const Onnx__NodeProto *n)
{
    if (n->domain && !strcmp(n->domain, SS_DOMAIN_COLLECTIVE)) return false;
    for (size_t j = 0; j < n->n_output; j++) {
        ss_tensor d;
        if (!n->output[j][0]) continue;
        if (!shard_value_desc(c, n->output[j], &d) || !d.data) return false;
    }
    return n->n_output > 0;
}

static void node_cost(const shard_ctx *c, node_info *ni, unsigned char *param_seen)
{
    const Onnx__NodeProto *n = ni->node;
    for (size_t j = 0; j < n->n_input; j++) {
        int id = n->input[j][0] ? shard_name_find(c, n->input[j]) : -1;
        if (id < 0 || param_seen[id] || c->producer[id] >= 0) continue;
        const ss_tensor *w = ss_onnx_find_init(c->model, n->input[j]);
        if (w) ni->params += (double)w->nbytes, param_seen[id] = 1;
    }
    ss_tensor out;
    if (!n->n_output || !shard_value_desc(c, n->output[0], &out)) return;
    double numel = (double)ss_tensor_numel(&out);
    ss_tensor a;
    if ((!strcmp(n->op_type, "MatMul") || !strcmp(n->op_type, "Gemm")) && n->n_input > 0 &&
        shard_value_desc(c, n->input[0], &a) && a.ndim > 0) {
        bool ta = !strcmp(n->op_type, "Gemm") && ss_onnx_attr_int(n, "transA", 0);
        double k = (double)(ta && a.ndim == 2 ? a.dims[0] : a.dims[a.ndim - 1]);
        ni->flops = 2.0 * numel * k;
    } else {
        ni->flops = numel;
    }
}

static ss_status *parse_strategy(shard_ctx *c)
{
    void *buf;
    size_t len;
    ss_status *st = ss_read_file(c->opt->strategy_path, &buf, &len);
    if (st) return st;
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return ss_errf(SS_ERR_INVALID,
                       "%s: a strategy file is a JSON object {\"node name\": [[a0,a1],[b0,b1]]}",
                       c->opt->strategy_path);
    }
    cJSON *item;
    cJSON_ArrayForEach(item, root)
    {
        int found = -1;
        for (int i = 0; i < c->n_nodes; i++) {
            const Onnx__NodeProto *n = c->nodes[i].node;
            if ((n->name && !strcmp(n->name, item->string)) ||
                (n->n_output && !strcmp(n->output[0], item->string)))
                found = i;
        }
        if (found < 0) {
            st = ss_errf(SS_ERR_INVALID, "%s: no node named '%s' in the model",
                         c->opt->strategy_path, item->string);
            break;
        }
        const Onnx__NodeProto *n = c->nodes[found].node;
        if (strcmp(n->op_type, "MatMul") && strcmp(n->op_type, "Gemm")) {
            st = ss_errf(SS_ERR_UNSUPPORTED,
                         "%s: node '%s' is a %s; strategies apply to MatMul and Gemm",
                         c->opt->strategy_path, item->string, n->op_type);
            break;
        }
        int64_t f[4] = {0};
        int k = 0;
        cJSON *row, *v;
        cJSON_ArrayForEach(row, item) cJSON_ArrayForEach(v, row) if (k < 4 && cJSON_IsNumber(v))
            f[k++] = (int64_t)v->valuedouble;
        if (k != 4 || cJSON_GetArraySize(item) != 2) {
            st = ss_errf(SS_ERR_INVALID, "%s: strategy of '%s' must be [[a0,a1],[b0,b1]]",
                         c->opt->strategy_path, item->string);
            break;
        }
        int tp = c->tp;
        split_kind s;
        if (f[0] == 1 && f[1] == 1 && f[2] == 1 && f[3] == 1)
            s = S_NONE;
        else if (f[0] == tp && f[1] == 1 && f[2] == 1 && f[3] == 1)
            s = S_ROWS;
        else if (f[0] == 1 && f[1] == tp && f[2] == tp && f[3] == 1)
            s = S_REDUCE;
        else if (f[0] == 1 && f[1] == 1 && f[2] == 1 && f[3] == tp)
            s = S_COLS;
        else {
            st = ss_errf(SS_ERR_UNSUPPORTED,
                         "%s: strategy [[%lld,%lld],[%lld,%lld]] of '%s': shardserve splits one of "
                         "rows [[%d,1],[1,1]], the reduction dim [[1,%d],[%d,1]] or columns "
                         "[[1,1],[1,%d]] by the "
                         "stage's %d ranks",
                         c->opt->strategy_path, (long long)f[0], (long long)f[1], (long long)f[2],
                         (long long)f[3], item->string, tp, tp, tp, tp, tp);
            break;
        }
        c->nodes[found].explicit_split = s;
        c->nodes[found].has_explicit = true;
    }
    cJSON_Delete(root);
    return st;
}

/* A node's share of the cost: its parameter bytes and FLOPs, each normalised to its total. */
static double node_share(const shard_ctx *c, const node_info *ni)
{
    return (c->total_params > 0 ? ni->params / c->total_params : 0) +
           (c->total_flops > 0 ? ni->flops / c->total_flops : 0);
}

static void assign_stages(shard_ctx *c)
{
    double tot_p = 0, tot_f = 0;
    int live = 0;
    for (int i = 0; i < c->n_nodes; i++)
        if (!c->nodes[i].constant) tot_p += c->nodes[i].params, tot_f += c->nodes[i].flops, live++;
    c->total_params = tot_p, c->total_flops = tot_f;
    double total = (tot_p > 0 ? 1 : 0) + (tot_f > 0 ? 1 : 0), acc = 0;
    int stage = 0, seen = 0;
    for (int i = 0; i < c->n_nodes; i++) {
        node_info *ni = &c->nodes[i];
        if (c->have_cuts) { /* slide_cuts chose them */
            ni->stage = stage;
            stage += !ni->constant && ni->cut_after;
            continue;
        }
        if (ni->constant) {
            ni->stage = stage;
            continue;
        }
        double cost = node_share(c, ni);
        /* move to the next stage once this one has its share, leaving a node for each later one */
        if (stage < c->stages - 1 && seen > 0 &&
            (acc + cost / 2 > total * (stage + 1) / c->stages ||
             live - seen <= c->stages - 1 - stage))
            stage++;
        ni->stage = stage;
        acc += cost;
        seen++;
    }
}

/* ------------------------------------------------------------------ per-rank rewriting */

static int pos_axis(int neg_axis, int rank)
{
    return neg_axis + rank;
}

/* A gathered blocked axis (only ever the last) is rank-major [r0: b0 b1 b2 | r1: b0 b1 b2]; the
 * tensor wants block-major [b0: r0 r1 | b1: ...]: view as [.., ranks, blocks, w], swap, merge. */
static void unblock_last_axis(rank_ctx *r, const char *in, const ss_tensor *full, int blocks,
                              int tp, const char *out)
{
    int nd = full->ndim;
    int64_t split_shape[SS_MAX_DIMS + 2] = {0}, merged[SS_MAX_DIMS] = {0}, perm[SS_MAX_DIMS + 2];
    split_shape[nd - 1] = tp; /* leading zeros copy the input's dims */
    split_shape[nd] = blocks;
    split_shape[nd + 1] = full->dims[nd - 1] / (blocks * tp);
    merged[nd - 1] = -1;
    for (int k = 0; k < nd + 2; k++)
        perm[k] = k;
    perm[nd - 1] = nd, perm[nd] = nd - 1;
    const char *sn = rg_printf(&r->g, "%s__unblock_shape", out);
    const char *mn = rg_printf(&r->g, "%s__unblock_merge", out);
    rg_init_i64(&r->g, sn, split_shape, nd + 2);
    rg_init_i64(&r->g, mn, merged, nd);
    const char *viewed = rg_printf(&r->g, "%s__unblock_view", out);
    const char *swapped = rg_printf(&r->g, "%s__unblock_swap", out);
    rg_node(&r->g, "Reshape", NULL, 2, (const char *[]){in, sn}, 1, &viewed);
    Onnx__NodeProto *t = rg_node(&r->g, "Transpose", NULL, 1, &viewed, 1, &swapped);
    rg_attr_ints(&r->g, t, "perm", perm, nd + 2);
    rg_node(&r->g, "Reshape", NULL, 2, (const char *[]){swapped, mn}, 1, &out);
}

/* A gathered grouped split holds each part once per rank of its group; keep the first copy of
 * each (Gather of the element indices along the axis). */
static void ungroup(rank_ctx *r, const char *in, const ss_tensor *full, int axis, int parts,
                    const char *out)
{
    int64_t w = full->dims[axis] / parts, reps = r->c->tp / parts;
    int64_t *idx = rg_alloc(&r->g, sizeof(int64_t) * (size_t)(parts * w + 1));
    if (!idx) return;
    for (int64_t g = 0; g < parts; g++)
        for (int64_t i = 0; i < w; i++)
            idx[g * w + i] = g * reps * w + i;
    const char *in_name = rg_printf(&r->g, "%s__group_index", out);
    rg_init_i64(&r->g, in_name, idx, (int)(parts * w));
    Onnx__NodeProto *n = rg_node(&r->g, "Gather", NULL, 2, (const char *[]){in, in_name}, 1, &out);
    rg_attr_int(&r->g, n, "axis", axis);
}

/* A split spanning axes axis and axis + 1 gathers as [.., ranks, local, ..]: the same elements in
 * the same order as the full [.., d_axis, d_axis+1, ..]; reshape to it (zeros copy the others). */
static void unspan(rank_ctx *r, const char *in, const ss_tensor *full, int axis, const char *out)
{
    int64_t shape[SS_MAX_DIMS] = {0};
    shape[axis] = full->dims[axis], shape[axis + 1] = full->dims[axis + 1];
    const char *sn = rg_printf(&r->g, "%s__unspan_shape", out);
    rg_init_i64(&r->g, sn, shape, full->ndim);
    rg_node(&r->g, "Reshape", NULL, 2, (const char *[]){in, sn}, 1, &out);
}

/* Make `name` replicated on this rank (AllGather / AllReduce as needed); returns its local name. */
const char *shard_materialize(rank_ctx *r, const char *name)
{
    int id = shard_name_find(r->c, name);
    tstate *t = &r->ts[id];
    if (t->kind == L_REPL) return t->local;
    /* the original name is free unless the split tensor itself carries it */
    const char *out = strcmp(t->local, name) ? name : rg_printf(&r->g, "%s__full", name);
    if (t->kind == L_SPLIT) {
        ss_tensor d;
        shard_value_desc(r->c, name, &d);
        bool grouped = shard_parts(r->c, t) < r->c->tp;
        const char *gathered =
            t->blocks > 1 || grouped || t->span > 1 ? rg_printf(&r->g, "%s__rankmajor", name) : out;
        Onnx__NodeProto *n =
            rg_node(&r->g, "AllGather", SS_DOMAIN_COLLECTIVE, 1, &t->local, 1, &gathered);
        rg_attr_int(&r->g, n, "axis", pos_axis(t->axis, d.ndim));
        rg_attr_string(&r->g, n, "group", r->group);
        int axis = pos_axis(t->axis, d.ndim), parts = shard_parts(r->c, t);
        const char *ungrouped =
            grouped && t->blocks > 1 ? rg_printf(&r->g, "%s__ungrouped", name) : out;
        if (grouped) ungroup(r, gathered, &d, axis, parts, ungrouped);
        if (t->blocks > 1)
            unblock_last_axis(r, grouped ? ungrouped : gathered, &d, t->blocks, parts, out);
        else if (t->span > 1)
            unspan(r, gathered, &d, axis, out);
    } else {
        Onnx__NodeProto *n =
            rg_node(&r->g, "AllReduce", SS_DOMAIN_COLLECTIVE, 1, &t->local, 1, &out);
        rg_attr_string(&r->g, n, "group", r->group);
    }
    t->local = out;
    t->kind = L_REPL;
    return out;
}

/* Local name of an input used replicated: constants become initializers of this rank. */
const char *shard_input_repl(rank_ctx *r, const char *name)
{
    if (!name[0]) return "";
    ss_tensor d;
    if (shard_value_desc(r->c, name, &d) && d.data) {
        rg_init(&r->g, name, &d, 0, 1, 0);
        return name;
    }
    return shard_materialize(r, name);
}

/* This rank's slice of a replicated activation along `neg_axis`. */
const char *shard_slice_activation(rank_ctx *r, const char *name, int neg_axis, int parts,
                                   int index)
{
    const char *full = shard_materialize(r, name);
    ss_tensor d;
    shard_value_desc(r->c, name, &d);
    int64_t chunk = d.dims[pos_axis(neg_axis, d.ndim)] / parts;
    int64_t starts = chunk * index, ends = chunk * (index + 1), axes = neg_axis;
    const char *sn = rg_printf(&r->g, "%s__slice_start%d_%d", name, neg_axis, parts);
    const char *en = rg_printf(&r->g, "%s__slice_end%d_%d", name, neg_axis, parts);
    const char *an = rg_printf(&r->g, "__axis%d", neg_axis);
    rg_init_i64(&r->g, sn, &starts, 1);
    rg_init_i64(&r->g, en, &ends, 1);
    rg_init_i64(&r->g, an, &axes, 1);
    const char *ins[4] = {full, sn, en, an};
    const char *out = rg_printf(&r->g, "%s__part%d_%d", name, neg_axis, parts);
    rg_node(&r->g, "Slice", NULL, 4, ins, 1, &out);
    return out;
}

static bool divisible(const ss_tensor *d, int axis, int tp)
{
    return d->dims[axis] % tp == 0 && d->dims[axis] >= tp;
}

/* Decide how a MatMul/Gemm splits on this stage; S_NONE keeps it whole. Errors for explicit
 * strategies that cannot work. */
static ss_status *matmul_split(rank_ctx *r, node_info *ni, split_kind *out)
{
    shard_ctx *c = r->c;
    const Onnx__NodeProto *n = ni->node;
    bool gemm = !strcmp(n->op_type, "Gemm");
    *out = S_NONE;
    if (c->tp == 1 || c->opt->mode == SS_SHARD_NONE) return NULL;
    if (c->opt->mode == SS_SHARD_FILE && !ni->has_explicit) return NULL;
    ss_tensor x, w;
    if (n->n_input < 2 || !shard_value_desc(c, n->input[0], &x) ||
        !shard_value_desc(c, n->input[1], &w))
        return ss_errf(SS_ERR_INTERNAL, "node '%s': shapes unknown", n->name);
    bool tb = gemm && ss_onnx_attr_int(n, "transB", 0);
    bool ta = gemm && ss_onnx_attr_int(n, "transA", 0);
    bool weight_ok = w.data && w.ndim == 2 && x.ndim >= 2 && !ta && !x.data;
    int k_axis_w = tb ? 1 : 0, n_axis_w = tb ? 0 : 1;
    int id = shard_name_find(c, n->input[0]);
    if (c->opt->mode == SS_SHARD_FILE) {
        split_kind s = ni->explicit_split;
        const char *why = NULL;
        if (s != S_NONE && !weight_ok)
            why = "its weight (input 1) must be a 2-D initializer and input 0 a computed tensor of "
                  "rank >= 2 (no transA)";
        else if (s == S_COLS && !divisible(&w, n_axis_w, c->tp))
            why = "the weight's columns do not divide";
        else if (s == S_REDUCE && !divisible(&w, k_axis_w, c->tp))
            why = "the reduction dim does not divide";
        else if (s == S_ROWS && !divisible(&x, x.ndim - 2, c->tp))
            why = "the rows of input 0 do not divide";
        if (why) {
            char sb[128], wb[128];
            return ss_errf(
                SS_ERR_INVALID, "cannot split node '%s' (%s) %d ways: %s (input 0 %s, weight %s)",
                n->name, n->op_type, c->tp, why, ss_shape_str(x.ndim, x.dims, sb, sizeof sb),
                ss_shape_str(w.ndim, w.dims, wb, sizeof wb));
        }
        *out = s;
        return NULL;
    }
    /* auto: row-parallel after a column-parallel producer, otherwise column-parallel */
    if (!weight_ok) return NULL;
    const tstate *t = &r->ts[id];
    int blocks = 1, parts = c->tp;
    int in_parts = t->kind == L_SPLIT ? shard_parts(c, t) : c->tp;
    if (t->kind == L_SPLIT && t->axis == -1 && shard_blocks_of(t) == 1 && t->span <= 1 &&
        divisible(&w, k_axis_w, in_parts) &&
        (in_parts == c->tp || w.dtype == SS_DT_FLOAT32)) /* grouped: rows scaled, see below */
        *out = S_REDUCE;
    else if (divisible(&w, n_axis_w, c->tp) &&
             shard_cols_fit(c, shard_name_find(c, n->output[0]), &blocks, &parts) &&
             w.dims[n_axis_w] % ((int64_t)blocks * parts) == 0)
        *out = S_COLS, ni->blocks = blocks, ni->parts = parts;
    return NULL;
}

/* This rank's rows of a row-parallel weight. A grouped input (a head shared by a group of ranks)
 * gives every rank of the group the same rows, so the AllReduce adds each product once per rank
 * of the group: the rows are scaled by 1/group (exact for the usual power-of-two groups). */
static void emit_rows(rank_ctx *r, const char *name, const ss_tensor *w, int axis, int parts,
                      int index)
{
    int group = r->c->tp / parts;
    ss_tensor scaled;
    if (group == 1) {
        rg_init(&r->g, name, w, axis, parts, index);
        return;
    }
    ss_status *st = ss_tensor_copy(&scaled, w);
    if (st) {
        rg_fail(&r->g, st);
        return;
    }
    for (int64_t i = 0; i < ss_tensor_numel(&scaled); i++)
        ((float *)scaled.data)[i] /= (float)group;
    rg_init(&r->g, name, &scaled, axis, parts, index);
    ss_tensor_free(&scaled);
}

static void emit_matmul(rank_ctx *r, const node_info *ni, split_kind s)
{
    shard_ctx *c = r->c;
    const Onnx__NodeProto *n = ni->node;
    bool gemm = !strcmp(n->op_type, "Gemm");
    bool tb = gemm && ss_onnx_attr_int(n, "transB", 0);
    const char *out_name = n->output[0];
    int out_id = shard_name_find(c, out_name);
    ss_tensor w, bias, outd;
    shard_value_desc(c, n->input[1], &w);
    shard_value_desc(c, out_name, &outd);
    bool has_c = gemm && n->n_input > 2 && n->input[2][0];
    const char *ins[3] = {NULL, NULL, NULL};
    const char *wname =
        rg_printf(&r->g, "%s__%s%d", n->input[1], s == S_COLS ? "cols" : "rows", r->pos);
    int blocks = s == S_COLS && ni->blocks > 1 ? ni->blocks : 1;
    int parts = s == S_COLS && ni->parts > 0 ? ni->parts : c->tp, index = r->pos * parts / c->tp;
    if (s == S_COLS) {
        ins[0] = shard_materialize(r, n->input[0]);
        rg_init_blocked(&r->g, wname, &w, tb ? 0 : 1, blocks, parts, index);
        ins[1] = wname;
        int n_in = 2;
        if (has_c) {
            shard_value_desc(c, n->input[2], &bias);
            if (bias.ndim >= 1 && bias.dims[bias.ndim - 1] > 1) {
                const char *bn = rg_printf(&r->g, "%s__cols%d", n->input[2], r->pos);
                rg_init_blocked(&r->g, bn, &bias, bias.ndim - 1, blocks, parts, index);
                ins[2] = bn;
            } else {
                ins[2] = shard_input_repl(r, n->input[2]);
            }
            n_in = 3;
        }
        bool gather = c->opt->mode == SS_SHARD_FILE;
        const char *local = rg_printf(&r->g, "%s__colpart", out_name);
        Onnx__NodeProto *m = rg_node(&r->g, n->op_type, n->domain, n_in, ins, 1, &local);
        rg_attr_copy(&r->g, m, n);
        r->ts[out_id] = (tstate){local, L_SPLIT, -1, blocks, parts, 1};
        if (gather) shard_materialize(r, out_name);
    } else if (s == S_REDUCE) {
        const tstate *t = &r->ts[shard_name_find(c, n->input[0])];
        bool local = t->kind == L_SPLIT && t->axis == -1;
        ins[0] = local ? t->local : shard_slice_activation(r, n->input[0], -1, c->tp, r->pos);
        emit_rows(r, wname, &w, tb ? 1 : 0, local ? shard_parts(c, t) : c->tp,
                  local ? shard_part_index(r, t) : r->pos);
        ins[1] = wname;
        const char *partial = rg_printf(&r->g, "%s__partial", out_name);
        static const char *const skip[] = {"beta", NULL};
        Onnx__NodeProto *m = rg_node(&r->g, n->op_type, n->domain, 2, ins, 1, &partial);
        rg_attr_copy_except(&r->g, m, n, skip);
        r->ts[out_id] = (tstate){partial, L_PARTIAL, 0};
        const char *reduced;
        if (has_c) { /* the sum gets its own name: the Add below produces out_name */
            reduced = rg_printf(&r->g, "%s__sum", out_name);
            Onnx__NodeProto *ar =
                rg_node(&r->g, "AllReduce", SS_DOMAIN_COLLECTIVE, 1, &partial, 1, &reduced);
            rg_attr_string(&r->g, ar, "group", r->group);
        } else {
            reduced = shard_materialize(r, out_name);
        }
        if (has_c) { /* the bias is added once, after the sum */
            float beta = ss_onnx_attr_float(n, "beta", 1.0f);
            shard_value_desc(c, n->input[2], &bias);
            const char *cname = n->input[2];
            if (beta != 1.0f && bias.dtype == SS_DT_FLOAT32) {
                ss_tensor scaled;
                if (!ss_tensor_copy(&scaled, &bias)) {
                    for (int64_t i = 0; i < ss_tensor_numel(&scaled); i++)
                        ((float *)scaled.data)[i] *= beta;
                    cname = rg_printf(&r->g, "%s__beta", n->input[2]);
                    rg_init(&r->g, cname, &scaled, 0, 1, 0);
                    ss_tensor_free(&scaled);
                }
            } else {
                rg_init(&r->g, cname, &bias, 0, 1, 0);
            }
            const char *add_in[2] = {reduced, cname};
            rg_node(&r->g, "Add", NULL, 2, add_in, 1, &out_name);
            r->ts[out_id] = (tstate){out_name, L_REPL, 0};
        }
    } else { /* S_ROWS */
        ss_tensor x;
        shard_value_desc(c, n->input[0], &x);
        ins[0] = shard_slice_activation(r, n->input[0], -2, c->tp, r->pos);
        ins[1] = shard_input_repl(r, n->input[1]);
        int n_in = 2;
        if (has_c) {
            shard_value_desc(c, n->input[2], &bias);
            if (bias.ndim == 2 && bias.dims[0] > 1) {
                const char *bn = rg_printf(&r->g, "%s__rows%d", n->input[2], r->pos);
                rg_init(&r->g, bn, &bias, 0, c->tp, r->pos);
                ins[2] = bn;
            } else {
                ins[2] = shard_input_repl(r, n->input[2]);
            }
            n_in = 3;
        }
        const char *local = rg_printf(&r->g, "%s__rowpart", out_name);
        Onnx__NodeProto *m = rg_node(&r->g, n->op_type, n->domain, n_in, ins, 1, &local);
        rg_attr_copy(&r->g, m, n);
        r->ts[out_id] = (tstate){local, L_SPLIT, -2};
        shard_materialize(r, out_name);
    }
}

/* Calls fn for every name the subgraphs of n read (If branches, Loop/Scan bodies, nested ones
 * too): node inputs and graph outputs, whether defined inside or outside (callers look names up
 * in the outer table, and ONNX names are unique across scopes). */
static void subgraph_reads(const Onnx__NodeProto *n, void (*fn)(void *, const char *), void *arg,
                           int depth)
{
    for (size_t a = 0; a < n->n_attribute && depth < 32; a++) {
        const Onnx__AttributeProto *at = n->attribute[a];
        for (size_t k = 0; k < at->n_graphs + (at->g != NULL); k++) {
            const Onnx__GraphProto *g = k < at->n_graphs ? at->graphs[k] : at->g;
            for (size_t i = 0; i < g->n_node; i++) {
                for (size_t j = 0; j < g->node[i]->n_input; j++)
                    if (g->node[i]->input[j][0]) fn(arg, g->node[i]->input[j]);
                subgraph_reads(g->node[i], fn, arg, depth + 1);
            }
            for (size_t i = 0; i < g->n_output; i++)
                if (g->output[i]->name && g->output[i]->name[0]) fn(arg, g->output[i]->name);
        }
    }
}

/* An outer value a subgraph reads must exist on this rank under its own name, whole: constants
 * become initializers, split or partial tensors are materialized (which gives the original name
 * to the full tensor). */
static void subgraph_read_repl(void *arg, const char *name)
{
    rank_ctx *r = arg;
    if (shard_name_find(r->c, name) >= 0) shard_input_repl(r, name);
}

static void emit_plain(rank_ctx *r, const Onnx__NodeProto *n)
{
    subgraph_reads(n, subgraph_read_repl, r, 0);
    const char *ins[64];
    const char *outs[64];
    int n_in = (int)n->n_input < 64 ? (int)n->n_input : 64,
        n_out = (int)n->n_output < 64 ? (int)n->n_output : 64;
    for (int j = 0; j < n_in; j++)
        ins[j] = shard_input_repl(r, n->input[j]);
    for (int j = 0; j < n_out; j++)
        outs[j] = n->output[j];
    Onnx__NodeProto *m = rg_node(&r->g, n->op_type, n->domain, n_in, ins, n_out, outs);
    rg_attr_copy(&r->g, m, n);
    if (m && n->name && n->name[0]) m->name = rg_strdup(&r->g, n->name);
    for (int j = 0; j < n_out; j++)
        if (n->output[j][0])
            r->ts[shard_name_find(r->c, n->output[j])] = (tstate){n->output[j], L_REPL, 0};
}

static Onnx__ValueInfoProto *value_info_for(rank_ctx *r, const char *name)
{
    const Onnx__GraphProto *g = r->c->graph;
    for (size_t i = 0; i < g->n_output; i++)
        if (!strcmp(g->output[i]->name, name)) return g->output[i];
    return NULL;
}

/* A copy of vi whose dim at `axis` (negative) is this rank's share: a split state input or output
 * (each rank holds its own KV heads). Dynamic dims stay named. */
static Onnx__ValueInfoProto *vi_split(rank_ctx *r, Onnx__ValueInfoProto *vi, int axis, int parts)
{
    if (!vi || !vi->type || vi->type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE ||
        !vi->type->tensor_type->shape)
        return vi;
    const Onnx__TensorShapeProto *shape = vi->type->tensor_type->shape;
    int p = (int)shape->n_dim + axis;
    Onnx__ValueInfoProto *nv = rg_alloc(&r->g, sizeof *nv);
    Onnx__TypeProto *nt = rg_alloc(&r->g, sizeof *nt);
    Onnx__TypeProto__Tensor *ntt = rg_alloc(&r->g, sizeof *ntt);
    Onnx__TensorShapeProto *ns = rg_alloc(&r->g, sizeof *ns);
    Onnx__TensorShapeProto__Dimension **dims = rg_alloc(&r->g, sizeof *dims * (shape->n_dim + 1));
    Onnx__TensorShapeProto__Dimension *nd = rg_alloc(&r->g, sizeof *nd);
    if (!nv || !nt || !ntt || !ns || !dims || !nd || p < 0) return vi;
    *nv = *vi, *nt = *vi->type, *ntt = *vi->type->tensor_type, *ns = *shape;
    memcpy(dims, shape->dim, sizeof *dims * shape->n_dim);
    *nd = *shape->dim[p];
    if (nd->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE)
        nd->dim_value /= parts;
    dims[p] = nd, ns->dim = dims, ntt->shape = ns, nt->tensor_type = ntt, nv->type = nt;
    return nv;
}

/* Graph inputs and outputs that stay split on this rank (the KV cache) are declared with its
 * share of the heads; the other outputs are materialized whole. */
static void emit_graph_io(rank_ctx *r)
{
    shard_ctx *c = r->c;
    for (size_t i = 0; i < r->g.n_inputs; i++) {
        int id = shard_name_find(c, r->g.inputs[i]->name);
        if (id >= 0 && r->ts[id].kind == L_SPLIT)
            r->g.inputs[i] =
                vi_split(r, r->g.inputs[i], r->ts[id].axis, shard_parts(c, &r->ts[id]));
    }
    for (size_t i = 0; i < c->graph->n_output; i++) {
        const char *name = c->graph->output[i]->name, *local;
        if (!shard_stage_has_output(c, shard_name_find(c, name), r->stage)) continue;
        const tstate *t = &r->ts[shard_name_find(c, name)];
        int p = c->producer[shard_name_find(c, name)];
        bool state = t->kind == L_SPLIT && p >= 0 && !strcmp(c->nodes[p].node->op_type, "Concat");
        local = state ? t->local : shard_input_repl(r, name);
        if (strcmp(local, name)) rg_node(&r->g, "Identity", NULL, 1, &local, 1, &name);
        Onnx__ValueInfoProto *vi = value_info_for(r, name);
        rg_add_output(&r->g, state ? vi_split(r, vi, t->axis, shard_parts(c, t)) : vi);
    }
}

static ss_status *write_rank_model(rank_ctx *r, const char *path)
{
    shard_ctx *c = r->c;
    Onnx__GraphProto graph = ONNX__GRAPH_PROTO__INIT;
    graph.name = (char *)(c->graph->name ? c->graph->name : "shard");
    graph.n_node = r->g.n_nodes;
    graph.node = r->g.nodes;
    graph.n_initializer = r->g.n_inits;
    graph.initializer = r->g.inits;
    graph.n_input = r->g.n_inputs;
    graph.input = r->g.inputs;
    graph.n_output = r->g.n_outputs;
    graph.output = r->g.outputs;
    Onnx__ModelProto m = ONNX__MODEL_PROTO__INIT;
    m.has_ir_version = 1;
    m.ir_version = c->model->proto->ir_version > 7 ? c->model->proto->ir_version : 7;
    m.producer_name = "shardserve shard";
    m.graph = &graph;
    size_t n_ops = c->model->proto->n_opset_import;
    Onnx__OperatorSetIdProto **ops = rg_alloc(&r->g, sizeof(*ops) * (n_ops + 1));
    Onnx__OperatorSetIdProto *coll = rg_alloc(&r->g, sizeof *coll);
    if (!ops || !coll) return ss_errf(SS_ERR_NOMEM, "out of memory");
    memcpy(ops, c->model->proto->opset_import, sizeof(*ops) * n_ops);
    onnx__operator_set_id_proto__init(coll);
    coll->domain = SS_DOMAIN_COLLECTIVE;
    coll->has_version = 1;
    coll->version = 1;
    ops[n_ops] = coll;
    m.n_opset_import = n_ops + 1;
    m.opset_import = ops;
    return ss_onnx_save_proto(&m, path);
}

static ss_status *write_group_config(shard_ctx *c, const rank_ctx *r, const char *path);

/* Op types that cannot run on split tensors (not elementwise), which a stage therefore runs whole
 * on every one of its ranks after gathering their inputs: counted so the tool says which ops it
 * did not split (an LSTM, a Loop...). */
typedef struct {
    int n;
    const char *type[32];
    int count[32];
} whole_ops;

static void whole_ops_add(whole_ops *w, const char *type)
{
    int i = 0;
    while (i < w->n && strcmp(w->type[i], type))
        i++;
    if (i == w->n && w->n < 32) w->type[w->n++] = type;
    if (i < w->n) w->count[i]++;
}

static void whole_ops_report(const shard_ctx *c, const rank_ctx *r, const whole_ops *w)
{
    if (!c->opt->progress || r->pos != 0 || c->tp < 2 || !w->n) return;
    fprintf(stderr, "shard: stage %d replicates on each of its %d ranks (not split):", r->stage,
            c->tp);
    for (int i = 0; i < w->n; i++)
        fprintf(stderr, "%s %s x%d", i ? "," : "", w->type[i], w->count[i]);
    fprintf(stderr, "\n");
}

static ss_status *shard_rank(shard_ctx *c, int rank, size_t *param_bytes)
{
    rank_ctx r = {.c = c, .rank = rank, .stage = rank / c->tp, .pos = rank % c->tp};
    snprintf(r.group, sizeof r.group, "stage%d", r.stage);
    char dir[PATH_MAX], path[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/device%d", c->stage_dir, rank);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return ss_errf(SS_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
    snprintf(path, sizeof path, "%s/%s.data", dir, c->model_base);
    size_t weights = 0;
    for (int i = 0; i < c->model->n_init; i++)
        weights += c->model->inits[i].tensor.nbytes;
    ss_status *st = rg_open_data(&r.g, path, weights >= (size_t)2 << 20);
    if (st) return st;
    char loc[PATH_MAX];
    snprintf(loc, sizeof loc, "%s.data", c->model_base);
    r.g.data_location = loc;
    r.ts = calloc((size_t)c->n_names + 1, sizeof *r.ts);
    if (!r.ts) {
        rg_free(&r.g);
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    for (int id = 0; id < c->n_names; id++)
        r.ts[id] = (tstate){c->names[id], L_REPL, 0};
    for (size_t i = 0; i < c->graph->n_input; i++)
        if (!ss_onnx_find_init(c->model, c->graph->input[i]->name) &&
            shard_stage_has_input(c, shard_name_find(c, c->graph->input[i]->name), r.stage))
            rg_add_input(&r.g, c->graph->input[i]);
    if (r.stage > 0) shard_emit_recvs(&r);
    whole_ops whole = {0};
    for (int i = 0; i < c->n_nodes && !st && !r.g.error; i++) {
        node_info *ni = &c->nodes[i];
        if (ni->constant || ni->stage != r.stage) continue;
        const Onnx__NodeProto *n = ni->node;
        split_kind s = S_NONE;
        if (shard_emit_vocab(&r, ni)) continue;
        if (!strcmp(n->op_type, "MatMul") || !strcmp(n->op_type, "Gemm"))
            st = matmul_split(&r, ni, &s);
        if (st) break;
        if (s != S_NONE)
            emit_matmul(&r, ni, s);
        else if (!(c->opt->mode == SS_SHARD_AUTO &&
                   (shard_emit_split_elementwise(&r, n) || shard_emit_split_structural(&r, n)))) {
            emit_plain(&r, n);
            if (!shard_is_elementwise(c, n)) whole_ops_add(&whole, n->op_type);
        }
    }
    whole_ops_report(c, &r, &whole);
    if (!st && r.stage < c->stages - 1) shard_emit_sends(&r);
    if (!st) emit_graph_io(&r);
    if (!st && r.g.error) st = r.g.error, r.g.error = NULL;
    if (!st && fflush(r.g.data) != 0)
        st = ss_errf(SS_ERR_IO, "writing %s.data: %s", c->model_base, strerror(errno));
    snprintf(path, sizeof path, "%s/%s.onnx", dir, c->model_base);
    if (!st) st = write_rank_model(&r, path);
    snprintf(path, sizeof path, "%s/group_config.json", dir);
    if (!st) st = write_group_config(c, &r, path);
    *param_bytes = r.g.param_bytes;
    free(r.ts);
    rg_free(&r.g);
    return st;
}

/* ------------------------------------------------------------------ config files */

/* cJSON's builders give NULL or false when an allocation fails and leave the field out. These
 * record that in *ok instead (freeing what was not attached), so that a config file is written
 * whole or not at all: never one with a field silently missing. */
static cJSON *jb_add(cJSON *parent, const char *key, cJSON *item, bool *ok)
{
    bool added =
        item && parent &&
        (key ? cJSON_AddItemToObject(parent, key, item) : cJSON_AddItemToArray(parent, item));
    if (added) return item;
    cJSON_Delete(item);
    *ok = false;
    return NULL;
}

static void jb_num(cJSON *parent, const char *key, double v, bool *ok)
{
    jb_add(parent, key, cJSON_CreateNumber(v), ok);
}

static void jb_str(cJSON *parent, const char *key, const char *v, bool *ok)
{
    jb_add(parent, key, cJSON_CreateString(v), ok);
}

static cJSON *int_array(const int *v, int n, bool *ok)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++)
        jb_num(a, NULL, v[i], ok);
    return a;
}

static cJSON *groups_json(const shard_ctx *c, bool *ok)
{
    cJSON *groups = cJSON_CreateObject();
    int *ranks = malloc(sizeof(int) * (size_t)c->rank_size);
    if (!ranks || !groups) {
        free(ranks);
        cJSON_Delete(groups);
        return NULL;
    }
    for (int i = 0; i < c->rank_size; i++)
        ranks[i] = i;
    jb_add(groups, "world", int_array(ranks, c->rank_size, ok), ok);
    for (int s = 0; s < c->stages; s++) {
        char name[32];
        snprintf(name, sizeof name, "stage%d", s);
        jb_add(groups, name, int_array(ranks + s * c->tp, c->tp, ok), ok);
    }
    free(ranks);
    return groups;
}

/* Writes root (and frees it), unless building it ran out of memory (!ok). */
static ss_status *write_json(cJSON *root, bool ok, const char *path)
{
    char *text = ok && root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return ss_errf(SS_ERR_NOMEM, "out of memory writing %s", path);
    FILE *f = fopen(path, "w");
    int written = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0) written = 0;
    free(text);
    return written ? NULL : ss_errf(SS_ERR_IO, "cannot write %s: %s", path, strerror(errno));
}

static ss_status *write_group_config(shard_ctx *c, const rank_ctx *r, const char *path)
{
    bool ok = true;
    cJSON *root = cJSON_CreateObject();
    jb_num(root, "rank", r->rank, &ok);
    jb_num(root, "rank_size", c->rank_size, &ok);
    jb_num(root, "stage", r->stage, &ok);
    jb_num(root, "stage_size", c->stages, &ok);
    jb_num(root, "position", r->pos, &ok);
    jb_num(root, "ranks_per_stage", c->tp, &ok);
    char model[PATH_MAX];
    snprintf(model, sizeof model, "%s.onnx", c->model_base);
    jb_str(root, "model", model, &ok);
    if (c->opt->weights != SS_WEIGHTS_F32)
        jb_str(root, "weights", ss_weights_name(c->opt->weights), &ok);
    jb_add(root, "groups", groups_json(c, &ok), &ok);
    int prev = r->rank - c->tp, next = r->rank + c->tp;
    jb_add(root, "recv_peers", int_array(&prev, r->stage > 0 ? 1 : 0, &ok), &ok);
    jb_add(root, "send_peers", int_array(&next, r->stage < c->stages - 1 ? 1 : 0, &ok), &ok);
    return write_json(root, ok, path);
}

static cJSON *io_json(const shard_ctx *c, Onnx__ValueInfoProto **vis, size_t n, bool inputs,
                      bool *ok)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < n; i++) {
        if (inputs && ss_onnx_find_init(c->model, vis[i]->name)) continue;
        ss_tensor d;
        cJSON *o = jb_add(arr, NULL, cJSON_CreateObject(), ok);
        jb_str(o, "name", vis[i]->name, ok);
        if (o && shard_value_desc(c, vis[i]->name, &d)) {
            jb_str(o, "dtype", ss_dtype_name(d.dtype), ok);
            cJSON *sh = jb_add(o, "shape", cJSON_CreateArray(), ok);
            for (int k = 0; sh && k < d.ndim; k++)
                jb_num(sh, NULL, (double)d.dims[k], ok);
        }
    }
    return arr;
}

/* ------------------------------------------------------------------ staging and publishing
 *
 * A run writes into its own folder inside --out (STAGE_DIR_NAME) and moves the split in only
 * when every rank is written, so a run that fails leaves --out as it was (an earlier split whole
 * and runnable) and nothing half-written. Runs on one --out are serialized by an flock on the
 * folder; a stage folder found under the lock was left by a run that was killed. */
#define STAGE_DIR_NAME ".shard-partial"

/* Calls fn(path, name, ctx) for each entry of the real folder dir (not a symlink; "." and ".."
 * skipped) until fn returns false; false when dir is not such a folder or fn stopped the walk. */
static bool walk_dir(const char *dir, bool (*fn)(const char *path, const char *name, void *ctx),
                     void *ctx)
{
    struct stat sb;
    DIR *d = lstat(dir, &sb) == 0 && S_ISDIR(sb.st_mode) ? opendir(dir) : NULL;
    bool all = d != NULL;
    for (struct dirent *e; all && (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char f[PATH_MAX + 260];
        snprintf(f, sizeof f, "%s/%s", dir, e->d_name);
        all = fn(f, e->d_name, ctx);
    }
    if (d) closedir(d);
    return all;
}

static bool is_regular(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static bool regular_entry(const char *path, const char *name, void *ctx)
{
    (void)name, (void)ctx;
    return is_regular(path);
}

/* A rank folder this tool wrote and may replace: a real folder (not a symlink) with a
 * group_config.json and nothing but regular files (no subfolder of the user's inside). */
static bool is_rank_dir(const char *dir)
{
    char cfg[PATH_MAX + 32];
    snprintf(cfg, sizeof cfg, "%s/group_config.json", dir);
    return is_regular(cfg) && walk_dir(dir, regular_entry, NULL);
}

static bool unlink_regular(const char *path, const char *name, void *ctx)
{
    (void)name, (void)ctx;
    if (is_regular(path)) unlink(path);
    return true;
}

/* A rank folder's regular files, then the folder (is_rank_dir's kind: never a symlink). */
static void remove_flat_dir(const char *dir)
{
    if (walk_dir(dir, unlink_regular, NULL)) rmdir(dir);
}

static bool unlink_staged(const char *path, const char *name, void *ctx)
{
    (void)ctx;
    if (!strncmp(name, "device", 6) || !strncmp(name, "old-device", 10))
        remove_flat_dir(path);
    else if (!strcmp(name, "manifest.json") || !strcmp(name, "old-manifest.json"))
        unlink(path);
    return true;
}

/* The stage folder and what a run puts there: device<r> folders and manifest.json, and while
 * publishing the earlier split's old-device<r> and old-manifest.json. Anything else stays, and
 * so does the folder then. */
static void remove_stage_dir(const char *stage_dir)
{
    if (walk_dir(stage_dir, unlink_staged, NULL)) rmdir(stage_dir);
}

/* Every path the run writes fits PATH_MAX, and --out is a folder or absent (before it is made). */
static ss_status *check_out_paths(const shard_ctx *c)
{
    const char *out = c->opt->out_dir;
    size_t base = strlen(c->model_base), longest = base + 6 > 18 ? base + 6 : 18;
    /* --out/.shard-partial/old-device<r>/<model>.onnx is the longest */
    if (strlen(out) + strlen(STAGE_DIR_NAME) + 32 + longest >= PATH_MAX)
        return ss_errf(SS_ERR_INVALID, "--out %.64s...: the path is too long for the files in it",
                       out);
    struct stat sb;
    if (stat(out, &sb) == 0 && !S_ISDIR(sb.st_mode))
        return ss_errf(SS_ERR_INVALID, "--out %s is not a folder", out);
    return NULL;
}

/* Under the lock, before any work: every deviceN the split will replace is a rank folder an
 * earlier split wrote (or absent), so a folder of the user's own there is refused, not emptied;
 * and the stage folder, if a run left one, holds only what a run writes. One whose publish was
 * interrupted holds the earlier split's folders (old-device<r>, old-manifest.json): it is left
 * for the user, never cleared. */
static ss_status *check_out_dir(const shard_ctx *c)
{
    const char *out = c->opt->out_dir;
    struct stat sb;
    for (int r = 0; r < c->rank_size; r++) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s/device%d", out, r);
        errno = 0;
        if (lstat(dir, &sb) == 0 && !is_rank_dir(dir))
            return errno == ENOMEM
                       ? ss_errf(SS_ERR_NOMEM, "out of memory reading %s", dir)
                       : ss_errf(
                             SS_ERR_INVALID,
                             "--out %s: device%d is there and is not a rank folder of an earlier "
                             "split (no group_config.json, a symlink, or with subfolders): move it "
                             "away first",
                             out, r);
    }
    if (lstat(c->stage_dir, &sb) != 0) return NULL;
    char old[PATH_MAX + 32];
    snprintf(old, sizeof old, "%s/old-manifest.json", c->stage_dir);
    if (!S_ISDIR(sb.st_mode))
        return ss_errf(SS_ERR_INVALID, "%s is not a folder this tool made: remove it",
                       c->stage_dir);
    if (access(old, F_OK) == 0)
        return ss_errf(SS_ERR_INVALID,
                       "%s is left by a run that stopped while moving its split in: its "
                       "old-device<r> and old-manifest.json are the earlier split; move them "
                       "back (device<r>, manifest.json) or remove the folder",
                       c->stage_dir);
    remove_stage_dir(c->stage_dir); /* left by a run that was killed while it wrote */
    if (lstat(c->stage_dir, &sb) == 0)
        return ss_errf(SS_ERR_INVALID,
                       "%s, left by an earlier run, holds files this tool did not write: "
                       "remove it",
                       c->stage_dir);
    return NULL;
}

/* Moves the finished split in: the old manifest out first (a folder without one is not a split),
 * each old deviceN aside into the stage folder and the new one in, then the manifest. A failure
 * on the way moves everything back, so --out holds the earlier split again. device<N> folders
 * from N = ranks on that an earlier split into more ranks left go at the end. */
static ss_status *publish_split(const char *out_dir, const char *stage_dir, int ranks,
                                bool progress)
{
    char from[PATH_MAX + 32], to[PATH_MAX + 32], aside[PATH_MAX + 32];
    char manifest[PATH_MAX + 32], old_manifest[PATH_MAX + 32];
    snprintf(manifest, sizeof manifest, "%s/manifest.json", out_dir);
    snprintf(old_manifest, sizeof old_manifest, "%s/old-manifest.json", stage_dir);
    bool had_manifest = rename(manifest, old_manifest) == 0;
    if (!had_manifest && errno != ENOENT)
        return ss_errf(SS_ERR_IO, "cannot replace %s: %s", manifest, strerror(errno));
    ss_status *st = NULL;
    int done = 0; /* ranks whose new folder is in place (their old one, if any, aside) */
    for (; done < ranks; done++) {
        snprintf(from, sizeof from, "%s/device%d", stage_dir, done);
        snprintf(to, sizeof to, "%s/device%d", out_dir, done);
        snprintf(aside, sizeof aside, "%s/old-device%d", stage_dir, done);
        struct stat sb;
        errno = 0;
        if (lstat(to, &sb) == 0 && !is_rank_dir(to)) { /* put there while the split was made */
            st = errno == ENOMEM
                     ? ss_errf(SS_ERR_NOMEM, "out of memory reading %s", to)
                     : ss_errf(SS_ERR_INVALID,
                               "%s appeared while the split was made and is not a rank folder: "
                               "--out is left as it was",
                               to);
            break;
        }
        if (rename(to, aside) != 0 && errno != ENOENT) {
            st = ss_errf(SS_ERR_IO, "cannot move %s aside: %s", to, strerror(errno));
            break;
        }
        if (rename(from, to) != 0) {
            st = ss_errf(SS_ERR_IO, "cannot move %s to %s: %s", from, to, strerror(errno));
            rename(aside, to); /* this rank's old folder back, if it had one */
            break;
        }
    }
    snprintf(from, sizeof from, "%s/manifest.json", stage_dir);
    if (!st && rename(from, manifest) != 0)
        st = ss_errf(SS_ERR_IO, "cannot move %s to %s: %s", from, manifest, strerror(errno));
    if (st) { /* back as it was: the ranks moved so far out again, their old folders in */
        for (int r = done - 1; r >= 0; r--) {
            snprintf(to, sizeof to, "%s/device%d", out_dir, r);
            snprintf(from, sizeof from, "%s/device%d", stage_dir, r);
            snprintf(aside, sizeof aside, "%s/old-device%d", stage_dir, r);
            rename(to, from);
            rename(aside, to);
        }
        if (had_manifest) rename(old_manifest, manifest);
        return st;
    }
    for (int r = ranks;; r++) {
        snprintf(to, sizeof to, "%s/device%d", out_dir, r);
        if (!is_rank_dir(to)) break;
        remove_flat_dir(to);
        if (access(to, F_OK) != 0 && progress)
            fprintf(stderr, "shard: removed %s, left by an earlier split into more ranks\n", to);
    }
    /* the old folders and manifest in the stage folder go with it; the old manifest, the mark
     * of a publish under way, goes first: should removing the rest fail (out of memory walking
     * the folder), the next run clears it as a stale stage folder instead of refusing it */
    unlink(old_manifest);
    return NULL;
}

/* Holds --out for this run (an flock on the folder, released when the process ends or the fd is
 * closed): another run on the same --out is refused, and a stage folder found now is stale. */
static ss_status *lock_out_dir(const char *out, int *fd)
{
    *fd = open(out, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (*fd < 0) return ss_errf(SS_ERR_IO, "cannot open --out %s: %s", out, strerror(errno));
    if (flock(*fd, LOCK_EX | LOCK_NB) == 0) return NULL;
    ss_status *st = errno == EWOULDBLOCK
                        ? ss_errf(SS_ERR_UNAVAILABLE,
                                  "--out %s: another 'shardserve shard' is writing there", out)
                        : ss_errf(SS_ERR_IO, "cannot lock --out %s: %s", out, strerror(errno));
    close(*fd);
    *fd = -1;
    return st;
}

static ss_status *write_manifest(shard_ctx *c, const size_t *param_bytes)
{
    static const char *modes[] = {"none", "auto", "file"};
    bool ok = true;
    cJSON *root = cJSON_CreateObject();
    jb_str(root, "source", c->opt->model_path, &ok);
    char model[PATH_MAX];
    snprintf(model, sizeof model, "%s.onnx", c->model_base);
    jb_str(root, "model", model, &ok);
    jb_num(root, "rank_size", c->rank_size, &ok);
    jb_num(root, "stage_size", c->stages, &ok);
    jb_num(root, "ranks_per_stage", c->tp, &ok);
    jb_str(root, "strategy", modes[c->opt->mode], &ok);
    jb_add(root, "inputs", io_json(c, c->graph->input, c->graph->n_input, true, &ok), &ok);
    jb_add(root, "outputs", io_json(c, c->graph->output, c->graph->n_output, false, &ok), &ok);
    cJSON *ranks = jb_add(root, "ranks", cJSON_CreateArray(), &ok);
    for (int r = 0; ranks && r < c->rank_size; r++) {
        cJSON *o = jb_add(ranks, NULL, cJSON_CreateObject(), &ok);
        char buf[PATH_MAX];
        jb_num(o, "rank", r, &ok);
        jb_num(o, "stage", r / c->tp, &ok);
        jb_num(o, "position", r % c->tp, &ok);
        snprintf(buf, sizeof buf, "device%d/%s.onnx", r, c->model_base);
        jb_str(o, "model", buf, &ok);
        snprintf(buf, sizeof buf, "device%d/group_config.json", r);
        jb_str(o, "group_config", buf, &ok);
        jb_num(o, "param_bytes", (double)param_bytes[r], &ok);
    }
    cJSON *stages = jb_add(root, "stages", cJSON_CreateArray(), &ok);
    for (int s = 0; stages && s < c->stages; s++) {
        int nodes = 0;
        double params = 0, flops = 0;
        for (int i = 0; i < c->n_nodes; i++)
            if (!c->nodes[i].constant && c->nodes[i].stage == s)
                nodes++, params += c->nodes[i].params, flops += c->nodes[i].flops;
        cJSON *o = jb_add(stages, NULL, cJSON_CreateObject(), &ok);
        jb_num(o, "stage", s, &ok);
        jb_num(o, "nodes", nodes, &ok);
        jb_num(o, "param_bytes", params, &ok);
        jb_num(o, "flops", flops, &ok);
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/manifest.json", c->stage_dir);
    return write_json(root, ok, path);
}

/* ------------------------------------------------------------------ driver */

/* A value for a dynamic dim in planning pass 0 or 1: distinct per dim name and per pass (so a
 * value computed from dims differs between the passes), >= 2 (no broadcasting by accident). A dim
 * named "A + B" (HF optimum's attention mask, "past_sequence_length + sequence_length") is the sum
 * of A and B. */
int64_t shard_plan_dim(const shard_ctx *c, const char *name, int pass)
{
    const char *plus = name ? strstr(name, " + ") : NULL;
    if (plus) {
        char left[128];
        snprintf(left, sizeof left, "%.*s", (int)(plus - name), name);
        return shard_plan_dim(c, left, pass) + shard_plan_dim(c, plus + 3, pass);
    }
    int k = 0; /* index of the name among the inputs' dim names, in order of appearance */
    for (int i = 0; i < ss_session_num_inputs(c->session) && name; i++) {
        const ss_onnx_value_info *vi = ss_session_input(c->session, i);
        for (int d = 0; d < vi->ndim; d++) {
            if (!vi->dim_names[d] || vi->dims[d] >= 0) continue;
            if (!strcmp(vi->dim_names[d], name)) return pass ? 5 + 2 * k : 3 + k;
            k++;
        }
    }
    return pass ? 5 + 2 * k : 3 + k;
}

/* Planning shapes: --input-shape where given, else each dynamic dim from plan_dim. */
static ss_status *input_descs(shard_ctx *c, ss_tensor *descs, int pass)
{
    for (int j = 0; j < c->opt->n_input_shapes; j++) { /* each names an input of the model */
        const char *spec = c->opt->input_shapes[j], *eq = strchr(spec, '=');
        bool known = false;
        for (int i = 0; eq && i < ss_session_num_inputs(c->session) && !known; i++) {
            const char *name = ss_session_input(c->session, i)->name;
            known =
                strlen(name) == (size_t)(eq - spec) && !strncmp(spec, name, (size_t)(eq - spec));
        }
        if (!known)
            return ss_errf(SS_ERR_INVALID,
                           "--input-shape %s: the model has no input '%.*s' (NAME=D0,D1,...)", spec,
                           eq ? (int)(eq - spec) : (int)strlen(spec), spec);
    }
    for (int i = 0; i < ss_session_num_inputs(c->session); i++) {
        const ss_onnx_value_info *vi = ss_session_input(c->session, i);
        ss_tensor *d = &descs[i];
        memset(d, 0, sizeof *d);
        d->dtype = vi->dtype;
        d->ndim = vi->ndim < 0 ? 0 : vi->ndim;
        bool dynamic = vi->ndim < 0, named = false, given = false;
        for (int k = 0; k < d->ndim; k++)
            if ((d->dims[k] = vi->dims[k]) < 0 && vi->dim_names[k])
                d->dims[k] = shard_plan_dim(c, vi->dim_names[k], pass), named = true;
            else
                dynamic |= d->dims[k] < 0;
        for (int j = 0; j < c->opt->n_input_shapes; j++) {
            const char *spec = c->opt->input_shapes[j];
            size_t nl = strlen(vi->name);
            if (strncmp(spec, vi->name, nl) || spec[nl] != '=') continue;
            d->ndim = 0;
            for (const char *p = spec + nl + 1; *p && d->ndim < SS_MAX_DIMS;) {
                char *end;
                long long v = strtoll(p, &end, 10);
                if (end == p || v < 0)
                    return ss_errf(SS_ERR_INVALID,
                                   "--input-shape %s: dims are comma-separated numbers", spec);
                d->dims[d->ndim++] = v;
                p = *end == ',' ? end + 1 : end;
                if (*end && *end != ',')
                    return ss_errf(SS_ERR_INVALID, "--input-shape %s: bad dim list", spec);
            }
            dynamic = false, given = true;
        }
        if (named && !given && !c->dynamic) c->dynamic = true, c->dynamic_input = vi->name;
        if (dynamic)
            return ss_errf(
                SS_ERR_INVALID,
                "input '%s' has dynamic dims; give its shape with --input-shape %s=D0,D1,...",
                vi->name, vi->name);
    }
    return NULL;
}

/* A graph input that a Concat joins into a graph output is state carried between calls (the KV
 * cache, past -> present): it may stay split on the ranks, each keeping its own heads. */
static void mark_state_inputs(shard_ctx *c)
{
    for (int i = 0; i < c->n_nodes; i++) {
        const Onnx__NodeProto *n = c->nodes[i].node;
        if (strcmp(n->op_type, "Concat") || n->n_output != 1) continue;
        int out = shard_name_find(c, n->output[0]);
        if (out < 0 || !c->is_output[out]) continue;
        for (size_t j = 0; j < n->n_input; j++) {
            int id = n->input[j][0] ? shard_name_find(c, n->input[j]) : -1;
            if (id >= 0 && c->producer[id] < 0 && !ss_onnx_find_init(c->model, n->input[j]))
                c->is_state[id] = true, c->state_concat[id] = c->state_concat[out] = i;
        }
    }
}

static uint64_t plan_value_hash(const shard_ctx *c, const char *name)
{
    ss_tensor d;
    if (!name[0] || !ss_session_value_desc(c->session, name, &d) || !d.data) return 0;
    uint64_t h = 1469598103934665603ull ^ (uint64_t)d.ndim;
    for (int k = 0; k < d.ndim; k++)
        h = (h ^ (uint64_t)d.dims[k]) * 1099511628211ull;
    for (size_t i = 0; i < d.nbytes; i++)
        h = (h ^ ((const unsigned char *)d.data)[i]) * 1099511628211ull;
    return h | 1; /* never 0, which means "not known" */
}

/* The model to split, rewritten for the KV block pool first with --kv-pool. */
static ss_status *shard_open(const ss_shard_options *opt, ss_session **out)
{
    const ss_session_options plan_only = {.plan_only = true};
    if (!opt->kv_pool) return ss_session_create(opt->model_path, &plan_only, out);
    ss_onnx_model *m = NULL;
    int layers = 0;
    ss_status *st = ss_onnx_load(opt->model_path, &m);
    if (!st) st = ss_shard_kvpool_rewrite(m, &layers);
    if (st) {
        ss_onnx_free(m);
        return ss_status_wrap(st, "%s", opt->model_path);
    }
    if (opt->progress)
        fprintf(stderr, "shard: --kv-pool: %d attention layers read the KV block pool\n", layers);
    return ss_session_create_from_model(m, &plan_only, out);
}

/* Plans with concrete shapes; with dynamic dims twice (pass 0, then pass 1 stays current), keeping
 * pass 0's value hashes so that analyse() can tell constants from values of the dims. */
static ss_status *record_first_plan(shard_ctx *c)
{
    size_t n_out = 0, k = 0;
    for (size_t i = 0; i < c->graph->n_node; i++)
        n_out += c->graph->node[i]->n_output;
    c->plan_hash = calloc(n_out + 1, sizeof *c->plan_hash);
    c->plan_shape0 = calloc(n_out + 1, sizeof *c->plan_shape0);
    if (!c->plan_hash || !c->plan_shape0) return ss_errf(SS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < c->graph->n_node; i++)
        for (size_t j = 0; j < c->graph->node[i]->n_output; j++, k++) {
            ss_tensor d;
            const char *name = c->graph->node[i]->output[j];
            c->plan_hash[k] = plan_value_hash(c, name);
            if (name[0] && ss_session_value_desc(c->session, name, &d)) {
                plan_shape *ps = &c->plan_shape0[k];
                ps->ndim = d.ndim;
                memcpy(ps->dims, d.dims, sizeof d.dims);
                if (d.data && d.dtype == SS_DT_INT64 && ss_tensor_numel(&d) <= SS_MAX_DIMS) {
                    ps->n_vals = (int)ss_tensor_numel(&d);
                    memcpy(ps->vals, d.data, sizeof(int64_t) * (size_t)ps->n_vals);
                }
            }
        }
    return NULL;
}

static ss_status *plan_twice(shard_ctx *c, ss_tensor *descs)
{
    int n_in = ss_session_num_inputs(c->session);
    ss_status *st = input_descs(c, descs, 0);
    if (!st) st = ss_session_plan_shapes(c->session, descs, n_in);
    if (!st && c->dynamic) st = record_first_plan(c);
    if (!st && c->dynamic) st = input_descs(c, descs, 1);
    if (!st && c->dynamic) st = ss_session_plan_shapes(c->session, descs, n_in);
    if (st && c->dynamic) /* the values tried for the dims may not suit the model */
        st = ss_status_wrap(st,
                            "planning with sample values for the dynamic dims of '%s' (give "
                            "concrete shapes with --input-shape)",
                            c->dynamic_input);
    return st;
}

static ss_status *analyse(shard_ctx *c)
{
    const Onnx__GraphProto *g = c->graph;
    size_t cap = g->n_initializer + g->n_input + 1;
    for (size_t i = 0; i < g->n_node; i++)
        cap += g->node[i]->n_output;
    c->hash_cap = 16;
    while ((size_t)c->hash_cap < cap * 2)
        c->hash_cap *= 2;
    c->hash = malloc(sizeof(int) * (size_t)c->hash_cap);
    c->names = calloc(cap, sizeof(char *));
    c->producer = malloc(sizeof(int) * cap);
    c->last_stage = malloc(sizeof(int) * cap);
    c->is_output = calloc(cap, sizeof(bool));
    c->is_state = calloc(cap, sizeof(bool));
    c->state_concat = malloc(sizeof(int) * cap);
    c->shape0 = calloc(cap, sizeof *c->shape0);
    c->varies = calloc(cap, sizeof(bool));
    c->nodes = calloc(g->n_node + 1, sizeof *c->nodes);
    unsigned char *seen = calloc(cap, 1);
    if (!c->hash || !c->names || !c->producer || !c->last_stage || !c->is_output || !c->nodes ||
        !seen || !c->is_state || !c->varies || !c->state_concat || !c->shape0) {
        free(seen);
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    memset(c->hash, 0xff, sizeof(int) * (size_t)c->hash_cap);
    for (size_t i = 0; i < cap; i++)
        c->producer[i] = -1, c->last_stage[i] = -1, c->state_concat[i] = -1;
    for (size_t i = 0; i < g->n_input; i++)
        name_add(c, g->input[i]->name);
    for (size_t i = 0; i < g->n_initializer; i++)
        name_add(c, g->initializer[i]->name);
    c->n_nodes = (int)g->n_node;
    size_t flat = 0; /* index of the node output in plan_hash */
    for (int i = 0; i < c->n_nodes; i++) {
        const Onnx__NodeProto *n = g->node[i];
        c->nodes[i].node = n;
        for (size_t j = 0; j < n->n_input; j++)
            if (n->input[j][0] && shard_name_find(c, n->input[j]) < 0) {
                free(seen);
                return ss_errf(SS_ERR_INVALID,
                               "node '%s' uses '%s' before it is produced: the shard tool needs "
                               "nodes in topological order, as the ONNX spec requires",
                               n->name, n->input[j]);
            }
        for (size_t j = 0; j < n->n_output; j++, flat++) {
            if (!n->output[j][0]) continue;
            int id = name_add(c, n->output[j]);
            c->producer[id] = i;
            if (c->plan_hash) {
                c->varies[id] = c->plan_hash[flat] != plan_value_hash(c, n->output[j]);
                c->shape0[id] = c->plan_shape0[flat];
            }
        }
        c->nodes[i].constant = node_is_constant(c, n);
        node_cost(c, &c->nodes[i], seen);
    }
    free(seen);
    for (size_t i = 0; i < g->n_output; i++) {
        int id = shard_name_find(c, g->output[i]->name);
        if (id >= 0) c->is_output[id] = true;
    }
    mark_state_inputs(c);
    return NULL;
}

typedef struct {
    shard_ctx *c;
    int stage;
} use_ctx;

static void note_use(void *arg, const char *name)
{
    use_ctx *u = arg;
    int id = name[0] ? shard_name_find(u->c, name) : -1;
    if (id >= 0 && u->c->last_stage[id] < u->stage) u->c->last_stage[id] = u->stage;
}

/* The last stage reading each value, subgraph reads included (they cross stage cuts too). */
static void note_uses(shard_ctx *c)
{
    for (int i = 0; i < c->n_nodes; i++) {
        if (c->nodes[i].constant) continue;
        const Onnx__NodeProto *n = c->nodes[i].node;
        use_ctx u = {c, c->nodes[i].stage};
        for (size_t j = 0; j < n->n_input; j++)
            note_use(&u, n->input[j]);
        subgraph_reads(n, note_use, &u, 0);
    }
}

/* Bytes crossing a cut after node i, for every i: the values made at or before i (graph inputs
 * too, unless every stage is given them) and read after it, or that must reach the last stage. */
static ss_status *cut_bytes(shard_ctx *c, double *bytes)
{
    int *last_use = malloc(sizeof(int) * (size_t)(c->n_names + 1));
    if (!last_use) return ss_errf(SS_ERR_NOMEM, "out of memory");
    for (int i = 0; i < c->n_nodes; i++) /* note_uses records node indices as "stages" */
        c->nodes[i].stage = i;
    note_uses(c);
    memcpy(last_use, c->last_stage, sizeof(int) * (size_t)c->n_names);
    for (int id = 0; id < c->n_names; id++)
        c->last_stage[id] = -1;
    double *diff = calloc((size_t)c->n_nodes + 1, sizeof *diff);
    if (!diff) return free(last_use), ss_errf(SS_ERR_NOMEM, "out of memory");
    for (int id = 0; id < c->n_names; id++) {
        ss_tensor d;
        int made = c->producer[id] < 0 ? 0 : c->producer[id], used = last_use[id];
        if (c->is_output[id] && !(c->dynamic && c->state_concat[id] >= 0)) used = c->n_nodes;
        if ((c->producer[id] < 0 && c->dynamic) || used <= made ||
            !shard_value_desc(c, c->names[id], &d) || d.data)
            continue;
        diff[made] += (double)ss_tensor_numel(&d) * (double)ss_dtype_size(d.dtype);
        diff[used] -= (double)ss_tensor_numel(&d) * (double)ss_dtype_size(d.dtype);
    }
    for (int i = 0; i < c->n_nodes; i++)
        bytes[i] = (i ? bytes[i - 1] : 0) + diff[i];
    free(diff);
    free(last_use);
    return NULL;
}

/* Stages balanced by cost alone may cut through the middle of a layer, where several tensors are
 * alive; each cut slides, within a tenth of a stage's share of the cost, to where the fewest bytes
 * cross (a layer boundary: one hidden state), keeping every stage non-empty. */
static ss_status *slide_cuts(shard_ctx *c)
{
    double *bytes = calloc((size_t)c->n_nodes + 1, sizeof *bytes);
    double *pre = calloc((size_t)c->n_nodes + 1, sizeof *pre);
    int *live = malloc(sizeof(int) * (size_t)(c->n_nodes + 1));
    int *cut = malloc(sizeof(int) * (size_t)(c->stages + 1));
    ss_status *st =
        bytes && pre && live && cut ? cut_bytes(c, bytes) : ss_errf(SS_ERR_NOMEM, "out of memory");
    int n_live = 0;
    double acc = 0;
    if (!st) assign_stages(c); /* by cost: the starting cuts */
    for (int i = 0; i < c->n_nodes && !st; i++)
        if (!c->nodes[i].constant) {
            pre[n_live] = acc += node_share(c, &c->nodes[i]);
            if (n_live > 0 && c->nodes[i].stage != c->nodes[live[n_live - 1]].stage)
                cut[c->nodes[live[n_live - 1]].stage] = n_live - 1;
            live[n_live++] = i;
        }
    for (int s = 0; s < c->stages - 1 && !st; s++) {
        int lo = s ? cut[s - 1] + 1 : 0, hi = (s + 1 < c->stages - 1 ? cut[s + 1] : n_live - 1) - 1;
        int best = cut[s];
        for (int k = lo; k <= hi; k++)
            if (fabs(pre[k] - pre[cut[s]]) <= acc / c->stages / 10 &&
                bytes[live[k]] < bytes[live[best]])
                best = k;
        cut[s] = best;
        c->nodes[live[best]].cut_after = true;
    }
    c->have_cuts = !st;
    free(bytes), free(pre), free(live), free(cut);
    return st;
}

static void shard_ctx_free(shard_ctx *c)
{
    free(c->hash);
    free(c->names);
    free(c->producer);
    free(c->last_stage);
    free(c->is_output);
    free(c->is_state);
    free(c->state_concat);
    free(c->shape0);
    free(c->plan_shape0);
    free(c->varies);
    free(c->plan_hash);
    free(c->nodes);
    free(c->model_base);
    ss_session_free(c->session);
}

/* The split itself, into c->stage_dir: every rank's folder and the manifest. */
static ss_status *shard_split(shard_ctx *c)
{
    const ss_shard_options *opt = c->opt;
    c->model = ss_session_model(c->session);
    c->graph = c->model->proto->graph;
    ss_tensor descs[64];
    ss_status *st = NULL;
    if (ss_session_num_inputs(c->session) > 64) st = ss_errf(SS_ERR_LIMIT, "more than 64 inputs");
    if (!st) st = plan_twice(c, descs);
    if (!st) st = analyse(c);
    if (!st && opt->mode == SS_SHARD_FILE) st = parse_strategy(c);
    if (!st) {
        int live = 0;
        for (int i = 0; i < c->n_nodes; i++)
            live += !c->nodes[i].constant;
        if (live < c->stages)
            st = ss_errf(SS_ERR_INVALID, "the model has %d computing nodes, fewer than --stages %d",
                         live, c->stages);
    }
    size_t *param_bytes = calloc((size_t)c->rank_size, sizeof(size_t));
    if (!st && !param_bytes) st = ss_errf(SS_ERR_NOMEM, "out of memory");
    if (!st && c->stages > 1) st = slide_cuts(c);
    if (!st) {
        assign_stages(c);
        note_uses(c);
        shard_vocab_analyse(c);
    }
    for (int r = 0; r < c->rank_size && !st; r++) {
        st = shard_rank(c, r, &param_bytes[r]);
        if (!st && opt->progress)
            fprintf(stderr, "shard: rank %d/%d (stage %d) written, %.1f MB of weights\n", r + 1,
                    c->rank_size, r / c->tp, (double)param_bytes[r] / 1e6);
    }
    if (!st) st = write_manifest(c, param_bytes);
    free(param_bytes);
    return st;
}

ss_status *ss_shard_model(const ss_shard_options *opt)
{
    shard_ctx c = {.opt = opt, .rank_size = opt->rank_size, .stages = opt->stage_size};
    if (c.stages < 1 || c.rank_size < 1 || c.rank_size % c.stages)
        return ss_errf(SS_ERR_INVALID, "--ranks %d must be a positive multiple of --stages %d",
                       c.rank_size, c.stages);
    c.tp = c.rank_size / c.stages;
    const char *base = strrchr(opt->model_path, '/');
    c.model_base = strdup(base ? base + 1 : opt->model_path);
    if (!c.model_base) return ss_errf(SS_ERR_NOMEM, "out of memory");
    char *dot = strrchr(c.model_base, '.');
    if (dot && !strcmp(dot, ".onnx")) *dot = 0;
    ss_status *st = check_out_paths(&c); /* the stage folder's name fits too */
    snprintf(c.stage_dir, sizeof c.stage_dir, "%s/" STAGE_DIR_NAME, opt->out_dir);
    bool made_out = false;
    int lock = -1;
    if (!st) {
        made_out = mkdir(opt->out_dir, 0755) == 0;
        if (!made_out && errno != EEXIST)
            st = ss_errf(SS_ERR_IO, "cannot create --out %s: %s", opt->out_dir, strerror(errno));
    }
    if (!st) st = lock_out_dir(opt->out_dir, &lock);
    if (!st) st = check_out_dir(&c);
    if (!st) st = shard_open(opt, &c.session);
    bool stage_made = !st && mkdir(c.stage_dir, 0755) == 0;
    if (!st && !stage_made)
        st = ss_errf(SS_ERR_IO, "cannot create %s: %s", c.stage_dir, strerror(errno));
    if (!st) st = shard_split(&c);
    if (!st) st = publish_split(opt->out_dir, c.stage_dir, c.rank_size, opt->progress);
    if (lock >= 0 && stage_made) remove_stage_dir(c.stage_dir); /* the old split, else ours */
    if (st && made_out) rmdir(opt->out_dir);
    if (lock >= 0) close(lock);
    shard_ctx_free(&c);
    return st;
}
