/*
 * onnxruntime's fused attention ops: Attention (packed Q/K/V weights, BERT and GPT-2 exports of
 * its transformer optimizer) and QAttention (the same, quantized), MultiHeadAttention (projected Q,
 * K, V), GroupQueryAttention (fewer K/V heads than query heads, causal, with a KV cache) and
 * RotaryEmbedding.
 *
 * Both attention ops bring Q, K and V into one head-major layout in the scratch ([B, N, S, H] for
 * Q; [B, N, T, H] for K and V, where T = past + new positions and the past rows come first), then
 * share one core: scores = Q K^T * scale + attention_bias + mask, softmax over T, times V, written
 * back as [B, S, N * Hv]. Masks add mask_filter_value (-10000 by default, as onnxruntime does)
 * where a position is hidden: a raw 0/1 mask [B, T] or [B, S, T], key lengths [B] (right
 * padding), end and start positions [2 * B] (left padding), and `unidirectional` hides the
 * future. K and V with their past are the present outputs. Nothing allocates at run time.
 */
#include "contrib.h"

#include "gemm_kernel.h"
#include "q8mm.h"
#include "quant.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

typedef enum { MASK_NONE, MASK_RAW_2D, MASK_RAW_3D, MASK_END, MASK_END_START } mask_kind;

typedef struct {
    int64_t B, S, P, L, T, N, H, Hv; /* P past positions, L new key positions, T = P + L */
    int64_t NK;                      /* K/V heads: N, or fewer for grouped-query attention */
    int64_t Dq, Dk, Dv;              /* projected widths: N * H, N * H, N * Hv */
    float scale, filter;
    bool causal;
    mask_kind mask;
    int mask_in, bias_in, past_in; /* input indices (-1: none) */
    int64_t ab_b, ab_n;            /* attention_bias dims 0 and 1 (1: broadcast) */
    size_t q_off, k_off, v_off, scores_off, qkv_off; /* floats into the scratch */
} attn_plan;

/* ------------------------------------------------------------------ shared core */

static ss_status *attn_check_mask(const ss_kctx *k, attn_plan *p, int i)
{
    const ss_tensor *m = ss_contrib_in(k, i);
    p->mask = MASK_NONE;
    if (!m) return NULL;
    if (m->dtype != SS_DT_INT32)
        return ss_op_err(k, SS_ERR_INVALID, "mask (input %d) must be int32", i);
    if (m->ndim == 2 && m->dims[0] == p->B && m->dims[1] == p->T)
        p->mask = MASK_RAW_2D;
    else if (m->ndim == 3 && m->dims[0] == p->B && m->dims[1] == p->S && m->dims[2] == p->T)
        p->mask = MASK_RAW_3D;
    else if (m->ndim == 1 && m->dims[0] == p->B)
        p->mask = MASK_END;
    else if (m->ndim == 1 && m->dims[0] == 2 * p->B)
        p->mask = MASK_END_START;
    else {
        char s[128];
        return ss_op_err(k, SS_ERR_UNSUPPORTED,
                         "mask shape %s (supported: [B], [2*B], [B, T], [B, S, T] with B=%lld, "
                         "S=%lld, T=%lld)",
                         ss_shape_str(m->ndim, m->dims, s, sizeof s), (long long)p->B,
                         (long long)p->S, (long long)p->T);
    }
    p->mask_in = i;
    return NULL;
}

static ss_status *attn_check_bias(const ss_kctx *k, attn_plan *p, int i)
{
    const ss_tensor *a = ss_contrib_in(k, i);
    p->bias_in = -1;
    if (!a) return NULL;
    if (a->dtype != SS_DT_FLOAT32)
        return ss_op_err(k, SS_ERR_INVALID, "attention_bias (input %d) must be float32, not %s", i,
                         ss_dtype_name(a->dtype));
    bool ok = a->ndim == 4 && (a->dims[0] == 1 || a->dims[0] == p->B) &&
              (a->dims[1] == 1 || a->dims[1] == p->N) && a->dims[2] == p->S && a->dims[3] == p->T;
    if (!ok) return ss_op_err(k, SS_ERR_INVALID, "attention_bias must be [B or 1, N or 1, S, T]");
    p->bias_in = i;
    p->ab_b = a->dims[0], p->ab_n = a->dims[1];
    return NULL;
}

/* Scale, filter, causality and the scratch layout (qkv_floats: a projection buffer first). */
static void attn_finish_plan(ss_kctx *k, attn_plan *p, size_t qkv_floats)
{
    p->scale = ss_onnx_attr_float(k->node, "scale", 1.0f / sqrtf((float)p->H));
    p->filter = ss_onnx_attr_float(k->node, "mask_filter_value", -10000.0f);
    p->causal = ss_onnx_attr_int(k->node, "unidirectional", 0) != 0;
    p->qkv_off = 0;
    p->q_off = qkv_floats;
    p->k_off = p->q_off + (size_t)(p->B * p->N * p->S * p->H);
    if (!p->NK) p->NK = p->N;
    p->v_off = p->k_off + (size_t)(p->B * p->NK * p->T * p->H);
    p->scores_off = p->v_off + (size_t)(p->B * p->NK * p->T * p->Hv);
    k->scratch_bytes = sizeof(float) * (p->scores_off + (size_t)p->T);
}

static bool attn_hidden(const attn_plan *p, const int32_t *m, int64_t b, int64_t s, int64_t t)
{
    switch (p->mask) {
    case MASK_RAW_2D:
        return m[b * p->T + t] == 0;
    case MASK_RAW_3D:
        return m[(b * p->S + s) * p->T + t] == 0;
    case MASK_END:
        return t >= m[b];
    case MASK_END_START:
        return t >= m[b] || t < m[p->B + b];
    default:
        return false;
    }
}

/* One query row: probs over T into sc, then out[0..Hv) = probs x V. */
static void attn_row(const attn_plan *p, const ss_kctx *k, float *scratch, int64_t b, int64_t n,
                     int64_t s, float *out)
{
    const float *q = scratch + p->q_off + ((b * p->N + n) * p->S + s) * p->H;
    int64_t kn = n / (p->N / p->NK); /* query heads share K/V heads in groups */
    const float *kh = scratch + p->k_off + (b * p->NK + kn) * p->T * p->H;
    const float *vh = scratch + p->v_off + (b * p->NK + kn) * p->T * p->Hv;
    const int32_t *m = p->mask != MASK_NONE ? k->in[p->mask_in]->data : NULL;
    const float *ab = p->bias_in >= 0 ? k->in[p->bias_in]->data : NULL;
    if (ab) ab += (((p->ab_b == 1 ? 0 : b) * p->ab_n + (p->ab_n == 1 ? 0 : n)) * p->S + s) * p->T;
    float *sc = scratch + p->scores_off, mx = -INFINITY;
    for (int64_t t = 0; t < p->T; t++) {
        float dot = 0;
        for (int64_t h = 0; h < p->H; h++)
            dot += q[h] * kh[t * p->H + h];
        float v = dot * p->scale + (ab ? ab[t] : 0.0f);
        if (m && attn_hidden(p, m, b, s, t)) v += p->filter;
        if (p->causal && t > p->P + s) v += p->filter;
        sc[t] = v;
        mx = v > mx ? v : mx;
    }
    double sum = 0;
    for (int64_t t = 0; t < p->T; t++)
        sum += sc[t] = expf(sc[t] - mx);
    memset(out, 0, sizeof(float) * (size_t)p->Hv);
    for (int64_t t = 0; t < p->T; t++) {
        float w = (float)(sc[t] / sum);
        for (int64_t h = 0; h < p->Hv; h++)
            out[h] += w * vh[t * p->Hv + h];
    }
}

static void attn_core(const attn_plan *p, const ss_kctx *k, float *scratch, float *y)
{
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t n = 0; n < p->N; n++)
            for (int64_t s = 0; s < p->S; s++)
                attn_row(p, k, scratch, b, n, s, y + ((b * p->S + s) * p->N + n) * p->Hv);
}

/* dst[b, n, off + s, :] = src[b, s, n * H : (n + 1) * H] (+ bias), rows of src row_stride apart. */
static void to_heads(const float *src, int64_t row_stride, const float *bias, int64_t B, int64_t S,
                     int64_t N, int64_t H, float *dst, int64_t T, int64_t off)
{
    for (int64_t b = 0; b < B; b++)
        for (int64_t s = 0; s < S; s++)
            for (int64_t n = 0; n < N; n++) {
                const float *r = src + (b * S + s) * row_stride + n * H;
                float *d = dst + ((b * N + n) * T + off + s) * H;
                for (int64_t h = 0; h < H; h++)
                    d[h] = r[h] + (bias ? bias[n * H + h] : 0.0f);
            }
}

/* dst[b, n, 0:P, :] = past[b, n, :, :], or the reverse (present <- dst) when out. */
static void copy_rows(float *heads, float *other, int64_t BN, int64_t P, int64_t T, int64_t H,
                      bool to_other)
{
    for (int64_t i = 0; i < BN; i++) {
        size_t bytes = sizeof(float) * (size_t)(P * H);
        if (to_other)
            memcpy(other + i * P * H, heads + i * T * H, bytes);
        else
            memcpy(heads + i * T * H, other + i * P * H, bytes);
    }
}

/* ------------------------------------------------------------------ Attention */

static const char *const attention_attrs[] = {
    "num_heads", "qkv_hidden_sizes",          "unidirectional",       "scale", "mask_filter_value",
    "do_rotary", "past_present_share_buffer", "rotary_embedding_dim", NULL};

static ss_status *attention_sizes(const ss_kctx *k, attn_plan *p, int64_t width)
{
    const int64_t *hs;
    int n = ss_onnx_attr_ints(k->node, "qkv_hidden_sizes", &hs);
    if (n > 0 && n != 3) return ss_op_err(k, SS_ERR_INVALID, "qkv_hidden_sizes needs 3 values");
    p->Dq = n > 0 ? hs[0] : width / 3, p->Dk = n > 0 ? hs[1] : width / 3;
    p->Dv = n > 0 ? hs[2] : width / 3;
    if (p->Dq + p->Dk + p->Dv != width || p->Dq != p->Dk || p->Dq % p->N || p->Dv % p->N)
        return ss_op_err(k, SS_ERR_INVALID,
                         "weights width %lld does not split into Q, K, V widths divisible by "
                         "num_heads %lld",
                         (long long)width, (long long)p->N);
    p->H = p->Dq / p->N, p->Hv = p->Dv / p->N;
    return NULL;
}

/* past (input i): [2, B, num_heads, P, head_size]. */
static ss_status *attention_check_past(const ss_kctx *k, attn_plan *p, int i)
{
    const ss_tensor *past = ss_contrib_in(k, i);
    p->P = 0, p->past_in = -1;
    if (!past) return NULL;
    if (past->dtype != SS_DT_FLOAT32 || past->ndim != 5 || past->dims[0] != 2 ||
        past->dims[1] != p->B || past->dims[2] != p->N || past->dims[4] != p->H || p->H != p->Hv)
        return ss_op_err(k, SS_ERR_INVALID, "past must be float32 [2, B, num_heads, P, head_size]");
    p->P = past->dims[3], p->past_in = i;
    return NULL;
}

/* Output 0 [B, S, Dv] and present [2, B, N, T, H] when asked for. */
static void attention_outputs(ss_kctx *k, const attn_plan *p)
{
    ss_tensor *y = k->out[0], *present = ss_contrib_out(k, 1);
    *y = (ss_tensor){.dtype = SS_DT_FLOAT32, .ndim = 3, .dims = {p->B, p->S, p->Dv}};
    if (present)
        *present =
            (ss_tensor){.dtype = SS_DT_FLOAT32, .ndim = 5, .dims = {2, p->B, p->N, p->T, p->H}};
}

static ss_status *attention_infer_f32(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 6);
    if (!st) st = ss_op_check_attrs(k, attention_attrs);
    if (!st) st = ss_contrib_expect_f32(k, 3);
    if (st) return st;
    if (ss_onnx_attr_int(k->node, "do_rotary", 0) ||
        ss_onnx_attr_int(k->node, "past_present_share_buffer", 0))
        return ss_op_err(k, SS_ERR_UNSUPPORTED,
                         "do_rotary and past_present_share_buffer are not supported");
    const ss_tensor *x = k->in[0], *w = k->in[1], *bias = ss_contrib_in(k, 2);
    if (x->ndim != 3 || w->ndim != 2 || w->dims[0] != x->dims[2])
        return ss_op_err(k, SS_ERR_INVALID, "input must be [B, S, D] and weights [D, 3 * hidden]");
    attn_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->B = x->dims[0], p->S = p->L = x->dims[1];
    p->N = ss_onnx_attr_int(k->node, "num_heads", 0);
    if (p->N < 1) return ss_op_err(k, SS_ERR_INVALID, "num_heads must be >= 1");
    if ((st = attention_sizes(k, p, w->dims[1]))) return st;
    if (bias && ss_tensor_numel(bias) != w->dims[1])
        return ss_op_err(k, SS_ERR_INVALID, "bias must have %lld values", (long long)w->dims[1]);
    if ((st = attention_check_past(k, p, 4))) return st;
    p->T = p->P + p->L;
    if ((st = attn_check_mask(k, p, 3)) || (st = attn_check_bias(k, p, 5))) return st;
    attn_finish_plan(k, p, (size_t)(p->B * p->S * w->dims[1]));
    attention_outputs(k, p);
    return NULL;
}

/* From the projected rows qkv [B * S, Dq + Dk + Dv] (bias: added to them, or NULL): the heads,
 * the past before the new keys and values, attention, and present. */
static void attention_from_qkv(ss_kctx *k, const attn_plan *p, const float *qkv, const float *bias)
{
    float *sc = k->scratch;
    int64_t width = p->Dq + p->Dk + p->Dv, BN = p->B * p->N;
    to_heads(qkv, width, bias, p->B, p->S, p->N, p->H, sc + p->q_off, p->S, 0);
    to_heads(qkv + p->Dq, width, bias ? bias + p->Dq : NULL, p->B, p->S, p->N, p->H, sc + p->k_off,
             p->T, p->P);
    to_heads(qkv + p->Dq + p->Dk, width, bias ? bias + p->Dq + p->Dk : NULL, p->B, p->S, p->N,
             p->Hv, sc + p->v_off, p->T, p->P);
    if (p->past_in >= 0) {
        float *past = k->in[p->past_in]->data;
        copy_rows(sc + p->k_off, past, BN, p->P, p->T, p->H, false);
        copy_rows(sc + p->v_off, past + BN * p->P * p->H, BN, p->P, p->T, p->H, false);
    }
    attn_core(p, k, sc, k->out[0]->data);
    ss_tensor *present = ss_contrib_out(k, 1);
    if (present) {
        size_t half = (size_t)(BN * p->T * p->H);
        memcpy(present->data, sc + p->k_off, sizeof(float) * half);
        memcpy((float *)present->data + half, sc + p->v_off, sizeof(float) * half);
    }
}

static ss_status *attention_run_f32(ss_kctx *k)
{
    const attn_plan *p = k->state;
    float *qkv = (float *)k->scratch + p->qkv_off;
    int64_t width = p->Dq + p->Dk + p->Dv;
    ss_op_blas_gemm(SS_DT_FLOAT32, false, false, p->B * p->S, width, k->in[1]->dims[0], 1.0f,
                    k->in[0]->data, k->in[1]->dims[0], k->in[1]->data, width, 0.0f, qkv);
    const ss_tensor *bt = ss_contrib_in(k, 2);
    attention_from_qkv(k, p, qkv, bt ? bt->data : NULL);
    return NULL;
}

SS_CONTRIB_F32(attention)

/* ------------------------------------------------------------------ QAttention */

/* onnxruntime's quantized Attention (its dynamic quantization of BERT and GPT-2 exports): input
 * uint8/int8 [B, S, D] and weight [D, 3 * hidden] quantized, input_scale per tensor, weight_scale
 * and weight_zero_point per tensor or per column, bias float32 (required), mask_index and past as
 * Attention's. The projection is onnxruntime's integer GEMM: exact int32 sums of (input - zp) x
 * (weight - zp), here in float64 BLAS (every sum of products of 9-bit differences is exact there),
 * times input_scale x weight_scale[column] in float32, plus the bias; the rest is Attention. */
enum { QA_X, QA_W, QA_BIAS, QA_X_SCALE, QA_W_SCALE, QA_MASK, QA_X_ZP, QA_W_ZP, QA_PAST };

typedef struct {
    attn_plan a;
    int64_t M, K, N;    /* the projection: [B * S, D] x [D, 3 * hidden] */
    size_t xs, ws, acc; /* doubles into the scratch, after Attention's floats */
    bool w_per_col, zp_per_col;
    bool fast;     /* the projection on q8mm.h's VNNI product */
    size_t params; /* then: per column the weight's zero point and the scale, in floats */
    ss_q8mm g;
} qattn_plan;

static void qattention_release(void *state)
{
    ss_q8mm_release(&((qattn_plan *)state)->g);
}

/* A per-tensor value (n 1) or one per column (n width) of input i, of dtype dt. */
static ss_status *qattn_param(const ss_kctx *k, int i, ss_dtype dt, int64_t width, bool *per_col,
                              const char *what)
{
    const ss_tensor *t = ss_contrib_in(k, i);
    *per_col = false;
    if (!t) return NULL;
    int64_t n = ss_tensor_numel(t);
    if (t->dtype != dt || (n != 1 && n != width) || t->ndim > 1)
        return ss_op_err(k, SS_ERR_INVALID, "%s must be %s, one value or %lld (one per column)",
                         what, ss_dtype_name(dt), (long long)width);
    *per_col = n == width && width != 1;
    return NULL;
}

static ss_status *qattention_infer(ss_kctx *k)
{
    static const char *const attrs[] = {
        "num_heads",         "unidirectional", "do_rotary", "past_present_share_buffer",
        "mask_filter_value", "scale",          NULL};
    ss_status *st = ss_op_expect_inputs(k, 5, 9);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (st) return st;
    for (int i = QA_X; i <= QA_W_SCALE; i++)
        if (!ss_contrib_in(k, i))
            return ss_op_err(k, SS_ERR_INVALID, "required input %d is missing", i);
    if (ss_onnx_attr_int(k->node, "do_rotary", 0) ||
        ss_onnx_attr_int(k->node, "past_present_share_buffer", 0))
        return ss_op_err(k, SS_ERR_UNSUPPORTED,
                         "do_rotary and past_present_share_buffer are not supported");
    const ss_tensor *x = k->in[QA_X], *w = k->in[QA_W], *bias = k->in[QA_BIAS];
    if (!ss_quant_dtype8(x->dtype) || !ss_quant_dtype8(w->dtype))
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "input and weight are %s and %s: uint8 or int8",
                         ss_dtype_name(x->dtype), ss_dtype_name(w->dtype));
    if (x->ndim != 3 || w->ndim != 2 || w->dims[0] != x->dims[2])
        return ss_op_err(k, SS_ERR_INVALID, "input must be [B, S, D] and weight [D, 3 * hidden]");
    qattn_plan *q = ss_op_state_alloc(k, sizeof *q);
    if (!q) return ss_op_oom();
    attn_plan *p = &q->a;
    p->B = x->dims[0], p->S = p->L = x->dims[1];
    p->N = ss_onnx_attr_int(k->node, "num_heads", 0);
    if (p->N < 1) return ss_op_err(k, SS_ERR_INVALID, "num_heads must be >= 1");
    int64_t width = w->dims[1];
    if ((st = attention_sizes(k, p, width))) return st;
    if (bias->dtype != SS_DT_FLOAT32 || ss_tensor_numel(bias) != width)
        return ss_op_err(k, SS_ERR_INVALID, "bias must be float32 with %lld values",
                         (long long)width);
    bool x_per_col, x_zp_per_col;
    if ((st = qattn_param(k, QA_X_SCALE, SS_DT_FLOAT32, 1, &x_per_col, "input_scale")) ||
        (st = qattn_param(k, QA_X_ZP, x->dtype, 1, &x_zp_per_col, "input_zero_point")) ||
        (st = qattn_param(k, QA_W_SCALE, SS_DT_FLOAT32, width, &q->w_per_col, "weight_scale")) ||
        (st = qattn_param(k, QA_W_ZP, w->dtype, width, &q->zp_per_col, "weight_zero_point")))
        return st;
    if ((st = attention_check_past(k, p, QA_PAST))) return st;
    p->T = p->P + p->L;
    p->bias_in = -1;
    if ((st = attn_check_mask(k, p, QA_MASK))) return st;
    q->M = p->B * p->S, q->K = w->dims[0], q->N = width;
    attn_finish_plan(k, p, (size_t)(q->M * width));
    size_t floats = k->scratch_bytes / sizeof(float);
    q->g = (ss_q8mm){.M = q->M, .K = q->K, .N = q->N, .batch = 1};
    q->fast = ss_q8mm_plan(k, &q->g, QA_X, QA_W);
    if (q->fast) {
        q->params = floats;
        k->scratch_bytes = sizeof(float) * (floats + 2 * (size_t)q->N) + ss_q8mm_scratch(&q->g);
    } else {
        q->xs = (floats + 1) / 2; /* in doubles, after the floats */
        q->ws = q->xs + (size_t)(q->M * q->K);
        q->acc = q->ws + (size_t)(q->K * q->N);
        k->scratch_bytes = sizeof(double) * (q->acc + (size_t)(q->M * q->N));
    }
    attention_outputs(k, p);
    return NULL;
}

/* What qattention_finish needs. */
typedef struct {
    float *qkv;         /* [M, N] */
    const float *scale; /* per column: input_scale x weight_scale */
    int64_t N;
} qattn_ctx;

static void qattention_finish(void *ctx, int32_t *S, int64_t bi, int64_t m, int64_t n0, int64_t n1)
{
    (void)bi;
    const qattn_ctx *q = ctx;
    for (int64_t n = n0; n < n1; n++)
        q->qkv[m * q->N + n] = (float)S[n - n0] * q->scale[n];
}

/* The projection's sums scaled into qkv on the VNNI path. */
static void qattention_project(ss_kctx *k, const qattn_plan *q, float *qkv)
{
    const ss_tensor *xz = ss_contrib_in(k, QA_X_ZP);
    int32_t zx = xz ? (int32_t)ss_op_elem_i64(xz, 0) : 0;
    int32_t *zw = (int32_t *)((float *)k->scratch + q->params);
    float *scale = (float *)(zw + q->N);
    float sx = (float)ss_op_elem_f64(k->in[QA_X_SCALE], 0);
    ss_q8mm_columns(ss_contrib_in(k, QA_W_ZP), k->in[QA_W_SCALE], sx, q->N, zw, scale);
    qattn_ctx c = {.qkv = qkv, .scale = scale, .N = q->N};
    ss_q8mm_io io = {.a = k->in[QA_X]->data,
                     .b = k->in[QA_W]->data,
                     .za = &zx,
                     .zb = zw,
                     .zb_step = 1,
                     .finish = qattention_finish,
                     .ctx = &c};
    ss_q8mm_run(&q->g, &io, scale + q->N);
}

static ss_status *qattention_run(ss_kctx *k)
{
    const qattn_plan *q = k->state;
    if (q->fast) {
        float *qkv = (float *)k->scratch + q->a.qkv_off;
        qattention_project(k, q, qkv);
        attention_from_qkv(k, &q->a, qkv, k->in[QA_BIAS]->data);
        return NULL;
    }
    double *d = k->scratch, *xs = d + q->xs, *ws = d + q->ws, *acc = d + q->acc;
    const ss_tensor *x = k->in[QA_X], *w = k->in[QA_W];
    const ss_tensor *xz = ss_contrib_in(k, QA_X_ZP), *wz = ss_contrib_in(k, QA_W_ZP);
    int64_t zx = xz ? ss_op_elem_i64(xz, 0) : 0;
    for (int64_t i = 0; i < q->M * q->K; i++)
        xs[i] = (double)(ss_op_elem_i64(x, i) - zx);
    for (int64_t kk = 0; kk < q->K; kk++)
        for (int64_t n = 0; n < q->N; n++) {
            int64_t zw = wz ? ss_op_elem_i64(wz, q->zp_per_col ? n : 0) : 0;
            ws[kk * q->N + n] = (double)(ss_op_elem_i64(w, kk * q->N + n) - zw);
        }
    if (q->M && q->N && q->K)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)q->M, (blasint)q->N,
                    (blasint)q->K, 1, xs, (blasint)q->K, ws, (blasint)q->N, 0, acc, (blasint)q->N);
    else
        memset(acc, 0, sizeof(double) * (size_t)(q->M * q->N));
    float sx = (float)ss_op_elem_f64(k->in[QA_X_SCALE], 0);
    const ss_tensor *wsc = k->in[QA_W_SCALE];
    float *qkv = (float *)k->scratch + q->a.qkv_off;
    for (int64_t n = 0; n < q->N; n++) {
        float scale = sx * (float)ss_op_elem_f64(wsc, q->w_per_col ? n : 0);
        for (int64_t m = 0; m < q->M; m++)
            qkv[m * q->N + n] = (float)acc[m * q->N + n] * scale;
    }
    attention_from_qkv(k, &q->a, qkv, k->in[QA_BIAS]->data);
    return NULL;
}

/* ------------------------------------------------------------------ MultiHeadAttention */

enum { MHA_Q, MHA_K, MHA_V, MHA_BIAS, MHA_MASK, MHA_AB, MHA_PAST_K, MHA_PAST_V };

/* key/value: [B, L, D] (projected rows, bias added here) or [B, N, L, H] (already in heads). */
static ss_status *mha_check_kv(const ss_kctx *k, attn_plan *p, const ss_tensor *key,
                               const ss_tensor *value)
{
    if (key->ndim == 3 && value->ndim == 3 && key->dims[0] == p->B && value->dims[0] == p->B &&
        key->dims[1] == value->dims[1] && key->dims[2] == p->Dq) {
        p->L = key->dims[1], p->Dv = value->dims[2];
        return NULL;
    }
    if (key->ndim == 4 && value->ndim == 4 && key->dims[0] == p->B && key->dims[1] == p->N &&
        key->dims[3] == p->H && value->dims[1] == p->N && value->dims[2] == key->dims[2]) {
        if (ss_contrib_in(k, MHA_PAST_K))
            return ss_op_err(k, SS_ERR_INVALID, "4-D key/value cannot have a past");
        p->L = key->dims[2], p->Dv = value->dims[3] * p->N;
        return NULL;
    }
    return ss_op_err(k, SS_ERR_UNSUPPORTED,
                     "key/value must be [B, L, D] or [B, num_heads, L, head_size] (packed "
                     "QKV/KV is not supported)");
}

static ss_status *mha_check_past(const ss_kctx *k, attn_plan *p)
{
    const ss_tensor *pk = ss_contrib_in(k, MHA_PAST_K), *pv = ss_contrib_in(k, MHA_PAST_V);
    p->P = 0, p->past_in = -1;
    if (!pk && !pv) return NULL;
    if (!pk || !pv || pk->ndim != 4 || pv->ndim != 4 || pk->dims[0] != p->B ||
        pk->dims[1] != p->N || pk->dims[3] != p->H || pv->dims[2] != pk->dims[2] ||
        pv->dims[3] != p->Hv)
        return ss_op_err(k, SS_ERR_INVALID, "past_key/past_value must be [B, N, P, head_size]");
    p->P = pk->dims[2], p->past_in = MHA_PAST_K;
    return NULL;
}

static void mha_outputs(ss_kctx *k, const attn_plan *p)
{
    *k->out[0] = (ss_tensor){.dtype = SS_DT_FLOAT32, .ndim = 3, .dims = {p->B, p->S, p->Dv}};
    for (int j = 1; j <= 2; j++) {
        ss_tensor *o = ss_contrib_out(k, j);
        if (o)
            *o = (ss_tensor){.dtype = SS_DT_FLOAT32,
                             .ndim = 4,
                             .dims = {p->B, p->N, p->T, j == 1 ? p->H : p->Hv}};
    }
}

static ss_status *mha_infer_f32(ss_kctx *k)
{
    static const char *const attrs[] = {"num_heads", "unidirectional", "scale", "mask_filter_value",
                                        NULL};
    ss_status *st = ss_op_expect_inputs(k, 3, 8);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_contrib_expect_f32(k, 3);
    if (st) return st;
    if (k->n_out > 3) return ss_op_err(k, SS_ERR_UNSUPPORTED, "output qk is not supported");
    const ss_tensor *q = k->in[MHA_Q], *bias = ss_contrib_in(k, MHA_BIAS);
    attn_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->N = ss_onnx_attr_int(k->node, "num_heads", 0);
    if (q->ndim != 3 || p->N < 1 || q->dims[2] % p->N)
        return ss_op_err(k, SS_ERR_INVALID, "query must be [B, S, D], D divisible by num_heads");
    p->B = q->dims[0], p->S = q->dims[1], p->Dq = p->Dk = q->dims[2], p->H = p->Dq / p->N;
    if ((st = mha_check_kv(k, p, k->in[MHA_K], k->in[MHA_V]))) return st;
    if (p->Dv % p->N) return ss_op_err(k, SS_ERR_INVALID, "value width not divisible by heads");
    p->Hv = p->Dv / p->N;
    if (bias && ss_tensor_numel(bias) != p->Dq + p->Dk + p->Dv)
        return ss_op_err(k, SS_ERR_INVALID, "bias must have %lld values",
                         (long long)(p->Dq + p->Dk + p->Dv));
    if ((st = mha_check_past(k, p))) return st;
    p->T = p->P + p->L;
    if ((st = attn_check_mask(k, p, MHA_MASK)) || (st = attn_check_bias(k, p, MHA_AB))) return st;
    attn_finish_plan(k, p, 0);
    mha_outputs(k, p);
    return NULL;
}

/* One of key/value into heads at position P (3-D rows plus bias, or 4-D heads as they are). */
static void mha_load_kv(const attn_plan *p, const ss_tensor *t, const float *bias, int64_t H,
                        float *dst)
{
    if (t->ndim == 3) {
        to_heads(t->data, p->N * H, bias, p->B, p->L, p->N, H, dst, p->T, p->P);
        return;
    }
    memcpy(dst, t->data, sizeof(float) * (size_t)(p->B * p->N * p->L * H));
}

static ss_status *mha_run_f32(ss_kctx *k)
{
    const attn_plan *p = k->state;
    float *sc = k->scratch;
    const ss_tensor *bt = ss_contrib_in(k, MHA_BIAS);
    const float *bias = bt ? bt->data : NULL;
    int64_t BN = p->B * p->N;
    to_heads(k->in[MHA_Q]->data, p->Dq, bias, p->B, p->S, p->N, p->H, sc + p->q_off, p->S, 0);
    mha_load_kv(p, k->in[MHA_K], bias ? bias + p->Dq : NULL, p->H, sc + p->k_off);
    mha_load_kv(p, k->in[MHA_V], bias ? bias + p->Dq + p->Dk : NULL, p->Hv, sc + p->v_off);
    if (p->past_in >= 0) {
        copy_rows(sc + p->k_off, k->in[MHA_PAST_K]->data, BN, p->P, p->T, p->H, false);
        copy_rows(sc + p->v_off, k->in[MHA_PAST_V]->data, BN, p->P, p->T, p->Hv, false);
    }
    attn_core(p, k, sc, k->out[0]->data);
    ss_tensor *pk = ss_contrib_out(k, 1), *pv = ss_contrib_out(k, 2);
    if (pk) memcpy(pk->data, sc + p->k_off, sizeof(float) * (size_t)(BN * p->T * p->H));
    if (pv) memcpy(pv->data, sc + p->v_off, sizeof(float) * (size_t)(BN * p->T * p->Hv));
    return NULL;
}

SS_CONTRIB_F32(mha)

/* ------------------------------------------------------------------ GroupQueryAttention
 * Batches without padding only: every row's total length (seqlens_k + 1) must be
 * total_sequence_length = past + new positions, with the past given as [B, kv_heads, P, H] (not
 * a shared max-length buffer); no rotary, local window or softcap. Anything else is refused. */

enum { GQA_Q, GQA_K, GQA_V, GQA_PAST_K, GQA_PAST_V, GQA_SEQLENS, GQA_TOTAL };

static ss_status *gqa_check_attrs(const ss_kctx *k)
{
    static const char *const attrs[] = {
        "num_heads",          "kv_num_heads", "scale",          "local_window_size", "do_rotary",
        "rotary_interleaved", "softcap",      "smooth_softmax", "qk_output",         NULL};
    ss_status *st = ss_op_check_attrs(k, attrs);
    if (st) return st;
    if (ss_onnx_attr_int(k->node, "local_window_size", -1) != -1 ||
        ss_onnx_attr_int(k->node, "do_rotary", 0) || ss_onnx_attr_float(k->node, "softcap", 0) ||
        ss_onnx_attr_int(k->node, "smooth_softmax", 0) || ss_onnx_attr_int(k->node, "qk_output", 0))
        return ss_op_err(k, SS_ERR_UNSUPPORTED,
                         "local_window_size, do_rotary, softcap, smooth_softmax and qk_output "
                         "are not supported");
    if (k->n_in > GQA_TOTAL + 1)
        for (int i = GQA_TOTAL + 1; i < k->n_in; i++)
            if (k->in[i])
                return ss_op_err(k, SS_ERR_UNSUPPORTED,
                                 "input %d (rotary caches, position ids, "
                                 "attention bias, head sink) is not supported",
                                 i);
    return NULL;
}

/* Q, K, V widths: query [B, S, N*H] with key/value [B, S, NK*H], or packed [B, S, (N+2NK)*H]. */
static ss_status *gqa_shapes(const ss_kctx *k, attn_plan *p)
{
    const ss_tensor *q = k->in[GQA_Q], *key = ss_contrib_in(k, GQA_K), *v = ss_contrib_in(k, GQA_V);
    p->N = ss_onnx_attr_int(k->node, "num_heads", 0);
    p->NK = ss_onnx_attr_int(k->node, "kv_num_heads", 0);
    if (q->ndim != 3 || p->N < 1 || p->NK < 1 || p->N % p->NK || !key != !v)
        return ss_op_err(k, SS_ERR_INVALID,
                         "query must be [B, S, D], num_heads a multiple of kv_num_heads");
    p->B = q->dims[0], p->S = p->L = q->dims[1];
    int64_t width = key ? q->dims[2] : q->dims[2] / (p->N + 2 * p->NK) * p->N;
    p->H = p->Hv = width / p->N;
    p->Dq = p->N * p->H, p->Dk = p->Dv = p->NK * p->H;
    bool ok = p->H > 0 && (key ? q->dims[2] == p->Dq : q->dims[2] == p->Dq + 2 * p->Dk);
    if (key)
        ok = ok && key->ndim == 3 && v->ndim == 3 && key->dims[0] == p->B && v->dims[0] == p->B &&
             key->dims[1] == p->S && v->dims[1] == p->S && key->dims[2] == p->Dk &&
             v->dims[2] == p->Dk;
    return ok ? NULL : ss_op_err(k, SS_ERR_INVALID, "query/key/value widths do not fit the heads");
}

static ss_status *gqa_infer_f32(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 12);
    if (!st) st = gqa_check_attrs(k);
    if (!st) st = ss_contrib_expect_f32(k, 5);
    if (st) return st;
    const ss_tensor *sl = ss_contrib_in(k, GQA_SEQLENS), *tot = ss_contrib_in(k, GQA_TOTAL);
    attn_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    if ((st = gqa_shapes(k, p))) return st;
    if (!sl || !tot || sl->dtype != SS_DT_INT32 || ss_tensor_numel(sl) != p->B ||
        tot->dtype != SS_DT_INT32 || ss_tensor_numel(tot) != 1)
        return ss_op_err(k, SS_ERR_INVALID,
                         "seqlens_k (int32 [B]) and total_sequence_length (int32) are required");
    const ss_tensor *pk = ss_contrib_in(k, GQA_PAST_K), *pv = ss_contrib_in(k, GQA_PAST_V);
    p->P = 0, p->past_in = -1;
    if (pk || pv) {
        if (!pk || !pv || pk->ndim != 4 || pk->dims[0] != p->B || pk->dims[1] != p->NK ||
            pk->dims[3] != p->H || !ss_shape_equal(4, pk->dims, pv->ndim, pv->dims))
            return ss_op_err(k, SS_ERR_INVALID, "past_key/past_value must be [B, kv_heads, P, H]");
        p->P = pk->dims[2], p->past_in = GQA_PAST_K;
    }
    p->T = p->P + p->L;
    p->mask = MASK_NONE, p->bias_in = -1;
    attn_finish_plan(k, p, 0);
    p->causal = true;
    *k->out[0] = (ss_tensor){.dtype = SS_DT_FLOAT32, .ndim = 3, .dims = {p->B, p->S, p->Dq}};
    for (int j = 1; j <= 2; j++)
        if (ss_contrib_out(k, j))
            *k->out[j] =
                (ss_tensor){.dtype = SS_DT_FLOAT32, .ndim = 4, .dims = {p->B, p->NK, p->T, p->H}};
    return NULL;
}

/* Every row must be unpadded: seqlens_k + 1 == total_sequence_length == past + new. */
static ss_status *gqa_check_lengths(const ss_kctx *k, const attn_plan *p)
{
    int32_t total = *(const int32_t *)k->in[GQA_TOTAL]->data;
    const int32_t *sl = k->in[GQA_SEQLENS]->data;
    bool ok = total == p->T;
    for (int64_t b = 0; ok && b < p->B; b++)
        ok = sl[b] + 1 == total;
    if (ok) return NULL;
    return ss_op_err(k, SS_ERR_UNSUPPORTED,
                     "total_sequence_length %d, seqlens_k + 1 per row and past + new length "
                     "%lld must agree (padded batches and shared KV buffers are not supported)",
                     total, (long long)p->T);
}

static ss_status *gqa_run_f32(ss_kctx *k)
{
    const attn_plan *p = k->state;
    ss_status *st = gqa_check_lengths(k, p);
    if (st) return st;
    float *sc = k->scratch;
    const ss_tensor *key = ss_contrib_in(k, GQA_K);
    const float *q = k->in[GQA_Q]->data;
    int64_t row = key ? p->Dq : p->Dq + 2 * p->Dk, BK = p->B * p->NK;
    const float *kr = key ? key->data : q + p->Dq;
    const float *vr = key ? k->in[GQA_V]->data : q + p->Dq + p->Dk;
    int64_t kv_row = key ? p->Dk : row;
    to_heads(q, row, NULL, p->B, p->S, p->N, p->H, sc + p->q_off, p->S, 0);
    to_heads(kr, kv_row, NULL, p->B, p->S, p->NK, p->H, sc + p->k_off, p->T, p->P);
    to_heads(vr, kv_row, NULL, p->B, p->S, p->NK, p->H, sc + p->v_off, p->T, p->P);
    if (p->past_in >= 0) {
        copy_rows(sc + p->k_off, k->in[GQA_PAST_K]->data, BK, p->P, p->T, p->H, false);
        copy_rows(sc + p->v_off, k->in[GQA_PAST_V]->data, BK, p->P, p->T, p->H, false);
    }
    attn_core(p, k, sc, k->out[0]->data);
    ss_tensor *pk = ss_contrib_out(k, 1), *pv = ss_contrib_out(k, 2);
    if (pk) memcpy(pk->data, sc + p->k_off, sizeof(float) * (size_t)(BK * p->T * p->H));
    if (pv) memcpy(pv->data, sc + p->v_off, sizeof(float) * (size_t)(BK * p->T * p->H));
    return NULL;
}

SS_CONTRIB_F32(gqa)

/* ------------------------------------------------------------------ RotaryEmbedding */

typedef struct {
    int64_t B, S, N, H, rot, cache_rows;
    bool interleaved, bnsh, pos_offset; /* pos_offset: position_ids is one start position */
} rope_plan;

static ss_status *rope_shape(const ss_kctx *k, rope_plan *p, const ss_tensor *x)
{
    int64_t heads = ss_onnx_attr_int(k->node, "num_heads", 0);
    int64_t rot = ss_onnx_attr_int(k->node, "rotary_embedding_dim", 0);
    int64_t half = k->in[2]->dims[1];
    p->bnsh = x->ndim == 4;
    p->B = x->dims[0];
    if (p->bnsh) {
        p->N = x->dims[1], p->S = x->dims[2], p->H = x->dims[3];
    } else {
        p->S = x->dims[1];
        p->H = heads > 0 ? x->dims[2] / heads : rot > 0 ? rot : 2 * half;
        p->N = p->H > 0 ? x->dims[2] / p->H : 0;
        if (p->H < 1 || p->N * p->H != x->dims[2])
            return ss_op_err(k, SS_ERR_INVALID, "hidden size %lld does not split into heads",
                             (long long)x->dims[2]);
    }
    p->rot = rot > 0 ? rot : p->H;
    if (p->rot > p->H || p->rot % 2 || half * 2 != p->rot)
        return ss_op_err(k, SS_ERR_INVALID, "cos/sin caches must be [positions, %lld / 2]",
                         (long long)p->rot);
    return NULL;
}

static ss_status *rope_infer_f32(ss_kctx *k)
{
    static const char *const attrs[] = {"interleaved", "num_heads",          "rotary_embedding_dim",
                                        "scale",       "is_packed_batching", NULL};
    ss_status *st = ss_op_expect_inputs(k, 4, 4);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (st) return st;
    const ss_tensor *x = k->in[0], *pos = k->in[1], *cs = k->in[2], *sn = k->in[3];
    if (x->dtype != SS_DT_FLOAT32 || cs->dtype != SS_DT_FLOAT32 || sn->dtype != SS_DT_FLOAT32)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "input and caches must be float types");
    if ((x->ndim != 3 && x->ndim != 4) || cs->ndim != 2 ||
        !ss_shape_equal(cs->ndim, cs->dims, sn->ndim, sn->dims) || pos->dtype != SS_DT_INT64)
        return ss_op_err(k, SS_ERR_INVALID,
                         "input must be 3-D or 4-D, caches 2-D of one shape, position_ids int64");
    if (ss_onnx_attr_int(k->node, "is_packed_batching", 0) ||
        ss_onnx_attr_float(k->node, "scale", 1.0f) != 1.0f)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "is_packed_batching and scale are not supported");
    rope_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    if ((st = rope_shape(k, p, x))) return st;
    p->interleaved = ss_onnx_attr_int(k->node, "interleaved", 0) != 0;
    p->cache_rows = cs->dims[0];
    p->pos_offset = ss_tensor_numel(pos) == 1;
    if (!p->pos_offset && !(pos->ndim == 2 && pos->dims[0] == p->B && pos->dims[1] == p->S))
        return ss_op_err(k, SS_ERR_INVALID, "position_ids must be [B, S] or one value");
    ss_op_same_shape(k->out[0], x);
    return NULL;
}

/* Rotates one head vector by position row `pos` of the caches. */
static void rope_head(const rope_plan *p, const float *x, const float *cs, const float *sn,
                      float *y)
{
    int64_t half = p->rot / 2;
    for (int64_t i = 0; i < half; i++) {
        int64_t a = p->interleaved ? 2 * i : i, b = p->interleaved ? 2 * i + 1 : i + half;
        float x1 = x[a], x2 = x[b];
        y[a] = x1 * cs[i] - x2 * sn[i];
        y[b] = x2 * cs[i] + x1 * sn[i];
    }
    for (int64_t i = p->rot; i < p->H; i++)
        y[i] = x[i];
}

static ss_status *rope_run_f32(ss_kctx *k)
{
    const rope_plan *p = k->state;
    const int64_t *pos = k->in[1]->data;
    const float *cs = k->in[2]->data, *sn = k->in[3]->data, *x = k->in[0]->data;
    float *y = k->out[0]->data;
    int64_t half = p->rot / 2;
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t s = 0; s < p->S; s++) {
            int64_t at = p->pos_offset ? pos[0] + s : pos[b * p->S + s];
            if (at < 0 || at >= p->cache_rows)
                return ss_op_err(k, SS_ERR_INVALID, "position %lld is outside the %lld cache rows",
                                 (long long)at, (long long)p->cache_rows);
            for (int64_t n = 0; n < p->N; n++) {
                int64_t off = p->bnsh ? ((b * p->N + n) * p->S + s) * p->H
                                      : ((b * p->S + s) * p->N + n) * p->H;
                rope_head(p, x + off, cs + at * half, sn + at * half, y + off);
            }
        }
    return NULL;
}

SS_CONTRIB_F32(rope)

const ss_op_def ss_ops_contrib_attention[] = {
    {SS_DOMAIN_MS, "Attention", 1, 1, attention_infer, attention_run, 0, NULL},
    {SS_DOMAIN_MS, "QAttention", 1, 1, qattention_infer, qattention_run, 0, qattention_release},
    {SS_DOMAIN_MS, "MultiHeadAttention", 1, 1, mha_infer, mha_run, 0, NULL},
    {SS_DOMAIN_MS, "GroupQueryAttention", 1, 1, gqa_infer, gqa_run, 0, NULL},
    {SS_DOMAIN_MS, "RotaryEmbedding", 1, 1, rope_infer, rope_run, 0, NULL},
    {NULL, NULL, 0, 0, NULL, NULL, 0, NULL},
};
