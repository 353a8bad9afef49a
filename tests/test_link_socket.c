/*
 * The link over real sockets (TCP on 127.0.0.1, Unix sockets in a temp dir): every message type
 * and several dtypes round-trip through an echo server, including a 64 MiB tensor; the two-step
 * receive lands bytes in the caller's buffer; two threads can send on one connection; malformed
 * frames give the server a clear error while it keeps serving the next client; every wait is
 * bounded; stale Unix socket files are replaced, and stale twins of dead listeners swept.
 */
#include "test_link_util.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

static ss_link_conn *dial(const char *address)
{
    ss_link_conn *c = NULL;
    ss_status *st = ss_link_connect(address, NULL, &c);
    if (st) {
        fprintf(stderr, "connect %s: %s\n", address, st->msg);
        check_failures++;
        ss_status_free(st);
    }
    return c;
}

/* Send msg and check the echo server's answer matches `want` (+ tensors). */
static void exchange(ss_link_conn *c, const ss_link_msg *msg, const ss_tensor *const *ts, size_t n,
                     const ss_link_msg *want)
{
    CHECK_OK(ss_link_send(c, msg, ts, n));
    if (!want) return;
    ss_link_msg got;
    ss_status *st = ss_link_recv(c, 10000, &got);
    CHECK_MSG(!st, "recv: %s", st ? st->msg : "");
    if (st) {
        ss_status_free(st);
        return;
    }
    CHECK_MSG(tl_msg_matches(want, ts, n, &got), "answer to %s differs",
              ss_link_type_name(msg->type));
    ss_link_msg_free(&got);
}

static void all_types_over(const char *address)
{
    tl_server *s = tl_server_start(address, NULL);
    CHECK(s != NULL);
    if (!s) return;
    ss_link_conn *c = dial(ss_link_listener_address(s->listener));
    if (c) {
        ss_link_spec in[1] = {{"x", SS_DT_FLOAT32, 2, {128, 96}}};
        ss_link_spec out[1] = {{"y", SS_DT_FLOAT32, 2, {-1, 16}}};
        exchange(
            c,
            &(ss_link_msg){.type = SS_LINK_REGISTER,
                           .rank = 5,
                           .rank_size = 8,
                           .inputs = in,
                           .n_inputs = 1,
                           .outputs = out,
                           .n_outputs = 1},
            NULL, 0,
            &(ss_link_msg){.type = SS_LINK_REGISTER_ACK, .accepted = true, .message = "rank 5"});
        exchange(c, &(ss_link_msg){.type = SS_LINK_GET_META}, NULL, 0,
                 &(ss_link_msg){.type = SS_LINK_META, .json = "{\"rank_size\": 8}"});
        exchange(c, &(ss_link_msg){.type = SS_LINK_HEARTBEAT, .seq = 9, .sent_ns = ss_now_ns()},
                 NULL, 0, NULL);
        ss_link_msg hb;
        CHECK_OK(ss_link_recv(c, 5000, &hb));
        CHECK(hb.type == SS_LINK_HEARTBEAT_ACK && hb.seq == 9);
        ss_link_msg_free(&hb);

        int64_t d2[2] = {128, 96}, d1[1] = {17}, d3[3] = {2, 3, 4};
        ss_tensor f32 = tl_numeric(SS_DT_FLOAT32, 2, d2, 1),
                  i64 = tl_numeric(SS_DT_INT64, 1, d1, 2), u8 = tl_numeric(SS_DT_UINT8, 3, d3, 3),
                  f16 = tl_numeric(SS_DT_FLOAT16, 1, d1, 4), bl = tl_numeric(SS_DT_BOOL, 1, d1, 5),
                  sc = tl_numeric(SS_DT_INT32, 0, NULL, 6);
        const char *sv[4] = {"", "bytes\0with nul", "x", "utf-8 \xc3\xa9"};
        size_t sl[4] = {0, 14, 1, 8};
        ss_tensor str = tl_strings(4, sv, sl);
        const ss_tensor *ts[7] = {&f32, &i64, &u8, &f16, &bl, &sc, &str};
        char *names[7] = {"x", "ids", "img", "h", "mask", "k", "text"};
        exchange(c,
                 &(ss_link_msg){.type = SS_LINK_PREDICT, .request_id = 42, .tensor_names = names},
                 ts, 7,
                 &(ss_link_msg){.type = SS_LINK_RESULT,
                                .request_id = 42,
                                .message = "echo",
                                .tensor_names = names});
        exchange(c, &(ss_link_msg){.type = SS_LINK_PREDICT, .request_id = 43}, NULL, 0,
                 &(ss_link_msg){.type = SS_LINK_RESULT, .request_id = 43, .message = "echo"});
        for (int i = 0; i < 7; i++)
            ss_tensor_free((ss_tensor *)ts[i]);

        /* more string elements than one writev takes (IOV_MAX = 1024) */
        int64_t ns[1] = {5000};
        ss_tensor many;
        CHECK_OK(ss_tensor_alloc(&many, SS_DT_STRING, 1, ns));
        for (int i = 0; i < 5000; i++) {
            char e[32];
            int len = snprintf(e, sizeof e, "element %d", i * 7);
            CHECK_OK(ss_tensor_set_string(&many, i, e, (size_t)(i % 3 ? len : 0)));
        }
        const ss_tensor *tm[1] = {&many};
        exchange(c, &(ss_link_msg){.type = SS_LINK_PREDICT, .request_id = 45}, tm, 1,
                 &(ss_link_msg){.type = SS_LINK_RESULT, .request_id = 45, .message = "echo"});
        ss_tensor_free(&many);

        /* 64 MiB */
        int64_t big[2] = {4096, 4096};
        ss_tensor t = tl_numeric(SS_DT_FLOAT32, 2, big, 11);
        const ss_tensor *tb[1] = {&t};
        uint64_t t0 = ss_now_ns();
        exchange(c, &(ss_link_msg){.type = SS_LINK_PREDICT, .request_id = 44}, tb, 1,
                 &(ss_link_msg){.type = SS_LINK_RESULT, .request_id = 44, .message = "echo"});
        printf("     %s: 64 MiB round trip %.1f ms\n", address, tl_ms_since(t0));
        ss_tensor_free(&t);

        uint64_t sent, recvd;
        ss_link_conn_stats(c, &sent, &recvd);
        CHECK(sent > (64u << 20) && recvd > (64u << 20));
        exchange(c, &(ss_link_msg){.type = SS_LINK_EXIT, .message = "bye"}, NULL, 0, NULL);
        char outcome[512];
        CHECK(tl_outcome(s, 0, outcome, sizeof outcome));
        CHECK_MSG(strcmp(outcome, "ok") == 0, "server saw: %s", outcome);
        ss_link_close(c);
    }
    tl_server_stop(s);
}

static void every_type_round_trips_over_tcp(void)
{
    all_types_over("127.0.0.1:0");
}

static void every_type_round_trips_over_unix(void)
{
    char dir[64], addr[128];
    tl_tmpdir(dir, sizeof dir);
    snprintf(addr, sizeof addr, "unix:%s/link.sock", dir);
    all_types_over(addr);
    struct stat sb;
    CHECK_MSG(stat(addr + 5, &sb) != 0, "socket file left behind");
    rmdir(dir);
}

/* Two-step receive: the RESULT's payload lands in the caller's own buffer. */
static void payload_goes_into_caller_storage(void)
{
    tl_server *s = tl_server_start("127.0.0.1:0", NULL);
    ss_link_conn *c = s ? dial(ss_link_listener_address(s->listener)) : NULL;
    if (c) {
        int64_t d[1] = {1 << 20};
        ss_tensor t = tl_numeric(SS_DT_INT32, 1, d, 3);
        ss_tensor u = tl_numeric(SS_DT_UINT8, 1, d, 4);
        const ss_tensor *ts[2] = {&t, &u};
        CHECK_OK(ss_link_send(c, &(ss_link_msg){.type = SS_LINK_PREDICT, .request_id = 8}, ts, 2));
        ss_link_msg m;
        CHECK_OK(ss_link_recv_header(c, 5000, &m));
        CHECK(m.type == SS_LINK_RESULT && m.n_tensors == 2);
        void *mine = NULL;
        if (m.n_tensors == 2) {
            CHECK(m.tensors[0].data == NULL && m.tensors[0].nbytes == t.nbytes);
            CHECK(m.tensors[0].dtype == SS_DT_INT32 && m.tensors[0].dims[0] == d[0]);
            mine = malloc(t.nbytes);
            m.tensors[0].data = mine;
            m.tensors[0].storage = SS_STORE_BORROWED;
            CHECK_ERR(ss_link_recv_header(c, 10, &(ss_link_msg){0}),
                      "ss_link_recv_payload was not");
            CHECK_OK(ss_link_recv_payload(c, &m));
            CHECK(m.tensors[0].data == mine && memcmp(mine, t.data, t.nbytes) == 0);
            CHECK(m.tensors[1].storage == SS_STORE_OWNED && tl_tensor_equal(&m.tensors[1], &u));
        }
        ss_link_msg_free(&m); /* must not free `mine` */
        free(mine);
        /* the connection is still in step; a frame without tensors is complete after its
         * header, so the next header can follow directly */
        CHECK_OK(ss_link_send(c, &(ss_link_msg){.type = SS_LINK_GET_META}, NULL, 0));
        CHECK_OK(ss_link_recv_header(c, 5000, &m));
        CHECK(m.type == SS_LINK_META && m.json && strstr(m.json, "rank_size"));
        CHECK_OK(ss_link_recv_payload(c, &m)); /* a no-op */
        ss_link_msg_free(&m);
        exchange(c, &(ss_link_msg){.type = SS_LINK_GET_META}, NULL, 0,
                 &(ss_link_msg){.type = SS_LINK_META, .json = "{\"rank_size\": 8}"});
        ss_tensor_free(&t);
        ss_tensor_free(&u);
        ss_link_close(c);
    }
    tl_server_stop(s);
}

/* A heartbeat thread and a result sender share one connection; no frame is torn. */
typedef struct {
    ss_link_conn *c;
    int first, count;
    bool with_tensor;
} sender_arg;

static void *sender(void *p)
{
    sender_arg *a = p;
    int64_t d[1] = {3000};
    ss_tensor t = tl_numeric(SS_DT_FLOAT32, 1, d, 1);
    const ss_tensor *ts[1] = {&t};
    for (int i = 0; i < a->count; i++) {
        ss_status *st;
        if (a->with_tensor)
            st = ss_link_send(
                a->c,
                &(ss_link_msg){.type = SS_LINK_PREDICT, .request_id = (uint64_t)(a->first + i)}, ts,
                1);
        else
            st = ss_link_send(
                a->c, &(ss_link_msg){.type = SS_LINK_HEARTBEAT, .seq = (uint64_t)(a->first + i)},
                NULL, 0);
        if (st) {
            fprintf(stderr, "send: %s\n", st->msg);
            check_failures++;
            ss_status_free(st);
            break;
        }
    }
    ss_tensor_free(&t);
    return NULL;
}

static void concurrent_senders_do_not_interleave(void)
{
    tl_server *s = tl_server_start("127.0.0.1:0", NULL);
    ss_link_conn *c = s ? dial(ss_link_listener_address(s->listener)) : NULL;
    if (c) {
        enum { N = 300 };
        sender_arg a1 = {c, 0, N, false}, a2 = {c, 100000, N, true};
        pthread_t t1, t2;
        pthread_create(&t1, NULL, sender, &a1);
        pthread_create(&t2, NULL, sender, &a2);
        static bool seen_hb[N], seen_res[N];
        int got = 0;
        while (got < 2 * N) {
            ss_link_msg m;
            ss_status *st = ss_link_recv(c, 10000, &m);
            if (st) {
                fprintf(stderr, "recv after %d: %s\n", got, st->msg);
                check_failures++;
                ss_status_free(st);
                break;
            }
            if (m.type == SS_LINK_HEARTBEAT_ACK && m.seq < N)
                seen_hb[m.seq] = true;
            else if (m.type == SS_LINK_RESULT && m.request_id >= 100000 &&
                     m.request_id < 100000 + N && m.n_tensors == 1 && m.tensors[0].nbytes == 12000)
                seen_res[m.request_id - 100000] = true;
            else
                check_failures++;
            ss_link_msg_free(&m);
            got++;
        }
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        int missing = 0;
        for (int i = 0; i < N; i++)
            missing += !seen_hb[i] + !seen_res[i];
        CHECK_MSG(missing == 0, "%d replies missing", missing);
        ss_link_close(c);
    }
    tl_server_stop(s);
}

/* ---------------------------------------------------------------- malformed frames */

/* Write raw bytes on an already authenticated connection. */
static void write_raw(ss_link_conn *c, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t w = send(ss_link_conn_fd(c), p, len, MSG_NOSIGNAL);
        if (w < 0) {
            struct pollfd pf = {ss_link_conn_fd(c), POLLOUT, 0};
            if (poll(&pf, 1, 2000) <= 0) break;
            continue;
        }
        p += w;
        len -= (size_t)w;
    }
}

static void *frame_bytes(const ss_link_msg *m, const ss_tensor *const *ts, size_t n, size_t *len)
{
    void *buf = NULL;
    CHECK_OK(ss_link_encode_frame(m, ts, n, &buf, len));
    return buf;
}

static void malformed_frames_drop_only_that_connection(void)
{
    ss_link_options o;
    ss_link_options_default(&o);
    o.stall_timeout_ms = 300;
    o.max_frame_bytes = 8u << 20;
    tl_server *s = tl_server_start("127.0.0.1:0", &o);
    if (!s) return;
    const char *addr = ss_link_listener_address(s->listener);
    int64_t d[1] = {6};
    ss_tensor t = tl_numeric(SS_DT_FLOAT32, 1, d, 1);
    const ss_tensor *ts[1] = {&t};
    size_t len;
    uint8_t *good = frame_bytes(&(ss_link_msg){.type = SS_LINK_PREDICT}, ts, 1, &len);
    struct {
        const char *name;
        size_t off;
        uint64_t value;
        int width;       /* bytes patched, 0 = none */
        size_t send_len; /* 0 = all */
        const char *expect;
    } cases[] = {
        {"bad magic", 0, 0x20544547, 4, 0, "bad frame magic"},
        {"unknown type", 6, 99, 2, 0, "unknown frame type 99"},
        {"old version", 4, 7, 2, 0, "frame version 7"},
        {"frame over the server's 8 MiB limit", 16, 64u << 20, 8, 0, "the limit is 8388608"},
        {"payload length lies", 16, 4, 8, 0, "overrun the declared payload"},
        {"truncated then closed", 0, 0, 0, 40, "truncated frame"},
        {"garbage header", 32, 0xffffffffffffffffull, 8, 0, "not a valid protobuf"},
        {"handshake frame after handshake", 6, SS_LINK_AUTH, 2, 0, "unexpected AUTH frame"},
    };
    int n = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n; i++) {
        ss_link_conn *c = dial(addr);
        if (!c) continue;
        uint8_t *b = malloc(len);
        memcpy(b, good, len);
        for (int k = 0; k < cases[i].width; k++)
            b[cases[i].off + k] = (uint8_t)(cases[i].value >> (8 * k));
        if (cases[i].value == SS_LINK_AUTH) { /* a valid AUTH-typed frame: empty header */
            memset(b + 8, 0, 24);
        }
        size_t sl = cases[i].send_len ? cases[i].send_len : len;
        if (cases[i].value == SS_LINK_AUTH) sl = 32;
        write_raw(c, b, sl);
        shutdown(ss_link_conn_fd(c), SHUT_WR);
        char out[512] = "";
        CHECK_MSG(tl_outcome(s, i, out, sizeof out), "case %s: no outcome", cases[i].name);
        CHECK_MSG(strstr(out, cases[i].expect) != NULL, "case '%s': server saw \"%s\"",
                  cases[i].name, out);
        if (getenv("SS_TEST_VERBOSE")) printf("     %-36s -> %s\n", cases[i].name, out);
        /* the server hangs up: our side sees the connection close, never a hang */
        ss_link_msg m;
        ss_status *st = ss_link_recv(c, 2000, &m);
        CHECK_MSG(st && st->code != SS_ERR_TIMEOUT, "case %s: %s", cases[i].name,
                  st ? st->msg : "got a frame");
        ss_status_free(st);
        ss_link_close(c);
        free(b);
    }
    /* a stalled frame: half a prefix, then silence */
    ss_link_conn *c = dial(addr);
    if (c) {
        uint64_t t0 = ss_now_ns();
        write_raw(c, good, 12);
        char out[512] = "";
        CHECK(tl_outcome(s, n, out, sizeof out));
        double ms = tl_ms_since(t0);
        CHECK_MSG(strstr(out, "stalled for 300 ms") != NULL, "server saw \"%s\"", out);
        CHECK_MSG(ms >= 250 && ms < 3000, "stall detected after %.0f ms", ms);
        ss_link_close(c);
    }
    /* a non-link client (HTTP) never gets past the handshake */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    sin.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));
    CHECK(connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0);
    const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxx";
    CHECK(write(fd, http, strlen(http)) > 0);
    char out[512] = "";
    CHECK(tl_outcome(s, n + 1, out, sizeof out));
    CHECK_MSG(strstr(out, "bad frame magic") != NULL, "server saw \"%s\"", out);
    close(fd);
    /* and after all that, a good client is served */
    c = dial(addr);
    if (c) {
        exchange(c, &(ss_link_msg){.type = SS_LINK_PREDICT, .request_id = 1}, ts, 1,
                 &(ss_link_msg){.type = SS_LINK_RESULT, .request_id = 1, .message = "echo"});
        ss_link_close(c);
    }
    free(good);
    ss_tensor_free(&t);
    tl_server_stop(s);
}

static void oversize_send_is_refused_and_connection_survives(void)
{
    tl_server *s = tl_server_start("127.0.0.1:0", NULL);
    ss_link_options o;
    ss_link_options_default(&o);
    o.max_frame_bytes = 1u << 20;
    ss_link_conn *c = NULL;
    if (s) CHECK_OK(ss_link_connect(ss_link_listener_address(s->listener), &o, &c));
    if (c) {
        int64_t d[1] = {1 << 19};
        ss_tensor t = tl_numeric(SS_DT_INT32, 1, d, 1);
        const ss_tensor *ts[1] = {&t};
        CHECK_ERR(ss_link_send(c, &(ss_link_msg){.type = SS_LINK_PREDICT}, ts, 1), "limit 1048576");
        exchange(c, &(ss_link_msg){.type = SS_LINK_GET_META}, NULL, 0,
                 &(ss_link_msg){.type = SS_LINK_META, .json = "{\"rank_size\": 8}"});
        CHECK_ERR(ss_link_send(c, &(ss_link_msg){.type = SS_LINK_AUTH}, NULL, 0),
                  "sent by the link itself");
        ss_tensor_free(&t);
        ss_link_close(c);
    }
    tl_server_stop(s);
}

/* ---------------------------------------------------------------- bounded waits */

static void waits_are_bounded(void)
{
    ss_link_options o;
    ss_link_options_default(&o);
    o.handshake_timeout_ms = 300;
    o.connect_timeout_ms = 300;
    o.stall_timeout_ms = 300;

    /* recv on an idle connection: SS_ERR_TIMEOUT, and the connection still works */
    tl_server *s = tl_server_start("127.0.0.1:0", NULL);
    ss_link_conn *c = s ? dial(ss_link_listener_address(s->listener)) : NULL;
    if (c) {
        ss_link_msg m;
        uint64_t t0 = ss_now_ns();
        ss_status *st = ss_link_recv(c, 200, &m);
        double ms = tl_ms_since(t0);
        CHECK(st && st->code == SS_ERR_TIMEOUT);
        ss_status_free(st);
        CHECK_MSG(ms >= 150 && ms < 1500, "recv timeout took %.0f ms", ms);
        st = ss_link_recv(c, 0, &m);
        CHECK(st && st->code == SS_ERR_TIMEOUT);
        ss_status_free(st);
        exchange(c, &(ss_link_msg){.type = SS_LINK_GET_META}, NULL, 0,
                 &(ss_link_msg){.type = SS_LINK_META, .json = "{\"rank_size\": 8}"});
        ss_link_close(c);
    }
    tl_server_stop(s);

    /* nobody listening: refused at once; the retry helper gives up on time */
    ss_link_listener *l;
    CHECK_OK(ss_link_listen("127.0.0.1:0", NULL, &l));
    char dead[64];
    snprintf(dead, sizeof dead, "%s", ss_link_listener_address(l));
    ss_link_listener_close(l);
    uint64_t t0 = ss_now_ns();
    CHECK_ERR(ss_link_connect(dead, &o, &c), "Connection refused");
    CHECK(tl_ms_since(t0) < 1000);
    t0 = ss_now_ns();
    CHECK_ERR(ss_link_connect_retry(dead, &o, 500, 100, &c), "gave up after");
    double ms = tl_ms_since(t0);
    CHECK_MSG(ms >= 450 && ms < 2000, "retry gave up after %.0f ms", ms);

    /* a listener that never answers the handshake: the client gives up after 300 ms */
    CHECK_OK(ss_link_listen("127.0.0.1:0", NULL, &l));
    t0 = ss_now_ns();
    CHECK_ERR(ss_link_connect(ss_link_listener_address(l), &o, &c), "handshake with");
    ms = tl_ms_since(t0);
    CHECK_MSG(ms >= 250 && ms < 2000, "client handshake timeout after %.0f ms", ms);

    /* a client that never does the handshake: the server gives up after 300 ms */
    ss_link_listener *l2;
    CHECK_OK(ss_link_listen("127.0.0.1:0", &o, &l2));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    const char *a2 = ss_link_listener_address(l2);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    sin.sin_port = htons((uint16_t)atoi(strrchr(a2, ':') + 1));
    CHECK(connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0);
    ss_link_conn *sc = NULL;
    CHECK_OK(ss_link_accept(l2, 1000, &sc));
    if (sc) {
        t0 = ss_now_ns();
        CHECK_ERR(ss_link_handshake(sc), "timed out");
        ms = tl_ms_since(t0);
        CHECK_MSG(ms >= 250 && ms < 2000, "server handshake timeout after %.0f ms", ms);
        ss_link_close(sc);
    }
    close(fd);
    /* accept with nothing pending */
    t0 = ss_now_ns();
    CHECK_ERR(ss_link_accept(l2, 100, &sc), "no connection");
    CHECK(tl_ms_since(t0) < 1000);
    ss_link_listener_close(l2);
    ss_link_listener_close(l);
}

/* A peer that stops reading: a big send fails after the stall timeout instead of hanging. */
typedef struct {
    ss_link_listener *l;
    atomic_bool done;
} sitter;

static void *accept_and_sit(void *p)
{
    sitter *s = p;
    ss_link_conn *c = NULL;
    ss_status *st = ss_link_accept(s->l, 5000, &c);
    if (!st) st = ss_link_handshake(c);
    ss_status_free(st);
    for (int i = 0; i < 2000 && !atomic_load(&s->done); i++)
        usleep(5000); /* never reads */
    ss_link_close(c);
    return NULL;
}

static void send_to_a_peer_that_does_not_read_is_bounded(void)
{
    int64_t d[1] = {64 << 20};
    ss_tensor t = tl_numeric(SS_DT_UINT8, 1, d, 1);
    const ss_tensor *ts[1] = {&t};
    sitter s = {0};
    CHECK_OK(ss_link_listen("127.0.0.1:0", NULL, &s.l));
    pthread_t th;
    pthread_create(&th, NULL, accept_and_sit, &s);
    ss_link_options o;
    ss_link_options_default(&o);
    o.stall_timeout_ms = 300;
    ss_link_conn *c = NULL;
    CHECK_OK(ss_link_connect(ss_link_listener_address(s.l), &o, &c));
    if (c) {
        uint64_t t0 = ss_now_ns();
        CHECK_ERR(ss_link_send(c, &(ss_link_msg){.type = SS_LINK_PREDICT}, ts, 1), "stalled");
        double ms = tl_ms_since(t0);
        CHECK_MSG(ms < 3000, "send gave up after %.0f ms", ms);
        CHECK_ERR(ss_link_send(c, &(ss_link_msg){.type = SS_LINK_HEARTBEAT}, NULL, 0), "broken");
        ss_link_close(c);
    }
    atomic_store(&s.done, true);
    pthread_join(th, NULL);
    ss_link_listener_close(s.l);
    ss_tensor_free(&t);
}

/* ss_link_shutdown from another thread wakes a reader blocked without a timeout. */
static void *shutdown_later(void *p)
{
    usleep(200 * 1000);
    ss_link_shutdown(p);
    return NULL;
}

static void shutdown_wakes_a_blocked_reader(void)
{
    tl_server *s = tl_server_start("127.0.0.1:0", NULL);
    ss_link_conn *c = s ? dial(ss_link_listener_address(s->listener)) : NULL;
    if (c) {
        pthread_t th;
        pthread_create(&th, NULL, shutdown_later, c);
        uint64_t t0 = ss_now_ns();
        ss_link_msg m;
        ss_status *st = ss_link_recv(c, -1, &m);
        double ms = tl_ms_since(t0);
        CHECK(st && st->code == SS_ERR_UNAVAILABLE);
        CHECK_MSG(ms >= 150 && ms < 3000, "woke after %.0f ms", ms);
        ss_status_free(st);
        pthread_join(th, NULL);
        CHECK_ERR(ss_link_send(c, &(ss_link_msg){.type = SS_LINK_HEARTBEAT}, NULL, 0), "broken");
        ss_link_close(c);
    }
    tl_server_stop(s);
}

/* Agents start before the worker: connect_retry keeps trying until the listener appears. */
typedef struct {
    char address[128];
    tl_server *server;
} late_start;

static void *start_late(void *p)
{
    late_start *ls = p;
    usleep(400 * 1000);
    ls->server = tl_server_start(ls->address, NULL);
    return NULL;
}

static void connect_retry_waits_for_a_late_server(void)
{
    char dir[64];
    tl_tmpdir(dir, sizeof dir);
    late_start ls = {0};
    snprintf(ls.address, sizeof ls.address, "unix:%s/late.sock", dir);
    pthread_t th;
    pthread_create(&th, NULL, start_late, &ls);
    ss_link_conn *c = NULL;
    uint64_t t0 = ss_now_ns();
    CHECK_OK(ss_link_connect_retry(ls.address, NULL, 5000, 50, &c));
    double ms = tl_ms_since(t0);
    CHECK_MSG(ms >= 300 && ms < 4000, "connected after %.0f ms", ms);
    pthread_join(th, NULL);
    if (c) {
        exchange(c, &(ss_link_msg){.type = SS_LINK_GET_META}, NULL, 0,
                 &(ss_link_msg){.type = SS_LINK_META, .json = "{\"rank_size\": 8}"});
        ss_link_close(c);
    }
    tl_server_stop(ls.server);
    rmdir(dir);
}

/* ---------------------------------------------------------------- addresses */

/* Makes a socket file at path, changed age_s seconds ago. Unless listening, no socket stays bound
 * to it (what a killed listener leaves); if listening, the listening socket's fd is returned and
 * keeps it bound. */
static int socket_file(const char *path, int age_s, bool listening)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof un.sun_path, "%s", path);
    unlink(path);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&un, sizeof un) == 0);
    if (listening) CHECK(listen(fd, 1) == 0);
    struct timespec t[2] = {{.tv_sec = time(NULL) - age_s}, {.tv_sec = time(NULL) - age_s}};
    CHECK(utimensat(AT_FDCWD, path, t, 0) == 0);
    if (listening) return fd;
    close(fd);
    return -1;
}

/* The twin file of a TCP listener on port (any text) in this network namespace. */
static void twin_path(char *buf, size_t cap, const char *port)
{
    struct stat ns;
    CHECK(stat("/proc/self/ns/net", &ns) == 0);
    snprintf(buf, cap, "/tmp/shardserve-%u/link-net-%llu-port-%s.sock", (unsigned)geteuid(),
             (unsigned long long)ns.st_ino, port);
}

static void unix_socket_files(void)
{
    char dir[64], addr[128];
    tl_tmpdir(dir, sizeof dir);
    snprintf(addr, sizeof addr, "unix:%s/w.sock", dir);
    socket_file(addr + 5, 0, false); /* a stale file left by a dead process */
    ss_link_listener *l = NULL, *l2 = NULL;
    CHECK_OK(ss_link_listen(addr, NULL, &l));
    /* a live one is not stolen */
    CHECK_ERR(ss_link_listen(addr, NULL, &l2), "cannot listen");
    ss_link_listener_close(l);
    struct stat sb;
    CHECK(stat(addr + 5, &sb) != 0);
    /* a regular file is never removed */
    FILE *f = fopen(addr + 5, "w");
    if (f) fclose(f);
    CHECK_ERR(ss_link_listen(addr, NULL, &l2), "cannot listen");
    CHECK(stat(addr + 5, &sb) == 0);
    unlink(addr + 5);
    rmdir(dir);

    ss_link_conn *c;
    CHECK_ERR(ss_link_connect("nonsense", NULL, &c), "not HOST:PORT");
    CHECK_ERR(ss_link_connect("127.0.0.1:99999", NULL, &c), "bad port");
    CHECK_ERR(ss_link_connect("unix:", NULL, &c), "has no path");
    char longp[200];
    memset(longp, 'a', sizeof longp);
    memcpy(longp, "unix:/", 6);
    longp[199] = 0;
    CHECK_ERR(ss_link_listen(longp, NULL, &l), "longer than");
    CHECK_ERR(ss_link_connect("unix:/nonexistent/dir/x.sock", NULL, &c), "No such file");
}

/* The domain of a connection's socket. */
static int conn_domain(ss_link_conn *c)
{
    int domain = -1;
    socklen_t len = sizeof domain;
    getsockopt(ss_link_conn_fd(c), SOL_SOCKET, SO_DOMAIN, &domain, &len);
    return domain;
}

/* One HEARTBEAT round trip over a connection to the test server. */
static void heartbeat_round_trip(ss_link_conn *c)
{
    ss_link_msg hb = {.type = SS_LINK_HEARTBEAT, .seq = 7, .sent_ns = 11};
    exchange(c, &hb, NULL, 0,
             &(ss_link_msg){.type = SS_LINK_HEARTBEAT_ACK, .seq = 7, .sent_ns = 11});
}

/* A TCP listener also answers on a Unix socket, and a connect to a local TCP address takes it;
 * SHARDSERVE_LINK_LOCAL=0 keeps both on TCP; a twin file nobody answers on falls back to TCP. */
static void local_agents_use_the_unix_twin(void)
{
    tl_server *s = tl_server_start("127.0.0.1:0", NULL);
    CHECK(s != NULL);
    if (!s) return;
    CHECK(ss_link_listener_local_fd(s->listener) >= 0);
    const char *address = ss_link_listener_address(s->listener);
    ss_link_conn *c = dial(address);
    if (c) {
        CHECK_MSG(conn_domain(c) == AF_UNIX, "a local connect went over domain %d", conn_domain(c));
        heartbeat_round_trip(c);
        ss_link_close(c);
    }
    setenv("SHARDSERVE_LINK_LOCAL", "0", 1);
    c = dial(address);
    unsetenv("SHARDSERVE_LINK_LOCAL");
    if (c) {
        CHECK(conn_domain(c) == AF_INET);
        heartbeat_round_trip(c);
        ss_link_close(c);
    }
    tl_server_stop(s);

    /* a listener started with the twin off leaves none; its clients still get through */
    setenv("SHARDSERVE_LINK_LOCAL", "0", 1);
    s = tl_server_start("127.0.0.1:0", NULL);
    unsetenv("SHARDSERVE_LINK_LOCAL");
    CHECK(s != NULL);
    if (!s) return;
    CHECK(ss_link_listener_local_fd(s->listener) < 0);
    c = dial(ss_link_listener_address(s->listener));
    if (c) {
        CHECK(conn_domain(c) == AF_INET);
        heartbeat_round_trip(c);
        ss_link_close(c);
    }
    /* a twin file left by a dead server on that port: nobody answers, the client uses TCP */
    char path[200];
    twin_path(path, sizeof path, strrchr(ss_link_listener_address(s->listener), ':') + 1);
    /* (socket_file first removes a twin file that a killed server left for this port number:
     * it would fail the bind with EADDRINUSE) */
    socket_file(path, 0, false);
    c = dial(ss_link_listener_address(s->listener));
    if (c) {
        CHECK(conn_domain(c) == AF_INET);
        heartbeat_round_trip(c);
        ss_link_close(c);
    }
    unlink(path);
    tl_server_stop(s);
}

/* A new twin removes the twins of this network namespace that no socket is bound to (killed
 * listeners'), once older than 10 s; a live one, a fresh one, a regular file and another
 * namespace's are left alone. */
static void stale_twins_are_swept(void)
{
    struct stat sb;
    char dir[64], stale[200], fresh[200], live[200], regular[200], other_ns[200];
    snprintf(dir, sizeof dir, "/tmp/shardserve-%u", (unsigned)geteuid());
    mkdir(dir, 0700);
    const char *kinds[] = {"stale", "fresh", "live", "regular"};
    char *paths[] = {stale, fresh, live, regular};
    for (int i = 0; i < 4; i++) {
        char port[64];
        snprintf(port, sizeof port, "test%d-%s", (int)getpid(), kinds[i]);
        twin_path(paths[i], 200, port);
    }
    snprintf(other_ns, sizeof other_ns, "%s/link-net-1-port-test%d.sock", dir, (int)getpid());
    socket_file(stale, 60, false);
    socket_file(fresh, 0, false);
    int live_fd = socket_file(live, 60, true);
    socket_file(other_ns, 60, false);
    FILE *f = fopen(regular, "w");
    if (f) fclose(f);
    struct timespec old[2] = {{.tv_sec = time(NULL) - 60}, {.tv_sec = time(NULL) - 60}};
    CHECK(utimensat(AT_FDCWD, regular, old, 0) == 0);

    tl_server *s = tl_server_start("127.0.0.1:0", NULL);
    CHECK(s != NULL);
    CHECK_MSG(stat(stale, &sb) != 0, "%s: a stale twin is still there", stale);
    CHECK_MSG(stat(fresh, &sb) == 0, "%s: a twin of the last 10 s was removed", fresh);
    CHECK_MSG(stat(live, &sb) == 0, "%s: a live twin was removed", live);
    CHECK_MSG(stat(regular, &sb) == 0, "%s: a regular file was removed", regular);
    CHECK_MSG(stat(other_ns, &sb) == 0, "%s: another namespace's twin was removed", other_ns);
    if (s) tl_server_stop(s);
    if (live_fd >= 0) close(live_fd);
    for (int i = 0; i < 4; i++)
        unlink(paths[i]);
    unlink(other_ns);
}

TEST_MAIN(TEST(every_type_round_trips_over_tcp), TEST(every_type_round_trips_over_unix),
          TEST(payload_goes_into_caller_storage), TEST(concurrent_senders_do_not_interleave),
          TEST(malformed_frames_drop_only_that_connection),
          TEST(oversize_send_is_refused_and_connection_survives), TEST(waits_are_bounded),
          TEST(send_to_a_peer_that_does_not_read_is_bounded), TEST(shutdown_wakes_a_blocked_reader),
          TEST(connect_retry_waits_for_a_late_server), TEST(unix_socket_files),
          TEST(local_agents_use_the_unix_twin), TEST(stale_twins_are_swept))
