/*
 * The worker's event loop against fake agents in their own processes (fake_agent.h): every way a
 * request can end is bounded and answered exactly once —
 *   - a model that never answers: the request timeout answers it (WORKER_UNAVAILABLE);
 *   - an agent that stops answering heartbeats: the version goes not-ready, new requests are
 *     refused at once, and the agent is dropped (it registers again and serving resumes);
 *   - an agent that dies: not ready, and ready again when a new agent registers;
 *   - the queue limit: requests past --max-enqueued are refused with MindSpore's text;
 *   - stopping the worker: every queued and in-flight request is answered;
 * and one request at a time wakes the loop thread once (for the agent's answer), not also for the
 * submit: the submitting thread sends it to the agent itself.
 */
#include "check.h"
#include "fake_agent.h"
#include "shardserve/worker.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

/* ------------------------------------------------------------------ requests */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int answered;
    int64_t code[64];
    char msg[64][512];
    bool ok[64];
} answers;

typedef struct {
    answers *a;
    int slot;
    ss_predict_request *req;
} pending;

static void on_done(void *ctx, ss_predict_reply *r)
{
    pending *p = ctx;
    answers *a = p->a;
    pthread_mutex_lock(&a->mu);
    bool ok = r && r->error_count == 0 && r->count == 1;
    a->ok[p->slot] = ok;
    a->code[p->slot] = r && r->error_count ? r->errors[0].code : 0;
    snprintf(a->msg[p->slot], sizeof a->msg[0], "%s",
             r && r->error_count && r->errors[0].message ? r->errors[0].message : "");
    a->answered++;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    ss_predict_reply_free(r);
}

static pending *submit(ss_worker_set *set, answers *a, int slot)
{
    pending *p = calloc(1, sizeof *p);
    p->a = a;
    p->slot = slot;
    p->req = ss_predict_request_new("neg", "predict", 0);
    ss_tensor x;
    int64_t dims[1] = {FAKE_AGENT_N};
    CHECK_OK(ss_tensor_alloc(&x, SS_DT_FLOAT32, 1, dims));
    for (int i = 0; i < FAKE_AGENT_N; i++)
        ((float *)x.data)[i] = (float)(slot + i);
    CHECK_OK(ss_serving_instance_put(ss_predict_request_add_instance(p->req), "x", &x, false));
    ss_predict_handler h = ss_worker_set_handler(set);
    h.predict(h.ctx, p->req, on_done, p);
    return p;
}

/* Wait (bounded) until `count` requests were answered; false on timeout. */
static bool wait_answers(answers *a, int count, int ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&a->mu);
    while (a->answered < count && pthread_cond_timedwait(&a->cv, &a->mu, &dl) == 0) {
    }
    bool done = a->answered >= count;
    pthread_mutex_unlock(&a->mu);
    return done;
}

static bool wait_ready(ss_worker_set *set, bool want, int ms)
{
    for (int waited = 0; waited <= ms; waited += 10) {
        if (ss_worker_set_ready(set) == want) return true;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return false;
}

static void free_pending(pending **ps, int n)
{
    for (int i = 0; i < n; i++) {
        if (!ps[i]) continue;
        ss_predict_request_free(ps[i]->req);
        free(ps[i]);
    }
}

/* ------------------------------------------------------------------ a worker and its agent */

typedef struct {
    char dir[64];
    ss_worker_set *set;
    ss_worker *w;
    pid_t agent;
    answers a;
} rig;

static void rig_start(rig *r, const char *mode, ss_worker_options opt)
{
    memset(r, 0, sizeof *r);
    snprintf(r->dir, sizeof r->dir, "/tmp/ss-worker-loop-XXXXXX");
    CHECK(mkdtemp(r->dir) != NULL);
    char table[512];
    fake_agent_servable(r->dir, "neg", table, sizeof table);
    pthread_mutex_init(&r->a.mu, NULL);
    pthread_cond_init(&r->a.cv, NULL);
    r->set = ss_worker_set_new();
    opt.servable_dir = r->dir;
    opt.servable = "neg";
    opt.rank_table = table;
    opt.distributed_address = "127.0.0.1:0";
    CHECK_OK(ss_worker_set_add(r->set, &opt, &r->w));
    r->agent = r->w ? fake_agent_spawn(mode, ss_worker_address(r->w)) : -1;
    CHECK(r->agent > 0);
    if (r->w) CHECK_OK(ss_worker_wait_ready(r->w));
}

static void rig_stop(rig *r)
{
    ss_worker_set_free(r->set); /* the agent gets EXIT (or sees the link close) */
    if (r->agent > 0) {
        kill(r->agent, SIGKILL); /* a mute agent does not read its EXIT */
        waitpid(r->agent, NULL, 0);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", r->dir);
    CHECK(system(cmd) == 0);
}

/* ------------------------------------------------------------------ cases */

static void request_timeout_answers_a_hung_model(void)
{
    rig r;
    /* heartbeats 1 s apart: the loop thread sleeps up to 1 s, and the request, sent to the
     * agent by the submitting thread itself, must cut that sleep short to meet its deadline */
    rig_start(&r, "silent",
              (ss_worker_options){
                  .request_timeout_ms = 300, .heartbeat_timeout_ms = 20000, .wait_agents_s = 30});
    usleep(20000); /* let the loop thread fall asleep */
    uint64_t t0 = ss_now_ns();
    pending *p = submit(r.set, &r.a, 0);
    CHECK(wait_answers(&r.a, 1, 3000));
    double ms = (double)(ss_now_ns() - t0) / 1e6;
    CHECK_MSG(ms >= 250 && ms < 800, "answered after %.0f ms, the timeout is 300", ms);
    CHECK(!r.a.ok[0] && r.a.code[0] == SS_SERVING_WORKER_UNAVAILABLE);
    CHECK_MSG(strstr(r.a.msg[0], "within the request timeout of 300 ms"), "%s", r.a.msg[0]);
    rig_stop(&r);
    free_pending(&p, 1);
}

static void heartbeat_silence_drops_the_rank(void)
{
    rig r;
    rig_start(&r, "mute", (ss_worker_options){.heartbeat_timeout_ms = 400, .wait_agents_s = 30});
    CHECK(ss_worker_set_ready(r.set));
    uint64_t t0 = ss_now_ns();
    CHECK(wait_ready(r.set, false, 3000));
    double ms = (double)(ss_now_ns() - t0) / 1e6;
    CHECK_MSG(ms < 2000, "not ready after %.0f ms, the heartbeat bound is 400", ms);
    pending *p = submit(r.set, &r.a, 0); /* refused at once, with the reason */
    CHECK(wait_answers(&r.a, 1, 500));
    CHECK(r.a.code[0] == SS_SERVING_SERVABLE_UNAVAILABLE);
    CHECK_MSG(strstr(r.a.msg[0], "no heartbeat answer for 400 ms"), "%s", r.a.msg[0]);
    rig_stop(&r);
    free_pending(&p, 1);
}

static void a_dead_agent_is_replaced(void)
{
    rig r;
    rig_start(&r, "echo", (ss_worker_options){.wait_agents_s = 30});
    pending *ps[2] = {submit(r.set, &r.a, 0), NULL};
    CHECK(wait_answers(&r.a, 1, 3000) && r.a.ok[0]);
    kill(r.agent, SIGKILL);
    waitpid(r.agent, NULL, 0);
    CHECK(wait_ready(r.set, false, 3000));
    r.agent = fake_agent_spawn("echo", ss_worker_address(r.w));
    CHECK(wait_ready(r.set, true, 10000));
    ps[1] = submit(r.set, &r.a, 1);
    CHECK(wait_answers(&r.a, 2, 3000) && r.a.ok[1]);
    rig_stop(&r);
    free_pending(ps, 2);
}

static void the_queue_limit_refuses_more(void)
{
    rig r;
    rig_start(
        &r, "silent",
        (ss_worker_options){.max_enqueued = 2, .request_timeout_ms = 60000, .wait_agents_s = 30});
    pending *ps[3];
    for (int i = 0; i < 3; i++)
        ps[i] = submit(r.set, &r.a, i);
    CHECK(wait_answers(&r.a, 1, 1000)); /* only the third, at once */
    CHECK(r.a.code[2] == SS_SERVING_FAILED);
    CHECK_MSG(strstr(r.a.msg[2], "enqueued requests count exceeds the limit 2"), "%s", r.a.msg[2]);
    uint64_t t0 = ss_now_ns();
    rig_stop(&r); /* the two held by the hung model are answered by the stop, not the timeout */
    CHECK(r.a.answered == 3);
    CHECK_MSG((ss_now_ns() - t0) / 1000000 < 10000, "stop took %llu ms",
              (unsigned long long)((ss_now_ns() - t0) / 1000000));
    for (int i = 0; i < 2; i++)
        CHECK_MSG(strstr(r.a.msg[i], "shutting down") &&
                      r.a.code[i] == SS_SERVING_WORKER_UNAVAILABLE,
                  "%s", r.a.msg[i]);
    free_pending(ps, 3);
}

/* The loop thread's voluntary context switches so far (it sleeps in epoll_wait between events),
 * found by its name among this process's threads; -1 if not found. */
static long loop_thread_sleeps(void)
{
    DIR *d = opendir("/proc/self/task");
    long found = -1;
    for (struct dirent *e; d && found < 0 && (e = readdir(d));) {
        char path[300], buf[4096];
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        bool loop = f && fgets(buf, sizeof buf, f) && !strncmp(buf, "ss-worker-loop", 14);
        if (f) fclose(f);
        if (!loop) continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
        if (!(f = fopen(path, "r"))) continue;
        while (fgets(buf, sizeof buf, f))
            if (sscanf(buf, "voluntary_ctxt_switches: %ld", &found) == 1) break;
        fclose(f);
    }
    if (d) closedir(d);
    return found;
}

/* Requests one after another with heartbeats 1 s apart: each submit finds the loop thread asleep
 * and sends the request itself; the loop thread then wakes for the agent's answer, and for
 * nothing else (a submit used to wake it too, taking its own unchanged next heartbeat for a
 * sooner timer: the sleep's timeout is rounded up to whole ms). */
static void a_submit_does_not_wake_the_loop_thread(void)
{
    rig r;
    rig_start(&r, "echo",
              (ss_worker_options){.request_timeout_ms = 10000,
                                  .heartbeat_ms = 1000,
                                  .heartbeat_timeout_ms = 20000,
                                  .wait_agents_s = 30});
    enum { N = 300 };
    pending *ps[N] = {0};
    for (int i = 0; i < 20; i++) { /* warm up: connections, the first plan */
        ps[0] = submit(r.set, &r.a, 0);
        CHECK(wait_answers(&r.a, i + 1, 5000));
        free_pending(ps, 1);
        ps[0] = NULL;
    }
    long before = loop_thread_sleeps();
    CHECK(before >= 0);
    int done = 0;
    for (int i = 0; i < N && !check_failures; i++) {
        ps[i] = submit(r.set, &r.a, i % 64);
        done += wait_answers(&r.a, 21 + i, 5000);
    }
    long sleeps = loop_thread_sleeps() - before;
    CHECK(done == N);
    /* ~1 per request: the answer (plus a heartbeat or two, and now and then a hand-over of the
     * loop); 2 per request when every submit woke it as well */
    CHECK_MSG(sleeps < N * 3 / 2, "the loop thread slept %ld times for %d requests", sleeps, N);
    printf("     the loop thread slept %ld times for %d requests\n", sleeps, N);
    rig_stop(&r);
    free_pending(ps, N);
}

static const test_case cases_[] = {
    {"request_timeout_answers_a_hung_model", request_timeout_answers_a_hung_model},
    {"heartbeat_silence_drops_the_rank", heartbeat_silence_drops_the_rank},
    {"a_dead_agent_is_replaced", a_dead_agent_is_replaced},
    {"the_queue_limit_refuses_more", the_queue_limit_refuses_more},
    {"a_submit_does_not_wake_the_loop_thread", a_submit_does_not_wake_the_loop_thread},
};

int main(int argc, char **argv)
{
    test_argc = argc;
    test_argv = argv;
    if (argc == 4 && !strcmp(test_argv[1], "--fake-agent"))
        return fake_agent_main(test_argv[2], test_argv[3]);
    signal(SIGPIPE, SIG_IGN);
    return run_tests(cases_, (int)(sizeof cases_ / sizeof *cases_)) ? 1 : 0;
}
