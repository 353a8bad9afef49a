/*
 * comm internals shared by the front end (comm.c), the backends (shm.c, mpi.c) and the reduction
 * kernels (reduce.c). The front end validates every argument and keeps the group table; a backend
 * only moves bytes and may assume its arguments are valid (caller is a member, peer/root are
 * members, sizes agree with the dtype).
 */
#ifndef SS_COMM_INTERNAL_H
#define SS_COMM_INTERNAL_H

#include "shardserve/comm.h"

struct ss_comm_group {
    char name[SS_COMM_MAX_NAME + 1];
    int index; /* position in ss_comm.groups; 0 = world */
    int n;
    int *members; /* world ranks, ascending */
    int me;       /* this process's index in members, or -1 */
};

typedef struct ss_comm_ops {
    ss_status *(*allreduce)(ss_comm *c, const ss_comm_group *g, void *buf, ss_dtype dt,
                            size_t count);
    /* Member j's piece is `outer` rows of `row` bytes; row o of piece j lands at
     * out + (o * n + j) * row. */
    ss_status *(*allgather)(ss_comm *c, const ss_comm_group *g, const void *in, void *out,
                            size_t outer, size_t row);
    ss_status *(*broadcast)(ss_comm *c, const ss_comm_group *g, void *buf, size_t nbytes,
                            int root_index);
    ss_status *(*send)(ss_comm *c, const ss_comm_group *g, const void *buf, size_t nbytes,
                       int peer);
    ss_status *(*recv)(ss_comm *c, const ss_comm_group *g, void *buf, size_t nbytes, int peer);
    ss_status *(*barrier)(ss_comm *c, const ss_comm_group *g);
    void (*destroy)(ss_comm *c);
} ss_comm_ops;

struct ss_comm {
    ss_comm_backend backend;
    int rank, size;
    int timeout_ms;
    int join_timeout_ms;
    int ngroups; /* including world at index 0 */
    ss_comm_group *groups;
    const ss_comm_ops *ops;
    void *impl;
    ss_status *broken; /* first fatal error; later calls fail fast with it */
    uint64_t bytes;    /* payload bytes of the operations called so far (ss_comm_bytes) */
};

/* Backends fill comm->ops and comm->impl; the group table is already built. */
ss_status *ss_comm_shm_open(ss_comm *comm, const ss_comm_config *cfg);
#ifdef SS_HAVE_MPI
/* Starts MPI if needed and fills comm->rank/size; then _open builds the group communicators. */
ss_status *ss_comm_mpi_init(ss_comm *comm, const ss_comm_config *cfg);
ss_status *ss_comm_mpi_open(ss_comm *comm, const ss_comm_config *cfg);
#endif

/* dst[i] = sum over k < nsrc of srcs[k][i] (in k order; float16 accumulated in float32); dst2,
 * when not NULL, receives the same values. dst may alias one of the srcs (blocked internally). */
void ss_comm_reduce_sum(ss_dtype dt, void *dst, void *dst2, const void *const *srcs, int nsrc,
                        size_t count);
bool ss_comm_dtype_reducible(ss_dtype dt);

/* "3" or "3, 5 and 6" into buf. */
const char *ss_comm_rank_list(const int *ranks, int n, char *buf, size_t cap);

#endif
