/*
 * registry: servables -> versions -> methods, their readiness, and the front ends' handler over
 * them (see include/shardserve/serving.h).
 *
 * Invariants:
 * - The registry's lock guards the entry list and each entry's readiness and signature; it is
 *   held only for lookups and swaps, never while a backend or done() runs.
 * - A published signature is immutable: a request checks against a reference-counted snapshot
 *   taken under the lock, so a backend may publish or withdraw at any time from any thread.
 * - Version 0 means the highest version that is ready, or the highest configured one when none
 *   is (which then answers "not ready"), as MindSpore's dispatcher chooses.
 * - Unloading (KServe's model repository extension) is the registry's own switch beside the
 *   backend's readiness: an unloaded version takes no new request whatever its backend publishes,
 *   and `inflight` (requests handed to its backend, not yet answered) says when it has drained.
 */
#include "pipeline.h"
#include "shardserve/serving.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    atomic_int refs;
    ss_serving_signature sig;
} snapshot;

struct ss_serving_entry {
    ss_serving *owner;
    char *servable;
    uint64_t version;
    ss_serving_backend backend;
    ss_pipeline *pipeline; /* NULL: the backend's methods are the servable's */
    snapshot *ready;       /* NULL while not ready */
    char why[512];         /* why not ready */
    bool unloaded;         /* by the model repository extension */
    long inflight;         /* requests its backend has not answered yet */
    ss_serving_entry *next;
};

struct ss_serving {
    pthread_mutex_t mu;
#ifndef NDEBUG
    pthread_t holder; /* who holds mu (debug builds: ASSERT_LOCKED) */
    bool held;
#endif
    ss_serving_entry *entries;
    ss_serving_reject_fn on_reject;
    void *on_reject_ctx;
    ss_serving_answer_fn on_answer;
    void *on_answer_ctx;
};

/* The registry's lock; debug builds record the holder so "lock held" is an assertion. */
static void registry_lock(ss_serving *s)
{
    pthread_mutex_lock(&s->mu);
#ifndef NDEBUG
    s->holder = pthread_self();
    s->held = true;
#endif
}

static void registry_unlock(ss_serving *s)
{
#ifndef NDEBUG
    s->held = false;
#endif
    pthread_mutex_unlock(&s->mu);
}

#ifndef NDEBUG
#define ASSERT_LOCKED(s) assert((s)->held &&pthread_equal((s)->holder, pthread_self()))
#else
#define ASSERT_LOCKED(s) ((void)0)
#endif

/* ------------------------------------------------------------------ signatures */

static void specs_clear(ss_serving_tensor_spec *specs, size_t n)
{
    for (size_t i = 0; specs && i < n; i++)
        free(specs[i].name);
    free(specs);
}

void ss_serving_signature_clear(ss_serving_signature *sig)
{
    if (!sig) return;
    for (size_t m = 0; sig->methods && m < sig->n_methods; m++) {
        free(sig->methods[m].name);
        specs_clear(sig->methods[m].inputs, sig->methods[m].n_inputs);
        specs_clear(sig->methods[m].outputs, sig->methods[m].n_outputs);
    }
    free(sig->methods);
    free(sig->servable);
    memset(sig, 0, sizeof *sig);
}

void ss_serving_signature_free(ss_serving_signature *sig)
{
    ss_serving_signature_clear(sig);
    free(sig);
}

static bool specs_copy(ss_serving_tensor_spec **dst, const ss_serving_tensor_spec *src, size_t n)
{
    *dst = calloc(n ? n : 1, sizeof **dst);
    if (!*dst) return false;
    for (size_t i = 0; i < n; i++) {
        (*dst)[i] = src[i];
        (*dst)[i].name = strdup(src[i].name ? src[i].name : "");
        if (!(*dst)[i].name) return false;
    }
    return true;
}

/* Deep copy into *dst (cleared first); false when out of memory (dst then holds what was made,
 * for ss_serving_signature_clear). */
static bool signature_copy_into(ss_serving_signature *dst, const ss_serving_signature *src)
{
    *dst = *src;
    dst->servable = NULL;
    dst->methods = calloc(src->n_methods ? src->n_methods : 1, sizeof *dst->methods);
    dst->n_methods = dst->methods ? src->n_methods : 0;
    if (!dst->methods || !(dst->servable = strdup(src->servable ? src->servable : "")))
        return false;
    for (size_t m = 0; m < src->n_methods; m++) {
        const ss_serving_method *sm = &src->methods[m];
        ss_serving_method *dm = &dst->methods[m];
        dm->n_inputs = sm->n_inputs;
        dm->n_outputs = sm->n_outputs;
        if (!(dm->name = strdup(sm->name ? sm->name : ""))) return false;
        if (!specs_copy(&dm->inputs, sm->inputs, sm->n_inputs)) return false;
        if (!specs_copy(&dm->outputs, sm->outputs, sm->n_outputs)) return false;
    }
    return true;
}

ss_serving_signature *ss_serving_signature_copy(const ss_serving_signature *sig)
{
    ss_serving_signature *c = calloc(1, sizeof *c);
    if (c && !signature_copy_into(c, sig)) {
        ss_serving_signature_free(c);
        return NULL;
    }
    return c;
}

const ss_serving_method *ss_serving_signature_method(const ss_serving_signature *sig,
                                                     const char *name)
{
    for (size_t m = 0; m < sig->n_methods; m++)
        if (strcmp(sig->methods[m].name, name) == 0) return &sig->methods[m];
    return NULL;
}

static void snapshot_unref(snapshot *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1) {
        ss_serving_signature_clear(&s->sig);
        free(s);
    }
}

/* ------------------------------------------------------------------ MindSpore's checks */

/* Bytes one instance of `sp` takes; false when a dim is dynamic (any size fits) or it overflows. */
static bool spec_bytes(const ss_serving_tensor_spec *sp, size_t *out)
{
    size_t n = ss_dtype_size(sp->dtype);
    for (int d = 0; d < sp->ndim; d++) {
        if (sp->dims[d] < 0) return false;
        if (sp->dims[d] && n > SIZE_MAX / (size_t)sp->dims[d]) return false;
        n *= (size_t)sp->dims[d];
    }
    *out = n;
    return true;
}

/* A spec with dynamic dims takes any size there, but the rank and the fixed dims are the model's:
 * the worker batches and shards by them. */
static bool shape_fits(const ss_serving_tensor_spec *sp, const ss_tensor *t)
{
    if (t->ndim != sp->ndim) return false;
    for (int d = 0; d < sp->ndim; d++)
        if (sp->dims[d] >= 0 && t->dims[d] != sp->dims[d]) return false;
    return true;
}

bool ss_serving_check_instance(const ss_serving_method *m, ss_serving_instance *inst, char *why,
                               size_t cap)
{
    for (size_t k = 0; k < m->n_inputs; k++) {
        const ss_serving_tensor_spec *sp = &m->inputs[k];
        ss_serving_item *it = (ss_serving_item *)ss_serving_instance_find(inst, sp->name);
        if (!it) {
            snprintf(why, cap, "Cannot find input %s in instance input", sp->name);
            return false;
        }
        if (sp->dtype == SS_DT_UNDEFINED) continue; /* any value: a stage checks it */
        ss_tensor *t = &it->tensor;
        bool strings = t->dtype == SS_DT_STRING || sp->dtype == SS_DT_STRING;
        size_t want = 0;
        bool sized = !strings && spec_bytes(sp, &want);
        if (sized && t->nbytes != want) {
            snprintf(why, cap,
                     "Given model input %zu size %zu not match the size %zu defined in model", k,
                     t->nbytes, want);
            return false;
        }
        if (!sized && !strings && !shape_fits(sp, t)) {
            char got[96], want_s[96];
            snprintf(why, cap,
                     "Given model input %zu shape %s not match the shape %s defined in model", k,
                     ss_shape_str(t->ndim, t->dims, got, sizeof got),
                     ss_shape_str(sp->ndim, sp->dims, want_s, sizeof want_s));
            return false;
        }
        if (t->dtype != sp->dtype) {
            snprintf(
                why, cap,
                "Given model input %zu data type %s not match the data type %s defined in model", k,
                ss_serving_ms_dtype_name(t->dtype), ss_serving_ms_dtype_name(sp->dtype));
            return false;
        }
        /* the bytes are right: they take the model's shape (MindSpore copies them into its tensor)
         */
        if (sized && !sp->batched) {
            t->ndim = sp->ndim;
            memcpy(t->dims, sp->dims, sizeof t->dims[0] * (size_t)sp->ndim);
        }
    }
    return true;
}

/* ------------------------------------------------------------------ the registry */

ss_serving *ss_serving_new(void)
{
    ss_serving *s = calloc(1, sizeof *s);
    if (s) pthread_mutex_init(&s->mu, NULL);
    return s;
}

void ss_serving_free(ss_serving *s)
{
    if (!s) return;
    while (s->entries)
        ss_serving_remove(s, s->entries);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

ss_status *ss_serving_add(ss_serving *s, const char *servable, uint64_t version,
                          ss_serving_backend backend, ss_serving_entry **out)
{
    *out = NULL;
    registry_lock(s);
    for (ss_serving_entry *e = s->entries; e; e = e->next)
        if (strcmp(e->servable, servable) == 0 && e->version == version) {
            registry_unlock(s);
            return ss_errf(SS_ERR_INVALID, "servable %s version %llu is started twice", servable,
                           (unsigned long long)version);
        }
    ss_serving_entry *e = calloc(1, sizeof *e);
    if (!e || !(e->servable = strdup(servable))) {
        registry_unlock(s);
        free(e);
        return ss_errf(SS_ERR_NOMEM, "out of memory adding servable %s", servable);
    }
    e->owner = s;
    e->version = version;
    e->backend = backend;
    snprintf(e->why, sizeof e->why, "starting");
    e->next = s->entries;
    s->entries = e;
    registry_unlock(s);
    *out = e;
    return NULL;
}

void ss_serving_remove(ss_serving *s, ss_serving_entry *e)
{
    if (!e) return;
    registry_lock(s);
    for (ss_serving_entry **pp = &s->entries; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    snapshot *ready = e->ready;
    registry_unlock(s);
    snapshot_unref(ready);
    ss_pipeline_free(e->pipeline);
    free(e->servable);
    free(e);
}

static ss_status *publish_signature(ss_serving_entry *e, const ss_serving_signature *sig)
{
    snapshot *snap = calloc(1, sizeof *snap);
    if (!snap || !signature_copy_into(&snap->sig, sig)) {
        if (snap) ss_serving_signature_clear(&snap->sig);
        free(snap);
        return ss_errf(SS_ERR_NOMEM, "out of memory publishing servable %s", e->servable);
    }
    atomic_init(&snap->refs, 1);
    registry_lock(e->owner);
    snapshot *old = e->ready;
    e->ready = snap;
    e->why[0] = 0;
    registry_unlock(e->owner);
    snapshot_unref(old);
    return NULL;
}

/* A composed servable publishes its pipeline's methods over its models' signatures, once every
 * model has published; until then it stays not ready, saying which model it waits for. */
ss_status *ss_serving_publish_model(ss_serving_entry *e, size_t model,
                                    const ss_serving_signature *sig)
{
    if (!e->pipeline) return publish_signature(e, sig);
    ss_serving_signature *composed = NULL;
    ss_status *st = ss_pipeline_compose(e->pipeline, model, sig, &composed);
    if (st) return st;
    if (!composed) { /* another model is not ready: say which */
        size_t k = ss_pipeline_waiting(e->pipeline);
        registry_lock(e->owner);
        if (k < e->pipeline->n_models)
            snprintf(e->why, sizeof e->why, "model '%s' (subgraph %u) is not ready yet",
                     e->pipeline->models[k].key, e->pipeline->models[k].subgraph);
        registry_unlock(e->owner);
        return NULL;
    }
    st = publish_signature(e, composed);
    ss_serving_signature_free(composed);
    return st;
}

ss_status *ss_serving_publish(ss_serving_entry *e, const ss_serving_signature *sig)
{
    return ss_serving_publish_model(e, 0, sig);
}

ss_status *ss_serving_set_pipeline(ss_serving_entry *e, ss_pipeline *p,
                                   const ss_serving_backend *models)
{
    ss_serving_backend wrapped;
    ss_status *st = !models && p->n_models > 1
                        ? ss_errf(SS_ERR_INTERNAL, "%zu models and one backend", p->n_models)
                        : ss_pipeline_load_plugins(p);
    if (!st) st = ss_pipeline_start(p, models ? models : &e->backend, &wrapped);
    if (st) {
        ss_pipeline_free(p);
        return ss_status_wrap(st, "servable %s", e->servable);
    }
    registry_lock(e->owner);
    e->backend = wrapped;
    e->pipeline = p;
    registry_unlock(e->owner);
    return NULL;
}

void ss_serving_withdraw_model(ss_serving_entry *e, size_t model, const char *why)
{
    if (e->pipeline) ss_pipeline_forget(e->pipeline, model);
    registry_lock(e->owner);
    snapshot *old = e->ready;
    e->ready = NULL;
    if (e->pipeline && e->pipeline->n_models > 1)
        snprintf(e->why, sizeof e->why, "model '%s' (subgraph %u): %s",
                 e->pipeline->models[model].key, e->pipeline->models[model].subgraph,
                 why && *why ? why : "not ready");
    else
        snprintf(e->why, sizeof e->why, "%s", why && *why ? why : "not ready");
    registry_unlock(e->owner);
    snapshot_unref(old);
}

void ss_serving_withdraw(ss_serving_entry *e, const char *why)
{
    ss_serving_withdraw_model(e, 0, why);
}

static bool serves(const ss_serving_entry *e)
{
    return e->ready && !e->unloaded;
}

/* Version 0: the highest ready version, else the highest configured one. Lock held. */
static ss_serving_entry *resolve(ss_serving *s, const char *servable, uint64_t version)
{
    ASSERT_LOCKED(s);
    ss_serving_entry *best = NULL;
    for (ss_serving_entry *e = s->entries; e; e = e->next) {
        if (strcmp(e->servable, servable) != 0) continue;
        if (version) {
            if (e->version == version) return e;
            continue;
        }
        bool better = !best || (serves(e) && !serves(best)) ||
                      (serves(e) == serves(best) && e->version > best->version);
        if (better) best = e;
    }
    return best;
}

void ss_serving_on_answer(ss_serving *s, ss_serving_answer_fn fn, void *ctx)
{
    registry_lock(s);
    s->on_answer = fn;
    s->on_answer_ctx = ctx;
    registry_unlock(s);
}

void ss_serving_on_reject(ss_serving *s, ss_serving_reject_fn fn, void *ctx)
{
    registry_lock(s);
    s->on_reject = fn;
    s->on_reject_ctx = ctx;
    registry_unlock(s);
}

/* The entry's snapshot and backend for a request, or a reply saying why not; *version gets the
 * resolved version (0 when none). */
static const char *not_serving_why(const ss_serving_entry *e)
{
    if (!e->unloaded) return e->why;
    return e->inflight ? "unloading: requests in flight are finishing"
                       : "unloaded through the model repository";
}

static ss_predict_reply *lookup(ss_serving *s, const ss_predict_request *req, snapshot **snap,
                                ss_serving_backend *backend, uint64_t *version,
                                ss_serving_entry **entry)
{
    registry_lock(s);
    ss_serving_entry *e = resolve(s, req->servable, req->version);
    *version = e ? e->version : 0;
    ss_predict_reply *bad = NULL;
    if (!e) {
        bad = ss_serving_err_unavailable(req, false);
    } else if (!serves(e)) {
        char spec[512];
        bad = ss_predict_reply_error(SS_SERVING_SERVABLE_UNAVAILABLE,
                                     "Request %s, servable is not available: %s (%s)",
                                     ss_serving_spec_str(req, spec, sizeof spec),
                                     e->unloaded ? "unloaded" : "not ready", not_serving_why(e));
    } else {
        *snap = e->ready;
        atomic_fetch_add(&e->ready->refs, 1);
        *backend = e->backend;
        *entry = e;
    }
    registry_unlock(s);
    return bad;
}

static void rejected(ss_serving *s, const char *servable, uint64_t version, const char *method,
                     const ss_predict_reply *bad)
{
    registry_lock(s);
    ss_serving_reject_fn fn = s->on_reject;
    void *ctx = s->on_reject_ctx;
    registry_unlock(s);
    if (fn)
        fn(ctx, servable, version, method,
           bad && bad->error_count ? bad->errors[0].code : SS_SERVING_FAILED);
}

/* A request handed to a backend, counted in its entry's inflight until answered. */
typedef struct {
    ss_serving *s;
    ss_serving_entry *entry;
    ss_predict_done done;
    void *done_ctx;
    const ss_predict_request *req; /* alive until done() */
    uint64_t version, t0_ns;
} counted;

static void counted_done(void *ctx, ss_predict_reply *reply)
{
    counted c = *(counted *)ctx;
    free(ctx);
    registry_lock(c.s);
    for (ss_serving_entry *e = c.s->entries; e; e = e->next) /* it may have been removed */
        if (e == c.entry) e->inflight--;
    ss_serving_answer_fn fn = c.s->on_answer;
    void *fn_ctx = c.s->on_answer_ctx;
    registry_unlock(c.s);
    if (fn) {
        int64_t code = reply ? 0 : SS_SERVING_SYSTEM_ERROR;
        for (size_t i = 0; reply && !code && i < reply->error_count; i++)
            code = reply->errors[i].code;
        fn(fn_ctx, c.req->servable, c.version, c.req->method, code, ss_now_ns() - c.t0_ns);
    }
    c.done(c.done_ctx, reply);
}

static void submit_counted(ss_serving *s, ss_serving_entry *e, ss_serving_backend backend,
                           ss_predict_request *req, size_t method, ss_predict_reply *reply,
                           ss_predict_done done, void *done_ctx, uint64_t version)
{
    counted *c = malloc(sizeof *c);
    if (!c) {
        ss_predict_reply_free(reply);
        done(done_ctx, ss_predict_reply_error(SS_SERVING_SYSTEM_ERROR, "out of memory"));
        return;
    }
    *c = (counted){s, e, done, done_ctx, req, version, ss_now_ns()};
    registry_lock(s);
    e->inflight++;
    registry_unlock(s);
    backend.submit(backend.ctx, req, method, reply, counted_done, c);
}

static void serving_predict(void *ctx, ss_predict_request *req, ss_predict_done done,
                            void *done_ctx)
{
    ss_serving *s = ctx;
    snapshot *snap = NULL;
    ss_serving_backend backend = {0};
    uint64_t version = 0;
    ss_serving_entry *entry = NULL;
    ss_predict_reply *bad = lookup(s, req, &snap, &backend, &version, &entry);
    if (!snap) { /* refused; bad is NULL when even its reply could not be allocated */
        bool not_ready = bad && bad->errors[0].code == SS_SERVING_SERVABLE_UNAVAILABLE;
        rejected(s, version ? req->servable : "", version, not_ready ? req->method : "", bad);
        done(done_ctx, bad);
        return;
    }
    const ss_serving_method *m = ss_serving_signature_method(&snap->sig, req->method);
    ss_predict_reply *reply = NULL;
    if (!m) {
        bad = ss_serving_err_unavailable(req, true);
    } else {
        const char *names[m->n_inputs ? m->n_inputs : 1];
        for (size_t k = 0; k < m->n_inputs; k++)
            names[k] = m->inputs[k].name;
        bad = ss_predict_request_check_inputs(req, names, m->n_inputs);
    }
    if (!bad && m && !(reply = ss_predict_reply_new(req->count)))
        bad = ss_predict_reply_error(SS_SERVING_SYSTEM_ERROR, "out of memory");
    for (size_t i = 0; !bad && reply && i < req->count; i++) {
        char why[256];
        if (ss_serving_check_instance(m, &req->instances[i], why, sizeof why)) continue;
        ss_status *st =
            ss_predict_reply_fail_instance(reply, i, SS_SERVING_INVALID_INPUTS, "%s", why);
        if (st) {
            ss_status_free(st);
            ss_predict_reply_free(reply);
            reply = NULL;
            bad = ss_predict_reply_error(SS_SERVING_SYSTEM_ERROR, "out of memory");
        }
    }
    size_t method = m ? (size_t)(m - snap->sig.methods) : 0;
    snapshot_unref(snap);
    if (bad || !reply) { /* no reply either: out of memory for the error (done gets NULL) */
        rejected(s, req->servable, version, m ? req->method : "", bad);
        ss_predict_reply_free(reply);
        done(done_ctx, bad);
        return;
    }
    submit_counted(s, entry, backend, req, method, reply, done, done_ctx, version);
}

static int serving_describe(void *ctx, const char *servable, uint64_t version,
                            ss_serving_signature **out, char *why, size_t cap)
{
    ss_serving *s = ctx;
    *out = NULL;
    registry_lock(s);
    ss_serving_entry *e = resolve(s, servable, version);
    int rc = SS_DESCRIBE_OK;
    if (!e) {
        snprintf(why, cap, "servable is not available: '%.128s' version %llu is not served",
                 servable, (unsigned long long)version);
        rc = SS_DESCRIBE_NOT_FOUND;
    } else if (!serves(e)) {
        snprintf(why, cap, "servable is not available: %s (%s)",
                 e->unloaded ? "unloaded" : "not ready", not_serving_why(e));
        rc = SS_DESCRIBE_NOT_READY;
    } else if (!(*out = ss_serving_signature_copy(&e->ready->sig))) {
        snprintf(why, cap, "out of memory");
        rc = SS_DESCRIBE_NOT_READY;
    }
    registry_unlock(s);
    return rc;
}

/* ------------------------------------------------------------------ model repository */

int ss_serving_set_loaded(ss_serving *s, const char *servable, uint64_t version, bool loaded,
                          char *why, size_t cap)
{
    int found = 0;
    registry_lock(s);
    for (ss_serving_entry *e = s->entries; e; e = e->next) {
        if (strcmp(e->servable, servable) != 0 || (version && e->version != version)) continue;
        e->unloaded = !loaded;
        found++;
    }
    registry_unlock(s);
    if (found) return SS_DESCRIBE_OK;
    if (version)
        snprintf(why, cap,
                 "servable '%.128s' version %llu is not served (only versions serve was "
                 "started with can be loaded)",
                 servable, (unsigned long long)version);
    else
        snprintf(why, cap,
                 "servable '%.128s' is not served (only servables serve was started "
                 "with can be loaded)",
                 servable);
    return SS_DESCRIBE_NOT_FOUND;
}

static const char *entry_state(const ss_serving_entry *e)
{
    if (e->unloaded) return e->inflight ? "UNLOADING" : "UNAVAILABLE";
    return e->ready ? "READY" : "UNAVAILABLE";
}

bool ss_serving_index(ss_serving *s, ss_serving_index_entry **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    registry_lock(s);
    size_t count = 0;
    for (ss_serving_entry *e = s->entries; e; e = e->next)
        count++;
    ss_serving_index_entry *list = calloc(count ? count : 1, sizeof *list);
    size_t i = 0;
    for (ss_serving_entry *e = s->entries; list && e; e = e->next, i++) {
        ss_serving_index_entry *x = &list[i];
        snprintf(x->servable, sizeof x->servable, "%s", e->servable);
        x->version = e->version;
        x->state = entry_state(e);
        x->inflight = e->inflight;
        snprintf(x->reason, sizeof x->reason, "%s", serves(e) ? "" : not_serving_why(e));
    }
    registry_unlock(s);
    if (!list) return false;
    *out = list;
    *n = count;
    return true;
}

static int serving_set_loaded(void *ctx, const char *servable, uint64_t version, bool loaded,
                              char *why, size_t cap)
{
    return ss_serving_set_loaded(ctx, servable, version, loaded, why, cap);
}

static bool serving_index(void *ctx, ss_serving_index_entry **out, size_t *n)
{
    return ss_serving_index(ctx, out, n);
}

ss_predict_handler ss_serving_handler(ss_serving *s)
{
    return (ss_predict_handler){.ctx = s,
                                .predict = serving_predict,
                                .describe = serving_describe,
                                .set_loaded = serving_set_loaded,
                                .index = serving_index};
}

size_t ss_predict_handler_name_limit(void *handler, const char *servable, const char *method,
                                     uint64_t version)
{
    ss_predict_handler *h = handler;
    ss_serving_signature *sig = NULL;
    char why[256];
    size_t inputs = 0;
    if (h->describe &&
        h->describe(h->ctx, servable, version, &sig, why, sizeof why) == SS_DESCRIBE_OK) {
        const ss_serving_method *m = ss_serving_signature_method(sig, method);
        inputs = m ? m->n_inputs : 0;
    }
    if (sig) ss_serving_signature_free(sig);
    return ss_serving_max_names(inputs);
}

bool ss_serving_ready(void *ctx)
{
    ss_serving *s = ctx;
    registry_lock(s);
    bool ready = false, all = true; /* unloaded versions do not count */
    for (ss_serving_entry *e = s->entries; e; e = e->next) {
        if (e->unloaded) continue;
        ready = true;
        all = all && e->ready;
    }
    ready = ready && all;
    registry_unlock(s);
    return ready;
}
