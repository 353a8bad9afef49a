/*
 * kserve_codec: the Open Inference Protocol's data model over serving.h, shared by the REST and
 * gRPC codecs (see kserve_codec.h for the model-name and batching rules). Input rows are borrowed
 * from the decoded message wherever their alignment allows, so a binary tensor is never copied
 * between the socket buffer and the handler.
 */
#include "kserve_codec.h"
#include "budget.h"
#include "kserve_pool.h"
#include "kserve_shm.h"
#include "pb_budget.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ss_kserve_fail(ss_kserve_error *e, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    e->status = status;
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

int ss_kserve_grpc_status(int http_status)
{
    switch (http_status) {
    case 400:
        return 3; /* INVALID_ARGUMENT */
    case 404:
        return 5; /* NOT_FOUND */
    case 405:
    case 501:
        return 12; /* UNIMPLEMENTED */
    case 413:
        return 8; /* RESOURCE_EXHAUSTED */
    case 503:
        return 14; /* UNAVAILABLE */
    default:
        return 13; /* INTERNAL */
    }
}

/* ------------------------------------------------------------------ datatypes */

static const struct {
    const char *name;
    ss_dtype dtype;
} dtype_names[] = {
    {"BOOL", SS_DT_BOOL},     {"UINT8", SS_DT_UINT8},   {"UINT16", SS_DT_UINT16},
    {"UINT32", SS_DT_UINT32}, {"UINT64", SS_DT_UINT64}, {"INT8", SS_DT_INT8},
    {"INT16", SS_DT_INT16},   {"INT32", SS_DT_INT32},   {"INT64", SS_DT_INT64},
    {"FP16", SS_DT_FLOAT16},  {"FP32", SS_DT_FLOAT32},  {"FP64", SS_DT_FLOAT64},
    {"BYTES", SS_DT_STRING},  {"BF16", SS_DT_BFLOAT16},
};

const char *ss_kserve_dtype_name(ss_dtype dt)
{
    for (size_t i = 0; i < sizeof dtype_names / sizeof *dtype_names; i++)
        if (dtype_names[i].dtype == dt) return dtype_names[i].name;
    return NULL;
}

ss_dtype ss_kserve_dtype_parse(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof dtype_names / sizeof *dtype_names; i++)
        if (strlen(dtype_names[i].name) == len && memcmp(dtype_names[i].name, name, len) == 0)
            return dtype_names[i].dtype;
    return SS_DT_UNDEFINED;
}

/* ------------------------------------------------------------------ calls */

ss_kserve_call *ss_kserve_call_new(void)
{
    return calloc(1, sizeof(ss_kserve_call));
}

void ss_kserve_call_free(ss_kserve_call *call)
{
    if (!call) return;
    free(call->model);
    ss_serving_signature_free(call->sig);
    free(call->id);
    for (size_t i = 0; i < call->n_outputs; i++) {
        free(call->outputs[i].name);
        free(call->outputs[i].shm_region);
    }
    free(call->outputs);
    for (size_t i = 0; i < call->n_owned; i++)
        free(call->owned[i]);
    free(call->owned);
    ss_kserve_shm_let_go(call);
    for (size_t i = 0; i < call->n_pooled; i++) /* a rank may still write the others */
        (call->agents_done ? ss_kserve_pool_give : ss_kserve_pool_drop)(call->pooled[i]);
    free(call->pooled);
    if (call->wire_free) call->wire_free(call->wire);
    ss_server_rows_give(call->rows_held);
    free(call);
}

bool ss_kserve_call_own(ss_kserve_call *call, void *buf)
{
    if (call->n_owned == call->cap_owned) {
        size_t cap = call->cap_owned ? call->cap_owned * 2 : 8;
        void **grown = realloc(call->owned, cap * sizeof *grown);
        if (!grown) {
            free(buf);
            return false;
        }
        call->owned = grown;
        call->cap_owned = cap;
    }
    call->owned[call->n_owned++] = buf;
    return true;
}

/* ------------------------------------------------------------------ models */

bool ss_kserve_parse_version(const char *text, size_t len, uint64_t *version)
{
    *version = 0;
    if (!text || len == 0) return true;
    if (len > 10) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9') return false;
        v = v * 10 + (uint64_t)(text[i] - '0');
    }
    if (v > UINT32_MAX) return false;
    *version = v;
    return true;
}

static const ss_serving_method *find_method(const ss_serving_signature *sig, const char *name)
{
    for (size_t m = 0; m < sig->n_methods; m++)
        if (strcmp(sig->methods[m].name, name) == 0) return &sig->methods[m];
    return NULL;
}

/* NAME: the servable's only method. */
static int describe_plain(const ss_predict_handler *h, const char *model, uint64_t version,
                          ss_kserve_call *call, ss_kserve_error *err)
{
    ss_serving_signature *sig = NULL;
    char why[400] = "";
    int rc = h->describe(h->ctx, model, version, &sig, why, sizeof why);
    if (rc != SS_DESCRIBE_OK) {
        ss_kserve_fail(err, rc == SS_DESCRIBE_NOT_READY ? 503 : 404, "%s", why);
        return rc;
    }
    if (sig->n_methods != 1) {
        ss_kserve_fail(err, 404,
                       "model '%s' has %zu methods: address one as model '%s.METHOD' "
                       "(e.g. '%s.%s')",
                       model, sig->n_methods, model, model,
                       sig->n_methods ? sig->methods[0].name : "METHOD");
        ss_serving_signature_free(sig);
        return SS_DESCRIBE_NOT_FOUND;
    }
    call->sig = sig;
    call->method = &sig->methods[0];
    return SS_DESCRIBE_OK;
}

/* NAME.METHOD */
static bool describe_dotted(const ss_predict_handler *h, const char *model, uint64_t version,
                            ss_kserve_call *call, ss_kserve_error *err)
{
    const char *dot = strrchr(model, '.');
    if (!dot || dot == model || !dot[1]) return false;
    char servable[256];
    size_t n = (size_t)(dot - model);
    if (n >= sizeof servable) return false;
    memcpy(servable, model, n);
    servable[n] = 0;
    ss_serving_signature *sig = NULL;
    char why[400] = "";
    int rc = h->describe(h->ctx, servable, version, &sig, why, sizeof why);
    if (rc == SS_DESCRIBE_NOT_FOUND) return false;
    if (rc == SS_DESCRIBE_NOT_READY) {
        ss_kserve_fail(err, 503, "%s", why);
        return true;
    }
    const ss_serving_method *m = find_method(sig, dot + 1);
    if (!m) {
        ss_kserve_fail(err, 404, "unknown model '%s': servable '%s' has no method '%s'", model,
                       servable, dot + 1);
        ss_serving_signature_free(sig);
        return true;
    }
    call->sig = sig;
    call->method = m;
    err->status = 0;
    return true;
}

bool ss_kserve_resolve(const ss_predict_handler *h, const char *model, uint64_t version,
                       ss_kserve_call *call, ss_kserve_error *err)
{
    if (!h->describe) {
        ss_kserve_fail(err, 404, "unknown model '%s': this server has no model metadata", model);
        return false;
    }
    if (!model[0]) {
        ss_kserve_fail(err, 404, "empty model name");
        return false;
    }
    int rc = describe_plain(h, model, version, call, err);
    if (rc == SS_DESCRIBE_NOT_FOUND) {
        ss_kserve_error dotted = {0};
        if (describe_dotted(h, model, version, call, &dotted)) {
            *err = dotted;
            rc = dotted.status ? SS_DESCRIBE_NOT_FOUND : SS_DESCRIBE_OK;
        }
    }
    if (rc != SS_DESCRIBE_OK) return false;
    call->model = strdup(model);
    if (!call->model) {
        ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------ inputs */

int64_t ss_kserve_numel(int ndim, const int64_t *dims)
{
    return ss_shape_numel(ndim, dims);
}

bool ss_kserve_bytes_check(const uint8_t *data, size_t len, int64_t count)
{
    size_t off = 0;
    for (int64_t i = 0; i < count; i++) {
        if (len - off < 4) return false;
        uint32_t n;
        memcpy(&n, data + off, 4);
        off += 4;
        if (n > len - off) return false;
        off += n;
    }
    return off == len;
}

static const ss_serving_tensor_spec *find_spec(const ss_serving_tensor_spec *specs, size_t n,
                                               const char *name)
{
    for (size_t k = 0; k < n; k++)
        if (strcmp(specs[k].name, name) == 0) return &specs[k];
    return NULL;
}

static bool dims_fit(const int64_t *want, const int64_t *got, int ndim)
{
    for (int d = 0; d < ndim; d++)
        if (want[d] >= 0 && want[d] != got[d]) return false;
    return true;
}

/* The shape the protocol expects for a spec: [-1]+S when batched. */
static const char *spec_shape_str(const ss_serving_tensor_spec *sp, char *buf, size_t cap)
{
    int64_t dims[SS_MAX_DIMS + 1];
    int n = 0;
    if (sp->batched) dims[n++] = -1;
    for (int d = 0; d < sp->ndim; d++)
        dims[n++] = sp->dims[d];
    return ss_shape_str(n, dims, buf, cap);
}

/* The data holds exactly the shape's elements (BYTES: that many length-prefixed strings). */
static bool data_fits(const ss_kserve_input *in)
{
    int64_t numel = ss_kserve_numel(in->ndim, in->dims);
    if (numel < 0) return false;
    if (in->dtype == SS_DT_STRING) return ss_kserve_bytes_check(in->data, in->nbytes, numel);
    size_t elem = ss_dtype_size(in->dtype);
    return (uint64_t)numel <= SIZE_MAX / elem && in->nbytes == (size_t)numel * elem;
}

bool ss_kserve_check_dtype(const ss_kserve_call *call, const char *name, ss_dtype dtype,
                           ss_kserve_error *err)
{
    const ss_serving_method *m = call->method;
    const ss_serving_tensor_spec *sp = find_spec(m->inputs, m->n_inputs, name);
    /* SS_DT_UNDEFINED: not known here (a generate method's parameters, a method of Python stages
     * only): any datatype, BYTES too; the backend checks */
    if (!sp || sp->dtype == dtype || sp->dtype == SS_DT_UNDEFINED) return true;
    const char *want = ss_kserve_dtype_name(sp->dtype);
    ss_kserve_fail(err, 400, "input '%s' of model '%s': datatype %s does not match the model's %s",
                   name, call->model, ss_kserve_dtype_name(dtype), want ? want : "?");
    return false;
}

/* Datatype and shape of one input against its spec; sets the batch size from batched inputs. */
static bool check_input(ss_kserve_call *call, const ss_kserve_input *in,
                        const ss_serving_tensor_spec *sp, int64_t *batch, ss_kserve_error *err)
{
    const char *model = call->model;
    if (!ss_kserve_check_dtype(call, in->name, in->dtype, err)) return false;
    char got[160], want[160];
    ss_shape_str(in->ndim, in->dims, got, sizeof got);
    /* a spec of no known datatype knows no shape either (see ss_kserve_check_dtype) */
    bool fits =
        sp->dtype == SS_DT_UNDEFINED ||
        (sp->batched ? in->ndim == sp->ndim + 1 && dims_fit(sp->dims, in->dims + 1, sp->ndim)
                     : in->ndim == sp->ndim && dims_fit(sp->dims, in->dims, sp->ndim));
    if (!fits) {
        ss_kserve_fail(err, 400, "input '%s' of model '%s': shape %s does not match the model's %s",
                       in->name, model, got, spec_shape_str(sp, want, sizeof want));
        return false;
    }
    if (!data_fits(in)) {
        ss_kserve_fail(err, 400, "input '%s' of model '%s': %zu bytes of data do not hold shape %s",
                       in->name, model, in->nbytes, got);
        return false;
    }
    if (!sp->batched) return true;
    if (in->dims[0] == 0) {
        ss_kserve_fail(err, 400, "input '%s' of model '%s': batch size 0", in->name, model);
        return false;
    }
    if (*batch >= 0 && *batch != in->dims[0]) {
        ss_kserve_fail(err, 400,
                       "input '%s' of model '%s': batch size %lld differs from the other inputs' "
                       "%lld",
                       in->name, model, (long long)in->dims[0], (long long)*batch);
        return false;
    }
    *batch = in->dims[0];
    return true;
}

/* Every spec input once, nothing else. */
static bool check_names(const ss_kserve_call *call, const ss_kserve_input *in, size_t n,
                        ss_kserve_error *err)
{
    const ss_serving_method *m = call->method;
    for (size_t i = 0; i < n; i++) {
        if (!find_spec(m->inputs, m->n_inputs, in[i].name)) {
            ss_kserve_fail(err, 400, "unexpected inference input '%s' for model '%s'", in[i].name,
                           call->model);
            return false;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(in[i].name, in[j].name) == 0) {
                ss_kserve_fail(err, 400, "input '%s' of model '%s' is given twice", in[i].name,
                               call->model);
                return false;
            }
    }
    for (size_t k = 0; k < m->n_inputs; k++) {
        bool given = false;
        for (size_t i = 0; i < n && !given; i++)
            given = strcmp(in[i].name, m->inputs[k].name) == 0;
        if (!given) {
            ss_kserve_fail(err, 400, "model '%s' expects input '%s', the request has none",
                           call->model, m->inputs[k].name);
            return false;
        }
    }
    return true;
}

/* A fixed-size input whose bytes are not aligned for its dtype (a REST binary tensor after an
 * odd-sized JSON header) is copied once, whole, so its rows can borrow from the copy. */
static bool align_input(ss_kserve_call *call, ss_kserve_input *in, ss_kserve_error *err)
{
    size_t elem = ss_dtype_size(in->dtype);
    if (in->dtype == SS_DT_STRING || elem <= 1 || (uintptr_t)in->data % elem == 0) return true;
    uint8_t *copy = malloc(in->nbytes ? in->nbytes : 1);
    if (!copy || !ss_kserve_call_own(call, copy)) {
        ss_kserve_fail(err, 500, "out of memory copying input '%s'", in->name);
        return false;
    }
    memcpy(copy, in->data, in->nbytes);
    in->data = copy;
    return true;
}

/* Instance `row`'s part of a fixed-size (aligned) input, borrowed. */
static ss_status *put_row(ss_serving_instance *inst, const ss_kserve_input *in,
                          const ss_serving_tensor_spec *sp, size_t row, size_t rows)
{
    size_t row_bytes = in->nbytes / rows;
    int ndim = sp->batched ? in->ndim - 1 : in->ndim;
    const int64_t *dims = sp->batched ? in->dims + 1 : in->dims;
    ss_tensor t;
    ss_status *st = ss_tensor_borrow(&t, in->dtype, ndim, dims,
                                     (void *)(in->data + row * row_bytes), row_bytes);
    if (!st) st = ss_serving_instance_put(inst, in->name, &t, false);
    ss_tensor_free(&t);
    return st;
}

/* Element `row` of a BYTES input as a one-string tensor. */
static ss_status *put_string(ss_serving_instance *inst, const ss_kserve_input *in,
                             const ss_serving_tensor_spec *sp, size_t row)
{
    size_t off = 0;
    uint32_t n = 0;
    for (size_t i = 0;; i++) {
        memcpy(&n, in->data + off, 4);
        off += 4;
        if (i == row) break;
        off += n;
    }
    int ndim = sp->batched ? in->ndim - 1 : in->ndim;
    const int64_t *dims = sp->batched ? in->dims + 1 : in->dims;
    ss_tensor t;
    ss_status *st = ss_tensor_alloc(&t, SS_DT_STRING, ndim, dims);
    if (!st) st = ss_tensor_set_string(&t, 0, (const char *)in->data + off, n);
    if (!st) st = ss_serving_instance_put(inst, in->name, &t, true);
    ss_tensor_free(&t);
    return st;
}

static bool fill_instances(ss_kserve_call *call, const ss_kserve_input *in, size_t n,
                           ss_predict_request *req, ss_kserve_error *err)
{
    const ss_serving_method *m = call->method;
    for (size_t i = 0; i < n; i++) {
        const ss_serving_tensor_spec *sp = find_spec(m->inputs, m->n_inputs, in[i].name);
        int64_t numel = ss_kserve_numel(in[i].ndim, in[i].dims);
        if (in[i].dtype == SS_DT_STRING && numel != (sp->batched ? (int64_t)req->count : 1)) {
            ss_kserve_fail(err, 400,
                           "BYTES input '%s' of model '%s': %lld elements, but a servable takes "
                           "one string per instance",
                           in[i].name, call->model, (long long)numel);
            return false;
        }
        ss_kserve_input aligned = in[i];
        if (!align_input(call, &aligned, err)) return false;
        for (size_t r = 0; r < req->count; r++) {
            size_t row = sp->batched ? r : 0, rows = sp->batched ? req->count : 1;
            ss_status *st = in[i].dtype == SS_DT_STRING
                                ? put_string(&req->instances[r], &in[i], sp, row)
                                : put_row(&req->instances[r], &aligned, sp, row, rows);
            if (st) {
                ss_kserve_fail(err, 500, "%s", st->msg);
                ss_status_free(st);
                return false;
            }
        }
    }
    return true;
}

/* One row of a batched request as the server holds it (pb_budget.h), named by the method's
 * longest input or output name. */
static size_t row_cost(const ss_serving_method *m)
{
    size_t name = 1;
    for (size_t k = 0; k < m->n_inputs; k++)
        if (strlen(m->inputs[k].name) + 1 > name) name = strlen(m->inputs[k].name) + 1;
    for (size_t k = 0; k < m->n_outputs; k++)
        if (strlen(m->outputs[k].name) + 1 > name) name = strlen(m->outputs[k].name) + 1;
    return ss_pb_instance_bytes(m->n_inputs, m->n_outputs, name, false);
}

/* The rows are only known once the model is, after the message was decoded and charged against
 * the front end's budgets: their cost is taken here, before any instance exists, and given back
 * with the call (1 M one-float rows, a 4 MB request, took 1.25 GB; 23 M rows in 92 MB would
 * take ~28 GB). */
static bool rows_fit(ss_kserve_call *call, int64_t rows, ss_kserve_error *err)
{
    if (rows <= 0) return true;
    size_t per_row = row_cost(call->method), used, limit;
    uint64_t need = (uint64_t)rows <= SIZE_MAX / per_row ? (uint64_t)rows * per_row : SIZE_MAX;
    if (ss_server_rows_take((size_t)need, &used, &limit)) {
        call->rows_held = (size_t)need;
        return true;
    }
    /* alone over the limit: too large (413); only with the rows others hold: busy (503) */
    ss_kserve_fail(
        err, need > limit ? 413 : 503,
        "model '%s': a batch of %lld rows takes ~%llu MB of serving instances (%zu bytes "
        "a row) and the server holds %zu MB of other requests' rows: over the server's "
        "limit of %zu MB of batch rows in flight (at most %zu rows a request; "
        "--kserve-max-batch-rows-mb)%s",
        call->model, (long long)rows, (unsigned long long)(need >> 20), per_row, used >> 20,
        limit >> 20, limit / per_row, need > limit ? "" : ": try again later");
    return false;
}

bool ss_kserve_build_request(ss_kserve_call *call, const ss_kserve_input *in, size_t n,
                             ss_predict_request **out, ss_kserve_error *err)
{
    *out = NULL;
    const ss_serving_method *m = call->method;
    if (!check_names(call, in, n, err)) return false;
    int64_t batch = -1;
    for (size_t i = 0; i < n; i++)
        if (!check_input(call, &in[i], find_spec(m->inputs, m->n_inputs, in[i].name), &batch, err))
            return false;
    if (!rows_fit(call, batch, err)) return false;
    call->batched = batch >= 0;
    call->instances = batch >= 0 ? (size_t)batch : 1;
    ss_predict_request *req =
        ss_predict_request_new(call->sig->servable, m->name, call->sig->version);
    if (req && !ss_predict_request_reserve(req, call->instances)) {
        ss_predict_request_free(req);
        req = NULL;
    }
    for (size_t r = 0; req && r < call->instances; r++)
        if (!ss_predict_request_add_instance(req)) {
            ss_predict_request_free(req);
            req = NULL;
        }
    if (!req) {
        ss_kserve_fail(err, 500, "out of memory building the request");
        return false;
    }
    if (!fill_instances(call, in, n, req, err) || !ss_kserve_shm_places(call, req, err) ||
        !ss_kserve_pool_places(call, req, err)) {
        ss_predict_request_free(req);
        return false;
    }
    *out = req;
    return true;
}

bool ss_kserve_check_outputs(const ss_kserve_call *call, ss_kserve_error *err)
{
    const ss_serving_method *m = call->method;
    for (size_t i = 0; i < call->n_outputs; i++) {
        if (m->n_outputs && !find_spec(m->outputs, m->n_outputs, call->outputs[i].name)) {
            ss_kserve_fail(err, 400, "unexpected inference output '%s' for model '%s'",
                           call->outputs[i].name, call->model);
            return false;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(call->outputs[i].name, call->outputs[j].name) == 0) {
                ss_kserve_fail(err, 400, "output '%s' of model '%s' is requested twice",
                               call->outputs[i].name, call->model);
                return false;
            }
    }
    return true;
}

/* ------------------------------------------------------------------ outputs */

static int code_status(int64_t code)
{
    if (code == SS_SERVING_INVALID_INPUTS) return 400;
    if (code == SS_SERVING_WORKER_UNAVAILABLE || code == SS_SERVING_SERVABLE_UNAVAILABLE)
        return 503;
    return 500;
}

static bool reply_failed(const ss_predict_reply *reply, ss_kserve_error *err)
{
    if (reply->error_count == 0) return false;
    if (reply->count == 0) {
        ss_kserve_fail(err, code_status(reply->errors[0].code), "%s", reply->errors[0].message);
        return true;
    }
    for (size_t i = 0; i < reply->error_count; i++)
        if (reply->errors[i].code != 0) {
            ss_kserve_fail(err, code_status(reply->errors[i].code), "instance %zu: %s", i,
                           reply->errors[i].message);
            return true;
        }
    return false;
}

/* BYTES output: every instance's string, length-prefixed. */
static bool gather_strings(ss_kserve_call *call, const ss_serving_item **items, size_t n,
                           ss_kserve_output *o)
{
    size_t total = 0;
    for (size_t r = 0; r < n; r++)
        total += 4 + ((const ss_string *)items[r]->tensor.data)->len;
    uint8_t *buf = malloc(total ? total : 1);
    if (!buf || !ss_kserve_call_own(call, buf)) return false;
    size_t off = 0;
    for (size_t r = 0; r < n; r++) {
        const ss_string *s = items[r]->tensor.data;
        uint32_t len = (uint32_t)s->len;
        memcpy(buf + off, &len, 4);
        if (len) memcpy(buf + off + 4, s->data, len);
        off += 4 + len;
    }
    o->data = buf;
    o->nbytes = total;
    return true;
}

/* Stack instance rows into [N]+S (or take the single instance whole). */
static bool stack_output(ss_kserve_call *call, const ss_serving_item **items, size_t n,
                         bool stacked, ss_kserve_output *o, ss_kserve_error *err)
{
    const ss_tensor *t0 = &items[0]->tensor;
    char a[160], b[160];
    for (size_t r = 1; r < n; r++) {
        const ss_tensor *t = &items[r]->tensor;
        if (t->dtype != t0->dtype || !ss_shape_equal(t->ndim, t->dims, t0->ndim, t0->dims)) {
            ss_kserve_fail(err, 500, "output '%s': instance %zu is %s %s, instance 0 %s %s",
                           o->name, r, ss_dtype_name(t->dtype),
                           ss_shape_str(t->ndim, t->dims, a, sizeof a), ss_dtype_name(t0->dtype),
                           ss_shape_str(t0->ndim, t0->dims, b, sizeof b));
            return false;
        }
    }
    if (stacked && t0->ndim + 1 > SS_MAX_DIMS) {
        ss_kserve_fail(err, 500, "output '%s' has %d dims, too many to add a batch dim", o->name,
                       t0->ndim);
        return false;
    }
    o->dtype = t0->dtype;
    o->ndim = 0;
    if (stacked) o->dims[o->ndim++] = (int64_t)n;
    for (int d = 0; d < t0->ndim; d++)
        o->dims[o->ndim++] = t0->dims[d];
    if (t0->dtype == SS_DT_STRING) return gather_strings(call, items, n, o);
    if (n == 1) {
        o->data = t0->data;
        o->nbytes = t0->nbytes;
        return true;
    }
    size_t total = t0->nbytes * n;
    uint8_t *buf = malloc(total ? total : 1);
    if (!buf || !ss_kserve_call_own(call, buf)) return false;
    for (size_t r = 0; r < n; r++)
        memcpy(buf + r * t0->nbytes, items[r]->tensor.data, t0->nbytes);
    o->data = buf;
    o->nbytes = t0->nbytes * n;
    return true;
}

/* The output names to return, in order: requested, else the method's, else what instance 0 has. */
static size_t output_names(const ss_kserve_call *call, const ss_predict_reply *reply,
                           const char **names, size_t cap)
{
    size_t n = 0;
    const ss_serving_method *m = call->method;
    if (call->n_outputs)
        for (size_t i = 0; i < call->n_outputs && n < cap; i++)
            names[n++] = call->outputs[i].name;
    else if (m->n_outputs)
        for (size_t i = 0; i < m->n_outputs && n < cap; i++)
            names[n++] = m->outputs[i].name;
    else if (reply->count)
        for (size_t i = 0; i < reply->instances[0].count && n < cap; i++)
            names[n++] = reply->instances[0].items[i].name;
    return n;
}

static bool output_binary(const ss_kserve_call *call, const char *name)
{
    for (size_t i = 0; i < call->n_outputs; i++)
        if (strcmp(call->outputs[i].name, name) == 0)
            return call->outputs[i].binary_set ? call->outputs[i].binary : call->binary_output;
    return call->binary_output;
}

static bool collect_one(ss_kserve_call *call, const ss_predict_reply *reply, const char *name,
                        ss_kserve_output *o, ss_kserve_error *err)
{
    const ss_serving_item *stack_items[64];
    const ss_serving_item **items =
        reply->count <= 64 ? stack_items : malloc(reply->count * sizeof *items);
    if (!items) {
        ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    bool ok = true;
    for (size_t r = 0; ok && r < reply->count; r++) {
        items[r] = ss_serving_instance_find(&reply->instances[r], name);
        if (!items[r]) {
            ss_kserve_fail(err, 500, "the model gave no output '%s' for instance %zu", name, r);
            ok = false;
        }
    }
    o->name = name;
    o->binary = output_binary(call, name);
    const ss_serving_tensor_spec *sp =
        find_spec(call->method->outputs, call->method->n_outputs, name);
    bool stacked = reply->count > 1 || (call->batched && (!sp || sp->batched));
    if (ok && !stack_output(call, items, reply->count, stacked, o, err)) {
        if (!err->status) ss_kserve_fail(err, 500, "out of memory stacking output '%s'", name);
        ok = false;
    }
    if (items != stack_items) free(items);
    return ok;
}

bool ss_kserve_collect_outputs(ss_kserve_call *call, const ss_predict_reply *reply,
                               ss_kserve_output **out, size_t *n, ss_kserve_error *err)
{
    *out = NULL;
    *n = 0;
    err->status = 0;
    if (reply_failed(reply, err)) {
        ss_kserve_shm_explain(call, err);
        return false;
    }
    call->agents_done = true; /* a successful reply: the ranks wrote their placed outputs */
    if (reply->count == 0) {
        ss_kserve_fail(err, 500, "the model gave no instances");
        return false;
    }
    const char *names[64];
    size_t count = output_names(call, reply, names, 64);
    ss_kserve_output *outs = calloc(count ? count : 1, sizeof *outs);
    if (!outs) {
        ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    for (size_t i = 0; i < count; i++)
        if (!collect_one(call, reply, names[i], &outs[i], err)) {
            free(outs);
            return false;
        }
    if (!ss_kserve_shm_write_outputs(call, outs, count, err)) {
        free(outs);
        return false;
    }
    *out = outs;
    *n = count;
    return true;
}
