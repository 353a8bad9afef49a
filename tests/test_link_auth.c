/*
 * Link authentication with a shared secret: matching secrets connect and serve; a wrong, missing
 * or extra secret is refused on both sides with a clear reason; a peer that skips the handshake
 * or replays another connection's proof gets nothing through; the server keeps serving good
 * clients throughout.
 */
#include "test_link_util.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static ss_link_options with_secret(const char *secret)
{
    ss_link_options o;
    ss_link_options_default(&o);
    o.secret = secret;
    o.secret_len = secret ? strlen(secret) : 0;
    o.handshake_timeout_ms = 2000;
    return o;
}

static void round_trip_ok(ss_link_conn *c)
{
    CHECK_OK(ss_link_send(c, &(ss_link_msg){.type = SS_LINK_HEARTBEAT, .seq = 5}, NULL, 0));
    ss_link_msg m;
    CHECK_OK(ss_link_recv(c, 5000, &m));
    CHECK(m.type == SS_LINK_HEARTBEAT_ACK && m.seq == 5);
    ss_link_msg_free(&m);
}

static void matching_secret_connects(void)
{
    ss_link_options so = with_secret("correct horse battery staple");
    tl_server *s = tl_server_start("127.0.0.1:0", &so);
    if (!s) return;
    ss_link_options co = with_secret("correct horse battery staple");
    ss_link_conn *c = NULL;
    CHECK_OK(ss_link_connect(ss_link_listener_address(s->listener), &co, &c));
    if (c) {
        round_trip_ok(c);
        ss_link_close(c);
    }
    char out[512];
    CHECK(tl_outcome(s, 0, out, sizeof out) && strcmp(out, "ok") == 0);
    tl_server_stop(s);
}

static void refused_combinations(void)
{
    ss_link_options so = with_secret("s3cret");
    tl_server *s = tl_server_start("127.0.0.1:0", &so);
    if (!s) return;
    const char *addr = ss_link_listener_address(s->listener);
    ss_link_conn *c = NULL;
    char out[512];

    ss_link_options wrong = with_secret("s3cret!");
    CHECK_ERR(ss_link_connect(addr, &wrong, &c), "rejected us: wrong shared secret");
    CHECK(tl_outcome(s, 0, out, sizeof out));
    CHECK_MSG(strstr(out, "failed authentication: wrong shared secret"), "server: %s", out);

    ss_link_options none = with_secret(NULL);
    CHECK_ERR(ss_link_connect(addr, &none, &c), "requires a shared secret and none is configured");
    CHECK(tl_outcome(s, 1, out, sizeof out)); /* the client hung up during the handshake */

    ss_link_options empty = with_secret("");
    empty.secret = "";
    CHECK_ERR(ss_link_connect(addr, &empty, &c), "shared secret is empty");

    /* and the right secret still works */
    ss_link_options right = with_secret("s3cret");
    CHECK_OK(ss_link_connect(addr, &right, &c));
    if (c) {
        round_trip_ok(c);
        ss_link_close(c);
    }
    tl_server_stop(s);

    /* a client with a secret refuses a server that cannot prove it */
    tl_server *open_server = tl_server_start("127.0.0.1:0", NULL);
    if (open_server) {
        CHECK_ERR(ss_link_connect(ss_link_listener_address(open_server->listener), &right, &c),
                  "did not prove the shared secret");
        tl_server_stop(open_server);
    }
}

/* ---------------------------------------------------------------- raw peers */

static int raw_connect(const char *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    sin.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static bool read_n(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0) return false;
        got += (size_t)r;
    }
    return true;
}

/* Read one whole frame into buf; returns its length (0 on failure). */
static size_t read_frame(int fd, uint8_t *buf, size_t cap)
{
    if (!read_n(fd, buf, SS_LINK_PREFIX_BYTES)) return 0;
    uint32_t hl;
    memcpy(&hl, buf + 8, 4);
    if (SS_LINK_PREFIX_BYTES + (size_t)hl > cap || !read_n(fd, buf + SS_LINK_PREFIX_BYTES, hl))
        return 0;
    return SS_LINK_PREFIX_BYTES + hl;
}

static size_t auth_frame(uint8_t *out, const uint8_t *nonce, const uint8_t *proof)
{
    uint8_t hdr[2 + 32 + 2 + 32];
    hdr[0] = 0x0a; /* field 1, bytes */
    hdr[1] = 32;
    memcpy(hdr + 2, nonce, 32);
    hdr[34] = 0x12; /* field 2, bytes */
    hdr[35] = 32;
    memcpy(hdr + 36, proof, 32);
    memset(out, 0, SS_LINK_PREFIX_BYTES);
    uint32_t magic = SS_LINK_MAGIC, hl = sizeof hdr;
    memcpy(out, &magic, 4);
    out[4] = SS_LINK_VERSION;
    out[6] = SS_LINK_AUTH;
    memcpy(out + 8, &hl, 4);
    memcpy(out + SS_LINK_PREFIX_BYTES, hdr, sizeof hdr);
    return SS_LINK_PREFIX_BYTES + sizeof hdr;
}

static void peers_without_the_secret_get_nothing_through(void)
{
    ss_link_options so = with_secret("s3cret");
    tl_server *s = tl_server_start("127.0.0.1:0", &so);
    if (!s) return;
    const char *addr = ss_link_listener_address(s->listener);
    uint8_t buf[4096];
    char out[512];

    /* 1. skip the handshake: send REGISTER straight after HELLO */
    int fd = raw_connect(addr);
    size_t n = read_frame(fd, buf, sizeof buf);
    CHECK(n > 0);
    ss_link_msg hello;
    CHECK_OK(ss_link_decode_frame(buf, n, NULL, &hello, NULL));
    CHECK(hello.type == SS_LINK_HELLO);
    ss_link_msg_free(&hello);
    void *reg;
    size_t rl;
    CHECK_OK(ss_link_encode_frame(&(ss_link_msg){.type = SS_LINK_REGISTER, .rank = 0}, NULL, 0,
                                  &reg, &rl));
    CHECK(write(fd, reg, rl) == (ssize_t)rl);
    free(reg);
    CHECK(tl_outcome(s, 0, out, sizeof out));
    CHECK_MSG(strstr(out, "expected AUTH, got REGISTER"), "server: %s", out);
    CHECK(read(fd, buf, sizeof buf) <= 0); /* hung up, no REGISTER_ACK */
    close(fd);

    /* 2. a made-up proof */
    fd = raw_connect(addr);
    CHECK(read_frame(fd, buf, sizeof buf) > 0);
    uint8_t nonce[32], proof[32];
    memset(nonce, 1, 32);
    memset(proof, 2, 32);
    n = auth_frame(buf, nonce, proof);
    CHECK(write(fd, buf, n) == (ssize_t)n);
    n = read_frame(fd, buf, sizeof buf);
    ss_link_msg ack;
    CHECK_OK(ss_link_decode_frame(buf, n, NULL, &ack, NULL));
    CHECK(ack.type == SS_LINK_AUTH_ACK && !ack.accepted);
    ss_link_msg_free(&ack);
    CHECK(tl_outcome(s, 1, out, sizeof out));
    CHECK_MSG(strstr(out, "wrong shared secret"), "server: %s", out);
    close(fd);

    /* 3. oversized frames before authentication are refused without reading them */
    fd = raw_connect(addr);
    CHECK(read_frame(fd, buf, sizeof buf) > 0);
    n = auth_frame(buf, nonce, proof);
    uint32_t big = 1u << 20;
    memcpy(buf + 8, &big, 4);
    CHECK(write(fd, buf, n) == (ssize_t)n);
    CHECK(tl_outcome(s, 2, out, sizeof out));
    CHECK_MSG(strstr(out, "the limit is 1024"), "server: %s", out);
    close(fd);

    /* the real client is still served */
    ss_link_conn *c = NULL;
    ss_link_options co = with_secret("s3cret");
    CHECK_OK(ss_link_connect(addr, &co, &c));
    if (c) {
        round_trip_ok(c);
        ss_link_close(c);
    }
    tl_server_stop(s);
}

/* A fake server records the AUTH a real client sends it; replaying that AUTH to the real server
 * (which picks a fresh nonce) must fail. */
typedef struct {
    int listen_fd;
    uint8_t captured[4096];
    size_t captured_len;
} fake_server;

static void *fake_server_main(void *p)
{
    fake_server *f = p;
    int fd = accept(f->listen_fd, NULL, NULL);
    if (fd < 0) return NULL;
    uint8_t hello[SS_LINK_PREFIX_BYTES + 36] = {0};
    uint32_t magic = SS_LINK_MAGIC, hl = 36;
    memcpy(hello, &magic, 4);
    hello[4] = SS_LINK_VERSION;
    hello[6] = SS_LINK_HELLO;
    memcpy(hello + 8, &hl, 4);
    uint8_t *h = hello + SS_LINK_PREFIX_BYTES;
    h[0] = 0x0a;
    h[1] = 32;
    memset(h + 2, 7, 32);
    h[34] = 0x10; /* auth_required = true */
    h[35] = 1;
    if (write(fd, hello, sizeof hello) == (ssize_t)sizeof hello)
        f->captured_len = read_frame(fd, f->captured, sizeof f->captured);
    close(fd);
    return NULL;
}

static void replayed_proof_is_refused(void)
{
    fake_server f = {0};
    f.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    CHECK(bind(f.listen_fd, (struct sockaddr *)&sin, sizeof sin) == 0);
    CHECK(listen(f.listen_fd, 4) == 0);
    socklen_t sl = sizeof sin;
    getsockname(f.listen_fd, (struct sockaddr *)&sin, &sl);
    char fake_addr[64];
    snprintf(fake_addr, sizeof fake_addr, "127.0.0.1:%d", ntohs(sin.sin_port));
    pthread_t th;
    pthread_create(&th, NULL, fake_server_main, &f);
    ss_link_options co = with_secret("s3cret");
    ss_link_conn *c = NULL;
    CHECK_ERR(ss_link_connect(fake_addr, &co, &c), "closed the connection");
    pthread_join(th, NULL);
    close(f.listen_fd);
    CHECK(f.captured_len > 0);

    ss_link_options so = with_secret("s3cret");
    tl_server *s = tl_server_start("127.0.0.1:0", &so);
    if (!s) return;
    int fd = raw_connect(ss_link_listener_address(s->listener));
    uint8_t buf[4096];
    CHECK(read_frame(fd, buf, sizeof buf) > 0);
    CHECK(write(fd, f.captured, f.captured_len) == (ssize_t)f.captured_len);
    char out[512];
    CHECK(tl_outcome(s, 0, out, sizeof out));
    CHECK_MSG(strstr(out, "wrong shared secret"), "server: %s", out);
    close(fd);
    tl_server_stop(s);
}

/* A Unix-socket link takes connections from its own user only (SO_PEERCRED), whatever the
 * socket file's mode: a child that became another user is refused at accept. */
static void unix_link_refuses_other_users(void)
{
    /* only root can become another user to try; this suite runs as root (CI does) */
    CHECK_MSG(geteuid() == 0, "needs root to connect as another user");
    if (geteuid() != 0) return;
    char path[64];
    snprintf(path, sizeof path, "unix:/tmp/ss-auth-%d.sock", (int)getpid());
    ss_link_listener *l = NULL;
    CHECK_OK(ss_link_listen(path, NULL, &l));
    if (!l) return;
    chmod(path + 5, 0777); /* the file lets anyone in: the uid check must still refuse */
    pid_t child = fork();
    if (child == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
        ss_link_conn *c = NULL;
        ss_status *st = ss_link_connect(path, NULL, &c);
        _exit(st ? 0 : 1); /* refused: the handshake never completes */
    }
    ss_link_conn *c = NULL;
    CHECK_ERR(ss_link_accept(l, 5000, &c), "refused a connection from uid 65534");
    int status = 0;
    waitpid(child, &status, 0);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child exit status %d", status);
    ss_link_listener_close(l); /* our own user getting in over unix: test_link_socket */
}

TEST_MAIN(TEST(matching_secret_connects), TEST(refused_combinations),
          TEST(peers_without_the_secret_get_nothing_through), TEST(replayed_proof_is_refused),
          TEST(unix_link_refuses_other_users))
