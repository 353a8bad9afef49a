/*
 * gen_greedy: runs a KV-cache decoder through shardserve's runtime with the greedy token loop
 * (kvloop.c) and compares its tokens with PyTorch's (tests/generative/models.py).
 *
 *   gen_greedy MODEL.onnx PROMPT.npy REF_TOKENS.npy
 *   gen_greedy --shards DIR PROMPT.npy REF_TOKENS.npy     (DIR from `shardserve shard`)
 *   mpirun -np N gen_greedy --mpi-shards DIR PROMPT.npy REF_TOKENS.npy
 *   gen_greedy --kv-cache-mb MB ...   (first: the KV block pool of a --kv-pool model, per rank)
 *   gen_greedy --approx ...           (first: bf16 weights and the like change the logits, so
 *                                      greedy drifts from PyTorch: report how many leading tokens
 *                                      agree instead of failing; for benchmarks)
 *
 * SHARDSERVE_RANK_THREADS=T runs each rank's kernels on T threads, as a launched agent's rank
 * does (the launcher sets it to its share of the cores); unset, 1.
 *
 * With --shards, one process per rank (shm communicator; with --mpi-shards, the process mpirun
 * started as rank OMPI_COMM_WORLD_RANK, mpi communicator) runs the same loop on its shard: the
 * ranks keep their own part of the KV cache, and every rank sees the same logits, so each takes
 * the same greedy token; only the collectives inside the graph travel between them.
 * Prints the first mismatch (step, ours, PyTorch's) and exits 1 on any difference; prints the
 * prefill and mean decode-step times on success, then the decode steps' p50 and p99.
 */
#include "kvloop.h"
#include "shardserve/agent.h"
#include "shardserve/comm.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static size_t kv_cache_bytes; /* --kv-cache-mb */
static bool approx;           /* --approx */

/* CPU time of this process (all its threads): on shared cores a steadier measure of the work a
 * step does than the wall clock. */
static double cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static int fail(ss_status *st, const char *what)
{
    fprintf(stderr, "gen_greedy: %s: %s\n", what, st->msg);
    ss_status_free(st);
    return 1;
}

/* Our tokens against the reference (--approx: the difference is only reported). */
static int compare(const int64_t *ours, const int64_t *ref, int steps)
{
    for (int i = 0; i < steps; i++)
        if (ours[i] != ref[i]) {
            fprintf(stderr, "gen_greedy: token %d differs: ours %lld, PyTorch %lld%s\n", i,
                    (long long)ours[i], (long long)ref[i], approx ? " (--approx)" : "");
            return approx ? 0 : 1;
        }
    return 0;
}

/* Where a rank without logits (a pipeline stage before the last) gets each token: broadcast by
 * the first rank of the last stage. NULL comm: the graph has the logits. */
typedef struct {
    ss_comm *comm;
    int root;
} token_source;

static ss_status *step(ss_kvloop *l, const int64_t *tokens, int n, int64_t *next,
                       const token_source *src)
{
    ss_status *st = ss_kvloop_step(l, tokens, n, next);
    if (st || !src->comm) return st;
    st = ss_comm_broadcast(src->comm, ss_comm_group_find(src->comm, "world"), next, sizeof *next,
                           src->root);
    return st ? st : *next < 0 ? ss_errf(SS_ERR_INTERNAL, "no rank produced the token") : NULL;
}

static int plans(const ss_session *s)
{
    ss_session_stats stats;
    ss_session_get_stats(s, &stats);
    return stats.n_plans;
}

/* With the KV block pool a decode step's shapes never change: the plan of the first decode step
 * must serve every later one. */
static int check_plans(const ss_kvloop *l, int first_decode, int last, const char *who)
{
    if (!ss_kvloop_paged(l) || first_decode == last) return 0;
    fprintf(stderr,
            "gen_greedy%s: re-planned during decode: %d plans after the first decode "
            "step, %d at the end\n",
            who, first_decode, last);
    return 1;
}

static int cmp_ms(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int run(ss_session *s, const ss_tensor *prompt, const ss_tensor *ref, const char *who,
               const token_source *src)
{
    ss_kvloop *l = NULL;
    ss_status *st = ss_kvloop_create(s, &l);
    if (st) return fail(st, "binding the model");
    int steps = (int)ref->dims[0];
    int64_t *ours = calloc((size_t)steps, sizeof *ours);
    double t0 = now_ms(), t1 = 0;
    st = step(l, prompt->data, (int)prompt->dims[0], &ours[0], src);
    t1 = now_ms();
    double c1 = cpu_ms();
    int first_decode_plans = 0;
    double *itl = calloc((size_t)steps, sizeof *itl); /* per decode step, ms */
    for (int i = 1; i < steps && !st; i++) {
        double ts = now_ms();
        st = step(l, &ours[i - 1], 1, &ours[i], src);
        if (itl) itl[i - 1] = now_ms() - ts;
        if (i == 1) first_decode_plans = plans(s);
    }
    double t2 = now_ms(), c2 = cpu_ms();
    int rc = st ? fail(st, "generating") : compare(ours, ref->data, steps);
    if (!rc && steps > 1) rc = check_plans(l, first_decode_plans, plans(s), who);
    if (rc == 0)
        printf("gen_greedy%s: %d tokens %s PyTorch's; prefill %lld tokens %.2f ms, decode "
               "%.3f ms/token (cpu %.3f ms/token), %d plans\n",
               who, steps, approx ? "generated, compared with" : "equal",
               (long long)prompt->dims[0], t1 - t0, (t2 - t1) / (steps > 1 ? steps - 1 : 1),
               (c2 - c1) / (steps > 1 ? steps - 1 : 1), plans(s));
    if (rc == 0 && itl && steps > 1) {
        qsort(itl, (size_t)(steps - 1), sizeof *itl, cmp_ms);
        printf("gen_greedy%s: inter-token ms p50 %.3f p99 %.3f\n", who, itl[(steps - 1) / 2],
               itl[(int)(0.99 * (steps - 2))]);
    }
    free(itl);
    free(ours);
    ss_kvloop_free(l);
    return rc;
}

/* One rank of a sharded model, in a child process. */
static int run_rank(const char *dir, int rank, ss_comm_backend backend, const char *session,
                    const ss_tensor *prompt, const ss_tensor *ref)
{
    char config[4096], who[32];
    snprintf(config, sizeof config, "%s/device%d/group_config.json", dir, rank);
    snprintf(who, sizeof who, " rank %d", rank);
    ss_rank *r = NULL;
    const char *threads = getenv("SHARDSERVE_RANK_THREADS");
    long t = threads ? strtol(threads, NULL, 10) : 0;
    ss_rank_options opt = {.backend = backend,
                           .session = session,
                           .timeout_ms = 20000,
                           .blas_threads = t >= 1 && t <= 256 ? (int)t : 0,
                           .kv_cache_bytes = kv_cache_bytes};
    ss_status *st = ss_rank_open(config, &opt, &r);
    int rc = 1;
    if (st) {
        rc = fail(st, config);
    } else {
        const ss_rank_config *cfg = ss_rank_get_config(r);
        token_source src = {cfg->stage_size > 1 ? ss_rank_comm(r) : NULL,
                            cfg->rank_size - cfg->ranks_per_stage};
        rc = run(ss_rank_session(r), prompt, ref, who, &src);
    }
    ss_rank_close(r);
    return rc;
}

static void kill_ranks(const pid_t *pids, int n, pid_t except)
{
    for (int j = 0; j < n; j++)
        if (pids[j] > 0 && pids[j] != except) kill(pids[j], SIGKILL);
}

/* Waits for every rank in the order they end; the first failure kills the others, which would
 * wait for it in a collective. */
static int wait_ranks(const pid_t *pids, int n, int rc)
{
    for (int left = n; left > 0; left--) {
        int status = 0;
        pid_t done = wait(&status);
        if (done < 0) break;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
        if (!rc) kill_ranks(pids, n, done);
        rc = 1;
    }
    return rc;
}

/* Forks one process per rank (the manifest's count: device0..N-1); all must agree. */
static int run_shards(const char *dir, const ss_tensor *prompt, const ss_tensor *ref)
{
    int n = 0;
    char path[4096];
    for (;; n++) {
        snprintf(path, sizeof path, "%s/device%d/group_config.json", dir, n);
        if (access(path, R_OK) != 0) break;
    }
    if (n == 0) return fprintf(stderr, "gen_greedy: no %s/device0/group_config.json\n", dir), 1;
    char session[64];
    snprintf(session, sizeof session, "gen-%d", (int)getpid());
    pid_t pids[64];
    int started = 0, rc = 0;
    for (; started < n && started < 64; started++) {
        pids[started] = fork();
        if (pids[started] == 0) {
            int child_rc = run_rank(dir, started, SS_COMM_SHM, session, prompt, ref);
            fflush(NULL); /* _exit does not flush stdio */
            _exit(child_rc);
        }
        if (pids[started] < 0) break;
    }
    if (started < n) { /* a fork failed: the others would wait for the missing rank */
        fprintf(stderr, "gen_greedy: could only start %d of %d ranks\n", started, n);
        kill_ranks(pids, started, 0);
        rc = 1;
    }
    rc = wait_ranks(pids, started, rc);
    /* the last rank to join unlinks the segment; ranks killed or failed before that leave it */
    ss_status *st = ss_comm_shm_cleanup(session);
    if (st) fail(st, "removing the ranks' shared memory");
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--approx")) approx = true, argc--, argv++;
    if (argc > 2 && !strcmp(argv[1], "--kv-cache-mb")) {
        double mb = atof(argv[2]);
        if (mb <= 0) return fprintf(stderr, "gen_greedy: --kv-cache-mb wants MB > 0\n"), 2;
        kv_cache_bytes = (size_t)(mb * 1024 * 1024);
        argc -= 2, argv += 2;
    }
    bool shards = argc == 5 && !strcmp(argv[1], "--shards");
    bool mpi = argc == 5 && !strcmp(argv[1], "--mpi-shards");
    const char *mpi_rank = getenv("OMPI_COMM_WORLD_RANK");
    if (argc != 4 && !shards && !mpi) {
        fprintf(stderr, "usage: gen_greedy [--approx] [--kv-cache-mb MB] MODEL.onnx|--shards "
                        "DIR|--mpi-shards DIR "
                        "PROMPT.npy REF_TOKENS.npy\n");
        return 2;
    }
    if (mpi && !mpi_rank) {
        fprintf(stderr, "gen_greedy: --mpi-shards: start the ranks with mpirun\n");
        return 2;
    }
    const char *model = argv[argc - 3];
    ss_tensor prompt = {0}, ref = {0};
    ss_session *s = NULL;
    ss_status *st = ss_npy_read(argv[argc - 2], &prompt);
    if (!st) st = ss_npy_read(argv[argc - 1], &ref);
    if (!st && (prompt.dtype != SS_DT_INT64 || prompt.ndim != 1 || ref.dtype != SS_DT_INT64 ||
                ref.ndim != 1 || prompt.dims[0] < 1))
        st = ss_errf(SS_ERR_INVALID, "prompt and reference must be non-empty int64 vectors");
    int rc;
    if (st)
        rc = fail(st, "reading the prompt and reference");
    else if (shards)
        rc = run_shards(model, &prompt, &ref);
    else if (mpi)
        rc = run_rank(model, atoi(mpi_rank), SS_COMM_MPI, NULL, &prompt, &ref);
    else if ((st = ss_session_create(model, &(ss_session_options){.kv_cache_bytes = kv_cache_bytes},
                                     &s)))
        rc = fail(st, model);
    else
        rc = run(s, &prompt, &ref, "", &(token_source){0});
    ss_session_free(s);
    ss_tensor_free(&prompt);
    ss_tensor_free(&ref);
    return rc;
}
