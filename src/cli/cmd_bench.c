/*
 * shardserve bench: load a running server the way Triton's perf_analyzer does.
 *
 *   shardserve bench --address HOST:PORT [--protocol grpc|rest|kserve|kserve-grpc|kserve-rest|
 *                    kserve-binary] --servable S --method M
 *                    [--version N] [--input NAME=FILE.npy|NAME=DTYPE[D0,D1,...] ...]
 *                    [--metadata-address HOST:PORT] [--concurrency 1,4,16]
 *                    [--requests N | --duration-s S] [--warmup N] [--json]
 *
 * For each concurrency level, that many client threads send requests back to back (closed
 * loop); the table gives throughput and p50/p90/p99 latency per level. gRPC goes through the C
 * client library; REST is a plain keep-alive HTTP/1.1 client over one socket per thread, so the
 * numbers measure the server, not a client library. Failed requests are counted and reported.
 * The kserve protocols (the Open Inference Protocol: gRPC, REST JSON, REST binary tensors, model
 * SERVABLE.METHOD) go through the C client library too.
 * An input given as DTYPE[DIMS] (e.g. x=float32[128,96]) is generated: uniform values in [0, 1)
 * for floats, 0/1 for bool, small integers otherwise, from a fixed seed. Without any --input,
 * every input is generated that way from the servable's declared inputs, read from the server's
 * REST metadata (GET /model/NAME[/version/N]) at --metadata-address (default: --address when the
 * protocol is REST).
 *
 * --generate (a generate servable, gRPC): each request goes through shardserve's streaming
 * Predict (PredictStream) and the table gives, per level, generated tokens/s, time to first token
 * (request sent -> first streamed piece) and inter-token latency (the gap between pieces, shared
 * among a piece's tokens) p50/p99; the last message (the whole reply) is not a piece. --max-tokens
 * N sets the input max_tokens (int64 scalar).
 * --shm (kserve protocols, server on this host): the inputs are sent once into a shared-memory
 * region (and each --output NAME written into it), so a request carries only region names.
 */
#define _GNU_SOURCE /* strcasestr */
#include "cli.h"
#include "cli_shm.h"
#include "shardserve/client.h"

#include <cjson/cJSON.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_LEVELS 16
#define MAX_INPUTS 16

typedef struct {
    const char *address;
    bool rest;
    const char *proto_name; /* as the table prints it */
    int client_protocol;    /* ss_client_protocol of the C client path */
    const char *servable, *method;
    long version;
    int n_inputs;
    char *names[MAX_INPUTS], *files[MAX_INPUTS];
    ss_tensor inputs[MAX_INPUTS];
    long requests; /* per level; 0 = use duration */
    double duration_s;
    long warmup;
    bool json;
    bool owned_inputs; /* names/files were made from the metadata (freed at the end) */
    /* prepared payloads */
    ss_client *client;
    ss_client_request *req;
    char *rest_body;
    size_t rest_len;
    char rest_host[256];
    int rest_port;
    bool generate; /* stream generate requests: time to first token, inter-token latency */
    long max_tokens;
    bool use_shm;
    cli_shm shm;
} bench_cfg;

/* A growable list of samples (ns). */
typedef struct {
    uint64_t *v;
    size_t n, cap;
} samples;

typedef struct {
    bench_cfg *cfg;
    atomic_long *budget; /* requests left (when counting) */
    uint64_t deadline_ns;
    samples lat;       /* request latencies */
    samples ttft, itl; /* --generate: time to first token, inter-token latencies */
    long tokens;       /* --generate: tokens generated */
    long failures;
    char first_error[256];
} bench_thread;

static ss_client_dtype client_dtype(ss_dtype dt)
{
    switch (dt) {
    case SS_DT_BOOL:
        return SS_CLIENT_BOOL;
    case SS_DT_INT8:
        return SS_CLIENT_INT8;
    case SS_DT_UINT8:
        return SS_CLIENT_UINT8;
    case SS_DT_INT16:
        return SS_CLIENT_INT16;
    case SS_DT_UINT16:
        return SS_CLIENT_UINT16;
    case SS_DT_INT32:
        return SS_CLIENT_INT32;
    case SS_DT_UINT32:
        return SS_CLIENT_UINT32;
    case SS_DT_INT64:
        return SS_CLIENT_INT64;
    case SS_DT_UINT64:
        return SS_CLIENT_UINT64;
    case SS_DT_FLOAT16:
        return SS_CLIENT_FLOAT16;
    case SS_DT_FLOAT32:
        return SS_CLIENT_FLOAT32;
    case SS_DT_FLOAT64:
        return SS_CLIENT_FLOAT64;
    default:
        return SS_CLIENT_UNKNOWN;
    }
}

static const char *rest_type(ss_dtype dt)
{
    switch (dt) {
    case SS_DT_BOOL:
        return "bool";
    case SS_DT_INT8:
        return "int8";
    case SS_DT_UINT8:
        return "uint8";
    case SS_DT_INT16:
        return "int16";
    case SS_DT_UINT16:
        return "uint16";
    case SS_DT_INT32:
        return "int32";
    case SS_DT_UINT32:
        return "uint32";
    case SS_DT_INT64:
        return "int64";
    case SS_DT_UINT64:
        return "uint64";
    case SS_DT_FLOAT16:
        return "fp16";
    case SS_DT_FLOAT32:
        return "fp32";
    case SS_DT_FLOAT64:
        return "fp64";
    default:
        return "unknown";
    }
}

static char *base64(const void *data, size_t len, size_t *out_len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = data;
    size_t n = 4 * ((len + 2) / 3);
    char *s = malloc(n + 1);
    if (!s) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < len ? p[i + 2] : 0);
        s[o++] = tab[v >> 18 & 63];
        s[o++] = tab[v >> 12 & 63];
        s[o++] = i + 1 < len ? tab[v >> 6 & 63] : '=';
        s[o++] = i + 2 < len ? tab[v & 63] : '=';
    }
    s[o] = 0;
    *out_len = o;
    return s;
}

/* {"instances":[{"x":{"b64":"...","type":"fp32","shape":[..]}}]} — MindSpore's REST b64 form. */
static ss_status *build_rest_body(bench_cfg *c)
{
    size_t cap = 256, len = 0;
    for (int i = 0; i < c->n_inputs; i++)
        cap += c->inputs[i].nbytes * 4 / 3 + 256;
    char *body = malloc(cap);
    if (!body) return ss_errf(SS_ERR_NOMEM, "out of memory");
    len += (size_t)snprintf(body + len, cap - len, "{\"instances\":[{");
    for (int i = 0; i < c->n_inputs; i++) {
        size_t bl;
        char *b = base64(c->inputs[i].data, c->inputs[i].nbytes, &bl);
        if (!b) {
            free(body);
            return ss_errf(SS_ERR_NOMEM, "out of memory");
        }
        len += (size_t)snprintf(body + len, cap - len,
                                "%s\"%s\":{\"b64\":\"%s\",\"type\":\"%s\",\"shape\":[",
                                i ? "," : "", c->names[i], b, rest_type(c->inputs[i].dtype));
        free(b);
        for (int d = 0; d < c->inputs[i].ndim; d++)
            len += (size_t)snprintf(body + len, cap - len, "%s%lld", d ? "," : "",
                                    (long long)c->inputs[i].dims[d]);
        len += (size_t)snprintf(body + len, cap - len, "]}");
    }
    len += (size_t)snprintf(body + len, cap - len, "}]}");
    c->rest_body = body;
    c->rest_len = len;
    return NULL;
}

/* NAME=float32[128,96]: a generated input (see the top comment). Returns NULL when spec is not
 * of that form (then it is a file name). */
static ss_status *generate_input(const char *spec, ss_tensor *t, bool *generated)
{
    const char *br = strchr(spec, '[');
    size_t len = strlen(spec);
    *generated = false;
    if (!br || len < 2 || spec[len - 1] != ']') return NULL;
    ss_dtype dt = SS_DT_UNDEFINED;
    for (int v = 0; v < 64 && dt == SS_DT_UNDEFINED; v++) { /* numeric types, by core's names */
        const char *name = ss_dtype_valid(v) && v != SS_DT_STRING && v != SS_DT_BFLOAT16
                               ? ss_dtype_name((ss_dtype)v)
                               : "";
        if (*name && strlen(name) == (size_t)(br - spec) &&
            !strncmp(spec, name, (size_t)(br - spec)))
            dt = (ss_dtype)v;
    }
    if (dt == SS_DT_UNDEFINED) return ss_errf(SS_ERR_INVALID, "--input %s: unknown dtype", spec);
    int64_t dims[SS_MAX_DIMS];
    int nd = 0;
    for (const char *p = br + 1; *p != ']';) {
        char *end;
        long long d = strtoll(p, &end, 10);
        if (end == p || d < 0 || d > (1LL << 32) || nd == SS_MAX_DIMS ||
            (*end != ',' && *end != ']'))
            return ss_errf(SS_ERR_INVALID,
                           "--input %s: dims want DTYPE[D0,D1,...] with at most %d dims", spec,
                           SS_MAX_DIMS);
        dims[nd++] = d;
        p = *end == ',' ? end + 1 : end;
    }
    ss_status *st = ss_tensor_alloc(t, dt, nd, dims);
    if (st) return st;
    *generated = true;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    size_t n = t->nbytes / ss_dtype_size(dt);
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double u = (double)(x >> 11) / 9007199254740992.0;
        switch (dt) {
        case SS_DT_FLOAT32:
            ((float *)t->data)[i] = (float)u;
            break;
        case SS_DT_FLOAT64:
            ((double *)t->data)[i] = u;
            break;
        case SS_DT_FLOAT16:
            ((uint16_t *)t->data)[i] = (uint16_t)(0x3800 + (x & 0x3ff));
            break; /* [0.5, 1) */
        case SS_DT_BOOL:
            ((uint8_t *)t->data)[i] = (uint8_t)(x & 1);
            break;
        default:
            memset((char *)t->data + i * ss_dtype_size(dt), 0, ss_dtype_size(dt));
            ((uint8_t *)t->data)[i * ss_dtype_size(dt)] = (uint8_t)(x % 100);
            break; /* little-endian hosts */
        }
    }
    return NULL;
}

static bool samples_push(samples *s, uint64_t v)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 4096;
        uint64_t *nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) return false;
        s->v = nv, s->cap = nc;
    }
    s->v[s->n++] = v;
    return true;
}

/* ------------------------------------------------------------------ one request */

static bool grpc_once(bench_cfg *c, char *err, size_t cap)
{
    ss_client_reply *reply = NULL;
    ss_client_error *e = ss_client_infer(c->client, c->req, &reply);
    bool ok = !e;
    if (e)
        snprintf(err, cap, "%s", e->msg);
    else if (ss_client_reply_error(reply, 0, NULL))
        ok = false, snprintf(err, cap, "%s", ss_client_reply_error(reply, 0, NULL));
    ss_client_error_free(e);
    ss_client_reply_free(reply);
    return ok;
}

/* A generate request's stream, as the client sees it. The last message is the whole reply, and
 * only the stream's end tells it apart: a message counts as a piece once another follows it
 * (timed when it arrived). */
typedef struct {
    bench_thread *t;
    uint64_t start, prev;
    bool seen;
    uint64_t pending_at; /* the latest message: its arrival and token count */
    size_t pending_k;
} gen_watch;

static void gen_count_piece(gen_watch *w)
{
    if (!w->pending_k) return;
    if (!w->seen)
        samples_push(&w->t->ttft, w->pending_at - w->start);
    else
        for (size_t i = 0; i < w->pending_k; i++)
            samples_push(&w->t->itl, (w->pending_at - w->prev) / w->pending_k);
    w->seen = true;
    w->prev = w->pending_at;
}

static bool gen_piece(void *ctx, const ss_client_reply *message)
{
    gen_watch *w = ctx;
    uint64_t now = ss_now_ns();
    gen_count_piece(w);
    ss_client_tensor tokens;
    bool has = ss_client_reply_find(message, 0, "tokens", &tokens);
    w->pending_at = now;
    w->pending_k = has ? tokens.nbytes / sizeof(int64_t) : 0;
    return true;
}

static bool gen_once(bench_thread *t, char *err, size_t cap)
{
    gen_watch w = {t, ss_now_ns(), 0, false};
    ss_client_reply *reply = NULL;
    ss_client_error *e = ss_client_infer_stream(t->cfg->client, t->cfg->req, gen_piece, &w, &reply);
    ss_client_tensor tokens;
    bool ok = !e;
    if (e)
        snprintf(err, cap, "%s", e->msg);
    else if (ss_client_reply_error(reply, 0, NULL))
        ok = false, snprintf(err, cap, "%s", ss_client_reply_error(reply, 0, NULL));
    else if (ss_client_reply_find(reply, 0, "tokens", &tokens))
        t->tokens += (long)(tokens.nbytes / sizeof(int64_t));
    ss_client_error_free(e);
    ss_client_reply_free(reply);
    return ok;
}

static int rest_connect(const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) return false;
        p += w, n -= (size_t)w;
    }
    return true;
}

/* GET http://ADDRESS/model/SERVABLE[/version/N]: the body of a 200 answer (malloc'd), or an error
 * with the server's error_msg. Bounded: 10 s per read, 1 MiB of answer. */
static ss_status *http_get_metadata(const char *address, const bench_cfg *c, char **body)
{
    *body = NULL;
    const char *colon = strrchr(address, ':');
    long port = 0;
    if (!colon || !cli_parse_int(colon + 1, 1, 65535, &port))
        return ss_errf(SS_ERR_INVALID, "--metadata-address wants IP:PORT, got '%s'", address);
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(colon - address), address);
    int fd = rest_connect(host, (int)port);
    if (fd < 0)
        return ss_errf(SS_ERR_UNAVAILABLE, "cannot connect to %s for the servable's metadata",
                       address);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[512];
    int n = c->version
                ? snprintf(
                      req, sizeof req,
                      "GET /model/%s/version/%ld HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                      c->servable, c->version, address)
                : snprintf(req, sizeof req,
                           "GET /model/%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                           c->servable, address);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf || n <= 0 || (size_t)n >= sizeof req || !write_all(fd, req, (size_t)n)) {
        free(buf);
        close(fd);
        return ss_errf(SS_ERR_UNAVAILABLE, "cannot ask %s for the servable's metadata", address);
    }
    for (ssize_t r; len < cap && (r = read(fd, buf + len, cap - len)) > 0;)
        len += (size_t)r;
    close(fd);
    buf[len] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    int status = 0;
    if (!sep || sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
        free(buf);
        return ss_errf(SS_ERR_UNAVAILABLE, "%s sent no HTTP answer for the servable's metadata",
                       address);
    }
    if (status != 200) {
        cJSON *j = cJSON_Parse(sep + 4);
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "error_msg");
        ss_status *st =
            ss_errf(SS_ERR_UNAVAILABLE, "metadata of servable %s from %s: HTTP %d: %s", c->servable,
                    address, status, cJSON_IsString(msg) ? msg->valuestring : "no error message");
        cJSON_Delete(j);
        free(buf);
        return st;
    }
    *body = strdup(sep + 4);
    free(buf);
    return *body ? NULL : ss_errf(SS_ERR_NOMEM, "out of memory");
}

/* No --input: one generated input per declared input of the method (see the top comment). */
static ss_status *inputs_from_metadata(bench_cfg *c, const char *address)
{
    char *text;
    ss_status *st = http_get_metadata(address, c, &text);
    if (st) return st;
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *methods = cJSON_GetObjectItemCaseSensitive(root, "methods"), *m, *found = NULL;
    cJSON_ArrayForEach(m, methods)
    {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "name");
        if (cJSON_IsString(name) && !strcmp(name->valuestring, c->method)) found = m;
    }
    if (!found)
        st = ss_errf(SS_ERR_INVALID, "servable %s has no method '%s' (metadata from %s)",
                     c->servable, c->method, address);
    const cJSON *in;
    if (!st) cJSON_ArrayForEach(in, cJSON_GetObjectItemCaseSensitive(found, "inputs"))
        {
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(in, "name");
            const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(in, "dtype");
            const cJSON *shape = cJSON_GetObjectItemCaseSensitive(in, "shape"), *d;
            if (!cJSON_IsString(name) || !cJSON_IsString(dtype) || !cJSON_IsArray(shape) ||
                c->n_inputs == MAX_INPUTS) {
                st = ss_errf(SS_ERR_INVALID,
                             "metadata from %s: an input without name, dtype or shape", address);
                break;
            }
            char spec[512];
            size_t len = (size_t)snprintf(spec, sizeof spec, "%s[", dtype->valuestring);
            cJSON_ArrayForEach(d, shape)
            {
                if (!cJSON_IsNumber(d) || d->valuedouble < 0) {
                    st =
                        ss_errf(SS_ERR_INVALID,
                                "input '%s' has a dynamic dim: give it as --input %s=DTYPE[D0,...]",
                                name->valuestring, name->valuestring);
                    break;
                }
                if (len < sizeof spec)
                    len +=
                        (size_t)snprintf(spec + len, sizeof spec - len, "%s%lld",
                                         d != shape->child ? "," : "", (long long)d->valuedouble);
            }
            if (st) break;
            if (len + 2 > sizeof spec) {
                st = ss_errf(SS_ERR_LIMIT, "input '%s': shape too long", name->valuestring);
                break;
            }
            strcat(spec, "]");
            c->names[c->n_inputs] = strdup(name->valuestring);
            c->files[c->n_inputs] = strdup(spec);
            if (!c->names[c->n_inputs] || !c->files[c->n_inputs]) {
                free(c->names[c->n_inputs]);
                free(c->files[c->n_inputs]);
                st = ss_errf(SS_ERR_NOMEM, "out of memory");
                break;
            }
            c->owned_inputs = true;
            c->n_inputs++;
        }
    if (!st && !c->n_inputs)
        st = ss_errf(SS_ERR_INVALID, "method '%s' declares no inputs", c->method);
    cJSON_Delete(root);
    return st;
}

/* One POST on a keep-alive connection; reads the whole reply (Content-Length). */
static bool rest_once(bench_cfg *c, int *fd, char **buf, size_t *cap, char *err, size_t errcap)
{
    if (*fd < 0 && (*fd = rest_connect(c->rest_host, c->rest_port)) < 0) {
        snprintf(err, errcap, "cannot connect to %s:%d", c->rest_host, c->rest_port);
        return false;
    }
    char head[512];
    int hl =
        snprintf(head, sizeof head,
                 "POST /model/%s%s%ld:%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\n\r\n",
                 c->servable, c->version ? "/version/" : "", c->version, c->method, c->rest_host,
                 c->rest_len);
    if (!c->version)
        hl = snprintf(head, sizeof head,
                      "POST /model/%s:%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      c->servable, c->method, c->rest_host, c->rest_len);
    if (!write_all(*fd, head, (size_t)hl) || !write_all(*fd, c->rest_body, c->rest_len))
        goto broken;
    size_t have = 0, body_at = 0, want = 0;
    for (;;) {
        if (have + 4096 > *cap) {
            size_t nc = (*cap ? *cap * 2 : 65536) + have;
            char *nb = realloc(*buf, nc);
            if (!nb) goto broken;
            *buf = nb, *cap = nc;
        }
        ssize_t r = read(*fd, *buf + have, *cap - have - 1);
        if (r <= 0) goto broken;
        have += (size_t)r;
        (*buf)[have] = 0;
        if (!body_at) {
            char *end = strstr(*buf, "\r\n\r\n");
            if (!end) continue;
            body_at = (size_t)(end + 4 - *buf);
            char *cl = strcasestr(*buf, "content-length:");
            want = cl ? (size_t)strtoull(cl + 15, NULL, 10) : 0;
        }
        if (have >= body_at + want) break;
    }
    if (strncmp(*buf, "HTTP/1.1 200", 12)) {
        snprintf(err, errcap, "HTTP %.3s", *buf + 9);
        return false;
    }
    char *e = strstr(*buf + body_at, "\"error_msg\"");
    if (e) {
        snprintf(err, errcap, "%.200s", e);
        return false;
    }
    return true;
broken:
    snprintf(err, errcap, "connection to %s:%d failed: %s", c->rest_host, c->rest_port,
             strerror(errno));
    if (*fd >= 0) close(*fd);
    *fd = -1;
    return false;
}

/* ------------------------------------------------------------------ levels */

static void *bench_main(void *arg)
{
    bench_thread *t = arg;
    bench_cfg *c = t->cfg;
    int fd = -1;
    char *buf = NULL, err[256];
    size_t cap = 0;
    for (;;) {
        if (t->budget ? atomic_fetch_sub(t->budget, 1) <= 0 : ss_now_ns() >= t->deadline_ns) break;
        uint64_t t0 = ss_now_ns();
        bool ok = c->rest       ? rest_once(c, &fd, &buf, &cap, err, sizeof err)
                  : c->generate ? gen_once(t, err, sizeof err)
                                : grpc_once(c, err, sizeof err);
        uint64_t dt = ss_now_ns() - t0;
        if (!ok) {
            if (!t->failures++) snprintf(t->first_error, sizeof t->first_error, "%s", err);
            continue;
        }
        if (!samples_push(&t->lat, dt)) break;
    }
    if (fd >= 0) close(fd);
    free(buf);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Every thread's samples of one kind (`which` picks them), sorted; NULL when out of memory. */
static uint64_t *gather(const bench_thread *th, int n_threads,
                        samples (*which)(const bench_thread *), size_t *n)
{
    *n = 0;
    for (int i = 0; i < n_threads; i++)
        *n += which(&th[i]).n;
    uint64_t *all = malloc((*n ? *n : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < n_threads && all; i++) {
        samples s = which(&th[i]);
        if (s.n) memcpy(all + k, s.v, s.n * sizeof *all); /* v is NULL when none */
        k += s.n;
    }
    if (all) qsort(all, *n, sizeof *all, cmp_u64);
    return all;
}

static samples lat_of(const bench_thread *t)
{
    return t->lat;
}
static samples ttft_of(const bench_thread *t)
{
    return t->ttft;
}
static samples itl_of(const bench_thread *t)
{
    return t->itl;
}

static double pct_ms(const uint64_t *sorted, size_t n, double p)
{
    return sorted && n ? sorted[(size_t)((double)(n - 1) * p)] / 1e6 : 0.0;
}

/* --generate's line of a level: tokens/s, time to first token and inter-token latency. */
static void report_generate(const bench_cfg *c, const bench_thread *th, int started, int conc,
                            size_t requests, long fails, double secs)
{
    size_t n_ttft, n_itl;
    uint64_t *ttft = gather(th, started, ttft_of, &n_ttft),
             *itl = gather(th, started, itl_of, &n_itl);
    long tokens = 0;
    for (int i = 0; i < started; i++)
        tokens += th[i].tokens;
    if (c->json)
        printf("{\"concurrency\":%d,\"requests\":%zu,\"failures\":%ld,\"seconds\":%.3f,"
               "\"tokens\":%ld,\"tokens_per_s\":%.1f,\"ttft_p50_ms\":%.2f,\"ttft_p99_ms\":%.2f,"
               "\"itl_p50_ms\":%.2f,\"itl_p99_ms\":%.2f}\n",
               conc, requests, fails, secs, tokens, tokens / secs, pct_ms(ttft, n_ttft, 0.5),
               pct_ms(ttft, n_ttft, 0.99), pct_ms(itl, n_itl, 0.5), pct_ms(itl, n_itl, 0.99));
    else
        printf("%11d %9zu %8ld %8ld %10.1f %12.2f %12.2f %11.2f %11.2f\n", conc, requests, fails,
               tokens, tokens / secs, pct_ms(ttft, n_ttft, 0.5), pct_ms(ttft, n_ttft, 0.99),
               pct_ms(itl, n_itl, 0.5), pct_ms(itl, n_itl, 0.99));
    free(ttft);
    free(itl);
}

/* Returns false when no request of the level succeeded. */
static bool run_level(bench_cfg *c, int conc, bool print)
{
    bench_thread *th = calloc((size_t)conc, sizeof *th);
    pthread_t *tid = calloc((size_t)conc, sizeof *tid);
    atomic_long budget = c->requests;
    if (!th || !tid) {
        free(th);
        free(tid);
        return false;
    }
    uint64_t start = ss_now_ns();
    int started = 0;
    for (int i = 0; i < conc; i++) {
        th[i].cfg = c;
        th[i].budget = c->requests ? &budget : NULL;
        th[i].deadline_ns = start + (uint64_t)(c->duration_s * 1e9);
        int rc = pthread_create(&tid[i], NULL, bench_main, &th[i]);
        if (rc != 0) { /* the ones started finish their share; the run reports fewer clients */
            fprintf(stderr, "shardserve bench: cannot start client thread %d of %d: %s\n", i + 1,
                    conc, strerror(rc));
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    double secs = (double)(ss_now_ns() - start) / 1e9;
    size_t n = 0;
    long fails = 0;
    for (int i = 0; i < started; i++)
        fails += th[i].failures;
    uint64_t *all = gather(th, started, lat_of, &n);
#define PCT(p) (n && all ? all[(size_t)((double)(n - 1) * (p))] / 1e3 : 0.0)
    if (print && c->generate)
        report_generate(c, th, started, conc, n, fails, secs);
    else if (print && c->json)
        printf("{\"protocol\":\"%s\",\"concurrency\":%d,\"requests\":%zu,\"failures\":%ld,"
               "\"seconds\":%.3f,"
               "\"throughput\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f}\n",
               c->proto_name, conc, n, fails, secs, n / secs, PCT(0.5), PCT(0.9), PCT(0.99));
    else if (print)
        printf("%-5s %11d %9zu %8ld %12.1f %10.1f %10.1f %10.1f\n", c->proto_name, conc, n, fails,
               n / secs, PCT(0.5), PCT(0.9), PCT(0.99));
#undef PCT
    for (int i = 0; i < conc; i++) {
        if (print && th[i].failures) fprintf(stderr, "  first failure: %s\n", th[i].first_error);
        if (th[i].failures) break;
    }
    for (int i = 0; i < conc; i++)
        free(th[i].lat.v), free(th[i].ttft.v), free(th[i].itl.v);
    free(all);
    free(th);
    free(tid);
    return n > 0;
}

/* --shm: the inputs written once into a registered region, the outputs asked for there. */
static ss_client_error *bench_shm(bench_cfg *c, size_t inst)
{
    size_t total = 0;
    for (int i = 0; i < c->n_inputs; i++)
        total += c->inputs[i].nbytes + 64;
    ss_client_error *e = cli_shm_create(&c->shm, "bench", total);
    for (int i = 0; !e && i < c->n_inputs; i++)
        e = cli_shm_input(&c->shm, c->req, inst, c->names[i], &c->inputs[i],
                          client_dtype(c->inputs[i].dtype));
    return e ? e : cli_shm_register(&c->shm, c->client, c->req, inst);
}

static const char bench_usage[] =
    "usage: shardserve bench --address HOST:PORT [--protocol PROTOCOL] --servable NAME --method "
    "NAME\n"
    "                        [--version N] [--input NAME=FILE.npy|NAME=DTYPE[D0,D1,...] ...]\n"
    "                        [--metadata-address HOST:PORT] [--concurrency 1,4,16]\n"
    "                        [--requests N | --duration-s S] [--warmup N] [--json]\n"
    "                        [--generate [--max-tokens N]]\n"
    "--generate: a generate servable's requests streamed (gRPC PredictStream); the table gives\n"
    "tokens/s, time to first token and inter-token latency p50/p99 per concurrency level.\n"
    "Without --input, inputs are generated from the servable's declared inputs, read over REST "
    "from\n"
    "--metadata-address (default: --address with --protocol rest).\n"
    "PROTOCOL: grpc (MindSpore's, the default), rest (MindSpore's), kserve = kserve-grpc,\n"
    "kserve-rest, kserve-binary (the Open Inference Protocol; model SERVABLE.METHOD).\n"
    "--shm [--output NAME ...] [--shm-output-size BYTES]: with a kserve protocol, inputs (and\n"
    "those outputs) in a shared-memory region registered for the run (server on this host).\n";

int cmd_bench(int argc, char **argv)
{
    bench_cfg c = {.duration_s = 5, .warmup = 20, .proto_name = "grpc"};
    int levels[MAX_LEVELS] = {1}, n_levels = 1;
    long v;
    const char *metadata = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(bench_usage, stdout);
            return 0;
        } else if (!strcmp(a, "--address") && has)
            c.address = argv[++i];
        else if (!strcmp(a, "--protocol") && has) {
            const char *p = argv[++i];
            c.client_protocol = strcmp(p, "grpc") ? cli_client_protocol(p) : 0;
            if (strcmp(p, "rest") && (c.client_protocol < 0 || !strcmp(p, "mindspore")))
                return cli_fail("bench", ss_errf(SS_ERR_INVALID,
                                                 "--protocol wants grpc, rest, kserve, "
                                                 "kserve-grpc, kserve-rest or kserve-binary, "
                                                 "got '%s'",
                                                 p));
            c.rest = !strcmp(p, "rest");
            c.proto_name = p;
        } else if (!strcmp(a, "--servable") && has)
            c.servable = argv[++i];
        else if (!strcmp(a, "--method") && has)
            c.method = argv[++i];
        else if (!strcmp(a, "--version") && has) {
            if (!cli_parse_int(argv[++i], 0, 1000000000, &c.version))
                return cli_fail("bench", ss_errf(SS_ERR_INVALID, "bad --version"));
        } else if (!strcmp(a, "--input") && has && c.n_inputs < MAX_INPUTS) {
            if (!cli_split_kv(argv[++i], &c.names[c.n_inputs], &c.files[c.n_inputs]))
                return cli_fail("bench", ss_errf(SS_ERR_INVALID,
                                                 "--input wants NAME=FILE.npy, got '%s'", argv[i]));
            c.n_inputs++;
        } else if (!strcmp(a, "--concurrency") && has) {
            n_levels = 0;
            for (char *tok = strtok(argv[++i], ","); tok && n_levels < MAX_LEVELS;
                 tok = strtok(NULL, ",")) {
                if (!cli_parse_int(tok, 1, 1024, &v))
                    return cli_fail("bench",
                                    ss_errf(SS_ERR_INVALID,
                                            "--concurrency wants numbers 1..1024, got '%s'", tok));
                levels[n_levels++] = (int)v;
            }
        } else if (!strcmp(a, "--requests") && has) {
            if (!cli_parse_int(argv[++i], 1, 100000000, &c.requests))
                return cli_fail("bench", ss_errf(SS_ERR_INVALID, "bad --requests"));
        } else if (!strcmp(a, "--duration-s") && has) {
            if (!cli_parse_int(argv[++i], 1, 86400, &v))
                return cli_fail("bench", ss_errf(SS_ERR_INVALID, "bad --duration-s"));
            c.duration_s = (double)v;
        } else if (!strcmp(a, "--warmup") && has) {
            if (!cli_parse_int(argv[++i], 0, 1000000, &c.warmup))
                return cli_fail("bench", ss_errf(SS_ERR_INVALID, "bad --warmup"));
        } else if (!strcmp(a, "--metadata-address") && has)
            metadata = argv[++i];
        else if (!strcmp(a, "--json"))
            c.json = true;
        else if (!strcmp(a, "--generate"))
            c.generate = true;
        else if (!strcmp(a, "--max-tokens") && has) {
            if (!cli_parse_int(argv[++i], 1, 1000000, &c.max_tokens))
                return cli_fail("bench", ss_errf(SS_ERR_INVALID, "bad --max-tokens"));
        } else if (!strcmp(a, "--shm"))
            c.use_shm = true;
        else if (!strcmp(a, "--output") && has && c.shm.n_outputs < 64)
            c.shm.outputs[c.shm.n_outputs++] = argv[++i];
        else if (!strcmp(a, "--shm-output-size") && has) {
            if (!cli_parse_int(argv[++i], 1, 1L << 40, &v))
                return cli_fail("bench", ss_errf(SS_ERR_INVALID, "bad --shm-output-size"));
            c.shm.out_size = (size_t)v;
        } else {
            fprintf(stderr, "shardserve bench: unexpected argument '%s'\n%s", a, bench_usage);
            return 2;
        }
    }
    if (!c.address || !c.servable || !c.method || !n_levels) {
        fputs(bench_usage, stderr);
        return 2;
    }
    if (c.generate && (c.rest || c.client_protocol))
        return cli_fail("bench", ss_errf(SS_ERR_INVALID,
                                         "--generate streams over gRPC (--protocol grpc) only"));
    if ((c.use_shm || c.shm.n_outputs) &&
        (!c.use_shm || c.rest || c.client_protocol == SS_CLIENT_MINDSPORE))
        return cli_fail("bench", ss_errf(SS_ERR_INVALID, "--shm (and --output) need a kserve "
                                                         "--protocol; --output needs --shm"));
    int rc = 0;
    if (!c.n_inputs) {
        if (!metadata && !c.rest)
            return cli_fail("bench",
                            ss_errf(SS_ERR_INVALID,
                                    "no --input: give --input NAME=FILE.npy|NAME=DTYPE[D0,...], or "
                                    "--metadata-address HOST:PORT (the server's REST address) to "
                                    "generate the servable's declared inputs"));
        ss_status *st = inputs_from_metadata(&c, metadata ? metadata : c.address);
        if (st) rc = cli_fail("bench", st);
    }
    for (int i = 0; i < c.n_inputs && !rc; i++) {
        bool generated;
        ss_status *st = generate_input(c.files[i], &c.inputs[i], &generated);
        if (!st && !generated) st = ss_npy_read(c.files[i], &c.inputs[i]);
        if (st) rc = cli_fail("bench", st);
    }
    if (!rc && c.rest) {
        const char *colon = strrchr(c.address, ':');
        if (!colon || !cli_parse_int(colon + 1, 1, 65535, &v))
            rc =
                cli_fail("bench", ss_errf(SS_ERR_INVALID,
                                          "--address for REST wants IP:PORT, got '%s'", c.address));
        else {
            snprintf(c.rest_host, sizeof c.rest_host, "%.*s", (int)(colon - c.address), c.address);
            c.rest_port = (int)v;
            ss_status *st = build_rest_body(&c);
            if (st) rc = cli_fail("bench", st);
        }
    } else if (!rc) {
        c.req = ss_client_request_new(c.servable, c.method, (uint64_t)c.version);
        size_t inst = c.req ? ss_client_request_add_instance(c.req) : (size_t)-1;
        ss_client_options o = {.address = c.address,
                               .protocol = (ss_client_protocol)c.client_protocol};
        ss_client_error *e = inst == (size_t)-1 ? NULL : ss_client_connect(&o, &c.client);
        if (!e && c.use_shm) e = bench_shm(&c, inst);
        for (int i = 0; !e && !c.use_shm && i < c.n_inputs; i++)
            e = ss_client_request_set_tensor(
                c.req, inst, c.names[i], client_dtype(c.inputs[i].dtype), c.inputs[i].dims,
                c.inputs[i].ndim, c.inputs[i].data, c.inputs[i].nbytes);
        if (!e && c.max_tokens)
            e = ss_client_request_set_tensor(c.req, inst, "max_tokens", SS_CLIENT_INT64, NULL, 0,
                                             &(int64_t){c.max_tokens}, sizeof(int64_t));
        if (e) {
            fprintf(stderr, "shardserve bench: %s\n", e->msg);
            ss_client_error_free(e);
            rc = 1;
        }
    }
    if (!rc) {
        long req = c.requests;
        c.requests = c.warmup; /* warm connections and caches, not measured */
        if (c.warmup) run_level(&c, levels[0], false);
        c.requests = req;
        if (!c.json && c.generate)
            printf("%11s %9s %8s %8s %10s %12s %12s %11s %11s\n", "concurrency", "requests",
                   "failed", "tokens", "tokens/s", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms",
                   "ITL p99 ms");
        else if (!c.json)
            printf("%-5s %11s %9s %8s %12s %10s %10s %10s\n", "proto", "concurrency", "requests",
                   "failed", "req/s", "p50 us", "p90 us", "p99 us");
        for (int l = 0; l < n_levels && !rc; l++)
            if (!run_level(&c, levels[l], true))
                rc = cli_fail("bench", ss_errf(SS_ERR_UNAVAILABLE,
                                               "no request to %s succeeded at concurrency %d "
                                               "(first failure above)",
                                               c.address, levels[l]));
    }
    if (c.use_shm) cli_shm_cleanup(&c.shm, "bench");
    ss_client_close(c.client);
    ss_client_request_free(c.req);
    free(c.rest_body);
    for (int i = 0; i < c.n_inputs; i++) {
        ss_tensor_free(&c.inputs[i]);
        if (c.owned_inputs) free(c.names[i]), free(c.files[i]);
    }
    return rc;
}
