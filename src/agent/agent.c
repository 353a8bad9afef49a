/*
 * One serving agent: open the rank (group config + communicator + session), register with the
 * Distributed Worker, then execute PREDICTs in arrival order.
 *
 * Reading the link: while idle, the executing thread reads the link itself and runs a PREDICT
 * the moment it arrives (no hand-over to another thread: each thread wake-up costs tens of
 * microseconds when 8 ranks share 2 cores). A helper thread takes over reading only when a
 * request has run for HANDOVER_MS, so heartbeats are answered and later requests are taken off
 * the socket during long computations; it queues PREDICTs, and gives the link back (woken through
 * an eventfd) as soon as the executing thread is idle again. The "read role" mutex makes sure one
 * thread reads at a time. The agent exits when the worker says EXIT, when the link drops or goes
 * silent, or when a collective fails (its communicator is then broken, and the launcher restarts
 * the group).
 */
#include "shardserve/agent.h"

#include "liveness.h"
#include "shardserve/link.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* A queued PREDICT. Nodes are recycled with their tensor buffers, so once shapes are steady a
 * request's tensor bytes go straight from the socket into memory that is already there. */
typedef struct pending {
    ss_link_msg msg;
    uint64_t recv_ns; /* taken off the link (for the request_id DEBUG log) */
    struct pending *next;
    void *buf[SS_AGENT_MAX_INPUTS];
    size_t cap[SS_AGENT_MAX_INPUTS];
} pending;

#define POOL_MAX 4      /* idle nodes kept */
#define BUFFER_ALIGN 64 /* a cache line, so kernels read inputs with aligned vector loads */
#define HANDOVER_MS 100 /* a request running this long: the helper takes over reading the link */

typedef struct {
    ss_link_conn *conn;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_mutex_t rd; /* the read role: held by whichever thread reads the link */
    int wake_fd;        /* eventfd: the executing thread wants the link back */
    bool busy;          /* the executing thread runs a request (since busy_ns) */
    uint64_t busy_ns;
    bool helper_reading; /* the helper holds the read role */
    pending *head, *tail;
    pending *pool; /* idle nodes */
    int n_pool;
    bool closed;
    bool lost; /* closed because the worker went away or broke up the group */
    bool cut;  /* left the group after stopping a request's run at its time limit */
    char why[512];
    int silence_ms;
    _Atomic uint64_t comm_bytes; /* the rank's collective bytes after its last request */
    ss_liveness_slot *live;      /* stamped per frame read, for the launcher's hang check */
} agent_state;

static void pending_free(pending *p)
{
    ss_link_msg_free(&p->msg);
    for (int i = 0; i < SS_AGENT_MAX_INPUTS; i++)
        free(p->buf[i]);
    free(p);
}

/* p's buffer i, grown to at least `bytes` (its contents are not kept); NULL when out of memory. */
static void *pending_buffer(pending *p, size_t i, size_t bytes)
{
    if (bytes > p->cap[i]) {
        void *mem = NULL;
        if (posix_memalign(&mem, BUFFER_ALIGN, bytes)) return NULL;
        free(p->buf[i]);
        p->buf[i] = mem;
        p->cap[i] = bytes;
    }
    return p->buf[i];
}

/* A node for the frame whose header is in *m, its numeric tensors pointed at the node's buffers
 * (grown when too small); NULL when out of memory (the payload then goes to fresh memory). */
static pending *pending_for(agent_state *a, ss_link_msg *m)
{
    pthread_mutex_lock(&a->mu);
    pending *p = a->pool;
    if (p) {
        a->pool = p->next;
        a->n_pool--;
    }
    pthread_mutex_unlock(&a->mu);
    if (!p && !(p = calloc(1, sizeof *p))) return NULL;
    p->next = NULL;
    /* more tensors than the model has inputs: execute refuses the request, no buffers for them */
    for (size_t i = 0; i < m->n_tensors && i < SS_AGENT_MAX_INPUTS; i++) {
        ss_tensor *t = &m->tensors[i];
        if (t->data) continue; /* mapped from shared memory by the link: read in place */
        void *mem = t->dtype == SS_DT_STRING ? NULL : pending_buffer(p, i, t->nbytes);
        if (!mem) continue; /* this one goes to fresh memory */
        t->data = mem;
        t->storage = SS_STORE_BORROWED;
    }
    return p;
}

/* Done with a request: its node goes back to the pool (buffers kept) or is freed. */
static void pending_release(agent_state *a, pending *p)
{
    ss_link_msg_free(&p->msg); /* borrowed tensor storage stays in p->buf */
    pthread_mutex_lock(&a->mu);
    if (a->n_pool < POOL_MAX) {
        p->next = a->pool;
        a->pool = p;
        a->n_pool++;
        p = NULL;
    }
    pthread_mutex_unlock(&a->mu);
    if (p) pending_free(p);
}

/* The link is gone (error, silence, or our own shutdown). Lock held. */
static void link_lost(agent_state *a, const ss_status *st)
{
    snprintf(a->why, sizeof a->why, "%s",
             st->code == SS_ERR_TIMEOUT ? "the worker has been silent for too long" : st->msg);
    a->lost = !a->closed; /* our own shutdown also ends the read */
    a->closed = true;
    pthread_cond_broadcast(&a->cv);
}

/* Read one frame (the caller holds the read role) and deal with it: heartbeats are answered,
 * EXIT and errors close the agent; a PREDICT is returned in *out (NULL otherwise). */
static void read_frame(agent_state *a, int timeout_ms, pending **out)
{
    *out = NULL;
    ss_link_msg m = {0};
    pending *p = NULL;
    ss_status *st = ss_link_recv_header(a->conn, timeout_ms, &m);
    if (!st) ss_liveness_beat(a->live);
    if (!st && m.type == SS_LINK_PREDICT) p = pending_for(a, &m);
    if (!st) st = ss_link_recv_payload(a->conn, &m); /* frees m on failure */
    if (st) {
        if (p) pending_release(a, p);
        pthread_mutex_lock(&a->mu);
        link_lost(a, st);
        pthread_mutex_unlock(&a->mu);
        ss_status_free(st);
        return;
    }
    switch (m.type) {
    case SS_LINK_HEARTBEAT: {
        ss_link_msg ack = {.type = SS_LINK_HEARTBEAT_ACK,
                           .seq = m.seq,
                           .sent_ns = m.sent_ns,
                           .comm_bytes = atomic_load(&a->comm_bytes)};
        ss_status_free(ss_link_send(a->conn, &ack, NULL, 0));
        break;
    }
    case SS_LINK_HEARTBEAT_ACK:
        break;
    case SS_LINK_EXIT:
        pthread_mutex_lock(&a->mu);
        snprintf(a->why, sizeof a->why, "the worker asked to exit: %s", m.message ? m.message : "");
        a->closed = true;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
        break;
    case SS_LINK_PREDICT:
        if (p) {
            p->msg = m;
            p->recv_ns = ss_now_ns();
            *out = p;
            return;
        }
        SS_ERROR("out of memory: a PREDICT frame is dropped");
        break;
    default:
        SS_WARN("unexpected %s frame from the worker", ss_link_type_name(m.type));
    }
    ss_link_msg_free(&m);
}

/* The helper: reads the link while a request runs longer than HANDOVER_MS, queueing what comes. */
static void *helper_main(void *arg)
{
    agent_state *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->closed && !(a->busy && ss_now_ns() - a->busy_ns >= HANDOVER_MS * 1000000ull)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += HANDOVER_MS / 2 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&a->cv, &a->mu, &ts);
        }
        if (a->closed) break;
        a->helper_reading = true;
        pthread_mutex_unlock(&a->mu);
        pthread_mutex_lock(&a->rd);
        for (;;) {
            pthread_mutex_lock(&a->mu);
            bool stop = a->closed || !a->busy;
            pthread_mutex_unlock(&a->mu);
            if (stop) break;
            struct pollfd fds[2] = {{ss_link_conn_fd(a->conn), POLLIN, 0}, {a->wake_fd, POLLIN, 0}};
            if (poll(fds, 2, 1000) <= 0) continue;
            if (fds[1].revents) {
                uint64_t v;
                ssize_t r = read(a->wake_fd, &v, sizeof v); /* drain; the loop re-checks */
                (void)r;
                continue;
            }
            pending *p = NULL;
            read_frame(a, 0, &p); /* a frame has started: bounded by the link's stall timeout */
            if (p) {
                pthread_mutex_lock(&a->mu);
                if (a->tail)
                    a->tail->next = p;
                else
                    a->head = p;
                a->tail = p;
                pthread_mutex_unlock(&a->mu);
            }
        }
        pthread_mutex_lock(&a->mu);
        a->helper_reading = false;
        pthread_mutex_unlock(&a->rd);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* A model with more inputs or outputs than the agent carries is refused here, before it
 * registers, rather than served with some of them silently left out. */
static ss_status *check_model_limits(ss_rank *r)
{
    const ss_rank_config *cfg = ss_rank_get_config(r);
    ss_session *s = ss_rank_session(r);
    int n_in = ss_session_num_inputs(s), n_out = ss_session_num_outputs(s);
    if (n_in > SS_AGENT_MAX_INPUTS)
        return ss_errf(SS_ERR_LIMIT,
                       "rank %d: model %s has %d inputs, more than an agent serves "
                       "(SS_AGENT_MAX_INPUTS = %d)",
                       cfg->rank, cfg->model, n_in, SS_AGENT_MAX_INPUTS);
    if (n_out > SS_AGENT_MAX_OUTPUTS)
        return ss_errf(SS_ERR_LIMIT,
                       "rank %d: model %s has %d outputs, more than an agent serves "
                       "(SS_AGENT_MAX_OUTPUTS = %d)",
                       cfg->rank, cfg->model, n_out, SS_AGENT_MAX_OUTPUTS);
    return NULL;
}

/* The model's input or output specs; check_model_limits has made sure they fit. */
static void fill_specs(ss_session *s, bool inputs, ss_link_spec *specs, size_t *n)
{
    int count = inputs ? ss_session_num_inputs(s) : ss_session_num_outputs(s);
    *n = 0;
    for (int i = 0; i < count; i++) {
        const ss_onnx_value_info *vi = inputs ? ss_session_input(s, i) : ss_session_output(s, i);
        ss_link_spec *sp = &specs[(*n)++];
        sp->name = (char *)vi->name;
        sp->dtype = vi->dtype;
        sp->ndim = vi->ndim < 0 ? 0 : vi->ndim;
        for (int d = 0; d < sp->ndim; d++)
            sp->dims[d] = vi->dims[d];
    }
}

/* MindSpore's batch size rule: with a batch dim, the first dim of every batched input agrees. */
static ss_status *batch_size(const ss_agent_options *opt, const ss_link_spec *in, size_t n,
                             uint32_t *out)
{
    *out = 0;
    if (!opt->with_batch_dim) return NULL;
    for (size_t i = 0; i < n; i++) {
        bool no_batch = false;
        for (int k = 0; k < opt->n_no_batch; k++)
            no_batch |= !strcmp(opt->no_batch_inputs[k], in[i].name);
        if (no_batch) continue;
        if (in[i].ndim == 0 || in[i].dims[0] == 0)
            return ss_errf(
                SS_ERR_INVALID,
                "with_batch_dim: input '%s' has no batch dim (empty shape or first dim 0)",
                in[i].name);
        uint32_t b = in[i].dims[0] < 0 ? 0 : (uint32_t)in[i].dims[0];
        if (*out && b != *out)
            return ss_errf(SS_ERR_INVALID,
                           "with_batch_dim: inputs disagree on the batch size (%u vs %u)", *out, b);
        *out = b;
    }
    return NULL;
}

/* The stage's group, when inputs can reach this rank through the comm layer (more than one rank
 * per stage and the shard tool's "stage<S>" group). */
static const ss_comm_group *stage_group(ss_rank *r)
{
    const ss_rank_config *cfg = ss_rank_get_config(r);
    char name[32];
    snprintf(name, sizeof name, "stage%d", cfg->stage);
    const ss_comm_group *g = ss_comm_group_find(ss_rank_comm(r), name);
    return g && cfg->ranks_per_stage > 1 && ss_comm_group_size(g) == cfg->ranks_per_stage ? g
                                                                                          : NULL;
}

static ss_status *too_many_inputs(ss_rank *r, size_t n)
{
    return ss_errf(
        SS_ERR_LIMIT,
        "rank %d: the request has %zu inputs, more than an agent serves (SS_AGENT_MAX_INPUTS = %d)",
        ss_rank_get_config(r)->rank, n, SS_AGENT_MAX_INPUTS);
}

/* The frame's inputs (its tensors, or what the stage root broadcasts) as ins[] in frame order;
 * the root passes its tensors on to the stage group. */
static ss_status *gather_inputs(ss_rank *r, const ss_comm_group *g, pending *p, ss_tensor *ins,
                                const char **names, size_t *n)
{
    ss_comm *comm = ss_rank_comm(r);
    ss_link_msg *m = &p->msg;
    if (!m->has_input_root) {
        *n = m->n_tensors;
        if (*n > SS_AGENT_MAX_INPUTS) return too_many_inputs(r, *n);
        for (size_t i = 0; i < *n; i++) {
            ins[i] = m->tensors[i];
            names[i] = m->tensor_names ? m->tensor_names[i] : NULL;
        }
        if (!m->share_inputs) return NULL;
        if (!g) return ss_errf(SS_ERR_INVALID, "asked to share inputs without a stage group");
        for (size_t i = 0; i < *n; i++) {
            if (ins[i].dtype == SS_DT_STRING)
                return ss_errf(SS_ERR_UNSUPPORTED, "string inputs cannot be broadcast");
            ss_status *st =
                ss_comm_broadcast(comm, g, ins[i].data, ins[i].nbytes, ss_comm_rank(comm));
            if (st)
                return ss_status_wrap(st, "broadcasting input '%s' to the stage",
                                      names[i] ? names[i] : "");
        }
        return NULL;
    }
    if (!g)
        return ss_errf(SS_ERR_INVALID,
                       "inputs by broadcast from rank %u, but this rank has no stage group",
                       m->input_root);
    *n = m->n_inputs;
    if (*n > SS_AGENT_MAX_INPUTS) return too_many_inputs(r, *n);
    for (size_t i = 0; i < *n; i++) {
        const ss_link_spec *sp = &m->inputs[i];
        size_t bytes = ss_dtype_size(sp->dtype);
        for (int d = 0; d < sp->ndim; d++)
            bytes *= (size_t)sp->dims[d]; /* checked by the link */
        void *mem =
            pending_buffer(p, i, bytes); /* the frame has no tensors: its buffers are free */
        if (!mem) return ss_errf(SS_ERR_NOMEM, "input '%s': %zu bytes", sp->name, bytes);
        ss_status *st = ss_tensor_borrow(&ins[i], sp->dtype, sp->ndim, sp->dims, mem, bytes);
        if (st) return ss_status_wrap(st, "input '%s'", sp->name);
        names[i] = sp->name;
        st = ss_comm_broadcast(comm, g, ins[i].data, bytes, (int)m->input_root);
        if (st)
            return ss_status_wrap(st, "receiving input '%s' from rank %u", sp->name, m->input_root);
    }
    return NULL;
}

/* Where the places of the request want its outputs (dest[i], cap[i]; NULL = nowhere), held
 * until untarget: the session computes an output there itself when it can. */
static void target_places(const ss_link_msg *m, int n_outputs, void **dest, size_t *cap)
{
    for (int i = 0; i < SS_AGENT_MAX_OUTPUTS; i++)
        dest[i] = NULL, cap[i] = 0;
    for (size_t k = 0; k < m->n_places; k++) {
        uint32_t i = m->places[k].output;
        if (i >= (uint32_t)n_outputs || i >= SS_AGENT_MAX_OUTPUTS || dest[i]) continue;
        ss_status *st = ss_link_shm_target(&m->places[k], &dest[i]);
        cap[i] = st ? 0 : (size_t)m->places[k].byte_size;
        ss_status_free(st); /* not placed: place_outputs says why */
    }
}

static void untarget_places(void **dest)
{
    for (int i = 0; i < SS_AGENT_MAX_OUTPUTS; i++)
        if (dest[i]) ss_link_shm_untarget(dest[i]);
}

/* A token loop's KV pool bookkeeping before the model runs: sequences freed (ones the pool does
 * not hold are no error: a failed call may not have created them), then created. */
static ss_status *pool_sequences(ss_session *s, const ss_link_msg *m)
{
    for (size_t i = 0; i < m->n_seq_release; i++)
        if (ss_session_seq_length(s, m->seq_release[i]) >= 0) {
            ss_status *st = ss_session_seq_free(s, m->seq_release[i]);
            if (st) return st;
        }
    for (size_t i = 0; i < m->n_seq_create; i++) {
        ss_status *st = ss_session_seq_create(s, m->seq_create[i]);
        if (st) return ss_status_wrap(st, "sequence %lld", (long long)m->seq_create[i]);
    }
    return NULL;
}

/* A PREDICT that only frees pool sequences (the token loop is idle): nothing to run. */
static bool pool_only(const ss_link_msg *m)
{
    return !m->n_tensors && !m->has_input_root && !m->n_seq_create && m->n_seq_release;
}

static ss_status *execute(ss_rank *r, const ss_comm_group *stage, pending *p, void *const *dest,
                          const size_t *cap, const ss_tensor **outs, int *n_outs)
{
    ss_session *s = ss_rank_session(r);
    int n_in = ss_session_num_inputs(s);
    ss_tensor got[SS_AGENT_MAX_INPUTS], ins[SS_AGENT_MAX_INPUTS];
    const char *names[SS_AGENT_MAX_INPUTS];
    size_t n_got = 0;
    *n_outs = 0;
    ss_status *pst = pool_sequences(s, &p->msg);
    if (pst || pool_only(&p->msg)) return pst;
    if (n_in > SS_AGENT_MAX_INPUTS) return too_many_inputs(r, (size_t)n_in); /* checked at load */
    if (p->msg.shm_error)
        return ss_errf(SS_ERR_INVALID, "rank %d: an input in shared memory: %s",
                       ss_rank_get_config(r)->rank, p->msg.shm_error);
    ss_status *st = gather_inputs(r, stage, p, got, names, &n_got);
    if (st) return st;
    if ((size_t)n_in != n_got)
        return ss_errf(SS_ERR_INVALID,
                       "Inputs size not match: the request has %zu inputs, the model %d", n_got,
                       n_in);
    for (int i = 0; i < n_in; i++) {
        const char *want = ss_session_input(s, i)->name;
        int found = -1;
        for (size_t k = 0; k < n_got; k++)
            if (names[k] && !strcmp(names[k], want)) found = (int)k;
        if (found < 0) found = i; /* positional when unnamed */
        ins[i] = got[found];
    }
    if (!p->msg.return_result) /* nobody reads this rank's outputs: run for its collectives */
        return ss_session_run_effects(s, ins, n_in);
    st = ss_session_run_into(s, ins, n_in, dest, cap, outs);
    if (!st) *n_outs = ss_session_num_outputs(s);
    return st;
}

/* The next request to run: a queued one (taken off the link by the helper), or the next frame
 * read here while idle. NULL once the agent is closed: queued requests are then not worth
 * running (the worker has answered them already, their results could not be delivered). */
static pending *next_request(agent_state *a)
{
    for (;;) {
        pthread_mutex_lock(&a->mu);
        pending *p = a->closed ? NULL : a->head;
        if (p) {
            a->head = p->next;
            if (!a->head) a->tail = NULL;
        }
        bool closed = a->closed;
        if (p) a->busy = true, a->busy_ns = ss_now_ns();
        pthread_mutex_unlock(&a->mu);
        if (p || closed) return p;
        pthread_mutex_lock(&a->rd); /* waits while the helper hands the link back */
        pthread_mutex_lock(&a->mu);
        bool skip = a->closed || a->head; /* the helper queued something before letting go */
        pthread_mutex_unlock(&a->mu);
        if (!skip) read_frame(a, a->silence_ms, &p);
        if (p) { /* busy before the read role is released: the helper must not take over yet */
            pthread_mutex_lock(&a->mu);
            a->busy = true;
            a->busy_ns = ss_now_ns();
            pthread_mutex_unlock(&a->mu);
        }
        pthread_mutex_unlock(&a->rd);
        if (p) return p;
    }
}

/* Outputs the worker wants in shared memory (the client's region): written there, and tp[i]
 * pointed at that memory so the RESULT names it instead of carrying the bytes. An output that
 * cannot be placed (too big for its place, a key that is gone) travels as usual: the front end
 * then reports what is wrong with the client's region. */
static void place_outputs(const ss_link_msg *m, int rank, const ss_tensor **tp, size_t nt,
                          ss_tensor *placed, bool *was_placed)
{
    for (size_t k = 0; k < m->n_places; k++) {
        uint32_t i = m->places[k].output;
        if (i >= nt || was_placed[i]) continue;
        ss_status *st = ss_link_shm_place(&m->places[k], tp[i], &placed[i]);
        if (st) {
            SS_DEBUG("rank %d: output %u goes over the link: %s", rank, i, st->msg);
            ss_status_free(st);
            continue;
        }
        was_placed[i] = true;
        tp[i] = &placed[i];
    }
}

static void release_placed(ss_tensor *placed, const bool *was_placed, size_t nt)
{
    for (size_t i = 0; i < nt; i++)
        if (was_placed[i]) ss_link_shm_release(&placed[i]);
}

/* Whether the client shrank a shared-memory object this request read (its inputs) or wrote (its
 * places) while it ran: the guard gave the access zero pages (shm_guard.c), so the result is
 * garbage and the request fails, naming the object. */
static ss_status *shm_lost(const ss_link_msg *m, int rank, void *const *dest, const size_t *cap,
                           const ss_tensor *placed, const bool *was_placed, size_t nt)
{
    char key[256] = "";
    bool lost = false;
    for (size_t i = 0; i < m->n_tensors && !lost; i++)
        lost = ss_link_shm_lost(m->tensors[i].data, m->tensors[i].nbytes, key, sizeof key);
    for (int i = 0; i < SS_AGENT_MAX_OUTPUTS && !lost; i++)
        lost = ss_link_shm_lost(dest[i], cap[i], key, sizeof key);
    for (size_t i = 0; i < nt && !lost; i++)
        lost = was_placed[i] && ss_link_shm_lost(placed[i].data, placed[i].nbytes, key, sizeof key);
    if (!lost) return NULL;
    return ss_errf(SS_ERR_INVALID,
                   "rank %d: shared memory '%s' was shrunk (ftruncate) while the request used it; "
                   "its pages are gone, the request fails",
                   rank, key);
}

static ss_status *serve(ss_rank *r, agent_state *a, const ss_comm_group *stage)
{
    const ss_rank_config *cfg = ss_rank_get_config(r);
    ss_session *s = ss_rank_session(r);
    for (;;) {
        pending *p = next_request(a);
        if (!p) return NULL; /* closed */
        const ss_tensor *outs = NULL;
        int n_outs = 0;
        uint64_t t_start = ss_now_ns();
        void *dest[SS_AGENT_MAX_OUTPUTS];
        size_t cap[SS_AGENT_MAX_OUTPUTS];
        target_places(&p->msg, ss_session_num_outputs(s), dest, cap);
        /* the worker stops waiting then: so does a run whose length the data decides */
        uint64_t deadline =
            p->msg.time_limit_ms ? p->recv_ns + (uint64_t)p->msg.time_limit_ms * 1000000ull : 0;
        ss_session_set_deadline(s, deadline);
        ss_status *st = execute(r, stage, p, dest, cap, &outs, &n_outs);
        uint64_t t_run = ss_now_ns();
        ss_link_msg res = {.type = SS_LINK_RESULT,
                           .request_id = p->msg.request_id,
                           .status_code = st ? (int32_t)st->code : 0,
                           .message = st ? st->msg : "",
                           .comm_bytes = ss_comm_bytes(ss_rank_comm(r)),
                           .kv_block_tokens = (uint32_t)ss_session_kv_block_tokens(s)};
        int64_t kv_total = 0, kv_free = 0;
        ss_session_kv_blocks(s, &kv_total, &kv_free);
        res.kv_blocks = (uint64_t)kv_total;
        const ss_tensor *tp[SS_AGENT_MAX_OUTPUTS];
        char *names[SS_AGENT_MAX_OUTPUTS];
        size_t nt = 0;
        if (!st && p->msg.return_result) /* n_outs fits: checked at load */
            for (int i = 0; i < n_outs && i < SS_AGENT_MAX_OUTPUTS; i++) {
                tp[nt] = &outs[i];
                names[nt++] = (char *)ss_session_output(s, i)->name;
            }
        res.tensor_names = names;
        atomic_store(&a->comm_bytes, res.comm_bytes);
        ss_tensor placed[SS_AGENT_MAX_OUTPUTS];
        bool was_placed[SS_AGENT_MAX_OUTPUTS] = {0};
        place_outputs(&p->msg, cfg->rank, tp, nt, placed, was_placed);
        if (!st && (st = shm_lost(&p->msg, cfg->rank, dest, cap, placed, was_placed, nt))) {
            res.status_code = (int32_t)st->code;
            res.message = st->msg;
        }
        /* a quiet request is answered only when it failed */
        ss_status *sst = st || !p->msg.quiet ? ss_link_send(a->conn, &res, tp, st ? 0 : nt) : NULL;
        release_placed(placed, was_placed, nt);
        untarget_places(dest);
        /* the monotonic start and end let a test see whether stages overlap across requests */
        SS_DEBUG("rank %d: request_id %llu: waited %.3f ms, ran %.3f ms (monotonic %llu..%llu ns), "
                 "answered in "
                 "%.3f ms (%zu outputs)%s",
                 cfg->rank, (unsigned long long)p->msg.request_id,
                 (double)(t_start - p->recv_ns) / 1e6, (double)(t_run - t_start) / 1e6,
                 (unsigned long long)t_start, (unsigned long long)t_run,
                 (double)(ss_now_ns() - t_run) / 1e6, nt, st ? " failed" : "");
        bool comm_broken = st && (st->code == SS_ERR_UNAVAILABLE || st->code == SS_ERR_TIMEOUT);
        /* A run stopped at its deadline may have stopped at another point than the other ranks'
         * (a Loop's iteration), which may then wait in a collective this rank will not join, or
         * pair it with the next request's: the group starts again instead. */
        bool cut_short = st && cfg->rank_size > 1 && ss_session_stopped_at_deadline(s);
        if (st)
            SS_ERROR("rank %d: request %llu failed: %s", cfg->rank,
                     (unsigned long long)p->msg.request_id, st->msg);
        pending_release(a, p);
        pthread_mutex_lock(&a->mu);
        a->busy = false;
        bool wake = a->helper_reading;
        pthread_mutex_unlock(&a->mu);
        if (wake) { /* the helper reads the link: have it give the link back */
            uint64_t one = 1;
            ssize_t w = write(a->wake_fd, &one, sizeof one);
            (void)w;
        }
        if (comm_broken || cut_short) {
            a->cut = !comm_broken;
            ss_status *out =
                ss_errf(comm_broken ? st->code : SS_ERR_UNAVAILABLE,
                        "rank %d: %s, leaving the group: %s", cfg->rank,
                        comm_broken ? "a collective failed" : "a run was stopped at its time limit",
                        st->msg);
            ss_status_free(st);
            ss_status_free(sst);
            return out;
        }
        ss_status_free(st);
        if (sst) return ss_status_wrap(sst, "rank %d: sending a result to the worker", cfg->rank);
    }
}

/* Connects and says which rank is about to load: an agent killed while it maps its weights (the
 * OOM killer's usual moment) is then named by the worker rather than merely missing. */
static ss_status *connect_loading(const ss_agent_options *opt, const ss_link_options *lo,
                                  ss_link_conn **conn)
{
    ss_rank_config cfg;
    ss_status *st = ss_rank_config_load(opt->config_path, &cfg);
    if (st) return st;
    int connect_ms = opt->connect_timeout_ms ? opt->connect_timeout_ms : 60000;
    st = ss_link_connect_retry(opt->worker_address, lo, connect_ms, 500, conn);
    if (!st) {
        ss_link_msg m = {.type = SS_LINK_LOADING,
                         .rank = (uint32_t)cfg.rank,
                         .rank_size = (uint32_t)cfg.rank_size,
                         .stage = (uint32_t)cfg.stage,
                         .stage_size = (uint32_t)cfg.stage_size,
                         .pid = getpid()};
        st = ss_link_send(*conn, &m, NULL, 0);
    }
    ss_rank_config_free(&cfg);
    return st;
}

/* Before REGISTER: the worker logs why this rank will not register. */
static void tell_load_failed(ss_link_conn *conn, ss_status *why)
{
    ss_link_msg bye = {.type = SS_LINK_EXIT, .message = why->msg};
    ss_status_free(ss_link_send(conn, &bye, NULL, 0));
}

ss_status *ss_agent_run(const ss_agent_options *opt)
{
    ss_link_options lo;
    ss_link_options_default(&lo);
    lo.secret = opt->secret;
    lo.secret_len = opt->secret_len;
    ss_link_conn *conn = NULL;
    ss_status *st = connect_loading(opt, &lo, &conn);
    if (st) {
        ss_link_close(conn);
        return st;
    }
    ss_rank_options ro = {.backend = opt->backend,
                          .session = opt->session,
                          .timeout_ms = opt->comm_timeout_ms,
                          .model_path = opt->model_path,
                          .blas_threads = opt->threads,
                          .refused = opt->shard_refused};
    ss_rank *r;
    st = ss_rank_open(opt->config_path, &ro, &r);
    if (st) {
        tell_load_failed(conn, st);
        ss_link_close(conn);
        return st;
    }
    const ss_rank_config *cfg = ss_rank_get_config(r);
    ss_session *s = ss_rank_session(r);
    const ss_comm_group *stage = stage_group(r); /* NULL: inputs cannot come by broadcast */
    ss_link_spec ins[SS_AGENT_MAX_INPUTS], outs[SS_AGENT_MAX_OUTPUTS];
    size_t n_in = 0, n_out = 0;
    uint32_t batch = 0;
    st = check_model_limits(r);
    if (!st) {
        fill_specs(s, true, ins, &n_in);
        fill_specs(s, false, outs, &n_out);
        st = batch_size(opt, ins, n_in, &batch);
    }
    if (st) {
        if (opt->shard_refused) *opt->shard_refused = ss_rank_load_refused(st); /* the model's */
        tell_load_failed(conn, st);
    }
    agent_state a = {.conn = conn,
                     .silence_ms = opt->worker_silence_ms ? opt->worker_silence_ms : 10000};
    a.live = ss_liveness_attach();
    pthread_mutex_init(&a.mu, NULL);
    pthread_cond_init(&a.cv, NULL);
    pthread_mutex_init(&a.rd, NULL);
    a.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!st && a.wake_fd < 0) st = ss_errf(SS_ERR_IO, "eventfd: %s", strerror(errno));
    if (!st) {
        char addr[sizeof "pid -2147483648"];
        snprintf(addr, sizeof addr, "pid %d", (int)getpid());
        ss_link_msg reg = {.type = SS_LINK_REGISTER,
                           .rank = (uint32_t)cfg->rank,
                           .rank_size = (uint32_t)cfg->rank_size,
                           .stage = (uint32_t)cfg->stage,
                           .stage_size = (uint32_t)cfg->stage_size,
                           .pid = getpid(),
                           .batch_size = batch,
                           .inputs = ins,
                           .n_inputs = n_in,
                           .outputs = outs,
                           .n_outputs = n_out,
                           .address = addr,
                           .shares_inputs = stage != NULL};
        st = ss_link_send(a.conn, &reg, NULL, 0);
        ss_link_msg ack = {0};
        if (!st) st = ss_link_recv(a.conn, 10000, &ack);
        if (!st && (ack.type != SS_LINK_REGISTER_ACK || !ack.accepted))
            st = ss_errf(SS_ERR_INVALID, "the worker rejected rank %d: %s", cfg->rank,
                         ack.message && ack.message[0] ? ack.message : "unexpected reply");
        if (!st && ack.kv_cache_bytes) /* the servable sizes its generation's KV pool */
            st = ss_session_set_kv_cache_bytes(s, (size_t)ack.kv_cache_bytes);
        ss_link_msg_free(&ack);
    }
    if (!st) {
        SS_INFO("rank %d registered with %s", cfg->rank, opt->worker_address);
        ss_liveness_beat(a.live); /* registered: the launcher's hang check starts */
        pthread_t helper;
        bool helper_ok = pthread_create(&helper, NULL, helper_main, &a) == 0;
        st = serve(r, &a, stage);
        if (!st) SS_INFO("rank %d exits: %s", cfg->rank, a.why);
        ss_link_msg bye = {.type = SS_LINK_EXIT, .message = st ? st->msg : "agent exiting"};
        ss_status_free(ss_link_send(a.conn, &bye, NULL, 0));
        pthread_mutex_lock(&a.mu);
        a.closed = true; /* ends the helper (its read fails on the shutdown below, not "lost") */
        pthread_cond_broadcast(&a.cv);
        pthread_mutex_unlock(&a.mu);
        uint64_t one = 1;
        ssize_t w = write(a.wake_fd, &one, sizeof one);
        (void)w;
        ss_link_shutdown(a.conn);
        if (helper_ok) pthread_join(helper, NULL);
        if (!st && a.lost) /* the launcher decides whether to start the group again */
            st = ss_errf(SS_ERR_UNAVAILABLE, "rank %d: lost the worker: %s", cfg->rank, a.why);
        if (opt->left_at_deadline) *opt->left_at_deadline = a.cut;
        for (pending *p = a.head; p;) {
            pending *next = p->next;
            pending_free(p);
            p = next;
        }
        for (pending *p = a.pool; p;) {
            pending *next = p->next;
            pending_free(p);
            p = next;
        }
    }
    ss_link_close(a.conn);
    if (a.wake_fd >= 0) close(a.wake_fd);
    pthread_mutex_destroy(&a.rd);
    pthread_mutex_destroy(&a.mu);
    pthread_cond_destroy(&a.cv);
    ss_liveness_detach(a.live);
    ss_rank_close(r);
    return st;
}
