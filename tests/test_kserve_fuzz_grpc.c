/*
 * libFuzzer target for the KServe gRPC ModelInfer decoder, reply encoder and the model RPCs
 * (-DSS_FUZZ=ON with clang). Input: a serialized message. Any input must decode or give an
 * error, never crash, leak or read out of bounds; whatever decodes is echoed back through the
 * encoder.
 */
#include <stdlib.h>

#include "kserve_fuzz_common.h"
#include "kserve_grpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ss_kserve_call *call = NULL;
    ss_predict_request *req = NULL;
    ss_kserve_error err = {0};
    if (ss_kserve_grpc_decode_infer(&fuzz_handler, data, size, &call, &req, &err)) {
        ss_predict_reply *reply = ss_predict_reply_finish(fuzz_echo(req), req);
        uint8_t *out = NULL;
        size_t out_len = 0;
        if (reply && ss_kserve_grpc_encode_reply(call, reply, &out, &out_len, &err)) free(out);
        ss_predict_reply_free(reply);
        ss_predict_request_free(req);
        ss_kserve_call_free(call);
    }
    ss_kserve_grpc_env env = {&fuzz_handler, NULL, NULL};
    ss_kserve_grpc_unary rpcs[] = {ss_kserve_grpc_model_ready, ss_kserve_grpc_model_metadata};
    for (size_t i = 0; i < 2; i++) {
        uint8_t *out = NULL;
        size_t out_len = 0;
        if (rpcs[i](&env, data, size, &out, &out_len, &err)) free(out);
    }
    return 0;
}
