/*
 * Shared machinery of the elementwise families (elementwise.c, logic.c; others may reuse it):
 * numpy multidirectional broadcasting planned once in infer, and a driver that calls a
 * contiguous row kernel per output row at run time.
 *
 * Planning collapses the output shape: size-1 dims are dropped and neighbouring dims are merged
 * whenever every operand either has both or broadcasts both. What remains is usually one dim
 * (same shapes, scalar operand) or two (bias along the last dim, per-row scalar). Along the
 * innermost remaining dim every operand is either contiguous (stride 1) or a repeated scalar
 * (stride 0); the row kernel gets that as a bit mask (`mode`: bit i set = operand i is a vector),
 * so it can run a plain unit-stride loop that the compiler vectorizes.
 *
 * Half-precision operands (float16, bfloat16) use the float32 kernel: the driver converts rows
 * in chunks of SS_EW_CHUNK elements through stack buffers and converts the result back. Nothing
 * here allocates at run time.
 */
#ifndef SS_RUNTIME_OPS_BROADCAST_H
#define SS_RUNTIME_OPS_BROADCAST_H

#include "common.h"
#include "isa.h"

#define SS_BC_MAX 3     /* operands of one elementwise call (Where has three) */
#define SS_EW_CHUNK 256 /* elements converted per step for float16/bfloat16 operands */

/* Per-call constants of a kernel (LeakyRelu's alpha, Clip's bounds...). */
typedef struct {
    double f[4];
    int64_t i[2];
    uint64_t u[2];
} ss_ew_params;

/* A row kernel: out[j] = f(in[0][j or 0], in[1][j or 0], ...) for j < n. Bit i of `mode` says
 * operand i advances (vector) or stays at element 0 (scalar). Inputs never alias the output. */
typedef void (*ss_ew_fn)(const void *const *in, void *out, int64_t n, unsigned mode,
                         const ss_ew_params *prm);

typedef struct {
    /* collapsed broadcast layout */
    int n_in, ndim;
    int64_t dims[SS_MAX_DIMS];
    int64_t stride[SS_BC_MAX][SS_MAX_DIMS]; /* in elements; 0 = broadcast */
    int64_t numel, inner;
    unsigned mode;
    /* the kernel and how operands are stored */
    ss_ew_fn fn;
    ss_ew_params prm;
    ss_dtype in_dt[SS_BC_MAX], out_dt;
    size_t in_es[SS_BC_MAX], out_es;
    unsigned cvt_in; /* bit i: operand i is float16/bfloat16, converted to float32 for fn */
    bool cvt_out;    /* the output is float16/bfloat16, fn writes float32 */
    int threads;     /* parts of the worker pool a large run is split into (1: none) */
} ss_ew_plan;

/* Below this many output elements a plan runs on one thread: waking a worker costs more. */
#define SS_EW_PAR_MIN_ELEMS (1 << 16)

/* Parts of the worker pool a memory-bound op over `elems` elements is split into (reserved now,
 * at plan time): 1 below SS_EW_PAR_MIN_ELEMS or on one thread. Row-parallel ops (Softmax,
 * LayerNormalization, Transpose, onednn.c's relayouts) give part i of n the i-th of n equal runs
 * of rows, through ss_pool_run_split. */
int ss_op_par_parts(const ss_kctx *k, int64_t elems);

/* Output shape of numpy broadcasting over n shapes; the error names the node and shapes. */
ss_status *ss_bcast_shape(const ss_kctx *k, int n, const ss_tensor *const *ins, ss_tensor *out);

/* Plan n operands (shapes and dtypes from ins[], which must broadcast to out_dims) for kernel fn
 * writing out_dt. With `halves`, float16/bfloat16 operands and outputs go through float32. */
void ss_ew_plan_init(ss_ew_plan *p, int n, const ss_tensor *const *ins, int out_ndim,
                     const int64_t *out_dims, ss_ew_fn fn, ss_dtype out_dt, bool halves);

/* ss_ew_plan_init into a new k->state (one block, see op.h), with out_shape's dims as the
 * output's; *out (if not NULL) gets the plan for setting parameters. A large plan is split over
 * the session's threads (the worker pool of gemm_kernel.h, reserved here). */
ss_status *ss_ew_plan_state(ss_kctx *k, int n, const ss_tensor *const *ins,
                            const ss_tensor *out_shape, ss_ew_fn fn, ss_dtype out_dt, bool halves,
                            ss_ew_plan **out);

/* Run a plan: in[i] are the operands' data, out the output's. */
void ss_ew_plan_run(const ss_ew_plan *p, const void *const *in, void *out);

/* How many plan runs were split over threads (tests check the path was taken). */
unsigned long ss_ew_parallel_runs(void);

/* run of an op whose state is an ss_ew_plan over its first n_in inputs. */
ss_status *ss_ew_run(ss_kctx *k);

/* float16/bfloat16 <-> float32 for n elements (dt must be one of the two). */
void ss_ew_half_to_f32(ss_dtype dt, const void *src, float *dst, int64_t n);
void ss_ew_f32_to_half(ss_dtype dt, const float *src, void *dst, int64_t n);
static inline bool ss_ew_is_half(ss_dtype dt)
{
    return dt == SS_DT_FLOAT16 || dt == SS_DT_BFLOAT16;
}

/* Numpy-style broadcasting for opsets before 7 (Add-6, Equal-1, ...): with attribute
 * broadcast=1, B aligns with A at `axis` (default: trailing); without it the shapes must match.
 * Writes B's effective shape into *b_out (data pointer copied). */
ss_status *ss_ew_legacy_operand(const ss_kctx *k, const ss_tensor *a, const ss_tensor *b,
                                ss_tensor *b_out);

/* ---------------------------------------------------------------- kernel templates
 *
 * Every kernel is compiled for AVX-512, AVX2 and the x86-64 baseline and dispatched at run time
 * (isa.h). Its parameters are copied to a local first: a parameter read through the pointer
 * inside the loop (LeakyRelu's alpha, Clip's bounds) kept the loop scalar and branching,
 * converting the parameter per element. */
#define SS_EW_PARAMS                                                                               \
    (const void *const *in_, void *out_, int64_t n, unsigned mode, const ss_ew_params *prm_)
#define SS_EW_ARGS (in_, out_, n, mode, prm_)
#define SS_EW_LOCAL_PARAMS                                                                         \
    const ss_ew_params prm_copy_ = *prm_;                                                          \
    const ss_ew_params *const prm = &prm_copy_;                                                    \
    (void)prm;

/* BINARY_KERNEL(name, TA, TB, TY, expr): expr computes the result from `a` (TA) and `b` (TB);
 * it may read `prm`. The four stride cases are separate loops so each is a unit-stride loop. */
#define SS_EW_BINARY_KERNEL(NAME, TA, TB, TY, EXPR)                                                \
    SS_ISA_INLINE void NAME##_body SS_EW_PARAMS                                                    \
    {                                                                                              \
        const TA *restrict A_ = in_[0];                                                            \
        const TB *restrict B_ = in_[1];                                                            \
        TY *restrict Y_ = out_;                                                                    \
        SS_EW_LOCAL_PARAMS                                                                         \
        switch (mode & 3u) {                                                                       \
        case 3:                                                                                    \
            for (int64_t i = 0; i < n; i++) {                                                      \
                const TA a = A_[i];                                                                \
                const TB b = B_[i];                                                                \
                Y_[i] = (TY)(EXPR);                                                                \
            }                                                                                      \
            break;                                                                                 \
        case 1: {                                                                                  \
            const TB b = B_[0];                                                                    \
            for (int64_t i = 0; i < n; i++) {                                                      \
                const TA a = A_[i];                                                                \
                Y_[i] = (TY)(EXPR);                                                                \
            }                                                                                      \
        } break;                                                                                   \
        case 2: {                                                                                  \
            const TA a = A_[0];                                                                    \
            for (int64_t i = 0; i < n; i++) {                                                      \
                const TB b = B_[i];                                                                \
                Y_[i] = (TY)(EXPR);                                                                \
            }                                                                                      \
        } break;                                                                                   \
        default: {                                                                                 \
            const TA a = A_[0];                                                                    \
            const TB b = B_[0];                                                                    \
            const TY y = (TY)(EXPR);                                                               \
            for (int64_t i = 0; i < n; i++)                                                        \
                Y_[i] = y;                                                                         \
        } break;                                                                                   \
        }                                                                                          \
    }                                                                                              \
    SS_ISA_VARIANTS(void, NAME, SS_EW_PARAMS, SS_EW_ARGS)

/* UNARY_KERNEL(name, TX, TY, expr): expr computes the result from `x`; it may read `prm`. */
#define SS_EW_UNARY_KERNEL(NAME, TX, TY, EXPR)                                                     \
    SS_ISA_INLINE void NAME##_body SS_EW_PARAMS                                                    \
    {                                                                                              \
        const TX *restrict X_ = in_[0];                                                            \
        TY *restrict Y_ = out_;                                                                    \
        SS_EW_LOCAL_PARAMS                                                                         \
        if (mode & 1u) {                                                                           \
            for (int64_t i = 0; i < n; i++) {                                                      \
                const TX x = X_[i];                                                                \
                Y_[i] = (TY)(EXPR);                                                                \
            }                                                                                      \
        } else {                                                                                   \
            const TX x = X_[0];                                                                    \
            const TY y = (TY)(EXPR);                                                               \
            for (int64_t i = 0; i < n; i++)                                                        \
                Y_[i] = y;                                                                         \
        }                                                                                          \
    }                                                                                              \
    SS_ISA_VARIANTS(void, NAME, SS_EW_PARAMS, SS_EW_ARGS)

/* Type lists: X(suffix, C type, dtype, wrap type, arg). The wrap type is the unsigned type
 * integer arithmetic runs in, so that overflow wraps instead of being undefined; `arg` is passed
 * through (an op name for SS_EW_TAB_ENTRY). */
/* clang-format off */
#define SS_EW_FLOATS(X, A)                                                                         \
    X(f32, float, SS_DT_FLOAT32, float, A)                                                         \
    X(f64, double, SS_DT_FLOAT64, double, A)
#define SS_EW_SINTS(X, A)                                                                          \
    X(i8, int8_t, SS_DT_INT8, uint32_t, A)                                                         \
    X(i16, int16_t, SS_DT_INT16, uint32_t, A)                                                      \
    X(i32, int32_t, SS_DT_INT32, uint32_t, A)                                                      \
    X(i64, int64_t, SS_DT_INT64, uint64_t, A)
#define SS_EW_UINTS(X, A)                                                                          \
    X(u8, uint8_t, SS_DT_UINT8, uint32_t, A)                                                       \
    X(u16, uint16_t, SS_DT_UINT16, uint32_t, A)                                                    \
    X(u32, uint32_t, SS_DT_UINT32, uint32_t, A)                                                    \
    X(u64, uint64_t, SS_DT_UINT64, uint64_t, A)
/* clang-format on */
#define SS_EW_INTS(X, A) SS_EW_SINTS(X, A) SS_EW_UINTS(X, A)
#define SS_EW_NUMERIC(X, A) SS_EW_FLOATS(X, A) SS_EW_INTS(X, A)

/* Kernel tables are indexed by dtype: SS_EW_NUMERIC(SS_EW_TAB_ENTRY, add) lists add_f32... */
#define SS_EW_NDT 17
#define SS_EW_TAB_ENTRY(SFX, T, DT, W, OP) [DT] = OP##_##SFX,

#endif
