/*
 * worker: the Distributed Worker. It reads a rank table and a servable config, listens for
 * agents on the distributed address, waits (bounded) for every rank to register, checks what they
 * declare, and then answers predict requests by dispatching them to the agents: inputs to every
 * rank of stage 0, nothing to later stages, outputs from the last rank. Instances from several
 * requests are merged up to the model's batch size. It watches the agents (heartbeats, connection
 * loss) and reports not-ready the moment any rank is gone. It never executes a model.
 *
 * A ss_worker_set serves several (servable, version) workers behind one ss_predict_handler: the
 * serving registry's (serving.h), to which each worker publishes its signature when every rank
 * has registered and withdraws it when a rank is gone. Each worker is one event loop thread that
 * owns all of its state (src/worker/worker.c says how).
 */
#ifndef SHARDSERVE_WORKER_H
#define SHARDSERVE_WORKER_H

#include "shardserve/core.h"
#include "shardserve/serving.h"

/* ------------------------------------------------------------------ rank table */

typedef struct {
    char ip[64];
    int device_id;
    int rank_id;
} ss_rank_entry;

typedef struct {
    int n;
    ss_rank_entry *ranks; /* by rank id */
    char *json;           /* the file's content, passed to agents */
} ss_rank_table;

/* Both of MindSpore's forms (server_list, group_list), with its validations. */
ss_status *ss_rank_table_load(const char *path, ss_rank_table *out);
ss_status *ss_rank_table_parse(const char *text, size_t len, const char *what, ss_rank_table *out);
/* The stage/rank_size consistency checks against a servable (MindSpore's CheckRankConfig). */
ss_status *ss_rank_table_check(const ss_rank_table *t, int rank_size, int stage_size,
                               const char *what);
void ss_rank_table_free(ss_rank_table *t);

/* ------------------------------------------------------------------ servable config */

#define SS_MAX_IO 64

typedef struct {
    char name[128];
    int n_inputs, n_outputs;
    char inputs[SS_MAX_IO][128];
    char outputs[SS_MAX_IO][128];
} ss_method_config;

/* A generative servable ("generate" in servable.json): the worker runs the token loop over a
 * `shard --kv-pool` model whose KV cache stays in the agents' block pools. */
#define SS_GEN_MAX_STOP_IDS 16
typedef struct {
    bool enabled;
    int max_tokens;     /* a request's new tokens when it does not say (default 16) */
    int max_running;    /* sequences decoding together (default 32) */
    int max_sequences;  /* running + queued (default 256) */
    int step_tokens;    /* tokens per step: decodes plus prefill chunks (default 512) */
    int max_context;    /* prompt + new tokens at most (the model's positions; 0: no limit) */
    double kv_cache_mb; /* each rank's KV block pool (0: the agents' default, 64) */
    int micro_batches;  /* sequence groups in flight together (0: one per pipeline stage) */
    int n_stop_ids;
    int64_t stop_ids[SS_GEN_MAX_STOP_IDS]; /* end a sequence (e.g. the model's EOS) */
} ss_generate_config;

typedef struct {
    char name[128];
    int rank_size, stage_size;
    bool with_batch_dim;
    /* stage 0's inputs go over the link to its first rank only, which broadcasts them to the
     * stage through the comm layer (default); false: one link send per stage-0 rank */
    bool broadcast_inputs;
    /* MindSpore's enable_pipeline_infer: up to stage_size + 1 batches in flight, overlapping the
     * stages (default here); false: one batch at a time, the stages back to back */
    bool pipeline;
    int n_no_batch;
    char without_batch_dim_inputs[SS_MAX_IO][128];
    int n_methods;
    ss_method_config methods[16];
    /* dynamic batching */
    int max_batch_size;     /* 0: the model's batch size */
    int max_queue_delay_us; /* wait this long for more instances before dispatching a batch */
    /* Methods with "stages" (a composed servable): methods[] then holds only the model's internal
     * method and this the pipeline, handed to the registry when the worker starts (NULL: none). */
    ss_pipeline *stages;
    ss_generate_config gen;
    /* Which of the servable's models (a declared model's subgraph) this config's worker serves:
     * model 0 of n_models, model 0 owning the pipeline. A local model names its file (in the
     * version folder), which `serve` runs as a 1-rank group of its own; "" otherwise. */
    int model, n_models;
    char model_name[128];
    uint32_t subgraph;
    char local_file[1024];
} ss_servable_config;

/* SERVABLE_DIR/NAME/servable.json */
ss_status *ss_servable_config_load(const char *servable_dir, const char *name,
                                   ss_servable_config *out);
ss_status *ss_servable_config_parse(const char *text, size_t len, const char *what,
                                    const char *name, ss_servable_config *out);
/* The config of the servable's backend `model` (0 .. n_models - 1, in the pipeline's order). */
ss_status *ss_servable_config_parse_model(const char *text, size_t len, const char *what,
                                          const char *name, int model, ss_servable_config *out);
/* servable.json's text (or the one servable_config.py exports), and the path it came from. */
ss_status *ss_servable_config_text(const char *servable_dir, const char *name, char **text,
                                   size_t *len, char *path, size_t path_cap);
/* Free what a parsed config owns (its pipeline). */
void ss_servable_config_clear(ss_servable_config *c);

/* ------------------------------------------------------------------ workers */

typedef struct {
    const char *servable_dir;
    const char *servable;
    uint64_t version;       /* 0 -> 1, as MindSpore's start_servable */
    const char *rank_table; /* path */
    const char *distributed_address;
    int wait_agents_s;        /* 0 = forever */
    int request_timeout_ms;   /* per request; default 10000 */
    int heartbeat_ms;         /* default 1000 */
    int heartbeat_timeout_ms; /* no heartbeat answer for this long = rank gone; default 5000 */
    int max_enqueued;         /* default 10000 requests */
    int reply_spin_us;  /* while a reply is due, poll this long before sleeping (<= 0: never) */
    const void *secret; /* link authentication (NULL = none) */
    size_t secret_len;
    /* A servable with several models ("models"): each model's group by the model's name (the
     * rank_table/distributed_address above are the first model's). A model given no rank table
     * that declares "files" is local: a 1-rank group of its own, on 127.0.0.1, that the caller
     * starts (ss_worker_local_file). */
    int n_models;
    struct {
        const char *name, *rank_table, *distributed_address;
    } models[8];
} ss_worker_options;

typedef struct ss_worker ss_worker;
typedef struct ss_worker_set ss_worker_set;

ss_worker_set *ss_worker_set_new(void);
/* Load config and rank table, start listening. Agents may register from then on. */
ss_status *ss_worker_set_add(ss_worker_set *set, const ss_worker_options *opt, ss_worker **out);
/* Wait until every rank of every worker registered (each bounded by its wait_agents_s). */
ss_status *ss_worker_wait_ready(ss_worker *w);
const char *ss_worker_address(const ss_worker *w);
/* A servable's models after its first (the one ss_worker_set_add returned), each a worker with its
 * own address; NULL after the last. wait_ready on the first waits for them all. */
ss_worker *ss_worker_next_model(const ss_worker *w);
/* "name" or "name subgraph k" for messages. */
const char *ss_worker_model_label(const ss_worker *w);
/* A local model's ONNX file (a 1-rank group the caller starts on ss_worker_address); NULL for a
 * distributed model, whose agents are started by the user. */
const char *ss_worker_local_file(const ss_worker *w);
bool ss_worker_set_ready(void *set);
ss_predict_handler ss_worker_set_handler(ss_worker_set *set);
/* Answer every queued and in-flight request with an error now and take no more (a shutdown's
 * grace period is over); any thread, any number of times. ss_worker_set_free still follows. */
void ss_worker_set_stop(ss_worker_set *set);
/* Answer every queued and in-flight request with an error, tell agents to exit, free. */
void ss_worker_set_free(ss_worker_set *set);

#endif
