/*
 * Sessions: graph construction at load, planning per input signature, execution.
 *
 * Load: name every value (initializers, graph inputs, node outputs), order the nodes
 * topologically, and resolve each node's op definition — an unknown op fails here, naming the
 * op, node and opset. When the inputs' shapes are known, a trial plan also checks every
 * attribute at load.
 *
 * Plan (struct ss_plan): walk the nodes in order calling infer; a node whose inputs are all
 * known (initializers, folded values) or that only reads shapes is run right away and its outputs
 * become constants. The remaining "exec" nodes get buffers: alias ops (Reshape family) share their
 * input's bytes, every other intermediate gets an offset in one arena, assigned greedily by size
 * so that values whose lifetimes do not overlap share memory.
 *
 * Run: bind the caller's input buffers (no copy), call the exec nodes' kernels. A change of any
 * input shape, or of the value of an input that shape inference read, re-plans first.
 *
 * Data-dependent shapes (SS_OPF_DYNAMIC_SHAPE: NonZero, Unique...): the plan sizes such an
 * output's buffer for infer's upper bound but gives consumers the shape the session last saw
 * (s->dyn; the bound the first time). When the kernel reports another shape, the session records
 * it, builds a new plan, copies the values computed so far into it and resumes after that node
 * (dyn_replan). Plans without such ops never take this path.
 *
 * Values computed at run time that shape inference needs (Range's limit, Reshape's shape from a
 * Shape -> Gather -> Concat chain over data...): when infer fails because such a value is not
 * known yet (ss_kctx_value returned NULL for it), the plan ends at that node (p->partial). The
 * run executes that prefix, records the value once its producer has run (s->seen) and re-plans
 * with the recorded value answering ss_kctx_value, resuming as above. A plan that read a recorded
 * value checks it after its producer runs on every later request (p->watch) and re-plans only
 * when it changed, so a model whose computed shapes stay the same plans once.
 */
#include "op.h"
#include "ops/fusion.h"
#include "ops/kvpool.h"
#include "ops/onednn.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_ALIGN 64
/* No value (or scratch) may be larger: sums of a plan's sizes then cannot wrap around. */
#define VALUE_MAX ((size_t)1 << 62)

/* Where a value of no bytes points when nothing else does (an all-empty arena, an empty input
 * given without a buffer): kernels pass their tensors' pointers to memcpy and friends even for
 * zero bytes, which C requires to be valid pointers. Nothing is ever read or written here. */
static _Alignas(ARENA_ALIGN) unsigned char no_bytes[ARENA_ALIGN];

typedef enum { V_NODE = 0, V_INPUT, V_CONST } value_kind;

typedef struct {
    const char *name;
    value_kind kind;
    int input_index;       /* V_INPUT */
    const ss_tensor *init; /* V_CONST */
    int producer;          /* node index (topological) or -1 */
} value_def;

typedef struct {
    const ss_onnx_node *node;
    const ss_op_def *op;
    char *name;
    int64_t opset;
    int n_in, n_out;
    int *in_ids; /* -1 for an omitted optional input */
    int *out_ids;
} node_def;

struct ss_plan {
    ss_session *s;
    ss_tensor *vals;      /* per value: dtype, shape, data (NULL while unknown at plan time) */
    unsigned char *known; /* value known at plan time (KNOWN_FROM_INPUTS: computed from the values
                             of graph inputs, so a request decides its size) */
    ss_tensor *owned;     /* folded values' storage */
    int *root;            /* alias root (self if not an alias) */
    void **state;         /* per node */
    ss_kctx *kctx;        /* per node */
    ss_tensor **ptrs;     /* backing store for every kctx's in/out arrays */
    int n_exec;
    int *exec; /* node indices to run */
    unsigned char *arena;
    size_t arena_cap; /* the arena's bytes, arena_bytes or more (arena_take) */
    size_t arena_bytes, naive_bytes, const_bytes;
    size_t input_fold_bytes;  /* constants folded from the request's values (KNOWN_FROM_INPUTS) */
    int in_place_outputs;     /* outputs written in an operand's slot (arena_in_place) */
    const ss_tensor *inputs;  /* the caller's inputs while planning */
    unsigned char *value_dep; /* per graph input: shape inference read its value */
    ss_tensor *dep_values;    /* copies of those values */
    int n_input_aliases;
    int *input_aliases;    /* values whose bytes come from a graph input */
    size_t *dyn_slot;      /* per value: bytes of a data-dependent output's buffer (its bound) */
    unsigned char *watch;  /* per value: infer read its recorded run-time value (s->seen) */
    unsigned char *check;  /* per node: after it runs, check dyn shapes or watched values */
    int *wanted, n_wanted; /* computed values asked for by the node being inferred */
    bool partial;          /* planned up to a node that needs a value not computed yet */
    int stop_node;         /* partial: that node */
    ss_tensor *out_views;  /* what the caller sees: refreshed after every run */
    /* element-wise fusion (fuse_plan): per node, the epilogue it runs after itself (a head), the
     * next node of its chain (head -> first absorbed -> ...; -1 ends), the head that absorbed it */
    ss_epilogue **epi;
    int *fuse_next, *fuse_head;
    int n_fused;
    /* per node, what a run for effects only (ss_session_run_effects) does with it */
    unsigned char *effects;
};

enum { KNOWN_FROM_INPUTS = 3 }; /* plan->known: 1, and bit 2 */

/* plan->effects: a node runs, is skipped, or runs with its outputs unwanted (a collective whose
 * result nothing that runs reads: it only contributes). */
enum { EFFECTS_RUN = 0, EFFECTS_SKIP = 1, EFFECTS_CONTRIBUTE = 2 };

struct ss_session {
    ss_onnx_model *model;
    ss_session_options opt;
    int n_values;
    value_def *values;
    int n_nodes;
    node_def *nodes;
    int n_inputs, n_outputs;
    ss_onnx_value_info *inputs, *outputs;
    int *input_ids, *output_ids;
    struct ss_plan *plan;
    int n_plans;
    ss_packed *packed;          /* packed weights kept across plans (op.h) */
    unsigned char *spare_arena; /* the last freed plan's arena, for the next plan (arena_take) */
    size_t spare_bytes;
    int n_arenas;          /* arenas allocated */
    ss_kvpool *kvpool;     /* PagedAttention's KV block pool, kept across plans */
    bool data_is_constant; /* planning a subgraph: inputs given with data are outer constants */
    int n_varying; /* ... except the first n_varying (a loop body's own inputs), which change */
    const bool *from_request; /* ... and which of them the outer plan computed from a request */
    /* per value: the shape plans assume for a data-dependent output (SS_OPF_DYNAMIC_SHAPE) */
    struct dyn_shape {
        bool set;
        int ndim;
        int64_t dims[SS_MAX_DIMS];
    } * dyn;
    ss_tensor *seen;      /* per value: a computed value shape inference read (dtype 0: none) */
    ss_sequence **seqs;   /* per value: the sequence it holds, kept across plans (ops/sequence.c) */
    uint64_t *node_words; /* per node: a word kept across plans (ss_kctx_node_word) */
    ss_run_guard own_guard; /* a top session's bounds */
    ss_run_guard *guard;    /* &own_guard, or a subgraph's parent's */
    /* name -> value id hash table (open addressing) */
    int hash_cap;
    int *hash;
};

/* ------------------------------------------------------------------ sequences
 * A seq(tensor) value is a 0-D SS_DT_SEQUENCE tensor referring to an ss_sequence. The sequence a
 * node output holds belongs to the session (one per value, reused by every run and plan), so a
 * value copied into a new plan, carried by a loop or folded still refers to live memory. */

/* A graph input or output declared seq(tensor), optional(tensor) or optional(seq(tensor)):
 * described as a 0-D SS_DT_SEQUENCE value. */
static bool sequence_value_info(const Onnx__ValueInfoProto *p, ss_onnx_value_info *vi)
{
    const Onnx__TypeProto *t = p->type;
    if (t && t->value_case == ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE)
        t = t->optional_type ? t->optional_type->elem_type : NULL;
    if (t && t->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE && p->type != t) {
        vi->dtype = SS_DT_SEQUENCE;
        vi->ndim = 0;
        return true;
    }
    if (!t || t->value_case != ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE) return false;
    const Onnx__TypeProto *e = t->sequence_type ? t->sequence_type->elem_type : NULL;
    if (e && e->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE) return false;
    vi->dtype = SS_DT_SEQUENCE;
    vi->ndim = 0;
    return true;
}

ss_sequence *ss_kctx_sequence(ss_kctx *k, int j, ss_dtype elem_dtype)
{
    if (!k->plan || j < 0 || j >= k->n_out) return NULL;
    ss_session *s = k->plan->s;
    int id = s->nodes[k - k->plan->kctx].out_ids[j];
    if (id < 0) return NULL;
    if (!s->seqs && !(s->seqs = calloc((size_t)s->n_values + 1, sizeof *s->seqs))) return NULL;
    if (!s->seqs[id]) s->seqs[id] = ss_sequence_new(elem_dtype);
    return s->seqs[id];
}

uint64_t *ss_kctx_node_word(ss_kctx *k)
{
    if (!k->plan) return NULL;
    ss_session *s = k->plan->s;
    if (!s->node_words && !(s->node_words = calloc((size_t)s->n_nodes + 1, sizeof *s->node_words)))
        return NULL;
    return &s->node_words[k - k->plan->kctx];
}

/* ------------------------------------------------------------------ value names */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int value_lookup(const ss_session *s, const char *name)
{
    for (uint64_t i = hash_str(name) & (uint64_t)(s->hash_cap - 1);;
         i = (i + 1) & (uint64_t)(s->hash_cap - 1)) {
        int id = s->hash[i];
        if (id < 0) return -1;
        if (strcmp(s->values[id].name, name) == 0) return id;
    }
}

static int value_add(ss_session *s, const char *name, value_kind kind)
{
    int id = value_lookup(s, name);
    if (id >= 0) return id;
    id = s->n_values++;
    s->values[id] = (value_def){.name = name, .kind = kind, .input_index = -1, .producer = -1};
    uint64_t i = hash_str(name) & (uint64_t)(s->hash_cap - 1);
    while (s->hash[i] >= 0)
        i = (i + 1) & (uint64_t)(s->hash_cap - 1);
    s->hash[i] = id;
    return id;
}

/* ------------------------------------------------------------------ load */

static ss_status *build_values(ss_session *s)
{
    const Onnx__GraphProto *g = s->model->proto->graph;
    size_t max_values = g->n_initializer + g->n_input + 1;
    for (size_t i = 0; i < g->n_node; i++)
        max_values += g->node[i]->n_output;
    s->hash_cap = 16;
    while ((size_t)s->hash_cap < 2 * max_values)
        s->hash_cap *= 2;
    s->hash = malloc(sizeof(int) * (size_t)s->hash_cap);
    s->values = calloc(max_values, sizeof *s->values);
    if (!s->hash || !s->values) return ss_errf(SS_ERR_NOMEM, "out of memory");
    memset(s->hash, 0xff, sizeof(int) * (size_t)s->hash_cap);

    for (int i = 0; i < s->model->n_init; i++) {
        int id = value_add(s, s->model->inits[i].name, V_CONST);
        s->values[id].init = &s->model->inits[i].tensor;
    }
    /* Graph inputs that are also initializers (IR < 4 lists them) stay constants. */
    s->inputs = calloc(g->n_input + 1, sizeof *s->inputs);
    s->input_ids = calloc(g->n_input + 1, sizeof(int));
    s->outputs = calloc(g->n_output + 1, sizeof *s->outputs);
    s->output_ids = calloc(g->n_output + 1, sizeof(int));
    if (!s->inputs || !s->input_ids || !s->outputs || !s->output_ids)
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < g->n_input; i++) {
        const char *name = g->input[i]->name ? g->input[i]->name : "";
        if (value_lookup(s, name) >= 0) continue;
        ss_onnx_value_info *vi = &s->inputs[s->n_inputs];
        ss_status *st = ss_onnx_read_value_info(g->input[i], vi);
        if (st) return st;
        if (!vi->is_tensor && !sequence_value_info(g->input[i], vi))
            return ss_errf(SS_ERR_UNSUPPORTED,
                           "graph input '%s' is neither a tensor nor a sequence of tensors (map "
                           "and optional types are not supported)",
                           name);
        int id = value_add(s, name, V_INPUT);
        s->values[id].input_index = s->n_inputs;
        s->input_ids[s->n_inputs++] = id;
    }
    return NULL;
}

static ss_status *build_nodes(ss_session *s)
{
    const Onnx__GraphProto *g = s->model->proto->graph;
    s->nodes = calloc(g->n_node + 1, sizeof *s->nodes);
    if (!s->nodes) return ss_errf(SS_ERR_NOMEM, "out of memory");
    /* Name every node output first, so inputs can refer to later nodes (we sort below). */
    for (size_t i = 0; i < g->n_node; i++)
        for (size_t j = 0; j < g->node[i]->n_output; j++)
            if (g->node[i]->output[j][0]) {
                int id = value_lookup(s, g->node[i]->output[j]);
                if (id >= 0 && (s->values[id].kind != V_NODE || s->values[id].producer >= 0))
                    return ss_errf(SS_ERR_INVALID, "value '%s' is produced twice",
                                   g->node[i]->output[j]);
                id = value_add(s, g->node[i]->output[j], V_NODE);
                s->values[id].producer = (int)i; /* graph order for now */
            }
    /* Topological order by sweeps over graph order: each sweep places every node whose inputs are
     * ready, so nodes keep their graph order wherever the dependencies allow it (exporters emit
     * graphs that are nearly sorted, so this takes few sweeps); a sweep that places nothing
     * means a cycle. */
    int n = (int)g->n_node;
    int *order = calloc((size_t)n + 1, sizeof(int));
    unsigned char *ready = calloc((size_t)s->n_values + 1, 1);
    ss_name_list *implicit = calloc((size_t)n + 1, sizeof *implicit); /* outer names of subgraphs */
    ss_status *st = NULL;
    if (!order || !ready || !implicit) st = ss_errf(SS_ERR_NOMEM, "out of memory");
    for (int i = 0; !st && i < n; i++)
        st = ss_subgraph_outer_names(g->node[i], &implicit[i]);
    for (int v = 0; !st && v < s->n_values; v++)
        ready[v] = s->values[v].kind != V_NODE;
    int done = 0;
    unsigned char *placed = calloc((size_t)n + 1, 1);
    if (!placed && !st) st = ss_errf(SS_ERR_NOMEM, "out of memory");
    while (!st && done < n) {
        int progressed = 0;
        for (int i = 0; i < n; i++) {
            if (placed[i]) continue;
            const ss_onnx_node *nd = g->node[i];
            int ok = 1;
            for (size_t j = 0; j < nd->n_input + (size_t)implicit[i].n && ok; j++) {
                const char *in =
                    j < nd->n_input ? nd->input[j] : implicit[i].names[j - nd->n_input];
                if (!in[0]) continue;
                int id = value_lookup(s, in);
                if (id < 0) {
                    st = ss_errf(SS_ERR_INVALID,
                                 "node '%s' (%s): input '%s' is not produced by any "
                                 "node, initializer or graph input",
                                 nd->name ? nd->name : "", nd->op_type, in);
                    ok = 0;
                } else if (!ready[id]) {
                    ok = 0;
                }
            }
            if (st) break;
            if (!ok) continue;
            placed[i] = 1;
            order[done++] = i;
            progressed = 1;
            for (size_t j = 0; j < nd->n_output; j++)
                if (nd->output[j][0]) ready[value_lookup(s, nd->output[j])] = 1;
        }
        if (!st && !progressed) st = ss_errf(SS_ERR_INVALID, "the graph has a cycle");
    }
    for (int k = 0; !st && k < n; k++) {
        const ss_onnx_node *nd = g->node[order[k]];
        node_def *d = &s->nodes[s->n_nodes++];
        d->node = nd;
        char nm[96];
        if (nd->name && nd->name[0])
            snprintf(nm, sizeof nm, "%s", nd->name);
        else
            snprintf(nm, sizeof nm, "#%d (%s)", order[k], nd->op_type);
        d->name = strdup(nm);
        d->opset = ss_onnx_opset(s->model, nd->domain);
        const ss_name_list *outer = &implicit[order[k]];
        d->n_in = (int)nd->n_input + outer->n;
        d->n_out = (int)nd->n_output;
        d->in_ids = malloc(sizeof(int) * ((size_t)d->n_in + 1));
        d->out_ids = malloc(sizeof(int) * (nd->n_output + 1));
        if (!d->name || !d->in_ids || !d->out_ids) {
            st = ss_errf(SS_ERR_NOMEM, "out of memory");
            break;
        }
        for (int j = 0; j < (int)nd->n_input; j++)
            d->in_ids[j] = nd->input[j][0] ? value_lookup(s, nd->input[j]) : -1;
        for (int j = 0; j < outer->n; j++)
            d->in_ids[nd->n_input + j] = value_lookup(s, outer->names[j]);
        for (int j = 0; j < d->n_out; j++) {
            d->out_ids[j] = nd->output[j][0] ? value_lookup(s, nd->output[j]) : -1;
            if (d->out_ids[j] >= 0) s->values[d->out_ids[j]].producer = k;
        }
        const char *dom = nd->domain && nd->domain[0] ? nd->domain : "ai.onnx";
        if (!ss_op_domain_known(nd->domain))
            st = ss_errf(SS_ERR_UNSUPPORTED, "unsupported op '%s' of domain '%s' (node '%s')",
                         nd->op_type, dom, d->name);
        else if (!(d->op = ss_op_find(nd->domain, nd->op_type, d->opset)))
            st = ss_errf(SS_ERR_UNSUPPORTED,
                         "unsupported op '%s' (node '%s', domain %s, opset %lld)", nd->op_type,
                         d->name, dom, (long long)d->opset);
        else if (strcmp(dom, SS_DOMAIN_COLLECTIVE) == 0 && !s->opt.coll)
            st =
                ss_errf(SS_ERR_INVALID,
                        "node '%s' is a collective op (%s) but this process has no "
                        "communicator; run sharded models with 'shardserve run --shards' or agents",
                        d->name, nd->op_type);
    }
    for (int i = 0; implicit && i < n; i++)
        ss_name_list_free(&implicit[i]);
    free(implicit);
    free(order);
    free(ready);
    free(placed);
    return st;
}

static ss_status *build_outputs(ss_session *s)
{
    const Onnx__GraphProto *g = s->model->proto->graph;
    for (size_t i = 0; i < g->n_output; i++) {
        const char *name = g->output[i]->name ? g->output[i]->name : "";
        int id = value_lookup(s, name);
        if (id < 0) return ss_errf(SS_ERR_INVALID, "graph output '%s' is never produced", name);
        ss_status *st = ss_onnx_read_value_info(g->output[i], &s->outputs[s->n_outputs]);
        if (st) return st;
        if (!s->outputs[s->n_outputs].is_tensor &&
            !sequence_value_info(g->output[i], &s->outputs[s->n_outputs]))
            return ss_errf(SS_ERR_UNSUPPORTED,
                           "graph output '%s' is neither a tensor nor a sequence of tensors", name);
        s->output_ids[s->n_outputs++] = id;
    }
    return NULL;
}

/* ------------------------------------------------------------------ planning */

/* AddressSanitizer: a kept spare and the headroom past a plan's need are poisoned, so a kernel
 * writing past the arena's last value, or a caller still reading a freed plan's outputs, is
 * reported as it was when every plan had an arena of its exact size, freed with it. */
#if defined(__SANITIZE_ADDRESS__)
#define ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARENA_ASAN 1
#endif
#endif
#ifdef ARENA_ASAN
void __asan_poison_memory_region(void const volatile *addr, size_t size);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#define arena_poison(a, n) __asan_poison_memory_region((a), (n))
#define arena_unpoison(a, n) __asan_unpoison_memory_region((a), (n))
#else
#define arena_poison(a, n) ((void)(a), (void)(n))
#define arena_unpoison(a, n) ((void)(a), (void)(n))
#endif

static void arena_drop_spare(ss_session *s)
{
    if (s->spare_arena) arena_unpoison(s->spare_arena, s->spare_bytes);
    free(s->spare_arena);
    s->spare_arena = NULL, s->spare_bytes = 0;
}

/* Arenas outlive their plans: a re-plan (another input shape: a longer past in a decode loop,
 * another batch size) takes the last plan's arena when it is large enough, instead of fresh pages
 * the kernel must fault in and zero on first touch. GPT-2-124M's dense-past decode re-plans every
 * step: before, 25% of a step's samples were its Concats writing a fresh arena, half of them in
 * page faults (AMD EPYC Zen 5 PVM guest, where a fault costs several microseconds). A new arena
 * gets half again the last one's size as headroom (within the run's byte limit), so a slowly
 * growing need allocates a logarithmic number of times; a spare over 4 times the need is freed
 * rather than kept. limit: the most bytes the arena may have (the run's byte limit less what the
 * plan folded from the request's values; 0: none), need <= limit (arena_over_limit). */
static unsigned char *arena_take(ss_session *s, size_t need, size_t limit, size_t *cap)
{
    if (s->spare_arena && s->spare_bytes >= need && s->spare_bytes / 4 <= need &&
        (!limit || s->spare_bytes <= limit)) {
        unsigned char *a = s->spare_arena;
        *cap = s->spare_bytes;
        s->spare_arena = NULL, s->spare_bytes = 0;
        arena_unpoison(a, need);
        return a;
    }
    size_t want = need;
    if (s->spare_bytes < need && s->spare_bytes <= SIZE_MAX / 2) { /* growing: headroom */
        size_t grown = s->spare_bytes + s->spare_bytes / 2;
        if (grown > want) want = grown;
    }
    if (want > SIZE_MAX - ARENA_ALIGN) want = need;
    want = (want + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    /* need is a multiple of ARENA_ALIGN and at most limit: so is the limit rounded down */
    size_t most = limit / ARENA_ALIGN * ARENA_ALIGN;
    if (limit && want > most) want = most > need ? most : need;
    arena_drop_spare(s);
    unsigned char *a = aligned_alloc(ARENA_ALIGN, want);
    if (!a && want > need) a = aligned_alloc(ARENA_ALIGN, want = need);
    *cap = a ? want : 0;
    s->n_arenas += a != NULL;
    if (a && want > need) arena_poison(a + need, want - need);
    return a;
}

/* Keeps a freed plan's arena as the session's spare (the larger of the two) until the call that
 * freed the plan returns (arena_drop_spare): a re-plan in that call takes it. */
static void arena_give(ss_session *s, unsigned char *a, size_t cap)
{
    if (!a) return;
    if (cap > s->spare_bytes) {
        arena_drop_spare(s);
        arena_poison(a, cap);
        s->spare_arena = a, s->spare_bytes = cap;
    } else {
        arena_unpoison(a, cap);
        free(a);
    }
}

static void plan_free(struct ss_plan *p)
{
    if (!p) return;
    ss_session *s = p->s;
    if (p->owned)
        for (int v = 0; v < s->n_values; v++)
            ss_tensor_free(&p->owned[v]);
    if (p->state)
        for (int i = 0; i < s->n_nodes; i++) {
            if (p->state[i] && s->nodes[i].op && s->nodes[i].op->release)
                s->nodes[i].op->release(p->state[i]);
            free(p->state[i]);
        }
    if (p->dep_values)
        for (int i = 0; i < s->n_inputs; i++)
            ss_tensor_free(&p->dep_values[i]);
    free(p->dep_values);
    free(p->value_dep);
    free(p->vals);
    free(p->known);
    free(p->owned);
    free(p->root);
    free(p->state);
    free(p->kctx);
    free(p->ptrs);
    free(p->exec);
    arena_give(s, p->arena, p->arena_cap);
    free(p->input_aliases);
    free(p->out_views);
    free(p->dyn_slot);
    free(p->watch);
    free(p->check);
    free(p->effects);
    free(p->wanted);
    for (int i = 0; p->epi && i < s->n_nodes; i++)
        ss_epilogue_free(p->epi[i]);
    free(p->epi);
    free(p->fuse_next);
    free(p->fuse_head);
    free(p);
}

static ss_status *fold_node(struct ss_plan *p, int ni, ss_kctx *k);

/* Makes value id known at plan time if it is computed from constants and graph inputs whose
 * values the plan is being made for (a Range limit or Slice start derived from an input): the
 * inputs it reaches are copied into the plan and the plan depends on their values (re-planned
 * when they change), and the nodes on the way are folded and leave the exec list. */
static bool plan_resolve(struct ss_plan *p, int id, int depth)
{
    if (p->known[id]) return true;
    const value_def *vd = &p->s->values[id];
    if (vd->kind == V_INPUT) {
        const ss_tensor *t = &p->inputs[vd->input_index];
        if (!t->data && ss_tensor_numel(t) > 0) return false;
        if (ss_tensor_copy(&p->owned[id], t)) return false;
        p->vals[id].data = p->owned[id].data;
        p->value_dep[vd->input_index] = 1;
        p->known[id] = KNOWN_FROM_INPUTS;
        return true;
    }
    int ni = vd->producer;
    if (vd->kind != V_NODE || ni < 0 || depth > 64) return false;
    const node_def *d = &p->s->nodes[ni];
    if (d->op->flags & SS_OPF_NO_FOLD) return false;
    for (int j = 0; j < d->n_in; j++)
        if (d->in_ids[j] >= 0 && !plan_resolve(p, d->in_ids[j], depth + 1)) return false;
    int at = 0; /* found after the inputs: resolving them removes nodes from the list */
    while (at < p->n_exec && p->exec[at] != ni)
        at++;
    if (at == p->n_exec) return false;
    ss_status *st = fold_node(p, ni, &p->kctx[ni]);
    if (st) {
        ss_status_free(st);
        return false;
    }
    memmove(p->exec + at, p->exec + at + 1, sizeof(int) * (size_t)(p->n_exec - at - 1));
    p->n_exec--;
    return true;
}

/* The recorded run-time value of computed value id, if it still fits the plan's dtype and shape. */
static const ss_tensor *seen_value(const struct ss_plan *p, int id)
{
    const ss_tensor *r = p->s->seen ? &p->s->seen[id] : NULL, *v = &p->vals[id];
    if (r && r->dtype != SS_DT_UNDEFINED && r->dtype == v->dtype &&
        ss_shape_equal(r->ndim, r->dims, v->ndim, v->dims))
        return r;
    return NULL;
}

const ss_tensor *ss_kctx_value(ss_kctx *k, int i)
{
    if (i >= k->n_in || !k->in[i]) return NULL;
    struct ss_plan *p = k->plan;
    if (!p) return k->in[i];
    int id = k->in_ids[i];
    if (p->known[id]) return &p->vals[id];
    const value_def *vd = &p->s->values[id];
    if (vd->kind == V_INPUT && p->inputs) {
        /* a subgraph's input planned by shape alone has no value to depend on */
        const ss_tensor *in = &p->inputs[vd->input_index];
        if (!in->data && ss_tensor_numel(in) != 0) return NULL;
        p->value_dep[vd->input_index] = 1;
        return in;
    }
    if (vd->kind != V_NODE) return NULL;
    if (p->n_wanted < p->s->n_values) p->wanted[p->n_wanted++] = id;
    return seen_value(p, id);
}

const ss_tensor *ss_kctx_value_needed(ss_kctx *k, int i)
{
    const ss_tensor *v = ss_kctx_value(k, i);
    struct ss_plan *p = k->plan;
    if (v || !p || !p->inputs) return v;
    return plan_resolve(p, k->in_ids[i], 0) ? &p->vals[k->in_ids[i]] : NULL;
}

const ss_onnx_model *ss_kctx_model(const ss_kctx *k)
{
    return k->plan ? k->plan->s->model : NULL;
}

int ss_kctx_threads(const ss_kctx *k)
{
    return k->threads > 0 ? k->threads : openblas_get_num_threads();
}

void ss_kctx_drop_const_pages(ss_kctx *k, int i)
{
    struct ss_plan *p = k->plan;
    if (!p || i >= k->n_in || k->in_ids[i] < 0) return;
    const value_def *vd = &p->s->values[k->in_ids[i]];
    if (vd->kind != V_CONST) return;
    /* external data: a view into one of the model's read-only file mappings (not resident
     * weights: there MADV_DONTNEED would zero the only copy, and a later plan that packs the
     * weights again, for a new batch size, would read zeros) */
    uintptr_t lo = (uintptr_t)vd->init->data, hi = lo + vd->init->nbytes;
    const ss_onnx_model *m = p->s->model;
    bool mapped = false;
    for (int j = 0; j < m->n_maps && !mapped; j++) {
        uintptr_t b = (uintptr_t)m->maps[j].base;
        mapped = !m->maps[j].resident && lo >= b && hi <= b + m->maps[j].len;
    }
    if (!mapped) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    lo = (lo + page - 1) & ~(page - 1);
    hi &= ~(page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

bool ss_kctx_sole_reader(const ss_kctx *k, int i)
{
    const struct ss_plan *p = k->plan;
    if (!p) return true; /* a node planned alone (the op tests): nothing else reads it */
    if (i >= k->n_in || k->in_ids[i] < 0) return false;
    const ss_session *s = p->s;
    int id = k->in_ids[i], readers = 0;
    for (int m = 0; m < s->n_nodes && readers < 2; m++)
        for (int j = 0; j < s->nodes[m].n_in; j++)
            if (s->nodes[m].in_ids[j] == id) {
                readers++;
                break;
            }
    return readers == 1;
}

struct ss_packed {
    ss_packed *next;
    const void *src;
    void *layout;
    void *data;
    int refs;
};

/* Whether src points into an initializer's bytes, which live as long as the session: only such a
 * source may key a shared copy. A value folded at plan time lives in the plan, and a later plan
 * may get its address for another value (a copy keyed by it would then be another weight's). */
static bool session_owned(const ss_session *s, const void *src)
{
    const ss_onnx_model *m = s->model;
    for (int i = 0; m && i < m->n_init; i++) {
        const char *lo = m->inits[i].tensor.data;
        if (lo && (const char *)src >= lo && (const char *)src < lo + m->inits[i].tensor.nbytes)
            return true;
    }
    return false;
}

ss_packed *ss_kctx_packed_find(ss_kctx *k, const void *src, const void *layout,
                               bool (*same)(const void *a, const void *b))
{
    if (!k->plan || !session_owned(k->plan->s, src)) return NULL;
    for (ss_packed *e = k->plan->s->packed; e; e = e->next)
        if (e->src == src && same(e->layout, layout)) {
            e->refs++;
            return e;
        }
    return NULL;
}

static void packed_free(ss_packed *e)
{
    free(e->layout);
    free(e->data);
    free(e);
}

ss_packed *ss_kctx_packed_add(ss_kctx *k, const void *src, const void *layout, size_t layout_len,
                              void *data)
{
    if (!k->plan || !session_owned(k->plan->s, src)) return NULL; /* the caller keeps data */
    ss_session *s = k->plan->s;
    for (ss_packed **pe = &s->packed; *pe;) { /* unused copies of src in other layouts go */
        ss_packed *e = *pe;
        if (e->src == src && e->refs == 0) {
            *pe = e->next;
            packed_free(e);
        } else {
            pe = &e->next;
        }
    }
    ss_packed *e = calloc(1, sizeof *e);
    void *copy = malloc(layout_len);
    if (!e || !copy) {
        free(e);
        free(copy);
        return NULL;
    }
    memcpy(copy, layout, layout_len);
    *e = (ss_packed){.next = s->packed, .src = src, .layout = copy, .data = data, .refs = 1};
    s->packed = e;
    return e;
}

void *ss_packed_data(const ss_packed *p)
{
    return p->data;
}

void ss_packed_release(ss_packed *p)
{
    if (p) p->refs--;
}

/* A kernel run at plan time (constant folding) gets its scratch from the heap. */
static ss_status *fold_run(const node_def *d, ss_kctx *k)
{
    void *scratch = NULL;
    if (k->scratch_bytes) {
        scratch = aligned_alloc(ARENA_ALIGN,
                                (k->scratch_bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN);
        if (!scratch)
            return ss_op_err(k, SS_ERR_NOMEM, "cannot allocate %zu bytes of scratch",
                             k->scratch_bytes);
    }
    k->scratch = scratch ? scratch : no_bytes;
    ss_status *st = d->op->run(k);
    k->scratch = NULL;
    free(scratch);
    return st;
}

static ss_status *fold_node(struct ss_plan *p, int ni, ss_kctx *k)
{
    const node_def *d = &p->s->nodes[ni];
    unsigned char known = 1; /* an input not known (its shape read by Shape, Size) is a request's */
    for (int j = 0; j < d->n_in; j++)
        if (d->in_ids[j] >= 0)
            known |= p->known[d->in_ids[j]] ? p->known[d->in_ids[j]] : KNOWN_FROM_INPUTS;
    for (int j = 0; j < d->n_out; j++) {
        int v = d->out_ids[j];
        if (v < 0) continue;
        if ((d->op->flags & SS_OPF_ALIAS) && j == 0) {
            ss_tensor *src = k->in[0];
            p->vals[v].data = src->data;
            p->vals[v].nbytes = src->nbytes;
            p->vals[v].storage = SS_STORE_BORROWED;
        } else {
            ss_tensor *o = &p->owned[v];
            size_t max = p->s->guard->max_bytes; /* the model's own constants are not bounded */
            if (max && known == KNOWN_FROM_INPUTS && p->vals[v].nbytes > max - p->input_fold_bytes)
                return ss_op_err(k, SS_ERR_LIMIT,
                                 "output '%s' would be a constant of %zu bytes computed from the "
                                 "request (%zu more before it), above the limit of %zu bytes one "
                                 "run may take (max_run_bytes; an agent's SHARDSERVE_RANK_RUN_MB)",
                                 p->s->values[v].name, p->vals[v].nbytes, p->input_fold_bytes, max);
            if (known == KNOWN_FROM_INPUTS) p->input_fold_bytes += p->vals[v].nbytes;
            ss_status *st = ss_tensor_alloc(o, p->vals[v].dtype, p->vals[v].ndim, p->vals[v].dims);
            if (st) return st;
            p->vals[v].data = o->data;
            p->vals[v].nbytes = o->nbytes;
            p->vals[v].storage = SS_STORE_BORROWED;
            p->const_bytes += o->nbytes;
        }
    }
    if (!(d->op->flags & SS_OPF_ALIAS)) {
        ss_status *st = fold_run(d, k);
        if (st) return st;
    }
    for (int j = 0; j < d->n_out; j++)
        if (d->out_ids[j] >= 0) p->known[d->out_ids[j]] = known;
    return NULL;
}

/* A data-dependent output keeps its bound's bytes (p->dyn_slot, which sizes its arena slot) but
 * consumers are planned for the shape last seen, when it fits in the bound. */
static ss_status *dyn_assume(struct ss_plan *p, const node_def *d)
{
    ss_session *s = p->s;
    if (!s->dyn && !(s->dyn = calloc((size_t)s->n_values + 1, sizeof *s->dyn)))
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    for (int j = 0; j < d->n_out; j++) {
        int v = d->out_ids[j];
        if (v < 0) continue;
        ss_tensor *o = &p->vals[v];
        struct dyn_shape *a = &s->dyn[v];
        p->dyn_slot[v] = o->nbytes;
        if (a->set && a->ndim == o->ndim &&
            ss_shape_numel(a->ndim, a->dims) <= ss_shape_numel(o->ndim, o->dims)) {
            memcpy(o->dims, a->dims, sizeof(int64_t) * (size_t)a->ndim);
            o->nbytes = (size_t)ss_tensor_numel(o) * ss_dtype_size(o->dtype);
        }
        *a = (struct dyn_shape){.set = true, .ndim = o->ndim};
        memcpy(a->dims, o->dims, sizeof a->dims);
    }
    return NULL;
}

/* The computed values node d asked for while inferring (st is infer's result). After a success
 * those it read from s->seen are watched. After an UNSUPPORTED failure with one of them not
 * recorded, the plan ends here (p->partial; planning stops without error) and all of them are
 * watched, so the run records them and plans again. */
static ss_status *watch_wanted(struct ss_plan *p, const node_def *d, ss_status *st)
{
    bool missing = false;
    for (int i = 0; i < p->n_wanted; i++) {
        bool have = seen_value(p, p->wanted[i]) != NULL;
        missing = missing || !have;
        if (have) p->watch[p->wanted[i]] = 1;
    }
    if (!st || st->code != SS_ERR_UNSUPPORTED || !missing) return st;
    for (int i = 0; i < p->n_wanted; i++)
        p->watch[p->wanted[i]] = 1;
    SS_DEBUG("the plan stops before node '%s' until a computed value is known (%s)", d->name,
             st->msg);
    ss_status_free(st);
    p->partial = true;
    return NULL;
}

/* SS_ERR_LIMIT when an output a run computes (or the node's scratch) alone is over the session's
 * bound, named when inferred rather than when the arena is laid out. */
static ss_status *outputs_over_limit(const struct ss_plan *p, const ss_kctx *k)
{
    size_t max = p->s->guard->max_bytes;
    if (p->s->nodes[k - p->kctx].op->flags & SS_OPF_ALIAS) return NULL; /* a view: no bytes */
    for (int j = 0; max && j < k->n_out; j++)
        if (k->out[j] && k->out[j]->nbytes > max)
            return ss_op_err(k, SS_ERR_LIMIT,
                             "output '%s' would be %zu bytes, above the limit of %zu bytes one "
                             "run may take (max_run_bytes; an agent's SHARDSERVE_RANK_RUN_MB)",
                             p->s->values[p->s->nodes[k - p->kctx].out_ids[j]].name,
                             k->out[j]->nbytes, max);
    if (max && k->scratch_bytes > max)
        return ss_op_err(k, SS_ERR_LIMIT,
                         "needs %zu bytes of scratch, above the limit of %zu bytes one run may "
                         "take (max_run_bytes; an agent's SHARDSERVE_RANK_RUN_MB)",
                         k->scratch_bytes, max);
    return NULL;
}

static ss_status *infer_node(struct ss_plan *p, int ni, ss_tensor **ptrs)
{
    ss_session *s = p->s;
    const node_def *d = &s->nodes[ni];
    ss_kctx *k = &p->kctx[ni];
    k->node = d->node;
    k->node_name = d->name;
    k->opset = d->opset;
    k->n_in = d->n_in;
    k->n_out = d->n_out;
    k->in = ptrs;
    k->out = ptrs + d->n_in;
    k->coll = s->opt.coll;
    k->plan = p;
    k->in_ids = d->in_ids;
    k->threads = s->opt.blas_threads > 0 ? s->opt.blas_threads : openblas_get_num_threads();
    k->weights = s->opt.weights;
    k->kvpool = s->kvpool;
    k->guard = s->guard;
    int all_known = 1;
    for (int j = 0; j < d->n_in; j++) {
        int v = d->in_ids[j];
        k->in[j] = v >= 0 ? &p->vals[v] : NULL;
        if (v >= 0 && !p->known[v]) all_known = 0;
    }
    for (int j = 0; j < d->n_out; j++) {
        int v = d->out_ids[j];
        k->out[j] = v >= 0 ? &p->vals[v] : NULL;
        if (v >= 0) memset(&p->vals[v], 0, sizeof p->vals[v]);
    }
    p->n_wanted = 0;
    ss_status *st = watch_wanted(p, d, d->op->infer(k));
    p->state[ni] = k->state;
    if (p->partial) p->stop_node = ni;
    if (st || p->partial) return st;
    for (int j = 0; j < d->n_out; j++) {
        ss_tensor *o = k->out[j];
        if (!o) continue;
        size_t es = ss_dtype_size(o->dtype);
        int64_t numel = ss_tensor_numel(o);
        if (es == 0 || numel < 0)
            return ss_op_err(k, SS_ERR_INTERNAL, "inferred an invalid output %d", j);
        if ((uint64_t)numel > VALUE_MAX / es) /* sums of sizes stay far from wrapping */
            return ss_op_err(k, SS_ERR_LIMIT,
                             "output %d would be %lld elements of %zu bytes: "
                             "over 2^62 bytes",
                             j, (long long)numel, es);
        o->nbytes = (size_t)numel * es;
    }
    if (k->scratch_bytes > VALUE_MAX)
        return ss_op_err(k, SS_ERR_LIMIT, "needs %zu bytes of scratch: over 2^62",
                         k->scratch_bytes);
    bool strings_out = false;
    for (int j = 0; j < d->n_out; j++)
        strings_out = strings_out || (k->out[j] && k->out[j]->dtype == SS_DT_STRING);
    bool string_op = strings_out && (d->op->flags & SS_OPF_STRING_OUT);
    bool foldable = !(d->op->flags & SS_OPF_NO_FOLD) && !string_op &&
                    (all_known || (d->op->flags & SS_OPF_SHAPE_ONLY));
    if (foldable) return fold_node(p, ni, k);
    if ((st = outputs_over_limit(p, k))) return st;
    if ((d->op->flags & SS_OPF_DYNAMIC_SHAPE) && (st = dyn_assume(p, d))) return st;
    if (strings_out && !string_op)
        return ss_op_err(k, SS_ERR_UNSUPPORTED,
                         "string tensors computed at run time are not "
                         "supported");
    p->exec[p->n_exec++] = ni;
    return NULL;
}

/* ------------------------------------------------------------------ element-wise fusion
 * After every node is inferred, each exec node (the head) takes the element-wise nodes after it
 * as epilogue steps (ops/fusion.h) while the value between them has exactly one reader and is no
 * graph output: the head then writes the chain's last value, the absorbed nodes leave the exec
 * list and the values between get no buffer. A step's other operand must be a constant or a
 * value computed before the head runs. Plans with data-dependent shapes are left alone. */

typedef struct {
    int *uses; /* per value: readers (graph outputs count 3, so they never match a pattern) */
    int *user; /* per value: a reading node */
    int *pos;  /* per node: exec position, -1 if it does not run */
} fuse_graph;

/* Whether value v holds its bytes when the head at exec position `at` runs: it is computed by a
 * node that runs earlier, and is not a value inside an earlier chain (only a chain's last value
 * gets written). */
static bool fuse_ready(const struct ss_plan *p, const fuse_graph *g, int v, int at)
{
    const value_def *vd = &p->s->values[v];
    if (p->known[v] || vd->kind == V_INPUT) return true;
    if (vd->producer < 0) return false;
    int writer = p->fuse_head[vd->producer] >= 0 ? p->fuse_head[vd->producer] : vd->producer;
    if (g->pos[writer] < 0 || g->pos[writer] >= at) return false;
    return p->epi[writer] ? p->kctx[writer].out[0] == &p->vals[v] : writer == vd->producer;
}

static void fuse_link(struct ss_plan *p, int head, int *tail, int b)
{
    p->fuse_next[*tail] = b;
    p->fuse_next[b] = -1;
    p->fuse_head[b] = head;
    *tail = b;
    p->n_fused++;
}

/* Undoes the last fuse_link (b, linked after `before`). */
static void fuse_unlink(struct ss_plan *p, int before, int *tail, int b)
{
    p->fuse_next[before] = -1;
    p->fuse_next[b] = p->fuse_head[b] = -1;
    *tail = before;
    p->n_fused--;
}

static bool has_subgraph(const ss_onnx_node *n);

/* Whether the node computing the single value u, which runs after head, may run just before it
 * (everything it reads is ready then), so a step after head can take u as its operand
 * (quantize_dynamic writes the Mul of activation and weight scales after the MatMulInteger those
 * scales apply to). Only nodes whose outputs are single values move, so no buffer lives longer,
 * and none with effects (a collective, or a subgraph that may hold one: collectives keep their
 * order across ranks). */
static bool fuse_movable(const struct ss_plan *p, const fuse_graph *g, int head, int u)
{
    int b = p->s->values[u].producer;
    if (p->known[u] || b < 0 || g->pos[b] <= g->pos[head] || p->fuse_head[b] >= 0 || p->epi[b])
        return false;
    const node_def *bd = &p->s->nodes[b];
    if ((bd->op->flags & (SS_OPF_NO_FOLD | SS_OPF_DYNAMIC_SHAPE | SS_OPF_STRING_OUT)) ||
        has_subgraph(bd->node))
        return false;
    for (int j = 0; j < bd->n_out; j++)
        if (bd->out_ids[j] >= 0 && ss_tensor_numel(&p->vals[bd->out_ids[j]]) != 1) return false;
    for (int j = 0; j < bd->n_in; j++)
        if (bd->in_ids[j] >= 0 && !fuse_ready(p, g, bd->in_ids[j], g->pos[head])) return false;
    return true;
}

/* Runs the node computing u (fuse_movable) just before head, unless it already runs before it
 * (u read twice by the step). */
static void fuse_move(struct ss_plan *p, const fuse_graph *g, int head, int u)
{
    int b = p->s->values[u].producer, at = g->pos[head], from = g->pos[b];
    if (from < at) return;
    memmove(p->exec + at + 1, p->exec + at, sizeof(int) * (size_t)(from - at));
    p->exec[at] = b;
    for (int e = at; e <= from; e++)
        g->pos[p->exec[e]] = e;
}

/* The single reader of v as a step of ep (with scalars_only, only when its other operands are
 * scalar constants); returns the node or -1. */
static int fuse_step(struct ss_plan *p, const fuse_graph *g, ss_epilogue *ep, int head, int v,
                     bool scalars_only)
{
    int b = g->user[v];
    const node_def *bd = &p->s->nodes[b];
    if (g->pos[b] < 0 || bd->n_out != 1 || bd->out_ids[0] < 0 || bd->n_in > 8) return -1;
    bool ready[8], move[8];
    int chain = -1;
    for (int j = 0; j < bd->n_in; j++) {
        int u = bd->in_ids[j];
        if (u == v) chain = j;
        ready[j] = u >= 0 && u != v && fuse_ready(p, g, u, g->pos[head]);
        move[j] = u >= 0 && u != v && !ready[j] && fuse_movable(p, g, head, u);
        ready[j] = ready[j] || move[j];
        if (scalars_only && u >= 0 && u != v && (!p->known[u] || ss_tensor_numel(&p->vals[u]) != 1))
            return -1;
    }
    ss_kctx *k = &p->kctx[b];
    if (chain < 0 ||
        !ss_epilogue_add_node(ep, bd->node, bd->opset, bd->n_in, k->in, ready, chain, k->out[0]))
        return -1;
    for (int j = 0; j < bd->n_in; j++) /* the step joined: its operands' nodes move */
        if (move[j]) fuse_move(p, g, head, bd->in_ids[j]);
    return b;
}

/* The only running node reading value u, when it has type `op`; else -1. */
static int fuse_only_user(const struct ss_plan *p, const fuse_graph *g, int u, const char *op)
{
    if (u < 0 || g->uses[u] != 1) return -1;
    int b = g->user[u];
    const node_def *bd = &p->s->nodes[b];
    return g->pos[b] >= 0 && bd->n_out == 1 && !strcmp(bd->node->op_type, op) &&
                   (!bd->node->domain || !bd->node->domain[0])
               ? b
               : -1;
}

/* A float32 scalar constant input j of node ni (dflt when omitted). */
static bool fuse_scalar(const struct ss_plan *p, int ni, int j, float dflt, float *out)
{
    const node_def *d = &p->s->nodes[ni];
    *out = dflt;
    if (j >= d->n_in || d->in_ids[j] < 0) return true;
    const ss_tensor *t = &p->vals[d->in_ids[j]];
    if (!p->known[d->in_ids[j]] || t->dtype != SS_DT_FLOAT32 || ss_tensor_numel(t) != 1)
        return false;
    *out = *(const float *)t->data;
    return true;
}

/* Clip's constant bounds: inputs from opset 11, attributes before (Paddle exports opset 9). */
static bool fuse_clip_bounds(const struct ss_plan *p, int clip, float *lo, float *hi)
{
    const node_def *d = &p->s->nodes[clip];
    if (d->opset >= 11)
        return fuse_scalar(p, clip, 1, -INFINITY, lo) && fuse_scalar(p, clip, 2, INFINITY, hi);
    *lo = ss_onnx_attr_float(d->node, "min", -3.402823466e+38f);
    *hi = ss_onnx_attr_float(d->node, "max", 3.402823466e+38f);
    return d->n_in == 1;
}

/* The first node after head that runs `op` with two inputs, the first of them v; else -1. */
static int fuse_first_reader(const struct ss_plan *p, const fuse_graph *g, int head, int v,
                             const char *op)
{
    for (int e = g->pos[head] + 1; e < p->n_exec; e++) {
        const node_def *d = &p->s->nodes[p->exec[e]];
        if (!strcmp(d->node->op_type, op) && d->n_in == 2 && d->in_ids[0] == v) return p->exec[e];
    }
    return -1;
}

/* The only reader of u when it is Mul(u, v) or Mul(v, u) of v's shape (a constant on the way
 * from v to u must not have broadcast it to a higher rank); else -1. */
static int fuse_mul_of(const struct ss_plan *p, const fuse_graph *g, int u, int v)
{
    int mul = fuse_only_user(p, g, u, "Mul");
    if (mul < 0 || p->s->nodes[mul].n_in != 2) return -1;
    const int *mi = p->s->nodes[mul].in_ids;
    const ss_tensor *y = &p->vals[p->s->nodes[mul].out_ids[0]], *x = &p->vals[v];
    if (!ss_shape_equal(y->ndim, y->dims, x->ndim, x->dims)) return -1;
    return (mi[0] == v && mi[1] == u) || (mi[1] == v && mi[0] == u) ? mul : -1;
}

/* v read by Add(v, a) -> Clip(lo, hi) -> Mul(v, .) and nothing else (Paddle's HardSwish):
 * one step; returns the Mul or -1. */
static int fuse_xclip(struct ss_plan *p, const fuse_graph *g, ss_epilogue *ep, int head, int v,
                      int *tail)
{
    const ss_session *s = p->s;
    int add = fuse_first_reader(p, g, head, v, "Add");
    float a, lo, hi;
    if (add < 0 || !fuse_scalar(p, add, 1, 0, &a) || s->nodes[add].in_ids[1] < 0) return -1;
    int clip = fuse_only_user(p, g, s->nodes[add].out_ids[0], "Clip");
    if (clip < 0 || !fuse_clip_bounds(p, clip, &lo, &hi)) return -1;
    int mul = fuse_mul_of(p, g, s->nodes[clip].out_ids[0], v);
    if (mul < 0 || !ss_epilogue_add_xclip(ep, a, lo, hi)) return -1;
    fuse_link(p, head, tail, add);
    fuse_link(p, head, tail, clip);
    fuse_link(p, head, tail, mul);
    return mul;
}

/* v read by Div(v, c) -> Erf -> Add(., b) -> Mul(v, .) and nothing else (the exact GELU as
 * exporters decompose it): one step; returns the Mul or -1. */
static int fuse_gelu(struct ss_plan *p, const fuse_graph *g, ss_epilogue *ep, int head, int v,
                     int *tail)
{
    const ss_session *s = p->s;
    int div = fuse_first_reader(p, g, head, v, "Div");
    float c, b;
    if (div < 0 || s->nodes[div].in_ids[1] < 0 || !fuse_scalar(p, div, 1, 0, &c)) return -1;
    int erf = fuse_only_user(p, g, s->nodes[div].out_ids[0], "Erf");
    if (erf < 0 || s->nodes[erf].n_in != 1) return -1;
    int e_out = s->nodes[erf].out_ids[0];
    int add = fuse_only_user(p, g, e_out, "Add");
    if (add < 0 || s->nodes[add].n_in != 2) return -1;
    int bj = s->nodes[add].in_ids[0] == e_out ? 1 : 0; /* the constant's input */
    if (s->nodes[add].in_ids[1 - bj] != e_out || s->nodes[add].in_ids[bj] < 0 ||
        !fuse_scalar(p, add, bj, 0, &b))
        return -1;
    int mul = fuse_mul_of(p, g, s->nodes[add].out_ids[0], v);
    if (mul < 0 || !ss_epilogue_add_gelu(ep, c, b)) return -1;
    fuse_link(p, head, tail, div);
    fuse_link(p, head, tail, erf);
    fuse_link(p, head, tail, add);
    fuse_link(p, head, tail, mul);
    return mul;
}

/* The group fuse_gelu_tanh collects: element-wise nodes computing f(v) from v and scalars. */
#define GT_MAX_NODES 12
typedef struct {
    int n, nodes[GT_MAX_NODES];
    int vals[GT_MAX_NODES + 1]; /* vals[0] = v, vals[i + 1] = nodes[i]'s output */
    int reads[GT_MAX_NODES + 1];
} gt_group;

/* The ops a group may hold, and what each computes of its one or two inputs. */
typedef enum { GT_MUL, GT_ADD, GT_SUB, GT_DIV, GT_POW, GT_TANH, GT_NONE } gt_op;
static const char *const gt_ops[] = {"Mul", "Add", "Sub", "Div", "Pow", "Tanh"};

static gt_op gt_op_of(const ss_onnx_node *n)
{
    if (n->domain && n->domain[0]) return GT_NONE;
    for (int i = 0; i < GT_NONE; i++)
        if (!strcmp(n->op_type, gt_ops[i])) return (gt_op)i;
    return GT_NONE;
}

static double gt_apply(gt_op op, const double *in)
{
    switch (op) {
    case GT_MUL:
        return in[0] * in[1];
    case GT_ADD:
        return in[0] + in[1];
    case GT_SUB:
        return in[0] - in[1];
    case GT_DIV:
        return in[0] / in[1];
    case GT_POW:
        return pow(in[0], in[1]);
    case GT_TANH:
        return tanh(in[0]);
    default:
        return NAN;
    }
}

static int gt_index(const gt_group *gr, int u)
{
    for (int i = 0; i <= gr->n; i++)
        if (gr->vals[i] == u) return i;
    return -1;
}

/* f(x) as the group computes it, in double; NAN when an op is not one it knows. */
static double gt_eval(const struct ss_plan *p, const gt_group *gr, double x)
{
    double val[GT_MAX_NODES + 1];
    val[0] = x;
    for (int i = 0; i < gr->n; i++) {
        const node_def *d = &p->s->nodes[gr->nodes[i]];
        double in[2] = {0, 0};
        for (int j = 0; j < d->n_in && j < 2; j++) {
            int k = gt_index(gr, d->in_ids[j]);
            in[j] = k >= 0 ? val[k] : *(const float *)p->vals[d->in_ids[j]].data;
        }
        val[i + 1] = gt_apply(gt_op_of(d->node), in);
    }
    return val[gr->n];
}

/* Whether node ni can join the group: one of gt_ops, reading group values and float32 scalar
 * constants only, at least one group value, its output of v's shape. */
static bool gt_member(const struct ss_plan *p, const gt_group *gr, int ni)
{
    const node_def *d = &p->s->nodes[ni];
    gt_op op = gt_op_of(d->node);
    bool reads = false;
    if (op == GT_NONE || d->n_out != 1 || d->out_ids[0] < 0 || d->n_in > 2 ||
        d->n_in < (op == GT_TANH ? 1 : 2) || p->fuse_head[ni] >= 0)
        return false;
    for (int j = 0; j < d->n_in; j++) {
        int u = d->in_ids[j];
        float c;
        if (u >= 0 && gt_index(gr, u) >= 0)
            reads = true;
        else if (u < 0 || !fuse_scalar(p, ni, j, 0, &c))
            return false;
    }
    const ss_tensor *y = &p->vals[d->out_ids[0]], *x = &p->vals[gr->vals[0]];
    return reads && ss_shape_equal(y->ndim, y->dims, x->ndim, x->dims);
}

/* v read only by a group of element-wise nodes that computes GELU's tanh approximation of it
 * (GPT-2's 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), in whatever order and spelling the
 * exporter chose: x * x * x or Pow(x, 3), the 0.5 first or last): one step. The group is the
 * nodes after head that read v or each other's outputs; it must be closed (every value but the
 * last read by the group alone) and equal the formula at probe points (a closed group that does
 * not yet may still grow into one). Returns the last node or -1. */
static int fuse_gelu_tanh(struct ss_plan *p, const fuse_graph *g, ss_epilogue *ep, int head, int v,
                          int *tail)
{
    static const double probes[] = {-7, -3.1, -2, -1.3, -0.6, -0.11, 0, 0.02, 0.37, 1, 1.9, 4.2, 9};
    gt_group gr = {.n = 0, .vals = {v}};
    int last = g->pos[head] + 4 * GT_MAX_NODES; /* exporters emit the group together */
    for (int e = g->pos[head] + 1; e < p->n_exec && e <= last && gr.n < GT_MAX_NODES; e++) {
        int ni = p->exec[e];
        if (!gt_member(p, &gr, ni)) continue;
        const node_def *d = &p->s->nodes[ni];
        for (int j = 0; j < d->n_in; j++) {
            int k = gt_index(&gr, d->in_ids[j]);
            if (k >= 0) gr.reads[k]++;
        }
        gr.nodes[gr.n++] = ni;
        gr.vals[gr.n] = d->out_ids[0];
        gr.reads[gr.n] = 0;
        bool closed = true; /* every value but the newest is read within the group only */
        for (int i = 0; i < gr.n && closed; i++)
            closed = g->uses[gr.vals[i]] == gr.reads[i];
        if (!closed) continue;
        bool gelu = true; /* else a later node may complete it (x (1 + tanh ...) before the 0.5) */
        for (size_t i = 0; i < sizeof probes / sizeof *probes && gelu; i++) {
            double x = probes[i];
            double want = 0.5 * x * (1 + tanh(SS_GELU_TANH_K * (x + SS_GELU_TANH_C * x * x * x)));
            gelu = fabs(gt_eval(p, &gr, x) - want) <= 1e-5 * (1 + fabs(want));
        }
        if (!gelu) continue;
        if (!ss_epilogue_add_gelu_tanh(ep)) return -1;
        for (int i = 0; i < gr.n; i++)
            fuse_link(p, head, tail, gr.nodes[i]);
        return gr.nodes[gr.n - 1];
    }
    return -1;
}

/* The next step (or group of nodes run as one) reading v; returns its last node or -1. */
static int fuse_next(struct ss_plan *p, const fuse_graph *g, ss_epilogue *ep, int head, int v,
                     bool scalars_only, int *tail)
{
    int b = -1;
    if (g->uses[v] == 1 && (b = fuse_step(p, g, ep, head, v, scalars_only)) >= 0)
        fuse_link(p, head, tail, b);
    else if (g->uses[v] == 2 && (b = fuse_xclip(p, g, ep, head, v, tail)) < 0)
        b = fuse_gelu(p, g, ep, head, v, tail);
    if (b < 0 && g->uses[v] >= 2) b = fuse_gelu_tanh(p, g, ep, head, v, tail);
    return b;
}

/* The only reader of v when it is an alias (Reshape, Flatten, Squeeze, Unsqueeze) of a MatMul's
 * or Gemm's output, the same elements under another shape (Hugging Face's GPT-2 reshapes its MLP's
 * first Gemm before the GELU); else -1. The chain may go on through it, with steps that take
 * scalar operands only (their shapes are the alias's, the epilogue's the head's). */
static int fuse_rename(const struct ss_plan *p, const fuse_graph *g, int head, int v)
{
    const node_def *hd = &p->s->nodes[head];
    if ((strcmp(hd->node->op_type, "MatMul") && strcmp(hd->node->op_type, "Gemm")) ||
        (hd->node->domain && hd->node->domain[0]))
        return -1;
    int b = g->user[v];
    const node_def *bd = &p->s->nodes[b];
    if (g->pos[b] < 0 || !(bd->op->flags & SS_OPF_ALIAS) || bd->n_out != 1 || bd->out_ids[0] < 0 ||
        bd->in_ids[0] != v || p->known[bd->out_ids[0]])
        return -1;
    const ss_tensor *x = &p->vals[v], *y = &p->vals[bd->out_ids[0]];
    return y->dtype == SS_DT_FLOAT32 && ss_tensor_numel(x) == ss_tensor_numel(y) ? b : -1;
}

static bool fuse_head_ok(const struct ss_plan *p, int ni)
{
    const node_def *d = &p->s->nodes[ni];
    unsigned bad = SS_OPF_ALIAS | SS_OPF_DYNAMIC_SHAPE | SS_OPF_STRING_OUT;
    return !(d->op->flags & bad) && d->n_out == 1 && d->out_ids[0] >= 0 &&
           (p->vals[d->out_ids[0]].dtype == SS_DT_FLOAT32 || d->op->write_float) &&
           p->fuse_head[ni] < 0 && !p->epi[ni];
}

/* The Cast to float32 that is the only reader of head's (integer) output, when head writes its
 * values itself (op.h: write_float): the Cast joins the chain; returns its output or -1. */
static int fuse_cast(struct ss_plan *p, const fuse_graph *g, int head, int *tail)
{
    const ss_op_def *op = p->s->nodes[head].op;
    int c = op->write_float ? fuse_only_user(p, g, p->s->nodes[head].out_ids[0], "Cast") : -1;
    int y = c >= 0 ? p->s->nodes[c].out_ids[0] : -1;
    if (y < 0 || p->vals[y].dtype != SS_DT_FLOAT32 || p->known[y]) return -1;
    ss_kctx *k = &p->kctx[head];
    ss_tensor *was = k->out[0];
    k->out[0] = &p->vals[y];
    if (!op->write_float(k)) {
        k->out[0] = was;
        return -1;
    }
    fuse_link(p, head, tail, c);
    return y;
}

/* Grows head's chain as far as it goes. */
static ss_status *fuse_chain(struct ss_plan *p, const fuse_graph *g, int head)
{
    int v = p->s->nodes[head].out_ids[0], tail = head;
    bool cast = p->vals[v].dtype != SS_DT_FLOAT32; /* through a Cast the head writes (fuse_cast) */
    if (cast && (v = fuse_cast(p, g, head, &tail)) < 0) return NULL;
    ss_epilogue *ep = ss_epilogue_new(&p->vals[v], p->kctx[head].threads);
    if (!ep) return ss_errf(SS_ERR_NOMEM, "out of memory");
    bool renamed = false; /* through an alias: scalar operands only from there */
    for (;;) {
        int b = fuse_next(p, g, ep, head, v, renamed, &tail), r;
        if (b < 0 && g->uses[v] == 1 && (r = fuse_rename(p, g, head, v)) >= 0) {
            int before = tail; /* the alias joins only when a step follows it */
            fuse_link(p, head, &tail, r);
            b = fuse_next(p, g, ep, head, p->s->nodes[r].out_ids[0], true, &tail);
            if (b < 0) fuse_unlink(p, before, &tail, r);
            renamed |= b >= 0;
        }
        if (b < 0) break;
        v = p->s->nodes[b].out_ids[0];
    }
    if (ss_epilogue_steps(ep) == 0 && !cast) {
        ss_epilogue_free(ep);
        return NULL;
    }
    SS_DEBUG("fusion: node '%s' runs %d element-wise steps after itself, up to value '%s'",
             p->s->nodes[head].name, ss_epilogue_steps(ep), p->s->values[v].name);
    p->epi[head] = ep;
    p->kctx[head].out[0] = &p->vals[v]; /* the head writes the chain's last value */
    const ss_op_def *op = p->s->nodes[head].op;
    return op->fuse ? op->fuse(&p->kctx[head], ep) : NULL;
}

static ss_status *fuse_alloc(struct ss_plan *p, fuse_graph *g)
{
    int nv = p->s->n_values, nn = p->s->n_nodes;
    p->epi = calloc((size_t)nn + 1, sizeof *p->epi);
    p->fuse_next = malloc(sizeof(int) * ((size_t)nn + 1));
    p->fuse_head = malloc(sizeof(int) * ((size_t)nn + 1));
    g->uses = calloc((size_t)nv + 1, sizeof(int));
    g->user = calloc((size_t)nv + 1, sizeof(int));
    g->pos = malloc(sizeof(int) * ((size_t)nn + 1));
    if (!p->epi || !p->fuse_next || !p->fuse_head || !g->uses || !g->user || !g->pos)
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    for (int i = 0; i < nn; i++)
        p->fuse_next[i] = p->fuse_head[i] = g->pos[i] = -1;
    return NULL;
}

static ss_status *fuse_plan(struct ss_plan *p)
{
    ss_session *s = p->s;
    if (!ss_fusion_enabled() || p->partial) return NULL;
    for (int e = 0; e < p->n_exec; e++)
        if (p->check[p->exec[e]]) return NULL;
    fuse_graph g = {0};
    ss_status *st = fuse_alloc(p, &g);
    for (int i = 0; !st && i < s->n_nodes; i++)
        for (int j = 0; j < s->nodes[i].n_in; j++)
            if (s->nodes[i].in_ids[j] >= 0)
                g.uses[s->nodes[i].in_ids[j]]++, g.user[s->nodes[i].in_ids[j]] = i;
    for (int i = 0; !st && i < s->n_outputs; i++)
        g.uses[s->output_ids[i]] += 3;
    for (int e = 0; !st && e < p->n_exec; e++)
        g.pos[p->exec[e]] = e;
    for (int e = 0; !st && e < p->n_exec; e++)
        if (fuse_head_ok(p, p->exec[e])) st = fuse_chain(p, &g, p->exec[e]);
    int n = 0;
    for (int e = 0; !st && e < p->n_exec; e++)
        if (p->fuse_head[p->exec[e]] < 0) p->exec[n++] = p->exec[e];
    if (!st) p->n_exec = n;
    free(g.uses);
    free(g.user);
    free(g.pos);
    return st;
}

int ss_session_fused_nodes(const ss_session *s)
{
    return s->plan ? s->plan->n_fused : 0;
}

/* ------------------------------------------------------------------ layout pass
 * oneDNN's convolutions compute in a blocked layout (nChw16c...) and used to reorder X into it
 * and Y out of it on every run. After fusion, in run order, a node with the relayout hook
 * (op.h) learns the layout its input 0 arrives in, and keeps its output in its kernel's layout
 * when every reader of that value takes such a layout (layout_ok: a Conv on oneDNN, a MaxPool
 * then run on oneDNN's pooling) and nothing else sees its bytes: not a graph output, a value
 * shape inference reads, an alias (Reshape), an operand of a fused step (unless the step's head
 * takes it in any layout: layout_operand, a residual Add run as a Conv's sum post-op) or any
 * other reader.
 * Otherwise the node writes plain NC[D]HW itself (its own reorder), so a value in a library
 * layout never reaches a kernel that reads plain tensors. Blocked layouts pad the channels,
 * so such a value's arena slot grows to the layout's size (dyn_slot, as a bound's). Plans with
 * data-dependent shapes or a value read back at run time are left plain, as fusion leaves them. */

/* Whether node ni takes value v as input 0 in a library layout, and reads v nowhere else. */
static bool layout_reader_ok(const struct ss_plan *p, int ni, int v)
{
    const node_def *d = &p->s->nodes[ni];
    if (p->fuse_head && p->fuse_head[ni] >= 0) {
        /* a fused step reading v as an operand its head's kernel takes in any layout */
        int h = p->fuse_head[ni], reads = 0;
        const ss_op_def *hop = p->s->nodes[h].op;
        for (int j = 0; j < d->n_in; j++)
            reads += d->in_ids[j] == v;
        return reads == 1 && hop->layout_operand && hop->layout_ok && hop->layout_ok(&p->kctx[h]) &&
               hop->layout_operand(&p->kctx[h]) == &p->vals[v];
    }
    if (!d->op->layout_ok || d->in_ids[0] != v) return false;
    for (int j = 1; j < d->n_in; j++)
        if (d->in_ids[j] == v) return false;
    for (int e = 0; e < p->n_exec; e++)
        if (p->exec[e] == ni) return d->op->layout_ok(&p->kctx[ni]);
    return false;
}

/* Whether the value node ni writes may stay in its kernel's layout. */
static bool layout_keep(const struct ss_plan *p, int ni, int v)
{
    const ss_session *s = p->s;
    if (p->watch[v] || (p->epi && p->epi[ni] && ss_epilogue_steps(p->epi[ni]) > 0)) return false;
    for (int i = 0; i < s->n_outputs; i++)
        if (s->output_ids[i] == v) return false;
    int readers = 0;
    for (int i = 0; i < s->n_nodes; i++)
        for (int j = 0; j < s->nodes[i].n_in; j++)
            if (s->nodes[i].in_ids[j] == v) {
                if (!layout_reader_ok(p, i, v)) return false;
                readers++;
            }
    return readers > 0;
}

static ss_status *layout_plan(struct ss_plan *p)
{
    ss_session *s = p->s;
    if (!ss_layout_enabled() || p->partial) return NULL;
    for (int e = 0; e < p->n_exec; e++)
        if (p->check[p->exec[e]]) return NULL;
    const void **layout = calloc((size_t)s->n_values + 1, sizeof *layout);
    if (!layout) return ss_errf(SS_ERR_NOMEM, "out of memory");
    ss_status *st = NULL;
    for (int e = 0; !st && e < p->n_exec; e++) {
        int ni = p->exec[e];
        const node_def *d = &s->nodes[ni];
        ss_kctx *k = &p->kctx[ni];
        const ss_tensor *opd = d->op->layout_operand ? d->op->layout_operand(k) : NULL;
        if (opd && layout[opd - p->vals]) st = d->op->operand_relayout(k, layout[opd - p->vals]);
        if (st) break;
        if (!d->op->relayout || d->n_in < 1 || d->in_ids[0] < 0 || !k->out[0] ||
            !d->op->layout_ok(k))
            continue;
        int v = (int)(k->out[0] - p->vals);
        const void *in = layout[d->in_ids[0]], *out = NULL;
        bool keep = layout_keep(p, ni, v);
        if (!in && !keep) continue;
        st = d->op->relayout(k, in, keep, &out);
        if (!st && out) {
            layout[v] = out;
            size_t bytes = ss_dnnl_layout_bytes(out);
            if (bytes > p->dyn_slot[v]) p->dyn_slot[v] = bytes;
            SS_DEBUG("layout: value '%s' stays in oneDNN's layout (%zu bytes)", s->values[v].name,
                     bytes);
        }
    }
    free(layout);
    return st;
}

typedef struct {
    int id;
    int first, last;
    size_t size, offset;
} arena_item;

static int by_size_desc(const void *a, const void *b)
{
    const arena_item *x = a, *y = b;
    return x->size < y->size ? 1 : x->size > y->size ? -1 : x->id - y->id;
}

/* The value exec node e writes (its fused chain's last value), or -1. */
static int exec_output(const struct ss_plan *p, int e)
{
    int ni = p->exec[e], m = ni;
    while (p->fuse_next && p->fuse_next[m] >= 0)
        m = p->fuse_next[m];
    int y = p->s->nodes[m].n_out > 0 ? p->s->nodes[m].out_ids[0] : -1;
    return y >= 0 && p->kctx[ni].out[0] == &p->vals[y] ? y : -1;
}

/* How many times exec node e (with its fused steps) reads value v. */
static int exec_reads(const struct ss_plan *p, int e, int v)
{
    int n = 0;
    for (int m = p->exec[e]; m >= 0; m = p->fuse_next ? p->fuse_next[m] : -1)
        for (int j = 0; j < p->s->nodes[m].n_in; j++)
            n += p->s->nodes[m].in_ids[j] == v;
    return n;
}

/* Outputs written in the slot of an operand their node copies in first (op.h: operand_in_place):
 * host[y] = that operand, when the node is its last reader and nothing else shares either. The
 * operand's slot then lives on as long as y does. */
static void arena_in_place(struct ss_plan *p, int *first, int *last, int *host)
{
    const ss_session *s = p->s;
    for (int e = 0; e < p->n_exec && !p->partial; e++) {
        int ni = p->exec[e];
        const ss_op_def *op = s->nodes[ni].op;
        const ss_kctx *k = &p->kctx[ni];
        if (p->check[ni] || !op->operand_in_place || !op->layout_operand ||
            !op->operand_in_place(k))
            continue;
        const ss_tensor *t = op->layout_operand(k);
        int v = t ? (int)(t - p->vals) : -1, y = exec_output(p, e);
        if (v < 0 || v >= s->n_values || y < 0 || y == v || p->known[v] || p->known[y] ||
            s->values[v].kind == V_INPUT || p->root[v] != v || p->root[y] != y || first[v] < 0 ||
            last[v] != e || first[y] != e || last[y] >= p->n_exec || exec_reads(p, e, v) != 1)
            continue;
        int owner = v; /* v may itself live in an earlier operand's slot (a chain of blocks) */
        while (host[owner] >= 0)
            owner = host[owner];
        size_t ob = p->vals[owner].nbytes > p->dyn_slot[owner] ? p->vals[owner].nbytes
                                                               : p->dyn_slot[owner],
               yb = p->vals[y].nbytes > p->dyn_slot[y] ? p->vals[y].nbytes : p->dyn_slot[y];
        bool aliased = false;
        for (int w = 0; w < s->n_values && !aliased; w++)
            aliased = w != v && p->root[w] == v;
        if (yb > ob || aliased || last[owner] != e) continue;
        host[y] = owner;
        last[owner] = last[y];
    }
}

/* SS_ERR_LIMIT when the arena (`total` bytes; items sorted largest first) and the constants folded
 * from the request's values are over the session's bound, naming the largest value and its node. */
static ss_status *arena_over_limit(const struct ss_plan *p, const arena_item *items, int n,
                                   size_t total)
{
    const ss_session *s = p->s;
    size_t max = s->guard->max_bytes;
    total += p->input_fold_bytes;
    if (!max || total <= max) return NULL;
    if (!n)
        return ss_errf(SS_ERR_LIMIT,
                       "a run of these inputs needs %zu bytes of kernel scratch, above the limit "
                       "of %zu bytes one run may take (max_run_bytes; an agent's "
                       "SHARDSERVE_RANK_RUN_MB)",
                       total, max);
    const value_def *v = &s->values[items[0].id];
    const node_def *d = v->producer >= 0 ? &s->nodes[v->producer] : NULL;
    return ss_errf(SS_ERR_LIMIT,
                   "a run of these inputs needs %zu bytes for the values it computes, above the "
                   "limit of %zu bytes one run may take (max_run_bytes; an agent's "
                   "SHARDSERVE_RANK_RUN_MB); the largest is '%s' (%zu bytes), output of %s node "
                   "'%s'",
                   total, max, v->name, items[0].size, d ? d->node->op_type : "no",
                   d ? d->name : "");
}

/* Give every exec-node output that is not an alias an offset in the arena. */
static ss_status *layout_arena(struct ss_plan *p)
{
    ss_session *s = p->s;
    int nv = s->n_values;
    int *first = malloc(sizeof(int) * (size_t)nv), *last = malloc(sizeof(int) * (size_t)nv),
        *host = malloc(sizeof(int) * (size_t)nv);
    arena_item *items = malloc(sizeof(arena_item) * (size_t)(nv + 1));
    p->input_aliases = malloc(sizeof(int) * (size_t)(nv + 1));
    if (!first || !last || !host || !items || !p->input_aliases) {
        free(first), free(last), free(host), free(items);
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    for (int v = 0; v < nv; v++)
        first[v] = last[v] = host[v] = -1, p->root[v] = v;
    for (int e = 0; e < p->n_exec; e++) {
        const node_def *d = &s->nodes[p->exec[e]];
        for (int j = 0; j < d->n_in; j++)
            if (d->in_ids[j] >= 0) last[d->in_ids[j]] = e;
        for (int j = 0; j < d->n_out; j++)
            if (d->out_ids[j] >= 0 && !(j == 0 && p->epi && p->epi[p->exec[e]]))
                first[d->out_ids[j]] = last[d->out_ids[j]] = e;
        /* a head reads its steps' operands and writes its chain's last value */
        for (int m = p->fuse_next ? p->fuse_next[p->exec[e]] : -1; m >= 0; m = p->fuse_next[m]) {
            const node_def *md = &s->nodes[m];
            for (int j = 0; j < md->n_in; j++)
                if (md->in_ids[j] >= 0) last[md->in_ids[j]] = e;
            if (p->fuse_next[m] < 0) first[md->out_ids[0]] = last[md->out_ids[0]] = e;
        }
        if ((d->op->flags & SS_OPF_ALIAS) && d->out_ids[0] >= 0 && d->in_ids[0] >= 0)
            p->root[d->out_ids[0]] = p->root[d->in_ids[0]];
    }
    for (int i = 0; i < s->n_outputs; i++)
        last[s->output_ids[i]] = p->n_exec;
    /* a partial plan does not know the later readers: what it computes lives to its end */
    for (int v = 0; p->partial && v < nv; v++)
        if (first[v] >= 0) last[v] = p->n_exec;
    /* An alias keeps its root alive. Aliases come after their roots, so one backward pass. */
    for (int v = nv - 1; v >= 0; v--)
        if (p->root[v] != v && last[v] > last[p->root[v]]) last[p->root[v]] = last[v];
    arena_in_place(p, first, last, host);
    int n = 0;
    bool too_big = false;
    p->n_input_aliases = 0;
    for (int v = 0; v < nv; v++) {
        if (p->known[v]) continue;
        int r = p->root[v];
        if (s->values[r].kind == V_INPUT) {
            if (v != r) p->input_aliases[p->n_input_aliases++] = v;
            continue;
        }
        if (r != v || first[v] < 0 || host[v] >= 0) continue;
        size_t bytes = p->vals[v].nbytes > p->dyn_slot[v] ? p->vals[v].nbytes : p->dyn_slot[v];
        if (bytes > VALUE_MAX || p->naive_bytes > VALUE_MAX) { /* a data-dependent output's bound */
            too_big = true;
            continue;
        }
        size_t sz = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
        items[n++] = (arena_item){v, first[v], last[v], sz, 0};
        p->naive_bytes += sz;
    }
    qsort(items, (size_t)n, sizeof *items, by_size_desc);
    size_t total = 0;
    for (int i = 0; !too_big && i < n; i++) { /* offsets stay under naive_bytes: no wrap */
        /* lowest offset that fits between already placed items alive at the same time */
        size_t off = 0;
        for (int again = 1; again;) {
            again = 0;
            for (int j = 0; j < i; j++) {
                if (items[j].last < items[i].first || items[i].last < items[j].first) continue;
                if (off < items[j].offset + items[j].size &&
                    items[j].offset < off + items[i].size) {
                    off = items[j].offset + items[j].size;
                    again = 1;
                }
            }
        }
        items[i].offset = off;
        if (off + items[i].size > total) total = off + items[i].size;
    }
    /* Kernel scratch: exec nodes run one at a time, so one region of the largest need. */
    size_t scratch = 0, scratch_off = total;
    for (int e = 0; e < p->n_exec; e++)
        if (p->kctx[p->exec[e]].scratch_bytes > scratch)
            scratch = p->kctx[p->exec[e]].scratch_bytes;
    total += (scratch + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN; /* scratch <= VALUE_MAX */
    p->arena_bytes = total;
    ss_status *st = too_big ? ss_errf(SS_ERR_LIMIT, "a run of these inputs needs more than 2^62 "
                                                    "bytes for the values it computes")
                            : arena_over_limit(p, items, n, total);
    size_t limit = s->guard->max_bytes ? s->guard->max_bytes - p->input_fold_bytes : 0;
    p->arena = total && !st ? arena_take(s, total, limit, &p->arena_cap) : NULL;
    if (!st && total && !p->arena)
        st = ss_errf(SS_ERR_NOMEM, "cannot allocate a %zu-byte arena", total);
    for (int i = 0; !st && i < n; i++) {
        ss_tensor *t = &p->vals[items[i].id];
        t->data = p->arena ? p->arena + items[i].offset : no_bytes; /* all-empty arena */
        t->storage = SS_STORE_BORROWED;
    }
    for (int e = 0; !st && e < p->n_exec; e++) {
        ss_kctx *kc = &p->kctx[p->exec[e]];
        kc->scratch = kc->scratch_bytes ? p->arena + scratch_off : no_bytes;
    }
    for (int v = 0; !st && v < nv; v++)
        if (host[v] >= 0) {
            p->vals[v].data = p->vals[host[v]].data;
            p->vals[v].storage = SS_STORE_BORROWED;
            p->in_place_outputs++;
        }
    /* Aliases of arena values: same bytes. Values are numbered in production order. */
    for (int v = 0; !st && v < nv; v++)
        if (!p->known[v] && p->root[v] != v && s->values[p->root[v]].kind != V_INPUT)
            p->vals[v].data = p->vals[p->root[v]].data;
    free(first);
    free(last);
    free(host);
    free(items);
    return st;
}

static ss_status *check_input(const ss_session *s, int i, const ss_tensor *t)
{
    const ss_onnx_value_info *vi = &s->inputs[i];
    char a[160], b[160];
    if (t->dtype != vi->dtype)
        return ss_errf(SS_ERR_INVALID, "input '%s' has type %s, the model expects %s", vi->name,
                       ss_dtype_name(t->dtype), ss_dtype_name(vi->dtype));
    if (vi->ndim < 0) return NULL;
    bool ok = t->ndim == vi->ndim;
    for (int d = 0; ok && d < vi->ndim; d++)
        ok = vi->dims[d] < 0 || vi->dims[d] == t->dims[d];
    if (!ok) {
        int64_t shown[SS_MAX_DIMS];
        for (int d = 0; d < vi->ndim; d++)
            shown[d] = vi->dims[d];
        return ss_errf(SS_ERR_INVALID, "input '%s' has shape %s, the model expects %s (-1 = any)",
                       vi->name, ss_shape_str(t->ndim, t->dims, a, sizeof a),
                       ss_shape_str(vi->ndim, shown, b, sizeof b));
    }
    return NULL;
}

static bool has_subgraph(const ss_onnx_node *n)
{
    for (size_t a = 0; a < n->n_attribute; a++)
        if (n->attribute[a]->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH ||
            n->attribute[a]->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS)
            return true;
    return false;
}

/* What a run for effects only needs (plan->effects), backwards from the end: a node with effects
 * beyond its outputs (SS_OPF_NO_FOLD: collectives, KV-pool writes; a subgraph, which may hold
 * them) runs, and so does every node whose output one that runs reads. An AllGather whose output
 * nothing that runs reads only contributes its piece. A plan that may change mid-run (a partial
 * plan, or one with run-time checks that re-plan) runs everything: the nodes a later plan needs
 * are only known once it is made, and by then the run is past the ones it skipped. */
static ss_status *plan_effects(struct ss_plan *p)
{
    const ss_session *s = p->s;
    bool fixed = !p->partial;
    for (int e = 0; e < p->n_exec && fixed; e++)
        fixed = !p->check[p->exec[e]];
    for (int i = 0; i < s->n_nodes; i++)
        p->effects[i] = fixed ? EFFECTS_SKIP : EFFECTS_RUN;
    if (!fixed) return NULL;
    unsigned char *read = calloc((size_t)s->n_values + 1, 1);
    if (!read) return ss_errf(SS_ERR_NOMEM, "out of memory");
    for (int e = p->n_exec - 1; e >= 0; e--) {
        int ni = p->exec[e];
        const node_def *d = &s->nodes[ni];
        bool used = false;
        for (int m = ni; m >= 0 && !used; m = p->fuse_next ? p->fuse_next[m] : -1)
            for (int j = 0; j < s->nodes[m].n_out && !used; j++)
                used = s->nodes[m].out_ids[j] >= 0 && read[s->nodes[m].out_ids[j]];
        bool effects = (d->op->flags & SS_OPF_NO_FOLD) || has_subgraph(d->node);
        if (!used && !effects) continue;
        bool gather =
            !strcmp(d->op->domain, SS_DOMAIN_COLLECTIVE) && !strcmp(d->op->type, "AllGather");
        p->effects[ni] = !used && gather ? EFFECTS_CONTRIBUTE : EFFECTS_RUN;
        for (int m = ni; m >= 0; m = p->fuse_next ? p->fuse_next[m] : -1)
            for (int j = 0; j < s->nodes[m].n_in; j++)
                if (s->nodes[m].in_ids[j] >= 0) read[s->nodes[m].in_ids[j]] = 1;
    }
    free(read);
    return NULL;
}

static ss_status *plan_build_kernels(ss_session *s, const ss_tensor *inputs, struct ss_plan **out)
{
    struct ss_plan *p = calloc(1, sizeof *p);
    if (!p) return ss_errf(SS_ERR_NOMEM, "out of memory");
    p->s = s;
    int nv = s->n_values, nn = s->n_nodes;
    size_t nptr = 0;
    for (int i = 0; i < nn; i++)
        nptr += (size_t)(s->nodes[i].n_in + s->nodes[i].n_out);
    p->vals = calloc((size_t)nv + 1, sizeof *p->vals);
    p->known = calloc((size_t)nv + 1, 1);
    p->owned = calloc((size_t)nv + 1, sizeof *p->owned);
    p->root = calloc((size_t)nv + 1, sizeof(int));
    p->state = calloc((size_t)nn + 1, sizeof(void *));
    p->kctx = calloc((size_t)nn + 1, sizeof *p->kctx);
    p->ptrs = calloc(nptr + 1, sizeof(ss_tensor *));
    p->exec = calloc((size_t)nn + 1, sizeof(int));
    p->value_dep = calloc((size_t)s->n_inputs + 1, 1);
    p->dep_values = calloc((size_t)s->n_inputs + 1, sizeof(ss_tensor));
    p->out_views = calloc((size_t)s->n_outputs + 1, sizeof(ss_tensor));
    p->dyn_slot = calloc((size_t)nv + 1, sizeof(size_t));
    p->watch = calloc((size_t)nv + 1, 1);
    p->check = calloc((size_t)nn + 1, 1);
    p->effects = calloc((size_t)nn + 1, 1);
    p->wanted = calloc((size_t)nv + 1, sizeof(int));
    ss_status *st = NULL;
    if (!p->vals || !p->known || !p->owned || !p->root || !p->state || !p->kctx || !p->ptrs ||
        !p->exec || !p->value_dep || !p->dep_values || !p->out_views || !p->dyn_slot || !p->watch ||
        !p->check || !p->effects || !p->wanted)
        st = ss_errf(SS_ERR_NOMEM, "out of memory");
    p->inputs = inputs;
    for (int v = 0; !st && v < nv; v++) {
        const value_def *vd = &s->values[v];
        if (vd->kind == V_CONST) {
            p->vals[v] = *vd->init;
            if (!p->vals[v].data && !p->vals[v].nbytes) p->vals[v].data = no_bytes;
            p->vals[v].storage = SS_STORE_BORROWED;
            p->known[v] = 1;
            p->const_bytes += vd->init->nbytes;
        } else if (vd->kind == V_INPUT && s->data_is_constant && vd->input_index >= s->n_varying &&
                   inputs[vd->input_index].data) {
            p->vals[v] = inputs[vd->input_index]; /* outlives this plan (the outer plan owns it) */
            p->vals[v].storage = SS_STORE_BORROWED;
            p->known[v] =
                s->from_request && s->from_request[vd->input_index] ? KNOWN_FROM_INPUTS : 1;
        } else if (vd->kind == V_INPUT) {
            const ss_tensor *t = &inputs[vd->input_index];
            p->vals[v] = (ss_tensor){.dtype = t->dtype,
                                     .ndim = t->ndim,
                                     .nbytes = t->nbytes,
                                     .storage = SS_STORE_BORROWED};
            memcpy(p->vals[v].dims, t->dims, sizeof t->dims);
        }
    }
    size_t off = 0;
    for (int i = 0; !st && !p->partial && i < nn; i++) {
        st = infer_node(p, i, p->ptrs + off);
        off += (size_t)(s->nodes[i].n_in + s->nodes[i].n_out);
    }
    for (int i = 0; !st && i < nn; i++) /* what a run checks after each node */
        p->check[i] = (s->nodes[i].op->flags & SS_OPF_DYNAMIC_SHAPE) != 0;
    for (int v = 0; !st && v < nv; v++)
        if (p->watch[v] && s->values[v].producer >= 0) p->check[s->values[v].producer] = 1;
    if (!st) st = fuse_plan(p);
    if (!st) st = layout_plan(p);
    if (!st) st = layout_arena(p);
    if (!st) st = plan_effects(p);
    for (int i = 0; !st && i < s->n_inputs; i++)
        if (p->value_dep[i]) st = ss_tensor_copy(&p->dep_values[i], &inputs[i]);
    for (int i = 0; p->kctx && i < nn; i++) /* NULL: its allocation failed (st says so) */
        p->kctx[i].plan = NULL;
    p->inputs = NULL;
    if (st) {
        plan_free(p);
        return st;
    }
    s->n_plans++;
    *out = p;
    return NULL;
}

/* A plan-only session (the shard tool's) plans on the own kernels: no oneDNN primitive is created
 * and no weight packed or reordered for runs that never come. */
static ss_status *plan_build(ss_session *s, const ss_tensor *inputs, struct ss_plan **out)
{
    if (!s->opt.plan_only) return plan_build_kernels(s, inputs, out);
    ss_kernels was = ss_kernels_scope(SS_KERNELS_OWN);
    ss_status *st = plan_build_kernels(s, inputs, out);
    ss_kernels_scope(was);
    return st;
}

/* Callers that read every value's shape (the shard tool, If's branches) need a plan that does
 * not stop early at a shape computed at run time. */
static ss_status *plan_complete(const ss_session *s)
{
    if (!s->plan->partial) return NULL;
    return ss_errf(SS_ERR_UNSUPPORTED,
                   "node '%s': its output shape depends on a value computed at run time",
                   s->nodes[s->plan->stop_node].name);
}

ss_status *ss_session_plan_values(ss_session *s, const ss_tensor *inputs, int n_varying,
                                  const bool *from_request)
{
    plan_free(s->plan);
    s->plan = NULL;
    s->data_is_constant = true;
    s->n_varying = n_varying;
    s->from_request = from_request;
    ss_status *st = plan_build(s, inputs, &s->plan);
    arena_drop_spare(s);
    s->data_is_constant = false;
    s->n_varying = 0;
    s->from_request = NULL;
    return st ? st : plan_complete(s);
}

bool ss_kctx_from_request(const ss_kctx *k, int i)
{
    int v = k->plan && i >= 0 && i < k->n_in ? k->in_ids[i] : -1;
    return v >= 0 && k->plan->known[v] == KNOWN_FROM_INPUTS;
}

static bool plan_matches(const struct ss_plan *p, const ss_tensor *inputs)
{
    const ss_session *s = p->s;
    for (int i = 0; i < s->n_inputs; i++) {
        const ss_tensor *t = &inputs[i];
        const ss_tensor *pv = &p->vals[s->input_ids[i]];
        if (!ss_shape_equal(t->ndim, t->dims, pv->ndim, pv->dims)) return false;
        if (p->value_dep[i] && (t->nbytes != p->dep_values[i].nbytes ||
                                memcmp(t->data, p->dep_values[i].data, t->nbytes) != 0))
            return false;
    }
    return true;
}

/* Plan at load with zero-filled inputs (dynamic dims as 1) so unsupported attributes and dtypes
 * are reported when the model is loaded, not on the first request. Only UNSUPPORTED errors are
 * final here: the stand-in values may trip shape checks that real inputs pass. */
static ss_status *trial_plan(ss_session *s)
{
    ss_tensor *ins = calloc((size_t)s->n_inputs + 1, sizeof *ins);
    if (!ins) return ss_errf(SS_ERR_NOMEM, "out of memory");
    ss_status *st = NULL;
    bool all_static = true;
    for (int i = 0; !st && i < s->n_inputs; i++) {
        const ss_onnx_value_info *vi = &s->inputs[i];
        if (vi->ndim < 0 || !ss_dtype_valid(vi->dtype) || vi->dtype == SS_DT_STRING) goto done;
        int64_t dims[SS_MAX_DIMS];
        for (int d = 0; d < vi->ndim; d++) {
            dims[d] = vi->dims[d] < 0 ? 1 : vi->dims[d];
            if (vi->dims[d] < 0) all_static = false;
        }
        int64_t numel = ss_shape_numel(vi->ndim, dims);
        if (numel < 0 || numel > (1 << 26)) goto done; /* do not allocate gigabytes to check */
        st = ss_tensor_alloc(&ins[i], vi->dtype, vi->ndim, dims);
    }
    if (!st) {
        struct ss_plan *p = NULL;
        st = plan_build(s, ins, &p);
        if (!st && all_static)
            s->plan = p;
        else
            plan_free(p); /* its arena stays for the first run's plan to take (arena_take) */
        if (st && st->code != SS_ERR_UNSUPPORTED) {
            SS_DEBUG("trial plan at load: %s (ignored)", st->msg);
            ss_status_free(st);
            st = NULL;
        }
    }
done:
    for (int i = 0; i < s->n_inputs; i++)
        ss_tensor_free(&ins[i]);
    free(ins);
    return st;
}

/* ------------------------------------------------------------------ KV block pool */

/* A pool when the graph has PagedAttention nodes, one layer each. Its keys and values are bf16
 * when the weights are (as vLLM's kv_cache_dtype "auto" follows the model's), float32 otherwise;
 * SHARDSERVE_KV_CACHE_DTYPE=f32|bf16 in the environment decides instead. */
static ss_status *kvpool_create(ss_session *s)
{
    int layers = 0;
    for (int i = 0; i < s->n_nodes; i++)
        layers += s->nodes[i].op == ss_ops_paged_attention;
    if (!layers) return NULL;
    size_t bytes = s->opt.kv_cache_bytes ? s->opt.kv_cache_bytes : (size_t)64 << 20;
    bool bf16 = s->opt.weights == SS_WEIGHTS_BF16;
    const char *dt = getenv("SHARDSERVE_KV_CACHE_DTYPE");
    if (dt && *dt) {
        if (strcmp(dt, "f32") && strcmp(dt, "bf16"))
            return ss_errf(SS_ERR_INVALID, "SHARDSERVE_KV_CACHE_DTYPE=%s: f32 or bf16", dt);
        bf16 = !strcmp(dt, "bf16");
    }
    return ss_kvpool_create(bytes, s->opt.kv_block_size ? s->opt.kv_block_size : 16, layers, bf16,
                            &s->kvpool);
}

ss_status *ss_session_seq_create(ss_session *s, int64_t seq_id)
{
    if (!s->kvpool) return ss_errf(SS_ERR_INVALID, "the model keeps no KV cache pool");
    return ss_kvpool_seq_create(s->kvpool, seq_id);
}

ss_status *ss_session_seq_free(ss_session *s, int64_t seq_id)
{
    if (!s->kvpool) return ss_errf(SS_ERR_INVALID, "the model keeps no KV cache pool");
    return ss_kvpool_seq_free(s->kvpool, seq_id);
}

int64_t ss_session_seq_length(const ss_session *s, int64_t seq_id)
{
    return s->kvpool ? ss_kvpool_seq_length(s->kvpool, seq_id) : -1;
}

void ss_session_kv_blocks(const ss_session *s, int64_t *total, int64_t *free_blocks)
{
    *total = s->kvpool ? ss_kvpool_total_blocks(s->kvpool) : 0;
    *free_blocks = s->kvpool ? ss_kvpool_free_blocks(s->kvpool) : 0;
}

ss_status *ss_session_set_kv_cache_bytes(ss_session *s, size_t bytes)
{
    if (!s->kvpool) return ss_errf(SS_ERR_INVALID, "the model keeps no KV cache pool");
    return ss_kvpool_set_bytes(s->kvpool, bytes);
}

int ss_session_kv_block_tokens(const ss_session *s)
{
    return s->kvpool ? (s->opt.kv_block_size ? s->opt.kv_block_size : 16) : 0;
}

/* ------------------------------------------------------------------ public API */

/* OpenBLAS's own thread count for a session of `threads`. Under auto and onednn the heavy
 * kernels thread themselves (oneDNN's OpenMP team, the own pool: k->threads) and OpenBLAS is left
 * with small or rare GEMMs (ConvTranspose, fallbacks), so it gets one thread: its pthread workers
 * spin in sched_yield for ~0.1 s after every parallel call, and on a 2-core machine that held a
 * core the other pools needed (PP-OCRv4 det at 2 threads: ~50% of the CPU in sched_yield, PP-OCR
 * cls 0.45-2.01x onnxruntime between runs). Under blas and own it still runs big GEMMs. */
static int blas_pool_threads(int threads)
{
    ss_kernels mode = ss_kernels_mode();
    return mode == SS_KERNELS_BLAS || mode == SS_KERNELS_OWN ? threads : 1;
}

ss_status *ss_session_create_from_model(ss_onnx_model *model, const ss_session_options *opt,
                                        ss_session **out)
{
    return ss_session_create_child(model, opt, NULL, out);
}

ss_status *ss_session_create_child(ss_onnx_model *model, const ss_session_options *opt,
                                   ss_run_guard *guard, ss_session **out)
{
    *out = NULL;
    ss_session *s = calloc(1, sizeof *s);
    if (!s) {
        ss_onnx_free(model);
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    }
    s->model = model;
    if (opt) s->opt = *opt;
    s->own_guard.max_bytes = s->opt.max_run_bytes;
    s->guard = guard ? guard : &s->own_guard;
    if (s->opt.blas_threads > 0) openblas_set_num_threads(blas_pool_threads(s->opt.blas_threads));
    ss_seqloop_rewrite(model);
    ss_status *st = ss_op_check_model(model);
    if (!st) st = build_values(s);
    if (!st) st = build_nodes(s);
    if (!st) st = build_outputs(s);
    if (!st) st = kvpool_create(s);
    if (!st) st = trial_plan(s);
    if (st) {
        st = ss_status_wrap(st, "%s", model->path);
        ss_session_free(s);
        return st;
    }
    *out = s;
    return NULL;
}

static const char *const weights_names[] = {"f32", "bf16", "int8"};

bool ss_weights_parse(const char *name, ss_weights *out)
{
    for (int i = 0; i < (int)(sizeof weights_names / sizeof weights_names[0]); i++)
        if (name && !strcmp(name, weights_names[i])) {
            *out = (ss_weights)i;
            return true;
        }
    return false;
}

const char *ss_weights_name(ss_weights w)
{
    return (unsigned)w < sizeof weights_names / sizeof weights_names[0] ? weights_names[w] : "?";
}

ss_status *ss_session_create(const char *model_path, const ss_session_options *opt,
                             ss_session **out)
{
    ss_onnx_model *m;
    *out = NULL;
    ss_status *st = ss_onnx_load(model_path, &m);
    if (st) return st;
    return ss_session_create_from_model(m, opt, out);
}

void ss_session_free(ss_session *s)
{
    if (!s) return;
    plan_free(s->plan);
    arena_drop_spare(s);
    ss_kvpool_free(s->kvpool);
    for (int i = 0; s->seqs && i < s->n_values; i++)
        ss_sequence_free(s->seqs[i]);
    free(s->seqs);
    free(s->node_words);
    while (s->packed) {
        ss_packed *e = s->packed;
        s->packed = e->next;
        packed_free(e);
    }
    for (int i = 0; i < s->n_nodes; i++) {
        free(s->nodes[i].name);
        free(s->nodes[i].in_ids);
        free(s->nodes[i].out_ids);
    }
    free(s->nodes);
    free(s->values);
    free(s->hash);
    free(s->inputs);
    free(s->outputs);
    free(s->input_ids);
    free(s->output_ids);
    ss_onnx_free(s->model);
    free(s->dyn);
    for (int v = 0; s->seen && v < s->n_values; v++)
        ss_tensor_free(&s->seen[v]);
    free(s->seen);
    free(s);
}

int ss_session_num_inputs(const ss_session *s)
{
    return s->n_inputs;
}
int ss_session_num_outputs(const ss_session *s)
{
    return s->n_outputs;
}
const ss_onnx_value_info *ss_session_input(const ss_session *s, int i)
{
    return &s->inputs[i];
}
const ss_onnx_value_info *ss_session_output(const ss_session *s, int i)
{
    return &s->outputs[i];
}
const ss_onnx_model *ss_session_model(const ss_session *s)
{
    return s->model;
}

void ss_session_get_stats(const ss_session *s, ss_session_stats *out)
{
    memset(out, 0, sizeof *out);
    out->n_nodes = s->n_nodes;
    out->n_plans = s->n_plans;
    out->n_arenas = s->n_arenas;
    out->spare_arena_bytes = s->spare_bytes;
    if (s->plan) {
        out->n_exec_nodes = s->plan->n_exec;
        out->arena_bytes = s->plan->arena_bytes;
        out->arena_cap_bytes = s->plan->arena_cap;
        out->naive_bytes = s->plan->naive_bytes;
        out->const_bytes = s->plan->const_bytes;
        out->in_place_outputs = s->plan->in_place_outputs;
    }
}

/* The caller's input buffers, and values that alias them, into plan p (no copy). */
static void bind_inputs(struct ss_plan *p, const ss_tensor *inputs)
{
    const ss_session *s = p->s;
    for (int i = 0; i < s->n_inputs; i++) {
        ss_tensor *v = &p->vals[s->input_ids[i]];
        v->data = inputs[i].data || inputs[i].nbytes ? inputs[i].data : no_bytes;
        v->nbytes = inputs[i].nbytes;
    }
    for (int i = 0; i < p->n_input_aliases; i++) {
        int v = p->input_aliases[i];
        p->vals[v].data = p->vals[p->root[v]].data;
    }
}

/* Did data-dependent node d produce the shapes its plan assumed? Records those it did not. */
static bool dyn_as_assumed(ss_session *s, const node_def *d, const struct ss_plan *p)
{
    bool same = true;
    for (int j = 0; j < d->n_out; j++) {
        int v = d->out_ids[j];
        if (v < 0) continue;
        const ss_tensor *o = &p->vals[v];
        struct dyn_shape *a = &s->dyn[v];
        if (ss_shape_equal(o->ndim, o->dims, a->ndim, a->dims)) continue;
        same = false;
        a->ndim = o->ndim;
        memcpy(a->dims, o->dims, sizeof a->dims);
    }
    return same;
}

/* Records computed value v of plan p unless s->seen holds it already; *changed if it did not. */
static ss_status *record_seen(ss_session *s, const struct ss_plan *p, int v, bool *changed)
{
    if (!s->seen && !(s->seen = calloc((size_t)s->n_values + 1, sizeof *s->seen)))
        return ss_errf(SS_ERR_NOMEM, "out of memory");
    const ss_tensor *o = &p->vals[v], *r = seen_value(p, v);
    if (r && r->nbytes == o->nbytes && (!o->nbytes || !memcmp(r->data, o->data, o->nbytes)))
        return NULL;
    *changed = true;
    ss_tensor_free(&s->seen[v]);
    return ss_tensor_copy(&s->seen[v], o);
}

/* A new plan for the shapes and values recorded so far, with the values computed by every node
 * up to ni copied into it from the current one (their shapes are the same in both). When the new
 * plan reads a value computed before ni that is not recorded yet, it is recorded and the plan
 * made again. */
static ss_status *replan_copy(ss_session *s, const ss_tensor *inputs, int ni)
{
    bool again = true;
    ss_status *st = NULL;
    for (int round = 0; again && !st && round <= s->n_values; round++) {
        struct ss_plan *old = s->plan, *q = NULL;
        if ((st = plan_build(s, inputs, &q))) return st;
        bind_inputs(q, inputs);
        for (int v = 0; v < s->n_values; v++) {
            const value_def *vd = &s->values[v];
            if (q->known[v] || q->root[v] != v || vd->kind != V_NODE || vd->producer > ni) continue;
            size_t n =
                q->vals[v].nbytes < old->vals[v].nbytes ? q->vals[v].nbytes : old->vals[v].nbytes;
            if (n && q->vals[v].data && old->vals[v].data)
                memcpy(q->vals[v].data, old->vals[v].data, n);
        }
        plan_free(old);
        s->plan = q;
        again = false;
        for (int v = 0; v < s->n_values && !st; v++)
            if (q->watch[v] && s->values[v].producer <= ni) st = record_seen(s, q, v, &again);
    }
    return st;
}

/* Node ni (exec position *e) produced shapes its plan did not assume: a new plan for them, the
 * values computed so far (by every node up to ni; their shapes are the same in both plans)
 * copied into it, and *e moved to ni's position there, so the run resumes after ni. */
static ss_status *dyn_replan(ss_session *s, const ss_tensor *inputs, int ni, int *e)
{
    ss_status *st = replan_copy(s, inputs, ni);
    if (st) return st;
    struct ss_plan *q = s->plan;
    for (*e = 0; *e < q->n_exec && q->exec[*e] != ni; (*e)++) {
    }
    if (*e == q->n_exec)
        return ss_errf(SS_ERR_INTERNAL, "node '%s' is missing from its re-plan", s->nodes[ni].name);
    /* copied strings pointed into the old plan's op states: compute them again in this one */
    for (int f = 0; f <= *e && f < q->n_exec && !st; f++) {
        const node_def *d = &s->nodes[q->exec[f]];
        if (d->op->flags & SS_OPF_STRING_OUT) st = d->op->run(&q->kctx[q->exec[f]]);
    }
    return st;
}

/* After node ni (exec position *e) ran: a data-dependent shape or a watched value other than
 * the plan assumed (or a partial plan's value now known) re-plans and resumes (dyn_replan). */
static ss_status *check_after_run(ss_session *s, const ss_tensor *inputs, int ni, int *e)
{
    const node_def *d = &s->nodes[ni];
    bool same = !(d->op->flags & SS_OPF_DYNAMIC_SHAPE) || dyn_as_assumed(s, d, s->plan);
    bool changed = false;
    ss_status *st = NULL;
    for (int j = 0; j < d->n_out && !st; j++)
        if (d->out_ids[j] >= 0 && s->plan->watch[d->out_ids[j]])
            st = record_seen(s, s->plan, d->out_ids[j], &changed);
    if (st || (same && !changed)) return st;
    return dyn_replan(s, inputs, ni, e);
}

/* May output i be computed straight into the caller's memory? Only a value an elementwise node
 * (not an alias) writes into a buffer of its own, that nothing aliases and that is no other
 * output, in a plan that cannot re-plan mid-run: then no kernel keeps its address and nothing
 * else reads or writes its buffer. */
static bool output_bindable(const ss_session *s, const struct ss_plan *p, int i)
{
    int v = s->output_ids[i];
    const value_def *vd = &s->values[v];
    if (vd->kind != V_NODE || vd->producer < 0 || p->known[v] || p->root[v] != v || p->partial)
        return false;
    int writer =
        p->fuse_head && p->fuse_head[vd->producer] >= 0 ? p->fuse_head[vd->producer] : vd->producer;
    unsigned flags = s->nodes[writer].op->flags;
    if (!(flags & SS_OPF_ELEMENTWISE) || (flags & SS_OPF_ALIAS)) return false;
    for (int w = 0; w < s->n_values; w++)
        if (w != v && p->root[w] == v) return false;
    for (int k = 0; k < s->n_outputs; k++)
        if (k != i && s->output_ids[k] == v) return false;
    for (int e = 0; e < p->n_exec; e++)
        if (p->check[p->exec[e]]) return false;
    return true;
}

#define BIND_MAX 16 /* outputs that may go straight to the caller's memory */

/* Point the bindable outputs at dest (saved[i] keeps the plan's own buffer, NULL = not bound). */
static void bind_outputs(ss_session *s, struct ss_plan *p, void *const *dest, const size_t *cap,
                         void **saved)
{
    for (int i = 0; i < s->n_outputs && i < BIND_MAX; i++) {
        saved[i] = NULL;
        ss_tensor *v = &p->vals[s->output_ids[i]];
        if (!dest || !dest[i] || v->nbytes > cap[i] || !output_bindable(s, p, i)) continue;
        saved[i] = v->data;
        v->data = dest[i];
    }
}

static void unbind_outputs(ss_session *s, struct ss_plan *p, void **saved)
{
    for (int i = 0; i < s->n_outputs && i < BIND_MAX; i++)
        if (saved[i]) p->vals[s->output_ids[i]].data = saved[i];
}

void ss_session_set_deadline(ss_session *s, uint64_t deadline_ns)
{
    s->own_guard.deadline_ns = deadline_ns;
    s->own_guard.stopped = false;
}

bool ss_session_stopped_at_deadline(const ss_session *s)
{
    return s->own_guard.stopped;
}

ss_status *ss_kctx_check_deadline(const ss_kctx *k, int64_t done)
{
    uint64_t deadline = k->guard ? k->guard->deadline_ns : 0;
    if (!deadline) return NULL;
    uint64_t now = ss_now_ns();
    if (now <= deadline) return NULL;
    k->guard->stopped = true;
    return ss_op_err(k, SS_ERR_LIMIT,
                     "the request's time ran out after %lld iterations (the run was stopped "
                     "%.1f ms past its deadline: the client's time limit)",
                     (long long)done, (double)(now - deadline) / 1e6);
}

ss_status *ss_session_run(ss_session *s, const ss_tensor *inputs, int n_inputs,
                          const ss_tensor **outputs)
{
    return ss_session_run_into(s, inputs, n_inputs, NULL, NULL, outputs);
}

/* One run; effects_only: ss_session_run_effects (outputs NULL). */
static ss_status *run_once(ss_session *s, const ss_tensor *inputs, int n_inputs, void *const *dest,
                           const size_t *cap, const ss_tensor **outputs, bool effects_only)
{
    if (outputs) *outputs = NULL;
    if (n_inputs != s->n_inputs)
        return ss_errf(SS_ERR_INVALID, "the model takes %d inputs, %d given", s->n_inputs,
                       n_inputs);
    for (int i = 0; i < n_inputs; i++) {
        ss_status *st = check_input(s, i, &inputs[i]);
        if (st) return st;
    }
    if (!s->plan || !plan_matches(s->plan, inputs)) {
        plan_free(s->plan);
        s->plan = NULL;
        ss_status *st = plan_build(s, inputs, &s->plan);
        if (st) return st;
    }
    bind_inputs(s->plan, inputs);
    void *saved[BIND_MAX];
    struct ss_plan *bound = s->plan; /* bindable plans never re-plan mid-run */
    if (!effects_only) bind_outputs(s, bound, dest, cap, saved);
    for (int e = 0; e < s->plan->n_exec; e++) {
        int ni = s->plan->exec[e];
        const node_def *d = &s->nodes[ni];
        ss_kctx *k = &s->plan->kctx[ni];
        int effects = effects_only ? s->plan->effects[ni] : EFFECTS_RUN;
        if (effects == EFFECTS_SKIP) continue;
        k->contribute_only = effects == EFFECTS_CONTRIBUTE;
        ss_status *st = (d->op->flags & SS_OPF_ALIAS) ? NULL : d->op->run(k);
        k->contribute_only = false;
        if (!st && s->plan->epi && s->plan->epi[ni])
            ss_epilogue_run(s->plan->epi[ni], k->out[0]->data);
        if (!st && s->plan->check[ni]) st = check_after_run(s, inputs, ni, &e);
        if (st) {
            if (s->plan == bound && !effects_only) unbind_outputs(s, bound, saved);
            return st;
        }
    }
    if (s->plan->partial)
        return ss_errf(SS_ERR_UNSUPPORTED,
                       "node '%s' needs a value computed at run time that no earlier node computes",
                       s->nodes[s->plan->stop_node].name);
    if (effects_only) return NULL;
    struct ss_plan *p = s->plan;
    for (int i = 0; i < s->n_outputs; i++)
        p->out_views[i] = p->vals[s->output_ids[i]];
    if (p == bound) unbind_outputs(s, p, saved);
    *outputs = p->out_views;
    return NULL;
}

/* A freed plan's arena serves re-plans within the call only: between calls the session holds
 * one arena, as max_run_bytes promises (a mid-run re-plan frees the old plan after the new one
 * is built: kept, its arena would double what an idle session holds). */
static ss_status *run(ss_session *s, const ss_tensor *inputs, int n_inputs, void *const *dest,
                      const size_t *cap, const ss_tensor **outputs, bool effects_only)
{
    ss_status *st = run_once(s, inputs, n_inputs, dest, cap, outputs, effects_only);
    arena_drop_spare(s);
    return st;
}

ss_status *ss_session_run_into(ss_session *s, const ss_tensor *inputs, int n_inputs,
                               void *const *dest, const size_t *cap, const ss_tensor **outputs)
{
    return run(s, inputs, n_inputs, dest, cap, outputs, false);
}

ss_status *ss_session_run_effects(ss_session *s, const ss_tensor *inputs, int n_inputs)
{
    return run(s, inputs, n_inputs, NULL, NULL, NULL, true);
}

ss_status *ss_session_plan_shapes(ss_session *s, const ss_tensor *descs, int n_inputs)
{
    if (n_inputs != s->n_inputs)
        return ss_errf(SS_ERR_INVALID, "the model takes %d inputs, %d given", s->n_inputs,
                       n_inputs);
    ss_tensor *ins = calloc((size_t)n_inputs + 1, sizeof *ins);
    if (!ins) return ss_errf(SS_ERR_NOMEM, "out of memory");
    ss_status *st = NULL;
    for (int i = 0; i < n_inputs && !st; i++) {
        st = ss_tensor_alloc(&ins[i], descs[i].dtype, descs[i].ndim, descs[i].dims);
        if (!st) st = check_input(s, i, &ins[i]);
    }
    if (!st) {
        plan_free(s->plan);
        s->plan = NULL;
        st = plan_build(s, ins, &s->plan);
        arena_drop_spare(s);
    }
    if (!st) st = plan_complete(s);
    for (int i = 0; i < n_inputs; i++)
        ss_tensor_free(&ins[i]);
    free(ins);
    return st;
}

bool ss_session_value_desc(const ss_session *s, const char *name, ss_tensor *desc)
{
    int id = value_lookup(s, name);
    if (id < 0 || !s->plan) return false;
    const ss_tensor *v = &s->plan->vals[id];
    memset(desc, 0, sizeof *desc);
    desc->dtype = v->dtype;
    desc->ndim = v->ndim;
    memcpy(desc->dims, v->dims, sizeof v->dims);
    desc->nbytes = v->nbytes;
    if (s->plan->known[id]) desc->data = v->data; /* a constant: its value is known */
    return v->dtype != SS_DT_UNDEFINED;
}
