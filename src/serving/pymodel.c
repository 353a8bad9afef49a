/*
 * pymodel: Model.call from inside a Python function stage (MindSpore's `model.call(x)` and
 * `model.call([[x1], [x2]])`). The runner sends the instances through its segment (pyrunner.c);
 * the stage thread that is running the function submits them to the worker of that model's
 * subgraph as its internal method (@call_<key>_<subgraph>, with MindSpore's per-instance checks)
 * and blocks until the worker answers (the worker's request timeout bounds that), then hands the
 * outputs back. The names are the published spec's, so a subgraph no stage names works too.
 */
#include "pipeline.h"
#include "pyrunner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ss_predict_reply *got;
    bool done;
} waiter;

static void call_done(void *ctx, ss_predict_reply *got)
{
    waiter *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->got = got;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* The batch's instances as a request of the internal method, MindSpore's checks done per instance
 * into `pre` (the worker skips an instance already failed there). */
static bool build_request(const ss_serving_method *spec, ss_plugin_batch *b,
                          ss_predict_request *sub, ss_predict_reply *pre, char *err, size_t cap)
{
    for (uint32_t i = 0; i < b->n_instances; i++) {
        ss_serving_instance *inst = ss_predict_request_add_instance(sub);
        for (uint32_t k = 0; inst && k < b->n_inputs; k++) {
            const ss_plugin_tensor *t = &b->inputs[i * b->n_inputs + k];
            if (t->dtype == SS_PLUGIN_STRING || t->dtype == SS_PLUGIN_BYTES)
                return snprintf(err, cap, "input %u of instance %u is a str/bytes value", k, i),
                       false;
            ss_tensor view = {.dtype = (ss_dtype)t->dtype,
                              .ndim = t->ndim,
                              .data = (void *)t->data,
                              .nbytes = t->nbytes,
                              .storage = SS_STORE_BORROWED};
            memcpy(view.dims, t->dims, sizeof(int64_t) * (size_t)t->ndim);
            ss_status *e = ss_serving_instance_put(inst, spec->inputs[k].name, &view, false);
            if (e) inst = NULL, ss_status_free(e);
        }
        char why[512];
        if (!inst) return snprintf(err, cap, "out of memory"), false;
        if (!ss_serving_check_instance(spec, inst, why, sizeof why)) {
            ss_status *e =
                ss_predict_reply_fail_instance(pre, i, SS_SERVING_INVALID_INPUTS, "%s", why);
            if (e) return ss_status_free(e), snprintf(err, cap, "out of memory"), false;
        }
    }
    return true;
}

/* The worker's reply into the batch: per-instance errors, else every model output. */
static int take_reply(const ss_serving_method *spec, ss_predict_reply *got, ss_plugin_batch *b,
                      char *err, size_t cap)
{
    bool whole = got && got->count == 0 && got->error_count > 0;
    if (!got || (!whole && got->count != b->n_instances))
        return snprintf(err, cap, "the model's reply does not match the call"), 1;
    for (uint32_t i = 0; i < b->n_instances; i++) {
        size_t j = whole ? 0 : i;
        if (got->errors && j < got->error_count && got->errors[j].code) {
            b->fail_instance(b, i,
                             got->errors[j].message ? got->errors[j].message : "Predict failed");
            continue;
        }
        for (uint32_t k = 0; k < b->n_outputs; k++) {
            const ss_serving_item *it =
                ss_serving_instance_find(&got->instances[i], spec->outputs[k].name);
            void *dst = it ? b->alloc_output(b, i, k, (int32_t)it->tensor.dtype, it->tensor.ndim,
                                             it->tensor.dims, 0)
                           : NULL;
            if (!dst) return snprintf(err, cap, "the model returned no output %u", k), 1;
            if (it->tensor.nbytes) memcpy(dst, it->tensor.data, it->tensor.nbytes);
        }
    }
    return 0;
}

/* The backend Model.call means, or an error in err (MindSpore's text for a subgraph). */
static size_t called_model(ss_pipeline *p, uint32_t decl, uint32_t subgraph, char *err, size_t cap)
{
    size_t k = ss_pipeline_find_model(p, decl, 0), n = 0;
    if (k == SIZE_MAX) return snprintf(err, cap, "the model is not declared"), SIZE_MAX;
    while (ss_pipeline_find_model(p, decl, (uint32_t)n) != SIZE_MAX)
        n++;
    if (subgraph >= n)
        return snprintf(err, cap,
                        "The model does not have subgraph of index %u, the subgraph count of the "
                        "model is %zu",
                        subgraph, n),
               SIZE_MAX;
    return ss_pipeline_find_model(p, decl, subgraph);
}

uint32_t ss_pipeline_model_outputs(void *ctx, uint32_t decl, uint32_t subgraph)
{
    ss_pipeline *p = ctx;
    char err[256];
    size_t k = called_model(p, decl, subgraph, err, sizeof err);
    const ss_serving_method *spec = k == SIZE_MAX ? NULL : ss_pipeline_model_spec(p, k);
    return spec ? (uint32_t)spec->n_outputs : 0;
}

int ss_pipeline_model_call(void *ctx, uint32_t decl, uint32_t subgraph, ss_plugin_batch *b,
                           char *err, size_t cap)
{
    ss_pipeline *p = ctx;
    size_t k = called_model(p, decl, subgraph, err, cap);
    if (k == SIZE_MAX) return 1;
    if (!b->n_instances) return snprintf(err, cap, "Input instances count is 0"), 1;
    const ss_serving_method *spec = ss_pipeline_model_spec(p, k);
    if (!spec || spec->n_outputs != b->n_outputs)
        return snprintf(err, cap, "the model is not ready"), 1;
    if (b->n_inputs != spec->n_inputs)
        return snprintf(err, cap,
                        "The inputs count %u of instance 0 is not equal to the inputs count %zu of "
                        "the model",
                        b->n_inputs, spec->n_inputs),
               1;
    ss_predict_request *sub = ss_predict_request_new(p->servable, p->models[k].method, 0);
    ss_predict_reply *pre = sub ? ss_predict_reply_new(b->n_instances) : NULL;
    if (!pre || !build_request(spec, b, sub, pre, err, cap)) {
        if (!pre) snprintf(err, cap, "out of memory");
        ss_predict_request_free(sub);
        ss_predict_reply_free(pre);
        return 1;
    }
    waiter w = {.done = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    p->models[k].backend.submit(p->models[k].backend.ctx, sub, 0, pre, call_done, &w);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    int rc = take_reply(spec, w.got, b, err, cap);
    ss_predict_reply_free(w.got);
    ss_predict_request_free(sub);
    return rc;
}
