/*
 * Internals of the shard tool shared by its files: the analysis of the whole model (shard_ctx),
 * one rank's graph under construction (rank_ctx) and the layout of every value on that rank.
 *   shard.c   planning, analysis, stages, MatMul/Gemm splits, writing the shards
 *   layout.c  how a split travels through the other ops (elementwise, head-parallel attention)
 *   stages.c  what crosses a pipeline cut, and each stage's inputs and outputs
 *   vocab.c   the vocabulary-parallel embedding and LM head
 */
#ifndef SS_SHARD_INTERNAL_H
#define SS_SHARD_INTERNAL_H

#include "build.h"
#include "shardserve/runtime.h"
#include "shardserve/shard.h"

typedef enum { L_REPL = 0, L_SPLIT, L_PARTIAL } layout;

typedef struct {
    const char *local; /* name on this rank */
    layout kind;
    int axis;   /* L_SPLIT: negative, counted from the end */
    int blocks; /* L_SPLIT: the axis is this many equal blocks, each split (fused QKV); 0 = 1 */
    int parts;  /* L_SPLIT: distinct parts; 0 = one per rank; fewer = grouped (below) */
    int span;   /* L_SPLIT: the split covers axes axis.. axis + span - 1 as one (0 = 1) */
} tstate;

typedef enum { S_NONE = 0, S_ROWS, S_REDUCE, S_COLS } split_kind;

typedef struct {
    int ndim;
    int64_t dims[SS_MAX_DIMS];
    int n_vals; /* a small int64 value known at plan time (shape plumbing): its elements */
    int64_t vals[SS_MAX_DIMS];
} plan_shape;

typedef struct {
    const Onnx__NodeProto *node;
    int stage;
    bool constant; /* every output known at plan time: not emitted */
    double params, flops;
    int blocks;     /* S_COLS: the weight's columns are this many blocks split each (fused QKV) */
    int parts;      /* S_COLS: distinct column parts (0: one per rank) */
    bool cut_after; /* the last computing node of its stage (slide_cuts) */
    split_kind explicit_split; /* from the strategy file */
    bool has_explicit;
} node_info;

typedef struct {
    const ss_shard_options *opt;
    char stage_dir[4096]; /* where this run writes (inside --out), moved into --out at the end */
    ss_session *session;
    const ss_onnx_model *model;
    const Onnx__GraphProto *graph;
    char *model_base; /* "model" of model.onnx */
    int rank_size, stages, tp;
    node_info *nodes;
    int n_nodes;
    /* value names -> index */
    char **names;
    int n_names, cap_names;
    int *hash;
    int hash_cap;
    int *producer;   /* value -> node index, -1 for inputs/initializers */
    int *last_stage; /* value -> last stage that consumes it (-1: none) */
    bool *is_output;
    bool *is_state; /* graph input concatenated into a graph output (a KV cache: past -> present) */
    int *state_concat; /* state input or output -> the Concat joining them (its stage keeps them) */
    /* Planned twice when inputs have dynamic dims: a value whose plan-time data differs between
     * the two plans depends on those dims and is computed by the shards, not baked in. */
    bool dynamic;
    bool have_cuts; /* stage cuts chosen (slide_cuts), not only balanced by cost */
    double total_params, total_flops;
    const char *dynamic_input; /* the first input planned with a dynamic dim */
    uint64_t *plan_hash; /* per node output, in graph order: the first plan's data hash (0: none) */
    plan_shape *plan_shape0; /* per node output, in graph order: its shape in the first plan */
    plan_shape *shape0;      /* per value: the same (a stage receiving it rebuilds its shape) */
    bool *varies;            /* per value */
    /* vocabulary parallelism (vocab.c): node indices of the LM head and the token embedding
     * (-1: none), the vocabulary and hidden size, and whether the two share one table */
    int vocab_head, vocab_embedding;
    int64_t vocab, vocab_hidden;
    bool vocab_tied;
} shard_ctx;

typedef struct {
    shard_ctx *c;
    rank_graph g;
    int rank, stage, pos;
    tstate *ts; /* per value */
    char group[32];
} rank_ctx;

/* The runtime's op table says which ops are elementwise: those can run on split inputs. */
static inline bool shard_is_elementwise(const shard_ctx *c, const Onnx__NodeProto *n)
{
    return ss_runtime_op_elementwise(n->domain, n->op_type, ss_onnx_opset(c->model, n->domain));
}

static inline int shard_blocks_of(const tstate *t)
{
    return t->blocks > 1 ? t->blocks : 1;
}

/* How many distinct parts a split value has: one per rank, or fewer for a grouped split (KV heads
 * fewer than the ranks: consecutive ranks hold the same KV head, the one their query heads
 * use); and the part this rank holds. */
static inline int shard_parts(const shard_ctx *c, const tstate *t)
{
    return t->parts > 0 ? t->parts : c->tp;
}

static inline int shard_part_index(const rank_ctx *r, const tstate *t)
{
    return r->pos * shard_parts(r->c, t) / r->c->tp;
}

/* shard.c */
int shard_name_find(const shard_ctx *c, const char *name);
bool shard_value_desc(const shard_ctx *c, const char *name, ss_tensor *d);
int64_t shard_plan_dim(const shard_ctx *c, const char *name, int pass);
const char *shard_materialize(rank_ctx *r, const char *name);
const char *shard_input_repl(rank_ctx *r, const char *name);
/* This rank's part (index of parts) of a replicated activation along neg_axis. */
const char *shard_slice_activation(rank_ctx *r, const char *name, int neg_axis, int parts,
                                   int index);

/* layout.c */
bool shard_cols_fit(const shard_ctx *c, int id, int *blocks, int *parts);
bool shard_emit_split_elementwise(rank_ctx *r, const Onnx__NodeProto *n);
bool shard_emit_split_structural(rank_ctx *r, const Onnx__NodeProto *n);

/* vocab.c */
void shard_vocab_analyse(shard_ctx *c);
bool shard_emit_vocab(rank_ctx *r, const node_info *ni);

/* stages.c */
bool shard_stage_has_input(const shard_ctx *c, int id, int stage);
bool shard_stage_has_output(const shard_ctx *c, int id, int stage);
void shard_emit_recvs(rank_ctx *r);
void shard_emit_sends(rank_ctx *r);

#endif
