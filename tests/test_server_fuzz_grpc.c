/*
 * libFuzzer target for the gRPC PredictRequest decoder and the reply encoder (-DSS_FUZZ=ON with
 * clang). Any byte string must decode, be refused with MindSpore's error reply, or fail as
 * unparseable; never crash, leak or read out of bounds. Accepted requests are echoed through the
 * encoder.
 */
#include <stdlib.h>

#include "grpc_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ss_predict_request *req = NULL;
    ss_predict_reply *invalid = NULL;
    (void)ss_grpc_request_decoded_bytes(data, size); /* the server sizes every message first */
    ss_status *st = ss_grpc_decode_request(data, size, &req, &invalid);
    if (st) {
        ss_status_free(st);
        return 0;
    }
    ss_predict_reply *reply = invalid;
    if (!reply && (reply = ss_predict_reply_new(0))) {
        reply->instances = req->instances;
        reply->count = req->count;
        req->instances = NULL;
        req->count = 0;
    }
    if (reply) {
        ss_predict_reply_collapse(reply);
        uint8_t *buf = NULL;
        size_t len = 0;
        ss_status_free(ss_grpc_encode_reply(req, reply, &buf, &len));
        free(buf);
        ss_predict_reply_free(reply);
    }
    ss_predict_request_free(req);
    return 0;
}
