/*
 * shardserve serve: MindSpore's start_servable + start_grpc_server + start_restful_server in one
 * process. Each --servable starts a group; the --version/--rank-table/--distributed-address/
 * --wait-agents that follow it apply to it, and a --model NAME after it opens the group of that
 * model of the servable (several models: servable.json "models"). A local model (declared with
 * files, given no rank table) runs as a 1-rank `shardserve agents` child that serve starts, and
 * stops at the end; that child restarts its rank when it dies.
 */
#include "cli.h"
#include "shardserve/link.h"
#include "shardserve/server.h"
#include "shardserve/worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_SERVABLES 16

static const char serve_usage[] =
    "usage: shardserve serve --servable-dir DIR\n"
    "                        --servable NAME [--version N] --rank-table FILE --distributed-address "
    "HOST:PORT\n"
    "                        [--wait-agents SECONDS] [--servable ... (more servables or "
    "versions)]\n"
    "                        [--grpc HOST:PORT|unix:PATH] [--rest HOST:PORT] [--grpc-max-msg-mb "
    "N]\n"
    "                        [--rest-max-msg-mb N] [--request-timeout-ms MS] "
    "[--heartbeat-timeout-ms MS]\n"
    "                        [--max-enqueued N] [--secret-file FILE | --insecure-link]\n"
    "                        [--rest-max-connections N] [--rest-max-per-client N] "
    "[--rest-read-timeout-s S]\n"
    "                        [--grpc-max-streams N] [--grpc-recv-timeout-s S] [--grpc-threads N]\n"
    "                        [--grpc-recv-slots N] [--grpc-recv-contended-ms MS]\n"
    "                        [--reply-spin-us US] [--grpc-max-buffered-mb N] "
    "[--grpc-max-decoded-mb N]\n"
    "                        [--rest-max-buffered-mb N] [--kserve-max-batch-rows-mb N]\n"
    "                        [--shutdown-grace-ms MS]\n"
    "                        [--grpc-tls-cert FILE --grpc-tls-key FILE [--grpc-tls-ca FILE "
    "--grpc-verify-client]]\n"
    "                        [--rest-tls-cert FILE --rest-tls-key FILE [--rest-tls-ca FILE "
    "--rest-verify-client]]\n"
    "  --servable-dir  a folder of servables: NAME/servable.json, or MindSpore's "
    "NAME/servable_config.py\n"
    "                  (read through the mindspore_serving shim, python/)\n"
    "  --wait-agents   how long to wait for every rank to register (0 = forever; default 0)\n"
    "  --model NAME    (after --servable) the --rank-table/--distributed-address that follow are "
    "those of\n"
    "                  the servable's model NAME (servable.json \"models\"); a model declared "
    "with\n"
    "                  \"files\" and given no rank table runs locally, started by serve\n"
    "  --secret-file   shared secret agents must prove to register (also given to 'shardserve "
    "agents').\n"
    "                  Without it serve makes a random one and writes it, readable only by this "
    "user, to\n"
    "                  /tmp/shardserve-UID/link-port-PORT.secret, where 'shardserve agents' on "
    "this host\n"
    "                  finds it by the address (copy it to other hosts, or give --secret-file "
    "there)\n"
    "  --insecure-link  agents register without proving anything (only on a network you trust)\n"
    "  --grpc-tls-*    serve gRPC over TLS (MindSpore's SSLConfig): certificate chain and "
    "unencrypted key\n"
    "                  (PEM); --grpc-verify-client requires client certificates signed by "
    "--grpc-tls-ca\n"
    "  --rest-tls-*    the same for REST (HTTPS, TLS 1.2+)\n"
    "  --rest-max-connections   REST connections of all clients together (default 4096, at most "
    "the\n"
    "                           descriptor limit less 128); more are refused and counted in "
    "/metrics\n"
    "  --rest-max-per-client    REST connections from one client address (default 256)\n"
    "  --rest-read-timeout-s    a REST request's headers and body must arrive within this, "
    "however\n"
    "                           slowly they trickle; a kept-alive connection waiting for its next\n"
    "                           request is closed after it too (default 30)\n"
    "  --grpc-max-streams       concurrent streams on one gRPC connection (default 100)\n"
    "  --grpc-recv-timeout-s    a gRPC request message must arrive whole within this (default "
    "30)\n"
    "  --grpc-recv-slots        gRPC calls receiving their request message at once; each may "
    "buffer\n"
    "                           up to --grpc-max-msg-mb inside gRPC; the others wait, connection "
    "by\n"
    "                           connection (default 2)\n"
    "  --grpc-recv-contended-ms while calls wait for a receive slot, a call whose message has "
    "been\n"
    "                           arriving longer than this is cancelled (default 500)\n"
    "  --grpc-threads           threads taking gRPC calls off the completion queue (default: a "
    "quarter\n"
    "                           of the cores, 1 to 4)\n"
    "  --reply-spin-us          while an agent's reply is due, the worker polls for it this long "
    "before\n"
    "                           sleeping (default 0 = never). On dedicated cores it saves a "
    "wake-up;\n"
    "                           on shared ones the polling takes CPU from other requests\n"
    "  --grpc-max-buffered-mb   request messages received and not yet answered, with their "
    "decoded size,\n"
    "                           all calls together (default and least 2 x --grpc-max-msg-mb); "
    "more are\n"
    "                           refused (RESOURCE_EXHAUSTED)\n"
    "  --grpc-max-decoded-mb    one gRPC request's decoded size, estimated from the message "
    "before it is\n"
    "                           unpacked (default 2 x --grpc-max-msg-mb); larger ones are "
    "refused\n"
    "                           (RESOURCE_EXHAUSTED, counted in /metrics)\n"
    "  --rest-max-buffered-mb   the same for REST request bodies (default 2 x "
    "--rest-max-msg-mb)\n"
    "  --kserve-max-batch-rows-mb  the serving instances a batched KServe request's rows "
    "become, all\n"
    "                           requests together (~1.2 KB a row; default 64); past it 413 / "
    "RESOURCE_EXHAUSTED,\n"
    "                           counted in /metrics\n"
    "  --shutdown-grace-ms      on SIGTERM/SIGINT, requests still pending after this get an error "
    "(default\n"
    "                           5000)\n";

/* Limits against hostile clients and tuning knobs, declared once: flag, accepted range, where the
 * value goes. 0 (not given) leaves the server's default. */
typedef struct {
    long rest_connections, rest_per_client, rest_read_s, rest_held_mb, grpc_streams, grpc_recv_s,
        grpc_held_mb, grpc_decoded_mb, grpc_slots, grpc_contended_ms, grace_ms, grpc_threads,
        reply_spin_us, kserve_rows_mb;
} serve_limits;

static const struct {
    const char *flag;
    long min, max;
    size_t offset;
} limit_flags[] = {
    {"--rest-max-connections", 1, 1000000, offsetof(serve_limits, rest_connections)},
    {"--rest-max-per-client", 1, 1000000, offsetof(serve_limits, rest_per_client)},
    {"--rest-read-timeout-s", 1, 86400, offsetof(serve_limits, rest_read_s)},
    {"--grpc-max-streams", 1, 100000, offsetof(serve_limits, grpc_streams)},
    {"--grpc-recv-timeout-s", 1, 86400, offsetof(serve_limits, grpc_recv_s)},
    {"--grpc-recv-slots", 1, 100000, offsetof(serve_limits, grpc_slots)},
    {"--grpc-recv-contended-ms", 1, 3600000, offsetof(serve_limits, grpc_contended_ms)},
    {"--grpc-threads", 1, 64, offsetof(serve_limits, grpc_threads)},
    {"--reply-spin-us", 0, 100000, offsetof(serve_limits, reply_spin_us)},
    {"--grpc-max-buffered-mb", 1, 1 << 20, offsetof(serve_limits, grpc_held_mb)},
    {"--grpc-max-decoded-mb", 1, 1 << 20, offsetof(serve_limits, grpc_decoded_mb)},
    {"--rest-max-buffered-mb", 1, 1 << 20, offsetof(serve_limits, rest_held_mb)},
    {"--kserve-max-batch-rows-mb", 1, 1 << 20, offsetof(serve_limits, kserve_rows_mb)},
    {"--shutdown-grace-ms", 1, 3600000, offsetof(serve_limits, grace_ms)},
};

#define DEFAULT_GRACE_MS 5000

/* /health/ready: every servable ready and no listener stopped. */
typedef struct {
    ss_worker_set *set;
    ss_grpc_server *grpc;
} serve_state;

static bool serve_ready(void *ctx)
{
    const serve_state *s = ctx;
    return ss_worker_set_ready(s->set) && (!s->grpc || ss_grpc_server_listening(s->grpc));
}

/* After SIGTERM the front ends wait for the answers still pending; one waiting on a stopped agent
 * would hold the exit until its request timeout. The grace timer bounds that wait: once it
 * expires the workers answer everything pending with an error. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool drained;
    long grace_ms;
    ss_worker_set *set;
} grace_timer;

static void *grace_main(void *arg)
{
    grace_timer *g = arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += g->grace_ms / 1000;
    until.tv_nsec += (g->grace_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&g->mu);
    int rc = 0;
    while (!g->drained && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&g->cv, &g->mu, &until);
    bool expired = !g->drained;
    pthread_mutex_unlock(&g->mu);
    if (expired) {
        SS_WARN("shutdown: requests still pending after the %ld ms grace period "
                "(--shutdown-grace-ms): answering them with an error",
                g->grace_ms);
        ss_worker_set_stop(g->set);
    }
    return NULL;
}

/* Stop both front ends (each drains what it has in flight) within the grace period. */
static void serve_shutdown(ss_grpc_server *gs, ss_rest_server *rs, ss_worker_set *set,
                           long grace_ms)
{
    grace_timer g = {.grace_ms = grace_ms, .set = set};
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    pthread_t tid;
    bool timed = set && pthread_create(&tid, NULL, grace_main, &g) == 0;
    ss_grpc_server_stop(gs);
    ss_rest_server_stop(rs);
    pthread_mutex_lock(&g.mu);
    g.drained = true;
    pthread_cond_signal(&g.cv);
    pthread_mutex_unlock(&g.mu);
    if (timed) pthread_join(tid, NULL);
    pthread_mutex_destroy(&g.mu);
    pthread_cond_destroy(&g.cv);
}

/* 1: argv[*i] was a limit flag and its value is stored; 0: not a limit flag; -1: a bad value. */
static int parse_limit(int argc, char **argv, int *i, serve_limits *lim)
{
    for (size_t k = 0; k < sizeof limit_flags / sizeof limit_flags[0]; k++) {
        if (strcmp(argv[*i], limit_flags[k].flag) != 0 || *i + 1 >= argc) continue;
        long *slot = (long *)((char *)lim + limit_flags[k].offset);
        if (cli_parse_int(argv[++*i], limit_flags[k].min, limit_flags[k].max, slot)) return 1;
        cli_fail("serve",
                 ss_errf(SS_ERR_INVALID, "%s wants %ld..%ld, got '%s'", limit_flags[k].flag,
                         limit_flags[k].min, limit_flags[k].max, argv[*i]));
        return -1;
    }
    return 0;
}

/* The ss_ssl_config field a --grpc-tls-X / --rest-tls-X flag sets, or NULL. */
static const char **tls_field(ss_ssl_config tls[2], const char *a)
{
    if (strncmp(a, "--grpc-tls-", 11) != 0 && strncmp(a, "--rest-tls-", 11) != 0) return NULL;
    ss_ssl_config *t = &tls[a[2] == 'r'];
    if (!strcmp(a + 11, "cert")) return &t->certificate;
    if (!strcmp(a + 11, "key")) return &t->private_key;
    if (!strcmp(a + 11, "ca")) return &t->custom_ca;
    return NULL;
}

/* NULL (plaintext) when no TLS flag of this front end was given; otherwise the config, checked
 * for complete flag sets (the files are checked when the server starts). */
static int tls_config(ss_ssl_config *t, const char *front, const char *address,
                      const ss_ssl_config **out)
{
    *out = NULL;
    if (!t->certificate && !t->private_key && !t->custom_ca && !t->verify_client) return 0;
    if (!address)
        return cli_fail("serve",
                        ss_errf(SS_ERR_INVALID, "--%s-tls-* given without --%s", front, front));
    if (!t->certificate || !t->private_key)
        return cli_fail(
            "serve",
            ss_errf(SS_ERR_INVALID, "--%s-tls-cert and --%s-tls-key go together", front, front));
    if (t->verify_client != (t->custom_ca != NULL))
        return cli_fail("serve",
                        ss_errf(SS_ERR_INVALID, "--%s-verify-client and --%s-tls-ca go together",
                                front, front));
    *out = t;
    return 0;
}

int cli_read_secret(const char *path, char **secret, size_t *len)
{
    ss_status *st = ss_link_secret_read(path, secret, len);
    return st ? cli_fail("secret", st) : 0;
}

/* The link's secret for every worker: the --secret-file's, or a fresh random one that
 * publish_secrets writes where local agents look for it. */
static int link_secret(const char *secret_file, bool insecure, char **secret, size_t *len)
{
    *secret = NULL;
    *len = 0;
    if (insecure) {
        if (secret_file)
            return cli_fail(
                "serve",
                ss_errf(SS_ERR_INVALID, "--secret-file and --insecure-link exclude each other"));
        SS_WARN("--insecure-link: agents register without a secret; anyone who reaches the "
                "distributed address can");
        return 0;
    }
    if (secret_file) return cli_read_secret(secret_file, secret, len);
    char *fresh = malloc(65);
    ss_status *st = fresh ? ss_link_secret_generate(fresh) : ss_errf(SS_ERR_NOMEM, "out of memory");
    if (st) {
        free(fresh);
        return cli_fail("serve", st);
    }
    *secret = fresh;
    *len = 64;
    return 0;
}

/* A generated secret goes to each worker's default secret file; the paths are kept for removal. */
static ss_status *publish_secret(const char *secret, size_t len, const char *address, char *path,
                                 size_t cap)
{
    ss_status *st = ss_link_secret_path(address, path, cap);
    if (!st) st = ss_link_secret_write(path, secret, len);
    if (!st) printf("Serving: link secret for %s in %s\n", address, path);
    return st;
}

/* Local models' groups: a `shardserve agents` child each, with a 1-rank group config in a
 * private folder; and the secret files serve wrote (one per model group). */
#define MAX_LOCAL 64
typedef struct {
    int n, n_secrets;
    pid_t pids[MAX_LOCAL]; /* 0: not started, or exited and reaped (local_exited) */
    char labels[MAX_LOCAL][160];
    char dirs[MAX_LOCAL][64];
    char secrets[MAX_SERVABLES * 8][512];
} local_groups;

static ss_status *write_group_config(const char *dir, const char *model_file, char *path,
                                     size_t cap)
{
    const char *base = strrchr(model_file, '/');
    snprintf(path, cap, "%s/group_config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return ss_errf(SS_ERR_IO, "%s: %s", path, strerror(errno));
    fprintf(f,
            "{\"rank\": 0, \"rank_size\": 1, \"stage\": 0, \"stage_size\": 1, \"position\": 0, "
            "\"ranks_per_stage\": 1, \"model\": \"%s\", \"groups\": {\"world\": [0], "
            "\"stage0\": [0]}, \"recv_peers\": [], \"send_peers\": []}\n",
            base ? base + 1 : model_file);
    return fclose(f) == 0 ? NULL : ss_errf(SS_ERR_IO, "%s: %s", path, strerror(errno));
}

static ss_status *start_local(local_groups *g, const ss_worker *m, const char *secret_file,
                              bool insecure)
{
    if (g->n == MAX_LOCAL) return ss_errf(SS_ERR_LIMIT, "more than %d local models", MAX_LOCAL);
    char self[4096], config[128], *dir = g->dirs[g->n];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    self[len > 0 ? len : 0] = 0;
    snprintf(dir, sizeof g->dirs[0], "/tmp/shardserve-local-XXXXXX");
    if (!mkdtemp(dir)) return ss_errf(SS_ERR_IO, "mkdtemp: %s", strerror(errno));
    ss_status *st = write_group_config(dir, ss_worker_local_file(m), config, sizeof config);
    const char *args[12] = {self,
                            "agents",
                            "--distributed-address",
                            ss_worker_address(m),
                            "--model-files",
                            ss_worker_local_file(m),
                            "--group-configs",
                            config};
    int a = 8;
    if (secret_file) args[a++] = "--secret-file", args[a++] = secret_file;
    if (insecure) args[a++] = "--insecure-link";
    pid_t pid = 0, parent = getpid();
    if (!st && (pid = fork()) == 0) {
        /* only async-signal-safe calls until exec (serve has threads). The agents end with serve,
         * however it ends (a crash too: they would otherwise retry a dead worker for ever), and
         * do not keep the mask that blocks SIGTERM/SIGINT in every thread of serve. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(1);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(self, (char *const *)args);
        _exit(127);
    }
    if (!st && pid < 0) {
        st = ss_errf(SS_ERR_IO, "cannot start the agents: %s", strerror(errno));
        pid = 0;
    }
    const char *label = ss_worker_model_label(m);
    snprintf(g->labels[g->n], sizeof g->labels[0], "%s%s%s%s", label, *label ? " (" : "",
             ss_worker_local_file(m), *label ? ")" : "");
    g->pids[g->n++] = pid; /* the folder goes at the end whatever happened */
    if (!st)
        printf("Serving: local model %s (%s) started as agents pid %d\n", ss_worker_model_label(m),
               ss_worker_local_file(m), (int)pid);
    return st;
}

/* A local model's agents that have exited (reaped here), described in why; false if none.
 * Their launcher restarts a failing rank itself, so an exit means it gave up (or was killed). */
static bool local_exited(local_groups *g, char *why, size_t cap)
{
    for (int i = 0; i < g->n; i++) {
        int status;
        if (g->pids[i] <= 0 || waitpid(g->pids[i], &status, WNOHANG) != g->pids[i]) continue;
        char how[64];
        if (WIFSIGNALED(status))
            snprintf(how, sizeof how, "were killed by signal %d", WTERMSIG(status));
        else
            snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(status));
        snprintf(why, cap, "local model %s: its agents (pid %d) %s; their log lines above say why",
                 g->labels[i], (int)g->pids[i], how);
        g->pids[i] = 0;
        return true;
    }
    return false;
}

static void stop_local(local_groups *g)
{
    for (int i = 0; i < g->n; i++) {
        if (g->pids[i] > 0) {
            kill(g->pids[i], SIGTERM);
            while (waitpid(g->pids[i], NULL, 0) < 0 && errno == EINTR) {
            }
        }
        char path[128];
        snprintf(path, sizeof path, "%s/group_config.json", g->dirs[i]);
        unlink(path);
        rmdir(g->dirs[i]);
    }
    for (int i = 0; i < g->n_secrets; i++) /* a secret we made dies with us */
        unlink(g->secrets[i]);
    g->n = g->n_secrets = 0;
}

/* Every model group of servable w: say where it waits; a local one's agents are started here. */
static ss_status *start_models(ss_worker *w, const char *servable, local_groups *g,
                               const char *secret, size_t secret_len, bool generated,
                               const char *secret_file, bool insecure)
{
    ss_status *st = NULL;
    for (ss_worker *m = w; m && !st; m = ss_worker_next_model(m)) {
        if (generated && g->n_secrets == MAX_SERVABLES * 8)
            st = ss_errf(SS_ERR_LIMIT, "more than %d model groups", MAX_SERVABLES * 8);
        else if (generated)
            st = publish_secret(secret, secret_len, ss_worker_address(m),
                                g->secrets[g->n_secrets++], sizeof g->secrets[0]);
        if (!st && m == w)
            printf("Serving: servable %s waiting for agents on %s%s%s%s\n", servable,
                   ss_worker_address(m), *ss_worker_model_label(m) ? " (model " : "",
                   ss_worker_model_label(m), *ss_worker_model_label(m) ? ")" : "");
        else if (!st)
            printf("Serving: servable %s model %s waiting for agents on %s\n", servable,
                   ss_worker_model_label(m), ss_worker_address(m));
        fflush(stdout);
        if (!st && ss_worker_local_file(m)) st = start_local(g, m, secret_file, insecure);
    }
    return st;
}

/* ------------------------------------------------------------------ signals
 * serve blocks SIGINT and SIGTERM in every thread it starts and takes them with sigwait. A thread
 * started before main (OpenBLAS's, by its library constructor) does not block them, and the
 * default action there would end the process mid-start or mid-drain; so a handler forwards what
 * such a thread receives to the main thread, where it waits for sigwait. */
static pthread_t main_thread;

static void forward_to_main(int sig)
{
    pthread_kill(main_thread, sig);
}

static void take_stop_signals(sigset_t *sigs)
{
    main_thread = pthread_self();
    ss_server_block_signals(sigs); /* before any thread of ours exists: they inherit the mask */
    struct sigaction sa = {.sa_handler = forward_to_main};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigset_t usr;
    sigemptyset(&usr);
    sigaddset(&usr, SIGUSR1); /* readiness_main's "done", taken by sigwait too */
    pthread_sigmask(SIG_BLOCK, &usr, NULL);
}

/* Waits for every servable to be ready on its own thread, so the main thread can take a stop
 * signal meanwhile; tells the main thread with SIGUSR1 when done. */
typedef struct {
    ss_worker **workers;
    const ss_worker_options *opts;
    int n;
    ss_status *st;
} readiness;

static void *readiness_main(void *arg)
{
    readiness *r = arg;
    for (int i = 0; i < r->n && !r->st; i++) {
        r->st = ss_worker_wait_ready(r->workers[i]);
        if (!r->st) printf("Serving: servable %s is ready\n", r->opts[i].servable);
        fflush(stdout);
    }
    pthread_kill(main_thread, SIGUSR1);
    return NULL;
}

/* The next signal of `set`, looking at the local models' agents twice a second meanwhile: one
 * that exited is described in why (and *sig is 0). */
static int wait_signal_or_exit(const sigset_t *set, local_groups *locals, char *why, size_t cap)
{
    struct timespec half = {0, 500 * 1000000L};
    for (;;) {
        int sig = sigtimedwait(set, NULL, &half);
        if (sig > 0) return sig;
        if (local_exited(locals, why, cap)) return 0;
    }
}

/* The servables' readiness, or the stop signal that came first (*sig; then NULL). A local
 * model's agents that exit first fail the start: nothing would bring that model up. */
static ss_status *wait_ready_or_signal(ss_worker_set *set, ss_worker **workers,
                                       const ss_worker_options *opts, int n, const sigset_t *sigs,
                                       local_groups *locals, int *sig)
{
    readiness r = {.workers = workers, .opts = opts, .n = n};
    pthread_t tid;
    if (pthread_create(&tid, NULL, readiness_main, &r) != 0)
        return ss_errf(SS_ERR_NOMEM, "cannot start a thread to wait for the agents");
    sigset_t any = *sigs;
    sigaddset(&any, SIGUSR1);
    char why[512];
    *sig = wait_signal_or_exit(&any, locals, why, sizeof why);
    if (*sig != SIGUSR1) ss_worker_set_stop(set); /* the waits end; the drain follows */
    pthread_join(tid, NULL);
    if (*sig == SIGUSR1) {
        *sig = 0;
        return r.st;
    }
    ss_status_free(r.st);
    return *sig ? NULL : ss_errf(SS_ERR_UNAVAILABLE, "%s", why);
}

int cmd_serve(int argc, char **argv)
{
    ss_worker_options w[MAX_SERVABLES];
    int n = 0;
    const char *servable_dir = NULL, *grpc = NULL, *rest = NULL, *secret_file = NULL;
    bool insecure = false;
    long grpc_mb = 100, rest_mb = 100, timeout_ms = 10000, hb_ms = 5000, max_enq = 10000, v;
    ss_ssl_config tls[2] = {{0}, {0}}; /* gRPC, REST */
    const char **tls_flag;
    serve_limits lim = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        ss_worker_options *cur = n ? &w[n - 1] : NULL;
        int mk = cur ? cur->n_models - 1 : -1; /* the --model group flags go to, if any */
        int limit_flag = parse_limit(argc, argv, &i, &lim);
        if (limit_flag < 0) return 1;
        if (limit_flag) continue;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(serve_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--servable-dir") && has) {
            servable_dir = argv[++i];
        } else if (!strcmp(a, "--servable") && has) {
            if (n == MAX_SERVABLES)
                return cli_fail("serve",
                                ss_errf(SS_ERR_LIMIT, "more than %d servables", MAX_SERVABLES));
            memset(&w[n], 0, sizeof w[n]);
            w[n++].servable = argv[++i];
        } else if (cur && !strcmp(a, "--model") && has) {
            if (cur->n_models == 8)
                return cli_fail("serve", ss_errf(SS_ERR_LIMIT, "more than 8 --model groups"));
            cur->models[cur->n_models++].name = argv[++i];
        } else if (cur && !strcmp(a, "--version") && has) {
            if (!cli_parse_int(argv[++i], 0, 1000000, &v))
                return cli_fail("serve", ss_errf(SS_ERR_INVALID,
                                                 "--version wants 0..1000000, got '%s'", argv[i]));
            cur->version = (uint64_t)v;
        } else if (cur && !strcmp(a, "--rank-table") && has) {
            *(mk >= 0 ? &cur->models[mk].rank_table : &cur->rank_table) = argv[++i];
        } else if (cur && !strcmp(a, "--distributed-address") && has) {
            *(mk >= 0 ? &cur->models[mk].distributed_address : &cur->distributed_address) =
                argv[++i];
        } else if (cur && !strcmp(a, "--wait-agents") && has) {
            if (!cli_parse_int(argv[++i], 0, 86400 * 365, &v))
                return cli_fail(
                    "serve",
                    ss_errf(SS_ERR_INVALID, "--wait-agents wants seconds >= 0, got '%s'", argv[i]));
            cur->wait_agents_s = (int)v;
        } else if (!strcmp(a, "--grpc") && has) {
            grpc = argv[++i];
        } else if (!strcmp(a, "--rest") && has) {
            rest = argv[++i];
        } else if ((!strcmp(a, "--grpc-max-msg-mb") || !strcmp(a, "--rest-max-msg-mb")) && has) {
            if (!cli_parse_int(argv[++i], 1, 512, &v))
                return cli_fail("serve",
                                ss_errf(SS_ERR_INVALID, "%s wants 1..512, got '%s'", a, argv[i]));
            *(a[2] == 'g' ? &grpc_mb : &rest_mb) = v;
        } else if (!strcmp(a, "--request-timeout-ms") && has) {
            if (!cli_parse_int(argv[++i], 1, 3600000, &timeout_ms))
                return cli_fail("serve",
                                ss_errf(SS_ERR_INVALID, "--request-timeout-ms wants 1..3600000"));
        } else if (!strcmp(a, "--heartbeat-timeout-ms") && has) {
            if (!cli_parse_int(argv[++i], 100, 3600000, &hb_ms))
                return cli_fail(
                    "serve", ss_errf(SS_ERR_INVALID, "--heartbeat-timeout-ms wants 100..3600000"));
        } else if (!strcmp(a, "--max-enqueued") && has) {
            if (!cli_parse_int(argv[++i], 1, 100000000, &max_enq))
                return cli_fail("serve",
                                ss_errf(SS_ERR_INVALID, "--max-enqueued wants a positive count"));
        } else if (!strcmp(a, "--secret-file") && has) {
            secret_file = argv[++i];
        } else if (!strcmp(a, "--insecure-link")) {
            insecure = true;
        } else if (!strcmp(a, "--grpc-verify-client") || !strcmp(a, "--rest-verify-client")) {
            tls[a[2] == 'r'].verify_client = true;
        } else if ((tls_flag = tls_field(tls, a)) && has) {
            *tls_flag = argv[++i];
        } else {
            fprintf(stderr, "shardserve serve: unexpected argument '%s'\n%s", a, serve_usage);
            return 2;
        }
    }
    if (!servable_dir || !n || (!grpc && !rest)) {
        fputs(serve_usage, stderr);
        return 2;
    }
    const ss_ssl_config *grpc_tls, *rest_tls;
    if (tls_config(&tls[0], "grpc", grpc, &grpc_tls) ||
        tls_config(&tls[1], "rest", rest, &rest_tls))
        return 1;
    char *secret = NULL;
    size_t secret_len = 0;
    if (link_secret(secret_file, insecure, &secret, &secret_len)) return 1;
    bool generated = secret && !secret_file;
    for (int i = 0; i < n; i++) { /* a group without a rank table must be a local model */
        w[i].servable_dir = servable_dir;
        w[i].request_timeout_ms = (int)timeout_ms;
        w[i].heartbeat_timeout_ms = (int)hb_ms;
        w[i].max_enqueued = (int)max_enq;
        w[i].reply_spin_us = (int)lim.reply_spin_us; /* -1 (not given) or 0: never */
        w[i].secret = secret;
        w[i].secret_len = secret_len;
    }
    ss_pystage_set_timeout_ms(timeout_ms); /* a Python stage is bounded by the same timeout */
    long grace_ms = lim.grace_ms ? lim.grace_ms : DEFAULT_GRACE_MS;
    sigset_t sigs;
    take_stop_signals(&sigs);
    ss_worker_set *set = ss_worker_set_new();
    ss_worker *workers[MAX_SERVABLES];
    ss_status *st = set ? NULL : ss_errf(SS_ERR_NOMEM, "out of memory");
    static local_groups locals; /* large: not on the stack */
    for (int i = 0; i < n && !st; i++) {
        st = ss_worker_set_add(set, &w[i], &workers[i]);
        if (!st)
            st = start_models(workers[i], w[i].servable, &locals, secret, secret_len, generated,
                              secret_file, insecure);
    }
    ss_raise_nofile_limit(); /* thousands of client connections need more than 1024 */
    ss_grpc_server *gs = NULL;
    ss_rest_server *rs = NULL;
    ss_predict_handler h = set ? ss_worker_set_handler(set) : (ss_predict_handler){0};
    ss_server_set_kserve_max_rows_mb((int)lim.kserve_rows_mb);
    if (!st && grpc) {
        ss_grpc_options go = {.address = grpc,
                              .max_msg_mb = (int)grpc_mb,
                              .handler = h,
                              .ready = ss_worker_set_ready,
                              .ready_ctx = set,
                              .ssl = grpc_tls,
                              .max_streams = (int)lim.grpc_streams,
                              .threads = (int)lim.grpc_threads,
                              .drain_ms = (int)grace_ms + 1000, /* answers first, then cancel */
                              .recv_timeout_s = (int)lim.grpc_recv_s,
                              .recv_slots = (int)lim.grpc_slots,
                              .recv_contended_ms = (int)lim.grpc_contended_ms,
                              .max_buffered_mb = (int)lim.grpc_held_mb,
                              .max_decoded_mb = (int)lim.grpc_decoded_mb};
        st = ss_grpc_server_start(&go, &gs);
        if (!st &&
            ss_grpc_server_port(gs) > 0) { /* show the bound port (also when asked for port 0) */
            char host[256];
            const char *colon = strrchr(grpc, ':');
            snprintf(host, sizeof host, "%.*s", colon ? (int)(colon - grpc) : 0, grpc);
            printf("Serving: Serving gRPC server start success, listening on %s:%d\n", host,
                   ss_grpc_server_port(gs));
        } else if (!st) {
            printf("Serving: Serving gRPC server start success, listening on %s\n", grpc);
        }
    }
    serve_state state = {set, gs};
    if (!st && rest) {
        ss_rest_options ro = {.address = rest,
                              .max_msg_mb = (int)rest_mb,
                              .handler = h,
                              .ready = serve_ready,
                              .ready_ctx = &state,
                              .ssl = rest_tls,
                              .max_connections = (int)lim.rest_connections,
                              .max_per_client = (int)lim.rest_per_client,
                              .read_timeout_s = (int)lim.rest_read_s,
                              .max_buffered_mb = (int)lim.rest_held_mb,
                              .servable_dir = servable_dir};
        st = ss_rest_server_start(&ro, &rs);
        if (!st) {
            char host[256];
            const char *colon = strrchr(rest, ':');
            snprintf(host, sizeof host, "%.*s", colon ? (int)(colon - rest) : 0, rest);
            printf("Serving: Serving RESTful server start success, listening on %s:%d\n", host,
                   ss_rest_server_port(rs));
        }
    }
    fflush(stdout);
    int sig = 0;
    if (!st) st = wait_ready_or_signal(set, workers, w, n, &sigs, &locals, &sig);
    int rc = 0;
    if (st) {
        rc = cli_fail("serve", st);
    } else {
        if (!sig) {
            char why[512];
            while (!(sig = wait_signal_or_exit(&sigs, &locals, why, sizeof why)))
                SS_ERROR("%s: that model stays down until serve is restarted", why);
            SS_INFO("signal %d: shutting down", sig);
        } else {
            SS_INFO("signal %d before the servables were ready: shutting down", sig);
        }
    }
    /* stop accepting and drain the front ends, then answer what is left and release the agents */
    serve_shutdown(gs, rs, set, grace_ms);
    ss_worker_set_free(set);
    stop_local(&locals);
    free(secret);
    if (!rc) printf("Serving: stopped\n");
    return rc;
}
