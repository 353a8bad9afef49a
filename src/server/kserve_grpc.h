/*
 * kserve_grpc (internal to the server module): the Open Inference Protocol's gRPC messages
 * (package inference, proto/grpc_service.proto) to and from the serving data model. Pure
 * functions over serialized messages (no gRPC calls), so they are unit-testable and fuzzable.
 * Errors are ss_kserve_error values; the server sends them as gRPC status
 * (ss_kserve_grpc_status), never inside a message, as the protocol requires.
 */
#ifndef SS_SERVER_KSERVE_GRPC_H
#define SS_SERVER_KSERVE_GRPC_H

#include "kserve_codec.h"

/* What the simple RPCs need to answer. */
typedef struct {
    const ss_predict_handler *handler;
    ss_ready_fn ready;
    void *ready_ctx;
} ss_kserve_grpc_env;

/* A unary RPC answered without the handler's predict: request bytes in, serialized response
 * (malloc'd) out, or false with err. */
typedef bool (*ss_kserve_grpc_unary)(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                     uint8_t **out, size_t *out_len, ss_kserve_error *err);

bool ss_kserve_grpc_server_live(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                uint8_t **out, size_t *out_len, ss_kserve_error *err);
bool ss_kserve_grpc_server_ready(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                 uint8_t **out, size_t *out_len, ss_kserve_error *err);
bool ss_kserve_grpc_server_metadata(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                    uint8_t **out, size_t *out_len, ss_kserve_error *err);
bool ss_kserve_grpc_model_ready(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                uint8_t **out, size_t *out_len, ss_kserve_error *err);
bool ss_kserve_grpc_model_statistics(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                     uint8_t **out, size_t *out_len, ss_kserve_error *err);
/* The model repository extension (kserve_repo.h). */
bool ss_kserve_grpc_repository_index(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                     uint8_t **out, size_t *out_len, ss_kserve_error *err);
bool ss_kserve_grpc_repository_load(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                    uint8_t **out, size_t *out_len, ss_kserve_error *err);
bool ss_kserve_grpc_repository_unload(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                      uint8_t **out, size_t *out_len, ss_kserve_error *err);
/* The system shared-memory extension (kserve_shm.h). */
bool ss_kserve_grpc_shm_status(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                               uint8_t **out, size_t *out_len, ss_kserve_error *err);
bool ss_kserve_grpc_shm_register(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                 uint8_t **out, size_t *out_len, ss_kserve_error *err);
bool ss_kserve_grpc_shm_unregister(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                   uint8_t **out, size_t *out_len, ss_kserve_error *err);
bool ss_kserve_grpc_model_metadata(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                   uint8_t **out, size_t *out_len, ss_kserve_error *err);

/* What unpacking a serialized ModelInferRequest will take from malloc at its peak (pb_budget.h):
 * its tensors are borrowed from the unpacked message, so that is the decoded size. */
size_t ss_kserve_grpc_infer_decoded_bytes(const uint8_t *buf, size_t len);

/* ModelInfer: decode and check a ModelInferRequest. On success *call (which keeps the decoded
 * message the request's tensors borrow from) and *req are set; free the call after the request. */
bool ss_kserve_grpc_decode_infer(const ss_predict_handler *h, const uint8_t *buf, size_t len,
                                 ss_kserve_call **call, ss_predict_request **req,
                                 ss_kserve_error *err);
/* The ModelInferResponse for a finished reply (malloc'd), or false with err. Outputs travel in
 * raw_output_contents when the request used raw_input_contents (or an output is FP16/BF16),
 * else in typed contents. */
bool ss_kserve_grpc_encode_reply(ss_kserve_call *call, const ss_predict_reply *reply, uint8_t **out,
                                 size_t *out_len, ss_kserve_error *err);

/* ModelStreamInfer of a request that streams (a generate servable's tokens): each piece as a
 * ModelInferResponse with the piece's outputs ("tokens") and parameter triton_final_response
 * false, and the whole reply last with triton_final_response true (Triton's decoupled models). */
bool ss_kserve_grpc_encode_partial(ss_kserve_call *call, const ss_serving_instance *chunk,
                                   uint8_t **out, size_t *out_len, ss_kserve_error *err);
bool ss_kserve_grpc_encode_final(ss_kserve_call *call, const ss_predict_reply *reply, uint8_t **out,
                                 size_t *out_len, ss_kserve_error *err);

/* ModelStreamInferResponse (malloc'd) around the packed ModelInferResponse `resp` (borrowed). */
bool ss_kserve_grpc_stream_reply(const uint8_t *resp, size_t len, uint8_t **out, size_t *out_len,
                                 ss_kserve_error *err);
/* ModelStreamInferResponse for a failed request: error_message, and infer_response with the
 * request's model_name and id (so a client can tell which request failed). */
bool ss_kserve_grpc_stream_error(const char *model, const char *id, const char *error,
                                 uint8_t **out, size_t *out_len, ss_kserve_error *err);
/* The model_name and id of a serialized ModelInferRequest read without decoding it (for the
 * error answer of one that does not decode; "" when absent or not UTF-8; cap bytes each). */
void ss_kserve_grpc_request_names(const uint8_t *req, size_t len, char *model, char *id,
                                  size_t cap);

#endif
