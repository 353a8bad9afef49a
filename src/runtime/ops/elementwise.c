/*
 * Elementwise math: binary arithmetic with numpy broadcasting (Add Sub Mul Div Pow Mod PRelu
 * BitShift), variadic Min Max Sum Mean, the unary activations and math functions, Clip and
 * Identity (an alias: no kernel).
 *
 * Every op is a row kernel per native type (float32, float64, int8..uint64) run by the
 * broadcast driver of broadcast.h; float16 and bfloat16 go through the float32 kernels in
 * converted chunks. Integer arithmetic wraps (computed in unsigned types); integer Div and Mod
 * by zero give 0 instead of trapping, INT_MIN / -1 wraps. Transcendentals use libm.
 * Everything is planned in infer; run only calls kernels.
 */
#include "broadcast.h"
#include "vmath.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>

/* A constant of the element type of `x` (or `a`) inside a kernel expression. */
#define CX(v) ((__typeof__(x))(v))
#define CA(v) ((__typeof__(a))(v))

/* ------------------------------------------------------------------ binary kernels */

#define add_F(S, a, b) ((a) + (b))
#define add_S(T, W, a, b) ((T)((W)(a) + (W)(b)))
#define add_U add_S
#define sub_F(S, a, b) ((a) - (b))
#define sub_S(T, W, a, b) ((T)((W)(a) - (W)(b)))
#define sub_U sub_S
#define mul_F(S, a, b) ((a) * (b))
#define mul_S(T, W, a, b) ((T)((W)(a) * (W)(b)))
#define mul_U mul_S
#define div_F(S, a, b) ((a) / (b))
#define div_S(T, W, a, b) ((b) == 0 ? (T)0 : (b) == -1 ? (T)(0u - (W)(a)) : (T)((a) / (b)))
#define div_U(T, W, a, b) ((b) == 0 ? (T)0 : (T)((a) / (b)))
#define min_F(S, a, b) (((a) < (b) || (a) != (a)) ? (a) : (b))
#define min_S(T, W, a, b) ((a) < (b) ? (a) : (b))
#define min_U min_S
#define max_F(S, a, b) (((a) > (b) || (a) != (a)) ? (a) : (b))
#define max_S(T, W, a, b) ((a) > (b) ? (a) : (b))
#define max_U max_S
/* Mod with fmod=1: the sign of the dividend (C's fmod and %). */
#define fmod_F(S, a, b) fmod((a), (b))
#define fmod_S(T, W, a, b) (((b) == 0 || (b) == -1) ? (T)0 : (T)((a) % (b)))
#define fmod_U(T, W, a, b) ((b) == 0 ? (T)0 : (T)((a) % (b)))
/* Mod with fmod=0: the sign of the divisor (Python's %). */
#define pymod_F(S, a, b) pyrem_##S((a), (b))
#define pymod_S(T, W, a, b) ((T)pyrem_i64((a), (b)))
#define pymod_U fmod_U
#define prelu_F(S, a, b) ((a) < 0 ? (a) * (b) : (a))
#define prelu_S(T, W, a, b) ((a) < 0 ? (T)((W)(a) * (W)(b)) : (a))
#define prelu_U(T, W, a, b) ((void)(b), (a))
#define shl_U(T, W, a, b) ((b) >= sizeof(T) * 8 ? (T)0 : (T)((W)(a) << (b)))
#define shr_U(T, W, a, b) ((b) >= sizeof(T) * 8 ? (T)0 : (T)((a) >> (b)))

static inline float pyrem_f32(float a, float b)
{
    float r = fmodf(a, b);
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}

static inline double pyrem_f64(double a, double b)
{
    double r = fmod(a, b);
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}

static inline int64_t pyrem_i64(int64_t a, int64_t b)
{
    if (b == 0 || b == -1) return 0;
    int64_t r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
}

#define DEF_BIN_F(SFX, T, DT, W, OP) SS_EW_BINARY_KERNEL(OP##_##SFX, T, T, T, OP##_F(SFX, a, b))
#define DEF_BIN_S(SFX, T, DT, W, OP) SS_EW_BINARY_KERNEL(OP##_##SFX, T, T, T, OP##_S(T, W, a, b))
#define DEF_BIN_U(SFX, T, DT, W, OP) SS_EW_BINARY_KERNEL(OP##_##SFX, T, T, T, OP##_U(T, W, a, b))
/* clang-format off */
#define DEF_BIN_ALL(OP)                                                                            \
    SS_EW_FLOATS(DEF_BIN_F, OP) SS_EW_SINTS(DEF_BIN_S, OP) SS_EW_UINTS(DEF_BIN_U, OP)              \
    static const ss_ew_fn OP##_tab[SS_EW_NDT] = {SS_EW_NUMERIC(SS_EW_TAB_ENTRY, OP)};
/* clang-format on */

DEF_BIN_ALL(add)
DEF_BIN_ALL(sub)
DEF_BIN_ALL(mul)
DEF_BIN_ALL(div)
DEF_BIN_ALL(min)
DEF_BIN_ALL(max)
DEF_BIN_ALL(fmod)
DEF_BIN_ALL(pymod)
DEF_BIN_ALL(prelu)
SS_EW_UINTS(DEF_BIN_U, shl)
SS_EW_UINTS(DEF_BIN_U, shr)
static const ss_ew_fn shl_tab[SS_EW_NDT] = {SS_EW_UINTS(SS_EW_TAB_ENTRY, shl)};
static const ss_ew_fn shr_tab[SS_EW_NDT] = {SS_EW_UINTS(SS_EW_TAB_ENTRY, shr)};

/* ------------------------------------------------------------------ Pow
 * Base float32/float64/int32/int64 (float16/bfloat16 via float32) with an exponent of any
 * numeric type. A scalar float exponent of 2, 3, 0.5 or 1 (x*x in LayerNorm, x^3 in gelu_new)
 * takes a multiply/sqrt loop instead of pow(). */

static inline int64_t ipow64(int64_t a, int64_t e)
{
    if (e < 0) return a == 1 ? 1 : a == -1 ? ((e & 1) ? -1 : 1) : 0;
    uint64_t r = 1, b = (uint64_t)a;
    for (uint64_t ue = (uint64_t)e; ue; ue >>= 1) {
        if (ue & 1) r *= b;
        b *= b;
    }
    return (int64_t)r;
}

#define POW_SCALAR_FAST(T, SQRT)                                                                   \
    if (mode == 1u) {                                                                              \
        const double e_ = (double)B_[0];                                                           \
        if (e_ == 2.0) {                                                                           \
            for (int64_t i = 0; i < n; i++)                                                        \
                Y_[i] = A_[i] * A_[i];                                                             \
            return;                                                                                \
        }                                                                                          \
        if (e_ == 3.0) {                                                                           \
            for (int64_t i = 0; i < n; i++)                                                        \
                Y_[i] = A_[i] * A_[i] * A_[i];                                                     \
            return;                                                                                \
        }                                                                                          \
        if (e_ == 1.0) {                                                                           \
            memcpy(Y_, A_, sizeof(T) * (size_t)n);                                                 \
            return;                                                                                \
        }                                                                                          \
        if (e_ == 0.5) {                                                                           \
            for (int64_t i = 0; i < n; i++)                                                        \
                Y_[i] = SQRT(A_[i]);                                                               \
            return;                                                                                \
        }                                                                                          \
    }

#define POW_FLOAT_BASE(ESFX, TE, DTE, WE, BASE)                                                    \
    SS_EW_BINARY_KERNEL(pow_##BASE##_##ESFX##_gen, BASE##_t, TE, BASE##_t, pow(a, (BASE##_t)b))    \
    static void pow_##BASE##_##ESFX(const void *const *in_, void *out_, int64_t n, unsigned mode,  \
                                    const ss_ew_params *prm)                                       \
    {                                                                                              \
        const BASE##_t *restrict A_ = in_[0];                                                      \
        const TE *restrict B_ = in_[1];                                                            \
        BASE##_t *restrict Y_ = out_;                                                              \
        POW_SCALAR_FAST(BASE##_t, sqrt)                                                            \
        pow_##BASE##_##ESFX##_gen(in_, out_, n, mode, prm);                                        \
    }
#define POW_INT_BASE_F(ESFX, TE, DTE, WE, BASE)                                                    \
    SS_EW_BINARY_KERNEL(pow_##BASE##_##ESFX, BASE##_t, TE, BASE##_t,                               \
                        (BASE##_t)ss_op_sat_i64(pow((double)a, (double)b)))
#define POW_INT_BASE_I(ESFX, TE, DTE, WE, BASE)                                                    \
    SS_EW_BINARY_KERNEL(pow_##BASE##_##ESFX, BASE##_t, TE, BASE##_t,                               \
                        (BASE##_t)ipow64((int64_t)a, (int64_t)b))

typedef float f32_t;
typedef double f64_t;
typedef int32_t i32_t;
typedef int64_t i64_t;
SS_EW_NUMERIC(POW_FLOAT_BASE, f32)
SS_EW_NUMERIC(POW_FLOAT_BASE, f64)
SS_EW_FLOATS(POW_INT_BASE_F, i32)
SS_EW_INTS(POW_INT_BASE_I, i32)
SS_EW_FLOATS(POW_INT_BASE_F, i64)
SS_EW_INTS(POW_INT_BASE_I, i64)

static const ss_ew_fn pow_tab[SS_EW_NDT][SS_EW_NDT] = {
    [SS_DT_FLOAT32] = {SS_EW_NUMERIC(SS_EW_TAB_ENTRY, pow_f32)},
    [SS_DT_FLOAT64] = {SS_EW_NUMERIC(SS_EW_TAB_ENTRY, pow_f64)},
    [SS_DT_INT32] = {SS_EW_NUMERIC(SS_EW_TAB_ENTRY, pow_i32)},
    [SS_DT_INT64] = {SS_EW_NUMERIC(SS_EW_TAB_ENTRY, pow_i64)},
};

/* ------------------------------------------------------------------ unary kernels */

#define DEF_UN_FLOAT(SFX, T, DT, W, OP) SS_EW_UNARY_KERNEL(OP##_##SFX, T, T, OP##_EXPR)
#define DEF_UN_FLOAT_ALL(OP)                                                                       \
    SS_EW_FLOATS(DEF_UN_FLOAT, OP)                                                                 \
    static const ss_ew_fn OP##_tab[SS_EW_NDT] = {SS_EW_FLOATS(SS_EW_TAB_ENTRY, OP)};

#define u_neg_EXPR (-x)
#define u_abs_EXPR fabs(x)
#define u_relu_EXPR (x < 0 ? CX(0) : x)
#define u_tanh_EXPR tanh(x)
#define u_sqrt_EXPR sqrt(x)
#define u_exp_EXPR exp(x)
#define u_log_EXPR log(x)
#define u_recip_EXPR (CX(1) / x)
#define u_floor_EXPR floor(x)
#define u_ceil_EXPR ceil(x)
#define u_round_EXPR rint(x) /* the default rounding mode: half to even */
#define u_sign_EXPR (x > 0 ? CX(1) : x < 0 ? CX(-1) : x)
#define u_sin_EXPR sin(x)
#define u_cos_EXPR cos(x)
#define u_tan_EXPR tan(x)
#define u_asin_EXPR asin(x)
#define u_acos_EXPR acos(x)
#define u_atan_EXPR atan(x)
#define u_sinh_EXPR sinh(x)
#define u_cosh_EXPR cosh(x)
#define u_asinh_EXPR asinh(x)
#define u_acosh_EXPR acosh(x)
#define u_atanh_EXPR atanh(x)
#define u_softplus_EXPR (x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)))
#define u_softsign_EXPR (x / (CX(1) + fabs(x)))
#define u_leaky_EXPR (x < 0 ? CX(prm->f[0]) * x : x)
#define u_elu_EXPR (x < 0 ? CX(prm->f[0]) * expm1(x) : x)
#define u_selu_EXPR                                                                                \
    (x > 0 ? CX(prm->f[1]) * x : CX(prm->f[1]) * (CX(prm->f[0]) * exp(x) - CX(prm->f[0])))
#define u_celu_EXPR (x > 0 ? x : CX(prm->f[0]) * expm1(x / CX(prm->f[0])))
#define HSIG(v) ((v) < 0 ? CX(0) : (v) > 1 ? CX(1) : (v))
#define u_hsig_EXPR HSIG(CX(prm->f[0]) * x + CX(prm->f[1]))
#define u_hswish_EXPR (x * HSIG(x * CX(1.0 / 6.0) + CX(0.5)))
#define u_thrrelu_EXPR (x > CX(prm->f[0]) ? x : CX(0))
/* numpy clip: max(x, lo) then min(., hi); NaN stays NaN */
#define CLAMP(v, lo, hi) (((v) < (lo) ? (lo) : (v)) > (hi) ? (hi) : ((v) < (lo) ? (lo) : (v)))
#define u_clip_EXPR (CLAMP(x, CX(prm->f[0]), CX(prm->f[1])))

/* float32 sigmoid, tanh and erf as vectorizable arithmetic (vmath.h): glibc's expf is a scalar
 * call per element (with the Mul after it, Sigmoid is the SiLU of every Llama MLP: ~5% of a
 * served Llama step was __expf), tanhf goes through expm1f (~50 ns per element here), and erff
 * is a scalar call too (10% of a BERT-base call at sequence 128 was __erff). sigmoid is within a
 * few float32 ulp, tanh within ~1 ulp absolute, erf within 3.1e-7 absolute. float64 uses libm's. */
SS_EW_UNARY_KERNEL(u_sigmoid_f32, float, float, 1.0f / (1.0f + ss_vexpf(-x)))
SS_EW_UNARY_KERNEL(u_sigmoid_f64, double, double, 1.0 / (1.0 + exp(-x)))
static const ss_ew_fn u_sigmoid_tab[SS_EW_NDT] = {SS_EW_FLOATS(SS_EW_TAB_ENTRY, u_sigmoid)};
SS_EW_UNARY_KERNEL(u_tanh_f32, float, float, ss_vtanhf(x))
SS_EW_UNARY_KERNEL(u_tanh_f64, double, double, tanh(x))
static const ss_ew_fn u_tanh_tab[SS_EW_NDT] = {SS_EW_FLOATS(SS_EW_TAB_ENTRY, u_tanh)};
SS_EW_UNARY_KERNEL(u_erf_f32, float, float, ss_verff(x))
SS_EW_UNARY_KERNEL(u_erf_f64, double, double, erf(x))
static const ss_ew_fn u_erf_tab[SS_EW_NDT] = {SS_EW_FLOATS(SS_EW_TAB_ENTRY, u_erf)};
DEF_UN_FLOAT_ALL(u_sqrt)
DEF_UN_FLOAT_ALL(u_exp)
DEF_UN_FLOAT_ALL(u_log)
DEF_UN_FLOAT_ALL(u_recip)
DEF_UN_FLOAT_ALL(u_floor)
DEF_UN_FLOAT_ALL(u_ceil)
DEF_UN_FLOAT_ALL(u_round)
DEF_UN_FLOAT_ALL(u_sin)
DEF_UN_FLOAT_ALL(u_cos)
DEF_UN_FLOAT_ALL(u_tan)
DEF_UN_FLOAT_ALL(u_asin)
DEF_UN_FLOAT_ALL(u_acos)
DEF_UN_FLOAT_ALL(u_atan)
DEF_UN_FLOAT_ALL(u_sinh)
DEF_UN_FLOAT_ALL(u_cosh)
DEF_UN_FLOAT_ALL(u_asinh)
DEF_UN_FLOAT_ALL(u_acosh)
DEF_UN_FLOAT_ALL(u_atanh)
DEF_UN_FLOAT_ALL(u_softplus)
DEF_UN_FLOAT_ALL(u_softsign)
DEF_UN_FLOAT_ALL(u_leaky)
DEF_UN_FLOAT_ALL(u_elu)
DEF_UN_FLOAT_ALL(u_selu)
DEF_UN_FLOAT_ALL(u_celu)
DEF_UN_FLOAT_ALL(u_hsig)
DEF_UN_FLOAT_ALL(u_hswish)
DEF_UN_FLOAT_ALL(u_thrrelu)

/* Ops that also take integers. */
#define DEF_UN_S(SFX, T, DT, W, OP) SS_EW_UNARY_KERNEL(OP##_##SFX, T, T, OP##_S(T, W))
#define DEF_UN_U(SFX, T, DT, W, OP) SS_EW_UNARY_KERNEL(OP##_##SFX, T, T, OP##_U(T, W))
#define u_neg_S(T, W) ((T)(0u - (W)x))
#define u_abs_S(T, W) (x < 0 ? (T)(0u - (W)x) : x)
#define u_abs_U(T, W) (x)
#define u_relu_S(T, W) (x < 0 ? (T)0 : x)
#define u_sign_S(T, W) ((T)((x > 0) - (x < 0)))
#define u_sign_U(T, W) ((T)(x > 0))
#define u_clip_S(T, W) ((T)(CLAMP((int64_t)x, prm->i[0], prm->i[1])))
#define u_clip_U(T, W) ((T)(CLAMP((uint64_t)x, prm->u[0], prm->u[1])))

SS_EW_FLOATS(DEF_UN_FLOAT, u_neg)
SS_EW_SINTS(DEF_UN_S, u_neg)
static const ss_ew_fn u_neg_tab[SS_EW_NDT] = {SS_EW_FLOATS(SS_EW_TAB_ENTRY, u_neg)
                                                  SS_EW_SINTS(SS_EW_TAB_ENTRY, u_neg)};
SS_EW_FLOATS(DEF_UN_FLOAT, u_relu)
SS_EW_SINTS(DEF_UN_S, u_relu)
static const ss_ew_fn u_relu_tab[SS_EW_NDT] = {SS_EW_FLOATS(SS_EW_TAB_ENTRY, u_relu)
                                                   SS_EW_SINTS(SS_EW_TAB_ENTRY, u_relu)};
/* clang-format off */
#define DEF_UN_NUMERIC(OP)                                                                         \
    SS_EW_FLOATS(DEF_UN_FLOAT, OP) SS_EW_SINTS(DEF_UN_S, OP) SS_EW_UINTS(DEF_UN_U, OP)             \
    static const ss_ew_fn OP##_tab[SS_EW_NDT] = {SS_EW_NUMERIC(SS_EW_TAB_ENTRY, OP)};
/* clang-format on */
DEF_UN_NUMERIC(u_abs)
DEF_UN_NUMERIC(u_sign)
DEF_UN_NUMERIC(u_clip)

/* Float -> bool predicates. */
#define DEF_UN_PRED(SFX, T, DT, W, OP) SS_EW_UNARY_KERNEL(OP##_##SFX, T, uint8_t, OP##_EXPR)
#define u_isnan_EXPR (x != x)
#define u_isinf_EXPR ((prm->i[0] && x == CX(INFINITY)) || (prm->i[1] && x == CX(-INFINITY)))
SS_EW_FLOATS(DEF_UN_PRED, u_isnan)
SS_EW_FLOATS(DEF_UN_PRED, u_isinf)
static const ss_ew_fn u_isnan_tab[SS_EW_NDT] = {SS_EW_FLOATS(SS_EW_TAB_ENTRY, u_isnan)};
static const ss_ew_fn u_isinf_tab[SS_EW_NDT] = {SS_EW_FLOATS(SS_EW_TAB_ENTRY, u_isinf)};

/* ------------------------------------------------------------------ planning helpers */

/* The kernel for stored dtype dt: float16/bfloat16 use the float32 entry. */
static ss_ew_fn pick(const ss_ew_fn *tab, ss_dtype dt)
{
    if (ss_ew_is_half(dt)) dt = SS_DT_FLOAT32;
    return (unsigned)dt < SS_EW_NDT ? tab[dt] : NULL;
}

static ss_status *type_err(const ss_kctx *k, int i)
{
    return ss_op_err(k, SS_ERR_UNSUPPORTED, "input %d has type %s, which this op does not support",
                     i, ss_dtype_name(k->in[i]->dtype));
}

/* ------------------------------------------------------------------ binary ops */

static ss_status *binary_plan(ss_kctx *k, ss_ew_fn fn, ss_dtype out_dt)
{
    ss_tensor b;
    const ss_tensor *a = k->in[0];
    ss_status *st = ss_ew_legacy_operand(k, a, k->in[1], &b);
    if (st) return st;
    const ss_tensor *ins[2] = {a, &b};
    ss_tensor *o = k->out[0];
    if ((st = ss_bcast_shape(k, 2, ins, o))) return st;
    o->dtype = out_dt;
    return ss_ew_plan_state(k, 2, ins, o, fn, out_dt, true, NULL);
}

static ss_status *binary_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (st) return st;
    const char *op = k->node->op_type;
    const ss_tensor *a = k->in[0], *b = k->in[1];
    if (a->dtype != b->dtype)
        return ss_op_err(k, SS_ERR_INVALID, "inputs have different types (%s, %s)",
                         ss_dtype_name(a->dtype), ss_dtype_name(b->dtype));
    const ss_ew_fn *tab = NULL;
    if (!strcmp(op, "Add"))
        tab = add_tab;
    else if (!strcmp(op, "Sub"))
        tab = sub_tab;
    else if (!strcmp(op, "Mul"))
        tab = mul_tab;
    else if (!strcmp(op, "Div"))
        tab = div_tab;
    else if (!strcmp(op, "Mod"))
        tab = ss_onnx_attr_int(k->node, "fmod", 0) ? fmod_tab : pymod_tab;
    else if (!strcmp(op, "BitShift")) {
        char dir[16];
        if (!ss_onnx_attr_string(k->node, "direction", dir, sizeof dir))
            return ss_op_err(k, SS_ERR_INVALID, "attribute 'direction' is required");
        if (!strcmp(dir, "LEFT"))
            tab = shl_tab;
        else if (!strcmp(dir, "RIGHT"))
            tab = shr_tab;
        else
            return ss_op_err(k, SS_ERR_INVALID, "direction '%s' is not LEFT or RIGHT", dir);
    }
    ss_ew_fn fn = tab ? pick(tab, a->dtype) : NULL;
    if (!fn) return type_err(k, 0);
    return binary_plan(k, fn, a->dtype);
}

static ss_status *pow_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (st) return st;
    ss_dtype base = k->in[0]->dtype, ex = k->in[1]->dtype;
    ss_dtype kb = ss_ew_is_half(base) ? SS_DT_FLOAT32 : base,
             ke = ss_ew_is_half(ex) ? SS_DT_FLOAT32 : ex;
    ss_ew_fn fn = (unsigned)kb < SS_EW_NDT && (unsigned)ke < SS_EW_NDT ? pow_tab[kb][ke] : NULL;
    if (!fn)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "base %s with exponent %s is not supported",
                         ss_dtype_name(base), ss_dtype_name(ex));
    return binary_plan(k, fn, base);
}

/* PRelu: slope broadcasts unidirectionally to X. */
static ss_status *prelu_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (st) return st;
    const ss_tensor *x = k->in[0], *s = k->in[1];
    if (x->dtype != s->dtype)
        return ss_op_err(k, SS_ERR_INVALID, "X is %s but slope is %s", ss_dtype_name(x->dtype),
                         ss_dtype_name(s->dtype));
    ss_ew_fn fn = pick(prelu_tab, x->dtype);
    if (!fn) return type_err(k, 0);
    ss_tensor slope = *s;
    /* PRelu-6 and older: a slope of one element per channel [C] aligns with axis 1. */
    if (k->opset < 7 && s->ndim == 1 && x->ndim > 2 && s->dims[0] == x->dims[1] && s->dims[0] != 1)
        for (int d = 2; d < x->ndim; d++)
            slope.dims[slope.ndim++] = 1;
    const ss_tensor *ins[2] = {x, &slope};
    ss_tensor shape;
    if ((st = ss_bcast_shape(k, 2, ins, &shape))) return st;
    if (!ss_shape_equal(shape.ndim, shape.dims, x->ndim, x->dims)) {
        char a[128], b[128];
        return ss_op_err(k, SS_ERR_INVALID, "slope %s does not broadcast to X %s",
                         ss_shape_str(s->ndim, s->dims, a, sizeof a),
                         ss_shape_str(x->ndim, x->dims, b, sizeof b));
    }
    ss_op_same_shape(k->out[0], x);
    return ss_ew_plan_state(k, 2, ins, x, fn, x->dtype, true, NULL);
}

/* ------------------------------------------------------------------ variadic Min Max Sum Mean
 * Inputs are folded left to right: step 0 computes in0 op in1 at the full output shape, step j
 * combines the previous result with input j+1. With three or more inputs the steps alternate
 * between the output and a scratch buffer (allocated with the state) so the last one lands in
 * the output. Mean scales at the end. */

typedef struct {
    int n_in, n_steps;
    bool mean;
    void *scratch;
    ss_ew_plan step[];
} variadic_state;

static ss_status *variadic_infer(ss_kctx *k)
{
    const char *op = k->node->op_type;
    if (k->n_in < 1) return ss_op_err(k, SS_ERR_INVALID, "needs at least one input");
    for (int i = 0; i < k->n_in; i++) {
        if (!k->in[i]) return ss_op_err(k, SS_ERR_INVALID, "input %d is missing", i);
        if (k->in[i]->dtype != k->in[0]->dtype)
            return ss_op_err(k, SS_ERR_INVALID, "input %d is %s, input 0 is %s", i,
                             ss_dtype_name(k->in[i]->dtype), ss_dtype_name(k->in[0]->dtype));
    }
    ss_dtype dt = k->in[0]->dtype;
    bool mean = !strcmp(op, "Mean");
    const ss_ew_fn *tab = !strcmp(op, "Min") ? min_tab : !strcmp(op, "Max") ? max_tab : add_tab;
    ss_ew_fn fn = pick(tab, dt);
    if (!fn || ((mean || !strcmp(op, "Sum")) && !ss_dtype_is_float(dt))) return type_err(k, 0);
    ss_tensor *o = k->out[0];
    ss_status *st = ss_bcast_shape(k, k->n_in, (const ss_tensor *const *)k->in, o);
    if (st) return st;
    o->dtype = dt;
    int n_steps = k->n_in - 1;
    size_t head = sizeof(variadic_state) + sizeof(ss_ew_plan) * (size_t)n_steps;
    head = (head + 63) / 64 * 64;
    size_t scratch =
        n_steps >= 2 ? (size_t)ss_shape_numel(o->ndim, o->dims) * ss_dtype_size(dt) : 0;
    variadic_state *s = ss_op_state_alloc(k, head + scratch);
    if (!s) return ss_op_oom();
    s->n_in = k->n_in;
    s->n_steps = n_steps;
    s->mean = mean;
    s->scratch = scratch ? (char *)s + head : NULL;
    for (int j = 0; j < n_steps; j++) {
        const ss_tensor *ins[2] = {j == 0 ? k->in[0] : o, k->in[j + 1]};
        ss_ew_plan_init(&s->step[j], 2, ins, o->ndim, o->dims, fn, dt, true);
    }
    return NULL;
}

static void scale_inplace(ss_dtype dt, void *data, int64_t n, double f)
{
    if (dt == SS_DT_FLOAT32) {
        float *y = data, g = (float)f;
        for (int64_t i = 0; i < n; i++)
            y[i] *= g;
    } else if (dt == SS_DT_FLOAT64) {
        double *y = data;
        for (int64_t i = 0; i < n; i++)
            y[i] *= f;
    } else {
        float buf[SS_EW_CHUNK];
        for (int64_t o = 0; o < n; o += SS_EW_CHUNK) {
            int64_t m = n - o < SS_EW_CHUNK ? n - o : SS_EW_CHUNK;
            void *p = (char *)data + (size_t)o * 2;
            ss_ew_half_to_f32(dt, p, buf, m);
            for (int64_t i = 0; i < m; i++)
                buf[i] *= (float)f;
            ss_ew_f32_to_half(dt, buf, p, m);
        }
    }
}

static ss_status *variadic_run(ss_kctx *k)
{
    const variadic_state *s = k->state;
    ss_tensor *o = k->out[0];
    if (s->n_steps == 0) {
        if (o->nbytes) memcpy(o->data, k->in[0]->data, o->nbytes);
        return NULL;
    }
    const void *prev = k->in[0]->data;
    for (int j = 0; j < s->n_steps; j++) {
        void *dst = (s->n_steps - 1 - j) % 2 == 0 ? o->data : s->scratch;
        const void *in[2] = {prev, k->in[j + 1]->data};
        ss_ew_plan_run(&s->step[j], in, dst);
        prev = dst;
    }
    if (s->mean) scale_inplace(o->dtype, o->data, ss_tensor_numel(o), 1.0 / s->n_in);
    return NULL;
}

/* ------------------------------------------------------------------ unary ops */

typedef struct {
    const char *type;
    const ss_ew_fn *tab;
    bool to_bool;
} unary_desc;

static const unary_desc unary_ops[] = {
    {"Neg", u_neg_tab, false},           {"Abs", u_abs_tab, false},
    {"Relu", u_relu_tab, false},         {"Sigmoid", u_sigmoid_tab, false},
    {"Tanh", u_tanh_tab, false},         {"Erf", u_erf_tab, false},
    {"Sqrt", u_sqrt_tab, false},         {"Exp", u_exp_tab, false},
    {"Log", u_log_tab, false},           {"Reciprocal", u_recip_tab, false},
    {"Floor", u_floor_tab, false},       {"Ceil", u_ceil_tab, false},
    {"Round", u_round_tab, false},       {"Sign", u_sign_tab, false},
    {"Sin", u_sin_tab, false},           {"Cos", u_cos_tab, false},
    {"Tan", u_tan_tab, false},           {"Asin", u_asin_tab, false},
    {"Acos", u_acos_tab, false},         {"Atan", u_atan_tab, false},
    {"Sinh", u_sinh_tab, false},         {"Cosh", u_cosh_tab, false},
    {"Asinh", u_asinh_tab, false},       {"Acosh", u_acosh_tab, false},
    {"Atanh", u_atanh_tab, false},       {"Softplus", u_softplus_tab, false},
    {"Softsign", u_softsign_tab, false}, {"LeakyRelu", u_leaky_tab, false},
    {"Elu", u_elu_tab, false},           {"Selu", u_selu_tab, false},
    {"Celu", u_celu_tab, false},         {"HardSigmoid", u_hsig_tab, false},
    {"HardSwish", u_hswish_tab, false},  {"ThresholdedRelu", u_thrrelu_tab, false},
    {"IsNaN", u_isnan_tab, true},        {"IsInf", u_isinf_tab, true},
    {"Clip", u_clip_tab, false},
};

static void unary_params(const ss_kctx *k, ss_ew_params *prm)
{
    const ss_onnx_node *n = k->node;
    const char *op = n->op_type;
    if (!strcmp(op, "LeakyRelu"))
        prm->f[0] = ss_onnx_attr_float(n, "alpha", 0.01f);
    else if (!strcmp(op, "Elu") || !strcmp(op, "Celu") || !strcmp(op, "ThresholdedRelu"))
        prm->f[0] = ss_onnx_attr_float(n, "alpha", 1.0f);
    else if (!strcmp(op, "Selu")) {
        prm->f[0] = ss_onnx_attr_float(n, "alpha", 1.67326319217681884765625f);
        prm->f[1] = ss_onnx_attr_float(n, "gamma", 1.05070102214813232421875f);
    } else if (!strcmp(op, "HardSigmoid")) {
        prm->f[0] = ss_onnx_attr_float(n, "alpha", 0.2f);
        prm->f[1] = ss_onnx_attr_float(n, "beta", 0.5f);
    } else if (!strcmp(op, "IsInf")) {
        prm->i[0] = ss_onnx_attr_int(n, "detect_positive", 1) != 0;
        prm->i[1] = ss_onnx_attr_int(n, "detect_negative", 1) != 0;
    }
}

static ss_status *unary_infer(ss_kctx *k)
{
    const char *op = k->node->op_type;
    bool clip = !strcmp(op, "Clip");
    ss_status *st = ss_op_expect_inputs(k, 1, clip && k->opset >= 11 ? 3 : 1);
    if (st) return st;
    const unary_desc *d = NULL;
    for (size_t i = 0; i < sizeof unary_ops / sizeof unary_ops[0] && !d; i++)
        if (!strcmp(unary_ops[i].type, op)) d = &unary_ops[i];
    const ss_tensor *x = k->in[0];
    ss_ew_fn fn = d ? pick(d->tab, x->dtype) : NULL;
    if (!fn) return type_err(k, 0);
    for (int i = 1; i < k->n_in; i++)
        if (k->in[i] && (k->in[i]->dtype != x->dtype || ss_tensor_numel(k->in[i]) != 1))
            return ss_op_err(k, SS_ERR_INVALID, "input %d must be a scalar of X's type %s", i,
                             ss_dtype_name(x->dtype));
    ss_op_same_shape(k->out[0], x);
    if (d->to_bool) k->out[0]->dtype = SS_DT_BOOL;
    ss_ew_plan *p = NULL;
    if ((st = ss_ew_plan_state(k, 1, &x, x, fn, k->out[0]->dtype, true, &p))) return st;
    unary_params(k, &p->prm);
    if (clip && k->opset < 11) {
        p->prm.f[0] = ss_onnx_attr_float(k->node, "min", -FLT_MAX);
        p->prm.f[1] = ss_onnx_attr_float(k->node, "max", FLT_MAX);
    }
    return NULL;
}

/* Clip-11+: the bounds are (optional) scalar inputs read at run time. */
static ss_status *clip_run(ss_kctx *k)
{
    ss_ew_plan *p = k->state;
    if (k->opset >= 11) {
        const ss_tensor *lo = k->n_in > 1 ? k->in[1] : NULL, *hi = k->n_in > 2 ? k->in[2] : NULL;
        ss_dtype dt = k->in[0]->dtype;
        if (ss_dtype_is_float(dt)) {
            p->prm.f[0] = lo ? ss_op_elem_f64(lo, 0) : -INFINITY;
            p->prm.f[1] = hi ? ss_op_elem_f64(hi, 0) : INFINITY;
        } else if (dt == SS_DT_UINT8 || dt == SS_DT_UINT16 || dt == SS_DT_UINT32 ||
                   dt == SS_DT_UINT64) {
            uint64_t v[2] = {0, UINT64_MAX};
            const ss_tensor *b[2] = {lo, hi};
            for (int i = 0; i < 2; i++) {
                if (!b[i]) continue;
                switch (dt) {
                case SS_DT_UINT8:
                    v[i] = *(const uint8_t *)b[i]->data;
                    break;
                case SS_DT_UINT16:
                    v[i] = *(const uint16_t *)b[i]->data;
                    break;
                case SS_DT_UINT32:
                    v[i] = *(const uint32_t *)b[i]->data;
                    break;
                default:
                    v[i] = *(const uint64_t *)b[i]->data;
                    break;
                }
            }
            p->prm.u[0] = v[0], p->prm.u[1] = v[1];
        } else {
            p->prm.i[0] = lo ? ss_op_elem_i64(lo, 0) : INT64_MIN;
            p->prm.i[1] = hi ? ss_op_elem_i64(hi, 0) : INT64_MAX;
        }
    }
    const void *in[1] = {k->in[0]->data};
    ss_ew_plan_run(p, in, k->out[0]->data);
    return NULL;
}

/* ------------------------------------------------------------------ Identity (alias) */

static ss_status *identity_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (st) return st;
    ss_op_same_shape(k->out[0], k->in[0]);
    return NULL;
}

static ss_status *identity_run(ss_kctx *k)
{
    return NULL;
} /* never called: SS_OPF_ALIAS */

const ss_op_def ss_ops_elementwise[] = {
    {"", "Add", 1, 21, binary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Sub", 1, 21, binary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Mul", 1, 21, binary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Div", 1, 21, binary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Mod", 10, 21, binary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "BitShift", 11, 21, binary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Pow", 1, 21, pow_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "PRelu", 6, 21, prelu_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Min", 1, 21, variadic_infer, variadic_run, SS_OPF_ELEMENTWISE},
    {"", "Max", 1, 21, variadic_infer, variadic_run, SS_OPF_ELEMENTWISE},
    {"", "Sum", 1, 21, variadic_infer, variadic_run, SS_OPF_ELEMENTWISE},
    {"", "Mean", 1, 21, variadic_infer, variadic_run, SS_OPF_ELEMENTWISE},
    {"", "Neg", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Abs", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Relu", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Sigmoid", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Tanh", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Erf", 9, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Sqrt", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Exp", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Log", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Reciprocal", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Floor", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Ceil", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Round", 11, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Sign", 9, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Sin", 7, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Cos", 7, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Tan", 7, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Asin", 7, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Acos", 7, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Atan", 7, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Sinh", 9, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Cosh", 9, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Asinh", 9, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Acosh", 9, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Atanh", 9, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Softplus", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Softsign", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "LeakyRelu", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Elu", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Selu", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Celu", 12, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "HardSigmoid", 1, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "HardSwish", 14, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "ThresholdedRelu", 10, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "IsNaN", 9, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "IsInf", 10, 21, unary_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Clip", 1, 21, unary_infer, clip_run, SS_OPF_ELEMENTWISE},
    {"", "Identity", 1, 21, identity_infer, identity_run, SS_OPF_ALIAS | SS_OPF_ELEMENTWISE},
    {0},
};
