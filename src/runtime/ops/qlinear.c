/*
 * onnxruntime's quantized operators of the com.microsoft domain, as its static quantization
 * writes them (the "QOperator" format of int8 model-zoo CNNs and transformers): QLinearAdd,
 * QLinearMul, QLinearSigmoid, QLinearLeakyRelu, QLinearSoftmax, QLinearGlobalAveragePool,
 * QLinearAveragePool, QLinearConcat, QLinearWhere, QGemm and NhwcMaxPool, over uint8 or int8 with
 * per-tensor scales and zero points (QGemm's B per column too).
 *
 * Each follows onnxruntime's float arithmetic: dequantize (scale * (q - zero point) in float32),
 * compute, quantize (divide by the output scale, round half to even, add the zero point,
 * saturate). The unary ops and QLinearConcat's requantization go through a 256-entry table made
 * per run (the scales are inputs, known only then); the average pool sums in int64 and requantizes
 * once per channel. onnxruntime's vector kernels use fixed-point multipliers in places, so a value
 * may differ from theirs by one quantum. run never allocates.
 */
#include "broadcast.h"
#include "common.h"
#include "contrib.h"
#include "isa.h"
#include "pool.h"
#include "q8mm.h"
#include "quant.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ shared */

/* A per-tensor scale (float32, one value) or zero point (the quantized dtype, one value; absent:
 * 0) of input i. */
static ss_status *check_scalar(const ss_kctx *k, int i, bool scale, ss_dtype qdt, const char *what)
{
    const ss_tensor *t = ss_contrib_in(k, i);
    if (!t) return scale ? ss_op_err(k, SS_ERR_INVALID, "%s is missing", what) : NULL;
    if (ss_tensor_numel(t) != 1)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "%s has %lld values: only per-tensor quantization",
                         what, (long long)ss_tensor_numel(t));
    if (scale ? t->dtype != SS_DT_FLOAT32 : t->dtype != qdt)
        return ss_op_err(k, SS_ERR_INVALID, "%s is %s, expected %s", what, ss_dtype_name(t->dtype),
                         ss_dtype_name(scale ? SS_DT_FLOAT32 : qdt));
    return NULL;
}

static float scale_at(const ss_kctx *k, int i)
{
    return (float)ss_op_elem_f64(ss_contrib_in(k, i), 0);
}

static int32_t zero_at(const ss_kctx *k, int i)
{
    const ss_tensor *t = ss_contrib_in(k, i);
    return t ? (int32_t)ss_op_elem_i64(t, 0) : 0;
}

/* Between min_n and max_n inputs, the `required` ones present (zero points are optional in
 * onnxruntime's schemas, and a model may leave them out by an empty name). */
static ss_status *check_inputs(const ss_kctx *k, int min_n, int max_n, const int *required,
                               int n_required)
{
    if (k->n_in < min_n || k->n_in > max_n)
        return ss_op_err(k, SS_ERR_INVALID, "has %d inputs, expects %d to %d", k->n_in, min_n,
                         max_n);
    for (int i = 0; i < n_required; i++)
        if (!k->in[required[i]])
            return ss_op_err(k, SS_ERR_INVALID, "required input %d is missing", required[i]);
    return NULL;
}

static ss_status *check_q8(const ss_kctx *k, int i)
{
    if (ss_quant_dtype8(k->in[i]->dtype)) return NULL;
    return ss_op_err(k, SS_ERR_UNSUPPORTED, "input %d is %s: uint8 or int8 only", i,
                     ss_dtype_name(k->in[i]->dtype));
}

/* onnxruntime's quantization of one float: v / scale rounded half to even, plus the zero point,
 * saturated to the 8-bit type. */
static int32_t quantize8(float v, float scale, int32_t zero, bool is_signed)
{
    float q = nearbyintf(v / scale) + (float)zero;
    float lo = is_signed ? -128.0f : 0.0f, hi = is_signed ? 127.0f : 255.0f;
    return q != q ? zero : q < lo ? (int32_t)lo : q > hi ? (int32_t)hi : (int32_t)q;
}

/* The 256 outputs of an 8-bit unary map y = fn(dequantized x), indexed by x's byte. */
typedef float (*qfn)(float v, float param);

static void build_table(uint8_t table[256], bool is_signed, float sx, int32_t zx, float sy,
                        int32_t zy, qfn fn, float param)
{
    for (int b = 0; b < 256; b++) {
        int32_t q = is_signed ? (int32_t)(int8_t)b : b;
        float v = sx * (float)(q - zx);
        table[b] = (uint8_t)quantize8(fn ? fn(v, param) : v, sy, zy, is_signed);
    }
}

static void map_bytes(const uint8_t table[256], const uint8_t *x, uint8_t *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = table[x[i]];
}

/* Channels-last [N, spatial..., C] as the [N, C, spatial...] twin the pools plan over (dims only:
 * the data is transposed at run time). */
static ss_tensor channels_first_view(const ss_tensor *x)
{
    ss_tensor v = *x;
    v.dims[1] = x->dims[x->ndim - 1];
    for (int d = 2; d < x->ndim; d++)
        v.dims[d] = x->dims[d - 1];
    return v;
}

/* Element i of planes [N, C, px] is this element of the channels-last [N, px, C]. */
static int64_t channels_last_index(int64_t i, int64_t c, int64_t px)
{
    int64_t plane = i / px;
    return (plane / c * px + i % px) * c + plane % c;
}

/* Output 0, planned as [N, C, spatial...], back to channels-last. */
static void output_channels_last(ss_tensor *y)
{
    int64_t c = y->dims[1];
    for (int d = 1; d < y->ndim - 1; d++)
        y->dims[d] = y->dims[d + 1];
    y->dims[y->ndim - 1] = c;
}

/* ------------------------------------------------------------------ QLinearAdd, QLinearMul */

/* Inputs A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp. The broadcast plan's parameters are
 * set per run (f, i; see qadd_run and qmul_run).
 *
 * QLinearAdd is onnxruntime's x86 kernel in float32: with r_a = A_scale / C_scale, r_b likewise
 * and k = C_zp - (r_a * A_zp + r_b * B_zp), C = round(a * r_a + (b * r_b + k)), each step a fused
 * multiply-add; an operand that is one value for the row (a broadcast scalar) goes into k first,
 * B's term as the vector one when A is the scalar. Rounding the exact value instead differs where
 * it lies within float32's error of a half (a sum of 55.5 steps). */
#define QADD_STORE(T, LO, HI, t)                                                                   \
    do {                                                                                           \
        float q = nearbyintf(t);                                                                   \
        y[j] = (T)(q != q ? 0 : q < (LO) ? (LO) : q > (HI) ? (HI) : q);                            \
    } while (0)
/* one loop per operand layout, the scalar operand's term hoisted: each vectorizes */
#define QADD_KERNEL(NAME, T, LO, HI)                                                               \
    SS_ISA_INLINE void NAME##_body(const void *const *in, void *out, int64_t n, unsigned mode,     \
                                   const ss_ew_params *prm)                                        \
    {                                                                                              \
        const T *a = in[0], *b = in[1];                                                            \
        T *y = out;                                                                                \
        float ra = (float)prm->f[0], rb = (float)prm->f[1], k = (float)prm->f[2];                  \
        if (!(mode & 2)) {                                                                         \
            float kb = k + (float)b[0] * rb;                                                       \
            for (int64_t j = 0; j < n; j++)                                                        \
                QADD_STORE(T, LO, HI, fmaf((float)a[mode & 1 ? j : 0], ra, kb));                   \
        } else if (!(mode & 1)) {                                                                  \
            float ka = k + (float)a[0] * ra;                                                       \
            for (int64_t j = 0; j < n; j++)                                                        \
                QADD_STORE(T, LO, HI, fmaf((float)b[j], rb, ka));                                  \
        } else {                                                                                   \
            for (int64_t j = 0; j < n; j++)                                                        \
                QADD_STORE(T, LO, HI, fmaf((float)a[j], ra, fmaf((float)b[j], rb, k)));            \
        }                                                                                          \
    }

/* QLinearMul in float32 as onnxruntime's: (A_scale (a - A_zp)) (B_scale (b - B_zp)) / C_scale,
 * rounded, plus C_zp. */
#define QMUL_KERNEL(NAME, T, LO, HI)                                                               \
    SS_ISA_INLINE void NAME##_body(const void *const *in, void *out, int64_t n, unsigned mode,     \
                                   const ss_ew_params *prm)                                        \
    {                                                                                              \
        const T *a = in[0], *b = in[1];                                                            \
        T *y = out;                                                                                \
        float sa = (float)prm->f[0], sb = (float)prm->f[1], sc = (float)prm->f[2];                 \
        float zc = (float)prm->f[3];                                                               \
        int32_t za = (int32_t)prm->i[0], zb = (int32_t)prm->i[1];                                  \
        for (int64_t j = 0; j < n; j++) {                                                          \
            float va = sa * (float)((int32_t)a[mode & 1 ? j : 0] - za);                            \
            float vb = sb * (float)((int32_t)b[mode & 2 ? j : 0] - zb);                            \
            float q = nearbyintf(va * vb / sc) + zc;                                               \
            y[j] = (T)(q != q ? zc : q < (LO) ? (LO) : q > (HI) ? (HI) : q);                       \
        }                                                                                          \
    }

/* each compiled per ISA (isa.h): fmaf and nearbyintf are then instructions, not libm calls */
#define QKERNEL_ISA(NAME)                                                                          \
    SS_ISA_VARIANTS(                                                                               \
        void, NAME,                                                                                \
        (const void *const *in, void *out, int64_t n, unsigned mode, const ss_ew_params *prm),     \
        (in, out, n, mode, prm))

QADD_KERNEL(qadd_u8, uint8_t, 0.0f, 255.0f)
QKERNEL_ISA(qadd_u8)
QADD_KERNEL(qadd_s8, int8_t, -128.0f, 127.0f)
QKERNEL_ISA(qadd_s8)
QMUL_KERNEL(qmul_u8, uint8_t, 0.0f, 255.0f)
QKERNEL_ISA(qmul_u8)
QMUL_KERNEL(qmul_s8, int8_t, -128.0f, 127.0f)
QKERNEL_ISA(qmul_s8)

static ss_status *qbinary_infer(ss_kctx *k, ss_ew_fn u8, ss_ew_fn s8)
{
    static const char *const none[] = {NULL};
    static const int required[] = {0, 1, 3, 4, 6}; /* A, A_scale, B, B_scale, C_scale */
    ss_status *st = check_inputs(k, 7, 8, required, 5);
    if (!st) st = ss_op_check_attrs(k, none);
    if (!st) st = check_q8(k, 0);
    if (st) return st;
    ss_dtype dt = k->in[0]->dtype;
    if (!k->in[3] || k->in[3]->dtype != dt)
        return ss_op_err(k, SS_ERR_INVALID, "A is %s but B is %s", ss_dtype_name(dt),
                         k->in[3] ? ss_dtype_name(k->in[3]->dtype) : "missing");
    static const char *const names[] = {"A_scale",      "A_zero_point", NULL,          "B_scale",
                                        "B_zero_point", "C_scale",      "C_zero_point"};
    for (int i = 1; i < 8 && !st; i++)
        if (names[i - 1]) st = check_scalar(k, i, i == 1 || i == 4 || i == 6, dt, names[i - 1]);
    if (st) return st;
    const ss_tensor *ins[2] = {k->in[0], k->in[3]};
    if ((st = ss_bcast_shape(k, 2, ins, k->out[0]))) return st;
    k->out[0]->dtype = dt;
    return ss_ew_plan_state(k, 2, ins, k->out[0], dt == SS_DT_INT8 ? s8 : u8, dt, false, NULL);
}

static ss_status *qadd_infer(ss_kctx *k)
{
    return qbinary_infer(k, qadd_u8, qadd_s8);
}

static ss_status *qmul_infer(ss_kctx *k)
{
    return qbinary_infer(k, qmul_u8, qmul_s8);
}

static ss_status *qbinary_run(ss_kctx *k)
{
    const void *in[2] = {k->in[0]->data, k->in[3]->data};
    ss_ew_plan_run(k->state, in, k->out[0]->data);
    return NULL;
}

static ss_status *qadd_run(ss_kctx *k)
{
    ss_ew_plan *p = k->state;
    float sc = scale_at(k, 6), ra = scale_at(k, 1) / sc, rb = scale_at(k, 4) / sc;
    float za = (float)zero_at(k, 2), zb = (float)zero_at(k, 5);
    p->prm.f[0] = ra;
    p->prm.f[1] = rb;
    p->prm.f[2] = (float)zero_at(k, 7) - (ra * za + rb * zb);
    return qbinary_run(k);
}

static ss_status *qmul_run(ss_kctx *k)
{
    ss_ew_plan *p = k->state;
    p->prm.f[0] = scale_at(k, 1);
    p->prm.f[1] = scale_at(k, 4);
    p->prm.f[2] = scale_at(k, 6);
    p->prm.f[3] = zero_at(k, 7);
    p->prm.i[0] = zero_at(k, 2);
    p->prm.i[1] = zero_at(k, 5);
    return qbinary_run(k);
}

/* ------------------------------------------------------------------ QLinearSigmoid, LeakyRelu */

/* Inputs X, X_scale, X_zero_point, Y_scale, Y_zero_point. */
static ss_status *qunary_infer(ss_kctx *k, const char *const *attrs)
{
    static const int required[] = {0, 1, 3}; /* X, X_scale, Y_scale */
    ss_status *st = check_inputs(k, 4, 5, required, 3);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = check_q8(k, 0);
    if (st) return st;
    ss_dtype dt = k->in[0]->dtype;
    if (!st) st = check_scalar(k, 1, true, dt, "X_scale");
    if (!st) st = check_scalar(k, 2, false, dt, "X_zero_point");
    if (!st) st = check_scalar(k, 3, true, dt, "Y_scale");
    if (!st) st = check_scalar(k, 4, false, dt, "Y_zero_point");
    if (st) return st;
    ss_op_same_shape(k->out[0], k->in[0]);
    return NULL;
}

static float sigmoid(float v, float unused)
{
    (void)unused;
    return 1.0f / (1.0f + expf(-v));
}

static float leaky_relu(float v, float alpha)
{
    return v >= 0 ? v : v * alpha;
}

static ss_status *qunary_run(ss_kctx *k, qfn fn, float param)
{
    uint8_t table[256];
    build_table(table, k->in[0]->dtype == SS_DT_INT8, scale_at(k, 1), zero_at(k, 2), scale_at(k, 3),
                zero_at(k, 4), fn, param);
    map_bytes(table, k->in[0]->data, k->out[0]->data, ss_tensor_numel(k->in[0]));
    return NULL;
}

static ss_status *qsigmoid_infer(ss_kctx *k)
{
    static const char *const none[] = {NULL};
    return qunary_infer(k, none);
}

static ss_status *qsigmoid_run(ss_kctx *k)
{
    return qunary_run(k, sigmoid, 0);
}

static ss_status *qleaky_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"alpha", NULL};
    return qunary_infer(k, attrs);
}

static ss_status *qleaky_run(ss_kctx *k)
{
    return qunary_run(k, leaky_relu, ss_onnx_attr_float(k->node, "alpha", 0.01f));
}

/* ------------------------------------------------------------------ QLinearSoftmax */

/* onnxruntime's: exp through a 256-entry float32 table made per run from X_scale and the
 * reduction's length (shifted so the row's largest value sits at the table's top), float32 sums
 * in order, y = round(e * floor(1 / Y_scale) / sum) + Y_zero_point. X_zero_point cancels out.
 * The attribute `opset` says which Softmax was quantized: before 13 the dims from `axis` on are
 * one row, from 13 the row runs along `axis` (the schema's default -1 either way). */
typedef struct {
    int64_t outer, len, inner; /* rows are outer x inner, len values `inner` apart */
} qsoftmax_plan;

static ss_status *qsoftmax_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"axis", "opset", NULL};
    ss_status *st = qunary_infer(k, attrs);
    if (st) return st;
    const ss_onnx_attr *op = ss_onnx_attr_find(k->node, "opset");
    if (!op) return ss_op_err(k, SS_ERR_INVALID, "attribute 'opset' is required");
    bool flat = op->i < 13;
    const ss_tensor *x = k->in[0];
    if (x->ndim < 1) return ss_op_err(k, SS_ERR_INVALID, "X must have rank >= 1");
    int axis = 0;
    if ((st = ss_op_attr_axis(k, "axis", -1, x->ndim, &axis))) return st;
    qsoftmax_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->outer = ss_op_dims_prod(x->dims, 0, axis);
    p->len = flat ? ss_op_dims_prod(x->dims, axis, x->ndim) : x->dims[axis];
    p->inner = flat ? 1 : ss_op_dims_prod(x->dims, axis + 1, x->ndim);
    return NULL;
}

static ss_status *qsoftmax_run(ss_kctx *k)
{
    const qsoftmax_plan *p = k->state;
    if (p->outer * p->len * p->inner == 0) return NULL;
    bool is_signed = k->in[0]->dtype == SS_DT_INT8;
    float sx = scale_at(k, 1), ys = floorf(1.0f / scale_at(k, 3));
    int32_t zy = zero_at(k, 4);
    float table[256];
    double shift = log((double)(FLT_MAX / (float)p->len)) - 5;
    shift = (shift > 0 ? shift : 0) / sx;
    for (int i = 0; i < 256; i++)
        table[(uint8_t)(is_signed ? i - 128 : i)] =
            (float)exp(((double)i - 255 + shift) * (double)sx);
    const uint8_t *xu = k->in[0]->data;
    uint8_t *y = k->out[0]->data;
    for (int64_t o = 0; o < p->outer; o++)
        for (int64_t in = 0; in < p->inner; in++) {
            int64_t base = o * p->len * p->inner + in;
            int best = is_signed ? -128 : 0;
            for (int64_t j = 0; j < p->len; j++) {
                uint8_t b = xu[base + j * p->inner];
                int v = is_signed ? (int8_t)b : b;
                best = v > best ? v : best;
            }
            /* the row's largest value indexes the table's top entry */
            int shift_by = is_signed ? 127 - best : 255 - best;
            float sum = 0;
            for (int64_t j = 0; j < p->len; j++) {
                uint8_t b = xu[base + j * p->inner];
                sum += table[(uint8_t)((is_signed ? (int8_t)b : b) + shift_by)];
            }
            for (int64_t j = 0; j < p->len; j++) {
                uint8_t b = xu[base + j * p->inner];
                float e = table[(uint8_t)((is_signed ? (int8_t)b : b) + shift_by)];
                float r = nearbyintf(e * ys / sum); /* >= 0, or NaN from a bad scale */
                int32_t hi = is_signed ? 127 : 255;
                int32_t q = r != r ? zy : r > 1024.0f ? hi : (int32_t)r + zy;
                y[base + j * p->inner] = (uint8_t)(q > hi ? hi : q); /* q >= zy: no low end */
            }
        }
    return NULL;
}

/* ------------------------------------------------------------------ QLinearGlobalAveragePool */

typedef struct {
    int64_t n, c, hw; /* batch, channels, pixels per channel */
    bool channels_last;
} qgap_plan;

static ss_status *qgap_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"channels_last", NULL};
    ss_status *st = qunary_infer(k, attrs);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->ndim < 3)
        return ss_op_err(k, SS_ERR_INVALID, "X has rank %d, expected at least 3", x->ndim);
    qgap_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->channels_last = ss_onnx_attr_int(k->node, "channels_last", 0) != 0;
    int cd = p->channels_last ? x->ndim - 1 : 1, first = p->channels_last ? 1 : 2;
    p->n = x->dims[0];
    p->c = x->dims[cd];
    p->hw = ss_op_dims_prod(x->dims, first, first + x->ndim - 2);
    ss_tensor *y = k->out[0];
    for (int d = 0; d < x->ndim; d++)
        y->dims[d] = d == 0 || d == cd ? x->dims[d] : 1;
    if (p->hw == 0) return ss_op_err(k, SS_ERR_INVALID, "X has no pixels to average");
    return NULL;
}

/* The int sum of each channel requantized at once: (sum - zx * HW) * sx / (sy * HW). */
static ss_status *qgap_run(ss_kctx *k)
{
    const qgap_plan *p = k->state;
    bool is_signed = k->in[0]->dtype == SS_DT_INT8;
    float scale = scale_at(k, 1) / (scale_at(k, 3) * (float)p->hw);
    int32_t zx = zero_at(k, 2), zy = zero_at(k, 4);
    const uint8_t *xu = k->in[0]->data;
    const int8_t *xs = k->in[0]->data;
    uint8_t *y = k->out[0]->data;
    int64_t cs = p->channels_last ? 1 : p->hw, ps = p->channels_last ? p->c : 1;
    for (int64_t b = 0; b < p->n; b++)
        for (int64_t c = 0; c < p->c; c++) {
            int64_t base = b * p->c * p->hw + c * cs, sum = 0;
            for (int64_t i = 0; i < p->hw; i++)
                sum += is_signed ? xs[base + i * ps] : xu[base + i * ps];
            float v = (float)(sum - (int64_t)zx * p->hw) * scale;
            y[b * p->c + c] = (uint8_t)quantize8(v, 1.0f, zy, is_signed);
        }
    return NULL;
}

/* ------------------------------------------------------------------ QLinearAveragePool */

/* As onnxruntime's: X dequantized to float32 (in scratch), AveragePool's float32 average,
 * quantized as round(y / y_scale + y_zero_point) (its pools add the zero point first). With
 * channels_last (NHWC, as onnxruntime's NHWC transformer writes it) X is transposed to planes as it
 * is dequantized and the averages back as they are quantized. */
typedef struct {
    int64_t in_elems, out_elems;
    int64_t n, c, in_px, out_px; /* channels_last: batch, channels, pixels in and out */
    bool channels_last;
    /* conv.c's pool plan follows */
} qpool_plan;

/* The plan of a pool over X (input 0), channels-last or not; max: MaxPool's, else AveragePool's. */
static ss_status *qpool_plan_init(ss_kctx *k, bool channels_last, bool max, qpool_plan **out)
{
    qpool_plan *p = ss_op_state_alloc(k, sizeof *p + ss_avgpool_plan_bytes());
    if (!p) return ss_op_oom();
    const ss_tensor *x = k->in[0];
    p->channels_last = channels_last;
    if (channels_last && x->ndim < 3)
        return ss_op_err(k, SS_ERR_INVALID, "X must have rank >= 3 (N, spatial..., C)");
    ss_tensor planes = channels_last ? channels_first_view(x) : *x;
    ss_status *st =
        max ? ss_maxpool_plan_init(k, &planes, p + 1) : ss_avgpool_plan_init(k, &planes, p + 1);
    if (st) return st;
    p->in_elems = ss_tensor_numel(x);
    p->out_elems = ss_tensor_numel(k->out[0]);
    p->n = x->dims[0], p->c = planes.dims[1];
    p->in_px = p->n && p->c ? p->in_elems / (p->n * p->c) : 0;
    p->out_px = p->n && p->c ? p->out_elems / (p->n * p->c) : 0;
    if (channels_last) output_channels_last(k->out[0]);
    *out = p;
    return NULL;
}

static ss_status *qavgpool_infer(ss_kctx *k)
{
    static const char *const attrs[] = {
        "auto_pad",     "ceil_mode", "channels_last", "count_include_pad",
        "kernel_shape", "pads",      "strides",       NULL};
    ss_status *st = qunary_infer(k, attrs);
    qpool_plan *p = NULL;
    if (!st) st = qpool_plan_init(k, ss_onnx_attr_int(k->node, "channels_last", 0) != 0, false, &p);
    if (st) return st;
    k->scratch_bytes = sizeof(float) * (size_t)(p->in_elems + p->out_elems);
    return NULL;
}

static ss_status *qavgpool_run(ss_kctx *k)
{
    const qpool_plan *p = k->state;
    bool is_signed = k->in[0]->dtype == SS_DT_INT8;
    float sx = scale_at(k, 1), sy = scale_at(k, 3);
    int32_t zx = zero_at(k, 2), zy = zero_at(k, 4);
    float *xf = k->scratch, *yf = xf + p->in_elems;
    const uint8_t *xu = k->in[0]->data;
    const int8_t *xs = k->in[0]->data;
    for (int64_t i = 0; i < p->in_elems; i++) {
        int64_t j = p->channels_last ? channels_last_index(i, p->c, p->in_px) : i;
        xf[i] = sx * (float)((is_signed ? (int32_t)xs[j] : (int32_t)xu[j]) - zx);
    }
    ss_avgpool_run_f32(p + 1, xf, yf);
    uint8_t *y = k->out[0]->data;
    float lo = is_signed ? -128.0f : 0.0f, hi = is_signed ? 127.0f : 255.0f;
    for (int64_t i = 0; i < p->out_elems; i++) { /* the zero point added before the rounding */
        float q = nearbyintf(yf[i] / sy + (float)zy);
        int64_t j = p->channels_last ? channels_last_index(i, p->c, p->out_px) : i;
        y[j] = (uint8_t)(int32_t)(q != q ? (float)zy : q < lo ? lo : q > hi ? hi : q);
    }
    return NULL;
}

/* ------------------------------------------------------------------ NhwcMaxPool */

/* com.microsoft NhwcMaxPool (onnxruntime's NHWC transformer writes it for uint8/int8 MaxPool):
 * MaxPool over channels-last X, through planes in the scratch. Max is exact, so the values are
 * MaxPool's. */
static ss_status *nhwc_maxpool_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"auto_pad", "ceil_mode", "dilations", "kernel_shape",
                                        "pads",     "strides",   NULL};
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = check_q8(k, 0);
    qpool_plan *p = NULL;
    if (!st) st = qpool_plan_init(k, true, true, &p);
    if (st) return st;
    k->scratch_bytes = (size_t)(p->in_elems + p->out_elems);
    return NULL;
}

static ss_status *nhwc_maxpool_run(ss_kctx *k)
{
    const qpool_plan *p = k->state;
    const uint8_t *x = k->in[0]->data;
    uint8_t *xp = k->scratch, *yp = xp + p->in_elems, *y = k->out[0]->data;
    for (int64_t i = 0; i < p->in_elems; i++)
        xp[i] = x[channels_last_index(i, p->c, p->in_px)];
    ss_maxpool_run_q8(p + 1, k->in[0]->dtype, xp, yp);
    for (int64_t i = 0; i < p->out_elems; i++)
        y[channels_last_index(i, p->c, p->out_px)] = yp[i];
    return NULL;
}

/* ------------------------------------------------------------------ QLinearWhere */

/* Inputs condition, X, X_scale, X_zero_point, Y, Y_scale, Y_zero_point, Z_scale, Z_zero_point
 * (broadcasting): Z = condition ? X : Y, each requantized to Z's scale through a 256-entry table
 * made per run (onnxruntime's lookup tables; the two tables sit in the scratch). */
static void qwhere_kernel(const void *const *in, void *out, int64_t n, unsigned mode,
                          const ss_ew_params *prm)
{
    const bool *c = in[0];
    const uint8_t *x = in[1], *y = in[2];
    const uint8_t *tx = (const uint8_t *)(uintptr_t)prm->u[0], *ty = tx + 256;
    uint8_t *z = out;
    for (int64_t j = 0; j < n; j++)
        z[j] = c[mode & 1 ? j : 0] ? tx[x[mode & 2 ? j : 0]] : ty[y[mode & 4 ? j : 0]];
}

static ss_status *qwhere_infer(ss_kctx *k)
{
    static const char *const none[] = {NULL};
    static const int required[] = {0, 1, 2, 4, 5, 7}; /* condition, X, Y and their scales */
    ss_status *st = check_inputs(k, 8, 9, required, 6);
    if (!st) st = ss_op_check_attrs(k, none);
    if (!st) st = check_q8(k, 1);
    if (st) return st;
    ss_dtype dt = k->in[1]->dtype;
    if (k->in[0]->dtype != SS_DT_BOOL)
        return ss_op_err(k, SS_ERR_INVALID, "condition is %s, expected bool",
                         ss_dtype_name(k->in[0]->dtype));
    if (k->in[4]->dtype != dt)
        return ss_op_err(k, SS_ERR_INVALID, "X is %s but Y is %s", ss_dtype_name(dt),
                         ss_dtype_name(k->in[4]->dtype));
    static const char *const names[] = {NULL,      NULL,           "X_scale", "X_zero_point", NULL,
                                        "Y_scale", "Y_zero_point", "Z_scale", "Z_zero_point"};
    for (int i = 2; i < 9 && !st; i++)
        if (names[i]) st = check_scalar(k, i, i == 2 || i == 5 || i == 7, dt, names[i]);
    if (st) return st;
    const ss_tensor *ins[3] = {k->in[0], k->in[1], k->in[4]};
    if ((st = ss_bcast_shape(k, 3, ins, k->out[0]))) return st;
    k->out[0]->dtype = dt;
    k->scratch_bytes = 2 * 256;
    return ss_ew_plan_state(k, 3, ins, k->out[0], qwhere_kernel, dt, false, NULL);
}

static ss_status *qwhere_run(ss_kctx *k)
{
    ss_ew_plan *p = k->state;
    uint8_t *tables = k->scratch;
    bool is_signed = k->in[1]->dtype == SS_DT_INT8;
    float sz = scale_at(k, 7);
    int32_t zz = zero_at(k, 8);
    build_table(tables, is_signed, scale_at(k, 2), zero_at(k, 3), sz, zz, NULL, 0);
    build_table(tables + 256, is_signed, scale_at(k, 5), zero_at(k, 6), sz, zz, NULL, 0);
    p->prm.u[0] = (uint64_t)(uintptr_t)tables;
    const void *in[3] = {k->in[0]->data, k->in[1]->data, k->in[4]->data};
    ss_ew_plan_run(p, in, k->out[0]->data);
    return NULL;
}

/* ------------------------------------------------------------------ QLinearConcat */

/* Inputs Y_scale, Y_zero_point, then X, X_scale, X_zero_point per operand. */
typedef struct {
    int n;
    int64_t outer;
    size_t bytes[]; /* per operand: bytes of one outer slice */
} qconcat_plan;

static ss_status *qconcat_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"axis", NULL};
    ss_status *st = ss_op_check_attrs(k, attrs);
    if (st) return st;
    if (k->n_in < 5 || (k->n_in - 2) % 3)
        return ss_op_err(k, SS_ERR_INVALID,
                         "has %d inputs: expected Y_scale, Y_zero_point, then (X, X_scale, "
                         "X_zero_point) per operand",
                         k->n_in);
    for (int i = 0; i < k->n_in; i++)
        if (!k->in[i]) return ss_op_err(k, SS_ERR_INVALID, "input %d is missing", i);
    const ss_tensor *x0 = k->in[2];
    if ((st = check_q8(k, 2))) return st;
    ss_dtype dt = x0->dtype;
    int nd = x0->ndim, axis = 0;
    if (nd == 0) return ss_op_err(k, SS_ERR_INVALID, "cannot concatenate scalars");
    const ss_onnx_attr *aa = ss_onnx_attr_find(k->node, "axis");
    if (!aa) return ss_op_err(k, SS_ERR_INVALID, "attribute 'axis' is required");
    if ((st = ss_op_axis(k, aa->i, nd, &axis))) return st;
    if ((st = check_scalar(k, 0, true, dt, "Y_scale"))) return st;
    if ((st = check_scalar(k, 1, false, dt, "Y_zero_point"))) return st;
    int n = (k->n_in - 2) / 3;
    qconcat_plan *p = ss_op_state_alloc(k, sizeof *p + sizeof(size_t) * (size_t)n);
    if (!p) return ss_op_oom();
    k->scratch_bytes = 257 * (size_t)n; /* per operand a requantization table and a copy flag */
    p->n = n;
    p->outer = ss_op_dims_prod(x0->dims, 0, axis);
    ss_tensor *y = k->out[0];
    ss_op_same_shape(y, x0);
    y->dims[axis] = 0;
    for (int j = 0; j < n && !st; j++) {
        const ss_tensor *x = k->in[2 + 3 * j];
        if (x->dtype != dt || x->ndim != nd)
            return ss_op_err(k, SS_ERR_INVALID, "operand %d differs in type or rank from operand 0",
                             j);
        for (int d = 0; d < nd; d++)
            if (d != axis && x->dims[d] != x0->dims[d])
                return ss_op_err(k, SS_ERR_INVALID,
                                 "operand %d has dim %d = %lld, operand 0 has %lld", j, d,
                                 (long long)x->dims[d], (long long)x0->dims[d]);
        y->dims[axis] += x->dims[axis];
        p->bytes[j] = (size_t)ss_op_dims_prod(x->dims, axis, nd);
        st = check_scalar(k, 3 + 3 * j, true, dt, "X_scale");
        if (!st) st = check_scalar(k, 4 + 3 * j, false, dt, "X_zero_point");
    }
    return st;
}

/* An operand quantized like the output is copied; another is requantized through its table, made
 * once a run. */
static ss_status *qconcat_run(ss_kctx *k)
{
    const qconcat_plan *p = k->state;
    bool is_signed = k->in[2]->dtype == SS_DT_INT8;
    float sy = scale_at(k, 0);
    int32_t zy = zero_at(k, 1);
    uint8_t *tables = k->scratch, *copy = tables + 256 * (size_t)p->n;
    for (int j = 0; j < p->n; j++) {
        float sx = scale_at(k, 3 + 3 * j);
        int32_t zx = zero_at(k, 4 + 3 * j);
        copy[j] = sx == sy && zx == zy;
        if (!copy[j]) build_table(tables + 256 * (size_t)j, is_signed, sx, zx, sy, zy, NULL, 0);
    }
    uint8_t *dst = k->out[0]->data;
    for (int64_t o = 0; o < p->outer; o++)
        for (int j = 0; j < p->n; j++) {
            if (!p->bytes[j]) continue; /* empty along the axis */
            const uint8_t *src = (const uint8_t *)k->in[2 + 3 * j]->data + o * p->bytes[j];
            if (copy[j])
                memcpy(dst, src, p->bytes[j]);
            else
                map_bytes(tables + 256 * (size_t)j, src, dst, (int64_t)p->bytes[j]);
            dst += p->bytes[j];
        }
    return NULL;
}

/* ------------------------------------------------------------------ QGemm */

/* Inputs A, a_scale, a_zero_point, B, b_scale, b_zero_point, C (int32 bias on the sums), y_scale
 * and y_zero_point (both absent: float32 out). A [M, K] or with transA [K, M], B likewise. */
typedef struct {
    int64_t M, K, N;
    bool ta, tb, quantized_out, b_per_column;
    ss_dtype out_dt;
    int64_t c_rows, c_cols; /* C's broadcast over [M, N] (0: no C) */
    bool fast;              /* the sums from q8mm.h's VNNI product */
    ss_q8mm g;
} qgemm_plan;

static void qgemm_release(void *state)
{
    ss_q8mm_release(&((qgemm_plan *)state)->g);
}

static ss_status *qgemm_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"alpha", "transA", "transB", NULL};
    static const int required[] = {0, 1, 3, 4}; /* A, a_scale, B, b_scale */
    ss_status *st = check_inputs(k, 5, 9, required, 4);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = check_q8(k, 0);
    if (!st) st = check_q8(k, 3);
    if (st) return st;
    const ss_tensor *a = k->in[0], *b = k->in[3], *c = ss_contrib_in(k, 6);
    if (a->ndim != 2 || b->ndim != 2)
        return ss_op_err(k, SS_ERR_INVALID, "A and B must be matrices (rank %d and %d)", a->ndim,
                         b->ndim);
    qgemm_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->ta = ss_onnx_attr_int(k->node, "transA", 0) != 0;
    p->tb = ss_onnx_attr_int(k->node, "transB", 0) != 0;
    p->M = a->dims[p->ta ? 1 : 0];
    p->K = a->dims[p->ta ? 0 : 1];
    p->N = b->dims[p->tb ? 0 : 1];
    if (b->dims[p->tb ? 1 : 0] != p->K)
        return ss_op_err(k, SS_ERR_INVALID, "inner dims differ (%lld vs %lld)", (long long)p->K,
                         (long long)b->dims[p->tb ? 1 : 0]);
    if ((st = check_scalar(k, 1, true, a->dtype, "a_scale"))) return st;
    if ((st = check_scalar(k, 2, false, a->dtype, "a_zero_point"))) return st;
    const ss_tensor *bs = k->in[4], *bz = ss_contrib_in(k, 5);
    p->b_per_column = ss_tensor_numel(bs) != 1;
    if (bs->dtype != SS_DT_FLOAT32 || (p->b_per_column && ss_tensor_numel(bs) != p->N))
        return ss_op_err(k, SS_ERR_INVALID, "b_scale must be float32, one value or %lld",
                         (long long)p->N);
    if (bz && (bz->dtype != b->dtype || (ss_tensor_numel(bz) != 1 && ss_tensor_numel(bz) != p->N)))
        return ss_op_err(k, SS_ERR_INVALID, "b_zero_point must be %s, one value or %lld",
                         ss_dtype_name(b->dtype), (long long)p->N);
    if (c) { /* broadcasts to [M, N]: rank <= 2, its rows 1 or M, its columns 1 or N */
        int64_t rows = c->ndim == 2 ? c->dims[0] : 1,
                cols = c->ndim >= 1 ? c->dims[c->ndim - 1] : 1;
        if (c->dtype != SS_DT_INT32 || c->ndim > 2 || (rows != 1 && rows != p->M) ||
            (cols != 1 && cols != p->N))
            return ss_op_err(k, SS_ERR_INVALID, "C must be int32 broadcasting to [%lld, %lld]",
                             (long long)p->M, (long long)p->N);
        p->c_rows = rows;
        p->c_cols = cols;
    }
    p->quantized_out = ss_contrib_in(k, 7) != NULL;
    p->out_dt = SS_DT_FLOAT32;
    if (p->quantized_out) {
        const ss_tensor *yz = ss_contrib_in(k, 8);
        p->out_dt = yz ? yz->dtype : SS_DT_UINT8;
        if (!ss_quant_dtype8(p->out_dt))
            return ss_op_err(k, SS_ERR_UNSUPPORTED, "y_zero_point of type %s",
                             ss_dtype_name(p->out_dt));
        if ((st = check_scalar(k, 7, true, p->out_dt, "y_scale"))) return st;
        if ((st = check_scalar(k, 8, false, p->out_dt, "y_zero_point"))) return st;
    }
    ss_tensor *y = k->out[0];
    *y = (ss_tensor){.dtype = p->out_dt, .ndim = 2, .dims = {p->M, p->N}};
    p->g = (ss_q8mm){.M = p->M, .K = p->K, .N = p->N, .batch = 1, .ta = p->ta, .tb = p->tb};
    p->fast = ss_q8mm_plan(k, &p->g, 0, 3);
    if (p->fast) /* the columns' zero points and scales, then q8mm's */
        k->scratch_bytes =
            (sizeof(int32_t) + sizeof(float)) * (size_t)p->N + 64 + ss_q8mm_scratch(&p->g);
    return NULL;
}

/* What qgemm_finish needs. */
typedef struct {
    const ss_kctx *k;
    const qgemm_plan *p;
    const float *scale; /* per column: alpha x a_scale x b_scale */
    const int32_t *c;   /* C's data, or NULL */
    float sy;
    int32_t zy;
} qgemm_ctx;

/* The sum of row m, column n with C added (wrapping, as onnxruntime adds it to its int32
 * accumulators), scaled, to y. */
static void qgemm_store(const qgemm_ctx *q, int64_t m, int64_t n, int32_t sum, float scale)
{
    const qgemm_plan *p = q->p;
    if (q->c)
        sum = (int32_t)((uint32_t)sum +
                        (uint32_t)
                            q->c[(p->c_rows > 1 ? m : 0) * p->c_cols + (p->c_cols > 1 ? n : 0)]);
    int64_t o = m * p->N + n;
    if (!p->quantized_out)
        ((float *)q->k->out[0]->data)[o] = (float)sum * scale;
    else
        ((uint8_t *)q->k->out[0]->data)[o] =
            (uint8_t)quantize8((float)sum * (scale / q->sy), 1.0f, q->zy, p->out_dt == SS_DT_INT8);
}

static void qgemm_finish(void *ctx, int32_t *S, int64_t bi, int64_t m, int64_t n0, int64_t n1)
{
    (void)bi;
    const qgemm_ctx *q = ctx;
    for (int64_t n = n0; n < n1; n++)
        qgemm_store(q, m, n, S[n - n0], q->scale[n]);
}

static ss_status *qgemm_fast_run(ss_kctx *k)
{
    const qgemm_plan *p = k->state;
    const ss_tensor *c = ss_contrib_in(k, 6);
    int32_t *zb = k->scratch, za = zero_at(k, 2);
    float *scale = (float *)(zb + p->N);
    float alpha = ss_onnx_attr_float(k->node, "alpha", 1.0f), sa = scale_at(k, 1);
    ss_q8mm_columns(ss_contrib_in(k, 5), k->in[4], alpha * sa, p->N, zb, scale);
    qgemm_ctx q = {.k = k,
                   .p = p,
                   .scale = scale,
                   .c = c ? c->data : NULL,
                   .sy = p->quantized_out ? scale_at(k, 7) : 1.0f,
                   .zy = p->quantized_out ? zero_at(k, 8) : 0};
    ss_q8mm_io io = {.a = k->in[0]->data,
                     .b = k->in[3]->data,
                     .za = &za,
                     .zb = zb,
                     .zb_step = 1,
                     .finish = qgemm_finish,
                     .ctx = &q};
    ss_q8mm_run(&p->g, &io, scale + p->N);
    return NULL;
}

/* Exact int sums (int64, then the int32 C added, as onnxruntime adds it to its accumulators),
 * then per column the scale alpha x a_scale x b_scale (/ y_scale), rounded half to even. */
static ss_status *qgemm_run(ss_kctx *k)
{
    const qgemm_plan *p = k->state;
    if (p->fast) return qgemm_fast_run(k);
    const ss_tensor *a = k->in[0], *b = k->in[3], *c = ss_contrib_in(k, 6);
    const ss_tensor *bs = k->in[4], *bz = ss_contrib_in(k, 5);
    int64_t za = zero_at(k, 2);
    float alpha = ss_onnx_attr_float(k->node, "alpha", 1.0f), sa = scale_at(k, 1);
    qgemm_ctx q = {.k = k,
                   .p = p,
                   .c = c ? c->data : NULL,
                   .sy = p->quantized_out ? scale_at(k, 7) : 1.0f,
                   .zy = p->quantized_out ? zero_at(k, 8) : 0};
    for (int64_t m = 0; m < p->M; m++)
        for (int64_t n = 0; n < p->N; n++) {
            int64_t zb = bz ? ss_op_elem_i64(bz, ss_tensor_numel(bz) == 1 ? 0 : n) : 0, acc = 0;
            for (int64_t kk = 0; kk < p->K; kk++) {
                int64_t av = ss_op_elem_i64(a, p->ta ? kk * p->M + m : m * p->K + kk);
                int64_t bv = ss_op_elem_i64(b, p->tb ? n * p->K + kk : kk * p->N + n);
                acc += (av - za) * (bv - zb);
            }
            float scale = alpha * sa * (float)ss_op_elem_f64(bs, p->b_per_column ? n : 0);
            qgemm_store(&q, m, n, (int32_t)(uint32_t)(uint64_t)acc, scale);
        }
    return NULL;
}

const ss_op_def ss_ops_qlinear[] = {
    {SS_DOMAIN_MS, "QLinearAdd", 1, 1, qadd_infer, qadd_run, 0, NULL},
    {SS_DOMAIN_MS, "QLinearMul", 1, 1, qmul_infer, qmul_run, 0, NULL},
    {SS_DOMAIN_MS, "QLinearSigmoid", 1, 1, qsigmoid_infer, qsigmoid_run, 0, NULL},
    {SS_DOMAIN_MS, "QLinearLeakyRelu", 1, 1, qleaky_infer, qleaky_run, 0, NULL},
    {SS_DOMAIN_MS, "QLinearGlobalAveragePool", 1, 1, qgap_infer, qgap_run, 0, NULL},
    {SS_DOMAIN_MS, "QLinearAveragePool", 1, 1, qavgpool_infer, qavgpool_run, 0, NULL},
    {SS_DOMAIN_MS, "QLinearConcat", 1, 1, qconcat_infer, qconcat_run, 0, NULL},
    {SS_DOMAIN_MS, "QGemm", 1, 1, qgemm_infer, qgemm_run, 0, qgemm_release},
    {SS_DOMAIN_MS, "QLinearSoftmax", 1, 1, qsoftmax_infer, qsoftmax_run, 0, NULL},
    {SS_DOMAIN_MS, "QLinearWhere", 1, 1, qwhere_infer, qwhere_run, 0, NULL},
    {SS_DOMAIN_MS, "NhwcMaxPool", 1, 1, nhwc_maxpool_infer, nhwc_maxpool_run, 0, NULL},
    {NULL, NULL, 0, 0, NULL, NULL, 0, NULL},
};
