/*
 * The greedy KV-cache token loop of kvloop.h: binds the convention's inputs and outputs by name
 * once, then per step fills ids, positions and mask, runs, keeps every present as the next past
 * and takes the argmax of the last logits row.
 */
#include "kvloop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int input;  /* index of past_key_values.L.key/.value */
    int output; /* index of present.L.key/.value */
    ss_tensor cache;
} kv_slot;

struct ss_kvloop {
    ss_session *s;
    int n_inputs;
    int ids, pos, mask, logits; /* input/output indices; mask -1 when the graph has none */
    int seq;                    /* seq_ids: the cache is the session's KV block pool; else -1 */
    int rows;                   /* logit_rows (the one batch row), -1 when the graph has none */
    int64_t seq_id;
    kv_slot *kv;
    int n_kv;
    int64_t len;       /* tokens in the cache */
    int64_t *scratch;  /* ids, positions, then the mask */
    int64_t scratch_n; /* its capacity in elements */
};

static int find_output(const ss_session *s, const char *name)
{
    for (int i = 0; i < ss_session_num_outputs(s); i++)
        if (strcmp(ss_session_output(s, i)->name, name) == 0) return i;
    return -1;
}

/* An empty past [batch 1, kv_heads, 0, head_dim]: the heads and head size are the graph's static
 * dims (a shard declares its own head count). */
static ss_status *kvloop_bind_past(ss_kvloop *l, int input, const ss_onnx_value_info *vi)
{
    const char *suffix = vi->name + strlen("past_key_values.");
    char present[256];
    snprintf(present, sizeof present, "present.%s", suffix);
    int out = find_output(l->s, present);
    if (out < 0) return ss_errf(SS_ERR_INVALID, "input '%s' has no output '%s'", vi->name, present);
    if (vi->ndim != 4 || vi->dims[1] <= 0 || vi->dims[3] <= 0)
        return ss_errf(SS_ERR_INVALID,
                       "input '%s' must be [batch, kv_heads, past, head_dim] with static heads "
                       "and head_dim",
                       vi->name);
    kv_slot *k = &l->kv[l->n_kv++];
    k->input = input;
    k->output = out;
    int64_t dims[4] = {1, vi->dims[1], 0, vi->dims[3]};
    return ss_tensor_alloc(&k->cache, vi->dtype, 4, dims);
}

static ss_status *kvloop_bind(ss_kvloop *l)
{
    for (int i = 0; i < l->n_inputs; i++) {
        const ss_onnx_value_info *vi = ss_session_input(l->s, i);
        if (strcmp(vi->name, "input_ids") == 0)
            l->ids = i;
        else if (strcmp(vi->name, "position_ids") == 0)
            l->pos = i;
        else if (strcmp(vi->name, "attention_mask") == 0)
            l->mask = i;
        else if (strcmp(vi->name, "seq_ids") == 0)
            l->seq = i;
        else if (strcmp(vi->name, "logit_rows") == 0)
            l->rows = i;
        else if (strncmp(vi->name, "past_key_values.", 16) == 0) {
            ss_status *st = kvloop_bind_past(l, i, vi);
            if (st) return st;
        } else
            return ss_errf(SS_ERR_INVALID, "input '%s' is not part of the KV-cache convention",
                           vi->name);
    }
    l->logits = find_output(l->s, "logits"); /* a pipeline stage before the last has none */
    if (l->ids < 0 || l->pos < 0 || (l->n_kv == 0) == (l->seq < 0))
        return ss_errf(SS_ERR_INVALID, "the graph needs input_ids, position_ids and either "
                                       "past_key_values.* or seq_ids inputs");
    return l->seq >= 0 ? ss_session_seq_create(l->s, l->seq_id) : NULL;
}

ss_status *ss_kvloop_create(ss_session *s, ss_kvloop **out)
{
    *out = NULL;
    ss_kvloop *l = calloc(1, sizeof *l);
    if (!l) return ss_errf(SS_ERR_NOMEM, "kvloop");
    l->s = s;
    l->n_inputs = ss_session_num_inputs(s);
    l->ids = l->pos = l->mask = l->logits = l->seq = l->rows = -1;
    l->kv = calloc((size_t)l->n_inputs, sizeof *l->kv);
    if (!l->kv) {
        free(l);
        return ss_errf(SS_ERR_NOMEM, "kvloop");
    }
    ss_status *st = kvloop_bind(l);
    if (st) {
        ss_kvloop_free(l);
        return st;
    }
    *out = l;
    return NULL;
}

void ss_kvloop_free(ss_kvloop *l)
{
    if (!l) return;
    if (l->seq >= 0) ss_status_free(ss_session_seq_free(l->s, l->seq_id));
    for (int i = 0; i < l->n_kv; i++)
        ss_tensor_free(&l->kv[i].cache);
    free(l->kv);
    free(l->scratch);
    free(l);
}

bool ss_kvloop_paged(const ss_kvloop *l)
{
    return l->seq >= 0;
}

int64_t ss_kvloop_length(const ss_kvloop *l)
{
    return l->len;
}

/* ids [1,n], positions len.. [1,n] and an all-ones mask [1,len+n] in one scratch buffer. */
static ss_status *kvloop_fill(ss_kvloop *l, const int64_t *tokens, int n, ss_tensor *in)
{
    int64_t total = l->len + n, need = 2 * (int64_t)n + total;
    if (need > l->scratch_n) {
        int64_t *p = realloc(l->scratch, (size_t)need * sizeof *p);
        if (!p) return ss_errf(SS_ERR_NOMEM, "kvloop scratch of %lld tokens", (long long)need);
        l->scratch = p;
        l->scratch_n = need;
    }
    int64_t *ids = l->scratch, *pos = ids + n, *mask = pos + n;
    for (int i = 0; i < n; i++) {
        ids[i] = tokens[i];
        pos[i] = l->len + i;
    }
    for (int64_t i = 0; i < total; i++)
        mask[i] = 1;
    int64_t d_new[2] = {1, n}, d_mask[2] = {1, total};
    size_t nb = (size_t)n * sizeof(int64_t);
    ss_status *st = ss_tensor_borrow(&in[l->ids], SS_DT_INT64, 2, d_new, ids, nb);
    if (!st) st = ss_tensor_borrow(&in[l->pos], SS_DT_INT64, 2, d_new, pos, nb);
    if (!st && l->seq >= 0)
        st = ss_tensor_borrow(&in[l->seq], SS_DT_INT64, 1, d_new, &l->seq_id, sizeof l->seq_id);
    static const int64_t row0 = 0, d_row[1] = {1};
    if (!st && l->rows >= 0)
        st = ss_tensor_borrow(&in[l->rows], SS_DT_INT64, 1, d_row, (void *)&row0, sizeof row0);
    if (!st && l->mask >= 0)
        st = ss_tensor_borrow(&in[l->mask], SS_DT_INT64, 2, d_mask, mask,
                              (size_t)total * sizeof(int64_t));
    return st;
}

static ss_status *kvloop_argmax_last(const ss_tensor *logits, int64_t *next)
{
    if (logits->dtype != SS_DT_FLOAT32 || logits->ndim != 3 || logits->dims[2] <= 0)
        return ss_errf(SS_ERR_INVALID, "logits must be float32 [batch, seq, vocab]");
    int64_t vocab = logits->dims[2];
    const float *row = (const float *)logits->data + (logits->dims[1] - 1) * vocab;
    int64_t best = 0;
    for (int64_t v = 1; v < vocab; v++)
        if (row[v] > row[best]) best = v;
    *next = best;
    return NULL;
}

ss_status *ss_kvloop_step(ss_kvloop *l, const int64_t *tokens, int n, int64_t *next)
{
    if (n <= 0) return ss_errf(SS_ERR_INVALID, "a step needs at least one token");
    ss_tensor *in = calloc((size_t)l->n_inputs, sizeof *in);
    if (!in) return ss_errf(SS_ERR_NOMEM, "kvloop inputs");
    ss_status *st = kvloop_fill(l, tokens, n, in);
    for (int i = 0; i < l->n_kv; i++)
        in[l->kv[i].input] = l->kv[i].cache;
    const ss_tensor *outs = NULL;
    if (!st) st = ss_session_run(l->s, in, l->n_inputs, &outs);
    free(in);
    if (st) return ss_status_wrap(st, "step at position %lld", (long long)l->len);
    for (int i = 0; i < l->n_kv && !st; i++) {
        ss_tensor_free(&l->kv[i].cache);
        st = ss_tensor_copy(&l->kv[i].cache, &outs[l->kv[i].output]);
    }
    *next = -1;
    if (!st && l->logits >= 0) st = kvloop_argmax_last(&outs[l->logits], next);
    if (!st) l->len += n;
    return st;
}

ss_status *ss_kvloop_generate(ss_kvloop *l, const int64_t *prompt, int n_prompt, int64_t *out,
                              int steps)
{
    if (steps <= 0) return NULL;
    ss_status *st = ss_kvloop_step(l, prompt, n_prompt, &out[0]);
    for (int i = 1; i < steps && !st; i++)
        st = ss_kvloop_step(l, &out[i - 1], 1, &out[i]);
    return st;
}
