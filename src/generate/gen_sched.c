/*
 * gen_sched (gen_sched.h): continuous batching over a paged KV pool. The running set is kept in
 * admission order: the earliest admitted always makes progress, the latest is preempted first.
 * Everything is sized at creation; nothing allocates per step.
 */
#include "gen_sched.h"

#include <stdlib.h>
#include <string.h>

typedef enum { SEQ_FREE = 0, SEQ_WAITING, SEQ_RUNNING } seq_state;

typedef struct {
    seq_state state;
    int32_t n_tokens, n_cached, max_total;
    int32_t *blocks; /* max_blocks entries, n_blocks used */
    int32_t n_blocks;
    bool in_step; /* scheduled in the step being built */
} seq_slot;

struct ss_sched {
    ss_sched_options o;
    int32_t max_blocks; /* per sequence: the whole pool */
    seq_slot *seqs;     /* max_sequences */
    int32_t *free_blocks, n_free;
    int32_t *running, n_running; /* admission order */
    int32_t *waiting, n_waiting; /* arrival order; preempted ones go first */
    uint64_t preempted;
    int32_t *recent, n_recent; /* preempted since ss_sched_take_preempted (each at most once) */
};

static int32_t blocks_for(const ss_sched *s, int32_t tokens)
{
    return (tokens + s->o.block_size - 1) / s->o.block_size;
}

ss_status *ss_sched_new(const ss_sched_options *o, ss_sched **out)
{
    *out = NULL;
    if (o->blocks < 1 || o->block_size < 1 || o->step_tokens < 1 || o->max_running < 1 ||
        o->max_sequences < o->max_running)
        return ss_errf(SS_ERR_INVALID,
                       "scheduler: blocks %d, block size %d, step tokens %d, running %d, "
                       "sequences %d: each must be >= 1 and sequences >= running",
                       o->blocks, o->block_size, o->step_tokens, o->max_running, o->max_sequences);
    ss_sched *s = calloc(1, sizeof *s);
    if (!s) return ss_errf(SS_ERR_NOMEM, "scheduler");
    s->o = *o;
    s->max_blocks = o->blocks;
    s->seqs = calloc((size_t)o->max_sequences, sizeof *s->seqs);
    s->free_blocks = malloc(sizeof(int32_t) * (size_t)o->blocks);
    s->running = malloc(sizeof(int32_t) * (size_t)o->max_running);
    s->waiting = malloc(sizeof(int32_t) * (size_t)o->max_sequences);
    s->recent = malloc(sizeof(int32_t) * (size_t)o->max_sequences);
    bool ok = s->seqs && s->free_blocks && s->running && s->waiting && s->recent;
    for (int32_t i = 0; ok && i < o->max_sequences; i++)
        ok = (s->seqs[i].blocks = malloc(sizeof(int32_t) * (size_t)o->blocks)) != NULL;
    if (!ok) {
        ss_sched_free(s);
        return ss_errf(SS_ERR_NOMEM, "scheduler for %d sequences of up to %d blocks",
                       o->max_sequences, o->blocks);
    }
    for (int32_t b = 0; b < o->blocks; b++) /* low ids handed out first */
        s->free_blocks[b] = o->blocks - 1 - b;
    s->n_free = o->blocks;
    *out = s;
    return NULL;
}

void ss_sched_free(ss_sched *s)
{
    if (!s) return;
    for (int32_t i = 0; s->seqs && i < s->o.max_sequences; i++)
        free(s->seqs[i].blocks);
    free(s->seqs);
    free(s->free_blocks);
    free(s->running);
    free(s->waiting);
    free(s->recent);
    free(s);
}

ss_status *ss_sched_add(ss_sched *s, int32_t n_prompt, int32_t max_new, int32_t *seq)
{
    *seq = -1;
    if (n_prompt < 1 || max_new < 0 || n_prompt > INT32_MAX - max_new)
        return ss_errf(SS_ERR_INVALID, "a prompt of %d tokens and %d new tokens", n_prompt,
                       max_new);
    int32_t need = blocks_for(s, n_prompt + max_new);
    if (need > s->o.blocks)
        return ss_errf(SS_ERR_LIMIT,
                       "%d prompt + %d new tokens need %d KV blocks of %d tokens; the pool has %d "
                       "(raise generate.kv_cache_mb in servable.json or lower max_tokens)",
                       n_prompt, max_new, need, s->o.block_size, s->o.blocks);
    int32_t i = 0;
    while (i < s->o.max_sequences && s->seqs[i].state != SEQ_FREE)
        i++;
    if (i == s->o.max_sequences)
        return ss_errf(SS_ERR_UNAVAILABLE,
                       "%d sequences are running or queued already (generate.max_sequences): try "
                       "again later",
                       s->o.max_sequences);
    s->seqs[i] = (seq_slot){.state = SEQ_WAITING,
                            .n_tokens = n_prompt,
                            .max_total = n_prompt + max_new,
                            .blocks = s->seqs[i].blocks};
    s->waiting[s->n_waiting++] = i;
    *seq = i;
    return NULL;
}

static void release_blocks(ss_sched *s, seq_slot *q)
{
    while (q->n_blocks)
        s->free_blocks[s->n_free++] = q->blocks[--q->n_blocks];
    q->n_cached = 0;
}

static void list_remove(int32_t *list, int32_t *n, int32_t seq)
{
    for (int32_t i = 0; i < *n; i++)
        if (list[i] == seq) {
            memmove(list + i, list + i + 1, sizeof *list * (size_t)(*n - i - 1));
            (*n)--;
            return;
        }
}

/* Back to the front of the queue, blocks freed: its tokens are computed again when it returns. */
static void preempt(ss_sched *s, int32_t seq)
{
    seq_slot *q = &s->seqs[seq];
    release_blocks(s, q);
    list_remove(s->running, &s->n_running, seq);
    memmove(s->waiting + 1, s->waiting, sizeof *s->waiting * (size_t)s->n_waiting);
    s->waiting[0] = seq;
    s->n_waiting++;
    q->state = SEQ_WAITING;
    s->preempted++;
    bool listed = false;
    for (int32_t i = 0; i < s->n_recent && !listed; i++)
        listed = s->recent[i] == seq;
    if (!listed) s->recent[s->n_recent++] = seq;
}

/* Blocks so that seq can cache `tokens` tokens, preempting the latest admitted sequences not yet
 * in this step (possibly seq itself). false: seq was preempted. */
static bool grow(ss_sched *s, int32_t seq, int32_t tokens)
{
    seq_slot *q = &s->seqs[seq];
    int32_t need = blocks_for(s, tokens) - q->n_blocks;
    while (need > s->n_free) {
        int32_t victim = -1;
        for (int32_t i = s->n_running - 1; i >= 0 && victim < 0; i--)
            if (!s->seqs[s->running[i]].in_step) victim = s->running[i];
        if (victim < 0) return false; /* only scheduled ones hold blocks: wait a step */
        preempt(s, victim);
        if (victim == seq) return false;
    }
    for (; need > 0; need--)
        q->blocks[q->n_blocks++] = s->free_blocks[--s->n_free];
    return true;
}

static void schedule(ss_sched *s, int32_t seq, int32_t chunk, ss_sched_item *items, int32_t *n)
{
    seq_slot *q = &s->seqs[seq];
    q->in_step = true;
    items[(*n)++] = (ss_sched_item){
        .seq = seq, .start = q->n_cached, .n = chunk, .sample = q->n_cached + chunk == q->n_tokens};
}

/* Running sequences with `decodes` (one pending token) or without, in admission order. A
 * preemption changes the running list: the scan then starts again (what is in the step already
 * is skipped, so it ends). */
static void take_running(ss_sched *s, bool decodes, int32_t *budget, ss_sched_item *items,
                         int32_t cap, int32_t *n)
{
    for (int32_t i = 0; i<s->n_running && * budget> 0 && *n < cap; i++) {
        int32_t seq = s->running[i];
        seq_slot *q = &s->seqs[seq];
        int32_t pending = q->n_tokens - q->n_cached;
        if (q->in_step || pending < 1 || (pending == 1) != decodes) continue;
        int32_t chunk = pending < *budget ? pending : *budget;
        uint64_t before = s->preempted;
        if (grow(s, seq, q->n_cached + chunk)) {
            schedule(s, seq, chunk, items, n);
            *budget -= chunk;
        } else {
            q->in_step = q->state == SEQ_RUNNING; /* no blocks this step: it waits */
        }
        if (s->preempted != before) i = -1;
    }
}

/* Waiting sequences, first come first served, while their first chunk's blocks are free. */
static void admit(ss_sched *s, int32_t *budget, ss_sched_item *items, int32_t cap, int32_t *n)
{
    while (s->n_waiting && s->n_running<s->o.max_running && * budget> 0 && *n < cap) {
        int32_t seq = s->waiting[0];
        seq_slot *q = &s->seqs[seq];
        int32_t chunk = q->n_tokens < *budget ? q->n_tokens : *budget;
        if (blocks_for(s, chunk) > s->n_free) return;
        list_remove(s->waiting, &s->n_waiting, seq);
        s->running[s->n_running++] = seq;
        q->state = SEQ_RUNNING;
        grow(s, seq, chunk);
        schedule(s, seq, chunk, items, n);
        *budget -= chunk;
    }
}

void ss_sched_step(ss_sched *s, ss_sched_item *items, int32_t cap, int32_t *n)
{
    *n = 0;
    int32_t budget = s->o.step_tokens;
    for (int32_t i = 0; i < s->n_running; i++)
        s->seqs[s->running[i]].in_step = false;
    take_running(s, true, &budget, items, cap, n);
    take_running(s, false, &budget, items, cap, n);
    admit(s, &budget, items, cap, n);
}

void ss_sched_done(ss_sched *s, const ss_sched_item *items, int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        seq_slot *q = &s->seqs[items[i].seq];
        if (q->state == SEQ_RUNNING) q->n_cached = items[i].start + items[i].n;
    }
}

void ss_sched_append(ss_sched *s, int32_t seq)
{
    if (seq >= 0 && seq < s->o.max_sequences && s->seqs[seq].state != SEQ_FREE)
        s->seqs[seq].n_tokens++;
}

void ss_sched_remove(ss_sched *s, int32_t seq)
{
    if (seq < 0 || seq >= s->o.max_sequences || s->seqs[seq].state == SEQ_FREE) return;
    seq_slot *q = &s->seqs[seq];
    release_blocks(s, q);
    list_remove(s->running, &s->n_running, seq);
    list_remove(s->waiting, &s->n_waiting, seq);
    list_remove(s->recent, &s->n_recent, seq);
    q->state = SEQ_FREE;
}

const int32_t *ss_sched_blocks(const ss_sched *s, int32_t seq, int32_t *n_blocks)
{
    *n_blocks = s->seqs[seq].n_blocks;
    return s->seqs[seq].blocks;
}

int32_t ss_sched_tokens(const ss_sched *s, int32_t seq)
{
    return s->seqs[seq].n_tokens;
}

int32_t ss_sched_cached(const ss_sched *s, int32_t seq)
{
    return s->seqs[seq].n_cached;
}

ss_sched_stats ss_sched_get_stats(const ss_sched *s)
{
    return (ss_sched_stats){.blocks_used = s->o.blocks - s->n_free,
                            .blocks_free = s->n_free,
                            .running = s->n_running,
                            .waiting = s->n_waiting,
                            .preempted = s->preempted};
}

int32_t ss_sched_take_preempted(ss_sched *s, int32_t *out, int32_t cap)
{
    int32_t n = s->n_recent < cap ? s->n_recent : cap;
    memcpy(out, s->recent, sizeof *out * (size_t)n);
    memmove(s->recent, s->recent + n, sizeof *s->recent * (size_t)(s->n_recent - n));
    s->n_recent -= n;
    return n;
}
