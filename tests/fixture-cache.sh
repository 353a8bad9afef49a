#!/usr/bin/env bash
# Runs a fixture generator (a CTest FIXTURES_SETUP test that writes models and reference data with
# Python, PyTorch or onnxruntime-node and nothing of the build), or reuses what it wrote before:
#   fixture-cache.sh OUT -- COMMAND...
# OUT is the file or folder COMMAND writes. Without SS_FIXTURE_CACHE in the environment this only
# runs COMMAND. With it (a folder), the output is kept there under a key, and a later run with the
# same key copies it into OUT instead of running COMMAND. scripts/test.sh sets it for one CI run,
# so the sanitizer stage takes the normal stage's fixtures (the same files: no build binary
# writes them) instead of spending about a minute of CPU writing them again.
# The key is a checksum over: COMMAND with OUT written as @OUT@; the files under tests/, examples/
# and python/ that git tracks or would track (the generators and whatever they import or read), by
# path and content, leaving out ignored ones that tests rewrite during a run (__pycache__/,
# examples/matmul_distributed/model/ and export/, written by serving_seed_example); the Python
# interpreter's version and its installed distributions (numpy, onnx, torch: names and versions);
# the package.json files of a node_modules folder COMMAND names (onnxruntime-node); and the SS_*
# environment but SS_FIXTURE_CACHE. With a cache, OUT is removed before the generator runs, so only
# what it writes is kept; an output that names its own path in a file is not kept (a copy
# elsewhere would point back at the first build's).
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
# OUT is removed below: only an absolute path that holds neither the sources nor the caller's
# folder (an empty CMake variable could otherwise make it the build folder or /)
case $out in
  /*/*) ;;
  *)
    echo "fixture-cache: OUT must be an absolute path below a folder: '$out'" >&2
    exit 2
    ;;
esac
out=${out%/}
for keep in "$repo" "$PWD" "${HOME:-/}"; do
  if [[ $keep/ == "$out"/* ]]; then
    echo "fixture-cache: refusing OUT $out: it holds $keep" >&2
    exit 2
  fi
done

# the sources: what git tracks or would track (not what .gitignore leaves out), else every file
sources() {
  cd "$repo" || return
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard -- tests examples python
  else
    find tests examples python -type f -print0 2>/dev/null
  fi | sort -zu | xargs -0 -r sha256sum 2>&1
}
key=$(
  {
    printf '%s\n' "${@//"$out"/@OUT@}"
    sources
    /usr/bin/python3 --version 2>&1
    /usr/bin/python3 -S -c 'import site, sys, glob, os
for d in sorted(set(site.getsitepackages() + [site.getusersitepackages()])):
    print("\n".join(sorted(os.path.basename(p) for p in glob.glob(d + "/*.dist-info") + glob.glob(d + "/*.egg-info"))))' 2>&1
    for arg in "$@"; do
      read -ra words <<<"$arg" # sh -c "... node ort_oracle.js NODE_MODULES OUT" is one argument
      for word in "${words[@]}"; do
        if [[ $word == */node_modules && -d $word ]]; then
          find "$word" -maxdepth 3 -name package.json -print0 | sort -z | xargs -0 -r sha256sum
        fi
      done
    done
    env | grep '^SS_' | grep -v '^SS_FIXTURE_CACHE=' | sort
  } | sha256sum | cut -c1-32
)
kept=$cache/$key
if [[ -e $kept/done ]]; then
  rm -rf "$out"
  mkdir -p "$(dirname "$out")"
  if cp -a "$kept/out" "$out"; then
    echo "fixture-cache: $out copied from $kept (an earlier run of this command and sources)"
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
