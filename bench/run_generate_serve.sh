#!/bin/bash
# Generation served (issue 15, "aggregate tokens/s at 32 streams >= 6x single-stream"): the
# GPT-2-124M-shaped model of run_generate.sh, sharded with `shard --kv-pool`, served by a real
# serve + agents as a generative servable; bench/gen_serve.py drives 1, 8 and 32 concurrent
# requests of 64 new tokens each through the Python client, rounds interleaved, one run.
#
#   bench/run_generate_serve.sh BUILD_DIR [ROUNDS] [RANKS]
#
# Environment: SS_GEN_WORK (scratch folder shared with run_generate.sh, default /tmp/ss-genbench);
# SS_GEN_MODEL (a models.py / gen_llama1b.py folder instead of the GPT-2 one), SS_GEN_WEIGHTS
# (f32, bf16 or int8, as `shard --weights`; bf16 and int8 also set SS_GEN_APPROX for gen_serve.py),
# SS_GEN_SHARDS (an existing `shard --kv-pool` output of that model to serve, not re-made).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:?usage: run_generate_serve.sh BUILD_DIR [ROUNDS] [RANKS]}" && pwd)
ROUNDS=${2:-3}
RANKS=${3:-1}
WORK=${SS_GEN_WORK:-/tmp/ss-genbench}
SS=$(find "$BUILD" -name shardserve -type f -perm -u+x | head -1)
[ -n "$SS" ] || { echo "run_generate_serve: no shardserve in $BUILD" >&2; exit 2; }
mkdir -p "$WORK"
M=${SS_GEN_MODEL:-$WORK/gpt2-small}
WEIGHTS=${SS_GEN_WEIGHTS:-f32}
[ "$WEIGHTS" = f32 ] || export SS_GEN_APPROX=1
[ -f "$M/model.onnx" ] || /usr/bin/python3 "$REPO/tests/generative/models.py" --family gpt2 \
  --size small --out "$M" >"$WORK/export.log"
SV=$WORK/serve-kv$RANKS
rm -rf "$SV"
mkdir -p "$SV/servables/gen"
SHARDS=${SS_GEN_SHARDS:-$SV/shards}
[ -n "${SS_GEN_SHARDS:-}" ] || "$SS" shard "$M/model.onnx" --ranks "$RANKS" --kv-pool \
  --weights "$WEIGHTS" --out "$SHARDS" >"$SV/shard.log" 2>&1
cat >"$SV/servables/gen/servable.json" <<JSON
{"distributed": {"rank_size": $RANKS, "stage_size": 1, "with_batch_dim": false},
 "generate": {"max_running": 32, "max_sequences": 64, "max_context": 1024, "kv_cache_mb": 256},
 "methods": [{"name": "generate", "inputs": ["prompt", "max_tokens", "temperature", "seed"],
              "outputs": ["tokens"]}]}
JSON
/usr/bin/python3 - "$RANKS" >"$SV/rank_table.json" <<'PY'
import json, sys
n = int(sys.argv[1])
print(json.dumps({"version": "1.0", "server_count": "1", "status": "completed", "server_list": [
    {"server_id": "127.0.0.1", "host_nic_ip": "reserve", "device": [
        {"device_id": str(i), "device_ip": "192.1.27.%d" % i, "rank_id": str(i)}
        for i in range(n)]}]}))
PY
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$SS" serve --servable-dir "$SV/servables" --servable gen --rank-table "$SV/rank_table.json" \
  --grpc 127.0.0.1:0 --distributed-address 127.0.0.1:0 --request-timeout-ms 60000 \
  >"$SV/serve.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do grep -q "waiting for agents on" "$SV/serve.log" && break; sleep 0.1; done
ADDR=$(sed -n 's/.*servable gen waiting for agents on \(\S*\).*/\1/p' "$SV/serve.log" | head -1)
GRPC=$(sed -n 's/^Serving: Serving gRPC server start success, listening on \(\S*\).*/\1/p' \
  "$SV/serve.log" | head -1)
MODELS=$(seq -s, -f "$SHARDS/device%g/model.onnx" 0 $((RANKS - 1)))
"$SS" agents --distributed-address "$ADDR" --model-files "$MODELS" >"$SV/agents.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 3000); do grep -q "is ready" "$SV/serve.log" && break; sleep 0.1; done
grep -q "is ready" "$SV/serve.log" || { cat "$SV/serve.log" "$SV/agents.log"; exit 1; }
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs: $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "   ISA: $(for f in avx2 avx512f avx512_bf16 amx_bf16 amx_tile; do
  grep -qw "$f" /proc/cpuinfo && printf '%s ' "$f" || printf '%s(no) ' "$f"; done)"
echo "   GPT-2-124M (random weights, f32), --kv-pool over $RANKS rank(s), 64 new tokens a request"
PYTHONPATH="$REPO/python" /usr/bin/python3 "$REPO/bench/gen_serve.py" "$GRPC" "$M/prompt.npy" \
  "$M/ref_tokens.npy" "$ROUNDS" 1 8 32
# Streamed through the C client (`shardserve bench --generate`: shardserve.Stream/PredictStream),
# greedy, 64 new tokens a request: time to first token and inter-token latency p50/p99 and
# tokens/s per concurrency level, each level for SS_GEN_STREAM_S seconds (default 30).
/usr/bin/python3 - "$M/prompt.npy" "$SV" <<'PY'
import sys
import numpy as np
inputs = {"prompt": np.load(sys.argv[1]).astype(np.int64), "max_tokens": np.int64(64),
          "temperature": np.float32(0), "seed": np.int64(0)}
for name, value in inputs.items():
    np.save("%s/stream_%s.npy" % (sys.argv[2], name), value)
PY
echo "   streamed (shardserve bench --generate, PredictStream), greedy, 64 new tokens a request:"
"$SS" bench --generate --address "$GRPC" --servable gen --method generate \
  $(for n in prompt max_tokens temperature seed; do printf -- '--input %s=%s ' "$n" "$SV/stream_$n.npy"; done) \
  --concurrency 1,8,32 --duration-s "${SS_GEN_STREAM_S:-30}" --warmup 2
