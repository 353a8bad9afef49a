/*
 * pyrunner.h (internal to src/serving): Python-function stages run in stage-runner processes
 * (`python3 -m shardserve_stages.runner`, started and supervised here), a small pool per servable.
 * Each runner owns one shared-memory segment (a memfd) and one SOCK_SEQPACKET socket: a call
 * writes the batch's tensors into the segment, sends one small message and waits for one back; the
 * runner's outputs come back in the same segment. Tensor bytes never cross the socket, and the
 * serving process never holds a GIL.
 *
 * A runner that dies during a call is restarted and that call's instances fail, naming the pid and
 * the signal; one that does not answer within the request timeout is killed and restarted the same
 * way. The stages' run() is the plugin ABI's (ss_plugin_batch), so the pipeline treats a Python
 * stage like a thread-safe C-function stage.
 */
#ifndef SS_SERVING_PYRUNNER_H
#define SS_SERVING_PYRUNNER_H

#include "shardserve/plugin.h"
#include "shardserve/serving.h"

#include <sys/types.h>

typedef struct ss_pypool ss_pypool;

typedef struct {
    const char *module;   /* the .py file defining the function (a path) */
    const char *function; /* its __name__ (lambdas are found through the shim's registry) */
    const char *key;      /* "<servable>.<function>", as MindSpore's errors name it */
    const char *method;   /* for the wrong-output-count text */
    int batch_size;       /* -1: per instance; 0: every instance at once; n: at most n per call */
    size_t n_inputs, n_outputs;
} ss_pystage_spec;

/* Start `runners` runner processes for these stages and wait until each has imported them. */
ss_status *ss_pypool_start(const char *servable, const ss_pystage_spec *stages, size_t n_stages,
                           size_t runners, ss_pypool **out);
/* Run stage `stage` over a batch (the plugin ABI's run()); thread-safe. */
int ss_pypool_run(ss_pypool *pool, uint32_t stage, ss_plugin_batch *b, char *err, size_t cap);
/* The run() of a Python stage whose state is ss_pypool_stage_state(pool, stage). */
const ss_plugin_descriptor *ss_pypool_descriptor(void);
void *ss_pypool_stage_state(ss_pypool *pool, uint32_t stage);
size_t ss_pypool_runners(const ss_pypool *pool);
void ss_pypool_free(ss_pypool *pool);
/* What Model.call runs: declared model `model`'s subgraph over a batch of instances, and how many
 * outputs that gives (0: no such model, or not ready). */
typedef int (*ss_pymodel_fn)(void *ctx, uint32_t model, uint32_t subgraph, ss_plugin_batch *b,
                             char *err, size_t cap);
typedef uint32_t (*ss_pymodel_outputs_fn)(void *ctx, uint32_t model, uint32_t subgraph);
void ss_pypool_set_model(ss_pypool *pool, ss_pymodel_fn fn, ss_pymodel_outputs_fn outputs,
                         void *ctx);

/* Helpers for any python3 child of serve (the runners, the servable_config.py export). */
ss_status *ss_pyproc_command(const char *module, const char *const *args, size_t n_args,
                             char ***argv, char ***envp);
void ss_pyproc_command_free(char **argv, char **envp);
ss_status *ss_pyproc_spawn(char **argv, char **envp, const int *from, const int *to, size_t n,
                           pid_t *pid);

#endif
