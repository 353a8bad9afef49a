/*
 * libshardserve-client against a real test server (ss_test_server, started here on 127.0.0.1 and
 * stopped at exit, also when a check fails; it dies with us if we crash): every dtype as scalar,
 * 1-D and 2-D, strings and bytes, per-instance and whole-request errors with MindSpore's texts,
 * async calls, deadlines, size limits, an unreachable server and argument errors; and the same
 * library over the Open Inference Protocol (KServe gRPC, REST JSON, REST binary).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include "check.h"
#include "shardserve/client.h"

static pid_t server_pid;
static char address[64], rest_address[64];

static void stop_server(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        int status;
        waitpid(server_pid, &status, 0);
        server_pid = 0;
    }
}

static int start_server(void)
{
    const char *bin = getenv("SS_TEST_SERVER");
    if (!bin) {
        fprintf(stderr, "SS_TEST_SERVER is not set\n");
        return -1;
    }
    int fds[2];
    if (pipe(fds) != 0) return -1;
    server_pid = fork();
    if (server_pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        execl(bin, bin, "--grpc", "127.0.0.1:0", "--rest", "127.0.0.1:0", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    atexit(stop_server);
    FILE *out = fdopen(fds[0], "r");
    char line[128];
    int port = 0, rest_port = 0;
    while (fgets(line, sizeof line, out)) {
        if (sscanf(line, "GRPC_PORT=%d", &port) == 1) continue;
        if (sscanf(line, "REST_PORT=%d", &rest_port) == 1) continue;
        if (strncmp(line, "READY", 5) == 0) break;
    }
    fclose(out);
    if (port <= 0) return -1;
    snprintf(address, sizeof address, "127.0.0.1:%d", port);
    snprintf(rest_address, sizeof rest_address, "127.0.0.1:%d", rest_port);
    return 0;
}

static ss_client *connect_client(int timeout_ms, int max_mb)
{
    ss_client *c = NULL;
    ss_client_options o = {.address = address, .timeout_ms = timeout_ms, .max_msg_mb = max_mb};
    ss_client_error *e = ss_client_connect(&o, &c);
    CHECK_MSG(!e, "connect: %s", e ? e->msg : "");
    ss_client_error_free(e);
    return c;
}

#define CHECK_NOERR(expr)                                                                          \
    do {                                                                                           \
        ss_client_error *e_ = (expr);                                                              \
        CHECK_MSG(!e_, "%s: %s error %lld: %s", #expr, e_ ? ss_client_errkind_name(e_->kind) : "", \
                  e_ ? (long long)e_->code : 0LL, e_ ? e_->msg : "");                              \
        ss_client_error_free(e_);                                                                  \
    } while (0)

static void add_float32(void)
{
    ss_client *c = connect_client(10000, 0);
    ss_client_request *r = ss_client_request_new("add", "add_common", 0);
    float x1[6] = {1, 2, 3, 4, 5, 6}, x2[6] = {10, 20, 30, 40, 50, 60};
    int64_t dims[2] = {2, 3};
    size_t i = ss_client_request_add_instance(r);
    CHECK_NOERR(
        ss_client_request_set_tensor(r, i, "x1", SS_CLIENT_FLOAT32, dims, 2, x1, sizeof x1));
    CHECK_NOERR(
        ss_client_request_set_tensor(r, i, "x2", SS_CLIENT_FLOAT32, dims, 2, x2, sizeof x2));
    ss_client_reply *reply = NULL;
    CHECK_NOERR(ss_client_infer(c, r, &reply));
    ss_client_tensor y;
    CHECK(reply && ss_client_reply_count(reply) == 1 && !ss_client_reply_error(reply, 0, NULL));
    if (reply && ss_client_reply_find(reply, 0, "y", &y)) {
        CHECK(y.dtype == SS_CLIENT_FLOAT32 && y.ndim == 2 && y.dims[0] == 2 && y.dims[1] == 3);
        CHECK(y.nbytes == sizeof x1);
        for (int k = 0; k < 6 && y.nbytes == sizeof x1; k++)
            CHECK_NEAR(((const float *)y.data)[k], x1[k] + x2[k], 0);
    } else {
        CHECK_MSG(0, "no output y");
    }
    ss_client_reply_free(reply);
    ss_client_request_free(r);
    ss_client_close(c);
}

static void every_dtype(void)
{
    ss_client *c = connect_client(10000, 0);
    for (int dt = SS_CLIENT_BOOL; dt <= SS_CLIENT_FLOAT64; dt++) {
        size_t es = ss_client_dtype_size((ss_client_dtype)dt);
        int64_t shapes[3][2] = {{0, 0}, {3, 0}, {2, 3}};
        int ranks[3] = {0, 1, 2};
        for (int s = 0; s < 3; s++) {
            size_t n = s == 0 ? 1 : s == 1 ? 3 : 6;
            unsigned char data[6 * 8];
            for (size_t b = 0; b < n * es; b++)
                data[b] = dt == SS_CLIENT_BOOL ? (b & 1) : (unsigned char)(b * 7 + 1);
            ss_client_request *r = ss_client_request_new("echo", "echo", 0);
            size_t i = ss_client_request_add_instance(r);
            CHECK_NOERR(ss_client_request_set_tensor(r, i, "v", (ss_client_dtype)dt, shapes[s],
                                                     ranks[s], data, n * es));
            ss_client_reply *reply = NULL;
            CHECK_NOERR(ss_client_infer(c, r, &reply));
            ss_client_tensor t;
            bool ok = reply && ss_client_reply_find(reply, 0, "v", &t) && (int)t.dtype == dt &&
                      t.ndim == ranks[s] && t.nbytes == n * es && memcmp(t.data, data, n * es) == 0;
            for (int d = 0; ok && d < ranks[s]; d++)
                ok = t.dims[d] == shapes[s][d];
            CHECK_MSG(ok, "%s rank %d round trip", ss_client_dtype_name((ss_client_dtype)dt),
                      ranks[s]);
            ss_client_reply_free(reply);
            ss_client_request_free(r);
        }
    }
    ss_client_close(c);
}

static void strings_and_bytes(void)
{
    ss_client *c = connect_client(10000, 0);
    ss_client_request *r = ss_client_request_new("echo", "echo", 0);
    size_t i = ss_client_request_add_instance(r);
    const char bytes[4] = {0, 1, (char)0xff, 0};
    CHECK_NOERR(ss_client_request_set_string(r, i, "s", "h\xc3\xa9llo", 6));
    CHECK_NOERR(ss_client_request_set_bytes(r, i, "b", bytes, sizeof bytes));
    ss_client_reply *reply = NULL;
    CHECK_NOERR(ss_client_infer(c, r, &reply));
    ss_client_tensor s, b;
    size_t len = 0;
    CHECK(reply && ss_client_reply_find(reply, 0, "s", &s) && s.dtype == SS_CLIENT_STRING &&
          s.ndim == 0 && s.nstrings == 1);
    const void *p = reply ? ss_client_tensor_string(&s, 0, &len) : NULL;
    CHECK(p && len == 6 && memcmp(p, "h\xc3\xa9llo", 6) == 0);
    CHECK(reply && ss_client_reply_find(reply, 0, "b", &b) && b.dtype == SS_CLIENT_BYTES);
    p = reply ? ss_client_tensor_string(&b, 0, &len) : NULL;
    CHECK(p && len == 4 && memcmp(p, bytes, 4) == 0);
    ss_client_reply_free(reply);
    ss_client_request_free(r);
    ss_client_close(c);
}

static ss_client_request *add_request(const char *servable, const char *method, uint64_t version,
                                      int instances, int bad_instance)
{
    ss_client_request *r = ss_client_request_new(servable, method, version);
    float x[2] = {1, 2};
    int32_t xi[2] = {1, 2};
    int64_t dims[1] = {2};
    for (int k = 0; k < instances; k++) {
        size_t i = ss_client_request_add_instance(r);
        if (k == bad_instance)
            CHECK_NOERR(ss_client_request_set_tensor(r, i, "x1", SS_CLIENT_INT32, dims, 1, xi, 8));
        else
            CHECK_NOERR(ss_client_request_set_tensor(r, i, "x1", SS_CLIENT_FLOAT32, dims, 1, x, 8));
        CHECK_NOERR(ss_client_request_set_tensor(r, i, "x2", SS_CLIENT_FLOAT32, dims, 1, x, 8));
    }
    return r;
}

static void expect_server_error(ss_client *c, ss_client_request *r, int64_t code, const char *msg)
{
    ss_client_reply *reply = NULL;
    ss_client_error *e = ss_client_infer(c, r, &reply);
    CHECK_MSG(e && e->kind == SS_CLIENT_ERR_SERVER && e->code == code && strcmp(e->msg, msg) == 0,
              "want server error %lld \"%s\", got %s %lld \"%s\"", (long long)code, msg,
              e ? ss_client_errkind_name(e->kind) : "success", e ? (long long)e->code : 0LL,
              e ? e->msg : "");
    CHECK(reply == NULL);
    ss_client_error_free(e);
    ss_client_request_free(r);
}

static void errors(void)
{
    ss_client *c = connect_client(10000, 0);
    expect_server_error(c, add_request("nope", "add_common", 0, 1, -1), 2,
                        "Request servable(nope) method(add_common), servable is not available");
    expect_server_error(c, add_request("add", "add_common", 9, 1, -1), 2,
                        "Request servable(add) method(add_common) version(9), servable is not "
                        "available");
    expect_server_error(c, add_request("add", "nope", 0, 1, -1), 2,
                        "Request servable(add) method(nope), method is not available");
    expect_server_error(c, add_request("add", "add_common", 0, 0, -1), 2,
                        "Instances count of request cannot be 0, servable: add, method: "
                        "add_common");
    expect_server_error(c, add_request("error", "fail", 0, 1, -1), 3, "fixed failure");
    ss_client_request *r = ss_client_request_new("add", "add_common", 0);
    float x = 1;
    size_t i = ss_client_request_add_instance(r);
    CHECK_NOERR(ss_client_request_set_tensor(r, i, "x1", SS_CLIENT_FLOAT32, NULL, 0, &x, 4));
    expect_server_error(c, r, 2,
                        "Cannot find input x2 in instance input , servable add, method add_common");

    /* mixed: instance 1 fails, 0 and 2 succeed */
    r = add_request("add", "add_common", 0, 3, 1);
    ss_client_reply *reply = NULL;
    CHECK_NOERR(ss_client_infer(c, r, &reply));
    int64_t code = 0;
    CHECK(reply && ss_client_reply_count(reply) == 3);
    CHECK(reply && !ss_client_reply_error(reply, 0, NULL) &&
          !ss_client_reply_error(reply, 2, NULL));
    const char *m = reply ? ss_client_reply_error(reply, 1, &code) : NULL;
    CHECK(m && code == 2 &&
          strcmp(m, "Given model input 0 data type kMSI_Int32 not match the data type "
                    "kMSI_Float32 defined in model") == 0);
    CHECK(reply && ss_client_reply_output_count(reply, 1) == 0 &&
          ss_client_reply_output_count(reply, 0) == 2);
    ss_client_reply_free(reply);
    ss_client_request_free(r);
    ss_client_close(c);
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, ok;
} async_state;

typedef struct {
    async_state *state;
    float want;
} async_call;

static void on_reply(void *ctx, ss_client_error *err, ss_client_reply *reply)
{
    async_call *call = ctx;
    ss_client_tensor y;
    bool ok = !err && ss_client_reply_find(reply, 0, "y", &y) && y.nbytes == 4 &&
              *(const float *)y.data == call->want;
    ss_client_error_free(err);
    ss_client_reply_free(reply);
    pthread_mutex_lock(&call->state->mu);
    call->state->done++;
    call->state->ok += ok;
    pthread_cond_signal(&call->state->cv);
    pthread_mutex_unlock(&call->state->mu);
}

static void async_calls(void)
{
    enum { N = 100 };
    ss_client *c = connect_client(10000, 0);
    async_state st = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    static async_call calls[N];
    for (int k = 0; k < N; k++) {
        ss_client_request *r = ss_client_request_new("add", "add_common", 0);
        float a = (float)k, b = 0.5f;
        size_t i = ss_client_request_add_instance(r);
        CHECK_NOERR(ss_client_request_set_tensor(r, i, "x1", SS_CLIENT_FLOAT32, NULL, 0, &a, 4));
        CHECK_NOERR(ss_client_request_set_tensor(r, i, "x2", SS_CLIENT_FLOAT32, NULL, 0, &b, 4));
        calls[k] = (async_call){&st, a + b};
        CHECK_NOERR(ss_client_infer_async(c, r, on_reply, &calls[k]));
        ss_client_request_free(r); /* serialized already */
    }
    pthread_mutex_lock(&st.mu);
    while (st.done < N)
        pthread_cond_wait(&st.cv, &st.mu);
    pthread_mutex_unlock(&st.mu);
    CHECK_MSG(st.ok == N, "%d of %d async replies right", st.ok, N);

    /* close() with slow calls outstanding: each callback still runs exactly once */
    async_state slow = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    async_call sc = {&slow, -1};
    ss_client_request *r = ss_client_request_new("slow", "sleep", 0);
    ss_client_request_add_instance(r);
    CHECK_NOERR(ss_client_request_set_string(r, 0, "s", "x", 1));
    for (int k = 0; k < 3; k++)
        CHECK_NOERR(ss_client_infer_async(c, r, on_reply, &sc));
    ss_client_request_free(r);
    ss_client_close(c);
    CHECK_MSG(slow.done == 3, "%d callbacks after close", slow.done);
}

static void transport_errors(void)
{
    /* deadline: the slow servable takes 300 ms */
    ss_client *c = connect_client(50, 0);
    ss_client_request *r = ss_client_request_new("slow", "sleep", 0);
    ss_client_request_add_instance(r);
    CHECK_NOERR(ss_client_request_set_string(r, 0, "s", "x", 1));
    ss_client_reply *reply = NULL;
    ss_client_error *e = ss_client_infer(c, r, &reply);
    CHECK_MSG(e && e->kind == SS_CLIENT_ERR_TRANSPORT && e->code == 4, "deadline: %s",
              e ? e->msg : "success");
    ss_client_error_free(e);
    ss_client_request_free(r);
    ss_client_close(c);

    /* the client's own send limit */
    c = connect_client(10000, 1);
    static float big[300000];
    int64_t dims[1] = {300000};
    r = ss_client_request_new("echo", "echo", 0);
    ss_client_request_add_instance(r);
    CHECK_NOERR(
        ss_client_request_set_tensor(r, 0, "v", SS_CLIENT_FLOAT32, dims, 1, big, sizeof big));
    e = ss_client_infer(c, r, &reply);
    CHECK_MSG(e && e->kind == SS_CLIENT_ERR_TRANSPORT && e->code == 8, "oversize: %s",
              e ? e->msg : "success");
    ss_client_error_free(e);
    ss_client_request_free(r);
    ss_client_close(c);

    /* nobody listening */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    bind(s, (struct sockaddr *)&sa, sizeof sa);
    getsockname(s, (struct sockaddr *)&sa, &sl);
    close(s);
    char dead[64];
    snprintf(dead, sizeof dead, "127.0.0.1:%d", ntohs(sa.sin_port));
    ss_client_options o = {.address = dead, .timeout_ms = 5000};
    CHECK_NOERR(ss_client_connect(&o, &c));
    r = add_request("add", "add_common", 0, 1, -1);
    e = ss_client_infer(c, r, &reply);
    CHECK_MSG(e && e->kind == SS_CLIENT_ERR_TRANSPORT && e->code == 14, "unavailable: %s",
              e ? e->msg : "success");
    ss_client_error_free(e);
    ss_client_request_free(r);
    ss_client_close(c);
}

static void argument_errors(void)
{
    ss_client_request *r = ss_client_request_new("add", "add_common", 0);
    float x[2] = {1, 2};
    int64_t dims[1] = {3};
    ss_client_error *e = ss_client_request_set_tensor(r, 0, "x", SS_CLIENT_FLOAT32, dims, 1, x, 8);
    CHECK(e && e->kind == SS_CLIENT_ERR_ARGUMENT); /* no instance 0 yet */
    ss_client_error_free(e);
    ss_client_request_add_instance(r);
    e = ss_client_request_set_tensor(r, 0, "x", SS_CLIENT_FLOAT32, dims, 1, x, 8);
    CHECK(e && e->kind == SS_CLIENT_ERR_ARGUMENT && strstr(e->msg, "need 12"));
    ss_client_error_free(e);
    e = ss_client_request_set_tensor(r, 0, "x", SS_CLIENT_STRING, dims, 1, x, 8);
    CHECK(e && e->kind == SS_CLIENT_ERR_ARGUMENT);
    ss_client_error_free(e);
    ss_client_request_free(r);
    ss_client *c = NULL;
    ss_client_options o = {.address = ""};
    e = ss_client_connect(&o, &c);
    CHECK(e && e->kind == SS_CLIENT_ERR_ARGUMENT && c == NULL);
    ss_client_error_free(e);
}

/* The same requests over each KServe protocol: two instances of add (one KServe request each),
 * a BYTES echo, an unknown model, and async refused. */
static void kserve_add(ss_client *c)
{
    ss_client_request *r = ss_client_request_new("add", "add_common", 1);
    float x1[2][3] = {{1, 2, 3}, {4, 5, 6}}, x2[3] = {0.5f, 0.25f, -1};
    int64_t dims[2] = {1, 3};
    for (int k = 0; k < 2; k++) {
        size_t i = ss_client_request_add_instance(r);
        CHECK_NOERR(ss_client_request_set_tensor(r, i, "x1", SS_CLIENT_FLOAT32, dims, 2, x1[k],
                                                 sizeof x1[k]));
        CHECK_NOERR(
            ss_client_request_set_tensor(r, i, "x2", SS_CLIENT_FLOAT32, dims, 2, x2, sizeof x2));
    }
    ss_client_reply *reply = NULL;
    CHECK_NOERR(ss_client_infer(c, r, &reply));
    CHECK(ss_client_reply_count(reply) == 2);
    for (size_t k = 0; k < ss_client_reply_count(reply); k++) {
        ss_client_tensor y, v;
        CHECK(ss_client_reply_find(reply, k, "y", &y) && y.nbytes == 12 && y.ndim == 2);
        for (int j = 0; y.nbytes == 12 && j < 3; j++)
            CHECK_NEAR(((const float *)y.data)[j], x1[k][j] + x2[j], 0);
        CHECK(ss_client_reply_find(reply, k, "version", &v) && v.dtype == SS_CLIENT_INT64 &&
              v.nbytes == 8 && *(const int64_t *)v.data == 1);
    }
    ss_client_reply_free(reply);
    ss_client_request_free(r);
}

static void kserve_bytes_and_errors(ss_client *c, ss_client_protocol p)
{
    ss_client_request *r = ss_client_request_new("typed", "bytes", 0);
    size_t i = ss_client_request_add_instance(r);
    CHECK_NOERR(ss_client_request_set_bytes(r, i, "x", "a\"b\\c", 5));
    ss_client_reply *reply = NULL;
    CHECK_NOERR(ss_client_infer(c, r, &reply));
    ss_client_tensor x;
    size_t len = 0;
    const void *got = reply && ss_client_reply_find(reply, 0, "x", &x)
                          ? ss_client_tensor_string(&x, 0, &len)
                          : NULL;
    CHECK_MSG(got && len == 5 && !memcmp(got, "a\"b\\c", 5), "protocol %d: BYTES echo", (int)p);
    ss_client_reply_free(reply);
    ss_client_request_free(r);
    r = ss_client_request_new("nope", "m", 0);
    int64_t one = 1;
    float f = 1;
    CHECK_NOERR(ss_client_request_set_tensor(r, ss_client_request_add_instance(r), "x1",
                                             SS_CLIENT_FLOAT32, &one, 1, &f, sizeof f));
    ss_client_error *e = ss_client_infer(c, r, &reply);
    bool rest = p != SS_CLIENT_KSERVE_GRPC;
    CHECK_MSG(e && e->kind == (rest ? SS_CLIENT_ERR_SERVER : SS_CLIENT_ERR_TRANSPORT) &&
                  e->code == (rest ? 404 : 5) && strstr(e->msg, "nope.m"),
              "protocol %d: unknown model: %s", (int)p, e ? e->msg : "no error");
    ss_client_error_free(e);
    e = ss_client_infer_async(c, r, on_reply, NULL);
    CHECK(e && e->kind == SS_CLIENT_ERR_ARGUMENT && strstr(e->msg, "MindSpore"));
    ss_client_error_free(e);
    ss_client_request_free(r);
}

static void kserve_protocols(void)
{
    ss_client_protocol ps[] = {SS_CLIENT_KSERVE_GRPC, SS_CLIENT_KSERVE_REST,
                               SS_CLIENT_KSERVE_BINARY};
    for (size_t k = 0; k < 3; k++) {
        ss_client *c = NULL;
        ss_client_options o = {.address = ps[k] == SS_CLIENT_KSERVE_GRPC ? address : rest_address,
                               .timeout_ms = 10000,
                               .protocol = ps[k]};
        CHECK_NOERR(ss_client_connect(&o, &c));
        if (!c) continue;
        kserve_add(c);
        kserve_bytes_and_errors(c, ps[k]);
        ss_client_close(c);
    }
}

/* KServe's system shared memory through the library: an object made and registered here, x1
 * and x2 read by the server from it, y written into it at an offset; status before and after
 * unregister; an unregistered region and a range past the region's end refused with their names. */
static void kserve_shm_round_trip(ss_client *c, ss_client_protocol p, ss_client_shm *shm)
{
    float *mem = ss_client_shm_data(shm);
    for (int j = 0; j < 3; j++)
        mem[j] = (float)j + 1, mem[3 + j] = 0.5f * (float)j;
    memset(mem + 8, 0xff, 3 * sizeof(float));
    CHECK_NOERR(ss_client_shm_register(c, "cl-shm", ss_client_shm_key(shm), 0, 64));
    bool registered = false;
    uint64_t size = 0;
    CHECK_NOERR(ss_client_shm_status(c, "cl-shm", &registered, &size));
    CHECK_MSG(registered && size == 64, "protocol %d: status %d %llu", (int)p, registered,
              (unsigned long long)size);
    ss_client_request *r = ss_client_request_new("add", "add_common", 0);
    size_t i = ss_client_request_add_instance(r);
    int64_t dims[2] = {1, 3};
    CHECK_NOERR(
        ss_client_request_set_shm_input(r, i, "x1", SS_CLIENT_FLOAT32, dims, 2, "cl-shm", 0, 12));
    CHECK_NOERR(
        ss_client_request_set_shm_input(r, i, "x2", SS_CLIENT_FLOAT32, dims, 2, "cl-shm", 12, 12));
    CHECK_NOERR(ss_client_request_set_shm_output(r, i, "y", "cl-shm", 32, 16));
    ss_client_reply *reply = NULL;
    CHECK_NOERR(ss_client_infer(c, r, &reply));
    ss_client_tensor y;
    CHECK_MSG(reply && ss_client_reply_find(reply, 0, "y", &y) && y.ndim == 2 && y.nbytes == 0 &&
                  y.dtype == SS_CLIENT_FLOAT32,
              "protocol %d: y in the reply without its bytes", (int)p);
    for (int j = 0; j < 3; j++)
        CHECK_NEAR(mem[8 + j], 1.5f * (float)j + 1, 0);
    ss_client_reply_free(reply);
    CHECK_NOERR(ss_client_request_set_shm_output(r, i, "y", "cl-nope", 0, 16));
    ss_client_error *e = ss_client_infer(c, r, &reply);
    CHECK_MSG(e && strstr(e->msg, "cl-nope") && strstr(e->msg, "not registered"),
              "protocol %d: unregistered region: %s", (int)p, e ? e->msg : "no error");
    ss_client_error_free(e);
    CHECK_NOERR(ss_client_request_set_shm_output(r, i, "y", "cl-shm", 56, 16));
    e = ss_client_infer(c, r, &reply);
    CHECK_MSG(e && strstr(e->msg, "cl-shm") && strstr(e->msg, "run past"),
              "protocol %d: past the end: %s", (int)p, e ? e->msg : "no error");
    ss_client_error_free(e);
    ss_client_request_free(r);
    CHECK_NOERR(ss_client_shm_unregister(c, "cl-shm"));
    CHECK_NOERR(ss_client_shm_status(c, "cl-shm", &registered, &size));
    CHECK_MSG(!registered, "protocol %d: still registered after unregister", (int)p);
}

static void kserve_shared_memory(void)
{
    char key[64];
    snprintf(key, sizeof key, "/ss-test-client-shm-%d", (int)getpid());
    ss_client_shm *shm = NULL;
    CHECK_NOERR(ss_client_shm_create(key, 64, &shm));
    ss_client_shm *again = NULL;
    ss_client_error *e = ss_client_shm_create(key, 64, &again); /* exists already */
    CHECK(e && e->kind == SS_CLIENT_ERR_ARGUMENT && strstr(e->msg, key) && !again);
    ss_client_error_free(e);
    ss_client_protocol ps[] = {SS_CLIENT_KSERVE_GRPC, SS_CLIENT_KSERVE_REST,
                               SS_CLIENT_KSERVE_BINARY};
    for (size_t k = 0; shm && k < 3; k++) {
        ss_client *c = NULL;
        ss_client_options o = {.address = ps[k] == SS_CLIENT_KSERVE_GRPC ? address : rest_address,
                               .timeout_ms = 10000,
                               .protocol = ps[k]};
        CHECK_NOERR(ss_client_connect(&o, &c));
        if (c) kserve_shm_round_trip(c, ps[k], shm);
        ss_client_close(c);
    }
    ss_client *ms = connect_client(10000, 0); /* MindSpore's protocol cannot name a region */
    e = ss_client_shm_register(ms, "cl-shm", key, 0, 64);
    CHECK(e && e->kind == SS_CLIENT_ERR_ARGUMENT && strstr(e->msg, "KServe"));
    ss_client_error_free(e);
    ss_client_close(ms);
    ss_client_shm_destroy(shm);
    char path[80];
    snprintf(path, sizeof path, "/dev/shm%s", key);
    CHECK_MSG(access(path, F_OK) != 0, "%s is left behind", path);
}

static void start(void)
{
    signal(SIGPIPE, SIG_IGN);
    CHECK_MSG(start_server() == 0, "cannot start the test server");
}

TEST_MAIN(TEST(start), TEST(add_float32), TEST(every_dtype), TEST(strings_and_bytes), TEST(errors),
          TEST(async_calls), TEST(transport_errors), TEST(argument_errors), TEST(kserve_protocols),
          TEST(kserve_shared_memory))
