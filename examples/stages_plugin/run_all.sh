#!/usr/bin/env bash
# The C-plugin example end to end: build the plugin (or take $SS_EXAMPLE_PLUGINS), make the model,
# start a 1-rank servable whose method "classify" is scale (C) -> model -> argmax (C), then query
# it through the Python client (gRPC) and curl (REST). Exits non-zero on a wrong answer.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../common/serve_one_rank.sh
source "$here/../common/serve_one_rank.sh"

mkdir -p "$work/servables/classify"
cp "$here/classify/servable.json" "$work/servables/classify/"
if [[ -n "${SS_EXAMPLE_PLUGINS:-}" ]]; then
    cp "$SS_EXAMPLE_PLUGINS" "$work/servables/classify/libclassify_plugins.so"
else
    cc -O2 -shared -fPIC -I "$here/../../include" -o "$work/servables/classify/libclassify_plugins.so" \
        "$here/classify_plugins.c"
fi
/usr/bin/python3 "$here/make_model.py" "$work/classify.onnx"
serve_one_rank classify "$work/classify.onnx"
echo "--- Python client (gRPC) to $grpc"
/usr/bin/python3 - "$grpc" "$here/../../python" <<'PY'
import sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from shardserve_client import Client
x = np.ones((128, 96), np.float32)
x[1::2] = -1  # odd rows sum negative: class 0
got = Client(sys.argv[1], "classify", "classify").infer([{"x": x}, {"x": -x}])
print("labels of instance 0 (first 6 rows):", got[0]["label"][:6], "scores:", got[0]["score"][:2])
want = np.where(np.arange(128) % 2 == 0, 15, 0)
assert (got[0]["label"] == want).all() and (got[1]["label"] == 15 - want).all(), got
assert np.allclose(got[0]["score"], 7.5 * 2), got[0]["score"][:4]  # scale 2, then 96 * 7.5 / 96
print("gRPC classify: ok")
PY
echo "--- curl (REST) to $rest"
body=$(/usr/bin/python3 -c 'import json; print(json.dumps({"instances": [{"x": [[-1.0] * 96] * 128}]}))')
reply=$(curl -s -X POST -H "Content-Type: application/json" -d "$body" "http://$rest/model/classify:classify")
echo "${reply:0:120}..."
/usr/bin/python3 -c '
import json, sys
inst = json.loads(sys.argv[1])["instances"][0]
ok = inst["label"] == [0] * 128 and all(abs(s - 15.0) < 1e-4 for s in inst["score"])
print("REST classify: label all 0, score all 15:", ok)
sys.exit(0 if ok else 1)' "$reply"
