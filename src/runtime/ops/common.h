/*
 * Helpers shared by the op families in ops/ (internal to the runtime).
 *
 * infer side: attribute whitelists, the float-only dtype check, axis normalisation from an
 * attribute, the [outer, n, inner] split around an axis, per-plan state (one zeroed block, see
 * op.h) and plan-time values of integer inputs. run side: reading one element of any numeric
 * dtype, filling a buffer with one value, and the strided view copy that serves Transpose, Slice,
 * Tile, DepthToSpace/SpaceToDepth and Expand. Nothing here allocates except ss_op_state_alloc,
 * which is for infer only.
 */
#ifndef SS_RUNTIME_OPS_COMMON_H
#define SS_RUNTIME_OPS_COMMON_H

#include "../op.h"

#include <string.h>

/* ------------------------------------------------------------------ infer helpers */

/* Fails with SS_ERR_UNSUPPORTED naming the first attribute of the node that is not in `known`
 * (a NULL-terminated list). */
ss_status *ss_op_check_attrs(const ss_kctx *k, const char *const *known);

/* Input i must be float32 or float64 (the kernels of conv.c and normalize.c). */
ss_status *ss_op_expect_float(const ss_kctx *k, int i);

/* Normalises integer attribute `name` (default `dflt`) as an axis of a rank-`rank` tensor. */
ss_status *ss_op_attr_axis(const ss_kctx *k, const char *name, int64_t dflt, int rank, int *axis);

/* Product of dims[from..to). */
int64_t ss_op_dims_prod(const int64_t *dims, int from, int to);

/* The [outer, n, inner] view of x around `axis` (x->ndim >= 1). */
void ss_op_split_axis(const ss_tensor *x, int axis, int64_t *outer, int64_t *n, int64_t *inner);

/* Row-major element strides of a tensor with the given dims. */
void ss_op_contiguous_strides(int nd, const int64_t *dims, int64_t *strides);

/* Per-plan state: one zeroed block of `size` bytes stored in k->state, which the runtime frees
 * with a single free(). Variable-size scratch goes into the same block, after the struct.
 * NULL when out of memory (return ss_op_oom()). */
void *ss_op_state_alloc(ss_kctx *k, size_t size);
ss_status *ss_op_oom(void);

/* The plan-time value of input i. A value only known at run time fails with SS_ERR_UNSUPPORTED
 * "data-dependent output shape (input '<what>' ...)". */
ss_status *ss_op_plan_value(ss_kctx *k, int i, const char *what, const ss_tensor **out);

/* The plan-time value of an int32/int64 0-D or 1-D input i, at most `cap` values, as int64s;
 * *n = -1 (and no error) when the input is absent. Errors as ss_op_plan_value, or INVALID for a
 * wrong dtype, rank or count. */
ss_status *ss_op_plan_ints(ss_kctx *k, int i, const char *what, int64_t *dst, int cap, int *n);

/* ------------------------------------------------------------------ elements */

/* double -> int64 without undefined behaviour: NaN -> 0, out of range saturates. */
static inline int64_t ss_op_sat_i64(double x)
{
    return x != x ? 0 : x >= 0x1p63 ? INT64_MAX : x <= -0x1p63 ? INT64_MIN : (int64_t)x;
}

/* Element i of any numeric or bool tensor as a double (0 for other dtypes). Reads through
 * memcpy: initializer data may be unaligned. */
double ss_op_elem_f64(const ss_tensor *t, int64_t i);

/* Element i of a numeric tensor as int64: exact for the integer types (uint64 above INT64_MAX
 * saturates), float types saturate. Inline: Gather calls it per index. */
static inline int64_t ss_op_elem_i64(const ss_tensor *t, int64_t i)
{
#define SS_OP_LOAD_(T)                                                                             \
    do {                                                                                           \
        T v_;                                                                                      \
        memcpy(&v_, (const char *)t->data + i * (int64_t)sizeof v_, sizeof v_);                    \
        return v_;                                                                                 \
    } while (0)
    switch (t->dtype) {
    case SS_DT_INT64:
        SS_OP_LOAD_(int64_t);
    case SS_DT_INT32:
        SS_OP_LOAD_(int32_t);
    case SS_DT_INT16:
        SS_OP_LOAD_(int16_t);
    case SS_DT_INT8:
        SS_OP_LOAD_(int8_t);
    case SS_DT_UINT8:
    case SS_DT_BOOL:
        SS_OP_LOAD_(uint8_t);
    case SS_DT_UINT16:
        SS_OP_LOAD_(uint16_t);
    case SS_DT_UINT32:
        SS_OP_LOAD_(uint32_t);
    case SS_DT_UINT64: {
        uint64_t v;
        memcpy(&v, (const char *)t->data + i * 8, 8);
        return v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
    }
    default:
        return ss_op_sat_i64(ss_op_elem_f64(t, i));
    }
#undef SS_OP_LOAD_
}

/* dst[i] = v converted to dt: integers truncate toward zero and saturate (NaN -> 0), bool is
 * v != 0; no undefined behaviour on out-of-range values. */
void ss_op_store_f64(void *dst, int64_t i, ss_dtype dt, double v);

/* n copies of the es-byte `value` into dst (nothing for n <= 0: an empty output may have no
 * buffer at all). */
void ss_op_fill(void *dst, const void *value, int64_t n, size_t es);

/* Runs BODY(float) or BODY(double) for a float32/float64 dtype (the kernels of conv.c and
 * normalize.c are macros over the element type). */
#define SS_OP_FLOAT_DISPATCH(DT, BODY)                                                             \
    do {                                                                                           \
        if ((DT) == SS_DT_FLOAT32)                                                                 \
            BODY(float);                                                                           \
        else                                                                                       \
            BODY(double);                                                                          \
    } while (0)

/* ------------------------------------------------------------------ strided views
 *
 * A view is output dims plus a signed source stride (in elements) per output dim and a start
 * offset: a transpose, a slice, a tile (repeat dims interleaved with data dims, hence twice the
 * rank) or a broadcast (stride 0). ss_view_simplify drops size-1 dims and merges runs that walk
 * the source contiguously, so that an output row is one memcpy or fill where the layout allows;
 * a view whose source-contiguous dim is the second-to-last output dim (2-D transposes) is copied
 * in cache-sized tiles. */
#define SS_VIEW_MAX (2 * SS_MAX_DIMS)

typedef struct {
    int nd;
    int64_t dims[SS_VIEW_MAX];
    int64_t stride[SS_VIEW_MAX]; /* source stride in elements per output dim; 0 or negative ok */
    int64_t offset;              /* source element of output element 0 */
    int64_t numel;               /* set by ss_view_simplify */
    int parts; /* ss_view_run: split over this many parts of the pool (<= 1: not) */
} ss_view;

void ss_view_simplify(ss_view *v);

/* The view of x broadcast (numpy-style, trailing dims aligned) to an nd-dim output. */
void ss_view_broadcast(ss_view *v, const ss_tensor *x, int nd, const int64_t *dims);

/* Copies a simplified view of src (es-byte elements) into contiguous dst. */
void ss_view_copy(const ss_view *v, size_t es, const void *src, void *dst);

/* run for ops whose state is a simplified ss_view of in[0]. */
ss_status *ss_view_run(ss_kctx *k);

#endif

/* float16, bfloat16 and float64 tensors through a float32 kernel (ops with no native kernel for
 * them): infer plans the float32 kernel on float32 descriptions of those tensors and adds their
 * float32 copies to the scratch, after the kernel's own; run converts the inputs into the copies,
 * runs the kernel on them and rounds its outputs back. The kernel's infer sees no input values
 * through the descriptions: ss_kctx_value() still returns the stored (unconverted) tensor. */
bool ss_op_needs_f32(ss_dtype dt);
size_t ss_op_f32_floats(const ss_kctx *k);
ss_status *ss_op_infer_as_f32(ss_kctx *k, ss_status *(*infer)(ss_kctx *));
ss_status *ss_op_run_as_f32(ss_kctx *k, ss_status *(*run)(ss_kctx *));
/* A float16, bfloat16 or float64 tensor's elements as float32 into dst. */
void ss_op_load_f32(const ss_tensor *t, float *dst);
