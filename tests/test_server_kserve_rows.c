/*
 * A KServe request of N batch rows costs O(N) to decode and answer, counted, not timed (issue 14):
 * realloc is wrapped (-Wl,--wrap=realloc) to add up the bytes each call would copy if it moved the
 * block (the old block's usable size, or the new size if smaller). glibc often grows a block in
 * place, ASan's allocator always moves it, so a growth of one slot a call costs O(N^2) bytes there
 * only: the request's instance array grew so, and four JSON requests of 40,000 rows went
 * unanswered for 120 s in the ASan CI stage. Here the count is the same in every build:
 *  - ss_kserve_rest_decode_infer + ss_kserve_rest_encode_reply of a JSON request of 40,000 rows
 *    copy at most 4x the bytes a row of a 1,000-row request copies (growing by one slot: ~40x);
 *  - 100,000 ss_predict_request_add_instance calls copy at most twice the final array (it doubles;
 *    growing by one slot: ~50,000 times it).
 */
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kserve_codec.h"
#include "kserve_rest.h"
#include "shardserve/server.h"
#include "shardserve/serving.h"

void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);

static size_t moved_bytes; /* what the reallocations so far would copy if each moved its block */

void *__wrap_realloc(void *p, size_t n)
{
    if (p) {
        size_t old = malloc_usable_size(p);
        __atomic_add_fetch(&moved_bytes, old < n ? old : n, __ATOMIC_RELAXED);
    }
    return __real_realloc(p, n);
}

/* "bm": one method, "x" FP32 [-1, 1] in, "y" FP32 [-1, 1] out, batched (test_hostile's servable) */
static int rows_describe(void *ctx, const char *servable, uint64_t version,
                         ss_serving_signature **out, char *why, size_t cap)
{
    (void)ctx;
    (void)version;
    if (strcmp(servable, "bm") != 0) {
        snprintf(why, cap, "unknown servable '%s'", servable);
        return SS_DESCRIBE_NOT_FOUND;
    }
    ss_serving_tensor_spec x = {
        .name = (char *)"x", .dtype = SS_DT_FLOAT32, .batched = true, .ndim = 1, .dims = {1}};
    ss_serving_tensor_spec y = {
        .name = (char *)"y", .dtype = SS_DT_FLOAT32, .batched = true, .ndim = 1, .dims = {1}};
    ss_serving_method m = {
        .name = (char *)"predict", .inputs = &x, .outputs = &y, .n_inputs = 1, .n_outputs = 1};
    ss_serving_signature sig = {.servable = (char *)servable,
                                .version = 1,
                                .methods = &m,
                                .n_methods = 1,
                                .batch_size = 4,
                                .with_batch_dim = true,
                                .rank_size = 1,
                                .stage_size = 1};
    *out = ss_serving_signature_copy(&sig);
    return *out ? SS_DESCRIBE_OK : SS_DESCRIBE_NOT_FOUND;
}

static void rows_predict(void *ctx, ss_predict_request *req, ss_predict_done done, void *dctx)
{
    (void)ctx;
    (void)req;
    (void)done;
    (void)dctx;
}

static const ss_predict_handler rows_handler = {.predict = rows_predict, .describe = rows_describe};

/* {"inputs":[{"name":"x","datatype":"FP32","shape":[rows,1],"data":[0,1,..,6,0,..]}]} */
static char *rows_body(size_t rows, size_t *len)
{
    size_t cap = 128 + 2 * rows;
    char *body = malloc(cap);
    if (!body) return NULL;
    int n = snprintf(body, cap,
                     "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[%zu,1],"
                     "\"data\":[",
                     rows);
    size_t at = (size_t)n;
    for (size_t r = 0; r < rows; r++) {
        body[at++] = (char)('0' + r % 7);
        body[at++] = r + 1 < rows ? ',' : ']';
    }
    memcpy(body + at, "}]}", 4);
    *len = at + 3;
    return body;
}

/* The bytes decoding a request of `rows` rows and encoding its reply (y = -x / 2) would copy
 * in moving reallocations; SIZE_MAX when a step fails. */
static size_t rows_moved(size_t rows)
{
    size_t len = 0;
    char *body = rows_body(rows, &len);
    CHECK(body != NULL);
    if (!body) return SIZE_MAX;
    size_t before = moved_bytes;
    ss_kserve_call *call = NULL;
    ss_predict_request *req = NULL;
    ss_kserve_error err = {0};
    bool ok = ss_kserve_rest_decode_infer(&rows_handler, "/v2/models/bm/infer", body, len, NULL,
                                          &call, &req, &err);
    CHECK_MSG(ok, "%zu rows: %d %s", rows, err.status, err.msg);
    CHECK(!ok || req->count == rows);
    ss_predict_reply *reply = ok ? ss_predict_reply_new(rows) : NULL;
    for (size_t r = 0; reply && r < rows; r++) {
        const ss_serving_item *x = ss_serving_instance_find(&req->instances[r], "x");
        ss_tensor y;
        int64_t one = 1;
        CHECK_OK(ss_tensor_alloc(&y, SS_DT_FLOAT32, 1, &one));
        *(float *)y.data = -*(const float *)x->tensor.data / 2;
        CHECK_OK(ss_serving_instance_put(&reply->instances[r], "y", &y, false));
        ss_tensor_free(&y);
    }
    char *out = NULL;
    size_t out_len = 0, json_len = 0;
    int status = reply ? ss_kserve_rest_encode_reply(call, reply, &out, &out_len, &json_len) : 0;
    CHECK_MSG(!ok || status == 200, "%zu rows: reply status %d: %.200s", rows, status,
              out ? out : "");
    /* the last row's answer: -(rows - 1) % 7 / 2 */
    char last[32];
    snprintf(last, sizeof last, ",%.9g]", -(double)((rows - 1) % 7) / 2);
    CHECK_MSG(!out || strstr(out, last), "%zu rows: reply lacks %s", rows, last);
    size_t moved = moved_bytes - before;
    free(out);
    ss_predict_reply_free(reply);
    ss_predict_request_free(req);
    ss_kserve_call_free(call);
    return ok && status == 200 ? moved : SIZE_MAX;
}

static void kserve_rows_linear(void)
{
    size_t small = 1000, large = 40000;
    size_t a = rows_moved(small), b = rows_moved(large);
    if (a == SIZE_MAX || b == SIZE_MAX) return;
    double per_small = (double)a / (double)small, per_large = (double)b / (double)large;
    printf("    bytes moving reallocations would copy: %zu rows %.1f a row, %zu rows %.1f a row\n",
           small, per_small, large, per_large);
    CHECK_MSG(per_large <= 4 * per_small + 64,
              "a %zu-row request copies %.1f bytes a row in reallocations, a %zu-row one %.1f: "
              "growth faster than linear",
              large, per_large, small, per_small);
}

static void add_instance_doubles(void)
{
    ss_predict_request *req = ss_predict_request_new("s", "m", 0);
    CHECK(req != NULL);
    if (!req) return;
    size_t n = 100000, before = moved_bytes;
    for (size_t i = 0; i < n; i++)
        if (!ss_predict_request_add_instance(req)) {
            CHECK(!"out of memory");
            break;
        }
    size_t moved = moved_bytes - before, final = n * sizeof(ss_serving_instance);
    printf("    %zu appended instances: %zu bytes copied by moving reallocations (array %zu)\n", n,
           moved, final);
    CHECK_MSG(moved <= 2 * final,
              "%zu appends would copy %zu bytes, over twice the final array's %zu", n, moved,
              final);
    CHECK(req->count == n);
    ss_predict_request_free(req);
}

/* A request whose instances were moved out by hand (the fuzz targets' echo) grows again. */
static void add_instance_after_move(void)
{
    ss_predict_request *req = ss_predict_request_new("s", "m", 0);
    CHECK(req != NULL);
    if (!req) return;
    for (int i = 0; i < 5; i++)
        CHECK(ss_predict_request_add_instance(req) != NULL);
    ss_serving_instance *taken = req->instances;
    req->instances = NULL;
    req->count = 0;
    free(taken);
    for (int i = 0; i < 3; i++)
        CHECK(ss_predict_request_add_instance(req) != NULL);
    CHECK(req->count == 3);
    ss_predict_request_free(req);
}

/* A request of `rows` rows decoded (the call holds its rows' budget until freed), or NULL with
 * err set. */
static ss_kserve_call *decode_rows(size_t rows, ss_predict_request **req, ss_kserve_error *err)
{
    size_t len = 0;
    char *body = rows_body(rows, &len);
    ss_kserve_call *call = NULL;
    *req = NULL;
    memset(err, 0, sizeof *err);
    if (!body || !ss_kserve_rest_decode_infer(&rows_handler, "/v2/models/bm/infer", body, len, NULL,
                                              &call, req, err)) {
        ss_kserve_call_free(call);
        return NULL;
    }
    return call;
}

/* The row budget: a request that fits alone but not beside another's rows is busy (503, try
 * again), one that cannot fit alone is too large (413). Both used to be 413. */
static void busy_rows_are_503_too_many_413(void)
{
    ss_server_set_kserve_max_rows_mb(4);
    ss_predict_request *ra, *rb;
    ss_kserve_error err;
    ss_kserve_call *one = decode_rows(1, &ra, &err);
    CHECK(one != NULL);
    size_t per_row = one ? one->rows_held : 1;
    ss_predict_request_free(ra);
    ss_kserve_call_free(one);
    size_t rows = (3u << 20) / per_row; /* 3 of the 4 MB */
    ss_kserve_call *a = decode_rows(rows, &ra, &err);
    CHECK_MSG(a != NULL, "%d %s", err.status, err.msg);
    ss_kserve_call *b = decode_rows(rows, &rb, &err);
    CHECK_MSG(!b && err.status == 503 && strstr(err.msg, "try again later"), "%d %s", err.status,
              err.msg);
    ss_predict_request_free(ra);
    ss_kserve_call_free(a);
    b = decode_rows(rows, &rb, &err); /* the first let go of its rows */
    CHECK_MSG(b != NULL, "%d %s", err.status, err.msg);
    ss_predict_request_free(rb);
    ss_kserve_call_free(b);
    ss_kserve_call *c = decode_rows(2 * rows, &rb, &err);
    CHECK_MSG(!c && err.status == 413 && strstr(err.msg, "--kserve-max-batch-rows-mb"), "%d %s",
              err.status, err.msg);
    ss_server_set_kserve_max_rows_mb(SS_KSERVE_DEFAULT_MAX_ROWS_MB);
}

TEST_MAIN(TEST(kserve_rows_linear), TEST(add_instance_doubles), TEST(add_instance_after_move),
          TEST(busy_rows_are_503_too_many_413))
