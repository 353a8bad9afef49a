/*
 * libFuzzer target for the REST request parser and reply writer (-DSS_FUZZ=ON with clang). Input:
 * "URL\nBODY". Any input must parse or give an error, never crash, leak or read out of bounds;
 * whatever parses is echoed back through the reply writer.
 */
#include <stdlib.h>
#include <string.h>

#include "rest_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t url_len = nl ? (size_t)(nl - data) : 0;
    char *url = strndup((const char *)data, url_len);
    const char *body = nl ? (const char *)nl + 1 : (const char *)data;
    size_t body_len = nl ? size - url_len - 1 : size;
    ss_predict_request *req = NULL;
    ss_status *st = ss_rest_parse_request(url ? url : "", body, body_len, &req);
    if (st) {
        ss_status_free(st);
    } else {
        ss_predict_reply *reply = ss_predict_reply_new(0);
        if (reply) { /* echo: move the instances over */
            reply->instances = req->instances;
            reply->count = req->count;
            req->instances = NULL;
            req->count = 0;
            size_t len;
            free(ss_rest_reply_json(reply, &len));
            ss_predict_reply_free(reply);
        }
        ss_predict_request_free(req);
    }
    free(url);
    return 0;
}
