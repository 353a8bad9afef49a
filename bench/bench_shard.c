/*
 * bench_shard: throughput of a model sharded over N local ranks (shm backend) against the
 * unsharded model in one process, measured in the same run and interleaved; plus each rank's
 * peak RSS against the bytes of its shard. bench/run_shard.sh makes the model and the splits.
 *
 *   bench_shard --model M.onnx --input NAME=FILE.npy [--split N=DIR]... [--rounds R]
 *               [--iters K] [--warmup W] [--cores C]
 *
 * Every variant runs in fresh processes forked from this (small) process, so no variant sees
 * another's pages and ru_maxrss is the variant's own peak:
 *   single      the unsharded model in one process, BLAS threads = C (all cores)
 *   single/1t   the same with one BLAS thread (the per-rank setting of the splits)
 *   N ranks     N processes, each ss_rank_open() on DIR/device{r}/group_config.json; BLAS
 *               threads per rank = max(1, C / N); all ranks warm up, meet at a barrier, then
 *               run K calls; the variant's time is the slowest rank's
 * A round runs every variant once (the order rotates between rounds, so drift in the shared
 * machine's load is spread over all variants); the table gives per-variant median and best
 * over rounds of the time per call, throughput = batch (dim 0 of the first input) / time, the
 * ratio to `single` (medians), and the largest peak RSS of a rank next to its shard's bytes
 * (manifest param_bytes). Guarantee: the numbers of all variants come from the same run.
 */
#include "shardserve/agent.h"
#include "shardserve/core.h"
#include "shardserve/runtime.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_VARIANTS 16
#define MAX_INPUTS 16
#define MAX_RANKS 64
#define MAX_ROUNDS 64

typedef struct {
    char label[32];
    int ranks;       /* 0: unsharded */
    int threads;     /* BLAS threads per process */
    const char *dir; /* split folder */
    double shard_mb[MAX_RANKS];
    double ms[MAX_ROUNDS]; /* time per call, per round */
    double rss_mb[MAX_RANKS];
    int n_ok;
} variant;

typedef struct {
    double ns_per_call;
    long maxrss_kb;
    int ok;
} report;

static const char *g_model;
static int g_n_inputs;
static const char *g_names[MAX_INPUTS], *g_files[MAX_INPUTS];
static int g_iters = 5, g_warmup = 1;

static void die(const char *what, ss_status *st)
{
    fprintf(stderr, "bench_shard: %s: %s\n", what, st ? st->msg : "failed");
    ss_status_free(st);
    exit(1);
}

static ss_status *read_inputs(ss_session *s, ss_tensor *ins, int *n)
{
    *n = ss_session_num_inputs(s);
    if (*n > MAX_INPUTS) return ss_errf(SS_ERR_LIMIT, "more than %d inputs", MAX_INPUTS);
    for (int i = 0; i < *n; i++) {
        const char *want = ss_session_input(s, i)->name;
        int found = -1;
        for (int j = 0; j < g_n_inputs; j++)
            if (!strcmp(g_names[j], want)) found = j;
        if (found < 0) return ss_errf(SS_ERR_INVALID, "missing --input %s=FILE.npy", want);
        ss_status *st = ss_npy_read(g_files[found], &ins[i]);
        if (st) return st;
    }
    return NULL;
}

/* Warm up, meet the other ranks (comm != NULL), time g_iters calls. */
static ss_status *timed_calls(ss_session *s, ss_comm *comm, double *ns_per_call)
{
    ss_tensor ins[MAX_INPUTS] = {0};
    int n = 0;
    ss_status *st = read_inputs(s, ins, &n);
    const ss_tensor *outs;
    for (int i = 0; i < g_warmup && !st; i++)
        st = ss_session_run(s, ins, n, &outs);
    if (!st && comm) st = ss_comm_barrier(comm, NULL);
    uint64_t t0 = ss_now_ns();
    for (int i = 0; i < g_iters && !st; i++)
        st = ss_session_run(s, ins, n, &outs);
    *ns_per_call = (double)(ss_now_ns() - t0) / g_iters;
    for (int i = 0; i < n; i++)
        ss_tensor_free(&ins[i]);
    return st;
}

static void child_report(int fd, ss_status *st, double ns)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    report r = {ns, ru.ru_maxrss, st == NULL};
    if (st) fprintf(stderr, "bench_shard: %s\n", st->msg);
    ssize_t w = write(fd, &r, sizeof r);
    _exit(w == (ssize_t)sizeof r && !st ? 0 : 1);
}

static void run_single(int fd, int threads)
{
    ss_session_options so = {.blas_threads = threads};
    ss_session *s;
    ss_status *st = ss_session_create(g_model, &so, &s);
    double ns = 0;
    if (!st) st = timed_calls(s, NULL, &ns);
    child_report(fd, st, ns);
}

static void run_rank(int fd, const variant *v, int rank, const char *session)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/device%d/group_config.json", v->dir, rank);
    ss_rank_options ro = {.backend = SS_COMM_SHM,
                          .session = session,
                          .timeout_ms = 120000,
                          .join_timeout_ms = 120000,
                          .blas_threads = v->threads};
    ss_rank *r;
    ss_status *st = ss_rank_open(path, &ro, &r);
    double ns = 0;
    if (!st) st = timed_calls(ss_rank_session(r), ss_rank_comm(r), &ns);
    child_report(fd, st, ns);
}

/* One round of one variant: fork its processes, collect their reports. */
static int run_variant(variant *v, int round)
{
    int nproc = v->ranks ? v->ranks : 1;
    int fds[MAX_RANKS][2];
    pid_t pids[MAX_RANKS];
    char session[64];
    snprintf(session, sizeof session, "bench-%d-%d-%d", (int)getpid(), round, v->ranks);
    fflush(NULL);
    for (int i = 0; i < nproc; i++) {
        if (pipe(fds[i]) != 0) die("pipe", ss_errf(SS_ERR_IO, "%s", strerror(errno)));
        pids[i] = fork();
        if (pids[i] < 0) die("fork", ss_errf(SS_ERR_IO, "%s", strerror(errno)));
        if (pids[i] == 0) {
            close(fds[i][0]);
            if (v->ranks)
                run_rank(fds[i][1], v, i, session);
            else
                run_single(fds[i][1], v->threads);
        }
        close(fds[i][1]);
    }
    double worst = 0;
    int ok = 1;
    for (int i = 0; i < nproc; i++) {
        report r = {0};
        if (read(fds[i][0], &r, sizeof r) != (ssize_t)sizeof r || !r.ok) ok = 0;
        close(fds[i][0]);
        int status;
        waitpid(pids[i], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status)) ok = 0;
        if (r.ns_per_call > worst) worst = r.ns_per_call;
        double mb = (double)r.maxrss_kb / 1024.0;
        if (mb > v->rss_mb[i]) v->rss_mb[i] = mb;
    }
    if (v->ranks) ss_comm_shm_cleanup(session);
    if (!ok) return 0;
    v->ms[v->n_ok++] = worst / 1e6;
    return 1;
}

static void load_manifest(variant *v)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/manifest.json", v->dir);
    void *buf;
    size_t len;
    ss_status *st = ss_read_file(path, &buf, &len);
    if (st) die(path, st);
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(root, "rank_size");
    const cJSON *ranks = cJSON_GetObjectItemCaseSensitive(root, "ranks");
    if (!cJSON_IsNumber(n) || (int)n->valuedouble != v->ranks || !cJSON_IsArray(ranks))
        die(path, ss_errf(SS_ERR_INVALID, "not a split over %d ranks", v->ranks));
    const cJSON *r;
    int i = 0;
    cJSON_ArrayForEach(r, ranks)
    {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(r, "param_bytes");
        if (i < MAX_RANKS && cJSON_IsNumber(b)) v->shard_mb[i] = b->valuedouble / (1024.0 * 1024.0);
        i++;
    }
    cJSON_Delete(root);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
    double s[MAX_ROUNDS];
    memcpy(s, v, sizeof(double) * (size_t)n);
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

static double best(const double *v, int n)
{
    double b = v[0];
    for (int i = 1; i < n; i++)
        if (v[i] < b) b = v[i];
    return b;
}

static void usage(void)
{
    fprintf(
        stderr,
        "usage: bench_shard --model M.onnx --input NAME=FILE.npy [--split N=DIR]... [--rounds R] "
        "[--iters K] [--warmup W] [--cores C]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    variant vs[MAX_VARIANTS];
    int nv = 0, rounds = 5;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    memset(vs, 0, sizeof vs);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        if (!strcmp(a, "--model")) {
            g_model = argv[++i];
        } else if (!strcmp(a, "--input") && g_n_inputs < MAX_INPUTS) {
            char *kv = argv[++i], *eq = strchr(kv, '=');
            if (!eq) usage();
            *eq = 0;
            g_names[g_n_inputs] = kv;
            g_files[g_n_inputs++] = eq + 1;
        } else if (!strcmp(a, "--split") && nv < MAX_VARIANTS - 2) {
            char *kv = argv[++i], *eq = strchr(kv, '=');
            if (!eq) usage();
            *eq = 0;
            vs[nv].ranks = atoi(kv);
            vs[nv].dir = eq + 1;
            if (vs[nv].ranks < 1 || vs[nv].ranks > MAX_RANKS) usage();
            nv++;
        } else if (!strcmp(a, "--rounds")) {
            rounds = atoi(argv[++i]);
        } else if (!strcmp(a, "--iters")) {
            g_iters = atoi(argv[++i]);
        } else if (!strcmp(a, "--warmup")) {
            g_warmup = atoi(argv[++i]);
        } else if (!strcmp(a, "--cores")) {
            cores = atol(argv[++i]);
        } else {
            usage();
        }
    }
    if (!g_model || rounds < 1 || rounds > MAX_ROUNDS || g_iters < 1 || g_warmup < 0 || cores < 1)
        usage();
    /* the baselines first in the table */
    memmove(vs + 2, vs, sizeof(variant) * (size_t)nv);
    memset(vs, 0, sizeof(variant) * 2);
    vs[0] = (variant){.ranks = 0, .threads = (int)cores};
    snprintf(vs[0].label, sizeof vs[0].label, "single (%ldt)", cores);
    vs[1] = (variant){.ranks = 0, .threads = 1};
    snprintf(vs[1].label, sizeof vs[1].label, "single (1t)");
    nv += 2;
    for (int i = 2; i < nv; i++) {
        vs[i].threads = (int)(cores / vs[i].ranks > 1 ? cores / vs[i].ranks : 1);
        snprintf(vs[i].label, sizeof vs[i].label, "%d rank%s (%dt each)", vs[i].ranks,
                 vs[i].ranks > 1 ? "s" : "", vs[i].threads);
        load_manifest(&vs[i]);
    }
    /* batch = dim 0 of the first input */
    int64_t batch = 1;
    if (g_n_inputs > 0) {
        ss_tensor x;
        ss_status *st = ss_npy_read(g_files[0], &x);
        if (st) die(g_files[0], st);
        batch = x.ndim > 0 ? x.dims[0] : 1;
        ss_tensor_free(&x);
    }
    fprintf(
        stderr,
        "bench_shard: %d variants x %d rounds x %d calls (+%d warm-up), batch %lld, %ld cores\n",
        nv, rounds, g_iters, g_warmup, (long long)batch, cores);
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < nv; k++) {
            variant *v = &vs[(k + r) % nv];
            if (!run_variant(v, r))
                fprintf(stderr, "bench_shard: round %d: %s failed\n", r + 1, v->label);
            else
                fprintf(stderr, "  round %d  %-22s %9.1f ms/call\n", r + 1, v->label,
                        v->ms[v->n_ok - 1]);
        }
    }
    if (vs[0].n_ok == 0) die("the unsharded baseline", ss_errf(SS_ERR_UNAVAILABLE, "never ran"));
    double base = median(vs[0].ms, vs[0].n_ok);
    printf("\n%-22s %6s %9s %9s %10s %10s %8s %10s %10s %12s %6s\n", "variant", "rounds", "median",
           "best", "samples/s", "samples/s", "ratio", "shard MiB", "peak RSS", "RSS - shard",
           "<=+50");
    printf("%-22s %6s %9s %9s %10s %10s %8s %10s %10s %12s %6s\n", "", "", "ms/call", "ms/call",
           "(median)", "(best)", "vs single", "per rank", "MiB (max)", "MiB (max)", "MiB");
    for (int i = 0; i < nv; i++) {
        variant *v = &vs[i];
        if (!v->n_ok) {
            printf("%-22s failed in every round\n", v->label);
            continue;
        }
        double med = median(v->ms, v->n_ok), b = best(v->ms, v->n_ok);
        double rss = 0, shard = 0, over = -1e9;
        int nproc = v->ranks ? v->ranks : 1;
        for (int k = 0; k < nproc; k++) {
            if (v->rss_mb[k] > rss) rss = v->rss_mb[k];
            if (v->shard_mb[k] > shard) shard = v->shard_mb[k];
            if (v->rss_mb[k] - v->shard_mb[k] > over) over = v->rss_mb[k] - v->shard_mb[k];
        }
        printf("%-22s %6d %9.1f %9.1f %10.1f %10.1f %8.2f", v->label, v->n_ok, med, b,
               batch / (med / 1e3), batch / (b / 1e3), base / med);
        if (v->ranks)
            printf(" %10.1f %10.1f %12.1f %6s\n", shard, rss, over, over <= 50 ? "yes" : "NO");
        else
            printf(" %10s %10.1f %12s %6s\n", "-", rss, "-", "-");
    }
    printf("\nratio = median time of 'single (%ldt)' / median time of the variant (> 1: faster). "
           "RSS - shard = the rank's peak RSS minus its shard's weight bytes (target <= 50 MiB).\n",
           cores);
    return 0;
}
