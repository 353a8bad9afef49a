/*
 * kserve_stream: ModelStreamInfer (see kserve_stream.h).
 *
 * At most one receive and one send batch are outstanding at a time (gRPC's rule); answers that
 * are ready while a send is in flight wait in a queue. `refs` counts what can still touch the
 * stream — outstanding batches and requests the handler has not answered — and the last one
 * frees it. Everything mutable is under `mu`; the handler and gRPC batches are started outside
 * it only where they may call back at once (predict may answer inside the call).
 *
 * A request whose backend streams (a generate servable) gets one answer per piece (its new
 * "tokens", triton_final_response false) and its whole reply last (true). The requests the
 * handler holds are listed, so that the moment the stream breaks (the client went away: the close
 * op reports it cancelled, or a receive or send fails) each is cancelled; a request leaves the
 * list under `mu` as its done() starts, so none is cancelled after. At most MAX_UNSENT answers
 * wait for a slow reader: past that the stream ends with RESOURCE_EXHAUSTED and its requests are
 * cancelled, rather than memory growing with every token.
 */
#include "kserve_stream.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kserve_grpc.h"
#include "trim.h"

#define MAX_PENDING 64
#define MAX_UNSENT 1024
#define STR_(x) #x
#define STR(x) STR_(x)

typedef enum { OP_RECV, OP_SEND, OP_STATUS, OP_CLOSE } op_kind;

typedef struct ss_kserve_stream ss_kserve_stream;

typedef struct {
    ss_kserve_stream_tag head;
    op_kind op;
    ss_kserve_stream *stream;
} op_tag;

typedef struct answer {
    uint8_t *bytes; /* a packed ModelStreamInferResponse */
    size_t len;
    struct answer *next;
} answer;

/* One request of the stream while the handler works on it. */
typedef struct pending {
    ss_kserve_stream *stream;
    ss_kserve_call *call;
    ss_predict_request *req;
    bool streamed; /* pieces were sent: the last answer says triton_final_response true */
    size_t held;   /* taken from the server's budget (env.hold) */
    struct pending *prev, *next;
} pending;

struct ss_kserve_stream {
    op_tag recv_tag, send_tag, status_tag, close_tag;
    grpc_call *call;
    ss_kserve_stream_env env;
    pthread_mutex_t mu;
    int refs;
    grpc_byte_buffer *recv;
    grpc_byte_buffer *sending;
    answer *head, *tail;
    pending *held; /* requests the handler has not answered (cancelled when the stream breaks) */
    int owed;      /* requests the handler has not answered yet */
    int queued;    /* answers not sent yet */
    bool send_busy, half_closed, broken, status_sent, metadata_sent, reading;
    int cancelled;
    grpc_slice details;
};

static void read_more(ss_kserve_stream *s);

/* The client is gone or cannot keep up (lock held): the requests still held stop early. */
static void set_broken(ss_kserve_stream *s)
{
    if (!s->broken) grpc_call_cancel(s->call, NULL); /* so the close op completes */
    s->broken = true;
    for (pending *p = s->held; p; p = p->next)
        ss_predict_request_cancel(p->req);
}

static void stream_free(ss_kserve_stream *s)
{
    while (s->head) {
        answer *a = s->head;
        s->head = a->next;
        free(a->bytes);
        free(a);
    }
    if (s->recv) grpc_byte_buffer_destroy(s->recv);
    if (s->sending) grpc_byte_buffer_destroy(s->sending);
    grpc_slice_unref(s->details);
    grpc_call_unref(s->call);
    pthread_mutex_destroy(&s->mu);
    void (*live)(void *, long) = s->env.live;
    void *live_ctx = s->env.live_ctx;
    free(s);
    live(live_ctx, -1);
}

/* Drop one reference (lock held; released here). */
static void unref_unlock(ss_kserve_stream *s)
{
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (last) stream_free(s);
}

static bool start_batch(ss_kserve_stream *s, const grpc_op *ops, size_t n, op_tag *tag)
{
    s->refs++;
    if (grpc_call_start_batch(s->call, ops, n, tag, NULL) == GRPC_CALL_OK) return true;
    s->refs--;
    set_broken(s);
    return false;
}

bool ss_grpc_send_message(grpc_call *call, uint8_t *bytes, size_t len, bool *metadata_sent,
                          grpc_byte_buffer **sending, void *tag)
{
    grpc_slice slice = grpc_slice_new(bytes, len, free);
    *sending = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!*metadata_sent) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = *sending;
    *metadata_sent = true;
    return grpc_call_start_batch(call, ops, n, tag, NULL) == GRPC_CALL_OK;
}

/* Send the next queued answer (lock held, no send in flight). */
static void send_next(ss_kserve_stream *s)
{
    answer *a = s->head;
    s->head = a->next;
    if (!s->head) s->tail = NULL;
    s->queued--;
    uint8_t *bytes = a->bytes;
    size_t len = a->len;
    free(a);
    s->refs++;
    s->send_busy =
        ss_grpc_send_message(s->call, bytes, len, &s->metadata_sent, &s->sending, &s->send_tag);
    if (!s->send_busy) {
        s->refs--;
        set_broken(s);
    }
}

/* End the call with OK once the client has half-closed, the handler owes nothing and every
 * answer went out (lock held). */
static void maybe_finish(ss_kserve_stream *s)
{
    if (s->broken || s->status_sent || !s->half_closed || s->owed || s->send_busy || s->head)
        return;
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!s->metadata_sent) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    s->metadata_sent = true;
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = GRPC_STATUS_OK;
    ops[n++].data.send_status_from_server.status_details = &s->details;
    s->status_sent = true;
    start_batch(s, ops, n, &s->status_tag);
}

/* Queue an answer (consumed) and send it when the line is free. */
static void post_answer(ss_kserve_stream *s, uint8_t *bytes, size_t len)
{
    answer *a = bytes ? calloc(1, sizeof *a) : NULL;
    pthread_mutex_lock(&s->mu);
    if (!a || s->broken || s->queued >= MAX_UNSENT) {
        /* out of memory: the client would wait forever for this answer, so end the call */
        if (!a && !s->broken)
            grpc_call_cancel_with_status(s->call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory",
                                         NULL);
        else if (!s->broken)
            grpc_call_cancel_with_status(
                s->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                "the client reads this stream too slowly: " STR(MAX_UNSENT) " answers unsent",
                NULL);
        set_broken(s);
        free(a);
        free(bytes);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    a->bytes = bytes;
    a->len = len;
    s->queued++;
    if (s->tail)
        s->tail->next = a;
    else
        s->head = a;
    s->tail = a;
    if (!s->send_busy) send_next(s);
    pthread_mutex_unlock(&s->mu);
}

static void post_error(ss_kserve_stream *s, const char *model, const char *id,
                       const ss_kserve_error *err)
{
    uint8_t *out = NULL;
    size_t len = 0;
    ss_kserve_error oom = {0};
    ss_kserve_grpc_stream_error(model, id, err->msg, &out, &len, &oom);
    post_answer(s, out, len);
}

/* A request that did not decode: its model and id are read from its bytes. */
static void post_decode_error(ss_kserve_stream *s, const uint8_t *req, size_t len,
                              const ss_kserve_error *err)
{
    char model[256], id[256];
    ss_kserve_grpc_request_names(req, len, model, id, sizeof model);
    post_error(s, model, id, err);
}

static void release(ss_kserve_stream *s, size_t held)
{
    if (held) s->env.release(s->env.live_ctx, held);
}

/* Link (held) or unlink a request of the stream's held list (lock held). */
static void hold(ss_kserve_stream *s, pending *p, bool held)
{
    if (held) {
        p->prev = NULL;
        p->next = s->held;
        if (s->held) s->held->prev = p;
        s->held = p;
        return;
    }
    if (p->prev)
        p->prev->next = p->next;
    else
        s->held = p->next;
    if (p->next) p->next->prev = p->prev;
}

/* ss_predict_partial: a piece of a streaming request, answered at once. */
static void answer_piece(void *ctx, size_t instance, const ss_serving_instance *chunk)
{
    (void)instance; /* a KServe request is one instance, or one batch answered whole */
    pending *p = ctx;
    ss_kserve_error err = {0};
    uint8_t *resp = NULL, *out = NULL;
    size_t resp_len = 0, len = 0;
    if (!ss_kserve_grpc_encode_partial(p->call, chunk, &resp, &resp_len, &err)) return;
    bool ok = ss_kserve_grpc_stream_reply(resp, resp_len, &out, &len, &err);
    free(resp);
    if (!ok) return; /* out of memory: this piece is missed, the final answer has them all */
    p->streamed = true;
    post_answer(p->stream, out, len);
}

static void answered(void *done_ctx, ss_predict_reply *reply)
{
    pending *p = done_ctx;
    ss_kserve_stream *s = p->stream;
    pthread_mutex_lock(&s->mu);
    hold(s, p, false);
    pthread_mutex_unlock(&s->mu);
    ss_kserve_error err = {0};
    uint8_t *resp = NULL, *out = NULL;
    size_t resp_len = 0, len = 0;
    reply = ss_predict_reply_finish(reply, p->req);
    bool ok = reply &&
              (p->streamed ? ss_kserve_grpc_encode_final(p->call, reply, &resp, &resp_len, &err)
                           : ss_kserve_grpc_encode_reply(p->call, reply, &resp, &resp_len, &err));
    if (!reply) ss_kserve_fail(&err, 500, "out of memory");
    ss_predict_reply_free(reply);
    ok = ok && ss_kserve_grpc_stream_reply(resp, resp_len, &out, &len, &err);
    free(resp);
    if (ok)
        post_answer(s, out, len);
    else
        post_error(s, p->call->model, p->call->id ? p->call->id : "", &err);
    ss_predict_request_free(p->req);
    ss_kserve_call_free(p->call);
    release(s, p->held);
    free(p);
    pthread_mutex_lock(&s->mu);
    s->owed--;
    read_more(s);
    maybe_finish(s);
    unref_unlock(s);
}

/* The message and its decoded size against the server's budget (env.hold); false: err says why. */
static bool hold_request(ss_kserve_stream *s, const uint8_t *buf, size_t len, pending *p,
                         ss_kserve_error *err)
{
    char why[300];
    if (!s->env.hold || s->env.hold(s->env.live_ctx, buf, len, &p->held, why, sizeof why))
        return true;
    ss_kserve_fail(err, 413, "%s", why);
    return false;
}

/* One request message: to the handler, or straight back as an error answer. */
static void handle_request(ss_kserve_stream *s, const uint8_t *buf, size_t len)
{
    ss_kserve_error err = {0};
    pending *p = calloc(1, sizeof *p);
    if (!p || !hold_request(s, buf, len, p, &err)) {
        if (!p) ss_kserve_fail(&err, 500, "out of memory");
        free(p);
        post_decode_error(s, buf, len, &err);
        return;
    }
    const ss_predict_handler *h = s->env.handler;
    if (!ss_kserve_grpc_decode_infer(h, buf, len, &p->call, &p->req, &err)) {
        release(s, p->held);
        free(p);
        post_decode_error(s, buf, len, &err);
        return;
    }
    p->stream = s;
    p->req->partial = answer_piece;
    p->req->partial_ctx = p;
    pthread_mutex_lock(&s->mu);
    s->owed++;
    s->refs++;
    hold(s, p, true);
    if (s->broken) ss_predict_request_cancel(p->req);
    pthread_mutex_unlock(&s->mu);
    h->predict(h->ctx, p->req, answered, p);
}

static void start_recv(ss_kserve_stream *s)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->recv;
    s->reading = start_batch(s, &op, 1, &s->recv_tag);
}

/* Read the next request unless one is being read, the client is done, or the stream holds
 * MAX_PENDING requests and answers (lock held). */
static void read_more(ss_kserve_stream *s)
{
    if (!s->reading && !s->broken && !s->half_closed && s->owed + s->queued < MAX_PENDING)
        start_recv(s);
}

grpc_slice ss_grpc_take_message(grpc_byte_buffer **bb)
{
    grpc_slice msg = grpc_empty_slice();
    grpc_byte_buffer_reader reader;
    if (!*bb) return msg;
    grpc_slice_buffer *sb = &(*bb)->data.raw.slice_buffer;
    if ((*bb)->type != GRPC_BB_RAW || (*bb)->data.raw.compression != GRPC_COMPRESS_NONE) {
        if (grpc_byte_buffer_reader_init(&reader, *bb)) { /* decompressed by the reader */
            msg = grpc_byte_buffer_reader_readall(&reader);
            grpc_byte_buffer_reader_destroy(&reader);
        }
    } else if (sb->count == 1) {
        msg = grpc_slice_ref(sb->slices[0]);
    } else if (sb->length) { /* slices are released as they are copied, a piece at a time */
        size_t len = sb->length;
        msg = grpc_slice_malloc(len);
        for (size_t off = 0, n; off < len; off += n) {
            n = len - off < SS_SERVER_TRIM_BYTES ? len - off : SS_SERVER_TRIM_BYTES;
            grpc_slice_buffer_move_first_into_buffer(sb, n, GRPC_SLICE_START_PTR(msg) + off);
            ss_server_trim_after(n); /* gRPC's small slices went to the heap, not to the system */
        }
    }
    grpc_byte_buffer_destroy(*bb);
    *bb = NULL;
    return msg;
}

static void on_recv(ss_kserve_stream *s, bool ok)
{
    bool got = ok && s->recv; /* ok without a message: the client half-closed */
    if (got) {
        grpc_slice msg = ss_grpc_take_message(&s->recv);
        handle_request(s, GRPC_SLICE_START_PTR(msg), GRPC_SLICE_LENGTH(msg));
        grpc_slice_unref(msg);
    }
    pthread_mutex_lock(&s->mu);
    s->reading = false;
    if (!ok)
        set_broken(s);
    else if (!got)
        s->half_closed = true;
    read_more(s);
    maybe_finish(s);
    unref_unlock(s);
}

static void on_send(ss_kserve_stream *s, bool ok)
{
    pthread_mutex_lock(&s->mu);
    grpc_byte_buffer_destroy(s->sending);
    s->sending = NULL;
    s->send_busy = false;
    if (!ok) set_broken(s);
    if (!s->broken && s->head) send_next(s);
    read_more(s);
    maybe_finish(s);
    unref_unlock(s);
}

void ss_kserve_stream_event(void *tag, bool ok)
{
    op_tag *t = tag;
    ss_kserve_stream *s = t->stream;
    switch (t->op) {
    case OP_RECV:
        on_recv(s, ok);
        break;
    case OP_SEND:
        on_send(s, ok);
        break;
    case OP_STATUS:
        pthread_mutex_lock(&s->mu);
        unref_unlock(s);
        break;
    case OP_CLOSE: /* the call is over: cancelled when the client went away first */
        pthread_mutex_lock(&s->mu);
        if (s->cancelled) set_broken(s);
        unref_unlock(s);
        break;
    }
}

bool ss_kserve_stream_start(grpc_call *call, const ss_kserve_stream_env *env)
{
    ss_kserve_stream *s = calloc(1, sizeof *s);
    if (!s) {
        grpc_call_cancel_with_status(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
        grpc_call_unref(call);
        return false;
    }
    op_tag *tags[] = {&s->recv_tag, &s->send_tag, &s->status_tag, &s->close_tag};
    for (int i = 0; i < 4; i++)
        *tags[i] = (op_tag){{SS_KSERVE_STREAM_TAG}, (op_kind)i, s};
    s->call = call;
    s->env = *env;
    s->details = grpc_empty_slice();
    pthread_mutex_init(&s->mu, NULL);
    env->live(env->live_ctx, 1);
    pthread_mutex_lock(&s->mu);
    s->refs = 1; /* held until the first receive is posted */
    grpc_op close;
    memset(&close, 0, sizeof close);
    close.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close.data.recv_close_on_server.cancelled = &s->cancelled;
    start_batch(s, &close, 1, &s->close_tag);
    read_more(s);
    unref_unlock(s);
    return true;
}
