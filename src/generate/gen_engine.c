/*
 * gen_engine (gen_engine.h): requests -> scheduler steps -> model calls -> sampled tokens. A
 * step is one call of one-token rows ([rows, 1] inputs): each decode a row, each prefill chunk of
 * n tokens n rows of its sequence in position order. The KV pool's sequences follow the
 * scheduler's: created when a sequence's first chunk runs, freed when it finishes, is cancelled or
 * is preempted (a preempted one is created again and recomputed when it returns). Pool ids are
 * never reused, so a late free cannot hit a newer sequence.
 */
#include "gen_engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    bool used, cancelled;
    /* in a call of several sequences that failed: runs alone until a call of its own succeeds
     * (then it was not the one the model refused) or fails (then it was) */
    bool suspect;
    uint64_t handle;
    int64_t pool_id; /* -1: nothing in the pool */
    int32_t *tokens, n_prompt, n_tokens;
    ss_gen_params p;
    int64_t *stop_ids;
    ss_rng rng;
    ss_gen_on_token cb;
    void *ctx;
} gen_seq;

struct ss_gen_engine {
    ss_gen_options o;
    ss_sched *sched;
    ss_sampler *sampler;
    float *row;    /* a logits row to sample from (the sampler changes it) */
    gen_seq *seqs; /* by scheduler slot */
    uint64_t next_handle;
    int64_t next_pool_id;
    /* the step being run: one call of its items' rows */
    ss_sched_item *items;
    int32_t n_items;
    bool in_call;
    /* the call's inputs */
    int64_t *ids, *pos, *sids, *lrows, *create, *release;
    int32_t n_create, n_release, n_lrows, n_rows;
    int32_t *gone;
};

ss_status *ss_gen_engine_new(const ss_gen_options *o, ss_gen_engine **out)
{
    *out = NULL;
    if (o->vocab < 1) return ss_errf(SS_ERR_INVALID, "generation: vocabulary of %d", o->vocab);
    ss_gen_engine *e = calloc(1, sizeof *e);
    if (!e) return ss_errf(SS_ERR_NOMEM, "generation engine");
    e->o = *o;
    e->next_handle = 1;
    e->next_pool_id = o->first_pool_id;
    if (e->o.pool_id_step < 1) e->o.pool_id_step = 1;
    ss_status *st = ss_sched_new(&o->sched, &e->sched);
    if (!st) st = ss_sampler_new((size_t)o->vocab, &e->sampler);
    if (st) {
        ss_gen_engine_free(e);
        return st;
    }
    size_t seqs = (size_t)o->sched.max_sequences, step = (size_t)o->sched.step_tokens;
    e->row = malloc(sizeof(float) * (size_t)o->vocab);
    e->seqs = calloc(seqs, sizeof *e->seqs);
    e->items = malloc(sizeof *e->items * (size_t)o->sched.max_running);
    e->ids = malloc(sizeof(int64_t) * step);
    e->pos = malloc(sizeof(int64_t) * step);
    e->sids = malloc(sizeof(int64_t) * step);
    e->lrows = malloc(sizeof(int64_t) * (size_t)o->sched.max_running);
    e->create = malloc(sizeof(int64_t) * seqs);
    e->release = malloc(sizeof(int64_t) * 2 * seqs);
    e->gone = malloc(sizeof(int32_t) * seqs);
    if (!e->row || !e->seqs || !e->items || !e->ids || !e->pos || !e->sids || !e->lrows ||
        !e->create || !e->release || !e->gone) {
        ss_gen_engine_free(e);
        return ss_errf(SS_ERR_NOMEM, "generation engine for %zu sequences", seqs);
    }
    *out = e;
    return NULL;
}

static void seq_clear(gen_seq *q)
{
    free(q->tokens);
    free(q->stop_ids);
    memset(q, 0, sizeof *q);
}

void ss_gen_engine_free(ss_gen_engine *e)
{
    if (!e) return;
    for (int32_t i = 0; e->seqs && i < e->o.sched.max_sequences; i++)
        seq_clear(&e->seqs[i]);
    ss_sched_free(e->sched);
    ss_sampler_free(e->sampler);
    free(e->row);
    free(e->seqs);
    free(e->items);
    free(e->ids);
    free(e->pos);
    free(e->sids);
    free(e->lrows);
    free(e->create);
    free(e->release);
    free(e->gone);
    free(e);
}

static ss_status *check_request(const ss_gen_engine *e, const int64_t *prompt, int32_t n,
                                const ss_gen_params *p, const char **param)
{
    *param = "prompt";
    if (n < 1) return ss_errf(SS_ERR_INVALID, "the prompt has no tokens");
    for (int32_t i = 0; i < n; i++)
        if (prompt[i] < 0 || prompt[i] >= e->o.vocab)
            return ss_errf(SS_ERR_INVALID,
                           "prompt token %d is %lld, outside the vocabulary [0, %d)", i,
                           (long long)prompt[i], e->o.vocab);
    *param = "max_tokens";
    if (p->max_tokens < 1 || n > INT32_MAX - p->max_tokens)
        return ss_errf(SS_ERR_INVALID, "max_tokens = %d: at least 1 token must be asked for",
                       p->max_tokens);
    *param = "stop_token_ids";
    if (p->n_stop_ids < 0 || (p->n_stop_ids && !p->stop_ids))
        return ss_errf(SS_ERR_INVALID, "stop token ids: %d given", p->n_stop_ids);
    *param = NULL;
    return ss_sample_check(&p->sample, param);
}

ss_status *ss_gen_submit(ss_gen_engine *e, const int64_t *prompt, int32_t n_prompt,
                         const ss_gen_params *p, ss_gen_on_token cb, void *ctx, uint64_t *handle,
                         const char **param)
{
    const char *at_fault = NULL;
    *handle = 0;
    if (param) *param = NULL;
    ss_status *st = check_request(e, prompt, n_prompt, p, &at_fault);
    if (st) {
        if (param) *param = at_fault;
        return st;
    }
    int32_t *tokens = malloc(sizeof(int32_t) * (size_t)(n_prompt + p->max_tokens));
    int64_t *stops = p->n_stop_ids > 0 ? malloc(sizeof(int64_t) * (size_t)p->n_stop_ids) : NULL;
    if (!tokens || (p->n_stop_ids > 0 && !stops))
        st = ss_errf(SS_ERR_NOMEM, "a request of %d + %d tokens", n_prompt, p->max_tokens);
    for (int32_t i = 0; !st && i < n_prompt; i++)
        tokens[i] = (int32_t)prompt[i]; /* checked: inside the vocabulary */
    int32_t slot = -1;
    if (!st) st = ss_sched_add(e->sched, n_prompt, p->max_tokens, &slot);
    if (st) {
        free(tokens);
        free(stops);
        return st;
    }
    if (stops) memcpy(stops, p->stop_ids, sizeof *stops * (size_t)p->n_stop_ids);
    gen_seq *q = &e->seqs[slot];
    *q = (gen_seq){.used = true,
                   .handle = e->next_handle++,
                   .pool_id = -1,
                   .tokens = tokens,
                   .n_prompt = n_prompt,
                   .n_tokens = n_prompt,
                   .p = *p,
                   .stop_ids = stops,
                   .cb = cb,
                   .ctx = ctx};
    q->p.stop_ids = stops;
    ss_rng_seed(&q->rng, p->sample.seed);
    *handle = q->handle;
    return NULL;
}

void ss_gen_cancel(ss_gen_engine *e, uint64_t handle)
{
    for (int32_t i = 0; i < e->o.sched.max_sequences; i++)
        if (e->seqs[i].used && e->seqs[i].handle == handle) e->seqs[i].cancelled = true;
}

static void drop_from_pool(ss_gen_engine *e, gen_seq *q)
{
    if (q->pool_id >= 0) e->release[e->n_release++] = q->pool_id;
    q->pool_id = -1;
}

/* The request ends: its callback last, so that it may submit another at once. */
static void finish(ss_gen_engine *e, int32_t slot, int64_t token, ss_gen_state state,
                   const char *error)
{
    gen_seq *q = &e->seqs[slot];
    drop_from_pool(e, q);
    ss_sched_remove(e->sched, slot);
    ss_gen_on_token cb = q->cb;
    void *ctx = q->ctx;
    seq_clear(q);
    if (cb) cb(ctx, token, state, error);
}

/* A new step: cancellations and preemptions settled, the scheduler's items as one call of
 * one-token rows: a decode is a row, a prefill chunk of n tokens n rows of its sequence in position
 * order (so decodes and prompts share the weights' one pass; the model's attention reads the
 * KV pool, where a row sees its sequence's earlier rows). false: nothing to run. */
static bool plan_step(ss_gen_engine *e)
{
    for (int32_t i = 0; i < e->o.sched.max_sequences; i++)
        if (e->seqs[i].used && e->seqs[i].cancelled) finish(e, i, -1, SS_GEN_CANCELLED, NULL);
    int32_t n = 0;
    ss_sched_step(e->sched, e->items, e->o.sched.max_running, &n);
    int32_t gone = ss_sched_take_preempted(e->sched, e->gone, e->o.sched.max_sequences);
    for (int32_t i = 0; i < gone; i++)
        drop_from_pool(e, &e->seqs[e->gone[i]]);
    for (int32_t i = 0; i < n; i++) /* a suspect first, alone (see call_failed) */
        if (e->seqs[e->items[i].seq].suspect) {
            e->items[0] = e->items[i];
            n = 1;
        }
    e->n_items = n;
    return n > 0;
}

/* Nothing to run, but pool sequences to free: a call of no rows carries them (the pool is then
 * tidy while idle). */
static bool release_only(ss_gen_engine *e, ss_gen_call *call)
{
    if (!e->n_release) return false;
    *call = (ss_gen_call){.release = e->release, .n_release = e->n_release};
    e->n_items = 0;
    e->in_call = true;
    return true;
}

bool ss_gen_next(ss_gen_engine *e, ss_gen_call *call)
{
    if (e->in_call) return false;
    if (!plan_step(e)) return release_only(e, call);
    int32_t n_rows = 0;
    e->n_create = e->n_lrows = 0;
    for (int32_t r = 0; r < e->n_items; r++) {
        const ss_sched_item *it = &e->items[r];
        gen_seq *q = &e->seqs[it->seq];
        if (it->start == 0) { /* a first chunk: a fresh pool sequence */
            drop_from_pool(e, q);
            q->pool_id = e->next_pool_id;
            e->next_pool_id += e->o.pool_id_step;
            e->create[e->n_create++] = q->pool_id;
        }
        for (int32_t k = 0; k < it->n; k++, n_rows++) {
            e->sids[n_rows] = q->pool_id;
            e->ids[n_rows] = q->tokens[it->start + k];
            e->pos[n_rows] = it->start + k;
        }
        if (it->sample) e->lrows[e->n_lrows++] = n_rows - 1;
    }
    if (!e->n_lrows) e->lrows[e->n_lrows++] = n_rows - 1; /* none sampled: one row, unread */
    e->n_rows = n_rows;
    *call = (ss_gen_call){.batch = n_rows,
                          .seq = 1,
                          .input_ids = e->ids,
                          .positions = e->pos,
                          .seq_ids = e->sids,
                          .logit_rows = e->lrows,
                          .create = e->create,
                          .release = e->release,
                          .n_create = e->n_create,
                          .n_release = e->n_release,
                          .n_logit_rows = e->n_lrows};
    e->in_call = true;
    return true;
}

static bool is_stop(const gen_seq *q, int32_t token)
{
    for (int32_t i = 0; i < q->p.n_stop_ids; i++)
        if (q->stop_ids[i] == token) return true;
    return false;
}

/* The next token of the sequence of item `it` from its logits row. */
static void take_token(ss_gen_engine *e, const ss_sched_item *it, const float *row)
{
    gen_seq *q = &e->seqs[it->seq];
    if (!q->used || q->cancelled) return; /* ends before the next step */
    int32_t token = ss_sample_greedy(e->sampler, &q->p.sample, row);
    if (token < 0) /* the sampler's changes go to e->row */
        token = ss_sample_from(e->sampler, &q->p.sample, &q->rng, row, e->row, q->tokens,
                               (size_t)q->n_tokens, q->tokens + q->n_prompt,
                               (size_t)(q->n_tokens - q->n_prompt));
    q->tokens[q->n_tokens++] = token;
    ss_sched_append(e->sched, it->seq);
    bool text_stop = q->p.stop_text && ss_stop_text_push(q->p.stop_text, token);
    ss_gen_state state = is_stop(q, token) || text_stop                 ? SS_GEN_STOP
                         : q->n_tokens - q->n_prompt >= q->p.max_tokens ? SS_GEN_LENGTH
                                                                        : SS_GEN_RUNNING;
    if (state != SS_GEN_RUNNING)
        finish(e, it->seq, token, state, NULL);
    else if (q->cb)
        q->cb(q->ctx, token, state, NULL);
}

/* The call ends: its items' sequences leave it. False when there was nothing in it. */
static bool end_call(ss_gen_engine *e)
{
    if (!e->in_call) return false;
    e->in_call = false;
    e->n_release = 0;      /* sent with the call */
    return e->n_items > 0; /* none: a release-only call */
}

/* The call failed with error. alone: the model refused its inputs, so when it held several
 * sequences each runs alone from here (which one the model refused, a position past its table,
 * say, is unknown) and one request's bad input fails only that request; otherwise (the group
 * failed) every sequence in it fails now. Nothing was cached: retried rows are computed again. */
static void call_failed(ss_gen_engine *e, const char *error, bool alone)
{
    int32_t n = e->n_items, used = 0;
    for (int32_t i = 0; i < n; i++)
        used += e->seqs[e->items[i].seq].used;
    for (int32_t i = 0; i < n; i++) {
        gen_seq *q = &e->seqs[e->items[i].seq];
        if (q->used && alone && used > 1)
            q->suspect = true;
        else if (q->used)
            finish(e, e->items[i].seq, -1, SS_GEN_FAILED, error);
    }
}

void ss_gen_done(ss_gen_engine *e, const float *logits, int64_t rows, const char *error)
{
    if (!end_call(e)) return;
    int32_t n = e->n_items;
    char why[160];
    if (!error && logits && rows != e->n_rows && rows != e->n_lrows) {
        snprintf(why, sizeof why,
                 "the model returned %lld rows of logits for a call of %d rows (%d sampled)",
                 (long long)rows, e->n_rows, e->n_lrows);
        error = why;
    }
    if (error || !logits) {
        call_failed(e, error ? error : "no logits", false);
        return;
    }
    for (int32_t i = 0; i < n; i++)
        e->seqs[e->items[i].seq].suspect = false;
    ss_sched_done(e->sched, e->items, n);
    /* an item's rows end with its last token's, the one sampled from; with a row of logits per
     * sampled item they come in item order (equal counts: the same rows) */
    bool every = rows == e->n_rows;
    size_t row = 0, sampled = 0;
    for (int32_t i = 0; i < n; i++) {
        row += (size_t)e->items[i].n;
        if (!e->items[i].sample) continue;
        size_t at = every ? row - 1 : sampled++;
        take_token(e, &e->items[i], logits + at * (size_t)e->o.vocab);
    }
}

void ss_gen_refused(ss_gen_engine *e, const char *error)
{
    if (end_call(e)) call_failed(e, error, true);
}

void ss_gen_pool_lost(ss_gen_engine *e, const char *error)
{
    e->n_release = 0; /* nothing left to free there */
    for (int32_t i = 0; i < e->o.sched.max_sequences; i++) {
        gen_seq *q = &e->seqs[i];
        if (!q->used || q->pool_id < 0) continue;
        q->pool_id = -1;
        finish(e, i, -1, SS_GEN_FAILED, error);
    }
    e->n_release = 0;
}

int32_t ss_gen_active(const ss_gen_engine *e)
{
    ss_sched_stats s = ss_sched_get_stats(e->sched);
    return s.running + s.waiting;
}

ss_sched_stats ss_gen_stats(const ss_gen_engine *e)
{
    return ss_sched_get_stats(e->sched);
}
