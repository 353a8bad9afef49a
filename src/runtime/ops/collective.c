/*
 * Collective ops of the ai.shardserve domain, inserted by the shard tool. Each calls out through
 * the ss_collectives table the session was created with (the agent wires it to its communicator),
 * so the runtime itself knows nothing of shared memory or MPI.
 *   AllReduce(x) -> y                 sum over `group`
 *   AllGather(x) -> y                 concat along `axis` in group order
 *   Broadcast(x) -> y                 from world rank `root` of `group`
 *   Send(x)                           to world rank `peer`
 *   Recv([shape]) -> y                from world rank `peer`, of `dtype` and `shape` (the
 *                                     attribute, or input 0: int64 dims the receiver computes
 *                                     at plan time from its own inputs when dims are dynamic)
 * None is ever folded at plan time (SS_OPF_NO_FOLD): they are communication, not arithmetic.
 */
#include "common.h"

#include <stdlib.h>
#include <string.h>

#define GROUP_MAX 64

typedef struct {
    char group[GROUP_MAX];
    int64_t axis_or_peer;
} coll_state;

static ss_status *coll_prepare(ss_kctx *k, coll_state **out)
{
    if (!k->coll) return ss_op_err(k, SS_ERR_INVALID, "collective op without a communicator");
    coll_state *cs = ss_op_state_alloc(k, sizeof *cs);
    if (!cs) return ss_op_oom();
    if (!ss_onnx_attr_string(k->node, "group", cs->group, sizeof cs->group))
        strcpy(cs->group, "world");
    if (k->coll->group_size(k->coll->ctx, cs->group) < 1)
        return ss_op_err(k, SS_ERR_INVALID, "group '%s' is not in this rank's group config",
                         cs->group);
    *out = cs;
    return NULL;
}

static ss_status *allreduce_infer(ss_kctx *k)
{
    coll_state *cs;
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = coll_prepare(k, &cs);
    if (st) return st;
    ss_dtype dt = k->in[0]->dtype;
    if (dt != SS_DT_FLOAT32 && dt != SS_DT_FLOAT16 && dt != SS_DT_INT32 && dt != SS_DT_INT64)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "allreduce of %s", ss_dtype_name(dt));
    ss_op_same_shape(k->out[0], k->in[0]);
    return NULL;
}

static ss_status *allreduce_run(ss_kctx *k)
{
    const coll_state *cs = k->state;
    if (k->out[0]->data != k->in[0]->data)
        memcpy(k->out[0]->data, k->in[0]->data, k->in[0]->nbytes);
    return k->coll->allreduce(k->coll->ctx, cs->group, k->out[0]->data, k->out[0]->dtype,
                              (size_t)ss_tensor_numel(k->out[0]));
}

static ss_status *allgather_infer(ss_kctx *k)
{
    coll_state *cs;
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = coll_prepare(k, &cs);
    if (st) return st;
    int axis;
    st = ss_op_axis(k, ss_onnx_attr_int(k->node, "axis", 0), k->in[0]->ndim, &axis);
    if (st) return st;
    cs->axis_or_peer = axis;
    ss_op_same_shape(k->out[0], k->in[0]);
    k->out[0]->dims[axis] *= k->coll->group_size(k->coll->ctx, cs->group);
    return NULL;
}

static ss_status *allgather_run(ss_kctx *k)
{
    const coll_state *cs = k->state;
    return k->coll->allgather(k->coll->ctx, cs->group, k->in[0], (int)cs->axis_or_peer,
                              k->contribute_only ? NULL : k->out[0]);
}

static ss_status *broadcast_infer(ss_kctx *k)
{
    coll_state *cs;
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = coll_prepare(k, &cs);
    if (st) return st;
    cs->axis_or_peer = ss_onnx_attr_int(k->node, "root", 0);
    ss_op_same_shape(k->out[0], k->in[0]);
    return NULL;
}

static ss_status *broadcast_run(ss_kctx *k)
{
    const coll_state *cs = k->state;
    if (k->out[0]->data != k->in[0]->data)
        memcpy(k->out[0]->data, k->in[0]->data, k->in[0]->nbytes);
    return k->coll->broadcast(k->coll->ctx, cs->group, (int)cs->axis_or_peer, k->out[0]->data,
                              k->out[0]->nbytes);
}

/* Send and Recv: the state holds the peer rank from attribute 'peer'. */
static ss_status *p2p_prepare(ss_kctx *k, int min_inputs)
{
    coll_state *cs;
    ss_status *st = ss_op_expect_inputs(k, min_inputs, 1);
    if (!st) st = coll_prepare(k, &cs);
    if (st) return st;
    const ss_onnx_attr *peer = ss_onnx_attr_find(k->node, "peer");
    if (!peer) return ss_op_err(k, SS_ERR_INVALID, "attribute 'peer' is required");
    cs->axis_or_peer = peer->i;
    return NULL;
}

static ss_status *send_infer(ss_kctx *k)
{
    ss_status *st = p2p_prepare(k, 1);
    if (st) return st;
    for (int j = 0; j < k->n_out; j++) /* an optional int64 token output orders later nodes */
        if (k->out[j]) k->out[j]->dtype = SS_DT_INT64, k->out[j]->ndim = 0;
    return NULL;
}

static ss_status *send_run(ss_kctx *k)
{
    const coll_state *cs = k->state;
    for (int j = 0; j < k->n_out; j++)
        if (k->out[j]) *(int64_t *)k->out[j]->data = 0;
    return k->coll->send(k->coll->ctx, (int)cs->axis_or_peer, k->in[0]->data, k->in[0]->nbytes);
}

static ss_status *recv_infer(ss_kctx *k)
{
    ss_status *st = p2p_prepare(k, 0);
    if (st) return st;
    int64_t dt = ss_onnx_attr_int(k->node, "dtype", 0);
    const int64_t *dims;
    int64_t planned[SS_MAX_DIMS];
    int nd = ss_onnx_attr_ints(k->node, "shape", &dims);
    if (k->n_in > 0 && k->in[0]) { /* the shape from the receiver's own inputs (dynamic dims) */
        if ((st = ss_op_plan_ints(k, 0, "shape", planned, SS_MAX_DIMS, &nd))) return st;
        dims = planned;
    }
    if (!ss_dtype_valid((int)dt) || dt == SS_DT_STRING)
        return ss_op_err(k, SS_ERR_INVALID, "attribute 'dtype' %lld is not a numeric type",
                         (long long)dt);
    if (nd < 0) nd = 0; /* scalar */
    if (nd > SS_MAX_DIMS) return ss_op_err(k, SS_ERR_LIMIT, "shape has too many dims");
    if (ss_shape_numel(nd, dims) < 0)
        return ss_op_err(k, SS_ERR_INVALID, "shape has a negative dim");
    k->out[0]->dtype = (ss_dtype)dt;
    k->out[0]->ndim = nd;
    for (int i = 0; i < nd; i++)
        k->out[0]->dims[i] = dims[i];
    return NULL;
}

static ss_status *recv_run(ss_kctx *k)
{
    const coll_state *cs = k->state;
    return k->coll->recv(k->coll->ctx, (int)cs->axis_or_peer, k->out[0]->data, k->out[0]->nbytes);
}

const ss_op_def ss_ops_collective[] = {
    {SS_DOMAIN_COLLECTIVE, "AllReduce", 1, 1, allreduce_infer, allreduce_run, SS_OPF_NO_FOLD},
    {SS_DOMAIN_COLLECTIVE, "AllGather", 1, 1, allgather_infer, allgather_run, SS_OPF_NO_FOLD},
    {SS_DOMAIN_COLLECTIVE, "Broadcast", 1, 1, broadcast_infer, broadcast_run, SS_OPF_NO_FOLD},
    {SS_DOMAIN_COLLECTIVE, "Send", 1, 1, send_infer, send_run, SS_OPF_NO_FOLD},
    {SS_DOMAIN_COLLECTIVE, "Recv", 1, 1, recv_infer, recv_run, SS_OPF_NO_FOLD},
    {0},
};
