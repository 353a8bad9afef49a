/*
 * link: the internal worker <-> agent protocol.
 *
 * Framed messages over a stream socket: TCP ("127.0.0.1:6200", "[::1]:6200", "localhost:6200")
 * or a Unix socket ("unix:/path/to/sock"). A frame is a fixed 32-byte little-endian prefix, a
 * small protobuf-c header (src/link/link.proto) and the raw bytes of its tensors. Tensor bytes
 * are gathered straight from the caller's ss_tensor storage with one sendmsg/writev (never
 * re-encoded, never copied) and received straight into tensor storage, either freshly allocated
 * or supplied by the caller (ss_link_recv_header + ss_link_recv_payload).
 *
 * Guarantees:
 * - Every frame is checked before any memory is allocated for its tensors: magic, version,
 *   frame type, header and frame size limits, tensor count, dtype, shape, and that the payload
 *   length equals the sum of the declared tensors' sizes. A bad frame gives an ss_status
 * (SS_ERR_INVALID or SS_ERR_LIMIT) naming the problem; the connection is then unusable (close it
 * and log one line), the process is unaffected.
 * - Every wait is bounded: connect, the handshake, a receive's wait for a frame to start (the
 *   caller's timeout) and any stall inside a frame in either direction (stall_timeout_ms).
 * - Every connection starts with a handshake the library performs itself. With a shared secret
 *   configured, both sides prove knowledge of it (HMAC-SHA256 over two fresh nonces); a peer
 *   without it cannot send a single accepted frame, and a client with a secret refuses a server
 *   that cannot prove it.
 * - ss_link_send may be called from several threads on one connection (it holds a mutex for the
 *   whole frame). Receiving is single-reader: one thread per connection calls the recv functions.
 *
 * Serving many agents from one event loop (the worker): the listener's and each connection's
 * socket go into epoll (ss_link_listener_fd, ss_link_conn_fd). A readable listener means
 * ss_link_accept(l, 0, ...) has a connection, whose handshake and first frame another thread
 * does (they may take seconds); a readable connection means a frame has started and
 * ss_link_recv(conn, 0, ...) reads it whole (bounded by stall_timeout_ms). The link reads
 * exactly one frame per call and never reads ahead, so level-triggered readiness is exact.
 */
#ifndef SHARDSERVE_LINK_H
#define SHARDSERVE_LINK_H

#include "shardserve/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Frame types; the numbers are on the wire. */
typedef enum {
    SS_LINK_HELLO = 1,         /* handshake, sent by the library */
    SS_LINK_AUTH = 2,          /* handshake, sent by the library */
    SS_LINK_AUTH_ACK = 3,      /* handshake, sent by the library */
    SS_LINK_REGISTER = 4,      /* agent -> worker */
    SS_LINK_REGISTER_ACK = 5,  /* worker -> agent */
    SS_LINK_GET_META = 6,      /* launcher -> worker */
    SS_LINK_META = 7,          /* worker -> launcher */
    SS_LINK_HEARTBEAT = 8,     /* either way */
    SS_LINK_HEARTBEAT_ACK = 9, /* either way */
    SS_LINK_PREDICT = 10,      /* worker -> agent, carries tensors */
    SS_LINK_RESULT = 11,       /* agent -> worker, carries tensors */
    SS_LINK_EXIT = 12,         /* either way */
    SS_LINK_LOADING = 13,      /* agent -> worker before loading its shard; REGISTER's fields */
} ss_link_type;

#define SS_LINK_MAGIC 0x4B4C5353u /* "SSLK" little-endian */
#define SS_LINK_VERSION 1
#define SS_LINK_PREFIX_BYTES 32

/* "REGISTER", ... or "unknown" */
const char *ss_link_type_name(int type);

/* A declared model input/output; dims may hold -1 for a dynamic dimension. */
typedef struct {
    char *name;
    ss_dtype dtype;
    int ndim;
    int64_t dims[SS_MAX_DIMS];
} ss_link_spec;

/* PREDICT: an output to write straight into shared memory (see "shared memory" below). */
typedef struct {
    uint32_t output; /* index among the model's outputs */
    char *key;       /* POSIX shm name, "/..." */
    uint64_t offset, byte_size;
} ss_link_place;

/*
 * One message. Only the fields of `type` are meaningful. On send the link only reads the fields
 * (strings may be NULL = empty). On receive every pointer is owned by the message and released
 * by ss_link_msg_free.
 */
typedef struct {
    ss_link_type type;

    /* REGISTER */
    uint32_t rank, rank_size, stage, stage_size;
    int64_t pid;
    uint32_t batch_size;
    ss_link_spec *inputs;
    size_t n_inputs;
    ss_link_spec *outputs;
    size_t n_outputs;
    char *address;      /* REGISTER: the agent's address; GET_META: the requester */
    bool shares_inputs; /* REGISTER: the agent can take its inputs by broadcast (see PREDICT) */

    /* REGISTER_ACK */
    bool accepted;
    /* REGISTER_ACK reason, RESULT message, EXIT reason */
    char *message;

    /* META */
    char *json;

    /* HEARTBEAT, HEARTBEAT_ACK */
    uint64_t seq, sent_ns;

    /* PREDICT, RESULT */
    uint64_t request_id;
    bool return_result;  /* PREDICT */
    int32_t status_code; /* RESULT: an ss_code, 0 = ok */
    uint64_t
        comm_bytes; /* RESULT, HEARTBEAT_ACK: bytes the rank moved through collectives so far */
    bool quiet;     /* PREDICT: send a RESULT only on failure */
    uint32_t time_limit_ms; /* PREDICT: the worker waits this long from receipt (0: no limit) */
    /* PREDICT, inputs through the comm layer: the stage's root gets the tensors and share_inputs
     * (broadcast them to the stage group in frame order); every other rank of the stage gets no
     * tensors, has_input_root/input_root (a world rank) and, in inputs/n_inputs, the concrete
     * specs of what the broadcast brings, in the same order. */
    bool share_inputs;
    bool has_input_root;
    uint32_t input_root;
    /* Send: names of the tensors passed to ss_link_send (NULL = all unnamed).
     * Receive: n_tensors names and tensors, owned by the message. */
    char **tensor_names;
    ss_tensor *tensors;
    size_t n_tensors;
    /* PREDICT: outputs the last rank writes into shared memory */
    ss_link_place *places;
    size_t n_places;
    /* PREDICT: KV block pool sequences to free, then to create, before the model runs */
    int64_t *seq_release, *seq_create;
    size_t n_seq_release, n_seq_create;
    /* REGISTER_ACK: the KV block pool the rank is to keep (0: its default) */
    uint64_t kv_cache_bytes;
    /* RESULT: the rank's KV block pool (0 when it has none) */
    uint64_t kv_blocks;
    uint32_t kv_block_tokens;
    /* Receive: a tensor named by shared-memory key could not be mapped (the key is gone, the
     * object is too small): the frame is fine and the link stays up, but that tensor has no
     * data; answer the request with this error. */
    char *shm_error;
    void *link_private; /* the link's own: shared-memory mappings the tensors hold */
} ss_link_msg;

/* Release what a received (or decoded) message owns and zero it. */
void ss_link_msg_free(ss_link_msg *msg);

typedef struct {
    uint64_t max_frame_bytes;  /* prefix + header + payload; default 1 GiB */
    uint32_t max_header_bytes; /* protobuf header; default 4 MiB */
    uint32_t max_tensors;      /* tensors per frame (and specs per REGISTER); default 4096 */
    int stall_timeout_ms;      /* no progress inside a frame for this long -> error; 10000 */
    int handshake_timeout_ms;  /* whole handshake; default 5000 */
    int connect_timeout_ms;    /* one connect attempt; default 2000 */
    const void *secret;        /* shared secret (copied); NULL = no authentication */
    size_t secret_len;
} ss_link_options;

void ss_link_options_default(ss_link_options *opts);

typedef struct ss_link_conn ss_link_conn;
typedef struct ss_link_listener ss_link_listener;

/* ---------------------------------------------------------------- connections */

/* Listen on `address` (port 0 picks a free port). A stale Unix socket file nobody answers on is
 * replaced; a live one is an error. opts may be NULL (defaults). */
ss_status *ss_link_listen(const char *address, const ss_link_options *opts, ss_link_listener **out);
/* The bound address, e.g. "127.0.0.1:41234" or "unix:/tmp/x.sock". */
const char *ss_link_listener_address(const ss_link_listener *l);
/* The listening socket, for an event loop: readable = a connection to accept (timeout 0). */
int ss_link_listener_fd(const ss_link_listener *l);
/* A TCP listener also answers agents of this host on a Unix socket (same frames, no TCP stack);
 * its descriptor, to watch beside ss_link_listener_fd, or -1. ss_link_connect to a local TCP
 * address uses it when it exists. SHARDSERVE_LINK_LOCAL=0 turns both off. */
int ss_link_listener_local_fd(const ss_link_listener *l);
/* Wait up to timeout_ms (-1 forever) for a connection. The handshake is NOT done yet: call
 * ss_link_handshake (typically in the connection's own thread) before anything else. */
ss_status *ss_link_accept(ss_link_listener *l, int timeout_ms, ss_link_conn **out);
/* Close the listening socket (and remove its Unix socket file). NULL is fine. */
void ss_link_listener_close(ss_link_listener *l);

/* Server side of the handshake on an accepted connection, bounded by handshake_timeout_ms.
 * Fails with SS_ERR_INVALID when the peer cannot prove the secret or speaks something else. */
ss_status *ss_link_handshake(ss_link_conn *c);

/* Connect (one attempt bounded by connect_timeout_ms) and do the client handshake. */
ss_status *ss_link_connect(const char *address, const ss_link_options *opts, ss_link_conn **out);
/* Retry ss_link_connect every interval_ms until total_timeout_ms has passed, while the failure
 * is one that may go away (nobody listening yet, timeout). Authentication failures and bad
 * addresses are returned at once. */
ss_status *ss_link_connect_retry(const char *address, const ss_link_options *opts,
                                 int total_timeout_ms, int interval_ms, ss_link_conn **out);

/* Send one frame: msg's header fields plus n_tensors tensors (PREDICT and RESULT only).
 * Thread-safe. Numeric tensor bytes go out straight from t->data. */
ss_status *ss_link_send(ss_link_conn *c, const ss_link_msg *msg, const ss_tensor *const *tensors,
                        size_t n_tensors);

/* Receive one whole frame, tensors in freshly allocated (owned, 64-byte aligned) storage.
 * timeout_ms bounds the wait for the frame to start (-1 forever, 0 = only if already there);
 * SS_ERR_TIMEOUT means exactly that and leaves the connection usable. Any other error breaks
 * the connection: SS_ERR_UNAVAILABLE (peer closed, reset, or stalled mid-frame longer than
 * stall_timeout_ms), SS_ERR_INVALID / SS_ERR_LIMIT / SS_ERR_UNSUPPORTED (a bad frame). */
ss_status *ss_link_recv(ss_link_conn *c, int timeout_ms, ss_link_msg *msg);

/* Two-step receive. ss_link_recv_header reads and checks the prefix and header: msg->tensors
 * then describe each tensor (dtype, shape, nbytes) with data == NULL. The caller may point any
 * numeric tensor's data at its own storage of at least nbytes bytes (storage BORROWED), then
 * must call ss_link_recv_payload, which reads the bytes into that storage and allocates the
 * rest. No other recv may come in between. For a frame without tensors the header is the
 * whole frame and ss_link_recv_payload is a no-op. */
ss_status *ss_link_recv_header(ss_link_conn *c, int timeout_ms, ss_link_msg *msg);
ss_status *ss_link_recv_payload(ss_link_conn *c, ss_link_msg *msg);

/* The socket, for poll(). */
int ss_link_conn_fd(const ss_link_conn *c);
/* The peer's address, for logs. */
const char *ss_link_conn_peer(const ss_link_conn *c);
/* Bytes moved on this connection so far (for metrics). */
void ss_link_conn_stats(const ss_link_conn *c, uint64_t *bytes_sent, uint64_t *bytes_received);
/* Wake any thread blocked on this connection (its call fails); safe from another thread. */
void ss_link_shutdown(ss_link_conn *c);
/* Close and free. No other thread may be using the connection. NULL is fine. */
void ss_link_close(ss_link_conn *c);

/* ---------------------------------------------------------------- shared memory */

/*
 * Tensors in shared memory never cross a local link. Memory of this process that a POSIX shm
 * object backs is "shared" here (base, len -> key, offset of base in the object). On a local link
 * (a Unix socket) ss_link_send describes a numeric tensor lying wholly inside shared memory by
 * key and offset instead of sending its bytes, and the receiver maps it in place: into memory
 * this process shares already when the key's range is shared here (storage BORROWED, valid
 * while that stays shared); for a PREDICT into a mapping kept across requests and held by the
 * message until ss_link_msg_free (storage BORROWED: a reused region is mapped once); else through
 * a mapping of its own (storage MAPPED, freed with the tensor). The object's pages live while any
 * mapping does, so the sender may drop its own meanwhile.
 * Over TCP the bytes travel as always, and a PREDICT's output places are left out. A key the
 * receiver cannot open, or an object smaller than the range, sets the message's shm_error (naming
 * the key), never breaks the link.
 */
ss_status *ss_link_shm_share(const void *base, size_t len, const char *key, uint64_t key_offset);
/* Stop describing [base, ...) by key (frames already sent are unaffected). */
void ss_link_shm_unshare(const void *base);
/* Write tensor t into the place's shared memory (it must fit byte_size; no copy when t->data is
 * there already, see ss_link_shm_target) and give *out, the same tensor in a kept writable
 * mapping of that memory, shared (above) so that sending it sends only the key; release it with
 * ss_link_shm_release. */
ss_status *ss_link_shm_place(const ss_link_place *p, const ss_tensor *t, ss_tensor *out);
/* A writable mapping of the place's byte_size bytes, held: *at is where ss_link_shm_place writes,
 * for a producer that computes the output there itself (ss_session_run_into). Let go with
 * ss_link_shm_untarget. */
ss_status *ss_link_shm_target(const ss_link_place *p, void **at);
void ss_link_shm_untarget(void *at);
void ss_link_shm_release(ss_tensor *t);
/* Guarding memory another process controls (a client's shm object may shrink under a mapping of
 * it): a SIGBUS in [base, base + len) replaces the whole range with zero pages, the access
 * completes, and the range is marked lost (shm_guard.c). Unguard before unmapping. */
ss_status *ss_link_shm_guard(const void *base, size_t len, const char *key);
void ss_link_shm_unguard(const void *base);
/* Whether a guarded range overlapping [p, p + n) was lost; then key (cap bytes) names its object.
 */
bool ss_link_shm_lost(const void *p, size_t n, char *key, size_t cap);

/* ---------------------------------------------------------------- secrets */

/* The link is closed by default: `shardserve serve` makes a random secret for its distributed
 * addresses and keeps it in a file only its user can read; `shardserve agents` on the same host
 * finds it by the address (other hosts get the file copied, or --secret-file). */

/* The default secret file of a distributed address: /tmp/shardserve-<euid>/link-port-<port>.secret
 * (by port, so "localhost:6200" and "127.0.0.1:6200" agree), or link-<path>.secret for unix:. */
ss_status *ss_link_secret_path(const char *address, char *buf, size_t cap);
/* 64 hex characters from the system's random source. */
ss_status *ss_link_secret_generate(char out[65]);
/* Write a secret file (mode 0600) in a folder made 0700 if missing; a folder that is not ours,
 * is open to others or is a link is refused, and so is a file that is a link. */
ss_status *ss_link_secret_write(const char *path, const void *secret, size_t len);
/* Read a secret file: any bytes, trailing CR/LF dropped; an empty one is an error. */
ss_status *ss_link_secret_read(const char *path, char **secret, size_t *len);

/* ---------------------------------------------------------------- frames in memory */

/* Encode a frame into one malloc'd buffer (tests and tools; the socket path never does this). */
ss_status *ss_link_encode_frame(const ss_link_msg *msg, const ss_tensor *const *tensors,
                                size_t n_tensors, void **buf, size_t *len);
/* Decode one complete frame from buf with every check the socket path makes; *consumed gets
 * the frame's length. Tensor bytes are copied into owned storage. Never reads past len: a short
 * buffer is "truncated frame". This is the libFuzzer entry point. opts may be NULL. Handshake
 * frames (HELLO/AUTH/AUTH_ACK) decode too. */
ss_status *ss_link_decode_frame(const void *buf, size_t len, const ss_link_options *opts,
                                ss_link_msg *msg, size_t *consumed);

#ifdef __cplusplus
}
#endif
#endif
