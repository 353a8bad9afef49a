/*
 * Signal ops (opset 17): HannWindow, HammingWindow, BlackmanWindow, DFT, STFT and
 * MelWeightMatrix.
 *
 * Window lengths, STFT frame steps/lengths and MelWeightMatrix's parameters shape the output, so
 * infer reads them as plan-time values (constants, folded values or graph inputs). The
 * transforms are direct O(N^2) sums in double, one (re, im) pair per element: exact enough for
 * every dtype the spec allows and with no scratch beyond the output. Nothing allocates in run.
 */
#include "common.h"

#include <math.h>

static const double two_pi = 6.283185307179586476925286766559;

/* A scalar integer input known at plan time. */
static ss_status *plan_scalar(ss_kctx *k, int i, const char *what, int64_t *v)
{
    const ss_tensor *t = NULL;
    ss_status *st = ss_op_plan_value(k, i, what, &t);
    if (st) return st;
    if ((t->dtype != SS_DT_INT32 && t->dtype != SS_DT_INT64) || ss_tensor_numel(t) != 1)
        return ss_op_err(k, SS_ERR_INVALID, "'%s' must be one int32 or int64", what);
    *v = ss_op_elem_i64(t, 0);
    return NULL;
}

static ss_status *output_datatype(ss_kctx *k, ss_dtype *dt)
{
    int64_t v = ss_onnx_attr_int(k->node, "output_datatype", SS_DT_FLOAT32);
    *dt = (ss_dtype)v;
    if (v == SS_DT_STRING || v == SS_DT_BOOL || ss_dtype_size(*dt) == 0)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "output_datatype %lld", (long long)v);
    return NULL;
}

/* ------------------------------------------------------------------ windows */

static ss_status *window_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"output_datatype", "periodic", NULL};
    ss_status *st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_op_expect_inputs(k, 1, 1);
    int64_t size = 0;
    if (!st) st = plan_scalar(k, 0, "size", &size);
    if (!st && (size < 0 || size > ((int64_t)1 << 32)))
        st = ss_op_err(k, SS_ERR_LIMIT, "window size %lld is outside [0, 2^32]", (long long)size);
    if (!st) st = output_datatype(k, &k->out[0]->dtype);
    if (st) return st;
    k->out[0]->ndim = 1;
    k->out[0]->dims[0] = size;
    return NULL;
}

/* Generalised cosine window a0 - a1 cos(2 pi n / N) + a2 cos(4 pi n / N), N = size for a
 * periodic window and size - 1 for a symmetric one. */
static ss_status *window_run(ss_kctx *k, double a0, double a1, double a2)
{
    int64_t size = k->out[0]->dims[0];
    double n_div = ss_onnx_attr_int(k->node, "periodic", 1) ? (double)size : (double)(size - 1);
    for (int64_t n = 0; n < size; n++) {
        double x = n_div > 0 ? two_pi * (double)n / n_div : 0;
        ss_op_store_f64(k->out[0]->data, n, k->out[0]->dtype, a0 - a1 * cos(x) + a2 * cos(2 * x));
    }
    return NULL;
}

static ss_status *hann_run(ss_kctx *k)
{
    return window_run(k, 0.5, 0.5, 0);
}

static ss_status *hamming_run(ss_kctx *k)
{
    return window_run(k, 25.0 / 46.0, 21.0 / 46.0, 0);
}

static ss_status *blackman_run(ss_kctx *k)
{
    return window_run(k, 0.42, 0.5, 0.08);
}

/* ------------------------------------------------------------------ DFT */

/* One complex signal of n points (stride in complex elements through x, which has `ncomp` = 1
 * or 2 components) transformed to `bins` outputs at stride ystride. Points past `avail` are
 * zero (dft_length longer than the signal). */
typedef struct {
    const ss_tensor *x;
    int64_t x0, xstride, avail;
    int ncomp;
    const ss_tensor *window; /* STFT: multiplies each point, or NULL */
} dft_src;

static void dft_one(const dft_src *s, int64_t n, int64_t bins, bool inverse, ss_tensor *y,
                    int64_t y0, int64_t ystride)
{
    double sign = inverse ? 1 : -1;
    for (int64_t f = 0; f < bins; f++) {
        double re = 0, im = 0;
        for (int64_t t = 0; t < n && t < s->avail; t++) {
            int64_t at = (s->x0 + t * s->xstride) * s->ncomp;
            double xr = ss_op_elem_f64(s->x, at),
                   xi = s->ncomp == 2 ? ss_op_elem_f64(s->x, at + 1) : 0;
            if (s->window) {
                double w = ss_op_elem_f64(s->window, t);
                xr *= w;
                xi *= w;
            }
            double ang = sign * two_pi * (double)((f * t) % n) / (double)n;
            double c = cos(ang), sn = sin(ang);
            re += xr * c - xi * sn;
            im += xr * sn + xi * c;
        }
        if (inverse) {
            re /= (double)n;
            im /= (double)n;
        }
        ss_op_store_f64(y->data, (y0 + f * ystride) * 2, y->dtype, re);
        ss_op_store_f64(y->data, (y0 + f * ystride) * 2 + 1, y->dtype, im);
    }
}

typedef struct {
    int axis;
    int64_t n; /* dft_length */
} dft_plan;

static ss_status *dft_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"axis", "inverse", "onesided", NULL};
    ss_status *st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_op_expect_inputs(k, 1, 2);
    if (!st) st = ss_op_expect_float(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->ndim < 3 || (x->dims[x->ndim - 1] != 1 && x->dims[x->ndim - 1] != 2))
        return ss_op_err(k, SS_ERR_INVALID, "input must be [batch, ..., 1 or 2]");
    int64_t axis = ss_onnx_attr_int(k->node, "axis", 1);
    if (axis < 0) axis += x->ndim;
    if (axis < 1 || axis > x->ndim - 2)
        return ss_op_err(k, SS_ERR_INVALID, "axis %lld is not a signal axis", (long long)axis);
    int64_t n = x->dims[axis];
    if (k->n_in > 1 && k->in[1] && (st = plan_scalar(k, 1, "dft_length", &n))) return st;
    if (n < 1) return ss_op_err(k, SS_ERR_INVALID, "dft_length must be positive");
    bool onesided = ss_onnx_attr_int(k->node, "onesided", 0) != 0;
    if (onesided && ss_onnx_attr_int(k->node, "inverse", 0))
        return ss_op_err(k, SS_ERR_INVALID, "onesided and inverse cannot both be set");
    dft_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->axis = (int)axis;
    p->n = n;
    ss_tensor *y = k->out[0];
    ss_op_same_shape(y, x);
    y->dims[axis] = onesided ? n / 2 + 1 : n;
    y->dims[x->ndim - 1] = 2;
    return NULL;
}

static ss_status *dft_run(ss_kctx *k)
{
    const dft_plan *p = k->state;
    const ss_tensor *x = k->in[0];
    ss_tensor *y = k->out[0];
    int64_t outer = ss_op_dims_prod(x->dims, 0, p->axis);
    int64_t inner = ss_op_dims_prod(x->dims, p->axis + 1, x->ndim - 1);
    int64_t len = x->dims[p->axis], bins = y->dims[p->axis];
    dft_src s = {.x = x, .xstride = inner, .avail = len, .ncomp = (int)x->dims[x->ndim - 1]};
    bool inverse = ss_onnx_attr_int(k->node, "inverse", 0) != 0;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            s.x0 = o * len * inner + i;
            dft_one(&s, p->n, bins, inverse, y, o * bins * inner + i, inner);
        }
    return NULL;
}

/* ------------------------------------------------------------------ STFT */

typedef struct {
    int64_t step, length;
} stft_plan;

static ss_status *stft_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"onesided", NULL};
    ss_status *st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_op_expect_inputs(k, 2, 4);
    if (!st) st = ss_op_expect_float(k, 0);
    if (st) return st;
    const ss_tensor *x = k->in[0], *w = k->n_in > 2 ? k->in[2] : NULL;
    if (x->ndim != 3 || (x->dims[2] != 1 && x->dims[2] != 2))
        return ss_op_err(k, SS_ERR_INVALID, "signal must be [batch, length, 1 or 2]");
    int64_t step = 0, length = -1;
    if ((st = plan_scalar(k, 1, "frame_step", &step))) return st;
    if (k->n_in > 3 && k->in[3] && (st = plan_scalar(k, 3, "frame_length", &length))) return st;
    if (w && w->ndim != 1) return ss_op_err(k, SS_ERR_INVALID, "window must be 1-D");
    if (w && length >= 0 && w->dims[0] != length)
        return ss_op_err(k, SS_ERR_INVALID, "window length differs from frame_length");
    if (w) length = w->dims[0];
    if (length < 1 || length > x->dims[1] || step < 1)
        return ss_op_err(k, SS_ERR_INVALID,
                         "frame_length (or window) must be in [1, signal length] and frame_step "
                         "positive");
    stft_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->step = step;
    p->length = length;
    ss_tensor *y = k->out[0];
    y->dtype = x->dtype;
    y->ndim = 4;
    y->dims[0] = x->dims[0];
    y->dims[1] = (x->dims[1] - length) / step + 1;
    y->dims[2] = ss_onnx_attr_int(k->node, "onesided", 1) ? length / 2 + 1 : length;
    y->dims[3] = 2;
    return NULL;
}

static ss_status *stft_run(ss_kctx *k)
{
    const stft_plan *p = k->state;
    const ss_tensor *x = k->in[0];
    ss_tensor *y = k->out[0];
    int64_t frames = y->dims[1], bins = y->dims[2];
    dft_src s = {.x = x, .xstride = 1, .avail = p->length, .ncomp = (int)x->dims[2]};
    s.window = k->n_in > 2 ? k->in[2] : NULL;
    for (int64_t b = 0; b < x->dims[0]; b++)
        for (int64_t f = 0; f < frames; f++) {
            s.x0 = b * x->dims[1] + f * p->step;
            dft_one(&s, p->length, bins, false, y, (b * frames + f) * bins, 1);
        }
    return NULL;
}

/* ------------------------------------------------------------------ MelWeightMatrix */

typedef struct {
    int64_t mel_bins, dft_length, sample_rate;
    double lower_hz, upper_hz;
} mel_plan;

static ss_status *plan_float(ss_kctx *k, int i, const char *what, double *v)
{
    const ss_tensor *t = NULL;
    ss_status *st = ss_op_plan_value(k, i, what, &t);
    if (st) return st;
    if (!ss_dtype_is_float(t->dtype) || ss_tensor_numel(t) != 1)
        return ss_op_err(k, SS_ERR_INVALID, "'%s' must be one float", what);
    *v = ss_op_elem_f64(t, 0);
    return NULL;
}

static ss_status *mel_infer(ss_kctx *k)
{
    static const char *const attrs[] = {"output_datatype", NULL};
    ss_status *st = ss_op_check_attrs(k, attrs);
    if (!st) st = ss_op_expect_inputs(k, 5, 5);
    mel_plan m = {0};
    if (!st) st = plan_scalar(k, 0, "num_mel_bins", &m.mel_bins);
    if (!st) st = plan_scalar(k, 1, "dft_length", &m.dft_length);
    if (!st) st = plan_scalar(k, 2, "sample_rate", &m.sample_rate);
    if (!st) st = plan_float(k, 3, "lower_edge_hertz", &m.lower_hz);
    if (!st) st = plan_float(k, 4, "upper_edge_hertz", &m.upper_hz);
    if (!st) st = output_datatype(k, &k->out[0]->dtype);
    if (st) return st;
    if (m.mel_bins < 1 || m.dft_length < 1 || m.sample_rate < 1 || m.mel_bins > (1 << 20) ||
        m.dft_length > (1 << 24))
        return ss_op_err(k, SS_ERR_INVALID,
                         "num_mel_bins, dft_length and sample_rate must be positive (and at most "
                         "2^20 and 2^24 bins)");
    mel_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    *p = m;
    k->out[0]->ndim = 2;
    k->out[0]->dims[0] = m.dft_length / 2 + 1;
    k->out[0]->dims[1] = m.mel_bins;
    return NULL;
}

/* The spectrogram bin of mel point i of mel_bins + 2 equally spaced between the edges, as the
 * specification's reference computes it (mels in float32, bins floored). */
static int64_t mel_point_bin(const mel_plan *p, int64_t i)
{
    float lo = 2595.0f * log10f(1.0f + (float)p->lower_hz / 700.0f);
    float hi = 2595.0f * log10f(1.0f + (float)p->upper_hz / 700.0f);
    float step = (hi - lo) / (float)(p->mel_bins + 2);
    double mel = (double)i * step + lo;
    double hz = 700.0 * (pow(10.0, mel / 2595.0) - 1.0);
    return ss_op_sat_i64(floor((double)(p->dft_length + 1) * hz / (double)p->sample_rate));
}

static void mel_set(ss_tensor *y, int64_t row, int64_t col, double v)
{
    if (row >= 0 && row < y->dims[0]) ss_op_store_f64(y->data, row * y->dims[1] + col, y->dtype, v);
}

/* [from, to) cut to the output's rows: edges far outside the spectrum cost no time. */
static int64_t mel_clamp(const ss_tensor *y, int64_t j)
{
    return j < 0 ? 0 : j > y->dims[0] ? y->dims[0] : j;
}

static ss_status *mel_run(ss_kctx *k)
{
    const mel_plan *p = k->state;
    ss_tensor *y = k->out[0];
    for (int64_t i = 0, n = ss_tensor_numel(y); i < n; i++)
        ss_op_store_f64(y->data, i, y->dtype, 0);
    for (int64_t i = 0; i < p->mel_bins; i++) {
        int64_t lo = mel_point_bin(p, i), mid = mel_point_bin(p, i + 1),
                hi = mel_point_bin(p, i + 2);
        if (mid == lo) mel_set(y, mid, i, 1);
        for (int64_t j = mel_clamp(y, lo); mid > lo && j <= mel_clamp(y, mid); j++)
            mel_set(y, j, i, (double)(j - lo) / (double)(mid - lo));
        for (int64_t j = mel_clamp(y, mid); hi > mid && j < mel_clamp(y, hi); j++)
            mel_set(y, j, i, (double)(hi - j) / (double)(hi - mid));
    }
    return NULL;
}

const ss_op_def ss_ops_signal[] = {
    {"", "HannWindow", 17, 21, window_infer, hann_run, 0},
    {"", "HammingWindow", 17, 21, window_infer, hamming_run, 0},
    {"", "BlackmanWindow", 17, 21, window_infer, blackman_run, 0},
    {"", "DFT", 17, 19, dft_infer, dft_run, 0},
    {"", "STFT", 17, 21, stft_infer, stft_run, 0},
    {"", "MelWeightMatrix", 17, 21, mel_infer, mel_run, 0},
    {0},
};
