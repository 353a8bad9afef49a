/*
 * kserve_pool: reused shared-memory buffers for large KServe tensors (see kserve_pool.h). The
 * idle list is best fit (the smallest idle buffer that is large enough); a buffer given back
 * beyond the bounds is destroyed (unshared, unmapped, unlinked), the largest first.
 */
#include "kserve_pool.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shardserve/link.h"

#define POOL_IDLE 4
#define POOL_IDLE_BYTES ((size_t)1 << 30)
#define POOL_ROUND ((size_t)1 << 20) /* capacities are whole MiB, so sizes that vary reuse */

struct ss_kserve_buf {
    char key[64];
    uint8_t *data;
    size_t cap;
    struct ss_kserve_buf *next;     /* idle list */
    struct ss_kserve_buf *all_next; /* every buffer alive, for the names left at exit */
};

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static ss_kserve_buf *idle, *all;
static atomic_uint next_id;
static pthread_once_t at_exit_once = PTHREAD_ONCE_INIT;

/* The names go with the process (the memory goes with the last mapping: agents may still hold
 * theirs). A killed serve leaves them in /dev/shm, as any shm user would. */
static void unlink_all(void)
{
    pthread_mutex_lock(&pool_mu);
    for (ss_kserve_buf *b = all; b; b = b->all_next)
        shm_unlink(b->key);
    pthread_mutex_unlock(&pool_mu);
}

static void register_at_exit(void)
{
    atexit(unlink_all);
}

static void destroy(ss_kserve_buf *b)
{
    for (ss_kserve_buf **pp = &all; *pp; pp = &(*pp)->all_next)
        if (*pp == b) {
            *pp = b->all_next;
            break;
        }
    ss_link_shm_unshare(b->data);
    munmap(b->data, b->cap);
    shm_unlink(b->key);
    free(b);
}

static ss_kserve_buf *create(size_t bytes)
{
    ss_kserve_buf *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->cap = (bytes + POOL_ROUND - 1) / POOL_ROUND * POOL_ROUND;
    snprintf(b->key, sizeof b->key, "/shardserve-kserve-%d-%u", (int)getpid(),
             atomic_fetch_add(&next_id, 1));
    int fd = shm_open(b->key, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd >= 0 && ftruncate(fd, (off_t)b->cap) == 0)
        b->data = mmap(NULL, b->cap, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (fd >= 0) close(fd);
    if (fd < 0 || !b->data || b->data == MAP_FAILED) {
        if (fd >= 0) shm_unlink(b->key);
        if (b->data && b->data != MAP_FAILED) munmap(b->data, b->cap);
        free(b);
        return NULL;
    }
    ss_status *st = ss_link_shm_share(b->data, b->cap, b->key, 0);
    if (st) {
        ss_status_free(st);
        munmap(b->data, b->cap);
        shm_unlink(b->key);
        free(b);
        return NULL;
    }
    pthread_once(&at_exit_once, register_at_exit);
    pthread_mutex_lock(&pool_mu);
    b->all_next = all;
    all = b;
    pthread_mutex_unlock(&pool_mu);
    return b;
}

ss_kserve_buf *ss_kserve_pool_take(size_t bytes)
{
    pthread_mutex_lock(&pool_mu);
    ss_kserve_buf **best = NULL;
    for (ss_kserve_buf **pp = &idle; *pp; pp = &(*pp)->next)
        if ((*pp)->cap >= bytes && (!best || (*pp)->cap < (*best)->cap)) best = pp;
    ss_kserve_buf *b = best ? *best : NULL;
    if (b) *best = b->next;
    pthread_mutex_unlock(&pool_mu);
    return b ? b : create(bytes);
}

uint8_t *ss_kserve_buf_data(const ss_kserve_buf *b)
{
    return b->data;
}

size_t ss_kserve_buf_cap(const ss_kserve_buf *b)
{
    return b->cap;
}

const char *ss_kserve_buf_key(const ss_kserve_buf *b)
{
    return b->key;
}

/* The largest idle buffer while the pool is over its bounds (lock held), or NULL. */
static ss_kserve_buf *over_bounds(void)
{
    size_t n = 0, bytes = 0;
    ss_kserve_buf **largest = NULL;
    for (ss_kserve_buf **pp = &idle; *pp; pp = &(*pp)->next) {
        n++, bytes += (*pp)->cap;
        if (!largest || (*pp)->cap > (*largest)->cap) largest = pp;
    }
    if (n <= POOL_IDLE && bytes <= POOL_IDLE_BYTES) return NULL;
    ss_kserve_buf *b = *largest;
    *largest = b->next;
    return b;
}

void ss_kserve_pool_give(void *buf)
{
    ss_kserve_buf *b = buf;
    if (!b) return;
    pthread_mutex_lock(&pool_mu);
    b->next = idle;
    idle = b;
    ss_kserve_buf *gone;
    while ((gone = over_bounds()))
        destroy(gone);
    pthread_mutex_unlock(&pool_mu);
}

void ss_kserve_pool_drop(void *buf)
{
    if (!buf) return;
    pthread_mutex_lock(&pool_mu);
    destroy(buf);
    pthread_mutex_unlock(&pool_mu);
}

/* ------------------------------------------------------------------ output places */

/* Bytes of an output of static size, or 0. */
static size_t static_bytes(const ss_serving_tensor_spec *sp)
{
    if (sp->dtype == SS_DT_STRING) return 0;
    int64_t n = ss_kserve_numel(sp->ndim, sp->dims);
    for (int d = 0; d < sp->ndim; d++)
        if (sp->dims[d] < 0) n = -1;
    return n > 0 ? (size_t)n * ss_dtype_size(sp->dtype) : 0;
}

/* Is output `name` returned by this call, and not into a client's region? */
static bool returned_here(const ss_kserve_call *call, const char *name)
{
    for (size_t i = 0; i < call->n_outputs; i++)
        if (!strcmp(call->outputs[i].name, name)) return !call->outputs[i].shm_region;
    return call->n_outputs == 0;
}

static bool add_place(ss_kserve_call *call, ss_predict_request *req, const char *name, size_t bytes)
{
    ss_kserve_buf *b = ss_kserve_pool_take(bytes);
    if (!b) return true; /* no shared memory: the output travels the ordinary way */
    void **grown = realloc(call->pooled, (call->n_pooled + 1) * sizeof *grown);
    ss_serving_place *places = realloc(req->places, (req->n_places + 1) * sizeof *places);
    if (grown) call->pooled = grown;
    if (places) req->places = places;
    if (!grown || !places) {
        ss_kserve_pool_give(b);
        return false;
    }
    call->pooled[call->n_pooled++] = b;
    ss_serving_place *p = &req->places[req->n_places];
    *p = (ss_serving_place){.output = strdup(name), .key = strdup(b->key), .byte_size = bytes};
    req->n_places++;
    return p->output && p->key;
}

bool ss_kserve_pool_places(ss_kserve_call *call, ss_predict_request *req, ss_kserve_error *err)
{
    if (call->instances != 1) return true;
    const ss_serving_method *m = call->method;
    for (size_t i = 0; i < m->n_outputs; i++) {
        size_t bytes = static_bytes(&m->outputs[i]);
        if (bytes < SS_KSERVE_POOL_MIN || !returned_here(call, m->outputs[i].name)) continue;
        if (!add_place(call, req, m->outputs[i].name, bytes)) {
            ss_kserve_fail(err, 500, "out of memory placing output '%s'", m->outputs[i].name);
            return false;
        }
    }
    return true;
}
