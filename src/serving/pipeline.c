/*
 * pipeline: runs a request through its method's stages (see pipeline.h for the value slots).
 *
 * Threads. A request enters on a front end's thread (the registry's predict). Model stages are
 * submitted to the worker's backend, which answers from its loop thread; C-function stages run on
 * the pipeline's own stage threads (never on a front end's thread, never on the worker's loop), so
 * a slow plugin holds neither. Whichever thread holds a run advances it: a front end or stage
 * thread submits a model stage itself, a C stage is queued for a stage thread, and the worker's
 * callback only moves outputs and queues the next step (or answers when nothing is left). The
 * exception is a plugin that declares SS_PLUGIN_INLINE (microseconds, never blocking): it runs on
 * whichever thread holds the run, as the hand-off to a stage thread would cost more than it does.
 * A Python stage never blocks the thread that holds the run either: that thread hands the batch to
 * a free runner (or the pool's queue) and returns, and the runner's owner thread in pyrunner.c
 * carries the run on when the answer comes (the worker's loop hands a Python stage of large inputs
 * to a stage thread first, as the hand-over copies them). A request with a Python stage thus
 * meets one wake-up each way to its runner, and no stage thread.
 *
 * Data. Method inputs are borrowed from the request (the front end keeps it until done()), model
 * stages get borrowed views of the values they take, outputs move into the slots and from there
 * into the reply: a value is copied only when a method returns it twice or returns a method input.
 *
 * Errors. An instance that fails a stage stops there; the others go on. A plugin that breaks the
 * ABI's promise (an output missing or out of range) fails the whole request; the servable goes on.
 */
#include "pipeline.h"
#include "pyrunner.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ss_pipe_sig {
    ss_serving_signature *sig;
    ss_pipe_sig *next;
};

struct ss_pipe_run {
    ss_pipeline *p;
    const ss_pipe_method *m;
    ss_predict_request *req;
    ss_predict_reply *reply;
    ss_predict_done done;
    void *done_ctx;
    size_t next;     /* the stage to run next */
    ss_tensor *vals; /* req->count x m->n_values */
    bool *is_bytes;
    ss_predict_request *sub; /* the model stage's request in flight */
    ss_pipe_run *q_next;
};

/* Who holds the run: a front end's thread, a stage thread, the worker's loop (a model's answer),
 * or a Python runner's owner thread. */
typedef enum { FROM_FRONT, FROM_POOL, FROM_MODEL, FROM_RUNNER } from;

static void advance(ss_pipe_run *r, from who);

static ss_tensor *slot(ss_pipe_run *r, size_t inst, size_t s)
{
    return &r->vals[inst * r->m->n_values + s];
}

static bool r_bytes(const ss_pipe_run *r, size_t inst, size_t s)
{
    return r->is_bytes[inst * r->m->n_values + s];
}

static bool alive(const ss_pipe_run *r, size_t i)
{
    return !(r->reply->errors && r->reply->errors[i].code != 0);
}

static void fail(ss_pipe_run *r, size_t i, int64_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(ss_pipe_run *r, size_t i, int64_t code, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ss_status *st = ss_predict_reply_fail_instance(r->reply, i, code, "%s", msg);
    if (st) ss_status_free(st); /* out of memory: the instance still has no outputs */
    for (size_t s = 0; s < r->m->n_values; s++)
        ss_tensor_free(slot(r, i, s));
}

/* MindSpore's text for an instance a function stage failed. */
static void fail_stage(ss_pipe_run *r, size_t i, const char *msg)
{
    fail(r, i, SS_SERVING_SYSTEM_ERROR,
         "Call %s Failed, method: '%s', stage index(begin with 1): %zu, error msg: %s",
         r->m->stages[r->next].tag, r->m->name, r->next + 1, msg);
}

/* ------------------------------------------------------------------ the end of a run */

static void put_output(ss_pipe_run *r, size_t i, size_t k)
{
    size_t s = r->m->returns[k];
    ss_tensor *v = slot(r, i, s), out = {0};
    bool again = false; /* returned again later: keep it for that */
    for (size_t j = k + 1; j < r->m->n_outputs; j++)
        again = again || r->m->returns[j] == s;
    ss_status *st = NULL;
    if (v->storage == SS_STORE_OWNED && !again) {
        out = *v;
        memset(v, 0, sizeof *v);
    } else {
        st = ss_tensor_copy(&out, v);
    }
    if (!st)
        st = ss_serving_instance_put(&r->reply->instances[i], r->m->outputs[k], &out,
                                     r_bytes(r, i, s));
    if (st) {
        fail(r, i, SS_SERVING_SYSTEM_ERROR, "method '%s' output '%s': %s", r->m->name,
             r->m->outputs[k], st->msg);
        ss_status_free(st);
        ss_tensor_free(&out);
    }
}

static void finish(ss_pipe_run *r)
{
    size_t n = r->req->count;
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; alive(r, i) && k < r->m->n_outputs; k++)
            put_output(r, i, k);
    for (size_t v = 0; v < n * r->m->n_values; v++)
        ss_tensor_free(&r->vals[v]);
    ss_predict_done done = r->done;
    void *done_ctx = r->done_ctx;
    ss_predict_reply *reply = r->reply;
    free(r->vals);
    free(r->is_bytes);
    free(r);
    done(done_ctx, reply);
}

/* ------------------------------------------------------------------ model stages */

const ss_serving_method *ss_pipeline_model_spec(ss_pipeline *p, size_t model)
{
    pthread_mutex_lock(&p->mu);
    const ss_serving_signature *sig = p->models[model].sig;
    pthread_mutex_unlock(&p->mu);
    return sig ? ss_serving_signature_method(sig, p->models[model].method) : NULL;
}

/* The model's outputs of sent instance j into the stage's slots. */
static void take_model_outputs(ss_pipe_run *r, const ss_pipe_stage *st, size_t i,
                               ss_serving_instance *got)
{
    for (size_t k = 0; k < st->n_outputs; k++) {
        ss_serving_item *it =
            (ss_serving_item *)ss_serving_instance_find(got, r->p->models[st->model].outputs[k]);
        if (!it) {
            fail(r, i, SS_SERVING_SYSTEM_ERROR, "Call %s Failed: it returned no output %zu",
                 st->tag, k);
            return;
        }
        *slot(r, i, st->out_base + k) = it->tensor;
        r->is_bytes[i * r->m->n_values + st->out_base + k] = it->is_bytes;
        memset(&it->tensor, 0, sizeof it->tensor);
    }
}

/* Sent instance j's error in the worker's reply (entry 0 when the whole request failed). */
static const ss_serving_error *model_error(const ss_predict_reply *got, size_t j)
{
    return got->errors && j < got->error_count && got->errors[j].code ? &got->errors[j] : NULL;
}

static void model_done(void *ctx, ss_predict_reply *got)
{
    ss_pipe_run *r = ctx;
    const ss_pipe_stage *st = &r->m->stages[r->next];
    size_t sent = 0;
    for (size_t i = 0; i < r->req->count; i++)
        sent += alive(r, i);
    bool whole = got && got->count == 0 && got->error_count > 0;
    if (got && !whole && got->count != sent) { /* not a reply to what was sent */
        ss_predict_reply_free(got);
        got = NULL;
    }
    for (size_t j = 0, i = 0; i < r->req->count; i++) {
        if (!alive(r, i)) continue;
        const ss_serving_error *e = got ? model_error(got, whole ? 0 : j) : NULL;
        if (!got || e || whole)
            fail(r, i, e ? e->code : SS_SERVING_SYSTEM_ERROR, "%s",
                 e && e->message ? e->message : "Predict failed");
        else
            take_model_outputs(r, st, i, &got->instances[j]);
        j++;
    }
    ss_predict_reply_free(got);
    ss_predict_request_free(r->sub);
    r->sub = NULL;
    r->next++;
    advance(r, FROM_MODEL);
}

/* Borrowed views of the live instances' values, MindSpore's per-instance model checks, then the
 * worker. */
static void submit_model(ss_pipe_run *r)
{
    ss_pipeline *p = r->p;
    const ss_pipe_stage *st = &r->m->stages[r->next];
    const ss_pipe_model *md = &p->models[st->model];
    const ss_serving_method *spec = ss_pipeline_model_spec(p, st->model);
    ss_predict_request *sub = ss_predict_request_new(p->servable, md->method, r->req->version);
    size_t n_live = 0;
    for (size_t i = 0; i < r->req->count; i++)
        if (alive(r, i)) n_live++;
    ss_predict_reply *sub_reply = sub ? ss_predict_reply_new(n_live) : NULL;
    bool ok = spec && sub_reply;
    for (size_t i = 0, j = 0; ok && i < r->req->count; i++) {
        if (!alive(r, i)) continue;
        ss_serving_instance *inst = ss_predict_request_add_instance(sub);
        for (size_t k = 0; inst && k < st->n_inputs; k++) {
            ss_tensor view = *slot(r, i, st->in_slots[k]);
            view.storage = SS_STORE_BORROWED;
            ss_status *e =
                ss_serving_instance_put(inst, md->inputs[k], &view, r_bytes(r, i, st->in_slots[k]));
            if (e) inst = NULL, ss_status_free(e);
        }
        char why[512];
        if (!(ok = inst != NULL)) break;
        if (!ss_serving_check_instance(spec, inst, why, sizeof why)) {
            ss_status *e =
                ss_predict_reply_fail_instance(sub_reply, j, SS_SERVING_INVALID_INPUTS, "%s", why);
            if (e) ok = false, ss_status_free(e);
        }
        j++;
    }
    if (!ok) {
        ss_predict_request_free(sub);
        ss_predict_reply_free(sub_reply);
        for (size_t i = 0; i < r->req->count; i++)
            if (alive(r, i))
                fail(r, i, SS_SERVING_SYSTEM_ERROR, "Call %s Failed: %s", st->tag,
                     spec ? "out of memory" : "the model is not ready");
        r->next = r->m->n_stages;
        advance(r, FROM_POOL);
        return;
    }
    r->sub = sub;
    md->backend.submit(md->backend.ctx, sub, 0, sub_reply, model_done, r);
}

/* ------------------------------------------------------------------ C-function stages */

typedef struct {
    ss_plugin_batch b; /* first: the callbacks get it back */
    ss_pipe_run *r;
    const ss_pipe_stage *st;
    ss_plugin_tensor *ins; /* the batch's inputs: views of the values */
    size_t *inst;          /* batch instance -> request instance */
    char **failed;         /* per batch instance: the plugin's message */
    uint32_t *given;       /* outputs allocated per batch instance */
    uint32_t *claimed;     /* the highest output index + 1 asked for (out of range included) */
} c_call;

static void *c_alloc_string(ss_tensor *t, int32_t ndim, const int64_t *dims, uint64_t bytes)
{
    if (ss_shape_numel(ndim, dims) != 1 || bytes > (1ull << 31)) return NULL;
    ss_status *e = ss_tensor_alloc(t, SS_DT_STRING, ndim, dims);
    ss_string *s = e ? NULL : t->data;
    if (s && !(s->data = calloc((size_t)bytes + 1, 1))) s = NULL;
    if (!s) {
        ss_status_free(e);
        ss_tensor_free(t);
        return NULL;
    }
    s->len = (size_t)bytes;
    return s->data;
}

static void *c_alloc_output(ss_plugin_batch *b, uint32_t instance, uint32_t output, int32_t dtype,
                            int32_t ndim, const int64_t *dims, uint64_t string_bytes)
{
    c_call *c = (c_call *)b;
    if (instance >= b->n_instances) return NULL;
    if (output + 1 > c->claimed[instance]) c->claimed[instance] = output + 1;
    if (output >= b->n_outputs || ndim < 0 || ndim > SS_MAX_DIMS || (ndim && !dims)) return NULL;
    size_t s = c->inst[instance] * c->r->m->n_values + c->st->out_base + output;
    ss_tensor *t = &c->r->vals[s];
    bool bytes = dtype == SS_PLUGIN_BYTES;
    if (t->storage != SS_STORE_NONE || (!bytes && ss_dtype_size((ss_dtype)dtype) == 0)) return NULL;
    void *data = NULL;
    if (dtype == SS_DT_STRING || bytes) {
        data = c_alloc_string(t, ndim, dims, string_bytes);
        c->r->is_bytes[s] = bytes;
    } else {
        ss_status *e = ss_tensor_alloc(t, (ss_dtype)dtype, ndim, dims);
        data = e ? NULL : t->data;
        ss_status_free(e);
    }
    if (data) c->given[instance]++;
    return data;
}

static void c_fail_instance(ss_plugin_batch *b, uint32_t instance, const char *message)
{
    c_call *c = (c_call *)b;
    if (instance < b->n_instances && !c->failed[instance])
        c->failed[instance] = strdup(message && *message ? message : "(no message)");
}

static void c_fill_inputs(c_call *c, ss_plugin_tensor *ins)
{
    const ss_pipe_stage *st = c->st;
    for (uint32_t j = 0; j < c->b.n_instances; j++)
        for (size_t k = 0; k < st->n_inputs; k++) {
            const ss_tensor *t = slot(c->r, c->inst[j], st->in_slots[k]);
            const ss_string *s = t->dtype == SS_DT_STRING ? t->data : NULL;
            bool bytes = s && r_bytes(c->r, c->inst[j], st->in_slots[k]);
            ins[j * st->n_inputs + k] = (ss_plugin_tensor){
                .name = st->in_names[k],
                .dtype = bytes ? SS_PLUGIN_BYTES : (int32_t)t->dtype,
                .ndim = t->ndim,
                .dims = t->dims,
                .data = s ? (const void *)s->data : t->data,
                .nbytes = s ? s->len : t->nbytes,
            };
        }
}

/* After run(): per-instance failures, then the ABI's promise of every output exactly once. */
static void c_settle(c_call *c, int rc, const char *err)
{
    ss_pipe_run *r = c->r;
    uint32_t broken = UINT32_MAX;
    for (uint32_t j = 0; j < c->b.n_instances; j++) {
        if (rc != 0 || c->failed[j]) {
            fail_stage(r, c->inst[j], c->failed[j] ? c->failed[j] : err);
        } else if (c->given[j] != c->b.n_outputs || c->claimed[j] != c->b.n_outputs) {
            broken = j;
        }
    }
    if (broken == UINT32_MAX) return;
    uint32_t got = c->claimed[broken] > c->given[broken] ? c->claimed[broken] : c->given[broken];
    char msg[1024];
    snprintf(msg, sizeof msg,
             "The outputs number %u of one instance returned by function '%s.%s' is not equal to "
             "the outputs number %u  registered in method %s",
             got, r->p->servable, c->st->symbol, c->b.n_outputs, r->m->name);
    for (size_t i = 0; i < r->req->count; i++)
        if (alive(r, i)) fail_stage(r, i, msg);
}

/* The stage's batch over the live instances (false: out of memory, those instances failed). */
static bool c_open(c_call *c, ss_pipe_run *r)
{
    const ss_pipe_stage *st = &r->m->stages[r->next];
    size_t n = r->req->count, live = 0;
    *c = (c_call){.r = r, .st = st};
    c->inst = calloc(n, sizeof *c->inst);
    c->failed = calloc(n, sizeof *c->failed);
    c->given = calloc(n, sizeof *c->given);
    c->claimed = calloc(n, sizeof *c->claimed);
    c->ins = calloc(n * st->n_inputs + 1, sizeof *c->ins);
    if (!c->inst || !c->failed || !c->given || !c->claimed || !c->ins) {
        for (size_t i = 0; i < n; i++)
            if (alive(r, i)) fail_stage(r, i, "out of memory");
        return false;
    }
    for (size_t i = 0; i < n; i++)
        if (alive(r, i)) c->inst[live++] = i;
    c->b = (ss_plugin_batch){(uint32_t)live,
                             (uint32_t)st->n_inputs,
                             (uint32_t)st->n_outputs,
                             c->ins,
                             (const char *const *)st->out_names,
                             c_alloc_output,
                             c_fail_instance};
    c_fill_inputs(c, c->ins);
    return true;
}

/* After the run: settle what it did (when it ran: `err` then holds its message), free the batch. */
static void c_close(c_call *c, bool ran, int rc, const char *err)
{
    if (ran) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", err && *err ? err : "");
        if (rc != 0 && !msg[0]) snprintf(msg, sizeof msg, "the function returned %d", rc);
        c_settle(c, rc, msg);
    }
    for (size_t j = 0; c->failed && j < c->b.n_instances; j++)
        free(c->failed[j]);
    free(c->inst);
    free(c->failed);
    free(c->given);
    free(c->claimed);
    free(c->ins);
}

static void run_c_stage(ss_pipe_run *r)
{
    const ss_pipe_stage *st = &r->m->stages[r->next];
    c_call c;
    bool ran = c_open(&c, r);
    char err[1024] = "";
    int rc = 0;
    if (ran) {
        if (st->serial) pthread_mutex_lock((pthread_mutex_t *)&st->run_mu);
        rc = st->desc->run(st->state, &c.b, err, sizeof err);
        if (st->serial) pthread_mutex_unlock((pthread_mutex_t *)&st->run_mu);
        err[sizeof err - 1] = 0;
    }
    c_close(&c, ran, rc, err);
}

/* ------------------------------------------------------------------ Python stages */

/* On the thread of the runner that answered: settle the stage and go on from there. */
static void py_done(void *ctx, int rc, const char *err)
{
    c_call *c = ctx;
    ss_pipe_run *r = c->r;
    c_close(c, true, rc, err);
    free(c);
    r->next++;
    advance(r, FROM_RUNNER);
}

/* Hand the batch to the runner pool and return: py_done carries the run on. */
static void run_py_stage(ss_pipe_run *r)
{
    c_call *c = malloc(sizeof *c);
    if (c && c_open(c, r)) {
        ss_pypool_submit(r->m->stages[r->next].state, &c->b, py_done, c);
        return;
    }
    if (c)
        c_close(c, false, 0, NULL);
    else
        for (size_t i = 0; i < r->req->count; i++)
            if (alive(r, i)) fail_stage(r, i, "out of memory");
    free(c);
    r->next++;
    advance(r, FROM_POOL);
}

/* The bytes a stage's live instances take (a Python stage copies them into its segment). */
static uint64_t stage_input_bytes(const ss_pipe_run *r)
{
    const ss_pipe_stage *st = &r->m->stages[r->next];
    uint64_t total = 0;
    for (size_t i = 0; i < r->req->count; i++)
        for (size_t k = 0; alive(r, i) && k < st->n_inputs; k++)
            total += r->vals[i * r->m->n_values + st->in_slots[k]].nbytes;
    return total;
}

/* ------------------------------------------------------------------ the stage threads */

static void enqueue(ss_pipe_run *r)
{
    ss_pipeline *p = r->p;
    pthread_mutex_lock(&p->mu);
    bool stopped = p->stop;
    if (!stopped) {
        r->q_next = NULL;
        if (p->q_tail)
            p->q_tail->q_next = r;
        else
            p->q_head = r;
        p->q_tail = r;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    if (!stopped) return;
    for (size_t i = 0; i < r->req->count; i++)
        if (alive(r, i))
            fail(r, i, SS_SERVING_WORKER_UNAVAILABLE,
                 "Servable stopped: the server is shutting down");
    finish(r);
}

static void *stage_thread(void *arg)
{
    ss_pipeline *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->q_head && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        ss_pipe_run *r = p->q_head;
        if (!r) break; /* stopping, and nothing is left */
        p->q_head = r->q_next;
        if (!p->q_head) p->q_tail = NULL;
        pthread_mutex_unlock(&p->mu);
        advance(r, FROM_POOL);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static bool any_alive(const ss_pipe_run *r)
{
    for (size_t i = 0; i < r->req->count; i++)
        if (alive(r, i)) return true;
    return false;
}

/* Bytes a Python stage may copy on the worker's loop thread rather than a stage thread's. */
#define LOOP_COPY_MAX (256u << 10)

static void advance(ss_pipe_run *r, from who)
{
    while (r->next < r->m->n_stages && any_alive(r)) {
        ss_stage_kind kind = r->m->stages[r->next].kind;
        bool model = kind == SS_STAGE_MODEL;
        bool here = r->m->stages[r->next].here;
        if (kind == SS_STAGE_PYTHON &&
            (who != FROM_MODEL || stage_input_bytes(r) <= LOOP_COPY_MAX)) {
            run_py_stage(r); /* never blocks: the thread that holds the run hands it over */
            return;
        }
        if (!here && (who == FROM_MODEL || (!model && who != FROM_POOL))) {
            enqueue(r);
            return;
        }
        if (model) {
            submit_model(r);
            return;
        }
        run_c_stage(r);
        r->next++;
    }
    finish(r);
}

/* ------------------------------------------------------------------ the backend */

static void pipeline_submit(void *ctx, ss_predict_request *req, size_t method,
                            ss_predict_reply *reply, ss_predict_done done, void *done_ctx)
{
    ss_pipeline *p = ctx;
    ss_pipe_run *r = calloc(1, sizeof *r);
    const ss_pipe_method *m = &p->methods[method < p->n_methods ? method : 0];
    if (r) {
        *r = (ss_pipe_run){p, m, req, reply, done, done_ctx};
        r->vals = calloc(req->count * m->n_values + 1, sizeof *r->vals);
        r->is_bytes = calloc(req->count * m->n_values + 1, sizeof *r->is_bytes);
    }
    if (!r || !r->vals || !r->is_bytes) {
        if (r) free(r->vals), free(r->is_bytes);
        free(r);
        ss_predict_reply_free(reply);
        done(done_ctx, ss_predict_reply_error(SS_SERVING_SYSTEM_ERROR, "out of memory"));
        return;
    }
    for (size_t i = 0; i < req->count; i++)
        for (size_t k = 0; alive(r, i) && k < m->n_inputs; k++) {
            const ss_serving_item *it = ss_serving_instance_find(&req->instances[i], m->inputs[k]);
            if (!it) continue; /* the registry checked every name */
            *slot(r, i, k) = it->tensor;
            slot(r, i, k)->storage = SS_STORE_BORROWED;
            r->is_bytes[i * m->n_values + k] = it->is_bytes;
        }
    advance(r, FROM_FRONT);
}

static long env_long(const char *name, long dflt, long lo, long hi)
{
    const char *s = getenv(name);
    long n = s && *s ? strtol(s, NULL, 10) : dflt;
    return n < lo ? lo : n > hi ? hi : n;
}

ss_status *ss_pipeline_start(ss_pipeline *p, const ss_serving_backend *models,
                             ss_serving_backend *out)
{
    for (size_t k = 0; k < p->n_models; k++)
        p->models[k].backend = models[k];
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->started = true;
    size_t want = (size_t)env_long("SHARDSERVE_STAGE_THREADS", 2, 1, 8);
    if (p->py) ss_pypool_set_model(p->py, ss_pipeline_model_call, ss_pipeline_model_outputs, p);
    for (; p->n_threads < want; p->n_threads++) {
        int rc = pthread_create(&p->threads[p->n_threads], NULL, stage_thread, p);
        if (rc != 0)
            return ss_errf(SS_ERR_INTERNAL, "cannot start a stage thread: %s", strerror(rc));
    }
    *out = (ss_serving_backend){p, pipeline_submit};
    return NULL;
}

void ss_pipeline_stop(ss_pipeline *p)
{
    if (!p->started) return;
    if (p->py) ss_pypool_stop(p->py); /* its calls in flight end while the pipeline still runs */
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (size_t t = 0; t < p->n_threads; t++)
        pthread_join(p->threads[t], NULL);
    p->n_threads = 0;
    for (ss_pipe_sig *s = p->sigs, *next; s; s = next) {
        next = s->next;
        ss_serving_signature_free(s->sig);
        free(s);
    }
    p->sigs = NULL;
    for (size_t k = 0; k < p->n_models; k++)
        p->models[k].sig = NULL;
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    p->started = false;
}

/* ------------------------------------------------------------------ the published signature */

/* What a method value is known to be: a model's spec when a model stage takes or gives it
 * (MindSpore's checks then run before any stage), else any dtype and shape (a stage checks). */
static ss_serving_tensor_spec value_spec(const ss_pipeline *p, const ss_pipe_method *m, size_t s,
                                         const char *name)
{
    ss_serving_tensor_spec out = {.name = (char *)name, .dtype = SS_DT_UNDEFINED};
    for (size_t t = 0; t < m->n_stages; t++) {
        const ss_pipe_stage *st = &m->stages[t];
        if (st->kind != SS_STAGE_MODEL) continue;
        const ss_pipe_model *md = &p->models[st->model];
        const ss_serving_method *model =
            md->sig ? ss_serving_signature_method(md->sig, md->method) : NULL;
        for (size_t k = 0; model && k < st->n_inputs && k < model->n_inputs; k++)
            if (st->in_slots[k] == s) out = model->inputs[k];
        if (model && s >= st->out_base && s - st->out_base < model->n_outputs)
            out = model->outputs[s - st->out_base];
    }
    out.name = (char *)name;
    return out;
}

static bool compose_method(const ss_pipeline *p, const ss_pipe_method *m, ss_serving_method *out)
{
    out->name = m->name;
    out->n_inputs = m->n_inputs;
    out->n_outputs = m->n_outputs;
    out->inputs = calloc(m->n_inputs + 1, sizeof *out->inputs);
    out->outputs = calloc(m->n_outputs + 1, sizeof *out->outputs);
    if (!out->inputs || !out->outputs) return false;
    for (size_t k = 0; k < m->n_inputs; k++)
        out->inputs[k] = value_spec(p, m, k, m->inputs[k]);
    for (size_t k = 0; k < m->n_outputs; k++)
        out->outputs[k] = value_spec(p, m, m->returns[k], m->outputs[k]);
    return true;
}

/* The servable's signature over every model's (under p->mu; NULL when out of memory). */
static ss_serving_signature *compose_locked(ss_pipeline *p)
{
    ss_serving_signature sig = *p->models[0].sig;
    sig.methods = calloc(p->n_methods, sizeof *sig.methods);
    sig.n_methods = p->n_methods;
    bool ok = sig.methods != NULL;
    for (size_t m = 0; ok && m < p->n_methods; m++)
        ok = compose_method(p, &p->methods[m], &sig.methods[m]);
    ss_serving_signature *out = ok ? ss_serving_signature_copy(&sig) : NULL;
    for (size_t m = 0; sig.methods && m < p->n_methods; m++)
        free(sig.methods[m].inputs), free(sig.methods[m].outputs);
    free(sig.methods);
    return out;
}

ss_status *ss_pipeline_compose(ss_pipeline *p, size_t model, const ss_serving_signature *model_sig,
                               ss_serving_signature **out)
{
    *out = NULL;
    ss_pipe_sig *keep = calloc(1, sizeof *keep);
    if (!keep || !(keep->sig = ss_serving_signature_copy(model_sig))) {
        free(keep);
        return ss_errf(SS_ERR_NOMEM, "out of memory publishing servable %s", p->servable);
    }
    pthread_mutex_lock(&p->mu);
    keep->next = p->sigs;
    p->sigs = keep;
    p->models[model].sig = keep->sig;
    bool all = true;
    for (size_t k = 0; k < p->n_models; k++)
        all = all && p->models[k].sig;
    if (all) *out = compose_locked(p);
    pthread_mutex_unlock(&p->mu);
    if (all && !*out)
        return ss_errf(SS_ERR_NOMEM, "out of memory publishing servable %s", p->servable);
    return NULL;
}

size_t ss_pipeline_waiting(ss_pipeline *p)
{
    size_t k = 0;
    pthread_mutex_lock(&p->mu);
    while (k < p->n_models && p->models[k].sig)
        k++;
    pthread_mutex_unlock(&p->mu);
    return k;
}

void ss_pipeline_forget(ss_pipeline *p, size_t model)
{
    if (!p->started) return;
    pthread_mutex_lock(&p->mu);
    p->models[model].sig = NULL;
    pthread_mutex_unlock(&p->mu);
}
