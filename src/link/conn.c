/*
 * Link connections: addresses, listen/accept/connect, the handshake, and framed send/receive
 * where every wait is bounded. Connecting, the handshake and the wait for a frame to start use
 * poll() with the caller's deadline; once the handshake is done the socket is blocking with
 * SO_RCVTIMEO/SO_SNDTIMEO set to the stall timeout, so the rest of a started frame (a whole
 * tensor) moves in one recv(MSG_WAITALL)/sendmsg() call that gives up when the peer stalls.
 *
 * Send gathers [prefix+header buffer, tensor bytes...] into one sendmsg() (writev with
 * MSG_NOSIGNAL) under the connection's send mutex, so tensor bytes leave from the caller's
 * memory and concurrent senders never interleave frames. Receive reads the prefix, the header
 * and then each tensor's bytes straight into its storage.
 *
 * A connection that saw any error other than "no frame started before the timeout" is marked
 * broken: the byte stream can no longer be trusted, so every later call fails at once.
 */
#define _GNU_SOURCE /* accept4, IOV_MAX */
#include "link_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct ss_link_conn {
    int fd;
    bool server;
    bool ready; /* handshake done */
    atomic_bool broken;
    pthread_mutex_t send_mu;
    ss_link_options opts;
    uint8_t *secret; /* our copy; opts.secret points here */
    char peer[160];
    bool local; /* a Unix socket: tensors in shared memory go by key (shm.c) */
    /* two-step receive: sizes of the tensors whose bytes are still in the socket */
    bool payload_pending;
    uint64_t *pending_sizes;
    atomic_uint_fast64_t sent, received;
};

struct ss_link_listener {
    int fd;
    ss_link_options opts;
    uint8_t *secret;
    char address[160];
    char *unix_path; /* set when we bound a Unix socket file (removed on close) */
    ino_t unix_ino;
    ss_link_listener *local; /* a TCP listener's Unix twin for agents on this host, or NULL */
};

/* ---------------------------------------------------------------- options and addresses */

static ss_status *copy_opts(const ss_link_options *in, ss_link_options *out, uint8_t **secret)
{
    if (in)
        *out = *in;
    else
        ss_link_options_default(out);
    *secret = NULL;
    if (out->secret) {
        if (out->secret_len == 0) return ss_errf(SS_ERR_INVALID, "the shared secret is empty");
        *secret = malloc(out->secret_len);
        if (!*secret) return ss_errf(SS_ERR_NOMEM, "shared secret");
        memcpy(*secret, out->secret, out->secret_len);
        out->secret = *secret;
    }
    if (!out->max_frame_bytes || !out->max_header_bytes || out->stall_timeout_ms <= 0 ||
        out->handshake_timeout_ms <= 0 || out->connect_timeout_ms <= 0) {
        free(*secret);
        *secret = NULL;
        return ss_errf(SS_ERR_INVALID, "link limits and timeouts must be positive");
    }
    return NULL;
}

typedef struct {
    struct sockaddr_storage sa;
    socklen_t len;
    bool is_unix;
    const char *path; /* into the address string */
} resolved;

static ss_status *resolve(const char *address, resolved *r)
{
    memset(r, 0, sizeof *r);
    if (!address || !*address) return ss_errf(SS_ERR_INVALID, "empty link address");
    if (strncmp(address, "unix:", 5) == 0) {
        const char *path = address + 5;
        struct sockaddr_un *un = (struct sockaddr_un *)&r->sa;
        if (!*path) return ss_errf(SS_ERR_INVALID, "link address '%s' has no path", address);
        if (strlen(path) >= sizeof un->sun_path)
            return ss_errf(SS_ERR_LIMIT, "unix socket path '%s' is longer than %zu bytes", path,
                           sizeof un->sun_path - 1);
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, path);
        r->len = (socklen_t)sizeof *un;
        r->is_unix = true;
        r->path = path;
        return NULL;
    }
    const char *colon = strrchr(address, ':');
    if (!colon || colon == address || !colon[1])
        return ss_errf(SS_ERR_INVALID, "link address '%s' is not HOST:PORT or unix:PATH", address);
    char host[256];
    size_t hlen = (size_t)(colon - address);
    if (address[0] == '[' && hlen >= 2 && address[hlen - 1] == ']') {
        address++;
        hlen -= 2;
    }
    if (hlen >= sizeof host) return ss_errf(SS_ERR_INVALID, "link address host is too long");
    memcpy(host, address, hlen);
    host[hlen] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return ss_errf(SS_ERR_INVALID, "link address '%s' has a bad port", colon + 1);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0 || !res)
        return ss_errf(SS_ERR_INVALID, "cannot resolve link host '%s': %s", host, gai_strerror(rc));
    memcpy(&r->sa, res->ai_addr, res->ai_addrlen);
    r->len = res->ai_addrlen;
    freeaddrinfo(res);
    return NULL;
}

static void format_addr(const struct sockaddr_storage *sa, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    char port[16] = "?";
    getnameinfo((const struct sockaddr *)sa,
                sa->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                          : sizeof(struct sockaddr_in),
                host, sizeof host, port, sizeof port, NI_NUMERICHOST | NI_NUMERICSERV);
    snprintf(out, cap, sa->ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

static void tune_socket(int fd, bool is_unix)
{
    if (is_unix) return;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ---------------------------------------------------------------- bounded I/O */

static int remaining_ms(uint64_t deadline_ns)
{
    uint64_t now = ss_now_ns();
    if (now >= deadline_ns) return 0;
    uint64_t ms = (deadline_ns - now + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* 1 ready, 0 timed out; errors as status. timeout_ms < 0 waits forever. */
static ss_status *wait_fd(int fd, short events, int timeout_ms, bool *ready)
{
    uint64_t deadline = timeout_ms < 0 ? 0 : ss_now_ns() + (uint64_t)timeout_ms * 1000000;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, timeout_ms < 0 ? -1 : remaining_ms(deadline));
        if (rc > 0) {
            *ready = true;
            return NULL;
        }
        if (rc == 0) {
            *ready = false;
            return NULL;
        }
        if (errno != EINTR) return ss_errf(SS_ERR_IO, "poll: %s", strerror(errno));
    }
}

static ss_status *mark_broken(ss_link_conn *c, ss_status *st)
{
    if (st) atomic_store(&c->broken, true);
    return st;
}

/* Read exactly n bytes. Before the first byte, wait up to first_ms; after it (and for every
 * later chunk), up to stall_ms without progress. `started` tells whether any byte arrived. */
static ss_status *read_bytes(ss_link_conn *c, void *dst, size_t n, int first_ms, int stall_ms,
                             bool *started)
{
    size_t got = 0;
    while (got < n) {
        /* Once a frame has started on an established connection, block in the kernel for the
         * rest (one call for a whole tensor, bounded by SO_RCVTIMEO = stall timeout); before
         * that, and during the handshake, never block outside poll(). */
        bool block = c->ready && *started;
        ssize_t r = recv(c->fd, (char *)dst + got, n - got, block ? MSG_WAITALL : MSG_DONTWAIT);
        if (r > 0) {
            got += (size_t)r;
            *started = true;
            atomic_fetch_add(&c->received, (uint64_t)r);
            continue;
        }
        if (r == 0) {
            if (!*started)
                return ss_errf(SS_ERR_UNAVAILABLE, "peer %s closed the connection", c->peer);
            return ss_errf(SS_ERR_INVALID,
                           "truncated frame: peer %s closed the connection %zu bytes short",
                           c->peer, n - got);
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return ss_errf(SS_ERR_UNAVAILABLE, "receive from %s: %s", c->peer, strerror(errno));
        if (block) /* SO_RCVTIMEO ran out without a single byte */
            return ss_errf(SS_ERR_UNAVAILABLE,
                           "frame from %s stalled for %d ms with %zu bytes missing", c->peer,
                           c->opts.stall_timeout_ms, n - got);
        bool ready;
        int wait_ms = *started ? stall_ms : first_ms;
        ss_status *st = wait_fd(c->fd, POLLIN, wait_ms, &ready);
        if (st) return st;
        if (!ready) {
            if (!*started)
                return ss_errf(SS_ERR_TIMEOUT, "no frame from %s within %d ms", c->peer, wait_ms);
            return ss_errf(SS_ERR_UNAVAILABLE,
                           "frame from %s stalled for %d ms with %zu bytes missing", c->peer,
                           wait_ms, n - got);
        }
    }
    return NULL;
}

typedef struct {
    ss_link_conn *c;
    int stall_ms;
} sock_source;

static ss_status *sock_read(void *ctx, void *dst, size_t n)
{
    sock_source *s = ctx;
    bool started = true;
    return read_bytes(s->c, dst, n, s->stall_ms, s->stall_ms, &started);
}

/* Write the whole iovec array (modified in place). */
static ss_status *write_iov(ss_link_conn *c, struct iovec *iov, size_t cnt, int stall_ms)
{
    while (cnt) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = cnt > IOV_MAX ? IOV_MAX : cnt};
        /* established connections block in the kernel, bounded by SO_SNDTIMEO */
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | (c->ready ? 0 : MSG_DONTWAIT));
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return ss_errf(SS_ERR_UNAVAILABLE, "send to %s: %s", c->peer, strerror(errno));
            if (c->ready)
                return ss_errf(SS_ERR_UNAVAILABLE,
                               "send to %s stalled for %d ms (peer not reading)", c->peer,
                               c->opts.stall_timeout_ms);
            bool ready;
            ss_status *st = wait_fd(c->fd, POLLOUT, stall_ms, &ready);
            if (st) return st;
            if (!ready)
                return ss_errf(SS_ERR_UNAVAILABLE,
                               "send to %s stalled for %d ms (peer not reading)", c->peer,
                               stall_ms);
            continue;
        }
        atomic_fetch_add(&c->sent, (uint64_t)w);
        size_t left = (size_t)w;
        while (cnt && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- frames */

static ss_status *send_frame(ss_link_conn *c, const ss_link_msg *msg, const link_handshake *hs,
                             const ss_tensor *const *tensors, size_t n_tensors, int stall_ms)
{
    if (atomic_load(&c->broken))
        return ss_errf(SS_ERR_UNAVAILABLE, "link to %s is broken by an earlier error", c->peer);
    ss_link_msg unplaced;
    if (!c->local && msg->n_places) { /* a key means nothing on another host */
        unplaced = *msg;
        unplaced.places = NULL;
        unplaced.n_places = 0;
        msg = &unplaced;
    }
    uint8_t *hdr;
    size_t hlen;
    uint64_t payload;
    bool stack_shm[16], *in_shm = !c->local         ? NULL
                                  : n_tensors <= 16 ? stack_shm
                                                    : calloc(n_tensors, 1);
    if (c->local && !in_shm) return ss_errf(SS_ERR_NOMEM, "shared memory flags");
    ss_status *st =
        link_pack_header(msg, hs, tensors, n_tensors, &c->opts, &hdr, &hlen, &payload, in_shm);
    if (st) {
        if (in_shm != stack_shm) free(in_shm);
        return st; /* nothing was written: the connection stays usable */
    }
    size_t cnt = 1;
    for (size_t i = 0; i < n_tensors; i++)
        cnt += tensors[i]->dtype == SS_DT_STRING ? (size_t)ss_tensor_numel(tensors[i]) : 1;
    struct iovec stack_iov[16];
    struct iovec *iov = cnt <= 16 ? stack_iov : malloc(cnt * sizeof *iov);
    if (!iov) {
        free(hdr);
        return ss_errf(SS_ERR_NOMEM, "iovec for %zu pieces", cnt);
    }
    size_t k = 0;
    iov[k++] = (struct iovec){hdr, hlen};
    for (size_t i = 0; i < n_tensors; i++) {
        const ss_tensor *t = tensors[i];
        if (t->dtype != SS_DT_STRING) {
            if (t->nbytes && !(in_shm && in_shm[i])) iov[k++] = (struct iovec){t->data, t->nbytes};
            continue;
        }
        const ss_string *s = t->data;
        for (int64_t e = 0; e < ss_tensor_numel(t); e++)
            if (s[e].len) iov[k++] = (struct iovec){s[e].data, s[e].len};
    }
    pthread_mutex_lock(&c->send_mu);
    st = write_iov(c, iov, k, stall_ms);
    pthread_mutex_unlock(&c->send_mu);
    if (iov != stack_iov) free(iov);
    if (in_shm != stack_shm) free(in_shm);
    free(hdr);
    return mark_broken(c, st);
}

/* Read prefix + header; leaves the payload in the socket (c->pending_sizes). */
static ss_status *recv_header(ss_link_conn *c, int first_ms, int stall_ms,
                              const ss_link_options *limits, ss_link_msg *msg, link_handshake *hs)
{
    memset(msg, 0, sizeof *msg);
    if (atomic_load(&c->broken))
        return ss_errf(SS_ERR_UNAVAILABLE, "link to %s is broken by an earlier error", c->peer);
    if (c->payload_pending)
        return ss_errf(SS_ERR_INTERNAL, "ss_link_recv_payload was not called for the last frame");
    uint8_t pre[SS_LINK_PREFIX_BYTES];
    bool started = false;
    ss_status *st = read_bytes(c, pre, sizeof pre, first_ms, stall_ms, &started);
    if (st) return started || st->code != SS_ERR_TIMEOUT ? mark_broken(c, st) : st;
    link_prefix p;
    st = link_prefix_parse(pre, limits, &p);
    if (st) return mark_broken(c, ss_status_wrap(st, "from %s", c->peer));
    if (c->ready && p.type <= SS_LINK_AUTH_ACK)
        return mark_broken(c, ss_errf(SS_ERR_INVALID,
                                      "unexpected %s frame from %s after the handshake",
                                      ss_link_type_name(p.type), c->peer));
    uint8_t *hdr = malloc(p.header_len ? p.header_len : 1);
    if (!hdr)
        return mark_broken(c, ss_errf(SS_ERR_NOMEM, "frame header of %u bytes", p.header_len));
    st = read_bytes(c, hdr, p.header_len, stall_ms, stall_ms, &started);
    if (!st) st = link_unpack_header(&p, hdr, limits, msg, hs, &c->pending_sizes, c->local);
    free(hdr);
    if (st) return mark_broken(c, ss_status_wrap(st, "from %s", c->peer));
    if (!c->local) link_drop_places(msg); /* shared memory names this host's objects only */
    if (msg->n_tensors == 0) {            /* nothing left in the socket for this frame */
        free(c->pending_sizes);
        c->pending_sizes = NULL;
        return NULL;
    }
    c->payload_pending = true;
    return NULL;
}

static ss_status *recv_payload(ss_link_conn *c, ss_link_msg *msg, int stall_ms)
{
    if (!c->payload_pending) {
        if (msg->n_tensors == 0) return NULL; /* a frame without tensors is already complete */
        return ss_errf(SS_ERR_INTERNAL, "ss_link_recv_payload without a frame header");
    }
    sock_source src = {c, stall_ms};
    link_reader r = {sock_read, &src};
    ss_status *st = link_read_payload(&r, msg, c->pending_sizes);
    free(c->pending_sizes);
    c->pending_sizes = NULL;
    c->payload_pending = false;
    if (st) {
        ss_link_msg_free(msg);
        return mark_broken(c, ss_status_wrap(st, "from %s", c->peer));
    }
    return NULL;
}

static ss_status *recv_frame(ss_link_conn *c, int first_ms, int stall_ms,
                             const ss_link_options *limits, ss_link_msg *msg, link_handshake *hs)
{
    ss_status *st = recv_header(c, first_ms, stall_ms, limits, msg, hs);
    if (!st) st = recv_payload(c, msg, stall_ms);
    return st;
}

/* ---------------------------------------------------------------- public send/recv */

static ss_status *check_ready(ss_link_conn *c)
{
    if (!c) return ss_errf(SS_ERR_INTERNAL, "NULL link connection");
    if (!c->ready) return ss_errf(SS_ERR_INTERNAL, "link to %s used before its handshake", c->peer);
    return NULL;
}

ss_status *ss_link_send(ss_link_conn *c, const ss_link_msg *msg, const ss_tensor *const *tensors,
                        size_t n_tensors)
{
    ss_status *st = check_ready(c);
    if (st) return st;
    if (msg->type == SS_LINK_HELLO || msg->type == SS_LINK_AUTH || msg->type == SS_LINK_AUTH_ACK)
        return ss_errf(SS_ERR_INVALID, "%s frames are sent by the link itself",
                       ss_link_type_name(msg->type));
    return send_frame(c, msg, NULL, tensors, n_tensors, c->opts.stall_timeout_ms);
}

ss_status *ss_link_recv_header(ss_link_conn *c, int timeout_ms, ss_link_msg *msg)
{
    ss_status *st = check_ready(c);
    if (st) {
        memset(msg, 0, sizeof *msg);
        return st;
    }
    return recv_header(c, timeout_ms, c->opts.stall_timeout_ms, &c->opts, msg, NULL);
}

ss_status *ss_link_recv_payload(ss_link_conn *c, ss_link_msg *msg)
{
    ss_status *st = check_ready(c);
    if (st) return st;
    return recv_payload(c, msg, c->opts.stall_timeout_ms);
}

ss_status *ss_link_recv(ss_link_conn *c, int timeout_ms, ss_link_msg *msg)
{
    ss_status *st = ss_link_recv_header(c, timeout_ms, msg);
    if (!st) st = ss_link_recv_payload(c, msg);
    return st;
}

/* ---------------------------------------------------------------- connection objects */

static ss_status *conn_new(int fd, bool server, const ss_link_options *opts, const char *peer,
                           ss_link_conn **out)
{
    *out = NULL;
    ss_link_conn *c = calloc(1, sizeof *c);
    if (!c) return ss_errf(SS_ERR_NOMEM, "link connection");
    ss_status *st = copy_opts(opts, &c->opts, &c->secret);
    if (st) {
        free(c);
        return st;
    }
    c->fd = fd;
    c->server = server;
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    c->local = getsockname(fd, (struct sockaddr *)&sa, &sl) == 0 && sa.ss_family == AF_UNIX &&
               link_shm_wanted();
    pthread_mutex_init(&c->send_mu, NULL);
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    *out = c;
    return NULL;
}

int ss_link_conn_fd(const ss_link_conn *c)
{
    return c->fd;
}
const char *ss_link_conn_peer(const ss_link_conn *c)
{
    return c->peer;
}

void ss_link_conn_stats(const ss_link_conn *c, uint64_t *bytes_sent, uint64_t *bytes_received)
{
    if (bytes_sent) *bytes_sent = atomic_load(&((ss_link_conn *)c)->sent);
    if (bytes_received) *bytes_received = atomic_load(&((ss_link_conn *)c)->received);
}

void ss_link_shutdown(ss_link_conn *c)
{
    if (!c) return;
    atomic_store(&c->broken, true);
    shutdown(c->fd, SHUT_RDWR);
}

void ss_link_close(ss_link_conn *c)
{
    if (!c) return;
    close(c->fd);
    pthread_mutex_destroy(&c->send_mu);
    free(c->pending_sizes);
    free(c->secret);
    free(c);
}

/* After the handshake the socket becomes blocking with SO_RCVTIMEO/SO_SNDTIMEO set to the stall
 * timeout: a big tensor then moves in one send/recv call instead of one call per socket-buffer
 * fill plus a poll() each time. Waits for a frame to start still go through poll(). */
static ss_status *enter_data_mode(ss_link_conn *c)
{
    struct timeval tv = {c->opts.stall_timeout_ms / 1000,
                         (suseconds_t)(c->opts.stall_timeout_ms % 1000) * 1000};
    int fl = fcntl(c->fd, F_GETFL);
    if (fl < 0 || fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK) != 0 ||
        setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0)
        return mark_broken(
            c, ss_errf(SS_ERR_IO, "link to %s: socket options: %s", c->peer, strerror(errno)));
    c->ready = true;
    return NULL;
}

/* ---------------------------------------------------------------- handshake */

#define CLIENT_LABEL "shardserve-link-v1 client"
#define SERVER_LABEL "shardserve-link-v1 server"

static const ss_link_options *handshake_limits(const ss_link_conn *c, ss_link_options *lim)
{
    *lim = c->opts;
    lim->max_header_bytes = LINK_HANDSHAKE_MAX_HEADER;
    lim->max_tensors = 0;
    lim->max_frame_bytes = SS_LINK_PREFIX_BYTES + LINK_HANDSHAKE_MAX_HEADER;
    return lim;
}

/* Receive the next handshake frame, which must be of type `want`. */
static ss_status *recv_handshake(ss_link_conn *c, uint64_t deadline, ss_link_type want,
                                 ss_link_msg *msg, link_handshake *hs)
{
    ss_link_options lim;
    int ms = remaining_ms(deadline);
    ss_status *st = recv_frame(c, ms, ms, handshake_limits(c, &lim), msg, hs);
    if (st && st->code == SS_ERR_TIMEOUT)
        st = ss_status_wrap(st, "handshake with %s timed out (%d ms)", c->peer,
                            c->opts.handshake_timeout_ms);
    if (st) return mark_broken(c, st);
    if (msg->type != want) {
        ss_link_type got = msg->type;
        ss_link_msg_free(msg);
        return mark_broken(c, ss_errf(SS_ERR_INVALID, "handshake with %s: expected %s, got %s",
                                      c->peer, ss_link_type_name(want), ss_link_type_name(got)));
    }
    return NULL;
}

static ss_status *send_auth_ack(ss_link_conn *c, uint64_t deadline, bool accepted,
                                const char *reason, const link_handshake *hs)
{
    ss_link_msg ack = {.type = SS_LINK_AUTH_ACK, .accepted = accepted, .message = (char *)reason};
    int ms = remaining_ms(deadline);
    return send_frame(c, &ack, hs, NULL, 0, ms ? ms : 1);
}

ss_status *ss_link_handshake(ss_link_conn *c)
{
    if (!c || !c->server) return ss_errf(SS_ERR_INTERNAL, "ss_link_handshake on a client link");
    if (c->ready) return NULL;
    uint64_t deadline = ss_now_ns() + (uint64_t)c->opts.handshake_timeout_ms * 1000000;
    link_handshake hello = {.has_nonce = true, .auth_required = c->secret != NULL};
    ss_status *st = link_random(hello.nonce, LINK_NONCE_BYTES);
    ss_link_msg msg = {.type = SS_LINK_HELLO};
    if (!st) st = send_frame(c, &msg, &hello, NULL, 0, remaining_ms(deadline) + 1);
    if (st) return mark_broken(c, ss_status_wrap(st, "handshake with %s", c->peer));
    link_handshake auth;
    st = recv_handshake(c, deadline, SS_LINK_AUTH, &msg, &auth);
    if (st) return st;
    ss_link_msg_free(&msg);
    link_handshake ack = {0};
    if (c->secret) {
        uint8_t want[LINK_PROOF_BYTES];
        st = link_proof(c->secret, c->opts.secret_len, CLIENT_LABEL, hello.nonce, auth.nonce, want);
        if (st) return mark_broken(c, st);
        if (!auth.has_proof || !link_proof_equal(want, auth.proof)) {
            const char *why = auth.has_proof ? "wrong shared secret" : "no shared secret given";
            ss_status_free(send_auth_ack(c, deadline, false, why, NULL));
            return mark_broken(
                c, ss_errf(SS_ERR_INVALID, "peer %s failed authentication: %s", c->peer, why));
        }
        st = link_proof(c->secret, c->opts.secret_len, SERVER_LABEL, hello.nonce, auth.nonce,
                        ack.proof);
        if (st) return mark_broken(c, st);
        ack.has_proof = true;
    }
    st = send_auth_ack(c, deadline, true, "", &ack);
    if (st) return mark_broken(c, ss_status_wrap(st, "handshake with %s", c->peer));
    return enter_data_mode(c);
}

static ss_status *client_handshake(ss_link_conn *c)
{
    uint64_t deadline = ss_now_ns() + (uint64_t)c->opts.handshake_timeout_ms * 1000000;
    ss_link_msg msg;
    link_handshake hello;
    ss_status *st = recv_handshake(c, deadline, SS_LINK_HELLO, &msg, &hello);
    if (st) return st;
    ss_link_msg_free(&msg);
    if (hello.auth_required && !c->secret)
        return mark_broken(
            c, ss_errf(SS_ERR_INVALID,
                       "link server %s requires a shared secret and none is configured", c->peer));
    link_handshake auth = {.has_nonce = true};
    st = link_random(auth.nonce, LINK_NONCE_BYTES);
    if (!st && c->secret) {
        st = link_proof(c->secret, c->opts.secret_len, CLIENT_LABEL, hello.nonce, auth.nonce,
                        auth.proof);
        auth.has_proof = true;
    }
    msg = (ss_link_msg){.type = SS_LINK_AUTH};
    if (!st) st = send_frame(c, &msg, &auth, NULL, 0, remaining_ms(deadline) + 1);
    if (st) return mark_broken(c, st);
    link_handshake ack;
    st = recv_handshake(c, deadline, SS_LINK_AUTH_ACK, &msg, &ack);
    if (st) return st;
    bool accepted = msg.accepted;
    if (!accepted)
        st = ss_errf(SS_ERR_INVALID, "link server %s rejected us: %s", c->peer,
                     msg.message && *msg.message ? msg.message : "no reason given");
    ss_link_msg_free(&msg);
    if (st) return mark_broken(c, st);
    if (c->secret) {
        uint8_t want[LINK_PROOF_BYTES];
        st = link_proof(c->secret, c->opts.secret_len, SERVER_LABEL, hello.nonce, auth.nonce, want);
        if (!st && (!ack.has_proof || !link_proof_equal(want, ack.proof)))
            st = ss_errf(SS_ERR_INVALID, "link server %s did not prove the shared secret", c->peer);
        if (st) return mark_broken(c, st);
    }
    return enter_data_mode(c);
}

/* ---------------------------------------------------------------- connect */

static ss_status *connect_once(const char *address, const resolved *r, int timeout_ms, int *out)
{
    int fd = socket(r->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return ss_errf(SS_ERR_IO, "socket: %s", strerror(errno));
    int rc = connect(fd, (const struct sockaddr *)&r->sa, r->len);
    if (rc != 0 && errno == EINPROGRESS) {
        bool ready;
        ss_status *st = wait_fd(fd, POLLOUT, timeout_ms, &ready);
        if (st || !ready) {
            close(fd);
            return st ? st
                      : ss_errf(SS_ERR_TIMEOUT, "connect to %s timed out after %d ms", address,
                                timeout_ms);
        }
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        errno = err;
        rc = err ? -1 : 0;
    }
    if (rc != 0) {
        int err = errno;
        close(fd);
        if (err == ECONNREFUSED || err == ENOENT || err == EAGAIN || err == ENETUNREACH ||
            err == EHOSTUNREACH || err == ECONNRESET)
            return ss_errf(SS_ERR_UNAVAILABLE, "cannot connect to %s: %s", address, strerror(err));
        return ss_errf(SS_ERR_IO, "cannot connect to %s: %s", address, strerror(err));
    }
    tune_socket(fd, r->is_unix);
    *out = fd;
    return NULL;
}

/* Agents on this host talk to a TCP listener through a Unix socket beside it (link_local_path):
 * the same frames without the TCP stack, whose per-segment work and loopback wake-ups cost more
 * than the copy itself. Optional: without it everything goes over TCP, as it must from other
 * hosts. SHARDSERVE_LINK_LOCAL=0 turns it off on either side. */
static bool local_twin_wanted(void)
{
    const char *e = getenv("SHARDSERVE_LINK_LOCAL");
    return !e || strcmp(e, "0") != 0;
}

/* Whether a resolved TCP address is one of this host's (in this network namespace). */
static bool is_local_host(const resolved *r)
{
    if (r->sa.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&r->sa;
        uint32_t a = ntohl(in->sin_addr.s_addr);
        if ((a >> 24) == 127 || a == INADDR_ANY) return true;
    } else if (r->sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&r->sa;
        if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
            return true;
    } else {
        return false;
    }
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0) return false;
    bool local = false;
    for (struct ifaddrs *i = ifs; i && !local; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != r->sa.ss_family) continue;
        if (r->sa.ss_family == AF_INET)
            local = ((const struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr ==
                    ((const struct sockaddr_in *)&r->sa)->sin_addr.s_addr;
        else
            local =
                !memcmp(&((const struct sockaddr_in6 *)i->ifa_addr)->sin6_addr,
                        &((const struct sockaddr_in6 *)&r->sa)->sin6_addr, sizeof(struct in6_addr));
    }
    freeifaddrs(ifs);
    return local;
}

/* A connected socket to the local twin of a TCP address on this host (see open_local_twin), or
 * -1 to use TCP: not local, no twin, or the twin does not answer. */
static int connect_local(const char *address, const resolved *r)
{
    char path[512], unix_address[520];
    if (r->is_unix || !local_twin_wanted() || !is_local_host(r)) return -1;
    ss_status *st = link_local_path(address, path, sizeof path);
    if (!st) st = link_private_dir(path, false); /* only a folder no one else can write to */
    resolved u;
    if (!st) {
        snprintf(unix_address, sizeof unix_address, "unix:%s", path);
        st = resolve(unix_address, &u);
    }
    int fd = -1;
    if (!st) st = connect_once(unix_address, &u, 1000, &fd);
    if (st) {
        ss_status_free(st);
        return -1;
    }
    SS_DEBUG("link: %s reached through %s", address, path);
    return fd;
}

ss_status *ss_link_connect(const char *address, const ss_link_options *opts, ss_link_conn **out)
{
    *out = NULL;
    ss_link_options o;
    uint8_t *secret;
    ss_status *st = copy_opts(opts, &o, &secret);
    if (st) return st;
    free(secret);
    resolved r;
    st = resolve(address, &r);
    if (st) return st;
    int fd = connect_local(address, &r);
    if (fd < 0) st = connect_once(address, &r, o.connect_timeout_ms, &fd);
    if (st) return st;
    ss_link_conn *c = NULL;
    st = conn_new(fd, false, opts, address, &c);
    if (st) {
        close(fd);
        return st;
    }
    st = client_handshake(c);
    if (st) {
        ss_link_close(c);
        return st;
    }
    *out = c;
    return NULL;
}

ss_status *ss_link_connect_retry(const char *address, const ss_link_options *opts,
                                 int total_timeout_ms, int interval_ms, ss_link_conn **out)
{
    uint64_t deadline =
        ss_now_ns() + (uint64_t)(total_timeout_ms > 0 ? total_timeout_ms : 0) * 1000000;
    int attempts = 0;
    for (;;) {
        attempts++;
        ss_status *st = ss_link_connect(address, opts, out);
        if (!st) return NULL;
        bool transient = st->code == SS_ERR_UNAVAILABLE || st->code == SS_ERR_TIMEOUT;
        int left = remaining_ms(deadline);
        if (!transient || left == 0)
            return transient ? ss_status_wrap(st, "gave up after %d attempts in %d ms", attempts,
                                              total_timeout_ms)
                             : st;
        ss_status_free(st);
        int nap = interval_ms < left ? interval_ms : left;
        if (nap > 0) {
            struct timespec ts = {nap / 1000, (long)(nap % 1000) * 1000000};
            nanosleep(&ts, NULL);
        }
    }
}

/* ---------------------------------------------------------------- listen / accept */

/* Whether a connect to the Unix socket at sa is refused (ECONNREFUSED): no socket is bound to
 * its file, which a dead process left. Non-blocking: a listener with a full backlog (EAGAIN)
 * answers. */
static bool unix_refused(const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    int rc = connect(fd, sa, len);
    int err = errno;
    close(fd);
    return rc != 0 && err == ECONNREFUSED;
}

/* A Unix socket file that nobody answers on is left over from a dead process: remove it. */
static bool remove_stale_unix(const resolved *r)
{
    struct stat sb;
    if (lstat(r->path, &sb) != 0 || !S_ISSOCK(sb.st_mode)) return false;
    return unix_refused((const struct sockaddr *)&r->sa, r->len) && unlink(r->path) == 0;
}

/* A twin file changed this recently may belong to a listener between its bind and its line in
 * /proc/net/unix, so the sweep leaves it alone. */
#define TWIN_SWEEP_MIN_AGE_S 10

/* The names in dir (of length dir_len) that start with prefix and that a Unix socket of this
 * network namespace is bound to. Each line of /proc/net/unix holds seven fields (Num RefCount
 * Protocol Flags Type St Inode) and then, for a bound socket, the path given to bind, which may
 * contain spaces; an abstract name starts with '@' and is skipped. A read error returns false
 * rather than a short list, because a socket missing from the list would lose its file. *out
 * gets a malloc'd array of *n malloc'd names. */
static bool bound_names(const char *dir, size_t dir_len, const char *prefix, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    FILE *f = fopen("/proc/net/unix", "re");
    if (!f) return false;
    char **names = NULL, *line = NULL;
    size_t cap = 0, line_cap = 0, prefix_len = strlen(prefix);
    bool ok = true;
    while (ok && getline(&line, &line_cap, f) > 0) {
        int path_at = -1;
        sscanf(line, "%*s %*s %*s %*s %*s %*s %*s %n", &path_at);
        if (path_at < 0 || line[path_at] != '/') continue;
        char *path = line + path_at;
        path[strcspn(path, "\n")] = 0;
        if (strncmp(path, dir, dir_len) || path[dir_len] != '/' ||
            strncmp(path + dir_len + 1, prefix, prefix_len))
            continue;
        if (*n == cap) {
            size_t grown_cap = cap ? 2 * cap : 16;
            char **grown = realloc(names, grown_cap * sizeof *names);
            if (!grown) {
                ok = false;
                break;
            }
            names = grown;
            cap = grown_cap;
        }
        names[*n] = strdup(path + dir_len + 1);
        if (!names[*n])
            ok = false;
        else
            (*n)++;
    }
    if (ferror(f)) ok = false;
    free(line);
    fclose(f);
    if (ok) {
        *out = names;
        return true;
    }
    for (size_t i = 0; i < *n; i++)
        free(names[i]);
    free(names);
    *n = 0;
    return false;
}

/* Whether the directory entry e of d is a twin that a killed listener left: one of ours that is a
 * socket file, listed in no line of bound, older than TWIN_SWEEP_MIN_AGE_S and unanswered. */
static bool twin_is_stale(DIR *d, const char *dir, const struct dirent *e, char **bound,
                          size_t n_bound, time_t now)
{
    for (size_t i = 0; i < n_bound; i++)
        if (!strcmp(bound[i], e->d_name)) return false;
    struct stat sb;
    if (fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0) return false;
    if (!S_ISSOCK(sb.st_mode) || sb.st_uid != geteuid()) return false;
    if (sb.st_mtime > now - TWIN_SWEEP_MIN_AGE_S) return false;
    /* a connect too: /proc/net/unix can skip a line when sockets close while it is read */
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    int n = snprintf(un.sun_path, sizeof un.sun_path, "%s/%s", dir, e->d_name);
    return n > 0 && (size_t)n < sizeof un.sun_path &&
           unix_refused((const struct sockaddr *)&un, sizeof un);
}

/* Twins of listeners that ended without closing them (SIGKILL, a crash) stay behind as socket
 * files that no socket is bound to, and a host whose servers are restarted that way would gather
 * them without end. Each new twin therefore removes the stale ones of its own network namespace
 * (the same name prefix as twin_path). A listener of another process that replaces a stale file
 * of its own port between the check and the unlink (remove_stale_unix, then bind) could lose its
 * new file the same way: its agents then connect over TCP. Namespaces of one kernel have inodes
 * of their own; two kernels sharing one /tmp (VMs on a shared folder) would see each other's
 * twins as stale. Anything that cannot be read is left as it is. */
static void sweep_stale_twins(const char *twin_path)
{
    static const char port_mark[] = "-port-", suffix[] = ".sock";
    const char *slash = strrchr(twin_path, '/'), *port = strstr(twin_path, port_mark);
    if (!slash || !port || port < slash) return;
    char dir[512], prefix[128];
    size_t dir_len = (size_t)(slash - twin_path);
    size_t prefix_len = (size_t)(port + strlen(port_mark) - (slash + 1));
    if (dir_len >= sizeof dir || prefix_len >= sizeof prefix) return;
    memcpy(dir, twin_path, dir_len);
    dir[dir_len] = 0;
    memcpy(prefix, slash + 1, prefix_len);
    prefix[prefix_len] = 0;
    size_t n_bound = 0;
    char **bound = NULL;
    DIR *d = bound_names(dir, dir_len, prefix, &bound, &n_bound) ? opendir(dir) : NULL;
    struct dirent *e;
    time_t now = time(NULL);
    int removed = 0;
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name), suffix_len = strlen(suffix);
        if (strncmp(e->d_name, prefix, prefix_len) || len < suffix_len ||
            strcmp(e->d_name + len - suffix_len, suffix))
            continue;
        if (twin_is_stale(d, dir, e, bound, n_bound, now) && unlinkat(dirfd(d), e->d_name, 0) == 0)
            removed++;
    }
    if (d) closedir(d);
    for (size_t i = 0; i < n_bound; i++)
        free(bound[i]);
    free(bound);
    if (removed) SS_DEBUG("link: removed %d stale twin socket file(s) from %s", removed, dir);
}

static void open_local_twin(ss_link_listener *l, const ss_link_options *opts)
{
    char path[512], address[520];
    if (!local_twin_wanted()) return;
    ss_status *st = link_local_path(l->address, path, sizeof path);
    if (!st) st = link_private_dir(path, true);
    if (!st) sweep_stale_twins(path);
    if (!st) {
        snprintf(address, sizeof address, "unix:%s", path);
        st = ss_link_listen(address, opts, &l->local);
    }
    if (st) SS_WARN("link %s: agents on this host will use TCP: %s", l->address, st->msg);
    ss_status_free(st);
}

ss_status *ss_link_listen(const char *address, const ss_link_options *opts, ss_link_listener **out)
{
    *out = NULL;
    ss_link_listener *l = calloc(1, sizeof *l);
    if (!l) return ss_errf(SS_ERR_NOMEM, "link listener");
    l->fd = -1;
    ss_status *st = copy_opts(opts, &l->opts, &l->secret);
    resolved r;
    if (!st) st = resolve(address, &r);
    if (!st) {
        l->fd = socket(r.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (l->fd < 0) st = ss_errf(SS_ERR_IO, "socket: %s", strerror(errno));
    }
    if (!st) {
        int one = 1;
        if (!r.is_unix) setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        int rc = bind(l->fd, (const struct sockaddr *)&r.sa, r.len);
        if (rc != 0 && errno == EADDRINUSE && r.is_unix && remove_stale_unix(&r))
            rc = bind(l->fd, (const struct sockaddr *)&r.sa, r.len);
        if (rc != 0)
            st = ss_errf(errno == EADDRINUSE ? SS_ERR_UNAVAILABLE : SS_ERR_IO,
                         "cannot listen on %s: %s", address, strerror(errno));
        else if (listen(l->fd, 128) != 0)
            st = ss_errf(SS_ERR_IO, "listen on %s: %s", address, strerror(errno));
    }
    if (!st && r.is_unix) {
        struct stat sb;
        l->unix_path = strdup(r.path);
        if (l->unix_path && stat(r.path, &sb) == 0) l->unix_ino = sb.st_ino;
        snprintf(l->address, sizeof l->address, "unix:%s", r.path);
    } else if (!st) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        getsockname(l->fd, (struct sockaddr *)&sa, &len);
        format_addr(&sa, l->address, sizeof l->address);
        open_local_twin(l, opts);
    }
    if (st) {
        ss_link_listener_close(l);
        return st;
    }
    *out = l;
    return NULL;
}

const char *ss_link_listener_address(const ss_link_listener *l)
{
    return l->address;
}
int ss_link_listener_fd(const ss_link_listener *l)
{
    return l->fd;
}
int ss_link_listener_local_fd(const ss_link_listener *l)
{
    return l->local ? l->local->fd : -1;
}

/* One pending connection of l's own socket: 1 taken (*out, or an error), 0 none waiting. */
static int accept_one(ss_link_listener *l, ss_link_conn **out, ss_status **st)
{
    *st = NULL;
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        int fd = accept4(l->fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            *st = ss_errf(errno == EMFILE || errno == ENFILE ? SS_ERR_LIMIT : SS_ERR_IO,
                          "accept on %s: %s", l->address, strerror(errno));
            return 1;
        }
        char peer[160];
        if (sa.ss_family == AF_UNIX) {
            /* a Unix socket carries the peer's identity: only our own user may connect */
            struct ucred cred = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
            socklen_t clen = sizeof cred;
            if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0 ||
                cred.uid != geteuid()) {
                unsigned uid = (unsigned)cred.uid;
                close(fd);
                *st = ss_errf(SS_ERR_INVALID,
                              "%s: refused a connection from uid %u (only uid %u may connect)",
                              l->address, clen == sizeof cred ? uid : 0u, (unsigned)geteuid());
                return 1;
            }
            snprintf(peer, sizeof peer, "%.120s peer", l->address);
        } else {
            format_addr(&sa, peer, sizeof peer);
        }
        tune_socket(fd, sa.ss_family == AF_UNIX);
        *st = conn_new(fd, true, &l->opts, peer, out);
        if (*st) close(fd);
        return 1;
    }
}

ss_status *ss_link_accept(ss_link_listener *l, int timeout_ms, ss_link_conn **out)
{
    *out = NULL;
    uint64_t deadline = timeout_ms < 0 ? 0 : ss_now_ns() + (uint64_t)timeout_ms * 1000000;
    for (;;) {
        ss_status *st;
        if (accept_one(l, out, &st) || (l->local && accept_one(l->local, out, &st))) return st;
        struct pollfd fds[2] = {{l->fd, POLLIN, 0}, {l->local ? l->local->fd : -1, POLLIN, 0}};
        int wait = timeout_ms < 0 ? -1 : remaining_ms(deadline);
        int n = poll(fds, 2, wait);
        if (n < 0 && errno != EINTR) return ss_errf(SS_ERR_IO, "poll: %s", strerror(errno));
        if (n == 0)
            return ss_errf(SS_ERR_TIMEOUT, "no connection on %s within %d ms", l->address,
                           timeout_ms);
    }
}

void ss_link_listener_close(ss_link_listener *l)
{
    if (!l) return;
    ss_link_listener_close(l->local);
    if (l->fd >= 0) close(l->fd);
    if (l->unix_path) {
        struct stat sb;
        if (lstat(l->unix_path, &sb) == 0 && S_ISSOCK(sb.st_mode) && sb.st_ino == l->unix_ino)
            unlink(l->unix_path);
    }
    free(l->unix_path);
    free(l->secret);
    free(l);
}
