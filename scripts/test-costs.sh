#!/usr/bin/env bash
# Writes tests/costs.txt, the seconds each test took (CTest's COST, read by tests/CMakeLists.txt),
# from a build folder whose ctest ran every test: BUILD/Testing/Temporary/CTestCostData.txt.
# Running tests in parallel, CTest starts the costliest first. A fresh clone (CI) has no cost data
# of its own, so without this table it runs tests in the order they are declared and ends on long
# ones with a slot idle. Tests under 1 s are left out (cost 0: they fill the gaps at the end).
# Usage: scripts/test-costs.sh [BUILD_DIR] (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-build}/Testing/Temporary/CTestCostData.txt
[[ -f $data ]] || { echo "test-costs: no $data: run ctest in that build first" >&2; exit 1; }
{
  echo "# test seconds (scripts/test-costs.sh from a Release build's ctest run; CTest's COST)"
  awk '/^---/ { exit } NF == 3 && $3 >= 1 { printf "%s %.0f\n", $1, $3 }' "$data" | sort -k2,2nr -k1,1
} >tests/costs.txt
echo "test-costs: $(($(wc -l <tests/costs.txt) - 1)) tests in tests/costs.txt"
