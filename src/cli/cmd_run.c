/*
 * shardserve run MODEL.onnx --input NAME=FILE.npy ... [--output-dir DIR] [--repeat N]
 * Loads the model, runs it (N times, reporting the median), prints each output's name, dtype,
 * shape and a short summary, and writes NAME.npy files with --output-dir (NAME escaped by
 * ss_name_to_file: '/' and other bytes unsafe in a file name become %XX).
 */
#include "cli.h"
#include "shardserve/agent.h"
#include "shardserve/runtime.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <unistd.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INPUTS 64

static const char run_usage[] =
    "usage: shardserve run MODEL.onnx --input NAME=FILE.npy ... [--output-dir DIR] [--repeat N]\n"
    "                      [--weights f32|bf16|int8] [--threads N]\n"
    "       shardserve run --shards DIR [--comm shm|mpi] [--timeout-ms MS] --input NAME=FILE.npy "
    "...\n"
    "                      [--output-dir DIR]\n"
    "  --shards DIR    run a split made by 'shardserve shard': one local process per rank\n"
    "  --comm          collectives backend: shm (one host, default) or mpi (ranks under mpirun)\n"
    "  --timeout-ms    bound of every collective wait (default 5000)\n"
    "  --threads       intra-op threads of a whole model (default: the CPUs this process may use:\n"
    "                  its affinity, capped by a cgroup CPU quota)\n"
    "  --weights       bf16: MatMul/Gemm weights held as bf16 (f32 accumulation): up to 64 rows\n"
    "                  (decode) on any CPU, more where it has native bf16 math (AVX512-BF16/AMX);\n"
    "                  int8: any rows, on int8 weights (a scale per column) and\n"
    "                  activations (a scale per row, each call) where the CPU has AVX512-VNNI\n";

/* A sequence (or optional) output: its length, then each tensor as "name[i]". */
static void print_sequence(const char *name, const ss_tensor *t)
{
    const ss_sequence *q = ss_sequence_of(t);
    if (!q) {
        printf("%s: empty optional\n", name);
        return;
    }
    printf("%s: sequence of %d tensors\n", name, ss_sequence_len(q));
    for (int i = 0; i < ss_sequence_len(q); i++) {
        char item[256];
        snprintf(item, sizeof item, "%s[%d]", name, i);
        cli_print_tensor(item, ss_sequence_at(q, i));
    }
}

void cli_print_tensor(const char *name, const ss_tensor *t)
{
    char sb[160];
    int64_t n = ss_tensor_numel(t);
    if (t->dtype == SS_DT_SEQUENCE) {
        print_sequence(name, t);
        return;
    }
    printf("%s: %s %s", name, ss_dtype_name(t->dtype),
           ss_shape_str(t->ndim, t->dims, sb, sizeof sb));
    if (t->dtype == SS_DT_STRING || n <= 0) {
        printf("\n");
        return;
    }
    double mn = ss_tensor_elem_f64(t, 0), mx = mn, sum = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = ss_tensor_elem_f64(t, i);
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        sum += v;
    }
    printf(" min %g max %g mean %g  [", mn, mx, sum / (double)n);
    for (int64_t i = 0; i < n && i < 6; i++)
        printf("%s%g", i ? ", " : "", ss_tensor_elem_f64(t, i));
    printf("%s]\n", n > 6 ? ", ..." : "");
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int run_shards(const char *shards, ss_comm_backend backend, long timeout_ms, int n_args,
                      char **names, char **files, const char *outdir)
{
    const char *base = getenv("TMPDIR");
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%.1000s/shardserve-run-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmp))
        return cli_fail("run", ss_errf(SS_ERR_IO, "cannot create a temporary folder %s: %s", tmp,
                                       strerror(errno)));
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = 0;
    ss_run_shards_options opt = {
        .shards_dir = shards,
        .backend = backend,
        .n_inputs = n_args,
        .input_names = (const char *const *)names,
        .input_files = (const char *const *)files,
        .out_dir = tmp,
        .timeout_ms = (int)timeout_ms,
        .self_exe = self,
    };
    ss_status *st = ss_run_shards(&opt);
    int rc = st ? cli_fail("run", st) : 0;
    DIR *d = opendir(tmp);
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".npy")) continue;
        char path[4096], file[256], name[256];
        snprintf(path, sizeof path, "%s/%s", tmp, e->d_name);
        snprintf(file, sizeof file, "%.*s", (int)(len - 4), e->d_name);
        if (!ss_name_from_file(file, name, sizeof name)) snprintf(name, sizeof name, "%s", file);
        ss_tensor t;
        ss_status *rs = rc ? NULL : ss_npy_read(path, &t);
        if (!rc && !rs) {
            cli_print_tensor(name, &t);
            if (outdir) {
                char dst[4096];
                snprintf(dst, sizeof dst, "%s/%s", outdir, e->d_name);
                ss_status *w = ss_npy_write(dst, &t);
                if (w) rc = cli_fail("run", w);
            }
            ss_tensor_free(&t);
        } else if (rs) {
            rc = cli_fail("run", rs);
        }
        unlink(path);
    }
    if (d) closedir(d);
    rmdir(tmp);
    return rc;
}

/* Output names become file names escaped (tf2onnx's "model/dense/BiasAdd:0" is
 * model%2Fdense%2FBiasAdd%3A0.npy): a name is never a path. */
static int write_output(const char *outdir, const char *name, const ss_tensor *t)
{
    char path[4096], file[NAME_MAX - 3];
    if (!ss_name_to_file(name, file, sizeof file))
        return cli_fail("run", ss_errf(SS_ERR_LIMIT,
                                       "output name '%.64s...' is too long for a "
                                       "file name",
                                       name));
    snprintf(path, sizeof path, "%s/%s.npy", outdir, file);
    ss_status *w = ss_npy_write(path, t);
    return w ? cli_fail("run", w) : 0;
}

int cmd_run(int argc, char **argv)
{
    const char *model = NULL, *outdir = NULL, *shards = NULL;
    ss_comm_backend backend = SS_COMM_SHM;
    long timeout_ms = 5000;
    char *names[MAX_INPUTS], *files[MAX_INPUTS];
    int n_args = 0;
    long repeat = 1;
    ss_session_options so = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(run_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--input") && i + 1 < argc) {
            if (n_args == MAX_INPUTS)
                return cli_fail("run", ss_errf(SS_ERR_LIMIT, "more than %d inputs", MAX_INPUTS));
            if (!cli_split_kv(argv[++i], &names[n_args], &files[n_args]))
                return cli_fail("run", ss_errf(SS_ERR_INVALID,
                                               "--input wants NAME=FILE.npy, got '%s'", argv[i]));
            n_args++;
        } else if (!strcmp(a, "--shards") && i + 1 < argc) {
            shards = argv[++i];
        } else if (!strcmp(a, "--comm") && i + 1 < argc) {
            if (!ss_comm_backend_parse(argv[++i], &backend))
                return cli_fail(
                    "run", ss_errf(SS_ERR_INVALID, "--comm wants shm or mpi, got '%s'", argv[i]));
        } else if (!strcmp(a, "--timeout-ms") && i + 1 < argc) {
            if (!cli_parse_int(argv[++i], 1, 3600000, &timeout_ms))
                return cli_fail("run", ss_errf(SS_ERR_INVALID,
                                               "--timeout-ms wants 1..3600000, got '%s'", argv[i]));
        } else if (!strcmp(a, "--weights") && i + 1 < argc) {
            const char *w = argv[++i];
            if (!ss_weights_parse(w, &so.weights))
                return cli_fail("run", ss_errf(SS_ERR_INVALID,
                                               "--weights wants f32, bf16 or int8, got '%s'", w));
        } else if (!strcmp(a, "--threads") && i + 1 < argc) {
            long t;
            if (!cli_parse_int(argv[++i], 1, 256, &t))
                return cli_fail(
                    "run", ss_errf(SS_ERR_INVALID, "--threads wants 1..256, got '%s'", argv[i]));
            so.blas_threads = (int)t;
        } else if (!strcmp(a, "--output-dir") && i + 1 < argc) {
            outdir = argv[++i];
        } else if (!strcmp(a, "--repeat") && i + 1 < argc) {
            if (!cli_parse_int(argv[++i], 1, 1000000, &repeat))
                return cli_fail("run",
                                ss_errf(SS_ERR_INVALID,
                                        "--repeat wants a count 1..1000000, got '%s'", argv[i]));
        } else if (a[0] == '-' || model) {
            fprintf(stderr, "shardserve run: unexpected argument '%s'\n%s", a, run_usage);
            return 2;
        } else {
            model = a;
        }
    }
    ss_status *made = outdir ? cli_make_output_dir(outdir) : NULL;
    if (made) return cli_fail("run", made);
    if (shards && so.blas_threads)
        return cli_fail("run", ss_errf(SS_ERR_INVALID,
                                       "--threads is for a whole model; each rank of --shards "
                                       "computes on 1 thread"));
    if (shards && !model)
        return run_shards(shards, backend, timeout_ms, n_args, names, files, outdir);
    if (!model || shards) {
        fputs(run_usage, stderr);
        return 2;
    }
    if (!so.blas_threads) {
        int cpus = ss_usable_cpus();
        so.blas_threads = cpus < 256 ? cpus : 256;
    }
    ss_session *s;
    ss_status *st = ss_session_create(model, &so, &s);
    if (st) return cli_fail("run", st);
    int n_in = ss_session_num_inputs(s);
    ss_tensor *inputs = calloc((size_t)n_in + 1, sizeof *inputs);
    int rc = 0;
    /* a misspelt --input name first: the message then names the user's word, not the model's */
    for (int j = 0; j < n_args && !st; j++) {
        int known = 0;
        for (int i = 0; i < n_in; i++)
            known |= !strcmp(names[j], ss_session_input(s, i)->name);
        if (!known) st = ss_errf(SS_ERR_INVALID, "the model has no input named '%s'", names[j]);
    }
    for (int i = 0; i < n_in && !st; i++) {
        const char *want = ss_session_input(s, i)->name;
        int found = -1;
        for (int j = 0; j < n_args; j++)
            if (!strcmp(names[j], want)) found = j;
        if (found < 0)
            st = ss_errf(SS_ERR_INVALID, "missing --input %s=FILE.npy (the model's input %d)", want,
                         i);
        else
            st = ss_npy_read(files[found], &inputs[i]);
    }
    uint64_t *times = calloc((size_t)repeat, sizeof(uint64_t));
    const ss_tensor *outs = NULL;
    for (long r = 0; r < repeat && !st; r++) {
        uint64_t t0 = ss_now_ns();
        st = ss_session_run(s, inputs, n_in, &outs);
        times[r] = ss_now_ns() - t0;
    }
    if (st) {
        rc = cli_fail("run", st);
    } else {
        for (int i = 0; i < ss_session_num_outputs(s); i++) {
            const char *name = ss_session_output(s, i)->name;
            cli_print_tensor(name, &outs[i]);
            if (outdir) rc |= write_output(outdir, name, &outs[i]);
        }
        if (repeat > 1) {
            qsort(times, (size_t)repeat, sizeof *times, cmp_u64);
            printf("runs: %ld  median %.1f us  min %.1f us\n", repeat, times[repeat / 2] / 1e3,
                   times[0] / 1e3);
        }
    }
    free(times);
    for (int i = 0; i < n_in; i++)
        ss_tensor_free(&inputs[i]);
    free(inputs);
    ss_session_free(s);
    return rc;
}

/* Hidden: one rank of `run --shards --comm mpi`, started by mpirun.
 * shardserve run-rank SHARDS OUTDIR TIMEOUT_MS NAME=FILE... */
int cmd_run_rank(int argc, char **argv)
{
    if (argc < 4) return 2;
    char *names[MAX_INPUTS], *files[MAX_INPUTS];
    int n = 0;
    for (int i = 4; i < argc && n < MAX_INPUTS; i++)
        if (cli_split_kv(argv[i], &names[n], &files[n])) n++;
    ss_run_shards_options opt = {
        .shards_dir = argv[1],
        .backend = SS_COMM_MPI,
        .n_inputs = n,
        .input_names = (const char *const *)names,
        .input_files = (const char *const *)files,
        .out_dir = argv[2],
        .timeout_ms = atoi(argv[3]),
    };
    ss_status *st = ss_run_shards_rank(&opt, -1, "mpi");
    return st ? cli_fail("run-rank", st) : 0;
}
