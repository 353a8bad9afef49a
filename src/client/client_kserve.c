/*
 * client_kserve: ss_client_infer over the Open Inference Protocol (KServe v2) — gRPC ModelInfer
 * with raw tensor contents, or REST with JSON tensors or the binary tensor extension (see
 * client.h for the mapping of requests onto models). Each instance is one KServe request; the
 * outputs are gathered into a MindSpore PredictReply (packed once, unpacked by client.c), so a
 * reply reads the same whatever the protocol.
 *
 * Inputs and outputs may lie in shared memory (KServe's system shared-memory extension): an item
 * with shm_region travels as region, offset and byte_size parameters instead of bytes, and a
 * requested output names the region the server writes it into. ss_client_shm_* create the
 * client's POSIX object and register it over either transport.
 *
 * REST is a small HTTP/1.1 client (keep-alive connections pooled per client, Content-Length
 * bodies as libmicrohttpd and Triton send) with a small JSON reader of its own: the library
 * links only gRPC core and protobuf-c.
 */
#define _GNU_SOURCE /* strcasestr, strndup */
#include "client_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <grpc/slice.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include "grpc_service.pb-c.h"
#include "ms_service.pb-c.h"

#define INFER_METHOD "/inference.GRPCInferenceService/ModelInfer"
#define SHM_METHOD "/inference.GRPCInferenceService/SystemSharedMemory"
#define MAX_DIMS 32
#define MAX_OUTPUTS 64
#define POOL_MAX 64

/* ------------------------------------------------------------------ datatypes */

static const struct {
    const char *name;
    ss_client_dtype dtype;
} ks_names[] = {
    {"BOOL", SS_CLIENT_BOOL},     {"INT8", SS_CLIENT_INT8},     {"UINT8", SS_CLIENT_UINT8},
    {"INT16", SS_CLIENT_INT16},   {"UINT16", SS_CLIENT_UINT16}, {"INT32", SS_CLIENT_INT32},
    {"UINT32", SS_CLIENT_UINT32}, {"INT64", SS_CLIENT_INT64},   {"UINT64", SS_CLIENT_UINT64},
    {"FP16", SS_CLIENT_FLOAT16},  {"FP32", SS_CLIENT_FLOAT32},  {"FP64", SS_CLIENT_FLOAT64},
    {"BYTES", SS_CLIENT_BYTES},   {"BYTES", SS_CLIENT_STRING},
};

static const char *ks_name(ss_client_dtype dt)
{
    for (size_t i = 0; i < sizeof ks_names / sizeof *ks_names; i++)
        if (ks_names[i].dtype == dt) return ks_names[i].name;
    return NULL;
}

static ss_client_dtype ks_dtype(const char *name)
{
    for (size_t i = 0; name && i < sizeof ks_names / sizeof *ks_names; i++)
        if (!strcmp(ks_names[i].name, name)) return ks_names[i].dtype;
    return SS_CLIENT_UNKNOWN;
}

static bool is_bytes(ss_client_dtype dt)
{
    return dt == SS_CLIENT_BYTES || dt == SS_CLIENT_STRING;
}

/* ------------------------------------------------------------------ outputs -> PredictReply */

/* One output as received; data points into the answer (or into `owned`). */
typedef struct {
    char name[256];
    ss_client_dtype dtype;
    int ndim;
    int64_t dims[MAX_DIMS];
    const uint8_t *data;
    size_t nbytes;
    uint8_t *owned;
} ks_output;

typedef struct {
    ks_output out[MAX_OUTPUTS];
    size_t n;
} ks_outputs;

static void outputs_clear(ks_outputs *o)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->out[i].owned);
    o->n = 0;
}

/* BYTES data (4-byte little-endian length, bytes; per element) as protobuf bytes entries. */
static ss_client_error *split_bytes(const ks_output *o, ProtobufCBinaryData **out, size_t *n)
{
    size_t count = 0, off = 0;
    while (off + 4 <= o->nbytes) {
        uint32_t len = (uint32_t)o->data[off] | (uint32_t)o->data[off + 1] << 8 |
                       (uint32_t)o->data[off + 2] << 16 | (uint32_t)o->data[off + 3] << 24;
        if (len > o->nbytes - off - 4) break;
        off += 4 + len;
        count++;
    }
    if (off != o->nbytes)
        return cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "output '%s': malformed BYTES data", o->name);
    *out = calloc(count ? count : 1, sizeof **out);
    if (!*out) return cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    off = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t len = (uint32_t)o->data[off] | (uint32_t)o->data[off + 1] << 8 |
                       (uint32_t)o->data[off + 2] << 16 | (uint32_t)o->data[off + 3] << 24;
        (*out)[i].data = (uint8_t *)o->data + off + 4;
        (*out)[i].len = len;
        off += 4 + len;
    }
    *n = count;
    return NULL;
}

/* Pack every instance's outputs into one PredictReply and hand it to client.c. */
static ss_client_error *build_reply(ks_outputs *per, size_t count, ss_client_reply **out)
{
    typedef Mindspore__Serving__Proto__Instance inst_t;
    typedef Mindspore__Serving__Proto__Instance__ItemsEntry item_t;
    typedef Mindspore__Serving__Proto__Tensor tensor_t;
    typedef Mindspore__Serving__Proto__TensorShape shape_t;
    size_t total = 0;
    for (size_t i = 0; i < count; i++)
        total += per[i].n;
    inst_t *insts = calloc(count + 1, sizeof *insts);
    inst_t **iptr = calloc(count + 1, sizeof *iptr);
    item_t *items = calloc(total + 1, sizeof *items);
    item_t **tptr = calloc(total + 1, sizeof *tptr);
    tensor_t *tensors = calloc(total + 1, sizeof *tensors);
    shape_t *shapes = calloc(total + 1, sizeof *shapes);
    ProtobufCBinaryData **strings = calloc(total + 1, sizeof *strings);
    ss_client_error *err = NULL;
    if (!insts || !iptr || !items || !tptr || !tensors || !shapes || !strings)
        err = cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    size_t n = 0;
    for (size_t i = 0; !err && i < count; i++) {
        mindspore__serving__proto__instance__init(&insts[i]);
        iptr[i] = &insts[i];
        insts[i].items = &tptr[n];
        insts[i].n_items = per[i].n;
        for (size_t k = 0; !err && k < per[i].n; k++, n++) {
            ks_output *o = &per[i].out[k];
            mindspore__serving__proto__instance__items_entry__init(&items[n]);
            mindspore__serving__proto__tensor__init(&tensors[n]);
            mindspore__serving__proto__tensor_shape__init(&shapes[n]);
            items[n].key = o->name;
            items[n].value = &tensors[n];
            tptr[n] = &items[n];
            tensors[n].shape = &shapes[n];
            tensors[n].dtype = (Mindspore__Serving__Proto__DataType)o->dtype;
            shapes[n].n_dims = (size_t)o->ndim;
            shapes[n].dims = o->dims;
            if (is_bytes(o->dtype)) {
                err = split_bytes(o, &strings[n], &tensors[n].n_bytes_val);
                tensors[n].bytes_val = strings[n];
            } else {
                tensors[n].tensor_data_case = MINDSPORE__SERVING__PROTO__TENSOR__TENSOR_DATA_DATA;
                tensors[n].data.data = (uint8_t *)o->data;
                tensors[n].data.len = o->nbytes;
            }
        }
    }
    Mindspore__Serving__Proto__PredictReply pb = MINDSPORE__SERVING__PROTO__PREDICT_REPLY__INIT;
    pb.instances = iptr;
    pb.n_instances = count;
    uint8_t *buf = NULL;
    size_t len = err ? 0 : mindspore__serving__proto__predict_reply__get_packed_size(&pb);
    if (!err && !(buf = malloc(len ? len : 1)))
        err = cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    if (!err) {
        mindspore__serving__proto__predict_reply__pack(&pb, buf);
        err = cl_reply_unpack(buf, len, out);
    }
    free(buf);
    for (size_t i = 0; strings && i < total; i++)
        free(strings[i]);
    free(strings);
    free(insts);
    free(iptr);
    free(items);
    free(tptr);
    free(tensors);
    free(shapes);
    return err;
}

/* ------------------------------------------------------------------ model and inputs */

static void model_name(const ss_client_request *req, char *model, size_t cap, char *version,
                       size_t vcap)
{
    snprintf(model, cap, "%s.%s", req->servable, req->method);
    version[0] = 0;
    if (req->version) snprintf(version, vcap, "%llu", (unsigned long long)req->version);
}

/* An input's bytes as KServe sends them (BYTES: one length-prefixed element; malloc'd). */
static uint8_t *input_bytes(const req_item *it, size_t *len)
{
    if (!is_bytes(it->dtype)) {
        *len = it->nbytes;
        uint8_t *b = malloc(it->nbytes ? it->nbytes : 1);
        if (b && it->nbytes) memcpy(b, it->data, it->nbytes);
        return b;
    }
    *len = it->nbytes + 4;
    uint8_t *b = malloc(*len);
    if (!b) return NULL;
    uint32_t n = (uint32_t)it->nbytes;
    b[0] = (uint8_t)n, b[1] = (uint8_t)(n >> 8), b[2] = (uint8_t)(n >> 16),
    b[3] = (uint8_t)(n >> 24);
    if (it->nbytes) memcpy(b + 4, it->data, it->nbytes);
    return b;
}

static ss_client_error *check_inputs(const req_instance *in)
{
    for (size_t k = 0; k < in->count; k++)
        if (!ks_name(in->items[k].dtype))
            return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "input '%s': no KServe datatype for %s",
                          in->items[k].name, ss_client_dtype_name(in->items[k].dtype));
    return NULL;
}

/* ------------------------------------------------------------------ gRPC */

typedef Inference__ModelInferRequest__InferInputTensor ks_input_msg;
typedef Inference__ModelInferRequest__InferRequestedOutputTensor ks_output_msg;
typedef Inference__ModelInferRequest__InferInputTensor__ParametersEntry ks_in_param;
typedef Inference__ModelInferRequest__InferRequestedOutputTensor__ParametersEntry ks_out_param;

/* A tensor's shared-memory parameters: region, byte_size and (when not 0) offset. */
typedef struct {
    Inference__InferParameter values[3];
    size_t n;
    ks_in_param in[3];
    ks_out_param out[3];
    void *ptrs[3];
} shm_params;

static const char *const shm_keys[] = {"shared_memory_region", "shared_memory_byte_size",
                                       "shared_memory_offset"};

static void shm_values(shm_params *p, const char *region, uint64_t offset, uint64_t size)
{
    for (int k = 0; k < 3; k++) {
        inference__infer_parameter__init(&p->values[k]);
        p->values[k].parameter_choice_case =
            INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
    }
    p->values[0].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
    p->values[0].string_param = (char *)region;
    p->values[1].int64_param = (int64_t)size;
    p->values[2].int64_param = (int64_t)offset;
    p->n = offset ? 3 : 2;
}

static void shm_input_params(ks_input_msg *m, shm_params *p, const req_item *it)
{
    shm_values(p, it->shm_region, it->shm_offset, it->nbytes);
    for (size_t k = 0; k < p->n; k++) {
        inference__model_infer_request__infer_input_tensor__parameters_entry__init(&p->in[k]);
        p->in[k].key = (char *)shm_keys[k];
        p->in[k].value = &p->values[k];
        p->ptrs[k] = &p->in[k];
    }
    m->parameters = (ks_in_param **)p->ptrs;
    m->n_parameters = p->n;
}

static void shm_output_params(ks_output_msg *m, shm_params *p, const req_output *o)
{
    shm_values(p, o->shm_region, o->shm_offset, o->shm_size);
    for (size_t k = 0; k < p->n; k++) {
        inference__model_infer_request__infer_requested_output_tensor__parameters_entry__init(
            &p->out[k]);
        p->out[k].key = (char *)shm_keys[k];
        p->out[k].value = &p->values[k];
        p->ptrs[k] = &p->out[k];
    }
    m->parameters = (ks_out_param **)p->ptrs;
    m->n_parameters = p->n;
}

/* The message parts of one instance (freed together). */
typedef struct {
    ks_input_msg *msgs;
    ks_input_msg **ptrs;
    ProtobufCBinaryData *raw;
    ks_output_msg *outs;
    ks_output_msg **out_ptrs;
    shm_params *params; /* one per input, then one per output */
} grpc_parts;

static ss_client_error *grpc_parts_fill(const req_instance *in, grpc_parts *g)
{
    size_t n = in->count, no = in->n_outputs;
    g->msgs = calloc(n + 1, sizeof *g->msgs);
    g->ptrs = calloc(n + 1, sizeof *g->ptrs);
    g->raw = calloc(n + 1, sizeof *g->raw);
    g->outs = calloc(no + 1, sizeof *g->outs);
    g->out_ptrs = calloc(no + 1, sizeof *g->out_ptrs);
    g->params = calloc(n + no + 1, sizeof *g->params);
    if (!g->msgs || !g->ptrs || !g->raw || !g->outs || !g->out_ptrs || !g->params)
        return cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    for (size_t k = 0; k < n; k++) {
        const req_item *it = &in->items[k];
        inference__model_infer_request__infer_input_tensor__init(&g->msgs[k]);
        g->msgs[k].name = it->name;
        g->msgs[k].datatype = (char *)ks_name(it->dtype);
        g->msgs[k].n_shape = (size_t)it->ndim;
        g->msgs[k].shape = it->dims;
        g->ptrs[k] = &g->msgs[k];
        if (it->shm_region) /* its raw entry stays empty */
            shm_input_params(&g->msgs[k], &g->params[k], it);
        else if (!(g->raw[k].data = input_bytes(it, &g->raw[k].len)))
            return cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    }
    for (size_t k = 0; k < no; k++) {
        inference__model_infer_request__infer_requested_output_tensor__init(&g->outs[k]);
        g->outs[k].name = in->outputs[k].name;
        shm_output_params(&g->outs[k], &g->params[n + k], &in->outputs[k]);
        g->out_ptrs[k] = &g->outs[k];
    }
    return NULL;
}

static void grpc_parts_free(grpc_parts *g, size_t n)
{
    for (size_t k = 0; g->raw && k < n; k++)
        free(g->raw[k].data);
    free(g->raw);
    free(g->msgs);
    free(g->ptrs);
    free(g->outs);
    free(g->out_ptrs);
    free(g->params);
}

static ss_client_error *grpc_pack(const ss_client_request *req, const req_instance *in,
                                  uint8_t **buf, size_t *len)
{
    char model[512], version[24];
    model_name(req, model, sizeof model, version, sizeof version);
    grpc_parts g = {0};
    ss_client_error *err = grpc_parts_fill(in, &g);
    Inference__ModelInferRequest r = INFERENCE__MODEL_INFER_REQUEST__INIT;
    r.model_name = model;
    r.model_version = version;
    r.inputs = g.ptrs;
    r.n_inputs = in->count;
    r.raw_input_contents = g.raw;
    r.n_raw_input_contents = in->count;
    r.outputs = g.out_ptrs;
    r.n_outputs = in->n_outputs;
    if (!err) {
        *len = inference__model_infer_request__get_packed_size(&r);
        if (!(*buf = malloc(*len ? *len : 1)))
            err = cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
        else
            inference__model_infer_request__pack(&r, *buf);
    }
    grpc_parts_free(&g, in->count);
    return err;
}

static ss_client_error *grpc_outputs(const Inference__ModelInferResponse *r, ks_outputs *o)
{
    if (r->n_outputs > MAX_OUTPUTS)
        return cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "%zu outputs: at most %d", r->n_outputs,
                      MAX_OUTPUTS);
    if (r->n_raw_output_contents != r->n_outputs)
        return cl_err(SS_CLIENT_ERR_PROTOCOL, 0,
                      "the reply has %zu raw_output_contents for %zu outputs (typed contents are "
                      "not read by this client)",
                      r->n_raw_output_contents, r->n_outputs);
    for (size_t k = 0; k < r->n_outputs; k++) {
        const Inference__ModelInferResponse__InferOutputTensor *t = r->outputs[k];
        ks_output *x = &o->out[o->n++];
        memset(x, 0, sizeof *x);
        snprintf(x->name, sizeof x->name, "%s", t->name);
        x->dtype = ks_dtype(t->datatype);
        if (x->dtype == SS_CLIENT_UNKNOWN || t->n_shape > MAX_DIMS)
            return cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "output '%s': datatype %s, %zu dims", t->name,
                          t->datatype, t->n_shape);
        x->ndim = (int)t->n_shape;
        memcpy(x->dims, t->shape, t->n_shape * sizeof *t->shape);
        x->data = r->raw_output_contents[k].data;
        x->nbytes = r->raw_output_contents[k].len;
    }
    return NULL;
}

static ss_client_error *grpc_instance(ss_client *c, const ss_client_request *req,
                                      const req_instance *in, ks_outputs *o,
                                      Inference__ModelInferResponse **keep)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    ss_client_error *err = grpc_pack(req, in, &buf, &len);
    grpc_slice msg;
    if (!err) err = cl_unary(c, INFER_METHOD, buf, len, &msg);
    if (err) return err;
    *keep = inference__model_infer_response__unpack(NULL, GRPC_SLICE_LENGTH(msg),
                                                    GRPC_SLICE_START_PTR(msg));
    grpc_slice_unref(msg);
    if (!*keep) return cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "cannot parse the ModelInferResponse");
    return grpc_outputs(*keep, o);
}

/* ------------------------------------------------------------------ a small JSON reader */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jv {
    jtype type;
    double num;
    char *str; /* J_STR (NUL-terminated, may hold NULs: slen) or object key storage */
    size_t slen;
    struct jv *kids; /* J_ARR / J_OBJ */
    char **keys;     /* J_OBJ */
    size_t n;
} jv;

typedef struct {
    const char *p, *end;
    int depth;
} jcur;

static void jv_free(jv *v)
{
    for (size_t i = 0; i < v->n; i++) {
        jv_free(&v->kids[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->kids);
    free(v->keys);
    free(v->str);
}

static void skip_ws(jcur *c)
{
    while (c->p < c->end && strchr(" \t\r\n", *c->p) && *c->p)
        c->p++;
}

static bool put_utf8(char *out, size_t *n, unsigned cp)
{
    if (cp < 0x80) {
        out[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*n)++] = (char)(0xc0 | cp >> 6);
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out[(*n)++] = (char)(0xe0 | cp >> 12);
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x110000) {
        out[(*n)++] = (char)(0xf0 | cp >> 18);
        out[(*n)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*n)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        return false;
    }
    return true;
}

static bool hex4(jcur *c, unsigned *cp)
{
    if (c->end - c->p < 4) return false;
    char h[5] = {c->p[0], c->p[1], c->p[2], c->p[3], 0};
    char *e;
    *cp = (unsigned)strtoul(h, &e, 16);
    c->p += 4;
    return e == h + 4;
}

static bool parse_string(jcur *c, char **out, size_t *len)
{
    c->p++; /* the opening quote */
    char *s = malloc((size_t)(c->end - c->p) + 1);
    size_t n = 0;
    while (s && c->p < c->end && *c->p != '"') {
        char ch = *c->p++;
        if (ch != '\\') {
            s[n++] = ch;
            continue;
        }
        if (c->p >= c->end) break;
        char e = *c->p++;
        const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
        const char *at = e ? strchr(from, e) : NULL;
        unsigned cp = 0, lo = 0;
        if (at) {
            s[n++] = to[at - from];
        } else if (e != 'u' || !hex4(c, &cp)) {
            break;
        } else if (cp >= 0xd800 && cp < 0xdc00) { /* a surrogate pair */
            if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u') break;
            c->p += 2;
            if (!hex4(c, &lo) || lo < 0xdc00 || lo >= 0xe000) break;
            if (!put_utf8(s, &n, 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00))) break;
        } else if (!put_utf8(s, &n, cp)) {
            break;
        }
    }
    if (!s || c->p >= c->end || *c->p != '"') {
        free(s);
        return false;
    }
    c->p++;
    s[n] = 0;
    *out = s;
    *len = n;
    return true;
}

static bool parse_value(jcur *c, jv *v);

static bool parse_items(jcur *c, jv *v, bool object)
{
    c->p++;
    skip_ws(c);
    char close = object ? '}' : ']';
    if (c->p < c->end && *c->p == close) {
        c->p++;
        return true;
    }
    for (;;) {
        size_t cap = v->n + 1;
        jv *kids = realloc(v->kids, cap * sizeof *kids);
        if (!kids) return false;
        v->kids = kids;
        if (object) {
            char **keys = realloc(v->keys, cap * sizeof *keys);
            if (!keys) return false;
            v->keys = keys;
            size_t klen;
            skip_ws(c);
            if (c->p >= c->end || *c->p != '"' || !parse_string(c, &v->keys[v->n], &klen))
                return false;
            skip_ws(c);
            if (c->p >= c->end || *c->p++ != ':') {
                free(v->keys[v->n]);
                return false;
            }
        }
        memset(&v->kids[v->n], 0, sizeof *v->kids);
        bool ok = parse_value(c, &v->kids[v->n]);
        v->n++; /* counted even when it failed: jv_free frees what it holds */
        if (!ok) return false;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (c->p < c->end && *c->p == close) {
            c->p++;
            return true;
        }
        return false;
    }
}

static bool parse_value(jcur *c, jv *v)
{
    skip_ws(c);
    if (c->p >= c->end || ++c->depth > 64) return false;
    bool ok = false;
    char ch = *c->p;
    size_t rest = (size_t)(c->end - c->p);
    if (ch == '{' || ch == '[') {
        v->type = ch == '{' ? J_OBJ : J_ARR;
        ok = parse_items(c, v, ch == '{');
    } else if (ch == '"') {
        v->type = J_STR;
        ok = parse_string(c, &v->str, &v->slen);
    } else if (rest >= 4 && !strncmp(c->p, "true", 4)) {
        v->type = J_BOOL, v->num = 1, c->p += 4, ok = true;
    } else if (rest >= 5 && !strncmp(c->p, "false", 5)) {
        v->type = J_BOOL, v->num = 0, c->p += 5, ok = true;
    } else if (rest >= 4 && !strncmp(c->p, "null", 4)) {
        v->type = J_NULL, c->p += 4, ok = true;
    } else {
        char num[64];
        size_t k = 0;
        while (k < sizeof num - 1 && c->p + k < c->end && strchr("+-.eE0123456789", c->p[k]) &&
               c->p[k])
            num[k] = c->p[k], k++;
        num[k] = 0;
        char *e;
        v->type = J_NUM;
        v->num = strtod(num, &e);
        ok = k > 0 && e == num + k;
        c->p += k;
    }
    c->depth--;
    return ok;
}

static const jv *jget(const jv *o, const char *key)
{
    for (size_t i = 0; o && o->type == J_OBJ && i < o->n; i++)
        if (!strcmp(o->keys[i], key)) return &o->kids[i];
    return NULL;
}

/* ------------------------------------------------------------------ REST: reading the answer */

static uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff, man = x & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t h = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = sign | (uint32_t)e << 10 | man >> 13, rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)h;
}

static void collect_leaves(const jv *v, const jv **leaves, size_t cap, size_t *n)
{
    if (v->type != J_ARR) {
        if (*n < cap) leaves[*n] = v;
        (*n)++;
        return;
    }
    for (size_t i = 0; i < v->n; i++)
        collect_leaves(&v->kids[i], leaves, cap, n);
}

/* One JSON number or bool as element i of a numeric buffer. */
static void put_element(ss_client_dtype dt, double d, uint8_t *buf, size_t i)
{
    switch (dt) {
    case SS_CLIENT_BOOL:
        buf[i] = d != 0;
        break;
    case SS_CLIENT_INT8:
        ((int8_t *)buf)[i] = (int8_t)d;
        break;
    case SS_CLIENT_UINT8:
        buf[i] = (uint8_t)d;
        break;
    case SS_CLIENT_INT16:
        ((int16_t *)buf)[i] = (int16_t)d;
        break;
    case SS_CLIENT_UINT16:
        ((uint16_t *)buf)[i] = (uint16_t)d;
        break;
    case SS_CLIENT_INT32:
        ((int32_t *)buf)[i] = (int32_t)d;
        break;
    case SS_CLIENT_UINT32:
        ((uint32_t *)buf)[i] = (uint32_t)d;
        break;
    case SS_CLIENT_INT64:
        ((int64_t *)buf)[i] = (int64_t)d;
        break;
    case SS_CLIENT_UINT64:
        ((uint64_t *)buf)[i] = (uint64_t)d;
        break;
    case SS_CLIENT_FLOAT16:
        ((uint16_t *)buf)[i] = f32_to_f16((float)d);
        break;
    case SS_CLIENT_FLOAT32:
        ((float *)buf)[i] = (float)d;
        break;
    default:
        ((double *)buf)[i] = d;
        break;
    }
}

static ss_client_error *json_data(const jv *data, ks_output *x, size_t numel)
{
    size_t n = 0;
    collect_leaves(data, NULL, 0, &n);
    if (n != numel)
        return cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "output '%s': %zu values for %zu elements",
                      x->name, n, numel);
    const jv **leaves = calloc(n + 1, sizeof *leaves);
    size_t bytes = 0;
    if (leaves) collect_leaves(data, leaves, n, &(size_t){0});
    for (size_t i = 0; leaves && i < n; i++)
        bytes += is_bytes(x->dtype) ? 4 + leaves[i]->slen : ss_client_dtype_size(x->dtype);
    x->owned = leaves ? malloc(bytes ? bytes : 1) : NULL;
    ss_client_error *err = x->owned ? NULL : cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    size_t off = 0;
    for (size_t i = 0; !err && i < n; i++) {
        const jv *v = leaves[i];
        bool want_str = is_bytes(x->dtype);
        if (want_str ? v->type != J_STR : (v->type != J_NUM && v->type != J_BOOL)) {
            err = cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "output '%s': element %zu is not a %s", x->name,
                         i, want_str ? "string" : "number");
        } else if (want_str) {
            uint32_t len = (uint32_t)v->slen;
            memcpy(x->owned + off, &len, 4); /* little-endian hosts */
            memcpy(x->owned + off + 4, v->str, v->slen);
            off += 4 + v->slen;
        } else {
            put_element(x->dtype, v->num, x->owned, i);
        }
    }
    free(leaves);
    x->data = x->owned;
    x->nbytes = bytes;
    return err;
}

/* One output of the answer: JSON data, or the next binary_data_size bytes after the header. */
static ss_client_error *rest_output(const jv *t, const uint8_t *bin, size_t bin_len, size_t *used,
                                    ks_output *x)
{
    const jv *name = jget(t, "name"), *dt = jget(t, "datatype"), *shape = jget(t, "shape");
    if (!name || name->type != J_STR || !dt || dt->type != J_STR || !shape ||
        shape->type != J_ARR || shape->n > MAX_DIMS)
        return cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "an output lacks name, datatype or shape");
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name->str);
    x->dtype = ks_dtype(dt->str);
    if (x->dtype == SS_CLIENT_UNKNOWN)
        return cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "output '%s': datatype %s is not supported",
                      x->name, dt->str);
    size_t numel = 1;
    x->ndim = (int)shape->n;
    for (size_t d = 0; d < shape->n; d++) {
        x->dims[d] = (int64_t)shape->kids[d].num;
        numel *= (size_t)x->dims[d];
    }
    if (jget(jget(t, "parameters"), "shared_memory_region")) return NULL; /* its bytes: there */
    const jv *size = jget(jget(t, "parameters"), "binary_data_size");
    if (!size) {
        const jv *data = jget(t, "data");
        if (!data) return cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "output '%s' has no data", x->name);
        return json_data(data, x, numel);
    }
    if (size->type != J_NUM || size->num < 0 || size->num > (double)(bin_len - *used))
        return cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "output '%s': binary_data_size past the body",
                      x->name);
    x->data = bin + *used;
    x->nbytes = (size_t)size->num;
    *used += x->nbytes;
    return NULL;
}

/* A whole answer: status 200 with outputs, or {"error": ...} (SS_CLIENT_ERR_SERVER). */
static ss_client_error *rest_answer(int status, const uint8_t *body, size_t len, size_t json_len,
                                    ks_outputs *o)
{
    jv root = {0};
    jcur cur = {(const char *)body, (const char *)body + json_len, 0};
    bool parsed = parse_value(&cur, &root);
    ss_client_error *err = NULL;
    const jv *error = jget(&root, "error"), *outs = jget(&root, "outputs");
    if (!parsed)
        err = cl_err(status == 200 ? SS_CLIENT_ERR_PROTOCOL : SS_CLIENT_ERR_SERVER, status,
                     "HTTP %d with a body that is not JSON", status);
    else if (status != 200)
        err = cl_err(SS_CLIENT_ERR_SERVER, status, "%s",
                     error && error->type == J_STR ? error->str : "(no error text)");
    else if (!outs || outs->type != J_ARR || outs->n > MAX_OUTPUTS)
        err = cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "the answer has no outputs array");
    size_t used = 0;
    for (size_t k = 0; !err && k < outs->n; k++) {
        err = rest_output(&outs->kids[k], body + json_len, len - json_len, &used, &o->out[o->n]);
        o->n++;
    }
    jv_free(&root);
    return err;
}

/* ------------------------------------------------------------------ REST: the request */

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} wbuf;

static void w_put(wbuf *b, const void *data, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void w_str(wbuf *b, const char *s)
{
    w_put(b, s, strlen(s));
}

static void w_fmt(wbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void w_fmt(wbuf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) w_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void w_json_string(wbuf *b, const uint8_t *s, size_t n)
{
    w_str(b, "\"");
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            w_fmt(b, "\\%c", s[i]);
        else if (s[i] < 0x20)
            w_fmt(b, "\\u%04x", s[i]);
        else
            w_put(b, &s[i], 1);
    }
    w_str(b, "\"");
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, x;
    if (exp == 0x1f) {
        x = sign | 0x7f800000 | man << 13;
    } else if (exp) {
        x = sign | (exp + 112) << 23 | man << 13;
    } else if (!man) {
        x = sign;
    } else { /* subnormal */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400));
        x = sign | (uint32_t)(112 - e) << 23 | (man & 0x3ff) << 13;
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static void w_element(wbuf *b, ss_client_dtype dt, const uint8_t *p)
{
    switch (dt) {
    case SS_CLIENT_BOOL:
        w_str(b, *p ? "true" : "false");
        break;
    case SS_CLIENT_INT8:
        w_fmt(b, "%d", *(const int8_t *)p);
        break;
    case SS_CLIENT_UINT8:
        w_fmt(b, "%u", *p);
        break;
    case SS_CLIENT_INT16:
        w_fmt(b, "%d", *(const int16_t *)p);
        break;
    case SS_CLIENT_UINT16:
        w_fmt(b, "%u", *(const uint16_t *)p);
        break;
    case SS_CLIENT_INT32:
        w_fmt(b, "%d", *(const int32_t *)p);
        break;
    case SS_CLIENT_UINT32:
        w_fmt(b, "%u", *(const uint32_t *)p);
        break;
    case SS_CLIENT_INT64:
        w_fmt(b, "%lld", (long long)*(const int64_t *)p);
        break;
    case SS_CLIENT_UINT64:
        w_fmt(b, "%llu", (unsigned long long)*(const uint64_t *)p);
        break;
    case SS_CLIENT_FLOAT16:
        w_fmt(b, "%.9g", (double)f16_to_f32(*(const uint16_t *)p));
        break;
    case SS_CLIENT_FLOAT32:
        w_fmt(b, "%.9g", (double)*(const float *)p);
        break;
    default:
        w_fmt(b, "%.17g", *(const double *)p);
        break;
    }
}

/* JSON values of a numeric input (finite only: JSON has no NaN or infinity). */
static ss_client_error *w_data(wbuf *b, const req_item *it)
{
    size_t es = ss_client_dtype_size(it->dtype);
    w_str(b, ",\"data\":[");
    for (size_t off = 0; off < it->nbytes; off += es) {
        if (off) w_str(b, ",");
        if ((it->dtype == SS_CLIENT_FLOAT32 && !isfinite(*(const float *)(it->data + off))) ||
            (it->dtype == SS_CLIENT_FLOAT64 && !isfinite(*(const double *)(it->data + off))))
            return cl_err(SS_CLIENT_ERR_ARGUMENT, 0,
                          "input '%s': NaN or infinity cannot travel as JSON (use the binary "
                          "protocol)",
                          it->name);
        w_element(b, it->dtype, it->data + off);
    }
    w_str(b, "]");
    return NULL;
}

/* ,"parameters":{region, byte_size[, offset]} of a tensor in shared memory. */
static void w_shm(wbuf *b, const char *region, uint64_t offset, uint64_t size)
{
    w_str(b, ",\"parameters\":{\"shared_memory_region\":");
    w_json_string(b, (const uint8_t *)region, strlen(region));
    w_fmt(b, ",\"shared_memory_byte_size\":%llu", (unsigned long long)size);
    if (offset) w_fmt(b, ",\"shared_memory_offset\":%llu", (unsigned long long)offset);
    w_str(b, "}");
}

/* "outputs" asked for in shared memory (none: the server answers every output). */
static void w_outputs(wbuf *b, const req_instance *in)
{
    for (size_t k = 0; k < in->n_outputs; k++) {
        const req_output *o = &in->outputs[k];
        w_str(b, k ? ",{\"name\":" : ",\"outputs\":[{\"name\":");
        w_json_string(b, (const uint8_t *)o->name, strlen(o->name));
        w_shm(b, o->shm_region, o->shm_offset, o->shm_size);
        w_str(b, k + 1 == in->n_outputs ? "}]" : "}");
    }
}

/* The request body (binary: the JSON header, then every input's bytes; *json_len = header). */
static ss_client_error *rest_body(const req_instance *in, bool binary, wbuf *b, size_t *json_len)
{
    ss_client_error *err = NULL;
    w_str(b, "{\"inputs\":[");
    for (size_t k = 0; !err && k < in->count; k++) {
        const req_item *it = &in->items[k];
        w_str(b, k ? ",{\"name\":" : "{\"name\":");
        w_json_string(b, (const uint8_t *)it->name, strlen(it->name));
        w_fmt(b, ",\"datatype\":\"%s\",\"shape\":[", ks_name(it->dtype));
        for (int d = 0; d < it->ndim; d++)
            w_fmt(b, "%s%lld", d ? "," : "", (long long)it->dims[d]);
        w_str(b, "]");
        if (it->shm_region) {
            w_shm(b, it->shm_region, it->shm_offset, it->nbytes);
        } else if (binary) {
            w_fmt(b, ",\"parameters\":{\"binary_data_size\":%zu}",
                  it->nbytes + (is_bytes(it->dtype) ? 4 : 0));
        } else if (is_bytes(it->dtype)) {
            w_str(b, ",\"data\":[");
            w_json_string(b, it->data, it->nbytes);
            w_str(b, "]");
        } else {
            err = w_data(b, it);
        }
        w_str(b, "}");
    }
    w_str(b, "]");
    w_outputs(b, in);
    w_str(b, binary ? ",\"parameters\":{\"binary_data_output\":true}}" : "}");
    *json_len = b->len;
    for (size_t k = 0; binary && !err && k < in->count; k++) {
        if (in->items[k].shm_region) continue;
        size_t len = 0;
        uint8_t *bytes = input_bytes(&in->items[k], &len);
        if (!bytes)
            b->oom = true;
        else
            w_put(b, bytes, len);
        free(bytes);
    }
    if (!err && b->oom) err = cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    return err;
}

/* ------------------------------------------------------------------ REST: HTTP/1.1 */

struct cl_pool {
    pthread_mutex_t mu;
    int fds[POOL_MAX];
    int n;
};

static pthread_mutex_t pool_init_mu = PTHREAD_MUTEX_INITIALIZER;

static cl_pool *pool_get(ss_client *c)
{
    pthread_mutex_lock(&pool_init_mu);
    cl_pool **pp = cl_pool_of(c);
    if (!*pp && (*pp = calloc(1, sizeof **pp))) pthread_mutex_init(&(*pp)->mu, NULL);
    pthread_mutex_unlock(&pool_init_mu);
    return *pp;
}

void cl_pool_free(cl_pool *pool)
{
    if (!pool) return;
    for (int i = 0; i < pool->n; i++)
        close(pool->fds[i]);
    pthread_mutex_destroy(&pool->mu);
    free(pool);
}

static int http_connect(const char *address, int timeout_ms)
{
    const char *colon = strrchr(address, ':');
    if (!colon) return -1;
    char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(colon - address), address);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0) return -1;
    int fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (timeout_ms > 0) {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    return fd;
}

static bool send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0) return false;
        c += w, n -= (size_t)w;
    }
    return true;
}

typedef struct {
    int status;
    char *body; /* malloc'd */
    size_t len, json_len;
    bool keep_alive;
} http_answer;

static long header_value(const char *head, const char *name)
{
    const char *h = strcasestr(head, name);
    return h ? strtol(h + strlen(name), NULL, 10) : -1;
}

/* Read one answer: headers, then a Content-Length body. false on a broken connection. */
static bool http_read(int fd, http_answer *a)
{
    wbuf b = {0};
    char chunk[65536];
    char *end = NULL;
    while (!end) {
        ssize_t r = recv(fd, chunk, sizeof chunk, 0);
        if (r <= 0 || b.len > (1u << 20)) break;
        w_put(&b, chunk, (size_t)r);
        end = b.p ? strstr(b.p, "\r\n\r\n") : NULL;
    }
    if (!end || b.oom || sscanf(b.p, "HTTP/1.%*d %d", &a->status) != 1) {
        free(b.p);
        return false;
    }
    *end = 0;
    long clen = header_value(b.p, "\r\nContent-Length:");
    long hlen = header_value(b.p, "\r\nInference-Header-Content-Length:");
    a->keep_alive = !strcasestr(b.p, "\r\nConnection: close");
    size_t have = b.len - (size_t)(end + 4 - b.p);
    if (clen < 0 || (size_t)clen < have || !(a->body = malloc((size_t)clen + 1))) {
        free(b.p);
        return false;
    }
    memcpy(a->body, end + 4, have);
    free(b.p);
    while (have < (size_t)clen) {
        ssize_t r = recv(fd, a->body + have, (size_t)clen - have, 0);
        if (r <= 0) {
            free(a->body);
            a->body = NULL;
            return false;
        }
        have += (size_t)r;
    }
    a->len = (size_t)clen;
    a->body[a->len] = 0;
    a->json_len = hlen >= 0 && (size_t)hlen <= a->len ? (size_t)hlen : a->len;
    return true;
}

/* Head and body leave in one sendmsg when they can (a small request in two writes can wait a
 * round of delayed ACKs), the rest in order. */
static bool http_try(int fd, const wbuf *head, const wbuf *body, http_answer *a)
{
    struct iovec iov[2] = {{head->p, head->len}, {body->p, body->len}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2};
    ssize_t w = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (w < 0) return false;
    size_t sent = (size_t)w, in_body = sent > head->len ? sent - head->len : 0;
    bool ok = (sent >= head->len || send_all(fd, head->p + sent, head->len - sent)) &&
              send_all(fd, body->p + in_body, body->len - in_body);
    return ok && http_read(fd, a);
}

/* POST, on a pooled connection when one is idle (retried once on a fresh one if the server
 * closed it meanwhile). */
static ss_client_error *http_request(ss_client *c, const char *method, const char *path,
                                     const wbuf *body, size_t json_len, bool binary, http_answer *a)
{
    cl_pool *pool = pool_get(c);
    if (!pool) return cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    wbuf head = {0};
    w_str(&head, method);
    w_str(&head, " ");
    w_str(&head, path);
    w_str(&head, " HTTP/1.1\r\nHost: ");
    w_str(&head, cl_address(c));
    w_fmt(&head, "\r\nContent-Type: application/%s\r\n", binary ? "octet-stream" : "json");
    w_fmt(&head, "Content-Length: %zu\r\n", body->len);
    if (binary) w_fmt(&head, "Inference-Header-Content-Length: %zu\r\n", json_len);
    w_str(&head, "\r\n");
    ss_client_error *err = head.oom ? cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory") : NULL;
    for (int attempt = 0; !err && attempt < 2; attempt++) {
        pthread_mutex_lock(&pool->mu);
        int fd = attempt == 0 && pool->n ? pool->fds[--pool->n] : -1;
        pthread_mutex_unlock(&pool->mu);
        bool pooled = fd >= 0;
        if (!pooled) fd = http_connect(cl_address(c), cl_timeout_ms(c));
        if (fd < 0) {
            err = cl_err(SS_CLIENT_ERR_TRANSPORT, 14, "cannot connect to %s: %s", cl_address(c),
                         strerror(errno));
            break;
        }
        memset(a, 0, sizeof *a);
        if (http_try(fd, &head, body, a)) {
            pthread_mutex_lock(&pool->mu);
            bool kept = a->keep_alive && pool->n < POOL_MAX;
            if (kept) pool->fds[pool->n++] = fd;
            pthread_mutex_unlock(&pool->mu);
            if (!kept) close(fd);
            break;
        }
        close(fd);
        if (!pooled || attempt == 1)
            err =
                cl_err(SS_CLIENT_ERR_TRANSPORT, 14, "HTTP exchange with %s failed", cl_address(c));
    }
    free(head.p);
    return err;
}

static ss_client_error *rest_instance(ss_client *c, const ss_client_request *req,
                                      const req_instance *in, ks_outputs *o, http_answer *keep)
{
    bool binary = cl_protocol(c) == SS_CLIENT_KSERVE_BINARY;
    char model[512], version[24], path[700];
    model_name(req, model, sizeof model, version, sizeof version);
    snprintf(path, sizeof path, "/v2/models/%s%s%s/infer", model, version[0] ? "/versions/" : "",
             version);
    wbuf body = {0};
    size_t json_len = 0;
    ss_client_error *err = rest_body(in, binary, &body, &json_len);
    if (!err) err = http_request(c, "POST", path, &body, json_len, binary, keep);
    free(body.p);
    if (!err) err = rest_answer(keep->status, (uint8_t *)keep->body, keep->len, keep->json_len, o);
    return err;
}

/* ------------------------------------------------------------------ the call */

ss_client_error *cl_kserve_infer(ss_client *c, const ss_client_request *req, ss_client_reply **out)
{
    *out = NULL;
    ks_outputs *per = calloc(req->count + 1, sizeof *per);
    Inference__ModelInferResponse **grpc_answers = calloc(req->count + 1, sizeof *grpc_answers);
    http_answer *rest_answers = calloc(req->count + 1, sizeof *rest_answers);
    ss_client_error *err = per && grpc_answers && rest_answers
                               ? NULL
                               : cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    for (size_t i = 0; !err && i < req->count; i++) {
        err = check_inputs(&req->instances[i]);
        if (err) break;
        if (cl_protocol(c) == SS_CLIENT_KSERVE_GRPC)
            err = grpc_instance(c, req, &req->instances[i], &per[i], &grpc_answers[i]);
        else
            err = rest_instance(c, req, &req->instances[i], &per[i], &rest_answers[i]);
    }
    if (!err) err = build_reply(per, req->count, out);
    for (size_t i = 0; per && i < req->count; i++) {
        outputs_clear(&per[i]);
        if (grpc_answers && grpc_answers[i])
            inference__model_infer_response__free_unpacked(grpc_answers[i], NULL);
        if (rest_answers) free(rest_answers[i].body);
    }
    free(per);
    free(grpc_answers);
    free(rest_answers);
    return err;
}

/* ------------------------------------------------------------------ shared memory: requests */

void cl_free_outputs(req_instance *in)
{
    for (size_t k = 0; k < in->n_outputs; k++) {
        free(in->outputs[k].name);
        free(in->outputs[k].shm_region);
    }
    free(in->outputs);
    in->outputs = NULL;
    in->n_outputs = 0;
}

bool cl_request_uses_shm(const ss_client_request *req)
{
    for (size_t i = 0; req && i < req->count; i++) {
        if (req->instances[i].n_outputs) return true;
        for (size_t k = 0; k < req->instances[i].count; k++)
            if (req->instances[i].items[k].shm_region) return true;
    }
    return false;
}

/* Whether a region name travels in a URL path as it is. */
static bool region_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    return n > 0 && n < 128 &&
           strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                        "0123456789_.-") == n;
}

static ss_client_error *check_region(const char *tensor, const char *region)
{
    if (region_name_ok(region)) return NULL;
    return cl_err(SS_CLIENT_ERR_ARGUMENT, 0,
                  "%s: shared memory region name '%.128s' must be 1 to 127 of [A-Za-z0-9_.-]",
                  tensor ? tensor : "?", region ? region : "");
}

/* dims' element count, or false (negative dims, overflow). */
static bool count_elements(const int64_t *dims, int ndim, uint64_t *numel)
{
    *numel = 1;
    if (ndim < 0 || ndim > MAX_DIMS || (ndim && !dims)) return false;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0 || (dims[i] && *numel > UINT64_MAX / 16 / (uint64_t)dims[i])) return false;
        *numel *= (uint64_t)dims[i];
    }
    return true;
}

ss_client_error *ss_client_request_set_shm_input(ss_client_request *req, size_t instance,
                                                 const char *name, ss_client_dtype dtype,
                                                 const int64_t *dims, int ndim, const char *region,
                                                 uint64_t offset, uint64_t byte_size)
{
    if (!req || instance >= req->count || !name)
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "no instance %zu in this request", instance);
    ss_client_error *err = check_region(name, region);
    if (err) return err;
    uint64_t numel = 0;
    if (!ss_client_dtype_size(dtype) || !ks_name(dtype) || !count_elements(dims, ndim, &numel))
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "input %s: a numeric dtype and valid dims", name);
    if (numel * ss_client_dtype_size(dtype) != byte_size)
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0,
                      "input %s: byte_size %llu, its shape and dtype need %llu", name,
                      (unsigned long long)byte_size,
                      (unsigned long long)(numel * ss_client_dtype_size(dtype)));
    req_item it = {.dtype = dtype, .ndim = ndim, .nbytes = (size_t)byte_size, .shm_offset = offset};
    it.name = strdup(name);
    it.shm_region = strdup(region);
    it.dims = malloc((size_t)(ndim ? ndim : 1) * sizeof *dims);
    if (!it.name || !it.shm_region || !it.dims) {
        cl_free_item(&it);
        return cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    }
    if (ndim) memcpy(it.dims, dims, (size_t)ndim * sizeof *dims);
    return cl_insert_item(req, instance, &it);
}

ss_client_error *ss_client_request_set_shm_output(ss_client_request *req, size_t instance,
                                                  const char *name, const char *region,
                                                  uint64_t offset, uint64_t byte_size)
{
    if (!req || instance >= req->count || !name)
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "no instance %zu in this request", instance);
    ss_client_error *err = check_region(name, region);
    if (err) return err;
    req_instance *in = &req->instances[instance];
    size_t k = 0;
    while (k < in->n_outputs && strcmp(in->outputs[k].name, name) != 0)
        k++;
    if (k == in->n_outputs) {
        req_output *grown = realloc(in->outputs, (in->n_outputs + 1) * sizeof *grown);
        if (!grown) return cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
        in->outputs = grown;
        memset(&grown[k], 0, sizeof *grown);
        if (!(grown[k].name = strdup(name))) return cl_err(SS_CLIENT_ERR_NOMEM, 0, "oom");
        in->n_outputs++;
    }
    char *copy = strdup(region);
    if (!copy) return cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    free(in->outputs[k].shm_region);
    in->outputs[k].shm_region = copy;
    in->outputs[k].shm_offset = offset;
    in->outputs[k].shm_size = byte_size;
    return NULL;
}

/* ------------------------------------------------------------------ shared memory: objects */

struct ss_client_shm {
    char key[256];
    void *data;
    size_t size;
};

ss_client_error *ss_client_shm_create(const char *key, size_t byte_size, ss_client_shm **out)
{
    *out = NULL;
    if (!key || key[0] != '/' || strchr(key + 1, '/') || strlen(key) < 2 || strlen(key) > 255)
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "shared memory key '%.200s' must be '/name'",
                      key ? key : "");
    if (!byte_size) return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "shared memory of 0 bytes");
    ss_client_shm *shm = calloc(1, sizeof *shm);
    if (!shm) return cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    snprintf(shm->key, sizeof shm->key, "%s", key);
    shm->size = byte_size;
    int fd = shm_open(key, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ss_client_error *err = NULL;
    if (fd < 0) {
        err = cl_err(SS_CLIENT_ERR_ARGUMENT, errno, "cannot create shared memory '%s': %s", key,
                     strerror(errno));
    } else if (ftruncate(fd, (off_t)byte_size) != 0 ||
               (shm->data = mmap(NULL, byte_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) ==
                   MAP_FAILED) {
        err = cl_err(SS_CLIENT_ERR_NOMEM, errno, "cannot size or map %zu bytes of '%s': %s",
                     byte_size, key, strerror(errno));
        shm_unlink(key);
    }
    if (fd >= 0) close(fd);
    if (err) {
        free(shm);
        return err;
    }
    *out = shm;
    return NULL;
}

void *ss_client_shm_data(const ss_client_shm *shm)
{
    return shm ? shm->data : NULL;
}

size_t ss_client_shm_size(const ss_client_shm *shm)
{
    return shm ? shm->size : 0;
}

const char *ss_client_shm_key(const ss_client_shm *shm)
{
    return shm ? shm->key : NULL;
}

void ss_client_shm_destroy(ss_client_shm *shm)
{
    if (!shm) return;
    munmap(shm->data, shm->size);
    shm_unlink(shm->key);
    free(shm);
}

/* ------------------------------------------------------------------ shared memory: the calls */

/* One call of the extension over REST: the answer's JSON (root) when the status is 200, else
 * SS_CLIENT_ERR_SERVER with the status and the server's text. */
static ss_client_error *shm_rest(ss_client *c, const char *method, const char *path,
                                 const wbuf *body, jv *root)
{
    http_answer a = {0};
    ss_client_error *err = http_request(c, method, path, body, body->len, false, &a);
    if (err) return err;
    jcur cur = {a.body, a.body + a.len, 0};
    bool parsed = a.len == 0 || parse_value(&cur, root);
    const jv *error = jget(root, "error");
    if (a.status != 200)
        err = cl_err(SS_CLIENT_ERR_SERVER, a.status, "%s",
                     error && error->type == J_STR ? error->str : "(no error text)");
    else if (!parsed)
        err = cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "%s %s: the answer is not JSON", method, path);
    free(a.body);
    return err;
}

/* One call of the extension over gRPC (SHM_METHOD + rpc); *answer = the reply's bytes. */
static ss_client_error *shm_grpc(ss_client *c, const char *rpc, const ProtobufCMessage *msg,
                                 grpc_slice *answer)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    protobuf_c_message_pack(msg, buf);
    char method[128];
    snprintf(method, sizeof method, "%s%s", SHM_METHOD, rpc);
    return cl_unary(c, method, buf, len, answer);
}

static bool is_grpc(const ss_client *c)
{
    return cl_protocol(c) == SS_CLIENT_KSERVE_GRPC;
}

static ss_client_error *check_kserve(ss_client *c)
{
    if (c && cl_protocol(c) != SS_CLIENT_MINDSPORE) return NULL;
    return cl_err(SS_CLIENT_ERR_ARGUMENT, 0,
                  "shared memory regions are a KServe extension: connect with a KServe protocol");
}

ss_client_error *ss_client_shm_register(ss_client *c, const char *name, const char *key,
                                        uint64_t offset, uint64_t byte_size)
{
    ss_client_error *err = check_kserve(c);
    if (!err) err = check_region("register", name);
    if (err) return err;
    if (is_grpc(c)) {
        Inference__SystemSharedMemoryRegisterRequest r =
            INFERENCE__SYSTEM_SHARED_MEMORY_REGISTER_REQUEST__INIT;
        r.name = (char *)name;
        r.key = (char *)(key ? key : "");
        r.offset = offset;
        r.byte_size = byte_size;
        grpc_slice answer;
        err = shm_grpc(c, "Register", &r.base, &answer);
        if (!err) grpc_slice_unref(answer);
        return err;
    }
    char path[256];
    snprintf(path, sizeof path, "/v2/systemsharedmemory/region/%s/register", name);
    wbuf body = {0};
    w_str(&body, "{\"key\":");
    w_json_string(&body, (const uint8_t *)(key ? key : ""), key ? strlen(key) : 0);
    w_fmt(&body, ",\"offset\":%llu,", (unsigned long long)offset);
    w_fmt(&body, "\"byte_size\":%llu}", (unsigned long long)byte_size);
    jv root = {0};
    err = body.oom ? cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory")
                   : shm_rest(c, "POST", path, &body, &root);
    jv_free(&root);
    free(body.p);
    return err;
}

ss_client_error *ss_client_shm_unregister(ss_client *c, const char *name)
{
    bool all = !name || !name[0];
    ss_client_error *err = check_kserve(c);
    if (!err && !all) err = check_region("unregister", name);
    if (err) return err;
    if (is_grpc(c)) {
        Inference__SystemSharedMemoryUnregisterRequest r =
            INFERENCE__SYSTEM_SHARED_MEMORY_UNREGISTER_REQUEST__INIT;
        r.name = (char *)(all ? "" : name);
        grpc_slice answer;
        err = shm_grpc(c, "Unregister", &r.base, &answer);
        if (!err) grpc_slice_unref(answer);
        return err;
    }
    char path[256];
    snprintf(path, sizeof path, "/v2/systemsharedmemory%s%s/unregister", all ? "" : "/region/",
             all ? "" : name);
    wbuf body = {0};
    jv root = {0};
    err = shm_rest(c, "POST", path, &body, &root);
    jv_free(&root);
    return err;
}

/* Status over gRPC: the region's byte_size when the map holds it. */
static ss_client_error *status_grpc(ss_client *c, const char *name, bool *registered,
                                    uint64_t *byte_size)
{
    Inference__SystemSharedMemoryStatusRequest r =
        INFERENCE__SYSTEM_SHARED_MEMORY_STATUS_REQUEST__INIT;
    r.name = (char *)name;
    grpc_slice answer;
    ss_client_error *err = shm_grpc(c, "Status", &r.base, &answer);
    if (err && err->kind == SS_CLIENT_ERR_TRANSPORT && err->code == 5) { /* NOT_FOUND */
        ss_client_error_free(err);
        return NULL;
    }
    if (err) return err;
    Inference__SystemSharedMemoryStatusResponse *s =
        inference__system_shared_memory_status_response__unpack(NULL, GRPC_SLICE_LENGTH(answer),
                                                                GRPC_SLICE_START_PTR(answer));
    grpc_slice_unref(answer);
    if (!s) return cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "cannot parse SystemSharedMemoryStatus");
    for (size_t i = 0; i < s->n_regions; i++)
        if (s->regions[i]->key && !strcmp(s->regions[i]->key, name) && s->regions[i]->value) {
            *registered = true;
            *byte_size = s->regions[i]->value->byte_size;
        }
    inference__system_shared_memory_status_response__free_unpacked(s, NULL);
    return NULL;
}

ss_client_error *ss_client_shm_status(ss_client *c, const char *name, bool *registered,
                                      uint64_t *byte_size)
{
    uint64_t size_ignored = 0;
    if (!byte_size) byte_size = &size_ignored;
    *registered = false;
    *byte_size = 0;
    ss_client_error *err = check_kserve(c);
    if (!err) err = check_region("status", name);
    if (err) return err;
    if (is_grpc(c)) return status_grpc(c, name, registered, byte_size);
    char path[256];
    snprintf(path, sizeof path, "/v2/systemsharedmemory/region/%s/status", name);
    wbuf body = {0};
    jv root = {0};
    err = shm_rest(c, "GET", path, &body, &root);
    if (err && err->kind == SS_CLIENT_ERR_SERVER && err->code == 404) {
        ss_client_error_free(err);
        err = NULL;
    }
    for (size_t i = 0; !err && root.type == J_ARR && i < root.n; i++) {
        const jv *n = jget(&root.kids[i], "name"), *size = jget(&root.kids[i], "byte_size");
        if (n && n->type == J_STR && !strcmp(n->str, name) && size && size->type == J_NUM) {
            *registered = true;
            *byte_size = (uint64_t)size->num;
        }
    }
    jv_free(&root);
    return err;
}
