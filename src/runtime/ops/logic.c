/*
 * Comparisons (Equal Less Greater LessOrEqual GreaterOrEqual: any numeric type or bool -> bool),
 * boolean logic (Not And Or Xor) and Where, all with numpy broadcasting through broadcast.h.
 *
 * Bool tensors are one byte per element; inputs are read as "non-zero is true" by the logic ops
 * and outputs are always 0 or 1. Where selects by element size, so it serves every fixed-size
 * type (float16 and bfloat16 included) without conversion; string Where is unsupported.
 */
#include "broadcast.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ comparisons */

#define eq_EXPR (a == b)
#define lt_EXPR (a < b)
#define gt_EXPR (a > b)
#define le_EXPR (a <= b)
#define ge_EXPR (a >= b)
#define DEF_CMP(SFX, T, DT, W, OP) SS_EW_BINARY_KERNEL(OP##_##SFX, T, T, uint8_t, OP##_EXPR)
#define DEF_CMP_ALL(OP)                                                                            \
    SS_EW_NUMERIC(DEF_CMP, OP)                                                                     \
    static const ss_ew_fn OP##_tab[SS_EW_NDT] = {SS_EW_NUMERIC(SS_EW_TAB_ENTRY, OP)[SS_DT_BOOL] =  \
                                                     OP##_u8};
DEF_CMP_ALL(eq)
DEF_CMP_ALL(lt)
DEF_CMP_ALL(gt)
DEF_CMP_ALL(le)
DEF_CMP_ALL(ge)

/* ------------------------------------------------------------------ boolean logic */

SS_EW_BINARY_KERNEL(and_b, uint8_t, uint8_t, uint8_t, (a != 0) & (b != 0))
SS_EW_BINARY_KERNEL(or_b, uint8_t, uint8_t, uint8_t, (a | b) != 0)
SS_EW_BINARY_KERNEL(xor_b, uint8_t, uint8_t, uint8_t, (a != 0) ^ (b != 0))
SS_EW_UNARY_KERNEL(not_b, uint8_t, uint8_t, x == 0)

static ss_status *cmp_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 2, 2);
    if (st) return st;
    const char *op = k->node->op_type;
    const ss_tensor *a = k->in[0];
    if (a->dtype != k->in[1]->dtype)
        return ss_op_err(k, SS_ERR_INVALID, "inputs have different types (%s, %s)",
                         ss_dtype_name(a->dtype), ss_dtype_name(k->in[1]->dtype));
    ss_dtype dt = a->dtype;
    ss_ew_fn fn = NULL;
    bool logic = !strcmp(op, "And") || !strcmp(op, "Or") || !strcmp(op, "Xor");
    if (logic) {
        if (dt == SS_DT_BOOL) fn = !strcmp(op, "And") ? and_b : !strcmp(op, "Or") ? or_b : xor_b;
    } else {
        const ss_ew_fn *tab = !strcmp(op, "Equal")         ? eq_tab
                              : !strcmp(op, "Less")        ? lt_tab
                              : !strcmp(op, "Greater")     ? gt_tab
                              : !strcmp(op, "LessOrEqual") ? le_tab
                                                           : ge_tab;
        ss_dtype kd = ss_ew_is_half(dt) ? SS_DT_FLOAT32 : dt;
        fn = (unsigned)kd < SS_EW_NDT ? tab[kd] : NULL;
    }
    if (!fn)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "input type %s is not supported",
                         ss_dtype_name(dt));
    ss_tensor b;
    if ((st = ss_ew_legacy_operand(k, a, k->in[1], &b))) return st;
    const ss_tensor *ins[2] = {a, &b};
    ss_tensor *o = k->out[0];
    if ((st = ss_bcast_shape(k, 2, ins, o))) return st;
    o->dtype = SS_DT_BOOL;
    return ss_ew_plan_state(k, 2, ins, o, fn, SS_DT_BOOL, true, NULL);
}

static ss_status *not_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    if (x->dtype != SS_DT_BOOL)
        return ss_op_err(k, SS_ERR_INVALID, "input is %s, expects bool", ss_dtype_name(x->dtype));
    ss_op_same_shape(k->out[0], x);
    return ss_ew_plan_state(k, 1, &x, x, not_b, SS_DT_BOOL, false, NULL);
}

/* ------------------------------------------------------------------ Where */

/* One loop per stride pattern of (cond, x, y): mode bit 0 = cond, 1 = x, 2 = y vector. The
 * select is bitwise (an all-ones or all-zero mask from the condition byte), which vectorizes. */
#define WHERE_SEL(c, x, y, T) ((((T)0 - (T)((c) != 0)) & (x)) | (~((T)0 - (T)((c) != 0)) & (y)))
#define WHERE_KERNEL(NAME, T)                                                                      \
    static void NAME(const void *const *in, void *out, int64_t n, unsigned mode,                   \
                     const ss_ew_params *prm)                                                      \
    {                                                                                              \
        const uint8_t *restrict C = in[0];                                                         \
        const T *restrict X = in[1];                                                               \
        const T *restrict Y = in[2];                                                               \
        T *restrict O = out;                                                                       \
        (void)prm;                                                                                 \
        switch (mode & 7u) {                                                                       \
        case 7:                                                                                    \
            for (int64_t i = 0; i < n; i++)                                                        \
                O[i] = (T)WHERE_SEL(C[i], X[i], Y[i], T);                                          \
            break;                                                                                 \
        case 3: {                                                                                  \
            const T y = Y[0];                                                                      \
            for (int64_t i = 0; i < n; i++)                                                        \
                O[i] = (T)WHERE_SEL(C[i], X[i], y, T);                                             \
        } break;                                                                                   \
        case 5: {                                                                                  \
            const T x = X[0];                                                                      \
            for (int64_t i = 0; i < n; i++)                                                        \
                O[i] = (T)WHERE_SEL(C[i], x, Y[i], T);                                             \
        } break;                                                                                   \
        case 1: {                                                                                  \
            const T x = X[0], y = Y[0];                                                            \
            for (int64_t i = 0; i < n; i++)                                                        \
                O[i] = (T)WHERE_SEL(C[i], x, y, T);                                                \
        } break;                                                                                   \
        case 6:                                                                                    \
            memcpy(O, C[0] ? X : Y, sizeof(T) * (size_t)n);                                        \
            break;                                                                                 \
        case 2:                                                                                    \
        case 4: {                                                                                  \
            const T *restrict V = (mode & 2u) ? X : Y;                                             \
            const T s = (mode & 2u) ? Y[0] : X[0];                                                 \
            if ((mode & 2u) ? C[0] == 0 : C[0] != 0) {                                             \
                for (int64_t i = 0; i < n; i++)                                                    \
                    O[i] = s;                                                                      \
            } else {                                                                               \
                memcpy(O, V, sizeof(T) * (size_t)n);                                               \
            }                                                                                      \
        } break;                                                                                   \
        default: {                                                                                 \
            const T v = C[0] ? X[0] : Y[0];                                                        \
            for (int64_t i = 0; i < n; i++)                                                        \
                O[i] = v;                                                                          \
        } break;                                                                                   \
        }                                                                                          \
    }
WHERE_KERNEL(where_1, uint8_t)
WHERE_KERNEL(where_2, uint16_t)
WHERE_KERNEL(where_4, uint32_t)
WHERE_KERNEL(where_8, uint64_t)

static ss_status *where_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 3, 3);
    if (st) return st;
    const ss_tensor *c = k->in[0], *x = k->in[1], *y = k->in[2];
    if (c->dtype != SS_DT_BOOL)
        return ss_op_err(k, SS_ERR_INVALID, "condition is %s, expects bool",
                         ss_dtype_name(c->dtype));
    if (x->dtype != y->dtype)
        return ss_op_err(k, SS_ERR_INVALID, "X is %s but Y is %s", ss_dtype_name(x->dtype),
                         ss_dtype_name(y->dtype));
    ss_ew_fn fn = NULL;
    if (x->dtype != SS_DT_STRING) {
        switch (ss_dtype_size(x->dtype)) {
        case 1:
            fn = where_1;
            break;
        case 2:
            fn = where_2;
            break;
        case 4:
            fn = where_4;
            break;
        case 8:
            fn = where_8;
            break;
        default:
            break;
        }
    }
    if (!fn)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "type %s is not supported",
                         ss_dtype_name(x->dtype));
    const ss_tensor *ins[3] = {c, x, y};
    ss_tensor *o = k->out[0];
    if ((st = ss_bcast_shape(k, 3, ins, o))) return st;
    o->dtype = x->dtype;
    return ss_ew_plan_state(k, 3, ins, o, fn, x->dtype, false, NULL);
}

const ss_op_def ss_ops_logic[] = {
    {"", "Equal", 1, 21, cmp_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Less", 1, 21, cmp_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Greater", 1, 21, cmp_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "LessOrEqual", 12, 21, cmp_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "GreaterOrEqual", 12, 21, cmp_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "And", 1, 21, cmp_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Or", 1, 21, cmp_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Xor", 1, 21, cmp_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Not", 1, 21, not_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {"", "Where", 9, 21, where_infer, ss_ew_run, SS_OPF_ELEMENTWISE},
    {0},
};
