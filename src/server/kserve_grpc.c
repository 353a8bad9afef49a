/*
 * kserve_grpc: the Open Inference Protocol's gRPC codec (see kserve_grpc.h).
 *
 * A decoded ModelInferRequest stays alive with its call: raw_input_contents and the typed
 * contents whose wire type is the tensor's own (INT64, UINT64, FP32, FP64) are borrowed by the
 * request's instances; only narrower integer and BOOL contents are converted into a buffer.
 * Responses point at the reply's (or the call's) bytes and are packed once.
 */
#include "kserve_grpc.h"

#include "kserve_repo.h"
#include "kserve_shm.h"
#include "kserve_stats.h"
#include "pb_budget.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc_service.pb-c.h"

#define SERVER_NAME "shardserve"
#define SERVER_VERSION "0.1.0"
#define PLATFORM "onnx_onnxv1"

/* Serialize any message into a malloc'd buffer. */
static bool pack(const ProtobufCMessage *msg, uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    *out = malloc(n ? n : 1);
    if (!*out) {
        ss_kserve_fail(err, 500, "out of memory packing a %zu-byte reply", n);
        return false;
    }
    *out_len = protobuf_c_message_pack(msg, *out);
    return true;
}

static bool bad_message(const char *what, ss_kserve_error *err)
{
    ss_kserve_fail(err, 400, "cannot parse %s", what);
    return false;
}

/* Every protobuf field, unknown ones included, costs an allocation once unpacked: at most this
 * many per request, counted on the wire first. */
#define MAX_FIELDS (1 << 22)

/* ModelInferRequest's nested messages: parameters (map entries holding an InferParameter),
 * inputs (with their own parameters and contents) and requested outputs. */
static const uint32_t entry_fields[] = {2}, tensor_fields[] = {4, 5}, output_fields[] = {2},
                      request_fields[] = {4, 5, 6};
static const ss_pb_shape param_entry = {1, entry_fields, NULL};
static const ss_pb_shape *const tensor_inner[] = {&param_entry, NULL};
static const ss_pb_shape tensor_shape = {2, tensor_fields, tensor_inner};
static const ss_pb_shape *const output_inner[] = {&param_entry};
static const ss_pb_shape output_shape = {1, output_fields, output_inner};
static const ss_pb_shape *const request_inner[] = {&param_entry, &tensor_shape, &output_shape};
static const ss_pb_shape infer_shape = {3, request_fields, request_inner};

static bool over_budget(const uint8_t *buf, size_t len, const ss_pb_shape *shape,
                        ss_kserve_error *err)
{
    if (!ss_pb_over_budget(buf, len, shape, MAX_FIELDS)) return false;
    ss_kserve_fail(err, 413, "the request has more than %d protobuf fields", MAX_FIELDS);
    return true;
}

/* ------------------------------------------------------------------ health and metadata */

bool ss_kserve_grpc_server_live(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    (void)env;
    if (over_budget(buf, len, NULL, err)) return false;
    Inference__ServerLiveRequest *req = inference__server_live_request__unpack(NULL, len, buf);
    if (!req) return bad_message("ServerLiveRequest", err);
    inference__server_live_request__free_unpacked(req, NULL);
    Inference__ServerLiveResponse resp = INFERENCE__SERVER_LIVE_RESPONSE__INIT;
    resp.live = 1;
    return pack(&resp.base, out, out_len, err);
}

bool ss_kserve_grpc_server_ready(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                 uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    if (over_budget(buf, len, NULL, err)) return false;
    Inference__ServerReadyRequest *req = inference__server_ready_request__unpack(NULL, len, buf);
    if (!req) return bad_message("ServerReadyRequest", err);
    inference__server_ready_request__free_unpacked(req, NULL);
    Inference__ServerReadyResponse resp = INFERENCE__SERVER_READY_RESPONSE__INIT;
    resp.ready = !env->ready || env->ready(env->ready_ctx);
    return pack(&resp.base, out, out_len, err);
}

bool ss_kserve_grpc_server_metadata(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                    uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    if (over_budget(buf, len, NULL, err)) return false;
    Inference__ServerMetadataRequest *req =
        inference__server_metadata_request__unpack(NULL, len, buf);
    if (!req) return bad_message("ServerMetadataRequest", err);
    inference__server_metadata_request__free_unpacked(req, NULL);
    static char *extensions[] = {"binary_tensor_data", "statistics", "system_shared_memory",
                                 "model_repository"};
    Inference__ServerMetadataResponse resp = INFERENCE__SERVER_METADATA_RESPONSE__INIT;
    resp.name = SERVER_NAME;
    resp.version = SERVER_VERSION;
    resp.n_extensions = env->handler->index ? 4 : 3; /* the last one only with a repository */
    resp.extensions = extensions;
    return pack(&resp.base, out, out_len, err);
}

/* Resolve (name, version text) as both model RPCs and ModelInfer do. */
static bool resolve(const ss_predict_handler *h, const char *name, const char *version,
                    ss_kserve_call *call, ss_kserve_error *err)
{
    uint64_t v = 0;
    if (!ss_kserve_parse_version(version, strlen(version), &v)) {
        ss_kserve_fail(err, 404, "unknown version '%.40s' of model '%.200s'", version, name);
        return false;
    }
    return ss_kserve_resolve(h, name, v, call, err);
}

bool ss_kserve_grpc_model_ready(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    if (over_budget(buf, len, NULL, err)) return false;
    Inference__ModelReadyRequest *req = inference__model_ready_request__unpack(NULL, len, buf);
    if (!req) return bad_message("ModelReadyRequest", err);
    ss_kserve_call *call = ss_kserve_call_new();
    bool ok = call != NULL;
    bool ready = ok && resolve(env->handler, req->name, req->version, call, err);
    if (!call) ss_kserve_fail(err, 500, "out of memory");
    /* not ready is an answer (ready = false); unknown models and versions are errors */
    if (ok && !ready && err->status != 503) ok = false;
    ss_kserve_call_free(call);
    inference__model_ready_request__free_unpacked(req, NULL);
    if (!ok) return false;
    Inference__ModelReadyResponse resp = INFERENCE__MODEL_READY_RESPONSE__INIT;
    resp.ready = ready;
    return pack(&resp.base, out, out_len, err);
}

typedef Inference__ModelMetadataResponse__TensorMetadata tensor_meta;

/* TensorMetadata for specs, all in one allocation (pointers, messages, shapes). */
static tensor_meta **metas(const ss_serving_tensor_spec *specs, size_t n)
{
    size_t size =
        n * (sizeof(tensor_meta *) + sizeof(tensor_meta) + (SS_MAX_DIMS + 1) * sizeof(int64_t));
    uint8_t *mem = calloc(1, size ? size : 1);
    if (!mem) return NULL;
    tensor_meta **ptrs = (tensor_meta **)mem;
    tensor_meta *msgs = (tensor_meta *)(mem + n * sizeof(tensor_meta *));
    int64_t *dims = (int64_t *)(msgs + n);
    for (size_t k = 0; k < n; k++) {
        const ss_serving_tensor_spec *sp = &specs[k];
        tensor_meta init = INFERENCE__MODEL_METADATA_RESPONSE__TENSOR_METADATA__INIT;
        msgs[k] = init;
        msgs[k].name = sp->name;
        const char *dt = ss_kserve_dtype_name(sp->dtype);
        msgs[k].datatype = (char *)(dt ? dt : "UNKNOWN");
        int64_t *shape = dims + k * (SS_MAX_DIMS + 1);
        size_t nd = 0;
        if (sp->batched) shape[nd++] = -1;
        for (int d = 0; d < sp->ndim; d++)
            shape[nd++] = sp->dims[d];
        msgs[k].shape = shape;
        msgs[k].n_shape = nd;
        ptrs[k] = &msgs[k];
    }
    return ptrs;
}

bool ss_kserve_grpc_model_metadata(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                   uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    if (over_budget(buf, len, NULL, err)) return false;
    Inference__ModelMetadataRequest *req =
        inference__model_metadata_request__unpack(NULL, len, buf);
    if (!req) return bad_message("ModelMetadataRequest", err);
    ss_kserve_call *call = ss_kserve_call_new();
    bool ok = call && resolve(env->handler, req->name, req->version, call, err);
    if (!call) ss_kserve_fail(err, 500, "out of memory");
    inference__model_metadata_request__free_unpacked(req, NULL);
    if (ok) {
        const ss_serving_method *m = call->method;
        char version[24];
        snprintf(version, sizeof version, "%llu", (unsigned long long)call->sig->version);
        char *versions[] = {version};
        Inference__ModelMetadataResponse resp = INFERENCE__MODEL_METADATA_RESPONSE__INIT;
        resp.name = call->model;
        resp.n_versions = 1;
        resp.versions = versions;
        resp.platform = PLATFORM;
        resp.inputs = metas(m->inputs, m->n_inputs);
        resp.outputs = metas(m->outputs, m->n_outputs);
        resp.n_inputs = m->n_inputs;
        resp.n_outputs = m->n_outputs;
        ok = resp.inputs && resp.outputs ? pack(&resp.base, out, out_len, err) : false;
        if (!resp.inputs || !resp.outputs) ss_kserve_fail(err, 500, "out of memory");
        free(resp.inputs);
        free(resp.outputs);
    }
    ss_kserve_call_free(call);
    return ok;
}

/* ------------------------------------------------------------------ ModelInfer: inputs */

typedef Inference__ModelInferRequest__InferInputTensor input_msg;

static void free_request_msg(void *msg)
{
    inference__model_infer_request__free_unpacked(msg, NULL);
}

/* The typed contents field for a dtype, as (count, pointer, wire element size). */
static size_t contents_of(const Inference__InferTensorContents *c, ss_dtype dt, const void **p)
{
    switch (dt) {
    case SS_DT_BOOL:
        *p = c->bool_contents;
        return c->n_bool_contents;
    case SS_DT_INT8:
    case SS_DT_INT16:
    case SS_DT_INT32:
        *p = c->int_contents;
        return c->n_int_contents;
    case SS_DT_INT64:
        *p = c->int64_contents;
        return c->n_int64_contents;
    case SS_DT_UINT8:
    case SS_DT_UINT16:
    case SS_DT_UINT32:
        *p = c->uint_contents;
        return c->n_uint_contents;
    case SS_DT_UINT64:
        *p = c->uint64_contents;
        return c->n_uint64_contents;
    case SS_DT_FLOAT32:
        *p = c->fp32_contents;
        return c->n_fp32_contents;
    case SS_DT_FLOAT64:
        *p = c->fp64_contents;
        return c->n_fp64_contents;
    case SS_DT_STRING:
        *p = c->bytes_contents;
        return c->n_bytes_contents;
    default:
        *p = NULL;
        return 0;
    }
}

/* Narrow int32/uint32/bool contents into the tensor's element type; false when out of range. */
static bool narrow(ss_dtype dt, const void *src, size_t n, uint8_t *dst)
{
    const int32_t *si = src;
    const uint32_t *su = src;
    const protobuf_c_boolean *sb = src;
    for (size_t i = 0; i < n; i++) {
        switch (dt) {
        case SS_DT_BOOL:
            dst[i] = sb[i] != 0;
            break;
        case SS_DT_INT8:
            if (si[i] < INT8_MIN || si[i] > INT8_MAX) return false;
            ((int8_t *)dst)[i] = (int8_t)si[i];
            break;
        case SS_DT_INT16:
            if (si[i] < INT16_MIN || si[i] > INT16_MAX) return false;
            ((int16_t *)dst)[i] = (int16_t)si[i];
            break;
        case SS_DT_UINT8:
            if (su[i] > UINT8_MAX) return false;
            dst[i] = (uint8_t)su[i];
            break;
        case SS_DT_UINT16:
            if (su[i] > UINT16_MAX) return false;
            ((uint16_t *)dst)[i] = (uint16_t)su[i];
            break;
        default:
            return false;
        }
    }
    return true;
}

static bool typed_input(ss_kserve_call *call, const input_msg *m, ss_kserve_input *in,
                        ss_kserve_error *err)
{
    if (in->dtype == SS_DT_FLOAT16 || in->dtype == SS_DT_BFLOAT16) {
        ss_kserve_fail(err, 400, "input '%s': %s travels only in raw_input_contents", in->name,
                       ss_kserve_dtype_name(in->dtype));
        return false;
    }
    const void *p = NULL;
    size_t n = contents_of(m->contents, in->dtype, &p);
    int64_t numel = ss_kserve_numel(in->ndim, in->dims);
    if ((int64_t)n != numel) {
        ss_kserve_fail(err, 400, "input '%s': contents has %zu %s elements, shape needs %lld",
                       in->name, n, ss_kserve_dtype_name(in->dtype), (long long)numel);
        return false;
    }
    size_t elem = ss_dtype_size(in->dtype);
    bool same = in->dtype == SS_DT_INT32 || in->dtype == SS_DT_UINT32 || in->dtype == SS_DT_INT64 ||
                in->dtype == SS_DT_UINT64 || in->dtype == SS_DT_FLOAT32 ||
                in->dtype == SS_DT_FLOAT64;
    if (same) { /* the wire's element type is the tensor's: borrow */
        in->data = p;
        in->nbytes = n * elem;
        return true;
    }
    size_t total = 0;
    if (in->dtype == SS_DT_STRING)
        for (size_t i = 0; i < n; i++)
            total += 4 + ((const ProtobufCBinaryData *)p)[i].len;
    else
        total = n * elem;
    uint8_t *buf = malloc(total ? total : 1);
    if (!buf || !ss_kserve_call_own(call, buf)) {
        ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    if (in->dtype == SS_DT_STRING) {
        size_t off = 0;
        for (size_t i = 0; i < n; i++) {
            const ProtobufCBinaryData *b = &((const ProtobufCBinaryData *)p)[i];
            uint32_t l = (uint32_t)b->len;
            memcpy(buf + off, &l, 4);
            if (l) memcpy(buf + off + 4, b->data, l);
            off += 4 + l;
        }
    } else if (!narrow(in->dtype, p, n, buf)) {
        ss_kserve_fail(err, 400, "input '%s': a value is out of range for %s", in->name,
                       ss_kserve_dtype_name(in->dtype));
        return false;
    }
    in->data = buf;
    in->nbytes = total;
    return true;
}

/* The shared-memory parameters of an input's or requested output's parameters map (the two
 * map entry types have the same layout). *region NULL when there is none; false with err when
 * they are malformed. */
typedef Inference__ModelInferRequest__InferInputTensor__ParametersEntry param_entry_msg;
static bool shm_params(param_entry_msg *const *params, size_t n, const char *kind,
                       const char *tensor, const char **region, uint64_t *offset, uint64_t *size,
                       ss_kserve_error *err)
{
    *region = NULL;
    *offset = *size = 0;
    bool has_size = false, ok = true;
    for (size_t k = 0; k < n; k++) {
        const Inference__InferParameter *v = params[k]->value;
        const char *key = params[k]->key;
        int c = v ? (int)v->parameter_choice_case : 0;
        bool is_int = c == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM ||
                      c == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM;
        uint64_t u = !is_int ? 0
                     : c == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM
                         ? v->uint64_param
                         : (uint64_t)v->int64_param;
        bool negative =
            c == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM && v->int64_param < 0;
        if (!strcmp(key, "shared_memory_region")) {
            ok = ok && c == INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
            if (ok) *region = v->string_param;
        } else if (!strcmp(key, "shared_memory_byte_size")) {
            ok = ok && is_int && !negative;
            *size = u, has_size = true;
        } else if (!strcmp(key, "shared_memory_offset")) {
            ok = ok && is_int && !negative;
            *offset = u;
        }
    }
    if (ok && (!*region || has_size)) return true;
    ss_kserve_fail(err, 400,
                   "%s '%s': shared_memory_region wants a string, shared_memory_byte_size and "
                   "shared_memory_offset byte counts",
                   kind, tensor);
    return false;
}

/* An input given by shared-memory region, if it is one (*done). */
static bool shm_input(ss_kserve_call *call, const Inference__ModelInferRequest *r, size_t i,
                      ss_kserve_input *in, bool *done, ss_kserve_error *err)
{
    const input_msg *m = r->inputs[i];
    const char *region;
    uint64_t offset, size;
    *done = false;
    if (!shm_params(m->parameters, m->n_parameters, "input", in->name, &region, &offset, &size,
                    err))
        return false;
    if (!region) return true;
    *done = true;
    if (m->contents || (i < r->n_raw_input_contents && r->raw_input_contents[i].len)) {
        ss_kserve_fail(err, 400, "input '%s' has shared_memory_region and contents besides",
                       in->name);
        return false;
    }
    return ss_kserve_shm_input(call, in, region, offset, size, err);
}

static bool decode_input(ss_kserve_call *call, const Inference__ModelInferRequest *r, size_t i,
                         ss_kserve_input *in, ss_kserve_error *err)
{
    const input_msg *m = r->inputs[i];
    in->name = m->name;
    in->dtype = ss_kserve_dtype_parse(m->datatype, strlen(m->datatype));
    if (in->dtype == SS_DT_UNDEFINED) {
        ss_kserve_fail(err, 400, "input '%s': unknown datatype '%.40s'", in->name, m->datatype);
        return false;
    }
    if (!ss_kserve_check_dtype(call, in->name, in->dtype, err)) return false;
    if (m->n_shape > SS_MAX_DIMS) {
        ss_kserve_fail(err, 400, "input '%s': shape has %zu dims, at most %d", in->name, m->n_shape,
                       SS_MAX_DIMS);
        return false;
    }
    in->ndim = (int)m->n_shape;
    for (size_t d = 0; d < m->n_shape; d++) {
        if (m->shape[d] < 0 || m->shape[d] > (1LL << 48)) {
            ss_kserve_fail(err, 400, "input '%s': shape holds a size that is not a count",
                           in->name);
            return false;
        }
        in->dims[d] = m->shape[d];
    }
    if (ss_kserve_numel(in->ndim, in->dims) < 0) {
        ss_kserve_fail(err, 400, "input '%s': shape is too large", in->name);
        return false;
    }
    bool by_shm = false;
    if (!shm_input(call, r, i, in, &by_shm, err)) return false;
    if (by_shm) return true;
    if (r->n_raw_input_contents) {
        if (m->contents) {
            ss_kserve_fail(err, 400,
                           "input '%s' sets contents, but the request uses "
                           "raw_input_contents",
                           in->name);
            return false;
        }
        in->data = r->raw_input_contents[i].data;
        in->nbytes = r->raw_input_contents[i].len;
        return true;
    }
    if (!m->contents) {
        ss_kserve_fail(err, 400, "input '%s' has neither contents nor raw_input_contents",
                       in->name);
        return false;
    }
    return typed_input(call, m, in, err);
}

static bool requested_outputs(ss_kserve_call *call, const Inference__ModelInferRequest *r,
                              ss_kserve_error *err)
{
    if (!r->n_outputs) return true;
    if (r->n_outputs > 64) {
        ss_kserve_fail(err, 400, "at most 64 outputs can be requested");
        return false;
    }
    call->outputs = calloc(r->n_outputs, sizeof *call->outputs);
    if (!call->outputs) {
        ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    for (size_t i = 0; i < r->n_outputs; i++) {
        const Inference__ModelInferRequest__InferRequestedOutputTensor *o = r->outputs[i];
        if (!(call->outputs[i].name = strdup(o->name))) {
            ss_kserve_fail(err, 500, "out of memory");
            return false;
        }
        call->n_outputs++;
        const char *region;
        uint64_t offset, size;
        /* the requested output's map entries have the input's layout */
        if (!shm_params((param_entry_msg *const *)o->parameters, o->n_parameters, "output", o->name,
                        &region, &offset, &size, err) ||
            (region && !ss_kserve_shm_output(&call->outputs[i], region, offset, size, err)))
            return false;
    }
    return ss_kserve_check_outputs(call, err);
}

static bool decode_request(ss_kserve_call *call, const Inference__ModelInferRequest *r,
                           ss_predict_request **req, ss_kserve_error *err)
{
    if (r->n_raw_input_contents && r->n_raw_input_contents != r->n_inputs) {
        ss_kserve_fail(err, 400, "raw_input_contents has %zu entries for %zu inputs",
                       r->n_raw_input_contents, r->n_inputs);
        return false;
    }
    if (r->n_inputs > 64) {
        ss_kserve_fail(err, 400, "%zu inputs, at most 64", r->n_inputs);
        return false;
    }
    if (r->id[0] && !(call->id = strdup(r->id))) {
        ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    call->binary_output = r->n_raw_input_contents > 0;
    ss_kserve_input inputs[64];
    for (size_t i = 0; i < r->n_inputs; i++)
        if (!decode_input(call, r, i, &inputs[i], err)) return false;
    return requested_outputs(call, r, err) &&
           ss_kserve_build_request(call, inputs, r->n_inputs, req, err);
}

size_t ss_kserve_grpc_infer_decoded_bytes(const uint8_t *buf, size_t len)
{
    return ss_pb_unpacked_bytes(&inference__model_infer_request__descriptor, buf, len);
}

bool ss_kserve_grpc_decode_infer(const ss_predict_handler *h, const uint8_t *buf, size_t len,
                                 ss_kserve_call **out, ss_predict_request **req,
                                 ss_kserve_error *err)
{
    *out = NULL;
    *req = NULL;
    err->status = 0;
    if (over_budget(buf, len, &infer_shape, err)) return false;
    Inference__ModelInferRequest *r = inference__model_infer_request__unpack(NULL, len, buf);
    if (!r) return bad_message("ModelInferRequest", err);
    ss_kserve_call *call = ss_kserve_call_new();
    if (!call) {
        inference__model_infer_request__free_unpacked(r, NULL);
        ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    call->wire = r;
    call->wire_free = free_request_msg;
    if (!resolve(h, r->model_name, r->model_version, call, err) ||
        !decode_request(call, r, req, err)) {
        ss_kserve_call_free(call);
        return false;
    }
    *out = call;
    return true;
}

/* ------------------------------------------------------------------ ModelInfer: reply */

typedef Inference__ModelInferResponse__InferOutputTensor output_msg;

/* Typed contents for one output; widened copies are kept by the call. */
static bool typed_output(ss_kserve_call *call, const ss_kserve_output *o,
                         Inference__InferTensorContents *c, ss_kserve_error *err)
{
    size_t n = (size_t)ss_kserve_numel(o->ndim, o->dims);
    const uint8_t *p = o->data;
    void *buf = NULL;
    switch (o->dtype) {
    case SS_DT_INT64:
        c->int64_contents = (int64_t *)p;
        c->n_int64_contents = n;
        return true;
    case SS_DT_UINT64:
        c->uint64_contents = (uint64_t *)p;
        c->n_uint64_contents = n;
        return true;
    case SS_DT_FLOAT32:
        c->fp32_contents = (float *)p;
        c->n_fp32_contents = n;
        return true;
    case SS_DT_FLOAT64:
        c->fp64_contents = (double *)p;
        c->n_fp64_contents = n;
        return true;
    case SS_DT_INT32:
        c->int_contents = (int32_t *)p;
        c->n_int_contents = n;
        return true;
    case SS_DT_UINT32:
        c->uint_contents = (uint32_t *)p;
        c->n_uint_contents = n;
        return true;
    case SS_DT_STRING: {
        ProtobufCBinaryData *b = calloc(n ? n : 1, sizeof *b);
        size_t off = 0;
        for (size_t i = 0; b && i < n; i++) {
            uint32_t l;
            memcpy(&l, p + off, 4);
            b[i].len = l;
            b[i].data = (uint8_t *)p + off + 4;
            off += 4 + l;
        }
        c->bytes_contents = b;
        c->n_bytes_contents = n;
        buf = b;
        break;
    }
    default: {
        int32_t *w = malloc((n ? n : 1) * sizeof *w);
        for (size_t i = 0; w && i < n; i++) {
            switch (o->dtype) {
            case SS_DT_BOOL:
                w[i] = p[i] != 0;
                break;
            case SS_DT_INT8:
                w[i] = ((const int8_t *)p)[i];
                break;
            case SS_DT_INT16:
                w[i] = ((const int16_t *)p)[i];
                break;
            case SS_DT_UINT8:
                w[i] = p[i];
                break;
            default:
                w[i] = ((const uint16_t *)p)[i];
                break;
            }
        }
        bool is_int = o->dtype == SS_DT_INT8 || o->dtype == SS_DT_INT16;
        bool is_bool = o->dtype == SS_DT_BOOL;
        /* protobuf_c_boolean is an int: the widened values serve BOOL, int and uint fields */
        if (is_bool)
            c->bool_contents = (protobuf_c_boolean *)w, c->n_bool_contents = n;
        else if (is_int)
            c->int_contents = w, c->n_int_contents = n;
        else
            c->uint_contents = (uint32_t *)w, c->n_uint_contents = n;
        buf = w;
    }
    }
    if (!buf || !ss_kserve_call_own(call, buf)) {
        ss_kserve_fail(err, 500, "out of memory encoding output '%s'", o->name);
        return false;
    }
    return true;
}

typedef Inference__ModelInferResponse__InferOutputTensor__ParametersEntry out_param_entry;

/* An output written to shared memory: its parameters say where, it carries no data. */
typedef struct {
    out_param_entry entries[2];
    out_param_entry *ptrs[2];
    Inference__InferParameter values[2];
} shm_out_params;

typedef struct {
    Inference__ModelInferResponse resp;
    output_msg *msgs;
    output_msg **ptrs;
    Inference__InferTensorContents *contents;
    ProtobufCBinaryData *raw;
    shm_out_params *shm;
} reply_msg;

static void shm_output_msg(const ss_kserve_output *o, output_msg *msg, shm_out_params *p)
{
    static const char *const keys[] = {"shared_memory_region", "shared_memory_byte_size"};
    for (int k = 0; k < 2; k++) {
        inference__model_infer_response__infer_output_tensor__parameters_entry__init(
            &p->entries[k]);
        inference__infer_parameter__init(&p->values[k]);
        p->entries[k].key = (char *)keys[k];
        p->entries[k].value = &p->values[k];
        p->ptrs[k] = &p->entries[k];
    }
    p->values[0].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM;
    p->values[0].string_param = o->shm->shm_region;
    p->values[1].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM;
    p->values[1].int64_param = (int64_t)o->nbytes;
    msg->parameters = p->ptrs;
    msg->n_parameters = 2;
}

static bool build_outputs(ss_kserve_call *call, const ss_kserve_output *outs, size_t n,
                          reply_msg *m, ss_kserve_error *err)
{
    bool raw = call->binary_output;
    for (size_t i = 0; i < n; i++)
        raw = raw || outs[i].dtype == SS_DT_FLOAT16 || outs[i].dtype == SS_DT_BFLOAT16;
    m->msgs = calloc(n + 1, sizeof *m->msgs);
    m->ptrs = calloc(n + 1, sizeof *m->ptrs);
    m->contents = calloc(n + 1, sizeof *m->contents);
    m->raw = calloc(n + 1, sizeof *m->raw);
    m->shm = calloc(n + 1, sizeof *m->shm);
    if (!m->msgs || !m->ptrs || !m->contents || !m->raw || !m->shm) {
        ss_kserve_fail(err, 500, "out of memory");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const char *dt = ss_kserve_dtype_name(outs[i].dtype);
        if (!dt) {
            ss_kserve_fail(err, 500, "output '%s' has a datatype the protocol cannot name",
                           outs[i].name);
            return false;
        }
        output_msg init = INFERENCE__MODEL_INFER_RESPONSE__INFER_OUTPUT_TENSOR__INIT;
        Inference__InferTensorContents cinit = INFERENCE__INFER_TENSOR_CONTENTS__INIT;
        m->msgs[i] = init;
        m->contents[i] = cinit;
        m->msgs[i].name = (char *)outs[i].name;
        m->msgs[i].datatype = (char *)dt;
        m->msgs[i].shape = (int64_t *)outs[i].dims;
        m->msgs[i].n_shape = (size_t)outs[i].ndim;
        m->ptrs[i] = &m->msgs[i];
        if (outs[i].shm) {
            shm_output_msg(&outs[i], &m->msgs[i], &m->shm[i]); /* raw entry stays empty */
        } else if (raw) {
            m->raw[i].data = (uint8_t *)outs[i].data;
            m->raw[i].len = outs[i].nbytes;
        } else {
            if (!typed_output(call, &outs[i], &m->contents[i], err)) return false;
            m->msgs[i].contents = &m->contents[i];
        }
    }
    m->resp.outputs = m->ptrs;
    m->resp.n_outputs = n;
    m->resp.raw_output_contents = raw ? m->raw : NULL;
    m->resp.n_raw_output_contents = raw ? n : 0;
    return true;
}

/* A ModelInferResponse of `outs`; final < 0: no parameters, else triton_final_response = final
 * (Triton's decoupled convention, for the responses of a request that streams). */
static bool encode_outputs(ss_kserve_call *call, const ss_kserve_output *outs, size_t n, int final,
                           uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    char version[24];
    snprintf(version, sizeof version, "%llu", (unsigned long long)call->sig->version);
    reply_msg m = {.resp = INFERENCE__MODEL_INFER_RESPONSE__INIT};
    m.resp.model_name = call->model;
    m.resp.model_version = version;
    m.resp.id = call->id ? call->id : "";
    Inference__ModelInferResponse__ParametersEntry entry =
        INFERENCE__MODEL_INFER_RESPONSE__PARAMETERS_ENTRY__INIT;
    Inference__ModelInferResponse__ParametersEntry *entries[1] = {&entry};
    Inference__InferParameter flag = INFERENCE__INFER_PARAMETER__INIT;
    if (final >= 0) {
        flag.parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM;
        flag.bool_param = final != 0;
        entry.key = "triton_final_response";
        entry.value = &flag;
        m.resp.parameters = entries;
        m.resp.n_parameters = 1;
    }
    bool ok = build_outputs(call, outs, n, &m, err) && pack(&m.resp.base, out, out_len, err);
    free(m.msgs);
    free(m.ptrs);
    free(m.contents);
    free(m.raw);
    free(m.shm);
    return ok;
}

static bool encode_reply(ss_kserve_call *call, const ss_predict_reply *reply, int final,
                         uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    ss_kserve_output *outs = NULL;
    size_t n = 0;
    if (!ss_kserve_collect_outputs(call, reply, &outs, &n, err)) return false;
    bool ok = encode_outputs(call, outs, n, final, out, out_len, err);
    free(outs);
    return ok;
}

bool ss_kserve_grpc_encode_reply(ss_kserve_call *call, const ss_predict_reply *reply, uint8_t **out,
                                 size_t *out_len, ss_kserve_error *err)
{
    return encode_reply(call, reply, -1, out, out_len, err);
}

bool ss_kserve_grpc_encode_final(ss_kserve_call *call, const ss_predict_reply *reply, uint8_t **out,
                                 size_t *out_len, ss_kserve_error *err)
{
    return encode_reply(call, reply, 1, out, out_len, err);
}

/* A piece's output goes out when the request asked for it (or for every output). */
static bool piece_wanted(const ss_kserve_call *call, const char *name)
{
    for (size_t i = 0; i < call->n_outputs; i++)
        if (!strcmp(call->outputs[i].name, name)) return true;
    return call->n_outputs == 0;
}

/* A piece's one string (a generate method's text) as BYTES [1]: length-prefixed in buf. */
static void piece_string(const ss_serving_item *it, ss_kserve_output *o, uint8_t **buf)
{
    const ss_string *s = it->tensor.nbytes >= sizeof *s ? it->tensor.data : NULL;
    uint32_t len = s ? (uint32_t)s->len : 0;
    if (!(*buf = malloc(4 + (size_t)len))) return;
    memcpy(*buf, &len, 4);
    if (len) memcpy(*buf + 4, s->data, len);
    o->ndim = 1;
    o->dims[0] = 1;
    o->data = *buf;
    o->nbytes = 4 + (size_t)len;
}

bool ss_kserve_grpc_encode_partial(ss_kserve_call *call, const ss_serving_instance *chunk,
                                   uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    ss_kserve_output outs[16] = {0};
    uint8_t *strings[16] = {0};
    size_t n = 0;
    for (size_t i = 0; i < chunk->count && n < sizeof outs / sizeof *outs; i++) {
        const ss_serving_item *it = &chunk->items[i];
        if (!piece_wanted(call, it->name)) continue;
        ss_kserve_output *o = &outs[n];
        memset(o, 0, sizeof *o);
        o->name = it->name;
        o->dtype = it->tensor.dtype;
        o->ndim = it->tensor.ndim;
        memcpy(o->dims, it->tensor.dims, sizeof o->dims);
        o->data = it->tensor.data;
        o->nbytes = it->tensor.nbytes;
        if (it->tensor.dtype == SS_DT_STRING) piece_string(it, o, &strings[n]);
        if (it->tensor.dtype != SS_DT_STRING || strings[n]) n++; /* out of memory: left out */
    }
    bool ok = encode_outputs(call, outs, n, 0, out, out_len, err);
    for (size_t i = 0; i < n; i++)
        free(strings[i]);
    return ok;
}

/* ------------------------------------------------------------------ statistics */

/* One model's statistics message, pointing into `st` and `d` (8 durations). */
static void model_stats_msg(const ss_kserve_stats *st, Inference__ModelStatistics *m,
                            Inference__InferStatistics *is, Inference__StatisticDuration *d)
{
    Inference__StatisticDuration **slots[] = {
        &is->success,       &is->fail,           &is->queue,     &is->compute_input,
        &is->compute_infer, &is->compute_output, &is->cache_hit, &is->cache_miss};
    const ss_kserve_duration *src[] = {&st->success,       &st->fail, &st->queue, NULL,
                                       &st->compute_infer, NULL,      NULL,       NULL};
    inference__infer_statistics__init(is);
    for (int k = 0; k < 8; k++) {
        inference__statistic_duration__init(&d[k]);
        d[k].count = src[k] ? src[k]->count : 0;
        d[k].ns = src[k] ? src[k]->ns : 0;
        *slots[k] = &d[k];
    }
    inference__model_statistics__init(m);
    m->name = (char *)st->model;
    m->version = (char *)st->version;
    m->inference_count = st->inference_count;
    m->execution_count = st->execution_count;
    m->inference_stats = is;
}

bool ss_kserve_grpc_model_statistics(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                     uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    if (over_budget(buf, len, NULL, err)) return false;
    Inference__ModelStatisticsRequest *req =
        inference__model_statistics_request__unpack(NULL, len, buf);
    if (!req) return bad_message("ModelStatisticsRequest", err);
    ss_kserve_stats *st = NULL;
    size_t n = 0;
    bool ok = ss_kserve_stats_collect(env->handler, req->name, req->version, &st, &n, err);
    inference__model_statistics_request__free_unpacked(req, NULL);
    if (!ok) return false;
    size_t slots = n ? n : 1;
    Inference__ModelStatistics *ms = calloc(slots, sizeof *ms);
    Inference__ModelStatistics **ptrs = calloc(slots, sizeof *ptrs);
    Inference__InferStatistics *is = calloc(slots, sizeof *is);
    Inference__StatisticDuration *d = calloc(slots * 8, sizeof *d);
    ok = ms && ptrs && is && d;
    for (size_t i = 0; ok && i < n; i++) {
        model_stats_msg(&st[i], &ms[i], &is[i], &d[8 * i]);
        ptrs[i] = &ms[i];
    }
    Inference__ModelStatisticsResponse resp = INFERENCE__MODEL_STATISTICS_RESPONSE__INIT;
    resp.model_stats = ptrs;
    resp.n_model_stats = n;
    if (!ok) ss_kserve_fail(err, 500, "out of memory");
    ok = ok && pack(&resp.base, out, out_len, err);
    free(ms);
    free(ptrs);
    free(is);
    free(d);
    free(st);
    return ok;
}

/* ------------------------------------------------------------------ model repository */

bool ss_kserve_grpc_repository_index(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                     uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    if (over_budget(buf, len, NULL, err)) return false;
    Inference__RepositoryIndexRequest *req =
        inference__repository_index_request__unpack(NULL, len, buf);
    if (!req) return bad_message("RepositoryIndexRequest", err);
    ss_serving_index_entry *e = NULL;
    size_t n = 0;
    bool ok = ss_kserve_repo_index(env->handler, req->ready, &e, &n, err);
    inference__repository_index_request__free_unpacked(req, NULL);
    if (!ok) return false;
    Inference__RepositoryIndexResponse__ModelIndex *models = calloc(n ? n : 1, sizeof *models);
    Inference__RepositoryIndexResponse__ModelIndex **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    char(*versions)[24] = calloc(n ? n : 1, sizeof *versions);
    ok = models && ptrs && versions;
    for (size_t i = 0; ok && i < n; i++) {
        inference__repository_index_response__model_index__init(&models[i]);
        snprintf(versions[i], sizeof versions[i], "%llu", (unsigned long long)e[i].version);
        models[i].name = e[i].servable;
        models[i].version = versions[i];
        models[i].state = (char *)e[i].state;
        models[i].reason = e[i].reason;
        ptrs[i] = &models[i];
    }
    Inference__RepositoryIndexResponse resp = INFERENCE__REPOSITORY_INDEX_RESPONSE__INIT;
    resp.models = ptrs;
    resp.n_models = n;
    if (!ok) ss_kserve_fail(err, 500, "out of memory");
    ok = ok && pack(&resp.base, out, out_len, err);
    free(models);
    free(ptrs);
    free(versions);
    free(e);
    return ok;
}

/* parameters["version"]: an int64 or its text; absent = every version. */
static bool repo_version(const Inference__RepositoryModelLoadRequest *r, uint64_t *version,
                         ss_kserve_error *err)
{
    *version = 0;
    for (size_t i = 0; i < r->n_parameters; i++) {
        const Inference__ModelRepositoryParameter *p = r->parameters[i]->value;
        if (strcmp(r->parameters[i]->key, "version") != 0 || !p) continue;
        bool ok = false;
        if (p->parameter_choice_case ==
            INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_INT64_PARAM) {
            ok = p->int64_param > 0;
            *version = (uint64_t)p->int64_param;
        } else if (p->parameter_choice_case ==
                   INFERENCE__MODEL_REPOSITORY_PARAMETER__PARAMETER_CHOICE_STRING_PARAM) {
            ok = ss_kserve_parse_version(p->string_param, strlen(p->string_param), version) &&
                 *version;
        }
        if (!ok) {
            ss_kserve_fail(err, 400, "parameter 'version' must be a version number (1, 2, ...)");
            return false;
        }
    }
    return true;
}

/* RepositoryModelLoad and RepositoryModelUnload: their requests are the same fields with the
 * same numbers, so both decode as RepositoryModelLoadRequest; both answers are empty messages. */
static bool repo_set_loaded(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                            bool load, uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    static const uint32_t fields[] = {3};
    static const ss_pb_shape *const inner[] = {&param_entry};
    static const ss_pb_shape shape = {1, fields, inner};
    if (over_budget(buf, len, &shape, err)) return false;
    Inference__RepositoryModelLoadRequest *req =
        inference__repository_model_load_request__unpack(NULL, len, buf);
    if (!req)
        return bad_message(load ? "RepositoryModelLoadRequest" : "RepositoryModelUnloadRequest",
                           err);
    uint64_t version = 0;
    bool ok = repo_version(req, &version, err) &&
              ss_kserve_repo_set_loaded(env->handler, req->model_name, version, load, err);
    inference__repository_model_load_request__free_unpacked(req, NULL);
    Inference__RepositoryModelLoadResponse resp = INFERENCE__REPOSITORY_MODEL_LOAD_RESPONSE__INIT;
    return ok && pack(&resp.base, out, out_len, err);
}

bool ss_kserve_grpc_repository_load(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                    uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    return repo_set_loaded(env, buf, len, true, out, out_len, err);
}

bool ss_kserve_grpc_repository_unload(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                      uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    return repo_set_loaded(env, buf, len, false, out, out_len, err);
}

/* ------------------------------------------------------------------ system shared memory */

bool ss_kserve_grpc_shm_status(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                               uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    (void)env;
    if (over_budget(buf, len, NULL, err)) return false;
    Inference__SystemSharedMemoryStatusRequest *req =
        inference__system_shared_memory_status_request__unpack(NULL, len, buf);
    if (!req) return bad_message("SystemSharedMemoryStatusRequest", err);
    ss_kserve_shm_region *list = NULL;
    size_t n = 0;
    bool ok = ss_kserve_shm_status(req->name, &list, &n, err);
    inference__system_shared_memory_status_request__free_unpacked(req, NULL);
    if (!ok) return false;
    typedef Inference__SystemSharedMemoryStatusResponse__RegionsEntry entry_t;
    typedef Inference__SystemSharedMemoryStatusResponse__RegionStatus status_t;
    entry_t *entries = calloc(n + 1, sizeof *entries);
    entry_t **ptrs = calloc(n + 1, sizeof *ptrs);
    status_t *st = calloc(n + 1, sizeof *st);
    ok = entries && ptrs && st;
    for (size_t i = 0; ok && i < n; i++) {
        inference__system_shared_memory_status_response__regions_entry__init(&entries[i]);
        inference__system_shared_memory_status_response__region_status__init(&st[i]);
        st[i].name = list[i].name;
        st[i].key = list[i].key;
        st[i].offset = list[i].offset;
        st[i].byte_size = list[i].byte_size;
        entries[i].key = list[i].name;
        entries[i].value = &st[i];
        ptrs[i] = &entries[i];
    }
    Inference__SystemSharedMemoryStatusResponse resp =
        INFERENCE__SYSTEM_SHARED_MEMORY_STATUS_RESPONSE__INIT;
    resp.regions = ptrs;
    resp.n_regions = n;
    if (!ok) ss_kserve_fail(err, 500, "out of memory");
    ok = ok && pack(&resp.base, out, out_len, err);
    free(entries);
    free(ptrs);
    free(st);
    free(list);
    return ok;
}

bool ss_kserve_grpc_shm_register(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                 uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    (void)env;
    if (over_budget(buf, len, NULL, err)) return false;
    Inference__SystemSharedMemoryRegisterRequest *req =
        inference__system_shared_memory_register_request__unpack(NULL, len, buf);
    if (!req) return bad_message("SystemSharedMemoryRegisterRequest", err);
    bool ok = ss_kserve_shm_register(req->name, req->key, req->offset, req->byte_size, err);
    inference__system_shared_memory_register_request__free_unpacked(req, NULL);
    Inference__SystemSharedMemoryRegisterResponse resp =
        INFERENCE__SYSTEM_SHARED_MEMORY_REGISTER_RESPONSE__INIT;
    return ok && pack(&resp.base, out, out_len, err);
}

bool ss_kserve_grpc_shm_unregister(const ss_kserve_grpc_env *env, const uint8_t *buf, size_t len,
                                   uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    (void)env;
    if (over_budget(buf, len, NULL, err)) return false;
    Inference__SystemSharedMemoryUnregisterRequest *req =
        inference__system_shared_memory_unregister_request__unpack(NULL, len, buf);
    if (!req) return bad_message("SystemSharedMemoryUnregisterRequest", err);
    bool ok = ss_kserve_shm_unregister(req->name, err);
    inference__system_shared_memory_unregister_request__free_unpacked(req, NULL);
    Inference__SystemSharedMemoryUnregisterResponse resp =
        INFERENCE__SYSTEM_SHARED_MEMORY_UNREGISTER_RESPONSE__INIT;
    return ok && pack(&resp.base, out, out_len, err);
}

/* ------------------------------------------------------------------ ModelStreamInfer */

/* The response is already packed: written around it as protobuf wire (field 2,
 * length-delimited), which costs one copy instead of an unpack and a repack. */
bool ss_kserve_grpc_stream_reply(const uint8_t *resp, size_t len, uint8_t **out, size_t *out_len,
                                 ss_kserve_error *err)
{
    *out = malloc(len + 11);
    if (!*out) {
        ss_kserve_fail(err, 500, "out of memory packing a %zu-byte stream reply", len);
        return false;
    }
    size_t k = 0;
    (*out)[k++] = 0x12;
    for (size_t v = len; k == 1 || v; v >>= 7)
        (*out)[k++] = (uint8_t)((v & 0x7f) | (v >> 7 ? 0x80 : 0));
    if (len) memcpy(*out + k, resp, len);
    *out_len = k + len;
    return true;
}

/* A top-level string field of a message, found without decoding the rest (copied, truncated
 * to cap; "" when absent or when the message is not protobuf). */
static void scan_string(const uint8_t *p, size_t len, uint32_t field, char *out, size_t cap)
{
    out[0] = 0;
    size_t i = 0;
    while (i < len) {
        uint64_t key = 0, n = 0;
        for (int shift = 0; i < len && shift < 64; shift += 7) {
            key |= (uint64_t)(p[i] & 0x7f) << shift;
            if (!(p[i++] & 0x80)) break;
        }
        unsigned wire = key & 7;
        if (wire == 0) {
            while (i < len && (p[i++] & 0x80)) {
            }
            continue;
        }
        if (wire == 1 || wire == 5) {
            i += wire == 1 ? 8 : 4;
            continue;
        }
        if (wire != 2) return;
        for (int shift = 0; i < len && shift < 64; shift += 7) {
            n |= (uint64_t)(p[i] & 0x7f) << shift;
            if (!(p[i++] & 0x80)) break;
        }
        if (n > len - i) return;
        if (key >> 3 == field) {
            size_t m = n < cap - 1 ? (size_t)n : cap - 1;
            memcpy(out, p + i, m);
            out[m] = 0;
        }
        i += (size_t)n;
    }
}

void ss_kserve_grpc_request_names(const uint8_t *req, size_t len, char *model, char *id, size_t cap)
{
    scan_string(req, len, 1, model, cap);
    scan_string(req, len, 3, id, cap);
    /* proto3 strings must be UTF-8 to be packed again */
    if (!ss_serving_utf8_valid(model, strlen(model))) model[0] = 0;
    if (!ss_serving_utf8_valid(id, strlen(id))) id[0] = 0;
}

bool ss_kserve_grpc_stream_error(const char *model, const char *id, const char *error,
                                 uint8_t **out, size_t *out_len, ss_kserve_error *err)
{
    Inference__ModelInferResponse resp = INFERENCE__MODEL_INFER_RESPONSE__INIT;
    resp.model_name = (char *)model;
    resp.id = (char *)id;
    Inference__ModelStreamInferResponse msg = INFERENCE__MODEL_STREAM_INFER_RESPONSE__INIT;
    msg.error_message = (char *)error;
    msg.infer_response = &resp;
    return pack(&msg.base, out, out_len, err);
}
