/*
 * serving: construction, destruction and MindSpore's error rules for predict requests and
 * replies (see include/shardserve/serving.h). Every allocation failure is reported, never
 * ignored; a reply that cannot be built degrades to a static-text error reply where possible.
 */
#include "shardserve/serving.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static char *dup_str(const char *s)
{
    size_t n = strlen(s ? s : "");
    char *d = malloc(n + 1);
    if (d) memcpy(d, s ? s : "", n + 1);
    return d;
}

static char *vformat(const char *fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (s) vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

/* ------------------------------------------------------------------ instances */

/* Instances this small are searched linearly: an index would cost more than it saves. */
#define INDEX_FROM 8

static uint64_t hash_seed;
static pthread_once_t hash_seed_once = PTHREAD_ONCE_INIT;

/* A per-process random seed, so a client cannot precompute names that all collide. */
static void hash_seed_init(void)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed)
        seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&seed;
    hash_seed = seed | 1;
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull ^ hash_seed;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    h ^= h >> 33; /* final mix: the low bits pick the slot */
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

static void index_drop(ss_serving_instance *inst)
{
    free(inst->index);
    inst->index = NULL;
    inst->index_cap = 0;
    inst->indexed = 0;
}

static void index_insert(ss_serving_instance *inst, size_t pos)
{
    size_t mask = inst->index_cap - 1;
    for (size_t slot = name_hash(inst->items[pos].name) & mask;; slot = (slot + 1) & mask) {
        if (inst->index[slot] == 0) {
            inst->index[slot] = (uint32_t)(pos + 1);
            return;
        }
    }
}

/* Make the index cover items[0, count) with room for one more (load factor <= 1/2). Without
 * memory the instance stays correct, only linear to search. */
static void index_prepare(ss_serving_instance *inst)
{
    if (inst->count + 1 < INDEX_FROM || inst->count + 1 >= UINT32_MAX / 4) return;
    if (inst->index && inst->indexed == inst->count && 2 * (inst->count + 1) <= inst->index_cap)
        return;
    pthread_once(&hash_seed_once, hash_seed_init);
    size_t cap = 16;
    while (cap < 4 * (inst->count + 1))
        cap *= 2;
    index_drop(inst);
    inst->index = calloc(cap, sizeof *inst->index);
    if (!inst->index) return;
    inst->index_cap = cap;
    for (size_t i = 0; i < inst->count; i++)
        index_insert(inst, i);
    inst->indexed = inst->count;
}

static size_t instance_lookup(const ss_serving_instance *inst, const char *name)
{
    size_t from = 0;
    if (inst->index && inst->indexed <= inst->count) {
        size_t mask = inst->index_cap - 1;
        for (size_t slot = name_hash(name) & mask; inst->index[slot]; slot = (slot + 1) & mask) {
            size_t pos = inst->index[slot] - 1;
            if (pos < inst->indexed && strcmp(inst->items[pos].name, name) == 0) return pos;
        }
        from = inst->indexed;
    }
    for (size_t i = from; i < inst->count; i++)
        if (strcmp(inst->items[i].name, name) == 0) return i;
    return SIZE_MAX;
}

void ss_serving_instance_clear(ss_serving_instance *inst)
{
    for (size_t i = 0; i < inst->count; i++) {
        free(inst->items[i].name);
        ss_tensor_free(&inst->items[i].tensor);
    }
    free(inst->items);
    free(inst->index);
    memset(inst, 0, sizeof *inst);
}

const ss_serving_item *ss_serving_instance_find(const ss_serving_instance *inst, const char *name)
{
    size_t i = instance_lookup(inst, name);
    return i == SIZE_MAX ? NULL : &inst->items[i];
}

ss_status *ss_serving_instance_put(ss_serving_instance *inst, const char *name, ss_tensor *tensor,
                                   bool is_bytes)
{
    size_t found = instance_lookup(inst, name);
    if (found != SIZE_MAX) {
        ss_serving_item *it = &inst->items[found];
        ss_tensor_free(&it->tensor);
        it->tensor = *tensor;
        it->is_bytes = is_bytes;
        memset(tensor, 0, sizeof *tensor);
        return NULL;
    }
    if (inst->count == inst->cap) {
        size_t cap = inst->cap ? inst->cap * 2 : 4;
        ss_serving_item *items = realloc(inst->items, cap * sizeof *items);
        if (!items) return ss_errf(SS_ERR_NOMEM, "cannot grow an instance to %zu items", cap);
        inst->items = items;
        inst->cap = cap;
    }
    char *copy = dup_str(name);
    if (!copy) return ss_errf(SS_ERR_NOMEM, "cannot copy item name");
    index_prepare(inst);
    ss_serving_item *it = &inst->items[inst->count++];
    it->name = copy;
    it->tensor = *tensor;
    it->is_bytes = is_bytes;
    memset(tensor, 0, sizeof *tensor);
    if (inst->index && inst->indexed == inst->count - 1 && 2 * inst->count <= inst->index_cap) {
        index_insert(inst, inst->count - 1);
        inst->indexed = inst->count;
    }
    return NULL;
}

ss_status *ss_serving_instance_put_string(ss_serving_instance *inst, const char *name,
                                          const void *bytes, size_t len, bool is_bytes)
{
    ss_tensor t;
    ss_status *st = ss_tensor_alloc(&t, SS_DT_STRING, 0, NULL);
    if (!st) st = ss_tensor_set_string(&t, 0, bytes, len);
    if (!st) st = ss_serving_instance_put(inst, name, &t, is_bytes);
    ss_tensor_free(&t);
    return st;
}

/* ------------------------------------------------------------------ requests */

ss_predict_request *ss_predict_request_new(const char *servable, const char *method,
                                           uint64_t version)
{
    ss_predict_request *req = calloc(1, sizeof *req);
    if (!req) return NULL;
    req->servable = dup_str(servable);
    req->method = dup_str(method);
    req->version = version;
    if (!req->servable || !req->method) {
        ss_predict_request_free(req);
        return NULL;
    }
    return req;
}

void ss_predict_request_free(ss_predict_request *req)
{
    if (!req) return;
    for (size_t i = 0; i < req->count; i++)
        ss_serving_instance_clear(&req->instances[i]);
    free(req->instances);
    free(req->servable);
    free(req->method);
    for (size_t i = 0; i < req->n_places; i++) {
        free(req->places[i].output);
        free(req->places[i].key);
    }
    free(req->places);
    free(req);
}

void ss_predict_request_cancel(ss_predict_request *req)
{
    __atomic_store_n(&req->cancelled_, 1, __ATOMIC_RELEASE);
}

bool ss_predict_request_cancelled(const ss_predict_request *req)
{
    return __atomic_load_n(&req->cancelled_, __ATOMIC_ACQUIRE) != 0;
}

/* The instance array grows by doubling. It grew by one slot a call before: N appends asked the
 * allocator for N reallocations of 1..N slots, which glibc mostly extends in place but an
 * allocator that always moves (ASan's) copies, O(N^2) bytes: under ASan a KServe JSON request
 * of 20,000 batch rows took 56 s of CPU to decode, one of 40,000 over 120 s (issue 14). A caller
 * that moved the array out (instances NULL) or built it by hand (instances_cap_ 0) gets a fresh
 * capacity from the count. */
bool ss_predict_request_reserve(ss_predict_request *req, size_t n)
{
    if (req->instances && n <= req->instances_cap_) return true;
    if (n < req->count) n = req->count;
    if (n == 0 || n > SIZE_MAX / sizeof *req->instances) return false;
    ss_serving_instance *grown = realloc(req->instances, n * sizeof *grown);
    if (!grown) return false;
    req->instances = grown;
    req->instances_cap_ = n;
    return true;
}

ss_serving_instance *ss_predict_request_add_instance(ss_predict_request *req)
{
    if ((!req->instances || req->count >= req->instances_cap_) &&
        !ss_predict_request_reserve(req, req->count ? 2 * req->count : 1))
        return NULL;
    ss_serving_instance *inst = &req->instances[req->count++];
    memset(inst, 0, sizeof *inst);
    return inst;
}

/* ------------------------------------------------------------------ replies */

ss_predict_reply *ss_predict_reply_new(size_t count)
{
    ss_predict_reply *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    if (count) {
        r->instances = calloc(count, sizeof *r->instances);
        if (!r->instances) {
            free(r);
            return NULL;
        }
    }
    r->count = count;
    return r;
}

static ss_predict_reply *reply_with_message(int64_t code, char *message)
{
    ss_predict_reply *r = calloc(1, sizeof *r);
    ss_serving_error *e = calloc(1, sizeof *e);
    if (!r || !e) {
        free(r);
        free(e);
        free(message);
        return NULL;
    }
    e->code = code;
    e->message = message;
    r->errors = e;
    r->error_count = 1;
    return r;
}

ss_predict_reply *ss_predict_reply_error(int64_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = vformat(fmt, ap);
    va_end(ap);
    /* a message that could not be written is out of memory, not the caller's error */
    return msg ? reply_with_message(code, msg)
               : reply_with_message(SS_SERVING_SYSTEM_ERROR, dup_str("out of memory"));
}

ss_status *ss_predict_reply_fail_instance(ss_predict_reply *reply, size_t i, int64_t code,
                                          const char *fmt, ...)
{
    if (i >= reply->count)
        return ss_errf(SS_ERR_INTERNAL, "instance %zu of a %zu-instance reply", i, reply->count);
    if (!reply->errors) {
        reply->errors = calloc(reply->count, sizeof *reply->errors);
        if (!reply->errors) return ss_errf(SS_ERR_NOMEM, "cannot allocate the error list");
        reply->error_count = reply->count;
    }
    va_list ap;
    va_start(ap, fmt);
    char *msg = vformat(fmt, ap);
    va_end(ap);
    if (!msg) return ss_errf(SS_ERR_NOMEM, "cannot format an error message");
    free(reply->errors[i].message);
    free(reply->errors[i].input);
    reply->errors[i] = (ss_serving_error){.code = code, .message = msg};
    ss_serving_instance_clear(&reply->instances[i]);
    return NULL;
}

bool ss_predict_reply_blame_input(ss_predict_reply *reply, size_t i, const char *input)
{
    if (i >= reply->error_count || !reply->errors[i].code) return false;
    char *copy = input ? dup_str(input) : NULL;
    if (input && !copy) return false;
    free(reply->errors[i].input);
    reply->errors[i].input = copy;
    return true;
}

static void error_clear(ss_serving_error *e)
{
    free(e->message);
    free(e->input);
    e->message = e->input = NULL;
}

static void free_errors(ss_predict_reply *r)
{
    for (size_t i = 0; i < r->error_count; i++)
        error_clear(&r->errors[i]);
    free(r->errors);
    r->errors = NULL;
    r->error_count = 0;
}

static void free_instances(ss_predict_reply *r)
{
    for (size_t i = 0; i < r->count; i++)
        ss_serving_instance_clear(&r->instances[i]);
    free(r->instances);
    r->instances = NULL;
    r->count = 0;
}

void ss_predict_reply_free(ss_predict_reply *reply)
{
    if (!reply) return;
    free_instances(reply);
    free_errors(reply);
    free(reply);
}

static bool msg_equal(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

void ss_predict_reply_collapse(ss_predict_reply *r)
{
    for (size_t i = 0; i < r->error_count; i++) {
        if (r->errors[i].code != 0 && (!r->errors[i].message || !r->errors[i].message[0])) {
            free(r->errors[i].message);
            r->errors[i].message = dup_str("Predict failed");
        }
    }
    if (r->error_count <= 1) {
        if (r->error_count == 1 && r->errors[0].code == 0 && r->count == 1)
            free_errors(r);
        else if (r->error_count == 1 && r->errors[0].code != 0)
            free_instances(r);
        return;
    }
    size_t failed = 0;
    bool same = true;
    for (size_t i = 0; i < r->error_count; i++) {
        if (r->errors[i].code == 0) continue;
        failed++;
        if (r->errors[i].code != r->errors[0].code ||
            !msg_equal(r->errors[i].message, r->errors[0].message))
            same = false;
        if (i < r->count) ss_serving_instance_clear(&r->instances[i]);
    }
    if (failed == 0) {
        free_errors(r);
    } else if (failed == r->error_count && same) {
        free_instances(r);
        for (size_t i = 1; i < r->error_count; i++)
            error_clear(&r->errors[i]);
        r->error_count = 1;
    } else {
        for (size_t i = 0; i < r->error_count; i++) {
            if (r->errors[i].code != 0) continue;
            error_clear(&r->errors[i]); /* a success carries an empty message */
        }
    }
}

ss_predict_reply *ss_predict_reply_finish(ss_predict_reply *reply, const ss_predict_request *req)
{
    if (!reply) return ss_predict_reply_error(SS_SERVING_SYSTEM_ERROR, "Predict failed");
    ss_predict_reply_collapse(reply);
    bool whole_error = reply->error_count == 1 && reply->count == 0;
    if (whole_error || reply->count == req->count) return reply;
    size_t got = reply->count;
    ss_predict_reply_free(reply);
    return ss_predict_reply_error(SS_SERVING_SYSTEM_ERROR,
                                  "Result instances number %zu is inconsistent with request "
                                  "instances number %zu",
                                  got, req->count);
}

/* ------------------------------------------------------------------ checks and texts */

const char *ss_serving_spec_str(const ss_predict_request *req, char *buf, size_t cap)
{
    if (req->version > 0)
        snprintf(buf, cap, "servable(%s) method(%s) version(%llu)", req->servable, req->method,
                 (unsigned long long)req->version);
    else
        snprintf(buf, cap, "servable(%s) method(%s)", req->servable, req->method);
    return buf;
}

ss_predict_reply *ss_serving_err_unavailable(const ss_predict_request *req, bool method_missing)
{
    char spec[512];
    return ss_predict_reply_error(SS_SERVING_INVALID_INPUTS, "Request %s, %s is not available",
                                  ss_serving_spec_str(req, spec, sizeof spec),
                                  method_missing ? "method" : "servable");
}

size_t ss_serving_max_names(size_t method_inputs)
{
    size_t generous = method_inputs > SIZE_MAX / 4 ? SIZE_MAX : 4 * method_inputs;
    return generous > SS_SERVING_MIN_NAME_LIMIT ? generous : SS_SERVING_MIN_NAME_LIMIT;
}

ss_predict_reply *ss_predict_request_check_inputs(const ss_predict_request *req,
                                                  const char *const *input_names, size_t n)
{
    size_t limit = ss_serving_max_names(n);
    for (size_t i = 0; i < req->count; i++)
        if (req->instances[i].count > limit)
            return ss_predict_reply_error(
                SS_SERVING_INVALID_INPUTS,
                "Instance %zu has %zu inputs, more than the limit %zu (max(%d, 4 x the %zu "
                "inputs of servable %s, method %s))",
                i, req->instances[i].count, limit, SS_SERVING_MIN_NAME_LIMIT, n, req->servable,
                req->method);
    for (size_t i = 0; i < req->count; i++)
        for (size_t k = 0; k < n; k++)
            if (!ss_serving_instance_find(&req->instances[i], input_names[k]))
                return ss_predict_reply_error(
                    SS_SERVING_INVALID_INPUTS,
                    "Cannot find input %s in instance input , servable %s, method %s",
                    input_names[k], req->servable, req->method);
    return NULL;
}

bool ss_serving_json_has_nul(const char *text, size_t len)
{
    for (size_t i = 0; i + 6 <= len; i++)
        if (text[i] == '\\' && (text[i + 1] == 'u' || text[i + 1] == 'U') &&
            !memcmp(text + i + 2, "0000", 4)) {
            size_t slashes = 1; /* an escaped backslash before the 'u' is not an escape */
            while (slashes <= i && text[i - slashes] == '\\')
                slashes++;
            if (slashes % 2) return true;
        }
    return false;
}

bool ss_serving_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        unsigned char c = p[i];
        size_t extra = c < 0x80                  ? 0
                       : (c >= 0xc2 && c < 0xe0) ? 1
                       : (c >= 0xe0 && c < 0xf0) ? 2
                       : (c >= 0xf0 && c < 0xf5) ? 3
                                                 : 4;
        if (extra == 4 || i + extra >= len + (extra ? 0 : 1)) return false;
        for (size_t k = 1; k <= extra; k++)
            if ((p[i + k] & 0xc0) != 0x80) return false;
        /* overlong 3/4-byte forms, UTF-16 surrogates and code points past U+10FFFF */
        if ((c == 0xe0 && p[i + 1] < 0xa0) || (c == 0xed && p[i + 1] >= 0xa0) ||
            (c == 0xf0 && p[i + 1] < 0x90) || (c == 0xf4 && p[i + 1] >= 0x90))
            return false;
        i += extra + 1;
    }
    return true;
}
