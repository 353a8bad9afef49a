/*
 * shm: tensors in POSIX shared memory cross a local link as (key, offset), not as bytes (see
 * link.h, "shared memory"). The table of shared ranges is one per process, under one mutex;
 * frame.c asks it once per tensor while packing a header (link_shm_find) and maps what a header
 * names while unpacking one (link_shm_map). A mapping made here covers exactly the tensor's pages
 * and belongs to the tensor (SS_STORE_MAPPED), so nothing here must outlive a request: a region
 * the client unregisters (or unlinks) while an agent computes on it stays mapped until the
 * agent's tensor is freed. Every mapping made here is guarded (shm_guard.c): a client that shrinks
 * its object while a request reads or writes it costs that request, never the process.
 */
#include "link_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct shared {
    const uint8_t *base;
    size_t len;
    char key[LINK_SHM_KEY_MAX];
    uint64_t key_offset;
    struct shared *next;
} shared;

static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;
static shared *table;

bool link_shm_wanted(void)
{
    const char *v = getenv("SHARDSERVE_LINK_SHM");
    return !v || strcmp(v, "0") != 0;
}

bool link_shm_key_valid(const char *key)
{
    size_t n = strnlen(key, LINK_SHM_KEY_MAX);
    return n > 1 && n < LINK_SHM_KEY_MAX && key[0] == '/' && !strchr(key + 1, '/');
}

ss_status *ss_link_shm_share(const void *base, size_t len, const char *key, uint64_t key_offset)
{
    if (!link_shm_key_valid(key))
        return ss_errf(SS_ERR_INVALID, "shared memory key '%.200s' is not a POSIX shm name", key);
    shared *s = calloc(1, sizeof *s);
    if (!s) return ss_errf(SS_ERR_NOMEM, "shared memory table");
    s->base = base;
    s->len = len;
    snprintf(s->key, sizeof s->key, "%s", key);
    s->key_offset = key_offset;
    pthread_mutex_lock(&table_mu);
    s->next = table;
    table = s;
    pthread_mutex_unlock(&table_mu);
    return NULL;
}

void ss_link_shm_unshare(const void *base)
{
    pthread_mutex_lock(&table_mu);
    for (shared **pp = &table; *pp; pp = &(*pp)->next)
        if ((*pp)->base == base) {
            shared *s = *pp;
            *pp = s->next;
            free(s);
            break;
        }
    pthread_mutex_unlock(&table_mu);
}

bool link_shm_find(const void *p, size_t n, char key[LINK_SHM_KEY_MAX], uint64_t *offset)
{
    const uint8_t *b = p;
    bool found = false;
    pthread_mutex_lock(&table_mu);
    for (const shared *s = table; s && !found; s = s->next)
        if (b >= s->base && n <= s->len && (size_t)(b - s->base) <= s->len - n) {
            memcpy(key, s->key, LINK_SHM_KEY_MAX);
            *offset = s->key_offset + (uint64_t)(b - s->base);
            found = true;
        }
    pthread_mutex_unlock(&table_mu);
    return found;
}

/* This process's own mapping of key's [offset, offset + n), or NULL. */
static void *shared_here(const char *key, uint64_t offset, size_t n)
{
    void *p = NULL;
    pthread_mutex_lock(&table_mu);
    for (const shared *s = table; s && !p; s = s->next)
        if (!strcmp(s->key, key) && offset >= s->key_offset && n <= s->len &&
            offset - s->key_offset <= s->len - n)
            p = (void *)(s->base + (offset - s->key_offset));
    pthread_mutex_unlock(&table_mu);
    return p;
}

/* Open key and check it holds [offset, offset + n); *fd and *st on success. */
static ss_status *open_object(const char *key, uint64_t offset, size_t n, bool writable, int *fd,
                              struct stat *st)
{
    if (!link_shm_key_valid(key))
        return ss_errf(SS_ERR_INVALID, "shared memory key '%.200s' is not a POSIX shm name", key);
    *fd = shm_open(key, writable ? O_RDWR : O_RDONLY, 0);
    if (*fd < 0 || fstat(*fd, st) != 0) {
        ss_status *e =
            ss_errf(SS_ERR_INVALID, "cannot open shared memory '%s': %s", key, strerror(errno));
        if (*fd >= 0) close(*fd);
        return e;
    }
    if (offset > (uint64_t)st->st_size || n > (uint64_t)st->st_size - offset) {
        close(*fd);
        return ss_errf(SS_ERR_INVALID,
                       "shared memory '%s' holds %lld bytes, too few for %zu at offset %llu", key,
                       (long long)st->st_size, n, (unsigned long long)offset);
    }
    return NULL;
}

/* Guard a fresh mapping; true (and unmapped) when it cannot be guarded. */
static bool guard_or_unmap(void *map, size_t len, const char *key)
{
    ss_status *st = ss_link_shm_guard(map, len, key);
    bool failed = st != NULL;
    if (failed) munmap(map, len);
    ss_status_free(st);
    return failed;
}

/* Map key's [offset, offset + n) into t (storage MAPPED, pages populated). */
static ss_status *map_range(const char *key, uint64_t offset, size_t n, bool writable, ss_tensor *t)
{
    int fd;
    struct stat st;
    ss_status *e = open_object(key, offset, n, writable, &fd, &st);
    if (e) return e;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), start = offset / page * page;
    size_t len = (size_t)(offset - start) + (n ? n : 1);
    int prot = PROT_READ | (writable ? PROT_WRITE : 0);
    uint8_t *m = mmap(NULL, len, prot, MAP_SHARED | MAP_POPULATE, fd, (off_t)start);
    close(fd);
    if (m == MAP_FAILED || guard_or_unmap(m, len, key))
        return ss_errf(SS_ERR_NOMEM, "cannot map %zu bytes of shared memory '%s': %s", n, key,
                       m == MAP_FAILED ? strerror(errno) : "too many mappings");
    t->data = m + (offset - start);
    t->nbytes = n;
    t->storage = SS_STORE_MAPPED;
    t->map_base = m;
    t->map_len = len;
    return NULL;
}

/*
 * Mappings kept across requests (for PREDICTs, on the agent's side): populating a large mapping's
 * page tables costs about what reading it does, so a region a client (or serve's pool) reuses is
 * mapped once. A mapping is held by the messages whose tensors point into it and unmapped only
 * when idle and more than CACHE_KEEP are idle (least recently used first); an object replaced
 * under the same name is a new mapping (matched by device and inode).
 */
#define CACHE_KEEP 8

typedef struct cached {
    char key[LINK_SHM_KEY_MAX];
    dev_t dev;
    ino_t ino;
    uint8_t *map; /* [0, len) of the object, read-write */
    size_t len;
    int holds;
    uint64_t used;
    struct cached *next;
} cached;

static cached *cache;
static uint64_t cache_tick;

static bool cache_lost(const cached *c)
{
    return ss_link_shm_lost(c->map, c->len, NULL, 0);
}

static void cache_unmap(cached **pp)
{
    cached *c = *pp;
    *pp = c->next;
    ss_link_shm_unguard(c->map);
    munmap(c->map, c->len);
    free(c);
}

/* Unmap idle mappings that were lost, then the least recently used idle ones beyond CACHE_KEEP
 * (lock held). */
static void cache_trim(void)
{
    for (cached **pp = &cache; *pp;)
        if ((*pp)->holds == 0 && cache_lost(*pp))
            cache_unmap(pp);
        else
            pp = &(*pp)->next;
    for (;;) {
        int idle = 0;
        cached **lru = NULL;
        for (cached **pp = &cache; *pp; pp = &(*pp)->next)
            if ((*pp)->holds == 0 && (idle++, !lru || (*pp)->used < (*lru)->used)) lru = pp;
        if (idle <= CACHE_KEEP) return;
        cache_unmap(lru);
    }
}

static cached *cache_find(const char *key, const struct stat *st, size_t end)
{
    for (cached *c = cache; c; c = c->next)
        if (c->dev == st->st_dev && c->ino == st->st_ino && c->len >= end && !strcmp(c->key, key) &&
            !cache_lost(c))
            return c;
    return NULL;
}

/* A held read-write mapping of key covering [offset, offset + n); *at points at offset. */
static ss_status *cache_hold(const char *key, uint64_t offset, size_t n, uint8_t **at)
{
    int fd;
    struct stat st;
    ss_status *e = open_object(key, offset, n, true, &fd, &st);
    if (e) return e;
    size_t end = (size_t)(offset + n);
    pthread_mutex_lock(&table_mu);
    cached *c = cache_find(key, &st, end);
    if (!c && (c = calloc(1, sizeof *c))) {
        c->map =
            mmap(NULL, end ? end : 1, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
        if (c->map == MAP_FAILED || guard_or_unmap(c->map, end ? end : 1, key)) {
            free(c);
            c = NULL;
        } else {
            snprintf(c->key, sizeof c->key, "%s", key);
            c->dev = st.st_dev, c->ino = st.st_ino, c->len = end ? end : 1;
            c->next = cache, cache = c;
        }
    }
    if (c) c->holds++, c->used = ++cache_tick, *at = c->map + offset;
    cache_trim();
    pthread_mutex_unlock(&table_mu);
    close(fd);
    return c ? NULL : ss_errf(SS_ERR_NOMEM, "cannot map %zu bytes of shared memory '%s'", end, key);
}

static void cache_unhold(const void *p)
{
    const uint8_t *b = p;
    pthread_mutex_lock(&table_mu);
    for (cached *c = cache; c; c = c->next)
        if (c->holds > 0 && b >= c->map && b < c->map + c->len) {
            c->holds--;
            break;
        }
    cache_trim();
    pthread_mutex_unlock(&table_mu);
}

/* The mappings a received message's tensors hold (ss_link_msg.link_private): kept ones, and the
 * tensors' own (MAPPED: only their guard is let go here, the tensor unmaps). */
typedef struct {
    size_t n;
    struct {
        const void *at;
        bool own;
    } at[];
} holds;

static bool note_hold(ss_link_msg *m, const void *at, bool own)
{
    holds *h = m->link_private;
    size_t n = h ? h->n : 0;
    holds *grown = realloc(h, sizeof *h + (n + 1) * sizeof h->at[0]);
    if (!grown) return false;
    grown->at[n].at = at;
    grown->at[n].own = own;
    grown->n = n + 1;
    m->link_private = grown;
    return true;
}

void link_shm_let_go(ss_link_msg *m)
{
    holds *h = m->link_private;
    for (size_t i = 0; h && i < h->n; i++)
        if (h->at[i].own)
            ss_link_shm_unguard(h->at[i].at);
        else
            cache_unhold(h->at[i].at);
    free(h);
    m->link_private = NULL;
}

/* A tensor's own mapping (a message that is no PREDICT, or a read-only object). */
static ss_status *map_own(const char *key, uint64_t offset, ss_tensor *t, ss_link_msg *m)
{
    ss_status *st = map_range(key, offset, t->nbytes, false, t);
    if (!st && !note_hold(m, t->map_base, true)) {
        ss_link_shm_unguard(t->map_base);
        return ss_errf(SS_ERR_NOMEM, "shared memory holds");
    }
    return st;
}

ss_status *link_shm_map(const char *key, uint64_t offset, ss_tensor *t, ss_link_msg *m)
{
    void *here = shared_here(key, offset, t->nbytes);
    if (here) {
        t->data = here;
        t->storage = SS_STORE_BORROWED;
        return NULL;
    }
    uint8_t *at = NULL;
    ss_status *st = m->type == SS_LINK_PREDICT ? cache_hold(key, offset, t->nbytes, &at) : NULL;
    if (m->type != SS_LINK_PREDICT || st) { /* kept mappings are read-write: maybe not allowed */
        ss_status_free(st);
        return map_own(key, offset, t, m);
    }
    if (!note_hold(m, at, false)) {
        cache_unhold(at);
        return ss_errf(SS_ERR_NOMEM, "shared memory holds");
    }
    t->data = at;
    t->storage = SS_STORE_BORROWED;
    return NULL;
}

ss_status *ss_link_shm_place(const ss_link_place *p, const ss_tensor *t, ss_tensor *out)
{
    if (t->dtype == SS_DT_STRING)
        return ss_errf(SS_ERR_UNSUPPORTED, "string outputs cannot be placed in shared memory");
    if (t->nbytes > p->byte_size)
        return ss_errf(SS_ERR_LIMIT, "output of %zu bytes does not fit %llu bytes of '%s'",
                       t->nbytes, (unsigned long long)p->byte_size, p->key);
    uint8_t *at = NULL;
    ss_status *st = cache_hold(p->key, p->offset, t->nbytes, &at);
    if (st) return st;
    *out = *t;
    out->data = at;
    out->storage = SS_STORE_BORROWED;
    out->map_base = NULL;
    if (t->nbytes && t->data != at) memcpy(at, t->data, t->nbytes);
    st = ss_link_shm_share(at, t->nbytes, p->key, p->offset);
    if (st) cache_unhold(at);
    return st;
}

ss_status *ss_link_shm_target(const ss_link_place *p, void **at)
{
    uint8_t *b = NULL;
    ss_status *st = cache_hold(p->key, p->offset, (size_t)p->byte_size, &b);
    *at = st ? NULL : b;
    return st;
}

void ss_link_shm_untarget(void *at)
{
    cache_unhold(at);
}

void ss_link_shm_release(ss_tensor *t)
{
    ss_link_shm_unshare(t->data);
    cache_unhold(t->data);
    memset(t, 0, sizeof *t);
}
