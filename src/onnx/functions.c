/*
 * Model-local functions (ModelProto.functions, IR >= 8), inlined at load as onnxruntime inlines
 * them: every node that calls a function (its domain and op_type name one) becomes the function's
 * body. Formal inputs and outputs take the caller's names (a missing optional input stays
 * missing), the body's own values get the prefix "<function>.<call number>/" so two calls never
 * share one, and an attribute that refers to the caller's (ref_attr_name) takes the caller's value
 * or is left out when the caller has none. Calls inside a body are inlined in turn (nested at most
 * SS_FUNCTION_DEPTH deep: a function that calls itself is an error), and so are calls in If/Loop/
 * Scan subgraphs of the model's graph. The same walk hands the fused ops lower.c knows to it.
 *
 * The expanded graph is built from shallow copies of the body's nodes, packed into one buffer with
 * the rest of the model and unpacked again, so afterwards the proto is plain protobuf-c memory as
 * if the file had held the expanded graph (rewrite.h). The function's opsets must agree with the
 * model's; a domain only the function imports is added to the model's imports.
 */
#include "rewrite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SS_FUNCTION_DEPTH 32
/* Nodes an inlining may copy (body nodes, calls among them) and leave in the graph: past it the
 * model is refused. Every copy counts, so a few kilobytes of functions that call each other
 * eightfold cannot expand for ever; the copies live until the end (a few hundred bytes each). */
#define SS_FUNCTION_MAX_NODES (1 << 19)

static bool grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return true;
    size_t nc = *cap ? *cap * 2 : 16;
    while (nc < need)
        nc *= 2;
    void *p = realloc(*arr, nc * elem);
    if (!p) return false;
    *arr = p;
    *cap = nc;
    return true;
}

void *ss_rw_keep(ss_rewriter *in, void *p)
{
    if (!p) return NULL;
    if (!grow((void **)&in->allocs, &in->cap_allocs, in->n_allocs + 1, sizeof *in->allocs)) {
        free(p);
        return NULL;
    }
    in->allocs[in->n_allocs++] = p;
    return p;
}

static bool default_domain(const char *d)
{
    return !d || !*d || !strcmp(d, "ai.onnx");
}

static const char *domain_of(const char *d)
{
    return default_domain(d) ? "" : d;
}

/* The function a node calls, or NULL (standard ops in the default domain are never shadowed). */
static const Onnx__FunctionProto *called(const Onnx__ModelProto *mp, const Onnx__NodeProto *n)
{
    if (default_domain(n->domain) || !n->op_type) return NULL;
    for (size_t i = 0; i < mp->n_functions; i++) {
        const Onnx__FunctionProto *f = mp->functions[i];
        if (f->name && !strcmp(f->name, n->op_type) && !strcmp(domain_of(f->domain), n->domain))
            return f;
    }
    return NULL;
}

const Onnx__OperatorSetIdProto *ss_rw_import(const Onnx__ModelProto *mp, const char *d)
{
    for (size_t i = 0; i < mp->n_opset_import; i++)
        if (!strcmp(domain_of(mp->opset_import[i]->domain), domain_of(d)))
            return mp->opset_import[i];
    return NULL;
}

/* The function's imports agree with the model's; those the model lacks are added to it. */
static ss_status *merge_opsets(ss_rewriter *in, const Onnx__FunctionProto *f)
{
    Onnx__ModelProto *mp = in->mp;
    for (size_t i = 0; i < f->n_opset_import; i++) {
        Onnx__OperatorSetIdProto *o = f->opset_import[i];
        const Onnx__OperatorSetIdProto *mine = ss_rw_import(mp, o->domain);
        if (mine && mine->version != o->version)
            return ss_errf(SS_ERR_UNSUPPORTED,
                           "%s: function '%s' imports version %lld of domain '%s', the model %lld",
                           in->what, f->name, (long long)o->version, domain_of(o->domain),
                           (long long)mine->version);
        if (mine) continue;
        Onnx__OperatorSetIdProto **list =
            ss_rw_keep(in, malloc((mp->n_opset_import + 1) * sizeof *list));
        if (!list) return ss_errf(SS_ERR_NOMEM, "out of memory");
        memcpy(list, mp->opset_import, mp->n_opset_import * sizeof *list);
        list[mp->n_opset_import] = o;
        if (!in->opset0) in->opset0 = mp->opset_import, in->n_opset0 = mp->n_opset_import;
        mp->opset_import = list;
        mp->n_opset_import++;
    }
    return NULL;
}

typedef struct {
    const Onnx__FunctionProto *f;
    const Onnx__NodeProto *call;
    char *prefix; /* "<function>.<call>/", kept */
} frame;

static char no_value[] = ""; /* a formal input the caller left out */

/* The name with the call's prefix (NULL when out of memory). */
static char *prefixed(ss_rewriter *in, const frame *fr, const char *name)
{
    size_t len = strlen(fr->prefix) + strlen(name) + 1;
    char *s = ss_rw_keep(in, malloc(len));
    if (s) snprintf(s, len, "%s%s", fr->prefix, name);
    return s;
}

/* A body value's name in the caller's namespace. */
static char *rename_value(ss_rewriter *in, const frame *fr, char *name)
{
    if (!name || !*name) return name;
    for (size_t i = 0; i < fr->f->n_input; i++)
        if (!strcmp(fr->f->input[i], name))
            return i < fr->call->n_input ? fr->call->input[i] : no_value;
    for (size_t i = 0; i < fr->f->n_output; i++)
        if (!strcmp(fr->f->output[i], name) && i < fr->call->n_output && *fr->call->output[i])
            return fr->call->output[i];
    return prefixed(in, fr, name);
}

static char **rename_list(ss_rewriter *in, const frame *fr, char **names, size_t n)
{
    char **out = ss_rw_keep(in, malloc((n ? n : 1) * sizeof *out));
    for (size_t i = 0; out && i < n; i++)
        if (!(out[i] = rename_value(in, fr, names[i]))) return NULL;
    return out;
}

/* The body node's attributes: its own, or the caller's that a reference names. */
static ss_status *bind_attributes(ss_rewriter *in, const frame *fr, Onnx__NodeProto *copy)
{
    Onnx__AttributeProto **attrs = ss_rw_keep(in, malloc((copy->n_attribute + 1) * sizeof *attrs));
    if (!attrs) return ss_errf(SS_ERR_NOMEM, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < copy->n_attribute; i++) {
        Onnx__AttributeProto *a = copy->attribute[i];
        if (a->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH ||
            a->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS)
            return ss_errf(SS_ERR_UNSUPPORTED,
                           "%s: function '%s': node '%s' has a subgraph (not supported inside "
                           "functions)",
                           in->what, fr->f->name, copy->name ? copy->name : copy->op_type);
        if (!a->ref_attr_name || !*a->ref_attr_name) {
            attrs[n++] = a;
            continue;
        }
        for (size_t j = 0; j < fr->call->n_attribute; j++) {
            const Onnx__AttributeProto *v = fr->call->attribute[j];
            if (!v->name || strcmp(v->name, a->ref_attr_name)) continue;
            if (a->has_type && v->has_type && a->type != v->type)
                return ss_errf(SS_ERR_INVALID,
                               "%s: function '%s': node '%s' takes attribute '%s' from the call's "
                               "'%s', of another type (%d, not %d)",
                               in->what, fr->f->name, copy->name, a->name, v->name, (int)v->type,
                               (int)a->type);
            Onnx__AttributeProto *b = ss_rw_keep(in, malloc(sizeof *b));
            if (!b) return ss_errf(SS_ERR_NOMEM, "out of memory");
            *b = *v;
            b->name = a->name;
            attrs[n++] = b;
            break;
        }
    }
    copy->attribute = attrs;
    copy->n_attribute = n;
    return NULL;
}

ss_status *ss_rw_push(ss_rewriter *in, Onnx__NodeProto ***list, size_t *n, size_t *cap,
                      Onnx__NodeProto *node)
{
    if (!grow((void **)list, cap, *n + 1, sizeof **list))
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    (*list)[(*n)++] = node;
    return NULL;
}

/* Appends node (of the graph, or a body's renamed copy) to the list, its function's body instead
 * when it calls one. */
static ss_status *expand(ss_rewriter *in, Onnx__NodeProto *node, int depth, Onnx__NodeProto ***list,
                         size_t *n, size_t *cap)
{
    const Onnx__FunctionProto *f = called(in->mp, node);
    if (!f && ss_onnx_lowered(node)) return ss_onnx_lower(in, node, list, n, cap);
    if (!f) return ss_rw_push(in, list, n, cap, node);
    if (depth >= SS_FUNCTION_DEPTH)
        return ss_errf(SS_ERR_INVALID,
                       "%s: function '%s' calls nest more than %d deep (does it call itself?)",
                       in->what, f->name, SS_FUNCTION_DEPTH);
    if (node->n_input > f->n_input || node->n_output > f->n_output)
        return ss_errf(SS_ERR_INVALID,
                       "%s: node '%s' calls function '%s' with %zu inputs and %zu outputs; it "
                       "has %zu and %zu",
                       in->what, node->name && *node->name ? node->name : node->op_type, f->name,
                       node->n_input, node->n_output, f->n_input, f->n_output);
    ss_status *st = merge_opsets(in, f);
    if (st) return st;
    frame fr = {.f = f, .call = node};
    size_t len = strlen(f->name) + 16;
    if (!(fr.prefix = ss_rw_keep(in, malloc(len)))) return ss_errf(SS_ERR_NOMEM, "out of memory");
    snprintf(fr.prefix, len, "%s.%u/", f->name, ++in->calls);
    for (size_t i = 0; i < f->n_node; i++) {
        if (++in->total_nodes > SS_FUNCTION_MAX_NODES)
            return ss_errf(SS_ERR_LIMIT,
                           "%s: inlining the model's functions makes more than %d nodes (calls "
                           "that fan out into calls?)",
                           in->what, SS_FUNCTION_MAX_NODES);
        Onnx__NodeProto *copy = ss_rw_keep(in, malloc(sizeof *copy));
        if (!copy) return ss_errf(SS_ERR_NOMEM, "out of memory");
        *copy = *f->node[i];
        copy->input = rename_list(in, &fr, copy->input, copy->n_input);
        copy->output = rename_list(in, &fr, copy->output, copy->n_output);
        copy->name = prefixed(in, &fr, copy->name && *copy->name ? copy->name : copy->op_type);
        if (!copy->input || !copy->output || !copy->name)
            return ss_errf(SS_ERR_NOMEM, "out of memory");
        if ((st = bind_attributes(in, &fr, copy)) ||
            (st = expand(in, copy, depth + 1, list, n, cap)))
            return st;
    }
    return NULL;
}

static ss_status *inline_graph(ss_rewriter *in, Onnx__GraphProto *g);

/* Calls in the subgraphs of a graph's nodes (If branches, Loop and Scan bodies). */
static ss_status *inline_subgraphs(ss_rewriter *in, Onnx__GraphProto *g)
{
    for (size_t i = 0; i < g->n_node; i++)
        for (size_t j = 0; j < g->node[i]->n_attribute; j++) {
            Onnx__AttributeProto *a = g->node[i]->attribute[j];
            ss_status *st = a->g ? inline_graph(in, a->g) : NULL;
            for (size_t k = 0; !st && k < a->n_graphs; k++)
                st = inline_graph(in, a->graphs[k]);
            if (st) return st;
        }
    return NULL;
}

static ss_status *inline_graph(ss_rewriter *in, Onnx__GraphProto *g)
{
    ss_status *st = inline_subgraphs(in, g);
    if (st) return st;
    bool any = false;
    for (size_t i = 0; i < g->n_node && !any; i++)
        any = called(in->mp, g->node[i]) || ss_onnx_lowered(g->node[i]);
    if (!any) return NULL;
    if (!grow((void **)&in->saved, &in->cap_saved, in->n_saved + 1, sizeof *in->saved))
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    Onnx__NodeProto **list = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < g->n_node && !st; i++)
        st = expand(in, g->node[i], 0, &list, &n, &cap);
    if (!ss_rw_keep(in, list) && list) st = st ? st : ss_errf(SS_ERR_NOMEM, "out of memory");
    if (st) return st;
    in->saved[in->n_saved++] = (ss_rw_saved_graph){g, g->n_node, g->node};
    g->node = list;
    g->n_node = n;
    return NULL;
}

static void restore(ss_rewriter *in)
{
    for (size_t i = in->n_saved; i-- > 0;) {
        in->saved[i].graph->node = in->saved[i].node;
        in->saved[i].graph->n_node = in->saved[i].n_node;
    }
    if (in->opset0) in->mp->opset_import = in->opset0, in->mp->n_opset_import = in->n_opset0;
    for (size_t i = 0; i < in->n_allocs; i++)
        free(in->allocs[i]);
    free(in->allocs);
    free(in->saved);
}

ss_status *ss_onnx_rewrite(Onnx__ModelProto **proto, const char *what)
{
    Onnx__ModelProto *mp = *proto;
    if (!mp->graph) return NULL;
    for (size_t i = 0; i < mp->n_functions; i++) /* a call must name one function */
        for (size_t j = 0; j < i; j++)
            if (mp->functions[i]->name && mp->functions[j]->name &&
                !strcmp(mp->functions[i]->name, mp->functions[j]->name) &&
                !strcmp(domain_of(mp->functions[i]->domain), domain_of(mp->functions[j]->domain)))
                return ss_errf(SS_ERR_INVALID, "%s: function '%s' of domain '%s' is defined twice",
                               what, mp->functions[i]->name, domain_of(mp->functions[i]->domain));
    ss_rewriter in = {.mp = mp, .what = what};
    ss_status *st = inline_graph(&in, mp->graph);
    if (st || !in.n_saved) {
        restore(&in);
        return st;
    }
    size_t len = onnx__model_proto__get_packed_size(mp);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf) onnx__model_proto__pack(mp, buf);
    restore(&in);
    if (!buf) return ss_errf(SS_ERR_NOMEM, "out of memory packing %s's inlined graph", what);
    Onnx__ModelProto *inlined = onnx__model_proto__unpack(NULL, len, buf);
    free(buf);
    if (!inlined) return ss_errf(SS_ERR_NOMEM, "%s: the inlined graph did not unpack", what);
    onnx__model_proto__free_unpacked(mp, NULL);
    *proto = inlined;
    return NULL;
}
