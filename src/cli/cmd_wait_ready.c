/*
 * shardserve wait-ready --rest HOST:PORT [--timeout-s S]
 * For scripts: poll GET /health/ready until the server says ready (exit 0) or the time is up
 * (exit 1, saying what it last saw). Connection refused while the server starts is just "not
 * yet".
 */
#include "cli.h"

#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* One GET to addr; returns the HTTP status (0 if the server could not be reached). */
static int get_status(const struct addrinfo *addr, const char *host, const char *path)
{
    int fd = socket(addr->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int status = 0;
    if (connect(fd, addr->ai_addr, addr->ai_addrlen) == 0) {
        char req[512], buf[256] = "";
        int n = snprintf(req, sizeof req,
                         "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host);
        if (write(fd, req, (size_t)n) == n) {
            ssize_t r = read(fd, buf, sizeof buf - 1);
            if (r > 12 && !strncmp(buf, "HTTP/1.", 7)) sscanf(buf + 9, "%d", &status);
        }
    }
    close(fd);
    return status;
}

int cmd_wait_ready(int argc, char **argv)
{
    const char *rest = NULL;
    long timeout_s = 60;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: shardserve wait-ready --rest HOST:PORT [--timeout-s S]\n");
            return 0;
        } else if (!strcmp(argv[i], "--rest") && i + 1 < argc) {
            rest = argv[++i];
        } else if (!strcmp(argv[i], "--timeout-s") && i + 1 < argc) {
            if (!cli_parse_int(argv[++i], 0, 86400, &timeout_s))
                return cli_fail(
                    "wait-ready",
                    ss_errf(SS_ERR_INVALID, "--timeout-s wants 0..86400, got '%s'", argv[i]));
        } else {
            fprintf(stderr, "shardserve wait-ready: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    const char *colon = rest ? strrchr(rest, ':') : NULL;
    long port;
    if (!colon || !cli_parse_int(colon + 1, 1, 65535, &port))
        return cli_fail("wait-ready", ss_errf(SS_ERR_INVALID, "--rest wants HOST:PORT, got '%s'",
                                              rest ? rest : "(none)"));
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(colon - rest), rest);
    if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* [::1]:PORT */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *addr = NULL;
    int gai = getaddrinfo(host, colon + 1, &hints, &addr);
    if (gai != 0)
        return cli_fail("wait-ready", ss_errf(SS_ERR_INVALID, "--rest %s: host '%s': %s", rest,
                                              host, gai_strerror(gai)));
    uint64_t deadline = ss_now_ns() + (uint64_t)timeout_s * 1000000000ull;
    int status = 0;
    for (;;) {
        status = get_status(addr, host, "/health/ready");
        if (status == 200) {
            freeaddrinfo(addr);
            printf("ready\n");
            return 0;
        }
        if (ss_now_ns() >= deadline) break;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    freeaddrinfo(addr);
    return cli_fail("wait-ready",
                    ss_errf(SS_ERR_TIMEOUT, "%s not ready after %ld s (%s)", rest, timeout_s,
                            status ? "GET /health/ready answered not ready" : "no answer"));
}
