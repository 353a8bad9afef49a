/*
 * The serving data model without a network: MindSpore's error-collapsing rules, the input-name
 * check and its text, and the gRPC codec's request checks on hand-built protobuf messages.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "grpc_codec.h"
#include "ms_service.pb-c.h"
#include "shardserve/serving.h"

static ss_predict_reply *reply_with(size_t n)
{
    ss_predict_reply *r = ss_predict_reply_new(n);
    for (size_t i = 0; i < n; i++)
        CHECK_OK(ss_serving_instance_put_string(&r->instances[i], "y", "ok", 2, false));
    return r;
}

static void collapse_all_ok(void)
{
    ss_predict_reply *r = reply_with(3);
    r->errors = calloc(3, sizeof *r->errors); /* a handler may fill all-zero codes */
    r->error_count = 3;
    ss_predict_reply_collapse(r);
    CHECK(r->error_count == 0 && r->count == 3);
    ss_predict_reply_free(r);
}

static void collapse_same_error(void)
{
    ss_predict_reply *r = reply_with(3);
    for (size_t i = 0; i < 3; i++)
        CHECK_OK(ss_predict_reply_fail_instance(r, i, 2, "bad %s", "dtype"));
    ss_predict_reply_collapse(r);
    CHECK(r->error_count == 1 && r->count == 0);
    CHECK(r->errors[0].code == 2 && strcmp(r->errors[0].message, "bad dtype") == 0);
    ss_predict_reply_free(r);
}

static void collapse_mixed(void)
{
    ss_predict_reply *r = reply_with(3);
    CHECK_OK(ss_predict_reply_fail_instance(r, 1, 2, "one"));
    CHECK_OK(ss_predict_reply_fail_instance(r, 2, 3, "two"));
    ss_predict_reply_collapse(r);
    CHECK(r->error_count == 3 && r->count == 3);
    CHECK(r->errors[0].code == 0 && r->errors[0].message == NULL);
    CHECK(r->instances[0].count == 1 && r->instances[1].count == 0 && r->instances[2].count == 0);
    ss_predict_reply_free(r);
}

/* The input an error is about travels with it: kept when the errors collapse into one (MindSpore's
 * rule: the same code and message, whatever the inputs), and a success or a refail names none. */
static void error_names_its_input(void)
{
    ss_predict_reply *r = reply_with(2);
    CHECK(!ss_predict_reply_blame_input(r, 0, "seed")); /* no error yet */
    CHECK_OK(ss_predict_reply_fail_instance(r, 0, 2, "bad seed"));
    CHECK(ss_predict_reply_blame_input(r, 0, "seed"));
    CHECK_OK(ss_predict_reply_fail_instance(r, 1, 2, "bad seed"));
    CHECK(ss_predict_reply_blame_input(r, 1, "top_p"));
    ss_predict_reply_collapse(r);
    CHECK(r->error_count == 1 && r->count == 0);
    CHECK(r->errors[0].input && strcmp(r->errors[0].input, "seed") == 0);
    ss_predict_reply_free(r);

    r = reply_with(3);
    CHECK_OK(ss_predict_reply_fail_instance(r, 0, 2, "bad seed"));
    CHECK(ss_predict_reply_blame_input(r, 0, "seed"));
    CHECK_OK(ss_predict_reply_fail_instance(r, 1, 2, "bad top_p"));
    CHECK(ss_predict_reply_blame_input(r, 1, "top_p"));
    CHECK(ss_predict_reply_blame_input(r, 1, NULL)); /* cleared */
    CHECK_OK(ss_predict_reply_fail_instance(r, 2, 2, "bad"));
    CHECK(ss_predict_reply_blame_input(r, 2, "top_p"));
    CHECK_OK(ss_predict_reply_fail_instance(r, 2, 2, "bad")); /* failed again: no input now */
    ss_predict_reply_collapse(r);
    CHECK(r->error_count == 3);
    CHECK(strcmp(r->errors[0].input, "seed") == 0);
    CHECK(r->errors[1].input == NULL && r->errors[2].input == NULL);
    ss_predict_reply_free(r);
}

static void collapse_empty_message(void)
{
    ss_predict_reply *r = ss_predict_reply_error(1, "%s", "");
    ss_predict_reply_collapse(r);
    CHECK(r->error_count == 1 && strcmp(r->errors[0].message, "Predict failed") == 0);
    ss_predict_reply_free(r);
    r = reply_with(1);
    CHECK_OK(ss_predict_reply_fail_instance(r, 0, 4, "%s", ""));
    ss_predict_reply_collapse(r);
    CHECK(r->error_count == 1 && r->count == 0);
    CHECK(strcmp(r->errors[0].message, "Predict failed") == 0);
    ss_predict_reply_free(r);
}

static void check_inputs_text(void)
{
    ss_predict_request *req = ss_predict_request_new("add", "add_common", 0);
    ss_serving_instance *inst = ss_predict_request_add_instance(req);
    CHECK_OK(ss_serving_instance_put_string(inst, "x1", "a", 1, false));
    CHECK_OK(ss_serving_instance_put_string(inst, "x3", "a", 1, false));
    const char *names[] = {"x1", "x2"};
    ss_predict_reply *r = ss_predict_request_check_inputs(req, names, 2);
    CHECK(r && r->error_count == 1 && r->errors[0].code == 2);
    CHECK(r &&
          strcmp(r->errors[0].message,
                 "Cannot find input x2 in instance input , servable add, method add_common") == 0);
    ss_predict_reply_free(r);
    CHECK(ss_predict_request_check_inputs(req, names, 1) == NULL); /* extra x3 is ignored */
    ss_predict_reply *u = ss_serving_err_unavailable(req, false);
    CHECK(strcmp(u->errors[0].message,
                 "Request servable(add) method(add_common), servable is not available") == 0);
    ss_predict_reply_free(u);
    ss_predict_request_free(req);
}

/* Pack a one-instance request holding tensor `t` under name "x". */
static uint8_t *pack_one(Mindspore__Serving__Proto__Tensor *t, size_t *len)
{
    Mindspore__Serving__Proto__ServableSpec spec = MINDSPORE__SERVING__PROTO__SERVABLE_SPEC__INIT;
    spec.name = "s";
    spec.method_name = "m";
    Mindspore__Serving__Proto__Instance__ItemsEntry e =
        MINDSPORE__SERVING__PROTO__INSTANCE__ITEMS_ENTRY__INIT;
    e.key = "x";
    e.value = t;
    Mindspore__Serving__Proto__Instance__ItemsEntry *ep = &e;
    Mindspore__Serving__Proto__Instance inst = MINDSPORE__SERVING__PROTO__INSTANCE__INIT;
    inst.n_items = 1;
    inst.items = &ep;
    Mindspore__Serving__Proto__Instance *ip = &inst;
    Mindspore__Serving__Proto__PredictRequest req =
        MINDSPORE__SERVING__PROTO__PREDICT_REQUEST__INIT;
    req.servable_spec = &spec;
    req.n_instances = 1;
    req.instances = &ip;
    *len = mindspore__serving__proto__predict_request__get_packed_size(&req);
    uint8_t *buf = malloc(*len);
    mindspore__serving__proto__predict_request__pack(&req, buf);
    return buf;
}

/* Decode; expect success (needle NULL) or an error reply containing needle. */
static void expect_decode(Mindspore__Serving__Proto__Tensor *t, const char *needle)
{
    size_t len;
    uint8_t *buf = pack_one(t, &len);
    ss_predict_request *req = NULL;
    ss_predict_reply *bad = NULL;
    CHECK_OK(ss_grpc_decode_request(buf, len, &req, &bad));
    if (needle) {
        CHECK_MSG(bad && strstr(bad->errors[0].message, needle), "want \"%s\", got \"%s\"", needle,
                  bad ? bad->errors[0].message : "(success)");
    } else {
        CHECK_MSG(!bad, "unexpected error %s", bad ? bad->errors[0].message : "");
    }
    ss_predict_reply_free(bad);
    ss_predict_request_free(req);
    free(buf);
}

static void codec_checks(void)
{
    int64_t dims[3] = {2, 3, 0};
    float data[6] = {1, 2, 3, 4, 5, 6};
    Mindspore__Serving__Proto__TensorShape shape = MINDSPORE__SERVING__PROTO__TENSOR_SHAPE__INIT;
    Mindspore__Serving__Proto__Tensor t = MINDSPORE__SERVING__PROTO__TENSOR__INIT;
    t.shape = &shape;
    shape.n_dims = 2;
    shape.dims = dims;
    t.dtype = MINDSPORE__SERVING__PROTO__DATA_TYPE__MS_FLOAT32;
    t.tensor_data_case = MINDSPORE__SERVING__PROTO__TENSOR__TENSOR_DATA_DATA;
    t.data.data = (uint8_t *)data;
    t.data.len = sizeof data;
    expect_decode(&t, NULL);
    t.data.len = 20;
    expect_decode(&t, "Instances input x check failed, detail: Tensor check failed: input data "
                      "size 20 invalid");
    t.data.len = sizeof data;
    t.dtype = 0;
    expect_decode(&t, "input data type proto::MS_UNKNOWN invalid");
    t.dtype = MINDSPORE__SERVING__PROTO__DATA_TYPE__MS_FLOAT32;
    dims[0] = -2;
    expect_decode(&t, "Tensor check failed: input  shape [-2, 3] invalid");
    dims[0] = 0;
    expect_decode(&t, "shape [0, 3] invalid");
    ProtobufCBinaryData sv[2] = {{3, (uint8_t *)"abc"}, {3, (uint8_t *)"def"}};
    Mindspore__Serving__Proto__Tensor s = MINDSPORE__SERVING__PROTO__TENSOR__INIT;
    s.dtype = MINDSPORE__SERVING__PROTO__DATA_TYPE__MS_STRING;
    s.n_bytes_val = 2;
    s.bytes_val = sv;
    expect_decode(&s, "bytes or string type shape batch size can only be 1");
    s.n_bytes_val = 1;
    expect_decode(&s, NULL);
    s.shape = &shape;
    dims[0] = 2;
    shape.n_dims = 1;
    expect_decode(&s, "shape can only be (1,) or empty, but given shape is [2]");
    dims[0] = 1;
    expect_decode(&s, NULL);
}

static void codec_garbage(void)
{
    uint8_t junk[] = {0x12, 0xff, 0xff, 0xff, 0x0f, 0x01};
    ss_predict_request *req = NULL;
    ss_predict_reply *bad = NULL;
    CHECK_ERR(ss_grpc_decode_request(junk, sizeof junk, &req, &bad), "cannot parse");
    CHECK(req == NULL && bad == NULL);
    /* empty message: spec defaults and no instances */
    CHECK_OK(ss_grpc_decode_request(junk, 0, &req, &bad));
    CHECK(bad && strstr(bad->errors[0].message, "Instances count of request cannot be 0"));
    ss_predict_reply_free(bad);
    ss_predict_request_free(req);
}

TEST_MAIN(TEST(collapse_all_ok), TEST(collapse_same_error), TEST(collapse_mixed),
          TEST(error_names_its_input), TEST(collapse_empty_message), TEST(check_inputs_text),
          TEST(codec_checks), TEST(codec_garbage))
