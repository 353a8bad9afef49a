#!/usr/bin/env bash
# The whole seed example: export and shard, start the server and the agents, query through the
# Python client and curl (REST), then stop everything. Exits non-zero if y is not all -48.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shardserve=${SHARDSERVE:-$here/../../build/src/cli/shardserve}
export SHARDSERVE=$shardserve
logs=$(mktemp -d)
server_pid="" agents_pid=""
cleanup() {
    [[ -n "$agents_pid" ]] && kill "$agents_pid" 2>/dev/null && wait "$agents_pid" 2>/dev/null
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$logs"
}
trap cleanup EXIT

"$here/export_model.sh"
"$here/serving_server.sh" >"$logs/server.log" 2>&1 &
server_pid=$!
"$here/serving_agent.sh" >"$logs/agents.log" 2>&1 &
agents_pid=$!
for _ in $(seq 1 300); do
    grep -q "is ready" "$logs/server.log" && break
    if ! kill -0 "$server_pid" 2>/dev/null || ! kill -0 "$agents_pid" 2>/dev/null; then break; fi
    sleep 0.1
done
if ! grep -q "is ready" "$logs/server.log"; then
    echo "the server did not become ready:" >&2
    cat "$logs/server.log" "$logs/agents.log" >&2
    exit 1
fi
grep "^Serving:" "$logs/server.log"
echo "--- Python client (gRPC)"
/usr/bin/python3 "$here/serving_client.py"
echo "--- curl (REST)"
body=$(/usr/bin/python3 -c 'import json; print(json.dumps({"instances": [{"x": [[1.0] * 96] * 128}]}))')
reply=$(curl -s -X POST -H "Content-Type: application/json" -d "$body" http://127.0.0.1:1500/model/matmul:predict)
echo "${reply:0:160}..."
/usr/bin/python3 -c '
import json, sys
y = json.loads(sys.argv[1])["instances"][0]["y"]
ok = len(y) == 128 and all(len(r) == 16 and all(v == -48 for v in r) for r in y)
print("REST y: 128 x 16, all -48:", ok)
sys.exit(0 if ok else 1)' "$reply"
