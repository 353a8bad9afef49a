/*
 * Convolution and pooling over 1, 2 or 3 spatial dims: Conv, ConvTranspose, MaxPool,
 * AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool, GlobalLpPool.
 *
 * Every op is planned in a canonical 3-D geometry (lower ranks get leading spatial dims of size
 * 1), so one im2col and one pooling loop serve all ranks. infer resolves auto_pad, pads, strides,
 * dilations and ceil_mode into per-dim begin/end pads and output sizes. A float32 Conv with
 * constant W and B runs on oneDNN when SHARDSERVE_KERNELS allows (conv_try_dnnl). Otherwise it is
 * im2col + one BLAS gemm per (image, group), with the column buffer sized at plan time in k->state;
 * a 1x1 convolution with unit strides and no padding skips im2col and multiplies X directly. run
 * never allocates. For the planner's layout pass (session.c: layout_plan) a Conv on oneDNN reads
 * and writes oneDNN's activation layout, and a float32 MaxPool whose input arrives in it runs on
 * oneDNN's pooling in the same layout.
 */
#include "common.h"
#include "gemm_kernel.h"
#include "gemm_q8.h"
#include "isa.h"
#include "onednn.h"
#include "pool.h"
#include "quant.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* Canonical 3-D window geometry; index 0..2 = D, H, W. */
typedef struct {
    int nsp;
    int64_t in[3], out[3], k[3], s[3], d[3], pb[3], pe[3];
    int64_t ivol, ovol, kvol;
} geom;

/* A window attribute (kernel size, stride, dilation, pad, output size) is at most this big, so
 * the geometry's sums and products of two of them stay far inside int64. */
#define WINDOW_MAX ((int64_t)INT32_MAX)

/* Reads an INTS attribute of exactly `n` values (each within +-WINDOW_MAX) into dst, or fills
 * `dflt`. */
static ss_status *read_spatial(const ss_kctx *k, const char *name, int n, int64_t dflt,
                               int64_t *dst)
{
    const int64_t *v;
    int cnt = ss_onnx_attr_ints(k->node, name, &v);
    if (cnt < 0) {
        for (int i = 0; i < n; i++)
            dst[i] = dflt;
        return NULL;
    }
    if (cnt != n)
        return ss_op_err(k, SS_ERR_INVALID, "attribute '%s' has %d values, expected %d", name, cnt,
                         n);
    for (int i = 0; i < n; i++) {
        if (v[i] > WINDOW_MAX || v[i] < -WINDOW_MAX)
            return ss_op_err(k, SS_ERR_INVALID,
                             "attribute '%s' value %lld is out of range (|value| <= %lld)", name,
                             (long long)v[i], (long long)WINDOW_MAX);
        dst[i] = v[i];
    }
    return NULL;
}

/* The window attributes every op here shares, as given (before auto_pad is resolved). */
typedef struct {
    int64_t s[3], d[3], pads[6];
    bool same_upper, same_lower, valid;
} window_attrs;

static ss_status *read_window(const ss_kctx *k, int nsp, window_attrs *w)
{
    if (nsp < 1 || nsp > 3)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "%d spatial dims (only 1 to 3 are supported)", nsp);
    ss_status *st = read_spatial(k, "strides", nsp, 1, w->s);
    if (!st) st = read_spatial(k, "dilations", nsp, 1, w->d);
    if (!st) st = read_spatial(k, "pads", 2 * nsp, 0, w->pads);
    if (st) return st;
    char ap[32];
    const char *auto_pad = ss_onnx_attr_string(k->node, "auto_pad", ap, sizeof ap);
    if (!auto_pad || !auto_pad[0]) auto_pad = "NOTSET";
    w->same_upper = strcmp(auto_pad, "SAME_UPPER") == 0;
    w->same_lower = strcmp(auto_pad, "SAME_LOWER") == 0;
    w->valid = strcmp(auto_pad, "VALID") == 0;
    if (!w->same_upper && !w->same_lower && !w->valid && strcmp(auto_pad, "NOTSET") != 0)
        return ss_op_err(k, SS_ERR_INVALID, "attribute 'auto_pad' has unknown value '%s'",
                         auto_pad);
    return NULL;
}

/* A geometry of nsp spatial dims with every canonical dim of size 1 until set_dim. */
static void geom_reset(geom *g, int nsp)
{
    memset(g, 0, sizeof *g);
    g->nsp = nsp;
    for (int i = 0; i < 3; i++)
        g->in[i] = g->out[i] = g->k[i] = g->s[i] = g->d[i] = 1;
    g->ivol = g->ovol = g->kvol = 1;
}

/* Sets spatial dim i (of g->nsp) in its canonical slot; an error when a volume overflows. */
static ss_status *geom_set_dim(const ss_kctx *k, geom *g, int i, int64_t in, int64_t out,
                               int64_t kernel, const window_attrs *w, int64_t pb, int64_t pe)
{
    int c = 3 - g->nsp + i;
    g->in[c] = in, g->out[c] = out, g->k[c] = kernel, g->s[c] = w->s[i], g->d[c] = w->d[i];
    g->pb[c] = pb, g->pe[c] = pe;
    if (__builtin_mul_overflow(g->ivol, in, &g->ivol) ||
        __builtin_mul_overflow(g->ovol, out, &g->ovol) ||
        __builtin_mul_overflow(g->kvol, kernel, &g->kvol))
        return ss_op_err(k, SS_ERR_LIMIT,
                         "the spatial sizes (%lld in, %lld out, kernel %lld) "
                         "multiply past 2^63",
                         (long long)in, (long long)out, (long long)kernel);
    return NULL;
}

/* Fills g from X's spatial dims, the kernel shape and the node's attributes. */
static ss_status *geom_init(const ss_kctx *k, const ss_tensor *x, const int64_t *kernel,
                            bool ceil_mode, geom *g)
{
    int nsp = x->ndim - 2;
    window_attrs w;
    ss_status *st = read_window(k, nsp, &w);
    if (st) return st;
    geom_reset(g, nsp);
    for (int i = 0; i < nsp; i++) {
        int64_t in = x->dims[2 + i], kk = kernel[i], s = w.s[i];
        if (kk < 1 || s < 1 || w.d[i] < 1)
            return ss_op_err(k, SS_ERR_INVALID,
                             "kernel sizes, strides and dilations must be positive");
        int64_t ek = (kk - 1) * w.d[i] + 1, pb = w.pads[i], pe = w.pads[nsp + i], out;
        if (pb < 0 || pe < 0) return ss_op_err(k, SS_ERR_INVALID, "pads must be non-negative");
        if (w.same_upper || w.same_lower) {
            out = (in + s - 1) / s;
            int64_t total = (out - 1) * s + ek - in;
            if (total < 0) total = 0;
            pb = w.same_upper ? total / 2 : total - total / 2;
            pe = total - pb;
        } else {
            if (w.valid) pb = pe = 0;
            int64_t span = in + pb + pe - ek;
            if (span < 0)
                return ss_op_err(k, SS_ERR_INVALID,
                                 "the window (%lld) is larger than the padded input (%lld)",
                                 (long long)ek, (long long)(in + pb + pe));
            out = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
            /* the last window must start inside the input or its left padding */
            if (ceil_mode && (out - 1) * s >= in + pb) out--;
        }
        if ((st = geom_set_dim(k, g, i, in, out, kk, &w, pb, pe))) return st;
    }
    return NULL;
}

/* y = [n, c, spatial...] with the spatial dims from a canonical triple (g->out or g->in). */
static void geom_shape(const geom *g, const int64_t *sp, int64_t n, int64_t c, ss_tensor *y,
                       ss_dtype dt)
{
    y->dtype = dt;
    y->ndim = 2 + g->nsp;
    y->dims[0] = n;
    y->dims[1] = c;
    for (int i = 0; i < g->nsp; i++)
        y->dims[2 + i] = sp[3 - g->nsp + i];
}

/* [lo, hi): output positions o with 0 <= o*s + off < in. */
static void valid_range(int64_t off, int64_t s, int64_t in, int64_t out, int64_t *lo, int64_t *hi)
{
    int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t h = in - off <= 0 ? 0 : (in - off + s - 1) / s;
    *lo = l < out ? l : out;
    *hi = h < out ? h : out;
    if (*hi < *lo) *hi = *lo;
}

/* ------------------------------------------------------------------ Conv, ConvTranspose */

/* Conv and ConvTranspose share one plan; for ConvTranspose g.in is Y's spatial shape and g.out
 * X's (the roles of the images are swapped). */
typedef struct {
    geom g;
    int64_t N, C, M, group, cg, mg;
    int threads;    /* parts of the worker pool the depthwise loop is split into */
    bool direct;    /* Conv: 1x1, unit strides, no padding: X is already the column matrix */
    bool depthwise; /* Conv: one input and one output channel per group: taps folded row by row */
    bool pw_own;    /* direct float32: the own register-tile GEMM instead of OpenBLAS sgemm */
    ss_gemm_variant pw_variant;
    int pw_threads;         /* parts of the pool the own GEMM may use */
    void *col;              /* the gemm's column buffer, unless direct or depthwise */
    ss_dnnl_conv *dnnl;     /* Conv on oneDNN (float32, constant W and B) */
    const ss_tensor *sum_t; /* a residual Add run as dnnl's sum post-op: its other operand */
} conv_plan;

static void conv_release(void *state)
{
    ss_dnnl_conv_free(((conv_plan *)state)->dnnl);
}

/* Whether a pointwise (direct) float32 Conv runs on the own GEMM: always under own, never under
 * blas or onednn; under auto when each image's map has >= PW_OWN_MIN_HW positions (two full
 * 32-column panels) and M fits the kernel's passes. Measured with bench_kernels --conv-only
 * (AVX-512, process CPU us per call, 1 thread): own / OpenBLAS / oneDNN 256->64 at 56x56 1464 /
 * 2030 / 2615, 16->32 at 48x48 39.6 / 44.9 / 88.2, 48->96 at 16x16 30.8 / 30.5 / 34.4; with few
 * positions the own kernel's panels are mostly masked: 192->192 at 7x7 68.6 / 47.7 / 43.8,
 * 384->384 at 4x4 168 / 74 / 48, 96->24 at 1x1 (an SE block) 3.2 / 0.4 / 1.0. */
#define PW_OWN_MIN_HW 64
static bool pw_own_wins(ss_kernels mode, const conv_plan *p)
{
    if (mode == SS_KERNELS_OWN) return true;
    return mode == SS_KERNELS_AUTO && p->g.ovol >= PW_OWN_MIN_HW && p->mg <= SS_GEMM_TILE_MAX_M;
}

/* Conv through oneDNN when the kernel mode says so (as a GEMM of N*out x C/group*kernel x M) and
 * W (and B) are constants; on UNSUPPORTED the own im2col path stays. Under auto a 1x1 unit-stride
 * unpadded Conv on a map the own GEMM takes (pw_own_wins) stays own, straight on NCHW: it beat
 * oneDNN plus its two layout reorders (256->64 at 56x56: 1.45 vs 1.73 ms, bench_kernels); smaller
 * maps go to oneDNN rather than a multi-threaded sgemm, whose spinning OpenBLAS workers then hold
 * the cores oneDNN's and the pool's threads need (PP-OCR cls at 2 threads); every
 * other measured shape went to oneDNN
 * (3x3 64->64 56x56 3.3 -> 2.4 ms, 7x7/2 stem 4.6 -> 2.5, depthwise 3x3/2 0.35 -> 0.23). */
/* A constant float16/bfloat16 tensor as a malloc'd float32 copy (NULL when out of memory). */
static float *f32_copy(const ss_tensor *t)
{
    float *c = malloc(sizeof(float) * (size_t)(ss_tensor_numel(t) + 1));
    if (c) ss_op_load_f32(t, c);
    return c;
}

/* The oneDNN primitive for k with post-ops po[0..n_po) into *out; UNSUPPORTED when oneDNN does not
 * take the case. */
static ss_status *conv_dnnl_make(ss_kctx *k, const conv_plan *p, const ss_postop *po, int n_po,
                                 bool sum, const char *require_impl, ss_dnnl_conv **out,
                                 size_t *scratch)
{
    const ss_tensor *x = k->in[0];
    const ss_tensor *wv = ss_kctx_value(k, 1),
                    *bv = k->n_in > 2 && k->in[2] ? ss_kctx_value(k, 2) : NULL;
    /* a float16 model's W and B reach the float32 primitive as float32 copies, packed at create
     * and freed after; the packed-weights cache is keyed by source address, so not for them */
    float *w32 = NULL, *b32 = NULL;
    if (wv->dtype != x->dtype && ((w32 = f32_copy(wv)) == NULL || (bv && !(b32 = f32_copy(bv))))) {
        free(w32);
        return ss_op_oom();
    }
    ss_dnnl_conv_desc d = {.nsp = p->g.nsp,
                           .N = p->N,
                           .C = p->C,
                           .M = p->M,
                           .group = p->group,
                           .wei_const = w32 ? w32 : wv->data,
                           .bias_const = b32  ? b32
                                         : bv ? bv->data
                                              : NULL,
                           .k = w32 ? NULL : k,
                           .po = po,
                           .n_po = n_po,
                           .require_impl = require_impl,
                           .direct_only = w32 != NULL,
                           .sum = sum};
    for (int i = 0; i < 3; i++) {
        d.in[i] = p->g.in[i], d.out[i] = p->g.out[i], d.kernel[i] = p->g.k[i];
        d.stride[i] = p->g.s[i], d.dilation[i] = p->g.d[i];
        d.pad_begin[i] = p->g.pb[i], d.pad_end[i] = p->g.pe[i];
    }
    int t = ss_kctx_threads(k);
    d.threads = ss_dnnl_threads(p->N * p->g.ovol * p->cg * p->g.kvol * p->M, t);
    ss_status *st = ss_dnnl_conv_create(&d, out, scratch);
    free(w32);
    free(b32);
    return st;
}

/* With the layout pass on, a pointwise Conv stays on oneDNN under auto: pw_own_wins was measured
 * against oneDNN *with* its two activation reorders, which the pass removes between oneDNN Convs,
 * and an own-GEMM Conv between two oneDNN ones costs those two reorders instead. Same run, 1
 * thread, wall ms (ORT 5.20): MobileNetV2 224x224 6.94 -> 5.03 with every pointwise Conv on
 * oneDNN (bench/RUNTIME.md, "BERT-base, GPT-2-small, MobileNetV2 and ResNet-50 rows"). */
static bool pw_chained(void)
{
    return ss_layout_enabled();
}

static ss_status *conv_try_dnnl(ss_kctx *k, conv_plan *p)
{
    const ss_tensor *x = k->in[0];
    const ss_tensor *wv = ss_kctx_value(k, 1),
                    *bv = k->n_in > 2 && k->in[2] ? ss_kctx_value(k, 2) : NULL;
    if (!wv || !wv->data || (k->n_in > 2 && k->in[2] && (!bv || !bv->data))) return NULL;
    ss_kernels mode = ss_kernels_mode();
    if (!ss_kernels_use_dnnl(mode, x->dtype, p->N * p->g.ovol, p->cg * p->g.kvol, p->M) ||
        (mode == SS_KERNELS_AUTO && p->direct && pw_own_wins(mode, p) && !pw_chained()))
        return NULL;
    size_t scratch = 0;
    ss_status *st = conv_dnnl_make(k, p, NULL, 0, false, NULL, &p->dnnl, &scratch);
    if (st && st->code == SS_ERR_UNSUPPORTED) {
        SS_DEBUG("%s: oneDNN: %s; the own kernel runs it", k->node_name, st->msg);
        ss_status_free(st);
        return NULL;
    }
    if (st) return ss_op_err(k, st->code, "%s", st->msg);
    if (scratch > k->scratch_bytes) k->scratch_bytes = scratch;
    ss_kctx_drop_const_pages(k, 1);
    SS_DEBUG("%s: oneDNN %s", k->node_name, ss_dnnl_conv_impl(p->dnnl));
    return NULL;
}

/* ss_dnnl_postop_make for conv_fuse: ctx points at the sum flag. */
static ss_status *conv_postops_make(ss_kctx *k, void *ctx, const ss_postop *po, int n, bool *took)
{
    conv_plan *p = k->state;
    bool sum = *(const bool *)ctx;
    ss_dnnl_conv *c = NULL;
    size_t scratch = 0;
    ss_status *st = conv_dnnl_make(k, p, po, n, sum, ss_dnnl_conv_impl(p->dnnl), &c, &scratch);
    if (st && st->code != SS_ERR_UNSUPPORTED) return ss_op_err(k, st->code, "%s", st->msg);
    if (st) SS_DEBUG("%s: %s", k->node_name, st->msg);
    ss_status_free(st);
    if (!c) return NULL;
    ss_dnnl_conv_free(p->dnnl);
    p->dnnl = c;
    p->sum_t = sum ? po[0].t : NULL;
    if (scratch > k->scratch_bytes) k->scratch_bytes = scratch;
    *took = true;
    return NULL;
}

/* The planner's hook (op.h): the longest prefix of the fused epilogue oneDNN runs as post-ops on
 * the same implementation as the plain primitive (a post-op that sends the case to a slower
 * kernel is left to the epilogue's pass), built at plan time. SHARDSERVE_DNNL_POSTOPS=0 leaves
 * every step on the pass (the bench's before/after in one binary). */
static ss_status *conv_fuse(ss_kctx *k, ss_epilogue *ep)
{
    conv_plan *p = k->state;
    ss_postop po[SS_EPILOGUE_MAX_POSTOPS];
    const char *env = getenv("SHARDSERVE_DNNL_POSTOPS");
    if (env && !strcmp(env, "0")) return NULL;
    int all = p && p->dnnl ? ss_epilogue_postops(ep, po, SS_EPILOGUE_MAX_POSTOPS) : 0;
    /* a leading residual Add (a tensor of Y's shape) runs as oneDNN's sum post-op: a binary
     * operand sends 1x1 Convs off brgconv_1x1, and sum lets the layout pass keep the residual
     * in the library layout (conv_layout_operand); SHARDSERVE_DNNL_SUM=0 (bench A/B) tries the
     * binary post-op as before */
    const char *sum_env = getenv("SHARDSERVE_DNNL_SUM");
    bool sum = all > 0 && po[0].kind == SS_PO_ADD && po[0].t && po[0].t->dtype == SS_DT_FLOAT32 &&
               !(sum_env && !strcmp(sum_env, "0"));
    return ss_dnnl_fuse_postops(k, ep, po, all, conv_postops_make, &sum);
}

/* The layout pass's hooks (op.h): a Conv on oneDNN reads X in any layout (reordering into its
 * own only when they differ) and may leave Y in its own. */
static bool conv_layout_ok(const ss_kctx *k)
{
    const conv_plan *p = k->state;
    return p && p->dnnl && k->in[0]->dtype == SS_DT_FLOAT32;
}

static ss_status *conv_relayout(ss_kctx *k, const void *in, bool out_native, const void **out)
{
    conv_plan *p = k->state;
    size_t scratch = 0;
    ss_status *st = ss_dnnl_conv_relayout(p->dnnl, in, out_native, out, &scratch);
    if (st) return ss_op_err(k, st->code, "%s", st->msg);
    if (scratch > k->scratch_bytes) k->scratch_bytes = scratch;
    return NULL;
}

/* The residual a sum post-op reads (NULL: none): the layout pass may keep it in a library layout
 * and then says which (conv_operand_relayout). */
static const ss_tensor *conv_layout_operand(const ss_kctx *k)
{
    const conv_plan *p = k->state;
    return p && p->dnnl ? p->sum_t : NULL;
}

static ss_status *conv_operand_relayout(ss_kctx *k, const void *layout)
{
    conv_plan *p = k->state;
    ss_status *st = ss_dnnl_conv_sum_relayout(p->dnnl, layout);
    return st ? ss_op_err(k, st->code, "%s", st->msg) : NULL;
}

static bool conv_operand_in_place(const ss_kctx *k)
{
    const conv_plan *p = k->state;
    return p && p->dnnl && p->sum_t && ss_dnnl_conv_sum_copies_into_y(p->dnnl);
}

/* Below this many multiply-adds per image a depthwise Conv runs on one thread (a worker's wake-up
 * costs more). */
#define DW_PAR_MIN_MACS (1 << 18)

/* Checks X, W and B of Conv/ConvTranspose and reads kernel_shape (default: W's spatial dims). */
static ss_status *conv_inputs(const ss_kctx *k, const char *const *attrs, int64_t *kernel)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 3);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_op_expect_float(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0], *w = k->in[1], *b = k->n_in > 2 ? k->in[2] : NULL;
    if (w->dtype != x->dtype || (b && b->dtype != x->dtype))
        return ss_op_err(k, SS_ERR_INVALID, "X, W and B must have the same type");
    if (x->ndim < 3 || w->ndim != x->ndim)
        return ss_op_err(k, SS_ERR_INVALID,
                         "X (rank %d) and W (rank %d) must have the same rank >= 3", x->ndim,
                         w->ndim);
    int nsp = x->ndim - 2;
    st = read_spatial(k, "kernel_shape", nsp, -1, kernel);
    if (st) return st;
    for (int i = 0; i < nsp; i++) {
        if (kernel[i] < 0) kernel[i] = w->dims[2 + i];
        if (kernel[i] != w->dims[2 + i])
            return ss_op_err(k, SS_ERR_INVALID,
                             "attribute 'kernel_shape' does not match W's shape");
    }
    return NULL;
}

/* The plan with a column buffer of col_bytes after it (one block, see op.h). */
static ss_status *conv_plan_new(ss_kctx *k, const geom *g, int64_t C, int64_t M, int64_t group,
                                size_t col_bytes, conv_plan **out)
{
    conv_plan *p = ss_op_state_alloc(k, sizeof *p + col_bytes);
    if (!p) return ss_errf(SS_ERR_NOMEM, "cannot allocate a %zu-byte column buffer", col_bytes);
    p->g = *g;
    p->N = k->in[0]->dims[0];
    p->C = C;
    p->M = M;
    p->group = group;
    p->cg = C / group;
    p->mg = M / group;
    p->col = p + 1;
    *out = p;
    return NULL;
}

static const char *const conv_attrs[] = {"auto_pad", "dilations", "group", "kernel_shape",
                                         "pads",     "strides",   NULL};

static ss_status *conv_infer_native(ss_kctx *k)
{
    int64_t kernel[SS_MAX_DIMS];
    ss_status *st = conv_inputs(k, conv_attrs, kernel);
    if (st) return st;
    const ss_tensor *x = k->in[0], *w = k->in[1], *b = k->n_in > 2 ? k->in[2] : NULL;
    geom g;
    st = geom_init(k, x, kernel, false, &g);
    if (st) return st;
    int64_t group = ss_onnx_attr_int(k->node, "group", 1);
    int64_t C = x->dims[1], M = w->dims[0];
    if (group < 1 || C % group || M % group || w->dims[1] != C / group)
        return ss_op_err(k, SS_ERR_INVALID, "channels (X %lld, W %lldx%lld) do not fit group %lld",
                         (long long)C, (long long)M, (long long)w->dims[1], (long long)group);
    if (b && (b->ndim != 1 || b->dims[0] != M))
        return ss_op_err(k, SS_ERR_INVALID, "B must have shape [%lld]", (long long)M);
    bool direct = g.kvol == 1;
    for (int i = 0; i < 3; i++)
        direct = direct && g.s[i] == 1 && g.pb[i] == 0 && g.pe[i] == 0;
    bool depthwise = group > 1 && group == C && M == C;
    size_t es = ss_dtype_size(x->dtype);
    size_t col_bytes =
        direct || depthwise ? 0 : (size_t)(C / group) * (size_t)g.kvol * (size_t)g.ovol * es;
    conv_plan *p = NULL;
    if ((st = conv_plan_new(k, &g, C, M, group, col_bytes, &p))) return st;
    p->direct = direct;
    p->depthwise = depthwise;
    p->threads = 1;
    geom_shape(&g, g.out, p->N, M, k->out[0], x->dtype);
    if (g.ovol > 0 && M > 0 && p->N > 0 && p->cg * g.kvol > 0 && (st = conv_try_dnnl(k, p)))
        return st;
    int threads = ss_kctx_threads(k);
    if (direct && !p->dnnl && x->dtype == SS_DT_FLOAT32 && pw_own_wins(ss_kernels_mode(), p) &&
        (p->pw_variant = ss_gemm_pick()) != SS_GEMM_BLAS) {
        p->pw_own = true;
        p->pw_threads = ss_gemm_pool_reserve(threads);
    }
    if (depthwise && !p->dnnl && threads > 1 && C > 1 &&
        (double)C * (double)g.ovol * (double)g.kvol >= DW_PAR_MIN_MACS)
        p->threads = ss_gemm_pool_reserve(threads);
    return NULL;
}

/* Column matrix of one group of one image: row (c, kd, kh, kw), column (od, oh, ow). */
#define IM2COL(T)                                                                                  \
    static void im2col_##T(const geom *g, int64_t cg, const T *restrict x, T *restrict col)        \
    {                                                                                              \
        const int64_t *in = g->in, *out = g->out;                                                  \
        for (int64_t c = 0; c < cg; c++)                                                           \
            for (int64_t kd = 0; kd < g->k[0]; kd++)                                               \
                for (int64_t kh = 0; kh < g->k[1]; kh++)                                           \
                    for (int64_t kw = 0; kw < g->k[2]; kw++) {                                     \
                        int64_t offw = kw * g->d[2] - g->pb[2], lo, hi;                            \
                        valid_range(offw, g->s[2], in[2], out[2], &lo, &hi);                       \
                        for (int64_t od = 0; od < out[0]; od++) {                                  \
                            int64_t id = od * g->s[0] - g->pb[0] + kd * g->d[0];                   \
                            for (int64_t oh = 0; oh < out[1]; oh++) {                              \
                                int64_t ih = oh * g->s[1] - g->pb[1] + kh * g->d[1];               \
                                T *restrict dst = col + (od * out[1] + oh) * out[2];               \
                                if (id < 0 || id >= in[0] || ih < 0 || ih >= in[1]) {              \
                                    for (int64_t ow = 0; ow < out[2]; ow++)                        \
                                        dst[ow] = 0;                                               \
                                    continue;                                                      \
                                }                                                                  \
                                const T *restrict src =                                            \
                                    x + ((c * in[0] + id) * in[1] + ih) * in[2];                   \
                                int64_t s = g->s[2];                                               \
                                for (int64_t ow = 0; ow < lo; ow++)                                \
                                    dst[ow] = 0;                                                   \
                                if (s == 1)                                                        \
                                    for (int64_t ow = lo; ow < hi; ow++)                           \
                                        dst[ow] = src[ow + offw];                                  \
                                else                                                               \
                                    for (int64_t ow = lo; ow < hi; ow++)                           \
                                        dst[ow] = src[ow * s + offw];                              \
                                for (int64_t ow = hi; ow < out[2]; ow++)                           \
                                    dst[ow] = 0;                                                   \
                            }                                                                      \
                        }                                                                          \
                        col += g->ovol;                                                            \
                    }                                                                              \
    }

IM2COL(float)
IM2COL(double)

/* Depthwise: each kernel tap adds a weighted strided input row into the output row (the rows
 * start as the bias), like the pooling loops; no im2col and no per-channel gemm calls. The
 * float32 loop is compiled per ISA (isa.h): the row updates become AVX-512 / AVX2 FMAs. */
#define DW_PARAMS(T) (const geom *g, const T *restrict x, const T *restrict w, T *restrict y)
#define DW_ARGS (g, x, w, y)
/* Tap kw of one input row into the output row, over output positions [lo, hi). */
#define DW_TAP(T)                                                                                  \
    SS_ISA_INLINE void dw_tap_##T(int64_t s2, int64_t off, T wv, const T *restrict row,            \
                                  T *restrict yr, int64_t lo, int64_t hi)                          \
    {                                                                                              \
        if (s2 == 1)                                                                               \
            for (int64_t ow = lo; ow < hi; ow++)                                                   \
                yr[ow] += wv * row[ow + off];                                                      \
        else                                                                                       \
            for (int64_t ow = lo; ow < hi; ow++)                                                   \
                yr[ow] += wv * row[ow * s2 + off];                                                 \
    }

/* One input row into one output row. Three taps wide (the common 3x3), the positions where all
 * three are inside the row take one pass that adds them in tap order (as the per-tap passes do),
 * instead of three passes over the output row; the edges go tap by tap. */
#define DW_ROW(T)                                                                                  \
    SS_ISA_INLINE void dw_row_##T(const geom *g, const T *restrict row, const T *restrict wk,      \
                                  T *restrict yr)                                                  \
    {                                                                                              \
        int64_t s2 = g->s[2], lo[3], hi[3], off[3];                                                \
        if (g->k[2] != 3) {                                                                        \
            for (int64_t kw = 0; kw < g->k[2]; kw++) {                                             \
                off[0] = kw * g->d[2] - g->pb[2];                                                  \
                valid_range(off[0], s2, g->in[2], g->out[2], &lo[0], &hi[0]);                      \
                dw_tap_##T(s2, off[0], wk[kw], row, yr, lo[0], hi[0]);                             \
            }                                                                                      \
            return;                                                                                \
        }                                                                                          \
        int64_t ilo = 0, ihi = g->out[2];                                                          \
        for (int kw = 0; kw < 3; kw++) {                                                           \
            off[kw] = kw * g->d[2] - g->pb[2];                                                     \
            valid_range(off[kw], s2, g->in[2], g->out[2], &lo[kw], &hi[kw]);                       \
            ilo = lo[kw] > ilo ? lo[kw] : ilo;                                                     \
            ihi = hi[kw] < ihi ? hi[kw] : ihi;                                                     \
        }                                                                                          \
        if (ihi < ilo) ihi = ilo;                                                                  \
        for (int kw = 0; kw < 3; kw++) { /* the edges: positions outside [ilo, ihi) */             \
            dw_tap_##T(s2, off[kw], wk[kw], row, yr, lo[kw], hi[kw] < ilo ? hi[kw] : ilo);         \
            dw_tap_##T(s2, off[kw], wk[kw], row, yr, lo[kw] > ihi ? lo[kw] : ihi, hi[kw]);         \
        }                                                                                          \
        const T w0 = wk[0], w1 = wk[1], w2 = wk[2];                                                \
        const T *restrict r0 = row + off[0], *restrict r1 = row + off[1],                          \
                          *restrict r2 = row + off[2];                                             \
        if (s2 == 1)                                                                               \
            for (int64_t ow = ilo; ow < ihi; ow++)                                                 \
                yr[ow] = ((yr[ow] + w0 * r0[ow]) + w1 * r1[ow]) + w2 * r2[ow];                     \
        else                                                                                       \
            for (int64_t ow = ilo; ow < ihi; ow++)                                                 \
                yr[ow] = ((yr[ow] + w0 * r0[ow * s2]) + w1 * r1[ow * s2]) + w2 * r2[ow * s2];      \
    }

#define DEPTHWISE(T)                                                                               \
    DW_TAP(T)                                                                                      \
    DW_ROW(T)                                                                                      \
    SS_ISA_INLINE void depthwise_##T##_body DW_PARAMS(T)                                           \
    {                                                                                              \
        for (int64_t od = 0; od < g->out[0]; od++)                                                 \
            for (int64_t oh = 0; oh < g->out[1]; oh++) {                                           \
                T *restrict yr = y + (od * g->out[1] + oh) * g->out[2];                            \
                for (int64_t kd = 0; kd < g->k[0]; kd++) {                                         \
                    int64_t id = od * g->s[0] - g->pb[0] + kd * g->d[0];                           \
                    if (id < 0 || id >= g->in[0]) continue;                                        \
                    for (int64_t kh = 0; kh < g->k[1]; kh++) {                                     \
                        int64_t ih = oh * g->s[1] - g->pb[1] + kh * g->d[1];                       \
                        if (ih < 0 || ih >= g->in[1]) continue;                                    \
                        dw_row_##T(g, x + (id * g->in[1] + ih) * g->in[2],                         \
                                   w + (kd * g->k[1] + kh) * g->k[2], yr);                         \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
    }

DEPTHWISE(float)
DEPTHWISE(double)
SS_ISA_VARIANTS(void, depthwise_float, DW_PARAMS(float), DW_ARGS)
SS_ISA_VARIANTS(void, depthwise_double, DW_PARAMS(double), DW_ARGS)

/* Y's channels of one image start as the bias (or zero); the gemms accumulate into them. */
static void fill_bias(void *y, const ss_tensor *b, int64_t channels, int64_t vol, size_t es)
{
    static const double zero = 0; /* zero bytes for float and double */
    for (int64_t m = 0; m < channels; m++)
        ss_op_fill((char *)y + (size_t)(m * vol) * es,
                   b ? (const char *)b->data + (size_t)m * es : (const void *)&zero, vol, es);
}

/* One image: depthwise taps, or per group im2col (unless direct) and one gemm into Y. */
/* Depthwise channels split over the worker pool: each thread claims the next channel. */
typedef struct {
    const conv_plan *p;
    const void *x, *w;
    void *y;
    int64_t next; /* the next unclaimed channel (__atomic_fetch_add) */
} dw_job;

#define DW_PART(T)                                                                                 \
    static void dw_part_##T(void *ctx, int part, int parts)                                        \
    {                                                                                              \
        (void)part, (void)parts;                                                                   \
        dw_job *j = ctx;                                                                           \
        const conv_plan *p = j->p;                                                                 \
        const T *x = j->x, *w = j->w;                                                              \
        T *y = j->y;                                                                               \
        for (int64_t c; (c = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED)) < p->C;)           \
            depthwise_##T(&p->g, x + c * p->g.ivol, w + c * p->g.kvol, y + c * p->g.ovol);         \
    }

DW_PART(float)
DW_PART(double)

#define CONV_IMAGE(T, GEMM)                                                                        \
    static void conv_image_##T(const conv_plan *p, const T *x, const T *w, T *y)                   \
    {                                                                                              \
        int64_t ovol = p->g.ovol, ivol = p->g.ivol, K = p->cg * p->g.kvol;                         \
        if (p->depthwise) {                                                                        \
            dw_job j = {p, x, w, y, 0};                                                            \
            ss_pool_run(p->threads, dw_part_##T, &j);                                              \
            return;                                                                                \
        }                                                                                          \
        for (int64_t gi = 0; gi < p->group; gi++) {                                                \
            const T *col = x + gi * p->cg * ivol;                                                  \
            if (!p->direct) {                                                                      \
                im2col_##T(&p->g, p->cg, col, p->col);                                             \
                col = p->col;                                                                      \
            }                                                                                      \
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)p->mg, (blasint)ovol,         \
                 (blasint)K, 1, w + gi * p->mg * K, (blasint)K, col, (blasint)ovol, 1,             \
                 y + gi * p->mg * ovol, (blasint)ovol);                                            \
        }                                                                                          \
    }

/* A 1x1 Conv is Y[M, HW] = W[M, C] x X[C, HW] straight on NCHW: the own kernel reads X where it
 * lies and accumulates onto the bias rows (no packing, no im2col); OpenBLAS packs X per call. */
#define PW_SGEMM(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)                      \
    (p->pw_own ? ss_gemm_small(p->pw_variant, M, N, K, alpha, A, lda, B, ldb, true, C, ldc,        \
                               p->pw_threads)                                                      \
               : cblas_sgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))

CONV_IMAGE(float, PW_SGEMM)
CONV_IMAGE(double, cblas_dgemm)

static ss_status *conv_run_native(ss_kctx *k)
{
    const conv_plan *p = k->state;
    const ss_tensor *x = k->in[0], *b = k->n_in > 2 ? k->in[2] : NULL;
    size_t es = ss_dtype_size(x->dtype);
    if (p->g.ovol == 0 || p->M == 0 || p->N == 0) return NULL;
    if (p->dnnl) return ss_dnnl_conv_run(p->dnnl, x->data, k->out[0]->data, k->scratch);
    for (int64_t n = 0; n < p->N; n++) {
        const char *xn = (const char *)x->data + (size_t)(n * p->C * p->g.ivol) * es;
        char *yn = (char *)k->out[0]->data + (size_t)(n * p->M * p->g.ovol) * es;
        fill_bias(yn, b, p->M, p->g.ovol, es);
        if (p->cg * p->g.kvol == 0) continue;
        if (x->dtype == SS_DT_FLOAT32)
            conv_image_float(p, (const float *)xn, k->in[1]->data, (float *)yn);
        else
            conv_image_double(p, (const double *)xn, k->in[1]->data, (double *)yn);
    }
    return NULL;
}

/* ------------------------------------------------------------------ ConvTranspose */

/*
 * The adjoint of Conv: per (image, group) one gemm col = W_g^T X_g, then col2im scatters col
 * into Y (which starts as the bias). The geometry is Conv's with the roles of the images
 * swapped: g.in is Y's spatial shape, g.out is X's.
 */
static const char *const convt_attrs[] = {"auto_pad",     "dilations",      "group",
                                          "kernel_shape", "output_padding", "output_shape",
                                          "pads",         "strides",        NULL};

static ss_status *convt_geom(const ss_kctx *k, const ss_tensor *x, const int64_t *kernel, geom *g)
{
    int nsp = x->ndim - 2;
    window_attrs w;
    int64_t opad[3], oshape[3];
    ss_status *st = read_window(k, nsp, &w);
    if (!st) st = read_spatial(k, "output_padding", nsp, 0, opad);
    if (st) return st;
    const int64_t *os;
    int n_os = ss_onnx_attr_ints(k->node, "output_shape", &os);
    if (n_os >= 0 && n_os != nsp && n_os != nsp + 2)
        return ss_op_err(k, SS_ERR_INVALID, "attribute 'output_shape' has %d values, expected %d",
                         n_os, nsp);
    for (int i = 0; n_os >= 0 && i < nsp; i++) {
        oshape[i] = os[n_os - nsp + i];
        if (oshape[i] < 0 || oshape[i] > WINDOW_MAX)
            return ss_op_err(k, SS_ERR_INVALID,
                             "attribute 'output_shape' value %lld is out of range (0..%lld)",
                             (long long)oshape[i], (long long)WINDOW_MAX);
    }
    geom_reset(g, nsp);
    for (int i = 0; i < nsp; i++) {
        int64_t in = x->dims[2 + i], ek = (kernel[i] - 1) * w.d[i] + 1, out, pb, pe;
        if (kernel[i] < 1 || w.s[i] < 1 || w.d[i] < 1 || opad[i] < 0)
            return ss_op_err(k, SS_ERR_INVALID,
                             "kernel sizes, strides and dilations must be positive");
        int64_t full, scaled;
        if (__builtin_mul_overflow(w.s[i], in, &scaled) || scaled > INT64_MAX / 2)
            return ss_op_err(k, SS_ERR_LIMIT, "stride %lld times input size %lld is over 2^62",
                             (long long)w.s[i], (long long)in);
        full = scaled - w.s[i] + opad[i] + ek;
        if (n_os >= 0 || w.same_upper || w.same_lower) {
            out = n_os >= 0 ? oshape[i] : scaled;
            int64_t total = full - out; /* a larger output is padded at the end, as in ORT */
            if (total < 0) total = 0;
            pb = w.same_upper ? total / 2 : total - total / 2;
            pe = total - pb;
        } else {
            pb = w.valid ? 0 : w.pads[i];
            pe = w.valid ? 0 : w.pads[nsp + i];
            out = full - pb - pe;
        }
        if (out < 0)
            return ss_op_err(k, SS_ERR_INVALID, "negative output size %lld", (long long)out);
        if ((st = geom_set_dim(k, g, i, out, in, kernel[i], &w, pb, pe))) /* "in" is Y */
            return st;
    }
    return NULL;
}

static ss_status *convt_infer_native(ss_kctx *k)
{
    int64_t kernel[SS_MAX_DIMS];
    ss_status *st = conv_inputs(k, convt_attrs, kernel);
    if (st) return st;
    const ss_tensor *x = k->in[0], *w = k->in[1], *b = k->n_in > 2 ? k->in[2] : NULL;
    int64_t group = ss_onnx_attr_int(k->node, "group", 1), C = x->dims[1];
    if (group < 1 || C % group || w->dims[0] != C)
        return ss_op_err(k, SS_ERR_INVALID, "channels (X %lld, W %lld) do not fit group %lld",
                         (long long)C, (long long)w->dims[0], (long long)group);
    int64_t M = w->dims[1] * group;
    if (b && (b->ndim != 1 || b->dims[0] != M))
        return ss_op_err(k, SS_ERR_INVALID, "B must have shape [%lld]", (long long)M);
    geom g;
    st = convt_geom(k, x, kernel, &g);
    if (st) return st;
    size_t col_bytes =
        (size_t)w->dims[1] * (size_t)g.kvol * (size_t)g.ovol * ss_dtype_size(x->dtype);
    conv_plan *p = NULL;
    if ((st = conv_plan_new(k, &g, C, M, group, col_bytes, &p))) return st;
    geom_shape(&g, g.in, p->N, M, k->out[0], x->dtype);
    return NULL;
}

/* Adds the column matrix (rows (m, kd, kh, kw), columns X's positions) into Y's channels. */
#define COL2IM(T)                                                                                  \
    static void col2im_##T(const geom *g, int64_t mg, const T *restrict col, T *restrict y)        \
    {                                                                                              \
        const int64_t *in = g->in, *out = g->out;                                                  \
        for (int64_t c = 0; c < mg; c++)                                                           \
            for (int64_t kd = 0; kd < g->k[0]; kd++)                                               \
                for (int64_t kh = 0; kh < g->k[1]; kh++)                                           \
                    for (int64_t kw = 0; kw < g->k[2]; kw++) {                                     \
                        int64_t offw = kw * g->d[2] - g->pb[2], lo, hi;                            \
                        valid_range(offw, g->s[2], in[2], out[2], &lo, &hi);                       \
                        for (int64_t od = 0; od < out[0]; od++) {                                  \
                            int64_t id = od * g->s[0] - g->pb[0] + kd * g->d[0];                   \
                            if (id < 0 || id >= in[0]) continue;                                   \
                            for (int64_t oh = 0; oh < out[1]; oh++) {                              \
                                int64_t ih = oh * g->s[1] - g->pb[1] + kh * g->d[1];               \
                                if (ih < 0 || ih >= in[1]) continue;                               \
                                const T *restrict src = col + (od * out[1] + oh) * out[2];         \
                                T *restrict dst = y + ((c * in[0] + id) * in[1] + ih) * in[2];     \
                                int64_t s = g->s[2];                                               \
                                for (int64_t ow = lo; ow < hi; ow++)                               \
                                    dst[ow * s + offw] += src[ow];                                 \
                            }                                                                      \
                        }                                                                          \
                        col += g->ovol;                                                            \
                    }                                                                              \
    }

COL2IM(float)
COL2IM(double)

/* One image: per group one gemm into the column buffer, then col2im adds it into Y. */
#define CONVT_IMAGE(T, GEMM)                                                                       \
    static void convt_image_##T(const conv_plan *p, const T *x, const T *w, T *y)                  \
    {                                                                                              \
        int64_t xvol = p->g.ovol, yvol = p->g.ivol, R = p->mg * p->g.kvol;                         \
        for (int64_t gi = 0; gi < p->group; gi++) {                                                \
            GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)R, (blasint)xvol,               \
                 (blasint)p->cg, 1, w + gi * p->cg * R, (blasint)R, x + gi * p->cg * xvol,         \
                 (blasint)xvol, 0, p->col, (blasint)xvol);                                         \
            col2im_##T(&p->g, p->mg, p->col, y + gi * p->mg * yvol);                               \
        }                                                                                          \
    }

CONVT_IMAGE(float, cblas_sgemm)
CONVT_IMAGE(double, cblas_dgemm)

static ss_status *convt_run_native(ss_kctx *k)
{
    const conv_plan *p = k->state;
    const ss_tensor *x = k->in[0], *b = k->n_in > 2 ? k->in[2] : NULL;
    size_t es = ss_dtype_size(x->dtype);
    int64_t xvol = p->g.ovol, yvol = p->g.ivol;
    if (yvol == 0 || p->M == 0 || p->N == 0) return NULL;
    for (int64_t n = 0; n < p->N; n++) {
        const char *xn = (const char *)x->data + (size_t)(n * p->C * xvol) * es;
        char *yn = (char *)k->out[0]->data + (size_t)(n * p->M * yvol) * es;
        fill_bias(yn, b, p->M, yvol, es);
        if (xvol == 0 || p->cg == 0) continue;
        if (x->dtype == SS_DT_FLOAT32)
            convt_image_float(p, (const float *)xn, k->in[1]->data, (float *)yn);
        else
            convt_image_double(p, (const double *)xn, k->in[1]->data, (double *)yn);
    }
    return NULL;
}

/* ------------------------------------------------------------------ MaxPool / AveragePool */

typedef struct {
    geom g;
    int64_t planes; /* N * C */
    bool is_max, include_pad, col_major;
    bool is_lp; /* LpPool: (sum |x|^lp)^(1/lp) over the window; padding adds 0 */
    double lp;
    ss_dnnl_pool *dnnl; /* MaxPool on oneDNN: only when X arrives in oneDNN's layout */
} pool_plan;

static void pool_release(void *state)
{
    ss_dnnl_pool_free(((pool_plan *)state)->dnnl);
}

/* A float32 MaxPool without Indices can run on oneDNN's pooling in the layout its input is in
 * (the layout pass): max is exact, so the values are the own kernel's. With a plain input it
 * stays on the own kernel, which needs no reorders. */
static bool pool_layout_ok(const ss_kctx *k)
{
    const pool_plan *p = k->state;
    ss_kernels mode = ss_kernels_mode();
    return p && p->is_max && k->in[0]->dtype == SS_DT_FLOAT32 && (k->n_out < 2 || !k->out[1]) &&
           p->planes > 0 && p->g.ovol > 0 && (mode == SS_KERNELS_AUTO || mode == SS_KERNELS_ONEDNN);
}

static ss_status *pool_relayout(ss_kctx *k, const void *in, bool out_native, const void **out)
{
    pool_plan *p = k->state;
    *out = NULL;
    if (!in) return NULL;
    ss_dnnl_pool_desc d = {.nsp = p->g.nsp, .src_layout = in, .y_native = out_native};
    for (int i = 0; i < 3; i++) {
        d.in[i] = p->g.in[i], d.out[i] = p->g.out[i], d.kernel[i] = p->g.k[i];
        d.stride[i] = p->g.s[i], d.dilation[i] = p->g.d[i];
        d.pad_begin[i] = p->g.pb[i], d.pad_end[i] = p->g.pe[i];
    }
    int t = ss_kctx_threads(k);
    d.threads = ss_dnnl_threads(p->planes * p->g.ovol * p->g.kvol, t);
    size_t scratch = 0;
    ss_status *st = ss_dnnl_pool_create(&d, &p->dnnl, &scratch, out);
    if (st) return ss_op_err(k, st->code, "%s", st->msg);
    if (scratch > k->scratch_bytes) k->scratch_bytes = scratch;
    SS_DEBUG("%s: oneDNN pooling on the producer's layout%s", k->node_name,
             out_native ? ", output kept in it" : "");
    return NULL;
}

static const char *const maxpool_attrs[] = {
    "auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides", NULL};
static const char *const avgpool_attrs[] = {
    "auto_pad",     "ceil_mode", "count_include_pad", "dilations",
    "kernel_shape", "pads",      "strides",           NULL};

static const char *const lppool_attrs[] = {"auto_pad", "ceil_mode", "dilations", "kernel_shape",
                                           "p",        "pads",      "strides",   NULL};

/* LpPool's and GlobalLpPool's p: a float attribute at opset 1, an int from opset 2 (default 2) */
static ss_status *lp_order(const ss_kctx *k, double *lp)
{
    const ss_onnx_attr *a = ss_onnx_attr_find(k->node, "p");
    if (a && a->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT)
        *lp = a->f;
    else
        *lp = (double)ss_onnx_attr_int(k->node, "p", 2);
    if (!(*lp > 0) || !isfinite(*lp))
        return ss_op_err(k, SS_ERR_INVALID, "attribute 'p' %g must be positive", *lp);
    return NULL;
}

/* The window geometry of a pool over x (rank >= 3) from the node's attributes, and output 0's
 * shape (x's dtype). */
static ss_status *pool_geometry(ss_kctx *k, const ss_tensor *x, pool_plan *p)
{
    if (x->ndim < 3)
        return ss_op_err(k, SS_ERR_INVALID, "X must have rank >= 3 (N, C, spatial...)");
    int nsp = x->ndim - 2;
    int64_t kernel[SS_MAX_DIMS];
    const int64_t *kv;
    if (ss_onnx_attr_ints(k->node, "kernel_shape", &kv) != nsp)
        return ss_op_err(k, SS_ERR_INVALID, "attribute 'kernel_shape' must have %d values", nsp);
    for (int i = 0; i < nsp; i++) {
        kernel[i] = kv[i];
        if (kernel[i] > WINDOW_MAX)
            return ss_op_err(k, SS_ERR_INVALID, "attribute 'kernel_shape' value %lld is over %lld",
                             (long long)kernel[i], (long long)WINDOW_MAX);
    }
    ss_status *st = geom_init(k, x, kernel, ss_onnx_attr_int(k->node, "ceil_mode", 0) != 0, &p->g);
    if (st) return st;
    p->planes = x->dims[0] * x->dims[1];
    p->include_pad = ss_onnx_attr_int(k->node, "count_include_pad", 0) != 0;
    geom_shape(&p->g, p->g.out, x->dims[0], x->dims[1], k->out[0], x->dtype);
    return NULL;
}

size_t ss_avgpool_plan_bytes(void)
{
    return sizeof(pool_plan);
}

ss_status *ss_avgpool_plan_init(ss_kctx *k, const ss_tensor *x, void *plan)
{
    pool_plan *p = plan;
    ss_status *st = pool_geometry(k, x, p);
    for (int i = 0; !st && i < 3; i++)
        if (p->g.d[i] != 1)
            st = ss_op_err(k, SS_ERR_UNSUPPORTED, "attribute 'dilations' other than 1");
    return st;
}

static ss_status *pool_infer_native(ss_kctx *k)
{
    bool is_max = strcmp(k->node->op_type, "MaxPool") == 0;
    bool is_lp = strcmp(k->node->op_type, "LpPool") == 0;
    static const ss_dtype max_types[] = {SS_DT_FLOAT32, SS_DT_FLOAT64, SS_DT_UINT8, SS_DT_INT8};
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st)
        st = ss_op_check_attrs(k, is_max ? maxpool_attrs : is_lp ? lppool_attrs : avgpool_attrs);
    if (!st) st = ss_op_expect_dtype(k, 0, max_types, is_max ? 4 : 2);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    pool_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    if ((st = pool_geometry(k, x, p))) return st;
    p->is_lp = is_lp;
    if (is_lp && (st = lp_order(k, &p->lp))) return st;
    if (is_lp && k->opset < 18 &&
        (ss_onnx_attr_find(k->node, "dilations") || ss_onnx_attr_find(k->node, "ceil_mode")))
        return ss_op_err(k, SS_ERR_INVALID, "attributes 'dilations' and 'ceil_mode' need opset 18");
    /* AveragePool's divisor counts undilated taps: opset 19's dilations only as all ones */
    for (int i = 0; !is_max && !is_lp && i < 3; i++)
        if (p->g.d[i] != 1)
            return ss_op_err(k, SS_ERR_UNSUPPORTED, "attribute 'dilations' other than 1");
    if (!is_max && !is_lp && k->opset < 19 && ss_onnx_attr_find(k->node, "dilations"))
        return ss_op_err(k, SS_ERR_INVALID, "attribute 'dilations' needs opset 19");
    p->is_max = is_max;
    p->col_major = ss_onnx_attr_int(k->node, "storage_order", 0) != 0;
    int nsp = x->ndim - 2;
    if (k->n_out > 2) return ss_op_err(k, SS_ERR_INVALID, "has %d outputs, at most 2", k->n_out);
    if (k->n_out > 1 && k->out[1]) {
        if (!is_max) return ss_op_err(k, SS_ERR_INVALID, "%s has one output", k->node->op_type);
        if (p->col_major && nsp == 3)
            return ss_op_err(k, SS_ERR_UNSUPPORTED,
                             "attribute 'storage_order' = 1 with 3 spatial dims");
        geom_shape(&p->g, p->g.out, x->dims[0], x->dims[1], k->out[1], SS_DT_INT64);
    }
    return NULL;
}

/* For each tap of output (od, oh, ow)'s window that falls inside X: id, ih, iw and `row`, the
 * plane's input row (xp) at (id, ih); then the statements after. Padding is never visited. */
#define FOR_EACH_TAP(T, g, xp, od, oh, ow, ...)                                                    \
    for (int64_t kd = 0; kd < (g)->k[0]; kd++) {                                                   \
        int64_t id = (od) * (g)->s[0] - (g)->pb[0] + kd * (g)->d[0];                               \
        if (id < 0 || id >= (g)->in[0]) continue;                                                  \
        for (int64_t kh = 0; kh < (g)->k[1]; kh++) {                                               \
            int64_t ih = (oh) * (g)->s[1] - (g)->pb[1] + kh * (g)->d[1];                           \
            if (ih < 0 || ih >= (g)->in[1]) continue;                                              \
            const T *row = (xp) + (id * (g)->in[1] + ih) * (g)->in[2];                             \
            for (int64_t kw = 0; kw < (g)->k[2]; kw++) {                                           \
                int64_t iw = (ow) * (g)->s[2] - (g)->pb[2] + kw * (g)->d[2];                       \
                if (iw < 0 || iw >= (g)->in[2]) continue;                                          \
                __VA_ARGS__                                                                        \
            }                                                                                      \
        }                                                                                          \
    }

/* Max over each window; padding never wins. Indices are flat positions in X. */
#define MAXPOOL(T, LOWEST)                                                                         \
    static void maxpool_##T(const pool_plan *p, const T *x, T *y, int64_t *ind)                    \
    {                                                                                              \
        const geom *g = &p->g;                                                                     \
        for (int64_t pl = 0; pl < p->planes; pl++) {                                               \
            const T *xp = x + pl * g->ivol;                                                        \
            for (int64_t od = 0; od < g->out[0]; od++)                                             \
                for (int64_t oh = 0; oh < g->out[1]; oh++)                                         \
                    for (int64_t ow = 0; ow < g->out[2]; ow++) {                                   \
                        T best = LOWEST;                                                           \
                        int64_t bi = -1;                                                           \
                        FOR_EACH_TAP(                                                              \
                            T, g, xp, od, oh, ow, if (bi < 0 || row[iw] > best) {                  \
                                best = row[iw];                                                    \
                                bi = p->col_major ? ih + iw * g->in[1]                             \
                                                  : (id * g->in[1] + ih) * g->in[2] + iw;          \
                            })                                                                     \
                        int64_t o = ((pl * g->out[0] + od) * g->out[1] + oh) * g->out[2] + ow;     \
                        y[o] = best;                                                               \
                        if (ind) ind[o] = pl * g->ivol + (bi < 0 ? 0 : bi);                        \
                    }                                                                              \
        }                                                                                          \
    }

/* (sum of |x|^lp over the window's taps inside X)^(1/lp); squares and a root for lp = 2 */
#define LPPOOL(T)                                                                                  \
    static void lppool_##T(const pool_plan *p, const T *x, T *y)                                   \
    {                                                                                              \
        const geom *g = &p->g;                                                                     \
        bool two = p->lp == 2;                                                                     \
        int64_t o = 0;                                                                             \
        for (int64_t pl = 0; pl < p->planes; pl++) {                                               \
            const T *xp = x + pl * g->ivol;                                                        \
            for (int64_t od = 0; od < g->out[0]; od++)                                             \
                for (int64_t oh = 0; oh < g->out[1]; oh++)                                         \
                    for (int64_t ow = 0; ow < g->out[2]; ow++, o++) {                              \
                        double acc = 0;                                                            \
                        FOR_EACH_TAP(T, g, xp, od, oh, ow, double v = fabs((double)row[iw]);       \
                                     acc += two ? v * v : pow(v, p->lp);)                          \
                        y[o] = (T)(two ? sqrt(acc) : pow(acc, 1.0 / p->lp));                       \
                    }                                                                              \
        }                                                                                          \
    }

LPPOOL(float)
LPPOOL(double)

MAXPOOL(float, -INFINITY)
MAXPOOL(double, -INFINITY)
MAXPOOL(uint8_t, 0)
MAXPOOL(int8_t, INT8_MIN)

/* Row at a time: every valid (kd, kh, kw) tap folds a strided input row into the output row,
 * so the inner loop has no bounds checks. Average divides by the tap count at the end. */
#define POOL_ROWS(T, NAME, IS_MAX, LOWEST)                                                         \
    SS_ISA_INLINE void NAME##_body(const pool_plan *p, const T *x, T *y)                           \
    {                                                                                              \
        const geom *g = &p->g;                                                                     \
        int64_t s2 = g->s[2];                                                                      \
        for (int64_t pl = 0; pl < p->planes; pl++) {                                               \
            const T *xp = x + pl * g->ivol;                                                        \
            for (int64_t od = 0; od < g->out[0]; od++)                                             \
                for (int64_t oh = 0; oh < g->out[1]; oh++) {                                       \
                    T *restrict yr = y + ((pl * g->out[0] + od) * g->out[1] + oh) * g->out[2];     \
                    for (int64_t ow = 0; ow < g->out[2]; ow++)                                     \
                        yr[ow] = IS_MAX ? (LOWEST) : 0;                                            \
                    for (int64_t kd = 0; kd < g->k[0]; kd++) {                                     \
                        int64_t id = od * g->s[0] - g->pb[0] + kd * g->d[0];                       \
                        if (id < 0 || id >= g->in[0]) continue;                                    \
                        for (int64_t kh = 0; kh < g->k[1]; kh++) {                                 \
                            int64_t ih = oh * g->s[1] - g->pb[1] + kh * g->d[1];                   \
                            if (ih < 0 || ih >= g->in[1]) continue;                                \
                            const T *restrict row = xp + (id * g->in[1] + ih) * g->in[2];          \
                            for (int64_t kw = 0; kw < g->k[2]; kw++) {                             \
                                int64_t off = kw * g->d[2] - g->pb[2], lo, hi;                     \
                                valid_range(off, s2, g->in[2], g->out[2], &lo, &hi);               \
                                if (IS_MAX && s2 == 1)                                             \
                                    for (int64_t ow = lo; ow < hi; ow++)                           \
                                        yr[ow] = row[ow + off] > yr[ow] ? row[ow + off] : yr[ow];  \
                                else if (IS_MAX)                                                   \
                                    for (int64_t ow = lo; ow < hi; ow++)                           \
                                        yr[ow] = row[ow * s2 + off] > yr[ow] ? row[ow * s2 + off]  \
                                                                             : yr[ow];             \
                                else if (s2 == 1)                                                  \
                                    for (int64_t ow = lo; ow < hi; ow++)                           \
                                        yr[ow] += row[ow + off];                                   \
                                else                                                               \
                                    for (int64_t ow = lo; ow < hi; ow++)                           \
                                        yr[ow] += row[ow * s2 + off];                              \
                            }                                                                      \
                        }                                                                          \
                    }                                                                              \
                    if (IS_MAX) continue;                                                          \
                    for (int64_t ow = 0; ow < g->out[2]; ow++) {                                   \
                        int64_t o3[3] = {od, oh, ow}, padded = 1, count = 1;                       \
                        for (int i = 0; i < 3; i++) {                                              \
                            int64_t st = o3[i] * g->s[i] - g->pb[i], en = st + g->k[i];            \
                            int64_t pen = en < g->in[i] + g->pe[i] ? en : g->in[i] + g->pe[i];     \
                            int64_t lo = st < 0 ? 0 : st, hi = en < g->in[i] ? en : g->in[i];      \
                            padded *= pen - st;                                                    \
                            count *= hi > lo ? hi - lo : 0;                                        \
                        }                                                                          \
                        int64_t div = p->include_pad ? padded : count;                             \
                        yr[ow] = (T)(div > 0 ? (double)yr[ow] / (double)div : 0);                  \
                    }                                                                              \
                }                                                                                  \
        }                                                                                          \
    }

/* each compiled per ISA (isa.h) */
#define POOL_ROWS_ISA(T, NAME, IS_MAX, LOWEST)                                                     \
    POOL_ROWS(T, NAME, IS_MAX, LOWEST)                                                             \
    SS_ISA_VARIANTS(void, NAME, (const pool_plan *p, const T *x, T *y), (p, x, y))

POOL_ROWS_ISA(float, avgpool_float, 0, 0)
POOL_ROWS_ISA(double, avgpool_double, 0, 0)
POOL_ROWS_ISA(float, maxrows_float, 1, -INFINITY)
POOL_ROWS_ISA(double, maxrows_double, 1, -INFINITY)
POOL_ROWS_ISA(uint8_t, maxrows_uint8_t, 1, 0)
POOL_ROWS_ISA(int8_t, maxrows_int8_t, 1, INT8_MIN)

void ss_avgpool_run_f32(const void *plan, const float *x, float *y)
{
    avgpool_float(plan, x, y);
}

ss_status *ss_maxpool_plan_init(ss_kctx *k, const ss_tensor *x, void *plan)
{
    pool_plan *p = plan;
    ss_status *st = pool_geometry(k, x, p);
    p->is_max = true;
    return st;
}

void ss_maxpool_run_q8(const void *plan, ss_dtype dt, const void *x, void *y)
{
    if (dt == SS_DT_INT8)
        maxrows_int8_t(plan, x, y);
    else
        maxrows_uint8_t(plan, x, y);
}

static ss_status *pool_run_native(ss_kctx *k)
{
    const pool_plan *p = k->state;
    const void *x = k->in[0]->data;
    void *y = k->out[0]->data;
    int64_t *ind = k->n_out > 1 && k->out[1] ? k->out[1]->data : NULL;
    if (p->dnnl) return ss_dnnl_pool_run(p->dnnl, x, y, k->scratch);
    /* the per-window loop tracks the argmax; without an Indices output whole rows are folded */
    switch (k->in[0]->dtype) {
    case SS_DT_FLOAT32:
        if (p->is_lp)
            lppool_float(p, x, y);
        else if (!p->is_max)
            avgpool_float(p, x, y);
        else if (ind)
            maxpool_float(p, x, y, ind);
        else
            maxrows_float(p, x, y);
        break;
    case SS_DT_FLOAT64:
        if (p->is_lp)
            lppool_double(p, x, y);
        else if (!p->is_max)
            avgpool_double(p, x, y);
        else if (ind)
            maxpool_double(p, x, y, ind);
        else
            maxrows_double(p, x, y);
        break;
    case SS_DT_UINT8:
        ind ? maxpool_uint8_t(p, x, y, ind) : maxrows_uint8_t(p, x, y);
        break;
    case SS_DT_INT8:
        ind ? maxpool_int8_t(p, x, y, ind) : maxrows_int8_t(p, x, y);
        break;
    default:
        return ss_op_err(k, SS_ERR_INTERNAL, "unexpected type");
    }
    return NULL;
}

/* ------------------------------------------------------------------ global pools */

typedef struct {
    int64_t planes, len;
    bool is_max, is_lp;
    double lp; /* GlobalLpPool's p */
} gpool_plan;

static ss_status *gpool_infer_native(ss_kctx *k)
{
    static const char *const none[] = {NULL}, *const lp_attrs[] = {"p", NULL};
    bool is_lp = strcmp(k->node->op_type, "GlobalLpPool") == 0;
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = ss_op_check_attrs(k, is_lp ? lp_attrs : none);
    if (!st) st = ss_op_expect_float(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->ndim < 2) return ss_op_err(k, SS_ERR_INVALID, "X must have rank >= 2 (N, C, ...)");
    gpool_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->planes = x->dims[0] * x->dims[1];
    p->len = 1;
    for (int d = 2; d < x->ndim; d++)
        p->len *= x->dims[d];
    p->is_max = strcmp(k->node->op_type, "GlobalMaxPool") == 0;
    p->is_lp = is_lp;
    if (is_lp && (st = lp_order(k, &p->lp))) return st;
    ss_tensor *y = k->out[0];
    ss_op_same_shape(y, x);
    for (int d = 2; d < y->ndim; d++)
        y->dims[d] = 1;
    return NULL;
}

/* A plane's sum in double: GPOOL_LANES partial sums (element i goes to lane i % GPOOL_LANES),
 * added in lane order at the end. One running sum was a serial chain of scalar adds; the lanes
 * vectorize, and fixing the lane of each element keeps the result the same on every ISA. */
#define GPOOL_LANES 8
#define GPOOL_SUM(T)                                                                               \
    SS_ISA_INLINE double gpool_sum_##T##_body(const T *restrict r, int64_t len)                    \
    {                                                                                              \
        double lane[GPOOL_LANES] = {0}, s = 0;                                                     \
        int64_t full = len - len % GPOOL_LANES;                                                    \
        for (int64_t i = 0; i < full; i += GPOOL_LANES)                                            \
            for (int j = 0; j < GPOOL_LANES; j++)                                                  \
                lane[j] += (double)r[i + j];                                                       \
        for (int64_t i = full; i < len; i++)                                                       \
            lane[i - full] += (double)r[i];                                                        \
        for (int j = 0; j < GPOOL_LANES; j++)                                                      \
            s += lane[j];                                                                          \
        return s;                                                                                  \
    }                                                                                              \
    SS_ISA_VARIANTS(double, gpool_sum_##T, (const T *restrict r, int64_t len), (r, len))

GPOOL_SUM(float)
GPOOL_SUM(double)

#define GPOOL(T)                                                                                   \
    do {                                                                                           \
        const T *x = k->in[0]->data;                                                               \
        T *y = k->out[0]->data;                                                                    \
        for (int64_t pl = 0; pl < p->planes; pl++) {                                               \
            const T *restrict r = x + pl * p->len;                                                 \
            if (p->is_max) {                                                                       \
                T m = p->len ? r[0] : (T)-INFINITY;                                                \
                for (int64_t i = 1; i < p->len; i++)                                               \
                    m = r[i] > m ? r[i] : m;                                                       \
                y[pl] = m;                                                                         \
            } else if (p->is_lp) {                                                                 \
                double acc = 0;                                                                    \
                for (int64_t i = 0; i < p->len; i++)                                               \
                    acc += pow(fabs((double)r[i]), p->lp);                                         \
                y[pl] = (T)pow(acc, 1.0 / p->lp);                                                  \
            } else {                                                                               \
                y[pl] = (T)(p->len ? gpool_sum_##T(r, p->len) / (double)p->len : NAN);             \
            }                                                                                      \
        }                                                                                          \
    } while (0)

static ss_status *gpool_run_native(ss_kctx *k)
{
    const gpool_plan *p = k->state;
    SS_OP_FLOAT_DISPATCH(k->in[0]->dtype, GPOOL);
    return NULL;
}

/* ------------------------------------------------------------------ ConvInteger, QLinearConv */

/*
 * Quantized Conv: int32 accumulation of (x - x_zero_point) * (w - w_zero_point) over the same
 * window geometry as Conv, so padding contributes nothing (the spec pads the zero-point-shifted
 * input with zeros). ConvInteger returns the int32 sums; QLinearConv adds its int32 bias, scales
 * by x_scale * w_scale / y_scale (w's per output channel where given), rounds half to even and
 * saturates into y_zero_point's type.
 *
 * The kernel is Conv's: im2col and a BLAS gemm, in float64, which holds every sum exactly (each
 * product of 9-bit differences is below 2^17, so 2^36 of them fit in 2^53): the result is the
 * spec's int32 sum. One image of X minus its zero point is kept as int16 and the column matrix is
 * built a block of output rows at a time, so the scratch stays small for a 1024x1024 image
 * (imgly's quantized isnet: its 119 ConvIntegers went from over 10 minutes of direct loops to
 * seconds). On CPUs with AVX512-VNNI a convolution with 16 or more output channels per group and
 * constant weights takes the exact int8 kernel instead (the VNNI path below: 4.7x the float64
 * path on a 64x64 3x3 56x56 QLinearConv, bench/RUNTIME.md), and a depthwise one (a channel per
 * group) direct int32 sums on any CPU.
 */
#define QCONV_BLOCK_COLS 8192 /* output positions per gemm (at least one output row) */

typedef struct {
    geom g;
    int64_t N, C, M, group, cg, mg;
    int64_t K, rows, block_rows; /* K = cg * kvol; rows = out[0] * out[1]; rows per block */
    int iw;                      /* W's input index: 1 (ConvInteger) or 3 (QLinearConv) */
    bool qlinear;
    /* the VNNI path (qconv_fast_plan), else NULL */
    const uint8_t *wpack; /* per group: ss_gemm_q8_pack_int of W, k in (kd, kh, kw, c) */
    ss_packed *wref;      /* the session's copy, or wowned */
    void *wowned;
    size_t group_bytes;        /* one group's packed bytes */
    int64_t lda;               /* bytes of one im2col row: K padded to 4 */
    int parts;                 /* of the worker pool */
    bool x_signed, w_unsigned; /* activations shifted to uint8, weights to int8 by 128 */
    bool depthwise;            /* one channel in and out per group: qconv_dw_run */
    bool gather;    /* cg a multiple of 4: the kernel reads the window taps where they are */
    int32_t wsum[]; /* per output channel: its packed weights' sum */
} qconv_plan;

/* A scalar or per-output-channel parameter (input i), or dflt when absent. */
static double qconv_param(const ss_kctx *k, int i, int64_t m, double dflt)
{
    if (i >= k->n_in || !k->in[i]) return dflt;
    return ss_op_elem_f64(k->in[i], ss_tensor_numel(k->in[i]) == 1 ? 0 : m);
}

static ss_status *qconv_check_param(const ss_kctx *k, int i, int64_t per, const char *what)
{
    if (i >= k->n_in || !k->in[i]) return NULL;
    int64_t n = ss_tensor_numel(k->in[i]);
    if (n != 1 && n != per)
        return ss_op_err(k, SS_ERR_INVALID, "%s has %lld values, expected 1 or %lld", what,
                         (long long)n, (long long)per);
    return NULL;
}

/* ------------------------------------------------------------------ the VNNI path
 * Where the CPU has AVX512-VNNI and W is a constant with at least QCONV_FAST_MIN_MG output
 * channels per group, the sums come from gemm_q8.h's exact int8 kernel instead: X' = X as uint8
 * (int8 X shifted by 128, with its zero point), W' = W as int8 (uint8 W shifted by 128, likewise),
 * so (X - x_zp)(W - w_zp) = (X' - x_zp')(W' - w_zp'), and
 *   sum (X' - zx)(W' - zw) = sum X'W' - zw sum X' - zx sum W' + K zx zw,
 * each term an exact integer: the same sums as the float64 path, so the same outputs. One image is
 * transposed to channels-last once; a pixel's im2col row is then its window's kvol runs of cg
 * channels (W packed with k in that order, once at plan time and shared through the session),
 * given as a pointer per tap (qconv_taps): read where they are (ss_gemm_q8_i32_taps) where cg is
 * a multiple of 4, else copied into rows first (qconv_rows); blocks of QCONV_FAST_ROWS pixels go to
 * the worker pool's parts. */
#define QCONV_FAST_MIN_MG 16
#define QCONV_FAST_ROWS 64
#define QCONV_FAST_MAX_K 32768 /* then no sum (at most K x 255 x 255) leaves int32 */

static bool same_qconv_pack(const void *a, const void *b)
{
    return !memcmp(a, b, 5 * sizeof(int64_t));
}

static void qconv_release(void *state)
{
    qconv_plan *p = state;
    ss_packed_release(p->wref);
    free(p->wowned);
    p->wref = NULL, p->wowned = NULL;
}

/* Scratch of the VNNI path: the channels-last image, each pixel's sum over each group's channels
 * (int32), then per part its rows, their sums and the kernel's int32 block. */
/* A part's block of taps (QCONV_FAST_ROWS x kvol pointers), then one run of cg zero points (the
 * padding taps'), then, on the copy path, the rows; each a multiple of 64 bytes. */
static size_t qconv_taps_bytes(const qconv_plan *p)
{
    return sizeof(void *) * (size_t)(QCONV_FAST_ROWS * p->g.kvol) + ((size_t)p->cg + 63) / 64 * 64;
}

static size_t qconv_rows_bytes(const qconv_plan *p)
{
    return qconv_taps_bytes(p) +
           (p->gather ? 0 : ((size_t)(QCONV_FAST_ROWS * p->lda) + 63) / 64 * 64);
}

static size_t qconv_part_bytes(const qconv_plan *p)
{
    return qconv_rows_bytes(p) +
           sizeof(int32_t) * (size_t)(QCONV_FAST_ROWS + QCONV_FAST_ROWS * p->mg) +
           (size_t)(QCONV_FAST_ROWS * p->mg) + 64;
}

/* Where the pixel sums and the parts' blocks start in the scratch. */
static size_t qconv_sums_at(const qconv_plan *p)
{
    return ((size_t)(p->C * p->g.ivol) + 63) / 64 * 64;
}

/* Then the channels' terms (qconv_job's zw64 .. mult), then the parts' blocks. */
static size_t qconv_chans_at(const qconv_plan *p)
{
    return (qconv_sums_at(p) + sizeof(int32_t) * (size_t)(p->group * p->g.ivol) + 63) / 64 * 64;
}

static size_t qconv_parts_at(const qconv_plan *p)
{
    size_t per_chan = 2 * sizeof(int64_t) + 2 * sizeof(int32_t) + sizeof(float);
    return qconv_chans_at(p) + per_chan * (size_t)p->M + 64;
}

static ss_status *qconv_fast_plan(ss_kctx *k, qconv_plan *p)
{
    const ss_tensor *w = k->in[p->iw], *wv = ss_kctx_value(k, p->iw);
    if (!ss_gemm_q8_supported() || ss_kernels_mode() == SS_KERNELS_BLAS || !wv || !wv->data ||
        p->mg < QCONV_FAST_MIN_MG || p->K < 1 || p->K > QCONV_FAST_MAX_K || p->g.ovol < 1)
        return NULL;
    p->x_signed = k->in[0]->dtype == SS_DT_INT8;
    p->w_unsigned = w->dtype == SS_DT_UINT8;
    p->group_bytes = ss_gemm_q8_packed_bytes(p->K, p->mg);
    p->lda = (p->K + 3) / 4 * 4;
    p->gather = p->cg % 4 == 0;
    int64_t lay[5] = {p->K, p->mg, p->group, p->cg, p->w_unsigned};
    const char *key = (const char *)wv->data + 4; /* qconv's copies (matmul.c keys 1 to 3) */
    p->wref = ss_kctx_packed_find(k, key, lay, same_qconv_pack);
    const uint8_t *wq = wv->data;
    int64_t kvol = p->g.kvol;
    if (p->wref) {
        p->wpack = ss_packed_data(p->wref);
    } else {
        uint8_t *pack = ss_huge_alloc(p->group_bytes * (size_t)p->group);
        uint8_t *wr = malloc((size_t)(p->mg * p->K)); /* one group, k as (kd, kh, kw, c) */
        if (!pack || !wr) {
            free(pack);
            free(wr);
            return NULL; /* the float64 path needs no more memory */
        }
        for (int64_t gi = 0; gi < p->group; gi++) {
            for (int64_t n = 0; n < p->mg; n++)
                for (int64_t c = 0; c < p->cg; c++)
                    for (int64_t t = 0; t < kvol; t++)
                        wr[n * p->K + t * p->cg + c] =
                            wq[((gi * p->mg + n) * p->cg + c) * kvol + t];
            ss_gemm_q8_pack_int(wr, p->w_unsigned, p->K, p->mg, p->K, true,
                                pack + (size_t)gi * p->group_bytes);
        }
        free(wr);
        p->wpack = pack;
        p->wref = ss_kctx_packed_add(k, key, lay, sizeof lay, pack);
        if (!p->wref) p->wowned = pack;
    }
    for (int64_t gi = 0; gi < p->group; gi++) /* the sums, in the packed values' terms */
        memcpy(p->wsum + gi * p->mg,
               ss_gemm_q8_colsum(p->wpack + (size_t)gi * p->group_bytes, p->mg),
               sizeof(int32_t) * (size_t)p->mg);
    ss_kctx_drop_const_pages(k, p->iw);
    int t = ss_kctx_threads(k);
    p->parts = t > 1 ? ss_gemm_pool_reserve(t) : 1;
    size_t need = qconv_parts_at(p) + (size_t)p->parts * qconv_part_bytes(p) + 64;
    if (need > k->scratch_bytes) k->scratch_bytes = need;
    SS_DEBUG("%s: int8 VNNI kernel (%lld channels per group, K %lld)", k->node_name,
             (long long)p->mg, (long long)p->K);
    return NULL;
}

static ss_status *qconv_dw_plan(ss_kctx *k, qconv_plan *p);

static ss_status *qconv_infer_common(ss_kctx *k, int iw, bool qlinear)
{
    ss_status *st = ss_op_check_attrs(k, conv_attrs);
    if (st) return st;
    const ss_tensor *x = k->in[0], *w = k->in[iw];
    if (!ss_quant_dtype8(x->dtype) || !ss_quant_dtype8(w->dtype))
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "x of type %s and w of type %s",
                         ss_dtype_name(x->dtype), ss_dtype_name(w->dtype));
    if (x->ndim < 3 || w->ndim != x->ndim)
        return ss_op_err(k, SS_ERR_INVALID, "x (rank %d) and w (rank %d) must have rank >= 3",
                         x->ndim, w->ndim);
    int64_t kernel[SS_MAX_DIMS];
    if ((st = read_spatial(k, "kernel_shape", x->ndim - 2, -1, kernel))) return st;
    for (int i = 0; i < x->ndim - 2; i++)
        if (kernel[i] >= 0 && kernel[i] != w->dims[2 + i])
            return ss_op_err(k, SS_ERR_INVALID, "attribute 'kernel_shape' does not match w");
    geom g;
    if ((st = geom_init(k, x, w->dims + 2, false, &g))) return st;
    int64_t group = ss_onnx_attr_int(k->node, "group", 1), C = x->dims[1], M = w->dims[0];
    if (group < 1 || C % group || M % group || w->dims[1] != C / group)
        return ss_op_err(k, SS_ERR_INVALID, "channels (x %lld, w %lldx%lld) do not fit group %lld",
                         (long long)C, (long long)M, (long long)w->dims[1], (long long)group);
    qconv_plan *p = ss_op_state_alloc(k, sizeof *p + sizeof(int32_t) * (size_t)M);
    if (!p) return ss_op_oom();
    *p = (qconv_plan){.g = g,
                      .N = x->dims[0],
                      .C = C,
                      .M = M,
                      .group = group,
                      .cg = C / group,
                      .mg = M / group,
                      .iw = iw,
                      .qlinear = qlinear};
    st = qconv_check_param(k, 2, 1, "x_zero_point");
    if (!st) st = qconv_check_param(k, qlinear ? 5 : 3, M, "w_zero_point");
    if (!st && qlinear) st = qconv_check_param(k, 4, M, "w_scale");
    if (!st && qlinear) st = qconv_check_param(k, 8, M, "B");
    if (st) return st;
    if (qlinear && k->n_in > 8 && k->in[8] && k->in[8]->dtype != SS_DT_INT32)
        return ss_op_err(k, SS_ERR_INVALID, "B (the bias) must be int32, not %s",
                         ss_dtype_name(k->in[8]->dtype));
    ss_dtype ydt = qlinear ? k->in[7]->dtype : SS_DT_INT32;
    if (qlinear && !ss_quant_dtype(ydt))
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "y_zero_point of type %s", ss_dtype_name(ydt));
    geom_shape(&g, g.out, p->N, M, k->out[0], ydt);
    p->K = p->cg * g.kvol;
    p->rows = g.out[0] * g.out[1];
    p->block_rows = g.out[2] < 1 || g.out[2] >= QCONV_BLOCK_COLS ? 1 : QCONV_BLOCK_COLS / g.out[2];
    size_t cols = (size_t)(p->block_rows * g.out[2]);
    k->scratch_bytes =
        sizeof(double) * ((size_t)(M * p->K) + (size_t)p->K * cols + (size_t)p->mg * cols) +
        sizeof(int16_t) * (size_t)(C * g.ivol) + 64;
    if ((st = qconv_fast_plan(k, p))) return st;
    return p->wpack ? NULL : qconv_dw_plan(k, p);
}

static ss_status *convinteger_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 4);
    return st ? st : qconv_infer_common(k, 1, false);
}

static ss_status *qlinearconv_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 8, 9);
    return st ? st : qconv_infer_common(k, 3, true);
}

/* Column matrix rows [r0, r1) of the flattened (od, oh) output rows for one group: row
 * (c, kd, kh, kw) of col, one column per output position, zero where the window is padding. */
static void qconv_im2col(const qconv_plan *p, const int16_t *xs, int64_t r0, int64_t r1,
                         double *restrict col)
{
    const geom *g = &p->g;
    int64_t ncol = (r1 - r0) * g->out[2];
    for (int64_t c = 0; c < p->cg; c++)
        for (int64_t kd = 0; kd < g->k[0]; kd++)
            for (int64_t kh = 0; kh < g->k[1]; kh++)
                for (int64_t kw = 0; kw < g->k[2]; kw++, col += ncol) {
                    int64_t offw = kw * g->d[2] - g->pb[2], lo, hi;
                    valid_range(offw, g->s[2], g->in[2], g->out[2], &lo, &hi);
                    for (int64_t r = r0; r < r1; r++) {
                        int64_t od = r / g->out[1], oh = r % g->out[1];
                        int64_t id = od * g->s[0] - g->pb[0] + kd * g->d[0];
                        int64_t ih = oh * g->s[1] - g->pb[1] + kh * g->d[1];
                        double *restrict dst = col + (r - r0) * g->out[2];
                        bool inside = id >= 0 && id < g->in[0] && ih >= 0 && ih < g->in[1];
                        int64_t l = inside ? lo : g->out[2], h = inside ? hi : g->out[2];
                        for (int64_t ow = 0; ow < l; ow++)
                            dst[ow] = 0;
                        const int16_t *src = xs + ((c * g->in[0] + id) * g->in[1] + ih) * g->in[2];
                        for (int64_t ow = l; ow < h; ow++)
                            dst[ow] = src[ow * g->s[2] + offw];
                        for (int64_t ow = h; ow < g->out[2]; ow++)
                            dst[ow] = 0;
                    }
                }
}

/* acc (an exact integer) as the spec's wrapping int32 sum. */
static int32_t qconv_wrap(double acc)
{
    return (int32_t)(uint32_t)(uint64_t)(int64_t)acc;
}

/* The sums of one block (channels m0.., columns ncol, starting at output position e0 of
 * image n) into Y: int32 (ConvInteger), or with the bias, scaled, rounded and saturated. */
/* The requantized value of an exact sum (bias added) before the zero point: in float32, as
 * onnxruntime's kernels compute it (float(sum) x scale, rounded half to even); the same arithmetic
 * in float64 differed from it on values within a float32 rounding of a tie. */
SS_ISA_INLINE double qconv_rescale(double sum, double mult)
{
    return (double)rintf((float)sum * (float)mult);
}

static void qconv_store(const ss_kctx *k, const qconv_plan *p, const double *acc, int64_t n,
                        int64_t m0, int64_t e0, int64_t ncol)
{
    ss_tensor *y = k->out[0];
    for (int64_t mi = 0; mi < p->mg; mi++) {
        int64_t m = m0 + mi, e = (n * p->M + m) * p->g.ovol + e0;
        const double *a = acc + mi * ncol;
        if (!p->qlinear) {
            int32_t *yo = (int32_t *)y->data + e;
            for (int64_t j = 0; j < ncol; j++)
                yo[j] = qconv_wrap(a[j]);
            continue;
        }
        double mult = (float)qconv_param(k, 1, 0, 1) * (float)qconv_param(k, 4, m, 1) /
                      (float)qconv_param(k, 6, 0, 1);
        double bias = qconv_param(k, 8, m, 0), yz = qconv_param(k, 7, 0, 0);
        for (int64_t j = 0; j < ncol; j++)
            ss_quant_store(y->data, e + j, y->dtype,
                           qconv_rescale((double)qconv_wrap(a[j]) + bias, mult) + yz);
    }
}

typedef struct {
    const ss_kctx *k;
    const qconv_plan *p;
    const uint8_t *x; /* the image as X holds it */
    uint8_t *xt;      /* ... channels-last, as uint8 */
    int32_t *psum;    /* per group and input pixel: the sum of its channels in xt */
    /* per output channel (qconv_channel), M each, in the scratch: zw and off = base + bias as
     * int64, the same as int32 (used when every sum fits: narrow), and mult (a float32 value) */
    const int64_t *zw64, *off64;
    const int32_t *zw32, *off32;
    const float *mult;
    bool narrow;
    bool sums; /* some channel's weight zero point is not 0: the window sums xs are needed */
    double yz;
    int64_t next_prep; /* the next run of pixels a part transposes */
    int64_t n, blocks; /* image; blocks of QCONV_FAST_ROWS pixels per group */
    int64_t next;      /* the next block a part claims (ss_pool_run's parts claim their work) */
    int32_t zx;        /* x_zero_point in X's uint8 terms */
} qconv_job;

/* n bytes, 64 at a time (copies the compiler inlines: the rows are a few hundred bytes, where a
 * call to memcpy cost more than the copy). */
static inline void qconv_copy(uint8_t *restrict d, const uint8_t *restrict s, int64_t n)
{
    for (; n >= 64; n -= 64, d += 64, s += 64)
        memcpy(d, s, 64);
    for (; n > 0; n--)
        *d++ = *s++;
}

/* Pixels e0 .. e0 + rows - 1 of group gi: each row's kvol taps as pointers to its window's pixels
 * in the channels-last image, or to `zrow` (cg zero points) where the tap is padding, and their
 * sums (of the window's pixel sums) into s (j->sums off: every weight zero point is 0, so no output
 * depends on them and the pixel sums are not read). A window inside the image (most of them) takes
 * fixed pixel offsets from its first tap, without a bounds check per tap. */
static void qconv_taps(const qconv_job *j, int64_t gi, int64_t e0, int64_t rows,
                       const uint8_t **taps, const uint8_t *zrow, int32_t *s)
{
    const qconv_plan *p = j->p;
    const geom *g = &p->g;
    int64_t cg = p->cg, C = p->C, kvol = g->kvol;
    int64_t dd = g->d[0] * g->in[1] * g->in[2], dh = g->d[1] * g->in[2], dw = g->d[2];
    const int32_t *ps = j->psum + gi * g->ivol;
    const uint8_t *x = j->xt + gi * cg;
    /* the output pixel e0 + r as (od, oh, ow), stepped along the rows (no divisions per row) */
    int64_t ow = e0 % g->out[2], oh = e0 / g->out[2] % g->out[1];
    int64_t od = e0 / (g->out[2] * g->out[1]);
    for (int64_t r = 0; r < rows; r++, ow++) {
        if (ow == g->out[2]) ow = 0, oh++;
        if (oh == g->out[1]) oh = 0, od++;
        int64_t id0 = od * g->s[0] - g->pb[0], ih0 = oh * g->s[1] - g->pb[1],
                iw0 = ow * g->s[2] - g->pb[2];
        const uint8_t **t = taps + r * kvol;
        int32_t sum = 0;
        if (id0 >= 0 && id0 + (g->k[0] - 1) * g->d[0] < g->in[0] && ih0 >= 0 &&
            ih0 + (g->k[1] - 1) * g->d[1] < g->in[1] && iw0 >= 0 &&
            iw0 + (g->k[2] - 1) * dw < g->in[2]) {
            int64_t at0 = (id0 * g->in[1] + ih0) * g->in[2] + iw0;
            for (int64_t kd = 0; kd < g->k[0]; kd++)
                for (int64_t kh = 0; kh < g->k[1]; kh++)
                    for (int64_t kw = 0, at = at0 + kd * dd + kh * dh; kw < g->k[2]; kw++)
                        *t++ = x + (at + kw * dw) * C;
            if (j->sums)
                for (int64_t kd = 0; kd < g->k[0]; kd++)
                    for (int64_t kh = 0; kh < g->k[1]; kh++)
                        for (int64_t kw = 0, at = at0 + kd * dd + kh * dh; kw < g->k[2]; kw++)
                            sum += ps[at + kw * dw];
            s[r] = sum;
            continue;
        }
        for (int64_t kd = 0; kd < g->k[0]; kd++) {
            int64_t id = id0 + kd * g->d[0];
            for (int64_t kh = 0; kh < g->k[1]; kh++) {
                int64_t ih = ih0 + kh * g->d[1];
                for (int64_t kw = 0; kw < g->k[2]; kw++) {
                    int64_t iw = iw0 + kw * dw, at = (id * g->in[1] + ih) * g->in[2] + iw;
                    if (id < 0 || id >= g->in[0] || ih < 0 || ih >= g->in[1] || iw < 0 ||
                        iw >= g->in[2]) {
                        *t++ = zrow;
                        sum += j->zx * (int32_t)cg;
                    } else {
                        *t++ = x + at * C;
                        sum += j->sums ? ps[at] : 0;
                    }
                }
            }
        }
        s[r] = sum;
    }
}

/* The copy path (cg not a multiple of 4, so a tap is not whole k quads): the taps' bytes as
 * im2col rows of lda bytes, the k past K zero. */
static void qconv_rows(const qconv_plan *p, int64_t rows, const uint8_t *const *taps, uint8_t *a)
{
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *row = a + r * p->lda;
        for (int64_t t = 0; t < p->g.kvol; t++)
            qconv_copy(row + t * p->cg, taps[r * p->g.kvol + t], p->cg);
        memset(row + p->K, 0, (size_t)(p->lda - p->K));
    }
}

/* Output channel m's terms: sum = acc - zw x_sum + base (zero points in the packed terms), and
 * its requantization y = rint((sum + bias) mult) + yz, as qconv_store computes it. */
typedef struct {
    double zw, base, bias, mult, yz;
} qconv_chan;

static qconv_chan qconv_channel(const qconv_job *j, int64_t m)
{
    const qconv_plan *p = j->p;
    const ss_kctx *k = j->k;
    double zw = qconv_param(k, p->qlinear ? 5 : 3, m, 0) - (p->w_unsigned ? 128 : 0);
    qconv_chan c = {zw, (double)p->K * j->zx * zw - (double)j->zx * p->wsum[m], 0, 1, 0};
    if (p->qlinear) {
        c.mult = (float)qconv_param(k, 1, 0, 1) * (float)qconv_param(k, 4, m, 1) /
                 (float)qconv_param(k, 6, 0, 1);
        c.bias = qconv_param(k, 8, m, 0), c.yz = qconv_param(k, 7, 0, 0);
    }
    return c;
}

/* rows x mg requantized 8-bit values, row-major, from the block's sums (acc, row-major) and row
 * sums: per channel vectors of its terms (off: base + bias), so each row is one vector loop. The
 * sum is the exact integer in T (int64, or int32 where the caller knows every sum fits), so its
 * float32 is qconv_store's; the rounded value plus the zero point is exact in float32 wherever it
 * is not clamped anyway. */
#define QCONV_REQUANT_ROWS(NAME, T)                                                                \
    SS_ISA_INLINE void NAME##_body(const int32_t *restrict acc, const int32_t *restrict xs,        \
                                   int64_t rows, int64_t mg, const T *restrict zw,                 \
                                   const T *restrict off, const float *restrict mult, float yz,    \
                                   float lo, float hi, uint8_t *restrict out)                      \
    {                                                                                              \
        for (int64_t r = 0; r < rows; r++) {                                                       \
            T x = xs[r];                                                                           \
            for (int64_t i = 0; i < mg; i++) {                                                     \
                float v = rintf((float)(acc[r * mg + i] - zw[i] * x + off[i]) * mult[i]) + yz;     \
                v = v == v ? v : 0;  /* NaN has no integer: 0 */                                   \
                v = v < lo ? lo : v; /* vmaxps, then vminps */                                     \
                v = v > hi ? hi : v;                                                               \
                out[r * mg + i] = (uint8_t)(int32_t)v;                                             \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    SS_ISA_VARIANTS(void, NAME,                                                                    \
                    (const int32_t *restrict acc, const int32_t *restrict xs, int64_t rows,        \
                     int64_t mg, const T *restrict zw, const T *restrict off,                      \
                     const float *restrict mult, float yz, float lo, float hi,                     \
                     uint8_t *restrict out),                                                       \
                    (acc, xs, rows, mg, zw, off, mult, yz, lo, hi, out))
QCONV_REQUANT_ROWS(qconv_requant_rows, int64_t)
QCONV_REQUANT_ROWS(qconv_requant_rows32, int32_t)

/* 16 x 16 bytes transposed: d[j * ds + i] = s[i * ss + j] ^ flip (flip 128 shifts int8 to
 * uint8). With SSE2, four rounds of unpacks, which leave column j in register bitrev4(j). */
static inline void qconv_transpose16(const uint8_t *s, ptrdiff_t ss, uint8_t *d, ptrdiff_t ds,
                                     uint8_t flip)
{
#if defined(__x86_64__)
    static const int col[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
    __m128i v[16], w[16], f = _mm_set1_epi8((char)flip);
    for (int i = 0; i < 16; i++)
        v[i] = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(s + i * ss)), f);
/* one round: pairs of registers of `from` interleaved by BITS-bit elements into `to` */
#define QCONV_UNPACK(to, from, BITS)                                                               \
    for (int i = 0; i < 8; i++) {                                                                  \
        to[i] = _mm_unpacklo_epi##BITS(from[2 * i], from[2 * i + 1]);                              \
        to[i + 8] = _mm_unpackhi_epi##BITS(from[2 * i], from[2 * i + 1]);                          \
    }
    QCONV_UNPACK(w, v, 8)
    QCONV_UNPACK(v, w, 16)
    QCONV_UNPACK(w, v, 32)
    QCONV_UNPACK(v, w, 64)
#undef QCONV_UNPACK
    for (int k = 0; k < 16; k++)
        _mm_storeu_si128((__m128i *)(d + col[k] * ds), v[k]);
#else
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++)
            d[j * ds + i] = (uint8_t)(s[i * ss + j] ^ flip);
#endif
}

/* d[j * ds + i] = s[i * ss + j] ^ flip for i < rows, j < cols: 16 x 16 tiles, then the edges. */
static void qconv_transpose(const uint8_t *s, int64_t ss, uint8_t *d, int64_t ds, int64_t rows,
                            int64_t cols, uint8_t flip)
{
    int64_t r16 = rows / 16 * 16, c16 = cols / 16 * 16;
    for (int64_t i = 0; i < r16; i += 16)
        for (int64_t j = 0; j < c16; j += 16)
            qconv_transpose16(s + i * ss + j, ss, d + j * ds + i, ds, flip);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = i < r16 ? c16 : 0; j < cols; j++)
            d[j * ds + i] = (uint8_t)(s[i * ss + j] ^ flip);
}

/* A block's 8-bit outputs: requantized row-major into `tq`, then each channel's run of pixels
 * into Y. */
static void qconv_requant(const qconv_job *j, int64_t gi, int64_t e0, int64_t rows,
                          const int32_t *acc, const int32_t *xs, uint8_t *tq)
{
    const qconv_plan *p = j->p;
    int64_t mg = p->mg, m0 = gi * mg;
    bool is_signed = j->k->out[0]->dtype == SS_DT_INT8;
    float yz = (float)j->yz, lo = is_signed ? -128 : 0, hi = is_signed ? 127 : 255;
    if (j->narrow)
        qconv_requant_rows32(acc, xs, rows, mg, j->zw32 + m0, j->off32 + m0, j->mult + m0, yz, lo,
                             hi, tq);
    else
        qconv_requant_rows(acc, xs, rows, mg, j->zw64 + m0, j->off64 + m0, j->mult + m0, yz, lo, hi,
                           tq);
    uint8_t *y = (uint8_t *)j->k->out[0]->data + (j->n * p->M + m0) * p->g.ovol + e0;
    qconv_transpose(tq, mg, y, p->g.ovol, rows, mg, 0);
}

/* One part's blocks: rows, the kernel's sums, the zero points' terms, then Y. */
static void qconv_fast_part(void *ctx, int part, int parts)
{
    (void)parts;
    qconv_job *j = ctx;
    const qconv_plan *p = j->p;
    const ss_kctx *k = j->k;
    uint8_t *a = (uint8_t *)k->scratch + qconv_parts_at(p) + (size_t)part * qconv_part_bytes(p);
    a = (uint8_t *)(((uintptr_t)a + 63) & ~(uintptr_t)63);
    const uint8_t **taps = (const uint8_t **)a;
    uint8_t *zrow = a + sizeof(void *) * (size_t)(QCONV_FAST_ROWS * p->g.kvol),
            *rowbuf = a + qconv_taps_bytes(p); /* the copy path's rows */
    memset(zrow, j->zx, (size_t)p->cg);
    int32_t *xs = (int32_t *)(a + qconv_rows_bytes(p)), *acc = xs + QCONV_FAST_ROWS;
    uint8_t *tq = (uint8_t *)(acc + QCONV_FAST_ROWS * p->mg);
    int64_t total = p->group * j->blocks, ovol = p->g.ovol;
    ss_tensor *y = k->out[0];
    bool y8 = p->qlinear && ss_quant_dtype8(y->dtype);
    for (int64_t b; (b = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED)) < total;) {
        int64_t gi = b / j->blocks, e0 = b % j->blocks * QCONV_FAST_ROWS;
        int64_t rows = ovol - e0 < QCONV_FAST_ROWS ? ovol - e0 : QCONV_FAST_ROWS;
        const uint8_t *wp = p->wpack + (size_t)gi * p->group_bytes;
        qconv_taps(j, gi, e0, rows, taps, zrow, xs);
        if (p->gather) {
            ss_gemm_q8_i32_taps(rows, p->mg, taps, p->g.kvol, p->cg / 4, wp, 0, p->mg, acc, p->mg);
        } else {
            qconv_rows(p, rows, taps, rowbuf);
            ss_gemm_q8_i32(rows, p->mg, p->K, rowbuf, p->lda, wp, 0, p->mg, acc, p->mg);
        }
        if (y8) {
            qconv_requant(j, gi, e0, rows, acc, xs, tq);
            continue;
        }
        for (int64_t mi = 0; mi < p->mg; mi++) { /* ConvInteger; QLinearConv into 16 bits */
            int64_t m = gi * p->mg + mi, o = (j->n * p->M + m) * ovol + e0;
            for (int64_t r = 0; r < rows; r++) { /* off: ConvInteger has no bias */
                int64_t sum = (int64_t)acc[r * p->mg + mi] - j->zw64[m] * xs[r] + j->off64[m];
                if (!p->qlinear)
                    ((int32_t *)y->data)[o + r] = (int32_t)sum;
                else
                    ss_quant_store(y->data, o + r, y->dtype,
                                   qconv_rescale((double)sum, j->mult[m]) + j->yz);
            }
        }
    }
}

/* Pixels a part claims at a time when it transposes the image. */
#define QCONV_PREP_PIXELS 256

/* A part's runs of pixels: channels-last, shifted to uint8, and (j->sums) each group's channel
 * sums. */
static void qconv_prep_part(void *ctx, int part, int parts)
{
    (void)part, (void)parts;
    qconv_job *j = ctx;
    const qconv_plan *p = j->p;
    int64_t ivol = p->g.ivol, C = p->C, cg = p->cg;
    uint8_t shift = p->x_signed ? 128 : 0;
    for (int64_t i0;
         (i0 = __atomic_fetch_add(&j->next_prep, QCONV_PREP_PIXELS, __ATOMIC_RELAXED)) < ivol;) {
        int64_t i1 = i0 + QCONV_PREP_PIXELS < ivol ? i0 + QCONV_PREP_PIXELS : ivol;
        qconv_transpose(j->x + i0, ivol, j->xt + i0 * C, C, C, i1 - i0, shift);
        for (int64_t gi = 0; j->sums && gi < p->group; gi++)
            for (int64_t i = i0; i < i1; i++) {
                const uint8_t *px = j->xt + i * C + gi * cg;
                int32_t sum = 0;
                for (int64_t c = 0; c < cg; c++)
                    sum += px[c];
                j->psum[gi * ivol + i] = sum;
            }
    }
}

static ss_status *qconv_fast_run(ss_kctx *k)
{
    const qconv_plan *p = k->state;
    const ss_tensor *x = k->in[0];
    uint8_t *xt = k->scratch;
    int64_t img = p->C * p->g.ivol, shift = p->x_signed ? 128 : 0;
    int64_t *zw64 = (int64_t *)(xt + qconv_chans_at(p)), *off64 = zw64 + p->M;
    int32_t *zw32 = (int32_t *)(off64 + p->M), *off32 = zw32 + p->M;
    float *mult = (float *)(off32 + p->M);
    qconv_job j = {.k = k,
                   .p = p,
                   .xt = xt,
                   .psum = (int32_t *)(xt + qconv_sums_at(p)),
                   .zw64 = zw64,
                   .off64 = off64,
                   .zw32 = zw32,
                   .off32 = off32,
                   .mult = mult,
                   .blocks = (p->g.ovol + QCONV_FAST_ROWS - 1) / QCONV_FAST_ROWS,
                   .zx = (int32_t)((int64_t)qconv_param(k, 2, 0, 0) + shift)};
    /* every sum acc - zw x + off fits int32 when |acc| <= K 255 128, |x| <= K 255 and the
     * largest |zw| K 255 + |off| added to that stays below 2^31 */
    double worst = 0;
    for (int64_t m = 0; m < p->M; m++) { /* the scales and zero points may change per run */
        qconv_chan c = qconv_channel(&j, m);
        zw64[m] = (int64_t)c.zw, off64[m] = (int64_t)(c.base + c.bias);
        zw32[m] = (int32_t)zw64[m], off32[m] = (int32_t)off64[m];
        mult[m] = (float)c.mult; /* a float32 quotient (qconv_channel): exact */
        j.yz = c.yz;
        j.sums |= zw64[m] != 0;
        double term = fabs(c.zw) * (double)p->K * 255 + fabs(c.base + c.bias);
        worst = term > worst ? term : worst;
    }
    j.narrow = (double)p->K * 255 * 128 + worst < 2147483647.0;
    int prep_parts = p->parts;
    if (prep_parts > (p->g.ivol + QCONV_PREP_PIXELS - 1) / QCONV_PREP_PIXELS)
        prep_parts = (int)((p->g.ivol + QCONV_PREP_PIXELS - 1) / QCONV_PREP_PIXELS);
    int parts = p->parts;
    if (parts > p->group * j.blocks) parts = (int)(p->group * j.blocks);
    for (int64_t n = 0; n < p->N; n++) {
        j.x = (const uint8_t *)x->data + n * img;
        j.n = n;
        j.next_prep = j.next = 0;
        ss_pool_run(prep_parts, qconv_prep_part, &j);
        ss_pool_run(parts, qconv_fast_part, &j);
    }
    return NULL;
}

/* ------------------------------------------------------------------ depthwise
 * One input and one output channel per group (MobileNet's int8 3x3s): direct int32 sums, an output
 * row at a time (each valid tap adds a strided input row times its weight; padding adds nothing,
 * as (x_zp - x_zp) = 0), requantized as qconv_store does, so the values are the float64 path's.
 * Planes (image x channel) go to the worker pool's parts. */
typedef struct {
    const ss_kctx *k;
    const qconv_plan *p;
    int64_t next; /* the next plane a part claims */
} qconv_dw_job;

static size_t qconv_dw_part_ints(const qconv_plan *p)
{
    return (size_t)(p->g.out[2] + p->g.kvol + 16);
}

static ss_status *qconv_dw_plan(ss_kctx *k, qconv_plan *p)
{
    if (p->cg != 1 || p->mg != 1 || p->g.ovol < 1) return NULL;
    p->depthwise = true;
    int t = ss_kctx_threads(k);
    p->parts = t > 1 ? ss_gemm_pool_reserve(t) : 1;
    size_t need = sizeof(int32_t) * qconv_dw_part_ints(p) * (size_t)p->parts + 64;
    if (need > k->scratch_bytes) k->scratch_bytes = need;
    return NULL;
}

/* acc[ow] += (x[ow * s + off] - zx) * w for ow in [lo, hi). */
#define QCONV_DW_TAP(T)                                                                            \
    static void qconv_dw_tap_##T(int32_t *restrict acc, const T *restrict row, int64_t s,          \
                                 int64_t off, int64_t lo, int64_t hi, int32_t zx, int32_t w)       \
    {                                                                                              \
        for (int64_t ow = lo; ow < hi; ow++)                                                       \
            acc[ow] += ((int32_t)row[ow * s + off] - zx) * w;                                      \
    }
QCONV_DW_TAP(uint8_t)
QCONV_DW_TAP(int8_t)

static void qconv_dw_part(void *ctx, int part, int parts)
{
    (void)parts;
    qconv_dw_job *j = ctx;
    const qconv_plan *p = j->p;
    const ss_kctx *k = j->k;
    const geom *g = &p->g;
    int32_t *acc = (int32_t *)k->scratch + (size_t)part * qconv_dw_part_ints(p),
            *wk = acc + g->out[2];
    const ss_tensor *x = k->in[0], *w = k->in[p->iw];
    ss_tensor *y = k->out[0];
    bool x_signed = x->dtype == SS_DT_INT8, y8 = p->qlinear && ss_quant_dtype8(y->dtype);
    bool y_signed = y->dtype == SS_DT_INT8;
    int32_t zx = (int32_t)qconv_param(k, 2, 0, 0);
    for (int64_t pl; (pl = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED)) < p->N * p->C;) {
        int64_t c = pl % p->C;
        int32_t zw = (int32_t)qconv_param(k, p->qlinear ? 5 : 3, c, 0);
        for (int64_t t = 0; t < g->kvol; t++)
            wk[t] = (int32_t)ss_op_elem_i64(w, c * g->kvol + t) - zw;
        double bias = 0, mult = 1, yz = 0;
        if (p->qlinear) {
            mult = (float)qconv_param(k, 1, 0, 1) * (float)qconv_param(k, 4, c, 1) /
                   (float)qconv_param(k, 6, 0, 1);
            bias = qconv_param(k, 8, c, 0), yz = qconv_param(k, 7, 0, 0);
        }
        const uint8_t *xu = (const uint8_t *)x->data + pl * g->ivol;
        for (int64_t od = 0; od < g->out[0]; od++)
            for (int64_t oh = 0; oh < g->out[1]; oh++) {
                memset(acc, 0, sizeof(int32_t) * (size_t)g->out[2]);
                for (int64_t kd = 0, t = 0; kd < g->k[0]; kd++) {
                    int64_t id = od * g->s[0] - g->pb[0] + kd * g->d[0];
                    for (int64_t kh = 0; kh < g->k[1]; kh++) {
                        int64_t ih = oh * g->s[1] - g->pb[1] + kh * g->d[1];
                        bool inside = id >= 0 && id < g->in[0] && ih >= 0 && ih < g->in[1];
                        for (int64_t kw = 0; kw < g->k[2]; kw++, t++) {
                            int64_t off = kw * g->d[2] - g->pb[2], lo, hi;
                            if (!inside || !wk[t]) continue;
                            valid_range(off, g->s[2], g->in[2], g->out[2], &lo, &hi);
                            const uint8_t *row = xu + (id * g->in[1] + ih) * g->in[2];
                            if (x_signed)
                                qconv_dw_tap_int8_t(acc, (const int8_t *)row, g->s[2], off, lo, hi,
                                                    zx, wk[t]);
                            else
                                qconv_dw_tap_uint8_t(acc, row, g->s[2], off, lo, hi, zx, wk[t]);
                        }
                    }
                }
                int64_t o = pl * g->ovol + (od * g->out[1] + oh) * g->out[2];
                if (y8) {
                    int64_t zero_i = 0, bias_i = (int64_t)bias;
                    float mult_f = (float)mult;
                    qconv_requant_rows(acc, acc, g->out[2], 1, &zero_i, &bias_i, &mult_f, (float)yz,
                                       y_signed ? -128 : 0, y_signed ? 127 : 255,
                                       (uint8_t *)y->data + o);
                    continue;
                }
                for (int64_t ow = 0; ow < g->out[2]; ow++)
                    if (!p->qlinear)
                        ((int32_t *)y->data)[o + ow] = acc[ow];
                    else
                        ss_quant_store(y->data, o + ow, y->dtype,
                                       qconv_rescale((double)acc[ow] + bias, mult) + yz);
            }
    }
}

static ss_status *qconv_dw_run(ss_kctx *k)
{
    const qconv_plan *p = k->state;
    qconv_dw_job j = {.k = k, .p = p};
    int parts = p->parts;
    if (parts > p->N * p->C) parts = (int)(p->N * p->C);
    ss_pool_run(parts < 1 ? 1 : parts, qconv_dw_part, &j);
    return NULL;
}

/* Scratch: W minus its zero points (float64), the column block, the gemm's block of Y, then one
 * image of X minus its zero point (int16). */
static ss_status *qconv_run(ss_kctx *k)
{
    const qconv_plan *p = k->state;
    if (p->wpack) return qconv_fast_run(k);
    if (p->depthwise) return qconv_dw_run(k);
    const ss_tensor *x = k->in[0], *w = k->in[p->iw];
    int64_t K = p->K, ow = p->g.out[2], cols = p->block_rows * ow;
    double *ws = k->scratch, *col = ws + p->M * K, *acc = col + K * cols;
    int16_t *xs = (int16_t *)(acc + p->mg * cols);
    int64_t xz = (int64_t)qconv_param(k, 2, 0, 0), img = p->C * p->g.ivol;
    for (int64_t m = 0; m < p->M; m++) {
        int64_t wz = (int64_t)qconv_param(k, p->qlinear ? 5 : 3, m, 0);
        for (int64_t i = 0; i < K; i++)
            ws[m * K + i] = (double)(ss_op_elem_i64(w, m * K + i) - wz);
    }
    for (int64_t n = 0; n < p->N && p->g.ovol > 0; n++) {
        if (x->dtype == SS_DT_UINT8)
            for (int64_t i = 0; i < img; i++)
                xs[i] = (int16_t)(((const uint8_t *)x->data)[n * img + i] - xz);
        else
            for (int64_t i = 0; i < img; i++)
                xs[i] = (int16_t)(((const int8_t *)x->data)[n * img + i] - xz);
        for (int64_t gi = 0; gi < p->group; gi++)
            for (int64_t r0 = 0; r0 < p->rows; r0 += p->block_rows) {
                int64_t r1 = r0 + p->block_rows < p->rows ? r0 + p->block_rows : p->rows;
                int64_t ncol = (r1 - r0) * ow;
                qconv_im2col(p, xs + gi * p->cg * p->g.ivol, r0, r1, col);
                if (K == 0) /* no channels: sums of nothing */
                    memset(acc, 0, sizeof(double) * (size_t)(p->mg * ncol));
                else
                    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)p->mg,
                                (blasint)ncol, (blasint)K, 1, ws + gi * p->mg * K, (blasint)K, col,
                                (blasint)ncol, 0, acc, (blasint)ncol);
                qconv_store(k, p, acc, n, gi * p->mg, r0 * ow, ncol);
            }
    }
    return NULL;
}

/* ------------------------------------------------------------------ float16, bfloat16 */

/* No native half kernels: float16 and bfloat16 run the float32 ones on converted copies
 * (common.h), rounding each output once, as onnxruntime's CPU provider does through the Cast
 * nodes it inserts. X, W and B must still share one type. */
static bool half_inputs(const ss_kctx *k)
{
    ss_dtype dt = k->n_in > 0 && k->in[0] ? k->in[0]->dtype : SS_DT_UNDEFINED;
    return dt == SS_DT_FLOAT16 || dt == SS_DT_BFLOAT16;
}

static ss_status *half_infer(ss_kctx *k, ss_status *(*infer)(ss_kctx *))
{
    if (!half_inputs(k)) return infer(k);
    for (int i = 1; i < k->n_in; i++)
        if (k->in[i] && k->in[i]->dtype != k->in[0]->dtype)
            return ss_op_err(k, SS_ERR_INVALID, "input %d is %s, input 0 %s", i,
                             ss_dtype_name(k->in[i]->dtype), ss_dtype_name(k->in[0]->dtype));
    return ss_op_infer_as_f32(k, infer);
}

#define VIA_F32(NAME)                                                                              \
    static ss_status *NAME##_infer(ss_kctx *k)                                                     \
    {                                                                                              \
        return half_infer(k, NAME##_infer_native);                                                 \
    }                                                                                              \
    static ss_status *NAME##_run(ss_kctx *k)                                                       \
    {                                                                                              \
        return half_inputs(k) ? ss_op_run_as_f32(k, NAME##_run_native) : NAME##_run_native(k);     \
    }

VIA_F32(conv)
VIA_F32(convt)
VIA_F32(pool)
VIA_F32(gpool)

const ss_op_def ss_ops_conv[] = {
    {"", "Conv", 1, 21, conv_infer, conv_run, 0, conv_release, conv_fuse, conv_layout_ok,
     conv_relayout, conv_layout_operand, conv_operand_relayout, conv_operand_in_place},
    {"", "ConvTranspose", 1, 21, convt_infer, convt_run, 0},
    {"", "MaxPool", 1, 21, pool_infer, pool_run, 0, pool_release, NULL, pool_layout_ok,
     pool_relayout},
    {"", "AveragePool", 1, 21, pool_infer, pool_run, 0, pool_release},
    {"", "LpPool", 1, 21, pool_infer, pool_run, 0, pool_release},
    {"", "GlobalLpPool", 1, 21, gpool_infer, gpool_run, 0},
    {"", "GlobalAveragePool", 1, 21, gpool_infer, gpool_run, 0},
    {"", "GlobalMaxPool", 1, 21, gpool_infer, gpool_run, 0},
    {"", "ConvInteger", 10, 21, convinteger_infer, qconv_run, 0, qconv_release},
    {"", "QLinearConv", 10, 21, qlinearconv_infer, qconv_run, 0, qconv_release},
    {0},
};
