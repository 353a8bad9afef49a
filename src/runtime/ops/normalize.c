/*
 * Normalizations: Softmax, LogSoftmax, Hardmax, LpNormalization, LayerNormalization,
 * BatchNormalization (inference, and training mode from opset 14), InstanceNormalization, LRN,
 * MeanVarianceNormalization, and the NegativeLogLikelihood / SoftmaxCrossEntropy losses.
 *
 * Every op here views its input as [outer, n, inner] around the normalized axis (or axes).
 * Softmax-like ops with inner == 1 (the common axis=-1 case) work on contiguous rows; otherwise
 * the loops run over the inner dimension so they stay contiguous, with per-column running values
 * in k->state (sized at plan time). Softmax subtracts the row maximum before exponentiating.
 * Statistics (means, variances) accumulate in double. run never allocates.
 */
#include "broadcast.h"
#include "common.h"
#include "gemm_kernel.h"
#include "isa.h"
#include "vmath.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ Softmax family */

typedef enum { SM_SOFTMAX, SM_LOG, SM_HARD } sm_kind;

typedef struct {
    sm_kind kind;
    int64_t outer, n, inner;
    double *colmax, *colsum; /* inner each (inner > 1 only) */
    int parts;               /* float32 rows (inner == 1) split over the pool */
} softmax_plan;

static const char *const axis_attr[] = {"axis", NULL};

static ss_status *softmax_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = ss_op_check_attrs(k, axis_attr);
    if (!st) st = ss_op_expect_float(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    bool coerce_2d = k->opset < 13;
    int axis = 0;
    if (x->ndim > 0) {
        st = ss_op_attr_axis(k, "axis", coerce_2d ? 1 : -1, x->ndim, &axis);
        if (st) return st;
    }
    int64_t outer = 1, n = 1, inner = 1;
    if (coerce_2d)
        outer = ss_op_dims_prod(x->dims, 0, axis), n = ss_op_dims_prod(x->dims, axis, x->ndim);
    else if (x->ndim > 0)
        ss_op_split_axis(x, axis, &outer, &n, &inner);
    softmax_plan *p =
        ss_op_state_alloc(k, sizeof *p + (inner > 1 ? (size_t)inner * 2 * sizeof(double) : 0));
    if (!p) return ss_op_oom();
    const char *t = k->node->op_type;
    p->kind = strcmp(t, "Softmax") == 0      ? SM_SOFTMAX
              : strcmp(t, "LogSoftmax") == 0 ? SM_LOG
                                             : SM_HARD;
    p->outer = outer;
    p->n = n;
    p->inner = inner;
    p->colmax = (double *)(p + 1);
    p->colsum = p->colmax + inner;
    p->parts = x->dtype == SS_DT_FLOAT32 && inner == 1 && outer > 1
                   ? ss_op_par_parts(k, ss_tensor_numel(x))
                   : 1;
    ss_op_same_shape(k->out[0], x);
    return NULL;
}

/* One contiguous row. */
#define SOFTMAX_ROW(T, EXP, LOG)                                                                   \
    static void softmax_row_##T(sm_kind kind, const T *restrict x, T *restrict y, int64_t n)       \
    {                                                                                              \
        T mx = x[0];                                                                               \
        int64_t arg = 0;                                                                           \
        for (int64_t i = 1; i < n; i++)                                                            \
            if (x[i] > mx) mx = x[i], arg = i;                                                     \
        if (kind == SM_HARD) {                                                                     \
            for (int64_t i = 0; i < n; i++)                                                        \
                y[i] = 0;                                                                          \
            y[arg] = 1;                                                                            \
            return;                                                                                \
        }                                                                                          \
        double sum = 0;                                                                            \
        if (kind == SM_SOFTMAX) {                                                                  \
            for (int64_t i = 0; i < n; i++) {                                                      \
                y[i] = EXP(x[i] - mx);                                                             \
                sum += y[i];                                                                       \
            }                                                                                      \
            T inv = (T)(1.0 / sum);                                                                \
            for (int64_t i = 0; i < n; i++)                                                        \
                y[i] *= inv;                                                                       \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; i++)                                                        \
                sum += EXP(x[i] - mx);                                                             \
            T ls = (T)LOG(sum); /* (x - max) - ls keeps the small results exact */                 \
            for (int64_t i = 0; i < n; i++)                                                        \
                y[i] = (x[i] - mx) - ls;                                                           \
        }                                                                                          \
    }

SOFTMAX_ROW(float, expf, log)
SOFTMAX_ROW(double, exp, log)

/* A float32 Softmax row by ss_vsoftmaxf (vmath.h), compiled per ISA (attention rows: 12% of a
 * GPT-2-small block's call went to softmax_row's scalar max loop and expf). */
SS_ISA_INLINE void softmax_row_f32v_body(const float *restrict x, float *restrict y, int64_t n)
{
    ss_vsoftmaxf(x, y, n);
}
SS_ISA_VARIANTS(void, softmax_row_f32v, (const float *restrict x, float *restrict y, int64_t n),
                (x, y, n))

/* Strided: normalize along n for every inner column at once (contiguous inner loops). */
#define SOFTMAX_COLS(T, EXP)                                                                       \
    static void softmax_cols_##T(const softmax_plan *p, const T *restrict x, T *restrict y)        \
    {                                                                                              \
        int64_t n = p->n, inner = p->inner;                                                        \
        double *restrict mx = p->colmax, *restrict sum = p->colsum;                                \
        for (int64_t j = 0; j < inner; j++)                                                        \
            mx[j] = x[j], sum[j] = 0;                                                              \
        for (int64_t a = 1; a < n; a++)                                                            \
            for (int64_t j = 0; j < inner; j++)                                                    \
                if (x[a * inner + j] > mx[j]) mx[j] = x[a * inner + j];                            \
        if (p->kind == SM_HARD) {                                                                  \
            for (int64_t j = 0; j < inner; j++)                                                    \
                sum[j] = 0; /* 0: not yet marked */                                                \
            for (int64_t a = 0; a < n; a++)                                                        \
                for (int64_t j = 0; j < inner; j++) {                                              \
                    bool first = sum[j] == 0 && x[a * inner + j] == mx[j];                         \
                    y[a * inner + j] = first ? 1 : 0;                                              \
                    if (first) sum[j] = 1;                                                         \
                }                                                                                  \
            return;                                                                                \
        }                                                                                          \
        for (int64_t a = 0; a < n; a++)                                                            \
            for (int64_t j = 0; j < inner; j++) {                                                  \
                T e = EXP((T)(x[a * inner + j] - mx[j]));                                          \
                if (p->kind == SM_SOFTMAX) y[a * inner + j] = e;                                   \
                sum[j] += e;                                                                       \
            }                                                                                      \
        if (p->kind == SM_SOFTMAX) {                                                               \
            for (int64_t j = 0; j < inner; j++)                                                    \
                sum[j] = 1.0 / sum[j];                                                             \
            for (int64_t a = 0; a < n; a++)                                                        \
                for (int64_t j = 0; j < inner; j++)                                                \
                    y[a * inner + j] *= (T)sum[j];                                                 \
        } else {                                                                                   \
            for (int64_t j = 0; j < inner; j++)                                                    \
                sum[j] = log(sum[j]);                                                              \
            for (int64_t a = 0; a < n; a++)                                                        \
                for (int64_t j = 0; j < inner; j++)                                                \
                    y[a * inner + j] = (T)((x[a * inner + j] - mx[j]) - sum[j]);                   \
        }                                                                                          \
    }

SOFTMAX_COLS(float, expf)
SOFTMAX_COLS(double, exp)

/* Part `part` of `parts` of a float32 Softmax family op over contiguous rows: an equal run of
 * rows (see ss_op_par_parts; run by ss_pool_run_split). */
static void softmax_rows_part(void *ctx, int part, int parts)
{
    const ss_kctx *k = ctx;
    const softmax_plan *p = k->state;
    int64_t r0 = p->outer * part / parts, r1 = p->outer * (part + 1) / parts;
    for (int64_t o = r0; o < r1; o++) {
        const float *x = (const float *)k->in[0]->data + o * p->n;
        float *y = (float *)k->out[0]->data + o * p->n;
        if (p->kind == SM_SOFTMAX)
            softmax_row_f32v(x, y, p->n);
        else
            softmax_row_float(p->kind, x, y, p->n);
    }
}

static ss_status *softmax_run(ss_kctx *k)
{
    const softmax_plan *p = k->state;
    if (p->n == 0) return NULL;
    if (p->parts > 1) {
        ss_pool_run_split(p->parts, softmax_rows_part, k);
        return NULL;
    }
    int64_t block = p->n * p->inner;
    bool f32 = k->in[0]->dtype == SS_DT_FLOAT32;
    if (f32 && p->inner == 1) {
        softmax_rows_part(k, 0, 1);
        return NULL;
    }
    for (int64_t o = 0; o < p->outer; o++) {
        if (f32) {
            const float *x = (const float *)k->in[0]->data + o * block;
            float *y = (float *)k->out[0]->data + o * block;
            softmax_cols_float(p, x, y);
        } else {
            const double *x = (const double *)k->in[0]->data + o * block;
            double *y = (double *)k->out[0]->data + o * block;
            if (p->inner == 1)
                softmax_row_double(p->kind, x, y, p->n);
            else
                softmax_cols_double(p, x, y);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ LpNormalization */

typedef struct {
    int p;
    int64_t outer, n, inner;
    double *acc; /* inner */
} lpnorm_plan;

static const char *const lp_attrs[] = {"axis", "p", NULL};

static ss_status *lpnorm_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = ss_op_check_attrs(k, lp_attrs);
    if (!st) st = ss_op_expect_float(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    int axis;
    st = ss_op_attr_axis(k, "axis", -1, x->ndim, &axis);
    if (st) return st;
    if (x->ndim == 0) return ss_op_err(k, SS_ERR_INVALID, "input must have rank >= 1");
    int64_t pv = ss_onnx_attr_int(k->node, "p", 2);
    if (pv != 1 && pv != 2)
        return ss_op_err(k, SS_ERR_INVALID, "attribute 'p' must be 1 or 2, got %lld",
                         (long long)pv);
    int64_t outer, n, inner;
    ss_op_split_axis(x, axis, &outer, &n, &inner);
    lpnorm_plan *p = ss_op_state_alloc(k, sizeof *p + (size_t)inner * sizeof(double));
    if (!p) return ss_op_oom();
    p->p = (int)pv;
    p->outer = outer;
    p->n = n;
    p->inner = inner;
    p->acc = (double *)(p + 1);
    ss_op_same_shape(k->out[0], x);
    return NULL;
}

#define LPNORM(T)                                                                                  \
    do {                                                                                           \
        for (int64_t o = 0; o < p->outer; o++) {                                                   \
            const T *restrict x = (const T *)k->in[0]->data + o * p->n * p->inner;                 \
            T *restrict y = (T *)k->out[0]->data + o * p->n * p->inner;                            \
            double *restrict acc = p->acc;                                                         \
            for (int64_t j = 0; j < p->inner; j++)                                                 \
                acc[j] = 0;                                                                        \
            for (int64_t a = 0; a < p->n; a++)                                                     \
                for (int64_t j = 0; j < p->inner; j++) {                                           \
                    double v = x[a * p->inner + j];                                                \
                    acc[j] += p->p == 1 ? fabs(v) : v * v;                                         \
                }                                                                                  \
            for (int64_t j = 0; j < p->inner; j++) {                                               \
                double nrm = p->p == 1 ? acc[j] : sqrt(acc[j]);                                    \
                acc[j] = nrm == 0 ? 1 : nrm; /* a zero vector stays zero */                        \
            }                                                                                      \
            for (int64_t a = 0; a < p->n; a++)                                                     \
                for (int64_t j = 0; j < p->inner; j++)                                             \
                    y[a * p->inner + j] = (T)(x[a * p->inner + j] / acc[j]);                       \
        }                                                                                          \
    } while (0)

static ss_status *lpnorm_run(ss_kctx *k)
{
    const lpnorm_plan *p = k->state;
    SS_OP_FLOAT_DISPATCH(k->in[0]->dtype, LPNORM);
    return NULL;
}

/* ------------------------------------------------------------------ LayerNormalization */

typedef struct {
    int64_t rows, n;
    float eps;
    const void *scale, *bias; /* NULL: take them from the inputs as they are */
    bool scale_direct, bias_direct;
    int axis;
    /* Broadcast scale/bias (when their shape is not the normalized shape) are expanded here in
     * run, from the input's bytes: n elements each. */
    void *scale_buf, *bias_buf;
    int parts; /* rows split over the pool */
} layernorm_plan;

static const char *const ln_attrs[] = {"axis", "epsilon", "stash_type", NULL};

/* Does `t` broadcast unidirectionally to dims[axis:]? Sets *direct when it has exactly n values
 * laid out as the normalized shape. */
static ss_status *ln_check_param(const ss_kctx *k, const ss_tensor *t, const char *what,
                                 const ss_tensor *x, int axis, int64_t n, bool *direct)
{
    int nd = x->ndim - axis;
    if (t->dtype != x->dtype)
        return ss_op_err(k, SS_ERR_INVALID, "%s has type %s, X has %s", what,
                         ss_dtype_name(t->dtype), ss_dtype_name(x->dtype));
    if (t->ndim > nd)
        return ss_op_err(k, SS_ERR_INVALID, "%s has rank %d, more than the %d normalized dims",
                         what, t->ndim, nd);
    for (int i = 0; i < t->ndim; i++) {
        int64_t td = t->dims[t->ndim - 1 - i], xd = x->dims[x->ndim - 1 - i];
        if (td != 1 && td != xd)
            return ss_op_err(k, SS_ERR_INVALID, "%s does not broadcast to the normalized shape",
                             what);
    }
    *direct = ss_tensor_numel(t) == n;
    return NULL;
}

static ss_status *layernorm_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 3);
    if (!st) st = ss_op_check_attrs(k, ln_attrs);
    if (!st) st = ss_op_expect_float(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0], *scale = k->in[1], *bias = k->n_in > 2 ? k->in[2] : NULL;
    if (ss_onnx_attr_int(k->node, "stash_type", 1) != 1)
        return ss_op_err(k, SS_ERR_UNSUPPORTED,
                         "attribute 'stash_type' other than 1 (float) is not supported");
    if (x->ndim == 0) return ss_op_err(k, SS_ERR_INVALID, "X must have rank >= 1");
    int axis;
    st = ss_op_attr_axis(k, "axis", -1, x->ndim, &axis);
    if (st) return st;
    int64_t n = ss_op_dims_prod(x->dims, axis, x->ndim);
    bool sd = true, bd = true;
    st = ln_check_param(k, scale, "Scale", x, axis, n, &sd);
    if (!st && bias) st = ln_check_param(k, bias, "B", x, axis, n, &bd);
    if (st) return st;
    size_t es = ss_dtype_size(x->dtype);
    size_t extra = (sd ? 0 : (size_t)n * es) + (bd ? 0 : (size_t)n * es);
    layernorm_plan *p = ss_op_state_alloc(k, sizeof *p + extra);
    if (!p) return ss_op_oom();
    p->rows = ss_op_dims_prod(x->dims, 0, axis);
    p->n = n;
    p->axis = axis;
    p->eps = ss_onnx_attr_float(k->node, "epsilon", 1e-5f);
    p->scale_direct = sd;
    p->bias_direct = bd;
    char *buf = (char *)(p + 1);
    if (!sd) p->scale_buf = buf, buf += (size_t)n * es;
    if (!bd) p->bias_buf = buf;
    p->parts = p->rows > 1 ? ss_op_par_parts(k, ss_tensor_numel(x)) : 1;
    ss_op_same_shape(k->out[0], x);
    for (int j = 1; j < 3 && j < k->n_out; j++) {
        ss_tensor *o = k->out[j];
        if (!o) continue;
        o->dtype = SS_DT_FLOAT32;
        o->ndim = x->ndim;
        for (int d = 0; d < x->ndim; d++)
            o->dims[d] = d < axis ? x->dims[d] : 1;
    }
    if (k->n_out > 3) return ss_op_err(k, SS_ERR_INVALID, "has %d outputs, at most 3", k->n_out);
    return NULL;
}

/* Expands a parameter that broadcasts to x->dims[axis:] into n contiguous values. */
static void expand_param(const ss_tensor *t, const ss_tensor *x, int axis, size_t es, void *dst,
                         int64_t n)
{
    int nd = x->ndim - axis;
    int64_t tstride[SS_MAX_DIMS], idx[SS_MAX_DIMS] = {0};
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        int ti = i - (nd - t->ndim);
        int64_t td = ti >= 0 ? t->dims[ti] : 1;
        tstride[i] = td == 1 ? 0 : s;
        s *= td;
    }
    int64_t off = 0;
    for (int64_t e = 0; e < n; e++) {
        memcpy((char *)dst + (size_t)e * es, (const char *)t->data + (size_t)off * es, es);
        for (int i = nd - 1; i >= 0; i--) {
            off += tstride[i];
            if (++idx[i] < x->dims[axis + i]) break;
            off -= tstride[i] * x->dims[axis + i];
            idx[i] = 0;
        }
    }
}

/* Mean and biased variance of a contiguous row, two passes in double with MOMENT_LANES
 * independent partial sums, combined pairwise at the end: the adds' latency, not their width,
 * bounded the row (four sums: 53 us for BERT-base's 128 rows of 768 at every ISA level). The
 * order is fixed by the source, so every ISA copy of a caller (ln_f32) gets the same sums. */
#define MOMENT_LANES 16
#define MOMENTS(T)                                                                                 \
    SS_ISA_INLINE void moments_##T(const T *restrict x, int64_t n, double *mean, double *var)      \
    {                                                                                              \
        double s[MOMENT_LANES] = {0}, v[MOMENT_LANES] = {0};                                       \
        int64_t i = 0;                                                                             \
        for (; i + MOMENT_LANES <= n; i += MOMENT_LANES)                                           \
            for (int j = 0; j < MOMENT_LANES; j++)                                                 \
                s[j] += x[i + j];                                                                  \
        for (int j = 0; i < n; i++, j++)                                                           \
            s[j] += x[i];                                                                          \
        for (int w = MOMENT_LANES / 2; w > 0; w /= 2)                                              \
            for (int j = 0; j < w; j++)                                                            \
                s[j] += s[j + w];                                                                  \
        double m = n ? s[0] / (double)n : 0;                                                       \
        for (i = 0; i + MOMENT_LANES <= n; i += MOMENT_LANES)                                      \
            for (int j = 0; j < MOMENT_LANES; j++)                                                 \
                v[j] += ((double)x[i + j] - m) * ((double)x[i + j] - m);                           \
        for (int j = 0; i < n; i++, j++)                                                           \
            v[j] += ((double)x[i] - m) * ((double)x[i] - m);                                       \
        for (int w = MOMENT_LANES / 2; w > 0; w /= 2)                                              \
            for (int j = 0; j < w; j++)                                                            \
                v[j] += v[j + w];                                                                  \
        *mean = m;                                                                                 \
        *var = n ? v[0] / (double)n : 0;                                                           \
    }

MOMENTS(float)
MOMENTS(double)

/* One row: y = (x - mean) / sqrt(var + eps) * scale (+ bias); its mean and 1 / sqrt(var + eps). */
#define LAYERNORM_ROW(T)                                                                           \
    SS_ISA_INLINE void ln_row_##T(const T *restrict x, T *restrict y, int64_t n,                   \
                                  const T *restrict sc, const T *restrict bi, float eps,           \
                                  double *mean, double *inv)                                       \
    {                                                                                              \
        double var;                                                                                \
        moments_##T(x, n, mean, &var);                                                             \
        *inv = 1.0 / sqrt(var + (double)eps);                                                      \
        T m = (T)*mean, is = (T)*inv;                                                              \
        if (bi)                                                                                    \
            for (int64_t i = 0; i < n; i++)                                                        \
                y[i] = (x[i] - m) * is * sc[i] + bi[i];                                            \
        else                                                                                       \
            for (int64_t i = 0; i < n; i++)                                                        \
                y[i] = (x[i] - m) * is * sc[i];                                                    \
    }

LAYERNORM_ROW(float)
LAYERNORM_ROW(double)

/* float32 rows compiled per ISA (isa.h): the 16 partial sums are then two 8-double registers
 * (AVX-512) or four (AVX2) and the normalization 16 or 8 floats at a time; at the x86-64 baseline
 * alone, with four sums, LayerNormalization was 2.4% of the quantized BERT-base's samples. */
#define LN_F32_PARAMS                                                                              \
    (const float *restrict x, float *restrict y, int64_t n, const float *restrict sc,              \
     const float *restrict bi, float eps, double *mean, double *inv)
SS_ISA_INLINE void ln_f32_body LN_F32_PARAMS
{
    ln_row_float(x, y, n, sc, bi, eps, mean, inv);
}
SS_ISA_VARIANTS(void, ln_f32, LN_F32_PARAMS, (x, y, n, sc, bi, eps, mean, inv))

#define LAYERNORM(T, ROW)                                                                          \
    do {                                                                                           \
        for (int64_t r = r0; r < r1; r++) {                                                        \
            double mean, inv;                                                                      \
            ROW((const T *)k->in[0]->data + r * n, (T *)k->out[0]->data + r * n, n, j->scale,      \
                j->bias, p->eps, &mean, &inv);                                                     \
            if (j->mean_out) j->mean_out[r] = (float)mean;                                         \
            if (j->inv_out) j->inv_out[r] = (float)inv;                                            \
        }                                                                                          \
    } while (0)

typedef struct {
    const ss_kctx *k;
    const void *scale, *bias;
    float *mean_out, *inv_out;
} layernorm_job;

/* Part `part` of `parts`: an equal run of rows (see ss_op_par_parts; run by ss_pool_run_split). */
static void layernorm_part(void *ctx, int part, int parts)
{
    const layernorm_job *j = ctx;
    const ss_kctx *k = j->k;
    const layernorm_plan *p = k->state;
    int64_t n = p->n, r0 = p->rows * part / parts, r1 = p->rows * (part + 1) / parts;
    if (k->in[0]->dtype == SS_DT_FLOAT32)
        LAYERNORM(float, ln_f32);
    else
        LAYERNORM(double, ln_row_double);
}

static ss_status *layernorm_run(ss_kctx *k)
{
    const layernorm_plan *p = k->state;
    const ss_tensor *x = k->in[0], *bt = k->n_in > 2 ? k->in[2] : NULL;
    size_t es = ss_dtype_size(x->dtype);
    int64_t n = p->n;
    const void *scale = k->in[1]->data, *bias = bt ? bt->data : NULL;
    if (!p->scale_direct) {
        expand_param(k->in[1], x, p->axis, es, p->scale_buf, n);
        scale = p->scale_buf;
    }
    if (bt && !p->bias_direct) {
        expand_param(bt, x, p->axis, es, p->bias_buf, n);
        bias = p->bias_buf;
    }
    layernorm_job j = {k, scale, bias, k->n_out > 1 && k->out[1] ? k->out[1]->data : NULL,
                       k->n_out > 2 && k->out[2] ? k->out[2]->data : NULL};
    if (n == 0) return NULL;
    if (p->parts > 1)
        ss_pool_run_split(p->parts, layernorm_part, &j);
    else
        layernorm_part(&j, 0, 1);
    return NULL;
}

/* ------------------------------------------------------------------ Batch/InstanceNormalization */

typedef struct {
    bool instance, training;
    float eps, momentum;
    int64_t n, c, spatial;
    double *a, *b;      /* per channel (instance: per n*c): y = x * a + b */
    double *mean, *var; /* training: batch statistics per channel */
} chnorm_plan;

static const char *const bn_attrs[] = {"epsilon", "momentum", "spatial", "training_mode", NULL};
static const char *const in_attrs[] = {"epsilon", NULL};

static ss_status *chnorm_infer(ss_kctx *k)
{
    bool instance = strcmp(k->node->op_type, "InstanceNormalization") == 0;
    ss_status *st = ss_op_expect_inputs(k, instance ? 3 : 5, instance ? 3 : 5);
    if (!st) st = ss_op_check_attrs(k, instance ? in_attrs : bn_attrs);
    if (!st) st = ss_op_expect_float(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->ndim < 2) return ss_op_err(k, SS_ERR_INVALID, "X must have rank >= 2 (N, C, ...)");
    int64_t c = x->dims[1];
    for (int i = 1; i < k->n_in; i++) {
        const ss_tensor *t = k->in[i];
        if (!ss_dtype_is_float(t->dtype) || t->dtype != x->dtype)
            return ss_op_err(k, SS_ERR_UNSUPPORTED,
                             "input %d has type %s; only the type of X (%s) is supported", i,
                             ss_dtype_name(t->dtype), ss_dtype_name(x->dtype));
        if (t->ndim != 1 || t->dims[0] != c)
            return ss_op_err(k, SS_ERR_INVALID, "input %d must have shape [%lld]", i, (long long)c);
    }
    bool training = !instance && ss_onnx_attr_int(k->node, "training_mode", 0) != 0;
    if (!instance && ss_onnx_attr_int(k->node, "spatial", 1) != 1)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "attribute 'spatial' = 0 is not supported");
    int n_present = 0;
    for (int j = 1; j < k->n_out; j++)
        n_present += k->out[j] != NULL;
    if (!training && n_present)
        return ss_op_err(k, SS_ERR_UNSUPPORTED,
                         "training outputs (running/saved mean and variance) "
                         "need training_mode=1 (opset 14+)");
    if (training && k->n_out > 3)
        return ss_op_err(k, SS_ERR_INVALID, "has %d outputs, at most 3", k->n_out);
    int64_t per = instance ? x->dims[0] * c : c;
    chnorm_plan *p = ss_op_state_alloc(k, sizeof *p + (size_t)per * 4 * sizeof(double));
    if (!p) return ss_op_oom();
    p->instance = instance;
    p->training = training;
    p->eps = ss_onnx_attr_float(k->node, "epsilon", 1e-5f);
    p->momentum = ss_onnx_attr_float(k->node, "momentum", 0.9f);
    p->n = x->dims[0];
    p->c = c;
    p->spatial = ss_op_dims_prod(x->dims, 2, x->ndim);
    p->a = (double *)(p + 1);
    p->b = p->a + per;
    p->mean = p->b + per;
    p->var = p->mean + per;
    ss_op_same_shape(k->out[0], x);
    for (int j = 1; j < k->n_out; j++)
        if (k->out[j]) ss_op_same_shape(k->out[j], k->in[3]);
    return NULL;
}

#define CHNORM(T)                                                                                  \
    do {                                                                                           \
        const T *x = k->in[0]->data, *scale = k->in[1]->data, *bias = k->in[2]->data;              \
        T *y = k->out[0]->data;                                                                    \
        int64_t S = p->spatial, C = p->c;                                                          \
        if (p->instance) {                                                                         \
            for (int64_t i = 0; i < p->n * C; i++) {                                               \
                double m, v;                                                                       \
                moments_##T(x + i * S, S, &m, &v);                                                 \
                double inv = 1.0 / sqrt(v + p->eps);                                               \
                p->a[i] = scale[i % C] * inv;                                                      \
                p->b[i] = bias[i % C] - m * p->a[i];                                               \
            }                                                                                      \
        } else {                                                                                   \
            const T *rmean = k->in[3]->data, *rvar = k->in[4]->data;                               \
            for (int64_t c = 0; c < C; c++) {                                                      \
                double m = rmean[c], v = rvar[c];                                                  \
                if (p->training) {                                                                 \
                    double s = 0, ss = 0, cnt = (double)(p->n * S);                                \
                    for (int64_t b = 0; b < p->n; b++) {                                           \
                        double pm, pv;                                                             \
                        moments_##T(x + (b * C + c) * S, S, &pm, &pv);                             \
                        s += pm * (double)S;                                                       \
                        ss += (pv + pm * pm) * (double)S;                                          \
                    }                                                                              \
                    m = cnt ? s / cnt : 0;                                                         \
                    v = cnt ? ss / cnt - m * m : 0;                                                \
                    if (v < 0) v = 0;                                                              \
                    p->mean[c] = m;                                                                \
                    p->var[c] = v;                                                                 \
                }                                                                                  \
                double inv = 1.0 / sqrt(v + p->eps);                                               \
                p->a[c] = scale[c] * inv;                                                          \
                p->b[c] = bias[c] - m * p->a[c];                                                   \
            }                                                                                      \
            if (p->training) {                                                                     \
                T *om = k->n_out > 1 && k->out[1] ? k->out[1]->data : NULL;                        \
                T *ov = k->n_out > 2 && k->out[2] ? k->out[2]->data : NULL;                        \
                double mo = p->momentum;                                                           \
                for (int64_t c = 0; c < C; c++) {                                                  \
                    if (om) om[c] = (T)(rmean[c] * mo + p->mean[c] * (1 - mo));                    \
                    if (ov) ov[c] = (T)(rvar[c] * mo + p->var[c] * (1 - mo));                      \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (int64_t b = 0; b < p->n; b++)                                                         \
            for (int64_t c = 0; c < C; c++) {                                                      \
                int64_t i = p->instance ? b * C + c : c;                                           \
                T a = (T)p->a[i], bb = (T)p->b[i];                                                 \
                const T *restrict xs = x + (b * C + c) * S;                                        \
                T *restrict ys = y + (b * C + c) * S;                                              \
                for (int64_t s = 0; s < S; s++)                                                    \
                    ys[s] = xs[s] * a + bb;                                                        \
            }                                                                                      \
    } while (0)

static ss_status *chnorm_run(ss_kctx *k)
{
    const chnorm_plan *p = k->state;
    SS_OP_FLOAT_DISPATCH(k->in[0]->dtype, CHNORM);
    return NULL;
}

/* ------------------------------------------------------------------ LRN */

typedef struct {
    float alpha, beta, bias;
    int64_t size, n, c, spatial;
    double *acc; /* spatial */
} lrn_plan;

static const char *const lrn_attrs[] = {"alpha", "beta", "bias", "size", NULL};

static ss_status *lrn_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = ss_op_check_attrs(k, lrn_attrs);
    if (!st) st = ss_op_expect_float(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->ndim < 2) return ss_op_err(k, SS_ERR_INVALID, "X must have rank >= 2 (N, C, ...)");
    int64_t size = ss_onnx_attr_int(k->node, "size", 0);
    if (size < 1)
        return ss_op_err(k, SS_ERR_INVALID, "attribute 'size' must be given and positive");
    int64_t spatial = ss_op_dims_prod(x->dims, 2, x->ndim);
    lrn_plan *p = ss_op_state_alloc(k, sizeof *p + (size_t)spatial * sizeof(double));
    if (!p) return ss_op_oom();
    p->alpha = ss_onnx_attr_float(k->node, "alpha", 1e-4f);
    p->beta = ss_onnx_attr_float(k->node, "beta", 0.75f);
    p->bias = ss_onnx_attr_float(k->node, "bias", 1.0f);
    p->size = size;
    p->n = x->dims[0];
    p->c = x->dims[1];
    p->spatial = spatial;
    p->acc = (double *)(p + 1);
    ss_op_same_shape(k->out[0], x);
    return NULL;
}

/* y = x / (bias + alpha / size * sum of squares over the channel window) ^ beta */
#define LRN(T)                                                                                     \
    do {                                                                                           \
        int64_t S = p->spatial, C = p->c, before = (p->size - 1) / 2, after = p->size / 2;         \
        double scale = (double)p->alpha / (double)p->size;                                         \
        for (int64_t b = 0; b < p->n; b++)                                                         \
            for (int64_t c = 0; c < C; c++) {                                                      \
                double *restrict acc = p->acc;                                                     \
                for (int64_t s = 0; s < S; s++)                                                    \
                    acc[s] = 0;                                                                    \
                int64_t c0 = c - before < 0 ? 0 : c - before,                                      \
                        c1 = c + after >= C ? C - 1 : c + after;                                   \
                for (int64_t cc = c0; cc <= c1; cc++) {                                            \
                    const T *restrict xs = (const T *)k->in[0]->data + (b * C + cc) * S;           \
                    for (int64_t s = 0; s < S; s++)                                                \
                        acc[s] += (double)xs[s] * xs[s];                                           \
                }                                                                                  \
                const T *restrict xs = (const T *)k->in[0]->data + (b * C + c) * S;                \
                T *restrict ys = (T *)k->out[0]->data + (b * C + c) * S;                           \
                for (int64_t s = 0; s < S; s++)                                                    \
                    ys[s] = (T)(xs[s] / pow((double)p->bias + scale * acc[s], (double)p->beta));   \
            }                                                                                      \
    } while (0)

static ss_status *lrn_run(ss_kctx *k)
{
    const lrn_plan *p = k->state;
    SS_OP_FLOAT_DISPATCH(k->in[0]->dtype, LRN);
    return NULL;
}

/* ------------------------------------------------------------------ MeanVarianceNormalization */

/* y = (x - mean) / (sqrt(E[x^2] - mean^2) + 1e-9) over `axes` (default [0, 2, 3]), as ONNX's
 * function body computes it. Statistics are indexed by the kept dims. */
typedef struct {
    int ndim;
    int64_t dims[SS_MAX_DIMS], ostride[SS_MAX_DIMS]; /* stat index step per dim (0 if reduced) */
    int64_t n_stat, n_red;
    double *sum, *sq;
} mvn_plan;

static const char *const mvn_attrs[] = {"axes", NULL};

static ss_status *mvn_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = ss_op_check_attrs(k, mvn_attrs);
    if (!st) st = ss_op_expect_float(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    bool mask[SS_MAX_DIMS] = {false};
    const int64_t *axes;
    int na = ss_onnx_attr_ints(k->node, "axes", &axes);
    static const int64_t dflt[3] = {0, 2, 3};
    if (na < 0) {
        if (x->ndim != 4)
            return ss_op_err(k, SS_ERR_INVALID, "the default axes [0,2,3] need a 4-D input");
        axes = dflt, na = 3;
    }
    for (int i = 0; i < na; i++) {
        int a;
        st = ss_op_axis(k, axes[i], x->ndim, &a);
        if (st) return st;
        mask[a] = true;
    }
    int64_t n_stat = 1, n_red = 1;
    for (int d = 0; d < x->ndim; d++) {
        if (mask[d])
            n_red *= x->dims[d];
        else
            n_stat *= x->dims[d];
    }
    mvn_plan *p = ss_op_state_alloc(k, sizeof *p + (size_t)n_stat * 2 * sizeof(double));
    if (!p) return ss_op_oom();
    p->ndim = x->ndim;
    memcpy(p->dims, x->dims, sizeof p->dims);
    int64_t s = 1;
    for (int d = x->ndim - 1; d >= 0; d--) {
        p->ostride[d] = mask[d] ? 0 : s;
        if (!mask[d]) s *= x->dims[d];
    }
    p->n_stat = n_stat;
    p->n_red = n_red;
    p->sum = (double *)(p + 1);
    p->sq = p->sum + n_stat;
    ss_op_same_shape(k->out[0], x);
    return NULL;
}

#define MVN(T)                                                                                     \
    do {                                                                                           \
        const T *x = k->in[0]->data;                                                               \
        T *y = k->out[0]->data;                                                                    \
        int64_t n = ss_tensor_numel(k->in[0]), last = p->dims[p->ndim - 1];                        \
        for (int64_t i = 0; i < p->n_stat; i++)                                                    \
            p->sum[i] = p->sq[i] = 0;                                                              \
        for (int pass = 0; pass < 2; pass++) {                                                     \
            int64_t idx[SS_MAX_DIMS] = {0}, o = 0, ls = p->ostride[p->ndim - 1];                   \
            for (int64_t i = 0; i < n; i += last) {                                                \
                for (int64_t j = 0; j < last; j++) {                                               \
                    double v = x[i + j];                                                           \
                    int64_t oj = o + j * ls;                                                       \
                    if (pass == 0)                                                                 \
                        p->sum[oj] += v, p->sq[oj] += v * v;                                       \
                    else                                                                           \
                        y[i + j] = (T)((v - p->sum[oj]) / p->sq[oj]);                              \
                }                                                                                  \
                for (int d = p->ndim - 2; d >= 0; d--) {                                           \
                    o += p->ostride[d];                                                            \
                    if (++idx[d] < p->dims[d]) break;                                              \
                    o -= p->ostride[d] * p->dims[d];                                               \
                    idx[d] = 0;                                                                    \
                }                                                                                  \
            }                                                                                      \
            if (pass == 0)                                                                         \
                for (int64_t s = 0; s < p->n_stat; s++) {                                          \
                    double m = p->sum[s] / (double)p->n_red,                                       \
                           var = p->sq[s] / (double)p->n_red - m * m;                              \
                    p->sum[s] = m;                                                                 \
                    p->sq[s] = sqrt(var > 0 ? var : 0) + 1e-9;                                     \
                }                                                                                  \
        }                                                                                          \
    } while (0)

static ss_status *mvn_run(ss_kctx *k)
{
    const mvn_plan *p = k->state;
    if (ss_tensor_numel(k->in[0]) == 0) return NULL;
    SS_OP_FLOAT_DISPATCH(k->in[0]->dtype, MVN);
    return NULL;
}

/* ------------------------------------------------------------------ losses */

/*
 * NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (the latter = LogSoftmax over axis 1, then
 * NLL). Input [N, C, d...], target [N, d...]. With reduction "mean" the sum is divided by the sum
 * of the gathered weights (1 each without a weight input), ignored targets contributing 0 to both.
 */
typedef enum { RED_NONE, RED_SUM, RED_MEAN } loss_red;

typedef struct {
    bool softmax, has_ignore;
    loss_red red;
    int64_t ignore, n, c, d;
} loss_plan;

static const char *const loss_attrs[] = {"ignore_index", "reduction", NULL};

static ss_status *loss_infer(ss_kctx *k)
{
    static const ss_dtype index_types[] = {SS_DT_INT32, SS_DT_INT64};
    ss_status *st = ss_op_expect_inputs(k, 2, 3);
    if (!st) st = ss_op_check_attrs(k, loss_attrs);
    if (!st) st = ss_op_expect_float(k, 0);
    if (!st) st = ss_op_expect_dtype(k, 1, index_types, 2);
    if (st) return st;
    const ss_tensor *x = k->in[0], *t = k->in[1], *w = k->n_in > 2 ? k->in[2] : NULL;
    if (x->ndim < 2 || t->ndim != x->ndim - 1)
        return ss_op_err(k, SS_ERR_INVALID, "input must be [N, C, d...] and target [N, d...]");
    for (int i = 0; i < t->ndim; i++)
        if (t->dims[i] != x->dims[i ? i + 1 : 0])
            return ss_op_err(k, SS_ERR_INVALID, "target's shape does not match the input's");
    if (w && (w->dtype != x->dtype || w->ndim != 1 || w->dims[0] != x->dims[1]))
        return ss_op_err(k, SS_ERR_INVALID, "weight must be [C] of the input's type");
    char buf[16];
    const char *r = ss_onnx_attr_string(k->node, "reduction", buf, sizeof buf);
    loss_red red = !r || !strcmp(r, "mean") ? RED_MEAN : !strcmp(r, "sum") ? RED_SUM : RED_NONE;
    if (r && strcmp(r, "mean") && strcmp(r, "sum") && strcmp(r, "none"))
        return ss_op_err(k, SS_ERR_INVALID, "attribute 'reduction' has unknown value '%s'", r);
    loss_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->softmax = strcmp(k->node->op_type, "SoftmaxCrossEntropyLoss") == 0;
    p->red = red;
    p->has_ignore = ss_onnx_attr_find(k->node, "ignore_index") != NULL;
    p->ignore = ss_onnx_attr_int(k->node, "ignore_index", 0);
    p->n = x->dims[0];
    p->c = x->dims[1];
    p->d = ss_op_dims_prod(x->dims, 2, x->ndim);
    ss_tensor *y = k->out[0];
    y->dtype = x->dtype;
    y->ndim = 0;
    if (red == RED_NONE) {
        y->ndim = t->ndim;
        memcpy(y->dims, t->dims, sizeof y->dims);
    }
    if (k->n_out > 1 && k->out[1]) {
        if (!p->softmax) return ss_op_err(k, SS_ERR_INVALID, "has 2 outputs, expects 1");
        ss_op_same_shape(k->out[1], x);
    }
    if (k->n_out > 2) return ss_op_err(k, SS_ERR_INVALID, "has %d outputs, at most 2", k->n_out);
    return NULL;
}

#define LOSS(T)                                                                                    \
    do {                                                                                           \
        const T *x = k->in[0]->data;                                                               \
        const T *w = k->n_in > 2 && k->in[2] ? k->in[2]->data : NULL;                              \
        T *y = k->out[0]->data;                                                                    \
        T *lp = k->n_out > 1 && k->out[1] ? k->out[1]->data : NULL;                                \
        int64_t C = p->c, D = p->d;                                                                \
        double total = 0, wsum = 0;                                                                \
        for (int64_t b = 0; b < p->n; b++)                                                         \
            for (int64_t j = 0; j < D; j++) {                                                      \
                const T *xs = x + b * C * D + j; /* stride D over classes */                       \
                double shift = 0;                                                                  \
                if (p->softmax) {                                                                  \
                    double mx = -INFINITY, se = 0;                                                 \
                    for (int64_t c = 0; c < C; c++)                                                \
                        mx = xs[c * D] > mx ? xs[c * D] : mx;                                      \
                    for (int64_t c = 0; c < C; c++)                                                \
                        se += exp(xs[c * D] - mx);                                                 \
                    shift = mx + log(se);                                                          \
                    if (lp)                                                                        \
                        for (int64_t c = 0; c < C; c++)                                            \
                            lp[b * C * D + c * D + j] = (T)(xs[c * D] - shift);                    \
                }                                                                                  \
                int64_t tv = tgt64 ? tgt64[b * D + j] : tgt32[b * D + j];                          \
                double l = 0, wt = 0;                                                              \
                if (!(p->has_ignore && tv == p->ignore)) {                                         \
                    if (tv < 0 || tv >= C)                                                         \
                        return ss_op_err(k, SS_ERR_INVALID,                                        \
                                         "target %lld is not a class index in [0, %lld)",          \
                                         (long long)tv, (long long)C);                             \
                    wt = w ? (double)w[tv] : 1.0;                                                  \
                    l = -((double)xs[tv * D] - shift) * wt;                                        \
                }                                                                                  \
                if (p->red == RED_NONE) y[b * D + j] = (T)l;                                       \
                total += l;                                                                        \
                wsum += wt;                                                                        \
            }                                                                                      \
        if (p->red == RED_SUM) y[0] = (T)total;                                                    \
        if (p->red == RED_MEAN) y[0] = (T)(wsum != 0 ? total / wsum : total / 0.0);                \
    } while (0)

static ss_status *loss_run(ss_kctx *k)
{
    const loss_plan *p = k->state;
    const int64_t *tgt64 = k->in[1]->dtype == SS_DT_INT64 ? k->in[1]->data : NULL;
    const int32_t *tgt32 = k->in[1]->dtype == SS_DT_INT32 ? k->in[1]->data : NULL;
    SS_OP_FLOAT_DISPATCH(k->in[0]->dtype, LOSS);
    return NULL;
}

const ss_op_def ss_ops_normalize[] = {
    {"", "Softmax", 1, 21, softmax_infer, softmax_run, 0},
    {"", "LogSoftmax", 1, 21, softmax_infer, softmax_run, 0},
    {"", "Hardmax", 1, 21, softmax_infer, softmax_run, 0},
    {"", "LpNormalization", 1, 21, lpnorm_infer, lpnorm_run, 0},
    {"", "LayerNormalization", 17, 21, layernorm_infer, layernorm_run, 0},
    {"", "BatchNormalization", 7, 21, chnorm_infer, chnorm_run, 0},
    {"", "InstanceNormalization", 6, 21, chnorm_infer, chnorm_run, 0},
    {"", "LRN", 1, 21, lrn_infer, lrn_run, 0},
    {"", "MeanVarianceNormalization", 9, 21, mvn_infer, mvn_run, 0},
    {"", "NegativeLogLikelihoodLoss", 12, 21, loss_infer, loss_run, 0},
    {"", "SoftmaxCrossEntropyLoss", 12, 21, loss_infer, loss_run, 0},
    {0},
};
