/*
 * The op table: every family's definitions, searched by (domain, type, opset). A model that
 * needs something missing fails at load with the op, node and opset named (see session.c).
 */
#include "op.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* One family a line below the first block, so branches that add families merge cleanly. */
// clang-format off
static const ss_op_def *const families[] = {
    ss_ops_matmul,     ss_ops_elementwise, ss_ops_logic,  ss_ops_cast,      ss_ops_shape,
    ss_ops_movement,   ss_ops_generate,    ss_ops_reduce, ss_ops_normalize, ss_ops_conv,
    ss_ops_collective, ss_ops_control,     ss_ops_resize,
    ss_ops_misc,   // Dropout CumSum Shrink ReverseSequence Det
    ss_ops_signal, // windows DFT STFT MelWeightMatrix
    ss_ops_rnn,    // RNN GRU LSTM
    ss_ops_einsum, // Einsum
    ss_ops_loop,   // Loop Scan
    ss_ops_quant,
    ss_ops_select,
    ss_ops_scatter,
    ss_ops_sample,
    ss_ops_extra,
    ss_ops_strings,
    ss_ops_train,
    ss_ops_paged_attention,
    ss_ops_contrib,           // com.microsoft Gelu family, layer norms, FusedMatMul, MatMulNBits
    ss_ops_contrib_attention, // com.microsoft Attention MultiHeadAttention RotaryEmbedding
    ss_ops_contrib_math,      // com.microsoft Inverse CDist
    ss_ops_sequence,          // Sequence* ConcatFromSequence SplitToSequence
    ss_ops_random,            // Random{Uniform,Normal}[Like] Bernoulli Multinomial
    ss_ops_qlinear,           // com.microsoft QLinear*, QGemm, NhwcMaxPool
};
// clang-format on

static bool is_default_domain(const char *d)
{
    return !d || !*d || strcmp(d, "ai.onnx") == 0;
}

static bool same_domain(const char *a, const char *b)
{
    if (is_default_domain(a)) return is_default_domain(b);
    return b && strcmp(a, b) == 0;
}

const ss_op_def *ss_op_find(const char *domain, const char *type, int64_t opset)
{
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++)
        for (const ss_op_def *d = families[f]; d->type; d++)
            if (strcmp(d->type, type) == 0 && same_domain(d->domain, domain) &&
                opset >= d->min_opset && opset <= d->max_opset)
                return d;
    return NULL;
}

bool ss_op_domain_known(const char *domain)
{
    return is_default_domain(domain) || strcmp(domain, SS_DOMAIN_COLLECTIVE) == 0 ||
           strcmp(domain, SS_DOMAIN_TRAINING) == 0 || strcmp(domain, SS_DOMAIN_KVPOOL) == 0 ||
           strcmp(domain, "com.microsoft") == 0;
}

bool ss_runtime_op_elementwise(const char *domain, const char *op_type, int64_t opset)
{
    const ss_op_def *d = ss_op_find(domain, op_type, opset);
    return d && (d->flags & SS_OPF_ELEMENTWISE);
}

ss_status *ss_op_err(const ss_kctx *k, ss_code code, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ss_errf(code, "%s node '%s': %s", k->node->op_type, k->node_name, msg);
}

ss_status *ss_op_expect_inputs(const ss_kctx *k, int min, int max)
{
    int present = 0;
    for (int i = 0; i < k->n_in; i++)
        present = k->in[i] ? i + 1 : present;
    if (k->n_in < min || present < min || k->n_in > max)
        return ss_op_err(k, SS_ERR_INVALID, "has %d inputs, expects %d to %d", k->n_in, min, max);
    for (int i = 0; i < min; i++)
        if (!k->in[i]) return ss_op_err(k, SS_ERR_INVALID, "required input %d is missing", i);
    return NULL;
}

ss_status *ss_op_expect_dtype(const ss_kctx *k, int i, const ss_dtype *allowed, int n_allowed)
{
    for (int j = 0; j < n_allowed; j++)
        if (k->in[i]->dtype == allowed[j]) return NULL;
    return ss_op_err(k, SS_ERR_UNSUPPORTED, "input %d has type %s, which this op does not support",
                     i, ss_dtype_name(k->in[i]->dtype));
}

ss_status *ss_op_axis(const ss_kctx *k, int64_t axis, int rank, int *out)
{
    int64_t a = axis < 0 ? axis + rank : axis;
    if (a < 0 || a >= (rank ? rank : 1))
        return ss_op_err(k, SS_ERR_INVALID, "axis %lld is out of range for rank %d",
                         (long long)axis, rank);
    *out = (int)a;
    return NULL;
}

void ss_op_same_shape(ss_tensor *dst, const ss_tensor *src)
{
    dst->dtype = src->dtype;
    dst->ndim = src->ndim;
    memcpy(dst->dims, src->dims, sizeof dst->dims);
}

ss_status *ss_op_broadcast(const ss_kctx *k, const ss_tensor *a, const ss_tensor *b, ss_tensor *out)
{
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t dims[SS_MAX_DIMS];
    for (int i = 0; i < nd; i++) {
        int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[128], sb[128];
            return ss_op_err(k, SS_ERR_INVALID, "shapes %s and %s do not broadcast",
                             ss_shape_str(a->ndim, a->dims, sa, sizeof sa),
                             ss_shape_str(b->ndim, b->dims, sb, sizeof sb));
        }
        dims[i] = da == 1 ? db : da;
    }
    out->ndim = nd;
    memcpy(out->dims, dims, sizeof(int64_t) * (size_t)nd);
    return NULL;
}

int ss_op_read_ints(const ss_tensor *t, int64_t *dst, int cap)
{
    int64_t n = ss_tensor_numel(t);
    if (n < 0 || n > cap || t->ndim > 1) return -1;
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == SS_DT_INT64)
            dst[i] = ((const int64_t *)t->data)[i];
        else if (t->dtype == SS_DT_INT32)
            dst[i] = ((const int32_t *)t->data)[i];
        else
            return -1;
    }
    return (int)n;
}
