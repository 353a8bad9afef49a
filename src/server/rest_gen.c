/*
 * rest_gen: see rest_gen.h. Three parts: the tokenizer cache (one tokenizer.json per servable,
 * loaded on first use), a request built from gen_params against the method's published
 * signature, and the two ways of answering (one body; an event stream whose events are written
 * on the worker's thread, so the MHD thread only copies bytes).
 */
#include "rest_gen.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "json.h"
#include "sse.h"

/* Bytes of events queued for one slow client before its request is cancelled. */
#define SSE_QUEUE_LIMIT (4u << 20)

typedef struct tk_entry {
    char *servable;
    ss_tokenizer *tk; /* NULL: none, or it failed to load (why) */
    char *why;
    struct tk_entry *next;
} tk_entry;

struct ss_rest_gen_env {
    ss_predict_handler handler;
    char *servable_dir;
    pthread_mutex_t mu;
    tk_entry *tokenizers;
    _Atomic unsigned long next_id;
};

struct ss_rest_gen {
    ss_rest_gen_env *env;
    const gen_codec *codec;
    gen_info info;
    char id[32];
    ss_predict_request *req;     /* owned (until taken, for a plain request) */
    ss_predict_request *running; /* the same, also once taken: what a gone client cancels */
    ss_tokenizer *tk;            /* the env's; NULL: ids only */
    const char *tk_why;          /* why there is none, when it failed to load (the env's) */
    int max_context;             /* the servable's (0: none): bounds a text prompt's encoding */
    bool stream;
    /* streaming (the worker's thread writes, under the stream's ordering) */
    ss_sse *sse;
    sbuf text; /* a plain request: the worker's text pieces so far */
    void (*answered)(void *ctx);
    void *answered_ctx;
    unsigned early_status; /* an error before any event: answered as a plain error */
    sbuf early;
    const char *dropped; /* why an event was dropped: the stream may not end as a success */
};

/* ------------------------------------------------------------------ errors and parsing */

bool gen_fail(gen_err *e, unsigned status, const char *param, const char *fmt, ...)
{
    e->status = status;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return false;
}

/* The method inputs a request may set, their defaults (OpenAI's where it has one) and kind. */
static const struct {
    const char *name;
    double def;
    bool integer;
} gen_param_table[GEN_P_COUNT] = {
    [GEN_P_MAX_TOKENS] = {"max_tokens", 16, true},
    [GEN_P_TEMPERATURE] = {"temperature", 1, false},
    [GEN_P_TOP_K] = {"top_k", 0, true},
    [GEN_P_TOP_P] = {"top_p", 1, false},
    [GEN_P_MIN_P] = {"min_p", 0, false},
    [GEN_P_SEED] = {"seed", 0, true},
    [GEN_P_REPETITION] = {"repetition_penalty", 1, false},
    [GEN_P_PRESENCE] = {"presence_penalty", 0, false},
    [GEN_P_FREQUENCY] = {"frequency_penalty", 0, false},
};

bool gen_parse_common(const cJSON *obj, gen_params *p, gen_err *e)
{
    for (int k = 0; k < GEN_P_COUNT; k++) {
        const char *name = gen_param_table[k].name;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
        if (!v || cJSON_IsNull(v)) continue;
        if (!cJSON_IsNumber(v))
            return gen_fail(e, MHD_HTTP_BAD_REQUEST, name, "'%s' must be a number", name);
        if (gen_param_table[k].integer && v->valuedouble != floor(v->valuedouble))
            return gen_fail(e, MHD_HTTP_BAD_REQUEST, name, "'%s' must be an integer, got %g", name,
                            v->valuedouble);
        if (!(fabs(v->valuedouble) <= 9.2e18)) /* beyond, an integer's cast is undefined */
            return gen_fail(e, MHD_HTTP_BAD_REQUEST, name,
                            "'%s' is %g, beyond any value it may take (|%s| <= 9.2e18)", name,
                            v->valuedouble, name);
        p->set[k] = true;
        p->value[k] = v->valuedouble;
    }
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(obj, "stop_token_ids");
    if (ids && !cJSON_IsNull(ids)) {
        if (!cJSON_IsArray(ids))
            return gen_fail(e, MHD_HTTP_BAD_REQUEST, "stop_token_ids",
                            "'stop_token_ids' must be a list of integers");
        p->stop_token_ids = ids;
    }
    return true;
}

bool gen_parse_stops(const cJSON *stop, gen_params *p, gen_err *e)
{
    if (!stop || cJSON_IsNull(stop)) return true;
    if (cJSON_IsString(stop) && p->n_stops < SS_GEN_MAX_STOPS) {
        p->stops[p->n_stops++] = stop->valuestring;
        return true;
    }
    if (!cJSON_IsArray(stop) || cJSON_GetArraySize(stop) > SS_GEN_MAX_STOPS - p->n_stops)
        return gen_fail(e, MHD_HTTP_BAD_REQUEST, "stop",
                        "'stop' must be a string or a list of at most %d strings",
                        SS_GEN_MAX_STOPS);
    const cJSON *s;
    cJSON_ArrayForEach(s, stop)
    {
        if (!cJSON_IsString(s))
            return gen_fail(e, MHD_HTTP_BAD_REQUEST, "stop", "'stop' must hold strings only");
        p->stops[p->n_stops++] = s->valuestring;
    }
    return true;
}

void gen_put_ids(sbuf *out, const int64_t *ids, size_t n)
{
    sb_str(out, "[");
    for (size_t i = 0; i < n; i++)
        sb_printf(out, "%s%" PRId64, i ? "," : "", ids[i]);
    sb_str(out, "]");
}

/* ------------------------------------------------------------------ the environment */

ss_status *ss_rest_gen_env_new(const ss_predict_handler *handler, const char *servable_dir,
                               ss_rest_gen_env **out)
{
    ss_rest_gen_env *env = calloc(1, sizeof *env);
    if (!env || (servable_dir && !(env->servable_dir = strdup(servable_dir)))) {
        free(env);
        return ss_errf(SS_ERR_NOMEM, "the REST generation front end");
    }
    env->handler = *handler;
    pthread_mutex_init(&env->mu, NULL);
    *out = env;
    return NULL;
}

void ss_rest_gen_env_free(ss_rest_gen_env *env)
{
    if (!env) return;
    for (tk_entry *t = env->tokenizers, *next; t; t = next) {
        next = t->next;
        ss_tokenizer_free(t->tk);
        free(t->servable);
        free(t->why);
        free(t);
    }
    pthread_mutex_destroy(&env->mu);
    free(env->servable_dir);
    free(env);
}

const ss_predict_handler *ss_rest_gen_env_handler(const ss_rest_gen_env *env)
{
    return &env->handler;
}

/* Under env->mu: load SERVABLE_DIR/NAME/tokenizer.json (a missing file is no error) into a new
 * entry. Out of memory is returned, not remembered: the next request tries again. A
 * tokenizer.json that does not load (malformed, unreadable) is remembered, with why. */
static ss_status *tk_load(ss_rest_gen_env *env, const char *servable, tk_entry **out)
{
    tk_entry *t = calloc(1, sizeof *t);
    if (!t || !(t->servable = strdup(servable))) {
        free(t);
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s/tokenizer.json", env->servable_dir ? env->servable_dir : "",
             servable);
    if (env->servable_dir && !strchr(servable, '/') && stat(path, &sb) == 0) {
        ss_status *st = ss_tokenizer_load(path, &t->tk);
        /* only out of memory is of the moment: an unreadable file (EACCES, a folder, a short
         * read) stays so, and must not fail every request for the model, ids prompts included */
        if (st && st->code != SS_ERR_NOMEM) {
            SS_WARN("%s: %s", path, st->msg);
            t->why = strdup(st->msg);
            ss_status_free(st);
            st = t->why ? NULL : ss_errf(SS_ERR_NOMEM, "out of memory");
        }
        if (st) {
            free(t->servable);
            free(t);
            return st;
        }
    }
    t->next = env->tokenizers;
    env->tokenizers = t;
    *out = t;
    return NULL;
}

/* The servable's tokenizer in *tk (NULL: none; *why says why when it failed to load), or the
 * failure of the moment that kept it from loading. */
static ss_status *tk_get(ss_rest_gen_env *env, const char *servable, ss_tokenizer **tk,
                         const char **why)
{
    pthread_mutex_lock(&env->mu);
    tk_entry *t = env->tokenizers;
    while (t && strcmp(t->servable, servable))
        t = t->next;
    ss_status *st = t ? NULL : tk_load(env, servable, &t);
    pthread_mutex_unlock(&env->mu);
    *tk = t ? t->tk : NULL;
    *why = t ? t->why : NULL;
    return st;
}

/* ------------------------------------------------------------------ building the request */

static const ss_serving_method *gen_method(const ss_serving_signature *sig)
{
    const ss_serving_method *m = ss_serving_signature_method(sig, "generate");
    for (size_t i = 0; !m && i < sig->n_methods; i++) {
        bool prompt = false, tokens = false;
        for (size_t k = 0; k < sig->methods[i].n_inputs; k++)
            prompt = prompt || !strcmp(sig->methods[i].inputs[k].name, "prompt");
        for (size_t k = 0; k < sig->methods[i].n_outputs; k++)
            tokens = tokens || !strcmp(sig->methods[i].outputs[k].name, "tokens");
        if (prompt && tokens) m = &sig->methods[i];
    }
    return m;
}

static bool put_ids(ss_serving_instance *inst, const char *name, const int64_t *ids, size_t n)
{
    ss_tensor t = {0};
    int64_t dims[1] = {(int64_t)n};
    ss_status *st = ss_tensor_alloc(&t, SS_DT_INT64, 1, dims);
    if (!st && n) memcpy(t.data, ids, n * sizeof *ids);
    if (!st) st = ss_serving_instance_put(inst, name, &t, false);
    ss_tensor_free(&t);
    bool ok = !st;
    ss_status_free(st);
    return ok;
}

static bool put_number(ss_serving_instance *inst, const char *name, double v, bool integer)
{
    ss_tensor t = {0};
    ss_status *st = ss_tensor_alloc(&t, integer ? SS_DT_INT64 : SS_DT_FLOAT64, 0, NULL);
    if (!st && integer) *(int64_t *)t.data = (int64_t)v;
    if (!st && !integer) *(double *)t.data = v;
    if (!st) st = ss_serving_instance_put(inst, name, &t, false);
    ss_tensor_free(&t);
    bool ok = !st;
    ss_status_free(st);
    return ok;
}

/* The prompt as ids: a list of integers, or text through the tokenizer. *ids malloc'd. */
static bool gen_prompt_ids(ss_rest_gen *g, const gen_params *p, int64_t **ids, size_t *n,
                           gen_err *e)
{
    const char *field = p->prompt_field;
    if (cJSON_IsString(p->prompt)) {
        if (!g->tk)
            return gen_fail(e, MHD_HTTP_BAD_REQUEST, field,
                            "'%s' is text, but model '%s' has no usable tokenizer.json in its "
                            "servable folder%s%s%s: give the prompt as token ids",
                            field, g->info.model, g->tk_why ? " (" : "", g->tk_why ? g->tk_why : "",
                            g->tk_why ? ")" : "");
        int32_t *ids32 = NULL;
        const char *text = p->prompt->valuestring;
        /* at least one new token: a prompt of max_context ids is refused without the rest */
        bool bounded = g->max_context > 0;
        size_t most = bounded ? (size_t)g->max_context - 1 : SIZE_MAX, len = strlen(text);
        ss_status *st = ss_tokenizer_encode_at_most(g->tk, text, len, true, most, &ids32, n);
        if (st && bounded && st->code == SS_ERR_LIMIT && len <= SS_TOKENIZER_MAX_TEXT_BYTES) {
            gen_fail(e, MHD_HTTP_BAD_REQUEST, field,
                     "'%s' is more than %zu tokens: with at least 1 new token it exceeds the "
                     "servable's max_context %d",
                     field, most, g->max_context);
            ss_status_free(st);
            return false;
        }
        if (st) {
            bool oom = st->code == SS_ERR_NOMEM;
            gen_fail(e, oom ? MHD_HTTP_INTERNAL_SERVER_ERROR : MHD_HTTP_BAD_REQUEST,
                     oom ? "" : field, "'%s': %s", field, st->msg);
            ss_status_free(st);
            return false;
        }
        *ids = malloc((*n ? *n : 1) * sizeof **ids);
        for (size_t i = 0; *ids && i < *n; i++)
            (*ids)[i] = ids32[i];
        free(ids32);
        return *ids || gen_fail(e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "out of memory");
    }
    int count = cJSON_GetArraySize(p->prompt);
    if (!cJSON_IsArray(p->prompt) || count == 0)
        return gen_fail(e, MHD_HTTP_BAD_REQUEST, field,
                        "'%s' must be text or a non-empty list of token ids", field);
    *ids = malloc((size_t)count * sizeof **ids);
    if (!*ids) return gen_fail(e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "out of memory");
    *n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, p->prompt)
    {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
            fabs(v->valuedouble) > 9e15) {
            free(*ids);
            return gen_fail(e, MHD_HTTP_BAD_REQUEST, field,
                            "'%s' must be text or a list of integer token ids: element %zu is "
                            "not one",
                            field, *n);
        }
        (*ids)[(*n)++] = (int64_t)v->valuedouble;
    }
    return true;
}

static bool gen_stop_ids(const cJSON *list, ss_serving_instance *inst, gen_err *e)
{
    int64_t ids[64];
    size_t n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, list)
    {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || n == 64 ||
            !(v->valuedouble >= 0 && v->valuedouble <= INT32_MAX))
            return gen_fail(e, MHD_HTTP_BAD_REQUEST, "stop_token_ids",
                            "'stop_token_ids' must be a list of at most 64 token ids (integers "
                            "in 0..2147483647): element %zu is not one",
                            n);
        ids[n++] = (int64_t)v->valuedouble;
    }
    return put_ids(inst, "stop_token_ids", ids, n) ||
           gen_fail(e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "out of memory");
}

/* The stop strings as the method's input "stop": a string tensor [n] (n may be 0). */
static bool gen_stop_strings(const gen_params *p, ss_serving_instance *inst, gen_err *e)
{
    ss_tensor t = {0};
    int64_t dims[1] = {p->n_stops};
    ss_status *st = ss_tensor_alloc(&t, SS_DT_STRING, 1, dims);
    ss_string *s = st ? NULL : t.data;
    for (int i = 0; !st && i < p->n_stops; i++) {
        s[i].len = strlen(p->stops[i]);
        if (!(s[i].data = strdup(p->stops[i]))) st = ss_errf(SS_ERR_NOMEM, "stop");
    }
    if (!st) st = ss_serving_instance_put(inst, "stop", &t, false);
    ss_tensor_free(&t);
    bool ok = !st;
    ss_status_free(st);
    return ok || gen_fail(e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "out of memory");
}

/* One declared input of the method, from the request or its default. */
static bool gen_input(ss_rest_gen *g, const gen_params *p, const char *name,
                      ss_serving_instance *inst, gen_err *e)
{
    if (!strcmp(name, "prompt")) {
        int64_t *ids = NULL;
        size_t n = 0;
        if (!gen_prompt_ids(g, p, &ids, &n, e)) return false;
        g->info.prompt_tokens = n;
        bool ok = put_ids(inst, "prompt", ids, n);
        free(ids);
        return ok || gen_fail(e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "out of memory");
    }
    if (!strcmp(name, "stop")) return gen_stop_strings(p, inst, e);
    if (!strcmp(name, "stop_token_ids")) {
        if (p->stop_token_ids) return gen_stop_ids(p->stop_token_ids, inst, e);
        return put_ids(inst, name, NULL, 0) ||
               gen_fail(e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "out of memory");
    }
    for (int k = 0; k < GEN_P_COUNT; k++)
        if (!strcmp(name, gen_param_table[k].name))
            return put_number(inst, name, p->set[k] ? p->value[k] : gen_param_table[k].def,
                              gen_param_table[k].integer) ||
                   gen_fail(e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "out of memory");
    return gen_fail(e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "the method's input '%s' is unknown",
                    name);
}

static bool declared(const ss_serving_method *m, const char *name)
{
    for (size_t k = 0; k < m->n_inputs; k++)
        if (!strcmp(m->inputs[k].name, name)) return true;
    return false;
}

/* A parameter the method does not take is refused unless it asks for the default anyway. */
static bool gen_undeclared(const ss_serving_method *m, const gen_params *p, const char *model,
                           gen_err *e)
{
    /* max_tokens' default is the servable's (generate.max_tokens), which the table's 16 may not
     * be: a method that does not take it refuses every value */
    for (int k = 0; k < GEN_P_COUNT; k++)
        if (p->set[k] && (p->value[k] != gen_param_table[k].def || k == GEN_P_MAX_TOKENS) &&
            !declared(m, gen_param_table[k].name))
            return gen_fail(e, MHD_HTTP_BAD_REQUEST, gen_param_table[k].name,
                            "model '%s' does not take '%s' (its method '%s' does not declare it)",
                            model, gen_param_table[k].name, m->name);
    if (p->stop_token_ids && !declared(m, "stop_token_ids"))
        return gen_fail(e, MHD_HTTP_BAD_REQUEST, "stop_token_ids",
                        "model '%s' does not take 'stop_token_ids' (its method '%s' does not "
                        "declare it)",
                        model, m->name);
    if (p->n_stops && !declared(m, "stop"))
        return gen_fail(e, MHD_HTTP_BAD_REQUEST, "stop",
                        "model '%s' does not take 'stop' (its method '%s' does not declare input "
                        "'stop')",
                        model, m->name);
    return true;
}

static bool gen_build(ss_rest_gen *g, const gen_params *p, gen_err *e)
{
    const ss_predict_handler *h = &g->env->handler;
    ss_serving_signature *sig = NULL;
    char why[512] = "";
    int r = h->describe ? h->describe(h->ctx, p->model, p->version, &sig, why, sizeof why)
                        : SS_DESCRIBE_NOT_FOUND;
    if (r == SS_DESCRIBE_NOT_FOUND)
        return gen_fail(e, MHD_HTTP_NOT_FOUND, "model", "model '%s' is not served%s%s", p->model,
                        why[0] ? ": " : "", why);
    if (r != SS_DESCRIBE_OK)
        return gen_fail(e, MHD_HTTP_SERVICE_UNAVAILABLE, "model", "model '%s' is not ready: %s",
                        p->model, why);
    /* only now, for a served model: the cache holds no entry for a name a client made up */
    ss_status *st = tk_get(g->env, p->model, &g->tk, &g->tk_why);
    if (st) {
        gen_fail(e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "model '%s': %s", p->model, st->msg);
        ss_status_free(st);
        ss_serving_signature_free(sig);
        return false;
    }
    g->info.text = g->tk != NULL;
    g->max_context = sig->max_context;
    const ss_serving_method *m = gen_method(sig);
    bool ok = m || gen_fail(e, MHD_HTTP_BAD_REQUEST, "model",
                            "model '%s' does not generate (no method with input 'prompt' and "
                            "output 'tokens')",
                            p->model);
    ok = ok && gen_undeclared(m, p, p->model, e);
    g->info.version = sig->version;
    g->req = ok ? ss_predict_request_new(p->model, m->name, sig->version) : NULL;
    if (g->req) g->req->want_finish_reason = true; /* the answers always report one */
    ss_serving_instance *inst = g->req ? ss_predict_request_add_instance(g->req) : NULL;
    if (ok && !inst) ok = gen_fail(e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "out of memory");
    for (size_t k = 0; ok && k < m->n_inputs; k++)
        ok = gen_input(g, p, m->inputs[k].name, inst, e);
    ss_serving_signature_free(sig);
    return ok;
}

/* ------------------------------------------------------------------ decode */

/* The stream's client went away (under the stream's lock, before the last write). */
static void gen_gone(void *owner)
{
    ss_predict_request_cancel(((ss_rest_gen *)owner)->running);
}

static void gen_free(void *arg)
{
    ss_rest_gen *g = arg;
    if (!g) return;
    ss_predict_request_free(g->req);
    free(g->text.p);
    free(g->early.p);
    free((char *)g->info.model);
    free(g);
}

void ss_rest_gen_free(ss_rest_gen *g)
{
    gen_free(g);
}

static bool gen_setup(ss_rest_gen *g, const gen_params *p, gen_err *e)
{
    if (!(g->info.model = strdup(p->model)))
        return gen_fail(e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "out of memory");
    g->stream = p->stream;
    return gen_build(g, p, e);
}

bool ss_rest_gen_decode(ss_rest_gen_env *env, const gen_codec *codec, const char *url,
                        const char *body, size_t len, struct MHD_Connection *conn,
                        ss_rest_gen **out, unsigned *status, char **reply, size_t *reply_len)
{
    gen_err e = {0};
    gen_params p = {0};
    ss_rest_gen *g = calloc(1, sizeof *g);
    const char *end = NULL;
    bool oom = false;
    cJSON *root = ss_json_parse(body, len, &end, &oom);
    bool ok = g || gen_fail(&e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "out of memory");
    if (ok && oom) ok = gen_fail(&e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "out of memory");
    if (ok && root && end != body + len)
        ok = gen_fail(&e, MHD_HTTP_BAD_REQUEST, "", "the body has text after its JSON object");
    if (ok && !cJSON_IsObject(root))
        ok = gen_fail(&e, MHD_HTTP_BAD_REQUEST, "", "the body is not a JSON object");
    if (ok) {
        g->env = env;
        g->codec = codec;
        g->info.created = (long)time(NULL);
        snprintf(g->id, sizeof g->id, "cmpl-%lu", ++env->next_id);
        g->info.id = g->id;
        ok = codec->parse(url, root, &p, &e) && gen_setup(g, &p, &e);
    }
    free(p.model);
    if (ok && g->stream) {
        g->sse = ss_sse_new(conn, SSE_QUEUE_LIMIT, g, gen_free, gen_gone);
        if (!g->sse) ok = gen_fail(&e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "out of memory");
    }
    cJSON_Delete(root); /* p borrowed from it: used (prompt, stops) by now */
    if (ok) {
        g->running = g->req;
        *out = g;
        return true;
    }
    gen_free(g);
    sbuf s = {0};
    codec->error(&e, &s);
    *status = s.oom ? MHD_HTTP_INTERNAL_SERVER_ERROR : e.status; /* NULL: the server's own text */
    *reply = s.oom ? NULL : s.p;
    *reply_len = s.oom ? 0 : s.len;
    if (s.oom) free(s.p);
    return false;
}

bool ss_rest_gen_streaming(const ss_rest_gen *g)
{
    return g->stream;
}

const gen_info *ss_rest_gen_info(const ss_rest_gen *g)
{
    return &g->info;
}

/* ------------------------------------------------------------------ answers */

/* The HTTP status for a failed reply's code. */
static unsigned gen_status(int64_t code)
{
    switch (code) {
    case SS_SERVING_INVALID_INPUTS:
        return MHD_HTTP_BAD_REQUEST;
    case SS_SERVING_WORKER_UNAVAILABLE:
    case SS_SERVING_SERVABLE_UNAVAILABLE:
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    default:
        return MHD_HTTP_INTERNAL_SERVER_ERROR;
    }
}

/* Did the reply fail? Then *e holds its status, message and the input it names (a request's own
 * fault only: OpenAI's "param"). */
static bool gen_reply_failed(const ss_predict_reply *reply, gen_err *e)
{
    if (!reply) return !gen_fail(e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "out of memory");
    const ss_serving_error *err = reply->error_count ? &reply->errors[0] : NULL;
    if (!err || !err->code) return false;
    unsigned status = gen_status(err->code);
    return !gen_fail(e, status, status == MHD_HTTP_BAD_REQUEST ? err->input : NULL, "%s",
                     err->message ? err->message : "Predict failed");
}

static const char *gen_reason(const ss_predict_reply *reply)
{
    const ss_serving_item *it =
        reply->count ? ss_serving_instance_find(&reply->instances[0], "finish_reason") : NULL;
    if (!it || it->tensor.dtype != SS_DT_STRING || !it->tensor.data) return "length";
    const ss_string *s = it->tensor.data;
    return s->data ? s->data : "length";
}

/* A piece of the worker's: the new tokens and text as one event (a plain request keeps the
 * text for its answer). */
static void gen_partial(void *ctx, size_t instance, const ss_serving_instance *chunk)
{
    (void)instance;
    ss_rest_gen *g = ctx;
    const ss_serving_item *it = ss_serving_instance_find(chunk, "tokens");
    const ss_serving_item *tx = ss_serving_instance_find(chunk, "text");
    if (!it || it->tensor.dtype != SS_DT_INT64) return;
    const int64_t *ids = it->tensor.data;
    size_t n = it->tensor.nbytes / sizeof *ids;
    const ss_string *text = tx && tx->tensor.dtype == SS_DT_STRING ? tx->tensor.data : NULL;
    const char *piece = !g->info.text ? NULL : text && text->data ? text->data : "";
    size_t plen = piece && text ? text->len : 0;
    g->info.completion_tokens += n;
    if (g->dropped) return; /* the stream ends as a failure: no later event after a gap */
    if (!g->sse) {
        if (plen) sb_put(&g->text, piece, plen);
        return;
    }
    sbuf ev = {0};
    g->codec->chunk(g, ids, n, piece, plen, &ev);
    if (ev.oom || !ss_sse_send(g->sse, ev.p, ev.len, false)) {
        /* the client is gone or cannot keep up, or no memory: the request ends as a failure
         * (the worker may have finished already) */
        g->dropped = ev.oom ? "out of memory" : "the client does not keep up with the stream";
        ss_predict_request_cancel(g->running);
    }
    free(ev.p);
}

/* The stream's last events: the rest of the text and the finish reason, or the error. */
static void gen_last(ss_rest_gen *g, const ss_predict_reply *reply, sbuf *ev)
{
    gen_err e = {0};
    bool failed = gen_reply_failed(reply, &e);
    if (!failed && g->dropped)
        failed = !gen_fail(&e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "an event was dropped: %s",
                           g->dropped);
    if (failed && !ss_sse_started(g->sse)) { /* nothing sent yet: a plain error reply */
        g->early_status = e.status;
        g->codec->error(&e, &g->early);
        return;
    }
    if (failed) {
        sb_str(ev, "data: ");
        g->codec->error(&e, ev);
        sb_str(ev, "\n\n");
    } else { /* the worker's pieces have brought all the text */
        g->codec->last(g, gen_reason(reply), NULL, 0, ev);
    }
    if (g->codec == &ss_gen_codec_openai) sb_str(ev, "data: [DONE]\n\n");
}

/* done() of a streamed request (the worker's thread, or the decoder's when refused at once). */
static void gen_done(void *ctx, ss_predict_reply *reply)
{
    ss_rest_gen *g = ctx;
    reply = ss_predict_reply_finish(reply, g->req);
    sbuf ev = {0};
    gen_last(g, reply, &ev);
    ss_predict_reply_free(reply);
    ss_sse_send(g->sse, ev.p, ev.oom ? 0 : ev.len, true);
    free(ev.p);
    g->answered(g->answered_ctx);
    ss_sse_put(g->sse); /* may free g (the connection has gone already) */
}

void ss_rest_gen_start(ss_rest_gen *g, void (*answered)(void *ctx), void *ctx)
{
    g->answered = answered;
    g->answered_ctx = ctx;
    g->req->partial = gen_partial;
    g->req->partial_ctx = g;
    g->env->handler.predict(g->env->handler.ctx, g->req, gen_done, g);
}

/* body NULL: out of memory, say so */
static enum MHD_Result gen_send(struct MHD_Connection *conn, unsigned status, char *body,
                                size_t len)
{
    static const char oom[] = "{\"error\":\"out of memory\"}";
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

enum MHD_Result ss_rest_gen_respond(ss_rest_gen *g, struct MHD_Connection *conn)
{
    if (!g->early_status) return ss_sse_queue(g->sse, conn);
    bool oom = g->early.oom; /* the error could not be written: a 500 of gen_send's */
    char *body = oom ? NULL : g->early.p;
    if (oom) free(g->early.p);
    g->early.p = NULL;
    unsigned status = oom ? MHD_HTTP_INTERNAL_SERVER_ERROR : g->early_status;
    g->early_status = 0;
    return gen_send(conn, status, body, oom ? 0 : g->early.len);
}

void ss_rest_gen_client_gone(ss_rest_gen *g)
{
    if (g->sse) ss_sse_client_gone(g->sse);
}

void ss_rest_gen_close(ss_rest_gen *g)
{
    if (!g) return;
    if (g->sse)
        ss_sse_close(g->sse); /* frees g once the producer has let go too */
    else
        gen_free(g);
}

ss_predict_request *ss_rest_gen_take_request(ss_rest_gen *g)
{
    ss_predict_request *req = g->req;
    g->req = NULL;
    if (g->tk) { /* the text comes in the worker's pieces */
        req->partial = gen_partial;
        req->partial_ctx = g;
    }
    return req;
}

void ss_rest_gen_encode(ss_rest_gen *g, const ss_predict_reply *reply, unsigned *status,
                        char **body, size_t *len)
{
    gen_err e = {0};
    sbuf s = {0};
    bool ok = !gen_reply_failed(reply, &e);
    const ss_serving_item *it =
        !ok || !reply->count ? NULL : ss_serving_instance_find(&reply->instances[0], "tokens");
    const char *reason = ok ? gen_reason(reply) : NULL;
    if (ok && (!it || it->tensor.dtype != SS_DT_INT64))
        ok = gen_fail(&e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "the answer has no int64 tokens");
    if (ok && g->text.oom)
        ok = gen_fail(&e, MHD_HTTP_INTERNAL_SERVER_ERROR, "", "out of memory keeping the text");
    const int64_t *ids = ok ? it->tensor.data : NULL;
    size_t n = ok ? it->tensor.nbytes / sizeof *ids : 0;
    g->info.completion_tokens = n;
    if (ok)
        g->codec->whole(g, ids, n, g->tk ? (g->text.p ? g->text.p : "") : NULL, g->text.len, reason,
                        &s);
    else
        g->codec->error(&e, &s);
    *status = s.oom ? MHD_HTTP_INTERNAL_SERVER_ERROR : ok ? MHD_HTTP_OK : e.status;
    *body = s.oom ? NULL : s.p;
    *len = s.oom ? 0 : s.len;
    if (s.oom) free(s.p);
}
