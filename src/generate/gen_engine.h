/*
 * gen_engine: the token loop of a generative servable, without the transport. Requests (prompt,
 * sampling, stop tokens, max tokens) go in; model calls come out (token ids, positions and KV
 * pool sequence ids: the keys and values stay where the model keeps them, a PagedAttention
 * model's block pool); their logits come back; tokens go to each request's callback as they are
 * chosen. Continuous batching (gen_sched.h): every step runs the decodes of all running
 * sequences as one batched call, and prefill chunks of equal length as one call each; sequences
 * join and leave at every step. Stop strings (gen_stop.h) are watched token by token. The caller
 * runs one call at a time, on one thread (the worker's loop).
 */
#ifndef SS_GENERATE_ENGINE_H
#define SS_GENERATE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "gen_sample.h"
#include "gen_sched.h"
#include "gen_stop.h"

typedef struct {
    int32_t vocab;
    ss_sched_options sched; /* blocks and block size must be the pool's */
    /* pool sequence ids are first_pool_id, + pool_id_step, ... (step 0 means 1): engines that
     * share one pool take disjoint ids */
    int64_t first_pool_id, pool_id_step;
} ss_gen_options;

typedef struct {
    ss_sample_params sample;
    int32_t max_tokens;      /* new tokens at most, >= 1 */
    const int64_t *stop_ids; /* tokens that end the sequence (included in the output); copied */
    int32_t n_stop_ids;
    /* optional, the caller's: each token is pushed to it, and a stop string it completes ends
     * the sequence (SS_GEN_STOP) */
    ss_stop_text *stop_text;
} ss_gen_params;

typedef enum {
    SS_GEN_RUNNING = 0, /* a token; more will come */
    SS_GEN_STOP,        /* the token was a stop id, or completed a stop string */
    SS_GEN_LENGTH,      /* max_tokens reached */
    SS_GEN_CANCELLED,   /* ss_gen_cancel (token -1) */
    SS_GEN_FAILED,      /* a model call failed (token -1, error set) */
} ss_gen_state;

/* Called with each new token (state RUNNING, or STOP/LENGTH with the last one) and once with
 * CANCELLED or FAILED (token -1). After a final state the request is gone. */
typedef void (*ss_gen_on_token)(void *ctx, int64_t token, ss_gen_state state, const char *error);

/* One model call: inputs [batch, seq] (input_ids, position_ids) and seq_ids [batch] (the engine
 * sends seq 1: rows of one token, several rows of one sequence in position order for a prompt
 * chunk); before it, the KV pool frees `release` and then creates `create`. batch 0: only the
 * frees (the model is not run; ss_gen_done's logits are ignored). logit_rows: the rows whose
 * logits are sampled (a sequence's last row in the step), at least one; a model that takes them
 * (`shard --kv-pool`'s input logit_rows) returns n_logit_rows rows of logits, one that does not
 * returns a row per row. Owned by the engine until ss_gen_done. */
typedef struct {
    int64_t batch, seq;
    const int64_t *input_ids, *positions, *seq_ids, *logit_rows;
    const int64_t *create, *release;
    int32_t n_create, n_release, n_logit_rows;
} ss_gen_call;

typedef struct ss_gen_engine ss_gen_engine;

ss_status *ss_gen_engine_new(const ss_gen_options *o, ss_gen_engine **out);
void ss_gen_engine_free(ss_gen_engine *e); /* requests still known are not called back */

/* A new request; *handle names it for ss_gen_cancel. Refused (nothing called back) when its
 * parameters are out of range or it can never fit the pool; *param (when param is not NULL) then
 * names the parameter at fault ("prompt", "max_tokens", "stop_token_ids", a sampling
 * parameter's name: literals), or NULL. */
ss_status *ss_gen_submit(ss_gen_engine *e, const int64_t *prompt, int32_t n_prompt,
                         const ss_gen_params *p, ss_gen_on_token cb, void *ctx, uint64_t *handle,
                         const char **param);

/* The request ends with CANCELLED before the next call is planned (unknown handles: nothing). */
void ss_gen_cancel(ss_gen_engine *e, uint64_t handle);

/* The next model call, false when there is nothing to run. Call ss_gen_done before asking again. */
bool ss_gen_next(ss_gen_engine *e, ss_gen_call *call);

/* The call ran: `rows` rows of logits [rows, seq, vocab] (the call's batch or its n_logit_rows;
 * any other count fails the call), or error: the servable failed (a rank lost, a link broken),
 * and every request in the call is FAILED with it. */
void ss_gen_done(ss_gen_engine *e, const float *logits, int64_t rows, const char *error);

/* The call's model refused its inputs (error). A call of one request fails it; in a call of
 * several each runs alone from the next call until its own call succeeds or fails, so one
 * request's bad input fails only that request. */
void ss_gen_refused(ss_gen_engine *e, const char *error);

/* The pool is gone (its agents restarted): every request with keys and values there fails with
 * error; queued ones (nothing cached) stay. Not during a call: ss_gen_done it first. */
void ss_gen_pool_lost(ss_gen_engine *e, const char *error);

/* Requests known (running or queued), and the scheduler's counts for /metrics. */
int32_t ss_gen_active(const ss_gen_engine *e);
ss_sched_stats ss_gen_stats(const ss_gen_engine *e);

#endif
