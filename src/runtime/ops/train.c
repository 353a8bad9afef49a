/*
 * The optimizer steps of the ai.onnx.preview.training domain: Adagrad and Momentum (standard and
 * nesterov), each over n tensors at once.
 *
 * Inputs are R (learning rate) and T (step count), then n tensors of each role in turn: X, G and
 * the optimizer's state (H for Adagrad, V for Momentum); outputs are the new X and the new state
 * tensors in the same order. Each element is updated in double by the spec's formulas, then
 * stored in the tensor's type (float32 or float64). run never allocates.
 *
 * Adam is left out: its node case test_adam_multiple expects epsilon = 1e-2 while its node sets
 * none (the spec's default is 1e-6), so a correct Adam fails that case.
 */
#include "common.h"

#include <math.h>
#include <string.h>

typedef enum { OPT_ADAGRAD = 0, OPT_MOMENTUM } optimizer;

typedef struct {
    optimizer kind;
    int n; /* tensors per role (X, G, state) */
    bool nesterov;
    double norm, alpha, beta, epsilon, decay;
} opt_plan;

static const char *const opt_attrs[] = {
    "alpha", "beta", "decay_factor", "epsilon", "mode", "norm_coefficient", NULL};

static ss_status *opt_read_attrs(const ss_kctx *k, opt_plan *p)
{
    const ss_onnx_node *nd = k->node;
    p->norm = ss_onnx_attr_float(nd, "norm_coefficient", 0);
    p->epsilon = ss_onnx_attr_float(nd, "epsilon", 1e-6f);
    p->decay = ss_onnx_attr_float(nd, "decay_factor", 0);
    p->alpha = ss_onnx_attr_float(nd, "alpha", 0);
    p->beta = ss_onnx_attr_float(nd, "beta", 0);
    char buf[16];
    const char *mode = ss_onnx_attr_string(nd, "mode", buf, sizeof buf);
    if (p->kind == OPT_MOMENTUM) {
        if (!mode || (strcmp(mode, "standard") != 0 && strcmp(mode, "nesterov") != 0))
            return ss_op_err(k, SS_ERR_INVALID, "attribute 'mode' must be standard or nesterov");
        p->nesterov = strcmp(mode, "nesterov") == 0;
    }
    return NULL;
}

static ss_status *opt_infer(ss_kctx *k, optimizer kind)
{
    const int roles = 3; /* X, G, state */
    ss_status *st = ss_op_check_attrs(k, opt_attrs);
    if (st) return st;
    int n = (k->n_in - 2) / roles;
    if (n < 1 || k->n_in != 2 + n * roles || k->n_out != n * (roles - 1))
        return ss_op_err(k, SS_ERR_INVALID, "expects 2 + %d*n inputs and %d*n outputs", roles,
                         roles - 1);
    for (int i = 0; i < k->n_in; i++)
        if (!k->in[i]) return ss_op_err(k, SS_ERR_INVALID, "input %d is missing", i);
    if (ss_tensor_numel(k->in[0]) != 1 || ss_tensor_numel(k->in[1]) != 1)
        return ss_op_err(k, SS_ERR_INVALID, "R and T must be scalars");
    opt_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    *p = (opt_plan){.kind = kind, .n = n};
    if ((st = opt_read_attrs(k, p))) return st;
    for (int t = 0; t < n; t++) {
        const ss_tensor *x = k->in[2 + t];
        if ((st = ss_op_expect_float(k, 2 + t))) return st;
        for (int r = 1; r < roles; r++) {
            const ss_tensor *o = k->in[2 + r * n + t];
            if (o->dtype != x->dtype || !ss_shape_equal(o->ndim, o->dims, x->ndim, x->dims))
                return ss_op_err(k, SS_ERR_INVALID, "input %d differs from X %d in type or shape",
                                 2 + r * n + t, t);
        }
        for (int r = 0; r < roles - 1; r++)
            if (k->out[r * n + t]) ss_op_same_shape(k->out[r * n + t], x);
    }
    return NULL;
}

static ss_status *adagrad_infer(ss_kctx *k)
{
    return opt_infer(k, OPT_ADAGRAD);
}
static ss_status *momentum_infer(ss_kctx *k)
{
    return opt_infer(k, OPT_MOMENTUM);
}

/* One element: x, g and the state *s in; the new x and state out. */
static double opt_step(const opt_plan *p, double r, double t, double x, double g, double *s)
{
    double gr = p->norm * x + g;
    if (p->kind == OPT_ADAGRAD) {
        *s += gr * gr;
        return x - r / (1 + t * p->decay) * gr / (sqrt(*s) + p->epsilon);
    }
    *s = p->alpha * *s + (t > 0 ? p->beta : 1) * gr;
    return x - r * (p->nesterov ? gr + p->alpha * *s : *s);
}

static ss_status *opt_run(ss_kctx *k)
{
    const opt_plan *p = k->state;
    double r = ss_op_elem_f64(k->in[0], 0), t = ss_op_elem_f64(k->in[1], 0);
    int n = p->n;
    for (int ti = 0; ti < n; ti++) {
        const ss_tensor *x = k->in[2 + ti], *g = k->in[2 + n + ti], *state = k->in[2 + 2 * n + ti];
        int64_t m = ss_tensor_numel(x);
        for (int64_t e = 0; e < m; e++) {
            double s = ss_op_elem_f64(state, e);
            double xn = opt_step(p, r, t, ss_op_elem_f64(x, e), ss_op_elem_f64(g, e), &s);
            if (k->out[ti]) ss_op_store_f64(k->out[ti]->data, e, x->dtype, xn);
            if (k->out[n + ti]) ss_op_store_f64(k->out[n + ti]->data, e, x->dtype, s);
        }
    }
    return NULL;
}

const ss_op_def ss_ops_train[] = {
    {SS_DOMAIN_TRAINING, "Adagrad", 1, 1, adagrad_infer, opt_run, 0, NULL},
    {SS_DOMAIN_TRAINING, "Momentum", 1, 1, momentum_infer, opt_run, 0, NULL},
    {NULL, NULL, 0, 0, NULL, NULL, 0, NULL},
};
