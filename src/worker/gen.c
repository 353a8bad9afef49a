/*
 * gen (gen.h): generate requests through the token-loop engine, the pool probe, and the outputs
 * (tokens int64 [n], finish_reason "stop" | "length", text).
 */
#include "gen.h"

#include "shardserve/core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROBE_SEQ INT64_MAX /* the engine numbers its pool sequences from 0 */

typedef struct gen_req {
    ss_wgen *g;
    void *request;
    size_t inst;
    ss_serving_instance *out;
    bool want_tokens, want_reason;
    int64_t *prompt; /* until it reaches the engine (NULL after) */
    int32_t n_prompt;
    ss_gen_params p;
    int64_t stop_ids[SS_GEN_MAX_STOP_IDS];
    char *stops[SS_GEN_MAX_STOPS];
    int n_stops;
    ss_stop_text *text; /* with a tokenizer */
    bool want_text;
    bool in_engine;
    bool cancelled; /* its client went away */
    int mb;         /* its micro-batch (engine), once in_engine */
    uint64_t handle;
    int64_t *tokens; /* generated so far */
    int32_t n_tokens, cap;
    struct gen_req *next;
} gen_req;

typedef enum { POOL_UNKNOWN, PROBE_RUNNING, PROBE_RAN, PROBE_FREEING, POOL_KNOWN } pool_state;

/* A micro-batch: an engine over its share of the pool, with at most one call in flight. */
typedef struct {
    ss_gen_engine *engine;
    bool busy;
    int64_t call_batch, call_seq; /* its call in flight (0 x 0: a release-only one) */
} micro_batch;

struct ss_wgen {
    ss_generate_config cfg;
    ss_wgen_hooks hooks;
    void *worker;
    int want_mb; /* micro-batches asked for */
    micro_batch mb[SS_WGEN_MAX_MICRO_BATCHES];
    int n_mb, next_mb; /* engines made once the pool is known; round robin */
    int inflight;      /* calls given out, not done yet (also of engines already gone) */
    pool_state state;
    /* the probe ran without a request waiting since the pool was last lost: it goes out as soon
     * as the agents are ready, so the first request does not wait for the agents' first plan
     * (the weights' packing: 0.1 s for GPT-2-124M, ~1 s for a 1B model); after that only a
     * request starts one (a probe that fails would otherwise be sent again and again) */
    bool probed_idle;
    gen_req *reqs;
    int64_t probe_tok, probe_pos, probe_seq, probe_row;
    ss_tokenizer *tk; /* the servable's tokenizer.json (NULL: none) */
    char *tk_why;     /* why it did not load */
    /* Where the last rank writes a micro-batch's logits (slot k for micro-batch k): shared memory
     * of this process, so on one host they cross as a key, not as bytes (NULL: none) */
    uint8_t *lg_base;
    size_t lg_slot, lg_len;
    char lg_key[64];
    uint64_t lg_shared, lg_link; /* decode/prefill calls whose logits came each way */
};

ss_status *ss_wgen_new(const ss_generate_config *cfg, int micro_batches, const ss_wgen_hooks *hooks,
                       void *worker, ss_wgen **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return ss_errf(SS_ERR_NOMEM, "generation state");
    (*out)->cfg = *cfg;
    (*out)->hooks = *hooks;
    (*out)->worker = worker;
    (*out)->want_mb = micro_batches < 1                           ? 1
                      : micro_batches > SS_WGEN_MAX_MICRO_BATCHES ? SS_WGEN_MAX_MICRO_BATCHES
                                                                  : micro_batches;
    (*out)->probe_seq = PROBE_SEQ;
    return NULL;
}

static void logits_region_free(ss_wgen *g)
{
    if (!g->lg_base) return;
    ss_link_shm_unshare(g->lg_base);
    munmap(g->lg_base, g->lg_len);
    shm_unlink(g->lg_key);
    g->lg_base = NULL;
}

/* Removes the logits regions of serve processes that are gone: serve unlinks its own when a
 * servable stops, but one killed by SIGKILL or the OOM killer leaves them in /dev/shm (tmpfs
 * memory) under its pid. Once per process, before its first region. */
static void remove_orphan_regions(void)
{
    static bool done;
    if (done) return;
    done = true;
    DIR *d = opendir("/dev/shm");
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        long pid;
        unsigned n;
        char tail;
        if (sscanf(e->d_name, "shardserve-logits-%ld-%u%c", &pid, &n, &tail) != 2 || pid <= 0 ||
            pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char path[320];
        snprintf(path, sizeof path, "/dev/shm/%s", e->d_name);
        struct stat sb;
        long long bytes = stat(path, &sb) == 0 ? (long long)sb.st_size : 0;
        if (unlink(path) == 0)
            SS_INFO("generation: removed %s (%lld bytes), left by serve pid %ld, which is gone",
                    path, bytes, pid);
    }
    closedir(d);
}

/* Shared memory for every micro-batch's logits of up to 2 x max_running rows of `vocab` (a call
 * has a row per token: the decodes and the prompt chunks of a step; calls with more rows send
 * theirs over the link). Without it the logits travel as bytes. */
static void logits_region_make(ss_wgen *g, int32_t vocab)
{
    static unsigned made;
    size_t page = (size_t)sysconf(_SC_PAGESIZE),
           rows = 2 * (size_t)(g->cfg.max_running > 0 ? g->cfg.max_running : 1),
           slot = (rows * (size_t)vocab * sizeof(float) + page - 1) / page * page,
           len = slot * (size_t)g->n_mb;
    remove_orphan_regions();
    snprintf(g->lg_key, sizeof g->lg_key, "/shardserve-logits-%ld-%u", (long)getpid(), ++made);
    int fd = shm_open(g->lg_key, O_CREAT | O_EXCL | O_RDWR, 0600);
    void *base = MAP_FAILED;
    if (fd >= 0 && ftruncate(fd, (off_t)len) == 0)
        base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (fd >= 0) close(fd);
    ss_status *st = base == MAP_FAILED ? ss_errf(SS_ERR_UNAVAILABLE, "%s", strerror(errno))
                                       : ss_link_shm_share(base, len, g->lg_key, 0);
    if (st) {
        SS_WARN("generation: no shared memory for the logits (%s): they travel over the link",
                st->msg);
        ss_status_free(st);
        if (base != MAP_FAILED) munmap(base, len);
        if (fd >= 0) shm_unlink(g->lg_key);
        return;
    }
    g->lg_base = base, g->lg_slot = slot, g->lg_len = len;
}

static void free_engines(ss_wgen *g)
{
    for (int k = 0; k < g->n_mb; k++)
        ss_gen_engine_free(g->mb[k].engine);
    memset(g->mb, 0, sizeof g->mb);
    g->n_mb = g->next_mb = 0;
    logits_region_free(g);
}

static void req_free(gen_req *r)
{
    for (int k = 0; k < r->n_stops; k++)
        free(r->stops[k]);
    ss_stop_text_free(r->text);
    free(r->prompt);
    free(r->tokens);
    free(r);
}

/* The request leaves: unlinked, freed, and the worker told (last: it may answer the client). */
static void req_end_as(gen_req *r, const char *error, int64_t code, const char *input)
{
    ss_wgen *g = r->g;
    for (gen_req **pp = &g->reqs; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    void *request = r->request;
    size_t inst = r->inst;
    req_free(r);
    g->hooks.finish(g->worker, request, inst, error, code, input);
}

static void req_end(gen_req *r, const char *error)
{
    req_end_as(r, error, 0, NULL);
}

static void fail_all(ss_wgen *g, const char *why)
{
    while (g->reqs)
        req_end(g->reqs, why);
}

void ss_wgen_free(ss_wgen *g, const char *why)
{
    if (!g) return;
    fail_all(g, why);
    free_engines(g);
    ss_tokenizer_free(g->tk);
    free(g->tk_why);
    free(g);
}

void ss_wgen_use_tokenizer(ss_wgen *g, const char *path)
{
    if (access(path, F_OK) != 0 && errno == ENOENT) return; /* no tokenizer: not an error */
    ss_status *st = ss_tokenizer_load(path, &g->tk);
    if (!st) return;
    SS_WARN("%s: %s (stop strings and text outputs are off)", path, st->msg);
    g->tk_why = strdup(st->msg);
    ss_status_free(st);
}

/* ------------------------------------------------------------------ a request's inputs */

/* Element 0 of a one-element numeric tensor as a double; false when it is not one. */
static bool scalar(const ss_tensor *t, double *v)
{
    if (t->nbytes != ss_dtype_size(t->dtype) || t->dtype == SS_DT_STRING) return false;
    switch (t->dtype) {
    case SS_DT_INT64:
        *v = (double)*(const int64_t *)t->data;
        return true;
    case SS_DT_INT32:
        *v = *(const int32_t *)t->data;
        return true;
    case SS_DT_FLOAT32:
        *v = *(const float *)t->data;
        return true;
    case SS_DT_FLOAT64:
        *v = *(const double *)t->data;
        return true;
    default:
        return false;
    }
}

/* An integer tensor's elements as int64 (any shape); false when it holds no integers. */
static bool int_list(const ss_tensor *t, int64_t *out, size_t cap, size_t *n)
{
    if (t->dtype != SS_DT_INT64 && t->dtype != SS_DT_INT32) return false;
    *n = t->nbytes / ss_dtype_size(t->dtype);
    for (size_t i = 0; i < *n && i < cap; i++)
        out[i] =
            t->dtype == SS_DT_INT64 ? ((const int64_t *)t->data)[i] : ((const int32_t *)t->data)[i];
    return true;
}

/* One stop string of input "stop" (empty ones are ignored, as OpenAI's are). */
static ss_status *add_stop(gen_req *r, const char *s, size_t len)
{
    if (!len) return NULL;
    if (r->n_stops == SS_GEN_MAX_STOPS)
        return ss_errf(SS_ERR_INVALID,
                       "input 'stop' holds more than %d stop strings "
                       "(SS_GEN_MAX_STOPS)",
                       SS_GEN_MAX_STOPS);
    if (len > SS_GEN_MAX_STOP_BYTES)
        return ss_errf(SS_ERR_INVALID,
                       "input 'stop': stop string %d is %zu bytes, at most %d "
                       "(SS_GEN_MAX_STOP_BYTES)",
                       r->n_stops + 1, len, SS_GEN_MAX_STOP_BYTES);
    if (!(r->stops[r->n_stops] = strndup(s, len))) return ss_errf(SS_ERR_NOMEM, "input 'stop'");
    r->n_stops++;
    return NULL;
}

/* Input "stop": strings, each one stop string or several separated by NUL bytes. */
static ss_status *set_stops(gen_req *r, const ss_tensor *t)
{
    if (t->dtype != SS_DT_STRING)
        return ss_errf(SS_ERR_INVALID,
                       "input 'stop' must be strings (at most %d stop strings), "
                       "got %s",
                       SS_GEN_MAX_STOPS, ss_dtype_name(t->dtype));
    const ss_string *strs = t->data;
    size_t n = t->nbytes / sizeof *strs;
    ss_status *st = NULL;
    for (size_t i = 0; i < n && !st; i++) {
        const char *p = strs[i].data ? strs[i].data : "", *end = p + strs[i].len;
        for (const char *nul = p; !st && nul; p = nul + 1) {
            nul = memchr(p, 0, (size_t)(end - p));
            st = add_stop(r, p, (size_t)((nul ? nul : end) - p));
        }
    }
    return st;
}

static ss_status *set_param(gen_req *r, const char *name, const ss_tensor *t)
{
    double v = 0;
    size_t n = 0;
    if (!strcmp(name, "stop")) return set_stops(r, t);
    if (!strcmp(name, "stop_token_ids")) {
        if (!int_list(t, r->stop_ids, SS_GEN_MAX_STOP_IDS, &n) || n > SS_GEN_MAX_STOP_IDS)
            return ss_errf(SS_ERR_INVALID, "input 'stop_token_ids' must hold at most %d integers",
                           SS_GEN_MAX_STOP_IDS);
        r->p.n_stop_ids = (int32_t)n;
        return NULL;
    }
    if (!scalar(t, &v)) return ss_errf(SS_ERR_INVALID, "input '%s' must be one number", name);
    bool integer = !strcmp(name, "max_tokens") || !strcmp(name, "top_k") || !strcmp(name, "seed");
    if (integer && (v != (double)(int64_t)v || v < (!strcmp(name, "top_k") ? -1 : 0) ||
                    v > (!strcmp(name, "seed") ? 9.2e18 : 2147483647.0)))
        return ss_errf(SS_ERR_INVALID, "input '%s' must be a whole number in range, got %g", name,
                       v);
    ss_sample_params *s = &r->p.sample;
    if (!strcmp(name, "max_tokens")) r->p.max_tokens = (int32_t)v;
    if (!strcmp(name, "top_k")) s->top_k = (int)v;
    if (!strcmp(name, "seed")) s->seed = (uint64_t)v;
    if (!strcmp(name, "temperature")) s->temperature = (float)v;
    if (!strcmp(name, "top_p")) s->top_p = (float)v;
    if (!strcmp(name, "min_p")) s->min_p = (float)v;
    if (!strcmp(name, "repetition_penalty")) s->repetition_penalty = (float)v;
    if (!strcmp(name, "presence_penalty")) s->presence_penalty = (float)v;
    if (!strcmp(name, "frequency_penalty")) s->frequency_penalty = (float)v;
    return NULL;
}

static ss_status *read_inputs(gen_req *r, const ss_method_config *mc, const ss_serving_instance *in,
                              const char **input)
{
    for (int k = 0; k < mc->n_inputs; k++) {
        *input = mc->inputs[k];
        const ss_serving_item *it = ss_serving_instance_find(in, mc->inputs[k]);
        if (!it)
            return ss_errf(SS_ERR_INVALID, "Cannot find input %s in instance input", mc->inputs[k]);
        if (strcmp(mc->inputs[k], "prompt")) {
            ss_status *st = set_param(r, mc->inputs[k], &it->tensor);
            if (st) return st;
            continue;
        }
        size_t n = it->tensor.nbytes / (it->tensor.dtype == SS_DT_INT32 ? 4 : 8);
        if ((it->tensor.dtype != SS_DT_INT64 && it->tensor.dtype != SS_DT_INT32) || n == 0 ||
            n > INT32_MAX / 2)
            return ss_errf(SS_ERR_INVALID, "input 'prompt' must hold token ids (int64 or int32), "
                                           "at least one");
        r->prompt = malloc(n * sizeof(int64_t));
        if (!r->prompt) return ss_errf(SS_ERR_NOMEM, "a prompt of %zu tokens", n);
        int_list(&it->tensor, r->prompt, n, &n);
        r->n_prompt = (int32_t)n;
    }
    *input = NULL;
    return ss_sample_check(&r->p.sample, input);
}

/* ------------------------------------------------------------------ tokens and the end */

static ss_status *put_outputs(gen_req *r, ss_gen_state state)
{
    ss_status *st = NULL;
    if (r->want_tokens) {
        ss_tensor t = {0};
        int64_t dims[1] = {r->n_tokens};
        st = ss_tensor_alloc(&t, SS_DT_INT64, 1, dims);
        if (!st) {
            if (r->n_tokens) memcpy(t.data, r->tokens, sizeof(int64_t) * (size_t)r->n_tokens);
            st = ss_serving_instance_put(r->out, "tokens", &t, false);
            if (st) ss_tensor_free(&t);
        }
    }
    if (!st && r->want_text) {
        size_t len = 0;
        const char *text = r->text ? ss_stop_text_all(r->text, &len) : "";
        st = ss_serving_instance_put_string(r->out, "text", text, len, false);
    }
    if (!st && r->want_reason) {
        const char *why = state == SS_GEN_STOP ? "stop" : "length";
        st = ss_serving_instance_put_string(r->out, "finish_reason", why, strlen(why), false);
    }
    return st;
}

/* What became final goes to the stream: the new token, or with a tokenizer what gen_stop
 * releases (everything once the sequence has ended). */
static void stream_out(gen_req *r, bool ended)
{
    ss_wgen *g = r->g;
    if (!g->hooks.tokens) return;
    if (!r->text) {
        g->hooks.tokens(g->worker, r->request, r->inst, &r->tokens[r->n_tokens - 1], 1, NULL, 0);
        return;
    }
    if (ended) ss_stop_text_finish(r->text);
    size_t from = 0, to = 0, len = 0;
    const char *text = NULL;
    ss_stop_text_take(r->text, &from, &to, &text, &len);
    if (to > from || len)
        g->hooks.tokens(g->worker, r->request, r->inst, r->tokens + from, (int)(to - from), text,
                        len);
}

static void on_token(void *ctx, int64_t token, ss_gen_state state, const char *error)
{
    gen_req *r = ctx;
    bool ended = state == SS_GEN_STOP || state == SS_GEN_LENGTH;
    if (token >= 0) {
        if (r->n_tokens == r->cap) {
            int32_t cap = r->cap ? 2 * r->cap : 64;
            int64_t *t = realloc(r->tokens, sizeof *t * (size_t)cap);
            if (!t) {
                ss_gen_cancel(r->g->mb[r->mb].engine, r->handle); /* CANCELLED: failed below */
                return;
            }
            r->tokens = t, r->cap = cap;
        }
        r->tokens[r->n_tokens++] = token;
        stream_out(r, ended);
    }
    if (state == SS_GEN_RUNNING) return;
    if (ended) {
        ss_status *st = r->text && ss_stop_text_oom(r->text)
                            ? ss_errf(SS_ERR_NOMEM, "the generated text")
                            : put_outputs(r, state);
        req_end(r, st ? st->msg : NULL);
        ss_status_free(st);
        return;
    }
    char why[600];
    snprintf(why, sizeof why, "%s",
             state == SS_GEN_CANCELLED
                 ? (r->cancelled ? "generation cancelled: the client went away"
                                 : "generation cancelled: out of memory for "
                                   "its tokens")
                 : (error ? error : "generation failed"));
    req_end(r, why);
}

/* The micro-batch with the fewest sequences. */
static int least_loaded(const ss_wgen *g)
{
    int best = 0;
    int32_t least = INT32_MAX;
    for (int k = 0; k < g->n_mb; k++) {
        ss_sched_stats s = ss_gen_stats(g->mb[k].engine);
        if (s.running + s.waiting < least) least = s.running + s.waiting, best = k;
    }
    return best;
}

/* Into an engine (once the pool is known); false: refused, the request has ended. */
static bool enter_engine(ss_wgen *g, gen_req *r)
{
    r->p.stop_ids = r->stop_ids;
    r->p.stop_text = r->text;
    r->mb = least_loaded(g);
    const char *param = NULL;
    ss_status *st = ss_gen_submit(g->mb[r->mb].engine, r->prompt, r->n_prompt, &r->p, on_token, r,
                                  &r->handle, &param);
    free(r->prompt);
    r->prompt = NULL;
    r->in_engine = !st;
    /* r is gone: its prompt or parameters were wrong, or the servable is full for now */
    if (st)
        req_end_as(r, st->msg,
                   st->code == SS_ERR_UNAVAILABLE ? SS_SERVING_SERVABLE_UNAVAILABLE
                                                  : SS_SERVING_INVALID_INPUTS,
                   param);
    ss_status_free(st);
    return !st;
}

/* The request's text and stop strings, which need the servable's tokenizer. */
static ss_status *text_setup(ss_wgen *g, gen_req *r)
{
    if (r->n_stops && !g->tk)
        return ss_errf(SS_ERR_INVALID,
                       "input 'stop' (stop strings) needs the servable's tokenizer.json to decode "
                       "the generated text, and %s%s: use stop_token_ids",
                       g->tk_why ? "it failed to load: " : "the servable folder has none",
                       g->tk_why ? g->tk_why : "");
    if (!g->tk) return NULL;
    return ss_stop_text_new(g->tk, (const char *const *)r->stops, r->n_stops, &r->text);
}

ss_status *ss_wgen_submit(ss_wgen *g, const ss_method_config *mc, const ss_serving_instance *in,
                          ss_serving_instance *out, void *request, size_t inst, bool reason,
                          const char **input)
{
    *input = NULL;
    gen_req *r = calloc(1, sizeof *r);
    if (!r) return ss_errf(SS_ERR_NOMEM, "a generate request");
    *r = (gen_req){.g = g, .request = request, .inst = inst, .out = out, .want_reason = reason};
    r->p = (ss_gen_params){.sample = ss_sample_defaults(), .max_tokens = g->cfg.max_tokens};
    memcpy(r->stop_ids, g->cfg.stop_ids, sizeof r->stop_ids);
    r->p.n_stop_ids = g->cfg.n_stop_ids;
    for (int k = 0; k < mc->n_outputs; k++) {
        r->want_tokens = r->want_tokens || !strcmp(mc->outputs[k], "tokens");
        r->want_reason = r->want_reason || !strcmp(mc->outputs[k], "finish_reason");
        r->want_text = r->want_text || !strcmp(mc->outputs[k], "text");
    }
    ss_status *st = read_inputs(r, mc, in, input);
    if (!st && (st = text_setup(g, r)) && st->code == SS_ERR_INVALID) *input = "stop";
    if (!st && g->cfg.max_context && r->n_prompt > g->cfg.max_context - r->p.max_tokens) {
        *input = "prompt";
        st = ss_errf(SS_ERR_INVALID,
                     "%d prompt + %d new tokens exceed the servable's max_context %d", r->n_prompt,
                     r->p.max_tokens, g->cfg.max_context);
    }
    if (st) {
        req_free(r);
        return st;
    }
    r->next = g->reqs;
    g->reqs = r;
    if (g->n_mb) enter_engine(g, r);
    return NULL;
}

/* ------------------------------------------------------------------ calls */

/* Requests whose client went away end now (engine ones with CANCELLED before the next call). */
static void reap_cancelled(ss_wgen *g)
{
    if (!g->hooks.cancelled) return;
    for (gen_req *r = g->reqs, *next; r; r = next) {
        next = r->next;
        if (r->cancelled || !g->hooks.cancelled(g->worker, r->request)) continue;
        r->cancelled = true;
        if (r->in_engine)
            ss_gen_cancel(g->mb[r->mb].engine, r->handle);
        else
            req_end(r, "generation cancelled: the client went away");
    }
}

/* A call of a micro-batch that has one to run and none in flight, round robin. */
static bool next_engine_call(ss_wgen *g, ss_gen_call *call, int *ticket)
{
    for (int i = 0; i < g->n_mb; i++) {
        int k = (g->next_mb + i) % g->n_mb;
        micro_batch *m = &g->mb[k];
        if (m->busy || !ss_gen_next(m->engine, call)) continue;
        m->busy = true;
        m->call_batch = call->batch, m->call_seq = call->seq;
        g->next_mb = (k + 1) % g->n_mb;
        *ticket = k;
        return true;
    }
    return false;
}

bool ss_wgen_next(ss_wgen *g, ss_gen_call *call, bool *probe, int *ticket)
{
    *probe = false;
    *ticket = SS_WGEN_PROBE;
    reap_cancelled(g);
    if (g->state != POOL_KNOWN && g->inflight) return false; /* the probe's, or a lost pool's */
    switch (g->state) {
    case POOL_UNKNOWN:
        if (!g->reqs && g->probed_idle) return false;
        g->probed_idle = true;
        g->probe_tok = g->probe_pos = g->probe_row = 0;
        *call = (ss_gen_call){.batch = 1,
                              .seq = 1,
                              .input_ids = &g->probe_tok,
                              .positions = &g->probe_pos,
                              .seq_ids = &g->probe_seq,
                              .logit_rows = &g->probe_row,
                              .n_logit_rows = 1,
                              .create = &g->probe_seq,
                              .n_create = 1};
        g->state = PROBE_RUNNING;
        *probe = true;
        break;
    case PROBE_RAN:
        *call = (ss_gen_call){.release = &g->probe_seq, .n_release = 1};
        g->state = PROBE_FREEING;
        break;
    case POOL_KNOWN:
        if (!next_engine_call(g, call, ticket)) return false;
        break;
    default:
        return false;
    }
    g->inflight++;
    return true;
}

static int32_t share(int32_t n, int parts)
{
    return n / parts + (n % parts != 0);
}

/* The engines, one per micro-batch, sized by the probe: together their pools mirror the smallest
 * rank's (each a share of the blocks, disjoint pool sequence ids). */
static ss_status *make_engines(ss_wgen *g, int32_t vocab, int64_t blocks, int32_t tokens)
{
    int32_t all = (int32_t)(blocks > INT32_MAX ? INT32_MAX : blocks);
    int n = g->want_mb < all ? g->want_mb : all;
    for (int k = 0; k < n; k++) {
        ss_gen_options o = {.vocab = vocab,
                            .sched = {all / n + (k < all % n), tokens, g->cfg.step_tokens,
                                      share(g->cfg.max_running, n), share(g->cfg.max_sequences, n)},
                            .first_pool_id = k,
                            .pool_id_step = n};
        ss_status *st = ss_gen_engine_new(&o, &g->mb[k].engine);
        if (st) return st;
        g->n_mb = k + 1;
    }
    return NULL;
}

static void start_engine(ss_wgen *g, const ss_tensor *logits, int64_t blocks, int32_t tokens)
{
    ss_status *st = NULL;
    if (!logits || logits->dtype != SS_DT_FLOAT32 || logits->ndim != 3 || logits->dims[2] < 1)
        st = ss_errf(SS_ERR_INVALID, "the model's first output must be float32 logits [batch, "
                                     "seq, vocab]");
    else if (blocks < 1 || tokens < 1)
        st = ss_errf(SS_ERR_INVALID, "the agents report no KV block pool: serve a model made by "
                                     "`shardserve shard --kv-pool`");
    if (!st) st = make_engines(g, (int32_t)logits->dims[2], blocks, tokens);
    if (!st) logits_region_make(g, (int32_t)logits->dims[2]);
    if (st) {
        free_engines(g);
        fail_all(g, st->msg);
        ss_status_free(st);
        g->state = POOL_UNKNOWN;
        return;
    }
    if (g->cfg.max_context > 0) /* how many sequences run at once, before requests must wait */
        SS_INFO("generation: a KV pool of %lld blocks of %d tokens (%lld tokens): room for %lld "
                "sequence(s) of max_context %d tokens at once (max_running %d)",
                (long long)blocks, (int)tokens, (long long)blocks * tokens,
                (long long)(blocks / ((g->cfg.max_context + tokens - 1) / tokens)),
                g->cfg.max_context, g->cfg.max_running);
    else
        SS_INFO("generation: a KV pool of %lld blocks of %d tokens (%lld tokens)",
                (long long)blocks, (int)tokens, (long long)blocks * tokens);
    g->state = PROBE_RAN;
    for (gen_req *r = g->reqs, *next; r; r = next) { /* enter_engine may end r */
        next = r->next;
        if (!r->in_engine) enter_engine(g, r);
    }
}

/* Logits of a micro-batch's call: [batch, seq, vocab] float32. */
static const char *check_logits(const micro_batch *m, const ss_tensor *t)
{
    if (t && t->dtype == SS_DT_FLOAT32 && t->ndim == 3 && t->dims[1] == m->call_seq)
        return NULL; /* the engine checks the rows: the call's, or its sampled ones */
    return "the last rank's first output is not float32 logits [rows, seq, vocab] for the call";
}

void ss_wgen_done(ss_wgen *g, int ticket, const ss_tensor *logits, const char *error, bool refused,
                  int64_t pool_blocks, int32_t block_tokens)
{
    g->inflight--;
    if ((ticket == SS_WGEN_PROBE) != (g->state != POOL_KNOWN))
        return; /* a call of engines lost since: their requests failed then */
    switch (g->state) {
    case PROBE_RUNNING:
        if (error) {
            g->state = POOL_UNKNOWN;
            fail_all(g, error);
        } else {
            start_engine(g, logits, pool_blocks, block_tokens);
        }
        return;
    case PROBE_FREEING:
        g->state = POOL_KNOWN;
        if (error) ss_wgen_lost(g, error);
        return;
    case POOL_KNOWN: {
        micro_batch *m = &g->mb[ticket];
        m->busy = false;
        if (!error && m->call_batch) error = check_logits(m, logits);
        if (!error && m->call_batch) {
            const uint8_t *at = logits->data, *slot = g->lg_base + (size_t)ticket * g->lg_slot;
            bool shared = g->lg_base && at >= slot && at < slot + g->lg_slot;
            shared ? g->lg_shared++ : g->lg_link++;
        }
        bool ok = !error && logits;
        if (error && refused)
            ss_gen_refused(m->engine, error);
        else
            ss_gen_done(m->engine, ok ? (const float *)logits->data : NULL,
                        ok ? logits->dims[0] : 0, error);
        return;
    }
    default:
        return;
    }
}

void ss_wgen_lost(ss_wgen *g, const char *why)
{
    fail_all(g, why);
    free_engines(g);
    g->state = POOL_UNKNOWN;
    g->probed_idle = false;
}

ss_sched_stats ss_wgen_stats(const ss_wgen *g)
{
    ss_sched_stats sum = {0};
    for (int k = 0; k < g->n_mb; k++) {
        ss_sched_stats s = ss_gen_stats(g->mb[k].engine);
        sum.blocks_used += s.blocks_used, sum.blocks_free += s.blocks_free;
        sum.running += s.running, sum.waiting += s.waiting, sum.preempted += s.preempted;
    }
    return sum;
}

bool ss_wgen_logits_place(const ss_wgen *g, int ticket, ss_link_place *out)
{
    if (!g || !g->lg_base || g->state != POOL_KNOWN || ticket < 0 || ticket >= g->n_mb)
        return false;
    *out = (ss_link_place){0, (char *)g->lg_key, (uint64_t)ticket * g->lg_slot, g->lg_slot};
    return true;
}

void ss_wgen_logits_calls(const ss_wgen *g, uint64_t *shared, uint64_t *link)
{
    *shared = g ? g->lg_shared : 0;
    *link = g ? g->lg_link : 0;
}

bool ss_wgen_busy(const ss_wgen *g)
{
    return g && g->reqs;
}
