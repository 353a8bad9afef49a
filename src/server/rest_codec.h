/*
 * rest_codec (internal to the server module): MindSpore Serving's RESTful formats — the URL
 * rules, the {"instances": ...} request JSON with its dtype inference and {"b64","type","shape"}
 * objects, and the reply JSON — with MindSpore's error texts. Pure functions (no sockets), so
 * they are unit-testable and fuzzable.
 */
#ifndef SS_SERVER_REST_CODEC_H
#define SS_SERVER_REST_CODEC_H

#include "shardserve/serving.h"

/* "/model/NAME[/version/N]:METHOD" the loose way MindSpore reads it. On failure SS_ERR_INVALID
 * with MindSpore's message (unprefixed), or SS_ERR_NOMEM. */
ss_status *ss_rest_parse_url(const char *url, char **servable, char **method, uint64_t *version);

/* A POST body (len bytes, need not be NUL-terminated) for `url`, read in MindSpore's order: JSON
 * syntax, then the URL, then the instances. On failure: SS_ERR_INVALID whose message is the
 * client-facing text (JSON syntax and URL errors unprefixed, instance and tensor errors prefixed
 * "Parser request failed, "). On success *out is a request for the handler. */
ss_status *ss_rest_parse_request(const char *url, const char *body, size_t len,
                                 ss_predict_request **out);
/* ss_rest_parse_request, but an instance with more names than name_limit allows is refused
 * (naming the limit) from the parsed JSON, before any of its values is converted; and the
 * instances' cost (the serving structs each becomes, hundreds of bytes however small: 1 M
 * one-value instances in 8 MB took 1.4 GB) is taken from the server's row budget, shared with
 * KServe's batch rows (budget.h: ss_server_rows_take; --kserve-max-batch-rows-mb), before they are
 * built: *held says how much, to give back when the request is freed (ss_server_rows_give). */
ss_status *ss_rest_parse_request_limited(const char *url, const char *body, size_t len,
                                         ss_serving_name_limit_fn name_limit, void *limit_ctx,
                                         ss_predict_request **out, size_t *held);

/* The reply body for a collapsed reply (malloc'd, NUL-terminated). */
char *ss_rest_reply_json(const ss_predict_reply *reply, size_t *len);
/* {"error_msg": msg} (malloc'd). */
char *ss_rest_error_json(const char *msg, size_t *len);
/* GET /model/NAME[/version/N]'s body: the servable version's layout and each method's inputs and
 * outputs (name, dtype, per-instance shape). NULL when out of memory. */
char *ss_rest_signature_json(const ss_serving_signature *sig, size_t *len);

/* Standard base64 with padding. decode: returns false on bad length/characters/padding. */
char *ss_base64_encode(const void *data, size_t len, size_t *out_len);
bool ss_base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len);

#endif
