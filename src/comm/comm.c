/*
 * comm front end: validates the configuration and every call, owns the group table, and keeps
 * the "broken" state: once a backend reports a dead or stuck peer (or an internal failure), every
 * later call returns that first error instead of touching peers again. Argument errors
 * (SS_ERR_INVALID and friends) are returned without breaking the communicator.
 */
#include "comm_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_MS 5000

bool ss_comm_backend_available(ss_comm_backend backend)
{
    if (backend == SS_COMM_SHM) return true;
#ifdef SS_HAVE_MPI
    if (backend == SS_COMM_MPI) return true;
#endif
    return false;
}

#ifndef SS_HAVE_MPI
_Noreturn void ss_comm_mpi_exit(int code, bool abort_job)
{
    (void)abort_job;
    fflush(NULL);
    _exit(code);
}
#endif

const char *ss_comm_backend_name(ss_comm_backend backend)
{
    return backend == SS_COMM_SHM ? "shm" : backend == SS_COMM_MPI ? "mpi" : "unknown";
}

bool ss_comm_backend_parse(const char *s, ss_comm_backend *out)
{
    if (s && !strcasecmp(s, "shm"))
        *out = SS_COMM_SHM;
    else if (s && !strcasecmp(s, "mpi"))
        *out = SS_COMM_MPI;
    else
        return false;
    return true;
}

const char *ss_comm_rank_list(const int *ranks, int n, char *buf, size_t cap)
{
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < n && off + 16 < cap; i++) {
        const char *sep = i == 0 ? "" : i == n - 1 ? " and " : ", ";
        off += (size_t)snprintf(buf + off, cap - off, "%s%d", sep, ranks[i]);
    }
    return buf;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static bool valid_name(const char *name)
{
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > SS_COMM_MAX_NAME) return false;
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return false;
    }
    return true;
}

static ss_status *add_group(ss_comm *c, const char *name, const int *ranks, int n)
{
    if (!valid_name(name))
        return ss_errf(SS_ERR_INVALID,
                       "group name \"%s\" is not 1..%d characters of [A-Za-z0-9._-]",
                       name ? name : "(null)", SS_COMM_MAX_NAME);
    for (int i = 0; i < c->ngroups; i++)
        if (!strcmp(c->groups[i].name, name))
            return ss_errf(SS_ERR_INVALID, "group \"%s\" is defined twice", name);
    if (n < 1 || n > c->size)
        return ss_errf(SS_ERR_INVALID, "group \"%s\" has %d ranks (must be 1..%d)", name, n,
                       c->size);
    ss_comm_group *g = &c->groups[c->ngroups];
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "%s", name);
    g->members = malloc((size_t)n * sizeof(int));
    if (!g->members) return ss_errf(SS_ERR_NOMEM, "out of memory for group \"%s\"", name);
    memcpy(g->members, ranks, (size_t)n * sizeof(int));
    qsort(g->members, (size_t)n, sizeof(int), cmp_int);
    g->index = c->ngroups;
    g->n = n;
    g->me = -1;
    c->ngroups++;
    for (int i = 0; i < n; i++) {
        if (g->members[i] < 0 || g->members[i] >= c->size)
            return ss_errf(SS_ERR_INVALID, "group \"%s\" names rank %d, outside 0..%d", name,
                           g->members[i], c->size - 1);
        if (i && g->members[i] == g->members[i - 1])
            return ss_errf(SS_ERR_INVALID, "group \"%s\" lists rank %d twice", name, g->members[i]);
        if (g->members[i] == c->rank) g->me = i;
    }
    return NULL;
}

static void free_groups(ss_comm *c)
{
    for (int i = 0; i < c->ngroups; i++)
        free(c->groups[i].members);
    free(c->groups);
    c->groups = NULL;
    c->ngroups = 0;
}

static ss_status *build_groups(ss_comm *c, const ss_comm_config *cfg)
{
    if (cfg->ngroups < 0 || (cfg->ngroups > 0 && !cfg->groups))
        return ss_errf(SS_ERR_INVALID, "bad group list (%d groups)", cfg->ngroups);
    c->groups = calloc((size_t)cfg->ngroups + 1, sizeof *c->groups);
    if (!c->groups) return ss_errf(SS_ERR_NOMEM, "out of memory for the group table");
    int *world = malloc((size_t)c->size * sizeof(int));
    if (!world) return ss_errf(SS_ERR_NOMEM, "out of memory for the group table");
    for (int i = 0; i < c->size; i++)
        world[i] = i;
    ss_status *st = add_group(c, SS_COMM_WORLD, world, c->size);
    free(world);
    for (int i = 0; !st && i < cfg->ngroups; i++)
        st = add_group(c, cfg->groups[i].name, cfg->groups[i].ranks, cfg->groups[i].nranks);
    return st;
}

ss_status *ss_comm_create(const ss_comm_config *cfg, ss_comm **out)
{
    *out = NULL;
    if (!cfg) return ss_errf(SS_ERR_INVALID, "no communicator configuration");
    if (!ss_comm_backend_available(cfg->backend))
        return ss_errf(SS_ERR_UNSUPPORTED, "comm backend %s is not available in this build",
                       ss_comm_backend_name(cfg->backend));
    if (cfg->timeout_ms < 0 || cfg->join_timeout_ms < 0)
        return ss_errf(SS_ERR_INVALID, "negative comm timeout");
    ss_comm *c = calloc(1, sizeof *c);
    if (!c) return ss_errf(SS_ERR_NOMEM, "out of memory for a communicator");
    c->backend = cfg->backend;
    c->rank = cfg->rank;
    c->size = cfg->size;
    c->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
    c->join_timeout_ms = cfg->join_timeout_ms ? cfg->join_timeout_ms : c->timeout_ms;

    ss_status *st = NULL;
#ifdef SS_HAVE_MPI
    if (cfg->backend == SS_COMM_MPI) {
        /* rank/size come from MPI (checked against cfg when given), so MPI starts first. */
        st = ss_comm_mpi_init(c, cfg);
        if (st) goto fail;
    }
#endif
    if (c->size < 1 || c->rank < 0 || c->rank >= c->size) {
        st = ss_errf(SS_ERR_INVALID, "rank %d is outside a world of %d ranks", c->rank, c->size);
        goto fail;
    }
    st = build_groups(c, cfg);
    if (st) goto fail;
    if (cfg->backend == SS_COMM_SHM) st = ss_comm_shm_open(c, cfg);
#ifdef SS_HAVE_MPI
    else
        st = ss_comm_mpi_open(c, cfg);
#endif
    if (st) goto fail;
    *out = c;
    return NULL;
fail:
    if (c->ops && c->ops->destroy) c->ops->destroy(c);
    free_groups(c);
    free(c);
    return ss_status_wrap(st, "rank %d: cannot join the %s communicator", cfg->rank,
                          ss_comm_backend_name(cfg->backend));
}

void ss_comm_destroy(ss_comm *c)
{
    if (!c) return;
    if (c->ops && c->ops->destroy) c->ops->destroy(c);
    free_groups(c);
    ss_status_free(c->broken);
    free(c);
}

int ss_comm_rank(const ss_comm *c)
{
    return c->rank;
}
int ss_comm_size(const ss_comm *c)
{
    return c->size;
}
ss_comm_backend ss_comm_backend_of(const ss_comm *c)
{
    return c->backend;
}

uint64_t ss_comm_bytes(const ss_comm *c)
{
    return c ? c->bytes : 0;
}

const ss_comm_group *ss_comm_group_find(const ss_comm *c, const char *name)
{
    for (int i = 0; name && i < c->ngroups; i++)
        if (!strcmp(c->groups[i].name, name)) return &c->groups[i];
    return NULL;
}

const char *ss_comm_group_name(const ss_comm_group *g)
{
    return g->name;
}
int ss_comm_group_size(const ss_comm_group *g)
{
    return g->n;
}
int ss_comm_group_member(const ss_comm_group *g, int i)
{
    return i >= 0 && i < g->n ? g->members[i] : -1;
}
int ss_comm_group_rank(const ss_comm_group *g)
{
    return g->me;
}

static int member_index(const ss_comm_group *g, int world_rank)
{
    for (int i = 0; i < g->n; i++)
        if (g->members[i] == world_rank) return i;
    return -1;
}

/* Common entry checks: the communicator still works, the group belongs to it, we are a member. */
static ss_status *enter(ss_comm *c, const ss_comm_group **g, const char *what)
{
    if (!c) return ss_errf(SS_ERR_INVALID, "%s on a NULL communicator", what);
    if (c->broken)
        return ss_errf(c->broken->code, "%s refused, the communicator is broken: %s", what,
                       c->broken->msg);
    if (!*g) *g = &c->groups[0];
    if (*g < c->groups || *g >= c->groups + c->ngroups)
        return ss_errf(SS_ERR_INVALID, "%s: the group does not belong to this communicator", what);
    if ((*g)->me < 0)
        return ss_errf(SS_ERR_INVALID, "%s: rank %d is not a member of group %s", what, c->rank,
                       (*g)->name);
    return NULL;
}

/* Peer failures and internal errors break the communicator; argument errors do not. */
static ss_status *leave(ss_comm *c, ss_status *st)
{
    if (st && !c->broken &&
        (st->code == SS_ERR_TIMEOUT || st->code == SS_ERR_UNAVAILABLE ||
         st->code == SS_ERR_INTERNAL || st->code == SS_ERR_IO))
        c->broken = ss_errf(st->code, "%s", st->msg);
    return st;
}

bool ss_comm_dtype_reducible(ss_dtype dt)
{
    return dt == SS_DT_FLOAT32 || dt == SS_DT_FLOAT16 || dt == SS_DT_INT32 || dt == SS_DT_INT64;
}

ss_status *ss_comm_allreduce(ss_comm *c, const ss_comm_group *g, void *buf, ss_dtype dt,
                             size_t count)
{
    ss_status *st = enter(c, &g, "allreduce");
    if (st) return st;
    if (!ss_comm_dtype_reducible(dt))
        return ss_errf(SS_ERR_UNSUPPORTED,
                       "allreduce of %s (supported: float32, float16, int32, "
                       "int64)",
                       ss_dtype_name(dt));
    if (count && !buf) return ss_errf(SS_ERR_INVALID, "allreduce of %zu elements from NULL", count);
    if (count > SIZE_MAX / 8) return ss_errf(SS_ERR_LIMIT, "allreduce of %zu elements", count);
    c->bytes += count * ss_dtype_size(dt);
    return leave(c, c->ops->allreduce(c, g, buf, dt, count));
}

ss_status *ss_comm_allgather(ss_comm *c, const ss_comm_group *g, const ss_tensor *in, int axis,
                             ss_tensor *out)
{
    ss_status *st = enter(c, &g, "allgather");
    if (st) return st;
    if (!in) return ss_errf(SS_ERR_INVALID, "allgather without an input tensor");
    size_t es = ss_dtype_size(in->dtype);
    if (es == 0 || in->dtype == SS_DT_STRING)
        return ss_errf(SS_ERR_UNSUPPORTED, "allgather of %s tensors", ss_dtype_name(in->dtype));
    if (in->ndim < 1) return ss_errf(SS_ERR_INVALID, "allgather of a scalar (no axis to join)");
    int ax = axis < 0 ? axis + in->ndim : axis;
    if (ax < 0 || ax >= in->ndim)
        return ss_errf(SS_ERR_INVALID, "allgather axis %d is outside a rank-%d tensor", axis,
                       in->ndim);
    int64_t want[SS_MAX_DIMS];
    memcpy(want, in->dims, sizeof want);
    want[ax] *= g->n;
    char a[200], b[200], d[200];
    if (out && (out->dtype != in->dtype || !ss_shape_equal(out->ndim, out->dims, in->ndim, want)))
        return ss_errf(SS_ERR_INVALID,
                       "allgather output is %s%s, expected %s%s (input %s on axis %d "
                       "of %d ranks)",
                       ss_dtype_name(out->dtype), ss_shape_str(out->ndim, out->dims, a, sizeof a),
                       ss_dtype_name(in->dtype), ss_shape_str(in->ndim, want, b, sizeof b),
                       ss_shape_str(in->ndim, in->dims, d, sizeof d), ax, g->n);
    int64_t numel = ss_tensor_numel(in);
    if (numel < 0 || (size_t)numel * es != in->nbytes ||
        (out && out->nbytes != in->nbytes * (size_t)g->n))
        return ss_errf(SS_ERR_INVALID, "allgather tensors' byte sizes do not match their shapes");
    if (numel > 0 && (!in->data || (out && !out->data)))
        return ss_errf(SS_ERR_INVALID, "allgather tensor without data");
    size_t outer = 1, row = es;
    for (int i = 0; i < ax; i++)
        outer *= (size_t)in->dims[i];
    for (int i = ax; i < in->ndim; i++)
        row *= (size_t)in->dims[i];
    if (numel == 0) outer = 0, row = 0;
    c->bytes += in->nbytes * (size_t)g->n;
    return leave(c, c->ops->allgather(c, g, in->data, out ? out->data : NULL, outer, row));
}

ss_status *ss_comm_broadcast(ss_comm *c, const ss_comm_group *g, void *buf, size_t nbytes, int root)
{
    ss_status *st = enter(c, &g, "broadcast");
    if (st) return st;
    int ri = member_index(g, root);
    if (ri < 0)
        return ss_errf(SS_ERR_INVALID, "broadcast root rank %d is not a member of group %s", root,
                       g->name);
    if (nbytes && !buf) return ss_errf(SS_ERR_INVALID, "broadcast of %zu bytes from NULL", nbytes);
    c->bytes += nbytes;
    return leave(c, c->ops->broadcast(c, g, buf, nbytes, ri));
}

static ss_status *check_peer(ss_comm *c, const ss_comm_group *g, int peer, const char *what)
{
    if (member_index(g, peer) < 0)
        return ss_errf(SS_ERR_INVALID, "%s: peer rank %d is not a member of group %s", what, peer,
                       g->name);
    if (peer == c->rank) return ss_errf(SS_ERR_INVALID, "%s: rank %d names itself", what, peer);
    return NULL;
}

ss_status *ss_comm_send(ss_comm *c, const ss_comm_group *g, const void *buf, size_t nbytes,
                        int peer)
{
    ss_status *st = enter(c, &g, "send");
    if (!st) st = check_peer(c, g, peer, "send");
    if (st) return st;
    if (nbytes && !buf) return ss_errf(SS_ERR_INVALID, "send of %zu bytes from NULL", nbytes);
    c->bytes += nbytes;
    return leave(c, c->ops->send(c, g, buf, nbytes, peer));
}

ss_status *ss_comm_recv(ss_comm *c, const ss_comm_group *g, void *buf, size_t nbytes, int peer)
{
    ss_status *st = enter(c, &g, "recv");
    if (!st) st = check_peer(c, g, peer, "recv");
    if (st) return st;
    if (nbytes && !buf) return ss_errf(SS_ERR_INVALID, "recv of %zu bytes into NULL", nbytes);
    c->bytes += nbytes;
    return leave(c, c->ops->recv(c, g, buf, nbytes, peer));
}

ss_status *ss_comm_barrier(ss_comm *c, const ss_comm_group *g)
{
    ss_status *st = enter(c, &g, "barrier");
    if (st) return st;
    return leave(c, c->ops->barrier(c, g));
}
