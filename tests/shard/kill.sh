#!/bin/bash
# One rank SIGKILLed mid-run: `shardserve run --shards --timeout-ms 3000` over 4 ranks (a 16-layer
# 1024-wide MatMul chain, tensor-parallel: an AllReduce every two layers). Once every rank has
# joined and mapped its shard's weights, rank 2 gets SIGKILL. Then:
#   - the run fails (non-zero exit) within the bound: the 3 s comm timeout + 3 s slack for a
#     loaded machine, counted from the kill;
#   - the survivors' errors name rank 2 (shm: every survivor; mpi: a survivor or mpirun);
#   - no process of the group and no /dev/shm/shardserve-run-<pid> segment is left.
# With "parent" (shm): the `shardserve run` process itself is SIGKILLed instead; every rank must
# be gone within 3 s (they die with their parent) and nothing left behind.
# usage: kill.sh shm|mpi [parent]
. "$(dirname "$0")/common.sh"
need_data
backend=$1
mode=${2:-rank}
victim=2
[ "$backend" = mpi ] && mpi_setup
"$SS" shard "$DATA/chain/chain.onnx" --ranks 4 --strategy auto --out "$WORK/shards" >"$WORK/shard.log" 2>&1 ||
  { cat "$WORK/shard.log"; fail "shard the chain model"; finish "$backend"; }
mkdir -p "$WORK/out"
start_group "$WORK/run.log" $MPI_WRAP "$SS" run --shards "$WORK/shards" --comm "$backend" --timeout-ms 3000 \
  --input "x=$DATA/chain/chain_x.npy" --output-dir "$WORK/out"
run=$GROUP_PID
echo "started shardserve run --comm $backend: pid $run"

# The ranks are the processes started from $WORK that run a rank (forked `shardserve run` children
# for shm, `shardserve run-rank` under mpirun for mpi). A rank is in the run once it maps its
# shard's weights (device<r>/chain.data), which happens after it joined the communicator. Each rank
# is SIGSTOPped as soon as it is seen there, so the group cannot finish before all four are seen
# (every rank needs every other in each AllReduce); then rank 2 is SIGKILLed and the others are
# continued: they are inside the run, on their way to an AllReduce with a dead rank.
declare -a pids
found=0
deadline=$(($(date +%s) + 60))
while [ "$found" -lt 4 ]; do
  # shellcheck disable=SC2046
  for hit in $(grep -o -m1 "/device[0-3]/chain.data" $(work_pids | sed 's|.*|/proc/&/maps|') 2>/dev/null); do
    p=${hit#/proc/}
    p=${p%%/*}
    r=${hit##*/device}
    r=${r%%/*}
    [ -n "${pids[$r]:-}" ] && continue
    kill -STOP "$p" && pids[$r]=$p && found=$((found + 1))
  done
  if [ "$found" -lt 4 ] && { ! kill -0 "$run" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; }; then
    for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; done
    wait_group "$run" 30
    cat "$WORK/run.log"
    fail "saw only $found of 4 ranks running (ranks seen: ${!pids[*]})"
    finish "$backend"
  fi
  [ "$found" -lt 4 ] && sleep 0.01
done
echo "ranks 0..3 running (pids ${pids[*]}), stopped"
# a dead rank whose parent already exited may linger as a zombie until init reaps it: not alive
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${s#Z}" = "$s" ]; }
if [ "$mode" = parent ]; then
  kill -KILL "$run"
  echo "SIGKILL sent to shardserve run (pid $run) itself"
  wait "$run" 2>/dev/null
  t=0
  while [ $t -lt 30 ]; do
    n=0
    for r in 0 1 2 3; do alive "${pids[$r]}" && n=$((n + 1)); done
    [ "$n" -eq 0 ] && break
    sleep 0.1
    t=$((t + 1))
  done
  for r in 0 1 2 3; do
    alive "${pids[$r]}" && { fail "rank $r (pid ${pids[$r]}) outlived its parent by 3 s"; ps -o pid,ppid,stat,args -p "${pids[$r]}"; }
  done
  [ "$FAILS" -eq 0 ] && ok "every rank died with shardserve run (within $((t * 100)) ms)"
  check_clean "$run"
  finish "$backend parent"
fi
kill -KILL "${pids[$victim]}"
t0=$(date +%s%N)
for r in 0 1 3; do kill -CONT "${pids[$r]}"; done
echo "SIGKILL sent to rank $victim (pid ${pids[$victim]}), the others continued"
wait_group "$run" 30
ms=$((($(date +%s%N) - t0) / 1000000))
cat "$WORK/run.log"
echo "---- shardserve run exit $GROUP_RC, ${ms} ms after the kill"
[ "$GROUP_RC" -eq 0 ] && fail "the run succeeded although rank $victim was killed (finished before the kill?)"
[ "$GROUP_RC" -eq 124 ] && fail "the run hung: still running 30 s after the kill"
[ "$ms" -le 6000 ] || fail "the run took ${ms} ms after the kill to fail; the bound is 3000 ms + 3000 ms slack"
if [ "$backend" = shm ]; then
  for r in 0 1 3; do
    line=$(grep -E "ERROR \[rank $r " "$WORK/run.log" | head -1)
    if [ -z "$line" ]; then fail "rank $r reported no error"
    elif echo "$line" | grep -q "rank $victim"; then ok "rank $r: $line"
    else fail "rank $r's error does not name rank $victim: $line"
    fi
  done
  grep -q "shardserve run: rank [0-9]* failed" "$WORK/run.log" || fail "shardserve run did not say which rank failed"
  # a rank killed by a signal prints nothing itself: `run` must say how it ended
  grep -q "rank $victim (pid ${pids[$victim]}) was killed by signal 9 (Killed)" "$WORK/run.log" ||
    fail "shardserve run did not log that rank $victim was killed by signal 9"
else
  # mpirun ends the job when a rank dies; survivors that got there first name the dead rank
  named=$(grep -E "(ERROR \[rank [013] |run-rank: rank [013]: ).*rank $victim|process rank $victim " "$WORK/run.log" | head -4)
  if [ -n "$named" ]; then ok "the dead rank is named: $named"; else fail "no error names rank $victim"; fi
fi
check_clean "$run"
if [ "$backend" = mpi ]; then # Open MPI's session files and vader segments live in $WORK/ompi
  left=$(find "$WORK/ompi" -mindepth 1 2>/dev/null | head -5)
  [ -z "$left" ] || fail "Open MPI files left behind: $left"
fi
for r in 0 1 2 3; do
  alive "${pids[$r]}" && { fail "rank $r (pid ${pids[$r]}) still alive"; ps -o pid,ppid,stat,args -p "${pids[$r]}"; }
done
[ "$FAILS" -eq 0 ] && ok "no process and no /dev/shm/shardserve-run-$run* left behind"
finish "$backend"
