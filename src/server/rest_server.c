/*
 * rest_server: MindSpore's RESTful API (and health endpoints) on libmicrohttpd.
 *
 * One epoll thread (or a small pool) serves every connection and only moves bytes: once a predict
 * body has arrived the connection is suspended (MHD_suspend_connection), the decoder thread
 * (workq.c) parses the body and hands the request to the handler, and the handler's done() stores
 * the reply and resumes the connection from whatever thread it runs on. So no MHD thread ever
 * parses a large body or waits for a model, and /health/ and /metrics are answered at once under
 * any load. The bodies held at once are capped (budget.h, max_buffered_mb); memory is returned
 * after a large request (trim.h). Bodies over the size limit are refused from Content-Length
 * before they are read (an `Expect: 100-continue` request gets the refusal instead of "100
 * Continue"), or as soon as a chunked upload crosses the limit. Idle clients are cut off by MHD's
 * connection timeout; trickling ones by the read deadline, and connection floods by the limits in
 * total and per client address (rest_guard.c: each refusal counted in /metrics). Every reply is
 * HTTP 200 with a JSON body, as in MindSpore, except /health/ready (503 while not ready).
 *
 * TLS (ss_ssl_config): MHD over GnuTLS, TLS 1.2/1.3 with ECDHE and AEAD ciphers only (as
 * MindSpore's OpenSSL setup). With verify_client every connection's session is switched to
 * "require a certificate and verify it against custom_ca" before its handshake starts (the
 * connection-notify callback runs before the first byte is read), so a client without one fails
 * the handshake; each request checks the verified certificate again.
 *
 * stop(): quiesce (no new connections), wait until every suspended request has been answered
 * (the handler must answer each one), then stop the daemon.
 */
#include "shardserve/server.h"

#include "shardserve/metrics.h"

#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "kserve_pool.h"
#include "kserve_repo.h"
#include "kserve_rest.h"
#include "kserve_shm.h"
#include "rest_codec.h"
#include "rest_gen.h"
#include "rest_gone.h"
#include "rest_guard.h"
#include "budget.h"
#include "tls.h"
#include "trim.h"
#include "workq.h"

/* TLS 1.2+ (MindSpore disables SSLv2/3 and TLS 1.0/1.1), forward-secret key exchange, AEAD. */
#define TLS_PRIORITIES                                                                             \
    "SECURE:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-256-GCM:+AES-128-GCM:"            \
    "+CHACHA20-POLY1305:+AES-256-CCM:+AES-128-CCM:-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA"

struct ss_rest_server {
    struct MHD_Daemon *daemon;
    int port;
    size_t max_body;
    ss_predict_handler handler;
    ss_ready_fn ready;
    void *ready_ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long pending; /* requests handed to the handler and not yet answered */
    long open;    /* predict requests started and not yet completed (reply sent or conn gone) */
    /* PEM texts kept for the daemon's lifetime; tls.cert == NULL: plaintext */
    ss_tls_pems tls;
    ss_rest_guard *guard;
    ss_metric_series *refused_body; /* bodies over max_body */
    ss_workq *decoder;              /* parses predict bodies off the MHD thread */
    ss_byte_budget held;            /* request bodies received and not yet answered */
    ss_rest_gen_env *gen;           /* generate, generate_stream and /v1/completions */
    ss_rest_gone *gone;             /* notices clients that hang up on a generation */
};

/* C_REFUSED: answered from the headers alone (the body is never wanted). C_STREAMING: a streamed
 * generation, answered by its event stream (rest_gen.h). */
typedef enum { C_RECEIVING, C_WAITING, C_ANSWERED, C_REFUSED, C_STREAMING } conn_state;

typedef struct conn_ctx conn_ctx;
/* A request body's expensive part, run on the decoder thread: parse it into c->req and choose
 * c->encode (true), or leave the refusal in c->early (false). */
typedef bool (*body_decoder)(conn_ctx *c);
/* Writes a handler's reply as the protocol's body (status, body, its length, and how much of it is
 * JSON: KServe binary outputs follow it). Runs on the MHD thread; consumes the reply. */
typedef void (*reply_encoder)(conn_ctx *c, ss_predict_reply *reply, unsigned *status, char **body,
                              size_t *len, size_t *json_len);

struct conn_ctx {
    ss_rest_server *srv;
    struct MHD_Connection *conn;
    conn_state state;
    char *body;
    size_t len, cap;
    bool too_big;
    ss_predict_request *req;
    size_t rows_held;         /* MindSpore REST: req's instances' share of the row budget */
    ss_kserve_call *kcall;    /* KServe infer: the call the request borrows from */
    pthread_mutex_t mu;       /* guards answer/state between done() and the MHD thread */
    ss_predict_reply *answer; /* the handler's reply, encoded on the MHD thread once resumed */
    ss_predict_reply *sent;   /* KServe: the reply its binary pieces are sent from */
    ss_kserve_piece *pieces;  /* ... those pieces (after the JSON), sent without a copy */
    size_t n_pieces;
    char *sent_json;
    reply_encoder encode;        /* the request's protocol */
    ss_rest_guard_conn *guarded; /* the connection's read clock */
    body_decoder decode;
    char *url;         /* the request's URL and KServe's header-length header, kept for decode */
    char *header_len;  /* (the connection is suspended meanwhile: MHD's copies are not read) */
    size_t body_bytes; /* the body's size: a large one returns its memory when done */
    size_t announced;  /* Content-Length (0: none), within max_body */
    size_t bin_offset; /* KServe infer: Inference-Header-Content-Length, where tensors start */
    bool poolable;     /* KServe infer with a large body: it lands in a shared-memory buffer */
    ss_kserve_buf *pooled; /* that buffer (body points into it), or NULL: body is malloc'd */
    size_t held;           /* body bytes taken from the server's budget */
    bool busy;             /* the budget refused the body: answered at its end, its bytes dropped */
    struct {
        unsigned status;
        char *body;
        size_t len;
    } early; /* a refusal made by the decoder, sent once the connection is resumed */
    const gen_codec *gen_codec; /* a generation (Triton's generate, OpenAI's completions) */
    ss_rest_gen *gen;           /* ... its state once decoded */
    uint64_t watch;             /* its ticket with the hang-up watcher (0: none) */
    bool client_gone;           /* the watcher saw the client hang up (under mu) */
};

/* ------------------------------------------------------------------ responses */

static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned status, char *body,
                                 size_t len)
{
    static const char oom[] = "{\"error_msg\":\"out of memory\"}";
    struct MHD_Response *resp =
        body ? MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE)
             : MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

/* Queue a KServe response whose first json_len bytes are the JSON header. */
static enum MHD_Result queue_binary(struct MHD_Connection *conn, unsigned status,
                                    struct MHD_Response *resp, size_t json_len)
{
    char header[32];
    snprintf(header, sizeof header, "%zu", json_len);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
    MHD_add_response_header(resp, "Inference-Header-Content-Length", header);
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

/* A KServe reply: JSON, or a JSON header of json_len bytes followed by binary tensors. */
static enum MHD_Result send_kserve(struct MHD_Connection *conn, unsigned status, char *body,
                                   size_t len, size_t json_len)
{
    if (!body || json_len >= len) return send_json(conn, status, body, len);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    return queue_binary(conn, status, resp, json_len);
}

static enum MHD_Result send_kserve_error(struct MHD_Connection *conn, const ss_kserve_error *err)
{
    size_t len = 0;
    char *body = ss_kserve_rest_error_json(err->msg, &len);
    return send_json(conn, (unsigned)err->status, body, len);
}

static enum MHD_Result send_error(struct MHD_Connection *conn, const char *msg)
{
    size_t len = 0;
    char *body = ss_rest_error_json(msg, &len);
    return send_json(conn, MHD_HTTP_OK, body, len);
}

static enum MHD_Result send_text(struct MHD_Connection *conn, unsigned status, const char *json)
{
    return send_json(conn, status, strdup(json), strlen(json));
}

/* GET /metrics: the process's registry in Prometheus text format (metrics.h). */
static enum MHD_Result send_metrics(struct MHD_Connection *conn)
{
    size_t len = 0;
    char *text = ss_metrics_render(ss_metrics_global(), &len);
    if (!text) return send_json(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, 0);
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8");
    enum MHD_Result r = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return r;
}

/* GET /model/NAME[/version/N]: the servable's methods with their inputs' and outputs' names,
 * dtypes and per-instance shapes (handler.describe); 404 unknown, 503 not ready. */
static enum MHD_Result send_metadata(ss_rest_server *srv, struct MHD_Connection *conn,
                                     const char *path)
{
    char name[256];
    uint64_t version = 0;
    const char *slash = strchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : strlen(path);
    bool ok_path = n > 0 && n < sizeof name;
    if (ok_path && slash) {
        char *end = NULL;
        const char *v = slash + 1;
        ok_path = strncmp(v, "version/", 8) == 0 && v[8] >= '0' && v[8] <= '9';
        unsigned long long parsed = ok_path ? strtoull(v + 8, &end, 10) : 0;
        ok_path = ok_path && end && !*end && parsed <= UINT32_MAX;
        version = parsed;
    }
    size_t len = 0;
    if (!ok_path) {
        char *err = ss_rest_error_json("metadata url is /model/NAME[/version/N]", &len);
        return send_json(conn, MHD_HTTP_NOT_FOUND, err, len);
    }
    memcpy(name, path, n);
    name[n] = 0;
    if (!srv->handler.describe) {
        char *err = ss_rest_error_json("this server has no model metadata", &len);
        return send_json(conn, MHD_HTTP_NOT_FOUND, err, len);
    }
    ss_serving_signature *sig = NULL;
    char why[512] = "";
    int rc = srv->handler.describe(srv->handler.ctx, name, version, &sig, why, sizeof why);
    if (rc != SS_DESCRIBE_OK) {
        char *err = ss_rest_error_json(why, &len);
        return send_json(
            conn, rc == SS_DESCRIBE_NOT_READY ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_NOT_FOUND,
            err, len);
    }
    char *text = ss_rest_signature_json(sig, &len);
    ss_serving_signature_free(sig);
    return send_json(conn, text ? MHD_HTTP_OK : MHD_HTTP_INTERNAL_SERVER_ERROR, text, len);
}

/* ------------------------------------------------------------------ predict */

/* The handler's done(), called once per request from its thread (the worker's event loop): only
 * hand the reply over and resume the connection. The body is written on the MHD thread
 * (c->encode), so a big answer never holds up the loop. */
static void rest_done(void *done_ctx, ss_predict_reply *reply)
{
    conn_ctx *c = done_ctx;
    ss_rest_server *srv = c->srv;
    ss_rest_gone_forget(srv->gone, c->watch); /* no cancel after done() */
    pthread_mutex_lock(&c->mu);
    c->answer = reply;
    c->state = C_ANSWERED;
    pthread_mutex_unlock(&c->mu);
    MHD_resume_connection(c->conn);
    pthread_mutex_lock(&srv->mu);
    if (--srv->pending == 0) pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

static void encode_mindspore(conn_ctx *c, ss_predict_reply *reply, unsigned *status, char **body,
                             size_t *len, size_t *json_len)
{
    reply = ss_predict_reply_finish(reply, c->req);
    *body = reply ? ss_rest_reply_json(reply, len) : NULL;
    ss_predict_reply_free(reply);
    *status = MHD_HTTP_OK;
    *json_len = *len;
}

/* The binary outputs stay where they are (the reply, the call, a pool buffer): they are sent
 * from there (send_reply), so the reply is kept until the request is done. */
static void encode_kserve(conn_ctx *c, ss_predict_reply *reply, unsigned *status, char **body,
                          size_t *len, size_t *json_len)
{
    *status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    reply = ss_predict_reply_finish(reply, c->req);
    if (reply)
        *status = (unsigned)ss_kserve_rest_encode_pieces(c->kcall, reply, body, json_len,
                                                         &c->pieces, &c->n_pieces);
    *len = *json_len;
    for (size_t i = 0; i < c->n_pieces; i++)
        *len += c->pieces[i].len;
    c->sent = reply;
}

/* A reply whose binary pieces are sent from where they lie (one writev per chunk by MHD). */
static enum MHD_Result send_reply(conn_ctx *c, unsigned status, char *body, size_t len,
                                  size_t json_len)
{
    if (!body || !c->n_pieces) return send_kserve(c->conn, status, body, len, json_len);
    struct MHD_IoVec *iov = calloc(c->n_pieces + 1, sizeof *iov);
    c->sent_json = body;
    if (!iov) return MHD_NO;
    iov[0] = (struct MHD_IoVec){body, json_len};
    for (size_t i = 0; i < c->n_pieces; i++)
        iov[i + 1] = (struct MHD_IoVec){c->pieces[i].data, c->pieces[i].len};
    struct MHD_Response *resp =
        MHD_create_response_from_iovec(iov, (unsigned)c->n_pieces + 1, NULL, NULL);
    free(iov); /* MHD keeps its own copy of the vector */
    return resp ? queue_binary(c->conn, status, resp, json_len) : MHD_NO;
}

static void encode_early(conn_ctx *c, ss_predict_reply *reply, unsigned *status, char **body,
                         size_t *len, size_t *json_len)
{
    ss_predict_reply_free(reply);
    *status = c->early.status;
    *body = c->early.body;
    *len = *json_len = c->early.len;
    c->early.body = NULL;
}

/* A streamed generation wrote its last event: the server may stop once every one has. */
static void stream_answered(void *arg)
{
    ss_rest_server *srv = arg;
    pthread_mutex_lock(&srv->mu);
    if (--srv->pending == 0) pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

/* On the decoder thread: parse the body, then hand the request to the handler or answer the
 * refusal (either way the connection is resumed by rest_done). */
static void decode_job(void *arg)
{
    conn_ctx *c = arg;
    bool decoded = c->decode(c);
    if (decoded && c->state == C_STREAMING) {
        ss_rest_gen_start(c->gen, stream_answered, c->srv);
        return;
    }
    if (decoded) {
        c->srv->handler.predict(c->srv->handler.ctx, c->req, rest_done, c);
        return;
    }
    c->encode = encode_early;
    rest_done(c, NULL);
}

/* The body has arrived: the connection sleeps while the decoder thread parses it and the handler
 * answers, so the MHD thread keeps serving health, metrics and other clients meanwhile. */
static enum MHD_Result defer_decode(conn_ctx *c, const char *url, body_decoder decode)
{
    ss_rest_server *srv = c->srv;
    c->url = strdup(url);
    if (!c->url) return send_error(c->conn, "out of memory");
    c->decode = decode;
    c->body_bytes = c->len;
    pthread_mutex_lock(&srv->mu);
    srv->pending++;
    srv->open++;
    pthread_mutex_unlock(&srv->mu);
    c->state = C_WAITING;
    MHD_suspend_connection(c->conn);
    if (!ss_workq_push(srv->decoder, decode_job, c)) decode_job(c); /* out of memory: here */
    return MHD_YES;
}

/* A body the budget had no room for (counted when it was refused). */
static enum MHD_Result refuse_busy(conn_ctx *c, bool kserve)
{
    ss_rest_server *srv = c->srv;
    char msg[200];
    snprintf(msg, sizeof msg,
             "the server holds %zu MB of request bodies, at its limit of %zu MB "
             "(--rest-max-buffered-mb): try again later",
             atomic_load(&srv->held.used) >> 20, srv->held.limit >> 20);
    if (!kserve) return send_error(c->conn, msg);
    ss_kserve_error err;
    ss_kserve_fail(&err, MHD_HTTP_SERVICE_UNAVAILABLE, "%s", msg);
    return send_kserve_error(c->conn, &err);
}

/* Drop the body's memory (malloc'd, or a pool buffer). */
static void body_drop(conn_ctx *c)
{
    if (c->pooled)
        ss_kserve_pool_give(c->pooled);
    else
        free(c->body);
    c->pooled = NULL;
    c->body = NULL;
}

static bool decode_mindspore(conn_ctx *c)
{
    ss_rest_server *srv = c->srv;
    ss_status *st =
        ss_rest_parse_request_limited(c->url, c->body, c->len, ss_predict_handler_name_limit,
                                      &srv->handler, &c->req, &c->rows_held);
    body_drop(c);
    if (!st) {
        c->encode = encode_mindspore;
        return true;
    }
    c->early.status = MHD_HTTP_OK;
    c->early.body = ss_rest_error_json(st->msg, &c->early.len);
    ss_status_free(st);
    return false;
}

static enum MHD_Result start_predict(conn_ctx *c, const char *url)
{
    ss_rest_server *srv = c->srv;
    if (c->too_big) {
        ss_metric_add(srv->refused_body, 1);
        char msg[96];
        snprintf(msg, sizeof msg, "http message is bigger than %zu", srv->max_body);
        return send_error(c->conn, msg);
    }
    if (c->busy) return refuse_busy(c, false);
    if (c->len == 0) return send_error(c->conn, "http message invalid");
    return defer_decode(c, url, decode_mindspore);
}

/* The body goes to the codec, which keeps it (binary inputs are borrowed from it). */
static bool decode_kserve(conn_ctx *c)
{
    ss_rest_server *srv = c->srv;
    ss_kserve_error err = {0};
    char *body = c->body;
    void *wire = c->pooled ? (void *)c->pooled : body;
    void (*wire_free)(void *) = c->pooled ? ss_kserve_pool_give : free;
    c->body = NULL;
    c->pooled = NULL;
    if (ss_kserve_rest_decode_infer_wire(&srv->handler, c->url, body, c->len, c->header_len, wire,
                                         wire_free, &c->kcall, &c->req, &err)) {
        c->encode = encode_kserve;
        return true;
    }
    c->early.status = (unsigned)err.status;
    c->early.body = ss_kserve_rest_error_json(err.msg, &c->early.len);
    return false;
}

/* POST /v2/models/NAME[/versions/V]/infer */
static enum MHD_Result start_kserve_infer(conn_ctx *c, const char *url)
{
    ss_rest_server *srv = c->srv;
    ss_kserve_error err = {0};
    if (c->too_big) {
        ss_metric_add(srv->refused_body, 1);
        ss_kserve_fail(&err, MHD_HTTP_CONTENT_TOO_LARGE,
                       "the request body is bigger than %zu bytes", srv->max_body);
        return send_kserve_error(c->conn, &err);
    }
    if (c->busy) return refuse_busy(c, true);
    const char *hl =
        MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Inference-Header-Content-Length");
    if (hl && !(c->header_len = strdup(hl))) return send_error(c->conn, "out of memory");
    return defer_decode(c, url, decode_kserve);
}

/* ------------------------------------------------------------------ generation */

static void encode_generate(conn_ctx *c, ss_predict_reply *reply, unsigned *status, char **body,
                            size_t *len, size_t *json_len)
{
    reply = ss_predict_reply_finish(reply, c->req);
    ss_rest_gen_encode(c->gen, reply, status, body, len);
    ss_predict_reply_free(reply);
    *json_len = *len;
}

/* The watcher saw the client hang up: cancel what is running for it (or, while the body is still
 * being decoded, have the decoder cancel it). */
static void conn_gone(void *arg)
{
    conn_ctx *c = arg;
    pthread_mutex_lock(&c->mu);
    c->client_gone = true;
    if (c->state == C_STREAMING) ss_rest_gen_client_gone(c->gen);
    if (c->state == C_WAITING && c->req) ss_predict_request_cancel(c->req);
    pthread_mutex_unlock(&c->mu);
}

static bool decode_generate(conn_ctx *c)
{
    ss_rest_server *srv = c->srv;
    ss_rest_gen *g = NULL;
    bool ok = ss_rest_gen_decode(srv->gen, c->gen_codec, c->url, c->body, c->len, c->conn, &g,
                                 &c->early.status, &c->early.body, &c->early.len);
    body_drop(c);
    if (!ok) {
        c->encode = encode_early;
        return false;
    }
    pthread_mutex_lock(&c->mu);
    c->gen = g;
    if (ss_rest_gen_streaming(g)) {
        c->state = C_STREAMING;
        if (c->client_gone) ss_rest_gen_client_gone(g);
    } else {
        c->req = ss_rest_gen_take_request(g);
        c->encode = encode_generate;
        if (c->client_gone) ss_predict_request_cancel(c->req);
    }
    pthread_mutex_unlock(&c->mu);
    return true;
}

/* An error in the protocol's own form (Triton's or OpenAI's). */
static enum MHD_Result send_gen_error(conn_ctx *c, const gen_codec *codec, unsigned status,
                                      const char *msg)
{
    gen_err e = {0};
    gen_fail(&e, status, "", "%s", msg);
    sbuf s = {0};
    codec->error(&e, &s);
    return send_json(c->conn, status, s.oom ? NULL : s.p, s.len);
}

/* A generation's body has arrived: decoded on the decoder thread (a text prompt is tokenized
 * there), watched for a hang-up from now until it is answered. */
static enum MHD_Result start_generate(conn_ctx *c, const char *url, const gen_codec *codec)
{
    ss_rest_server *srv = c->srv;
    char msg[160];
    c->gen_codec = codec;
    if (c->too_big) {
        ss_metric_add(srv->refused_body, 1);
        snprintf(msg, sizeof msg, "the request body is bigger than %zu bytes", srv->max_body);
        return send_gen_error(c, codec, MHD_HTTP_CONTENT_TOO_LARGE, msg);
    }
    if (c->busy) {
        snprintf(msg, sizeof msg, "the server holds %zu MB of request bodies, its limit: try again",
                 srv->held.limit >> 20);
        return send_gen_error(c, codec, MHD_HTTP_SERVICE_UNAVAILABLE, msg);
    }
    if (c->len == 0) return send_gen_error(c, codec, MHD_HTTP_BAD_REQUEST, "the body is empty");
    const union MHD_ConnectionInfo *fd =
        MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (fd) c->watch = ss_rest_gone_watch(srv->gone, fd->connect_fd, conn_gone, c);
    return defer_decode(c, url, decode_generate);
}

/* POST /v2/models/NAME[/versions/V]/generate[_stream], else KServe's infer. */
static enum MHD_Result start_kserve_post(conn_ctx *c, const char *url)
{
    size_t n = strlen(url);
    bool gen = (n > 9 && !strcmp(url + n - 9, "/generate")) ||
               (n > 16 && !strcmp(url + n - 16, "/generate_stream"));
    return gen ? start_generate(c, url, &ss_gen_codec_triton) : start_kserve_infer(c, url);
}

static enum MHD_Result start_completions(conn_ctx *c, const char *url)
{
    return start_generate(c, url, &ss_gen_codec_openai);
}

static enum MHD_Result route_openai_models(conn_ctx *c, const char *url)
{
    unsigned status = 0;
    char *body = NULL;
    size_t len = 0;
    ss_openai_models(ss_rest_gen_env_handler(c->srv->gen), &status, &body, &len);
    return send_json(c->conn, status, body, len);
}

static enum MHD_Result route_openai_unknown(conn_ctx *c, const char *url)
{
    char msg[300];
    snprintf(msg, sizeof msg, "unknown route %.250s", url);
    return send_gen_error(c, &ss_gen_codec_openai, MHD_HTTP_NOT_FOUND, msg);
}

/* ------------------------------------------------------------------ access handler */

/* ------------------------------------------------------------------ client certificates */

static gnutls_session_t tls_session(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    return ci ? (gnutls_session_t)ci->tls_session : NULL;
}

/* Before the handshake: require a client certificate and verify it in the handshake. */
static void require_client_certificate(ss_rest_server *srv, struct MHD_Connection *conn)
{
    if (!srv->tls.verify_client) return;
    gnutls_session_t s = tls_session(conn);
    if (!s) return; /* client_verified() still refuses every request */
    gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_cert(s, NULL, 0);
}

/* A connection starts its read clock when accepted and drops its record when closed (MHD
 * closes the descriptor only afterwards). */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    ss_rest_server *srv = cls;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        ss_rest_guard_closed(srv->guard, *socket_context);
        *socket_context = NULL;
        return;
    }
    const union MHD_ConnectionInfo *addr =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const union MHD_ConnectionInfo *fd =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (fd)
        *socket_context =
            ss_rest_guard_opened(srv->guard, addr ? addr->client_addr : NULL, fd->connect_fd);
    require_client_certificate(srv, conn);
}

static enum MHD_Result accept_policy(void *cls, const struct sockaddr *addr, socklen_t len)
{
    ss_rest_server *srv = cls;
    return ss_rest_guard_admit(srv->guard, addr, len) ? MHD_YES : MHD_NO;
}

static ss_rest_guard_conn *guarded(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static bool expects_continue(struct MHD_Connection *conn)
{
    const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    return expect && strcasecmp(expect, "100-continue") == 0;
}

/* A body announced over the limit with `Expect: 100-continue`: refused before "100 Continue", so
 * the client never sends it. */
static enum MHD_Result refuse_before_continue(ss_rest_server *srv, struct MHD_Connection *conn,
                                              const char *url)
{
    ss_metric_add(srv->refused_body, 1);
    if (strncmp(url, "/v2/", 4) == 0) {
        ss_kserve_error err = {0};
        ss_kserve_fail(&err, MHD_HTTP_CONTENT_TOO_LARGE,
                       "the request body is bigger than %zu bytes", srv->max_body);
        return send_kserve_error(conn, &err);
    }
    char msg[96];
    snprintf(msg, sizeof msg, "http message is bigger than %zu", srv->max_body);
    return send_error(conn, msg);
}

static bool client_verified(struct MHD_Connection *conn)
{
    gnutls_session_t s = tls_session(conn);
    unsigned status = 1, n = 0;
    return s && gnutls_certificate_verify_peers2(s, &status) == GNUTLS_E_SUCCESS && status == 0 &&
           gnutls_certificate_get_peers(s, &n) && n > 0;
}

static enum MHD_Result on_first_call(ss_rest_server *srv, struct MHD_Connection *conn,
                                     const char *url, const char *method, void **con_cls)
{
    if (srv->tls.verify_client && !client_verified(conn)) {
        SS_WARN("RESTful server: a request without a verified client certificate, closing");
        return MHD_NO;
    }
    conn_ctx *c = calloc(1, sizeof *c);
    if (!c) return MHD_NO;
    c->srv = srv;
    c->conn = conn;
    c->guarded = guarded(conn);
    pthread_mutex_init(&c->mu, NULL);
    *con_cls = c;
    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0) return MHD_YES;
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > srv->max_body) c->too_big = true;
    if (cl && !c->too_big) c->announced = (size_t)strtoull(cl, NULL, 10);
    const char *hl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Inference-Header-Content-Length");
    c->bin_offset = hl ? (size_t)strtoull(hl, NULL, 10) : 0;
    c->poolable = c->announced >= SS_KSERVE_POOL_MIN && c->bin_offset <= c->announced &&
                  !strncmp(url, "/v2/models/", 11);
    if (c->too_big && expects_continue(conn)) {
        c->state = C_REFUSED;
        return refuse_before_continue(srv, conn, url);
    }
    return MHD_YES;
}

/* ------------------------------------------------------------------ routes */

static enum MHD_Result route_live(conn_ctx *c, const char *url)
{
    return send_text(c->conn, MHD_HTTP_OK, "{\"status\":\"live\"}");
}

static enum MHD_Result route_ready(conn_ctx *c, const char *url)
{
    ss_rest_server *srv = c->srv;
    bool ready = !srv->ready || srv->ready(srv->ready_ctx);
    return ready ? send_text(c->conn, MHD_HTTP_OK, "{\"status\":\"ready\"}")
                 : send_text(c->conn, MHD_HTTP_SERVICE_UNAVAILABLE, "{\"status\":\"not ready\"}");
}

static enum MHD_Result route_metrics(conn_ctx *c, const char *url)
{
    return send_metrics(c->conn);
}

static enum MHD_Result route_metadata(conn_ctx *c, const char *url)
{
    return send_metadata(c->srv, c->conn, url + strlen("/model/"));
}

/* GET /v2/...: health, server and model metadata, model readiness (no handler call). */
static enum MHD_Result route_kserve_get(conn_ctx *c, const char *url)
{
    ss_rest_server *srv = c->srv;
    int status = 0;
    size_t len = 0;
    char *body = NULL;
    ss_kserve_rest_get(&srv->handler, srv->ready, srv->ready_ctx, url, &status, &body, &len);
    return send_json(c->conn, body ? (unsigned)status : MHD_HTTP_INTERNAL_SERVER_ERROR, body, len);
}

/* A KServe body over --max-msg-mb: 413, counted as the infer route counts it. */
static enum MHD_Result send_kserve_too_big(conn_ctx *c)
{
    ss_kserve_error err;
    ss_metric_add(c->srv->refused_body, 1);
    ss_kserve_fail(&err, MHD_HTTP_CONTENT_TOO_LARGE, "the request body is bigger than %zu bytes",
                   c->srv->max_body);
    return send_kserve_error(c->conn, &err);
}

/* POST /v2/repository/...: the model repository extension (answered at once, no handler call). */
static enum MHD_Result route_kserve_repository(conn_ctx *c, const char *url)
{
    if (c->too_big) return send_kserve_too_big(c);
    int status = 0;
    size_t len = 0;
    char *body = NULL;
    ss_kserve_rest_repository(&c->srv->handler, url, c->body ? c->body : "", c->len, &status, &body,
                              &len);
    return send_json(c->conn, body ? (unsigned)status : MHD_HTTP_INTERNAL_SERVER_ERROR, body, len);
}

/* /v2/systemsharedmemory/...: the shared-memory extension's regions (no handler call). */
static enum MHD_Result route_kserve_shm(conn_ctx *c, const char *method, const char *url)
{
    if (c->too_big) return send_kserve_too_big(c);
    int status = 0;
    size_t len = 0;
    char *body = NULL;
    ss_kserve_rest_shm(method, url, c->body ? c->body : "", c->len, &status, &body, &len);
    return send_json(c->conn, body ? (unsigned)status : MHD_HTTP_INTERNAL_SERVER_ERROR, body, len);
}

static enum MHD_Result route_kserve_shm_get(conn_ctx *c, const char *url)
{
    return route_kserve_shm(c, MHD_HTTP_METHOD_GET, url);
}

static enum MHD_Result route_kserve_shm_post(conn_ctx *c, const char *url)
{
    return route_kserve_shm(c, MHD_HTTP_METHOD_POST, url);
}

static enum MHD_Result route_kserve_unknown(conn_ctx *c, const char *url)
{
    ss_kserve_error err;
    ss_kserve_fail(&err, MHD_HTTP_NOT_FOUND, "unknown route %s", url);
    return send_kserve_error(c->conn, &err);
}

static enum MHD_Result route_post_only(conn_ctx *c, const char *url)
{
    return send_error(c->conn, "http message only support POST right now");
}

/*
 * The REST routes, first match wins. `prefix` matches the start of the path; `no_colon` requires
 * a path without ':' (GET /model/NAME:METHOD is not metadata: it gets MindSpore's POST-only
 * error). /v2 is the Open Inference Protocol (KServe v2); anything else there is a 404 with
 * {"error"}. Every other POST is a MindSpore predict whose URL the codec parses (and refuses
 * with MindSpore's texts); any other method on any other path gets the POST-only error.
 */
typedef struct {
    const char *method; /* NULL = any */
    const char *path;   /* NULL = any */
    bool prefix, no_colon;
    enum MHD_Result (*handle)(conn_ctx *c, const char *url);
} rest_route;

static const rest_route routes[] = {
    {MHD_HTTP_METHOD_GET, "/health/live", false, false, route_live},
    {MHD_HTTP_METHOD_GET, "/health/ready", false, false, route_ready},
    {MHD_HTTP_METHOD_GET, "/metrics", false, false, route_metrics},
    {MHD_HTTP_METHOD_GET, "/model/", true, true, route_metadata},
    {MHD_HTTP_METHOD_GET, "/v2", false, false, route_kserve_get},
    {MHD_HTTP_METHOD_GET, "/v2/health/live", false, false, route_kserve_get},
    {MHD_HTTP_METHOD_GET, "/v2/health/ready", false, false, route_kserve_get},
    {MHD_HTTP_METHOD_GET, "/v2/models/", true, false, route_kserve_get},
    {MHD_HTTP_METHOD_POST, "/v2/models/", true, false, start_kserve_post},
    {MHD_HTTP_METHOD_POST, "/v2/repository/", true, false, route_kserve_repository},
    {MHD_HTTP_METHOD_GET, "/v2/systemsharedmemory/", true, false, route_kserve_shm_get},
    {MHD_HTTP_METHOD_POST, "/v2/systemsharedmemory/", true, false, route_kserve_shm_post},
    {MHD_HTTP_METHOD_POST, "/v1/completions", false, false, start_completions},
    {MHD_HTTP_METHOD_GET, "/v1/models", false, false, route_openai_models},
    {NULL, "/v1/", true, false, route_openai_unknown},
    {NULL, "/v2", false, false, route_kserve_unknown},
    {NULL, "/v2/", true, false, route_kserve_unknown},
    {MHD_HTTP_METHOD_POST, NULL, false, false, start_predict},
    {NULL, NULL, false, false, route_post_only},
};

static enum MHD_Result route(conn_ctx *c, const char *method, const char *url)
{
    for (size_t i = 0;; i++) {
        const rest_route *r = &routes[i];
        if (r->method && strcmp(r->method, method) != 0) continue;
        if (r->path &&
            (r->prefix ? strncmp(url, r->path, strlen(r->path)) : strcmp(url, r->path)) != 0)
            continue;
        if (r->no_colon && strchr(url, ':')) continue;
        return r->handle(c, url);
    }
}

/* The body's buffer grows to `cap` only within the server's budget; over it the body is dropped
 * as it arrives and the request refused at its end (refuse_busy). */
static bool hold_body(conn_ctx *c, size_t cap)
{
    ss_byte_budget *b = &c->srv->held;
    if (ss_byte_budget_take(b, cap - c->cap)) {
        c->held += cap - c->cap;
        return true;
    }
    c->busy = true;
    ss_byte_budget_give(b, c->held);
    c->body_bytes = c->held; /* what it grew to: trimmed at the end */
    c->held = 0;
    body_drop(c);
    c->len = c->cap = 0;
    return false;
}

/* A large KServe body goes straight into a shared-memory pool buffer, placed so that its tensors
 * (from bin_offset on) start 64-byte aligned: the codec then borrows them as they are and a local
 * agent maps them without a copy. False: use malloc'd memory. */
static bool pool_body(conn_ctx *c)
{
    size_t pad = (64 - c->bin_offset % 64) % 64;
    c->pooled = ss_kserve_pool_take(c->announced + pad);
    if (!c->pooled) return false;
    c->body = (char *)ss_kserve_buf_data(c->pooled) + pad;
    if (!hold_body(c, c->announced)) return true; /* refused: the buffer went back */
    c->cap = c->announced;
    return true;
}

/* The body outgrows its pool buffer (more than Content-Length said): move it to malloc'd memory. */
static bool unpool_body(conn_ctx *c)
{
    char *copy = malloc(c->cap ? c->cap : 1);
    if (!copy) return false;
    memcpy(copy, c->body, c->len);
    ss_kserve_pool_give(c->pooled);
    c->pooled = NULL;
    c->body = copy;
    return true;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    ss_rest_server *srv = cls;
    conn_ctx *c = *con_cls;
    if (!c) return on_first_call(srv, conn, url, method, con_cls);

    if (c->state == C_ANSWERED) { /* resumed by rest_done: write the body here, not on the loop */
        pthread_mutex_lock(&c->mu);
        ss_predict_reply *reply = c->answer;
        c->answer = NULL;
        pthread_mutex_unlock(&c->mu);
        unsigned status = MHD_HTTP_OK;
        char *body = NULL;
        size_t len = 0, json_len = 0;
        c->encode(c, reply, &status, &body, &len, &json_len);
        return send_reply(c, status, body, len, json_len);
    }
    if (c->state == C_STREAMING) return ss_rest_gen_respond(c->gen, conn); /* resumed */
    if (c->state == C_WAITING) return MHD_YES;
    if (c->state == C_REFUSED) {
        *upload_data_size = 0;
        return MHD_YES;
    }

    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (c->busy) return MHD_YES; /* dropped: refused at the end */
        if (c->too_big || c->len + n > srv->max_body) {
            c->too_big = true; /* keep reading, drop the bytes; answer at the end */
            body_drop(c);
            c->len = c->cap = 0;
            return MHD_YES;
        }
        if (!c->cap && c->poolable && !pool_body(c)) c->poolable = false;
        if (c->busy) return MHD_YES;
        if (c->len + n > c->cap && c->pooled && !unpool_body(c)) return MHD_NO;
        if (c->len + n > c->cap) {
            /* the announced length at once: growing by doubling copies a large body over again */
            size_t cap = c->cap ? c->cap : c->announced > n ? c->announced : 4096;
            while (cap < c->len + n)
                cap *= 2;
            if (cap > srv->max_body) cap = srv->max_body;
            if (!hold_body(c, cap)) return MHD_YES;
            char *grown = realloc(c->body, cap);
            if (!grown) return MHD_NO;
            c->body = grown;
            c->cap = cap;
        }
        memcpy(c->body + c->len, upload_data, n);
        c->len += n;
        return MHD_YES;
    }

    ss_rest_guard_received(srv->guard, c->guarded);
    return route(c, method, url);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    conn_ctx *c = *con_cls;
    if (!c) return;
    ss_rest_guard_rearm(c->srv->guard, c->guarded); /* kept alive: the next request's clock */
    ss_rest_gone_forget(c->srv->gone, c->watch);
    if (c->gen && c->state != C_STREAMING) ss_rest_gen_free(c->gen);
    if (c->state == C_STREAMING) ss_rest_gen_close(c->gen); /* cancels it if still running */
    if (c->state == C_WAITING || c->state == C_ANSWERED || c->state == C_STREAMING) {
        ss_rest_server *srv = c->srv;
        pthread_mutex_lock(&srv->mu);
        if (--srv->open == 0) pthread_cond_broadcast(&srv->cv);
        pthread_mutex_unlock(&srv->mu);
    }
    body_drop(c);
    free(c->url);
    free(c->header_len);
    free(c->early.body);
    ss_byte_budget_give(&c->srv->held, c->held);
    ss_predict_reply_free(c->answer);
    ss_predict_reply_free(c->sent);
    free(c->pieces);
    free(c->sent_json);
    ss_predict_request_free(c->req);
    ss_server_rows_give(c->rows_held);
    ss_kserve_call_free(c->kcall);
    pthread_mutex_destroy(&c->mu);
    size_t body_bytes = c->body_bytes;
    free(c);
    *con_cls = NULL;
    ss_server_trim_after(body_bytes);
}

/* ------------------------------------------------------------------ start / stop */

/* Connections beyond what the descriptor limit allows would only fail later, at accept: keep
 * FD_RESERVE descriptors (half of a smaller limit) for everything else. */
#define FD_RESERVE 128

/* Threads that parse request bodies: a few large bodies queue behind each other there, never in
 * front of a health probe. */
#define REST_DECODE_THREADS 1

static ss_status *rest_limits(const ss_rest_options *o, ss_rest_limits *lim)
{
    if (o->max_connections < 0 || o->max_per_client < 0 || o->read_timeout_s < 0 ||
        o->max_buffered_mb < 0)
        return ss_errf(SS_ERR_INVALID, "RESTful server limits must be >= 0 (0 = the default)");
    lim->max_connections =
        o->max_connections ? (unsigned)o->max_connections : SS_SERVER_DEFAULT_REST_CONNECTIONS;
    lim->max_per_client =
        o->max_per_client ? (unsigned)o->max_per_client : SS_SERVER_DEFAULT_REST_PER_CLIENT;
    lim->read_timeout_s =
        o->read_timeout_s ? (unsigned)o->read_timeout_s : SS_SERVER_DEFAULT_REST_READ_TIMEOUT_S;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return NULL;
    rlim_t reserve = rl.rlim_cur / 2 < FD_RESERVE ? rl.rlim_cur / 2 : FD_RESERVE;
    if (lim->max_connections > rl.rlim_cur - reserve) {
        SS_WARN("RESTful server: %u connections allowed, but the descriptor limit is %llu: "
                "allowing %llu",
                lim->max_connections, (unsigned long long)rl.rlim_cur,
                (unsigned long long)(rl.rlim_cur - reserve));
        lim->max_connections = (unsigned)(rl.rlim_cur - reserve);
    }
    return NULL;
}

static ss_status *parse_address(const char *address, struct sockaddr_in *sa)
{
    if (!address || !address[0]) return ss_errf(SS_ERR_INVALID, "RESTful server address is empty");
    if (strncmp(address, "unix:", 5) == 0)
        return ss_errf(SS_ERR_INVALID, "RESTful server does not support binding to unix domain "
                                       "socket");
    const char *colon = strrchr(address, ':');
    char host[64];
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || (size_t)(colon - address) >= sizeof host || end == colon + 1 || *end ||
        port < 0 || port > 65535)
        return ss_errf(SS_ERR_INVALID, "RESTful server address '%s' is not ip:port", address);
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return ss_errf(SS_ERR_INVALID, "RESTful server address '%s': '%s' is not an IPv4 address",
                       address, host);
    return NULL;
}

/* What start made before the daemon (any of it may be missing), and the server itself. */
static void rest_free_parts(ss_rest_server *srv)
{
    ss_rest_gone_free(srv->gone);
    ss_rest_gen_env_free(srv->gen);
    ss_tls_pems_free(&srv->tls);
    ss_workq_free(srv->decoder);
    ss_rest_guard_free(srv->guard);
    free(srv);
}

ss_status *ss_rest_server_start(const ss_rest_options *opts, ss_rest_server **out)
{
    *out = NULL;
    struct sockaddr_in sa;
    ss_status *st = parse_address(opts->address, &sa);
    if (st) return st;
    if (opts->max_msg_mb < 0 || opts->max_msg_mb > SS_SERVER_MAX_MSG_MB_LIMIT)
        return ss_errf(SS_ERR_INVALID, "max_msg_mb_size %d is outside [1, %d]", opts->max_msg_mb,
                       SS_SERVER_MAX_MSG_MB_LIMIT);
    if (!opts->handler.predict)
        return ss_errf(SS_ERR_INVALID, "RESTful server needs a predict handler");
    ss_rest_limits lim;
    if ((st = rest_limits(opts, &lim))) return st;
    ss_rest_server *srv = calloc(1, sizeof *srv);
    if (!srv) return ss_errf(SS_ERR_NOMEM, "cannot allocate the RESTful server");
    if ((st = ss_rest_guard_new(&lim, &srv->guard))) {
        free(srv);
        return st;
    }
    if ((st = ss_workq_new(REST_DECODE_THREADS, "ss-rest-decode", &srv->decoder))) {
        ss_rest_guard_free(srv->guard);
        free(srv);
        return st;
    }
    static const char *const labels[] = {"limit"};
    ss_metric_family *refused = ss_metrics_family(
        ss_metrics_global(), SS_METRIC_COUNTER, "shardserve_rest_refused_total",
        "REST connections and requests refused or closed by a limit", 1, labels, NULL, 0);
    srv->refused_body = ss_metrics_series(refused, (const char *const[]){"body_size"});
    srv->held.refused = ss_metrics_series(refused, (const char *const[]){"buffered_bytes"});
    int mb = opts->max_msg_mb ? opts->max_msg_mb : SS_SERVER_DEFAULT_MAX_MSG_MB;
    srv->max_body = (size_t)mb << 20;
    int held_mb = opts->max_buffered_mb > 0 ? opts->max_buffered_mb : 2 * mb;
    srv->held.limit = (size_t)(held_mb > mb ? held_mb : mb) << 20;
    srv->handler = opts->handler;
    srv->ready = opts->ready;
    srv->ready_ctx = opts->ready_ctx;
    if (opts->ssl) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
            st = ss_errf(SS_ERR_UNSUPPORTED,
                         "Serving Error: RESTful server: this libmicrohttpd has no TLS support");
        if (!st) st = ss_tls_load(opts->ssl, "RESTful", &srv->tls);
        if (st) {
            rest_free_parts(srv);
            return st;
        }
    }
    if (!st) st = ss_rest_gen_env_new(&opts->handler, opts->servable_dir, &srv->gen);
    if (!st) st = ss_rest_gone_new(&srv->gone);
    if (st) {
        rest_free_parts(srv);
        return st;
    }
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);

    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC;
    if (srv->tls.cert) flags |= MHD_USE_TLS;
    unsigned timeout = opts->timeout_s > 0 ? (unsigned)opts->timeout_s : 100;
    unsigned pool = opts->threads > 1 ? (unsigned)opts->threads : 0;
    unsigned limit = lim.max_connections + 4; /* the guard refuses first, counting it */
    enum MHD_OPTION tls = srv->tls.cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END;
    struct MHD_OptionItem extra[] = {
        {pool ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, pool, NULL},
        {MHD_OPTION_CONNECTION_LIMIT, limit, NULL},
        {tls, 0, srv->tls.cert},
        {tls ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, srv->tls.key},
        {tls ? MHD_OPTION_HTTPS_PRIORITIES : MHD_OPTION_END, 0, TLS_PRIORITIES},
        {srv->tls.ca ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, 0, srv->tls.ca},
        {MHD_OPTION_END, 0, NULL},
    };
    /* MHD_OPTION_ARRAY stops at the first END, so compact the optional entries. */
    enum { NEXTRA = sizeof extra / sizeof extra[0] };
    struct MHD_OptionItem options[NEXTRA];
    size_t n = 0;
    for (size_t i = 0; i + 1 < NEXTRA; i++)
        if (extra[i].option != MHD_OPTION_END) options[n++] = extra[i];
    options[n] = extra[NEXTRA - 1];
    srv->daemon = MHD_start_daemon(
        flags, 0, accept_policy, srv, on_request, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
        MHD_OPTION_CONNECTION_TIMEOUT, timeout, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv, MHD_OPTION_ARRAY, options,
        MHD_OPTION_END);
    if (!srv->daemon) {
        pthread_mutex_destroy(&srv->mu);
        pthread_cond_destroy(&srv->cv);
        rest_free_parts(srv);
        return ss_errf(SS_ERR_IO,
                       "RESTful server start failed, bind to the socket address %s "
                       "failed",
                       opts->address);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : ntohs(sa.sin_port);
    SS_INFO("Serving RESTful server start success, listening on %s:%d%s", inet_ntoa(sa.sin_addr),
            srv->port,
            !srv->tls.cert           ? ""
            : srv->tls.verify_client ? " (HTTPS with client certificates)"
                                     : " (HTTPS)");
    *out = srv;
    return NULL;
}

int ss_rest_server_port(const ss_rest_server *srv)
{
    return srv ? srv->port : 0;
}

void ss_rest_server_stop(ss_rest_server *srv)
{
    if (!srv) return;
    MHD_socket listen_fd = MHD_quiesce_daemon(srv->daemon);
    pthread_mutex_lock(&srv->mu);
    /* Suspended connections must be resumed before MHD stops: wait for every answer. */
    while (srv->pending > 0)
        pthread_cond_wait(&srv->cv, &srv->mu);
    /* Then give the answers up to 5 s to reach their clients. */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    while (srv->open > 0)
        if (pthread_cond_timedwait(&srv->cv, &srv->mu, &deadline) != 0) break;
    pthread_mutex_unlock(&srv->mu);
    MHD_stop_daemon(srv->daemon);
    if (listen_fd != MHD_INVALID_SOCKET) close(listen_fd);
    ss_workq_free(srv->decoder); /* idle: every decoded request was answered (pending == 0) */
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
    srv->decoder = NULL;
    rest_free_parts(srv);
}
