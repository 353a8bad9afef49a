/*
 * Collective latency and bandwidth by message size, next to memcpy measured in the same run.
 *
 *   bench_comm --backend shm --ranks N   forks N ranks itself
 *   mpirun ... bench_comm --backend mpi  one process per rank (see bench/run_comm.sh)
 *   options: --ops allreduce,allgather  --sizes 1K,64K,1M,16M,64M  --slot 4M (shm)
 *            --bind (shm: pin rank r to cpu r % ncpu, like mpirun's default binding)  --quick
 *
 * Each iteration: barrier, then time one call on every rank; the iteration's time is the max over
 * ranks, and the table shows the median over iterations. Size = the buffer of allreduce (float32),
 * the gathered output of allgather (each rank contributes size/N). Bandwidth = size / time.
 * Baselines: memcpy of `size` bytes by one process while the others wait (memcpy1), and by all N
 * ranks at once (memcpyN: what the 2 shared cores give each rank when all copy). With the mpi
 * backend the raw blocking MPI_Allreduce/MPI_Allgather is measured too ("mpi-raw").
 * Lines starting with "ROW" are for bench/run_comm.sh.
 */
#define _GNU_SOURCE /* sched_setaffinity */
#include "shardserve/comm.h"

#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef SS_HAVE_MPI
#include <mpi.h>
#endif

typedef struct {
    ss_comm_backend backend;
    int ranks;
    bool ops[2]; /* allreduce, allgather */
    size_t sizes[16];
    int nsizes;
    bool quick;
    size_t slot; /* shm slot_bytes, 0 = default */
    bool bind;   /* shm: pin rank r to cpu r % ncpu, as mpirun does by default for np <= 2 */
} options;

static void die(ss_status *st)
{
    fprintf(stderr, "bench_comm: %s\n", st->msg);
    exit(1);
}

static int iters_for(size_t size, bool quick, bool mpi)
{
    if (mpi && size > (1u << 20)) return 1; /* Open MPI oversubscribed needs seconds per call */
    int n = size <= 4096          ? 2000
            : size <= 65536       ? 400
            : size <= (1u << 20)  ? 60
            : size <= (16u << 20) ? 8
                                  : 4;
    return quick ? (n + 3) / 4 : n;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Per-iteration max over ranks, then the median; the result is valid on rank 0. */
static double median_max_us(ss_comm *c, uint64_t *t, int iters)
{
    int n = ss_comm_size(c);
    ss_tensor in, out;
    int64_t d[1] = {iters}, dn[1] = {(int64_t)iters * n};
    ss_status *st = ss_tensor_borrow(&in, SS_DT_INT64, 1, d, t, (size_t)iters * 8);
    if (!st) st = ss_tensor_alloc(&out, SS_DT_INT64, 1, dn);
    if (!st) st = ss_comm_allgather(c, NULL, &in, 0, &out);
    if (st) die(st);
    uint64_t *all = out.data;
    for (int i = 0; i < iters; i++)
        for (int r = 1; r < n; r++)
            if (all[(size_t)r * iters + i] > all[i]) all[i] = all[(size_t)r * iters + i];
    qsort(all, (size_t)iters, 8, cmp_u64);
    double med = (double)all[iters / 2] / 1000.0;
    ss_tensor_free(&out);
    return med;
}

enum { K_ALLREDUCE, K_ALLGATHER, K_MEMCPY1, K_MEMCPYN, K_RAW_ALLREDUCE, K_RAW_ALLGATHER };

static ss_status *one_call(ss_comm *c, int kind, float *buf, float *dst, size_t size)
{
    int n = ss_comm_size(c);
    switch (kind) {
    case K_ALLREDUCE:
        return ss_comm_allreduce(c, NULL, buf, SS_DT_FLOAT32, size / 4);
    case K_ALLGATHER: {
        ss_tensor in, out;
        int64_t d[1] = {(int64_t)(size / 4 / (size_t)n)}, dn[1] = {d[0] * n};
        ss_tensor_borrow(&in, SS_DT_FLOAT32, 1, d, buf, (size_t)d[0] * 4);
        ss_tensor_borrow(&out, SS_DT_FLOAT32, 1, dn, dst, (size_t)dn[0] * 4);
        return ss_comm_allgather(c, NULL, &in, 0, &out);
    }
    case K_MEMCPY1:
        if (ss_comm_rank(c) == 0) memcpy(dst, buf, size);
        return NULL;
    case K_MEMCPYN:
        memcpy(dst, buf, size);
        return NULL;
#ifdef SS_HAVE_MPI
    case K_RAW_ALLREDUCE:
        MPI_Allreduce(MPI_IN_PLACE, buf, (int)(size / 4), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        return NULL;
    case K_RAW_ALLGATHER: {
        int piece = (int)(size / 4 / (size_t)n);
        MPI_Allgather(buf, piece, MPI_FLOAT, dst, piece, MPI_FLOAT, MPI_COMM_WORLD);
        return NULL;
    }
#endif
    }
    return NULL;
}

static double measure(ss_comm *c, int kind, float *buf, float *dst, size_t size, int iters)
{
    uint64_t *t = malloc((size_t)iters * 8);
    int warm = iters > 2 ? iters / 10 + 1 : 1;
    for (int i = -warm; i < iters; i++) {
        ss_status *st = ss_comm_barrier(c, NULL);
        if (st) die(st);
        uint64_t t0 = ss_now_ns();
        st = one_call(c, kind, buf, dst, size);
        if (st) die(st);
        if (i >= 0) t[i] = ss_now_ns() - t0;
    }
    double us = median_max_us(c, t, iters);
    free(t);
    return us;
}

static void fmt_size(size_t s, char *b, size_t cap)
{
    if (s >= (1u << 20))
        snprintf(b, cap, "%zuM", s >> 20);
    else if (s >= 1024)
        snprintf(b, cap, "%zuK", s >> 10);
    else
        snprintf(b, cap, "%zu", s);
}

static void run(ss_comm *c, const options *o)
{
    bool root = ss_comm_rank(c) == 0;
    const char *be = o->bind ? "shm-pin" : ss_comm_backend_name(ss_comm_backend_of(c));
    int n = ss_comm_size(c);
    if (root) {
        printf("\n%s, %d ranks (median of per-iteration max over ranks)\n", be, n);
        printf("%-10s %6s %11s %9s %10s %10s %9s\n", "op", "size", "time us", "GB/s", "memcpy1",
               "memcpyN", "op/memN");
    }
    for (int si = 0; si < o->nsizes; si++) {
        size_t size = o->sizes[si] / (4u * (size_t)n) * (4u * (size_t)n);
        float *buf = malloc(size), *dst = malloc(size);
        for (size_t i = 0; i < size / 4; i++)
            buf[i] = (float)(i & 255);
        memset(dst, 0, size);
        int iters = iters_for(size, o->quick, ss_comm_backend_of(c) == SS_COMM_MPI);
        double m1 = measure(c, K_MEMCPY1, buf, dst, size, iters);
        double mn = measure(c, K_MEMCPYN, buf, dst, size, iters);
        for (int op = 0; op < 2; op++) {
            if (!o->ops[op]) continue;
            double us = measure(c, op == 0 ? K_ALLREDUCE : K_ALLGATHER, buf, dst, size, iters);
            double raw = -1;
#ifdef SS_HAVE_MPI
            if (ss_comm_backend_of(c) == SS_COMM_MPI)
                raw =
                    measure(c, op == 0 ? K_RAW_ALLREDUCE : K_RAW_ALLGATHER, buf, dst, size, iters);
#endif
            if (!root) continue;
            char sb[16];
            fmt_size(o->sizes[si], sb, sizeof sb);
            const char *name = op == 0 ? "allreduce" : "allgather";
            double gbs = (double)size / us / 1000.0;
            printf("%-10s %6s %11.1f %9.2f %10.2f %10.2f %9.2f\n", name, sb, us, gbs,
                   (double)size / m1 / 1000.0, (double)size / mn / 1000.0, mn / us);
            printf("ROW %s %d %s %zu %.2f %.3f %.3f %.3f\n", be, n, name, o->sizes[si], us, gbs,
                   (double)size / m1 / 1000.0, (double)size / mn / 1000.0);
            if (raw > 0) {
                printf("%-10s %6s %11.1f %9.2f   (raw MPI_%s, blocking)\n", name, sb, raw,
                       (double)size / raw / 1000.0, op == 0 ? "Allreduce" : "Allgather");
                printf("ROW mpi-raw %d %s %zu %.2f %.3f %.3f %.3f\n", n, name, o->sizes[si], raw,
                       (double)size / raw / 1000.0, (double)size / m1 / 1000.0,
                       (double)size / mn / 1000.0);
            }
            fflush(stdout);
        }
        free(buf);
        free(dst);
    }
}

static size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    size_t mul = *end == 'K' || *end == 'k' ? 1024u : *end == 'M' || *end == 'm' ? 1u << 20 : 1u;
    return (size_t)(v * (double)mul);
}

static void parse(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->ranks = 2;
    o->ops[0] = o->ops[1] = true;
    const char *sizes = "1K,64K,1M,16M,64M";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--backend") && v) {
            if (!ss_comm_backend_parse(v, &o->backend)) {
                fprintf(stderr, "unknown backend %s\n", v);
                exit(2);
            }
            i++;
        } else if (!strcmp(a, "--ranks") && v) {
            o->ranks = atoi(v), i++;
        } else if (!strcmp(a, "--sizes") && v) {
            sizes = v, i++;
        } else if (!strcmp(a, "--ops") && v) {
            o->ops[0] = strstr(v, "allreduce") != NULL;
            o->ops[1] = strstr(v, "allgather") != NULL;
            i++;
        } else if (!strcmp(a, "--slot") && v) {
            o->slot = parse_size(v), i++;
        } else if (!strcmp(a, "--bind")) {
            o->bind = true;
        } else if (!strcmp(a, "--quick")) {
            o->quick = true;
        } else {
            fprintf(stderr, "usage: bench_comm [--backend shm|mpi] [--ranks N] [--ops LIST] "
                            "[--sizes 1K,64K,...] [--slot BYTES] [--bind] [--quick]\n");
            exit(2);
        }
    }
    char *copy = strdup(sizes), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok && o->nsizes < 16;
         tok = strtok_r(NULL, ",", &save))
        o->sizes[o->nsizes++] = parse_size(tok);
    free(copy);
}

int main(int argc, char **argv)
{
    options o;
    parse(argc, argv, &o);
    ss_comm *c = NULL;
    if (o.backend == SS_COMM_MPI) {
        ss_comm_config cfg = {.backend = SS_COMM_MPI, .rank = -1, .size = -1, .timeout_ms = 60000};
        ss_status *st = ss_comm_create(&cfg, &c);
        if (st) die(st);
        run(c, &o);
        ss_comm_destroy(c);
        return 0;
    }
    if (o.ranks < 1 || o.ranks > 256) {
        fprintf(stderr, "--ranks must be 1..256\n");
        return 2;
    }
    char session[64];
    snprintf(session, sizeof session, "bench-%d", (int)getpid());
    pid_t kids[256];
    for (int r = 0; r < o.ranks; r++) {
        kids[r] = fork();
        if (kids[r] == 0) {
            if (o.bind) {
                cpu_set_t set;
                CPU_ZERO(&set);
                CPU_SET(r % (int)sysconf(_SC_NPROCESSORS_ONLN), &set);
                sched_setaffinity(0, sizeof set, &set);
            }
            ss_comm_config cfg = {.backend = SS_COMM_SHM,
                                  .rank = r,
                                  .size = o.ranks,
                                  .session = session,
                                  .timeout_ms = 60000,
                                  .slot_bytes = o.slot};
            ss_status *st = ss_comm_create(&cfg, &c);
            if (st) die(st);
            run(c, &o);
            ss_comm_destroy(c);
            _exit(0);
        }
    }
    int bad = 0;
    for (int r = 0; r < o.ranks; r++) {
        int status = 0;
        waitpid(kids[r], &status, 0);
        bad |= !WIFEXITED(status) || WEXITSTATUS(status);
    }
    ss_comm_shm_cleanup(session);
    return bad;
}
