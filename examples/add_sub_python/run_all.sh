#!/usr/bin/env bash
# The servable_config.py example end to end: an unchanged MindSpore servable_config.py (Python
# functions before and after the model) served from its folder by `shardserve serve`, the model
# declared as tensor_add.mindir and found as its ONNX sibling. Queries through the Python client
# (gRPC, imported as MindSpore's mindspore_serving.client) and curl (REST); exits non-zero on a
# wrong answer.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../common/serve_one_rank.sh
source "$here/../common/serve_one_rank.sh"
serve_config_example add_sub tensor_add.onnx
echo "--- MindSpore's client (mindspore_serving.client, gRPC) to $grpc"
/usr/bin/python3 - "$grpc" "$here/../../python" <<'PY'
import sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from mindspore_serving.client import Client  # MindSpore's import, unchanged
a = np.array([[1, 2], [3, 4]], np.float32)
got = Client(sys.argv[1], "add_sub", "add_common").infer([{"x1": a, "x2": a}] * 3)
assert all(np.array_equal(g["y"], 2 * a) for g in got), got
ints = [{"x1": a.astype(np.int32) * i, "x2": a.astype(np.int32), "x3": np.ones((2, 2), np.float32)} for i in range(5)]
got = Client(sys.argv[1], "add_sub", "add_sub").infer(ints)
for i, g in enumerate(got):
    want = a * i + a + 1 - 1
    assert np.array_equal(g["y"], want) and g["text"] == "sum=%g" % want.sum(), (i, g)
print("add_sub (cast -> model -> add_1 -> batched sub), 5 instances:", [g["text"] for g in got])
got = Client(sys.argv[1], "add_sub", "add_cast_old").infer([{"x1": a.astype(np.int32), "x2": a.astype(np.int32)}])
assert np.array_equal(got[0]["y"], 2 * a), got
print("gRPC: ok")
PY
echo "--- curl (REST) to $rest"
reply=$(curl -s -X POST -H "Content-Type: application/json" \
    -d '{"instances": [{"x1": [[1, 2], [3, 4]], "x2": [[1, 1], [1, 1]], "x3": [[0.5, 0.5], [0.5, 0.5]]}]}' \
    "http://$rest/model/add_sub:add_sub")
echo "$reply"
/usr/bin/python3 -c '
import json, sys
inst = json.loads(sys.argv[1])["instances"][0]
ok = inst["y"] == [[2.5, 3.5], [4.5, 5.5]] and inst["text"] == "sum=16"
print("REST add_sub:", "ok" if ok else "WRONG")
sys.exit(0 if ok else 1)' "$reply"
