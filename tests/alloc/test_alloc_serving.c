/*
 * The serving registry's predict path (src/serving/registry.c) under allocation failure: a
 * request for a servable or method that does not exist, and one that is handed to the backend.
 * Every run must answer (done() once) with the right reply, an error reply, or no reply at all
 * when even the error could not be allocated (the front ends answer "out of memory" then): never
 * a crash. A backend that answers at once stands in for the worker, so the path is one thread.
 */
#include "allocfail.h"
#include "check.h"

#include "shardserve/serving.h"

#include <stdlib.h>
#include <string.h>

static int submitted;

static void answer_now(void *ctx, ss_predict_request *req, size_t method, ss_predict_reply *reply,
                       ss_predict_done done, void *done_ctx)
{
    (void)ctx, (void)req, (void)method;
    submitted++;
    done(done_ctx, reply);
}

typedef struct {
    ss_serving *s;
    const char *servable, *method;
    bool answered;
    ss_predict_reply *reply;
} predict_case;

static void on_done(void *ctx, ss_predict_reply *reply)
{
    predict_case *p = ctx;
    p->answered = true;
    p->reply = reply;
}

static ss_status *run_predict(void *ctx)
{
    predict_case *p = ctx;
    ss_predict_request *req = ss_predict_request_new(p->servable, p->method, 0);
    ss_serving_instance *inst = req ? ss_predict_request_add_instance(req) : NULL;
    ss_tensor x = {0};
    const int64_t dims[2] = {2, 3};
    ss_status *st =
        inst ? ss_tensor_alloc(&x, SS_DT_FLOAT32, 2, dims) : ss_errf(SS_ERR_NOMEM, "request");
    if (!st) st = ss_serving_instance_put(inst, "x", &x, false);
    ss_tensor_free(&x);
    if (st) {
        ss_predict_request_free(req);
        return st;
    }
    p->answered = false;
    p->reply = NULL;
    ss_predict_handler h = ss_serving_handler(p->s);
    h.predict(h.ctx, req, on_done, p);
    ss_predict_request_free(req);
    if (!p->answered) return ss_errf(SS_ERR_INTERNAL, "done() was not called");
    ss_predict_reply *r = p->reply;
    if (r && (!r->error_count || !r->errors[0].code)) return NULL; /* verify() frees it */
    const char *msg = !r                     ? "out of memory (no reply)"
                      : r->errors[0].message ? r->errors[0].message
                                             : "Predict failed";
    st = ss_errf(strstr(msg, "out of memory") ? SS_ERR_NOMEM : SS_ERR_INVALID, "%s", msg);
    ss_predict_reply_free(r);
    p->reply = NULL;
    return st;
}

static bool verify_predict(void *ctx)
{
    predict_case *p = ctx;
    bool ok = p->reply && p->reply->count == 1;
    ss_predict_reply_free(p->reply);
    p->reply = NULL;
    return ok;
}

static void refused_and_submitted_requests(void)
{
    static ss_serving_tensor_spec in = {
        .name = "x", .dtype = SS_DT_FLOAT32, .ndim = 2, .dims = {2, 3}};
    static ss_serving_tensor_spec out = {
        .name = "y", .dtype = SS_DT_FLOAT32, .ndim = 1, .dims = {2}};
    static ss_serving_method m = {"predict", &in, &out, 1, 1};
    ss_serving_signature sig = {.servable = "mm",
                                .version = 1,
                                .methods = &m,
                                .n_methods = 1,
                                .batch_size = 1,
                                .rank_size = 1,
                                .stage_size = 1};
    ss_serving *s = ss_serving_new();
    CHECK(s != NULL);
    ss_serving_entry *e;
    CHECK_OK(ss_serving_add(s, "mm", 1, (ss_serving_backend){NULL, answer_now}, &e));
    CHECK_OK(ss_serving_publish(e, &sig));

    const struct {
        const char *servable, *method, *expect_error;
    } cases[] = {
        {"other", "predict", "servable is not available"},
        {"mm", "nope", "method is not available"},
        {"mm", "predict", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        predict_case p = {.s = s, .servable = cases[i].servable, .method = cases[i].method};
        allocfail_case c = {.name = cases[i].expect_error ? cases[i].expect_error : "submitted",
                            .ctx = &p,
                            .run = run_predict,
                            .verify = verify_predict,
                            .expect_error = cases[i].expect_error};
        long allocs = 0;
        CHECK(allocfail_loop(&c, &allocs) == 0);
        CHECK_MSG(allocs > 3, "%s: the clean run made %ld allocations", c.name, allocs);
    }
    CHECK(submitted > 0);
    ss_serving_free(s);
}

TEST_MAIN(TEST(refused_and_submitted_requests))
