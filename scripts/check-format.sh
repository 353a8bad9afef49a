#!/usr/bin/env bash
# The formatting gate: every tracked C source and header must be as clang-format (.clang-format
# at the root) writes it. Lists the files that differ and exits 1; `scripts/check-format.sh --fix`
# rewrites them in place. Run by CTest as the test `clang_format`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang-format >/dev/null; then
  echo "check-format: clang-format is not installed (scripts/install-deps.sh --test installs it)" >&2
  exit 1
fi
mapfile -t files < <(git ls-files '*.c' '*.h' 2>/dev/null || find src include tests bench examples -name '*.[ch]')
if [[ ${1:-} == --fix ]]; then
  clang-format -i "${files[@]}"
  exit 0
fi
# One clang-format for all files (one per file took minutes on a loaded machine); it names each
# file that differs in its "file:line:col: error: code should be clang-formatted" lines.
bad=()
if ! out=$(clang-format --dry-run --Werror "${files[@]}" 2>&1); then
  mapfile -t bad < <(sed -n 's/^\(.*\.[ch]\):[0-9]*:[0-9]*: error: .*/\1/p' <<<"$out" | sort -u)
  ((${#bad[@]})) || bad=("(clang-format failed: ${out:0:300})")
fi
if ((${#bad[@]})); then
  echo "check-format: ${#bad[@]} of ${#files[@]} files differ from clang-format's output (fix: scripts/check-format.sh --fix):"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "check-format: all ${#files[@]} C files formatted ($(clang-format --version | head -1))"
