#!/bin/bash
# Runtime benchmark: shardserve vs onnxruntime-node on the same models, same thread counts,
# interleaved in one run (see bench/compare.py). Builds bench_runtime, installs the npm peer
# (git-ignored node_modules), generates the models, prints one table and the 1 GiB load line.
# Rows: seed, MLP batch 1/32 (f32 and bf16 weights), BERT-tiny, GPT-2-tiny, a BERT-base-sized encoder,
# a GPT-2-small-sized decoder (2 blocks), MobileNetV2 and ResNet-50 (random weights; bench/models.py).
# Real models (PP-OCR, openWakeWord, silero) join the table when scripts/test-real-models.sh has
# filled its cache (bench/real_cases.py; `--only real` runs just them).
#
#   bench/run_runtime.sh [compare.py options, e.g. --threads 2 --rounds 4 --only mlp]
#
# Environment: SS_BENCH_BUILD (build folder, default build-bench), SS_BENCH_MODELS (model
# folder, default $SS_BENCH_BUILD/bench-models; ~1.6 GB), SS_REFERENCE_DIR (see bench/models.py).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${SS_BENCH_BUILD:-$REPO/build-bench}
MODELS=${SS_BENCH_MODELS:-$BUILD/bench-models}

if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S "$REPO" -B "$BUILD" -DBUILD_TESTING=OFF >/dev/null
fi
cmake --build "$BUILD" -j2 --target bench_runtime >/dev/null

# The same onnxruntime-node that scripts/test-real-models.sh installs will do (no network needed).
REAL=${SHARDSERVE_REAL_MODELS_CACHE:-$HOME/.cache/shardserve-real-models}
if [ -d "$REPO/bench/ort/node_modules/onnxruntime-node" ]; then
  :
elif [ -d "$REAL/node/node_modules/onnxruntime-node" ]; then
  export NODE_PATH=$REAL/node/node_modules
else
  # The package's postinstall would download extra binaries; the CPU build is already bundled.
  (cd "$REPO/bench/ort" && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund >/dev/null)
fi

# --only (compare.py's option) also limits which models are written: the MLP and 1 GiB models are
# large, and the BERT-base export takes a minute.
ONLY=()
prev=
for a in "$@"; do
  case "$a" in
    --only=*) ONLY=(--only "${a#--only=}") ;;
    *) [ "$prev" = --only ] && ONLY=(--only "$a") ;;
  esac
  prev=$a
done
/usr/bin/python3 "$REPO/bench/models.py" "$MODELS" "${ONLY[@]}"
# Real models from npm packages, when scripts/test-real-models.sh has filled its cache (the rows
# are left out otherwise; nothing is downloaded here).
REAL_ARGS=()
if [ -d "$REAL/cases" ]; then
  /usr/bin/python3 "$REPO/bench/real_cases.py" "$MODELS/real"
  REAL_ARGS=(--real "$MODELS/real")
fi
# The wait policy a served rank gets when its threads fit the host's cores (src/agent/spawn.h):
# the OpenMP team (oneDNN and the runtime's own ops) spins ~0.5 ms after a region, then sleeps, so
# an idle side does not hold a core while the other side runs. libgomp reads it at process start.
[ -n "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ] || export GOMP_SPINCOUNT=30000
exec /usr/bin/python3 "$REPO/bench/compare.py" --bench "$BUILD/bench/bench_runtime" \
  --ort "$REPO/bench/ort/bench_ort.js" --models "$MODELS" "${REAL_ARGS[@]}" "$@"
