/*
 * Structure-aware libFuzzer target for the MindSpore gRPC and REST request decoders (-DSS_FUZZ=ON
 * with clang). Mutated bytes rarely get past a decoder's first checks; here the input is a recipe
 * that a generator turns into a large, well-formed request: up to 4,096 instances of up to 8
 * named tensors (names shared across instances, sometimes repeated within one), every dtype,
 * shapes up to 4 dims, payloads that match the shape or miss it by a little. The first byte picks
 * the wire: protobuf (packed with protobuf-c) or MindSpore's JSON (numbers nested by shape, or
 * {"b64", "type", "shape"} objects), decoded by the codecs serve uses (with their budgets). Each
 * must decode or refuse, never crash or leak (ASan/UBSan), stay within libFuzzer's -timeout and
 * -rss_limit_mb, and a decoded request must hold every generated instance.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc_codec.h"
#include "ms_service.pb-c.h"
#include "rest_codec.h"
#include "sbuf.h"

#define MAX_INSTANCES 4096
#define MAX_ITEMS 8
#define MAX_PAYLOAD ((size_t)16 << 20) /* all tensors' bytes together */

typedef struct {
    const uint8_t *p;
    size_t n;
} recipe;

static unsigned take(recipe *r)
{
    if (!r->n) return 0;
    r->n--;
    return *r->p++;
}

typedef struct {
    int dtype; /* MindSpore's DataType value */
    size_t size;
    const char *json_type; /* REST "type" of a b64 object */
} gen_dtype;

static const gen_dtype dtypes[] = {
    {1, 1, "bool"},     {2, 1, "int8"},   {3, 1, "uint8"}, {4, 2, "int16"},  {5, 2, "uint16"},
    {6, 4, "int32"},    {7, 4, "uint32"}, {8, 8, "int64"}, {9, 8, "uint64"}, {10, 2, "fp16"},
    {11, 4, "float32"}, {12, 8, "fp64"},  {13, 0, "str"},  {14, 0, "bytes"},
};

/* One generated tensor: its name, dtype, shape and payload size (elements x size, maybe off). */
typedef struct {
    char name[8];
    const gen_dtype *dt;
    int ndim;
    int64_t dims[4];
    size_t numel, bytes;
} gen_tensor;

static void gen_tensor_from(recipe *r, gen_tensor *t, size_t *budget)
{
    snprintf(t->name, sizeof t->name, "x%u", take(r) % 16);
    t->dt = &dtypes[take(r) % (sizeof dtypes / sizeof dtypes[0])];
    t->ndim = (int)(take(r) % 5);
    t->numel = 1;
    for (int d = 0; d < t->ndim && d < 4; d++) {
        t->dims[d] = take(r) % 33;
        t->numel *= (size_t)t->dims[d];
    }
    if (t->ndim > 4) t->ndim = 4;
    size_t es = t->dt->size ? t->dt->size : 1;
    t->bytes = t->numel * es;
    unsigned off = take(r);
    if (off % 7 == 0 && t->bytes) t->bytes -= 1; /* a little short */
    if (off % 11 == 0) t->bytes += es;           /* a little long */
    if (t->bytes > *budget) t->bytes = *budget;
    *budget -= t->bytes;
}

/* ------------------------------------------------------------------ protobuf */

static uint8_t *pack_grpc(gen_tensor *ts, size_t n_inst, size_t n_items, size_t *len)
{
    typedef Mindspore__Serving__Proto__Instance__ItemsEntry entry;
    Mindspore__Serving__Proto__PredictRequest req =
        MINDSPORE__SERVING__PROTO__PREDICT_REQUEST__INIT;
    Mindspore__Serving__Proto__ServableSpec spec = MINDSPORE__SERVING__PROTO__SERVABLE_SPEC__INIT;
    spec.name = "m";
    spec.method_name = "predict";
    req.servable_spec = &spec;
    size_t n = n_inst * n_items;
    Mindspore__Serving__Proto__Instance *insts = calloc(n_inst, sizeof *insts);
    Mindspore__Serving__Proto__Instance **iptr = calloc(n_inst, sizeof *iptr);
    entry *ents = calloc(n, sizeof *ents), **eptr = calloc(n, sizeof *eptr);
    Mindspore__Serving__Proto__Tensor *tens = calloc(n, sizeof *tens);
    Mindspore__Serving__Proto__TensorShape *shapes = calloc(n, sizeof *shapes);
    ProtobufCBinaryData *strs = calloc(n, sizeof *strs);
    uint8_t *zeros = calloc(1, MAX_PAYLOAD + 1), *out = NULL;
    if (!insts || !iptr || !ents || !eptr || !tens || !shapes || !strs || !zeros) goto done;
    for (size_t i = 0; i < n_inst; i++) {
        mindspore__serving__proto__instance__init(&insts[i]);
        insts[i].n_items = n_items;
        insts[i].items = &eptr[i * n_items];
        iptr[i] = &insts[i];
    }
    for (size_t k = 0; k < n; k++) {
        gen_tensor *t = &ts[k];
        mindspore__serving__proto__instance__items_entry__init(&ents[k]);
        mindspore__serving__proto__tensor__init(&tens[k]);
        mindspore__serving__proto__tensor_shape__init(&shapes[k]);
        shapes[k].n_dims = (size_t)t->ndim;
        shapes[k].dims = t->dims;
        tens[k].shape = &shapes[k];
        tens[k].dtype = (Mindspore__Serving__Proto__DataType)t->dt->dtype;
        if (t->dt->size) {
            tens[k].tensor_data_case = MINDSPORE__SERVING__PROTO__TENSOR__TENSOR_DATA_DATA;
            tens[k].data = (ProtobufCBinaryData){t->bytes, zeros};
        } else {
            strs[k] = (ProtobufCBinaryData){t->bytes, zeros};
            tens[k].n_bytes_val = 1;
            tens[k].bytes_val = &strs[k];
        }
        ents[k].key = t->name;
        ents[k].value = &tens[k];
        eptr[k] = &ents[k];
    }
    req.n_instances = n_inst;
    req.instances = iptr;
    *len = mindspore__serving__proto__predict_request__get_packed_size(&req);
    if ((out = malloc(*len ? *len : 1)))
        mindspore__serving__proto__predict_request__pack(&req, out);
done:
    free(insts), free(iptr), free(ents), free(eptr), free(tens), free(shapes), free(strs);
    free(zeros);
    return out;
}

/* ------------------------------------------------------------------ JSON */

/* Numbers nested by the shape: [[1,2],[3,4]]; `items` numbers in all (a short or long payload
 * gives a ragged last row). */
static void json_numbers(sbuf *b, const gen_tensor *t, int d, size_t *left)
{
    if (d == t->ndim) {
        sb_put(b, *left ? "1.5" : "0", *left ? 3 : 1);
        if (*left) --*left;
        return;
    }
    sb_put(b, "[", 1);
    for (int64_t i = 0; i < t->dims[d]; i++) {
        if (i) sb_put(b, ",", 1);
        json_numbers(b, t, d + 1, left);
    }
    sb_put(b, "]", 1);
}

static void json_tensor(sbuf *b, const gen_tensor *t, bool as_b64)
{
    if (!as_b64 && t->dt->size) {
        size_t left = t->bytes / t->dt->size;
        json_numbers(b, t, 0, &left);
        return;
    }
    sb_printf(b, "{\"type\":\"%s\",\"shape\":[", t->dt->json_type);
    for (int d = 0; d < t->ndim; d++)
        sb_printf(b, "%s%lld", d ? "," : "", (long long)t->dims[d]);
    sb_put(b, "],\"b64\":\"", 9);
    for (size_t i = 0; i < (t->bytes + 2) / 3; i++)
        sb_put(b, "AAAA", 4);
    sb_put(b, "\"}", 2);
}

static char *json_request(const gen_tensor *ts, size_t n_inst, size_t n_items, unsigned style,
                          size_t *len)
{
    sbuf b = {0};
    sb_put(&b, "{\"instances\":[", 14);
    for (size_t i = 0; i < n_inst; i++) {
        sb_put(&b, i ? ",{" : "{", i ? 2 : 1);
        for (size_t k = 0; k < n_items; k++) {
            const gen_tensor *t = &ts[i * n_items + k];
            sb_printf(&b, "%s\"%s\":", k ? "," : "", t->name);
            json_tensor(&b, t, (style >> (k % 8)) & 1);
        }
        sb_put(&b, "}", 1);
    }
    sb_put(&b, "]}", 2);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* ------------------------------------------------------------------ the target */

static void check_decoded(ss_predict_request *req, size_t n_inst)
{
    if (req && req->count != n_inst) {
        fprintf(stderr, "decoded %zu instances of %zu generated\n", req->count, n_inst);
        abort();
    }
    ss_predict_request_free(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    recipe r = {data, size};
    bool rest = take(&r) & 1;
    size_t n_inst = 1 + ((take(&r) << 8 | take(&r)) % MAX_INSTANCES);
    size_t n_items = 1 + take(&r) % MAX_ITEMS;
    unsigned style = take(&r);
    gen_tensor *ts = calloc(n_inst * n_items, sizeof *ts);
    if (!ts) return 0;
    size_t budget = MAX_PAYLOAD;
    recipe start = r;
    for (size_t k = 0; k < n_inst * n_items; k++) {
        if (!r.n) r = start; /* instances repeat the recipe's pattern */
        gen_tensor_from(&r, &ts[k], &budget);
    }
    size_t len = 0;
    ss_predict_request *req = NULL;
    if (rest) {
        char *body = json_request(ts, n_inst, n_items, style, &len);
        ss_status *st = body ? ss_rest_parse_request("/model/m:predict", body, len, &req) : NULL;
        ss_status_free(st);
        free(body);
    } else {
        uint8_t *buf = pack_grpc(ts, n_inst, n_items, &len);
        ss_predict_reply *invalid = NULL;
        ss_status *st = buf ? ss_grpc_decode_request(buf, len, &req, &invalid) : NULL;
        ss_status_free(st);
        ss_predict_reply_free(invalid);
        free(buf);
    }
    check_decoded(req, n_inst);
    free(ts);
    return 0;
}
