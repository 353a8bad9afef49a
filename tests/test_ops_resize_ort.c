/*
 * Resize's float32 bilinear path (ops/resize.c) rounds as onnxruntime's CPU kernel: float
 * coordinates and weights, dx2*dy2*X11 + dx1*dy2*X21 + dx2*dy1*X12 + dx1*dy1*X22 summed in that
 * order. The reference below is that formula written out; the test also proves it tells the two
 * roundings apart (some elements differ from the float64 interpolation rounded once), so a
 * kernel that went back to float64 would fail. Quantized models requantize Resize's output, so
 * one ulp there moves a whole model away from onnxruntime's answer.
 */
#include "op_harness.h"

enum { IH = 7, IW = 5, OH = 16, OW = 11 };

static float coord(const char *mode, int64_t o, int64_t out, int64_t in)
{
    float x = (float)o, scale = (float)out / (float)in;
    if (!strcmp(mode, "align_corners"))
        return out == 1 ? 0 : x * (float)(in - 1) / (float)(out - 1);
    if (!strcmp(mode, "asymmetric")) return x / scale;
    return (x + 0.5f) / scale - 0.5f; /* half_pixel, pytorch_half_pixel with out > 1 */
}

/* Taps and weights of one axis, as onnxruntime sets them. */
static void taps(const char *mode, int64_t o, int64_t out, int64_t in, int64_t *i1, int64_t *i2,
                 float *d1, float *d2)
{
    float c = coord(mode, o, out, in);
    c = fmaxf(0.0f, fminf(c, (float)(in - 1)));
    *i1 = (int64_t)c < in - 1 ? (int64_t)c : in - 1;
    *i2 = *i1 + 1 < in - 1 ? *i1 + 1 : in - 1;
    *d1 = fabsf(c - (float)*i1), *d2 = fabsf(c - (float)*i2);
    if (*i1 == *i2) *d1 = *d2 = 0.5f;
}

static void bilinear_matches_onnxruntime_rounding(void)
{
    static const char *const modes[] = {"half_pixel", "pytorch_half_pixel", "align_corners",
                                        "asymmetric"};
    int64_t xd[4] = {1, 2, IH, IW}, sd[1] = {4}, sizes[4] = {1, 2, OH, OW};
    ss_tensor x = make_rand(SS_DT_FLOAT32, 4, xd), sz = make(SS_DT_INT64, 1, sd, sizes), y;
    for (int64_t i = 0; i < ss_tensor_numel(&x); i++)
        ((float *)x.data)[i] *= 1000.0f; /* large values: more ulps to round differently */
    int rounding_differs = 0;
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        tnode t;
        tnode_init(&t, "Resize");
        attr_str(&t, "mode", "linear");
        attr_str(&t, "coordinate_transformation_mode", modes[m]);
        ss_tensor *in[4] = {&x, NULL, NULL, &sz};
        CHECK_OK(op_run(&t, 13, 4, in, 1, &y, NULL));
        const float *X = x.data, *Y = y.data;
        for (int64_t p = 0, bad = 0; Y && p < 2 && !bad; p++)
            for (int64_t oy = 0; oy < OH && !bad; oy++)
                for (int64_t ox = 0; ox < OW && !bad; ox++) {
                    int64_t y1, y2, x1, x2;
                    float dy1, dy2, dx1, dx2;
                    taps(modes[m], oy, OH, IH, &y1, &y2, &dy1, &dy2);
                    taps(modes[m], ox, OW, IW, &x1, &x2, &dx1, &dx2);
                    const float *P = X + p * IH * IW;
                    float want = dx2 * dy2 * P[y1 * IW + x1] + dx1 * dy2 * P[y1 * IW + x2] +
                                 dx2 * dy1 * P[y2 * IW + x1] + dx1 * dy1 * P[y2 * IW + x2];
                    double exact =
                        (double)dx2 * dy2 * P[y1 * IW + x1] + (double)dx1 * dy2 * P[y1 * IW + x2] +
                        (double)dx2 * dy1 * P[y2 * IW + x1] + (double)dx1 * dy1 * P[y2 * IW + x2];
                    rounding_differs += (float)exact != want;
                    float got = Y[(p * OH + oy) * OW + ox];
                    bad = got != want;
                    CHECK_MSG(!bad, "%s [%lld,%lld,%lld]: %.9g, onnxruntime's rounding %.9g",
                              modes[m], (long long)p, (long long)oy, (long long)ox, got, want);
                }
        ss_tensor_free(&y);
    }
    CHECK_MSG(rounding_differs > 0, "no element tells float from float64 rounding apart");
    ss_tensor_free(&x);
    ss_tensor_free(&sz);
}

TEST_MAIN(TEST(bilinear_matches_onnxruntime_rounding))
