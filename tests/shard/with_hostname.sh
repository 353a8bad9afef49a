#!/bin/sh
# Run by `unshare -u` (tests/shard/two_hosts.sh): give the new UTS namespace hostname $1, run the rest.
hostname "$1" && shift && exec "$@"
