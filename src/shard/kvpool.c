/*
 * `shardserve shard --kv-pool`: rewrites an exported KV-cache decoder (HF optimum's
 * past_key_values.L.* -> present.L.*) so that its attention reads and writes the session's KV
 * block pool (com.shardserve PagedAttention) instead of past/present tensors. Then per step only
 * token ids, positions and sequence ids travel, and a decode step's shapes no longer depend on
 * the past length.
 *
 * The pattern, recognised from the ops and not from names, anchored on each Softmax:
 *   S = MatMul(Q, Transpose[0,1,3,2](repeat(Concat(past_k, K_new, axis 2))))
 *   P = Softmax(Add(S * scale, mask), axis -1);  O = MatMul(P, repeat(Concat(past_v, V_new)))
 * where repeat is GQA's Unsqueeze(axis 2) -> Expand -> Reshape (HF repeat_kv: query head h reads
 * KV head h / group) or nothing, and each Concat joins a graph input into a graph output. O
 * becomes PagedAttention(Q, K_new, V_new, seq_ids, position_ids) with the scale found on the way
 * (Div or Mul by a constant); K_new is the Concat's own input, so Llama's RoPE is already applied.
 * The mask is causal by position in the op: the graph's attention_mask (all ones for unpadded
 * rows) and everything computing it fall away, as do the past inputs and present outputs; an
 * added bias computed from anything but attention_mask, shapes and scalars (ALiBi, a learned
 * relative bias) is not a mask, and such an attention is left alone. A graph input `seq_ids`
 * int64 [batch] is added, and `logit_rows` int64 [rows] where the logits come from a MatMul: the
 * LM head then reads only those rows (Gather, axis 0), the ones the token loop samples.
 *
 * The model proto is edited in place; new strings and messages come from malloc, as protobuf-c's
 * unpacked messages do, so the model's free releases them.
 */
#include "shardserve/shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef const Onnx__GraphProto graph_t;

static int producer(graph_t *g, const char *name)
{
    for (size_t i = 0; i < g->n_node; i++)
        for (size_t j = 0; j < g->node[i]->n_output; j++)
            if (!strcmp(g->node[i]->output[j], name)) return (int)i;
    return -1;
}

static bool is_graph_io(Onnx__ValueInfoProto *const *vis, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(vis[i]->name, name)) return true;
    return false;
}

/* The value of a constant (initializer or Constant node) as int64s or one float. */
static bool const_tensor(ss_onnx_model *m, graph_t *g, const char *name, ss_tensor *t)
{
    const ss_tensor *init = ss_onnx_find_init(m, name);
    if (init) return *t = *init, true;
    int p = producer(g, name);
    if (p < 0 || strcmp(g->node[p]->op_type, "Constant")) return false;
    const ss_onnx_attr *a = ss_onnx_attr_find(g->node[p], "value");
    ss_status *st = a && a->t ? ss_onnx_tensor(m, a->t, t) : ss_errf(SS_ERR_INVALID, "no value");
    if (st) ss_status_free(st);
    return !st; /* raw_data borrowed from the proto: nothing to free for our dtypes */
}

static bool const_scalar(ss_onnx_model *m, graph_t *g, const char *name, double *v)
{
    ss_tensor t;
    if (!const_tensor(m, g, name, &t) || ss_tensor_numel(&t) != 1) return false;
    if (t.dtype == SS_DT_FLOAT32) return *v = *(const float *)t.data, true;
    if (t.dtype == SS_DT_FLOAT64) return *v = *(const double *)t.data, true;
    return false;
}

/* GQA's repeat must interleave (Unsqueeze at axis 2, as repeat_kv), not tile. */
static bool unsqueeze_at_2(ss_onnx_model *m, graph_t *g, const Onnx__NodeProto *n)
{
    const int64_t *axes = NULL;
    ss_tensor t;
    if (ss_onnx_attr_ints(n, "axes", &axes) == 1) return axes[0] == 2;
    if (n->n_input < 2 || !const_tensor(m, g, n->input[1], &t) || ss_tensor_numel(&t) != 1 ||
        t.dtype != SS_DT_INT64)
        return false;
    return *(const int64_t *)t.data == 2;
}

static bool swaps_last_two(const Onnx__NodeProto *n)
{
    const int64_t *perm = NULL;
    return ss_onnx_attr_ints(n, "perm", &perm) == 4 && perm[0] == 0 && perm[1] == 1 &&
           perm[2] == 3 && perm[3] == 2;
}

/* Does Concat n join a graph input (past) and new rows into a graph output (present)? */
static bool is_state_concat(graph_t *g, const Onnx__NodeProto *n)
{
    int64_t axis = ss_onnx_attr_int(n, "axis", 0);
    return !strcmp(n->op_type, "Concat") && n->n_input == 2 && n->n_output == 1 &&
           (axis == 2 || axis == -2) && is_graph_io(g->input, g->n_input, n->input[0]) &&
           is_graph_io(g->output, g->n_output, n->output[0]);
}

/* The first state Concat, or -1. */
static int first_state_concat(graph_t *g)
{
    for (size_t i = 0; i < g->n_node; i++)
        if (is_state_concat(g, g->node[i])) return (int)i;
    return -1;
}

/* Back from `name` through GQA's repeat (and, for K, one transpose) to a state Concat. */
static int state_concat(ss_onnx_model *m, graph_t *g, const char *name, bool want_transpose)
{
    bool transposed = false;
    for (int hops = 0; hops < 8; hops++) {
        int p = producer(g, name);
        if (p < 0) return -1;
        const Onnx__NodeProto *n = g->node[p];
        const char *op = n->op_type;
        if (!strcmp(op, "Concat"))
            return is_state_concat(g, n) && transposed == want_transpose ? p : -1;
        bool ok = !strcmp(op, "Reshape") || !strcmp(op, "Expand") ||
                  (!strcmp(op, "Unsqueeze") && unsqueeze_at_2(m, g, n)) ||
                  (!strcmp(op, "Transpose") && want_transpose && !transposed &&
                   (transposed = swaps_last_two(n)));
        if (!ok) return -1;
        name = n->input[0];
    }
    return -1;
}

typedef struct {
    ss_onnx_model *m;
    graph_t *g;
    unsigned char *seen; /* per node */
    bool reads_mask;
} mask_walk;

static bool small_or_integral(const ss_tensor *t)
{
    bool real = t->dtype == SS_DT_FLOAT32 || t->dtype == SS_DT_FLOAT64 ||
                t->dtype == SS_DT_FLOAT16 || t->dtype == SS_DT_BFLOAT16;
    return !real || ss_tensor_numel(t) <= 1;
}

/* Is `name` computed from the attention_mask input, shapes and scalar constants only (the
 * padding and causal mask, which PagedAttention applies by position), and not from tables the
 * rewrite would lose (ALiBi slopes, learned relative biases) or other inputs' values? */
static bool mask_only(mask_walk *w, const char *name, int depth)
{
    int p = producer(w->g, name);
    ss_tensor t;
    if (p < 0) {
        if (!strcmp(name, "attention_mask")) return w->reads_mask = true;
        const ss_tensor *init = ss_onnx_find_init(w->m, name);
        return init && small_or_integral(init);
    }
    if (w->seen[p]) return true;
    w->seen[p] = 1;
    const Onnx__NodeProto *n = w->g->node[p];
    if (!strcmp(n->op_type, "Shape")) return true;
    if (!strcmp(n->op_type, "Constant"))
        return const_tensor(w->m, w->g, name, &t) && small_or_integral(&t);
    for (size_t j = 0; j < n->n_input; j++)
        if (n->input[j][0] && (depth > 64 || !mask_only(w, n->input[j], depth + 1))) return false;
    return true;
}

static bool is_attention_mask(ss_onnx_model *m, graph_t *g, const char *name)
{
    mask_walk w = {m, g, calloc(g->n_node + 1, 1), false};
    bool ok = w.seen && mask_only(&w, name, 0) && w.reads_mask;
    free(w.seen);
    return ok;
}

/* Back from the Softmax's input through the mask Add and the scaling to the QK^T MatMul. */
static int scores_matmul(ss_onnx_model *m, graph_t *g, const char *name, double *scale, int depth)
{
    int p = producer(g, name);
    if (p < 0 || depth > 6) return -1;
    const Onnx__NodeProto *n = g->node[p];
    double c;
    if (!strcmp(n->op_type, "MatMul")) return p;
    if (!strcmp(n->op_type, "Div") && const_scalar(m, g, n->input[1], &c) && c != 0)
        return *scale /= c, scores_matmul(m, g, n->input[0], scale, depth + 1);
    if (!strcmp(n->op_type, "Mul"))
        for (int j = 0; j < 2; j++)
            if (const_scalar(m, g, n->input[j], &c))
                return *scale *= c, scores_matmul(m, g, n->input[1 - j], scale, depth + 1);
    if (!strcmp(n->op_type, "Add")) { /* exactly one side leads to the scores */
        double s0 = *scale, s1 = *scale;
        int a = scores_matmul(m, g, n->input[0], &s0, depth + 1);
        int b = scores_matmul(m, g, n->input[1], &s1, depth + 1);
        if ((a >= 0) == (b >= 0) || !is_attention_mask(m, g, n->input[a >= 0 ? 1 : 0])) return -1;
        return *scale = a >= 0 ? s0 : s1, a >= 0 ? a : b;
    }
    return -1;
}

/* The only node reading `name` (Shape nodes aside), or -1. */
static int sole_reader(graph_t *g, const char *name)
{
    int found = -1;
    for (size_t i = 0; i < g->n_node; i++) {
        if (!strcmp(g->node[i]->op_type, "Shape")) continue;
        for (size_t j = 0; j < g->node[i]->n_input; j++)
            if (!strcmp(g->node[i]->input[j], name)) {
                if (found >= 0 && found != (int)i) return -1;
                found = (int)i;
            }
    }
    return found;
}

typedef struct {
    int out;           /* the P x V MatMul, replaced */
    int kc, vc;        /* the state Concats */
    const char *q;     /* the query input */
    const char *k, *v; /* this step's rows: the state Concats' second inputs */
    double scale;
} attention;

static bool match_softmax(ss_onnx_model *m, graph_t *g, const Onnx__NodeProto *sm, attention *a)
{
    int64_t axis = ss_onnx_attr_int(sm, "axis", -1);
    if (strcmp(sm->op_type, "Softmax") || (axis != -1 && axis != 3)) return false;
    a->scale = 1.0;
    int s = scores_matmul(m, g, sm->input[0], &a->scale, 0);
    a->out = sole_reader(g, sm->output[0]);
    if (s < 0 || a->out < 0 || strcmp(g->node[a->out]->op_type, "MatMul") ||
        strcmp(g->node[a->out]->input[0], sm->output[0]))
        return false;
    int kc = state_concat(m, g, g->node[s]->input[1], true);
    int vc = state_concat(m, g, g->node[a->out]->input[1], false);
    if (kc < 0 || vc < 0) return false;
    a->kc = kc, a->vc = vc;
    a->q = g->node[s]->input[0], a->k = g->node[kc]->input[1], a->v = g->node[vc]->input[1];
    return true;
}

/* ------------------------------------------------------------------ editing the proto */

static Onnx__AttributeProto *attr_new(const char *name, Onnx__AttributeProto__AttributeType type)
{
    Onnx__AttributeProto *a = malloc(sizeof *a);
    if (!a) return NULL;
    onnx__attribute_proto__init(a);
    a->name = strdup(name);
    a->has_type = 1, a->type = type;
    if (!a->name) free(a), a = NULL;
    return a;
}

static char **str_array(const char *const *v, size_t n)
{
    char **out = calloc(n, sizeof *out);
    for (size_t i = 0; out && i < n; i++)
        out[i] = strdup(v[i]); /* a NULL left is freed as such */
    return out;
}

static Onnx__NodeProto *paged_node(const attention *a, const char *out, int layer)
{
    Onnx__NodeProto *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    onnx__node_proto__init(n);
    const char *ins[5] = {a->q, a->k, a->v, "seq_ids", "position_ids"};
    n->input = str_array(ins, 5), n->n_input = n->input ? 5 : 0;
    n->output = str_array(&out, 1), n->n_output = n->output ? 1 : 0;
    char name[64];
    snprintf(name, sizeof name, "PagedAttention_%d", layer);
    n->name = strdup(name), n->op_type = strdup("PagedAttention");
    n->domain = strdup(SS_DOMAIN_KVPOOL);
    n->attribute = calloc(2, sizeof *n->attribute);
    if (n->attribute) {
        n->n_attribute = 2;
        n->attribute[0] = attr_new("layer", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
        n->attribute[1] = attr_new("scale", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    }
    bool ok = n->n_input && n->n_output && n->name && n->op_type && n->domain && n->attribute &&
              n->attribute[0] && n->attribute[1];
    for (size_t i = 0; ok && i < 5; i++)
        ok = n->input[i] != NULL;
    if (!ok || !n->output[0]) {
        onnx__node_proto__free_unpacked(n, NULL);
        return NULL;
    }
    n->attribute[0]->has_i = 1, n->attribute[0]->i = layer;
    n->attribute[1]->has_f = 1, n->attribute[1]->f = (float)a->scale;
    return n;
}

/* Removes the graph input or output `name`. */
static void drop_io(Onnx__ValueInfoProto **vis, size_t *n, const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp(vis[i]->name, name)) {
            onnx__value_info_proto__free_unpacked(vis[i], NULL);
            memmove(&vis[i], &vis[i + 1], (*n - i - 1) * sizeof *vis);
            (*n)--;
            return;
        }
}

/* A set of value names (borrowed), open addressing. */
typedef struct {
    const char **slot;
    size_t cap;
} name_set;

static size_t name_hash(const char *s)
{
    size_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static bool set_has(const name_set *set, const char *name)
{
    for (size_t i = name_hash(name) & (set->cap - 1); set->slot[i]; i = (i + 1) & (set->cap - 1))
        if (!strcmp(set->slot[i], name)) return true;
    return false;
}

static void set_add(name_set *set, const char *name)
{
    size_t i = name_hash(name) & (set->cap - 1);
    while (set->slot[i] && strcmp(set->slot[i], name))
        i = (i + 1) & (set->cap - 1);
    set->slot[i] = name;
}

/* Values read by the nodes a graph output needs, nodes in topological order (as ONNX requires);
 * the other nodes are freed. */
static ss_status *drop_dead_nodes(Onnx__GraphProto *g, name_set *live)
{
    size_t names = g->n_output + 1;
    for (size_t i = 0; i < g->n_node; i++)
        names += g->node[i]->n_input;
    for (live->cap = 64; live->cap < 2 * names;)
        live->cap *= 2;
    live->slot = calloc(live->cap, sizeof *live->slot);
    if (!live->slot) return ss_errf(SS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < g->n_output; i++)
        set_add(live, g->output[i]->name);
    size_t kept = g->n_node;
    for (size_t i = g->n_node; i-- > 0;) {
        Onnx__NodeProto *n = g->node[i];
        bool needed = false;
        for (size_t j = 0; j < n->n_output && !needed; j++)
            needed = n->output[j][0] && set_has(live, n->output[j]);
        if (!needed) {
            onnx__node_proto__free_unpacked(n, NULL);
            continue;
        }
        for (size_t j = 0; j < n->n_input; j++)
            if (n->input[j][0]) set_add(live, n->input[j]);
        g->node[--kept] = n;
    }
    memmove(g->node, g->node + kept, (g->n_node - kept) * sizeof *g->node);
    g->n_node -= kept;
    return NULL;
}

/* An int64 input `name` [batch]: a copy of input_ids' declaration cut to its first dim. */
static ss_status *add_row_input(Onnx__GraphProto *g, const char *name)
{
    Onnx__ValueInfoProto *ids = NULL;
    for (size_t i = 0; i < g->n_input; i++)
        if (!strcmp(g->input[i]->name, "input_ids")) ids = g->input[i];
    if (!ids || !ids->type || !ids->type->tensor_type || !ids->type->tensor_type->shape ||
        ids->type->tensor_type->shape->n_dim != 2)
        return ss_errf(SS_ERR_INVALID, "--kv-pool needs an input 'input_ids' [batch, sequence]");
    uint8_t buf[1024];
    size_t len = onnx__value_info_proto__get_packed_size(ids);
    if (len > sizeof buf) return ss_errf(SS_ERR_INVALID, "input_ids' declaration is too long");
    onnx__value_info_proto__pack(ids, buf);
    Onnx__ValueInfoProto *vi = onnx__value_info_proto__unpack(NULL, len, buf);
    Onnx__ValueInfoProto **in = realloc(g->input, (g->n_input + 1) * sizeof *in);
    char *vname = strdup(name);
    if (!vi || !in || !vname) {
        free(vname);
        if (vi) onnx__value_info_proto__free_unpacked(vi, NULL);
        if (in) g->input = in;
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    Onnx__TensorShapeProto *shape = vi->type->tensor_type->shape;
    protobuf_c_message_free_unpacked(&shape->dim[1]->base, NULL);
    shape->n_dim = 1;
    vi->type->tensor_type->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
    free(vi->name);
    vi->name = vname;
    g->input = in;
    g->input[g->n_input++] = vi;
    return NULL;
}

/* The token loop samples from one row of logits per sequence in a step (a prompt chunk's last),
 * so the LM head need not run on the others: where the logits (the first output) come from a
 * MatMul, its activations pass through Gather(axis 0) by an input `logit_rows` first, and the
 * logits have a row per index. A step of 32 decodes and 200 prompt tokens then computes and
 * returns 32 rows of logits instead of 232. Other graphs keep every row (nothing added). */
static ss_status *add_logit_rows(Onnx__GraphProto *g)
{
    int p = g->n_output ? producer(g, g->output[0]->name) : -1;
    Onnx__NodeProto *head = p >= 0 ? g->node[p] : NULL;
    if (!head || strcmp(head->op_type, "MatMul") || head->n_input != 2 ||
        is_graph_io(g->input, g->n_input, "logit_rows"))
        return NULL;
    Onnx__NodeProto *n = calloc(1, sizeof *n);
    Onnx__NodeProto **nodes = realloc(g->node, (g->n_node + 1) * sizeof *nodes);
    if (nodes) g->node = nodes;
    if (!n || !nodes) {
        free(n);
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    onnx__node_proto__init(n);
    const char *ins[2] = {head->input[0], "logit_rows"}, *out = "logit_rows/hidden";
    n->input = str_array(ins, 2), n->n_input = n->input ? 2 : 0;
    n->output = str_array(&out, 1), n->n_output = n->output ? 1 : 0;
    n->name = strdup("LogitRows"), n->op_type = strdup("Gather");
    n->attribute = calloc(1, sizeof *n->attribute);
    if (n->attribute) n->n_attribute = 1;
    if (n->attribute)
        n->attribute[0] = attr_new("axis", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    char *hidden = strdup(out);
    if (!n->n_input || !n->input[0] || !n->input[1] || !n->n_output || !n->output[0] || !n->name ||
        !n->op_type || !n->attribute || !n->attribute[0] || !hidden) {
        free(hidden);
        onnx__node_proto__free_unpacked(n, NULL);
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    n->attribute[0]->has_i = 1, n->attribute[0]->i = 0;
    free(head->input[0]);
    head->input[0] = hidden;
    memmove(&g->node[p + 1], &g->node[p], (g->n_node - (size_t)p) * sizeof *g->node);
    g->node[p] = n;
    g->n_node++;
    /* declared [batch] like seq_ids (at most a row each; the logits' first dim likewise): the
     * shard tool then plans and balances pipeline stages at a decode step's cost */
    return add_row_input(g, "logit_rows");
}

/* Graph inputs no kept node reads (the mask, the past) go; a past input still read elsewhere is
 * a pattern we do not know, named. */
static ss_status *drop_unread_inputs(ss_onnx_model *m, Onnx__GraphProto *g, const name_set *live,
                                     char **past, int n_past)
{
    for (int i = 0; i < n_past; i++)
        if (set_has(live, past[i]))
            return ss_errf(SS_ERR_UNSUPPORTED,
                           "--kv-pool: '%s' is read outside the attention it feeds", past[i]);
    for (size_t i = g->n_input; i-- > 0;)
        if (!set_has(live, g->input[i]->name) && !ss_onnx_find_init(m, g->input[i]->name))
            drop_io(g->input, &g->n_input, g->input[i]->name);
    return NULL;
}

static ss_status *import_kvpool_domain(Onnx__ModelProto *proto)
{
    for (size_t i = 0; i < proto->n_opset_import; i++)
        if (proto->opset_import[i]->domain &&
            !strcmp(proto->opset_import[i]->domain, SS_DOMAIN_KVPOOL))
            return NULL;
    Onnx__OperatorSetIdProto **ops =
        realloc(proto->opset_import, (proto->n_opset_import + 1) * sizeof *ops);
    Onnx__OperatorSetIdProto *op = malloc(sizeof *op);
    if (ops) proto->opset_import = ops;
    if (!ops || !op) return free(op), ss_errf(SS_ERR_NOMEM, "out of memory");
    onnx__operator_set_id_proto__init(op);
    op->domain = strdup(SS_DOMAIN_KVPOOL);
    op->has_version = 1, op->version = 1;
    if (!op->domain) return free(op), ss_errf(SS_ERR_NOMEM, "out of memory");
    ops[proto->n_opset_import++] = op;
    return NULL;
}

/* Replaces every matched attention's P x V MatMul by PagedAttention and drops the present
 * outputs; the past inputs' names are kept in past[] for the checks after. */
static ss_status *replace_attentions(ss_onnx_model *m, Onnx__GraphProto *g, char **past,
                                     int *n_past, int *layers)
{
    for (size_t i = 0; i < g->n_node; i++) {
        attention a;
        if (!match_softmax(m, g, g->node[i], &a)) continue;
        if (*n_past + 2 > 2 * SS_SHARD_MAX_KV_LAYERS)
            return ss_errf(SS_ERR_LIMIT, "--kv-pool: more than %d attention layers",
                           SS_SHARD_MAX_KV_LAYERS);
        Onnx__NodeProto *old = g->node[a.out];
        Onnx__NodeProto *n = paged_node(&a, old->output[0], *layers);
        if (!n) return ss_errf(SS_ERR_NOMEM, "out of memory");
        g->node[a.out] = n;
        onnx__node_proto__free_unpacked(old, NULL);
        for (int j = 0; j < 2; j++) {
            const Onnx__NodeProto *c = g->node[j ? a.vc : a.kc];
            if (!(past[(*n_past)++] = strdup(c->input[0])))
                return ss_errf(SS_ERR_NOMEM, "out of memory");
            drop_io(g->output, &g->n_output, c->output[0]);
        }
        (*layers)++;
    }
    return NULL;
}

ss_status *ss_shard_kvpool_rewrite(ss_onnx_model *m, int *layers)
{
    Onnx__GraphProto *g = m->proto->graph;
    *layers = 0;
    if (!is_graph_io(g->input, g->n_input, "position_ids") ||
        is_graph_io(g->input, g->n_input, "seq_ids"))
        return ss_errf(SS_ERR_INVALID, "--kv-pool needs an input 'position_ids' [batch, "
                                       "sequence] and none named 'seq_ids'");
    char *past[2 * SS_SHARD_MAX_KV_LAYERS];
    int n_past = 0;
    name_set live = {0};
    ss_status *st = replace_attentions(m, g, past, &n_past, layers);
    if (!st && !*layers)
        st = ss_errf(SS_ERR_UNSUPPORTED,
                     "--kv-pool: no attention over a past/present KV cache found "
                     "(Concat(past, new) -> MatMul -> scale -> + a mask from attention_mask -> "
                     "Softmax -> MatMul)");
    int left = st ? -1 : first_state_concat(g);
    if (left >= 0) /* half a rewrite would leave a model with both kinds of cache */
        st = ss_errf(SS_ERR_UNSUPPORTED,
                     "--kv-pool: the attention reading '%s' is not one it can rewrite (%d others "
                     "were)",
                     g->node[left]->input[0], *layers);
    if (!st) st = drop_dead_nodes(g, &live);
    if (!st) st = drop_unread_inputs(m, g, &live, past, n_past);
    if (!st) st = add_row_input(g, "seq_ids");
    if (!st) st = add_logit_rows(g);
    if (!st) st = import_kvpool_domain(m->proto);
    for (int i = 0; i < n_past; i++)
        free(past[i]);
    free(live.slot);
    return st;
}
