/*
 * Pipeline stages: which values cross a cut (sent by Send from (stage, position) to
 * (stage + 1, position)), and which graph inputs and outputs each stage declares. With dynamic
 * dims every stage is given the inputs and keeps its own layers' KV cache; what it receives gets
 * its shape from those inputs, and shape plumbing is rebuilt there rather than sent.
 */
#include "shard_internal.h"

#include <string.h>

/* Values alive across the cut after `stage`: produced at or before it (or graph inputs), used
 * after. */
static bool crosses_cut(const shard_ctx *c, int id, int stage)
{
    int p = c->producer[id];
    ss_tensor d;
    if (shard_value_desc(c, c->names[id], &d) && d.data)
        return false;                      /* constants are local everywhere */
    if (c->dynamic && p < 0) return false; /* every stage is given the inputs */
    int made = p < 0 ? 0 : c->nodes[p].stage;
    int used = c->last_stage[id];
    if (c->is_output[id] && !(c->dynamic && c->state_concat[id] >= 0)) used = c->stages - 1;
    return made <= stage && used > stage;
}

/* With dynamic dims every stage is given the graph inputs itself (token ids, positions and mask
 * are small, and a generative step reaches every rank anyway) and keeps the KV cache of its own
 * layers; a Recv's shape is then computed from them. With static shapes stage 0 gets the inputs and
 * forwards what later stages need. */
bool shard_stage_has_input(const shard_ctx *c, int id, int stage)
{
    if (!c->dynamic) return stage == 0;
    return c->is_state[id] ? c->nodes[c->state_concat[id]].stage == stage : true;
}

bool shard_stage_has_output(const shard_ctx *c, int id, int stage)
{
    if (c->dynamic && c->state_concat[id] >= 0 && c->producer[id] >= 0)
        return c->nodes[c->producer[id]].stage == stage;
    return stage == c->stages - 1;
}

/* A size that was d0 in the first plan and d1 in the current one, rebuilt on this stage as a
 * 1-element int64 named after value `id` and k: a constant when both plans agree, else the dim of
 * one of this stage's inputs that took the same two values (the same named dim); NULL when there
 * is none. */
static bool input_dim_for(const shard_ctx *c, int stage, int64_t d0, int64_t d1, const char **input,
                          int64_t *axis)
{
    for (int i = 0; i < ss_session_num_inputs(c->session); i++) {
        const ss_onnx_value_info *vi = ss_session_input(c->session, i);
        if (!shard_stage_has_input(c, shard_name_find(c, vi->name), stage)) continue;
        for (int j = 0; j < vi->ndim; j++) {
            const char *dn = vi->dims[j] < 0 ? vi->dim_names[j] : NULL;
            if (dn && shard_plan_dim(c, dn, 0) == d0 && shard_plan_dim(c, dn, 1) == d1)
                return *input = vi->name, *axis = j, true;
        }
    }
    return false;
}

static const char *stage_size_value(rank_ctx *r, int id, int k, int64_t d0, int64_t d1)
{
    shard_ctx *c = r->c;
    const char *out = rg_printf(&r->g, "%s__recv_dim%d", c->names[id], k), *input;
    int64_t j;
    if (d0 == d1) return rg_init_i64(&r->g, out, &d1, 1), out;
    if (!input_dim_for(c, r->stage, d0, d1, &input, &j)) return NULL;
    const char *shape = rg_printf(&r->g, "%s__recv_src%d", c->names[id], k);
    const char *index = rg_printf(&r->g, "__index%lld", (long long)j);
    rg_init_i64(&r->g, index, &j, 1);
    rg_node(&r->g, "Shape", NULL, 1, &input, 1, &shape);
    rg_node(&r->g, "Gather", NULL, 2, (const char *[]){shape, index}, 1, &out);
    return out;
}

/* Is value `id` shape plumbing (a small int64 known at plan time that depends on the dynamic dims)
 * whose every element `stage` can rebuild from its own inputs? Sender and receiver both ask, so
 * they agree on what travels. */
static bool rebuildable(const shard_ctx *c, int id, int stage, ss_tensor *d)
{
    const plan_shape *ps = &c->shape0[id];
    if (!c->dynamic || !ss_session_value_desc(c->session, c->names[id], d) || !d->data ||
        d->dtype != SS_DT_INT64 || d->ndim > 1 || ss_tensor_numel(d) != ps->n_vals || !ps->n_vals)
        return false;
    const char *input;
    int64_t axis;
    for (int k = 0; k < ps->n_vals; k++) {
        int64_t d1 = ((const int64_t *)d->data)[k];
        if (ps->vals[k] != d1 && !input_dim_for(c, stage, ps->vals[k], d1, &input, &axis))
            return false;
    }
    return true;
}

/* The shape input of a Recv of value `id` when dims are dynamic (NULL: static, use the attribute).
 */
static const char *recv_shape(rank_ctx *r, int id, const ss_tensor *d)
{
    if (!r->c->dynamic || d->ndim == 0) return NULL;
    const char *dims[SS_MAX_DIMS];
    for (int k = 0; k < d->ndim; k++)
        if (!(dims[k] = stage_size_value(r, id, k, r->c->shape0[id].dims[k], d->dims[k]))) {
            if (!r->g.error)
                r->g.error = ss_errf(SS_ERR_UNSUPPORTED,
                                     "'%s' crosses into stage %d, but its dim %d follows no dim of "
                                     "the stage's inputs: cut elsewhere or give --input-shape",
                                     r->c->names[id], r->stage, k);
            return NULL;
        }
    const char *shape = rg_printf(&r->g, "%s__recv_shape", r->c->names[id]);
    Onnx__NodeProto *n = rg_node(&r->g, "Concat", NULL, d->ndim, dims, 1, &shape);
    rg_attr_int(&r->g, n, "axis", 0);
    return shape;
}

/* Shape plumbing crossing a cut (a batch or sequence size an earlier stage read from a Shape) is
 * rebuilt from this stage's own inputs instead of received: a received value is only known when
 * the step runs, too late for the Reshapes this stage plans with it. */
static bool rebuild_sizes(rank_ctx *r, int id)
{
    shard_ctx *c = r->c;
    ss_tensor d;
    const plan_shape *ps = &c->shape0[id];
    if (!rebuildable(c, id, r->stage, &d)) return false;
    const char *pieces[SS_MAX_DIMS];
    for (int k = 0; k < ps->n_vals; k++)
        if (!(pieces[k] = stage_size_value(r, id, k, ps->vals[k], ((const int64_t *)d.data)[k])))
            return false;
    const char *joined = rg_printf(&r->g, "%s__rebuilt", c->names[id]), *out = c->names[id];
    const char *shape = rg_printf(&r->g, "%s__rebuilt_shape", c->names[id]);
    Onnx__NodeProto *n = rg_node(&r->g, "Concat", NULL, ps->n_vals, pieces, 1, &joined);
    rg_attr_int(&r->g, n, "axis", 0);
    rg_init_i64(&r->g, shape, d.dims, d.ndim); /* [] for a scalar */
    rg_node(&r->g, "Reshape", NULL, 2, (const char *[]){joined, shape}, 1, &out);
    r->ts[id] = (tstate){out, L_REPL, 0, 1};
    return true;
}

void shard_emit_recvs(rank_ctx *r)
{
    shard_ctx *c = r->c;
    int peer = (r->stage - 1) * c->tp + r->pos;
    for (int id = 0; id < c->n_names; id++) {
        if (!crosses_cut(c, id, r->stage - 1) || rebuild_sizes(r, id)) continue;
        ss_tensor d;
        shard_value_desc(c, c->names[id], &d);
        const char *out = c->names[id], *shape = recv_shape(r, id, &d);
        Onnx__NodeProto *n =
            rg_node(&r->g, "Recv", SS_DOMAIN_COLLECTIVE, shape ? 1 : 0, &shape, 1, &out);
        rg_attr_int(&r->g, n, "peer", peer);
        rg_attr_int(&r->g, n, "dtype", d.dtype);
        rg_attr_ints(&r->g, n, "shape", d.dims, d.ndim);
        rg_attr_string(&r->g, n, "group", "world");
        r->ts[id] = (tstate){out, L_REPL, 0};
    }
}

void shard_emit_sends(rank_ctx *r)
{
    shard_ctx *c = r->c;
    int peer = (r->stage + 1) * c->tp + r->pos;
    for (int id = 0; id < c->n_names; id++) {
        ss_tensor d;
        if (!crosses_cut(c, id, r->stage) || rebuildable(c, id, r->stage + 1, &d)) continue;
        const char *local = shard_materialize(r, c->names[id]);
        Onnx__NodeProto *n = rg_node(&r->g, "Send", SS_DOMAIN_COLLECTIVE, 1, &local, 0, NULL);
        rg_attr_int(&r->g, n, "peer", peer);
        rg_attr_string(&r->g, n, "group", "world");
    }
}
