/*
 * The Distributed Worker (see include/shardserve/worker.h).
 *
 * Threads per worker:
 *  - accept: takes agent and launcher connections; each gets a connection thread that does the
 *    handshake, answers GET_META, or registers an agent and then reads its frames (RESULT,
 *    HEARTBEAT_ACK, EXIT) for as long as it lives;
 *  - dispatcher: turns queued instances into batches and sends one PREDICT per rank, always in
 *    the same rank order from this one thread, so every rank sees requests in the same order
 *    (which is what lets stages of a pipeline overlap: stage 0 takes request n+1 while stage 1
 *    still works on request n). Stage 0's inputs go to its first rank, which broadcasts them to
 *    the stage (broadcast_inputs), or to every rank of the stage. Only the last rank answers a
 *    request that went well (the others are "quiet": they answer only a failure), so a request
 *    costs one RESULT frame, not one per rank;
 *  - monitor: heartbeats every agent, declares a rank gone when it stops answering, and fails
 *    requests that outlive their deadline.
 * One mutex guards the worker's state; network sends happen outside it except the dispatcher's
 * ordered PREDICT sends (which must not interleave with another batch's).
 *
 * Failure: the moment a rank is gone (connection lost, EXIT, heartbeat silence), every in-flight
 * and queued request is answered with WORKER_UNAVAILABLE and the servable reports not-ready until
 * every rank has registered again.
 */
#include "shardserve/worker.h"

#include "shardserve/link.h"
#include "shardserve/metrics.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_BATCH 1024
#define DYNAMIC_BATCH_DEFAULT 32

typedef struct req_state req_state;

typedef struct {
    req_state *rs;
    size_t inst;
} task;

struct req_state {
    req_state *next_done; /* on the worker's list of answered requests, see worker_unlock */
    ss_predict_request *req;
    ss_predict_done done;
    void *done_ctx;
    ss_predict_reply *reply;
    size_t remaining; /* instances not answered yet */
    const ss_method_config *method;
    ss_worker *w;
    /* for metrics and the slow-request log */
    uint64_t t0_ns;              /* accepted by the handler */
    uint64_t queue_ns, compute_ns; /* of the last batch that carried one of its instances */
    uint64_t job_id;             /* that batch's id: the request_id of its PREDICT frames */
    int batch;                   /* that batch's instance count */
    int64_t worst;               /* the first failure code, 0 = every instance ok */
};

typedef struct job {
    uint64_t id;
    int n_tasks;
    task *tasks;
    int pending;           /* 1 until the last rank answers (or any rank fails), then 0 */
    ss_link_msg result;    /* the last rank's RESULT */
    bool failed;
    int64_t err_code;
    char err[512];
    uint64_t deadline_ns;
    ss_tensor *inputs;     /* batch tensors (when instances were merged), borrowing in_buf */
    int n_inputs;
    void *in_buf[SS_MAX_IO]; /* their storage, kept while the job is recycled */
    size_t in_cap[SS_MAX_IO];
    uint64_t dispatch_ns;  /* taken off the queue */
    int tasks_cap;         /* jobs are recycled (no allocation per request): capacity of tasks */
    bool sending;          /* the dispatcher is still sending it: not reaped until it is done */
    bool bcast;            /* stage 0's inputs may go by broadcast (w->bcast when dispatched) */
    struct job *next;
} job;

typedef struct {
    int rank;
    ss_link_conn *conn;
    bool alive;
    int64_t pid;
    uint64_t last_seen_ns;
    uint32_t batch_size;
    bool shares_inputs; /* can take its inputs by broadcast in its stage group */
    uint64_t comm_bytes; /* bytes it moved through collectives (RESULT or HEARTBEAT_ACK) */
    ss_link_spec *inputs, *outputs;
    size_t n_inputs, n_outputs;
    /* metrics: link bytes already counted for the current connection */
    const ss_link_conn *counted_conn;
    uint64_t counted_sent, counted_recv;
} agent_slot;

typedef struct conn_thread {
    pthread_t tid;
    ss_worker *w;
    ss_link_conn *conn;
    bool done;
    struct conn_thread *next;
} conn_thread;

struct ss_worker {
    req_state *done_head; /* answered requests whose done() runs once the lock is released */
    bool dispatch_sending; /* the dispatcher is sending without the lock: connections stay open */
    ss_link_conn **conn_snapshot; /* per rank, taken by the dispatcher under the lock */
    ss_worker_set *set;
    ss_servable_config cfg;
    ss_rank_table table;
    uint64_t version;
    ss_worker_options opt;
    char address[256];
    ss_link_listener *listener;
    ss_link_options link_opt;
    agent_slot *agents;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ready, stopping;
    char not_ready_why[512];
    ss_status *fatal; /* the registered specs do not fit together */
    /* model signature, from rank 0 (inputs) and the last rank (outputs) */
    int batch;          /* instances per model call; 0 = dynamic first dim */
    bool batch_dynamic;
    /* queue of instances */
    task *queue;
    size_t q_head, q_len, q_cap;
    size_t n_requests; /* requests with instances still queued or in flight */
    job *inflight;
    int n_inflight, max_inflight;
    bool bcast; /* broadcast_inputs and every stage-0 rank can take its inputs that way (check_agents) */
    uint64_t next_job_id;
    pthread_t accept_tid, dispatch_tid, monitor_tid;
    conn_thread *conns;
    /* metrics */
    char version_str[24];
    uint64_t slow_ns;      /* log requests slower than this at INFO (SHARDSERVE_SLOW_REQUEST_MS) */
    ss_metric_series *m_batch, *m_inflight;
    job *free_jobs; /* finished jobs kept for reuse */
    int n_free_jobs;
    ss_worker *next;
};

static void worker_unlock(ss_worker *w);

struct ss_worker_set {
    pthread_mutex_t mu;
    ss_worker *workers;
};

static uint64_t now_ns(void) { return ss_now_ns(); }

static void abs_deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) ts->tv_sec++, ts->tv_nsec -= 1000000000L;
}

/* ------------------------------------------------------------------ metrics */

static struct {
    ss_metric_family *requests, *total, *queue, *compute, *batch, *inflight, *queued, *rank_up, *hb_age, *sent,
        *recv, *comm;
} fam;
static pthread_once_t fam_once = PTHREAD_ONCE_INIT;

static void fam_init(void)
{
    ss_metrics *m = ss_metrics_global();
    static const char *const rmo[] = {"servable", "version", "method", "outcome"};
    static const char *const sv[] = {"servable", "version"};
    static const char *const svr[] = {"servable", "version", "rank"};
    static const double batch_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
    fam.requests = ss_metrics_family(m, SS_METRIC_COUNTER, "shardserve_requests_total",
                                     "Predict requests answered, by outcome (ok, invalid_inputs, unavailable, error)", 4,
                                     rmo, NULL, 0);
    fam.total = ss_metrics_family(m, SS_METRIC_HISTOGRAM, "shardserve_request_duration_seconds",
                                  "Time from the handler taking a request to its answer", 3, rmo, NULL, 0);
    fam.queue = ss_metrics_family(m, SS_METRIC_HISTOGRAM, "shardserve_request_queue_seconds",
                                  "Time a request's instances waited in the worker's queue before dispatch", 3, rmo,
                                  NULL, 0);
    fam.compute = ss_metrics_family(m, SS_METRIC_HISTOGRAM, "shardserve_request_compute_seconds",
                                    "Time from dispatching a request's batch to the agents until every rank answered",
                                    3, rmo, NULL, 0);
    fam.batch = ss_metrics_family(m, SS_METRIC_HISTOGRAM, "shardserve_batch_size",
                                  "Instances per batch dispatched to the agents", 2, sv, batch_buckets,
                                  (int)(sizeof batch_buckets / sizeof *batch_buckets));
    fam.inflight = ss_metrics_family(m, SS_METRIC_GAUGE, "shardserve_inflight_requests",
                                     "Requests accepted and not answered yet", 2, sv, NULL, 0);
    fam.queued = ss_metrics_family(m, SS_METRIC_GAUGE, "shardserve_queued_instances",
                                   "Instances waiting in the worker's queue", 2, sv, NULL, 0);
    fam.rank_up = ss_metrics_family(m, SS_METRIC_GAUGE, "shardserve_rank_up",
                                    "1 while the rank's agent is registered and alive, else 0", 3, svr, NULL, 0);
    fam.hb_age = ss_metrics_family(m, SS_METRIC_GAUGE, "shardserve_rank_heartbeat_age_seconds",
                                   "Seconds since the rank's agent was last heard from", 3, svr, NULL, 0);
    fam.sent = ss_metrics_family(m, SS_METRIC_COUNTER, "shardserve_link_sent_bytes_total",
                                 "Bytes the worker sent to the rank's agent over the link", 3, svr, NULL, 0);
    fam.recv = ss_metrics_family(m, SS_METRIC_COUNTER, "shardserve_link_received_bytes_total",
                                 "Bytes the worker received from the rank's agent over the link", 3, svr, NULL, 0);
    fam.comm = ss_metrics_family(m, SS_METRIC_COUNTER, "shardserve_collective_bytes_total",
                                 "Payload bytes the rank's agent moved through collectives (allreduce, allgather, "
                                 "broadcast, send/recv), as of its last answer",
                                 3, svr, NULL, 0);
}

static const char *outcome_name(int64_t code)
{
    switch (code) {
    case SS_SERVING_SUCCESS: return "ok";
    case SS_SERVING_INVALID_INPUTS: return "invalid_inputs";
    case SS_SERVING_WORKER_UNAVAILABLE:
    case SS_SERVING_SERVABLE_UNAVAILABLE: return "unavailable";
    default: return "error";
    }
}

/* Count a request answered without reaching a worker's queue (unknown servable/method, not
 * ready, queue full). Unknown names are not used as label values (unbounded cardinality). */
static void count_rejected(const char *servable, const char *version, const char *method, int64_t code)
{
    pthread_once(&fam_once, fam_init);
    const char *v[] = {servable, version, method, outcome_name(code)};
    ss_metric_add(ss_metrics_series(fam.requests, v), 1);
}

/* Bytes moved by a rank's connection since the last call (connections are replaced on
 * re-registration; their counters start at 0). Lock held. */
static void count_link_bytes(ss_worker *w, int rank)
{
    agent_slot *a = &w->agents[rank];
    if (!a->conn) return;
    uint64_t sent = 0, recv = 0;
    ss_link_conn_stats(a->conn, &sent, &recv);
    if (a->counted_conn != a->conn) a->counted_conn = a->conn, a->counted_sent = a->counted_recv = 0;
    char rs[16];
    snprintf(rs, sizeof rs, "%d", rank);
    const char *v[] = {w->cfg.name, w->version_str, rs};
    if (sent > a->counted_sent) ss_metric_add(ss_metrics_series(fam.sent, v), (double)(sent - a->counted_sent));
    if (recv > a->counted_recv) ss_metric_add(ss_metrics_series(fam.recv, v), (double)(recv - a->counted_recv));
    a->counted_sent = sent;
    a->counted_recv = recv;
}

/* Scrape-time values: rank up/down, heartbeat age, link bytes, queue length. */
static void collect(void *ctx)
{
    ss_worker *w = ctx;
    pthread_mutex_lock(&w->mu);
    uint64_t now = ss_now_ns();
    for (int r = 0; r < w->cfg.rank_size; r++) {
        agent_slot *a = &w->agents[r];
        char rs[16];
        snprintf(rs, sizeof rs, "%d", r);
        const char *v[] = {w->cfg.name, w->version_str, rs};
        ss_metric_set(ss_metrics_series(fam.rank_up, v), a->alive ? 1 : 0);
        /* last_seen_ns may be a little newer than `now` (updated without this snapshot's lock) */
        uint64_t age = a->last_seen_ns && now > a->last_seen_ns ? now - a->last_seen_ns : 0;
        ss_metric_set(ss_metrics_series(fam.hb_age, v), a->last_seen_ns ? (double)age / 1e9 : -1);
        count_link_bytes(w, r);
    }
    const char *v[] = {w->cfg.name, w->version_str};
    ss_metric_set(ss_metrics_series(fam.queued, v), (double)w->q_len);
    worker_unlock(w);
}

/* ------------------------------------------------------------------ answering */

static void req_done_metrics(req_state *rs)
{
    ss_worker *w = rs->w;
    uint64_t total = ss_now_ns() - rs->t0_ns;
    const char *v[] = {w->cfg.name, w->version_str, rs->method->name, outcome_name(rs->worst)};
    ss_metric_add(ss_metrics_series(fam.requests, v), 1);
    ss_metric_observe(ss_metrics_series(fam.total, v), (double)total / 1e9);
    if (rs->job_id) {
        ss_metric_observe(ss_metrics_series(fam.queue, v), (double)rs->queue_ns / 1e9);
        ss_metric_observe(ss_metrics_series(fam.compute, v), (double)rs->compute_ns / 1e9);
    }
    ss_metric_add(w->m_inflight, -1);
    if (w->n_requests) w->n_requests--;
    if (total >= w->slow_ns)
        SS_INFO("servable %s: slow request: method %s, %zu instances, %.3f ms total (queue %.3f ms, compute %.3f "
                "ms, batch %d, request_id %llu), outcome %s",
                w->cfg.name, rs->method->name, rs->req->count, (double)total / 1e6, (double)rs->queue_ns / 1e6,
                (double)rs->compute_ns / 1e6, rs->batch, (unsigned long long)rs->job_id, outcome_name(rs->worst));
}

/* Release the worker's lock, then answer the requests that finished while it was held, in the
 * order they finished. */
static void worker_unlock(ss_worker *w)
{
    req_state *list = w->done_head;
    w->done_head = NULL;
    pthread_mutex_unlock(&w->mu);
    req_state *fifo = NULL;
    while (list) { /* reverse: the list was built newest first */
        req_state *next = list->next_done;
        list->next_done = fifo;
        fifo = list;
        list = next;
    }
    while (fifo) {
        req_state *next = fifo->next_done;
        fifo->done(fifo->done_ctx, fifo->reply);
        free(fifo);
        fifo = next;
    }
}

/* With the lock held: answer finished requests now (lock dropped and taken again). Used before
 * a thread sleeps on the condition variable, which releases the lock without answering. */
static void flush_done(ss_worker *w)
{
    if (!w->done_head) return;
    worker_unlock(w);
    pthread_mutex_lock(&w->mu);
}

static void req_finish_instance(req_state *rs, size_t inst, const char *fail_msg, int64_t code)
{
    if (fail_msg) ss_status_free(ss_predict_reply_fail_instance(rs->reply, inst, code, "%s", fail_msg));
    if (fail_msg && !rs->worst) rs->worst = code ? code : SS_SERVING_FAILED;
    if (--rs->remaining == 0) {
        req_done_metrics(rs);
        ss_predict_reply_collapse(rs->reply);
        /* answered after the lock is released (worker_unlock): a front end's done() must never
         * hold up the threads that read agents' results and heartbeats */
        rs->next_done = rs->w->done_head;
        rs->w->done_head = rs;
    }
}

/* Fail every queued and in-flight instance. Called with the lock held. */
static void fail_everything(ss_worker *w, int64_t code, const char *msg)
{
    while (w->q_len) {
        task t = w->queue[w->q_head];
        w->q_head = (w->q_head + 1) % w->q_cap;
        w->q_len--;
        req_finish_instance(t.rs, t.inst, msg, code);
    }
    for (job *j = w->inflight; j; j = j->next) {
        if (!j->failed) {
            j->failed = true;
            j->err_code = code;
            snprintf(j->err, sizeof j->err, "%s", msg);
        }
        /* also a job that already failed (a rank reported an error) may still wait for ranks that
         * will never answer now: it is finished either way */
        j->pending = 0;
    }
    pthread_cond_broadcast(&w->cv);
}

static void job_free(job *j)
{
    ss_link_msg_free(&j->result);
    for (int i = 0; i < j->n_inputs; i++) ss_tensor_free(&j->inputs[i]);
    for (int i = 0; i < SS_MAX_IO; i++) free(j->in_buf[i]);
    free(j->inputs);
    free(j->tasks);
    free(j);
}

/* A finished job goes back to the worker's free list (its task and input arrays kept), so the
 * dispatcher allocates nothing per request once warm. Lock held. */
static void job_recycle(ss_worker *w, job *j)
{
    if (w->n_free_jobs >= 2 * w->max_inflight + 2) {
        job_free(j);
        return;
    }
    ss_link_msg_free(&j->result);
    memset(&j->result, 0, sizeof j->result);
    for (int i = 0; i < j->n_inputs; i++) ss_tensor_free(&j->inputs[i]);
    j->n_inputs = 0;
    j->next = w->free_jobs;
    w->free_jobs = j;
    w->n_free_jobs++;
}

/* A job for up to `take` instances: recycled when possible. Lock held. NULL when out of memory. */
static job *job_get(ss_worker *w, int take)
{
    job *j = w->free_jobs;
    if (j) {
        w->free_jobs = j->next;
        w->n_free_jobs--;
    } else if (!(j = calloc(1, sizeof *j))) {
        return NULL;
    }
    if (j->tasks_cap < take) {
        task *t = realloc(j->tasks, (size_t)take * sizeof *t);
        if (!t) {
            job_free(j);
            return NULL;
        }
        j->tasks = t;
        j->tasks_cap = take;
    }
    if (!j->inputs && !(j->inputs = calloc(SS_MAX_IO, sizeof(ss_tensor)))) {
        job_free(j);
        return NULL;
    }
    j->id = 0;
    j->n_tasks = j->pending = j->n_inputs = 0;
    j->failed = false;
    j->err_code = 0;
    j->err[0] = 0;
    j->deadline_ns = j->dispatch_ns = 0;
    j->next = NULL;
    return j;
}

/* Slice instance i's share of a batched output. */
static ss_status *output_slice(const ss_tensor *out, int batch, int i, bool whole, ss_tensor *dst)
{
    if (whole || out->ndim == 0) return ss_tensor_copy(dst, out);
    int64_t dims[SS_MAX_DIMS];
    int nd = out->ndim - 1;
    for (int d = 0; d < nd; d++) dims[d] = out->dims[d + 1];
    ss_status *st = ss_tensor_alloc(dst, out->dtype, nd, dims);
    if (st) return st;
    size_t per = out->nbytes / (size_t)(out->dims[0] ? out->dims[0] : 1);
    if (out->dims[0] < batch) {
        ss_tensor_free(dst);
        return ss_errf(SS_ERR_INTERNAL, "model output has %lld rows for %d instances", (long long)out->dims[0], batch);
    }
    memcpy(dst->data, (const char *)out->data + per * (size_t)i, per);
    return NULL;
}

/* Deliver a finished job's results (or its error) to its requests. Lock held. */
static void job_complete(ss_worker *w, job *j)
{
    uint64_t now = ss_now_ns();
    if (j->n_tasks && j->dispatch_ns && now - j->dispatch_ns >= w->slow_ns)
        SS_INFO("servable %s: slow batch: request_id %llu, %d instances, %.3f ms from dispatch to the last rank's "
                "answer%s", w->cfg.name, (unsigned long long)j->id, j->n_tasks, (double)(now - j->dispatch_ns) / 1e6,
                j->failed ? " (failed)" : "");
    for (int t = 0; t < j->n_tasks; t++) {
        req_state *rs = j->tasks[t].rs;
        size_t inst = j->tasks[t].inst;
        if (j->dispatch_ns) {
            rs->job_id = j->id;
            rs->batch = j->n_tasks;
            rs->queue_ns = j->dispatch_ns - rs->t0_ns;
            rs->compute_ns = now - j->dispatch_ns;
        }
        if (j->failed) {
            req_finish_instance(rs, inst, j->err, j->err_code);
            continue;
        }
        ss_serving_instance *out = &rs->reply->instances[inst];
        ss_status *st = NULL;
        if (j->result.n_tensors < (size_t)rs->method->n_outputs)
            st = ss_errf(SS_ERR_INTERNAL, "the last rank returned %zu outputs, method '%s' declares %d",
                         j->result.n_tensors, rs->method->name, rs->method->n_outputs);
        for (int k = 0; !st && k < rs->method->n_outputs; k++) {
            ss_tensor piece, *res = &j->result.tensors[k];
            bool whole = !w->cfg.with_batch_dim;
            /* The only instance of the batch, and it owns every row: move the tensor, no copy
             * (a 64 MiB answer costs a 64 MiB memcpy otherwise). Outputs are distinct tensors
             * of the RESULT frame, each read once. */
            if (j->n_tasks == 1 && (res->storage == SS_STORE_OWNED || res->storage == SS_STORE_NONE) &&
                (whole || res->ndim == 0 || res->dims[0] == 1)) {
                piece = *res;
                memset(res, 0, sizeof *res);
                if (!whole && piece.ndim > 0) { /* drop the batch dim of 1 */
                    for (int d = 1; d < piece.ndim; d++) piece.dims[d - 1] = piece.dims[d];
                    piece.ndim--;
                }
                st = ss_serving_instance_put(out, rs->method->outputs[k], &piece, false);
                if (st) ss_tensor_free(&piece);
                continue;
            }
            st = output_slice(res, j->n_tasks, t, whole, &piece);
            if (!st) st = ss_serving_instance_put(out, rs->method->outputs[k], &piece, false);
            if (st) ss_tensor_free(&piece);
        }
        if (st) {
            req_finish_instance(rs, inst, st->msg, SS_SERVING_SYSTEM_ERROR);
            ss_status_free(st);
        } else {
            req_finish_instance(rs, inst, NULL, 0);
        }
    }
    j->n_tasks = 0;
}

/* Remove finished jobs from the in-flight list and answer them. Lock held. */
static void reap_jobs(ss_worker *w)
{
    for (job **pp = &w->inflight; *pp;) {
        job *j = *pp;
        if (j->pending > 0 || j->sending) {
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        w->n_inflight--;
        job_complete(w, j);
        job_recycle(w, j);
    }
    pthread_cond_broadcast(&w->cv);
}

static void rank_gone(ss_worker *w, int rank, const char *why)
{
    agent_slot *a = &w->agents[rank];
    if (!a->alive) return;
    a->alive = false;
    /* Shutting down: every rank gets its own EXIT (worker_stop); an agent that leaves first
     * must not cut the others' links before theirs arrives (they would take the cut for a lost
     * worker and be started again). */
    if (w->stopping) return;
    w->ready = false;
    snprintf(w->not_ready_why, sizeof w->not_ready_why, "rank %d (pid %lld) is gone: %s", rank, (long long)a->pid, why);
    SS_ERROR("servable %s: %s", w->cfg.name, w->not_ready_why);
    char msg[700];
    snprintf(msg, sizeof msg, "Servable stopped: worker unavailable, %s", w->not_ready_why);
    fail_everything(w, SS_SERVING_WORKER_UNAVAILABLE, msg);
    reap_jobs(w);
    if (a->conn) ss_link_shutdown(a->conn);
    /* A tensor-parallel group is only useful whole, and its communicator is broken now: release
     * the other ranks too. They see the link close, exit as "lost the worker", and their launcher
     * starts the group again (--restart on-failure), whose ranks register afresh. */
    for (int r = 0; r < w->cfg.rank_size; r++) {
        agent_slot *o = &w->agents[r];
        if (r == rank || !o->alive) continue;
        o->alive = false;
        if (o->conn) ss_link_shutdown(o->conn);
    }
}

/* ------------------------------------------------------------------ registration */

static bool spec_equal(const ss_link_spec *a, size_t na, const ss_link_spec *b, size_t nb)
{
    if (na != nb) return false;
    for (size_t i = 0; i < na; i++)
        if (a[i].dtype != b[i].dtype || !ss_shape_equal(a[i].ndim, a[i].dims, b[i].ndim, b[i].dims)) return false;
    return true;
}

/* MindSpore's CheckAgentsInfosAndInitTensorInfos, once every rank is there. Lock held. */
static ss_status *check_agents(ss_worker *w)
{
    int n = w->cfg.rank_size, per_stage = n / w->cfg.stage_size;
    agent_slot *r0 = &w->agents[0], *last = &w->agents[n - 1];
    if (!r0->n_inputs) return ss_errf(SS_ERR_INVALID, "rank 0 declares no inputs");
    if (!last->n_outputs) return ss_errf(SS_ERR_INVALID, "rank %d (the last) declares no outputs", n - 1);
    for (int r = 1; r < n; r++) {
        agent_slot *a = &w->agents[r];
        bool stage0 = r < per_stage;
        if ((stage0 || a->n_inputs) && !spec_equal(a->inputs, a->n_inputs, r0->inputs, r0->n_inputs))
            return ss_errf(SS_ERR_INVALID, "rank %d declares inputs that differ from rank 0's", r);
        agent_slot *first = &w->agents[r / per_stage * per_stage];
        if (!spec_equal(a->outputs, a->n_outputs, first->outputs, first->n_outputs))
            return ss_errf(SS_ERR_INVALID, "rank %d declares outputs that differ from rank %d's", r, r / per_stage * per_stage);
        if (a->batch_size && a->batch_size != r0->batch_size)
            return ss_errf(SS_ERR_INVALID, "rank %d has batch size %u, rank 0 has %u", r, a->batch_size, r0->batch_size);
    }
    for (int m = 0; m < w->cfg.n_methods; m++) {
        const ss_method_config *mc = &w->cfg.methods[m];
        if ((size_t)mc->n_inputs != r0->n_inputs)
            return ss_errf(SS_ERR_INVALID, "The inputs count %d in method '%s' not equal to the count %zu defined in model",
                           mc->n_inputs, mc->name, r0->n_inputs);
        if ((size_t)mc->n_outputs != last->n_outputs)
            return ss_errf(SS_ERR_INVALID, "The outputs count %d in method '%s' not equal to the count %zu defined in model",
                           mc->n_outputs, mc->name, last->n_outputs);
    }
    w->bcast = w->cfg.broadcast_inputs && per_stage > 1;
    for (int r = 0; r < per_stage; r++) w->bcast = w->bcast && w->agents[r].shares_inputs;
    w->batch = w->cfg.with_batch_dim ? (int)r0->batch_size : 1;
    w->batch_dynamic = w->cfg.with_batch_dim && r0->n_inputs && r0->inputs[0].ndim > 0 && r0->inputs[0].dims[0] < 0;
    if (w->batch_dynamic) w->batch = w->cfg.max_batch_size ? w->cfg.max_batch_size : DYNAMIC_BATCH_DEFAULT;
    else if (w->cfg.max_batch_size && w->cfg.max_batch_size < w->batch) w->batch = w->cfg.max_batch_size;
    if (w->batch < 1) w->batch = 1;
    if (w->batch > MAX_BATCH) w->batch = MAX_BATCH;
    return NULL;
}

static void copy_specs(ss_link_spec **dst, size_t *n, const ss_link_spec *src, size_t count)
{
    for (size_t i = 0; i < *n; i++) free((*dst)[i].name);
    free(*dst);
    *dst = calloc(count + 1, sizeof **dst);
    *n = *dst ? count : 0;
    for (size_t i = 0; *dst && i < count; i++) {
        (*dst)[i] = src[i];
        (*dst)[i].name = strdup(src[i].name ? src[i].name : "");
    }
}

/* Returns NULL when accepted; otherwise the reason. Lock held. */
static const char *register_agent(ss_worker *w, const ss_link_msg *m, ss_link_conn *c, char *why, size_t cap)
{
    if (m->rank_size != (uint32_t)w->cfg.rank_size || m->stage_size != (uint32_t)w->cfg.stage_size) {
        snprintf(why, cap, "agent is for rank_size %u / stage_size %u, servable %s declares %d / %d", m->rank_size,
                 m->stage_size, w->cfg.name, w->cfg.rank_size, w->cfg.stage_size);
        return why;
    }
    if (m->rank >= (uint32_t)w->cfg.rank_size) {
        snprintf(why, cap, "rank %u is not below rank_size %d", m->rank, w->cfg.rank_size);
        return why;
    }
    agent_slot *a = &w->agents[m->rank];
    if (a->alive) {
        snprintf(why, cap, "rank %u is already registered (pid %lld)", m->rank, (long long)a->pid);
        return why;
    }
    a->conn = c;
    a->alive = true;
    a->pid = m->pid;
    a->batch_size = m->batch_size;
    a->shares_inputs = m->shares_inputs;
    a->comm_bytes = 0;
    a->last_seen_ns = now_ns();
    copy_specs(&a->inputs, &a->n_inputs, m->inputs, m->n_inputs);
    copy_specs(&a->outputs, &a->n_outputs, m->outputs, m->n_outputs);
    SS_INFO("servable %s: rank %u registered (pid %lld, from %s)", w->cfg.name, m->rank, (long long)m->pid,
            m->address ? m->address : ss_link_conn_peer(c));
    int alive = 0;
    for (int r = 0; r < w->cfg.rank_size; r++) alive += w->agents[r].alive;
    if (alive == w->cfg.rank_size) {
        ss_status *st = check_agents(w);
        if (st) {
            SS_ERROR("servable %s: %s", w->cfg.name, st->msg);
            ss_status_free(w->fatal);
            w->fatal = st;
        } else {
            w->ready = true;
            w->not_ready_why[0] = 0;
            SS_INFO("servable %s version %llu: all %d ranks registered, ready (batch %d%s)", w->cfg.name,
                    (unsigned long long)w->version, w->cfg.rank_size, w->batch, w->batch_dynamic ? ", dynamic" : "");
        }
        pthread_cond_broadcast(&w->cv);
    }
    return NULL;
}

/* The servable's identity and layout, shared by the agents' meta and GET /model/NAME. */
static cJSON *servable_json(const ss_worker *w)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "servable", w->cfg.name);
    cJSON_AddNumberToObject(root, "version", (double)w->version);
    cJSON_AddNumberToObject(root, "rank_size", w->cfg.rank_size);
    cJSON_AddNumberToObject(root, "stage_size", w->cfg.stage_size);
    cJSON_AddBoolToObject(root, "with_batch_dim", w->cfg.with_batch_dim);
    return root;
}

static char *meta_json(const ss_worker *w)
{
    cJSON *root = servable_json(w);
    cJSON *nb = cJSON_AddArrayToObject(root, "without_batch_dim_inputs");
    for (int i = 0; i < w->cfg.n_no_batch; i++) cJSON_AddItemToArray(nb, cJSON_CreateString(w->cfg.without_batch_dim_inputs[i]));
    cJSON *ranks = cJSON_AddArrayToObject(root, "ranks");
    for (int i = 0; i < w->table.n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "rank", w->table.ranks[i].rank_id);
        cJSON_AddStringToObject(o, "ip", w->table.ranks[i].ip);
        cJSON_AddNumberToObject(o, "device_id", w->table.ranks[i].device_id);
        cJSON_AddItemToArray(ranks, o);
    }
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

/* ------------------------------------------------------------------ connections */

static job *find_job(ss_worker *w, uint64_t id)
{
    for (job *j = w->inflight; j; j = j->next)
        if (j->id == id) return j;
    return NULL;
}

/* A rank's cumulative collective bytes (RESULT or HEARTBEAT_ACK) into the counter. Lock held. */
static void count_comm_bytes(ss_worker *w, int rank, uint64_t bytes)
{
    agent_slot *a = &w->agents[rank];
    if (bytes <= a->comm_bytes) return; /* cumulative per agent process; 0 again after a restart */
    char rs[16];
    snprintf(rs, sizeof rs, "%d", rank);
    const char *v[] = {w->cfg.name, w->version_str, rs};
    ss_metric_add(ss_metrics_series(fam.comm, v), (double)(bytes - a->comm_bytes));
    a->comm_bytes = bytes;
}

/* Only the last rank answers a request that went well (the others are quiet: PREDICT.quiet);
 * any rank answers a failure. Lock held. */
static void on_result(ss_worker *w, int rank, ss_link_msg *m)
{
    count_comm_bytes(w, rank, m->comm_bytes);
    bool last = rank == w->cfg.rank_size - 1;
    if (!last && m->status_code == 0) return; /* not asked for */
    job *j = find_job(w, m->request_id);
    if (!j || j->pending <= 0) return; /* answered already (failed or timed out) */
    if (m->status_code != 0 && !j->failed) {
        /* a rank that lost a peer (a collective failed) means the group is down: code 4 */
        bool group_down = m->status_code == SS_ERR_UNAVAILABLE || m->status_code == SS_ERR_TIMEOUT;
        j->failed = true;
        j->err_code = group_down ? SS_SERVING_WORKER_UNAVAILABLE : SS_SERVING_SYSTEM_ERROR;
        snprintf(j->err, sizeof j->err, "%sError happened on get result of rank %d: %s",
                 group_down ? "worker unavailable: " : "", rank, m->message ? m->message : "failed");
    }
    if (last && !j->failed) {
        j->result = *m;
        memset(m, 0, sizeof *m); /* ownership moves to the job */
    }
    if (--j->pending == 0) reap_jobs(w);
}

static void serve_agent(ss_worker *w, ss_link_conn *c, int rank)
{
    for (;;) {
        ss_link_msg m = {0};
        ss_status *st = ss_link_recv(c, -1, &m);
        pthread_mutex_lock(&w->mu);
        if (st) {
            if (!w->stopping) rank_gone(w, rank, st->msg);
            worker_unlock(w);
            ss_status_free(st);
            break;
        }
        w->agents[rank].last_seen_ns = now_ns();
        bool leave = false;
        switch (m.type) {
        case SS_LINK_RESULT: on_result(w, rank, &m); break;
        case SS_LINK_HEARTBEAT_ACK: count_comm_bytes(w, rank, m.comm_bytes); break;
        case SS_LINK_EXIT:
            rank_gone(w, rank, m.message && m.message[0] ? m.message : "the agent exited");
            leave = true;
            break;
        case SS_LINK_HEARTBEAT: {
            worker_unlock(w);
            ss_link_msg ack = {.type = SS_LINK_HEARTBEAT_ACK, .seq = m.seq, .sent_ns = m.sent_ns};
            ss_status_free(ss_link_send(c, &ack, NULL, 0));
            pthread_mutex_lock(&w->mu);
            break;
        }
        default:
            SS_WARN("servable %s: rank %d sent an unexpected %s frame", w->cfg.name, rank, ss_link_type_name(m.type));
        }
        worker_unlock(w);
        ss_link_msg_free(&m);
        if (leave) break;
    }
    pthread_mutex_lock(&w->mu);
    if (w->agents[rank].conn == c) {
        count_link_bytes(w, rank); /* the connection's last bytes, before it is forgotten */
        w->agents[rank].conn = NULL;
    }
    worker_unlock(w);
}

static void *conn_main(void *arg)
{
    conn_thread *ct = arg;
    ss_worker *w = ct->w;
    ss_link_conn *c = ct->conn;
    ss_status *st = ss_link_handshake(c);
    ss_link_msg m = {0};
    if (!st) st = ss_link_recv(c, 10000, &m);
    if (st) {
        SS_WARN("distributed address %s: dropped connection from %s: %s", w->address, ss_link_conn_peer(c), st->msg);
        ss_status_free(st);
    } else if (m.type == SS_LINK_GET_META) {
        char *json = meta_json(w);
        ss_link_msg reply = {.type = SS_LINK_META, .json = json};
        ss_status_free(ss_link_send(c, &reply, NULL, 0));
        free(json);
    } else if (m.type == SS_LINK_REGISTER) {
        char why[512];
        pthread_mutex_lock(&w->mu);
        const char *reject = w->stopping ? "the worker is stopping" : register_agent(w, &m, c, why, sizeof why);
        worker_unlock(w);
        ss_link_msg ack = {.type = SS_LINK_REGISTER_ACK, .accepted = !reject, .message = (char *)(reject ? reject : "")};
        ss_status *sst = ss_link_send(c, &ack, NULL, 0);
        if (reject) SS_WARN("servable %s: rejected registration of rank %u: %s", w->cfg.name, m.rank, reject);
        if (!reject && sst) {
            pthread_mutex_lock(&w->mu);
            rank_gone(w, (int)m.rank, sst->msg);
            w->agents[m.rank].conn = NULL;
            worker_unlock(w);
        } else if (!reject) {
            serve_agent(w, c, (int)m.rank);
        }
        ss_status_free(sst);
    } else {
        SS_WARN("distributed address %s: %s sent %s before registering; dropped", w->address, ss_link_conn_peer(c),
                ss_link_type_name(m.type));
    }
    ss_link_msg_free(&m);
    pthread_mutex_lock(&w->mu);
    ct->done = true;
    worker_unlock(w);
    return NULL;
}

static void *accept_main(void *arg)
{
    ss_worker *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        bool stop = w->stopping;
        worker_unlock(w);
        if (stop) break;
        ss_link_conn *c = NULL;
        ss_status *st = ss_link_accept(w->listener, 200, &c);
        if (st) {
            if (st->code != SS_ERR_TIMEOUT) SS_WARN("distributed address %s: accept: %s", w->address, st->msg);
            ss_status_free(st);
            continue;
        }
        conn_thread *ct = calloc(1, sizeof *ct);
        if (!ct) {
            ss_link_close(c);
            continue;
        }
        ct->w = w;
        ct->conn = c;
        pthread_mutex_lock(&w->mu);
        /* join finished connection threads as we go */
        for (conn_thread **pp = &w->conns; *pp;) {
            conn_thread *old = *pp;
            if (old->done && !w->dispatch_sending) { /* the dispatcher may hold this connection */
                *pp = old->next;
                pthread_join(old->tid, NULL);
                ss_link_close(old->conn);
                free(old);
            } else {
                pp = &old->next;
            }
        }
        ct->next = w->conns;
        w->conns = ct;
        if (pthread_create(&ct->tid, NULL, conn_main, ct) != 0) {
            w->conns = ct->next;
            ss_link_close(c);
            free(ct);
        }
        worker_unlock(w);
    }
    return NULL;
}

/* ------------------------------------------------------------------ dispatch */

static ss_status *build_inputs(ss_worker *w, job *j, ss_tensor **ins, const char **names, int *n_ins)
{
    agent_slot *r0 = &w->agents[0];
    int n = (int)r0->n_inputs;
    *n_ins = n;
    const ss_method_config *mc = j->tasks[0].rs->method;
    for (int k = 0; k < n; k++) {
        names[k] = r0->inputs[k].name;
        bool no_batch = !w->cfg.with_batch_dim;
        for (int b = 0; b < w->cfg.n_no_batch; b++) no_batch |= !strcmp(w->cfg.without_batch_dim_inputs[b], mc->inputs[k]);
        const ss_serving_item *first = ss_serving_instance_find(&j->tasks[0].rs->req->instances[j->tasks[0].inst], mc->inputs[k]);
        if (no_batch) { /* the first instance's tensor, as is: no copy */
            ins[k] = (ss_tensor *)&first->tensor;
            continue;
        }
        const ss_link_spec *sp = &r0->inputs[k];
        int rows = w->batch_dynamic ? j->n_tasks : w->batch;
        int64_t dims[SS_MAX_DIMS];
        dims[0] = rows;
        for (int d = 1; d < sp->ndim; d++) dims[d] = sp->dims[d];
        int slot = j->n_inputs;
        ss_tensor *t = &j->inputs[slot];
        size_t bytes = ss_dtype_size(sp->dtype) * (size_t)ss_shape_numel(sp->ndim, dims);
        if (sp->dtype == SS_DT_STRING) return ss_errf(SS_ERR_UNSUPPORTED, "batching string inputs");
        if (bytes > j->in_cap[slot]) { /* grows to the largest batch seen, then reused */
            void *p = NULL;
            if (posix_memalign(&p, 64, bytes ? bytes : 64)) return ss_errf(SS_ERR_NOMEM, "batch input of %zu bytes", bytes);
            free(j->in_buf[slot]);
            j->in_buf[slot] = p;
            j->in_cap[slot] = bytes;
        }
        ss_status *st = ss_tensor_borrow(t, sp->dtype, sp->ndim, dims, j->in_buf[slot], bytes);
        if (st) return st;
        j->n_inputs++;
        size_t per = t->nbytes / (size_t)rows;
        for (int r = 0; r < rows; r++) { /* unused rows are padded with the first instance */
            const task *tk = &j->tasks[r < j->n_tasks ? r : 0];
            const ss_serving_item *it = ss_serving_instance_find(&tk->rs->req->instances[tk->inst], mc->inputs[k]);
            memcpy((char *)t->data + per * (size_t)r, it->tensor.data, per);
        }
        ins[k] = t;
    }
    return NULL;
}

/* Called without the lock, with j->sending and w->dispatch_sending set: the job and the
 * connections in `conns` (taken under the lock) stay valid until the dispatcher clears them. */
/* Stage 0's inputs reach its ranks through the comm layer when the job may (j->bcast, taken
 * under the lock) and no input is a string. */
static bool inputs_by_broadcast(const job *j, ss_tensor *const *ins, int n_ins)
{
    if (!j->bcast) return false;
    for (int k = 0; k < n_ins; k++)
        if (ins[k]->dtype == SS_DT_STRING) return false;
    return true;
}

/* Called without the lock, with j->sending and w->dispatch_sending set: the job and the
 * connections in `conns` (taken under the lock) stay valid until the dispatcher clears them.
 * Stage 0 gets the inputs (all of it over the link, or rank 0 over the link and the rest by
 * rank 0's broadcast), later stages an empty request; the last rank returns the outputs. */
static void send_job(ss_worker *w, job *j, ss_link_conn *const *conns)
{
    ss_tensor *ins[SS_MAX_IO];
    const char *names[SS_MAX_IO];
    ss_link_spec specs[SS_MAX_IO];
    int n_ins = 0;
    ss_status *st = build_inputs(w, j, ins, names, &n_ins); /* j->inputs exists (job_get) */
    int n = w->cfg.rank_size, per_stage = n / w->cfg.stage_size;
    bool bcast = !st && inputs_by_broadcast(j, ins, n_ins);
    for (int k = 0; bcast && k < n_ins; k++) {
        specs[k] = (ss_link_spec){.name = (char *)names[k], .dtype = ins[k]->dtype, .ndim = ins[k]->ndim};
        memcpy(specs[k].dims, ins[k]->dims, sizeof specs[k].dims[0] * (size_t)ins[k]->ndim);
    }
    for (int r = 0; r < n && !st; r++) {
        bool stage0 = r < per_stage, tensors = stage0 && (!bcast || r == 0);
        ss_link_msg m = {.type = SS_LINK_PREDICT, .request_id = j->id, .return_result = r == n - 1,
                         .quiet = r != n - 1, .tensor_names = tensors ? (char **)names : NULL,
                         .share_inputs = bcast && r == 0};
        if (stage0 && bcast && r > 0) {
            m.has_input_root = true;
            m.input_root = 0;
            m.inputs = specs;
            m.n_inputs = (size_t)n_ins;
        }
        ss_link_conn *c = conns[r];
        st = c ? ss_link_send(c, &m, tensors ? (const ss_tensor *const *)ins : NULL, tensors ? (size_t)n_ins : 0)
               : ss_errf(SS_ERR_UNAVAILABLE, "rank %d is not connected", r);
        if (st) st = ss_status_wrap(st, "sending to rank %d", r);
    }
    if (st) {
        pthread_mutex_lock(&w->mu);
        if (!j->failed) {
            j->failed = true;
            j->err_code = SS_SERVING_WORKER_UNAVAILABLE;
            snprintf(j->err, sizeof j->err, "worker unavailable: %s", st->msg);
        }
        j->pending = 0;
        worker_unlock(w);
        ss_status_free(st);
    }
}

static void *dispatch_main(void *arg)
{
    ss_worker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        flush_done(w);
        while (!w->stopping && (!w->ready || !w->q_len || w->n_inflight >= w->max_inflight))
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stopping) break;
        /* with a queue delay, wait (bounded) for a fuller batch */
        if (w->cfg.max_queue_delay_us > 0 && w->q_len < (size_t)w->batch) {
            struct timespec dl;
            abs_deadline(&dl, 0);
            dl.tv_nsec += (long)w->cfg.max_queue_delay_us * 1000L;
            while (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
            while (!w->stopping && w->q_len < (size_t)w->batch &&
                   pthread_cond_timedwait(&w->cv, &w->mu, &dl) != ETIMEDOUT) {
            }
            if (w->stopping || !w->ready || !w->q_len) continue;
        }
        int take = (int)(w->q_len < (size_t)w->batch ? w->q_len : (size_t)w->batch);
        job *j = job_get(w, take);
        if (!j) {
            fail_everything(w, SS_SERVING_SYSTEM_ERROR, "out of memory");
            continue;
        }
        /* a batch never mixes methods */
        const ss_method_config *method = w->queue[w->q_head].rs->method;
        for (int i = 0; i < take && w->queue[w->q_head].rs->method == method; i++) {
            j->tasks[j->n_tasks++] = w->queue[w->q_head];
            w->q_head = (w->q_head + 1) % w->q_cap;
            w->q_len--;
        }
        j->id = ++w->next_job_id;
        j->bcast = w->bcast;
        j->pending = 1; /* the last rank's answer; the others answer only when they fail */
        j->dispatch_ns = now_ns();
        j->deadline_ns = j->dispatch_ns + (uint64_t)w->opt.request_timeout_ms * 1000000ull;
        ss_metric_observe(w->m_batch, j->n_tasks);
        SS_DEBUG("servable %s: request_id %llu: dispatching %d instances (%zu still queued)", w->cfg.name,
                 (unsigned long long)j->id, j->n_tasks, w->q_len);
        j->next = w->inflight;
        w->inflight = j;
        w->n_inflight++;
        for (int r = 0; r < w->cfg.rank_size; r++) w->conn_snapshot[r] = w->agents[r].alive ? w->agents[r].conn : NULL;
        j->sending = w->dispatch_sending = true;
        worker_unlock(w);
        send_job(w, j, w->conn_snapshot); /* only this thread sends PREDICTs: every rank sees the same order */
        pthread_mutex_lock(&w->mu);
        j->sending = w->dispatch_sending = false;
        reap_jobs(w); /* it may have finished (or failed) while we were sending */
    }
    worker_unlock(w);
    return NULL;
}

static void *monitor_main(void *arg)
{
    ss_worker *w = arg;
    uint64_t seq = 0;
    pthread_mutex_lock(&w->mu);
    while (!w->stopping) {
        struct timespec dl;
        abs_deadline(&dl, w->opt.heartbeat_ms);
        while (!w->stopping && pthread_cond_timedwait(&w->cv, &w->mu, &dl) != ETIMEDOUT) {
        }
        if (w->stopping) break;
        uint64_t now = now_ns();
        seq++;
        for (int r = 0; r < w->cfg.rank_size; r++) {
            agent_slot *a = &w->agents[r];
            if (!a->alive || !a->conn) continue;
            /* last_seen_ns may be newer than `now`: serve_agent updates it while the lock is
             * dropped for a send below; unsigned now - last_seen then wrapped to a huge age and a
             * healthy rank was declared gone under load */
            if (a->last_seen_ns < now && now - a->last_seen_ns > (uint64_t)w->opt.heartbeat_timeout_ms * 1000000ull) {
                char why[128];
                snprintf(why, sizeof why, "no heartbeat answer for %d ms", w->opt.heartbeat_timeout_ms);
                rank_gone(w, r, why);
                continue;
            }
            ss_link_msg hb = {.type = SS_LINK_HEARTBEAT, .seq = seq, .sent_ns = now};
            ss_link_conn *c = a->conn;
            worker_unlock(w);
            ss_status *st = ss_link_send(c, &hb, NULL, 0);
            pthread_mutex_lock(&w->mu);
            if (st) rank_gone(w, r, st->msg);
            ss_status_free(st);
        }
        for (job *j = w->inflight; j; j = j->next)
            if (j->pending > 0 && now > j->deadline_ns) { /* failed or not: the deadline ends it */
                if (!j->failed) {
                    j->failed = true;
                    j->err_code = SS_SERVING_WORKER_UNAVAILABLE;
                    snprintf(j->err, sizeof j->err, "Failed to wait for result of rank %d within the request "
                             "timeout of %d ms", w->cfg.rank_size - 1, w->opt.request_timeout_ms);
                }
                j->pending = 0;
            }
        reap_jobs(w);
        flush_done(w); /* before sleeping again: answer what the checks above finished */
    }
    worker_unlock(w);
    return NULL;
}

/* ------------------------------------------------------------------ the handler */

static ss_worker *find_worker(ss_worker_set *set, const char *name, uint64_t version)
{
    ss_worker *best = NULL;
    for (ss_worker *w = set->workers; w; w = w->next) {
        if (strcmp(w->cfg.name, name)) continue;
        if (version ? w->version == version : (!best || w->version > best->version)) best = w;
    }
    return best;
}

static const ss_method_config *find_method(const ss_worker *w, const char *name)
{
    for (int i = 0; i < w->cfg.n_methods; i++)
        if (!strcmp(w->cfg.methods[i].name, name)) return &w->cfg.methods[i];
    return NULL;
}

static const char *ms_dtype_name(ss_dtype dt)
{
    switch (dt) {
    case SS_DT_BOOL: return "kMSI_Bool";
    case SS_DT_INT8: return "kMSI_Int8";
    case SS_DT_UINT8: return "kMSI_Uint8";
    case SS_DT_INT16: return "kMSI_Int16";
    case SS_DT_UINT16: return "kMSI_Uint16";
    case SS_DT_INT32: return "kMSI_Int32";
    case SS_DT_UINT32: return "kMSI_Uint32";
    case SS_DT_INT64: return "kMSI_Int64";
    case SS_DT_UINT64: return "kMSI_Uint64";
    case SS_DT_FLOAT16: return "kMSI_Float16";
    case SS_DT_FLOAT32: return "kMSI_Float32";
    case SS_DT_FLOAT64: return "kMSI_Float64";
    case SS_DT_STRING: return "kMSI_String";
    default: return "kMSI_Unknown";
    }
}

/* MindSpore's per-instance checks: exact dtype, and bytes = model input bytes / batch. */
static bool check_instance(const ss_worker *w, const ss_method_config *mc, const ss_serving_instance *inst,
                           char *why, size_t cap)
{
    const agent_slot *r0 = &w->agents[0];
    for (int k = 0; k < mc->n_inputs && (size_t)k < r0->n_inputs; k++) {
        const ss_serving_item *it = ss_serving_instance_find(inst, mc->inputs[k]);
        const ss_link_spec *sp = &r0->inputs[k];
        if (it->tensor.dtype != sp->dtype) {
            snprintf(why, cap, "Given model input %d data type %s not match the data type %s defined in model", k,
                     ms_dtype_name(it->tensor.dtype), ms_dtype_name(sp->dtype));
            return false;
        }
        bool no_batch = !w->cfg.with_batch_dim;
        for (int b = 0; b < w->cfg.n_no_batch; b++) no_batch |= !strcmp(w->cfg.without_batch_dim_inputs[b], mc->inputs[k]);
        int64_t numel = 1;
        int first = (!no_batch) ? 1 : 0;
        for (int d = first; d < sp->ndim; d++) numel *= sp->dims[d];
        size_t want = (size_t)numel * ss_dtype_size(sp->dtype);
        if (it->tensor.nbytes != want) {
            snprintf(why, cap, "Given model input %d size %zu not match the size %zu defined in model", k,
                     it->tensor.nbytes, want);
            return false;
        }
    }
    return true;
}

static void set_predict(void *ctx, ss_predict_request *req, ss_predict_done done, void *done_ctx)
{
    ss_worker_set *set = ctx;
    pthread_mutex_lock(&set->mu);
    ss_worker *w = find_worker(set, req->servable, req->version);
    pthread_mutex_unlock(&set->mu);
    if (!w) {
        count_rejected("", "", "", SS_SERVING_SERVABLE_UNAVAILABLE);
        done(done_ctx, ss_serving_err_unavailable(req, false));
        return;
    }
    const ss_method_config *mc = find_method(w, req->method);
    if (!mc) {
        count_rejected(w->cfg.name, w->version_str, "", SS_SERVING_SERVABLE_UNAVAILABLE);
        done(done_ctx, ss_serving_err_unavailable(req, true));
        return;
    }
    const char *const *names = (const char *const *)NULL;
    const char *in_names[SS_MAX_IO];
    for (int i = 0; i < mc->n_inputs; i++) in_names[i] = mc->inputs[i];
    names = in_names;
    ss_predict_reply *bad = ss_predict_request_check_inputs(req, names, (size_t)mc->n_inputs);
    if (bad) {
        count_rejected(w->cfg.name, w->version_str, mc->name, SS_SERVING_INVALID_INPUTS);
        done(done_ctx, bad);
        return;
    }
    pthread_mutex_lock(&w->mu);
    if (!w->ready || w->stopping) {
        char spec[256];
        ss_predict_reply *r = ss_predict_reply_error(SS_SERVING_SERVABLE_UNAVAILABLE,
                                                     "Request %s, servable is not available: not ready (%s)",
                                                     ss_serving_spec_str(req, spec, sizeof spec),
                                                     w->stopping ? "the server is stopping"
                                                     : w->not_ready_why[0] ? w->not_ready_why : "waiting for agents");
        worker_unlock(w);
        count_rejected(w->cfg.name, w->version_str, mc->name, SS_SERVING_SERVABLE_UNAVAILABLE);
        done(done_ctx, r);
        return;
    }
    if (w->n_requests >= (size_t)w->opt.max_enqueued) {
        worker_unlock(w);
        count_rejected(w->cfg.name, w->version_str, mc->name, SS_SERVING_FAILED);
        done(done_ctx, ss_predict_reply_error(SS_SERVING_FAILED, "Serving Error: enqueued requests count exceeds the limit %d",
                                              w->opt.max_enqueued));
        return;
    }
    req_state *rs = calloc(1, sizeof *rs);
    ss_predict_reply *reply = rs ? ss_predict_reply_new(req->count) : NULL;
    if (!rs || !reply) {
        worker_unlock(w);
        free(rs);
        done(done_ctx, ss_predict_reply_error(SS_SERVING_SYSTEM_ERROR, "out of memory"));
        return;
    }
    *rs = (req_state){NULL, req, done, done_ctx, reply, req->count, mc, .w = w, .t0_ns = now_ns()};
    w->n_requests++; /* until req_done_metrics */
    ss_metric_add(w->m_inflight, 1);
    if (w->q_len + req->count > w->q_cap) {
        size_t nc = w->q_cap ? w->q_cap : 256;
        while (nc < w->q_len + req->count) nc *= 2;
        task *q = malloc(nc * sizeof *q);
        if (q) {
            for (size_t i = 0; i < w->q_len; i++) q[i] = w->queue[(w->q_head + i) % w->q_cap];
            free(w->queue);
            w->queue = q;
            w->q_cap = nc;
            w->q_head = 0;
        }
    }
    size_t n = req->count;
    for (size_t i = 0; i < n; i++) {
        char why[256];
        if (w->q_len >= w->q_cap) {
            req_finish_instance(rs, i, "out of memory queueing the instance", SS_SERVING_SYSTEM_ERROR);
        } else if (!check_instance(w, mc, &req->instances[i], why, sizeof why)) {
            req_finish_instance(rs, i, why, SS_SERVING_INVALID_INPUTS);
        } else {
            w->queue[(w->q_head + w->q_len) % w->q_cap] = (task){rs, i};
            w->q_len++;
        }
    }
    pthread_cond_broadcast(&w->cv);
    worker_unlock(w);
}

/* ------------------------------------------------------------------ lifecycle */

ss_worker_set *ss_worker_set_new(void)
{
    ss_worker_set *s = calloc(1, sizeof *s);
    if (s) pthread_mutex_init(&s->mu, NULL);
    return s;
}

/* One instance's tensors: with a batch dim the model's first dim is the batch, not the instance's. */
static cJSON *specs_json(const ss_worker *w, const ss_method_config *mc, bool inputs, const ss_link_spec *specs,
                         size_t n)
{
    cJSON *arr = cJSON_CreateArray();
    int count = inputs ? mc->n_inputs : mc->n_outputs;
    for (int i = 0; arr && i < count && (size_t)i < n; i++) {
        const char *name = inputs ? mc->inputs[i] : mc->outputs[i];
        bool batched = w->cfg.with_batch_dim && specs[i].ndim > 0;
        for (int b = 0; inputs && b < w->cfg.n_no_batch; b++) batched &= strcmp(w->cfg.without_batch_dim_inputs[b], name) != 0;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", name);
        cJSON_AddStringToObject(o, "dtype", ss_dtype_name(specs[i].dtype));
        cJSON *shape = cJSON_AddArrayToObject(o, "shape");
        for (int d = batched; shape && d < specs[i].ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)specs[i].dims[d]));
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

static char *error_json(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *error_json(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error_msg", msg);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

/* GET /model/NAME[/version/N]: the methods with the shapes the ranks registered (rank 0's
 * inputs, the last rank's outputs), so clients and `shardserve bench` can build requests. */
static char *set_describe(void *ctx, const char *servable, uint64_t version, bool *ok)
{
    ss_worker_set *set = ctx;
    *ok = false;
    pthread_mutex_lock(&set->mu);
    ss_worker *w = find_worker(set, servable, version);
    char *text = NULL;
    if (!w) {
        text = error_json("servable is not available: '%.128s' version %llu is not served", servable,
                          (unsigned long long)version);
    } else {
        pthread_mutex_lock(&w->mu);
        if (!w->ready || w->stopping) {
            text = error_json("servable is not available: not ready (%s)",
                              w->not_ready_why[0] ? w->not_ready_why : "waiting for agents");
        } else {
            cJSON *o = servable_json(w);
            cJSON_AddNumberToObject(o, "batch_size", w->batch);
            cJSON *methods = cJSON_AddArrayToObject(o, "methods");
            const agent_slot *r0 = &w->agents[0], *last = &w->agents[w->cfg.rank_size - 1];
            for (int m = 0; methods && m < w->cfg.n_methods; m++) {
                const ss_method_config *mc = &w->cfg.methods[m];
                cJSON *mo = cJSON_CreateObject();
                cJSON_AddStringToObject(mo, "name", mc->name);
                cJSON_AddItemToObject(mo, "inputs", specs_json(w, mc, true, r0->inputs, r0->n_inputs));
                cJSON_AddItemToObject(mo, "outputs", specs_json(w, mc, false, last->outputs, last->n_outputs));
                cJSON_AddItemToArray(methods, mo);
            }
            text = cJSON_PrintUnformatted(o);
            cJSON_Delete(o);
            *ok = text != NULL;
        }
        worker_unlock(w);
    }
    pthread_mutex_unlock(&set->mu);
    return text;
}

ss_predict_handler ss_worker_set_handler(ss_worker_set *set)
{
    return (ss_predict_handler){set, set_predict, set_describe};
}

bool ss_worker_set_ready(void *ctx)
{
    ss_worker_set *set = ctx;
    bool ready = set->workers != NULL;
    pthread_mutex_lock(&set->mu);
    for (ss_worker *w = set->workers; w; w = w->next) {
        pthread_mutex_lock(&w->mu);
        ready = ready && w->ready && !w->stopping;
        worker_unlock(w);
    }
    pthread_mutex_unlock(&set->mu);
    return ready;
}

const char *ss_worker_address(const ss_worker *w) { return w->address; }

ss_status *ss_worker_set_add(ss_worker_set *set, const ss_worker_options *opt, ss_worker **out)
{
    *out = NULL;
    ss_worker *w = calloc(1, sizeof *w);
    if (!w) return ss_errf(SS_ERR_NOMEM, "out of memory");
    w->opt = *opt;
    if (!w->opt.request_timeout_ms) w->opt.request_timeout_ms = 10000;
    if (!w->opt.heartbeat_ms) w->opt.heartbeat_ms = 1000;
    if (!w->opt.heartbeat_timeout_ms) w->opt.heartbeat_timeout_ms = 5000;
    /* a few heartbeats fit in the bound, or one late answer would look like a dead agent */
    if (w->opt.heartbeat_ms > w->opt.heartbeat_timeout_ms / 4)
        w->opt.heartbeat_ms = w->opt.heartbeat_timeout_ms / 4 > 50 ? w->opt.heartbeat_timeout_ms / 4 : 50;
    if (!w->opt.max_enqueued) w->opt.max_enqueued = 10000;
    w->version = opt->version ? opt->version : 1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    ss_status *st = ss_servable_config_load(opt->servable_dir, opt->servable, &w->cfg);
    if (!st) st = ss_rank_table_load(opt->rank_table, &w->table);
    if (!st) st = ss_rank_table_check(&w->table, w->cfg.rank_size, w->cfg.stage_size, opt->rank_table);
    pthread_mutex_lock(&set->mu);
    for (ss_worker *o = set->workers; o && !st; o = o->next)
        if (!strcmp(o->cfg.name, w->cfg.name) && o->version == w->version)
            st = ss_errf(SS_ERR_INVALID, "servable %s version %llu is started twice", w->cfg.name, (unsigned long long)w->version);
    pthread_mutex_unlock(&set->mu);
    if (!st) {
        w->agents = calloc((size_t)w->cfg.rank_size, sizeof *w->agents);
        w->conn_snapshot = calloc((size_t)w->cfg.rank_size, sizeof *w->conn_snapshot);
        if (!w->conn_snapshot) free(w->agents), w->agents = NULL;
        if (!w->agents) st = ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    w->max_inflight = w->cfg.pipeline ? w->cfg.stage_size + 1 : 1;
    ss_link_options_default(&w->link_opt);
    w->link_opt.secret = opt->secret;
    w->link_opt.secret_len = opt->secret_len;
    if (!st) st = ss_link_listen(opt->distributed_address, &w->link_opt, &w->listener);
    if (st) {
        st = ss_status_wrap(st, "servable %s", opt->servable);
        ss_rank_table_free(&w->table);
        free(w->agents);
        free(w->conn_snapshot);
        free(w);
        return st;
    }
    snprintf(w->address, sizeof w->address, "%s", ss_link_listener_address(w->listener));
    snprintf(w->version_str, sizeof w->version_str, "%llu", (unsigned long long)w->version);
    const char *slow = getenv("SHARDSERVE_SLOW_REQUEST_MS");
    long slow_ms = slow && *slow ? strtol(slow, NULL, 10) : 1000;
    w->slow_ns = (uint64_t)(slow_ms >= 0 ? slow_ms : 1000) * 1000000ull;
    pthread_once(&fam_once, fam_init);
    const char *lv[] = {w->cfg.name, w->version_str};
    w->m_batch = ss_metrics_series(fam.batch, lv);
    w->m_inflight = ss_metrics_series(fam.inflight, lv);
    ss_metrics_add_collector(ss_metrics_global(), collect, w);
    snprintf(w->not_ready_why, sizeof w->not_ready_why, "waiting for %d agents", w->cfg.rank_size);
    w->set = set;
    pthread_create(&w->accept_tid, NULL, accept_main, w);
    pthread_create(&w->dispatch_tid, NULL, dispatch_main, w);
    pthread_create(&w->monitor_tid, NULL, monitor_main, w);
    pthread_mutex_lock(&set->mu);
    w->next = set->workers;
    set->workers = w;
    pthread_mutex_unlock(&set->mu);
    *out = w;
    return NULL;
}

ss_status *ss_worker_wait_ready(ss_worker *w)
{
    struct timespec dl;
    abs_deadline(&dl, w->opt.wait_agents_s > 0 ? w->opt.wait_agents_s * 1000 : 0);
    pthread_mutex_lock(&w->mu);
    while (!w->ready && !w->fatal && !w->stopping) {
        if (w->opt.wait_agents_s > 0) {
            if (pthread_cond_timedwait(&w->cv, &w->mu, &dl) == ETIMEDOUT) break;
        } else {
            pthread_cond_wait(&w->cv, &w->mu);
        }
    }
    ss_status *st = NULL;
    if (w->fatal) {
        st = ss_errf(SS_ERR_INVALID, "servable %s: the agents do not fit together: %s", w->cfg.name, w->fatal->msg);
    } else if (!w->ready) {
        char missing[1024] = "";
        size_t off = 0;
        int alive = 0;
        for (int r = 0; r < w->cfg.rank_size; r++) {
            if (w->agents[r].alive) alive++;
            else if (off < sizeof missing - 16) off += (size_t)snprintf(missing + off, sizeof missing - off, "%s%d", off ? ", " : "", r);
        }
        st = ss_errf(SS_ERR_TIMEOUT, "Failed to wait for ready of all agents, current agents count: %d, rank size: %d "
                     "(servable %s; missing ranks: %s; waited %d s)", alive, w->cfg.rank_size, w->cfg.name, missing,
                     w->opt.wait_agents_s);
    }
    worker_unlock(w);
    return st;
}

static void worker_stop(ss_worker *w)
{
    ss_metrics_remove_collector(ss_metrics_global(), collect, w); /* returns once collect() is not running */
    for (int r = 0; r < w->cfg.rank_size; r++) { /* this worker's ranks are down from now on */
        char rs[16];
        snprintf(rs, sizeof rs, "%d", r);
        const char *v[] = {w->cfg.name, w->version_str, rs};
        ss_metric_set(ss_metrics_series(fam.rank_up, v), 0);
    }
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    w->ready = false;
    fail_everything(w, SS_SERVING_WORKER_UNAVAILABLE, "Servable stopped: the server is shutting down");
    reap_jobs(w);
    pthread_cond_broadcast(&w->cv);
    worker_unlock(w);
    pthread_join(w->dispatch_tid, NULL);
    pthread_join(w->monitor_tid, NULL);
    pthread_join(w->accept_tid, NULL);
    /* Tell agents to exit, and let them close first: closing our end while their frames sit
     * unread would reset the connection, and an agent could lose the EXIT and take the reset for
     * a lost worker (and be started again). Their reader threads end when the agents close. */
    for (int r = 0; r < w->cfg.rank_size; r++) {
        pthread_mutex_lock(&w->mu);
        ss_link_conn *c = w->agents[r].conn; /* stays open until the conn threads end below */
        worker_unlock(w);
        if (c) {
            ss_link_msg ex = {.type = SS_LINK_EXIT, .message = "the server is shutting down"};
            ss_status_free(ss_link_send(c, &ex, NULL, 0));
        }
    }
    for (uint64_t until = now_ns() + 2000000000ull; now_ns() < until;) {
        bool all_done = true;
        pthread_mutex_lock(&w->mu);
        for (conn_thread *ct = w->conns; ct; ct = ct->next) all_done = all_done && ct->done;
        worker_unlock(w);
        if (all_done) break;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (conn_thread *ct = w->conns; ct;) {
        ss_link_shutdown(ct->conn);
        pthread_join(ct->tid, NULL);
        ss_link_close(ct->conn);
        conn_thread *next = ct->next;
        free(ct);
        ct = next;
    }
    ss_link_listener_close(w->listener);
    for (job *j = w->inflight; j;) {
        job *next = j->next;
        job_free(j);
        j = next;
    }
    for (job *j = w->free_jobs; j;) {
        job *next = j->next;
        job_free(j);
        j = next;
    }
    for (int r = 0; r < w->cfg.rank_size; r++) {
        copy_specs(&w->agents[r].inputs, &w->agents[r].n_inputs, NULL, 0);
        copy_specs(&w->agents[r].outputs, &w->agents[r].n_outputs, NULL, 0);
        free(w->agents[r].inputs);
        free(w->agents[r].outputs);
    }
    free(w->agents);
    free(w->conn_snapshot);
    free(w->queue);
    ss_status_free(w->fatal);
    ss_rank_table_free(&w->table);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

void ss_worker_set_free(ss_worker_set *set)
{
    if (!set) return;
    while (set->workers) {
        ss_worker *w = set->workers;
        set->workers = w->next;
        worker_stop(w);
    }
    pthread_mutex_destroy(&set->mu);
    free(set);
}
