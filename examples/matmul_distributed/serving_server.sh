#!/usr/bin/env bash
# The role of serving_server.py: the worker on 127.0.0.1:6200, gRPC on :5500, REST on :1500.
here=$(cd "$(dirname "$0")" && pwd)
shardserve=${SHARDSERVE:-$here/../../build/src/cli/shardserve}
exec "$shardserve" serve --servable-dir "$here" --servable matmul --version 1 \
    --rank-table "$here/rank_table_8pcs.json" --distributed-address 127.0.0.1:6200 \
    --wait-agents "${WAIT_AGENTS:-60}" --grpc 127.0.0.1:5500 --rest 127.0.0.1:1500
