#!/usr/bin/env bash
# tokenizer_reference: writes the reference's cases from the cache (offline: the packages are
# there already, see scripts/fetch-tokenizer-reference.sh), checks that the committed Unicode
# tables are what node's regex engine says, then runs the C checker on every case.
#   tests/tokenizer/run.sh CHECKER OUT_DIR
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CHECKER=$1 OUT=$2
CACHE=${SHARDSERVE_TOKENIZERS_CACHE:-$HOME/.cache/shardserve-tokenizers}
rm -rf "$OUT" && mkdir -p "$OUT"
node "$REPO/src/tokenizer/gen_unicode_tables.js" >"$OUT/unicode_tables.c"
if ! cmp -s "$OUT/unicode_tables.c" "$REPO/src/tokenizer/unicode_tables.c"; then
  echo "src/tokenizer/unicode_tables.c differs from what node $(node --version) says:" \
       "regenerate it with src/tokenizer/gen_unicode_tables.js" >&2
  exit 1
fi
node "$REPO/tests/tokenizer/reference.js" --cache "$CACHE" --out "$OUT" --repo "$REPO" --bench-mb 0.5
"$CHECKER" "$OUT"
