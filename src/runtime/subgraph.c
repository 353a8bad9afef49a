/*
 * Subgraphs (If branches, Loop and Scan bodies): the outer-scope names a node's subgraphs
 * read, and sessions built from a subgraph.
 *
 * A subgraph may read any value of the graphs around it by name. The session treats those
 * names as extra ("implicit") inputs of the node that owns the subgraph, after its declared
 * inputs, so topological order and buffer lifetimes see them; the node's kernel hands them to
 * the subgraph's own session as graph inputs. Everything here runs at load or plan time.
 */
#include "op.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ss_name_list_free(ss_name_list *l)
{
    free(l->names);
    *l = (ss_name_list){0};
}

static bool list_has(const ss_name_list *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->names[i], name)) return true;
    return false;
}

static bool list_add(ss_name_list *l, const char *name)
{
    if (list_has(l, name)) return true;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 8;
        const char **grown = realloc(l->names, sizeof *grown * (size_t)cap);
        if (!grown) return false;
        l->names = grown;
        l->cap = cap;
    }
    l->names[l->n++] = name;
    return true;
}

static bool graph_defines(const Onnx__GraphProto *g, const char *name)
{
    for (size_t i = 0; i < g->n_initializer; i++)
        if (g->initializer[i]->name && !strcmp(g->initializer[i]->name, name)) return true;
    for (size_t i = 0; i < g->n_input; i++)
        if (g->input[i]->name && !strcmp(g->input[i]->name, name)) return true;
    for (size_t i = 0; i < g->n_node; i++)
        for (size_t j = 0; j < g->node[i]->n_output; j++)
            if (!strcmp(g->node[i]->output[j], name)) return true;
    return false;
}

static bool node_outer_names(const ss_onnx_node *nd, ss_name_list *out, int depth);

/* Names g reads but does not define, appended to out. */
static bool graph_outer_names(const Onnx__GraphProto *g, ss_name_list *out, int depth)
{
    ss_name_list used = {0};
    bool ok = depth < 32; /* deeper nesting is refused rather than recursed into */
    for (size_t i = 0; ok && i < g->n_node; i++) {
        const ss_onnx_node *nd = g->node[i];
        for (size_t j = 0; ok && j < nd->n_input; j++)
            if (nd->input[j][0]) ok = list_add(&used, nd->input[j]);
        if (ok) ok = node_outer_names(nd, &used, depth + 1);
    }
    for (size_t i = 0; ok && i < g->n_output; i++)
        if (g->output[i]->name && g->output[i]->name[0]) ok = list_add(&used, g->output[i]->name);
    for (int i = 0; ok && i < used.n; i++)
        if (!graph_defines(g, used.names[i])) ok = list_add(out, used.names[i]);
    ss_name_list_free(&used);
    return ok;
}

static bool node_outer_names(const ss_onnx_node *nd, ss_name_list *out, int depth)
{
    bool ok = true;
    for (size_t a = 0; ok && a < nd->n_attribute; a++) {
        const ss_onnx_attr *at = nd->attribute[a];
        if (at->g) ok = graph_outer_names(at->g, out, depth);
        for (size_t k = 0; ok && k < at->n_graphs; k++)
            ok = graph_outer_names(at->graphs[k], out, depth);
    }
    return ok;
}

ss_status *ss_subgraph_outer_names(const ss_onnx_node *nd, ss_name_list *out)
{
    *out = (ss_name_list){0};
    if (node_outer_names(nd, out, 0)) return NULL;
    ss_name_list_free(out);
    return ss_errf(SS_ERR_LIMIT, "node '%s' (%s): out of memory or subgraphs nested deeper than 32",
                   nd->name ? nd->name : "", nd->op_type);
}

/* The subgraph as a model of its own: its nodes and initializers, the parent's opsets, and one
 * graph input per declared input and outer name (dtype from descs, any shape: a body's declared
 * types may be left out). Packed and parsed again so the new model owns all its memory. */
/* A tensor value info named `name` of dtype dt (0: left to shape inference), any shape. */
static void tensor_info(Onnx__ValueInfoProto *vi, Onnx__TypeProto *type,
                        Onnx__TypeProto__Tensor *tt, char *name, ss_dtype dt)
{
    onnx__type_proto__tensor__init(tt);
    tt->has_elem_type = 1;
    tt->elem_type = (int32_t)dt;
    onnx__type_proto__init(type);
    type->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    type->tensor_type = tt;
    onnx__value_info_proto__init(vi);
    vi->name = name;
    vi->type = type;
}

static ss_status *subgraph_model(const ss_onnx_model *parent, const Onnx__GraphProto *g,
                                 const ss_name_list *outer, const ss_tensor *descs,
                                 const char *what, ss_onnx_model **out)
{
    int n_decl = (int)g->n_input, n = n_decl + outer->n, n_all = n + (int)g->n_output;
    Onnx__ValueInfoProto *vis = calloc((size_t)n_all + 1, sizeof *vis);
    Onnx__ValueInfoProto **vptrs = calloc((size_t)n_all + 1, sizeof *vptrs);
    Onnx__TypeProto *types = calloc((size_t)n_all + 1, sizeof *types);
    Onnx__TypeProto__Tensor *tts = calloc((size_t)n_all + 1, sizeof *tts);
    ss_status *st = NULL;
    if (!vis || !vptrs || !types || !tts) st = ss_errf(SS_ERR_NOMEM, "out of memory");
    for (int i = 0; !st && i < n; i++) {
        char *name = i < n_decl ? g->input[i]->name : (char *)outer->names[i - n_decl];
        tensor_info(&vis[i], &types[i], &tts[i], name, descs[i].dtype);
        vptrs[i] = &vis[i];
    }
    /* a body may leave its outputs untyped (ONNX allows it in subgraphs): tensors, inferred */
    for (int i = n; !st && i < n_all; i++) {
        Onnx__ValueInfoProto *o = g->output[i - n];
        vptrs[i] = o;
        if (!o->type || o->type->value_case == ONNX__TYPE_PROTO__VALUE__NOT_SET) {
            tensor_info(&vis[i], &types[i], &tts[i], o->name, SS_DT_UNDEFINED);
            vptrs[i] = &vis[i];
        }
    }
    Onnx__GraphProto graph = *g;
    graph.n_input = (size_t)n;
    graph.input = vptrs;
    if (!st) graph.output = vptrs + n;
    Onnx__OperatorSetIdProto def;
    Onnx__OperatorSetIdProto *def_ptr = &def;
    Onnx__ModelProto m;
    onnx__model_proto__init(&m);
    m.graph = &graph;
    m.has_ir_version = 1;
    m.ir_version = parent ? parent->proto->ir_version : 8;
    if (parent) {
        m.n_opset_import = parent->proto->n_opset_import;
        m.opset_import = parent->proto->opset_import;
    } else { /* infer outside planning: the default domain's opset only */
        onnx__operator_set_id_proto__init(&def);
        def.has_version = 1;
        def.version = 21;
        m.n_opset_import = 1;
        m.opset_import = &def_ptr;
    }
    void *buf = NULL;
    size_t len = st ? 0 : onnx__model_proto__get_packed_size(&m);
    if (!st && !(buf = malloc(len ? len : 1))) st = ss_errf(SS_ERR_NOMEM, "out of memory");
    if (!st) {
        onnx__model_proto__pack(&m, buf);
        st = ss_onnx_load_buffer(buf, len, what, parent ? parent->dir : NULL, out);
    }
    free(buf);
    free(vis);
    free(vptrs);
    free(types);
    free(tts);
    return st;
}

ss_status *ss_subgraph_session(ss_kctx *k, const Onnx__GraphProto *g, const char *attr,
                               const ss_name_list *outer, const ss_tensor *descs, ss_session **out)
{
    *out = NULL;
    const ss_onnx_model *parent = ss_kctx_model(k);
    char what[512];
    snprintf(what, sizeof what, "%s: %s of %s node '%s'", parent ? parent->path : "subgraph", attr,
             k->node->op_type, k->node_name);
    ss_onnx_model *m = NULL;
    ss_status *st = subgraph_model(parent, g, outer, descs, what, &m);
    if (st) return st;
    ss_session_options opt = {.coll = k->coll};
    ss_session *s = NULL;
    if ((st = ss_session_create_child(m, &opt, k->guard, &s))) return st; /* m is freed */
    /* the outer values follow the node's declared inputs (Loop, Scan, If, SequenceMap) */
    int n_decl = (int)g->n_input;
    bool *from = calloc((size_t)(n_decl + outer->n) + 1, sizeof *from);
    if (!from) st = ss_errf(SS_ERR_NOMEM, "out of memory");
    for (int i = 0; from && i < outer->n; i++)
        from[n_decl + i] = ss_kctx_from_request(k, (int)k->node->n_input + i);
    if (!st) st = ss_session_plan_values(s, descs, n_decl, from);
    free(from);
    if (st) {
        ss_session_free(s);
        return ss_status_wrap(st, "%s", what);
    }
    *out = s;
    return NULL;
}
