/*
 * ss_test_server: the gRPC and REST front ends wired to an in-process test handler, for the
 * server/client tests. It binds 127.0.0.1 (or a unix socket), prints "GRPC_PORT=N" and
 * "REST_PORT=N" once listening, and stops cleanly on SIGINT/SIGTERM (exit 0). It dies with its
 * parent (PR_SET_PDEATHSIG), so a crashed test leaves nothing behind.
 *
 * Servables of the test handler (answers come from worker threads, never from the caller):
 *   add v1, v2   add_common(x1, x2) -> y = x1 + x2 (float32, same element count), and
 *                "version" (int64 scalar: the version that answered). Per-instance dtype and
 *                size errors with MindSpore's texts.
 *   echo         echo(any) -> every input unchanged (string/bytes kind kept)
 *   error        fail() -> code 3 "fixed failure"; empty() -> code 1 with an empty message;
 *                wrong_count() -> one instance too many (a broken handler reply)
 *   partial      fail_second(any) -> echo, except instance 1 fails with code 2
 *   slow         sleep(any) -> echo after 300 ms
 *   describe     describe(any) -> for every input a string "DTYPE [DIMS]" ("bytes"/"str" for
 *                strings), to observe the front ends' dtype and shape inference. It answers
 *                synchronously, inside predict(), to cover that path of the front ends.
 *   control      set_ready(value: bool) -> sets the readiness the health endpoints report
 *   mixed        scale(x: float32 batched [2], w: float32 whole [2]) -> y = x * w (batched [2]);
 *                echo_bytes(s: bytes batched) -> s
 *   typed        one echo method per KServe datatype (bool, uint8, ..., fp16, bf16, bytes):
 *                x (batched [-1]) -> x
 *   notready     described as not ready (for the metadata and readiness endpoints)
 *
 * describe() publishes a signature for add, mixed, typed, error, slow and control (the KServe
 * front ends need one); echo, partial and describe have none (their inputs are free-form).
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "shardserve/server.h"

typedef struct job {
    ss_predict_request *req;
    ss_predict_done done;
    void *done_ctx;
    struct job *next;
} job;

static pthread_mutex_t queue_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cv = PTHREAD_COND_INITIALIZER;
static job *queue_head, *queue_tail;
static bool queue_stop;
static atomic_bool ready_flag = true;

static bool is_ready(void *ctx)
{
    return atomic_load(&ready_flag);
}

/* ------------------------------------------------------------------ servables */

static ss_predict_reply *echo_all(const ss_predict_request *req)
{
    ss_predict_reply *r = ss_predict_reply_new(req->count);
    if (!r) return NULL;
    for (size_t i = 0; i < req->count; i++) {
        const ss_serving_instance *in = &req->instances[i];
        for (size_t k = 0; k < in->count; k++) {
            ss_tensor copy;
            ss_status *st = ss_tensor_copy(&copy, &in->items[k].tensor);
            if (!st)
                st = ss_serving_instance_put(&r->instances[i], in->items[k].name, &copy,
                                             in->items[k].is_bytes);
            if (st) {
                ss_predict_reply_free(r);
                r = ss_predict_reply_error(SS_SERVING_SYSTEM_ERROR, "echo: %s", st->msg);
                ss_status_free(st);
                return r;
            }
        }
    }
    return r;
}

static const char *ms_type_name(ss_dtype dt)
{
    switch (dt) {
    case SS_DT_FLOAT32:
        return "kMSI_Float32";
    case SS_DT_FLOAT64:
        return "kMSI_Float64";
    case SS_DT_INT32:
        return "kMSI_Int32";
    case SS_DT_INT64:
        return "kMSI_Int64";
    case SS_DT_STRING:
        return "kMSI_String";
    default:
        return "kMSI_Unknown";
    }
}

static ss_predict_reply *add_common(const ss_predict_request *req, uint64_t version)
{
    ss_predict_reply *r = ss_predict_reply_new(req->count);
    if (!r) return NULL;
    for (size_t i = 0; i < req->count; i++) {
        const ss_tensor *x1 = &ss_serving_instance_find(&req->instances[i], "x1")->tensor;
        const ss_tensor *x2 = &ss_serving_instance_find(&req->instances[i], "x2")->tensor;
        const ss_tensor *xs[2] = {x1, x2};
        bool bad = false;
        for (int k = 0; k < 2 && !bad; k++) {
            if (xs[k]->dtype != SS_DT_FLOAT32) {
                ss_predict_reply_fail_instance(
                    r, i, SS_SERVING_INVALID_INPUTS,
                    "Given model input %d data type %s not match the data type kMSI_Float32 "
                    "defined in model",
                    k, ms_type_name(xs[k]->dtype));
                bad = true;
            } else if (xs[k]->nbytes != x1->nbytes) {
                ss_predict_reply_fail_instance(
                    r, i, SS_SERVING_INVALID_INPUTS,
                    "Given model input %d size %zu not match the size %zu defined in model", k,
                    xs[k]->nbytes, x1->nbytes);
                bad = true;
            }
        }
        if (bad) continue;
        ss_tensor y, v;
        ss_tensor_alloc(&y, SS_DT_FLOAT32, x1->ndim, x1->dims);
        const float *a = x1->data, *b = x2->data;
        float *out = y.data;
        for (int64_t e = 0; e < ss_tensor_numel(x1); e++)
            out[e] = a[e] + b[e];
        ss_tensor_alloc(&v, SS_DT_INT64, 0, NULL);
        *(int64_t *)v.data = (int64_t)version;
        ss_status_free(ss_serving_instance_put(&r->instances[i], "y", &y, false));
        ss_status_free(ss_serving_instance_put(&r->instances[i], "version", &v, false));
        ss_tensor_free(&y);
        ss_tensor_free(&v);
    }
    return r;
}

static ss_predict_reply *describe(const ss_predict_request *req)
{
    ss_predict_reply *r = ss_predict_reply_new(req->count);
    for (size_t i = 0; r && i < req->count; i++) {
        const ss_serving_instance *in = &req->instances[i];
        for (size_t k = 0; k < in->count; k++) {
            const ss_tensor *t = &in->items[k].tensor;
            char text[256], shape[160];
            if (t->dtype == SS_DT_STRING)
                snprintf(text, sizeof text, "%s %s", in->items[k].is_bytes ? "bytes" : "str",
                         ss_shape_str(t->ndim, t->dims, shape, sizeof shape));
            else
                snprintf(text, sizeof text, "%s %s", ss_dtype_name(t->dtype),
                         ss_shape_str(t->ndim, t->dims, shape, sizeof shape));
            ss_status_free(ss_serving_instance_put_string(&r->instances[i], in->items[k].name, text,
                                                          strlen(text), false));
        }
    }
    return r;
}

/* y = x * w, elementwise over 2 floats (the KServe tests check shapes before this runs). */
static ss_predict_reply *scale(const ss_predict_request *req)
{
    ss_predict_reply *r = ss_predict_reply_new(req->count);
    for (size_t i = 0; r && i < req->count; i++) {
        const ss_tensor *x = &ss_serving_instance_find(&req->instances[i], "x")->tensor;
        const ss_tensor *w = &ss_serving_instance_find(&req->instances[i], "w")->tensor;
        if (x->dtype != SS_DT_FLOAT32 || w->dtype != SS_DT_FLOAT32 || x->nbytes != 8 ||
            w->nbytes != 8) {
            ss_predict_reply_fail_instance(r, i, SS_SERVING_INVALID_INPUTS, "scale: bad x or w");
            continue;
        }
        ss_tensor y;
        int64_t two = 2;
        ss_tensor_alloc(&y, SS_DT_FLOAT32, 1, &two);
        for (int e = 0; e < 2; e++)
            ((float *)y.data)[e] = ((const float *)x->data)[e] * ((const float *)w->data)[e];
        ss_status_free(ss_serving_instance_put(&r->instances[i], "y", &y, false));
        ss_tensor_free(&y);
    }
    return r;
}

typedef struct {
    const char *servable;
    uint64_t versions[2]; /* 0-terminated; ascending */
    const char *method;
    const char *inputs[2];
    size_t ninputs;
} method_def;

static const method_def methods[] = {
    {"add", {1, 2}, "add_common", {"x1", "x2"}, 2},
    {"echo", {1, 0}, "echo", {NULL, NULL}, 0},
    {"error", {1, 0}, "fail", {NULL, NULL}, 0},
    {"error", {1, 0}, "empty", {NULL, NULL}, 0},
    {"error", {1, 0}, "wrong_count", {NULL, NULL}, 0},
    {"partial", {1, 0}, "fail_second", {NULL, NULL}, 0},
    {"slow", {1, 0}, "sleep", {NULL, NULL}, 0},
    {"control", {1, 0}, "set_ready", {"value", NULL}, 1},
    {"describe", {1, 0}, "describe", {NULL, NULL}, 0},
    {"mixed", {1, 0}, "scale", {"x", "w"}, 2},
    {"mixed", {1, 0}, "echo_bytes", {"s", NULL}, 1},
    {"typed", {1, 0}, "bool", {"x", NULL}, 1},
    {"typed", {1, 0}, "uint8", {"x", NULL}, 1},
    {"typed", {1, 0}, "uint16", {"x", NULL}, 1},
    {"typed", {1, 0}, "uint32", {"x", NULL}, 1},
    {"typed", {1, 0}, "uint64", {"x", NULL}, 1},
    {"typed", {1, 0}, "int8", {"x", NULL}, 1},
    {"typed", {1, 0}, "int16", {"x", NULL}, 1},
    {"typed", {1, 0}, "int32", {"x", NULL}, 1},
    {"typed", {1, 0}, "int64", {"x", NULL}, 1},
    {"typed", {1, 0}, "fp16", {"x", NULL}, 1},
    {"typed", {1, 0}, "fp32", {"x", NULL}, 1},
    {"typed", {1, 0}, "fp64", {"x", NULL}, 1},
    {"typed", {1, 0}, "bf16", {"x", NULL}, 1},
    {"typed", {1, 0}, "bytes", {"x", NULL}, 1},
};

/* ------------------------------------------------------------------ signatures */

typedef struct {
    const char *name;
    ss_dtype dtype;
    bool batched;
    int ndim;
    int64_t dims[1];
} io_def;

static const struct {
    const char *method;
    io_def in[2], out[2];
    size_t nin, nout;
} io_defs[] = {
    {"add_common",
     {{"x1", SS_DT_FLOAT32, true, 1, {-1}}, {"x2", SS_DT_FLOAT32, true, 1, {-1}}},
     {{"y", SS_DT_FLOAT32, true, 1, {-1}}, {"version", SS_DT_INT64, true, 0, {0}}},
     2,
     2},
    {"scale",
     {{"x", SS_DT_FLOAT32, true, 1, {2}}, {"w", SS_DT_FLOAT32, false, 1, {2}}},
     {{"y", SS_DT_FLOAT32, true, 1, {2}}},
     2,
     1},
    {"echo_bytes", {{"s", SS_DT_STRING, true, 0, {0}}}, {{"s", SS_DT_STRING, true, 0, {0}}}, 1, 1},
    {"sleep", {{"x", SS_DT_FLOAT32, true, 1, {-1}}}, {{"x", SS_DT_FLOAT32, true, 1, {-1}}}, 1, 1},
    {"set_ready",
     {{"value", SS_DT_BOOL, false, 0, {0}}},
     {{"value", SS_DT_BOOL, false, 0, {0}}},
     1,
     1},
    {"fail", {{0}}, {{0}}, 0, 0},
    {"empty", {{0}}, {{0}}, 0, 0},
    {"wrong_count", {{0}}, {{0}}, 0, 0},
};

static ss_dtype typed_dtype(const char *method)
{
    static const struct {
        const char *name;
        ss_dtype dt;
    } names[] = {{"bool", SS_DT_BOOL},     {"uint8", SS_DT_UINT8},   {"uint16", SS_DT_UINT16},
                 {"uint32", SS_DT_UINT32}, {"uint64", SS_DT_UINT64}, {"int8", SS_DT_INT8},
                 {"int16", SS_DT_INT16},   {"int32", SS_DT_INT32},   {"int64", SS_DT_INT64},
                 {"fp16", SS_DT_FLOAT16},  {"fp32", SS_DT_FLOAT32},  {"fp64", SS_DT_FLOAT64},
                 {"bf16", SS_DT_BFLOAT16}, {"bytes", SS_DT_STRING}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(names[i].name, method)) return names[i].dt;
    return SS_DT_UNDEFINED;
}

static void spec_of(const io_def *d, ss_serving_tensor_spec *sp)
{
    *sp = (ss_serving_tensor_spec){(char *)d->name, d->dtype, d->batched, d->ndim, {0}};
    if (d->ndim) sp->dims[0] = d->dims[0];
}

/* The method's inputs and outputs; false for a servable that publishes no signature. */
static bool method_specs(const char *method, ss_serving_tensor_spec *in, size_t *nin,
                         ss_serving_tensor_spec *out, size_t *nout)
{
    ss_dtype dt = typed_dtype(method);
    if (dt != SS_DT_UNDEFINED) {
        io_def x = {"x", dt, true, dt == SS_DT_STRING ? 0 : 1, {-1}};
        spec_of(&x, in);
        spec_of(&x, out);
        *nin = *nout = 1;
        return true;
    }
    for (size_t i = 0; i < sizeof io_defs / sizeof *io_defs; i++) {
        if (strcmp(io_defs[i].method, method) != 0) continue;
        *nin = io_defs[i].nin;
        *nout = io_defs[i].nout;
        for (size_t k = 0; k < *nin; k++)
            spec_of(&io_defs[i].in[k], &in[k]);
        for (size_t k = 0; k < *nout; k++)
            spec_of(&io_defs[i].out[k], &out[k]);
        return true;
    }
    return false;
}

static int test_describe(void *ctx, const char *servable, uint64_t version,
                         ss_serving_signature **out, char *why, size_t cap)
{
    if (!strcmp(servable, "notready")) {
        snprintf(why, cap, "servable notready is not ready: its agents are missing");
        return SS_DESCRIBE_NOT_READY;
    }
    ss_serving_method ms[32];
    ss_serving_tensor_spec ins[32][2], outs[32][2];
    size_t n = 0;
    uint64_t found = 0;
    for (size_t m = 0; m < sizeof methods / sizeof methods[0] && n < 32; m++) {
        const method_def *d = &methods[m];
        if (strcmp(d->servable, servable) != 0) continue;
        uint64_t v = 0;
        for (int k = 0; k < 2; k++)
            if (d->versions[k] && (version == 0 || version == d->versions[k])) v = d->versions[k];
        if (!v) continue;
        ss_serving_method *sm = &ms[n];
        *sm = (ss_serving_method){(char *)d->method, ins[n], outs[n], 0, 0};
        if (!method_specs(d->method, ins[n], &sm->n_inputs, outs[n], &sm->n_outputs)) continue;
        found = v;
        n++;
    }
    if (!n) {
        snprintf(why, cap, "servable %s version %llu is not available", servable,
                 (unsigned long long)version);
        return SS_DESCRIBE_NOT_FOUND;
    }
    ss_serving_signature sig = {.servable = (char *)servable,
                                .version = found,
                                .methods = ms,
                                .n_methods = n,
                                .batch_size = 4,
                                .with_batch_dim = true,
                                .rank_size = 1,
                                .stage_size = 1};
    *out = ss_serving_signature_copy(&sig);
    if (!*out) {
        snprintf(why, cap, "out of memory");
        return SS_DESCRIBE_NOT_FOUND;
    }
    return SS_DESCRIBE_OK;
}

/* Resolve servable, version (0 = latest) and method the way MindSpore's dispatcher does. */
static ss_predict_reply *resolve(const ss_predict_request *req, const method_def **out,
                                 uint64_t *version)
{
    bool servable_found = false;
    for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
        const method_def *d = &methods[m];
        if (strcmp(d->servable, req->servable) != 0) continue;
        uint64_t v = 0;
        for (int k = 0; k < 2; k++)
            if (d->versions[k] && (req->version == 0 || req->version == d->versions[k]))
                v = d->versions[k];
        if (!v) continue;
        servable_found = true;
        if (strcmp(d->method, req->method) != 0) continue;
        *out = d;
        *version = v;
        return NULL;
    }
    return ss_serving_err_unavailable(req, servable_found);
}

static ss_predict_reply *run(const ss_predict_request *req)
{
    const method_def *d = NULL;
    uint64_t version = 0;
    ss_predict_reply *r = resolve(req, &d, &version);
    if (r) return r;
    r = ss_predict_request_check_inputs(req, d->inputs, d->ninputs);
    if (r) return r;
    if (strcmp(d->method, "add_common") == 0) return add_common(req, version);
    if (strcmp(d->method, "describe") == 0) return describe(req);
    if (strcmp(d->method, "scale") == 0) return scale(req);
    if (strcmp(d->method, "wrong_count") == 0) return ss_predict_reply_new(req->count + 1);
    if (strcmp(d->method, "fail") == 0)
        return ss_predict_reply_error(SS_SERVING_SYSTEM_ERROR, "fixed failure");
    if (strcmp(d->method, "empty") == 0) return ss_predict_reply_error(SS_SERVING_FAILED, "%s", "");
    if (strcmp(d->method, "set_ready") == 0) {
        const ss_tensor *t = &ss_serving_instance_find(&req->instances[0], "value")->tensor;
        if (t->dtype != SS_DT_BOOL)
            return ss_predict_reply_error(SS_SERVING_INVALID_INPUTS, "value must be bool");
        atomic_store(&ready_flag, *(const bool *)t->data);
    }
    r = echo_all(req);
    if (r && strcmp(d->method, "fail_second") == 0 && req->count > 1)
        ss_status_free(
            ss_predict_reply_fail_instance(r, 1, SS_SERVING_INVALID_INPUTS, "instance 1 rejected"));
    return r;
}

/* ------------------------------------------------------------------ asynchrony */

static void *worker(void *arg)
{
    for (;;) {
        pthread_mutex_lock(&queue_mu);
        while (!queue_head && !queue_stop)
            pthread_cond_wait(&queue_cv, &queue_mu);
        job *j = queue_head;
        if (j) {
            queue_head = j->next;
            if (!queue_head) queue_tail = NULL;
        }
        pthread_mutex_unlock(&queue_mu);
        if (!j) return NULL;
        j->done(j->done_ctx, run(j->req));
        free(j);
    }
}

/* Slow requests sleep on a thread of their own, so they never delay the others. */
static void *slow_job(void *arg)
{
    job *j = arg;
    usleep(300 * 1000);
    j->done(j->done_ctx, run(j->req));
    free(j);
    return NULL;
}

static void test_predict(void *ctx, ss_predict_request *req, ss_predict_done done, void *done_ctx)
{
    if (strcmp(req->servable, "describe") == 0) {
        done(done_ctx, run(req));
        return;
    }
    job *j = calloc(1, sizeof *j);
    if (!j) {
        done(done_ctx, ss_predict_reply_error(SS_SERVING_SYSTEM_ERROR, "out of memory"));
        return;
    }
    j->req = req;
    j->done = done;
    j->done_ctx = done_ctx;
    pthread_t tid;
    if (strcmp(req->servable, "slow") == 0 && pthread_create(&tid, NULL, slow_job, j) == 0) {
        pthread_detach(tid);
        return;
    }
    pthread_mutex_lock(&queue_mu);
    if (queue_tail)
        queue_tail->next = j;
    else
        queue_head = j;
    queue_tail = j;
    pthread_cond_signal(&queue_cv);
    pthread_mutex_unlock(&queue_mu);
}

/* ------------------------------------------------------------------ main */

static void usage(void)
{
    fprintf(stderr, "usage: ss_test_server [--grpc ADDR] [--rest ADDR] [--grpc-max-mb N] "
                    "[--rest-max-mb N] [--rest-timeout S] [--rest-threads N] [--workers N]\n"
                    "       [--grpc-tls-cert F --grpc-tls-key F [--grpc-tls-ca F] "
                    "[--grpc-verify-client]] (and the same with --rest-)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *grpc_addr = NULL, *rest_addr = NULL;
    int grpc_mb = 0, rest_mb = 0, rest_timeout = 0, rest_threads = 0, nworkers = 4;
    ss_ssl_config tls[2] = {{0}, {0}}; /* gRPC, REST: the same flags as `shardserve serve` */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--grpc-verify-client") || !strcmp(argv[i], "--rest-verify-client")) {
            tls[argv[i][2] == 'r'].verify_client = true;
            continue;
        }
        if (i + 1 >= argc) usage();
        if (!strncmp(argv[i], "--grpc-tls-", 11) || !strncmp(argv[i], "--rest-tls-", 11)) {
            ss_ssl_config *t = &tls[argv[i][2] == 'r'];
            const char *what = argv[i] + 11;
            if (!strcmp(what, "cert"))
                t->certificate = argv[++i];
            else if (!strcmp(what, "key"))
                t->private_key = argv[++i];
            else if (!strcmp(what, "ca"))
                t->custom_ca = argv[++i];
            else
                usage();
            continue;
        }
        if (!strcmp(argv[i], "--grpc"))
            grpc_addr = argv[++i];
        else if (!strcmp(argv[i], "--rest"))
            rest_addr = argv[++i];
        else if (!strcmp(argv[i], "--grpc-max-mb"))
            grpc_mb = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rest-max-mb"))
            rest_mb = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rest-timeout"))
            rest_timeout = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rest-threads"))
            rest_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--workers"))
            nworkers = atoi(argv[++i]);
        else
            usage();
    }
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    ss_log_init_from_env();
    sigset_t sigs;
    ss_server_block_signals(&sigs);

    pthread_t workers[16];
    if (nworkers < 1 || nworkers > 16) usage();
    for (int i = 0; i < nworkers; i++)
        pthread_create(&workers[i], NULL, worker, NULL);

    ss_predict_handler handler = {.ctx = NULL, .predict = test_predict, .describe = test_describe};
    ss_grpc_server *grpc = NULL;
    ss_rest_server *rest = NULL;
    ss_status *st = NULL;
    if (grpc_addr) {
        ss_grpc_options o = {
            .address = grpc_addr, .max_msg_mb = grpc_mb, .handler = handler, .ready = is_ready};
        if (tls[0].certificate || tls[0].private_key || tls[0].verify_client) o.ssl = &tls[0];
        st = ss_grpc_server_start(&o, &grpc);
    }
    if (!st && rest_addr) {
        ss_rest_options o = {.address = rest_addr,
                             .max_msg_mb = rest_mb,
                             .handler = handler,
                             .timeout_s = rest_timeout,
                             .threads = rest_threads,
                             .ready = is_ready};
        if (tls[1].certificate || tls[1].private_key || tls[1].verify_client) o.ssl = &tls[1];
        st = ss_rest_server_start(&o, &rest);
    }
    if (st) {
        fprintf(stderr, "ss_test_server: %s\n", st->msg);
        printf("FAILED\n");
        fflush(stdout);
        ss_status_free(st);
        ss_grpc_server_stop(grpc);
        return 1;
    }
    printf("GRPC_PORT=%d\nREST_PORT=%d\nREADY\n", ss_grpc_server_port(grpc),
           ss_rest_server_port(rest));
    fflush(stdout);

    int sig = 0;
    sigwait(&sigs, &sig);
    ss_rest_server_stop(rest);
    ss_grpc_server_stop(grpc);
    pthread_mutex_lock(&queue_mu);
    queue_stop = true;
    pthread_cond_broadcast(&queue_cv);
    pthread_mutex_unlock(&queue_mu);
    for (int i = 0; i < nworkers; i++)
        pthread_join(workers[i], NULL);
    fprintf(stderr, "ss_test_server: stopped on signal %d\n", sig);
    return 0;
}
