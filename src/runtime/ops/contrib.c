/*
 * onnxruntime's contrib ops that its transformer optimizer and common exporters write, outside
 * attention (contrib_attention.c): the Gelu family (Gelu, FastGelu, BiasGelu, QuickGelu) and
 * BiasAdd; the layer norms (SkipLayerNormalization, SkipSimplifiedLayerNormalization, and the
 * default-domain SimplifiedLayerNormalization and LayerNormalization that onnxruntime accepts
 * below opset 17) and EmbedLayerNormalization; FusedMatMul; and MatMulNBits (blockwise 2/4/8-bit
 * weights).
 *
 * Semantics follow onnxruntime's ContribOperators.md and its CPU kernels (the tests compare with
 * onnxruntime-node): a bias is a 1-D tensor over the last dim; a layer norm normalizes the last
 * dim (the default-domain ones: from `axis` on) in double, "simplified" meaning RMS (no mean
 * subtracted, no beta). MatMulNBits dequantizes its weights once at plan time when they are
 * constants (into the op's state), else at run time into the scratch, then runs a float32 GEMM;
 * or, where the node or the session allows int8 math, runs gemm_q8.h's int8 GEMM on them.
 * No kernel allocates.
 */
#include "contrib.h"

#include "gemm_f32p.h"
#include "gemm_kernel.h"
#include "gemm_q4.h"
#include "gemm_q8.h"
#include "onednn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

ss_status *ss_contrib_expect_f32(const ss_kctx *k, int n)
{
    for (int i = 0; i < n && i < k->n_in; i++)
        if (k->in[i] && k->in[i]->dtype != SS_DT_FLOAT32)
            return ss_op_err(k, SS_ERR_UNSUPPORTED, "input %d has type %s; expects a float type", i,
                             ss_dtype_name(k->in[i]->dtype));
    return NULL;
}

/* A 1-D input i (when present) with exactly n values: a bias, gamma or beta over the last dim. */
static ss_status *expect_vector(const ss_kctx *k, int i, const char *what, int64_t n)
{
    const ss_tensor *t = ss_contrib_in(k, i);
    if (!t) return NULL;
    if (ss_tensor_numel(t) != n || t->ndim < 1)
        return ss_op_err(k, SS_ERR_INVALID, "%s (input %d) has %lld values, the last dim has %lld",
                         what, i, (long long)ss_tensor_numel(t), (long long)n);
    return NULL;
}

/* ------------------------------------------------------------------ Gelu family, BiasAdd */

typedef enum { ACT_NONE, ACT_GELU, ACT_FAST_GELU, ACT_QUICK_GELU } act_kind;

typedef struct {
    act_kind act;
    int bias, skip; /* input indices, -1 when the op has none */
    float alpha;
    int64_t n, numel;
} act_plan;

static void act_spec(const ss_kctx *k, act_plan *p)
{
    const char *t = k->node->op_type;
    p->bias = p->skip = -1;
    p->act = ACT_GELU;
    if (strcmp(t, "BiasGelu") == 0 || strcmp(t, "FastGelu") == 0) p->bias = 1;
    if (strcmp(t, "FastGelu") == 0) p->act = ACT_FAST_GELU;
    if (strcmp(t, "QuickGelu") == 0) p->act = ACT_QUICK_GELU;
    if (strcmp(t, "BiasAdd") == 0) p->act = ACT_NONE, p->bias = 1, p->skip = 2;
}

static ss_status *act_infer_f32(ss_kctx *k)
{
    static const char *const attrs[] = {"alpha", NULL};
    act_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    act_spec(k, p);
    int max_in = p->skip >= 0 ? 3 : p->bias >= 0 ? 2 : 1;
    int min_in = strcmp(k->node->op_type, "FastGelu") == 0 ? 1 : max_in;
    ss_status *st = ss_op_expect_inputs(k, min_in, max_in);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_contrib_expect_f32(k, max_in);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->ndim < 1 && (p->bias >= 0 || p->skip >= 0))
        return ss_op_err(k, SS_ERR_INVALID, "input must have rank >= 1");
    p->n = x->ndim ? x->dims[x->ndim - 1] : 1;
    p->numel = ss_tensor_numel(x);
    p->alpha = ss_onnx_attr_float(k->node, "alpha", 1.702f);
    if (p->bias >= 0 && (st = expect_vector(k, p->bias, "bias", p->n))) return st;
    const ss_tensor *skip = p->skip >= 0 ? k->in[p->skip] : NULL;
    if (skip && !ss_shape_equal(skip->ndim, skip->dims, x->ndim, x->dims))
        return ss_op_err(k, SS_ERR_INVALID, "skip must have the shape of X");
    ss_op_same_shape(k->out[0], x);
    return NULL;
}

static float act_apply(act_kind act, float v, float alpha)
{
    switch (act) {
    case ACT_GELU:
        return 0.5f * v * (1.0f + erff(v * (float)M_SQRT1_2));
    case ACT_FAST_GELU: {
        const float c = 0.7978845608028654f; /* sqrt(2 / pi) */
        return 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
    }
    case ACT_QUICK_GELU:
        return v / (1.0f + expf(-alpha * v));
    default:
        return v;
    }
}

static ss_status *act_run_f32(ss_kctx *k)
{
    const act_plan *p = k->state;
    const float *x = k->in[0]->data;
    const ss_tensor *bt = p->bias >= 0 ? ss_contrib_in(k, p->bias) : NULL;
    const float *bias = bt ? bt->data : NULL;
    const float *skip = p->skip >= 0 ? k->in[p->skip]->data : NULL;
    float *y = k->out[0]->data;
    for (int64_t i = 0; i < p->numel; i++) {
        float v = x[i] + (bias ? bias[i % p->n] : 0.0f) + (skip ? skip[i] : 0.0f);
        y[i] = act_apply(p->act, v, p->alpha);
    }
    return NULL;
}

SS_CONTRIB_F32(act)

/* ------------------------------------------------------------------ layer norms */

/* Where each op keeps its tensors (-1: it has none). */
typedef struct {
    int skip, gamma, beta, bias;
    int mean_out, inv_out, sum_out;
    bool rms, has_axis;
} norm_spec;

static norm_spec norm_spec_of(const char *type)
{
    if (strcmp(type, "SkipLayerNormalization") == 0)
        return (norm_spec){1, 2, 3, 4, 1, 2, 3, false, false};
    if (strcmp(type, "SkipSimplifiedLayerNormalization") == 0)
        return (norm_spec){1, 2, -1, 3, 1, 2, 3, true, false};
    if (strcmp(type, "SimplifiedLayerNormalization") == 0)
        return (norm_spec){-1, 1, -1, -1, -1, 1, -1, true, true};
    return (norm_spec){-1, 1, 2, -1, 1, 2, -1, false, true}; /* LayerNormalization */
}

typedef struct {
    norm_spec s;
    int64_t rows, n, skip_numel;
    float eps;
} norm_plan;

static int norm_max_inputs(const norm_spec *s)
{
    int m = s->gamma;
    if (s->beta > m) m = s->beta;
    if (s->bias > m) m = s->bias;
    return m + 1;
}

/* skip has x's shape, or x's trailing dims (broadcast over the leading ones). */
static ss_status *norm_check_skip(const ss_kctx *k, const ss_tensor *x, const ss_tensor *skip,
                                  int64_t *skip_numel)
{
    int lead = x->ndim - skip->ndim;
    bool ok = lead >= 0;
    for (int i = 0; ok && i < skip->ndim; i++)
        ok = skip->dims[i] == x->dims[lead + i] ||
             (i < skip->ndim - 1 && skip->dims[i] == 1 && ss_op_dims_prod(skip->dims, 0, i) == 1);
    *skip_numel = ss_tensor_numel(skip);
    int64_t n = x->ndim ? x->dims[x->ndim - 1] : 1;
    if (!ok || *skip_numel == 0 || ss_tensor_numel(x) % *skip_numel || *skip_numel % n) {
        char a[128], b[128];
        return ss_op_err(k, SS_ERR_INVALID, "skip %s does not broadcast to input %s",
                         ss_shape_str(skip->ndim, skip->dims, b, sizeof b),
                         ss_shape_str(x->ndim, x->dims, a, sizeof a));
    }
    return NULL;
}

/* Mean and inverse std outputs: x's dims with the normalized ones set to 1. */
static void norm_stat_shape(ss_kctx *k, int j, const ss_tensor *x, int axis)
{
    ss_tensor *o = j >= 0 ? ss_contrib_out(k, j) : NULL;
    if (!o) return;
    o->dtype = SS_DT_FLOAT32;
    o->ndim = x->ndim;
    for (int d = 0; d < x->ndim; d++)
        o->dims[d] = d < axis ? x->dims[d] : 1;
}

static ss_status *norm_infer_f32(ss_kctx *k)
{
    static const char *const attrs[] = {"axis", "epsilon", "stash_type", NULL};
    norm_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->s = norm_spec_of(k->node->op_type);
    int max_in = norm_max_inputs(&p->s);
    ss_status *st = ss_op_expect_inputs(k, p->s.gamma + 1, max_in);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_contrib_expect_f32(k, max_in);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->ndim < 1) return ss_op_err(k, SS_ERR_INVALID, "input must have rank >= 1");
    int axis = x->ndim - 1;
    if (p->s.has_axis && (st = ss_op_attr_axis(k, "axis", -1, x->ndim, &axis))) return st;
    if (!p->s.has_axis && ss_onnx_attr_find(k->node, "axis"))
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "attribute 'axis' is not part of this op");
    p->n = ss_op_dims_prod(x->dims, axis, x->ndim);
    p->rows = ss_op_dims_prod(x->dims, 0, axis);
    /* onnxruntime's default for the skip variants is 1e-12 */
    p->eps = ss_onnx_attr_float(k->node, "epsilon", p->s.skip >= 0 ? 1e-12f : 1e-5f);
    p->skip_numel = 0;
    if (p->s.skip >= 0 && (st = norm_check_skip(k, x, k->in[p->s.skip], &p->skip_numel))) return st;
    if ((st = expect_vector(k, p->s.gamma, "gamma", p->n))) return st;
    if (p->s.beta >= 0 && (st = expect_vector(k, p->s.beta, "beta", p->n))) return st;
    if (p->s.bias >= 0 && (st = expect_vector(k, p->s.bias, "bias", p->n))) return st;
    ss_op_same_shape(k->out[0], x);
    norm_stat_shape(k, p->s.mean_out, x, axis);
    norm_stat_shape(k, p->s.inv_out, x, axis);
    ss_tensor *sum = p->s.sum_out >= 0 ? ss_contrib_out(k, p->s.sum_out) : NULL;
    if (sum) ss_op_same_shape(sum, x);
    int max_out = p->s.sum_out > p->s.inv_out ? p->s.sum_out + 1 : p->s.inv_out + 1;
    if (k->n_out > max_out)
        return ss_op_err(k, SS_ERR_INVALID, "has %d outputs, at most %d", k->n_out, max_out);
    return NULL;
}

/* y = normalize(y) * gamma + beta, in place; mean and 1/std in double. */
static void norm_row(const norm_plan *p, float *y, const float *gamma, const float *beta,
                     float *mean_out, float *inv_out)
{
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < p->n; i++)
        sum += y[i];
    double mean = p->s.rms ? 0 : sum / (double)p->n;
    for (int64_t i = 0; i < p->n; i++)
        sq += ((double)y[i] - mean) * ((double)y[i] - mean);
    double inv = 1.0 / sqrt(sq / (double)p->n + (double)p->eps);
    for (int64_t i = 0; i < p->n; i++)
        y[i] = (float)(((double)y[i] - mean) * inv) * gamma[i] + (beta ? beta[i] : 0.0f);
    if (mean_out) *mean_out = (float)mean;
    if (inv_out) *inv_out = (float)inv;
}

static const float *opt_data(const ss_kctx *k, int i)
{
    const ss_tensor *t = i >= 0 ? ss_contrib_in(k, i) : NULL;
    return t ? t->data : NULL;
}

static float *opt_out_data(const ss_kctx *k, int j)
{
    ss_tensor *t = j >= 0 ? ss_contrib_out(k, j) : NULL;
    return t ? t->data : NULL;
}

static ss_status *norm_run_f32(ss_kctx *k)
{
    const norm_plan *p = k->state;
    const float *x = k->in[0]->data, *skip = opt_data(k, p->s.skip);
    const float *gamma = opt_data(k, p->s.gamma), *beta = opt_data(k, p->s.beta);
    const float *bias = opt_data(k, p->s.bias);
    float *mean = opt_out_data(k, p->s.mean_out), *inv = opt_out_data(k, p->s.inv_out);
    float *sum = opt_out_data(k, p->s.sum_out);
    for (int64_t r = 0; r < p->rows; r++) {
        float *y = (float *)k->out[0]->data + r * p->n;
        const float *xr = x + r * p->n;
        const float *sr = skip ? skip + (r * p->n) % p->skip_numel : NULL;
        for (int64_t i = 0; i < p->n; i++)
            y[i] = xr[i] + (sr ? sr[i] : 0.0f) + (bias ? bias[i] : 0.0f);
        if (sum) memcpy(sum + r * p->n, y, sizeof(float) * (size_t)p->n);
        norm_row(p, y, gamma, beta, mean ? mean + r : NULL, inv ? inv + r : NULL);
    }
    return NULL;
}

SS_CONTRIB_F32(norm)

/* ------------------------------------------------------------------ EmbedLayerNormalization
 * BERT's embedding block: LayerNorm(word[ids] + position[pos] + segment[segment_ids]), pos the
 * token's index unless position_ids says otherwise; mask_index = the mask's 1s per row (values
 * other than 1 do not count; 0 with no mask), as onnxruntime's Attention takes it. */

enum {
    EMB_IDS,
    EMB_SEG,
    EMB_WORD,
    EMB_POS,
    EMB_SEG_TABLE,
    EMB_GAMMA,
    EMB_BETA,
    EMB_MASK,
    EMB_POS_IDS
};

static ss_status *embed_check_ids(const ss_kctx *k, int i, int64_t B, int64_t S, bool row_ok)
{
    const ss_tensor *t = ss_contrib_in(k, i);
    if (!t) return NULL;
    bool ok = t->dtype == SS_DT_INT32 && t->ndim == 2 && t->dims[1] == S &&
              (t->dims[0] == B || (row_ok && t->dims[0] == 1));
    return ok ? NULL : ss_op_err(k, SS_ERR_INVALID, "input %d must be int32 [B, S]", i);
}

/* The inputs every embedding op shares: ids [B, S]; word, position (and segment) tables [rows, D];
 * segment ids and the mask [B, S] (position ids [B or 1, S] when pos_ids >= 0); gamma and beta
 * [D]. */
static ss_status *embed_check_shapes(const ss_kctx *k, int pos_ids, int64_t *B, int64_t *S,
                                     int64_t *D)
{
    static const int required[] = {EMB_IDS, EMB_WORD, EMB_POS, EMB_GAMMA, EMB_BETA};
    for (int i = 0; i < 5; i++)
        if (!ss_contrib_in(k, required[i]))
            return ss_op_err(k, SS_ERR_INVALID, "required input %d is missing", required[i]);
    const ss_tensor *ids = k->in[EMB_IDS], *word = k->in[EMB_WORD], *pos = k->in[EMB_POS];
    const ss_tensor *seg = ss_contrib_in(k, EMB_SEG), *segt = ss_contrib_in(k, EMB_SEG_TABLE);
    if (ids->ndim != 2 || word->ndim != 2 || pos->ndim != 2 || word->dims[1] != pos->dims[1] ||
        (segt && (segt->ndim != 2 || segt->dims[1] != word->dims[1])) || !seg != !segt)
        return ss_op_err(k, SS_ERR_INVALID, "ids must be [B, S], the embeddings [rows, D]");
    *B = ids->dims[0], *S = ids->dims[1], *D = word->dims[1];
    ss_status *st;
    if ((st = embed_check_ids(k, EMB_IDS, *B, *S, false)) ||
        (st = embed_check_ids(k, EMB_SEG, *B, *S, false)) ||
        (st = embed_check_ids(k, EMB_MASK, *B, *S, false)) ||
        (pos_ids >= 0 && (st = embed_check_ids(k, pos_ids, *B, *S, true))))
        return st;
    if ((st = expect_vector(k, EMB_GAMMA, "gamma", *D)) ||
        (st = expect_vector(k, EMB_BETA, "beta", *D)))
        return st;
    return NULL;
}

/* The norm's plan and the outputs: [B, S, D], mask_index [B], and the sum before the norm. */
static ss_status *embed_plan(ss_kctx *k, int64_t B, int64_t S, int64_t D)
{
    norm_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->s = norm_spec_of("SkipLayerNormalization");
    p->rows = B * S, p->n = D;
    p->eps = ss_onnx_attr_float(k->node, "epsilon", 1e-12f);
    *k->out[0] = (ss_tensor){.dtype = SS_DT_FLOAT32, .ndim = 3, .dims = {B, S, D}};
    if (ss_contrib_out(k, 1))
        *k->out[1] = (ss_tensor){.dtype = SS_DT_INT32, .ndim = 1, .dims = {B}};
    if (ss_contrib_out(k, 2)) ss_op_same_shape(k->out[2], k->out[0]);
    return NULL;
}

static ss_status *embed_infer_f32(ss_kctx *k)
{
    static const char *const attrs[] = {"epsilon", "mask_index_type", NULL};
    ss_status *st = ss_op_expect_inputs(k, 1, 9);
    if (!st) st = ss_op_check_attrs(k, attrs);
    int64_t B, S, D;
    if (!st) st = embed_check_shapes(k, EMB_POS_IDS, &B, &S, &D);
    if (st) return st;
    for (int i = EMB_WORD; i <= EMB_BETA; i++)
        if (k->in[i] && k->in[i]->dtype != SS_DT_FLOAT32)
            return ss_op_err(k, SS_ERR_UNSUPPORTED, "input %d must be a float type", i);
    return embed_plan(k, B, S, D);
}

/* How an embedding op differs from EmbedLayerNormalization's layout (the EMB_ indices): its
 * position ids input (-1: none), and for quantized tables (word, position, segment, gamma, beta)
 * a scale and a zero point input each (-1: float32 tables). */
typedef struct {
    int pos_ids;
    int scale[5], zero[5];
} embed_layout;

static const embed_layout embed_f32 = {EMB_POS_IDS, {-1, -1, -1, -1, -1}, {-1, -1, -1, -1, -1}};

/* y[0..n) = (or +=, when add) input i's values from `off` on, dequantized as scale * (q - zero
 * point) when the layout quantizes it (which: its slot in the layout's scales). */
static void embed_values(const ss_kctx *k, const embed_layout *l, int which, int i, int64_t off,
                         int64_t n, bool add, float *y)
{
    const ss_tensor *t = k->in[i];
    if (l->scale[which] < 0) {
        const float *v = (const float *)t->data + off;
        for (int64_t j = 0; j < n; j++)
            y[j] = add ? y[j] + v[j] : v[j];
        return;
    }
    const ss_tensor *zt = ss_contrib_in(k, l->zero[which]);
    float scale = (float)ss_op_elem_f64(k->in[l->scale[which]], 0);
    int32_t zero = zt ? (int32_t)ss_op_elem_i64(zt, 0) : 0;
    for (int64_t j = 0; j < n; j++) {
        int32_t q = t->dtype == SS_DT_INT8 ? ((const int8_t *)t->data)[off + j]
                                           : ((const uint8_t *)t->data)[off + j];
        float v = scale * (float)(q - zero);
        y[j] = add ? y[j] + v : v;
    }
}

/* y = (or +=) row `id` of table input i ([rows, D]), or an error naming the table when out of
 * range. */
static ss_status *embed_row(const ss_kctx *k, const embed_layout *l, int which, int i, int64_t id,
                            bool add, float *y)
{
    const ss_tensor *t = k->in[i];
    if (id < 0 || id >= t->dims[0])
        return ss_op_err(k, SS_ERR_INVALID, "index %lld is outside input %d's %lld rows",
                         (long long)id, i, (long long)t->dims[0]);
    embed_values(k, l, which, i, id * t->dims[1], t->dims[1], add, y);
    return NULL;
}

/* word[id] + position[pos] + segment[segment id], added in that order. */
static ss_status *embed_token(const ss_kctx *k, const embed_layout *l, int64_t r, float *y)
{
    int64_t S = k->in[EMB_IDS]->dims[1], s = r % S;
    const ss_tensor *seg = ss_contrib_in(k, EMB_SEG);
    const ss_tensor *pid = l->pos_ids >= 0 ? ss_contrib_in(k, l->pos_ids) : NULL;
    int64_t pos = pid ? ((const int32_t *)pid->data)[pid->dims[0] == 1 ? s : r] : s;
    ss_status *st =
        embed_row(k, l, 0, EMB_WORD, ((const int32_t *)k->in[EMB_IDS]->data)[r], false, y);
    if (!st) st = embed_row(k, l, 1, EMB_POS, pos, true, y);
    if (!st && seg)
        st = embed_row(k, l, 2, EMB_SEG_TABLE, ((const int32_t *)seg->data)[r], true, y);
    return st;
}

/* Every token's embedding normalized with gamma and beta (float32), its sum before the norm into
 * output 2 when asked for, and mask_index: the mask's 1s per row (0 with no mask). */
static ss_status *embed_rows(ss_kctx *k, const embed_layout *l, const norm_plan *p,
                             const float *gamma, const float *beta)
{
    float *sum = opt_out_data(k, 2);
    for (int64_t r = 0; r < p->rows; r++) {
        float *y = (float *)k->out[0]->data + r * p->n;
        ss_status *st = embed_token(k, l, r, y);
        if (st) return st;
        if (sum) memcpy(sum + r * p->n, y, sizeof(float) * (size_t)p->n);
        norm_row(p, y, gamma, beta, NULL, NULL);
    }
    ss_tensor *mi = ss_contrib_out(k, 1);
    const ss_tensor *mask = ss_contrib_in(k, EMB_MASK);
    for (int64_t b = 0; mi && b < mi->dims[0]; b++) {
        int32_t n = 0;
        for (int64_t s = 0; mask && s < mask->dims[1]; s++)
            n += ((const int32_t *)mask->data)[b * mask->dims[1] + s] == 1; /* as onnxruntime */
        ((int32_t *)mi->data)[b] = n;
    }
    return NULL;
}

static ss_status *embed_run_f32(ss_kctx *k)
{
    return embed_rows(k, &embed_f32, k->state, k->in[EMB_GAMMA]->data, k->in[EMB_BETA]->data);
}

SS_CONTRIB_F32(embed)

/* ------------------------------------------------------------------ QEmbedLayerNormalization
 * onnxruntime's quantized EmbedLayerNormalization (its dynamic quantization of BERT): the word,
 * position and segment tables and gamma and beta are uint8/int8 with a scale and a zero point
 * each (inputs 8-17), dequantized as onnxruntime does (scale * (q - zero point) in float32) as
 * rows are read; positions are the tokens' indexes. Outputs as EmbedLayerNormalization's. */

enum { QEMB_SCALES = 8, QEMB_ZEROS = 13 };

static const embed_layout embed_q8 = {
    -1,
    {QEMB_SCALES, QEMB_SCALES + 1, QEMB_SCALES + 2, QEMB_SCALES + 3, QEMB_SCALES + 4},
    {QEMB_ZEROS, QEMB_ZEROS + 1, QEMB_ZEROS + 2, QEMB_ZEROS + 3, QEMB_ZEROS + 4}};

static ss_status *qembed_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"epsilon", NULL};
    if (k->n_in < 13 || k->n_in > 18) /* the segment inputs and the mask are optional */
        return ss_op_err(k, SS_ERR_INVALID, "has %d inputs, expects 13 to 18", k->n_in);
    ss_status *st = ss_op_check_attrs(k, attrs);
    int64_t B, S, D;
    if (!st) st = embed_check_shapes(k, -1, &B, &S, &D);
    if (st) return st;
    const embed_layout *l = &embed_q8;
    static const int tables[5] = {EMB_WORD, EMB_POS, EMB_SEG_TABLE, EMB_GAMMA, EMB_BETA};
    for (int t = 0; t < 5; t++) {
        const ss_tensor *q = ss_contrib_in(k, tables[t]);
        if (!q) continue; /* the segment table is optional */
        if (q->dtype != SS_DT_UINT8 && q->dtype != SS_DT_INT8)
            return ss_op_err(k, SS_ERR_UNSUPPORTED, "input %d is %s: uint8 or int8 only", tables[t],
                             ss_dtype_name(q->dtype));
        const ss_tensor *sc = ss_contrib_in(k, l->scale[t]), *zp = ss_contrib_in(k, l->zero[t]);
        if (!sc || sc->dtype != SS_DT_FLOAT32 || ss_tensor_numel(sc) != 1)
            return ss_op_err(k, SS_ERR_INVALID,
                             "input %d (the scale of input %d) must be one float32", l->scale[t],
                             tables[t]);
        if (zp && (zp->dtype != q->dtype || ss_tensor_numel(zp) != 1))
            return ss_op_err(k, SS_ERR_INVALID,
                             "input %d (the zero point of input %d) must be one %s", l->zero[t],
                             tables[t], ss_dtype_name(q->dtype));
    }
    if ((st = embed_plan(k, B, S, D))) return st;
    k->scratch_bytes = 2 * sizeof(float) * (size_t)D; /* gamma and beta, dequantized */
    return NULL;
}

static ss_status *qembed_run(ss_kctx *k)
{
    const norm_plan *p = k->state;
    float *gamma = k->scratch, *beta = gamma + p->n;
    embed_values(k, &embed_q8, 3, EMB_GAMMA, 0, p->n, false, gamma);
    embed_values(k, &embed_q8, 4, EMB_BETA, 0, p->n, false, beta);
    return embed_rows(k, &embed_q8, p, gamma, beta);
}

/* ------------------------------------------------------------------ FusedMatMul */

typedef struct {
    bool ta, tb, a_vec, b_vec;
    float alpha;
    int64_t M, N, K, n_batch;
    int batch_nd;
    int64_t batch[SS_MAX_DIMS], a_stride[SS_MAX_DIMS], b_stride[SS_MAX_DIMS];
    /* transBatchA/B: the operand with dim 0 moved to second-to-last, copied into the scratch */
    bool perm[2];
    ss_view view[2];
    size_t at[2]; /* floats into the scratch */
} fmm_plan;

/* With transBatch, operand i's dims [d0, d1, ..., dn-1] become [d1, ..., dn-2, d0, dn-1]: *eff
 * describes it and the plan's view copies it. */
static ss_status *fmm_trans_batch(const ss_kctx *k, fmm_plan *p, int i, ss_tensor *eff)
{
    const ss_tensor *t = k->in[i];
    *eff = *t;
    p->perm[i] = ss_onnx_attr_int(k->node, i ? "transBatchB" : "transBatchA", 0) != 0;
    if (!p->perm[i]) return NULL;
    if (t->ndim < 3)
        return ss_op_err(k, SS_ERR_INVALID, "transBatch needs input %d of rank >= 3", i);
    int64_t strides[SS_MAX_DIMS];
    ss_op_contiguous_strides(t->ndim, t->dims, strides);
    ss_view *v = &p->view[i];
    *v = (ss_view){.nd = t->ndim};
    for (int d = 0; d < t->ndim; d++) {
        int src = d < t->ndim - 2 ? d + 1 : d == t->ndim - 2 ? 0 : d;
        eff->dims[d] = v->dims[d] = t->dims[src];
        v->stride[d] = strides[src];
    }
    ss_view_simplify(v);
    return NULL;
}

/* Batch dims of a (rank >= 2 view) broadcast against b's: strides in matrices, 0 where 1. */
static ss_status *fmm_batch(const ss_kctx *k, fmm_plan *p, const ss_tensor *a, const ss_tensor *b,
                            int an, int bn, ss_tensor *out)
{
    int nd = (an > bn ? an : bn) - 2;
    p->batch_nd = nd;
    p->n_batch = 1;
    int64_t as = 1, bs = 1;
    for (int i = nd - 1; i >= 0; i--) {
        int ia = i - (nd - (an - 2)), ib = i - (nd - (bn - 2));
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return ss_op_err(k, SS_ERR_INVALID, "batch dims %lld and %lld do not broadcast",
                             (long long)da, (long long)db);
        p->batch[i] = da == 1 ? db : da;
        p->a_stride[i] = da == 1 ? 0 : as;
        p->b_stride[i] = db == 1 ? 0 : bs;
        as *= da, bs *= db;
        p->n_batch *= p->batch[i];
        out->dims[i] = p->batch[i];
    }
    out->ndim = nd;
    return NULL;
}

static ss_status *fmm_infer_f32(ss_kctx *k)
{
    static const char *const attrs[] = {"alpha",       "transA",      "transB",
                                        "transBatchA", "transBatchB", NULL};
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_contrib_expect_f32(k, 2);
    if (st) return st;
    if (k->in[0]->ndim < 1 || k->in[1]->ndim < 1)
        return ss_op_err(k, SS_ERR_INVALID, "inputs must be >= 1-D");
    fmm_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    ss_tensor ea, eb;
    if ((st = fmm_trans_batch(k, p, 0, &ea)) || (st = fmm_trans_batch(k, p, 1, &eb))) return st;
    const ss_tensor *a = &ea, *b = &eb;
    p->at[0] = 0;
    p->at[1] = p->perm[0] ? (size_t)ss_tensor_numel(a) : 0;
    k->scratch_bytes = sizeof(float) * (p->at[1] + (p->perm[1] ? (size_t)ss_tensor_numel(b) : 0));
    p->a_vec = a->ndim == 1, p->b_vec = b->ndim == 1;
    p->ta = !p->a_vec && ss_onnx_attr_int(k->node, "transA", 0);
    p->tb = !p->b_vec && ss_onnx_attr_int(k->node, "transB", 0);
    p->alpha = ss_onnx_attr_float(k->node, "alpha", 1.0f);
    int an = p->a_vec ? 2 : a->ndim, bn = p->b_vec ? 2 : b->ndim;
    int64_t ar = p->a_vec ? 1 : a->dims[an - 2], ac = a->dims[a->ndim - 1];
    int64_t br = b->dims[p->b_vec ? 0 : bn - 2], bc = p->b_vec ? 1 : b->dims[bn - 1];
    p->M = p->ta ? ac : ar, p->K = p->ta ? ar : ac;
    p->N = p->tb ? br : bc;
    if ((p->tb ? bc : br) != p->K)
        return ss_op_err(k, SS_ERR_INVALID, "inner dims differ: %lld and %lld", (long long)p->K,
                         (long long)(p->tb ? bc : br));
    ss_tensor *o = k->out[0];
    if ((st = fmm_batch(k, p, a, b, an, bn, o))) return st;
    o->dtype = SS_DT_FLOAT32;
    if (!p->a_vec) o->dims[o->ndim++] = p->M;
    if (!p->b_vec) o->dims[o->ndim++] = p->N;
    return NULL;
}

static ss_status *fmm_run_f32(ss_kctx *k)
{
    const fmm_plan *p = k->state;
    const float *ops[2];
    for (int i = 0; i < 2; i++) {
        ops[i] = k->in[i]->data;
        if (!p->perm[i]) continue;
        float *copy = (float *)k->scratch + p->at[i];
        ss_view_copy(&p->view[i], sizeof(float), ops[i], copy);
        ops[i] = copy;
    }
    const float *A = ops[0], *B = ops[1];
    float *C = k->out[0]->data;
    int64_t idx[SS_MAX_DIMS] = {0}, mk = p->M * p->K, kn = p->K * p->N;
    for (int64_t bi = 0; bi < p->n_batch; bi++) {
        int64_t ao = 0, bo = 0;
        for (int d = 0; d < p->batch_nd; d++)
            ao += idx[d] * p->a_stride[d], bo += idx[d] * p->b_stride[d];
        ss_op_blas_gemm(SS_DT_FLOAT32, p->ta, p->tb, p->M, p->N, p->K, p->alpha, A + ao * mk,
                        p->ta ? p->M : p->K, B + bo * kn, p->tb ? p->K : p->N, 0.0f,
                        C + bi * p->M * p->N);
        for (int d = p->batch_nd - 1; d >= 0 && ++idx[d] == p->batch[d]; d--)
            idx[d] = 0;
    }
    return NULL;
}

SS_CONTRIB_F32(fmm)

/* ------------------------------------------------------------------ MatMulNBits */

typedef struct {
    int64_t M, N, K, blocks, block, blob;
    int bits;
    bool packed_zp;    /* zero points are uint8 bit-packed like B (else float, one per block) */
    bool dequant;      /* weights dequantized at plan time, after this struct */
    size_t w_offset;   /* weights in the scratch when not */
    const void *q8;    /* or requantized to gemm_q8.h's int8 weights (nbits_q8_plan) */
    const void *q4;    /* or the 4-bit values repacked for gemm_q4.h (nbits_q4_plan) */
    const float *f32p; /* or dequantized into gemm_f32p.h's packed float32 panels */
    ss_packed *wref;   /* either: the session's copy, or wowned */
    void *wowned;
    int threads; /* of the pool, for either */
} nbits_plan;

static void nbits_release(void *state)
{
    nbits_plan *p = state;
    ss_packed_release(p->wref);
    free(p->wowned);
    p->wref = NULL, p->wowned = NULL, p->q8 = NULL, p->q4 = NULL, p->f32p = NULL;
}

/* The session keeps the int8 (kind 1), packed float32 (kind 2) or 4-bit (kind 3) copy of a node's
 * weights, keyed by B's bytes with its shape, scales and zero points, so a re-plan for another M
 * (a new batch or sequence length) finds it instead of dequantizing again. 4-bit weights keep one
 * copy (kind 3) for every row count; under SHARDSERVE_NBITS_COPY=int8 a session planned at both
 * few and many rows keeps two (kinds 3 and 1). */
typedef struct {
    int64_t K, N, bits, block, kind, scales, zp;
} nbits_layout;

static bool same_nbits(const void *a, const void *b)
{
    return !memcmp(a, b, sizeof(nbits_layout));
}

static const char *nbits_key(ss_kctx *k)
{
    return (const char *)ss_kctx_value(k, 1)->data + 6; /* matmul.c 1-3, conv.c 4, q8mm.c 5 */
}

static const void *nbits_find(ss_kctx *k, nbits_plan *p, int kind, nbits_layout *lay)
{
    const ss_tensor *zp = k->n_in > 3 && k->in[3] ? ss_kctx_value(k, 3) : NULL;
    *lay = (nbits_layout){p->K,
                          p->N,
                          p->bits,
                          p->block,
                          kind,
                          (int64_t)(intptr_t)ss_kctx_value(k, 2)->data,
                          zp ? (int64_t)(intptr_t)zp->data : 0};
    p->wref = ss_kctx_packed_find(k, nbits_key(k), lay, same_nbits);
    return p->wref ? ss_packed_data(p->wref) : NULL;
}

static void nbits_keep(ss_kctx *k, nbits_plan *p, const nbits_layout *lay, void *data)
{
    p->wref = ss_kctx_packed_add(k, nbits_key(k), lay, sizeof *lay, data);
    if (!p->wref) p->wowned = data;
}

/* With a packed copy in hand: B's file-mapped pages go, the pool is reserved. */
static void nbits_packed_done(ss_kctx *k, nbits_plan *p)
{
    ss_kctx_drop_const_pages(k, 1);
    int t = ss_kctx_threads(k);
    p->threads = t > 1 ? ss_gemm_pool_reserve(t) : 1;
}

static ss_status *nbits_check_inputs(const ss_kctx *k, nbits_plan *p)
{
    const ss_tensor *b = k->in[1], *sc = k->in[2], *zp = ss_contrib_in(k, 3);
    if (b->dtype != SS_DT_UINT8 || ss_tensor_numel(b) != p->N * p->blocks * p->blob)
        return ss_op_err(k, SS_ERR_INVALID,
                         "B must be uint8 [N, blocks, blob] = [%lld, %lld, %lld]", (long long)p->N,
                         (long long)p->blocks, (long long)p->blob);
    if (sc->dtype != SS_DT_FLOAT32 || ss_tensor_numel(sc) != p->N * p->blocks)
        return ss_op_err(k, SS_ERR_INVALID, "scales must hold N * blocks = %lld values",
                         (long long)(p->N * p->blocks));
    if (ss_contrib_in(k, 4))
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "input g_idx (act-order) is not supported");
    if (!zp) return expect_vector(k, 5, "bias", p->N);
    p->packed_zp = zp->dtype == SS_DT_UINT8;
    int64_t want = p->packed_zp ? p->N * ((p->blocks * p->bits + 7) / 8) : p->N * p->blocks;
    if ((!p->packed_zp && zp->dtype != SS_DT_FLOAT32) || ss_tensor_numel(zp) != want)
        return ss_op_err(k, SS_ERR_INVALID,
                         "zero_points must be uint8 packed or float, %lld values", (long long)want);
    return expect_vector(k, 5, "bias", p->N);
}

/* The bits-wide field e of a packed byte array (elements fill each byte from the low bits). */
static int nbits_field(const uint8_t *bytes, int64_t e, int bits)
{
    int64_t bit = e * bits;
    return (bytes[bit / 8] >> (bit % 8)) & ((1 << bits) - 1);
}

/* Row n of W: W[n, k] = (q - zero_point) * scale, for k < K (4-bit and 8-bit values unpacked a
 * byte at a time). */
static void nbits_dequant_row(const nbits_plan *p, const ss_tensor *b, const ss_tensor *sc,
                              const ss_tensor *zp, int64_t n, float *w)
{
    const uint8_t *q = b->data;
    const float *scale = sc->data;
    int64_t zp_row = (p->blocks * p->bits + 7) / 8;
    for (int64_t blk = 0; blk < p->blocks; blk++) {
        float s = scale[n * p->blocks + blk], z = (float)(1 << (p->bits - 1));
        if (zp && p->packed_zp)
            z = (float)nbits_field((const uint8_t *)zp->data + n * zp_row, blk, p->bits);
        else if (zp)
            z = ((const float *)zp->data)[n * p->blocks + blk];
        const uint8_t *blob = q + (n * p->blocks + blk) * p->blob;
        int64_t k0 = blk * p->block, len = p->K - k0 < p->block ? p->K - k0 : p->block;
        float *o = w + k0;
        if (p->bits == 4 && len == p->block) {
            for (int64_t i = 0; i < len / 2; i++) {
                o[2 * i] = ((float)(blob[i] & 15) - z) * s;
                o[2 * i + 1] = ((float)(blob[i] >> 4) - z) * s;
            }
        } else if (p->bits == 8) {
            for (int64_t i = 0; i < len; i++)
                o[i] = ((float)blob[i] - z) * s;
        } else {
            for (int64_t i = 0; i < len; i++)
                o[i] = ((float)nbits_field(blob, i, p->bits) - z) * s;
        }
    }
}

/* W, [N, K]. */
static void nbits_dequant(const nbits_plan *p, const ss_tensor *b, const ss_tensor *sc,
                          const ss_tensor *zp, float *w)
{
    for (int64_t n = 0; n < p->N; n++)
        nbits_dequant_row(p, b, sc, zp, n, w + n * p->K);
}

static bool nbits_const_weights(ss_kctx *k)
{
    for (int i = 1; i <= 3 && i < k->n_in; i++) {
        if (!k->in[i]) continue;
        const ss_tensor *v = ss_kctx_value(k, i);
        /* a float16 scale is stored unconverted: dequantize those at run time */
        if (!v || !v->data || v->dtype != k->in[i]->dtype) return false;
    }
    return true;
}

/* Int8 weights instead of float32 ones: where the node allows int8 math (accuracy_level 4, as
 * onnxruntime reads it) or the session holds weights as int8 (--weights int8), on a CPU with
 * AVX512-VNNI, constant weights are dequantized once and requantized to gemm_q8.h's layout (int8,
 * a scale per column), activations quantized per row on every call: a byte per weight instead
 * of float32's four (the 2-8 bit values themselves are not kept), the int8 kernel's speed, and
 * the int8 path's error (relative L2 ~5e-3; onnxruntime's level 4 quantizes activations per
 * block and keeps the 4-bit weights, so the two differ by that much, not bit for bit). */
static bool nbits_wants_q8(const ss_kctx *k, const nbits_plan *p)
{
    bool asked =
        k->weights == SS_WEIGHTS_INT8 || ss_onnx_attr_int(k->node, "accuracy_level", 0) == 4;
    return asked && ss_gemm_q8_supported() && ss_kernels_mode() != SS_KERNELS_BLAS &&
           p->K <= SS_GEMM_Q8_MAX_K && p->M >= 1;
}

/* A row of W at a time is dequantized (K floats) and packed as column n of the int8 copy. */
static ss_status *nbits_q8_plan(ss_kctx *k, nbits_plan *p)
{
    nbits_layout lay;
    if (!(p->q8 = nbits_find(k, p, 1, &lay))) {
        float *w = malloc(sizeof(float) * (size_t)p->K);
        void *q8 = ss_gemm_q8_alloc(p->K, p->N);
        if (!w || !q8) {
            free(w);
            free(q8);
            return ss_op_err(k, SS_ERR_NOMEM, "cannot allocate %zu bytes of int8 weights",
                             ss_gemm_q8_packed_bytes(p->K, p->N));
        }
        const ss_tensor *zp = k->n_in > 3 && k->in[3] ? ss_kctx_value(k, 3) : NULL;
        ss_gemm_q8_pack_begin(p->K, p->N, q8);
        for (int64_t n = 0; n < p->N; n++) { /* row n of W is column n of B = W^T */
            nbits_dequant_row(p, ss_kctx_value(k, 1), ss_kctx_value(k, 2), zp, n, w);
            ss_gemm_q8_pack_column(w, p->K, p->N, n, q8);
        }
        free(w);
        p->q8 = q8;
        nbits_keep(k, p, &lay, q8);
    }
    nbits_packed_done(k, p);
    k->scratch_bytes = ss_gemm_q8_scratch(p->M, p->K);
    SS_DEBUG("%s: int8 VNNI kernel on requantized %d-bit weights", k->node_name, p->bits);
    return NULL;
}

/* 4-bit weights with integer zero points go to gemm_q4.h, which reads the 4-bit values themselves
 * (0.66 bytes a weight at block 32, one copy for every row count) instead of gemm_q8.h's byte a
 * weight. Many rows run faster on the int8 copy (it converts once per output, not per block:
 * mlp4bit at 1 thread, ms, q4 vs q8: 8 rows 3.4 vs 2.9, 32 rows 11.5 vs 7.0), but a session that
 * plans both few rows (decode) and many (prefill) then holds both copies, 1.66 bytes a weight, 3x
 * the model's: SHARDSERVE_NBITS_COPY=int8 chooses that (the int8 copy above 4 rows on 1 thread,
 * above 2 on more), for speed over memory. */
static bool nbits_int8_copy_asked(void)
{
    static int asked = -1;
    if (asked < 0) {
        const char *e = getenv("SHARDSERVE_NBITS_COPY");
        asked = e && !strcmp(e, "int8");
    }
    return asked;
}

static bool nbits_wants_q4(const ss_kctx *k, const nbits_plan *p)
{
    const ss_tensor *zp = k->n_in > 3 && k->in[3] ? k->in[3] : NULL;
    int64_t max_m = !nbits_int8_copy_asked() ? INT64_MAX : ss_kctx_threads(k) > 1 ? 2 : 4;
    return nbits_wants_q8(k, p) && p->bits == 4 && p->M <= max_m && ss_gemm_q4_block_ok(p->block) &&
           (!zp || p->packed_zp);
}

/* A row of W's 4-bit values, scales and zero points at a time, packed as column n. */
static ss_status *nbits_q4_plan(ss_kctx *k, nbits_plan *p)
{
    nbits_layout lay;
    if (!(p->q4 = nbits_find(k, p, 3, &lay))) {
        uint8_t *q = malloc((size_t)p->K + (size_t)p->blocks);
        void *packed = ss_gemm_q4_alloc(p->K, p->N, p->block);
        if (!q || !packed) {
            free(q);
            free(packed);
            return ss_op_err(k, SS_ERR_NOMEM, "cannot allocate %zu bytes of 4-bit weights",
                             ss_gemm_q4_packed_bytes(p->K, p->N, p->block));
        }
        uint8_t *zero = q + p->K;
        const ss_tensor *zp = k->n_in > 3 && k->in[3] ? ss_kctx_value(k, 3) : NULL;
        const uint8_t *b = ss_kctx_value(k, 1)->data;
        const float *scale = ss_kctx_value(k, 2)->data;
        int64_t zp_row = (p->blocks * 4 + 7) / 8;
        for (int64_t n = 0; n < p->N; n++) {
            for (int64_t kk = 0; kk < p->K; kk++)
                q[kk] = (uint8_t)nbits_field(b + n * p->blocks * p->blob, kk, 4);
            for (int64_t blk = 0; blk < p->blocks; blk++)
                zero[blk] =
                    zp ? (uint8_t)nbits_field((const uint8_t *)zp->data + n * zp_row, blk, 4) : 8;
            ss_gemm_q4_pack_column(q, scale + n * p->blocks, zero, p->K, p->N, p->block, n, packed);
        }
        free(q);
        p->q4 = packed;
        nbits_keep(k, p, &lay, packed);
    }
    nbits_packed_done(k, p);
    k->scratch_bytes = ss_gemm_q4_scratch(p->M, p->K, p->block);
    SS_DEBUG("%s: VNNI kernel on the 4-bit weights as stored", k->node_name);
    return NULL;
}

/* Exact float32 weights (accuracy_level 0) for the packed float32 kernel MatMul uses on [N, K]
 * weights, rather than OpenBLAS on the dequantized copy (71.6 vs ~33 ms for the 4 x 4096x4096
 * MLP at batch 32): W dequantized once into a buffer, packed, the buffer freed. */
static ss_status *nbits_f32p_plan(ss_kctx *k, nbits_plan *p)
{
    nbits_layout lay;
    if (!(p->f32p = nbits_find(k, p, 2, &lay))) {
        /* a panel of weight rows at a time: no float32 copy of the whole matrix beside the
         * packed one */
        int64_t rows = SS_GEMM_F32P_PANEL;
        float *w = malloc(sizeof(float) * (size_t)(rows * p->K));
        float *packed = ss_gemm_f32p_alloc(p->K, p->N);
        if (!w || !packed) {
            free(w);
            free(packed);
            return ss_op_err(k, SS_ERR_NOMEM, "cannot allocate %zu bytes of float32 weights",
                             ss_gemm_f32p_packed_bytes(p->K, p->N));
        }
        const ss_tensor *zp = k->n_in > 3 && k->in[3] ? ss_kctx_value(k, 3) : NULL;
        for (int64_t n0 = 0, panel = 0; n0 < p->N; n0 += rows, panel++) {
            for (int64_t n = n0; n < n0 + rows && n < p->N; n++)
                nbits_dequant_row(p, ss_kctx_value(k, 1), ss_kctx_value(k, 2), zp, n,
                                  w + (n - n0) * p->K);
            ss_gemm_f32p_pack_panel(w, p->K, p->N, p->K, true, panel, packed); /* [N, K] */
        }
        free(w);
        p->f32p = packed;
        nbits_keep(k, p, &lay, packed);
    }
    nbits_packed_done(k, p);
    return NULL;
}

static ss_status *nbits_infer_f32(ss_kctx *k)
{
    static const char *const attrs[] = {"K", "N", "bits", "block_size", "accuracy_level", NULL};
    ss_status *st = ss_op_expect_inputs(k, 3, 6);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_contrib_expect_f32(k, 1);
    if (st) return st;
    int64_t K = ss_onnx_attr_int(k->node, "K", 0), N = ss_onnx_attr_int(k->node, "N", 0);
    int64_t bits = ss_onnx_attr_int(k->node, "bits", 4);
    int64_t block = ss_onnx_attr_int(k->node, "block_size", 0);
    if (bits != 2 && bits != 4 && bits != 8)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "bits %lld (supported: 2, 4, 8)", (long long)bits);
    if (K < 1 || N < 1 || block < 16 || (block & (block - 1)))
        return ss_op_err(k, SS_ERR_INVALID, "K, N must be >= 1, block_size a power of 2 >= 16");
    const ss_tensor *a = k->in[0];
    if (a->ndim < 1 || a->dims[a->ndim - 1] != K)
        return ss_op_err(k, SS_ERR_INVALID, "A's last dim must be K = %lld", (long long)K);
    nbits_plan tmp = {.N = N, .K = K, .bits = (int)bits, .block = block};
    tmp.blocks = (K + block - 1) / block;
    tmp.blob = block * bits / 8;
    tmp.M = ss_tensor_numel(a) / K;
    if ((st = nbits_check_inputs(k, &tmp))) return st;
    tmp.dequant = nbits_const_weights(k);
    size_t wbytes = sizeof(float) * (size_t)(N * K);
    ss_op_same_shape(k->out[0], a);
    k->out[0]->dims[a->ndim - 1] = N;
    /* constant weights: int8 where allowed, else packed float32 where that kernel runs */
    bool f32p =
        ss_kernels_mode() != SS_KERNELS_BLAS &&
        ss_gemm_f32p_usable(tmp.M < SS_GEMM_F32P_MIN_M ? tmp.M : SS_GEMM_F32P_MIN_M, K, N, true);
    ss_status *(*packed)(ss_kctx *, nbits_plan *) = !tmp.dequant              ? NULL
                                                    : nbits_wants_q4(k, &tmp) ? nbits_q4_plan
                                                    : nbits_wants_q8(k, &tmp) ? nbits_q8_plan
                                                    : f32p                    ? nbits_f32p_plan
                                                                              : NULL;
    if (packed) {
        nbits_plan *p = ss_op_state_alloc(k, sizeof *p);
        if (!p) return ss_op_oom();
        *p = tmp;
        p->dequant = false;
        return packed(k, p);
    }
    nbits_plan *p = ss_op_state_alloc(k, sizeof *p + (tmp.dequant ? wbytes : 0));
    if (!p) return ss_op_oom();
    *p = tmp;
    if (p->dequant)
        nbits_dequant(p, ss_kctx_value(k, 1), ss_kctx_value(k, 2),
                      k->n_in > 3 && k->in[3] ? ss_kctx_value(k, 3) : NULL, (float *)(p + 1));
    else
        k->scratch_bytes = wbytes;
    return NULL;
}

static ss_status *nbits_run_f32(ss_kctx *k)
{
    const nbits_plan *p = k->state;
    if (p->q8 || p->q4 || p->f32p) {
        float *y = k->out[0]->data;
        if (p->q4)
            ss_gemm_q4(p->M, p->N, p->K, p->block, k->in[0]->data, p->K, p->q4, y, p->N, p->threads,
                       k->scratch);
        else if (p->q8)
            ss_gemm_q8(p->M, p->N, p->K, k->in[0]->data, p->K, p->q8, false, y, p->N, p->threads,
                       k->scratch);
        else
            ss_gemm_f32p(p->M, p->N, p->K, k->in[0]->data, p->K, p->f32p, false, y, p->N,
                         p->threads);
        const float *bias = opt_data(k, 5);
        for (int64_t m = 0; bias && m < p->M; m++)
            for (int64_t n = 0; n < p->N; n++)
                y[m * p->N + n] += bias[n];
        return NULL;
    }
    float *w = p->dequant ? (float *)(p + 1) : k->scratch;
    if (!p->dequant) nbits_dequant(p, k->in[1], k->in[2], ss_contrib_in(k, 3), w);
    float *y = k->out[0]->data;
    ss_op_blas_gemm(SS_DT_FLOAT32, false, true, p->M, p->N, p->K, 1.0f, k->in[0]->data, p->K, w,
                    p->K, 0.0f, y);
    const float *bias = opt_data(k, 5);
    for (int64_t m = 0; bias && m < p->M; m++)
        for (int64_t n = 0; n < p->N; n++)
            y[m * p->N + n] += bias[n];
    return NULL;
}

SS_CONTRIB_F32(nbits)

const ss_op_def ss_ops_contrib[] = {
    {SS_DOMAIN_MS, "Gelu", 1, 1, act_infer, act_run, SS_OPF_ELEMENTWISE, NULL},
    {SS_DOMAIN_MS, "QuickGelu", 1, 1, act_infer, act_run, SS_OPF_ELEMENTWISE, NULL},
    {SS_DOMAIN_MS, "FastGelu", 1, 1, act_infer, act_run, 0, NULL},
    {SS_DOMAIN_MS, "BiasGelu", 1, 1, act_infer, act_run, 0, NULL},
    {SS_DOMAIN_MS, "BiasAdd", 1, 1, act_infer, act_run, 0, NULL},
    {SS_DOMAIN_MS, "SkipLayerNormalization", 1, 1, norm_infer, norm_run, 0, NULL},
    {SS_DOMAIN_MS, "SkipSimplifiedLayerNormalization", 1, 1, norm_infer, norm_run, 0, NULL},
    /* onnxruntime registers these two in the default domain, from opset 1 */
    {"", "SimplifiedLayerNormalization", 1, 21, norm_infer, norm_run, 0, NULL},
    {"", "LayerNormalization", 1, 16, norm_infer, norm_run, 0, NULL},
    {SS_DOMAIN_MS, "EmbedLayerNormalization", 1, 1, embed_infer, embed_run, 0, NULL},
    {SS_DOMAIN_MS, "QEmbedLayerNormalization", 1, 1, qembed_infer, qembed_run, 0, NULL},
    {SS_DOMAIN_MS, "FusedMatMul", 1, 1, fmm_infer, fmm_run, 0, NULL},
    {SS_DOMAIN_MS, "TransposeMatMul", 1, 1, fmm_infer, fmm_run, 0, NULL}, /* its older name */
    {SS_DOMAIN_MS, "MatMulNBits", 1, 1, nbits_infer, nbits_run, 0, nbits_release},
    {NULL, NULL, 0, 0, NULL, NULL, 0, NULL},
};
