/*
 * mpi backend (Open MPI; ranks started by mpirun). The comm layer starts MPI itself
 * (MPI_Init_thread, SERIALIZED) unless the program already did, and sets MPI_ERRORS_RETURN.
 * World is a duplicate of MPI_COMM_WORLD; each group becomes a communicator made with
 * MPI_Comm_create_group (members only). Every operation is nonblocking and completed by a test
 * loop (MPI_Test + sched_yield, with short naps once a wait passes 10 ms) bounded by the timeout,
 * so a dead or stuck peer is an error, never a hang. Ranks on the same host exchange pids at
 * creation, so a dead one is named. MPI_Finalize runs at exit unless a communicator failed (it
 * could block on a dead peer).
 */
#include "comm_internal.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#define TAG_P2P 7001
#define CHUNK_BYTES (1u << 20)
#define MAX_CHUNKS 256

typedef struct {
    MPI_Comm *comms; /* per group; MPI_COMM_NULL where this rank is not a member */
    int *pid;        /* per world rank, 0 when on another host */
} mpi_impl;

static bool we_initialized, any_failed;
static MPI_Op f16_sum = MPI_OP_NULL;

static void finalize_at_exit(void)
{
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin && !any_failed) MPI_Finalize();
}

_Noreturn void ss_comm_mpi_exit(int code, bool abort_job)
{
    fflush(NULL);
    int inited = 0, fin = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    if (inited && !fin && abort_job) MPI_Abort(MPI_COMM_WORLD, code);
    _exit(code); /* not exit(): finalize_at_exit would wait in MPI_Finalize for the running ranks */
}

static void f16_sum_fn(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] = ss_f32_to_f16(ss_f16_to_f32(a[i]) + ss_f16_to_f32(b[i]));
}

static ss_status *mpi_err(int rc, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return ss_errf(SS_ERR_UNAVAILABLE, "%s failed: %s", what, msg);
}

ss_status *ss_comm_mpi_init(ss_comm *c, const ss_comm_config *cfg)
{
    int inited = 0, rc;
    MPI_Initialized(&inited);
    if (!inited) {
        int fin = 0;
        MPI_Finalized(&fin);
        if (fin) return ss_errf(SS_ERR_UNSUPPORTED, "MPI was already finalized in this process");
        int provided = 0;
        rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
        if (rc != MPI_SUCCESS) return mpi_err(rc, "MPI_Init_thread");
        we_initialized = true;
        atexit(finalize_at_exit);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if ((cfg->rank >= 0 && cfg->rank != rank) || (cfg->size >= 0 && cfg->size != size))
        return ss_errf(SS_ERR_INVALID, "configured as rank %d of %d but MPI says rank %d of %d",
                       cfg->rank, cfg->size, rank, size);
    c->rank = rank;
    c->size = size;
    if (f16_sum == MPI_OP_NULL) MPI_Op_create(f16_sum_fn, 1, &f16_sum);
    return NULL;
}

static mpi_impl *impl(ss_comm *c)
{
    return c->impl;
}

/* Complete a request within the timeout; names a dead same-host peer if there is one. */
static ss_status *complete_all(ss_comm *c, const ss_comm_group *g, int nreq, MPI_Request *req,
                               MPI_Status *out, const char *what, int peer)
{
    uint64_t t0 = ss_now_ns(), deadline = t0 + (uint64_t)c->timeout_ms * 1000000u;
    uint64_t next_check = t0 + 20000000u;
    long sleep_ns = 0;
    for (long i = 0;; i++) {
        int done = 0;
        /* MPI_Test leaves MPI_ERROR as it was (MPI 3.1 section 3.2.5): start it clean */
        MPI_Status status = {.MPI_ERROR = MPI_SUCCESS};
        int rc = nreq == 1 ? MPI_Test(req, &done, &status)
                           : MPI_Testall(nreq, req, &done, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_err(rc, what);
        if (done) {
            if (out && nreq == 1) *out = status;
            return NULL;
        }
        if (i < 200) continue;
        uint64_t now = ss_now_ns();
        if (now >= next_check || now >= deadline) {
            next_check = now + 20000000u;
            for (int j = 0; j < g->n; j++) {
                int r = g->members[j];
                if ((peer >= 0 && r != peer) || r == c->rank || impl(c)->pid[r] <= 0) continue;
                if (kill(impl(c)->pid[r], 0) != 0 && errno == ESRCH)
                    return ss_errf(SS_ERR_UNAVAILABLE,
                                   "rank %d (pid %d) died during %s in "
                                   "group %s",
                                   r, impl(c)->pid[r], what, g->name);
            }
            if (now >= deadline) {
                if (peer >= 0)
                    return ss_errf(SS_ERR_TIMEOUT,
                                   "rank %d did not complete %s with rank %d in "
                                   "group %s within %d ms",
                                   peer, what, c->rank, g->name, c->timeout_ms);
                return ss_errf(SS_ERR_TIMEOUT,
                               "%s in group %s did not complete within %d ms: a "
                               "member is stuck or dead (no member on this host died)",
                               what, g->name, c->timeout_ms);
            }
        }
        /* Nonblocking collectives only progress inside MPI calls, so poll like a blocking MPI
         * call would (MPI_Test yields the core when mpi_yield_when_idle is set), and after the
         * first 10 ms nap briefly every 64 polls so a long wait costs little CPU. */
        if (now - t0 < 10000000u || i % 64) {
            sched_yield();
            continue;
        }
        sleep_ns = sleep_ns ? sleep_ns * 2 : 10000;
        if (sleep_ns > 200000) sleep_ns = 200000;
        struct timespec ts = {0, sleep_ns};
        nanosleep(&ts, NULL);
    }
}

static ss_status *complete(ss_comm *c, const ss_comm_group *g, MPI_Request *req, MPI_Status *out,
                           const char *what, int peer)
{
    return complete_all(c, g, 1, req, out, what, peer);
}

static ss_status *failed(ss_status *st)
{
    if (st) any_failed = true;
    return st;
}

static ss_status *mpi_allreduce(ss_comm *c, const ss_comm_group *g, void *buf, ss_dtype dt,
                                size_t count)
{
    if (count > INT32_MAX) return ss_errf(SS_ERR_LIMIT, "mpi allreduce of %zu elements", count);
    MPI_Datatype type = dt == SS_DT_FLOAT32 ? MPI_FLOAT
                        : dt == SS_DT_INT32 ? MPI_INT32_T
                        : dt == SS_DT_INT64 ? MPI_INT64_T
                                            : MPI_UINT16_T;
    MPI_Op op = dt == SS_DT_FLOAT16 ? f16_sum : MPI_SUM;
    /* Large buffers go as several concurrent chunks: Open MPI's nonblocking allreduce moves one
     * big buffer step by step, many chunks in flight keep every progress call busy (~4x faster at
     * 16 MiB with 8 oversubscribed ranks). */
    size_t es = ss_dtype_size(dt), per = CHUNK_BYTES / es;
    int nreq = count > per ? (int)((count + per - 1) / per) : 1;
    if (nreq > MAX_CHUNKS) {
        per = (count + MAX_CHUNKS - 1) / MAX_CHUNKS;
        nreq = (int)((count + per - 1) / per);
    }
    MPI_Request req[MAX_CHUNKS];
    for (int i = 0; i < nreq; i++) {
        size_t off = (size_t)i * per, n = count - off < per ? count - off : per;
        int rc = MPI_Iallreduce(MPI_IN_PLACE, (uint8_t *)buf + off * es, (int)n, type, op,
                                impl(c)->comms[g->index], &req[i]);
        if (rc != MPI_SUCCESS) return failed(mpi_err(rc, "MPI_Iallreduce"));
    }
    return failed(complete_all(c, g, nreq, req, NULL, "allreduce", -1));
}

static ss_status *mpi_allgather(ss_comm *c, const ss_comm_group *g, const void *in, void *out,
                                size_t outer, size_t row)
{
    size_t piece = outer * row;
    if (piece > INT32_MAX)
        return ss_errf(SS_ERR_LIMIT, "mpi allgather of %zu bytes per rank", piece);
    uint8_t *tmp = outer > 1 || !out ? malloc(piece * (size_t)g->n + 1) : out; /* never 0 bytes */
    if (!tmp) return ss_errf(SS_ERR_NOMEM, "out of memory for allgather (%zu bytes)", piece);
    MPI_Request req;
    int rc = MPI_Iallgather(in, (int)piece, MPI_BYTE, tmp, (int)piece, MPI_BYTE,
                            impl(c)->comms[g->index], &req);
    ss_status *st = rc == MPI_SUCCESS ? complete(c, g, &req, NULL, "allgather", -1)
                                      : mpi_err(rc, "MPI_Iallgather");
    if (!st && out && tmp != out)
        for (int j = 0; j < g->n; j++)
            for (size_t o = 0; o < outer; o++)
                memcpy((uint8_t *)out + (o * (size_t)g->n + (size_t)j) * row,
                       tmp + (size_t)j * piece + o * row, row);
    if (tmp != out) free(tmp);
    return failed(st);
}

static ss_status *mpi_broadcast(ss_comm *c, const ss_comm_group *g, void *buf, size_t nbytes,
                                int root)
{
    if (nbytes > INT32_MAX) return ss_errf(SS_ERR_LIMIT, "mpi broadcast of %zu bytes", nbytes);
    MPI_Request req;
    int rc = MPI_Ibcast(buf, (int)nbytes, MPI_BYTE, root, impl(c)->comms[g->index], &req);
    if (rc != MPI_SUCCESS) return failed(mpi_err(rc, "MPI_Ibcast"));
    return failed(complete(c, g, &req, NULL, "broadcast", -1));
}

static int group_rank_of(const ss_comm_group *g, int world)
{
    for (int i = 0; i < g->n; i++)
        if (g->members[i] == world) return i;
    return -1;
}

static ss_status *mpi_send(ss_comm *c, const ss_comm_group *g, const void *buf, size_t nbytes,
                           int peer)
{
    if (nbytes > INT32_MAX) return ss_errf(SS_ERR_LIMIT, "mpi send of %zu bytes", nbytes);
    MPI_Request req;
    int rc = MPI_Isend(buf, (int)nbytes, MPI_BYTE, group_rank_of(g, peer), TAG_P2P,
                       impl(c)->comms[g->index], &req);
    if (rc != MPI_SUCCESS) return failed(mpi_err(rc, "MPI_Isend"));
    return failed(complete(c, g, &req, NULL, "send", peer));
}

static ss_status *mpi_recv(ss_comm *c, const ss_comm_group *g, void *buf, size_t nbytes, int peer)
{
    if (nbytes > INT32_MAX) return ss_errf(SS_ERR_LIMIT, "mpi recv of %zu bytes", nbytes);
    MPI_Request req;
    MPI_Status status;
    int rc = MPI_Irecv(buf, (int)nbytes, MPI_BYTE, group_rank_of(g, peer), TAG_P2P,
                       impl(c)->comms[g->index], &req);
    if (rc != MPI_SUCCESS) return failed(mpi_err(rc, "MPI_Irecv"));
    ss_status *st = complete(c, g, &req, &status, "recv", peer);
    if (st) {
        /* A message longer than the buffer fails the request with MPI_ERR_TRUNCATE. */
        if (st->msg[0] && strstr(st->msg, "truncat")) {
            ss_status_free(st);
            return ss_errf(SS_ERR_INVALID,
                           "send/recv size mismatch: rank %d sent more than the %zu "
                           "bytes rank %d expected",
                           peer, nbytes, c->rank);
        }
        return failed(st);
    }
    if (status.MPI_ERROR == MPI_ERR_TRUNCATE)
        return ss_errf(SS_ERR_INVALID,
                       "send/recv size mismatch: rank %d sent more than the %zu "
                       "bytes rank %d expected",
                       peer, nbytes, c->rank);
    int got = 0;
    MPI_Get_count(&status, MPI_BYTE, &got);
    if ((size_t)got != nbytes)
        return ss_errf(SS_ERR_INVALID,
                       "send/recv size mismatch: rank %d sent %d bytes but rank %d "
                       "expected %zu",
                       peer, got, c->rank, nbytes);
    return NULL;
}

static ss_status *mpi_barrier(ss_comm *c, const ss_comm_group *g)
{
    MPI_Request req;
    int rc = MPI_Ibarrier(impl(c)->comms[g->index], &req);
    if (rc != MPI_SUCCESS) return failed(mpi_err(rc, "MPI_Ibarrier"));
    return failed(complete(c, g, &req, NULL, "barrier", -1));
}

static void mpi_destroy(ss_comm *c)
{
    mpi_impl *m = impl(c);
    if (!m) return;
    for (int i = 0; m->comms && i < c->ngroups; i++)
        if (m->comms[i] != MPI_COMM_NULL && !c->broken) MPI_Comm_free(&m->comms[i]);
    if (c->broken) any_failed = true;
    free(m->comms);
    free(m->pid);
    free(m);
    c->impl = NULL;
}

static const ss_comm_ops mpi_ops = {mpi_allreduce, mpi_allgather, mpi_broadcast, mpi_send,
                                    mpi_recv,      mpi_barrier,   mpi_destroy};

ss_status *ss_comm_mpi_open(ss_comm *c, const ss_comm_config *cfg)
{
    mpi_impl *m = calloc(1, sizeof *m);
    if (!m) return ss_errf(SS_ERR_NOMEM, "out of memory for the mpi communicator");
    c->impl = m;
    c->ops = &mpi_ops;
    m->comms = malloc((size_t)c->ngroups * sizeof(MPI_Comm));
    m->pid = calloc((size_t)c->size, sizeof(int));
    long *info = calloc((size_t)c->size * 2, sizeof(long));
    if (!m->comms || !m->pid || !info) {
        free(info);
        return ss_errf(SS_ERR_NOMEM, "out of memory for the mpi communicator");
    }
    for (int i = 0; i < c->ngroups; i++)
        m->comms[i] = MPI_COMM_NULL;
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &m->comms[0]);
    if (rc != MPI_SUCCESS) {
        free(info);
        return mpi_err(rc, "MPI_Comm_dup");
    }
    MPI_Comm_set_errhandler(m->comms[0], MPI_ERRORS_RETURN);
    /* Exchange (pid, host id) so waits can tell a dead peer on this host. */
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    unsigned long h = 5381;
    for (char *p = host; *p; p++)
        h = h * 33 + (unsigned char)*p;
    long mine[2] = {(long)getpid(), (long)(h & 0x7fffffff)};
    rc = MPI_Allgather(mine, 2, MPI_LONG, info, 2, MPI_LONG, m->comms[0]);
    if (rc != MPI_SUCCESS) {
        free(info);
        return mpi_err(rc, "MPI_Allgather of pids");
    }
    for (int r = 0; r < c->size; r++)
        m->pid[r] = info[2 * r + 1] == mine[1] ? (int)info[2 * r] : 0;
    free(info);
    MPI_Group world;
    MPI_Comm_group(m->comms[0], &world);
    for (int i = 1; i < c->ngroups; i++) {
        const ss_comm_group *g = &c->groups[i];
        if (g->me < 0) continue;
        MPI_Group sub;
        MPI_Group_incl(world, g->n, g->members, &sub);
        rc = MPI_Comm_create_group(m->comms[0], sub, 100 + i, &m->comms[i]);
        MPI_Group_free(&sub);
        if (rc != MPI_SUCCESS) {
            MPI_Group_free(&world);
            return mpi_err(rc, "MPI_Comm_create_group");
        }
        MPI_Comm_set_errhandler(m->comms[i], MPI_ERRORS_RETURN);
    }
    MPI_Group_free(&world);
    (void)cfg;
    (void)we_initialized;
    return NULL;
}
