# Sourced by the sharding tests (tests/shard/*.sh); not run on its own.
#
# Gives every test: $SS (the shardserve binary, from $SS_SHARDSERVE), $PY, $TOOL (npytool.py),
# $DATA (the fixture folder made by fixtures.sh), a private work folder $WORK, and
#   start_group LOG CMD...    runs CMD in its own session/process group (setsid), output to LOG;
#                             sets $GROUP_PID. Every group started this way is remembered.
#   wait_group PID SECONDS    waits (bounded) for it; sets $GROUP_RC (124 when it had to be killed)
#   run_group SECONDS LOG CMD...   both at once
#   check_clean PID           fails unless no process of that group, no process whose command
#                             line names $WORK (mpirun puts its ranks in process groups of their
#                             own; every rank's arguments name the shards folder in $WORK) and no
#                             shm segment of the `shardserve run` with that pid is left (shm
#                             sessions are run-<pid>)
#   fail MSG / ok MSG         record a failure / print a pass line
# On exit, whatever happened: every remembered process group still alive and every process whose
# command line names $WORK (a fresh mktemp folder: only processes this test started) is SIGKILLed,
# the /dev/shm/shardserve-run-<pid> segments are removed, and $WORK
# is deleted (kept when SS_KEEP_WORK=1, for debugging). `finish` ends the test with the verdict.
# shellcheck disable=SC2034 # variables used by the scripts that source this file
set -u
SS=${SS_SHARDSERVE:?set SS_SHARDSERVE to the shardserve binary}
PY=/usr/bin/python3
HERE=$(cd "$(dirname "$0")" && pwd)
TOOL=$HERE/npytool.py
DATA=${SS_SHARD_DATA:-}
WORK=$(mktemp -d /tmp/ss-shard-test.XXXXXX) || exit 1
# temporary folders of what the test starts (`shardserve run`'s outputs) go to $WORK too, so a
# run the test kills leaves nothing behind in /tmp
export TMPDIR=$WORK
FAILS=0
GROUPS_STARTED=""
CLEANUP_HOOKS=""
MPI_WRAP=""

fail() { echo "FAIL $*"; FAILS=$((FAILS + 1)); }
ok() { echo "ok   $*"; }

group_alive() { pgrep -g "$1" >/dev/null 2>&1; }
# processes started by this test from its work folder (ranks, mpirun, orted)
work_pids() { pgrep -f -- "$WORK/" | grep -vx "$$"; }

remove_shm() {
  rm -f "/dev/shm/shardserve-run-$1" /dev/shm/.shardserve-run-"$1".*.tmp 2>/dev/null
}

cleanup() {
  for h in $CLEANUP_HOOKS; do "$h"; done
  for g in $GROUPS_STARTED; do
    if group_alive "$g"; then
      echo "cleanup: killing leftover process group $g" >&2
      kill -KILL -- "-$g" 2>/dev/null
    fi
  done
  local left
  left=$(work_pids)
  if [ -n "$left" ]; then
    echo "cleanup: killing leftover processes $left" >&2
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null
  fi
  sleep 0.2
  for g in $GROUPS_STARTED; do remove_shm "$g"; done
  if [ "${SS_KEEP_WORK:-0}" = 1 ]; then echo "work folder kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_group() {
  local log=$1
  shift
  setsid "$@" >"$log" 2>&1 </dev/null &
  GROUP_PID=$!
  GROUPS_STARTED="$GROUPS_STARTED $GROUP_PID"
}

wait_group() {
  local pid=$1 limit=$2 t=0
  while kill -0 "$pid" 2>/dev/null; do
    # a finished but not yet reaped child still answers kill -0: ask ps for its state
    [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = Z ] && break
    if [ "$t" -ge $((limit * 10)) ]; then
      echo "timeout: process group $pid still running after ${limit}s; killing it"
      kill -KILL -- "-$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      GROUP_RC=124
      return
    fi
    sleep 0.1
    t=$((t + 1))
  done
  wait "$pid"
  GROUP_RC=$?
}

run_group() {
  local limit=$1
  shift
  start_group "$@"
  wait_group "$GROUP_PID" "$limit"
}

# Processes of a finished group may take a moment to be reaped by init after their parent died.
check_clean() {
  local pid=$1 t=0
  while { group_alive "$pid" || [ -n "$(work_pids)" ]; } && [ $t -lt 50 ]; do sleep 0.1; t=$((t + 1)); done
  if group_alive "$pid"; then
    fail "processes left behind by group $pid:"
    ps -o pid,stat,args -g "$pid"
  fi
  local w
  w=$(work_pids)
  if [ -n "$w" ]; then
    fail "processes left behind (started from $WORK):"
    # shellcheck disable=SC2086
    ps -o pid,stat,args -p $w
  fi
  local left
  left=$(ls -a /dev/shm 2>/dev/null | grep -E "^\.?shardserve-run-$pid(\.|$)")
  [ -z "$left" ] || fail "shared-memory segments left behind: $left"
}

need_data() {
  [ -n "$DATA" ] && [ -f "$DATA/ready" ] || { echo "FAIL fixture data missing: run the shard_data test (fixtures.sh) first"; exit 1; }
}

# "--input NAME=FILE ..." and "--input-shape NAME=D0,.." arguments of a prepared case (fixtures.sh)
# shard_and_run NAME BACKEND "SHARD ARGS" RUN ARGS...: `shardserve shard $WORK/model.onnx SHARD ARGS`
# into $WORK/shards-NAME, then `run --shards` with the backend and RUN ARGS into $WORK/out-NAME
# (bounded, checked clean). Returns 0 when both worked; a failure is recorded with its log.
shard_and_run() {
  local name=$1 backend=$2 shard_args=$3
  shift 3
  # shellcheck disable=SC2086
  if ! "$SS" shard "$WORK/model.onnx" $shard_args --out "$WORK/shards-$name" >"$WORK/shard-$name.log" 2>&1; then
    cat "$WORK/shard-$name.log"
    fail "$name: shard $shard_args"
    return 1
  fi
  mkdir -p "$WORK/out-$name"
  run_group 60 "$WORK/run-$name.log" $MPI_WRAP "$SS" run --shards "$WORK/shards-$name" \
    --comm "$backend" "$@" --output-dir "$WORK/out-$name"
  if [ "$GROUP_RC" -ne 0 ]; then
    cat "$WORK/run-$name.log"
    fail "$name: run --shards --comm $backend exit $GROUP_RC"
    return 1
  fi
  check_clean "$GROUP_PID"
}

case_inputs() { cat "$DATA/in/$1/inputs.txt"; }
case_shapes() { cat "$DATA/in/$1/shapes.txt"; }
case_outputs() { cat "$DATA/in/$1/outputs.txt"; }

finish() {
  if [ "$FAILS" -eq 0 ]; then
    echo "PASS ($(basename "$0" .sh) $*)"
    exit 0
  fi
  echo "$FAILS check(s) failed ($(basename "$0" .sh) $*)"
  exit 1
}

# mpi runs: mpirun opens wildcard listeners, so it runs in a private network namespace holding
# only loopback (as tests/test_comm_mpi.sh does); Open MPI's session files and shared-memory
# backing files go to $WORK/ompi, removed with $WORK. Usage: start_group LOG $(mpi_wrap) $SS run ...
mpi_setup() {
  mkdir -p "$WORK/ompi"
  export SHARDSERVE_MPIRUN_ARGS="--mca btl self,vader,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo --mca orte_tmpdir_base $WORK/ompi --mca btl_vader_backing_directory $WORK/ompi"
  if unshare -n true 2>/dev/null; then
    MPI_WRAP="unshare -n $HERE/in_loopback_ns.sh"
  else
    echo "note: cannot create a network namespace here; mpirun runs on the host restricted to lo"
    MPI_WRAP=""
  fi
}
