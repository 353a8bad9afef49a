/*
 * What every process this module starts has in common (internal to src/agent).
 */
#ifndef SS_AGENT_SPAWN_H
#define SS_AGENT_SPAWN_H

#include <stdbool.h>
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

/* Whether a launcher's local_ranks agents run in the SCHED_BATCH policy. By default they do when
 * they outnumber the usable CPUs, because a woken rank then does not preempt the thread that woke
 * it (serve sending the next rank its request, a peer posting its share of a collective), so that
 * thread finishes its turn first (bench/RESULTS.md, issue 9). The rule cannot see other work on the
 * host, where a batch rank waits up to a scheduler tick per wake-up; SHARDSERVE_AGENT_SCHED=normal
 * is for such hosts, and =batch forces the policy. Any other value sets *bad and the rule applies.
 */
bool ss_agents_sched_batch(int local_ranks, long cpus, bool *bad);

/* Called in a forked child just before exec, while it has one thread: the policy is kept across
 * exec and inherited by every thread the rank creates. A refusal (a seccomp profile, a launcher in
 * SCHED_IDLE) is reported on stderr and leaves the inherited policy. */
void ss_child_sched_batch(void);

/* How a child ended, for a log line: "exited with status 3" or "was killed by signal 11
 * (Segmentation fault)" — a rank killed by a signal prints nothing of its own. */
const char *ss_spawn_describe_exit(int status, char *buf, size_t cap);

#endif
