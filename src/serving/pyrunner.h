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
 * way. A call is the plugin ABI's batch (ss_plugin_batch), but asynchronous: whichever thread holds
 * the request hands it to a free runner and goes on; each runner has a serve thread of its own (its
 * owner) that waits for that runner's answer and finishes the call, so a request meets one wake-up
 * each way and no thread hand-off inside serve.
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
/* Run a stage over a batch without waiting: a free runner gets it at once, else it queues for the
 * next. done() runs once, on the thread of the runner that answered (or on the caller's when the
 * call fails before reaching one), with rc 0 or 1 and a message; the batch's outputs and failed
 * instances are filled by then. `state` is ss_pypool_stage_state(pool, stage). Thread-safe. */
typedef void (*ss_pypool_done)(void *ctx, int rc, const char *err);
void ss_pypool_submit(void *state, ss_plugin_batch *b, ss_pypool_done done, void *ctx);
void *ss_pypool_stage_state(ss_pypool *pool, uint32_t stage);
/* Stop taking calls: the queued and running ones fail (done() runs before this returns). */
void ss_pypool_stop(ss_pypool *pool);
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
