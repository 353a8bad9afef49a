/*
 * shardserve agents: MindSpore's startup_agents.
 * shardserve agent-rank (internal): one agent process, started by `agents` (shm backend).
 * shardserve agent-rank-mpi (internal): one agent process under mpirun (mpi backend); its rank
 * comes from mpirun, so every rank gets the same argument list naming every rank's files.
 */
#include "cli.h"
#include "shardserve/agent.h"
#include "shardserve/link.h"
#include <limits.h>
#include <time.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char agents_usage[] =
    "usage: shardserve agents --distributed-address HOST:PORT --model-files F0,F1,...\n"
    "                         [--group-configs G0,G1,...] [--agent-start-port 7000]\n"
    "                         [--agent-ip IP --rank-start R] [--comm shm|mpi] [--comm-timeout-ms "
    "MS]\n"
    "                         [--connect-timeout-ms MS] [--secret-file FILE | --insecure-link]\n"
    "                         [--restart never|on-failure] [--max-restarts N] "
    "[--restart-backoff-ms MS]\n"
    "                         [--recovered-after-ms MS] [--heartbeat-timeout-ms MS]\n"
    "  --restart         on-failure (default): when an agent dies or the worker goes away, stop "
    "the\n"
    "                    group and start it again (backoff doubling from --restart-backoff-ms "
    "500,\n"
    "                    at most --max-restarts 5 in a row; a group that registered and ran\n"
    "                    --recovered-after-ms 10000 counts as recovered, under --comm mpi with\n"
    "                    ranks on other hosts one that ran 60 s); never:\n"
    "                    stop and exit non-zero. A rank that left its group at a request's time\n"
    "                    limit restarts it at once, uncounted; a rank whose shard does not load\n"
    "                    as given (bad or unsupported model or config) stops the launcher at once\n"
    "                    under either policy: a restart loads the same files\n"
    "  --heartbeat-timeout-ms  a local rank that has read nothing from the worker this long\n"
    "                    (stopped, deadlocked) is killed and its group handled as if it had died\n"
    "                    (--comm mpi: a rank on this host, which ends mpirun's job)\n"
    "                    (default: serve's --heartbeat-timeout-ms from the worker, plus half, at "
    "least 1 s)\n"
    "  --model-files     one model per local rank, in local rank order (--comm mpi: one per rank\n"
    "                    of the whole rank table, in rank order, at paths valid on every host)\n"
    "  --group-configs   one group_config.json per model file (default: next to each model)\n"
    "  --comm mpi        start every rank on every rank-table host through one mpirun (extra\n"
    "                    mpirun arguments from SHARDSERVE_MPIRUN_ARGS, split at spaces); when\n"
    "                    mpirun fails, --restart starts the whole job again\n";

/* Split "a,b,c" in place into up to cap pointers. */
static int split_list(char *s, const char **out, int cap)
{
    int n = 0;
    for (char *tok = strtok(s, ","); tok && n < cap; tok = strtok(NULL, ","))
        if (*tok) out[n++] = tok;
    return n;
}

int cli_read_secret(const char *path, char **secret, size_t *len);

/* An agent's exit status tells its launcher what happened: 0 an orderly end, 75 (EX_TEMPFAIL)
 * the worker went away or broke up the group (start again), 76 it left its group at a request's
 * time limit (start again at once), 78 its shard does not load (do not), 1 anything else. */
static int agent_exit_code(const char *cmd, ss_status *st, bool shard_refused,
                           bool left_at_deadline)
{
    if (!st) return 0;
    int code = shard_refused                    ? SS_AGENT_EXIT_SHARD
               : left_at_deadline               ? SS_AGENT_EXIT_REQUEST
               : st->code == SS_ERR_UNAVAILABLE ? 75
                                                : 1;
    cli_fail(cmd, st);
    return code;
}

/* The launcher's secret and the file its agents read theirs from: --secret-file, or the file a
 * local `serve` wrote for the distributed address (waited for while serve starts). */
static int agents_secret(ss_launcher_options *o, const char *secret_file, char *path, size_t cap,
                         char **secret)
{
    if (secret_file) {
        if (!realpath(secret_file, path)) /* the agents may run elsewhere in the tree */
            return cli_fail(
                "agents", ss_errf(SS_ERR_IO, "--secret-file %s: %s", secret_file, strerror(errno)));
    } else {
        ss_status *st = ss_link_secret_path(o->worker_address, path, cap);
        if (st) return cli_fail("agents", st);
        int waited = 0;
        for (; access(path, F_OK) != 0 && waited < o->connect_timeout_ms; waited += 100) {
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (access(path, F_OK) != 0)
            return cli_fail(
                "agents",
                ss_errf(SS_ERR_UNAVAILABLE,
                        "no link secret for %s: a 'shardserve serve' on this host writes it to "
                        "%s (waited %d ms); on another host copy that file and give "
                        "--secret-file, or run both with --insecure-link",
                        o->worker_address, path, waited));
    }
    if (cli_read_secret(path, secret, &o->secret_len)) return 1;
    o->secret_file = path;
    return 0;
}

int cmd_agents(int argc, char **argv)
{
    static const char *models[4096], *configs[4096];
    ss_launcher_options o = {.agent_start_port = 7000,
                             .rank_start = -1,
                             .restart = SS_RESTART_ON_FAILURE,
                             .comm_timeout_ms = 5000,
                             .connect_timeout_ms = 60000,
                             .model_files = models,
                             .group_configs = configs};
    const char *secret_file = NULL;
    bool insecure = false;
    long v;
    bool have_rank_start = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(agents_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--distributed-address") && has) {
            o.worker_address = argv[++i];
        } else if (!strcmp(a, "--model-files") && has) {
            o.n_models = split_list(argv[++i], models, 4096);
        } else if (!strcmp(a, "--group-configs") && has) {
            o.n_configs = split_list(argv[++i], configs, 4096);
        } else if (!strcmp(a, "--agent-start-port") && has) {
            if (!cli_parse_int(argv[++i], 1, 65535 - 7, &v))
                return cli_fail("agents",
                                ss_errf(SS_ERR_INVALID,
                                        "--agent-start-port wants 1..65528, got '%s'", argv[i]));
            o.agent_start_port = (int)v;
        } else if (!strcmp(a, "--agent-ip") && has) {
            o.agent_ip = argv[++i];
        } else if (!strcmp(a, "--rank-start") && has) {
            if (!cli_parse_int(argv[++i], 0, 4095, &v))
                return cli_fail("agents", ss_errf(SS_ERR_INVALID,
                                                  "--rank-start wants 0..4095, got '%s'", argv[i]));
            o.rank_start = (int)v;
            have_rank_start = true;
        } else if (!strcmp(a, "--comm") && has) {
            if (!ss_comm_backend_parse(argv[++i], &o.backend))
                return cli_fail("agents", ss_errf(SS_ERR_INVALID,
                                                  "--comm wants shm or mpi, got '%s'", argv[i]));
        } else if (!strcmp(a, "--comm-timeout-ms") && has) {
            if (!cli_parse_int(argv[++i], 1, 3600000, &v))
                return cli_fail("agents", ss_errf(SS_ERR_INVALID, "bad --comm-timeout-ms"));
            o.comm_timeout_ms = (int)v;
        } else if (!strcmp(a, "--connect-timeout-ms") && has) {
            if (!cli_parse_int(argv[++i], 1, 3600000, &v))
                return cli_fail("agents", ss_errf(SS_ERR_INVALID, "bad --connect-timeout-ms"));
            o.connect_timeout_ms = (int)v;
        } else if (!strcmp(a, "--restart") && has) {
            const char *p = argv[++i];
            if (!strcmp(p, "never"))
                o.restart = SS_RESTART_NEVER;
            else if (!strcmp(p, "on-failure"))
                o.restart = SS_RESTART_ON_FAILURE;
            else
                return cli_fail(
                    "agents",
                    ss_errf(SS_ERR_INVALID, "--restart wants never or on-failure, got '%s'", p));
        } else if (!strcmp(a, "--max-restarts") && has) {
            if (!cli_parse_int(argv[++i], 1, 1000, &v))
                return cli_fail("agents", ss_errf(SS_ERR_INVALID, "--max-restarts wants 1..1000"));
            o.max_restarts = (int)v;
        } else if (!strcmp(a, "--restart-backoff-ms") && has) {
            if (!cli_parse_int(argv[++i], 1, 600000, &v))
                return cli_fail("agents",
                                ss_errf(SS_ERR_INVALID, "--restart-backoff-ms wants 1..600000"));
            o.backoff_ms = (int)v;
        } else if (!strcmp(a, "--recovered-after-ms") && has) {
            if (!cli_parse_int(argv[++i], 100, 3600000, &v))
                return cli_fail("agents",
                                ss_errf(SS_ERR_INVALID,
                                        "--recovered-after-ms wants 100..3600000, got '%s'",
                                        argv[i]));
            o.recovered_after_ms = (int)v;
        } else if (!strcmp(a, "--heartbeat-timeout-ms") && has) {
            if (!cli_parse_int(argv[++i], 100, 3600000, &v))
                return cli_fail("agents",
                                ss_errf(SS_ERR_INVALID,
                                        "--heartbeat-timeout-ms wants 100..3600000, got '%s'",
                                        argv[i]));
            o.heartbeat_timeout_ms = (int)v;
        } else if (!strcmp(a, "--secret-file") && has) {
            secret_file = argv[++i];
        } else if (!strcmp(a, "--insecure-link")) {
            insecure = true;
        } else {
            fprintf(stderr, "shardserve agents: unexpected argument '%s'\n%s", a, agents_usage);
            return 2;
        }
    }
    if (!o.worker_address || !o.n_models) {
        fputs(agents_usage, stderr);
        return 2;
    }
    if (!o.agent_ip != !have_rank_start)
        return cli_fail(
            "agents",
            ss_errf(SS_ERR_INVALID, "--agent-ip and --rank-start go together (both or neither)"));
    if (o.backend == SS_COMM_MPI && o.agent_ip)
        return cli_fail("agents",
                        ss_errf(SS_ERR_INVALID,
                                "--agent-ip/--rank-start do not apply to --comm mpi: one "
                                "'shardserve agents' starts every rank of the rank table"));
    /* Local ranks (shm) read their files on this host: a missing or unreadable file is an error
     * now, naming it, not after connecting to the worker (which may be down or far away). */
    for (int i = 0; o.backend != SS_COMM_MPI && i < o.n_models + o.n_configs; i++) {
        const char *path = i < o.n_models ? models[i] : configs[i - o.n_models];
        const char *what = i < o.n_models ? "model file" : "group config file";
        struct stat sb;
        int fd = open(path, O_RDONLY);
        int err = fd < 0 ? errno : fstat(fd, &sb) ? errno : S_ISREG(sb.st_mode) ? 0 : EISDIR;
        if (fd >= 0) close(fd);
        if (err)
            return cli_fail("agents",
                            ss_errf(SS_ERR_IO, "Cannot access %s '%s': %s", what, path,
                                    err == EISDIR ? "not a regular file" : strerror(err)));
    }
    char *secret = NULL, secret_path[PATH_MAX];
    if (!insecure && agents_secret(&o, secret_file, secret_path, sizeof secret_path, &secret))
        return 1;
    if (insecure && secret_file)
        return cli_fail("agents", ss_errf(SS_ERR_INVALID,
                                          "--secret-file and --insecure-link exclude each other"));
    o.secret = secret;
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    self[n > 0 ? n : 0] = 0;
    o.self_exe = self;
    ss_log_set_tag("agents");
    ss_raise_nofile_limit(); /* inherited by every agent: model files, segments, links */
    ss_status *st = ss_launcher_run(&o);
    free(secret);
    return st ? cli_fail("agents", st) : 0;
}

/* A started agent's secret: the file its launcher named (SHARDSERVE_LINK_SECRET_FILE), or none.
 * A file a local serve writes is gone while that serve restarts: wait for it as the launcher does
 * (60 s), then exit 75 (the worker is away: the launcher tries again), not 1. */
static int child_secret(size_t *len, char **secret)
{
    const char *path = getenv("SHARDSERVE_LINK_SECRET_FILE");
    *secret = NULL;
    *len = 0;
    if (!path || !*path) return 0;
    for (int waited = 0; access(path, F_OK) != 0 && waited < 60000; waited += 100) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (access(path, F_OK) != 0)
        return agent_exit_code(
            "agent",
            ss_errf(SS_ERR_UNAVAILABLE, "no link secret at %s after 60 s: its serve is away", path),
            false, false);
    return cli_read_secret(path, secret, len);
}

/* shardserve agent-rank WORKER CONFIG MODEL SESSION COMM TIMEOUT_MS WITH_BATCH [NO_BATCH_INPUT...]
 */
int cmd_agent_rank(int argc, char **argv)
{
    if (argc < 8) return 2;
    ss_agent_options o = {.worker_address = argv[1],
                          .config_path = argv[2],
                          .model_path = argv[3],
                          .session = argv[4],
                          .comm_timeout_ms = atoi(argv[6]),
                          .with_batch_dim = !strcmp(argv[7], "1"),
                          .n_no_batch = argc - 8,
                          .no_batch_inputs = (const char *const *)argv + 8};
    if (!ss_comm_backend_parse(argv[5], &o.backend)) return 2;
    const char *threads = getenv("SHARDSERVE_RANK_THREADS"); /* the launcher's share of cores */
    long t = threads ? strtol(threads, NULL, 10) : 0;
    o.threads = t >= 1 && t <= 256 ? (int)t : 0;
    const char *connect = getenv("SHARDSERVE_CONNECT_TIMEOUT_MS"); /* agents --connect-timeout-ms */
    long cm = connect ? strtol(connect, NULL, 10) : 0;
    o.connect_timeout_ms = cm >= 1 && cm <= 3600000 ? (int)cm : 0;
    char *secret = NULL;
    int rc = child_secret(&o.secret_len, &secret);
    if (rc) return rc;
    o.secret = secret;
    char tag[64];
    snprintf(tag, sizeof tag, "agent %s", argv[2]);
    ss_log_set_tag("agent");
    bool refused = false, cut = false;
    o.shard_refused = &refused;
    o.left_at_deadline = &cut;
    ss_status *st = ss_agent_run(&o);
    free(secret);
    return agent_exit_code("agent", st, refused, cut);
}

/* shardserve agent-rank-mpi WORKER COMM_TIMEOUT_MS CONNECT_TIMEOUT_MS WITH_BATCH N_NO_BATCH
 *                           [NO_BATCH_INPUT...] N_RANKS MODEL0 CONFIG0 MODEL1 CONFIG1 ...
 * Started by mpirun (`agents --comm mpi`); the rank is OMPI_COMM_WORLD_RANK, read before MPI_Init.
 */
int cmd_agent_rank_mpi(int argc, char **argv)
{
    long nnb, nranks, comm_ms, connect_ms;
    if (argc < 7 || !cli_parse_int(argv[2], 1, 3600000, &comm_ms) ||
        !cli_parse_int(argv[3], 1, 3600000, &connect_ms) || !cli_parse_int(argv[5], 0, 64, &nnb) ||
        argc < 7 + nnb || !cli_parse_int(argv[6 + nnb], 1, 4096, &nranks) ||
        argc != 7 + nnb + 2 * nranks) {
        fputs("shardserve agent-rank-mpi: internal command, started by 'shardserve agents --comm "
              "mpi'\n",
              stderr);
        return 2;
    }
    const char *env = getenv("OMPI_COMM_WORLD_RANK");
    long rank;
    if (!env || !cli_parse_int(env, 0, nranks - 1, &rank))
        return cli_fail(
            "agent-rank-mpi",
            ss_errf(SS_ERR_INVALID,
                    "OMPI_COMM_WORLD_RANK is %s%s%s, want 0..%ld: this "
                    "process must be started by mpirun ('shardserve agents --comm mpi')",
                    env ? "'" : "", env ? env : "unset", env ? "'" : "", nranks - 1));
    char **files = argv + 7 + nnb + 2 * rank;
    ss_agent_options o = {.worker_address = argv[1],
                          .config_path = files[1],
                          .model_path = files[0],
                          .backend = SS_COMM_MPI,
                          .comm_timeout_ms = (int)comm_ms,
                          .connect_timeout_ms = (int)connect_ms,
                          .with_batch_dim = !strcmp(argv[4], "1"),
                          .n_no_batch = (int)nnb,
                          .no_batch_inputs = (const char *const *)argv + 6};
    char *secret = NULL;
    int rc = child_secret(&o.secret_len, &secret);
    if (rc) return rc;
    o.secret = secret;
    char tag[32];
    snprintf(tag, sizeof tag, "agent rank %ld", rank);
    ss_log_set_tag(tag);
    bool refused = false, cut = false;
    o.shard_refused = &refused;
    o.left_at_deadline = &cut;
    ss_status *st = ss_agent_run(&o);
    free(secret);
    if (st) st = ss_status_wrap(st, "rank %ld (%s)", rank, files[0]);
    /* mpirun's exit status is what the launcher reads as an agent's: a failing rank skips
     * MPI_Finalize (it would wait for the ranks still serving), and a rank whose status decides
     * what the launcher does (left at a time limit: restart at once; shard refused: stop) aborts
     * the job with it, so that another rank's status (one the worker released meanwhile, 75)
     * cannot take its place */
    int code = agent_exit_code("agent-rank-mpi", st, refused, cut);
    if (code) ss_comm_mpi_exit(code, code == SS_AGENT_EXIT_REQUEST || code == SS_AGENT_EXIT_SHARD);
    return 0;
}
