/*
 * Which ops of a model this runtime cannot run, all named in one error.
 *
 * A user porting a model wants the whole list at once (If, Resize and LSTM, not If today and
 * Resize after the next build), so load walks every node, subgraphs of If/Loop/Scan included,
 * before it fails. Each missing (domain, op, opset) is named once with its first node and how
 * many other nodes use it.
 */
#include "op.h"

#include <stdio.h>
#include <string.h>

#define MAX_MISSING 64

typedef struct {
    const char *domain, *type;
    int64_t opset;
    char node[96];
    char where[160]; /* "" or " in body of 'loop'" */
    int more;
} missing_op;

typedef struct {
    int n, dropped;
    missing_op ops[MAX_MISSING];
} missing_list;

static const char *domain_name(const char *d)
{
    return d && d[0] ? d : "ai.onnx";
}

static void note(missing_list *l, const ss_onnx_node *nd, int64_t opset, const char *where,
                 int index)
{
    const char *dom = domain_name(nd->domain);
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->ops[i].type, nd->op_type) && !strcmp(l->ops[i].domain, dom)) {
            l->ops[i].more++;
            return;
        }
    if (l->n == MAX_MISSING) {
        l->dropped++;
        return;
    }
    missing_op *m = &l->ops[l->n++];
    *m = (missing_op){.domain = dom, .type = nd->op_type, .opset = opset};
    snprintf(m->where, sizeof m->where, "%s", where);
    if (nd->name && nd->name[0])
        snprintf(m->node, sizeof m->node, "%s", nd->name);
    else
        snprintf(m->node, sizeof m->node, "#%d (%s)", index, nd->op_type);
}

static void walk(const ss_onnx_model *m, const Onnx__GraphProto *g, const char *where, int depth,
                 missing_list *l)
{
    for (size_t i = 0; g && i < g->n_node; i++) {
        const ss_onnx_node *nd = g->node[i];
        int64_t opset = ss_onnx_opset(m, nd->domain);
        if (!ss_op_domain_known(nd->domain) || !ss_op_find(nd->domain, nd->op_type, opset))
            note(l, nd, opset, where, (int)i);
        if (depth >= 16) continue; /* a pathological nesting is reported by the planner */
        for (size_t a = 0; a < nd->n_attribute; a++) {
            const ss_onnx_attr *at = nd->attribute[a];
            char inner[160];
            snprintf(inner, sizeof inner, " in %s of '%.60s'", at->name,
                     nd->name && nd->name[0] ? nd->name : nd->op_type);
            if (at->g) walk(m, at->g, inner, depth + 1, l);
            for (size_t k = 0; k < at->n_graphs; k++)
                walk(m, at->graphs[k], inner, depth + 1, l);
        }
    }
}

ss_status *ss_op_check_model(const ss_onnx_model *m)
{
    missing_list l = {0};
    walk(m, m->proto->graph, "", 0, &l);
    if (l.n == 0) return NULL;
    char msg[8192];
    size_t n = 0;
    if (l.n > 1) n += (size_t)snprintf(msg, sizeof msg, "%d unsupported ops: ", l.n + l.dropped);
    for (int i = 0; i < l.n && n < sizeof msg; i++) {
        const missing_op *o = &l.ops[i];
        char more[32] = "";
        if (o->more) snprintf(more, sizeof more, " and %d more", o->more);
        n += (size_t)snprintf(msg + n, sizeof msg - n,
                              "%s%s'%s' (node '%s'%s%s, domain %s, opset %lld)", i ? "; " : "",
                              l.n > 1 ? "" : "unsupported op ", o->type, o->node, o->where, more,
                              o->domain, (long long)o->opset);
    }
    if (l.dropped && n < sizeof msg)
        snprintf(msg + n, sizeof msg - n, "; and %d more ops", l.dropped);
    return ss_errf(SS_ERR_UNSUPPORTED, "%s", msg);
}
