/*
 * Helpers shared by the op families (see common.h): infer-time checks, per-plan state,
 * plan-time integer values, element reads, fills, and the strided view copy. The view copy and
 * the fill run at execution time and allocate nothing.
 */
#include "common.h"

#include "gemm_kernel.h"

#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* ------------------------------------------------------------------ infer helpers */

ss_status *ss_op_check_attrs(const ss_kctx *k, const char *const *known)
{
    for (size_t i = 0; i < k->node->n_attribute; i++) {
        const char *name = k->node->attribute[i]->name;
        bool ok = false;
        for (const char *const *p = known; *p && !ok; p++)
            ok = strcmp(*p, name) == 0;
        if (!ok) return ss_op_err(k, SS_ERR_UNSUPPORTED, "attribute '%s' is not supported", name);
    }
    return NULL;
}

ss_status *ss_op_expect_float(const ss_kctx *k, int i)
{
    static const ss_dtype float_types[] = {SS_DT_FLOAT32, SS_DT_FLOAT64};
    return ss_op_expect_dtype(k, i, float_types, 2);
}

ss_status *ss_op_attr_axis(const ss_kctx *k, const char *name, int64_t dflt, int rank, int *axis)
{
    return ss_op_axis(k, ss_onnx_attr_int(k->node, name, dflt), rank, axis);
}

int64_t ss_op_dims_prod(const int64_t *dims, int from, int to)
{
    int64_t p = 1;
    for (int i = from; i < to; i++)
        p *= dims[i];
    return p;
}

void ss_op_split_axis(const ss_tensor *x, int axis, int64_t *outer, int64_t *n, int64_t *inner)
{
    *outer = ss_op_dims_prod(x->dims, 0, axis);
    *n = x->dims[axis];
    *inner = ss_op_dims_prod(x->dims, axis + 1, x->ndim);
}

void ss_op_contiguous_strides(int nd, const int64_t *dims, int64_t *strides)
{
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        strides[i] = s;
        s *= dims[i];
    }
}

void *ss_op_state_alloc(ss_kctx *k, size_t size)
{
    k->state = calloc(1, size);
    return k->state;
}

ss_status *ss_op_oom(void)
{
    return ss_errf(SS_ERR_NOMEM, "out of memory");
}

ss_status *ss_op_plan_value(ss_kctx *k, int i, const char *what, const ss_tensor **out)
{
    const ss_tensor *v = ss_kctx_value_needed(k, i);
    /* outside planning the value may be the bare input, whose data is NULL */
    if (!v || (!v->data && ss_tensor_numel(k->in[i]) > 0))
        return ss_op_err(k, SS_ERR_UNSUPPORTED,
                         "data-dependent output shape (input '%s' is only known at run time)",
                         what);
    *out = v;
    return NULL;
}

ss_status *ss_op_plan_ints(ss_kctx *k, int i, const char *what, int64_t *dst, int cap, int *n)
{
    *n = -1;
    if (i >= k->n_in || !k->in[i]) return NULL;
    const ss_tensor *v = NULL;
    ss_status *st = ss_op_plan_value(k, i, what, &v);
    if (st) return st;
    if (v->dtype != SS_DT_INT64 && v->dtype != SS_DT_INT32)
        return ss_op_err(k, SS_ERR_INVALID, "input '%s' must be int32 or int64, not %s", what,
                         ss_dtype_name(v->dtype));
    if (v->ndim > 1 || ss_tensor_numel(v) > cap)
        return ss_op_err(k, SS_ERR_INVALID, "input '%s' must be a 1-D tensor of at most %d values",
                         what, cap);
    *n = ss_op_read_ints(v, dst, cap);
    return NULL;
}

void ss_op_set_shape(ss_kctx *k, int j, int ndim, const int64_t *dims)
{
    ss_tensor *o = k->out[j];
    if (!o) return;
    o->ndim = ndim;
    memcpy(o->dims, dims, sizeof(int64_t) * (size_t)ndim);
    o->nbytes = (size_t)ss_tensor_numel(o) * ss_dtype_size(o->dtype);
}

/* ------------------------------------------------------------------ elements */

double ss_op_elem_f64(const ss_tensor *t, int64_t i)
{
    size_t es = ss_dtype_size(t->dtype);
    union {
        float f;
        double d;
        int8_t i8;
        uint8_t u8;
        int16_t i16;
        uint16_t u16;
        int32_t i32;
        uint32_t u32;
        int64_t i64;
        uint64_t u64;
    } v;
    if (es == 0 || es > sizeof v) return 0;
    memcpy(&v, (const char *)t->data + (size_t)i * es, es);
    switch (t->dtype) {
    case SS_DT_FLOAT32:
        return v.f;
    case SS_DT_FLOAT64:
        return v.d;
    case SS_DT_FLOAT16:
        return ss_f16_to_f32(v.u16);
    case SS_DT_BFLOAT16:
        return ss_bf16_to_f32(v.u16);
    case SS_DT_INT8:
        return v.i8;
    case SS_DT_UINT8:
    case SS_DT_BOOL:
        return v.u8;
    case SS_DT_INT16:
        return v.i16;
    case SS_DT_UINT16:
        return v.u16;
    case SS_DT_INT32:
        return v.i32;
    case SS_DT_UINT32:
        return v.u32;
    case SS_DT_INT64:
        return (double)v.i64;
    case SS_DT_UINT64:
        return (double)v.u64;
    default:
        return 0;
    }
}

static double clampd(double v, double lo, double hi)
{
    return v != v ? 0 : v < lo ? lo : v > hi ? hi : v;
}

void ss_op_store_f64(void *dst, int64_t i, ss_dtype dt, double v)
{
    switch (dt) {
    case SS_DT_FLOAT32:
        ((float *)dst)[i] = (float)v;
        break;
    case SS_DT_FLOAT64:
        ((double *)dst)[i] = v;
        break;
    case SS_DT_FLOAT16:
        ((uint16_t *)dst)[i] = ss_f32_to_f16((float)v);
        break;
    case SS_DT_BFLOAT16:
        ((uint16_t *)dst)[i] = ss_f32_to_bf16((float)v);
        break;
    case SS_DT_INT8:
        ((int8_t *)dst)[i] = (int8_t)clampd(v, INT8_MIN, INT8_MAX);
        break;
    case SS_DT_UINT8:
        ((uint8_t *)dst)[i] = (uint8_t)clampd(v, 0, UINT8_MAX);
        break;
    case SS_DT_BOOL:
        ((uint8_t *)dst)[i] = v != 0;
        break;
    case SS_DT_INT16:
        ((int16_t *)dst)[i] = (int16_t)clampd(v, INT16_MIN, INT16_MAX);
        break;
    case SS_DT_UINT16:
        ((uint16_t *)dst)[i] = (uint16_t)clampd(v, 0, UINT16_MAX);
        break;
    case SS_DT_INT32:
        ((int32_t *)dst)[i] = (int32_t)clampd(v, INT32_MIN, INT32_MAX);
        break;
    case SS_DT_UINT32:
        ((uint32_t *)dst)[i] = (uint32_t)clampd(v, 0, UINT32_MAX);
        break;
    case SS_DT_INT64:
        ((int64_t *)dst)[i] = ss_op_sat_i64(v);
        break;
    case SS_DT_UINT64:
        ((uint64_t *)dst)[i] = v != v || v <= 0 ? 0 : v >= 0x1p64 ? UINT64_MAX : (uint64_t)v;
        break;
    default:
        break;
    }
}

/* One loop per element size; the value is loaded once into a local that cannot alias dst, so
 * the loop becomes wide stores. */
#define FILL_LOOP(T)                                                                               \
    do {                                                                                           \
        T v_;                                                                                      \
        memcpy(&v_, value, sizeof v_);                                                             \
        for (int64_t i = 0; i < n; i++)                                                            \
            memcpy(d + (size_t)i * sizeof v_, &v_, sizeof v_);                                     \
    } while (0)

void ss_op_fill(void *dst, const void *value, int64_t n, size_t es)
{
    char *restrict d = dst;
    if (n <= 0) return;
    switch (es) {
    case 1:
        memset(d, *(const unsigned char *)value, (size_t)n);
        break;
    case 2:
        FILL_LOOP(uint16_t);
        break;
    case 4:
        FILL_LOOP(uint32_t);
        break;
    case 8:
        FILL_LOOP(uint64_t);
        break;
    default:
        for (int64_t i = 0; i < n; i++)
            memcpy(d + (size_t)i * es, value, es);
    }
}

/* ------------------------------------------------------------------ strided views */

#define TILE 32

void ss_view_simplify(ss_view *v)
{
    v->numel = 1;
    for (int i = 0; i < v->nd; i++)
        v->numel *= v->dims[i];
    int n = 0;
    for (int i = 0; i < v->nd; i++) {
        if (v->dims[i] == 1) continue;
        if (n > 0 && v->stride[n - 1] == v->stride[i] * v->dims[i]) {
            v->dims[n - 1] *= v->dims[i];
            v->stride[n - 1] = v->stride[i];
        } else {
            v->dims[n] = v->dims[i];
            v->stride[n] = v->stride[i];
            n++;
        }
    }
    v->nd = n;
}

void ss_view_broadcast(ss_view *v, const ss_tensor *x, int nd, const int64_t *dims)
{
    int64_t s = 1;
    v->nd = nd;
    v->offset = 0;
    for (int i = nd - 1; i >= 0; i--) {
        int xi = i - (nd - x->ndim);
        int64_t d = xi >= 0 ? x->dims[xi] : 1;
        v->dims[i] = dims[i];
        v->stride[i] = d == 1 ? 0 : s;
        s *= d;
    }
}

#define ROW_LOOP(ES)                                                                               \
    for (int64_t i = 0; i < n; i++)                                                                \
    memcpy(dst + i * (ES), src + i * stride * (ES), ES)

/* One output row: n elements from src, stride elements apart. */
static void row_copy(char *restrict dst, const char *restrict src, int64_t n, int64_t stride,
                     size_t es)
{
    if (stride == 1) {
        memcpy(dst, src, (size_t)n * es);
        return;
    }
    if (stride == 0) {
        ss_op_fill(dst, src, n, es);
        return;
    }
    switch (es) {
    case 1:
        ROW_LOOP(1);
        break;
    case 2:
        ROW_LOOP(2);
        break;
    case 4:
        ROW_LOOP(4);
        break;
    case 8:
        ROW_LOOP(8);
        break;
    default:
        for (int64_t i = 0; i < n; i++)
            memcpy(dst + (size_t)i * es, src + i * stride * (int64_t)es, es);
    }
}

#define TILE_LOOP(ES)                                                                              \
    for (int64_t r = r0; r < r1; r++)                                                              \
        for (int64_t c = c0; c < c1; c++)                                                          \
    memcpy(dst + (r * C + c) * (ES), src + (r + c * ld) * (ES), ES)

#ifdef __SSE2__
/* 4-byte elements, 4x4 blocks in registers: four contiguous loads, four contiguous stores. */
static void tile4_sse(char *restrict dst, const char *restrict src, int64_t r0, int64_t r1,
                      int64_t c0, int64_t c1, int64_t C, int64_t ld)
{
    int64_t r4 = r0 + (r1 - r0) / 4 * 4, c4 = c0 + (c1 - c0) / 4 * 4;
    for (int64_t r = r0; r < r4; r += 4)
        for (int64_t c = c0; c < c4; c += 4) {
            const float *s = (const float *)(const void *)src + r + c * ld;
            __m128 a = _mm_loadu_ps(s), b = _mm_loadu_ps(s + ld), e = _mm_loadu_ps(s + 2 * ld),
                   f = _mm_loadu_ps(s + 3 * ld);
            _MM_TRANSPOSE4_PS(a, b, e, f);
            float *d = (float *)(void *)dst + r * C + c;
            _mm_storeu_ps(d, a);
            _mm_storeu_ps(d + C, b);
            _mm_storeu_ps(d + 2 * C, e);
            _mm_storeu_ps(d + 3 * C, f);
        }
    /* ragged edges */
    for (int64_t r = r0; r < r1; r++)
        for (int64_t c = r < r4 ? c4 : c0; c < c1; c++)
            memcpy(dst + (r * C + c) * 4, src + (r + c * ld) * 4, 4);
}
#endif

/* dst[r][c] = src[r + c*ld] for an R x C output: a transpose, copied in TILE x TILE blocks so
 * both sides stay in cache (4-byte elements go through 4x4 register blocks where SSE2 exists). */
static void tile_transpose(char *restrict dst, const char *restrict src, int64_t R, int64_t C,
                           int64_t ld, size_t es)
{
    for (int64_t r0 = 0; r0 < R; r0 += TILE) {
        int64_t r1 = r0 + TILE < R ? r0 + TILE : R;
        for (int64_t c0 = 0; c0 < C; c0 += TILE) {
            int64_t c1 = c0 + TILE < C ? c0 + TILE : C;
            switch (es) {
            case 1:
                TILE_LOOP(1);
                break;
            case 2:
                TILE_LOOP(2);
                break;
#ifdef __SSE2__
            case 4:
                tile4_sse(dst, src, r0, r1, c0, c1, C, ld);
                break;
#else
            case 4:
                TILE_LOOP(4);
                break;
#endif
            case 8:
                TILE_LOOP(8);
                break;
            default:
                for (int64_t r = r0; r < r1; r++)
                    for (int64_t c = c0; c < c1; c++)
                        memcpy(dst + (size_t)(r * C + c) * es, src + (r + c * ld) * (int64_t)es,
                               es);
            }
        }
    }
}

/* A view whose source-contiguous dim is the second-to-last output dim: copied a 2-D tile at a
 * time. */
static bool view_tiled(const ss_view *v)
{
    int nd = v->nd;
    return nd >= 2 && v->stride[nd - 2] == 1 && v->stride[nd - 1] > 1 && v->dims[nd - 2] >= 4;
}

/* Elements of one chunk: the last dim, or the last two when tiled. */
static int64_t view_chunk(const ss_view *v)
{
    return view_tiled(v) ? v->dims[v->nd - 2] * v->dims[v->nd - 1] : v->dims[v->nd - 1];
}

/* Outer chunks [o0, o1) of the view into dst, which holds the output from chunk o0 on. */
static void view_copy_range(const ss_view *v, size_t es, const char *src, char *dst, int64_t o0,
                            int64_t o1)
{
    int nd = v->nd;
    bool tiled = view_tiled(v);
    int outer = nd - (tiled ? 2 : 1);
    int64_t chunk = view_chunk(v);
    int64_t idx[SS_VIEW_MAX] = {0};
    int64_t off = 0;
    for (int64_t d = outer - 1, rest = o0; d >= 0; d--) { /* chunk o0's outer indices */
        idx[d] = rest % v->dims[d];
        off += idx[d] * v->stride[d];
        rest /= v->dims[d];
    }
    for (int64_t o = o0; o < o1; o++) {
        const char *s = src + off * (int64_t)es;
        if (tiled)
            tile_transpose(dst, s, v->dims[nd - 2], v->dims[nd - 1], v->stride[nd - 1], es);
        else
            row_copy(dst, s, chunk, v->stride[nd - 1], es);
        dst += chunk * (int64_t)es;
        for (int d = outer - 1; d >= 0; d--) {
            off += v->stride[d];
            if (++idx[d] < v->dims[d]) break;
            off -= v->stride[d] * v->dims[d];
            idx[d] = 0;
        }
    }
}

void ss_view_copy(const ss_view *v, size_t es, const void *src, void *dst)
{
    if (v->numel == 0) return;
    const char *s = (const char *)src + v->offset * (int64_t)es;
    if (v->nd == 0) {
        memcpy(dst, s, es);
        return;
    }
    view_copy_range(v, es, s, dst, 0, v->numel / view_chunk(v));
}

typedef struct {
    const ss_view *v;
    size_t es;
    const char *src;
    char *dst;
    int64_t chunks, chunk_bytes;
} view_job;

/* Part `part` of `parts` takes an equal run of chunks (a static split: the same rows as the
 * other row-parallel ops, see ss_op_par_parts; run by ss_pool_run_split). */
static void view_part(void *ctx, int part, int parts)
{
    const view_job *j = ctx;
    int64_t o0 = j->chunks * part / parts, o1 = j->chunks * (part + 1) / parts;
    view_copy_range(j->v, j->es, j->src, j->dst + o0 * j->chunk_bytes, o0, o1);
}

ss_status *ss_view_run(ss_kctx *k)
{
    const ss_view *v = k->state;
    size_t es = ss_dtype_size(k->in[0]->dtype);
    if (v->parts <= 1 || v->nd == 0 || v->numel == 0) {
        ss_view_copy(v, es, k->in[0]->data, k->out[0]->data);
        return NULL;
    }
    view_job j = {v,
                  es,
                  (const char *)k->in[0]->data + v->offset * (int64_t)es,
                  k->out[0]->data,
                  v->numel / view_chunk(v),
                  view_chunk(v) * (int64_t)es};
    ss_pool_run_split(v->parts, view_part, &j);
    return NULL;
}

bool ss_op_needs_f32(ss_dtype dt)
{
    return dt == SS_DT_FLOAT16 || dt == SS_DT_BFLOAT16 || dt == SS_DT_FLOAT64;
}

/* Tensor i of k's inputs then outputs (NULL when omitted). */
static ss_tensor *kctx_tensor(const ss_kctx *k, int i)
{
    return i < k->n_in ? k->in[i] : k->out[i - k->n_in];
}

size_t ss_op_f32_floats(const ss_kctx *k)
{
    size_t n = 0;
    for (int i = 0; i < k->n_in + k->n_out; i++) {
        const ss_tensor *t = kctx_tensor(k, i);
        if (t && ss_op_needs_f32(t->dtype)) n += (size_t)ss_tensor_numel(t);
    }
    return n;
}

enum { F32_MAX_TENSORS = 16 };

/* f: a copy of k whose converted tensors are float32 shadows (data at `at`, when given). */
static ss_status *f32_view(const ss_kctx *k, ss_kctx *f, ss_tensor *shadow, ss_tensor **ptrs,
                           float *at)
{
    if (k->n_in + k->n_out > F32_MAX_TENSORS)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "more than %d inputs and outputs in float32",
                         F32_MAX_TENSORS);
    *f = *k;
    f->in = ptrs;
    f->out = ptrs + k->n_in;
    for (int i = 0; i < k->n_in + k->n_out; i++) {
        ss_tensor *t = kctx_tensor(k, i);
        ptrs[i] = t;
        if (!t || !ss_op_needs_f32(t->dtype)) continue;
        shadow[i] = *t;
        shadow[i].dtype = SS_DT_FLOAT32;
        shadow[i].data = at;
        shadow[i].nbytes = sizeof(float) * (size_t)ss_tensor_numel(t);
        if (at) at += ss_tensor_numel(t);
        ptrs[i] = &shadow[i];
    }
    return NULL;
}

ss_status *ss_op_infer_as_f32(ss_kctx *k, ss_status *(*infer)(ss_kctx *))
{
    ss_tensor shadow[F32_MAX_TENSORS];
    ss_tensor *ptrs[F32_MAX_TENSORS];
    ss_kctx f;
    ss_dtype dt = k->in[0]->dtype;
    ss_status *st = f32_view(k, &f, shadow, ptrs, NULL);
    if (st) return st;
    st = infer(&f);
    k->state = f.state;
    for (int j = 0; !st && j < k->n_out; j++) {
        if (!k->out[j]) continue;
        *k->out[j] = *f.out[j];
        if (k->out[j]->dtype == SS_DT_FLOAT32) k->out[j]->dtype = dt;
    }
    size_t inner = (f.scratch_bytes + 63) & ~(size_t)63;
    k->scratch_bytes = inner + sizeof(float) * ss_op_f32_floats(k);
    return st;
}

void ss_op_load_f32(const ss_tensor *t, float *dst)
{
    int64_t n = ss_tensor_numel(t);
    const uint16_t *h = t->data;
    if (t->dtype == SS_DT_FLOAT16)
        for (int64_t i = 0; i < n; i++)
            dst[i] = ss_f16_to_f32(h[i]);
    else if (t->dtype == SS_DT_BFLOAT16)
        for (int64_t i = 0; i < n; i++)
            dst[i] = ss_bf16_to_f32(h[i]);
    else
        for (int64_t i = 0; i < n; i++)
            dst[i] = (float)((const double *)t->data)[i];
}

static void store_f32(const float *src, ss_tensor *t)
{
    int64_t n = ss_tensor_numel(t);
    uint16_t *h = t->data;
    if (t->dtype == SS_DT_FLOAT16)
        for (int64_t i = 0; i < n; i++)
            h[i] = ss_f32_to_f16(src[i]);
    else if (t->dtype == SS_DT_BFLOAT16)
        for (int64_t i = 0; i < n; i++)
            h[i] = ss_f32_to_bf16(src[i]);
    else
        for (int64_t i = 0; i < n; i++)
            ((double *)t->data)[i] = src[i];
}

ss_status *ss_op_run_as_f32(ss_kctx *k, ss_status *(*run)(ss_kctx *))
{
    ss_tensor shadow[F32_MAX_TENSORS];
    ss_tensor *ptrs[F32_MAX_TENSORS];
    ss_kctx f;
    size_t copies = sizeof(float) * ss_op_f32_floats(k);
    float *at = (float *)((char *)k->scratch + (k->scratch_bytes - copies));
    ss_status *st = f32_view(k, &f, shadow, ptrs, at);
    if (st) return st;
    for (int i = 0; i < k->n_in; i++)
        if (f.in[i] && f.in[i] != k->in[i]) ss_op_load_f32(k->in[i], f.in[i]->data);
    if (!(st = run(&f)))
        for (int j = 0; j < k->n_out; j++)
            if (f.out[j] && f.out[j] != k->out[j]) store_f32(f.out[j]->data, k->out[j]);
    return st;
}
