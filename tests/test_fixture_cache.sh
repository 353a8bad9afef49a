#!/usr/bin/env bash
# tests/fixture-cache.sh: a generator runs once per key and later runs copy its output; another
# command, another SS_ variable, a changed source, a failed run, or an output that names its own
# path is never reused; a file .gitignore leaves out does not change the key; OUT holds only what
# the generator wrote; a dangerous OUT is refused.
# The wrapper runs from a private copy of the repository's layout (tests/, examples/, python/), so
# that tests writing into the real tree meanwhile (serving_seed_example's examples/ model, Python's
# __pycache__) cannot change its key between two calls here.
set -u
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
repo=$tmp/repo
mkdir -p "$repo/tests" "$repo/examples" "$repo/python"
cp "$here/fixture-cache.sh" "$repo/tests/"
echo "v1" >"$repo/tests/generator_input.py"
printf '__pycache__/\n' >"$repo/.gitignore"
have_git=0
if command -v git >/dev/null && git -C "$repo" init -q 2>/dev/null; then
  have_git=1
  git -C "$repo" add -A
fi
cache_sh=$repo/tests/fixture-cache.sh
failures=0
check() { # check WHAT CONDITION...
  local what=$1
  shift
  if "$@"; then echo "ok   $what"; else
    echo "FAIL $what"
    failures=$((failures + 1))
  fi
}
runs() { if [[ -e $tmp/runs ]]; then wc -l <"$tmp/runs"; else echo 0; fi; }
# gen OUT [TEXT]: counts its runs, writes OUT/data.txt (TEXT, default "same bytes")
cat >"$tmp/gen.sh" <<'GEN'
#!/bin/bash
echo run >>"$COUNT"
mkdir -p "$1" && printf '%s\n' "${2:-same bytes}" >"$1/data.txt"
GEN
export COUNT=$tmp/runs

# without SS_FIXTURE_CACHE: the generator runs every time
unset SS_FIXTURE_CACHE
bash "$cache_sh" "$tmp/a" -- bash "$tmp/gen.sh" "$tmp/a"
bash "$cache_sh" "$tmp/a" -- bash "$tmp/gen.sh" "$tmp/a"
check "no cache: the generator ran twice" test "$(runs)" -eq 2

export SS_FIXTURE_CACHE=$tmp/cache
rm -f "$tmp/runs"
mkdir -p "$tmp/b1" && echo junk >"$tmp/b1/left-over.txt"
bash "$cache_sh" "$tmp/b1" -- bash "$tmp/gen.sh" "$tmp/b1"
check "first run with a cache: the generator ran" test "$(runs)" -eq 1
check "what OUT held before is gone" test ! -e "$tmp/b1/left-over.txt"
bash "$cache_sh" "$tmp/b2" -- bash "$tmp/gen.sh" "$tmp/b2"
check "same command, another folder: copied, not run" test "$(runs)" -eq 1
check "the copy holds the generator's bytes" cmp -s "$tmp/b1/data.txt" "$tmp/b2/data.txt"
check "and only them" test ! -e "$tmp/b2/left-over.txt"
echo stale >"$tmp/b2/data.txt"
bash "$cache_sh" "$tmp/b2" -- bash "$tmp/gen.sh" "$tmp/b2"
check "a stale output is replaced by the kept copy" grep -qx 'same bytes' "$tmp/b2/data.txt"
check "(still not run)" test "$(runs)" -eq 1

if ((have_git)); then
  mkdir -p "$repo/tests/__pycache__" && echo x >"$repo/tests/__pycache__/m.pyc"
  bash "$cache_sh" "$tmp/b3" -- bash "$tmp/gen.sh" "$tmp/b3"
  check "an ignored file under tests/: still copied" test "$(runs)" -eq 1
fi
echo "v2" >"$repo/tests/generator_input.py"
bash "$cache_sh" "$tmp/b4" -- bash "$tmp/gen.sh" "$tmp/b4"
check "a changed source under tests/: the generator ran" test "$(runs)" -eq 2
echo "new" >"$repo/python/new_module.py" # untracked, not ignored
bash "$cache_sh" "$tmp/b5" -- bash "$tmp/gen.sh" "$tmp/b5"
check "a new source under python/: the generator ran" test "$(runs)" -eq 3

bash "$cache_sh" "$tmp/c" -- bash "$tmp/gen.sh" "$tmp/c" "other bytes"
check "another argument: the generator ran" test "$(runs)" -eq 4
check "and wrote its own bytes" grep -qx 'other bytes' "$tmp/c/data.txt"

SS_EXTRA=1 bash "$cache_sh" "$tmp/d" -- bash "$tmp/gen.sh" "$tmp/d"
check "another SS_ variable: the generator ran" test "$(runs)" -eq 5

bash "$cache_sh" "$tmp/e1" -- bash "$tmp/gen.sh" "$tmp/e1" "in $tmp/e1"
bash "$cache_sh" "$tmp/e2" -- bash "$tmp/gen.sh" "$tmp/e2" "in $tmp/e2"
check "an output naming its own path is not kept" test "$(runs)" -eq 7

bash "$cache_sh" "$tmp/f" -- bash -c 'echo run >>"$COUNT"; mkdir -p "$1"; exit 3' _ "$tmp/f"
rc=$?
check "a failing generator's status comes back" test "$rc" -eq 3
bash "$cache_sh" "$tmp/f" -- bash -c 'echo run >>"$COUNT"; mkdir -p "$1"; exit 3' _ "$tmp/f"
check "and nothing was kept for it" test "$(runs)" -eq 9

bash "$cache_sh" "$tmp/g" >/dev/null 2>&1
check "a call with too few arguments is refused" test $? -eq 2
bash "$cache_sh" "$tmp/g" bash "$tmp/gen.sh" "$tmp/g" >/dev/null 2>&1
check "a call without '--' is refused" test $? -eq 2
check "(and ran nothing)" test "$(runs)" -eq 9

bash "$cache_sh" "$tmp" -- true >/dev/null 2>&1
check "OUT holding the sources is refused" test $? -eq 2
check "(and was not removed)" test -e "$cache_sh"
bash "$cache_sh" relative -- true >/dev/null 2>&1
check "a relative OUT is refused" test $? -eq 2

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "every check passed"
