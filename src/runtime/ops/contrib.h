/*
 * Shared by the com.microsoft op files (contrib.c, contrib_attention.c): the domain name and the
 * float16/bfloat16/float64 wrapper. onnxruntime's contrib kernels are float32 (float16 on GPUs);
 * here every kernel is float32 and other float types go through converted copies (common.h:
 * ss_op_infer_as_f32), chosen by the type of input 0.
 */
#ifndef SS_RUNTIME_OPS_CONTRIB_H
#define SS_RUNTIME_OPS_CONTRIB_H

#include "common.h"

#define SS_DOMAIN_MS "com.microsoft"

/* NAME_infer / NAME_run from NAME_infer_f32 / NAME_run_f32. */
#define SS_CONTRIB_F32(NAME)                                                                       \
    static ss_status *NAME##_infer(ss_kctx *k)                                                     \
    {                                                                                              \
        if (k->n_in > 0 && k->in[0] && ss_op_needs_f32(k->in[0]->dtype))                           \
            return ss_op_infer_as_f32(k, NAME##_infer_f32);                                        \
        return NAME##_infer_f32(k);                                                                \
    }                                                                                              \
    static ss_status *NAME##_run(ss_kctx *k)                                                       \
    {                                                                                              \
        if (ss_op_needs_f32(k->in[0]->dtype)) return ss_op_run_as_f32(k, NAME##_run_f32);          \
        return NAME##_run_f32(k);                                                                  \
    }

/* Input i, or NULL when absent (optional inputs may be missing or empty-named). */
static inline const ss_tensor *ss_contrib_in(const ss_kctx *k, int i)
{
    return i < k->n_in ? k->in[i] : NULL;
}

/* Output j, or NULL when not asked for. */
static inline ss_tensor *ss_contrib_out(const ss_kctx *k, int j)
{
    return j < k->n_out ? k->out[j] : NULL;
}

/* Every present input among the first n must be float32 (after the wrapper's conversion). */
ss_status *ss_contrib_expect_f32(const ss_kctx *k, int n);

#endif
