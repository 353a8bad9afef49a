/*
 * libFuzzer target for the KServe gRPC ModelInfer decoder, reply encoder, the model,
 * statistics, repository and shared-memory RPCs and the stream's error answer (-DSS_FUZZ=ON with
 * clang). Input: a serialized message. Any input must decode or give an error, never crash, leak
 * or read out of bounds; whatever decodes is echoed back through the encoder.
 */
#include <stdlib.h>

#include "kserve_fuzz_common.h"
#include "kserve_grpc.h"
#include "kserve_shm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ss_kserve_call *call = NULL;
    ss_predict_request *req = NULL;
    ss_kserve_error err = {0};
    (void)ss_kserve_grpc_infer_decoded_bytes(data, size); /* the server sizes every message first */
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
    ss_kserve_grpc_unary rpcs[] = {
        ss_kserve_grpc_model_ready,      ss_kserve_grpc_model_metadata,
        ss_kserve_grpc_model_statistics, ss_kserve_grpc_repository_index,
        ss_kserve_grpc_repository_load,  ss_kserve_grpc_repository_unload,
        ss_kserve_grpc_shm_status,       ss_kserve_grpc_shm_register,
        ss_kserve_grpc_shm_unregister,
    };
    for (size_t i = 0; i < sizeof rpcs / sizeof *rpcs; i++) {
        uint8_t *out = NULL;
        size_t out_len = 0;
        if (rpcs[i](&env, data, size, &out, &out_len, &err)) free(out);
    }
    char model[256], id[256];
    ss_kserve_grpc_request_names(data, size, model, id, sizeof model);
    uint8_t *out = NULL;
    size_t out_len = 0;
    if (ss_kserve_grpc_stream_error(model, id, "fuzz", &out, &out_len, &err)) free(out);
    ss_kserve_shm_unregister(NULL, &err); /* a region a fuzzed register opened */
    return 0;
}
