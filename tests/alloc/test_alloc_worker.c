/*
 * A predict request's whole path through the serving registry and the worker's event loop under
 * allocation failure: the registry's checks, the hand-over to the loop, batching, the PREDICT
 * sent over a real link to an agent, the RESULT read back, the reply. The agent is a fake one
 * (this executable again, started with --fake-agent, so its allocations are its own process's):
 * it answers y = -x and registers again whenever the worker drops it.
 *
 * Every run must end with the right answer or an error reply (out of memory, or the group lost
 * and not ready yet): never a hang, a crash or a wrong answer. Only the transient mode runs: a
 * persistent failure leaves the worker unable to take its agent back within a run. Threads
 * allocate at the same time (loop, handshakes, heartbeats), so leaks are left to LeakSanitizer
 * in the -DSS_SANITIZE=ON build.
 */
#include "allocfail.h"
#include "check.h"

#include "fake_agent.h"
#include "shardserve/worker.h"

#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N FAKE_AGENT_N

/* ------------------------------------------------------------------ the test */

typedef struct {
    ss_worker_set *set;
    ss_predict_handler h;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool answered;
    ss_predict_reply *reply;
} path_case;

static void on_done(void *ctx, ss_predict_reply *reply)
{
    path_case *p = ctx;
    pthread_mutex_lock(&p->mu);
    p->reply = reply;
    p->answered = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool wait_ready(path_case *p, int ms)
{
    for (int waited = 0; waited < ms; waited += 5) {
        if (ss_worker_set_ready(p->set)) return true;
        sleep_ms(5);
    }
    return false;
}

static ss_status *run_path(void *ctx)
{
    path_case *p = ctx;
    if (!wait_ready(p, 5000))
        return ss_errf(SS_ERR_UNAVAILABLE, "not ready: the agent did not come back");
    ss_predict_request *req = ss_predict_request_new("neg", "predict", 0);
    ss_serving_instance *inst = req ? ss_predict_request_add_instance(req) : NULL;
    ss_tensor x = {0};
    int64_t dims[1] = {N};
    ss_status *st =
        inst ? ss_tensor_alloc(&x, SS_DT_FLOAT32, 1, dims) : ss_errf(SS_ERR_NOMEM, "request");
    if (!st) {
        for (int i = 0; i < N; i++)
            ((float *)x.data)[i] = (float)i + 1;
        st = ss_serving_instance_put(inst, "x", &x, false);
    }
    if (st) {
        ss_tensor_free(&x);
        ss_predict_request_free(req);
        return st;
    }
    p->answered = false;
    p->reply = NULL;
    p->h.predict(p->h.ctx, req, on_done, p);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 20;
    pthread_mutex_lock(&p->mu);
    while (!p->answered && pthread_cond_timedwait(&p->cv, &p->mu, &dl) == 0) {
    }
    bool answered = p->answered;
    pthread_mutex_unlock(&p->mu);
    if (!answered) {
        fprintf(stderr, "the request was never answered (done() not called within 20 s)\n");
        abort(); /* the request cannot be freed while the worker may still use it */
    }
    ss_predict_request_free(req);
    ss_predict_reply *r = p->reply;
    if (r && r->error_count == 0) return NULL; /* verify() checks the values */
    const char *msg = !r                     ? "Predict failed (no reply: out of memory)"
                      : r->errors[0].message ? r->errors[0].message
                                             : "Predict failed";
    st = strstr(msg, "out of memory") ? ss_errf(SS_ERR_NOMEM, "%s", msg)
                                      : ss_errf(SS_ERR_UNAVAILABLE, "%s", msg);
    ss_predict_reply_free(r);
    p->reply = NULL;
    return st;
}

static bool verify_path(void *ctx)
{
    path_case *p = ctx;
    ss_predict_reply *r = p->reply;
    p->reply = NULL;
    const ss_serving_item *y =
        r && r->count == 1 ? ss_serving_instance_find(&r->instances[0], "y") : NULL;
    bool ok = y && y->tensor.dtype == SS_DT_FLOAT32 && ss_tensor_numel(&y->tensor) == N;
    for (int i = 0; ok && i < N; i++)
        ok = ((const float *)y->tensor.data)[i] == -((float)i + 1);
    ss_predict_reply_free(r);
    return ok;
}

static void predict_path(void)
{
    char dir[] = "/tmp/ss-alloc-worker-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char table[512];
    fake_agent_servable(dir, "neg", table, sizeof table);
    path_case p = {.set = ss_worker_set_new()};
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    ss_worker *w = NULL;
    ss_worker_options opt = {.servable_dir = dir,
                             .servable = "neg",
                             .rank_table = table,
                             .distributed_address = "127.0.0.1:0",
                             .request_timeout_ms = 10000,
                             .heartbeat_timeout_ms = 60000};
    CHECK_OK(ss_worker_set_add(p.set, &opt, &w));
    if (!w) return;
    p.h = ss_worker_set_handler(p.set);
    pid_t agent = fake_agent_spawn("echo", ss_worker_address(w));
    CHECK(agent > 0);
    CHECK_OK(ss_worker_wait_ready(w));
    CHECK_OK(run_path(&p));
    CHECK(verify_path(&p));
    allocfail_case c = {
        .name = "predict through the registry, the worker's loop and the link",
        .ctx = &p,
        .run = run_path,
        .verify = verify_path,
        .error_needle =
            "not ready|worker unavailable|Servable stopped|Predict failed|agent did not",
        .skip_live_check = true,
        .transient_only = true,
        .max_runs = 2000};
    long allocs = 0;
    CHECK(allocfail_loop(&c, &allocs) == 0);
    CHECK_MSG(allocs > 10, "the clean run made %ld allocations", allocs);
    ss_worker_set_free(p.set); /* tells the agent to exit */
    int status = 0;
    if (agent > 0 && waitpid(agent, &status, 0) == agent)
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fake agent status %d", status);
    pthread_mutex_destroy(&p.mu);
    pthread_cond_destroy(&p.cv);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

static const test_case cases_[] = {{"predict_path", predict_path}};

int main(int argc, char **argv)
{
    test_argc = argc;
    test_argv = argv;
    if (argc == 4 && !strcmp(test_argv[1], "--fake-agent"))
        return fake_agent_main(test_argv[2], test_argv[3]);
    signal(SIGPIPE, SIG_IGN);
    return run_tests(cases_, 1) ? 1 : 0;
}
