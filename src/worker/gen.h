/*
 * gen: the worker's side of a generative servable. Each instance of a generate request (prompt
 * and sampling parameters, as MindSpore inputs) becomes a request of the token-loop engine
 * (src/generate/gen_engine.h); the engine's model calls go to the agents as PREDICTs carrying
 * input_ids, position_ids and seq_ids plus the KV pool sequences to free and create; their logits
 * come back here. With the servable's tokenizer.json the tokens are also decoded to text, and a
 * request's stop strings (input "stop": strings, several in one separated by NUL bytes, as
 * MindSpore's and KServe's string tensors carry one string per instance) end its sequence; output
 * "text" is that text (gen_stop.h says what tokens and text hold then). Before the first request
 * the pool's size is learnt by a probe: one token of a throwaway sequence, run by every rank, each
 * answering with its pool's blocks. Used only on the worker's loop thread.
 */
#ifndef SS_WORKER_GEN_H
#define SS_WORKER_GEN_H

#include "gen_engine.h"
#include "shardserve/link.h"
#include "shardserve/serving.h"
#include "shardserve/worker.h"

/* How the token loop talks back to the worker about one instance of a request. */
typedef struct {
    /* The instance is done: out holds its outputs (tokens, finish_reason) or error is set
     * with code, a serving code: SS_SERVING_INVALID_INPUTS for the request's own fault (a
     * prompt id outside the vocabulary), SS_SERVING_SERVABLE_UNAVAILABLE for a full servable
     * (generate.max_sequences), 0 for any other failure (a system error). `input` names the
     * request input at fault, when one is (NULL otherwise): a literal or the method config's
     * name, valid as long as the servable's config. */
    void (*finish)(void *worker, void *request, size_t inst, const char *error, int64_t code,
                   const char *input);
    /* New tokens of a running instance, as they are sampled (optional), and with a tokenizer the
     * text they complete (else NULL): with stop strings only what no stop string can still claim
     * (gen_stop.h), so n or len may be 0. The pieces add up to the outputs. */
    void (*tokens)(void *worker, void *request, size_t inst, const int64_t *tokens, int n,
                   const char *text, size_t len);
    /* Has the request's client gone away? Polled before each model call (optional). */
    bool (*cancelled)(void *worker, void *request);
} ss_wgen_hooks;

typedef struct ss_wgen ss_wgen;

/* Micro-batches: with pipeline stages, the running sequences are split into groups (an engine
 * each, over its share of the pool) whose calls are in flight together, so stage 1 runs one group
 * while stage 2 runs another. */
#define SS_WGEN_MAX_MICRO_BATCHES 8
#define SS_WGEN_PROBE (-1) /* the ticket of the probe's calls */

ss_status *ss_wgen_new(const ss_generate_config *cfg, int micro_batches, const ss_wgen_hooks *hooks,
                       void *worker, ss_wgen **out);
/* The servable's tokenizer.json (path): text outputs and stop strings. A missing file is no
 * error (requests with stop strings are then refused); one that fails to load is logged and the
 * reason given to those requests. */
void ss_wgen_use_tokenizer(ss_wgen *g, const char *path);

/* Fails every request it still holds with `why`, then frees. */
void ss_wgen_free(ss_wgen *g, const char *why);

/* One instance of a request: its parameters checked (errors name the input, and *input says
 * which, as finish's `input` does), then queued; its outputs go into out (the reply's instance)
 * before finish is called; finish_reason among them when the method declares it or `reason`
 * asks. */
ss_status *ss_wgen_submit(ss_wgen *g, const ss_method_config *mc, const ss_serving_instance *in,
                          ss_serving_instance *out, void *request, size_t inst, bool reason,
                          const char **input);

/* The next model call (the probe first, while the pool is unknown); false: none now. Ask again
 * until false: each micro-batch may have one call in flight. *ticket names the call for
 * ss_wgen_done. Requests whose client went away (hooks.cancelled) end first, their pool
 * sequences freed by a later call. */
bool ss_wgen_next(ss_wgen *g, ss_gen_call *call, bool *probe, int *ticket);

/* A call ran (every call ss_wgen_next gave must come back here, failed or not): logits [batch,
 * seq, vocab] from the last rank, or an error; refused: the error is the model's refusal of the
 * call's inputs (its requests are then retried alone, see ss_gen_refused), not the group's
 * failure (every request in the call fails with it at once). For the probe, pool_blocks and
 * block_tokens are the smallest pool over the ranks. */
void ss_wgen_done(ss_wgen *g, int ticket, const ss_tensor *logits, const char *error, bool refused,
                  int64_t pool_blocks, int32_t block_tokens);

/* The agents are gone (their pools with them): every request fails with why; the next request
 * probes the new agents' pool. */
void ss_wgen_lost(ss_wgen *g, const char *why);

bool ss_wgen_busy(const ss_wgen *g); /* requests held */

/* Where the last rank is to write the logits of call `ticket` (output 0): a slot of shared memory
 * this process made when the pool became known, so a rank on this host writes them there and
 * sends only the key (one elsewhere, or logits too big for the slot, still send the bytes). False:
 * no place (the probe, or no shared memory). */
bool ss_wgen_logits_place(const ss_wgen *g, int ticket, ss_link_place *out);
/* Model calls whose logits came back through that shared memory, and over the link (cumulative,
 * also across new pools). */
void ss_wgen_logits_calls(const ss_wgen *g, uint64_t *shared, uint64_t *link);

/* The token loop's KV blocks and sequences (zeros before the pool is known). */
ss_sched_stats ss_wgen_stats(const ss_wgen *g);

#endif
