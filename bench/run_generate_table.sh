#!/bin/bash
# Generation bench, one table (issue 15, "Done when" bench): GPT-2-124M-shaped (random weights;
# f32 on 1 and 2 ranks, bf16 and int8 weights) and the ~1B Llama shape of bench/gen_llama1b.py (bf16 on 1 and 2
# ranks, int8 on 1),
# each rewritten by `shard --kv-pool [--weights bf16|int8]`, in one run:
#  - single stream through the runtime (tests/generative/gen_greedy --approx --shards): decode
#    ms/token (median of ROUNDS runs) with each rank on the threads a served rank gets (the
#    launcher's share: CPUs / ranks, SHARDSERVE_RANK_THREADS), and on 1 thread, against the floor = bytes read per decode step (every
#    MatMul/Gemm weight once in its stored dtype, embeddings one row, plus the KV cache at the mean
#    past length) / the read bandwidth bench_membw measures now; first call (prefill of the prompt)
#    as time to first token and the decode steps' p50/p99 as inter-token latency, runtime level;
#  - onnxruntime-node (bench/gen_ort.js, its own KV-cache loop, float32, 2 threads) on the same
#    exported model.onnx (f32: ORT has no bf16 MatMul on CPU), one run in each round of each row,
#    beside ours, so each ratio compares the same minutes of the machine;
#  - served (bench/run_generate_serve.sh on the same shards): aggregate tokens/s at 1, 8 and 32
#    concurrent requests of 64 new tokens.
#
#   bench/run_generate_table.sh BUILD_DIR [ROUNDS]
#
# Environment: SS_GEN_WORK (scratch, default /tmp/ss-genbench), SS_GEN_CACHE (the 1B model and its
# shards, ~10 GB, made once; default ~/.cache/shardserve-genbench), SS_GEN_SKIP_1B=1 (GPT-2 only),
# SS_ORT_NODE_MODULES (a node_modules with onnxruntime-node).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:?usage: run_generate_table.sh BUILD_DIR [ROUNDS]}" && pwd)
ROUNDS=${2:-3}
WORK=${SS_GEN_WORK:-/tmp/ss-genbench}
CACHE=${SS_GEN_CACHE:-$HOME/.cache/shardserve-genbench}
mkdir -p "$WORK" "$CACHE"
GEN=$(find "$BUILD" -name gen_greedy -type f -perm -u+x | head -1)
SS=$(find "$BUILD" -name shardserve -type f -perm -u+x | head -1)
[ -n "$GEN" ] && [ -n "$SS" ] || { echo "run_generate_table: no gen_greedy/shardserve in $BUILD" >&2; exit 2; }
NM=${SS_ORT_NODE_MODULES:-$HOME/.cache/shardserve-real-models/node/node_modules}
[ -d "$NM/onnxruntime-node" ] || { echo "run_generate_table: no onnxruntime-node in $NM" >&2; exit 2; }
export NODE_PATH=$NM
# a served rank's wait policy when its threads fit the cores (src/agent/spawn.h)
[ -n "${OMP_WAIT_POLICY:-}${GOMP_SPINCOUNT:-}" ] || export GOMP_SPINCOUNT=30000

G=$WORK/gpt2-small L=$CACHE/llama-1b
[ -f "$G/model.onnx" ] || /usr/bin/python3 "$REPO/tests/generative/models.py" --family gpt2 \
  --size small --out "$G" >"$WORK/export.log"
# name dtype ranks folder weights: "mapped" (the shard files' page cache, the default) or
# "resident" (SHARDSERVE_WEIGHTS=resident: anonymous memory on 2 MiB pages, src/onnx/load.c)
CONFIGS=("GPT-2-124M f32 1 $G mapped" "GPT-2-124M f32 1 $G resident" "GPT-2-124M f32 2 $G mapped"
  "GPT-2-124M bf16 1 $G mapped" "GPT-2-124M int8 1 $G mapped")
if [ "${SS_GEN_SKIP_1B:-0}" != 1 ]; then
  [ -f "$L/model.onnx" ] || /usr/bin/python3 "$REPO/bench/gen_llama1b.py" "$L" >"$CACHE/export.log"
  CONFIGS+=("Llama-0.85B bf16 1 $L mapped" "Llama-0.85B bf16 2 $L mapped"
    "Llama-0.85B int8 1 $L mapped")
fi
shards() { # model_dir dtype ranks -> the --kv-pool shard folder
  local d=$1-kv$3-$2
  # made again when the shard tool is newer than them (its output, or how it writes it, changed)
  [ "$d/device$(($3 - 1))/model.onnx" -nt "$SS" ] || "$SS" shard "$1/model.onnx" --ranks "$3" --kv-pool \
    --weights "$2" --out "$d" >"$d.log" 2>&1
  echo "$d"
}
# Bytes one decode step reads: MatMul/Gemm weights (also through a Transpose, the tied LM head)
# in the stored dtype, other initializers whole (norms, biases) unless only gathered; KV cache
# 2 x layers x kv_heads x head_dim floats per past token at the mean past length of the decode.
step_bytes() { # model_dir dtype
  /usr/bin/python3 - "$1" "$2" <<'PY'
import sys, numpy as np, onnx
m = onnx.load(sys.argv[1] + "/model.onnx", load_external_data=False)
g, wbytes = m.graph, {"bf16": 2, "int8": 1}.get(sys.argv[2], 4)  # int8: + 8 bytes a column
init = {t.name: int(np.prod(t.dims)) for t in g.initializer}
src = {o: n.input[0] for n in g.node if n.op_type == "Transpose" for o in n.output}
weights, other = set(), set()
for n in g.node:
    for i, x in enumerate(n.input):
        x = src.get(x, x)
        if x not in init: continue
        (weights if n.op_type in ("MatMul", "Gemm") and i == 1 else
         set() if n.op_type == "Gather" and i == 0 else other).add(x)
meta = dict(l.split() for l in open(sys.argv[1] + "/meta.txt") if len(l.split()) == 2)
past = len(np.load(sys.argv[1] + "/prompt.npy")) + 32
kv = 2 * int(meta["layers"]) * int(meta["kv_heads"]) * int(meta["head_dim"]) * 4 * past
cols = sum(next(t.dims[-1] for t in g.initializer if t.name == w) for w in weights)
print(sum(init[w] for w in weights) * wbytes + (8 * cols if wbytes == 1 else 0) +
      sum(init[w] for w in other - weights) * 4 + kv)
PY
}
median() { # of the numbers given; of an even count, the mean of the middle two
  tr ' ' '\n' | { grep . || true; } | sort -g |
    awk '{a[NR]=$1} END {if (NR % 2 || NR == 0) print a[int((NR+1)/2)]; else print (a[NR/2]+a[NR/2+1])/2}'
}
field() { sed -n "s/.*$1 \([0-9.]*\).*/\1/p" | head -1; }

echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs: $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "   ISA: $(for f in avx2 avx512f avx512_bf16 amx_bf16 amx_tile; do
  grep -qw "$f" /proc/cpuinfo && printf '%s ' "$f" || printf '%s(no) ' "$f"; done)"
gcc -O3 -march=native -ffast-math -fopenmp "$REPO/bench/bench_membw.c" -o "$WORK/bench_membw"
# the bandwidth of the moment: measured again before each configuration (shared cores and memory)
bandwidth() { # the best of 1 and 2 threads, 4 KiB and 2 MiB pages: the tightest floor
  for t in 1 2; do for p in small huge; do "$WORK/bench_membw" 1024 "$t" "$p" | field read_gbps
  done; done | sort -g | tail -1
}

declare -A DEC PRE ITL ORT SRV CLI BYTES CPU BW DEC1 THR
for c in "${CONFIGS[@]}"; do
  read -r name dtype ranks dir wmode <<<"$c"
  sh=$(shards "$dir" "$dtype" "$ranks")
  key="$name $dtype $ranks $wmode"
  export SHARDSERVE_WEIGHTS=$wmode # agents and gen_greedy: "resident" or the mapped default
  BW[$key]=$(bandwidth)
  echo "  $key: read bandwidth now ${BW[$key]} GB/s (bench_membw, best of 1 and 2 threads, 4 KiB and 2 MiB pages)" >&2
  # a served rank's threads: the launcher's share of the CPUs (src/agent/launcher.c)
  THR[$key]=$(($(nproc) > ranks ? $(nproc) / ranks : 1))
  decs="" pres="" cpus="" decs1="" orts=""
  for _ in $(seq "$ROUNDS"); do # single stream, runtime level; served threads and 1, interleaved
    out=$(SHARDSERVE_RANK_THREADS=${THR[$key]} "$GEN" --approx --shards "$sh" "$dir/prompt.npy" \
      "$dir/ref_tokens.npy" 2>/dev/null)
    echo "  $key, ${THR[$key]} thread(s): ${out%%$'\n'*}" >&2
    decs+=" $(field decode <<<"$out")" pres+=" $(field tokens <<<"$out")"
    cpus+=" $(field cpu <<<"$out")"
    ITL[$key]="$(field p50 <<<"$out") / $(field p99 <<<"$out")"
    out=$(SHARDSERVE_RANK_THREADS=1 "$GEN" --approx --shards "$sh" "$dir/prompt.npy" \
      "$dir/ref_tokens.npy" 2>/dev/null)
    echo "  $key, 1 thread: ${out%%$'\n'*}" >&2
    decs1+=" $(field decode <<<"$out")"
    # onnxruntime-node (f32, its own KV-cache loop) on the exported model in the same round, so
    # each row's ratio compares the same minutes of this shared machine's memory bandwidth
    o=$(node "$REPO/bench/gen_ort.js" "$dir/model.onnx" "$dir/prompt.npy" "$dir/ref_tokens.npy" \
      --threads 2 2>/dev/null | field decode || true)
    echo "  $key, onnxruntime-node: ${o:+$o ms/token}${o:-failed}" >&2
    orts+=" $o"
  done
  DEC[$key]=$(median <<<"$decs") PRE[$key]=$(median <<<"$pres") CPU[$key]=$(median <<<"$cpus")
  DEC1[$key]=$(median <<<"$decs1") ORT[$key]=$(median <<<"$orts")
  served=$(SS_GEN_MODEL=$dir SS_GEN_WEIGHTS=$dtype SS_GEN_SHARDS=$sh \
    "$REPO/bench/run_generate_serve.sh" "$BUILD" "$(((ROUNDS + 1) / 2))" "$ranks")
  # bench/gen_serve.py (the Python client, median of its rounds): "| conc | tok/s | ..." rows
  SRV[$key]=$(awk -F'|' '/^\| (1|8|32) \|/ {gsub(/ /, "", $3); printf "%s ", $3}' <<<"$served")
  # `shardserve bench --generate` (the C client, streamed): "conc requests failed tokens tok/s
  # TTFT-p50 TTFT-p99 ITL-p50 ITL-p99" rows
  CLI[$key]=$(awk '$1 ~ /^(1|8|32)$/ && NF == 9 {printf "%s %s/%s %s/%s;", $5, $6, $7, $8, $9}' \
    <<<"$served")
  echo "  served $key: tokens/s at 1/8/32 = ${SRV[$key]}(Python client); ${CLI[$key]} (C client)" >&2
  BYTES[$key]=$(step_bytes "$dir" "$dtype")
done

echo
echo "Single stream: decode ms/token = mean of the 63 decode steps of a run, median of $ROUNDS runs"
echo "(runtime level, gen_greedy), each rank on the threads a served rank gets (column thr: CPUs /"
echo "ranks; 1-thr ms/token: the same on 1 thread, interleaved); floor = bytes read per step / read bandwidth measured (bench_membw,
best of 1 and 2 threads, 4 KiB and 2 MiB pages) just before the row's runs, column GB/s; TTFT = the first call"
echo "(prefill of the prompt), ITL = decode steps p50 / p99 of one run, both runtime level; served"
echo "tokens/s = aggregate at 1/8/32 concurrent requests of 64 tokens (median of $(((ROUNDS + 1) / 2)) rounds);"
echo "onnxruntime-node = float32, 2 threads, its own KV-cache loop on the same model.onnx, one run in each of"
echo "the row's rounds (median), so a ratio compares the same minutes of the machine; cpu ="
echo "CPU ms per decode step of the process (one rank's), steadier than the wall clock on shared cores."
echo "| model | dtype | weights | ranks | thr | ms/token | cpu ms/token | GB/s | floor ms | of floor | 1-thr ms/token | TTFT ms | ITL p50 / p99 ms | tok/s 1 | tok/s 8 | tok/s 32 | 32 vs 1 | onnxruntime ms/token | vs onnxruntime |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
CROWS="" # the C client's table, printed after this one
for c in "${CONFIGS[@]}"; do
  read -r name dtype ranks _ wmode <<<"$c"
  key="$name $dtype $ranks $wmode"
  IFS=';' read -r l1 l8 l32 _ <<<"${CLI[$key]}"
  read -r t1 ttft1 itl1 <<<"$l1"
  read -r t8 _ _ <<<"$l8"
  read -r t32 ttft32 itl32 <<<"$l32"
  CROWS+=$(awk -v n="$name" -v t="$dtype" -v w="$wmode" -v r="$ranks" -v a="${t1:-0}" -v b="${t8:-0}" \
    -v c="${t32:-0}" -v f1="${ttft1:--}" -v f32="${ttft32:--}" -v i1="${itl1:--}" \
    -v i32="${itl32:--}" 'BEGIN {
      printf "| %s | %s | %s | %s | %.1f | %.1f | %.1f | %s | %s | %s | %s | %s |\n", n, t, w, r, a, b, c,
        (a > 0 ? sprintf("%.2fx", c / a) : "-"), f1, f32, i1, i32 }')$'\n'
  read -r s1 s8 s32 <<<"${SRV[$key]}"
  awk -v n="$name" -v t="$dtype" -v w="$wmode" -v r="$ranks" -v d="${DEC[$key]}" -v c="${CPU[$key]}" \
    -v p="${PRE[$key]}" -v th="${THR[$key]}" -v d1="${DEC1[$key]}" \
    -v i="${ITL[$key]}" -v b="${BYTES[$key]}" -v g="${BW[$key]}" -v o="${ORT[$key]}" -v s1="${s1:-0}" \
    -v s8="${s8:-0}" -v s32="${s32:-0}" 'BEGIN {
      f = b / g / 1e6
      printf "| %s | %s | %s | %s | %s | %.2f | %.2f | %.1f | %.2f | %.0f%% | %.2f | %.1f | %s | %.1f | %.1f | %.1f | %s | %s | %s |\n", \
        n, t, w, r, th, d, c, g, f, 100 * f / d, d1, p, i, s1, s8, s32, (s1 > 0 ? sprintf("%.2fx", s32 / s1) : "-"),
        (o == "" ? "-" : sprintf("%.2f", o)), (o == "" ? "-" : sprintf("%.2fx", o / d)) }'
done

echo
echo "Served through the C client (\`shardserve bench --generate\`, gRPC streaming, greedy, 64 new"
echo "tokens a request, each level for ${SS_GEN_STREAM_S:-30} s): aggregate tokens/s, and time to first token and"
echo "inter-token latency p50/p99 as the client sees them. The Python client above shares the 2"
echo "cores with the server (grpcio threads per stream); this one costs the server less of them."
echo "| model | dtype | weights | ranks | tok/s 1 | tok/s 8 | tok/s 32 | 32 vs 1 | TTFT p50/p99 ms at 1 | TTFT p50/p99 ms at 32 | ITL p50/p99 ms at 1 | ITL p50/p99 ms at 32 |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
printf "%s" "$CROWS"
