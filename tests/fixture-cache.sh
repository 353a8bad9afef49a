#!/usr/bin/env bash
# Runs a fixture generator (a CTest FIXTURES_SETUP test that writes models and reference data with
# Python, PyTorch or onnxruntime-node and nothing of the build), or reuses what it wrote before:
#   fixture-cache.sh OUT -- COMMAND...
# OUT is the file or folder COMMAND writes. Without SS_FIXTURE_CACHE in the environment this only
# runs COMMAND. With it (a folder), the output is kept there under a key, and a later run with the
# same key copies it into OUT instead of running COMMAND. scripts/test.sh sets it for one CI run,
# so the sanitizer stage takes the normal stage's fixtures (the same files: no build binary
# writes them) instead of spending ~2 minutes of CPU writing them again.
# The key is a checksum over: COMMAND with OUT written as @OUT@; every file under tests/, examples/
# and python/ (the generators and whatever they import or read), by path and content; the Python
# interpreter's version; and the SS_* environment but SS_FIXTURE_CACHE. With a cache, OUT is
# removed before the generator runs, so only what it writes is kept; an output that names its own
# path in a file is not kept (a copy elsewhere would point back at the first build's).
set -uo pipefail
usage() {
  echo "usage: fixture-cache.sh OUT -- COMMAND..." >&2
  exit 2
}
(($# >= 3)) && [[ $2 == -- ]] || usage
out=$1
shift 2
cache=${SS_FIXTURE_CACHE:-}
[[ -n $cache ]] || exec "$@"
repo=$(cd "$(dirname "$0")/.." && pwd)

key=$(
  {
    printf '%s\n' "${@//"$out"/@OUT@}"
    (cd "$repo" && find tests examples python -type f -print0 2>/dev/null | sort -z |
      xargs -0 sha256sum)
    /usr/bin/python3 --version 2>&1
    env | grep '^SS_' | grep -v '^SS_FIXTURE_CACHE=' | sort
  } | sha256sum | cut -c1-32
)
kept=$cache/$key
if [[ -e $kept/done ]]; then
  rm -rf "$out"
  mkdir -p "$(dirname "$out")"
  if cp -a "$kept/out" "$out"; then
    echo "fixture-cache: $out copied from $kept (written earlier by: $*)"
    exit 0
  fi
  echo "fixture-cache: could not copy $kept/out to $out; running the generator" >&2
fi
rm -rf "$out" # what is kept is what the generator wrote, not what later tests added
"$@"
rc=$?
((rc == 0)) || exit $rc
[[ -e $out ]] || {
  echo "fixture-cache: the generator wrote no $out (not kept)"
  exit 0
}
if grep -rqsF -- "$out" "$out"; then
  echo "fixture-cache: $out names its own path in a file; not kept"
  exit 0
fi
mkdir -p "$cache" || exit 0
tmp=$(mktemp -d "$cache/.tmp.XXXXXX") || exit 0
if cp -a "$out" "$tmp/out" && touch "$tmp/done" && mv -T "$tmp" "$kept" 2>/dev/null; then
  echo "fixture-cache: $out kept in $kept"
else
  rm -rf "$tmp" # another run kept the same key first, or the copy failed: nothing lost
fi
exit 0
