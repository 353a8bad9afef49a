#!/bin/sh
# mpi backend failure: under mpirun (private network namespace, tests/test_comm_mpi.sh) rank 2 of 4
# SIGKILLs itself mid-run. The others must report an error naming rank 2 (they find it dead by pid)
# or be ended by mpirun; the whole job must be over within 60 s and leave no test process behind.
# usage: test_comm_mpi_kill.sh PATH/test_comm_mpi
set -u
prog=$1
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp /tmp/ss-comm-mpi-kill.XXXXXX)
trap 'rm -f "$out"' EXIT INT TERM
start=$(date +%s)
timeout -k 5 60 "$here/test_comm_mpi.sh" 4 "$prog" --kill-rank 2 >"$out" 2>&1
rc=$?
elapsed=$(( $(date +%s) - start ))
cat "$out"
fail=0
[ "$rc" -eq 124 ] && { echo "FAIL: the job hung (killed after 60 s)"; fail=1; }
got=$(grep -c 'got: ' "$out")
named=$(grep 'got: ' "$out" | grep -c 'rank 2')
[ "$got" -ge 1 ] || { echo "FAIL: no surviving rank reported an error"; fail=1; }
[ "$got" -eq "$named" ] || { echo "FAIL: an error did not name rank 2"; fail=1; }
sleep 1
if pgrep -f "test_comm_mpi --kill-rank" >/dev/null; then
  echo "FAIL: test processes left behind:"; pgrep -fa "test_comm_mpi --kill-rank"; fail=1
fi
echo "mpirun exit $rc after ${elapsed}s; $got surviving rank(s) reported the dead rank"
[ "$fail" -eq 0 ] && echo "ok   mpi: kill -9 of rank 2 mid-run"
exit $fail
