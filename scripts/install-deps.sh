#!/usr/bin/env bash
# Install the Debian 12 packages shardserve needs, skipping those already present.
#   scripts/install-deps.sh          build + run (the main job)
#   scripts/install-deps.sh --test   also what the test suite needs
# Runs apt-get only when something is missing (as root, or through sudo when available).
set -euo pipefail

# Build and run.
MAIN_PKGS=(
  gcc make cmake pkg-config
  libopenblas-dev libdnnl-dev
  libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
  libonnx-dev
  libgrpc-dev libssl-dev
  libmicrohttpd-dev libgnutls28-dev libcjson-dev
  openmpi-bin libopenmpi-dev
  python3-onnx python3-numpy python3-grpcio python3-protobuf
  curl
)
# Tests only.
TEST_PKGS=(
  clang libclang-rt-14-dev clang-format
  libonnx-testdata
  python3-torch
  python3-h2 # raw HTTP/2 for the stalled-stream attack (tests/robustness/test_stalled_streams.py)
  iproute2 procps
  openssl
  gdb # stacks of a process a test finds hung (tests/serving/cluster.py: Cluster.stacks)
  python3-pil # examples/classify_python's Python preprocess (decodes the request's JPEG)
  nodejs # onnxruntime-node, the oracle of scripts/test-real-models.sh
)

want=("${MAIN_PKGS[@]}")
if [[ "${1:-}" == "--test" ]]; then want+=("${TEST_PKGS[@]}"); fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# npm comes with some nodejs builds (NodeSource's) and is a separate Debian package otherwise.
if [[ "${1:-}" == "--test" ]] && ! command -v npm >/dev/null; then missing+=(npm); fi
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#want[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
