#!/usr/bin/env bash
# The role of MindSpore's export_model.sh: write the model (make_model.py, the role of net.py)
# and split it over 8 ranks, W's columns split 8 ways and the outputs gathered
# (strategy [[1,1],[1,8]]), into model/device0..7/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shardserve=${SHARDSERVE:-$here/../../build/src/cli/shardserve}
/usr/bin/python3 "$here/make_model.py" "$here/export/matmul.onnx"
rm -rf "$here/model"
"$shardserve" shard "$here/export/matmul.onnx" --ranks 8 --strategy "$here/strategy.json" --out "$here/model"
for i in 0 1 2 3 4 5 6 7; do test -f "$here/model/device$i/matmul.onnx"; done
