/*
 * Control flow: If.
 *
 * Each branch is a session of its own (subgraph.c), built and planned when the If node is
 * planned, with the outer-scope values it reads as its graph inputs. A condition known at plan
 * time (a constant, or computed from shapes only: exporters branch on a dim) picks the branch
 * there: only that branch is planned and run, and the other may even be invalid for these
 * shapes. Otherwise both branches are planned and, when they agree on their outputs' types and
 * shapes, run reads the condition and runs one. When they do not (or one cannot be planned for
 * these shapes: silero VAD's 8 kHz branch on a 16 kHz chunk), the condition's value is taken at
 * plan time, from the graph inputs it is computed from or from the last run, and only that branch
 * is planned; the plan is made again when the value changes. Running a planned branch allocates
 * nothing; its outputs are copied into the If's outputs.
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    ss_session *branch[2]; /* [0] else_branch, [1] then_branch */
    int taken;             /* branch decided at plan time, or -1 */
    bool by_value;         /* taken was decided from a value that may change between runs */
    int n_outer;
    ss_tensor *outer; /* the branches' inputs: refreshed from k->in on every run */
} if_plan;

static const char *const branch_attr[2] = {"else_branch", "then_branch"};
static const char *const if_attrs[] = {"then_branch", "else_branch", NULL};

static void if_release(void *state)
{
    if_plan *p = state;
    ss_session_free(p->branch[0]);
    ss_session_free(p->branch[1]);
}

/* The If's output j as branch b plans it. */
static ss_status *branch_output(ss_kctx *k, const if_plan *p, int b, int j, ss_tensor *desc)
{
    const ss_session *s = p->branch[b];
    if (ss_session_num_outputs(s) != k->n_out)
        return ss_op_err(k, SS_ERR_INVALID, "%s has %d outputs, the node %d", branch_attr[b],
                         ss_session_num_outputs(s), k->n_out);
    if (!ss_session_value_desc(s, ss_session_output(s, j)->name, desc))
        return ss_op_err(k, SS_ERR_INVALID, "%s output %d has no type", branch_attr[b], j);
    return NULL;
}

static ss_status *set_outputs(ss_kctx *k, const if_plan *p)
{
    for (int j = 0; j < k->n_out; j++) {
        ss_tensor a, b;
        int first = p->taken >= 0 ? p->taken : 1;
        ss_status *st = branch_output(k, p, first, j, &a);
        if (!st && p->taken < 0) st = branch_output(k, p, 0, j, &b);
        if (st) return st;
        if (p->taken < 0 &&
            (a.dtype != b.dtype || !ss_shape_equal(a.ndim, a.dims, b.ndim, b.dims))) {
            char sa[128], sb[128];
            return ss_op_err(k, SS_ERR_UNSUPPORTED,
                             "output %d is %s %s from then_branch but %s %s from else_branch: a "
                             "condition known only at run time needs branches of one shape",
                             j, ss_dtype_name(a.dtype), ss_shape_str(a.ndim, a.dims, sa, sizeof sa),
                             ss_dtype_name(b.dtype), ss_shape_str(b.ndim, b.dims, sb, sizeof sb));
        }
        if (!k->out[j]) continue;
        k->out[j]->dtype = a.dtype;
        k->out[j]->ndim = a.ndim;
        memcpy(k->out[j]->dims, a.dims, sizeof a.dims);
    }
    return NULL;
}

/* Plans the branch decided at plan time, or both, and sets the If's outputs from them. */
static ss_status *plan_branches(ss_kctx *k, if_plan *p, const ss_name_list *outer)
{
    ss_status *st = NULL;
    for (int b = 1; !st && b >= 0; b--) {
        if (p->taken >= 0 && p->taken != b) continue;
        const ss_onnx_attr *a = ss_onnx_attr_find(k->node, branch_attr[b]);
        if (!a || !a->g)
            st = ss_op_err(k, SS_ERR_INVALID, "attribute '%s' (a graph) is required",
                           branch_attr[b]);
        else
            st = ss_subgraph_session(k, a->g, branch_attr[b], outer, p->outer, &p->branch[b]);
    }
    return st ? st : set_outputs(k, p);
}

/* Both branches could not be planned for these shapes (failed is why): a model may branch on
 * an input's value to pick the branch its shapes fit (silero VAD on the sample rate), and
 * onnxruntime runs only the branch taken. The condition is then computed at plan time from the
 * graph inputs it depends on (the plan is made again when their values change), or from the
 * value the last run computed (the planner stops here until a run has one): only that branch
 * is planned. */
static ss_status *if_decide_by_value(ss_kctx *k, if_plan *p, const ss_name_list *outer,
                                     ss_status *failed)
{
    const ss_tensor *cv = ss_kctx_value_needed(k, 0);
    if (!cv || !cv->data) {
        ss_status *st = ss_op_err(k, SS_ERR_UNSUPPORTED,
                                  "the condition is known only at run time and the branches do "
                                  "not both plan: %s",
                                  failed->msg);
        ss_status_free(failed);
        return st;
    }
    ss_status_free(failed);
    for (int b = 0; b < 2; b++) {
        ss_session_free(p->branch[b]);
        p->branch[b] = NULL;
    }
    p->taken = *(const unsigned char *)cv->data != 0;
    p->by_value = true;
    return plan_branches(k, p, outer);
}

static ss_status *if_infer(ss_kctx *k)
{
    ss_status *st = ss_op_check_attrs(k, if_attrs);
    if (st) return st;
    for (int b = 0; b < 2; b++) {
        const ss_onnx_attr *a = ss_onnx_attr_find(k->node, branch_attr[b]);
        if (a && a->g && a->g->n_input)
            return ss_op_err(k, SS_ERR_INVALID, "%s declares %zu inputs, expects none",
                             branch_attr[b], a->g->n_input);
    }
    const ss_tensor *cond = k->node->n_input == 1 ? k->in[0] : NULL;
    if (!cond) return ss_op_err(k, SS_ERR_INVALID, "expects one input, the condition");
    if (cond->dtype != SS_DT_BOOL || ss_tensor_numel(cond) != 1)
        return ss_op_err(k, SS_ERR_INVALID, "the condition must be one bool element");
    ss_name_list outer;
    if ((st = ss_subgraph_outer_names(k->node, &outer))) return st;
    int n_outer = k->n_in - 1;
    if (outer.n != n_outer) {
        ss_name_list_free(&outer);
        return ss_op_err(k, SS_ERR_INTERNAL, "%d outer names but %d implicit inputs", outer.n,
                         n_outer);
    }
    if_plan *p = ss_op_state_alloc(k, sizeof *p + sizeof(ss_tensor) * (size_t)(n_outer + 1));
    if (!p) {
        ss_name_list_free(&outer);
        return ss_op_oom();
    }
    p->n_outer = n_outer;
    p->outer = (ss_tensor *)(p + 1);
    for (int i = 0; i < n_outer; i++) {
        p->outer[i] = *k->in[1 + i]; /* data stays set only for values known at plan time */
        p->outer[i].storage = SS_STORE_BORROWED;
    }
    p->taken = cond->data ? *(const unsigned char *)cond->data != 0 : -1;
    st = plan_branches(k, p, &outer);
    if (st && p->taken < 0) st = if_decide_by_value(k, p, &outer, st);
    ss_name_list_free(&outer);
    return st;
}

static ss_status *if_run(ss_kctx *k)
{
    if_plan *p = k->state;
    int cond = *(const unsigned char *)k->in[0]->data != 0;
    int b = p->taken >= 0 ? p->taken : cond;
    if (p->by_value && b != cond) /* the planner re-plans when the value changes */
        return ss_op_err(k, SS_ERR_INTERNAL, "the condition changed after the branch was planned");
    for (int i = 0; i < p->n_outer; i++) {
        p->outer[i].data = k->in[1 + i]->data;
        p->outer[i].nbytes = k->in[1 + i]->nbytes;
    }
    const ss_tensor *outs = NULL;
    ss_status *st = ss_session_run(p->branch[b], p->outer, p->n_outer, &outs);
    if (st) return ss_status_wrap(st, "If node '%s', %s", k->node_name, branch_attr[b]);
    for (int j = 0; j < k->n_out; j++)
        if (k->out[j] && outs[j].nbytes) memcpy(k->out[j]->data, outs[j].data, outs[j].nbytes);
    return NULL;
}

const ss_op_def ss_ops_control[] = {
    {"", "If", 1, 21, if_infer, if_run, 0, if_release},
    {0},
};
