#!/bin/bash
# CTest fixture setup (test shard_data) for the sharding tests: writes into $SS_SHARD_DATA
#   fx/<case>/          the exporter-shaped MLP / MNIST CNN / BERT-tiny / GPT-2-tiny / gated MLP (If) cases
#                       (tests/fixtures/onnx_export_families.py --fixtures)
#   seed/model.onnx     the seed model (examples/matmul_distributed/make_model.py) and x.npy = 1
#   chain/chain.onnx    16 x MatMul 1024x1024 -> Relu (64 MB, external data) and chain_x.npy [512,1024]
#   in/<case>/          the case's inputs as .npy, plus inputs.txt ("--input NAME=FILE" lines),
#                       shapes.txt ("--input-shape NAME=D0,.." lines) and outputs.txt (names)
#   ready               written last
# Generating the fixtures imports torch (slow), so they are reused while the generator and this
# script are unchanged (a stamp holds their checksums).
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
data=${SS_SHARD_DATA:?set SS_SHARD_DATA}
py=/usr/bin/python3
stamp_want=$(cat "$repo/tests/fixtures/onnx_export_families.py" "$repo/examples/matmul_distributed/make_model.py" \
  "$0" "$here/npytool.py" "$here/make_chain.py" | md5sum | cut -d' ' -f1)
if [ -f "$data/ready" ] && [ "$(cat "$data/ready")" = "$stamp_want" ]; then
  echo "fixtures in $data are up to date"
  exit 0
fi
rm -rf "$data"
mkdir -p "$data/seed" "$data/in" || exit 1
echo "generating exporter fixtures into $data/fx"
$py "$repo/tests/fixtures/onnx_export_families.py" --fixtures "$data/fx" >"$data/gen.log" 2>&1 ||
  { cat "$data/gen.log"; echo "FAIL fixture generation"; exit 1; }
$py "$repo/examples/matmul_distributed/make_model.py" "$data/seed/model.onnx" || { echo "FAIL seed model"; exit 1; }
$py -c "import numpy as np; np.save('$data/seed/x.npy', np.ones((128, 96), np.float32))" || exit 1
$py "$here/make_chain.py" "$data/chain/chain.onnx" --dim 1024 --layers 16 --batch 512 || { echo "FAIL chain model"; exit 1; }
for c in mlp bert_tiny gpt2_tiny mnist_cnn gated_mlp_on gated_mlp_off; do
  for op in 14 17; do
    case=${c}_op$op
    src=$data/fx/test_$case
    [ -f "$src/model.onnx" ] || { echo "FAIL the generator wrote no $src/model.onnx"; exit 1; }
    out=$data/in/$case
    $py "$here/npytool.py" case "$src" "$out" >"$out.lines" || { echo "FAIL converting $case inputs"; exit 1; }
    grep -v '^SHAPE ' "$out.lines" | sed 's/^/--input /' >"$out/inputs.txt"
    grep '^SHAPE ' "$out.lines" | sed 's/^SHAPE /--input-shape /' >"$out/shapes.txt"
    $py -c "
import glob, onnx, sys
for p in sorted(glob.glob('$src/test_data_set_0/output_*.pb')):
    t = onnx.TensorProto(); t.ParseFromString(open(p, 'rb').read()); print(t.name)
" >"$out/outputs.txt" || exit 1
    rm -f "$out.lines"
    echo "$case: $(tr '\n' ' ' <"$out/shapes.txt")-> $(tr '\n' ' ' <"$out/outputs.txt")"
  done
done
echo "$stamp_want" >"$data/ready"
echo "fixtures ready in $data"
