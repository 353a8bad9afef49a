/*
 * kserve_shm: the system shared-memory extension's region table (see kserve_shm.h).
 * A region maps [0, offset + byte_size) of its shm object once, at register, and counts its
 * holders (the table, and each call using it) under the table's lock: it is unshared from the
 * link and unmapped when the last one lets go, so unregister never pulls memory from under a
 * request in flight. A client may also shrink the object under the mapping: every use checks its
 * size (fstat on the fd kept open), and the mapping is guarded (ss_link_shm_guard), so a shrink
 * while a request copies costs that request (an error naming the region), never the process.
 */
#include "kserve_shm.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "kserve_rest.h"
#include "sbuf.h"
#include "shardserve/link.h"

typedef struct region {
    ss_kserve_shm_region r;
    uint8_t *map; /* the object from 0; the region starts at map + r.offset */
    size_t map_len;
    int fd;      /* the object, for its current size */
    int holders; /* the table while registered + calls using it */
    struct region *next;
} region;

static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;
static region *table;

static region *find(const char *name)
{
    for (region *g = table; g; g = g->next)
        if (!strcmp(g->r.name, name)) return g;
    return NULL;
}

/* Open and map the object, checking its size covers the region. */
static bool map_key(const char *key, uint64_t end, uint8_t **map, int *fd_out, ss_kserve_error *err)
{
    if (key[0] != '/' || strchr(key + 1, '/') || strlen(key) >= sizeof(((region *)0)->r.key)) {
        ss_kserve_fail(err, 400, "shared memory key '%.200s' must be '/name' (a POSIX shm name)",
                       key);
        return false;
    }
    int fd = shm_open(key, O_RDWR, 0);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        ss_kserve_fail(err, 400, "cannot open shared memory key '%.200s': %s", key,
                       strerror(errno));
        if (fd >= 0) close(fd);
        return false;
    }
    if ((uint64_t)st.st_size < end || end == 0) {
        ss_kserve_fail(err, 400,
                       "shared memory key '%.200s' holds %lld bytes: too small for offset + "
                       "byte_size = %llu",
                       key, (long long)st.st_size, (unsigned long long)end);
        close(fd);
        return false;
    }
    *map = mmap(NULL, (size_t)end, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (*map == MAP_FAILED) {
        ss_kserve_fail(err, 400, "cannot map shared memory key '%.200s': %s", key, strerror(errno));
        close(fd);
        return false;
    }
    ss_status *guard = ss_link_shm_guard(*map, (size_t)end, key);
    if (guard) {
        ss_kserve_fail(err, 503, "shared memory key '%.200s': %s", key, guard->msg);
        ss_status_free(guard);
        munmap(*map, (size_t)end);
        close(fd);
        return false;
    }
    *fd_out = fd;
    return true;
}

static void unmap(region *g)
{
    ss_link_shm_unguard(g->map);
    munmap(g->map, g->map_len);
    close(g->fd);
    free(g);
}

bool ss_kserve_shm_register(const char *name, const char *key, uint64_t offset, uint64_t byte_size,
                            ss_kserve_error *err)
{
    if (!name[0] || strlen(name) >= sizeof(((region *)0)->r.name)) {
        ss_kserve_fail(err, 400, "a shared memory region name has 1 to 127 characters");
        return false;
    }
    if (byte_size == 0 || offset > UINT64_MAX - byte_size || offset + byte_size > SIZE_MAX / 2) {
        ss_kserve_fail(err, 400, "region '%s': byte_size must be > 0 and offset + byte_size fit",
                       name);
        return false;
    }
    region *g = calloc(1, sizeof *g);
    if (!g) {
        ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    if (!map_key(key, offset + byte_size, &g->map, &g->fd, err)) {
        free(g);
        return false;
    }
    snprintf(g->r.name, sizeof g->r.name, "%s", name);
    snprintf(g->r.key, sizeof g->r.key, "%s", key);
    g->r.offset = offset;
    g->r.byte_size = byte_size;
    g->map_len = (size_t)(offset + byte_size);
    g->holders = 1;
    ss_status *st = ss_link_shm_share(g->map + offset, (size_t)byte_size, key, offset);
    if (st) {
        ss_kserve_fail(err, 400, "region '%s': %s", name, st->msg);
        ss_status_free(st);
        unmap(g);
        return false;
    }
    pthread_mutex_lock(&table_mu);
    bool taken = find(name) != NULL;
    if (!taken) g->next = table, table = g;
    pthread_mutex_unlock(&table_mu);
    if (taken) {
        ss_link_shm_unshare(g->map + offset);
        unmap(g);
        ss_kserve_fail(err, 400, "shared memory region '%s' is already registered", name);
    }
    return !taken;
}

/* One holder less (lock held): the last one unshares and unmaps. */
static void let_go(region *g)
{
    if (--g->holders > 0) return;
    ss_link_shm_unshare(g->map + g->r.offset);
    unmap(g);
}

bool ss_kserve_shm_unregister(const char *name, ss_kserve_error *err)
{
    bool all = !name || !name[0], found = all;
    region *gone = NULL;
    pthread_mutex_lock(&table_mu);
    for (region **pp = &table; *pp;) {
        region *g = *pp;
        if (all || !strcmp(g->r.name, name)) {
            *pp = g->next;
            g->next = gone, gone = g;
            found = true;
        } else {
            pp = &g->next;
        }
    }
    while (gone) {
        region *g = gone;
        gone = g->next;
        let_go(g);
    }
    pthread_mutex_unlock(&table_mu);
    if (!found) ss_kserve_fail(err, 404, "no shared memory region named '%.200s'", name);
    return found;
}

bool ss_kserve_shm_status(const char *name, ss_kserve_shm_region **out, size_t *n,
                          ss_kserve_error *err)
{
    bool all = !name || !name[0];
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&table_mu);
    size_t count = 0;
    for (region *g = table; g; g = g->next)
        count += all || !strcmp(g->r.name, name);
    ss_kserve_shm_region *list = calloc(count ? count : 1, sizeof *list);
    for (region *g = table; list && g; g = g->next)
        if (all || !strcmp(g->r.name, name)) list[(*n)++] = g->r;
    pthread_mutex_unlock(&table_mu);
    if (!list) {
        ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    if (!all && !*n) {
        free(list);
        ss_kserve_fail(err, 404, "no shared memory region named '%.200s'", name);
        return false;
    }
    *out = list;
    return true;
}

/* A mapping lost to a shrink while no call holds it, over an object grown back: mapped again in
 * place (lock held), so the client need not register the region again. */
static void heal(region *g)
{
    if (g->holders != 1 || !ss_link_shm_lost(g->map, g->map_len, NULL, 0)) return;
    void *m = mmap(g->map, g->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, g->fd, 0);
    if (m == MAP_FAILED) return;
    ss_link_shm_unguard(g->map);
    ss_status_free(ss_link_shm_guard(g->map, g->map_len, g->r.key)); /* its slot was just freed */
}

/* Whether g's memory is still there: its object not shrunk below the region, its mapping not
 * lost to an earlier shrink (else a 400 naming the region and its key). */
static bool usable(region *g, const char *kind, const char *tensor, ss_kserve_error *err)
{
    struct stat st;
    if (fstat(g->fd, &st) == 0 && (uint64_t)st.st_size < g->map_len) {
        ss_kserve_fail(err, 400,
                       "%s '%s': shared memory region '%.128s' (key '%.200s') now holds %lld "
                       "bytes, fewer than its offset + byte_size %zu: the object was shrunk",
                       kind, tensor, g->r.name, g->r.key, (long long)st.st_size, g->map_len);
        return false;
    }
    heal(g);
    if (ss_link_shm_lost(g->map, g->map_len, NULL, 0)) {
        ss_kserve_fail(err, 400,
                       "%s '%s': shared memory region '%.128s' (key '%.200s') lost its memory "
                       "when the object was shrunk during a request: unregister it and register "
                       "it again, or wait until no request uses it",
                       kind, tensor, g->r.name, g->r.key);
        return false;
    }
    return true;
}

/* g's range [offset, offset + size), or a 400 naming the tensor (lock held). */
static uint8_t *range_of(region *g, const char *kind, const char *tensor, uint64_t offset,
                         uint64_t size, ss_kserve_error *err)
{
    const char *name = g->r.name;
    if (!usable(g, kind, tensor, err)) return NULL;
    if (offset > g->r.byte_size || size > g->r.byte_size - offset) {
        ss_kserve_fail(err, 400,
                       "%s '%s': offset %llu + byte_size %llu run past shared memory region "
                       "'%.128s' (byte_size %llu)",
                       kind, tensor, (unsigned long long)offset, (unsigned long long)size, name,
                       (unsigned long long)g->r.byte_size);
        return NULL;
    }
    return g->map + g->r.offset + offset;
}

/* The region's range [offset, offset + size) under the lock, or a 400 naming the tensor. */
static uint8_t *range(const char *kind, const char *tensor, const char *name, uint64_t offset,
                      uint64_t size, ss_kserve_error *err)
{
    region *g = find(name);
    if (!g) {
        ss_kserve_fail(err, 400, "%s '%s': shared memory region '%.128s' is not registered", kind,
                       tensor, name);
        return NULL;
    }
    return range_of(g, kind, tensor, offset, size, err);
}

/* The call holds g until it is freed (lock held). */
static bool hold(ss_kserve_call *call, region *g, ss_kserve_error *err)
{
    void **grown = realloc(call->shm_held, (call->n_shm_held + 1) * sizeof *grown);
    if (!grown) {
        ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    call->shm_held = grown;
    call->shm_held[call->n_shm_held++] = g;
    g->holders++;
    return true;
}

void ss_kserve_shm_explain(const ss_kserve_call *call, ss_kserve_error *err)
{
    pthread_mutex_lock(&table_mu);
    for (size_t i = 0; i < call->n_shm_held; i++) {
        const region *g = call->shm_held[i];
        char quoted[sizeof g->r.key + 2];
        snprintf(quoted, sizeof quoted, "'%s'", g->r.key);
        size_t n = strlen(err->msg);
        if (!strstr(err->msg, quoted) || n + 40 > sizeof err->msg) continue;
        snprintf(err->msg + n, sizeof err->msg - n, " (shared memory region '%.*s')",
                 (int)(sizeof err->msg - n - 32), g->r.name);
        err->status = 400;
        break;
    }
    pthread_mutex_unlock(&table_mu);
}

void ss_kserve_shm_let_go(ss_kserve_call *call)
{
    pthread_mutex_lock(&table_mu);
    for (size_t i = 0; i < call->n_shm_held; i++)
        let_go(call->shm_held[i]);
    pthread_mutex_unlock(&table_mu);
    free(call->shm_held);
    call->shm_held = NULL;
    call->n_shm_held = 0;
}

bool ss_kserve_shm_input(ss_kserve_call *call, ss_kserve_input *in, const char *region_name,
                         uint64_t offset, uint64_t byte_size, ss_kserve_error *err)
{
    pthread_mutex_lock(&table_mu);
    uint8_t *src = range("input", in->name, region_name, offset, byte_size, err);
    if (src && !hold(call, find(region_name), err)) src = NULL;
    pthread_mutex_unlock(&table_mu);
    in->data = src;
    in->nbytes = (size_t)byte_size;
    return src != NULL;
}

/* The output's region (held by the call) as a place in the request. */
static bool add_place(ss_kserve_call *call, ss_serving_place *p, const ss_kserve_requested *r,
                      ss_kserve_error *err)
{
    pthread_mutex_lock(&table_mu);
    region *g = find(r->shm_region);
    bool ok = range("output", r->name, r->shm_region, r->shm_offset, r->shm_byte_size, err) &&
              hold(call, g, err);
    if (ok) {
        p->output = strdup(r->name);
        p->key = strdup(g->r.key);
        p->offset = g->r.offset + r->shm_offset;
        p->byte_size = r->shm_byte_size;
    }
    pthread_mutex_unlock(&table_mu);
    if (ok && (!p->output || !p->key)) {
        ss_kserve_fail(err, 500, "out of memory");
        ok = false;
    }
    return ok;
}

bool ss_kserve_shm_places(ss_kserve_call *call, ss_predict_request *req, ss_kserve_error *err)
{
    size_t n = 0;
    for (size_t i = 0; i < call->n_outputs; i++)
        n += call->outputs[i].shm_region != NULL;
    if (!n || call->instances != 1) return true; /* stacked outputs are written here */
    req->places = calloc(n, sizeof *req->places);
    if (!req->places) {
        ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    for (size_t i = 0; i < call->n_outputs; i++)
        if (call->outputs[i].shm_region &&
            !add_place(call, &req->places[req->n_places++], &call->outputs[i], err))
            return false;
    return true;
}

bool ss_kserve_shm_output(ss_kserve_requested *r, const char *region_name, uint64_t offset,
                          uint64_t byte_size, ss_kserve_error *err)
{
    pthread_mutex_lock(&table_mu);
    bool ok = range("output", r->name, region_name, offset, byte_size, err) != NULL;
    pthread_mutex_unlock(&table_mu);
    if (ok && !(r->shm_region = strdup(region_name))) {
        ss_kserve_fail(err, 500, "out of memory");
        ok = false;
    }
    r->shm_offset = offset;
    r->shm_byte_size = byte_size;
    return ok;
}

static const ss_kserve_requested *shm_request(const ss_kserve_call *call, const char *name)
{
    for (size_t i = 0; i < call->n_outputs; i++)
        if (call->outputs[i].shm_region && !strcmp(call->outputs[i].name, name))
            return &call->outputs[i];
    return NULL;
}

/* Whether a region the call holds was shrunk while the call read or wrote it (then a 400). */
static bool held_intact(const ss_kserve_call *call, ss_kserve_error *err)
{
    bool ok = true;
    pthread_mutex_lock(&table_mu);
    for (size_t i = 0; ok && i < call->n_shm_held; i++) {
        const region *g = call->shm_held[i];
        if (ss_link_shm_lost(g->map, g->map_len, NULL, 0)) {
            ss_kserve_fail(err, 400,
                           "shared memory region '%.128s' (key '%.200s') was shrunk while the "
                           "request used it: the request fails",
                           g->r.name, g->r.key);
            ok = false;
        }
    }
    pthread_mutex_unlock(&table_mu);
    return ok;
}

bool ss_kserve_shm_write_outputs(const ss_kserve_call *call, ss_kserve_output *outs, size_t n,
                                 ss_kserve_error *err)
{
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        const ss_kserve_requested *r = shm_request(call, outs[i].name);
        if (!r) continue;
        if (outs[i].nbytes > r->shm_byte_size) {
            ss_kserve_fail(err, 400,
                           "output '%s': %zu bytes do not fit its shared memory byte_size %llu "
                           "(region '%.128s')",
                           outs[i].name, outs[i].nbytes, (unsigned long long)r->shm_byte_size,
                           r->shm_region);
            return false;
        }
        pthread_mutex_lock(&table_mu);
        uint8_t *dst =
            range("output", outs[i].name, r->shm_region, r->shm_offset, outs[i].nbytes, err);
        /* an agent that mapped the region wrote it there itself: dst is the data */
        if (dst && outs[i].nbytes && dst != outs[i].data) memcpy(dst, outs[i].data, outs[i].nbytes);
        pthread_mutex_unlock(&table_mu);
        ok = dst != NULL;
        outs[i].shm = r;
        outs[i].binary = false;
    }
    return ok && held_intact(call, err);
}

/* ------------------------------------------------------------------ REST */

#define SHM_PREFIX "/v2/systemsharedmemory"

static int status_json(const char *name, sbuf *s, ss_kserve_error *err)
{
    ss_kserve_shm_region *list = NULL;
    size_t n = 0;
    if (!ss_kserve_shm_status(name, &list, &n, err)) return err->status;
    sb_str(s, "[");
    for (size_t i = 0; i < n; i++) {
        sb_str(s, i ? ",{\"name\":" : "{\"name\":");
        sb_json_string(s, list[i].name, strlen(list[i].name));
        sb_str(s, ",\"key\":");
        sb_json_string(s, list[i].key, strlen(list[i].key));
        sb_printf(s, ",\"offset\":%llu,", (unsigned long long)list[i].offset);
        sb_printf(s, "\"byte_size\":%llu}", (unsigned long long)list[i].byte_size);
    }
    sb_str(s, "]");
    free(list);
    return 200;
}

/* A JSON count (>= 0, integral) or false. */
static bool json_count(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9.0e15 ||
        v->valuedouble != (double)(uint64_t)v->valuedouble)
        return false;
    *out = (uint64_t)v->valuedouble;
    return true;
}

static int register_json(const char *name, const char *body, size_t len, ss_kserve_error *err)
{
    bool oom = false;
    cJSON *root = ss_json_parse(body, len, NULL, &oom);
    if (oom) {
        ss_kserve_fail(err, 500, "register region '%.128s': out of memory while parsing the body",
                       name);
        return err->status;
    }
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(root, "key");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(root, "offset");
    uint64_t offset = 0, size = 0;
    bool ok = cJSON_IsObject(root) && cJSON_IsString(key) && (!off || json_count(off, &offset)) &&
              json_count(cJSON_GetObjectItemCaseSensitive(root, "byte_size"), &size);
    if (!ok)
        ss_kserve_fail(err, 400,
                       "register region '%.128s' wants {\"key\": string, \"offset\": count, "
                       "\"byte_size\": count}",
                       name);
    ok = ok && ss_kserve_shm_register(name, key->valuestring, offset, size, err);
    cJSON_Delete(root);
    return ok ? 200 : err->status;
}

/* /v2/systemsharedmemory[/region/NAME]/ACTION: the name ("" for none) and the action. */
static bool split_url(const char *url, char *name, size_t cap, const char **action)
{
    name[0] = 0;
    if (strncmp(url, SHM_PREFIX, strlen(SHM_PREFIX)) != 0) return false;
    const char *p = url + strlen(SHM_PREFIX);
    if (!strncmp(p, "/region/", 8)) {
        p += 8;
        size_t n = strcspn(p, "/");
        if (n == 0 || n >= cap) return false;
        memcpy(name, p, n);
        name[n] = 0;
        p += n;
    }
    *action = p;
    return true;
}

static int shm_route(const char *method, const char *url, const char *body, size_t len, sbuf *s,
                     ss_kserve_error *err)
{
    char name[128];
    const char *action = "";
    bool post = !strcmp(method, "POST");
    if (split_url(url, name, sizeof name, &action)) {
        if (!post && !strcmp(action, "/status")) return status_json(name, s, err);
        if (post && !strcmp(action, "/unregister"))
            return ss_kserve_shm_unregister(name, err) ? 200 : err->status;
        if (post && name[0] && !strcmp(action, "/register"))
            return register_json(name, body, len, err);
    }
    ss_kserve_fail(err, 404, "unknown route %s %.200s", method, url);
    return 404;
}

void ss_kserve_rest_shm(const char *method, const char *url, const char *body, size_t len,
                        int *status, char **out, size_t *out_len)
{
    sbuf s = {0};
    ss_kserve_error err = {0};
    *status = shm_route(method, url, body, len, &s, &err);
    if (*status != 200) {
        free(s.p);
        *out = ss_kserve_rest_error_json(err.msg, out_len);
        return;
    }
    if (!s.p) sb_str(&s, "");
    *out = s.oom ? NULL : s.p;
    *out_len = s.oom ? 0 : s.len;
    if (s.oom) free(s.p);
}
