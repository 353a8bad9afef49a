/*
 * client: libshardserve-client, MindSpore's Predict RPC from C on the gRPC core API.
 *
 * A request keeps its own copies of names, shapes and payloads; a call packs it once into a
 * PredictRequest and sends it in one batch (send metadata, message, close; receive metadata,
 * message, status). Synchronous calls use a completion queue of their own; async calls share
 * the client's queue, served by one client thread that runs the callbacks. The reply keeps the
 * unpacked PredictReply and hands out views into it, so output bytes are not copied again.
 * This file links only gRPC core and protobuf-c: no server code, no other shardserve module.
 * The Open Inference Protocol's paths live in client_kserve.c.
 */
#include "client_internal.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ms_service.pb-c.h"

#define PREDICT_METHOD "/mindspore.serving.proto.MSService/Predict"

typedef Mindspore__Serving__Proto__PredictRequest pb_request;
typedef Mindspore__Serving__Proto__PredictReply pb_reply;
typedef Mindspore__Serving__Proto__Instance pb_instance;
typedef Mindspore__Serving__Proto__Instance__ItemsEntry pb_item;
typedef Mindspore__Serving__Proto__Tensor pb_tensor;
typedef Mindspore__Serving__Proto__TensorShape pb_shape;

/* ------------------------------------------------------------------ errors and dtypes */

/* Returned when even the error cannot be allocated; never freed. Laid out as ss_client_error. */
static struct {
    ss_client_errkind kind;
    int64_t code;
    char msg[16];
} oom_error = {SS_CLIENT_ERR_NOMEM, 0, "out of memory"};
#define OOM_ERROR ((ss_client_error *)&oom_error)

ss_client_error *cl_err(ss_client_errkind kind, int64_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    ss_client_error *e = n >= 0 ? malloc(sizeof *e + (size_t)n + 1) : NULL;
    if (!e) return OOM_ERROR;
    e->kind = kind;
    e->code = code;
    va_start(ap, fmt);
    vsnprintf(e->msg, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return e;
}

void ss_client_error_free(ss_client_error *err)
{
    if (err != OOM_ERROR) free(err);
}

const char *ss_client_errkind_name(ss_client_errkind kind)
{
    switch (kind) {
    case SS_CLIENT_ERR_ARGUMENT:
        return "argument";
    case SS_CLIENT_ERR_NOMEM:
        return "out of memory";
    case SS_CLIENT_ERR_TRANSPORT:
        return "transport";
    case SS_CLIENT_ERR_SERVER:
        return "server";
    case SS_CLIENT_ERR_PROTOCOL:
        return "protocol";
    }
    return "unknown";
}

size_t ss_client_dtype_size(ss_client_dtype dt)
{
    static const size_t sizes[] = {0, 1, 1, 1, 2, 2, 4, 4, 8, 8, 2, 4, 8, 0, 0};
    return (unsigned)dt < sizeof sizes / sizeof sizes[0] ? sizes[dt] : 0;
}

const char *ss_client_dtype_name(ss_client_dtype dt)
{
    static const char *names[] = {"unknown", "bool",    "int8",    "uint8",  "int16",
                                  "uint16",  "int32",   "uint32",  "int64",  "uint64",
                                  "float16", "float32", "float64", "string", "bytes"};
    return (unsigned)dt < sizeof names / sizeof names[0] ? names[dt] : "unknown";
}

/* ------------------------------------------------------------------ requests */

ss_client_request *ss_client_request_new(const char *servable, const char *method, uint64_t version)
{
    ss_client_request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->servable = strdup(servable ? servable : "");
    r->method = strdup(method ? method : "");
    r->version = version;
    if (!r->servable || !r->method) {
        ss_client_request_free(r);
        return NULL;
    }
    return r;
}

void cl_free_item(req_item *it)
{
    free(it->name);
    free(it->dims);
    free(it->data);
    free(it->shm_region);
}

void ss_client_request_free(ss_client_request *req)
{
    if (!req) return;
    for (size_t i = 0; i < req->count; i++) {
        for (size_t k = 0; k < req->instances[i].count; k++)
            cl_free_item(&req->instances[i].items[k]);
        free(req->instances[i].items);
        cl_free_outputs(&req->instances[i]);
    }
    free(req->instances);
    free(req->servable);
    free(req->method);
    free(req);
}

size_t ss_client_request_add_instance(ss_client_request *req)
{
    if (req->count == req->cap) {
        size_t cap = req->cap ? 2 * req->cap : 4;
        req_instance *grown = realloc(req->instances, cap * sizeof *grown);
        if (!grown) return (size_t)-1;
        req->instances = grown;
        req->cap = cap;
    }
    memset(&req->instances[req->count], 0, sizeof req->instances[0]);
    return req->count++;
}

static ss_client_error *put_item(ss_client_request *req, size_t instance, const char *name,
                                 ss_client_dtype dtype, const int64_t *dims, int ndim,
                                 const void *data, size_t nbytes)
{
    if (!req || instance >= req->count || !name)
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "no instance %zu in this request", instance);
    req_item it = {0};
    it.name = strdup(name);
    it.dtype = dtype;
    it.ndim = ndim;
    it.dims = ndim ? malloc((size_t)ndim * sizeof *dims) : NULL;
    it.data = malloc(nbytes ? nbytes : 1);
    it.nbytes = nbytes;
    if (!it.name || (ndim && !it.dims) || !it.data) {
        cl_free_item(&it);
        return cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    }
    if (ndim) memcpy(it.dims, dims, (size_t)ndim * sizeof *dims);
    if (nbytes) memcpy(it.data, data, nbytes);
    return cl_insert_item(req, instance, &it);
}

ss_client_error *cl_insert_item(ss_client_request *req, size_t instance, req_item *it)
{
    req_instance *inst = &req->instances[instance];
    req_item *grown = realloc(inst->items, (inst->count + 1) * sizeof *grown);
    if (!grown) {
        cl_free_item(it);
        return cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    }
    inst->items = grown;
    for (size_t k = 0; k < inst->count; k++) { /* a name set twice: the last value wins */
        if (strcmp(inst->items[k].name, it->name) == 0) {
            cl_free_item(&inst->items[k]);
            inst->items[k] = *it;
            return NULL;
        }
    }
    inst->items[inst->count++] = *it;
    return NULL;
}

ss_client_error *ss_client_request_set_tensor(ss_client_request *req, size_t instance,
                                              const char *name, ss_client_dtype dtype,
                                              const int64_t *dims, int ndim, const void *data,
                                              size_t nbytes)
{
    size_t itemsize = ss_client_dtype_size(dtype);
    if (itemsize == 0)
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0,
                      "input %s: dtype %d is not numeric (use set_string/set_bytes)",
                      name ? name : "?", (int)dtype);
    if (ndim < 0 || ndim > 32 || (ndim && !dims))
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "input %s: bad rank %d", name ? name : "?", ndim);
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0 || (dims[i] && numel > UINT64_MAX / 16 / (uint64_t)dims[i]))
            return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "input %s: bad dim %lld", name ? name : "?",
                          (long long)dims[i]);
        numel *= (uint64_t)dims[i];
    }
    if (numel * itemsize != nbytes)
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0,
                      "input %s: %zu bytes of data, its shape and dtype need %llu",
                      name ? name : "?", nbytes, (unsigned long long)(numel * itemsize));
    if (nbytes && !data)
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "input %s: no data", name ? name : "?");
    return put_item(req, instance, name, dtype, dims, ndim, data, nbytes);
}

ss_client_error *ss_client_request_set_string(ss_client_request *req, size_t instance,
                                              const char *name, const char *text, size_t len)
{
    static const int64_t one = 1;
    return put_item(req, instance, name, SS_CLIENT_STRING, &one, 1, text ? text : "", len);
}

ss_client_error *ss_client_request_set_bytes(ss_client_request *req, size_t instance,
                                             const char *name, const void *data, size_t len)
{
    static const int64_t one = 1;
    return put_item(req, instance, name, SS_CLIENT_BYTES, &one, 1, data ? data : "", len);
}

/* Serialize into a malloc'd buffer; the protobuf structures only point at the request. */
static ss_client_error *pack_request(const ss_client_request *req, uint8_t **buf, size_t *len)
{
    if (cl_request_uses_shm(req))
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0,
                      "tensors in shared memory travel over the KServe protocols only");
    size_t total = 0;
    for (size_t i = 0; i < req->count; i++)
        total += req->instances[i].count;
    pb_instance *insts = calloc(req->count + 1, sizeof *insts);
    pb_instance **inst_ptrs = calloc(req->count + 1, sizeof *inst_ptrs);
    pb_item *items = calloc(total + 1, sizeof *items);
    pb_item **item_ptrs = calloc(total + 1, sizeof *item_ptrs);
    pb_tensor *tensors = calloc(total + 1, sizeof *tensors);
    pb_shape *shapes = calloc(total + 1, sizeof *shapes);
    ProtobufCBinaryData *strings = calloc(total + 1, sizeof *strings);
    ss_client_error *err = NULL;
    if (!insts || !inst_ptrs || !items || !item_ptrs || !tensors || !shapes || !strings) {
        err = cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
        goto done;
    }
    size_t n = 0;
    for (size_t i = 0; i < req->count; i++) {
        mindspore__serving__proto__instance__init(&insts[i]);
        inst_ptrs[i] = &insts[i];
        insts[i].items = &item_ptrs[n];
        insts[i].n_items = req->instances[i].count;
        for (size_t k = 0; k < req->instances[i].count; k++, n++) {
            const req_item *it = &req->instances[i].items[k];
            mindspore__serving__proto__instance__items_entry__init(&items[n]);
            mindspore__serving__proto__tensor__init(&tensors[n]);
            mindspore__serving__proto__tensor_shape__init(&shapes[n]);
            items[n].key = it->name;
            items[n].value = &tensors[n];
            item_ptrs[n] = &items[n];
            tensors[n].shape = &shapes[n];
            tensors[n].dtype = (Mindspore__Serving__Proto__DataType)it->dtype;
            shapes[n].n_dims = (size_t)it->ndim;
            shapes[n].dims = it->dims;
            if (it->dtype == SS_CLIENT_STRING || it->dtype == SS_CLIENT_BYTES) {
                strings[n].data = it->data;
                strings[n].len = it->nbytes;
                tensors[n].n_bytes_val = 1;
                tensors[n].bytes_val = &strings[n];
            } else {
                tensors[n].tensor_data_case = MINDSPORE__SERVING__PROTO__TENSOR__TENSOR_DATA_DATA;
                tensors[n].data.data = it->data;
                tensors[n].data.len = it->nbytes;
            }
        }
    }
    Mindspore__Serving__Proto__ServableSpec spec = MINDSPORE__SERVING__PROTO__SERVABLE_SPEC__INIT;
    spec.name = req->servable;
    spec.method_name = req->method;
    spec.version_number = req->version;
    pb_request pb = MINDSPORE__SERVING__PROTO__PREDICT_REQUEST__INIT;
    pb.servable_spec = &spec;
    pb.n_instances = req->count;
    pb.instances = inst_ptrs;
    *len = mindspore__serving__proto__predict_request__get_packed_size(&pb);
    *buf = malloc(*len ? *len : 1);
    if (!*buf)
        err = cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    else
        mindspore__serving__proto__predict_request__pack(&pb, *buf);
done:
    free(strings);
    free(insts);
    free(inst_ptrs);
    free(items);
    free(item_ptrs);
    free(tensors);
    free(shapes);
    return err;
}

/* ------------------------------------------------------------------ replies */

struct ss_client_reply {
    pb_reply *pb;
};

size_t ss_client_reply_count(const ss_client_reply *reply)
{
    return reply ? reply->pb->n_instances : 0;
}

const char *ss_client_reply_error(const ss_client_reply *reply, size_t i, int64_t *code)
{
    if (code) *code = 0;
    if (!reply || i >= reply->pb->n_error_msg || reply->pb->error_msg[i]->error_code == 0)
        return NULL;
    Mindspore__Serving__Proto__ErrorMsg *e = reply->pb->error_msg[i];
    if (code) *code = e->error_code;
    /* protobuf-c keeps bytes unterminated; the unpacked buffer was NUL-terminated at unpack */
    return e->error_msg.len ? (const char *)e->error_msg.data : "Predict failed";
}

size_t ss_client_reply_output_count(const ss_client_reply *reply, size_t i)
{
    if (!reply || i >= reply->pb->n_instances) return 0;
    return reply->pb->instances[i]->n_items;
}

bool ss_client_reply_output(const ss_client_reply *reply, size_t i, size_t k, ss_client_tensor *out)
{
    if (!reply || i >= reply->pb->n_instances || k >= reply->pb->instances[i]->n_items)
        return false;
    const pb_item *item = reply->pb->instances[i]->items[k];
    const pb_tensor *t = item->value;
    memset(out, 0, sizeof *out);
    out->name = item->key;
    if (!t) return true;
    out->dtype = (ss_client_dtype)t->dtype;
    out->ndim = t->shape ? (int)t->shape->n_dims : 0;
    out->dims = t->shape ? t->shape->dims : NULL;
    if (t->tensor_data_case == MINDSPORE__SERVING__PROTO__TENSOR__TENSOR_DATA_DATA) {
        out->data = t->data.data;
        out->nbytes = t->data.len;
    }
    out->nstrings = t->n_bytes_val;
    out->strings_ = t->bytes_val;
    return true;
}

bool ss_client_reply_find(const ss_client_reply *reply, size_t i, const char *name,
                          ss_client_tensor *out)
{
    for (size_t k = 0; k < ss_client_reply_output_count(reply, i); k++)
        if (strcmp(reply->pb->instances[i]->items[k]->key, name) == 0)
            return ss_client_reply_output(reply, i, k, out);
    return false;
}

const void *ss_client_tensor_string(const ss_client_tensor *t, size_t j, size_t *len)
{
    if (!t || j >= t->nstrings) return NULL;
    const ProtobufCBinaryData *s = (const ProtobufCBinaryData *)t->strings_ + j;
    if (len) *len = s->len;
    return s->data ? (const void *)s->data : "";
}

void ss_client_reply_free(ss_client_reply *reply)
{
    if (!reply) return;
    mindspore__serving__proto__predict_reply__free_unpacked(reply->pb, NULL);
    free(reply);
}

/* NUL-terminate error texts in place: protobuf-c gives length-delimited bytes. */
static bool terminate_errors(pb_reply *pb)
{
    for (size_t i = 0; i < pb->n_error_msg; i++) {
        ProtobufCBinaryData *m = &pb->error_msg[i]->error_msg;
        uint8_t *copy = malloc(m->len + 1);
        if (!copy) return false;
        if (m->len) memcpy(copy, m->data, m->len);
        copy[m->len] = 0;
        free(m->data);
        m->data = copy;
    }
    return true;
}

/* ------------------------------------------------------------------ calls */

typedef struct ss_client_call {
    ss_client *client;
    grpc_call *call;
    grpc_metadata_array initial_md, trailing_md;
    grpc_byte_buffer *send, *recv;
    grpc_status_code status;
    grpc_slice details;
    ss_client_callback cb;
    void *cb_ctx;
    struct ss_client_call *prev, *next;
} client_call;

struct ss_client {
    grpc_channel *channel;
    grpc_completion_queue *cq; /* async calls */
    pthread_t thread;
    int timeout_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    client_call *calls; /* outstanding async calls */
    ss_client_protocol protocol;
    char *address;
    cl_pool *pool; /* KServe REST connections */
};

const char *cl_address(const ss_client *c)
{
    return c->address;
}

int cl_timeout_ms(const ss_client *c)
{
    return c->timeout_ms;
}

ss_client_protocol cl_protocol(const ss_client *c)
{
    return c->protocol;
}

cl_pool **cl_pool_of(ss_client *c)
{
    return &c->pool;
}

static gpr_timespec deadline_of(const ss_client *c)
{
    if (c->timeout_ms <= 0) return gpr_inf_future(GPR_CLOCK_REALTIME);
    return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                        gpr_time_from_millis(c->timeout_ms, GPR_TIMESPAN));
}

/* A call of `method_path` with the message `buf` (malloc'd; consumed, kept in *send) and its
 * first four ops: send metadata, the message and close, receive metadata (into *initial_md). */
static grpc_call *open_call(ss_client *c, grpc_completion_queue *cq, const char *method_path,
                            uint8_t *buf, size_t len, grpc_byte_buffer **send,
                            grpc_metadata_array *initial_md, grpc_op ops[4])
{
    grpc_slice payload = grpc_slice_new(buf, len, free);
    *send = grpc_raw_byte_buffer_create(&payload, 1);
    grpc_slice_unref(payload);
    memset(ops, 0, 4 * sizeof *ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = *send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = initial_md;
    return grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                    grpc_slice_from_static_string(method_path), NULL,
                                    deadline_of(c), NULL);
}

/* Start one unary call of `method` with the message `buf` (malloc'd; consumed). */
static ss_client_error *start_call(ss_client *c, grpc_completion_queue *cq, const char *method_path,
                                   uint8_t *buf, size_t len, client_call *cc)
{
    grpc_metadata_array_init(&cc->initial_md);
    grpc_metadata_array_init(&cc->trailing_md);
    grpc_op ops[6];
    cc->call = open_call(c, cq, method_path, buf, len, &cc->send, &cc->initial_md, ops);
    memset(ops + 4, 0, 2 * sizeof *ops);
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &cc->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &cc->trailing_md;
    ops[5].data.recv_status_on_client.status = &cc->status;
    ops[5].data.recv_status_on_client.status_details = &cc->details;
    grpc_call_error ce = grpc_call_start_batch(cc->call, ops, 6, cc, NULL);
    if (ce != GRPC_CALL_OK)
        return cl_err(SS_CLIENT_ERR_TRANSPORT, 13, "cannot start the call (%d)", (int)ce);
    return NULL;
}

static void release_call(client_call *cc)
{
    if (cc->call) grpc_call_unref(cc->call);
    grpc_metadata_array_destroy(&cc->initial_md);
    grpc_metadata_array_destroy(&cc->trailing_md);
    if (cc->send) grpc_byte_buffer_destroy(cc->send);
    if (cc->recv) grpc_byte_buffer_destroy(cc->recv);
    grpc_slice_unref(cc->details);
}

/* A completed call's status and message bytes. */
static ss_client_error *call_message(client_call *cc, grpc_slice *msg)
{
    if (cc->status != GRPC_STATUS_OK) {
        char *details = grpc_slice_to_c_string(cc->details);
        ss_client_error *e = cl_err(SS_CLIENT_ERR_TRANSPORT, cc->status, "%s", details);
        gpr_free(details);
        return e;
    }
    grpc_byte_buffer_reader reader;
    if (!cc->recv || !grpc_byte_buffer_reader_init(&reader, cc->recv))
        return cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "the server sent no reply message");
    *msg = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    return NULL;
}

/* Turn a completed call into (error, reply). */
static ss_client_error *finish_call(client_call *cc, ss_client_reply **out)
{
    *out = NULL;
    grpc_slice s;
    ss_client_error *err = call_message(cc, &s);
    if (err) return err;
    err = cl_reply_unpack(GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), out);
    grpc_slice_unref(s);
    return err;
}

ss_client_error *cl_reply_unpack(const uint8_t *buf, size_t len, ss_client_reply **out)
{
    *out = NULL;
    pb_reply *pb = mindspore__serving__proto__predict_reply__unpack(NULL, len, buf);
    if (!pb) return cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "cannot parse the PredictReply");
    if (!terminate_errors(pb)) {
        mindspore__serving__proto__predict_reply__free_unpacked(pb, NULL);
        return cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    }
    ss_client_error *err = NULL;
    if (pb->n_error_msg == 1 && pb->error_msg[0]->error_code != 0) {
        const ProtobufCBinaryData *m = &pb->error_msg[0]->error_msg;
        err = cl_err(SS_CLIENT_ERR_SERVER, pb->error_msg[0]->error_code, "%s",
                     m->len ? (const char *)m->data : "Predict failed");
    } else if (pb->n_error_msg != 0 && pb->n_error_msg != pb->n_instances) {
        err = cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "reply has %zu error entries for %zu instances",
                     pb->n_error_msg, pb->n_instances);
    }
    if (err) {
        mindspore__serving__proto__predict_reply__free_unpacked(pb, NULL);
        return err;
    }
    ss_client_reply *r = malloc(sizeof *r);
    if (!r) {
        mindspore__serving__proto__predict_reply__free_unpacked(pb, NULL);
        return cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    }
    r->pb = pb;
    *out = r;
    return NULL;
}

/* One synchronous call on a completion queue of its own: the answer's bytes. */
ss_client_error *cl_unary(ss_client *c, const char *method, uint8_t *buf, size_t len,
                          grpc_slice *reply)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    client_call cc;
    memset(&cc, 0, sizeof cc);
    ss_client_error *err = start_call(c, cq, method, buf, len, &cc);
    if (!err) {
        grpc_event ev;
        do {
            ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        } while (ev.type != GRPC_OP_COMPLETE || ev.tag != &cc);
        err = call_message(&cc, reply);
    }
    release_call(&cc);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(cq);
    return err;
}

ss_client_error *ss_client_infer(ss_client *client, const ss_client_request *req,
                                 ss_client_reply **out)
{
    *out = NULL;
    if (!client || !req) return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "no client or request");
    if (client->protocol != SS_CLIENT_MINDSPORE) return cl_kserve_infer(client, req, out);
    uint8_t *buf = NULL;
    size_t len = 0;
    ss_client_error *err = pack_request(req, &buf, &len);
    grpc_slice msg;
    if (!err) err = cl_unary(client, PREDICT_METHOD, buf, len, &msg);
    if (err) return err;
    err = cl_reply_unpack(GRPC_SLICE_START_PTR(msg), GRPC_SLICE_LENGTH(msg), out);
    grpc_slice_unref(msg);
    return err;
}

/* ------------------------------------------------------------------ server streaming */

#define PREDICT_STREAM_METHOD "/shardserve.Stream/PredictStream"

/* The batches of one streaming call; a tag is the address of its `done` flag. */
typedef struct {
    grpc_completion_queue *cq;
    grpc_call *call;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status;
    grpc_slice details;
    bool started, got_status, got_message;
} stream_call;

/* Wait until the batch whose tag is `flag` has completed (others complete on the way). */
static void stream_wait(stream_call *sc, bool *flag)
{
    while (!*flag) {
        grpc_event ev =
            grpc_completion_queue_next(sc->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_OP_COMPLETE) *(bool *)ev.tag = true;
    }
}

static ss_client_error *stream_start(ss_client *c, stream_call *sc, uint8_t *buf, size_t len)
{
    grpc_op ops[4];
    sc->call =
        open_call(c, sc->cq, PREDICT_STREAM_METHOD, buf, len, &sc->send, &sc->initial_md, ops);
    grpc_op status;
    memset(&status, 0, sizeof status);
    status.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    status.data.recv_status_on_client.trailing_metadata = &sc->trailing_md;
    status.data.recv_status_on_client.status = &sc->status;
    status.data.recv_status_on_client.status_details = &sc->details;
    if (grpc_call_start_batch(sc->call, ops, 4, &sc->started, NULL) != GRPC_CALL_OK) {
        sc->started = sc->got_status = true;
        return cl_err(SS_CLIENT_ERR_TRANSPORT, 13, "cannot start the stream");
    }
    if (grpc_call_start_batch(sc->call, &status, 1, &sc->got_status, NULL) != GRPC_CALL_OK) {
        sc->got_status = true;
        grpc_call_cancel(sc->call, NULL);
        return cl_err(SS_CLIENT_ERR_TRANSPORT, 13, "cannot start the stream");
    }
    return NULL;
}

/* The next message's bytes; false at the end of the stream (or when it broke). */
static bool stream_next(stream_call *sc, grpc_slice *msg)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &sc->recv;
    sc->got_message = false;
    if (grpc_call_start_batch(sc->call, &op, 1, &sc->got_message, NULL) != GRPC_CALL_OK)
        return false;
    stream_wait(sc, &sc->got_message);
    grpc_byte_buffer_reader reader;
    if (!sc->recv || !grpc_byte_buffer_reader_init(&reader, sc->recv)) return false;
    *msg = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    grpc_byte_buffer_destroy(sc->recv);
    sc->recv = NULL;
    return true;
}

/* Read every message: cb sees each; the last one is kept in *last (or its error in *err). */
static void stream_read(stream_call *sc, ss_client_stream_callback cb, void *ctx,
                        ss_client_reply **last, ss_client_error **err, bool *stopped)
{
    grpc_slice msg;
    while (!*stopped && stream_next(sc, &msg)) {
        ss_client_reply_free(*last);
        *last = NULL;
        ss_client_error_free(*err);
        *err = cl_reply_unpack(GRPC_SLICE_START_PTR(msg), GRPC_SLICE_LENGTH(msg), last);
        grpc_slice_unref(msg);
        if (*last && cb && !cb(ctx, *last)) {
            *stopped = true;
            grpc_call_cancel(sc->call, NULL);
        }
    }
}

ss_client_error *ss_client_infer_stream(ss_client *client, const ss_client_request *req,
                                        ss_client_stream_callback cb, void *ctx,
                                        ss_client_reply **out)
{
    *out = NULL;
    if (!client || !req) return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "no client or request");
    if (client->protocol != SS_CLIENT_MINDSPORE)
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0,
                      "streaming speaks shardserve's PredictStream (MindSpore's messages) only");
    uint8_t *buf = NULL;
    size_t len = 0;
    ss_client_error *err = pack_request(req, &buf, &len);
    if (err) return err;
    stream_call sc;
    memset(&sc, 0, sizeof sc);
    sc.cq = grpc_completion_queue_create_for_next(NULL);
    grpc_metadata_array_init(&sc.initial_md);
    grpc_metadata_array_init(&sc.trailing_md);
    err = stream_start(client, &sc, buf, len);
    ss_client_reply *last = NULL;
    bool stopped = false;
    if (!err) stream_read(&sc, cb, ctx, &last, &err, &stopped);
    stream_wait(&sc, &sc.started);
    stream_wait(&sc, &sc.got_status);
    if (!err && stopped) {
        err = cl_err(SS_CLIENT_ERR_TRANSPORT, GRPC_STATUS_CANCELLED,
                     "the stream was cancelled by its callback");
    } else if (!err && sc.status != GRPC_STATUS_OK) {
        char *details = grpc_slice_to_c_string(sc.details);
        err = cl_err(SS_CLIENT_ERR_TRANSPORT, sc.status, "%s", details);
        gpr_free(details);
    } else if (!err && !last) {
        err = cl_err(SS_CLIENT_ERR_PROTOCOL, 0, "the server sent no reply message");
    }
    if (err) {
        ss_client_reply_free(last);
        last = NULL;
    }
    *out = last;
    if (sc.call) grpc_call_unref(sc.call);
    if (sc.send) grpc_byte_buffer_destroy(sc.send);
    if (sc.recv) grpc_byte_buffer_destroy(sc.recv);
    grpc_metadata_array_destroy(&sc.initial_md);
    grpc_metadata_array_destroy(&sc.trailing_md);
    grpc_slice_unref(sc.details);
    grpc_completion_queue_shutdown(sc.cq);
    while (grpc_completion_queue_next(sc.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(sc.cq);
    return err;
}

static void *async_main(void *arg)
{
    ss_client *c = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) return NULL;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        client_call *cc = ev.tag;
        ss_client_reply *reply = NULL;
        ss_client_error *err = finish_call(cc, &reply);
        cc->cb(cc->cb_ctx, err, reply);
        pthread_mutex_lock(&c->mu);
        if (cc->prev)
            cc->prev->next = cc->next;
        else
            c->calls = cc->next;
        if (cc->next) cc->next->prev = cc->prev;
        if (!c->calls) pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        release_call(cc);
        free(cc);
    }
}

ss_client_error *ss_client_infer_async(ss_client *client, const ss_client_request *req,
                                       ss_client_callback cb, void *ctx)
{
    if (!client || !req || !cb)
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "no client, request or callback");
    if (client->protocol != SS_CLIENT_MINDSPORE)
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0,
                      "async calls speak MindSpore's protocol only; use ss_client_infer");
    client_call *cc = calloc(1, sizeof *cc);
    if (!cc) return cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    cc->client = client;
    cc->cb = cb;
    cc->cb_ctx = ctx;
    uint8_t *buf = NULL;
    size_t len = 0;
    ss_client_error *err = pack_request(req, &buf, &len);
    if (err) {
        free(cc);
        return err;
    }
    pthread_mutex_lock(&client->mu); /* linked before the batch starts: it may finish at once */
    cc->next = client->calls;
    if (client->calls) client->calls->prev = cc;
    client->calls = cc;
    err = start_call(client, client->cq, PREDICT_METHOD, buf, len, cc);
    if (err) {
        client->calls = cc->next;
        if (cc->next) cc->next->prev = NULL;
        if (!client->calls) pthread_cond_broadcast(&client->cv);
    }
    pthread_mutex_unlock(&client->mu);
    if (err) {
        release_call(cc);
        free(cc);
    }
    return err;
}

/* ------------------------------------------------------------------ connect / close */

#define MAX_PEM_BYTES (1 << 20)

/* A PEM file as a NUL-terminated string; NULL path gives NULL and no error. */
static ss_client_error *read_pem(const char *what, const char *path, char **out)
{
    *out = NULL;
    if (!path) return NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "cannot open %s %s", what, path);
    char *buf = malloc(MAX_PEM_BYTES + 1);
    size_t n = buf ? fread(buf, 1, MAX_PEM_BYTES + 1, f) : 0;
    fclose(f);
    if (!buf) return cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    if (n == 0 || n > MAX_PEM_BYTES) {
        free(buf);
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "%s %s is %s", what, path,
                      n ? "larger than 1 MiB" : "empty or unreadable");
    }
    buf[n] = 0;
    *out = buf;
    return NULL;
}

static void free_pem(char *pem)
{
    if (!pem) return;
    for (volatile char *p = pem; *p; p++)
        *p = 0;
    free(pem);
}

/* Insecure, or SSL credentials from the PEM files (gRPC copies them). */
static ss_client_error *channel_credentials(const ss_client_ssl_config *ssl,
                                            grpc_channel_credentials **out)
{
    *out = NULL;
    if (!ssl) {
        *out = grpc_insecure_credentials_create();
        return NULL;
    }
    if (!ssl->certificate != !ssl->private_key)
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0,
                      "certificate and private_key should be given together");
    char *ca = NULL, *cert = NULL, *key = NULL;
    ss_client_error *err = read_pem("custom_ca", ssl->custom_ca, &ca);
    if (!err) err = read_pem("certificate", ssl->certificate, &cert);
    if (!err) err = read_pem("private_key", ssl->private_key, &key);
    if (!err) {
        grpc_ssl_pem_key_cert_pair pair = {key, cert};
        *out = grpc_ssl_credentials_create_ex(ca, cert ? &pair : NULL, NULL, NULL);
        if (!*out) err = cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "invalid SSL config");
    }
    free_pem(ca);
    free_pem(cert);
    free_pem(key);
    return err;
}

ss_client_error *ss_client_connect(const ss_client_options *opts, ss_client **out)
{
    *out = NULL;
    if (!opts || !opts->address || !opts->address[0])
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "address is empty");
    if (opts->protocol < SS_CLIENT_MINDSPORE || opts->protocol > SS_CLIENT_KSERVE_BINARY)
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "unknown protocol %d", (int)opts->protocol);
    if (opts->protocol != SS_CLIENT_MINDSPORE && opts->ssl)
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "TLS is supported with MindSpore's protocol only");
    if (opts->max_msg_mb < 0 || opts->max_msg_mb > 512)
        return cl_err(SS_CLIENT_ERR_ARGUMENT, 0, "max_msg_mb %d is outside [1, 512]",
                      opts->max_msg_mb);
    grpc_init();
    grpc_channel_credentials *creds;
    ss_client_error *err = channel_credentials(opts->ssl, &creds);
    ss_client *c = err ? NULL : calloc(1, sizeof *c);
    if (!c) {
        if (creds) grpc_channel_credentials_release(creds);
        grpc_shutdown();
        return err ? err : cl_err(SS_CLIENT_ERR_NOMEM, 0, "out of memory");
    }
    int mb = opts->max_msg_mb ? opts->max_msg_mb : 512;
    c->timeout_ms = opts->timeout_ms;
    c->protocol = opts->protocol;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    grpc_arg args[] = {
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = mb << 20}},
        {GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, {.integer = mb << 20}},
        {GRPC_ARG_INTEGER, GRPC_ARG_ENABLE_HTTP_PROXY, {.integer = 0}},
    };
    grpc_channel_args channel_args = {sizeof args / sizeof args[0], args};
    c->channel = grpc_channel_create(opts->address, creds, &channel_args);
    grpc_channel_credentials_release(creds);
    c->cq = grpc_completion_queue_create_for_next(NULL);
    c->address = strdup(opts->address);
    if (!c->channel || !c->address || pthread_create(&c->thread, NULL, async_main, c) != 0) {
        free(c->address);
        if (c->channel) grpc_channel_destroy(c->channel);
        grpc_completion_queue_shutdown(c->cq);
        grpc_completion_queue_destroy(c->cq);
        grpc_shutdown();
        free(c);
        return cl_err(SS_CLIENT_ERR_TRANSPORT, 14, "cannot create a channel to %s", opts->address);
    }
    *out = c;
    return NULL;
}

void ss_client_close(ss_client *client)
{
    if (!client) return;
    pthread_mutex_lock(&client->mu);
    for (client_call *cc = client->calls; cc; cc = cc->next)
        grpc_call_cancel(cc->call, NULL);
    while (client->calls)
        pthread_cond_wait(&client->cv, &client->mu);
    pthread_mutex_unlock(&client->mu);
    grpc_completion_queue_shutdown(client->cq);
    pthread_join(client->thread, NULL);
    grpc_completion_queue_destroy(client->cq);
    grpc_channel_destroy(client->channel);
    pthread_mutex_destroy(&client->mu);
    pthread_cond_destroy(&client->cv);
    cl_pool_free(client->pool);
    free(client->address);
    free(client);
    grpc_shutdown();
}
