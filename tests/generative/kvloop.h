/*
 * A greedy token loop over a session whose graph follows HF optimum's KV-cache convention:
 * inputs input_ids, position_ids [batch, seq], optional attention_mask [batch, past+seq] (int64)
 * and past_key_values.L.key/.value [batch, kv_heads, past, head_dim]; outputs logits
 * [batch, seq, vocab] and present.L.key/.value, each fed back as the next step's past.
 *
 * One sequence (batch 1). The loop owns the cache between steps (a copy of every present, since
 * a session's outputs live only until its next run); the worker's token loop and the KV block
 * pool replace that copy later. Inputs are matched by name, never by position, so a shard whose
 * graph lists them in another order, or a rank with fewer KV heads, runs the same loop.
 *
 * A graph rewritten by `shardserve shard --kv-pool` has a seq_ids [batch] input instead of the
 * past/present pairs: the session's KV block pool holds the cache, the loop creates its one
 * sequence (id 0) on the session and frees it at the end, and nothing is copied between steps.
 */
#ifndef SS_TEST_KVLOOP_H
#define SS_TEST_KVLOOP_H

#include "shardserve/runtime.h"

typedef struct ss_kvloop ss_kvloop;

/* Binds to `s` (not owned); INVALID naming the input when the graph does not follow the
 * convention. */
ss_status *ss_kvloop_create(ss_session *s, ss_kvloop **out);
void ss_kvloop_free(ss_kvloop *l);

/* Runs `n` tokens at the next positions (a prefill when n > 1) and keeps their cache; *next is
 * the argmax of the last position's logits, or -1 when the graph has no logits (a pipeline stage
 * before the last: the caller gets the token from the last stage). */
ss_status *ss_kvloop_step(ss_kvloop *l, const int64_t *tokens, int n, int64_t *next);

/* Prefill `prompt`, then `steps` - 1 decode steps: out[0..steps) are the greedy tokens (a graph
 * with logits only). */
ss_status *ss_kvloop_generate(ss_kvloop *l, const int64_t *prompt, int n_prompt, int64_t *out,
                              int steps);

/* Does the session's KV block pool hold the cache (a --kv-pool graph)? */
bool ss_kvloop_paged(const ss_kvloop *l);

/* Tokens in the cache so far. */
int64_t ss_kvloop_length(const ss_kvloop *l);

#endif
