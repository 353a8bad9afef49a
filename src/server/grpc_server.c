/*
 * grpc_server: MindSpore's MSService/Predict, grpc.health.v1.Health/Check and the Open Inference
 * Protocol's inference.GRPCInferenceService (KServe v2: ServerLive, ServerReady, ServerMetadata,
 * ModelReady, ModelMetadata, ModelInfer) on the gRPC core C API, with a few worker threads on one
 * completion queue. ModelStreamInfer is handed over to its own state machine (kserve_stream.c)
 * once accepted; its events come through the same queue.
 *
 * Every accepted call is a small state machine driven by completion-queue events:
 *   REQUESTED --(method known)--> RECEIVING --> WAITING (handler owns the request)
 *             --(method unknown)--> FINISHING (UNIMPLEMENTED)                 |
 *   RECEIVING --(bad protobuf / invalid request / health)--> FINISHING  <-----+ done()
 *   FINISHING --> freed.
 * At most one batch is outstanding per call, so batches need no lock. `live` counts call
 * contexts; stop() waits for it to reach zero, which is what guarantees that every request given
 * to the handler was answered (or its call cancelled) before the server and queue are destroyed.
 *
 * A call whose request reached the handler also watches for its end (RECV_CLOSE_ON_SERVER,
 * posted alone): when the client goes away first, the request is cancelled
 * (ss_predict_request_cancel) unless done() has begun, which `answered` (under the call's lock)
 * records. shardserve.Stream/PredictStream (proto/shardserve_stream.proto) is MSService/Predict
 * whose backend may send pieces (a generate servable's new tokens): each becomes one PredictReply
 * and done()'s whole reply the last message. Messages wait in a queue while one is being sent; at
 * most STREAM_MAX_UNSENT of them (or STREAM_MAX_UNSENT_BYTES) for a slow reader, past which the
 * call ends with RESOURCE_EXHAUSTED (counted, limit "stream_backlog") and the request is cancelled.
 * A call context is freed once its final batch and every other batch have completed (`ops`).
 *
 * Limits against slow or greedy clients: at most max_streams concurrent streams per connection
 * (HTTP/2 SETTINGS, enforced by gRPC core), and a call in RECEIVING whose message has not arrived
 * whole within recv_timeout_s of its start is cancelled (RESOURCE_EXHAUSTED, counted in
 * /metrics), so half-sent messages cannot park buffers forever.
 *
 * Receive slots. libgrpc buffers a request message until it is whole, and once a call asks for
 * its message (RECV_MESSAGE) the stream's flow-control window opens to the size the message
 * announces: 1,000 streams stalled part-way through 95 MB messages parked 1.4-1.9 GB. So at most
 * recv_slots calls ask for their message at once (the BDP probe is off, so a stream that has not
 * asked holds at most HTTP/2's 64 KiB initial window). A freed slot goes to the waiting call
 * whose connection has the fewest calls waiting, then to the connection served longest ago, so
 * one connection's many streams cannot starve another client. Health checks (grpc.health.v1) may
 * also take a slot of their own when the others are busy, and wait the same way when it is too.
 * While calls wait, a slot holder whose message has been arriving for more than contended_ms, and
 * whose connection received less than RECV_MIN_BYTES_PER_S over the last half of it (TCP_INFO),
 * is cancelled (RESOURCE_EXHAUSTED, counted as limit "recv_slot"): a stalled sender loses its slot,
 * a large message still flowing keeps it. The worker threads wake at least every SCAN_MS to look
 * for such calls. A received message counts against max_buffered_mb (budget.h) until its call ends,
 * and is refused unread over it; so does its decoded form: before protobuf-c unpacks it, what the
 * unpack will allocate is computed from the wire (pb_budget.h, the codecs) and taken from the same
 * budget (refused over it, or over max_decoded_mb for one request) until the call ends — 300,000
 * small instances in 89 MB unpack to ~400 MB. A message of DECODE_ASIDE_BYTES or more is sized and
 * decoded on the decoder thread (workq.h), so health checks never wait behind it.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "shardserve/server.h"

#include "shardserve/metrics.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <limits.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_received (glibc's lacks it) */
#include <netinet/in.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "grpc_codec.h"
#include "kserve_grpc.h"
#include "kserve_stream.h"
#include "tls.h"
#include "budget.h"
#include "trim.h"
#include "workq.h"

#define PREDICT_METHOD "/mindspore.serving.proto.MSService/Predict"
#define PREDICT_STREAM_METHOD "/shardserve.Stream/PredictStream"
#define STREAM_MAX_UNSENT 4096
#define STREAM_MAX_UNSENT_BYTES ((size_t)64 << 20)
#define HEALTH_METHOD "/grpc.health.v1.Health/Check"
#define REQUESTS_PER_THREAD 2
#define SCAN_MS 100
#define CANCEL_BATCH 64
#define DECODE_ASIDE_BYTES ((size_t)1 << 20)
#define PEERS_SEEN 1024
#define RECV_MIN_BYTES_PER_S (1024.0 * 1024.0)
/* A message at the size limit and its decoded copy (plus ~1 KB of protobuf-c structs) must fit
 * an idle server whose budget is 2 x the limit. */
#define BUDGET_SLACK_BYTES ((size_t)1 << 20)

typedef enum {
    TAG_CALL,
    TAG_SHUTDOWN,
    TAG_CLOSE,
    TAG_SEND,
    TAG_STREAM = SS_KSERVE_STREAM_TAG
} tag_kind;
typedef enum { ST_REQUESTED, ST_QUEUED, ST_RECEIVING, ST_WAITING, ST_FINISHING } call_state;
typedef struct grpc_ctx grpc_ctx;
/* A unary method: the whole request message in, exactly one finish_call out (now or later). */
typedef struct {
    const char *path;
    void (*handle)(grpc_ctx *c, const uint8_t *buf, size_t len);
    ss_kserve_grpc_unary kserve; /* handle_kserve: the KServe RPC answered by the codec alone */
    size_t (*decoded_bytes)(const uint8_t *buf, size_t len); /* decoding's cost, NULL: none */
} grpc_method;

typedef struct {
    tag_kind kind;
} tag_head;

/* The close-watch and send batches of a call carry tags of their own. */
typedef struct {
    tag_head head;
    grpc_ctx *c;
} ctx_tag;

typedef struct {
    uint64_t peer;       /* peer_hash(); 0: a free entry */
    uint64_t granted_ns; /* when the connection was last granted a receive slot, 0: never */
    long waiting;        /* next_in_queue()'s count of its calls in the queue */
    int fd;              /* its socket as peer_rx_bytes last found it, -1: not looked for */
} peer_seen;

typedef struct queued_msg {
    uint8_t *bytes; /* a packed PredictReply */
    size_t len;
    struct queued_msg *next;
} queued_msg;

struct grpc_ctx {
    tag_head head;
    ss_grpc_server *srv;
    call_state state;
    const grpc_method *method; /* NULL until the call's path is found in the method table */
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array request_md;
    grpc_byte_buffer *recv;
    grpc_byte_buffer *send;
    grpc_slice status_details;
    int cancelled;
    ss_predict_request *req;
    ss_kserve_call *kcall; /* ModelInfer: the call the request borrows from */
    /* while QUEUED or RECEIVING: linked in the server's receiving list, cancelled past
     * recv_deadline_ns; while QUEUED also in its queue of calls waiting for a receive slot */
    grpc_ctx *rprev, *rnext;
    bool receiving;
    uint64_t recv_deadline_ns;
    grpc_ctx *qnext;
    uint64_t peer;   /* hash of the connection's peer address ("ipv4:127.0.0.1:PORT") */
    char *peer_name; /* that address (gpr string); both known only under contention (know_peer) */
    int peer_fd;     /* the connection's socket once found (peer_rx_bytes), else -1 */
    uint64_t rx_mark, rx_mark_ns; /* its received bytes when last looked at, and when */
    bool slot;                    /* holds one of the server's receive slots */
    bool health;                  /* a grpc.health.v1 check, which may also take the health slot */
    bool lane;                    /* the slot it holds is the health slot */
    bool evicted;                 /* cancelled to free its slot */
    uint64_t slot_since_ns;
    size_t bytes; /* request + reply message bytes: a large call returns its memory (trim.h) */
    size_t held;  /* request bytes (wire and decoded) taken from the server's budget */
    /* Once the request is with the handler, done(), partial() and the close and send events race:
     * what they share is under mu. */
    pthread_mutex_t mu;
    ctx_tag close_tag, send_tag;
    int ops; /* batches in flight */
    bool close_posted, answered, metadata_sent, send_busy, broken;
    queued_msg *first, *last; /* PredictStream messages not sent yet */
    size_t unsent, unsent_bytes;
    grpc_byte_buffer *sending;
    uint8_t *final_msg; /* done()'s reply, waiting for the queue to drain */
    size_t final_len;
    bool final_ready;
};

struct ss_grpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t *threads;
    int nthreads;
    int port;
    int drain_ms;
    ss_predict_handler handler;
    ss_ready_fn ready;
    void *ready_ctx;
    atomic_bool shutting_down;
    tag_head shutdown_tag;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool shutdown_seen;
    long live; /* call contexts not yet freed */
    uint64_t recv_timeout_ns;
    grpc_ctx *receiving; /* calls waiting for their message (under mu) */
    _Atomic uint64_t next_scan_ns;
    ss_metric_series *cut_recv, *cut_backlog, *cut_decoded;
    size_t max_decoded;  /* one request's decoded size */
    ss_workq *decoder;   /* decodes large messages, so the cq threads stay free for health */
    ss_byte_budget held; /* request messages received and not yet answered */
    /* receive slots (under mu) */
    int recv_slots, slots_used;
    bool health_busy; /* the health checks' own slot */
    uint64_t contended_ns;
    grpc_ctx *queue_head, *queue_tail; /* calls waiting for a slot, in arrival order */
    long queued;
    peer_seen served[PEERS_SEEN]; /* connections seen waiting or granted (hash table) */
    unsigned served_resets;
    ss_metric_series *cut_slot;
};

/* ------------------------------------------------------------------ call lifecycle */

static void live_add(ss_grpc_server *srv, long d)
{
    pthread_mutex_lock(&srv->mu);
    srv->live += d;
    if (srv->live == 0) pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
}

static void post_request(ss_grpc_server *srv)
{
    if (atomic_load(&srv->shutting_down)) return;
    grpc_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        SS_ERROR("grpc: out of memory while posting a call slot");
        return;
    }
    c->head.kind = TAG_CALL;
    c->srv = srv;
    c->state = ST_REQUESTED;
    c->close_tag = (ctx_tag){{TAG_CLOSE}, c};
    c->send_tag = (ctx_tag){{TAG_SEND}, c};
    pthread_mutex_init(&c->mu, NULL);
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->request_md);
    live_add(srv, 1);
    grpc_call_error err = grpc_server_request_call(srv->server, &c->call, &c->details,
                                                   &c->request_md, srv->cq, srv->cq, c);
    if (err != GRPC_CALL_OK) {
        SS_ERROR("grpc: request_call failed (%d)", (int)err);
        grpc_call_details_destroy(&c->details);
        grpc_metadata_array_destroy(&c->request_md);
        pthread_mutex_destroy(&c->mu);
        free(c);
        live_add(srv, -1);
    }
}

static void receiving_start(grpc_ctx *c)
{
    ss_grpc_server *srv = c->srv;
    pthread_mutex_lock(&srv->mu);
    c->recv_deadline_ns = ss_now_ns() + srv->recv_timeout_ns;
    c->receiving = true;
    c->rprev = NULL;
    c->rnext = srv->receiving;
    if (srv->receiving) srv->receiving->rprev = c;
    srv->receiving = c;
    pthread_mutex_unlock(&srv->mu);
}

/* Under mu. */
static void unlink_receiving(ss_grpc_server *srv, grpc_ctx *c)
{
    if (!c->receiving) return;
    if (c->rprev)
        c->rprev->rnext = c->rnext;
    else
        srv->receiving = c->rnext;
    if (c->rnext) c->rnext->rprev = c->rprev;
    c->receiving = false;
}

static void receiving_end(grpc_ctx *c)
{
    ss_grpc_server *srv = c->srv;
    pthread_mutex_lock(&srv->mu);
    unlink_receiving(srv, c);
    pthread_mutex_unlock(&srv->mu);
}

/* ------------------------------------------------------------------ receive slots */

static void finish_call(grpc_ctx *c, grpc_status_code code, const char *details, uint8_t *payload,
                        size_t len);
static bool slot_progressing(ss_grpc_server *srv, grpc_ctx *c, uint64_t now);
static void free_ctx(grpc_ctx *c);

static uint64_t peer_hash(const char *peer)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = peer; p && *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return h | 1; /* 0 marks a free entry */
}

/* Is fd a socket connected to the peer gRPC names "ipv4:A:P" or "ipv6:[A]:P" (or %5B..%5D)? */
static bool fd_is_peer(int fd, const char *peer)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    if (!peer || getpeername(fd, (struct sockaddr *)&sa, &len) != 0) return false;
    char addr[INET6_ADDRSTRLEN], name[INET6_ADDRSTRLEN + 32];
    if (sa.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&sa;
        if (!inet_ntop(AF_INET, &in->sin_addr, addr, sizeof addr)) return false;
        snprintf(name, sizeof name, "ipv4:%s:%u", addr, (unsigned)ntohs(in->sin_port));
        return strcmp(name, peer) == 0;
    }
    if (sa.ss_family != AF_INET6) return false;
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&sa;
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) { /* libgrpc's dual-stack sockets: named ipv4 */
        if (!inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], addr, sizeof addr)) return false;
        snprintf(name, sizeof name, "ipv4:%s:%u", addr, (unsigned)ntohs(in6->sin6_port));
        return strcmp(name, peer) == 0;
    }
    if (!inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof addr)) return false;
    snprintf(name, sizeof name, "ipv6:[%s]:%u", addr, (unsigned)ntohs(in6->sin6_port));
    if (strcmp(name, peer) == 0) return true;
    snprintf(name, sizeof name, "ipv6:%%5B%s%%5D:%u", addr, (unsigned)ntohs(in6->sin6_port));
    return strcmp(name, peer) == 0;
}

/* The call's connection, asked of libgrpc only when slots are contended: an uncontended call
 * never needs it (it costs an allocation and a string). */
static void know_peer(grpc_ctx *c)
{
    if (c->peer_name) return;
    c->peer_name = grpc_call_get_peer(c->call);
    c->peer = peer_hash(c->peer_name);
    c->peer_fd = -1;
}

/* The socket among this process's descriptors that is connected to `peer`, or -1. */
static int find_peer_fd(const char *peer)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int found = -1;
    for (struct dirent *e; found < 0 && (e = readdir(d));) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && fd != dirfd(d) && fd_is_peer(fd, peer)) found = fd;
    }
    closedir(d);
    return found;
}

static peer_seen *seen(ss_grpc_server *srv, uint64_t peer);

/* Under mu: the bytes the call's TCP connection has received so far (TCP_INFO); false when that
 * cannot be known (a Unix socket, or the connection is gone). The socket is looked up among this
 * process's descriptors once per connection (a scan of /proc/self/fd is ~50 system calls) and
 * remembered, checked by one getpeername when a call of the connection uses it again. */
static bool peer_rx_bytes(ss_grpc_server *srv, grpc_ctx *c, uint64_t *rx)
{
    know_peer(c);
    if (c->peer_fd < 0 || !fd_is_peer(c->peer_fd, c->peer_name)) {
        peer_seen *e = seen(srv, c->peer);
        c->peer_fd =
            e->fd >= 0 && fd_is_peer(e->fd, c->peer_name) ? e->fd : find_peer_fd(c->peer_name);
        e->fd = c->peer_fd;
        if (c->peer_fd < 0) return false;
    }
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(c->peer_fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received)
        return false;
    *rx = ti.tcpi_bytes_received;
    return true;
}

/* Under mu: the connection's entry (inserted when missing). A full table starts over, which
 * costs fairness for a moment, not correctness. */
static peer_seen *seen(ss_grpc_server *srv, uint64_t peer)
{
    size_t i = (size_t)(peer % PEERS_SEEN);
    for (size_t n = 0; n < PEERS_SEEN; n++, i = (i + 1) % PEERS_SEEN) {
        if (srv->served[i].peer == peer) return &srv->served[i];
        if (srv->served[i].peer == 0) {
            srv->served[i] = (peer_seen){peer, 0, 0, -1};
            return &srv->served[i];
        }
    }
    memset(srv->served, 0, sizeof srv->served);
    srv->served_resets++;
    i = (size_t)(peer % PEERS_SEEN);
    srv->served[i] = (peer_seen){peer, 0, 0, -1};
    return &srv->served[i];
}

/* Under mu. lane: the health checks' own slot, else one of recv_slots. */
static void take_slot(ss_grpc_server *srv, grpc_ctx *c, bool lane)
{
    uint64_t now = ss_now_ns();
    if (lane)
        srv->health_busy = true;
    else
        srv->slots_used++;
    c->slot = true;
    c->lane = lane;
    c->slot_since_ns = now;
    c->state = ST_RECEIVING;
    if (c->peer) seen(srv, c->peer)->granted_ns = now; /* granted from the queue */
}

/* Under mu: take c out of the queue of calls waiting for a slot (prev: its predecessor). */
static void unqueue(ss_grpc_server *srv, grpc_ctx *c, grpc_ctx *prev)
{
    if (prev)
        prev->qnext = c->qnext;
    else
        srv->queue_head = c->qnext;
    if (srv->queue_tail == c) srv->queue_tail = prev;
    c->qnext = NULL;
    srv->queued--;
}

/* Under mu: the next waiting call (a health check, with health_only) to get a slot, out of the
 * queue; NULL when none waits. It is the one whose connection has the fewest calls waiting (a
 * client with one request goes before one with a hundred stalled streams), then the one whose
 * connection was granted a slot longest ago, then the first to come. */
static grpc_ctx *next_in_queue(ss_grpc_server *srv, bool health_only)
{
    if (!srv->queue_head) return NULL;
    unsigned resets = srv->served_resets;
    for (grpc_ctx *q = srv->queue_head; q; q = q->qnext)
        seen(srv, q->peer)->waiting = 0;
    for (grpc_ctx *q = srv->queue_head; q; q = q->qnext)
        seen(srv, q->peer)->waiting++;
    grpc_ctx *best = NULL, *best_prev = NULL;
    bool fair = resets == srv->served_resets; /* else more connections wait than the table holds */
    long best_waiting = LONG_MAX;
    uint64_t best_at = UINT64_MAX;
    for (grpc_ctx *q = srv->queue_head, *prev = NULL; q; prev = q, q = q->qnext) {
        if (health_only && !q->health) continue;
        if (!fair) { /* the first to come */
            best = q, best_prev = prev;
            break;
        }
        const peer_seen *e = seen(srv, q->peer);
        if (e->waiting < best_waiting || (e->waiting == best_waiting && e->granted_ns < best_at))
            best = q, best_prev = prev, best_waiting = e->waiting, best_at = e->granted_ns;
    }
    if (best) unqueue(srv, best, best_prev);
    return best;
}

/* Ask for the call's request message (it holds a slot). */
static void post_recv(grpc_ctx *c)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv;
    if (grpc_call_start_batch(c->call, &op, 1, c, NULL) != GRPC_CALL_OK) free_ctx(c);
}

/* A call is done receiving (its message came, or it broke): its slot goes to the next in line. */
static void release_slot(grpc_ctx *c)
{
    ss_grpc_server *srv = c->srv;
    if (!c->slot) return;
    grpc_ctx *next = NULL;
    pthread_mutex_lock(&srv->mu);
    c->slot = false;
    if (c->lane)
        srv->health_busy = false;
    else
        srv->slots_used--;
    if (!atomic_load(&srv->shutting_down) && (next = next_in_queue(srv, c->lane))) {
        take_slot(srv, next, c->lane);
        if (srv->queue_head) slot_progressing(srv, next, next->slot_since_ns); /* starts watching */
    }
    pthread_mutex_unlock(&srv->mu);
    if (next) post_recv(next);
}

/* The call's request message is wanted: now, with a free slot, or once one frees up. */
static void receive_or_queue(grpc_ctx *c)
{
    ss_grpc_server *srv = c->srv;
    c->health = strcmp(c->method->path, HEALTH_METHOD) == 0;
    receiving_start(c);
    pthread_mutex_lock(&srv->mu);
    bool now = srv->slots_used < srv->recv_slots && !srv->queue_head;
    bool lane = !now && c->health && !srv->health_busy;
    now = now || lane;
    bool closing = !now && atomic_load(&srv->shutting_down); /* drain_queue() may have run */
    if (now) {
        take_slot(srv, c, lane);
    } else if (closing) {
        unlink_receiving(srv, c);
    } else {
        know_peer(c);
        c->state = ST_QUEUED;
        if (srv->queue_tail)
            srv->queue_tail->qnext = c;
        else
            srv->queue_head = c;
        srv->queue_tail = c;
        srv->queued++;
    }
    pthread_mutex_unlock(&srv->mu);
    if (now)
        post_recv(c);
    else if (closing)
        finish_call(c, GRPC_STATUS_UNAVAILABLE, "the server is shutting down", NULL, 0);
}

/* stop(): the calls still waiting for a slot are answered UNAVAILABLE (they have no batch that
 * the server's shutdown would complete). */
static void drain_queue(ss_grpc_server *srv)
{
    for (;;) {
        pthread_mutex_lock(&srv->mu);
        grpc_ctx *c = srv->queue_head;
        if (c) {
            unqueue(srv, c, NULL);
            unlink_receiving(srv, c);
        }
        pthread_mutex_unlock(&srv->mu);
        if (!c) return;
        finish_call(c, GRPC_STATUS_UNAVAILABLE, "the server is shutting down", NULL, 0);
    }
}

/* Under mu, at each scan while calls wait for a slot: is the message of this slot holder still
 * arriving at RECV_MIN_BYTES_PER_S or more? Judged by its connection's received bytes over the
 * last half contended_ms or more (until that much time has been watched: yes; a burst right after
 * the grant is then not taken for a flow). Where the bytes cannot be counted (a Unix socket): no.
 */
static bool slot_progressing(ss_grpc_server *srv, grpc_ctx *c, uint64_t now)
{
    uint64_t rx;
    if (!peer_rx_bytes(srv, c, &rx)) return false;
    if (!c->rx_mark_ns) {
        c->rx_mark = rx, c->rx_mark_ns = now;
        return true;
    }
    uint64_t span = now - c->rx_mark_ns;
    if (span < srv->contended_ns / 2) return true;
    bool moving = (double)(rx - c->rx_mark) >= RECV_MIN_BYTES_PER_S * ((double)span / 1e9);
    c->rx_mark = rx, c->rx_mark_ns = now;
    return moving;
}

/* Cancel the calls whose message is overdue. The calls are referenced under the lock and
 * cancelled outside it; their RECV batch then completes (not ok) and frees them as usual. */
static void cancel_overdue(ss_grpc_server *srv)
{
    uint64_t now = ss_now_ns(), next = atomic_load(&srv->next_scan_ns);
    if (now < next ||
        !atomic_compare_exchange_strong(&srv->next_scan_ns, &next, now + SCAN_MS * 1000000ull))
        return;
    grpc_call *overdue[CANCEL_BATCH], *evict[CANCEL_BATCH];
    grpc_ctx *expired[CANCEL_BATCH];
    size_t n = 0, n_evict = 0, n_expired = 0;
    pthread_mutex_lock(&srv->mu);
    bool contended = srv->queue_head && srv->slots_used >= srv->recv_slots;
    bool health_waits = false; /* for the health slot */
    for (grpc_ctx *q = srv->health_busy ? srv->queue_head : NULL; q && !health_waits; q = q->qnext)
        health_waits = q->health;
    long waiting = srv->queued;
    for (grpc_ctx *c = srv->receiving, *cnext; c; c = cnext) {
        cnext = c->rnext;
        if (c->state == ST_QUEUED && now >= c->recv_deadline_ns && n_expired < CANCEL_BATCH) {
            grpc_ctx *prev = NULL;
            for (grpc_ctx *q = srv->queue_head; q && q != c; q = q->qnext)
                prev = q;
            unqueue(srv, c, prev);
            unlink_receiving(srv, c);
            expired[n_expired++] = c;
        } else if (c->state == ST_RECEIVING && now >= c->recv_deadline_ns && n < CANCEL_BATCH) {
            c->recv_deadline_ns = UINT64_MAX; /* cancelled once */
            grpc_call_ref(c->call);
            overdue[n++] = c->call;
        } else if ((c->lane ? health_waits : contended) && c->slot && !c->evicted &&
                   n_evict < CANCEL_BATCH && !slot_progressing(srv, c, now) &&
                   now - c->slot_since_ns > srv->contended_ns) {
            c->evicted = true;
            grpc_call_ref(c->call);
            evict[n_evict++] = c->call;
        }
    }
    pthread_mutex_unlock(&srv->mu);
    if (n + n_expired) {
        ss_metric_add(srv->cut_recv, (double)(n + n_expired));
        SS_WARN("grpc: cancelled %zu call(s) whose request message did not arrive within %llu s",
                n + n_expired, (unsigned long long)(srv->recv_timeout_ns / 1000000000ull));
    }
    for (size_t i = 0; i < n; i++) {
        grpc_call_cancel_with_status(
            overdue[i], GRPC_STATUS_RESOURCE_EXHAUSTED,
            "the request message did not arrive within the receive timeout", NULL);
        grpc_call_unref(overdue[i]);
    }
    for (size_t i = 0; i < n_expired; i++)
        finish_call(expired[i], GRPC_STATUS_RESOURCE_EXHAUSTED,
                    "the request waited for a receive slot (--grpc-recv-slots) until the receive "
                    "timeout",
                    NULL, 0);
    if (!n_evict) return;
    ss_metric_add(srv->cut_slot, (double)n_evict);
    char why[300];
    snprintf(why, sizeof why,
             "the request message was still arriving after %llu ms, at less than %.0f MB/s, while "
             "%ld other request(s) waited for one of the server's %d receive slots "
             "(--grpc-recv-slots, --grpc-recv-contended-ms)",
             (unsigned long long)(srv->contended_ns / 1000000u), RECV_MIN_BYTES_PER_S / 1048576.0,
             waiting, srv->recv_slots);
    SS_WARN("grpc: cancelled %zu call(s): %s", n_evict, why);
    for (size_t i = 0; i < n_evict; i++) {
        grpc_call_cancel_with_status(evict[i], GRPC_STATUS_RESOURCE_EXHAUSTED, why, NULL);
        grpc_call_unref(evict[i]);
    }
}

static void drop_queue(grpc_ctx *c)
{
    while (c->first) {
        queued_msg *m = c->first;
        c->first = m->next;
        free(m->bytes);
        free(m);
    }
    c->last = NULL;
    c->unsent = c->unsent_bytes = 0;
}

static void free_ctx(grpc_ctx *c)
{
    ss_grpc_server *srv = c->srv;
    release_slot(c);
    receiving_end(c);
    gpr_free(c->peer_name);
    drop_queue(c);
    free(c->final_msg);
    if (c->sending) grpc_byte_buffer_destroy(c->sending);
    pthread_mutex_destroy(&c->mu);
    if (c->call) grpc_call_unref(c->call);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->request_md);
    if (c->recv) grpc_byte_buffer_destroy(c->recv);
    if (c->send) grpc_byte_buffer_destroy(c->send);
    grpc_slice_unref(c->status_details);
    ss_predict_request_free(c->req);
    ss_kserve_call_free(c->kcall);
    ss_byte_budget_give(&srv->held, c->held);
    size_t bytes = c->bytes + c->held;
    free(c);
    live_add(srv, -1);
    ss_server_trim_after(bytes);
}

/* A batch of the call completed: the context goes with the last one once the final batch ran. */
static void op_done(grpc_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    bool last = --c->ops == 0 && c->state == ST_FINISHING;
    pthread_mutex_unlock(&c->mu);
    if (last) free_ctx(c);
}

/* Send the final batch: optional message + status. Takes ownership of `payload` (malloc'd). */
static void finish_call(grpc_ctx *c, grpc_status_code code, const char *details, uint8_t *payload,
                        size_t len)
{
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    pthread_mutex_lock(&c->mu);
    if (!c->metadata_sent) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    c->metadata_sent = true;
    bool watch_close = !c->close_posted;
    c->state = ST_FINISHING;
    c->ops++;
    pthread_mutex_unlock(&c->mu);
    if (payload) {
        c->bytes += len;
        grpc_slice s = grpc_slice_new(payload, len, free);
        c->send = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->send;
    }
    c->status_details = grpc_slice_from_copied_string(details ? details : "");
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n++].data.send_status_from_server.status_details = &c->status_details;
    if (watch_close) {
        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
    }
    grpc_call_error err = grpc_call_start_batch(c->call, ops, n, c, NULL);
    if (err != GRPC_CALL_OK) {
        SS_ERROR("grpc: cannot send a reply (call error %d)", (int)err);
        grpc_call_cancel(c->call, NULL); /* so a close watch still completes */
        op_done(c);
    }
}

/* Before the handler gets the request: learn when the call ends, to cancel the request if the
 * client goes away first. */
static void watch_close(grpc_ctx *c)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    c->close_posted = true; /* the handler does not have the request yet: no race */
    c->ops++;
    if (grpc_call_start_batch(c->call, &op, 1, &c->close_tag, NULL) != GRPC_CALL_OK) {
        c->close_posted = false;
        c->ops--;
    }
}

static void on_close(grpc_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    if (c->cancelled) {
        c->broken = true;
        drop_queue(c);
        if (!c->answered) ss_predict_request_cancel(c->req);
    }
    pthread_mutex_unlock(&c->mu);
    op_done(c);
}

/* done() has begun: from now on the request is not cancelled (it is about to be freed). */
static void mark_answered(grpc_ctx *c)
{
    pthread_mutex_lock(&c->mu);
    c->answered = true;
    pthread_mutex_unlock(&c->mu);
}

/* ------------------------------------------------------------------ PredictStream sends */

/* Send the next queued message (lock held, no send in flight). */
static void send_next(grpc_ctx *c)
{
    queued_msg *m = c->first;
    c->first = m->next;
    if (!c->first) c->last = NULL;
    c->unsent--;
    c->unsent_bytes -= m->len;
    c->bytes += m->len;
    uint8_t *bytes = m->bytes;
    size_t len = m->len;
    free(m);
    c->ops++;
    c->send_busy =
        ss_grpc_send_message(c->call, bytes, len, &c->metadata_sent, &c->sending, &c->send_tag);
    if (!c->send_busy) {
        c->ops--;
        c->broken = true;
        grpc_call_cancel(c->call, NULL);
    }
}

/* The final message goes once every piece before it went (or the call broke). */
static void finish_after_sends(grpc_ctx *c, uint8_t *payload, size_t len)
{
    pthread_mutex_lock(&c->mu);
    if (c->send_busy) {
        c->final_msg = payload;
        c->final_len = len;
        c->final_ready = true;
        payload = NULL;
    }
    bool now = !c->final_ready;
    pthread_mutex_unlock(&c->mu);
    if (now) finish_call(c, GRPC_STATUS_OK, NULL, payload, len);
}

static void on_send(grpc_ctx *c, bool ok)
{
    pthread_mutex_lock(&c->mu);
    grpc_byte_buffer_destroy(c->sending);
    c->sending = NULL;
    c->send_busy = false;
    if (!ok) {
        c->broken = true;
        drop_queue(c);
        if (!c->answered) ss_predict_request_cancel(c->req);
    }
    if (c->first) send_next(c);
    bool finish = c->final_ready && !c->send_busy;
    uint8_t *payload = finish ? c->final_msg : NULL;
    size_t len = c->final_len;
    if (finish) c->final_msg = NULL, c->final_ready = false;
    pthread_mutex_unlock(&c->mu);
    if (finish) finish_call(c, GRPC_STATUS_OK, NULL, payload, len);
    op_done(c);
}

/* Queue one piece (consumed); past the backlog limit the call ends and the request stops. */
static void queue_piece(grpc_ctx *c, uint8_t *bytes, size_t len)
{
    queued_msg *m = calloc(1, sizeof *m);
    pthread_mutex_lock(&c->mu);
    bool over = c->unsent >= STREAM_MAX_UNSENT || c->unsent_bytes + len > STREAM_MAX_UNSENT_BYTES;
    if (!m || over || c->broken || c->answered) {
        if (!c->broken && (over || !m)) {
            c->broken = true;
            drop_queue(c);
            ss_predict_request_cancel(c->req);
            if (over) ss_metric_add(c->srv->cut_backlog, 1);
            grpc_call_cancel_with_status(
                c->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                !m ? "out of memory"
                   : "the client reads this stream too slowly: more than 4096 messages or 64 MiB "
                     "unsent; the request was cancelled",
                NULL);
        }
        pthread_mutex_unlock(&c->mu);
        free(m);
        free(bytes);
        return;
    }
    *m = (queued_msg){bytes, len, NULL};
    if (c->last)
        c->last->next = m;
    else
        c->first = m;
    c->last = m;
    c->unsent++;
    c->unsent_bytes += len;
    if (!c->send_busy) send_next(c);
    pthread_mutex_unlock(&c->mu);
}

/* ss_predict_partial for PredictStream: a PredictReply with the request's instance count whose
 * instance `instance` holds the piece (borrowed, not copied) and the others nothing. */
static void stream_piece(void *ctx, size_t instance, const ss_serving_instance *chunk)
{
    grpc_ctx *c = ctx;
    ss_predict_reply *reply = ss_predict_reply_new(c->req->count);
    if (!reply || instance >= reply->count) {
        ss_predict_reply_free(reply);
        return; /* out of memory: the piece is missed, the final reply has it */
    }
    reply->instances[instance] = *chunk;
    uint8_t *buf = NULL;
    size_t len = 0;
    ss_status *st = ss_grpc_encode_reply(c->req, reply, &buf, &len);
    memset(&reply->instances[instance], 0, sizeof reply->instances[instance]);
    ss_predict_reply_free(reply);
    if (st) {
        SS_WARN("grpc: a streamed piece was not sent: %s", st->msg);
        ss_status_free(st);
        return;
    }
    queue_piece(c, buf, len);
}

static void finish_with_reply(grpc_ctx *c, ss_predict_reply *reply)
{
    reply = ss_predict_reply_finish(reply, c->req);
    if (!reply) {
        finish_call(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        return;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    ss_status *st = ss_grpc_encode_reply(c->req, reply, &buf, &len);
    ss_predict_reply_free(reply);
    if (st) {
        SS_ERROR("grpc: %s", st->msg);
        finish_call(c, GRPC_STATUS_INTERNAL, st->msg, NULL, 0);
        ss_status_free(st);
        return;
    }
    finish_after_sends(c, buf, len);
}

static void predict_done(void *done_ctx, ss_predict_reply *reply)
{
    mark_answered(done_ctx);
    finish_with_reply(done_ctx, reply);
}

/* Predict, or PredictStream when `stream`: the same request, pieces sent as they come. */
static void start_predict(grpc_ctx *c, const uint8_t *buf, size_t len, bool stream)
{
    ss_predict_reply *invalid = NULL;
    ss_status *st = ss_grpc_decode_request_limited(buf, len, ss_predict_handler_name_limit,
                                                   &c->srv->handler, &c->req, &invalid);
    if (st) {
        SS_DEBUG("grpc: %s", st->msg);
        finish_call(
            c, st->code == SS_ERR_LIMIT ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_INTERNAL,
            st->msg, NULL, 0);
        ss_status_free(st);
        return;
    }
    if (invalid) {
        finish_with_reply(c, invalid);
        return;
    }
    c->state = ST_WAITING;
    if (stream) {
        c->req->partial = stream_piece;
        c->req->partial_ctx = c;
    }
    watch_close(c);
    ss_predict_handler *h = &c->srv->handler;
    h->predict(h->ctx, c->req, predict_done, c);
}

static void handle_predict(grpc_ctx *c, const uint8_t *buf, size_t len)
{
    start_predict(c, buf, len, false);
}

static void handle_predict_stream(grpc_ctx *c, const uint8_t *buf, size_t len)
{
    start_predict(c, buf, len, true);
}

/* grpc.health.v1: HealthCheckRequest{string service = 1}, HealthCheckResponse{enum status = 1}
 * with SERVING = 1, NOT_SERVING = 2. Small enough to read and write by hand. */
static bool health_service_name(const uint8_t *p, size_t len, const uint8_t **name, size_t *nlen)
{
    *name = NULL;
    *nlen = 0;
    size_t i = 0;
    while (i < len) {
        uint8_t key = p[i++];
        if (key == 0x0a) { /* field 1, length-delimited */
            uint64_t n = 0;
            int shift = 0;
            while (i < len && shift < 64) {
                n |= (uint64_t)(p[i] & 0x7f) << shift;
                shift += 7;
                if (!(p[i++] & 0x80)) break;
            }
            if (n > len - i) return false;
            *name = p + i;
            *nlen = (size_t)n;
            i += (size_t)n;
        } else {
            return false; /* nothing else is defined in HealthCheckRequest */
        }
    }
    return true;
}

static void handle_health(grpc_ctx *c, const uint8_t *buf, size_t len)
{
    static const char ours[] = "mindspore.serving.proto.MSService";
    const uint8_t *name;
    size_t nlen;
    if (!health_service_name(buf, len, &name, &nlen)) {
        finish_call(c, GRPC_STATUS_INTERNAL, "cannot parse HealthCheckRequest", NULL, 0);
        return;
    }
    if (nlen && !(nlen == sizeof ours - 1 && memcmp(name, ours, nlen) == 0)) {
        finish_call(c, GRPC_STATUS_NOT_FOUND, "unknown service", NULL, 0);
        return;
    }
    ss_grpc_server *srv = c->srv;
    bool ready = !srv->ready || srv->ready(srv->ready_ctx);
    uint8_t *out = malloc(2);
    if (!out) {
        finish_call(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        return;
    }
    out[0] = 0x08;
    out[1] = ready ? 1 : 2;
    finish_call(c, GRPC_STATUS_OK, NULL, out, 2);
}

/* ------------------------------------------------------------------ KServe v2 */

static void finish_kserve_error(grpc_ctx *c, const ss_kserve_error *err)
{
    finish_call(c, (grpc_status_code)ss_kserve_grpc_status(err->status), err->msg, NULL, 0);
}

static void handle_kserve(grpc_ctx *c, const uint8_t *buf, size_t len)
{
    ss_grpc_server *srv = c->srv;
    ss_kserve_grpc_env env = {&srv->handler, srv->ready, srv->ready_ctx};
    ss_kserve_error err = {0};
    uint8_t *out = NULL;
    size_t out_len = 0;
    if (!c->method->kserve(&env, buf, len, &out, &out_len, &err)) {
        finish_kserve_error(c, &err);
        return;
    }
    finish_call(c, GRPC_STATUS_OK, NULL, out, out_len);
}

static void kserve_infer_done(void *done_ctx, ss_predict_reply *reply)
{
    grpc_ctx *c = done_ctx;
    mark_answered(c);
    ss_kserve_error err = {0};
    uint8_t *out = NULL;
    size_t len = 0;
    reply = ss_predict_reply_finish(reply, c->req);
    bool ok = reply && ss_kserve_grpc_encode_reply(c->kcall, reply, &out, &len, &err);
    if (!reply) ss_kserve_fail(&err, 500, "out of memory");
    ss_predict_reply_free(reply);
    if (!ok) {
        finish_kserve_error(c, &err);
        return;
    }
    finish_call(c, GRPC_STATUS_OK, NULL, out, len);
}

static void handle_kserve_infer(grpc_ctx *c, const uint8_t *buf, size_t len)
{
    ss_kserve_error err = {0};
    ss_predict_handler *h = &c->srv->handler;
    if (!ss_kserve_grpc_decode_infer(h, buf, len, &c->kcall, &c->req, &err)) {
        finish_kserve_error(c, &err);
        return;
    }
    c->state = ST_WAITING;
    watch_close(c);
    h->predict(h->ctx, c->req, kserve_infer_done, c);
}

#define KSERVE(rpc) "/inference.GRPCInferenceService/" rpc

/* The services this server answers; any other path gets UNIMPLEMENTED. */
static const grpc_method methods[] = {
    {PREDICT_METHOD, handle_predict, NULL, ss_grpc_request_decoded_bytes},
    {PREDICT_STREAM_METHOD, handle_predict_stream, NULL, ss_grpc_request_decoded_bytes},
    {HEALTH_METHOD, handle_health, NULL, NULL},
    {KSERVE("ServerLive"), handle_kserve, ss_kserve_grpc_server_live},
    {KSERVE("ServerReady"), handle_kserve, ss_kserve_grpc_server_ready},
    {KSERVE("ServerMetadata"), handle_kserve, ss_kserve_grpc_server_metadata},
    {KSERVE("ModelReady"), handle_kserve, ss_kserve_grpc_model_ready},
    {KSERVE("ModelMetadata"), handle_kserve, ss_kserve_grpc_model_metadata},
    {KSERVE("ModelInfer"), handle_kserve_infer, NULL, ss_kserve_grpc_infer_decoded_bytes},
    {KSERVE("ModelStreamInfer"), NULL, NULL, NULL}, /* a stream: kserve_stream.c runs it */
    {KSERVE("ModelStatistics"), handle_kserve, ss_kserve_grpc_model_statistics},
    {KSERVE("RepositoryIndex"), handle_kserve, ss_kserve_grpc_repository_index},
    {KSERVE("RepositoryModelLoad"), handle_kserve, ss_kserve_grpc_repository_load},
    {KSERVE("RepositoryModelUnload"), handle_kserve, ss_kserve_grpc_repository_unload},
    {KSERVE("SystemSharedMemoryStatus"), handle_kserve, ss_kserve_grpc_shm_status},
    {KSERVE("SystemSharedMemoryRegister"), handle_kserve, ss_kserve_grpc_shm_register},
    {KSERVE("SystemSharedMemoryUnregister"), handle_kserve, ss_kserve_grpc_shm_unregister},
};

static size_t mb_up(size_t bytes)
{
    return (bytes + ((size_t)1 << 20) - 1) >> 20;
}

/* Take a message's decoded size (and `also` bytes more) from the server's budget: *taken, or
 * false with the reason naming the limit and the estimate (counted). */
static bool take_decoded(ss_grpc_server *srv, size_t (*decoded_bytes)(const uint8_t *, size_t),
                         const uint8_t *buf, size_t len, size_t also, size_t *taken, char *why,
                         size_t cap)
{
    size_t decoded = decoded_bytes(buf, len);
    if (decoded > srv->max_decoded) {
        ss_metric_add(srv->cut_decoded, 1);
        snprintf(why, cap,
                 "the request's decoded size is estimated at %zu MB (%zu MB on the wire), over "
                 "the per-request limit of %zu MB (--grpc-max-decoded-mb)",
                 mb_up(decoded), mb_up(len), srv->max_decoded >> 20);
        return false;
    }
    *taken = decoded + also;
    if (ss_byte_budget_take(&srv->held, *taken)) return true;
    if (*taken > srv->held.limit) { /* never fits, even on an idle server: no "try again" */
        snprintf(why, cap,
                 "the request's decoded size is estimated at %zu MB, which with what it holds "
                 "on the wire (%zu MB) is over the server's limit of %zu MB of received requests "
                 "(--grpc-max-buffered-mb); keep --grpc-max-decoded-mb below it",
                 mb_up(decoded), mb_up(also), srv->held.limit >> 20);
        return false;
    }
    snprintf(why, cap,
             "the server holds %zu MB of received requests and this one's decoded size is "
             "estimated at %zu MB: over its limit of %zu MB (--grpc-max-buffered-mb), try again "
             "later",
             mb_up(atomic_load(&srv->held.used)), mb_up(decoded), srv->held.limit >> 20);
    return false;
}

/* A ModelStreamInfer message and its decoded size are held until its answer (the stream reads
 * the next message meanwhile, so each request holds its own). */
static bool stream_hold(void *srv, const uint8_t *buf, size_t len, size_t *held, char *why,
                        size_t cap)
{
    return take_decoded(srv, ss_kserve_grpc_infer_decoded_bytes, buf, len, len, held, why, cap);
}

static void stream_release(void *srv, size_t held)
{
    ss_byte_budget_give(&((ss_grpc_server *)srv)->held, held);
    ss_server_trim_after(held);
}

static void stream_live(void *srv, long delta)
{
    live_add(srv, delta);
}

/* A streaming call leaves this file's unary state machine for its own (kserve_stream.c). */
static void start_stream(grpc_ctx *c)
{
    ss_kserve_stream_env env = {&c->srv->handler, stream_live, c->srv, stream_hold, stream_release};
    grpc_call *call = c->call;
    c->call = NULL;
    ss_kserve_stream_start(call, &env);
    free_ctx(c);
}

static void on_requested(grpc_ctx *c, bool ok)
{
    if (!ok) { /* server shutting down: this slot never got a call */
        free_ctx(c);
        return;
    }
    post_request(c->srv);
    for (size_t i = 0; !c->method && i < sizeof methods / sizeof *methods; i++)
        if (grpc_slice_str_cmp(c->details.method, methods[i].path) == 0) c->method = &methods[i];
    if (!c->method) {
        char *m = grpc_slice_to_c_string(c->details.method);
        char detail[512];
        snprintf(detail, sizeof detail, "unknown method %s", m);
        gpr_free(m);
        finish_call(c, GRPC_STATUS_UNIMPLEMENTED, detail, NULL, 0);
        return;
    }
    if (!c->method->handle) {
        start_stream(c);
        return;
    }
    receive_or_queue(c);
}

static void release_held(grpc_ctx *c)
{
    ss_byte_budget_give(&c->srv->held, c->held);
    c->held = 0;
}

/* What decoding the message will allocate joins the message in the server's budget until the
 * call ends; over one request's limit or the server's, the call is refused (RESOURCE_EXHAUSTED)
 * and its budget freed at once. */
static bool hold_decoded(grpc_ctx *c, const uint8_t *buf, size_t len)
{
    if (!c->method->decoded_bytes) return true;
    char why[300];
    size_t taken = 0;
    if (take_decoded(c->srv, c->method->decoded_bytes, buf, len, 0, &taken, why, sizeof why)) {
        c->held += taken;
        return true;
    }
    SS_DEBUG("grpc: %s", why);
    release_held(c);
    finish_call(c, GRPC_STATUS_RESOURCE_EXHAUSTED, why, NULL, 0);
    return false;
}

/* Decode and handle one message, once its decoded size is held too. */
static void handle_message(grpc_ctx *c, const uint8_t *buf, size_t len)
{
    if (hold_decoded(c, buf, len)) c->method->handle(c, buf, len);
}

/* Flatten the message (consumed), then decode and handle it. */
static void take_and_handle(grpc_ctx *c, grpc_byte_buffer **recv)
{
    grpc_slice msg = ss_grpc_take_message(recv);
    handle_message(c, GRPC_SLICE_START_PTR(msg), GRPC_SLICE_LENGTH(msg));
    grpc_slice_unref(msg);
}

typedef struct {
    grpc_ctx *c;
    grpc_byte_buffer *recv;
} aside_job;

static void aside_main(void *arg)
{
    aside_job *j = arg;
    take_and_handle(j->c, &j->recv);
    free(j);
}

/* A large message is flattened and decoded on the decoder thread: two cq threads busy with it
 * would leave health checks and small calls waiting. false: do it here. */
static bool decode_aside(grpc_ctx *c, grpc_byte_buffer *recv)
{
    aside_job *j = c->srv->decoder ? malloc(sizeof *j) : NULL;
    if (!j) return false;
    *j = (aside_job){c, recv};
    if (ss_workq_push(c->srv->decoder, aside_main, j)) return true;
    free(j);
    return false;
}

/* The message counts against the server's budget until the call ends; over it, the call is
 * refused (RESOURCE_EXHAUSTED, counted) and its bytes freed at once. */
static bool hold_message(grpc_ctx *c)
{
    ss_byte_budget *b = &c->srv->held;
    if (ss_byte_budget_take(b, c->bytes)) {
        c->held = c->bytes;
        return true;
    }
    char why[200];
    snprintf(why, sizeof why,
             "the server holds %zu MB of received requests, over its limit of %zu MB "
             "(--grpc-max-buffered-mb) with this one: try again later",
             (atomic_load(&b->used) + c->bytes) >> 20, b->limit >> 20);
    grpc_byte_buffer_destroy(c->recv); /* gRPC's copy of the message goes now, not at the end */
    c->recv = NULL;
    finish_call(c, GRPC_STATUS_RESOURCE_EXHAUSTED, why, NULL, 0);
    return false;
}

static void on_received(grpc_ctx *c, bool ok)
{
    release_slot(c);
    receiving_end(c);
    if (!ok) { /* the call broke before its message arrived */
        free_ctx(c);
        return;
    }
    if (!c->recv) {
        finish_call(c, GRPC_STATUS_INTERNAL, "no request message", NULL, 0);
        return;
    }
    c->bytes = grpc_byte_buffer_length(c->recv);
    if (!hold_message(c)) return; /* refused before it is copied */
    grpc_byte_buffer *recv = c->recv;
    c->recv = NULL;
    if (c->bytes >= DECODE_ASIDE_BYTES && decode_aside(c, recv)) return;
    take_and_handle(c, &recv);
}

static void on_event(ss_grpc_server *srv, void *tag, bool ok)
{
    tag_head *head = tag;
    if (head->kind == TAG_STREAM) {
        ss_kserve_stream_event(tag, ok);
        return;
    }
    if (head->kind == TAG_CLOSE) {
        on_close(((ctx_tag *)tag)->c);
        return;
    }
    if (head->kind == TAG_SEND) {
        on_send(((ctx_tag *)tag)->c, ok);
        return;
    }
    if (head->kind == TAG_SHUTDOWN) {
        pthread_mutex_lock(&srv->mu);
        srv->shutdown_seen = true;
        pthread_cond_broadcast(&srv->cv);
        pthread_mutex_unlock(&srv->mu);
        return;
    }
    grpc_ctx *c = tag;
    switch (c->state) {
    case ST_REQUESTED:
        on_requested(c, ok);
        break;
    case ST_RECEIVING:
        on_received(c, ok);
        break;
    case ST_FINISHING:
        op_done(c);
        break;
    case ST_QUEUED:
    case ST_WAITING:
        SS_ERROR("grpc: event for a call waiting for a receive slot or on its handler");
        break;
    }
}

static void *worker_main(void *arg)
{
    ss_grpc_server *srv = arg;
    pthread_setname_np(pthread_self(), "ss-grpc-cq");
    for (int i = 0; i < REQUESTS_PER_THREAD; i++)
        post_request(srv);
    for (;;) {
        gpr_timespec wake =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(SCAN_MS, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(srv->cq, wake, NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_OP_COMPLETE) on_event(srv, ev.tag, ev.success != 0);
        cancel_overdue(srv);
    }
    return NULL;
}

/* ------------------------------------------------------------------ start / stop */

/* libgrpc 1.51 stops a listening port for good after an accept failure other than EAGAIN (EMFILE:
 * out of descriptors), saying only "Failed accept4". Readiness reports it from then on. */
static atomic_bool accept_stopped;

static void note_accept_stopped(void)
{
    if (atomic_exchange(&accept_stopped, true)) return;
    SS_ERROR("grpc: the gRPC listener has stopped accepting connections (libgrpc does not resume "
             "after an accept failure): /health/ready says not ready from now on; restart serve");
}

bool ss_grpc_server_listening(const ss_grpc_server *srv)
{
    return srv && !atomic_load(&accept_stopped);
}

/* gRPC core's log lines go through ours. Accept failures (EMFILE/ENFILE: out of descriptors)
 * repeat as fast as connections arrive: at most one such line a second, with a count of the
 * ones dropped. */
static void grpc_log(gpr_log_func_args *a)
{
    static _Atomic uint64_t last_ns;
    static atomic_ulong dropped;
    bool accept_failure = strstr(a->message, "accept") || strstr(a->message, "Too many open files");
    if (strstr(a->message, "Failed accept4")) note_accept_stopped();
    if (accept_failure) {
        uint64_t now = ss_now_ns(), last = atomic_load(&last_ns);
        if (now - last < 1000000000ull || !atomic_compare_exchange_strong(&last_ns, &last, now)) {
            atomic_fetch_add(&dropped, 1);
            return;
        }
    }
    ss_log_level level = a->severity == GPR_LOG_SEVERITY_ERROR  ? SS_LOG_ERROR
                         : a->severity == GPR_LOG_SEVERITY_INFO ? SS_LOG_INFO
                                                                : SS_LOG_DEBUG;
    unsigned long n = accept_failure ? atomic_exchange(&dropped, 0) : 0;
    if (n)
        ss_log(level, "grpc: %s (%s:%d; %lu more like it in the last second)", a->message, a->file,
               a->line, n);
    else if (level != SS_LOG_DEBUG || ss_log_enabled(SS_LOG_DEBUG))
        ss_log(level, "grpc: %s (%s:%d)", a->message, a->file, a->line);
}

static ss_status *check_options(const ss_grpc_options *o)
{
    if (!o->address || !o->address[0])
        return ss_errf(SS_ERR_INVALID, "Serving gRPC server start failed, address is empty");
    if (strncmp(o->address, "unix:", 5) == 0) {
        if (!o->address[5])
            return ss_errf(SS_ERR_INVALID, "Empty grpc server unix domain socket address");
    } else {
        const char *colon = strrchr(o->address, ':');
        char *end = NULL;
        long port = colon ? strtol(colon + 1, &end, 10) : -1;
        if (!colon || colon == o->address || !end || *end || end == colon + 1 || port < 0 ||
            port > 65535)
            return ss_errf(SS_ERR_INVALID,
                           "Serving gRPC server start failed, address '%s' is not host:port or "
                           "unix:path",
                           o->address);
    }
    if (o->max_msg_mb < 0 || o->max_msg_mb > SS_SERVER_MAX_MSG_MB_LIMIT)
        return ss_errf(SS_ERR_INVALID, "max_msg_mb_size %d is outside [1, %d]", o->max_msg_mb,
                       SS_SERVER_MAX_MSG_MB_LIMIT);
    if (!o->handler.predict) return ss_errf(SS_ERR_INVALID, "gRPC server needs a predict handler");
    if (o->max_streams < 0 || o->recv_timeout_s < 0 || o->max_buffered_mb < 0 ||
        o->max_decoded_mb < 0)
        return ss_errf(SS_ERR_INVALID, "gRPC server limits must be >= 0 (0 = the default)");
    return NULL;
}

/* Insecure, or MindSpore's SSLConfig: the client certificate is not requested unless
 * verify_client, which requires one signed by custom_ca. gRPC copies the PEM texts. */
static grpc_server_credentials *server_credentials(const ss_grpc_options *o, ss_status **st)
{
    *st = NULL;
    if (!o->ssl) return grpc_insecure_server_credentials_create();
    ss_tls_pems pems;
    *st = ss_tls_load(o->ssl, "gRPC", &pems);
    if (*st) return NULL;
    grpc_ssl_pem_key_cert_pair pair = {pems.key, pems.cert};
    grpc_server_credentials *creds = grpc_ssl_server_credentials_create_ex(
        pems.ca, &pair, 1,
        pems.verify_client ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                           : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
    ss_tls_pems_free(&pems);
    if (!creds)
        *st = ss_errf(SS_ERR_INVALID, "Serving gRPC server start failed, invalid SSL config");
    return creds;
}

static void destroy(ss_grpc_server *srv)
{
    ss_workq_free(srv->decoder); /* its jobs may still finish calls: before the cq goes */
    if (srv->server) grpc_server_destroy(srv->server);
    if (srv->cq) {
        grpc_completion_queue_shutdown(srv->cq);
        for (int i = 0; i < srv->nthreads; i++)
            pthread_join(srv->threads[i], NULL);
        if (!srv->nthreads) { /* drain the queue ourselves */
            while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                       .type != GRPC_QUEUE_SHUTDOWN) {
            }
        }
        grpc_completion_queue_destroy(srv->cq);
    }
    free(srv->threads);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
    free(srv);
    grpc_shutdown();
}

/* A quarter of the usable CPUs (ss_usable_cpus), 1 to 4: the completion-queue threads only decode
 * and hand over (large messages go to the decoder thread), and each extra thread costs a hand-over
 * of gRPC's poller per event (on 2 cores, 1 thread instead of 2 took a 1-rank servable from 4,900
 * to 7,000 req/s at concurrency 16 in one same-run A/B). */
static int default_threads(void)
{
    long n = ss_usable_cpus() / 4;
    return n < 1 ? 1 : n > 4 ? 4 : (int)n;
}

ss_status *ss_grpc_server_start(const ss_grpc_options *opts, ss_grpc_server **out)
{
    *out = NULL;
    ss_status *st = check_options(opts);
    if (st) return st;
    ss_grpc_server *srv = calloc(1, sizeof *srv);
    if (!srv) return ss_errf(SS_ERR_NOMEM, "cannot allocate the gRPC server");
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    srv->handler = opts->handler;
    srv->ready = opts->ready;
    srv->ready_ctx = opts->ready_ctx;
    srv->drain_ms = opts->drain_ms > 0 ? opts->drain_ms : 5000;
    srv->shutdown_tag.kind = TAG_SHUTDOWN;
    int threads = opts->threads > 0 ? opts->threads : default_threads();
    int mb = opts->max_msg_mb ? opts->max_msg_mb : SS_SERVER_DEFAULT_MAX_MSG_MB;

    gpr_set_log_function(grpc_log);
    grpc_init();
    int streams = opts->max_streams > 0 ? opts->max_streams : SS_SERVER_DEFAULT_GRPC_STREAMS;
    int recv_s =
        opts->recv_timeout_s > 0 ? opts->recv_timeout_s : SS_SERVER_DEFAULT_GRPC_RECV_TIMEOUT_S;
    srv->recv_timeout_ns = (uint64_t)recv_s * 1000000000ull;
    ss_status *dq = ss_workq_new(1, "ss-grpc-decode", &srv->decoder);
    if (dq) { /* not fatal: large messages are then decoded on the cq threads */
        SS_WARN("gRPC server: %s", dq->msg);
        ss_status_free(dq);
    }
    static const char *const labels[] = {"limit"};
    ss_metric_family *refused =
        ss_metrics_family(ss_metrics_global(), SS_METRIC_COUNTER, "shardserve_grpc_refused_total",
                          "gRPC calls refused or cancelled by a limit", 1, labels, NULL, 0);
    srv->cut_recv = ss_metrics_series(refused, (const char *const[]){"recv_timeout"});
    srv->cut_backlog = ss_metrics_series(refused, (const char *const[]){"stream_backlog"});
    srv->cut_decoded = ss_metrics_series(refused, (const char *const[]){"decoded_bytes"});
    srv->cut_slot = ss_metrics_series(refused, (const char *const[]){"recv_slot"});
    srv->recv_slots = opts->recv_slots > 0 ? opts->recv_slots : SS_SERVER_DEFAULT_GRPC_RECV_SLOTS;
    srv->contended_ns =
        (uint64_t)(opts->recv_contended_ms > 0 ? opts->recv_contended_ms
                                               : SS_SERVER_DEFAULT_GRPC_CONTENDED_MS) *
        1000000u;
    srv->held.refused = ss_metrics_series(refused, (const char *const[]){"buffered_bytes"});
    int held_mb = opts->max_buffered_mb > 0 ? opts->max_buffered_mb
                                            : SS_SERVER_DEFAULT_GRPC_BUFFERED_MSGS * mb;
    srv->held.limit = ((size_t)(held_mb > 2 * mb ? held_mb : 2 * mb) << 20) + BUDGET_SLACK_BYTES;
    int decoded_mb =
        opts->max_decoded_mb > 0 ? opts->max_decoded_mb : SS_SERVER_DEFAULT_GRPC_DECODED_MSGS * mb;
    srv->max_decoded = (size_t)decoded_mb << 20;
    grpc_arg args[] = {
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_CONCURRENT_STREAMS, {.integer = streams}},
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = mb << 20}},
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, {.integer = mb << 20}},
        {GRPC_ARG_INTEGER, GRPC_ARG_ALLOW_REUSEPORT, {.integer = 0}},
        /* a stream's window stays at HTTP/2's initial 64 KiB until its call asks for the message
         * (the BDP probe would raise every stream's window; receive slots, above) */
        {GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_BDP_PROBE, {.integer = 0}},
    };
    grpc_channel_args channel_args = {sizeof args / sizeof args[0], args};
    srv->server = grpc_server_create(&channel_args, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    grpc_server_credentials *creds = server_credentials(opts, &st);
    if (st) {
        destroy(srv);
        return st;
    }
    srv->port = grpc_server_add_http2_port(srv->server, opts->address, creds);
    grpc_server_credentials_release(creds);
    if (srv->port == 0) {
        destroy(srv);
        return ss_errf(SS_ERR_IO,
                       "Serving gRPC server start failed, create server failed, "
                       "address %s",
                       opts->address);
    }
    if (strncmp(opts->address, "unix:", 5) == 0) srv->port = 0;
    grpc_server_start(srv->server);
    srv->threads = calloc((size_t)threads, sizeof *srv->threads);
    for (int i = 0; srv->threads && i < threads; i++) {
        if (pthread_create(&srv->threads[i], NULL, worker_main, srv) != 0) break;
        srv->nthreads++;
    }
    if (srv->nthreads == 0) {
        atomic_store(&srv->shutting_down, true);
        grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
        while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).tag !=
               &srv->shutdown_tag) {
        }
        destroy(srv);
        return ss_errf(SS_ERR_NOMEM, "cannot start gRPC worker threads");
    }
    SS_INFO("Serving gRPC server start success, listening on %s (port %d)%s", opts->address,
            srv->port,
            !opts->ssl                 ? ""
            : opts->ssl->verify_client ? ", TLS with client certificates"
                                       : ", TLS");
    *out = srv;
    return NULL;
}

int ss_grpc_server_port(const ss_grpc_server *srv)
{
    return srv ? srv->port : 0;
}

/* Wait for `cond` under srv->mu until the absolute deadline (0 = forever). */
static bool wait_until(ss_grpc_server *srv, bool (*cond)(ss_grpc_server *), uint64_t deadline_ns)
{
    pthread_mutex_lock(&srv->mu);
    while (!cond(srv)) {
        if (deadline_ns) {
            uint64_t now = ss_now_ns();
            if (now >= deadline_ns) break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t wait = deadline_ns - now;
            if (wait > 100000000) wait = 100000000; /* re-check every 100 ms */
            ts.tv_nsec += (long)(wait % 1000000000);
            ts.tv_sec += (time_t)(wait / 1000000000) + ts.tv_nsec / 1000000000;
            ts.tv_nsec %= 1000000000;
            pthread_cond_timedwait(&srv->cv, &srv->mu, &ts);
        } else {
            pthread_cond_wait(&srv->cv, &srv->mu);
        }
    }
    bool done = cond(srv);
    pthread_mutex_unlock(&srv->mu);
    return done;
}

static bool shutdown_seen(ss_grpc_server *srv)
{
    return srv->shutdown_seen;
}
static bool no_live_calls(ss_grpc_server *srv)
{
    return srv->live == 0;
}
static bool shutdown_seen_now(ss_grpc_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    bool seen = srv->shutdown_seen;
    pthread_mutex_unlock(&srv->mu);
    return seen;
}
static bool shutdown_seen_or_no_calls(ss_grpc_server *srv)
{
    return srv->shutdown_seen || srv->live == 0;
}

void ss_grpc_server_stop(ss_grpc_server *srv)
{
    if (!srv) return;
    atomic_store(&srv->shutting_down, true);
    drain_queue(srv);
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
    uint64_t deadline = ss_now_ns() + (uint64_t)srv->drain_ms * 1000000u;
    if (!wait_until(srv, shutdown_seen_or_no_calls, deadline)) {
        SS_WARN("grpc: in-flight calls did not finish within %d ms, cancelling them",
                srv->drain_ms);
        grpc_server_cancel_all_calls(srv->server);
    } else if (!shutdown_seen_now(srv)) {
        /* Every call is answered; what holds the shutdown are open connections waiting for their
         * client to acknowledge the GOAWAY, which an idle gRPC core client does only when its
         * backup poller next runs (every 5 s). Nothing is left to drain: close them now. */
        grpc_server_cancel_all_calls(srv->server);
    }
    wait_until(srv, shutdown_seen, 0);
    /* Calls still waiting on the handler hold their context until done() runs. */
    while (!wait_until(srv, no_live_calls, ss_now_ns() + 5000000000u))
        SS_WARN("grpc: still waiting for %ld call(s) to be answered by the handler", srv->live);
    destroy(srv);
}

void ss_server_block_signals(sigset_t *set)
{
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    if (set) *set = block;
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
}
