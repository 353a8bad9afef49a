/*
 * rest_guard: REST connection limits and the request read deadline (see rest_guard.h).
 * One mutex guards the per-client counts and the list of open connections; MHD's thread holds it
 * only for a hash lookup or a list link, the watchdog for one scan every 250 ms.
 */
#include "rest_guard.h"

#include "shardserve/metrics.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CLIENT_BUCKETS 1024
#define WATCH_PERIOD_MS 250

typedef struct client {
    struct client *next;
    unsigned char key[16];
    size_t key_len;
    unsigned conns;
} client;

struct ss_rest_guard_conn {
    ss_rest_guard_conn *prev, *next;
    client *who;
    int fd;
    uint64_t deadline_ns; /* 0: not receiving a request (waiting on the handler) */
    bool cut;
};

struct ss_rest_guard {
    ss_rest_limits lim;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    pthread_t watchdog;
    unsigned conns;
    ss_rest_guard_conn *list;
    client *clients[CLIENT_BUCKETS];
    _Atomic uint64_t last_log_ns;
    ss_metric_series *refused_total, *refused_per_client, *cut_deadline;
};

/* At most one line a second: a flood of refusals must not become a flood of log lines. */
static void log_limited(ss_rest_guard *g, const char *what, unsigned limit)
{
    uint64_t now = ss_now_ns(), last = atomic_load(&g->last_log_ns);
    if (now - last < 1000000000ull || !atomic_compare_exchange_strong(&g->last_log_ns, &last, now))
        return;
    SS_WARN("RESTful server: %s (limit %u); refusals are counted in shardserve_rest_refused_total",
            what, limit);
}

static size_t address_key(const struct sockaddr *addr, unsigned char key[16])
{
    if (addr && addr->sa_family == AF_INET) {
        memcpy(key, &((const struct sockaddr_in *)addr)->sin_addr, 4);
        return 4;
    }
    if (addr && addr->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)addr)->sin6_addr, 16);
        return 16;
    }
    return 0;
}

static client **client_slot(ss_rest_guard *g, const unsigned char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ key[i]) * 0x100000001b3ull;
    client **p = &g->clients[(h ^ (h >> 29)) % CLIENT_BUCKETS];
    while (*p && ((*p)->key_len != len || memcmp((*p)->key, key, len) != 0))
        p = &(*p)->next;
    return p;
}

static void cut_overdue(ss_rest_guard *g, uint64_t now)
{
    for (ss_rest_guard_conn *c = g->list; c; c = c->next) {
        if (!c->deadline_ns || c->cut || now < c->deadline_ns) continue;
        c->cut = true;
        shutdown(c->fd, SHUT_RDWR); /* MHD sees the end of the stream and closes it */
        ss_metric_add(g->cut_deadline, 1);
        log_limited(g,
                    "closed a connection whose request did not arrive within the read timeout (s)",
                    g->lim.read_timeout_s);
    }
}

static void *watch(void *arg)
{
    ss_rest_guard *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += WATCH_PERIOD_MS * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        cut_overdue(g, ss_now_ns());
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

static ss_metric_series *refusal_series(const char *limit)
{
    static const char *const labels[] = {"limit"};
    ss_metric_family *f = ss_metrics_family(
        ss_metrics_global(), SS_METRIC_COUNTER, "shardserve_rest_refused_total",
        "REST connections and requests refused or closed by a limit", 1, labels, NULL, 0);
    return ss_metrics_series(f, (const char *const[]){limit});
}

ss_status *ss_rest_guard_new(const ss_rest_limits *limits, ss_rest_guard **out)
{
    *out = NULL;
    ss_rest_guard *g = calloc(1, sizeof *g);
    if (!g) return ss_errf(SS_ERR_NOMEM, "cannot allocate the REST connection guard");
    g->lim = *limits;
    g->refused_total = refusal_series("connections");
    g->refused_per_client = refusal_series("connections_per_client");
    g->cut_deadline = refusal_series("read_timeout");
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    if (pthread_create(&g->watchdog, NULL, watch, g) != 0) {
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
        free(g);
        return ss_errf(SS_ERR_IO, "cannot start the REST read-timeout thread");
    }
    *out = g;
    return NULL;
}

void ss_rest_guard_free(ss_rest_guard *g)
{
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->stopping = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->watchdog, NULL);
    for (size_t i = 0; i < CLIENT_BUCKETS; i++) {
        while (g->clients[i]) {
            client *next = g->clients[i]->next;
            free(g->clients[i]);
            g->clients[i] = next;
        }
    }
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

bool ss_rest_guard_admit(ss_rest_guard *g, const struct sockaddr *addr, socklen_t len)
{
    unsigned char key[16];
    size_t key_len = len ? address_key(addr, key) : 0;
    pthread_mutex_lock(&g->mu);
    bool total_full = g->conns >= g->lim.max_connections;
    client *who = key_len ? *client_slot(g, key, key_len) : NULL;
    bool client_full = who && who->conns >= g->lim.max_per_client;
    pthread_mutex_unlock(&g->mu);
    if (total_full) {
        ss_metric_add(g->refused_total, 1);
        log_limited(g, "refused a connection: too many connections", g->lim.max_connections);
    } else if (client_full) {
        ss_metric_add(g->refused_per_client, 1);
        log_limited(g, "refused a connection: too many connections from one client address",
                    g->lim.max_per_client);
    }
    return !total_full && !client_full;
}

ss_rest_guard_conn *ss_rest_guard_opened(ss_rest_guard *g, const struct sockaddr *addr, int fd)
{
    ss_rest_guard_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    unsigned char key[16];
    size_t key_len = address_key(addr, key);
    c->fd = fd;
    c->deadline_ns =
        g->lim.read_timeout_s ? ss_now_ns() + (uint64_t)g->lim.read_timeout_s * 1000000000ull : 0;
    pthread_mutex_lock(&g->mu);
    if (key_len) {
        client **slot = client_slot(g, key, key_len);
        if (!*slot && (*slot = calloc(1, sizeof **slot))) {
            memcpy((*slot)->key, key, key_len);
            (*slot)->key_len = key_len;
        }
        c->who = *slot;
        if (c->who) c->who->conns++;
    }
    g->conns++;
    c->next = g->list;
    if (g->list) g->list->prev = c;
    g->list = c;
    pthread_mutex_unlock(&g->mu);
    return c;
}

void ss_rest_guard_closed(ss_rest_guard *g, ss_rest_guard_conn *c)
{
    if (!c) return;
    pthread_mutex_lock(&g->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        g->list = c->next;
    if (c->next) c->next->prev = c->prev;
    g->conns--;
    if (c->who && --c->who->conns == 0) {
        client **slot = client_slot(g, c->who->key, c->who->key_len);
        *slot = c->who->next;
        free(c->who);
    }
    pthread_mutex_unlock(&g->mu);
    free(c);
}

void ss_rest_guard_received(ss_rest_guard *g, ss_rest_guard_conn *c)
{
    if (!c) return;
    pthread_mutex_lock(&g->mu);
    c->deadline_ns = 0;
    pthread_mutex_unlock(&g->mu);
}

void ss_rest_guard_rearm(ss_rest_guard *g, ss_rest_guard_conn *c)
{
    if (!c || !g->lim.read_timeout_s) return;
    pthread_mutex_lock(&g->mu);
    c->deadline_ns = ss_now_ns() + (uint64_t)g->lim.read_timeout_s * 1000000000ull;
    pthread_mutex_unlock(&g->mu);
}
