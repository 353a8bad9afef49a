/*
 * pipeline.h (internal to src/serving): a servable's methods as stage pipelines, shared by the
 * parser and plugin loader (stages.c), the executor (pipeline.c) and the registry (registry.c).
 *
 * Every method owns a table of value slots: slots [0, n_inputs) are the method's inputs, then
 * each stage's outputs in stage order. References were resolved to slots at parse time, so the
 * executor never looks a name up. The servable declares one or more models ("models" in
 * servable.json; one named after the servable when absent), each with one or more subgraphs (its
 * files). Every (model, subgraph) pair is a separate backend, a worker of its own, reached through
 * its internal method (MindSpore's "@call_<key>_<subgraph>"): a model stage runs a model's
 * subgraph 0 and feeds it by position; Model.call reaches any subgraph.
 */
#ifndef SS_SERVING_PIPELINE_H
#define SS_SERVING_PIPELINE_H

#include "shardserve/plugin.h"
#include "shardserve/serving.h"

#include <pthread.h>

/* A python_function stage takes the same batch as a C-function stage, handed to the Python runner
 * pool (pyrunner.h) without waiting for it. */
typedef enum { SS_STAGE_MODEL = 0, SS_STAGE_C_FUNCTION = 1, SS_STAGE_PYTHON = 2 } ss_stage_kind;

typedef struct {
    ss_stage_kind kind;
    size_t model; /* model stages: the index into ss_pipeline.models */
    char *tag;    /* as errors name it: "Model 'key'", "Function 'servable.symbol'" or the user's */
    size_t n_inputs, n_outputs;
    size_t *in_slots;
    char **in_names;
    size_t out_base; /* outputs are slots out_base .. out_base + n_outputs - 1 */
    char **out_names;
    /* c_function */
    char *library, *symbol, *config_json;
    void *dl;
    const ss_plugin_descriptor *desc; /* NULL for a python_function stage */
    void *state;                      /* its ss_pypool_stage_state */
    bool serial;                      /* not SS_PLUGIN_THREAD_SAFE: one run at a time */
    bool here; /* SS_PLUGIN_INLINE: runs on the thread that holds the request */
    pthread_mutex_t run_mu;
    bool mu_ready;
    /* python_function: the .py file (symbol holds the function's name) and MindSpore's
     * batch_size (-1: per instance) */
    char *module;
    int batch_size;
} ss_pipe_stage;

typedef struct {
    char *name;
    size_t n_inputs, n_outputs, n_stages, n_values;
    char **inputs, **outputs;
    size_t *returns; /* slot of each method output */
    ss_pipe_stage *stages;
} ss_pipe_method;

typedef struct ss_pipe_run ss_pipe_run;
typedef struct ss_pipe_sig ss_pipe_sig;

#define SS_PIPE_MAX_MODELS 16

/* One backend: a declared model's subgraph. */
typedef struct {
    char *key;   /* the declared model's name (MindSpore's model key) */
    size_t decl; /* its position in the declaration ("models"; Model.call's model index) */
    uint32_t subgraph;
    char *method; /* the worker's internal method, "@call_<key>_<subgraph>" */
    /* the first model stage's names (none: a subgraph only Model.call reaches, whose worker
     * takes the model's own names) */
    size_t n_inputs, n_outputs;
    char **inputs, **outputs;
    ss_serving_backend backend;      /* running: its worker */
    const ss_serving_signature *sig; /* as last published (NULL: not ready), in sigs below */
} ss_pipe_model;

struct ss_pipeline {
    char *servable;
    size_t n_models;
    ss_pipe_model models[SS_PIPE_MAX_MODELS];
    size_t n_methods;
    ss_pipe_method *methods;
    /* running (pipeline.c) */
    pthread_mutex_t mu; /* guards the queue, stop and the signatures below */
    pthread_cond_t cv;
    ss_pipe_run *q_head, *q_tail;
    bool stop, started;
    size_t n_threads;
    pthread_t threads[8];
    ss_pipe_sig *sigs;    /* every model signature published (newest first), freed at the end */
    struct ss_pypool *py; /* the Python stage runners (NULL: no python_function stage) */
};

/* stages.c */
ss_status *ss_pipeline_load_plugins(ss_pipeline *p);
void ss_pipeline_unload_plugins(ss_pipeline *p);

/* pipeline.c: start the stage threads in front of the models' backends (one per model, in
 * ss_pipeline.models order); record model k's published signature and compose the servable's
 * (*out NULL while a model is not ready yet; an error only when out of memory; free *out with
 * ss_serving_signature_free); forget model k's when its worker withdraws. */
ss_status *ss_pipeline_start(ss_pipeline *p, const ss_serving_backend *models,
                             ss_serving_backend *out);
ss_status *ss_pipeline_compose(ss_pipeline *p, size_t model, const ss_serving_signature *model_sig,
                               ss_serving_signature **out);
void ss_pipeline_forget(ss_pipeline *p, size_t model);
/* The first model not ready (n_models: none). */
size_t ss_pipeline_waiting(ss_pipeline *p);
void ss_pipeline_stop(ss_pipeline *p);
/* Model k's internal method as last published (NULL while its worker is not ready). */
const ss_serving_method *ss_pipeline_model_spec(ss_pipeline *p, size_t model);
/* The backend of the declared model `decl`'s subgraph (SIZE_MAX when there is none). */
size_t ss_pipeline_find_model(const ss_pipeline *p, size_t decl, uint32_t subgraph);

/* pymodel.c: Model.call from a Python stage, synchronously through the worker (the plugin ABI's
 * batch: instances of the model's inputs in, the model's outputs allocated through the batch).
 * ss_pipeline_model_outputs: how many outputs that call gives (0: no such model or not ready). */
int ss_pipeline_model_call(void *ctx, uint32_t model, uint32_t subgraph, ss_plugin_batch *b,
                           char *err, size_t cap);
uint32_t ss_pipeline_model_outputs(void *ctx, uint32_t model, uint32_t subgraph);

#endif
