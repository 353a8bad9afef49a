#!/bin/sh
# Runs bench_comm for the shm backend (ranks forked by the benchmark) and the mpi backend (ranks
# started by mpirun inside a private network namespace, see tests/test_comm_mpi.sh) with 2 and 8
# ranks, then prints one combined table. memcpy baselines come from the shm run of the same size
# and rank count (measured in the same run, between the collectives). Takes about 3 minutes on a
# shared 2-core machine, most of it Open MPI moving 16-64 MiB between 8 oversubscribed ranks.
# usage: bench/run_comm.sh [BUILD_DIR] [extra bench_comm options, e.g. --sizes 1K,64K]
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build-comm}
[ $# -gt 0 ] && shift
bench=$build/bench/bench_comm
[ -x "$bench" ] || { echo "no $bench: build the bench_comm target first" >&2; exit 1; }
out=$(mktemp /tmp/ss-bench-comm.XXXXXX)
trap 'rm -f "$out"' EXIT INT TERM
for n in 2 8; do
  echo "== shm, $n ranks" >&2
  "$bench" --backend shm --ranks "$n" "$@" | tee -a "$out" | grep -v '^ROW' >&2
  # mpirun binds each rank to a core when np <= cores (and nothing when oversubscribed): also
  # measure shm with that placement ("shm-pin").
  if [ "$n" -le "$(nproc)" ]; then
    echo "== shm pinned to cores, $n ranks" >&2
    "$bench" --backend shm --ranks "$n" --bind "$@" | tee -a "$out" | grep -v '^ROW' >&2
  fi
  echo "== mpi, $n ranks" >&2
  "$here/../tests/test_comm_mpi.sh" "$n" "$bench" --backend mpi "$@" | tee -a "$out" | grep -v '^ROW' >&2
done
echo
echo "Combined (time = median over iterations of the max over ranks; GB/s = size / time;"
echo "mpi = our mpi backend, mpi-raw = blocking MPI_Allreduce/MPI_Allgather; memcpy1 = one process"
echo "copying, memcpyN = all ranks copying at once; shm/memcpy = shm GB/s / memcpy GB/s;"
echo "shm-pin = shm with rank i pinned to core i, the placement mpirun uses when ranks <= cores;"
echo "raw/shm = Open MPI's time over the best shm time)"
grep '^ROW' "$out" | awk '
{ key = $4 " " $3 " " $5; if (!(key in order)) { order[key] = ++nkeys; keys[nkeys] = key }
  us[key, $2] = $6; gbs[key, $2] = $7
  if ($2 == "shm") { m1[key] = $8; mn[key] = $9 } }
function sz(s) { return s >= 1048576 ? s / 1048576 "M" : s >= 1024 ? s / 1024 "K" : s }
function num(a, f) { return a == "" ? "-" : sprintf(f, a) }
END {
  f = "%-9s %5s %5s | %10s %10s %10s %10s | %6s %6s %6s | %7s %7s | %7s %8s %8s\n"
  printf f, "op", "ranks", "size", "shm us", "shm-pin", "mpi us", "mpiraw us", "shm", "mpi",
         "mpiraw", "memcpy1", "memcpyN", "raw/shm", "shm/mem1", "shm/memN"
  printf f, "", "", "", "", "us", "", "", "GB/s", "GB/s", "GB/s", "GB/s", "GB/s", "", "", ""
  for (i = 1; i <= nkeys; i++) {
    k = keys[i]; split(k, p, " ")
    best = us[k, "shm"]
    if (us[k, "shm-pin"] != "" && us[k, "shm-pin"] + 0 < best + 0) best = us[k, "shm-pin"]
    r = (us[k, "mpi-raw"] != "" && best > 0) ? us[k, "mpi-raw"] / best : ""
    printf f, p[1], p[2], sz(p[3]),
      num(us[k, "shm"], "%.1f"), num(us[k, "shm-pin"], "%.1f"), num(us[k, "mpi"], "%.1f"),
      num(us[k, "mpi-raw"], "%.1f"),
      num(gbs[k, "shm"], "%.2f"), num(gbs[k, "mpi"], "%.2f"), num(gbs[k, "mpi-raw"], "%.2f"),
      num(m1[k], "%.2f"), num(mn[k], "%.2f"), num(r, "%.2fx"),
      (m1[k] > 0 ? sprintf("%.2f", gbs[k, "shm"] / m1[k]) : "-"),
      (mn[k] > 0 ? sprintf("%.2f", gbs[k, "shm"] / mn[k]) : "-")
  }
}'
