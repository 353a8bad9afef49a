/*
 * kserve_rest (internal to the server module): the Open Inference Protocol's REST formats —
 * the /v2 URLs, the inference request and response JSON, and the binary tensor extension (a
 * JSON header of Inference-Header-Content-Length bytes followed by raw tensor bytes). Pure
 * functions over bodies (no sockets), so they are unit-testable and fuzzable. Errors are
 * {"error": "..."} with the protocol's HTTP status.
 */
#ifndef SS_SERVER_KSERVE_REST_H
#define SS_SERVER_KSERVE_REST_H

#include "kserve_codec.h"

/* {"error": msg} (malloc'd; NULL when out of memory). */
char *ss_kserve_rest_error_json(const char *msg, size_t *len);

/* GET /v2, /v2/health/{live,ready}, /v2/models/NAME[/versions/V][/ready]: the status and a
 * malloc'd JSON body (NULL when out of memory). */
void ss_kserve_rest_get(const ss_predict_handler *h, ss_ready_fn ready, void *ready_ctx,
                        const char *url, int *status, char **body, size_t *len);

/*
 * POST /v2/models/NAME[/versions/V]/infer. Takes ownership of `body` (malloc'd, `len` bytes;
 * binary inputs are borrowed from it, never copied). `header_len` is the
 * Inference-Header-Content-Length header's text (NULL: the whole body is JSON). On success
 * *call and *req are set (free the call after the request); otherwise err says why.
 */
bool ss_kserve_rest_decode_infer(const ss_predict_handler *h, const char *url, char *body,
                                 size_t len, const char *header_len, ss_kserve_call **call,
                                 ss_predict_request **req, ss_kserve_error *err);
/* The same for a body that lives inside `wire` (a pool buffer, kserve_pool.h), released with
 * wire_free(wire) when the call is done (or at once on failure). */
bool ss_kserve_rest_decode_infer_wire(const ss_predict_handler *h, const char *url, char *body,
                                      size_t len, const char *header_len, void *wire,
                                      void (*wire_free)(void *), ss_kserve_call **call,
                                      ss_predict_request **req, ss_kserve_error *err);

/*
 * The response for a finished reply: *body (malloc'd) is the JSON, followed by the binary
 * outputs' bytes when *json_len < *len (then send Inference-Header-Content-Length: *json_len).
 * On failure *body is the error JSON and the return is the status (200 on success).
 */
int ss_kserve_rest_encode_reply(ss_kserve_call *call, const ss_predict_reply *reply, char **body,
                                size_t *len, size_t *json_len);

/* The same without copying the binary outputs: *body is the JSON (json_len bytes) and
 * pieces[0..n_pieces) (malloc'd) the binary outputs in order, pointing into the reply and the
 * call, which must outlive them. On failure *body is the error JSON and there are no pieces. */
typedef struct {
    const void *data;
    size_t len;
} ss_kserve_piece;
int ss_kserve_rest_encode_pieces(ss_kserve_call *call, const ss_predict_reply *reply, char **body,
                                 size_t *json_len, ss_kserve_piece **pieces, size_t *n_pieces);

#endif
