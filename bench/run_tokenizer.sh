#!/bin/bash
# Tokenizer bench: a few MB of this repository's text (code and English) encoded with GPT-2's
# tokenizer.json by shardserve's C tokenizer and by @huggingface/tokenizers (node) in the same
# run; both must give the same ids. The reference packages come from the cache that
# scripts/fetch-tokenizer-reference.sh fills.
#
#   bench/run_tokenizer.sh BUILD_DIR [MB]     (BUILD_DIR holds test_tokenizer_reference)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:?usage: run_tokenizer.sh BUILD_DIR [MB]}" && pwd)
MB=${2:-4}
CHECKER=$(find "$BUILD" -name test_tokenizer_reference -type f -perm -u+x | head -1)
[ -n "$CHECKER" ] || { echo "run_tokenizer: no test_tokenizer_reference in $BUILD" >&2; exit 2; }
"$REPO/scripts/fetch-tokenizer-reference.sh" >/dev/null
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
node "$REPO/tests/tokenizer/reference.js" --cache "${SHARDSERVE_TOKENIZERS_CACHE:-$HOME/.cache/shardserve-tokenizers}" \
  --out "$WORK" --repo "$REPO" --bench-mb "$MB" >/dev/null
echo "commit $(git -C "$REPO" rev-parse --short HEAD), $(date -u +%F)"
"$CHECKER" "$WORK" | sed -n '/^bench:/,/reference.s tokens\/s/p'
