#!/bin/sh
# The vocabulary-parallel embedding and LM head: shards a KV-cache decoder with shard_greedy.sh
# (which also checks the 64 greedy tokens against PyTorch), then checks that no rank holds the
# whole [vocab, hidden] table: each rank of the embedding's stage has ceil(vocab / ranks) rows of
# it, each rank of the head's stage as many columns of the head (the same table when the model ties
# them, as GPT-2 does), and prints every rank's weight file size next to the whole model's.
# Then a prompt holding the id `vocab` (one past the last) must fail the ranks at once, naming the
# vocabulary-parallel embedding, as the whole model's Gather fails: no zeros turned into tokens.
#   vocab_greedy.sh SHARDSERVE GEN_GREEDY CASE_DIR RANKS STAGES [--kv-pool]
set -u
here=$(dirname "$0")
sh "$here/shard_greedy.sh" "$@" || exit 1
gen=$2 dir=$3 ranks=$4 stages=$5 kv=${6:-}
out=$dir/shards_${ranks}x$stages${kv:+_kvpool}
/usr/bin/python3 - "$dir/model.onnx" "$out" "$ranks" "$stages" <<'PY'
import glob, math, os, sys
import numpy as np
import onnx
from onnx import numpy_helper
src, out, ranks, stages = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tp = ranks // stages
whole = onnx.load(src)
vocab = whole.graph.output[0].type.tensor_type.shape.dim[2].dim_value
inits = {i.name: numpy_helper.to_array(i) for i in whole.graph.initializer}
table = next(v for v in inits.values() if v.ndim == 2 and v.shape[0] == vocab)
hidden = table.shape[1]
tied = not any(v.ndim == 2 and v.shape == (hidden, vocab) and not np.array_equal(v, table.T)
               for v in inits.values())
chunk = math.ceil(vocab / tp)
whole_bytes = sum(v.nbytes for v in inits.values())
print(f"vocab {vocab} x hidden {hidden}, {'tied' if tied else 'untied'} LM head; "
      f"whole model {whole_bytes} bytes of weights")
shares = 0
for r in range(ranks):
    m = onnx.load(f"{out}/device{r}/model.onnx", load_external_data=False)
    shapes = {i.name: tuple(i.dims) for i in m.graph.initializer}
    full = [n for n, s in shapes.items() if s in ((vocab, hidden), (hidden, vocab))]
    if full and tp > 1:
        sys.exit(f"FAIL rank {r} holds the whole vocabulary table(s) {full}")
    mine = {n: s for n, s in shapes.items() if s in ((chunk, hidden), (hidden, chunk))}
    shares += sum(math.prod(s) for s in mine.values())
    data = sum(os.path.getsize(f) for f in glob.glob(f"{out}/device{r}/*.data"))
    print(f"rank {r} (stage {r // tp}): {data} bytes of weights on disk "
          f"({100.0 * data / whole_bytes:.1f}% of the whole model), vocabulary shares "
          f"{sorted(mine.values())}")
# every rank of the embedding's stage and of the head's stage holds one share (one for both when
# tied and on the same stage), none holds more
want = (1 if tied and stages == 1 else 2) * tp * chunk * hidden
if tp == 1:  # one rank per stage: nothing to split
    sys.exit(0)
if shares != want:
    sys.exit(f"FAIL the ranks hold {shares} elements of vocabulary tables, want {want} "
             f"({chunk} rows of {hidden} per rank and table)")
print(f"OK vocabulary split {tp} ways: {chunk} rows per rank ({chunk * tp - vocab} padding)")
PY
[ "$ranks" -gt "$stages" ] || exit 0
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
vocab=$(/usr/bin/python3 - "$dir" "$work/bad.npy" <<'PY'
import sys, numpy as np, onnx
m = onnx.load(sys.argv[1] + "/model.onnx", load_external_data=False)
vocab = m.graph.output[0].type.tensor_type.shape.dim[2].dim_value
prompt = np.load(sys.argv[1] + "/prompt.npy")
np.save(sys.argv[2], np.array([prompt[0], vocab, prompt[1]], np.int64))
print(vocab)
PY
)
timeout 60 "$gen" --shards "$out" "$work/bad.npy" "$dir/ref_tokens.npy" >"$work/bad.log" 2>&1
rc=$?
want="vocabulary-parallel embedding of $vocab ids)': index $vocab is out of range"
if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || ! grep -q "$want" "$work/bad.log"; then
  cat "$work/bad.log"
  echo "FAIL a prompt with id $vocab: exit $rc, want every rank to fail naming the embedding"
  exit 1
fi
echo "OK id $vocab refused at once (exit $rc): $(grep -m1 "$want" "$work/bad.log")"
