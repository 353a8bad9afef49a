/*
 * shard: cut one ONNX model into per-rank shards.
 *
 * rank_size = stages x ranks_per_stage (MindSpore's rank_size / stage_size). World rank
 * r = stage * ranks_per_stage + position. Within a stage, MatMul/Gemm nodes are split by
 * tensor parallelism (columns, reduction dim or rows, in MindSpore's strategy notation) and the
 * collectives that make the split exact are inserted; across stages the topological order is cut
 * into contiguous parts balanced by parameter bytes and FLOPs, and every tensor crossing a cut
 * travels by Send/Recv from (stage, position) to (stage + 1, position).
 *
 * Decoder-only transformers exported with a KV cache (HF optimum's past_key_values.L.* ->
 * present.L.*) split Megatron-style: attention by heads with no collective inside (recognised
 * from the graph's MatMul -> Reshape(heads) -> Transpose chains, not from names), the output
 * projection and the MLP's second MatMul row-parallel + AllReduce, and each rank's past/present
 * hold its own heads (one head shared by a group of ranks when the ranks outnumber the heads).
 * The token embedding and the LM head split by vocabulary (src/shard/vocab.c): ceil(vocab / ranks)
 * rows of each per rank, one table when they are tied.
 *
 * Output, for DIR:
 *   DIR/device{r}/<model>.onnx        the rank's graph (collectives in domain ai.shardserve)
 *   DIR/device{r}/<model>.data        its weights as ONNX external data (only its shard)
 *   DIR/device{r}/group_config.json   groups by name -> world ranks, stage, send/recv peers
 *   DIR/manifest.json                 the whole split: inputs, outputs, ranks, strategy
 */
#ifndef SHARDSERVE_SHARD_H
#define SHARDSERVE_SHARD_H

#include "shardserve/core.h"
#include "shardserve/runtime.h"

typedef enum {
    SS_SHARD_NONE = 0, /* only pipeline stages; every rank of a stage holds the whole stage */
    SS_SHARD_AUTO,     /* Megatron pattern: column- then row-parallel MatMul/Gemm pairs */
    SS_SHARD_FILE,     /* per-node strategies from a JSON file */
} ss_shard_mode;

typedef struct {
    const char *model_path;
    const char *out_dir;
    int rank_size;  /* total ranks */
    int stage_size; /* pipeline stages (>= 1) */
    ss_shard_mode mode;
    const char *strategy_path; /* SS_SHARD_FILE: {"node name": [[a0,a1],[b0,b1]], ...} */
    /* Concrete shapes for inputs with dynamic dims ("x=128,96"); n entries. Optional for named
     * dims (dim_param): those stay dynamic in the shards (batch, sequence, past length), each
     * stage of a pipeline being given the inputs itself. */
    int n_input_shapes;
    const char *const *input_shapes;
    bool progress; /* print progress lines to stderr */
    /* How the ranks hold MatMul/Gemm weights (recorded in each group config; the files keep f32):
     * SS_WEIGHTS_BF16 halves their memory and bandwidth where the CPU has bf16 math,
     * SS_WEIGHTS_INT8 quarters them for decode-sized products where it has AVX512-VNNI. */
    ss_weights weights;
    /* Rewrite the KV cache's attention to read the agents' KV block pool (PagedAttention) first:
     * no past/present inputs and outputs, a seq_ids input. */
    bool kv_pool;
} ss_shard_options;

ss_status *ss_shard_model(const ss_shard_options *opt);

/* --kv-pool: rewrites a KV-cache decoder's attention over past/present inputs and outputs into
 * com.shardserve PagedAttention over the session's KV block pool, in place (src/shard/kvpool.c
 * says exactly which pattern); *layers is how many attentions it replaced. The inputs become
 * input_ids, position_ids and seq_ids [batch]. */
#define SS_SHARD_MAX_KV_LAYERS 256
ss_status *ss_shard_kvpool_rewrite(ss_onnx_model *m, int *layers);

#endif
