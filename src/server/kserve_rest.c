/*
 * kserve_rest: the Open Inference Protocol's REST codec (see kserve_rest.h).
 *
 * Requests: the JSON header is parsed with cJSON; a JSON tensor's "data" (flat or nested) is
 * converted once into a buffer the call owns, a binary tensor (parameters.binary_data_size) is
 * a slice of the received body that the instances borrow. Every length is checked against the
 * body before it is used: the header length, each binary_data_size, and their sum, which must
 * be exactly what follows the header.
 * Replies are written directly (no cJSON tree); binary outputs follow the JSON, appended
 * (ss_kserve_rest_encode_reply) or left where they lie for the server to send from there
 * (ss_kserve_rest_encode_pieces).
 */
#include "json.h"
#include "kserve_rest.h"
#include "kserve_shm.h"
#include "kserve_stats.h"
#include "sbuf.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERVER_NAME "shardserve"
#define SERVER_VERSION "0.1.0"
#define PLATFORM "onnx_onnxv1"

/* ------------------------------------------------------------------ JSON pieces */

static void sb_name(sbuf *s, const char *str)
{
    if (!sb_json_string(s, str, strlen(str))) sb_str(s, "\"?\"");
}

static void sb_shape(sbuf *s, int ndim, const int64_t *dims)
{
    sb_str(s, "[");
    for (int d = 0; d < ndim; d++)
        sb_printf(s, "%s%lld", d ? "," : "", (long long)dims[d]);
    sb_str(s, "]");
}

char *ss_kserve_rest_error_json(const char *msg, size_t *len)
{
    sbuf s = {0};
    sb_str(&s, "{\"error\":");
    if (!sb_json_string(&s, msg, strlen(msg))) sb_str(&s, "\"(message is not UTF-8)\"");
    sb_str(&s, "}");
    if (s.oom) {
        free(s.p);
        return NULL;
    }
    *len = s.len;
    return s.p;
}

/* ------------------------------------------------------------------ URLs */

typedef struct {
    char name[256];
    char version[16];
    const char *tail; /* what follows NAME[/versions/V]: "", "/ready", "/infer", ... */
} model_url;

static bool parse_model_url(const char *url, model_url *u, ss_kserve_error *err)
{
    if (strncmp(url, "/v2/models/", 11) != 0) {
        ss_kserve_fail(err, 404, "unknown route %.200s", url);
        return false;
    }
    const char *p = url + 11;
    size_t n = strcspn(p, "/");
    if (n == 0 || n >= sizeof u->name) {
        ss_kserve_fail(err, n ? 400 : 404, n ? "model name is too long" : "no model name in %s",
                       url);
        return false;
    }
    memcpy(u->name, p, n);
    u->name[n] = 0;
    p += n;
    u->version[0] = 0;
    if (strncmp(p, "/versions/", 10) == 0) {
        size_t v = strcspn(p + 10, "/");
        uint64_t parsed;
        if (v == 0 || v >= sizeof u->version || !ss_kserve_parse_version(p + 10, v, &parsed)) {
            ss_kserve_fail(err, 404, "unknown version '%.*s' of model '%s'", (int)(v < 40 ? v : 40),
                           p + 10, u->name);
            return false;
        }
        memcpy(u->version, p + 10, v);
        u->version[v] = 0;
        p += 10 + v;
    }
    u->tail = p;
    return true;
}

static bool resolve_url(const ss_predict_handler *h, const model_url *u, ss_kserve_call *call,
                        ss_kserve_error *err)
{
    uint64_t version = 0;
    ss_kserve_parse_version(u->version, strlen(u->version), &version);
    return ss_kserve_resolve(h, u->name, version, call, err);
}

/* ------------------------------------------------------------------ GET routes */

static void tensor_meta(sbuf *s, const ss_serving_tensor_spec *specs, size_t n)
{
    sb_str(s, "[");
    for (size_t k = 0; k < n; k++) {
        const ss_serving_tensor_spec *sp = &specs[k];
        const char *dt = ss_kserve_dtype_name(sp->dtype);
        int64_t dims[SS_MAX_DIMS + 1];
        int nd = 0;
        if (sp->batched) dims[nd++] = -1;
        for (int d = 0; d < sp->ndim; d++)
            dims[nd++] = sp->dims[d];
        sb_str(s, k ? ",{\"name\":" : "{\"name\":");
        sb_name(s, sp->name);
        sb_printf(s, ",\"datatype\":\"%s\",\"shape\":", dt ? dt : "UNKNOWN");
        sb_shape(s, nd, dims);
        sb_str(s, "}");
    }
    sb_str(s, "]");
}

static void model_metadata(const ss_kserve_call *call, sbuf *s)
{
    sb_str(s, "{\"name\":");
    sb_name(s, call->model);
    sb_printf(s, ",\"versions\":[\"%llu\"],\"platform\":\"" PLATFORM "\",\"inputs\":",
              (unsigned long long)call->sig->version);
    tensor_meta(s, call->method->inputs, call->method->n_inputs);
    sb_str(s, ",\"outputs\":");
    tensor_meta(s, call->method->outputs, call->method->n_outputs);
    sb_str(s, "}");
}

static void sb_duration(sbuf *s, const char *name, const ss_kserve_duration *d, bool last)
{
    sb_printf(s, "\"%s\":{\"count\":%llu,", name, (unsigned long long)d->count);
    sb_printf(s, "\"ns\":%llu}%s", (unsigned long long)d->ns, last ? "" : ",");
}

/* Triton's statistics JSON (the fields it reports; see kserve_stats.h for their sources). */
static void stats_json(sbuf *s, const ss_kserve_stats *st, size_t n)
{
    static const ss_kserve_duration none = {0, 0};
    sb_str(s, "{\"model_stats\":[");
    for (size_t i = 0; i < n; i++) {
        sb_str(s, i ? ",{\"name\":" : "{\"name\":");
        sb_name(s, st[i].model);
        sb_str(s, ",\"version\":");
        sb_name(s, st[i].version);
        sb_printf(s, ",\"last_inference\":0,\"inference_count\":%llu,",
                  (unsigned long long)st[i].inference_count);
        sb_printf(s, "\"execution_count\":%llu,\"inference_stats\":{",
                  (unsigned long long)st[i].execution_count);
        sb_duration(s, "success", &st[i].success, false);
        sb_duration(s, "fail", &st[i].fail, false);
        sb_duration(s, "queue", &st[i].queue, false);
        sb_duration(s, "compute_input", &none, false);
        sb_duration(s, "compute_infer", &st[i].compute_infer, false);
        sb_duration(s, "compute_output", &none, false);
        sb_duration(s, "cache_hit", &none, false);
        sb_duration(s, "cache_miss", &none, true);
        sb_str(s, "},\"batch_stats\":[]}");
    }
    sb_str(s, "]}");
}

/* GET /v2/models/stats (every model) and /v2/models/NAME[/versions/V]/stats */
static int stats_get(const ss_predict_handler *h, const char *model, const char *version, sbuf *s,
                     ss_kserve_error *err)
{
    ss_kserve_stats *st = NULL;
    size_t n = 0;
    if (!ss_kserve_stats_collect(h, model, version, &st, &n, err)) return err->status;
    stats_json(s, st, n);
    free(st);
    return 200;
}

/* GET /v2/models/NAME[/versions/V][/ready|/stats] */
static int model_get(const ss_predict_handler *h, const char *url, sbuf *s, ss_kserve_error *err)
{
    model_url u;
    if (!parse_model_url(url, &u, err)) return err->status;
    if (strcmp(u.tail, "/stats") == 0) return stats_get(h, u.name, u.version, s, err);
    bool ready = strcmp(u.tail, "/ready") == 0;
    if (!ready && u.tail[0]) {
        ss_kserve_fail(err, 404, "unknown route GET %s", url);
        return 404;
    }
    ss_kserve_call *call = ss_kserve_call_new();
    if (!call) {
        ss_kserve_fail(err, 500, "out of memory");
        return 500;
    }
    bool ok = resolve_url(h, &u, call, err);
    if (ok && ready) {
        sb_str(s, "{\"name\":");
        sb_name(s, call->model);
        sb_str(s, ",\"ready\":true}");
    } else if (ok) {
        model_metadata(call, s);
    } else if (ready && err->status == 503) {
        sb_str(s, "{\"name\":");
        sb_name(s, u.name);
        sb_str(s, ",\"ready\":false,\"error\":");
        sb_name(s, err->msg);
        sb_str(s, "}");
        ok = true;
    }
    ss_kserve_call_free(call);
    return ok ? (ready && err->status == 503 ? 503 : 200) : err->status;
}

void ss_kserve_rest_get(const ss_predict_handler *h, ss_ready_fn ready, void *ready_ctx,
                        const char *url, int *status, char **body, size_t *len)
{
    sbuf s = {0};
    ss_kserve_error err = {0};
    bool server_ready = !ready || ready(ready_ctx);
    if (strcmp(url, "/v2/health/live") == 0) {
        *status = 200;
        sb_str(&s, "{\"live\":true}");
    } else if (strcmp(url, "/v2/health/ready") == 0) {
        *status = server_ready ? 200 : 503;
        sb_str(&s, server_ready ? "{\"ready\":true}" : "{\"ready\":false}");
    } else if (strcmp(url, "/v2") == 0) {
        *status = 200;
        sb_str(&s, "{\"name\":\"" SERVER_NAME "\",\"version\":\"" SERVER_VERSION
                   "\",\"extensions\":[\"binary_tensor_data\",\"statistics\","
                   "\"system_shared_memory\"");
        sb_str(&s, h->index ? ",\"model_repository\"]}" : "]}");
    } else if (strcmp(url, "/v2/models/stats") == 0) {
        *status = stats_get(h, "", "", &s, &err);
    } else if (strncmp(url, "/v2/models/", 11) == 0) {
        *status = model_get(h, url, &s, &err);
    } else {
        ss_kserve_fail(&err, 404, "unknown route GET %s", url);
        *status = 404;
    }
    if (*status != 200 && !s.len) {
        free(s.p);
        *body = ss_kserve_rest_error_json(err.msg, len);
        return;
    }
    *body = s.oom ? NULL : s.p;
    *len = s.oom ? 0 : s.len;
    if (s.oom) free(s.p);
}

/* ------------------------------------------------------------------ JSON tensor data */

typedef struct {
    const cJSON **leaves;
    size_t n, cap;
    bool nested_too_deep;
} leaf_list;

/* Flatten nested "data" arrays in row-major order. */
static bool collect_leaves(const cJSON *v, leaf_list *l, int depth)
{
    if (cJSON_IsArray(v)) {
        if (depth > SS_MAX_DIMS) {
            l->nested_too_deep = true;
            return false;
        }
        for (const cJSON *e = v->child; e; e = e->next)
            if (!collect_leaves(e, l, depth + 1)) return false;
        return true;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        const cJSON **grown = realloc(l->leaves, cap * sizeof *grown);
        if (!grown) return false;
        l->leaves = grown;
        l->cap = cap;
    }
    l->leaves[l->n++] = v;
    return true;
}

#define JSON_INT_EXACT 9007199254740991.0 /* 2^53 - 1: every integer up to it is exact */

/* One JSON value into element i of a buffer of dtype dt. */
static bool put_number(ss_dtype dt, const cJSON *v, uint8_t *buf, size_t i)
{
    if (dt == SS_DT_BOOL) {
        if (!cJSON_IsBool(v)) return false;
        buf[i] = cJSON_IsTrue(v);
        return true;
    }
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (ss_dtype_is_float(dt)) {
        /* JSON has no infinities: a value past the type's largest is a mistake, not inf */
        double max = dt == SS_DT_FLOAT16 ? 65504.0 : dt == SS_DT_FLOAT64 ? DBL_MAX : FLT_MAX;
        if (fabs(d) > max) return false;
        if (dt == SS_DT_FLOAT32)
            ((float *)buf)[i] = (float)d;
        else if (dt == SS_DT_FLOAT64)
            ((double *)buf)[i] = d;
        else if (dt == SS_DT_FLOAT16)
            ((uint16_t *)buf)[i] = ss_f32_to_f16((float)d);
        else
            ((uint16_t *)buf)[i] = ss_f32_to_bf16((float)d);
        return true;
    }
    if (d != floor(d)) return false;
    switch (dt) {
#define INT_CASE(DT, T, LO, HI)                                                                    \
    case DT:                                                                                       \
        if (d < (double)(LO) || d > (double)(HI)) return false;                                    \
        ((T *)buf)[i] = (T)d;                                                                      \
        return true;
        INT_CASE(SS_DT_INT8, int8_t, INT8_MIN, INT8_MAX)
        INT_CASE(SS_DT_INT16, int16_t, INT16_MIN, INT16_MAX)
        INT_CASE(SS_DT_INT32, int32_t, INT32_MIN, INT32_MAX)
        /* 64-bit integers beyond 2^53 do not survive the parser's double: refused, never
         * rounded (a JSON_INT_EXACT test in the caller names the reason) */
        INT_CASE(SS_DT_INT64, int64_t, -JSON_INT_EXACT, JSON_INT_EXACT)
        INT_CASE(SS_DT_UINT8, uint8_t, 0, UINT8_MAX)
        INT_CASE(SS_DT_UINT16, uint16_t, 0, UINT16_MAX)
        INT_CASE(SS_DT_UINT32, uint32_t, 0, UINT32_MAX)
        INT_CASE(SS_DT_UINT64, uint64_t, 0, JSON_INT_EXACT)
#undef INT_CASE
    default:
        return false;
    }
}

/* BYTES elements from JSON strings, length-prefixed. */
/* The BYTES leaves in the binary extension's layout; NULL with *not_strings when one is not a
 * string, else NULL when out of memory. */
static uint8_t *strings_buffer(const leaf_list *l, size_t *nbytes, bool *not_strings)
{
    size_t total = 0;
    *not_strings = false;
    for (size_t i = 0; i < l->n; i++) {
        if (!cJSON_IsString(l->leaves[i])) {
            *not_strings = true;
            return NULL;
        }
        total += 4 + strlen(l->leaves[i]->valuestring);
    }
    uint8_t *buf = malloc(total ? total : 1);
    size_t off = 0;
    for (size_t i = 0; buf && i < l->n; i++) {
        uint32_t n = (uint32_t)strlen(l->leaves[i]->valuestring);
        memcpy(buf + off, &n, 4);
        memcpy(buf + off + 4, l->leaves[i]->valuestring, n);
        off += 4 + n;
    }
    *nbytes = total;
    return buf;
}

/* "data" of one input into a buffer the call owns. */
static bool json_data(ss_kserve_call *call, const cJSON *data, ss_kserve_input *in,
                      ss_kserve_error *err)
{
    leaf_list l = {0};
    int64_t numel = ss_kserve_numel(in->ndim, in->dims);
    bool ok = collect_leaves(data, &l, 0);
    if (!ok) {
        ss_kserve_fail(err, l.nested_too_deep ? 400 : 500, "input '%s': %s", in->name,
                       l.nested_too_deep ? "data is nested too deep" : "out of memory");
    } else if ((int64_t)l.n != numel) {
        ss_kserve_fail(err, 400, "input '%s': data has %zu elements, shape needs %lld", in->name,
                       l.n, (long long)numel);
        ok = false;
    }
    uint8_t *buf = NULL;
    if (ok && in->dtype == SS_DT_STRING) {
        bool not_strings;
        buf = strings_buffer(&l, &in->nbytes, &not_strings);
        if (!buf)
            ss_kserve_fail(err, not_strings ? 400 : 500, "input '%s': %s", in->name,
                           not_strings ? "BYTES data must be strings" : "out of memory");
    } else if (ok) {
        size_t elem = ss_dtype_size(in->dtype);
        in->nbytes = l.n * elem;
        buf = malloc(in->nbytes ? in->nbytes : 1);
        if (!buf) ss_kserve_fail(err, 500, "out of memory");
        for (size_t i = 0; buf && i < l.n; i++)
            if (!put_number(in->dtype, l.leaves[i], buf, i)) {
                bool wide = (in->dtype == SS_DT_INT64 || in->dtype == SS_DT_UINT64) &&
                            cJSON_IsNumber(l.leaves[i]) &&
                            fabs(l.leaves[i]->valuedouble) > JSON_INT_EXACT;
                ss_kserve_fail(err, 400, "input '%s': element %zu is not a valid %s value%s",
                               in->name, i, ss_kserve_dtype_name(in->dtype),
                               wide ? " in JSON: beyond 2^53 integers are not exact here, send "
                                      "the tensor as binary data"
                                    : "");
                free(buf);
                buf = NULL;
            }
    }
    free(l.leaves);
    if (!buf || !ss_kserve_call_own(call, buf)) {
        if (!err->status) ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    in->data = buf;
    return true;
}

/* ------------------------------------------------------------------ request header */

typedef struct {
    const uint8_t *body;
    size_t len;    /* whole body */
    size_t start;  /* first byte after the JSON header */
    size_t offset; /* next binary byte */
} binary_cursor;

static bool parse_shape(const cJSON *shape, ss_kserve_input *in, ss_kserve_error *err)
{
    int n = cJSON_IsArray(shape) ? cJSON_GetArraySize(shape) : -1;
    if (n < 0 || n > SS_MAX_DIMS) {
        ss_kserve_fail(err, 400, "input '%s': shape must be an array of at most %d sizes", in->name,
                       SS_MAX_DIMS);
        return false;
    }
    in->ndim = 0;
    for (const cJSON *d = shape->child; d; d = d->next) {
        double v = cJSON_IsNumber(d) ? d->valuedouble : -1;
        if (v < 0 || v != floor(v) || v > (double)(1LL << 48)) {
            ss_kserve_fail(err, 400, "input '%s': shape holds a size that is not a count",
                           in->name);
            return false;
        }
        in->dims[in->ndim++] = (int64_t)v;
    }
    if (ss_kserve_numel(in->ndim, in->dims) < 0) {
        ss_kserve_fail(err, 400, "input '%s': shape is too large", in->name);
        return false;
    }
    return true;
}

/* parameters.binary_data_size: -1 when absent. */
static bool binary_size(const cJSON *params, const char *name, int64_t *size, ss_kserve_error *err)
{
    *size = -1;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(params, "binary_data_size");
    if (!p) return true;
    double v = cJSON_IsNumber(p) ? p->valuedouble : -1;
    if (v < 0 || v != floor(v) || v > 9e15) {
        ss_kserve_fail(err, 400, "input '%s': binary_data_size must be a byte count", name);
        return false;
    }
    *size = (int64_t)v;
    return true;
}

/* A JSON byte count or offset. */
static bool count_of(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9e15 ||
        v->valuedouble != floor(v->valuedouble))
        return false;
    *out = (uint64_t)v->valuedouble;
    return true;
}

/* parameters shared_memory_region / _byte_size / _offset (kserve_shm.h); false with err when
 * they are malformed. */
static bool shm_params(const cJSON *params, const char *kind, const char *tensor,
                       const char **region, uint64_t *offset, uint64_t *size, ss_kserve_error *err)
{
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(params, "shared_memory_region");
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(params, "shared_memory_offset");
    *offset = 0;
    if (!cJSON_IsString(r) ||
        !count_of(cJSON_GetObjectItemCaseSensitive(params, "shared_memory_byte_size"), size) ||
        (o && !count_of(o, offset))) {
        ss_kserve_fail(err, 400,
                       "%s '%s': shared_memory_region wants a string, shared_memory_byte_size "
                       "and shared_memory_offset byte counts",
                       kind, tensor);
        return false;
    }
    *region = r->valuestring;
    return true;
}

static bool shm_input(ss_kserve_call *call, const cJSON *j, ss_kserve_input *in,
                      ss_kserve_error *err)
{
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(j, "parameters");
    const char *region;
    uint64_t offset, size;
    if (cJSON_GetObjectItemCaseSensitive(j, "data") ||
        cJSON_GetObjectItemCaseSensitive(params, "binary_data_size")) {
        ss_kserve_fail(err, 400, "input '%s' has shared_memory_region and data besides", in->name);
        return false;
    }
    return shm_params(params, "input", in->name, &region, &offset, &size, err) &&
           ss_kserve_shm_input(call, in, region, offset, size, err);
}

static bool parse_input(ss_kserve_call *call, const cJSON *j, binary_cursor *bin,
                        ss_kserve_input *in, ss_kserve_error *err)
{
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "datatype");
    if (cJSON_IsString(name) && !cJSON_IsString(dt)) {
        ss_kserve_fail(err, 400, "input '%.200s' needs a string \"datatype\"", name->valuestring);
        return false;
    }
    if (!cJSON_IsString(name) || !cJSON_IsString(dt)) {
        ss_kserve_fail(err, 400, "every input needs a string \"name\" and \"datatype\"");
        return false;
    }
    in->name = name->valuestring;
    in->dtype = ss_kserve_dtype_parse(dt->valuestring, strlen(dt->valuestring));
    if (in->dtype == SS_DT_UNDEFINED) {
        ss_kserve_fail(err, 400, "input '%s': unknown datatype '%.40s'", in->name, dt->valuestring);
        return false;
    }
    if (!ss_kserve_check_dtype(call, in->name, in->dtype, err)) return false;
    if (!parse_shape(cJSON_GetObjectItemCaseSensitive(j, "shape"), in, err)) return false;
    if (cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "parameters"),
                                         "shared_memory_region"))
        return shm_input(call, j, in, err);
    int64_t size;
    if (!binary_size(cJSON_GetObjectItemCaseSensitive(j, "parameters"), in->name, &size, err))
        return false;
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    if (size < 0) {
        if (data) return json_data(call, data, in, err);
        ss_kserve_fail(err, 400, "input '%s' has neither \"data\" nor binary_data_size", in->name);
        return false;
    }
    if (data) {
        ss_kserve_fail(err, 400, "input '%s' has both \"data\" and binary_data_size", in->name);
        return false;
    }
    if ((uint64_t)size > bin->len - bin->offset) {
        ss_kserve_fail(err, 400,
                       "input '%s': binary_data_size %lld runs past the end of the body (%zu "
                       "binary bytes left)",
                       in->name, (long long)size, bin->len - bin->offset);
        return false;
    }
    in->data = bin->body + bin->offset;
    in->nbytes = (size_t)size;
    bin->offset += (size_t)size;
    return true;
}

static bool param_true(const cJSON *params, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(params, key));
}

static bool parse_outputs(ss_kserve_call *call, const cJSON *outputs, ss_kserve_error *err)
{
    if (!outputs) return true;
    int n = cJSON_IsArray(outputs) ? cJSON_GetArraySize(outputs) : -1;
    if (n < 0 || n > 64) {
        ss_kserve_fail(err, 400, "\"outputs\" must be an array of at most 64 outputs");
        return false;
    }
    call->outputs = calloc((size_t)n + 1, sizeof *call->outputs);
    if (!call->outputs) {
        ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    for (const cJSON *o = outputs->child; o; o = o->next) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(o, "parameters");
        if (!cJSON_IsString(name)) {
            ss_kserve_fail(err, 400, "every requested output needs a string \"name\"");
            return false;
        }
        if (cJSON_GetObjectItemCaseSensitive(params, "classification")) {
            ss_kserve_fail(err, 400, "output '%s': the classification extension is not supported",
                           name->valuestring);
            return false;
        }
        ss_kserve_requested *r = &call->outputs[call->n_outputs++];
        const cJSON *bd = cJSON_GetObjectItemCaseSensitive(params, "binary_data");
        r->binary = cJSON_IsTrue(bd);
        r->binary_set = cJSON_IsBool(bd); /* an explicit false wins over binary_data_output */
        if (!(r->name = strdup(name->valuestring))) {
            ss_kserve_fail(err, 500, "out of memory");
            return false;
        }
        const char *region;
        uint64_t offset, size;
        if (cJSON_GetObjectItemCaseSensitive(params, "shared_memory_region") &&
            (!shm_params(params, "output", r->name, &region, &offset, &size, err) ||
             !ss_kserve_shm_output(r, region, offset, size, err)))
            return false;
    }
    return ss_kserve_check_outputs(call, err);
}

static bool parse_header(ss_kserve_call *call, const cJSON *root, binary_cursor *bin,
                         ss_kserve_input *inputs, size_t *n, ss_kserve_error *err)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
    if (id && !cJSON_IsString(id)) {
        ss_kserve_fail(err, 400, "\"id\" must be a string");
        return false;
    }
    if (id && !(call->id = strdup(id->valuestring))) {
        ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    call->binary_output =
        param_true(cJSON_GetObjectItemCaseSensitive(root, "parameters"), "binary_data_output");
    const cJSON *ins = cJSON_GetObjectItemCaseSensitive(root, "inputs");
    int count = cJSON_IsArray(ins) ? cJSON_GetArraySize(ins) : -1;
    if (count < 0 || count > 64) {
        ss_kserve_fail(err, 400, "\"inputs\" must be an array of at most 64 inputs");
        return false;
    }
    *n = 0;
    for (const cJSON *j = ins->child; j; j = j->next)
        if (!parse_input(call, j, bin, &inputs[(*n)++], err)) return false;
    if (bin->offset != bin->len) {
        ss_kserve_fail(err, 400,
                       "the body has %zu bytes after the JSON header, but the inputs' "
                       "binary_data_size add up to %zu",
                       bin->len - bin->start, bin->offset - bin->start);
        return false;
    }
    return parse_outputs(call, cJSON_GetObjectItemCaseSensitive(root, "outputs"), err);
}

/* Inference-Header-Content-Length against the body. */
static bool header_length(const char *text, size_t len, size_t *out, ss_kserve_error *err)
{
    *out = len;
    if (!text) return true;
    char *end = NULL;
    unsigned long long v = strtoull(text, &end, 10);
    if (!*text || *text < '0' || *text > '9' || *end) {
        ss_kserve_fail(err, 400, "Inference-Header-Content-Length '%.40s' is not a byte count",
                       text);
        return false;
    }
    if (v > len) {
        ss_kserve_fail(err, 400,
                       "Inference-Header-Content-Length %llu is larger than the body (%zu bytes)",
                       v, len);
        return false;
    }
    if (v == 0) {
        ss_kserve_fail(err, 400,
                       "Inference-Header-Content-Length 0 (a raw binary request) is not supported: "
                       "send a JSON header");
        return false;
    }
    *out = (size_t)v;
    return true;
}

/* cJSON spends ~64 bytes per value, whatever its kind: bound the values before parsing. */
#define KSERVE_MAX_JSON_VALUES (1 << 22)

static bool json_values_over(const char *text, size_t len, size_t limit)
{
    size_t values = 0;
    for (size_t i = 0; i < len && values <= limit; i++) {
        char c = text[i];
        if (c == '"') {
            values++;
            for (i++; i < len && text[i] != '"'; i++)
                if (text[i] == '\\') i++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            values++;
            while (i + 1 < len && strchr("0123456789+-.eE", text[i + 1]) && text[i + 1])
                i++;
        } else if (c == '[' || c == '{' || c == 't' || c == 'f' || c == 'n') {
            values++;
        }
    }
    return values > limit;
}

static bool decode_body(ss_kserve_call *call, const char *body, size_t len, const char *header,
                        ss_predict_request **req, ss_kserve_error *err)
{
    size_t hlen;
    if (!header_length(header, len, &hlen, err)) return false;
    if (json_values_over(body, hlen, KSERVE_MAX_JSON_VALUES)) {
        ss_kserve_fail(err, 400,
                       "the request %s has more than %d JSON values: send large tensors "
                       "as binary data",
                       header ? "header" : "body", KSERVE_MAX_JSON_VALUES);
        return false;
    }
    if (ss_serving_json_has_nul(body, hlen)) {
        ss_kserve_fail(err, 400,
                       "the request %s holds a \\u0000 escape: JSON strings here cannot carry "
                       "NUL bytes, send BYTES holding them as binary data",
                       header ? "header" : "body");
        return false;
    }
    const char *end = NULL;
    bool oom = false;
    cJSON *root = ss_json_parse(body, hlen, &end, &oom);
    if (oom) {
        ss_kserve_fail(err, 500, "out of memory while parsing the request %s",
                       header ? "header" : "body");
        return false;
    }
    if (!root || !cJSON_IsObject(root) || end != body + hlen) {
        ss_kserve_fail(err, 400, "the request %s is not a JSON object", header ? "header" : "body");
        cJSON_Delete(root);
        return false;
    }
    /* the inputs' names point into the tree: build the request before deleting it */
    ss_kserve_input inputs[64];
    size_t n = 0;
    binary_cursor bin = {(const uint8_t *)body, len, hlen, hlen};
    bool ok = parse_header(call, root, &bin, inputs, &n, err) &&
              ss_kserve_build_request(call, inputs, n, req, err);
    cJSON_Delete(root);
    return ok;
}

bool ss_kserve_rest_decode_infer(const ss_predict_handler *h, const char *url, char *body,
                                 size_t len, const char *header_len, ss_kserve_call **out,
                                 ss_predict_request **req, ss_kserve_error *err)
{
    return ss_kserve_rest_decode_infer_wire(h, url, body, len, header_len, body, free, out, req,
                                            err);
}

bool ss_kserve_rest_decode_infer_wire(const ss_predict_handler *h, const char *url, char *body,
                                      size_t len, const char *header_len, void *wire,
                                      void (*wire_free)(void *), ss_kserve_call **out,
                                      ss_predict_request **req, ss_kserve_error *err)
{
    *out = NULL;
    *req = NULL;
    err->status = 0;
    ss_kserve_call *call = ss_kserve_call_new();
    if (!call) {
        wire_free(wire);
        ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    call->wire = wire;
    call->wire_free = wire_free;
    model_url u;
    bool ok = parse_model_url(url, &u, err);
    if (ok && strcmp(u.tail, "/infer") != 0) {
        ss_kserve_fail(err, 404, "unknown route POST %s", url);
        ok = false;
    }
    ok = ok && resolve_url(h, &u, call, err);
    if (ok && len == 0) {
        ss_kserve_fail(err, 400, "the request body is empty");
        ok = false;
    }
    ok = ok && decode_body(call, body, len, header_len, req, err);
    if (!ok) {
        ss_kserve_call_free(call);
        return false;
    }
    *out = call;
    return true;
}

/* ------------------------------------------------------------------ reply */

static bool json_values(sbuf *s, const ss_kserve_output *o)
{
    size_t n = (size_t)ss_kserve_numel(o->ndim, o->dims);
    const uint8_t *p = o->data;
    sb_str(s, "[");
    for (size_t i = 0; i < n && !s->oom; i++) {
        if (i) sb_put(s, ",", 1);
        double f = 0;
        switch (o->dtype) {
        case SS_DT_BOOL:
            sb_str(s, p[i] ? "true" : "false");
            continue;
        case SS_DT_INT8:
            sb_printf(s, "%d", ((const int8_t *)p)[i]);
            continue;
        case SS_DT_INT16:
            sb_printf(s, "%d", ((const int16_t *)p)[i]);
            continue;
        case SS_DT_INT32:
            sb_printf(s, "%d", ((const int32_t *)p)[i]);
            continue;
        case SS_DT_INT64:
            sb_printf(s, "%lld", (long long)((const int64_t *)p)[i]);
            continue;
        case SS_DT_UINT8:
            sb_printf(s, "%u", p[i]);
            continue;
        case SS_DT_UINT16:
            sb_printf(s, "%u", ((const uint16_t *)p)[i]);
            continue;
        case SS_DT_UINT32:
            sb_printf(s, "%u", ((const uint32_t *)p)[i]);
            continue;
        case SS_DT_UINT64:
            sb_printf(s, "%llu", (unsigned long long)((const uint64_t *)p)[i]);
            continue;
        case SS_DT_FLOAT32:
            f = ((const float *)p)[i];
            break;
        case SS_DT_FLOAT64:
            f = ((const double *)p)[i];
            break;
        case SS_DT_FLOAT16:
            f = ss_f16_to_f32(((const uint16_t *)p)[i]);
            break;
        case SS_DT_BFLOAT16:
            f = ss_bf16_to_f32(((const uint16_t *)p)[i]);
            break;
        default:
            return false;
        }
        if (!isfinite(f))
            sb_str(s, "null");
        else
            sb_printf(s, o->dtype == SS_DT_FLOAT64 ? "%.17g" : "%.9g", f);
    }
    sb_str(s, "]");
    return true;
}

static bool json_strings(sbuf *s, const ss_kserve_output *o)
{
    size_t off = 0;
    sb_str(s, "[");
    for (bool first = true; off < o->nbytes; first = false) {
        uint32_t n;
        memcpy(&n, o->data + off, 4);
        if (!first) sb_put(s, ",", 1);
        if (!sb_json_string(s, (const char *)o->data + off + 4, n)) return false;
        off += 4 + n;
    }
    sb_str(s, "]");
    return true;
}

static bool output_json(sbuf *s, const ss_kserve_output *o, ss_kserve_error *err)
{
    const char *dt = ss_kserve_dtype_name(o->dtype);
    if (!dt) {
        ss_kserve_fail(err, 500, "output '%s' has a datatype the protocol cannot name", o->name);
        return false;
    }
    sb_str(s, "{\"name\":");
    sb_name(s, o->name);
    sb_printf(s, ",\"datatype\":\"%s\",\"shape\":", dt);
    sb_shape(s, o->ndim, o->dims);
    if (o->shm) {
        sb_str(s, ",\"parameters\":{\"shared_memory_region\":");
        sb_name(s, o->shm->shm_region);
        sb_printf(s, ",\"shared_memory_byte_size\":%zu", o->nbytes);
        if (o->shm->shm_offset)
            sb_printf(s, ",\"shared_memory_offset\":%llu", (unsigned long long)o->shm->shm_offset);
        sb_str(s, "}}");
        return true;
    }
    if (o->binary) {
        sb_printf(s, ",\"parameters\":{\"binary_data_size\":%zu}}", o->nbytes);
        return true;
    }
    sb_str(s, ",\"data\":");
    bool ok = o->dtype == SS_DT_STRING ? json_strings(s, o) : json_values(s, o);
    if (!ok) {
        ss_kserve_fail(err, 500,
                       "output '%s' holds bytes that are not UTF-8: request it with "
                       "binary_data",
                       o->name);
        return false;
    }
    sb_str(s, "}");
    return true;
}

static int error_reply(const ss_kserve_error *err, char **body, size_t *len, size_t *json_len)
{
    *body = ss_kserve_rest_error_json(err->msg, len);
    *json_len = *len;
    return err->status ? err->status : 500;
}

int ss_kserve_rest_encode_pieces(ss_kserve_call *call, const ss_predict_reply *reply, char **body,
                                 size_t *json_len, ss_kserve_piece **pieces, size_t *n_pieces)
{
    ss_kserve_error err = {0};
    ss_kserve_output *outs = NULL;
    size_t n = 0, len = 0;
    *pieces = NULL;
    *n_pieces = 0;
    if (!ss_kserve_collect_outputs(call, reply, &outs, &n, &err))
        return error_reply(&err, body, &len, json_len);
    sbuf s = {0};
    sb_str(&s, "{\"model_name\":");
    sb_name(&s, call->model);
    sb_printf(&s, ",\"model_version\":\"%llu\"", (unsigned long long)call->sig->version);
    if (call->id) {
        sb_str(&s, ",\"id\":");
        if (!sb_json_string(&s, call->id, strlen(call->id))) sb_str(&s, "\"\"");
    }
    sb_str(&s, ",\"outputs\":[");
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        if (i) sb_put(&s, ",", 1);
        ok = output_json(&s, &outs[i], &err);
    }
    sb_str(&s, "]}");
    ss_kserve_piece *list = calloc(n ? n : 1, sizeof *list);
    for (size_t i = 0; ok && list && i < n; i++)
        if (outs[i].binary) list[(*n_pieces)++] = (ss_kserve_piece){outs[i].data, outs[i].nbytes};
    free(outs);
    if (!ok || s.oom || !list) {
        free(s.p);
        free(list);
        *n_pieces = 0;
        if (ok) ss_kserve_fail(&err, 500, "out of memory encoding the reply");
        return error_reply(&err, body, &len, json_len);
    }
    *body = s.p;
    *json_len = s.len;
    *pieces = list;
    return 200;
}

int ss_kserve_rest_encode_reply(ss_kserve_call *call, const ss_predict_reply *reply, char **body,
                                size_t *len, size_t *json_len)
{
    ss_kserve_piece *pieces = NULL;
    size_t n = 0, total = 0;
    int status = ss_kserve_rest_encode_pieces(call, reply, body, json_len, &pieces, &n);
    *len = *json_len;
    for (size_t i = 0; i < n; i++)
        total += pieces[i].len;
    char *all = n ? realloc(*body, *json_len + total + 1) : *body;
    if (!all) {
        free(*body);
        free(pieces);
        ss_kserve_error err = {0};
        ss_kserve_fail(&err, 500, "out of memory encoding the reply");
        return error_reply(&err, body, len, json_len);
    }
    *body = all;
    for (size_t i = 0; i < n; i++) {
        memcpy(all + *len, pieces[i].data, pieces[i].len);
        *len += pieces[i].len;
    }
    free(pieces);
    return status;
}
