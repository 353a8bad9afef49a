/*
 * kserve_stream (internal to the server module): the Open Inference Protocol's bidirectional
 * ModelStreamInfer over a call the gRPC server accepted. A call state machine of its own, apart
 * from the unary one in grpc_server.c: requests are read as they arrive and handed to the
 * handler at once (several may be in flight), each answered with a ModelStreamInferResponse as
 * soon as its reply is ready (so answers may come out of order; the request id says which is
 * which). A request that fails (bad message, unknown model, failed inference) gets its error in
 * error_message and the stream stays up. The stream ends with status OK once the client has
 * half-closed and every answer is sent; a broken or cancelled call ends it at once (answers still
 * owed are dropped when their reply arrives). An idle stream is legitimate, so the unary calls'
 * receive timeout does not apply; max_streams per connection bounds how many a client holds.
 * An open stream holds the server's stop() for its drain period (drain_ms), then is cancelled.
 */
#ifndef SS_SERVER_KSERVE_STREAM_H
#define SS_SERVER_KSERVE_STREAM_H

#include <grpc/grpc.h>

#include "shardserve/serving.h"

/* Completion-queue tags of stream operations begin with this kind (the server's tag kinds stop
 * below it), so the server's event loop can hand them to ss_kserve_stream_event. */
#define SS_KSERVE_STREAM_TAG 16
typedef struct {
    int kind;
} ss_kserve_stream_tag;

typedef struct {
    const ss_predict_handler *handler;
    /* counts the stream as a live call (+1 at start, -1 when freed), as the server's stop()
     * waits for every call to be gone */
    void (*live)(void *ctx, long delta);
    void *live_ctx;
    /* optional: take a request message's bytes and decoded size from the server's budget before
     * it is decoded (*held, given back with release() once it is answered), or false with the
     * reason (the message is then answered with that error); ctx is live_ctx */
    bool (*hold)(void *ctx, const uint8_t *buf, size_t len, size_t *held, char *why, size_t cap);
    void (*release)(void *ctx, size_t held);
} ss_kserve_stream_env;

/* Start sending one message (`bytes`, malloc'd, consumed) on a call with `tag`: the initial
 * metadata first when *metadata_sent is false (then set). *sending keeps the buffer until the
 * batch completes (destroy it then). false: the batch did not start. Shared by the server's
 * streams (ModelStreamInfer here, PredictStream in grpc_server.c). */
bool ss_grpc_send_message(grpc_call *call, uint8_t *bytes, size_t len, bool *metadata_sent,
                          grpc_byte_buffer **sending, void *tag);

/* The received message as one slice (empty when none), the buffer destroyed: gRPC's slices are
 * released as they are copied, so a large message is never held twice. */
grpc_slice ss_grpc_take_message(grpc_byte_buffer **bb);

/* Take over an accepted call (its reference passes to the stream) on completion queue cq.
 * Returns false (call cancelled and released) when the stream cannot start. */
bool ss_kserve_stream_start(grpc_call *call, const ss_kserve_stream_env *env);
/* A completion-queue event whose tag is a stream's. */
void ss_kserve_stream_event(void *tag, bool ok);

#endif
