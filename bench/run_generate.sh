#!/bin/bash
# Generative decode bench (issue 15, "Done when" bench): GPT-2-124M-shaped model with random
# weights (tests/generative/models.py --size small), 64 greedy tokens through shardserve's
# runtime (gen_greedy whole, and 2 shm ranks from `shardserve shard`) and through
# onnxruntime-node with its own KV-cache loop (bench/gen_ort.js), and the same model rewritten
# by `shardserve shard --kv-pool` (the cache in each rank's KV block pool), every run checked token for
# token against PyTorch; read bandwidth measured in the same run gives the floor
# (weight + KV bytes read per token / bandwidth).
#
#   bench/run_generate.sh BUILD_DIR [REPS]     (BUILD_DIR holds gen_greedy and shardserve)
#
# Environment: SS_GEN_WORK (scratch folder, default /tmp/ss-genbench; ~1.6 GB),
# SS_ORT_NODE_MODULES (a node_modules with onnxruntime-node).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:?usage: run_generate.sh BUILD_DIR [REPS]}" && pwd)
REPS=${2:-3}
WORK=${SS_GEN_WORK:-/tmp/ss-genbench}
mkdir -p "$WORK"

GEN=$(find "$BUILD" -name gen_greedy -type f -perm -u+x | head -1)
SS=$(find "$BUILD" -name shardserve -type f -perm -u+x | head -1)
[ -n "$GEN" ] && [ -n "$SS" ] || { echo "run_generate: no gen_greedy/shardserve in $BUILD" >&2; exit 2; }
NM=${SS_ORT_NODE_MODULES:-}
for d in "$REPO/bench/ort/node_modules" "$HOME/.cache/shardserve-real-models/node/node_modules"; do
  [ -z "$NM" ] && [ -d "$d/onnxruntime-node" ] && NM=$d
done
[ -n "$NM" ] || { echo "run_generate: no onnxruntime-node (set SS_ORT_NODE_MODULES)" >&2; exit 2; }
export NODE_PATH=$NM
# a served rank's wait policy when its threads fit the cores (src/agent/spawn.h)
[ -n "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ] || export GOMP_SPINCOUNT=30000

M=$WORK/gpt2-small
[ -f "$M/model.onnx" ] || /usr/bin/python3 "$REPO/tests/generative/models.py" --family gpt2 \
  --size small --out "$M" >"$WORK/export.log"
# shards are made again when the shard tool is newer than them
[ "$M-tp2/device1/model.onnx" -nt "$SS" ] || "$SS" shard "$M/model.onnx" --ranks 2 --stages 1 --out "$M-tp2" \
  >"$WORK/shard.log" 2>&1
for r in 1 2; do
  [ "$M-kv$r/device$((r - 1))/model.onnx" -nt "$SS" ] || "$SS" shard "$M/model.onnx" --ranks $r --kv-pool \
    --out "$M-kv$r" >>"$WORK/shard.log" 2>&1
done
gcc -O3 -march=native -ffast-math -fopenmp "$REPO/bench/bench_membw.c" -o "$WORK/bench_membw"
ARGS=("$M/prompt.npy" "$M/ref_tokens.npy")

# One run of one configuration: its first output line (ranks print the same numbers) gives the
# prefill and decode times, appended to PRES[key] / DECS[key]; a run whose tokens differ from
# PyTorch's fails the bench (set -e).
declare -A PRES DECS CPUS PRE DEC CPU
median() { # of the numbers given; of an even count, the mean of the middle two
  tr ' ' '\n' | { grep . || true; } | sort -g |
    awk '{a[NR]=$1} END {if (NR % 2 || NR == 0) print a[int((NR+1)/2)]; else print (a[NR/2]+a[NR/2+1])/2}'
}
field() { sed -n "s/.*$1 \([0-9.]*\).*/\1/p" | head -1; }
once() { # key cmd...
  local key=$1 out
  shift
  out=$("$@")
  out=${out%%$'\n'*}
  echo "  $key: $out" >&2
  PRES[$key]+=" $(field 'tokens' <<<"$out")"
  DECS[$key]+=" $(field 'decode' <<<"$out")"
  CPUS[$key]+=" $(field 'cpu' <<<"$out")" # gen_greedy only: CPU ms per decode step
}

echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs: $(lscpu | sed -n 's/^Model name: *//p')"
echo "   ISA: $(for f in avx2 avx512f avx512_bf16 amx_bf16 amx_tile; do
  grep -qw "$f" /proc/cpuinfo && printf '%s ' "$f" || printf '%s(no) ' "$f"; done)"
# GPT-2-124M: per token every layer's weights (12 x 12 d^2 floats) and the LM head (vocab x d)
# are read once; the embeddings only one row each. KV: 2 x layers x d floats per past token,
# at the mean past length over the 63 decode steps.
D=768 L=12 V=50257
PROMPT=$(/usr/bin/python3 -c "import numpy; print(len(numpy.load('$M/prompt.npy')))")
WBYTES=$((L * 12 * D * D * 4 + V * D * 4))
KVBYTES=$((2 * L * D * 4 * (PROMPT + 32)))
echo "   bytes read per decode step: $((WBYTES / 1000000)) MB weights + $((KVBYTES / 1000000)) MB KV (f32)"
declare -A BW
for t in 1 2; do # the better of 4 KiB and 2 MiB pages (weights are mapped huge: src/onnx/load.c)
  BW[$t]=$(for p in small huge; do "$WORK/bench_membw" 1024 "$t" "$p" | field read_gbps; done |
    sort -g | tail -1)
  echo "   read bandwidth, $t thread(s): ${BW[$t]} GB/s -> floor $(awk -v b=$((WBYTES + KVBYTES)) \
    -v g="${BW[$t]}" 'BEGIN{printf "%.1f", b/g/1e6}') ms/token"
done

# Rounds interleave the configurations (A B C D E A B C D E ...) so that load from other users
# of the shared cores spreads over all of them instead of landing on one.
for r in $(seq "$REPS"); do
  echo "-- round $r" >&2
  for t in 1 2; do
    once ss$t env OPENBLAS_NUM_THREADS=$t "$GEN" "$M/model.onnx" "${ARGS[@]}"
    once kv$t env OPENBLAS_NUM_THREADS=$t "$GEN" "$M-kv1/device0/model.onnx" "${ARGS[@]}"
    once ort$t node "$REPO/bench/gen_ort.js" "$M/model.onnx" "${ARGS[@]}" --threads "$t"
  done
  once tp2 env OPENBLAS_NUM_THREADS=1 "$GEN" --shards "$M-tp2" "${ARGS[@]}"
  once kvtp2 env OPENBLAS_NUM_THREADS=1 "$GEN" --shards "$M-kv2" "${ARGS[@]}"
done
for k in "${!DECS[@]}"; do
  PRE[$k]=$(median <<<"${PRES[$k]}")
  DEC[$k]=$(median <<<"${DECS[$k]}")
  CPU[$k]=$(median <<<"${CPUS[$k]}")
done

row() { # name key ortkey|none bw_threads
  local o=""
  [ "$3" = none ] || o=${DEC[$3]}
  awk -v n="$1" -v p="${PRE[$2]}" -v d="${DEC[$2]}" -v o="$o" -v g="${BW[$4]}" \
    -v c="${CPU[$2]}" -v b=$((WBYTES + KVBYTES)) 'BEGIN {
      printf "| %-28s | %10.1f | %13.2f | %8.1f | %14s | %7.0f%% | %10s |\n", n, p, d, 1000/d,
        (o == "" ? "-" : sprintf("%.2fx", o/d)), 100*(b/g/1e6)/d,
        (c == "" ? "-" : sprintf("%.2f", c)) }'
}
echo
echo "64 greedy tokens, prompt $PROMPT, f32, all runs equal PyTorch token for token;"
echo "decode = mean of the 63 steps of a run (what gen_greedy prints), median over $REPS interleaved rounds;"
echo "floor = bytes read per step / read bandwidth (bench_membw, the better of 4 KiB and 2 MiB pages) at the row's thread count (2 for the 2-rank row);"
echo "cpu = CPU ms per decode step of the process (one rank's), steadier than the wall clock on shared cores"
echo "| runtime                      | prefill ms | decode ms/tok | tokens/s | vs onnxruntime | of floor | cpu ms/tok |"
echo "|------------------------------|-----------:|--------------:|---------:|---------------:|---------:|-----------:|"
row "shardserve, 1 thread" ss1 ort1 1
row "kv-pool, 1 thread" kv1 ort1 1
row "onnxruntime-node, 1 thread" ort1 none 1
row "shardserve, 2 threads" ss2 ort2 2
row "kv-pool, 2 threads" kv2 ort2 2
row "onnxruntime-node, 2 threads" ort2 none 2
row "shardserve, 2 shm ranks x 1" tp2 ort2 2
row "kv-pool, 2 shm ranks x 1" kvtp2 ort2 2
