#!/usr/bin/env bash
# The main job: install, build, and run the seed example end to end (examples/matmul_distributed):
# shard y = Neg(MatMul(x[128,96], W[96,16] = 0.5)) over 8 agents, serve it, query it with the
# Python client (gRPC) and curl (REST): y is (128,16) float32, every element -48.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
examples/matmul_distributed/run_all.sh
