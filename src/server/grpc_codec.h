/*
 * grpc_codec (internal to the server module): MindSpore's PredictRequest / PredictReply protobuf
 * messages to and from the serving data model, including MindSpore's request tensor checks with
 * their exact error texts. Pure functions, no gRPC calls, so they are unit-testable and fuzzable.
 */
#ifndef SS_SERVER_GRPC_CODEC_H
#define SS_SERVER_GRPC_CODEC_H

#include "shardserve/serving.h"

/*
 * Parse and check a serialized PredictRequest.
 * - Undecodable protobuf: returns an error status (the caller answers with a gRPC error):
 *   SS_ERR_LIMIT for requests with absurd element counts (refused before unpacking),
 *   SS_ERR_INVALID otherwise.
 * - Otherwise *out is the request (spec always filled); when a MindSpore check fails (no instances,
 *   bad tensor encoding) *invalid is the whole-request error reply to send instead of calling the
 *   handler, else NULL.
 */
ss_status *ss_grpc_decode_request(const uint8_t *buf, size_t len, ss_predict_request **out,
                                  ss_predict_reply **invalid);

/* ss_grpc_decode_request, but an instance with more names than name_limit allows is refused from
 * the wire counts (an *invalid reply naming the limit), before anything is unpacked. */
ss_status *ss_grpc_decode_request_limited(const uint8_t *buf, size_t len,
                                          ss_serving_name_limit_fn name_limit, void *limit_ctx,
                                          ss_predict_request **out, ss_predict_reply **invalid);

/* What decoding the serialized PredictRequest will take from malloc at its peak: protobuf-c's
 * unpacked message (pb_budget.h) and the serving form built beside it, from the wire alone. */
size_t ss_grpc_request_decoded_bytes(const uint8_t *buf, size_t len);

/* Serialize a (collapsed) reply; servable_spec is copied from `req` as sent. *buf is malloc'd. */
ss_status *ss_grpc_encode_reply(const ss_predict_request *req, const ss_predict_reply *reply,
                                uint8_t **buf, size_t *len);

/* MindSpore DataType value <-> core dtype (is_bytes tells MS_BYTES from MS_STRING).
 * Returns SS_DT_UNDEFINED for unknown values. */
ss_dtype ss_grpc_dtype_from_ms(int ms_dtype, bool *is_bytes);
int ss_grpc_dtype_to_ms(ss_dtype dt, bool is_bytes);

#endif
