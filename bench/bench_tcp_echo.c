/*
 * bench_tcp_echo: the raw loopback TCP baseline for large tensor round trips. One echo thread
 * sends back every byte it reads; the client writes SIZE bytes (from a writer thread) while
 * reading the SIZE echoed bytes, so a round trip moves SIZE each way, as a predict of an
 * identity model does. Prints one JSON line per size with the median round trip.
 *
 *   bench_tcp_echo SIZE_MIB[,SIZE_MIB...] [ROUNDS (default 5)]
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *echo_main(void *arg)
{
    int fd = *(int *)arg;
    static char buf[1 << 20];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0) return NULL;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w <= 0) return NULL;
            off += w;
        }
    }
}

typedef struct {
    int fd;
    const char *data;
    size_t len;
} wjob;

static void *writer_main(void *arg)
{
    wjob *j = arg;
    for (size_t off = 0; off < j->len;) {
        ssize_t w = write(j->fd, j->data + off, j->len - off);
        if (w <= 0) return NULL;
        off += (size_t)w;
    }
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_tcp_echo SIZE_MIB[,SIZE_MIB...] [ROUNDS]\n");
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    if (rounds < 1 || rounds > 1000) rounds = 5;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 1) ||
        getsockname(ls, (struct sockaddr *)&sa, &sl)) {
        perror("bench_tcp_echo: listen");
        return 1;
    }
    int cfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (connect(cfd, (struct sockaddr *)&sa, sizeof sa)) {
        perror("bench_tcp_echo: connect");
        return 1;
    }
    int sfd = accept(ls, NULL, NULL);
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_t et;
    pthread_create(&et, NULL, echo_main, &sfd);
    char *sizes = strdup(argv[1]);
    for (char *tok = strtok(sizes, ","); tok; tok = strtok(NULL, ",")) {
        size_t len = (size_t)(atof(tok) * 1048576.0);
        char *out = malloc(len), *in = malloc(len);
        if (!out || !in) return 1;
        memset(out, 7, len);
        memset(in, 0, len);
        double *t = calloc((size_t)rounds + 1, sizeof *t);
        for (int r = 0; r <= rounds; r++) { /* round 0 warms up */
            double t0 = now_s();
            wjob j = {cfd, out, len};
            pthread_t wt;
            pthread_create(&wt, NULL, writer_main, &j);
            for (size_t got = 0; got < len;) {
                ssize_t n = read(cfd, in + got, len - got);
                if (n <= 0) return 1;
                got += (size_t)n;
            }
            pthread_join(wt, NULL);
            t[r] = now_s() - t0;
        }
        qsort(t + 1, (size_t)rounds, sizeof *t, cmp_d);
        double med = t[1 + rounds / 2];
        printf("{\"bytes\":%zu,\"rounds\":%d,\"median_s\":%.6f,\"mib_per_s\":%.1f}\n", len, rounds,
               med, (double)len / 1048576.0 / med);
        fflush(stdout);
        free(t);
        free(out);
        free(in);
    }
    free(sizes);
    shutdown(cfd, SHUT_RDWR);
    close(cfd);
    pthread_join(et, NULL);
    close(sfd);
    close(ls);
    return 0;
}
