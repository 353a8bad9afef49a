/*
 * The C-plugin example's pre- and post-processing (examples/stages_plugin): written against
 * include/shardserve/plugin.h only, as a user's plugin would be.
 *   ss_example_scale    x (float32, any shape) -> x * config.scale (default 1: an identity stage)
 *   ss_example_argmax   logits (float32 [rows, classes]) -> label (int64 [rows], the argmax of
 *                       each row) and score (float32 [rows], its value)
 */
#include "shardserve/plugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float scale;
} scale_state;

static void *scale_init(const char *config, uint32_t n_in, const char *const *in, uint32_t n_out,
                        const char *const *out, char *err, size_t cap)
{
    (void)in, (void)out;
    if (n_in != 1 || n_out != 1) {
        snprintf(err, cap, "scale takes 1 input and gives 1 output, got %u and %u", n_in, n_out);
        return NULL;
    }
    scale_state *s = malloc(sizeof *s);
    if (!s) return snprintf(err, cap, "out of memory"), NULL;
    const char *v = strstr(config, "\"scale\":"); /* one number: no JSON library needed */
    s->scale = v ? strtof(v + 8, NULL) : 1.0f;
    return s;
}

static int scale_run(void *state, ss_plugin_batch *b, char *err, size_t cap)
{
    (void)err, (void)cap;
    float scale = ((scale_state *)state)->scale;
    for (uint32_t i = 0; i < b->n_instances; i++) {
        const ss_plugin_tensor *x = &b->inputs[i];
        if (x->dtype != SS_PLUGIN_FLOAT32) {
            b->fail_instance(b, i, "input x must be float32");
            continue;
        }
        float *y = b->alloc_output(b, i, 0, SS_PLUGIN_FLOAT32, x->ndim, x->dims, 0);
        if (!y) return snprintf(err, cap, "cannot allocate output %s", b->output_names[0]), 1;
        const float *in = x->data;
        size_t n = x->nbytes / sizeof(float);
        if (scale == 1.0f) {
            memcpy(y, in, x->nbytes);
            continue;
        }
        for (size_t k = 0; k < n; k++)
            y[k] = in[k] * scale;
    }
    return 0;
}

static void plain_fini(void *state)
{
    free(state);
}

const ss_plugin_descriptor *ss_example_scale(void)
{
    static const ss_plugin_descriptor d = {SS_PLUGIN_ABI_VERSION,
                                           sizeof(ss_plugin_descriptor),
                                           "scale",
                                           SS_PLUGIN_THREAD_SAFE | SS_PLUGIN_INLINE,
                                           scale_init,
                                           scale_run,
                                           plain_fini};
    return &d;
}

static void *argmax_init(const char *config, uint32_t n_in, const char *const *in, uint32_t n_out,
                         const char *const *out, char *err, size_t cap)
{
    (void)config, (void)in, (void)out;
    if (n_in != 1 || n_out != 2) {
        snprintf(err, cap, "argmax takes 1 input and gives 2 outputs, got %u and %u", n_in, n_out);
        return NULL;
    }
    return malloc(1);
}

static void argmax_one(ss_plugin_batch *b, uint32_t i)
{
    const ss_plugin_tensor *t = &b->inputs[i];
    if (t->dtype != SS_PLUGIN_FLOAT32 || t->ndim != 2 || t->dims[1] < 1) {
        b->fail_instance(b, i, "logits must be float32 [rows, classes]");
        return;
    }
    int64_t rows = t->dims[0], classes = t->dims[1];
    int64_t *label = b->alloc_output(b, i, 0, SS_PLUGIN_INT64, 1, &rows, 0);
    float *score = b->alloc_output(b, i, 1, SS_PLUGIN_FLOAT32, 1, &rows, 0);
    if (!label || !score) return; /* the server fails the request: an output is missing */
    const float *v = t->data;
    for (int64_t r = 0; r < rows; r++) {
        int64_t best = 0;
        for (int64_t c = 1; c < classes; c++)
            if (v[r * classes + c] > v[r * classes + best]) best = c;
        label[r] = best;
        score[r] = v[r * classes + best];
    }
}

static int argmax_run(void *state, ss_plugin_batch *b, char *err, size_t cap)
{
    (void)state, (void)err, (void)cap;
    for (uint32_t i = 0; i < b->n_instances; i++)
        argmax_one(b, i);
    return 0;
}

const ss_plugin_descriptor *ss_example_argmax(void)
{
    static const ss_plugin_descriptor d = {SS_PLUGIN_ABI_VERSION,
                                           sizeof(ss_plugin_descriptor),
                                           "argmax",
                                           SS_PLUGIN_THREAD_SAFE | SS_PLUGIN_INLINE,
                                           argmax_init,
                                           argmax_run,
                                           plain_fini};
    return &d;
}
