/*
 * bench_floor_server: the floor for gRPC serving latency — a bare gRPC core-API server that
 * answers every MSService/Predict call with one prebuilt reply, the exact bytes `shardserve serve`
 * sent for the servable (bench/bench_serving.py captures them from a real serve first).
 *
 *   bench_floor_server REPLY_FILE [ADDRESS (default 127.0.0.1:0)] [THREADS (default 2)]
 *
 * Prints "GRPC_PORT=N" once listening; runs until SIGTERM/SIGINT or its parent dies.
 *
 * What a server cannot avoid is kept, what shardserve adds is left out, so that "serve p50 minus
 * floor p50" is the server's overhead and nothing else:
 *   - the same gRPC core setup as src/server/grpc_server.c: the same channel arguments, THREADS
 *     threads (bench_serving.py passes serve's default, a quarter of the cores, 1 to 4) on one
 *     completion queue, two calls posted per thread and one more
 *     per accepted call, the method checked, the request received in full and flattened into one
 *     slice, then headers, message, status and close in one batch;
 *   - but the request is never parsed, and the reply is never built: every call sends a
 *     reference to the same slice (no copy, no encoding). The bytes on the wire are the servable's
 *     real answer (for the seed model: y, 128x16 float32, all -48, ~8 KiB), not an echo of the
 *     48 KiB request, so the client decodes the same reply from both servers.
 */
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#define PREDICT_METHOD "/mindspore.serving.proto.MSService/Predict"
#define CALLS_PER_THREAD 2 /* as serve's REQUESTS_PER_THREAD */
#define MAX_MSG_BYTES                                                                              \
    (100 << 20) /* serve's default --grpc-max-msg-mb (SS_SERVER_DEFAULT_MAX_MSG_MB) */
#define MAX_THREADS 16

typedef enum { ST_REQUESTED, ST_RECEIVING, ST_FINISHING } call_state;

typedef struct {
    call_state state;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *recv, *send;
    grpc_slice status_details;
    int cancelled;
} floor_call;

static grpc_server *server;
static grpc_completion_queue *cq;
static grpc_slice reply_bytes; /* the prebuilt reply; every call sends a new reference to it */

static void floor_post(void)
{
    floor_call *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "bench_floor_server: out of memory while posting a call\n");
        return;
    }
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    c->status_details = grpc_empty_slice();
    if (grpc_server_request_call(server, &c->call, &c->details, &c->md, cq, cq, c) !=
        GRPC_CALL_OK) {
        grpc_call_details_destroy(&c->details);
        grpc_metadata_array_destroy(&c->md);
        free(c);
    }
}

static void floor_free(floor_call *c)
{
    if (c->call) grpc_call_unref(c->call);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);
    if (c->recv) grpc_byte_buffer_destroy(c->recv);
    if (c->send) grpc_byte_buffer_destroy(c->send);
    grpc_slice_unref(c->status_details);
    free(c);
}

/* Headers, message (when ok) and status in one batch, as serve's finish_call does. */
static void floor_finish(floor_call *c, grpc_status_code code, const char *details)
{
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (code == GRPC_STATUS_OK) {
        grpc_slice ref = grpc_slice_ref(reply_bytes);
        c->send = grpc_raw_byte_buffer_create(&ref, 1);
        grpc_slice_unref(ref);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->send;
    }
    grpc_slice_unref(c->status_details);
    c->status_details = grpc_slice_from_copied_string(details);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n++].data.send_status_from_server.status_details = &c->status_details;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
    c->state = ST_FINISHING;
    if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK) floor_free(c);
}

static void floor_on_requested(floor_call *c)
{
    floor_post(); /* keep the number of posted calls constant, as serve does */
    if (grpc_slice_str_cmp(c->details.method, PREDICT_METHOD) != 0) {
        floor_finish(c, GRPC_STATUS_UNIMPLEMENTED,
                     "the floor server answers only MSService/Predict");
        return;
    }
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv;
    c->state = ST_RECEIVING;
    if (grpc_call_start_batch(c->call, &op, 1, c, NULL) != GRPC_CALL_OK) floor_free(c);
}

/* The request is flattened into one slice (as serve does before decoding it), then dropped. */
static void floor_on_received(floor_call *c)
{
    grpc_byte_buffer_reader reader;
    if (!c->recv || !grpc_byte_buffer_reader_init(&reader, c->recv)) {
        floor_finish(c, GRPC_STATUS_INTERNAL, "no request message");
        return;
    }
    grpc_slice request = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    grpc_slice_unref(request);
    grpc_byte_buffer_destroy(c->recv);
    c->recv = NULL;
    floor_finish(c, GRPC_STATUS_OK, "");
}

static void *floor_loop(void *arg)
{
    (void)arg;
    for (int i = 0; i < CALLS_PER_THREAD; i++)
        floor_post();
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) return NULL;
        floor_call *c = ev.tag;
        if (ev.type != GRPC_OP_COMPLETE || !c) continue;
        if (!ev.success || c->state == ST_FINISHING) {
            floor_free(c);
        } else if (c->state == ST_REQUESTED) {
            floor_on_requested(c);
        } else {
            floor_on_received(c);
        }
    }
}

/* Loads the whole reply file into reply_bytes; returns 0, or -1 after saying what is wrong with it.
 */
static int floor_read_reply(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    long len = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (len <= 0 || len > MAX_MSG_BYTES || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr,
                "bench_floor_server: %s: want a captured PredictReply of 1..%d bytes, got %ld\n",
                path, MAX_MSG_BYTES, len);
        fclose(f);
        return -1;
    }
    reply_bytes = grpc_slice_malloc((size_t)len);
    size_t got = fread(GRPC_SLICE_START_PTR(reply_bytes), 1, (size_t)len, f);
    fclose(f);
    if (got != (size_t)len) {
        fprintf(stderr, "bench_floor_server: %s: short read (%zu of %ld bytes)\n", path, got, len);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (argc < 2 || argc > 4) {
        fprintf(stderr,
                "usage: bench_floor_server REPLY_FILE [ADDRESS (127.0.0.1:0)] [THREADS (2)]\n");
        return 2;
    }
    const char *address = argc > 2 ? argv[2] : "127.0.0.1:0";
    int threads = argc > 3 ? atoi(argv[3]) : 2;
    if (threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "bench_floor_server: THREADS wants 1..%d, got '%s'\n", MAX_THREADS,
                argv[3]);
        return 2;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    grpc_init();
    if (floor_read_reply(argv[1]) != 0) return 1;
    grpc_arg args[] = {
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = MAX_MSG_BYTES}},
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, {.integer = MAX_MSG_BYTES}},
        {GRPC_ARG_INTEGER, GRPC_ARG_ALLOW_REUSEPORT, {.integer = 0}},
    };
    grpc_channel_args channel_args = {sizeof args / sizeof args[0], args};
    server = grpc_server_create(&channel_args, NULL);
    cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(server, cq, NULL);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(server, address, creds);
    grpc_server_credentials_release(creds);
    if (!port) {
        fprintf(stderr, "bench_floor_server: cannot listen on %s\n", address);
        return 1;
    }
    grpc_server_start(server);
    pthread_t tid[MAX_THREADS];
    int started = 0;
    while (started < threads && pthread_create(&tid[started], NULL, floor_loop, NULL) == 0)
        started++;
    if (started < threads) {
        fprintf(stderr, "bench_floor_server: started only %d of %d threads\n", started, threads);
        return 1;
    }
    printf("GRPC_PORT=%d\n", port);
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    grpc_server_shutdown_and_notify(server, cq, NULL);
    grpc_server_cancel_all_calls(server);
    grpc_completion_queue_shutdown(cq);
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    grpc_server_destroy(server);
    grpc_completion_queue_destroy(cq);
    grpc_slice_unref(reply_bytes);
    grpc_shutdown();
    return 0;
}
