/*
 * Shared by the KServe fuzz targets: a handler whose describe() publishes a fixed set of models
 * (batched and whole inputs, every kind of datatype, a servable with two methods) and an echo
 * that turns a decoded request into a reply, so the reply encoders run on whatever decoded.
 */
#ifndef SS_TESTS_KSERVE_FUZZ_COMMON_H
#define SS_TESTS_KSERVE_FUZZ_COMMON_H

#include <stdio.h>
#include <string.h>

#include "kserve_codec.h"

static int fuzz_describe(void *ctx, const char *servable, uint64_t version,
                         ss_serving_signature **out, char *why, size_t cap)
{
    (void)ctx;
    if (version > 2 || (strcmp(servable, "m") != 0 && strcmp(servable, "multi") != 0)) {
        snprintf(why, cap, "unknown");
        return SS_DESCRIBE_NOT_FOUND;
    }
    ss_serving_tensor_spec ins[] = {
        {(char *)"x", SS_DT_FLOAT32, true, 1, {-1}},
        {(char *)"w", SS_DT_INT8, false, 1, {2}},
        {(char *)"s", SS_DT_STRING, true, 0, {0}},
        {(char *)"h", SS_DT_FLOAT16, true, 2, {2, -1}},
    };
    ss_serving_tensor_spec outs[] = {{(char *)"x", SS_DT_FLOAT32, true, 1, {-1}},
                                     {(char *)"s", SS_DT_STRING, true, 0, {0}}};
    ss_serving_method ms[] = {{(char *)"a", ins, outs, 4, 2}, {(char *)"b", ins, outs, 1, 1}};
    ss_serving_signature sig = {.servable = (char *)servable,
                                .version = 1,
                                .methods = ms,
                                .n_methods = strcmp(servable, "m") == 0 ? 1 : 2,
                                .batch_size = 4,
                                .with_batch_dim = true,
                                .rank_size = 1,
                                .stage_size = 1};
    *out = ss_serving_signature_copy(&sig);
    return *out ? SS_DESCRIBE_OK : SS_DESCRIBE_NOT_FOUND;
}

static void fuzz_predict(void *ctx, ss_predict_request *req, ss_predict_done done, void *dctx)
{
    (void)ctx;
    (void)req;
    (void)done;
    (void)dctx;
}

static const ss_predict_handler fuzz_handler = {
    .ctx = NULL, .predict = fuzz_predict, .describe = fuzz_describe};

/* Every input item copied into the reply's instance (so "x" and "s" come back). */
static ss_predict_reply *fuzz_echo(const ss_predict_request *req)
{
    ss_predict_reply *r = ss_predict_reply_new(req->count);
    for (size_t i = 0; r && i < req->count; i++)
        for (size_t k = 0; k < req->instances[i].count; k++) {
            const ss_serving_item *it = &req->instances[i].items[k];
            ss_tensor copy;
            ss_status *st = ss_tensor_copy(&copy, &it->tensor);
            if (!st) st = ss_serving_instance_put(&r->instances[i], it->name, &copy, it->is_bytes);
            ss_tensor_free(&copy);
            ss_status_free(st);
        }
    return r;
}

#endif
