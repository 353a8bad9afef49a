/*
 * rest_gen: generation over REST, shared by Triton's generate extension
 * (/v2/models/NAME/generate[_stream], rest_gen_triton.c) and OpenAI's /v1/completions
 * (openai.c). A codec parses its JSON into gen_params; this file turns them into the servable's
 * generate method (every declared input filled, defaults for what the client left out), encodes
 * text prompts with the servable's tokenizer.json, and answers either in one body or as
 * Server-Sent Events (sse.h) fed by the request's partial() from the worker's thread.
 *
 * Text: when the servable folder has a Hugging Face tokenizer.json (loaded once per servable),
 * prompts may be text, encoded here. Answers carry the text the worker's token loop decodes and
 * sends with each piece of tokens (partial UTF-8 held back there); stop strings go to the worker
 * as the method's input "stop" and are applied there, for every front end alike (gen_stop.h: the
 * text ends before the stop string, which is never sent; the tokens keep the one that completed
 * it).
 *
 * Threads: decode runs on the REST decoder thread, partial/done on the worker's, respond/encode
 * and close on MHD's. A streamed request is owned by its SSE stream (freed when the producer and
 * the connection have both let go), a plain one by its connection.
 */
#ifndef SS_SERVER_REST_GEN_H
#define SS_SERVER_REST_GEN_H

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "shardserve/serving.h"
#include "shardserve/tokenizer.h"

#include "gen_stop.h"
#include "sbuf.h"

typedef struct ss_rest_gen ss_rest_gen;
typedef struct ss_rest_gen_env ss_rest_gen_env;

/* ------------------------------------------------------------------ for codecs */

enum {
    GEN_P_MAX_TOKENS,
    GEN_P_TEMPERATURE,
    GEN_P_TOP_K,
    GEN_P_TOP_P,
    GEN_P_MIN_P,
    GEN_P_SEED,
    GEN_P_REPETITION,
    GEN_P_PRESENCE,
    GEN_P_FREQUENCY,
    GEN_P_COUNT
};

typedef struct {
    char *model;         /* the servable */
    uint64_t version;    /* 0: the latest */
    const cJSON *prompt; /* ids (array of integers) or text (string); borrowed from the body */
    const char *prompt_field;
    bool set[GEN_P_COUNT];
    double value[GEN_P_COUNT];
    const cJSON *stop_token_ids;
    const char *stops[SS_GEN_MAX_STOPS]; /* borrowed from the body */
    int n_stops;
    bool stream;
} gen_params;

typedef struct {
    unsigned status;
    char param[64]; /* the field at fault ("" if none) */
    char msg[512];
} gen_err;

bool gen_fail(gen_err *e, unsigned status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The sampling fields common to both APIs (max_tokens, temperature, top_k, top_p, min_p, seed,
 * repetition_penalty, presence_penalty, frequency_penalty, stop_token_ids): numbers, or null. */
bool gen_parse_common(const cJSON *obj, gen_params *p, gen_err *e);
/* "stop": a string or a list of at most SS_GEN_MAX_STOPS strings, or null (their length is the
 * worker's to check). */
bool gen_parse_stops(const cJSON *stop, gen_params *p, gen_err *e);

typedef struct {
    const char *name;
    /* Parse the protocol's fields (the body is a JSON object). */
    bool (*parse)(const char *url, const cJSON *root, gen_params *p, gen_err *e);
    void (*error)(const gen_err *e, sbuf *out);
    /* A streamed piece (ids new since the last one; text NULL without a tokenizer). */
    void (*chunk)(ss_rest_gen *g, const int64_t *ids, size_t n, const char *text, size_t tlen,
                  sbuf *out);
    /* The stream's last event(s): its finish reason and any text still held back. */
    void (*last)(ss_rest_gen *g, const char *reason, const char *text, size_t tlen, sbuf *out);
    /* A whole answer. */
    void (*whole)(ss_rest_gen *g, const int64_t *ids, size_t n, const char *text, size_t tlen,
                  const char *reason, sbuf *out);
} gen_codec;

extern const gen_codec ss_gen_codec_triton, ss_gen_codec_openai;

/* What codecs may read of a request. */
typedef struct {
    const char *model;
    uint64_t version; /* the version that answers */
    size_t prompt_tokens, completion_tokens;
    const char *id; /* "cmpl-..." */
    long created;   /* unix seconds */
    bool text;      /* a tokenizer is there: answers carry text */
} gen_info;
const gen_info *ss_rest_gen_info(const ss_rest_gen *g);
void gen_put_ids(sbuf *out, const int64_t *ids, size_t n);

/* ------------------------------------------------------------------ for rest_server.c */

ss_status *ss_rest_gen_env_new(const ss_predict_handler *handler, const char *servable_dir,
                               ss_rest_gen_env **out);
void ss_rest_gen_env_free(ss_rest_gen_env *env);
const ss_predict_handler *ss_rest_gen_env_handler(const ss_rest_gen_env *env);

/* Decoder thread: parse a body into a request (true), or an error reply (false: *status, *body
 * malloc'd). The connection is suspended meanwhile. */
bool ss_rest_gen_decode(ss_rest_gen_env *env, const gen_codec *codec, const char *url,
                        const char *body, size_t len, struct MHD_Connection *conn,
                        ss_rest_gen **out, unsigned *status, char **reply, size_t *reply_len);
bool ss_rest_gen_streaming(const ss_rest_gen *g);
/* Plain: the request (owned by the caller from now on) and, on the MHD thread, its answer. */
ss_predict_request *ss_rest_gen_take_request(ss_rest_gen *g);
void ss_rest_gen_encode(ss_rest_gen *g, const ss_predict_reply *reply, unsigned *status,
                        char **body, size_t *len);
void ss_rest_gen_free(ss_rest_gen *g);
/* Streamed: hand the request to the handler; answered(ctx) runs once done() has been written. */
void ss_rest_gen_start(ss_rest_gen *g, void (*answered)(void *ctx), void *ctx);
/* MHD thread, once resumed: the event stream, or an error that came before any event. */
enum MHD_Result ss_rest_gen_respond(ss_rest_gen *g, struct MHD_Connection *conn);
/* The client hung up (watcher thread) / the request completed (MHD thread; drops the
 * connection's hold on a streamed request). */
void ss_rest_gen_client_gone(ss_rest_gen *g);
void ss_rest_gen_close(ss_rest_gen *g);

/* GET /v1/models */
void ss_openai_models(const ss_predict_handler *h, unsigned *status, char **body, size_t *len);

#endif
