/*
 * The Distributed Worker (see include/shardserve/worker.h) as one event loop.
 *
 * One loop per servable version owns all of its state: the agent table, the queue of instances,
 * the jobs in flight, batching, heartbeats and deadlines. The loop is a role, held by one thread at
 * a time through `role` (debug builds assert "holding the loop" wherever that state is touched):
 * usually the loop thread, but a front end's thread that submits a request while the loop thread
 * sleeps takes the role itself and sends the request to the agents at once, instead of waking the
 * loop thread to do it (a cross-core wake-up costs tens of microseconds on a VM, more than the rest
 * of the hand-over). The loop thread
 * waits in epoll on:
 *   - an eventfd that other threads ring after putting something in the inbox (a request from a
 *     front end, a registration read by a handshake thread, a metrics refresh, stop);
 *   - each registered agent's link socket: a readable socket means a frame has started, and the
 *     loop reads it whole (RESULT, HEARTBEAT_ACK, EXIT; link.h bounds stalls inside a frame);
 *   - the listening socket: a new connection gets a short-lived handshake thread, which does
 *     the (bounded, possibly slow) handshake, answers GET_META itself from the immutable meta
 *     text, or hands a REGISTER over to the loop through the inbox;
 *   - a timeout: the nearest of the next heartbeat, a job's deadline and a batch's queue delay.
 *
 * Sending: PREDICTs go out in one order to every rank (which is what lets pipeline stages
 * overlap). Small frames are written by the loop itself; a job whose tensors exceed
 * SEND_INLINE_MAX goes to the bulk sender thread, and every job after it too while it is busy, so
 * the order holds and the loop never waits on a large write. While the bulk sender works the loop
 * sends no other frame (heartbeats are skipped; a send that completes counts as a sign of life).
 *
 * Requests: a front end's thread calls submit() (through the serving registry, which has already
 * checked the request against the published signature); done() is called by whoever holds the
 * loop, exactly once per request, also when the worker stops. Requests may be long-lived: a request
 * is a req_state that jobs point at, not a job, so one request could span several model calls.
 *
 * Failure: the moment a rank is gone (connection lost, EXIT, heartbeat silence), every in-flight
 * and queued request is answered with WORKER_UNAVAILABLE, the version is withdrawn from the
 * registry (not ready) and the group is released, until every rank has registered again.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "shardserve/worker.h"

#include "shardserve/link.h"
#include "shardserve/metrics.h"

#include "batch.h"
#include "gen.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* tensor bytes a PREDICT may carry to be sent by the loop itself */
#define SEND_INLINE_MAX (256u * 1024u)
#define HANDSHAKE_FIRST_FRAME_MS 10000
#define STOP_GRACE_MS 2000 /* at stop, how long agents get to close their links after EXIT */

#define TAG_EVENT 0u
#define TAG_LISTENER 1u
#define TAG_RANK0 2u /* + rank */

typedef struct req_state req_state;

typedef struct {
    req_state *rs;
    size_t inst;
    bool solo; /* runs in a batch of its own: its batch failed in the model (requeue_alone) */
} task;

struct req_state {
    req_state *next; /* in the inbox */
    ss_predict_request *req;
    ss_predict_done done;
    void *done_ctx;
    ss_predict_reply *reply;
    size_t remaining; /* instances not answered yet */
    const ss_method_config *method;
    uint64_t t0_ns;                /* submitted */
    uint64_t queue_ns, compute_ns; /* of the last batch that carried one of its instances */
    uint64_t job_id;               /* that batch's id: the request_id of its PREDICT frames */
    int batch;                     /* that batch's instance count */
    int64_t worst;                 /* the first failure code, 0 = every instance ok */
};

typedef struct job {
    uint64_t id;
    int n_tasks, tasks_cap;
    task *tasks;
    bool answered;  /* the last rank answered, a rank failed, or the deadline passed */
    bool in_bulk;   /* the bulk sender holds it: not completed until it lets go */
    bool bulk_sent; /* the bulk sender sent it (not: it had expired waiting) */
    bool failed;
    bool model_error; /* failed: a rank's model refused the inputs (not the group, not a timeout) */
    int64_t err_code;
    char err[512];
    ss_link_msg result; /* the last rank's RESULT */
    uint64_t dispatch_ns, deadline_ns;
    size_t link_bytes; /* input bytes on each rank's link (for the window, see may_dispatch) */
    /* merged batch inputs, their storage recycled with the job */
    ss_tensor inputs[SS_MAX_IO];
    int n_inputs;
    void *in_buf[SS_MAX_IO];
    size_t in_cap[SS_MAX_IO];
    /* a generative servable's model call (see gen.h): inputs and pool sequences from the token
     * loop; the probe's PREDICT is answered by every rank (answers_due), each with its pool */
    bool gen, gen_probe;
    int gen_ticket;
    ss_gen_call call;
    bool gen_placed; /* gen_place: where the last rank writes the logits (gen.h) */
    ss_link_place gen_place;
    int answers_due;
    /* the bulk sender's part (see to_bulk): what it sends on and how it went */
    ss_link_conn **bulk_conns;
    bool bulk_bcast;
    ss_status *bulk_st;
    struct job *bulk_next;
    struct job *next; /* in the in-flight list (also while the bulk sender holds it) */
} job;

typedef struct {
    ss_link_conn *conn;
    bool alive;
    int64_t pid;
    uint64_t last_seen_ns;
    uint32_t batch_size;
    bool shares_inputs;
    uint64_t comm_bytes;
    ss_link_spec *inputs, *outputs;
    size_t n_inputs, n_outputs;
    uint8_t feed[SS_MAX_IO]; /* its input k is the model's input feed[k] (see collect_inputs) */
    uint64_t kv_blocks;      /* its KV block pool, as its last RESULT said (0: none) */
    uint32_t kv_block_tokens;
    const ss_link_conn *counted_conn;
    uint64_t counted_sent, counted_recv;
} agent_slot;

/* Something for the loop, put in the inbox by another thread. */
typedef enum { IN_REGISTER, IN_REFRESH } inbox_kind;
typedef struct inbox_item {
    inbox_kind kind;
    ss_link_conn *conn; /* IN_REGISTER */
    ss_link_msg msg;
    struct inbox_item *next;
} inbox_item;

typedef struct handshake {
    pthread_t tid;
    ss_worker *w;
    ss_link_conn *conn;
    bool done, handed_over;
    struct handshake *next;
} handshake;

struct ss_worker {
    /* ---- fixed after ss_worker_set_add */
    ss_worker_set *set;
    ss_serving_entry *entry;
    ss_servable_config cfg;
    ss_rank_table table;
    uint64_t version;
    char version_str[24];
    ss_worker_options opt;
    char address[256];
    char *meta; /* the GET_META answer */
    ss_link_listener *listener;
    ss_link_options link_opt;
    int epfd, evfd;
    pthread_t loop_tid, bulk_tid;
    uint64_t slow_ns;
    int max_inflight;
    ss_metric_series *m_batch, *m_inflight;

    /* ---- the loop's state below is touched only by the thread holding role */
    pthread_mutex_t role;
    uint64_t spin_ns; /* how long the loop thread polls for an awaited reply before sleeping */
    uint64_t sleeps_until_ns; /* when the sleeping loop thread wakes at the latest, for kick_loop */

    /* ---- shared with other threads, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    req_state *in_head, *in_tail; /* submitted requests */
    inbox_item *items_head, *items_tail;
    handshake *handshakes;
    bool stop;          /* asked to stop */
    bool loop_done;     /* the loop has exited */
    uint64_t refreshed; /* metric refreshes done (collect waits for its own) */
    /* the loop's status for wait_ready */
    bool ready;
    int alive_count;
    char missing[1024];
    int lost_rank;          /* the last rank lost while loading (-1: none, or it came back) */
    char lost_loading[512]; /* ... and how, for the missing-ranks error */
    ss_status *fatal;
    /* the bulk sender's queue */
    job *bulk_head, *bulk_tail;
    job *bulk_done; /* sent, for the loop to take back */
    bool bulk_busy;

    atomic_size_t n_requests; /* accepted and not answered (max_enqueued) */

    /* ---- the loop's own (under role) */
    agent_slot *agents;
    bool is_ready, stopping;
    char not_ready_why[512];
    int batch;
    bool batch_dynamic, bcast;
    bool shaped_batches; /* a batched input has dynamic dims: a batch takes one shape */
    /* the model's inputs: rank 0's, then what later stages add (borrowed from agents[].inputs) */
    const ss_link_spec *model_in[SS_MAX_IO];
    size_t n_model_in;
    ss_wgen *gen;           /* a generative servable's token loop (NULL otherwise) */
    uint64_t gen_preempted; /* its engine's preemptions already counted in /metrics */
    uint64_t gen_logits_shared, gen_logits_link; /* ss_wgen_logits_calls already counted */
    int gen_inflight;                            /* token-loop calls in flight */
    /* while a step's tokens are sampled: what they give the front ends, delivered only after the
     * next step went out (gen_complete), so the agents do not wait on the streams' writes */
    bool gen_defer;
    struct gen_note *notes, **notes_tail;
    task *queue;
    size_t q_head, q_len, q_cap;
    job *inflight, *free_jobs;
    int n_inflight, n_free_jobs, n_bulk; /* n_bulk: jobs handed to the bulk sender, not back yet */
    size_t ahead_bytes;                  /* link_bytes of the jobs in flight */
    uint64_t next_job_id, hb_seq, next_hb_ns, batch_wait_until_ns;
    uint64_t accept_resume_ns, accept_logged_ns; /* listener paused out of descriptors */
    unsigned long accept_failures;               /* since the last line logged */
    ss_link_conn **dead_conns; /* shut down, closed once the bulk sender cannot hold them */
    size_t n_dead, cap_dead;
    ss_worker *next;
    ss_worker *next_model; /* the servable's next model (set once, before any thread runs) */
    bool owns_entry;       /* model 0: the registry entry and its pipeline are its */
    char model_label[160];
    char who[300];         /* the servable, and the model when it has several, for the log */
    char local_file[4096]; /* a local model's file ("" otherwise) */
};

struct ss_worker_set {
    pthread_mutex_t mu;
    ss_serving *serving;
    ss_worker *workers;
};

static _Thread_local const ss_worker *tl_loop_owner; /* the worker whose loop this thread holds */
#define ASSERT_ON_LOOP(w) assert(tl_loop_owner == (w))

static void hold_loop(ss_worker *w)
{
    pthread_mutex_lock(&w->role);
    tl_loop_owner = w;
}

static bool try_hold_loop(ss_worker *w)
{
    if (pthread_mutex_trylock(&w->role) != 0) return false;
    tl_loop_owner = w;
    return true;
}

static void release_loop(ss_worker *w)
{
    tl_loop_owner = NULL;
    pthread_mutex_unlock(&w->role);
}

static void ring(ss_worker *w)
{
    uint64_t one = 1;
    ssize_t n = write(w->evfd, &one, sizeof one);
    (void)n; /* EAGAIN: the counter is already non-zero, the loop will wake */
}

/* ------------------------------------------------------------------ metrics */

static struct {
    ss_metric_family *requests, *total, *queue, *compute, *batch, *inflight, *queued, *rank_up,
        *hb_age, *sent, *recv, *comm, *kv_blocks, *sequences, *preempted, *overlapped, *logits;
} fam;
static pthread_once_t fam_once = PTHREAD_ONCE_INIT;

static void fam_init(void)
{
    ss_metrics *m = ss_metrics_global();
    static const char *const rmo[] = {"servable", "version", "method", "outcome"};
    static const char *const sv[] = {"servable", "version"};
    static const char *const svr[] = {"servable", "version", "rank"};
    static const double batch_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
    fam.requests = ss_metrics_family(
        m, SS_METRIC_COUNTER, "shardserve_requests_total",
        "Predict requests answered, by outcome (ok, invalid_inputs, unavailable, error)", 4, rmo,
        NULL, 0);
    fam.total =
        ss_metrics_family(m, SS_METRIC_HISTOGRAM, "shardserve_request_duration_seconds",
                          "Time from the worker taking a request to its answer", 3, rmo, NULL, 0);
    fam.queue = ss_metrics_family(
        m, SS_METRIC_HISTOGRAM, "shardserve_request_queue_seconds",
        "Time a request's instances waited in the worker's queue before dispatch", 3, rmo, NULL, 0);
    fam.compute = ss_metrics_family(
        m, SS_METRIC_HISTOGRAM, "shardserve_request_compute_seconds",
        "Time from dispatching a request's batch to the agents until every rank answered", 3, rmo,
        NULL, 0);
    fam.batch =
        ss_metrics_family(m, SS_METRIC_HISTOGRAM, "shardserve_batch_size",
                          "Instances per batch dispatched to the agents", 2, sv, batch_buckets,
                          (int)(sizeof batch_buckets / sizeof *batch_buckets));
    fam.inflight = ss_metrics_family(m, SS_METRIC_GAUGE, "shardserve_inflight_requests",
                                     "Requests accepted and not answered yet", 2, sv, NULL, 0);
    fam.queued = ss_metrics_family(m, SS_METRIC_GAUGE, "shardserve_queued_instances",
                                   "Instances waiting in the worker's queue", 2, sv, NULL, 0);
    fam.rank_up = ss_metrics_family(m, SS_METRIC_GAUGE, "shardserve_rank_up",
                                    "1 while the rank's agent is registered and alive, else 0", 3,
                                    svr, NULL, 0);
    fam.hb_age =
        ss_metrics_family(m, SS_METRIC_GAUGE, "shardserve_rank_heartbeat_age_seconds",
                          "Seconds since the rank's agent was last heard from", 3, svr, NULL, 0);
    fam.sent = ss_metrics_family(m, SS_METRIC_COUNTER, "shardserve_link_sent_bytes_total",
                                 "Bytes the worker sent to the rank's agent over the link", 3, svr,
                                 NULL, 0);
    fam.recv = ss_metrics_family(m, SS_METRIC_COUNTER, "shardserve_link_received_bytes_total",
                                 "Bytes the worker received from the rank's agent over the link", 3,
                                 svr, NULL, 0);
    static const char *const svs[] = {"servable", "version", "state"};
    fam.kv_blocks = ss_metrics_family(
        m, SS_METRIC_GAUGE, "shardserve_kv_blocks",
        "A generative servable's KV cache blocks (the smallest rank's pool), used or free", 3, svs,
        NULL, 0);
    fam.sequences = ss_metrics_family(
        m, SS_METRIC_GAUGE, "shardserve_sequences",
        "A generative servable's sequences, running or waiting for blocks", 3, svs, NULL, 0);
    fam.preempted = ss_metrics_family(
        m, SS_METRIC_COUNTER, "shardserve_sequences_preempted_total",
        "Sequences whose KV blocks were taken back (computed again when they return)", 2, sv, NULL,
        0);
    fam.overlapped = ss_metrics_family(
        m, SS_METRIC_COUNTER, "shardserve_generate_overlapped_calls_total",
        "Token-loop model calls sent while another micro-batch's call was in flight (pipeline "
        "stages working on different sequences at once)",
        2, sv, NULL, 0);
    static const char *const svp[] = {"servable", "version", "path"};
    fam.logits = ss_metrics_family(
        m, SS_METRIC_COUNTER, "shardserve_generate_logits_calls_total",
        "Token-loop model calls by how their logits came back: \"shared\" (written by the last "
        "rank into the worker's shared memory, on one host) or \"link\" (sent as bytes)",
        3, svp, NULL, 0);
    fam.comm = ss_metrics_family(
        m, SS_METRIC_COUNTER, "shardserve_collective_bytes_total",
        "Payload bytes the rank's agent moved through collectives (allreduce, allgather, "
        "broadcast, send/recv), as of its last answer",
        3, svr, NULL, 0);
}

static const char *outcome_name(int64_t code)
{
    switch (code) {
    case SS_SERVING_SUCCESS:
        return "ok";
    case SS_SERVING_INVALID_INPUTS:
        return "invalid_inputs";
    case SS_SERVING_WORKER_UNAVAILABLE:
    case SS_SERVING_SERVABLE_UNAVAILABLE:
        return "unavailable";
    default:
        return "error";
    }
}

static ss_metric_series *rank_series(ss_worker *w, ss_metric_family *f, int rank)
{
    char rs[16];
    snprintf(rs, sizeof rs, "%d", rank);
    const char *v[] = {w->cfg.name, w->version_str, rs};
    return ss_metrics_series(f, v);
}

/* Bytes a rank's connection moved since the last call (connections are replaced on
 * re-registration; their counters start at 0). */
static void count_link_bytes(ss_worker *w, int rank)
{
    agent_slot *a = &w->agents[rank];
    if (!a->conn) return;
    uint64_t sent = 0, recv = 0;
    ss_link_conn_stats(a->conn, &sent, &recv);
    if (a->counted_conn != a->conn)
        a->counted_conn = a->conn, a->counted_sent = a->counted_recv = 0;
    if (sent > a->counted_sent)
        ss_metric_add(rank_series(w, fam.sent, rank), (double)(sent - a->counted_sent));
    if (recv > a->counted_recv)
        ss_metric_add(rank_series(w, fam.recv, rank), (double)(recv - a->counted_recv));
    a->counted_sent = sent;
    a->counted_recv = recv;
}

static void count_comm_bytes(ss_worker *w, int rank, uint64_t bytes)
{
    agent_slot *a = &w->agents[rank];
    if (bytes <= a->comm_bytes) return; /* cumulative per agent process; 0 again after a restart */
    ss_metric_add(rank_series(w, fam.comm, rank), (double)(bytes - a->comm_bytes));
    a->comm_bytes = bytes;
}

/* Scrape-time gauges, computed on the loop (IN_REFRESH). */
static void refresh_gen_metrics(ss_worker *w)
{
    ss_sched_stats s = ss_wgen_stats(w->gen);
    const char *used[] = {w->cfg.name, w->version_str, "used"};
    const char *free_[] = {w->cfg.name, w->version_str, "free"};
    const char *run[] = {w->cfg.name, w->version_str, "running"};
    const char *wait[] = {w->cfg.name, w->version_str, "waiting"};
    const char *v[] = {w->cfg.name, w->version_str};
    ss_metric_set(ss_metrics_series(fam.kv_blocks, used), s.blocks_used);
    ss_metric_set(ss_metrics_series(fam.kv_blocks, free_), s.blocks_free);
    ss_metric_set(ss_metrics_series(fam.sequences, run), s.running);
    ss_metric_set(ss_metrics_series(fam.sequences, wait), s.waiting);
    if (s.preempted > w->gen_preempted) /* a new engine (after a probe) starts from 0 */
        ss_metric_add(ss_metrics_series(fam.preempted, v),
                      (double)(s.preempted - w->gen_preempted));
    w->gen_preempted = s.preempted;
    uint64_t shared = 0, link = 0;
    ss_wgen_logits_calls(w->gen, &shared, &link);
    const char *sh[] = {w->cfg.name, w->version_str, "shared"};
    const char *ln[] = {w->cfg.name, w->version_str, "link"};
    ss_metric_add(ss_metrics_series(fam.logits, sh), (double)(shared - w->gen_logits_shared));
    ss_metric_add(ss_metrics_series(fam.logits, ln), (double)(link - w->gen_logits_link));
    w->gen_logits_shared = shared, w->gen_logits_link = link;
}

static void refresh_metrics(ss_worker *w)
{
    ASSERT_ON_LOOP(w);
    uint64_t now = ss_now_ns();
    for (int r = 0; r < w->cfg.rank_size; r++) {
        agent_slot *a = &w->agents[r];
        ss_metric_set(rank_series(w, fam.rank_up, r), a->alive ? 1 : 0);
        uint64_t age = a->last_seen_ns && now > a->last_seen_ns ? now - a->last_seen_ns : 0;
        ss_metric_set(rank_series(w, fam.hb_age, r), a->last_seen_ns ? (double)age / 1e9 : -1);
        count_link_bytes(w, r);
    }
    const char *v[] = {w->cfg.name, w->version_str};
    ss_metric_set(ss_metrics_series(fam.queued, v), (double)w->q_len);
    if (w->gen) refresh_gen_metrics(w);
}

/* The metrics scrape asks the loop and waits (bounded) for the answer. */
static void collect(void *ctx)
{
    ss_worker *w = ctx;
    inbox_item *it = calloc(1, sizeof *it);
    if (!it) return;
    it->kind = IN_REFRESH;
    pthread_mutex_lock(&w->mu);
    if (w->loop_done) {
        pthread_mutex_unlock(&w->mu);
        free(it);
        return;
    }
    uint64_t want = w->refreshed + 1;
    if (w->items_tail)
        w->items_tail->next = it;
    else
        w->items_head = it;
    w->items_tail = it;
    ring(w);
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_nsec += 500 * 1000000L;
    if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    while (w->refreshed < want && !w->loop_done &&
           pthread_cond_timedwait(&w->cv, &w->mu, &dl) != ETIMEDOUT) {
    }
    pthread_mutex_unlock(&w->mu);
}

/* ------------------------------------------------------------------ answering */

static void req_answer(ss_worker *w, req_state *rs)
{
    uint64_t total = ss_now_ns() - rs->t0_ns;
    /* requests and their durations are counted by the registry (count_answered), per front-end
     * method: a composed servable's model calls reach the worker as internal methods */
    const char *v[] = {w->cfg.name, w->version_str, rs->method->name, outcome_name(rs->worst)};
    if (rs->job_id) {
        ss_metric_observe(ss_metrics_series(fam.queue, v), (double)rs->queue_ns / 1e9);
        ss_metric_observe(ss_metrics_series(fam.compute, v), (double)rs->compute_ns / 1e9);
    }
    ss_metric_add(w->m_inflight, -1);
    if (total >= w->slow_ns)
        SS_INFO("servable %s: slow request: method %s, %zu instances, %.3f ms total (queue %.3f "
                "ms, compute %.3f "
                "ms, batch %d, request_id %llu), outcome %s",
                w->who, rs->method->name, rs->req->count, (double)total / 1e6,
                (double)rs->queue_ns / 1e6, (double)rs->compute_ns / 1e6, rs->batch,
                (unsigned long long)rs->job_id, outcome_name(rs->worst));
    ss_predict_reply_collapse(rs->reply);
    atomic_fetch_sub(&w->n_requests, 1);
    rs->done(rs->done_ctx, rs->reply);
    free(rs);
}

static void req_finish_instance(ss_worker *w, req_state *rs, size_t inst, const char *fail_msg,
                                int64_t code, const char *input)
{
    if (fail_msg)
        ss_status_free(ss_predict_reply_fail_instance(rs->reply, inst, code, "%s", fail_msg));
    if (fail_msg && input) ss_predict_reply_blame_input(rs->reply, inst, input);
    if (fail_msg && !rs->worst) rs->worst = code ? code : SS_SERVING_FAILED;
    if (--rs->remaining == 0) req_answer(w, rs);
}

/* ------------------------------------------------------------------ jobs */

static void job_free(job *j)
{
    ss_link_msg_free(&j->result);
    for (int i = 0; i < SS_MAX_IO; i++)
        free(j->in_buf[i]);
    free(j->bulk_conns);
    free(j->tasks);
    free(j);
}

/* Finished jobs are kept (with their task array and input buffers) so a warm worker allocates
 * nothing per batch. */
static void job_recycle(ss_worker *w, job *j)
{
    ss_link_msg_free(&j->result);
    memset(&j->result, 0, sizeof j->result);
    if (w->n_free_jobs >= 2 * w->max_inflight + 2) {
        job_free(j);
        return;
    }
    j->next = w->free_jobs;
    w->free_jobs = j;
    w->n_free_jobs++;
}

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
    j->id = 0;
    j->n_tasks = j->n_inputs = 0;
    j->answered = j->in_bulk = j->failed = j->model_error = false;
    j->gen = j->gen_probe = false;
    j->answers_due = 1;
    j->err_code = 0;
    j->err[0] = 0;
    j->next = NULL;
    return j;
}

static void job_fail(job *j, int64_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void job_fail(job *j, int64_t code, const char *fmt, ...)
{
    if (!j->failed) {
        j->failed = true;
        j->err_code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(j->err, sizeof j->err, fmt, ap);
        va_end(ap);
    }
    j->answered = true;
}

/* The smallest KV block pool over the ranks (what the token loop may use), and its block size
 * (0 when the ranks disagree: no pool it can mirror). */
static int64_t pool_blocks(const ss_worker *w, int32_t *tokens)
{
    int64_t least = INT64_MAX;
    *tokens = (int32_t)w->agents[0].kv_block_tokens;
    for (int r = 0; r < w->cfg.rank_size; r++) {
        const agent_slot *a = &w->agents[r];
        if ((int64_t)a->kv_blocks < least) least = (int64_t)a->kv_blocks;
        if ((int32_t)a->kv_block_tokens != *tokens) *tokens = 0;
    }
    return least;
}

/* What a step gave one instance, held while gen_defer: new tokens, or its end. */
struct gen_note {
    struct gen_note *next;
    req_state *request;
    size_t inst;
    bool finished;
    int64_t code;      /* finished with an error: its serving code (0: a system error) */
    char *error;       /* finished: NULL when it ended well */
    const char *input; /* finished with an error about this request input (gen.h's finish: a
                          literal or a config name, both outliving the note, so not copied) */
    int n;
    size_t len;
    char *text;
    int64_t tokens[]; /* n, then the text's len bytes (text points there) */
};

static void gen_dispatch(ss_worker *w);
static void gen_deliver(ss_worker *w, struct gen_note *n);

/* The notes held so far, in order. */
static void gen_notes_flush(ss_worker *w)
{
    while (w->notes) {
        struct gen_note *n = w->notes;
        w->notes = n->next;
        gen_deliver(w, n);
    }
    w->notes_tail = &w->notes;
}

/* A token-loop call came back: its logits (or error) to the loop, which samples the next tokens;
 * the next step goes to the agents before the front ends get the tokens (gen_defer). */
static void gen_complete(ss_worker *w, job *j)
{
    w->gen_inflight--;
    int32_t tokens = 0;
    int64_t blocks = j->gen_probe && !j->failed ? pool_blocks(w, &tokens) : 0;
    const ss_tensor *logits = j->result.n_tensors ? &j->result.tensors[0] : NULL;
    w->gen_defer = true; /* also over the dispatch: a call it fails at once notes its ends too */
    ss_wgen_done(w->gen, j->gen_ticket, j->failed ? NULL : logits, j->failed ? j->err : NULL,
                 j->model_error, blocks, tokens);
    gen_dispatch(w);
    w->gen_defer = false;
    gen_notes_flush(w);
}

static bool queue_reserve(ss_worker *w, size_t extra);

/* A batch of several instances that the model refused goes back to the head of the queue, each
 * instance to run alone: one client's bad input (an index out of range) then fails only its own
 * instance, and the others get their answers, not an error quoting another client's values.
 * False when the queue cannot grow (then the batch fails as a whole). */
static bool requeue_alone(ss_worker *w, job *j)
{
    if (!j->model_error || j->n_tasks < 2 || w->stopping || !queue_reserve(w, (size_t)j->n_tasks))
        return false;
    SS_INFO("servable %s: request_id %llu: the model refused a batch of %d instances (%s); "
            "running each alone",
            w->who, (unsigned long long)j->id, j->n_tasks, j->err);
    for (int t = j->n_tasks - 1; t >= 0; t--) {
        w->q_head = (w->q_head + w->q_cap - 1) % w->q_cap;
        w->queue[w->q_head] = j->tasks[t];
        w->queue[w->q_head].solo = true;
        w->q_len++;
    }
    j->n_tasks = 0;
    return true;
}

/* Put the last rank's outputs (or the job's error) into its requests' replies. */
static void job_complete(ss_worker *w, job *j)
{
    if (j->gen) {
        gen_complete(w, j);
        return;
    }
    if (j->failed && requeue_alone(w, j)) return;
    uint64_t now = ss_now_ns();
    if (now - j->dispatch_ns >= w->slow_ns)
        SS_INFO("servable %s: slow batch: request_id %llu, %d instances, %.3f ms from dispatch to "
                "the last rank's "
                "answer%s",
                w->who, (unsigned long long)j->id, j->n_tasks, (double)(now - j->dispatch_ns) / 1e6,
                j->failed ? " (failed)" : "");
    bool whole = !w->cfg.with_batch_dim;
    for (int t = 0; t < j->n_tasks; t++) {
        req_state *rs = j->tasks[t].rs;
        size_t inst = j->tasks[t].inst;
        rs->job_id = j->id;
        rs->batch = j->n_tasks;
        rs->queue_ns = j->dispatch_ns - rs->t0_ns;
        rs->compute_ns = now - j->dispatch_ns;
        if (j->failed) {
            req_finish_instance(w, rs, inst, j->err, j->err_code, NULL);
            continue;
        }
        ss_serving_instance *out = &rs->reply->instances[inst];
        ss_status *st = NULL;
        if (j->result.n_tensors < (size_t)rs->method->n_outputs)
            st = ss_errf(SS_ERR_INTERNAL,
                         "the last rank returned %zu outputs, method '%s' declares %d",
                         j->result.n_tensors, rs->method->name, rs->method->n_outputs);
        for (int k = 0; !st && k < rs->method->n_outputs; k++) {
            ss_tensor piece, *res = &j->result.tensors[k];
            /* the batch's only instance owns every row: move the tensor, no copy (also one in
             * shared memory: the request's own place, held by the front end; see job_places) */
            if (j->n_tasks == 1 && (whole || res->ndim == 0 || res->dims[0] == 1)) {
                piece = *res;
                memset(res, 0, sizeof *res);
                if (!whole && piece.ndim > 0) {
                    for (int d = 1; d < piece.ndim; d++)
                        piece.dims[d - 1] = piece.dims[d];
                    piece.ndim--;
                }
            } else {
                st = ss_batch_slice(res, j->n_tasks, t, whole, &piece);
                if (st) break;
            }
            st = ss_serving_instance_put(out, rs->method->outputs[k], &piece, false);
            if (st) ss_tensor_free(&piece);
        }
        if (st) {
            req_finish_instance(w, rs, inst, st->msg, SS_SERVING_SYSTEM_ERROR, NULL);
            ss_status_free(st);
        } else {
            req_finish_instance(w, rs, inst, NULL, 0, NULL);
        }
    }
    j->n_tasks = 0;
}

/* Answer the jobs that are finished and not held by the bulk sender. */
static void reap_jobs(ss_worker *w)
{
    ASSERT_ON_LOOP(w);
    for (job **pp = &w->inflight; *pp;) {
        job *j = *pp;
        if (!j->answered || j->in_bulk) {
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        w->n_inflight--;
        w->ahead_bytes -= j->link_bytes;
        job_complete(w, j);
        job_recycle(w, j);
    }
}

/* Fail every queued and in-flight instance. */
static void fail_everything(ss_worker *w, int64_t code, const char *msg)
{
    ASSERT_ON_LOOP(w);
    if (w->gen) ss_wgen_lost(w->gen, msg); /* the agents' pools go with them */
    while (w->q_len) {
        task t = w->queue[w->q_head];
        w->q_head = (w->q_head + 1) % w->q_cap;
        w->q_len--;
        req_finish_instance(w, t.rs, t.inst, msg, code, NULL);
    }
    for (job *j = w->inflight; j; j = j->next)
        job_fail(j, code, "%s", msg);
    reap_jobs(w);
}

/* ------------------------------------------------------------------ readiness */

static void set_status(ss_worker *w)
{
    int alive = 0;
    char missing[1024] = "";
    size_t off = 0;
    for (int r = 0; r < w->cfg.rank_size; r++) {
        if (w->agents[r].alive)
            alive++;
        else if (off < sizeof missing - 16)
            off +=
                (size_t)snprintf(missing + off, sizeof missing - off, "%s%d", off ? ", " : "", r);
    }
    pthread_mutex_lock(&w->mu);
    if (w->lost_rank >= 0 && w->lost_rank < w->cfg.rank_size && w->agents[w->lost_rank].alive)
        w->lost_rank = -1;
    w->ready = w->is_ready;
    w->alive_count = alive;
    memcpy(w->missing, missing, sizeof missing);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void close_later(ss_worker *w, ss_link_conn *c)
{
    ss_link_shutdown(c);
    if (w->n_dead == w->cap_dead) {
        size_t nc = w->cap_dead ? 2 * w->cap_dead : 8;
        ss_link_conn **p = realloc(w->dead_conns, nc * sizeof *p);
        if (!p) return; /* leaks one descriptor rather than closing one the sender may use */
        w->dead_conns = p;
        w->cap_dead = nc;
    }
    w->dead_conns[w->n_dead++] = c;
}

static void drop_conn(ss_worker *w, int rank)
{
    agent_slot *a = &w->agents[rank];
    if (!a->conn) return;
    count_link_bytes(w, rank); /* the connection's last bytes, before it is forgotten */
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, ss_link_conn_fd(a->conn), NULL);
    close_later(w, a->conn);
    a->conn = NULL;
}

static void rank_gone(ss_worker *w, int rank, const char *why)
{
    ASSERT_ON_LOOP(w);
    agent_slot *a = &w->agents[rank];
    if (!a->alive) return;
    a->alive = false;
    /* Shutting down: every rank gets its own EXIT; an agent that leaves first must not cut the
     * others' links before theirs arrives (they would take it for a lost worker). */
    if (w->stopping) {
        drop_conn(w, rank);
        set_status(w);
        return;
    }
    w->is_ready = false;
    snprintf(w->not_ready_why, sizeof w->not_ready_why, "rank %d (pid %lld) is gone: %s", rank,
             (long long)a->pid, why);
    SS_ERROR("servable %s: %s", w->who, w->not_ready_why);
    ss_serving_withdraw_model(w->entry, (size_t)w->cfg.model, w->not_ready_why);
    char msg[700];
    snprintf(msg, sizeof msg, "Servable stopped: worker unavailable, %s", w->not_ready_why);
    fail_everything(w, SS_SERVING_WORKER_UNAVAILABLE, msg);
    drop_conn(w, rank);
    /* A tensor-parallel group is only useful whole and its communicator is broken now: release
     * the other ranks too. They see the link close, exit as "lost the worker", and their launcher
     * starts the group again, whose ranks register afresh. */
    for (int r = 0; r < w->cfg.rank_size; r++) {
        if (r == rank || !w->agents[r].alive) continue;
        w->agents[r].alive = false;
        drop_conn(w, r);
    }
    set_status(w);
}

/* ------------------------------------------------------------------ registration */

static bool spec_equal(const ss_link_spec *a, size_t na, const ss_link_spec *b, size_t nb)
{
    if (na != nb) return false;
    for (size_t i = 0; i < na; i++)
        if (a[i].dtype != b[i].dtype || !ss_shape_equal(a[i].ndim, a[i].dims, b[i].ndim, b[i].dims))
            return false;
    return true;
}

/* Whether method input k is fed with a batch dim: one home for the rule. */
static bool input_batched(const ss_servable_config *cfg, const ss_method_config *mc, int k,
                          const ss_link_spec *sp)
{
    if (!cfg->with_batch_dim || sp->ndim == 0) return false;
    for (int b = 0; b < cfg->n_no_batch; b++)
        if (!strcmp(cfg->without_batch_dim_inputs[b], mc->inputs[k])) return false;
    return true;
}

/* A batch of every input must fit one link frame: the agents' shapes are numbers from another
 * process, multiplied here, so the product is checked before any buffer is sized by it. */
static ss_status *check_batch_bytes(const ss_worker *w)
{
    const uint64_t limit = w->link_opt.max_frame_bytes;
    for (size_t k = 0; k < w->n_model_in; k++) {
        const ss_link_spec *sp = w->model_in[k];
        uint64_t bytes = ss_dtype_size(sp->dtype);
        for (int d = 0; d < sp->ndim; d++) {
            uint64_t dim = d == 0 && sp->dims[0] < 0
                               ? (uint64_t)w->batch
                               : (uint64_t)(sp->dims[d] > 0 ? sp->dims[d] : 0);
            if (dim && bytes > limit / dim)
                bytes = limit + 1;
            else
                bytes *= dim;
        }
        if (bytes > limit)
            return ss_errf(
                SS_ERR_LIMIT,
                "model input %zu '%s' takes more than %llu bytes per batch of %d (the link's "
                "frame limit)",
                k, sp->name ? sp->name : "", (unsigned long long)limit, w->batch);
    }
    return NULL;
}

/* The model's inputs, mapped from every rank's: the ranks of stage 0 declare the same ones
 * (positionally, as MindSpore's agents do); a later stage may declare graph inputs too (its
 * layers read them, or its shapes follow them), matched by name: one already declared must agree
 * in type and shape, a new one is appended. */
static ss_status *collect_inputs(ss_worker *w)
{
    int n = w->cfg.rank_size, per_stage = n / w->cfg.stage_size;
    const agent_slot *r0 = &w->agents[0];
    w->n_model_in = 0;
    for (int r = 0; r < n; r++) {
        agent_slot *a = &w->agents[r];
        if (r < per_stage && !spec_equal(a->inputs, a->n_inputs, r0->inputs, r0->n_inputs))
            return ss_errf(SS_ERR_INVALID, "rank %d declares inputs that differ from rank 0's", r);
        for (size_t k = 0; k < a->n_inputs; k++) {
            const ss_link_spec *sp = &a->inputs[k];
            size_t m = r < per_stage ? k : 0;
            if (r >= per_stage && !sp->name[0])
                return ss_errf(SS_ERR_INVALID, "rank %d declares an unnamed input %zu", r, k);
            while (r >= per_stage && m < w->n_model_in && strcmp(w->model_in[m]->name, sp->name))
                m++;
            if (m == w->n_model_in) {
                if (m == SS_MAX_IO)
                    return ss_errf(SS_ERR_LIMIT, "the model has more than %d inputs", SS_MAX_IO);
                w->model_in[w->n_model_in++] = sp;
            } else if (r >= per_stage && !spec_equal(sp, 1, w->model_in[m], 1)) {
                return ss_errf(SS_ERR_INVALID,
                               "rank %d declares input '%s' with another type or shape than an "
                               "earlier rank",
                               r, sp->name);
            }
            a->feed[k] = (uint8_t)m;
        }
    }
    return NULL;
}

/* A generative servable's model is fed by the token loop: input_ids, position_ids and seq_ids
 * (int64), a `shard --kv-pool` model's inputs, and logit_rows (int64) where it takes it. */
static ss_status *check_gen_model(const ss_worker *w)
{
    static const char *const want[] = {"input_ids", "position_ids", "seq_ids", "logit_rows"};
    size_t found = 0, rows = 0;
    for (size_t i = 0; i < w->n_model_in; i++)
        for (size_t k = 0; k < 4; k++)
            if (!strcmp(w->model_in[i]->name, want[k]) && w->model_in[i]->dtype == SS_DT_INT64)
                k < 3 ? found++ : rows++;
    if (found != 3 || w->n_model_in != 3 + rows)
        return ss_errf(SS_ERR_INVALID,
                       "servable %s generates: its model must take input_ids, position_ids and "
                       "seq_ids (int64) and may take logit_rows, as `shardserve shard --kv-pool` "
                       "makes it; this one takes %zu inputs, the first '%s'",
                       w->cfg.name, w->n_model_in, w->n_model_in ? w->model_in[0]->name : "");
    return NULL;
}

/* A subgraph that only Model.call reaches has no names in the servable: the model's own. */
static void adopt_model_names(const ss_worker *w, ss_method_config *mc)
{
    const agent_slot *last = &w->agents[w->cfg.rank_size - 1];
    for (size_t k = 0; k < w->n_model_in && k < SS_MAX_IO; k++)
        snprintf(mc->inputs[mc->n_inputs++], sizeof mc->inputs[0], "%s",
                 w->model_in[k]->name[0] ? w->model_in[k]->name : "input");
    for (size_t k = 0; k < last->n_outputs && k < SS_MAX_IO; k++)
        snprintf(mc->outputs[mc->n_outputs++], sizeof mc->outputs[0], "%s",
                 last->outputs[k].name[0] ? last->outputs[k].name : "output");
}

/* MindSpore's CheckAgentsInfosAndInitTensorInfos, once every rank is there. */
static ss_status *check_agents(ss_worker *w)
{
    int n = w->cfg.rank_size, per_stage = n / w->cfg.stage_size;
    agent_slot *r0 = &w->agents[0], *last = &w->agents[n - 1];
    if (!r0->n_inputs) return ss_errf(SS_ERR_INVALID, "rank 0 declares no inputs");
    if (!last->n_outputs)
        return ss_errf(SS_ERR_INVALID, "rank %d (the last) declares no outputs", n - 1);
    if (last->n_outputs > SS_MAX_IO)
        return ss_errf(SS_ERR_LIMIT, "the model has %zu outputs; at most %d are served",
                       last->n_outputs, SS_MAX_IO);
    ss_status *st = collect_inputs(w);
    if (st) return st;
    for (int r = 1; r < n; r++) {
        agent_slot *a = &w->agents[r];
        int first = r / per_stage * per_stage;
        if (!spec_equal(a->outputs, a->n_outputs, w->agents[first].outputs,
                        w->agents[first].n_outputs))
            return ss_errf(SS_ERR_INVALID, "rank %d declares outputs that differ from rank %d's", r,
                           first);
        if (a->batch_size && a->batch_size != r0->batch_size)
            return ss_errf(SS_ERR_INVALID, "rank %d has batch size %u, rank 0 has %u", r,
                           a->batch_size, r0->batch_size);
    }
    w->shaped_batches = false;
    if (w->gen) return check_gen_model(w); /* its methods' inputs are a request's parameters */
    for (int m = 0; m < w->cfg.n_methods; m++) {
        ss_method_config *mc = &w->cfg.methods[m];
        if (!mc->n_inputs && !mc->n_outputs) adopt_model_names(w, mc);
        if ((size_t)mc->n_inputs != w->n_model_in)
            return ss_errf(
                SS_ERR_INVALID,
                "The inputs count %d in method '%s' not equal to the count %zu defined in model",
                mc->n_inputs, mc->name, w->n_model_in);
        if ((size_t)mc->n_outputs != last->n_outputs)
            return ss_errf(
                SS_ERR_INVALID,
                "The outputs count %d in method '%s' not equal to the count %zu defined in model",
                mc->n_outputs, mc->name, last->n_outputs);
        for (int k = 0; k < mc->n_inputs; k++) {
            const ss_link_spec *sp = w->model_in[k];
            if (sp->dtype == SS_DT_STRING && input_batched(&w->cfg, mc, k, sp))
                return ss_errf(SS_ERR_UNSUPPORTED,
                               "method '%s' input '%s' is a string tensor with a batch dim: string "
                               "inputs are not batched; list it in without_batch_dim_inputs or "
                               "set with_batch_dim false",
                               mc->name, mc->inputs[k]);
            for (int d = 1; input_batched(&w->cfg, mc, k, sp) && d < sp->ndim; d++)
                w->shaped_batches = w->shaped_batches || sp->dims[d] < 0;
        }
    }
    w->bcast = w->cfg.broadcast_inputs && per_stage > 1;
    for (int r = 0; r < per_stage; r++)
        w->bcast = w->bcast && w->agents[r].shares_inputs;
    w->batch_dynamic = w->cfg.with_batch_dim && r0->inputs[0].ndim > 0 && r0->inputs[0].dims[0] < 0;
    w->batch = ss_batch_size(w->cfg.with_batch_dim, w->batch_dynamic, (int)r0->batch_size,
                             w->cfg.max_batch_size);
    return check_batch_bytes(w);
}

static void spec_to_serving(const ss_link_spec *sp, const char *name, bool batched,
                            ss_serving_tensor_spec *out)
{
    out->name = (char *)name;
    out->dtype = sp->dtype;
    out->batched = batched;
    out->ndim = batched ? sp->ndim - 1 : sp->ndim;
    for (int d = 0; d < out->ndim; d++)
        out->dims[d] = sp->dims[d + (batched ? 1 : 0)];
}

/* A generate method's parameters: any numeric type (JSON gives int32 and float32, gRPC clients
 * int64 and float64; gen.c checks them); prompt and stop_token_ids are lists, stop strings.
 * Outputs: tokens int64 [n], finish_reason and text strings. */
static ss_serving_tensor_spec gen_spec(const char *name, bool output)
{
    bool stop = !strcmp(name, "stop");
    bool list = stop || !strcmp(name, "prompt") || !strcmp(name, "stop_token_ids") ||
                !strcmp(name, "tokens");
    ss_serving_tensor_spec sp = {.name = (char *)name, .ndim = list ? 1 : 0, .dims = {-1}};
    sp.dtype = stop ? SS_DT_STRING : !output ? SS_DT_UNDEFINED : list ? SS_DT_INT64 : SS_DT_STRING;
    return sp;
}

/* The signature clients see: the model's inputs and the last rank's outputs under the method's
 * names, per-instance shapes where batched (a generate method: its parameters and tokens). */
static ss_status *publish(ss_worker *w)
{
    const agent_slot *last = &w->agents[w->cfg.rank_size - 1];
    ss_serving_method methods[16];
    ss_serving_tensor_spec ins[16][SS_MAX_IO], outs[16][SS_MAX_IO];
    for (int m = 0; m < w->cfg.n_methods; m++) {
        const ss_method_config *mc = &w->cfg.methods[m];
        for (int k = 0; w->gen && k < mc->n_inputs; k++)
            ins[m][k] = gen_spec(mc->inputs[k], false);
        for (int k = 0; w->gen && k < mc->n_outputs; k++)
            outs[m][k] = gen_spec(mc->outputs[k], true);
        for (int k = 0; !w->gen && k < mc->n_inputs; k++)
            spec_to_serving(w->model_in[k], mc->inputs[k],
                            input_batched(&w->cfg, mc, k, w->model_in[k]), &ins[m][k]);
        for (int k = 0; !w->gen && k < mc->n_outputs; k++)
            spec_to_serving(&last->outputs[k], mc->outputs[k],
                            w->cfg.with_batch_dim && last->outputs[k].ndim > 0, &outs[m][k]);
        methods[m] = (ss_serving_method){(char *)mc->name, ins[m], outs[m], (size_t)mc->n_inputs,
                                         (size_t)mc->n_outputs};
    }
    ss_serving_signature sig = {.servable = w->cfg.name,
                                .version = w->version,
                                .methods = methods,
                                .n_methods = (size_t)w->cfg.n_methods,
                                .batch_size = w->batch,
                                .with_batch_dim = w->cfg.with_batch_dim,
                                .rank_size = w->cfg.rank_size,
                                .stage_size = w->cfg.stage_size,
                                .max_context = w->gen ? w->cfg.gen.max_context : 0};
    return ss_serving_publish_model(w->entry, (size_t)w->cfg.model, &sig);
}

static void copy_specs(ss_link_spec **dst, size_t *n, const ss_link_spec *src, size_t count)
{
    for (size_t i = 0; i < *n; i++)
        free((*dst)[i].name);
    free(*dst);
    *dst = count ? calloc(count, sizeof **dst) : NULL;
    *n = *dst ? count : 0;
    for (size_t i = 0; i < *n; i++) {
        (*dst)[i] = src[i];
        (*dst)[i].name = strdup(src[i].name ? src[i].name : "");
    }
}

/* NULL when accepted, else the reason (in why). */
static const char *register_agent(ss_worker *w, const ss_link_msg *m, ss_link_conn *c, char *why,
                                  size_t cap)
{
    if (w->stopping) return "the worker is stopping";
    if (m->rank_size != (uint32_t)w->cfg.rank_size ||
        m->stage_size != (uint32_t)w->cfg.stage_size) {
        snprintf(why, cap,
                 "agent is for rank_size %u / stage_size %u, servable %s declares %d / %d",
                 m->rank_size, m->stage_size, w->cfg.name, w->cfg.rank_size, w->cfg.stage_size);
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
    copy_specs(&a->inputs, &a->n_inputs, m->inputs, m->n_inputs);
    copy_specs(&a->outputs, &a->n_outputs, m->outputs, m->n_outputs);
    if (a->n_inputs != m->n_inputs || a->n_outputs != m->n_outputs) {
        snprintf(why, cap, "out of memory registering rank %u", m->rank);
        return why;
    }
    if (a->conn) drop_conn(w, (int)m->rank);
    a->conn = c;
    a->alive = true;
    a->pid = m->pid;
    a->batch_size = m->batch_size;
    a->shares_inputs = m->shares_inputs;
    a->comm_bytes = 0;
    a->last_seen_ns = ss_now_ns();
    return NULL;
}

/* Every rank is there: check them and go ready (or record why they cannot serve). */
static void maybe_ready(ss_worker *w)
{
    for (int r = 0; r < w->cfg.rank_size; r++)
        if (!w->agents[r].alive) return;
    ss_status *st = check_agents(w);
    if (!st) st = publish(w);
    if (st) {
        SS_ERROR("servable %s: %s", w->who, st->msg);
        ss_serving_withdraw_model(w->entry, (size_t)w->cfg.model, st->msg);
        pthread_mutex_lock(&w->mu);
        ss_status_free(w->fatal);
        w->fatal = st;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        return;
    }
    w->is_ready = true;
    w->not_ready_why[0] = 0;
    SS_INFO("servable %s version %llu: all %d ranks registered, ready (batch %d%s%s)", w->who,
            (unsigned long long)w->version, w->cfg.rank_size, w->batch,
            w->batch_dynamic ? ", dynamic" : "",
            w->bcast ? ", inputs by the stage root's broadcast" : "");
}

static void on_register(ss_worker *w, ss_link_conn *c, ss_link_msg *m)
{
    char why[512];
    const char *reject = register_agent(w, m, c, why, sizeof why);
    ss_link_msg ack = {.type = SS_LINK_REGISTER_ACK,
                       .accepted = !reject,
                       .message = (char *)(reject ? reject : ""),
                       .kv_cache_bytes = (uint64_t)(w->cfg.gen.kv_cache_mb * (1 << 20))};
    ss_status *st = ss_link_send(c, &ack, NULL, 0);
    if (reject) {
        SS_WARN("servable %s: rejected registration of rank %u: %s", w->who, m->rank, reject);
        close_later(w, c);
    } else if (st) {
        rank_gone(w, (int)m->rank, st->msg);
    } else {
        SS_INFO("servable %s: rank %u registered (pid %lld, from %s)", w->who, m->rank,
                (long long)m->pid, m->address ? m->address : ss_link_conn_peer(c));
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = TAG_RANK0 + m->rank};
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, ss_link_conn_fd(c), &ev) != 0)
            rank_gone(w, (int)m->rank, "cannot watch its connection (epoll_ctl failed)");
        else
            maybe_ready(w);
    }
    ss_status_free(st);
    set_status(w);
}

/* The servable's identity and layout for the launchers (GET_META). */
static char *meta_json(const ss_worker *w)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "servable", w->cfg.name);
    cJSON_AddNumberToObject(root, "version", (double)w->version);
    cJSON_AddNumberToObject(root, "rank_size", w->cfg.rank_size);
    cJSON_AddNumberToObject(root, "stage_size", w->cfg.stage_size);
    cJSON_AddBoolToObject(root, "with_batch_dim", w->cfg.with_batch_dim);
    /* the launchers bound a silent local agent by the same time the worker does */
    cJSON_AddNumberToObject(root, "heartbeat_timeout_ms", w->opt.heartbeat_timeout_ms);
    cJSON *nb = cJSON_AddArrayToObject(root, "without_batch_dim_inputs");
    for (int i = 0; i < w->cfg.n_no_batch; i++)
        cJSON_AddItemToArray(nb, cJSON_CreateString(w->cfg.without_batch_dim_inputs[i]));
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

/* LOADING: an agent connected before loading its shard, the moment it is most likely to be
 * OOM-killed. Waits for its REGISTER (true, in *m); a connection that closes first, or an EXIT
 * carrying the load's error, names the rank now and in the missing-ranks error. */
static bool await_registration(ss_worker *w, ss_link_conn *c, ss_link_msg *m)
{
    char who[192];
    snprintf(who, sizeof who, "rank %u (pid %d at %s)", m->rank, (int)m->pid, ss_link_conn_peer(c));
    int rank = m->rank < (uint32_t)w->cfg.rank_size ? (int)m->rank : -1;
    SS_INFO("servable %s: %s connected; loading its shard", w->cfg.name, who);
    uint64_t t0 = ss_now_ns();
    ss_link_msg_free(m);
    memset(m, 0, sizeof *m);
    /* as long as serve waits for agents; a stopping worker shuts the connection down */
    int wait_ms = w->opt.wait_agents_s > 0 ? w->opt.wait_agents_s * 1000 : 24 * 3600 * 1000;
    ss_status *st = ss_link_recv(c, wait_ms, m);
    if (!st && m->type == SS_LINK_REGISTER) return true;
    char why[320];
    if (st)
        snprintf(why, sizeof why,
                 "was lost while loading its shard, %.1f s after it connected (%s; killed, or out "
                 "of memory?)",
                 (double)(ss_now_ns() - t0) / 1e9, st->msg);
    else if (m->type == SS_LINK_EXIT)
        snprintf(why, sizeof why, "failed to load its shard: %s", m->message ? m->message : "");
    else
        snprintf(why, sizeof why, "sent %s while loading; dropped", ss_link_type_name(m->type));
    ss_status_free(st);
    SS_WARN("servable %s: %s %s", w->cfg.name, who, why);
    pthread_mutex_lock(&w->mu);
    if (rank >= 0) {
        w->lost_rank = rank;
        snprintf(w->lost_loading, sizeof w->lost_loading, "%s %s", who, why);
    }
    pthread_mutex_unlock(&w->mu);
    return false;
}

/* A new connection's own thread: the handshake and the first frame may take seconds (a slow or
 * hostile peer), so they never run on the loop. */
static void *handshake_main(void *arg)
{
    handshake *h = arg;
    ss_worker *w = h->w;
    pthread_setname_np(pthread_self(), "ss-handshake");
    ss_link_conn *c = h->conn;
    ss_link_msg m = {0};
    ss_status *st = ss_link_handshake(c);
    if (!st) st = ss_link_recv(c, HANDSHAKE_FIRST_FRAME_MS, &m);
    bool hand_over = false;
    if (st) {
        SS_WARN("distributed address %s: dropped connection from %s: %s", w->address,
                ss_link_conn_peer(c), st->msg);
        ss_status_free(st);
    } else if (m.type == SS_LINK_GET_META) {
        ss_link_msg reply = {.type = SS_LINK_META, .json = w->meta};
        ss_status_free(ss_link_send(c, &reply, NULL, 0));
    } else if (m.type == SS_LINK_REGISTER) {
        hand_over = true;
    } else if (m.type == SS_LINK_LOADING) {
        hand_over = await_registration(w, c, &m);
    } else {
        SS_WARN("distributed address %s: %s sent %s before registering; dropped", w->address,
                ss_link_conn_peer(c), ss_link_type_name(m.type));
    }
    inbox_item *it = hand_over ? calloc(1, sizeof *it) : NULL;
    pthread_mutex_lock(&w->mu);
    if (it && !w->stop) {
        it->kind = IN_REGISTER;
        it->conn = c;
        it->msg = m;
        memset(&m, 0, sizeof m);
        if (w->items_tail)
            w->items_tail->next = it;
        else
            w->items_head = it;
        w->items_tail = it;
        h->handed_over = true;
        ring(w);
    } else {
        free(it);
    }
    h->done = true;
    pthread_mutex_unlock(&w->mu);
    ss_link_msg_free(&m);
    return NULL;
}

/* Join finished handshake threads; close the connections they did not hand over. */
static void reap_handshakes(ss_worker *w, bool all)
{
    for (;;) {
        handshake *h = NULL;
        pthread_mutex_lock(&w->mu);
        for (handshake **pp = &w->handshakes; *pp; pp = &(*pp)->next) {
            /* wakes a thread still in the handshake (a handed-over connection is the loop's) */
            if (all && !(*pp)->handed_over) ss_link_shutdown((*pp)->conn);
            if ((*pp)->done || all) {
                h = *pp;
                *pp = h->next;
                break;
            }
        }
        pthread_mutex_unlock(&w->mu);
        if (!h) return;
        pthread_join(h->tid, NULL);
        if (!h->handed_over) ss_link_close(h->conn);
        free(h);
    }
}

/* Out of descriptors (EMFILE/ENFILE) the pending connection stays queued, and the level-triggered
 * listener would wake the loop again at once (a full core, a log line each time): it sleeps
 * ACCEPT_BACKOFF_MS instead, with one log line a second at most. */
#define ACCEPT_BACKOFF_MS 100

static void listener_events(ss_worker *w, uint32_t events)
{
    struct epoll_event lev = {.events = events, .data.u32 = TAG_LISTENER};
    epoll_ctl(w->epfd, EPOLL_CTL_MOD, ss_link_listener_fd(w->listener), &lev);
}

static void accept_backoff(ss_worker *w, const char *why)
{
    uint64_t now = ss_now_ns();
    listener_events(w, 0);
    w->accept_resume_ns = now + ACCEPT_BACKOFF_MS * 1000000ull;
    w->accept_failures++;
    if (now - w->accept_logged_ns < 1000000000ull) return;
    SS_WARN("distributed address %s: %s (%lu time(s) in the last second; accepting again every "
            "%d ms)",
            w->address, why, w->accept_failures, ACCEPT_BACKOFF_MS);
    w->accept_logged_ns = now;
    w->accept_failures = 0;
}

static void accept_resume_due(ss_worker *w, uint64_t now)
{
    if (!w->accept_resume_ns || now < w->accept_resume_ns) return;
    w->accept_resume_ns = 0;
    listener_events(w, EPOLLIN);
}

static void on_accept(ss_worker *w)
{
    ss_link_conn *c = NULL;
    ss_status *st = ss_link_accept(w->listener, 0, &c);
    if (st) {
        if (st->code == SS_ERR_LIMIT)
            accept_backoff(w, st->msg);
        else if (st->code != SS_ERR_TIMEOUT)
            SS_WARN("distributed address %s: accept: %s", w->address, st->msg);
        ss_status_free(st);
        return;
    }
    handshake *h = calloc(1, sizeof *h);
    if (!h) {
        SS_WARN("distributed address %s: out of memory accepting a connection", w->address);
        ss_link_close(c);
        return;
    }
    h->w = w;
    h->conn = c;
    pthread_mutex_lock(&w->mu);
    int rc = pthread_create(&h->tid, NULL, handshake_main, h);
    if (rc == 0) {
        h->next = w->handshakes;
        w->handshakes = h;
    }
    pthread_mutex_unlock(&w->mu);
    if (rc != 0) {
        SS_WARN("distributed address %s: cannot start a thread for a new connection: %s",
                w->address, strerror(rc));
        ss_link_close(c);
        free(h);
    }
}

/* ------------------------------------------------------------------ agents' frames */

static job *find_job(ss_worker *w, uint64_t id)
{
    for (job *j = w->inflight; j; j = j->next)
        if (j->id == id) return j;
    return NULL;
}

/* Only the last rank answers a request that went well (the others are quiet); any rank answers
 * a failure. */
static void on_result(ss_worker *w, int rank, ss_link_msg *m)
{
    count_comm_bytes(w, rank, m->comm_bytes);
    if (m->kv_blocks)
        w->agents[rank].kv_blocks = m->kv_blocks,
        w->agents[rank].kv_block_tokens = m->kv_block_tokens;
    bool last = rank == w->cfg.rank_size - 1;
    if (!last && m->status_code == 0) { /* only a pool probe asks every rank (see gen.h) */
        job *p = find_job(w, m->request_id);
        if (p && !p->answered && --p->answers_due == 0) p->answered = true;
        if (p && p->answered) reap_jobs(w);
        return;
    }
    job *j = find_job(w, m->request_id);
    if (!j || j->answered) return;             /* answered already (failed or timed out) */
    if (m->status_code == 0 && m->shm_error) { /* an output in shared memory the link lost */
        job_fail(j, SS_SERVING_SYSTEM_ERROR, "the result of rank %d: %s", rank, m->shm_error);
    } else if (m->status_code != 0) {
        /* a rank that lost a peer (a collective failed) means the group is down: code 4 */
        bool group_down = m->status_code == SS_ERR_UNAVAILABLE || m->status_code == SS_ERR_TIMEOUT;
        job_fail(j, group_down ? SS_SERVING_WORKER_UNAVAILABLE : SS_SERVING_SYSTEM_ERROR,
                 "%sError happened on get result of rank %d: %s",
                 group_down ? "worker unavailable: " : "", rank,
                 m->message ? m->message : "failed");
        /* the model refused these inputs (a bad value, a shape it cannot take, a size past a
         * limit): worth running each instance alone; not a rank out of memory, an I/O error or
         * a bug of ours, which a retry would only meet again */
        j->model_error = m->status_code == SS_ERR_INVALID || m->status_code == SS_ERR_UNSUPPORTED ||
                         m->status_code == SS_ERR_LIMIT;
    } else {
        j->result = *m;
        memset(m, 0, sizeof *m); /* ownership moves to the job */
        j->answered = --j->answers_due <= 0;
    }
    reap_jobs(w);
}

static void on_agent_readable(ss_worker *w, int rank)
{
    agent_slot *a = &w->agents[rank];
    if (!a->conn) return;
    ss_link_msg m = {0};
    ss_status *st = ss_link_recv(a->conn, 0, &m);
    if (st) {
        if (st->code != SS_ERR_TIMEOUT) rank_gone(w, rank, st->msg);
        ss_status_free(st);
        return;
    }
    a->last_seen_ns = ss_now_ns();
    switch (m.type) {
    case SS_LINK_RESULT:
        on_result(w, rank, &m);
        break;
    case SS_LINK_HEARTBEAT_ACK:
        count_comm_bytes(w, rank, m.comm_bytes);
        break;
    case SS_LINK_EXIT:
        rank_gone(w, rank, m.message && m.message[0] ? m.message : "the agent exited");
        break;
    case SS_LINK_HEARTBEAT:
        if (!w->n_bulk) { /* while the bulk sender writes, the connection is its */
            ss_link_msg ack = {.type = SS_LINK_HEARTBEAT_ACK, .seq = m.seq, .sent_ns = m.sent_ns};
            ss_status *sst = ss_link_send(a->conn, &ack, NULL, 0);
            if (sst) rank_gone(w, rank, sst->msg);
            ss_status_free(sst);
        }
        break;
    default:
        SS_WARN("servable %s: rank %d sent an unexpected %s frame", w->who, rank,
                ss_link_type_name(m.type));
    }
    ss_link_msg_free(&m);
}

/* ------------------------------------------------------------------ dispatch */

/* The batch's input tensors: merged rows for batched inputs (into the job's recycled buffers),
 * the first instance's tensor as it is for inputs the model takes whole. */
/* A token-loop call's inputs, in the model's input order (names checked by check_gen_model). */
static ss_status *gen_inputs(ss_worker *w, job *j, ss_tensor **ins, const char **names, int *n_ins)
{
    const ss_gen_call *c = &j->call;
    *n_ins = 0;
    for (size_t k = 0; k < w->n_model_in; k++)
        ins[k] = NULL, names[k] = w->model_in[k]->name;
    if (!c->batch) return NULL; /* pool sequences to free only */
    int64_t d2[2] = {c->batch, c->seq}, d1[1] = {c->batch};
    size_t nb = (size_t)(c->batch * c->seq) * sizeof(int64_t);
    for (size_t k = 0; k < w->n_model_in; k++) {
        const char *n = w->model_in[k]->name;
        ss_tensor *t = &j->inputs[k];
        int64_t dr[1] = {c->n_logit_rows};
        ss_status *st =
            !strcmp(n, "seq_ids") ? ss_tensor_borrow(t, SS_DT_INT64, 1, d1, (void *)c->seq_ids,
                                                     (size_t)c->batch * sizeof(int64_t))
            : !strcmp(n, "logit_rows")
                ? ss_tensor_borrow(t, SS_DT_INT64, 1, dr, (void *)c->logit_rows,
                                   (size_t)c->n_logit_rows * sizeof(int64_t))
                : ss_tensor_borrow(t, SS_DT_INT64, 2, d2,
                                   (void *)(!strcmp(n, "input_ids") ? c->input_ids : c->positions),
                                   nb);
        if (st) return st;
        ins[k] = t, names[k] = n;
    }
    *n_ins = (int)w->n_model_in;
    return NULL;
}

static ss_status *build_inputs(ss_worker *w, job *j, ss_tensor **ins, const char **names,
                               int *n_ins)
{
    if (j->gen) return gen_inputs(w, j, ins, names, n_ins);
    const ss_method_config *mc = j->tasks[0].rs->method;
    int n = (int)w->n_model_in;
    *n_ins = n;
    for (int k = 0; k < n; k++) {
        const ss_link_spec *sp = w->model_in[k];
        names[k] = sp->name;
        const ss_tensor *rows[SS_BATCH_MAX];
        for (int t = 0; t < j->n_tasks; t++) {
            const task *tk = &j->tasks[t];
            rows[t] =
                &ss_serving_instance_find(&tk->rs->req->instances[tk->inst], mc->inputs[k])->tensor;
        }
        if (!input_batched(&w->cfg, mc, k, sp)) {
            ins[k] = (ss_tensor *)rows[0]; /* as is: no copy */
            continue;
        }
        if (sp->dtype == SS_DT_STRING) return ss_errf(SS_ERR_UNSUPPORTED, "batching string inputs");
        int64_t dims[SS_MAX_DIMS];
        dims[0] = w->batch_dynamic ? j->n_tasks : w->batch;
        for (int d = 1; d < sp->ndim; d++) /* a dynamic dim: the batch's (one shape, see
                                                 same_shapes) */
            dims[d] = sp->dims[d] >= 0 ? sp->dims[d] : rows[0]->dims[d - 1];
        size_t bytes = ss_dtype_size(sp->dtype) * (size_t)ss_shape_numel(sp->ndim, dims);
        int slot = j->n_inputs;
        if (bytes > j->in_cap[slot]) { /* grows to the largest batch seen, then reused */
            void *p = NULL;
            if (posix_memalign(&p, 64, bytes ? bytes : 64))
                return ss_errf(SS_ERR_NOMEM, "batch input %d of %zu bytes", k, bytes);
            free(j->in_buf[slot]);
            j->in_buf[slot] = p;
            j->in_cap[slot] = bytes;
        }
        ss_tensor *t = &j->inputs[slot];
        ss_status *st = ss_tensor_borrow(t, sp->dtype, sp->ndim, dims, j->in_buf[slot], bytes);
        if (!st) st = ss_batch_merge(t, rows, j->n_tasks);
        if (st) return ss_status_wrap(st, "input %d '%s'", k, mc->inputs[k]);
        j->n_inputs++;
        ins[k] = t;
    }
    return NULL;
}

/* The inputs a later-stage rank declares, picked from the model's by its feed map. */
static size_t pick_inputs(const agent_slot *a, ss_tensor *const *ins, const char *const *names,
                          ss_tensor **out, const char **out_names)
{
    for (size_t k = 0; k < a->n_inputs; k++) {
        out[k] = ins[a->feed[k]];
        out_names[k] = names[a->feed[k]];
    }
    return a->n_inputs;
}

/* The outputs the job's request wants in shared memory, as places for the last rank: only for a
 * job of one instance (its outputs are the request's own); names become output indexes. */
static size_t job_places(const job *j, ss_link_place *out)
{
    if (j->gen) return j->gen_placed ? (*out = j->gen_place, 1) : 0;
    if (j->n_tasks != 1) return 0;
    const ss_predict_request *req = j->tasks[0].rs->req;
    const ss_method_config *mc = j->tasks[0].rs->method;
    size_t n = 0;
    for (size_t i = 0; i < req->n_places && n < SS_MAX_IO; i++)
        for (int k = 0; k < mc->n_outputs; k++)
            if (!strcmp(mc->outputs[k], req->places[i].output))
                out[n++] = (ss_link_place){(uint32_t)k, req->places[i].key, req->places[i].offset,
                                           req->places[i].byte_size};
    return n;
}

/* Send a job's PREDICT to every rank, in rank order: stage 0 gets its inputs (all of it over the
 * link, or rank 0 over the link and the rest by rank 0's broadcast), a later stage those inputs
 * its shard declares (most: none); the last rank returns the outputs. Runs on the loop or on the
 * bulk sender; touches only the job and the connections in conns (kept open while it runs). */
static ss_status *send_job(ss_worker *w, job *j, ss_link_conn *const *conns, bool bcast)
{
    ss_tensor *ins[SS_MAX_IO], *own[SS_MAX_IO];
    const char *names[SS_MAX_IO], *own_names[SS_MAX_IO];
    ss_link_spec specs[SS_MAX_IO];
    ss_link_place places[SS_MAX_IO];
    int n_ins = 0;
    ss_status *st = build_inputs(w, j, ins, names, &n_ins);
    if (st) return st;
    int n0 = (int)w->agents[0].n_inputs; /* stage 0's: the model's first inputs */
    for (int k = 0; bcast && k < n0; k++)
        bcast = ins[k]->dtype != SS_DT_STRING;
    for (int k = 0; bcast && k < n0; k++) {
        specs[k] =
            (ss_link_spec){.name = (char *)names[k], .dtype = ins[k]->dtype, .ndim = ins[k]->ndim};
        memcpy(specs[k].dims, ins[k]->dims, sizeof specs[k].dims[0] * (size_t)ins[k]->ndim);
    }
    int n = w->cfg.rank_size, per_stage = n / w->cfg.stage_size;
    /* the agents stop a run that outlives the job (the time left, rounded up) */
    uint64_t now = ss_now_ns(), left = j->deadline_ns > now ? j->deadline_ns - now : 0;
    uint32_t time_limit_ms = (uint32_t)((left + 999999) / 1000000);
    for (int r = 0; r < n && !st; r++) {
        bool stage0 = r < per_stage;
        size_t n_send = stage0 ? (!bcast || r == 0 ? (size_t)n0 : 0)
                               : pick_inputs(&w->agents[r], ins, names, own, own_names);
        ss_link_msg m = {.type = SS_LINK_PREDICT,
                         .request_id = j->id,
                         .return_result = r == n - 1,
                         .quiet = r != n - 1,
                         .time_limit_ms = time_limit_ms ? time_limit_ms : 1,
                         .tensor_names = n_send ? (char **)(stage0 ? names : own_names) : NULL,
                         .share_inputs = bcast && r == 0};
        if (r == n - 1) m.n_places = job_places(j, places), m.places = places;
        if (j->gen) { /* every rank keeps its share of the pool's sequences */
            m.seq_release = (int64_t *)j->call.release, m.n_seq_release = j->call.n_release;
            m.seq_create = (int64_t *)j->call.create, m.n_seq_create = j->call.n_create;
            m.quiet = m.quiet && !j->gen_probe;
            if (!j->call.batch) n_send = 0;
        }
        if (stage0 && bcast && r > 0) {
            m.has_input_root = true;
            m.input_root = 0;
            m.inputs = specs;
            m.n_inputs = (size_t)n0;
        }
        const ss_tensor *const *tensors = (const ss_tensor *const *)(stage0 ? ins : own);
        st = conns[r] ? ss_link_send(conns[r], &m, n_send ? tensors : NULL, n_send)
                      : ss_errf(SS_ERR_UNAVAILABLE, "rank %d is not connected", r);
        if (st) st = ss_status_wrap(st, "sending to rank %d", r);
    }
    return st;
}

/* Tensor bytes the job's stage-0 requests carry (decides inline or bulk). */
/* The input bytes of one queued instance (what one rank's link carries for it). */
static size_t task_bytes(const task *t)
{
    size_t b = 0;
    const ss_method_config *mc = t->rs->method;
    for (int k = 0; k < mc->n_inputs; k++)
        b +=
            ss_serving_instance_find(&t->rs->req->instances[t->inst], mc->inputs[k])->tensor.nbytes;
    return b;
}

/* The bytes a job puts on the links: its link_bytes (set at dispatch), times the ranks that get
 * them. */
static size_t job_bytes(const ss_worker *w, const job *j)
{
    return w->bcast ? j->link_bytes
                    : j->link_bytes * (size_t)(w->cfg.rank_size / w->cfg.stage_size);
}

/* The bulk sender: sends the jobs handed to it, in order, and hands them back. It touches only
 * the job's tasks, inputs and bulk fields and the connections the loop snapshotted for it (kept
 * open: dead connections are closed only while no job is with the bulk sender). */
static void *bulk_main(void *arg)
{
    ss_worker *w = arg;
    pthread_setname_np(pthread_self(), "ss-worker-bulk");
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->bulk_head && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->bulk_head) break;
        job *j = w->bulk_head;
        w->bulk_head = j->bulk_next;
        if (!w->bulk_head) w->bulk_tail = NULL;
        pthread_mutex_unlock(&w->mu);
        /* one that waited here past its deadline has been failed (check_deadlines): the agents
         * would only run it for nobody (and a Loop in it would stop at once) */
        j->bulk_sent = ss_now_ns() <= j->deadline_ns;
        j->bulk_st = j->bulk_sent ? send_job(w, j, j->bulk_conns, j->bulk_bcast) : NULL;
        pthread_mutex_lock(&w->mu);
        j->bulk_next = w->bulk_done;
        w->bulk_done = j;
        ring(w);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void to_bulk(ss_worker *w, job *j)
{
    if (!j->bulk_conns &&
        !(j->bulk_conns = calloc((size_t)w->cfg.rank_size, sizeof *j->bulk_conns))) {
        job_fail(j, SS_SERVING_SYSTEM_ERROR, "out of memory sending the batch");
        return;
    }
    for (int r = 0; r < w->cfg.rank_size; r++)
        j->bulk_conns[r] = w->agents[r].alive ? w->agents[r].conn : NULL;
    j->bulk_bcast = w->bcast;
    j->bulk_st = NULL;
    j->in_bulk = true;
    w->n_bulk++;
    pthread_mutex_lock(&w->mu);
    j->bulk_next = NULL;
    if (w->bulk_tail)
        w->bulk_tail->bulk_next = j;
    else
        w->bulk_head = j;
    w->bulk_tail = j;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Jobs the bulk sender finished: their send errors, and they may be answered now. */
static void take_back_bulk(ss_worker *w)
{
    pthread_mutex_lock(&w->mu);
    job *list = w->bulk_done;
    w->bulk_done = NULL;
    pthread_mutex_unlock(&w->mu);
    if (!list) return;
    uint64_t now = ss_now_ns();
    for (job *j = list; j; j = j->bulk_next) {
        if (j->bulk_st) {
            job_fail(j, SS_SERVING_WORKER_UNAVAILABLE, "worker unavailable: %s", j->bulk_st->msg);
            ss_status_free(j->bulk_st);
            j->bulk_st = NULL;
        } else if (j->bulk_sent) {
            for (int r = 0; r < w->cfg.rank_size; r++) /* a completed send is a sign of life */
                if (w->agents[r].alive && w->agents[r].conn == j->bulk_conns[r])
                    w->agents[r].last_seen_ns = now;
        }
        j->in_bulk = false;
        w->n_bulk--;
    }
    reap_jobs(w);
}

/* Whether the queue's next job may go now (the window: ss_batch_may_dispatch). */
static bool may_dispatch(const ss_worker *w)
{
    return ss_batch_may_dispatch(w->n_inflight, w->max_inflight, w->cfg.pipeline, w->batch,
                                 w->ahead_bytes, task_bytes(&w->queue[w->q_head]));
}

/* Whether two queued instances of one method have inputs of the same shapes (one batch takes
 * one shape where the model's dims are dynamic). */
static bool same_shapes(const task *a, const task *b)
{
    const ss_method_config *mc = a->rs->method;
    for (int k = 0; k < mc->n_inputs; k++) {
        const ss_tensor *x =
            &ss_serving_instance_find(&a->rs->req->instances[a->inst], mc->inputs[k])->tensor;
        const ss_tensor *y =
            &ss_serving_instance_find(&b->rs->req->instances[b->inst], mc->inputs[k])->tensor;
        if (!ss_shape_equal(x->ndim, x->dims, y->ndim, y->dims)) return false;
    }
    return true;
}

/* The token loop's next model calls: one per micro-batch at most (each step of a micro-batch
 * depends on its last one's tokens). */
static void gen_dispatch(ss_worker *w)
{
    ss_gen_call c;
    bool probe = false;
    int ticket = SS_WGEN_PROBE;
    while (w->is_ready && !w->stopping && ss_wgen_next(w->gen, &c, &probe, &ticket)) {
        job *j = job_get(w, 0);
        if (!j) {
            ss_wgen_done(w->gen, ticket, NULL, "out of memory", false, 0, 0);
            return;
        }
        j->gen = true, j->gen_probe = probe, j->gen_ticket = ticket, j->call = c;
        j->gen_placed = c.batch && ss_wgen_logits_place(w->gen, ticket, &j->gen_place);
        if (c.batch) ss_metric_observe(w->m_batch, (double)c.batch);
        if (w->gen_inflight++ && c.batch) {
            const char *v[] = {w->cfg.name, w->version_str};
            ss_metric_add(ss_metrics_series(fam.overlapped, v), 1);
        }
        j->answers_due = probe ? w->cfg.rank_size : 1;
        j->id = ++w->next_job_id;
        j->dispatch_ns = ss_now_ns();
        j->link_bytes = 0;
        j->deadline_ns = j->dispatch_ns + (uint64_t)w->opt.request_timeout_ms * 1000000ull;
        w->n_inflight++;
        j->next = w->inflight;
        w->inflight = j;
        ss_link_conn *conns[w->cfg.rank_size];
        for (int r = 0; r < w->cfg.rank_size; r++)
            conns[r] = w->agents[r].alive ? w->agents[r].conn : NULL;
        ss_status *st = send_job(w, j, conns, false);
        if (st) {
            job_fail(j, SS_SERVING_WORKER_UNAVAILABLE, "worker unavailable: %s", st->msg);
            ss_status_free(st);
        }
    }
}

static void dispatch(ss_worker *w)
{
    ASSERT_ON_LOOP(w);
    if (w->gen) {
        gen_dispatch(w);
        reap_jobs(w);
        return;
    }
    uint64_t now = ss_now_ns();
    while (w->is_ready && !w->stopping && w->q_len && may_dispatch(w)) {
        bool solo = w->queue[w->q_head].solo;
        /* with a queue delay, wait (bounded) for a fuller batch */
        if (!solo && w->cfg.max_queue_delay_us > 0 && w->q_len < (size_t)w->batch) {
            if (!w->batch_wait_until_ns)
                w->batch_wait_until_ns = now + (uint64_t)w->cfg.max_queue_delay_us * 1000u;
            if (now < w->batch_wait_until_ns) return;
        }
        w->batch_wait_until_ns = 0;
        int take = solo ? 1 : (int)(w->q_len < (size_t)w->batch ? w->q_len : (size_t)w->batch);
        job *j = job_get(w, take);
        if (!j) {
            fail_everything(w, SS_SERVING_SYSTEM_ERROR, "out of memory");
            return;
        }
        const ss_method_config *method =
            w->queue[w->q_head].rs->method; /* a batch never mixes methods */
        while (j->n_tasks < take && w->queue[w->q_head].rs->method == method &&
               (!j->n_tasks || !w->queue[w->q_head].solo) &&
               (!w->shaped_batches || !j->n_tasks ||
                same_shapes(&j->tasks[0], &w->queue[w->q_head]))) {
            j->tasks[j->n_tasks++] = w->queue[w->q_head];
            w->q_head = (w->q_head + 1) % w->q_cap;
            w->q_len--;
        }
        j->id = ++w->next_job_id;
        j->dispatch_ns = now;
        j->link_bytes = 0;
        for (int t = 0; t < j->n_tasks; t++)
            j->link_bytes += task_bytes(&j->tasks[t]);
        w->ahead_bytes += j->link_bytes;
        j->deadline_ns = now + (uint64_t)w->opt.request_timeout_ms * 1000000ull;
        ss_metric_observe(w->m_batch, j->n_tasks);
        SS_DEBUG("servable %s: request_id %llu: dispatching %d instances (%zu still queued)",
                 w->cfg.name, (unsigned long long)j->id, j->n_tasks, w->q_len);
        w->n_inflight++;
        j->next = w->inflight;
        w->inflight = j;
        if (w->n_bulk || job_bytes(w, j) > SEND_INLINE_MAX) {
            to_bulk(w, j); /* ordered behind any job the bulk sender still has */
            continue;
        }
        ss_link_conn *conns[w->cfg.rank_size];
        for (int r = 0; r < w->cfg.rank_size; r++)
            conns[r] = w->agents[r].alive ? w->agents[r].conn : NULL;
        ss_status *st = send_job(w, j, conns, w->bcast);
        if (st) {
            job_fail(j, SS_SERVING_WORKER_UNAVAILABLE, "worker unavailable: %s", st->msg);
            ss_status_free(st);
        }
    }
    reap_jobs(w);
}

/* ------------------------------------------------------------------ timers */

static void heartbeat_tick(ss_worker *w, uint64_t now)
{
    w->next_hb_ns = now + (uint64_t)w->opt.heartbeat_ms * 1000000ull;
    w->hb_seq++;
    for (int r = 0; r < w->cfg.rank_size; r++) {
        agent_slot *a = &w->agents[r];
        if (!a->alive || !a->conn) continue;
        if (a->last_seen_ns < now &&
            now - a->last_seen_ns > (uint64_t)w->opt.heartbeat_timeout_ms * 1000000ull) {
            char why[128];
            snprintf(why, sizeof why, "no heartbeat answer for %d ms", w->opt.heartbeat_timeout_ms);
            rank_gone(w, r, why);
            continue;
        }
        if (w->n_bulk) continue; /* the bulk sender owns the connections; its sends count as life */
        ss_link_msg hb = {.type = SS_LINK_HEARTBEAT, .seq = w->hb_seq, .sent_ns = now};
        ss_status *st = ss_link_send(a->conn, &hb, NULL, 0);
        if (st) rank_gone(w, r, st->msg);
        ss_status_free(st);
    }
}

static void check_deadlines(ss_worker *w, uint64_t now)
{
    bool any = false;
    for (job *j = w->inflight; j; j = j->next)
        if (!j->answered && now > j->deadline_ns) {
            job_fail(j, SS_SERVING_WORKER_UNAVAILABLE,
                     "Failed to wait for result of rank %d within the request timeout of %d ms",
                     w->cfg.rank_size - 1, w->opt.request_timeout_ms);
            any = true;
        }
    if (any) reap_jobs(w);
}

/* When the loop must next wake up without an event: the next heartbeat, a job's deadline or the
 * end of a batch's queue delay, whichever comes first. */
static uint64_t next_wake_ns(const ss_worker *w)
{
    ASSERT_ON_LOOP(w);
    uint64_t next = w->next_hb_ns;
    for (const job *j = w->inflight; j; j = j->next)
        if (!j->answered && j->deadline_ns < next) next = j->deadline_ns;
    if (w->batch_wait_until_ns && w->batch_wait_until_ns < next) next = w->batch_wait_until_ns;
    if (w->accept_resume_ns && w->accept_resume_ns < next) next = w->accept_resume_ns;
    return next;
}

/* Milliseconds from now until next (next_wake_ns: the nearest timer), rounded up. */
static int timeout_ms_until(uint64_t next, uint64_t now)
{
    if (next <= now) return 0;
    uint64_t ms = (next - now + 999999) / 1000000;
    return ms > 60000 ? 60000 : (int)ms;
}

/* ------------------------------------------------------------------ the inbox */

static bool instance_failed(const req_state *rs, size_t i)
{
    return rs->reply->error_count > i && rs->reply->errors[i].code != 0;
}

/* A generate request: each instance to the token loop (an instance whose parameters are wrong is
 * answered at once, naming the input). */
static void gen_enqueue(ss_worker *w, req_state *rs)
{
    size_t n = rs->req->count, left = rs->remaining;
    for (size_t i = 0; i < n && left; i++) {
        if (instance_failed(rs, i)) continue;
        left--;
        const char *input = NULL;
        ss_status *st =
            ss_wgen_submit(w->gen, rs->method, &rs->req->instances[i], &rs->reply->instances[i], rs,
                           i, rs->req->want_finish_reason, &input);
        if (st) req_finish_instance(w, rs, i, st->msg, SS_SERVING_INVALID_INPUTS, input);
        ss_status_free(st);
    }
}

static bool gen_note_add(ss_worker *w, req_state *request, size_t inst, bool finished,
                         const char *error, int64_t code, const char *input, const int64_t *tokens,
                         int n, const char *text, size_t len);

/* The serving code of a generate instance's end (gen.h's finish: 0 with an error is a system
 * error). */
static int64_t gen_code(const char *error, int64_t code)
{
    return !error ? 0 : code ? code : SS_SERVING_SYSTEM_ERROR;
}

/* gen.h's hooks: an instance of a generate request is done, has new tokens, or lost its client.
 */
static void gen_finished(void *worker, void *request, size_t inst, const char *error, int64_t code,
                         const char *input)
{
    if (gen_note_add(worker, request, inst, true, error, code, input, NULL, 0, NULL, 0)) return;
    req_finish_instance(worker, request, inst, error, gen_code(error, code), input);
}

static void gen_tokens_now(req_state *request, size_t inst, const int64_t *tokens, int n,
                           const char *text, size_t len)
{
    const ss_predict_request *req = request->req;
    if (!req->partial) return;
    ss_serving_instance chunk = {0};
    ss_tensor t = {0};
    int64_t dims[1] = {n};
    ss_status *st = ss_tensor_alloc(&t, SS_DT_INT64, 1, dims);
    if (!st) {
        if (n) memcpy(t.data, tokens, sizeof *tokens * (size_t)n);
        st = ss_serving_instance_put(&chunk, "tokens", &t, false);
    }
    if (!st && text) st = ss_serving_instance_put_string(&chunk, "text", text, len, false);
    if (!st) req->partial(req->partial_ctx, inst, &chunk);
    ss_tensor_free(&t);
    ss_serving_instance_clear(&chunk);
    ss_status_free(st); /* out of memory: the stream misses this piece, done() has them all */
}

/* A note for later when the loop defers, else false (deliver now). */
static bool gen_note_add(ss_worker *w, req_state *request, size_t inst, bool finished,
                         const char *error, int64_t code, const char *input, const int64_t *tokens,
                         int n, const char *text, size_t len)
{
    if (!w->gen_defer) return false;
    size_t elen = error ? strlen(error) + 1 : 0;
    struct gen_note *g = malloc(sizeof *g + sizeof(int64_t) * (size_t)n + len + elen);
    if (!g) { /* out of memory: this one at once, after those before it (an end frees its request)
               */
        gen_notes_flush(w);
        return false;
    }
    *g = (struct gen_note){.request = request,
                           .inst = inst,
                           .finished = finished,
                           .code = code,
                           .input = input,
                           .n = n,
                           .len = len};
    if (n) memcpy(g->tokens, tokens, sizeof(int64_t) * (size_t)n);
    char *tail = (char *)(g->tokens + n);
    if (text) g->text = memcpy(tail, text, len);
    if (error) g->error = memcpy(tail + len, error, elen);
    *w->notes_tail = g;
    w->notes_tail = &g->next;
    return true;
}

static void gen_deliver(ss_worker *w, struct gen_note *n)
{
    if (n->finished)
        req_finish_instance(w, n->request, n->inst, n->error, gen_code(n->error, n->code),
                            n->input);
    else
        gen_tokens_now(n->request, n->inst, n->tokens, n->n, n->text, n->len);
    free(n);
}

static void gen_tokens(void *worker, void *request, size_t inst, const int64_t *tokens, int n,
                       const char *text, size_t len)
{
    if (!gen_note_add(worker, request, inst, false, NULL, 0, NULL, tokens, n, text, len))
        gen_tokens_now(request, inst, tokens, n, text, len);
}

static bool gen_cancelled(void *worker, void *request)
{
    (void)worker;
    return ss_predict_request_cancelled(((req_state *)request)->req);
}

static const ss_wgen_hooks gen_hooks = {gen_finished, gen_tokens, gen_cancelled};

/* With pipeline stages (and pipelining on), one micro-batch per stage unless the servable says. */
static int gen_micro_batches(const ss_servable_config *c)
{
    if (c->gen.micro_batches) return c->gen.micro_batches;
    return c->pipeline ? c->stage_size : 1;
}

static void enqueue_request(ss_worker *w, req_state *rs)
{
    size_t n = rs->req->count, left = rs->remaining;
    if (w->stopping || !w->is_ready) {
        char why[700];
        if (w->stopping)
            snprintf(why, sizeof why, "Servable stopped: the server is shutting down");
        else
            snprintf(why, sizeof why, "Servable stopped: worker unavailable, %s", w->not_ready_why);
        for (size_t i = 0; i < n && left; i++)
            if (!instance_failed(rs, i))
                left--, req_finish_instance(w, rs, i, why, SS_SERVING_WORKER_UNAVAILABLE, NULL);
        return;
    }
    if (w->gen) {
        gen_enqueue(w, rs);
        return;
    }
    queue_reserve(w, left);
    for (size_t i = 0; i < n && left; i++) {
        if (instance_failed(rs, i)) continue;
        left--;
        if (w->q_len >= w->q_cap) {
            req_finish_instance(w, rs, i, "out of memory queueing the instance",
                                SS_SERVING_SYSTEM_ERROR, NULL);
            continue;
        }
        w->queue[(w->q_head + w->q_len) % w->q_cap] = (task){rs, i};
        w->q_len++;
    }
}

/* Room in the queue for `extra` more tasks (false: out of memory). */
static bool queue_reserve(ss_worker *w, size_t extra)
{
    if (w->q_len + extra <= w->q_cap) return true;
    size_t nc = w->q_cap ? w->q_cap : 256;
    while (nc < w->q_len + extra)
        nc *= 2;
    task *q = malloc(nc * sizeof *q);
    if (!q) return false;
    for (size_t i = 0; i < w->q_len; i++)
        q[i] = w->queue[(w->q_head + i) % w->q_cap];
    free(w->queue);
    w->queue = q;
    w->q_cap = nc;
    w->q_head = 0;
    return true;
}

static void take_inbox(ss_worker *w)
{
    ASSERT_ON_LOOP(w);
    pthread_mutex_lock(&w->mu);
    req_state *reqs = w->in_head;
    inbox_item *items = w->items_head;
    w->in_head = w->in_tail = NULL;
    w->items_head = w->items_tail = NULL;
    bool stop = w->stop;
    pthread_mutex_unlock(&w->mu);
    if (stop && !w->stopping) {
        w->stopping = true;
        w->is_ready = false;
        ss_serving_withdraw_model(w->entry, (size_t)w->cfg.model, "the server is stopping");
        fail_everything(w, SS_SERVING_WORKER_UNAVAILABLE,
                        "Servable stopped: the server is shutting down");
        set_status(w);
    }
    for (inbox_item *it = items; it;) {
        inbox_item *next = it->next;
        if (it->kind == IN_REGISTER) {
            on_register(w, it->conn, &it->msg);
            ss_link_msg_free(&it->msg);
        } else {
            refresh_metrics(w);
            pthread_mutex_lock(&w->mu);
            w->refreshed++;
            pthread_cond_broadcast(&w->cv);
            pthread_mutex_unlock(&w->mu);
        }
        free(it);
        it = next;
    }
    while (reqs) {
        req_state *next = reqs->next;
        enqueue_request(w, reqs);
        reqs = next;
    }
}

static void drain_inbox(ss_worker *w)
{
    uint64_t counter;
    ssize_t rd = read(w->evfd, &counter, sizeof counter);
    (void)rd;
    take_inbox(w);
}

static void handle_event(ss_worker *w, uint32_t tag)
{
    if (tag == TAG_EVENT)
        drain_inbox(w);
    else if (tag == TAG_LISTENER)
        on_accept(w);
    else if (tag - TAG_RANK0 < (uint32_t)w->cfg.rank_size)
        on_agent_readable(w, (int)(tag - TAG_RANK0));
}

/* One turn of the loop over the events epoll gave: what they announce, then the timers and the
 * queue. */
static void run_events(ss_worker *w, const struct epoll_event *evs, int n)
{
    for (int i = 0; i < n; i++)
        handle_event(w, evs[i].data.u32);
    take_back_bulk(w);
    uint64_t now = ss_now_ns();
    if (!w->stopping && now >= w->next_hb_ns) heartbeat_tick(w, now);
    accept_resume_due(w, now);
    check_deadlines(w, now);
    dispatch(w);
}

/* The worker's only request waits for its one reply (with more requests about, the cores have
 * better things to do and a reply is never far): worth polling for it a little, yielding the
 * core to anyone runnable, rather than sleeping. An agent's answer often comes within
 * microseconds, and a sleeping thread on another core takes tens of them to wake on a VM. */
static bool worth_spinning(ss_worker *w)
{
    return w->spin_ns && w->n_inflight == 1 && !w->q_len && atomic_load(&w->n_requests) == 1;
}

/* Events that are there now or come before spin_ns have passed since t0 (the core is yielded
 * between looks); 0 when none came, -1 on an epoll error. */
static int poll_briefly(ss_worker *w, struct epoll_event *evs, int cap, uint64_t t0)
{
    for (;;) {
        int n = epoll_wait(w->epfd, evs, cap, 0);
        if (n != 0 || ss_now_ns() - t0 >= w->spin_ns) return n;
        sched_yield();
    }
}

/* After a submit: when no thread holds the loop (the loop thread sleeps in epoll), take it and
 * send what the inbox holds now, on this thread, and if that is all there is to do, wait a
 * moment for the reply here too; the loop thread is woken only if its sleep is now too long (a
 * new deadline or queue delay comes sooner). Otherwise the holder is awake, and the ring makes
 * sure it looks at the inbox before it sleeps again. */
static void kick_loop(ss_worker *w)
{
    if (!try_hold_loop(w)) {
        ring(w);
        return;
    }
    take_inbox(w);
    dispatch(w);
    struct epoll_event evs[8];
    for (uint64_t t0 = ss_now_ns(); worth_spinning(w);) {
        int n = poll_briefly(w, evs, 8, t0);
        if (n <= 0) break;
        run_events(w, evs, n);
    }
    bool wake = next_wake_ns(w) < w->sleeps_until_ns;
    release_loop(w);
    if (wake) ring(w);
}

/* The loop thread's wait for events, without holding the loop: as kick_loop, it polls a little
 * first when a reply is due. */
static int wait_events(ss_worker *w, struct epoll_event *evs, int cap, int timeout, bool spin)
{
    int n = spin && timeout != 0 ? poll_briefly(w, evs, cap, ss_now_ns()) : 0;
    return n ? n : epoll_wait(w->epfd, evs, cap, timeout);
}

/* The front ends' way in (through the registry): queue the request and get it to the loop. */
static void worker_submit(void *ctx, ss_predict_request *req, size_t method,
                          ss_predict_reply *reply, ss_predict_done done, void *done_ctx)
{
    ss_worker *w = ctx;
    const ss_method_config *mc = &w->cfg.methods[method < (size_t)w->cfg.n_methods ? method : 0];
    if (atomic_fetch_add(&w->n_requests, 1) >= (size_t)w->opt.max_enqueued) {
        atomic_fetch_sub(&w->n_requests, 1);
        ss_predict_reply_free(reply);
        done(done_ctx,
             ss_predict_reply_error(SS_SERVING_FAILED,
                                    "Serving Error: enqueued requests count exceeds the limit %d",
                                    w->opt.max_enqueued));
        return;
    }
    req_state *rs = calloc(1, sizeof *rs);
    if (!rs) {
        atomic_fetch_sub(&w->n_requests, 1);
        ss_predict_reply_free(reply);
        done(done_ctx, ss_predict_reply_error(SS_SERVING_SYSTEM_ERROR, "out of memory"));
        return;
    }
    size_t failed = 0;
    for (size_t i = 0; i < reply->error_count && i < req->count; i++)
        failed += reply->errors[i].code != 0;
    *rs = (req_state){.req = req,
                      .done = done,
                      .done_ctx = done_ctx,
                      .reply = reply,
                      .remaining = req->count - failed,
                      .method = mc,
                      .t0_ns = ss_now_ns(),
                      .worst = failed ? SS_SERVING_INVALID_INPUTS : 0};
    ss_metric_add(w->m_inflight, 1);
    if (!rs->remaining) { /* every instance failed the checks: nothing for the agents */
        req_answer(w, rs);
        return;
    }
    pthread_mutex_lock(&w->mu);
    bool stopped = w->stop; /* the loop takes no more requests: answer here */
    if (!stopped) {
        if (w->in_tail)
            w->in_tail->next = rs;
        else
            w->in_head = rs;
        w->in_tail = rs;
    }
    pthread_mutex_unlock(&w->mu);
    if (!stopped) {
        kick_loop(w);
    } else {
        ss_metric_add(w->m_inflight, -1);
        atomic_fetch_sub(&w->n_requests, 1);
        ss_predict_reply_free(reply);
        free(rs);
        done(done_ctx, ss_predict_reply_error(SS_SERVING_WORKER_UNAVAILABLE,
                                              "Servable stopped: the server is shutting down"));
    }
}

/* ------------------------------------------------------------------ the loop */

static void close_dead(ss_worker *w)
{
    if (w->n_bulk) return; /* the bulk sender may still hold one of them */
    for (size_t i = 0; i < w->n_dead; i++)
        ss_link_close(w->dead_conns[i]);
    w->n_dead = 0;
}

static bool agents_connected(const ss_worker *w)
{
    for (int r = 0; r < w->cfg.rank_size; r++)
        if (w->agents[r].conn) return true;
    return false;
}

/* At stop: tell every agent to exit and give them STOP_GRACE_MS to close first (closing our end
 * while their frames sit unread would reset the link, and an agent could lose the EXIT and take
 * the reset for a lost worker). */
static void say_goodbye(ss_worker *w)
{
    for (int r = 0; r < w->cfg.rank_size; r++) {
        agent_slot *a = &w->agents[r];
        if (!a->conn) continue;
        ss_link_msg ex = {.type = SS_LINK_EXIT, .message = "the server is shutting down"};
        ss_status_free(ss_link_send(a->conn, &ex, NULL, 0));
    }
}

static void *loop_main(void *arg)
{
    ss_worker *w = arg;
    pthread_setname_np(pthread_self(), "ss-worker-loop"); /* names show in top -H, perf, gdb */
    hold_loop(w);
    w->next_hb_ns = ss_now_ns() + (uint64_t)w->opt.heartbeat_ms * 1000000ull;
    uint64_t goodbye_until = 0;
    for (;;) {
        uint64_t now = ss_now_ns();
        if (w->stopping && !w->n_bulk) {
            if (!goodbye_until) {
                say_goodbye(w);
                goodbye_until = now + STOP_GRACE_MS * 1000000ull;
            }
            if (!agents_connected(w) || now >= goodbye_until) break;
        }
        struct epoll_event evs[32];
        uint64_t next = next_wake_ns(w);
        int timeout = timeout_ms_until(next, now);
        if (goodbye_until && timeout > 10) timeout = 10;
        /* what the sleep is for: the nearest timer, or sooner when capped; not the timeout rounded
         * up to whole ms, or every submit's kick_loop would find its (unchanged) next timer
         * "sooner" and wake the loop thread for nothing */
        uint64_t until = now + (uint64_t)timeout * 1000000ull;
        w->sleeps_until_ns = next < until ? next : until;
        bool spin = worth_spinning(w);
        release_loop(w);
        int n = wait_events(w, evs, 32, timeout, spin);
        hold_loop(w);
        if (n < 0 && errno != EINTR) {
            SS_ERROR("servable %s: epoll_wait: %s", w->who, strerror(errno));
            break;
        }
        run_events(w, evs, n);
        close_dead(w);
        reap_handshakes(w, false);
    }
    for (int r = 0; r < w->cfg.rank_size; r++)
        drop_conn(w, r);
    release_loop(w);
    pthread_mutex_lock(&w->mu);
    w->loop_done = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ------------------------------------------------------------------ lifecycle */

/* Requests the registry answered itself (unknown names are not used as label values: unbounded
 * cardinality). */
static void count_rejected(void *ctx, const char *servable, uint64_t version, const char *method,
                           int64_t code)
{
    pthread_once(&fam_once, fam_init);
    char vs[24] = "";
    if (version) snprintf(vs, sizeof vs, "%llu", (unsigned long long)version);
    const char *v[] = {servable, vs, method, outcome_name(code)};
    ss_metric_add(ss_metrics_series(fam.requests, v), 1);
}

/* Every request a backend answered (the registry's view: front-end methods, resolved versions). */
static void count_answered(void *ctx, const char *servable, uint64_t version, const char *method,
                           int64_t code, uint64_t ns)
{
    (void)ctx;
    pthread_once(&fam_once, fam_init);
    char vs[24];
    snprintf(vs, sizeof vs, "%llu", (unsigned long long)version);
    const char *v[] = {servable, vs, method, outcome_name(code)};
    ss_metric_add(ss_metrics_series(fam.requests, v), 1);
    ss_metric_observe(ss_metrics_series(fam.total, v), (double)ns / 1e9);
}

ss_worker_set *ss_worker_set_new(void)
{
    ss_worker_set *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    if (!(s->serving = ss_serving_new())) {
        free(s);
        return NULL;
    }
    ss_serving_on_reject(s->serving, count_rejected, NULL);
    ss_serving_on_answer(s->serving, count_answered, NULL);
    pthread_mutex_init(&s->mu, NULL);
    return s;
}

ss_predict_handler ss_worker_set_handler(ss_worker_set *set)
{
    return ss_serving_handler(set->serving);
}

bool ss_worker_set_ready(void *ctx)
{
    ss_worker_set *set = ctx;
    return ss_serving_ready(set->serving);
}

const char *ss_worker_address(const ss_worker *w)
{
    return w->address;
}

static void worker_free(ss_worker *w)
{
    ss_wgen_free(w->gen, "Servable stopped: the server is shutting down");
    ss_servable_config_clear(&w->cfg);
    if (w->entry && w->owns_entry) ss_serving_remove(w->set->serving, w->entry);
    for (job *j = w->free_jobs; j;) {
        job *next = j->next;
        job_free(j);
        j = next;
    }
    if (w->agents)
        for (int r = 0; r < w->cfg.rank_size; r++) {
            copy_specs(&w->agents[r].inputs, &w->agents[r].n_inputs, NULL, 0);
            copy_specs(&w->agents[r].outputs, &w->agents[r].n_outputs, NULL, 0);
        }
    for (size_t i = 0; i < w->n_dead; i++)
        ss_link_close(w->dead_conns[i]);
    free(w->dead_conns);
    free(w->agents);
    free(w->queue);
    free(w->meta);
    ss_status_free(w->fatal);
    ss_rank_table_free(&w->table);
    ss_link_listener_close(w->listener);
    if (w->epfd >= 0) close(w->epfd);
    if (w->evfd >= 0) close(w->evfd);
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->role);
    pthread_cond_destroy(&w->cv);
    free(w);
}

/* The rank table and address of backend w->cfg.model: the user's for a distributed model; a
 * 1-rank table on 127.0.0.1 for a local one (its file in the version folder). *what names the
 * table in errors (its path). */
static ss_status *model_group(ss_worker *w, const ss_worker_options *opt, const char **address,
                              const char **what)
{
    const char *table = w->cfg.model == 0 ? opt->rank_table : NULL;
    *address = w->cfg.model == 0 ? opt->distributed_address : NULL;
    for (int k = 0; k < opt->n_models && k < 8; k++)
        if (opt->models[k].name && !strcmp(opt->models[k].name, w->cfg.model_name) &&
            w->cfg.subgraph == 0) {
            table = opt->models[k].rank_table;
            *address = opt->models[k].distributed_address;
        }
    *what = table ? table : "a local model";
    if (table && *address) return ss_rank_table_load(table, &w->table);
    if (!w->cfg.local_file[0] && w->cfg.n_models == 1)
        return ss_errf(SS_ERR_INVALID,
                       "needs --rank-table and --distributed-address (or model 'files' in its "
                       "config to run it locally)");
    if (!w->cfg.local_file[0])
        return ss_errf(SS_ERR_INVALID,
                       "model '%s' needs a rank table and a distributed address (--model %s "
                       "--rank-table FILE --distributed-address HOST:PORT), or 'files' to run "
                       "locally",
                       w->cfg.model_name, w->cfg.model_name);
    if (w->cfg.rank_size != 1)
        return ss_errf(SS_ERR_INVALID, "local model '%s' is one rank, not rank_size %d",
                       w->cfg.model_name, w->cfg.rank_size);
    snprintf(w->local_file, sizeof w->local_file, "%s/%s/%llu/%s", opt->servable_dir, opt->servable,
             (unsigned long long)w->version, w->cfg.local_file);
    if (access(w->local_file, R_OK) != 0)
        return ss_errf(SS_ERR_IO, "model '%s': cannot read its file %s: %s", w->cfg.model_name,
                       w->local_file, strerror(errno));
    *address = "127.0.0.1:0";
    static const char one_rank[] =
        "{\"server_list\": [{\"server_id\": \"127.0.0.1\", \"device\": [{\"device_id\": \"0\", "
        "\"rank_id\": \"0\"}]}]}";
    return ss_rank_table_parse(one_rank, sizeof one_rank - 1, "a local model", &w->table);
}

static ss_status *worker_open(ss_worker *w, const ss_worker_options *opt, const char *text,
                              size_t len, const char *path, int model)
{
    ss_status *st = ss_servable_config_parse_model(text, len, path, opt->servable, model, &w->cfg);
    const char *address = NULL, *table = "rank table";
    if (!st) st = model_group(w, opt, &address, &table);
    if (!st) st = ss_rank_table_check(&w->table, w->cfg.rank_size, w->cfg.stage_size, table);
    if (st) return st;
    if (w->cfg.n_models > 1 || w->cfg.subgraph)
        snprintf(w->model_label, sizeof w->model_label, w->cfg.subgraph ? "%s subgraph %u" : "%s",
                 w->cfg.model_name, w->cfg.subgraph);
    snprintf(w->who, sizeof w->who, "%s%s%s", w->cfg.name, w->model_label[0] ? " model " : "",
             w->model_label);
    w->agents = calloc((size_t)w->cfg.rank_size, sizeof *w->agents);
    w->meta = meta_json(w);
    if (!w->agents || !w->meta) return ss_errf(SS_ERR_NOMEM, "out of memory");
    if ((w->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
        (w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
        return ss_errf(SS_ERR_IO, "epoll/eventfd: %s", strerror(errno));
    ss_link_options_default(&w->link_opt);
    w->link_opt.secret = opt->secret;
    w->link_opt.secret_len = opt->secret_len;
    st = ss_link_listen(address, &w->link_opt, &w->listener);
    if (st) return st;
    snprintf(w->address, sizeof w->address, "%s", ss_link_listener_address(w->listener));
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = TAG_EVENT};
    struct epoll_event lev = {.events = EPOLLIN, .data.u32 = TAG_LISTENER};
    int local_fd = ss_link_listener_local_fd(w->listener); /* agents on this host come here */
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->evfd, &ev) != 0 ||
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, ss_link_listener_fd(w->listener), &lev) != 0 ||
        (local_fd >= 0 && epoll_ctl(w->epfd, EPOLL_CTL_ADD, local_fd, &lev) != 0))
        return ss_errf(SS_ERR_IO, "epoll_ctl: %s", strerror(errno));
    if (w->cfg.gen.enabled)
        st = ss_wgen_new(&w->cfg.gen, gen_micro_batches(&w->cfg), &gen_hooks, w, &w->gen);
    if (w->gen) {
        char tk[4096];
        snprintf(tk, sizeof tk, "%s/%s/tokenizer.json", opt->servable_dir, opt->servable);
        ss_wgen_use_tokenizer(w->gen, tk);
    }
    return st;
}

/* One registry entry for the servable, model 0's; a composed servable's stages run in front of
 * every model's worker. */
static ss_status *servable_attach(ss_worker *first)
{
    ss_status *st = ss_serving_add(first->set->serving, first->cfg.name, first->version,
                                   (ss_serving_backend){first, worker_submit}, &first->entry);
    if (st) return st;
    first->owns_entry = true;
    ss_serving_backend models[16];
    size_t n = 0;
    for (ss_worker *m = first; m && n < 16; m = m->next_model) {
        m->entry = first->entry;
        models[n++] = (ss_serving_backend){m, worker_submit};
    }
    if (!first->cfg.stages) return NULL;
    st = ss_serving_set_pipeline(first->entry, first->cfg.stages, models);
    first->cfg.stages = NULL;
    return st;
}

static void worker_options_defaults(ss_worker_options *o)
{
    if (!o->request_timeout_ms) o->request_timeout_ms = 10000;
    if (!o->heartbeat_ms) o->heartbeat_ms = 1000;
    if (!o->heartbeat_timeout_ms) o->heartbeat_timeout_ms = 5000;
    /* a few heartbeats fit in the bound, or one late answer would look like a dead agent */
    if (o->heartbeat_ms > o->heartbeat_timeout_ms / 4)
        o->heartbeat_ms = o->heartbeat_timeout_ms / 4 > 50 ? o->heartbeat_timeout_ms / 4 : 50;
    if (!o->max_enqueued) o->max_enqueued = 10000;
}

static ss_worker *worker_new(ss_worker_set *set, const ss_worker_options *opt)
{
    ss_worker *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->notes_tail = &w->notes;
    w->set = set;
    w->epfd = w->evfd = -1;
    w->lost_rank = -1;
    w->opt = *opt;
    worker_options_defaults(&w->opt);
    w->spin_ns = w->opt.reply_spin_us > 0 ? (uint64_t)w->opt.reply_spin_us * 1000u : 0;
    w->version = opt->version ? opt->version : 1;
    snprintf(w->version_str, sizeof w->version_str, "%llu", (unsigned long long)w->version);
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->role, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&w->n_requests, 0);
    return w;
}

/* Not ready yet, the metrics, then the bulk sender and the loop. */
static ss_status *worker_run(ss_worker *w)
{
    w->max_inflight = w->cfg.pipeline ? w->cfg.stage_size + 1 : 1;
    const char *slow = getenv("SHARDSERVE_SLOW_REQUEST_MS");
    long slow_ms = slow && *slow ? strtol(slow, NULL, 10) : 1000;
    w->slow_ns = (uint64_t)(slow_ms >= 0 ? slow_ms : 1000) * 1000000ull;
    snprintf(w->not_ready_why, sizeof w->not_ready_why, "waiting for %d agents", w->cfg.rank_size);
    ss_serving_withdraw_model(w->entry, (size_t)w->cfg.model, w->not_ready_why);
    set_status(w); /* before the loop runs: no rank yet */
    pthread_once(&fam_once, fam_init);
    const char *lv[] = {w->cfg.name, w->version_str};
    w->m_batch = ss_metrics_series(fam.batch, lv);
    w->m_inflight = ss_metrics_series(fam.inflight, lv);
    int rc = pthread_create(&w->bulk_tid, NULL, bulk_main, w);
    if (rc != 0)
        return ss_errf(SS_ERR_INTERNAL, "cannot start the bulk sender thread: %s", strerror(rc));
    if ((rc = pthread_create(&w->loop_tid, NULL, loop_main, w)) != 0) {
        pthread_mutex_lock(&w->mu);
        w->stop = true;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->bulk_tid, NULL);
        return ss_errf(SS_ERR_INTERNAL, "cannot start the worker's loop thread: %s", strerror(rc));
    }
    ss_metrics_add_collector(ss_metrics_global(), collect, w);
    return NULL;
}

/* Each --model names a model the servable declares (a typo would leave its group unused). */
static ss_status *check_model_flags(const ss_worker *first, const ss_worker_options *opt)
{
    for (int k = 0; k < opt->n_models && k < 8; k++) {
        bool found = false;
        for (const ss_worker *m = first; m && !found; m = m->next_model)
            found = opt->models[k].name && !strcmp(opt->models[k].name, m->cfg.model_name);
        if (!found)
            return ss_errf(SS_ERR_INVALID,
                           "--model %s: the servable declares no model of that name",
                           opt->models[k].name ? opt->models[k].name : "");
    }
    return NULL;
}

/* Every model's worker opened (model 0 first, chained by next_model). */
static ss_status *open_models(ss_worker_set *set, const ss_worker_options *opt, ss_worker **first)
{
    char path[4096], *text;
    size_t len;
    ss_status *st =
        ss_servable_config_text(opt->servable_dir, opt->servable, &text, &len, path, sizeof path);
    ss_worker **tail = first;
    for (int k = 0, n = 1; !st && k < n; k++) {
        ss_worker *w = worker_new(set, opt);
        if (!w) {
            st = ss_errf(SS_ERR_NOMEM, "out of memory");
            break;
        }
        *tail = w;
        tail = &w->next_model;
        st = worker_open(w, opt, text, len, path, k);
        if (!st) n = w->cfg.n_models;
    }
    free(text);
    return st ? st : check_model_flags(*first, opt);
}

static void worker_stop(ss_worker *w);

/* The first `started` models run: stop those, free the rest; the later models first, as model 0
 * owns the entry they publish to. */
static void unwind_models(ss_worker *m, size_t started)
{
    if (!m) return;
    unwind_models(m->next_model, started ? started - 1 : 0);
    if (started)
        worker_stop(m);
    else
        worker_free(m);
}

ss_status *ss_worker_set_add(ss_worker_set *set, const ss_worker_options *opt, ss_worker **out)
{
    *out = NULL;
    ss_worker *first = NULL, *m;
    ss_status *st = open_models(set, opt, &first);
    if (!st) st = servable_attach(first);
    size_t started = 0;
    for (m = first; !st && m; m = m->next_model, started++)
        st = worker_run(m);
    if (st) {
        unwind_models(first, started);
        return ss_status_wrap(st, "servable %s", opt->servable);
    }
    pthread_mutex_lock(&set->mu);
    for (m = first; m; m = m->next_model) { /* model 0 last in the list: stopped last */
        m->next = set->workers;
        set->workers = m;
    }
    pthread_mutex_unlock(&set->mu);
    *out = first;
    return NULL;
}

ss_worker *ss_worker_next_model(const ss_worker *w)
{
    return w->next_model;
}

const char *ss_worker_model_label(const ss_worker *w)
{
    return w->model_label;
}

const char *ss_worker_local_file(const ss_worker *w)
{
    return w->local_file[0] ? w->local_file : NULL;
}

static ss_status *wait_model_ready(ss_worker *w);

ss_status *ss_worker_wait_ready(ss_worker *w)
{
    ss_status *st = NULL;
    for (ss_worker *m = w; m && !st; m = m->next_model) {
        st = wait_model_ready(m);
        if (st && m->model_label[0]) st = ss_status_wrap(st, "model %s", m->model_label);
    }
    return st;
}

static ss_status *wait_model_ready(ss_worker *w)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += w->opt.wait_agents_s > 0 ? w->opt.wait_agents_s : 0;
    pthread_mutex_lock(&w->mu);
    while (!w->ready && !w->fatal && !w->stop) {
        if (w->opt.wait_agents_s > 0) {
            if (pthread_cond_timedwait(&w->cv, &w->mu, &dl) == ETIMEDOUT) break;
        } else {
            pthread_cond_wait(&w->cv, &w->mu);
        }
    }
    ss_status *st = NULL;
    if (w->fatal)
        st = ss_errf(SS_ERR_INVALID, "servable %s: the agents do not fit together: %s", w->cfg.name,
                     w->fatal->msg);
    else if (!w->ready)
        st = ss_errf(
            SS_ERR_TIMEOUT,
            "Failed to wait for ready of all agents, current agents count: %d, rank size: %d "
            "(servable %s; missing ranks: %s; waited %d s)%s%s",
            w->alive_count, w->cfg.rank_size, w->cfg.name, w->missing, w->opt.wait_agents_s,
            w->lost_rank >= 0 ? "; " : "", w->lost_rank >= 0 ? w->lost_loading : "");
    pthread_mutex_unlock(&w->mu);
    return st;
}

static void worker_stop(ss_worker *w)
{
    ss_metrics_remove_collector(ss_metrics_global(), collect,
                                w); /* returns once collect() is not running */
    for (int r = 0; r < w->cfg.rank_size; r++)
        ss_metric_set(rank_series(w, fam.rank_up, r), 0);
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    ring(w);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->loop_tid, NULL);
    pthread_mutex_lock(&w->mu);
    pthread_cond_broadcast(&w->cv); /* the bulk sender exits once its queue is empty */
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->bulk_tid, NULL);
    reap_handshakes(w, true);
    for (inbox_item *it = w->items_head; it;) { /* registrations that came after the loop ended */
        inbox_item *next = it->next;
        if (it->kind == IN_REGISTER) ss_link_close(it->conn);
        ss_link_msg_free(&it->msg);
        free(it);
        it = next;
    }
    worker_free(w);
}

void ss_worker_set_stop(ss_worker_set *set)
{
    pthread_mutex_lock(&set->mu);
    for (ss_worker *w = set->workers; w; w = w->next) {
        pthread_mutex_lock(&w->mu);
        w->stop = true; /* the loop answers everything pending, then ends */
        ring(w);
        pthread_cond_broadcast(&w->cv); /* and ss_worker_wait_ready returns */
        pthread_mutex_unlock(&w->mu);
    }
    pthread_mutex_unlock(&set->mu);
}

void ss_worker_set_free(ss_worker_set *set)
{
    if (!set) return;
    while (set->workers) {
        ss_worker *w = set->workers;
        set->workers = w->next;
        worker_stop(w);
    }
    ss_serving_free(set->serving);
    pthread_mutex_destroy(&set->mu);
    free(set);
}
