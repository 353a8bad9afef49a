/*
 * Resize (opsets 10-21) and Upsample (7-9).
 *
 * Output sizes come from scales or sizes known at plan time (floor(in * scale), or sizes with
 * keep_aspect_ratio_policy from 18), on every axis or on `axes` (18). infer turns each axis into
 * per-output-index taps: source index and weight, 1 tap for nearest and for axes that map one to
 * one, 2 for linear, 4 for cubic, plus a flag for tf_crop_and_resize's extrapolated points. The
 * coordinate transformation, the nearest rounding, cubic's coefficients, edge clamping and
 * exclude_outside follow the ONNX reference implementation (scale = out/in for sizes, and the
 * "resized length" in align_corners is in * scale). run is separable (outer axes fold input rows,
 * then the last axis reads the folded row) and allocates nothing. Nearest moves elements by size
 * (any dtype); linear and cubic are float32 and float64. Resize-10 and Upsample are asymmetric with
 * floor rounding (ONNX's 10->11 adapter).
 *
 * A float32 bilinear Resize of the last two axes of an image (rank 2, or rank 4 with N and C
 * kept) is computed as onnxruntime's CPU kernel rounds it, in float: coordinates, clamped
 * weights |x - x2| and |x - x1|, and dx2*dy2*X11 + dx1*dy2*X21 + dx2*dy1*X12 + dx1*dy1*X22 in
 * that order. The value is the same to a float ulp either way, but a quantized model requantizes
 * Resize's output: a 1-ulp difference in its maximum moves a DynamicQuantizeLinear scale, and the
 * model's outputs drift from onnxruntime's by percents (imgly's quantized isnet).
 */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define MAX_TAPS 4

enum { M_NEAREST, M_LINEAR, M_CUBIC };
enum { C_HALF_PIXEL, C_HALF_PIXEL_SYM, C_PYTORCH, C_ALIGN, C_ASYM, C_TF_NN, C_TF_CROP };
enum { N_ROUND_FLOOR, N_ROUND_CEIL, N_FLOOR, N_CEIL };

typedef struct {
    int mode, coord, nearest, exclude_outside;
    double cubic_a, extrapolation;
} resize_attrs;

typedef struct {
    int nd;
    size_t es;
    int64_t out_dims[SS_MAX_DIMS], in_stride[SS_MAX_DIMS];
    int ntaps[SS_MAX_DIMS];
    int64_t *src[SS_MAX_DIMS]; /* [out][ntaps] source element offsets (already * stride) */
    double *w[SS_MAX_DIMS];    /* [out][ntaps] weights */
    unsigned char *outside[SS_MAX_DIMS]; /* [out]: tf_crop_and_resize extrapolates */
    double extrapolation;
    bool interpolate;
    bool bilinear_f32; /* the last two axes' taps and weights are onnxruntime's float ones */
    int64_t in_plane;  /* input elements per image of the last two axes */
    int64_t in_last;   /* the input's last dim */
    double *row;       /* in_last scratch values for the separable kernel */
} resize_plan;

static int pick(const char *v, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i])) return i;
    return -1;
}

static ss_status *read_attrs(ss_kctx *k, bool legacy, resize_attrs *a)
{
    static const char *const modes[] = {"nearest", "linear", "cubic"};
    static const char *const coords[] = {
        "half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
        "asymmetric", "tf_half_pixel_for_nn", "tf_crop_and_resize"};
    static const char *const nearests[] = {"round_prefer_floor", "round_prefer_ceil", "floor",
                                           "ceil"};
    char buf[64] = "nearest";
    ss_onnx_attr_string(k->node, "mode", buf, sizeof buf);
    if ((a->mode = pick(buf, modes, legacy ? 2 : 3)) < 0)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "mode '%s' is not supported", buf);
    snprintf(buf, sizeof buf, "%s", legacy ? "asymmetric" : "half_pixel");
    ss_onnx_attr_string(k->node, "coordinate_transformation_mode", buf, sizeof buf);
    a->coord = pick(buf, coords, 7);
    if (a->coord < 0 || (a->coord == C_HALF_PIXEL_SYM && k->opset < 19))
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "coordinate_transformation_mode '%s'", buf);
    snprintf(buf, sizeof buf, "%s", legacy ? "floor" : "round_prefer_floor");
    ss_onnx_attr_string(k->node, "nearest_mode", buf, sizeof buf);
    if ((a->nearest = pick(buf, nearests, 4)) < 0)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "nearest_mode '%s'", buf);
    a->cubic_a = ss_onnx_attr_float(k->node, "cubic_coeff_a", -0.75f);
    a->exclude_outside = ss_onnx_attr_int(k->node, "exclude_outside", 0) != 0;
    a->extrapolation = ss_onnx_attr_float(k->node, "extrapolation_value", 0.0f);
    if (ss_onnx_attr_int(k->node, "antialias", 0))
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "attribute 'antialias' = 1");
    return NULL;
}

/* Source coordinate of output index x on one axis (ONNX reference, interpolate_1d_with_x). */
static double source_coord(const resize_attrs *a, double x, double scale, int64_t in,
                           double roi_start, double roi_end)
{
    double out_len = scale * (double)in;
    switch (a->coord) {
    case C_ALIGN:
        return out_len == 1 ? 0 : x * (double)(in - 1) / (out_len - 1);
    case C_ASYM:
        return x / scale;
    case C_TF_NN:
        return (x + 0.5) / scale;
    case C_PYTORCH:
        return out_len == 1 ? -0.5 : (x + 0.5) / scale - 0.5;
    case C_TF_CROP:
        return (out_len == 1 ? (roi_end - roi_start) * (double)(in - 1) / 2
                             : x * (roi_end - roi_start) * (double)(in - 1) / (out_len - 1)) +
               roi_start * (double)(in - 1);
    case C_HALF_PIXEL_SYM: {
        double adjust = floor(out_len) / out_len, center = (double)in / 2;
        return center * (1 - adjust) + (x + 0.5) / scale - 0.5;
    }
    default:
        return (x + 0.5) / scale - 0.5;
    }
}

static void cubic_coeffs(double r, double A, double *c)
{
    c[0] = ((A * (r + 1) - 5 * A) * (r + 1) + 8 * A) * (r + 1) - 4 * A;
    c[1] = ((A + 2) * r - (A + 3)) * r * r + 1;
    c[2] = ((A + 2) * (1 - r) - (A + 3)) * (1 - r) * (1 - r) + 1;
    c[3] = ((A * ((1 - r) + 1) - 5 * A) * ((1 - r) + 1) + 8 * A) * ((1 - r) + 1) - 4 * A;
}

/* Taps of one output index: first source index (before clamping), count and weights. */
static int taps_for(const resize_attrs *a, double xo, int64_t *first, double *w)
{
    double fl = floor(xo);
    bool whole = xo == fl;
    double r = whole ? 1 : xo - fl; /* the reference's ratio: 1 on a whole coordinate */
    int64_t x0 = (int64_t)fl;
    if (a->mode == M_NEAREST) {
        bool up;
        if (whole)
            up = false, x0 = (int64_t)xo;
        else if (a->nearest == N_ROUND_FLOOR)
            up = r > 0.5;
        else if (a->nearest == N_ROUND_CEIL)
            up = r >= 0.5;
        else
            up = a->nearest == N_CEIL;
        *first = x0 + up;
        w[0] = 1;
        return 1;
    }
    if (a->mode == M_LINEAR) {
        /* whole: taps [x-1, x] with weights [0, 1] in the reference, i.e. x alone */
        *first = whole ? x0 - 1 : x0;
        w[0] = 1 - r;
        w[1] = r;
        return 2;
    }
    *first = whole ? x0 - 2 : x0 - 1;
    cubic_coeffs(r, a->cubic_a, w);
    return 4;
}

static ss_status *plan_axis(ss_kctx *k, const resize_attrs *a, resize_plan *p, int d, int64_t in,
                            double scale, const double *roi, unsigned char **mem)
{
    int64_t out = p->out_dims[d];
    bool identity = out == in && scale == 1 && a->coord != C_TF_CROP && a->coord != C_TF_NN;
    int n = identity || a->mode == M_NEAREST ? 1 : a->mode == M_LINEAR ? 2 : 4;
    p->ntaps[d] = n;
    p->src[d] = (int64_t *)*mem;
    *mem += sizeof(int64_t) * (size_t)(out * n);
    p->w[d] = (double *)*mem;
    *mem += sizeof(double) * (size_t)(out * n);
    p->outside[d] = *mem;
    *mem += (size_t)(out + 7) / 8 * 8;
    for (int64_t o = 0; o < out; o++) {
        int64_t first = o;
        double w[MAX_TAPS] = {1, 0, 0, 0};
        double xo = (double)o;
        if (!identity) xo = source_coord(a, (double)o, scale, in, roi[0], roi[1]);
        p->outside[d][o] = a->coord == C_TF_CROP && !(xo >= 0 && xo <= (double)(in - 1));
        if (!identity) { /* far outside, every tap is an edge tap: keep the index arithmetic small
                          */
            xo = xo != xo ? 0 : xo < -8 ? -8 : xo > (double)in + 8 ? (double)in + 8 : xo;
            taps_for(a, xo, &first, w);
        }
        double sum = 0;
        for (int t = 0; t < n; t++) {
            int64_t i = first + t;
            if (a->exclude_outside && (i < 0 || i >= in)) w[t] = 0;
            sum += w[t];
        }
        for (int t = 0; t < n; t++) {
            int64_t i = first + t;
            i = i < 0 ? 0 : i >= in ? in - 1 : i;
            p->src[d][o * n + t] = i * p->in_stride[d];
            p->w[d][o * n + t] = a->exclude_outside && sum != 0 ? w[t] / sum : w[t];
        }
    }
    (void)k;
    return NULL;
}

/* The source coordinate in float arithmetic, as onnxruntime computes it (scale is float too);
 * the resized length is in * scale, as in source_coord. */
static float source_coord_f(int coord, float x, float scale, float out_len, float in)
{
    switch (coord) {
    case C_ALIGN:
        return out_len == 1 ? 0 : x * (in - 1) / (out_len - 1);
    case C_ASYM:
        return x / scale;
    case C_PYTORCH:
        return out_len > 1 ? (x + 0.5f) / scale - 0.5f : 0.0f;
    default:
        return (x + 0.5f) / scale - 0.5f;
    }
}

/* Axis d's two taps per output index as onnxruntime's bilinear kernel sets them: the clamped
 * coordinate's floor and next index, weighted |x - x2| and |x - x1| (one half each at the edge). */
static void plan_axis_bilinear(const resize_attrs *a, resize_plan *p, int d, int64_t in,
                               double scale, unsigned char **mem)
{
    int64_t out = p->out_dims[d];
    p->ntaps[d] = 2; /* identity axes too: in_y = y, weights 1 and 0 */
    p->src[d] = (int64_t *)*mem;
    *mem += sizeof(int64_t) * (size_t)(out * 2);
    p->w[d] = (double *)*mem;
    *mem += sizeof(double) * (size_t)(out * 2);
    p->outside[d] = *mem; /* never set: no extrapolation here */
    *mem += (size_t)(out + 7) / 8 * 8;
    memset(p->outside[d], 0, (size_t)out);
    for (int64_t o = 0; o < out; o++) {
        float xf = scale == 1 ? (float)o
                              : source_coord_f(a->coord, (float)o, (float)scale,
                                               (float)(scale * (double)in), (float)in);
        xf = fmaxf(0.0f, fminf(xf, (float)(in - 1)));
        int64_t x1 = (int64_t)xf < in - 1 ? (int64_t)xf : in - 1;
        int64_t x2 = x1 + 1 < in - 1 ? x1 + 1 : in - 1;
        float d1 = fabsf(xf - (float)x1), d2 = fabsf(xf - (float)x2);
        if (x1 == x2) d1 = d2 = 0.5f;
        p->src[d][2 * o] = x1 * p->in_stride[d];
        p->src[d][2 * o + 1] = x2 * p->in_stride[d];
        p->w[d][2 * o] = d2;
        p->w[d][2 * o + 1] = d1;
    }
}

/* Whether onnxruntime's float bilinear kernel applies: float32 linear over the last two axes
 * only, with a coordinate mode it computes without extrapolation. */
static bool ort_bilinear(const resize_attrs *a, const ss_tensor *x, const double *scale)
{
    int nd = x->ndim;
    bool ok = x->dtype == SS_DT_FLOAT32 && a->mode == M_LINEAR && (nd == 2 || nd == 4) &&
              (a->coord == C_HALF_PIXEL || a->coord == C_PYTORCH || a->coord == C_ALIGN ||
               a->coord == C_ASYM) &&
              !a->exclude_outside;
    for (int d = 0; ok && d < nd - 2; d++)
        ok = scale[d] == 1;
    for (int d = nd - 2; ok && d < nd; d++)
        ok = x->dims[d] > 0;
    return ok;
}

/* Reads a float tensor's plan-time value into dst (count returned, -1 when absent/empty). */
static ss_status *plan_floats(ss_kctx *k, int i, const char *what, double *dst, int cap, int *n)
{
    *n = -1;
    if (i >= k->n_in || !k->in[i] || ss_tensor_numel(k->in[i]) == 0) return NULL;
    const ss_tensor *v;
    ss_status *st = ss_op_plan_value(k, i, what, &v);
    if (st) return st;
    if (!ss_dtype_is_float(v->dtype) || v->ndim != 1 || ss_tensor_numel(v) > cap)
        return ss_op_err(k, SS_ERR_INVALID,
                         "input '%s' must be a 1-D float tensor of at most %d "
                         "values",
                         what, cap);
    *n = (int)ss_tensor_numel(v);
    for (int j = 0; j < *n; j++)
        dst[j] = ss_op_elem_f64(v, j);
    return NULL;
}

/* Per-axis scales and output sizes from the node's scales or sizes (and axes, policy). */
static ss_status *output_sizes(ss_kctx *k, bool legacy, const ss_tensor *x, double *scale,
                               double *roi, int64_t *out)
{
    int nd = x->ndim, na = nd, ns, nz = -1, nr = -1;
    int64_t axes[SS_MAX_DIMS], sizes[SS_MAX_DIMS];
    double given[SS_MAX_DIMS], roi_in[2 * SS_MAX_DIMS];
    ss_status *st = NULL;
    for (int d = 0; d < nd; d++)
        axes[d] = d, scale[d] = 1, out[d] = x->dims[d], roi[d] = 0, roi[nd + d] = 1;
    const int64_t *av;
    int n_axes = ss_onnx_attr_ints(k->node, "axes", &av);
    if (n_axes >= 0) {
        if (n_axes > nd) return ss_op_err(k, SS_ERR_INVALID, "more axes than the rank");
        na = n_axes;
        for (int i = 0; i < na; i++) {
            int a;
            if ((st = ss_op_axis(k, av[i], nd, &a))) return st;
            axes[i] = a;
        }
    }
    if (!strcmp(k->node->op_type, "Upsample") && k->opset < 9) {
        const ss_onnx_attr *sa = ss_onnx_attr_find(k->node, "scales");
        ns = sa ? (int)sa->n_floats : -1;
        for (int i = 0; i < ns && i < SS_MAX_DIMS; i++)
            given[i] = sa->floats[i];
    } else if ((st = plan_floats(k, legacy ? 1 : 2, "scales", given, SS_MAX_DIMS, &ns))) {
        return st;
    }
    if (!legacy && (st = ss_op_plan_ints(k, 3, "sizes", sizes, SS_MAX_DIMS, &nz))) return st;
    if (!legacy && (st = plan_floats(k, 1, "roi", roi_in, 2 * SS_MAX_DIMS, &nr))) return st;
    if ((ns >= 0) == (nz >= 0))
        return ss_op_err(k, SS_ERR_INVALID, "needs exactly one of 'scales' and 'sizes'");
    if ((ns >= 0 ? ns : nz) != na)
        return ss_op_err(k, SS_ERR_INVALID, "%s has %d values for %d axes",
                         ns >= 0 ? "scales" : "sizes", ns >= 0 ? ns : nz, na);
    if (nr >= 0 && nr == 2 * na)
        for (int i = 0; i < na; i++)
            roi[axes[i]] = roi_in[i], roi[nd + axes[i]] = roi_in[na + i];
    if (ns >= 0) {
        for (int i = 0; i < na; i++) {
            if (!(given[i] > 0)) return ss_op_err(k, SS_ERR_INVALID, "scales must be positive");
            if (!((double)x->dims[axes[i]] * given[i] < 0x1p40))
                return ss_op_err(k, SS_ERR_LIMIT, "scale %g makes axis %d too large", given[i],
                                 (int)axes[i]);
            scale[axes[i]] = given[i];
            out[axes[i]] = (int64_t)floor((double)x->dims[axes[i]] * given[i]);
        }
        return NULL;
    }
    char policy[32] = "stretch";
    ss_onnx_attr_string(k->node, "keep_aspect_ratio_policy", policy, sizeof policy);
    bool smaller = !strcmp(policy, "not_smaller"), larger = !strcmp(policy, "not_larger");
    if (!smaller && !larger && strcmp(policy, "stretch"))
        return ss_op_err(k, SS_ERR_INVALID, "keep_aspect_ratio_policy '%s'", policy);
    double keep = smaller ? 0 : INFINITY;
    for (int i = 0; i < na; i++) {
        if (sizes[i] < 0 || sizes[i] > (1ll << 40))
            return ss_op_err(k, SS_ERR_INVALID, "size %lld is out of range", (long long)sizes[i]);
        double s = x->dims[axes[i]] ? (double)sizes[i] / (double)x->dims[axes[i]] : 1;
        keep = smaller ? fmax(keep, s) : fmin(keep, s);
        scale[axes[i]] = s;
        out[axes[i]] = sizes[i];
    }
    for (int i = 0; (smaller || larger) && i < na; i++) {
        scale[axes[i]] = keep;
        out[axes[i]] = (int64_t)round((double)x->dims[axes[i]] * keep);
    }
    return NULL;
}

static ss_status *resize_infer(ss_kctx *k)
{
    bool upsample = !strcmp(k->node->op_type, "Upsample");
    bool legacy = upsample || k->opset < 11;
    ss_status *st = ss_op_expect_inputs(k,
                                        upsample && k->opset < 9 ? 1
                                        : legacy                 ? 2
                                                                 : 1,
                                        legacy ? 2 : 4);
    resize_attrs a = {0};
    if (!st) st = read_attrs(k, legacy, &a);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->dtype == SS_DT_STRING) return ss_op_err(k, SS_ERR_UNSUPPORTED, "string input");
    if (a.mode != M_NEAREST && x->dtype != SS_DT_FLOAT32 && x->dtype != SS_DT_FLOAT64)
        return ss_op_err(k, SS_ERR_UNSUPPORTED,
                         "linear and cubic modes need float32 or float64, "
                         "not %s",
                         ss_dtype_name(x->dtype));
    int nd = x->ndim;
    double scale[SS_MAX_DIMS], roi[2 * SS_MAX_DIMS];
    int64_t out[SS_MAX_DIMS];
    if ((st = output_sizes(k, legacy, x, scale, roi, out))) return st;
    ss_tensor *y = k->out[0];
    y->dtype = x->dtype;
    y->ndim = nd;
    memcpy(y->dims, out, sizeof(int64_t) * (size_t)nd);
    if (ss_tensor_numel(y) < 0) return ss_op_err(k, SS_ERR_LIMIT, "output too large");
    size_t bytes = sizeof(resize_plan) + sizeof(double) * (size_t)(nd ? x->dims[nd - 1] : 0);
    for (int d = 0; d < nd; d++)
        bytes += (size_t)out[d] * MAX_TAPS * (sizeof(int64_t) + sizeof(double)) +
                 (size_t)(out[d] + 7) / 8 * 8;
    resize_plan *p = ss_op_state_alloc(k, bytes);
    if (!p) return ss_op_oom();
    p->nd = nd;
    p->es = ss_dtype_size(x->dtype);
    p->extrapolation = a.extrapolation;
    p->interpolate = a.mode != M_NEAREST;
    memcpy(p->out_dims, out, sizeof(int64_t) * (size_t)nd);
    ss_op_contiguous_strides(nd, x->dims, p->in_stride);
    p->in_last = nd ? x->dims[nd - 1] : 0;
    p->row = (double *)(p + 1);
    unsigned char *mem = (unsigned char *)(p->row + p->in_last);
    for (int d = 0; d < nd; d++)
        if (x->dims[d] == 0 && out[d] > 0)
            return ss_op_err(k, SS_ERR_INVALID, "cannot resize the empty axis %d to %lld", d,
                             (long long)out[d]);
    p->bilinear_f32 = ort_bilinear(&a, x, scale);
    p->in_plane = nd >= 2 ? x->dims[nd - 2] * x->dims[nd - 1] : 0;
    for (int d = 0; d < nd && !st; d++) {
        double r[2] = {roi[d], roi[nd + d]};
        if (p->bilinear_f32 && d >= nd - 2) {
            plan_axis_bilinear(&a, p, d, x->dims[d], scale[d], &mem);
            continue;
        }
        st = plan_axis(k, &a, p, d, x->dims[d], scale[d], r, &mem);
    }
    return st;
}

/* Separable per output row: the outer axes' taps fold whole input rows into one row of the last
 * axis (p->row, contiguous and vectorisable), then the last axis' taps read that row. */
#define RESIZE_KERNEL(T)                                                                           \
    static void resize_##T(const resize_plan *p, const T *x, T *y, int64_t numel)                  \
    {                                                                                              \
        int last = p->nd - 1, outer = 1, n = p->ntaps[last];                                       \
        for (int d = 0; d < last; d++)                                                             \
            outer *= p->ntaps[d];                                                                  \
        int64_t in_w = p->in_last, out_w = p->out_dims[last], rows = numel / out_w;                \
        int64_t idx[SS_MAX_DIMS] = {0};                                                            \
        double *restrict row = p->row;                                                             \
        for (int64_t r = 0; r < rows; r++, y += out_w) {                                           \
            bool outside = false;                                                                  \
            for (int d = 0; d < last; d++)                                                         \
                outside |= p->outside[d][idx[d]];                                                  \
            for (int64_t i = 0; i < in_w; i++)                                                     \
                row[i] = 0;                                                                        \
            for (int t = 0; !outside && t < outer; t++) {                                          \
                int64_t off = 0;                                                                   \
                double w = 1;                                                                      \
                for (int d = last - 1, rest = t; d >= 0; d--) {                                    \
                    int nt = p->ntaps[d], tap = rest % nt;                                         \
                    rest /= nt;                                                                    \
                    off += p->src[d][idx[d] * nt + tap];                                           \
                    w *= p->w[d][idx[d] * nt + tap];                                               \
                }                                                                                  \
                if (w == 0) continue;                                                              \
                const T *restrict xr = x + off;                                                    \
                for (int64_t i = 0; i < in_w; i++)                                                 \
                    row[i] += w * (double)xr[i];                                                   \
            }                                                                                      \
            const int64_t *src = p->src[last];                                                     \
            const double *wl = p->w[last];                                                         \
            for (int64_t o = 0; o < out_w; o++) {                                                  \
                double acc = 0;                                                                    \
                for (int t = 0; t < n; t++)                                                        \
                    acc += wl[o * n + t] * row[src[o * n + t]];                                    \
                y[o] = (T)(outside || p->outside[last][o] ? p->extrapolation : acc);               \
            }                                                                                      \
            for (int d = last - 1; d >= 0 && ++idx[d] == p->out_dims[d]; d--)                      \
                idx[d] = 0;                                                                        \
        }                                                                                          \
    }

RESIZE_KERNEL(float)
RESIZE_KERNEL(double)

#define NEAREST_ROW(T)                                                                             \
    for (int64_t o = 0; o < out_w; o++)                                                            \
        ((T *)y)[o] = ((const T *)xr)[src[o]];

/* Nearest: one tap per axis, so each output row reads one input row; elements move by size.
 * Extrapolated points get the (float) attribute only in float outputs, 0 elsewhere. */
static void resize_nearest(const resize_plan *p, const char *x, char *y, int64_t numel, ss_dtype dt)
{
    int last = p->nd - 1;
    size_t es = p->es;
    int64_t idx[SS_MAX_DIMS] = {0}, out_w = last >= 0 ? p->out_dims[last] : 1;
    const int64_t *src = last >= 0 ? p->src[last] : (const int64_t[]){0};
    float ef = (float)p->extrapolation;
    double ed = p->extrapolation;
    for (int64_t r = 0, rows = numel / out_w; r < rows; r++, y += out_w * (int64_t)es) {
        int64_t off = 0;
        bool row_out = false;
        for (int d = 0; d < last; d++) {
            off += p->src[d][idx[d]];
            row_out |= p->outside[d][idx[d]];
        }
        const char *xr = x + off * (int64_t)es;
        if (es == 4)
            NEAREST_ROW(uint32_t)
        else if (es == 8)
            NEAREST_ROW(uint64_t)
        else if (es == 2)
            NEAREST_ROW(uint16_t)
        else if (es == 1)
            NEAREST_ROW(uint8_t)
        else
            for (int64_t o = 0; o < out_w; o++)
                memcpy(y + o * (int64_t)es, xr + src[o] * (int64_t)es, es);
        for (int64_t o = 0; o < out_w; o++) {
            if (!row_out && (last < 0 || !p->outside[last][o])) continue;
            char *e = y + o * (int64_t)es;
            if (dt == SS_DT_FLOAT32)
                memcpy(e, &ef, 4);
            else if (dt == SS_DT_FLOAT64)
                memcpy(e, &ed, 8);
            else
                memset(e, 0, es);
        }
        for (int d = last - 1; d >= 0 && ++idx[d] == p->out_dims[d]; d--)
            idx[d] = 0;
    }
}

/* onnxruntime's float bilinear (see the top): one image of the last two axes at a time. */
static void resize_bilinear_f32(const resize_plan *p, const float *x, float *y, int64_t numel)
{
    int h = p->nd - 2, w = p->nd - 1;
    int64_t oh = p->out_dims[h], ow = p->out_dims[w], planes = numel / (oh * ow);
    for (int64_t pl = 0; pl < planes; pl++, x += p->in_plane)
        for (int64_t yy = 0; yy < oh; yy++) {
            const float *r1 = x + p->src[h][2 * yy], *r2 = x + p->src[h][2 * yy + 1];
            float dy2 = (float)p->w[h][2 * yy], dy1 = (float)p->w[h][2 * yy + 1];
            for (int64_t xx = 0; xx < ow; xx++, y++) {
                int64_t x1 = p->src[w][2 * xx], x2 = p->src[w][2 * xx + 1];
                float dx2 = (float)p->w[w][2 * xx], dx1 = (float)p->w[w][2 * xx + 1];
                *y = dx2 * dy2 * r1[x1] + dx1 * dy2 * r1[x2] + dx2 * dy1 * r2[x1] +
                     dx1 * dy1 * r2[x2];
            }
        }
}

static ss_status *resize_run(ss_kctx *k)
{
    const resize_plan *p = k->state;
    int64_t numel = ss_tensor_numel(k->out[0]);
    if (numel <= 0) return NULL;
    if (!p->interpolate || p->nd == 0)
        resize_nearest(p, k->in[0]->data, k->out[0]->data, numel, k->in[0]->dtype);
    else if (p->bilinear_f32)
        resize_bilinear_f32(p, k->in[0]->data, k->out[0]->data, numel);
    else if (k->in[0]->dtype == SS_DT_FLOAT32)
        resize_float(p, k->in[0]->data, k->out[0]->data, numel);
    else
        resize_double(p, k->in[0]->data, k->out[0]->data, numel);
    return NULL;
}

const ss_op_def ss_ops_resize[] = {
    {"", "Resize", 10, 21, resize_infer, resize_run, 0},
    {"", "Upsample", 7, 9, resize_infer, resize_run, 0},
    {0},
};
