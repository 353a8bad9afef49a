/*
 * com.shardserve PagedAttention: attention whose keys and values live in the session's KV block
 * pool (kvpool.h) instead of past/present tensors, so a decode step's shapes do not depend on
 * the past length (the plan is reused step after step) and the past is never copied.
 *
 *   PagedAttention(Q [B, Hq, T, D], K [B, Hkv, T, D], V [B, Hkv, T, D], seq_ids int64 [B],
 *                  positions int64 [B, T]) -> [B, Hq, T, D]
 *   attributes: layer (int, which of the pool's layers), scale (float, multiplies Q.K)
 *
 * K and V are this step's rows, RoPE already applied (the exported graph rotates K before its
 * Concat into the cache, and the shard tool's rewrite takes K from there). Each row b appends
 * them to sequence seq_ids[b] at positions[b, :], then every query attends causally to its
 * sequence's keys at positions up to its own: softmax(scale * Q.K^T) V, query head h reading KV
 * head h / (Hq / Hkv). The graph's attention_mask is not used: rows are never padded; one sequence
 * may have several rows in a step (a prompt as one-token rows), in position order, each seeing the
 * rows before it.
 */
#include "common.h"
#include "gemm_kernel.h"
#include "kvpool.h"

typedef struct {
    ss_kv_layer *layer; /* NULL outside a session with a pool (the shard tool's planning) */
    float scale;
    int threads; /* parts of the pool a step may run in */
} pa_state;

static const char *const pa_attrs[] = {"layer", "scale", NULL};

static ss_status *pa_check_shapes(ss_kctx *k)
{
    const ss_tensor *q = k->in[0], *kk = k->in[1], *v = k->in[2], *ids = k->in[3], *pos = k->in[4];
    for (int i = 0; i < 3; i++)
        if (k->in[i]->dtype != SS_DT_FLOAT32 || k->in[i]->ndim != 4)
            return ss_op_err(k, SS_ERR_UNSUPPORTED, "input %d must be float32 [B, heads, T, D]", i);
    if (ids->dtype != SS_DT_INT64 || pos->dtype != SS_DT_INT64 || ids->ndim != 1 || pos->ndim != 2)
        return ss_op_err(k, SS_ERR_INVALID, "seq_ids must be int64 [B], positions int64 [B, T]");
    bool same = kk->dims[0] == q->dims[0] && kk->dims[2] == q->dims[2] &&
                kk->dims[3] == q->dims[3] && memcmp(kk->dims, v->dims, sizeof kk->dims) == 0 &&
                ids->dims[0] == q->dims[0] && pos->dims[0] == q->dims[0] &&
                pos->dims[1] == q->dims[2];
    if (!same || kk->dims[1] < 1 || q->dims[1] % kk->dims[1])
        return ss_op_err(k, SS_ERR_INVALID,
                         "shapes disagree: Q [%lld,%lld,%lld,%lld], K/V heads %lld, positions "
                         "[%lld,%lld] (query heads must be a multiple of KV heads)",
                         (long long)q->dims[0], (long long)q->dims[1], (long long)q->dims[2],
                         (long long)q->dims[3], (long long)kk->dims[1], (long long)pos->dims[0],
                         (long long)pos->dims[1]);
    return NULL;
}

static ss_status *pa_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 5, 5);
    if (!st) st = ss_op_check_attrs(k, pa_attrs);
    if (!st) st = pa_check_shapes(k);
    if (st) return st;
    ss_op_same_shape(k->out[0], k->in[0]);
    pa_state *s = ss_op_state_alloc(k, sizeof *s);
    if (!s) return ss_op_oom();
    s->scale = ss_onnx_attr_float(k->node, "scale", 1.0f);
    s->threads = k->threads > 1 ? ss_gemm_pool_reserve(k->threads) : 1;
    if (!k->kvpool) return NULL;
    st = ss_kvpool_layer(k->kvpool, ss_onnx_attr_int(k->node, "layer", 0), (int)k->in[1]->dims[1],
                         (int)k->in[1]->dims[3], &s->layer);
    return st ? ss_status_wrap(st, "PagedAttention node '%s'", k->node_name) : NULL;
}

static ss_status *pa_run(ss_kctx *k)
{
    const pa_state *s = k->state;
    if (!s->layer) return ss_op_err(k, SS_ERR_INVALID, "this session keeps no KV cache pool");
    const ss_tensor *q = k->in[0];
    ss_kv_step step = {.q = q->data,
                       .k = k->in[1]->data,
                       .v = k->in[2]->data,
                       .seq_ids = k->in[3]->data,
                       .positions = k->in[4]->data,
                       .out = k->out[0]->data,
                       .batch = q->dims[0],
                       .seq = q->dims[2],
                       .q_heads = (int)q->dims[1],
                       .scale = s->scale,
                       .threads = s->threads};
    ss_status *st = ss_kvpool_attend(k->kvpool, s->layer, &step);
    return st ? ss_status_wrap(st, "PagedAttention node '%s'", k->node_name) : NULL;
}

const ss_op_def ss_ops_paged_attention[] = {
    {SS_DOMAIN_KVPOOL, "PagedAttention", 1, 1, pa_infer, pa_run, SS_OPF_NO_FOLD, NULL},
    {0},
};
