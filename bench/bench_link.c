/*
 * bench_link: round trip of one 48 KiB, 1, 16 and 64 MiB tensor over the link (PREDICT out, RESULT
 * back, through an echo thread) against raw loopback sockets moving the same bytes with plain
 * write/read, measured in the same run, interleaved rep by rep so both see the same machine
 * load. Prints medians and the link/raw ratio, for TCP on 127.0.0.1 and for a Unix socket.
 *
 *   link (caller buf): both sides use the two-step receive into preallocated buffers, the way
 *                      the agent reads straight into its input buffer;
 *   link (fresh alloc): plain ss_link_recv, a new 64-byte aligned buffer per message.
 *
 * Usage: [SS_BENCH_CPU=n] bench_link [reps for 64 MiB, default 9] [tcp|unix]
 */
#define _GNU_SOURCE /* sched_setaffinity */
#include "shardserve/link.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static void die(ss_status *st, const char *what)
{
    if (!st) return;
    fprintf(stderr, "bench_link: %s: %s\n", what, st->msg);
    exit(1);
}

/* ---------------------------------------------------------------- raw baseline */

static bool io_all(int fd, void *buf, size_t n, bool writing)
{
    char *p = buf;
    while (n) {
        ssize_t r = writing ? write(fd, p, n) : read(fd, p, n);
        if (r <= 0) return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

typedef struct {
    int listen_fd;
    size_t max;
} raw_server;

/* Echo: 8-byte length, then that many bytes, sent straight back. */
static void *raw_echo(void *p)
{
    raw_server *s = p;
    int fd = accept(s->listen_fd, NULL, NULL);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char *buf = malloc(s->max);
    memset(buf, 0, s->max);
    uint64_t n;
    while (io_all(fd, &n, sizeof n, false) && n <= s->max && io_all(fd, buf, n, false) &&
           io_all(fd, buf, n, true)) {
    }
    free(buf);
    close(fd);
    return NULL;
}

static int raw_listen(bool use_unix, const char *path, struct sockaddr_storage *sa, socklen_t *len)
{
    int fd;
    if (use_unix) {
        struct sockaddr_un *un = (struct sockaddr_un *)sa;
        memset(un, 0, sizeof *un);
        un->sun_family = AF_UNIX;
        snprintf(un->sun_path, sizeof un->sun_path, "%.100s", path);
        unlink(path);
        *len = sizeof *un;
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)sa;
        memset(in, 0, sizeof *in);
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(0x7f000001);
        *len = sizeof *in;
        fd = socket(AF_INET, SOCK_STREAM, 0);
    }
    if (bind(fd, (struct sockaddr *)sa, *len) != 0 || listen(fd, 4) != 0) {
        perror("bench_link: raw listen");
        exit(1);
    }
    getsockname(fd, (struct sockaddr *)sa, len);
    return fd;
}

/* ---------------------------------------------------------------- link echo */

typedef struct {
    ss_link_listener *l;
    size_t max;
    bool caller_buf;
} link_server;

static void *link_echo(void *p)
{
    link_server *s = p;
    ss_link_conn *c;
    die(ss_link_accept(s->l, 10000, &c), "accept");
    die(ss_link_handshake(c), "handshake");
    void *buf = aligned_alloc(64, s->max);
    memset(buf, 0, s->max);
    for (;;) {
        ss_link_msg m;
        ss_status *st;
        if (s->caller_buf) {
            st = ss_link_recv_header(c, -1, &m);
            if (!st && m.n_tensors == 1 && m.tensors[0].nbytes <= s->max) {
                m.tensors[0].data = buf;
                m.tensors[0].storage = SS_STORE_BORROWED;
            }
            if (!st) st = ss_link_recv_payload(c, &m);
        } else {
            st = ss_link_recv(c, -1, &m);
        }
        if (st) {
            ss_status_free(st); /* the client hung up */
            break;
        }
        const ss_tensor *ts[1] = {&m.tensors[0]};
        ss_link_msg r = {.type = SS_LINK_RESULT, .request_id = m.request_id};
        st = ss_link_send(c, &r, ts, m.n_tensors ? 1 : 0);
        ss_link_msg_free(&m);
        if (st) {
            ss_status_free(st);
            break;
        }
    }
    free(buf);
    ss_link_close(c);
    return NULL;
}

/* ---------------------------------------------------------------- one transport */

typedef struct {
    ss_link_conn *c;
    bool caller_buf;
    void *rbuf;
} link_client;

/* CPU time of the whole process (client and echo threads alike), in ms. */
static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double last_cpu; /* CPU ms of the last round trip */

static double link_round_trip(link_client *lc, const ss_tensor *t)
{
    double c0 = cpu_ms();
    const ss_tensor *ts[1] = {t};
    uint64_t t0 = ss_now_ns();
    die(ss_link_send(lc->c, &(ss_link_msg){.type = SS_LINK_PREDICT, .request_id = 1}, ts, 1),
        "send");
    ss_link_msg m;
    if (lc->caller_buf) {
        die(ss_link_recv_header(lc->c, 60000, &m), "recv header");
        m.tensors[0].data = lc->rbuf;
        m.tensors[0].storage = SS_STORE_BORROWED;
        die(ss_link_recv_payload(lc->c, &m), "recv payload");
    } else {
        die(ss_link_recv(lc->c, 60000, &m), "recv");
    }
    double ms = (double)(ss_now_ns() - t0) / 1e6;
    last_cpu = cpu_ms() - c0;
    if (m.n_tensors != 1 || m.tensors[0].nbytes != t->nbytes) {
        fprintf(stderr, "bench_link: bad echo\n");
        exit(1);
    }
    ss_link_msg_free(&m);
    return ms;
}

static double raw_round_trip(int fd, void *sbuf, void *rbuf, uint64_t n)
{
    double c0 = cpu_ms();
    uint64_t t0 = ss_now_ns();
    if (!io_all(fd, &n, sizeof n, true) || !io_all(fd, sbuf, n, true) ||
        !io_all(fd, rbuf, n, false)) {
        fprintf(stderr, "bench_link: raw echo failed\n");
        exit(1);
    }
    double ms = (double)(ss_now_ns() - t0) / 1e6;
    last_cpu = cpu_ms() - c0;
    return ms;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static char cpu_rows[16][160];
static int n_cpu;

static void run_transport(const char *label, bool use_unix, const char *dir, int reps64)
{
    const size_t mib = 1u << 20, max = 64 * mib;
    char path_raw[256], addr1[256], addr2[256];
    snprintf(path_raw, sizeof path_raw, "%s/raw.sock", dir);
    snprintf(addr1, sizeof addr1, use_unix ? "unix:%s/l1.sock" : "127.0.0.1:0", dir);
    snprintf(addr2, sizeof addr2, use_unix ? "unix:%s/l2.sock" : "127.0.0.1:0", dir);

    struct sockaddr_storage sa;
    socklen_t salen;
    raw_server rs = {raw_listen(use_unix, path_raw, &sa, &salen), max};
    pthread_t rt;
    pthread_create(&rt, NULL, raw_echo, &rs);
    int rfd = socket(sa.ss_family, SOCK_STREAM, 0);
    if (connect(rfd, (struct sockaddr *)&sa, salen) != 0) {
        perror("bench_link: raw connect");
        exit(1);
    }
    int one = 1;
    setsockopt(rfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    link_server ls[2] = {{NULL, max, true}, {NULL, max, false}};
    pthread_t lt[2];
    link_client lc[2];
    const char *addrs[2] = {addr1, addr2};
    for (int k = 0; k < 2; k++) {
        die(ss_link_listen(addrs[k], NULL, &ls[k].l), "listen");
        pthread_create(&lt[k], NULL, link_echo, &ls[k]);
        lc[k].caller_buf = ls[k].caller_buf;
        lc[k].rbuf = aligned_alloc(64, max);
        memset(lc[k].rbuf, 0, max);
        die(ss_link_connect(ss_link_listener_address(ls[k].l), NULL, &lc[k].c), "connect");
    }

    void *sbuf = aligned_alloc(64, max), *rbuf = aligned_alloc(64, max);
    memset(sbuf, 0x3c, max);
    memset(rbuf, 0, max);
    /* 48 KiB = the seed example's 128x96 float32 input: per-message overhead, not bandwidth */
    const size_t sizes[4] = {48 << 10, mib, 16 * mib, 64 * mib};
    const int rep_scale[4] = {100, 10, 3, 1};
    for (int si = 0; si < 4; si++) {
        size_t n = sizes[si];
        int reps = rep_scale[si] * reps64;
        int64_t dims[1] = {(int64_t)(n / 4)};
        ss_tensor t;
        die(ss_tensor_borrow(&t, SS_DT_FLOAT32, 1, dims, sbuf, n), "tensor");
        double *raw = malloc(sizeof(double) * (size_t)reps),
               *l0 = malloc(sizeof(double) * (size_t)reps),
               *l1 = malloc(sizeof(double) * (size_t)reps),
               *craw = malloc(sizeof(double) * (size_t)reps),
               *c0 = malloc(sizeof(double) * (size_t)reps),
               *c1 = malloc(sizeof(double) * (size_t)reps);
        for (int w = 0; w < 2; w++) { /* warm-up: page in buffers, grow socket buffers */
            raw_round_trip(rfd, sbuf, rbuf, n);
            link_round_trip(&lc[0], &t);
            link_round_trip(&lc[1], &t);
        }
        for (int r = 0; r < reps; r++) { /* rotate the order so no variant always goes first */
            for (int k = 0; k < 3; k++) {
                int which = (r + k) % 3;
                if (which == 0) {
                    raw[r] = raw_round_trip(rfd, sbuf, rbuf, n);
                    craw[r] = last_cpu;
                } else if (which == 1) {
                    l0[r] = link_round_trip(&lc[0], &t);
                    c0[r] = last_cpu;
                } else {
                    l1[r] = link_round_trip(&lc[1], &t);
                    c1[r] = last_cpu;
                }
            }
        }
        double mr = median(raw, reps), m0 = median(l0, reps), m1 = median(l1, reps);
        double gib = 2.0 * (double)n / (1u << 30);
        char size[32];
        if (n < mib)
            snprintf(size, sizeof size, "%zu KiB", n >> 10);
        else
            snprintf(size, sizeof size, "%zu MiB", n >> 20);
        printf("| %-4s | %7s | %4d | %8.3f | %9.2f | %7.3f | %10.2f | %5.2f | %13.3f | %5.2f |\n",
               label, size, reps, mr, gib / (mr / 1e3), m0, gib / (m0 / 1e3), mr / m0, m1, mr / m1);
        fflush(stdout);
        double cr = median(craw, reps), cl0 = median(c0, reps), cl1 = median(c1, reps);
        snprintf(cpu_rows[n_cpu++], sizeof cpu_rows[0],
                 "| %-4s | %7s | %8.3f | %7.3f | %5.2f | %13.3f | %5.2f |\n", label, size, cr, cl0,
                 cr / cl0, cl1, cr / cl1);
        free(raw);
        free(l0);
        free(l1);
        free(craw);
        free(c0);
        free(c1);
    }
    shutdown(rfd, SHUT_RDWR);
    close(rfd);
    pthread_join(rt, NULL);
    close(rs.listen_fd);
    if (use_unix) unlink(path_raw);
    for (int k = 0; k < 2; k++) {
        ss_link_close(lc[k].c);
        pthread_join(lt[k], NULL);
        ss_link_listener_close(ls[k].l);
        free(lc[k].rbuf);
    }
    free(sbuf);
    free(rbuf);
}

int main(int argc, char **argv)
{
    int reps64 = argc > 1 ? atoi(argv[1]) : 9;
    /* SS_BENCH_CPU=N pins every thread to CPU N: ping-pong then costs context switches only,
     * not cross-CPU wake-ups, whose price on a shared VM varies wildly from run to run. */
    const char *pin = getenv("SS_BENCH_CPU");
    if (pin && *pin) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(atoi(pin), &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0)
            perror("bench_link: sched_setaffinity");
        else
            printf("(all threads pinned to CPU %d)\n", atoi(pin));
    }
    if (reps64 < 1) reps64 = 1;
    char dir[] = "/tmp/ss_bench_link_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    printf("Round trip of one tensor (send + echo back), median ms; GiB/s counts both directions.\n"
           "ratio = raw time / link time (1.00 = as fast as raw sockets; higher is better).\n\n");
    printf("| path | size    | reps | raw ms   | raw GiB/s | link ms | link GiB/s | ratio | "
           "link+alloc ms | ratio |\n");
    printf("|------|---------|------|----------|-----------|---------|------------|-------|"
           "---------------|-------|\n");
    const char *only = argc > 2 ? argv[2] : "";
    if (strcmp(only, "unix") != 0) run_transport("tcp", false, dir, reps64);
    if (strcmp(only, "tcp") != 0) run_transport("unix", true, dir, reps64);
    printf("\nCPU time per round trip, both ends (one process), median ms (less sensitive than "
           "wall time to other load; "
           "a VM may still count stolen time).\n\n"
           "| path | size    | raw cpu  | link    | ratio | link+alloc    | ratio |\n"
           "|------|---------|----------|---------|-------|---------------|-------|\n");
    for (int i = 0; i < n_cpu; i++)
        fputs(cpu_rows[i], stdout);
    rmdir(dir);
    return 0;
}
