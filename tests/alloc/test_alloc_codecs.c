/*
 * MindSpore Serving's wire formats under allocation failure: a REST request body (numbers in
 * nested lists, a string, {"b64"} bytes, two instances) and a gRPC PredictRequest decoded into
 * the serving form, and a reply encoded back to REST JSON and to a PredictReply, each with the
 * 1st, 2nd, 3rd ... allocation failing; and the same for KServe v2's infer request and response,
 * over REST and gRPC (the models of the KServe fuzz targets' handler). Every run must give exactly
 * the clean run's request or bytes, or fail with an out-of-memory error: never a request with an
 * item or a value silently missing (cJSON and protobuf-c report a failed allocation only as NULL).
 */
#include "allocfail.h"
#include "check.h"
#include "grpc_codec.h"
#include "grpc_service.pb-c.h"
#include "kserve_fuzz_common.h"
#include "kserve_grpc.h"
#include "kserve_rest.h"
#include "ms_service.pb-c.h"
#include "rest_codec.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* protobuf-c's unpacker returns NULL both for bad input and when an allocation fails, so the
 * gRPC decoders' "cannot parse" may stand for one; the JSON decoders tell the two apart (json.h).
 */
#define DECODE_OOM "out of memory|cannot parse"

/* The fuzz targets' handler, but a known model whose signature cannot be copied is "out of
 * memory" (not ready), as the serving registry answers, not "not found". */
static int codec_describe(void *ctx, const char *servable, uint64_t version,
                          ss_serving_signature **out, char *why, size_t cap)
{
    int rc = fuzz_describe(ctx, servable, version, out, why, cap);
    if (rc == SS_DESCRIBE_NOT_FOUND && version <= 2 &&
        (!strcmp(servable, "m") || !strcmp(servable, "multi"))) {
        snprintf(why, cap, "out of memory");
        rc = SS_DESCRIBE_NOT_READY;
    }
    return rc;
}

static const ss_predict_handler codec_handler = {
    .ctx = NULL, .predict = fuzz_predict, .describe = codec_describe};

/* A request or reply as text: every field the decoders fill, values as hex. */
typedef struct {
    char *p;
    size_t len, cap;
} dump;

static void put(dump *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(dump *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char buf[256];
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (d->len + (size_t)n + 1 > d->cap) {
        size_t cap = (d->len + (size_t)n + 1) * 2;
        char *p = realloc(d->p, cap);
        if (!p) return;
        d->p = p, d->cap = cap;
    }
    memcpy(d->p + d->len, buf, (size_t)n + 1);
    d->len += (size_t)n;
}

static void dump_instance(dump *d, const ss_serving_instance *inst)
{
    for (size_t i = 0; i < inst->count; i++) {
        const ss_serving_item *it = &inst->items[i];
        const ss_tensor *t = &it->tensor;
        put(d, " %s:%s%s[", it->name, ss_dtype_name(t->dtype), it->is_bytes ? "/bytes" : "");
        for (int k = 0; k < t->ndim; k++)
            put(d, "%lld,", (long long)t->dims[k]);
        put(d, "]=");
        if (t->dtype == SS_DT_STRING) {
            const ss_string *s = t->data;
            for (size_t e = 0; s && e < t->nbytes / sizeof *s; e++) { /* bytes may hold NULs */
                put(d, "'");
                for (size_t b = 0; b < s[e].len; b++)
                    put(d, "%02x", (unsigned char)s[e].data[b]);
                put(d, "'");
            }
        } else {
            for (size_t b = 0; b < t->nbytes; b++)
                put(d, "%02x", ((const unsigned char *)t->data)[b]);
        }
    }
}

static char *dump_request(const ss_predict_request *r)
{
    dump d = {0};
    put(&d, "%s %s v%llu n%zu", r->servable, r->method, (unsigned long long)r->version, r->count);
    for (size_t i = 0; i < r->count; i++) {
        put(&d, " |");
        dump_instance(&d, &r->instances[i]);
    }
    return d.p;
}

/* ---------------------------------------------------------------- decoding */

typedef struct {
    bool grpc, kserve;      /* both: KServe's ModelInferRequest */
    const char *url, *body; /* REST */
    uint8_t *wire;          /* gRPC */
    size_t wire_len;
    char *want;
    ss_predict_request *got;
    ss_kserve_call *call; /* KServe: what the request's tensors borrow from */
} decode_case;

static ss_status *run_decode(void *ctx)
{
    decode_case *c = ctx;
    c->got = NULL;
    if (c->kserve && c->grpc) {
        ss_kserve_error err = {0};
        c->call = NULL;
        if (ss_kserve_grpc_decode_infer(&codec_handler, c->wire, c->wire_len, &c->call, &c->got,
                                        &err))
            return NULL; /* the call (the unpacked message) lives until the request is checked */
        ss_predict_request_free(c->got);
        ss_kserve_call_free(c->call);
        c->got = NULL, c->call = NULL;
        return ss_errf(err.status == 500 ? SS_ERR_NOMEM : SS_ERR_INVALID, "%d %s", err.status,
                       err.msg);
    }
    if (c->kserve) { /* the decoder takes the body (binary inputs would borrow from it) */
        char *body = strdup(c->body);
        if (!body) return ss_errf(SS_ERR_NOMEM, "out of memory");
        ss_kserve_error err = {0};
        c->call = NULL;
        bool ok = ss_kserve_rest_decode_infer(&codec_handler, c->url, body, strlen(c->body), NULL,
                                              &c->call, &c->got, &err);
        if (ok) return NULL; /* the call lives until the request is checked */
        ss_predict_request_free(c->got);
        ss_kserve_call_free(c->call);
        c->got = NULL, c->call = NULL;
        /* out of memory is the server's (500); a 400 blames the client, whatever it says */
        return ss_errf(err.status == 500 ? SS_ERR_NOMEM : SS_ERR_INVALID, "%d %s", err.status,
                       err.msg);
    }
    if (!c->grpc) return ss_rest_parse_request(c->url, c->body, strlen(c->body), &c->got);
    ss_predict_reply *invalid = NULL;
    ss_status *st = ss_grpc_decode_request(c->wire, c->wire_len, &c->got, &invalid);
    if (!st && invalid) { /* a request the checks refused: its message says why */
        const char *msg = invalid->error_count && invalid->errors[0].message
                              ? invalid->errors[0].message
                              : "(no message)";
        st = ss_errf(strstr(msg, "out of memory") ? SS_ERR_NOMEM : SS_ERR_INVALID, "%s", msg);
        ss_predict_reply_free(invalid);
        ss_predict_request_free(c->got);
        c->got = NULL;
    }
    return st;
}

static bool verify_decode(void *ctx)
{
    decode_case *c = ctx;
    char *got = c->got ? dump_request(c->got) : NULL;
    bool same = got && !strcmp(got, c->want);
    if (!same) fprintf(stderr, "  got  %s\n  want %s\n", got ? got : "(nothing)", c->want);
    free(got);
    ss_predict_request_free(c->got);
    ss_kserve_call_free(c->call);
    c->got = NULL, c->call = NULL;
    return same;
}

static void decode_under_failures(decode_case *c, const char *name)
{
    CHECK_OK(run_decode(c));
    c->want = c->got ? dump_request(c->got) : NULL;
    ss_predict_request_free(c->got);
    ss_kserve_call_free(c->call);
    c->got = NULL, c->call = NULL;
    CHECK_MSG(c->want && strstr(c->want, "|") != NULL, "%s: clean decode gave %s", name,
              c->want ? c->want : "nothing");
    allocfail_case a = {.name = name,
                        .ctx = c,
                        .run = run_decode,
                        .verify = verify_decode,
                        .error_needle = DECODE_OOM};
    long allocs = 0;
    CHECK(allocfail_loop(&a, &allocs) == 0);
    CHECK_MSG(allocs > 10, "%s: %ld allocations", name, allocs);
    printf("%s: %ld allocations, each failed in turn; decoded: %.300s\n", name, allocs,
           c->want ? c->want : "");
    free(c->want);
}

static void rest_request(void)
{
    decode_case c = {
        .url = "/model/mm/version/2:predict",
        .body =
            "{\"instances\": [{\"x\": [[1.5, 2.0], [3.0, 4.0]], \"k\": [1, 2, 3], \"s\": \"text\","
            " \"b\": {\"b64\": \"AAECAw==\", \"type\": \"bytes\"}, \"f\": true},"
            " {\"x\": [[5.0, 6.0], [7.0, 8.25]], \"k\": [4, 5, 6], \"s\": \"more\","
            " \"b\": {\"b64\": \"BAUG\", \"type\": \"bytes\"}, \"f\": false}]}"};
    decode_under_failures(&c, "REST request");
}

/* Batched x (2 instances of [3]), whole w, a BYTES scalar and a float16 [2, 1] per instance. */
#define KSERVE_BODY                                                                                \
    "{\"id\": \"r1\", \"inputs\": ["                                                               \
    "{\"name\": \"x\", \"shape\": [2, 3], \"datatype\": \"FP32\", \"data\": [1.5, 2, 3, 4, 5, "    \
    "6.25]},"                                                                                      \
    "{\"name\": \"w\", \"shape\": [2], \"datatype\": \"INT8\", \"data\": [7, -8]},"                \
    "{\"name\": \"s\", \"shape\": [2], \"datatype\": \"BYTES\", \"data\": [\"ab\", \"c\"]},"       \
    "{\"name\": \"h\", \"shape\": [2, 2, 1], \"datatype\": \"FP16\", \"data\": [1, 2, 3, 4]}],"    \
    " \"outputs\": [{\"name\": \"x\"}]}"

static void kserve_rest_request(void)
{
    decode_case c = {.kserve = true, .url = "/v2/models/m/infer", .body = KSERVE_BODY};
    decode_under_failures(&c, "KServe REST infer request");
}

static void decode_infer_request(Inference__ModelInferRequest *req, const char *name)
{
    decode_case c = {.grpc = true, .kserve = true};
    c.wire_len = inference__model_infer_request__get_packed_size(req);
    c.wire = malloc(c.wire_len);
    CHECK(c.wire != NULL);
    if (!c.wire) return;
    inference__model_infer_request__pack(req, c.wire);
    decode_under_failures(&c, name);
    free(c.wire);
}

static void kserve_grpc_request(void)
{
    /* typed contents: method b of servable multi takes x (FP32, batched) */
    float xs[6] = {1.5f, 2, 3, 4, 5, 6.25f};
    int64_t x_shape[2] = {2, 3}, w_shape[1] = {2}, s_shape[1] = {2}, h_shape[3] = {2, 2, 1};
    Inference__InferTensorContents xc = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
    xc.n_fp32_contents = 6, xc.fp32_contents = xs;
    Inference__ModelInferRequest__InferInputTensor x =
        INFERENCE__MODEL_INFER_REQUEST__INFER_INPUT_TENSOR__INIT;
    Inference__ModelInferRequest__InferInputTensor w = x, str = x, h = x;
    x.name = "x", x.datatype = "FP32", x.n_shape = 2, x.shape = x_shape, x.contents = &xc;
    Inference__ModelInferRequest__InferInputTensor *inputs[4] = {&x, &w, &str, &h};
    Inference__ModelInferRequest req = INFERENCE__MODEL_INFER_REQUEST__INIT;
    req.model_name = "multi.b";
    req.id = "r2";
    req.n_inputs = 1;
    req.inputs = inputs;
    decode_infer_request(&req, "KServe gRPC ModelInferRequest, typed contents");

    /* raw_input_contents: model m takes x, w (INT8, whole), s (BYTES) and h (FP16, batched) */
    x.contents = NULL;
    w.name = "w", w.datatype = "INT8", w.n_shape = 1, w.shape = w_shape;
    str.name = "s", str.datatype = "BYTES", str.n_shape = 1, str.shape = s_shape;
    h.name = "h", h.datatype = "FP16", h.n_shape = 3, h.shape = h_shape;
    uint8_t ws[2] = {7, 0xf8}, strs[] = {2, 0, 0, 0, 'a', 'b', 1, 0, 0, 0, 'c'};
    uint16_t hs[4] = {0x3c00, 0x4000, 0x4200, 0x4400};
    ProtobufCBinaryData raw[4] = {{sizeof xs, (uint8_t *)xs},
                                  {sizeof ws, ws},
                                  {sizeof strs, strs},
                                  {sizeof hs, (uint8_t *)hs}};
    req.model_name = "m";
    req.n_inputs = 4;
    req.n_raw_input_contents = 4;
    req.raw_input_contents = raw;
    decode_infer_request(&req, "KServe gRPC ModelInferRequest, raw contents");
}

static void grpc_request(void)
{
    float xs[2][4] = {{1.5f, 2, 3, 4}, {5, 6, 7, 8.25f}};
    int64_t dims[2] = {2, 2};
    Mindspore__Serving__Proto__TensorShape shape = MINDSPORE__SERVING__PROTO__TENSOR_SHAPE__INIT;
    shape.n_dims = 2;
    shape.dims = dims;
    Mindspore__Serving__Proto__Tensor x[2], s[2];
    Mindspore__Serving__Proto__Instance__ItemsEntry ex[2], es[2], *items[2][2];
    Mindspore__Serving__Proto__Instance inst[2], *ip[2];
    ProtobufCBinaryData text[2] = {{4, (uint8_t *)"text"}, {4, (uint8_t *)"more"}};
    for (int i = 0; i < 2; i++) {
        x[i] = (Mindspore__Serving__Proto__Tensor)MINDSPORE__SERVING__PROTO__TENSOR__INIT;
        x[i].shape = &shape;
        x[i].dtype = MINDSPORE__SERVING__PROTO__DATA_TYPE__MS_FLOAT32;
        x[i].tensor_data_case = MINDSPORE__SERVING__PROTO__TENSOR__TENSOR_DATA_DATA;
        x[i].data.data = (uint8_t *)xs[i];
        x[i].data.len = sizeof xs[i];
        s[i] = (Mindspore__Serving__Proto__Tensor)MINDSPORE__SERVING__PROTO__TENSOR__INIT;
        s[i].dtype = MINDSPORE__SERVING__PROTO__DATA_TYPE__MS_STRING;
        s[i].n_bytes_val = 1;
        s[i].bytes_val = &text[i];
        ex[i] = (Mindspore__Serving__Proto__Instance__ItemsEntry)
            MINDSPORE__SERVING__PROTO__INSTANCE__ITEMS_ENTRY__INIT;
        ex[i].key = "x";
        ex[i].value = &x[i];
        es[i] = ex[i];
        es[i].key = "s";
        es[i].value = &s[i];
        items[i][0] = &ex[i], items[i][1] = &es[i];
        inst[i] = (Mindspore__Serving__Proto__Instance)MINDSPORE__SERVING__PROTO__INSTANCE__INIT;
        inst[i].n_items = 2;
        inst[i].items = items[i];
        ip[i] = &inst[i];
    }
    Mindspore__Serving__Proto__ServableSpec spec = MINDSPORE__SERVING__PROTO__SERVABLE_SPEC__INIT;
    spec.name = "mm";
    spec.method_name = "predict";
    spec.version_number = 2;
    Mindspore__Serving__Proto__PredictRequest req =
        MINDSPORE__SERVING__PROTO__PREDICT_REQUEST__INIT;
    req.servable_spec = &spec;
    req.n_instances = 2;
    req.instances = ip;
    decode_case c = {.grpc = true};
    c.wire_len = mindspore__serving__proto__predict_request__get_packed_size(&req);
    c.wire = malloc(c.wire_len);
    CHECK(c.wire != NULL);
    if (!c.wire) return;
    mindspore__serving__proto__predict_request__pack(&req, c.wire);
    decode_under_failures(&c, "gRPC PredictRequest");
    free(c.wire);
}

/* ---------------------------------------------------------------- encoding */

typedef struct {
    ss_predict_request *req;
    ss_predict_reply *reply;
    bool grpc;
    ss_kserve_call *kserve; /* KServe REST: the call the request was decoded with */
    void *want, *got;
    size_t want_len, got_len;
} encode_case;

static ss_status *run_encode(void *ctx)
{
    encode_case *c = ctx;
    c->got = NULL;
    if (c->kserve) {
        size_t json_len;
        char *body = NULL;
        int status =
            ss_kserve_rest_encode_reply(c->kserve, c->reply, &body, &c->got_len, &json_len);
        if (status == 200) {
            c->got = body;
            return NULL;
        }
        ss_status *st = ss_errf(status == 500 ? SS_ERR_NOMEM : SS_ERR_INVALID, "%d %.*s", status,
                                body ? (int)c->got_len : 0, body ? body : "");
        free(body);
        return st;
    }
    if (c->grpc) return ss_grpc_encode_reply(c->req, c->reply, (uint8_t **)&c->got, &c->got_len);
    c->got = ss_rest_reply_json(c->reply, &c->got_len);
    return c->got ? NULL : ss_errf(SS_ERR_NOMEM, "out of memory");
}

static bool verify_encode(void *ctx)
{
    encode_case *c = ctx;
    bool same = c->got && c->got_len == c->want_len && !memcmp(c->got, c->want, c->want_len);
    free(c->got);
    c->got = NULL;
    return same;
}

static void encode_under_failures(encode_case *c, const char *name)
{
    CHECK_OK(run_encode(c));
    c->want = c->got, c->want_len = c->got_len;
    CHECK_MSG(c->want && c->want_len > 20, "%s: clean encode gave %zu bytes", name, c->want_len);
    /* KServe: stacked outputs are buffers the call owns until it is freed (LeakSanitizer checks
     * that in the sanitizer build), so the block count grows by design from run to run */
    allocfail_case a = {.name = name,
                        .ctx = c,
                        .run = run_encode,
                        .verify = verify_encode,
                        .skip_live_check = c->kserve != NULL};
    long allocs = 0;
    CHECK(allocfail_loop(&a, &allocs) == 0);
    CHECK_MSG(allocs > 0, "%s: %ld allocations", name, allocs);
    printf("%s: %ld allocations, each failed in turn\n", name, allocs);
    free(c->want);
}

static void replies(void)
{
    /* a reply as the worker gives one: two instances, a float tensor and a string each */
    ss_predict_request *req = NULL;
    const char *body = "{\"instances\": [{\"x\": 1}, {\"x\": 2}]}";
    CHECK_OK(ss_rest_parse_request("/model/mm/version/2:predict", body, strlen(body), &req));
    ss_predict_reply *reply = ss_predict_reply_new(2);
    CHECK(req && reply);
    if (!req || !reply) return;
    for (size_t i = 0; i < 2; i++) {
        ss_tensor y = {0};
        const int64_t dims[2] = {2, 3};
        CHECK_OK(ss_tensor_alloc(&y, SS_DT_FLOAT32, 2, dims));
        for (int e = 0; e < 6 && y.data; e++)
            ((float *)y.data)[e] = (float)(i * 10 + (size_t)e) * 0.5f;
        CHECK_OK(ss_serving_instance_put(&reply->instances[i], "y", &y, false));
        CHECK_OK(ss_serving_instance_put_string(&reply->instances[i], "label", "cat", 3, false));
    }
    encode_case rest = {.req = req, .reply = reply};
    encode_under_failures(&rest, "REST reply JSON");
    encode_case grpc = {.req = req, .reply = reply, .grpc = true};
    encode_under_failures(&grpc, "gRPC PredictReply");
    ss_predict_reply_free(reply);
    ss_predict_request_free(req);
}

static void kserve_rest_reply(void)
{
    const char *body = KSERVE_BODY;
    char *copy = strdup(body);
    ss_kserve_call *call = NULL;
    ss_predict_request *req = NULL;
    ss_kserve_error err = {0};
    CHECK_MSG(ss_kserve_rest_decode_infer(&codec_handler, "/v2/models/m/infer", copy, strlen(body),
                                          NULL, &call, &req, &err),
              "%d %s", err.status, err.msg);
    ss_predict_reply *reply = req ? fuzz_echo(req) : NULL; /* "x" and "s" back, per instance */
    CHECK(reply && reply->count == 2);
    if (reply) {
        encode_case c = {.req = req, .reply = reply, .kserve = call};
        encode_under_failures(&c, "KServe REST infer response");
    }
    ss_predict_reply_free(reply);
    ss_predict_request_free(req);
    ss_kserve_call_free(call);
}

TEST_MAIN(TEST(rest_request), TEST(kserve_rest_request), TEST(kserve_grpc_request),
          TEST(grpc_request), TEST(replies), TEST(kserve_rest_reply))
