/*
 * libFuzzer target for the KServe REST infer decoder and reply encoder, and the repository and
 * shared-memory routes (-DSS_FUZZ=ON with clang). Input: "URL\nHEADER-LENGTH\nBODY" (an empty
 * HEADER-LENGTH line = no Inference-Header-Content-Length). Any input must decode or give an
 * error, never crash, leak or read out of bounds; whatever decodes is echoed back through the
 * encoder.
 */
#include <stdlib.h>
#include <string.h>

#include "kserve_fuzz_common.h"
#include "kserve_repo.h"
#include "kserve_rest.h"
#include "kserve_shm.h"

/* The routes answered without the handler's predict: repository and shared memory. */
static void other_routes(const char *url, const char *body, size_t len)
{
    int status = 0;
    char *out = NULL;
    size_t out_len = 0;
    ss_kserve_rest_repository(&fuzz_handler, url, body, len, &status, &out, &out_len);
    free(out);
    out = NULL;
    ss_kserve_rest_shm(len % 2 ? "GET" : "POST", url, body, len, &status, &out, &out_len);
    free(out);
    ss_kserve_error err;
    ss_kserve_shm_unregister(NULL, &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl1 = memchr(data, '\n', size);
    const uint8_t *nl2 = nl1 ? memchr(nl1 + 1, '\n', size - (size_t)(nl1 + 1 - data)) : NULL;
    if (!nl2) return 0;
    char *url = strndup((const char *)data, (size_t)(nl1 - data));
    char *hl = strndup((const char *)nl1 + 1, (size_t)(nl2 - nl1 - 1));
    size_t len = size - (size_t)(nl2 + 1 - data);
    char *body = malloc(len ? len : 1);
    if (url && hl && body) {
        memcpy(body, nl2 + 1, len);
        other_routes(url, body, len);
        ss_kserve_call *call = NULL;
        ss_predict_request *req = NULL;
        ss_kserve_error err = {0};
        if (ss_kserve_rest_decode_infer(&fuzz_handler, url, body, len, hl[0] ? hl : NULL, &call,
                                        &req, &err)) {
            ss_predict_reply *reply = ss_predict_reply_finish(fuzz_echo(req), req);
            char *out = NULL;
            size_t out_len = 0, json_len = 0;
            if (reply) ss_kserve_rest_encode_reply(call, reply, &out, &out_len, &json_len);
            free(out);
            ss_predict_reply_free(reply);
            ss_predict_request_free(req);
            ss_kserve_call_free(call);
        }
    } else {
        free(body);
    }
    free(url);
    free(hl);
    return 0;
}
