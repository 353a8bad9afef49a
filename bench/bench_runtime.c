/*
 * bench_runtime: latency of one model in shardserve's runtime (the "A" side of
 * bench/run_runtime.sh; bench/ort/bench_ort.js is the "B" side and speaks the same protocol).
 *
 *   bench_runtime MODEL.onnx --input NAME=FILE.npy ... [--threads T] [--iters N] [--warmup W]
 *   bench_runtime MODEL.onnx --input ... --serve      # rounds driven from stdin
 *   bench_runtime MODEL.onnx --load-only              # load time and RssAnon growth
 *   bench_runtime --fma-peak T                        # f32 FMA peak, read GB/s on T threads
 *
 * Every graph input must be given as a .npy file (bench/models.py writes them), so both runtimes
 * see the same bytes. The session is created once with ss_session_options.blas_threads = T, warmed
 * up, and then timed per call with a monotonic clock around ss_session_run only.
 *
 * Standalone mode prints median / p10 / p90 latency and throughput (batch = dim 0 of input 0
 * divided by the median). --serve prints "ready ..." after warm-up, then for each stdin line
 * "run N" runs N calls and prints "times t1 t2 ... cpu=C" (nanoseconds per call, then the
 * process CPU time of the whole round, all threads); "quit" or EOF ends it. The
 * ready line carries a checksum of the outputs (sum and sum of |x| of every float output) so the
 * driver can check that both runtimes computed the same thing.
 *
 * --load-only reads RssAnon / RssFile from /proc/self/status before and after ss_session_create,
 * reports the create time, then runs once with zero inputs when every input shape is static.
 */
#include "shardserve/core.h"
#include "fma_peak.h"
#include "ops/gemm_f32p.h"
#include "ops/onednn.h"
#include "shardserve/runtime.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_INPUTS 16

typedef struct {
    const char *model;
    const char *names[MAX_INPUTS];
    const char *files[MAX_INPUTS];
    int n_given;
    int threads, iters, warmup;
    ss_weights weights; /* --weights f32|bf16|int8 */
    bool serve, load_only;
} bench_args;

static void usage(void)
{
    fprintf(stderr, "usage: bench_runtime MODEL.onnx [--input NAME=FILE.npy]... [--threads T] "
                    "[--weights f32|bf16|int8] "
                    "[--iters N] [--warmup W] [--serve | --load-only]\n");
    exit(2);
}

static void die(ss_status *st, const char *what)
{
    fprintf(stderr, "bench_runtime: %s: %s\n", what, st ? st->msg : "failed");
    ss_status_free(st);
    exit(1);
}

static void parse_args(int argc, char **argv, bench_args *a)
{
    memset(a, 0, sizeof *a);
    a->threads = 1;
    a->iters = 50;
    a->warmup = 3;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        bool has_val = i + 1 < argc;
        if (!strcmp(s, "--input") && has_val) {
            char *eq = strchr(argv[++i], '=');
            if (!eq || a->n_given == MAX_INPUTS) usage();
            *eq = '\0';
            a->names[a->n_given] = argv[i];
            a->files[a->n_given++] = eq + 1;
        } else if (!strcmp(s, "--threads") && has_val) {
            a->threads = atoi(argv[++i]);
        } else if (!strcmp(s, "--weights") && has_val) {
            if (!ss_weights_parse(argv[++i], &a->weights)) usage();
        } else if (!strcmp(s, "--iters") && has_val) {
            a->iters = atoi(argv[++i]);
        } else if (!strcmp(s, "--warmup") && has_val) {
            a->warmup = atoi(argv[++i]);
        } else if (!strcmp(s, "--serve")) {
            a->serve = true;
        } else if (!strcmp(s, "--load-only")) {
            a->load_only = true;
        } else if (s[0] != '-' && !a->model) {
            a->model = s;
        } else {
            usage();
        }
    }
    if (!a->model || a->threads < 1 || a->iters < 1 || a->warmup < 0) usage();
}

/* kB value of a "Key:   N kB" line of /proc/self/status, or -1. */
static long proc_status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            kb = strtol(line + kl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return (a > b) - (a < b);
}

static double percentile_ms(const uint64_t *sorted, int n, double q)
{
    int i = (int)floor(q * (n - 1) + 0.5);
    return (double)sorted[i] / 1e6;
}

/* Inputs in graph order; each must have been given on the command line. */
static void load_inputs(const ss_session *s, const bench_args *a, ss_tensor *ins)
{
    int n = ss_session_num_inputs(s);
    if (n > MAX_INPUTS) die(ss_errf(SS_ERR_LIMIT, "%d inputs", n), "model");
    for (int i = 0; i < n; i++) {
        const char *name = ss_session_input(s, i)->name;
        const char *file = NULL;
        for (int j = 0; j < a->n_given; j++)
            if (!strcmp(a->names[j], name)) file = a->files[j];
        if (!file) die(ss_errf(SS_ERR_INVALID, "no --input for graph input '%s'", name), "inputs");
        ss_status *st = ss_npy_read(file, &ins[i]);
        if (st) die(st, file);
    }
}

static ss_status *run_once(ss_session *s, const ss_tensor *ins, int n, uint64_t *ns)
{
    const ss_tensor *outs;
    uint64_t t0 = ss_now_ns();
    ss_status *st = ss_session_run(s, ins, n, &outs);
    *ns = ss_now_ns() - t0;
    return st;
}

static void print_checksum(ss_session *s, const ss_tensor *ins, int n)
{
    const ss_tensor *outs;
    ss_status *st = ss_session_run(s, ins, n, &outs);
    if (st) die(st, "run");
    double sum = 0, asum = 0;
    for (int o = 0; o < ss_session_num_outputs(s); o++) {
        const ss_tensor *t = &outs[o];
        int64_t numel = ss_tensor_numel(t);
        if (t->dtype != SS_DT_FLOAT32) continue;
        for (int64_t i = 0; i < numel; i++) {
            double v = ((const float *)t->data)[i];
            sum += v;
            asum += fabs(v);
        }
    }
    printf(" sum=%.9g asum=%.9g", sum, asum);
}

static int load_only(const bench_args *a)
{
    long anon0 = proc_status_kb("RssAnon"), file0 = proc_status_kb("RssFile");
    ss_session_options opt = {.blas_threads = a->threads, .weights = a->weights};
    ss_session *s;
    uint64_t t0 = ss_now_ns();
    ss_status *st = ss_session_create(a->model, &opt, &s);
    uint64_t create_ns = ss_now_ns() - t0;
    if (st) die(st, a->model);
    long anon1 = proc_status_kb("RssAnon"), file1 = proc_status_kb("RssFile");
    ss_session_stats stats;
    ss_session_get_stats(s, &stats);
    printf("load create_ms=%.1f rss_anon_growth_mb=%.1f rss_file_growth_mb=%.1f const_mb=%.1f",
           create_ns / 1e6, (anon1 - anon0) / 1024.0, (file1 - file0) / 1024.0,
           stats.const_bytes / 1048576.0);
    /* One run with zero inputs (static shapes only) shows the weights are really usable. */
    int n = ss_session_num_inputs(s);
    ss_tensor ins[MAX_INPUTS] = {0};
    bool can_run = n <= MAX_INPUTS;
    for (int i = 0; can_run && i < n; i++) {
        const ss_onnx_value_info *vi = ss_session_input(s, i);
        for (int d = 0; d < vi->ndim; d++)
            if (vi->dims[d] < 0) can_run = false;
        if (can_run && ss_tensor_alloc(&ins[i], vi->dtype, vi->ndim, vi->dims)) can_run = false;
    }
    if (can_run) {
        uint64_t ns;
        st = run_once(s, ins, n, &ns);
        if (st) die(st, "first run");
        printf(" first_run_ms=%.1f rss_anon_after_run_mb=%.1f", ns / 1e6,
               (proc_status_kb("RssAnon") - anon0) / 1024.0);
    }
    printf("\n");
    for (int i = 0; i < n && i < MAX_INPUTS; i++)
        ss_tensor_free(&ins[i]);
    ss_session_free(s);
    return 0;
}

/* CPU time of the whole process (all threads, spinning included). */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int serve(ss_session *s, const ss_tensor *ins, int n)
{
    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "quit", 4)) break;
        int iters;
        if (sscanf(line, "run %d", &iters) != 1 || iters < 1) {
            fprintf(stderr, "bench_runtime: bad command: %s", line);
            return 1;
        }
        printf("times");
        uint64_t cpu0 = cpu_ns();
        for (int i = 0; i < iters; i++) {
            uint64_t ns;
            ss_status *st = run_once(s, ins, n, &ns);
            if (st) die(st, "run");
            printf(" %llu", (unsigned long long)ns);
        }
        printf(" cpu=%llu\n", (unsigned long long)(cpu_ns() - cpu0));
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv)
{
    bench_args a;
    if (argc == 2 && !strcmp(argv[1], "--print-kernels")) {
        /* what compare.py prints above its table */
        printf(
            "oneDNN ISA %s, SHARDSERVE_KERNELS=%s (auto: own kernel on packed weights for float32 "
            "MatMuls of %d-%d rows with AVX-512, oneDNN for other float32 GEMMs with M > 1 and "
            ">= 32768 multiply-adds, own GEMV for M == 1 and own/OpenBLAS below)\n",
            ss_dnnl_isa_name(), ss_kernels_name(ss_kernels_mode()), SS_GEMM_F32P_MIN_M,
            SS_GEMM_F32P_MAX_M);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "--fma-peak")) {
        /* the CPU's f32 FMA peak on T threads (fma_peak.h), for compare.py's % of peak */
        fma_peak p = fma_peak_measure(atoi(argv[2]), 0.2, 3);
        printf("fma_peak isa=%s threads=%d gflops_cpu=%.1f gflops_wall=%.1f read_gbps=%.1f\n",
               p.isa, p.threads, p.gflops_cpu, p.gflops_wall,
               read_bw_measure(atoi(argv[2]), 512, 5));
        return 0;
    }
    parse_args(argc, argv, &a);
    ss_log_init_from_env();
    if (a.load_only) return load_only(&a);

    ss_session_options opt = {.blas_threads = a.threads, .weights = a.weights};
    ss_session *s;
    uint64_t t0 = ss_now_ns();
    ss_status *st = ss_session_create(a.model, &opt, &s);
    uint64_t create_ns = ss_now_ns() - t0;
    if (st) die(st, a.model);
    int n = ss_session_num_inputs(s);
    ss_tensor ins[MAX_INPUTS] = {0};
    load_inputs(s, &a, ins);
    int64_t batch = ins[0].ndim > 0 ? ins[0].dims[0] : 1;

    uint64_t warm_ns = 0;
    for (int i = 0; i < a.warmup; i++) {
        st = run_once(s, ins, n, &warm_ns);
        if (st) die(st, "warm-up run");
    }
    int rc = 0;
    if (a.serve) {
        printf("ready runtime=shardserve threads=%d batch=%lld create_ms=%.1f warm_ms=%.3f",
               a.threads, (long long)batch, create_ns / 1e6, warm_ns / 1e6);
        print_checksum(s, ins, n);
        printf("\n");
        fflush(stdout);
        rc = serve(s, ins, n);
    } else {
        uint64_t *t = malloc(sizeof *t * (size_t)a.iters);
        if (!t) die(ss_errf(SS_ERR_NOMEM, "out of memory"), "timings");
        for (int i = 0; i < a.iters; i++) {
            st = run_once(s, ins, n, &t[i]);
            if (st) die(st, "run");
        }
        qsort(t, (size_t)a.iters, sizeof *t, cmp_u64);
        double med = percentile_ms(t, a.iters, 0.5);
        printf("%s threads=%d batch=%lld iters=%d create=%.1f ms: median %.3f ms, p10 %.3f, "
               "p90 %.3f, throughput %.1f samples/s\n",
               a.model, a.threads, (long long)batch, a.iters, create_ns / 1e6, med,
               percentile_ms(t, a.iters, 0.1), percentile_ms(t, a.iters, 0.9), batch / med * 1e3);
        free(t);
    }
    for (int i = 0; i < n; i++)
        ss_tensor_free(&ins[i]);
    ss_session_free(s);
    return rc;
}
