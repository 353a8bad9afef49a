#!/usr/bin/env bash
# scripts/test.sh's build ahead: the sanitizer folder, then the fuzz folder, built and not tested
# (SS_BUILD_ONLY=1) in the idle scheduling class (SCHED_IDLE: CPU time that nothing else wants).
# test.sh starts it in a session of its own (setsid), so that it can stop the whole process group
# (cmake, make, the compilers) at once.
# Usage: scripts/build-ahead.sh LOG_DIR. It writes there: ahead.pgid (its process group, first),
# ahead-asan.txt and ahead-fuzz.txt (the builds' output), ahead-asan.done (when the first ends).
# SS_SKIP_ASAN=1 / SS_SKIP_FUZZ=1 leave that folder out, as in test.sh.
set -u
cd "$(dirname "$0")/.."
log_dir=$1
echo $$ >"$log_dir/ahead.pgid" # setsid ran it as its session's leader: its pid is the group's
# A new session is a new scheduling autogroup (kernel.sched_autogroup_enabled=1, Debian's default),
# and the kernel shares the CPU fairly between autogroups before it looks at the scheduling class:
# SCHED_IDLE alone then takes half the CPU from the tests. The autogroup's nice value 19 restores
# "only what nothing else wants" (2 foreground busy loops: 2.28 s alone, 8.01 s beside the idle
# build in its own autogroup, 2.33 s with this line).
echo 19 >/proc/self/autogroup 2>/dev/null || true
if [[ ${SS_SKIP_ASAN:-0} != 1 ]]; then
  SS_BUILD_ONLY=1 chrt --idle 0 scripts/asan.sh build-asan >"$log_dir/ahead-asan.txt" 2>&1
fi
touch "$log_dir/ahead-asan.done"
if [[ ${SS_SKIP_FUZZ:-0} != 1 ]]; then
  SS_BUILD_ONLY=1 chrt --idle 0 scripts/fuzz-smoke.sh build-fuzz >"$log_dir/ahead-fuzz.txt" 2>&1
fi
exit 0
