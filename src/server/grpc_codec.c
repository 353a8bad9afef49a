/*
 * grpc_codec: PredictRequest/PredictReply <-> serving data model.
 *
 * Decoding takes the numeric payload buffers away from the unpacked protobuf message instead of
 * copying them (protobuf-c allocates each bytes field separately with malloc), so a request's
 * tensor bytes are copied once, by protobuf-c, on their way in. Encoding points the protobuf
 * structures at the reply's tensors and packs once. The request checks and their texts are
 * MindSpore's GrpcTensorHelper::CheckRequestTensor.
 */
#include "grpc_codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ms_service.pb-c.h"
#include "pb_budget.h"

typedef Mindspore__Serving__Proto__PredictRequest pb_request;
typedef Mindspore__Serving__Proto__PredictReply pb_reply;
typedef Mindspore__Serving__Proto__Instance pb_instance;
typedef Mindspore__Serving__Proto__Instance__ItemsEntry pb_item;
typedef Mindspore__Serving__Proto__Tensor pb_tensor;
typedef Mindspore__Serving__Proto__TensorShape pb_shape;
typedef Mindspore__Serving__Proto__ErrorMsg pb_error;
typedef Mindspore__Serving__Proto__ServableSpec pb_spec;

enum { MS_STRING = 13, MS_BYTES = 14 }; /* MindSpore's proto DataType values for text and bytes */

ss_dtype ss_grpc_dtype_from_ms(int ms_dtype, bool *is_bytes)
{
    return ss_serving_ms_dtype_from_proto(ms_dtype, is_bytes);
}

int ss_grpc_dtype_to_ms(ss_dtype dt, bool is_bytes)
{
    return ss_serving_ms_dtype_to_proto(dt, is_bytes);
}

/* MindSpore prints shapes as "[2, 3]". */
static const char *ms_shape_str(const pb_shape *shape, char *buf, size_t cap)
{
    size_t off = (size_t)snprintf(buf, cap, "[");
    size_t n = shape ? shape->n_dims : 0;
    for (size_t i = 0; i < n && off < cap; i++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%lld", i ? ", " : "",
                                (long long)shape->dims[i]);
    if (off < cap) snprintf(buf + off, cap - off, "]");
    return buf;
}

/* MindSpore's tensor check; writes the detail text into msg and returns false on failure. */
static bool check_tensor(const pb_tensor *t, char *msg, size_t cap)
{
    char sb[256];
    size_t ndim = t->shape ? t->shape->n_dims : 0;
    const int64_t *dims = t->shape ? t->shape->dims : NULL;
    if ((int)t->dtype == MS_STRING || (int)t->dtype == MS_BYTES) {
        if (t->n_bytes_val != 1) {
            snprintf(msg, cap,
                     "Instance tensor check failed: bytes or string type shape batch size can "
                     "only be 1");
            return false;
        }
        if (!(ndim == 0 || (ndim == 1 && dims[0] == 1))) {
            snprintf(msg, cap,
                     "Instance tensor check failed: bytes or string type input  shape can only "
                     "be (1,) or empty, but given shape is %s",
                     ms_shape_str(t->shape, sb, sizeof sb));
            return false;
        }
        return true;
    }
    bool zero_dim = false;
    for (size_t i = 0; i < ndim; i++) {
        if (dims[i] < 0 || zero_dim || ndim > SS_MAX_DIMS) {
            snprintf(msg, cap, "Tensor check failed: input  shape %s invalid",
                     ms_shape_str(t->shape, sb, sizeof sb));
            return false;
        }
        if (dims[i] == 0) zero_dim = true;
    }
    ss_dtype dt = ss_grpc_dtype_from_ms((int)t->dtype, NULL);
    if (dt == SS_DT_UNDEFINED) {
        snprintf(msg, cap, "Tensor check failed: input data type %s invalid",
                 ss_serving_ms_proto_dtype_name((int)t->dtype));
        return false;
    }
    int64_t numel = ss_shape_numel((int)ndim, dims);
    size_t itemsize = ss_dtype_size(dt);
    size_t have = t->tensor_data_case == MINDSPORE__SERVING__PROTO__TENSOR__TENSOR_DATA_DATA
                      ? t->data.len
                      : 0;
    if (t->tensor_data_case == MINDSPORE__SERVING__PROTO__TENSOR__TENSOR_DATA_SHM_DATA) {
        snprintf(msg, cap, "Tensor check failed: input shared memory data is not supported");
        return false;
    }
    if (numel < 0 || (uint64_t)numel > SIZE_MAX / itemsize || (size_t)numel * itemsize != have) {
        snprintf(msg, cap, "Tensor check failed: input data size %zu invalid", have);
        return false;
    }
    return true;
}

/* Move a checked tensor out of the protobuf message into the instance. */
static ss_status *take_tensor(ss_serving_instance *inst, const char *name, pb_tensor *t)
{
    bool is_bytes = false;
    ss_dtype dt = ss_grpc_dtype_from_ms((int)t->dtype, &is_bytes);
    if (dt == SS_DT_STRING)
        return ss_serving_instance_put_string(inst, name, t->bytes_val[0].data, t->bytes_val[0].len,
                                              is_bytes);
    int ndim = t->shape ? (int)t->shape->n_dims : 0;
    const int64_t *dims = t->shape ? t->shape->dims : NULL;
    ss_tensor tensor;
    ss_status *st;
    if (t->data.len == 0) {
        st = ss_tensor_alloc(&tensor, dt, ndim, dims);
    } else {
        st = ss_tensor_borrow(&tensor, dt, ndim, dims, t->data.data, t->data.len);
        if (!st) {
            tensor.storage = SS_STORE_OWNED; /* protobuf-c malloc'd it; it is ours now */
            t->data.data = NULL;
            t->data.len = 0;
        }
    }
    if (st) return st;
    st = ss_serving_instance_put(inst, name, &tensor, false);
    ss_tensor_free(&tensor);
    return st;
}

/* The request's instances, or the error reply that refuses it. *complete: every instance and
 * item was converted; when neither that nor a reply came, even the reply could not be allocated
 * (the request is then incomplete, not valid). */
static ss_predict_reply *convert_instances(pb_request *pb, ss_predict_request *req, bool *complete)
{
    *complete = false;
    char detail[512];
    if (pb->n_instances == 0)
        return ss_predict_reply_error(SS_SERVING_INVALID_INPUTS,
                                      "Instances count of request cannot be 0, servable: %s, "
                                      "method: %s",
                                      req->servable, req->method);
    if (!ss_predict_request_reserve(req, pb->n_instances))
        return ss_predict_reply_error(SS_SERVING_SYSTEM_ERROR, "out of memory");
    for (size_t i = 0; i < pb->n_instances; i++) {
        ss_serving_instance *inst = ss_predict_request_add_instance(req);
        if (!inst) return ss_predict_reply_error(SS_SERVING_SYSTEM_ERROR, "out of memory");
        pb_instance *pi = pb->instances[i];
        for (size_t k = 0; k < pi->n_items; k++) {
            pb_item *item = pi->items[k];
            pb_tensor empty;
            if (!item->value) { /* a map entry without a value holds a default Tensor */
                mindspore__serving__proto__tensor__init(&empty);
                item->value = &empty;
            }
            bool ok = check_tensor(item->value, detail, sizeof detail);
            if (item->value == &empty) item->value = NULL;
            if (!ok)
                return ss_predict_reply_error(SS_SERVING_INVALID_INPUTS,
                                              "Instances input %s check failed, detail: %s",
                                              item->key, detail);
            ss_status *st = take_tensor(inst, item->key, item->value);
            if (st) {
                ss_predict_reply *r = ss_predict_reply_error(
                    SS_SERVING_SYSTEM_ERROR, "Instances input %s: %s", item->key, st->msg);
                ss_status_free(st);
                return r;
            }
        }
    }
    *complete = true;
    return NULL;
}

/* ------------------------------------------------------------------ wire pre-scan */

/* protobuf-c allocates per element; a 100 MB message of tiny elements would cost gigabytes once
 * unpacked. Count the elements on the wire first and refuse absurd requests before unpacking. */
#define MAX_INSTANCES (1 << 20)
#define MAX_ITEMS (1 << 20)
#define MAX_ELEMS_PER_TENSOR 1024 /* dims, bytes_val entries */
/* protobuf-c allocates for every field it keeps, unknown ones included (~40 bytes or more each):
 * every field on the wire, at every level, counts against this budget. */
#define MAX_FIELDS (1 << 22)

typedef struct {
    const uint8_t *p, *end;
} wire;

static bool wire_varint(wire *w, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && w->p < w->end; shift += 7) {
        uint8_t b = *w->p++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

/* Next field of a message: its number, wire type and (for length-delimited) its payload.
 * false at the end or on malformed input (protobuf-c will report that one). */
static bool wire_next(wire *w, uint32_t *field, int *type, wire *sub)
{
    uint64_t key, n;
    if (w->p >= w->end || !wire_varint(w, &key)) return false;
    *field = (uint32_t)(key >> 3);
    *type = (int)(key & 7);
    *sub = (wire){w->p, w->p}; /* a varint field's "payload" is its own bytes */
    switch (*type) {
    case 0:
        if (!wire_varint(w, &n)) return false;
        sub->end = w->p;
        return true;
    case 1:
        n = 8;
        break;
    case 5:
        n = 4;
        break;
    case 2:
        if (!wire_varint(w, &n)) return false;
        break;
    default:
        return false;
    }
    if (n > (uint64_t)(w->end - w->p)) return false;
    sub->p = w->p;
    sub->end = w->p + n;
    w->p += n;
    return true;
}

static size_t count_packed_varints(wire w)
{
    size_t n = 0;
    for (; w.p < w.end; w.p++)
        n += !(*w.p & 0x80);
    return n;
}

static bool tensor_small(wire t, size_t *fields)
{
    uint32_t f;
    int type;
    wire sub;
    size_t strings = 0;
    while (wire_next(&t, &f, &type, &sub)) {
        ++*fields;
        if (f == 4 && ++strings > MAX_ELEMS_PER_TENSOR) return false;
        if (f != 1 || type != 2) continue;
        size_t dims = 0; /* shape: repeated int64 dims = 1, packed or not */
        uint32_t sf;
        int st;
        wire d;
        while (wire_next(&sub, &sf, &st, &d)) {
            ++*fields;
            if (sf == 1) dims += st == 2 ? count_packed_varints(d) : 1;
        }
        if (dims > MAX_ELEMS_PER_TENSOR) return false;
    }
    return true;
}

static ss_status *over_budget(size_t fields)
{
    if (fields <= MAX_FIELDS) return NULL;
    return ss_errf(SS_ERR_LIMIT, "request has more than %d protobuf fields", MAX_FIELDS);
}

/* What the pre-scan learns besides the counts: the spec as sent and the most names one instance
 * carries, so the name limit is applied before anything is unpacked. */
typedef struct {
    char servable[256], method[256];
    uint64_t version;
    size_t max_names;
} wire_summary;

static void wire_string(wire v, char *out, size_t cap)
{
    size_t n = (size_t)(v.end - v.p) < cap - 1 ? (size_t)(v.end - v.p) : cap - 1;
    memcpy(out, v.p, n);
    out[n] = 0;
}

static ss_status *scan_spec(wire spec, wire_summary *sum, size_t *fields)
{
    uint32_t f;
    int type;
    wire v;
    while (wire_next(&spec, &f, &type, &v)) {
        ss_status *st = over_budget(++*fields);
        if (st) return st;
        if (f == 1 && type == 2) wire_string(v, sum->servable, sizeof sum->servable);
        if (f == 2 && type == 2) wire_string(v, sum->method, sizeof sum->method);
        if (f == 3 && type == 0) wire_varint(&v, &sum->version);
    }
    return NULL;
}

static ss_status *scan_instance(wire inst, size_t *items, size_t *fields, size_t *names)
{
    uint32_t f;
    int type;
    wire entry, value;
    *names = 0;
    while (wire_next(&inst, &f, &type, &entry)) {
        ss_status *st = over_budget(++*fields);
        if (st) return st;
        if (f != 1 || type != 2) continue;
        ++*names;
        if (++*items > MAX_ITEMS)
            return ss_errf(SS_ERR_LIMIT, "request has more than %d inputs in all", MAX_ITEMS);
        while (wire_next(&entry, &f, &type, &value)) {
            if (f == 2 && type == 2 && !tensor_small(value, fields))
                return ss_errf(SS_ERR_LIMIT,
                               "a tensor of the request has more than %d dims or strings",
                               MAX_ELEMS_PER_TENSOR);
            if ((st = over_budget(++*fields))) return st;
        }
    }
    return NULL;
}

static ss_status *prescan(const uint8_t *buf, size_t len, wire_summary *sum)
{
    wire top = {buf, buf + len}, sub;
    uint32_t f;
    int type;
    size_t instances = 0, items = 0, fields = 0, names;
    ss_status *st = NULL;
    memset(sum, 0, sizeof *sum);
    while (!st && wire_next(&top, &f, &type, &sub)) {
        st = over_budget(++fields);
        if (!st && f == 1 && type == 2) st = scan_spec(sub, sum, &fields);
        if (st || f != 2 || type != 2) continue;
        if (++instances > MAX_INSTANCES)
            return ss_errf(SS_ERR_LIMIT, "request has more than %d instances", MAX_INSTANCES);
        st = scan_instance(sub, &items, &fields, &names);
        if (names > sum->max_names) sum->max_names = names;
    }
    return st;
}

/* ------------------------------------------------------------------ decoded size */

/* One map entry's copies in the serving form: its name, a string's bytes, an empty tensor's
 * 1-byte block (numeric tensor bytes are moved from the unpacked message, not copied). */
static size_t entry_bytes(wire entry)
{
    uint32_t f, tf;
    int type, tt;
    wire v, tv;
    size_t bytes = ss_pb_block_bytes(1), data = 0;
    while (wire_next(&entry, &f, &type, &v)) {
        if (f == 1 && type == 2) bytes += ss_pb_block_bytes((size_t)(v.end - v.p) + 1);
        while (f == 2 && type == 2 && wire_next(&v, &tf, &tt, &tv)) {
            if (tf == 3 && tt == 2) data += (size_t)(tv.end - tv.p);
            if (tf == 4 && tt == 2)
                bytes += ss_pb_block_bytes(sizeof(ss_string)) +
                         ss_pb_block_bytes((size_t)(tv.end - tv.p) + 1);
        }
    }
    return bytes + (data ? 0 : ss_pb_block_bytes(1));
}

/* The serving form convert_instances builds while the unpacked message is still alive. */
static size_t serving_bytes(const uint8_t *buf, size_t len)
{
    wire top = {buf, buf + len}, inst, entry;
    uint32_t f;
    int type;
    size_t instances = 0, bytes = 0;
    while (wire_next(&top, &f, &type, &inst)) {
        if (f != 2 || type != 2) continue;
        size_t items = 0;
        instances++;
        while (wire_next(&inst, &f, &type, &entry)) {
            if (f != 1 || type != 2) continue;
            items++;
            bytes += entry_bytes(entry);
        }
        bytes += ss_pb_items_bytes(items);
    }
    return bytes + ss_pb_block_bytes(instances * sizeof(ss_serving_instance));
}

size_t ss_grpc_request_decoded_bytes(const uint8_t *buf, size_t len)
{
    size_t unpacked =
        ss_pb_unpacked_bytes(&mindspore__serving__proto__predict_request__descriptor, buf, len);
    size_t serving = serving_bytes(buf, len);
    return unpacked > SIZE_MAX - serving ? SIZE_MAX : unpacked + serving;
}

static bool str_ok(const char *s)
{
    return ss_serving_utf8_valid(s, strlen(s));
}

/* proto3 strings are UTF-8; a C++ server (MindSpore's) refuses to parse anything else. */
static bool strings_valid(const pb_request *pb)
{
    const pb_spec *spec = pb->servable_spec;
    if (spec && (!str_ok(spec->name) || !str_ok(spec->method_name))) return false;
    for (size_t i = 0; i < pb->n_instances; i++)
        for (size_t k = 0; k < pb->instances[i]->n_items; k++)
            if (!str_ok(pb->instances[i]->items[k]->key)) return false;
    return true;
}

ss_status *ss_grpc_decode_request(const uint8_t *buf, size_t len, ss_predict_request **out,
                                  ss_predict_reply **invalid)
{
    return ss_grpc_decode_request_limited(buf, len, NULL, NULL, out, invalid);
}

ss_status *ss_grpc_decode_request_limited(const uint8_t *buf, size_t len,
                                          ss_serving_name_limit_fn name_limit, void *limit_ctx,
                                          ss_predict_request **out, ss_predict_reply **invalid)
{
    *out = NULL;
    *invalid = NULL;
    wire_summary sum;
    ss_status *st = prescan(buf, len, &sum);
    if (st) return st;
    /* every method allows SS_SERVING_MIN_NAME_LIMIT names: only more needs the method's count */
    size_t limit = SS_SERVING_MIN_NAME_LIMIT;
    if (sum.max_names > limit && name_limit)
        limit = name_limit(limit_ctx, sum.servable, sum.method, sum.version);
    if (sum.max_names > limit) {
        *invalid = ss_predict_reply_error(
            SS_SERVING_INVALID_INPUTS,
            "An instance has %zu inputs, more than the limit %zu (max(%d, 4 x the inputs of "
            "servable %.128s, method %.128s))",
            sum.max_names, limit, SS_SERVING_MIN_NAME_LIMIT, sum.servable, sum.method);
        *out = ss_predict_request_new(str_ok(sum.servable) ? sum.servable : "",
                                      str_ok(sum.method) ? sum.method : "", sum.version);
        if (*invalid && *out) return NULL;
        ss_predict_reply_free(*invalid);
        ss_predict_request_free(*out);
        *invalid = NULL;
        *out = NULL;
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    pb_request *pb = mindspore__serving__proto__predict_request__unpack(NULL, len, buf);
    if (!pb) return ss_errf(SS_ERR_INVALID, "cannot parse PredictRequest (%zu bytes)", len);
    if (!strings_valid(pb)) {
        mindspore__serving__proto__predict_request__free_unpacked(pb, NULL);
        return ss_errf(SS_ERR_INVALID, "cannot parse PredictRequest: a string field is not "
                                       "valid UTF-8");
    }
    const pb_spec *spec = pb->servable_spec;
    ss_predict_request *req = ss_predict_request_new(
        spec ? spec->name : "", spec ? spec->method_name : "", spec ? spec->version_number : 0);
    if (!req) {
        mindspore__serving__proto__predict_request__free_unpacked(pb, NULL);
        return ss_errf(SS_ERR_NOMEM, "cannot allocate a request");
    }
    bool complete;
    *invalid = convert_instances(pb, req, &complete);
    mindspore__serving__proto__predict_request__free_unpacked(pb, NULL);
    if (!complete && !*invalid) { /* out of memory for the very reply that says so */
        ss_predict_request_free(req);
        return ss_errf(SS_ERR_NOMEM, "out of memory decoding the request");
    }
    *out = req;
    return NULL;
}

/* ------------------------------------------------------------------ replies */

typedef struct {
    pb_item entry;
    pb_tensor tensor;
    pb_shape shape;
    ProtobufCBinaryData *strings;
} out_item;

static ss_status *fill_item(out_item *o, const ss_serving_item *item)
{
    const ss_tensor *t = &item->tensor;
    mindspore__serving__proto__instance__items_entry__init(&o->entry);
    mindspore__serving__proto__tensor__init(&o->tensor);
    mindspore__serving__proto__tensor_shape__init(&o->shape);
    o->entry.key = item->name;
    o->entry.value = &o->tensor;
    o->tensor.shape = &o->shape;
    o->tensor.dtype =
        (Mindspore__Serving__Proto__DataType)ss_grpc_dtype_to_ms(t->dtype, item->is_bytes);
    if (t->dtype != SS_DT_STRING) {
        o->shape.n_dims = (size_t)t->ndim;
        o->shape.dims = (int64_t *)t->dims;
        o->tensor.tensor_data_case = MINDSPORE__SERVING__PROTO__TENSOR__TENSOR_DATA_DATA;
        o->tensor.data.data = t->data;
        o->tensor.data.len = t->nbytes;
        return NULL;
    }
    int64_t n = ss_tensor_numel(t);
    if (n > 1) { /* scalars go out with shape []; longer string lists keep their shape */
        o->shape.n_dims = (size_t)t->ndim;
        o->shape.dims = (int64_t *)t->dims;
    }
    o->strings = calloc(n > 0 ? (size_t)n : 1, sizeof *o->strings);
    if (!o->strings) return ss_errf(SS_ERR_NOMEM, "cannot allocate reply strings");
    const ss_string *s = t->data;
    for (int64_t i = 0; i < n; i++) {
        o->strings[i].data = (uint8_t *)s[i].data;
        o->strings[i].len = s[i].len;
    }
    o->tensor.n_bytes_val = (size_t)n;
    o->tensor.bytes_val = o->strings;
    return NULL;
}

typedef struct {
    pb_instance *instances;
    pb_instance **instance_ptrs;
    pb_error *errors;
    pb_error **error_ptrs;
    out_item **items;     /* per instance */
    pb_item ***item_ptrs; /* per instance */
    size_t count;
} reply_parts;

static void free_parts(reply_parts *p)
{
    for (size_t i = 0; i < p->count; i++) {
        if (p->item_ptrs) free(p->item_ptrs[i]); /* even when its items could not be allocated */
        if (p->items && p->items[i]) {
            /* strings arrays hang off each item */
            size_t n = p->instances[i].n_items;
            for (size_t k = 0; k < n; k++)
                free(p->items[i][k].strings);
            free(p->items[i]);
        }
    }
    free(p->items);
    free(p->item_ptrs);
    free(p->instances);
    free(p->instance_ptrs);
    free(p->errors);
    free(p->error_ptrs);
}

static ss_status *build_instances(reply_parts *p, const ss_predict_reply *reply)
{
    p->count = reply->count;
    size_t n = reply->count ? reply->count : 1;
    p->instances = calloc(n, sizeof *p->instances);
    p->instance_ptrs = calloc(n, sizeof *p->instance_ptrs);
    p->items = calloc(n, sizeof *p->items);
    p->item_ptrs = calloc(n, sizeof *p->item_ptrs);
    if (!p->instances || !p->instance_ptrs || !p->items || !p->item_ptrs)
        return ss_errf(SS_ERR_NOMEM, "cannot allocate reply instances");
    for (size_t i = 0; i < reply->count; i++) {
        const ss_serving_instance *inst = &reply->instances[i];
        pb_instance *pi = &p->instances[i];
        mindspore__serving__proto__instance__init(pi);
        p->instance_ptrs[i] = pi;
        if (!inst->count) continue;
        p->items[i] = calloc(inst->count, sizeof *p->items[i]);
        p->item_ptrs[i] = calloc(inst->count, sizeof *p->item_ptrs[i]);
        if (!p->items[i] || !p->item_ptrs[i])
            return ss_errf(SS_ERR_NOMEM, "cannot allocate reply items");
        for (size_t k = 0; k < inst->count; k++) {
            pi->n_items = k + 1; /* so free_parts sees every filled item */
            ss_status *st = fill_item(&p->items[i][k], &inst->items[k]);
            if (st) return st;
            p->item_ptrs[i][k] = &p->items[i][k].entry;
        }
        pi->items = p->item_ptrs[i];
    }
    return NULL;
}

static ss_status *build_errors(reply_parts *p, const ss_predict_reply *reply)
{
    if (!reply->error_count) return NULL;
    p->errors = calloc(reply->error_count, sizeof *p->errors);
    p->error_ptrs = calloc(reply->error_count, sizeof *p->error_ptrs);
    if (!p->errors || !p->error_ptrs) return ss_errf(SS_ERR_NOMEM, "cannot allocate errors");
    for (size_t i = 0; i < reply->error_count; i++) {
        mindspore__serving__proto__error_msg__init(&p->errors[i]);
        p->errors[i].error_code = reply->errors[i].code;
        const char *m = reply->errors[i].message ? reply->errors[i].message : "";
        p->errors[i].error_msg.data = (uint8_t *)m;
        p->errors[i].error_msg.len = strlen(m);
        p->error_ptrs[i] = &p->errors[i];
    }
    return NULL;
}

ss_status *ss_grpc_encode_reply(const ss_predict_request *req, const ss_predict_reply *reply,
                                uint8_t **buf, size_t *len)
{
    pb_reply out = MINDSPORE__SERVING__PROTO__PREDICT_REPLY__INIT;
    pb_spec spec = MINDSPORE__SERVING__PROTO__SERVABLE_SPEC__INIT;
    spec.name = req->servable;
    spec.method_name = req->method;
    spec.version_number = req->version;
    out.servable_spec = &spec;

    reply_parts parts = {0};
    ss_status *st = build_instances(&parts, reply);
    if (!st) st = build_errors(&parts, reply);
    if (!st) {
        out.n_instances = reply->count;
        out.instances = parts.instance_ptrs;
        out.n_error_msg = reply->error_count;
        out.error_msg = parts.error_ptrs;
        *len = mindspore__serving__proto__predict_reply__get_packed_size(&out);
        *buf = malloc(*len ? *len : 1);
        if (!*buf)
            st = ss_errf(SS_ERR_NOMEM, "cannot allocate a %zu-byte reply", *len);
        else
            mindspore__serving__proto__predict_reply__pack(&out, *buf);
    }
    free_parts(&parts);
    return st;
}
