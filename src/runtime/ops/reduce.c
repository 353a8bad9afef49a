/*
 * Reductions: ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare and ArgMax/ArgMin.
 *
 * infer turns the reduced axes into a coalesced layout: the input shape with size-1 dims dropped
 * and neighbouring dims of the same kind (reduced or kept) merged, so that every reduction is a
 * walk over "outer" rows whose innermost segment is either reduced (a contiguous dot-like loop
 * into one accumulator: the LayerNorm-style axes=[-1] case) or kept (a contiguous row added into
 * a row of accumulators). Accumulators live in k->state: double for float inputs (so float32
 * sums do not lose precision), int64 for integer inputs. run never allocates.
 *
 * Axes: an attribute up to opset 17 (ReduceSum up to 12), the optional second input from 18
 * (ReduceSum from 13), with noop_with_empty_axes; that input's value must be known at plan time.
 * Opsets 19-21 changed no Reduce op (20 only widened ReduceMax/Min to bool, refused here).
 */
#include "common.h"

#include <math.h>
#include <string.h>

typedef enum {
    R_SUM,
    R_MEAN,
    R_MAX,
    R_MIN,
    R_PROD,
    R_L1,
    R_L2,
    R_LOGSUM,
    R_LOGSUMEXP,
    R_SUMSQ
} rkind;

typedef struct {
    rkind kind;
    ss_dtype dt;
    bool copy; /* noop_with_empty_axes with empty axes: Y = X */
    int nseg;  /* coalesced segments, outermost first */
    int64_t seg[SS_MAX_DIMS];
    bool red[SS_MAX_DIMS];
    int64_t out_stride[SS_MAX_DIMS]; /* output elements per step of a kept segment (0 if reduced) */
    int64_t n_in, n_out, n_red, inner;
    bool inner_red;
    void *acc;  /* n_out accumulators (double or int64) */
    void *acc2; /* LogSumExp: n_out running maxima (double) */
} reduce_plan;

static const char *const reduce_attrs[] = {"axes", "keepdims", "noop_with_empty_axes", NULL};

static rkind kind_of(const char *type)
{
    static const struct {
        const char *name;
        rkind kind;
    } names[] = {
        {"ReduceSum", R_SUM},        {"ReduceMean", R_MEAN},     {"ReduceMax", R_MAX},
        {"ReduceMin", R_MIN},        {"ReduceProd", R_PROD},     {"ReduceL1", R_L1},
        {"ReduceL2", R_L2},          {"ReduceLogSum", R_LOGSUM}, {"ReduceLogSumExp", R_LOGSUMEXP},
        {"ReduceSumSquare", R_SUMSQ}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(names[i].name, type) == 0) return names[i].kind;
    return R_SUM;
}

static bool is_int(ss_dtype dt)
{
    return dt == SS_DT_INT32 || dt == SS_DT_INT64;
}

/* Reads the axes (attribute or input) into a mask; *all_axes when none are given. */
static ss_status *read_axes(ss_kctx *k, bool from_input, int rank, bool mask[SS_MAX_DIMS],
                            bool *empty)
{
    int64_t axes[SS_MAX_DIMS * 2];
    int n = -1;
    *empty = true;
    if (from_input) {
        ss_status *st = ss_op_plan_ints(k, 1, "axes", axes, SS_MAX_DIMS * 2, &n);
        if (st) return st;
    } else {
        const int64_t *v;
        n = ss_onnx_attr_ints(k->node, "axes", &v);
        if (n > SS_MAX_DIMS * 2) return ss_op_err(k, SS_ERR_INVALID, "too many axes");
        for (int i = 0; i < n; i++)
            axes[i] = v[i];
    }
    *empty = n <= 0;
    for (int d = 0; d < rank; d++)
        mask[d] = n <= 0;
    for (int i = 0; i < n; i++) {
        int a;
        ss_status *st = ss_op_axis(k, axes[i], rank, &a);
        if (st) return st;
        if (mask[a])
            return ss_op_err(k, SS_ERR_INVALID, "axis %lld is repeated", (long long)axes[i]);
        mask[a] = true;
    }
    return NULL;
}

static void build_layout(reduce_plan *p, int rank, const int64_t *dims, const bool *mask)
{
    p->nseg = 0;
    for (int d = 0; d < rank; d++) {
        if (dims[d] == 1) continue;
        if (p->nseg > 0 && p->red[p->nseg - 1] == mask[d]) {
            p->seg[p->nseg - 1] *= dims[d];
        } else {
            p->seg[p->nseg] = dims[d];
            p->red[p->nseg] = mask[d];
            p->nseg++;
        }
    }
    if (p->nseg == 0) { /* all ones (or a scalar): one reduced element */
        p->seg[0] = 1;
        p->red[0] = true;
        p->nseg = 1;
    }
    int64_t s = 1;
    for (int i = p->nseg - 1; i >= 0; i--) {
        p->out_stride[i] = p->red[i] ? 0 : s;
        if (!p->red[i]) s *= p->seg[i];
    }
    p->inner = p->seg[p->nseg - 1];
    p->inner_red = p->red[p->nseg - 1];
}

static ss_status *reduce_infer_common(ss_kctx *k, bool axes_input)
{
    ss_status *st = ss_op_expect_inputs(k, 1, axes_input ? 2 : 1);
    if (!st) st = ss_op_check_attrs(k, reduce_attrs);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    rkind kind = kind_of(k->node->op_type);
    bool float_ok = x->dtype == SS_DT_FLOAT32 || x->dtype == SS_DT_FLOAT64;
    bool int_ok = is_int(x->dtype) && kind != R_L2 && kind != R_LOGSUM && kind != R_LOGSUMEXP;
    if (!float_ok && !int_ok)
        return ss_op_err(k, SS_ERR_UNSUPPORTED, "input type %s is not supported",
                         ss_dtype_name(x->dtype));
    if (axes_input && ss_onnx_attr_find(k->node, "axes"))
        return ss_op_err(k, SS_ERR_INVALID,
                         "attribute 'axes' is an input from opset 13 (ReduceSum) or 18 (the other "
                         "Reduce ops) on");
    if (!axes_input && ss_onnx_attr_find(k->node, "noop_with_empty_axes"))
        return ss_op_err(
            k, SS_ERR_UNSUPPORTED,
            "attribute 'noop_with_empty_axes' needs the axes input (opset 13+ ReduceSum, "
            "18+ for the other Reduce ops)");
    bool keep = ss_onnx_attr_int(k->node, "keepdims", 1) != 0;
    bool noop = ss_onnx_attr_int(k->node, "noop_with_empty_axes", 0) != 0;
    bool mask[SS_MAX_DIMS], empty;
    st = read_axes(k, axes_input, x->ndim, mask, &empty);
    if (st) return st;
    ss_tensor *y = k->out[0];
    y->dtype = x->dtype;
    int64_t n_out = 1;
    for (int d = 0; d < x->ndim; d++)
        if (!mask[d]) n_out *= x->dims[d];
    /* One block: the runtime frees k->state with a single free(). */
    size_t n_acc = (size_t)(n_out > 0 ? n_out : 1), n_bufs = kind == R_LOGSUMEXP ? 2 : 1;
    reduce_plan *p = ss_op_state_alloc(k, sizeof *p + n_acc * 8 * n_bufs);
    if (!p) return ss_op_oom();
    p->kind = kind;
    p->dt = x->dtype;
    p->acc = (double *)(p + 1);
    if (kind == R_LOGSUMEXP) p->acc2 = (double *)(p + 1) + n_acc;
    if (empty && noop) {
        p->copy = true;
        ss_op_same_shape(y, x);
        return NULL;
    }
    y->ndim = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (!mask[d])
            y->dims[y->ndim++] = x->dims[d];
        else if (keep)
            y->dims[y->ndim++] = 1;
    }
    p->n_in = ss_tensor_numel(x);
    p->n_out = ss_tensor_numel(y);
    p->n_red = 1;
    for (int d = 0; d < x->ndim; d++)
        if (mask[d]) p->n_red *= x->dims[d];
    build_layout(p, x->ndim, x->dims, mask);
    return NULL;
}

static ss_status *reduce_infer_attr(ss_kctx *k)
{
    return reduce_infer_common(k, false);
}
static ss_status *reduce_infer_input(ss_kctx *k)
{
    return reduce_infer_common(k, true);
}

/* ------------------------------------------------------------------ kernels */

/* Sum of a contiguous float row in double; independent partial sums keep the adds pipelined. */
static double sum_row_f32(const float *restrict x, int64_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += x[i];
        s1 += x[i + 1];
        s2 += x[i + 2];
        s3 += x[i + 3];
    }
    for (; i < n; i++)
        s0 += x[i];
    return (s0 + s1) + (s2 + s3);
}

/*
 * One walk over the input for element type T with accumulator type A. G(v) is the per-element
 * transform, COMBINE(a, v) folds it in. The inner segment is handled as a contiguous loop.
 */
#define REDUCE_WALK(T, A, acc, INIT, G, COMBINE)                                                   \
    do {                                                                                           \
        const T *restrict x_ = (const T *)in;                                                      \
        A *restrict a_ = (A *)(acc);                                                               \
        for (int64_t o_ = 0; o_ < p->n_out; o_++)                                                  \
            a_[o_] = (INIT);                                                                       \
        int64_t idx_[SS_MAX_DIMS] = {0};                                                           \
        int64_t n_rows_ = p->n_in / p->inner, off_ = 0;                                            \
        int last_ = p->nseg - 1;                                                                   \
        for (int64_t r_ = 0; r_ < n_rows_; r_++) {                                                 \
            const T *row_ = x_ + r_ * p->inner;                                                    \
            if (p->inner_red) {                                                                    \
                A s_ = a_[off_];                                                                   \
                for (int64_t j_ = 0; j_ < p->inner; j_++) {                                        \
                    A v_ = G(row_[j_], off_);                                                      \
                    s_ = COMBINE(s_, v_);                                                          \
                }                                                                                  \
                a_[off_] = s_;                                                                     \
            } else {                                                                               \
                A *restrict dst_ = a_ + off_;                                                      \
                for (int64_t j_ = 0; j_ < p->inner; j_++) {                                        \
                    A v_ = G(row_[j_], off_ + j_);                                                 \
                    dst_[j_] = COMBINE(dst_[j_], v_);                                              \
                }                                                                                  \
            }                                                                                      \
            for (int d_ = last_ - 1; d_ >= 0; d_--) {                                              \
                off_ += p->out_stride[d_];                                                         \
                if (++idx_[d_] < p->seg[d_]) break;                                                \
                off_ -= p->out_stride[d_] * p->seg[d_];                                            \
                idx_[d_] = 0;                                                                      \
            }                                                                                      \
        }                                                                                          \
    } while (0)

#define G_ID(v, o) ((double)(v))
#define G_ABS(v, o) fabs((double)(v))
#define G_SQ(v, o) ((double)(v) * (double)(v))
#define G_EXPM(v, o) exp((double)(v)-mx[o])
#define GI_ID(v, o) ((int64_t)(v))
#define C_ADD(a, b) ((a) + (b))
#define C_MUL(a, b) ((a) * (b))
#define C_MAX(a, b) ((b) > (a) ? (b) : (a))
#define C_MIN(a, b) ((b) < (a) ? (b) : (a))
/* Integer sums, products and squares wrap around (two's complement, as numpy and onnxruntime
 * give), computed in uint64 so that an overflow is defined. */
#define GW_ABS(v, o) ((int64_t)(v) < 0 ? (int64_t)(0 - (uint64_t)(int64_t)(v)) : (int64_t)(v))
#define GW_SQ(v, o) ((int64_t)((uint64_t)(int64_t)(v) * (uint64_t)(int64_t)(v)))
#define CW_ADD(a, b) ((int64_t)((uint64_t)(a) + (uint64_t)(b)))
#define CW_MUL(a, b) ((int64_t)((uint64_t)(a) * (uint64_t)(b)))

/* One walk per reduction kind for float element type T, accumulating in double. */
#define FLOAT_KINDS(T)                                                                             \
    switch (p->kind) {                                                                             \
    case R_SUM:                                                                                    \
    case R_MEAN:                                                                                   \
    case R_LOGSUM:                                                                                 \
        REDUCE_WALK(T, double, acc, 0.0, G_ID, C_ADD);                                             \
        break;                                                                                     \
    case R_L1:                                                                                     \
        REDUCE_WALK(T, double, acc, 0.0, G_ABS, C_ADD);                                            \
        break;                                                                                     \
    case R_L2:                                                                                     \
    case R_SUMSQ:                                                                                  \
        REDUCE_WALK(T, double, acc, 0.0, G_SQ, C_ADD);                                             \
        break;                                                                                     \
    case R_PROD:                                                                                   \
        REDUCE_WALK(T, double, acc, 1.0, G_ID, C_MUL);                                             \
        break;                                                                                     \
    case R_MAX:                                                                                    \
        REDUCE_WALK(T, double, acc, -INFINITY, G_ID, C_MAX);                                       \
        break;                                                                                     \
    case R_MIN:                                                                                    \
        REDUCE_WALK(T, double, acc, INFINITY, G_ID, C_MIN);                                        \
        break;                                                                                     \
    case R_LOGSUMEXP:                                                                              \
        REDUCE_WALK(T, double, p->acc2, -INFINITY, G_ID, C_MAX);                                   \
        REDUCE_WALK(T, double, acc, 0.0, G_EXPM, C_ADD);                                           \
        break;                                                                                     \
    }

static void reduce_float(const reduce_plan *p, const void *in, void *out)
{
    double *acc = p->acc;
    const double *mx = p->acc2;
    bool f32_sum =
        p->dt == SS_DT_FLOAT32 && p->inner_red && (p->kind == R_SUM || p->kind == R_MEAN);
    if (f32_sum && p->nseg == 1) {
        /* the whole tensor is one contiguous reduced row */
        acc[0] = sum_row_f32(in, p->n_in);
    } else if (f32_sum && p->nseg == 2) { /* one contiguous reduced row per output */
        for (int64_t o = 0; o < p->n_out; o++)
            acc[o] = sum_row_f32((const float *)in + o * p->inner, p->inner);
    } else if (p->dt == SS_DT_FLOAT32) {
        FLOAT_KINDS(float)
    } else {
        FLOAT_KINDS(double)
    }
    double n = (double)p->n_red;
    for (int64_t o = 0; o < p->n_out; o++) {
        double v = acc[o];
        switch (p->kind) {
        case R_MEAN:
            v /= n;
            break;
        case R_L2:
            v = sqrt(v);
            break;
        case R_LOGSUM:
            v = log(v);
            break;
        case R_LOGSUMEXP:
            v = isinf(mx[o]) ? mx[o] : log(v) + mx[o];
            break;
        default:
            break;
        }
        if (p->dt == SS_DT_FLOAT32)
            ((float *)out)[o] = (float)v;
        else
            ((double *)out)[o] = v;
    }
}

/* The same for integer element type T, accumulating in int64 (no L2/LogSum/LogSumExp). */
#define INT_KINDS(T)                                                                               \
    switch (p->kind) {                                                                             \
    case R_SUM:                                                                                    \
    case R_MEAN:                                                                                   \
        REDUCE_WALK(T, int64_t, acc, 0, GI_ID, CW_ADD);                                            \
        break;                                                                                     \
    case R_L1:                                                                                     \
        REDUCE_WALK(T, int64_t, acc, 0, GW_ABS, CW_ADD);                                           \
        break;                                                                                     \
    case R_SUMSQ:                                                                                  \
        REDUCE_WALK(T, int64_t, acc, 0, GW_SQ, CW_ADD);                                            \
        break;                                                                                     \
    case R_PROD:                                                                                   \
        REDUCE_WALK(T, int64_t, acc, 1, GI_ID, CW_MUL);                                            \
        break;                                                                                     \
    case R_MAX:                                                                                    \
        REDUCE_WALK(T, int64_t, acc, INT64_MIN, GI_ID, C_MAX);                                     \
        break;                                                                                     \
    case R_MIN:                                                                                    \
        REDUCE_WALK(T, int64_t, acc, INT64_MAX, GI_ID, C_MIN);                                     \
        break;                                                                                     \
    default:                                                                                       \
        break;                                                                                     \
    }

static void reduce_int(const reduce_plan *p, const void *in, void *out)
{
    int64_t *acc = p->acc;
    if (p->dt == SS_DT_INT32) {
        INT_KINDS(int32_t)
    } else {
        INT_KINDS(int64_t)
    }
    for (int64_t o = 0; o < p->n_out; o++) {
        int64_t v = acc[o];
        if (p->kind == R_MEAN) v = p->n_red ? v / p->n_red : 0;
        if (p->dt == SS_DT_INT32)
            ((int32_t *)out)[o] = (int32_t)v;
        else
            ((int64_t *)out)[o] = v;
    }
}

static ss_status *reduce_run(ss_kctx *k)
{
    const reduce_plan *p = k->state;
    const ss_tensor *x = k->in[0];
    ss_tensor *y = k->out[0];
    if (p->copy) {
        if (y->nbytes) memmove(y->data, x->data, y->nbytes);
        return NULL;
    }
    if (p->n_out == 0) return NULL;
    if (p->n_in == 0) { /* reducing an empty set: the identity of each reduction */
        for (int64_t o = 0; o < p->n_out; o++) {
            double v = p->kind == R_PROD                               ? 1.0
                       : p->kind == R_MAX                              ? -INFINITY
                       : p->kind == R_MIN                              ? INFINITY
                       : p->kind == R_MEAN                             ? NAN
                       : p->kind == R_LOGSUM || p->kind == R_LOGSUMEXP ? -INFINITY
                                                                       : 0.0;
            switch (p->dt) {
            case SS_DT_FLOAT32:
                ((float *)y->data)[o] = (float)v;
                break;
            case SS_DT_FLOAT64:
                ((double *)y->data)[o] = v;
                break;
            case SS_DT_INT32:
                ((int32_t *)y->data)[o] = p->kind == R_PROD  ? 1
                                          : p->kind == R_MAX ? INT32_MIN
                                          : p->kind == R_MIN ? INT32_MAX
                                                             : 0;
                break;
            default:
                ((int64_t *)y->data)[o] = p->kind == R_PROD  ? 1
                                          : p->kind == R_MAX ? INT64_MIN
                                          : p->kind == R_MIN ? INT64_MAX
                                                             : 0;
                break;
            }
        }
        return NULL;
    }
    if (is_int(p->dt))
        reduce_int(p, x->data, y->data);
    else
        reduce_float(p, x->data, y->data);
    return NULL;
}

/* ------------------------------------------------------------------ ArgMax / ArgMin */

typedef struct {
    bool is_max, last;
    int64_t outer, n, inner;
    void *best; /* inner best values (8 bytes each) */
} arg_plan;

static const char *const arg_attrs[] = {"axis", "keepdims", "select_last_index", NULL};

static ss_status *arg_infer(ss_kctx *k)
{
    ss_status *st = ss_op_expect_inputs(k, 1, 1);
    if (!st) st = ss_op_check_attrs(k, arg_attrs);
    if (st) return st;
    const ss_tensor *x = k->in[0];
    static const ss_dtype types[] = {SS_DT_FLOAT32, SS_DT_FLOAT64, SS_DT_INT32,
                                     SS_DT_INT64,   SS_DT_UINT8,   SS_DT_INT8};
    st = ss_op_expect_dtype(k, 0, types, (int)(sizeof types / sizeof types[0]));
    if (st) return st;
    int axis;
    st = ss_op_attr_axis(k, "axis", 0, x->ndim, &axis);
    if (st) return st;
    if (x->ndim == 0) return ss_op_err(k, SS_ERR_INVALID, "input must have rank >= 1");
    int64_t outer, n, inner;
    ss_op_split_axis(x, axis, &outer, &n, &inner);
    arg_plan *p = ss_op_state_alloc(k, sizeof *p + (inner > 1 ? (size_t)inner * 8 : 0));
    if (!p) return ss_op_oom();
    p->best = p + 1;
    p->is_max = strcmp(k->node->op_type, "ArgMax") == 0;
    p->last = ss_onnx_attr_int(k->node, "select_last_index", 0) != 0;
    bool keep = ss_onnx_attr_int(k->node, "keepdims", 1) != 0;
    p->outer = outer;
    p->n = n;
    p->inner = inner;
    if (p->n == 0 && ss_tensor_numel(x) == 0 && p->outer * p->inner > 0)
        return ss_op_err(k, SS_ERR_INVALID, "cannot take an arg-extremum over an empty axis");
    ss_tensor *y = k->out[0];
    y->dtype = SS_DT_INT64;
    y->ndim = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (d != axis)
            y->dims[y->ndim++] = x->dims[d];
        else if (keep)
            y->dims[y->ndim++] = 1;
    }
    return NULL;
}

/* "better" is strict for the first index, non-strict for select_last_index. */
#define ARG_KERNEL(T)                                                                              \
    do {                                                                                           \
        const T *x = (const T *)k->in[0]->data;                                                    \
        int64_t *y = k->out[0]->data;                                                              \
        int64_t n = p->n, inner = p->inner;                                                        \
        for (int64_t o = 0; o < p->outer; o++) {                                                   \
            const T *xo = x + o * n * inner;                                                       \
            int64_t *yo = y + o * inner;                                                           \
            if (inner == 1) {                                                                      \
                T b = xo[0];                                                                       \
                int64_t bi = 0;                                                                    \
                for (int64_t a = 1; a < n; a++) {                                                  \
                    T v = xo[a];                                                                   \
                    bool better =                                                                  \
                        p->is_max ? (p->last ? v >= b : v > b) : (p->last ? v <= b : v < b);       \
                    if (better) b = v, bi = a;                                                     \
                }                                                                                  \
                yo[0] = bi;                                                                        \
                continue;                                                                          \
            }                                                                                      \
            T *restrict best = p->best;                                                            \
            for (int64_t j = 0; j < inner; j++)                                                    \
                best[j] = xo[j], yo[j] = 0;                                                        \
            for (int64_t a = 1; a < n; a++) {                                                      \
                const T *row = xo + a * inner;                                                     \
                for (int64_t j = 0; j < inner; j++) {                                              \
                    T v = row[j];                                                                  \
                    bool better = p->is_max ? (p->last ? v >= best[j] : v > best[j])               \
                                            : (p->last ? v <= best[j] : v < best[j]);              \
                    if (better) best[j] = v, yo[j] = a;                                            \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    } while (0)

static ss_status *arg_run(ss_kctx *k)
{
    const arg_plan *p = k->state;
    if (p->n == 0) return NULL;
    switch (k->in[0]->dtype) {
    case SS_DT_FLOAT32:
        ARG_KERNEL(float);
        break;
    case SS_DT_FLOAT64:
        ARG_KERNEL(double);
        break;
    case SS_DT_INT32:
        ARG_KERNEL(int32_t);
        break;
    case SS_DT_INT64:
        ARG_KERNEL(int64_t);
        break;
    case SS_DT_UINT8:
        ARG_KERNEL(uint8_t);
        break;
    case SS_DT_INT8:
        ARG_KERNEL(int8_t);
        break;
    default:
        return ss_op_err(k, SS_ERR_INTERNAL, "unexpected type");
    }
    return NULL;
}

const ss_op_def ss_ops_reduce[] = {
    {"", "ReduceSum", 1, 12, reduce_infer_attr, reduce_run, 0},
    {"", "ReduceSum", 13, 21, reduce_infer_input, reduce_run, 0},
    {"", "ReduceMean", 1, 17, reduce_infer_attr, reduce_run, 0},
    {"", "ReduceMean", 18, 21, reduce_infer_input, reduce_run, 0},
    {"", "ReduceMax", 1, 17, reduce_infer_attr, reduce_run, 0},
    {"", "ReduceMax", 18, 21, reduce_infer_input, reduce_run, 0},
    {"", "ReduceMin", 1, 17, reduce_infer_attr, reduce_run, 0},
    {"", "ReduceMin", 18, 21, reduce_infer_input, reduce_run, 0},
    {"", "ReduceProd", 1, 17, reduce_infer_attr, reduce_run, 0},
    {"", "ReduceProd", 18, 21, reduce_infer_input, reduce_run, 0},
    {"", "ReduceL1", 1, 17, reduce_infer_attr, reduce_run, 0},
    {"", "ReduceL1", 18, 21, reduce_infer_input, reduce_run, 0},
    {"", "ReduceL2", 1, 17, reduce_infer_attr, reduce_run, 0},
    {"", "ReduceL2", 18, 21, reduce_infer_input, reduce_run, 0},
    {"", "ReduceLogSum", 1, 17, reduce_infer_attr, reduce_run, 0},
    {"", "ReduceLogSum", 18, 21, reduce_infer_input, reduce_run, 0},
    {"", "ReduceLogSumExp", 1, 17, reduce_infer_attr, reduce_run, 0},
    {"", "ReduceLogSumExp", 18, 21, reduce_infer_input, reduce_run, 0},
    {"", "ReduceSumSquare", 1, 17, reduce_infer_attr, reduce_run, 0},
    {"", "ReduceSumSquare", 18, 21, reduce_infer_input, reduce_run, 0},
    {"", "ArgMax", 1, 21, arg_infer, arg_run, 0},
    {"", "ArgMin", 1, 21, arg_infer, arg_run, 0},
    {0},
};
