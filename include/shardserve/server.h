/*
 * server: the client-facing front ends, wire-compatible with MindSpore Serving.
 *
 * - gRPC: /mindspore.serving.proto.MSService/Predict (MindSpore's request checks and error texts;
 *   application errors travel in PredictReply.error_msg with gRPC status OK), plus the standard
 *   /grpc.health.v1.Health/Check answering SERVING / NOT_SERVING from a readiness callback.
 *   Any other method gets UNIMPLEMENTED.
 * - REST: POST /model/NAME[/version/N]:METHOD with MindSpore's JSON (HTTP 200 for application
 *   errors), plus GET /health/live and GET /health/ready.
 *
 * - Both also speak the Open Inference Protocol (KServe v2) for the same servables: REST /v2/...
 *   (health, server and model metadata, model ready, infer with JSON and binary tensors) and
 *   gRPC inference.GRPCInferenceService (ServerLive/Ready/Metadata, ModelReady/Metadata,
 *   ModelInfer, ModelStreamInfer). They need handler.describe() to map a servable's methods onto
 * models.
 *
 * Both hand valid requests to an ss_predict_handler (serving.h) and never block a network thread
 * while the handler works. Both bind only the address they are given (use 127.0.0.1).
 *
 * TLS: each front end takes an optional ss_ssl_config (MindSpore's SSLConfig: PEM file paths,
 * read at start). NULL = plaintext. gRPC uses gRPC's SSL credentials; REST uses libmicrohttpd
 * over GnuTLS, TLS 1.2 and 1.3 only. verify_client requires custom_ca and refuses, during the
 * handshake, any client without a certificate signed by one of its CAs.
 *
 * Threads and signals: gRPC creates threads of its own that inherit the caller's signal mask.
 * A process that handles SIGINT/SIGTERM with sigwait() must block them (pthread_sigmask) before
 * starting the first gRPC server; ss_server_block_signals does that.
 *
 * Stopping: stop() stops accepting, lets in-flight requests finish for up to drain_ms, then
 * cancels what is left, and returns once every request handed to the handler has been answered
 * (the handler must call done() for each, also while shutting down) — no call is silently lost.
 */
#ifndef SHARDSERVE_SERVER_H
#define SHARDSERVE_SERVER_H

#include <signal.h>

#include "shardserve/core.h"
#include "shardserve/serving.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SS_SERVER_DEFAULT_MAX_MSG_MB 100
#define SS_SERVER_MAX_MSG_MB_LIMIT 512
/* Limits against hostile clients (each a `shardserve serve` flag; README lists them). */
#define SS_SERVER_DEFAULT_REST_CONNECTIONS 4096  /* REST connections, all clients */
#define SS_SERVER_DEFAULT_REST_PER_CLIENT 256    /* REST connections from one client address */
#define SS_SERVER_DEFAULT_REST_READ_TIMEOUT_S 30 /* a whole request's headers + body */
#define SS_SERVER_DEFAULT_GRPC_STREAMS 100       /* concurrent streams on one gRPC connection */
#define SS_SERVER_DEFAULT_GRPC_RECV_TIMEOUT_S 30 /* a whole request message */
#define SS_SERVER_DEFAULT_GRPC_RECV_SLOTS 2      /* calls receiving their message at once */
#define SS_SERVER_DEFAULT_GRPC_CONTENDED_MS 500  /* a slot's hold while others wait */
#define SS_SERVER_DEFAULT_GRPC_BUFFERED_MSGS                                                       \
    2 /* held request bytes: this many largest messages                                            \
       */
/* one request's decoded size (what protobuf-c allocates to unpack it): this many largest messages
 */
#define SS_SERVER_DEFAULT_GRPC_DECODED_MSGS 2

/* MindSpore's SSLConfig. Files are read (and the key checked against the certificate) at start. */
typedef struct {
    const char *certificate; /* server certificate chain, PEM file */
    const char *private_key; /* its private key (unencrypted), PEM file */
    const char *custom_ca;   /* CA certificates trusted for client certificates, PEM file; used
                                only with verify_client */
    bool verify_client;      /* require a client certificate signed by custom_ca (mutual TLS) */
} ss_ssl_config;

typedef struct {
    const char *address; /* "127.0.0.1:5500" (port 0 = any free port) or "unix:/path" */
    int max_msg_mb;      /* 1..512, 0 = 100: limits received and sent messages */
    int threads;         /* completion-queue worker threads, 0 = 2 */
    int drain_ms;        /* stop(): grace period for in-flight calls, 0 = 5000 */
    int max_streams;     /* concurrent streams per connection, 0 = SS_SERVER_DEFAULT_GRPC_STREAMS */
    int recv_timeout_s;  /* a request message must arrive whole within this, from the call's
                            start, 0 = SS_SERVER_DEFAULT_GRPC_RECV_TIMEOUT_S */
    int max_buffered_mb; /* request messages received and not yet answered, with their decoded
                            size, all calls together; 0 = SS_SERVER_DEFAULT_GRPC_BUFFERED_MSGS x
                            max_msg_mb; at least 2 x max_msg_mb */
    int max_decoded_mb;  /* one request's decoded size, estimated before unpacking;
                            0 = SS_SERVER_DEFAULT_GRPC_DECODED_MSGS x max_msg_mb */
    int recv_slots;      /* calls that receive their request message at once (each may buffer a
                            whole message in libgrpc); others wait; 0 = the default */
    int recv_contended_ms; /* while calls wait for a slot, a holder whose message has been
                              arriving longer than this is cancelled; 0 = the default */
    ss_predict_handler handler;
    ss_ready_fn ready; /* NULL: always ready */
    void *ready_ctx;
    const ss_ssl_config *ssl; /* NULL: plaintext */
} ss_grpc_options;

typedef struct ss_grpc_server ss_grpc_server;

ss_status *ss_grpc_server_start(const ss_grpc_options *opts, ss_grpc_server **out);

/* The serving instances batched KServe requests' rows become (~1.2 KB a row), all requests of
 * both front ends together, in MB (<= 0: the default, 64); also registers the refusals' counter
 * shardserve_kserve_refused_total{limit="batch_rows"}. Call once, before the servers start. */
void ss_server_set_kserve_max_rows_mb(int mb);
/* The bound TCP port (useful with port 0); 0 for unix sockets. */
int ss_grpc_server_port(const ss_grpc_server *srv);
/* false once the listener has stopped accepting (out of descriptors: libgrpc does not resume). */
bool ss_grpc_server_listening(const ss_grpc_server *srv);
/* Stop (see above) and free. NULL is fine. */
void ss_grpc_server_stop(ss_grpc_server *srv);

typedef struct {
    const char *address; /* "127.0.0.1:1500" (port 0 = any free port); IPv4 only */
    int max_msg_mb;      /* 1..512, 0 = 100: request body limit */
    int threads;         /* 1 = one epoll thread (default), >1 = a pool of that size */
    int timeout_s;       /* idle connection timeout, 0 = 100 (MindSpore's evhttp timeout) */
    int max_connections; /* all clients, 0 = SS_SERVER_DEFAULT_REST_CONNECTIONS (at most the
                            descriptor limit less a reserve) */
    int max_per_client;  /* one client address, 0 = SS_SERVER_DEFAULT_REST_PER_CLIENT */
    int read_timeout_s;  /* a request's headers and body must arrive within this however slowly
                            they trickle, 0 = SS_SERVER_DEFAULT_REST_READ_TIMEOUT_S */
    int max_buffered_mb; /* request bodies received and not yet answered, all connections together;
                            0 = 2 x max_msg_mb; at least max_msg_mb */
    ss_predict_handler handler;
    ss_ready_fn ready; /* NULL: always ready */
    void *ready_ctx;
    const ss_ssl_config *ssl; /* NULL: plaintext (HTTP) */
    /* Where servable folders live: a servable's tokenizer.json there lets /v1/completions and
     * generate take and give text (NULL: token ids only). */
    const char *servable_dir;
} ss_rest_options;

typedef struct ss_rest_server ss_rest_server;

ss_status *ss_rest_server_start(const ss_rest_options *opts, ss_rest_server **out);
int ss_rest_server_port(const ss_rest_server *srv);
void ss_rest_server_stop(ss_rest_server *srv);

/* Block SIGINT, SIGTERM and SIGPIPE in the calling thread (and so in every thread it creates
 * afterwards); *set receives SIGINT and SIGTERM for a later sigwait(). */
void ss_server_block_signals(sigset_t *set);

#ifdef __cplusplus
}
#endif
#endif
