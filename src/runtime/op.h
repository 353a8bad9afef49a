/*
 * The op table's contract (internal to the runtime).
 *
 * An op is one ss_op_def: (domain, type, opset range) -> infer + run. Each op family lives in one
 * file under ops/ and exports a table terminated by an entry with type == NULL; registry.c lists
 * the tables.
 *
 * infer(k) runs at plan time. It sees every input's dtype and shape (k->in[i]; NULL for an omitted
 * optional input) and must set every output's dtype, ndim and dims (k->out[i]; NULL for an
 * omitted optional output). It validates attributes and returns SS_ERR_UNSUPPORTED for what the
 * kernel does not implement, naming the attribute. Input *values* are normally unknown at plan
 * time (in[i]->data == NULL); an op whose output shape depends on an input's value (Reshape's
 * shape, Slice's starts...) asks for it with ss_kctx_value(), which succeeds for constants,
 * folded values and graph inputs (the plan then depends on that input's value), and for values
 * computed at run time once a run has computed them: until then infer fails UNSUPPORTED (as
 * ss_op_plan_value does) and the planner stops there and plans the rest when the value is known
 * (session.c). An op whose output shape depends on values it computes itself (NonZero) is
 * SS_OPF_DYNAMIC_SHAPE instead. infer may keep
 * per-plan state in k->state: ONE malloc'd block (calloc is fine), which the runtime releases
 * with a single free(), so scratch buffers go into the same block after the struct, never in
 * separate allocations hanging off it (ops/common.h: ss_op_state_alloc).
 *
 * run(k) runs at execution time with in[i]->data and out[i]->data set; output buffers are
 * exactly the inferred size and may hold garbage. run must not allocate: scratch memory a kernel
 * needs (oneDNN's scratchpad) is asked for by infer in k->scratch_bytes, and run finds it in
 * k->scratch (64-byte aligned, a slice of the session arena shared by all nodes, since they run
 * one at a time).
 *
 * State that holds more than memory (oneDNN primitives, packed weights) is released by the op's
 * release(state) hook, which the runtime calls before the free().
 */
#ifndef SS_RUNTIME_OP_H
#define SS_RUNTIME_OP_H

#include "shardserve/runtime.h"

enum {
    SS_OPF_ALIAS = 1, /* out[0] is in[0]'s bytes reinterpreted (Reshape family): no kernel call */
    SS_OPF_SHAPE_ONLY = 2, /* run reads only input shapes (Shape, Size): always folded */
    /* never folded even with constant inputs, and never skipped: run has effects beyond its
     * outputs (collectives, KV-pool writes; session.c: plan_effects) */
    SS_OPF_NO_FOLD = 4,
    /* each output element reads only the input elements at its own index (numpy broadcasting
     * aside), so the op can run on any slice of its inputs: the shard tool keeps it on split
     * tensors (ss_runtime_op_elementwise) */
    SS_OPF_ELEMENTWISE = 8,
    /* an output's shape depends on input values (NonZero, Unique, NonMaxSuppression...): infer
     * sets an upper bound of each output's shape, which sizes its buffer; run writes the actual
     * shape (ss_op_set_shape, never above the bound). When it differs from what the plan assumed,
     * the session re-plans the nodes after this one for it and carries on (session.c: dyn_*) */
    SS_OPF_DYNAMIC_SHAPE = 16,
    /* may compute string outputs at run time: their bytes live in the op's state (so such an
     * output is never folded into an owned tensor, whose free would release them); the one kind
     * of run that may allocate, when strings outgrow what infer could size */
    SS_OPF_STRING_OUT = 32,
};

typedef struct ss_kctx ss_kctx;
struct ss_epilogue; /* ops/fusion.h */

typedef struct ss_op_def {
    const char *domain; /* "" for the default ONNX domain */
    const char *type;
    int min_opset, max_opset; /* inclusive range of the domain's opset this definition serves */
    ss_status *(*infer)(ss_kctx *k);
    ss_status *(*run)(ss_kctx *k);
    unsigned flags;
    void (*release)(void *state); /* optional: frees what state holds besides itself */
    /* optional, at plan time: moves leading steps of the element-wise epilogue fused after this
     * node into its own kernel (oneDNN post-ops), dropping them from ep (ops/fusion.h) */
    ss_status *(*fuse)(ss_kctx *k, struct ss_epilogue *ep);
    /* optional, the layout pass at plan time (session.c: layout_plan), for kernels that keep
     * activations in a library layout (oneDNN's nChw16c...): layout_ok says the node, as planned,
     * can read input 0 in such a layout; relayout then gives it input 0's layout (NULL: plain)
     * and whether output 0 may stay in the kernel's own layout (every reader takes it), and
     * learns the layout output 0 is written in (*out_layout; NULL: plain). */
    bool (*layout_ok)(const ss_kctx *k);
    ss_status *(*relayout)(ss_kctx *k, const void *in_layout, bool out_native,
                           const void **out_layout);
    /* optional, the same pass: a value (not input 0; a fused step's operand, e.g. a residual Add
     * run as a post-op) the node, as planned, can also read in a library layout, or NULL; then
     * operand_relayout gives it that value's layout (called only when it is not plain). */
    const ss_tensor *(*layout_operand)(const ss_kctx *k);
    ss_status *(*operand_relayout)(ss_kctx *k, const void *layout);
    /* optional, after the layout pass: whether the node reads layout_operand's bytes only by
     * copying them into its output's buffer before it writes anything there (a sum post-op whose
     * operand is in the destination's layout). Then, when the node is that value's last reader,
     * the arena gives its output the operand's slot and the copy goes (session.c: arena_in_place).
     */
    bool (*operand_in_place)(const ss_kctx *k);
    /* optional, the fusion pass at plan time: output 0, of another dtype, has one reader, a Cast
     * to float32, and k->out[0] is now that Cast's output. Returns whether the node, as planned,
     * writes those float32 values itself (the Cast then runs as part of it, and element-wise steps
     * after it as its epilogue); on false the planner puts k->out[0] back. */
    bool (*write_float)(ss_kctx *k);
} ss_op_def;

/* Bounds on one run, shared by a session and the sessions of its subgraphs (the top session's:
 * ss_session_options.max_run_bytes, ss_session_set_deadline). */
typedef struct ss_run_guard {
    size_t max_bytes;     /* a plan's arena, one constant folded from input values (0: none) */
    uint64_t deadline_ns; /* ss_now_ns clock (0: none) */
    bool stopped;         /* a run was stopped at the deadline since it was set */
} ss_run_guard;

struct ss_kctx {
    const ss_onnx_node *node;
    const char *node_name; /* node->name or a generated "#17 (MatMul)" */
    int64_t opset;
    int n_in, n_out;
    ss_tensor **in;
    ss_tensor **out;
    void *state;
    const ss_collectives *coll;
    struct ss_plan *plan; /* for ss_kctx_value; NULL during run */
    int *in_ids;          /* value ids, for ss_kctx_value */
    int threads;          /* the session's intra-op thread count (0: OpenBLAS's setting) */
    ss_weights weights;   /* how the session stores MatMul/Gemm weights where it pays (bf16:
                             gemm_bf16.h and oneDNN; int8: gemm_q8.h) */
    size_t scratch_bytes; /* set by infer: scratch run needs */
    void *scratch;        /* set by the planner before run */
    /* the session's KV block pool (PagedAttention), or NULL */
    struct ss_kvpool *kvpool;
    /* set for one run (ss_session_run_effects): a collective whose output nothing reads passes
     * only its own part (AllGather) */
    bool contribute_only;
    ss_run_guard *guard; /* the top session's bounds */
};

/* SS_ERR_LIMIT, naming the node and how far it got, once the run's deadline has passed (a loop
 * calls it every iteration; `done` iterations so far); NULL otherwise. */
ss_status *ss_kctx_check_deadline(const ss_kctx *k, int64_t done);

/* The value of input i at plan time, or NULL if it is only known at run time. A non-NULL result
 * may still have data == NULL when infer runs outside planning (k->plan == NULL: then it is the
 * bare input): check data too, unless the tensor is empty (ops/common.h: ss_op_plan_value). */
const ss_tensor *ss_kctx_value(ss_kctx *k, int i);
/* As ss_kctx_value, for a value the output shape cannot be inferred without (Range's limit, a
 * Slice start): a value computed from graph inputs is also folded at plan time, and the plan then
 * depends on those inputs' values (re-planned when they change). Never use it for a value that
 * is merely nice to know (a weight to pre-pack): that would fold the model into its inputs. */
const ss_tensor *ss_kctx_value_needed(ss_kctx *k, int i);

/* Input i is a constant whose bytes are a read-only file mapping (external data) and the op now
 * keeps its own copy (packed weights): return the mapping's pages to the kernel, so the copy
 * replaces them in memory rather than sitting beside them. Reading the input again faults the
 * pages back in from the file, so this never changes a value. No-op for other inputs. */
void ss_kctx_drop_const_pages(ss_kctx *k, int i);
/* The threads an op may use: the session's count, or OpenBLAS's setting when the session gives
 * none (0). */
int ss_kctx_threads(const ss_kctx *k);
/* Whether this node is the only one in the graph that reads input i (a constant another node also
 * reads, say a tied embedding, would be held twice by a packed copy). */
bool ss_kctx_sole_reader(const ss_kctx *k, int i);

/* Packed copies of constant weights (oneDNN's layouts), owned by the session and kept across
 * plans, so a re-plan for a new dynamic dim (another batch size) does not pack them again. A copy
 * is keyed by its source bytes and a layout blob that `same` compares; users hold a reference.
 * When a copy is added, unreferenced copies of the same source in other layouts are freed, so a
 * weight is held at most once per layout in use plus once more. */
typedef struct ss_packed ss_packed;
/* The session's copy of src in `layout`, with a reference taken; NULL if none or no session. */
ss_packed *ss_kctx_packed_find(ss_kctx *k, const void *src, const void *layout,
                               bool (*same)(const void *a, const void *b));
/* Hands `data` (from aligned_alloc) to the session as src's copy in layout (layout_len bytes are
 * copied), with a reference taken. NULL if there is no session or memory, or src is not inside an
 * initializer (a value folded at plan time dies with the plan; find never matches it either): the
 * caller keeps data. */
ss_packed *ss_kctx_packed_add(ss_kctx *k, const void *src, const void *layout, size_t layout_len,
                              void *data);
void *ss_packed_data(const ss_packed *p);
void ss_packed_release(ss_packed *p);

/* The sequence k's output j holds (infer only: keep it in the state): owned by the session, the
 * same object for every plan and run, so values referring to it stay valid. NULL if out of
 * memory, the output is omitted or outside planning. */
ss_sequence *ss_kctx_sequence(ss_kctx *k, int j, ss_dtype elem_dtype);

/* A word of this node's that the session keeps across plans, zero at first: state a run
 * advances (a random op's run count, ops/random.c). NULL outside planning or out of memory. */
uint64_t *ss_kctx_node_word(ss_kctx *k);

/* The model being planned (its path, folder and opsets), or NULL outside planning. */
const ss_onnx_model *ss_kctx_model(const ss_kctx *k);

/* ------------------------------------------------------------------ subgraphs (subgraph.c)
 * A node with graph attributes (If) reads outer-scope values by name; the session gives it those
 * values as extra inputs after its declared ones (k->in[node->n_input...]), in the order of
 * ss_subgraph_outer_names. */
typedef struct {
    int n, cap;
    const char **names; /* borrowed from the model proto */
} ss_name_list;
void ss_name_list_free(ss_name_list *l);
/* The outer-scope names read by the node's subgraphs (nested ones included), first use first. */
ss_status *ss_subgraph_outer_names(const ss_onnx_node *nd, ss_name_list *out);
/* A session for subgraph g (attribute `attr` of k's node) whose graph inputs are g's declared
 * inputs (a loop body's) followed by the outer names, with descs' dtypes, planned for descs
 * (shapes; data where known at plan time). descs holds g->n_input + outer->n entries. */
ss_status *ss_subgraph_session(ss_kctx *k, const Onnx__GraphProto *g, const char *attr,
                               const ss_name_list *outer, const ss_tensor *descs, ss_session **out);
/* ss_session_create_from_model for a subgraph's session: held to the bounds of `guard` (its
 * parent's, which outlives it) instead of its own. */
ss_status *ss_session_create_child(ss_onnx_model *model, const ss_session_options *opt,
                                   ss_run_guard *guard, ss_session **out);
/* Plans s for these inputs, replacing its plan: an input with data is a constant of the plan
 * (folded like an initializer; its bytes must outlive the plan), one without is known by shape.
 * The first n_varying inputs are never constants: their data (if any) only serves shape
 * inference, which then records that the plan depends on it (a loop body's iteration number).
 * from_request (per input, or NULL): that input's data was computed from a request's values in
 * the outer plan, so constants folded from it are bounded as the request's (max_run_bytes). */
ss_status *ss_session_plan_values(ss_session *s, const ss_tensor *inputs, int n_varying,
                                  const bool *from_request);
/* At plan time: whether node input i is a constant computed from the request's values (a graph
 * input's value, a shape it has), not from the model's own constants alone. */
bool ss_kctx_from_request(const ss_kctx *k, int i);

/* Rewrites PyTorch's list-append-in-a-Loop pattern (SequenceEmpty, SequenceInsert, then
 * ConcatFromSequence stacking) into a Loop scan output, in place, before a session is built
 * (seqloop.c). Other sequence uses are left alone. */
void ss_seqloop_rewrite(ss_onnx_model *m);

/* Error helpers that name the node and op. */
ss_status *ss_op_err(const ss_kctx *k, ss_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* run of an SS_OPF_DYNAMIC_SHAPE op: output j's actual shape (numel within infer's bound). */
void ss_op_set_shape(ss_kctx *k, int j, int ndim, const int64_t *dims);

/* Common infer helpers. */
ss_status *ss_op_expect_inputs(const ss_kctx *k, int min, int max);
ss_status *ss_op_expect_dtype(const ss_kctx *k, int i, const ss_dtype *allowed, int n_allowed);
/* Normalises a possibly negative axis into [0, rank); error names the node. */
ss_status *ss_op_axis(const ss_kctx *k, int64_t axis, int rank, int *out);
/* Copies shape and dtype of `src` into `dst`. */
void ss_op_same_shape(ss_tensor *dst, const ss_tensor *src);
/* Multidirectional (numpy) broadcasting of two shapes; error names the node and shapes. */
ss_status *ss_op_broadcast(const ss_kctx *k, const ss_tensor *a, const ss_tensor *b,
                           ss_tensor *out);
/* Reads an int64 (or int32) 1-D/0-D tensor value into dst (up to cap); returns count or -1. */
int ss_op_read_ints(const ss_tensor *t, int64_t *dst, int cap);

/* Family tables, one per file in ops/. */
extern const ss_op_def ss_ops_matmul[];      /* MatMul Gemm */
extern const ss_op_def ss_ops_elementwise[]; /* unary and binary math with broadcasting */
extern const ss_op_def ss_ops_logic[];       /* comparisons, Not/And/Or, Where */
extern const ss_op_def ss_ops_cast[];        /* Cast, CastLike */
extern const ss_op_def ss_ops_shape[];     /* Reshape Flatten Squeeze Unsqueeze Shape Size Expand */
extern const ss_op_def ss_ops_movement[];  /* Transpose Concat Split Slice Gather Tile Pad ... */
extern const ss_op_def ss_ops_generate[];  /* Constant ConstantOfShape Range ... */
extern const ss_op_def ss_ops_reduce[];    /* Reduce* ArgMax ArgMin */
extern const ss_op_def ss_ops_normalize[]; /* Softmax LayerNormalization BatchNormalization ... */
extern const ss_op_def ss_ops_conv[];      /* Conv ConvTranspose Max/AveragePool Global*Pool */
extern const ss_op_def ss_ops_collective[]; /* ai.shardserve AllReduce AllGather Send Recv ... */
extern const ss_op_def ss_ops_control[];    /* If */
extern const ss_op_def ss_ops_resize[];     /* Resize Upsample */
extern const ss_op_def ss_ops_misc[];       /* Dropout CumSum Shrink ReverseSequence Det */
extern const ss_op_def ss_ops_rnn[];        /* RNN GRU LSTM */
extern const ss_op_def ss_ops_einsum[];     /* Einsum */
extern const ss_op_def ss_ops_loop[];       /* Loop Scan */
extern const ss_op_def ss_ops_signal[];     /* windows, DFT, STFT, MelWeightMatrix */
extern const ss_op_def ss_ops_select[];     /* NonZero Unique Compress TopK NonMaxSuppression */
extern const ss_op_def ss_ops_scatter[];    /* ScatterElements Scatter ScatterND GatherND */
extern const ss_op_def ss_ops_sample[];     /* GridSample RoiAlign MaxUnpool */
extern const ss_op_def ss_ops_extra[];      /* TfIdfVectorizer */
extern const ss_op_def ss_ops_strings[];    /* StringNormalizer */
extern const ss_op_def ss_ops_train[];      /* ai.onnx.preview.training Adagrad Momentum */
#define SS_DOMAIN_TRAINING "ai.onnx.preview.training"
extern const ss_op_def ss_ops_paged_attention[];   /* com.shardserve PagedAttention */
extern const ss_op_def ss_ops_contrib[];           /* com.microsoft (onnxruntime's contrib ops) */
extern const ss_op_def ss_ops_contrib_attention[]; /* com.microsoft Attention, RotaryEmbedding */
extern const ss_op_def ss_ops_contrib_math[];      /* com.microsoft Inverse, CDist */
extern const ss_op_def ss_ops_sequence[]; /* Sequence*, ConcatFromSequence, SplitToSequence */
extern const ss_op_def ss_ops_quant[];  /* Quantize/DequantizeLinear MatMulInteger QLinearMatMul */
extern const ss_op_def ss_ops_random[]; /* Random{Uniform,Normal}[Like] Bernoulli Multinomial */
extern const ss_op_def
    ss_ops_qlinear[]; /* com.microsoft QLinearAdd/Mul/Sigmoid/... QOperator ops */

const ss_op_def *ss_op_find(const char *domain, const char *type, int64_t opset);
/* The opset range this runtime serves at all for a domain ("" or ai.shardserve). */
bool ss_op_domain_known(const char *domain);
/* Every op of the model (subgraphs included) missing from the table, named in one error. */
ss_status *ss_op_check_model(const ss_onnx_model *m);

#endif
