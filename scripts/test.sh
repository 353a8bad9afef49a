#!/usr/bin/env bash
# The test command: install what the tests need, build, run every CTest test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
scripts/build.sh
ctest --test-dir build --output-on-failure -j2 --timeout 600
