#!/usr/bin/env bash
# The main job: build shardserve and run the seed example end to end.
# y = Neg(MatMul(x[128,96], W[96,16] = 0.5)) on x = ones: every element of y is -48.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 examples/matmul_distributed/make_model.py "$work/model.onnx"
/usr/bin/python3 -c "import numpy as np, sys; np.save(sys.argv[1], np.ones((128, 96), np.float32))" "$work/x.npy"
build/src/cli/shardserve run "$work/model.onnx" --input x="$work/x.npy" --output-dir "$work"
/usr/bin/python3 - "$work/y.npy" <<'PY'
import sys
import numpy as np
y = np.load(sys.argv[1])
print("y:", y.dtype, y.shape, "all -48:", bool((y == -48).all()))
sys.exit(0 if y.shape == (128, 16) and (y == -48).all() else 1)
PY
