/*
 * float32 exp, tanh and erf as straight-line arithmetic (no calls, no branches), so that a loop
 * over them vectorizes in each ISA copy of a kernel (isa.h): libm's expf/erff are scalar calls,
 * which made Erf (BERT's GELU), Softmax and GPT-2's tanh GELU the largest non-GEMM costs of the
 * transformer rows in bench/run_runtime.sh.
 *
 * ss_vexpf: exp(x) = 2^k exp(r), k = round(x log2 e), r = x - k ln 2 with ln 2 split in a high
 * part exact in float and a low part; exp(r) on |r| <= ln2 / 2 by its Taylor series to r^7
 * (truncation below 1e-8 relative), so within ~2 float32 ulp of exp. Below -87.33 (where exp
 * leaves the normal range) it returns 0, above 88.37 +inf, and NaN stays NaN.
 * ss_vtanhf: for |x| < 0.05 a Taylor series (relative error < 1e-9), elsewhere (1-e)/(1+e) with
 * e = exp(-2|x|), about one ulp absolute.
 * ss_vsoftmaxf: a softmax row on ss_vexpf.
 * ss_verff: one rational function, x P(x^2) / Q(x^2) with P of degree 6 and Q of degree 5 in x^2,
 * fitted by scripts/fit-erf.py (Lawson's iteration on the linearised least-squares problem) to erf
 * on [0, 3.92], where erf reaches 1 in float32: 1.4e-9 from erf in exact arithmetic, 3.4e-7 at
 * most in float32 over [-4.5, 4.5] (2 ulp relative below 0.5). 11 multiply-adds, 2 multiplies and
 * one division, where the Taylor series and Abramowitz & Stegun 7.1.26 it replaces computed both
 * branches, an exp and a division for every lane (3.2e-7 in float32).
 */
#ifndef SS_RUNTIME_OPS_VMATH_H
#define SS_RUNTIME_OPS_VMATH_H

#include <math.h>
#include <stdint.h>

#define SS_VMATH_INLINE static inline __attribute__((always_inline))

SS_VMATH_INLINE float ss_vexpf(float x)
{
    const float lo = -87.33f, hi = 88.37f;
    /* the clamp as a maximum and a minimum (NaN becomes lo; it is given back at the end): spelled
     * so, each is one instruction; as nested conditions gcc carried masks through every step */
    float c = x > lo ? x : lo;
    c = c < hi ? c : hi;
    /* round to nearest by adding and subtracting 1.5 * 2^23 (no -ffast-math: kept as written) */
    float kf = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = c - kf * 0.693145751953125f; /* ln 2, high part: 12 significant bits */
    r = r - kf * 1.42860682030941723e-6f;  /* ln 2 - the high part */
    float p =
        1.0f +
        r * (1.0f +
             r * (0.5f +
                  r * (1.0f / 6 +
                       r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 + r * (1.0f / 5040)))))));
    union {
        int32_t i;
        float f;
    } s;
    s.i = ((int32_t)kf + 127) * (1 << 23); /* k in [-126, 127]: a normal power of two */
    float y = p * s.f;
    y = x < lo ? 0.0f : x > hi ? INFINITY : y;
    return x != x ? x : y;
}

SS_VMATH_INLINE float ss_vtanhf(float x)
{
    float ax = fabsf(x), x2 = x * x;
    float e = ss_vexpf(-2.0f * ax);
    float far = copysignf((1.0f - e) / (1.0f + e), x);
    float near = x * (1.0f + x2 * (-1.0f / 3.0f + x2 * (2.0f / 15.0f)));
    return ax < 0.05f ? near : far;
}

SS_VMATH_INLINE float ss_verff(float x)
{
    /* x P(x^2) / Q(x^2) on x clamped to [-3.92, 3.92] (erf(3.92) rounds to 1 in float32); the
     * comparisons keep NaN as it is, and each is one maximum or minimum as written */
    float c = x < -3.92f ? -3.92f : x;
    c = c > 3.92f ? 3.92f : c;
    float t = c * c;
    float p = 1.128379180821637f +
              t * (0.18470030650182562f +
                   t * (0.0542784439475243f +
                        t * (0.0038323708153120946f +
                             t * (0.0003803799974727109f +
                                  t * (4.718061681396879e-06f + t * -1.3337274923364006e-08f)))));
    float q = 1.0f + t * (0.4970199133777843f +
                          t * (0.11377541623984533f +
                               t * (0.015430961405656467f +
                                    t * (0.0013050390798624537f + t * 6.342145228516952e-05f))));
    float y = c * p / q;
    y = y < -1.0f ? -1.0f : y;
    return y > 1.0f ? 1.0f : y;
}

/* Softmax of x[0..n) into y (y may be x): the maximum as a vector reduction (omp simd), exp by
 * ss_vexpf, the sum in double over 8 running sums, as loops that vectorize in each ISA copy of a
 * caller (isa.h). NaN and all -inf rows come out as from a plain expf softmax. Every loop reads an
 * element before it writes the same one, so in place is fine. */
SS_VMATH_INLINE void ss_vsoftmaxf(const float *x, float *y, int64_t n)
{
    float mx = x[0];
    int64_t i;
#pragma omp simd reduction(max : mx)
    for (i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    for (i = 0; i < n; i++)
        y[i] = ss_vexpf(x[i] - mx);
    double s[8] = {0}, sum = 0;
    for (i = 0; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += y[i + j];
    for (; i < n; i++)
        sum += y[i];
    for (int j = 0; j < 8; j++)
        sum += s[j];
    float inv = (float)(1.0 / sum);
    for (i = 0; i < n; i++)
        y[i] *= inv;
}

#endif
