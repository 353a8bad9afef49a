/*
 * comm: collectives between the ranks of one sharded model (one process per rank).
 *
 * A communicator is made from (backend, rank, size, session, timeout, groups). It offers
 * allreduce (SUM of float32/float16/int32/int64, in place), allgather along any axis of a tensor,
 * broadcast, blocking send/recv with a byte count that must match, and barrier. Every operation
 * runs over a *group*: a named subset of world ranks ("stage0" = {0,1,2,3}); the group "world"
 * (all ranks) always exists. Ranks, roots and peers are always WORLD ranks; inside a group the
 * members are ordered by world rank (allgather concatenates in that order).
 *
 * Guarantees:
 * - Every wait is bounded by the communicator's timeout (default 5000 ms). A dead peer becomes an
 *   error naming its rank (SS_ERR_UNAVAILABLE, "rank 3 (pid 1234) died during allreduce in group
 *   world"), a stuck peer one naming the ranks that did not arrive (SS_ERR_TIMEOUT, "rank 3 did not
 *   arrive at allreduce in group world within 5000 ms"). Never a hang.
 * - After a dead/stuck-peer error the communicator is broken: every later call on every rank of
 *   it fails fast with the first error. Destroy it and create a new one (new session for shm).
 *   Argument errors (SS_ERR_INVALID: wrong group, mismatched counts between ranks) do not break it.
 * - All members of a group must call the same operations on it in the same order (collectives are
 *   matched by order, not by tag); a mismatch of op/dtype/count/root is detected and reported on
 *   every member (shm backend) instead of corrupting data.
 * - One communicator is used by one thread at a time (calls are not thread-safe).
 *
 * Backends:
 * - SS_COMM_SHM (default; one host, Linux): one shared-memory segment,
 *   /dev/shm/shardserve-<session>. Joining is race-free: the first rank to arrive builds a complete
 *   segment under a temporary name and publishes it with link() (atomic, fails if the name
 *   exists); later ranks open it, register their pid, and everybody waits (bounded) until all
 *   `size` ranks have joined. The last rank to join unlinks the name, so a running group leaves
 *   nothing behind in /dev/shm even if it is SIGKILLed; a segment found with a dead or no
 *   registered owner (a group killed while joining) is stale and is removed and recreated.
 *   Waits spin briefly (sched_yield, at most ~200 us; none between the chunks of large ops when
 *   ranks outnumber cores) and then sleep on futexes (never busy-wait while idle), checking the
 *   awaited peers' pids every 20 ms. Memory: the segment is sparse; a rank touches about
 *   3 x slot_bytes per group for large allreduces and group size x slot_bytes for large
 *   allgathers/broadcasts, plus the channels it uses. Launchers should pin ranks to cores when
 *   ranks <= cores (1 KiB allreduce of 2 ranks here: 2.4 us pinned, ~10 us unpinned).
 * - SS_COMM_MPI (Open MPI, ranks started by mpirun): the comm layer calls MPI_Init_thread, groups
 *   are MPI communicators, every operation is nonblocking, completed by an MPI_Test loop (with
 *   sched_yield, then short naps) bounded by the timeout. Peers on the same host are checked by
 *   pid so a dead one is named. Built only when pkg-config ompi-c is found
 *   (ss_comm_backend_available).
 */
#ifndef SHARDSERVE_COMM_H
#define SHARDSERVE_COMM_H

#include "shardserve/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { SS_COMM_SHM = 0, SS_COMM_MPI = 1 } ss_comm_backend;

#define SS_COMM_WORLD "world"
#define SS_COMM_MAX_NAME 63

/* A named subset of world ranks. Ranks may be listed in any order; duplicates are an error. */
typedef struct {
    const char *name;
    const int *ranks;
    int nranks;
} ss_comm_group_def;

typedef struct {
    ss_comm_backend backend;
    int rank; /* this process's world rank; MPI: -1 = take it from MPI */
    int size; /* number of world ranks;     MPI: -1 = take it from MPI */
    /* shm: names the segment "/dev/shm/shardserve-<session>"; [A-Za-z0-9._-], 1..100 chars.
     * Every rank of one group passes the same session; different groups use different ones. */
    const char *session;
    int timeout_ms;      /* bound of every wait; 0 = 5000 */
    int join_timeout_ms; /* bound of ss_comm_create waiting for the other ranks; 0 = timeout_ms */
    const ss_comm_group_def *groups; /* extra groups (not "world"); identical on every rank */
    int ngroups;
    /* shm tuning (0 = default); must be identical on every rank. */
    size_t slot_bytes; /* per member and group, chunk size of large collectives (1 MiB) */
    size_t chan_bytes; /* per ordered pair, buffer of send/recv (512 KiB) */
} ss_comm_config;

typedef struct ss_comm ss_comm;
typedef struct ss_comm_group ss_comm_group;

bool ss_comm_backend_available(ss_comm_backend backend);
const char *ss_comm_backend_name(ss_comm_backend backend);
/* "shm" / "mpi" (case-insensitive) into *out; false if unknown. */
bool ss_comm_backend_parse(const char *s, ss_comm_backend *out);

/* Ends a process of an MPI job that fails (code != 0) so that mpirun reports that code at once:
 * MPI_Abort when `abort_job` (every rank of the job is ended and mpirun exits with `code`, whatever
 * lower ranks do meanwhile), else an exit that skips MPI_Finalize (which would wait for the ranks
 * still running); mpirun then ends the job, exiting with the lowest failing rank's status. A
 * process where MPI is not running just exits with `code`. Never returns. */
_Noreturn void ss_comm_mpi_exit(int code, bool abort_job);

/* Join the communicator; blocks until every rank has joined (bounded by join_timeout_ms). */
ss_status *ss_comm_create(const ss_comm_config *cfg, ss_comm **out);
/* Leave and free. Never blocks on peers. NULL is fine. */
void ss_comm_destroy(ss_comm *comm);

int ss_comm_rank(const ss_comm *comm);
int ss_comm_size(const ss_comm *comm);
ss_comm_backend ss_comm_backend_of(const ss_comm *comm);
/* Payload bytes of every operation this rank has called (allreduce: the buffer; allgather: the
 * gathered output; broadcast, send, recv: nbytes), for metrics. */
uint64_t ss_comm_bytes(const ss_comm *comm);

/* The group of that name, or NULL. ss_comm_group_find(comm, "world") always succeeds. Wherever a
 * group is taken, NULL means world. */
const ss_comm_group *ss_comm_group_find(const ss_comm *comm, const char *name);
const char *ss_comm_group_name(const ss_comm_group *group);
int ss_comm_group_size(const ss_comm_group *group);
/* World rank of the group's i-th member (ascending world rank order). */
int ss_comm_group_member(const ss_comm_group *group, int i);
/* This process's index in the group, or -1 if it is not a member. */
int ss_comm_group_rank(const ss_comm_group *group);

/* buf[i] = sum over the group's ranks of their buf[i]; count elements of dtype (float32, float16,
 * int32, int64; integers wrap). Every member ends with bitwise identical values (shm: summed in
 * member order, float16 accumulated in float32 and rounded once). */
ss_status *ss_comm_allreduce(ss_comm *comm, const ss_comm_group *group, void *buf, ss_dtype dtype,
                             size_t count);

/* out = concat of every member's `in` along `axis` (negative counts from the end), in member
 * order. Every member passes the same dtype and dims. `out` is preallocated with in's dims except
 * dims[axis] * group size (contiguous row-major; any numeric dtype). out NULL: this member only
 * contributes `in` and wants nothing back; with shm and a piece of at most 64 KiB it then goes on
 * without waiting for the others. */
ss_status *ss_comm_allgather(ss_comm *comm, const ss_comm_group *group, const ss_tensor *in,
                             int axis, ss_tensor *out);

/* Copy nbytes of buf from world rank `root` into buf on every other member. */
ss_status *ss_comm_broadcast(ss_comm *comm, const ss_comm_group *group, void *buf, size_t nbytes,
                             int root);

/* Point-to-point between two members of `group`, peer given as a world rank. send returns once the
 * data is in the channel (small messages, shm) or taken by the receiver; recv blocks until the
 * whole message arrived. The receiver's nbytes must equal the sender's: otherwise recv fails
 * (SS_ERR_INVALID, both sizes named) and, on shm, so does the sender's current or next send on that
 * pair. Messages between one pair arrive in order. */
ss_status *ss_comm_send(ss_comm *comm, const ss_comm_group *group, const void *buf, size_t nbytes,
                        int peer);
ss_status *ss_comm_recv(ss_comm *comm, const ss_comm_group *group, void *buf, size_t nbytes,
                        int peer);

ss_status *ss_comm_barrier(ss_comm *comm, const ss_comm_group *group);

/* Launchers: remove /dev/shm/shardserve-<session> (e.g. after killing a group that was still
 * joining). Fine if it does not exist. Do not call while that session's ranks are joining. */
ss_status *ss_comm_shm_cleanup(const char *session);

/* Launchers, at start: remove each /dev/shm/shardserve-<prefix><pid>[-...] whose launcher <pid> is
 * gone, that is a segment of this layout and none of whose ranks is alive: what a launcher killed
 * with SIGKILL leaves behind (tmpfs pages are memory until removed). Each removal is logged;
 * returns how many. */
int ss_comm_shm_remove_abandoned(const char *prefix);

#ifdef __cplusplus
}
#endif
#endif
