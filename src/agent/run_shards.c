/*
 * `shardserve run --shards DIR`: the offline proof that a split is right. One process per rank
 * on this host (forked, shm backend) or under mpirun (mpi backend); stage-0 ranks read the inputs,
 * the last rank writes the outputs as .npy files. The parent waits for every rank and reports the
 * first failure by rank; a rank that fails makes its peers fail within the comm timeout, so the
 * group never hangs.
 */
#include "shardserve/agent.h"

#include "spawn.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static ss_status *manifest_rank_size(const char *dir, int *rank_size)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    void *buf;
    size_t len;
    ss_status *st = ss_read_file(path, &buf, &len);
    if (st) return ss_status_wrap(st, "--shards %s (written by 'shardserve shard')", dir);
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(root, "rank_size");
    if (!cJSON_IsNumber(n) || n->valuedouble < 1 || n->valuedouble > 4096) {
        cJSON_Delete(root);
        return ss_errf(SS_ERR_INVALID, "%s: no valid rank_size", path);
    }
    *rank_size = (int)n->valuedouble;
    cJSON_Delete(root);
    return NULL;
}

static ss_status *feed_and_run(ss_rank *r, const ss_run_shards_options *opt)
{
    ss_session *s = ss_rank_session(r);
    const ss_rank_config *cfg = ss_rank_get_config(r);
    int n_in = ss_session_num_inputs(s);
    ss_tensor ins[64] = {0};
    ss_status *st = n_in > 64 ? ss_errf(SS_ERR_LIMIT, "more than 64 inputs") : NULL;
    for (int i = 0; i < n_in && !st; i++) {
        const char *want = ss_session_input(s, i)->name;
        int found = -1;
        for (int j = 0; j < opt->n_inputs; j++)
            if (!strcmp(opt->input_names[j], want)) found = j;
        st = found < 0 ? ss_errf(SS_ERR_INVALID, "missing --input %s=FILE.npy", want)
                       : ss_npy_read(opt->input_files[found], &ins[i]);
    }
    const ss_tensor *outs = NULL;
    if (!st) st = ss_session_run(s, ins, n_in, &outs);
    if (!st && cfg->rank == cfg->rank_size - 1) {
        for (int i = 0; i < ss_session_num_outputs(s) && !st; i++) {
            char path[PATH_MAX], file[NAME_MAX - 3];
            const char *name = ss_session_output(s, i)->name;
            if (!ss_name_to_file(name, file, sizeof file))
                st = ss_errf(SS_ERR_LIMIT, "output name '%.64s...' is too long for a file name",
                             name);
            snprintf(path, sizeof path, "%s/%s.npy", opt->out_dir, file);
            if (!st) st = ss_npy_write(path, &outs[i]);
        }
    }
    for (int i = 0; i < n_in; i++)
        ss_tensor_free(&ins[i]);
    return st;
}

ss_status *ss_run_shards_rank(const ss_run_shards_options *opt, int rank, const char *session)
{
    if (rank < 0) { /* under mpirun: Open MPI tells each process its rank before MPI_Init */
        const char *env = getenv("OMPI_COMM_WORLD_RANK");
        if (!env) return ss_errf(SS_ERR_INVALID, "--comm mpi ranks must be started by mpirun");
        rank = atoi(env);
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/device%d/group_config.json", opt->shards_dir, rank);
    ss_rank_options ro = {.backend = opt->backend,
                          .session = session,
                          .timeout_ms = opt->timeout_ms,
                          .join_timeout_ms = opt->timeout_ms > 0 ? opt->timeout_ms * 4 : 20000};
    ss_rank *r;
    ss_status *st = ss_rank_open(path, &ro, &r);
    if (st) return st;
    st = feed_and_run(r, opt);
    ss_rank_close(r);
    return st ? ss_status_wrap(st, "rank %d", rank) : NULL;
}

static ss_status *run_forked(const ss_run_shards_options *opt, int rank_size)
{
    char session[64];
    snprintf(session, sizeof session, "run-%d", (int)getpid());
    ss_comm_shm_remove_abandoned("run-"); /* of runs killed before they could remove theirs */
    pid_t *pids = calloc((size_t)rank_size, sizeof(pid_t));
    if (!pids) return ss_errf(SS_ERR_NOMEM, "out of memory");
    fflush(NULL);
    int started = 0;
    ss_status *st = NULL;
    pid_t parent = getpid();
    for (int r = 0; r < rank_size; r++) {
        pid_t pid = fork();
        if (pid < 0) {
            st = ss_errf(SS_ERR_IO, "fork for rank %d: %s", r, strerror(errno));
            break;
        }
        if (pid == 0) {
            /* a rank never outlives `shardserve run` (killed, or ended by a test's timeout) */
            if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(1);
            char tag[32];
            snprintf(tag, sizeof tag, "rank %d", r);
            ss_log_set_tag(tag);
            ss_status *cst = ss_run_shards_rank(opt, r, session);
            if (cst) SS_ERROR("%s", cst->msg);
            _exit(cst ? 1 : 0);
        }
        pids[r] = pid;
        started++;
    }
    int first_bad = -1;
    for (int done = 0; done < started; done++) {
        int status;
        pid_t pid = wait(&status);
        if (pid < 0) break;
        for (int r = 0; r < started; r++)
            if (pids[r] == pid) {
                pids[r] = 0;
                if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
                char how[96];
                SS_ERROR("rank %d (pid %d) %s", r, (int)pid,
                         ss_spawn_describe_exit(status, how, sizeof how));
                if (first_bad < 0) first_bad = r;
            }
    }
    for (int r = 0; r < rank_size; r++) /* only if wait() failed: never leave a rank behind */
        if (pids[r] > 0) kill(pids[r], SIGKILL), waitpid(pids[r], NULL, 0);
    free(pids);
    ss_comm_shm_cleanup(session);
    if (!st && first_bad >= 0)
        st = ss_errf(SS_ERR_UNAVAILABLE, "rank %d failed (its exit and error are logged above)",
                     first_bad);
    return st;
}

static ss_status *run_mpi(const ss_run_shards_options *opt, int rank_size)
{
    char np[16], timeout[32];
    snprintf(np, sizeof np, "%d", rank_size);
    snprintf(timeout, sizeof timeout, "%d", opt->timeout_ms);
    const char *argv[256];
    char *extra;
    int a = ss_mpirun_args(argv, 200, &extra);
    argv[a++] = "-np";
    argv[a++] = np;
    argv[a++] = opt->self_exe;
    argv[a++] = "run-rank";
    argv[a++] = opt->shards_dir;
    argv[a++] = opt->out_dir;
    argv[a++] = timeout;
    char *pairs[64];
    int n_pairs = 0;
    /* every input on the command line, or none: argv can fill (SHARDSERVE_MPIRUN_ARGS) first */
    if (opt->n_inputs > 64 || a + opt->n_inputs > 250) {
        free(extra);
        return ss_errf(SS_ERR_LIMIT,
                       "%d inputs and %d mpirun arguments do not fit the ranks' command line "
                       "(at most 64 inputs and 250 arguments in all)",
                       opt->n_inputs, a);
    }
    for (int i = 0; i < opt->n_inputs; i++, n_pairs++) {
        size_t n = strlen(opt->input_names[i]) + strlen(opt->input_files[i]) + 2;
        pairs[i] = malloc(n);
        if (!pairs[i]) break;
        snprintf(pairs[i], n, "%s=%s", opt->input_names[i], opt->input_files[i]);
        argv[a++] = pairs[i];
    }
    argv[a] = NULL;
    if (n_pairs < opt->n_inputs) {
        for (int i = 0; i < n_pairs; i++)
            free(pairs[i]);
        free(extra);
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        execvp("mpirun", (char *const *)argv);
        fprintf(stderr, "cannot run mpirun: %s (install openmpi-bin)\n", strerror(errno));
        _exit(127);
    }
    int status = 0;
    if (pid > 0) waitpid(pid, &status, 0);
    free(extra);
    for (int i = 0; i < n_pairs; i++)
        free(pairs[i]);
    if (pid < 0) return ss_errf(SS_ERR_IO, "fork: %s", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return ss_errf(SS_ERR_UNAVAILABLE,
                       "mpirun failed (exit %d); the failing rank's error is logged above",
                       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return NULL;
}

ss_status *ss_run_shards(const ss_run_shards_options *opt)
{
    int rank_size;
    ss_status *st = manifest_rank_size(opt->shards_dir, &rank_size);
    if (st) return st;
    if (opt->backend == SS_COMM_MPI) {
        if (!ss_comm_backend_available(SS_COMM_MPI))
            return ss_errf(SS_ERR_UNSUPPORTED,
                           "this build has no mpi backend (Open MPI was not found)");
        return run_mpi(opt, rank_size);
    }
    return run_forked(opt, rank_size);
}
