/*
 * pipeline.h (internal to src/serving): a servable's methods as stage pipelines, shared by the
 * parser and plugin loader (stages.c), the executor (pipeline.c) and the registry (registry.c).
 *
 * Every method owns a table of value slots: slots [0, n_inputs) are the method's inputs, then
 * each stage's outputs in stage order. References were resolved to slots at parse time, so the
 * executor never looks a name up. The servable's model is reached through one internal method
 * (model_method, MindSpore's "@call_<key>_0") that the worker serves; every model stage feeds it
 * by position.
 */
#ifndef SS_SERVING_PIPELINE_H
#define SS_SERVING_PIPELINE_H

#include "shardserve/plugin.h"
#include "shardserve/serving.h"

#include <pthread.h>

/* A python_function stage runs like a thread-safe C-function stage whose run() is the Python
 * runner pool's (pyrunner.h); only loading differs. */
typedef enum { SS_STAGE_MODEL = 0, SS_STAGE_C_FUNCTION = 1, SS_STAGE_PYTHON = 2 } ss_stage_kind;

typedef struct {
    ss_stage_kind kind;
    char *tag; /* as errors name it: "Model 'key'", "Function 'servable.symbol'" or the user's */
    size_t n_inputs, n_outputs;
    size_t *in_slots;
    char **in_names;
    size_t out_base; /* outputs are slots out_base .. out_base + n_outputs - 1 */
    char **out_names;
    /* c_function */
    char *library, *symbol, *config_json;
    void *dl;
    const ss_plugin_descriptor *desc;
    void *state;
    bool serial; /* not SS_PLUGIN_THREAD_SAFE: one run at a time */
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

struct ss_pipeline {
    char *servable;
    char *model_key;    /* the servable's distributed model: MindSpore's key is the servable name */
    char *model_method; /* the worker's internal method */
    size_t model_n_inputs, model_n_outputs;
    char **model_inputs, **model_outputs; /* the first model stage's names */
    size_t n_methods;
    ss_pipe_method *methods;
    /* running (pipeline.c) */
    ss_serving_backend model; /* the worker's backend */
    pthread_mutex_t mu;       /* guards the queue, stop and the signatures below */
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

/* pipeline.c: start the stage threads and wrap the worker's backend; the composed signature of a
 * model signature the worker publishes (NULL when out of memory; free with
 * ss_serving_signature_free). */
ss_status *ss_pipeline_start(ss_pipeline *p, ss_serving_backend model, ss_serving_backend *out);
ss_serving_signature *ss_pipeline_compose(ss_pipeline *p, const ss_serving_signature *model_sig);
void ss_pipeline_stop(ss_pipeline *p);
/* The model's internal method as last published (NULL before the worker is ready). */
const ss_serving_method *ss_pipeline_model_spec(ss_pipeline *p);

/* pymodel.c: Model.call from a Python stage, synchronously through the worker (the plugin ABI's
 * batch: instances of the model's inputs in, the model's outputs allocated through the batch). */
int ss_pipeline_model_call(void *ctx, uint32_t subgraph, ss_plugin_batch *b, char *err, size_t cap);

#endif
