/*
 * Linear quantization: QuantizeLinear, DequantizeLinear (per tensor, per axis and, from opset
 * 21, per block), DynamicQuantizeLinear, MatMulInteger and QLinearMatMul, and onnxruntime's
 * MatMulIntegerToFloat and DynamicQuantizeMatMul and its com.microsoft Quantize/DequantizeLinear
 * (the other QOperator ops are in qlinear.c). (ConvInteger and QLinearConv share conv.c's window
 * geometry and live there.)
 *
 * Quantized values are 8-bit (16-bit from opset 21) integers; a zero point's dtype is the
 * quantized dtype. Rounding is half to even (rintf under the default rounding mode) and results
 * saturate to the quantized range, as the spec says. MatMulInteger, QLinearMatMul and the Conv
 * pair take 8-bit operands and accumulate in int32 as the spec does (wrapping, never undefined,
 * past K ~ 33000 terms). The matmuls are one BLAS dgemm per batch over float64 copies of the
 * operands in the node's scratch, zero points subtracted, which is exact for these sums (as the
 * Conv pair's im2col + dgemm). run never allocates.
 */
#include "broadcast.h"
#include "common.h"
#include "fusion.h"
#include "gemm_kernel.h"
#include "isa.h"
#include "q8mm.h"
#include "quant.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* ------------------------------------------------------------------ shared element helpers */

bool ss_quant_dtype(ss_dtype dt)
{
    return ss_quant_dtype8(dt) || dt == SS_DT_UINT16 || dt == SS_DT_INT16;
}

bool ss_quant_dtype8(ss_dtype dt)
{
    return dt == SS_DT_UINT8 || dt == SS_DT_INT8;
}

static void quant_range(ss_dtype dt, double *lo, double *hi)
{
    switch (dt) {
    case SS_DT_INT8:
        *lo = -128, *hi = 127;
        break;
    case SS_DT_UINT16:
        *lo = 0, *hi = 65535;
        break;
    case SS_DT_INT16:
        *lo = -32768, *hi = 32767;
        break;
    default:
        *lo = 0, *hi = 255;
    }
}

void ss_quant_store(void *dst, int64_t i, ss_dtype dt, double v)
{
    double lo, hi;
    quant_range(dt, &lo, &hi);
    v = v != v ? 0 : v < lo ? lo : v > hi ? hi : v; /* NaN has no integer: 0 */
    switch (dt) {
    case SS_DT_INT8:
        ((int8_t *)dst)[i] = (int8_t)v;
        break;
    case SS_DT_UINT16:
        ((uint16_t *)dst)[i] = (uint16_t)v;
        break;
    case SS_DT_INT16:
        ((int16_t *)dst)[i] = (int16_t)v;
        break;
    default:
        ((uint8_t *)dst)[i] = (uint8_t)v;
    }
}

static void store_float(void *dst, int64_t i, ss_dtype dt, float v)
{
    if (dt == SS_DT_FLOAT16)
        ((uint16_t *)dst)[i] = ss_f32_to_f16(v);
    else if (dt == SS_DT_BFLOAT16)
        ((uint16_t *)dst)[i] = ss_f32_to_bf16(v);
    else
        ((float *)dst)[i] = v;
}

/* ------------------------------------------------------------------ Quantize/DequantizeLinear */

/* How an element of x finds its scale and zero point: per tensor (one value), per axis (a 1-D
 * tensor along `axis`) or per block (x's shape with `axis` divided into blocks of `block`). */
typedef struct {
    int64_t outer, n, inner, block, nblocks;
    int mode; /* 0 tensor, 1 axis, 2 block */
} qmap;

static int64_t qmap_index(const qmap *m, int64_t e)
{
    if (m->mode == 0) return 0;
    int64_t a = e / m->inner % m->n;
    if (m->mode == 1) return a;
    return (e / (m->n * m->inner) * m->nblocks + a / m->block) * m->inner + e % m->inner;
}

/* Checks the scale (input 1) and zero point (input 2) against x and fills the map. */
static ss_status *qmap_init(const ss_kctx *k, qmap *m)
{
    const ss_tensor *x = k->in[0], *s = k->in[1], *z = k->n_in > 2 ? k->in[2] : NULL;
    int64_t block = k->opset >= 21 ? ss_onnx_attr_int(k->node, "block_size", 0) : 0;
    memset(m, 0, sizeof *m);
    m->outer = m->n = m->inner = 1;
    if (z && !ss_shape_equal(z->ndim, z->dims, s->ndim, s->dims))
        return ss_op_err(k, SS_ERR_INVALID, "the zero point's shape differs from the scale's");
    if (block < 0) return ss_op_err(k, SS_ERR_INVALID, "block_size must be >= 0");
    if (block == 0 && ss_tensor_numel(s) == 1 && s->ndim <= 1) return NULL;
    int axis = 0;
    ss_status *st = ss_op_attr_axis(k, "axis", 1, x->ndim, &axis);
    if (st) return st;
    ss_op_split_axis(x, axis, &m->outer, &m->n, &m->inner);
    if (block == 0) {
        if (s->ndim != 1 || s->dims[0] != m->n)
            return ss_op_err(k, SS_ERR_INVALID,
                             "the scale must be a scalar or a 1-D tensor of %lld values (axis %d)",
                             (long long)m->n, axis);
        m->mode = 1;
        return NULL;
    }
    m->mode = 2;
    m->block = block;
    m->nblocks = (m->n + block - 1) / block;
    bool ok = s->ndim == x->ndim;
    for (int d = 0; ok && d < x->ndim; d++)
        ok = s->dims[d] == (d == axis ? m->nblocks : x->dims[d]);
    if (!ok)
        return ss_op_err(k, SS_ERR_INVALID, "the scale's shape does not fit block_size %lld",
                         (long long)block);
    return NULL;
}

static const char *const qattrs[] = {"axis", "block_size", "saturate", "output_dtype", NULL};

static ss_status *q_common(ss_kctx *k, bool quantize)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 3);
    if (!st) st = ss_op_check_attrs(k, qattrs);
    if (st) return st;
    if (ss_onnx_attr_int(k->node, "output_dtype", 0) != 0)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "attribute 'output_dtype' is not supported");
    const ss_tensor *x = k->in[0], *s = k->in[1], *z = k->n_in > 2 ? k->in[2] : NULL;
    ss_dtype sdt = s->dtype;
    if (sdt != SS_DT_FLOAT32 && sdt != SS_DT_FLOAT16 && sdt != SS_DT_BFLOAT16)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "scale of type %s", ss_dtype_name(sdt));
    ss_dtype qdt = quantize ? (z ? z->dtype : SS_DT_UINT8) : x->dtype;
    if (!ss_quant_dtype(qdt) && !(!quantize && qdt == SS_DT_INT32))
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "quantized type %s", ss_dtype_name(qdt));
    if (z && z->dtype != qdt)
        return ss_op_err(k, SS_ERR_INVALID, "the zero point's type %s differs from %s",
                         ss_dtype_name(z->dtype), ss_dtype_name(qdt));
    if (quantize && x->dtype != SS_DT_FLOAT32 && x->dtype != SS_DT_INT32 &&
        x->dtype != SS_DT_FLOAT16 && x->dtype != SS_DT_BFLOAT16)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "input of type %s", ss_dtype_name(x->dtype));
    qmap *m = ss_op_state_alloc(k, sizeof *m);
    if (!m) return ss_op_oom();
    if ((st = qmap_init(k, m))) return st;
    ss_op_same_shape(k->out[0], x);
    k->out[0]->dtype = quantize ? qdt : k->opset >= 19 ? sdt : SS_DT_FLOAT32;
    return NULL;
}

static ss_status *quantize_infer(ss_kctx *k)
{
    return q_common(k, true);
}

static ss_status *dequantize_infer(ss_kctx *k)
{
    return q_common(k, false);
}

/* onnxruntime's com.microsoft QuantizeLinear and DequantizeLinear (its quantization tools write
 * them for 16-bit types, `use_qdq_contrib_ops`): the default domain's ops per tensor and per
 * axis; DequantizeLinear gives the scale's type (float16 scales, float16 out). */
static ss_status *ms_dequantize_infer(ss_kctx *k)
{
    ss_status *st = q_common(k, false);
    if (!st) k->out[0]->dtype = k->in[1]->dtype;
    return st;
}

/* y = saturate(rint(x / scale) + zp) to uint8; NaN gives 0, as ss_quant_store. The saturation
 * as a maximum (NaN fails the comparison: 0) and a minimum, one instruction each: as nested
 * conditions gcc carried masks through it (1.26x on AVX-512 for BERT's 128x768). */
SS_ISA_INLINE void dynq_store_body(const float *restrict x, int64_t n, float scale, float zp,
                                   uint8_t *restrict y)
{
    for (int64_t i = 0; i < n; i++) {
        float v = rintf(x[i] / scale) + zp;
        v = v > 0 ? v : 0;
        v = v < 255 ? v : 255;
        y[i] = (uint8_t)(int32_t)v;
    }
}
SS_ISA_VARIANTS(void, dynq_store,
                (const float *restrict x, int64_t n, float scale, float zp, uint8_t *restrict y),
                (x, n, scale, zp, y))

/* ... to int8. */
SS_ISA_INLINE void quantize_s8_body(const float *restrict x, int64_t n, float scale, float zp,
                                    int8_t *restrict y)
{
    for (int64_t i = 0; i < n; i++) {
        float v = rintf(x[i] / scale) + zp;
        y[i] = (int8_t)(int32_t)(v != v ? 0 : v < -128 ? -128 : v > 127 ? 127 : v);
    }
}
SS_ISA_VARIANTS(void, quantize_s8,
                (const float *restrict x, int64_t n, float scale, float zp, int8_t *restrict y),
                (x, n, scale, zp, y))

/* The common case of QDQ models, float32 to 8 bits with one scale: loops compiled per ISA
 * (rintf is then one instruction), the same arithmetic as the general one. */
static bool quantize_f32_per_tensor(const ss_kctx *k, const qmap *m)
{
    const ss_tensor *x = k->in[0], *z = k->n_in > 2 ? k->in[2] : NULL;
    ss_dtype dt = k->out[0]->dtype;
    if (m->mode != 0 || x->dtype != SS_DT_FLOAT32 || !ss_quant_dtype8(dt)) return false;
    const float *xv = x->data;
    float scale = (float)ss_op_elem_f64(k->in[1], 0), zp = z ? (float)ss_op_elem_f64(z, 0) : 0;
    int64_t n = ss_tensor_numel(x);
    if (dt == SS_DT_INT8)
        quantize_s8(xv, n, scale, zp, k->out[0]->data);
    else
        dynq_store(xv, n, scale, zp, k->out[0]->data);
    return true;
}

static ss_status *quantize_run(ss_kctx *k)
{
    const qmap *m = k->state;
    const ss_tensor *x = k->in[0], *s = k->in[1], *z = k->n_in > 2 ? k->in[2] : NULL;
    ss_tensor *y = k->out[0];
    if (quantize_f32_per_tensor(k, m)) return NULL;
    int64_t n = ss_tensor_numel(x);
    for (int64_t e = 0; e < n; e++) {
        int64_t q = qmap_index(m, e);
        float v = (float)ss_op_elem_f64(x, e) / (float)ss_op_elem_f64(s, q);
        double zp = z ? ss_op_elem_f64(z, q) : 0;
        ss_quant_store(y->data, e, y->dtype, (double)rintf(v) + zp);
    }
    return NULL;
}

static ss_status *dequantize_run(ss_kctx *k)
{
    const qmap *m = k->state;
    const ss_tensor *x = k->in[0], *s = k->in[1], *z = k->n_in > 2 ? k->in[2] : NULL;
    ss_tensor *y = k->out[0];
    int64_t n = ss_tensor_numel(x);
    for (int64_t e = 0; e < n; e++) {
        int64_t q = qmap_index(m, e);
        int64_t d = ss_op_elem_i64(x, e) - (z ? ss_op_elem_i64(z, q) : 0);
        store_float(y->data, e, y->dtype, (float)d * (float)ss_op_elem_f64(s, q));
    }
    return NULL;
}

/* ------------------------------------------------------------------ DynamicQuantizeLinear */

static ss_status *dynq_infer(ss_kctx *k)
{
    static const char *const none[] = {NULL};
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = ss_op_check_attrs(k, none);
    if (st) return st;
    if (k->in[0]->dtype != SS_DT_FLOAT32)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "input of type %s", ss_dtype_name(k->in[0]->dtype));
    int *parts = ss_op_state_alloc(k, sizeof *parts);
    if (!parts) return ss_op_oom();
    *parts = ss_op_par_parts(k, ss_tensor_numel(k->in[0]));
    ss_op_same_shape(k->out[0], k->in[0]);
    k->out[0]->dtype = SS_DT_UINT8;
    for (int j = 1; j < 3 && j < k->n_out; j++)
        if (k->out[j]) *k->out[j] = (ss_tensor){.dtype = j == 1 ? SS_DT_FLOAT32 : SS_DT_UINT8};
    return NULL;
}

/* The range of x widened to hold 0, NaNs ignored (x < lo ? x : lo). The compiler does not
 * vectorize that select (it is not fminf's), so AVX-512's min/max, which return their second
 * operand when either is NaN, do it by hand. */
static void dynq_range_scalar(const float *x, int64_t n, float *lo, float *hi)
{
    for (int64_t i = 0; i < n; i++) {
        *lo = x[i] < *lo ? x[i] : *lo;
        *hi = x[i] > *hi ? x[i] : *hi;
    }
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static void dynq_range_avx512(const float *x, int64_t n,
                                                                 float *lo, float *hi)
{
    __m512 l[4], h[4];
    for (int u = 0; u < 4; u++)
        l[u] = h[u] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64)
        for (int u = 0; u < 4; u++) {
            __m512 v = _mm512_loadu_ps(x + i + 16 * u);
            l[u] = _mm512_min_ps(v, l[u]);
            h[u] = _mm512_max_ps(v, h[u]);
        }
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        l[0] = _mm512_min_ps(v, l[0]);
        h[0] = _mm512_max_ps(v, h[0]);
    }
    __m512 lv = _mm512_min_ps(_mm512_min_ps(l[0], l[1]), _mm512_min_ps(l[2], l[3]));
    __m512 hv = _mm512_max_ps(_mm512_max_ps(h[0], h[1]), _mm512_max_ps(h[2], h[3]));
    *lo = _mm512_reduce_min_ps(lv), *hi = _mm512_reduce_max_ps(hv);
    dynq_range_scalar(x + i, n - i, lo, hi);
}
#endif

static void dynq_range(const float *x, int64_t n, float *lo, float *hi)
{
    *lo = 0, *hi = 0;
#if defined(__x86_64__)
    if (ss_isa_active == SS_ISA_AVX512) {
        dynq_range_avx512(x, n, lo, hi);
        return;
    }
#endif
    dynq_range_scalar(x, n, lo, hi);
}

/* DynamicQuantizeLinear over the pool's parts: a pass for the range (each part's own, combined
 * after), a pass for the values. Min and max do not depend on the order they are taken in. */
#define DYNQ_PARTS_MAX 64
typedef struct {
    const float *x;
    uint8_t *y;
    int64_t n, chunk, next;
    float scale, zp;
    float lo[DYNQ_PARTS_MAX], hi[DYNQ_PARTS_MAX];
} dynq_job;

static void dynq_range_part(void *ctx, int part, int parts)
{
    (void)parts;
    dynq_job *j = ctx;
    float lo = 0, hi = 0;
    for (int64_t o; (o = __atomic_fetch_add(&j->next, j->chunk, __ATOMIC_RELAXED)) < j->n;) {
        float l, h;
        dynq_range(j->x + o, j->n - o < j->chunk ? j->n - o : j->chunk, &l, &h);
        lo = l < lo ? l : lo;
        hi = h > hi ? h : hi;
    }
    j->lo[part] = lo, j->hi[part] = hi;
}

static void dynq_store_part(void *ctx, int part, int parts)
{
    (void)part, (void)parts;
    dynq_job *j = ctx;
    for (int64_t o; (o = __atomic_fetch_add(&j->next, j->chunk, __ATOMIC_RELAXED)) < j->n;)
        dynq_store(j->x + o, j->n - o < j->chunk ? j->n - o : j->chunk, j->scale, j->zp, j->y + o);
}

/* A job over x's n values on up to `parts` parts of the pool. */
static int dynq_job_init(dynq_job *j, const float *x, int64_t n, int parts)
{
    if (parts > DYNQ_PARTS_MAX) parts = DYNQ_PARTS_MAX;
    *j = (dynq_job){.x = x, .n = n};
    j->chunk = (n / (4 * (int64_t)(parts > 1 ? parts : 1)) + 64) / 64 * 64;
    return parts;
}

/* The job's range widened to hold 0 (dynq_range), over the parts. */
static void dynq_job_range(dynq_job *j, int parts, float *lo, float *hi)
{
    *lo = 0, *hi = 0;
    if (parts <= 1) {
        dynq_range(j->x, j->n, lo, hi);
        return;
    }
    for (int i = 0; i < parts; i++)
        j->lo[i] = j->hi[i] = 0; /* a part that claimed nothing */
    ss_pool_run(parts, dynq_range_part, j);
    for (int i = 0; i < parts; i++) {
        *lo = j->lo[i] < *lo ? j->lo[i] : *lo;
        *hi = j->hi[i] > *hi ? j->hi[i] : *hi;
    }
}

/* The spec's arithmetic in float32, as its reference computes it. */
static ss_status *dynq_run(ss_kctx *k)
{
    const float *x = k->in[0]->data;
    int64_t n = ss_tensor_numel(k->in[0]);
    dynq_job j;
    int parts = dynq_job_init(&j, x, n, *(const int *)k->state);
    j.y = k->out[0]->data;
    float lo, hi;
    dynq_job_range(&j, parts, &lo, &hi);
    float scale = (hi - lo) / 255.0f;
    uint8_t zp = 0;
    if (scale > 0) {
        float izp = rintf(0.0f - lo / scale);
        zp = (uint8_t)(izp < 0 ? 0 : izp > 255 ? 255 : izp);
    }
    uint8_t *y = k->out[0]->data;
    if (scale > 0 && parts > 1) {
        j.scale = scale, j.zp = (float)zp, j.next = 0;
        ss_pool_run(parts, dynq_store_part, &j);
    } else if (scale > 0) {
        dynq_store(x, n, scale, (float)zp, y);
    } else {
        memset(y, 0, (size_t)n);
    }
    if (k->n_out > 1 && k->out[1]) *(float *)k->out[1]->data = scale;
    if (k->n_out > 2 && k->out[2]) *(uint8_t *)k->out[2]->data = zp;
    return NULL;
}

/* ------------------------------------------------------------------ MatMulInteger, QLinearMatMul
 */

/* What a quantized product gives: MatMulInteger's int32 sums, QLinearMatMul's requantized
 * values, or float32 sums x a_scale x b_scale + bias (onnxruntime's MatMulIntegerToFloat, and
 * DynamicQuantizeMatMul, which first quantizes a float32 A to uint8 as onnxruntime does). */
typedef enum { QMM_INT32, QMM_QLINEAR, QMM_FLOAT, QMM_DYNAMIC } qmm_mode;

/* numpy matmul over quantized operands: A [.., M, K] x B [.., K, N] with broadcast batch dims;
 * zero points per tensor, per row of A or per column of B (scales likewise for QLinearMatMul). */
typedef struct {
    int nd; /* output rank before 1-D squeezes */
    int64_t M, K, N, batch;
    int64_t bdims[SS_MAX_DIMS];                   /* broadcast batch dims */
    int64_t astr[SS_MAX_DIMS], bstr[SS_MAX_DIMS]; /* per batch dim: matrix stride (0 = broadcast) */
    int ia, ib, ia_zp, ib_zp;                     /* input indices */
    int ia_scale, ib_scale, ibias;                /* QMM_FLOAT / QMM_DYNAMIC (-1: none) */
    qmm_mode mode;
    int range_parts; /* QMM_DYNAMIC: pool parts of A's range pass (ss_op_par_parts) */
    bool fast;       /* the sums from q8mm.h's VNNI product (qmm_fast_plan) */
    ss_q8mm g;
    /* fusion (fast path only): QMM_INT32 writes its sums as float32 (a Cast to float32 was the
     * only reader: qmm_write_float), and ep's steps run on each piece the finisher writes */
    bool to_float;
    const ss_epilogue *ep;
} qmm_plan;

/* A's quantization when QMM_DYNAMIC computes it per run. */
typedef struct {
    float scale;
    int32_t zero;
} qmm_dyn;

static ss_status *qmm_shapes(ss_kctx *k, qmm_plan *p)
{
    const ss_tensor *a = k->in[p->ia], *b = k->in[p->ib];
    bool a_ok = p->mode == QMM_DYNAMIC ? a->dtype == SS_DT_FLOAT32 : ss_quant_dtype8(a->dtype);
    if (!a_ok || !ss_quant_dtype8(b->dtype) || a->ndim < 1 || b->ndim < 1)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "A (%s, rank %d) and B (%s, rank %d)",
                         ss_dtype_name(a->dtype), a->ndim, ss_dtype_name(b->dtype), b->ndim);
    int64_t ad[SS_MAX_DIMS + 1], bd[SS_MAX_DIMS + 1];
    int an = a->ndim, bn = b->ndim;
    memcpy(ad, a->dims, sizeof(int64_t) * (size_t)an);
    memcpy(bd, b->dims, sizeof(int64_t) * (size_t)bn);
    if (an == 1) ad[1] = ad[0], ad[0] = 1, an = 2;
    if (bn == 1) bd[1] = 1, bn = 2;
    p->M = ad[an - 2], p->K = ad[an - 1], p->N = bd[bn - 1];
    if (bd[bn - 2] != p->K)
        return ss_op_err(k, SS_ERR_INVALID, "inner dims differ (%lld vs %lld)", (long long)p->K,
                         (long long)bd[bn - 2]);
    int nb = (an > bn ? an : bn) - 2;
    int64_t as = p->M * p->K, bs = p->K * p->N;
    p->batch = 1;
    for (int i = nb - 1; i >= 0; i--) {
        int ai = i - (nb - (an - 2)), bi = i - (nb - (bn - 2));
        int64_t da = ai >= 0 ? ad[ai] : 1, db = bi >= 0 ? bd[bi] : 1;
        if (da != db && da != 1 && db != 1)
            return ss_op_err(k, SS_ERR_INVALID, "batch dims do not broadcast");
        p->bdims[i] = da == 1 ? db : da; /* 1 broadcasts to any size, 0 too */
        p->astr[i] = da == 1 ? 0 : as;
        p->bstr[i] = db == 1 ? 0 : bs;
        as *= da, bs *= db;
        p->batch *= p->bdims[i];
    }
    p->nd = nb;
    k->scratch_bytes = sizeof(double) * (size_t)(p->M * p->K + p->K * p->N + p->M * p->N + 1);
    ss_tensor *y = k->out[0];
    y->ndim = 0;
    for (int i = 0; i < nb; i++)
        y->dims[y->ndim++] = p->bdims[i];
    if (a->ndim > 1) y->dims[y->ndim++] = p->M;
    if (b->ndim > 1) y->dims[y->ndim++] = p->N;
    return NULL;
}

/* A zero point or scale: a scalar, or one value per row (A side, M) or column (B side, N), of
 * type `want` (SS_DT_UNDEFINED: any the op's type rules allow, checked elsewhere). */
static ss_status *qmm_param(const ss_kctx *k, int i, int64_t per, ss_dtype want, const char *what)
{
    if (i < 0 || i >= k->n_in || !k->in[i]) return NULL;
    if (want != SS_DT_UNDEFINED && k->in[i]->dtype != want)
        return ss_op_err(k, SS_ERR_INVALID, "%s is %s, expected %s", what,
                         ss_dtype_name(k->in[i]->dtype), ss_dtype_name(want));
    int64_t n = ss_tensor_numel(k->in[i]);
    if (n != 1 && n != per)
        return ss_op_err(k, SS_ERR_INVALID, "%s has %lld values, expected 1 or %lld", what,
                         (long long)n, (long long)per);
    return NULL;
}

static double qmm_at(const ss_kctx *k, int i, int64_t idx, double dflt)
{
    if (i < 0 || i >= k->n_in || !k->in[i]) return dflt;
    return ss_op_elem_f64(k->in[i], ss_tensor_numel(k->in[i]) == 1 ? 0 : idx);
}

static int64_t qmm_batch_offset(const qmm_plan *p, int64_t bi, const int64_t *str)
{
    int64_t off = 0;
    for (int d = p->nd - 1; d >= 0; d--) {
        off += bi % p->bdims[d] * str[d];
        bi /= p->bdims[d];
    }
    return off;
}

static void qmm_fast_plan(ss_kctx *k, qmm_plan *p);

static ss_status *matmulinteger_infer(ss_kctx *k)
{
    static const char *const none[] = {NULL};
    ss_status *st = ss_op_expect_inputs(k, 2, 4);
    if (!st) st = ss_op_check_attrs(k, none);
    if (st) return st;
    qmm_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    *p = (qmm_plan){.ia = 0, .ib = 1, .ia_zp = 2, .ib_zp = 3};
    if ((st = qmm_shapes(k, p))) return st;
    if (!st) st = qmm_param(k, 2, p->M, k->in[0]->dtype, "a_zero_point");
    if (!st) st = qmm_param(k, 3, p->N, k->in[1]->dtype, "b_zero_point");
    k->out[0]->dtype = SS_DT_INT32;
    if (!st) qmm_fast_plan(k, p);
    return st;
}

static const char *const qlmm_names[] = {"a_scale",      "a_zero_point", "b_scale",
                                         "b_zero_point", "y_scale",      "y_zero_point"};

static ss_status *qlinearmatmul_infer(ss_kctx *k)
{
    static const char *const none[] = {NULL};
    ss_status *st = ss_op_expect_inputs(k, 8, 8);
    if (!st) st = ss_op_check_attrs(k, none);
    if (st) return st;
    qmm_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    *p = (qmm_plan){.ia = 0, .ib = 3, .ia_zp = 2, .ib_zp = 5, .mode = QMM_QLINEAR};
    if ((st = qmm_shapes(k, p))) return st;
    static const int idx[] = {1, 2, 4, 5, 6, 7};
    for (int i = 0; i < 6 && !st; i++)
        st = qmm_param(k, idx[i],
                       i < 2   ? p->M
                       : i < 4 ? p->N
                               : 1,
                       idx[i] == 2   ? k->in[0]->dtype
                       : idx[i] == 5 ? k->in[3]->dtype
                                     : SS_DT_UNDEFINED,
                       qlmm_names[i]);
    if (!st && !ss_quant_dtype(k->in[7]->dtype))
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "y_zero_point of type %s",
                         ss_dtype_name(k->in[7]->dtype));
    k->out[0]->dtype = k->in[7]->dtype;
    if (!st) qmm_fast_plan(k, p);
    return st;
}

/* One batch's A and B into float64 scratch with their zero points (per row / per column)
 * subtracted. float64 holds every sum of the gemm exactly (products of 9-bit differences are
 * below 2^17), so one BLAS dgemm gives the spec's int32 sums. */
static void qmm_load(const ss_kctx *k, const qmm_plan *p, const qmm_dyn *dyn, int64_t ao,
                     int64_t bo, double *as, double *bs)
{
    const ss_tensor *a = k->in[p->ia], *b = k->in[p->ib];
    for (int64_t m = 0; m < p->M && dyn; m++)
        for (int64_t kk = 0; kk < p->K; kk++) {
            float q = rintf(((const float *)a->data)[ao + m * p->K + kk] / dyn->scale) + dyn->zero;
            /* NaN quantizes to 0, as onnxruntime's clamp (MAXPS) makes it */
            as[m * p->K + kk] = (q != q || q < 0 ? 0 : q > 255 ? 255 : q) - dyn->zero;
        }
    for (int64_t m = 0; m < p->M && !dyn; m++) {
        int64_t za = (int64_t)qmm_at(k, p->ia_zp, m, 0);
        for (int64_t kk = 0; kk < p->K; kk++)
            as[m * p->K + kk] = (double)(ss_op_elem_i64(a, ao + m * p->K + kk) - za);
    }
    for (int64_t n = 0; n < p->N; n++) {
        int64_t zb = (int64_t)qmm_at(k, p->ib_zp, n, 0);
        for (int64_t kk = 0; kk < p->K; kk++)
            bs[kk * p->N + n] = (double)(ss_op_elem_i64(b, bo + kk * p->N + n) - zb);
    }
}

/* Row m of one batch's sums, stored as the spec's wrapping int32 or requantized. */
static void qmm_store_row(const ss_kctx *k, const qmm_plan *p, const qmm_dyn *dyn,
                          const double *acc, int64_t m, int64_t o)
{
    ss_tensor *y = k->out[0];
    for (int64_t n = 0; n < p->N; n++) {
        int32_t v = (int32_t)(uint32_t)(uint64_t)(int64_t)acc[n];
        if (p->mode == QMM_INT32) {
            ((int32_t *)y->data)[o + n] = v;
            continue;
        }
        if (p->mode != QMM_QLINEAR) {
            float a_scale = dyn ? dyn->scale : (float)qmm_at(k, p->ia_scale, 0, 1);
            float mult = a_scale * (float)qmm_at(k, p->ib_scale, n, 1);
            ((float *)y->data)[o + n] = (float)v * mult + (float)qmm_at(k, p->ibias, n, 0);
            continue;
        }
        float mult =
            (float)qmm_at(k, 1, m, 1) * (float)qmm_at(k, 4, n, 1) / (float)qmm_at(k, 6, 0, 1);
        ss_quant_store(y->data, o + n, y->dtype,
                       (double)rintf((float)v * mult) + qmm_at(k, 7, 0, 0));
    }
}

/* onnxruntime's dynamic quantization of DynamicQuantizeMatMul's A to uint8: the range widened
 * to hold 0 (over pool parts, as DynamicQuantizeLinear), scale 1 for an all-zero A, the zero point
 * rounded after clamping. */
static qmm_dyn qmm_dynamic(const ss_tensor *a, int parts)
{
    float lo, hi;
    dynq_job j;
    dynq_job_range(&j, dynq_job_init(&j, a->data, ss_tensor_numel(a), parts), &lo, &hi);
    float scale = hi == lo ? 1.0f : (hi - lo) / 255.0f, zp = 0.0f - lo / scale;
    return (qmm_dyn){scale, (int32_t)rintf(zp < 0 ? 0 : zp > 255 ? 255 : zp)};
}

/* ------------------------------------------------------------------ the VNNI path
 * Where the CPU has AVX512-VNNI the sums come from q8mm.h's exact product (the float64 path's
 * sums, so its outputs); a finisher turns each row of sums into the op's output. */

/* The run's per-row and per-column parameters, in the scratch after q8mm's. */
typedef struct {
    const ss_kctx *k;
    const qmm_plan *p;
    int32_t *za;    /* M: A's zero point */
    int32_t *zb;    /* N: B's zero point */
    float *fa, *fb; /* M, N: scales (QMM_QLINEAR: a_scale, b_scale; float modes: fb only) */
    float *bias;    /* N, or NULL */
    float a_scale, y_scale;
    double y_zero;
} qmm_params;

static size_t qmm_params_bytes(const qmm_plan *p)
{
    size_t b = (sizeof(int32_t) + sizeof(float)) * (size_t)(2 * (p->M + p->N)) +
               sizeof(float) * (size_t)p->N;
    return (b + 63) / 64 * 64;
}

static void qmm_release(void *state)
{
    ss_q8mm_release(&((qmm_plan *)state)->g);
}

static void qmm_fast_plan(ss_kctx *k, qmm_plan *p)
{
    p->g = (ss_q8mm){.M = p->M, .K = p->K, .N = p->N, .batch = p->batch};
    if (!ss_q8mm_plan(k, &p->g, p->ia, p->ib)) return;
    /* replaces the float64 path's copies */
    k->scratch_bytes = qmm_params_bytes(p) + ss_q8mm_scratch(&p->g) + 64;
    p->fast = true;
}

/* A zero point, scale or bias at index i of input `in` (-1 or absent: dflt) for `count` rows or
 * columns, as the float64 path reads them (qmm_at). */
static void qmm_fill_i32(const ss_kctx *k, int in, int64_t count, int32_t *out)
{
    for (int64_t i = 0; i < count; i++)
        out[i] = (int32_t)qmm_at(k, in, i, 0);
}

static void qmm_fill_f32(const ss_kctx *k, int in, int64_t count, float dflt, float *out)
{
    for (int64_t i = 0; i < count; i++)
        out[i] = (float)qmm_at(k, in, i, dflt);
}

/* y = v x (a_scale x fb) + bias: the float modes' outputs from the exact sums. */
SS_ISA_INLINE void qmm_scale_body(const int32_t *restrict v, int64_t n, float a_scale,
                                  const float *restrict fb, const float *restrict bias,
                                  float *restrict y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = (float)v[i] * (a_scale * fb[i]) + (bias ? bias[i] : 0.0f);
}
SS_ISA_VARIANTS(void, qmm_scale,
                (const int32_t *restrict v, int64_t n, float a_scale, const float *restrict fb,
                 const float *restrict bias, float *restrict y),
                (v, n, a_scale, fb, bias, y))

/* y = (float)v: the Cast to float32 that MatMulInteger's sums took (qmm_write_float). */
SS_ISA_INLINE void qmm_to_float_body(const int32_t *restrict v, int64_t n, float *restrict y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = (float)v[i];
}
SS_ISA_VARIANTS(void, qmm_to_float, (const int32_t *restrict v, int64_t n, float *restrict y),
                (v, n, y))

/* q8mm's finisher: row m of batch bi, columns n0 .. n1 - 1. */
static void qmm_finish(void *ctx, int32_t *S, int64_t bi, int64_t m, int64_t n0, int64_t n1)
{
    const qmm_params *q = ctx;
    const qmm_plan *p = q->p;
    ss_tensor *y = q->k->out[0];
    int64_t n = n1 - n0, o = (bi * p->M + m) * p->N + n0;
    /* with an epilogue, the row's floats are finished in a buffer that stays in L1 and then
     * stored once (the steps reading back values just stored to y stalled on them) */
    float row[SS_Q8MM_MAX_COLS];
    float *f = p->ep ? row : (float *)y->data + o;
    if (p->to_float) { /* set for QMM_INT32 only */
        qmm_to_float(S, n, f);
    } else if (p->mode == QMM_INT32) {
        memcpy((int32_t *)y->data + o, S, sizeof(int32_t) * (size_t)n);
    } else if (p->mode != QMM_QLINEAR) {
        qmm_scale(S, n, q->a_scale, q->fb + n0, q->bias ? q->bias + n0 : NULL, f);
    } else {
        for (int64_t i = 0; i < n; i++) {
            float mult = q->fa[m] * q->fb[n0 + i] / q->y_scale;
            ss_quant_store(y->data, o + i, y->dtype, (double)rintf((float)S[i] * mult) + q->y_zero);
        }
    }
    if (p->ep) {
        ss_epilogue_run_span(p->ep, f, o, n);
        memcpy((float *)y->data + o, f, sizeof(float) * (size_t)n);
    }
}

/* Fusion: MatMulInteger's sums, read only by a Cast to float32, written as float32 by the
 * finisher (the fast path; the float64 path leaves the Cast to run). */
static bool qmm_write_float(ss_kctx *k)
{
    qmm_plan *p = k->state;
    p->to_float = p->fast && p->mode == QMM_INT32;
    return p->to_float;
}

/* The fast path's float32 outputs run the element-wise steps after them in the finisher, on each
 * piece of sums while it is in cache, instead of in one more pass over the output. */
static ss_status *qmm_fuse(ss_kctx *k, ss_epilogue *ep)
{
    qmm_plan *p = k->state;
    if (p->fast && (p->to_float || p->mode == QMM_FLOAT || p->mode == QMM_DYNAMIC)) {
        ss_epilogue_claim(ep);
        p->ep = ep;
    }
    return NULL;
}

static int64_t qmm_offset(const void *ctx, int64_t bi, bool b_side)
{
    const qmm_plan *p = ((const qmm_params *)ctx)->p;
    return qmm_batch_offset(p, bi, b_side ? p->bstr : p->astr);
}

static ss_status *qmm_fast_run(ss_kctx *k, const qmm_dyn *dyn)
{
    const qmm_plan *p = k->state;
    uint8_t *sc = (uint8_t *)(((uintptr_t)k->scratch + 63) & ~(uintptr_t)63);
    qmm_params q = {.k = k, .p = p};
    q.za = (int32_t *)sc;
    q.zb = q.za + p->M;
    q.fa = (float *)(q.zb + p->N);
    q.fb = q.fa + p->M;
    q.bias = p->ibias >= 0 && p->ibias < k->n_in && k->in[p->ibias] ? q.fb + p->N : NULL;
    if (dyn)
        q.za[0] = dyn->zero;
    else
        qmm_fill_i32(k, p->ia_zp, p->M, q.za);
    const ss_tensor *zbt = p->ib_zp >= 0 && p->ib_zp < k->n_in ? k->in[p->ib_zp] : NULL;
    int zb_step = zbt && ss_tensor_numel(zbt) > 1; /* 0: one zero point for B */
    qmm_fill_i32(k, p->ib_zp, zb_step ? p->N : 1, q.zb);
    if (p->mode == QMM_QLINEAR) {
        qmm_fill_f32(k, 1, p->M, 1, q.fa);
        qmm_fill_f32(k, 4, p->N, 1, q.fb);
        q.y_scale = (float)qmm_at(k, 6, 0, 1);
        q.y_zero = qmm_at(k, 7, 0, 0);
    } else if (p->mode != QMM_INT32) {
        q.a_scale = dyn ? dyn->scale : (float)qmm_at(k, p->ia_scale, 0, 1);
        qmm_fill_f32(k, p->ib_scale, p->N, 1, q.fb);
        if (q.bias) qmm_fill_f32(k, p->ibias, p->N, 0, q.bias);
    }
    ss_q8mm_io io = {.a = k->in[p->ia]->data,
                     .b = k->in[p->ib]->data,
                     .offset = qmm_offset,
                     .za = q.za,
                     .zb = q.zb,
                     .za_step = dyn ? 0 : 1,
                     .zb_step = zb_step,
                     .dyn_scale = dyn ? dyn->scale : 0,
                     .finish = qmm_finish,
                     .ctx = &q};
    ss_q8mm_run(&p->g, &io, sc + qmm_params_bytes(p));
    return NULL;
}

static ss_status *qmm_run(ss_kctx *k)
{
    const qmm_plan *p = k->state;
    qmm_dyn dyn = p->mode == QMM_DYNAMIC ? qmm_dynamic(k->in[p->ia], p->range_parts) : (qmm_dyn){0};
    const qmm_dyn *d = p->mode == QMM_DYNAMIC ? &dyn : NULL;
    if (p->fast) return qmm_fast_run(k, d);
    double *as = k->scratch, *bs = as + p->M * p->K, *acc = bs + p->K * p->N;
    for (int64_t bi = 0; bi < p->batch; bi++) {
        qmm_load(k, p, d, qmm_batch_offset(p, bi, p->astr), qmm_batch_offset(p, bi, p->bstr), as,
                 bs);
        if (p->K == 0 || p->N == 0 || p->M == 0)
            memset(acc, 0, sizeof(double) * (size_t)(p->M * p->N));
        else
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)p->M, (blasint)p->N,
                        (blasint)p->K, 1, as, (blasint)p->K, bs, (blasint)p->N, 0, acc,
                        (blasint)p->N);
        for (int64_t m = 0; m < p->M; m++)
            qmm_store_row(k, p, d, acc + m * p->N, m, (bi * p->M + m) * p->N);
    }
    return NULL;
}

/* com.microsoft MatMulIntegerToFloat (A, B, a_scale, b_scale, a_zero_point, b_zero_point,
 * bias) and DynamicQuantizeMatMul (A float32, B, b_scale, b_zero_point, bias): float32 out. */
static ss_status *qmm_float_infer(ss_kctx *k, bool dynamic)
{
    static const char *const none[] = {NULL};
    ss_status *st = ss_op_expect_inputs(k, dynamic ? 3 : 4, dynamic ? 5 : 7);
    if (!st) st = ss_op_check_attrs(k, none);
    if (st) return st;
    qmm_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    if (dynamic)
        *p = (qmm_plan){.ia = 0,
                        .ib = 1,
                        .ia_zp = -1,
                        .ib_zp = 3,
                        .ia_scale = -1,
                        .ib_scale = 2,
                        .ibias = 4,
                        .mode = QMM_DYNAMIC};
    else
        *p = (qmm_plan){.ia = 0,
                        .ib = 1,
                        .ia_zp = 4,
                        .ib_zp = 5,
                        .ia_scale = 2,
                        .ib_scale = 3,
                        .ibias = 6,
                        .mode = QMM_FLOAT};
    if ((st = qmm_shapes(k, p))) return st;
    if (!dynamic) st = qmm_param(k, p->ia_scale, 1, SS_DT_FLOAT32, "a_scale");
    if (!st && !dynamic) st = qmm_param(k, p->ia_zp, 1, k->in[0]->dtype, "a_zero_point");
    if (!st) st = qmm_param(k, p->ib_scale, p->N, SS_DT_FLOAT32, "b_scale");
    if (!st) st = qmm_param(k, p->ib_zp, p->N, k->in[1]->dtype, "b_zero_point");
    const ss_tensor *bias = p->ibias < k->n_in ? k->in[p->ibias] : NULL;
    if (!st && bias && (bias->dtype != SS_DT_FLOAT32 || ss_tensor_numel(bias) != p->N))
        st = ss_op_err(k, SS_ERR_INVALID, "bias must be %lld float32 values", (long long)p->N);
    k->out[0]->dtype = SS_DT_FLOAT32;
    if (dynamic) p->range_parts = ss_op_par_parts(k, ss_tensor_numel(k->in[0]));
    if (!st) qmm_fast_plan(k, p);
    return st;
}

static ss_status *mmi2f_infer(ss_kctx *k)
{
    return qmm_float_infer(k, false);
}

static ss_status *dqmm_infer(ss_kctx *k)
{
    return qmm_float_infer(k, true);
}

const ss_op_def ss_ops_quant[] = {
    {"", "QuantizeLinear", 10, 21, quantize_infer, quantize_run, 0, NULL},
    {"", "DequantizeLinear", 10, 21, dequantize_infer, dequantize_run, 0, NULL},
    {"", "DynamicQuantizeLinear", 11, 21, dynq_infer, dynq_run, 0, NULL},
    {"", "MatMulInteger", 10, 21, matmulinteger_infer, qmm_run, 0, qmm_release, .fuse = qmm_fuse,
     .write_float = qmm_write_float},
    {"", "QLinearMatMul", 10, 21, qlinearmatmul_infer, qmm_run, 0, qmm_release},
    {"com.microsoft", "QuantizeLinear", 1, 1, quantize_infer, quantize_run, 0, NULL},
    {"com.microsoft", "DequantizeLinear", 1, 1, ms_dequantize_infer, dequantize_run, 0, NULL},
    {"com.microsoft", "MatMulIntegerToFloat", 1, 1, mmi2f_infer, qmm_run, 0, qmm_release,
     .fuse = qmm_fuse},
    {"com.microsoft", "DynamicQuantizeMatMul", 1, 1, dqmm_infer, qmm_run, 0, qmm_release,
     .fuse = qmm_fuse},
    {NULL, NULL, 0, 0, NULL, NULL, 0, NULL},
};
