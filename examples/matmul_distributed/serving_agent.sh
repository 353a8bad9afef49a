#!/usr/bin/env bash
# The role of serving_agent.py (startup_agents): 8 agents from port 7000, one per model file.
here=$(cd "$(dirname "$0")" && pwd)
shardserve=${SHARDSERVE:-$here/../../build/src/cli/shardserve}
models=$(for i in 0 1 2 3 4 5 6 7; do printf '%s,' "$here/model/device$i/matmul.onnx"; done)
configs=$(for i in 0 1 2 3 4 5 6 7; do printf '%s,' "$here/model/device$i/group_config.json"; done)
exec "$shardserve" agents --distributed-address 127.0.0.1:6200 --model-files "${models%,}" \
    --group-configs "${configs%,}" --agent-start-port 7000
