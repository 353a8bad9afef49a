#!/usr/bin/env bash
# Several models in one servable, end to end: an unchanged MindSpore servable_config.py declaring
# an Add model, a Mul model and a model of two subgraphs (Add, Mul), served by `shardserve serve`
# alone (each declared model is local: serve starts and supervises its 1-rank group, no rank table
# or agents command needed). add_then_mul runs Add then Mul, mul_only Mul, subgraphs runs subgraph 0
# as a stage and subgraph 1 through Model.call from a Python function. Queries through MindSpore's
# client (gRPC) and curl (REST), checked against numpy; exits non-zero on a wrong answer.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shardserve=${SHARDSERVE:-$here/../../build/src/cli/shardserve}
work=$(mktemp -d)
server_pid=""
cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/servables/two_models/1"
cp "$here/two_models/servable_config.py" "$work/servables/two_models/"
/usr/bin/python3 "$here/make_models.py" "$work/servables/two_models/1"
"$shardserve" serve --servable-dir "$work/servables" --servable two_models --wait-agents 60 \
    --grpc 127.0.0.1:0 --rest 127.0.0.1:0 >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 600); do grep -q "is ready" "$work/server.log" && break; sleep 0.1; done
if ! grep -q "is ready" "$work/server.log"; then
    echo "the server did not become ready:" >&2
    cat "$work/server.log" >&2
    exit 1
fi
grep "local model" "$work/server.log"
grpc=$(sed -n 's/^Serving: Serving gRPC server start success, listening on \(.*\)/\1/p' "$work/server.log")
rest=$(sed -n 's/^Serving: Serving RESTful server start success, listening on \(.*\)/\1/p' "$work/server.log")
echo "--- MindSpore's client (gRPC) to $grpc, REST to $rest"
/usr/bin/python3 - "$grpc" "$rest" "$here/../../python" <<'PY'
import json, sys, urllib.request
import numpy as np
sys.path.insert(0, sys.argv[3])
from mindspore_serving.client import Client  # MindSpore's import, unchanged
rng = np.random.default_rng(7)
insts = [{k: rng.standard_normal((2, 2)).astype(np.float32) for k in ("x1", "x2", "x3")} for _ in range(4)]
got = Client(sys.argv[1], "two_models", "add_then_mul").infer(insts)
assert all(np.allclose(g["y"], (i["x1"] + i["x2"]) * i["x3"]) for g, i in zip(got, insts)), got
got = Client(sys.argv[1], "two_models", "mul_only").infer([{"x1": i["x1"], "x2": i["x2"]} for i in insts])
assert all(np.allclose(g["y"], i["x1"] * i["x2"]) for g, i in zip(got, insts)), got
got = Client(sys.argv[1], "two_models", "subgraphs").infer([{"x1": i["x1"], "x2": i["x2"]} for i in insts])
for g, i in zip(got, insts):
    assert np.allclose(g["y"], i["x1"] + i["x2"]) and np.allclose(g["z"], (i["x1"] + i["x2"]) * i["x2"]), g
print("gRPC: add_then_mul, mul_only, subgraphs over 4 instances: ok")
for method, names, want in (("add_then_mul", ("x1", "x2", "x3"), lambda i: (i["x1"] + i["x2"]) * i["x3"]),
                            ("mul_only", ("x1", "x2"), lambda i: i["x1"] * i["x2"])):
    body = {"instances": [{k: i[k].tolist() for k in names} for i in insts]}
    req = urllib.request.Request("http://%s/model/two_models:%s" % (sys.argv[2], method), json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        reply = json.loads(r.read())
    for g, i in zip(reply["instances"], insts):
        assert np.allclose(np.array(g["y"], np.float32), want(i), atol=1e-5), (method, reply)
    print("REST %s: ok" % method)
PY
