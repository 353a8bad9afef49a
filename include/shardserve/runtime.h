/*
 * runtime: plan an ONNX graph once, execute it many times.
 *
 * A session owns a loaded model. Planning (at load when every input dim is static, otherwise on
 * the first run) puts the nodes in topological order, infers every shape, folds everything that
 * depends only on constants and shapes (the int64 shape plumbing of exported models), and lays
 * out every intermediate tensor in one arena with buffer reuse by lifetime. Running then only
 * calls kernels: no allocation while input shapes stay the same; a changed dynamic dim re-plans.
 *
 * The runtime knows nothing of serving or networking. Collective ops (domain ai.shardserve) call
 * out through the ss_collectives table the caller provides.
 */
#ifndef SHARDSERVE_RUNTIME_H
#define SHARDSERVE_RUNTIME_H

#include "shardserve/core.h"
#include "shardserve/onnx.h"

#define SS_DOMAIN_COLLECTIVE "ai.shardserve"
/* Ops that keep state in the session (PagedAttention over the KV block pool); not collectives. */
#define SS_DOMAIN_KVPOOL "com.shardserve"

/* What collective ops call. `group` names a group of the group config ("world" always exists). */
typedef struct ss_collectives {
    void *ctx;
    int (*group_size)(void *ctx, const char *group); /* -1: unknown group */
    int (*group_rank)(void *ctx, const char *group); /* this process's index in the group */
    ss_status *(*allreduce)(void *ctx, const char *group, void *buf, ss_dtype dt, size_t count);
    /* out is preallocated with in's shape except dims[axis] * group_size; NULL: only contribute
     * in (nothing reads the result on this rank) */
    ss_status *(*allgather)(void *ctx, const char *group, const ss_tensor *in, int axis,
                            ss_tensor *out);
    ss_status *(*broadcast)(void *ctx, const char *group, int root, void *buf, size_t nbytes);
    /* peer is a world rank */
    ss_status *(*send)(void *ctx, int peer, const void *buf, size_t nbytes);
    ss_status *(*recv)(void *ctx, int peer, void *buf, size_t nbytes);
} ss_collectives;

/* How a session stores constant MatMul/Gemm weights. bf16 halves their memory and bandwidth and
 * runs on AVX512-BF16/AMX with f32 accumulation; on CPUs without native bf16 math they stay f32.
 * int8 quarters them (MatMul/Gemm of any row count: one scale per weight column, each
 * row of activations quantized on every call, int32 sums on AVX512-VNNI); larger products and
 * CPUs without VNNI keep f32. */
typedef enum { SS_WEIGHTS_F32 = 0, SS_WEIGHTS_BF16, SS_WEIGHTS_INT8 } ss_weights;

/* "f32", "bf16" or "int8" (false for anything else), and back. */
bool ss_weights_parse(const char *name, ss_weights *out);
const char *ss_weights_name(ss_weights w);

typedef struct {
    int blas_threads; /* 0: leave OpenBLAS's setting alone */
    ss_weights weights;
    const ss_collectives *coll; /* NULL: models with collective ops fail at load */
    /* The KV block pool of a model with PagedAttention nodes (`shardserve shard --kv-pool`):
     * its bytes (0: 64 MiB) and tokens per block (0: 16). */
    size_t kv_cache_bytes;
    int kv_block_size;
    /* The most bytes one plan may take for the values a run computes (its arena: intermediates
     * and kernel scratch) and for any one constant folded at plan time from input values (a
     * Range whose limit is an input; the model's own constants are not bounded); 0: no limit. A
     * request whose shapes or values ask for more fails with SS_ERR_LIMIT naming the largest value,
     * instead of the process allocating what it cannot hold. Subgraph bodies (Loop, Scan, If)
     * are held to the same bound. */
    size_t max_run_bytes;
    /* Planned for its shapes and the values folded at plan time only, never run (the shard
     * tool): products plan on the own kernels, so no oneDNN primitive is created and no float32
     * weight packed or reordered (bf16 and int8 weights are still converted). */
    bool plan_only;
} ss_session_options;

typedef struct ss_session ss_session;

ss_status *ss_session_create(const char *model_path, const ss_session_options *opt,
                             ss_session **out);
/* Takes ownership of `model` (also on failure). */
ss_status *ss_session_create_from_model(ss_onnx_model *model, const ss_session_options *opt,
                                        ss_session **out);
void ss_session_free(ss_session *s);

int ss_session_num_inputs(const ss_session *s);
int ss_session_num_outputs(const ss_session *s);
const ss_onnx_value_info *ss_session_input(const ss_session *s, int i);
const ss_onnx_value_info *ss_session_output(const ss_session *s, int i);
const ss_onnx_model *ss_session_model(const ss_session *s);

/* Run with one tensor per graph input, in graph-input order. On success *outputs points at
 * num_outputs tensors owned by the session, valid until the next run or free. */
ss_status *ss_session_run(ss_session *s, const ss_tensor *inputs, int n_inputs,
                          const ss_tensor **outputs);
/* As ss_session_run, computing output i straight into dest[i] (cap[i] bytes; dest NULL or
 * dest[i] NULL: the session's own buffer) where that is safe: an output an elementwise node
 * writes into a buffer of its own, not aliased, in a plan that does not re-plan mid-run, and
 * that fits. (*outputs)[i].data says where each output is. Serving agents use it to write an
 * output straight into the client's shared memory. */
ss_status *ss_session_run_into(ss_session *s, const ss_tensor *inputs, int n_inputs,
                               void *const *dest, const size_t *cap, const ss_tensor **outputs);
/* Runs from now on stop with SS_ERR_LIMIT once the monotonic clock (ss_now_ns) passes
 * deadline_ns (0: never), checked where the data alone decides how long a run takes: every
 * iteration of a Loop (its trip count and condition come from the data). Other ops finish in time
 * bounded by their shapes (max_run_bytes). A server sets it per request from the time the client
 * still waits. */
void ss_session_set_deadline(ss_session *s, uint64_t deadline_ns);
/* Whether a run was stopped at the deadline since ss_session_set_deadline last set it. */
bool ss_session_stopped_at_deadline(const ss_session *s);
/* Run for the effects beyond the outputs only, when nobody reads them (a rank whose outputs are
 * not returned): collectives, KV-pool writes and what they read run; the rest is skipped, and an
 * AllGather whose result nothing that runs reads only contributes its part (with shm it then
 * need not wait for the group). The outputs are left undefined until the next ss_session_run. */
ss_status *ss_session_run_effects(ss_session *s, const ss_tensor *inputs, int n_inputs);

typedef struct {
    int n_nodes;          /* nodes in the graph */
    int n_exec_nodes;     /* nodes left to run after folding */
    size_t arena_bytes;   /* one arena for every intermediate */
    size_t naive_bytes;   /* what one buffer per intermediate would need */
    int in_place_outputs; /* values written in the slot of an operand their node copies in first */
    size_t const_bytes;   /* initializers (mapped or not) + folded constants */
    int n_plans;          /* how many times the session planned */
    int n_arenas;         /* arenas it allocated: a re-plan takes the last one when large enough */
    size_t arena_cap_bytes;   /* the plan's arena as allocated: arena_bytes plus re-plan headroom */
    size_t spare_arena_bytes; /* a freed plan's arena still held: 0 once a run returns */
} ss_session_stats;
void ss_session_get_stats(const ss_session *s, ss_session_stats *out);

/* Sequences of the KV block pool (a model with PagedAttention nodes; INVALID otherwise). A
 * sequence is created before its first step (LIMIT naming the pool's size when no block is
 * free), fed through its seq_ids input, and freed to return its blocks. */
ss_status *ss_session_seq_create(ss_session *s, int64_t seq_id);
ss_status *ss_session_seq_free(ss_session *s, int64_t seq_id);
/* Tokens cached for a sequence (-1: none such, or no pool). */
int64_t ss_session_seq_length(const ss_session *s, int64_t seq_id);
/* The pool's blocks, and how many no sequence holds (0 and 0 without a pool, or before the first
 * plan sized it). */
void ss_session_kv_blocks(const ss_session *s, int64_t *total, int64_t *free_blocks);
/* Resize the pool while it holds no sequence (INVALID otherwise, or without a pool). */
ss_status *ss_session_set_kv_cache_bytes(ss_session *s, size_t bytes);
/* Tokens per block of that pool (0 without one). */
int ss_session_kv_block_tokens(const ss_session *s);

/* Plan for inputs of the given dtypes and shapes (their data is ignored; zeros are used) without
 * running, so that ss_session_value_desc can answer for every value. Used by the shard tool.
 * UNSUPPORTED when a shape depends on a value only a run computes (such a model still runs). */
ss_status *ss_session_plan_shapes(ss_session *s, const ss_tensor *input_descs, int n_inputs);
/* dtype and shape of any value of the current plan; false if unknown. desc->data points at the
 * value (owned by the session) when it is a constant (initializer or folded), else NULL. */
bool ss_session_value_desc(const ss_session *s, const char *name, ss_tensor *desc);

/* Sequence values (ONNX seq(tensor)): an ordered list of owned tensors. In a session a sequence
 * travels as a 0-D tensor of dtype SS_DT_SEQUENCE whose element refers to it (ss_sequence_tensor
 * makes one for a graph input; ss_sequence_of reads a graph output). A sequence output is owned
 * by the session, valid until the next run or free, like a tensor output. */
typedef struct ss_sequence ss_sequence;
ss_sequence *ss_sequence_new(ss_dtype elem_dtype);
void ss_sequence_free(ss_sequence *q);
int ss_sequence_len(const ss_sequence *q);
ss_dtype ss_sequence_elem_dtype(const ss_sequence *q);
const ss_tensor *ss_sequence_at(const ss_sequence *q, int i);
/* Inserts a deep copy of t at position i (0..len). */
ss_status *ss_sequence_insert(ss_sequence *q, int i, const ss_tensor *t);
/* A borrowed 0-D SS_DT_SEQUENCE tensor referring to q (valid while q lives, unchanged); q NULL
 * gives an empty optional sequence. */
void ss_sequence_tensor(ss_sequence *q, ss_tensor *out);
/* The sequence a SS_DT_SEQUENCE tensor refers to, or NULL for another tensor (or an empty
 * optional sequence). */
const ss_sequence *ss_sequence_of(const ss_tensor *t);
/* Optional values (ONNX optional(T)) travel as SS_DT_SEQUENCE values too: optional(tensor) as a
 * sequence marked optional holding 0 or 1 tensors, optional(seq) as the sequence itself (or no
 * sequence: empty). */
void ss_sequence_mark_optional(ss_sequence *q);
bool ss_sequence_is_optional(const ss_sequence *q);

/* Does the runtime's op table hold (domain, op_type) at `opset` as an elementwise op (each output
 * element reads only the input elements at its own index, numpy broadcasting aside)? The shard
 * tool keeps exactly these ops on split tensors, so adding one to the runtime is enough. */
bool ss_runtime_op_elementwise(const char *domain, const char *op_type, int64_t opset);

#endif
