/*
 * Element-wise epilogues (see fusion.h): the steps of a fused chain and the one pass that runs
 * them. The pass walks y in blocks of EP_BLOCK floats and applies every step to a block before
 * the next block, so the chain reads and writes y once, however many nodes it replaced. The
 * block loop is compiled per ISA (isa.h). Operands that vary along an axis are resolved once per
 * row of the view below, so the inner loops are plain streams.
 *
 * View: y as rows of L contiguous floats. With every operand varying along an axis a < rank-1
 * (per-channel NCHW constants), a row is everything after the deepest such axis, and each operand
 * is one scalar per row; with an operand along the last axis (a MatMul bias), a row is the last
 * axis and that operand is a vector over it.
 */
#include "fusion.h"

#include "common.h"
#include "gemm_kernel.h"
#include "isa.h"
#include "vmath.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EP_MAX_STEPS 16
#define EP_BLOCK 1024
/* Below this many elements the pass stays on the calling thread (as the element-wise ops do). */
#define EP_PAR_MIN (1 << 16)

typedef enum {
    ST_ADD,
    ST_SUB,
    ST_RSUB,
    ST_MUL,
    ST_DIV,
    ST_RDIV,
    ST_MAX,
    ST_MIN,    /* binary, operand v */
    ST_AFFINE, /* y * v + w */
    ST_RELU,
    ST_LEAKY,
    ST_CLIP,
    ST_HSIG,
    ST_HSWISH,
    ST_SIGMOID,
    ST_XCLIP,
    ST_GELU,      /* y * (erf(y / a) + b) */
    ST_GELU_TANH, /* 0.5 y (1 + tanh(sqrt(2 / pi) (y + 0.044715 y^3))) */
} step_kind;

typedef struct {
    step_kind kind;
    float a, b, c;        /* scalar parameters (alpha, bounds) and the scalar operands v, w */
    const float *pv, *pw; /* operands along `axis` (NULL: the scalars a and b) */
    int axis;             /* -1: scalar operands */
    int64_t div;          /* per-row operand: index = (row / div) % dims[axis] */
    bool per_col;         /* operand along the last axis: pv[col] */
    const ss_tensor *t;   /* operand of y's shape, read at run time (NULL: none) */
    const ss_tensor *vt;  /* operand along `axis` (-1: one value) computed at run time */
    float *own;           /* operand storage this epilogue owns (BatchNormalization) */
} step;

struct ss_epilogue {
    int ndim;
    int64_t dims[SS_MAX_DIMS], numel, L, rows;
    int threads;
    bool claimed; /* the producer's kernel runs the steps (ss_epilogue_claim) */
    int n;
    step steps[EP_MAX_STEPS];
};

static int fusion_off = -1; /* -1: not read yet */

void ss_fusion_enable(bool on)
{
    fusion_off = !on;
}

bool ss_fusion_enabled(void)
{
    if (fusion_off < 0) {
        const char *e = getenv("SHARDSERVE_FUSION");
        fusion_off = e && !strcmp(e, "0");
    }
    return !fusion_off;
}

ss_epilogue *ss_epilogue_new(const ss_tensor *y, int threads)
{
    ss_epilogue *ep = calloc(1, sizeof *ep);
    if (!ep) return NULL;
    ep->threads =
        threads > 1 && ss_tensor_numel(y) >= EP_PAR_MIN ? ss_gemm_pool_reserve(threads) : 1;
    ep->ndim = y->ndim;
    memcpy(ep->dims, y->dims, sizeof ep->dims);
    ep->numel = ss_tensor_numel(y);
    return ep;
}

void ss_epilogue_free(ss_epilogue *ep)
{
    for (int i = 0; ep && i < ep->n; i++)
        free(ep->steps[i].own);
    free(ep);
}

int ss_epilogue_steps(const ss_epilogue *ep)
{
    return ep ? ep->n : 0;
}

/* The row view for the steps so far (see the header comment). */
static void ep_view(ss_epilogue *ep)
{
    int deep = -1;
    for (int i = 0; i < ep->n; i++)
        if (ep->steps[i].axis > deep) deep = ep->steps[i].axis;
    int last = ep->ndim - 1, rowlast = deep >= 0 && deep == last ? last - 1 : deep;
    ep->L = 1;
    for (int d = rowlast + 1; d <= last; d++)
        ep->L *= ep->dims[d];
    ep->rows = ep->L ? ep->numel / ep->L : 0;
    for (int i = 0; i < ep->n; i++) {
        step *s = &ep->steps[i];
        s->per_col = s->axis >= 0 && s->axis == last && rowlast == last - 1;
        s->div = 1;
        for (int d = s->axis + 1; s->axis >= 0 && !s->per_col && d <= rowlast; d++)
            s->div *= ep->dims[d];
    }
}

static bool ep_push(ss_epilogue *ep, step s)
{
    if (ep->n == EP_MAX_STEPS) {
        free(s.own);
        return false;
    }
    ep->steps[ep->n++] = s;
    ep_view(ep);
    return true;
}

/* The axis of y a constant c varies along without changing y's shape: -1 for a scalar, -2 when
 * it is no such operand (two varying axes, a size that is not y's, a higher rank). */
static int const_axis(const ss_epilogue *ep, const ss_tensor *c)
{
    if (c->ndim > ep->ndim) return -2;
    int axis = -1;
    for (int j = 0; j < c->ndim; j++) {
        int ya = ep->ndim - c->ndim + j;
        if (c->dims[j] == 1) continue;
        if (c->dims[j] != ep->dims[ya] || axis >= 0) return -2;
        axis = ya;
    }
    return axis;
}

static bool same_shape(const ss_epilogue *ep, const ss_tensor *t)
{
    if (t->dtype != SS_DT_FLOAT32 || t->ndim != ep->ndim) return false;
    for (int d = 0; d < t->ndim; d++)
        if (t->dims[d] != ep->dims[d]) return false;
    return true;
}

/* A float32 constant scalar input (Clip's bounds), or dflt when omitted. */
static bool const_scalar(int n_in, ss_tensor *const *in, int i, float dflt, float *out)
{
    *out = dflt;
    if (i >= n_in || !in[i]) return true;
    if (in[i]->dtype != SS_DT_FLOAT32 || !in[i]->data || ss_tensor_numel(in[i]) != 1) return false;
    *out = *(const float *)in[i]->data;
    return true;
}

static bool add_binary(ss_epilogue *ep, const char *op, ss_tensor *const *in, const bool *ready,
                       int chain)
{
    static const char *const names[] = {"Add", "Sub", "Mul", "Div", "Max", "Min"};
    static const step_kind fwd[] = {ST_ADD, ST_SUB, ST_MUL, ST_DIV, ST_MAX, ST_MIN};
    static const step_kind rev[] = {ST_ADD, ST_RSUB, ST_MUL, ST_RDIV, ST_MAX, ST_MIN};
    int k = -1;
    for (int i = 0; i < 6 && k < 0; i++)
        if (!strcmp(op, names[i])) k = i;
    const ss_tensor *o = in[1 - chain];
    if (k < 0 || !o || o->dtype != SS_DT_FLOAT32) return false;
    step s = {.kind = chain == 0 ? fwd[k] : rev[k], .axis = -1};
    if (o->data) {
        int axis = const_axis(ep, o);
        if (axis < -1 || ss_tensor_numel(o) < 1) return false;
        s.axis = axis;
        if (axis < 0)
            s.a = *(const float *)o->data;
        else
            s.pv = o->data;
    } else if (ready[1 - chain] && same_shape(ep, o)) {
        s.t = o;
    } else if (ready[1 - chain] && const_axis(ep, o) >= 0) {
        s.axis = const_axis(ep, o); /* an attention mask [batch or 1, 1, 1, keys] */
        s.vt = o;
    } else if (ready[1 - chain] && const_axis(ep, o) == -1 && ss_tensor_numel(o) == 1) {
        s.vt = o; /* a scale computed at run time (quantize_dynamic's activation x weight scale) */
    } else {
        return false;
    }
    return ep_push(ep, s);
}

/* Inference BatchNormalization as y * a + b per channel, a = scale / sqrt(var + eps). */
static bool add_batchnorm(ss_epilogue *ep, const ss_onnx_node *nd, int n_in, ss_tensor *const *in,
                          int chain)
{
    if (chain != 0 || n_in != 5 || nd->n_output != 1 || ep->ndim < 2 ||
        ss_onnx_attr_int(nd, "training_mode", 0) != 0)
        return false;
    int64_t C = ep->dims[1];
    for (int i = 1; i < 5; i++)
        if (!in[i] || !in[i]->data || in[i]->dtype != SS_DT_FLOAT32 || in[i]->ndim != 1 ||
            in[i]->dims[0] != C)
            return false;
    float eps = ss_onnx_attr_float(nd, "epsilon", 1e-5f);
    float *ab = malloc(sizeof(float) * (size_t)(2 * C + 1));
    if (!ab) return false;
    const float *sc = in[1]->data, *bias = in[2]->data, *mean = in[3]->data, *var = in[4]->data;
    for (int64_t c = 0; c < C; c++) {
        ab[c] = sc[c] / sqrtf(var[c] + eps);
        ab[C + c] = bias[c] - mean[c] * ab[c];
    }
    step s = {.kind = ST_AFFINE, .axis = 1, .pv = ab, .pw = ab + C, .own = ab};
    return ep_push(ep, s);
}

bool ss_epilogue_add_node(ss_epilogue *ep, const ss_onnx_node *nd, int64_t opset, int n_in,
                          ss_tensor *const *in, const bool *ready, int chain, const ss_tensor *out)
{
    const char *op = nd->op_type;
    if ((nd->domain && nd->domain[0]) || !out || !same_shape(ep, out) || !in[chain] ||
        !same_shape(ep, in[chain]))
        return false;
    if (!strcmp(op, "BatchNormalization")) return add_batchnorm(ep, nd, n_in, in, chain);
    if (n_in == 2) return add_binary(ep, op, in, ready, chain);
    if (chain != 0) return false;
    step s = {.axis = -1};
    if (!strcmp(op, "Relu") && n_in == 1) {
        s.kind = ST_RELU;
    } else if (!strcmp(op, "LeakyRelu") && n_in == 1) {
        s.kind = ST_LEAKY, s.a = ss_onnx_attr_float(nd, "alpha", 0.01f);
    } else if (!strcmp(op, "Sigmoid") && n_in == 1) {
        s.kind = ST_SIGMOID;
    } else if (!strcmp(op, "HardSwish") && n_in == 1) {
        s.kind = ST_HSWISH;
    } else if (!strcmp(op, "HardSigmoid") && n_in == 1) {
        s.kind = ST_HSIG, s.a = ss_onnx_attr_float(nd, "alpha", 0.2f);
        s.b = ss_onnx_attr_float(nd, "beta", 0.5f);
    } else if (!strcmp(op, "Clip") && opset < 11 && n_in == 1) {
        s.kind = ST_CLIP, s.a = ss_onnx_attr_float(nd, "min", -3.402823466e+38f);
        s.b = ss_onnx_attr_float(nd, "max", 3.402823466e+38f);
    } else if (!strcmp(op, "Clip") && opset >= 11) {
        s.kind = ST_CLIP;
        if (!const_scalar(n_in, in, 1, -INFINITY, &s.a) ||
            !const_scalar(n_in, in, 2, INFINITY, &s.b))
            return false;
    } else {
        return false;
    }
    return ep_push(ep, s);
}

bool ss_epilogue_add_xclip(ss_epilogue *ep, float a, float lo, float hi)
{
    return ep_push(ep, (step){.kind = ST_XCLIP, .axis = -1, .a = a, .b = lo, .c = hi});
}

bool ss_epilogue_add_gelu(ss_epilogue *ep, float c, float b)
{
    return ep_push(ep, (step){.kind = ST_GELU, .axis = -1, .a = c, .b = b});
}

bool ss_epilogue_add_gelu_tanh(ss_epilogue *ep)
{
    return ep_push(ep, (step){.kind = ST_GELU_TANH, .axis = -1});
}

/* ------------------------------------------------------------------ the pass */

/* The same expressions as elementwise.c's kernels, so a fused step gives the unfused bytes. */
#define EP_CLAMP(v, lo, hi) (((v) < (lo) ? (lo) : (v)) > (hi) ? (hi) : ((v) < (lo) ? (lo) : (v)))
#define EP_HSIG(v) ((v) < 0 ? 0.0f : (v) > 1 ? 1.0f : (v))
#define EP_MAXF(a, b) (((a) > (b) || (a) != (a)) ? (a) : (b))
#define EP_MINF(a, b) (((a) < (b) || (a) != (a)) ? (a) : (b))

/* y[i] = EXPR over the block, with v (and w) the operand: a tensor, a column vector, a scalar. */
#define EP_BIN(EXPR)                                                                               \
    do {                                                                                           \
        if (t)                                                                                     \
            for (int64_t i = 0; i < n; i++) {                                                      \
                float x = y[i], v = t[i], w = 0;                                                   \
                (void)w;                                                                           \
                y[i] = (EXPR);                                                                     \
            }                                                                                      \
        else if (pv)                                                                               \
            for (int64_t i = 0; i < n; i++) {                                                      \
                float x = y[i], v = pv[i], w = pw ? pw[i] : 0;                                     \
                (void)w;                                                                           \
                y[i] = (EXPR);                                                                     \
            }                                                                                      \
        else                                                                                       \
            for (int64_t i = 0; i < n; i++) {                                                      \
                float x = y[i], v = sv, w = sw;                                                    \
                (void)v, (void)w;                                                                  \
                y[i] = (EXPR);                                                                     \
            }                                                                                      \
    } while (0)

/* One step over n floats; sv/sw are this row's operands, pv/pw column vectors, t a tensor row. */
SS_ISA_INLINE void ep_step(const step *s, float *restrict y, int64_t n, float sv, float sw,
                           const float *restrict pv, const float *restrict pw,
                           const float *restrict t)
{
    const float a = s->a, b = s->b, c = s->c;
    switch (s->kind) {
    case ST_ADD:
        EP_BIN(x + v);
        break;
    case ST_SUB:
        EP_BIN(x - v);
        break;
    case ST_RSUB:
        EP_BIN(v - x);
        break;
    case ST_MUL:
        EP_BIN(x * v);
        break;
    case ST_DIV:
        EP_BIN(x / v);
        break;
    case ST_RDIV:
        EP_BIN(v / x);
        break;
    case ST_MAX:
        EP_BIN(EP_MAXF(x, v));
        break;
    case ST_MIN:
        EP_BIN(EP_MINF(x, v));
        break;
    case ST_AFFINE:
        EP_BIN(x * v + w);
        break;
    case ST_RELU:
        for (int64_t i = 0; i < n; i++)
            y[i] = y[i] < 0 ? 0.0f : y[i];
        break;
    case ST_LEAKY:
        for (int64_t i = 0; i < n; i++)
            y[i] = y[i] < 0 ? a * y[i] : y[i];
        break;
    case ST_CLIP:
        for (int64_t i = 0; i < n; i++)
            y[i] = EP_CLAMP(y[i], a, b);
        break;
    case ST_HSIG:
        for (int64_t i = 0; i < n; i++) {
            float h = a * y[i] + b;
            y[i] = EP_HSIG(h);
        }
        break;
    case ST_HSWISH:
        for (int64_t i = 0; i < n; i++) {
            float h = y[i] * (float)(1.0 / 6.0) + 0.5f;
            y[i] = y[i] * EP_HSIG(h);
        }
        break;
    case ST_SIGMOID:
        for (int64_t i = 0; i < n; i++)
            y[i] = 1.0f / (1.0f + ss_vexpf(-y[i])); /* as the Sigmoid op */
        break;
    case ST_XCLIP:
        for (int64_t i = 0; i < n; i++) {
            float h = y[i] + a;
            y[i] = y[i] * EP_CLAMP(h, b, c);
        }
        break;
    case ST_GELU:
        for (int64_t i = 0; i < n; i++)
            y[i] = y[i] * (ss_verff(y[i] / a) + b); /* as the Div, Erf, Add and Mul ops */
        break;
    case ST_GELU_TANH:
        for (int64_t i = 0; i < n; i++) {
            float x = y[i], u = SS_GELU_TANH_K * (x + SS_GELU_TANH_C * (x * x * x));
            y[i] = 0.5f * x * (1.0f + ss_vtanhf(u)); /* the Tanh op's tanh */
        }
        break;
    }
}

#define EP_PARAMS (const ss_epilogue *ep, float *restrict yb, int64_t row, int64_t col, int64_t n)
#define EP_ARGS (ep, yb, row, col, n)
/* The steps over the n values at yb, those of y[row * L + col, + n). */
SS_ISA_INLINE void ep_block_body EP_PARAMS
{
    for (int i = 0; i < ep->n; i++) {
        const step *s = &ep->steps[i];
        float sv = s->a, sw = s->b;
        const float *pv = NULL, *pw = NULL, *t = NULL;
        const float *sp = s->vt ? (const float *)s->vt->data : s->pv;
        if (s->t) {
            t = (const float *)s->t->data + row * ep->L + col;
        } else if (s->per_col) {
            pv = sp + col, pw = s->pw ? s->pw + col : NULL;
        } else if (sp && s->axis < 0) {
            sv = sp[0];
        } else if (sp) {
            int64_t idx = (row / s->div) % ep->dims[s->axis];
            sv = sp[idx], sw = s->pw ? s->pw[idx] : 0;
        }
        ep_step(s, yb, n, sv, sw, pv, pw, t);
    }
}
SS_ISA_VARIANTS(void, ep_block, EP_PARAMS, EP_ARGS)

typedef struct {
    const ss_epilogue *ep;
    float *y;
    int64_t blocks_per_row, units, chunk;
    int64_t next; /* next unclaimed unit (__atomic_fetch_add) */
} ep_job;

static void ep_units(const ep_job *j, int64_t u0, int64_t u1)
{
    for (int64_t u = u0; u < u1; u++) {
        int64_t row = u / j->blocks_per_row, col = (u % j->blocks_per_row) * EP_BLOCK;
        int64_t n = j->ep->L - col < EP_BLOCK ? j->ep->L - col : EP_BLOCK;
        ep_block(j->ep, j->y + row * j->ep->L + col, row, col, n);
    }
}

static void ep_part(void *ctx, int part, int parts)
{
    (void)part, (void)parts;
    ep_job *j = ctx;
    for (int64_t u; (u = __atomic_fetch_add(&j->next, j->chunk, __ATOMIC_RELAXED)) < j->units;)
        ep_units(j, u, u + j->chunk < j->units ? u + j->chunk : j->units);
}

void ss_epilogue_run(const ss_epilogue *ep, float *y)
{
    if (!ep || ep->claimed || ep->n == 0 || ep->numel == 0) return;
    ep_job j = {.ep = ep, .y = y, .blocks_per_row = (ep->L + EP_BLOCK - 1) / EP_BLOCK};
    j.units = j.blocks_per_row * ep->rows;
    j.chunk = 8;
    if (ep->threads > 1)
        ss_pool_run(ep->threads, ep_part, &j);
    else
        ep_units(&j, 0, j.units);
}

void ss_epilogue_claim(ss_epilogue *ep)
{
    ep->claimed = true;
}

void ss_epilogue_run_span(const ss_epilogue *ep, float *span, int64_t off, int64_t n)
{
    while (ep && ep->n > 0 && n > 0) {
        int64_t row = off / ep->L, col = off % ep->L, len = ep->L - col;
        if (len > n) len = n;
        if (len > EP_BLOCK) len = EP_BLOCK;
        ep_block(ep, span, row, col, len);
        span += len, off += len, n -= len;
    }
}

/* ------------------------------------------------------------------ library post-ops */

/* A binary step's operand as a post-op operand: a tensor, a per-channel vector, or a scalar (a
 * binary post-op too, computing the step's bytes; v - y is the linear -y + v). 0: not
 * expressible. */
static int binary_postop(const ss_epilogue *ep, const step *s, ss_postop *po)
{
    static const struct {
        step_kind st;
        ss_postop_kind po;
    } map[] = {{ST_ADD, SS_PO_ADD}, {ST_SUB, SS_PO_SUB}, {ST_MUL, SS_PO_MUL},
               {ST_DIV, SS_PO_DIV}, {ST_MAX, SS_PO_MAX}, {ST_MIN, SS_PO_MIN}};
    if (s->vt) return 0; /* a post-op's per-channel operand is copied at plan time */
    bool scalar = !s->t && !s->pv;
    if (scalar && s->kind == ST_RSUB) return *po = (ss_postop){SS_PO_LINEAR, -1, s->a}, 1;
    int k = -1;
    for (int i = 0; i < (int)(sizeof map / sizeof map[0]) && k < 0; i++)
        if (map[i].st == s->kind) k = i;
    if (k < 0) return 0;
    *po = (ss_postop){.kind = map[k].po, .alpha = s->a, .t = s->t};
    if (s->pv && (s->axis != 1 || ep->ndim < 3)) return 0;
    po->chan = s->pv;
    return 1;
}

/* Step i (with i + 1 for Paddle's HardSwish) as up to two post-ops; *used: steps covered. */
static int step_postops(const ss_epilogue *ep, int i, ss_postop *po, int *used)
{
    const step *s = &ep->steps[i], *nx = i + 1 < ep->n ? &ep->steps[i + 1] : NULL;
    *used = 1;
    switch (s->kind) {
    case ST_RELU:
        return po[0] = (ss_postop){SS_PO_RELU, 0, 0}, 1;
    case ST_LEAKY:
        return po[0] = (ss_postop){SS_PO_RELU, s->a, 0}, 1;
    case ST_CLIP:
        po[0] = (ss_postop){SS_PO_CLIP, s->a < -FLT_MAX ? -FLT_MAX : s->a,
                            s->b > FLT_MAX ? FLT_MAX : s->b};
        return 1;
    case ST_HSIG:
        po[0] = (ss_postop){SS_PO_LINEAR, s->a, s->b};
        po[1] = (ss_postop){SS_PO_CLIP, 0, 1};
        return 2;
    case ST_HSWISH:
        return po[0] = (ss_postop){SS_PO_HSWISH, 0, 0}, 1;
    case ST_SIGMOID:
        return po[0] = (ss_postop){SS_PO_LOGISTIC, 0, 0}, 1;
    case ST_XCLIP:
        if (s->a != 3 || s->b != 0 || s->c != 6 || !nx || nx->kind != ST_DIV || nx->t || nx->pv ||
            nx->a != 6)
            return 0;
        *used = 2;
        return po[0] = (ss_postop){SS_PO_HSWISH, 0, 0}, 1;
    case ST_GELU: /* y (erf(y / sqrt 2) + 1), then usually * 0.5: oneDNN's gelu_erf */
        if (fabsf(s->a - 1.41421356f) > 1e-6f || s->b != 1) return 0;
        if (nx && nx->kind == ST_MUL && !nx->t && !nx->pv && !nx->vt && nx->a == 0.5f) {
            *used = 2;
            return po[0] = (ss_postop){SS_PO_GELU_ERF, 0, 0}, 1;
        }
        po[0] = (ss_postop){SS_PO_GELU_ERF, 0, 0};
        po[1] = (ss_postop){SS_PO_LINEAR, 2, 0};
        return 2;
    case ST_GELU_TANH:
        return po[0] = (ss_postop){SS_PO_GELU_TANH, 0, 0}, 1;
    case ST_AFFINE:
        if (!s->pv || !s->pw || s->axis != 1 || ep->ndim < 3) return 0;
        po[0] = (ss_postop){.kind = SS_PO_MUL, .chan = s->pv};
        po[1] = (ss_postop){.kind = SS_PO_ADD, .chan = s->pw};
        return 2;
    default:
        return binary_postop(ep, s, po);
    }
}

int ss_epilogue_postops(const ss_epilogue *ep, ss_postop *out, int max)
{
    int n = 0;
    for (int i = 0, used; ep && i < ep->n && n + 2 <= max; i += used) {
        int k = step_postops(ep, i, out + n, &used);
        if (k == 0) break;
        for (int j = 0; j < k; j++)
            out[n + j].steps = i + used;
        n += k;
    }
    return n;
}

const float *ss_epilogue_lead_bias(const ss_epilogue *ep)
{
    const step *s = ep && ep->n ? &ep->steps[0] : NULL;
    return s && s->kind == ST_ADD && s->per_col && !s->vt && !s->t ? s->pv : NULL;
}

void ss_epilogue_drop(ss_epilogue *ep, int n)
{
    if (n <= 0) return;
    if (n > ep->n) n = ep->n;
    for (int i = 0; i < n; i++)
        free(ep->steps[i].own);
    memmove(ep->steps, ep->steps + n, sizeof(step) * (size_t)(ep->n - n));
    ep->n -= n;
    ep_view(ep);
}
