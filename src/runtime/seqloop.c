/*
 * PyTorch's list-in-a-loop pattern without sequence values: a rewrite of the model at load.
 *
 * `ys = []; for ...: ys.append(t); torch.stack(ys)` exports as SequenceEmpty -> a Loop-carried
 * sequence that the body extends with SequenceInsert(seq, t) -> ConcatFromSequence(axis=0,
 * new_axis=1) after the loop. That is exactly a Loop scan output of t, which the runtime has
 * (ops/loop.c), so the carried sequence becomes one: the carried value is dropped from the Loop
 * and its body, t is appended to the body's outputs and the Loop's, the ConcatFromSequence
 * becomes an Identity of that scan output, the SequenceInsert an unused Identity and the
 * SequenceEmpty goes. Only that exact shape is rewritten (each value used nowhere else); any other
 * use of sequences is left alone and reported as unsupported ops.
 *
 * The proto was unpacked by protobuf-c with the default allocator, so strings, arrays and
 * messages removed here are freed with free(), and what is added comes from malloc.
 */
#include "op.h"

#include <stdlib.h>
#include <string.h>

/* How many times g (its nodes' inputs and its outputs, subgraphs too) reads name. */
static int uses_of(const Onnx__GraphProto *g, const char *name)
{
    int n = 0;
    for (size_t i = 0; i < g->n_node; i++) {
        const Onnx__NodeProto *nd = g->node[i];
        for (size_t j = 0; j < nd->n_input; j++)
            n += !strcmp(nd->input[j], name);
        for (size_t a = 0; a < nd->n_attribute; a++) {
            if (nd->attribute[a]->g) n += uses_of(nd->attribute[a]->g, name);
            for (size_t k = 0; k < nd->attribute[a]->n_graphs; k++)
                n += uses_of(nd->attribute[a]->graphs[k], name);
        }
    }
    for (size_t i = 0; i < g->n_output; i++)
        n += g->output[i]->name && !strcmp(g->output[i]->name, name);
    return n;
}

/* The node of g with op type `op` that produces (out) or reads as input 0 (!out) name. */
static Onnx__NodeProto *node_at(const Onnx__GraphProto *g, const char *op, const char *name,
                                bool out)
{
    for (size_t i = 0; i < g->n_node; i++) {
        Onnx__NodeProto *nd = g->node[i];
        if (strcmp(nd->op_type, op)) continue;
        if (out && nd->n_output >= 1 && !strcmp(nd->output[0], name)) return nd;
        if (!out && nd->n_input >= 1 && !strcmp(nd->input[0], name)) return nd;
    }
    return NULL;
}

static int64_t attr_or(const Onnx__NodeProto *nd, const char *name, int64_t dflt)
{
    return ss_onnx_attr_int(nd, name, dflt);
}

/* Removes element i of an array of n pointers (the caller frees what it pointed to). */
static void remove_at(void **arr, size_t *n, size_t i)
{
    memmove(arr + i, arr + i + 1, sizeof *arr * (*n - i - 1));
    (*n)--;
}

static bool append(void ***arr, size_t *n, void *item)
{
    void **grown = realloc(*arr, sizeof **arr * (*n + 1));
    if (!grown) return false;
    grown[(*n)++] = item;
    *arr = grown;
    return true;
}

/* Turns nd into Identity(input) with its outputs kept and its attributes dropped. */
static bool make_identity(Onnx__NodeProto *nd, const char *input)
{
    char *op = strdup("Identity"), *in = strdup(input);
    if (!op || !in) {
        free(op);
        free(in);
        return false;
    }
    free(nd->op_type);
    nd->op_type = op;
    for (size_t i = 0; i < nd->n_input; i++)
        free(nd->input[i]);
    nd->input[0] = in;
    nd->n_input = 1;
    for (size_t a = 0; a < nd->n_attribute; a++)
        onnx__attribute_proto__free_unpacked(nd->attribute[a], NULL);
    nd->n_attribute = 0;
    return true;
}

/* Carried value j of loop (in graph g) as the pattern, rewritten; false if it is not one. */
static bool rewrite_carried(Onnx__GraphProto *g, Onnx__NodeProto *loop, Onnx__GraphProto *body,
                            size_t j)
{
    const char *init = loop->input[2 + j], *s_in = body->input[2 + j]->name;
    const char *s_out = body->output[1 + j]->name, *s_final = loop->output[j];
    Onnx__NodeProto *empty = node_at(g, "SequenceEmpty", init, true);
    Onnx__NodeProto *ins = node_at(body, "SequenceInsert", s_in, false);
    Onnx__NodeProto *cat = node_at(g, "ConcatFromSequence", s_final, false);
    if (!empty || !ins || !cat || ins->n_input != 2 || strcmp(ins->output[0], s_out) ||
        uses_of(g, init) != 1 || uses_of(body, s_in) != 1 || uses_of(body, s_out) != 1 ||
        uses_of(g, s_final) != 1 || attr_or(cat, "axis", -1) != 0 ||
        attr_or(cat, "new_axis", 0) != 1)
        return false;
    Onnx__ValueInfoProto *vi = malloc(sizeof *vi);
    char *t = strdup(ins->input[1]), *scan = strdup(s_final);
    if (!vi || !t || !scan || !make_identity(cat, s_final) || !make_identity(ins, t)) {
        free(vi);
        free(t);
        free(scan);
        return false;
    }
    onnx__value_info_proto__init(vi);
    vi->name = t;
    /* drop the carried sequence: loop input and output, body input and output */
    free(loop->input[2 + j]);
    remove_at((void **)loop->input, &loop->n_input, 2 + j);
    onnx__value_info_proto__free_unpacked(body->input[2 + j], NULL);
    remove_at((void **)body->input, &body->n_input, 2 + j);
    onnx__value_info_proto__free_unpacked(body->output[1 + j], NULL);
    remove_at((void **)body->output, &body->n_output, 1 + j);
    free(loop->output[j]);
    remove_at((void **)loop->output, &loop->n_output, j);
    /* ... and stack t as a scan output named like the old final sequence */
    bool ok = append((void ***)&body->output, &body->n_output, vi);
    if (!ok) onnx__value_info_proto__free_unpacked(vi, NULL);
    if (ok) ok = append((void ***)&loop->output, &loop->n_output, scan);
    if (!ok) free(scan);
    for (size_t i = 0; i < g->n_node; i++)
        if (g->node[i] == empty) {
            onnx__node_proto__free_unpacked(empty, NULL);
            remove_at((void **)g->node, &g->n_node, i);
            break;
        }
    return ok;
}

void ss_seqloop_rewrite(ss_onnx_model *m)
{
    Onnx__GraphProto *g = m->proto->graph;
    for (size_t i = 0; g && i < g->n_node; i++) {
        Onnx__NodeProto *loop = g->node[i];
        const ss_onnx_attr *a = ss_onnx_attr_find(loop, "body");
        if (strcmp(loop->op_type, "Loop") || !a || !a->g || loop->n_input < 2) continue;
        Onnx__GraphProto *body = a->g;
        size_t carried = loop->n_input - 2;
        if (body->n_input != carried + 2 || body->n_output < carried + 1 ||
            loop->n_output < carried)
            continue;
        bool changed = false;
        for (size_t j = carried; j-- > 0;)
            changed |= rewrite_carried(g, loop, body, j);
        if (changed) i = (size_t)-1; /* a node went: start over (the next i++ wraps to 0) */
    }
}
