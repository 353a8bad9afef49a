/*
 * rest_codec: MindSpore Serving's RESTful request and reply formats.
 *
 * cJSON stores every number as a double and forgets whether it was written "1" or "1.0", but
 * MindSpore's dtype inference depends on exactly that (int -> int32, float -> float32, and
 * [1, 2.0] is an error). A small lexer therefore records the kind of every number token in
 * document order, and the parsed tree (which keeps document order) is tagged with it before any
 * conversion. Replies are written directly (no cJSON tree): float32 values with the shortest
 * text that reads back to the same float, bytes as {"b64": ...}.
 */
#include "budget.h"
#include "json.h"
#include "pb_budget.h"
#include "rest_codec.h"
#include "sbuf.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLOAT_FLAG (1 << 12) /* our tag on cJSON number nodes written with '.', 'e' or 'E' */
#define ERR_TEXT_MAX 100     /* longest piece of client input echoed in an error */
#define SS_REST_MAX_JSON_VALUES (1 << 22) /* JSON values of every kind in one request body */

/* ------------------------------------------------------------------ base64 */

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *ss_base64_encode(const void *data, size_t len, size_t *out_len)
{
    const uint8_t *in = data;
    size_t n = (len + 2) / 3 * 4;
    char *out = malloc(n + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len) v |= in[i + 2];
        out[o++] = b64_chars[(v >> 18) & 63];
        out[o++] = b64_chars[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64_chars[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? b64_chars[v & 63] : '=';
    }
    out[o] = 0;
    if (out_len) *out_len = o;
    return out;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

bool ss_base64_decode(const char *text, size_t len, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (len % 4) return false;
    size_t pad = 0;
    while (pad < len && pad < 3 && text[len - 1 - pad] == '=')
        pad++;
    if (pad > 2) return false;
    size_t n = len / 4 * 3 - pad;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        errno = ENOMEM; /* tells this from text that is not base64 */
        return false;
    }
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        uint32_t v = 0;
        for (size_t k = 0; k < 4; k++) {
            int d = (i + k >= len - pad) ? 0 : b64_value(text[i + k]);
            if (d < 0) {
                free(buf);
                return false;
            }
            v = v << 6 | (uint32_t)d;
        }
        uint8_t bytes[3] = {(uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
        for (size_t k = 0; k < 3 && o < n; k++)
            buf[o++] = bytes[k];
    }
    *out = buf;
    *out_len = n;
    return true;
}

/* ------------------------------------------------------------------ URL */

/* MindSpore's UrlQuery: the text after the first `key` plus one separator, up to '/' or ':'. */
static char *url_query(const char *url, const char *key)
{
    const char *at = strstr(url, key);
    if (!at) return strdup("");
    size_t skip = strlen(key) + 1;
    if (strlen(at) < skip) return strdup("");
    const char *start = at + skip;
    size_t n = strcspn(start, "/:");
    return strndup(start, n);
}

ss_status *ss_rest_parse_url(const char *url, char **servable, char **method, uint64_t *version)
{
    *servable = *method = NULL;
    *version = 0;
    char *name = url_query(url, "model");
    if (!name) return ss_errf(SS_ERR_NOMEM, "out of memory");
    if (!name[0]) {
        free(name);
        return ss_errf(SS_ERR_INVALID, "please check url, the keyword:[model] must contain.");
    }
    if (strstr(url, "version")) {
        char *v = url_query(url, "version");
        if (!v) {
            free(name);
            return ss_errf(SS_ERR_NOMEM, "out of memory");
        }
        char *end = NULL;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        ss_status *st = NULL;
        if (end == v)
            st = ss_errf(SS_ERR_INVALID,
                         "please check url, the keyword:[version] value invalid, request version "
                         "number %.*s",
                         ERR_TEXT_MAX, v);
        else if (errno == ERANGE || n < 0 || n >= (long long)UINT32_MAX)
            st = ss_errf(SS_ERR_INVALID,
                         "please check url, version number range failed, request version number "
                         "%.*s",
                         ERR_TEXT_MAX, v);
        free(v);
        if (st) {
            free(name);
            return st;
        }
        *version = (uint64_t)n;
    }
    const char *colon = strchr(url, ':');
    if (!colon || !colon[1]) {
        free(name);
        return ss_errf(SS_ERR_INVALID,
                       "please check url, the keyword:[service method] must contain.");
    }
    *method = strdup(colon + 1);
    if (!*method) {
        free(name);
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    *servable = name;
    return NULL;
}

/* ------------------------------------------------------------------ number kinds */

/* Record, in document order, whether each number token is a float. Also refuses what cJSON lets
 * through but JSON forbids: raw control characters inside strings. */
typedef enum { LEX_OK, LEX_NOMEM, LEX_CONTROL_CHAR } lex_result;

/* Numbers are recorded (integer or float, in document order); every other value (strings,
 * arrays, objects, true, false, null) is only counted in *others, for the decode budget. */
static lex_result lex_number_kinds(const char *text, size_t len, bool **kinds, size_t *count,
                                   size_t *others)
{
    size_t cap = 64, n = 0;
    *others = 0;
    bool *k = malloc(cap * sizeof *k);
    if (!k) return LEX_NOMEM;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '"') {
            (*others)++;
            for (i++; i < len && text[i] != '"'; i++) {
                if ((unsigned char)text[i] < 0x20) {
                    free(k);
                    return LEX_CONTROL_CHAR;
                }
                if (text[i] == '\\') i++;
            }
            continue;
        }
        if (c == '[' || c == '{' || c == 't' || c == 'f' || c == 'n') (*others)++;
        if (c != '-' && (c < '0' || c > '9')) continue;
        bool is_float = false;
        for (; i < len && text[i] && strchr("0123456789+-.eE", text[i]); i++)
            if (text[i] == '.' || text[i] == 'e' || text[i] == 'E') is_float = true;
        i--;
        if (n == cap) {
            bool *grown = realloc(k, (cap *= 2) * sizeof *k);
            if (!grown) {
                free(k);
                return LEX_NOMEM;
            }
            k = grown;
        }
        k[n++] = is_float;
    }
    *kinds = k;
    *count = n;
    return LEX_OK;
}

static void tag_numbers(cJSON *node, const bool *kinds, size_t count, size_t *next)
{
    for (; node; node = node->next) {
        if (cJSON_IsNumber(node)) {
            bool is_float =
                *next < count ? kinds[*next] : node->valuedouble != floor(node->valuedouble);
            (*next)++;
            if (is_float) node->type |= FLOAT_FLAG;
        }
        if (node->child) tag_numbers(node->child, kinds, count, next);
    }
}

typedef enum { K_INT, K_FLOAT, K_BOOL, K_STR, K_OBJ, K_OTHER } json_kind;

static json_kind kind_of(const cJSON *v)
{
    if (cJSON_IsNumber(v)) return (v->type & FLOAT_FLAG) ? K_FLOAT : K_INT;
    if (cJSON_IsBool(v)) return K_BOOL;
    if (cJSON_IsString(v)) return K_STR;
    if (cJSON_IsObject(v)) return K_OBJ;
    return K_OTHER;
}

/* ------------------------------------------------------------------ request values */

static ss_status *fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static ss_status *fail(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ss_errf(SS_ERR_INVALID, "%s", msg);
}

typedef struct {
    ss_dtype dtype;
    bool is_bytes;
} obj_type;

/* The type an object leaf declares (default bytes); NULL when its type is not a known string. */
static bool object_type(const cJSON *obj, obj_type *out)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(obj, "type");
    if (!type) {
        *out = (obj_type){SS_DT_STRING, true};
        return true;
    }
    return cJSON_IsString(type) &&
           ss_serving_ms_rest_type(type->valuestring, &out->dtype, &out->is_bytes);
}

static ss_status *decode_b64(const cJSON *value, uint8_t **out, size_t *len)
{
    if (!cJSON_IsString(value))
        return fail("get scalar data failed, type is string, but json is not string type");
    const char *text = value->valuestring;
    errno = 0;
    if (!ss_base64_decode(text, strlen(text), out, len))
        return errno == ENOMEM ? ss_errf(SS_ERR_NOMEM, "out of memory")
                               : fail("'%.*s%s' is illegal b64 encode string", ERR_TEXT_MAX, text,
                                      strlen(text) > ERR_TEXT_MAX ? "..." : "");
    return NULL;
}

static ss_status *check_object_keys(const cJSON *obj)
{
    int n = cJSON_GetArraySize(obj), b64 = 0, type = 0, shape = 0;
    if (n == 0) return fail("json object, value is empty");
    if (n > 3)
        return fail("json object, items size is more than 3, only support specified ['b64', "
                    "'type', 'shape']");
    for (const cJSON *it = obj->child; it; it = it->next) {
        if (strcmp(it->string, "b64") == 0) {
            b64++;
        } else if (strcmp(it->string, "type") == 0) {
            if (!cJSON_IsString(it))
                return fail("json object, key is 'type', value should be string type");
            ss_dtype dt;
            bool is_bytes;
            if (!ss_serving_ms_rest_type(it->valuestring, &dt, &is_bytes))
                return fail("json object, specified type:'%.*s' is illegal", ERR_TEXT_MAX,
                            it->valuestring);
            type++;
        } else if (strcmp(it->string, "shape") == 0) {
            if (!cJSON_IsArray(it))
                return fail("json object, key is 'shape', value should be array type");
            bool zero_before = false;
            for (const cJSON *d = it->child; d; d = d->next) {
                if (zero_before) {
                    char *dump = cJSON_PrintUnformatted(it);
                    ss_status *st = fail("json object, key is 'shape', invalid shape value %.*s",
                                         ERR_TEXT_MAX, dump ? dump : "");
                    cJSON_free(dump);
                    return st;
                }
                if (kind_of(d) != K_INT || d->valuedouble < 0 || d->valuedouble > 2147483647.0)
                    return fail("json object, key is 'shape', array value should be unsigned "
                                "integer");
                if (d->valuedouble == 0) zero_before = true;
            }
            shape++;
        } else {
            return fail("json object, key is not ['b64', 'type', 'shape'], fail key:%.*s",
                        ERR_TEXT_MAX, it->string);
        }
    }
    if (b64 != 1) return fail("json object, 'b64' should be specified only one time");
    if (type > 1) return fail("json object, 'type' should be specified no more than one time");
    if (shape > 1) return fail("json object, 'shape' should be specified no more than one time");
    return NULL;
}

/* {"b64": ..., "type": ..., "shape": [...]} */
static ss_status *parse_object(const cJSON *obj, ss_tensor *t, bool *is_bytes)
{
    ss_status *st = check_object_keys(obj);
    if (st) return st;
    obj_type type_;
    const obj_type *type = object_type(obj, &type_) ? &type_ : NULL;
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(obj, "shape");
    int64_t dims[SS_MAX_DIMS];
    int ndim = shape ? cJSON_GetArraySize(shape) : 0;
    if (ndim > SS_MAX_DIMS) return fail("json object, shape has more than %d dims", SS_MAX_DIMS);
    int i = 0;
    for (const cJSON *d = shape ? shape->child : NULL; d; d = d->next)
        dims[i++] = (int64_t)d->valuedouble;
    int64_t numel = ss_shape_numel(ndim, dims);
    if (type->dtype == SS_DT_STRING && numel != 1)
        return fail("json object, only support scalar when data type is string or bytes, please "
                    "check 'type' or 'shape'");
    uint8_t *data;
    size_t len;
    st = decode_b64(cJSON_GetObjectItemCaseSensitive(obj, "b64"), &data, &len);
    if (st) return st;
    *is_bytes = type->is_bytes;
    if (type->dtype == SS_DT_STRING) {
        st = ss_tensor_alloc(t, SS_DT_STRING, 0, NULL);
        if (!st) st = ss_tensor_set_string(t, 0, (const char *)data, len);
        free(data);
        return st;
    }
    size_t itemsize = ss_dtype_size(type->dtype);
    if (numel < 0 || (uint64_t)numel > SIZE_MAX / itemsize) {
        free(data);
        return fail("size is not matched, decode base64 size:%zu; Given info: type:%s; type "
                    "size:%zu; element nums: too many (the shape's dims' product overflows)",
                    len, ss_serving_ms_rest_type_name(type->dtype, false), itemsize);
    }
    if (len != (size_t)numel * itemsize) {
        free(data);
        return fail("size is not matched, decode base64 size:%zu; Given info: type:%s; type "
                    "size:%zu; element nums:%lld",
                    len, ss_serving_ms_rest_type_name(type->dtype, false), itemsize,
                    (long long)numel);
    }
    st = ss_tensor_alloc(t, type->dtype, ndim, dims);
    if (!st && len) memcpy(t->data, data, len);
    free(data);
    return st;
}

static ss_status *store_number(ss_tensor *t, size_t index, const cJSON *v)
{
    double d = v->valuedouble;
    switch (t->dtype) {
    case SS_DT_INT32:
        if (d < -2147483648.0 || d > 2147483647.0)
            return fail("json value %.0f is out of the range of int32", d);
        ((int32_t *)t->data)[index] = (int32_t)d;
        return NULL;
    case SS_DT_FLOAT32:
        if (!(fabs(d) <= FLT_MAX)) return fail("json value %g is out of the range of float32", d);
        ((float *)t->data)[index] = (float)d;
        return NULL;
    case SS_DT_BOOL:
        ((bool *)t->data)[index] = cJSON_IsTrue(v);
        return NULL;
    default:
        return fail("data type is unknown");
    }
}

typedef struct {
    ss_tensor *t;
    int ndim;
    const int64_t *dims;
    json_kind kind;
    bool is_bytes;
} array_fill;

static ss_status *fill_leaves(array_fill *f, const cJSON *arr, size_t index)
{
    for (const cJSON *el = arr->child; el; el = el->next, index++) {
        if (f->kind == K_OBJ) {
            obj_type type_;
            const obj_type *type = object_type(el, &type_) ? &type_ : NULL;
            if (!type || type->dtype != SS_DT_STRING)
                return fail("json array, object type only support string or bytes type");
            if (type->is_bytes != f->is_bytes)
                return fail("json array, elements type is not equal");
            ss_status *st = check_object_keys(el);
            uint8_t *data;
            size_t len;
            if (!st) st = decode_b64(cJSON_GetObjectItemCaseSensitive(el, "b64"), &data, &len);
            if (st) return st;
            st = ss_tensor_set_string(f->t, (int64_t)index, (const char *)data, len);
            free(data);
            if (st) return st;
            continue;
        }
        json_kind k = kind_of(el);
        if (k == K_OBJ || k == K_OTHER)
            return fail("json array, data should be number, bool, string or bytes");
        if (k != f->kind) return fail("json array, elements type is not equal");
        ss_status *st = k == K_STR ? ss_tensor_set_string(f->t, (int64_t)index, el->valuestring,
                                                          strlen(el->valuestring))
                                   : store_number(f->t, index, el);
        if (st) return st;
    }
    return NULL;
}

static ss_status *fill_array(array_fill *f, const cJSON *arr, int depth, size_t index)
{
    if (!cJSON_IsArray(arr)) return fail("invalid json array: json type is not array");
    int n = cJSON_GetArraySize(arr);
    if (n != f->dims[depth])
        return fail("invalid json array: json size is %d, the dim %d expected to be %lld", n, depth,
                    (long long)f->dims[depth]);
    if (depth + 1 == f->ndim) return fill_leaves(f, arr, index);
    int64_t sub = ss_shape_numel(f->ndim - depth - 1, f->dims + depth + 1);
    size_t k = 0;
    for (const cJSON *el = arr->child; el; el = el->next, k++) {
        ss_status *st = fill_array(f, el, depth + 1, index + (size_t)sub * k);
        if (st) return st;
    }
    return NULL;
}

static ss_status *parse_array(const cJSON *arr, ss_tensor *t, bool *is_bytes)
{
    int64_t dims[SS_MAX_DIMS];
    int ndim = 0;
    const cJSON *leaf = arr;
    while (cJSON_IsArray(leaf) && leaf->child) {
        if (ndim == SS_MAX_DIMS) return fail("json array, more than %d dims", SS_MAX_DIMS);
        dims[ndim++] = cJSON_GetArraySize(leaf);
        leaf = leaf->child;
    }
    if (ndim == 0) return fail("json array, shape is empty");
    array_fill f = {t, ndim, dims, kind_of(leaf), false};
    ss_dtype dt = SS_DT_UNDEFINED;
    switch (f.kind) {
    case K_INT:
        dt = SS_DT_INT32;
        break;
    case K_FLOAT:
        dt = SS_DT_FLOAT32;
        break;
    case K_BOOL:
        dt = SS_DT_BOOL;
        break;
    case K_STR:
        dt = SS_DT_STRING;
        break;
    case K_OBJ: {
        obj_type type_;
        const obj_type *type = object_type(leaf, &type_) ? &type_ : NULL;
        if (type) {
            dt = type->dtype;
            f.is_bytes = type->is_bytes;
        }
        break;
    }
    case K_OTHER:
        break;
    }
    if (dt == SS_DT_UNDEFINED) return fail("json array, data type is unknown");
    int64_t numel = ss_shape_numel(ndim, dims);
    if (dt == SS_DT_STRING && numel != 1)
        return fail("json array, string or bytes type only support one item");
    if (f.kind == K_OBJ && dt != SS_DT_STRING)
        return fail("json array, item is object type, object only support string or bytes type");
    ss_status *st = ss_tensor_alloc(t, dt, ndim, dims);
    if (!st) st = fill_array(&f, arr, 0, 0);
    if (st) ss_tensor_free(t);
    *is_bytes = f.is_bytes;
    return st;
}

static ss_status *parse_value(const cJSON *v, ss_tensor *t, bool *is_bytes)
{
    *is_bytes = false;
    memset(t, 0, sizeof *t);
    if (cJSON_IsObject(v)) return parse_object(v, t, is_bytes);
    if (cJSON_IsArray(v)) return parse_array(v, t, is_bytes);
    if (cJSON_IsNull(v)) return fail("json value is null, it is not supported");
    ss_status *st;
    switch (kind_of(v)) {
    case K_INT:
        st = ss_tensor_alloc(t, SS_DT_INT32, 0, NULL);
        break;
    case K_FLOAT:
        st = ss_tensor_alloc(t, SS_DT_FLOAT32, 0, NULL);
        break;
    case K_BOOL:
        st = ss_tensor_alloc(t, SS_DT_BOOL, 0, NULL);
        break;
    case K_STR:
        st = ss_tensor_alloc(t, SS_DT_STRING, 0, NULL);
        if (!st) st = ss_tensor_set_string(t, 0, v->valuestring, strlen(v->valuestring));
        return st;
    default:
        return fail("json value type is unregistered");
    }
    if (!st) st = store_number(t, 0, v);
    return st;
}

static ss_status *parse_instance(const cJSON *obj, ss_predict_request *req)
{
    ss_serving_instance *inst = ss_predict_request_add_instance(req);
    if (!inst) return ss_errf(SS_ERR_NOMEM, "out of memory");
    for (const cJSON *it = obj->child; it; it = it->next) {
        if (!it->string[0]) return fail("string key is empty");
        ss_tensor t;
        bool is_bytes;
        ss_status *st = parse_value(it, &t, &is_bytes);
        if (!st) st = ss_serving_instance_put(inst, it->string, &t, is_bytes);
        ss_tensor_free(&t);
        if (st) return st;
    }
    return NULL;
}

static ss_status *parse_instances(const cJSON *root, ss_predict_request *req)
{
    int count = 0;
    const cJSON *instances = NULL;
    if (cJSON_IsObject(root))
        for (const cJSON *it = root->child; it; it = it->next)
            if (strcmp(it->string, "instances") == 0) {
                count++;
                instances = it;
            }
    if (count != 1)
        return fail("key 'instances' expects to exist once, but actually %d times", count);
    if (cJSON_IsObject(instances)) {
        if (!instances->child) return fail("json object, value is empty");
        return parse_instance(instances, req);
    }
    if (!cJSON_IsArray(instances)) return fail("instances no key mode is not supported");
    if (!instances->child) return fail("instances value is array type, but no value");
    if (!cJSON_IsObject(instances->child)) return fail("instances no key mode is not supported");
    for (const cJSON *it = instances->child; it; it = it->next) {
        if (!cJSON_IsObject(it)) return fail("json array, instance is not object type");
        if (!it->child) return fail("json array, instance is object type, but no value");
        ss_status *st = parse_instance(it, req);
        if (st) return st;
    }
    return NULL;
}

static ss_status *parse_json(const char *body, size_t len, cJSON **out)
{
    if (!ss_serving_utf8_valid(body, len))
        return fail("Illegal JSON format.[json.exception.parse_error.101] parse error: invalid "
                    "UTF-8 byte");
    bool *kinds = NULL;
    size_t count = 0, others = 0, next = 0;
    lex_result lex = lex_number_kinds(body, len, &kinds, &count, &others);
    if (lex == LEX_NOMEM) return ss_errf(SS_ERR_NOMEM, "out of memory");
    if (lex == LEX_CONTROL_CHAR)
        return fail("Illegal JSON format.[json.exception.parse_error.101] parse error: control "
                    "character in a string must be escaped");
    if (ss_serving_json_has_nul(body, len)) {
        free(kinds);
        return fail("the request body holds a \\u0000 escape: JSON strings here cannot carry NUL "
                    "bytes, send such a string as {\"b64\": ..., \"type\": \"bytes\"}");
    }
    /* cJSON spends ~64 bytes per value: bound it before parsing, not after. */
    if (count + others > SS_REST_MAX_JSON_VALUES) {
        free(kinds);
        return fail("http message has more than %d JSON values; send large tensors as "
                    "{\"b64\": ...} objects",
                    SS_REST_MAX_JSON_VALUES);
    }
    const char *end = NULL;
    bool oom = false;
    cJSON *root = ss_json_parse(body, len, &end, &oom);
    if (oom) {
        free(kinds);
        return ss_errf(SS_ERR_NOMEM, "out of memory while parsing the request's JSON");
    }
    size_t at = end ? (size_t)(end - body) : 0;
    if (!root || at != len) {
        cJSON_Delete(root);
        free(kinds);
        return fail("Illegal JSON format.[json.exception.parse_error.101] parse error at byte "
                    "%zu: syntax error",
                    at + 1);
    }
    tag_numbers(root, kinds, count, &next);
    free(kinds);
    *out = root;
    return NULL;
}

/* The dispatcher's tensor check that JSON can still violate: a string is a scalar or [1]. */
static ss_status *check_strings(const ss_predict_request *req)
{
    for (size_t i = 0; i < req->count; i++) {
        for (size_t k = 0; k < req->instances[i].count; k++) {
            const ss_serving_item *it = &req->instances[i].items[k];
            const ss_tensor *t = &it->tensor;
            if (t->dtype != SS_DT_STRING || t->ndim == 0 || (t->ndim == 1 && t->dims[0] == 1))
                continue;
            char shape[160] = "[";
            for (int d = 0; d < t->ndim; d++)
                snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld",
                         d ? ", " : "", (long long)t->dims[d]);
            strncat(shape, "]", sizeof shape - strlen(shape) - 1);
            return fail("Instances input %.*s check failed, detail: Instance tensor check failed: "
                        "bytes or string type input  shape can only be (1,) or empty, but given "
                        "shape is %s",
                        ERR_TEXT_MAX, it->name, shape);
        }
    }
    return NULL;
}

/* The most keys any instance object of the body has (0 when "instances" is malformed: the
 * parser reports that). */
static size_t max_instance_keys(const cJSON *root)
{
    const cJSON *instances =
        cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "instances") : NULL;
    if (cJSON_IsObject(instances)) return (size_t)cJSON_GetArraySize(instances);
    size_t most = 0;
    for (const cJSON *it = cJSON_IsArray(instances) ? instances->child : NULL; it; it = it->next) {
        size_t n = cJSON_IsObject(it) ? (size_t)cJSON_GetArraySize(it) : 0;
        if (n > most) most = n;
    }
    return most;
}

static ss_status *check_name_limit(const cJSON *root, const ss_predict_request *req,
                                   ss_serving_name_limit_fn name_limit, void *limit_ctx)
{
    size_t names = max_instance_keys(root), limit = SS_SERVING_MIN_NAME_LIMIT;
    if (names > limit && name_limit)
        limit = name_limit(limit_ctx, req->servable, req->method, req->version);
    if (names <= limit) return NULL;
    return ss_errf(SS_ERR_INVALID,
                   "An instance has %zu inputs, more than the limit %zu (max(%d, 4 x the inputs of "
                   "servable %.128s, method %.128s))",
                   names, limit, SS_SERVING_MIN_NAME_LIMIT, req->servable, req->method);
}

/* What the request's instances will hold as serving structs (pb_budget.h), before the model is
 * known: as many outputs as inputs (the keys of the widest instance), names of up to 15 bytes,
 * each input a tensor of its own (decoded from JSON). */
static size_t instances_cost(const cJSON *root)
{
    const cJSON *instances =
        cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "instances") : NULL;
    size_t n = cJSON_IsArray(instances) ? (size_t)cJSON_GetArraySize(instances) : 1;
    size_t keys = max_instance_keys(root);
    size_t per = ss_pb_instance_bytes(keys, keys, 16, true);
    return n <= SIZE_MAX / per ? n * per : SIZE_MAX;
}

ss_status *ss_rest_parse_request(const char *url, const char *body, size_t len,
                                 ss_predict_request **out)
{
    return ss_rest_parse_request_limited(url, body, len, NULL, NULL, out, NULL);
}

ss_status *ss_rest_parse_request_limited(const char *url, const char *body, size_t len,
                                         ss_serving_name_limit_fn name_limit, void *limit_ctx,
                                         ss_predict_request **out, size_t *held)
{
    *out = NULL;
    if (held) *held = 0;
    cJSON *root = NULL;
    ss_status *st = parse_json(body, len, &root);
    if (st) return st;
    char *servable, *method;
    uint64_t version;
    if ((st = ss_rest_parse_url(url, &servable, &method, &version))) {
        cJSON_Delete(root);
        return st;
    }
    ss_predict_request *req = ss_predict_request_new(servable, method, version);
    free(servable);
    free(method);
    if (!req) {
        st = ss_errf(SS_ERR_NOMEM, "out of memory");
    } else if ((st = check_name_limit(root, req, name_limit, limit_ctx))) {
        cJSON_Delete(root);
        ss_predict_request_free(req);
        return st;
    } else if (held) {
        size_t cost = instances_cost(root), used, limit;
        if (!ss_server_rows_take(cost, &used, &limit)) {
            cJSON_Delete(root);
            ss_predict_request_free(req);
            return ss_errf(SS_ERR_LIMIT,
                           "the request's instances take ~%zu MB as serving instances and the "
                           "server holds %zu MB of other requests': over its limit of %zu MB "
                           "(--kserve-max-batch-rows-mb, for MindSpore's REST instances too): "
                           "send fewer instances a request",
                           cost >> 20, used >> 20, limit >> 20);
        }
        *held = cost;
        st = parse_instances(root, req);
    } else {
        st = parse_instances(root, req);
    }
    cJSON_Delete(root);
    if (st) {
        ss_predict_request_free(req);
        ss_status *wrapped = ss_errf(st->code, "Parser request failed, %s", st->msg);
        ss_status_free(st);
        if (held) ss_server_rows_give(*held), *held = 0;
        return wrapped;
    }
    st = check_strings(req);
    if (st) {
        ss_predict_request_free(req);
        if (held) ss_server_rows_give(*held), *held = 0;
        return st;
    }
    *out = req;
    return NULL;
}

/* ------------------------------------------------------------------ replies */

static void put_float(sbuf *s, double v, bool single)
{
    if (!isfinite(v)) {
        sb_str(s, "null");
        return;
    }
    char buf[40];
    for (int p = single ? 6 : 15; p <= (single ? 9 : 17); p++) {
        snprintf(buf, sizeof buf, "%.*g", p, v);
        if (single ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v) break;
    }
    sb_str(s, buf);
    if (!strpbrk(buf, ".en")) sb_str(s, ".0");
}

static bool put_element(sbuf *s, const ss_serving_item *item, size_t i)
{
    const void *d = item->tensor.data;
    switch (item->tensor.dtype) {
    case SS_DT_BOOL:
        sb_str(s, ((const bool *)d)[i] ? "true" : "false");
        return true;
    case SS_DT_INT8:
        sb_printf(s, "%d", ((const int8_t *)d)[i]);
        return true;
    case SS_DT_UINT8:
        sb_printf(s, "%u", ((const uint8_t *)d)[i]);
        return true;
    case SS_DT_INT16:
        sb_printf(s, "%d", ((const int16_t *)d)[i]);
        return true;
    case SS_DT_UINT16:
        sb_printf(s, "%u", ((const uint16_t *)d)[i]);
        return true;
    case SS_DT_INT32:
        sb_printf(s, "%d", ((const int32_t *)d)[i]);
        return true;
    case SS_DT_UINT32:
        sb_printf(s, "%u", ((const uint32_t *)d)[i]);
        return true;
    case SS_DT_INT64:
        sb_printf(s, "%lld", (long long)((const int64_t *)d)[i]);
        return true;
    case SS_DT_UINT64:
        sb_printf(s, "%llu", (unsigned long long)((const uint64_t *)d)[i]);
        return true;
    case SS_DT_FLOAT16:
        put_float(s, ss_f16_to_f32(((const uint16_t *)d)[i]), true);
        return true;
    case SS_DT_BFLOAT16:
        put_float(s, ss_bf16_to_f32(((const uint16_t *)d)[i]), true);
        return true;
    case SS_DT_FLOAT32:
        put_float(s, ((const float *)d)[i], true);
        return true;
    case SS_DT_FLOAT64:
        put_float(s, ((const double *)d)[i], false);
        return true;
    case SS_DT_STRING: {
        const ss_string *str = (const ss_string *)d + i;
        if (!item->is_bytes) return sb_json_string(s, str->data ? str->data : "", str->len);
        size_t n;
        char *b64 = ss_base64_encode(str->data, str->len, &n);
        if (!b64) return false;
        sb_str(s, "{\"b64\":\"");
        sb_put(s, b64, n);
        sb_str(s, "\"}");
        free(b64);
        return true;
    }
    default:
        return false;
    }
}

static bool put_array(sbuf *s, const ss_serving_item *item, int depth, size_t *index)
{
    const ss_tensor *t = &item->tensor;
    sb_put(s, "[", 1);
    for (int64_t k = 0; k < t->dims[depth]; k++) {
        if (k) sb_put(s, ",", 1);
        if (depth + 1 < t->ndim) {
            if (!put_array(s, item, depth + 1, index)) return false;
        } else if (!put_element(s, item, (*index)++)) {
            return false;
        }
    }
    sb_put(s, "]", 1);
    return true;
}

static bool put_value(sbuf *s, const ss_serving_item *item)
{
    if (item->tensor.ndim == 0) return put_element(s, item, 0);
    if (item->tensor.dtype == SS_DT_STRING && item->tensor.ndim != 1) return false;
    size_t index = 0;
    return put_array(s, item, 0, &index);
}

char *ss_rest_error_json(const char *msg, size_t *len)
{
    sbuf s = {0};
    sb_str(&s, "{\"error_msg\":");
    if (!sb_json_string(&s, msg, strlen(msg))) {
        s.len = 0;
        sb_str(&s, "{\"error_msg\":\"Predict failed\"");
    }
    sb_str(&s, "}");
    if (s.oom) {
        free(s.p);
        return NULL;
    }
    *len = s.len;
    return s.p;
}

char *ss_rest_reply_json(const ss_predict_reply *reply, size_t *len)
{
    if (reply->error_count == 1 && reply->count == 0)
        return ss_rest_error_json(
            reply->errors[0].message ? reply->errors[0].message : "Predict failed", len);
    sbuf s = {0};
    sb_str(&s, "{\"instances\":[");
    for (size_t i = 0; i < reply->count; i++) {
        if (i) sb_put(&s, ",", 1);
        if (reply->error_count && reply->errors[i].code != 0) {
            const char *m = reply->errors[i].message ? reply->errors[i].message : "Predict failed";
            sb_str(&s, "{\"error_msg\":");
            sb_json_string(&s, m, strlen(m));
            sb_put(&s, "}", 1);
            continue;
        }
        const ss_serving_instance *inst = &reply->instances[i];
        sb_put(&s, "{", 1);
        for (size_t k = 0; k < inst->count; k++) {
            if (k) sb_put(&s, ",", 1);
            const char *name = inst->items[k].name;
            bool ok = sb_json_string(&s, name, strlen(name));
            sb_put(&s, ":", 1);
            if (!ok || !put_value(&s, &inst->items[k])) {
                free(s.p);
                char msg[256];
                snprintf(msg, sizeof msg,
                         "Failed to construct the response: output %.*s cannot be written as JSON",
                         ERR_TEXT_MAX, name);
                return ss_rest_error_json(msg, len);
            }
        }
        sb_put(&s, "}", 1);
    }
    sb_str(&s, "]}");
    if (s.oom) {
        free(s.p);
        return NULL;
    }
    *len = s.len;
    return s.p;
}

static cJSON *specs_json(const ss_serving_tensor_spec *specs, size_t n)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; arr && i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", specs[i].name);
        cJSON_AddStringToObject(o, "dtype", ss_dtype_name(specs[i].dtype));
        cJSON *shape = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; shape && d < specs[i].ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)specs[i].dims[d]));
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

char *ss_rest_signature_json(const ss_serving_signature *sig, size_t *len)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "servable", sig->servable);
    cJSON_AddNumberToObject(o, "version", (double)sig->version);
    cJSON_AddNumberToObject(o, "rank_size", sig->rank_size);
    cJSON_AddNumberToObject(o, "stage_size", sig->stage_size);
    cJSON_AddBoolToObject(o, "with_batch_dim", sig->with_batch_dim);
    cJSON_AddNumberToObject(o, "batch_size", sig->batch_size);
    cJSON *methods = cJSON_AddArrayToObject(o, "methods");
    for (size_t m = 0; methods && m < sig->n_methods; m++) {
        const ss_serving_method *sm = &sig->methods[m];
        cJSON *mo = cJSON_CreateObject();
        cJSON_AddStringToObject(mo, "name", sm->name);
        cJSON_AddItemToObject(mo, "inputs", specs_json(sm->inputs, sm->n_inputs));
        cJSON_AddItemToObject(mo, "outputs", specs_json(sm->outputs, sm->n_outputs));
        cJSON_AddItemToArray(methods, mo);
    }
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    *len = text ? strlen(text) : 0;
    return text;
}
