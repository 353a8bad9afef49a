/*
 * What every process this module starts has in common (internal to src/agent).
 */
#ifndef SS_AGENT_SPAWN_H
#define SS_AGENT_SPAWN_H

#include <stddef.h>

/* Append the arguments every mpirun of ours starts with ("mpirun --allow-run-as-root
 * --oversubscribe --mca mpi_yield_when_idle 1": always yield when idle, ranks share cores) and
 * then SHARDSERVE_MPIRUN_ARGS split at blanks (btl/oob interfaces, plm_rsh_agent, ...). Returns
 * the count written (at most cap); the extra tokens live in *extra, which the caller frees. */
int ss_mpirun_args(const char **argv, int cap, char **extra);

/* In a forked child just before exec: the path of the link secret's file (0600) goes in
 * SHARDSERVE_LINK_SECRET_FILE (never the secret itself, in the environment or on a command line
 * other users can read), and the signals the parent blocked are unblocked. */
void ss_child_prepare(const char *secret_file);

/* In a forked child just before exec: how its OpenMP team (oneDNN's kernels and the runtime's
 * pool) waits between parallel regions; libgomp reads this once, at process start. When the
 * host's local_ranks ranks of `threads` threads each fit its cores, a rank's idle workers spin for
 * a bounded time (GOMP_SPINCOUNT, about 0.5 ms on a 2020s x86 core) so the next op starts on them
 * at once, then sleep; otherwise they sleep at once (OMP_WAIT_POLICY=PASSIVE), as a spinning
 * worker would hold a core another rank needs. local_ranks 0: not known (mpirun's ranks):
 * PASSIVE. A user's OMP_WAIT_POLICY or GOMP_SPINCOUNT stays as it is. */
#define SS_AGENT_GOMP_SPINCOUNT "30000"
void ss_child_omp_wait(int local_ranks, int threads);

/* How a child ended, for a log line: "exited with status 3" or "was killed by signal 11
 * (Segmentation fault)" — a rank killed by a signal prints nothing of its own. */
const char *ss_spawn_describe_exit(int status, char *buf, size_t cap);

#endif
