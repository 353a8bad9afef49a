#!/bin/sh
# Shards an exported KV-cache decoder with `shardserve shard` (no --input-shape: batch, sequence
# and past lengths stay dynamic), checks that the ranks hold their share of the KV heads, then
# runs gen_greedy --shards: every rank's 64 greedy tokens must equal PyTorch's.
# With --kv-pool the attention reads each rank's KV block pool instead: the shards must have no
# past/present inputs or outputs, one PagedAttention per layer, and (gen_greedy checks it) no
# re-planning during decode; one rank runs the rewritten model whole, without a communicator.
#   shard_greedy.sh SHARDSERVE GEN_GREEDY CASE_DIR RANKS STAGES [--kv-pool]
set -u
ss=$1 gen=$2 dir=$3 ranks=$4 stages=$5 kv=${6:-}
out=$dir/shards_${ranks}x$stages${kv:+_kvpool}
rm -rf "$out"
"$ss" shard "$dir/model.onnx" --ranks "$ranks" --stages "$stages" $kv --out "$out" >"$out.log" 2>&1 ||
  { cat "$out.log"; echo "FAIL shardserve shard"; exit 1; }
grep -v 'written' "$out.log"
/usr/bin/python3 - "$dir/model.onnx" "$out" "$ranks" "$stages" "$kv" <<'PY' || exit 1
# Every rank's past/present is the whole cache's heads / ranks-per-stage, one head when the ranks
# are a multiple of the KV heads (GQA: each group of ranks shares the head its queries use), or
# the whole cache otherwise (replicated).
import collections, glob, onnx, sys
src, out, ranks, stages = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
kv_pool = sys.argv[5] == "--kv-pool"
tp = ranks // stages
heads = {i.name: i.type.tensor_type.shape.dim[1].dim_value for i in onnx.load(src).graph.input
         if i.name.startswith("past_key_values.")}
m = onnx.load(f"{out}/device0/model.onnx", load_external_data=False)
ops = collections.Counter(n.op_type for n in m.graph.node)
for i in list(m.graph.input) + list(m.graph.output):
    name = i.name.replace("present.", "past_key_values.")
    if name not in heads: continue
    h = heads[name]  # fewer heads than ranks: a group of ranks shares one
    want = max(1, h // tp) if h % tp == 0 or tp % h == 0 else h
    got = i.type.tensor_type.shape.dim[1].dim_value
    dyn = [d.dim_param for d in i.type.tensor_type.shape.dim if d.dim_param]
    if got != want or len(dyn) != 2:
        sys.exit(f"FAIL {i.name}: {got} heads (want {want}), dynamic dims {dyn}")
if kv_pool:
    io = sorted(i.name for i in m.graph.input)
    layers_here = sum(ops["PagedAttention"] for ops in
                      [collections.Counter(n.op_type for n in
                                           onnx.load(f"{out}/device{r}/model.onnx",
                                                     load_external_data=False).graph.node)
                       for r in range(0, ranks, ranks // stages)])
    # the LM head's rows come through Gather(logit_rows) on the last stage: logits only for the
    # rows the token loop samples
    last = onnx.load(f"{out}/device{ranks - 1}/model.onnx", load_external_data=False).graph
    if io != ["input_ids", "logit_rows", "position_ids", "seq_ids"] or len(m.graph.output) > 1 or layers_here != len(heads) // 2 or \
            "logit_rows" not in [i.name for i in last.input] or \
            not any(n.op_type == "Gather" and "logit_rows" in n.input for n in last.node):
        sys.exit(f"FAIL --kv-pool: inputs {io}, outputs {[o.name for o in m.graph.output]}, "
                 f"{layers_here} PagedAttention for {len(heads) // 2} layers, last stage's "
                 f"inputs {[i.name for i in last.input]}")
# two AllReduces per layer at most; exactly two when the heads divide (a layer whose heads do not
# runs attention whole on every rank, and an MLP whose width does not stays whole too), plus the
# vocabulary-parallel embedding's one
layers, split = len(heads) // 2, all(h % tp == 0 for h in heads.values())
want = 2 * layers + (tp > 1)
if tp > 1 and stages == 1 and (ops["AllReduce"] > want or (split and ops["AllReduce"] != want)):
    sys.exit(f"FAIL {ops['AllReduce']} AllReduce for {layers} layers (want 2 per layer + 1)")
print(f"rank 0: KV heads {sorted(set(heads.values()))} -> per rank as expected; "
      f"AllReduce {ops['AllReduce']}, AllGather {ops['AllGather']}")
PY
if [ "$ranks" = 1 ]; then
  "$gen" "$out/device0/model.onnx" "$dir/prompt.npy" "$dir/ref_tokens.npy"
else
  "$gen" --shards "$out" "$dir/prompt.npy" "$dir/ref_tokens.npy"
fi
