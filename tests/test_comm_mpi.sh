#!/bin/sh
# Runs an MPI program under mpirun with NP ranks inside a private network namespace that holds
# only loopback (mpirun opens wildcard listeners; the namespace keeps them off the host's
# networks). Open MPI's session files and shared-memory segments go to a private temporary folder
# that is removed afterwards, whatever happens; `timeout` bounds the whole job.
# usage: test_comm_mpi.sh NP PROGRAM [ARGS...]
set -u
np=$1
shift
tmp=$(mktemp -d /tmp/ss-comm-mpi.XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
set -- timeout -k 5 240 mpirun --allow-run-as-root --oversubscribe -np "$np" \
  --mca mpi_yield_when_idle 1 --mca btl self,vader,tcp \
  --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo \
  --mca orte_tmpdir_base "$tmp" --mca btl_vader_backing_directory "$tmp" "$@"
if unshare -n true 2>/dev/null; then
  unshare -n sh -c 'ip link set lo up && exec "$@"' sh "$@"
else
  echo "note: cannot create a network namespace here; running on the host restricted to lo" >&2
  "$@"
fi
