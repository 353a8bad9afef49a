#!/usr/bin/python3
"""Fits the rational approximation of erf that src/runtime/ops/vmath.h's ss_verff evaluates:
erf(x) ~ x P(x^2) / Q(x^2) on [0, 3.92] (where erf reaches 1 in float32), P of degree 6 and Q of
degree 5, Q(0) = 1. Lawson's iteration on the linearised least-squares problem (weights moved
toward the largest errors, each step divided by the last Q) approaches the minimax fit. Prints the
coefficients, the fit's error in float64 and the error of the float32 evaluation vmath.h does
(Horner, clamp, one division) against math.erf over [-4.5, 4.5].

    scripts/fit-erf.py
"""
import math

import numpy as np

X, DP, DQ = 3.92, 6, 5


def fit():
    n = 4000
    x = np.concatenate([np.cos(np.pi * (np.arange(n) + 0.5) / n) * X / 2 + X / 2, np.linspace(0, X, 2000)])
    f = np.array([math.erf(v) for v in x])
    t = x * x
    w, q_prev = np.ones_like(x) / len(x), np.ones_like(x)
    for _ in range(200):
        sw = np.sqrt(w) / np.abs(q_prev)
        a = np.hstack([x[:, None] * t[:, None] ** np.arange(DP + 1), -(f[:, None] * t[:, None] ** np.arange(1, DQ + 1))])
        c, *_ = np.linalg.lstsq(a * sw[:, None], f * sw, rcond=None)
        p, q = c[:DP + 1], np.concatenate([[1.0], c[DP + 1:]])
        q_prev = np.polyval(q[::-1], t)
        err = x * np.polyval(p[::-1], t) / q_prev - f
        w = w * np.abs(err)
        w /= w.sum()
    return p, q, np.abs(err).max()


def erf_f32(xs, p, q):
    f32 = np.float32
    c = np.clip(xs, f32(-X), f32(X))
    t = c * c
    pp, qq = f32(p[-1]), f32(q[-1])
    for k in p[-2::-1]:
        pp = pp * t + f32(k)
    for k in q[-2::-1]:
        qq = qq * t + f32(k)
    return np.clip((c * pp / qq).astype(f32), -1, 1)


def main():
    p, q, e = fit()
    print("P:", ", ".join(repr(float(v)) for v in p))
    print("Q:", ", ".join(repr(float(v)) for v in q))
    xs = np.float32(np.linspace(-4.5, 4.5, 200001))
    ref = np.array([math.erf(float(v)) for v in xs])
    y = erf_f32(xs, p, q)
    small = np.abs(xs) < 0.5
    print("fit error %.2e; float32 max abs error %.2e, max relative error below 0.5 %.2e" %
          (e, np.abs(y - ref).max(), np.max(np.abs(y - ref)[small] / np.maximum(np.abs(ref[small]), 1e-30))))


if __name__ == "__main__":
    main()
