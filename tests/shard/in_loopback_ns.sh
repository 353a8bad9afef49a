#!/bin/sh
# Run by `unshare -n` for the mpi tests: bring up loopback in the fresh namespace, then run "$@".
ip link set lo up && exec "$@"
