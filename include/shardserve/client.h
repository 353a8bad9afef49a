/*
 * shardserve client library (libshardserve-client): call a shardserve or MindSpore Serving server
 * over gRPC (mindspore.serving.proto.MSService/Predict) from C, or any Open Inference Protocol
 * (KServe v2) server — shardserve, Triton, KServe — over its gRPC or REST API (options.protocol).
 *
 * Self-contained: this header needs nothing else from shardserve, and the library links only
 * gRPC core and protobuf-c (pkg-config: shardserve-client).
 *
 *   ss_client *c;
 *   ss_client_options o = {.address = "127.0.0.1:5500"};
 *   ss_client_error *e = ss_client_connect(&o, &c);
 *   ss_client_request *r = ss_client_request_new("matmul", "predict", 0);
 *   size_t i = ss_client_request_add_instance(r);
 *   int64_t dims[2] = {128, 96};
 *   e = ss_client_request_set_tensor(r, i, "x", SS_CLIENT_FLOAT32, dims, 2, x, sizeof x);
 *   ss_client_reply *reply;
 *   e = ss_client_infer(c, r, &reply);          // NULL = the call worked
 *   ss_client_tensor y;
 *   if (!ss_client_reply_error(reply, 0, NULL) && ss_client_reply_find(reply, 0, "y", &y)) ...
 *
 * Errors are values: a function that can fail returns `ss_client_error *`, NULL on success, else
 * a heap-allocated kind + code + message to free with ss_client_error_free.
 * TLS: set options.ssl (MindSpore's client SSLConfig); NULL keeps the channel plaintext.
 * Thread safety: one ss_client may be used from several threads at once; requests and replies
 * belong to one thread at a time.
 */
#ifndef SHARDSERVE_CLIENT_H
#define SHARDSERVE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* MindSpore Serving's DataType values. */
typedef enum {
    SS_CLIENT_UNKNOWN = 0,
    SS_CLIENT_BOOL = 1,
    SS_CLIENT_INT8 = 2,
    SS_CLIENT_UINT8 = 3,
    SS_CLIENT_INT16 = 4,
    SS_CLIENT_UINT16 = 5,
    SS_CLIENT_INT32 = 6,
    SS_CLIENT_UINT32 = 7,
    SS_CLIENT_INT64 = 8,
    SS_CLIENT_UINT64 = 9,
    SS_CLIENT_FLOAT16 = 10,
    SS_CLIENT_FLOAT32 = 11,
    SS_CLIENT_FLOAT64 = 12,
    SS_CLIENT_STRING = 13,
    SS_CLIENT_BYTES = 14,
} ss_client_dtype;

/* Bytes per element of a numeric dtype; 0 for strings, bytes and unknown values. */
size_t ss_client_dtype_size(ss_client_dtype dt);
const char *ss_client_dtype_name(ss_client_dtype dt);

typedef enum {
    SS_CLIENT_ERR_ARGUMENT = 1, /* the caller passed something unusable; code 0 */
    SS_CLIENT_ERR_NOMEM = 2,
    SS_CLIENT_ERR_TRANSPORT = 3, /* the gRPC call failed; code = gRPC status (14 unavailable) */
    SS_CLIENT_ERR_SERVER = 4,    /* the server refused the whole request; code = MindSpore's
                                    error code (2 invalid inputs, ...), msg = its error_msg */
    SS_CLIENT_ERR_PROTOCOL = 5,  /* the reply is not a valid PredictReply */
} ss_client_errkind;

typedef struct ss_client_error {
    ss_client_errkind kind;
    int64_t code;
    char msg[];
} ss_client_error;

void ss_client_error_free(ss_client_error *err);
const char *ss_client_errkind_name(ss_client_errkind kind);

/* ------------------------------------------------------------------ connection */

/* TLS for the channel, as MindSpore's client SSLConfig: PEM file paths, read at connect. */
typedef struct {
    const char *certificate; /* client certificate chain, for servers that verify clients */
    const char *private_key; /* its unencrypted key; given together with certificate */
    const char *custom_ca;   /* CA certificates to verify the server with; NULL = gRPC's
                                default roots (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH or the system's) */
} ss_client_ssl_config;

/*
 * The protocol ss_client_infer speaks. With the KServe ones a request's servable and method
 * become model "SERVABLE.METHOD" (shardserve's name rule; version 0 = the latest), and every
 * instance is one KServe inference request (sent in turn; tensors as given, so a batched input
 * may carry its batch dim). A request the server refuses is SS_CLIENT_ERR_SERVER with code = the
 * HTTP status (REST) or SS_CLIENT_ERR_TRANSPORT with the gRPC status (gRPC), and the server's
 * text. Async calls and TLS are MindSpore-only for now; REST addresses are host:port.
 */
typedef enum {
    SS_CLIENT_MINDSPORE = 0,     /* MSService/Predict over gRPC (the default) */
    SS_CLIENT_KSERVE_GRPC = 1,   /* GRPCInferenceService/ModelInfer, raw tensor contents */
    SS_CLIENT_KSERVE_REST = 2,   /* POST /v2/models/MODEL[/versions/V]/infer with JSON tensors */
    SS_CLIENT_KSERVE_BINARY = 3, /* the same with the binary tensor extension */
} ss_client_protocol;

typedef struct {
    const char *address; /* "host:port" or "unix:/path"; with TLS the server certificate must
                            name the host (a DNS name or an IP address) */
    int max_msg_mb;      /* send and receive limit, 1..512; 0 = 512 (MindSpore's client) */
    int timeout_ms;      /* per call; 0 = no deadline */
    const ss_client_ssl_config *ssl; /* NULL = plaintext */
    ss_client_protocol protocol;     /* 0 = MindSpore's */
} ss_client_options;

typedef struct ss_client ss_client;

/* Creates the channel (connection happens lazily, on the first call). */
ss_client_error *ss_client_connect(const ss_client_options *opts, ss_client **out);
/* Cancels outstanding async calls (their callbacks run with a CANCELLED transport error),
 * waits for them, and frees the client. NULL is fine. */
void ss_client_close(ss_client *client);

/* ------------------------------------------------------------------ requests */

typedef struct ss_client_request ss_client_request;

ss_client_request *ss_client_request_new(const char *servable, const char *method,
                                         uint64_t version);
void ss_client_request_free(ss_client_request *req);
/* Append an empty instance; returns its index, or (size_t)-1 when out of memory. */
size_t ss_client_request_add_instance(ss_client_request *req);
/* Numeric input (copied). ndim 0 = scalar. nbytes must equal numel * dtype size. */
ss_client_error *ss_client_request_set_tensor(ss_client_request *req, size_t instance,
                                              const char *name, ss_client_dtype dtype,
                                              const int64_t *dims, int ndim, const void *data,
                                              size_t nbytes);
/* A string (MS_STRING) or bytes (MS_BYTES) input (copied), sent with shape [1] like MindSpore's
 * Python client. */
ss_client_error *ss_client_request_set_string(ss_client_request *req, size_t instance,
                                              const char *name, const char *text, size_t len);
ss_client_error *ss_client_request_set_bytes(ss_client_request *req, size_t instance,
                                             const char *name, const void *data, size_t len);

/* ------------------------------------------------------------------ replies */

typedef struct ss_client_reply ss_client_reply;

/* A view into a reply (valid until the reply is freed). Numeric: data/nbytes are the raw
 * little-endian elements. String/bytes: use ss_client_tensor_string. */
typedef struct {
    const char *name;
    ss_client_dtype dtype;
    int ndim;
    const int64_t *dims;
    const void *data;
    size_t nbytes;
    size_t nstrings;
    const void *strings_; /* internal */
} ss_client_tensor;

size_t ss_client_reply_count(const ss_client_reply *reply);
/* NULL if instance i succeeded; else its error message (and *code when code != NULL). */
const char *ss_client_reply_error(const ss_client_reply *reply, size_t i, int64_t *code);
size_t ss_client_reply_output_count(const ss_client_reply *reply, size_t i);
bool ss_client_reply_output(const ss_client_reply *reply, size_t i, size_t k,
                            ss_client_tensor *out);
bool ss_client_reply_find(const ss_client_reply *reply, size_t i, const char *name,
                          ss_client_tensor *out);
const void *ss_client_tensor_string(const ss_client_tensor *t, size_t j, size_t *len);
void ss_client_reply_free(ss_client_reply *reply);

/* ------------------------------------------------------------------ calls */

/* Synchronous call. On success (NULL) *out holds one entry per request instance, some of which
 * may have failed (see ss_client_reply_error). A whole-request failure is SS_CLIENT_ERR_SERVER.
 * The request may be reused or freed afterwards. */
ss_client_error *ss_client_infer(ss_client *client, const ss_client_request *req,
                                 ss_client_reply **out);

/* Called exactly once per async call, from the client's own thread, with either err or reply
 * (the callee owns and frees whichever is non-NULL). */
typedef void (*ss_client_callback)(void *ctx, ss_client_error *err, ss_client_reply *reply);

/* Start a call and return at once (the request is serialized before returning and may be freed).
 * If this returns an error the callback is never called. */
ss_client_error *ss_client_infer_async(ss_client *client, const ss_client_request *req,
                                       ss_client_callback cb, void *ctx);

/* ------------------------------------------------------------------ streaming */

/* Called for every message of a stream as it arrives (the reply is borrowed: valid during the
 * call). Return false to cancel the call: the server then stops the request (a generation ends
 * and frees its sequence). */
typedef bool (*ss_client_stream_callback)(void *ctx, const ss_client_reply *message);

/*
 * Synchronous server-streaming call (shardserve.Stream/PredictStream, MindSpore's messages;
 * MindSpore's protocol only). A servable that produces its outputs a piece at a time (a generate
 * servable) sends each piece as one message — one entry per request instance, the instance with
 * the piece holding only its new outputs ("tokens"), the others none — and its whole reply
 * last; other servables send the whole reply alone. cb (may be NULL) sees every message,
 * including the last. On success *out owns the last message, the whole reply (as
 * ss_client_infer's); a whole-request failure is SS_CLIENT_ERR_SERVER.
 */
ss_client_error *ss_client_infer_stream(ss_client *client, const ss_client_request *req,
                                        ss_client_stream_callback cb, void *ctx,
                                        ss_client_reply **out);

/* ------------------------------------------------------------------ KServe shared memory */

/*
 * The Open Inference Protocol's system shared-memory extension, for a server on this host: the
 * client creates a POSIX shared-memory object, registers it (or a part) as a named region, writes
 * inputs into it and asks for outputs to be written there; only (region, offset, byte_size)
 * travels. KServe protocols only (SS_CLIENT_KSERVE_*; MindSpore's cannot name a region).
 *
 *   ss_client_shm *shm;
 *   e = ss_client_shm_create("/my-tensors", in_bytes + out_bytes, &shm);
 *   memcpy(ss_client_shm_data(shm), x, in_bytes);
 *   e = ss_client_shm_register(c, "tensors", "/my-tensors", 0, in_bytes + out_bytes);
 *   e = ss_client_request_set_shm_input(r, i, "x", SS_CLIENT_FLOAT32, dims, 2, "tensors", 0,
 *                                       in_bytes);
 *   e = ss_client_request_set_shm_output(r, i, "y", "tensors", in_bytes, out_bytes);
 *   e = ss_client_infer(c, r, &reply);   // y is now at ss_client_shm_data(shm) + in_bytes
 *   ss_client_shm_unregister(c, "tensors");
 *   ss_client_shm_destroy(shm);
 */
typedef struct ss_client_shm ss_client_shm;

/* A new shared-memory object `key` ("/name", which must not exist yet) of byte_size bytes,
 * mapped read-write here. */
ss_client_error *ss_client_shm_create(const char *key, size_t byte_size, ss_client_shm **out);
void *ss_client_shm_data(const ss_client_shm *shm);
size_t ss_client_shm_size(const ss_client_shm *shm);
const char *ss_client_shm_key(const ss_client_shm *shm);
/* Unmap it and remove the object (unregister it from servers first). NULL is fine. */
void ss_client_shm_destroy(ss_client_shm *shm);

/* Register [offset, offset + byte_size) of object `key` as region `name` on the server (REST
 * POST /v2/systemsharedmemory/region/NAME/register, or gRPC SystemSharedMemoryRegister). */
ss_client_error *ss_client_shm_register(ss_client *client, const char *name, const char *key,
                                        uint64_t offset, uint64_t byte_size);
/* Unregister region `name` (NULL or "" = every region). */
ss_client_error *ss_client_shm_unregister(ss_client *client, const char *name);
/* Whether region `name` is registered, and then its byte_size (byte_size may be NULL). */
ss_client_error *ss_client_shm_status(ss_client *client, const char *name, bool *registered,
                                      uint64_t *byte_size);

/* A numeric input whose bytes lie in registered region `region` at offset (byte_size = numel *
 * dtype size; nothing is copied now, the server reads the region during the call). */
ss_client_error *ss_client_request_set_shm_input(ss_client_request *req, size_t instance,
                                                 const char *name, ss_client_dtype dtype,
                                                 const int64_t *dims, int ndim, const char *region,
                                                 uint64_t offset, uint64_t byte_size);
/* Have output `name` written into region `region` at offset (at most byte_size bytes). Once an
 * instance names an output this way the server answers only the outputs named; in the reply this
 * output has its dtype and dims, and data NULL, nbytes 0: its bytes are in the region. */
ss_client_error *ss_client_request_set_shm_output(ss_client_request *req, size_t instance,
                                                  const char *name, const char *region,
                                                  uint64_t offset, uint64_t byte_size);

#ifdef __cplusplus
}
#endif
#endif
