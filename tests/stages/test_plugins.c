/*
 * Plugins that break on purpose, for tests/stages/test_stages.py: every error path of a C-function
 * stage (include/shardserve/plugin.h) is reached through one of these symbols.
 *   ss_test_fail_negative  identity; fails each instance whose first float is negative
 *   ss_test_run_error      run() returns non-zero for the whole batch
 *   ss_test_one_output     declares 2 outputs, gives only the first (a broken plugin)
 *   ss_test_init_fails     init refuses (its config's text in the message)
 *   ss_test_old_abi        a descriptor built for another ABI version
 *   ss_test_identity_queued  identity, thread-safe but not SS_PLUGIN_INLINE: it runs on a stage
 *                          thread (bench/bench_serving.py's hand-off row)
 */
#include "shardserve/plugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *any_init(const char *config, uint32_t n_in, const char *const *in, uint32_t n_out,
                      const char *const *out, char *err, size_t cap)
{
    (void)config, (void)n_in, (void)in, (void)n_out, (void)out, (void)err, (void)cap;
    return malloc(1);
}

static void any_fini(void *state)
{
    free(state);
}

/* Output k of instance i: a copy of input 0. */
static int copy_input(ss_plugin_batch *b, uint32_t i, uint32_t k)
{
    const ss_plugin_tensor *x = &b->inputs[i * b->n_inputs];
    void *y = b->alloc_output(b, i, k, x->dtype, x->ndim, x->dims, x->nbytes);
    if (!y) return 1;
    memcpy(y, x->data, x->nbytes);
    return 0;
}

static int fail_negative_run(void *state, ss_plugin_batch *b, char *err, size_t cap)
{
    (void)state;
    for (uint32_t i = 0; i < b->n_instances; i++) {
        const ss_plugin_tensor *x = &b->inputs[i * b->n_inputs];
        if (x->dtype == SS_PLUGIN_FLOAT32 && x->nbytes >= 4 && *(const float *)x->data < 0) {
            char msg[64];
            snprintf(msg, sizeof msg, "negative input in instance %u", i);
            b->fail_instance(b, i, msg);
        } else if (copy_input(b, i, 0)) {
            return snprintf(err, cap, "alloc_output failed"), 1;
        }
    }
    return 0;
}

static int run_error_run(void *state, ss_plugin_batch *b, char *err, size_t cap)
{
    (void)state, (void)b;
    snprintf(err, cap, "the whole batch is refused");
    return 7;
}

static int one_output_run(void *state, ss_plugin_batch *b, char *err, size_t cap)
{
    (void)state, (void)err, (void)cap;
    for (uint32_t i = 0; i < b->n_instances; i++)
        copy_input(b, i, 0);
    return 0;
}

static void *init_fails_init(const char *config, uint32_t n_in, const char *const *in,
                             uint32_t n_out, const char *const *out, char *err, size_t cap)
{
    (void)n_in, (void)in, (void)n_out, (void)out;
    snprintf(err, cap, "refusing config %s", config);
    return NULL;
}

#define DESCRIPTOR(fn, version, init, run)                                                         \
    const ss_plugin_descriptor *fn(void)                                                           \
    {                                                                                              \
        static const ss_plugin_descriptor d = {                                                    \
            version, sizeof(ss_plugin_descriptor), #fn, 0, init, run, any_fini};                   \
        return &d;                                                                                 \
    }

DESCRIPTOR(ss_test_fail_negative, SS_PLUGIN_ABI_VERSION, any_init, fail_negative_run)
DESCRIPTOR(ss_test_run_error, SS_PLUGIN_ABI_VERSION, any_init, run_error_run)
DESCRIPTOR(ss_test_one_output, SS_PLUGIN_ABI_VERSION, any_init, one_output_run)
DESCRIPTOR(ss_test_init_fails, SS_PLUGIN_ABI_VERSION, init_fails_init, one_output_run)
DESCRIPTOR(ss_test_old_abi, SS_PLUGIN_ABI_VERSION + 41, any_init, one_output_run)

static int identity_run(void *state, ss_plugin_batch *b, char *err, size_t cap)
{
    (void)state;
    for (uint32_t i = 0; i < b->n_instances; i++)
        if (copy_input(b, i, 0)) return snprintf(err, cap, "cannot allocate the output"), 1;
    return 0;
}

const ss_plugin_descriptor *ss_test_identity_queued(void)
{
    static const ss_plugin_descriptor d = {SS_PLUGIN_ABI_VERSION,
                                           sizeof(ss_plugin_descriptor),
                                           "identity_queued",
                                           SS_PLUGIN_THREAD_SAFE,
                                           any_init,
                                           identity_run,
                                           any_fini};
    return &d;
}
