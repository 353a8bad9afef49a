/*
 * pyrunner: the pool of Python stage-runner processes (see pyrunner.h for the shape).
 *
 * Segment layout, little-endian, written by us from offset 0 (the request) and by the runner from
 * the 64-aligned offset we name after it (the reply), so outputs that are views of the inputs
 * (an identity function) are still intact while the runner copies them:
 *   request: u32 n_instances, u32 n_inputs, u64 0, then n_instances x n_inputs tensor records,
 *            then the tensor bytes (each 64-aligned);
 *   reply:   u32 status (0 ok, 1 the whole call failed), u32 n_instances, u32 n_outputs,
 *            u32 message length, u64 message offset; per instance u32 failed, u32 length,
 *            u64 offset (its message); per instance x output a tensor record; the bytes.
 *   tensor record (88 bytes): i32 dtype (ss_plugin numbering), i32 ndim, u64 offset, u64 nbytes,
 *            i64 dims[8].
 * Messages on the socket are 24 bytes: u32 op, u32 stage, u64 a, u64 b. A call is op 1 (a = the
 * request's end, b = the segment size); the answer op 2 (a = the reply's offset, b = the segment
 * size, which the runner may have grown); a runner that started sends op 3 (a = length of an
 * import error, in the segment at 0; 0 = ready). While its function runs, a runner may send op 4
 * (Model.call: stage = the subgraph, a = where it wrote a request in the request layout, past the
 * stage's request, whose u64 holds the declared model's index) any number of times; each gets
 * op 5 (a = the reply, in the reply layout).
 *
 * The runner's reply is not trusted: every offset and count is checked against the segment.
 */
#define _GNU_SOURCE
#include "pyrunner.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SS_PYTHON_DIR
#define SS_PYTHON_DIR "python"
#endif

extern char **environ;

#define REC_BYTES 88
#define ALIGN64(x) (((x) + 63u) & ~(uint64_t)63u)
#define START_WAIT_MS 60000
#define MIN_SEGMENT (1u << 20)

typedef struct {
    uint32_t op, stage;
    uint64_t a, b;
} wire_msg;

/* A call on its way through the pool: queued (pending) or held by a runner (runner.cur). */
typedef struct ss_pycall {
    uint32_t stage;
    ss_plugin_batch *b;
    ss_pypool_done done; /* NULL: no call */
    void *ctx;
    uint64_t deadline_ns;
    struct ss_pycall *next;
} ss_pycall;

/* A runner process and the serve thread that owns it (its "owner": it reads every message the
 * runner sends, answers Model.call, times the call out, replaces the process when it dies).
 * Any thread hands a free runner a call (runner_start) and returns; the owner finishes it. */
typedef struct {
    ss_pypool *pool;
    pid_t pid;
    int sock, memfd, timer;
    uint8_t *seg;
    size_t seg_size;
    bool busy, ready;   /* under pool->mu; busy: not to be handed a call */
    ss_pycall cur;      /* under pool->mu: the call it runs (cur.done NULL: none) */
    pthread_mutex_t mu; /* the process, socket and segment: a hand-off vs the owner */
    pthread_t owner;
    bool has_owner;
} runner;

typedef struct {
    ss_pypool *pool;
    uint32_t stage;
} stage_state;

struct ss_pypool {
    char *servable, *stages_json;
    char **argv, **envp;
    size_t n_runners, n_stages;
    runner *runners;
    stage_state *states;
    ss_pymodel_fn model_call; /* Model.call (NULL: not available) */
    ss_pymodel_outputs_fn model_outputs;
    void *model_ctx;
    pthread_mutex_t mu;             /* the runners' busy, ready, cur; pending; stopping */
    ss_pycall *pending, *pend_tail; /* calls waiting for a free runner, oldest first */
    bool stopping;
    int stop_fd; /* an eventfd, readable once the pool stops: wakes every owner */
};

static long g_timeout_ms = 10000;

void ss_pystage_set_timeout_ms(long ms)
{
    if (ms > 0) g_timeout_ms = ms;
}

/* ------------------------------------------------------------------ processes */

static int fd_above(int fd)
{
    int hi = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 10) : -1;
    if (fd >= 0) close(fd);
    return hi;
}

static void runner_close(runner *r)
{
    if (r->seg) munmap(r->seg, r->seg_size);
    if (r->sock >= 0) close(r->sock);
    if (r->memfd >= 0) close(r->memfd);
    r->seg = NULL;
    r->sock = r->memfd = -1;
    r->pid = 0;
    r->ready = false;
}

/* Default signals and an empty mask for the child (serve blocks SIGTERM/SIGINT in every thread
 * and a spawned child would inherit that), and the given descriptors moved to their places. */
ss_status *ss_pyproc_spawn(char **argv, char **envp, const int *from, const int *to, size_t n,
                           pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, dflt;
    sigemptyset(&none);
    sigemptyset(&dflt);
    sigaddset(&dflt, SIGPIPE);
    sigaddset(&dflt, SIGTERM);
    sigaddset(&dflt, SIGINT);
    posix_spawn_file_actions_init(&fa);
    for (size_t i = 0; i < n; i++)
        posix_spawn_file_actions_adddup2(&fa, from[i], to[i]);
    posix_spawnattr_init(&at);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &dflt);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    int rc = posix_spawn(pid, argv[0], &fa, &at, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc != 0) return ss_errf(SS_ERR_IO, "cannot start %s: %s", argv[0], strerror(rc));
    return NULL;
}

/* The child gets the socket as fd 3 and the segment as fd 4. */
static ss_status *runner_spawn(ss_pypool *p, runner *r)
{
    int sv[2] = {-1, -1};
    r->sock = r->memfd = -1;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return ss_errf(SS_ERR_IO, "Python stage runner: socketpair: %s", strerror(errno));
    r->sock = sv[0];
    int child = fd_above(sv[1]);
    r->memfd = fd_above(memfd_create("shardserve-pystage", MFD_CLOEXEC));
    r->seg_size = MIN_SEGMENT;
    if (child < 0 || r->memfd < 0 || ftruncate(r->memfd, (off_t)r->seg_size) != 0 ||
        (r->seg = mmap(NULL, r->seg_size, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0)) ==
            MAP_FAILED) {
        r->seg = NULL;
        if (child >= 0) close(child);
        runner_close(r);
        return ss_errf(SS_ERR_IO, "Python stage runner: shared memory: %s", strerror(errno));
    }
    pid_t pid = 0;
    ss_status *e = ss_pyproc_spawn(p->argv, p->envp, (const int[]){child, r->memfd},
                                   (const int[]){3, 4}, 2, &pid);
    close(child);
    if (e) {
        runner_close(r);
        return e;
    }
    r->pid = pid;
    r->ready = false;
    return NULL;
}

/* How a runner ended, for the error text: "killed by signal 9" / "exited with status 1". */
static void runner_reap(runner *r, char *how, size_t cap)
{
    int st = 0;
    kill(r->pid, SIGKILL); /* it may only have closed its socket */
    pid_t got;
    while ((got = waitpid(r->pid, &st, 0)) < 0 && errno == EINTR) {
    }
    if (got != r->pid)
        snprintf(how, cap, "ended");
    else if (WIFSIGNALED(st))
        snprintf(how, cap, "was killed by signal %d", WTERMSIG(st));
    else
        snprintf(how, cap, "exited with status %d", WEXITSTATUS(st));
    runner_close(r);
}

static int ms_left(uint64_t deadline_ns)
{
    uint64_t now = ss_now_ns();
    if (now >= deadline_ns) return 0;
    uint64_t ms = (deadline_ns - now + 999999) / 1000000;
    return ms > 3600000 ? 3600000 : (int)ms;
}

/* One message from the runner before the deadline: 1 got it, 0 timed out, -1 the runner is gone
 * (or the pool stops). */
static int runner_recv(runner *r, wire_msg *m, uint64_t deadline_ns)
{
    for (;;) {
        struct pollfd pfd[2] = {{r->sock, POLLIN, 0}, {r->pool->stop_fd, POLLIN, 0}};
        int n = poll(pfd, 2, ms_left(deadline_ns));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 || pfd[1].revents) return -1;
        if (n == 0) return 0;
        ssize_t got = recv(r->sock, m, sizeof *m, 0);
        if (got < 0 && errno == EINTR) continue;
        return got == (ssize_t)sizeof *m ? 1 : -1;
    }
}

/* Grow the segment (the file first: a mapping past its end faults) to at least `size`. The runner
 * may have grown the file already when it answers with a larger size. */
static bool seg_resize(runner *r, size_t size)
{
    if (size <= r->seg_size) return true;
    struct stat sb;
    if (fstat(r->memfd, &sb) != 0 ||
        ((size_t)sb.st_size < size && ftruncate(r->memfd, (off_t)size) != 0))
        return false;
    void *to = mremap(r->seg, r->seg_size, size, MREMAP_MAYMOVE);
    if (to == MAP_FAILED) return false;
    r->seg = to;
    r->seg_size = size;
    return true;
}

/* Wait for a new runner's op 3: NULL when it imported the stages. */
static ss_status *runner_await_ready(ss_pypool *p, runner *r, uint64_t deadline_ns)
{
    wire_msg m;
    int got = runner_recv(r, &m, deadline_ns);
    char how[64];
    if (got == 1 && m.op == 3 && m.a == 0) return (r->ready = true), NULL;
    if (got == 1 && m.op == 3 && seg_resize(r, m.b) && m.a < r->seg_size) {
        ss_status *e = ss_errf(SS_ERR_INVALID, "%.*s", (int)m.a, (const char *)r->seg);
        runner_reap(r, how, sizeof how);
        return e;
    }
    pid_t pid = r->pid;
    runner_reap(r, how, sizeof how);
    if (got == 0)
        return ss_errf(SS_ERR_UNAVAILABLE,
                       "the Python stage runner (pid %d) for servable '%s' did not start in time",
                       (int)pid, p->servable);
    return ss_errf(SS_ERR_UNAVAILABLE,
                   "the Python stage runner (pid %d) for servable '%s' %s while starting", (int)pid,
                   p->servable, how);
}

/* ------------------------------------------------------------------ the pool */

static char *join_path(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s%s", a, b[0] ? ":" : "", b);
    return s;
}

/* python3 -m MODULE ARGS..., with the shim's folder first on PYTHONPATH; SHARDSERVE_PYTHON and
 * SHARDSERVE_PYTHON_DIR override the interpreter and the folder. */
ss_status *ss_pyproc_command(const char *module, const char *const *args, size_t n_args,
                             char ***argv_out, char ***envp_out)
{
    const char *py = getenv("SHARDSERVE_PYTHON"), *dir = getenv("SHARDSERVE_PYTHON_DIR");
    const char *old = getenv("PYTHONPATH");
    size_t n_env = 0;
    while (environ[n_env])
        n_env++;
    char **argv = calloc(n_args + 4, sizeof *argv), **envp = calloc(n_env + 2, sizeof *envp);
    *argv_out = argv;
    *envp_out = envp;
    if (!argv || !envp) return ss_errf(SS_ERR_NOMEM, "out of memory");
    argv[0] = strdup(py && *py ? py : "/usr/bin/python3");
    argv[1] = strdup("-m");
    argv[2] = strdup(module);
    for (size_t i = 0; i < n_args; i++)
        argv[3 + i] = strdup(args[i]);
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++)
        if (strncmp(environ[i], "PYTHONPATH=", 11) != 0) envp[k++] = strdup(environ[i]);
    char first[4096];
    snprintf(first, sizeof first, "PYTHONPATH=%s", dir && *dir ? dir : SS_PYTHON_DIR);
    envp[k++] = join_path(first, old ? old : "");
    for (size_t i = 0; i < n_args + 3; i++)
        if (!argv[i]) return ss_errf(SS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < k; i++)
        if (!envp[i]) return ss_errf(SS_ERR_NOMEM, "out of memory");
    return NULL;
}

void ss_pyproc_command_free(char **argv, char **envp)
{
    for (size_t i = 0; argv && argv[i]; i++)
        free(argv[i]);
    for (size_t i = 0; envp && envp[i]; i++)
        free(envp[i]);
    free(argv);
    free(envp);
}

static char *stages_json(const ss_pystage_spec *s, size_t n)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o) break;
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "module", s[i].module);
        cJSON_AddStringToObject(o, "function", s[i].function);
        cJSON_AddStringToObject(o, "key", s[i].key);
        cJSON_AddStringToObject(o, "method", s[i].method);
        cJSON_AddNumberToObject(o, "batch_size", s[i].batch_size);
        cJSON_AddNumberToObject(o, "n_inputs", (double)s[i].n_inputs);
        cJSON_AddNumberToObject(o, "n_outputs", (double)s[i].n_outputs);
    }
    char *text = arr ? cJSON_PrintUnformatted(arr) : NULL;
    cJSON_Delete(arr);
    return text;
}

static void *runner_owner(void *arg);

/* Every runner's fields before any process starts (ss_pypool_free can then take any of them). */
static ss_status *runners_init(ss_pypool *p, size_t n)
{
    p->n_runners = n;
    for (size_t i = 0; i < n; i++) {
        runner *r = &p->runners[i];
        r->pool = p;
        r->sock = r->memfd = -1;
        pthread_mutex_init(&r->mu, NULL);
        r->timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    }
    for (size_t i = 0; i < n; i++)
        if (p->runners[i].timer < 0)
            return ss_errf(SS_ERR_IO, "Python stage runner: timerfd: %s", strerror(errno));
    p->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->stop_fd < 0)
        return ss_errf(SS_ERR_IO, "Python stage runner: eventfd: %s", strerror(errno));
    return NULL;
}

/* Start the processes, wait until each has imported the stages, then their owner threads. */
static ss_status *runners_start(ss_pypool *p, size_t n)
{
    ss_status *e = runners_init(p, n);
    for (size_t i = 0; !e && i < n; i++)
        e = runner_spawn(p, &p->runners[i]);
    uint64_t deadline = ss_now_ns() + (uint64_t)START_WAIT_MS * 1000000ull;
    for (size_t i = 0; !e && i < p->n_runners; i++)
        e = runner_await_ready(p, &p->runners[i], deadline);
    for (size_t i = 0; !e && i < p->n_runners; i++) {
        runner *r = &p->runners[i];
        int rc = pthread_create(&r->owner, NULL, runner_owner, r);
        if (rc != 0) e = ss_errf(SS_ERR_INTERNAL, "cannot start a runner thread: %s", strerror(rc));
        r->has_owner = rc == 0;
    }
    return e;
}

ss_status *ss_pypool_start(const char *servable, const ss_pystage_spec *stages, size_t n_stages,
                           size_t runners, ss_pypool **out)
{
    *out = NULL;
    ss_pypool *p = calloc(1, sizeof *p);
    if (!p) return ss_errf(SS_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&p->mu, NULL);
    p->stop_fd = -1;
    p->n_stages = n_stages;
    p->servable = strdup(servable);
    p->stages_json = stages_json(stages, n_stages);
    p->runners = calloc(runners, sizeof *p->runners);
    p->states = calloc(n_stages + 1, sizeof *p->states);
    const char *args[] = {servable, p->stages_json};
    ss_status *e = p->servable && p->stages_json && p->runners && p->states
                       ? ss_pyproc_command("shardserve_stages.runner", args, 2, &p->argv, &p->envp)
                       : ss_errf(SS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !e && i < n_stages; i++)
        p->states[i] = (stage_state){p, (uint32_t)i};
    if (!e) e = runners_start(p, runners);
    if (e) {
        ss_pypool_free(p);
        return e;
    }
    *out = p;
    return NULL;
}

static const char STOPPED[] = "Servable stopped: the server is shutting down";

void ss_pypool_stop(ss_pypool *p)
{
    pthread_mutex_lock(&p->mu);
    bool already = p->stopping;
    p->stopping = true;
    ss_pycall *q = p->pending;
    p->pending = p->pend_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    if (already) return;
    if (p->stop_fd >= 0 && eventfd_write(p->stop_fd, 1) != 0)
        SS_ERROR("servable %s: cannot stop the Python stage runners", p->servable);
    for (size_t i = 0; p->runners && i < p->n_runners; i++)
        if (p->runners[i].has_owner) pthread_join(p->runners[i].owner, NULL);
    for (ss_pycall *next; q; q = next) {
        next = q->next;
        q->done(q->ctx, 1, STOPPED);
        free(q);
    }
}

void ss_pypool_free(ss_pypool *p)
{
    if (!p) return;
    ss_pypool_stop(p);
    char how[64];
    for (size_t i = 0; p->runners && i < p->n_runners; i++) {
        runner *r = &p->runners[i];
        pthread_mutex_lock(&r->mu); /* a hand-off still writing its segment ends first */
        if (r->pid > 0) runner_reap(r, how, sizeof how);
        pthread_mutex_unlock(&r->mu);
    }
    for (size_t i = 0; p->runners && i < p->n_runners; i++) {
        if (p->runners[i].timer >= 0) close(p->runners[i].timer);
        pthread_mutex_destroy(&p->runners[i].mu);
    }
    if (p->stop_fd >= 0) close(p->stop_fd);
    ss_pyproc_command_free(p->argv, p->envp);
    free(p->runners);
    free(p->states);
    free(p->servable);
    free(p->stages_json);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* ------------------------------------------------------------------ one call */

static void put_u32(uint8_t *at, uint32_t v)
{
    memcpy(at, &v, 4);
}

static void put_u64(uint8_t *at, uint64_t v)
{
    memcpy(at, &v, 8);
}

static uint32_t get_u32(const uint8_t *at)
{
    uint32_t v;
    memcpy(&v, at, 4);
    return v;
}

static uint64_t get_u64(const uint8_t *at)
{
    uint64_t v;
    memcpy(&v, at, 8);
    return v;
}

static void put_record(uint8_t *at, const ss_plugin_tensor *t, uint64_t off)
{
    put_u32(at, (uint32_t)t->dtype);
    put_u32(at + 4, (uint32_t)t->ndim);
    put_u64(at + 8, off);
    put_u64(at + 16, t->nbytes);
    for (int d = 0; d < SS_PLUGIN_MAX_DIMS; d++)
        put_u64(at + 24 + 8 * d, d < t->ndim ? (uint64_t)t->dims[d] : 0);
}

/* The request into the segment; its end, or 0 when the segment cannot grow. */
static uint64_t write_request(runner *r, const ss_plugin_batch *b)
{
    size_t n = (size_t)b->n_instances * b->n_inputs;
    uint64_t end = ALIGN64(16 + (uint64_t)n * REC_BYTES);
    for (size_t i = 0; i < n; i++)
        end = ALIGN64(end + b->inputs[i].nbytes);
    if (!seg_resize(r, end + end / 2 + MIN_SEGMENT)) return 0;
    uint8_t *s = r->seg;
    put_u32(s, b->n_instances);
    put_u32(s + 4, b->n_inputs);
    put_u64(s + 8, 0);
    uint64_t off = ALIGN64(16 + (uint64_t)n * REC_BYTES);
    for (size_t i = 0; i < n; i++) {
        put_record(s + 16 + i * REC_BYTES, &b->inputs[i], off);
        if (b->inputs[i].nbytes) memcpy(s + off, b->inputs[i].data, b->inputs[i].nbytes);
        off = ALIGN64(off + b->inputs[i].nbytes);
    }
    return end;
}

static bool in_seg(const runner *r, uint64_t off, uint64_t len)
{
    return off <= r->seg_size && len <= r->seg_size - off;
}

/* One output of the reply into the batch; false (with `err`) when the runner broke the format. */
static bool read_output(runner *r, ss_plugin_batch *b, uint32_t i, uint32_t k, const uint8_t *rec,
                        char *err, size_t cap)
{
    int32_t dtype = (int32_t)get_u32(rec), ndim = (int32_t)get_u32(rec + 4);
    uint64_t off = get_u64(rec + 8), nbytes = get_u64(rec + 16);
    int64_t dims[SS_PLUGIN_MAX_DIMS];
    for (int d = 0; d < SS_PLUGIN_MAX_DIMS; d++)
        dims[d] = (int64_t)get_u64(rec + 24 + 8 * d);
    bool text = dtype == SS_PLUGIN_STRING || dtype == SS_PLUGIN_BYTES;
    void *dst = ndim >= 0 && ndim <= SS_PLUGIN_MAX_DIMS && in_seg(r, off, nbytes)
                    ? b->alloc_output(b, i, k, dtype, text ? 0 : ndim, dims, nbytes)
                    : NULL;
    if (!dst) {
        snprintf(err, cap,
                 "Push py task result cause exception: output %u of instance %u "
                 "(dtype %d, %d dims, %llu bytes) cannot be taken",
                 k, i, dtype, ndim, (unsigned long long)nbytes);
        return false;
    }
    if (nbytes) memcpy(dst, r->seg + off, nbytes);
    return true;
}

/* The runner's reply at `at` into the batch: 0, or non-zero with `err` for the whole call. */
static int read_reply(runner *r, ss_plugin_batch *b, uint64_t at, char *err, size_t cap)
{
    uint64_t n_out = (uint64_t)b->n_instances * b->n_outputs;
    uint64_t need = 24 + 16ull * b->n_instances + n_out * REC_BYTES;
    if (!in_seg(r, at, need))
        return snprintf(err, cap, "the Python stage runner's reply is cut"), 1;
    const uint8_t *h = r->seg + at;
    uint32_t msg_len = get_u32(h + 12);
    uint64_t msg_off = get_u64(h + 16);
    if (get_u32(h) != 0) {
        if (!in_seg(r, msg_off, msg_len)) msg_len = 0;
        snprintf(err, cap, "%.*s", (int)msg_len, (const char *)r->seg + msg_off);
        return 1;
    }
    if (get_u32(h + 4) != b->n_instances || get_u32(h + 8) != b->n_outputs)
        return snprintf(err, cap, "the Python stage runner answered another batch"), 1;
    for (uint32_t i = 0; i < b->n_instances; i++) {
        const uint8_t *ih = h + 24 + 16 * i;
        if (get_u32(ih)) {
            uint32_t len = get_u32(ih + 4);
            uint64_t off = get_u64(ih + 8);
            char msg[2048];
            snprintf(msg, sizeof msg, "%.*s", in_seg(r, off, len) ? (int)len : 0,
                     (const char *)r->seg + off);
            b->fail_instance(b, i, msg);
            continue;
        }
        const uint8_t *recs =
            h + 24 + 16ull * b->n_instances + (uint64_t)i * b->n_outputs * REC_BYTES;
        for (uint32_t k = 0; k < b->n_outputs; k++)
            if (!read_output(r, b, i, k, recs + (uint64_t)k * REC_BYTES, err, cap)) return 1;
    }
    return 0;
}

void ss_pypool_set_model(ss_pypool *p, ss_pymodel_fn fn, ss_pymodel_outputs_fn outputs, void *ctx)
{
    p->model_call = fn;
    p->model_outputs = outputs;
    p->model_ctx = ctx;
}

/* Model.call's outputs, kept until they are written into the segment. */
typedef struct {
    ss_plugin_batch b; /* first: the callbacks get it back */
    ss_plugin_tensor *outs;
    int64_t *dims; /* SS_PLUGIN_MAX_DIMS per output */
    char **failed;
} model_batch;

static void *model_alloc(ss_plugin_batch *b, uint32_t i, uint32_t k, int32_t dtype, int32_t ndim,
                         const int64_t *dims, uint64_t string_bytes)
{
    model_batch *mb = (model_batch *)b;
    (void)string_bytes;
    size_t at = (size_t)i * b->n_outputs + k;
    int64_t numel = ss_shape_numel(ndim, dims);
    size_t esize = ss_dtype_size((ss_dtype)dtype);
    if (i >= b->n_instances || k >= b->n_outputs || mb->outs[at].data || ndim < 0 ||
        ndim > SS_PLUGIN_MAX_DIMS || numel < 0 || !esize || dtype == SS_PLUGIN_STRING)
        return NULL;
    void *data = calloc((size_t)numel * esize + 1, 1);
    if (!data) return NULL;
    memcpy(&mb->dims[at * SS_PLUGIN_MAX_DIMS], dims, sizeof(int64_t) * (size_t)ndim);
    mb->outs[at] = (ss_plugin_tensor){
        NULL, dtype, ndim, &mb->dims[at * SS_PLUGIN_MAX_DIMS], data, (uint64_t)numel * esize};
    return data;
}

static void model_fail(ss_plugin_batch *b, uint32_t i, const char *message)
{
    model_batch *mb = (model_batch *)b;
    if (i < b->n_instances && !mb->failed[i]) mb->failed[i] = strdup(message ? message : "");
}

/* The reply layout at `at`: status, per-instance failures, then every output. */
static bool write_model_reply(runner *r, model_batch *mb, uint64_t at, int rc, const char *err)
{
    ss_plugin_batch *b = &mb->b;
    size_t n_out = (size_t)b->n_instances * b->n_outputs;
    uint64_t end = ALIGN64(at + 24 + 16ull * b->n_instances + n_out * REC_BYTES);
    uint64_t msg_off = end;
    end = ALIGN64(end + strlen(err));
    for (uint32_t i = 0; i < b->n_instances; i++)
        end = ALIGN64(end + (mb->failed[i] ? strlen(mb->failed[i]) : 0));
    for (size_t o = 0; o < n_out; o++)
        end = ALIGN64(end + mb->outs[o].nbytes);
    if (!seg_resize(r, end)) return false;
    uint8_t *h = r->seg + at;
    put_u32(h, rc != 0);
    put_u32(h + 4, b->n_instances);
    put_u32(h + 8, b->n_outputs);
    put_u32(h + 12, (uint32_t)strlen(err));
    put_u64(h + 16, msg_off);
    memcpy(r->seg + msg_off, err, strlen(err));
    uint64_t off = ALIGN64(msg_off + strlen(err));
    for (uint32_t i = 0; i < b->n_instances; i++) {
        size_t len = mb->failed[i] ? strlen(mb->failed[i]) : 0;
        put_u32(h + 24 + 16 * i, mb->failed[i] != NULL);
        put_u32(h + 28 + 16 * i, (uint32_t)len);
        put_u64(h + 32 + 16 * i, off);
        if (len) memcpy(r->seg + off, mb->failed[i], len);
        off = ALIGN64(off + len);
    }
    for (size_t o = 0; o < n_out; o++) {
        put_record(h + 24 + 16ull * b->n_instances + o * REC_BYTES, &mb->outs[o], off);
        if (mb->outs[o].nbytes) memcpy(r->seg + off, mb->outs[o].data, mb->outs[o].nbytes);
        off = ALIGN64(off + mb->outs[o].nbytes);
    }
    return true;
}

/* The request layout at `at` as plugin tensors viewing the segment (NULL: it does not fit). */
static ss_plugin_tensor *read_model_request(runner *r, uint64_t at, uint32_t *n_inst,
                                            uint32_t *n_in, uint32_t *model, int64_t **dims,
                                            uint64_t *end)
{
    if (!in_seg(r, at, 16)) return NULL;
    *n_inst = get_u32(r->seg + at);
    *n_in = get_u32(r->seg + at + 4);
    uint64_t decl = get_u64(r->seg + at + 8);
    *model = decl > UINT32_MAX ? UINT32_MAX : (uint32_t)decl;
    uint64_t n = (uint64_t)*n_inst * *n_in;
    if (n > 65536 || !in_seg(r, at, 16 + n * REC_BYTES)) return NULL;
    ss_plugin_tensor *ins = calloc(n + 1, sizeof *ins);
    *dims = calloc((n + 1) * SS_PLUGIN_MAX_DIMS, sizeof **dims);
    *end = at + 16 + n * REC_BYTES;
    for (uint64_t i = 0; ins && *dims && i < n; i++) {
        const uint8_t *rec = r->seg + at + 16 + i * REC_BYTES;
        ss_plugin_tensor *t = &ins[i];
        t->dtype = (int32_t)get_u32(rec);
        t->ndim = (int32_t)get_u32(rec + 4);
        uint64_t off = get_u64(rec + 8);
        t->nbytes = get_u64(rec + 16);
        for (int d = 0; d < SS_PLUGIN_MAX_DIMS; d++)
            (*dims)[i * SS_PLUGIN_MAX_DIMS + d] = (int64_t)get_u64(rec + 24 + 8 * d);
        t->dims = &(*dims)[i * SS_PLUGIN_MAX_DIMS];
        t->data = r->seg + off;
        if (t->ndim < 0 || t->ndim > SS_PLUGIN_MAX_DIMS || !in_seg(r, off, t->nbytes)) break;
        if (off + t->nbytes > *end) *end = off + t->nbytes;
        if (i + 1 == n) return ins;
    }
    free(ins);
    free(*dims);
    return NULL;
}

/* One op 4: run the model on what the runner sent and answer with op 5. */
static bool serve_model_call(ss_pypool *p, runner *r, const wire_msg *m)
{
    uint32_t n_inst = 0, n_in = 0, model = 0;
    int64_t *in_dims = NULL;
    uint64_t end = 0;
    ss_plugin_tensor *ins = read_model_request(r, m->a, &n_inst, &n_in, &model, &in_dims, &end);
    if (!ins) return false;
    uint32_t n_outputs = p->model_outputs ? p->model_outputs(p->model_ctx, model, m->stage) : 0;
    size_t n_out = (size_t)n_inst * n_outputs;
    model_batch mb = {{n_inst, n_in, n_outputs, ins, NULL, model_alloc, model_fail}};
    mb.outs = calloc(n_out + 1, sizeof *mb.outs);
    mb.dims = calloc((n_out + 1) * SS_PLUGIN_MAX_DIMS, sizeof *mb.dims);
    mb.failed = calloc(n_inst + 1, sizeof *mb.failed);
    char err[1024] = "";
    int rc = 1;
    if (!mb.outs || !mb.dims || !mb.failed)
        snprintf(err, sizeof err, "out of memory");
    else if (!p->model_call)
        snprintf(err, sizeof err, "Model.call is not available here");
    else
        rc = p->model_call(p->model_ctx, model, m->stage, &mb.b, err, sizeof err);
    err[sizeof err - 1] = 0;
    bool ok = mb.outs && mb.dims && mb.failed && write_model_reply(r, &mb, ALIGN64(end), rc, err);
    wire_msg answer = {5, 0, ALIGN64(end), r->seg_size};
    ok = ok && send(r->sock, &answer, sizeof answer, MSG_NOSIGNAL) == (ssize_t)sizeof answer;
    for (size_t o = 0; mb.outs && o < n_out; o++)
        free((void *)mb.outs[o].data);
    for (uint32_t i = 0; mb.failed && i < n_inst; i++)
        free(mb.failed[i]);
    free(mb.outs);
    free(mb.dims);
    free(mb.failed);
    free(ins);
    free(in_dims);
    return ok;
}

/* ------------------------------------------------------------------ hand-off and completion */

static void arm_timer(runner *r, uint64_t deadline_ns)
{
    struct itimerspec at = {
        {0, 0}, {(time_t)(deadline_ns / 1000000000ull), (long)(deadline_ns % 1000000000ull)}};
    if (timerfd_settime(r->timer, TFD_TIMER_ABSTIME, &at, NULL) != 0)
        SS_WARN("Python stage runner: timerfd_settime: %s", strerror(errno));
}

/* Write r's call into its segment and send it; false (with `err`) when it cannot be written. A
 * runner that is gone is the owner's to notice: its socket hangs up. */
static bool runner_send(runner *r, char *err, size_t cap)
{
    pthread_mutex_lock(&r->mu);
    uint64_t end = write_request(r, r->cur.b);
    if (end) {
        arm_timer(r, r->cur.deadline_ns);
        wire_msg m = {1, r->cur.stage, end, r->seg_size};
        if (send(r->sock, &m, sizeof m, MSG_NOSIGNAL) != (ssize_t)sizeof m)
            shutdown(r->sock, SHUT_RDWR); /* the owner wakes and reports it */
    }
    pthread_mutex_unlock(&r->mu);
    if (!end) snprintf(err, cap, "cannot grow the shared memory of the stage runner");
    return end != 0;
}

/* The call r held is over: r takes the oldest pending call still in time (true) or becomes free;
 * calls that waited past their deadline fail. Returns the finished call in *was. */
static bool runner_next(ss_pypool *p, runner *r, ss_pycall *was)
{
    ss_pycall *late = NULL;
    bool more = false;
    uint64_t now = ss_now_ns();
    pthread_mutex_lock(&p->mu);
    *was = r->cur;
    r->cur = (ss_pycall){0};
    while (p->pending && !more && !p->stopping) {
        ss_pycall *c = p->pending;
        if (!(p->pending = c->next)) p->pend_tail = NULL;
        if (now < c->deadline_ns) {
            r->cur = *c;
            free(c);
            more = true;
        } else {
            c->next = late;
            late = c;
        }
    }
    r->busy = more;
    pthread_mutex_unlock(&p->mu);
    char msg[160];
    snprintf(msg, sizeof msg,
             "no Python stage runner came free within the request timeout of %ld ms", g_timeout_ms);
    for (ss_pycall *next; late; late = next) {
        next = late->next;
        late->done(late->ctx, 1, msg);
        free(late);
    }
    return more;
}

/* r holds a call (r->cur): send it; one that cannot be written fails and r takes the next. */
static void runner_start(ss_pypool *p, runner *r)
{
    char err[128];
    ss_pycall was;
    while (!runner_send(r, err, sizeof err)) {
        bool more = runner_next(p, r, &was);
        was.done(was.ctx, 1, err);
        if (!more) return;
    }
}

/* r's call is over (rc, err): hand r its next call first (the runner works while the answer
 * goes on), then answer. `err` must not live in r's segment. */
static void runner_finish(ss_pypool *p, runner *r, int rc, const char *err)
{
    ss_pycall was;
    if (runner_next(p, r, &was)) runner_start(p, r);
    if (was.done) was.done(was.ctx, rc, err);
}

void ss_pypool_submit(void *state, ss_plugin_batch *b, ss_pypool_done done, void *ctx)
{
    stage_state *s = state;
    ss_pypool *p = s->pool;
    ss_pycall call = {s->stage, b, done, ctx, ss_now_ns() + (uint64_t)g_timeout_ms * 1000000ull,
                      NULL};
    runner *r = NULL;
    ss_pycall *q = NULL;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; !p->stopping && !r && i < p->n_runners; i++)
        if (p->runners[i].ready && !p->runners[i].busy) r = &p->runners[i];
    if (r) {
        r->busy = true;
        r->cur = call;
    } else if (!p->stopping && (q = malloc(sizeof *q))) {
        *q = call;
        if (p->pend_tail)
            p->pend_tail->next = q;
        else
            p->pending = q;
        p->pend_tail = q;
    }
    bool stopping = p->stopping;
    pthread_mutex_unlock(&p->mu);
    if (r)
        runner_start(p, r);
    else if (!q)
        done(ctx, 1, stopping ? STOPPED : "out of memory");
}

/* ------------------------------------------------------------------ the owner thread */

/* A runner that died or hung during a call: replace it and fail the call saying what happened. */
static void runner_lost(ss_pypool *p, runner *r, bool hung)
{
    char how[64], err[512];
    pthread_mutex_lock(&r->mu);
    pid_t pid = r->pid;
    runner_reap(r, how, sizeof how);
    ss_status *e = runner_spawn(p, r);
    pthread_mutex_unlock(&r->mu);
    const char *again = e ? "; starting a new one failed" : "; a new runner was started";
    if (hung)
        snprintf(err, sizeof err,
                 "the Python function did not finish within the request timeout of %ld ms: its "
                 "stage runner (pid %d) was killed%s",
                 g_timeout_ms, (int)pid, again);
    else
        snprintf(err, sizeof err,
                 "the Python stage runner (pid %d) %s while running this request%s", (int)pid, how,
                 again);
    if (e) SS_ERROR("servable %s: %s", p->servable, e->msg);
    ss_status_free(e);
    pthread_mutex_lock(&p->mu);
    ss_pycall was = r->cur;
    r->cur = (ss_pycall){0}; /* r stays busy until the owner has it ready again */
    pthread_mutex_unlock(&p->mu);
    if (was.done) was.done(was.ctx, 1, err);
}

/* The runner went away, or broke the protocol, while it held no call (busy reserves it). */
static void runner_drop(ss_pypool *p, runner *r, const char *what)
{
    char how[64];
    pthread_mutex_lock(&r->mu);
    pid_t pid = r->pid;
    runner_reap(r, how, sizeof how);
    pthread_mutex_unlock(&r->mu);
    SS_WARN("servable %s: Python stage runner (pid %d) %s %s; starting a new one", p->servable,
            (int)pid, how, what);
}

/* Start a process for r (it has none, or one that is not ready) and wait for it; then r takes
 * pending calls. When that fails, the pending calls fail and the owner tries again in a second. */
static void runner_revive(ss_pypool *p, runner *r)
{
    pthread_mutex_lock(&r->mu);
    ss_status *e = r->pid ? NULL : runner_spawn(p, r);
    if (!e) e = runner_await_ready(p, r, ss_now_ns() + (uint64_t)START_WAIT_MS * 1000000ull);
    pthread_mutex_unlock(&r->mu);
    if (!e) {
        pthread_mutex_lock(&p->mu);
        r->ready = true;
        pthread_mutex_unlock(&p->mu);
        runner_finish(p, r, 0, NULL);
        return;
    }
    pthread_mutex_lock(&p->mu);
    ss_pycall *q = p->stopping ? NULL : p->pending;
    if (q) p->pending = p->pend_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    SS_ERROR("servable %s: %s", p->servable, e->msg);
    for (ss_pycall *next; q; q = next) {
        next = q->next;
        q->done(q->ctx, 1, e->msg);
        free(q);
    }
    ss_status_free(e);
    struct pollfd stop = {p->stop_fd, POLLIN, 0};
    poll(&stop, 1, 1000);
}

/* The timer rang: a call past its deadline means a hung runner (an earlier call's ring is not). */
static void runner_check_time(ss_pypool *p, runner *r)
{
    uint64_t rings;
    if (read(r->timer, &rings, sizeof rings) < 0) return;
    pthread_mutex_lock(&p->mu);
    bool late = r->cur.done && ss_now_ns() >= r->cur.deadline_ns;
    pthread_mutex_unlock(&p->mu);
    if (late) runner_lost(p, r, true);
}

/* One message from the runner: a Model.call (op 4), the call's answer (op 2), or its end. */
static void runner_message(ss_pypool *p, runner *r)
{
    wire_msg m;
    ssize_t got = recv(r->sock, &m, sizeof m, MSG_DONTWAIT);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) return;
    pthread_mutex_lock(&p->mu);
    bool calling = r->cur.done != NULL;
    if (!calling) r->busy = true;
    pthread_mutex_unlock(&p->mu);
    if (!calling) {
        runner_drop(p, r, got == (ssize_t)sizeof m ? "(it answered out of turn)" : "while idle");
        return;
    }
    if (got != (ssize_t)sizeof m) {
        runner_lost(p, r, false);
        return;
    }
    char err[1024] = "";
    int rc = 1;
    pthread_mutex_lock(&r->mu);
    bool ok = (m.op == 4 || m.op == 2) && seg_resize(r, m.b);
    if (ok && m.op == 4 && !(ok = serve_model_call(p, r, &m)))
        snprintf(err, sizeof err, "Model.call: the stage runner's request is malformed");
    else if (!ok)
        snprintf(err, sizeof err, "the Python stage runner answered out of turn");
    else if (m.op == 2)
        rc = read_reply(r, r->cur.b, m.a, err, sizeof err);
    pthread_mutex_unlock(&r->mu);
    if (ok && m.op == 4) return;
    if (!ok) { /* it cannot be trusted with another call: a new one */
        pthread_mutex_lock(&r->mu);
        char how[64];
        runner_reap(r, how, sizeof how);
        pthread_mutex_unlock(&r->mu);
        pthread_mutex_lock(&p->mu);
        ss_pycall was = r->cur;
        r->cur = (ss_pycall){0};
        pthread_mutex_unlock(&p->mu);
        was.done(was.ctx, 1, err);
        return;
    }
    runner_finish(p, r, rc, err);
}

static bool pool_stopping(ss_pypool *p)
{
    pthread_mutex_lock(&p->mu);
    bool stopping = p->stopping;
    pthread_mutex_unlock(&p->mu);
    return stopping;
}

/* The owner: blocks on the runner's socket, its timer and the pool's stop, nothing else. */
static void *runner_owner(void *arg)
{
    runner *r = arg;
    ss_pypool *p = r->pool;
    pthread_setname_np(pthread_self(), "ss-pyrunner");
    while (!pool_stopping(p)) {
        if (!r->ready) {
            runner_revive(p, r);
            continue;
        }
        struct pollfd fds[3] = {
            {r->sock, POLLIN, 0}, {r->timer, POLLIN, 0}, {p->stop_fd, POLLIN, 0}};
        if (poll(fds, 3, -1) < 0 || fds[2].revents) continue;
        if (fds[1].revents) runner_check_time(p, r);
        if (fds[0].revents) runner_message(p, r);
    }
    pthread_mutex_lock(&p->mu);
    ss_pycall was = r->cur;
    r->cur = (ss_pycall){0};
    r->busy = true;
    pthread_mutex_unlock(&p->mu);
    if (was.done) was.done(was.ctx, 1, STOPPED);
    return NULL;
}

void *ss_pypool_stage_state(ss_pypool *p, uint32_t stage)
{
    return stage < p->n_stages ? &p->states[stage] : NULL;
}
