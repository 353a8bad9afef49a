#!/usr/bin/env bash
# tests/fixture-cache.sh: a generator runs once per key and later runs copy its output; another
# command, a failed run, or an output that names its own path is never reused.
set -u
here=$(cd "$(dirname "$0")" && pwd)
cache_sh=$here/fixture-cache.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
check() { # check WHAT CONDITION...
  local what=$1
  shift
  if "$@"; then echo "ok   $what"; else
    echo "FAIL $what"
    failures=$((failures + 1))
  fi
}
runs() { wc -l <"$tmp/runs" 2>/dev/null || echo 0; }
# gen OUT [TEXT]: counts its runs, writes OUT/data.txt (TEXT, default "same bytes")
cat >"$tmp/gen.sh" <<'EOF'
#!/bin/bash
echo run >>"$COUNT"
mkdir -p "$1" && printf '%s\n' "${2:-same bytes}" >"$1/data.txt"
EOF
export COUNT=$tmp/runs

# without SS_FIXTURE_CACHE: the generator runs every time
unset SS_FIXTURE_CACHE
bash "$cache_sh" "$tmp/a" -- bash "$tmp/gen.sh" "$tmp/a"
bash "$cache_sh" "$tmp/a" -- bash "$tmp/gen.sh" "$tmp/a"
check "no cache: the generator ran twice" test "$(runs)" -eq 2

export SS_FIXTURE_CACHE=$tmp/cache
rm -f "$tmp/runs"
bash "$cache_sh" "$tmp/b1" -- bash "$tmp/gen.sh" "$tmp/b1"
check "first run with a cache: the generator ran" test "$(runs)" -eq 1
bash "$cache_sh" "$tmp/b2" -- bash "$tmp/gen.sh" "$tmp/b2"
check "same command, another folder: copied, not run" test "$(runs)" -eq 1
check "the copy holds the generator's bytes" cmp -s "$tmp/b1/data.txt" "$tmp/b2/data.txt"
echo stale >"$tmp/b2/data.txt"
bash "$cache_sh" "$tmp/b2" -- bash "$tmp/gen.sh" "$tmp/b2"
check "a stale output is replaced by the kept copy" grep -qx 'same bytes' "$tmp/b2/data.txt"

bash "$cache_sh" "$tmp/c" -- bash "$tmp/gen.sh" "$tmp/c" "other bytes"
check "another argument: the generator ran" test "$(runs)" -eq 2
check "and wrote its own bytes" grep -qx 'other bytes' "$tmp/c/data.txt"

SS_EXTRA=1 bash "$cache_sh" "$tmp/d" -- bash "$tmp/gen.sh" "$tmp/d"
check "another SS_ variable: the generator ran" test "$(runs)" -eq 3

bash "$cache_sh" "$tmp/e1" -- bash "$tmp/gen.sh" "$tmp/e1" "in $tmp/e1"
bash "$cache_sh" "$tmp/e2" -- bash "$tmp/gen.sh" "$tmp/e2" "in $tmp/e2"
check "an output naming its own path is not kept" test "$(runs)" -eq 5

bash "$cache_sh" "$tmp/f" -- bash -c 'echo run >>"$COUNT"; mkdir -p "$1"; exit 3' _ "$tmp/f"
rc=$?
check "a failing generator's status comes back" test "$rc" -eq 3
bash "$cache_sh" "$tmp/f" -- bash -c 'echo run >>"$COUNT"; mkdir -p "$1"; exit 3' _ "$tmp/f"
check "and nothing was kept for it" test "$(runs)" -eq 7

bash "$cache_sh" "$tmp/g" >/dev/null 2>&1
check "a call without '--' is refused" test $? -eq 2

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "every check passed"
