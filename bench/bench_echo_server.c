/*
 * bench_echo_server: a bare gRPC core-API server that answers every unary call with the request's
 * own bytes, no protobuf parsing, no handler hop. bench/bench_serving.py's `large` section uses it
 * as gRPC's bandwidth for big tensors (the same bytes both ways). It is not the latency floor for
 * a servable (its reply is the request, not the servable's answer): that is bench_floor_server.
 *
 *   bench_echo_server [ADDRESS (default 127.0.0.1:0)] [THREADS (default 2)]
 *
 * Prints "GRPC_PORT=N" once listening; runs until SIGTERM/SIGINT or its parent dies.
 *
 * So that `shardserve bench` (a MindSpore client) can drive it unchanged, the reply is the request
 * with its top-level field tags rewritten: PredictRequest.instances is field 2 and
 * PredictReply.instances is field 3 (both length-delimited, one tag byte), so turning each
 * top-level 0x12 into 0x1a makes the echoed bytes a valid PredictReply carrying the same tensors.
 * That is one pass over a handful of top-level tags plus the one copy into the reply buffer.
 */
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

typedef enum { ST_NEW, ST_RECEIVED, ST_DONE } call_state;

typedef struct {
    call_state state;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *recv, *send;
    grpc_slice status_details;
    int cancelled;
} call_ctx;

static grpc_server *server;
static grpc_completion_queue *cq;

static void post(void)
{
    call_ctx *c = calloc(1, sizeof *c);
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    if (grpc_server_request_call(server, &c->call, &c->details, &c->md, cq, cq, c) != GRPC_CALL_OK)
        free(c);
}

static void free_call(call_ctx *c)
{
    if (c->call) grpc_call_unref(c->call);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->md);
    if (c->recv) grpc_byte_buffer_destroy(c->recv);
    if (c->send) grpc_byte_buffer_destroy(c->send);
    grpc_slice_unref(c->status_details);
    free(c);
}

/* varint at p (< end); returns bytes used or 0 */
static size_t varint(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (size_t i = 0; p + i < end && i < 10; i++) {
        *v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) return i + 1;
    }
    return 0;
}

static void reply(call_ctx *c)
{
    grpc_byte_buffer_reader r;
    grpc_slice all = grpc_empty_slice();
    if (c->recv && grpc_byte_buffer_reader_init(&r, c->recv)) {
        all = grpc_byte_buffer_reader_readall(
            &r); /* the one copy (none when the buffer is one slice) */
        grpc_byte_buffer_reader_destroy(&r);
    }
    uint8_t *p = GRPC_SLICE_START_PTR(all), *end = GRPC_SLICE_END_PTR(all);
    grpc_slice out = grpc_slice_malloc(GRPC_SLICE_LENGTH(all));
    memcpy(GRPC_SLICE_START_PTR(out), p, GRPC_SLICE_LENGTH(all));
    uint8_t *q = GRPC_SLICE_START_PTR(out);
    for (size_t off = 0; p + off < end;) { /* top-level fields: retag 2 -> 3 */
        uint64_t tag, len;
        size_t n = varint(p + off, end, &tag);
        if (!n || (tag & 7) != 2) break;
        if (tag == 0x12) q[off] = 0x1a;
        size_t m = varint(p + off + n, end, &len);
        if (!m) break;
        off += n + m + len;
    }
    grpc_slice_unref(all);
    c->send = grpc_raw_byte_buffer_create(&out, 1);
    grpc_slice_unref(out);
    /* headers, message and status in one batch (one write), as shardserve's front end does */
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->send;
    c->status_details = grpc_empty_slice();
    ops[2].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[2].data.send_status_from_server.status = GRPC_STATUS_OK;
    ops[2].data.send_status_from_server.status_details = &c->status_details;
    ops[3].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[3].data.recv_close_on_server.cancelled = &c->cancelled;
    c->state = ST_DONE;
    if (grpc_call_start_batch(c->call, ops, 4, c, NULL) != GRPC_CALL_OK) free_call(c);
}

static void *loop(void *arg)
{
    (void)arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) return NULL;
        call_ctx *c = ev.tag;
        if (!c) continue;
        if (!ev.success) {
            if (c->state == ST_NEW && !c->call) {
                free(c);
            } else {
                free_call(c);
            }
            continue;
        }
        switch (c->state) {
        case ST_NEW: {
            post(); /* keep one call posted */
            grpc_op op;
            memset(&op, 0, sizeof op);
            op.op = GRPC_OP_RECV_MESSAGE;
            op.data.recv_message.recv_message = &c->recv;
            c->state = ST_RECEIVED;
            if (grpc_call_start_batch(c->call, &op, 1, c, NULL) != GRPC_CALL_OK) free_call(c);
            break;
        }
        case ST_RECEIVED:
            reply(c);
            break;
        case ST_DONE:
            free_call(c);
            break;
        }
    }
}

int main(int argc, char **argv)
{
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    const char *address = argc > 1 ? argv[1] : "127.0.0.1:0";
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    if (threads < 1 || threads > 16) threads = 2;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    grpc_init();
    /* BENCH_ECHO_TUNED=1: bigger HTTP/2 frames and TCP reads (fewer slices per large message) */
    const char *tuned = getenv("BENCH_ECHO_TUNED");
    grpc_arg args[6] = {{.type = GRPC_ARG_INTEGER,
                         .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                         .value.integer = 512 << 20},
                        {.type = GRPC_ARG_INTEGER,
                         .key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH,
                         .value.integer = 512 << 20},
                        {.type = GRPC_ARG_INTEGER,
                         .key = GRPC_ARG_HTTP2_MAX_FRAME_SIZE,
                         .value.integer = (1 << 24) - 1},
                        {.type = GRPC_ARG_INTEGER,
                         .key = GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE,
                         .value.integer = 1 << 20},
                        {.type = GRPC_ARG_INTEGER,
                         .key = GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE,
                         .value.integer = 16 << 20},
                        {.type = GRPC_ARG_INTEGER,
                         .key = GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
                         .value.integer = 64 << 20}};
    grpc_channel_args ca = {tuned && *tuned == '1' ? 6 : 2, args};
    server = grpc_server_create(&ca, NULL);
    cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(server, cq, NULL);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(server, address, creds);
    grpc_server_credentials_release(creds);
    if (!port) {
        fprintf(stderr, "bench_echo_server: cannot listen on %s\n", address);
        return 1;
    }
    grpc_server_start(server);
    for (int i = 0; i < 64; i++)
        post();
    printf("GRPC_PORT=%d\n", port);
    fflush(stdout);
    pthread_t tid[16];
    for (int i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, loop, NULL);
    int sig;
    sigwait(&set, &sig);
    grpc_server_shutdown_and_notify(server, cq, NULL);
    grpc_server_cancel_all_calls(server);
    grpc_completion_queue_shutdown(cq);
    for (int i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);
    grpc_server_destroy(server);
    grpc_completion_queue_destroy(cq);
    grpc_shutdown();
    return 0;
}
