/*
 * Cast and CastLike between every pair of bool, float16, bfloat16, float32, float64 and 8- to
 * 64-bit integer types, plus string -> number.
 *
 * Conversions are C's, with undefined cases defined:
 * - float -> integer truncates toward zero; NaN gives 0 and out-of-range values saturate to the
 *   target's min/max (C leaves both undefined; numpy's result depends on the CPU).
 * - integer -> narrower integer wraps (numpy's astype); anything -> bool is "!= 0" (NaN -> true).
 * - float32 -> float16 rounds to nearest even; float32 -> bfloat16 truncates the low 16 bits
 *   (NaN stays NaN), which is what the ONNX 1.12 reference and its test data do.
 * - float16/bfloat16 go through float32, converted in chunks on the stack.
 * - string -> number parses with strtod/strtof ("NaN", "INF", "-INF" included); a string that
 *   is not a number is an error at run time.
 * - float32/float64/integer -> string writes numpy's str(): the shortest text that reads back as
 *   the same value, "1.0" for integral floats, "NaN"/"INF"/"-INF" as the spec spells them. The
 *   text lives in the node's state (CAST_STR_MAX bytes per element, sized by infer), so these
 *   outputs are SS_OPF_STRING_OUT and never folded.
 */
#include "broadcast.h"

#include "common.h"
#include "gemm_kernel.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*cast_fn)(const void *src, void *dst, int64_t n);

#define SAT_SIGNED(SFX, T, MIN, MAX)                                                               \
    static inline T sat_##SFX(double v)                                                            \
    {                                                                                              \
        return v != v ? 0 : v <= (double)MIN ? MIN : v >= (double)MAX ? MAX : (T)v;                \
    }
#define SAT_UNSIGNED(SFX, T, MAX)                                                                  \
    static inline T sat_##SFX(double v)                                                            \
    {                                                                                              \
        return v != v ? 0 : v <= 0 ? 0 : v >= (double)MAX ? MAX : (T)v;                            \
    }
SAT_SIGNED(i8, int8_t, INT8_MIN, INT8_MAX)
SAT_SIGNED(i16, int16_t, INT16_MIN, INT16_MAX)
SAT_SIGNED(i32, int32_t, INT32_MIN, INT32_MAX)
SAT_SIGNED(i64, int64_t, INT64_MIN, INT64_MAX)
SAT_UNSIGNED(u8, uint8_t, UINT8_MAX)
SAT_UNSIGNED(u16, uint16_t, UINT16_MAX)
SAT_UNSIGNED(u32, uint32_t, UINT32_MAX)
SAT_UNSIGNED(u64, uint64_t, UINT64_MAX)

#define CONV_INT(SFX, T, x)                                                                        \
    _Generic((x), float : sat_##SFX((double)(x)), double : sat_##SFX((double)(x)), default : (T)(x))
#define CONV_b(x) ((uint8_t)((x) != 0))
#define CONV_f32(x) ((float)(x))
#define CONV_f64(x) ((double)(x))
#define CONV_i8(x) CONV_INT(i8, int8_t, x)
#define CONV_i16(x) CONV_INT(i16, int16_t, x)
#define CONV_i32(x) CONV_INT(i32, int32_t, x)
#define CONV_i64(x) CONV_INT(i64, int64_t, x)
#define CONV_u8(x) CONV_INT(u8, uint8_t, x)
#define CONV_u16(x) CONV_INT(u16, uint16_t, x)
#define CONV_u32(x) CONV_INT(u32, uint32_t, x)
#define CONV_u64(x) CONV_INT(u64, uint64_t, x)

/* The natively converted types, twice: a list cannot expand inside its own expansion. */
/* clang-format off */
#define CAST_SRC(X)                                                                                \
    X(b, uint8_t, SS_DT_BOOL)                                                                      \
    X(f32, float, SS_DT_FLOAT32)                                                                   \
    X(f64, double, SS_DT_FLOAT64)                                                                  \
    X(i8, int8_t, SS_DT_INT8)                                                                      \
    X(i16, int16_t, SS_DT_INT16)                                                                   \
    X(i32, int32_t, SS_DT_INT32)                                                                   \
    X(i64, int64_t, SS_DT_INT64)                                                                   \
    X(u8, uint8_t, SS_DT_UINT8)                                                                    \
    X(u16, uint16_t, SS_DT_UINT16)                                                                 \
    X(u32, uint32_t, SS_DT_UINT32)                                                                 \
    X(u64, uint64_t, SS_DT_UINT64)
#define CAST_DST(X, S, ST)                                                                         \
    X(S, ST, b, uint8_t, SS_DT_BOOL)                                                               \
    X(S, ST, f32, float, SS_DT_FLOAT32)                                                            \
    X(S, ST, f64, double, SS_DT_FLOAT64)                                                           \
    X(S, ST, i8, int8_t, SS_DT_INT8)                                                               \
    X(S, ST, i16, int16_t, SS_DT_INT16)                                                            \
    X(S, ST, i32, int32_t, SS_DT_INT32)                                                            \
    X(S, ST, i64, int64_t, SS_DT_INT64)                                                            \
    X(S, ST, u8, uint8_t, SS_DT_UINT8)                                                             \
    X(S, ST, u16, uint16_t, SS_DT_UINT16)                                                          \
    X(S, ST, u32, uint32_t, SS_DT_UINT32)                                                          \
    X(S, ST, u64, uint64_t, SS_DT_UINT64)
/* clang-format on */

#define DEF_CAST(S, ST, D, DT, DDT)                                                                \
    static void cast_##S##_##D(const void *src_, void *dst_, int64_t n)                            \
    {                                                                                              \
        const ST *restrict src = src_;                                                             \
        DT *restrict dst = dst_;                                                                   \
        for (int64_t i = 0; i < n; i++)                                                            \
            dst[i] = CONV_##D(src[i]);                                                             \
    }
#define DEF_CAST_FROM(S, ST, SDT) CAST_DST(DEF_CAST, S, ST)
CAST_SRC(DEF_CAST_FROM)

#define CAST_TAB_ENTRY(S, ST, D, DT, DDT) [DDT] = cast_##S##_##D,
#define CAST_TAB_ROW(S, ST, SDT) [SDT] = {CAST_DST(CAST_TAB_ENTRY, S, ST)},
static const cast_fn cast_tab[SS_EW_NDT][SS_EW_NDT] = {CAST_SRC(CAST_TAB_ROW)};

static void f32_to_bf16_trunc(const float *src, uint16_t *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        uint16_t h = (uint16_t)(u >> 16);
        if ((u & 0x7fffffffu) > 0x7f800000u) h |= 0x40; /* keep NaN a NaN */
        dst[i] = h;
    }
}

static void from_f32(ss_dtype dt, const float *src, void *dst, int64_t n)
{
    if (dt == SS_DT_BFLOAT16)
        f32_to_bf16_trunc(src, dst, n);
    else
        ss_ew_f32_to_half(dt, src, dst, n);
}

typedef struct {
    ss_dtype from, to;
    cast_fn fn; /* native pair; for half types the float32 side of it */
    char *text; /* to string: CAST_STR_MAX bytes per element, after the struct */
    int parts;  /* of the worker pool, for a native pair */
} cast_plan;

/* A native pair's elements in chunks over the pool's parts (ss_pool_run: parts claim them). */
typedef struct {
    const cast_plan *p;
    const char *src;
    char *dst;
    size_t ies, oes;
    int64_t n, chunk, next;
} cast_job;

static void cast_part(void *ctx, int part, int parts)
{
    (void)part, (void)parts;
    cast_job *j = ctx;
    for (int64_t o; (o = __atomic_fetch_add(&j->next, j->chunk, __ATOMIC_RELAXED)) < j->n;)
        j->p->fn(j->src + (size_t)o * j->ies, j->dst + (size_t)o * j->oes,
                 j->n - o < j->chunk ? j->n - o : j->chunk);
}

#define CAST_STR_MAX 32 /* "-1.2345678901234567e-308" and INT64_MIN fit */

static ss_dtype native(ss_dtype dt)
{
    return ss_ew_is_half(dt) ? SS_DT_FLOAT32 : dt;
}

static const char *const onnx_type_names[] = {
    [SS_DT_FLOAT32] = "FLOAT",   [SS_DT_UINT8] = "UINT8",       [SS_DT_INT8] = "INT8",
    [SS_DT_UINT16] = "UINT16",   [SS_DT_INT16] = "INT16",       [SS_DT_INT32] = "INT32",
    [SS_DT_INT64] = "INT64",     [SS_DT_STRING] = "STRING",     [SS_DT_BOOL] = "BOOL",
    [SS_DT_FLOAT16] = "FLOAT16", [SS_DT_FLOAT64] = "DOUBLE",    [SS_DT_UINT32] = "UINT32",
    [SS_DT_UINT64] = "UINT64",   [SS_DT_BFLOAT16] = "BFLOAT16",
};

/* Cast's target: attribute `to`, an int since opset 6, a type name before. */
static ss_status *cast_target(const ss_kctx *k, ss_dtype *to)
{
    const ss_onnx_attr *a = ss_onnx_attr_find(k->node, "to");
    if (!a) return ss_op_err(k, SS_ERR_INVALID, "attribute 'to' is required");
    if (a->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING) {
        char name[32];
        ss_onnx_attr_string(k->node, "to", name, sizeof name);
        for (size_t i = 0; i < sizeof onnx_type_names / sizeof onnx_type_names[0]; i++)
            if (onnx_type_names[i] && !strcmp(onnx_type_names[i], name)) {
                *to = (ss_dtype)i;
                return NULL;
            }
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "target type '%s' is not supported", name);
    }
    int64_t v = ss_onnx_attr_int(k->node, "to", 0);
    if (v < INT32_MIN || v > INT32_MAX || !ss_dtype_valid((int)v))
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "target type %lld is not supported", (long long)v);
    *to = (ss_dtype)v;
    return NULL;
}

static ss_status *cast_to_string_plan(ss_kctx *k)
{
    const ss_tensor *x = k->in[0];
    if (x->dtype != SS_DT_FLOAT32 && x->dtype != SS_DT_FLOAT64 && !ss_dtype_is_int(x->dtype))
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "casting %s to string is not supported",
                         ss_dtype_name(x->dtype));
    int64_t n = ss_tensor_numel(x);
    if (n < 0 || (uint64_t)n > SIZE_MAX / CAST_STR_MAX / 2)
        return ss_op_err(k, SS_ERR_LIMIT, "too many elements to cast to string");
    cast_plan *p = ss_op_state_alloc(k, sizeof *p + (size_t)n * CAST_STR_MAX);
    if (!p) return ss_op_oom();
    *p = (cast_plan){.from = x->dtype, .to = SS_DT_STRING, .text = (char *)(p + 1)};
    ss_op_same_shape(k->out[0], x);
    k->out[0]->dtype = SS_DT_STRING;
    return NULL;
}

/* numpy's str() of a float: the fewest significant digits that read back as v. */
static int format_shortest(char *buf, double v, bool single)
{
    if (isnan(v)) return snprintf(buf, CAST_STR_MAX, "NaN");
    if (isinf(v)) return snprintf(buf, CAST_STR_MAX, v < 0 ? "-INF" : "INF");
    int len = 0;
    for (int digits = 1; digits <= 17; digits++) {
        len = snprintf(buf, CAST_STR_MAX, "%.*g", digits, v);
        if (single ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v) break;
    }
    if (strspn(buf, "-0123456789") == (size_t)len) len += snprintf(buf + len, 3, ".0");
    return len;
}

static ss_status *cast_to_string(ss_kctx *k, const cast_plan *p, int64_t n)
{
    const ss_tensor *x = k->in[0];
    ss_string *out = k->out[0]->data;
    for (int64_t i = 0; i < n; i++) {
        char *buf = p->text + (size_t)i * CAST_STR_MAX;
        uint64_t u = 0;
        if (p->from == SS_DT_UINT64) memcpy(&u, (const char *)x->data + i * 8, 8);
        int len = p->from == SS_DT_UINT64
                      ? snprintf(buf, CAST_STR_MAX, "%llu", (unsigned long long)u)
                  : ss_dtype_is_int(p->from)
                      ? snprintf(buf, CAST_STR_MAX, "%lld", (long long)ss_op_elem_i64(x, i))
                      : format_shortest(buf, ss_op_elem_f64(x, i), p->from == SS_DT_FLOAT32);
        out[i] = (ss_string){.len = (size_t)len, .data = buf};
    }
    return NULL;
}

static ss_status *cast_plan_make(ss_kctx *k, ss_dtype to)
{
    const ss_tensor *x = k->in[0];
    ss_dtype from = x->dtype;
    if (to == SS_DT_STRING) return cast_to_string_plan(k);
    cast_fn fn = NULL;
    if (from == SS_DT_STRING)
        fn = cast_tab[SS_DT_FLOAT64][native(to)];
    else if ((unsigned)from < SS_EW_NDT)
        fn = cast_tab[native(from)][native(to)];
    if (!fn)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "casting %s to %s is not supported",
                         ss_dtype_name(from), ss_dtype_name(to));
    cast_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    *p = (cast_plan){from, to, fn};
    p->parts = ss_op_par_parts(k, ss_tensor_numel(x));
    ss_op_same_shape(k->out[0], x);
    k->out[0]->dtype = to;
    return NULL;
}

static ss_status *cast_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    ss_dtype to = SS_DT_UNDEFINED;
    if (!st) st = cast_target(k, &to);
    if (!st) st = cast_plan_make(k, to);
    return st;
}

static ss_status *castlike_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (!st) st = cast_plan_make(k, k->in[1]->dtype);
    return st;
}

/* String elements parse to double (float for a float32 target, to round once). */
static ss_status *cast_from_string(ss_kctx *k, const cast_plan *p, int64_t n)
{
    const ss_string *s = k->in[0]->data;
    char *dst = k->out[0]->data;
    size_t es = ss_dtype_size(p->to);
    double buf[SS_EW_CHUNK];
    float fbuf[SS_EW_CHUNK];
    for (int64_t o = 0; o < n; o += SS_EW_CHUNK) {
        int64_t m = n - o < SS_EW_CHUNK ? n - o : SS_EW_CHUNK;
        for (int64_t i = 0; i < m; i++) {
            const char *text = s[o + i].data ? s[o + i].data : "";
            char *end;
            errno = 0;
            if (native(p->to) == SS_DT_FLOAT32)
                fbuf[i] = strtof(text, &end);
            else
                buf[i] = strtod(text, &end);
            if (end == text || *end)
                return ss_op_err(k, SS_ERR_INVALID, "element %lld ('%.40s') is not a number",
                                 (long long)(o + i), text);
        }
        if (native(p->to) != SS_DT_FLOAT32) {
            p->fn(buf, dst + (size_t)o * es, m);
        } else if (p->to == SS_DT_FLOAT32) {
            memcpy(dst + (size_t)o * es, fbuf, sizeof(float) * (size_t)m);
        } else {
            from_f32(p->to, fbuf, dst + (size_t)o * es, m);
        }
    }
    return NULL;
}

static ss_status *cast_run(ss_kctx *k)
{
    const cast_plan *p = k->state;
    const char *src = k->in[0]->data;
    char *dst = k->out[0]->data;
    int64_t n = ss_tensor_numel(k->out[0]);
    if (p->from == SS_DT_STRING) return cast_from_string(k, p, n);
    if (p->to == SS_DT_STRING) return cast_to_string(k, p, n);
    if (p->from == p->to) {
        if (n > 0) memcpy(dst, src, k->out[0]->nbytes);
        return NULL;
    }
    bool hin = ss_ew_is_half(p->from), hout = ss_ew_is_half(p->to);
    if (!hin && !hout && p->parts > 1 && n >= SS_EW_PAR_MIN_ELEMS) {
        /* about 4 chunks per part, each a multiple of 64 elements (whole cache lines) */
        cast_job j = {p, src, dst, ss_dtype_size(p->from), ss_dtype_size(p->to), n, 0, 0};
        j.chunk = (n / (4 * (int64_t)p->parts) + 64) / 64 * 64;
        ss_pool_run(p->parts, cast_part, &j);
        return NULL;
    }
    if (!hin && !hout) {
        p->fn(src, dst, n);
        return NULL;
    }
    size_t ies = ss_dtype_size(p->from), oes = ss_dtype_size(p->to);
    float a[SS_EW_CHUNK], b[SS_EW_CHUNK];
    for (int64_t o = 0; o < n; o += SS_EW_CHUNK) {
        int64_t m = n - o < SS_EW_CHUNK ? n - o : SS_EW_CHUNK;
        const void *s = src + (size_t)o * ies;
        void *d = dst + (size_t)o * oes;
        if (hin && hout) {
            ss_ew_half_to_f32(p->from, s, a, m);
            from_f32(p->to, a, d, m);
        } else if (hin) {
            ss_ew_half_to_f32(p->from, s, a, m);
            p->fn(a, d, m);
        } else {
            p->fn(s, b, m);
            from_f32(p->to, b, d, m);
        }
    }
    return NULL;
}

const ss_op_def ss_ops_cast[] = {
    {"", "Cast", 1, 21, cast_infer, cast_run, SS_OPF_ELEMENTWISE | SS_OPF_STRING_OUT},
    {"", "CastLike", 15, 21, castlike_infer, cast_run, SS_OPF_ELEMENTWISE | SS_OPF_STRING_OUT},
    {0},
};
