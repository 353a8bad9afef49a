/*
 * Sampling at computed positions: GridSample (2-D images), RoiAlign, MaxRoiPool and MaxUnpool.
 *
 * GridSample follows the spec's reference (and onnxruntime's CPU kernel) step for step:
 * denormalise the grid point, round it (nearest) or clamp/reflect it into the image (border,
 * reflection), then read pixels with the padding rule, combining 1, 4 or 16 of them. RoiAlign
 * averages (or takes the max of) bilinear samples on a regular grid inside each bin, as
 * onnxruntime does. MaxUnpool scatters X into a zeroed output at MaxPool's flat indices. float32
 * and float64; run never allocates.
 */
#include "common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ GridSample */

typedef enum { GS_LINEAR = 0, GS_NEAREST, GS_CUBIC } gs_mode;
typedef enum { GS_ZEROS = 0, GS_BORDER, GS_REFLECTION } gs_padding;

typedef struct {
    gs_mode mode;
    gs_padding padding;
    bool align;
    int64_t N, C, H, W, Ho, Wo;
} gs_plan;

static ss_status *gs_read_enum(const ss_kctx *k, const char *name, const char *dflt,
                               const char *const *names, int n, int *out)
{
    char buf[32];
    const char *v = ss_onnx_attr_string(k->node, name, buf, sizeof buf);
    if (!v) v = dflt;
    for (int i = 0; i < n; i++)
        if (strcmp(v, names[i]) == 0) {
            *out = i % 3; /* the opset-20 names follow the opset-16 ones */
            return NULL;
        }
    return ss_op_err(k, SS_ERR_UNSUPPORTED, "%s '%s'", name, v);
}

static ss_status *gridsample_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"align_corners", "mode", "padding_mode", NULL};
    static const char *const modes[] = {"bilinear", "nearest", "bicubic",
                                        "linear",   "nearest", "cubic"};
    static const char *const pads[] = {"zeros", "border", "reflection"};
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_op_expect_float(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0], *g = k->in[1];
    if (x->ndim != 4 || g->ndim != 4 || g->dims[3] != 2 || g->dims[0] != x->dims[0] ||
        g->dtype != x->dtype)
        return ss_op_err(k, SS_ERR_UNSUPPORTED,
                         "only 2-D sampling: X [N,C,H,W] and grid [N,Ho,Wo,2] of X's type");
    gs_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    int mode = 0, pad = 0;
    st = gs_read_enum(k, "mode", k->opset >= 20 ? "linear" : "bilinear", modes, 6, &mode);
    if (!st) st = gs_read_enum(k, "padding_mode", "zeros", pads, 3, &pad);
    if (st) return st;
    *p = (gs_plan){
        (gs_mode)mode, (gs_padding)pad, ss_onnx_attr_int(k->node, "align_corners", 0) != 0,
        x->dims[0],    x->dims[1],      x->dims[2],
        x->dims[3],    g->dims[1],      g->dims[2]};
    ss_op_same_shape(k->out[0], x);
    k->out[0]->dims[2] = p->Ho;
    k->out[0]->dims[3] = p->Wo;
    return NULL;
}

static double gs_denormalize(double n, int64_t len, bool align)
{
    return align ? (n + 1) / 2 * (double)(len - 1) : ((n + 1) * (double)len - 1) / 2;
}

static double gs_reflect(double x, double lo, double hi)
{
    double rng = hi - lo;
    if (rng <= 0) return lo;
    if (x < lo) {
        double dx = lo - x, n = floor(dx / rng), r = dx - n * rng;
        return fmod(n, 2) == 0 ? lo + r : hi - r;
    }
    if (x > hi) {
        double dx = x - hi, n = floor(dx / rng), r = dx - n * rng;
        return fmod(n, 2) == 0 ? hi - r : lo + r;
    }
    return x;
}

/* Pixel (y, x) of one channel image under the padding rule. */
static double gs_pixel(const gs_plan *p, const ss_tensor *img, int64_t base, int64_t y, int64_t x)
{
    if (p->padding == GS_BORDER) {
        x = x < 0 ? 0 : x >= p->W ? p->W - 1 : x;
        y = y < 0 ? 0 : y >= p->H ? p->H - 1 : y;
    } else if (p->padding == GS_REFLECTION) {
        double lo = p->align ? 0 : -0.5;
        x = (int64_t)gs_reflect((double)x, lo, p->align ? (double)(p->W - 1) : p->W - 0.5);
        y = (int64_t)gs_reflect((double)y, lo, p->align ? (double)(p->H - 1) : p->H - 0.5);
    }
    if (x < 0 || x >= p->W || y < 0 || y >= p->H) return 0;
    return ss_op_elem_f64(img, base + y * p->W + x);
}

static void gs_cubic_coeffs(double t, double *c)
{
    const double A = -0.75;
    c[0] = ((A * (t + 1) - 5 * A) * (t + 1) + 8 * A) * (t + 1) - 4 * A;
    c[1] = ((A + 2) * t - (A + 3)) * t * t + 1;
    c[2] = ((A + 2) * (1 - t) - (A + 3)) * (1 - t) * (1 - t) + 1;
    c[3] = ((A * (2 - t) - 5 * A) * (2 - t) + 8 * A) * (2 - t) - 4 * A;
}

/* One output value: channel image at `base`, image coordinates (y, x) already adjusted. */
static double gs_sample(const gs_plan *p, const ss_tensor *img, int64_t base, double y, double x)
{
    /* A coordinate far outside the image (or NaN) reads the same taps as one a few pixels out:
     * clamped there, so the integer conversions below stay defined for any grid a client sends. */
    x = fmax(fmin(x, (double)p->W + 8), -8.0);
    y = fmax(fmin(y, (double)p->H + 8), -8.0);
    if (p->mode == GS_NEAREST) return gs_pixel(p, img, base, (int64_t)y, (int64_t)x);
    double fx = floor(x), fy = floor(y);
    int64_t x0 = (int64_t)fx, y0 = (int64_t)fy;
    if (p->mode == GS_LINEAR) {
        double dx = x - fx, dy = y - fy;
        return (1 - dy) * ((1 - dx) * gs_pixel(p, img, base, y0, x0) +
                           dx * gs_pixel(p, img, base, y0, x0 + 1)) +
               dy * ((1 - dx) * gs_pixel(p, img, base, y0 + 1, x0) +
                     dx * gs_pixel(p, img, base, y0 + 1, x0 + 1));
    }
    double cx[4], cy[4], v = 0;
    gs_cubic_coeffs(x - fx, cx);
    gs_cubic_coeffs(y - fy, cy);
    for (int h = 0; h < 4; h++) {
        double row = 0;
        for (int w = 0; w < 4; w++)
            row += cx[w] * gs_pixel(p, img, base, y0 - 1 + h, x0 - 1 + w);
        v += cy[h] * row;
    }
    return v;
}

/* A grid coordinate in image space, rounded (nearest) and clamped or reflected (padding). */
static double gs_coord(const gs_plan *p, double n, int64_t len)
{
    double c = gs_denormalize(n, len, p->align);
    if (p->mode == GS_NEAREST) c = rint(c);
    double lo = p->align ? 0 : -0.5, hi = p->align ? (double)(len - 1) : len - 0.5;
    if (c >= lo && c <= hi) return c;
    if (p->padding == GS_BORDER) return c < 0 ? 0 : c > (double)(len - 1) ? (double)(len - 1) : c;
    if (p->padding == GS_REFLECTION) return gs_reflect(c, lo, hi);
    return c;
}

static ss_status *gridsample_run(ss_kctx *k)
{
    const gs_plan *p = k->state;
    const ss_tensor *x = k->in[0], *g = k->in[1];
    ss_tensor *y = k->out[0];
    for (int64_t n = 0; n < p->N; n++)
        for (int64_t i = 0; i < p->Ho * p->Wo; i++) {
            int64_t gi = (n * p->Ho * p->Wo + i) * 2;
            double cx = gs_coord(p, ss_op_elem_f64(g, gi), p->W);
            double cy = gs_coord(p, ss_op_elem_f64(g, gi + 1), p->H);
            for (int64_t c = 0; c < p->C; c++) {
                double v = gs_sample(p, x, (n * p->C + c) * p->H * p->W, cy, cx);
                int64_t o = (n * p->C + c) * p->Ho * p->Wo + i;
                if (y->dtype == SS_DT_FLOAT32)
                    ((float *)y->data)[o] = (float)v;
                else
                    ((double *)y->data)[o] = v;
            }
        }
    return NULL;
}

/* ------------------------------------------------------------------ RoiAlign */

typedef struct {
    int64_t C, H, W, oh, ow, rois, sampling;
    float scale;
    bool half_pixel, max;
} roi_plan;

/* Bounds on the sampling grid of one output bin, so an attribute or an roi of absurd size is an
 * error rather than hours of work (or an overflow): realistic grids are a few to a few hundred a
 * side (an roi of 1344 pixels into 7 bins: 192). */
#define ROI_GRID_MAX 65536
#define ROI_SIDE_MAX 4096 /* sampling_ratio: ROI_SIDE_MAX^2 = ROI_SAMPLES_MAX */
#define ROI_SAMPLES_MAX (1 << 24)

static ss_status *roialign_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"coordinate_transformation_mode",
                                        "mode",
                                        "output_height",
                                        "output_width",
                                        "sampling_ratio",
                                        "spatial_scale",
                                        NULL};
    ss_status *st = ss_op_expect_inputs(k, 3, 3);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_op_expect_float(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0], *r = k->in[1], *bi = k->in[2];
    if (x->ndim != 4 || r->ndim != 2 || r->dims[1] != 4 || bi->ndim != 1 ||
        bi->dims[0] != r->dims[0] || r->dtype != x->dtype)
        return ss_op_err(k, SS_ERR_INVALID,
                         "X must be [N,C,H,W], rois [R,4] of X's type, batch_indices [R]");
    roi_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    char mb[16], cb[32];
    const char *mode = ss_onnx_attr_string(k->node, "mode", mb, sizeof mb);
    const char *ctm = ss_onnx_attr_string(k->node, "coordinate_transformation_mode", cb, sizeof cb);
    if (!ctm) ctm = k->opset >= 16 ? "half_pixel" : "output_half_pixel";
    if ((mode && strcmp(mode, "avg") != 0 && strcmp(mode, "max") != 0) ||
        (strcmp(ctm, "half_pixel") != 0 && strcmp(ctm, "output_half_pixel") != 0))
        return ss_op_err(k, SS_ERR_INVALID, "unknown mode or coordinate_transformation_mode");
    *p = (roi_plan){.C = x->dims[1],
                    .H = x->dims[2],
                    .W = x->dims[3],
                    .oh = ss_onnx_attr_int(k->node, "output_height", 1),
                    .ow = ss_onnx_attr_int(k->node, "output_width", 1),
                    .rois = r->dims[0],
                    .sampling = ss_onnx_attr_int(k->node, "sampling_ratio", 0),
                    .scale = ss_onnx_attr_float(k->node, "spatial_scale", 1.0f),
                    .half_pixel = strcmp(ctm, "half_pixel") == 0,
                    .max = mode && strcmp(mode, "max") == 0};
    if (p->oh < 1 || p->ow < 1 || p->sampling < 0)
        return ss_op_err(k, SS_ERR_INVALID, "output sizes must be positive");
    if (!isfinite(p->scale))
        return ss_op_err(k, SS_ERR_INVALID, "spatial_scale %g is not a finite number",
                         (double)p->scale);
    if (p->sampling > ROI_SIDE_MAX)
        return ss_op_err(k, SS_ERR_LIMIT, "sampling_ratio %lld is over %d (%d samples a bin)",
                         (long long)p->sampling, ROI_SIDE_MAX, ROI_SAMPLES_MAX);
    *k->out[0] = (ss_tensor){.dtype = x->dtype, .ndim = 4, .dims = {p->rois, p->C, p->oh, p->ow}};
    return NULL;
}

/* The bilinear sample at (y, x) of one channel image, and its four weighted taps for max. */
static double roi_bilinear(const roi_plan *p, const ss_tensor *img, int64_t base, double y,
                           double x, double *tapmax)
{
    *tapmax = 0;
    if (!(y >= -1.0 && y <= (double)p->H && x >= -1.0 && x <= (double)p->W)) return 0; /* NaN too */
    y = y <= 0 ? 0 : y;
    x = x <= 0 ? 0 : x;
    int64_t yl = (int64_t)y, xl = (int64_t)x, yh, xh;
    if (yl >= p->H - 1)
        yh = yl = p->H - 1, y = (double)yl;
    else
        yh = yl + 1;
    if (xl >= p->W - 1)
        xh = xl = p->W - 1, x = (double)xl;
    else
        xh = xl + 1;
    double ly = y - (double)yl, lx = x - (double)xl, hy = 1 - ly, hx = 1 - lx;
    double t[4] = {hy * hx * ss_op_elem_f64(img, base + yl * p->W + xl),
                   hy * lx * ss_op_elem_f64(img, base + yl * p->W + xh),
                   ly * hx * ss_op_elem_f64(img, base + yh * p->W + xl),
                   ly * lx * ss_op_elem_f64(img, base + yh * p->W + xh)};
    *tapmax = fmax(fmax(t[0], t[1]), fmax(t[2], t[3]));
    return t[0] + t[1] + t[2] + t[3];
}

/* One bin of one roi: start (y, x), bin size (h, w), grid of gh x gw samples. */
static double roi_bin(const roi_plan *p, const ss_tensor *img, int64_t base, const double *start,
                      const double *bin, const int64_t *grid)
{
    double acc = 0, best = -INFINITY;
    for (int64_t iy = 0; iy < grid[0]; iy++) {
        double y = start[0] + ((double)iy + 0.5) * bin[0] / (double)grid[0];
        for (int64_t ix = 0; ix < grid[1]; ix++) {
            double x = start[1] + ((double)ix + 0.5) * bin[1] / (double)grid[1], tap;
            acc += roi_bilinear(p, img, base, y, x, &tap);
            best = tap > best ? tap : best;
        }
    }
    int64_t count = grid[0] * grid[1] > 0 ? grid[0] * grid[1] : 1;
    return p->max ? best : acc / (double)count;
}

/* The grid side of one bin when sampling_ratio is 0: ceil(extent / bins) (negative for a
 * reversed roi under half_pixel: no samples, as in onnxruntime), or INT64_MIN when that is not a
 * finite number within +-ROI_GRID_MAX (an roi of absurd or non-finite size). */
static int64_t roi_adaptive_grid(double extent, int64_t bins)
{
    double g = ceil(extent / (double)bins);
    return g >= -ROI_GRID_MAX && g <= ROI_GRID_MAX ? (int64_t)g : INT64_MIN; /* NaN: INT64_MIN */
}

static ss_status *roialign_run(ss_kctx *k)
{
    const roi_plan *p = k->state;
    const ss_tensor *x = k->in[0], *r = k->in[1], *bi = k->in[2];
    ss_tensor *y = k->out[0];
    double off = p->half_pixel ? 0.5 : 0;
    int64_t o = 0;
    for (int64_t n = 0; n < p->rois; n++) {
        int64_t b = ss_op_elem_i64(bi, n);
        if (b < 0 || b >= x->dims[0])
            return ss_op_err(k, SS_ERR_INVALID, "batch index %lld is out of range", (long long)b);
        double c[4];
        for (int j = 0; j < 4; j++)
            c[j] = ss_op_elem_f64(r, n * 4 + j) * p->scale - off;
        double rh = c[3] - c[1], rw = c[2] - c[0];
        if (!p->half_pixel) rh = fmax(rh, 1), rw = fmax(rw, 1);
        double bin[2] = {rh / (double)p->oh, rw / (double)p->ow};
        int64_t grid[2] = {p->sampling > 0 ? p->sampling : roi_adaptive_grid(rh, p->oh),
                           p->sampling > 0 ? p->sampling : roi_adaptive_grid(rw, p->ow)};
        if (grid[0] == INT64_MIN || grid[1] == INT64_MIN ||
            llabs(grid[0] * grid[1]) > ROI_SAMPLES_MAX)
            return ss_op_err(k, SS_ERR_LIMIT,
                             "roi %lld (%g x %g after spatial_scale) needs more than %d samples "
                             "a bin with sampling_ratio 0",
                             (long long)n, rh, rw, ROI_SAMPLES_MAX);
        for (int64_t ch = 0; ch < p->C; ch++)
            for (int64_t ph = 0; ph < p->oh; ph++)
                for (int64_t pw = 0; pw < p->ow; pw++, o++) {
                    double start[2] = {c[1] + (double)ph * bin[0], c[0] + (double)pw * bin[1]};
                    double v = roi_bin(p, x, (b * p->C + ch) * p->H * p->W, start, bin, grid);
                    if (y->dtype == SS_DT_FLOAT32)
                        ((float *)y->data)[o] = (float)v;
                    else
                        ((double *)y->data)[o] = v;
                }
    }
    return NULL;
}

/* ------------------------------------------------------------------ MaxRoiPool */

/*
 * Fast R-CNN's RoI max pooling, as Caffe and onnxruntime compute it: each roi (batch index, x1,
 * y1, x2, y2) is scaled by spatial_scale and rounded (half away from zero) to whole pixels,
 * inclusive of its end, at least 1x1, and cut into pooled_shape bins of float size; bin (ph, pw)
 * covers rows floor(ph * h) .. ceil((ph + 1) * h) from the roi's start, clipped to the image. A bin
 * that falls outside the image is 0; otherwise the maximum of its pixels.
 */
typedef struct {
    int64_t C, H, W, ph, pw, rois;
    float scale;
} maxroi_plan;

static ss_status *maxroipool_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"pooled_shape", "spatial_scale", NULL};
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_op_expect_float(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0], *r = k->in[1];
    if (x->ndim != 4 || r->ndim != 2 || r->dims[1] != 5 || r->dtype != x->dtype)
        return ss_op_err(k, SS_ERR_INVALID,
                         "X must be [N,C,H,W] and rois [num_rois,5] of X's type; rois is %s of "
                         "rank %d",
                         ss_dtype_name(r->dtype), r->ndim);
    const int64_t *shape;
    if (ss_onnx_attr_ints(k->node, "pooled_shape", &shape) != 2 || shape[0] < 1 || shape[1] < 1)
        return ss_op_err(k, SS_ERR_INVALID,
                         "attribute 'pooled_shape' must be two positive sizes [height, width]");
    maxroi_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    *p = (maxroi_plan){.C = x->dims[1],
                       .H = x->dims[2],
                       .W = x->dims[3],
                       .ph = shape[0],
                       .pw = shape[1],
                       .rois = r->dims[0],
                       .scale = ss_onnx_attr_float(k->node, "spatial_scale", 1.0f)};
    if (!isfinite(p->scale))
        return ss_op_err(k, SS_ERR_INVALID, "attribute 'spatial_scale' must be finite");
    *k->out[0] = (ss_tensor){.dtype = x->dtype, .ndim = 4, .dims = {p->rois, p->C, p->ph, p->pw}};
    if (ss_tensor_numel(k->out[0]) < 0) return ss_op_err(k, SS_ERR_LIMIT, "output is too large");
    return NULL;
}

/* v clamped to [0, hi] */
static int64_t clamp_index(int64_t v, int64_t hi)
{
    return v < 0 ? 0 : v > hi ? hi : v;
}

/* a roi coordinate in pixels, rounded half away from zero, saturated far outside any image */
static int64_t roi_pixel(double v, float scale)
{
    float f = roundf((float)v * scale);
    return f != f         ? 0
           : f > 0x1p40f  ? (int64_t)1 << 40
           : f < -0x1p40f ? -((int64_t)1 << 40)
                          : (int64_t)f;
}

static ss_status *maxroipool_run(ss_kctx *k)
{
    const maxroi_plan *p = k->state;
    const ss_tensor *x = k->in[0], *r = k->in[1];
    ss_tensor *y = k->out[0];
    int64_t o = 0;
    for (int64_t n = 0; n < p->rois; n++) {
        double bd = ss_op_elem_f64(r, n * 5);
        int64_t b = ss_op_sat_i64(bd);
        if (!(bd >= 0) || b >= x->dims[0])
            return ss_op_err(k, SS_ERR_INVALID,
                             "roi %lld: batch index %g is out of range (X has %lld images)",
                             (long long)n, bd, (long long)x->dims[0]);
        int64_t x1 = roi_pixel(ss_op_elem_f64(r, n * 5 + 1), p->scale);
        int64_t y1 = roi_pixel(ss_op_elem_f64(r, n * 5 + 2), p->scale);
        int64_t x2 = roi_pixel(ss_op_elem_f64(r, n * 5 + 3), p->scale);
        int64_t y2 = roi_pixel(ss_op_elem_f64(r, n * 5 + 4), p->scale);
        int64_t rh = y2 - y1 + 1 > 1 ? y2 - y1 + 1 : 1, rw = x2 - x1 + 1 > 1 ? x2 - x1 + 1 : 1;
        float bh = (float)rh / (float)p->ph, bw = (float)rw / (float)p->pw;
        for (int64_t ch = 0; ch < p->C; ch++) {
            int64_t base = (b * p->C + ch) * p->H * p->W;
            for (int64_t i = 0; i < p->ph; i++)
                for (int64_t j = 0; j < p->pw; j++, o++) {
                    int64_t h0 = clamp_index((int64_t)floorf((float)i * bh) + y1, p->H);
                    int64_t h1 = clamp_index((int64_t)ceilf((float)(i + 1) * bh) + y1, p->H);
                    int64_t w0 = clamp_index((int64_t)floorf((float)j * bw) + x1, p->W);
                    int64_t w1 = clamp_index((int64_t)ceilf((float)(j + 1) * bw) + x1, p->W);
                    double best = h1 > h0 && w1 > w0 ? -INFINITY : 0;
                    for (int64_t h = h0; h < h1; h++)
                        for (int64_t w = w0; w < w1; w++) {
                            double v = ss_op_elem_f64(x, base + h * p->W + w);
                            best = v > best ? v : best;
                        }
                    ss_op_store_f64(y->data, o, y->dtype, best);
                }
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ MaxUnpool */

static ss_status *maxunpool_shape(ss_kctx *k, ss_tensor *y)
{
    const ss_tensor *x = k->in[0];
    int nsp = x->ndim - 2;
    const int64_t *ks, *st_, *pads;
    int nk = ss_onnx_attr_ints(k->node, "kernel_shape", &ks);
    int ns = ss_onnx_attr_ints(k->node, "strides", &st_);
    int np = ss_onnx_attr_ints(k->node, "pads", &pads);
    if (nk != nsp || (ns >= 0 && ns != nsp) || (np >= 0 && np != 2 * nsp))
        return ss_op_err(k, SS_ERR_INVALID, "kernel_shape, strides and pads must fit rank %d",
                         x->ndim);
    ss_op_same_shape(y, x);
    for (int i = 0; i < nsp; i++) {
        int64_t s = ns >= 0 ? st_[i] : 1, pb = np >= 0 ? pads[i] : 0,
                pe = np >= 0 ? pads[nsp + i] : 0;
        int64_t o;
        if (s < 1 || ks[i] < 1 || pb < 0 || pe < 0)
            return ss_op_err(k, SS_ERR_INVALID,
                             "kernel_shape and strides must be positive, pads non-negative");
        if (__builtin_mul_overflow(x->dims[2 + i] - 1, s, &o) ||
            __builtin_add_overflow(o, ks[i], &o) || __builtin_sub_overflow(o, pb, &o) ||
            __builtin_sub_overflow(o, pe, &o))
            return ss_op_err(k, SS_ERR_LIMIT, "output size of dim %d overflows", 2 + i);
        y->dims[2 + i] = o;
        if (y->dims[2 + i] < 0) return ss_op_err(k, SS_ERR_INVALID, "negative output size");
    }
    return NULL;
}

static ss_status *maxunpool_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"kernel_shape", "pads", "strides", NULL};
    ss_status *st = ss_op_expect_inputs(k, 2, 3);
    if (!st) st = ss_op_check_attrs(k, attrs);
    if (st) return st;
    const ss_tensor *x = k->in[0], *ind = k->in[1];
    if (x->ndim < 3 || ind->dtype != SS_DT_INT64 ||
        !ss_shape_equal(x->ndim, x->dims, ind->ndim, ind->dims))
        return ss_op_err(k, SS_ERR_INVALID, "X must have rank >= 3 and I X's shape, as int64");
    ss_tensor *inferred = ss_op_state_alloc(k, sizeof *inferred);
    if (!inferred) return ss_op_oom();
    if ((st = maxunpool_shape(k, inferred))) return st;
    ss_op_same_shape(k->out[0], inferred);
    int64_t dims[SS_MAX_DIMS];
    int n = -1;
    if ((st = ss_op_plan_ints(k, 2, "output_shape", dims, SS_MAX_DIMS, &n))) return st;
    if (n < 0) return NULL;
    if (n != x->ndim)
        return ss_op_err(k, SS_ERR_INVALID, "output_shape must have %d values", x->ndim);
    for (int i = 0; i < n; i++) {
        if (dims[i] < (i < 2 ? x->dims[i] : k->out[0]->dims[i]) || (i < 2 && dims[i] != x->dims[i]))
            return ss_op_err(k, SS_ERR_INVALID, "output_shape is smaller than the unpooled shape");
        k->out[0]->dims[i] = dims[i];
    }
    return NULL;
}

/* Indices are flat positions in the unpooled shape (state); a larger output_shape keeps each
 * value at the same coordinates. */
static ss_status *maxunpool_run(ss_kctx *k)
{
    const ss_tensor *x = k->in[0], *ind = k->in[1], *inferred = k->state;
    ss_tensor *y = k->out[0];
    size_t es = ss_dtype_size(x->dtype);
    memset(y->data, 0, y->nbytes);
    int64_t n = ss_tensor_numel(x), total = ss_tensor_numel(inferred);
    int64_t is[SS_MAX_DIMS], ys[SS_MAX_DIMS];
    ss_op_contiguous_strides(y->ndim, inferred->dims, is);
    ss_op_contiguous_strides(y->ndim, y->dims, ys);
    for (int64_t i = 0; i < n; i++) {
        int64_t j = ss_op_elem_i64(ind, i), o = 0;
        if (j < 0 || j >= total)
            return ss_op_err(k, SS_ERR_INVALID, "index %lld is out of range", (long long)j);
        for (int d = 0; d < y->ndim; d++)
            o += j / is[d] % inferred->dims[d] * ys[d];
        memcpy((char *)y->data + (size_t)o * es, (const char *)x->data + (size_t)i * es, es);
    }
    return NULL;
}

const ss_op_def ss_ops_sample[] = {
    {"", "GridSample", 16, 21, gridsample_infer, gridsample_run, 0, NULL},
    {"", "RoiAlign", 10, 21, roialign_infer, roialign_run, 0, NULL},
    {"", "MaxUnpool", 9, 21, maxunpool_infer, maxunpool_run, 0, NULL},
    {"", "MaxRoiPool", 1, 21, maxroipool_infer, maxroipool_run, 0, NULL},
    {NULL, NULL, 0, 0, NULL, NULL, 0, NULL},
};
