/*
 * rest_gone: the hang-up watcher of rest_gone.h. Tickets are (generation << 32 | slot + 1), so an
 * event that epoll delivered for a slot forgotten and reused meanwhile is recognised as stale and
 * dropped; every lookup happens under the lock that forget takes.
 */
#include "rest_gone.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct {
    uint64_t ticket; /* 0: free */
    int fd;
    void (*fn)(void *arg); /* NULL once fired */
    void *arg;
} watch_slot;

struct ss_rest_gone {
    int epfd, wake;
    pthread_t thread;
    pthread_mutex_t mu;
    watch_slot *slots;
    size_t n, cap;
    uint32_t generation;
};

static void gone_fire(ss_rest_gone *g, uint64_t ticket)
{
    size_t slot = (size_t)(uint32_t)ticket - 1;
    pthread_mutex_lock(&g->mu);
    if (slot < g->n && g->slots[slot].ticket == ticket && g->slots[slot].fn) {
        g->slots[slot].fn(g->slots[slot].arg);
        g->slots[slot].fn = NULL;
    }
    pthread_mutex_unlock(&g->mu);
}

static void *gone_main(void *arg)
{
    ss_rest_gone *g = arg;
    struct epoll_event ev[32];
    for (;;) {
        int n = epoll_wait(g->epfd, ev, 32, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return NULL;
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u64 == 0) return NULL; /* the wake-up: stop */
            gone_fire(g, ev[i].data.u64);
        }
    }
}

ss_status *ss_rest_gone_new(ss_rest_gone **out)
{
    ss_rest_gone *g = calloc(1, sizeof *g);
    if (!g) return ss_errf(SS_ERR_NOMEM, "the REST hang-up watcher");
    g->epfd = epoll_create1(EPOLL_CLOEXEC);
    g->wake = eventfd(0, EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
    if (g->epfd < 0 || g->wake < 0 || epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->wake, &ev) != 0) {
        ss_status *st = ss_errf(SS_ERR_IO, "REST hang-up watcher: %s", strerror(errno));
        if (g->epfd >= 0) close(g->epfd);
        if (g->wake >= 0) close(g->wake);
        free(g);
        return st;
    }
    pthread_mutex_init(&g->mu, NULL);
    if (pthread_create(&g->thread, NULL, gone_main, g) != 0) {
        close(g->epfd);
        close(g->wake);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return ss_errf(SS_ERR_IO, "REST hang-up watcher: cannot start its thread");
    }
    *out = g;
    return NULL;
}

void ss_rest_gone_free(ss_rest_gone *g)
{
    if (!g) return;
    uint64_t one = 1;
    if (write(g->wake, &one, sizeof one) != (ssize_t)sizeof one) abort(); /* cannot stop it */
    pthread_join(g->thread, NULL);
    close(g->epfd);
    close(g->wake);
    pthread_mutex_destroy(&g->mu);
    free(g->slots);
    free(g);
}

/* A free slot's index (the table grows), or -1 when out of memory. Under g->mu. */
static long gone_slot(ss_rest_gone *g)
{
    for (size_t i = 0; i < g->n; i++)
        if (!g->slots[i].ticket) return (long)i;
    if (g->n == g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 64;
        watch_slot *grown = realloc(g->slots, cap * sizeof *grown);
        if (!grown) return -1;
        g->slots = grown;
        g->cap = cap;
    }
    g->slots[g->n] = (watch_slot){0};
    return (long)g->n++;
}

uint64_t ss_rest_gone_watch(ss_rest_gone *g, int fd, void (*fn)(void *arg), void *arg)
{
    if (!g || fd < 0) return 0;
    pthread_mutex_lock(&g->mu);
    long slot = gone_slot(g);
    uint64_t ticket = 0;
    if (slot >= 0) {
        ticket = (uint64_t)++g->generation << 32 | (uint64_t)(slot + 1);
        struct epoll_event ev = {.events = EPOLLRDHUP | EPOLLONESHOT, .data.u64 = ticket};
        if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
            g->slots[slot] = (watch_slot){ticket, fd, fn, arg};
        else
            ticket = 0;
    }
    pthread_mutex_unlock(&g->mu);
    return ticket;
}

void ss_rest_gone_forget(ss_rest_gone *g, uint64_t ticket)
{
    if (!g || !ticket) return;
    size_t slot = (size_t)(uint32_t)ticket - 1;
    pthread_mutex_lock(&g->mu);
    if (slot < g->n && g->slots[slot].ticket == ticket) {
        epoll_ctl(g->epfd, EPOLL_CTL_DEL, g->slots[slot].fd, NULL);
        g->slots[slot] = (watch_slot){0};
    }
    pthread_mutex_unlock(&g->mu);
}
