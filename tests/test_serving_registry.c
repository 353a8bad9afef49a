/*
 * The serving registry (src/serving/registry.c): version resolution (0 = the highest running
 * version), MindSpore's request checks in MindSpore's order (names, then per instance the byte
 * size before the dtype), inputs taken whole reshaped to the model's shape, readiness, and the
 * reject hook that metrics use, and the model repository's unload (drain) and load. A recording
 * backend stands in for the worker.
 */
#include "check.h"

#include "shardserve/serving.h"

typedef struct {
    int calls;
    uint64_t tag; /* which version's backend */
    size_t method;
    size_t failed_instances;
    int64_t first_dims[SS_MAX_DIMS];
    int first_ndim;
} recorder;

static void record_submit(void *ctx, ss_predict_request *req, size_t method,
                          ss_predict_reply *reply, ss_predict_done done, void *done_ctx)
{
    recorder *r = ctx;
    r->calls++;
    r->method = method;
    r->failed_instances = 0;
    for (size_t i = 0; i < reply->error_count; i++)
        r->failed_instances += reply->errors[i].code != 0;
    const ss_serving_item *it =
        req->count ? ss_serving_instance_find(&req->instances[0], "x") : NULL;
    r->first_ndim = it ? it->tensor.ndim : -1;
    for (int d = 0; it && d < it->tensor.ndim; d++)
        r->first_dims[d] = it->tensor.dims[d];
    done(done_ctx, reply);
}

static ss_predict_reply *last_reply;
static void keep_reply(void *ctx, ss_predict_reply *reply)
{
    ss_predict_reply_free(last_reply);
    last_reply = reply;
}

static const char *reply_error(void)
{
    return last_reply && last_reply->error_count ? last_reply->errors[0].message : "";
}

/* A signature with one method "predict"(x float32 [2,3], batched or not) -> y. */
static ss_serving_signature signature(uint64_t version, bool batched)
{
    static ss_serving_tensor_spec in, out;
    static ss_serving_method m;
    in = (ss_serving_tensor_spec){
        .name = "x", .dtype = SS_DT_FLOAT32, .batched = batched, .ndim = 2, .dims = {2, 3}};
    out = (ss_serving_tensor_spec){
        .name = "y", .dtype = SS_DT_FLOAT32, .batched = batched, .ndim = 1, .dims = {2}};
    m = (ss_serving_method){"predict", &in, &out, 1, 1};
    return (ss_serving_signature){.servable = "mm",
                                  .version = version,
                                  .methods = &m,
                                  .n_methods = 1,
                                  .batch_size = 4,
                                  .with_batch_dim = batched,
                                  .rank_size = 1,
                                  .stage_size = 1};
}

/* A request of `n` instances, each x of the given dtype and shape. */
static ss_predict_request *request(uint64_t version, const char *method, int n, ss_dtype dt,
                                   int ndim, const int64_t *dims)
{
    ss_predict_request *req = ss_predict_request_new("mm", method, version);
    for (int i = 0; i < n; i++) {
        ss_tensor t;
        CHECK_OK(ss_tensor_alloc(&t, dt, ndim, dims));
        CHECK_OK(ss_serving_instance_put(ss_predict_request_add_instance(req), "x", &t, false));
    }
    return req;
}

static void predict(ss_serving *s, ss_predict_request *req)
{
    ss_predict_handler h = ss_serving_handler(s);
    h.predict(h.ctx, req, keep_reply, NULL);
    ss_predict_request_free(req);
}

static const int64_t shape23[2] = {2, 3};

/* A registry with version 1 of "mm" published (batched or not), answered by rec. */
static ss_serving *one_version(recorder *rec, bool batched)
{
    ss_serving *s = ss_serving_new();
    ss_serving_entry *e;
    CHECK_OK(ss_serving_add(s, "mm", 1, (ss_serving_backend){rec, record_submit}, &e));
    ss_serving_signature sig = signature(1, batched);
    CHECK_OK(ss_serving_publish(e, &sig));
    return s;
}

static void done_with(ss_serving *s)
{
    ss_predict_reply_free(last_reply);
    last_reply = NULL;
    ss_serving_free(s);
}

typedef struct {
    int n;
    char servable[64], method[64];
    uint64_t version;
    int64_t code;
} rejects;

static void on_reject(void *ctx, const char *servable, uint64_t version, const char *method,
                      int64_t code)
{
    rejects *r = ctx;
    r->n++;
    snprintf(r->servable, sizeof r->servable, "%s", servable);
    snprintf(r->method, sizeof r->method, "%s", method);
    r->version = version;
    r->code = code;
}

static void version_zero_is_the_highest_running(void)
{
    ss_serving *s = ss_serving_new();
    recorder rec[3] = {{.tag = 1}, {.tag = 2}, {.tag = 3}};
    ss_serving_entry *e[3];
    for (int v = 0; v < 3; v++)
        CHECK_OK(ss_serving_add(s, "mm", (uint64_t)v + 1,
                                (ss_serving_backend){&rec[v], record_submit}, &e[v]));
    ss_serving_entry *dup;
    CHECK_ERR(ss_serving_add(s, "mm", 2, (ss_serving_backend){&rec[1], record_submit}, &dup),
              "started twice");
    CHECK(!ss_serving_ready(s));
    ss_serving_signature sig1 = signature(1, true), sig2 = signature(2, true);
    CHECK_OK(ss_serving_publish(e[0], &sig1));
    CHECK_OK(ss_serving_publish(e[1], &sig2));
    ss_serving_withdraw(e[2], "rank 0 is gone");
    CHECK(!ss_serving_ready(s)); /* version 3 is down */

    predict(s, request(0, "predict", 1, SS_DT_FLOAT32, 2, shape23));
    CHECK_MSG(rec[1].calls == 1 && rec[2].calls == 0, "version 0 went to v2 (%d) not v3 (%d)",
              rec[1].calls, rec[2].calls);
    ss_serving_withdraw(e[1], "stopped");
    predict(s, request(0, "predict", 1, SS_DT_FLOAT32, 2, shape23));
    CHECK(rec[0].calls == 1);
    predict(s, request(3, "predict", 1, SS_DT_FLOAT32, 2, shape23));
    CHECK(last_reply->error_count == 1 &&
          last_reply->errors[0].code == SS_SERVING_SERVABLE_UNAVAILABLE);
    CHECK_MSG(strstr(reply_error(), "not ready (rank 0 is gone)"), "%s", reply_error());
    ss_serving_withdraw(e[0], "stopped");
    predict(s, request(0, "predict", 1, SS_DT_FLOAT32, 2,
                       shape23)); /* none runs: the highest says why */
    CHECK_MSG(strstr(reply_error(), "not ready (rank 0 is gone)"), "%s", reply_error());
    CHECK(rec[0].calls == 1 && rec[1].calls == 1 && rec[2].calls == 0);
    CHECK_OK(ss_serving_publish(e[2], &sig2));
    CHECK_OK(ss_serving_publish(e[1], &sig2));
    CHECK_OK(ss_serving_publish(e[0], &sig1));
    CHECK(ss_serving_ready(s));
    ss_serving_free(s);
}

static void unknown_names_and_missing_inputs(void)
{
    ss_serving *s = ss_serving_new();
    rejects rj = {0};
    ss_serving_on_reject(s, on_reject, &rj);
    recorder rec = {0};
    ss_serving_entry *e;
    CHECK_OK(ss_serving_add(s, "mm", 1, (ss_serving_backend){&rec, record_submit}, &e));
    ss_serving_signature sig = signature(1, true);
    CHECK_OK(ss_serving_publish(e, &sig));

    ss_predict_request *req = request(0, "predict", 1, SS_DT_FLOAT32, 2, shape23);
    free(req->servable);
    req->servable = strdup("other");
    predict(s, req);
    CHECK_MSG(
        strstr(reply_error(), "Request servable(other) method(predict), servable is not available"),
        "%s", reply_error());
    CHECK(rj.n == 1 && !strcmp(rj.servable, "") && rj.version == 0 &&
          rj.code == SS_SERVING_INVALID_INPUTS);

    predict(s, request(0, "nope", 1, SS_DT_FLOAT32, 2, shape23));
    CHECK_MSG(strstr(reply_error(), "method is not available"), "%s", reply_error());
    CHECK(rj.n == 2 && !strcmp(rj.servable, "mm") && rj.version == 1 && !strcmp(rj.method, ""));

    req = ss_predict_request_new("mm", "predict", 0);
    ss_predict_request_add_instance(req);
    predict(s, req);
    CHECK_MSG(strstr(reply_error(), "Cannot find input x in instance input"), "%s", reply_error());
    CHECK(rj.n == 3 && !strcmp(rj.method, "predict"));
    CHECK(rec.calls == 0);
    done_with(s);
}

static void size_is_checked_before_dtype(void)
{
    recorder rec = {0};
    ss_serving *s = one_version(&rec, true);
    int64_t wrong[1] = {5};
    predict(s, request(0, "predict", 1, SS_DT_INT64, 1, wrong)); /* both wrong: the size is named */
    CHECK(rec.calls == 1 && rec.failed_instances == 1);
    CHECK_MSG(
        strstr(reply_error(), "Given model input 0 size 40 not match the size 24 defined in model"),
        "%s", reply_error());
    predict(s, request(0, "predict", 1, SS_DT_INT32, 2,
                       shape23)); /* the size fits, the dtype does not */
    CHECK_MSG(strstr(reply_error(), "Given model input 0 data type kMSI_Int32 not match the data "
                                    "type kMSI_Float32 defined in model"),
              "%s", reply_error());
    ss_predict_request *req =
        request(0, "predict", 2, SS_DT_FLOAT32, 2, shape23); /* one bad, one good */
    ss_serving_instance *bad = &req->instances[1];
    ss_tensor t;
    CHECK_OK(ss_tensor_alloc(&t, SS_DT_FLOAT32, 1, wrong));
    CHECK_OK(ss_serving_instance_put(bad, "x", &t, false));
    predict(s, req);
    CHECK(rec.calls == 3 && rec.failed_instances == 1);
    done_with(s);
}

static void whole_inputs_take_the_model_shape(void)
{
    recorder rec = {0};
    ss_serving *s = one_version(&rec, false);
    int64_t flat[1] = {6};
    predict(s, request(0, "predict", 1, SS_DT_FLOAT32, 1, flat));
    CHECK(rec.calls == 1 && rec.failed_instances == 0);
    CHECK_MSG(rec.first_ndim == 2 && rec.first_dims[0] == 2 && rec.first_dims[1] == 3, "ndim %d",
              rec.first_ndim);
    done_with(s);
}

static void describe_copies_the_signature(void)
{
    ss_serving *s = ss_serving_new();
    recorder rec = {0};
    ss_serving_entry *e;
    CHECK_OK(ss_serving_add(s, "mm", 4, (ss_serving_backend){&rec, record_submit}, &e));
    ss_predict_handler h = ss_serving_handler(s);
    ss_serving_signature *got = NULL;
    char why[256];
    CHECK(h.describe(h.ctx, "mm", 0, &got, why, sizeof why) == SS_DESCRIBE_NOT_READY && !got);
    CHECK(h.describe(h.ctx, "zz", 0, &got, why, sizeof why) == SS_DESCRIBE_NOT_FOUND);
    ss_serving_signature sig = signature(4, true);
    CHECK_OK(ss_serving_publish(e, &sig));
    CHECK(h.describe(h.ctx, "mm", 4, &got, why, sizeof why) == SS_DESCRIBE_OK && got);
    CHECK(got && got->version == 4 && got->n_methods == 1 &&
          !strcmp(got->methods[0].inputs[0].name, "x") && got->methods[0].inputs[0].dims[1] == 3);
    ss_serving_signature_free(got);
    ss_serving_free(s);
}

/* The name index: every name found, a repeated name replaces its value, and names appended by
 * hand (not through put) are still found. */
static void instance_names_are_indexed(void)
{
    ss_serving_instance inst = {0};
    char name[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "n%d", i);
        CHECK_OK(ss_serving_instance_put_string(&inst, name, "a", 1, false));
    }
    CHECK_OK(ss_serving_instance_put_string(&inst, "n17", "bb", 2, true));
    CHECK(inst.count == 5000);
    for (int i = 0; i < 5000; i += 7) {
        snprintf(name, sizeof name, "n%d", i);
        const ss_serving_item *it = ss_serving_instance_find(&inst, name);
        CHECK(it && !strcmp(it->name, name));
    }
    const ss_serving_item *rep = ss_serving_instance_find(&inst, "n17");
    CHECK(rep && rep->is_bytes);
    CHECK(!ss_serving_instance_find(&inst, "n5000") && !ss_serving_instance_find(&inst, ""));
    CHECK(inst.count < inst.cap); /* 5000 items in a capacity that doubles from 4 */
    if (inst.count < inst.cap) {
        inst.items[inst.count++] = (ss_serving_item){strdup("by-hand"), {0}, false};
        CHECK(ss_serving_instance_find(&inst, "by-hand") != NULL);
    }
    ss_serving_instance_clear(&inst);
}

/* More than max(1024, 4 x inputs) names in an instance is refused, naming the limit. */
static void too_many_names_are_refused(void)
{
    CHECK(ss_serving_max_names(1) == 1024 && ss_serving_max_names(1000) == 4000);
    ss_predict_request *req = ss_predict_request_new("mm", "predict", 0);
    ss_serving_instance *inst = ss_predict_request_add_instance(req);
    char name[32];
    for (int i = 0; i < 1025; i++) {
        snprintf(name, sizeof name, "x%d", i);
        CHECK_OK(ss_serving_instance_put_string(inst, i ? name : "x", "a", 1, false));
    }
    const char *names[] = {"x"};
    ss_predict_reply *bad = ss_predict_request_check_inputs(req, names, 1);
    CHECK(bad && bad->error_count == 1 && strstr(bad->errors[0].message, "limit 1024"));
    ss_predict_reply_free(bad);
    ss_predict_request_free(req);
}

/* A backend that keeps requests until told to answer (requests in flight). */
typedef struct {
    ss_predict_reply *reply[4];
    ss_predict_done done[4];
    void *done_ctx[4];
    int held;
} holder;

static void hold_submit(void *ctx, ss_predict_request *req, size_t method, ss_predict_reply *reply,
                        ss_predict_done done, void *done_ctx)
{
    (void)req;
    (void)method;
    holder *h = ctx;
    CHECK(h->held < 4);
    h->reply[h->held] = reply;
    h->done[h->held] = done;
    h->done_ctx[h->held++] = done_ctx;
}

static ss_serving_index_entry index_of(ss_serving *s, uint64_t version)
{
    ss_serving_index_entry *e = NULL, found = {0};
    size_t n = 0;
    CHECK(ss_serving_index(s, &e, &n));
    for (size_t i = 0; i < n; i++)
        if (e[i].version == version) found = e[i];
    free(e);
    return found;
}

/* Unload refuses new requests at once, lets the held one finish (UNLOADING until it has), and
 * leaves the other version serving; load brings it back. */
static void unload_drains_and_load_restores(void)
{
    ss_serving *s = ss_serving_new();
    holder hold = {0};
    recorder rec = {0};
    ss_serving_entry *e1, *e2;
    CHECK_OK(ss_serving_add(s, "mm", 1, (ss_serving_backend){&hold, hold_submit}, &e1));
    CHECK_OK(ss_serving_add(s, "mm", 2, (ss_serving_backend){&rec, record_submit}, &e2));
    ss_serving_signature sig1 = signature(1, true);
    CHECK_OK(ss_serving_publish(e1, &sig1));
    ss_serving_signature sig2 = signature(2, true);
    CHECK_OK(ss_serving_publish(e2, &sig2));
    predict(s, request(1, "predict", 1, SS_DT_FLOAT32, 2, shape23));
    CHECK(hold.held == 1 && !strcmp(index_of(s, 1).state, "READY"));
    char why[256];
    CHECK(ss_serving_set_loaded(s, "mm", 1, false, why, sizeof why) == SS_DESCRIBE_OK);
    ss_serving_index_entry x = index_of(s, 1);
    CHECK_MSG(!strcmp(x.state, "UNLOADING") && x.inflight == 1, "%s %ld", x.state, x.inflight);
    predict(s, request(1, "predict", 1, SS_DT_FLOAT32, 2, shape23));
    CHECK_MSG(strstr(reply_error(), "unloaded") && hold.held == 1, "%s", reply_error());
    CHECK(ss_serving_ready(s)); /* version 2 still serves; 1 does not count */
    predict(s, request(0, "predict", 1, SS_DT_FLOAT32, 2, shape23)); /* latest = 2 */
    CHECK(rec.calls == 1);
    hold.done[0](hold.done_ctx[0], hold.reply[0]); /* the held request finishes */
    CHECK(last_reply && last_reply->error_count == 0);
    x = index_of(s, 1);
    CHECK_MSG(!strcmp(x.state, "UNAVAILABLE") && x.inflight == 0 && strstr(x.reason, "unloaded"),
              "%s %s", x.state, x.reason);
    ss_predict_handler h = ss_serving_handler(s);
    ss_serving_signature *got = NULL;
    CHECK(h.describe(h.ctx, "mm", 1, &got, why, sizeof why) == SS_DESCRIBE_NOT_READY);
    CHECK(ss_serving_set_loaded(s, "mm", 1, true, why, sizeof why) == SS_DESCRIBE_OK);
    CHECK(!strcmp(index_of(s, 1).state, "READY"));
    predict(s, request(1, "predict", 1, SS_DT_FLOAT32, 2, shape23));
    CHECK(hold.held == 2);
    hold.done[1](hold.done_ctx[1], hold.reply[1]);
    CHECK(ss_serving_set_loaded(s, "mm", 9, false, why, sizeof why) == SS_DESCRIBE_NOT_FOUND &&
          strstr(why, "version 9"));
    CHECK(ss_serving_set_loaded(s, "zz", 0, false, why, sizeof why) == SS_DESCRIBE_NOT_FOUND);
    CHECK(ss_serving_set_loaded(s, "mm", 0, false, why, sizeof why) == SS_DESCRIBE_OK);
    CHECK(!ss_serving_ready(s)); /* every version unloaded */
    done_with(s);
}

TEST_MAIN(TEST(unload_drains_and_load_restores), TEST(instance_names_are_indexed),
          TEST(too_many_names_are_refused), TEST(version_zero_is_the_highest_running),
          TEST(unknown_names_and_missing_inputs), TEST(size_is_checked_before_dtype),
          TEST(whole_inputs_take_the_model_shape), TEST(describe_copies_the_signature))
