/*
 * onnxruntime's fused com.microsoft ops, lowered at load into the standard ops they fuse, so a
 * model onnxruntime optimized and saved (its "extended" level: FusedConv, FusedGemm) runs, and the
 * runtime's own fusion pass fuses the pieces again (a Conv's activation as a oneDNN post-op, or
 * one pass over its output):
 *
 *   FusedConv(X, W, B?, Z?)  ->  Conv(X, W, B) [+ Z] -> activation(activation_params)
 *   FusedGemm(A, B, C?)      ->  Gemm(A, B, C) -> activation(activation_alpha, activation_beta)
 *
 * The activations are onnxruntime's fusable ones: Relu, Tanh, Sigmoid, LeakyRelu (alpha), Clip
 * (min, max: attributes before opset 11, Constant inputs from it), HardSigmoid (alpha, beta);
 * parameters a model leaves out take the standard op's defaults. New values are named after the
 * node's output ("<output>/conv", ...), new nodes after the node.
 */
#include "rewrite.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char default_domain[] = "";

bool ss_onnx_lowered(const Onnx__NodeProto *node)
{
    return node->domain && !strcmp(node->domain, "com.microsoft") && node->op_type &&
           (!strcmp(node->op_type, "FusedConv") || !strcmp(node->op_type, "FusedGemm"));
}

/* a + b, kept (NULL when out of memory). */
static char *joined(ss_rewriter *rw, const char *a, const char *b)
{
    size_t len = strlen(a) + strlen(b) + 1;
    char *s = ss_rw_keep(rw, malloc(len));
    if (s) snprintf(s, len, "%s%s", a, b);
    return s;
}

static const char *label(const Onnx__NodeProto *n)
{
    return n->name && *n->name ? n->name : n->op_type;
}

/* A new default-domain node named "<from>/<op>", with room for its inputs and outputs. */
static Onnx__NodeProto *new_node(ss_rewriter *rw, const Onnx__NodeProto *from, const char *op,
                                 size_t n_in, size_t n_out)
{
    Onnx__NodeProto *n = ss_rw_keep(rw, malloc(sizeof *n));
    if (!n) return NULL;
    onnx__node_proto__init(n);
    char *slash_op = joined(rw, "/", op);
    n->op_type = joined(rw, op, "");
    n->name = slash_op ? joined(rw, label(from), slash_op) : NULL;
    n->domain = default_domain;
    n->input = ss_rw_keep(rw, calloc(n_in + 1, sizeof *n->input));
    n->output = ss_rw_keep(rw, calloc(n_out + 1, sizeof *n->output));
    n->attribute = ss_rw_keep(rw, calloc(4, sizeof *n->attribute));
    if (!n->op_type || !n->name || !n->input || !n->output || !n->attribute) return NULL;
    n->n_input = n_in, n->n_output = n_out;
    return n;
}

static Onnx__AttributeProto *new_attr(ss_rewriter *rw, Onnx__NodeProto *n, const char *name)
{
    Onnx__AttributeProto *a = ss_rw_keep(rw, malloc(sizeof *a));
    if (!a) return NULL;
    onnx__attribute_proto__init(a);
    if (!(a->name = joined(rw, name, ""))) return NULL;
    a->has_type = 1;
    n->attribute[n->n_attribute++] = a; /* at most 2 per node, room for 4 */
    return a;
}

static bool float_attr(ss_rewriter *rw, Onnx__NodeProto *n, const char *name, float v)
{
    Onnx__AttributeProto *a = new_attr(rw, n, name);
    if (!a) return false;
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    a->has_f = 1, a->f = v;
    return true;
}

/* A Constant node whose output `out` is the float scalar v. */
static Onnx__NodeProto *scalar_constant(ss_rewriter *rw, const Onnx__NodeProto *from, char *out,
                                        float v)
{
    Onnx__NodeProto *c = new_node(rw, from, "Constant", 0, 1);
    Onnx__AttributeProto *a = c ? new_attr(rw, c, "value") : NULL;
    Onnx__TensorProto *t = a ? ss_rw_keep(rw, malloc(sizeof *t)) : NULL;
    float *data = t ? ss_rw_keep(rw, malloc(sizeof *data)) : NULL;
    if (!data) return NULL;
    onnx__tensor_proto__init(t);
    t->has_data_type = 1, t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    *data = v;
    t->n_float_data = 1, t->float_data = data;
    a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
    a->t = t;
    c->output[0] = out;
    return c;
}

typedef struct {
    ss_rewriter *rw;
    Onnx__NodeProto ***list;
    size_t *n, *cap;
} emitter;

static ss_status *emit(emitter *e, Onnx__NodeProto *node)
{
    if (!node) return ss_errf(SS_ERR_NOMEM, "out of memory");
    return ss_rw_push(e->rw, e->list, e->n, e->cap, node);
}

/* out = act(in) with its two parameters (NaN: not given, the op's default). */
static ss_status *emit_activation(emitter *e, const Onnx__NodeProto *from, const char *act,
                                  const float params[2], char *in, char *out)
{
    ss_rewriter *rw = e->rw;
    bool clip = !strcmp(act, "Clip");
    const Onnx__OperatorSetIdProto *onnx = ss_rw_import(rw->mp, "");
    bool clip_inputs = clip && (!onnx || onnx->version >= 11);
    if (strcmp(act, "Relu") && strcmp(act, "Tanh") && strcmp(act, "Sigmoid") &&
        strcmp(act, "LeakyRelu") && strcmp(act, "HardSigmoid") && !clip)
        return ss_errf(SS_ERR_UNSUPPORTED,
                       "%s: %s node '%s': activation '%s' is not one onnxruntime fuses (Relu, "
                       "Tanh, Sigmoid, LeakyRelu, Clip, HardSigmoid)",
                       rw->what, from->op_type, label(from), act);
    Onnx__NodeProto *a = new_node(rw, from, act, clip_inputs ? 3 : 1, 1);
    if (!a) return ss_errf(SS_ERR_NOMEM, "out of memory");
    a->input[0] = in, a->output[0] = out;
    bool ok = true;
#define PARAM(i, dflt) (isnan(params[i]) ? (dflt) : params[i])
    if (!strcmp(act, "LeakyRelu"))
        ok = float_attr(rw, a, "alpha", PARAM(0, 0.01f));
    else if (!strcmp(act, "HardSigmoid"))
        ok =
            float_attr(rw, a, "alpha", PARAM(0, 0.2f)) && float_attr(rw, a, "beta", PARAM(1, 0.5f));
    float lo = PARAM(0, -FLT_MAX), hi = PARAM(1, FLT_MAX);
#undef PARAM
    if (clip && !clip_inputs) ok = float_attr(rw, a, "min", lo) && float_attr(rw, a, "max", hi);
    ss_status *st = ok ? NULL : ss_errf(SS_ERR_NOMEM, "out of memory");
    if (!st && clip_inputs) {
        a->input[1] = joined(rw, out, "/min"), a->input[2] = joined(rw, out, "/max");
        if (!a->input[1] || !a->input[2]) return ss_errf(SS_ERR_NOMEM, "out of memory");
        if (!(st = emit(e, scalar_constant(rw, from, a->input[1], lo))))
            st = emit(e, scalar_constant(rw, from, a->input[2], hi));
    }
    return st ? st : emit(e, a);
}

/* The node as its standard op: the same inputs (the first n_in), attributes and name, minus the
 * activation's attributes; its output `out`. */
static Onnx__NodeProto *unfused(ss_rewriter *rw, const Onnx__NodeProto *node, const char *op,
                                size_t n_in, char *out)
{
    Onnx__NodeProto *c = ss_rw_keep(rw, malloc(sizeof *c));
    Onnx__AttributeProto **attrs =
        c ? ss_rw_keep(rw, malloc((node->n_attribute + 1) * sizeof *attrs)) : NULL;
    char **outs = attrs ? ss_rw_keep(rw, malloc(sizeof *outs)) : NULL;
    if (!outs) return NULL;
    *c = *node;
    c->op_type = joined(rw, op, "");
    c->domain = default_domain;
    c->n_input = node->n_input < n_in ? node->n_input : n_in;
    c->n_attribute = 0;
    for (size_t i = 0; i < node->n_attribute; i++) {
        const char *name = node->attribute[i]->name ? node->attribute[i]->name : "";
        if (strncmp(name, "activation", 10) && strcmp(name, "leaky_relu_alpha"))
            attrs[c->n_attribute++] = node->attribute[i];
    }
    c->attribute = attrs;
    outs[0] = out;
    c->output = outs, c->n_output = 1;
    return c->op_type ? c : NULL;
}

static const Onnx__AttributeProto *attr(const Onnx__NodeProto *n, const char *name)
{
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && !strcmp(n->attribute[i]->name, name)) return n->attribute[i];
    return NULL;
}

ss_status *ss_onnx_lower(ss_rewriter *rw, Onnx__NodeProto *node, Onnx__NodeProto ***list, size_t *n,
                         size_t *cap)
{
    emitter e = {rw, list, n, cap};
    bool conv = !strcmp(node->op_type, "FusedConv");
    if (node->n_output != 1 || !node->output[0][0])
        return ss_errf(SS_ERR_INVALID, "%s: %s node '%s' must have one output", rw->what,
                       node->op_type, label(node));
    const Onnx__AttributeProto *act = attr(node, "activation");
    const char *act_name = act && act->has_s && act->s.len ? (const char *)act->s.data : NULL;
    char act_buf[32] = "";
    if (act_name) snprintf(act_buf, sizeof act_buf, "%.*s", (int)act->s.len, act_name);
    bool has_z = conv && node->n_input > 3 && node->input[3][0];
    char *y = node->output[0];
    char *base = act_buf[0] || has_z ? joined(rw, y, conv ? "/conv" : "/gemm") : y;
    Onnx__NodeProto *core = base ? unfused(rw, node, conv ? "Conv" : "Gemm", 3, base) : NULL;
    ss_status *st = emit(&e, core);
    if (st) return st;
    if (has_z) {
        Onnx__NodeProto *add = new_node(rw, node, "Add", 2, 1);
        char *sum = act_buf[0] ? joined(rw, y, "/sum") : y;
        if (!add || !sum) return ss_errf(SS_ERR_NOMEM, "out of memory");
        add->input[0] = base, add->input[1] = node->input[3], add->output[0] = sum;
        if ((st = emit(&e, add))) return st;
        base = sum;
    }
    if (!act_buf[0]) return NULL;
    float params[2] = {NAN, NAN};
    if (conv) { /* as onnxruntime: the parameters its activation takes, all of them */
        const Onnx__AttributeProto *p = attr(node, "activation_params");
        size_t have = p ? p->n_floats : 0;
        size_t need = !strcmp(act_buf, "LeakyRelu")                                 ? 1
                      : !strcmp(act_buf, "Clip") || !strcmp(act_buf, "HardSigmoid") ? 2
                                                                                    : have;
        if (have != need)
            return ss_errf(SS_ERR_INVALID,
                           "%s: FusedConv node '%s': activation '%s' takes %zu activation_params, "
                           "the node has %zu",
                           rw->what, label(node), act_buf, need, have);
        for (size_t i = 0; i < have && i < 2; i++)
            params[i] = p->floats[i];
    } else {
        if (!strcmp(act_buf, "Clip")) /* its bounds would be inputs: onnxruntime refuses it too */
            return ss_errf(SS_ERR_UNSUPPORTED, "%s: FusedGemm node '%s': activation 'Clip'",
                           rw->what, label(node));
        const Onnx__AttributeProto *a = attr(node, "activation_alpha");
        const Onnx__AttributeProto *b = attr(node, "activation_beta");
        if (!a) a = attr(node, "leaky_relu_alpha");
        if (a && a->has_f) params[0] = a->f;
        if (b && b->has_f) params[1] = b->f;
    }
    return emit_activation(&e, node, act_buf, params, base, y);
}
