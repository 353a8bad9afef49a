/*
 * The KV-cache block pool a session keeps for its PagedAttention nodes (vLLM's paged layout).
 *
 * One pool per session, sized once (kv_cache_bytes): n_blocks blocks of block_size tokens, the
 * same block ids in every layer, so one block list per sequence serves all of them. A layer's
 * keys and values are [n_blocks][kv_heads][block_size][head_dim] each, float32 or bf16 (half the
 * bytes a token, so twice the tokens in the same pool and half the reads a step; the attention
 * computes in float32 either way), allocated when the layer's node is first planned (its heads and
 * head size come from shape inference; a shard has its own share of the heads). Sequences are
 * created and freed by the caller; a step appends tokens at their positions, taking free blocks as
 * a sequence grows, and never copies the past. Blocks are chained per sequence (next[]), so a
 * sequence costs no allocation of its own; each attention call lays its chain out as a block table
 * in the pool's scratch.
 */
#ifndef SS_RUNTIME_OPS_KVPOOL_H
#define SS_RUNTIME_OPS_KVPOOL_H

#include "shardserve/core.h"

typedef struct ss_kvpool ss_kvpool;

typedef struct {
    int64_t id; /* the node's `layer` attribute */
    int kv_heads, head_dim;
    bool bf16; /* k and v hold bf16 (uint16_t), else float */
    void *k, *v;
} ss_kv_layer;

/* One attention step over a layer: q [batch, q_heads, seq, head_dim], k/v (the new rows)
 * [batch, kv_heads, seq, head_dim], seq_ids [batch], positions [batch, seq] (consecutive within a
 * row, the first at most the sequence's length: a row appends, or rewrites its last tokens; several
 * rows of one sequence come in position order, each going on from the one before);
 * out like q. q_heads is a multiple of kv_heads: query head h reads KV head h / (q_heads /
 * kv_heads), as HF's repeat_kv. */
typedef struct {
    const float *q, *k, *v;
    const int64_t *seq_ids, *positions;
    float *out;
    int64_t batch, seq;
    int q_heads;
    float scale;
    int threads; /* parts of the pool it may run in (plan time: ss_gemm_pool_reserve) */
} ss_kv_step;

/* bf16: keys and values stored as bf16 (rounded to nearest even when written). */
ss_status *ss_kvpool_create(size_t bytes, int block_size, int n_layers, bool bf16, ss_kvpool **out);
void ss_kvpool_free(ss_kvpool *p);
/* Another size while it holds no sequence (the layers get storage for the new block count). */
ss_status *ss_kvpool_set_bytes(ss_kvpool *p, size_t bytes);

/* Plan time: the storage of layer `id` with this geometry (allocated on first use; the pool's
 * block count is fixed by the first layer bound). */
ss_status *ss_kvpool_layer(ss_kvpool *p, int64_t id, int kv_heads, int head_dim, ss_kv_layer **out);

/* A new, empty sequence; LIMIT naming the pool's size when no block is free. */
ss_status *ss_kvpool_seq_create(ss_kvpool *p, int64_t seq);
/* Returns the sequence's blocks to the pool. */
ss_status *ss_kvpool_seq_free(ss_kvpool *p, int64_t seq);
/* Tokens cached for a sequence, or -1 when there is no such sequence. */
int64_t ss_kvpool_seq_length(const ss_kvpool *p, int64_t seq);
/* Blocks not held by any sequence, and all blocks (both 0 before the first layer is bound). */
int64_t ss_kvpool_free_blocks(const ss_kvpool *p);
int64_t ss_kvpool_total_blocks(const ss_kvpool *p);

/* Run time: writes the step's k/v into the blocks of each row's sequence, then attends every
 * query to its sequence's keys at positions up to its own (causal). Allocates only when a step
 * has more rows, or a longer sequence, than any before (its scratch then grows). */
ss_status *ss_kvpool_attend(ss_kvpool *p, const ss_kv_layer *l, const ss_kv_step *s);
/* Test hooks: the work (multiply-adds) from which a step with threads > 1 runs in parts (< 0:
 * the default), and how many steps did. */
void ss_kvpool_force_par_min(int64_t work);
unsigned long ss_kvpool_parallel_steps(void);

#endif
