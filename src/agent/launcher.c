/*
 * `shardserve agents`, MindSpore's startup_agents: ask the worker for the rank table and the
 * servable's meta (retrying while the worker starts), work out which ranks are local (the first
 * rank-table IP this host can bind at agent_start_port, or agent_ip/rank_start), check the model
 * files, start one agent process per local rank and supervise them. If one agent dies the others
 * are stopped too (a tensor-parallel group is only useful whole) and the launcher exits with an
 * error naming the rank (or, by --restart policy, starts the group again); SIGINT/SIGTERM stop
 * every agent and exit cleanly. An agent that hangs (stopped, deadlocked) does not die, and when
 * it is alone in its group no other rank exits either: so each agent stamps a shared liveness
 * slot whenever it reads a frame from the worker (liveness.h), and a registered rank whose stamp
 * is older than the heartbeat timeout is SIGKILLed (a stopped process ignores anything else) and
 * its group handled as if it had died. Under mpirun the ranks on this host (mpirun's children)
 * stamp the same page; a hung one is SIGKILLed, which ends the job, and the restart policy
 * applies. A hung rank on another host is left to the worker.
 *
 * With the mpi backend one launcher starts EVERY rank of the rank table, on every host, through
 * one mpirun (separately started MPI jobs cannot reliably join one communicator): a hostfile names
 * each rank-table IP with as many slots as it has ranks, mapped by slot so world rank r runs on the
 * IP of rank r (Open MPI's sequential mapper when a host's ranks are not contiguous). The model
 * files then list one file per rank of the whole table, at paths valid on every host. Each rank
 * process (`agent-rank-mpi`) takes its rank from mpirun and registers with the worker itself. The
 * launcher waits for mpirun and forwards SIGINT/SIGTERM to it (then exits cleanly); when mpirun
 * fails (Open MPI ends the whole job when one rank fails) the --restart policy applies as to local
 * agents, reading mpirun's exit status (the lowest failing rank's) as an agent's. If the launcher
 * dies, mpirun gets SIGTERM.
 */
#include "shardserve/agent.h"

#include "liveness.h"
#include "shardserve/link.h"
#include "spawn.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int n;
    int rank[4096];
    char ip[4096][64];
    bool with_batch_dim;
    int n_no_batch;
    char no_batch[64][128];
    int heartbeat_timeout_ms; /* the worker's (0 = it did not say) */
} meta_info;

static ss_status *get_meta(const ss_launcher_options *opt, meta_info *mi)
{
    ss_link_options lo;
    ss_link_options_default(&lo);
    lo.secret = opt->secret;
    lo.secret_len = opt->secret_len;
    ss_link_conn *c;
    int wait_ms = opt->connect_timeout_ms ? opt->connect_timeout_ms : 60000;
    ss_status *st = ss_link_connect_retry(opt->worker_address, &lo, wait_ms, 500, &c);
    char *fresh = NULL;
    size_t fresh_len = 0;
    if (st && opt->secret_file) {
        /* a serve (re)started since the secret was read may have written another one (the stale
         * file of a killed serve, say): with the file's secret of now, try once more */
        ss_status *rs = ss_link_secret_read(opt->secret_file, &fresh, &fresh_len);
        if (!rs && (fresh_len != opt->secret_len || memcmp(fresh, opt->secret, fresh_len))) {
            SS_INFO("the link secret in %s changed since it was read: trying again with it",
                    opt->secret_file);
            lo.secret = fresh;
            lo.secret_len = fresh_len;
            ss_status_free(st);
            st = ss_link_connect_retry(opt->worker_address, &lo, wait_ms, 500, &c);
        }
        ss_status_free(rs);
    }
    free(fresh);
    if (st)
        return ss_status_wrap(
            st, "Failed to get Agents configs from Worker, worker is not available at %s",
            opt->worker_address);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    ss_link_msg req = {.type = SS_LINK_GET_META, .address = host}, rep = {0};
    st = ss_link_send(c, &req, NULL, 0);
    if (!st) st = ss_link_recv(c, 10000, &rep);
    if (!st && (rep.type != SS_LINK_META || !rep.json))
        st = ss_errf(SS_ERR_INVALID, "the worker sent no meta");
    cJSON *root = st ? NULL : cJSON_Parse(rep.json);
    ss_link_msg_free(&rep);
    ss_link_close(c);
    if (st) return st;
    const cJSON *ranks = cJSON_GetObjectItemCaseSensitive(root, "ranks"), *r, *v;
    mi->n = 0;
    cJSON_ArrayForEach(r, ranks)
    {
        const cJSON *ip = cJSON_GetObjectItemCaseSensitive(r, "ip");
        if (mi->n == 4096 || !cJSON_IsString(ip)) break;
        snprintf(mi->ip[mi->n], sizeof mi->ip[0], "%s", ip->valuestring);
        mi->rank[mi->n] = mi->n;
        mi->n++;
    }
    mi->with_batch_dim = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "with_batch_dim"));
    mi->n_no_batch = 0;
    cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(
                              root, "without_batch_dim_inputs")) if (cJSON_IsString(v) &&
                                                                     mi->n_no_batch < 64)
        snprintf(mi->no_batch[mi->n_no_batch++], 128, "%s", v->valuestring);
    const cJSON *hb = cJSON_GetObjectItemCaseSensitive(root, "heartbeat_timeout_ms");
    mi->heartbeat_timeout_ms =
        cJSON_IsNumber(hb) && hb->valuedouble >= 1 && hb->valuedouble <= 3600000
            ? (int)hb->valuedouble
            : 0;
    cJSON_Delete(root);
    return mi->n ? NULL : ss_errf(SS_ERR_INVALID, "the worker's rank table is empty");
}

static bool can_bind(const char *ip, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) return false;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* MindSpore's rule for the local ranks. */
static ss_status *local_ranks(const ss_launcher_options *opt, const meta_info *mi, int *ranks,
                              int *n)
{
    const char *ip = NULL;
    *n = 0;
    if (opt->agent_ip) {
        if (opt->rank_start < 0 || opt->rank_start >= mi->n)
            return ss_errf(SS_ERR_INVALID, "--rank-start %d must be below the rank size %d",
                           opt->rank_start, mi->n);
        bool bindable = false;
        for (int p = 0; p < 8 && !bindable; p++)
            bindable = can_bind(opt->agent_ip, opt->agent_start_port + p);
        if (!bindable)
            return ss_errf(SS_ERR_INVALID, "--agent-ip %s cannot be bound on ports %d..%d",
                           opt->agent_ip, opt->agent_start_port, opt->agent_start_port + 7);
        ip = mi->ip[opt->rank_start];
    } else {
        for (int i = 0; i < mi->n && !ip; i++) {
            bool seen = false;
            for (int j = 0; j < i; j++)
                seen |= !strcmp(mi->ip[i], mi->ip[j]);
            if (!seen && can_bind(mi->ip[i], opt->agent_start_port)) ip = mi->ip[i];
        }
        if (!ip)
            return ss_errf(
                SS_ERR_INVALID,
                "Get local machine ip failed: no rank-table server_id can be bound on this "
                "host at port %d (use --agent-ip and --rank-start)",
                opt->agent_start_port);
    }
    for (int i = 0; i < mi->n; i++)
        if (!strcmp(mi->ip[i], ip)) ranks[(*n)++] = i;
    return NULL;
}

static void config_for(const ss_launcher_options *opt, int i, char *out, size_t cap)
{
    if (opt->n_configs) {
        snprintf(out, cap, "%s", opt->group_configs[i]);
        return;
    }
    const char *slash = strrchr(opt->model_files[i], '/');
    if (slash)
        snprintf(out, cap, "%.*s/group_config.json", (int)(slash - opt->model_files[i]),
                 opt->model_files[i]);
    else
        snprintf(out, cap, "group_config.json");
}

/* Each local rank computes on its share of the CPUs the launcher may use (ss_usable_cpus: its
 * affinity, a cgroup quota; a 1-rank servable on 2 CPUs: 2 threads; 8 ranks on 2 CPUs: 1 each), or
 * on SHARDSERVE_RANK_THREADS when the user set it (1..256). */
static long rank_threads(int local_ranks, long cores)
{
    const char *user = getenv("SHARDSERVE_RANK_THREADS");
    if (user) {
        long t = strtol(user, NULL, 10);
        return t >= 1 && t <= 256 ? t : 1;
    }
    long share = local_ranks > 0 && cores > local_ranks ? cores / local_ranks : 1;
    return share > 256 ? 256 : share;
}

/* Sets up an agent's child before exec: its thread count (rank_threads, worked out by the parent
 * before the fork because it reads files), its OpenMP wait policy and, when batch is set, the
 * SCHED_BATCH policy (ss_agents_sched_batch says why). */
static void share_cores(long threads, int local_ranks, int connect_ms, bool batch)
{
    if (batch) ss_child_sched_batch();
    char v[16];
    snprintf(v, sizeof v, "%ld", threads);
    setenv("SHARDSERVE_RANK_THREADS", v, 0);
    if (connect_ms > 0) { /* --connect-timeout-ms reaches the agents (agent-rank reads it) */
        char ms[16];
        snprintf(ms, sizeof ms, "%d", connect_ms);
        setenv("SHARDSERVE_CONNECT_TIMEOUT_MS", ms, 1);
    }
    ss_child_omp_wait(local_ranks, (int)threads);
}

static pid_t spawn_agent(const ss_launcher_options *opt, const meta_info *mi, int i,
                         const char *session, const ss_liveness *live, long threads, bool batch)
{
    char config[PATH_MAX], timeout[32];
    config_for(opt, i, config, sizeof config);
    snprintf(timeout, sizeof timeout, "%d", opt->comm_timeout_ms);
    const char *argv[160];
    int a = 0;
    argv[a++] = opt->self_exe;
    argv[a++] = "agent-rank";
    argv[a++] = opt->worker_address;
    argv[a++] = config;
    argv[a++] = opt->model_files[i];
    argv[a++] = session;
    argv[a++] = ss_comm_backend_name(opt->backend);
    argv[a++] = timeout;
    argv[a++] = mi->with_batch_dim ? "1" : "0";
    for (int k = 0; k < mi->n_no_batch && a < 150; k++)
        argv[a++] = mi->no_batch[k];
    argv[a] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        /* the agent must not outlive its launcher */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(1);
        ss_child_prepare(opt->secret_file);
        share_cores(threads, opt->n_models, opt->connect_timeout_ms, batch);
        ss_liveness_pass(live, i);
        execv(opt->self_exe, (char *const *)argv);
        fprintf(stderr, "cannot start an agent (%s): %s\n", opt->self_exe, strerror(errno));
        _exit(127);
    }
    return pid;
}

/* How a group's generation ended, for the restart decision. */
typedef enum {
    GROUP_FAILED = 0, /* restart with backoff, counted */
    GROUP_REFUSED,    /* a shard does not load as given (SS_AGENT_EXIT_SHARD): do not restart */
    GROUP_CUT,        /* a request's run was stopped (SS_AGENT_EXIT_REQUEST): restart at once */
    GROUP_NO_COMMAND, /* the program (an agent, mpirun) cannot be run (126/127): do not restart */
} group_end;

/* What an exit status says about the group: an agent's, or mpirun's, which passes on the lowest
 * failing rank's (see run_mpi_group). */
static group_end group_end_of(int status)
{
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return code == SS_AGENT_EXIT_SHARD     ? GROUP_REFUSED
           : code == SS_AGENT_EXIT_REQUEST ? GROUP_CUT
           : code == 126 || code == 127    ? GROUP_NO_COMMAND /* spawn_*'s exec failed */
                                           : GROUP_FAILED;
}

static void stop_all(pid_t *pids, int n, int grace_ms)
{
    for (int i = 0; i < n; i++)
        if (pids[i] > 0) kill(pids[i], SIGTERM);
    for (int waited = 0; waited < grace_ms; waited += 50) {
        bool any = false;
        for (int i = 0; i < n; i++) {
            if (pids[i] <= 0) continue;
            if (waitpid(pids[i], NULL, WNOHANG) == pids[i])
                pids[i] = 0;
            else
                any = true;
        }
        if (!any) return;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < n; i++)
        if (pids[i] > 0) kill(pids[i], SIGKILL), waitpid(pids[i], NULL, 0), pids[i] = 0;
}

/* --heartbeat-timeout-ms, else the worker's own bound (from its meta) plus half of it (at least
 * 1 s): the worker, which sees every rank, notices a silent rank first and releases its group;
 * this catches what it cannot release (a single-rank group whose only agent is stopped). */
static int hang_timeout_ms(const ss_launcher_options *opt, const meta_info *mi)
{
    if (opt->heartbeat_timeout_ms > 0) return opt->heartbeat_timeout_ms;
    if (mi->heartbeat_timeout_ms <= 0) return 5000;
    int extra = mi->heartbeat_timeout_ms / 2 > 1000 ? mi->heartbeat_timeout_ms / 2 : 1000;
    return mi->heartbeat_timeout_ms + extra;
}

/* A process's scheduler state from /proc/PID/stat ('?' when it cannot be read), and its parent's
 * pid in *ppid (0 then). */
static char proc_stat(pid_t pid, pid_t *ppid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t len = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[len] = 0;
    const char *paren = strrchr(buf, ')'); /* the command name before it may hold anything */
    char state = '?';
    int parent = 0;
    if (!paren || sscanf(paren + 1, " %c %d", &state, &parent) != 2) state = '?', parent = 0;
    if (ppid) *ppid = parent;
    return state;
}

static char proc_state(pid_t pid)
{
    return proc_stat(pid, NULL);
}

/* Whether pid is a descendant of ancestor (mpirun's rank, or a daemon's on a netns "host"). */
static bool descends_from(pid_t pid, pid_t ancestor)
{
    for (int depth = 0; pid > 1 && depth < 64; depth++) {
        pid_t parent;
        proc_stat(pid, &parent);
        if (parent == ancestor) return true;
        pid = parent;
    }
    return false;
}

static bool state_stopped(char state)
{
    return state == 'T' || state == 't'; /* SIGSTOP, or a debugger's trace stop */
}

/* Why a rank does not read its link, for the log: stopped is not slow. */
static const char *hang_reason(pid_t pid)
{
    char state = proc_state(pid);
    if (state_stopped(state)) return "the process is stopped";
    if (state == 'D') return "the process is blocked in the kernel";
    return "the process runs but does not read its link";
}

/* The first registered rank that has read nothing from the worker for the heartbeat timeout is
 * SIGKILLed (it may be stopped) and named in the error; NULL while all show life. Local agents:
 * pids[i] is rank i's. Under mpirun (pids NULL) each rank wrote its pid into its slot, and only
 * a descendant of mpirun (pid mpirun) is killed: the job then ends as on any rank's death. */
static ss_status *kill_hung(const ss_launcher_options *opt, const meta_info *mi,
                            const ss_liveness *live, const int *ranks, const pid_t *pids, int n,
                            pid_t mpirun)
{
    uint64_t now = ss_now_ns();
    int timeout = hang_timeout_ms(opt, mi);
    for (int i = 0; i < n; i++) {
        int64_t silent = ss_liveness_silent_ms(live, i, now);
        pid_t pid = pids ? pids[i] : ss_liveness_pid(live, i);
        if (pid <= 0 || silent < timeout || (!pids && !descends_from(pid, mpirun))) continue;
        char state = proc_state(pid);
        if (state == 'Z' || state == 'X') continue; /* it exited: its status tells, not a hang */
        const char *why = hang_reason(pid);
        kill(pid, SIGKILL);
        return ss_errf(SS_ERR_UNAVAILABLE,
                       "agent of rank %d (pid %d) has read nothing from the worker for %lld ms "
                       "(hang timeout %d ms; %s): killed it, %s",
                       ranks[i], (int)pid, (long long)silent, timeout, why,
                       pids ? "stopping the other agents" : "which ends mpirun's job");
    }
    return NULL;
}

/* When every rank of the group has registered (its first liveness stamp), or 0. */
#define SETTLE_MS 300 /* see run_group: how long a "lost the worker" waits for its cause */

/* How often to look at the liveness stamps: a few times per timeout. */
static struct timespec liveness_tick(const ss_launcher_options *opt, const meta_info *mi)
{
    int tick_ms = hang_timeout_ms(opt, mi) / 4 < 250 ? hang_timeout_ms(opt, mi) / 4 : 250;
    return (struct timespec){0, (long)(tick_ms > 20 ? tick_ms : 20) * 1000000L};
}

static uint64_t group_up_ns(const ss_liveness *live, int n, uint64_t now)
{
    for (int i = 0; i < n; i++)
        if (!live || ss_liveness_silent_ms(live, i, now) < 0) return 0;
    return now;
}

/* Start one generation of the local agents and supervise it until they all exit, one fails or
 * hangs (the rest are stopped), or a signal asks to stop. NULL = every agent ended in order.
 * *up_ns: when every rank had registered (0: never). *why: what the failure named says about the
 * group (a shard that does not load, a request's run stopped mid-group, anything else). */
static ss_status *run_group(const ss_launcher_options *opt, const meta_info *mi, const int *ranks,
                            int n, pid_t *pids, ss_liveness *live, sigset_t *set, int generation,
                            bool *signalled, uint64_t *up_ns, group_end *why)
{
    *up_ns = 0;
    *why = GROUP_FAILED;
    char session[64];
    snprintf(session, sizeof session, "agents-%d-%d", (int)getpid(), generation);
    ss_status *st = NULL;
    ss_liveness_reset(live);
    fflush(NULL);
    /* worked out once, before the forks: it reads the cgroup's files */
    int cpus = ss_usable_cpus();
    long threads = rank_threads(opt->n_models, cpus);
    bool bad_sched = false, batch = ss_agents_sched_batch(n, cpus, &bad_sched);
    if (bad_sched)
        SS_WARN("SHARDSERVE_AGENT_SCHED='%s' is none of auto, batch, normal: auto",
                getenv("SHARDSERVE_AGENT_SCHED"));
    for (int i = 0; i < n; i++) {
        pids[i] = spawn_agent(opt, mi, i, session, live, threads, batch);
        if (pids[i] < 0) {
            pids[i] = 0;
            st = ss_errf(SS_ERR_IO, "fork for rank %d: %s", ranks[i], strerror(errno));
            break;
        }
    }
    if (!st)
        SS_INFO("started %d agents (ranks %d..%d) for %s, %ld thread(s) each on %d usable "
                "CPU(s)%s",
                n, ranks[0], ranks[n - 1], opt->worker_address, threads, cpus,
                batch ? ", scheduled SCHED_BATCH" : "");
    int running = st ? 0 : n;
    struct timespec tick = liveness_tick(opt, mi);
    /* of the agents that end together, name the cause, not a consequence: a rank killed by a
     * signal before one that failed, before ones that lost the worker (status 75, as the others
     * do when one goes). waitpid's order is not the order they ended in, and a killed rank with
     * much memory becomes reapable after the others noticed: after a "lost the worker", the
     * cause gets SETTLE_MS to show up. */
    int worst = 0;
    uint64_t settle_until = 0;
    struct timespec settle_tick = {0, 20 * 1000000L};
    while (running > 0 && (!st || (worst == 1 && ss_now_ns() < settle_until))) {
        int sig = sigtimedwait(set, NULL, st ? &settle_tick : &tick);
        if (!*up_ns) *up_ns = group_up_ns(live, n, ss_now_ns());
        if (sig < 0) {
            if (errno == EAGAIN && !st) st = kill_hung(opt, mi, live, ranks, pids, n, 0);
            if (st && !worst) worst = 3; /* a hung rank, named and killed */
            continue;
        }
        if (sig == SIGINT || sig == SIGTERM) {
            SS_INFO("signal %d: stopping the agents", sig);
            *signalled = true;
            break;
        }
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            for (int i = 0; i < n; i++) {
                if (pids[i] != pid) continue;
                pids[i] = 0;
                running--;
                bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
                bool lost = WIFEXITED(status) && WEXITSTATUS(status) == 75;
                group_end end = group_end_of(status);
                int rank_of_cause = ok ? 0 : lost ? 1 : WIFSIGNALED(status) ? 3 : 2;
                if (rank_of_cause <= worst) continue;
                if (!worst) settle_until = ss_now_ns() + SETTLE_MS * 1000000ull;
                worst = rank_of_cause;
                ss_status_free(st);
                *why = end;
                if (lost) {
                    st = ss_errf(SS_ERR_UNAVAILABLE, "agent of rank %d (pid %d) lost the worker",
                                 ranks[i], (int)pid);
                } else if (end == GROUP_CUT) {
                    st = ss_errf(SS_ERR_LIMIT,
                                 "agent of rank %d (pid %d) stopped a request's run at its time "
                                 "limit and left the group (the other ranks may be at another "
                                 "point of it)",
                                 ranks[i], (int)pid);
                } else if (end == GROUP_REFUSED) {
                    st = ss_errf(SS_ERR_INVALID,
                                 "agent of rank %d (pid %d) could not load its shard %s (its "
                                 "message is above); stopping the other agents",
                                 ranks[i], (int)pid, opt->model_files[i]);
                } else {
                    char how[96];
                    st =
                        ss_errf(SS_ERR_UNAVAILABLE,
                                "agent of rank %d (pid %d) %s; stopping the other agents", ranks[i],
                                (int)pid, ss_spawn_describe_exit(status, how, sizeof how));
                }
            }
        }
        /* ranks that fail while another is stopped (SIGSTOP, a debugger) failed waiting for it
         * (not after a cut, which explains the rest: its ranks may look stopped while
         * LeakSanitizer ptraces them at exit) */
        for (int i = 0; st && worst < 3 && *why != GROUP_CUT && i < n; i++)
            if (pids[i] > 0 && state_stopped(proc_state(pids[i]))) {
                char was[256];
                snprintf(was, sizeof was, "%s", st->msg);
                ss_status_free(st);
                st = ss_errf(SS_ERR_UNAVAILABLE,
                             "agent of rank %d (pid %d) is stopped, and the others failed waiting "
                             "for it (%s); stopping the group",
                             ranks[i], (int)pids[i], was);
                worst = 3;
                *why = GROUP_FAILED;
            }
    }
    stop_all(pids, n, 3000);
    ss_comm_shm_cleanup(session);
    return st;
}

/* ------------------------------------------------------------------ mpi: every rank via mpirun */

/* The hostfile: one line per host with its rank count when every host's ranks are contiguous
 * (mapped by slot), else one line per rank (Open MPI's sequential mapper). */
static ss_status *write_hostfile(const meta_info *mi, char *path, size_t cap, bool *sequential)
{
    *sequential = false;
    for (int i = 1; i < mi->n && !*sequential; i++)
        if (strcmp(mi->ip[i], mi->ip[i - 1]))
            for (int j = 0; j < i - 1; j++)
                if (!strcmp(mi->ip[j], mi->ip[i])) *sequential = true;
    const char *tmp = getenv("TMPDIR");
    snprintf(path, cap, "%s/shardserve-hosts-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0)
        return ss_errf(SS_ERR_IO, "cannot create the mpirun hostfile %s: %s", path,
                       strerror(errno));
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(path);
        return ss_errf(SS_ERR_IO, "hostfile %s: %s", path, strerror(errno));
    }
    for (int i = 0; i < mi->n;) {
        int k = 1;
        if (!*sequential)
            while (i + k < mi->n && !strcmp(mi->ip[i + k], mi->ip[i]))
                k++;
        if (*sequential)
            fprintf(f, "%s\n", mi->ip[i]);
        else
            fprintf(f, "%s slots=%d\n", mi->ip[i], k);
        i += k;
    }
    if (fclose(f) != 0) {
        unlink(path);
        return ss_errf(SS_ERR_IO, "hostfile %s: %s", path, strerror(errno));
    }
    return NULL;
}

static pid_t spawn_mpirun(const ss_launcher_options *opt, const char *const *argv,
                          const ss_liveness *live)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* mpirun tears the job down when the launcher dies */
        if (getppid() != parent) _exit(1);
        setpgid(0, 0); /* signals reach mpirun only through the launcher (never twice) */
        int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (devnull >= 0) dup2(devnull, 0); /* no rank reads the launcher's stdin */
        ss_child_prepare(opt->secret_file); /* its path reaches the ranks by mpirun -x */
        ss_liveness_export(live);           /* so does the liveness page's name */
        ss_child_omp_wait(0, 1);
        setenv("OMP_WAIT_POLICY", "PASSIVE", 0); /* -x needs it set (a user's spin count wins) */
        execvp("mpirun", (char *const *)argv);
        fprintf(stderr, "cannot run mpirun: %s (install openmpi-bin)\n", strerror(errno));
        _exit(127);
    }
    return pid;
}

/* One mpirun command line, made once and run once per generation of the group. */
typedef struct {
    char hostfile[PATH_MAX];
    char np[16], comm_ms[32], connect_ms[32], nnb[16];
    const char **argv;
    char **paths; /* model and config file of each rank, absolute */
    char *extra;  /* SHARDSERVE_MPIRUN_ARGS, split in place */
    int n;
} mpi_job;

static void mpi_job_free(mpi_job *job)
{
    if (job->hostfile[0]) unlink(job->hostfile);
    for (int i = 0; job->paths && i < 2 * job->n; i++)
        free(job->paths[i]);
    free(job->argv), free(job->paths), free(job->extra);
    memset(job, 0, sizeof *job);
}

static ss_status *mpi_job_prepare(const ss_launcher_options *opt, const meta_info *mi, bool live,
                                  mpi_job *job)
{
    memset(job, 0, sizeof *job);
    if (opt->agent_ip)
        return ss_errf(
            SS_ERR_INVALID,
            "--agent-ip/--rank-start do not apply to --comm mpi: one 'shardserve agents' "
            "starts every rank of the rank table through mpirun");
    if (!ss_comm_backend_available(SS_COMM_MPI))
        return ss_errf(SS_ERR_UNSUPPORTED,
                       "this build has no mpi backend (Open MPI was not found)");
    bool sequential;
    ss_status *st = write_hostfile(mi, job->hostfile, sizeof job->hostfile, &sequential);
    if (st) {
        job->hostfile[0] = 0;
        return st;
    }
    job->n = mi->n;
    snprintf(job->np, sizeof job->np, "%d", mi->n);
    snprintf(job->comm_ms, sizeof job->comm_ms, "%d", opt->comm_timeout_ms);
    snprintf(job->connect_ms, sizeof job->connect_ms, "%d",
             opt->connect_timeout_ms ? opt->connect_timeout_ms : 60000);
    snprintf(job->nnb, sizeof job->nnb, "%d", mi->n_no_batch);
    size_t cap = 64 + 2 * (size_t)mi->n + (size_t)mi->n_no_batch + 256;
    job->argv = calloc(cap, sizeof *job->argv);
    /* absolute paths: the ranks start in whatever folder mpirun picks on their host */
    job->paths = calloc(2 * (size_t)mi->n, sizeof *job->paths);
    for (int i = 0; job->paths && i < mi->n; i++) {
        char cfg[PATH_MAX];
        config_for(opt, i, cfg, sizeof cfg);
        job->paths[2 * i] = realpath(opt->model_files[i], NULL);
        job->paths[2 * i + 1] = realpath(cfg, NULL);
        if (!job->paths[2 * i]) job->paths[2 * i] = strdup(opt->model_files[i]);
        if (!job->paths[2 * i + 1]) job->paths[2 * i + 1] = strdup(cfg);
    }
    bool nomem = !job->argv || !job->paths;
    for (int i = 0; !nomem && i < 2 * mi->n; i++)
        nomem = !job->paths[i];
    if (nomem) {
        mpi_job_free(job);
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    const char **argv = job->argv;
    size_t a = (size_t)ss_mpirun_args(argv, 200, &job->extra);
    argv[a++] = "--hostfile";
    argv[a++] = job->hostfile;
    if (sequential) {
        argv[a++] = "--mca";
        argv[a++] = "rmaps";
        argv[a++] = "seq";
    } else {
        argv[a++] = "--map-by";
        argv[a++] = "slot";
    }
    argv[a++] = "-np";
    argv[a++] = job->np;
    if (opt->secret_file) {
        argv[a++] = "-x";
        argv[a++] = "SHARDSERVE_LINK_SECRET_FILE";
    }
    if (getenv("SHARDSERVE_LOG")) {
        argv[a++] = "-x";
        argv[a++] = "SHARDSERVE_LOG";
    }
    argv[a++] = "-x"; /* set by spawn_mpirun: ranks on other hosts need it too */
    argv[a++] = "OMP_WAIT_POLICY";
    if (live) { /* set by spawn_mpirun too (ss_liveness_export) */
        argv[a++] = "-x";
        argv[a++] = "SHARDSERVE_AGENT_LIVENESS_MPI";
    }
    argv[a++] = opt->self_exe;
    argv[a++] = "agent-rank-mpi";
    argv[a++] = opt->worker_address;
    argv[a++] = job->comm_ms;
    argv[a++] = job->connect_ms;
    argv[a++] = mi->with_batch_dim ? "1" : "0";
    argv[a++] = job->nnb;
    for (int k = 0; k < mi->n_no_batch; k++)
        argv[a++] = mi->no_batch[k];
    argv[a++] = job->np; /* the rank count, then a model and a config per rank */
    for (int i = 0; i < 2 * mi->n; i++)
        argv[a++] = job->paths[i];
    argv[a] = NULL;
    return NULL;
}

/* One generation of an mpi group: mpirun runs every rank until the job ends. SIGINT/SIGTERM (in
 * *set, blocked by the caller) are forwarded to mpirun (*signalled: then an orderly end). mpirun
 * exits with the status of the lowest world rank that failed (its man page, "Exit status"), ranks
 * it stops on the way out end in order (0), and a rank whose status decides the restart (76, 78)
 * ends the job with MPI_Abort, whose code mpirun exits with (ss_comm_mpi_exit): so that status is
 * an agent's (agent_exit_code), read as run_group reads its children's. The ranks on this host
 * stamp the liveness page (live, slot = world rank) as local agents do, and a hung one is killed
 * (kill_hung): mpirun then ends the job, and the hang is the cause named. *up_ns: when every rank
 * had registered, which only a job whose ranks all run on this host can show. */
static ss_status *run_mpi_group(const ss_launcher_options *opt, const meta_info *mi, mpi_job *job,
                                ss_liveness *live, const int *ranks, sigset_t *set, int generation,
                                bool *signalled, uint64_t *up_ns, group_end *why)
{
    *up_ns = 0;
    *why = GROUP_FAILED;
    if (access(job->hostfile, R_OK) != 0) { /* removed under a long-lived launcher: write anew */
        bool sequential;
        ss_status *st = write_hostfile(mi, job->hostfile, sizeof job->hostfile, &sequential);
        if (st) return st;
    }
    ss_liveness_reset(live);
    fflush(NULL);
    pid_t pid = spawn_mpirun(opt, job->argv, live);
    if (pid < 0) return ss_errf(SS_ERR_IO, "fork for mpirun: %s", strerror(errno));
    SS_INFO("started mpirun (pid %d, generation %d) for %d ranks on %s%s for %s", (int)pid,
            generation, mi->n, mi->ip[0],
            mi->n > 1 && strcmp(mi->ip[0], mi->ip[mi->n - 1]) ? " and other hosts" : "",
            opt->worker_address);
    int status = 0, waited_ms = 0;
    bool stopping = false;  /* a signal came or a rank hung: waiting for mpirun's end */
    ss_status *hung = NULL; /* the rank killed for a hang, named */
    struct timespec tick = liveness_tick(opt, mi), step = {0, 200 * 1000000L};
    for (;;) {
        int sig = sigtimedwait(set, NULL, stopping ? &step : &tick);
        if (!*up_ns) *up_ns = group_up_ns(live, mi->n, ss_now_ns());
        if ((sig == SIGINT || sig == SIGTERM) && !*signalled) { /* also while a hang ends */
            SS_INFO("signal %d: forwarding it to mpirun (pid %d)", sig, (int)pid);
            stopping = *signalled = true;
            kill(pid, sig);
        } else if (stopping) { /* wait (bounded) for mpirun to take its job down, then kill it */
            waited_ms += 200;
            if (waited_ms == 20000) {
                SS_WARN("mpirun (pid %d) did not stop within 20 s; killing it and its ranks here",
                        (int)pid);
                for (int i = 0; i < mi->n; i++) { /* or they outlive it */
                    pid_t rank = ss_liveness_pid(live, i);
                    if (rank > 0 && descends_from(rank, pid)) kill(rank, SIGKILL);
                }
                kill(pid, SIGKILL);
            }
        } else if (sig < 0 && errno == EAGAIN) {
            hung = kill_hung(opt, mi, live, ranks, NULL, mi->n, pid);
            stopping = hung != NULL;
        }
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) break;
        if (w < 0 && errno == ECHILD) {
            status = 0;
            break;
        }
    }
    if (*signalled || (!hung && WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        ss_status_free(hung);
        SS_INFO("mpirun (pid %d) exited%s", (int)pid, *signalled ? " after the signal" : "");
        return NULL;
    }
    char how[96];
    ss_spawn_describe_exit(status, how, sizeof how);
    if (hung) { /* the cause; what mpirun made of it follows */
        ss_status *st = ss_errf(hung->code, "%s; mpirun (pid %d) %s", hung->msg, (int)pid, how);
        ss_status_free(hung);
        return st;
    }
    *why = group_end_of(status);
    if (*why == GROUP_CUT) {
        *up_ns = ss_now_ns(); /* a rank ran a request: the group was up */
        return ss_errf(SS_ERR_LIMIT,
                       "a rank stopped a request's run at its time limit and left the group (the "
                       "other ranks may be at another point of it); mpirun (pid %d) %s",
                       (int)pid, how);
    }
    if (*why == GROUP_NO_COMMAND)
        return ss_errf(SS_ERR_UNAVAILABLE,
                       "mpirun (pid %d) %s: mpirun or the ranks' program could not be run (the "
                       "error is above)",
                       (int)pid, how);
    if (*why == GROUP_REFUSED)
        return ss_errf(SS_ERR_INVALID,
                       "a rank could not load its shard (its message is above); mpirun (pid %d) %s",
                       (int)pid, how);
    return ss_errf(SS_ERR_UNAVAILABLE,
                   "mpirun (pid %d) %s; its error (or the failing rank's) is logged above",
                   (int)pid, how);
}

ss_status *ss_launcher_run(const ss_launcher_options *opt)
{
    meta_info *mi = calloc(1, sizeof *mi);
    int *ranks = calloc(4096, sizeof(int));
    pid_t *pids = calloc(4096, sizeof(pid_t));
    if (!mi || !ranks || !pids) {
        free(mi), free(ranks), free(pids);
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    int n = 0;
    bool mpi = opt->backend == SS_COMM_MPI;
    ss_status *st = get_meta(opt, mi);
    if (!st && mpi) { /* every rank of the table, on every host */
        for (int i = 0; i < mi->n; i++)
            ranks[i] = i;
        n = mi->n;
    } else if (!st) {
        st = local_ranks(opt, mi, ranks, &n);
    }
    if (!st && n != opt->n_models) {
        char list[512] = "";
        size_t off = 0;
        for (int i = 0; i < n && off < sizeof list - 12; i++)
            off += (size_t)snprintf(list + off, sizeof list - off, "%s%d", i ? "," : "", ranks[i]);
        if (off >= sizeof list - 12) snprintf(list + off, sizeof list - off, ",...");
        st = ss_errf(
            SS_ERR_INVALID,
            "Card count [%s] described rank table does not equal to model files size %d%s", list,
            opt->n_models,
            mpi ? " (--comm mpi: one model file per rank of the whole rank table, in rank order)"
                : "");
    }
    if (!st && opt->n_configs && opt->n_configs != opt->n_models)
        st = ss_errf(SS_ERR_INVALID, "%d group config files for %d model files", opt->n_configs,
                     opt->n_models);
    for (int i = 0; !st && i < opt->n_models; i++) {
        char real[PATH_MAX], cfg[PATH_MAX];
        if (access(opt->model_files[i], R_OK) != 0)
            st = ss_errf(SS_ERR_INVALID, "Cannot access model file '%s': %s",
                         realpath(opt->model_files[i], real) ? real : opt->model_files[i],
                         strerror(errno));
        config_for(opt, i, cfg, sizeof cfg);
        if (!st && access(cfg, R_OK) != 0)
            st = ss_errf(SS_ERR_INVALID, "Cannot access group config file '%s': %s", cfg,
                         strerror(errno));
        /* model file i serves rank ranks[i] of the rank table; a config of another rank (group
         * configs listed out of order) would load one shard under another's rank: wrong answers */
        ss_rank_config rc;
        struct stat sb; /* a regular file: a pipe's bytes are the agent's to read */
        if (!st && stat(cfg, &sb) == 0 && S_ISREG(sb.st_mode) &&
            !(st = ss_rank_config_load(cfg, &rc))) {
            if (rc.rank != ranks[i])
                st = ss_errf(
                    SS_ERR_INVALID,
                    "group config '%s' is rank %d's, but it goes with model file %d ('%s'), "
                    "which the rank table makes rank %d: list the group configs in the "
                    "model files' order",
                    cfg, rc.rank, i, opt->model_files[i], ranks[i]);
            ss_rank_config_free(&rc);
        }
    }
    /* the hang check's page: local agents inherit it, an mpi job's ranks on this host open it */
    ss_liveness *live = st ? NULL : ss_liveness_create(n);
    if (!st && !live)
        SS_WARN("no liveness page (memfd: %s): a hung agent is left to the worker to notice",
                strerror(errno));
    mpi_job job = {0};
    if (!st && mpi) st = mpi_job_prepare(opt, mi, live != NULL, &job);
    if (st) {
        ss_liveness_free(live);
        free(mi), free(ranks), free(pids);
        return st;
    }
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, &old);
    /* the segments of launchers killed before they could remove theirs (mpirun's ranks make
     * none of ours) */
    if (!mpi) ss_comm_shm_remove_abandoned("agents-");
    int max_tries = opt->max_restarts > 0 ? opt->max_restarts : 5;
    int backoff = opt->backoff_ms > 0 ? opt->backoff_ms : 500;
    for (int generation = 0, tries = 0;; generation++) {
        uint64_t started = ss_now_ns(), up = 0;
        bool signalled = false;
        group_end why = GROUP_FAILED;
        st =
            mpi ? run_mpi_group(opt, mi, &job, live, ranks, &set, generation, &signalled, &up, &why)
                : run_group(opt, mi, ranks, n, pids, live, &set, generation, &signalled, &up, &why);
        if (!st || signalled || opt->restart == SS_RESTART_NEVER) break;
        /* the request's doing, not the group's (which came up and served): not a failure in a
         * row, and no backoff; unless a signal to stop came meanwhile */
        if (why == GROUP_CUT && up) {
            struct timespec now_only = {0, 0};
            siginfo_t si;
            int sig;
            while ((sig = sigtimedwait(&set, &si, &now_only)) == SIGCHLD) {
            }
            if (sig != SIGINT && sig != SIGTERM) SS_WARN("%s; restarting the group", st->msg);
            ss_status_free(st);
            st = NULL;
            if (sig == SIGINT || sig == SIGTERM) break; /* stopped meanwhile: an orderly end */
            continue;
        }
        if (why == GROUP_REFUSED || why == GROUP_NO_COMMAND) {
            /* a restart would meet the same files: fail now, not after 15 s of tries */
            ss_status *cause = st;
            st = ss_errf(cause->code, "%s; not restarting the group: it would %s", cause->msg,
                         why == GROUP_REFUSED ? "load the same files" : "fail the same way");
            ss_status_free(cause);
            break;
        }
        /* a group that came up and served a while recovered: a later failure is a new one, with
         * the first backoff again (without liveness stamps, a minute's run counts as that) */
        uint64_t now = ss_now_ns();
        uint64_t recovered_ns =
            (uint64_t)(opt->recovered_after_ms > 0 ? opt->recovered_after_ms : 10000) * 1000000ull;
        /* the minute's run stands in for the stamps: never shorter than --recovered-after-ms */
        uint64_t ran_ns =
            recovered_ns > 60ull * 1000000000ull ? recovered_ns : 60ull * 1000000000ull;
        if ((up && now - up > recovered_ns) || now - started > ran_ns) {
            tries = 0;
            backoff = opt->backoff_ms > 0 ? opt->backoff_ms : 500;
        }
        if (++tries > max_tries) {
            st = ss_status_wrap(st, "giving up after %d restarts in a row", max_tries);
            break;
        }
        SS_WARN("%s; restarting the group in %d ms (try %d of %d)", st->msg, backoff, tries,
                max_tries);
        ss_status_free(st);
        st = NULL;
        struct timespec ts = {backoff / 1000, (long)(backoff % 1000) * 1000000L};
        siginfo_t si;
        int sig;
        while ((sig = sigtimedwait(&set, &si, &ts)) == SIGCHLD) {
        }
        if (sig == SIGINT || sig == SIGTERM) break; /* stopped while waiting: an orderly end */
        backoff = backoff * 2 > 30000 ? 30000 : backoff * 2;
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    ss_liveness_free(live);
    mpi_job_free(&job);
    free(mi), free(ranks), free(pids);
    return st;
}
