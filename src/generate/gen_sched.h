/*
 * gen_sched: the continuous-batching scheduler of a token loop and the KV block pool it hands out
 * (vLLM's paged layout: fixed-size blocks, a block table per sequence, blocks taken on demand).
 * It knows counts, not tokens: a sequence has n_tokens (prompt + generated so far) of which
 * n_cached already have their keys and values in the pool. Every step runs, for each scheduled
 * sequence, the tokens [n_cached, end): a decode is a chunk of one, a prefill a longer chunk, so
 * prefill chunks share steps with decodes. Decodes go first, then prefill chunks in arrival order
 * up to the step's token budget. When the pool runs out, the sequence admitted last is preempted
 * (its blocks freed, its tokens computed again later: vLLM's RECOMPUTE), and new sequences wait.
 */
#ifndef SS_GENERATE_SCHED_H
#define SS_GENERATE_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include "shardserve/core.h"

typedef struct {
    int32_t blocks;        /* blocks in the pool */
    int32_t block_size;    /* tokens per block */
    int32_t step_tokens;   /* token budget of one step (decodes + prefill chunks) */
    int32_t max_running;   /* sequences in the running set at most */
    int32_t max_sequences; /* sequences known at once (running + waiting) */
} ss_sched_options;

/* One sequence's part of a step: tokens [start, start + n) of it; sample: the step's logits at
 * its last token give the sequence's next token (the chunk reaches its last token). */
typedef struct {
    int32_t seq;
    int32_t start, n;
    bool sample;
} ss_sched_item;

typedef struct {
    int32_t blocks_used, blocks_free;
    int32_t running, waiting;
    uint64_t preempted; /* preemptions so far */
} ss_sched_stats;

typedef struct ss_sched ss_sched;

ss_status *ss_sched_new(const ss_sched_options *o, ss_sched **out);
void ss_sched_free(ss_sched *s);

/* A new sequence of n_prompt tokens that may grow to n_prompt + max_new: queued. Refused when
 * it could never fit the pool, or the scheduler holds max_sequences already. *seq: its handle. */
ss_status *ss_sched_add(ss_sched *s, int32_t n_prompt, int32_t max_new, int32_t *seq);

/* The next step into items[cap] (cap >= max_running); *n: how many. Zero items: nothing to run. */
void ss_sched_step(ss_sched *s, ss_sched_item *items, int32_t cap, int32_t *n);

/* The step ran: every item's tokens are cached now. */
void ss_sched_done(ss_sched *s, const ss_sched_item *items, int32_t n);

/* A sampled token was appended to seq (after a step whose item had sample). */
void ss_sched_append(ss_sched *s, int32_t seq);

/* seq finished or was cancelled: its blocks go back to the pool, its handle is retired. */
void ss_sched_remove(ss_sched *s, int32_t seq);

/* seq's block table (physical block ids in token order, valid until the next call) and counts. */
const int32_t *ss_sched_blocks(const ss_sched *s, int32_t seq, int32_t *n_blocks);
int32_t ss_sched_tokens(const ss_sched *s, int32_t seq);
int32_t ss_sched_cached(const ss_sched *s, int32_t seq);

ss_sched_stats ss_sched_get_stats(const ss_sched *s);

/* Sequences preempted since the last call, into out[cap] (cap >= max_sequences takes all); the
 * caller frees their cached keys and values wherever they live. Returns how many. */
int32_t ss_sched_take_preempted(ss_sched *s, int32_t *out, int32_t cap);

#endif
